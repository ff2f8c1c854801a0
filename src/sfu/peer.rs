//! One browser's str0m peer in a room: the answer to its offer, which m-line carries what,
//! and its connection state. The room decides what to forward; this only holds the `Rtc`.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::{Candidate, Rtc};

use super::{Left, Participant, RoomConfig, SfuError, Side, CONNECT_TIMEOUT, IDLE_TIMEOUT};

/// Index of a media kind in the per-kind arrays.
pub(super) fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

/// One browser's peer.
pub(super) struct Peer {
    pub who: Participant,
    pub rtc: Rtc,
    /// The m-line (audio, video) this peer sends its own media on: sides only.
    pub recv: [Option<Mid>; 2],
    /// `send[side][kind]`: the m-line that carries `side`'s media of `kind` to this peer.
    pub send: [[Option<Mid>; 2]; 2],
    pub opened: Instant,
    pub last_heard: Instant,
    pub connected: bool,
    pub left: Option<Left>,
    /// Polled since its last input or write? The room drains only dirty peers.
    pub dirty: bool,
    /// str0m's next deadline for this peer.
    pub next: Instant,
    /// When a keyframe request was last passed to this peer as a sender.
    pub last_keyframe_request: Option<Instant>,
    /// Whether frames arrived from this side since it connected.
    pub sent_media: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("who", &self.who)
            .field("recv", &self.recv)
            .field("send", &self.send)
            .field("connected", &self.connected)
            .field("left", &self.left)
            .finish()
    }
}

impl Peer {
    /// Answers `offer` as an ICE-lite peer reachable at `local`.
    pub(super) fn answer(
        who: Participant,
        offer: &str,
        local: SocketAddr,
        config: &RoomConfig,
        now: Instant,
    ) -> Result<(Peer, String), SfuError> {
        let lines = m_lines(offer);
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let mut builder = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(config.h264);
        if config.egress_bwe {
            builder = builder.enable_bwe(Some(Bitrate::kbps(config.initial_bitrate_kbps)));
        }
        let mut rtc = builder.build(now);
        let candidate = Candidate::host(local, "udp").map_err(|_| SfuError::BadCandidate(local))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc.sdp_api().accept_offer(parsed)?;
        let mut peer = Peer {
            who,
            rtc,
            recv: [None, None],
            send: [[None, None], [None, None]],
            opened: now,
            last_heard: now,
            connected: false,
            left: None,
            dirty: true,
            next: now,
            last_keyframe_request: None,
            sent_media: false,
        };
        peer.assign(&lines);
        if peer
            .recv
            .iter()
            .chain(peer.send.iter().flatten())
            .all(Option::is_none)
        {
            return Err(SfuError::NoUsableMedia);
        }
        Ok((peer, answer.to_sdp_string()))
    }

    /// Decides what each usable m-line carries (see the module doc).
    fn assign(&mut self, lines: &[(MediaKind, String)]) {
        let mut seen = [0usize; 2];
        for (kind, mid) in lines {
            let mid = Mid::from(mid.as_str());
            if !self.usable(mid, *kind) {
                continue;
            }
            let k = kind_index(*kind);
            let nth = seen[k];
            seen[k] += 1;
            match self.who {
                Participant::Side(side) if nth == 0 => {
                    self.recv[k] = Some(mid);
                    self.send[side.other().index()][k] = Some(mid);
                }
                Participant::Side(_) => {}
                Participant::Watcher(_) => {
                    let side = match nth {
                        0 => Side::Visitor,
                        1 => Side::Inmate,
                        _ => continue,
                    };
                    self.send[side.index()][k] = Some(mid);
                }
            }
        }
    }

    /// Whether the answer kept m-line `mid` of `kind` with a codec we forward.
    fn usable(&mut self, mid: Mid, kind: MediaKind) -> bool {
        match self.rtc.media(mid) {
            Some(m) if m.kind() == kind && !m.disabled() => {}
            _ => return false,
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        let codecs = [Codec::Opus, Codec::Vp8, Codec::H264];
        let usable = writer
            .payload_params()
            .any(|p| codecs.contains(&p.spec().codec));
        usable
    }

    /// The side whose media m-line `mid` carries to this peer (keyframe requests).
    pub(super) fn source_of(&self, mid: Mid) -> Option<Side> {
        [Side::Visitor, Side::Inmate]
            .into_iter()
            .find(|s| self.send[s.index()].contains(&Some(mid)))
    }

    /// The media kind this peer sends on `mid`, if it is one of its own tracks.
    pub(super) fn recv_kind(&self, mid: Mid) -> Option<MediaKind> {
        if self.recv[0] == Some(mid) {
            Some(MediaKind::Audio)
        } else if self.recv[1] == Some(mid) {
            Some(MediaKind::Video)
        } else {
            None
        }
    }

    /// The deadline the room adds to str0m's: connect or idle.
    pub(super) fn own_deadline(&self) -> Instant {
        if self.connected {
            self.last_heard + IDLE_TIMEOUT
        } else {
            self.opened + CONNECT_TIMEOUT
        }
    }

    pub(super) fn leave(&mut self, why: Left) {
        if self.left.is_none() {
            self.left = Some(why);
            self.rtc.disconnect();
        }
    }
}

/// Each m-line's kind and `a=mid`, in order (audio and video only).
pub(super) fn m_lines(sdp: &str) -> Vec<(MediaKind, String)> {
    let mut lines = Vec::new();
    let mut kind = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = if m.starts_with("audio ") {
                Some(MediaKind::Audio)
            } else if m.starts_with("video ") {
                Some(MediaKind::Video)
            } else {
                None
            };
        } else if let (Some(mid), Some(k)) = (line.strip_prefix("a=mid:"), kind) {
            if !mid.is_empty() {
                lines.push((k, mid.to_string()));
            }
        }
    }
    lines
}
