//! Idempotency keys: a replayed request returns the first answer.
//!
//! Each money-moving method, inside its write transaction and *before* it moves money,
//! claims its key with `INSERT … ON CONFLICT (key) DO NOTHING RETURNING key`:
//!
//! - a row comes back: the key is new; the method does its work, stores its result with
//!   [`store`] and commits, so key, result and money commit (or vanish) together;
//! - no row: the key exists. On PostgreSQL a concurrent claimer of the same key waits in
//!   that insert until the first transaction ends (the unique index) and then sees the
//!   committed row, as READ COMMITTED gives each statement a fresh snapshot; on SQLite the
//!   write lock taken by `BEGIN IMMEDIATE` already serialized the two. The stored row is
//!   compared: same scope and request hash → the stored response; otherwise
//!   [`LedgerError::IdempotencyConflict`]. If the first transaction rolled back (a refusal),
//!   its claim vanished and the waiter proceeds as the first.

use super::error::LedgerError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

/// Which method a key was used for. A key is unique across scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Deposit,
    PostMoneyOrder,
    VoidMoneyOrder,
    Purchase,
    Refund,
    Release,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Deposit => "deposit",
            Scope::PostMoneyOrder => "post_money_order",
            Scope::VoidMoneyOrder => "void_money_order",
            Scope::Purchase => "purchase",
            Scope::Refund => "refund",
            Scope::Release => "release",
        }
    }
}

/// The HTTP status stored with a successful response (refusals are never stored).
const STORED_STATUS: i64 = 200;

/// A key claimed for one request: the scope and canonical hash it was claimed with.
pub(crate) struct Claim<'a> {
    pub key: &'a str,
    scope: Scope,
    hash: String,
}

impl<'a> Claim<'a> {
    /// The claim of `key` for `request` (canonical JSON, fields in declaration order).
    pub fn new<R: Serialize>(key: &'a str, scope: Scope, request: &R) -> Result<Self, LedgerError> {
        let json = serde_json::to_string(request)
            .map_err(|e| LedgerError::corrupt(format!("request not serializable: {e}")))?;
        let mut h = Sha256::new();
        h.update(scope.as_str().as_bytes());
        h.update(b"\n");
        h.update(json.as_bytes());
        Ok(Claim {
            key,
            scope,
            hash: hex::encode(h.finalize()),
        })
    }

    /// Claims the key. `Ok(None)`: new, go ahead. `Ok(Some(first))`: a replay of the same
    /// request; return `first` and write nothing.
    pub async fn claim<T: DeserializeOwned>(
        &self,
        conn: &mut AnyConnection,
        now: i64,
    ) -> Result<Option<T>, LedgerError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (key, scope, request_hash, response_status, response_body, created_at) \
             VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (key) DO NOTHING RETURNING key",
        )
        .bind(self.key)
        .bind(self.scope.as_str())
        .bind(self.hash.as_str())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if inserted.is_some() {
            return Ok(None);
        }
        self.stored(conn).await.map(Some)
    }

    /// The response stored under the key, if it was stored for this same request.
    async fn stored<T: DeserializeOwned>(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<T, LedgerError> {
        let row = sqlx::query(
            "SELECT scope, request_hash, response_status, response_body FROM idempotency_keys WHERE key = $1",
        )
        .bind(self.key)
        .fetch_one(&mut *conn)
        .await?;
        let scope: String = row.try_get("scope")?;
        let hash: String = row.try_get("request_hash")?;
        let status: i64 = row.try_get("response_status")?;
        if scope != self.scope.as_str() || hash != self.hash {
            return Err(LedgerError::IdempotencyConflict {
                key: self.key.to_string(),
            });
        }
        if status != STORED_STATUS {
            return Err(LedgerError::corrupt(format!(
                "idempotency key {} has no response",
                self.key
            )));
        }
        let body: String = row.try_get("response_body")?;
        serde_json::from_str(&body)
            .map_err(|e| LedgerError::corrupt(format!("stored response of key {}: {e}", self.key)))
    }

    /// Stores the result of the first request, in the transaction that claimed the key.
    pub async fn store<T: Serialize>(
        &self,
        conn: &mut AnyConnection,
        result: &T,
    ) -> Result<(), LedgerError> {
        let body = serde_json::to_string(result)
            .map_err(|e| LedgerError::corrupt(format!("response not serializable: {e}")))?;
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $1, response_body = $2 WHERE key = $3",
        )
        .bind(STORED_STATUS)
        .bind(body)
        .bind(self.key)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_canonical_per_scope() {
        let a = Claim::new("k", Scope::Purchase, &("acct", "1.50")).unwrap();
        let b = Claim::new("k", Scope::Purchase, &("acct", "1.50")).unwrap();
        let c = Claim::new("k", Scope::Refund, &("acct", "1.50")).unwrap();
        let d = Claim::new("k", Scope::Purchase, &("acct", "1.51")).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert_ne!(a.hash, d.hash);
        assert_eq!(a.hash.len(), 64);
    }
}
