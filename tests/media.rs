//! Media layer integration tests: SDP in → SDP out (rtpengine style, `PORT` placeholders),
//! the relay's latching and stream continuity, DTMF from sipp's RFC 2833 captures, PIN
//! collection in virtual time, the shipped prompts, the port allocator, and property tests
//! that throw arbitrary bytes at every parser.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use proptest::prelude::*;
use sallyport::media::dtmf::{
    parse_sip_info, Collected, CollectorConfig, DigitCollector, DtmfDetector,
};
use sallyport::media::ports::{PortAllocator, PortError};
use sallyport::media::prompts::{parse_wav, PromptId, PromptSet};
use sallyport::media::relay::{DropReason, LatchPolicy, LegConfig, Relay, RelayDecision, Side};
use sallyport::media::rtp::{RtcpView, RtpView};
use sallyport::media::sdp::{
    self, answer, negotiated_from_answer, offer, Codec, CodecName, Direction, LocalMedia,
    NegotiatedMedia, SdpError, SessionDescription,
};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// SDP
// ---------------------------------------------------------------------------------------

const LOCAL_PORT: u16 = 20000;

fn local(ip: &str) -> LocalMedia {
    LocalMedia::new(SocketAddr::new(ip.parse().unwrap(), LOCAL_PORT), 42)
}

/// Test SDP is written with LF and `PORT` for our port; the wire uses CRLF.
fn wire(text: &str) -> String {
    text.trim_start()
        .replace("PORT", &LOCAL_PORT.to_string())
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect()
}

fn answer_of(offer_text: &str, local: &LocalMedia) -> Result<(String, NegotiatedMedia), SdpError> {
    let offer: SessionDescription = wire(offer_text).parse()?;
    answer(&offer, local).map(|(sdp, n)| (sdp.to_string(), n))
}

fn check_answer(offer_text: &str, expected: &str) -> NegotiatedMedia {
    let (got, negotiated) = answer_of(offer_text, &local("203.0.113.5")).unwrap();
    assert_eq!(got, wire(expected), "\n--- got ---\n{got}");
    negotiated
}

const PHONE_OFFER: &str = "
    v=0
    o=- 20518 0 IN IP4 192.0.2.10
    s=SDP data
    c=IN IP4 192.0.2.10
    t=0 0
    m=audio 11780 RTP/AVP 8 0 18 101
    a=rtpmap:8 PCMA/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:18 G729/8000
    a=fmtp:18 annexb=no
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=ptime:20
    a=sendrecv
";

#[test]
fn sdp_answer_picks_offerers_first_common_codec() {
    let n = check_answer(
        PHONE_OFFER,
        "
        v=0
        o=sallyport 42 1 IN IP4 203.0.113.5
        s=sallyport
        c=IN IP4 203.0.113.5
        t=0 0
        m=audio PORT RTP/AVP 8 101
        a=rtpmap:8 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-15
        a=ptime:20
        a=sendrecv
        ",
    );
    assert_eq!(n.remote, "192.0.2.10:11780".parse().unwrap());
    assert_eq!(n.remote_rtcp, "192.0.2.10:11781".parse().unwrap());
    assert_eq!(
        n.codec,
        Codec {
            pt: 8,
            name: CodecName::Pcma,
            clock_rate: 8000
        }
    );
    assert_eq!(
        (n.dtmf_pt, n.ptime, n.direction),
        (Some(101), 20, Direction::SendRecv)
    );
    assert!(n.may_send() && n.may_receive());
}

#[test]
fn sdp_answer_whole_intersection_when_asked() {
    let mut l = local("203.0.113.5");
    l.single_codec = false;
    let (got, _) = answer_of(PHONE_OFFER, &l).unwrap();
    assert!(got.contains("m=audio 20000 RTP/AVP 8 0 101\r\n"), "{got}");
    assert!(got.contains("a=rtpmap:0 PCMU/8000\r\n"));
    assert!(!got.contains("G729"));
}

#[test]
fn sdp_hold_with_sendonly_is_answered_recvonly() {
    let n = check_answer(
        "
        v=0
        o=- 20518 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=audio 11780 RTP/AVP 0 101
        a=rtpmap:101 telephone-event/8000
        a=sendonly
        ",
        "
        v=0
        o=sallyport 42 1 IN IP4 203.0.113.5
        s=sallyport
        c=IN IP4 203.0.113.5
        t=0 0
        m=audio PORT RTP/AVP 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-15
        a=recvonly
        ",
    );
    assert_eq!(n.direction, Direction::RecvOnly);
    assert!(!n.may_send() && n.may_receive());
    assert_eq!(n.ptime, 20);
}

/// A re-INVITE's offer tells whether the peer still sends: hold without media (inactive,
/// recvonly, a switched-off stream) vs hold with music (sendonly) and resume (sendrecv).
#[test]
fn sdp_reoffered_direction_says_whether_the_peer_sends() {
    let reoffer = |c: &str, port: &str, attr: &str| {
        let text = wire(&format!(
            "v=0\no=- 1 2 IN IP4 192.0.2.10\ns=-\nc=IN IP4 {c}\nt=0 0\n\
             m=audio {port} RTP/AVP 0\n{attr}\n"
        ));
        let sd: SessionDescription = text.parse().unwrap();
        sdp::reoffered_direction(&sd)
    };
    let cases = [
        ("192.0.2.10", "4000", "a=inactive", Direction::Inactive),
        ("192.0.2.10", "4000", "a=recvonly", Direction::SendOnly),
        ("192.0.2.10", "4000", "a=sendonly", Direction::RecvOnly),
        ("192.0.2.10", "4000", "a=sendrecv", Direction::SendRecv),
        ("192.0.2.10", "4000", "", Direction::SendRecv),
        ("0.0.0.0", "4000", "", Direction::RecvOnly),
        ("192.0.2.10", "0", "", Direction::Inactive),
    ];
    for (c, port, attr, ours) in cases {
        let got = reoffer(c, port, attr);
        assert_eq!(got, Some(ours), "{c} {port} {attr}");
        // What the media timeout reads: does the peer send?
        let peer_sends = ours.receives();
        assert_eq!(
            peer_sends,
            // A legacy `c=0.0.0.0` hold stops what the peer receives, not what it sends.
            matches!(attr, "a=sendonly" | "a=sendrecv" | "") && port != "0",
            "{c} {port} {attr}"
        );
    }
    let no_audio: SessionDescription = wire("v=0\no=- 1 2 IN IP4 192.0.2.10\ns=-\nt=0 0\n")
        .parse()
        .unwrap();
    assert_eq!(sdp::reoffered_direction(&no_audio), None);
}

#[test]
fn sdp_legacy_hold_c_zero_is_answered_recvonly() {
    let n = check_answer(
        "
        v=0
        o=- 20518 2 IN IP4 192.0.2.10
        s=-
        c=IN IP4 0.0.0.0
        t=0 0
        m=audio 11780 RTP/AVP 0
        a=ptime:30
        ",
        "
        v=0
        o=sallyport 42 1 IN IP4 203.0.113.5
        s=sallyport
        c=IN IP4 203.0.113.5
        t=0 0
        m=audio PORT RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        a=ptime:30
        a=recvonly
        ",
    );
    assert!(n.remote.ip().is_unspecified());
    assert!(!n.may_send());
    assert_eq!((n.ptime, n.dtmf_pt), (30, None));
}

#[test]
fn sdp_inactive_and_session_level_direction() {
    let (got, n) = answer_of(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        a=recvonly
        m=audio 11780 RTP/AVP 0
        ",
        &local("203.0.113.5"),
    )
    .unwrap();
    assert!(got.ends_with("a=sendonly\r\n"), "{got}");
    assert_eq!(n.direction, Direction::SendOnly);
    let (got, _) = answer_of(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=audio 11780 RTP/AVP 0
        a=inactive
        ",
        &local("203.0.113.5"),
    )
    .unwrap();
    assert!(got.ends_with("a=inactive\r\n"), "{got}");
}

#[test]
fn sdp_no_common_codec_is_488() {
    let err = answer_of(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=audio 11780 RTP/AVP 18 9
        a=rtpmap:18 G729/8000
        a=rtpmap:9 G722/8000
        ",
        &local("203.0.113.5"),
    )
    .unwrap_err();
    assert_eq!(err, SdpError::NoCommonCodec);
    assert_eq!(err.sip_status(), 488);
    let err = answer_of(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=video 11790 RTP/AVP 96
        m=audio 11780 RTP/SAVP 0
        ",
        &local("203.0.113.5"),
    )
    .unwrap_err();
    assert_eq!((err.clone(), err.sip_status()), (SdpError::NoAudio, 488));
}

#[test]
fn sdp_ipv6() {
    let (got, n) = answer_of(
        "
        v=0
        o=- 7 7 IN IP6 2001:db8::10
        s=-
        c=IN IP6 2001:db8::10
        t=0 0
        m=audio 40000 RTP/AVP 0 8
        ",
        &local("2001:db8::1"),
    )
    .unwrap();
    assert_eq!(
        got,
        wire(
            "
            v=0
            o=sallyport 42 1 IN IP6 2001:db8::1
            s=sallyport
            c=IN IP6 2001:db8::1
            t=0 0
            m=audio PORT RTP/AVP 0
            a=rtpmap:0 PCMU/8000
            a=sendrecv
            "
        )
    );
    assert_eq!(n.remote, "[2001:db8::10]:40000".parse().unwrap());
}

#[test]
fn sdp_rejects_other_streams_in_place() {
    check_answer(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=video 11790 RTP/AVP 96 97
        a=rtpmap:96 H264/90000
        m=audio 11780 RTP/SAVP 0
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA
        m=audio 11800 RTP/AVP 96 0
        c=IN IP4 192.0.2.11
        a=rtpmap:96 PCMU/8000
        m=audio 11810 RTP/AVP 0
        ",
        "
        v=0
        o=sallyport 42 1 IN IP4 203.0.113.5
        s=sallyport
        c=IN IP4 203.0.113.5
        t=0 0
        m=video 0 RTP/AVP 96 97
        m=audio 0 RTP/SAVP 0
        m=audio PORT RTP/AVP 96
        a=rtpmap:96 PCMU/8000
        a=sendrecv
        m=audio 0 RTP/AVP 0
        ",
    );
    // The media-level c= of the chosen stream wins over the session's.
    let (_, n) = answer_of(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=audio 11800 RTP/AVP 0
        c=IN IP4 192.0.2.11
        ",
        &local("203.0.113.5"),
    )
    .unwrap();
    assert_eq!(n.remote, "192.0.2.11:11800".parse().unwrap());
}

#[test]
fn sdp_rtcp_attribute_and_mux() {
    let (got, n) = answer_of(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=audio 11780 RTP/AVP 0
        a=rtcp:11999 IN IP4 192.0.2.99
        ",
        &local("203.0.113.5"),
    )
    .unwrap();
    assert!(!got.contains("rtcp"));
    assert_eq!(n.remote_rtcp, "192.0.2.99:11999".parse().unwrap());
    let (got, n) = answer_of(
        "
        v=0
        o=- 1 1 IN IP4 192.0.2.10
        s=-
        c=IN IP4 192.0.2.10
        t=0 0
        m=audio 11780 RTP/AVP 0
        a=rtcp-mux
        ",
        &local("203.0.113.5"),
    )
    .unwrap();
    assert!(got.contains("a=rtcp-mux\r\n"));
    assert!(n.rtcp_mux);
    assert_eq!(n.remote_rtcp, n.remote);
}

#[test]
fn sdp_offer_to_trunk_lists_first_legs_codec_first() {
    let (_, handset) = answer_of(PHONE_OFFER, &local("203.0.113.5")).unwrap();
    let trunk_local = LocalMedia::new("203.0.113.5:20002".parse().unwrap(), 43);
    let ours = offer(&trunk_local, Some(&handset));
    assert_eq!(
        ours.to_string(),
        wire(
            "
            v=0
            o=sallyport 43 1 IN IP4 203.0.113.5
            s=sallyport
            c=IN IP4 203.0.113.5
            t=0 0
            m=audio 20002 RTP/AVP 8 0 101
            a=rtpmap:8 PCMA/8000
            a=rtpmap:0 PCMU/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-16
            a=ptime:20
            a=sendrecv
            "
        )
    );
    let trunk_answer: SessionDescription = wire(
        "
        v=0
        o=carrier 99 1 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 30000 RTP/AVP 8 101
        a=rtpmap:101 telephone-event/8000
        a=ptime:20
        ",
    )
    .parse()
    .unwrap();
    let trunk = negotiated_from_answer(&ours, &trunk_answer).unwrap();
    assert_eq!(trunk.codec, handset.codec, "no transcoding needed");
    assert_eq!(trunk.remote, "198.51.100.7:30000".parse().unwrap());
    assert_eq!(
        (trunk.dtmf_pt, trunk.direction),
        (Some(101), Direction::SendRecv)
    );
    // Without a first leg we offer our own preference.
    let plain = offer(&trunk_local, None).to_string();
    assert!(
        plain.contains("m=audio 20002 RTP/AVP 0 8 101\r\n"),
        "{plain}"
    );
    // A trunk answering a codec we did not offer is refused.
    let bad: SessionDescription = wire(
        "
        v=0
        o=c 1 1 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 30000 RTP/AVP 18
        ",
    )
    .parse()
    .unwrap();
    assert_eq!(
        negotiated_from_answer(&ours, &bad),
        Err(SdpError::NoCommonCodec)
    );
}

#[test]
fn sdp_preserves_unknown_lines_and_accepts_lf() {
    let text = "v=0\no=- 1 2 IN IP4 192.0.2.10\ns=call\ni=info\nc=IN IP4 192.0.2.10/127\nb=AS:84\nt=0 0\nr=7d 1h 0 25h\nz=2882844526 -1h\nx=unknown\na=group:BUNDLE 0\nm=audio 11780/2 RTP/AVP 0 101\ni=voice\nb=TIAS:64000\na=X-custom:thing\na=rtpmap:101 telephone-event/8000\na=maxptime:40\n";
    let sdp: SessionDescription = text.parse().unwrap();
    let out = sdp.to_string();
    assert!(out.contains("b=AS:84\r\nt=0 0\r\nr=7d 1h 0 25h\r\nz=2882844526 -1h\r\nx=unknown\r\n"));
    assert!(out.contains(
        "m=audio 11780/2 RTP/AVP 0 101\r\ni=voice\r\nb=TIAS:64000\r\na=X-custom:thing\r\n"
    ));
    assert_eq!(out.parse::<SessionDescription>().unwrap(), sdp);
    let m = &sdp.media[0];
    assert_eq!(m.attribute("maxptime"), Some("40"));
    assert_eq!(m.rtpmap(101).unwrap().name, "telephone-event");
    assert_eq!(m.port_count, Some(2));
}

#[test]
fn sdp_malformed_is_400() {
    for bad in [
        "",
        "o=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=0\r\ns=-\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ngarbage\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio seven RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 not-an-ip\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\nv=0\r\n",
    ] {
        let err = sdp::parse(bad).unwrap_err();
        assert_eq!(err.sip_status(), 400, "{bad:?} → {err}");
    }
    let huge = "a=x\r\n".repeat(5000);
    assert_eq!(
        sdp::parse(&format!("v=0\r\n{huge}")),
        Err(SdpError::TooLarge)
    );
    let no_c = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let sdp: SessionDescription = no_c.parse().unwrap();
    assert_eq!(
        answer(&sdp, &local("203.0.113.5")).unwrap_err(),
        SdpError::NoConnection
    );
}

// ---------------------------------------------------------------------------------------
// Relay
// ---------------------------------------------------------------------------------------

const HANDSET: &str = "10.0.0.1:4000";
const TRUNK: &str = "10.0.0.2:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn media(remote: &str, codec: CodecName) -> NegotiatedMedia {
    let remote = addr(remote);
    NegotiatedMedia::plain(remote, codec)
}

fn leg(media: NegotiatedMedia, ssrc: u32, seq: u16, ts: u32) -> LegConfig {
    LegConfig {
        media,
        latch: LatchPolicy::Exact,
        ssrc,
        initial_seq: seq,
        initial_ts: ts,
    }
}

fn bridged_relay() -> Relay {
    let mut r = Relay::new(leg(media(HANDSET, CodecName::Pcmu), 0xAAAA, 1000, 50_000));
    r.set_leg(
        Side::B,
        leg(media(TRUNK, CodecName::Pcmu), 0xBBBB, 65534, u32::MAX - 200),
    );
    r.bridge(true);
    r
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xffu8; 160]);
    p
}

/// (seq, ts, ssrc, marker, pt) of a forwarded packet.
fn out_fields(buf: &[u8]) -> (u16, u32, u32, bool, u8) {
    let v = RtpView::parse(buf).unwrap();
    (
        v.sequence(),
        v.timestamp(),
        v.ssrc(),
        v.marker(),
        v.payload_type(),
    )
}

#[test]
fn relay_latches_only_to_the_negotiated_peer() {
    let mut r = bridged_relay();
    let t = Instant::now();
    let mut p = rtp(0, 1, 160, 7);
    let attacker = r.on_packet(Side::A, addr("10.0.0.66:4000"), &mut p, t);
    assert_eq!(attacker, RelayDecision::Drop(DropReason::WrongSource));
    let wrong_port = r.on_packet(Side::A, addr("10.0.0.1:4002"), &mut p, t);
    assert_eq!(wrong_port, RelayDecision::Drop(DropReason::WrongSource));
    let d = r.on_packet(Side::A, addr(HANDSET), &mut p, t);
    assert!(matches!(d, RelayDecision::Forward { to, len: 172, digit: None } if to == addr(TRUNK)));
    let a = r.leg(Side::A).unwrap();
    assert_eq!(a.latched(), Some(addr(HANDSET)));
    let c = a.counters();
    assert_eq!((c.received, c.forwarded, c.dropped_wrong_source), (3, 1, 2));
    // An IPv4-mapped IPv6 source (dual-stack socket) is the same peer.
    let mut p = rtp(0, 2, 320, 7);
    let d = r.on_packet(Side::A, addr("[::ffff:10.0.0.1]:4000"), &mut p, t);
    assert!(matches!(d, RelayDecision::Forward { .. }));
}

#[test]
fn relay_same_ip_policy_learns_the_port_once() {
    let mut cfg = leg(media(HANDSET, CodecName::Pcmu), 1, 1, 1);
    cfg.latch = LatchPolicy::SameIp;
    let mut r = Relay::new(cfg);
    let t = Instant::now();
    let mut junk = vec![0x80, 0, 1];
    assert_eq!(
        r.on_packet(Side::A, addr("10.0.0.1:31000"), &mut junk, t),
        RelayDecision::Drop(DropReason::Malformed)
    );
    assert_eq!(
        r.leg(Side::A).unwrap().latched(),
        None,
        "junk never latches"
    );
    let mut p = rtp(0, 1, 160, 7);
    let d = r.on_packet(Side::A, addr("10.0.0.1:31000"), &mut p, t);
    assert_eq!(d, RelayDecision::Consume { digit: None }, "no B leg yet");
    assert_eq!(
        r.leg(Side::A).unwrap().latched(),
        Some(addr("10.0.0.1:31000"))
    );
    for from in ["10.0.0.1:4000", "10.0.0.9:31000"] {
        let mut p = rtp(0, 2, 320, 7);
        assert_eq!(
            r.on_packet(Side::A, addr(from), &mut p, t),
            RelayDecision::Drop(DropReason::WrongSource)
        );
    }
    assert_eq!(
        r.leg(Side::A).unwrap().destination(),
        Some(addr("10.0.0.1:31000"))
    );
    // A re-INVITE with a new address unlatches.
    r.leg_mut(Side::A)
        .unwrap()
        .update_media(media("10.0.0.3:4000", CodecName::Pcmu));
    assert_eq!(r.leg(Side::A).unwrap().latched(), None);
}

#[test]
fn relay_rewrites_and_wraps_sequence_and_timestamp() {
    let mut r = bridged_relay();
    let t0 = Instant::now();
    // Trunk side starts at seq 65534, ts u32::MAX-200: both wrap within a few packets.
    let mut seen = Vec::new();
    for i in 0..5u16 {
        let mut p = rtp(0, 40_000 + i, 1_000 + 160 * u32::from(i), 0x1234);
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        let RelayDecision::Forward { len, .. } = r.on_packet(Side::A, addr(HANDSET), &mut p, now)
        else {
            panic!("not forwarded");
        };
        seen.push(out_fields(&p[..len]));
    }
    let seqs: Vec<u16> = seen.iter().map(|f| f.0).collect();
    assert_eq!(seqs, [65534, 65535, 0, 1, 2]);
    let ts: Vec<u32> = seen.iter().map(|f| f.1).collect();
    assert_eq!(
        ts,
        [u32::MAX - 200, u32::MAX - 40, 119, 279, 439],
        "ts wraps at 2^32"
    );
    assert!(
        seen.iter().all(|f| f.2 == 0xBBBB),
        "one SSRC per outgoing leg"
    );
    assert!(seen[0].3 && !seen[1].3, "marker only on the first packet");
    // The handset's own sequence wrapping maps through unchanged.
    let mut r = bridged_relay();
    for (i, seq) in [65535u16, 0, 1].into_iter().enumerate() {
        let mut p = rtp(0, seq, (u32::MAX - 160).wrapping_add(160 * i as u32), 9);
        r.on_packet(Side::A, addr(HANDSET), &mut p, t0);
        assert_eq!(out_fields(&p).0, 65534u16.wrapping_add(i as u16));
        assert_eq!(
            out_fields(&p).1,
            (u32::MAX - 200).wrapping_add(160 * i as u32)
        );
    }
}

#[test]
fn relay_keeps_one_stream_across_prompt_and_party() {
    let mut r = bridged_relay();
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut out = Vec::new();
    let from_handset = |r: &mut Relay, seq: u16, ts: u32, ssrc: u32, at| {
        let mut p = rtp(0, seq, ts, ssrc);
        match r.on_packet(Side::A, addr(HANDSET), &mut p, at) {
            RelayDecision::Forward { len, .. } => out_fields(&p[..len]),
            other => panic!("{other:?}"),
        }
    };
    out.push(from_handset(&mut r, 500, 8000, 0x1111, ms(0)));
    out.push(from_handset(&mut r, 501, 8160, 0x1111, ms(20)));
    // A 1-second prompt to B starts 100 ms later (the handset is muted toward B meanwhile).
    r.set_bridged(Side::B, false);
    let mut buf = [0u8; 200];
    for i in 0..50u64 {
        let (to, len) = r
            .stamp_local(Side::B, &mut buf, 160, 160, ms(120 + 20 * i))
            .unwrap();
        assert_eq!(to, addr(TRUNK));
        out.push(out_fields(&buf[..len]));
    }
    r.set_bridged(Side::B, true);
    // The handset comes back after 500 ms with a new SSRC (phone restarted its stream).
    out.push(from_handset(&mut r, 9, 777, 0x2222, ms(1_620)));
    out.push(from_handset(&mut r, 10, 937, 0x2222, ms(1_640)));
    for w in out.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1), "sequence continues +1");
        assert!(w[1].1.wrapping_sub(w[0].1) >= 160, "timestamp advances");
    }
    let ts = |i: usize| out[i].1;
    assert_eq!(ts(2).wrapping_sub(ts(1)), 800, "100 ms elapsed at 8 kHz");
    assert_eq!(
        ts(52).wrapping_sub(ts(51)),
        4160,
        "520 ms since the last frame was sent"
    );
    assert_eq!(ts(53).wrapping_sub(ts(52)), 160);
    let markers: Vec<usize> = (0..out.len()).filter(|&i| out[i].3).collect();
    assert_eq!(markers, [0, 2, 52], "marker on every switch");
    assert!(out.iter().all(|f| f.2 == 0xBBBB && f.4 == 0));
}

#[test]
fn forwarder_continues_after_the_newest_packet_despite_reordering() {
    use sallyport::media::relay::{Forwarder, Source};
    let t = Instant::now();
    let mut f = Forwarder::new(7, 100, 1000, 8000, 160);
    let first = f.rewrite(Source::Peer, 1, 65535, 0, t);
    assert_eq!((first.seq, first.ts, first.switched), (100, 1000, true));
    assert_eq!(
        f.rewrite(Source::Peer, 1, 1, 320, t).seq,
        102,
        "seq wraps through 0"
    );
    assert_eq!(
        f.rewrite(Source::Peer, 1, 0, 160, t).seq,
        101,
        "late packet keeps its place"
    );
    let next = f.rewrite_local(160, t);
    assert_eq!((next.seq, next.ts, next.switched), (103, 1320 + 160, true));
}

#[test]
fn relay_unbridged_hold_and_payload_types() {
    let mut r = bridged_relay();
    let t = Instant::now();
    r.set_bridged(Side::B, false);
    let mut p = rtp(0, 1, 160, 1);
    assert_eq!(
        r.on_packet(Side::A, addr(HANDSET), &mut p, t),
        RelayDecision::Consume { digit: None }
    );
    r.bridge(true);
    let mut cn = rtp(13, 2, 320, 1);
    assert_eq!(
        r.on_packet(Side::A, addr(HANDSET), &mut cn, t),
        RelayDecision::Drop(DropReason::PayloadType)
    );
    let mut stun = vec![0x00, 0x01, 0, 0];
    assert_eq!(
        r.on_packet(Side::A, addr(HANDSET), &mut stun, t),
        RelayDecision::Drop(DropReason::Malformed)
    );
    // The trunk puts us on hold with c=0.0.0.0: nothing is sent to it.
    let mut held = media("0.0.0.0:5000", CodecName::Pcmu);
    held.direction = Direction::RecvOnly;
    r.leg_mut(Side::B).unwrap().update_media(held);
    let mut p = rtp(0, 3, 480, 1);
    assert_eq!(
        r.on_packet(Side::A, addr(HANDSET), &mut p, t),
        RelayDecision::Consume { digit: None }
    );
    assert_eq!(r.stamp_local(Side::B, &mut [0u8; 200], 160, 160, t), None);
    let c = *r.leg(Side::A).unwrap().counters();
    assert_eq!(
        (
            c.received,
            c.consumed,
            c.dropped_payload_type,
            c.dropped_malformed
        ),
        (4, 2, 1, 1)
    );
    assert_eq!(
        Relay::new(leg(media(HANDSET, CodecName::Pcmu), 1, 1, 1)).on_packet(
            Side::B,
            addr(TRUNK),
            &mut p,
            t
        ),
        RelayDecision::Drop(DropReason::NoLeg)
    );
}

#[test]
fn relay_converts_between_laws_and_maps_event_pt() {
    let mut r = Relay::new(leg(media(HANDSET, CodecName::Pcmu), 1, 1, 1));
    let mut trunk = media(TRUNK, CodecName::Pcma);
    trunk.dtmf_pt = Some(96);
    r.set_leg(Side::B, leg(trunk, 2, 2, 2));
    r.bridge(true);
    let t = Instant::now();
    let mut p = rtp(0, 1, 160, 1);
    r.on_packet(Side::A, addr(HANDSET), &mut p, t);
    let v = RtpView::parse(&p).unwrap();
    assert_eq!(v.payload_type(), 8);
    assert!(
        v.payload().iter().all(|&b| b == 0xd5),
        "μ-law silence → A-law silence"
    );
    assert_eq!(r.leg(Side::B).unwrap().counters().converted, 1);
    let mut ev = rtp(101, 2, 320, 1);
    ev.truncate(12);
    ev.extend_from_slice(&[5, 10, 0, 160]);
    let d = r.on_packet(Side::A, addr(HANDSET), &mut ev, t);
    let RelayDecision::Forward {
        digit: Some(press), ..
    } = d
    else {
        panic!("{d:?}");
    };
    assert_eq!(press.digit, '5');
    assert_eq!(RtpView::parse(&ev).unwrap().payload_type(), 96);
    assert_eq!(RtpView::parse(&ev).unwrap().payload(), &[5, 10, 0, 160]);
    // Keypresses can be kept from the far end and still detected.
    r.set_forward_events(false);
    let mut ev = rtp(101, 3, 1600, 1);
    ev.truncate(12);
    ev.extend_from_slice(&[9, 10, 0, 160]);
    let d = r.on_packet(Side::A, addr(HANDSET), &mut ev, t);
    assert!(matches!(d, RelayDecision::Consume { digit: Some(p) } if p.digit == '9'));
}

#[test]
fn relay_terminates_rtcp() {
    let mut r = bridged_relay();
    let t = Instant::now();
    let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
    rr.extend_from_slice(&[0; 24]);
    assert_eq!(
        r.on_rtcp(Side::A, addr("10.0.0.1:4001"), &rr, t),
        RelayDecision::Consume { digit: None }
    );
    assert_eq!(
        r.on_rtcp(Side::A, addr("10.9.9.9:4001"), &rr, t),
        RelayDecision::Drop(DropReason::WrongSource)
    );
    assert_eq!(
        r.on_rtcp(Side::A, addr("10.0.0.1:4001"), &rr[..20], t),
        RelayDecision::Drop(DropReason::Malformed)
    );
    // rtcp-mux: RTCP on the RTP port is recognized and terminated, not forwarded as RTP.
    let mut muxed = rr.clone();
    assert_eq!(
        r.on_packet(Side::A, addr(HANDSET), &mut muxed, t),
        RelayDecision::Consume { digit: None }
    );
    let c = r.leg(Side::A).unwrap().counters();
    assert_eq!((c.rtcp_received, c.forwarded), (2, 0));
    assert_eq!(RtcpView::parse(&rr).unwrap().sender_ssrc(), 1);
    // RTCP is no sign of life for the media timeout; RTP, forwarded or kept, is.
    assert_eq!(r.leg(Side::A).unwrap().last_rtp(), None);
    let later = t + Duration::from_secs(1);
    let mut p = rtp(0, 1, 160, 7);
    assert!(matches!(
        r.on_packet(Side::A, addr(HANDSET), &mut p, later),
        RelayDecision::Forward { .. }
    ));
    assert_eq!(r.leg(Side::A).unwrap().last_rtp(), Some(later));
    r.bridge(false);
    let muted = later + Duration::from_secs(1);
    let mut p = rtp(0, 2, 320, 7);
    assert_eq!(
        r.on_packet(Side::A, addr(HANDSET), &mut p, muted),
        RelayDecision::Consume { digit: None }
    );
    assert_eq!(r.leg(Side::A).unwrap().last_rtp(), Some(muted));
    let mut p = rtp(0, 3, 480, 7);
    r.on_packet(
        Side::A,
        addr("10.9.9.9:4000"),
        &mut p,
        muted + Duration::from_secs(1),
    );
    assert_eq!(
        r.leg(Side::A).unwrap().last_rtp(),
        Some(muted),
        "a stranger"
    );
}

// ---------------------------------------------------------------------------------------
// DTMF
// ---------------------------------------------------------------------------------------

/// UDP payloads (with source address) from a classic libpcap Ethernet/IPv4 capture.
fn pcap_udp_payloads(bytes: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    assert_eq!(magic, 0xa1b2_c3d4, "little-endian microsecond pcap");
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &bytes[at + 16..at + 16 + incl];
        at += 16 + incl;
        if frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
            continue; // not IPv4/UDP
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let udp = &ip[ihl..];
        let src_ip = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let src_port = u16::from_be_bytes([udp[0], udp[1]]);
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        out.push((
            SocketAddr::new(src_ip.into(), src_port),
            udp[8..udp_len].to_vec(),
        ));
    }
    out
}

const SIPP_PCAPS: &str = "/usr/share/sip-tester";

#[test]
fn dtmf_from_sipp_rfc2833_captures() {
    let keys = [
        ("0", '0'),
        ("1", '1'),
        ("2", '2'),
        ("3", '3'),
        ("4", '4'),
        ("5", '5'),
        ("6", '6'),
        ("7", '7'),
        ("8", '8'),
        ("9", '9'),
        ("pound", '#'),
        ("star", '*'),
    ];
    let dir = Path::new(SIPP_PCAPS);
    if !dir.join("dtmf_2833_1.pcap").exists() {
        sallyport::db::testing::skip_or_fail(&format!(
            "{SIPP_PCAPS}/dtmf_2833_*.pcap absent (apt-get install sip-tester)"
        ));
        return;
    }
    for (name, key) in keys {
        let bytes = std::fs::read(dir.join(format!("dtmf_2833_{name}.pcap"))).unwrap();
        let packets = pcap_udp_payloads(&bytes);
        assert_eq!(packets.len(), 10, "{name}: 7 updates + 3 end packets");
        // Straight through the detector…
        let mut detector = DtmfDetector::new();
        let digits: String = packets
            .iter()
            .filter_map(|(_, p)| {
                let v = RtpView::parse(p).unwrap();
                assert_eq!(v.payload_type(), 101);
                detector.on_payload(v.timestamp(), v.payload())
            })
            .map(|d| d.digit)
            .collect();
        assert_eq!(digits, key.to_string(), "{name}");
        // …and through the relay, latched to the capture's sender, before bridging.
        let from = packets[0].0;
        let mut r = Relay::new(leg(media(&from.to_string(), CodecName::Pcmu), 1, 1, 1));
        let t = Instant::now();
        let relayed: String = packets
            .into_iter()
            .filter_map(|(src, mut p)| match r.on_packet(Side::A, src, &mut p, t) {
                RelayDecision::Consume { digit } => digit.map(|d| d.digit),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(relayed, key.to_string());
        assert_eq!(r.leg(Side::A).unwrap().counters().digits, 1);
    }
}

#[test]
fn dtmf_sip_info_reaches_the_collector() {
    let t = Instant::now();
    let mut c = DigitCollector::new(CollectorConfig::default(), t);
    let mut result = None;
    for body in [
        "Signal=1\r\nDuration=160\r\n",
        "Signal=2\r\n",
        "Signal=3",
        "Signal=#",
    ] {
        let d = parse_sip_info("application/dtmf-relay", body).unwrap();
        result = c.on_digit(d.digit, t);
    }
    let Some(Collected::Complete(pin)) = result else {
        panic!("{result:?}");
    };
    assert_eq!(pin.as_str(), "123");
    assert!(!format!("{pin:?}").contains("123"), "PIN redacted in Debug");
}

fn collector(max: usize) -> (DigitCollector, Instant) {
    let t = Instant::now();
    let config = CollectorConfig {
        max_digits: max,
        terminator: Some('#'),
        first_digit_timeout: Duration::from_secs(10),
        inter_digit_timeout: Duration::from_secs(5),
    };
    (DigitCollector::new(config, t), t)
}

#[test]
fn collector_terminator_max_length_and_clear() {
    let (mut c, t) = collector(4);
    assert_eq!(c.on_digit('1', t), None);
    assert_eq!(c.on_digit('9', t), None);
    assert_eq!(c.on_digit('*', t), None, "star clears");
    assert_eq!(c.typed(), 0);
    for d in ['5', '6', 'x', '7'] {
        assert_eq!(c.on_digit(d, t), None);
    }
    let Some(Collected::Complete(pin)) = c.on_digit('8', t) else {
        panic!("max length completes");
    };
    assert_eq!(pin.into_string(), "5678");
    assert!(c.is_finished());
    assert_eq!(c.on_digit('1', t), None, "ignored once finished");
    assert_eq!(c.poll_timeout(), None);
    c.restart(t);
    let Some(Collected::Complete(empty)) = c.on_digit('#', t) else {
        panic!();
    };
    assert!(empty.is_empty());
}

#[test]
fn collector_timeouts_in_virtual_time() {
    let (mut c, t) = collector(8);
    assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(10)));
    assert_eq!(c.handle_timeout(t + Duration::from_secs(9)), None);
    assert_eq!(
        c.handle_timeout(t + Duration::from_secs(10)),
        Some(Collected::TimedOut)
    );
    let (mut c, t) = collector(8);
    let t1 = t + Duration::from_secs(3);
    c.on_digit('4', t1);
    c.on_digit('2', t1);
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(5)));
    assert_eq!(c.handle_timeout(t1 + Duration::from_secs(4)), None);
    let Some(Collected::InterDigitTimeout(d)) = c.handle_timeout(t1 + Duration::from_secs(5))
    else {
        panic!();
    };
    assert_eq!(d.as_str(), "42");
    assert!(c.is_finished());
}

// ---------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------

fn prompts_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/prompts"))
}

#[test]
fn every_shipped_prompt_loads_with_a_sane_duration() {
    let set = PromptSet::load_dir(prompts_dir()).unwrap();
    let mut total = Duration::ZERO;
    for &id in PromptId::ALL {
        let p = set.get(id).unwrap();
        let d = p.duration();
        assert!(
            (Duration::from_millis(500)..=Duration::from_secs(10)).contains(&d),
            "{id:?}: {d:?}"
        );
        for codec in [CodecName::Pcmu, CodecName::Pcma] {
            let mut player = p.player(codec, 20);
            let mut buf = [0u8; 160];
            let mut frames = 0;
            let mut samples = 0u64;
            while let Some(f) = player.next_frame(&mut buf) {
                assert_eq!((f.len, f.samples), (160, 160));
                frames += 1;
                samples += u64::from(f.samples);
            }
            assert_eq!(frames, p.samples().div_ceil(160), "{id:?}");
            assert_eq!(frames, player.frame_count());
            let played = Duration::from_micros(samples * 125);
            assert!(played >= d && played - d < Duration::from_millis(20));
        }
        total += d;
    }
    assert!(total < Duration::from_secs(90));
}

#[test]
fn shipped_prompts_are_not_silent() {
    let bytes = std::fs::read(prompts_dir().join("enter_pin.wav")).unwrap();
    let samples = parse_wav(&bytes).unwrap();
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak > 10_000, "normalized to about -3 dBFS, peak {peak}");
}

#[test]
fn paced_prompt_through_the_relay() {
    let set = PromptSet::load_dir(prompts_dir()).unwrap();
    let prompt = set.get(PromptId::Goodbye).unwrap();
    let mut r = Relay::new(leg(media(HANDSET, CodecName::Pcma), 0xCAFE, 10, 1000));
    let mut player = prompt.player(CodecName::Pcma, 20);
    let t0 = Instant::now();
    player.start(t0);
    let mut buf = [0u8; 172];
    let mut sent = Vec::new();
    // Virtual time: jump to each wake-up the player asks for.
    while let Some(at) = player.poll_timeout() {
        let f = player.poll_frame(at, &mut buf[12..]).unwrap();
        let (to, len) = r
            .stamp_local(Side::A, &mut buf, f.len, f.samples, at)
            .unwrap();
        assert_eq!((to, len), (addr(HANDSET), 172));
        sent.push((out_fields(&buf[..len]), at));
    }
    assert_eq!(sent.len(), prompt.samples().div_ceil(160));
    assert_eq!(sent[0].0, (10, 1000, 0xCAFE, true, 8));
    let last = sent.last().unwrap();
    let n = sent.len() - 1;
    assert_eq!(last.0 .0, 10 + n as u16);
    assert_eq!(last.0 .1, 1000 + 160 * n as u32);
    assert_eq!(last.1 - t0, Duration::from_millis(20 * n as u64));
}

// ---------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------

#[test]
fn ports_allocate_even_release_fifo_and_exhaust() {
    let mut ports = PortAllocator::new(20000, 20007).unwrap();
    assert_eq!(ports.capacity(), 4);
    let got: Vec<_> = (0..4).map(|_| ports.allocate().unwrap()).collect();
    let rtp: Vec<u16> = got.iter().map(|p| p.rtp()).collect();
    assert_eq!(rtp, [20000, 20002, 20004, 20006]);
    assert_eq!(got[3].rtcp(), 20007);
    let err = ports.allocate().unwrap_err();
    assert_eq!((err, err.sip_status()), (PortError::Exhausted, 503));
    ports.release(got[1]).unwrap();
    ports.release(got[0]).unwrap();
    assert_eq!(ports.release(got[0]), Err(PortError::NotAllocated(20000)));
    assert_eq!(ports.available(), 2);
    assert_eq!(
        ports.allocate().unwrap().rtp(),
        20002,
        "oldest release first"
    );
    assert_eq!(ports.allocate().unwrap().rtp(), 20000);
}

#[test]
fn ports_reject_foreign_pairs() {
    let mut ports = PortAllocator::new(20000, 20999).unwrap();
    let mut other = PortAllocator::new(30000, 30999).unwrap();
    let foreign = other.allocate().unwrap();
    assert_eq!(ports.release(foreign), Err(PortError::NotAllocated(30000)));
    let below = PortAllocator::new(10000, 10999)
        .unwrap()
        .allocate()
        .unwrap();
    assert!(ports.release(below).is_err());
    let mut many = Vec::new();
    while let Ok(p) = ports.allocate() {
        assert_eq!(p.rtp() % 2, 0);
        assert!(p.rtcp() <= 20999);
        many.push(p);
    }
    assert_eq!(many.len(), 500);
    for p in many {
        ports.release(p).unwrap();
    }
    assert_eq!(ports.available(), 500);
}

// ---------------------------------------------------------------------------------------
// Never panic on peer input
// ---------------------------------------------------------------------------------------

fn sdp_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("o=- 1 1 IN IP4 192.0.2.1".to_owned()),
        Just("c=IN IP4 192.0.2.1".to_owned()),
        Just("c=IN IP6 ::1".to_owned()),
        Just("t=0 0".to_owned()),
        Just("a=sendonly".to_owned()),
        Just("a=rtcp-mux".to_owned()),
        Just("a=rtpmap:101 telephone-event/8000".to_owned()),
        Just("a=rtpmap:96 PCMU/8000".to_owned()),
        Just("a=fmtp:101 0-15".to_owned()),
        "m=audio [0-9]{1,6} RTP/AVP( [0-9]{1,3}){0,4}",
        "a=[a-z:0-9 /]{0,20}",
        "[a-z]=[ -~]{0,30}",
        "[ -~]{0,20}",
    ]
}

proptest! {
    #[test]
    fn sdp_parser_and_answer_never_panic(lines in prop::collection::vec(sdp_line(), 0..20)) {
        let text = format!("v=0\r\n{}", lines.join("\r\n"));
        if let Ok(sdp) = sdp::parse(&text) {
            let again = sdp::parse(&sdp.to_string());
            prop_assert_eq!(again.as_ref(), Ok(&sdp));
            if let Ok((ans, n)) = answer(&sdp, &local("203.0.113.5")) {
                prop_assert!(sdp::parse(&ans.to_string()).is_ok());
                let _ = offer(&local("203.0.113.5"), Some(&n));
            }
        }
    }

    #[test]
    fn sdp_parser_survives_arbitrary_text(text in "[ -~\r\n]{0,400}") {
        let _ = sdp::parse(&text);
    }

    #[test]
    fn relay_survives_arbitrary_datagrams(
        packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..30)
    ) {
        let mut r = bridged_relay();
        let t = Instant::now();
        for mut p in packets {
            if let Some(b) = p.first_mut() { *b = (*b & 0x3f) | 0x80; }
            let _ = r.on_packet(Side::A, addr(HANDSET), &mut p, t);
            let _ = r.on_rtcp(Side::B, addr(TRUNK), &p, t);
            let _ = RtcpView::parse(&p);
            let _ = parse_wav(&p);
        }
    }
}
