//! A media worker thread: multishot receives on the sockets of its calls (or one epoll
//! set over them), a timer heap for paced local frames, commands from the API side,
//! counters published once per loop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::activity::RtpActivity;
use super::call::{self, index, CallState, Ctx, LegSockets};
use super::sys::{
    self, Batch, Completion, Epoll, Events, MultiRing, Outgoing, Ring, Sock, Tag, Waker,
    MAX_DATAGRAM,
};
use super::tap::Tap;
use super::{Events as EventTx, MediaEvent, MediaStats, Shared};
use crate::media::dtmf::DigitPress;
use crate::media::ports::PortPair;
use crate::media::prompts::{Prompt, PromptId, PromptSet};
use crate::media::relay::{DropReason, LatchPolicy, RelayDecision, Side};
use crate::media::rtp::{classify, PacketKind};
use crate::media::sdp::NegotiatedMedia;
use std::os::fd::RawFd;

/// Ready sockets taken per `epoll_wait`. Each gives one datagram per loop: level-triggered
/// epoll reports a socket with more waiting again, so a flooded socket cannot starve the
/// others (and with one socket per leg, a second datagram is rare: see the module doc).
const EPOLL_BATCH: usize = 256;
/// Receives (and then sends) handed to io_uring per system call.
pub(super) const RING_BATCH: usize = 64;
/// Set (to anything) to use plain `recvmsg`/`sendmsg` even where io_uring works.
pub(super) const NO_URING_ENV: &str = "SALLYPORT_MEDIA_NO_URING";
/// Set (to anything) to keep the epoll loop even where multishot receives work.
pub(super) const NO_MULTISHOT_ENV: &str = "SALLYPORT_MEDIA_NO_MULTISHOT";
/// Provided buffers per worker for multishot receives (a power of two; 2,176 bytes each,
/// 8.5 MiB a worker). A wait runs the receives of every socket with data, so past its
/// capacity a worker's pool must cover what all its sockets hold (up to 4 datagrams each:
/// the module doc): with 1,024 at 2,000 calls on two workers the pool ran dry in nearly
/// every wait, and each receive that found it empty ended and was re-armed, about once per
/// packet and a fifth of the worker's time (bench/README.md, "Receive buffers sized for
/// overload": with 4,096 the engine shed 18–28 % there, with 1,024 it had shed 31–44 %).
pub(super) const RX_BUFFERS: u16 = 4096;
/// Overrides [`RX_BUFFERS`] (tuning and benchmarks; a power of two).
pub(super) const RX_BUFFERS_ENV: &str = "SALLYPORT_MEDIA_RX_BUFFERS";
/// Completions handled between two readings of the wall clock for the bound on a
/// packet's wait (`Worker::completions`): a wake-up past capacity reaps thousands, and the
/// last of them are handled milliseconds after the first, so one reading per wake-up
/// would let them through late.
const WALL_EVERY: usize = 64;
/// Forwards queued in one wake-up that go to the kernel together, before the rest of the
/// wake-up's completions are handled (`Worker::completions`): the first forwards of a
/// large batch do not wait for the last to be relayed. Below a few hundred datagrams a
/// wake-up (every load under capacity) the forwards go with the next wait, as before.
const FLUSH_EVERY: usize = 256;
/// Submission queue entries of the multishot ring (sends, re-arms, cancels per loop).
const MULTI_SQ: u32 = 1024;
/// Batching window of the multishot loop in µs (overrides [`BATCH_WINDOW`]; 0: off).
pub(super) const BATCH_US_ENV: &str = "SALLYPORT_MEDIA_BATCH_US";
/// Under load, a worker gathers datagrams for up to this long per wake-up (see
/// `Multi::wait_plan`): the most a datagram waits in the engine for the batch. Measured at
/// 1,000 calls (bench/README.md): 150–250 µs take ~1.5–2 µs of CPU off every packet.
const BATCH_WINDOW: Duration = Duration::from_micros(200);
/// Completions a batching wait asks for besides its sends' (a cap, rarely reached).
const WINDOW_WANT: usize = 256;
/// Datagrams a wake-up must receive before the next wait uses the batching window
/// (`Multi::wait_plan`); overridden by [`BATCH_FROM_ENV`]. Measured on a quiet machine
/// (bench/README.md, "A quiet machine"): at 32 the window never engaged below about
/// 1,500 calls on two workers (a wake-up found 4 datagrams at 1,000 calls); at 8 it engages
/// from about 500 calls and takes a quarter of the CPU off a packet there, while 100 calls
/// (1–2 datagrams a wake-up) still wait for none.
const BATCH_FROM: usize = 8;
/// Overrides [`BATCH_FROM`] (tuning and benchmarks).
pub(super) const BATCH_FROM_ENV: &str = "SALLYPORT_MEDIA_BATCH_FROM";
/// The timeout of a batching wait with no timer due: a worker with no call sleeps this
/// long between wake-ups (`Multi::wait_plan`).
const IDLE_WAIT: Duration = Duration::from_secs(3_600);
/// The longest a wait without a batching window that follows sends waits for a datagram
/// before it returns with the sends' completions (`Multi::wait_plan`): their counters are
/// published at most this late when the traffic stops.
const SEND_REAP: Duration = Duration::from_millis(1);
/// Locally made frames (prompts, ringback) due this soon after a wake-up are sent in it:
/// a few hundred calls hearing prompts at unaligned 20 ms phases would otherwise wake the
/// worker once per frame of each. A frame leaves at most this much early (never late);
/// the receiver's jitter buffer absorbs it, and the schedule (`start + n × ptime`) keeps
/// the stream from drifting. Relayed packets never wait on it.
const FRAME_SLACK: Duration = Duration::from_millis(2);
/// The epoll token of the command waker.
const WAKER: u64 = u64::MAX;

/// Which receive path a worker runs (tests pick one; the engine takes the best there is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RxPath {
    /// Multishot where it works, else epoll with io_uring, else plain (and the env vars).
    Best,
    /// Epoll, receives and sends batched through io_uring where it works (the engine
    /// gets there by itself on kernels without multishot; tests ask for it).
    #[cfg_attr(not(test), allow(dead_code))]
    EpollRing,
    /// Epoll, one `recvmsg` and one `sendmsg` per datagram.
    Plain,
}

/// What the API side asks of a worker.
pub(super) enum Command {
    Open {
        call: u64,
        events: EventTx,
        activity: Arc<RtpActivity>,
    },
    Sockets {
        call: u64,
        side: Side,
        sockets: LegSockets,
    },
    SetLeg {
        call: u64,
        side: Side,
        media: NegotiatedMedia,
        latch: LatchPolicy,
        ssrc: u32,
        seq: u16,
        ts: u32,
    },
    Play {
        call: u64,
        side: Side,
        prompt: PromptId,
    },
    Stop {
        call: u64,
        side: Side,
    },
    Ringback {
        call: u64,
        on: bool,
    },
    Bridge {
        call: u64,
        on: bool,
    },
    Tap {
        call: u64,
        tap: Tap,
    },
    Untap {
        call: u64,
        key: u64,
    },
    Close {
        call: u64,
    },
    /// Tests: the worker says it has stopped (on `stalled`) and then does nothing until
    /// `resume` yields or closes, as a worker starved of CPU would.
    #[cfg(test)]
    Stall {
        stalled: mpsc::Sender<()>,
        resume: mpsc::Receiver<()>,
    },
    Shutdown,
}

/// The worker's own counters: plain integers on the packet path.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) calls: u64,
    pub(super) legs: u64,
    pub(super) received: u64,
    pub(super) relayed: u64,
    pub(super) consumed: u64,
    pub(super) dropped_wrong_source: u64,
    pub(super) dropped_malformed: u64,
    pub(super) dropped_payload_type: u64,
    pub(super) dropped_no_leg: u64,
    pub(super) dropped_send: u64,
    /// Forwards not sent because the datagram had waited longer than the bound
    /// (`EngineConfig::max_queue`) by the time the worker read it.
    pub(super) dropped_late: u64,
    /// Datagrams the kernel dropped at a full receive queue of an RTP socket (as it
    /// reports with the next datagram it queues there).
    pub(super) dropped_queue_full: u64,
    pub(super) rtcp_received: u64,
    pub(super) prompt_frames: u64,
    pub(super) ringback_frames: u64,
    pub(super) digits: u64,
    pub(super) tap_dropped: u64,
    /// Times the worker's loop came back from waiting (for a datagram, a command or a
    /// timer): an idle engine must not wake.
    pub(super) wakeups: u64,
    /// Multishot receives that ended for lack of provided buffers and were re-armed.
    pub(super) rx_no_buffers: u64,
}

macro_rules! published {
    ($($field:ident),*) => {
        /// A worker's counters as the API side reads them (stored once per loop).
        #[derive(Debug, Default)]
        pub(super) struct WorkerStats {
            $(pub(super) $field: AtomicU64,)*
            /// The worker runs the multishot loop.
            pub(super) multishot: std::sync::atomic::AtomicBool,
        }

        impl WorkerStats {
            fn publish(&self, c: &Counters) {
                $(self.$field.store(c.$field, Ordering::Relaxed);)*
            }

            pub(super) fn add_to(&self, s: &mut MediaStats) {
                $(s.$field += self.$field.load(Ordering::Relaxed);)*
            }
        }
    };
}

published!(
    calls,
    legs,
    received,
    relayed,
    consumed,
    dropped_wrong_source,
    dropped_malformed,
    dropped_payload_type,
    dropped_no_leg,
    dropped_send,
    dropped_late,
    dropped_queue_full,
    rtcp_received,
    prompt_frames,
    ringback_frames,
    digits,
    tap_dropped,
    wakeups,
    rx_no_buffers
);

/// Epoll token of a call's socket: slot, side, RTP or RTCP.
fn token(slot: usize, side: Side, rtcp: bool) -> u64 {
    ((slot as u64) << 2) | ((index(side) as u64) << 1) | u64::from(rtcp)
}

fn untoken(t: u64) -> (usize, Side, bool) {
    let side = if t & 2 == 0 { Side::A } else { Side::B };
    (
        usize::try_from(t >> 2).unwrap_or(usize::MAX),
        side,
        t & 1 != 0,
    )
}

/// A due local frame: (when, slot, call id, side index).
type Timer = Reverse<(Instant, usize, u64, usize)>;

pub(super) struct Worker {
    commands: mpsc::Receiver<Command>,
    waker: Arc<Waker>,
    stats: Arc<WorkerStats>,
    shared: Arc<Shared>,
    prompts: Arc<PromptSet>,
    ringback: Arc<Prompt>,
    epoll: Epoll,
    events: Events,
    batch: Batch,
    /// io_uring for batching the receives and sends of many sockets; `None`: per datagram.
    ring: Option<Ring>,
    /// Tokens of the ready sockets of this loop.
    ready: Vec<u64>,
    /// Per ring slot: the socket received from and what it belongs to.
    fds: Vec<RawFd>,
    meta: Vec<(usize, Side, bool)>,
    /// Forwards of the current batch.
    sends: Vec<Outgoing>,
    /// Local frames (prompts, ringback) queued for one batched send (epoll with io_uring).
    frames: RingFrames,
    scratch: Box<[u8; MAX_DATAGRAM]>,
    /// Calls by slot; the slot is in the epoll tokens of their sockets.
    calls: Vec<Option<CallState>>,
    free: Vec<usize>,
    /// Call id → slot (commands address calls by id).
    by_id: std::collections::HashMap<u64, usize>,
    timers: BinaryHeap<Timer>,
    counters: Counters,
    /// The multishot path, when it runs (set up on the worker thread in `run`).
    multi: Option<Multi>,
    /// Provided buffers for the multishot ring.
    rx_buffers: u16,
    /// The longest a received datagram may wait before it is forwarded (0: no bound).
    max_queue: Duration,
    /// The wall clock at the last wake-up, since the Unix epoch (the kernel's arrival
    /// stamps are on that clock); read only with a bound.
    wall: Duration,
    path: RxPath,
}

/// A multishot receiver: one leg socket (RTP or RTCP) with a `RecvMsgMulti` armed.
#[derive(Debug, Clone, Copy)]
struct Rx {
    sock: Sock,
    slot: usize,
    side: Side,
    rtcp: bool,
    /// A request is armed (its final completion has not arrived yet).
    armed: bool,
    state: RxState,
    /// The socket's drop count as the kernel last reported it (`Stamps::drops`).
    kernel_drops: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    Free,
    Live,
    /// The socket is closed on our side; its pair returns when the request has ended
    /// (until then the request holds the socket open and the port bound).
    Closing(PortPair),
}

/// The worker's multishot state (see the module doc).
pub(super) struct Multi {
    ring: MultiRing,
    rx: Vec<Rx>,
    rx_free: Vec<usize>,
    /// Receivers whose request ended (buffers ran out, error) and must be re-armed.
    rearm: Vec<usize>,
    /// Pairs waiting for the final completions of their receivers (count left).
    releasing: Vec<(PortPair, u8)>,
    cqes: Vec<Completion>,
    /// Sends queued since the last wait (their completions count towards `want`).
    queued_sends: usize,
    /// Of those, local frames (see `Worker::flush_frames`).
    queued_frames: usize,
    /// Batching window (0: off): see `wait_plan`.
    window: Duration,
    /// The kernel has `min_wait_usec` (6.12).
    min_wait: bool,
    /// Datagrams the last wake-up received before the window is used: below, a wait
    /// returns at the first completion (see `wait_plan`).
    batch_from: usize,
    /// Datagrams the last wake-up received (compared with `batch_from`).
    last_rx: usize,
}

impl Multi {
    fn new(ring: MultiRing, window: Duration) -> Self {
        let n = usize::from(ring.buffers());
        let min_wait = ring.has_min_wait();
        Multi {
            ring,
            rx: Vec::new(),
            rx_free: Vec::new(),
            rearm: Vec::new(),
            releasing: Vec::new(),
            cqes: Vec::with_capacity(4 * n),
            queued_sends: 0,
            queued_frames: 0,
            last_rx: 0,
            window,
            min_wait,
            batch_from: super::tuning(BATCH_FROM_ENV).unwrap_or(BATCH_FROM),
        }
    }

    /// Arms a receiver for `fd`; returns its index.
    fn watch(&mut self, fd: RawFd, slot: usize, side: Side, rtcp: bool) -> Option<usize> {
        let unused = Sock { fd, fixed: None };
        let i = match self.rx_free.pop() {
            Some(i) => i,
            None => {
                self.rx.push(Rx {
                    sock: unused,
                    slot,
                    side,
                    rtcp,
                    armed: false,
                    state: RxState::Free,
                    kernel_drops: 0,
                });
                self.rx.len() - 1
            }
        };
        let sock = Sock {
            fd,
            fixed: self.ring.register(i, fd),
        };
        let armed = match self.ring.arm_recv(sock, Tag::Recv(i)) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "media: cannot arm a multishot receive");
                false
            }
        };
        self.rx[i] = Rx {
            sock,
            slot,
            side,
            rtcp,
            armed,
            state: RxState::Live,
            kernel_drops: 0,
        };
        Some(i)
    }

    /// Stops receiving on a leg's sockets (closed by the caller right after); returns the
    /// pair if it can be released now, else it is released when the requests have ended.
    fn unwatch(&mut self, rx: [Option<usize>; 3], pair: PortPair) -> Option<PortPair> {
        let mut pending = 0;
        for i in rx.into_iter().flatten() {
            let Some(r) = self.rx.get_mut(i) else {
                continue;
            };
            if let Some(k) = r.sock.fixed.take() {
                self.ring.unregister(k);
            }
            if r.armed {
                r.state = RxState::Closing(pair);
                pending += 1;
                if let Err(e) = self.ring.cancel(Tag::Recv(i)) {
                    tracing::error!(error = %e, "media: cannot cancel a multishot receive");
                }
            } else {
                r.state = RxState::Free;
                self.rx_free.push(i);
            }
        }
        if pending == 0 {
            return Some(pair);
        }
        self.releasing.push((pair, pending));
        None
    }

    /// Receiver `i`'s request ended; returns a pair that may now be released.
    fn ended(&mut self, i: usize) -> Option<PortPair> {
        let r = self.rx.get_mut(i)?;
        r.armed = false;
        match r.state {
            RxState::Free => None,
            RxState::Live => {
                self.rearm.push(i);
                None
            }
            RxState::Closing(pair) => {
                r.state = RxState::Free;
                self.rx_free.push(i);
                let k = self.releasing.iter().position(|(p, _)| *p == pair)?;
                self.releasing[k].1 -= 1;
                if self.releasing[k].1 > 0 {
                    return None;
                }
                self.releasing.swap_remove(k);
                Some(pair)
            }
        }
    }

    /// How many completions to wait for, for how long at most, and for how long at
    /// least, given the next timer. With a batching window (and a kernel that has
    /// `min_wait_usec`): sleep until a datagram (or command) arrives; once one has, gather
    /// more until `window` from the start of the wait. An idle worker answers a lone
    /// datagram at once; a busy one wakes about once per window, not once per datagram.
    ///
    /// The kernel ends a wait with a minimum and no timeout when the minimum expires,
    /// events or not; so a wait with a window always has a timeout: the next timer, or
    /// [`IDLE_WAIT`] when there is none. With it, a minimum that passes with no event
    /// turns into a wait for the first event (answered at once), and an idle worker sleeps.
    ///
    /// The window grows with load and vanishes without it: a wake-up that reaped fewer than
    /// `batch_from` datagrams (light load: a datagram or two at a time) is followed by a
    /// wait without a window, so a lone datagram is relayed at once; only when wake-ups
    /// find batches does the next wait gather more (`bench/README.md`, "Batching window":
    /// at 100 calls a window doubled the CPU per packet and tripled the latency; at 2,000
    /// it saved a fifth of the CPU).
    ///
    /// Sends queued since the last wait go to the kernel with this one and complete while
    /// it is submitted (non-blocking UDP sends, `DEFER_TASKRUN`: their completions are
    /// posted before the wait begins). A wait for one completion would therefore end at
    /// once on them, and every batch of forwards would cost a second `io_uring_enter` to
    /// wait for the next datagram; so the wait asks for the sends' completions plus one
    /// event, for at most [`SEND_REAP`] when there is no window, so that their counters
    /// are published soon after the traffic stops.
    fn wait_plan(&self, timer: Option<Duration>) -> (usize, Option<Duration>, Option<Duration>) {
        let window = earned_window(self.window, self.min_wait, self.last_rx, self.batch_from);
        wait_plan(window, self.queued_sends, timer)
    }
}

impl Worker {
    pub(super) fn new(
        commands: mpsc::Receiver<Command>,
        waker: Arc<Waker>,
        stats: Arc<WorkerStats>,
        shared: Arc<Shared>,
        prompts: Arc<PromptSet>,
        ringback: Arc<Prompt>,
    ) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.add(waker.raw(), WAKER)?;
        Ok(Worker {
            commands,
            waker,
            stats,
            shared,
            prompts,
            ringback,
            epoll,
            events: Events::with_capacity(EPOLL_BATCH),
            batch: Batch::new(RING_BATCH),
            ring: ring(),
            ready: Vec::with_capacity(EPOLL_BATCH),
            fds: Vec::with_capacity(RING_BATCH),
            meta: Vec::with_capacity(RING_BATCH),
            sends: Vec::with_capacity(RING_BATCH),
            frames: RingFrames::new(),
            scratch: Box::new([0; MAX_DATAGRAM]),
            calls: Vec::new(),
            free: Vec::new(),
            by_id: std::collections::HashMap::new(),
            timers: BinaryHeap::new(),
            counters: Counters::default(),
            multi: None,
            rx_buffers: RX_BUFFERS,
            max_queue: Duration::ZERO,
            wall: Duration::ZERO,
            path: RxPath::Best,
        })
    }

    /// Drops forwards of datagrams that waited longer than `bound` (zero: never).
    pub(super) fn with_max_queue(mut self, bound: Duration) -> Self {
        self.max_queue = bound;
        self
    }

    /// Reads the wall clock for this wake-up's arrival checks (not without a bound).
    fn read_wall(&mut self) {
        if !self.max_queue.is_zero() {
            self.wall = wall_clock();
        }
    }

    /// Keeps the worker off the better receive paths (tests of each path).
    pub(super) fn with_path(mut self, path: RxPath) -> Self {
        self.path = path;
        if path == RxPath::Plain {
            self.ring = None;
        }
        self
    }

    /// Provided buffers for the multishot ring (tests use few, to exhaust them).
    pub(super) fn with_rx_buffers(mut self, n: u16) -> Self {
        self.rx_buffers = n;
        self
    }

    /// The worker loop; returns on `Shutdown` or when every command sender is gone.
    pub(super) fn run(mut self) {
        if let Some(multi) = self.multishot() {
            self.multi = Some(multi);
            self.ring = None;
            self.stats.multishot.store(true, Ordering::Relaxed);
            return self.run_multi();
        }
        let mut now = Instant::now(); // clock-ok: the media driver paces real RTP
        loop {
            let timeout = self.timeout(now);
            if let Err(e) = self.epoll.wait(&mut self.events, timeout) {
                tracing::error!(error = %e, "media worker: epoll_wait failed");
                return;
            }
            self.counters.wakeups += 1;
            now = Instant::now(); // clock-ok: the media driver paces real RTP
            self.read_wall();
            let mut woken = false;
            self.ready.clear();
            for i in 0..self.events.len() {
                match self.events.token(i) {
                    Some(WAKER) => woken = true,
                    Some(t) => self.ready.push(t),
                    None => {}
                }
            }
            if self.ring.is_some() {
                for start in (0..self.ready.len()).step_by(RING_BATCH) {
                    self.ring_batch(start, now);
                }
            } else {
                for i in 0..self.ready.len() {
                    self.on_readable(self.ready[i], now);
                }
            }
            if woken && !self.commands_(now) {
                self.close_all();
                return;
            }
            self.fire_timers(now);
            self.flush_frames();
            self.stats.publish(&self.counters);
        }
    }

    /// The multishot ring, unless io_uring or multishot is unavailable or disabled.
    fn multishot(&self) -> Option<Multi> {
        if self.ring.is_none()
            || self.path != RxPath::Best
            || std::env::var_os(NO_MULTISHOT_ENV).is_some()
        {
            return None;
        }
        let window = super::tuning(BATCH_US_ENV).map_or(BATCH_WINDOW, Duration::from_micros);
        let buffers = super::tuning(RX_BUFFERS_ENV).unwrap_or(self.rx_buffers);
        match MultiRing::new(MULTI_SQ, buffers) {
            Ok(mut ring) => match ring.arm_poll(self.waker.raw(), Tag::Waker) {
                Ok(()) => Some(Multi::new(ring, window)),
                Err(e) => {
                    tracing::info!(error = %e, "media: multishot unavailable, using epoll");
                    None
                }
            },
            Err(e) => {
                tracing::info!(error = %e, "media: multishot unavailable, using epoll");
                None
            }
        }
    }

    /// The multishot loop: one `io_uring_enter` submits the previous batch's forwards and
    /// waits for datagrams (or the next due frame, or a command); then every completion is
    /// handled: receives relayed (forwards queued), sends' buffers recycled.
    fn run_multi(mut self) {
        let mut now = Instant::now(); // clock-ok: the media driver paces real RTP
        loop {
            let timer = self
                .timers
                .peek()
                .map(|Reverse((due, ..))| due.saturating_duration_since(now));
            let Some(m) = self.multi.as_mut() else {
                return;
            };
            let (want, timeout, min_wait) = m.wait_plan(timer);
            if let Err(e) = m.ring.wait(want, timeout, min_wait) {
                tracing::error!(error = %e, "media worker: io_uring wait failed");
                return;
            }
            self.counters.wakeups += 1;
            m.queued_sends = 0;
            m.queued_frames = 0;
            m.ring.reap(&mut m.cqes);
            now = Instant::now(); // clock-ok: the media driver paces real RTP
            self.read_wall();
            let woken = self.completions(now);
            if woken {
                // Queued sends name fds by number: hand them to the kernel before a
                // command closes (and a new socket reuses) any of them.
                if let Some(m) = self.multi.as_mut() {
                    if let Err(e) = m.ring.submit() {
                        tracing::error!(error = %e, "media: io_uring submit failed");
                    }
                    m.queued_sends = 0;
                    m.queued_frames = 0;
                }
                if !self.commands_(now) {
                    self.close_all();
                    // Dropping the ring ends the receives; nothing waits for these pairs
                    // any more, but return them to the pool all the same.
                    if let Some(m) = self.multi.take() {
                        let pending = m.releasing.clone();
                        drop(m);
                        for (pair, _) in pending {
                            self.shared.release(pair, true);
                        }
                    }
                    return;
                }
            }
            self.fire_timers(now);
            self.stats.publish(&self.counters);
        }
    }

    /// Handles the reaped completions; `true` if the command waker fired.
    fn completions(&mut self, now: Instant) -> bool {
        let Worker {
            multi,
            calls,
            counters: c,
            shared,
            waker,
            wall,
            max_queue,
            ..
        } = self;
        let Some(m) = multi.as_mut() else {
            return false;
        };
        let mut woken = false;
        m.last_rx = 0;
        let mut flushed = m.queued_sends;
        for k in 0..m.cqes.len() {
            if k % WALL_EVERY == WALL_EVERY - 1 && !max_queue.is_zero() {
                *wall = wall_clock();
            }
            if m.queued_sends >= flushed + FLUSH_EVERY {
                flushed = m.queued_sends;
                if let Err(e) = m.ring.submit() {
                    tracing::error!(error = %e, "media: io_uring submit failed");
                }
            }
            let cq = m.cqes[k];
            match cq.tag {
                Tag::Cancel => {}
                Tag::Waker => {
                    woken = true;
                    if !cq.more {
                        if let Err(e) = m.ring.arm_poll(waker.raw(), Tag::Waker) {
                            tracing::error!(error = %e, "media: cannot re-arm the waker");
                        }
                    }
                }
                Tag::Send(bid) => {
                    m.ring.recycle(bid);
                    match cq.result >= 0 {
                        true => c.relayed += 1,
                        false => c.dropped_send += 1,
                    }
                }
                Tag::Frame { slot, ringback } => {
                    m.ring.frame_sent(slot);
                    count_frame(c, ringback, cq.result >= 0);
                }
                Tag::Recv(i) => {
                    if let Some(bid) = cq.buffer {
                        m.last_rx += 1;
                        let rx = m.rx.get(i).copied().filter(|r| r.state == RxState::Live);
                        let fwd = rx.and_then(|r| {
                            let call = calls.get_mut(r.slot).and_then(Option::as_mut)?;
                            let (from, stamps, buf) = m.ring.packet(bid, cq.result)?;
                            if let Some(r) = m.rx.get_mut(i) {
                                kernel_drops(&mut r.kernel_drops, stamps.drops, c);
                            }
                            let late = too_late(stamps.arrival, *wall, *max_queue);
                            let rx = Received {
                                side: r.side,
                                rtcp: r.rtcp,
                                from,
                                late,
                            };
                            let (len, to) = relay_one(call, c, rx, buf, now)?;
                            let far = call.sockets[index(r.side.other())].as_ref();
                            let sock = far.map(|s| {
                                // From the twin connected to `to`, if there is one.
                                let twin = s.twin.as_ref().filter(|(_, peer)| *peer == to);
                                let live = |k: Option<usize>| {
                                    k.and_then(|k| m.rx.get(k))
                                        .filter(|r| r.state == RxState::Live)
                                        .map(|r| r.sock)
                                };
                                let unregistered = Sock {
                                    fd: s.rtp.as_raw_fd(),
                                    fixed: None,
                                };
                                match twin.and_then(|_| live(s.rx[2])) {
                                    Some(t) => (t, None),
                                    None => (live(s.rx[0]).unwrap_or(unregistered), Some(to)),
                                }
                            });
                            if sock.is_none() {
                                c.dropped_send += 1;
                            }
                            let (sock, to) = sock?;
                            Some((sock, len, to))
                        });
                        match fwd {
                            Some((sock, len, to)) => match m.ring.send(sock, bid, len, to) {
                                Ok(()) => m.queued_sends += 1,
                                Err(e) => {
                                    tracing::error!(error = %e, "media: cannot queue a send");
                                    m.ring.recycle(bid);
                                    c.dropped_send += 1;
                                }
                            },
                            None => m.ring.recycle(bid),
                        }
                    } else if cq.result == -libc::ENOBUFS {
                        c.rx_no_buffers += 1;
                    } else if cq.result < 0 && cq.result != -libc::ECANCELED {
                        let e = std::io::Error::from_raw_os_error(-cq.result);
                        tracing::debug!(error = %e, "media: multishot receive ended");
                    }
                    if !cq.more {
                        if let Some(pair) = m.ended(i) {
                            shared.release(pair, true);
                        }
                    }
                }
            }
        }
        m.ring.commit();
        for i in std::mem::take(&mut m.rearm) {
            let Some(r) = m.rx.get_mut(i).filter(|r| r.state == RxState::Live) else {
                continue;
            };
            match m.ring.arm_recv(r.sock, Tag::Recv(i)) {
                Ok(()) => r.armed = true,
                Err(e) => tracing::error!(error = %e, "media: cannot re-arm a receive"),
            }
        }
        woken
    }

    /// Milliseconds until the earliest due frame (rounded up), or -1 for none.
    fn timeout(&self, now: Instant) -> i32 {
        match self.timers.peek() {
            None => -1,
            Some(Reverse((due, ..))) => {
                let us = due.saturating_duration_since(now).as_micros();
                i32::try_from(us.div_ceil(1000)).unwrap_or(i32::MAX)
            }
        }
    }

    /// The packet path without io_uring: one datagram from one ready socket.
    fn on_readable(&mut self, token: u64, now: Instant) {
        let (slot, side, rtcp) = untoken(token);
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(fd) = call.fd(side, rtcp) else {
            return;
        };
        match self.batch.recv_one(fd) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(error = %e, "media: recvmsg failed");
                return;
            }
        }
        let stamps = self.batch.stamps(0);
        if let Some(s) = call.sockets[index(side)].as_mut() {
            kernel_drops(&mut s.kernel_drops, stamps.drops, &mut self.counters);
        }
        let late = too_late(stamps.arrival, self.wall, self.max_queue);
        let Some((from, buf)) = self.batch.received(0) else {
            return;
        };
        let c = &mut self.counters;
        let rx = Received {
            side,
            rtcp,
            from,
            late,
        };
        let Some((len, to)) = relay_one(call, c, rx, buf, now) else {
            return;
        };
        let sent = call.fd(side.other(), false).is_some_and(|fd| {
            self.batch.send_one(&Outgoing {
                fd,
                slot: 0,
                len,
                to,
            })
        });
        match sent {
            true => c.relayed += 1,
            false => c.dropped_send += 1,
        }
    }

    /// The packet path with io_uring: one datagram from each of up to `RING_BATCH` ready
    /// sockets (from `self.ready[start..]`) in one system call, relayed, and the forwards
    /// sent in one more.
    fn ring_batch(&mut self, start: usize, now: Instant) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        self.fds.clear();
        self.meta.clear();
        for &t in self.ready.iter().skip(start).take(RING_BATCH) {
            let (slot, side, rtcp) = untoken(t);
            let call = self.calls.get(slot).and_then(Option::as_ref);
            if let Some(fd) = call.and_then(|c| c.fd(side, rtcp)) {
                self.fds.push(fd);
                self.meta.push((slot, side, rtcp));
            }
        }
        if let Err(e) = ring.recv_many(&mut self.batch, &self.fds) {
            tracing::error!(error = %e, "media: io_uring receive failed");
            return;
        }
        self.sends.clear();
        let c = &mut self.counters;
        for (k, &(slot, side, rtcp)) in self.meta.iter().enumerate() {
            let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let stamps = self.batch.stamps(k);
            if let Some(s) = call.sockets[index(side)].as_mut() {
                kernel_drops(&mut s.kernel_drops, stamps.drops, c);
            }
            let late = too_late(stamps.arrival, self.wall, self.max_queue);
            let Some((from, buf)) = self.batch.received(k) else {
                continue;
            };
            let rx = Received {
                side,
                rtcp,
                from,
                late,
            };
            let Some((len, to)) = relay_one(call, c, rx, buf, now) else {
                continue;
            };
            match call.fd(side.other(), false) {
                Some(fd) => self.sends.push(Outgoing {
                    fd,
                    slot: k,
                    len,
                    to,
                }),
                None => c.dropped_send += 1,
            }
        }
        if self.sends.is_empty() {
            return;
        }
        let total = self.sends.len() as u64;
        let sent = match ring.send_many(&mut self.batch, &self.sends) {
            Ok(n) => n as u64,
            Err(e) => {
                tracing::error!(error = %e, "media: io_uring send failed");
                0
            }
        };
        c.relayed += sent;
        c.dropped_send += total - sent;
    }

    /// Handles queued commands; `false` when the worker must stop.
    fn commands_(&mut self, now: Instant) -> bool {
        self.waker.drain();
        loop {
            match self.commands.try_recv() {
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Ok(command) => self.command(command, now),
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn command(&mut self, command: Command, now: Instant) {
        if matches!(command, Command::Close { .. } | Command::Sockets { .. }) {
            // Queued frames name their socket by fd number: out before any socket closes
            // (a socket bound meanwhile could get the number).
            self.flush_frames();
        }
        let (id, side) = match command {
            Command::Open {
                call,
                events,
                activity,
            } => return self.open(call, events, activity),
            Command::Close { call } => return self.close(call),
            Command::Sockets {
                call,
                side,
                sockets,
            } => return self.sockets(call, side, sockets, now),
            Command::Shutdown => return,
            #[cfg(test)]
            Command::Stall { stalled, resume } => {
                let _ = stalled.send(());
                let _ = resume.recv();
                return;
            }
            Command::SetLeg { call, side, .. }
            | Command::Play { call, side, .. }
            | Command::Stop { call, side } => (call, Some(side)),
            Command::Ringback { call, .. } => (call, Some(Side::A)),
            Command::Bridge { call, .. }
            | Command::Tap { call, .. }
            | Command::Untap { call, .. } => (call, None),
        };
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match command {
            Command::SetLeg {
                side,
                media,
                latch,
                ssrc,
                seq,
                ts,
                ..
            } => {
                call.set_leg(side, call::leg_config(media, latch, ssrc, seq, ts), now);
                self.connect_twin(slot, side);
            }
            Command::Play { side, prompt, .. } => call.play(side, prompt, now),
            Command::Stop { side, .. } => call.stop(side),
            Command::Ringback { on, .. } => call.set_ringback(on, now),
            Command::Bridge { on, .. } => call.bridge(on),
            Command::Tap { tap, .. } => call.taps.push(tap),
            Command::Untap { key, .. } => call.taps.retain(|t| t.key != key),
            _ => {}
        }
        if let Some(side) = side {
            self.pump(slot, side, now);
        }
    }

    fn open(&mut self, id: u64, events: EventTx, activity: Arc<RtpActivity>) {
        let state = CallState::new(id, events, activity);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.calls[slot] = Some(state);
                slot
            }
            None => {
                self.calls.push(Some(state));
                self.calls.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        self.counters.calls += 1;
    }

    fn sockets(&mut self, id: u64, side: Side, sockets: LegSockets, now: Instant) {
        let Some(&slot) = self.by_id.get(&id) else {
            // Unreachable in order (Open precedes, Close follows), but never leak a pair:
            // the sockets close here and the pair returns (counted by the call's Drop).
            self.shared.release(sockets.pair, true);
            return;
        };
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut sockets = sockets;
        let (rtp, rtcp) = (sockets.rtp.as_raw_fd(), sockets.rtcp.as_raw_fd());
        match self.multi.as_mut() {
            Some(m) => {
                sockets.rx = [
                    m.watch(rtp, slot, side, false),
                    m.watch(rtcp, slot, side, true),
                    None,
                ];
            }
            None => {
                let registered = self
                    .epoll
                    .add(rtp, token(slot, side, false))
                    .and_then(|()| self.epoll.add(rtcp, token(slot, side, true)));
                if let Err(e) = registered {
                    tracing::error!(error = %e, "media: cannot watch leg sockets");
                }
            }
        }
        if let Some(old) = call.sockets[index(side)].replace(sockets) {
            retire(&self.epoll, self.multi.as_mut(), &self.shared, old);
        } else {
            self.counters.legs += 1;
        }
        self.connect_twin(slot, side);
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        call.kick(side, now);
        self.pump(slot, side, now);
    }

    /// Gives a leg with sockets and a peer a second RTP socket connected to the peer
    /// (`LegSockets::twin`), or points it at a new peer (a re-INVITE). Multishot only; a
    /// leg without one (failure, or the epoll path) sends unconnected, as before.
    fn connect_twin(&mut self, slot: usize, side: Side) {
        let Some(m) = self.multi.as_mut() else {
            return;
        };
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let peer = call.relay.leg(side).map(|l| l.media().remote);
        let Some(peer) = peer.filter(|p| !p.ip().is_unspecified() && p.port() != 0) else {
            return;
        };
        let Some(s) = call.sockets[index(side)].as_mut() else {
            return;
        };
        let max_queue = self.max_queue;
        match s.twin.as_mut() {
            Some((_, at)) if *at == peer => {}
            Some((twin, at)) => match twin.connect(peer) {
                Ok(()) => *at = peer,
                Err(e) => {
                    tracing::debug!(error = %e, "media: cannot point a leg's connected socket at its new peer")
                }
            },
            None => match sys::connected_twin(&s.rtp, peer, |fd| super::rtp_options(fd, max_queue))
            {
                Ok(twin) => match m.watch(twin.as_raw_fd(), slot, side, false) {
                    Some(i) if m.rx.get(i).is_some_and(|r| r.armed) => {
                        s.rx[2] = Some(i);
                        s.twin = Some((twin, peer));
                    }
                    // Unread, the twin would swallow the peer's packets: close it.
                    not_armed => {
                        let _ = m.unwatch([not_armed, None, None], s.pair);
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "media: no connected socket for a leg; it sends unconnected")
                }
            },
        }
    }

    fn close(&mut self, id: u64) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.counters.calls = self.counters.calls.saturating_sub(1);
        let sockets: Vec<LegSockets> = call.take_sockets().collect();
        for s in sockets {
            retire(&self.epoll, self.multi.as_mut(), &self.shared, s);
            self.counters.legs = self.counters.legs.saturating_sub(1);
        }
    }

    fn close_all(&mut self) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        self.stats.publish(&self.counters);
    }

    /// Sends a side's due frames and schedules its next one.
    fn pump(&mut self, slot: usize, side: Side, now: Instant) {
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let out = match (self.multi.as_mut(), self.ring.as_mut()) {
            (Some(m), _) => FrameOut::Multi(m),
            (None, Some(ring)) => FrameOut::Ring(ring, &mut self.frames),
            (None, None) => FrameOut::Plain,
        };
        let mut ctx = Ctx {
            prompts: &self.prompts,
            ringback: &self.ringback,
            scratch: &mut self.scratch,
            counters: &mut self.counters,
            out,
        };
        // A duplicate entry is harmless: `fire_timers` skips entries that are not the
        // side's current due time.
        if let Some(due) = call.pump(side, now, &mut ctx) {
            self.timers.push(Reverse((due, slot, call.id, index(side))));
        }
    }

    /// Hands the queued local frames to the kernel now (not with the next wait).
    fn flush_frames(&mut self) {
        if let Some(m) = self.multi.as_mut() {
            if m.queued_frames > 0 {
                if let Err(e) = m.ring.submit() {
                    tracing::error!(error = %e, "media: io_uring submit failed");
                }
                m.queued_frames = 0;
                m.queued_sends = 0;
            }
        } else if let Some(ring) = self.ring.as_mut() {
            self.frames.flush(ring, &mut self.counters);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let now = now + FRAME_SLACK;
        while let Some(&Reverse((due, slot, id, side))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(call) = self.calls.get(slot).and_then(Option::as_ref) else {
                continue;
            };
            let side = if side == 0 { Side::A } else { Side::B };
            // Stale entries (call gone, slot reused, schedule changed) are skipped.
            if call.id != id || call.next_due(side) != Some(due) {
                continue;
            }
            self.pump(slot, side, now);
        }
    }
}

/// Where a call's locally made frames (prompts, ringback) go: onto the worker's batched
/// send path where it has io_uring (the frames due in one wake-up, of every call, leave
/// in one `io_uring_enter`), else one `sendto` each.
pub(super) enum FrameOut<'a> {
    /// Queued on the multishot ring; sent with the next wait, counted on completion.
    Multi(&'a mut Multi),
    /// Gathered for one `send_each` at the end of the loop (or when the batch is full).
    Ring(&'a mut Ring, &'a mut RingFrames),
    /// One `sendto` per frame.
    Plain,
}

/// A frame to send: from the side's RTP socket (`fd`; `rx`: its multishot receiver, whose
/// registered file the ring may use) to `to`.
pub(super) struct Frame<'b> {
    pub(super) fd: RawFd,
    pub(super) rx: Option<usize>,
    pub(super) bytes: &'b [u8],
    pub(super) to: SocketAddr,
    pub(super) ringback: bool,
}

impl FrameOut<'_> {
    /// Sends (or queues) one frame; counts it (`prompt_frames`, `ringback_frames` or
    /// `dropped_send`) now or when its send completes.
    pub(super) fn send(&mut self, f: Frame<'_>, c: &mut Counters) {
        match self {
            FrameOut::Multi(m) => {
                let sock =
                    f.rx.and_then(|k| m.rx.get(k))
                        .filter(|r| r.state == RxState::Live)
                        .map_or(
                            Sock {
                                fd: f.fd,
                                fixed: None,
                            },
                            |r| r.sock,
                        );
                match m.ring.send_frame(sock, f.bytes, f.to, f.ringback) {
                    Ok(true) => {
                        m.queued_sends += 1;
                        m.queued_frames += 1;
                    }
                    // Every frame buffer in flight: this one goes on its own.
                    Ok(false) => count_frame(c, f.ringback, sys::send_to(f.fd, f.bytes, f.to)),
                    Err(e) => {
                        tracing::error!(error = %e, "media: cannot queue a frame");
                        c.dropped_send += 1;
                    }
                }
            }
            FrameOut::Ring(ring, frames) => {
                if frames.sends.len() == frames.batch.slots() {
                    frames.flush(ring, c);
                }
                let k = frames.sends.len();
                let len = frames.batch.fill(k, f.bytes);
                frames.sends.push(Outgoing {
                    fd: f.fd,
                    slot: k,
                    len,
                    to: f.to,
                });
                frames.ringback.push(f.ringback);
            }
            FrameOut::Plain => count_frame(c, f.ringback, sys::send_to(f.fd, f.bytes, f.to)),
        }
    }
}

/// Local frames gathered for one batched send on the epoll path with io_uring.
pub(super) struct RingFrames {
    batch: Batch,
    sends: Vec<Outgoing>,
    ringback: Vec<bool>,
}

impl RingFrames {
    fn new() -> Self {
        RingFrames {
            batch: Batch::new(RING_BATCH),
            sends: Vec::with_capacity(RING_BATCH),
            ringback: Vec::with_capacity(RING_BATCH),
        }
    }

    /// Sends what is gathered, in one system call, and counts each frame.
    fn flush(&mut self, ring: &mut Ring, c: &mut Counters) {
        if self.sends.is_empty() {
            return;
        }
        let ringback = &self.ringback;
        let sent = ring.send_each(&mut self.batch, &self.sends, |j, ok| {
            count_frame(c, ringback.get(j).copied().unwrap_or(false), ok)
        });
        if let Err(e) = sent {
            tracing::error!(error = %e, "media: io_uring send of frames failed");
            c.dropped_send += self.sends.len() as u64;
        }
        self.sends.clear();
        self.ringback.clear();
    }
}

/// Counts a local frame's send: sent (prompt or ringback) or refused.
fn count_frame(c: &mut Counters, ringback: bool, sent: bool) {
    match (sent, ringback) {
        (false, _) => c.dropped_send += 1,
        (true, false) => c.prompt_frames += 1,
        (true, true) => c.ringback_frames += 1,
    }
}

/// Stops watching a leg's sockets and closes them; the pair returns to the pool now, or
/// (multishot) once the kernel has ended the receives that still hold the sockets.
fn retire(epoll: &Epoll, multi: Option<&mut Multi>, shared: &Shared, s: LegSockets) {
    let pair = match multi {
        Some(m) => m.unwatch(s.rx, s.pair),
        None => {
            epoll.delete(s.rtp.as_raw_fd());
            epoll.delete(s.rtcp.as_raw_fd());
            Some(s.pair)
        }
    };
    drop(s);
    if let Some(pair) = pair {
        shared.release(pair, true);
    }
}

/// io_uring for the packet path, unless unavailable (old kernel, seccomp) or disabled.
fn ring() -> Option<Ring> {
    if std::env::var_os(NO_URING_ENV).is_some() {
        return None;
    }
    match Ring::new(2 * RING_BATCH as u32) {
        Ok(ring) => Some(ring),
        Err(e) => {
            tracing::info!(error = %e, "media: io_uring unavailable, one system call per datagram");
            None
        }
    }
}

/// Runs one received datagram through its call's relay and counts the outcome; returns
/// the forward to send (`len` bytes of the buffer, rewritten in place, to `to`).
///
/// A packet the relay counted as a sign of life ([`crate::media::relay::Leg::last_rtp`]:
/// well-formed RTP from the peer) stamps the leg's [`RtpActivity`].
///
/// Recorder tap (issue 4): here, in the `Forward` arm (`buf[..len]` rewritten for
/// `side.other()`) and the `Consume` arm (`buf` as received from `side`: muted audio,
/// RTCP, telephone-events), with `call.id` and `now`.
///
/// A late datagram (waited past the bound: [`too_late`]) still goes through the call's
/// relay (latching, signs of life, digits and RTCP as for any other), but its forward is
/// dropped (`dropped_late`) before it reaches the far leg or a tap: the far party's
/// jitter buffer would discard it anyway, and sending it would cost the time that the
/// packets queued behind it are waiting for. A recording therefore holds what the far
/// party heard. Telephone-events and RTCP are never forwarded, so they are never dropped
/// for lateness.
fn relay_one(
    call: &mut CallState,
    c: &mut Counters,
    rx: Received,
    buf: &mut [u8],
    now: Instant,
) -> Option<(usize, SocketAddr)> {
    let Received {
        side,
        rtcp,
        from,
        late,
    } = rx;
    c.received += 1;
    let decision = if rtcp {
        call.relay.on_rtcp(side, from, buf, now)
    } else {
        call.relay.on_packet(side, from, buf, now)
    };
    // The relay decides what is a sign of life (`Leg::last_rtp`); this packet was one if
    // it moved the stamp to `now`. Published for the call's task (media timeout).
    if !rtcp && call.relay.leg(side).and_then(|l| l.last_rtp()) == Some(now) {
        call.activity.heard(side, now);
    }
    match decision {
        RelayDecision::Forward { to, len, digit } => {
            report(call, c, side, digit);
            if late {
                c.dropped_late += 1;
                return None;
            }
            let sent = buf.get(..len).unwrap_or(&[]);
            c.tap_dropped += super::tap::feed(&mut call.taps, side.other(), sent, now);
            Some((len, to))
        }
        RelayDecision::Consume { digit } => {
            report(call, c, side, digit);
            c.consumed += 1;
            if rtcp || classify(buf) == PacketKind::Rtcp {
                c.rtcp_received += 1;
            }
            None
        }
        RelayDecision::Drop(reason) => {
            count_drop(c, reason);
            None
        }
    }
}

/// Where a received datagram came from, and whether it waited too long.
#[derive(Debug, Clone, Copy)]
struct Received {
    side: Side,
    rtcp: bool,
    from: SocketAddr,
    late: bool,
}

/// Whether a datagram the kernel stamped `arrival` has waited longer than `bound` by
/// `now` (both on the wall clock the stamps use). No bound (zero) or no stamp: never.
/// A wall clock stepped backwards makes packets look younger (kept); one stepped
/// forwards drops at most what is queued at that moment.
fn too_late(arrival: Option<Duration>, now: Duration, bound: Duration) -> bool {
    !bound.is_zero() && arrival.is_some_and(|a| now.saturating_sub(a) > bound)
}

/// Counts the datagrams a socket's kernel queue dropped since it last said (`now`: its
/// running count, when it reported one; `last`: the previous, per socket).
fn kernel_drops(last: &mut u32, now: Option<u32>, c: &mut Counters) {
    if let Some(n) = now {
        c.dropped_queue_full += u64::from(n.wrapping_sub(*last));
        *last = n;
    }
}

/// The wall clock (`CLOCK_REALTIME`), since the Unix epoch: the clock of the kernel's
/// `SO_TIMESTAMPNS` arrival stamps.
fn wall_clock() -> Duration {
    // clock-ok: compared with the kernel's receive stamps, which are on this clock.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

fn report(call: &CallState, c: &mut Counters, side: Side, digit: Option<DigitPress>) {
    if let Some(d) = digit {
        c.digits += 1;
        call.emit(MediaEvent::Digit {
            side,
            digit: d.digit,
        });
    }
}

fn count_drop(c: &mut Counters, reason: DropReason) {
    match reason {
        DropReason::WrongSource => c.dropped_wrong_source += 1,
        DropReason::Malformed => c.dropped_malformed += 1,
        DropReason::PayloadType => c.dropped_payload_type += 1,
        DropReason::NoLeg => c.dropped_no_leg += 1,
    }
}

/// The batching window the next wait uses: `window` once a wake-up has received
/// `batch_from` datagrams or more (and the kernel has `min_wait_usec`), else none.
fn earned_window(window: Duration, min_wait: bool, received: usize, batch_from: usize) -> Duration {
    match min_wait && received >= batch_from {
        true => window,
        false => Duration::ZERO,
    }
}

/// The wait after a wake-up (see `Multi::wait_plan`): how many completions to ask for,
/// the longest wait and the minimum (the batching window), given the window the last
/// wake-up earned (zero: none), the sends queued for this wait and the next timer.
fn wait_plan(
    window: Duration,
    queued_sends: usize,
    timer: Option<Duration>,
) -> (usize, Option<Duration>, Option<Duration>) {
    if window.is_zero() {
        if queued_sends == 0 {
            return (1, timer, None);
        }
        let timeout = timer.map_or(SEND_REAP, |t| t.min(SEND_REAP));
        return (queued_sends + 1, Some(timeout), None);
    }
    let timeout = timer.unwrap_or(IDLE_WAIT);
    (
        queued_sends + WINDOW_WANT,
        Some(timeout),
        Some(timeout.min(window)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_is_late_only_past_the_bound() {
        let ms = Duration::from_millis;
        let now = Duration::from_secs(1_700_000_000);
        let bound = ms(60);
        assert!(!too_late(Some(now - ms(60)), now, bound), "at the bound");
        assert!(too_late(Some(now - ms(61)), now, bound));
        assert!(
            too_late(Some(now - ms(3_000)), now, bound),
            "a standing queue"
        );
        assert!(!too_late(Some(now), now, bound));
        // Clock stepped back: the stamp is in the future; kept.
        assert!(!too_late(Some(now + ms(500)), now, bound));
        // No stamp (the kernel gave none) or no bound: never late.
        assert!(!too_late(None, now, bound));
        assert!(!too_late(Some(now - ms(3_000)), now, Duration::ZERO));
    }

    #[test]
    fn the_window_is_earned_by_a_batch_and_never_leaves_a_worker_asleep() {
        let us = Duration::from_micros;
        let window = BATCH_WINDOW;
        // Light load: a datagram or two a wake-up earns no window.
        assert_eq!(earned_window(window, true, 1, BATCH_FROM), Duration::ZERO);
        assert_eq!(
            earned_window(window, true, BATCH_FROM - 1, BATCH_FROM),
            Duration::ZERO
        );
        assert_eq!(earned_window(window, true, BATCH_FROM, BATCH_FROM), window);
        // A kernel without min_wait_usec, or the window set to 0: never.
        assert_eq!(
            earned_window(window, false, 500, BATCH_FROM),
            Duration::ZERO
        );
        assert_eq!(
            earned_window(Duration::ZERO, true, 500, BATCH_FROM),
            Duration::ZERO
        );

        // No window, nothing queued: wait for the first event, or the next frame.
        assert_eq!(wait_plan(Duration::ZERO, 0, None), (1, None, None));
        assert_eq!(
            wait_plan(Duration::ZERO, 0, Some(us(700))),
            (1, Some(us(700)), None)
        );
        // No window, 5 sends queued: their completions and one event, reaped within 1 ms.
        assert_eq!(
            wait_plan(Duration::ZERO, 5, None),
            (6, Some(SEND_REAP), None)
        );
        assert_eq!(
            wait_plan(Duration::ZERO, 5, Some(us(300))),
            (6, Some(us(300)), None)
        );
        // A window: gather for it, but always with a timeout, so a minimum that passes
        // with no event becomes a wait for the first one (an idle worker sleeps)...
        assert_eq!(
            wait_plan(window, 5, None),
            (5 + WINDOW_WANT, Some(IDLE_WAIT), Some(window))
        );
        // ...and a frame due sooner than the window cuts it short.
        assert_eq!(
            wait_plan(window, 0, Some(us(50))),
            (WINDOW_WANT, Some(us(50)), Some(us(50)))
        );
    }
}
