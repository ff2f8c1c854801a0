//! Video visits' media: a selective forwarding unit (SFU) on str0m. The gateway is each
//! browser's only WebRTC peer; it forwards the visitor's and the inmate's Opus and VP8
//! (H.264 when allowed) to each other and to receive-only watchers, never decoding them.
//!
//! Owns: the [`Room`] of one visit (its participants' str0m peers, what goes where, the
//! keyframe requests, the taps a recorder reads), the [`Hub`] that carries many rooms on
//! one UDP socket, the tokio task that drives a hub ([`driver`]), and a synthetic
//! participant for tests and the load benchmark ([`synthetic`], with the IVF and Ogg
//! readers it plays from, [`media_file`]).
//! Calls: the str0m crate; nothing else of ours but [`crate::clock::Clock`] (in the driver).
//! Called by: the visit signalling (offers and answers over the participants' WebSocket,
//! joins, leaves, the end), which owns a visit's rules, money and database rows; the
//! recorder, through a [`TapReceiver`] per side. Neither is wired yet.
//!
//! # Shape
//! [`Room`] and [`Hub`] are sans-IO cores, like str0m itself: they take datagrams, offers and
//! `now`, and return datagrams to send, [`RoomEvent`]s and the next deadline. The driver is
//! the only thing that touches a socket or a timer, so the unit tests connect in-memory
//! str0m clients through a room on a virtual clock.
//!
//! ```text
//!  browser A ──UDP──┐                       ┌─ Room (visit 1) ── Peer visitor ─┐ frames
//!  browser B ──UDP──┼─► one socket ─► Hub ──┤                    Peer inmate  ◄┘ both ways
//!  browser C ──UDP──┘   (driver task)       │                    Peer watcher(s) ◄ both sides
//!                                           └─ Room (visit 2) …      └─► taps (recorder)
//! ```
//!
//! # Decisions, and why
//! - **Frame-level forwarding (str0m's sample API), not RTP mode.** Each incoming frame
//!   (`MediaData`: a whole VP8 frame or Opus packet) is written to every receiver's
//!   `Writer` with its own RTP time and payload type mapped by codec parameters. Every
//!   leg then keeps its own sequence numbers, SSRCs, RTX history, NACK responder, TWCC
//!   sequence and pacer inside str0m, so a lossy receiver recovers from the gateway's
//!   send buffer without the sender (or the other receivers) knowing. In RTP mode we would
//!   rewrite SSRC/sequence/RTX per receiver ourselves and still need whole frames for the
//!   recorder (WebM stores frames), so the depacketizing would happen anyway on recorded
//!   visits. The cost is one depacketize per incoming frame and one packetize per receiver;
//!   the payload is one `Arc<[u8]>` shared by every receiver and the tap (no copy per
//!   receiver). If the load benchmark shows packetizing dominating, RTP mode is the lever.
//!   It does not (`bench/README.md`, "Visits": a hub at 100 recorded visits): packetizing
//!   and depacketizing are about 3 % of the hub's time; a `sendto` per datagram (12.5 %),
//!   SRTP (9 %), copies and allocation (14 %) and str0m's per-leg TWCC bookkeeping (4.6 %)
//!   weigh more. A hub is one thread: 250 recorded visits needed two hubs there.
//! - **Fixed m-lines, no renegotiation.** A participant offers one audio and one video
//!   m-line, `sendrecv`: what it sends goes to the other participant on that peer's same
//!   m-line. A watcher offers `recvonly` m-lines: the first audio and first video carry the
//!   visitor, the second audio and video the inmate (as live listening does for a call's two
//!   parties). Nobody ever needs a new offer mid-visit.
//! - **Rejoin is a new peer.** An offer for a side that is already present replaces its
//!   peer (the old one leaves with [`Left::Replaced`]); no ICE restart. The browser that
//!   reloaded has no old state anyway, and a network change gives a new offer from the page.
//!   The new receiver triggers a keyframe request to the other side.
//! - **Keyframes.** A receiver's PLI/FIR on a video m-line is forwarded to the side whose
//!   media that m-line carries (throttled to one per [`KEYFRAME_THROTTLE`] per sender, as a
//!   loss burst makes every receiver ask). The room asks itself when a receiver connects
//!   (joined, rejoined, a watcher arrives) and when a sender's frames arrive with a gap
//!   str0m's NACKs could not fill (`contiguous == false`).
//! - **NACK/RTX and bandwidth.** str0m answers NACKs from its per-leg send buffer and sends
//!   NACKs for gaps it receives when the browser offers `nack` and an RTX payload type, which
//!   VP8 in our codec config has. Bandwidth: str0m 0.24 has transport-wide congestion control
//!   (TWCC). It sends TWCC feedback for what it receives whenever the browser negotiates the
//!   `transport-cc` extension, so a browser's own send-side estimate adapts its encoder to
//!   the path toward the gateway. That is what makes a browser adapt, and it is always on.
//!   str0m's own estimate of the paths *toward* the browsers ([`RoomConfig::egress_bwe`],
//!   TWCC with padding probes) is off by default: it also turns on str0m's pacer, which
//!   holds each peer's output to the estimate. Measured in the watcher unit test (two
//!   VP8 streams of about 400 kbit/s toward one watcher, starting estimate 1 Mbit/s): 3
//!   and 4 of 10 frames arrived within 100 ms with it on, all 10 without it (with it on,
//!   all arrived within 2 s: delayed, not lost). Without simulcast or a transcoder an SFU
//!   cannot act on that estimate (it cannot make one receiver's copy smaller), so the
//!   pacing would only add latency. When on, estimates are reported as
//!   [`RoomEvent::Bitrate`]. REMB is not sent: str0m only reads it, and it could only cap
//!   the other side's encoder for the slowest receiver, which a later change may do.
//! - **H.264 only by decision of the caller.** The answer goes out before the other side has
//!   offered, so the room cannot see both offers; [`RoomConfig::h264`] (off by default) lets
//!   the signalling layer allow it once it knows both browsers offer it. Otherwise the
//!   answer has VP8 only. A frame whose codec a receiver did not negotiate is dropped and
//!   counted ([`RoomStats::codec_mismatch`]).
//! - **Taps never block.** A recorder reads frames (kind, codec, RTP time, keyframe flag,
//!   payload) through a bounded channel per side; a full channel drops the frame and counts
//!   it ([`TapReceiver::dropped`]); forwarding goes on.
//! - **Sockets.** A [`Hub`] owns no socket: its driver owns one UDP socket and hands each
//!   datagram to the hub, which remembers which room took each source address so str0m's
//!   `accepts` scan over the rooms runs once per peer (and again only if a remembered room
//!   refuses, e.g. after its peer left), not once per packet. More cores: one hub and one
//!   socket per worker; the signalling layer places a room on a worker.

pub mod driver;
mod hub;
pub mod media_file;
mod peer;
mod room;
pub mod synthetic;

pub use driver::{set_receive_buffer, spawn_hub, HubHandle, HubStats};
pub use hub::{Hub, HubOutput, RoomId};
pub use room::{Room, RoomOutput, RoomStats};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::RtcError;
use tokio::sync::mpsc;

/// A browser must complete ICE and DTLS within this long after the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Browsers send consent checks (STUN) every few seconds and RTCP every second or so; this
/// long without a datagram means the participant went away.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// At most one keyframe request is passed to a sender per this long.
pub const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);

/// The two sides of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The family member's browser.
    Visitor,
    /// The inmate's kiosk.
    Inmate,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Visitor => Side::Inmate,
            Side::Inmate => Side::Visitor,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Visitor => 0,
            Side::Inmate => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Visitor => "visitor",
            Side::Inmate => "inmate",
        }
    }
}

/// Who a peer in a room is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Participant {
    /// One of the two sides: sends and receives.
    Side(Side),
    /// A receive-only watcher (an investigator), numbered by the caller.
    Watcher(u32),
}

/// Why a participant's peer left the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// ICE and DTLS did not complete within [`CONNECT_TIMEOUT`].
    NeverConnected,
    /// ICE reported the browser gone.
    Disconnected,
    /// Nothing heard from the browser for [`IDLE_TIMEOUT`].
    Idle,
    /// The WebRTC core failed (logged).
    Failed,
    /// A new offer for the same participant replaced this peer (a rejoin).
    Replaced,
    /// The caller removed it ([`Room::remove`]).
    Removed,
}

impl Left {
    pub fn as_str(self) -> &'static str {
        match self {
            Left::NeverConnected => "never_connected",
            Left::Disconnected => "disconnected",
            Left::Idle => "idle",
            Left::Failed => "failed",
            Left::Replaced => "replaced",
            Left::Removed => "removed",
        }
    }
}

/// Why the room asked a sender for a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeReason {
    /// A receiver sent PLI or FIR.
    Receiver(Participant),
    /// A receiver connected (joined, rejoined, a watcher arrived).
    Joined(Participant),
    /// The sender's frames arrived with a gap NACKs did not fill.
    Loss,
    /// A recorder's tap opened: the recording starts with a keyframe.
    Recorder,
}

/// What a room reports to its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// ICE and DTLS-SRTP completed for this participant.
    Connected(Participant),
    /// The participant's peer is gone (and dropped from the room).
    Left(Participant, Left),
    /// Media has arrived from both sides since both last connected: billing may start.
    MediaFlowing,
    /// Media stopped flowing both ways (a side left after [`RoomEvent::MediaFlowing`]).
    MediaStopped,
    /// A keyframe request was sent to `sender`.
    KeyframeRequested {
        sender: Side,
        kind: KeyframeRequestKind,
        reason: KeyframeReason,
    },
    /// The estimated bandwidth toward a participant (bit/s), from its TWCC feedback.
    Bitrate { participant: Participant, bps: u64 },
}

/// Why an offer cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("the SDP offer does not parse: {0}")]
    BadSdp(String),
    #[error("the offer has no audio or video m-line the gateway can use (Opus, VP8)")]
    NoUsableMedia,
    #[error("the advertised address {0} cannot be an ICE candidate")]
    BadCandidate(SocketAddr),
    #[error("no room {0}")]
    NoRoom(u64),
    #[error("the SFU worker has stopped")]
    Stopped,
    #[error("WebRTC: {0}")]
    Rtc(#[from] RtcError),
}

/// A datagram to send from the room's (the hub's) socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// One frame as a side sent it, for the recorder.
#[derive(Debug, Clone)]
pub struct TapFrame {
    pub side: Side,
    pub kind: MediaKind,
    pub codec: Codec,
    /// RTP time, extended to 64 bits by str0m (monotonic per stream).
    pub rtp_time: u64,
    /// The RTP clock rate (48,000 for Opus, 90,000 for video).
    pub clock_rate: u32,
    /// A video keyframe (VP8 or H.264); always false for audio.
    pub keyframe: bool,
    /// When the frame's first packet arrived.
    pub arrived: Instant,
    pub payload: Arc<[u8]>,
}

/// What a recorder holds: the frames of one side, and how many were dropped because the
/// channel was full.
#[derive(Debug)]
pub struct TapReceiver {
    pub frames: mpsc::Receiver<TapFrame>,
    pub dropped: Arc<AtomicU64>,
}

/// The room's end of a tap.
#[derive(Debug)]
struct Tap {
    tx: mpsc::Sender<TapFrame>,
    dropped: Arc<AtomicU64>,
}

impl Tap {
    fn channel(capacity: usize) -> (Tap, TapReceiver) {
        let (tx, frames) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let tap = Tap {
            tx,
            dropped: dropped.clone(),
        };
        (tap, TapReceiver { frames, dropped })
    }

    /// Offers a frame; a full channel drops it and counts; a closed one says so.
    fn offer(&self, frame: TapFrame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// How a room answers and forwards.
#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    /// Answer H.264 to a participant that offers it (see the module doc).
    pub h264: bool,
    /// Estimate the bandwidth toward each browser (str0m's TWCC BWE, with probes and its
    /// pacer; off by default, see the module doc).
    pub egress_bwe: bool,
    /// The estimate a new path starts from.
    pub initial_bitrate_kbps: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            h264: false,
            egress_bwe: false,
            initial_bitrate_kbps: 1_000,
        }
    }
}
