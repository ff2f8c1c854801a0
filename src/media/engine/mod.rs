//! The media socket driver: owns the RTP/RTCP sockets of every call and drives the
//! [`Relay`](super::relay::Relay) and prompt cores from worker threads.
//!
//! # API
//!
//! [`MediaEngine::start`] spawns the workers; [`MediaEngine::open_call`] gives a call task
//! its [`CallMedia`] (commands) and an `UnboundedReceiver<MediaEvent>` (digits, prompts
//! done). `CallMedia` methods never block on the network and never wait for a worker:
//! they queue a command and wake the worker. Dropping a `CallMedia` closes its sockets and
//! returns its ports to the pool; the receiver then yields `None`.
//!
//! - [`CallMedia::allocate`] binds a leg's even RTP and odd RTCP ports (from the
//!   [`PortAllocator`], FIFO so a just-freed port is reused last) on the calling thread, so
//!   a bind error or exhaustion is returned at once: [`MediaError::sip_status`] is 503.
//!   A pair another process holds is skipped (it goes to the back of the pool).
//! - [`CallMedia::set_leg`] gives a leg its offer/answer outcome. The first call picks a
//!   random SSRC, sequence and timestamp; a later one (re-INVITE) keeps the stream identity
//!   and only updates the peer and codec (unlatching if the peer address changed).
//! - [`CallMedia::play`] queues a prompt, [`CallMedia::stop`] clears the queue,
//!   [`CallMedia::ringback`] plays a generated US ringback (440+480 Hz, 2 s on, 4 s off)
//!   to A. A prompt takes precedence over ringback, which resumes after it.
//! - [`CallMedia::bridge`] forwards the parties to each other. While the gateway plays
//!   anything to a side (prompt or ringback), the other party's audio to that side is
//!   muted, and forwarding resumes by itself when the side's output runs dry.
//!
//! [`CallMedia::last_rtp`] (and [`CallMedia::rtp_silence`]) say when a leg's peer last sent
//! well-formed RTP from the negotiated or latched address, forwarded or not, in any payload
//! type (what the relay's `Leg::last_rtp` counts); never RTCP, whose receiver reports a
//! phone may keep sending with its audio path gone. The worker publishes the relay's stamp
//! with one relaxed atomic store per such packet into memory of that call alone
//! (millisecond resolution, `activity.rs`); the call task reads it to end calls whose
//! media has stopped (the `call` module doc).
//!
//! `play` and `PromptsDone` pair one to one: each `play` yields one
//! [`MediaEvent::PromptsDone`] for its side, and all of them arrive when the side's queue
//! has run empty (one `ptime` after the last frame was sent, so the audio has been heard).
//! A `play` to a side without a leg or without sockets yields it at once; a prompt missing
//! from the [`PromptSet`] is skipped; to a leg the gateway may not send to (on hold) the
//! prompt's time passes silently. [`CallMedia::stop`] cancels the ones still owed.
//!
//! Digits (RFC 4733 telephone-events) are reported as [`MediaEvent::Digit`] on both legs,
//! bridged or not: PIN entry on A happens before the bridge, and the called party presses 1
//! to accept on B before it. **Telephone-events are never forwarded between the legs**
//! ([`Relay::set_forward_events`](super::relay::Relay::set_forward_events)`(false)`), so an
//! inmate cannot drive a far-end IVR, voicemail or call-forwarding service with keypresses;
//! the key tones a handset mixes into its audio are not filtered (that needs decoding).
//!
//! # Design
//!
//! `workers` threads (default: one per core), each with its own io_uring (or epoll
//! instance), the sockets of the calls placed on it at `open_call` (the first worker
//! with fewer than 250 calls, else the one with the fewest: at light load one worker
//! carries every call and wakes once for the datagrams of all of them), its
//! own timer heap, buffers and counters. A call lives on one worker for its whole life, so
//! its [`Relay`](super::relay::Relay) is plain `&mut` state: nothing on the packet path is
//! shared between calls or threads, nothing is locked, nothing is allocated (buffers and
//! batch vectors are sized when the worker starts). Commands reach a worker over a
//! `std::sync::mpsc` channel plus an eventfd the worker watches.
//!
//! The worker loop (multishot, the default on Linux ≥ 6.1): every leg socket (RTP and
//! RTCP) has one multishot `recvmsg` armed, drawing buffers from the worker's
//! provided-buffer ring (4,096 × 2 KiB, `IORING_REGISTER_PBUF_RING`), with the socket in
//! the ring's registered-file table; the eventfd has a multishot poll. One
//! `io_uring_enter` (`SINGLE_ISSUER | DEFER_TASKRUN`) submits the previous batch's
//! forwards and waits for datagrams, a command, or the earliest prompt/ringback frame due
//! → each received datagram goes through
//! [`Relay::on_packet`](super::relay::Relay::on_packet), rewritten in place in its buffer,
//! and its forward is queued as a send from that buffer (`IORING_OP_SEND` with the
//! destination; the buffer returns to the ring on the send's completion, at once if
//! nothing is forwarded) → commands → due frames (paced at the leg's `ptime` from a
//! per-side base time so they do not drift, at most 3 frames of catch-up; every frame due
//! within 2 ms goes in the same wake-up, so calls hearing prompts at unaligned phases do
//! not wake the worker once per frame each; each frame is copied into a frame buffer of
//! the ring and queued as a send beside the forwards, so the frames of every call due in
//! one wake-up leave in one `io_uring_enter`, counted when their sends complete) → counters
//! stored to per-worker atomics (once per loop, not per packet). Under load the wait
//! batches (`min_wait_usec`, kernel ≥ 6.12): it sleeps until the first completion, then
//! gathers more until 200 µs from its start, so a busy worker wakes about once per 200 µs
//! instead of once per datagram, and an idle one answers a lone datagram at once; 200 µs
//! is the most a datagram waits in the engine for its batch (`SALLYPORT_MEDIA_BATCH_US`
//! overrides, 0 turns it off). When the buffer ring runs dry a receive ends with `ENOBUFS`:
//! the datagram stays queued on its socket and the receive is re-armed once buffers are
//! recycled (nothing is lost unless the socket's own queue overflows), counted in
//! [`MediaStats::rx_no_buffers`]. A re-arm is a submission and a socket lookup, about a
//! microsecond, so the pool is sized for a worker past its capacity, whose wait finds
//! every socket holding datagrams (`SALLYPORT_MEDIA_RX_BUFFERS` overrides). A wake-up
//! that reaps more than 256 forwards sends each 256 at once rather than all at the end. A closed socket
//! stays open in the kernel while its receive is armed, so its port pair returns to the
//! pool only after the receive's final completion (after a cancel). With
//! `DEFER_TASKRUN` completions appear only inside the worker's own wait, so nothing
//! changes behind its back between two waits.
//!
//! Where that ring cannot be set up (kernel before 6.1) or `SALLYPORT_MEDIA_NO_MULTISHOT`
//! is set: `epoll_wait` (level-triggered; timeout = the next frame due, rounded up to
//! 1 ms) → one datagram from **each** ready socket, all received with one `io_uring_enter`
//! (`RecvMsg` with `MSG_DONTWAIT`, up to 64 per call) → relay → the forwards of the whole
//! batch sent with one more `io_uring_enter`; that ring is used synchronously (every
//! batch's completions are reaped before its buffers are touched again). Where io_uring is
//! unavailable (seccomp in some containers, old kernels) or `SALLYPORT_MEDIA_NO_URING` is
//! set, the same epoll loop does one `recvmsg` and one `sendmsg` per datagram. Prompt and
//! ringback frames follow the path: gathered and sent with one `io_uring_enter` at the
//! end of the loop on the epoll + io_uring path, one `sendto` each without io_uring.
//!
//! Past its capacity the engine sheds instead of queueing (issue 15). The queue a
//! worker that falls behind builds is in the kernel's socket receive buffers (at the
//! default ~200 KiB per socket, seconds of one leg's audio), out of the engine's sight;
//! so each RTP socket asks the kernel to stamp every datagram's arrival (`SO_TIMESTAMPNS`,
//! a control message with the datagram on all three receive paths: in the multishot
//! buffer after the source address, in the `msghdr` of `recvmsg` and of io_uring's
//! `RecvMsg`), the worker reads the wall clock once per wake-up and again every 64
//! completions of a large one (the stamps' clock, `CLOCK_REALTIME`; `Instant` stays the
//! pacing clock), and a packet the relay would
//! forward that has waited longer than [`EngineConfig::max_queue`] is dropped before its
//! send and any tap, counted in [`MediaStats::dropped_late`]. It still passes through the
//! relay (latching, signs of life, digits). Dropping it saves its send, the larger half of
//! a relayed packet's cost, so a worker past its limit relays fewer packets and catches
//! up instead of serving an ever older queue. Telephone-events and RTCP are never
//! forwarded, so never dropped for age. Why the kernel's stamp and not a queue of our
//! own: the engine's own queue is a batch (at most one window, 200 µs); the wait that
//! grows is before the engine sees the packet, and only the kernel knows when it began.
//! As a backstop where stamps are missing (a datagram that arrived before the kernel
//! turned stamping on is stamped when read, and so never looks late), the RTP socket's
//! receive buffer is set to 2 KiB (4 KiB as the kernel counts it: 4 datagrams of 172
//! bytes on loopback, 80 ms of 20 ms G.711, where the default holds 256, 5 s). A short
//! socket queue matters beyond the backstop: past its capacity a worker visits each
//! socket less often than packets arrive, the kernel drops at the tail of a full queue,
//! and every late packet at its head costs the worker a receive before a fresh one is
//! reached; the shorter the queue, the fewer such receives. What the kernel drops at a
//! full queue is counted too ([`MediaStats::dropped_queue_full`]): the socket also asks
//! for `SO_RXQ_OVFL`, the kernel's running drop count that comes with each datagram, and
//! the worker adds the difference per socket. With `max_queue` zero none of this is set
//! up.
//!
//! Why this, measured (`examples/rtp_load.rs`, `bench/README.md`): with one socket per
//! leg a socket rarely holds two datagrams, so `recvmmsg`/`sendmmsg` on one socket batch
//! nothing; the system calls that can be shared are the ones *across* calls, which
//! io_uring batches, and the cost that dominates after that is the worker's wake-ups.
//! At 1,000 bridged calls (100,000 packets/s each way, no loss) on the 2-vCPU development
//! VM the engine spends ≈ 5.2 µs of CPU per relayed packet (median of quiet runs,
//! 4.7–6.0 µs; the epoll + io_uring loop it replaces: ≈ 7.2 µs, higher in 11 of 12
//! alternated pairs), so the 5 µs target is met only in the better runs; the window, not
//! multishot by itself, is what saves CPU (multishot without it: ≈ 7.0 µs). The window
//! engages only after a wake-up that received 8 datagrams or more (from about 500 calls
//! on two workers), so at light load every datagram is relayed at once. The per-leg socket stays because the
//! SDP contract gives each leg its own port pair (RTCP on the odd one) and a third
//! party's packets then land on one call only, where the latch check drops them. What
//! limits the figure is the kernel's UDP path, not this code: the relay core costs ~50 ns
//! per packet, while one loopback `sendto` + `recv` on a hot socket costs ~4 µs here
//! (`benches/relay.rs`, `udp_loopback`), and each relayed packet needs one of each, on
//! cold sockets (4,000 of them at 1,000 calls); on loopback a send also pays for waking the
//! receiving peer (~10 % of engine time in the profile). Below that, only a shared socket
//! per worker demultiplexed by source would help, which gives up the per-leg port.
//!
//! Connected twins (multishot only): once a leg has sockets and a peer, its RTP port gets
//! a second socket, connected to the peer (`LegSockets::twin`, `sys::connected_twin`).
//! The kernel hands a datagram to the socket that matches it best, so the peer's arrive
//! on the twin and everyone else's still on the leg's own socket, where the latch check
//! drops and counts them as before. Forwards to the peer leave from the twin without a
//! destination: no route lookup and no address copy per packet, about a tenth of a
//! relayed packet's CPU at 1,000 calls (`bench/README.md`, "Connected twins"). The port
//! is shared (`SO_REUSEPORT`) only while the twin binds; then neither socket lets
//! another join it. A re-INVITE that moves the peer re-points the twin (`connect` again).
//! A leg whose twin cannot be made sends unconnected, as the epoll paths do.
//!
mod activity;
mod call;
mod sys;
/// Also what the SIP transport sizes its UDP socket's receive queue with.
pub(crate) use sys::set_receive_buffer;
mod tap;
mod worker;

pub use tap::{RtpFields, Tap, TapPacket, TapSink, TAP_PAYLOAD_MAX};

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::ports::{PortAllocator, PortError, PortPair};
use super::prompts::{PromptId, PromptSet};
use super::relay::{LatchPolicy, Side};
use super::sdp::NegotiatedMedia;
use activity::RtpActivity;
use worker::{Command, Worker, WorkerStats};

/// Where and how the media workers run.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Lowest port of the RTP range (`[rtp] port_min`).
    pub port_min: u16,
    /// Highest port of the RTP range (`[rtp] port_max`).
    pub port_max: u16,
    /// Where sockets bind (e.g. `0.0.0.0` or `127.0.0.1`).
    pub bind_ip: IpAddr,
    /// What goes into SDP (the address peers send to).
    pub advertised_ip: IpAddr,
    /// Media worker threads; 0 = available parallelism.
    pub workers: usize,
    /// The longest a received packet may wait (in the kernel's socket queue and the
    /// worker's batch) and still be forwarded (`[rtp] max_queue_ms`); an older one is
    /// dropped and counted (`MediaStats::dropped_late`). Zero: never dropped for age (and
    /// the sockets keep the kernel's default receive buffer). See the module doc.
    pub max_queue: Duration,
}

/// `[rtp] max_queue_ms` by default: see [`EngineConfig::max_queue`] and the module doc.
pub const DEFAULT_MAX_QUEUE: Duration = Duration::from_millis(40);

/// Receive buffer of an RTP socket when packets have a bound on their wait
/// (`SO_RCVBUF`; the kernel doubles it): a backstop for where arrival stamps are missing,
/// holding 4 small datagrams (80 ms of one leg's 20 ms audio) instead of the default's
/// 256 (5 s). Measured at 2,000 calls on one worker (`bench/README.md`, "Shedding"): the
/// smaller the queue, the more of what the engine reads is still fresh (8 KiB: 19,000–
/// 27,000 packets/s relayed; 2 KiB: 30,000–40,000; the kernel's least: 32,000–50,000).
const RTP_RCVBUF: usize = 2 * 1024;
/// Overrides [`RTP_RCVBUF`] in bytes (tuning and benchmarks).
pub const RCVBUF_ENV: &str = "SALLYPORT_MEDIA_RCVBUF";
/// Calls a worker takes before the next worker is given any (see `place`): a fifth of
/// what one worker relays on a full core before it sheds (1,250–1,500 calls,
/// `bench/README.md`), so a packed worker has room for a stall. Not more: a packed worker
/// is one thread's share of a loaded host (500 calls on one worker at load 12–14 shed
/// 31–48 % where two workers shed 14–22 %, `bench/README.md`, "Where a
/// relayed packet's CPU goes"); from 500 calls on two workers the calls are spread as
/// before.
const PACK_CALLS: usize = 250;
/// Overrides [`PACK_CALLS`] (tuning and benchmarks; 1 spreads calls evenly, the fewest first).
pub const PACK_ENV: &str = "SALLYPORT_MEDIA_PACK_CALLS";

/// What the call task hears from its media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A DTMF key press detected (RFC 4733) on a leg.
    Digit {
        /// The leg it was pressed on.
        side: Side,
        /// `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
    },
    /// The side's prompt queue ran empty after a `play` (one per `play`; see the module doc).
    PromptsDone {
        /// The side the prompts played to.
        side: Side,
    },
}

/// Why media could not be set up. Every case is the gateway's: a call answers 503.
#[derive(Debug, Error)]
pub enum MediaError {
    /// Every RTP port pair of the range is in use.
    #[error("all RTP ports are in use")]
    PortsExhausted,
    /// A port of the range could not be bound (another process holds it, bad address).
    #[error("cannot bind media port {port}: {source}")]
    Bind {
        /// The port that failed.
        port: u16,
        /// The bind error.
        #[source]
        source: io::Error,
    },
    /// The worker that owns this call is gone (it panicked or the engine shut down).
    #[error("media worker stopped")]
    WorkerStopped,
    /// The configured port range holds no RTP/RTCP pair (at start).
    #[error(transparent)]
    Range(#[from] PortError),
    /// A worker could not be started (epoll, eventfd or thread creation failed).
    #[error("cannot start media worker: {0}")]
    Start(#[source] io::Error),
}

impl MediaError {
    /// The SIP status a call set-up answers with.
    pub fn sip_status(&self) -> u16 {
        503
    }
}

/// A snapshot of the engine's counters for `/metrics` (sums over workers and calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Worker threads.
    pub workers: u64,
    /// Calls open (a `CallMedia` alive).
    pub calls: u64,
    /// Legs with bound sockets.
    pub legs: u64,
    /// RTP/RTCP port pairs in use (including pairs of calls closing right now).
    pub port_pairs_in_use: u64,
    /// RTP/RTCP port pairs in the range.
    pub port_pairs_total: u64,
    /// Allocations refused because every pair was in use (the call was answered 503).
    pub port_exhausted: u64,
    /// Datagrams received (RTP and RTCP, from anyone).
    pub received: u64,
    /// Packets relayed to the other leg (accepted by the kernel).
    pub relayed: u64,
    /// Valid packets kept: not bridged, muted, telephone-events, RTCP.
    pub consumed: u64,
    /// Dropped: not from the negotiated/latched peer.
    pub dropped_wrong_source: u64,
    /// Dropped: not valid RTP/RTCP (or truncated).
    pub dropped_malformed: u64,
    /// Dropped: a payload type not negotiated on the leg.
    pub dropped_payload_type: u64,
    /// Dropped: the side has no negotiated leg yet.
    pub dropped_no_leg: u64,
    /// Dropped on the way out: send failed (full socket buffer) or the far leg has no socket.
    pub dropped_send: u64,
    /// Not forwarded: the packet had waited longer than [`EngineConfig::max_queue`] when
    /// its worker read it (the engine was behind).
    pub dropped_late: u64,
    /// Dropped by the kernel: an RTP socket's receive queue was full (the engine was
    /// behind; counted when the socket next delivers a packet).
    pub dropped_queue_full: u64,
    /// RTCP packets received (terminated here).
    pub rtcp_received: u64,
    /// Prompt frames sent.
    pub prompt_frames: u64,
    /// Ringback frames sent.
    pub ringback_frames: u64,
    /// Key presses detected.
    pub digits: u64,
    /// Packets a tap (recorder, live listener) could not take because it was behind.
    pub tap_dropped: u64,
    /// Times a worker came back from waiting: with no calls, none.
    pub wakeups: u64,
    /// Times a worker's receive found its pool of receive buffers empty (the datagram
    /// waited on its socket and the receive was re-armed): the worker was past its
    /// capacity.
    pub rx_no_buffers: u64,
}

/// The port pool and the pairs on their way back to it.
#[derive(Debug)]
struct Ports {
    alloc: PortAllocator,
    /// Pairs a worker has been told to release but has not yet (their sockets close
    /// first, so a new bind of the same port cannot fail).
    closing: usize,
    /// Allocations refused because every pair was in use (calls answered 503).
    exhausted: u64,
}

/// State shared by the API side and the workers (touched at call set-up and end only).
#[derive(Debug)]
pub(crate) struct Shared {
    ports: Mutex<Ports>,
    released: Condvar,
}

/// How long `allocate` waits for pairs of just-dropped calls when the pool is empty.
const RELEASE_WAIT: Duration = Duration::from_millis(100);
/// Pairs tried when binding fails before giving up.
const BIND_ATTEMPTS: usize = 4;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns a pair whose sockets are closed; wakes an `allocate` waiting for one.
    pub(crate) fn release(&self, pair: PortPair, closing: bool) {
        let mut p = self.lock();
        let _ = p.alloc.release(pair);
        if closing {
            p.closing = p.closing.saturating_sub(1);
        }
        drop(p);
        self.released.notify_all();
    }

    fn allocate(&self) -> Result<PortPair, MediaError> {
        let deadline = Instant::now() + RELEASE_WAIT; // clock-ok: a real wait for ports
        let mut p = self.lock();
        loop {
            match p.alloc.allocate() {
                Ok(pair) => return Ok(pair),
                Err(_) if p.closing == 0 => {
                    p.exhausted += 1;
                    return Err(MediaError::PortsExhausted);
                }
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now()); // clock-ok
                    if left.is_zero() {
                        p.exhausted += 1;
                        return Err(MediaError::PortsExhausted);
                    }
                    p = match self.released.wait_timeout(p, left) {
                        Ok((g, _)) => g,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
            }
        }
    }

    fn expect_release(&self, pairs: usize) {
        self.lock().closing += pairs;
    }

    fn cancel_release(&self, pairs: usize) {
        let mut p = self.lock();
        p.closing = p.closing.saturating_sub(pairs);
    }
}

/// One worker as the API side sees it.
struct WorkerHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<sys::Waker>,
    stats: Arc<WorkerStats>,
    /// Calls placed on this worker whose `CallMedia` is alive (placement: [`place`]).
    open: AtomicUsize,
}

impl WorkerHandle {
    fn send(&self, command: Command) -> Result<(), MediaError> {
        self.tx
            .send(command)
            .map_err(|_| MediaError::WorkerStopped)?;
        self.waker.wake();
        Ok(())
    }
}

struct Inner {
    cfg: EngineConfig,
    workers: Vec<WorkerHandle>,
    shared: Arc<Shared>,
    /// Calls a worker takes before the next one is given any ([`place`]).
    pack: usize,
    next_call: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No CallMedia is left (each holds the Arc): stop the workers and wait for them.
        for w in &self.workers {
            let _ = w.send(Command::Shutdown);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The media engine: cheap to clone, shared by every call task.
#[derive(Clone)]
pub struct MediaEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("cfg", &self.inner.cfg)
            .field("workers", &self.inner.workers.len())
            .finish()
    }
}

impl MediaEngine {
    /// Starts the workers. Fails on an empty port range or if a worker cannot start.
    pub fn start(cfg: EngineConfig, prompts: Arc<PromptSet>) -> Result<MediaEngine, MediaError> {
        Self::start_with(cfg, prompts, worker::RX_BUFFERS, worker::RxPath::Best)
    }

    /// [`MediaEngine::start`] with `rx_buffers` provided buffers per multishot worker.
    fn start_with(
        cfg: EngineConfig,
        prompts: Arc<PromptSet>,
        rx_buffers: u16,
        path: worker::RxPath,
    ) -> Result<MediaEngine, MediaError> {
        let alloc = PortAllocator::new(cfg.port_min, cfg.port_max)?;
        let shared = Arc::new(Shared {
            ports: Mutex::new(Ports {
                alloc,
                closing: 0,
                exhausted: 0,
            }),
            released: Condvar::new(),
        });
        let n = match cfg.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let ringback = Arc::new(call::ringback_prompt());
        let mut workers: Vec<WorkerHandle> = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let stop_started = |workers: &[WorkerHandle], e: io::Error| {
            for w in workers {
                let _ = w.send(Command::Shutdown);
            }
            MediaError::Start(e)
        };
        for i in 0..n {
            let (tx, rx) = mpsc::channel();
            let waker = Arc::new(sys::Waker::new().map_err(|e| stop_started(&workers, e))?);
            let stats = Arc::new(WorkerStats::default());
            let worker = Worker::new(
                rx,
                Arc::clone(&waker),
                Arc::clone(&stats),
                Arc::clone(&shared),
                Arc::clone(&prompts),
                Arc::clone(&ringback),
            )
            .map_err(|e| stop_started(&workers, e))?
            .with_rx_buffers(rx_buffers)
            .with_path(path)
            .with_max_queue(cfg.max_queue);
            let t = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| stop_started(&workers, e))?;
            workers.push(WorkerHandle {
                tx,
                waker,
                stats,
                open: AtomicUsize::new(0),
            });
            threads.push(t);
        }
        Ok(MediaEngine {
            inner: Arc::new(Inner {
                cfg,
                workers,
                shared,
                pack: tuning(PACK_ENV).unwrap_or(PACK_CALLS),
                next_call: AtomicU64::new(1),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// A new call's media; events (digits, prompts done) arrive on the receiver.
    pub fn open_call(&self) -> (CallMedia, UnboundedReceiver<MediaEvent>) {
        let (events, rx) = unbounded_channel();
        let id = self.inner.next_call.fetch_add(1, Ordering::Relaxed);
        let worker = place(&self.inner.workers, self.inner.pack);
        if let Some(w) = self.inner.workers.get(worker) {
            w.open.fetch_add(1, Ordering::Relaxed);
        }
        // clock-ok: the stamps are the workers' real receive times (`activity`).
        let activity = Arc::new(RtpActivity::new(Instant::now()));
        let call = CallMedia {
            id,
            worker,
            inner: Arc::clone(&self.inner),
            pairs: [None, None],
            activity: Arc::clone(&activity),
        };
        // If the worker is gone, `events` drops with the command and the receiver closes.
        let _ = call.send(Command::Open {
            call: id,
            events,
            activity,
        });
        (call, rx)
    }

    /// A snapshot of the counters for `/metrics`.
    pub fn stats(&self) -> MediaStats {
        let mut s = MediaStats {
            workers: self.inner.workers.len() as u64,
            ..MediaStats::default()
        };
        for w in &self.inner.workers {
            w.stats.add_to(&mut s);
        }
        let p = self.inner.shared.lock();
        s.port_pairs_total = p.alloc.capacity() as u64;
        s.port_pairs_in_use = (p.alloc.capacity() - p.alloc.available()) as u64;
        s.port_exhausted = p.exhausted;
        s
    }
}

#[cfg(test)]
impl MediaEngine {
    /// Workers running the multishot loop, and how often their receives ran out of buffers.
    fn multishot_stats(&self) -> (usize, u64) {
        let w = &self.inner.workers;
        let on = w
            .iter()
            .filter(|w| w.stats.multishot.load(Ordering::Relaxed));
        let dry = w
            .iter()
            .map(|w| w.stats.rx_no_buffers.load(Ordering::Relaxed));
        (on.count(), dry.sum())
    }

    /// Stops every worker, as if starved of CPU, once each has finished what it was doing;
    /// they go on when the returned senders are dropped.
    fn stall(&self) -> Vec<mpsc::Sender<()>> {
        let (stalled, acks) = mpsc::channel();
        let resume: Vec<mpsc::Sender<()>> = self
            .inner
            .workers
            .iter()
            .map(|w| {
                let (tx, resume) = mpsc::channel();
                let stalled = stalled.clone();
                w.send(Command::Stall { stalled, resume }).unwrap();
                tx
            })
            .collect();
        for _ in &resume {
            acks.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        resume
    }
}

/// One call's media, owned by the call's task. Dropping it closes the call's sockets and
/// releases its ports.
pub struct CallMedia {
    id: u64,
    worker: usize,
    inner: Arc<Inner>,
    /// The pairs the worker holds sockets for, per side (released by the worker).
    pairs: [Option<PortPair>; 2],
    /// When each leg last sent valid RTP (stamped by the worker, read here).
    activity: Arc<RtpActivity>,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("id", &self.id)
            .field("worker", &self.worker)
            .field("pairs", &self.pairs)
            .finish()
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl CallMedia {
    fn send(&self, command: Command) -> Result<(), MediaError> {
        self.inner
            .workers
            .get(self.worker)
            .ok_or(MediaError::WorkerStopped)?
            .send(command)
    }

    /// Binds this leg's RTP (even) and RTCP (odd) sockets from the range; returns the
    /// advertised RTP address for our SDP. Called again for the same side, it replaces
    /// the leg's sockets (the old pair is released).
    pub fn allocate(&mut self, side: Side) -> Result<SocketAddr, MediaError> {
        let shared = &self.inner.shared;
        let mut last_err = None;
        for _ in 0..BIND_ATTEMPTS {
            let pair = shared.allocate()?;
            match bind_pair(self.inner.cfg.bind_ip, pair, self.inner.cfg.max_queue) {
                Ok((rtp, rtcp)) => return self.install(side, pair, rtp, rtcp),
                Err(e) => {
                    // Back of the FIFO: tried again only after every other pair.
                    shared.release(pair, false);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or(MediaError::PortsExhausted))
    }

    fn install(
        &mut self,
        side: Side,
        pair: PortPair,
        rtp: UdpSocket,
        rtcp: UdpSocket,
    ) -> Result<SocketAddr, MediaError> {
        let shared = Arc::clone(&self.inner.shared);
        let replaced = self.pairs[index(side)].is_some();
        if replaced {
            shared.expect_release(1);
        }
        let command = Command::Sockets {
            call: self.id,
            side,
            sockets: call::LegSockets {
                rtp,
                rtcp,
                pair,
                rx: [None, None, None],
                twin: None,
                kernel_drops: 0,
            },
        };
        if let Err(e) = self.send(command) {
            // The sockets dropped with the command; nobody else will release the pair.
            if replaced {
                shared.cancel_release(1);
            }
            shared.release(pair, false);
            return Err(e);
        }
        self.pairs[index(side)] = Some(pair);
        Ok(SocketAddr::new(self.inner.cfg.advertised_ip, pair.rtp()))
    }

    /// The leg's offer/answer outcome (random SSRC/seq/ts chosen inside). May be called
    /// again (re-INVITE) to update the peer and codec; the stream identity is kept.
    pub fn set_leg(&mut self, side: Side, media: NegotiatedMedia, latch: LatchPolicy) {
        let _ = self.send(Command::SetLeg {
            call: self.id,
            side,
            media,
            latch,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
        });
    }

    /// Queues a prompt for a side (played in that side's codec and ptime). While prompts
    /// play to a side, the other party's audio to that side is muted; forwarding resumes
    /// after.
    pub fn play(&mut self, side: Side, prompt: PromptId) {
        let _ = self.send(Command::Play {
            call: self.id,
            side,
            prompt,
        });
    }

    /// Stops the current prompt and clears the side's queue (no `PromptsDone` for it).
    pub fn stop(&mut self, side: Side) {
        let _ = self.send(Command::Stop {
            call: self.id,
            side,
        });
    }

    /// Ringback tone (US: 440+480 Hz, 2 s on / 4 s off, generated) to side A while `on`.
    pub fn ringback(&mut self, on: bool) {
        let _ = self.send(Command::Ringback { call: self.id, on });
    }

    /// Forwards media between the legs (both directions) or not.
    pub fn bridge(&mut self, on: bool) {
        let _ = self.send(Command::Bridge { call: self.id, on });
    }

    /// Attaches a consumer of everything the call sends to its legs from now on (see
    /// [`Tap`]); it stays until removed, the call closes, or its receiver is dropped.
    pub fn add_tap(&self, tap: Tap) -> Result<(), MediaError> {
        self.send(Command::Tap { call: self.id, tap })
    }

    /// Detaches the tap attached with `key`.
    pub fn remove_tap(&self, key: u64) {
        let _ = self.send(Command::Untap { call: self.id, key });
    }

    /// The engine's id for this call (for logs; unique per engine).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When the last valid RTP packet from `side`'s peer arrived, on the media workers'
    /// clock (the real one); `None` before the first. RTCP does not count (see the module
    /// doc). A lock-free read of what the worker stamped: cheap enough for every timeout.
    pub fn last_rtp(&self, side: Side) -> Option<Instant> {
        self.activity.last(side)
    }

    /// How long `side`'s peer has sent no valid RTP, by the media workers' clock; `None`
    /// before its first packet.
    pub fn rtp_silence(&self, side: Side) -> Option<Duration> {
        let last = self.last_rtp(side)?;
        Some(Instant::now().saturating_duration_since(last)) // clock-ok: the media clock
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        if let Some(w) = self.inner.workers.get(self.worker) {
            w.open.fetch_sub(1, Ordering::Relaxed);
        }
        let shared = Arc::clone(&self.inner.shared);
        shared.expect_release(self.pairs.iter().flatten().count());
        if self.send(Command::Close { call: self.id }).is_err() {
            // The worker is gone and its sockets with it: release here.
            for pair in self.pairs.iter().flatten() {
                shared.release(*pair, true);
            }
        }
    }
}

/// Binds a leg's RTP and RTCP sockets. With a bound on the wait (`max_queue`), the RTP
/// socket asks for arrival stamps and gets a small receive buffer (see the module doc);
/// RTCP is never dropped for age and keeps the defaults.
fn bind_pair(
    ip: IpAddr,
    pair: PortPair,
    max_queue: Duration,
) -> Result<(UdpSocket, UdpSocket), MediaError> {
    let bind = |port: u16| {
        let s = UdpSocket::bind(SocketAddr::new(ip, port))
            .map_err(|source| MediaError::Bind { port, source })?;
        s.set_nonblocking(true)
            .map_err(|source| MediaError::Bind { port, source })?;
        Ok::<_, MediaError>(s)
    };
    let rtp = bind(pair.rtp())?;
    use std::os::fd::AsRawFd;
    rtp_options(rtp.as_raw_fd(), max_queue).map_err(|source| MediaError::Bind {
        port: pair.rtp(),
        source,
    })?;
    Ok((rtp, bind(pair.rtcp())?))
}

/// What an RTP socket needs when packets have a bound on their wait (`max_queue`, not
/// zero): arrival stamps, drop counts and the short receive queue ([`RTP_RCVBUF`]).
/// Nothing without a bound.
pub(super) fn rtp_options(fd: std::os::fd::RawFd, max_queue: Duration) -> io::Result<()> {
    if max_queue.is_zero() {
        return Ok(());
    }
    sys::enable_arrival_stamps(fd)?;
    sys::enable_drop_counts(fd)?;
    sys::set_receive_buffer(fd, tuning(RCVBUF_ENV).unwrap_or(RTP_RCVBUF))
}

/// The worker a new call goes to: the first one holding fewer than `pack` calls, so that
/// at light load the calls share one worker and its wake-ups (each wake-up relays the
/// datagrams of every call that arrived meanwhile: the fewer workers are awake, the more
/// datagrams a wake-up carries, and the fewer wake-ups a packet costs); when every worker
/// holds `pack` or more, the one with the fewest. A call stays on its worker for its
/// whole life; a worker whose calls ended is filled first again. Two calls opened at the
/// same moment may both see room on the same worker: it then holds one more than `pack`.
fn place(workers: &[WorkerHandle], pack: usize) -> usize {
    let mut fewest = (usize::MAX, 0);
    for (i, w) in workers.iter().enumerate() {
        let open = w.open.load(Ordering::Relaxed);
        if open < pack {
            return i;
        }
        fewest = fewest.min((open, i));
    }
    fewest.1
}

/// A tuning override from the environment (benchmarks), if set and parseable; an unset
/// or malformed value leaves the built-in default.
pub(super) fn tuning<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Sends unbounded events to a call task from a worker thread.
pub(crate) type Events = UnboundedSender<MediaEvent>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::CodecName;
    use std::path::Path;

    /// Test ranges sit below the kernel's ephemeral ports (32768–60999 by default): the
    /// tests' own 400 peer sockets, bound to port 0, would otherwise land in them.
    fn engine(port_min: u16, port_max: u16, rx_buffers: u16) -> MediaEngine {
        engine_with(port_min, port_max, rx_buffers, DEFAULT_MAX_QUEUE)
    }

    fn engine_with(
        port_min: u16,
        port_max: u16,
        rx_buffers: u16,
        max_queue: Duration,
    ) -> MediaEngine {
        engine_on(
            port_min,
            port_max,
            rx_buffers,
            max_queue,
            worker::RxPath::Best,
        )
    }

    fn engine_on(
        port_min: u16,
        port_max: u16,
        rx_buffers: u16,
        max_queue: Duration,
        path: worker::RxPath,
    ) -> MediaEngine {
        let cfg = EngineConfig {
            port_min,
            port_max,
            bind_ip: "127.0.0.1".parse().unwrap(),
            advertised_ip: "127.0.0.1".parse().unwrap(),
            workers: 1,
            max_queue,
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts");
        let prompts = Arc::new(PromptSet::load_dir(&dir).unwrap());
        MediaEngine::start_with(cfg, prompts, rx_buffers, path).unwrap()
    }

    fn media(peer: &UdpSocket) -> NegotiatedMedia {
        let remote = peer.local_addr().unwrap();
        NegotiatedMedia {
            dtmf_pt: None,
            ..NegotiatedMedia::plain(remote, CodecName::Pcmu)
        }
    }

    fn rtp(seq: u16, ssrc: u32) -> [u8; 172] {
        let mut p = [0xffu8; 172];
        p[..12].fill(0);
        p[0] = 0x80;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    /// `calls` bridged calls on one worker; every peer sends `rounds` packets in bursts
    /// (all calls at once). Every packet must arrive at the far peer, in order.
    fn relay_bursts(engine: &MediaEngine, calls: usize, rounds: u16) -> MediaStats {
        let mut all = Vec::new();
        for _ in 0..calls {
            let (mut m, _events) = engine.open_call();
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let gw_a = m.allocate(Side::A).unwrap();
            let gw_b = m.allocate(Side::B).unwrap();
            m.set_leg(Side::A, media(&a), LatchPolicy::Exact);
            m.set_leg(Side::B, media(&b), LatchPolicy::Exact);
            m.bridge(true);
            all.push((m, a, b, gw_a, gw_b));
        }
        std::thread::sleep(Duration::from_millis(100));
        for seq in 0..rounds {
            for (_, a, b, gw_a, gw_b) in &all {
                a.send_to(&rtp(seq, 1), gw_a).unwrap();
                b.send_to(&rtp(seq, 2), gw_b).unwrap();
            }
        }
        for (_, a, b, ..) in &all {
            for peer in [a, b] {
                peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut last = None;
                for _ in 0..rounds {
                    let mut buf = [0u8; 256];
                    let n = peer.recv(&mut buf).unwrap_or_else(|e| {
                        panic!("every packet is relayed: {e} {:?}", engine.stats())
                    });
                    assert_eq!(n, 172);
                    let seq = u16::from_be_bytes([buf[2], buf[3]]);
                    assert!(
                        last.is_none_or(|l: u16| seq == l.wrapping_add(1)),
                        "in order"
                    );
                    last = Some(seq);
                }
            }
        }
        let total = 2 * calls as u64 * u64::from(rounds);
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.stats().relayed < total && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        engine.stats()
    }

    /// With no bound on the wait (`max_queue` 0: these bursts of 2,000 datagrams at once
    /// are an overload, and on a busy machine their tail waits longer than the default
    /// bound; shedding is tested below).
    #[test]
    fn many_calls_on_one_worker_relay_every_packet() {
        let engine = engine_with(30000, 30999, worker::RX_BUFFERS, Duration::ZERO);
        let s = relay_bursts(&engine, 200, 5);
        assert_eq!(
            (s.received, s.relayed, s.dropped_send),
            (2000, 2000, 0),
            "{s:?}"
        );
    }

    /// Wake-ups of the engine's workers over `pause` (counted, not timed: the pause only
    /// gives a spinning worker time to show).
    fn wakeups_over(engine: &MediaEngine, pause: Duration) -> u64 {
        let before = engine.stats().wakeups;
        std::thread::sleep(pause);
        engine.stats().wakeups - before
    }

    /// Issue 15: with no call an engine sleeps. Before, a batching worker's wait ended
    /// every 200 µs (the kernel ends a wait with a minimum and no timeout when the minimum
    /// expires), about 4,000 wake-ups a second per worker. A lone datagram after the idle
    /// spell is still relayed, and after the call the engine sleeps again.
    #[test]
    fn an_idle_engine_does_not_wake() {
        let engine = engine(32000, 32099, worker::RX_BUFFERS);
        // The worker has started and waits.
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.stats().wakeups == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let (m, _events) = engine.open_call();
            drop(m);
        }
        std::thread::sleep(Duration::from_millis(50));
        let idle = wakeups_over(&engine, Duration::from_millis(500));
        assert!(idle <= 1, "{idle} wake-ups in 500 ms with no call");
        let s = relay_bursts(&engine, 1, 1);
        assert_eq!((s.received, s.relayed), (2, 2), "{s:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.stats().legs > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        let after = wakeups_over(&engine, Duration::from_millis(500));
        assert!(after <= 1, "{after} wake-ups in 500 ms after the call");
    }

    type Bridged = (CallMedia, UdpSocket, UdpSocket, SocketAddr, SocketAddr);

    /// `calls` bridged calls, each with its two peers and the gateway's addresses for them.
    fn bridged(engine: &MediaEngine, calls: usize) -> Vec<Bridged> {
        let mut all = Vec::new();
        for _ in 0..calls {
            let (mut m, _events) = engine.open_call();
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let gw_a = m.allocate(Side::A).unwrap();
            let gw_b = m.allocate(Side::B).unwrap();
            m.set_leg(Side::A, media(&a), LatchPolicy::Exact);
            m.set_leg(Side::B, media(&b), LatchPolicy::Exact);
            m.bridge(true);
            all.push((m, a, b, gw_a, gw_b));
        }
        all
    }

    fn send_round(all: &[Bridged], seq: u16) {
        for (_, a, b, gw_a, gw_b) in all {
            a.send_to(&marked(seq, 1), gw_a).unwrap();
            b.send_to(&marked(seq, 2), gw_b).unwrap();
        }
    }

    /// A packet whose payload says which round it is (the relay rewrites the header).
    fn marked(round: u16, ssrc: u32) -> [u8; 172] {
        let mut p = rtp(round, ssrc);
        p[12..14].copy_from_slice(&round.to_be_bytes());
        p
    }

    /// The counters once the worker has read `received` datagrams in all and settled
    /// each (relayed, or dropped for any reason: a send is counted when it completes).
    fn stats_after(engine: &MediaEngine, received: u64) -> MediaStats {
        let settled = |s: &MediaStats| {
            let done = s.relayed + s.consumed + s.dropped_send + s.dropped_late;
            s.received >= received && done >= received
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !settled(&engine.stats()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        engine.stats()
    }

    /// Every peer gets exactly the packet `seq` (fresh traffic after the backlog).
    fn each_peer_gets(all: &[Bridged], seq: u16) {
        for (_, a, b, ..) in all {
            for peer in [a, b] {
                peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 512];
                // Skips strays: another process on the machine may send to a port the
                // kernel gave one of these peers a moment after it freed it.
                while peer.recv(&mut buf).expect("fresh packets are relayed") != 172 {}
                assert_eq!(u16::from_be_bytes([buf[12], buf[13]]), seq, "nothing older");
            }
        }
    }

    /// Issue 15: an engine that falls behind (here: its worker stalled while 3 packets per
    /// leg arrive, then the stall outlasts the 100 ms bound) drops what waited too long,
    /// counted as `dropped_late`, instead of relaying seconds-old audio; packets that
    /// arrive after it has caught up are relayed. Counted, not timed: the stall is longer
    /// than the bound by construction, however slow the machine. On each receive path.
    #[test]
    fn an_engine_that_falls_behind_drops_old_packets() {
        for (ports, path) in [
            (32100, worker::RxPath::Best),
            (32500, worker::RxPath::EpollRing),
            (32600, worker::RxPath::Plain),
        ] {
            falls_behind(ports, path);
        }
    }

    fn falls_behind(port_min: u16, path: worker::RxPath) {
        let bound = Duration::from_millis(100);
        let engine = engine_on(port_min, port_min + 99, worker::RX_BUFFERS, bound, path);
        let all = bridged(&engine, 20);
        std::thread::sleep(Duration::from_millis(100));
        let resume = engine.stall();
        for seq in 0..3 {
            send_round(&all, seq);
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(resume);
        let s = stats_after(&engine, 120);
        assert_eq!(
            (s.received, s.dropped_late, s.relayed, s.dropped_send),
            (120, 120, 0, 0),
            "{path:?}: {s:?}"
        );
        send_round(&all, 3);
        each_peer_gets(&all, 3);
        let s = stats_after(&engine, 160);
        assert_eq!(
            (s.received, s.dropped_late, s.relayed),
            (160, 120, 40),
            "{path:?}: {s:?}"
        );
    }

    /// `rounds` rounds sent while the worker is stalled (longer than a 100 ms bound), then
    /// the counters once it has read what the socket queues held (`received` stops
    /// growing).
    fn backlog_read(engine: &MediaEngine, all: &[Bridged], rounds: u16) -> MediaStats {
        let resume = engine.stall();
        for seq in 0..rounds {
            send_round(all, seq);
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(resume);
        let mut before = u64::MAX;
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.stats().received != before && Instant::now() < deadline {
            before = engine.stats().received;
            std::thread::sleep(Duration::from_millis(200));
        }
        engine.stats()
    }

    /// Past the socket's short queue the kernel drops; the engine counts those too
    /// (`dropped_queue_full`, from the count the kernel gives with the next datagram), so
    /// every packet sent is accounted for: relayed, late or dropped at a full queue.
    #[test]
    fn drops_at_a_full_socket_queue_are_counted() {
        let engine = engine_with(32700, 32799, worker::RX_BUFFERS, Duration::from_millis(100));
        let all = bridged(&engine, 10);
        std::thread::sleep(Duration::from_millis(100));
        // The backlog is read (what the queues held) before a fresh round, which a still
        // full queue would drop.
        backlog_read(&engine, &all, 30);
        // The count comes with the next datagram each socket queues; a peer that gets
        // it has had its socket's backlog read before (one queue per socket, in order).
        send_round(&all, 30);
        each_peer_gets(&all, 30);
        let sent = 31 * 20;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = engine.stats();
        while (s.received + s.dropped_queue_full < sent || s.relayed < 20)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
            s = engine.stats();
        }
        assert!(s.dropped_queue_full > 0, "the queues overflowed: {s:?}");
        assert_eq!(
            (s.received + s.dropped_queue_full, s.relayed, s.dropped_late),
            (sent, 20, s.received - 20),
            "{s:?}"
        );
    }

    /// The same stall with no bound (`max_queue` 0): every packet is kept and relayed late,
    /// as before issue 15.
    #[test]
    fn without_a_bound_a_stalled_engine_relays_everything_late() {
        let engine = engine_with(32300, 32499, worker::RX_BUFFERS, Duration::ZERO);
        let all = bridged(&engine, 20);
        std::thread::sleep(Duration::from_millis(100));
        let resume = engine.stall();
        send_round(&all, 0);
        std::thread::sleep(Duration::from_millis(300));
        drop(resume);
        each_peer_gets(&all, 0);
        let s = stats_after(&engine, 40);
        assert_eq!(
            (s.received, s.dropped_late, s.relayed),
            (40, 0, 40),
            "{s:?}"
        );
    }

    /// Prompt and ringback frames of many calls, on each send path (batched on the
    /// multishot ring, batched through the epoll path's io_uring, one `sendto` each): every
    /// frame arrives, in sequence, and each is counted once as sent (pacing: tests/media_engine.rs).
    #[test]
    fn prompt_frames_of_many_calls_go_out_on_every_send_path() {
        for (ports, path) in [
            (33000, worker::RxPath::Best),
            (33200, worker::RxPath::EpollRing),
            (33400, worker::RxPath::Plain),
        ] {
            frames_on(ports, path);
        }
    }

    fn frames_on(port_min: u16, path: worker::RxPath) {
        let engine = engine_on(
            port_min,
            port_min + 199,
            worker::RX_BUFFERS,
            DEFAULT_MAX_QUEUE,
            path,
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts");
        let prompt = PromptSet::load_dir(&dir).unwrap();
        let frames = prompt
            .get(PromptId::EnterPin)
            .unwrap()
            .samples()
            .div_ceil(160);
        let mut calls = Vec::new();
        for i in 0..30 {
            let (mut m, events) = engine.open_call();
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            m.allocate(Side::A).unwrap();
            m.set_leg(Side::A, media(&a), LatchPolicy::Exact);
            // A third of the calls hear ringback for 200 ms instead.
            match i % 3 {
                0 => m.ringback(true),
                _ => m.play(Side::A, PromptId::EnterPin),
            }
            calls.push((m, events, a, i % 3 == 0));
        }
        std::thread::sleep(Duration::from_millis(200));
        for (m, _, _, ringback) in &mut calls {
            if *ringback {
                m.ringback(false);
            }
        }
        let (mut prompt_frames, mut ringback_frames) = (0u64, 0u64);
        for (_, _, a, ringback) in &calls {
            a.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut got: Vec<(Instant, u16)> = Vec::new();
            let mut buf = [0u8; 512];
            while let Ok(n) = a.recv(&mut buf) {
                if n == 172 {
                    got.push((Instant::now(), u16::from_be_bytes([buf[2], buf[3]])));
                }
            }
            assert!(
                got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
                "{path:?}: in order, none lost"
            );
            match ringback {
                true => {
                    assert!(got.len() >= 5, "{path:?}: {} ringback frames", got.len());
                    ringback_frames += got.len() as u64;
                }
                false => {
                    assert_eq!(got.len(), frames, "{path:?}: the whole prompt");
                    prompt_frames += got.len() as u64;
                }
            }
        }
        let s = engine.stats();
        assert_eq!(
            (s.prompt_frames, s.ringback_frames, s.dropped_send),
            (prompt_frames, ringback_frames, 0),
            "{path:?}: {s:?}"
        );
    }

    #[test]
    fn running_out_of_receive_buffers_loses_nothing() {
        // 8 buffers for bursts of 400 datagrams: receives end with ENOBUFS, the datagrams
        // wait on their sockets, and the worker re-arms once buffers come back.
        // No bound on the wait, as in `many_calls_on_one_worker_relay_every_packet`.
        let engine = engine_with(31000, 31999, 8, Duration::ZERO);
        let s = relay_bursts(&engine, 200, 5);
        assert_eq!(
            (s.received, s.relayed, s.dropped_send),
            (2000, 2000, 0),
            "{s:?}"
        );
        let (multishot, dry) = engine.multishot_stats();
        if multishot > 0 {
            assert!(dry > 0, "the buffer ring ran dry");
        }
        // The calls are gone: every pair returns once the kernel has ended its receives.
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.stats().port_pairs_in_use > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let s = engine.stats();
        assert_eq!((s.calls, s.legs, s.port_pairs_in_use), (0, 0, 0), "{s:?}");
    }

    /// Issue 15: a worker past its capacity finds, in one wait, every socket holding
    /// datagrams (up to the short queue's 4 each), and its receives run them all at once.
    /// The default pool covers that backlog, so no receive finds it empty; each that does
    /// is ended and must be re-armed (a submission and a socket lookup), which at 2,000
    /// calls with a pool of 1,024 happened about once per packet. The same backlog runs a
    /// pool of 1,024 dry. Counted, not timed: the stall outlasts the bound, so the whole
    /// backlog is late and dropped either way.
    #[test]
    fn the_receive_pool_covers_a_worker_s_whole_backlog() {
        for (ports, buffers) in [(34000, worker::RX_BUFFERS), (35000, 1024)] {
            let engine = engine_with(ports, ports + 999, buffers, Duration::from_millis(100));
            let all = bridged(&engine, 200);
            std::thread::sleep(Duration::from_millis(100));
            let s = backlog_read(&engine, &all, 4);
            // More than a pool of 1,024 holds (4 per socket where the kernel queues 4).
            assert!(s.received > 1024, "{buffers}: {s:?}");
            assert_eq!(s.received, s.dropped_late, "{buffers}: {s:?}");
            let (multishot, dry) = engine.multishot_stats();
            assert_eq!(dry, s.rx_no_buffers);
            if multishot == 0 {
                continue;
            }
            match buffers {
                worker::RX_BUFFERS => assert_eq!(dry, 0, "the pool covered the backlog: {s:?}"),
                _ => assert!(dry > 0, "a pool of {buffers} ran dry: {s:?}"),
            }
        }
    }

    /// Calls fill the first worker up to the packing bound before the next gets any; past
    /// it on every worker, the one with the fewest takes the call; a worker whose calls
    /// ended is filled first again.
    #[test]
    fn calls_fill_one_worker_before_the_next() {
        let workers: Vec<WorkerHandle> = (0..3)
            .map(|_| WorkerHandle {
                tx: mpsc::channel().0,
                waker: Arc::new(sys::Waker::new().unwrap()),
                stats: Arc::default(),
                open: AtomicUsize::new(0),
            })
            .collect();
        let open = |n: usize| -> Vec<usize> {
            (0..n)
                .map(|_| {
                    let w = place(&workers, 2);
                    workers[w].open.fetch_add(1, Ordering::Relaxed);
                    w
                })
                .collect()
        };
        assert_eq!(open(8), [0, 0, 1, 1, 2, 2, 0, 1]);
        workers[1].open.fetch_sub(2, Ordering::Relaxed);
        workers[2].open.fetch_sub(2, Ordering::Relaxed);
        assert_eq!(open(3), [1, 2, 2]);
    }

    /// The engine counts the calls it places per worker: open on the first worker at light
    /// load, and given back when their `CallMedia` drops.
    #[test]
    fn an_engine_at_light_load_places_every_call_on_one_worker() {
        let cfg = EngineConfig {
            port_min: 32900,
            port_max: 32999,
            bind_ip: "127.0.0.1".parse().unwrap(),
            advertised_ip: "127.0.0.1".parse().unwrap(),
            workers: 2,
            max_queue: DEFAULT_MAX_QUEUE,
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts");
        let prompts = Arc::new(PromptSet::load_dir(&dir).unwrap());
        let engine = MediaEngine::start(cfg, prompts).unwrap();
        let open = |e: &MediaEngine| -> Vec<usize> {
            let w = &e.inner.workers;
            w.iter().map(|w| w.open.load(Ordering::Relaxed)).collect()
        };
        let calls: Vec<_> = (0..3).map(|_| engine.open_call()).collect();
        assert!(calls.iter().all(|(m, _)| m.worker == 0), "{calls:?}");
        assert_eq!(open(&engine), [3, 0]);
        drop(calls);
        assert_eq!(open(&engine), [0, 0]);
    }
}
