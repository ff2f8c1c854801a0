//! When each leg of a call last sent media: the relay's stamp (`Leg::last_rtp`), published
//! by the call's worker on the packet path, read by the call's task for the media timeout
//! (the `call` module doc).
//!
//! What counts: a well-formed RTP packet from the leg's negotiated or latched peer, whether
//! it is forwarded, kept (muted direction, a key press) or dropped for a payload type the
//! leg did not negotiate (comfort noise from a phone that suppresses silence: not relayed,
//! but the peer is there). What does not: RTCP (on its own port or muxed), packets from
//! anyone else, malformed packets. RTCP is left out on purpose: a phone whose audio path
//! is gone (a crashed media thread, a one-way NAT pinhole, a trunk that dropped the bearer)
//! can keep sending receiver reports, and they say nothing about whether anybody is still
//! on the line.
//!
//! The stamp is one relaxed atomic store per packet into memory of this call alone (no
//! lock, no allocation, no sharing between calls); its resolution is the worker's loop
//! time in milliseconds, which is all a timeout of seconds needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::call::index;
use crate::media::relay::Side;

/// Per leg, when its last valid RTP packet was received (see the module doc).
#[derive(Debug)]
pub(crate) struct RtpActivity {
    /// Time zero of the stamps: when the call was opened, on the media workers' clock.
    epoch: Instant,
    /// Per side: milliseconds from `epoch` to the receive loop that took the leg's last
    /// valid RTP packet, plus one; 0 while none has come.
    last: [AtomicU64; 2],
}

impl RtpActivity {
    pub(super) fn new(epoch: Instant) -> Self {
        RtpActivity {
            epoch,
            last: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// A valid RTP packet from `side`'s peer was received at `now` (worker thread).
    pub(super) fn heard(&self, side: Side, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        let stamp = u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1);
        self.last[index(side)].store(stamp, Ordering::Relaxed);
    }

    /// When `side`'s last valid RTP packet was received, on the media workers' clock.
    pub(super) fn last(&self, side: Side) -> Option<Instant> {
        match self.last[index(side)].load(Ordering::Relaxed) {
            0 => None,
            stamp => self.epoch.checked_add(Duration::from_millis(stamp - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_per_side_to_the_millisecond() {
        let t0 = Instant::now();
        let a = RtpActivity::new(t0);
        assert_eq!((a.last(Side::A), a.last(Side::B)), (None, None));
        a.heard(Side::B, t0 + Duration::from_micros(2_500_900));
        assert_eq!(a.last(Side::A), None);
        assert_eq!(a.last(Side::B), Some(t0 + Duration::from_millis(2_500)));
        // A packet in the very loop that opened the call still counts.
        a.heard(Side::A, t0);
        assert_eq!(a.last(Side::A), Some(t0));
    }
}
