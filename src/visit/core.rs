//! One video visit in progress, as a sans-IO state machine: who is there, when billing
//! runs, when the visit ends and why. No sockets, no database, no clock: every input
//! carries `now`, and what the driver must do comes out of [`VisitCore::poll_action`].
//!
//! Owns: the visit's presence (each side's signalling and media), the slot's wall-clock
//! limits (the lobby before it opens, the no-show deadline, its end), and the one
//! [`Charging`] machine that bills it — the same core that bills calls.
//! Calls: [`crate::charging`] only.
//! Called by: the visit's driver task, which feeds it what the forwarding core
//! (`crate::sfu`) and the two pages' WebSockets report, carries out its actions through
//! the session runner (debits, balance reads, the CDR), and tells the pages.
//!
//! # The rules
//!
//! - **Lobby.** Either side may connect from the join window on; nothing is forwarded and
//!   nothing billed before the slot opens ([`VisitAction::Open`] at its start).
//! - **Billing starts when media flows from both sides**, not when they join: a family
//!   whose camera never connects pays nothing. At that moment the core asks for the paying
//!   account's balance ([`VisitAction::ReadBalance`]); its answer starts the charging
//!   machine with the slot's end as its maximum duration (wall time), so the funds and the
//!   slot's end each get their warning and their cut from the same rules as calls.
//! - **A side that drops out may come back** within the slot (a reload, a network change):
//!   billing pauses while either side's media is gone ([`Charging::pause`]) and resumes
//!   when both flow again, so nobody pays for time apart. A side that *leaves* (the page's
//!   end button) ends the visit.
//! - **Recording** starts with the first moment both sides' media flows, unless the visit
//!   is privileged (attorney visits are never recorded), and ends with the visit.
//! - **No-show.** A side that has never connected media by the no-show deadline ends the
//!   visit as `no_show`; nothing is charged (billing never began).
//! - **The end** comes once, with its reason: the slot's end, funds exhausted, the debit
//!   timeout, a side leaving, a no-show, an investigator's terminate, or a system failure.
//!   After it every input is ignored except the outcome of the debit already in flight
//!   (that money moved, and the machine counts it).

use crate::charging::{
    Charging, ChargingAction, ChargingError, ChargingPlan, CutReason, WarningReason,
};
use crate::money::Money;
use crate::session::EndReason;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One of the two people in a visit: the forwarding core's sides.
pub use crate::sfu::Side;

const BOTH: [Side; 2] = [Side::Visitor, Side::Inmate];

fn index(side: Side) -> usize {
    match side {
        Side::Visitor => 0,
        Side::Inmate => 1,
    }
}

/// The limits of one visit, as instants on the driver's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitPlan {
    /// The slot opens: forwarding may begin.
    pub opens_at: Instant,
    /// The slot ends: the visit is cut (`slot_ended`).
    pub ends_at: Instant,
    /// A side with no media by then is a no-show (at most `ends_at`).
    pub no_show_at: Instant,
    /// How the connected time is charged (a free plan for visits that cost nothing); its
    /// `max_duration` is ignored: the slot's end is the limit.
    pub charging: ChargingPlan,
    /// Never recorded (attorney visits).
    pub privileged: bool,
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitAction {
    /// The slot is open: connect the sides to each other.
    Open,
    /// Read the paying account's balance and report it with [`VisitCore::balance_read`].
    ReadBalance,
    /// Both sides' media flows for the first time and the visit is not privileged: start
    /// recording both.
    StartRecording,
    /// The charging machine's work, carried out as for calls (debit, balance check,
    /// counted free increment), its outcome fed back with the `debit_*`/`balance_checked`
    /// inputs.
    Charging(ChargingAction),
    /// Tell both pages: the visit ends soon.
    Warn(WarningReason),
    /// Billed time stopped (`true`) or restarted (`false`): for the pages and the CDR.
    Paused(bool),
    /// The visit is over: stop forwarding and recording, tell both pages why, close the CDR.
    Ended(EndReason),
}

/// Where the visit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitState {
    /// Before the slot opens.
    Lobby,
    /// The slot is open; billing has not started (not both connected yet, or the balance
    /// read is in flight).
    Waiting,
    /// Billing has started (it may be paused).
    Connected,
    /// Over.
    Ended(EndReason),
}

#[derive(Debug, Clone, Copy, Default)]
struct Presence {
    /// The page's signalling is up.
    joined: bool,
    /// Media from this side reaches the gateway.
    flowing: bool,
    /// Media from this side has flowed at least once.
    ever_flowed: bool,
}

/// One visit in progress.
#[derive(Debug, Clone)]
pub struct VisitCore {
    plan: VisitPlan,
    state: VisitState,
    sides: [Presence; 2],
    charging: Charging,
    /// The balance read asked for at the first connection is in flight.
    reading_balance: bool,
    recording: bool,
    /// When billing started.
    connected_at: Option<Instant>,
    actions: VecDeque<VisitAction>,
}

impl VisitCore {
    /// A visit in its lobby (or already open, if `now` is past `opens_at`).
    pub fn new(plan: VisitPlan, now: Instant) -> Result<VisitCore, ChargingError> {
        let mut core = VisitCore {
            plan,
            state: VisitState::Lobby,
            sides: [Presence::default(); 2],
            // Replaced when billing starts, with the slot's rest as its maximum duration.
            charging: Charging::new(plan.charging)?,
            reading_balance: false,
            recording: false,
            connected_at: None,
            actions: VecDeque::new(),
        };
        core.handle_timeout(now);
        Ok(core)
    }

    // ---- getters ----

    pub fn state(&self) -> VisitState {
        self.state
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.state, VisitState::Ended(_))
    }

    /// Whether `side`'s page is connected.
    pub fn is_joined(&self, side: Side) -> bool {
        self.sides[index(side)].joined
    }

    /// The billing machine (increments, the amount charged, pauses).
    pub fn charging(&self) -> &Charging {
        &self.charging
    }

    /// When billing started, if it did.
    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at
    }

    /// Time both sides were connected and billed, up to `now` (the CDR's connected time).
    pub fn connected_for(&self, now: Instant) -> Duration {
        let Some(at) = self.connected_at else {
            return Duration::ZERO;
        };
        now.saturating_duration_since(at)
            .saturating_sub(self.charging.paused_for(now))
    }

    /// What is left of the visit at `now` (the pages' countdown): the slot, or less when
    /// the paying account's money runs out first.
    pub fn remaining(&self, now: Instant) -> Duration {
        let slot = self.plan.ends_at.saturating_duration_since(now);
        match self.charging.funded_until() {
            Some(funded) => slot.min(funded.saturating_duration_since(now)),
            None => slot,
        }
    }

    pub fn is_recording(&self) -> bool {
        self.recording
    }

    // ---- inputs ----

    /// `side`'s page connected (or reconnected) its signalling.
    pub fn joined(&mut self, side: Side, _now: Instant) {
        if !self.is_ended() {
            self.sides[index(side)].joined = true;
        }
    }

    /// Media from `side` reaches the gateway (ICE and DTLS up, packets arriving).
    pub fn media_flowing(&mut self, side: Side, now: Instant) {
        self.open_if_due(now);
        if self.is_ended() || self.state == VisitState::Lobby {
            return;
        }
        let p = &mut self.sides[index(side)];
        p.joined = true;
        p.flowing = true;
        p.ever_flowed = true;
        self.on_presence(now);
    }

    /// `side` dropped out (its page closed or its network went) and may come back.
    pub fn dropped(&mut self, side: Side, now: Instant) {
        if self.is_ended() {
            return;
        }
        let p = &mut self.sides[index(side)];
        p.joined = false;
        p.flowing = false;
        self.on_presence(now);
    }

    /// `side` ended the visit (the page's end button).
    pub fn left(&mut self, side: Side, now: Instant) {
        let reason = match side {
            Side::Visitor => EndReason::VisitorLeft,
            Side::Inmate => EndReason::InmateLeft,
        };
        self.end(now, reason);
    }

    /// An investigator or staff ended the visit (`terminated`), or the gateway could not go
    /// on (`system`).
    pub fn stop(&mut self, now: Instant, reason: EndReason) {
        self.end(now, reason);
    }

    /// The answer to [`VisitAction::ReadBalance`]: billing starts now, if both sides are
    /// still there. An unreadable balance (`None`) is a system failure: the visit cannot be
    /// billed, so it does not go on unbilled.
    pub fn balance_read(&mut self, now: Instant, balance: Option<Money>) {
        if !self.reading_balance {
            return;
        }
        self.reading_balance = false;
        if self.is_ended() {
            return;
        }
        let Some(balance) = balance else {
            self.end(now, EndReason::System);
            return;
        };
        let mut plan = self.plan.charging;
        plan.max_duration = self.plan.ends_at.saturating_duration_since(now);
        match Charging::new(plan) {
            Ok(c) => self.charging = c,
            // The same plan `new` accepted, with another maximum: cannot fail.
            Err(_) => {
                self.end(now, EndReason::System);
                return;
            }
        }
        self.state = VisitState::Connected;
        self.connected_at = Some(now);
        self.charging.start(now, balance);
        if !self.both_flowing() {
            self.charging.pause(now); // a side dropped while the balance was read
            self.actions.push_back(VisitAction::Paused(true));
        }
        self.drain_charging(now);
    }

    /// The ledger committed the debit of `increment`.
    pub fn debit_succeeded(&mut self, now: Instant, increment: u32, balance_after: Money) {
        self.charging.debit_succeeded(now, increment, balance_after);
        self.drain_charging(now);
    }

    /// The ledger refused the debit of `increment` (insufficient funds).
    pub fn debit_refused(&mut self, now: Instant, increment: u32) {
        self.charging.debit_refused(now, increment);
        self.drain_charging(now);
    }

    /// The answer to a [`ChargingAction::CheckBalance`].
    pub fn balance_checked(&mut self, now: Instant, after_increment: u32, balance: Option<Money>) {
        self.charging.balance_checked(now, after_increment, balance);
        self.drain_charging(now);
    }

    /// Handles every deadline reached at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        self.open_if_due(now);
        if now >= self.plan.ends_at {
            self.end(now, EndReason::SlotEnded);
            return;
        }
        if self.state == VisitState::Waiting
            && now >= self.plan.no_show_at
            && BOTH.iter().any(|s| !self.sides[index(*s)].ever_flowed)
        {
            self.end(now, EndReason::NoShow);
            return;
        }
        self.charging.handle_timeout(now);
        self.drain_charging(now);
    }

    // ---- polls ----

    /// The next action to carry out; drain after every input.
    pub fn poll_action(&mut self) -> Option<VisitAction> {
        self.actions.pop_front()
    }

    /// When [`VisitCore::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            VisitState::Ended(_) => None,
            VisitState::Lobby => Some(self.plan.opens_at),
            VisitState::Waiting if !self.reading_balance => {
                Some(self.plan.no_show_at.min(self.plan.ends_at))
            }
            VisitState::Waiting | VisitState::Connected => {
                let charging = self.charging.poll_timeout();
                Some(charging.map_or(self.plan.ends_at, |c| c.min(self.plan.ends_at)))
            }
        }
    }

    // ---- internals ----

    /// Leaves the lobby once the slot has opened (an input at that instant sees it open).
    fn open_if_due(&mut self, now: Instant) {
        if self.state == VisitState::Lobby && now >= self.plan.opens_at {
            self.state = VisitState::Waiting;
            self.actions.push_back(VisitAction::Open);
            self.on_presence(now);
        }
    }

    fn both_flowing(&self) -> bool {
        BOTH.iter().all(|s| self.sides[index(*s)].flowing)
    }

    /// Presence changed: start billing, or pause and resume it.
    fn on_presence(&mut self, now: Instant) {
        match self.state {
            VisitState::Waiting if self.both_flowing() && !self.reading_balance => {
                self.reading_balance = true;
                self.actions.push_back(VisitAction::ReadBalance);
                if !self.plan.privileged && !self.recording {
                    self.recording = true;
                    self.actions.push_back(VisitAction::StartRecording);
                }
            }
            VisitState::Connected => {
                let was_paused = self.charging.is_paused();
                if self.both_flowing() {
                    self.charging.resume(now);
                } else {
                    self.charging.pause(now);
                }
                if self.charging.is_paused() != was_paused {
                    self.actions
                        .push_back(VisitAction::Paused(self.charging.is_paused()));
                }
                self.drain_charging(now);
            }
            _ => {}
        }
    }

    /// Moves the charging machine's actions out; its cut ends the visit.
    fn drain_charging(&mut self, now: Instant) {
        while let Some(a) = self.charging.poll_action() {
            match a {
                ChargingAction::PlayWarning { reason } => {
                    self.actions.push_back(VisitAction::Warn(reason));
                }
                ChargingAction::Cut { reason } => {
                    let reason = match reason {
                        CutReason::FundsExhausted => EndReason::FundsExhausted,
                        CutReason::MaxDuration => EndReason::SlotEnded,
                        CutReason::DebitTimeout => EndReason::DebitTimeout,
                    };
                    self.end(now, reason);
                }
                other => {
                    if !self.is_ended() {
                        self.actions.push_back(VisitAction::Charging(other));
                    }
                }
            }
        }
    }

    fn end(&mut self, now: Instant, reason: EndReason) {
        if self.is_ended() {
            return;
        }
        self.state = VisitState::Ended(reason);
        // A debit already queued for the driver had begun its increment before the end: it
        // is carried out, and the charging machine (which handed it over) counts its outcome.
        self.charging.hung_up(now);
        self.actions.push_back(VisitAction::Ended(reason));
    }
}

#[cfg(test)]
mod tests;
