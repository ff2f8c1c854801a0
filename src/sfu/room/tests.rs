//! Synthetic participants (str0m clients) connected through a [`Room`] in memory, on a
//! virtual clock.

use super::*;
use crate::sfu::synthetic::SyntheticPeer;
use std::time::Duration;

const GATEWAY: &str = "127.0.0.1:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Net {
    room: Room,
    clients: Vec<(Participant, SyntheticPeer)>,
    /// Clients that stopped sending anything (a browser gone without a word).
    silent: Vec<Participant>,
    now: Instant,
    events: Vec<RoomEvent>,
    /// Keyframe requests each side has answered with a keyframe.
    answered: std::collections::HashMap<Participant, u64>,
}

impl Net {
    fn new() -> Net {
        Net {
            room: Room::new(RoomConfig::default(), addr(GATEWAY)),
            clients: Vec::new(),
            silent: Vec::new(),
            now: Instant::now(),
            events: Vec::new(),
            answered: Default::default(),
        }
    }

    /// Offers for `who` from a client at `port`, answers, and pumps until connected.
    fn join(&mut self, who: Participant, port: u16) {
        let local = addr(&format!("127.0.0.1:{port}"));
        let (mut client, offer) = match who {
            Participant::Watcher(_) => SyntheticPeer::offer_watcher(local, self.now),
            Participant::Side(_) => SyntheticPeer::offer(local, self.now),
        }
        .unwrap();
        let answer = self.room.accept_offer(who, &offer, self.now).unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        client.accept_answer(&answer).unwrap();
        self.clients.retain(|(w, _)| *w != who);
        self.clients.push((who, client));
        for _ in 0..100 {
            if self.room.is_connected(who) && self.client(who).is_connected() {
                return;
            }
            self.pump(Duration::from_millis(10));
        }
        panic!("{who:?} did not connect");
    }

    fn client(&mut self, who: Participant) -> &mut SyntheticPeer {
        &mut self.clients.iter_mut().find(|(w, _)| *w == who).unwrap().1
    }

    /// Moves every pending datagram both ways, then lets `step` of virtual time pass.
    fn pump(&mut self, step: Duration) {
        let gw = addr(GATEWAY);
        for _ in 0..50 {
            let mut moved = false;
            for (who, c) in self.clients.iter_mut() {
                let mut out = Vec::new();
                c.poll(&mut out);
                if self.silent.contains(who) {
                    continue;
                }
                for d in out {
                    moved = true;
                    assert_eq!(d.to, gw);
                    self.room.handle_datagram(c.local(), gw, &d.bytes, self.now);
                }
            }
            let o = self.room.poll(self.now);
            self.events.extend(o.events);
            for d in o.transmits {
                moved = true;
                if let Some((_, c)) = self.clients.iter_mut().find(|(_, c)| c.local() == d.to) {
                    c.handle_datagram(gw, &d.bytes, self.now);
                }
            }
            if !moved {
                break;
            }
        }
        self.now += step;
        for (_, c) in self.clients.iter_mut() {
            c.handle_timeout(self.now);
        }
    }

    /// One 20 ms tick of media from both sides: an Opus packet each, and a VP8 frame on
    /// every other tick (keyframe first). Payloads are marked with the sender's byte.
    fn media(&mut self, ticks: u64) {
        for t in 0..ticks {
            let now = self.now;
            for (who, mark) in [(VISITOR, 0xa0u8), (INMATE, 0xb0u8)] {
                let Some((_, c)) = self.clients.iter_mut().find(|(w, _)| *w == who) else {
                    continue;
                };
                let audio: Arc<[u8]> = vec![0xfc, mark, mark].into();
                c.send_audio(now, t * 960, &audio);
                if t % 2 == 0 {
                    // VP8 frame tag, bit 0: inter frame. A keyframe first and whenever the
                    // room asked for one, as a browser does.
                    let asked = c.counts().keyframe_requests;
                    let key = t == 0 || asked > self.answered.get(&who).copied().unwrap_or(0);
                    self.answered.insert(who, asked);
                    let tag = if key { 0x10 } else { 0x11 };
                    let mut frame = vec![tag, 0x02, 0x00, 0x9d, 0x01, 0x2a];
                    frame.extend(std::iter::repeat_n(mark, 2_000)); // two packets
                    c.send_video(now, t * 1_800, &frame.into());
                }
            }
            self.pump(Duration::from_millis(20));
        }
    }

    fn take_events(&mut self) -> Vec<RoomEvent> {
        std::mem::take(&mut self.events)
    }
}

const VISITOR: Participant = Participant::Side(Side::Visitor);
const INMATE: Participant = Participant::Side(Side::Inmate);

fn pair() -> Net {
    let mut net = Net::new();
    net.join(VISITOR, 40_001);
    net.join(INMATE, 40_002);
    net
}

#[test]
fn media_is_forwarded_both_ways_and_billing_may_start() {
    let mut net = pair();
    let events = net.take_events();
    assert!(
        events.contains(&RoomEvent::Connected(VISITOR)),
        "{events:?}"
    );
    assert!(events.contains(&RoomEvent::Connected(INMATE)), "{events:?}");
    assert!(!net.room.is_flowing());
    net.media(50);
    net.pump(Duration::from_millis(100));
    for (who, other_mark) in [(VISITOR, 0xb0u8), (INMATE, 0xa0u8)] {
        let c = net.client(who).counts();
        assert!(c.opus_packets >= 48, "{who:?}: {c:?}");
        assert!(c.video_frames >= 24, "{who:?}: {c:?}");
        assert!(c.keyframes >= 1, "{who:?}: {c:?}");
        let lines = net.client(who).lines();
        assert!(lines.iter().all(|l| l
            .last
            .as_ref()
            .is_some_and(|p| p.last() == Some(&other_mark))));
    }
    assert!(net.take_events().contains(&RoomEvent::MediaFlowing));
    assert!(net.room.is_flowing());
    let s = net.room.stats();
    assert_eq!(s.frames_in, s.frames_forwarded, "{s:?}");
    assert_eq!(s.codec_mismatch, 0);
}

#[test]
fn a_receivers_keyframe_request_reaches_the_sender() {
    let mut net = pair();
    net.media(10);
    net.pump(Duration::from_secs(1)); // past the throttle of the join's own request
    let before = net.client(VISITOR).counts().keyframe_requests;
    net.take_events();
    assert!(net.client(INMATE).request_keyframe());
    // str0m sends a PLI with its next RTCP feedback, on both legs: within a second.
    for _ in 0..20 {
        net.pump(Duration::from_millis(50));
    }
    assert!(net.client(VISITOR).counts().keyframe_requests > before);
    let events = net.take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            RoomEvent::KeyframeRequested {
                sender: Side::Visitor,
                reason: KeyframeReason::Receiver(INMATE),
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn a_watcher_receives_both_sides_on_their_own_m_lines_and_triggers_keyframes() {
    let mut net = pair();
    net.media(10);
    net.pump(Duration::from_secs(1));
    net.take_events();
    let watcher = Participant::Watcher(1);
    net.join(watcher, 40_003);
    let events = net.take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            RoomEvent::KeyframeRequested {
                reason: KeyframeReason::Joined(w),
                ..
            } if *w == watcher
        )),
        "{events:?}"
    );
    net.media(20);
    net.pump(Duration::from_millis(100));
    let lines = net.client(watcher).lines().to_vec();
    assert_eq!(lines.len(), 4);
    for (line, mark) in lines.iter().zip([0xa0u8, 0xa0, 0xb0, 0xb0]) {
        let last = line.last.as_ref().and_then(|p| p.last());
        assert!(
            line.frames >= 9,
            "{:?} {}: {} frames",
            line.kind,
            line.mid,
            line.frames
        );
        assert_eq!(last, Some(&mark), "{:?} {}", line.kind, line.mid);
    }
    // Nothing of the watcher's reaches the sides (it sends nothing), and the sides still
    // hear only each other.
    assert_eq!(
        net.client(VISITOR).lines()[0]
            .last
            .as_ref()
            .and_then(|p| p.last()),
        Some(&0xb0)
    );
}

#[test]
fn garbage_and_strangers_are_ignored() {
    let mut net = pair();
    let gw = addr(GATEWAY);
    let stranger = addr("127.0.0.1:40999");
    let now = net.now;
    assert!(!net.room.handle_datagram(stranger, gw, b"", now));
    assert!(!net.room.handle_datagram(stranger, gw, &[0xff; 40], now));
    let mut rtp = vec![0x80, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
    rtp.extend([0u8; 100]);
    assert!(!net.room.handle_datagram(stranger, gw, &rtp, now));
    // A known peer's address with garbage is not taken either (not STUN/DTLS/RTP/RTCP).
    assert!(!net
        .room
        .handle_datagram(addr("127.0.0.1:40001"), gw, &[0x42; 12], now));
    net.media(10);
    assert!(net.client(INMATE).counts().video_frames >= 4);
}

#[test]
fn a_participant_removed_or_silent_leaves_with_an_event() {
    let mut net = pair();
    net.media(10);
    net.pump(Duration::from_millis(50));
    assert!(net.take_events().contains(&RoomEvent::MediaFlowing));
    net.room.remove(VISITOR);
    net.pump(Duration::from_millis(10));
    let events = net.take_events();
    assert!(
        events.contains(&RoomEvent::Left(VISITOR, Left::Removed)),
        "{events:?}"
    );
    assert!(events.contains(&RoomEvent::MediaStopped), "{events:?}");
    assert!(!net.room.is_connected(VISITOR));

    net.silent.push(INMATE);
    for _ in 0..40 {
        net.pump(Duration::from_millis(500));
    }
    let events = net.take_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RoomEvent::Left(INMATE, Left::Idle | Left::Disconnected))),
        "{events:?}"
    );
    assert!(net.room.is_empty());
    assert_eq!(net.room.poll(net.now).timeout, None);
}

#[test]
fn a_rejoin_replaces_the_peer_and_asks_the_other_side_for_a_keyframe() {
    let mut net = pair();
    net.media(10);
    net.pump(Duration::from_secs(1));
    net.take_events();
    net.join(VISITOR, 40_011);
    let events = net.take_events();
    assert!(
        events.contains(&RoomEvent::Left(VISITOR, Left::Replaced)),
        "{events:?}"
    );
    assert!(
        events.contains(&RoomEvent::Connected(VISITOR)),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            RoomEvent::KeyframeRequested {
                sender: Side::Inmate,
                reason: KeyframeReason::Joined(VISITOR),
                ..
            }
        )),
        "{events:?}"
    );
    net.media(10);
    assert!(net.client(VISITOR).counts().video_frames >= 4);
    assert!(net.client(INMATE).counts().video_frames >= 4);
}

#[test]
fn the_tap_gets_frames_with_keyframe_flags_and_drops_when_full() {
    let mut net = pair();
    let mut tap = net.room.tap(Side::Visitor, 8);
    net.media(20);
    let mut frames = Vec::new();
    while let Ok(f) = tap.frames.try_recv() {
        frames.push(f);
    }
    assert_eq!(frames.len(), 8);
    let video: Vec<&TapFrame> = frames
        .iter()
        .filter(|f| f.kind == MediaKind::Video)
        .collect();
    assert!(video
        .first()
        .is_some_and(|f| f.keyframe && f.clock_rate == 90_000));
    assert!(frames.iter().all(|f| f.side == Side::Visitor));
    let audio = frames.iter().find(|f| f.kind == MediaKind::Audio).unwrap();
    assert_eq!(audio.codec, str0m::format::Codec::Opus);
    assert!(tap.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // Forwarding went on regardless.
    assert!(net.client(INMATE).counts().opus_packets >= 18);
}

#[test]
fn a_tap_opened_mid_stream_asks_its_side_for_a_keyframe() {
    let mut net = pair();
    net.media(10);
    net.pump(Duration::from_secs(1));
    net.take_events();
    let _tap = net.room.tap(Side::Inmate, 64);
    net.pump(Duration::from_millis(20));
    let events = net.take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            RoomEvent::KeyframeRequested {
                sender: Side::Inmate,
                reason: KeyframeReason::Recorder,
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn offers_without_usable_media_are_refused_and_change_nothing() {
    let mut room = Room::new(RoomConfig::default(), addr(GATEWAY));
    let now = Instant::now();
    let err = room
        .accept_offer(VISITOR, "v=0\r\ngarbage", now)
        .unwrap_err();
    assert!(matches!(err, SfuError::BadSdp(_)), "{err}");
    // An offer with only G.722 audio: nothing the room forwards.
    let mut rtc = str0m::Rtc::builder()
        .clear_codecs()
        .enable_g722(true, false)
        .build(now);
    let mut change = rtc.sdp_api();
    change.add_media(
        MediaKind::Audio,
        str0m::media::Direction::SendRecv,
        None,
        None,
        None,
    );
    let (offer, _) = change.apply().unwrap();
    let err = room
        .accept_offer(VISITOR, &offer.to_sdp_string(), now)
        .unwrap_err();
    assert!(matches!(err, SfuError::NoUsableMedia), "{err}");
    assert!(room.is_empty());
}
