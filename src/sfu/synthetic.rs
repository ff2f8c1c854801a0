//! A synthetic visit participant: a str0m client peer that offers `sendrecv` Opus and VP8
//! like a browser, plays pre-encoded media at its real rate and counts what it receives.
//! Used by the room's unit tests (in memory, [`SyntheticPeer`]), the integration tests and
//! the load benchmark (over real UDP, [`run`]).
//!
//! It lives in the library (not under `tests/` or `benches/`) so that both can use it and
//! so it is compiled, linted and kept in step with the room it exercises; it is small and
//! has no dependency the gateway does not already have.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::format::CodecExtra;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;

use super::media_file::{read_ivf, read_ogg_opus, AudioPacket, MediaFileError, VideoFrame};
use super::{Datagram, SfuError};

/// What a synthetic participant sent and received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent_video_frames: u64,
    pub sent_opus_packets: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    pub video_bytes: u64,
    pub opus_packets: u64,
    pub audio_bytes: u64,
    /// PLI/FIR received for what it sends.
    pub keyframe_requests: u64,
}

/// What one m-line received (a watcher has four).
#[derive(Debug, Clone)]
pub struct LineCounts {
    pub mid: Mid,
    pub kind: MediaKind,
    pub frames: u64,
    pub bytes: u64,
    /// The last payload, for tests that check what arrived where.
    pub last: Option<Arc<[u8]>>,
}

/// The client side of one participant, sans-IO.
pub struct SyntheticPeer {
    rtc: Rtc,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    lines: Vec<LineCounts>,
    audio: Option<(Mid, Pt)>,
    video: Option<(Mid, Pt)>,
    connected: bool,
    disconnected: bool,
    counts: Counts,
    on_media: Option<OnMedia>,
}

/// What [`SyntheticPeer::on_media`] calls with each frame received: its kind and payload.
pub type OnMedia = Box<dyn FnMut(MediaKind, &[u8]) + Send>;

impl std::fmt::Debug for SyntheticPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticPeer")
            .field("local", &self.local)
            .field("connected", &self.connected)
            .field("counts", &self.counts)
            .finish()
    }
}

impl SyntheticPeer {
    /// A participant at `local` offering one `sendrecv` audio and one video m-line.
    pub fn offer(local: SocketAddr, now: Instant) -> Result<(SyntheticPeer, String), SfuError> {
        Self::offer_lines(
            local,
            now,
            &[MediaKind::Audio, MediaKind::Video],
            Direction::SendRecv,
        )
    }

    /// A watcher at `local`: `recvonly` audio, video, audio, video (visitor, then inmate).
    pub fn offer_watcher(
        local: SocketAddr,
        now: Instant,
    ) -> Result<(SyntheticPeer, String), SfuError> {
        let lines = [
            MediaKind::Audio,
            MediaKind::Video,
            MediaKind::Audio,
            MediaKind::Video,
        ];
        Self::offer_lines(local, now, &lines, Direction::RecvOnly)
    }

    fn offer_lines(
        local: SocketAddr,
        now: Instant,
        kinds: &[MediaKind],
        dir: Direction,
    ) -> Result<(SyntheticPeer, String), SfuError> {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        let candidate = Candidate::host(local, "udp").map_err(|_| SfuError::BadCandidate(local))?;
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        let mids: Vec<(Mid, MediaKind)> = kinds
            .iter()
            .map(|&k| (change.add_media(k, dir, None, None, None), k))
            .collect();
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| SfuError::BadSdp("nothing to offer".into()))?;
        let lines = mids
            .into_iter()
            .map(|(mid, kind)| LineCounts {
                mid,
                kind,
                frames: 0,
                bytes: 0,
                last: None,
            })
            .collect();
        let peer = SyntheticPeer {
            rtc,
            local,
            pending: Some(pending),
            lines,
            audio: None,
            video: None,
            connected: false,
            disconnected: false,
            counts: Counts::default(),
            on_media: None,
        };
        Ok((peer, offer.to_sdp_string()))
    }

    /// Applies the gateway's answer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), SfuError> {
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| SfuError::BadSdp("no offer pending".into()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        let first = |kind: MediaKind| self.lines.iter().find(|l| l.kind == kind).map(|l| l.mid);
        let (audio, video) = (first(MediaKind::Audio), first(MediaKind::Video));
        self.audio = audio.and_then(|m| self.pt(m, Codec::Opus).map(|pt| (m, pt)));
        self.video = video.and_then(|m| self.pt(m, Codec::Vp8).map(|pt| (m, pt)));
        Ok(())
    }

    /// The payload type of `codec` on `mid`, if the answer lets us send on it.
    fn pt(&mut self, mid: Mid, codec: Codec) -> Option<Pt> {
        if !self.rtc.media(mid)?.direction().is_sending() {
            return None;
        }
        let writer = self.rtc.writer(mid)?;
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt());
        pt
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// ICE reported the gateway gone.
    pub fn is_disconnected(&self) -> bool {
        self.disconnected
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Calls `f` with every frame received, as it is received (the load benchmark reads
    /// a send time its sender appended to the payload).
    pub fn on_media(&mut self, f: OnMedia) {
        self.on_media = Some(f);
    }

    /// Per m-line receive counts, in offer order.
    pub fn lines(&self) -> &[LineCounts] {
        &self.lines
    }

    /// A datagram from `source` (the gateway).
    pub fn handle_datagram(&mut self, source: SocketAddr, bytes: &[u8], now: Instant) {
        let Ok(contents) = bytes.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(error = %e, "synthetic participant: input refused");
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %e, "synthetic participant: timeout refused");
        }
    }

    /// Drains str0m: datagrams to `out`; returns when to call [`Self::handle_timeout`].
    pub fn poll(&mut self, out: &mut Vec<Datagram>) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => out.push(Datagram {
                    to: t.destination,
                    bytes: t.contents.into(),
                }),
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    tracing::debug!(error = %e, "synthetic participant failed");
                    self.disconnected = true;
                    return None;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.disconnected = true;
            }
            Event::KeyframeRequest(_) => self.counts.keyframe_requests += 1,
            Event::MediaData(d) => {
                let Some(line) = self.lines.iter_mut().find(|l| l.mid == d.mid) else {
                    return;
                };
                line.frames += 1;
                line.bytes += d.data.len() as u64;
                if let Some(f) = self.on_media.as_mut() {
                    f(line.kind, &d.data);
                }
                let c = &mut self.counts;
                match line.kind {
                    MediaKind::Audio => {
                        c.opus_packets += 1;
                        c.audio_bytes += d.data.len() as u64;
                    }
                    MediaKind::Video => {
                        c.video_frames += 1;
                        c.video_bytes += d.data.len() as u64;
                        if matches!(&d.codec_extra, CodecExtra::Vp8(x) if x.is_keyframe) {
                            c.keyframes += 1;
                        }
                    }
                }
                line.last = Some(d.data);
            }
            _ => {}
        }
    }

    /// Sends one VP8 frame with its 90 kHz RTP time; false if not connected yet.
    pub fn send_video(&mut self, now: Instant, rtp_time: u64, frame: &Arc<[u8]>) -> bool {
        let Some((mid, pt)) = self.video else {
            return false;
        };
        let time = MediaTime::new(rtp_time, Frequency::NINETY_KHZ);
        if self.write(mid, pt, now, time, frame) {
            self.counts.sent_video_frames += 1;
            return true;
        }
        false
    }

    /// Sends one Opus packet with its 48 kHz RTP time; false if not connected yet.
    pub fn send_audio(&mut self, now: Instant, rtp_time: u64, packet: &Arc<[u8]>) -> bool {
        let Some((mid, pt)) = self.audio else {
            return false;
        };
        let time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
        if self.write(mid, pt, now, time, packet) {
            self.counts.sent_opus_packets += 1;
            return true;
        }
        false
    }

    fn write(&mut self, mid: Mid, pt: Pt, now: Instant, time: MediaTime, data: &Arc<[u8]>) -> bool {
        if !self.connected {
            return false;
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        writer.write(pt, now, time, data.clone()).is_ok()
    }

    /// Sends a PLI for the video it receives (on its first video m-line).
    pub fn request_keyframe(&mut self) -> bool {
        let Some(mid) = self
            .lines
            .iter()
            .find(|l| l.kind == MediaKind::Video)
            .map(|l| l.mid)
        else {
            return false;
        };
        let Some(mut writer) = self.rtc.writer(mid) else {
            return false;
        };
        writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .is_ok()
    }
}

/// Pre-encoded media played in a loop at its own rate.
#[derive(Debug, Clone)]
pub struct Script {
    pub video: Vec<VideoFrame>,
    pub audio: Vec<AudioPacket>,
}

impl Script {
    /// Reads a VP8 IVF file and an Opus Ogg file.
    pub fn from_files(ivf: &Path, ogg: &Path) -> Result<Script, ScriptError> {
        let video = read_ivf(&std::fs::read(ivf)?)?;
        let audio = read_ogg_opus(&std::fs::read(ogg)?)?;
        Ok(Script { video, audio })
    }

    /// The length of one loop of the video (90 kHz) and the audio (48 kHz): the last
    /// item's time plus one item's spacing.
    fn spans(&self) -> (u64, u64) {
        let span = |times: &[u64], fallback: u64| match times {
            [.., a, b] => b + (b - a).max(1),
            [_] | [] => fallback,
        };
        let v: Vec<u64> = self.video.iter().map(|f| f.rtp_time).collect();
        let a: Vec<u64> = self.audio.iter().map(|p| p.rtp_time).collect();
        (span(&v, 3_000), span(&a, 960))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("reading media: {0}")]
    Io(#[from] std::io::Error),
    #[error("media file: {0}")]
    Format(#[from] MediaFileError),
}

/// [`run`], returning the per m-line counts too (a watcher's four lines).
pub async fn run_for_lines(
    socket: UdpSocket,
    peer: SyntheticPeer,
    script: Arc<Script>,
    duration: Duration,
    linger: Duration,
) -> (Counts, Vec<LineCounts>) {
    let peer = play(socket, peer, script, duration, linger).await;
    (peer.counts(), peer.lines().to_vec())
}

/// Plays `script` through `peer` over `socket` for `duration` after it connects (or gives
/// up `connect_within` after starting), and returns its counts. Receives all the while,
/// and for `linger` after the last send so the other side's last frames are counted.
pub async fn run(
    socket: UdpSocket,
    peer: SyntheticPeer,
    script: Arc<Script>,
    duration: Duration,
    linger: Duration,
) -> Counts {
    play(socket, peer, script, duration, linger).await.counts()
}

async fn play(
    socket: UdpSocket,
    mut peer: SyntheticPeer,
    script: Arc<Script>,
    duration: Duration,
    linger: Duration,
) -> SyntheticPeer {
    let started = Instant::now(); // clock-ok: a load generator paces in real time
    let connect_within = super::CONNECT_TIMEOUT;
    let (video_span, audio_span) = script.spans();
    let mut media_start: Option<Instant> = None;
    let (mut vi, mut ai) = (0usize, 0usize);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now(); // clock-ok
        if peer.is_connected() && media_start.is_none() {
            media_start = Some(now);
        }
        let mut next_send = None;
        if let Some(start) = media_start {
            let elapsed = now - start;
            if elapsed >= duration + linger || peer.is_disconnected() {
                return peer;
            }
            if elapsed < duration {
                let at = |t: u64, hz: u64| start + Duration::from_micros(t * 1_000_000 / hz);
                let vt = |i: usize| media_time(&script.video, i, video_span, |f| f.rtp_time);
                let atime = |i: usize| media_time(&script.audio, i, audio_span, |p| p.rtp_time);
                while let Some(t) = vt(vi).filter(|&t| at(t, 90_000) <= now) {
                    if let Some(f) = script.video.get(vi % script.video.len().max(1)) {
                        peer.send_video(now, t, &f.data);
                    }
                    vi += 1;
                }
                while let Some(t) = atime(ai).filter(|&t| at(t, 48_000) <= now) {
                    if let Some(p) = script.audio.get(ai % script.audio.len().max(1)) {
                        peer.send_audio(now, t, &p.data);
                    }
                    ai += 1;
                }
                let nv = vt(vi).map(|t| at(t, 90_000));
                let na = atime(ai).map(|t| at(t, 48_000));
                next_send = nv.into_iter().chain(na).min();
            } else {
                next_send = Some(start + duration + linger);
            }
        } else if now - started > connect_within {
            return peer;
        }
        let timeout = peer.poll(&mut out);
        for d in out.drain(..) {
            if let Err(e) = socket.send_to(&d.bytes, d.to).await {
                tracing::debug!(error = %e, "synthetic participant: send failed");
            }
        }
        let wake = [timeout, next_send, Some(now + Duration::from_millis(100))]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    let now = Instant::now(); // clock-ok
                    peer.handle_datagram(from, buf.get(..n).unwrap_or_default(), now);
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                peer.handle_timeout(Instant::now()); // clock-ok
            }
        }
    }
}

/// The RTP time of item `i` of a looped list (each loop `span` later).
fn media_time<T>(items: &[T], i: usize, span: u64, time: impl Fn(&T) -> u64) -> Option<u64> {
    let n = items.len();
    let item = items.get(i.checked_rem(n)?)?;
    Some((i / n) as u64 * span + time(item))
}
