//! A str0m peer playing the browser (receive-only, two audio m-lines) against [`Peer`],
//! both driven in memory on a virtual clock.

use super::*;
use crate::media::engine::RtpFields;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaData};

const BROWSER: &str = "127.0.0.1:40000";
const GATEWAY: &str = "127.0.0.1:41000";

struct Browser {
    rtc: Rtc,
    mids: Vec<Mid>,
    got: Vec<MediaData>,
    /// The only gateway address its datagrams reach (all when `None`), as a browser
    /// that has no route to the gateway's other candidates.
    reaches: Option<SocketAddr>,
    /// The gateway addresses datagrams came from.
    heard_from: Vec<SocketAddr>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A browser's offer with `lines` recvonly audio m-lines, and the gateway's answer.
fn negotiate(lines: usize, now: Instant) -> (Browser, Peer) {
    negotiate_with(lines, &[addr(GATEWAY)], now)
}

/// [`negotiate`] with a gateway offering a host candidate on each of `gateway`.
fn negotiate_with(lines: usize, gateway: &[SocketAddr], now: Instant) -> (Browser, Peer) {
    // Like Chromium: Opus first, then PCMU and PCMA.
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .build(now);
    rtc.add_local_candidate(Candidate::host(addr(BROWSER), "udp").unwrap());
    let mut change = rtc.sdp_api();
    let mids: Vec<Mid> = (0..lines)
        .map(|_| change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
        .collect();
    let (offer, pending) = change.apply().unwrap();
    let (peer, answer) = Peer::answer(&offer.to_sdp_string(), gateway, now).unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("a=sendonly"), "{answer}");
    assert!(answer.contains("PCMU/8000"), "{answer}");
    let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();
    let browser = Browser {
        rtc,
        mids,
        got: Vec::new(),
        reaches: None,
        heard_from: Vec::new(),
    };
    (browser, peer)
}

/// Moves every pending datagram both ways, then lets `step` of virtual time pass.
fn pump(b: &mut Browser, p: &mut Peer, now: &mut Instant, step: Duration) {
    for _ in 0..50 {
        let mut moved = false;
        loop {
            match b.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    moved = true;
                    if b.reaches.is_none_or(|r| r == t.destination) {
                        p.on_datagram(*now, addr(BROWSER), t.destination, &t.contents);
                    }
                }
                Output::Event(Event::MediaData(d)) => b.got.push(d),
                Output::Event(_) => {}
            }
        }
        let mut out = Vec::new();
        p.poll(&mut out);
        for d in out {
            moved = true;
            assert_eq!(d.to, addr(BROWSER));
            if !b.heard_from.contains(&d.from) {
                b.heard_from.push(d.from);
            }
            let input = Input::Receive(
                *now,
                Receive {
                    proto: Protocol::Udp,
                    source: d.from,
                    destination: addr(BROWSER),
                    contents: d.bytes.as_slice().try_into().unwrap(),
                },
            );
            b.rtc.handle_input(input).unwrap();
        }
        if !moved {
            break;
        }
    }
    *now += step;
    b.rtc.handle_input(Input::Timeout(*now)).unwrap();
    p.on_timeout(*now);
}

fn tapped(toward: Side, seq: u16, ts: u32, pt: u8, at: Instant, byte: u8) -> TapPacket {
    let rtp = RtpFields {
        ssrc: 0x1234,
        seq,
        ts,
        pt,
        marker: false,
    };
    TapPacket::new(7, toward, at, rtp, &[byte; 160]).unwrap()
}

fn connect(lines: usize) -> (Browser, Peer, Instant) {
    let now = Instant::now();
    let (b, p) = negotiate(lines, now);
    complete(b, p, now)
}

/// Pumps until the peer reports ICE and DTLS done.
fn complete(mut b: Browser, mut p: Peer, mut now: Instant) -> (Browser, Peer, Instant) {
    for _ in 0..200 {
        if p.is_connected() {
            break;
        }
        pump(&mut b, &mut p, &mut now, Duration::from_millis(10));
    }
    assert!(p.is_connected(), "ICE-lite + DTLS completed in memory");
    (b, p, now)
}

#[test]
fn both_parties_arrive_on_their_own_m_line_with_their_rtp_timing() {
    let (mut b, mut p, mut now) = connect(2);
    assert_eq!(p.track_count(), 2);
    for i in 0..10u16 {
        let ts = 4_294_967_000u32.wrapping_add(u32::from(i) * 160); // wraps mid-way
        assert_eq!(
            p.on_tap(&tapped(Side::B, i, ts, 0, now, 0x11)),
            Forwarded::Sent
        );
        assert_eq!(
            p.on_tap(&tapped(Side::A, i, ts, 0, now, 0x22)),
            Forwarded::Sent
        );
        pump(&mut b, &mut p, &mut now, Duration::from_millis(20));
    }
    let on = |mid: Mid| -> Vec<&MediaData> { b.got.iter().filter(|d| d.mid == mid).collect() };
    let inmate = on(b.mids[0]);
    let called = on(b.mids[1]);
    assert!(inmate.len() >= 9, "inmate frames: {}", inmate.len());
    assert!(called.len() >= 9, "called party frames: {}", called.len());
    assert!(inmate.iter().all(|d| d.data.iter().all(|&x| x == 0x11)));
    assert!(called.iter().all(|d| d.data.iter().all(|&x| x == 0x22)));
    let times: Vec<u64> = inmate.iter().map(|d| d.time.numer()).collect();
    assert!(
        times.windows(2).all(|w| w[1] == w[0] + 160),
        "20 ms apart across the wrap: {times:?}"
    );
}

/// A gateway offering several host candidates (as when it binds a wildcard address) is
/// reached through the one the browser can route to, and answers from that one only.
#[test]
fn the_browser_connects_through_the_one_candidate_it_reaches() {
    let now = Instant::now();
    let loopback = addr(GATEWAY);
    let lan = addr("192.0.2.2:41002");
    let (mut b, p) = negotiate_with(2, &[loopback, lan], now);
    b.reaches = Some(lan);
    let (mut b, mut p, mut now) = complete(b, p, now);
    for i in 0..5u16 {
        let t = tapped(Side::B, i, u32::from(i) * 160, 0, now, 0x11);
        assert_eq!(p.on_tap(&t), Forwarded::Sent);
        pump(&mut b, &mut p, &mut now, Duration::from_millis(20));
    }
    assert_eq!(b.heard_from, vec![lan]);
    assert!(b.got.len() >= 4, "frames: {}", b.got.len());
    // A datagram on a socket the answer never offered is not the peer's.
    let stray = addr("198.51.100.7:41003");
    let before = p.last_heard;
    p.on_datagram(now + Duration::from_secs(1), addr(BROWSER), stray, &[0; 20]);
    assert_eq!(p.last_heard, before);
}

#[test]
fn one_m_line_carries_the_inmate_and_skips_the_other_side() {
    let (_b, mut p, now) = connect(1);
    assert_eq!(p.track_count(), 1);
    assert_eq!(
        p.on_tap(&tapped(Side::B, 1, 160, 0, now, 1)),
        Forwarded::Sent
    );
    assert_eq!(
        p.on_tap(&tapped(Side::A, 1, 160, 0, now, 1)),
        Forwarded::Skipped
    );
    assert_eq!(
        p.on_tap(&tapped(Side::B, 2, 320, 18, now, 1)),
        Forwarded::Refused
    );
}

#[test]
fn nothing_is_sent_before_the_browser_connects() {
    let now = Instant::now();
    let (_b, mut p) = negotiate(2, now);
    assert_eq!(
        p.on_tap(&tapped(Side::B, 1, 160, 0, now, 1)),
        Forwarded::Skipped
    );
}

#[test]
fn a_browser_that_never_connects_is_given_up() {
    let mut now = Instant::now();
    let (_b, mut p) = negotiate(2, now);
    let mut out = Vec::new();
    let mut deadline = p.poll(&mut out);
    while p.closed().is_none() && now < deadline + CONNECT_TIMEOUT {
        now = deadline.max(now + Duration::from_millis(100));
        p.on_timeout(now);
        deadline = p.poll(&mut out);
    }
    // str0m's ICE agent may call it first (no binding request ever came).
    assert!(
        matches!(
            p.closed(),
            Some(Closed::NeverConnected | Closed::Disconnected)
        ),
        "{:?}",
        p.closed()
    );
    assert!(now <= deadline + CONNECT_TIMEOUT);
}

#[test]
fn a_silent_browser_is_given_up_after_the_idle_timeout() {
    let (_b, mut p, mut now) = connect(2);
    let mut out = Vec::new();
    let until = now + IDLE_TIMEOUT + Duration::from_secs(1);
    while p.closed().is_none() && now < until {
        now += Duration::from_millis(500);
        p.on_timeout(now);
        p.poll(&mut out);
    }
    assert!(
        matches!(p.closed(), Some(Closed::Idle | Closed::Disconnected)),
        "{:?}",
        p.closed()
    );
}

#[test]
fn offers_without_audio_or_g711_are_refused() {
    let now = Instant::now();
    let gw = addr(GATEWAY);
    assert!(matches!(
        Peer::answer("v=0\r\n", &[gw], now),
        Err(PeerError::NoAudio)
    ));
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _) = change.apply().unwrap();
    let err = Peer::answer(&offer.to_sdp_string(), &[gw], now).unwrap_err();
    assert!(matches!(err, PeerError::NoG711), "{err}");
    let garbage = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    assert!(matches!(
        Peer::answer(garbage, &[gw], now),
        Err(PeerError::BadSdp(_))
    ));
}

#[test]
fn audio_mids_are_listed_in_m_line_order() {
    let sdp = "v=0\r\nm=audio 9 UDP 0\r\na=mid:a0\r\nm=video 9 UDP 96\r\na=mid:v\r\nm=audio 9 UDP 0\r\na=mid:a1\r\n";
    assert_eq!(audio_mids(sdp), ["a0", "a1"]);
}

#[test]
fn rtp_timestamps_extend_across_wrap_and_reordering() {
    let mut u = Unwrap::default();
    let a = u.extend(u32::MAX - 159);
    let b = u.extend(0);
    let c = u.extend(u32::MAX - 319); // late packet from before the wrap
    let d = u.extend(160);
    assert_eq!((b - a, a - c, d - b), (160, 160, 160));
}
