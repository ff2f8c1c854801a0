//! Handsets (per-device SIP digest credentials), their PIN locks, and trusted networks.

use super::{conflict_on_unique, new_id, Store, StoreError};
use crate::db::from_micros;
use crate::policy::lockout::{Lock, LockState};
use crate::text;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handset {
    pub id: String,
    pub facility_id: String,
    pub name: String,
    pub location: String,
    pub sip_username: Option<String>,
    /// While in the future, ID + PIN entry on this handset is refused (too many failures).
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHandset {
    pub name: String,
    #[serde(default)]
    pub location: String,
    /// Digest credentials; omit both for a handset on a trusted network.
    #[serde(default)]
    pub sip_username: Option<String>,
    #[serde(default)]
    pub sip_password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrustedNetwork {
    pub id: String,
    pub facility_id: String,
    pub cidr: String,
    pub description: String,
}

/// RFC 2617 HA1 = MD5(username:realm:password), the form digest credentials are kept in.
pub(super) fn digest_ha1(username: &str, realm: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(format!("{username}:{realm}:{password}").as_bytes());
    hex::encode(h.finalize())
}

fn from_row(r: &AnyRow) -> Result<Handset, StoreError> {
    let locked: Option<i64> = r.try_get("locked_until")?;
    Ok(Handset {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        name: r.try_get("name")?,
        location: r.try_get("location")?,
        sip_username: r.try_get("sip_username")?,
        locked_until: locked.map(from_micros),
        created_at: from_micros(r.try_get("created_at")?),
    })
}

/// Checks `a.b.c.d/n` or an IPv6 `addr/n`.
fn validate_cidr(cidr: &str) -> Result<(), StoreError> {
    let bad = || StoreError::invalid("cidr", "expected ADDRESS/PREFIX, e.g. 10.1.0.0/16");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

impl Store {
    pub async fn add_handset(
        &self,
        facility_id: &str,
        realm: &str,
        h: NewHandset,
    ) -> Result<Handset, StoreError> {
        self.facility(facility_id).await?;
        let name = text::NAME.accept_required("name", &h.name)?;
        let location = text::NAME.accept("location", &h.location)?;
        if let Some(u) = &h.sip_username {
            text::SIP_USERNAME.check("sip_username", u)?;
        }
        if let Some(p) = &h.sip_password {
            text::SECRET.check("sip_password", p)?;
        }
        // A username alone names a handset on a trusted network; with a password it can
        // also authenticate by digest from anywhere.
        let ha1 = match (&h.sip_username, &h.sip_password) {
            (Some(u), Some(p)) if !u.is_empty() && p.len() >= 8 => Some(digest_ha1(u, realm, p)),
            (Some(u), None) if !u.is_empty() => None,
            (None, None) => None,
            _ => {
                return Err(StoreError::invalid(
                    "sip_password",
                    "give a username (and a password of 8+ characters for digest), or neither",
                ))
            }
        };
        let id = new_id("hs");
        sqlx::query(
            "INSERT INTO handsets (id, facility_id, name, location, sip_username, digest_ha1, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(&id)
        .bind(facility_id)
        .bind(name)
        .bind(location)
        .bind(&h.sip_username)
        .bind(&ha1)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, "that SIP username is taken"))?;
        self.handset(&id).await
    }

    pub async fn handset(&self, id: &str) -> Result<Handset, StoreError> {
        let row = sqlx::query(
            "SELECT id, facility_id, name, location, sip_username, locked_until, created_at FROM handsets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("handset", id))?;
        from_row(&row)
    }

    pub async fn handsets(&self, facility_id: &str) -> Result<Vec<Handset>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, facility_id, name, location, sip_username, locked_until, created_at FROM handsets \
             WHERE facility_id = $1 ORDER BY name",
        )
        .bind(facility_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The handset with this SIP username and its digest HA1 (None: trusted network only).
    pub async fn handset_by_username(
        &self,
        username: &str,
    ) -> Result<Option<(Handset, Option<String>)>, StoreError> {
        let mut dbc = self.db.conn().await?;
        let row = sqlx::query(
            "SELECT id, facility_id, name, location, sip_username, locked_until, created_at, digest_ha1 \
             FROM handsets WHERE sip_username = $1",
        )
        .bind(username)
        .fetch_optional(&mut dbc)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((from_row(&row)?, row.try_get("digest_ha1")?)))
    }

    /// The handset's PIN lock as stored.
    pub async fn handset_pin_lock(&self, id: &str) -> Result<LockState, StoreError> {
        self.pin_lock_state(super::PinLocked::Handset, id).await
    }

    /// Locks ID + PIN entry on the handset as `lock` says, unless a lock already runs at
    /// `now`; whether this call set it. Failures before its end are forgotten.
    pub async fn lock_handset_pin(
        &self,
        id: &str,
        lock: Lock,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.set_pin_lock(super::PinLocked::Handset, id, lock, now)
            .await
    }

    /// Clears the handset's PIN lock (staff) and restarts its failure count.
    pub async fn unlock_handset_pin(&self, id: &str) -> Result<Handset, StoreError> {
        self.clear_pin_lock(super::PinLocked::Handset, id).await?;
        self.handset(id).await
    }

    /// The facility whose trusted networks contain `ip`, if any, with the handset whose
    /// SIP username is `username` (of any facility), if any: a trusted-network admission
    /// in one statement.
    pub async fn trusted_handset(
        &self,
        ip: std::net::IpAddr,
        username: Option<&str>,
    ) -> Result<Option<(String, Option<Handset>)>, StoreError> {
        let mut dbc = self.db.conn().await?;
        let rows = sqlx::query(
            "SELECT t.facility_id AS trusted_facility, t.cidr, h.id, h.facility_id, h.name, \
             h.location, h.sip_username, h.locked_until, h.created_at \
             FROM trusted_networks t LEFT JOIN handsets h ON h.sip_username = $1 \
             ORDER BY t.created_at, t.id",
        )
        .bind(username)
        .fetch_all(&mut dbc)
        .await?;
        for r in &rows {
            let cidr: String = r.try_get("cidr")?;
            if crate::policy::net::cidr_contains(&cidr, ip) {
                let handset = match r.try_get::<Option<String>, _>("id")? {
                    Some(_) => Some(from_row(r)?),
                    None => None,
                };
                return Ok(Some((r.try_get("trusted_facility")?, handset)));
            }
        }
        Ok(None)
    }

    /// The facility whose trusted networks contain `ip`, if any.
    pub async fn trusted_facility(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<String>, StoreError> {
        let rows =
            sqlx::query("SELECT facility_id, cidr FROM trusted_networks ORDER BY created_at, id")
                .fetch_all(self.db.pool())
                .await?;
        for r in &rows {
            let cidr: String = r.try_get("cidr")?;
            if crate::policy::net::cidr_contains(&cidr, ip) {
                return Ok(Some(r.try_get("facility_id")?));
            }
        }
        Ok(None)
    }

    pub async fn add_trusted_network(
        &self,
        facility_id: &str,
        cidr: &str,
        description: &str,
    ) -> Result<TrustedNetwork, StoreError> {
        self.facility(facility_id).await?;
        validate_cidr(cidr)?;
        text::NOTE.check("description", description)?;
        let id = new_id("net");
        sqlx::query(
            "INSERT INTO trusted_networks (id, facility_id, cidr, description, created_at) VALUES ($1,$2,$3,$4,$5)",
        )
        .bind(&id)
        .bind(facility_id)
        .bind(cidr)
        .bind(description)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        Ok(TrustedNetwork {
            id,
            facility_id: facility_id.into(),
            cidr: cidr.into(),
            description: description.into(),
        })
    }

    pub async fn trusted_networks(
        &self,
        facility_id: &str,
    ) -> Result<Vec<TrustedNetwork>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, facility_id, cidr, description FROM trusted_networks WHERE facility_id = $1 ORDER BY cidr",
        )
        .bind(facility_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TrustedNetwork {
                    id: r.try_get("id")?,
                    facility_id: r.try_get("facility_id")?,
                    cidr: r.try_get("cidr")?,
                    description: r.try_get("description")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_rfc2617_example() {
        // RFC 2617 section 3.5: Mufasa / testrealm@host.com / Circle Of Life
        assert_eq!(
            digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn cidrs() {
        assert!(validate_cidr("10.1.0.0/16").is_ok());
        assert!(validate_cidr("::1/128").is_ok());
        assert!(validate_cidr("10.1.0.0/33").is_err());
        assert!(validate_cidr("10.1.0.0").is_err());
        assert!(validate_cidr("x/8").is_err());
    }
}
