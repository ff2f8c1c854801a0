//! The sans-IO transaction table: bytes and `now` in, transmits and events out.
//!
//! Methods follow the quinn-proto order: `handle_*` (input from the network
//! and the clock), commands from the TU (`send_request`, `respond`…), and
//! `poll_*` (output). The driver drains `poll_transmit` and `poll_event`
//! after every input and sleeps until `poll_timeout`.

use super::dialogs::LiveDialogs;
use super::flood::{FloodConfig, FloodControl};
use super::via::{response_destination, stamp_received};
use super::{ConnId, Event, Transmit, Transport, TransportError, TransportStats, TxKey};
use crate::sip::message::{
    new_tag, parse_datagram, response_to_malformed, Method, ParseError, Request, Response,
    SipMessage,
};
use crate::sip::transaction::{
    ClientTransaction, ServerState, ServerTransaction, TimerConfig, TxAction,
};
use crate::sip::uas::Capabilities;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, debug_span, Span};

/// Most server transactions held at once: a bound whatever passes flood control (at the
/// default 500 requests a second, transactions living up to 32 s need 16,000).
pub(super) const MAX_SERVERS: usize = 65_536;

/// Settings of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointConfig {
    /// T1, T2, T4 for every transaction (short in tests).
    pub timers: TimerConfig,
    pub flood: FloodConfig,
    /// What the TU serves: new requests it cannot serve are refused here
    /// (RFC 3261 §8.2, [`Capabilities::screen`]).
    pub uas: Capabilities,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            timers: TimerConfig::default(),
            flood: FloodConfig::per_second(500),
            uas: Capabilities::default(),
        }
    }
}

struct ClientEntry {
    tx: ClientTransaction,
    dest: SocketAddr,
    transport: Transport,
    span: Span,
    /// The timer instant queued in the heap for this transaction.
    scheduled: Option<Instant>,
}

struct ServerEntry {
    tx: ServerTransaction,
    source: SocketAddr,
    transport: Transport,
    span: Span,
    scheduled: Option<Instant>,
    /// Call-ID and CSeq number of an INVITE, to match the ACK of its 2xx.
    dialog_ref: Option<(String, u32)>,
}

/// The transaction table (see the module doc of [`super`]).
pub struct Endpoint {
    cfg: EndpointConfig,
    clients: HashMap<TxKey, ClientEntry>,
    servers: HashMap<TxKey, ServerEntry>,
    /// INVITE server transactions by Call-ID and CSeq number.
    invites: HashMap<(String, u32), TxKey>,
    /// Dialogs established through us: their requests are never throttled.
    dialogs: LiveDialogs,
    flood: FloodControl,
    /// Next timer of every transaction; entries whose instant no longer
    /// matches the transaction's `scheduled` are stale and skipped.
    timers: BinaryHeap<Due>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Arc<TransportStats>,
}

impl Endpoint {
    pub fn new(cfg: EndpointConfig, stats: Arc<TransportStats>) -> Endpoint {
        Endpoint {
            cfg,
            clients: HashMap::new(),
            servers: HashMap::new(),
            invites: HashMap::new(),
            dialogs: LiveDialogs::default(),
            flood: FloodControl::new(cfg.flood),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// Live transactions (client, server).
    pub fn transaction_counts(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// Dialogs remembered for flood control (live, or ended and not yet swept).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// True while a request that came on TCP connection `conn` still waits
    /// for its final response.
    pub fn awaiting_final_on(&self, conn: ConnId) -> bool {
        self.servers.values().any(|e| {
            e.transport == Transport::Tcp(Some(conn))
                && matches!(e.tx.state(), ServerState::Trying | ServerState::Proceeding)
        })
    }

    /// True when a live dialog was set up over TCP connection `conn` (the
    /// driver does not close such a connection for idleness).
    pub fn conn_has_dialog(&self, now: Instant, conn: ConnId) -> bool {
        self.dialogs.uses_conn(now, conn)
    }

    // ----- input -------------------------------------------------------

    /// One UDP datagram from `source`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        TransportStats::bump(&self.stats.received);
        match parse_datagram(bytes) {
            Ok(msg) => self.dispatch(now, source, transport, msg),
            Err(ParseError::Empty) => {}
            Err(e) => {
                let resp = response_to_malformed(bytes, &e);
                debug!(%source, error = %e, answered = resp.is_some(), "malformed SIP");
                self.handle_malformed(source, transport, resp);
            }
        }
    }

    /// One message already framed from a stream.
    pub fn handle_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        msg: SipMessage,
    ) {
        TransportStats::bump(&self.stats.received);
        self.dispatch(now, source, transport, msg);
    }

    /// Input that failed to parse: send the 400 built by
    /// `response_to_malformed` (if any) back to `source`, else drop.
    pub fn handle_malformed(
        &mut self,
        source: SocketAddr,
        transport: Transport,
        response: Option<Response>,
    ) {
        match response {
            Some(mut resp) => {
                TransportStats::bump(&self.stats.malformed_400);
                self.send_stateless_response(&mut resp, source, transport);
            }
            None => TransportStats::bump(&self.stats.dropped),
        }
    }

    /// Fires the transaction timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(due) = self.timers.peek().filter(|d| d.at <= now).cloned() {
            self.timers.pop();
            match due.side {
                Side::Client => self.client_timer(now, &due),
                Side::Server => self.server_timer(now, &due),
            }
        }
    }

    /// Runs a client's timers if `due` is its current schedule (else stale).
    fn client_timer(&mut self, now: Instant, due: &Due) {
        let Some(e) = self.clients.get_mut(&due.key) else {
            return;
        };
        if e.scheduled == Some(due.at) {
            e.scheduled = None;
            e.tx.handle_timeout(now);
            self.drain_client(&due.key);
        }
    }

    fn server_timer(&mut self, now: Instant, due: &Due) {
        let Some(e) = self.servers.get_mut(&due.key) else {
            return;
        };
        if e.scheduled == Some(due.at) {
            e.scheduled = None;
            e.tx.handle_timeout(now);
            self.drain_server(&due.key);
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        msg: SipMessage,
    ) {
        match msg {
            SipMessage::Request(req) => self.handle_request(now, source, transport, req),
            SipMessage::Response(resp) => self.handle_response(now, resp),
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        mut req: Request,
    ) {
        stamp_received(&mut req.headers, source);
        let Some(key) = TxKey::of_request(&req) else {
            return self.no_branch(source, transport, req);
        };
        if self.servers.contains_key(&key) {
            return self.matched_request(now, &key, req, source, transport);
        }
        // A bound on the transaction table whatever passes flood control (a dialog's
        // budget, say): past it only a BYE or an ACK gets through.
        if self.servers.len() >= MAX_SERVERS && !matches!(req.method, Method::Bye | Method::Ack) {
            return self.reject_503(&req, source, transport, 1);
        }
        // Flood control spares what belongs to something we already carry: the
        // ACK and CANCEL of our INVITE transactions, and the BYE, INFO and
        // re-INVITE of live dialogs (within each dialog's own budget; a BYE
        // always). Everything else, in-dialog-looking or not, counts.
        match req.method {
            Method::Ack => {
                if self.ack_is_known(now, &req) || self.flood.admit(now, source.ip()).is_ok() {
                    self.ack_for_2xx(req, source, transport);
                } else {
                    TransportStats::bump(&self.stats.dropped);
                }
            }
            Method::Cancel => {
                let invite = TxKey {
                    method: Method::Invite,
                    ..key.clone()
                };
                match self.servers.contains_key(&invite) {
                    true => self.cancel(now, key, req, source, transport),
                    false => match self.flood.admit(now, source.ip()) {
                        Ok(()) => self.cancel(now, key, req, source, transport),
                        Err(secs) => self.reject_503(&req, source, transport, secs),
                    },
                }
            }
            Method::Bye | Method::Info | Method::Invite if self.in_live_dialog(now, &req) => {
                self.new_server(now, key, req, source, transport)
            }
            _ => match self.flood.admit(now, source.ip()) {
                Ok(()) => self.new_server(now, key, req, source, transport),
                Err(secs) => self.reject_503(&req, source, transport, secs),
            },
        }
    }

    /// An incoming request of a live dialog within its budget: its Call-ID, To
    /// tag (ours) and From tag (theirs) all match, and (unless it is the BYE)
    /// the dialog's budget pays for it. The Call-ID lookup comes first, so a
    /// stranger's request costs one hash lookup.
    fn in_live_dialog(&mut self, now: Instant, req: &Request) -> bool {
        let Ok(call_id) = req.headers.call_id() else {
            return false;
        };
        if !self.dialogs.knows_call_id(call_id) {
            return false;
        }
        match incoming_tags(req) {
            Some((local, remote)) => {
                let free = req.method == Method::Bye;
                self.dialogs.admit(now, call_id, &local, &remote, free)
            }
            None => false,
        }
    }

    /// The ACK of an INVITE we still hold, or of a live dialog.
    fn ack_is_known(&mut self, now: Instant, req: &Request) -> bool {
        let invite = dialog_ref(req).is_some_and(|d| self.invites.contains_key(&d));
        invite || self.in_live_dialog(now, req)
    }

    /// An RFC 2543 request (no magic cookie): ACKs go up, the rest get a 400.
    fn no_branch(&mut self, source: SocketAddr, transport: Transport, req: Request) {
        if req.method == Method::Ack {
            return self.events.push_back(Event::Ack {
                request: req,
                source,
                transport,
            });
        }
        TransportStats::bump(&self.stats.malformed_400);
        let mut resp = Response::for_request(&req, 400, "Bad Request (no RFC 3261 branch)")
            .with_to_tag(&new_tag());
        self.send_stateless_response(&mut resp, source, transport);
    }

    /// A retransmission, or the ACK of a non-2xx (or of a 2xx, RFC 6026).
    fn matched_request(
        &mut self,
        now: Instant,
        key: &TxKey,
        req: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let _g = e.span.enter();
        if req.method != Method::Ack {
            let answered = !matches!(e.tx.state(), ServerState::Trying | ServerState::Proceeding);
            TransportStats::bump(if answered {
                &self.stats.retransmitted_answered
            } else {
                &self.stats.retransmitted_unanswered
            });
        }
        e.tx.handle_request(now, &req);
        let accepted = e.tx.state() == ServerState::Accepted;
        if req.method == Method::Ack && accepted {
            e.tx.ack_received();
            self.events.push_back(Event::Ack {
                request: req,
                source,
                transport,
            });
        }
        drop(_g);
        self.drain_server(key);
    }

    /// The ACK of a 2xx: stop the INVITE's 2xx retransmissions; tell the TU.
    fn ack_for_2xx(&mut self, req: Request, source: SocketAddr, transport: Transport) {
        if let Some(dref) = dialog_ref(&req) {
            let invite = self.invites.get(&dref);
            if let Some(e) = invite.and_then(|k| self.servers.get_mut(k)) {
                e.tx.ack_received();
            }
        }
        self.events.push_back(Event::Ack {
            request: req,
            source,
            transport,
        });
    }

    /// A CANCEL: its own transaction, answered here (RFC 3261 §9.2).
    fn cancel(
        &mut self,
        now: Instant,
        key: TxKey,
        req: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        let invite_key = TxKey {
            method: Method::Invite,
            ..key.clone()
        };
        let invite = self.servers.get(&invite_key);
        let pending = invite.is_some_and(|e| e.tx.state() == ServerState::Proceeding);
        let tag = invite
            .and_then(|e| e.tx.last_response())
            .and_then(|r| r.headers.to().ok())
            .and_then(|to| to.tag().map(str::to_owned))
            .unwrap_or_else(new_tag);
        let resp = match invite {
            Some(_) => Response::for_request(&req, 200, "OK"),
            None => Response::for_request(&req, 481, "Call/Transaction Does Not Exist"),
        }
        .with_to_tag(&tag);
        self.insert_server(key.clone(), req.clone(), source, transport);
        if let Some(e) = self.servers.get_mut(&key) {
            e.tx.respond(now, resp);
        }
        self.drain_server(&key);
        if pending {
            self.events.push_back(Event::Cancel {
                invite_key,
                request: req,
                source,
            });
        }
    }

    fn new_server(
        &mut self,
        now: Instant,
        key: TxKey,
        req: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        if req.method == Method::Bye {
            if let (Ok(call_id), Some((local, remote))) =
                (req.headers.call_id(), incoming_tags(&req))
            {
                self.dialogs.ending(now, call_id, &local, &remote);
            }
        }
        if let Some(refusal) = self.cfg.uas.screen(&req) {
            debug!(method = %req.method, status = refusal.status, "request refused (RFC 3261 §8.2)");
            TransportStats::bump(&self.stats.refused_unsupported);
            self.insert_server(key.clone(), req, source, transport);
            if let Some(e) = self.servers.get_mut(&key) {
                e.tx.respond(now, refusal);
            }
            return self.drain_server(&key);
        }
        self.insert_server(key.clone(), req.clone(), source, transport);
        self.drain_server(&key);
        self.events.push_back(Event::Request {
            key,
            request: req,
            source,
            transport,
        });
    }

    fn insert_server(
        &mut self,
        key: TxKey,
        req: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        let span = debug_span!("sip_server_tx", branch = %key.branch, method = %key.method);
        let dref = (req.method == Method::Invite)
            .then(|| dialog_ref(&req))
            .flatten();
        if let Some(d) = &dref {
            self.invites.insert(d.clone(), key.clone());
        }
        let tx = ServerTransaction::new(req, transport.is_reliable(), self.cfg.timers);
        let entry = ServerEntry {
            tx,
            source,
            transport,
            span,
            scheduled: None,
            dialog_ref: dref,
        };
        self.servers.insert(key, entry);
    }

    /// Flood control refused a new request: 503 with Retry-After, no transaction.
    fn reject_503(&mut self, req: &Request, source: SocketAddr, transport: Transport, secs: u32) {
        TransportStats::bump(&self.stats.throttled_503);
        let mut resp = service_unavailable(req, secs);
        self.send_stateless_response(&mut resp, source, transport);
    }

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let key = TxKey::of_response(&resp);
        let Some(e) = key.as_ref().and_then(|k| self.clients.get(k)) else {
            TransportStats::bump(&self.stats.stray_responses);
            debug!(status = resp.status, "stray response dropped");
            return;
        };
        if resp.is_success() && key.as_ref().is_some_and(|k| k.method == Method::Invite) {
            // We are the UAC of this dialog: the From tag is ours.
            let conn = conn_of(e.transport);
            if let (Ok(call_id), Some((remote, local))) =
                (resp.headers.call_id(), incoming_tags_of(&resp.headers))
            {
                self.dialogs
                    .established(now, call_id, &local, &remote, conn);
            }
        }
        let Some(e) = key.as_ref().and_then(|k| self.clients.get_mut(k)) else {
            return;
        };
        let _g = e.span.enter();
        e.tx.handle_response(now, resp);
        drop(_g);
        if let Some(k) = key {
            self.drain_client(&k);
        }
    }

    // ----- commands from the TU ----------------------------------------

    /// Sends a request: a client transaction, except for ACK (straight out).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        dest: SocketAddr,
        transport: Transport,
    ) -> Result<TxKey, TransportError> {
        let key = TxKey::of_request(&request).ok_or(TransportError::NoBranch)?;
        if request.method == Method::Bye {
            // Our BYE: we are either party; the From tag is ours.
            if let (Ok(call_id), Some((remote, local))) =
                (request.headers.call_id(), incoming_tags(&request))
            {
                self.dialogs.ending(now, call_id, &local, &remote);
            }
        }
        if request.method == Method::Ack {
            self.push_transmit(dest, transport, request.to_bytes(), None);
            return Ok(key);
        }
        if self.clients.contains_key(&key) {
            return Err(TransportError::DuplicateTransaction);
        }
        let span = debug_span!("sip_client_tx", branch = %key.branch, method = %key.method);
        let tx = ClientTransaction::new(request, transport.is_reliable(), self.cfg.timers, now);
        let entry = ClientEntry {
            tx,
            dest,
            transport,
            span,
            scheduled: None,
        };
        self.clients.insert(key.clone(), entry);
        self.drain_client(&key);
        Ok(key)
    }

    /// Sends a message outside any transaction (e.g. a proxied response).
    pub fn send_stateless(&mut self, msg: &SipMessage, dest: SocketAddr, transport: Transport) {
        self.push_transmit(dest, transport, msg.to_bytes(), None);
    }

    /// The TU answers the request of server transaction `key`.
    pub fn respond(
        &mut self,
        now: Instant,
        key: &TxKey,
        response: Response,
    ) -> Result<(), TransportError> {
        let e = self
            .servers
            .get_mut(key)
            .ok_or(TransportError::NoTransaction)?;
        if key.method == Method::Invite && response.is_success() {
            // We are the UAS of this dialog: the To tag is ours.
            if let (Ok(call_id), Some((local, remote))) = (
                response.headers.call_id(),
                incoming_tags_of(&response.headers),
            ) {
                self.dialogs
                    .established(now, call_id, &local, &remote, conn_of(e.transport));
            }
        }
        let _g = e.span.enter();
        e.tx.respond(now, response);
        drop(_g);
        self.drain_server(key);
        Ok(())
    }

    /// The TU cannot take a new request: answer it 503 for the TU.
    pub fn reject_overload(&mut self, now: Instant, key: &TxKey) {
        let resp = self
            .servers
            .get(key)
            .map(|e| service_unavailable(e.tx.request(), 1));
        if let Some(resp) = resp {
            TransportStats::bump(&self.stats.throttled_503);
            let _ = self.respond(now, key, resp);
        }
    }

    /// A transmit of transaction `key` could not be sent (§17.1.4, §17.2.4).
    pub fn transport_error(&mut self, key: &TxKey) {
        if let Some(e) = self.clients.get_mut(key) {
            e.tx.transport_error();
            self.drain_client(key);
        } else if let Some(e) = self.servers.get_mut(key) {
            e.tx.transport_error();
            self.drain_server(key);
        }
    }

    // ----- output ------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest armed transaction timer (possibly a stale one, which
    /// costs one spurious wake-up).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|d| d.at)
    }

    // ----- internals ---------------------------------------------------

    fn push_transmit(
        &mut self,
        dest: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
        key: Option<TxKey>,
    ) {
        self.transmits.push_back(Transmit {
            dest,
            transport,
            bytes,
            key,
        });
    }

    /// A response outside a transaction, routed by its top Via.
    fn send_stateless_response(
        &mut self,
        resp: &mut Response,
        source: SocketAddr,
        transport: Transport,
    ) {
        stamp_received(&mut resp.headers, source);
        let dest = resp
            .headers
            .top_via()
            .map(|v| response_destination(&v, source))
            .unwrap_or(source);
        self.push_transmit(dest, transport, resp.to_bytes(), None);
    }

    fn drain_client(&mut self, key: &TxKey) {
        let Some(e) = self.clients.get_mut(key) else {
            return;
        };
        let mut done = false;
        while let Some(action) = e.tx.poll_action() {
            match action {
                TxAction::Transmit(msg) => self.transmits.push_back(Transmit {
                    dest: e.dest,
                    transport: e.transport,
                    bytes: msg.to_bytes(),
                    key: Some(key.clone()),
                }),
                TxAction::Response(response) => self.events.push_back(Event::Response {
                    key: key.clone(),
                    response,
                }),
                TxAction::Timeout => self.events.push_back(Event::Timeout { key: key.clone() }),
                TxAction::AckTimeout => {}
                TxAction::Terminated => done = true,
            }
        }
        if done {
            self.clients.remove(key);
        } else {
            let next = e.tx.poll_timeout();
            if next != e.scheduled {
                e.scheduled = next;
                push_due(&mut self.timers, next, Side::Client, key);
            }
        }
    }

    fn drain_server(&mut self, key: &TxKey) {
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let mut done = false;
        while let Some(action) = e.tx.poll_action() {
            match action {
                TxAction::Transmit(msg) => {
                    let dest = msg
                        .headers()
                        .top_via()
                        .map(|v| response_destination(&v, e.source))
                        .unwrap_or(e.source);
                    self.transmits.push_back(Transmit {
                        dest,
                        transport: e.transport,
                        bytes: msg.to_bytes(),
                        key: Some(key.clone()),
                    });
                }
                TxAction::AckTimeout => self
                    .events
                    .push_back(Event::AckTimeout { key: key.clone() }),
                TxAction::Terminated => done = true,
                TxAction::Response(_) | TxAction::Timeout => {}
            }
        }
        if done {
            self.remove_server(key);
        } else {
            let next = e.tx.poll_timeout();
            if next != e.scheduled {
                e.scheduled = next;
                push_due(&mut self.timers, next, Side::Server, key);
            }
        }
    }

    fn remove_server(&mut self, key: &TxKey) {
        if let Some(e) = self.servers.remove(key) {
            if let Some(d) = e.dialog_ref {
                if self.invites.get(&d) == Some(key) {
                    self.invites.remove(&d);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// A heap entry: the earliest `at` comes out first.
#[derive(Debug, Clone)]
struct Due {
    at: Instant,
    side: Side,
    key: TxKey,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

fn push_due(heap: &mut BinaryHeap<Due>, at: Option<Instant>, side: Side, key: &TxKey) {
    if let Some(at) = at {
        heap.push(Due {
            at,
            side,
            key: key.clone(),
        });
    }
}

/// (To tag, From tag) of a request or response: (local, remote) for a
/// request we receive or a response we send; swapped for our own requests
/// and the responses we receive.
fn incoming_tags_of(headers: &crate::sip::header::Headers) -> Option<(String, String)> {
    let to = headers.to().ok()?;
    let from = headers.from().ok()?;
    Some((to.tag()?.to_owned(), from.tag()?.to_owned()))
}

fn incoming_tags(req: &Request) -> Option<(String, String)> {
    incoming_tags_of(&req.headers)
}

/// The TCP connection of a transport, if it names one.
fn conn_of(t: Transport) -> Option<ConnId> {
    match t {
        Transport::Tcp(c) => c,
        Transport::Udp => None,
    }
}

/// Call-ID and CSeq number: what ties an ACK for a 2xx to its INVITE.
fn dialog_ref(req: &Request) -> Option<(String, u32)> {
    let call_id = req.headers.call_id().ok()?.to_owned();
    let seq = req.headers.cseq().ok()?.seq;
    Some((call_id, seq))
}

/// `503 Service Unavailable` with `Retry-After: secs`.
fn service_unavailable(req: &Request, secs: u32) -> Response {
    let mut resp = Response::for_request(req, 503, "Service Unavailable").with_to_tag(&new_tag());
    resp.headers.push("Retry-After", secs.to_string());
    resp
}
