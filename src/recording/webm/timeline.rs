//! Where a frame goes on a recording's time line (milliseconds from the file's start), from
//! its RTP timestamp and the instant it arrived. Pure: the caller passes every instant.
//!
//! - **Origin.** Time 0 is the arrival of the file's first frame, of either track.
//! - **Within a track, RTP time.** A track's first frame is placed at its arrival; every
//!   later frame at that place plus its RTP timestamp's distance from the first one, in the
//!   track's clock (90 kHz video, 48 kHz Opus; to the nearest millisecond), wrap of the
//!   32-bit timestamp included. So
//!   a track keeps the sender's spacing, not the network's jitter.
//! - **Across tracks and files, arrival.** RTP timestamps of two tracks start at unrelated
//!   random values, and two participants' devices have unrelated clocks; what they share is
//!   the gateway's clock, on which every frame arrives. Anchoring each track at an arrival
//!   aligns the tracks of a file (to within the first frames' network delay), and the files
//!   of one visit with each other through their wall-clock starts.
//! - **Discontinuities.** When a frame's RTP place and its arrival are more than
//!   [`RESYNC_MS`] apart, the stream cannot be the one the anchor belongs to (a new SSRC
//!   after a rejoin, a sender restart, a timestamp jump): the track is anchored again at
//!   that frame's arrival. A late burst after a network stall is re-anchored too, and the
//!   first frame on time after it anchors the track back. Smaller differences (jitter, a
//!   short stall, drift of the sender's clock) keep RTP time.
//! - **Never backwards.** A frame whose place falls before the track's last one is placed
//!   at the last one: within a track, times only grow.

use std::time::{Duration, Instant};

/// The distance between RTP time and arrival beyond which a track is anchored again.
pub(crate) const RESYNC_MS: u64 = 2_000;

/// One track's clock.
#[derive(Debug, Clone)]
pub(crate) struct TrackClock {
    rate: i64,
    anchor: Option<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// The last timestamp seen (for unwrapping the next).
    last_ts: u32,
    /// RTP ticks from the anchor frame to the last one (wrap undone).
    ticks: i64,
    /// Where the anchor frame was placed.
    at_ms: i64,
    /// Where the last frame was placed.
    last_ms: i64,
}

/// A frame's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) ms: u64,
    /// The track was anchored again at this frame.
    pub(crate) resynced: bool,
}

impl TrackClock {
    pub(crate) fn new(rate: u32) -> TrackClock {
        TrackClock {
            rate: i64::from(rate.max(1)),
            anchor: None,
        }
    }

    /// Places a frame with RTP timestamp `ts` that arrived `arrival_ms` after the origin.
    pub(crate) fn place(&mut self, ts: u32, arrival_ms: u64) -> Placed {
        let arrival = i64::try_from(arrival_ms).unwrap_or(i64::MAX);
        let Some(a) = self.anchor.as_mut() else {
            self.anchor = Some(Anchor {
                last_ts: ts,
                ticks: 0,
                at_ms: arrival,
                last_ms: arrival,
            });
            return Placed {
                ms: arrival_ms,
                resynced: false,
            };
        };
        // The signed distance from the last timestamp: a wrap forward is a small step.
        let step = i64::from(ts.wrapping_sub(a.last_ts) as i32);
        a.last_ts = ts;
        a.ticks = a.ticks.saturating_add(step);
        // To the nearest millisecond (as ffmpeg's own muxer rounds): 15 fps frames land
        // 67, 133, 200 ms apart from the first, never two in one 1/15 s.
        let ms_since_anchor = a
            .ticks
            .saturating_mul(1000)
            .saturating_add(self.rate / 2)
            .div_euclid(self.rate);
        let rtp_ms = a.at_ms.saturating_add(ms_since_anchor);
        let resynced = rtp_ms.abs_diff(arrival) > RESYNC_MS;
        let ms = if resynced {
            a.ticks = 0;
            a.at_ms = arrival;
            arrival
        } else {
            rtp_ms
        };
        a.last_ms = ms.max(a.last_ms);
        Placed {
            ms: u64::try_from(a.last_ms).unwrap_or(0),
            resynced,
        }
    }
}

/// Milliseconds from `origin` to `at` (0 when `at` is earlier).
pub(crate) fn ms_since(origin: Instant, at: Instant) -> u64 {
    let d: Duration = at.saturating_duration_since(origin);
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_time_is_kept_against_jitter_and_across_the_wrap() {
        let mut c = TrackClock::new(90_000);
        let start = u32::MAX - 5_999; // the third frame wraps
        assert_eq!(c.place(start, 40).ms, 40);
        // 6000 ticks = 66.67 ms at 90 kHz; arrivals jitter, the places do not.
        assert_eq!(c.place(start.wrapping_add(6_000), 150).ms, 107);
        assert_eq!(c.place(start.wrapping_add(12_000), 160).ms, 173);
        assert_eq!(c.place(start.wrapping_add(18_000), 200).ms, 240);
        // An hour later (many wraps away in steps), still RTP time.
        let mut ts = start.wrapping_add(18_000);
        let mut placed = 0;
        for i in 1..=54_000u64 {
            ts = ts.wrapping_add(6_000);
            placed = c.place(ts, 240 + i * 200 / 3).ms;
        }
        assert_eq!(placed, 240 + 3_600_000);
    }

    #[test]
    fn opus_at_48_khz() {
        let mut c = TrackClock::new(48_000);
        assert_eq!(c.place(1_000, 0).ms, 0);
        assert_eq!(c.place(1_960, 25).ms, 20);
        assert_eq!(c.place(2_920, 35).ms, 40);
    }

    #[test]
    fn a_jump_is_anchored_again_at_arrival_and_a_late_burst_recovers() {
        let mut c = TrackClock::new(48_000);
        c.place(0, 0);
        c.place(960, 20);
        // A new stream (rejoin): random timestamps.
        let p = c.place(123_456_789, 5_000);
        assert_eq!(
            p,
            Placed {
                ms: 5_000,
                resynced: true
            }
        );
        assert_eq!(c.place(123_456_789 + 960, 5_021).ms, 5_020);
        // A 3 s stall, then a burst of the held frames arriving at once.
        let base = 123_456_789 + 960;
        let late = c.place(base + 960, 8_100);
        assert!(late.resynced);
        assert_eq!(late.ms, 8_100);
        // The next frame on time anchors the track back to where RTP time and arrival agree.
        let back = c.place(base + 960 * 200, 5_020 + 4_000);
        assert!(back.resynced);
        assert_eq!(back.ms, 9_020);
    }

    #[test]
    fn times_never_go_backwards() {
        let mut c = TrackClock::new(90_000);
        c.place(90_000, 1_000);
        // An older frame (reordered): placed at the last time, not before it.
        assert_eq!(c.place(0, 1_010).ms, 1_000);
        assert_eq!(c.place(99_000, 1_100).ms, 1_100);
    }

    #[test]
    fn extreme_input_saturates_instead_of_panicking() {
        let mut c = TrackClock::new(0);
        c.place(0, u64::MAX);
        for ts in [u32::MAX, 0, 1 << 31, 7] {
            c.place(ts, u64::MAX);
            c.place(ts, 0);
        }
        let now = Instant::now();
        assert_eq!(ms_since(now + Duration::from_secs(1), now), 0);
    }
}
