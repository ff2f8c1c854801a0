//! One visit's forwarding, sans-IO: its peers, what goes where, keyframe requests, taps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::format::CodecExtra;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output};

use super::peer::{kind_index, Peer};
use super::{
    Datagram, KeyframeReason, Left, Participant, RoomConfig, RoomEvent, SfuError, Side, Tap,
    TapFrame, TapReceiver, KEYFRAME_THROTTLE,
};

/// Counters of one room, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Frames received from the two sides.
    pub frames_in: u64,
    /// Frames written toward a receiver (one per receiver).
    pub frames_forwarded: u64,
    /// Frames a receiver could not take: it did not negotiate their codec.
    pub codec_mismatch: u64,
    /// Writes str0m refused (logged at debug).
    pub write_errors: u64,
    /// Keyframe requests sent to a sender.
    pub keyframe_requests: u64,
}

/// What one [`Room::poll`] returns.
#[derive(Debug, Default)]
pub struct RoomOutput {
    pub transmits: Vec<Datagram>,
    pub events: Vec<RoomEvent>,
    /// When to poll again at the latest; `None` when the room has no peer.
    pub timeout: Option<Instant>,
}

/// One visit: up to two sides and any number of watchers.
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    /// The host candidate every answer advertises (the hub socket's address).
    local: SocketAddr,
    peers: Vec<Peer>,
    taps: [Option<Tap>; 2],
    /// A tap opened since the last poll: ask its side for a keyframe, so a recording that
    /// starts mid-stream decodes from its first seconds.
    tap_keyframe: [bool; 2],
    /// Scratch: str0m events of the peers drained in one pass, by peer index.
    scratch: Vec<(usize, Event)>,
    flowing: bool,
    stats: RoomStats,
}

impl Room {
    /// A room whose answers advertise `local` (ICE-lite host candidate).
    pub fn new(config: RoomConfig, local: SocketAddr) -> Room {
        Room {
            config,
            local,
            peers: Vec::new(),
            taps: [None, None],
            tap_keyframe: [false, false],
            scratch: Vec::new(),
            flowing: false,
            stats: RoomStats::default(),
        }
    }

    // ---- getters ------------------------------------------------------------------------

    pub fn stats(&self) -> RoomStats {
        self.stats
    }

    /// No peer at all (every participant left).
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether `who` has a peer that completed ICE and DTLS.
    pub fn is_connected(&self, who: Participant) -> bool {
        self.live(who).is_some_and(|p| p.connected)
    }

    /// Whether media is flowing from both sides (billing may run).
    pub fn is_flowing(&self) -> bool {
        self.flowing
    }

    fn live(&self, who: Participant) -> Option<&Peer> {
        self.peers.iter().find(|p| p.who == who && p.left.is_none())
    }

    // ---- commands -----------------------------------------------------------------------

    /// Answers a participant's SDP offer; returns the answer's SDP. An offer for a
    /// participant already present replaces its peer (a rejoin: the old one leaves with
    /// [`Left::Replaced`]). A bad offer changes nothing.
    pub fn accept_offer(
        &mut self,
        who: Participant,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        let (peer, answer) = Peer::answer(who, offer, self.local, &self.config, now)?;
        self.leave(who, Left::Replaced);
        self.peers.push(peer);
        Ok(answer)
    }

    /// The caller's end of a participant (a leave message, the visit's end).
    pub fn remove(&mut self, who: Participant) {
        self.leave(who, Left::Removed);
    }

    /// A bounded channel of `side`'s frames for a recorder; replaces an earlier tap.
    pub fn tap(&mut self, side: Side, capacity: usize) -> TapReceiver {
        let (tap, receiver) = Tap::channel(capacity);
        if let Some(slot) = self.taps.get_mut(side.index()) {
            *slot = Some(tap);
        }
        if let Some(wanted) = self.tap_keyframe.get_mut(side.index()) {
            *wanted = true;
        }
        receiver
    }

    fn leave(&mut self, who: Participant, why: Left) {
        for p in self.peers.iter_mut().filter(|p| p.who == who) {
            p.leave(why);
        }
    }

    // ---- input --------------------------------------------------------------------------

    /// A datagram from `source` arrived on the socket at `dest`; returns whether one of
    /// the room's peers took it (the hub then routes `source` here directly).
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        dest: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        let Ok(contents) = bytes.try_into() else {
            return false; // not STUN, DTLS, RTP or RTCP
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: dest,
                contents,
            },
        );
        let Some(peer) = self
            .peers
            .iter_mut()
            .find(|p| p.left.is_none() && p.rtc.accepts(&input))
        else {
            return false;
        };
        peer.last_heard = now;
        peer.dirty = true;
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(error = %e, who = ?peer.who, "input refused");
        }
        true
    }

    // ---- output -------------------------------------------------------------------------

    /// Runs due timers, forwards what arrived, and returns what to send and report.
    pub fn poll(&mut self, now: Instant) -> RoomOutput {
        let mut out = RoomOutput::default();
        out.timeout = self.poll_into(now, &mut out.transmits, &mut out.events);
        out
    }

    /// [`Room::poll`] appending to the caller's buffers (the hub reuses them); returns
    /// the next deadline.
    pub fn poll_into(
        &mut self,
        now: Instant,
        transmits: &mut Vec<Datagram>,
        events: &mut Vec<RoomEvent>,
    ) -> Option<Instant> {
        self.run_timers(now);
        for side in [Side::Visitor, Side::Inmate] {
            if std::mem::take(&mut self.tap_keyframe[side.index()]) {
                // A sender that has sent nothing yet starts with a keyframe anyway.
                let reason = KeyframeReason::Recorder;
                self.request_keyframe(side, KeyframeRequestKind::Pli, reason, now, events);
            }
        }
        loop {
            if !self.drain(transmits) {
                break;
            }
            let mut scratch = std::mem::take(&mut self.scratch);
            for (i, e) in scratch.drain(..) {
                self.on_event(i, e, now, events);
            }
            self.scratch = scratch;
        }
        self.drop_left(events);
        self.peers
            .iter()
            .map(|p| p.next.min(p.own_deadline()))
            .min()
    }

    fn run_timers(&mut self, now: Instant) {
        for p in self.peers.iter_mut().filter(|p| p.left.is_none()) {
            if now >= p.own_deadline() {
                p.leave(if p.connected {
                    Left::Idle
                } else {
                    Left::NeverConnected
                });
                continue;
            }
            if now >= p.next {
                p.dirty = true;
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(error = %e, who = ?p.who, "timeout refused");
                }
            }
        }
    }

    /// Drains every dirty peer's str0m output; its events go to the scratch list.
    /// Returns whether any peer was dirty.
    fn drain(&mut self, transmits: &mut Vec<Datagram>) -> bool {
        let mut any = false;
        for (i, p) in self.peers.iter_mut().enumerate() {
            if !p.dirty || p.left.is_some() {
                continue;
            }
            p.dirty = false;
            any = true;
            loop {
                match p.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        p.next = t;
                        break;
                    }
                    Ok(Output::Transmit(t)) => transmits.push(Datagram {
                        to: t.destination,
                        bytes: t.contents.into(),
                    }),
                    Ok(Output::Event(e)) => self.scratch.push((i, e)),
                    Err(e) => {
                        tracing::warn!(error = %e, who = ?p.who, "WebRTC core failed");
                        p.leave(Left::Failed);
                        break;
                    }
                }
            }
        }
        any
    }

    fn on_event(&mut self, i: usize, e: Event, now: Instant, events: &mut Vec<RoomEvent>) {
        let Some(who) = self.peers.get(i).map(|p| p.who) else {
            return;
        };
        match e {
            Event::Connected => self.on_connected(i, who, now, events),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if let Some(p) = self.peers.get_mut(i) {
                    p.leave(Left::Disconnected);
                }
            }
            Event::MediaData(d) => self.forward(i, d, now, events),
            Event::KeyframeRequest(req) => {
                let source = self.peers.get(i).and_then(|p| p.source_of(req.mid));
                if let Some(sender) = source {
                    let reason = KeyframeReason::Receiver(who);
                    self.request_keyframe(sender, req.kind, reason, now, events);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                events.push(RoomEvent::Bitrate {
                    participant: who,
                    bps: estimate.as_u64(),
                });
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, i: usize, who: Participant, now: Instant, ev: &mut Vec<RoomEvent>) {
        let Some(p) = self.peers.get_mut(i) else {
            return;
        };
        p.connected = true;
        p.last_heard = now;
        tracing::info!(who = ?who, "participant connected (ICE + DTLS-SRTP)");
        ev.push(RoomEvent::Connected(who));
        let senders: Vec<Side> = [Side::Visitor, Side::Inmate]
            .into_iter()
            .filter(|s| p.send[s.index()][1].is_some())
            .collect();
        for s in senders {
            let reason = KeyframeReason::Joined(who);
            self.request_keyframe(s, KeyframeRequestKind::Pli, reason, now, ev);
        }
    }

    /// Writes one frame of a side to every connected receiver of it, and to its tap.
    fn forward(&mut self, i: usize, d: MediaData, now: Instant, events: &mut Vec<RoomEvent>) {
        let Some(src) = self.peers.get_mut(i) else {
            return;
        };
        let (Participant::Side(side), Some(kind)) = (src.who, src.recv_kind(d.mid)) else {
            return;
        };
        self.stats.frames_in += 1;
        if !src.sent_media {
            src.sent_media = true;
            self.update_flowing(events);
        }
        if kind == MediaKind::Video && !d.contiguous {
            self.request_keyframe(
                side,
                KeyframeRequestKind::Pli,
                KeyframeReason::Loss,
                now,
                events,
            );
        }
        let payload: Arc<[u8]> = d.data.clone();
        self.tap_frame(side, kind, &d);
        let k = kind_index(kind);
        for p in self.peers.iter_mut() {
            if p.left.is_some() || !p.connected || p.who == Participant::Side(side) {
                continue;
            }
            let Some(mid) = p.send[side.index()][k] else {
                continue;
            };
            let Some(writer) = p.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(d.params) else {
                self.stats.codec_mismatch += 1;
                continue;
            };
            match writer.write(pt, d.network_time, d.time, payload.clone()) {
                Ok(()) => {
                    self.stats.frames_forwarded += 1;
                    p.dirty = true;
                }
                Err(e) => {
                    self.stats.write_errors += 1;
                    tracing::debug!(error = %e, to = ?p.who, "write refused");
                }
            }
        }
    }

    /// Offers a side's frame to its tap, if a recorder holds one.
    fn tap_frame(&mut self, side: Side, kind: MediaKind, d: &MediaData) {
        let Some(slot) = self.taps.get_mut(side.index()) else {
            return;
        };
        let Some(tap) = slot else {
            return;
        };
        let keyframe = match &d.codec_extra {
            CodecExtra::Vp8(e) => e.is_keyframe,
            CodecExtra::H264(e) => e.is_keyframe,
            _ => false,
        };
        let frame = TapFrame {
            side,
            kind,
            codec: d.params.spec().codec,
            rtp_time: d.time.numer(),
            clock_rate: d.time.denom(),
            keyframe,
            arrived: d.network_time,
            payload: d.data.clone(),
        };
        if !tap.offer(frame) {
            *slot = None; // the recorder hung up
        }
    }

    /// Asks `sender` for a keyframe, at most once per [`KEYFRAME_THROTTLE`].
    fn request_keyframe(
        &mut self,
        sender: Side,
        kind: KeyframeRequestKind,
        reason: KeyframeReason,
        now: Instant,
        events: &mut Vec<RoomEvent>,
    ) {
        let who = Participant::Side(sender);
        let Some(p) = self
            .peers
            .iter_mut()
            .find(|p| p.who == who && p.left.is_none() && p.connected)
        else {
            return;
        };
        let Some(mid) = p.recv[1] else {
            return;
        };
        if p.last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_THROTTLE)
        {
            return;
        }
        let Some(mut writer) = p.rtc.writer(mid) else {
            return;
        };
        // Fails while the sender has sent nothing yet: its first frame is a keyframe.
        if writer.request_keyframe(None, kind).is_ok() {
            p.last_keyframe_request = Some(now);
            p.dirty = true;
            self.stats.keyframe_requests += 1;
            events.push(RoomEvent::KeyframeRequested {
                sender,
                kind,
                reason,
            });
        }
    }

    /// Reports the start or the end of media flowing both ways.
    fn update_flowing(&mut self, events: &mut Vec<RoomEvent>) {
        let sending = |side: Side| {
            self.peers.iter().any(|p| {
                p.who == Participant::Side(side) && p.left.is_none() && p.connected && p.sent_media
            })
        };
        let both = sending(Side::Visitor) && sending(Side::Inmate);
        if both != self.flowing {
            self.flowing = both;
            events.push(if both {
                RoomEvent::MediaFlowing
            } else {
                RoomEvent::MediaStopped
            });
        }
    }

    /// Drops the peers that left, reporting each.
    fn drop_left(&mut self, events: &mut Vec<RoomEvent>) {
        if self.peers.iter().all(|p| p.left.is_none()) {
            return;
        }
        for p in self.peers.iter().filter(|p| p.left.is_some()) {
            if let Some(why) = p.left {
                tracing::info!(who = ?p.who, reason = why.as_str(), "participant left");
                events.push(RoomEvent::Left(p.who, why));
            }
        }
        self.peers.retain(|p| p.left.is_none());
        self.update_flowing(events);
    }
}

#[cfg(test)]
mod tests;
