//! RFC 3261 §17 transactions as sans-IO state machines, with the RFC 6026 fix for INVITE
//! (the "Accepted" states that absorb 2xx retransmissions and stray ACKs).
//!
//! Four machines share one shape, after quinn and str0m: the driver feeds a message or
//! `now` (`handle_*`), drains [`poll_action`](ClientTransaction::poll_action) and sleeps
//! until [`poll_timeout`](ClientTransaction::poll_timeout). Timers A–M are entries of a
//! named-timer table ([`Timer`], in the crate's one table shape, `crate::timers`); nothing
//! here reads the clock or touches a socket.
//!
//! | machine | states | timers |
//! |---|---|---|
//! | INVITE client | Calling → Proceeding → Completed / Accepted → Terminated | A (retransmit), B (give up), D (absorb final retransmits), M (absorb 2xx) |
//! | non-INVITE client | Trying → Proceeding → Completed → Terminated | E (retransmit), F (give up), K |
//! | INVITE server | Proceeding → Completed / Accepted → Confirmed → Terminated | G (retransmit final), H (wait for ACK), I, L; plus 2xx retransmission until ACK |
//! | non-INVITE server | Trying → Proceeding → Completed → Terminated | J |
//!
//! Over a reliable transport (TCP) nothing is retransmitted and the absorbing timers are
//! zero, as §17 says.
//!
//! The INVITE server also retransmits its 2xx (T1 doubling up to T2) until the TU reports
//! the ACK ([`ServerTransaction::ack_received`]; the ACK to a 2xx is its own transaction,
//! matched by the dialog) or 64·T1 passes, when [`TxAction::AckTimeout`] tells the call
//! flow to hang up (RFC 3261 §13.3.1.4). Many stacks keep that loop in the UAS core; it
//! lives here because the timer and the message already do.
//!
//! Called by: the SIP driver (`transport`), which matches incoming messages to a
//! transaction with [`TxKey::of_request`] / [`TxKey::of_response`] and creates a server
//! transaction for every new request, and the call flow, which creates client
//! transactions for what it sends.

use crate::sip::message::{Method, Request, Response, SipMessage};
use crate::sip::typed::Via;
use crate::timers::{self, TimerSlot};
use std::time::{Duration, Instant};

/// RFC 3261 timer values (Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// The timers of RFC 3261 §17 (and M, L of RFC 6026), plus the 2xx retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
    /// Retransmission of an INVITE server's 2xx until the ACK arrives.
    Retransmit2xx,
}

impl TimerSlot for Timer {
    /// Timers due at once fire earliest first, ties in this order.
    const ALL: &'static [Timer] = &[
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
        Timer::Retransmit2xx,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// A table of armed timers.
type TimerTable = timers::TimerTable<Timer, 13>;

/// `now + d`, or "never" if that overflows.
fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// What a transaction asks of its driver and its transaction user.
#[derive(Debug, Clone, PartialEq)]
pub enum TxAction {
    /// Send this to the transaction's peer.
    Transmit(SipMessage),
    /// A response for the TU (client transactions), each one once.
    Response(Response),
    /// Timer B or F fired: no final response (the TU acts as on a 408).
    Timeout,
    /// An INVITE server sent a 2xx and no ACK came within 64·T1: hang up.
    AckTimeout,
    /// The transaction is over; the driver forgets it.
    Terminated,
}

/// How transactions are matched (RFC 3261 §17.1.3 and §17.2.3): the top Via branch, the
/// sent-by, and the method, with ACK matching its INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

impl TxKey {
    /// The key of the server transaction a request belongs to (an ACK to a non-2xx maps to
    /// its INVITE's); `None` without an RFC 3261 branch, which we do not serve.
    pub fn of_request(req: &Request) -> Option<TxKey> {
        let via = req.headers.top_via().ok()?;
        let branch = via.branch()?.to_string();
        if !branch.starts_with("z9hG4bK") {
            return None;
        }
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        Some(TxKey {
            branch,
            sent_by: sent_by(&via),
            method,
        })
    }

    /// The key of the client transaction a response belongs to.
    pub fn of_response(resp: &Response) -> Option<TxKey> {
        let via = resp.headers.top_via().ok()?;
        let branch = via.branch()?.to_string();
        let method = resp.headers.cseq().ok()?.method;
        Some(TxKey {
            branch,
            sent_by: sent_by(&via),
            method,
        })
    }
}

/// The sent-by of a Via as `host:port` (port 5060 when absent), host case-folded.
fn sent_by(via: &Via) -> String {
    format!(
        "{}:{}",
        via.host.to_string().to_ascii_lowercase(),
        via.port.unwrap_or(5060)
    )
}

/// State of a client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing back yet (Calling for INVITE, Trying otherwise).
    Calling,
    Proceeding,
    Completed,
    /// INVITE only: a 2xx was received; further 2xx are passed up (RFC 6026).
    Accepted,
    Terminated,
}

/// A client transaction: we sent the request.
#[derive(Debug)]
pub struct ClientTransaction {
    request: Request,
    invite: bool,
    reliable: bool,
    cfg: TimerConfig,
    state: ClientState,
    timers: TimerTable,
    /// Current retransmit interval (A or E).
    interval: Duration,
    /// The ACK sent for a non-2xx final response, resent on its retransmissions.
    ack: Option<Request>,
    actions: std::collections::VecDeque<TxAction>,
}

impl ClientTransaction {
    /// Starts the transaction: the request is queued for transmission at once.
    pub fn new(
        request: Request,
        reliable: bool,
        cfg: TimerConfig,
        now: Instant,
    ) -> ClientTransaction {
        let invite = request.method == Method::Invite;
        let mut tx = ClientTransaction {
            invite,
            reliable,
            cfg,
            state: ClientState::Calling,
            timers: TimerTable::default(),
            interval: cfg.t1,
            ack: None,
            actions: Default::default(),
            request,
        };
        tx.transmit_request();
        let (retransmit, give_up) = if invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        if !reliable {
            tx.timers.set(retransmit, after(now, cfg.t1));
        }
        tx.timers.set(give_up, after(now, cfg.t1 * 64));
        tx
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// A response matched to this transaction.
    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        match (self.invite, self.state) {
            (_, ClientState::Terminated) => {}
            (true, ClientState::Calling | ClientState::Proceeding) => {
                self.invite_response(now, resp)
            }
            (true, ClientState::Accepted) if resp.is_success() => {
                self.actions.push_back(TxAction::Response(resp))
            }
            (true, ClientState::Completed) if resp.is_final() && !resp.is_success() => {
                self.resend_ack()
            }
            (false, ClientState::Calling | ClientState::Proceeding) => {
                self.non_invite_response(now, resp)
            }
            _ => {}
        }
    }

    fn invite_response(&mut self, now: Instant, resp: Response) {
        if resp.is_provisional() {
            self.state = ClientState::Proceeding;
            self.timers.stop(Timer::A);
            self.actions.push_back(TxAction::Response(resp));
        } else if resp.is_success() {
            self.state = ClientState::Accepted;
            self.timers.clear();
            self.timers.set(Timer::M, after(now, self.cfg.t1 * 64));
            self.actions.push_back(TxAction::Response(resp));
        } else {
            self.state = ClientState::Completed;
            self.timers.clear();
            if let Ok(ack) = self.request.ack_for(&resp) {
                self.ack = Some(ack);
                self.resend_ack();
            }
            let d = if self.reliable {
                Duration::ZERO
            } else {
                Duration::from_secs(32)
            };
            self.timers.set(Timer::D, after(now, d));
            self.actions.push_back(TxAction::Response(resp));
        }
    }

    fn non_invite_response(&mut self, now: Instant, resp: Response) {
        if resp.is_provisional() {
            if self.state == ClientState::Calling && !self.reliable {
                // In Proceeding, Timer E fires at T2 (§17.1.2.2).
                self.interval = self.cfg.t2;
            }
            self.state = ClientState::Proceeding;
            self.actions.push_back(TxAction::Response(resp));
            return;
        }
        self.state = ClientState::Completed;
        self.timers.clear();
        let k = if self.reliable {
            Duration::ZERO
        } else {
            self.cfg.t4
        };
        self.timers.set(Timer::K, after(now, k));
        self.actions.push_back(TxAction::Response(resp));
    }

    fn transmit_request(&mut self) {
        self.actions
            .push_back(TxAction::Transmit(SipMessage::Request(
                self.request.clone(),
            )));
    }

    fn resend_ack(&mut self) {
        if let Some(ack) = &self.ack {
            self.actions
                .push_back(TxAction::Transmit(SipMessage::Request(ack.clone())));
        }
    }

    /// The transport could not send: the transaction ends as on a timeout (§17.1.4).
    pub fn transport_error(&mut self) {
        if self.state != ClientState::Terminated {
            self.actions.push_back(TxAction::Timeout);
            self.terminate();
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.take_due(now) {
            self.on_timer(now, t);
        }
    }

    fn on_timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::A if self.state == ClientState::Calling => {
                self.transmit_request();
                self.interval *= 2;
                self.timers.set(Timer::A, after(now, self.interval));
            }
            Timer::E if matches!(self.state, ClientState::Calling | ClientState::Proceeding) => {
                self.transmit_request();
                if self.state == ClientState::Calling {
                    self.interval = (self.interval * 2).min(self.cfg.t2);
                }
                self.timers.set(Timer::E, after(now, self.interval));
            }
            Timer::B | Timer::F => {
                self.actions.push_back(TxAction::Timeout);
                self.terminate();
            }
            Timer::D | Timer::K | Timer::M => self.terminate(),
            _ => {}
        }
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.timers.clear();
        self.actions.push_back(TxAction::Terminated);
    }

    pub fn poll_action(&mut self) -> Option<TxAction> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }
}

/// State of a server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE only: the request arrived, the TU has not answered.
    Trying,
    Proceeding,
    Completed,
    /// INVITE only: a 2xx was sent (RFC 6026).
    Accepted,
    /// INVITE only: the ACK for a non-2xx arrived.
    Confirmed,
    Terminated,
}

/// A server transaction: we received the request.
#[derive(Debug)]
pub struct ServerTransaction {
    request: Request,
    invite: bool,
    reliable: bool,
    cfg: TimerConfig,
    state: ServerState,
    timers: TimerTable,
    interval: Duration,
    last_response: Option<Response>,
    actions: std::collections::VecDeque<TxAction>,
}

impl ServerTransaction {
    /// A new request arrived. An INVITE is answered `100 Trying` at once (we never take
    /// 200 ms to decide, so there is no reason to wait as §17.2.1 allows).
    pub fn new(request: Request, reliable: bool, cfg: TimerConfig) -> ServerTransaction {
        let invite = request.method == Method::Invite;
        let mut tx = ServerTransaction {
            invite,
            reliable,
            cfg,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            timers: TimerTable::default(),
            interval: cfg.t1,
            last_response: None,
            actions: Default::default(),
            request,
        };
        if invite {
            let trying = Response::for_request(&tx.request, 100, "Trying");
            tx.send(trying);
        }
        tx
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// The last response sent, if any.
    pub fn last_response(&self) -> Option<&Response> {
        self.last_response.as_ref()
    }

    /// A request matched to this transaction: a retransmission, or the ACK of a non-2xx.
    pub fn handle_request(&mut self, now: Instant, req: &Request) {
        if req.method == Method::Ack {
            if self.invite && self.state == ServerState::Completed {
                self.state = ServerState::Confirmed;
                self.timers.stop(Timer::G);
                self.timers.stop(Timer::H);
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.cfg.t4
                };
                self.timers.set(Timer::I, after(now, i));
            }
            return;
        }
        // A retransmitted request: answer with the last response (§17.2.1, §17.2.2).
        let resend = matches!(self.state, ServerState::Proceeding | ServerState::Completed);
        if resend {
            if let Some(r) = self.last_response.clone() {
                self.actions
                    .push_back(TxAction::Transmit(SipMessage::Response(r)));
            }
        }
    }

    /// The TU answers. Responses after the final one are ignored (the TU's bug, not the
    /// network's).
    pub fn respond(&mut self, now: Instant, resp: Response) {
        if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            return;
        }
        let status = resp.status;
        self.send(resp);
        if (100..200).contains(&status) {
            self.state = ServerState::Proceeding;
        } else if self.invite && (200..300).contains(&status) {
            self.state = ServerState::Accepted;
            self.timers.set(Timer::L, after(now, self.cfg.t1 * 64));
            self.interval = self.cfg.t1;
            if !self.reliable {
                self.timers
                    .set(Timer::Retransmit2xx, after(now, self.interval));
            }
        } else if self.invite {
            self.state = ServerState::Completed;
            if !self.reliable {
                self.timers.set(Timer::G, after(now, self.interval));
            }
            self.timers.set(Timer::H, after(now, self.cfg.t1 * 64));
        } else {
            self.state = ServerState::Completed;
            let j = if self.reliable {
                Duration::ZERO
            } else {
                self.cfg.t1 * 64
            };
            self.timers.set(Timer::J, after(now, j));
        }
    }

    /// The dialog saw the ACK for our 2xx: stop retransmitting it.
    pub fn ack_received(&mut self) {
        self.timers.stop(Timer::Retransmit2xx);
    }

    fn send(&mut self, resp: Response) {
        self.actions
            .push_back(TxAction::Transmit(SipMessage::Response(resp.clone())));
        self.last_response = Some(resp);
    }

    fn resend_last(&mut self) {
        if let Some(r) = self.last_response.clone() {
            self.actions
                .push_back(TxAction::Transmit(SipMessage::Response(r)));
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.take_due(now) {
            self.on_timer(now, t);
        }
    }

    fn on_timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::G if self.state == ServerState::Completed => {
                self.resend_last();
                self.interval = (self.interval * 2).min(self.cfg.t2);
                self.timers.set(Timer::G, after(now, self.interval));
            }
            Timer::Retransmit2xx if self.state == ServerState::Accepted => {
                self.resend_last();
                self.interval = (self.interval * 2).min(self.cfg.t2);
                self.timers
                    .set(Timer::Retransmit2xx, after(now, self.interval));
            }
            Timer::L => {
                if self.timers.get(Timer::Retransmit2xx).is_some() {
                    // Still retransmitting: the ACK never came.
                    self.actions.push_back(TxAction::AckTimeout);
                }
                self.terminate();
            }
            Timer::H => {
                // No ACK for our error response: give up (§17.2.1).
                self.terminate();
            }
            Timer::I | Timer::J => self.terminate(),
            _ => {}
        }
    }

    /// The transport could not send: the transaction ends (§17.2.4).
    pub fn transport_error(&mut self) {
        if self.state != ServerState::Terminated {
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.timers.clear();
        self.actions.push_back(TxAction::Terminated);
    }

    pub fn poll_action(&mut self) -> Option<TxAction> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }
}

#[cfg(test)]
#[path = "transaction/tests.rs"]
mod tests;
