//! The thin tokio layer that carries inmate calls: SIP events in, [`Call`] decisions out.
//!
//! # Shape
//!
//! - [`Switchboard::run`] reads the SIP transport's [`Event`]s. A new INVITE (no To tag,
//!   unknown Call-ID) starts a call task; anything else is routed to the task that owns
//!   its Call-ID (or, for a transaction timeout, its branch). Requests for no known dialog
//!   get 481; OPTIONS pings get 200.
//! - One task per call ([`CallTask`]) owns everything of that call: the sans-IO [`Call`]
//!   machine, the two [`Dialog`]s, the call's media ([`CallMedia`]: sockets and relay on a
//!   media worker) and its session id. It selects over its SIP input, its media events
//!   (digits, prompts done), its control input (terminate, shutdown) and the machine's next
//!   timeout, feeds each to the machine with `now`, and carries out the [`CallAction`]s
//!   the machine returns: SIP requests and responses and media commands at once, and
//!   database work — the ID + PIN and destination checks, debits, balance reads, the CDR's
//!   writes, the recording's rows — through the session's [`Runner`]
//!   (`session::runner`), which does it one item at a time beside the loop. The loop
//!   never awaits the database: the runner's finished items are one more of its inputs
//!   ([`Done`]), so a stalled database delays the call's money, never its signalling,
//!   control or timers — the charging core's `DebitTimeout` fires (`debit_timeout`) and a
//!   BYE is answered while a debit hangs on a row lock. After the end the task keeps
//!   serving the call's SIP until the runner has closed the CDR, then tells whoever waits
//!   (terminate, shutdown).
//! - Nothing is shared between calls but the routing table (a mutex held for a map
//!   insert or lookup, never across an await) and the database. Balances, one live call
//!   per inmate and PIN lockouts are the database's, so a second node is another
//!   `Switchboard` on the same database behind a SIP load balancer.
//!
//! # Decisions
//!
//! - The handset leg is answered at once (`docs/behaviour.md`: the ID prompt plays on an
//!   answered call), so CANCEL only matters while the handset is being admitted; it gets 487.
//! - The trunk is sent everything for its dialog (ACK, BYE, CANCEL) at the configured trunk
//!   address, whatever its Contact says: a carrier trunk is one fixed peer.
//! - A trunk 2xx that arrives after we gave up (CANCEL crossed the answer, or the call
//!   ended meanwhile) is ACKed and hung up at once; the task lingers after the CDR is
//!   closed until the trunk INVITE has a final answer, so such a 2xx is never orphaned.
//! - INVITEs without SDP (late offer) are refused 488: handsets and trunks that the
//!   gateway serves send an offer.
//! - re-INVITEs are answered with the SDP already agreed (no codec change); the media
//!   keeps flowing to the negotiated addresses. What the offer says of the peer's sending
//!   is kept, though: a hold without media (`inactive`, `recvonly`, port 0) is not a dead
//!   line for the media timeout, and a re-offer counts as a sign of life.
//! - Before every timeout it hands the machine, the task reads the media engine's stamp
//!   of each leg's last RTP packet ([`CallMedia::rtp_silence`]) and reports it
//!   (`Call::rtp_received`), so the media timeout (`call` module doc) ends a bridged call
//!   whose leg went silent; a leg whose SDP says it sends nothing is never silent.
//! - The digest nonce secret is derived from `security.pin_pepper`, so every node of a
//!   cluster with the same configuration verifies every other's challenges.
//! - A handset INVITE refused before the call exists (403 unknown handset, 401, 404, 415,
//!   488 no offer or no common codec, 503 no media ports, 500) is logged with its reason
//!   and counted (`sallyport_sip_invites_refused_total{reason}`, [`super::stats`]); it
//!   writes no CDR, since no session was opened. The ID + PIN entry's line is the
//!   handset's source address.
//! - Key presses are logged (debug) without the key while the ID or PIN is keyed.

use super::admission::{admit, Admission};
use super::checks::{check_destination, check_pin, PinCheck, PinEntry};
use super::live::{Control, LiveCalls};
use super::stats::{CallStats, PinOutcome, Refusal};
use super::{
    Call, CallAction, CallSummary, CallTimers, Destination, EndReason, Leg, PinVerdict,
    TrunkFailure,
};
use crate::config::Config;
use crate::ledger::{DebitOutcome, LedgerError};
use crate::media::dtmf::parse_sip_info;
use crate::media::engine::{CallMedia, MediaEngine, MediaEvent};
use crate::media::relay::{LatchPolicy, Side};
use crate::media::sdp::{self, LocalMedia, NegotiatedMedia, SessionDescription};
use crate::recording::Recorder;
use crate::session::cdr::{self, NewSession};
use crate::session::runner::{
    Closure, FinishingRecording, Runner, SessionDb, SessionDone, StartedRecording,
};
use crate::session::Service;
use crate::sip::auth::DigestAuth;
use crate::sip::dialog::Dialog;
use crate::sip::message::{
    new_branch, new_call_id, new_tag, Method, Request, RequestBuilder, Response,
};
use crate::sip::transport::{Event, SipHandle, Transport, TxKey};
use crate::sip::uri::Uri;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

/// Methods the gateway accepts, for `Allow` (the SIP layer refuses the others, §8.2.1).
const ALLOW: &str = crate::sip::uas::ALLOW;
/// How long a finished call waits for the trunk's final answer to a cancelled INVITE.
const TRUNK_LINGER: Duration = Duration::from_secs(32);
/// Nonce lifetime of handset digest challenges.
const NONCE_LIFETIME_SECS: u64 = 300;

/// Input routed to a call task.
#[derive(Debug)]
enum CallInput {
    Sip(Event),
    /// A BYE the switchboard already answered 200 (so a call task busy with the
    /// database never makes the peer retransmit it).
    AnsweredBye(Event),
}

/// Where SIP events of live calls go: by Call-ID (requests, responses) and by client
/// transaction branch (timeouts).
#[derive(Default)]
struct Routes {
    by_call_id: HashMap<String, mpsc::UnboundedSender<CallInput>>,
    by_branch: HashMap<String, mpsc::UnboundedSender<CallInput>>,
}

#[derive(Clone, Default)]
struct RouteTable(Arc<Mutex<Routes>>);

impl RouteTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn add_call_id(&self, id: &str, tx: &mpsc::UnboundedSender<CallInput>) {
        self.lock().by_call_id.insert(id.to_string(), tx.clone());
    }
    fn add_branch(&self, branch: &str, tx: &mpsc::UnboundedSender<CallInput>) {
        self.lock().by_branch.insert(branch.to_string(), tx.clone());
    }
    fn remove(&self, call_ids: &[String], branches: &[String]) {
        let mut r = self.lock();
        for c in call_ids {
            r.by_call_id.remove(c);
        }
        for b in branches {
            r.by_branch.remove(b);
        }
    }
    fn by_call_id(&self, id: &str) -> Option<mpsc::UnboundedSender<CallInput>> {
        self.lock().by_call_id.get(id).cloned()
    }
    fn by_branch(&self, branch: &str) -> Option<mpsc::UnboundedSender<CallInput>> {
        self.lock().by_branch.get(branch).cloned()
    }
}

/// What every call task needs.
pub struct Switchboard {
    store: Store,
    config: Arc<Config>,
    sip: SipHandle,
    media: MediaEngine,
    recorder: Recorder,
    auth: DigestAuth,
    live: LiveCalls,
    routes: RouteTable,
    /// host:port of our Via and Contact.
    sent_by: String,
    timers: CallTimers,
    /// The PIN lockout's thresholds and times (`[security]`).
    lockout: crate::policy::lockout::PinLockout,
    /// Refusals, ID + PIN attempts, locks and alerts, for `/metrics`.
    stats: Arc<CallStats>,
}

/// The digest nonce secret, the same on every node configured alike.
fn nonce_secret(config: &Config) -> Vec<u8> {
    let pepper = config.security.pin_pepper.as_bytes();
    crate::config::derive_key(pepper, b"sallyport sip digest nonce", &[]).to_vec()
}

impl Switchboard {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        sip: SipHandle,
        media: MediaEngine,
        recorder: Recorder,
        live: LiveCalls,
    ) -> Arc<Switchboard> {
        let auth = DigestAuth::new(
            config.sip.realm.clone(),
            nonce_secret(&config),
            NONCE_LIFETIME_SECS,
        );
        let sent_by = format!(
            "{}:{}",
            config.rtp.advertised_ip,
            sip.local_udp_addr().port()
        );
        let timers = CallTimers {
            accept: Duration::from_secs(u64::from(config.billing.accept_timeout_secs)),
            pin_attempts: config.security.pin_attempts_per_call.max(1),
            media: match config.rtp.media_timeout_secs {
                0 => None,
                secs => Some(Duration::from_secs(u64::from(secs))),
            },
            ..CallTimers::default()
        };
        Arc::new(Switchboard {
            lockout: crate::policy::lockout::PinLockout::from_config(&config.security),
            store,
            config,
            sip,
            media,
            recorder,
            auth,
            live,
            routes: RouteTable::default(),
            sent_by,
            timers,
            stats: Arc::default(),
        })
    }

    /// The call side's counters (shown by `/metrics`).
    pub fn stats(&self) -> Arc<CallStats> {
        self.stats.clone()
    }

    /// Routes SIP events until the transport stops.
    pub async fn run(self: Arc<Self>, mut events: mpsc::Receiver<Event>) {
        while let Some(ev) = events.recv().await {
            self.route(ev).await;
        }
    }

    async fn route(self: &Arc<Self>, ev: Event) {
        match &ev {
            Event::Request {
                key,
                request,
                source,
                transport,
            } => {
                let call_id = request.headers.call_id().unwrap_or_default().to_string();
                if let Some(tx) = self.routes.by_call_id(&call_id) {
                    if request.method == Method::Bye {
                        self.respond(key, Response::for_request(request, 200, "OK"))
                            .await;
                        let _ = tx.send(CallInput::AnsweredBye(ev));
                    } else {
                        let _ = tx.send(CallInput::Sip(ev));
                    }
                    return;
                }
                let to_tag = request
                    .headers
                    .to()
                    .ok()
                    .and_then(|t| t.tag().map(str::to_string));
                match (&request.method, to_tag) {
                    (Method::Invite, None) => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.routes.add_call_id(&call_id, &tx);
                        let sb = self.clone();
                        let input = tx.clone();
                        let (key, request, source, transport) =
                            (key.clone(), request.clone(), *source, *transport);
                        let span = tracing::info_span!("call", sip_call_id = %call_id, session = tracing::field::Empty);
                        tokio::spawn(
                            async move {
                                sb.handset_invite(key, request, source, transport, input, rx)
                                    .await;
                                sb.routes.remove(&[call_id], &[]);
                            }
                            .instrument(span),
                        );
                    }
                    (Method::Options, _) => {
                        let mut resp =
                            Response::for_request(request, 200, "OK").with_to_tag(&new_tag());
                        resp.headers.push("Allow", ALLOW);
                        resp.headers.push("Accept", "application/sdp");
                        self.respond(key, resp).await;
                    }
                    (Method::Ack, _) => {}
                    (Method::Register, _) => {
                        let mut resp = Response::for_request(request, 405, "Method Not Allowed")
                            .with_to_tag(&new_tag());
                        resp.headers.push("Allow", ALLOW);
                        self.respond(key, resp).await;
                    }
                    _ => {
                        let resp =
                            Response::for_request(request, 481, "Call/Transaction Does Not Exist")
                                .with_to_tag(&new_tag());
                        self.respond(key, resp).await;
                    }
                }
            }
            Event::Ack { request, .. } | Event::Cancel { request, .. } => {
                let call_id = request.headers.call_id().unwrap_or_default();
                if let Some(tx) = self.routes.by_call_id(call_id) {
                    let _ = tx.send(CallInput::Sip(ev));
                }
            }
            Event::Response { response, .. } => {
                let call_id = response.headers.call_id().unwrap_or_default();
                if let Some(tx) = self.routes.by_call_id(call_id) {
                    let _ = tx.send(CallInput::Sip(ev));
                }
            }
            Event::Timeout { key } | Event::AckTimeout { key } => {
                if let Some(tx) = self.routes.by_branch(&key.branch) {
                    let _ = tx.send(CallInput::Sip(ev));
                }
            }
        }
    }

    async fn respond(&self, key: &TxKey, resp: Response) {
        if let Err(e) = self.sip.respond(key.clone(), resp).await {
            debug!(error = %e, "response not sent");
        }
    }

    fn now(&self) -> Instant {
        self.store.clock().now()
    }

    fn wall(&self) -> DateTime<Utc> {
        self.store.clock().wall()
    }

    /// A handset INVITE: admit it, anchor its media, open the session, run the call.
    async fn handset_invite(
        self: &Arc<Self>,
        key: TxKey,
        invite: Request,
        source: SocketAddr,
        transport: Transport,
        input: mpsc::UnboundedSender<CallInput>,
        mut rx: mpsc::UnboundedReceiver<CallInput>,
    ) {
        let reject = |status: u16, reason: &str| {
            Response::for_request(&invite, status, reason).with_to_tag(&new_tag())
        };
        // Every refusal before the call exists: logged with its reason and counted (no
        // CDR: no session was opened; see `stats`).
        let refuse = |why: Refusal, status: u16, phrase: &str, detail: &str| {
            self.stats.refused(why);
            // The From user is the peer's text: logged escaped (Debug), so it cannot forge
            // a log line or smuggle terminal escapes.
            let user = from_user(&invite);
            match why {
                Refusal::Challenged => debug!(%source, from_user = ?user, "handset challenged"),
                // Who may call, and our own failures: worth a look.
                Refusal::UnknownHandset | Refusal::AuthFailed | Refusal::Internal => {
                    warn!(%source, from_user = ?user, status, reason = why.as_str(), detail,
                        "handset INVITE refused")
                }
                _ => info!(%source, from_user = ?user, status, reason = why.as_str(), detail,
                    "handset INVITE refused"),
            }
            reject(status, phrase)
        };
        let now_secs = u64::try_from(self.wall().timestamp()).unwrap_or(0);
        let admission = admit(&self.store, &self.auth, &invite, source.ip(), now_secs).await;
        let (facility_id, handset_id) = match admission {
            Ok(Admission::Admitted {
                facility_id,
                handset_id,
            }) => (facility_id, handset_id),
            Ok(Admission::Challenge {
                www_authenticate,
                failed,
            }) => {
                let why = if failed {
                    Refusal::AuthFailed
                } else {
                    Refusal::Challenged
                };
                let mut r = refuse(why, 401, "Unauthorized", "digest authentication");
                r.headers.push("WWW-Authenticate", www_authenticate);
                // The authenticated retry reuses the Call-ID: forget it before answering,
                // so the retry starts a call of its own.
                self.routes.remove(&[invite_call_id(&invite)], &[]);
                return self.respond(&key, r).await;
            }
            Ok(Admission::Refused { status, reason }) => {
                let r = refuse(
                    Refusal::UnknownHandset,
                    status,
                    reason,
                    "not a handset of the trusted network's facility",
                );
                return self.respond(&key, r).await;
            }
            Err(e) => {
                let r = refuse(
                    Refusal::Internal,
                    500,
                    "Server Internal Error",
                    &e.to_string(),
                );
                return self.respond(&key, r).await;
            }
        };
        // A CANCEL that arrived while the handset was being admitted.
        while let Ok(input) = rx.try_recv() {
            if let CallInput::Sip(Event::Cancel { .. }) = input {
                let r = refuse(
                    Refusal::Cancelled,
                    487,
                    "Request Terminated",
                    "CANCEL during admission",
                );
                return self.respond(&key, r).await;
            }
        }
        let dialed = match dialed_number(&invite.uri) {
            Some(d) => d,
            None => {
                let r = refuse(
                    Refusal::NoNumber,
                    404,
                    "Not Found",
                    "no dialable number in the Request-URI",
                );
                return self.respond(&key, r).await;
            }
        };
        let offer = match parse_offer(&invite) {
            Ok(o) => o,
            Err((status, reason)) => {
                let why = match (status, reason) {
                    (488, "Bad SDP") => Refusal::NoCommonCodec,
                    (488, _) => Refusal::NoOffer,
                    (415, _) => Refusal::NotSdp,
                    _ => Refusal::BadRequest,
                };
                let r = refuse(why, status, reason, reason);
                return self.respond(&key, r).await;
            }
        };
        let (mut media, media_rx) = self.media.open_call();
        let local_addr = match media.allocate(Side::A) {
            Ok(a) => a,
            Err(e) => {
                let mut r = refuse(
                    Refusal::NoMediaPorts,
                    503,
                    "Service Unavailable",
                    &e.to_string(),
                );
                r.headers.push("Retry-After", "5");
                return self.respond(&key, r).await;
            }
        };
        let local = LocalMedia::new(local_addr, rand::random::<u32>().into());
        let (answer, handset_media) = match sdp::answer(&offer, &local) {
            Ok(a) => a,
            Err(e) => {
                let why = match e.sip_status() {
                    488 => Refusal::NoCommonCodec,
                    _ => Refusal::BadRequest,
                };
                let r = refuse(why, e.sip_status(), "Not Acceptable Here", &e.to_string());
                return self.respond(&key, r).await;
            }
        };
        media.set_leg(Side::A, handset_media, LatchPolicy::Exact);
        let tag = new_tag();
        let dialog = match Dialog::uas(&invite, &tag, &self.sent_by, transport.is_reliable()) {
            Ok(d) => d,
            Err(e) => {
                let phrase = format!("Bad Request ({e})");
                let r = refuse(Refusal::BadRequest, 400, &phrase, &e.to_string());
                return self.respond(&key, r).await;
            }
        };
        let session_id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("session", session_id.as_str());
        let opened = cdr::open_call(
            self.store.db(),
            &NewSession {
                id: &session_id,
                facility_id: &facility_id,
                handset_id: Some(&handset_id),
                dialed: &dialed,
                node_id: &self.config.node.id,
                sip_call_id: Some(&dialog.call_id),
            },
            self.wall(),
        )
        .await;
        if let Err(e) = opened {
            let detail = format!("cannot open the session: {e}");
            let r = refuse(Refusal::Internal, 500, "Server Internal Error", &detail);
            return self.respond(&key, r).await;
        }
        info!(dialed = %redacted(&dialed), facility = %facility_id, handset = %handset_id, "call started");
        let control = self.live.register(&session_id);
        let t0 = self.now();
        let mut task = CallTask {
            sb: self.clone(),
            input,
            call: Call::new(t0, &dialed, self.timers),
            session_id: session_id.clone(),
            facility_id: facility_id.clone(),
            handset_id,
            t0,
            wall0: self.wall(),
            media,
            handset: HandsetLeg {
                invite_key: key,
                invite,
                source,
                transport,
                dialog,
                answer: answer.to_string().into_bytes(),
                media: handset_media,
            },
            trunk: None,
            account_id: None,
            call_ids: Vec::new(),
            branches: Vec::new(),
            waiters: Vec::new(),
            recording: None,
            recording_starting: false,
            ending: None,
            db: SessionDb::new(
                self.store.clone(),
                &session_id,
                &facility_id,
                Service::Audio,
            ),
            runner: Runner::new(),
        };
        task.run(rx, media_rx, control).await;
        self.live.remove(&session_id);
        self.routes.remove(&task.call_ids, &task.branches);
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

/// A phone number for the logs: every digit but the last two masked (`+1********01`).
/// Logs never carry numbers in clear; the CDR (`dialed`, `number`) is where staff of the
/// facility see them.
fn redacted(number: &str) -> String {
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen + 2 > digits {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// Logs a key press; while the inmate keys the ID or PIN, without the key.
fn log_digit(call: &Call, leg: Leg, digit: char) {
    if leg == Leg::Handset && call.collecting_credentials() {
        debug!(?leg, "key pressed (ID or PIN: not logged)");
    } else {
        debug!(?leg, %digit, "key pressed");
    }
}

/// The user part of the From URI (the handset's name), for logs.
fn from_user(req: &Request) -> String {
    match req.headers.from().ok().map(|f| f.uri) {
        Some(Uri::Sip(u)) => u.user.unwrap_or_default(),
        _ => String::new(),
    }
}

fn invite_call_id(req: &Request) -> String {
    req.headers.call_id().unwrap_or_default().to_string()
}

/// Longest dialed string kept: an E.164 number is at most 15 digits; with an international
/// prefix, `+`, separators or a service code, 32 is generous.
const MAX_DIALED_CHARS: usize = 32;

/// The dialed digits: the user part of a `sip:` Request-URI, or a `tel:` number; `None`
/// when there is none, or it is longer than [`MAX_DIALED_CHARS`] or holds anything but
/// printable ASCII (a `%00` in the user part decodes to a NUL, which no keypad sends and
/// PostgreSQL cannot store in the CDR).
fn dialed_number(uri: &Uri) -> Option<String> {
    let dialed = match uri {
        Uri::Sip(u) => u.user.clone()?,
        Uri::Tel(t) => t.number.clone(),
        Uri::Other(_) => return None,
    };
    let dialable = (1..=MAX_DIALED_CHARS).contains(&dialed.len())
        && dialed.bytes().all(|b| b.is_ascii_graphic());
    dialable.then_some(dialed)
}

/// The SDP offer of an INVITE, or the status to refuse it with.
fn parse_offer(req: &Request) -> Result<SessionDescription, (u16, &'static str)> {
    if req.body.is_empty() {
        return Err((488, "Not Acceptable Here (no SDP offer)"));
    }
    let is_sdp = req
        .headers
        .content_type()
        .ok()
        .flatten()
        .is_some_and(|t| t.mime == "application/sdp");
    if !is_sdp {
        return Err((415, "Unsupported Media Type"));
    }
    let text =
        std::str::from_utf8(&req.body).map_err(|_| (400, "Bad Request (SDP is not UTF-8)"))?;
    sdp::parse(text).map_err(|e| (e.sip_status(), "Bad SDP"))
}

struct HandsetLeg {
    invite_key: TxKey,
    invite: Request,
    source: SocketAddr,
    transport: Transport,
    dialog: Dialog,
    /// Our SDP answer (also the answer to re-INVITEs).
    answer: Vec<u8>,
    media: NegotiatedMedia,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrunkState {
    /// INVITE sent, no final response.
    Calling,
    /// CANCEL sent, no final response yet.
    Cancelling,
    /// 2xx received and ACKed.
    Answered,
    /// Final answer received (failure) or the dialog ended.
    Done,
}

struct TrunkLeg {
    invite: Request,
    key: TxKey,
    offer: SessionDescription,
    state: TrunkState,
    dialog: Option<Dialog>,
    /// Our ACK to its 2xx, re-sent when the 2xx is retransmitted.
    ack: Option<Request>,
    /// What its 2xx settled (whether the called party sends media at all).
    media: Option<NegotiatedMedia>,
}

/// One call's task (see the module doc).
struct CallTask {
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
    fn now(&self) -> Instant {
        self.sb.now()
    }

    fn wall_of(&self, at: Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.t0);
        self.wall0 + chrono::Duration::from_std(since).unwrap_or_default()
    }

    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<CallInput>,
        mut media_rx: mpsc::UnboundedReceiver<MediaEvent>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        loop {
            self.drain().await;
            if self.call.is_ended() {
                break;
            }
            let deadline = self.call.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
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
                // The number, contact and tariff are on the session already
                // (`check_destination` wrote them); the log names no number.
                match &d {
                    Destination::Refused(r) => info!(reason = r.as_str(), "destination refused"),
                    Destination::Authorized(a) => info!(
                        privileged = a.privileged,
                        cost_per_increment = %a.charging.cost_per_increment,
                        "destination authorized"
                    ),
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
                Leg::Trunk => self.trunk.as_ref().and_then(|t| t.media.as_ref()),
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
            Leg::Trunk => self.trunk.as_mut().and_then(|t| t.media.as_mut()),
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
        let pending = |t: &Option<TrunkLeg>| {
            t.as_ref()
                .is_some_and(|t| matches!(t.state, TrunkState::Calling | TrunkState::Cancelling))
        };
        if !pending(&self.trunk) {
            return;
        }
        let until = tokio::time::Instant::from_std(self.now() + TRUNK_LINGER);
        while pending(&self.trunk) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(CallInput::Sip(ev))) => self.on_sip(ev, false).await,
                Ok(Some(CallInput::AnsweredBye(ev))) => self.on_sip(ev, true).await,
                _ => break,
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
                let mut resp =
                    Response::for_request(&h.invite, 200, "OK").with_to_tag(&h.dialog.local_tag);
                let transport = if h.transport.is_reliable() {
                    ";transport=tcp"
                } else {
                    ""
                };
                resp.headers.push(
                    "Contact",
                    format!("<sip:sallyport@{}{transport}>", self.sb.sent_by),
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
            CallAction::Play { leg, prompt } => self.media.play(side(leg), prompt),
            CallAction::StopPlaying { leg } => self.media.stop(side(leg)),
            CallAction::CheckPin { calling_id, pin } => self.check_pin(calling_id, pin),
            CallAction::CheckDestination { inmate_id, dialed } => {
                let (store, session, config) = (
                    self.sb.store.clone(),
                    self.session_id.clone(),
                    self.sb.config.clone(),
                );
                let wall = self.sb.wall();
                self.runner.submit(async move {
                    let d = check_destination(
                        &store,
                        &session,
                        &inmate_id,
                        &dialed,
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
        self.submit(self.db.close(closure, closing));
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
                handset_id: &handset,
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
        self.call.pin_checked(now, c.verdict)
    }

    async fn place_trunk_call(&mut self, number: &str) -> Result<(), u16> {
        let addr = self.media.allocate(Side::B).map_err(|e| {
            warn!(error = %e, "no media ports for the trunk leg");
            503u16
        })?;
        let local = LocalMedia::new(addr, rand::random::<u32>().into());
        let offer = sdp::offer(&local, Some(&self.handset.media));
        let trunk = self.sb.config.sip.trunk;
        let uri = Uri::parse(&format!("sip:{number}@{trunk}")).map_err(|_| 500u16)?;
        let call_id = new_call_id(Some(&self.sb.config.rtp.advertised_ip));
        let branch = new_branch();
        let invite = RequestBuilder::new(Method::Invite, uri)
            .header(
                "Via",
                format!("SIP/2.0/UDP {};branch={branch};rport", self.sb.sent_by),
            )
            .header(
                "From",
                format!(
                    "<sip:{}@{}>;tag={}",
                    self.facility_id,
                    self.sb.config.rtp.advertised_ip,
                    new_tag()
                ),
            )
            .header("To", format!("<sip:{number}@{trunk}>"))
            .call_id(&call_id)
            .cseq(1)
            .header("Contact", format!("<sip:sallyport@{}>", self.sb.sent_by))
            .header("Allow", ALLOW)
            .body("application/sdp", offer.to_string().into_bytes())
            .build();
        let tx = self.input.clone();
        self.sb.routes.add_call_id(&call_id, &tx);
        self.sb.routes.add_branch(&branch, &tx);
        self.call_ids.push(call_id.clone());
        self.branches.push(branch);
        let key = self
            .sb
            .sip
            .send_request(invite.clone(), trunk, Transport::Udp)
            .await
            .map_err(|e| {
                warn!(error = %e, "trunk INVITE not sent");
                503u16
            })?;
        info!(number = %redacted(number), trunk_call_id = %call_id, "trunk INVITE sent");
        self.trunk = Some(TrunkLeg {
            invite,
            key,
            offer,
            state: TrunkState::Calling,
            dialog: None,
            ack: None,
            media: None,
        });
        Ok(())
    }

    async fn cancel_trunk(&mut self) {
        let Some(t) = self.trunk.as_mut() else { return };
        if t.state != TrunkState::Calling {
            return;
        }
        t.state = TrunkState::Cancelling;
        match t.invite.cancel_for() {
            Ok(cancel) => {
                let trunk = self.sb.config.sip.trunk;
                if let Err(e) = self
                    .sb
                    .sip
                    .send_request(cancel, trunk, Transport::Udp)
                    .await
                {
                    warn!(error = %e, "CANCEL not sent");
                }
            }
            Err(e) => warn!(error = %e, "cannot build CANCEL"),
        }
    }

    async fn hangup(&mut self, leg: Leg) {
        match leg {
            Leg::Handset => {
                let bye = self.handset.dialog.request(Method::Bye);
                let (dest, transport) = (self.handset.source, self.handset.transport);
                if let Err(e) = self.sb.sip.send_request(bye, dest, transport).await {
                    warn!(error = %e, "BYE to the handset not sent");
                }
            }
            Leg::Trunk => self.bye_trunk().await,
        }
    }

    async fn bye_trunk(&mut self) {
        let Some(t) = self.trunk.as_mut() else { return };
        let Some(d) = t.dialog.as_mut() else { return };
        t.state = TrunkState::Done;
        let bye = d.request(Method::Bye);
        let trunk = self.sb.config.sip.trunk;
        if let Err(e) = self.sb.sip.send_request(bye, trunk, Transport::Udp).await {
            warn!(error = %e, "BYE to the trunk not sent");
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
                let is_trunk_invite = self
                    .trunk
                    .as_ref()
                    .is_some_and(|t| t.key == key && t.state != TrunkState::Answered);
                if is_trunk_invite {
                    if let Some(t) = self.trunk.as_mut() {
                        t.state = TrunkState::Done;
                    }
                    warn!("trunk INVITE timed out");
                    self.call.trunk_failed(now, TrunkFailure::Timeout);
                }
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
                        t.state = TrunkState::Done;
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
                        .map(|t| t.offer.to_string().into_bytes())
                        .unwrap_or_default(),
                };
                let mut resp = ok(&req).with_body("application/sdp", body);
                resp.headers
                    .push("Contact", format!("<sip:sallyport@{}>", self.sb.sent_by));
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
        let Some(t) = self.trunk.as_mut() else { return };
        if key != t.key {
            return; // a response to our BYE, CANCEL or INFO: nothing to do
        }
        if resp.is_provisional() {
            if matches!(resp.status, 180 | 183) {
                self.call.trunk_ringing(now);
            }
            return;
        }
        if !resp.is_success() {
            t.state = TrunkState::Done;
            info!(status = resp.status, "trunk refused");
            self.call
                .trunk_failed(now, TrunkFailure::Status(resp.status));
            return;
        }
        let trunk_addr = self.sb.config.sip.trunk;
        if let Some(ack) = &t.ack {
            // A retransmitted 2xx: our ACK was lost.
            let _ = self
                .sb
                .sip
                .send_request(ack.clone(), trunk_addr, Transport::Udp)
                .await;
            return;
        }
        let dialog = match Dialog::uac(&t.invite, &resp, &self.sb.sent_by, false) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "unusable trunk 2xx");
                t.state = TrunkState::Done;
                self.call.trunk_failed(now, TrunkFailure::Status(502));
                return;
            }
        };
        let ack = dialog.ack(1);
        t.ack = Some(ack.clone());
        t.dialog = Some(dialog);
        let was = t.state;
        t.state = TrunkState::Answered;
        let _ = self
            .sb
            .sip
            .send_request(ack, trunk_addr, Transport::Udp)
            .await;
        let negotiated = std::str::from_utf8(&resp.body)
            .ok()
            .and_then(|s| sdp::parse(s).ok())
            .and_then(|answer| sdp::negotiated_from_answer(&t.offer, &answer).ok());
        let live = was == TrunkState::Calling && !self.call.is_ended();
        match (negotiated, live) {
            (Some(m), true) => {
                t.media = Some(m);
                self.media.set_leg(Side::B, m, LatchPolicy::Exact);
                info!(codec = ?m.codec.name, "trunk answered");
                self.call.trunk_answered(now);
                let at = self.wall_of(now);
                self.submit(self.db.progress(Some(at), None));
            }
            (None, true) => {
                warn!("trunk 2xx without a usable SDP answer");
                self.bye_trunk().await;
                self.call.trunk_failed(now, TrunkFailure::Status(488));
            }
            (_, false) => {
                info!("trunk answered after we gave up: hanging up");
                self.bye_trunk().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_datagram;
    use crate::sip::message::SipMessage;

    fn invite(content_type: Option<&str>, body: &str) -> Request {
        let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
        let text = format!(
            "INVITE sip:5551230001@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n\
             From: <sip:handset-1@10.0.0.5>;tag=a\r\nTo: <sip:5551230001@gw>\r\nCall-ID: x\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:h@10.0.0.5>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse_datagram(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn the_dialed_number_is_the_request_uri_user_or_tel_number() {
        assert_eq!(
            dialed_number(&Uri::parse("sip:+15551230001@gw;user=phone").unwrap()).as_deref(),
            Some("+15551230001")
        );
        assert_eq!(
            dialed_number(&Uri::parse("tel:+15551230001").unwrap()).as_deref(),
            Some("+15551230001")
        );
        assert_eq!(dialed_number(&Uri::parse("sip:gw.example").unwrap()), None);
        for bad in ["sip:%00123@gw", "sip:12%0A3@gw", "sip:12%203@gw"] {
            let uri = Uri::parse(bad).unwrap();
            assert_eq!(dialed_number(&uri), None, "{bad}");
        }
        let long = format!("sip:{}@gw", "1".repeat(MAX_DIALED_CHARS + 1));
        assert_eq!(dialed_number(&Uri::parse(&long).unwrap()), None);
        let longest = format!("sip:{}@gw", "1".repeat(MAX_DIALED_CHARS));
        assert!(dialed_number(&Uri::parse(&longest).unwrap()).is_some());
    }

    #[test]
    fn numbers_are_masked_in_the_logs() {
        assert_eq!(redacted("+15551230001"), "+*********01");
        assert_eq!(redacted("5551230001"), "********01");
        assert_eq!(redacted("7"), "7");
        assert_eq!(redacted(""), "");
    }

    #[test]
    fn offers_are_required_and_must_be_sdp() {
        assert!(parse_offer(&invite(Some("application/sdp"), SDP)).is_ok());
        assert_eq!(parse_offer(&invite(None, "")).unwrap_err().0, 488);
        assert_eq!(
            parse_offer(&invite(Some("text/plain"), "hello"))
                .unwrap_err()
                .0,
            415
        );
        let bad = parse_offer(&invite(Some("application/sdp"), "v=0\r\nnonsense\r\n"));
        assert!(matches!(bad, Err((400 | 488, _))), "{bad:?}");
    }

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

    #[test]
    fn nodes_configured_alike_share_the_nonce_secret() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(nonce_secret(&a), nonce_secret(&b));
        b.security.pin_pepper = "another-pepper-0123456789".into();
        assert_ne!(nonce_secret(&a), nonce_secret(&b));
        assert_ne!(nonce_secret(&a), a.security.pin_pepper.as_bytes());
    }
}
