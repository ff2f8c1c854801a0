//! The tokio task that drives one [`Hub`] on one UDP socket: receive → route → poll →
//! send, the hub's earliest deadline as the only timer, commands from the signalling side
//! through a channel. It never awaits anything but its socket, its timer and its commands;
//! events go out with `try_send` (a full channel drops and counts them).
//!
//! The socket is the caller's, and so is its receive buffer: size it. One socket takes
//! every participant's packets (about 110 a second each), so the kernel's default
//! (`net.core.rmem_default`, 208 KiB here) fills in about 20 ms of the worker not being
//! scheduled. Measured with `examples/visit_load` (50 visits, 100 participants, the
//! machine shared): with the default buffer 1 to 11 of 100 participants never
//! connected (their ICE and DTLS packets were dropped until str0m's client gave up) and
//! about 0.3 % of frames were lost; with `--rcvbuf 4000000` all connected and 1 frame in
//! 15,000 was lost. [`set_receive_buffer`] asks for a larger buffer; the gateway does so
//! for its visits' socket (`visits.media_receive_buffer_bytes`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::hub::{Hub, HubOutput, RoomId};
use super::{Participant, RoomConfig, RoomEvent, RoomStats, SfuError, Side, TapReceiver};
use crate::clock::{Clock, Sleep};

/// Datagrams read in one wake-up before the hub is polled.
const RECV_BATCH: usize = 64;
/// Room events the owner may fall behind by before they are dropped (and counted).
pub const EVENT_QUEUE: usize = 4_096;

/// Counters of one hub worker.
#[derive(Debug, Default)]
pub struct HubStats {
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// Datagrams no room took (garbage, stale peers).
    pub unrouted: AtomicU64,
    pub send_errors: AtomicU64,
    pub events_dropped: AtomicU64,
}

enum Command {
    Open(RoomId, RoomConfig, oneshot::Sender<bool>),
    Offer(
        RoomId,
        Participant,
        String,
        oneshot::Sender<Result<String, SfuError>>,
    ),
    Remove(RoomId, Participant),
    Tap(
        RoomId,
        Side,
        usize,
        oneshot::Sender<Result<TapReceiver, SfuError>>,
    ),
    Close(RoomId, oneshot::Sender<Option<RoomStats>>),
    Stats(RoomId, oneshot::Sender<Option<RoomStats>>),
}

/// The signalling side's handle on a hub worker. Dropping every clone stops the worker.
#[derive(Clone)]
pub struct HubHandle {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
    stats: Arc<HubStats>,
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubHandle")
            .field("local", &self.local)
            .finish()
    }
}

/// Asks the kernel for a receive buffer of `bytes` on `socket` and returns the size it
/// granted: Linux caps the request at `net.core.rmem_max` (and reports twice the
/// request, its bookkeeping included), so a deployment that wants more raises that sysctl.
pub fn set_receive_buffer(socket: &impl std::os::fd::AsRawFd, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is an open socket borrowed for the call; the option value is a c_int
    // on the stack, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&want as *const libc::c_int).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut got: libc::c_int = 0;
    let mut got_len = len;
    // SAFETY: as above; `got` and `got_len` are valid for writes of their sizes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut got_len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(got).unwrap_or(0))
}

/// Starts a hub worker on `socket` (inside a tokio runtime). Answers advertise
/// `advertised` with the socket's port; room events go to `events`.
pub fn spawn_hub(
    socket: UdpSocket,
    advertised: IpAddr,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<(RoomId, RoomEvent)>,
) -> io::Result<HubHandle> {
    let local = SocketAddr::new(advertised, socket.local_addr()?.port());
    let (commands, rx) = mpsc::channel(256);
    let stats = Arc::new(HubStats::default());
    let worker = Worker {
        hub: Hub::new(local),
        socket,
        commands: rx,
        events,
        clock,
        stats: stats.clone(),
    };
    tokio::spawn(worker.run());
    Ok(HubHandle {
        commands,
        local,
        stats,
    })
}

impl HubHandle {
    /// The address every answer of this hub advertises.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// Opens room `id`; false if it exists.
    pub async fn open_room(&self, id: RoomId, config: RoomConfig) -> Result<bool, SfuError> {
        self.ask(|r| Command::Open(id, config, r)).await
    }

    /// Answers a participant's offer in room `id`.
    pub async fn offer(
        &self,
        id: RoomId,
        who: Participant,
        sdp: String,
    ) -> Result<String, SfuError> {
        self.ask(|r| Command::Offer(id, who, sdp, r)).await?
    }

    /// Removes a participant (its peer leaves with `Left::Removed`).
    pub async fn remove(&self, id: RoomId, who: Participant) -> Result<(), SfuError> {
        let cmd = Command::Remove(id, who);
        self.commands.send(cmd).await.map_err(|_| SfuError::Stopped)
    }

    /// A recorder's tap on one side of room `id`.
    pub async fn tap(
        &self,
        id: RoomId,
        side: Side,
        capacity: usize,
    ) -> Result<TapReceiver, SfuError> {
        self.ask(|r| Command::Tap(id, side, capacity, r)).await?
    }

    /// Closes room `id`; returns its final counters.
    pub async fn close_room(&self, id: RoomId) -> Result<Option<RoomStats>, SfuError> {
        self.ask(|r| Command::Close(id, r)).await
    }

    /// Room `id`'s counters.
    pub async fn room_stats(&self, id: RoomId) -> Result<Option<RoomStats>, SfuError> {
        self.ask(|r| Command::Stats(id, r)).await
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)
    }
}

struct Worker {
    hub: Hub,
    socket: UdpSocket,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<(RoomId, RoomEvent)>,
    clock: Arc<dyn Clock>,
    stats: Arc<HubStats>,
}

impl Worker {
    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let mut out = HubOutput::default();
        let mut armed: Option<(Instant, Sleep)> = None;
        loop {
            let now = self.clock.now();
            self.hub.poll(now, &mut out);
            self.flush(&mut out).await;
            // Idle means asleep: with no peer, the timer is far away.
            let deadline = out.timeout.unwrap_or(now + Duration::from_secs(3_600));
            if armed.as_ref().map(|(at, _)| *at) != Some(deadline) {
                armed = Some((deadline, self.clock.sleep_until(deadline)));
            }
            let Some((_, sleep)) = armed.as_mut() else {
                continue;
            };
            tokio::select! {
                biased;
                c = self.commands.recv() => match c {
                    Some(c) => self.command(c),
                    None => return,
                },
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.datagram(from, buf.get(..n).unwrap_or_default());
                        self.drain_socket(&mut buf);
                    }
                    // ICMP errors surface here on some systems; the peers' own
                    // timeouts decide whether a browser is gone.
                    Err(e) => tracing::debug!(error = %e, "SFU socket receive failed"),
                },
                () = sleep => armed = None,
            }
        }
    }

    /// Reads what else is queued on the socket without waiting.
    fn drain_socket(&mut self, buf: &mut [u8]) {
        for _ in 1..RECV_BATCH {
            match self.socket.try_recv_from(buf) {
                Ok((n, from)) => self.datagram(from, buf.get(..n).unwrap_or_default()),
                Err(_) => break,
            }
        }
    }

    fn datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        if self.hub.handle_datagram(from, bytes, now).is_none() {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.clock.now();
        // A requester that stopped waiting is not an error: `send` results are ignored.
        match c {
            Command::Open(id, config, reply) => {
                let _ = reply.send(self.hub.open_room(id, config));
            }
            Command::Offer(id, who, sdp, reply) => {
                let _ = reply.send(self.hub.accept_offer(id, who, &sdp, now));
            }
            Command::Remove(id, who) => {
                let _ = self.hub.remove(id, who);
            }
            Command::Tap(id, side, capacity, reply) => {
                let _ = reply.send(self.hub.tap(id, side, capacity));
            }
            Command::Close(id, reply) => {
                let _ = reply.send(self.hub.close_room(id).map(|r| r.stats()));
            }
            Command::Stats(id, reply) => {
                let _ = reply.send(self.hub.room(id).map(|r| r.stats()));
            }
        }
    }

    async fn flush(&mut self, out: &mut HubOutput) {
        for d in out.transmits.drain(..) {
            match self.socket.send_to(&d.bytes, d.to).await {
                Ok(_) => self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::debug!(error = %e, to = %d.to, "SFU send failed");
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        for e in out.events.drain(..) {
            if self.events.try_send(e).is_err() {
                self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod receive_buffer_tests {
    use super::set_receive_buffer;

    #[test]
    fn a_receive_buffer_is_granted_and_read_back() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Well under any rmem_max: granted in full (Linux reports twice the request).
        let granted = set_receive_buffer(&socket, 64 * 1024).expect("setsockopt");
        assert!(granted >= 64 * 1024, "granted {granted}");
    }
}
