//! Taps: copies of the audio a call sends to its legs, for the recorder and live monitors.
//!
//! A [`Tap`] attached with [`CallMedia::add_tap`](super::CallMedia::add_tap) receives a
//! [`TapPacket`] for every RTP packet the gateway sends toward either leg: the other
//! party's audio it forwards and the prompts and ringback it plays, after the relay
//! rewrote them into the gateway's own outgoing stream (so each direction has one SSRC,
//! and continuous sequence numbers and timestamps across forwarded audio and prompts).
//! Telephone-events are never sent between the legs, so they never reach a tap.
//!
//! The worker hands packets over with `try_send` on a bounded channel and never waits:
//! when the consumer is behind, the packet is dropped and counted (on the tap's own
//! counter and the engine's `tap_dropped`), and the call goes on. A packet is a fixed-size
//! value, so a channel created with room for N packets never allocates per packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use crate::media::relay::Side;
use crate::media::rtp::RtpView;

/// The largest RTP payload a tap carries: 60 ms of G.711 (the longest ptime phones use).
/// Larger payloads are dropped and counted.
pub const TAP_PAYLOAD_MAX: usize = 480;

/// One RTP packet the gateway sent toward a leg, as a tap sees it.
#[derive(Clone, Copy)]
pub struct TapPacket {
    /// The key the tap was attached with (a recording, a listener).
    pub key: u64,
    /// The leg the packet was sent to (so the audio is the *other* party's, or a prompt).
    pub toward: Side,
    /// When the worker sent it.
    pub at: Instant,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
    pub marker: bool,
    len: u16,
    payload: [u8; TAP_PAYLOAD_MAX],
}

impl TapPacket {
    /// The RTP payload (G.711 samples for the codecs the gateway negotiates).
    pub fn payload(&self) -> &[u8] {
        self.payload.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// A packet built by hand (tests, tools feeding a recorder without an engine).
    pub fn new(
        key: u64,
        toward: Side,
        at: Instant,
        rtp: RtpFields,
        payload: &[u8],
    ) -> Option<Self> {
        let mut p = TapPacket {
            key,
            toward,
            at,
            ssrc: rtp.ssrc,
            seq: rtp.seq,
            ts: rtp.ts,
            pt: rtp.pt,
            marker: rtp.marker,
            len: 0,
            payload: [0; TAP_PAYLOAD_MAX],
        };
        p.payload.get_mut(..payload.len())?.copy_from_slice(payload);
        p.len = u16::try_from(payload.len()).ok()?;
        Some(p)
    }
}

impl std::fmt::Debug for TapPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPacket")
            .field("key", &self.key)
            .field("toward", &self.toward)
            .field("seq", &self.seq)
            .field("ts", &self.ts)
            .field("pt", &self.pt)
            .field("len", &self.len)
            .finish()
    }
}

/// The RTP header fields of a [`TapPacket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
    pub marker: bool,
}

/// Where a tap's packets go: a thread blocking on a std channel (the recorder) or a tokio
/// task (a live listener). Both are bounded and fed with `try_send`.
#[derive(Debug, Clone)]
pub enum TapSink {
    Blocking(SyncSender<TapPacket>),
    Async(tokio::sync::mpsc::Sender<TapPacket>),
}

/// What `try_send` did.
enum Offer {
    Taken,
    Full,
    Closed,
}

impl TapSink {
    fn offer(&self, p: TapPacket) -> Offer {
        match self {
            TapSink::Blocking(tx) => match tx.try_send(p) {
                Ok(()) => Offer::Taken,
                Err(TrySendError::Full(_)) => Offer::Full,
                Err(TrySendError::Disconnected(_)) => Offer::Closed,
            },
            TapSink::Async(tx) => match tx.try_send(p) {
                Ok(()) => Offer::Taken,
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => Offer::Full,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
            },
        }
    }
}

/// A consumer attached to one call.
#[derive(Debug, Clone)]
pub struct Tap {
    /// Identifies the tap on its call (to remove it) and in its packets.
    pub key: u64,
    pub sink: TapSink,
    /// Packets this tap lost because its consumer was behind (or the payload too large).
    pub dropped: Arc<AtomicU64>,
}

impl Tap {
    pub fn new(key: u64, sink: TapSink) -> Tap {
        Tap {
            key,
            sink,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Offers one sent RTP packet (`rtp`, header included) to every tap of a call. Returns
/// how many offers were dropped; taps whose consumer is gone are removed.
pub(super) fn feed(taps: &mut Vec<Tap>, toward: Side, rtp: &[u8], at: Instant) -> u64 {
    if taps.is_empty() {
        return 0;
    }
    let Ok(view) = RtpView::parse(rtp) else {
        return 0;
    };
    let fields = RtpFields {
        ssrc: view.ssrc(),
        seq: view.sequence(),
        ts: view.timestamp(),
        pt: view.payload_type(),
        marker: view.marker(),
    };
    let mut dropped = 0;
    taps.retain(|tap| {
        let Some(p) = TapPacket::new(tap.key, toward, at, fields, view.payload()) else {
            tap.dropped.fetch_add(1, Ordering::Relaxed);
            dropped += 1;
            return true;
        };
        match tap.sink.offer(p) {
            Offer::Taken => true,
            Offer::Full => {
                tap.dropped.fetch_add(1, Ordering::Relaxed);
                dropped += 1;
                true
            }
            Offer::Closed => false,
        }
    });
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 7];
        b[2..4].copy_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn a_full_tap_counts_its_drops_and_a_closed_one_is_removed() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (tx2, rx2) = std::sync::mpsc::sync_channel(4);
        let mut taps = vec![
            Tap::new(1, TapSink::Blocking(tx)),
            Tap::new(2, TapSink::Blocking(tx2)),
        ];
        let now = Instant::now();
        assert_eq!(feed(&mut taps, Side::B, &rtp(1, &[1, 2, 3]), now), 0);
        assert_eq!(feed(&mut taps, Side::B, &rtp(2, &[4]), now), 1);
        assert_eq!(taps[0].dropped.load(Ordering::Relaxed), 1);
        let p = rx.recv().unwrap();
        assert_eq!(
            (p.key, p.seq, p.ts, p.ssrc, p.payload()),
            (1, 1, 160, 7, &[1u8, 2, 3][..])
        );
        drop(rx2);
        feed(&mut taps, Side::A, &rtp(3, &[5]), now);
        assert_eq!(taps.len(), 1, "the tap whose consumer went away is gone");
        assert_eq!(rx.recv().unwrap().toward, Side::A);
    }

    #[test]
    fn oversized_payloads_are_counted_not_truncated() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let mut taps = vec![Tap::new(1, TapSink::Blocking(tx))];
        let big = vec![0u8; TAP_PAYLOAD_MAX + 1];
        assert_eq!(feed(&mut taps, Side::A, &rtp(1, &big), Instant::now()), 1);
        assert!(rx.try_recv().is_err());
    }
}
