//! The tokio driver: sockets in, [`Endpoint`] in the middle, events out.
//!
//! One task owns the core and selects over the UDP socket (read in place, a
//! few queued datagrams at a time), TU commands and the core's next timeout
//! (quinn's `ConnectionDriver` shape). Socket tasks (the TCP accept loop, one
//! task per connection) live in a `JoinSet` owned by that task, so they all
//! stop with it. The driver runs until every [`SipHandle`] is dropped.
//!
//! # TCP under attack
//!
//! - Accepted connections are capped in total (`sip.tcp_max_connections`)
//!   and per source address (`sip.tcp_max_connections_per_source`); one
//!   past a cap is closed at once and counted. A connection we open to send
//!   a response (its request's connection had closed, RFC 3261 §18.2.2)
//!   counts against the same caps as an accepted one, since the peer chose
//!   to cause it: past a cap the response is dropped and counted. Outbound
//!   connections for our requests (to the trunk or a handset) are not
//!   capped: an attacker filling the cap must not stop calls from going out.
//! - SIP over TCP never holds a descriptor numbered within the top
//!   `sip.tcp_fd_reserve` of the process's limit (the kernel hands out the
//!   lowest free number, so an accepted socket numbered there means fewer
//!   than the reserve are free): such a connection is closed at once, and
//!   RTP binds, the HTTP listener, the database and recordings keep the rest.
//!   `serve` raises the soft `RLIMIT_NOFILE` to the hard limit first.
//! - A connection with no message, ping or write for
//!   `sip.tcp_idle_timeout_secs` is closed by a sweep, unless a live dialog
//!   was set up over it (its BYE must still reach the phone that way).
//! - Slow messages and buffered bytes are bounded per connection (`tcp.rs`).
//! - After a framing error the 400 goes out on the connection, which then
//!   reads no more but stays open for writing until every request that came
//!   on it has its final response (at most [`CLOSING_LINGER`]), so those
//!   responses go back the way their requests came (RFC 3261 §18.2.2).
//!
//! # Time
//!
//! Every `now` the [`Endpoint`] is fed, and the sleep until its next
//! timeout, come from the injected [`Clock`] ([`DriverOptions::clock`]: the
//! store's in the server), so a test can fire Timer B, F or J by advancing
//! a [`ManualClock`](crate::clock::ManualClock). The TCP bounds above (idle
//! sweep, linger, slow messages) run on the real clock: they ration real
//! descriptors held by real peers, and a clock stopped in a test must not
//! keep a socket open or close one.

use super::endpoint::{Endpoint, EndpointConfig};
use super::fds;
use super::flood::FloodConfig;
use super::tcp::{self, Activity, BufferPool, ConnInput, WRITE_QUEUE};
use super::{ConnId, Event, Transmit, Transport, TransportError, TransportStats, TxKey};
use crate::clock::{Clock, Sleep, SystemClock};
use crate::config::SipConfig;
use crate::sip::message::{Request, Response};
use crate::sip::transaction::TimerConfig;
use crate::sip::uas::Capabilities;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, warn};

/// Knobs beyond [`SipConfig`], mostly for tests.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    pub timers: TimerConfig,
    /// Flood bucket size; `None` for one second's worth of the rate.
    pub burst: Option<u32>,
    /// Events buffered for the TU before new requests are answered 503.
    pub event_capacity: usize,
    /// Descriptors SIP over TCP leaves free (resolved from
    /// `sip.tcp_fd_reserve` by the caller, who knows the RTP range).
    pub fd_reserve: u32,
    /// What the TU serves (RFC 3261 §8.2 checks): the gateway's by default.
    pub uas: Capabilities,
    /// The time the transactions run on (see the module doc); the real clock by default.
    pub clock: Arc<dyn Clock>,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            timers: TimerConfig::default(),
            burst: None,
            event_capacity: 4096,
            fd_reserve: 256,
            uas: Capabilities::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// How long a connection that lost its framing stays open for the
/// responses to the requests that came on it.
pub const CLOSING_LINGER: Duration = Duration::from_secs(32);
/// Least time between two idle sweeps.
const SWEEP_MIN: Duration = Duration::from_millis(100);

/// The TCP bounds in force (see the module doc).
#[derive(Debug, Clone, Copy)]
struct TcpLimits {
    max_connections: usize,
    max_per_source: usize,
    idle_timeout: Duration,
    message_timeout: Duration,
}

impl TcpLimits {
    fn of(config: &SipConfig) -> TcpLimits {
        let secs = |s: u32| Duration::from_secs(u64::from(s.max(1)));
        TcpLimits {
            max_connections: config.tcp_max_connections.max(1) as usize,
            max_per_source: config.tcp_max_connections_per_source.max(1) as usize,
            idle_timeout: secs(config.tcp_idle_timeout_secs),
            message_timeout: secs(config.tcp_message_timeout_secs),
        }
    }
}

enum Command {
    Send {
        request: Box<Request>,
        dest: SocketAddr,
        transport: Transport,
        reply: oneshot::Sender<Result<TxKey, TransportError>>,
    },
    Respond {
        key: TxKey,
        response: Box<Response>,
        /// `None`: nobody waits ([`SipHandle::post_response`]); a failure is logged.
        reply: Option<oneshot::Sender<Result<(), TransportError>>>,
    },
}

/// What socket tasks feed the driver task (datagrams it reads itself).
enum Inbound {
    Accepted { stream: TcpStream, peer: SocketAddr },
}

/// Datagrams handled in one go before the driver looks at its other inputs.
const UDP_BATCH: usize = 32;

/// The TU's side of the driver. Cheap to clone.
#[derive(Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<Command>,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    stats: Arc<TransportStats>,
}

impl SipHandle {
    /// Sends a request in a new client transaction (an ACK goes straight out).
    pub async fn send_request(
        &self,
        request: Request,
        dest: SocketAddr,
        transport: Transport,
    ) -> Result<TxKey, TransportError> {
        let (reply, rx) = oneshot::channel();
        let request = Box::new(request);
        self.command(Command::Send {
            request,
            dest,
            transport,
            reply,
        })
        .await?;
        rx.await.map_err(|_| TransportError::DriverStopped)?
    }

    /// Answers the request of server transaction `key`.
    pub async fn respond(&self, key: TxKey, response: Response) -> Result<(), TransportError> {
        let (reply, rx) = oneshot::channel();
        let response = Box::new(response);
        self.command(Command::Respond {
            key,
            response,
            reply: Some(reply),
        })
        .await?;
        rx.await.map_err(|_| TransportError::DriverStopped)?
    }

    /// Queues the answer to server transaction `key` without waiting for the driver to
    /// take it: the caller goes on at once, and a response that cannot be sent (its
    /// transaction is gone, the driver stopped) is logged by the driver. For a TU that would
    /// only log the failure anyway: a call answering an INFO or a BYE saves the wake-up
    /// that [`SipHandle::respond`]'s reply costs.
    pub async fn post_response(&self, key: TxKey, response: Response) {
        let c = Command::Respond {
            key,
            response: Box::new(response),
            reply: None,
        };
        if self.command(c).await.is_err() {
            debug!("response not sent: the SIP driver stopped");
        }
    }

    async fn command(&self, c: Command) -> Result<(), TransportError> {
        self.commands
            .send(c)
            .await
            .map_err(|_| TransportError::DriverStopped)
    }

    /// The bound UDP address (the real port when configured with port 0).
    pub fn local_udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound TCP address.
    pub fn local_tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }
}

/// A live TCP connection, as the driver sees it.
struct ConnEntry {
    peer: SocketAddr,
    out: mpsc::Sender<Vec<u8>>,
    /// Client transactions waiting on an outbound connect.
    pending: Vec<TxKey>,
    /// The connection's task, aborted when the connection is closed for idleness.
    task: AbortHandle,
    activity: Arc<Activity>,
    /// Counted against the caps: accepted, or opened to send a response.
    inbound: bool,
    /// Framing was lost: close once its requests are answered, or at this instant.
    closing: Option<Instant>,
}

/// The connection caps (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    Total,
    Source,
}

/// The driver's side of a new connection: its write queue and activity stamp.
struct ConnHalf {
    out: mpsc::Sender<Vec<u8>>,
    activity: Arc<Activity>,
}

/// Starts the SIP transport (see the module doc).
pub struct SipDriver {
    core: Endpoint,
    /// Where the core's `now` comes from, and what its timeouts sleep on.
    clock: Arc<dyn Clock>,
    udp: Arc<UdpSocket>,
    conns: HashMap<ConnId, ConnEntry>,
    by_peer: HashMap<SocketAddr, ConnId>,
    /// Counted connections (accepted, or opened for a response) per peer address.
    per_source: HashMap<IpAddr, usize>,
    /// Counted connections open.
    inbound: usize,
    limits: TcpLimits,
    pool: Arc<BufferPool>,
    /// The zero of the connections' activity stamps.
    epoch: Instant,
    /// When the idle sweep runs next (`None`: no connection).
    next_sweep: Option<Instant>,
    /// Connections lingering after a framing error.
    lingering: usize,
    next_conn: u64,
    tasks: JoinSet<()>,
    inbound_tx: mpsc::Sender<Inbound>,
    conn_tx: mpsc::Sender<ConnInput>,
    events: mpsc::Sender<Event>,
    stats: Arc<TransportStats>,
}

impl SipDriver {
    /// Binds `udp_listen` and `tcp_listen` and spawns the driver task.
    pub async fn start(
        config: &SipConfig,
    ) -> Result<(SipHandle, mpsc::Receiver<Event>), TransportError> {
        Self::start_with(config, DriverOptions::default()).await
    }

    /// [`SipDriver::start`] with explicit timers and flood burst.
    pub async fn start_with(
        config: &SipConfig,
        options: DriverOptions,
    ) -> Result<(SipHandle, mpsc::Receiver<Event>), TransportError> {
        let udp = bind_udp(config.udp_listen).await?;
        let tcp = bind_tcp(config.tcp_listen).await?;
        let udp_addr = local(udp.local_addr(), "UDP")?;
        let tcp_addr = local(tcp.local_addr(), "TCP")?;
        let stats = Arc::new(TransportStats::default());
        let rate = config.max_requests_per_second;
        let cfg = EndpointConfig {
            timers: options.timers,
            flood: FloodConfig {
                rate,
                burst: options.burst.unwrap_or(rate),
                per_source: config.per_source_requests_per_second,
                per_source_burst: config.per_source_burst,
            },
            uas: options.uas,
        };
        let ceiling = fds::tcp_ceiling(options.fd_reserve);
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (event_tx, event_rx) = mpsc::channel(options.event_capacity.max(1));
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (conn_tx, conn_rx) = mpsc::channel(1024);
        let mut driver = SipDriver {
            core: Endpoint::new(cfg, stats.clone()),
            clock: options.clock,
            udp: Arc::new(udp),
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            per_source: HashMap::new(),
            inbound: 0,
            limits: TcpLimits::of(config),
            pool: Arc::new(BufferPool::new(config.tcp_buffer_pool_bytes, stats.clone())),
            epoch: Instant::now(), // clock-ok: the transport driver's idle timer
            next_sweep: None,
            lingering: 0,
            next_conn: 0,
            tasks: JoinSet::new(),
            inbound_tx,
            conn_tx,
            events: event_tx,
            stats: stats.clone(),
        };
        driver.spawn_socket_loops(tcp, ceiling);
        tokio::spawn(driver.run(cmd_rx, inbound_rx, conn_rx));
        let handle = SipHandle {
            commands: cmd_tx,
            udp_addr,
            tcp_addr,
            stats,
        };
        Ok((handle, event_rx))
    }

    fn spawn_socket_loops(&mut self, tcp: TcpListener, ceiling: Option<i32>) {
        let tx = self.inbound_tx.clone();
        let stats = self.stats.clone();
        self.tasks.spawn(accept_loop(tcp, tx, ceiling, stats));
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut conn_in: mpsc::Receiver<ConnInput>,
    ) {
        let mut alarm = Alarm::default();
        // Datagrams are read here, not by a task of their own: a hop through a channel per
        // datagram cost a task wake-up each, about 20 per call.
        let udp = self.udp.clone();
        let mut buf = vec![0u8; 65_535];
        loop {
            alarm.set(&*self.clock, self.core.poll_timeout());
            // clock-ok: the idle sweep is TCP hygiene on the real clock (module doc).
            let sweep = self.next_sweep.map(tokio::time::Instant::from_std);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                r = udp.recv_from(&mut buf) => self.on_udp(r, &udp, &mut buf),
                Some(i) = inbound.recv() => self.on_inbound(i),
                Some(c) = conn_in.recv() => self.on_conn(c),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                () = alarm.ring() => self.core.handle_timeout(self.clock.now()),
                _ = sleep_until(sweep), if sweep.is_some() => {
                    self.sweep(Instant::now()); // clock-ok: the transport driver's idle timer
                }
            }
            self.flush().await;
            self.close_answered();
        }
        debug!("SIP driver stopped: every handle was dropped");
    }

    fn on_command(&mut self, c: Command) {
        let now = self.clock.now();
        match c {
            Command::Send {
                request,
                dest,
                transport,
                reply,
            } => {
                let r = self.core.send_request(now, *request, dest, transport);
                let _ = reply.send(r);
            }
            Command::Respond {
                key,
                response,
                reply,
            } => {
                let r = self.core.respond(now, &key, *response);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(r);
                    }
                    None => {
                        if let Err(e) = r {
                            debug!(error = %e, "response not sent");
                        }
                    }
                }
            }
        }
    }

    fn on_inbound(&mut self, i: Inbound) {
        match i {
            Inbound::Accepted { stream, peer } => self.on_accept(stream, peer),
        }
    }

    /// A datagram received, then those already queued behind it (at most
    /// [`UDP_BATCH`] in all, so commands and timers are not kept waiting), without
    /// waiting for more. Nothing is read that is not handled: a datagram read past the
    /// batch would be lost (it was, one per full batch, until 2026-12-06: under load a
    /// request went unanswered until its sender's retransmission).
    fn on_udp(
        &mut self,
        first: std::io::Result<(usize, SocketAddr)>,
        udp: &UdpSocket,
        buf: &mut [u8],
    ) {
        let mut next = first;
        for read in 1..=UDP_BATCH {
            match next {
                Ok((n, from)) => {
                    let now = self.clock.now();
                    let bytes = buf.get(..n).unwrap_or(&[]);
                    self.core.handle_datagram(now, from, Transport::Udp, bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable and the like surface here: keep going.
                Err(e) => debug!(error = %e, "SIP UDP receive error"),
            }
            if read == UDP_BATCH {
                return;
            }
            next = udp.try_recv_from(buf);
        }
    }

    /// An accepted connection: refused (closed at once, counted) past a cap.
    fn on_accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        if let Some(cap) = self.over_cap(peer.ip()) {
            TransportStats::bump(self.cap_counter(cap));
            debug!(%peer, "SIP TCP connection refused: connection cap");
            return; // dropping the stream closes it
        }
        TransportStats::bump(&self.stats.tcp_accepted);
        let (ctx, half) = self.conn_context(peer);
        let conn = ctx.conn;
        let task = self.tasks.spawn(tcp::run(stream, ctx));
        self.register_conn(conn, peer, task, half, true);
    }

    fn on_conn(&mut self, c: ConnInput) {
        match c {
            ConnInput::Message { conn, peer, msg } => {
                let t = Transport::Tcp(Some(conn));
                self.core.handle_message(self.clock.now(), peer, t, msg);
            }
            ConnInput::Malformed {
                conn,
                peer,
                response,
            } => {
                let t = Transport::Tcp(Some(conn));
                self.core.handle_malformed(peer, t, response);
                // The 400 goes out on the connection; the connection reads no
                // more and closes once its earlier requests are answered.
                while let Some(t) = self.core.poll_transmit() {
                    self.write_tcp(t);
                }
                let now = Instant::now(); // clock-ok: the transport driver's linger
                if let Some(e) = self.conns.get_mut(&conn) {
                    if e.closing.is_none() {
                        self.lingering += 1;
                    }
                    e.closing = Some(now + CLOSING_LINGER);
                }
                self.schedule_sweep(now + CLOSING_LINGER);
            }
            ConnInput::Closed { conn, connected } => {
                let pending = self.remove_conn(conn);
                if !connected {
                    for key in pending {
                        self.core.transport_error(&key);
                    }
                }
            }
        }
    }

    /// A new connection's id, write queue and context for its task.
    fn conn_context(&mut self, peer: SocketAddr) -> (tcp::ConnContext, ConnHalf) {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let (out, out_rx) = mpsc::channel(WRITE_QUEUE);
        let activity = Arc::new(Activity::new(self.epoch, Instant::now())); // clock-ok: idle timer
        let ctx = tcp::ConnContext {
            conn,
            peer,
            out_rx,
            pong: out.clone(),
            to_driver: self.conn_tx.clone(),
            activity: activity.clone(),
            pool: self.pool.clone(),
            message_timeout: self.limits.message_timeout,
            stats: self.stats.clone(),
        };
        (ctx, ConnHalf { out, activity })
    }

    /// Records a connection whose task runs.
    fn register_conn(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        task: AbortHandle,
        half: ConnHalf,
        inbound: bool,
    ) {
        let ConnHalf { out, activity } = half;
        let entry = ConnEntry {
            peer,
            out,
            pending: Vec::new(),
            task,
            activity: activity.clone(),
            inbound,
            closing: None,
        };
        if inbound {
            self.inbound += 1;
            *self.per_source.entry(peer.ip()).or_insert(0) += 1;
        }
        self.conns.insert(conn, entry);
        self.by_peer.insert(peer, conn);
        self.stats.tcp_open.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.schedule_sweep(activity.last() + self.limits.idle_timeout);
    }

    fn remove_conn(&mut self, conn: ConnId) -> Vec<TxKey> {
        let Some(e) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        if self.by_peer.get(&e.peer) == Some(&conn) {
            self.by_peer.remove(&e.peer);
        }
        if e.closing.is_some() {
            self.lingering = self.lingering.saturating_sub(1);
        }
        if e.inbound {
            self.inbound = self.inbound.saturating_sub(1);
            if let Some(n) = self.per_source.get_mut(&e.peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_source.remove(&e.peer.ip());
                }
            }
        }
        self.stats.tcp_open.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        e.pending
    }

    /// Runs the sweep no later than `at`.
    fn schedule_sweep(&mut self, at: Instant) {
        self.next_sweep = Some(self.next_sweep.map_or(at, |s| s.min(at)));
    }

    /// Closes connections idle past the timeout (unless a live dialog uses
    /// them) and lingering ones past their deadline; plans the next sweep.
    /// `now` is real time (see the module doc).
    fn sweep(&mut self, now: Instant) {
        let idle = self.limits.idle_timeout;
        // Dialogs live on the injected clock, like everything the core holds.
        let core_now = self.clock.now();
        let mut next: Option<Instant> = None;
        let mut idle_out = Vec::new();
        let mut linger_out = Vec::new();
        for (&conn, e) in &self.conns {
            let at = match e.closing {
                Some(deadline) if deadline <= now => {
                    linger_out.push(conn);
                    continue;
                }
                Some(deadline) => deadline,
                None => {
                    let expires = e.activity.last() + idle;
                    if expires > now {
                        expires
                    } else if self.core.conn_has_dialog(core_now, conn) {
                        now + idle
                    } else {
                        idle_out.push(conn);
                        continue;
                    }
                }
            };
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        for conn in idle_out {
            TransportStats::bump(&self.stats.tcp_closed_idle);
            if let Some(e) = self.conns.get(&conn) {
                debug!(peer = %e.peer, "SIP TCP connection idle: closing");
                e.task.abort();
            }
            self.remove_conn(conn);
        }
        for conn in linger_out {
            self.remove_conn(conn);
        }
        self.next_sweep = next.map(|n| n.max(now + SWEEP_MIN));
    }

    /// Closes lingering connections whose requests all have a final response.
    fn close_answered(&mut self) {
        if self.lingering == 0 {
            return;
        }
        let done: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(&c, e)| e.closing.is_some() && !self.core.awaiting_final_on(c))
            .map(|(&c, _)| c)
            .collect();
        for conn in done {
            // Dropping the sender lets the writer drain what is queued, then close.
            self.remove_conn(conn);
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            match t.transport {
                Transport::Udp => self.write_udp(t).await,
                Transport::Tcp(_) => self.write_tcp(t),
            }
        }
        while let Some(e) = self.core.poll_event() {
            self.deliver(e);
        }
    }

    async fn write_udp(&mut self, t: Transmit) {
        match self.udp.send_to(&t.bytes, t.dest).await {
            Ok(_) => TransportStats::bump(&self.stats.sent),
            Err(e) => {
                warn!(dest = %t.dest, error = %e, "SIP UDP send failed");
                TransportStats::bump(&self.stats.dropped);
            }
        }
    }

    /// Queues on the connection the transmit names, else any connection to
    /// its destination, else a new outbound connection (§18.2.2).
    fn write_tcp(&mut self, t: Transmit) {
        if let Transport::Tcp(Some(c)) = t.transport {
            if let Some(e) = self.conns.get(&c) {
                e.activity.touch();
            }
        }
        let named = match t.transport {
            Transport::Tcp(Some(c)) if self.conns.contains_key(&c) => Some(c),
            _ => None,
        };
        let existing = named.or_else(|| self.by_peer.get(&t.dest).copied());
        let conn = match existing {
            Some(c) => c,
            None if t.is_response() => match self.over_cap(t.dest.ip()) {
                Some(cap) => {
                    TransportStats::bump(self.cap_counter(cap));
                    debug!(dest = %t.dest, "SIP TCP response dropped: connection cap");
                    if let Some(key) = &t.key {
                        self.core.transport_error(key);
                    }
                    return;
                }
                None => self.connect(t.dest, true),
            },
            None => self.connect(t.dest, false),
        };
        let Some(entry) = self.conns.get_mut(&conn) else {
            return TransportStats::bump(&self.stats.dropped);
        };
        match entry.out.try_send(t.bytes) {
            Ok(()) => TransportStats::bump(&self.stats.sent),
            Err(_) => {
                TransportStats::bump(&self.stats.dropped);
                if let Some(key) = &t.key {
                    self.core.transport_error(key);
                }
                return;
            }
        }
        if let Some(key) = t.key {
            if entry.pending.len() < 64 {
                entry.pending.push(key);
            }
        }
    }

    /// Opens an outbound connection (`counted` against the caps when it carries a
    /// response); bytes queue while it connects.
    fn connect(&mut self, dest: SocketAddr, counted: bool) -> ConnId {
        let (ctx, half) = self.conn_context(dest);
        let conn = ctx.conn;
        let task = self.tasks.spawn(tcp::connect_and_run(ctx));
        self.register_conn(conn, dest, task, half, counted);
        conn
    }

    /// The cap a new counted connection with `ip` would pass; `None` when it fits.
    fn over_cap(&self, ip: IpAddr) -> Option<Cap> {
        let from_source = self.per_source.get(&ip).copied().unwrap_or(0);
        if self.inbound >= self.limits.max_connections {
            Some(Cap::Total)
        } else if from_source >= self.limits.max_per_source {
            Some(Cap::Source)
        } else {
            None
        }
    }

    /// The counter of refusals at `cap`.
    fn cap_counter(&self, cap: Cap) -> &std::sync::atomic::AtomicU64 {
        match cap {
            Cap::Total => &self.stats.tcp_refused_total_cap,
            Cap::Source => &self.stats.tcp_refused_source_cap,
        }
    }

    /// Hands an event to the TU; a new request it cannot take is answered 503.
    fn deliver(&mut self, e: Event) {
        use mpsc::error::TrySendError;
        match self.events.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(Event::Request { key, .. })) => {
                self.core.reject_overload(self.clock.now(), &key);
            }
            Err(_) => TransportStats::bump(&self.stats.dropped),
        }
    }
}

/// The receive queue the SIP UDP socket asks for (`SO_RCVBUF`; the kernel caps it at
/// `net.core.rmem_max`). Calls set up together send their requests in bursts (a dozen key
/// presses by INFO per call), and the default queue (about 200 KiB) overflowed at 500
/// set-ups a second: each request lost there costs its sender a 500 ms retransmission.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, TransportError> {
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|source| TransportError::Bind {
            proto: "UDP",
            addr,
            source,
        })?;
    use std::os::fd::AsRawFd;
    if let Err(e) = crate::media::engine::set_receive_buffer(udp.as_raw_fd(), UDP_RECEIVE_BUFFER) {
        warn!(error = %e, "cannot enlarge the SIP UDP socket's receive queue; keeping the default");
    }
    Ok(udp)
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| TransportError::Bind {
            proto: "TCP",
            addr,
            source,
        })
}

fn local(
    addr: std::io::Result<SocketAddr>,
    proto: &'static str,
) -> Result<SocketAddr, TransportError> {
    addr.map_err(|source| TransportError::LocalAddr { proto, source })
}

/// The sleep until the core's next timeout on the injected clock. It is made
/// anew only when the deadline moves: most turns of the loop leave it where
/// it was.
#[derive(Default)]
struct Alarm {
    at: Option<Instant>,
    sleep: Option<Sleep>,
}

impl Alarm {
    fn set(&mut self, clock: &dyn Clock, at: Option<Instant>) {
        if at != self.at {
            self.sleep = at.map(|at| clock.sleep_until(at));
            self.at = at;
        }
    }

    /// Completes when the clock reaches the deadline, which it then forgets;
    /// never without one. Cancel-safe: the sleep stays armed.
    async fn ring(&mut self) {
        match self.sleep.as_mut() {
            Some(sleep) => {
                sleep.await;
                *self = Alarm::default();
            }
            None => std::future::pending().await,
        }
    }
}

/// Sleeps until `at` (on the real clock), or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Accepts TCP connections and hands them to the driver; closes at once one
/// whose descriptor lies in the reserve (numbered `ceiling` or above).
async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Inbound>,
    ceiling: Option<i32>,
    stats: Arc<TransportStats>,
) {
    use std::os::fd::AsRawFd;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if ceiling.is_some_and(|c| stream.as_raw_fd() >= c) {
                    TransportStats::bump(&stats.tcp_refused_descriptors);
                    debug!(%peer, "SIP TCP connection refused: descriptor reserve");
                    continue;
                }
                if tx.send(Inbound::Accepted { stream, peer }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "SIP TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
