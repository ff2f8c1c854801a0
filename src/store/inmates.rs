//! Inmates: booking (which opens the debit account), status, PIN, release.

use super::{conflict_on_unique, new_id, Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::ledger::{AccountKind, Ledger};
use crate::policy::pin;
use crate::text;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InmateStatus {
    Active,
    Suspended,
    Released,
}

impl InmateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InmateStatus::Active => "active",
            InmateStatus::Suspended => "suspended",
            InmateStatus::Released => "released",
        }
    }

    fn parse(s: &str) -> Result<InmateStatus, StoreError> {
        match s {
            "active" => Ok(InmateStatus::Active),
            "suspended" => Ok(InmateStatus::Suspended),
            "released" => Ok(InmateStatus::Released),
            other => Err(StoreError::Corrupt {
                what: "inmate status",
                message: other.to_string(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Inmate {
    pub id: String,
    pub facility_id: String,
    pub booking_number: String,
    pub first_name: String,
    pub last_name: String,
    pub status: InmateStatus,
    /// Whether a PIN is set (the PIN itself is never stored or shown).
    pub has_pin: bool,
    pub locked_until: Option<DateTime<Utc>>,
    pub account_id: String,
    pub booked_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
}

/// What booking an inmate takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Booking {
    pub booking_number: String,
    pub first_name: String,
    pub last_name: String,
    /// Optional PIN set at booking.
    #[serde(default)]
    pub pin: Option<String>,
}

const COLUMNS: &str = "id, facility_id, booking_number, first_name, last_name, status, \
    pin_lookup, locked_until, account_id, booked_at, released_at";

fn from_row(r: &AnyRow) -> Result<Inmate, StoreError> {
    let status: String = r.try_get("status")?;
    let pin_lookup: Option<String> = r.try_get("pin_lookup")?;
    let locked: Option<i64> = r.try_get("locked_until")?;
    let released: Option<i64> = r.try_get("released_at")?;
    Ok(Inmate {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        booking_number: r.try_get("booking_number")?,
        first_name: r.try_get("first_name")?,
        last_name: r.try_get("last_name")?,
        status: InmateStatus::parse(&status)?,
        has_pin: pin_lookup.is_some(),
        locked_until: locked.map(from_micros),
        account_id: r.try_get("account_id")?,
        booked_at: from_micros(r.try_get("booked_at")?),
        released_at: released.map(from_micros),
    })
}

/// Checks a booking; names and the booking number are kept trimmed, and checked so
/// ([`crate::text`]).
fn validate(b: &Booking) -> Result<(), StoreError> {
    text::BOOKING_NUMBER.check_required("booking_number", b.booking_number.trim())?;
    text::NAME.check_required("first_name", b.first_name.trim())?;
    text::NAME.check_required("last_name", b.last_name.trim())?;
    if let Some(p) = &b.pin {
        pin::validate(p).map_err(|e| StoreError::invalid("pin", e.to_string()))?;
    }
    Ok(())
}

impl Store {
    /// Books an inmate into `facility_id` and opens the inmate's debit account, in one
    /// database transaction: there is never an inmate without an account.
    pub async fn book_inmate(&self, facility_id: &str, b: Booking) -> Result<Inmate, StoreError> {
        validate(&b)?;
        self.facility(facility_id).await?;
        let now = self.clock.wall();
        let id = new_id("inm");
        let lookup = b
            .pin
            .as_deref()
            .map(|p| pin::lookup_hash(self.pin_pepper.as_bytes(), facility_id, p));
        let mut tx = self.db.begin_write().await?;
        let name = format!(
            "{} {} ({})",
            b.first_name.trim(),
            b.last_name.trim(),
            b.booking_number.trim()
        );
        let account_id = Ledger::open_account_in(
            &mut tx,
            AccountKind::Inmate,
            Some(facility_id),
            Some(&id),
            &name,
            now,
        )
        .await?;
        sqlx::query(&format!(
            "INSERT INTO inmates ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,'active',$6,NULL,$7,$8,NULL)"
        ))
        .bind(&id)
        .bind(facility_id)
        .bind(b.booking_number.trim())
        .bind(b.first_name.trim())
        .bind(b.last_name.trim())
        .bind(&lookup)
        .bind(&account_id)
        .bind(to_micros(now))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict_on_unique(e, "booking number or PIN already in use in this facility")
        })?;
        tx.commit().await?;
        tracing::info!(inmate = %id, facility = facility_id, "inmate booked");
        self.inmate(&id).await
    }

    pub async fn inmate(&self, id: &str) -> Result<Inmate, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM inmates WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("inmate", id))?;
        from_row(&row)
    }

    pub async fn inmate_by_booking(
        &self,
        facility_id: &str,
        booking: &str,
    ) -> Result<Inmate, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM inmates WHERE facility_id = $1 AND booking_number = $2"
        ))
        .bind(facility_id)
        .bind(booking)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("inmate", booking))?;
        from_row(&row)
    }

    pub async fn inmates(&self, facility_id: &str) -> Result<Vec<Inmate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM inmates WHERE facility_id = $1 ORDER BY booking_number"
        ))
        .bind(facility_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Suspends or reinstates an inmate; a released inmate stays released.
    pub async fn set_inmate_status(
        &self,
        id: &str,
        status: InmateStatus,
    ) -> Result<Inmate, StoreError> {
        if status == InmateStatus::Released {
            return Err(StoreError::invalid(
                "status",
                "use release to release an inmate",
            ));
        }
        let done =
            sqlx::query("UPDATE inmates SET status = $2 WHERE id = $1 AND status <> 'released'")
                .bind(id)
                .bind(status.as_str())
                .execute(self.db.pool())
                .await?;
        if done.rows_affected() == 0 {
            let i = self.inmate(id).await?;
            return Err(StoreError::Conflict(format!(
                "inmate {} is {}",
                i.id,
                i.status.as_str()
            )));
        }
        self.inmate(id).await
    }

    /// Sets (or replaces) an inmate's PIN and clears a lockout.
    pub async fn set_pin(&self, id: &str, new_pin: &str) -> Result<Inmate, StoreError> {
        pin::validate(new_pin).map_err(|e| StoreError::invalid("pin", e.to_string()))?;
        let inmate = self.inmate(id).await?;
        let lookup = pin::lookup_hash(self.pin_pepper.as_bytes(), &inmate.facility_id, new_pin);
        sqlx::query("UPDATE inmates SET pin_lookup = $2, failed_pins = 0, locked_until = NULL WHERE id = $1")
            .bind(id)
            .bind(&lookup)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_on_unique(e, "that PIN is in use in this facility; choose another"))?;
        self.inmate(id).await
    }

    /// Finds the inmate whose PIN this is in `facility_id` (keyed-hash lookup, then a
    /// constant-time comparison).
    pub async fn inmate_by_pin(
        &self,
        facility_id: &str,
        entered: &str,
    ) -> Result<Option<Inmate>, StoreError> {
        if pin::validate(entered).is_err() {
            return Ok(None);
        }
        let lookup = pin::lookup_hash(self.pin_pepper.as_bytes(), facility_id, entered);
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM inmates WHERE facility_id = $1 AND pin_lookup = $2"
        ))
        .bind(facility_id)
        .bind(&lookup)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: Option<String> = row.try_get("pin_lookup")?;
        match stored {
            Some(s) if pin::matches(&s, &lookup) => Ok(Some(from_row(&row)?)),
            _ => Ok(None),
        }
    }

    /// Releases an inmate: the ledger refunds the balance and closes the account, then the
    /// inmate is marked released. Idempotent under `key` (a retry finishes a release that
    /// stopped between the two steps).
    pub async fn release_inmate(
        &self,
        key: &crate::ledger::RequestKey,
        id: &str,
    ) -> Result<(Inmate, crate::ledger::Release), StoreError> {
        let inmate = self.inmate(id).await?;
        let release = self.ledger.release(key, &inmate.account_id).await?;
        sqlx::query("UPDATE inmates SET status = 'released', released_at = COALESCE(released_at, $2) WHERE id = $1")
            .bind(id)
            .bind(self.now_us())
            .execute(self.db.pool())
            .await?;
        tracing::info!(inmate = %id, "inmate released");
        Ok((self.inmate(id).await?, release))
    }
}
