//! Charging: real-time, per-increment billing of one call or video visit, as a sans-IO
//! state machine. A pure core: no I/O, no tokio, no clock — every input carries `now`.
//!
//! # Who calls it
//!
//! One [`Charging`] per billed session. The SIP call flow (`call`) creates it when the
//! called party accepts (from the [`crate::rating::Tariff`] via
//! [`ChargingPlan::for_tariff`]); video visits (`visit`) create it when both parties are
//! connected. The driver then, in the str0m/quinn style:
//!
//! 1. feeds inputs: [`Charging::start`], [`Charging::debit_succeeded`],
//!    [`Charging::debit_refused`], [`Charging::balance_checked`], [`Charging::hung_up`], and
//!    [`Charging::handle_timeout`] when the deadline of [`Charging::poll_timeout`] is reached;
//! 2. after every input drains [`Charging::poll_action`] and carries the actions out:
//!    [`ChargingAction::Debit`] → a conditional, idempotent ledger debit (keyed by session
//!    and increment number) whose outcome comes back as `debit_succeeded`/`debit_refused`;
//!    [`ChargingAction::CheckBalance`] → a read of the paying account's balance, answered
//!    with `balance_checked`; [`ChargingAction::Count`] → a free increment began (record it
//!    for the CDR; no money moves); [`ChargingAction::PlayWarning`] → a prompt;
//!    [`ChargingAction::Cut`] → BYE both legs.
//!
//! It calls nothing but [`crate::money`] and [`crate::rating`] (for
//! [`ChargingPlan::for_tariff`] and the affordability arithmetic).
//!
//! # Rules
//!
//! - **Increments** are numbered from 1; increment `k` runs over
//!   `[start + (k-1)·increment, start + k·increment)` and is debited at its start. A new
//!   increment starts only when time *reaches* its start and the session is still up, so a
//!   call hung up at exactly 61:00 with 60 s increments is 61 increments, provided the
//!   driver delivers inputs before timeouts at the same instant (the driver contract, as in
//!   quinn). A started increment is charged in full, even if the call ends during it.
//! - **The ledger decides the cut.** At the end of every paid increment the next one is
//!   debited, whatever the last balance predicted: the ledger's conditional debit is the
//!   truth, and only its refusal cuts the session (`FundsExhausted`, at once, its increment
//!   not charged). A deposit made at any moment before that debit — families deposit
//!   precisely to keep a call going — therefore keeps the call up. (Cutting on the
//!   prediction `floor(balance_after / cost)` of the last debit, as this machine once did,
//!   ended calls whose account had been topped up meanwhile and left the deposit unused.)
//!   The refused attempt costs one rolled-back transaction and moves no money; the
//!   exhaustion notice then plays after the last paid increment, so nobody pays for it.
//!   `start` gets the balance read at authorization: if that cannot pay increment 1 the
//!   session is cut at once without a debit (the call flow never gets there: its
//!   authorization already refused the call as `insufficient_funds`).
//! - **Timeouts.** A debit not confirmed within `debit_timeout` cuts (`DebitTimeout`).
//! - **The funds warning tells the truth.** Every `debit_succeeded` reports `balance_after`;
//!   `floor(balance_after / cost)` more increments are affordable. When the increment just
//!   debited is the last affordable one, the funds warning is due `warning_lead` before its
//!   end. It plays at once only if the balance is known *at that instant* (the confirmation
//!   of that debit); when it falls due later the machine first asks for the balance
//!   ([`ChargingAction::CheckBalance`]) and plays it only if the answer still cannot pay
//!   the next increment — a deposit made after the last debit cancels it. A warning is
//!   played once per announced end: when a deposit extends a call after its warning (the
//!   debit the warning said would fail succeeds), the warning comes again before the new
//!   last affordable increment. A check whose answer arrives after a newer debit is stale
//!   and ignored; an unreadable balance (`None`) leaves the prediction standing, so the
//!   warning plays.
//! - **Maximum duration.** The session is cut at `start + max_duration` (`MaxDuration`),
//!   and no debit is issued for an increment starting at or after it. Cuts win ties with a
//!   debit at the same instant.
//! - **Warnings** are played `warning_lead` before the cut they announce, and only for the
//!   cut that will actually happen first: the funds warning if funds end before the maximum
//!   duration, else the maximum-duration warning (once). A zero `warning_lead` disables
//!   warnings.
//! - **The end.** After a cut or a hang-up every input is ignored and no action follows,
//!   with one exception kept for the books: the confirmation (or refusal) of the debit that
//!   was already in flight still updates [`Charging::charged`], because that money did move.
//!   A hang-up also drops actions not yet drained (a queued debit is then never sent).
//! - **Free plans** (`cost_per_increment` = 0) issue no debits at all — the ledger gets no
//!   zero-amount entries: no money moves — but still count increments
//!   ([`Charging::increments_charged`]) and announce each with [`ChargingAction::Count`], so
//!   the driver records it on the session (the CDR's billed increments, with amount 0, also
//!   across a crash); they need no balance and are bounded by the maximum duration.
//! - **Pauses** (video visits: one side dropped out and may rejoin): [`Charging::pause`]
//!   stops the billed time and [`Charging::resume`] restarts it where it stopped. Increments
//!   are laid out on billed time, so the paid increment the pause interrupted is used up
//!   after the resume before the next is debited: nobody pays for time apart. The maximum
//!   duration is wall time (a visit's slot ends when it ends, pauses or not), and so is the
//!   debit timeout; while paused no increment begins and no funds warning is due (the
//!   funds run out only on billed time), but the maximum-duration warning and cut still come.
//!   A debit in flight at the pause completes and is charged: its increment had begun.
//! - **Never panics**: instants that would overflow are treated as "never".

mod timer;

pub use timer::Timer;
use timer::TimerTable;

use crate::money::Money;
use crate::rating::{affordable, Tariff};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// How one session is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargingPlan {
    /// Debited at the start of every increment ([`Tariff::cost_of_increment`]).
    pub cost_per_increment: Money,
    /// Billing increment (60 s unless the rate plan says otherwise).
    pub increment: Duration,
    /// The session is cut this long after `start`.
    pub max_duration: Duration,
    /// How long before a cut its warning is played; zero disables warnings.
    pub warning_lead: Duration,
    /// How long the ledger has to confirm a debit before the session is cut.
    pub debit_timeout: Duration,
}

impl ChargingPlan {
    /// The plan for a rated session.
    pub fn for_tariff(
        tariff: &Tariff,
        max_duration: Duration,
        warning_lead: Duration,
        debit_timeout: Duration,
    ) -> ChargingPlan {
        ChargingPlan {
            cost_per_increment: tariff.cost_of_increment(),
            increment: tariff.increment(),
            max_duration,
            warning_lead,
            debit_timeout,
        }
    }
}

/// Why a [`ChargingPlan`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChargingError {
    #[error("the billing increment must be longer than zero")]
    ZeroIncrement,
    #[error("the cost per increment {cost} is negative")]
    NegativeCost { cost: Money },
    #[error("the debit timeout must be longer than zero")]
    ZeroDebitTimeout,
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargingAction {
    /// Debit `amount` for increment `increment` (idempotent per session and increment), then
    /// report [`Charging::debit_succeeded`] or [`Charging::debit_refused`].
    Debit { increment: u32, amount: Money },
    /// Read the paying account's balance and report it with [`Charging::balance_checked`]
    /// (tagged with `after_increment`, the last paid increment when it was asked): the
    /// funds warning is due and the last balance seen is older than now.
    CheckBalance { after_increment: u32 },
    /// Free increment `increment` began (a plan that costs nothing): record it for the CDR.
    /// Nothing is debited and nothing is reported back.
    Count { increment: u32 },
    /// Play the warning prompt for `reason` to the inmate (and, on visits, both parties).
    PlayWarning { reason: WarningReason },
    /// End the session now (notice prompt, then BYE both legs).
    Cut { reason: CutReason },
}

/// What a warning announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarningReason {
    FundsLow,
    MaxDuration,
}

/// Why a session was cut (goes to the CDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutReason {
    FundsExhausted,
    MaxDuration,
    DebitTimeout,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargingState {
    /// Created, billing not started.
    Idle,
    /// Billing.
    Running,
    /// Ended by the machine.
    Cut(CutReason),
    /// Ended by either party or an investigator.
    HungUp,
}

/// The charging state machine of one session.
#[derive(Debug, Clone)]
pub struct Charging {
    plan: ChargingPlan,
    state: ChargingState,
    timers: TimerTable,
    actions: VecDeque<ChargingAction>,
    started_at: Option<Instant>,
    /// Highest increment paid for (confirmed by the ledger, or begun on a free plan).
    increments: u32,
    charged: Money,
    /// The debit in flight, awaiting the ledger.
    pending: Option<u32>,
    /// Increments affordable after the last confirmed one, from the newest balance seen.
    more_affordable: u64,
    /// When `more_affordable` was last computed from the ledger's answer.
    balance_seen_at: Option<Instant>,
    /// The balance check in flight: the last paid increment when it was asked.
    checking: Option<u32>,
    /// The last affordable increment the funds warning announced the end of, if played.
    funds_warned_for: Option<u32>,
    /// Whether the maximum-duration warning was played.
    max_warned: bool,
    /// Billed time stopped since then ([`Charging::pause`]).
    paused_since: Option<Instant>,
    /// Wall time spent paused before the current pause: increment starts move by it.
    paused_total: Duration,
}

impl Charging {
    /// A machine for `plan`, idle until [`Charging::start`].
    pub fn new(plan: ChargingPlan) -> Result<Charging, ChargingError> {
        if plan.increment.is_zero() {
            return Err(ChargingError::ZeroIncrement);
        }
        if plan.debit_timeout.is_zero() {
            return Err(ChargingError::ZeroDebitTimeout);
        }
        if plan.cost_per_increment.is_negative() {
            return Err(ChargingError::NegativeCost {
                cost: plan.cost_per_increment,
            });
        }
        Ok(Charging {
            plan,
            state: ChargingState::Idle,
            timers: TimerTable::default(),
            actions: VecDeque::new(),
            started_at: None,
            increments: 0,
            charged: Money::ZERO,
            pending: None,
            more_affordable: 0,
            balance_seen_at: None,
            checking: None,
            funds_warned_for: None,
            max_warned: false,
            paused_since: None,
            paused_total: Duration::ZERO,
        })
    }

    // ---- getters ----

    pub fn state(&self) -> ChargingState {
        self.state
    }

    pub fn plan(&self) -> &ChargingPlan {
        &self.plan
    }

    /// Increments paid for so far (for the CDR).
    pub fn increments_charged(&self) -> u32 {
        self.increments
    }

    /// Money debited so far: always `cost_per_increment × increments_charged()`.
    pub fn charged(&self) -> Money {
        self.charged
    }

    /// The increment whose debit is in flight, if any.
    pub fn pending_debit(&self) -> Option<u32> {
        self.pending
    }

    /// Increments affordable after the last paid one, as of the newest balance seen.
    pub fn more_affordable(&self) -> u64 {
        self.more_affordable
    }

    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// Whether billed time is stopped ([`Charging::pause`]).
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Wall time spent paused up to `now` (for the CDR: connected time is the session's
    /// length less this).
    pub fn paused_for(&self, now: Instant) -> Duration {
        let current = self
            .paused_since
            .map_or(Duration::ZERO, |p| now.saturating_duration_since(p));
        self.paused_total.saturating_add(current)
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.state, ChargingState::Cut(_) | ChargingState::HungUp)
    }

    /// When the paid and still affordable increments run out, as of the newest balance
    /// seen: what a countdown shows when the money ends before anything else. `None`
    /// before billing starts or after it ended, while paused (the time does not run), on a
    /// free plan, and before the ledger's first answer.
    pub fn funded_until(&self) -> Option<Instant> {
        if self.is_free()
            || self.is_paused()
            || self.state != ChargingState::Running
            || self.balance_seen_at.is_none()
        {
            return None;
        }
        let last = u64::from(self.increments).saturating_add(self.more_affordable);
        self.increment_start(u32::try_from(last).ok()?.checked_add(1)?)
    }

    /// When `timer` is armed to fire, if it is.
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    // ---- inputs ----

    /// Billing starts (call accepted / both visit parties connected) with `balance` in the
    /// paying account. Ignored unless idle.
    pub fn start(&mut self, now: Instant, balance: Money) {
        if self.state != ChargingState::Idle {
            return;
        }
        self.state = ChargingState::Running;
        self.started_at = Some(now);
        self.timers
            .set(Timer::MaxDuration, now.checked_add(self.plan.max_duration));
        if !self.is_free() && affordable(balance, self.plan.cost_per_increment) == 0 {
            self.cut(CutReason::FundsExhausted);
            return;
        }
        self.begin_increment(now, 1);
        self.schedule_warning(now);
    }

    /// The ledger committed the debit of `increment`; `balance_after` is what is left.
    /// A confirmation of anything but the debit in flight is ignored (duplicates, strays).
    pub fn debit_succeeded(&mut self, now: Instant, increment: u32, balance_after: Money) {
        if self.pending != Some(increment) {
            return;
        }
        self.pending = None;
        self.increments = increment;
        self.charged = self.charged + self.plan.cost_per_increment;
        self.timers.stop(Timer::DebitTimeout);
        if self.is_ended() {
            return;
        }
        self.more_affordable = affordable(balance_after, self.plan.cost_per_increment);
        self.balance_seen_at = Some(now);
        if self.paused_since.is_none() {
            self.timers.set(
                Timer::NextIncrement,
                self.increment_start(increment.saturating_add(1)),
            );
        }
        self.schedule_warning(now);
    }

    /// The answer to [`ChargingAction::CheckBalance`]: the paying account's `balance` now,
    /// or `None` if it could not be read (the last prediction then stands). Ignored unless
    /// it answers the check in flight and no debit happened since it was asked.
    pub fn balance_checked(&mut self, now: Instant, after_increment: u32, balance: Option<Money>) {
        if self.checking != Some(after_increment) {
            return;
        }
        self.checking = None;
        if self.is_ended() || self.pending.is_some() || self.increments != after_increment {
            return;
        }
        if let Some(b) = balance {
            self.more_affordable = affordable(b, self.plan.cost_per_increment);
        }
        self.balance_seen_at = Some(now);
        self.schedule_warning(now);
    }

    /// The ledger refused the debit of `increment` (insufficient funds): cut at once.
    pub fn debit_refused(&mut self, _now: Instant, increment: u32) {
        if self.pending != Some(increment) {
            return;
        }
        self.pending = None;
        if !self.is_ended() {
            self.cut(CutReason::FundsExhausted);
        }
    }

    /// Either party hung up, or the session was terminated: stop everything.
    pub fn hung_up(&mut self, _now: Instant) {
        if self.is_ended() {
            return;
        }
        self.state = ChargingState::HungUp;
        self.timers.clear();
        self.checking = None;
        let undrained_debit = self
            .actions
            .iter()
            .any(|a| matches!(a, ChargingAction::Debit { .. }));
        if undrained_debit {
            self.pending = None;
        }
        self.actions.clear();
    }

    /// Billed time stops (a visit's side dropped out): no increment begins and no funds
    /// warning is due until [`Charging::resume`]. Ignored unless running and not paused.
    pub fn pause(&mut self, now: Instant) {
        if self.state != ChargingState::Running || self.paused_since.is_some() {
            return;
        }
        self.paused_since = Some(now);
        self.timers.stop(Timer::NextIncrement);
        self.schedule_warning(now);
    }

    /// Billed time restarts where the pause stopped it: the rest of the interrupted
    /// increment first, then the next debit. Ignored unless paused.
    pub fn resume(&mut self, now: Instant) {
        let Some(since) = self.paused_since.take() else {
            return;
        };
        if self.state != ChargingState::Running {
            return;
        }
        self.paused_total = self
            .paused_total
            .saturating_add(now.saturating_duration_since(since));
        if self.pending.is_none() {
            // Due at once when the pause came at an increment's boundary: the timer fires
            // on the driver's next `handle_timeout`, after any other input at this instant
            // (a hang-up at the resume begins nothing).
            self.timers.set(
                Timer::NextIncrement,
                self.increment_start(self.increments.saturating_add(1)),
            );
        }
        self.schedule_warning(now);
    }

    /// Handles every timer expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while !self.is_ended() {
            let Some(timer) = self.timers.pop_due(now) else {
                return;
            };
            self.on_timer(timer, now);
        }
    }

    // ---- polls ----

    /// The next action to carry out; drain after every input.
    pub fn poll_action(&mut self) -> Option<ChargingAction> {
        self.actions.pop_front()
    }

    /// When [`Charging::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    // ---- internals ----

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::MaxDuration => self.cut(CutReason::MaxDuration),
            Timer::DebitTimeout => self.cut(CutReason::DebitTimeout),
            Timer::Warning => self.schedule_warning(now),
            Timer::NextIncrement => self.on_increment_end(now),
        }
    }

    /// The paid increment is over: debit the next one. Even when the last balance said it
    /// is not affordable — a deposit may have come since; the ledger's refusal is the cut.
    fn on_increment_end(&mut self, now: Instant) {
        let Some(next) = self.increments.checked_add(1) else {
            self.cut(CutReason::MaxDuration); // 2^32 increments: a limit all the same
            return;
        };
        self.begin_increment(now, next);
    }

    /// Starts increment `k`: debit it (or count it, on a free plan).
    fn begin_increment(&mut self, now: Instant, k: u32) {
        let Some(start) = self.increment_start(k) else {
            return; // unrepresentably far: the maximum duration ends the call first
        };
        if self.max_at().is_some_and(|max| start >= max) {
            self.cut(CutReason::MaxDuration);
            return;
        }
        if self.is_free() {
            self.increments = k;
            self.actions
                .push_back(ChargingAction::Count { increment: k });
            if self.paused_since.is_none() {
                self.timers.set(
                    Timer::NextIncrement,
                    self.increment_start(k.saturating_add(1)),
                );
            }
            return;
        }
        self.actions.push_back(ChargingAction::Debit {
            increment: k,
            amount: self.plan.cost_per_increment,
        });
        self.pending = Some(k);
        self.timers.set(
            Timer::DebitTimeout,
            now.checked_add(self.plan.debit_timeout),
        );
    }

    /// Plays the warning that is due, or arms the timer for it. A funds warning due now
    /// plays only on a balance seen now; otherwise the balance is checked first.
    fn schedule_warning(&mut self, now: Instant) {
        self.timers.stop(Timer::Warning);
        if self.is_ended() {
            return;
        }
        let Some((at, reason)) = self.next_warning() else {
            return;
        };
        if at > now {
            self.timers.set(Timer::Warning, Some(at));
            return;
        }
        match reason {
            WarningReason::MaxDuration => self.max_warned = true,
            WarningReason::FundsLow if self.balance_seen_at == Some(now) => {
                self.funds_warned_for = Some(self.increments);
            }
            WarningReason::FundsLow => {
                if self.checking.is_none() {
                    self.checking = Some(self.increments);
                    self.actions.push_back(ChargingAction::CheckBalance {
                        after_increment: self.increments,
                    });
                }
                return;
            }
        }
        self.actions
            .push_back(ChargingAction::PlayWarning { reason });
    }

    /// The warning for the cut that will come first, if not played yet.
    fn next_warning(&self) -> Option<(Instant, WarningReason)> {
        if self.plan.warning_lead.is_zero() {
            return None;
        }
        let (cut_at, reason) = match (self.funds_cut_at(), self.max_at()) {
            (Some(f), Some(m)) if f < m => (f, WarningReason::FundsLow),
            (Some(f), None) => (f, WarningReason::FundsLow),
            (_, Some(m)) => (m, WarningReason::MaxDuration),
            (None, None) => return None,
        };
        let played = match reason {
            WarningReason::FundsLow => self.funds_warned_for == Some(self.increments),
            WarningReason::MaxDuration => self.max_warned,
        };
        if played {
            return None;
        }
        let start = self.started_at?;
        let at = cut_at.checked_sub(self.plan.warning_lead).unwrap_or(start);
        Some((at.max(start), reason))
    }

    /// End of the last affordable increment, once the ledger said nothing more is
    /// affordable: where the next debit is expected to be refused.
    fn funds_cut_at(&self) -> Option<Instant> {
        let last_known = self.pending.is_none() && self.increments > 0;
        if self.is_free() || !last_known || self.more_affordable > 0 || self.is_paused() {
            return None;
        }
        self.increment_start(self.increments.saturating_add(1))
    }

    fn max_at(&self) -> Option<Instant> {
        self.started_at?.checked_add(self.plan.max_duration)
    }

    /// `start + (k-1)·increment + time paused`, or `None` if unrepresentable.
    fn increment_start(&self, k: u32) -> Option<Instant> {
        let offset = self.plan.increment.checked_mul(k.checked_sub(1)?)?;
        self.started_at?
            .checked_add(offset)?
            .checked_add(self.paused_total)
    }

    fn is_free(&self) -> bool {
        self.plan.cost_per_increment.is_zero()
    }

    fn cut(&mut self, reason: CutReason) {
        self.state = ChargingState::Cut(reason);
        self.timers.clear();
        self.checking = None;
        self.actions.push_back(ChargingAction::Cut { reason });
    }
}
