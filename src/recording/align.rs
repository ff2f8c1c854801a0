//! Puts each side's packets on one time line (sans-IO: packets and times in, interleaved
//! stereo samples out).
//!
//! A channel is the stream the gateway sent toward one leg: left is what went to the
//! called party (the inmate's voice and any prompt played to the called party), right is
//! what went to the inmate (the called party's voice, the warning prompts). The gateway
//! owns both streams (one SSRC each, continuous sequence numbers and timestamps across
//! forwarded audio and its own prompts), so a packet's place is its RTP timestamp: the
//! first packet of a stream is anchored at its arrival time since the recording started,
//! and every later one at `anchor + (timestamp − anchor timestamp)`. Loss leaves a gap
//! (filled with silence), reordering lands each packet where its timestamp says, a
//! duplicate overwrites the same samples. A stream re-anchors on arrival when its SSRC
//! changes, when a packet in sequence order would land where the file is already written
//! (the sender's timestamps fell behind real time: a slow clock, a source switched behind
//! one SSRC; placed late rather than lost), or when a timestamp runs more than
//! [`REANCHOR_SAMPLES`] ahead of arrival.
//!
//! Samples become final [`DELAY_SAMPLES`] behind the latest packet's arrival (packets of
//! one call come from one media worker, in send order, so only the network's reordering
//! can be later than that); a packet arriving after its place was written is counted
//! `late` and dropped.

use std::collections::VecDeque;
use std::time::Instant;

use super::wav::{Law, SAMPLE_RATE};
use crate::media::engine::TapPacket;
use crate::media::g711;
use crate::media::relay::Side;

/// RFC 3389 comfort noise (static payload type 13).
const PT_COMFORT_NOISE: u8 = 13;

/// How far behind the newest arrival samples are held for late packets (200 ms).
pub const DELAY_SAMPLES: u64 = SAMPLE_RATE as u64 / 5;
/// How far behind the recorder's clock silence becomes final when no packet comes (2 s:
/// more than the recorder's queue holds at full load, so a busy recorder does not turn
/// queued packets into late ones).
pub const QUIET_SAMPLES: u64 = 2 * SAMPLE_RATE as u64;
/// A timestamp this far (2 s) from the arrival time re-anchors the stream.
pub const REANCHOR_SAMPLES: i64 = 2 * SAMPLE_RATE as i64;

/// Where a stream's timestamps sit on the recording's time line.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    ts: u32,
    pos: u64,
}

/// One channel's samples not yet written.
#[derive(Debug, Default)]
struct Channel {
    anchor: Option<Anchor>,
    /// The highest sequence number seen on the anchored stream (what "in order" means).
    highest_seq: Option<u16>,
    /// Samples from the aligner's `written` position on.
    pending: VecDeque<u8>,
}

/// Counters of one recording's alignment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlignStats {
    pub packets: u64,
    /// Arrived after their samples were written.
    pub late: u64,
    /// Not G.711 (comfort noise, an unexpected payload type): ignored.
    pub foreign: u64,
    pub reanchors: u64,
}

/// What [`Aligner::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Placed,
    /// Its place was already written.
    Late,
    /// Not audio (comfort noise).
    Foreign,
}

/// The time line of one recording.
#[derive(Debug)]
pub struct Aligner {
    law: Law,
    start: Instant,
    channels: [Channel; 2],
    /// Frames already handed out (both channels).
    written: u64,
    /// The latest arrival seen, in samples since `start`.
    newest: u64,
    stats: AlignStats,
}

fn channel_of(toward: Side) -> usize {
    match toward {
        Side::B => 0, // sent to the called party: the inmate's side
        Side::A => 1,
    }
}

fn samples_since(start: Instant, at: Instant) -> u64 {
    let d = at.saturating_duration_since(start);
    (d.as_micros() as u64).saturating_mul(u64::from(SAMPLE_RATE)) / 1_000_000
}

impl Aligner {
    /// A recording that starts at `start`, written in `law`.
    pub fn new(law: Law, start: Instant) -> Aligner {
        Aligner {
            law,
            start,
            channels: [Channel::default(), Channel::default()],
            written: 0,
            newest: 0,
            stats: AlignStats::default(),
        }
    }

    pub fn law(&self) -> Law {
        self.law
    }

    pub fn stats(&self) -> AlignStats {
        self.stats
    }

    /// Frames handed out so far.
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    /// Places one packet.
    /// Places one packet; says whether it was placed (a late or non-audio packet is not).
    pub fn push(&mut self, p: &TapPacket) -> Pushed {
        // Static 0/8 say which law; comfort noise is not audio; any other type is a peer's
        // own mapping of the leg's codec (the relay forwards only the negotiated one).
        let law = match (Law::of_payload_type(p.pt), p.pt) {
            (Some(law), _) => law,
            (None, PT_COMFORT_NOISE) => {
                self.stats.foreign += 1;
                return Pushed::Foreign;
            }
            (None, _) => self.law,
        };
        self.stats.packets += 1;
        let arrival = samples_since(self.start, p.at);
        self.newest = self.newest.max(arrival);
        let ch = channel_of(p.toward);
        let payload = p.payload();
        let pos = self.place(ch, p, arrival, payload.len() as u64);
        let skip = pos.map_or(u64::MAX, |pos| self.written.saturating_sub(pos));
        let Some(pos) = pos.filter(|_| skip < payload.len() as u64) else {
            self.stats.late += 1;
            return Pushed::Late;
        };
        // Payload byte i belongs at `pos + i`, i.e. at `pending[pos + i - written]`.
        let start = usize::try_from(pos.saturating_sub(self.written)).unwrap_or(usize::MAX);
        let skip = skip as usize;
        let bytes = payload.get(skip..).unwrap_or(&[]);
        let pending = &mut self.channels[ch].pending;
        let needed = start.saturating_add(bytes.len());
        if needed > pending.len() {
            pending.resize(needed, self.law.silence());
        }
        for (slot, &b) in pending.range_mut(start..needed).zip(bytes) {
            *slot = convert(law, self.law, b);
        }
        Pushed::Placed
    }

    /// The sample position of a packet, re-anchoring the channel when needed: on a new
    /// SSRC; when an in-order packet (a sequence number above any seen) would land where
    /// the file is already written — the sender's timestamps fell behind real time (a
    /// clock slower than ours, a source switched behind one SSRC): better placed at its
    /// arrival than lost; and when a timestamp is more than [`REANCHOR_SAMPLES`] ahead of
    /// arrival. A reordered or duplicate packet keeps its timestamp's place (and is late
    /// if that was written). A new anchor is never before what is written.
    fn place(&mut self, ch: usize, p: &TapPacket, arrival: u64, len: u64) -> Option<u64> {
        let written = self.written;
        let c = &mut self.channels[ch];
        let same_stream = c.anchor.is_some_and(|a| a.ssrc == p.ssrc);
        let in_order = !same_stream
            || c.highest_seq
                .is_none_or(|h| (p.seq.wrapping_sub(h) as i16) > 0);
        if in_order {
            c.highest_seq = Some(p.seq);
        }
        if let Some(a) = c.anchor.filter(|_| same_stream) {
            let delta = i64::from(p.ts.wrapping_sub(a.ts) as i32);
            let pos = a.pos as i64 + delta;
            let ahead = pos - arrival as i64 > REANCHOR_SAMPLES;
            let lost_behind = pos < 0 || (pos as u64).saturating_add(len) <= written;
            if !in_order {
                return u64::try_from(pos).ok();
            }
            if !(ahead || lost_behind) {
                return Some(pos as u64);
            }
        }
        if c.anchor.is_some() {
            self.stats.reanchors += 1;
        }
        let pos = arrival.max(written);
        c.anchor = Some(Anchor {
            ssrc: p.ssrc,
            ts: p.ts,
            pos,
        });
        Some(pos)
    }

    /// Hands out the frames that became final by `now`, interleaved (left, right, …):
    /// those [`DELAY_SAMPLES`] behind the newest packet, and when both sides are quiet
    /// (nothing sent: the file must still grow with the call) those [`QUIET_SAMPLES`]
    /// behind `now`.
    pub fn drain_ready(&mut self, now: Instant, out: &mut Vec<u8>) {
        let by_packets = self.newest.saturating_sub(DELAY_SAMPLES);
        let by_clock = samples_since(self.start, now).saturating_sub(QUIET_SAMPLES);
        self.drain_until(by_packets.max(by_clock), out);
    }

    /// Hands out everything up to `end` (the recording stops there), padding with silence.
    pub fn finish(&mut self, end: Instant, out: &mut Vec<u8>) {
        let until = samples_since(self.start, end);
        self.drain_until(until, out);
        for c in &mut self.channels {
            c.pending.clear();
        }
    }

    fn drain_until(&mut self, until: u64, out: &mut Vec<u8>) {
        let frames = until.saturating_sub(self.written);
        let Ok(n) = usize::try_from(frames) else {
            return;
        };
        let silence = self.law.silence();
        out.reserve(n * 2);
        for _ in 0..n {
            for c in &mut self.channels {
                out.push(c.pending.pop_front().unwrap_or(silence));
            }
        }
        self.written += frames;
    }
}

/// One G.711 byte from `from` law to `to` law (the legs may have negotiated different ones).
fn convert(from: Law, to: Law, b: u8) -> u8 {
    let mut one = [b];
    g711::convert_in_place(&mut one, from, to);
    one[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::engine::RtpFields;
    use std::time::Duration;

    const PT_PCMU: u8 = 0;

    fn packet(start: Instant, toward: Side, seq: u16, ms: u64, byte: u8) -> TapPacket {
        let rtp = RtpFields {
            ssrc: if toward == Side::A { 1 } else { 2 },
            seq,
            ts: 1000 + u32::from(seq) * 160,
            pt: PT_PCMU,
            marker: false,
        };
        let at = start + Duration::from_millis(ms);
        TapPacket::new(7, toward, at, rtp, &[byte; 160]).unwrap()
    }

    fn channels(out: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (
            out.iter().step_by(2).copied().collect(),
            out.iter().skip(1).step_by(2).copied().collect(),
        )
    }

    #[test]
    fn each_side_lands_on_its_channel_at_its_time_with_silence_between() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        // Inmate audio (sent toward B) from 100 ms, called party (toward A) from 500 ms.
        for i in 0..10u16 {
            a.push(&packet(t0, Side::B, i, 100 + 20 * u64::from(i), 0x11));
            a.push(&packet(t0, Side::A, i, 500 + 20 * u64::from(i), 0x22));
        }
        let mut out = Vec::new();
        a.finish(t0 + Duration::from_secs(1), &mut out);
        let (left, right) = channels(&out);
        assert_eq!(left.len(), 8000);
        assert!(left[..800].iter().all(|&b| b == 0xFF));
        assert!(left[800..2400].iter().all(|&b| b == 0x11));
        assert!(left[2400..].iter().all(|&b| b == 0xFF));
        assert!(right[..4000].iter().all(|&b| b == 0xFF));
        assert!(right[4000..5600].iter().all(|&b| b == 0x22));
    }

    #[test]
    fn loss_leaves_a_gap_and_reordering_lands_by_timestamp() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        a.push(&packet(t0, Side::B, 0, 0, 1));
        a.push(&packet(t0, Side::B, 2, 40, 3)); // 1 arrives after 2
        a.push(&packet(t0, Side::B, 1, 45, 2));
        a.push(&packet(t0, Side::B, 4, 80, 5)); // 3 is lost
        let mut out = Vec::new();
        a.finish(t0 + Duration::from_millis(100), &mut out);
        let (left, _) = channels(&out);
        let frame = |n: usize| left[n * 160..(n + 1) * 160].to_vec();
        assert_eq!(frame(0), vec![1; 160]);
        assert_eq!(frame(1), vec![2; 160]);
        assert_eq!(frame(2), vec![3; 160]);
        assert_eq!(frame(3), vec![0xFF; 160], "the lost packet is silence");
        assert_eq!(frame(4), vec![5; 160]);
    }

    #[test]
    fn samples_become_final_behind_the_newest_arrival_and_later_packets_count_late() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        for i in 0..50u16 {
            a.push(&packet(t0, Side::B, i, 20 * u64::from(i), 9));
        }
        let mut out = Vec::new();
        a.drain_ready(t0 + Duration::from_millis(980), &mut out);
        assert_eq!(out.len() as u64, 2 * (49 * 160 - DELAY_SAMPLES));
        a.push(&packet(t0, Side::B, 3, 1000, 7)); // its place was written long ago
        assert_eq!(a.stats().late, 1);
        out.clear();
        a.finish(t0 + Duration::from_millis(1000), &mut out);
        assert_eq!(a.frames_written(), 8000);
    }

    /// A sender whose timestamps fall behind real time (a slow clock, or a step back
    /// behind one SSRC) is re-anchored when it would be written over, not dropped.
    #[test]
    fn timestamps_falling_behind_arrival_lose_nothing() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        let mut out = Vec::new();
        let mut sent = 0u64;
        // 60 s of packets; at 20 s the timestamps step back 1.5 s; all the while the
        // sender's clock runs 0.5 % slow (timestamps advance 159.2 samples per 20 ms).
        for i in 0..3000u64 {
            let mut p = packet(t0, Side::B, i as u16, 20 * i, 0x33);
            let mut ts = 1000 + (i as f64 * 159.2) as u32;
            if i >= 1000 {
                ts = ts.wrapping_sub(12_000);
            }
            p.ts = ts;
            a.push(&p);
            sent += 1;
            if i % 50 == 49 {
                a.drain_ready(t0 + Duration::from_millis(20 * i), &mut out);
            }
        }
        a.finish(t0 + Duration::from_millis(60_020), &mut out);
        assert_eq!(a.stats().late, 0, "no packet dropped");
        assert_eq!(a.stats().packets, sent);
        let (left, _) = channels(&out);
        let heard = left.iter().filter(|&&b| b == 0x33).count();
        // Every packet's 160 samples are in the file, less the overlap of the slow clock's
        // 0.8 samples per packet (later packets overwrite the last 0.8 of the previous).
        assert!(
            heard as f64 >= 3000.0 * 159.0,
            "{heard} samples of audio kept"
        );
    }

    #[test]
    fn a_reordered_packet_keeps_its_timestamp_place_and_a_duplicate_is_not_in_order() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        a.push(&packet(t0, Side::B, 5, 50, 1));
        a.push(&packet(t0, Side::B, 4, 60, 2)); // older: 160 samples before 5
        a.push(&packet(t0, Side::B, 5, 65, 1)); // a duplicate
        a.push(&packet(t0, Side::B, 0, 70, 9)); // before the recording began: late
        let mut out = Vec::new();
        a.finish(t0 + Duration::from_millis(200), &mut out);
        let (left, _) = channels(&out);
        assert!(
            left[240..400].iter().all(|&b| b == 2),
            "the older packet before"
        );
        assert!(left[400..560].iter().all(|&b| b == 1), "then its successor");
        assert_eq!((a.stats().reanchors, a.stats().late), (0, 1));
    }

    #[test]
    fn a_quiet_call_still_grows_with_the_clock() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        let mut out = Vec::new();
        a.drain_ready(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len() as u64, 2 * (5 * 8000 - QUIET_SAMPLES));
        assert!(out.iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn a_new_ssrc_re_anchors_on_arrival() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        a.push(&packet(t0, Side::A, 0, 0, 1));
        let mut p = packet(t0, Side::A, 0, 500, 2);
        p.ssrc = 99;
        p.ts = 5; // unrelated timestamp space
        a.push(&p);
        let mut out = Vec::new();
        a.finish(t0 + Duration::from_millis(600), &mut out);
        let (_, right) = channels(&out);
        assert_eq!(right[4000], 2);
        assert_eq!(a.stats().reanchors, 1);
    }

    #[test]
    fn the_other_law_is_converted_and_foreign_payloads_ignored() {
        let t0 = Instant::now();
        let mut a = Aligner::new(Law::Ulaw, t0);
        let mut p = packet(t0, Side::A, 0, 0, 0xD5); // A-law silence
        p.pt = 8;
        a.push(&p);
        let mut cn = packet(t0, Side::A, 1, 20, 0);
        cn.pt = 13;
        a.push(&cn);
        let mut out = Vec::new();
        a.finish(t0 + Duration::from_millis(20), &mut out);
        let (_, right) = channels(&out);
        assert!(right.iter().all(|&b| Law::Ulaw.decode(b).abs() <= 8));
        assert_eq!(a.stats().foreign, 1);
    }
}
