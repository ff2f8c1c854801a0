//! The SIP transport layer and the transaction table: the thin layer between
//! sockets and the call flow.
//!
//! # What it owns
//!
//! - [`Endpoint`] (sans-IO core, `endpoint.rs`): the table of client and
//!   server transactions keyed by [`TxKey`]. It parses bytes, answers
//!   malformed requests with a 400 (RFC 3261 §18.3), stamps `received`/`rport`
//!   on the top Via of incoming requests (§18.2.1, RFC 3581), routes
//!   retransmissions, ACKs, CANCELs and responses to their transactions,
//!   throttles floods with a token bucket (503 + Retry-After), and decides
//!   where every response goes (§18.2.2: the Via's `received`/`rport`, over
//!   the connection the request came on). Before a new request reaches the
//!   TU it passes the RFC 3261 §8.2 checks ([`crate::sip::uas`]: 501/405,
//!   416, 420, 415/406, answered here). It takes `now` and returns
//!   [`Transmit`]s and [`Event`]s; no tokio, no clock.
//! - [`LiveDialogs`] (`dialogs.rs`): the dialogs whose 2xx to an INVITE
//!   passed through the endpoint, so their requests are never throttled.
//! - [`FloodControl`] (`flood.rs`): a global token bucket at
//!   `sip.max_requests_per_second`, and one per source IP
//!   (`sip.per_source_requests_per_second`, `sip.per_source_burst`) in a
//!   bounded table, asked first.
//! - [`StreamFramer`] (`framing.rs`): sans-IO framing of a TCP byte stream with
//!   [`message::parse`](crate::sip::message::parse).
//! - [`SipDriver`] (`driver.rs`, tokio): one UDP socket, one TCP listener,
//!   per-connection tasks (`tcp.rs`), and a task that owns the [`Endpoint`],
//!   selects over packets, TU commands, the core's next timeout and the idle
//!   sweep, writes transmits and forwards events to the TU. The core's `now`
//!   and its timeouts come from the injected [`Clock`](crate::clock::Clock)
//!   ([`DriverOptions::clock`]), so a test fires SIP timers by advancing a
//!   `ManualClock`. It bounds SIP
//!   over TCP: connection caps in total and per source, a descriptor
//!   reserve, idle and slow-message timeouts, a shared buffer pool (see its
//!   module doc). [`fds`] raises the descriptor limit.
//!
//! # Who calls it, what it calls
//!
//! The call flow (`call`) holds a [`SipHandle`] to send requests and answer
//! requests, and reads [`Event`]s from the channel [`SipDriver::start`]
//! returns. This module calls [`crate::sip::message`] (parse, serialize,
//! `response_to_malformed`) and [`crate::sip::transaction`] (the §17 state
//! machines).
//!
//! # Choices worth knowing
//!
//! - The ACK for a 2xx has its own branch, so no transaction matches it: the
//!   table passes it up as [`Event::Ack`] and, matching by Call-ID and CSeq
//!   number, tells the INVITE server transaction to stop retransmitting its
//!   2xx.
//! - CANCEL is answered by the table (200, or 481 when no INVITE matches);
//!   the TU only sees [`Event::Cancel`] for a pending INVITE and answers that
//!   INVITE 487.
//! - Flood control spares what belongs to something we already carry:
//!   retransmissions and responses, the ACK and CANCEL of an INVITE server
//!   transaction we hold, and the BYE, ACK, INFO and re-INVITE of a live
//!   dialog (Call-ID, To tag and From tag all matching one in
//!   [`LiveDialogs`]). Shedding those would only prolong the load, and a
//!   throttled BYE keeps a call billing. A party of a dialog cannot flood
//!   through that door: each dialog has its own budget (10/s, burst 20), past
//!   which its requests count like anyone's, its BYE aside; and the server
//!   transaction table is bounded (`MAX_SERVERS`: past it, only BYE and ACK
//!   pass). Other methods in a dialog (MESSAGE, OPTIONS, …) always count.
//!   Everything else counts, an in-dialog-looking
//!   request with a guessed tag, a stray ACK (dropped when over budget) or a
//!   stray CANCEL included. A TU that cannot keep up (event channel full)
//!   gets the same 503 answered for it.
//! - The per-source default (100/s, burst 200) serves a housing unit whose
//!   handsets share one address (an analog gateway, a NAT): 48 lines all
//!   picking up at once. Behind a SIP load balancer every request comes from
//!   its address, so there the per-source limit belongs on the balancer
//!   (`sip.per_source_requests_per_second = 0`).
//! - Transaction timers sit in a heap with lazy deletion, so `poll_timeout`
//!   is O(1) and `handle_timeout` touches only due transactions.
//! - Requests without an RFC 3261 branch (RFC 2543 peers) are refused 400:
//!   no handset the gateway serves is that old (RFC 4475 wsinv, longreq,
//!   inv2543 get 400).
//! - Not yet: TLS/WS; `maddr`.
//! - TCP I/O uses `readable`/`try_read` and `writable`/`try_write`, so only
//!   tokio's `net` feature is needed.

mod dialogs;
mod driver;
mod endpoint;
pub mod fds;
mod flood;
mod framing;
mod tcp;
mod via;

#[cfg(test)]
mod tests;

pub use dialogs::LiveDialogs;
pub use driver::{DriverOptions, SipDriver, SipHandle, CLOSING_LINGER};
pub use endpoint::{Endpoint, EndpointConfig};
pub use flood::{FloodConfig, FloodControl, TokenBucket};
pub use framing::{Frame, StreamFramer};
pub use tcp::{BufferPool, FREE_BYTES, READ_CHUNK};
pub use via::{response_destination, stamp_received};

use crate::sip::message::{Request, Response};
pub use crate::sip::transaction::TxKey;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// One TCP connection, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a message came in or goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The UDP socket.
    Udp,
    /// TCP: a given connection, or `None` for "any connection to the
    /// destination, opened if needed" (requests we originate).
    Tcp(Option<ConnId>),
}

impl Transport {
    /// Reliable transports get no retransmissions (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp(_))
    }
}

/// Bytes the driver must write.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// Where to send (for TCP: where to connect if the connection is gone).
    pub dest: SocketAddr,
    pub transport: Transport,
    pub bytes: Vec<u8>,
    /// The transaction that sent it, told of a failed send.
    pub key: Option<TxKey>,
}

impl Transmit {
    /// A response (we write every status line as `SIP/2.0 <code>`), rather than a
    /// request: a connection opened for it is the peer's doing and counts against the
    /// TCP caps.
    pub fn is_response(&self) -> bool {
        self.bytes.starts_with(b"SIP/2.0 ")
    }
}

/// What the transaction user (the call flow) learns.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new request: a server transaction waits for [`Endpoint::respond`].
    Request {
        key: TxKey,
        request: Request,
        source: SocketAddr,
        transport: Transport,
    },
    /// An ACK matching no transaction: the ACK for a 2xx (dialog business).
    Ack {
        request: Request,
        source: SocketAddr,
        transport: Transport,
    },
    /// A CANCEL for a pending INVITE (already answered 200): answer the INVITE 487.
    Cancel {
        invite_key: TxKey,
        request: Request,
        source: SocketAddr,
    },
    /// A response to a request we sent.
    Response { key: TxKey, response: Response },
    /// Timer B/F (or a transport error): no final response came.
    Timeout { key: TxKey },
    /// Our 2xx to an INVITE was never ACKed: hang up (RFC 3261 §13.3.1.4).
    AckTimeout { key: TxKey },
}

/// Errors at the transport boundary.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind SIP {proto} socket on {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the local address of the SIP {proto} socket: {source}")]
    LocalAddr {
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("request has no RFC 3261 branch in its top Via")]
    NoBranch,
    #[error("a client transaction with this key already exists")]
    DuplicateTransaction,
    #[error("no server transaction with this key")]
    NoTransaction,
    #[error("the SIP driver has stopped")]
    DriverStopped,
}

/// Counters for `/metrics`, shared between the core, the driver and readers.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Datagrams and framed stream messages received.
    pub received: AtomicU64,
    /// Messages written to a socket or a connection.
    pub sent: AtomicU64,
    /// Malformed requests answered 400 (or 505/513).
    pub malformed_400: AtomicU64,
    /// Input dropped (unanswerable garbage) and output that could not be sent.
    pub dropped: AtomicU64,
    /// New requests answered 503 by flood control or TU overload.
    pub throttled_503: AtomicU64,
    /// Responses matching no client transaction.
    pub stray_responses: AtomicU64,
    /// Retransmitted requests (not ACKs) that arrived before the TU's final answer: the
    /// peer waited past its timer for an answer still being made.
    pub retransmitted_unanswered: AtomicU64,
    /// Retransmitted requests (not ACKs) that arrived after the final answer was sent (it
    /// is sent again): the answer was lost, or reached the peer too late.
    pub retransmitted_answered: AtomicU64,
    /// New requests refused by the RFC 3261 §8.2 checks (405/501, 416, 420, 415/406).
    pub refused_unsupported: AtomicU64,
    /// TCP connections accepted.
    pub tcp_accepted: AtomicU64,
    /// TCP connections closed at once: the total cap was reached.
    pub tcp_refused_total_cap: AtomicU64,
    /// TCP connections closed at once: their source's cap was reached.
    pub tcp_refused_source_cap: AtomicU64,
    /// TCP connections closed at once: the descriptor reserve was reached.
    pub tcp_refused_descriptors: AtomicU64,
    /// TCP connections closed after the idle timeout.
    pub tcp_closed_idle: AtomicU64,
    /// TCP connections closed because a message did not complete in time.
    pub tcp_closed_slow: AtomicU64,
    /// TCP connections closed because the buffer pool was exhausted.
    pub tcp_closed_buffer: AtomicU64,
    /// TCP connections open now (gauge).
    pub tcp_open: AtomicU64,
    /// Bytes of the TCP buffer pool in use now (gauge).
    pub tcp_pool_bytes: AtomicU64,
}

/// A plain copy of [`TransportStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub received: u64,
    pub sent: u64,
    pub malformed_400: u64,
    pub dropped: u64,
    pub throttled_503: u64,
    pub stray_responses: u64,
    pub retransmitted_unanswered: u64,
    pub retransmitted_answered: u64,
    pub refused_unsupported: u64,
    pub tcp_accepted: u64,
    pub tcp_refused_total_cap: u64,
    pub tcp_refused_source_cap: u64,
    pub tcp_refused_descriptors: u64,
    pub tcp_closed_idle: u64,
    pub tcp_closed_slow: u64,
    pub tcp_closed_buffer: u64,
    pub tcp_open: u64,
    pub tcp_pool_bytes: u64,
}

impl TransportStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            sent: get(&self.sent),
            malformed_400: get(&self.malformed_400),
            dropped: get(&self.dropped),
            throttled_503: get(&self.throttled_503),
            stray_responses: get(&self.stray_responses),
            retransmitted_unanswered: get(&self.retransmitted_unanswered),
            retransmitted_answered: get(&self.retransmitted_answered),
            refused_unsupported: get(&self.refused_unsupported),
            tcp_accepted: get(&self.tcp_accepted),
            tcp_refused_total_cap: get(&self.tcp_refused_total_cap),
            tcp_refused_source_cap: get(&self.tcp_refused_source_cap),
            tcp_refused_descriptors: get(&self.tcp_refused_descriptors),
            tcp_closed_idle: get(&self.tcp_closed_idle),
            tcp_closed_slow: get(&self.tcp_closed_slow),
            tcp_closed_buffer: get(&self.tcp_closed_buffer),
            tcp_open: get(&self.tcp_open),
            tcp_pool_bytes: get(&self.tcp_pool_bytes),
        }
    }
}
