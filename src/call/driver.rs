//! The thin tokio layer that carries inmate calls: SIP events in, [`Call`] decisions out.
//!
//! # Shape
//!
//! - [`Switchboard::run`] reads the SIP transport's [`Event`]s. A new INVITE (no To tag,
//!   unknown Call-ID) starts a call task; anything else is routed to the task that owns
//!   its Call-ID (or, for a transaction timeout, its branch). Requests for no known dialog
//!   get 481; OPTIONS pings get the node's state (200, or 503 while it drains or cannot
//!   reach the database: [`crate::cluster::health`]), and so does a new INVITE then.
//! - One task per call (`task::CallTask`, in `call/task.rs`) owns everything of that call: the sans-IO [`Call`]
//!   machine, the two [`Dialog`]s, the call's media (`CallMedia`: sockets and relay on a
//!   media worker) and its session id. It selects over its SIP input, its media events
//!   (digits, prompts done), its control input (terminate, shutdown) and the machine's next
//!   timeout, feeds each to the machine with `now`, and carries out the `CallAction`s
//!   the machine returns: SIP requests and responses and media commands at once, and
//!   database work — the ID + PIN and destination checks, debits, balance reads, the CDR's
//!   writes, the recording's rows — through the session's `Runner`
//!   (`session::runner`), which does it one item at a time beside the loop. The loop
//!   never awaits the database: the runner's finished items are one more of its inputs
//!   (`task::Done`), so a stalled database delays the call's money, never its signalling,
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
//! - The trunk leg is its own sans-IO core (`call::trunk`, whose module doc has its states).
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
//!   of each leg's last RTP packet (`CallMedia::rtp_silence`) and reports it
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
use super::live::LiveCalls;
use super::stats::{CallStats, Refusal};
use super::task::{CallTask, HandsetLeg};
use super::{Call, CallTimers};
use crate::config::Config;
use crate::media::engine::MediaEngine;
use crate::media::relay::{LatchPolicy, Side};
use crate::media::sdp::{self, LocalMedia, SessionDescription};
use crate::recording::Recorder;
use crate::session::cdr::{self, NewSession};
use crate::session::runner::SessionDb;
use crate::session::Service;
use crate::sip::auth::DigestAuth;
use crate::sip::dialog::Dialog;
use crate::sip::message::{new_tag, Method, Request, Response};
use crate::sip::transport::{Event, SipHandle, Transport, TxKey};
use crate::sip::uri::Uri;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

/// Methods the gateway accepts, for `Allow` (the SIP layer refuses the others, §8.2.1).
pub(super) const ALLOW: &str = crate::sip::uas::ALLOW;
/// Nonce lifetime of handset digest challenges.
const NONCE_LIFETIME_SECS: u64 = 300;

/// Input routed to a call task.
#[derive(Debug)]
pub(super) enum CallInput {
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
pub(super) struct RouteTable(Arc<Mutex<Routes>>);

impl RouteTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn add_call_id(&self, id: &str, tx: &mpsc::UnboundedSender<CallInput>) {
        self.lock().by_call_id.insert(id.to_string(), tx.clone());
    }
    pub(super) fn add_branch(&self, branch: &str, tx: &mpsc::UnboundedSender<CallInput>) {
        self.lock().by_branch.insert(branch.to_string(), tx.clone());
    }
    pub(super) fn remove(&self, call_ids: &[String], branches: &[String]) {
        let mut r = self.lock();
        for c in call_ids {
            r.by_call_id.remove(c);
        }
        for b in branches {
            r.by_branch.remove(b);
        }
    }
    pub(super) fn by_call_id(&self, id: &str) -> Option<mpsc::UnboundedSender<CallInput>> {
        self.lock().by_call_id.get(id).cloned()
    }
    pub(super) fn by_branch(&self, branch: &str) -> Option<mpsc::UnboundedSender<CallInput>> {
        self.lock().by_branch.get(branch).cloned()
    }
}

/// What every call task needs.
pub struct Switchboard {
    pub(super) store: Store,
    pub(super) config: Arc<Config>,
    pub(super) sip: SipHandle,
    pub(super) media: MediaEngine,
    pub(super) recorder: Recorder,
    pub(super) auth: DigestAuth,
    pub(super) live: LiveCalls,
    pub(super) routes: RouteTable,
    /// host:port of our Via and Contact (SIP over UDP: trunks, and handsets on UDP).
    pub(super) sent_by: String,
    /// The same for a handset that reached us over TCP: our TCP listening port, which
    /// may differ from the UDP one (`sip.tcp_listen`).
    pub(super) sent_by_tcp: String,
    pub(super) timers: CallTimers,
    /// The PIN lockout's thresholds and times (`[security]`).
    pub(super) lockout: crate::policy::lockout::PinLockout,
    /// Refusals, ID + PIN attempts, locks and alerts, for `/metrics`.
    pub(super) stats: Arc<CallStats>,
    /// Whether this node takes new calls (draining, database down): what OPTIONS
    /// answers and what a new INVITE finds ([`crate::cluster::health`]).
    pub(super) health: crate::cluster::health::NodeHealth,
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
        let sent_by_tcp = format!(
            "{}:{}",
            config.rtp.advertised_ip,
            sip.local_tcp_addr().port()
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
            sent_by_tcp,
            timers,
            stats: Arc::default(),
            health: Default::default(),
        })
    }

    /// This node's state as OPTIONS and new INVITEs see it; the heartbeat and the drain
    /// set it ([`crate::cluster::health`]).
    pub fn health(&self) -> crate::cluster::health::NodeHealth {
        self.health.clone()
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
                    (Method::Invite, None) if !self.health.state().takes_calls() => {
                        self.refuse_new_call(key, request, *source).await;
                    }
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
                        let (status, phrase) = self.health.state().sip_status();
                        let mut resp =
                            Response::for_request(request, status, phrase).with_to_tag(&new_tag());
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

    /// A new INVITE while this node takes no calls (draining, database down): 503 with
    /// `Retry-After`, so a proxy tries another node; no session is opened.
    async fn refuse_new_call(&self, key: &TxKey, request: &Request, source: SocketAddr) {
        let state = self.health.state();
        let (status, phrase) = state.sip_status();
        info!(%source, state = state.as_str(), "new INVITE refused: this node takes no calls");
        let mut resp = Response::for_request(request, status, phrase).with_to_tag(&new_tag());
        let retry = crate::cluster::health::RETRY_AFTER_SECS.to_string();
        resp.headers.push("Retry-After", &retry);
        self.respond(key, resp).await;
    }

    /// Answers a server transaction without waiting for the driver to take the answer
    /// (a failure is logged there, which is all a call would do with it).
    pub(super) async fn respond(&self, key: &TxKey, resp: Response) {
        self.sip.post_response(key.clone(), resp).await;
    }

    /// Our host:port as a peer on `transport` reaches us.
    pub(super) fn sent_by_for(&self, transport: Transport) -> &str {
        match transport.is_reliable() {
            true => &self.sent_by_tcp,
            false => &self.sent_by,
        }
    }

    pub(super) fn now(&self) -> Instant {
        self.store.clock().now()
    }

    pub(super) fn wall(&self) -> DateTime<Utc> {
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
        let address = super::admission::handset_address(
            &invite,
            source.ip(),
            self.config.sip.trusted_proxy_list(),
        );
        let admission = admit(&self.store, &self.auth, &invite, address, now_secs).await;
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
        let dialog = match Dialog::uas(
            &invite,
            &tag,
            self.sent_by_for(transport),
            transport.is_reliable(),
        ) {
            Ok(d) => d,
            Err(e) => {
                let phrase = format!("Bad Request ({e})");
                let r = refuse(Refusal::BadRequest, 400, &phrase, &e.to_string());
                return self.respond(&key, r).await;
            }
        };
        let session_id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("session", session_id.as_str());
        // One session per INVITE in the cluster: a proxy may have failed this INVITE over
        // to another node while this one had not read it yet (docs/operator-guide.md,
        // "Telling the load balancer").
        let invite_key = cdr::InviteKey {
            call_id: &dialog.call_id,
            from_tag: dialog.remote_tag.as_deref().unwrap_or_default(),
            cseq: invite.headers.cseq().map(|c| c.seq).unwrap_or_default(),
        };
        let opened = cdr::open_handset_call(
            self.store.db(),
            &NewSession {
                id: &session_id,
                facility_id: &facility_id,
                handset_id: Some(&handset_id),
                dialed: &dialed,
                node_id: &self.config.node.id,
                sip_call_id: Some(&dialog.call_id),
            },
            &invite_key,
            self.wall(),
        )
        .await;
        match opened {
            Ok(cdr::Opened::Opened) => {}
            Ok(cdr::Opened::TakenBy {
                node_id,
                session_id,
            }) => {
                let detail = format!("node {node_id} took this INVITE (session {session_id})");
                let r = refuse(Refusal::Merged, 482, "Loop Detected", &detail);
                return self.respond(&key, r).await;
            }
            Err(e) => {
                let detail = format!("cannot open the session: {e}");
                let r = refuse(Refusal::Internal, 500, "Server Internal Error", &detail);
                return self.respond(&key, r).await;
            }
        }
        info!(dialed = %redacted(&dialed), facility = %facility_id, handset = %handset_id, "call started");
        let control = self.live.register(&session_id);
        let t0 = self.now();
        let handset = HandsetLeg {
            invite_key: key,
            invite,
            source,
            transport,
            dialog,
            answer: answer.to_string().into_bytes(),
            media: handset_media,
        };
        let call = Call::new(t0, &dialed, self.timers);
        let db = SessionDb::new(
            self.store.clone(),
            &session_id,
            &facility_id,
            Service::Audio,
        );
        let ids = (session_id.clone(), facility_id, handset_id);
        let mut task = CallTask::new(
            self.clone(),
            input,
            call,
            ids,
            (t0, self.wall()),
            media,
            handset,
            db,
        );
        task.run(rx, media_rx, control).await;
        self.live.remove(&session_id);
        let (call_ids, branches) = task.routes();
        self.routes.remove(call_ids, branches);
    }
}

/// A phone number for the logs: every digit but the last two masked (`+1********01`).
/// Logs never carry numbers in clear; the CDR (`dialed`, `number`) is where staff of the
/// facility see them.
pub(super) fn redacted(number: &str) -> String {
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
pub(super) fn parse_offer(req: &Request) -> Result<SessionDescription, (u16, &'static str)> {
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
    fn nodes_configured_alike_share_the_nonce_secret() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(nonce_secret(&a), nonce_secret(&b));
        b.security.pin_pepper = "another-pepper-0123456789".into();
        assert_ne!(nonce_secret(&a), nonce_secret(&b));
        assert_ne!(nonce_secret(&a), a.security.pin_pepper.as_bytes());
    }
}
