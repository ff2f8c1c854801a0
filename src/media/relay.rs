//! The per-call RTP relay core: latching, forwarding with stream continuity, counters.
//!
//! A [`Relay`] is one call's media state: two [`Leg`]s, side [`Side::A`] (the inmate's
//! handset) and [`Side::B`] (the called party, through the trunk). The driver that owns
//! the call's sockets hands every datagram to [`Relay::on_packet`] with the side it
//! arrived on, the source address and the receive buffer; the relay rewrites the buffer
//! in place and returns a [`RelayDecision`]: send `buf[..len]` to `to` from the other
//! leg's socket, keep it (DTMF, muted direction, RTCP), or drop it with a reason. It never
//! allocates, reads a clock, or locks: the driver passes `now` and owns the `Relay`.
//!
//! # Latching (symmetric RTP, RFC 4961) — only to the negotiated peer
//!
//! A correctional gateway must not let a third party inject audio into a call, so the relay
//! never latches to "whoever sends first" (comedia). With [`LatchPolicy::Exact`] (the
//! default) a packet is accepted only from the exact `c=` address and `m=` port the peer
//! negotiated. [`LatchPolicy::SameIp`] is for handsets behind a port-rewriting NAT on a
//! trusted network: the IP must match the SDP's `c=`, the port is learned from the first
//! *valid* RTP packet and then fixed for the rest of the call (a new SDP, e.g. a re-INVITE,
//! unlatches). Packets from anywhere else are dropped and counted
//! (`dropped_wrong_source`). IPv4-mapped IPv6 sources compare equal to their IPv4 form.
//! Media is sent to the latched address, or to the negotiated one before latching.
//!
//! # Continuity across source switches ([`Forwarder`])
//!
//! What a leg hears comes from two sources: the other party ([`Source::Peer`]) or gateway
//! prompts ([`Source::Local`], via [`Relay::stamp_local`]). Each leg's [`Forwarder`] sends
//! one SSRC and one continuous sequence/timestamp space: within a source, sequence and
//! timestamp keep a fixed offset from the input (loss and reordering stay visible to the
//! receiver's jitter buffer); on a switch (or a new SSRC from the same source) the sequence
//! continues at +1, the timestamp advances by the wall time elapsed since the last packet
//! sent, at least one frame, and the marker bit is set so the receiver resyncs its playout.
//! All arithmetic wraps (u16 sequence, u32 timestamp).
//!
//! # Payload types and codecs
//!
//! Only the negotiated audio and telephone-event payload types pass; others are dropped
//! (`dropped_payload_type`). Payload types are mapped to the far leg's numbers. When both
//! legs use the same G.711 law (the normal case: the trunk is offered the handset's codec
//! first) the payload is untouched; if they settled on different laws the payload is
//! converted in place by a 256-byte table ([`g711::convert_in_place`]), same length, no
//! allocation. telephone-event packets are decoded into [`DigitPress`]es on the way through
//! and forwarded when the far leg negotiated telephone-event.
//!
//! # Recording and monitoring
//!
//! The relay does not record. The driver copies what it needs out of the buffer (the
//! payload of a `Forward` or `Consume`, tagged with the side) into a bounded channel with
//! `try_send`, so a slow disk or listener never stalls the relay; a full channel drops
//! frames for the recorder, not for the call.
//!
//! # RTCP: terminated
//!
//! RTCP is validated, counted (`rtcp_received`) and consumed, never forwarded. The
//! gateway rewrites SSRC, sequence and timestamp and splices prompts in, so the far end's
//! receiver reports and sender reports (report-block SSRCs, extended highest sequence,
//! NTP↔RTP timestamp mapping) describe a stream the other leg never saw; relaying them
//! would be wrong, and fixing every report block is what an RTCP generator does better.
//! Generating our own SR/RR per leg is left to the driver's timer (RTCP is optional for
//! the G.711 peers this gateway serves). With `rtcp-mux` the same rule applies on the RTP
//! port ([`rtp::classify`]).

use std::net::SocketAddr;
use std::time::Instant;

use super::dtmf::{DigitPress, DtmfDetector};
use super::g711;
use super::rtp::{self, PacketKind, RtcpView, RtpViewMut, RTP_HEADER_LEN};
use super::sdp::NegotiatedMedia;

/// The two legs of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The inmate's handset leg.
    A,
    /// The called party's leg (trunk).
    B,
}

impl Side {
    /// The other leg.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// How a leg learns its peer's address (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatchPolicy {
    /// Accept only the negotiated IP and port.
    #[default]
    Exact,
    /// Accept the negotiated IP; learn the port from the first valid packet, then fix it.
    SameIp,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not from the negotiated (or latched) peer address.
    WrongSource,
    /// Not a valid RTP/RTCP packet.
    Malformed,
    /// A payload type that was not negotiated on this leg.
    PayloadType,
    /// The side has no negotiated leg yet.
    NoLeg,
}

/// What the driver does with a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDecision {
    /// Send `buf[..len]` (rewritten in place) to `to` from the other leg's socket.
    Forward {
        /// Destination on the other leg.
        to: SocketAddr,
        /// Bytes to send.
        len: usize,
        /// A key press that started in this packet, if any.
        digit: Option<DigitPress>,
    },
    /// A valid packet that is not forwarded: the direction is muted or on hold, the far
    /// leg lacks telephone-event, or it is RTCP (terminated here).
    Consume {
        /// A key press that started in this packet, if any.
        digit: Option<DigitPress>,
    },
    /// Dropped and counted.
    Drop(DropReason),
}

/// Per-leg packet counters (plain integers: the leg belongs to one task).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// Datagrams received on this leg (RTP and RTCP, valid or not).
    pub received: u64,
    /// RTP packets from this leg forwarded to the other.
    pub forwarded: u64,
    /// Valid packets kept by the gateway (muted, hold, DTMF-only, RTCP).
    pub consumed: u64,
    /// Packets from an address other than the negotiated/latched peer.
    pub dropped_wrong_source: u64,
    /// Packets that are not valid RTP/RTCP.
    pub dropped_malformed: u64,
    /// RTP with a payload type not negotiated on this leg.
    pub dropped_payload_type: u64,
    /// Valid RTCP packets received (and terminated).
    pub rtcp_received: u64,
    /// Key presses detected in telephone-events.
    pub digits: u64,
    /// Packets converted between μ-law and A-law on the way out to the other leg.
    pub converted: u64,
    /// Packets sent to this leg (forwarded from the other leg or prompts).
    pub sent: u64,
}

/// Where a [`Forwarder`]'s current input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The other party of the call.
    Peer,
    /// The gateway itself (prompts).
    Local,
}

/// The rewrite applied to one outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Outgoing sequence number.
    pub seq: u16,
    /// Outgoing timestamp.
    pub ts: u32,
    /// Whether this packet starts a new source (set the marker bit).
    pub switched: bool,
}

/// One outgoing leg's stream identity: one SSRC, continuous sequence and timestamp.
#[derive(Debug, Clone)]
pub struct Forwarder {
    ssrc: u32,
    clock_rate: u32,
    frame_ticks: u32,
    /// The source and its SSRC currently mapped, with the offsets in force.
    current: Option<(Source, u32)>,
    seq_offset: u16,
    ts_offset: u32,
    /// Last packet sent: its sequence, timestamp and when.
    last: Option<(u16, u32, Instant)>,
    /// Starting point for the first packet ever sent.
    initial: (u16, u32),
    /// Sequence/timestamp space of locally originated frames.
    local_seq: u16,
    local_ts: u32,
}

impl Forwarder {
    /// A forwarder sending as `ssrc`, starting at `seq`/`ts` (random, per RFC 3550), with
    /// `frame_ticks` timestamp units per packet (ptime × clock rate).
    pub fn new(ssrc: u32, seq: u16, ts: u32, clock_rate: u32, frame_ticks: u32) -> Self {
        Forwarder {
            ssrc,
            clock_rate,
            frame_ticks,
            current: None,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
            initial: (seq, ts),
            local_seq: 0,
            local_ts: 0,
        }
    }

    /// The outgoing SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Maps an input packet (`source`, its SSRC, sequence and timestamp) to the output.
    pub fn rewrite(
        &mut self,
        source: Source,
        in_ssrc: u32,
        in_seq: u16,
        in_ts: u32,
        now: Instant,
    ) -> Rewrite {
        let switched = self.current != Some((source, in_ssrc));
        if switched {
            let (seq, ts) = self.next_start(now);
            self.seq_offset = seq.wrapping_sub(in_seq);
            self.ts_offset = ts.wrapping_sub(in_ts);
            self.current = Some((source, in_ssrc));
        }
        let seq = in_seq.wrapping_add(self.seq_offset);
        let ts = in_ts.wrapping_add(self.ts_offset);
        // A late (reordered) packet does not move the point the next switch continues from.
        let newer = self
            .last
            .is_none_or(|(last, _, _)| seq.wrapping_sub(last).wrapping_sub(1) < 0x7fff);
        if switched || newer {
            self.last = Some((seq, ts, now));
        }
        Rewrite { seq, ts, switched }
    }

    /// Sequence and timestamp of the first packet of a new source.
    fn next_start(&self, now: Instant) -> (u16, u32) {
        let Some((seq, ts, at)) = self.last else {
            return self.initial;
        };
        let elapsed = now.saturating_duration_since(at);
        let ticks = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.clock_rate))
            / 1_000_000;
        let ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
        (
            seq.wrapping_add(1),
            ts.wrapping_add(ticks.max(self.frame_ticks)),
        )
    }

    /// Maps the next locally originated frame of `samples` ticks.
    pub fn rewrite_local(&mut self, samples: u32, now: Instant) -> Rewrite {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.local_ts = self.local_ts.wrapping_add(samples);
        self.rewrite(Source::Local, 0, self.local_seq, self.local_ts, now)
    }
}

/// What a leg needs at set-up.
#[derive(Debug, Clone, Copy)]
pub struct LegConfig {
    /// The leg's offer/answer outcome.
    pub media: NegotiatedMedia,
    /// How strictly to latch.
    pub latch: LatchPolicy,
    /// SSRC of the stream the gateway sends to this leg (random).
    pub ssrc: u32,
    /// First sequence number sent to this leg (random).
    pub initial_seq: u16,
    /// First timestamp sent to this leg (random).
    pub initial_ts: u32,
}

/// One side of the call: its peer, what it negotiated, what the gateway sends it.
#[derive(Debug, Clone)]
pub struct Leg {
    media: NegotiatedMedia,
    latch: LatchPolicy,
    latched: Option<SocketAddr>,
    out: Forwarder,
    dtmf: DtmfDetector,
    counters: LegCounters,
    last_rtp: Option<Instant>,
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Leg {
    /// A leg from its configuration.
    pub fn new(config: LegConfig) -> Self {
        let m = config.media;
        let frame_ticks = m.ptime.saturating_mul(m.codec.clock_rate) / 1000;
        Leg {
            media: m,
            latch: config.latch,
            latched: None,
            out: Forwarder::new(
                config.ssrc,
                config.initial_seq,
                config.initial_ts,
                m.codec.clock_rate,
                frame_ticks,
            ),
            dtmf: DtmfDetector::new(),
            counters: LegCounters::default(),
            last_rtp: None,
        }
    }

    /// What this leg negotiated.
    pub fn media(&self) -> &NegotiatedMedia {
        &self.media
    }

    /// The address latched to, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Counters.
    pub fn counters(&self) -> &LegCounters {
        &self.counters
    }

    /// When the last well-formed RTP packet from the negotiated or latched peer arrived,
    /// forwarded, kept or dropped for its payload type. RTCP does not count: receiver
    /// reports say nothing about whether anyone is still on the line. The media engine
    /// publishes this stamp to the call's task for the media timeout.
    pub fn last_rtp(&self) -> Option<Instant> {
        self.last_rtp
    }

    /// Where media for this leg goes, or `None` if the peer does not receive (hold).
    pub fn destination(&self) -> Option<SocketAddr> {
        self.media
            .may_send()
            .then(|| self.latched.unwrap_or(self.media.remote))
    }

    /// Whether `from` may send RTP on this leg (without latching).
    fn source_ok(&self, from: SocketAddr) -> bool {
        let from = canonical(from);
        let expected = canonical(self.media.remote);
        match (self.latched, self.latch) {
            (Some(l), _) => canonical(l) == from,
            _ if expected.ip().is_unspecified() => false,
            (None, LatchPolicy::Exact) => expected == from,
            (None, LatchPolicy::SameIp) => expected.ip() == from.ip(),
        }
    }

    /// Whether `from` may send RTCP on this leg: the peer's IP (RTCP ports vary by NAT).
    fn rtcp_source_ok(&self, from: SocketAddr) -> bool {
        let ip = from.ip().to_canonical();
        ip == self.media.remote.ip().to_canonical()
            || ip == self.media.remote_rtcp.ip().to_canonical()
    }

    /// Replaces the negotiated media (re-INVITE); unlatches if the peer address changed.
    pub fn update_media(&mut self, media: NegotiatedMedia) {
        if media.remote != self.media.remote {
            self.latched = None;
        }
        self.media = media;
    }

    fn reject(&mut self, reason: DropReason) -> RelayDecision {
        let c = &mut self.counters;
        match reason {
            DropReason::WrongSource => c.dropped_wrong_source += 1,
            DropReason::Malformed => c.dropped_malformed += 1,
            DropReason::PayloadType => c.dropped_payload_type += 1,
            DropReason::NoLeg => {}
        }
        RelayDecision::Drop(reason)
    }

    fn consume(&mut self, digit: Option<DigitPress>) -> RelayDecision {
        self.counters.consumed += 1;
        RelayDecision::Consume { digit }
    }
}

/// Kind of an accepted inbound RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    Audio,
    Event,
}

/// One call's media relay (two legs), driven by the call's media task.
#[derive(Debug, Clone)]
pub struct Relay {
    legs: [Option<Leg>; 2],
    /// `bridged[i]`: whether media from the other party is forwarded *to* leg `i`.
    bridged: [bool; 2],
    /// Whether telephone-events are forwarded once bridged (they are always detected).
    forward_events: bool,
}

impl Relay {
    /// A relay with the handset leg only, nothing bridged (the PIN prompt phase).
    pub fn new(a: LegConfig) -> Self {
        Relay {
            legs: [Some(Leg::new(a)), None],
            bridged: [false, false],
            forward_events: true,
        }
    }

    /// A relay with no leg yet (the media driver adds each leg when its SDP is settled,
    /// in whichever order), nothing bridged.
    pub fn empty() -> Self {
        Relay {
            legs: [None, None],
            bridged: [false, false],
            forward_events: true,
        }
    }

    /// Sets up (or replaces) a leg, e.g. B once the trunk answers.
    pub fn set_leg(&mut self, side: Side, config: LegConfig) {
        self.legs[side.index()] = Some(Leg::new(config));
    }

    /// A leg's state.
    pub fn leg(&self, side: Side) -> Option<&Leg> {
        self.legs[side.index()].as_ref()
    }

    /// A leg's state, mutable (re-INVITE via [`Leg::update_media`]).
    pub fn leg_mut(&mut self, side: Side) -> Option<&mut Leg> {
        self.legs[side.index()].as_mut()
    }

    /// Whether the other party's media is forwarded to `to`. Off while a prompt plays to
    /// `to` (or before acceptance), on once the call is bridged.
    pub fn set_bridged(&mut self, to: Side, on: bool) {
        self.bridged[to.index()] = on;
    }

    /// Bridges (or unbridges) both directions.
    pub fn bridge(&mut self, on: bool) {
        self.bridged = [on, on];
    }

    /// Whether telephone-events pass to the other leg once bridged (default on). The call
    /// flow may turn this off so an inmate cannot drive a far-end IVR or call-forwarding
    /// service with keypresses; digits are still detected and returned either way.
    pub fn set_forward_events(&mut self, on: bool) {
        self.forward_events = on;
    }

    /// Handles one datagram that arrived on `side`'s RTP socket from `from`.
    pub fn on_packet(
        &mut self,
        side: Side,
        from: SocketAddr,
        buf: &mut [u8],
        now: Instant,
    ) -> RelayDecision {
        let bridged = self.bridged[side.other().index()];
        let forward_events = self.forward_events;
        let (inbound, outbound) = self.split(side);
        let Some(inbound) = inbound else {
            return RelayDecision::Drop(DropReason::NoLeg);
        };
        inbound.counters.received += 1;
        match rtp::classify(buf) {
            PacketKind::Rtcp => return rtcp(inbound, from, buf),
            PacketKind::Other => return inbound.reject(DropReason::Malformed),
            PacketKind::Rtp => {}
        }
        if !inbound.source_ok(from) {
            return inbound.reject(DropReason::WrongSource);
        }
        let Ok(mut packet) = RtpViewMut::parse(buf) else {
            return inbound.reject(DropReason::Malformed);
        };
        // Well-formed RTP from the peer: alive, even in a payload type we did not negotiate
        // (comfort noise from a phone that suppresses silence), which is then dropped.
        inbound.last_rtp = Some(now);
        let Some(kind) = classify_payload(inbound, packet.view().payload_type()) else {
            return inbound.reject(DropReason::PayloadType);
        };
        inbound.latched.get_or_insert(from);
        let digit = detect(inbound, kind, &packet);
        let pass = bridged && (kind == Payload::Audio || forward_events);
        match outbound.filter(|_| pass) {
            Some(out) => forward(inbound, out, kind, &mut packet, digit, now),
            None => inbound.consume(digit),
        }
    }

    /// Handles one datagram that arrived on `side`'s RTCP socket (RTP port + 1). `_now`
    /// mirrors [`Relay::on_packet`]; RTCP moves no time stamp ([`Leg::last_rtp`]).
    pub fn on_rtcp(
        &mut self,
        side: Side,
        from: SocketAddr,
        buf: &[u8],
        _now: Instant,
    ) -> RelayDecision {
        match self.legs[side.index()].as_mut() {
            Some(leg) => {
                leg.counters.received += 1;
                rtcp(leg, from, buf)
            }
            None => RelayDecision::Drop(DropReason::NoLeg),
        }
    }

    /// Stamps a gateway-originated frame (a prompt) for leg `to`.
    ///
    /// The payload (`payload_len` bytes in `to`'s codec, covering `samples` timestamp
    /// units) must already be at `buf[12..]`; the RTP header is written into `buf[..12]`.
    /// Returns where to send `buf[..len]`, or `None` if `to` has no leg, does not
    /// receive (hold), or `buf` is too short.
    pub fn stamp_local(
        &mut self,
        to: Side,
        buf: &mut [u8],
        payload_len: usize,
        samples: u32,
        now: Instant,
    ) -> Option<(SocketAddr, usize)> {
        let leg = self.legs[to.index()].as_mut()?;
        let dest = leg.destination()?;
        let len = RTP_HEADER_LEN + payload_len;
        if buf.len() < len {
            return None;
        }
        let r = leg.out.rewrite_local(samples, now);
        rtp::write_header(
            buf,
            leg.media.codec.pt,
            r.switched,
            r.seq,
            r.ts,
            leg.out.ssrc(),
        )?;
        leg.counters.sent += 1;
        Some((dest, len))
    }

    fn split(&mut self, side: Side) -> (Option<&mut Leg>, Option<&mut Leg>) {
        let [a, b] = &mut self.legs;
        match side {
            Side::A => (a.as_mut(), b.as_mut()),
            Side::B => (b.as_mut(), a.as_mut()),
        }
    }
}

fn classify_payload(leg: &Leg, pt: u8) -> Option<Payload> {
    if pt == leg.media.codec.pt {
        Some(Payload::Audio)
    } else if Some(pt) == leg.media.dtmf_pt {
        Some(Payload::Event)
    } else {
        None
    }
}

fn detect(leg: &mut Leg, kind: Payload, packet: &RtpViewMut<'_>) -> Option<DigitPress> {
    if kind != Payload::Event {
        return None;
    }
    let view = packet.view();
    let digit = leg.dtmf.on_payload(view.timestamp(), view.payload());
    if digit.is_some() {
        leg.counters.digits += 1;
    }
    digit
}

fn rtcp(leg: &mut Leg, from: SocketAddr, buf: &[u8]) -> RelayDecision {
    if !leg.rtcp_source_ok(from) {
        return leg.reject(DropReason::WrongSource);
    }
    if RtcpView::parse(buf).is_err() {
        return leg.reject(DropReason::Malformed);
    }
    leg.counters.rtcp_received += 1;
    leg.consume(None)
}

fn forward(
    inbound: &mut Leg,
    out: &mut Leg,
    kind: Payload,
    packet: &mut RtpViewMut<'_>,
    digit: Option<DigitPress>,
    now: Instant,
) -> RelayDecision {
    let pt = match kind {
        Payload::Audio => out.media.codec.pt,
        Payload::Event => match out.media.dtmf_pt {
            Some(pt) => pt,
            None => return inbound.consume(digit),
        },
    };
    let Some(to) = out.destination() else {
        return inbound.consume(digit);
    };
    let view = packet.view();
    let (ssrc, seq, ts, marker) = (
        view.ssrc(),
        view.sequence(),
        view.timestamp(),
        view.marker(),
    );
    let r = out.out.rewrite(Source::Peer, ssrc, seq, ts, now);
    packet.set_sequence(r.seq);
    packet.set_timestamp(r.ts);
    packet.set_ssrc(out.out.ssrc());
    packet.set_payload_type(pt);
    packet.set_marker(marker || (r.switched && kind == Payload::Audio));
    let (from_law, to_law) = (inbound.media.codec.name.law(), out.media.codec.name.law());
    if kind == Payload::Audio && from_law != to_law {
        g711::convert_in_place(packet.payload_mut(), from_law, to_law);
        out.counters.converted += 1;
    }
    inbound.counters.forwarded += 1;
    out.counters.sent += 1;
    RelayDecision::Forward {
        to,
        len: packet.len(),
        digit,
    }
}
