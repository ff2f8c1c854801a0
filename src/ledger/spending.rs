//! Money leaving or returning to an inmate/family account: session debits (calls and
//! visits), commissary purchases, refunds, and the balance refunded at release.

use super::accounts::{lock_open, SystemAccount};
use super::error::{AmountRule, LedgerError};
use super::postings::{debit_user, system_entry, transfer, user_entry, NewTxn};
use super::types::{
    DebitOutcome, PurchaseRequest, Receipt, RefundRequest, Release, Service, SessionDebit,
    TransactionKind,
};
use crate::db::to_micros;
use crate::db::Conn;
use crate::money::Money;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// How a write transaction ends: commit, or roll back (a replay or a refusal that
/// returns a value rather than an error).
pub(crate) enum Finish<T> {
    Commit(T),
    Rollback(T),
}

/// Refuses zero and negative amounts.
pub(crate) fn positive(amount: Money) -> Result<(), LedgerError> {
    if amount.is_positive() {
        Ok(())
    } else {
        Err(LedgerError::InvalidAmount {
            amount,
            rule: AmountRule::NotPositive,
        })
    }
}

fn revenue(service: Service) -> (SystemAccount, TransactionKind) {
    match service {
        Service::Audio => (SystemAccount::CallRevenue, TransactionKind::CallCharge),
        Service::Video => (SystemAccount::VisitRevenue, TransactionKind::VisitCharge),
    }
}

/// Claims (session, increment) by inserting its transaction row; `None` if it exists
/// (on PostgreSQL, after waiting for a concurrent claimer to finish).
async fn claim_increment(
    conn: &mut Conn,
    d: &SessionDebit,
    kind: TransactionKind,
    at: i64,
) -> Result<Option<i64>, LedgerError> {
    let memo = format!("{} {} increment {}", kind, d.session_id, d.increment);
    let row = sqlx::query(
        "INSERT INTO ledger_transactions (kind, session_id, increment, facility_id, memo, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session_id, increment) DO NOTHING RETURNING id",
    )
    .bind(kind.as_str())
    .bind(d.session_id.as_str())
    .bind(i64::from(d.increment))
    .bind(d.facility_id.as_str())
    .bind(memo)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| r.try_get("id")).transpose().map_err(Into::into)
}

/// The earlier debit of this (session, increment); a different account or amount under
/// the same increment is a caller bug, reported as a conflict.
async fn committed_before(conn: &mut Conn, d: &SessionDebit) -> Result<DebitOutcome, LedgerError> {
    let row = sqlx::query(
        "SELECT t.id, e.account_id, e.amount_minor, e.balance_after_minor FROM ledger_transactions t \
         JOIN ledger_entries e ON e.transaction_id = t.id \
         WHERE t.session_id = $1 AND t.increment = $2 AND e.balance_after_minor IS NOT NULL",
    )
    .bind(d.session_id.as_str())
    .bind(i64::from(d.increment))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::corrupt(format!("debit {}#{} has no account entry", d.session_id, d.increment)))?;
    let account: String = row.try_get("account_id")?;
    let amount: i64 = row.try_get("amount_minor")?;
    if account != d.account_id || amount != -d.amount.to_minor() {
        let key = format!("{}#{}", d.session_id, d.increment);
        return Err(LedgerError::IdempotencyConflict { key });
    }
    let balance_after: Option<i64> = row.try_get("balance_after_minor")?;
    Ok(DebitOutcome::AlreadyCommitted {
        transaction_id: row.try_get("id")?,
        balance_after: Money::from_minor(balance_after.unwrap_or_default()),
    })
}

/// One session increment: claim (session, increment), conditional debit, two entries.
pub(crate) async fn debit_session(
    conn: &mut Conn,
    d: &SessionDebit,
    now: DateTime<Utc>,
) -> Result<Finish<DebitOutcome>, LedgerError> {
    if d.amount.is_negative() {
        return Err(LedgerError::InvalidAmount {
            amount: d.amount,
            rule: AmountRule::Negative,
        });
    }
    let at = to_micros(now);
    let (system, kind) = revenue(d.service);
    let Some(txn) = claim_increment(conn, d, kind, at).await? else {
        return committed_before(conn, d).await.map(Finish::Rollback);
    };
    if !session_chargeable(conn, &d.session_id).await? {
        let balance = balance_of(conn, &d.account_id).await?;
        tracing::warn!(session_id = %d.session_id, increment = d.increment,
            "debit refused: the session has ended (closed by another node's takeover?)");
        return Ok(Finish::Rollback(DebitOutcome::Refused { balance }));
    }
    let amount = d.amount.to_minor();
    let Some(balance) = debit_user(conn, &d.account_id, amount).await? else {
        let account = lock_open(conn, &d.account_id, "debit").await?;
        let balance = Money::from_minor(account.balance_minor);
        return Ok(Finish::Rollback(DebitOutcome::Refused { balance }));
    };
    user_entry(conn, txn, &d.account_id, -amount, balance, at).await?;
    system_entry(conn, txn, &system.id(&d.facility_id), amount, at).await?;
    Ok(Finish::Commit(DebitOutcome::Committed {
        transaction_id: txn,
        balance_after: Money::from_minor(balance),
    }))
}

/// Whether session `id` may still be charged: `false` once its row says it has ended (a
/// node that took over a dead node's sessions closed it; nothing is charged after). The
/// row stays locked until the debit commits, so a takeover's close of the session
/// (`session::cdr`, which locks the row the same way before it counts the charges) either
/// waits for this debit and counts it, or comes first and this debit is refused: never a
/// charge the closed record does not show. A session with no row (a ledger caller
/// without sessions) may be charged.
async fn session_chargeable(conn: &mut Conn, id: &str) -> Result<bool, LedgerError> {
    // PostgreSQL: a row lock. SQLite: the debit's `BEGIN IMMEDIATE` already holds the one
    // write lock, so a close cannot come between this read and the commit; a write here
    // would only cost a page.
    let sql = match conn.backend() {
        crate::db::Backend::Postgres => "SELECT state FROM sessions WHERE id = $1 FOR UPDATE",
        crate::db::Backend::Sqlite => "SELECT state FROM sessions WHERE id = $1",
    };
    let row = sqlx::query(sql).bind(id).fetch_optional(&mut *conn).await?;
    let state: Option<String> = row.map(|r| r.try_get("state")).transpose()?;
    Ok(state.is_none_or(|s| s == "active"))
}

/// The balance of account `id` (minor units), 0 when there is no such account.
async fn balance_of(conn: &mut Conn, id: &str) -> Result<Money, LedgerError> {
    let row = sqlx::query("SELECT balance_minor FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let minor: Option<i64> = row.map(|r| r.try_get("balance_minor")).transpose()?;
    Ok(Money::from_minor(minor.unwrap_or_default()))
}

/// One kind of movement between a person's account and a facility system account.
struct Movement {
    kind: TransactionKind,
    counter: SystemAccount,
    /// For the "cannot … a closed account" error.
    verb: &'static str,
    memo: &'static str,
    /// Credit the person (refund) or debit them (purchase, conditional on the balance).
    credit: bool,
}

const PURCHASE: Movement = Movement {
    kind: TransactionKind::Purchase,
    counter: SystemAccount::Commissary,
    verb: "charge",
    memo: "commissary order",
    credit: false,
};

const REFUND: Movement = Movement {
    kind: TransactionKind::Refund,
    counter: SystemAccount::Refunds,
    verb: "refund to",
    memo: "refund",
    credit: true,
};

const MESSAGE: Movement = Movement {
    kind: TransactionKind::MessageCharge,
    counter: SystemAccount::MessageRevenue,
    verb: "charge",
    memo: "message",
    credit: false,
};

const MESSAGE_REFUND: Movement = Movement {
    kind: TransactionKind::MessageRefund,
    counter: SystemAccount::MessageRevenue,
    verb: "refund to",
    memo: "message refund",
    credit: true,
};

/// A message's price (the key is already claimed): account −, message revenue +.
pub(crate) async fn message(
    conn: &mut Conn,
    key: &str,
    req: &PurchaseRequest,
    now: DateTime<Utc>,
) -> Result<Receipt, LedgerError> {
    let spend = Spend {
        account_id: &req.account_id,
        amount: req.amount,
        reference: &req.reference,
        memo: &req.memo,
    };
    move_with_system(conn, key, &MESSAGE, spend, now).await
}

/// A commissary purchase (the key is already claimed): account −, commissary +.
pub(crate) async fn purchase(
    conn: &mut Conn,
    key: &str,
    req: &PurchaseRequest,
    now: DateTime<Utc>,
) -> Result<Receipt, LedgerError> {
    let spend = Spend {
        account_id: &req.account_id,
        amount: req.amount,
        reference: &req.reference,
        memo: &req.memo,
    };
    move_with_system(conn, key, &PURCHASE, spend, now).await
}

/// The facility account a refund is credited from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit {
    /// `refunds`: a refund or credit of any kind.
    Refunds,
    /// `message_revenue`: a message's price given back, so the facility's revenue from
    /// messages counts only the messages it carried.
    MessageRevenue,
}

/// A refund (the key is already claimed): `from` −, account +.
pub(crate) async fn credit(
    conn: &mut Conn,
    key: &str,
    req: &RefundRequest,
    from: Credit,
    now: DateTime<Utc>,
) -> Result<Receipt, LedgerError> {
    let movement = match from {
        Credit::Refunds => &REFUND,
        Credit::MessageRevenue => &MESSAGE_REFUND,
    };
    let spend = Spend {
        account_id: &req.account_id,
        amount: req.amount,
        reference: &req.reference,
        memo: &req.memo,
    };
    move_with_system(conn, key, movement, spend, now).await
}

/// The fields purchases and refunds share.
struct Spend<'a> {
    account_id: &'a str,
    amount: Money,
    reference: &'a str,
    memo: &'a str,
}

async fn move_with_system(
    conn: &mut Conn,
    key: &str,
    m: &Movement,
    s: Spend<'_>,
    now: DateTime<Utc>,
) -> Result<Receipt, LedgerError> {
    let account = lock_open(conn, s.account_id, m.verb).await?;
    let facility = account.facility()?;
    let counter = m.counter.id(facility);
    let memo = format!("{} {}: {}", m.memo, s.reference, s.memo);
    let txn = NewTxn {
        kind: m.kind,
        key: Some(key),
        facility_id: facility,
        memo: &memo,
        at: to_micros(now),
    };
    let delta = if m.credit {
        s.amount.to_minor()
    } else {
        -s.amount.to_minor()
    };
    let moved = transfer(conn, &txn, &account.id, &counter, delta).await?;
    let Some((id, balance)) = moved else {
        if m.credit {
            return Err(LedgerError::corrupt("a credit was refused"));
        }
        let balance = Money::from_minor(account.balance_minor);
        return Err(LedgerError::InsufficientFunds {
            balance,
            amount: s.amount,
        });
    };
    Ok(receipt(
        id,
        txn.kind,
        s.account_id,
        counter,
        s.amount,
        balance,
        s.reference,
        now,
    ))
}

#[allow(clippy::too_many_arguments)]
fn receipt(
    transaction_id: i64,
    kind: TransactionKind,
    account_id: &str,
    counter_account_id: String,
    amount: Money,
    balance: i64,
    reference: &str,
    created_at: DateTime<Utc>,
) -> Receipt {
    Receipt {
        transaction_id,
        kind,
        account_id: account_id.to_string(),
        counter_account_id,
        amount,
        balance_after: Money::from_minor(balance),
        reference: reference.to_string(),
        created_at,
    }
}

/// Release (the key is already claimed): the whole balance to refunds_payable, then the
/// account closes for good.
pub(crate) async fn release(
    conn: &mut Conn,
    key: &str,
    account_id: &str,
    now: DateTime<Utc>,
) -> Result<Release, LedgerError> {
    let account = lock_open(conn, account_id, "release").await?;
    let facility = account.facility()?;
    let payable = SystemAccount::RefundsPayable.id(facility);
    let at = to_micros(now);
    let mut transaction_id = None;
    if account.balance_minor > 0 {
        let txn = NewTxn {
            kind: TransactionKind::Release,
            key: Some(key),
            facility_id: facility,
            memo: "balance refunded at release",
            at,
        };
        let moved = transfer(conn, &txn, account_id, &payable, -account.balance_minor).await?;
        let (id, _) =
            moved.ok_or_else(|| LedgerError::corrupt("a locked balance could not be debited"))?;
        transaction_id = Some(id);
    }
    close(conn, account_id, at).await?;
    Ok(Release {
        account_id: account_id.to_string(),
        refunded: Money::from_minor(account.balance_minor),
        transaction_id,
        payable_account_id: payable,
        closed_at: now,
    })
}

async fn close(conn: &mut Conn, account_id: &str, at: i64) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE accounts SET status = 'closed', closed_at = $1 WHERE id = $2 AND status = 'open'",
    )
    .bind(at)
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
