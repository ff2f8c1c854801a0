//! The double-entry primitives every movement is built from: a transaction row, the
//! balance change of an inmate/family account with its entry, and the entry of a system
//! account. Each movement uses exactly one user-side and one system-side entry of opposite
//! sign, so every transaction sums to zero by construction.

use super::error::LedgerError;
use super::types::TransactionKind;
use crate::db::Conn;
use sqlx::Row;

/// A ledger transaction to insert.
pub(crate) struct NewTxn<'a> {
    pub kind: TransactionKind,
    /// The idempotency key of the request that made it (None for session debits).
    pub key: Option<&'a str>,
    pub facility_id: &'a str,
    pub memo: &'a str,
    pub at: i64,
}

/// Inserts a transaction row and returns its id.
pub(crate) async fn insert_txn(conn: &mut Conn, t: &NewTxn<'_>) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "INSERT INTO ledger_transactions (kind, idempotency_key, facility_id, memo, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(t.kind.as_str())
    .bind(t.key)
    .bind(t.facility_id)
    .bind(t.memo)
    .bind(t.at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("id")?)
}

/// Adds `amount` (positive) to an open inmate/family account and returns the new
/// balance. The account was locked (and found open) earlier in the transaction.
pub(crate) async fn credit_user(
    conn: &mut Conn,
    account_id: &str,
    amount: i64,
) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "UPDATE accounts SET balance_minor = balance_minor + $1 \
         WHERE id = $2 AND status = 'open' AND kind <> 'system' RETURNING balance_minor",
    )
    .bind(amount)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::AccountNotFound {
        id: account_id.to_string(),
    })?;
    Ok(row.try_get("balance_minor")?)
}

/// THE conditional debit: takes `amount` from an open inmate/family account only if the
/// balance covers it, in one statement (the row lock on PostgreSQL re-checks the condition
/// against the latest committed balance). `None`: not debited (missing, closed, system or
/// short of funds; see [`super::accounts::lock_open`] to tell which).
pub(crate) async fn debit_user(
    conn: &mut Conn,
    account_id: &str,
    amount: i64,
) -> Result<Option<i64>, LedgerError> {
    let row = sqlx::query(
        "UPDATE accounts SET balance_minor = balance_minor - $1 \
         WHERE id = $2 AND status = 'open' AND kind <> 'system' AND balance_minor >= $1 \
         RETURNING balance_minor",
    )
    .bind(amount)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| r.try_get("balance_minor"))
        .transpose()
        .map_err(Into::into)
}

/// The entry of an inmate/family account, with the balance it left.
pub(crate) async fn user_entry(
    conn: &mut Conn,
    txn: i64,
    account_id: &str,
    amount: i64,
    balance_after: i64,
    at: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, balance_after_minor, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(txn)
    .bind(account_id)
    .bind(amount)
    .bind(balance_after)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The entry of a system account (no stored balance). Fails with `AccountNotFound` if the
/// facility's system accounts were never created.
pub(crate) async fn system_entry(
    conn: &mut Conn,
    txn: i64,
    account_id: &str,
    amount: i64,
    at: i64,
) -> Result<(), LedgerError> {
    let done = sqlx::query(
        "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, balance_after_minor, created_at) \
         SELECT $1, id, $2, NULL, $3 FROM accounts WHERE id = $4 AND kind = 'system'",
    )
    .bind(txn)
    .bind(amount)
    .bind(at)
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::AccountNotFound {
            id: account_id.to_string(),
        });
    }
    Ok(())
}

/// A movement between one user account and one system account, inside the caller's
/// transaction: `amount > 0` credits the user (system −amount), `amount < 0` debits it
/// conditionally. Returns (transaction id, user balance after), or `None` when a debit is
/// not covered (nothing written except the transaction row, which the caller rolls back).
pub(crate) async fn transfer(
    conn: &mut Conn,
    txn: &NewTxn<'_>,
    user: &str,
    system: &str,
    amount: i64,
) -> Result<Option<(i64, i64)>, LedgerError> {
    let balance = if amount >= 0 {
        credit_user(conn, user, amount).await?
    } else {
        match debit_user(conn, user, -amount).await? {
            Some(b) => b,
            None => return Ok(None),
        }
    };
    let id = insert_txn(conn, txn).await?;
    user_entry(conn, id, user, amount, balance, txn.at).await?;
    system_entry(conn, id, system, -amount, txn.at).await?;
    Ok(Some((id, balance)))
}
