//! The task that runs one video visit: a thin tokio loop around [`VisitCore`], as
//! `call::task` is around a call.
//!
//! Owns: the visit's core, its room on a forwarding hub ([`HubHandle`]), the pages'
//! outgoing channels (one per side), and the session's database work through the same
//! [`Runner`] and [`SessionDb`] calls use, so the loop never waits on the database: debits,
//! balance reads, the timeline and the CDR's close are submitted, and their results come
//! back as inputs.
//! Calls: `sfu` (the room: offers, removals, its close), `session` (runner, CDR),
//! `charging` through the core.
//! Called by: whatever attaches the pages (the WebSocket endpoint) through
//! [`VisitInput`]s on the task's channel; the hub's events are routed to it by room.
//!
//! The loop: an input (a page's message, a page gone, a room event, a terminate), a
//! finished database job, or the core's deadline on the injected clock → the core →
//! its actions carried out → the pages told. After the end the task closes the room,
//! waits for the runner to close the CDR, and returns the visit's summary.

use super::core::{Side, VisitAction, VisitCore, VisitPlan, VisitState};
use super::recorder::{SideRecording, VisitFiles};
use super::signal::{FromPage, Phase, ToPage, WarningKind};
use crate::charging::{ChargingAction, WarningReason};
use crate::clock::Clock;
use crate::ledger::{DebitOutcome, LedgerError};
use crate::money::Money;
use crate::session::cdr::{self, NewVisitSession, SessionEventKind};
use crate::session::runner::{Closure, Runner, SessionDb, SessionDone};
use crate::session::{EndReason, Service};
use crate::sfu::{HubHandle, Participant, RoomConfig, RoomEvent, RoomId};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use tracing::{info, warn};

/// Frames a side's recorder may fall behind before the room drops (and counts) them:
/// about 10 s of 30 fps video and 50 packet/s audio.
const TAP_CAPACITY: usize = 1024;

/// How long an offer may take the hub to answer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the task is told.
#[derive(Debug)]
pub enum VisitInput {
    /// A side's page is connected (or reconnected): what the task sends it goes to `tx`.
    Attach {
        side: Side,
        tx: mpsc::Sender<ToPage>,
    },
    /// A message from a side's page.
    Page { side: Side, msg: FromPage },
    /// A side's page went away (its WebSocket closed); send it after dropping that page's
    /// receiver, so the task can tell it from a newer page of the same side.
    Detach { side: Side },
    /// An event of the visit's room on the hub.
    Room(RoomEvent),
    /// Staff or an investigator ends the visit (`terminated`); `done` is told when it is over.
    Terminate { done: oneshot::Sender<()> },
    /// An investigator's receive-only offer (recvonly audio, video, audio, video: the
    /// visitor's, then the inmate's): answered with a new watcher, or refused.
    Watch {
        sdp: String,
        done: oneshot::Sender<Result<Watching, WatchRefusal>>,
    },
    /// A watcher is done; `done` says whether the visit had it.
    Unwatch {
        watcher_id: String,
        done: oneshot::Sender<bool>,
    },
}

/// A watcher let into a visit: its id (for its removal) and the gateway's SDP answer.
#[derive(Debug, Clone)]
pub struct Watching {
    pub watcher_id: String,
    pub answer: String,
}

/// Why a watcher was not let into a visit.
#[derive(Debug, thiserror::Error)]
pub enum WatchRefusal {
    /// Privileged visits are never watched (nor recorded).
    #[error("the visit is privileged: it is never watched")]
    Privileged,
    #[error("the visit has ended")]
    Ended,
    /// The forwarding hub refused the offer (bad SDP, no usable media, or it stopped).
    #[error("{0}")]
    Offer(#[from] crate::sfu::SfuError),
    #[error("the gateway did not answer the offer in time")]
    Timeout,
}

/// Who and what a visit is, read from its booking when its task starts.
#[derive(Debug, Clone)]
pub struct VisitSetup {
    pub visit_id: String,
    pub session_id: String,
    pub facility_id: String,
    pub inmate_id: String,
    pub contact_id: String,
    /// The account that pays.
    pub account_id: String,
    pub privileged: bool,
    /// The node that runs the visit (the CDR's `node_id`).
    pub node_id: String,
    /// Where recordings go; `None`: this visit is not recorded (recording off, or a test).
    pub recordings_dir: Option<std::path::PathBuf>,
    pub opens_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub no_show_at: DateTime<Utc>,
    pub room: RoomId,
}

/// How a visit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitSummary {
    pub reason: EndReason,
    pub increments: u32,
    pub charged: Money,
    pub connected: Duration,
    pub paused: Duration,
}

/// One visit's task.
pub struct VisitTask {
    setup: VisitSetup,
    core: VisitCore,
    clock: Arc<dyn Clock>,
    hub: HubHandle,
    db: SessionDb,
    store: Store,
    runner: Runner<SessionDone>,
    /// The recordings being started (both sides), once the core asked for them.
    recordings: Option<tokio::task::JoinHandle<Vec<SideRecording>>>,
    pages: [Option<mpsc::Sender<ToPage>>; 2],
    /// The instant and wall time the task's clock readings are converted with.
    origin: (Instant, DateTime<Utc>),
    terminate_waiters: Vec<oneshot::Sender<()>>,
    ended_at: Option<Instant>,
    /// The phase the pages were last told.
    last_phase: Option<Phase>,
    /// Watchers in the room: their id (given to the API) → their number in the room.
    watchers: HashMap<String, u32>,
    next_watcher: u32,
}

fn index(side: Side) -> usize {
    match side {
        Side::Visitor => 0,
        Side::Inmate => 1,
    }
}

impl VisitTask {
    /// A task for `setup`, charged by `charging` (its limits are the slot's): opens the
    /// visit's session row (refused if the visit is live already, here or on another node)
    /// and its room on `hub`.
    pub async fn new(
        setup: VisitSetup,
        charging: crate::charging::ChargingPlan,
        store: Store,
        hub: HubHandle,
        clock: Arc<dyn Clock>,
    ) -> Result<VisitTask, VisitTaskError> {
        let origin = (clock.now(), clock.wall());
        let at = |t: DateTime<Utc>| instant_of(origin, t);
        let plan = VisitPlan {
            opens_at: at(setup.opens_at),
            ends_at: at(setup.ends_at),
            no_show_at: at(setup.no_show_at),
            charging,
            privileged: setup.privileged,
        };
        let core = VisitCore::new(plan, origin.0).map_err(VisitTaskError::Plan)?;
        let row = NewVisitSession {
            id: &setup.session_id,
            visit_id: &setup.visit_id,
            facility_id: &setup.facility_id,
            inmate_id: &setup.inmate_id,
            contact_id: &setup.contact_id,
            account_id: &setup.account_id,
            privileged: setup.privileged,
            node_id: &setup.node_id,
        };
        match cdr::open_visit(store.db(), &row, origin.1).await {
            Ok(true) => {}
            Ok(false) => return Err(VisitTaskError::AlreadyLive),
            Err(e) => return Err(VisitTaskError::Database(e.to_string())),
        }
        let db = SessionDb::new(
            store.clone(),
            &setup.session_id,
            &setup.facility_id,
            Service::Video,
        );
        hub.open_room(setup.room, RoomConfig::default())
            .await
            .map_err(|e| VisitTaskError::Hub(e.to_string()))?;
        Ok(VisitTask {
            setup,
            core,
            clock,
            hub,
            db,
            store,
            runner: Runner::new(),
            recordings: None,
            pages: [None, None],
            origin,
            terminate_waiters: Vec::new(),
            ended_at: None,
            last_phase: None,
            watchers: HashMap::new(),
            next_watcher: 0,
        })
    }

    /// Runs the visit to its end (in a span naming the visit and its session); returns
    /// its summary.
    pub async fn run(self, inputs: mpsc::Receiver<VisitInput>) -> VisitSummary {
        let span = tracing::info_span!("visit", visit = %self.setup.visit_id, session = %self.setup.session_id);
        self.drive(inputs).instrument(span).await
    }

    async fn drive(mut self, mut inputs: mpsc::Receiver<VisitInput>) -> VisitSummary {
        self.act().await;
        let mut inputs_open = true;
        loop {
            if self.core.is_ended() && self.runner.is_idle() {
                break;
            }
            let deadline = self.core.poll_timeout();
            let sleep = deadline.map(|d| self.clock.sleep_until(d));
            tokio::select! {
                biased;
                input = inputs.recv(), if inputs_open => match input {
                    Some(i) => self.input(i).await,
                    None => {
                        // Nobody can reach the visit any more: it cannot go on.
                        inputs_open = false;
                        let now = self.clock.now();
                        self.core.stop(now, EndReason::System);
                    }
                },
                done = self.runner.next_done() => self.done(done),
                () = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {
                    let now = self.clock.now();
                    self.core.handle_timeout(now);
                }
            }
            self.act().await;
        }
        for w in self.terminate_waiters.drain(..) {
            let _ = w.send(());
        }
        let now = self.ended_at.unwrap_or_else(|| self.clock.now());
        let c = self.core.charging();
        VisitSummary {
            reason: match self.core.state() {
                VisitState::Ended(r) => r,
                _ => EndReason::System,
            },
            increments: c.increments_charged(),
            charged: c.charged(),
            connected: self.core.connected_for(now),
            paused: c.paused_for(now),
        }
    }

    async fn input(&mut self, input: VisitInput) {
        let now = self.clock.now();
        match input {
            VisitInput::Attach { side, tx } => {
                if self.core.is_ended() {
                    let _ = tx.try_send(self.ended_message());
                    return;
                }
                // A second page of the side (a reload, another tab or device) takes over;
                // the page it replaces is told why it goes quiet.
                if let Some(old) = self.pages[index(side)].replace(tx) {
                    let _ = old.try_send(ToPage::Error {
                        code: "opened_elsewhere".into(),
                        message: "the visit was opened again in another window or device; \
                                  this one is closed"
                            .into(),
                    });
                }
                self.core.joined(side, now);
                self.event(now, SessionEventKind::Joined, side);
                self.send_state(side, now);
            }
            // Only the page that went: a page replaced by a newer one of its side (a
            // reload) detaches after the newer one attached, and must not take it along.
            VisitInput::Detach { side } => {
                let slot = &mut self.pages[index(side)];
                if slot.as_ref().is_some_and(mpsc::Sender::is_closed) {
                    *slot = None;
                }
            }
            VisitInput::Page { side, msg } => self.page(side, msg, now).await,
            VisitInput::Room(e) => self.room(e, now),
            VisitInput::Terminate { done } => {
                self.terminate_waiters.push(done);
                self.core.stop(now, EndReason::Terminated);
            }
            VisitInput::Watch { sdp, done } => {
                let _ = done.send(self.watch(sdp).await);
            }
            VisitInput::Unwatch { watcher_id, done } => {
                let had = match self.watchers.remove(&watcher_id) {
                    Some(n) => {
                        if let Err(e) = self
                            .hub
                            .remove(self.setup.room, Participant::Watcher(n))
                            .await
                        {
                            warn!(error = %e, "cannot remove a watcher");
                        }
                        info!(watcher = %watcher_id, "a watcher left");
                        true
                    }
                    None => false,
                };
                let _ = done.send(had);
            }
        }
    }

    /// Lets a watcher in: a receive-only peer of the room, fed both sides. Never for a
    /// privileged visit, whatever the API checked before.
    async fn watch(&mut self, sdp: String) -> Result<Watching, WatchRefusal> {
        if self.setup.privileged {
            return Err(WatchRefusal::Privileged);
        }
        if self.core.is_ended() {
            return Err(WatchRefusal::Ended);
        }
        self.next_watcher = self.next_watcher.wrapping_add(1);
        let n = self.next_watcher;
        let offer = self
            .hub
            .offer(self.setup.room, Participant::Watcher(n), sdp);
        let answer = match tokio::time::timeout(OFFER_TIMEOUT, offer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(WatchRefusal::Offer(e)),
            Err(_) => return Err(WatchRefusal::Timeout),
        };
        let watcher_id = uuid::Uuid::new_v4().to_string();
        self.watchers.insert(watcher_id.clone(), n);
        info!(watcher = %watcher_id, "a watcher joined");
        Ok(Watching { watcher_id, answer })
    }

    async fn page(&mut self, side: Side, msg: FromPage, now: Instant) {
        match msg {
            FromPage::Hello { .. } => {} // the endpoint checked it before attaching
            FromPage::Ping => self.tell(side, ToPage::Pong),
            FromPage::Leave => {
                self.event(now, SessionEventKind::Left, side);
                self.core.left(side, now);
            }
            FromPage::Offer { sdp } => {
                if self.core.is_ended() || self.core.state() == VisitState::Lobby {
                    return self.tell(side, error("visit_not_open", "the visit is not open"));
                }
                let offer = self
                    .hub
                    .offer(self.setup.room, Participant::Side(side), sdp);
                match tokio::time::timeout(OFFER_TIMEOUT, offer).await {
                    Ok(Ok(sdp)) => self.tell(side, ToPage::Answer { sdp }),
                    Ok(Err(e)) => self.tell(side, error("offer_refused", &e.to_string())),
                    Err(_) => self.tell(
                        side,
                        error("offer_timeout", "the gateway did not answer in time"),
                    ),
                }
            }
        }
    }

    fn room(&mut self, e: RoomEvent, now: Instant) {
        match e {
            RoomEvent::Connected(Participant::Side(side)) => {
                self.event(now, SessionEventKind::Media, side);
                self.core.media_flowing(side, now);
            }
            RoomEvent::Left(Participant::Side(side), why) => {
                info!(
                    side = side.as_str(),
                    why = why.as_str(),
                    "a side dropped out"
                );
                self.event(now, SessionEventKind::Dropped, side);
                self.core.dropped(side, now);
            }
            RoomEvent::Left(Participant::Watcher(n), why) => {
                info!(watcher = n, why = why.as_str(), "a watcher's peer is gone");
                self.watchers.retain(|_, w| *w != n);
            }
            _ => {}
        }
    }

    fn done(&mut self, done: SessionDone) {
        let now = self.clock.now();
        match done {
            SessionDone::Debited {
                increment, result, ..
            } => match result {
                Ok(
                    DebitOutcome::Committed { balance_after, .. }
                    | DebitOutcome::AlreadyCommitted { balance_after, .. },
                ) => self.core.debit_succeeded(now, increment, balance_after),
                Ok(DebitOutcome::Refused { .. }) => self.core.debit_refused(now, increment),
                Err(LedgerError::AccountClosed { .. }) => {
                    self.core.stop(now, EndReason::Released);
                }
                Err(e) => {
                    warn!(error = %e, increment, "debit failed");
                    self.core.stop(now, EndReason::System);
                }
            },
            // The read that starts billing is tagged 0 (the charging machine's own checks
            // come after a paid increment, 1 or more).
            SessionDone::BalanceRead {
                after_increment: 0,
                balance,
            } => self.core.balance_read(now, balance),
            SessionDone::BalanceRead {
                after_increment,
                balance,
            } => self.core.balance_checked(now, after_increment, balance),
            SessionDone::IncrementCounted {
                increment,
                result: Err(e),
            } => warn!(error = %e, increment, "cannot count the free increment"),
            _ => {}
        }
    }

    /// Carries out the core's actions.
    async fn act(&mut self) {
        while let Some(a) = self.core.poll_action() {
            let now = self.clock.now();
            match a {
                VisitAction::Open => info!("the visit's slot is open"),
                VisitAction::ReadBalance => {
                    let job = self
                        .db
                        .check_balance(Some(self.setup.account_id.clone()), 0);
                    self.runner.submit(job);
                }
                VisitAction::StartRecording => self.start_recording(now),
                VisitAction::Charging(ChargingAction::Debit { increment, amount }) => {
                    let job = self
                        .db
                        .debit(self.setup.account_id.clone(), increment, amount);
                    self.runner.submit(job);
                }
                VisitAction::Charging(ChargingAction::CheckBalance { after_increment }) => {
                    let job = self
                        .db
                        .check_balance(Some(self.setup.account_id.clone()), after_increment);
                    self.runner.submit(job);
                }
                VisitAction::Charging(ChargingAction::Count { increment }) => {
                    let job = self.db.count_increment(increment);
                    self.runner.submit(job);
                }
                VisitAction::Charging(_) => {}
                VisitAction::Warn(reason) => {
                    let reason = match reason {
                        WarningReason::FundsLow => WarningKind::FundsLow,
                        WarningReason::MaxDuration => WarningKind::SlotEnding,
                    };
                    let remaining_secs = self.core.remaining(now).as_secs();
                    for side in [Side::Visitor, Side::Inmate] {
                        self.tell(
                            side,
                            ToPage::Warning {
                                reason,
                                remaining_secs,
                            },
                        );
                    }
                }
                VisitAction::Paused(paused) => {
                    let kind = match paused {
                        true => SessionEventKind::Paused,
                        false => SessionEventKind::Resumed,
                    };
                    let job = self.db.event(self.wall_of(now), kind, "");
                    self.runner.submit(job);
                }
                VisitAction::Ended(reason) => self.ended(reason, now).await,
            }
        }
        // The slot opened, billing started, paused or resumed: both pages are told.
        let phase = self.phase();
        if !self.core.is_ended() && self.last_phase != Some(phase) {
            self.last_phase = Some(phase);
            let now = self.clock.now();
            self.send_state_all(now);
        }
    }

    async fn ended(&mut self, reason: EndReason, now: Instant) {
        info!(reason = reason.as_str(), "visit ended");
        self.ended_at = Some(now);
        for side in [Side::Visitor, Side::Inmate] {
            self.tell(side, self.ended_message());
        }
        if let Err(e) = self.hub.close_room(self.setup.room).await {
            warn!(error = %e, "cannot close the visit's room");
        }
        let c = self.core.charging();
        let mut closure = Closure {
            reason,
            inmate_id: Some(self.setup.inmate_id.clone()),
            number_e164: None,
            privileged: self.setup.privileged,
            recorded: false,
            answer_at: None,
            accepted_at: self.core.connected_at().map(|i| self.wall_of(i)),
            end_at: self.wall_of(now),
            media_end_at: self.core.connected_at().map(|_| self.wall_of(now)),
            counted_increments: c.increments_charged(),
            charged: c.charged(),
            paused: Some(c.paused_for(now)),
        };
        // The room is closed, so the taps are: the writers finish their files. The CDR is
        // closed once the recordings are chained, saying whether there are any.
        let (recordings, store, db) = (self.recordings.take(), self.store.clone(), self.db.clone());
        self.runner.submit(async move {
            let recs = match recordings {
                Some(h) => h.await.unwrap_or_default(),
                None => Vec::new(),
            };
            closure.recorded = !recs.is_empty();
            for r in recs {
                r.finish(&store).await;
            }
            db.close(closure, None).await
        });
    }

    /// Starts recording both sides from the room's taps, beside the loop (files, rows).
    fn start_recording(&mut self, now: Instant) {
        let Some(dir) = self.setup.recordings_dir.clone() else {
            return info!("recording is off: this visit is not recorded");
        };
        let files = VisitFiles {
            dir,
            session_id: self.setup.session_id.clone(),
            facility_id: self.setup.facility_id.clone(),
            node_id: self.setup.node_id.clone(),
        };
        let (hub, store, room, wall) = (
            self.hub.clone(),
            self.store.clone(),
            self.setup.room,
            self.wall_of(now),
        );
        self.recordings = Some(tokio::spawn(async move {
            let mut started = Vec::new();
            for side in [Side::Visitor, Side::Inmate] {
                let tap = match hub.tap(room, side, TAP_CAPACITY).await {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(error = %e, side = side.as_str(), "cannot tap the room: side not recorded");
                        continue;
                    }
                };
                match SideRecording::start(&store, &files, side, tap, now, wall).await {
                    Ok(r) => started.push(r),
                    Err(e) => warn!(error = %e, side = side.as_str(), "cannot start the recording"),
                }
            }
            started
        }));
    }

    fn ended_message(&self) -> ToPage {
        let reason = match self.core.state() {
            VisitState::Ended(r) => r.as_str(),
            _ => EndReason::System.as_str(),
        };
        ToPage::Ended {
            reason: reason.to_string(),
        }
    }

    fn event(&mut self, now: Instant, kind: SessionEventKind, side: Side) {
        let job = self.db.event(self.wall_of(now), kind, side.as_str());
        self.runner.submit(job);
    }

    fn phase(&self) -> Phase {
        match self.core.state() {
            VisitState::Lobby => Phase::Lobby,
            VisitState::Waiting | VisitState::Ended(_) => Phase::Waiting,
            VisitState::Connected if self.core.charging().is_paused() => Phase::Paused,
            VisitState::Connected => Phase::Connected,
        }
    }

    fn state_message(&self, side: Side, now: Instant) -> ToPage {
        let opens_in_secs = match self.core.state() {
            VisitState::Lobby => Some(
                instant_of(self.origin, self.setup.opens_at)
                    .saturating_duration_since(now)
                    .as_secs(),
            ),
            _ => None,
        };
        let other = match side {
            Side::Visitor => Side::Inmate,
            Side::Inmate => Side::Visitor,
        };
        ToPage::State {
            phase: self.phase(),
            remaining_secs: self.core.remaining(now).as_secs(),
            opens_in_secs,
            other_side: self.core.is_joined(other),
            balance: None,
        }
    }

    fn send_state(&mut self, side: Side, now: Instant) {
        let msg = self.state_message(side, now);
        self.tell(side, msg);
    }

    fn send_state_all(&mut self, now: Instant) {
        for side in [Side::Visitor, Side::Inmate] {
            self.send_state(side, now);
        }
    }

    /// Sends to a side's page; a page too slow to read is skipped (it gets the next state).
    fn tell(&mut self, side: Side, msg: ToPage) {
        if let Some(tx) = &self.pages[index(side)] {
            if tx.try_send(msg).is_err() {
                warn!(
                    side = side.as_str(),
                    "a visit page is not reading: message dropped"
                );
            }
        }
    }

    fn wall_of(&self, at: Instant) -> DateTime<Utc> {
        let (i0, w0) = self.origin;
        match at.checked_duration_since(i0) {
            Some(d) => w0 + chrono::Duration::from_std(d).unwrap_or_default(),
            None => w0 - chrono::Duration::from_std(i0 - at).unwrap_or_default(),
        }
    }
}

/// `t` (wall) as an instant on the clock whose reading at `origin.1` was `origin.0`; a
/// time before the origin is the origin (deadlines in the past are due now).
fn instant_of(origin: (Instant, DateTime<Utc>), t: DateTime<Utc>) -> Instant {
    let (i0, w0) = origin;
    match (t - w0).to_std() {
        Ok(d) => i0.checked_add(d).unwrap_or(i0),
        Err(_) => i0,
    }
}

fn error(code: &str, message: &str) -> ToPage {
    ToPage::Error {
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// Why a visit's task could not start.
#[derive(Debug, thiserror::Error)]
pub enum VisitTaskError {
    #[error("the visit's charging plan is unusable: {0}")]
    Plan(crate::charging::ChargingError),
    #[error("the forwarding hub refused the room: {0}")]
    Hub(String),
    #[error("the visit is live already (here or on another node)")]
    AlreadyLive,
    #[error("the visit's session row could not be written: {0}")]
    Database(String),
}
