//! One listening browser's WebRTC peer, sans-IO: a str0m [`Rtc`] in ICE-lite, answering
//! the browser's receive-only offer and sending the tapped G.711 packets on it.
//!
//! Nothing here reads a clock or touches a socket: the driver ([`super::task`]) hands in
//! datagrams, tapped packets and timeouts with the time, and takes out what to send and
//! when to call again. That is how the unit tests below connect two peers in memory.
//!
//! Tracks: the browser offers one or two audio m-lines. The first carries the inmate's
//! voice (what the gateway sends toward the called party, [`Side::B`]); the second the
//! called party's voice and the gateway's prompts (sent toward the inmate, [`Side::A`]).
//! With one m-line only the inmate's side is heard: G.711 is forwarded as it is, never
//! decoded to be mixed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

use crate::media::engine::TapPacket;
use crate::media::relay::Side;

/// The browser must complete ICE and DTLS within this long after the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Chromium sends consent checks (STUN) every few seconds and receiver reports every
/// second or so; this long without a datagram means the browser went away.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an offer cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the SDP offer does not parse: {0}")]
    BadSdp(String),
    #[error("the offer has no audio m-line to send on")]
    NoAudio,
    #[error("the offer accepts neither PCMU nor PCMA")]
    NoG711,
    #[error("the address {0} cannot be an ICE candidate")]
    BadCandidate(SocketAddr),
    #[error("no address to offer as an ICE candidate")]
    NoCandidate,
    #[error("WebRTC: {0}")]
    Rtc(#[from] RtcError),
}

/// Why a peer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// ICE and DTLS did not complete within [`CONNECT_TIMEOUT`].
    NeverConnected,
    /// ICE reported the browser disconnected.
    Disconnected,
    /// Nothing heard from the browser for [`IDLE_TIMEOUT`].
    Idle,
    /// The WebRTC core failed (logged by the driver).
    Failed,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::NeverConnected => "never_connected",
            Closed::Disconnected => "browser_disconnected",
            Closed::Idle => "browser_idle",
            Closed::Failed => "failed",
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Datagram {
    /// The local candidate it goes out from (the driver sends it on that one's socket).
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What happened to one tapped packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forwarded {
    Sent,
    /// Not connected yet, or no m-line for this party.
    Skipped,
    /// A payload type the browser did not accept (counted as a drop).
    Refused,
}

/// One m-line the gateway sends on.
#[derive(Debug)]
struct Track {
    mid: Mid,
    pcmu: Option<Pt>,
    pcma: Option<Pt>,
    clock: Unwrap,
}

/// One listening browser.
pub(super) struct Peer {
    rtc: Rtc,
    /// The host candidates (address, bound port): where the browser may send.
    locals: Vec<SocketAddr>,
    /// `[inmate, called party]`.
    tracks: [Option<Track>; 2],
    opened: Instant,
    last_heard: Instant,
    connected: bool,
    closed: Option<Closed>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("locals", &self.locals)
            .field("tracks", &self.tracks)
            .field("connected", &self.connected)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Peer {
    /// Answers `offer` (SDP text) as an ICE-lite peer reachable at each of `locals` (one
    /// host candidate each, in that order); returns the peer and the answer's SDP text.
    pub(super) fn answer(
        offer: &str,
        locals: &[SocketAddr],
        now: Instant,
    ) -> Result<(Peer, String), PeerError> {
        let mids = audio_mids(offer);
        if mids.is_empty() {
            return Err(PeerError::NoAudio);
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .build(now);
        if locals.is_empty() {
            return Err(PeerError::NoCandidate);
        }
        for &local in locals {
            let candidate =
                Candidate::host(local, "udp").map_err(|_| PeerError::BadCandidate(local))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc.sdp_api().accept_offer(offer)?;
        let mut peer = Peer {
            rtc,
            locals: locals.to_vec(),
            tracks: [None, None],
            opened: now,
            last_heard: now,
            connected: false,
            closed: None,
        };
        for (slot, mid) in peer.tracks.iter_mut().zip(mids) {
            *slot = track(&mut peer.rtc, &mid);
        }
        if peer.tracks.iter().all(Option::is_none) {
            return Err(PeerError::NoG711);
        }
        Ok((peer, answer.to_sdp_string()))
    }

    /// The m-lines the answer sends on (`[inmate, called party]`).
    #[cfg(test)]
    pub(super) fn track_count(&self) -> usize {
        self.tracks.iter().flatten().count()
    }

    #[cfg(test)]
    pub(super) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Set once the peer is done; the driver then drops it.
    pub(super) fn closed(&self) -> Option<Closed> {
        self.closed
    }

    /// A datagram arrived from `source` on the socket of local candidate `destination`
    /// (one of those the answer offered; anything else is ignored).
    pub(super) fn on_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        if !self.locals.contains(&destination) {
            return;
        }
        let Ok(contents) = bytes.try_into() else {
            return; // not STUN, DTLS, RTP or RTCP: ignore
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if self.rtc.accepts(&input) {
            self.last_heard = now;
            self.feed(input);
        }
    }

    /// The deadline returned by [`Peer::poll`] has come.
    pub(super) fn on_timeout(&mut self, now: Instant) {
        if !self.connected {
            if now.saturating_duration_since(self.opened) >= CONNECT_TIMEOUT {
                self.close(Closed::NeverConnected);
                return;
            }
        } else if now.saturating_duration_since(self.last_heard) >= IDLE_TIMEOUT {
            self.close(Closed::Idle);
            return;
        }
        self.feed(Input::Timeout(now));
    }

    /// Sends one tapped packet on its party's m-line with its RTP timing.
    pub(super) fn on_tap(&mut self, p: &TapPacket) -> Forwarded {
        if !self.connected || self.closed.is_some() {
            return Forwarded::Skipped;
        }
        let Some(track) = self
            .tracks
            .get_mut(party(p.toward))
            .and_then(Option::as_mut)
        else {
            return Forwarded::Skipped;
        };
        let pt = match p.pt {
            0 => track.pcmu,
            8 => track.pcma,
            _ => None,
        };
        let Some(pt) = pt else {
            return Forwarded::Refused;
        };
        let time = MediaTime::new(track.clock.extend(p.ts), str0m::media::Frequency::EIGHT_KHZ);
        let mid = track.mid;
        let Some(writer) = self.rtc.writer(mid) else {
            return Forwarded::Skipped;
        };
        let written = writer.write(pt, p.at, time, p.payload());
        match written {
            Ok(()) => Forwarded::Sent,
            Err(e) => {
                tracing::debug!(error = %e, "write refused");
                Forwarded::Refused
            }
        }
    }

    /// Drains the core: datagrams to send go to `out`; returns when to call
    /// [`Peer::on_timeout`] next.
    pub(super) fn poll(&mut self, out: &mut Vec<Datagram>) -> Instant {
        let until = if self.connected {
            self.last_heard + IDLE_TIMEOUT
        } else {
            self.opened + CONNECT_TIMEOUT
        };
        if self.closed.is_some() {
            return until;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t.min(until),
                Ok(Output::Transmit(t)) => out.push(Datagram {
                    from: t.source,
                    to: t.destination,
                    bytes: t.contents.to_vec(),
                }),
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    tracing::warn!(error = %e, "WebRTC core failed");
                    self.close(Closed::Failed);
                    return until;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                tracing::info!("listener connected (ICE + DTLS-SRTP)");
                self.connected = true;
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.close(Closed::Disconnected);
            }
            _ => {}
        }
    }

    fn feed(&mut self, input: Input) {
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(error = %e, "input refused");
        }
    }

    fn close(&mut self, why: Closed) {
        if self.closed.is_none() {
            self.closed = Some(why);
            self.rtc.disconnect();
        }
    }
}

/// The track index of a tapped packet: what is sent toward the called party is the
/// inmate's voice (track 0), what is sent toward the inmate is the called party's (1).
fn party(toward: Side) -> usize {
    match toward {
        Side::B => 0,
        Side::A => 1,
    }
}

/// The m-line `mid` if the answer sends audio on it, with its G.711 payload types.
fn track(rtc: &mut Rtc, mid: &str) -> Option<Track> {
    let mid = Mid::from(mid);
    if rtc.media(mid)?.kind() != MediaKind::Audio {
        return None;
    }
    let writer = rtc.writer(mid)?;
    let find = |codec: Codec| {
        writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    };
    let (pcmu, pcma) = (find(Codec::PCMU), find(Codec::PCMA));
    (pcmu.is_some() || pcma.is_some()).then_some(Track {
        mid,
        pcmu,
        pcma,
        clock: Unwrap::default(),
    })
}

/// The `a=mid` of each audio m-line of an SDP, in order.
pub fn audio_mids(sdp: &str) -> Vec<String> {
    let mut mids = Vec::new();
    let mut audio = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            audio = m.starts_with("audio ");
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            if audio && !mid.is_empty() {
                mids.push(mid.to_string());
            }
        }
    }
    mids
}

/// Extends 32-bit RTP timestamps to 64 bits across wrap-around (str0m's media time is
/// monotonic).
#[derive(Debug, Default, Clone, Copy)]
struct Unwrap {
    last: Option<(u32, u64)>,
}

impl Unwrap {
    /// Base for the first timestamp, so a few packets late before it never go negative.
    const BASE: u64 = 1 << 32;

    fn extend(&mut self, ts: u32) -> u64 {
        let ext = match self.last {
            None => Self::BASE + u64::from(ts),
            Some((prev, ext)) => {
                let delta = i64::from(ts.wrapping_sub(prev) as i32);
                ext.saturating_add_signed(delta)
            }
        };
        if self.last.is_none_or(|(_, e)| ext > e) {
            self.last = Some((ts, ext));
        }
        ext
    }
}

#[cfg(test)]
mod tests;
