//! The tokio driver: sockets in, [`Endpoint`] in the middle, events out.
//!
//! One task owns the core and selects over inbound packets, TU commands and
//! the core's next timeout (quinn's `ConnectionDriver` shape). Socket tasks
//! (the UDP receive loop, the TCP accept loop, one task per connection) live
//! in a `JoinSet` owned by that task, so they all stop with it. The driver
//! runs until every [`SipHandle`] is dropped.

use super::endpoint::{Endpoint, EndpointConfig};
use super::flood::FloodConfig;
use super::tcp::{self, ConnInput, WRITE_QUEUE};
use super::{ConnId, Event, Transmit, Transport, TransportError, TransportStats, TxKey};
use crate::config::SipConfig;
use crate::sip::message::{Request, Response};
use crate::sip::transaction::TimerConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// Knobs beyond [`SipConfig`], mostly for tests.
#[derive(Debug, Clone, Copy)]
pub struct DriverOptions {
    pub timers: TimerConfig,
    /// Flood bucket size; `None` for one second's worth of the rate.
    pub burst: Option<u32>,
    /// Requests per second per source IP (0: no per-source limit).
    pub per_source_rate: u32,
    /// Events buffered for the TU before new requests are answered 503.
    pub event_capacity: usize,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            timers: TimerConfig::default(),
            burst: None,
            per_source_rate: 0,
            event_capacity: 4096,
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
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
}

/// What socket tasks feed the driver task.
enum Inbound {
    Datagram { from: SocketAddr, bytes: Vec<u8> },
    Accepted { stream: TcpStream, peer: SocketAddr },
}

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
            reply,
        })
        .await?;
        rx.await.map_err(|_| TransportError::DriverStopped)?
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
}

/// Starts the SIP transport (see the module doc).
pub struct SipDriver {
    core: Endpoint,
    udp: Arc<UdpSocket>,
    conns: HashMap<ConnId, ConnEntry>,
    by_peer: HashMap<SocketAddr, ConnId>,
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
                per_source: options.per_source_rate,
            },
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (event_tx, event_rx) = mpsc::channel(options.event_capacity.max(1));
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (conn_tx, conn_rx) = mpsc::channel(1024);
        let mut driver = SipDriver {
            core: Endpoint::new(cfg, stats.clone()),
            udp: Arc::new(udp),
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            next_conn: 0,
            tasks: JoinSet::new(),
            inbound_tx,
            conn_tx,
            events: event_tx,
            stats: stats.clone(),
        };
        driver.spawn_socket_loops(tcp);
        tokio::spawn(driver.run(cmd_rx, inbound_rx, conn_rx));
        let handle = SipHandle {
            commands: cmd_tx,
            udp_addr,
            tcp_addr,
            stats,
        };
        Ok((handle, event_rx))
    }

    fn spawn_socket_loops(&mut self, tcp: TcpListener) {
        let udp = self.udp.clone();
        let tx = self.inbound_tx.clone();
        self.tasks.spawn(udp_recv_loop(udp, tx));
        let tx = self.inbound_tx.clone();
        self.tasks.spawn(accept_loop(tcp, tx));
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut conn_in: mpsc::Receiver<ConnInput>,
    ) {
        loop {
            let deadline = self.core.poll_timeout();
            let sleep = deadline.map(tokio::time::Instant::from_std);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                Some(i) = inbound.recv() => self.on_inbound(i),
                Some(c) = conn_in.recv() => self.on_conn(c),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                _ = sleep_until(sleep), if sleep.is_some() => {
                    self.core.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
        }
        debug!("SIP driver stopped: every handle was dropped");
    }

    fn on_command(&mut self, c: Command) {
        let now = Instant::now();
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
                let _ = reply.send(self.core.respond(now, &key, *response));
            }
        }
    }

    fn on_inbound(&mut self, i: Inbound) {
        match i {
            Inbound::Datagram { from, bytes } => {
                self.core
                    .handle_datagram(Instant::now(), from, Transport::Udp, &bytes);
            }
            Inbound::Accepted { stream, peer } => {
                let (conn, out, pong) = self.new_conn(peer);
                let tx = self.conn_tx.clone();
                self.tasks
                    .spawn(tcp::run(conn, peer, stream, out, pong, tx));
            }
        }
    }

    fn on_conn(&mut self, c: ConnInput) {
        match c {
            ConnInput::Message { conn, peer, msg } => {
                let t = Transport::Tcp(Some(conn));
                self.core.handle_message(Instant::now(), peer, t, msg);
            }
            ConnInput::Malformed {
                conn,
                peer,
                response,
            } => {
                let t = Transport::Tcp(Some(conn));
                self.core.handle_malformed(peer, t, response);
                // Write the 400 now, then drop the sender: the writer drains and closes.
                while let Some(t) = self.core.poll_transmit() {
                    self.write_tcp(t);
                }
                self.remove_conn(conn);
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

    /// Registers a connection to `peer` with its write queue; returns its
    /// id, the queue's receiver, and a sender for PONGs.
    fn new_conn(
        &mut self,
        peer: SocketAddr,
    ) -> (ConnId, mpsc::Receiver<Vec<u8>>, mpsc::Sender<Vec<u8>>) {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let (out, out_rx) = mpsc::channel(WRITE_QUEUE);
        let entry = ConnEntry {
            peer,
            out: out.clone(),
            pending: Vec::new(),
        };
        self.conns.insert(conn, entry);
        self.by_peer.insert(peer, conn);
        (conn, out_rx, out)
    }

    fn remove_conn(&mut self, conn: ConnId) -> Vec<TxKey> {
        let Some(e) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        if self.by_peer.get(&e.peer) == Some(&conn) {
            self.by_peer.remove(&e.peer);
        }
        e.pending
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
        let named = match t.transport {
            Transport::Tcp(Some(c)) if self.conns.contains_key(&c) => Some(c),
            _ => None,
        };
        let conn = named
            .or_else(|| self.by_peer.get(&t.dest).copied())
            .unwrap_or_else(|| self.connect(t.dest));
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

    /// Opens an outbound connection; bytes queue while it connects.
    fn connect(&mut self, dest: SocketAddr) -> ConnId {
        let (conn, out, pong) = self.new_conn(dest);
        let tx = self.conn_tx.clone();
        self.tasks
            .spawn(tcp::connect_and_run(conn, dest, out, pong, tx));
        conn
    }

    /// Hands an event to the TU; a new request it cannot take is answered 503.
    fn deliver(&mut self, e: Event) {
        use mpsc::error::TrySendError;
        match self.events.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(Event::Request { key, .. })) => {
                self.core.reject_overload(Instant::now(), &key);
            }
            Err(_) => TransportStats::bump(&self.stats.dropped),
        }
    }
}

async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, TransportError> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| TransportError::Bind {
            proto: "UDP",
            addr,
            source,
        })
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

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Receives datagrams (up to 65,535 bytes) and feeds the driver.
async fn udp_recv_loop(udp: Arc<UdpSocket>, tx: mpsc::Sender<Inbound>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
                if tx.send(Inbound::Datagram { from, bytes }).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable and the like surface here: keep going.
            Err(e) => debug!(error = %e, "SIP UDP receive error"),
        }
    }
}

/// Accepts TCP connections and hands them to the driver.
async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<Inbound>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
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
