//! One call as its worker holds it: the relay core, the legs' sockets, and what the
//! gateway itself plays to each side (prompt queue, ringback), paced at the leg's ptime.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::activity::RtpActivity;
use super::sys::MAX_DATAGRAM;
use super::tap::{self, Tap};
use super::worker::{Counters, Frame, FrameOut};
use super::{Events, MediaEvent};
use crate::media::ports::PortPair;
use crate::media::prompts::{Prompt, PromptId, PromptPlayer, PromptSet, SAMPLE_RATE};
use crate::media::relay::{LatchPolicy, LegConfig, Relay, Side};
use crate::media::rtp::RTP_HEADER_LEN;
use crate::media::sdp::NegotiatedMedia;

/// Frames sent at once when the worker woke late; beyond that the pacing restarts from
/// now (a burst would only overflow the far end's jitter buffer).
const MAX_CATCH_UP: u32 = 3;

/// US ringback (ANSI T1.401): 440 Hz + 480 Hz, 2 s on, 4 s off; each tone at −19 dBm0.
pub(super) fn ringback_prompt() -> Prompt {
    const AMPLITUDE: f64 = 2_500.0;
    let rate = SAMPLE_RATE as usize;
    let samples: Vec<i16> = (0..6 * rate)
        .map(|n| {
            if n >= 2 * rate {
                return 0;
            }
            let t = n as f64 / f64::from(SAMPLE_RATE);
            let tau = std::f64::consts::TAU;
            let s = AMPLITUDE * ((tau * 440.0 * t).sin() + (tau * 480.0 * t).sin());
            s as i16
        })
        .collect();
    Prompt::from_samples(&samples)
}

/// A leg's bound sockets and the port pair they hold.
#[derive(Debug)]
pub(crate) struct LegSockets {
    pub(super) rtp: UdpSocket,
    pub(super) rtcp: UdpSocket,
    pub(super) pair: PortPair,
    /// The worker's multishot receivers of `rtp`, `rtcp` and `twin` (`None` with epoll).
    pub(super) rx: [Option<usize>; 3],
    /// A second RTP socket on the same port, connected to the peer, and the peer
    /// (multishot only; see `sys::connected_twin`): the peer's datagrams arrive on it and
    /// the leg's forwards leave from it without a destination, so the kernel neither
    /// looks up a route nor copies an address per packet. Everyone else's datagrams
    /// still arrive on `rtp`, to be dropped and counted as before.
    pub(super) twin: Option<(UdpSocket, SocketAddr)>,
    /// The RTP socket's drop count as the kernel last reported it (epoll paths).
    pub(super) kernel_drops: u32,
}

/// What the gateway plays to one side.
#[derive(Debug, Default)]
struct Output {
    /// Prompts waiting after `current`.
    queue: VecDeque<PromptId>,
    current: Option<PromptPlayer>,
    /// `PromptsDone` events owed when the queue runs empty (one per `play`).
    owed: u32,
    /// The looping ringback (side A only), while ringback is on.
    ringback: Option<PromptPlayer>,
    /// When the next frame is due; `None` while nothing plays.
    next_due: Option<Instant>,
    /// Pacing: frame times are `base + samples_sent / 8 kHz`, so they do not drift.
    base: Option<Instant>,
    samples_sent: u64,
}

impl Output {
    fn due_after(&self, base: Instant) -> Instant {
        base + Duration::from_micros(self.samples_sent * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}

/// Where the next local frame comes from.
enum Source {
    Prompt,
    Ringback,
}

/// Resources a call needs from its worker while it plays.
pub(super) struct Ctx<'a> {
    pub(super) prompts: &'a PromptSet,
    pub(super) ringback: &'a Prompt,
    pub(super) scratch: &'a mut [u8; MAX_DATAGRAM],
    pub(super) counters: &'a mut Counters,
    /// Where the frames go (the worker's batched send path, or one system call each).
    pub(super) out: FrameOut<'a>,
}

/// One call on its worker.
pub(super) struct CallState {
    pub(super) id: u64,
    pub(super) relay: Relay,
    pub(super) sockets: [Option<LegSockets>; 2],
    pub(super) events: Events,
    out: [Output; 2],
    ringback_on: bool,
    bridged: bool,
    /// Consumers of what the call sends (recorder, live listeners); see `tap`.
    pub(super) taps: Vec<Tap>,
    /// When each leg last sent valid RTP, shared with the call's `CallMedia`.
    pub(super) activity: Arc<RtpActivity>,
}

pub(super) fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl CallState {
    pub(super) fn new(id: u64, events: Events, activity: Arc<RtpActivity>) -> Self {
        let mut relay = Relay::empty();
        // Keypresses are detected on both legs but never passed between them (module doc).
        relay.set_forward_events(false);
        CallState {
            id,
            relay,
            sockets: [None, None],
            events,
            out: [Output::default(), Output::default()],
            ringback_on: false,
            bridged: false,
            taps: Vec::new(),
            activity,
        }
    }

    /// The RTP socket of a side (or RTCP with `rtcp`).
    pub(super) fn fd(&self, side: Side, rtcp: bool) -> Option<RawFd> {
        let s = self.sockets[index(side)].as_ref()?;
        Some(if rtcp {
            s.rtcp.as_raw_fd()
        } else {
            s.rtp.as_raw_fd()
        })
    }

    pub(super) fn emit(&self, event: MediaEvent) {
        // A closed receiver means the call task is gone; its Drop closes us shortly.
        let _ = self.events.send(event);
    }

    pub(super) fn set_leg(&mut self, side: Side, config: LegConfig, now: Instant) {
        match self.relay.leg_mut(side) {
            Some(leg) => leg.update_media(config.media),
            None => self.relay.set_leg(side, config),
        }
        self.kick(side, now);
    }

    /// The leg's negotiated media, if it can be played to (leg and sockets present).
    fn playable(&self, side: Side) -> Option<NegotiatedMedia> {
        self.sockets[index(side)].as_ref()?;
        self.relay.leg(side).map(|l| *l.media())
    }

    pub(super) fn play(&mut self, side: Side, prompt: PromptId, now: Instant) {
        if self.playable(side).is_none() {
            self.emit(MediaEvent::PromptsDone { side });
            return;
        }
        let o = &mut self.out[index(side)];
        o.queue.push_back(prompt);
        o.owed += 1;
        self.kick(side, now);
    }

    pub(super) fn stop(&mut self, side: Side) {
        let o = &mut self.out[index(side)];
        o.queue.clear();
        o.current = None;
        o.owed = 0;
        if o.ringback.is_none() && !(side == Side::A && self.ringback_on) {
            o.next_due = None;
        }
        self.update_mute(side);
    }

    pub(super) fn set_ringback(&mut self, on: bool, now: Instant) {
        self.ringback_on = on;
        if on {
            self.kick(Side::A, now);
        } else {
            let o = &mut self.out[0];
            o.ringback = None;
            if o.current.is_none() && o.queue.is_empty() {
                o.next_due = None;
            }
            self.update_mute(Side::A);
        }
    }

    pub(super) fn bridge(&mut self, on: bool) {
        self.bridged = on;
        self.update_mute(Side::A);
        self.update_mute(Side::B);
    }

    /// Starts pacing a side that has something to play and was idle.
    pub(super) fn kick(&mut self, side: Side, now: Instant) {
        let o = &self.out[index(side)];
        let content =
            o.current.is_some() || !o.queue.is_empty() || (side == Side::A && self.ringback_on);
        if o.next_due.is_none() && content && self.playable(side).is_some() {
            let o = &mut self.out[index(side)];
            o.next_due = Some(now);
            o.base = Some(now);
            o.samples_sent = 0;
        }
        self.update_mute(side);
    }

    /// The other party is heard on `side` only when bridged and nothing local plays there.
    fn update_mute(&mut self, side: Side) {
        let local = self.out[index(side)].next_due.is_some();
        self.relay.set_bridged(side, self.bridged && !local);
    }

    /// When the side's next local frame is due.
    pub(super) fn next_due(&self, side: Side) -> Option<Instant> {
        self.out[index(side)].next_due
    }

    /// Sends every frame of `side` due at `now`; returns the next due time.
    pub(super) fn pump(&mut self, side: Side, now: Instant, ctx: &mut Ctx<'_>) -> Option<Instant> {
        let mut sent = 0;
        while self.out[index(side)].next_due.is_some_and(|d| d <= now) {
            if sent == MAX_CATCH_UP {
                let o = &mut self.out[index(side)];
                o.base = Some(now);
                o.samples_sent = 0;
                o.next_due = Some(now + Duration::from_millis(1));
                break;
            }
            match self.send_frame(side, now, ctx) {
                Some(samples) => {
                    let o = &mut self.out[index(side)];
                    o.samples_sent += u64::from(samples);
                    o.next_due = o.base.map(|b| o.due_after(b));
                    sent += 1;
                }
                None => {
                    self.out[index(side)].next_due = None;
                    self.update_mute(side);
                }
            }
        }
        self.out[index(side)].next_due
    }

    /// Produces and sends the side's next local frame; `None` when nothing is left.
    /// Emits the owed `PromptsDone` when the prompt queue runs empty.
    fn send_frame(&mut self, side: Side, now: Instant, ctx: &mut Ctx<'_>) -> Option<u32> {
        let media = self.playable(side)?;
        let (source, frame) = self.next_frame(side, media, ctx)?;
        let stamped = self
            .relay
            .stamp_local(side, ctx.scratch, frame.len, frame.samples, now);
        let sock = self.sockets[index(side)].as_ref();
        if let (Some((to, len)), Some(s)) = (stamped, sock) {
            let bytes = ctx.scratch.get(..len).unwrap_or(&[]);
            let c = &mut *ctx.counters;
            c.tap_dropped += tap::feed(&mut self.taps, side, bytes, now);
            let frame = Frame {
                fd: s.rtp.as_raw_fd(),
                rx: s.rx[0],
                bytes,
                to,
                ringback: matches!(source, Source::Ringback),
            };
            ctx.out.send(frame, c);
        }
        Some(frame.samples)
    }

    fn next_frame(
        &mut self,
        side: Side,
        media: NegotiatedMedia,
        ctx: &mut Ctx<'_>,
    ) -> Option<(Source, crate::media::prompts::Frame)> {
        let payload = ctx.scratch.get_mut(RTP_HEADER_LEN..)?;
        let o = &mut self.out[index(side)];
        loop {
            if let Some(f) = o.current.as_mut().and_then(|p| p.next_frame(payload)) {
                return Some((Source::Prompt, f));
            }
            o.current = None;
            let Some(id) = o.queue.pop_front() else { break };
            o.current = ctx
                .prompts
                .get(id)
                .map(|p| p.player(media.codec.name, media.ptime));
        }
        for _ in 0..std::mem::take(&mut o.owed) {
            let _ = self.events.send(MediaEvent::PromptsDone { side });
        }
        if side != Side::A || !self.ringback_on {
            return None;
        }
        for _ in 0..2 {
            let player = o
                .ringback
                .get_or_insert_with(|| ctx.ringback.player(media.codec.name, media.ptime));
            if let Some(f) = player.next_frame(payload) {
                return Some((Source::Ringback, f));
            }
            o.ringback = None; // one cadence done: start the next
        }
        None
    }

    /// The pairs this call holds, for release at close.
    pub(super) fn take_sockets(&mut self) -> impl Iterator<Item = LegSockets> + '_ {
        self.sockets.iter_mut().filter_map(Option::take)
    }
}

/// A leg configuration with the random stream identity chosen by the API side.
pub(super) fn leg_config(
    media: NegotiatedMedia,
    latch: LatchPolicy,
    ssrc: u32,
    seq: u16,
    ts: u32,
) -> LegConfig {
    LegConfig {
        media,
        latch,
        ssrc,
        initial_seq: seq,
        initial_ts: ts,
    }
}
