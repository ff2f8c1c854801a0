//! Who is calling the API: roles, facility scope, bearer tokens.
//!
//! A bearer token is a random 32-byte secret shown once; only its SHA-256 is stored.
//! The built-in administrator token comes from the config (`http.admin_token`).

use super::{new_id, Store, StoreError};
use crate::db::from_micros;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Investigator,
    Family,
    Kiosk,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Investigator => "investigator",
            Role::Family => "family",
            Role::Kiosk => "kiosk",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "investigator" => Some(Role::Investigator),
            "family" => Some(Role::Family),
            "kiosk" => Some(Role::Kiosk),
            _ => None,
        }
    }
}

/// The facilities a principal may act on. In JSON: `"all"`, or the list of facility ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facilities {
    All,
    Only(Vec<String>),
}

impl Serialize for Facilities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Facilities::All => s.serialize_str("all"),
            Facilities::Only(list) => list.serialize(s),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub facilities: Facilities,
    /// The user behind the token (`None` for the configured administrator token): what
    /// names the caller's idempotency keys, the same across all of the user's tokens.
    #[serde(skip)]
    pub user_id: Option<String>,
}

/// A valid token's principal and when the token expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSession {
    pub principal: Principal,
    pub expires_at: DateTime<Utc>,
}

impl Principal {
    pub fn may_access(&self, facility_id: &str) -> bool {
        match &self.facilities {
            Facilities::All => true,
            Facilities::Only(list) => list.iter().any(|f| f == facility_id),
        }
    }
}

/// SHA-256 of a bearer token, hex: the only form tokens are stored in.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Creates (or reuses) a user with `role` scoped to `facilities` (empty = all, admins
    /// only) and issues a bearer token valid for `ttl_secs`. Returns the token, shown once.
    pub async fn issue_token(
        &self,
        username: &str,
        role: Role,
        facilities: &[String],
        ttl_secs: i64,
    ) -> Result<String, StoreError> {
        let unbound = super::visit_stations::TokenBinding::default();
        self.issue_bound_token(username, role, facilities, ttl_secs, &unbound)
            .await
    }

    /// [`Store::issue_token`], and what the user is for visits: the contacts a family
    /// user visits as, the station a kiosk user is (given: replaced; `None`: kept).
    pub async fn issue_bound_token(
        &self,
        username: &str,
        role: Role,
        facilities: &[String],
        ttl_secs: i64,
        binding: &super::visit_stations::TokenBinding,
    ) -> Result<String, StoreError> {
        super::users::check_username(username)?;
        if facilities.is_empty() && role != Role::Admin {
            return Err(StoreError::invalid(
                "facilities",
                "only an admin may span every facility",
            ));
        }
        if !(60..=366 * 86400).contains(&ttl_secs) {
            return Err(StoreError::invalid("ttl_secs", "60 seconds to 366 days"));
        }
        for f in facilities {
            self.facility(f).await?;
        }
        self.check_binding(role, facilities, binding).await?;
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        let existing = sqlx::query("SELECT id, role FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        let user_id = match existing {
            Some(r) => {
                let existing_role: String = r.try_get("role")?;
                if existing_role != role.as_str() {
                    return Err(StoreError::Conflict(format!(
                        "user {username} has role {existing_role}"
                    )));
                }
                r.try_get::<String, _>("id")?
            }
            None => {
                let id = new_id("usr");
                sqlx::query(
                    "INSERT INTO users (id, username, role, created_at) VALUES ($1,$2,$3,$4)",
                )
                .bind(&id)
                .bind(username)
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        sqlx::query("DELETE FROM user_facilities WHERE user_id = $1")
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        for f in facilities {
            sqlx::query("INSERT INTO user_facilities (user_id, facility_id) VALUES ($1, $2)")
                .bind(&user_id)
                .bind(f)
                .execute(&mut *tx)
                .await?;
        }
        super::visit_stations::write_binding(&mut tx, &user_id, binding, now).await?;
        let (token, _) = insert_token(&mut tx, &user_id, now, ttl_secs, "issued").await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The principal a stored, unexpired token belongs to.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        Ok(self.token_session(token).await?.map(|t| t.principal))
    }

    /// The principal a stored, unexpired token belongs to, with the token's expiry.
    pub async fn token_session(&self, token: &str) -> Result<Option<TokenSession>, StoreError> {
        self.token_session_by_hash(&token_hash(token)).await
    }

    /// [`Store::token_session`] by the token's SHA-256 (hex), as a ticket names it.
    pub async fn token_session_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<TokenSession>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, t.expires_at FROM api_tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND t.expires_at > $2",
        )
        .bind(hash)
        .bind(self.now_us())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: String = row.try_get("id")?;
        let role = parse_role(row.try_get("role")?)?;
        Ok(Some(TokenSession {
            principal: Principal {
                subject: row.try_get("username")?,
                role,
                facilities: self.facilities_of(&user_id, role).await?,
                user_id: Some(user_id),
            },
            expires_at: from_micros(row.try_get("expires_at")?),
        }))
    }

    /// The facilities a user is assigned (an admin with none spans all).
    pub(super) async fn facilities_of(
        &self,
        user_id: &str,
        role: Role,
    ) -> Result<Facilities, StoreError> {
        let facilities: Vec<String> = sqlx::query(
            "SELECT facility_id FROM user_facilities WHERE user_id = $1 ORDER BY facility_id",
        )
        .bind(user_id)
        .fetch_all(self.db.pool())
        .await?
        .iter()
        .map(|r| r.try_get("facility_id"))
        .collect::<Result<_, _>>()?;
        Ok(if facilities.is_empty() && role == Role::Admin {
            Facilities::All
        } else {
            Facilities::Only(facilities)
        })
    }

    /// Ends a token now (logout). Unknown tokens are fine: the answer is the same.
    pub async fn revoke_token(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

pub(super) fn parse_role(role: String) -> Result<Role, StoreError> {
    Role::parse(&role).ok_or(StoreError::Corrupt {
        what: "user role",
        message: role,
    })
}

/// Stores a new random bearer token for `user_id` valid `ttl_secs` from now; returns it
/// (shown once) and its expiry in microseconds.
pub(super) async fn insert_token(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    now: i64,
    ttl_secs: i64,
    source: &str,
) -> Result<(String, i64), StoreError> {
    let token = format!("spt_{}", hex::encode(rand::random::<[u8; 32]>()));
    let expires = now + ttl_secs * 1_000_000;
    sqlx::query(
        "INSERT INTO api_tokens (token_hash, user_id, expires_at, created_at, source) \
         VALUES ($1,$2,$3,$4,$5)",
    )
    .bind(token_hash(&token))
    .bind(user_id)
    .bind(expires)
    .bind(now)
    .bind(source)
    .execute(&mut **tx)
    .await?;
    Ok((token, expires))
}
