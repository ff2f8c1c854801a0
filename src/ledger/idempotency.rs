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
//!
//! # Whose key
//!
//! A key belongs to its caller: a request is named by a [`RequestKey`], the caller's
//! namespace and the key the caller chose, and the stored answer by both. The same key
//! from another caller is another request, with its own answer or its own conflict, and
//! never another caller's receipt (issue 9: a family token that reused the admin's key got
//! the admin's receipt, and its own deposit silently never happened). The ledger does not
//! authenticate: the API names the caller by its authenticated principal (`admin-token`
//! for the configured administrator token, `user:<user id>` for every token of a user, so
//! a retry after logging in again still finds its first answer), the CLI as `cli`, the
//! demo seed as `demo`.
//!
//! The account is *not* part of the namespace but of the request: the same caller's key
//! reused for another account (or amount, or method) is a 409, not a second movement.
//! A key a caller reuses by mistake is then caught instead of silently moving money
//! twice, and nothing about another caller's keys can be learnt, since each caller only
//! ever meets its own.
//!
//! # Keys from before callers were recorded
//!
//! Keys stored before migration 0007 have caller `''`: nobody knows whose they are. One
//! only needs to answer the retry of its own request that straddles the upgrade, and a
//! retry comes within moments, not days. So a legacy key speaks for
//! [`LEGACY_KEY_WINDOW`] (a day) after it was stored: within it, an identical replay is
//! answered from it whoever sends it, and a different request under it is a 409, so
//! nothing moves twice. After it, the legacy row is ignored and the caller's own
//! namespace alone decides: the same key is a new request of that caller, and nobody gets
//! another caller's receipt. (The review found a family token replaying an admin's
//! request under a pre-upgrade key got the admin's receipt, depositor and reference
//! included, with no time limit.) The rows themselves are kept: the ledger appends, and
//! the legacy `ledger_transactions.idempotency_key` (the bare key) cannot collide with a
//! new one (`<caller> <key>`).

use super::error::LedgerError;
use crate::db::Conn;
use crate::text::{Form, Rule, TextError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Longest idempotency key (printable ASCII without spaces, so characters are bytes).
pub const MAX_KEY_CHARS: usize = 200;

/// What an idempotency key may be: 1-200 printable ASCII characters without spaces.
pub const KEY_RULE: Rule = Rule::new(MAX_KEY_CHARS, Form::Token);

/// The namespace of the keys stored before callers were recorded.
const UNKNOWN_CALLER: &str = "";

/// How long after it was stored a key of unknown caller answers a replay (module doc).
pub const LEGACY_KEY_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// [`LEGACY_KEY_WINDOW`] in microseconds (the unit of `created_at`).
const LEGACY_KEY_WINDOW_US: i64 = 24 * 3600 * 1_000_000;

/// One request's idempotency key: the caller's namespace and the caller's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    caller: String,
    key: String,
}

impl RequestKey {
    /// `key` (checked by [`KEY_RULE`]) in the namespace of `caller` (a non-empty token
    /// such as `user:usr_0193…`, checked alike).
    pub fn new(caller: &str, key: &str) -> Result<RequestKey, TextError> {
        KEY_RULE.check_required("caller", caller)?;
        KEY_RULE.check_required("Idempotency-Key", key)?;
        Ok(RequestKey {
            caller: caller.to_string(),
            key: key.to_string(),
        })
    }

    pub fn caller(&self) -> &str {
        &self.caller
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// How the ledger transaction a request made names it (`ledger_transactions.
    /// idempotency_key`, unique): `<caller> <key>`; neither part holds a space.
    pub(crate) fn qualified(&self) -> String {
        format!("{} {}", self.caller, self.key)
    }
}

/// Which method a key was used for. A key is unique across scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Deposit,
    PostMoneyOrder,
    VoidMoneyOrder,
    Purchase,
    Refund,
    Release,
    OnlineDeposit,
    OnlineRefund,
    PrepaidRefund,
    Message,
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
            Scope::OnlineDeposit => "online_deposit",
            Scope::OnlineRefund => "online_refund",
            Scope::PrepaidRefund => "prepaid_refund",
            Scope::Message => "message",
        }
    }
}

/// The HTTP status stored with a successful response (refusals are never stored).
const STORED_STATUS: i64 = 200;

/// A key claimed for one request: the scope and canonical hash it was claimed with.
pub(crate) struct Claim<'a> {
    pub key: &'a RequestKey,
    scope: Scope,
    hash: String,
}

impl<'a> Claim<'a> {
    /// The claim of `key` for `request` (canonical JSON, fields in declaration order).
    pub(crate) fn new<R: Serialize>(
        key: &'a RequestKey,
        scope: Scope,
        request: &R,
    ) -> Result<Self, LedgerError> {
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
    pub(crate) async fn claim<T: DeserializeOwned>(
        &self,
        conn: &mut Conn,
        now: i64,
    ) -> Result<Option<T>, LedgerError> {
        // A key from before callers were recorded answers for whoever replays it, within
        // a day of when it was stored.
        let legacy_since = now.saturating_sub(LEGACY_KEY_WINDOW_US);
        if let Some(first) = self.stored(conn, UNKNOWN_CALLER, legacy_since).await? {
            return Ok(Some(first));
        }
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (caller, key, scope, request_hash, response_status, response_body, created_at) \
             VALUES ($1, $2, $3, $4, 0, '', $5) ON CONFLICT (caller, key) DO NOTHING RETURNING key",
        )
        .bind(self.key.caller())
        .bind(self.key.key())
        .bind(self.scope.as_str())
        .bind(self.hash.as_str())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if inserted.is_some() {
            return Ok(None);
        }
        match self.stored(conn, self.key.caller(), i64::MIN).await? {
            Some(first) => Ok(Some(first)),
            None => Err(LedgerError::corrupt(format!(
                "idempotency key {} of {} vanished while claimed",
                self.key.key(),
                self.key.caller()
            ))),
        }
    }

    /// The response stored under the key in `caller`'s namespace at `since` or later
    /// (microseconds), if there is one: it must have been stored for this same request.
    async fn stored<T: DeserializeOwned>(
        &self,
        conn: &mut Conn,
        caller: &str,
        since: i64,
    ) -> Result<Option<T>, LedgerError> {
        let row = sqlx::query(
            "SELECT scope, request_hash, response_status, response_body FROM idempotency_keys \
             WHERE caller = $1 AND key = $2 AND created_at >= $3",
        )
        .bind(caller)
        .bind(self.key.key())
        .bind(since)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let scope: String = row.try_get("scope")?;
        let hash: String = row.try_get("request_hash")?;
        let status: i64 = row.try_get("response_status")?;
        if scope != self.scope.as_str() || hash != self.hash {
            return Err(LedgerError::IdempotencyConflict {
                key: self.key.key().to_string(),
            });
        }
        if status != STORED_STATUS {
            return Err(LedgerError::corrupt(format!(
                "idempotency key {} has no response",
                self.key.key()
            )));
        }
        let body: String = row.try_get("response_body")?;
        serde_json::from_str(&body).map(Some).map_err(|e| {
            LedgerError::corrupt(format!("stored response of key {}: {e}", self.key.key()))
        })
    }

    /// Stores the result of the first request, in the transaction that claimed the key.
    pub(crate) async fn store<T: Serialize>(
        &self,
        conn: &mut Conn,
        result: &T,
    ) -> Result<(), LedgerError> {
        let body = serde_json::to_string(result)
            .map_err(|e| LedgerError::corrupt(format!("response not serializable: {e}")))?;
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $1, response_body = $2 \
             WHERE caller = $3 AND key = $4",
        )
        .bind(STORED_STATUS)
        .bind(body)
        .bind(self.key.caller())
        .bind(self.key.key())
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
        let k = RequestKey::new("cli", "k").unwrap();
        let a = Claim::new(&k, Scope::Purchase, &("acct", "1.50")).unwrap();
        let b = Claim::new(&k, Scope::Purchase, &("acct", "1.50")).unwrap();
        let c = Claim::new(&k, Scope::Refund, &("acct", "1.50")).unwrap();
        let d = Claim::new(&k, Scope::Purchase, &("acct", "1.51")).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert_ne!(a.hash, d.hash);
        assert_eq!(a.hash.len(), 64);
    }

    #[test]
    fn the_legacy_window_is_a_day_in_microseconds() {
        assert_eq!(
            LEGACY_KEY_WINDOW_US,
            i64::try_from(LEGACY_KEY_WINDOW.as_micros()).unwrap()
        );
    }

    #[test]
    fn keys_are_checked_and_qualified_by_their_caller() {
        let k = RequestKey::new("user:usr_1", "dep-1").unwrap();
        assert_eq!(k.qualified(), "user:usr_1 dep-1");
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(201)] {
            let e = RequestKey::new("cli", bad).unwrap_err();
            assert_eq!(e.field, "Idempotency-Key", "{bad:?}");
        }
        assert!(RequestKey::new("cli", &"k".repeat(200)).is_ok());
        assert!(RequestKey::new("", "k").is_err() && RequestKey::new("a b", "k").is_err());
    }
}
