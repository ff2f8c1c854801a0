//! The ledger: every cent that enters, moves inside, or leaves sallyport.
//!
//! # What it owns
//!
//! The money tables of the schema: `accounts`, `ledger_transactions`, `ledger_entries`,
//! `deposits` and `idempotency_keys`, and the lifecycle of online deposits
//! (`online_deposits`, `deposit_events`: [`online`]). Nothing else writes them. It reads `facilities` for
//! deposit limits and time zones.
//!
//! # Who calls it
//!
//! - the HTTP API and the CLI: deposits, money orders, commissary purchases, refunds,
//!   release, statements, balances, invariant checks;
//! - booking (inmate creation), which opens the inmate's account with
//!   [`Ledger::open_account_in`] inside its own database transaction;
//! - the call flow's charging driver, once per billing increment, with
//!   [`Ledger::debit_session`]; video visits use the same method with [`Service::Video`],
//!   and the commissary system posts through the API to [`Ledger::purchase`].
//!
//! The ledger calls only [`crate::db`], [`crate::money`] and [`crate::clock`].
//!
//! # Double entry
//!
//! Every movement is one `ledger_transactions` row with exactly two `ledger_entries`: one
//! on an inmate or family account, one on a facility system account
//! ([`SystemAccount`]), of opposite signs, so every transaction sums to zero and so does
//! the whole ledger. Both tables only ever receive INSERTs (database triggers refuse
//! UPDATE and DELETE). A positive inmate/family balance is money held for that person:
//!
//! | movement | inmate/family | system |
//! |---|---|---|
//! | deposit (online, kiosk; money order when posted) | +amount | `deposits_clearing` −amount |
//! | call / visit increment | −amount | `call_revenue` / `visit_revenue` +amount |
//! | commissary purchase | −amount | `commissary` +amount |
//! | refund or credit | +amount | `refunds` −amount |
//! | online deposit refunded to the card | −amount | `deposits_clearing` +amount |
//! | release | −balance | `refunds_payable` +balance |
//!
//! Inmate and family accounts keep their balance in `accounts.balance_minor`, changed in
//! the same database transaction as the entry that records it; the entry also stores the
//! `balance_after`. A `CHECK` keeps the stored balance at or above zero. System accounts
//! store no balance (their balance is the sum of their entries), so thousands of
//! concurrent calls crediting `call_revenue` never contend on one hot row.
//!
//! # Idempotency
//!
//! Every money-moving method takes an idempotency key, in its caller's namespace
//! ([`RequestKey`]; see [`idempotency`]): the same key from two callers names two
//! requests. The key, a SHA-256 of the canonical request and the JSON of the result are
//! written in the same database transaction as the money movement. The same key with the
//! same request returns the first result (even when both arrive at once) and writes
//! nothing; with a different request or method it is
//! [`LedgerError::IdempotencyConflict`]. A refused request (limit, funds, state) stores
//! nothing, so its key can be retried. A replay returns the result as it was *then*:
//! replaying a money order's deposit key after it was posted returns the pending deposit. Session debits are keyed by `(session_id, increment)` instead
//! (a UNIQUE constraint on `ledger_transactions`); a retry returns
//! [`DebitOutcome::AlreadyCommitted`].
//!
//! # Concurrency
//!
//! Every write runs in one database transaction opened with
//! [`crate::db::Db::begin_write`]. On SQLite that is `BEGIN IMMEDIATE`: writers hold the
//! database's single write lock from their first statement, so they run one at a time and
//! queue on the busy timeout instead of failing. Within one process the ledger's writers
//! also queue on an async mutex before `BEGIN IMMEDIATE` (the busy handler polls with
//! sleeps of up to 100 ms, which cut concurrent throughput tenfold); the busy timeout
//! remains for writers in other processes. A serialized writer always sees the latest
//! balance, so the conditional debit cannot overspend. On PostgreSQL (READ COMMITTED) the
//! conditional debit `UPDATE accounts … WHERE balance_minor >= $amount RETURNING …`
//! takes the account's row lock; a concurrent debit of the same account waits for it and
//! then re-evaluates the condition against the committed balance, so two nodes cannot both
//! spend the last dollar. Deposits, purchases, refunds and release first lock the account
//! row with a no-op UPDATE, so what they check afterwards (today's deposits, the balance)
//! stays true until commit. A money order is locked (deposit row, then account) before it
//! is posted or voided, so it is decided once. Idempotency keys and session increments are
//! claimed with `INSERT … ON CONFLICT DO NOTHING`, where PostgreSQL's unique index makes a
//! concurrent duplicate wait for the first transaction and then see its result.
//!
//! # Rounding
//!
//! None. Amounts arrive exact as [`Money`] (at most 4 decimal places, 2 for deposits) and
//! are stored as integer minor units; the only rounding in sallyport is
//! [`Money::round_charge`], applied by the charging core before it asks for a debit.
//!
//! # Errors
//!
//! One enum, [`LedgerError`]; no method panics on stored data (a row that cannot be
//! decoded is [`LedgerError::Corrupt`] or [`LedgerError::Db`]).

mod accounts;
mod deposits;
mod error;
pub mod idempotency;
mod invariants;
mod online;
mod postings;
mod prepaid;
mod spending;
mod statements;
mod types;

pub use accounts::SystemAccount;
pub use deposits::{local_day, DEPOSIT_MAX_PLACES};
pub use error::{AmountRule, LedgerError};
pub use invariants::{InvariantReport, Violation};
pub use online::{
    new_confirmation, next as online_next, DepositEvent, OnlineDeposit, OnlineDepositRequest,
    PaymentSignal, Step as OnlineStep,
};
pub use prepaid::{PrepaidRefund, RefundPart};
pub use statements::{SessionCharge, Statement, StatementLine};
pub use types::{
    Account, AccountKind, AccountStatus, DebitOutcome, Deposit, DepositLimit, DepositMethod,
    DepositRequest, DepositStatus, OnlineState, PurchaseRequest, Receipt, RefundRequest, Release,
    Service, SessionDebit, TransactionKind,
};

use crate::clock::Clock;
use crate::db::Conn;
use crate::db::{from_micros, to_micros, Backend, Db};
use crate::money::Money;
use chrono::{DateTime, Utc};
pub use idempotency::RequestKey;
use idempotency::{Claim, Scope};
use serde::Serialize;
use spending::Finish;

use std::sync::Arc;

/// How long a session's debit waits for a row lock on PostgreSQL before it gives up,
/// moving nothing. A little longer than the session's own debit timeout
/// (`session::DEBIT_TIMEOUT`), so the session is cut `debit_timeout` first and the debit it
/// gave up on does not then take money for a call already ended (one that commits in
/// between still counts: the CDR reads its charges from the ledger).
pub const SESSION_DEBIT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// Runs `$work` (an expression using the transaction `$tx`) as the first answer to an
/// idempotency claim: in one write transaction, claim the key (a replay returns the stored
/// answer and writes nothing), do the work, store its result with the key, commit.
macro_rules! keyed {
    ($self:ident, $claim:expr, $now:expr, |$tx:ident| $work:expr) => {{
        let (_gate, mut $tx) = $self.begin_write().await?;
        let r = async {
            if let Some(first) = $claim.claim(&mut $tx, to_micros($now)).await? {
                return Ok(Finish::Rollback(first));
            }
            let result = $work.await?;
            $claim.store(&mut $tx, &result).await?;
            Ok(Finish::Commit(result))
        }
        .await;
        finish($tx, r).await
    }};
}

/// The ledger service: a database and a clock. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.db.backend())
            .finish_non_exhaustive()
    }
}

/// A canonical request for methods whose arguments are not a request struct.
#[derive(Serialize)]
struct StaffDecision<'a> {
    deposit_id: &'a str,
    staff: &'a str,
}

#[derive(Serialize)]
struct OnlineRefundRequest<'a> {
    deposit_id: &'a str,
}

#[derive(Serialize)]
struct ReleaseRequest<'a> {
    account_id: &'a str,
}

impl Ledger {
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Ledger {
        Ledger { db, clock }
    }

    /// Opens a write transaction; on SQLite first waits its turn ([`Db::write_turn`]:
    /// ledger writers once polled SQLite's busy handler, whose sleeps grow to 100 ms and
    /// collapsed 16 concurrent debits from ~1,800/s to ~160/s; the turn is now the
    /// database's, shared with the session's writes). The guard must be held until the
    /// transaction ends.
    async fn begin_write(&self) -> Result<((), Conn), LedgerError> {
        Ok(((), self.db.begin().await?))
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The wall clock at the stored precision (microseconds), so a returned value and the
    /// same value read back from the database are equal.
    fn now(&self) -> DateTime<Utc> {
        from_micros(to_micros(self.clock.wall()))
    }

    /// Opens an inmate or family account inside the caller's transaction (booking inserts
    /// the inmate and opens its account atomically). Inmate accounts need a facility;
    /// system accounts come from [`Ledger::ensure_system_accounts`].
    pub async fn open_account_in(
        conn: &mut Conn,
        kind: AccountKind,
        facility_id: Option<&str>,
        owner_id: Option<&str>,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<String, LedgerError> {
        accounts::open_in(conn, kind, facility_id, owner_id, name, now).await
    }

    /// Opens an inmate or family account in its own transaction.
    pub async fn open_account(
        &self,
        kind: AccountKind,
        facility_id: Option<&str>,
        owner_id: Option<&str>,
        name: &str,
    ) -> Result<String, LedgerError> {
        let (_gate, mut tx) = self.begin_write().await?;
        let r = accounts::open_in(&mut tx, kind, facility_id, owner_id, name, self.now()).await;
        finish(tx, r.map(Finish::Commit)).await
    }

    /// The prepaid account of family user `owner_id` at `facility_id`, opened on first
    /// use (idempotent: one per user and facility).
    pub async fn family_account(
        &self,
        owner_id: &str,
        facility_id: &str,
        name: &str,
    ) -> Result<Account, LedgerError> {
        let (_gate, mut tx) = self.begin_write().await?;
        let r = accounts::family_in(&mut tx, owner_id, facility_id, name, self.now()).await;
        finish(tx, r.map(Finish::Commit)).await
    }

    /// Every prepaid account of family user `owner_id` (one per facility it funded).
    pub async fn family_accounts(&self, owner_id: &str) -> Result<Vec<Account>, LedgerError> {
        let mut conn = self.db.pooled().await?;
        accounts::families_of(&mut conn, owner_id).await
    }

    /// Creates the facility's [`SystemAccount`]s that do not exist yet (idempotent).
    pub async fn ensure_system_accounts(&self, facility_id: &str) -> Result<(), LedgerError> {
        let (_gate, mut tx) = self.begin_write().await?;
        let r = accounts::ensure_system(&mut tx, facility_id, to_micros(self.now())).await;
        finish(tx, r.map(Finish::Commit)).await
    }

    /// An account with its balance (derived from entries for system accounts).
    pub async fn account(&self, id: &str) -> Result<Account, LedgerError> {
        let mut conn = self.db.pooled().await?;
        accounts::read(&mut conn, id).await
    }

    /// The balance of an account.
    pub async fn balance(&self, id: &str) -> Result<Money, LedgerError> {
        Ok(self.account(id).await?.balance)
    }

    /// The balances of several accounts (the payers of the live calls), read as short
    /// statements on the call path's connection (SQLite's local one: no hop to a pool
    /// thread per account), given back a few dozen at a time so a long list never holds it
    /// long. The same account listed twice is read once.
    pub async fn balances(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Money>, LedgerError> {
        const AT_ONCE: usize = 64;
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(AT_ONCE) {
            let mut conn = self.db.conn().await?;
            for &id in chunk {
                if !out.contains_key(id) {
                    let balance = accounts::read(&mut conn, id).await?.balance;
                    out.insert(id.to_string(), balance);
                }
            }
        }
        Ok(out)
    }

    /// A deposit. Online and kiosk deposits post at once; a money order stays pending
    /// (no entries) until [`Ledger::post_money_order`] and counts toward the daily limit
    /// of the day it was received. Amounts must be positive with at most 2 decimal places.
    pub async fn deposit(
        &self,
        key: &RequestKey,
        req: DepositRequest,
    ) -> Result<Deposit, LedgerError> {
        deposits::validate(req.amount)?;
        // A replay is compared with the request as sent; what is kept is trimmed.
        let claim = Claim::new(key, Scope::Deposit, &req)?;
        let req = req.kept()?;
        let now = self.now();
        let txn_key = key.qualified();
        let d = keyed!(self, claim, now, |tx| deposits::create(
            &mut tx, &txn_key, &req, now
        ))?;
        tracing::info!(deposit_id = %d.id, account_id = %d.account_id, method = %d.method, amount = %d.amount, status = %d.status, "ledger: deposit");
        Ok(d)
    }

    /// Staff post a pending money order: the account is credited now.
    pub async fn post_money_order(
        &self,
        key: &RequestKey,
        deposit_id: &str,
        staff: &str,
    ) -> Result<Deposit, LedgerError> {
        let claim = Claim::new(
            key,
            Scope::PostMoneyOrder,
            &StaffDecision { deposit_id, staff },
        )?;
        let now = self.now();
        let txn_key = key.qualified();
        let d = keyed!(self, claim, now, |tx| deposits::post_money_order(
            &mut tx, &txn_key, deposit_id, staff, now
        ))?;
        tracing::info!(deposit_id = %d.id, account_id = %d.account_id, amount = %d.amount, "ledger: money order posted");
        Ok(d)
    }

    /// Staff void a pending money order: it never reaches the ledger and stops counting
    /// toward the daily limit.
    pub async fn void_money_order(
        &self,
        key: &RequestKey,
        deposit_id: &str,
        staff: &str,
    ) -> Result<Deposit, LedgerError> {
        let claim = Claim::new(
            key,
            Scope::VoidMoneyOrder,
            &StaffDecision { deposit_id, staff },
        )?;
        let now = self.now();
        let d = keyed!(self, claim, now, |tx| deposits::void_money_order(
            &mut tx, deposit_id, staff, now
        ))?;
        tracing::info!(deposit_id = %d.id, account_id = %d.account_id, "ledger: money order voided");
        Ok(d)
    }

    /// Submits an online deposit: pending in `deposits` (it counts toward the limits at
    /// once), `submitted` in its lifecycle ([`online`]), with a confirmation number. The
    /// payment provider's answers then arrive through [`Ledger::online_signal`]. A replay
    /// of the key returns the deposit as it was submitted.
    pub async fn submit_online(
        &self,
        key: &RequestKey,
        req: OnlineDepositRequest,
    ) -> Result<OnlineDeposit, LedgerError> {
        deposits::validate(req.amount)?;
        let claim = Claim::new(key, Scope::OnlineDeposit, &req)?;
        let kept = DepositRequest {
            account_id: req.account_id.clone(),
            method: DepositMethod::Online,
            amount: req.amount,
            depositor: req.depositor.clone(),
            reference: String::new(),
        }
        .kept()?;
        let req = OnlineDepositRequest {
            depositor: kept.depositor,
            ..req
        };
        let now = self.now();
        let txn_key = key.qualified();
        let d = keyed!(self, claim, now, |tx| online::submit(
            &mut tx, &txn_key, &req, now
        ))?;
        tracing::info!(deposit_id = %d.id, account_id = %d.account_id, amount = %d.amount, "ledger: online deposit submitted");
        Ok(d)
    }

    /// Applies what the payment provider said about deposit `id` (from `source`):
    /// [`online::next`] decides; the credit is posted at most once whatever repeats.
    pub async fn online_signal(
        &self,
        id: &str,
        signal: &PaymentSignal,
        source: &str,
        payment_id: Option<&str>,
    ) -> Result<(OnlineDeposit, OnlineStep), LedgerError> {
        let now = self.now();
        let (_gate, mut tx) = self.begin_write().await?;
        let r = async {
            let applied = online::apply(&mut tx, id, signal, source, payment_id, now).await?;
            let d = online::read(&mut tx, id).await?;
            Ok(Finish::Commit((d, applied)))
        }
        .await;
        let (d, applied) = finish(tx, r).await?;
        match &applied.step {
            OnlineStep::Ignore => {
                tracing::debug!(deposit_id = %id, state = %applied.from, ?signal, source, "ledger: payment signal ignored")
            }
            step => {
                tracing::info!(deposit_id = %id, from = %applied.from, to = %d.state, ?step, source, "ledger: online deposit moved")
            }
        }
        Ok((d, applied.step))
    }

    /// Refunds a posted online deposit to its payer: a reversing transaction (the account
    /// must still hold the amount). The caller then asks the provider to return the money
    /// ([`Ledger::online_provider_refunded`] once it did).
    pub async fn refund_online(
        &self,
        key: &RequestKey,
        id: &str,
        source: &str,
    ) -> Result<OnlineDeposit, LedgerError> {
        let claim = Claim::new(
            key,
            Scope::OnlineRefund,
            &OnlineRefundRequest { deposit_id: id },
        )?;
        let now = self.now();
        let d = keyed!(self, claim, now, |tx| online::refund(
            &mut tx, id, source, now
        ))?;
        tracing::info!(deposit_id = %d.id, amount = %d.amount, source, "ledger: online deposit refunded");
        Ok(d)
    }

    /// Refunds the whole balance of family prepaid account `account_id` to the cards that
    /// paid it, newest deposit first ([`prepaid`]); idempotent under `key`. The provider is
    /// asked for each card part afterwards (`payments::Payments::refund_prepaid`).
    pub async fn refund_prepaid(
        &self,
        key: &RequestKey,
        account_id: &str,
        requested_by: &str,
    ) -> Result<PrepaidRefund, LedgerError> {
        let claim = Claim::new(
            key,
            Scope::PrepaidRefund,
            &prepaid::PrepaidRefundRequest { account_id },
        )?;
        let now = self.now();
        keyed!(self, claim, now, |tx| prepaid::refund_all(
            &mut tx,
            account_id,
            requested_by,
            now
        ))
    }

    /// Notes that the provider took card part `id` of a prepaid refund.
    pub async fn prepaid_refund_confirmed(&self, id: &str) -> Result<(), LedgerError> {
        let now = self.now();
        let (_gate, mut tx) = self.begin_write().await?;
        let r = prepaid::confirmed(&mut tx, id, now).await;
        finish(tx, r.map(Finish::Commit)).await
    }

    /// When the provider confirmed each part of prepaid refund `request_id`, by part id.
    pub async fn prepaid_refund_confirmations(
        &self,
        request_id: &str,
    ) -> Result<Vec<(String, Option<DateTime<Utc>>)>, LedgerError> {
        let mut conn = self.db.pooled().await?;
        prepaid::confirmations(&mut conn, request_id).await
    }

    /// Card parts of prepaid refunds the provider has not confirmed, made at or before
    /// `before` (the reconciliation asks again).
    pub async fn prepaid_refunds_unconfirmed(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<RefundPart>, LedgerError> {
        let mut conn = self.db.pooled().await?;
        prepaid::unconfirmed(&mut conn, before).await
    }

    /// Notes that the provider returned the money of refunded deposit `id`.
    pub async fn online_provider_refunded(&self, id: &str) -> Result<(), LedgerError> {
        let now = self.now();
        let (_gate, mut tx) = self.begin_write().await?;
        let r = online::provider_refunded(&mut tx, id, now).await;
        finish(tx, r.map(Finish::Commit)).await
    }

    /// An online deposit with its timeline.
    pub async fn online_deposit(&self, id: &str) -> Result<OnlineDeposit, LedgerError> {
        let mut conn = self.db.pooled().await?;
        online::read(&mut conn, id).await
    }

    /// The online deposits family user `user` made, newest first (at most 500).
    pub async fn online_deposits_by(&self, user: &str) -> Result<Vec<OnlineDeposit>, LedgerError> {
        let mut conn = self.db.pooled().await?;
        let ids = online::ids_made_by(&mut conn, user).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(online::read(&mut conn, &id).await?);
        }
        Ok(out)
    }

    /// Ids of online deposits still waiting for their provider and unchanged since
    /// `before`, oldest first (at most 500): what the reconciliation asks about.
    pub async fn online_unsettled(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<String>, LedgerError> {
        let mut conn = self.db.pooled().await?;
        online::ids_unsettled(&mut conn, to_micros(before)).await
    }

    /// Ids of refunded online deposits whose refund the provider has not confirmed.
    pub async fn online_unconfirmed_refunds(&self) -> Result<Vec<String>, LedgerError> {
        let mut conn = self.db.pooled().await?;
        online::ids_unconfirmed_refunds(&mut conn).await
    }

    /// Charges one billing increment of a call or visit: conditional on the balance,
    /// atomic with its entries, keyed by `(session_id, increment)`.
    pub async fn debit_session(&self, d: SessionDebit) -> Result<DebitOutcome, LedgerError> {
        let now = self.now();
        let (_gate, mut tx) = self.begin_write().await?;
        if self.db.backend() == Backend::Postgres {
            // A debit that waits on a row lock gives up (and moves nothing) a moment after
            // the session has cut the call for it (`SESSION_DEBIT_LOCK_WAIT`).
            let ms = SESSION_DEBIT_LOCK_WAIT.as_millis();
            sqlx::query(&format!("SET LOCAL lock_timeout = {ms}"))
                .execute(&mut tx)
                .await?;
        }
        let r = spending::debit_session(&mut tx, &d, now).await;
        let outcome = finish(tx, r).await?;
        tracing::info!(session_id = %d.session_id, increment = d.increment, account_id = %d.account_id, amount = %d.amount, outcome = ?outcome, "ledger: session debit");
        Ok(outcome)
    }

    /// A commissary purchase; [`LedgerError::InsufficientFunds`] when the balance is short.
    pub async fn purchase(
        &self,
        key: &RequestKey,
        req: PurchaseRequest,
    ) -> Result<Receipt, LedgerError> {
        spending::positive(req.amount)?;
        let claim = Claim::new(key, Scope::Purchase, &req)?;
        let req = req.kept()?;
        let now = self.now();
        let txn_key = key.qualified();
        let receipt = keyed!(self, claim, now, |tx| spending::purchase(
            &mut tx, &txn_key, &req, now
        ))?;
        tracing::info!(transaction_id = receipt.transaction_id, account_id = %receipt.account_id, amount = %receipt.amount, "ledger: purchase");
        Ok(receipt)
    }

    /// A message's price (`req.reference` names the message), from the sender's account
    /// to the facility's `message_revenue` (created here for a facility that predates
    /// it); [`LedgerError::InsufficientFunds`] when the balance is short. Idempotent like
    /// a purchase: a replay answers the first receipt and moves nothing.
    pub async fn charge_message(
        &self,
        key: &RequestKey,
        facility_id: &str,
        req: PurchaseRequest,
    ) -> Result<Receipt, LedgerError> {
        spending::positive(req.amount)?;
        self.ensure_system_accounts(facility_id).await?;
        let claim = Claim::new(key, Scope::Message, &req)?;
        let req = req.kept()?;
        let now = self.now();
        let txn_key = key.qualified();
        let receipt = keyed!(self, claim, now, |tx| spending::message(
            &mut tx, &txn_key, &req, now
        ))?;
        tracing::info!(transaction_id = receipt.transaction_id, account_id = %receipt.account_id, amount = %receipt.amount, "ledger: message charge");
        Ok(receipt)
    }

    /// Gives a message's price back to the account that paid it (`req.reference` names
    /// the message), from the facility's `message_revenue`: the reverse of
    /// [`Ledger::charge_message`]. Idempotent like a refund.
    pub async fn refund_message(
        &self,
        key: &RequestKey,
        req: RefundRequest,
    ) -> Result<Receipt, LedgerError> {
        self.credit(key, req, spending::Credit::MessageRevenue)
            .await
    }

    /// Credits an inmate or family account from the facility's `refunds` account.
    pub async fn refund(
        &self,
        key: &RequestKey,
        req: RefundRequest,
    ) -> Result<Receipt, LedgerError> {
        self.credit(key, req, spending::Credit::Refunds).await
    }

    /// A refund's claim and transaction, credited `from` a facility account.
    async fn credit(
        &self,
        key: &RequestKey,
        req: RefundRequest,
        from: spending::Credit,
    ) -> Result<Receipt, LedgerError> {
        spending::positive(req.amount)?;
        let claim = Claim::new(key, Scope::Refund, &req)?;
        let req = req.kept()?;
        let now = self.now();
        let txn_key = key.qualified();
        let receipt = keyed!(self, claim, now, |tx| spending::credit(
            &mut tx, &txn_key, &req, from, now
        ))?;
        tracing::info!(transaction_id = receipt.transaction_id, account_id = %receipt.account_id, amount = %receipt.amount, from = ?from, "ledger: refund");
        Ok(receipt)
    }

    /// On release: the whole balance moves to `refunds_payable` (owed back to the person)
    /// and the account closes; a closed account refuses every later movement.
    pub async fn release(
        &self,
        key: &RequestKey,
        account_id: &str,
    ) -> Result<Release, LedgerError> {
        let claim = Claim::new(key, Scope::Release, &ReleaseRequest { account_id })?;
        let now = self.now();
        let txn_key = key.qualified();
        let rel = keyed!(self, claim, now, |tx| spending::release(
            &mut tx, &txn_key, account_id, now
        ))?;
        tracing::info!(account_id = %rel.account_id, refunded = %rel.refunded, "ledger: account released");
        Ok(rel)
    }

    /// The account's entries over `[from, to)` with opening, running and closing balances.
    pub async fn statement(
        &self,
        account_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Statement, LedgerError> {
        let mut tx = self.begin_read().await?;
        let r = statements::build(&mut tx, account_id, from, to).await;
        finish(tx, r.map(Finish::Rollback)).await
    }

    /// The debits of one session (call or visit), in increment order.
    pub async fn session_charges(
        &self,
        session_id: &str,
    ) -> Result<Vec<SessionCharge>, LedgerError> {
        let mut conn = self.db.pooled().await?;
        statements::session_charges(&mut conn, session_id).await
    }

    /// Checks every invariant over one snapshot; the report lists violations.
    pub async fn check_invariants(&self) -> Result<InvariantReport, LedgerError> {
        let mut tx = self.begin_read().await?;
        let r = invariants::check(&mut tx).await;
        let report = finish(tx, r.map(Finish::Rollback)).await?;
        if !report.is_healthy() {
            tracing::error!(
                violations = report.violations.len(),
                "ledger: invariants violated"
            );
        }
        Ok(report)
    }

    /// A read transaction that sees one snapshot (REPEATABLE READ on PostgreSQL; a
    /// deferred transaction in WAL mode on SQLite).
    async fn begin_read(&self) -> Result<Conn, LedgerError> {
        let begin = match self.db.backend() {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        Ok(self.db.pooled_tx(begin).await?)
    }
}

/// Ends a transaction as the work decided: commit, or roll back (replays, refusals that
/// return a value, reads, and every error).
async fn finish<T>(tx: Conn, r: Result<Finish<T>, LedgerError>) -> Result<T, LedgerError> {
    match r {
        Ok(Finish::Commit(v)) => {
            tx.commit().await?;
            Ok(v)
        }
        Ok(Finish::Rollback(v)) => {
            tx.rollback().await?;
            Ok(v)
        }
        Err(e) => {
            if let Err(re) = tx.rollback().await {
                tracing::warn!(error = %re, "ledger: rollback failed");
            }
            Err(e)
        }
    }
}
