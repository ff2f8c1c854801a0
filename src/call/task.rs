//! One call's task: owns the call's [`Call`] machine, its two legs, its media and its
//! session's runner, and feeds the machine every input (see the `driver` module doc,
//! which has the shape and the decisions).

use super::checks::{check_destination, check_pin, PinCheck, PinEntry};
use super::driver::{parse_offer, redacted, CallInput, Switchboard, ALLOW};
use super::live::Control;
use super::stats::PinOutcome;
use super::trunk::{Placing, TrunkEvent, TrunkLeg};
use super::{Call, CallAction, CallSummary, Destination, EndReason, Leg, PinVerdict, TrunkFailure};
use crate::ledger::{DebitOutcome, LedgerError};
use crate::media::dtmf::parse_sip_info;
use crate::media::engine::{CallMedia, MediaEvent};
use crate::media::prompts::PromptId;
use crate::media::relay::{LatchPolicy, Side};
use crate::media::sdp::{self, LocalMedia, NegotiatedMedia};
use crate::session::runner::{
    Closure, FinishingRecording, Runner, SessionDb, SessionDone, StartedRecording,
};
use crate::session::timeline::{CallEventKind, PendingEvent};
use crate::sip::dialog::Dialog;
use crate::sip::message::{new_tag, Method, Request, Response};
use crate::sip::transport::{Event, Transport, TxKey};
use crate::sip::uri::{Host, Scheme, SipUri};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How long a finished call waits for the trunk's final answer to a cancelled INVITE.
const TRUNK_LINGER: Duration = Duration::from_secs(32);

pub(super) struct HandsetLeg {
    pub(super) invite_key: TxKey,
    pub(super) invite: Request,
    pub(super) source: SocketAddr,
    pub(super) transport: Transport,
    pub(super) dialog: Dialog,
    /// Our SDP answer (also the answer to re-INVITEs).
    pub(super) answer: Vec<u8>,
    pub(super) media: NegotiatedMedia,
}

/// One call's task (see the module doc).
pub(super) struct CallTask {
    sb: Arc<Switchboard>,
    /// This task's own input (registered under each Call-ID and branch it owns).
    input: mpsc::UnboundedSender<CallInput>,
    call: Call,
    session_id: String,
    facility_id: String,
    handset_id: String,
    t0: Instant,
    wall0: DateTime<Utc>,
    media: CallMedia,
    handset: HandsetLeg,
    trunk: Option<TrunkLeg>,
    account_id: Option<String>,
    /// Routes this call registered (removed when it ends).
    call_ids: Vec<String>,
    branches: Vec<String>,
    /// Told when the CDR is closed (terminate and shutdown wait on it).
    waiters: Vec<oneshot::Sender<()>>,
    /// The recording being captured, from acceptance to the end.
    recording: Option<StartedRecording>,
    /// A recording start is with the runner: the close waits for it ([`Self::end`]).
    recording_starting: bool,
    /// Timeline events not yet written ([`Self::note_event`]).
    events: Vec<PendingEvent>,
    /// The call's end, held while its recording is still being started.
    ending: Option<CallSummary>,
    /// The session's database work (the `session::runner` module doc): submitted, never
    /// awaited inline; its results come back as inputs ([`Done`]).
    db: SessionDb,
    runner: Runner<Done>,
}

/// Database work of a call, finished: fed back to the [`Call`] machine as an input.
#[derive(Debug)]
enum Done {
    Session(SessionDone),
    /// The ID + PIN check, with the account paying a valid inmate's calls.
    Pin(Result<(PinCheck, Option<String>), StoreError>),
    Destination(Result<Destination, StoreError>),
}

fn side(leg: Leg) -> Side {
    match leg {
        Leg::Handset => Side::A,
        Leg::Trunk => Side::B,
    }
}

fn leg_of(side: Side) -> Leg {
    match side {
        Side::A => Leg::Handset,
        Side::B => Leg::Trunk,
    }
}

impl CallTask {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        sb: Arc<Switchboard>,
        input: mpsc::UnboundedSender<CallInput>,
        call: Call,
        (session_id, facility_id, handset_id): (String, String, String),
        (t0, wall0): (Instant, DateTime<Utc>),
        media: CallMedia,
        handset: HandsetLeg,
        db: SessionDb,
    ) -> CallTask {
        CallTask {
            sb,
            input,
            call,
            session_id,
            facility_id,
            handset_id,
            t0,
            wall0,
            media,
            handset,
            trunk: None,
            account_id: None,
            call_ids: Vec::new(),
            branches: Vec::new(),
            waiters: Vec::new(),
            recording: None,
            recording_starting: false,
            events: Vec::new(),
            ending: None,
            db,
            runner: Runner::new(),
        }
    }

    /// The Call-IDs and branches this call registered (removed when it ends).
    pub(super) fn routes(&self) -> (&[String], &[String]) {
        (&self.call_ids, &self.branches)
    }

    fn now(&self) -> Instant {
        self.sb.now()
    }

    fn wall_of(&self, at: Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.t0);
        self.wall0 + chrono::Duration::from_std(since).unwrap_or_default()
    }

    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<CallInput>,
        mut media_rx: mpsc::UnboundedReceiver<MediaEvent>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        // The machine's next deadline, slept on the injected clock it reads `now` from; the
        // sleep is made again only when the deadline moves, not on every input.
        let mut armed: Option<(Instant, crate::clock::Sleep)> = None;
        loop {
            self.drain().await;
            if self.call.is_ended() {
                break;
            }
            let deadline = self.call.poll_timeout();
            if armed.as_ref().map(|(at, _)| *at) != deadline {
                armed = deadline.map(|d| (d, self.sb.store.clock().sleep_until(d)));
            }
            let sleep = async {
                match armed.as_mut() {
                    Some((_, s)) => s.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            // Biased: control and signalling before media, and all of them before the
            // machine's timer, so a BYE already queued when an increment boundary comes due
            // ends the call before that increment is charged.
            tokio::select! {
                biased;
                Some(c) = control.recv() => {
                    let now = self.now();
                    match c {
                        Control::Terminate { done } => {
                            info!("terminated by request");
                            self.waiters.extend(done);
                            self.call.terminate(now);
                        }
                        Control::Release { done } => {
                            info!("the inmate was released: ending the call");
                            self.waiters.extend(done);
                            self.call.inmate_released(now);
                        }
                        Control::Shutdown { done } => {
                            self.waiters.extend(done);
                            self.call.fail(now);
                        }
                        Control::Listen { tap, reply } => {
                            let _ = reply.send(self.listen(tap));
                        }
                    }
                }
                input = rx.recv() => match input {
                    Some(CallInput::Sip(ev)) => {
                        // An INFO key press may accept the call (as above).
                        let now = self.now();
                        self.report_rtp(now);
                        self.on_sip(ev, false).await
                    }
                    Some(CallInput::AnsweredBye(ev)) => self.on_sip(ev, true).await,
                    None => { let now = self.now(); self.call.fail(now); }
                },
                Some(ev) = media_rx.recv() => {
                    let now = self.now();
                    // A key press may accept the call: decide on fresh media figures.
                    self.report_rtp(now);
                    match ev {
                        MediaEvent::Digit { side, digit } => {
                            log_digit(&self.call, leg_of(side), digit);
                            self.call.digit(now, leg_of(side), digit);
                        }
                        MediaEvent::PromptsDone { side } => self.call.prompt_finished(now, leg_of(side)),
                    }
                }
                done = self.runner.next_done(), if !self.runner.is_idle() => self.on_done(done),
                () = sleep => {
                    armed = None;
                    let now = self.now();
                    self.report_rtp(now);
                    self.call.handle_timeout(now);
                }
            }
        }
        self.settle(&mut rx, &mut control).await;
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
        self.linger(&mut rx).await;
    }

    /// After the end: the CDR close (and any work before it) finishes while the call's
    /// SIP input is still served; terminate and shutdown requests that arrive meanwhile
    /// wait for the close with the others.
    async fn settle(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<CallInput>,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) {
        while !self.runner.is_idle() {
            tokio::select! {
                biased;
                Some(c) = control.recv() => match c {
                    Control::Terminate { done } | Control::Release { done } | Control::Shutdown { done } => {
                        self.waiters.extend(done)
                    }
                    Control::Listen { reply, .. } => {
                        let _ = reply.send(Err(super::live::ListenRefusal::NotConnected));
                    }
                },
                Some(input) = rx.recv() => match input {
                    CallInput::Sip(ev) => self.on_sip(ev, false).await,
                    CallInput::AnsweredBye(ev) => self.on_sip(ev, true).await,
                },
                done = self.runner.next_done() => self.on_done(done),
            }
            self.drain().await;
        }
    }

    /// Feeds finished database work to the machine.
    fn on_done(&mut self, done: Done) {
        let now = self.now();
        match done {
            Done::Pin(checked) => self.pin_checked(now, checked),
            Done::Destination(Ok(d)) => {
                let verdict = match &d {
                    Destination::Refused(r) => r.as_str(),
                    Destination::Authorized(_) => "authorized",
                };
                let at = self.wall_of(now);
                self.note_event(at, CallEventKind::Checks, verdict);
                // The number, contact and tariff are on the session already
                // (`check_destination` wrote them); the log names no number.
                match &d {
                    Destination::Refused(r) => info!(reason = r.as_str(), "destination refused"),
                    Destination::Authorized(a) => {
                        info!(
                            privileged = a.privileged,
                            cost_per_increment = %a.charging.cost_per_increment,
                            payer = %a.account_id,
                            "destination authorized"
                        );
                        // Every debit of the call goes to the payer chosen here.
                        self.account_id = Some(a.account_id.clone());
                    }
                }
                self.call.destination_checked(now, d)
            }
            Done::Destination(Err(e)) => {
                warn!(error = %e, "destination check failed");
                self.call.fail(now)
            }
            Done::Session(done) => self.on_session_done(now, done),
        }
    }

    fn on_session_done(&mut self, now: Instant, done: SessionDone) {
        match done {
            SessionDone::Debited {
                increment,
                amount,
                result,
            } => self.debited(now, increment, amount, result),
            SessionDone::BalanceRead {
                after_increment,
                balance,
            } => {
                debug!(after_increment, balance = ?balance, "balance checked before the funds warning");
                self.call.balance_checked(now, after_increment, balance);
            }
            // A free increment began: the session counts it (the CDR's billed increments).
            // A released inmate's account is closed: the call ends `released`, as a paid
            // call does at its next debit. A failed write only costs the count of a call
            // that moves no money.
            SessionDone::IncrementCounted { increment, result } => match result {
                Ok(true) => debug!(increment, "free increment counted"),
                Ok(false) => {
                    info!(increment, "the account is closed (inmate released)");
                    self.call.inmate_released(now);
                }
                Err(e) => warn!(error = %e, increment, "cannot count the free increment"),
            },
            SessionDone::RecordingStarted(r) => {
                self.recording_started(*r);
                self.recording_settled();
            }
            SessionDone::RecordingFailed => self.recording_settled(),
            SessionDone::Noted | SessionDone::Closed => {}
        }
    }

    /// Tells the machine when each leg last sent RTP (the media engine's stamp, moved from
    /// the media workers' real clock onto the call's), before every timeout it handles: the
    /// media timeout (`call` module doc) decides on fresh figures. A leg whose SDP says its
    /// peer sends nothing (`recvonly`, `inactive`) is reported as heard now: there is no
    /// media to miss.
    fn report_rtp(&mut self, now: Instant) {
        for leg in [Leg::Handset, Leg::Trunk] {
            let negotiated = match leg {
                Leg::Handset => Some(&self.handset.media),
                Leg::Trunk => self.trunk.as_ref().and_then(TrunkLeg::media),
            };
            let silence = self.media.rtp_silence(side(leg));
            if let Some(at) = last_heard(now, negotiated, silence) {
                self.call.rtp_received(leg, at);
            }
        }
    }

    /// A re-INVITE's offer says whether the peer goes on sending (`sendrecv`, `sendonly`)
    /// or holds without media (`recvonly`, `inactive`, port 0); the media timeout reads
    /// it through the leg's negotiated direction ([`last_heard`]). The relay is unchanged.
    /// A peer that re-offers media is alive now (a resumed peer's first packets may take
    /// a moment), so its silence counts from here.
    fn note_reoffer(&mut self, leg: Leg, req: &Request, now: Instant) {
        let Some(direction) = parse_offer(req)
            .ok()
            .and_then(|o| sdp::reoffered_direction(&o))
        else {
            return;
        };
        let media = match leg {
            Leg::Handset => Some(&mut self.handset.media),
            Leg::Trunk => self.trunk.as_mut().and_then(TrunkLeg::media_mut),
        };
        if let Some(m) = media {
            if m.direction != direction {
                info!(
                    ?leg,
                    direction = direction.as_str(),
                    "re-INVITE changes the media direction"
                );
                m.direction = direction;
            }
            self.call.rtp_received(leg, now);
        }
    }

    /// Attaches a live listener's tap: only to an accepted, bridged, non-privileged call.
    fn listen(&self, tap: crate::media::engine::Tap) -> Result<(), super::live::ListenRefusal> {
        use super::live::ListenRefusal;
        if self.call.is_privileged() {
            warn!("live listen refused: privileged call");
            return Err(ListenRefusal::Privileged);
        }
        if self.call.state() != super::CallState::Connected {
            return Err(ListenRefusal::NotConnected);
        }
        self.media
            .add_tap(tap)
            .map_err(|_| ListenRefusal::NotConnected)?;
        info!("live listener attached");
        Ok(())
    }

    /// After the CDR: wait for the trunk's final answer to an INVITE still pending, so a
    /// 2xx that crossed our CANCEL is ACKed and hung up rather than left ringing.
    async fn linger(&mut self, rx: &mut mpsc::UnboundedReceiver<CallInput>) {
        let pending = |t: &Option<TrunkLeg>| t.as_ref().is_some_and(TrunkLeg::is_pending);
        if !pending(&self.trunk) {
            return;
        }
        let mut until = self.sb.store.clock().sleep_until(self.now() + TRUNK_LINGER);
        while pending(&self.trunk) {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(CallInput::Sip(ev)) => self.on_sip(ev, false).await,
                    Some(CallInput::AnsweredBye(ev)) => self.on_sip(ev, true).await,
                    None => break,
                },
                () = &mut until => break,
            }
        }
    }

    /// Carries out the machine's actions until it has none.
    async fn drain(&mut self) {
        while let Some(action) = self.call.poll_action() {
            self.execute(action).await;
        }
    }

    async fn execute(&mut self, action: CallAction) {
        let now = self.now();
        match action {
            CallAction::AnswerHandset => {
                let h = &self.handset;
                let mut resp = Response::for_request(&h.invite, 200, "OK")
                    .with_to_tag(&h.dialog.local_tag)
                    .with_record_route(&h.invite);
                let transport = if h.transport.is_reliable() {
                    ";transport=tcp"
                } else {
                    ""
                };
                resp.headers.push(
                    "Contact",
                    format!(
                        "<sip:sallyport@{}{transport}>",
                        self.sb.sent_by_for(h.transport)
                    ),
                );
                resp.headers.push("Allow", ALLOW);
                let resp = resp.with_body("application/sdp", h.answer.clone());
                let key = h.invite_key.clone();
                self.branches.push(key.branch.clone());
                self.sb.routes.add_branch(&key.branch, &self.input);
                self.sb.respond(&key, resp).await;
            }
            CallAction::RejectHandset { status } => {
                let h = &self.handset;
                let resp = Response::for_request(&h.invite, status, "Request Terminated")
                    .with_to_tag(&h.dialog.local_tag);
                self.sb.respond(&h.invite_key, resp).await;
            }
            CallAction::Play { leg, prompt } => {
                self.media.play(side(leg), prompt);
                // The announcement and the warnings go on the call's timeline.
                let noted = match (leg, prompt) {
                    (Leg::Trunk, PromptId::AnnouncementRecorded) => {
                        Some((CallEventKind::Announcement, "recorded"))
                    }
                    (Leg::Trunk, PromptId::AnnouncementPrivileged) => {
                        Some((CallEventKind::Announcement, "privileged"))
                    }
                    (Leg::Handset, PromptId::FundsWarning) => {
                        Some((CallEventKind::Warning, "funds_low"))
                    }
                    (Leg::Handset, PromptId::DurationWarning) => {
                        Some((CallEventKind::Warning, "max_duration"))
                    }
                    _ => None,
                };
                if let Some((kind, detail)) = noted {
                    let at = self.wall_of(now);
                    self.note_event(at, kind, detail);
                }
            }
            CallAction::StopPlaying { leg } => self.media.stop(side(leg)),
            CallAction::CheckPin { calling_id, pin } => self.check_pin(calling_id, pin),
            CallAction::CheckDestination { inmate_id, dialed } => {
                let (store, session, config) = (
                    self.sb.store.clone(),
                    self.session_id.clone(),
                    self.sb.config.clone(),
                );
                let (wall, service) = (self.sb.wall(), self.db.service());
                self.runner.submit(async move {
                    let d = check_destination(
                        &store,
                        &session,
                        &inmate_id,
                        &dialed,
                        service,
                        &config.billing,
                        wall,
                    )
                    .await;
                    Done::Destination(d)
                });
            }
            CallAction::PlaceTrunkCall { number } => {
                if let Err(status) = self.place_trunk_call(&number).await {
                    let now = self.now();
                    self.call.trunk_failed(now, TrunkFailure::Status(status));
                }
            }
            CallAction::Ringback { on } => self.media.ringback(on),
            CallAction::CancelTrunk => self.cancel_trunk().await,
            CallAction::Bridge => {
                info!("accepted: bridged");
                self.media.bridge(true);
                let at = self.wall_of(now);
                self.submit(self.db.progress(None, Some(at)));
            }
            CallAction::StartRecording { at } => self.start_recording(at),
            CallAction::Debit { increment, amount } => self.debit(increment, amount),
            CallAction::CheckBalance { after_increment } => {
                let account = self.account_id.clone();
                self.submit(self.db.check_balance(account, after_increment));
            }
            CallAction::CountIncrement { increment } => {
                self.submit(self.db.count_increment(increment))
            }
            // The cut goes on the session before anything else of the end is written (the
            // runner keeps the order): `call` module doc, "The cut survives a crash".
            CallAction::MediaEnded { reason, at } => {
                let at = self.wall_of(at);
                self.submit(self.db.media_ended(reason, at));
            }
            CallAction::Hangup { leg } => self.hangup(leg).await,
            CallAction::Ended(summary) => {
                if summary.reason == EndReason::MediaTimeout {
                    let silent = |side| self.media.rtp_silence(side).map(|d| d.as_secs_f32());
                    warn!(
                        handset_silent_secs = ?silent(Side::A),
                        trunk_silent_secs = ?silent(Side::B),
                        "no RTP from a leg: ending the call (media timeout)"
                    );
                }
                self.end(summary);
            }
        }
    }

    /// Closes the recording and the CDR — once a recording start still with the runner
    /// has come back, so a recording begun in the call's last moment is closed with it.
    fn end(&mut self, summary: CallSummary) {
        if self.recording_starting {
            self.ending = Some(summary);
            return;
        }
        // The recording ends where the call ended, before the CDR write (which may wait
        // behind a stalled debit, or retry) could let it run on.
        let closing = self.close_recording(summary.ended_at);
        let closure = self.closure(&summary, closing.is_some());
        self.write_events();
        self.submit(self.db.close(closure, closing));
    }

    /// Notes a timeline event. The PIN's outcome and the checks' verdict wait and are
    /// written with the announcement, in one transaction (a set-up's commits are its main
    /// cost on SQLite), or before the close of a call that gets no announcement; the
    /// announcement and warnings are written at once.
    fn note_event(&mut self, at: DateTime<Utc>, kind: CallEventKind, detail: &'static str) {
        self.events.push((at, kind, detail));
        if matches!(kind, CallEventKind::Announcement | CallEventKind::Warning) {
            self.write_events();
        }
    }

    /// Writes the timeline events noted and not yet written (before the close: an event
    /// is written only on a live session).
    fn write_events(&mut self) {
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            self.submit(self.db.call_events(events));
        }
    }

    /// A recording start came back (begun or not): a held end goes on.
    fn recording_settled(&mut self) {
        self.recording_starting = false;
        if let Some(summary) = self.ending.take() {
            self.end(summary);
        }
    }

    /// Queues session work (the `session::runner` module doc).
    fn submit(&mut self, job: impl std::future::Future<Output = SessionDone> + Send + 'static) {
        self.runner.submit(async move { Done::Session(job.await) });
    }

    /// Asks the database about an ID + PIN pair (and counts it); the verdict comes back
    /// as [`Done::Pin`].
    fn check_pin(&mut self, calling_id: String, pin: crate::media::dtmf::Digits) {
        let line = self.handset.source.ip().to_string();
        let (store, facility, handset) = (
            self.sb.store.clone(),
            self.facility_id.clone(),
            self.handset_id.clone(),
        );
        let (lockout, wall) = (self.sb.lockout, self.sb.wall());
        self.runner.submit(async move {
            let entry = PinEntry {
                facility_id: &facility,
                handset_id: Some(&handset),
                line: &line,
                calling_id: &calling_id,
                pin: pin.as_str(),
            };
            // A valid entry names the paying account (read with the inmate).
            let checked = check_pin(&store, entry, &lockout, wall).await.map(|c| {
                let account = c.account_id.clone();
                (c, account)
            });
            Done::Pin(checked)
        });
    }

    /// The ID + PIN verdict: counted for `/metrics`, then told to the machine.
    fn pin_checked(
        &mut self,
        now: Instant,
        checked: Result<(PinCheck, Option<String>), StoreError>,
    ) {
        let (c, account) = match checked {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "ID + PIN check failed");
                return self.call.fail(now);
            }
        };
        let stats = &self.sb.stats;
        stats.pin_attempt(match c.verdict {
            PinVerdict::Valid { .. } => PinOutcome::Valid,
            PinVerdict::Wrong => PinOutcome::Wrong,
            PinVerdict::Locked => PinOutcome::PhoneLocked,
            PinVerdict::AccountLocked => PinOutcome::AccountLocked,
        });
        c.locked.iter().for_each(|s| stats.locked(*s));
        if c.alert.is_some() {
            stats.alert();
        }
        if account.is_some() {
            self.account_id = account;
        }
        // The outcome on the call's timeline (never the digits).
        let outcome = match c.verdict {
            PinVerdict::Valid { .. } => "valid",
            PinVerdict::Wrong => "wrong",
            PinVerdict::Locked => "locked",
            PinVerdict::AccountLocked => "account_locked",
        };
        let at = self.wall_of(now);
        self.note_event(at, CallEventKind::Pin, outcome);
        self.call.pin_checked(now, c.verdict)
    }

    async fn place_trunk_call(&mut self, number: &str) -> Result<(), u16> {
        let addr = self.media.allocate(Side::B).map_err(|e| {
            warn!(error = %e, "no media ports for the trunk leg");
            503u16
        })?;
        let local = LocalMedia::new(addr, rand::random::<u32>().into());
        let offer = sdp::offer(&local, Some(&self.handset.media));
        let placing = Placing {
            number,
            trunk: self.sb.config.sip.trunk,
            from_user: &self.facility_id,
            advertised_ip: &self.sb.config.rtp.advertised_ip,
            sent_by: &self.sb.sent_by,
            allow: ALLOW,
        };
        let mut leg = TrunkLeg::new(&placing, offer).map_err(|_| 500u16)?;
        let (call_id, branch) = (leg.call_id().to_string(), leg.branch().to_string());
        self.sb.routes.add_call_id(&call_id, &self.input);
        self.sb.routes.add_branch(&branch, &self.input);
        self.call_ids.push(call_id.clone());
        self.branches.push(branch);
        let key = self
            .sb
            .sip
            .send_request(leg.invite().clone(), placing.trunk, Transport::Udp)
            .await
            .map_err(|e| {
                warn!(error = %e, "trunk INVITE not sent");
                503u16
            })?;
        info!(number = %redacted(number), trunk_call_id = %call_id, "trunk INVITE sent");
        leg.sent(key);
        self.trunk = Some(leg);
        Ok(())
    }

    async fn cancel_trunk(&mut self) {
        if let Some(t) = self.trunk.as_mut() {
            t.cancel();
        }
        self.flush_trunk().await;
    }

    /// Sends what the trunk leg queued (ACK, CANCEL, BYE), to the trunk.
    async fn flush_trunk(&mut self) {
        let trunk = self.sb.config.sip.trunk;
        while let Some(req) = self.trunk.as_mut().and_then(TrunkLeg::poll_transmit) {
            let method = req.method.clone();
            if let Err(e) = self.sb.sip.send_request(req, trunk, Transport::Udp).await {
                warn!(error = %e, ?method, "request to the trunk not sent");
            }
        }
    }

    async fn hangup(&mut self, leg: Leg) {
        match leg {
            Leg::Handset => {
                let bye = self.handset.dialog.request(Method::Bye);
                let h = &self.handset;
                let hop = h.dialog.next_hop().cloned();
                let (dest, transport) = next_hop(hop, h.source, h.transport).await;
                if let Err(e) = self.sb.sip.send_request(bye, dest, transport).await {
                    warn!(error = %e, "BYE to the handset not sent");
                }
            }
            Leg::Trunk => {
                if let Some(t) = self.trunk.as_mut() {
                    t.hang_up();
                }
                self.flush_trunk().await;
            }
        }
    }

    fn debit(&mut self, increment: u32, amount: crate::money::Money) {
        let Some(account_id) = self.account_id.clone() else {
            let now = self.now();
            return self.call.fail(now);
        };
        self.submit(self.db.debit(account_id, increment, amount));
    }

    /// The ledger's answer to an increment's debit.
    fn debited(
        &mut self,
        now: Instant,
        increment: u32,
        amount: crate::money::Money,
        outcome: Result<DebitOutcome, LedgerError>,
    ) {
        match outcome {
            Ok(
                DebitOutcome::Committed { balance_after, .. }
                | DebitOutcome::AlreadyCommitted { balance_after, .. },
            ) => {
                info!(increment, %amount, balance = %balance_after, "increment debited");
                self.call.debit_succeeded(now, increment, balance_after)
            }
            Ok(DebitOutcome::Refused { balance }) => {
                info!(increment, %amount, %balance, "increment refused: funds");
                self.call.debit_refused(now, increment)
            }
            Err(LedgerError::AccountClosed { .. }) => {
                // Only a release closes an account: the release was asked of a node that
                // does not carry this call (or raced its end). Nothing was charged.
                info!(
                    increment,
                    "increment refused: the account is closed (inmate released)"
                );
                self.call.inmate_released(now)
            }
            Err(e) => {
                // Nothing was charged; the call ends rather than run unpaid.
                warn!(error = %e, increment, "debit failed");
                self.call.fail(now)
            }
        }
    }

    /// The CDR's end, in wall-clock terms.
    fn closure(&self, s: &CallSummary, recorded: bool) -> Closure {
        Closure {
            reason: s.reason,
            inmate_id: s.inmate_id.clone(),
            number_e164: s.number.clone(),
            privileged: s.privileged,
            recorded,
            answer_at: s.answered_at.map(|i| self.wall_of(i)),
            accepted_at: s.accepted_at.map(|i| self.wall_of(i)),
            end_at: self.wall_of(s.ended_at),
            media_end_at: s.media_ended_at.map(|i| self.wall_of(i)),
            counted_increments: s.increments,
            charged: s.charged,
            paused: None,
        }
    }

    /// `at` (the injected clock) on the media workers' real clock, which stamps the
    /// packets a recording is laid out by.
    fn on_media_clock(&self, at: Instant) -> Instant {
        Instant::now() - self.now().saturating_duration_since(at) // clock-ok
    }

    /// Starts capturing: the runner opens the file and registers its row, then the tap is
    /// attached ([`Self::recording_started`]). A call whose recording cannot be started
    /// goes on unrecorded (its CDR says so); the failure is logged and what was begun is
    /// undone (no file without a row).
    fn start_recording(&mut self, at: Instant) {
        let started_at = self.wall_of(at);
        let law = self.handset.media.codec.name.law();
        let start = self.on_media_clock(at);
        let job = self.db.start_recording(
            self.sb.recorder.clone(),
            law,
            started_at,
            start,
            self.sb.config.node.id.clone(),
        );
        self.recording_starting = true;
        self.submit(job);
    }

    /// The recording's file and row exist: tap the call. A tap that cannot be attached
    /// (the media worker is gone, and the call with it) leaves the recording to be closed
    /// with the call, silent, and says so.
    fn recording_started(&mut self, r: StartedRecording) {
        if self.call.is_ended() {
            // The call ended while the recording was being started: it closes with the
            // call's end, held for it ([`Self::end`]).
            info!(recording = %r.id, "recording started as the call ended");
        } else if let Err(e) = self.media.add_tap(r.tap.clone()) {
            tracing::error!(recording = %r.id, error = %e, "cannot tap the call for recording");
        } else {
            info!(recording = %r.id, "recording");
        }
        self.recording = Some(r);
    }

    /// Detaches the recorder and has it write the file to `ended_at`.
    fn close_recording(&mut self, ended_at: Instant) -> Option<FinishingRecording> {
        let r = self.recording.take()?;
        self.media.remove_tap(r.capture.tap_key());
        let end = self.on_media_clock(ended_at);
        Some(FinishingRecording {
            closing: self.sb.recorder.close(r.capture, end),
            id: r.id,
            started_at: r.started_at,
        })
    }

    // ---- SIP input ----------------------------------------------------------------------

    /// `answered`: the switchboard already answered this request.
    async fn on_sip(&mut self, ev: Event, answered: bool) {
        let now = self.now();
        match ev {
            Event::Request { key, request, .. } => self.on_request(key, request, answered).await,
            Event::Ack { .. } => {}
            Event::Cancel { .. } => {
                // The handset INVITE was answered at once; a late CANCEL has no effect
                // (RFC 3261 §9.2). The transport already answered it 200.
            }
            Event::Response { key, response } => self.on_response(key, response).await,
            Event::Timeout { key } => {
                let event = self.trunk.as_mut().and_then(|t| t.on_timeout(&key));
                self.trunk_event(now, event);
            }
            Event::AckTimeout { key } => {
                if key == self.handset.invite_key {
                    warn!("handset never ACKed our 200");
                    self.call.fail(now);
                }
            }
        }
    }

    async fn on_request(&mut self, key: TxKey, req: Request, answered: bool) {
        let now = self.now();
        let call_id = req.headers.call_id().unwrap_or_default();
        let leg = if call_id == self.handset.dialog.call_id {
            Leg::Handset
        } else {
            Leg::Trunk
        };
        let ok = |r: &Request| Response::for_request(r, 200, "OK");
        match req.method {
            Method::Bye => {
                if !answered {
                    self.sb.respond(&key, ok(&req)).await;
                }
                if leg == Leg::Trunk {
                    if let Some(t) = self.trunk.as_mut() {
                        t.bye_received();
                    }
                }
                info!(?leg, "BYE received");
                self.call.hangup_from(now, leg);
            }
            Method::Info => {
                let ctype = req
                    .headers
                    .get("Content-Type")
                    .unwrap_or_default()
                    .to_string();
                let body = String::from_utf8_lossy(&req.body);
                match parse_sip_info(&ctype, &body) {
                    Ok(d) => {
                        self.sb.respond(&key, ok(&req)).await;
                        log_digit(&self.call, leg, d.digit);
                        self.call.digit(now, leg, d.digit);
                    }
                    Err(e) => {
                        let status = if ctype.is_empty() { 400 } else { 415 };
                        let r = Response::for_request(&req, status, &format!("Bad INFO ({e})"));
                        self.sb.respond(&key, r).await;
                    }
                }
            }
            Method::Invite if req.headers.to().is_ok_and(|t| t.tag().is_none()) => {
                // A second initial INVITE with this call's Call-ID: a loop or a merge.
                let r = Response::for_request(&req, 482, "Loop Detected").with_to_tag(&new_tag());
                self.sb.respond(&key, r).await;
            }
            Method::Invite => {
                // re-INVITE: keep the media as agreed, answer with our SDP; but note a
                // hold (the peer will send nothing) so the media timeout spares it.
                self.note_reoffer(leg, &req, now);
                let body = match leg {
                    Leg::Handset => self.handset.answer.clone(),
                    Leg::Trunk => self
                        .trunk
                        .as_ref()
                        .map(|t| t.offer().to_string().into_bytes())
                        .unwrap_or_default(),
                };
                let mut resp = ok(&req).with_body("application/sdp", body);
                let contact = match leg {
                    Leg::Handset if self.handset.transport.is_reliable() => {
                        format!("<sip:sallyport@{};transport=tcp>", self.sb.sent_by_tcp)
                    }
                    _ => format!("<sip:sallyport@{}>", self.sb.sent_by),
                };
                resp.headers.push("Contact", contact);
                self.sb.respond(&key, resp).await;
            }
            Method::Options => self.sb.respond(&key, ok(&req)).await,
            _ => {
                let mut r = Response::for_request(&req, 405, "Method Not Allowed");
                r.headers.push("Allow", ALLOW);
                self.sb.respond(&key, r).await;
            }
        }
    }

    async fn on_response(&mut self, key: TxKey, resp: Response) {
        let now = self.now();
        let live = !self.call.is_ended();
        let event = self
            .trunk
            .as_mut()
            .and_then(|t| t.on_response(&key, &resp, live));
        self.flush_trunk().await;
        self.trunk_event(now, event);
    }

    /// Tells the call what its trunk leg decided.
    fn trunk_event(&mut self, now: Instant, event: Option<TrunkEvent>) {
        match event {
            None => {}
            Some(TrunkEvent::Ringing) => self.call.trunk_ringing(now),
            Some(TrunkEvent::Failed(f)) => self.call.trunk_failed(now, f),
            Some(TrunkEvent::Answered(m)) => {
                self.media.set_leg(Side::B, m, LatchPolicy::Exact);
                self.call.trunk_answered(now);
                let at = self.wall_of(now);
                self.submit(self.db.progress(Some(at), None));
            }
        }
    }
}

/// When a leg was last heard, on the call's clock at `now`, from how long the media
/// engine has heard nothing from it (`silence`, on the media clock); a leg whose SDP says
/// its peer sends nothing (`recvonly`, `inactive`) counts as heard now.
fn last_heard(
    now: Instant,
    negotiated: Option<&NegotiatedMedia>,
    silence: Option<Duration>,
) -> Option<Instant> {
    if negotiated.is_some_and(|m| !m.may_receive()) {
        return Some(now);
    }
    now.checked_sub(silence?)
}

/// Logs a key press; while the inmate keys the ID or PIN, without the key.
fn log_digit(call: &Call, leg: Leg, digit: char) {
    if leg == Leg::Handset && call.collecting_credentials() {
        debug!(?leg, "key pressed (ID or PIN: not logged)");
    } else {
        debug!(?leg, %digit, "key pressed");
    }
}

/// Where a request of the handset's dialog goes, and how. With a route set (the call came
/// through a proxy that record-routes), to the first route's address `hop`: the proxy,
/// which relays it to the handset (RFC 3261 §12.2.1.1). Without one, back where the
/// handset's INVITE came from (`source`, on the same socket or connection). A first route
/// whose host does not resolve falls back to the latter, with a warning.
async fn next_hop(
    hop: Option<SipUri>,
    source: SocketAddr,
    transport: Transport,
) -> (SocketAddr, Transport) {
    let Some(hop) = hop else {
        return (source, transport);
    };
    let port = hop.port.unwrap_or(match hop.scheme {
        Scheme::Sip => 5060,
        Scheme::Sips => 5061,
    });
    let addr = match &hop.host {
        Host::V4(a) => Some(SocketAddr::new((*a).into(), port)),
        Host::V6(a) => Some(SocketAddr::new((*a).into(), port)),
        Host::Domain(d) => tokio::net::lookup_host((d.as_str(), port))
            .await
            .ok()
            .and_then(|mut found| found.next()),
    };
    match addr {
        Some(a) if a == source => (a, transport),
        Some(a)
            if hop
                .transport()
                .is_some_and(|t| t.eq_ignore_ascii_case("tcp")) =>
        {
            (a, Transport::Tcp(None))
        }
        Some(a) => (a, Transport::Udp),
        None => {
            warn!(route = %hop, "the first route does not resolve: sent to the handset's source");
            (source, transport)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leg_is_heard_when_it_last_sent_or_always_if_its_sdp_sends_nothing() {
        use crate::media::sdp::{CodecName, Direction};
        let now = crate::clock::epoch() + Duration::from_secs(100);
        let sendrecv = NegotiatedMedia::plain("10.0.0.5:4000".parse().unwrap(), CodecName::Pcmu);
        let silent = Some(Duration::from_secs(7));
        let seven_ago = now - Duration::from_secs(7);
        assert_eq!(last_heard(now, Some(&sendrecv), silent), Some(seven_ago));
        assert_eq!(last_heard(now, None, silent), Some(seven_ago));
        assert_eq!(last_heard(now, Some(&sendrecv), None), None, "never sent");
        // We only send to it (it answered recvonly) or nobody sends: nothing to miss.
        for direction in [Direction::SendOnly, Direction::Inactive] {
            let m = NegotiatedMedia {
                direction,
                ..sendrecv
            };
            assert_eq!(last_heard(now, Some(&m), None), Some(now), "{direction:?}");
        }
        let on_hold = NegotiatedMedia {
            direction: Direction::RecvOnly,
            ..sendrecv
        };
        assert_eq!(last_heard(now, Some(&on_hold), silent), Some(seven_ago));
    }
}
