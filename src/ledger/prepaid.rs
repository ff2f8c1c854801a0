//! Refunds of a family's prepaid balance: on request, at any time, without a fee, the
//! whole balance goes back the way it came.
//!
//! The balance is split over the card deposits that paid into the account, newest first,
//! each part at most what is left of that deposit after earlier parts (a deposit refunded
//! whole, or one not posted, takes none). Each part is its own ledger transaction (the
//! account to `deposits_clearing`, kind `deposit_refund`: the money leaves as it came) and
//! a `prepaid_refunds` row, all in the one transaction of the request, under its
//! idempotency key; the payment provider is asked for each part afterwards
//! (`payments::Payments::refund_prepaid`), by the part's id, and asked again by the
//! reconciliation until it confirms. What no card deposit covers (money staff entered) is
//! owed by the facility: moved to its `refunds_payable` account (kind `balance_refund`)
//! and paid outside the gateway, as an inmate's balance at release.

use super::accounts::{lock_open, read, SystemAccount};
use super::error::LedgerError;
use super::postings::{transfer, NewTxn};
use super::types::{AccountKind, TransactionKind};
use crate::db::Conn;
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// The request, as its idempotency key remembers it.
#[derive(Debug, Serialize)]
pub(super) struct PrepaidRefundRequest<'a> {
    pub account_id: &'a str,
}

/// One part of a prepaid refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPart {
    pub id: String,
    /// The card deposit it returns to; `None`: owed by the facility, paid outside.
    pub deposit_id: Option<String>,
    /// The deposit's confirmation number and card, as the family knows them.
    pub confirmation: Option<String>,
    pub card_last4: Option<String>,
    /// The provider's payment the part is refunded from.
    pub payment_id: Option<String>,
    pub amount: Money,
    pub transaction_id: i64,
    /// The provider confirmed it (card parts only).
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// A refund of the whole balance of a family's prepaid account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepaidRefund {
    pub request_id: String,
    pub account_id: String,
    pub total: Money,
    pub parts: Vec<RefundPart>,
    pub created_at: DateTime<Utc>,
}

/// A card deposit into the account and what is left of it to refund.
struct Refundable {
    deposit_id: String,
    left: i64,
    confirmation: String,
    card_last4: String,
    payment_id: String,
}

async fn refundable(conn: &mut Conn, account_id: &str) -> Result<Vec<Refundable>, LedgerError> {
    let rows = sqlx::query(
        "SELECT d.id, d.amount_minor, o.confirmation, o.card_last4, o.payment_id, \
         CAST(COALESCE((SELECT SUM(r.amount_minor) FROM prepaid_refunds r WHERE r.deposit_id = d.id), 0) AS BIGINT) AS refunded \
         FROM deposits d JOIN online_deposits o ON o.deposit_id = d.id \
         WHERE d.account_id = $1 AND o.state = 'posted' AND o.payment_id IS NOT NULL \
         ORDER BY d.created_at DESC, d.id DESC",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let amount: i64 = r.try_get("amount_minor")?;
        let refunded: i64 = r.try_get("refunded")?;
        out.push(Refundable {
            deposit_id: r.try_get("id")?,
            left: amount.saturating_sub(refunded).max(0),
            confirmation: r.try_get("confirmation")?,
            card_last4: r.try_get("card_last4")?,
            payment_id: r.try_get("payment_id")?,
        });
    }
    Ok(out)
}

/// Splits `balance` over the deposits' `left`, newest first: (index, amount) parts and
/// what no deposit covers.
fn split(balance: i64, left: &[i64]) -> (Vec<(usize, i64)>, i64) {
    let mut rest = balance;
    let mut parts = Vec::new();
    for (i, &l) in left.iter().enumerate() {
        if rest == 0 {
            break;
        }
        let part = l.min(rest);
        if part > 0 {
            parts.push((i, part));
            rest -= part;
        }
    }
    (parts, rest)
}

/// Refunds the whole balance of the family prepaid account `account_id` (see the module
/// doc); refused for any other kind of account and for an empty balance.
pub(super) async fn refund_all(
    conn: &mut Conn,
    account_id: &str,
    requested_by: &str,
    now: DateTime<Utc>,
) -> Result<PrepaidRefund, LedgerError> {
    let account = read(conn, account_id).await?;
    if account.kind != AccountKind::Family {
        return Err(LedgerError::WrongAccountKind {
            id: account_id.to_string(),
            kind: account.kind,
            action: "refund the prepaid balance of",
        });
    }
    let locked = lock_open(conn, account_id, "refund the prepaid balance of").await?;
    let facility = locked.facility()?.to_string();
    if locked.balance_minor <= 0 {
        return Err(LedgerError::InvalidState {
            id: account_id.to_string(),
            state: "empty".into(),
            action: "refund the prepaid balance of",
        });
    }
    let deposits = refundable(conn, account_id).await?;
    let left: Vec<i64> = deposits.iter().map(|d| d.left).collect();
    let (split_parts, owed) = split(locked.balance_minor, &left);
    let request_id = uuid::Uuid::now_v7().to_string();
    let at = to_micros(now);
    let mut parts = Vec::with_capacity(split_parts.len() + 1);
    let card = split_parts
        .into_iter()
        .map(|(i, a)| (Some(&deposits[i]), a));
    let rest = (owed > 0).then_some((None, owed));
    for (deposit, amount) in card.chain(rest) {
        let id = uuid::Uuid::now_v7().to_string();
        let key = format!("prepaid-refund:{id}");
        let (kind, counter, memo) = match deposit {
            Some(d) => (
                TransactionKind::DepositRefund,
                SystemAccount::DepositsClearing,
                format!("prepaid balance refunded to card deposit {}", d.deposit_id),
            ),
            None => (
                TransactionKind::BalanceRefund,
                SystemAccount::RefundsPayable,
                "prepaid balance owed back (paid outside the gateway)".to_string(),
            ),
        };
        let txn = NewTxn {
            kind,
            key: Some(&key),
            facility_id: &facility,
            memo: &memo,
            at,
        };
        let moved = transfer(conn, &txn, account_id, &counter.id(&facility), -amount).await?;
        let (transaction_id, _) =
            moved.ok_or_else(|| LedgerError::corrupt("a locked balance could not be debited"))?;
        sqlx::query(
            "INSERT INTO prepaid_refunds (id, request_id, account_id, deposit_id, amount_minor, \
             transaction_id, requested_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&request_id)
        .bind(account_id)
        .bind(deposit.map(|d| d.deposit_id.as_str()))
        .bind(amount)
        .bind(transaction_id)
        .bind(requested_by)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        parts.push(RefundPart {
            id,
            deposit_id: deposit.map(|d| d.deposit_id.clone()),
            confirmation: deposit.map(|d| d.confirmation.clone()),
            card_last4: deposit.map(|d| d.card_last4.clone()),
            payment_id: deposit.map(|d| d.payment_id.clone()),
            amount: Money::from_minor(amount),
            transaction_id,
            confirmed_at: None,
        });
    }
    tracing::info!(account_id, request_id = %request_id, parts = parts.len(),
        total = %Money::from_minor(locked.balance_minor), "ledger: prepaid balance refunded");
    Ok(PrepaidRefund {
        request_id,
        account_id: account_id.to_string(),
        total: Money::from_minor(locked.balance_minor),
        parts,
        created_at: from_micros(at),
    })
}

/// Notes that the provider took card part `id` (idempotent).
pub(super) async fn confirmed(
    conn: &mut Conn,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE prepaid_refunds SET confirmed_at = $1 WHERE id = $2 AND confirmed_at IS NULL",
    )
    .bind(to_micros(now))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// When the provider confirmed each part of request `request_id` (by part id).
pub(super) async fn confirmations(
    conn: &mut Conn,
    request_id: &str,
) -> Result<Vec<(String, Option<DateTime<Utc>>)>, LedgerError> {
    let rows = sqlx::query("SELECT id, confirmed_at FROM prepaid_refunds WHERE request_id = $1")
        .bind(request_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let at: Option<i64> = r.try_get("confirmed_at")?;
            Ok((r.try_get("id")?, at.map(from_micros)))
        })
        .collect()
}

/// Card parts the provider has not confirmed, made at or before `before`.
pub(super) async fn unconfirmed(
    conn: &mut Conn,
    before: DateTime<Utc>,
) -> Result<Vec<RefundPart>, LedgerError> {
    let rows = sqlx::query(
        "SELECT r.id, r.deposit_id, r.amount_minor, r.transaction_id, o.confirmation, \
         o.card_last4, o.payment_id FROM prepaid_refunds r \
         JOIN online_deposits o ON o.deposit_id = r.deposit_id \
         WHERE r.confirmed_at IS NULL AND r.created_at <= $1 ORDER BY r.created_at, r.id LIMIT 500",
    )
    .bind(to_micros(before))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RefundPart {
                id: r.try_get("id")?,
                deposit_id: r.try_get("deposit_id")?,
                confirmation: r.try_get("confirmation")?,
                card_last4: r.try_get("card_last4")?,
                payment_id: r.try_get("payment_id")?,
                amount: Money::from_minor(r.try_get("amount_minor")?),
                transaction_id: r.try_get("transaction_id")?,
                confirmed_at: None,
            })
        })
        .collect()
}

/// Whether any part of a prepaid refund came from deposit `deposit_id` (such a deposit is
/// not refunded whole any more).
pub(super) async fn partly_refunded(
    conn: &mut Conn,
    deposit_id: &str,
) -> Result<bool, LedgerError> {
    let row = sqlx::query("SELECT 1 AS one FROM prepaid_refunds WHERE deposit_id = $1 LIMIT 1")
        .bind(deposit_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn the_balance_goes_back_newest_deposit_first() {
        // Deposits (newest first) with 50, 60 and 40 left; a balance of 80.
        assert_eq!(split(80, &[50, 60, 40]), (vec![(0, 50), (1, 30)], 0));
        // All of it, and 10 that no card deposit covers.
        assert_eq!(
            split(160, &[50, 60, 40]),
            (vec![(0, 50), (1, 60), (2, 40)], 10)
        );
        // A deposit with nothing left takes no part.
        assert_eq!(split(30, &[0, 60]), (vec![(1, 30)], 0));
        assert_eq!(split(25, &[]), (vec![], 25));
    }
}
