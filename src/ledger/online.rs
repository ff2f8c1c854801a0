//! Online deposits through a payment provider: their lifecycle, their timeline, and the
//! one place their money moves.
//!
//! An online deposit is a `deposits` row (method `online`, `pending` until posted, so it
//! counts toward the facility's limits from the moment it is submitted) and an
//! `online_deposits` row with its [`OnlineState`], reason, confirmation number and the
//! provider's payment id; every change of state appends a `deposit_events` row.
//!
//! What the provider says (its answer to a request, a webhook, the reconciliation's
//! question) arrives as a [`PaymentSignal`]; [`next`] — a plain function, tested alone —
//! decides the [`Step`]. States only move forward: a duplicate or an older event is
//! [`Step::Ignore`]. A signal is applied in one write transaction that first locks the
//! deposit's row, so two signals racing (a webhook and the request that authorized the
//! card, or two nodes) are applied one after the other and the second sees the first's
//! state. The credit's ledger transaction carries the idempotency key
//! `online-deposit:<id>` and the refund's `online-refund:<id>` (UNIQUE in
//! `ledger_transactions`), so even a bug in the state machine could not post twice.

use super::accounts::{lock_open, SystemAccount};
use super::deposits::{self, decode};
use super::error::LedgerError;
use super::postings::{transfer, NewTxn};
use super::types::{
    Deposit, DepositMethod, DepositRequest, DepositStatus, OnlineState, TransactionKind,
};
use crate::db::Conn;
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// What the payment provider says about a deposit's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentSignal {
    /// The card was authorized; the money is not confirmed yet.
    Authorized,
    /// Still on its way (captured, not settled): changes nothing.
    Processing,
    /// The money is confirmed: post the deposit.
    Succeeded,
    /// Refused, at authorization or later.
    Failed { reason: String },
    /// Stopped for review by the provider.
    Held { reason: String },
    /// Cancelled before it was captured.
    Canceled { reason: String },
    /// Returned to the payer at the provider.
    Refunded,
    /// The provider has no payment for the deposit: it never reached the provider.
    Unknown,
}

/// What a [`PaymentSignal`] does to a deposit in a given state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Move to the state with the reason; no money moves.
    Move(OnlineState, String),
    /// Credit the account (exactly once) and move to `posted`.
    Post,
    /// Reverse the credit and move to `refunded`.
    Reverse,
    /// Nothing changes: a duplicate, or news older than what is known.
    Ignore,
}

/// The lifecycle: what `signal` does in `state`.
///
/// - Before posting, a confirmation posts; a refusal declines; a review holds; a
///   cancellation, a refund of money never posted, or a payment the provider never saw
///   voids. `authorized` and `processing` move a submitted deposit to authorized.
/// - A posted deposit moves only by a refund (the provider refunded it: reverse it).
/// - Declined, voided and refunded are final: a late `succeeded` after a refund, or after
///   a decline, changes nothing (logged by the caller). A refund made at the provider is
///   the only way money returns, so a `succeeded` that arrives after `refunded` (reordered
///   delivery) must not post again.
pub fn next(state: OnlineState, signal: &PaymentSignal) -> Step {
    use OnlineState as S;
    use PaymentSignal as P;
    let open = matches!(state, S::Submitted | S::Authorized | S::Held);
    match (state, signal) {
        (S::Submitted, P::Authorized | P::Processing) => Step::Move(S::Authorized, String::new()),
        (_, P::Succeeded) if open => Step::Post,
        (_, P::Failed { reason }) if open => Step::Move(S::Declined, reason.clone()),
        (S::Submitted | S::Authorized, P::Held { reason }) => Step::Move(S::Held, reason.clone()),
        (_, P::Canceled { reason }) if open => Step::Move(S::Voided, reason.clone()),
        (_, P::Refunded) if open => Step::Move(
            S::Voided,
            "refunded by the payment provider before it was posted".into(),
        ),
        (_, P::Unknown) if open => Step::Move(
            S::Voided,
            "the payment never reached the payment provider".into(),
        ),
        (S::Posted, P::Refunded) => Step::Reverse,
        _ => Step::Ignore,
    }
}

/// What `deposits.status` says for an online state.
fn deposit_status(state: OnlineState) -> DepositStatus {
    match state {
        OnlineState::Submitted | OnlineState::Authorized | OnlineState::Held => {
            DepositStatus::Pending
        }
        OnlineState::Posted | OnlineState::Refunded => DepositStatus::Posted,
        OnlineState::Declined | OnlineState::Voided => DepositStatus::Voided,
    }
}

/// An online deposit to submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineDepositRequest {
    /// An inmate's account, or a family's prepaid account.
    pub account_id: String,
    /// Positive, in cents.
    pub amount: Money,
    /// Who pays (a name); stored, never logged.
    pub depositor: String,
    /// The family user making it, if any: only they (and staff) read it.
    pub made_by: Option<String>,
    /// The payment provider's kind (`payments.provider`).
    pub provider: String,
    /// The last four digits of the card, to show on the status page.
    pub card_last4: String,
}

/// One change of an online deposit's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositEvent {
    pub state: OnlineState,
    pub reason: String,
    /// What caused it: `request`, `provider`, `webhook`, `reconcile`, `staff`, `family`.
    pub source: String,
    pub at: DateTime<Utc>,
}

/// An online deposit with its timeline, as its status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineDeposit {
    pub id: String,
    /// What the family quotes when it asks about the deposit (`SP-XXXX-XXXX`).
    pub confirmation: String,
    pub account_id: String,
    pub facility_id: String,
    pub amount: Money,
    pub state: OnlineState,
    /// Why it was declined, held or voided (empty otherwise).
    pub reason: String,
    pub provider: String,
    pub payment_id: Option<String>,
    pub card_last4: String,
    pub made_by: Option<String>,
    /// The credit (once posted).
    pub transaction_id: Option<i64>,
    /// The reversing transaction (once refunded).
    pub refund_transaction_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Oldest first.
    pub timeline: Vec<DepositEvent>,
}

/// Confirmation numbers use letters and digits that cannot be misread for one another
/// (no 0/O, 1/I/L, 5/S, 8/B).
const CONFIRMATION_ALPHABET: &[u8] = b"2345679ACDEFGHJKMNPQRTUVWXYZ";

/// A new confirmation number: `SP-` and two groups of four (28^8 ≈ 3.8·10^11 values).
pub fn new_confirmation() -> String {
    let mut rng = rand::thread_rng();
    let mut pick = || {
        let i = rng.gen_range(0..CONFIRMATION_ALPHABET.len());
        char::from(CONFIRMATION_ALPHABET[i])
    };
    let a: String = (0..4).map(|_| pick()).collect();
    let b: String = (0..4).map(|_| pick()).collect();
    format!("SP-{a}-{b}")
}

/// Records a submitted online deposit (the key is already claimed): a pending `deposits`
/// row within the facility's limits, its lifecycle row and the first event.
pub(super) async fn submit(
    conn: &mut Conn,
    key: &str,
    req: &OnlineDepositRequest,
    now: DateTime<Utc>,
) -> Result<OnlineDeposit, LedgerError> {
    let plain = DepositRequest {
        account_id: req.account_id.clone(),
        method: DepositMethod::Online,
        amount: req.amount,
        depositor: req.depositor.clone(),
        reference: String::new(),
    };
    let d = deposits::record(conn, key, &plain, now, false).await?;
    let mut confirmation = new_confirmation();
    for _ in 0..3 {
        let taken = sqlx::query("SELECT 1 AS one FROM online_deposits WHERE confirmation = $1")
            .bind(confirmation.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !taken {
            break;
        }
        confirmation = new_confirmation();
    }
    sqlx::query(
        "INSERT INTO online_deposits (deposit_id, confirmation, state, provider, card_last4, \
         made_by, updated_at) VALUES ($1, $2, 'submitted', $3, $4, $5, $6)",
    )
    .bind(d.id.as_str())
    .bind(confirmation.as_str())
    .bind(req.provider.as_str())
    .bind(req.card_last4.as_str())
    .bind(req.made_by.as_deref())
    .bind(to_micros(now))
    .execute(&mut *conn)
    .await?;
    event(conn, &d.id, OnlineState::Submitted, "", "request", now).await?;
    read(conn, &d.id).await
}

async fn event(
    conn: &mut Conn,
    id: &str,
    state: OnlineState,
    reason: &str,
    source: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO deposit_events (deposit_id, state, reason, source, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(reason)
    .bind(source)
    .bind(to_micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Applied {
    pub step: Step,
    /// The state before.
    pub from: OnlineState,
}

/// Applies what the provider said (a signal from `source`) to the deposit `id`, inside
/// the caller's write transaction: locks the lifecycle row, asks [`next`], moves money if
/// the step says so. `payment_id`, when given, is recorded if none is yet.
pub(super) async fn apply(
    conn: &mut Conn,
    id: &str,
    signal: &PaymentSignal,
    source: &str,
    payment_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Applied, LedgerError> {
    let (state, known_payment) = lock_state(conn, id).await?;
    if let (None, Some(p)) = (&known_payment, payment_id) {
        sqlx::query("UPDATE online_deposits SET payment_id = $1 WHERE deposit_id = $2")
            .bind(p)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    let mut step = next(state, signal);
    match &step {
        Step::Ignore => {}
        Step::Move(to, reason) => set_state(conn, id, *to, reason, source, now).await?,
        Step::Post => {
            if !post(conn, id, state, source, now).await? {
                step = Step::Ignore;
            }
        }
        Step::Reverse => reverse(conn, id, source, now).await?,
    }
    Ok(Applied { step, from: state })
}

/// Locks the lifecycle row (no-op UPDATE); its state and payment id.
async fn lock_state(
    conn: &mut Conn,
    id: &str,
) -> Result<(OnlineState, Option<String>), LedgerError> {
    let row = sqlx::query(
        "UPDATE online_deposits SET state = state WHERE deposit_id = $1 RETURNING state, payment_id",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::DepositNotFound { id: id.to_string() })?;
    let state = OnlineState::parse_db(&row.try_get::<String, _>("state")?)?;
    Ok((state, row.try_get("payment_id")?))
}

/// Moves the deposit to `to` without moving money (declined, held, voided, authorized).
async fn set_state(
    conn: &mut Conn,
    id: &str,
    to: OnlineState,
    reason: &str,
    source: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE online_deposits SET state = $1, reason = $2, updated_at = $3 WHERE deposit_id = $4",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(to_micros(now))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let status = deposit_status(to);
    if status != DepositStatus::Pending {
        sqlx::query(
            "UPDATE deposits SET status = $1, decided_at = $2 WHERE id = $3 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(to_micros(now))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    event(conn, id, to, reason, source, now).await
}

/// Why a confirmed payment is held instead of posted.
const CLOSED_ACCOUNT_REASON: &str =
    "the account was closed before the payment was confirmed; staff refund it";

/// Credits the account: clearing −amount, account +amount. A closed account (the inmate
/// was released meanwhile) cannot take it: the deposit is held for staff to refund (once:
/// a deposit already held is left as it is). Whether anything changed.
async fn post(
    conn: &mut Conn,
    id: &str,
    from: OnlineState,
    source: &str,
    now: DateTime<Utc>,
) -> Result<bool, LedgerError> {
    let d = deposits::lock(conn, id).await?;
    let account = match lock_open(conn, &d.account_id, "post an online deposit to").await {
        Ok(a) => a,
        Err(LedgerError::AccountClosed { .. }) if from == OnlineState::Held => return Ok(false),
        Err(LedgerError::AccountClosed { .. }) => {
            let reason = CLOSED_ACCOUNT_REASON;
            set_state(conn, id, OnlineState::Held, reason, source, now).await?;
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    let key = format!("online-deposit:{id}");
    let txn = deposits::post(conn, &key, &account, &d, now).await?;
    sqlx::query(
        "UPDATE deposits SET status = 'posted', transaction_id = $1, decided_at = $2 WHERE id = $3",
    )
    .bind(txn)
    .bind(to_micros(now))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    set_state(conn, id, OnlineState::Posted, "", source, now).await?;
    Ok(true)
}

/// Reverses a posted deposit: account −amount (only if the balance covers it), clearing
/// +amount, in a transaction of its own kind; the deposit's credit stays as it was.
async fn reverse(
    conn: &mut Conn,
    id: &str,
    source: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let d = deposits::lock(conn, id).await?;
    let account = lock_open(conn, &d.account_id, "refund an online deposit from").await?;
    let key = format!("online-refund:{id}");
    let memo = format!("online deposit {id} refunded");
    let txn = NewTxn {
        kind: TransactionKind::DepositRefund,
        key: Some(&key),
        facility_id: &d.facility_id,
        memo: &memo,
        at: to_micros(now),
    };
    let clearing = SystemAccount::DepositsClearing.id(&d.facility_id);
    let minor = d.amount.to_minor();
    let Some((txn_id, _)) = transfer(conn, &txn, &account.id, &clearing, -minor).await? else {
        return Err(LedgerError::InsufficientFunds {
            balance: Money::from_minor(account.balance_minor),
            amount: d.amount,
        });
    };
    sqlx::query(
        "UPDATE online_deposits SET state = 'refunded', reason = '', refund_transaction_id = $1, \
         updated_at = $2 WHERE deposit_id = $3",
    )
    .bind(txn_id)
    .bind(to_micros(now))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    event(conn, id, OnlineState::Refunded, "", source, now).await
}

/// Refuses to refund a deposit that is not posted (before anything is written).
pub(super) async fn refund(
    conn: &mut Conn,
    id: &str,
    source: &str,
    now: DateTime<Utc>,
) -> Result<OnlineDeposit, LedgerError> {
    let (state, _) = lock_state(conn, id).await?;
    if state != OnlineState::Posted {
        return Err(LedgerError::InvalidState {
            id: id.to_string(),
            state: format!("{state}, not posted"),
            action: "refund",
        });
    }
    if super::prepaid::partly_refunded(conn, id).await? {
        return Err(LedgerError::InvalidState {
            id: id.to_string(),
            state: "partly refunded already with a prepaid balance".into(),
            action: "refund",
        });
    }
    reverse(conn, id, source, now).await?;
    read(conn, id).await
}

const COLUMNS: &str = "d.id, d.account_id, d.facility_id, d.method, d.amount_minor, d.status, \
    d.depositor, d.reference, d.transaction_id, d.created_at, d.local_day, d.decided_by, \
    d.decided_at, o.confirmation, o.state, o.reason, o.provider, o.payment_id, o.card_last4, \
    o.made_by, o.refund_transaction_id, o.updated_at";

/// The deposit `id` with its timeline.
pub(super) async fn read(conn: &mut Conn, id: &str) -> Result<OnlineDeposit, LedgerError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM deposits d JOIN online_deposits o ON o.deposit_id = d.id WHERE d.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::DepositNotFound { id: id.to_string() })?;
    let mut d = decode_online(&row)?;
    d.timeline = timeline(conn, id).await?;
    Ok(d)
}

/// The ids of the online deposits the family user `user` made, newest first.
pub(super) async fn ids_made_by(conn: &mut Conn, user: &str) -> Result<Vec<String>, LedgerError> {
    let q = sqlx::query(
        "SELECT o.deposit_id AS id FROM online_deposits o JOIN deposits d ON d.id = o.deposit_id \
         WHERE o.made_by = $1 ORDER BY d.created_at DESC, o.deposit_id DESC LIMIT 500",
    )
    .bind(user);
    collect_ids(q.fetch_all(&mut *conn).await?)
}

/// The online deposits still waiting for their provider (submitted, authorized, held)
/// whose state has not changed since `before` (microseconds), oldest first.
pub(super) async fn ids_unsettled(
    conn: &mut Conn,
    before: i64,
) -> Result<Vec<String>, LedgerError> {
    let q = sqlx::query(
        "SELECT deposit_id AS id FROM online_deposits \
         WHERE state IN ('submitted', 'authorized', 'held') AND updated_at <= $1 \
         ORDER BY updated_at, deposit_id LIMIT 500",
    )
    .bind(before);
    collect_ids(q.fetch_all(&mut *conn).await?)
}

/// Refunded deposits whose refund the provider has not confirmed yet.
pub(super) async fn ids_unconfirmed_refunds(conn: &mut Conn) -> Result<Vec<String>, LedgerError> {
    let q = sqlx::query(
        "SELECT deposit_id AS id FROM online_deposits \
         WHERE state = 'refunded' AND provider_refunded_at IS NULL \
         ORDER BY updated_at, deposit_id LIMIT 500",
    );
    collect_ids(q.fetch_all(&mut *conn).await?)
}

fn collect_ids(rows: Vec<AnyRow>) -> Result<Vec<String>, LedgerError> {
    rows.iter()
        .map(|r| r.try_get::<String, _>("id").map_err(Into::into))
        .collect()
}

/// Notes that the provider confirmed the refund of `id`.
pub(super) async fn provider_refunded(
    conn: &mut Conn,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE online_deposits SET provider_refunded_at = $1 \
         WHERE deposit_id = $2 AND provider_refunded_at IS NULL",
    )
    .bind(to_micros(now))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn timeline(conn: &mut Conn, id: &str) -> Result<Vec<DepositEvent>, LedgerError> {
    let rows = sqlx::query(
        "SELECT state, reason, source, at FROM deposit_events WHERE deposit_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DepositEvent {
                state: OnlineState::parse_db(&r.try_get::<String, _>("state")?)?,
                reason: r.try_get("reason")?,
                source: r.try_get("source")?,
                at: from_micros(r.try_get("at")?),
            })
        })
        .collect()
}

fn decode_online(row: &AnyRow) -> Result<OnlineDeposit, LedgerError> {
    let d: Deposit = decode(row)?;
    Ok(OnlineDeposit {
        id: d.id,
        confirmation: row.try_get("confirmation")?,
        account_id: d.account_id,
        facility_id: d.facility_id,
        amount: d.amount,
        state: OnlineState::parse_db(&row.try_get::<String, _>("state")?)?,
        reason: row.try_get("reason")?,
        provider: row.try_get("provider")?,
        payment_id: row.try_get("payment_id")?,
        card_last4: row.try_get("card_last4")?,
        made_by: row.try_get("made_by")?,
        transaction_id: d.transaction_id,
        refund_transaction_id: row.try_get("refund_transaction_id")?,
        created_at: d.created_at,
        updated_at: from_micros(row.try_get("updated_at")?),
        timeline: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use OnlineState as S;
    use PaymentSignal as P;

    fn failed() -> P {
        P::Failed {
            reason: "card_declined".into(),
        }
    }

    #[test]
    fn a_deposit_posts_once_whatever_arrives_twice() {
        assert_eq!(next(S::Submitted, &P::Succeeded), Step::Post);
        assert_eq!(next(S::Authorized, &P::Succeeded), Step::Post);
        assert_eq!(next(S::Held, &P::Succeeded), Step::Post);
        // The duplicate webhook, the reconciliation after a webhook, a late `processing`.
        assert_eq!(next(S::Posted, &P::Succeeded), Step::Ignore);
        assert_eq!(next(S::Posted, &P::Processing), Step::Ignore);
        assert_eq!(next(S::Posted, &P::Authorized), Step::Ignore);
        assert_eq!(next(S::Authorized, &P::Authorized), Step::Ignore);
        assert_eq!(next(S::Authorized, &P::Processing), Step::Ignore);
    }

    #[test]
    fn final_states_stay_final() {
        for s in [S::Declined, S::Voided, S::Refunded] {
            for p in [
                P::Authorized,
                P::Processing,
                P::Succeeded,
                failed(),
                P::Refunded,
                P::Unknown,
            ] {
                assert_eq!(next(s, &p), Step::Ignore, "{s} {p:?}");
            }
        }
    }

    #[test]
    fn refusals_holds_and_refunds() {
        let reason = |s: Step| match s {
            Step::Move(to, r) => (to, r),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(next(S::Submitted, &failed())),
            (S::Declined, "card_declined".into())
        );
        assert_eq!(reason(next(S::Held, &failed())).0, S::Declined);
        let held = P::Held {
            reason: "risk_review".into(),
        };
        assert_eq!(
            reason(next(S::Authorized, &held)),
            (S::Held, "risk_review".into())
        );
        assert_eq!(next(S::Held, &held), Step::Ignore);
        assert_eq!(reason(next(S::Submitted, &P::Unknown)).0, S::Voided);
        assert_eq!(reason(next(S::Authorized, &P::Refunded)).0, S::Voided);
        assert_eq!(next(S::Posted, &P::Refunded), Step::Reverse);
        assert_eq!(next(S::Posted, &failed()), Step::Ignore);
        assert_eq!(reason(next(S::Submitted, &P::Processing)).0, S::Authorized);
    }

    #[test]
    fn posted_and_refunded_keep_the_deposit_posted() {
        assert_eq!(deposit_status(S::Refunded), DepositStatus::Posted);
        assert_eq!(deposit_status(S::Held), DepositStatus::Pending);
        assert_eq!(deposit_status(S::Declined), DepositStatus::Voided);
    }

    #[test]
    fn confirmation_numbers_are_readable() {
        let c = new_confirmation();
        assert_eq!(c.len(), 12, "{c}");
        assert!(c.starts_with("SP-") && c.as_bytes()[7] == b'-', "{c}");
        assert!(c[3..]
            .bytes()
            .all(|b| b == b'-' || CONFIRMATION_ALPHABET.contains(&b)));
    }
}
