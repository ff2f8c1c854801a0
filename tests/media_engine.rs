//! The media engine on real loopback UDP: two peer sockets play the handset (A) and the
//! trunk (B); the engine anchors both legs. Each test starts its own engine on its own
//! port range so they run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use sallyport::media::engine::{
    CallMedia, EngineConfig, MediaEngine, MediaError, MediaEvent, MediaStats,
};
use sallyport::media::prompts::{PromptId, PromptSet};
use sallyport::media::relay::{LatchPolicy, Side};
use sallyport::media::rtp::RtpView;
use sallyport::media::sdp::{CodecName, NegotiatedMedia};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

fn prompts() -> Arc<PromptSet> {
    static SET: OnceLock<Arc<PromptSet>> = OnceLock::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts");
    Arc::clone(SET.get_or_init(|| Arc::new(PromptSet::load_dir(&dir).unwrap())))
}

fn engine(port_min: u16, port_max: u16) -> MediaEngine {
    let cfg = EngineConfig {
        port_min,
        port_max,
        bind_ip: "127.0.0.1".parse().unwrap(),
        advertised_ip: "127.0.0.1".parse().unwrap(),
        workers: 2,
        max_queue: sallyport::media::engine::DEFAULT_MAX_QUEUE,
    };
    MediaEngine::start(cfg, prompts()).unwrap()
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    s
}

fn media(peer: &UdpSocket, codec: CodecName) -> NegotiatedMedia {
    let remote = peer.local_addr().unwrap();
    NegotiatedMedia::plain(remote, codec)
}

/// A call with both legs anchored: (call, events, handset peer, trunk peer, A's and B's
/// gateway addresses).
struct Call {
    media: CallMedia,
    events: UnboundedReceiver<MediaEvent>,
    a: UdpSocket,
    b: UdpSocket,
    gw_a: SocketAddr,
    gw_b: SocketAddr,
}

fn call(engine: &MediaEngine, a_codec: CodecName, b_codec: CodecName) -> Call {
    let (mut media_, events) = engine.open_call();
    let (a, b) = (peer(), peer());
    let gw_a = media_.allocate(Side::A).unwrap();
    let gw_b = media_.allocate(Side::B).unwrap();
    assert_eq!(gw_a.port() % 2, 0, "RTP on an even port");
    media_.set_leg(Side::A, media(&a, a_codec), LatchPolicy::Exact);
    media_.set_leg(Side::B, media(&b, b_codec), LatchPolicy::Exact);
    Call {
        media: media_,
        events,
        a,
        b,
        gw_a,
        gw_b,
    }
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 172];
    p[0] = 0x80;
    p[1] = pt;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// An RFC 4733 telephone-event packet (event, end flag, duration).
fn event(seq: u16, ts: u32, key: u8, end: bool, duration: u16, marker: bool) -> Vec<u8> {
    let mut p = vec![0x80, 101 | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x4242u32.to_be_bytes());
    p.extend_from_slice(&[key, if end { 0x8a } else { 0x0a }]);
    p.extend_from_slice(&duration.to_be_bytes());
    p
}

/// Every datagram arriving at `s` within `window`.
fn drain(s: &UdpSocket, window: Duration) -> Vec<(Instant, Vec<u8>)> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok(n) = s.recv(&mut buf) {
            out.push((Instant::now(), buf[..n].to_vec()));
        }
    }
    out
}

fn next_event(rx: &mut UnboundedReceiver<MediaEvent>, within: Duration) -> Option<MediaEvent> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(e) = rx.try_recv() {
            return Some(e);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Lets queued commands reach the worker before packets that depend on them.
fn settle() {
    std::thread::sleep(Duration::from_millis(30));
}

fn wait_stats(engine: &MediaEngine, ok: impl Fn(&MediaStats) -> bool) -> MediaStats {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let s = engine.stats();
        if ok(&s) || Instant::now() > end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `n` packets from `from` to `to` 2 ms apart, returns what `at` received.
fn stream(from: &UdpSocket, to: SocketAddr, at: &UdpSocket, n: u16, ssrc: u32) -> Vec<RtpHeader> {
    for i in 0..n {
        from.send_to(&rtp(0, 1000 + i, 160 * u32::from(i), ssrc, 0x55), to)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    drain(at, Duration::from_millis(120))
        .iter()
        .map(|(_, p)| RtpHeader::of(p))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RtpHeader {
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
}

impl RtpHeader {
    fn of(p: &[u8]) -> Self {
        let v = RtpView::parse(p).expect("valid RTP from the engine");
        RtpHeader {
            pt: v.payload_type(),
            seq: v.sequence(),
            ts: v.timestamp(),
            ssrc: v.ssrc(),
            marker: v.marker(),
        }
    }
}

fn continuous(h: &[RtpHeader]) -> bool {
    h.windows(2)
        .all(|w| w[1].seq == w[0].seq.wrapping_add(1) && w[1].ssrc == w[0].ssrc)
}

#[test]
fn relays_only_after_bridge_with_the_far_legs_stream_identity() {
    let engine = engine(47000, 47099);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    settle();

    // Before the bridge: valid media is consumed, nothing reaches the other party.
    assert!(stream(&c.a, c.gw_a, &c.b, 5, 0x1111).is_empty());
    assert!(stream(&c.b, c.gw_b, &c.a, 5, 0x2222).is_empty());
    let s = wait_stats(&engine, |s| s.consumed >= 10);
    assert_eq!((s.consumed, s.relayed), (10, 0), "{s:?}");

    c.media.bridge(true);
    settle();
    let to_b = stream(&c.a, c.gw_a, &c.b, 10, 0x1111);
    assert_eq!(to_b.len(), 10, "A→B relayed: {to_b:?}");
    assert!(continuous(&to_b), "{to_b:?}");
    assert_ne!(to_b[0].ssrc, 0x1111, "B hears the gateway's SSRC for B");
    assert!(to_b.iter().all(|h| h.pt == 0));
    let to_a = stream(&c.b, c.gw_b, &c.a, 10, 0x2222);
    assert_eq!(to_a.len(), 10, "B→A relayed: {to_a:?}");
    assert!(continuous(&to_a));
    assert_ne!(to_a[0].ssrc, 0x2222);
    assert_ne!(to_a[0].ssrc, to_b[0].ssrc, "one SSRC per leg");

    // Unbridged again: nothing passes.
    c.media.bridge(false);
    settle();
    assert!(stream(&c.a, c.gw_a, &c.b, 3, 0x1111).is_empty());
    let s = wait_stats(&engine, |s| s.relayed >= 20);
    assert_eq!(s.relayed, 20, "{s:?}");
    assert_eq!(
        (s.calls, s.legs, s.port_pairs_in_use, s.workers),
        (1, 2, 2, 2)
    );
}

#[test]
fn converts_between_laws_when_legs_differ() {
    let engine = engine(47100, 47199);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcma);
    c.media.bridge(true);
    settle();
    let to_b = stream(&c.a, c.gw_a, &c.b, 3, 7);
    assert_eq!(to_b.len(), 3);
    assert!(to_b.iter().all(|h| h.pt == 8), "PCMA on B: {to_b:?}");
}

#[test]
fn a_third_party_is_dropped_and_counted_never_forwarded() {
    let engine = engine(47200, 47299);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    c.media.bridge(true);
    settle();
    let intruder = peer();
    assert!(stream(&intruder, c.gw_a, &c.b, 5, 0x6666).is_empty());
    assert!(stream(&intruder, c.gw_b, &c.a, 5, 0x6666).is_empty());
    let s = wait_stats(&engine, |s| s.dropped_wrong_source >= 10);
    assert_eq!((s.dropped_wrong_source, s.relayed), (10, 0), "{s:?}");
    // The real peer still gets through afterwards.
    assert_eq!(stream(&c.a, c.gw_a, &c.b, 2, 1).len(), 2);
}

/// Waits (up to 2 s) for `side`'s last-RTP stamp to differ from `before`.
fn wait_last_rtp(c: &Call, side: Side, before: Option<Instant>) -> Option<Instant> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let now = c.media.last_rtp(side);
        if now != before || Instant::now() > end {
            return now;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the media timeout reads: each leg's last valid RTP from its peer, bridged or
/// not, forwarded or kept, or dropped for a payload type we did not negotiate (comfort
/// noise from a phone with silence suppression); never RTCP or a stranger's packets.
#[test]
fn last_rtp_is_stamped_per_leg_by_valid_rtp_only() {
    let engine = engine(48100, 48199);
    let c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    settle();
    assert_eq!(
        (c.media.last_rtp(Side::A), c.media.last_rtp(Side::B)),
        (None, None)
    );
    assert_eq!(c.media.rtp_silence(Side::A), None);

    // RTCP (a receiver report on the RTCP port) and a stranger's RTP: no stamp.
    let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
    rr.extend_from_slice(&[0; 24]);
    let gw_a_rtcp = SocketAddr::new(c.gw_a.ip(), c.gw_a.port() + 1);
    c.a.send_to(&rr, gw_a_rtcp).unwrap();
    c.a.send_to(&rr, c.gw_a).unwrap(); // rtcp-mux style, on the RTP port
    let intruder = peer();
    intruder.send_to(&rtp(0, 1, 160, 9, 0x55), c.gw_a).unwrap();
    intruder.send_to(&rtp(13, 1, 160, 9, 0x55), c.gw_a).unwrap();
    let s = wait_stats(&engine, |s| {
        s.rtcp_received >= 2 && s.dropped_wrong_source >= 2
    });
    assert_eq!((s.rtcp_received, s.dropped_wrong_source), (2, 2), "{s:?}");
    assert_eq!(
        c.media.last_rtp(Side::A),
        None,
        "RTCP and strangers are not media"
    );

    // Unbridged (kept, not forwarded) RTP from the peer stamps its leg only.
    let before = Instant::now();
    c.a.send_to(&rtp(0, 2, 320, 9, 0x55), c.gw_a).unwrap();
    let a1 = wait_last_rtp(&c, Side::A, None).expect("A stamped");
    assert!(
        a1 + Duration::from_millis(1) >= before && a1 <= Instant::now(),
        "{a1:?}"
    );
    assert_eq!(c.media.last_rtp(Side::B), None);
    assert!(c
        .media
        .rtp_silence(Side::A)
        .is_some_and(|d| d < Duration::from_secs(1)));

    // A key press (telephone-event) is media too; later packets move the stamp on.
    std::thread::sleep(Duration::from_millis(20));
    c.b.send_to(&event(1, 800, 1, false, 160, true), c.gw_b)
        .unwrap();
    let b1 = wait_last_rtp(&c, Side::B, None).expect("B stamped");
    assert!(b1 > a1, "{a1:?} {b1:?}");
    std::thread::sleep(Duration::from_millis(20));
    c.a.send_to(&rtp(0, 3, 480, 9, 0x55), c.gw_a).unwrap();
    let a2 = wait_last_rtp(&c, Side::A, Some(a1)).expect("A stamped again");
    assert!(a2 >= a1 + Duration::from_millis(15), "{a1:?} {a2:?}");
    assert_eq!(c.media.last_rtp(Side::B), Some(b1));

    // Comfort noise (PT 13, not negotiated) from the peer: dropped, but the peer is alive.
    std::thread::sleep(Duration::from_millis(20));
    c.b.send_to(&rtp(13, 2, 320, 9, 0x56), c.gw_b).unwrap();
    let b2 = wait_last_rtp(&c, Side::B, Some(b1)).expect("B stamped by comfort noise");
    assert!(b2 >= b1 + Duration::from_millis(15), "{b1:?} {b2:?}");
    let s = wait_stats(&engine, |s| s.dropped_payload_type >= 1);
    assert_eq!(s.dropped_payload_type, 1, "{s:?}");
}

/// Plays `id` to `side` and checks frames (codec, count, pacing, bytes) and PromptsDone.
fn check_prompt(c: &mut Call, side: Side, id: PromptId, codec: CodecName) {
    let prompt = prompts().get(id).unwrap().clone();
    let frames = prompt.samples().div_ceil(160);
    let started = Instant::now();
    c.media.play(side, id);
    let at = if side == Side::A { &c.a } else { &c.b };
    let got = drain(at, prompt.duration() + Duration::from_millis(150));
    assert_eq!(got.len(), frames, "one frame per 20 ms of the prompt");
    let headers: Vec<RtpHeader> = got.iter().map(|(_, p)| RtpHeader::of(p)).collect();
    assert!(headers.iter().all(|h| h.pt == codec.static_pt()));
    assert!(continuous(&headers));
    assert!(headers
        .windows(2)
        .all(|w| w[1].ts == w[0].ts.wrapping_add(160)));
    assert_eq!(
        &got[0].1[12..],
        &prompt.encoded(codec)[..160],
        "the prompt's audio"
    );
    // Paced, not bursted: the last frame leaves about (frames - 1) × 20 ms after the first.
    let span = got.last().unwrap().0 - got[0].0;
    let expect = Duration::from_millis(20) * (frames as u32 - 1);
    assert!(
        span > expect.mul_f32(0.9) && span < expect.mul_f32(1.1) + Duration::from_millis(20),
        "{span:?} for {frames} frames"
    );
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(500)),
        Some(MediaEvent::PromptsDone { side })
    );
    assert!(started.elapsed() >= prompt.duration());
}

#[test]
fn enter_pin_plays_paced_pcmu_to_a_then_prompts_done() {
    let engine = engine(47300, 47399);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcma);
    settle();
    check_prompt(&mut c, Side::A, PromptId::EnterPin, CodecName::Pcmu);
    let s = engine.stats();
    assert_eq!(
        s.prompt_frames,
        prompts()
            .get(PromptId::EnterPin)
            .unwrap()
            .samples()
            .div_ceil(160) as u64
    );
}

#[test]
fn a_pcma_leg_gets_pcma_frames_and_a_leg_less_side_is_done_at_once() {
    let engine = engine(47400, 47499);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcma);
    settle();
    check_prompt(&mut c, Side::B, PromptId::Goodbye, CodecName::Pcma);

    let (mut bare, mut events) = engine.open_call();
    bare.play(Side::B, PromptId::Goodbye);
    assert_eq!(
        next_event(&mut events, Duration::from_millis(200)),
        Some(MediaEvent::PromptsDone { side: Side::B })
    );
}

#[test]
fn queued_prompts_yield_one_done_each_and_stop_cancels() {
    let engine = engine(47500, 47599);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    settle();
    c.media.play(Side::A, PromptId::Goodbye);
    c.media.play(Side::A, PromptId::Goodbye);
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(1000)),
        None,
        "still playing"
    );
    let done = Some(MediaEvent::PromptsDone { side: Side::A });
    assert_eq!(next_event(&mut c.events, Duration::from_millis(1000)), done);
    assert_eq!(next_event(&mut c.events, Duration::from_millis(50)), done);

    c.media.play(Side::A, PromptId::EnterPin);
    std::thread::sleep(Duration::from_millis(100));
    c.media.stop(Side::A);
    settle();
    drain(&c.a, Duration::from_millis(20));
    assert!(drain(&c.a, Duration::from_millis(60)).is_empty(), "stopped");
    assert_eq!(next_event(&mut c.events, Duration::from_millis(100)), None);
}

#[test]
fn a_prompt_mutes_the_other_party_until_it_ends() {
    let engine = engine(47600, 47699);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    c.media.bridge(true);
    settle();
    let goodbye = prompts().get(PromptId::Goodbye).unwrap().clone();
    c.media.play(Side::A, PromptId::Goodbye);
    settle();
    // B talks during the prompt: A hears only the prompt (B's 0x55 payload never arrives).
    let heard = stream(&c.b, c.gw_b, &c.a, 5, 0x2222);
    assert!(!heard.is_empty());
    let rest = drain(&c.a, goodbye.duration());
    assert!(rest.iter().all(|(_, p)| p[12..] != [0x55; 160]));
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(500)),
        Some(MediaEvent::PromptsDone { side: Side::A })
    );
    // After it, B is heard again, continuing A's stream (same SSRC, marker on the switch).
    let after = stream(&c.b, c.gw_b, &c.a, 3, 0x2222);
    assert_eq!(after.len(), 3);
    assert_eq!(after[0].ssrc, heard[0].ssrc);
    assert!(after[0].marker);
}

#[test]
fn telephone_events_become_digits_on_both_legs_and_are_not_forwarded() {
    let engine = engine(47700, 47799);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    settle();
    // PIN digit on A before the bridge: start (marker), two repeats, three end packets.
    let press = |s: &UdpSocket, to: SocketAddr, key: u8, ts: u32, seq: u16| {
        for (i, (end, dur)) in [
            (false, 160),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            s.send_to(&event(seq + i as u16, ts, key, end, dur, i == 0), to)
                .unwrap();
        }
    };
    press(&c.a, c.gw_a, 5, 8000, 10);
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(300)),
        Some(MediaEvent::Digit {
            side: Side::A,
            digit: '5'
        })
    );
    // The called party accepts with 1 on B, also before the bridge.
    press(&c.b, c.gw_b, 1, 16000, 50);
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(300)),
        Some(MediaEvent::Digit {
            side: Side::B,
            digit: '1'
        })
    );
    // Bridged: still detected, never passed to the far party.
    c.media.bridge(true);
    settle();
    press(&c.a, c.gw_a, 11, 24000, 100);
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(300)),
        Some(MediaEvent::Digit {
            side: Side::A,
            digit: '#'
        })
    );
    assert!(drain(&c.b, Duration::from_millis(50)).is_empty());
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(20)),
        None,
        "one press, one digit"
    );
    assert_eq!(engine.stats().digits, 3);
}

#[test]
fn a_sipp_capture_of_rfc_2833_digits_is_detected() {
    // sipp's captures hold one key press each; the payload type is 101 as negotiated.
    let path = Path::new("/usr/share/sip-tester/dtmf_2833_7.pcap");
    let Ok(bytes) = std::fs::read(path) else {
        eprintln!(
            "skipped: {} absent (apt-get install sip-tester)",
            path.display()
        );
        return;
    };
    let engine = engine(47800, 47899);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    settle();
    for payload in pcap_udp_payloads(&bytes) {
        c.a.send_to(&payload, c.gw_a).unwrap();
    }
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(300)),
        Some(MediaEvent::Digit {
            side: Side::A,
            digit: '7'
        })
    );
}

/// UDP payloads of a classic little-endian libpcap Ethernet/IPv4 capture.
fn pcap_udp_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &bytes[at + 16..(at + 16 + incl).min(bytes.len())];
        at += 16 + incl;
        if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        if let Some(udp) = frame.get(14 + ihl + 8..) {
            out.push(udp.to_vec());
        }
    }
    out
}

#[test]
fn dropping_a_call_releases_its_ports_and_exhaustion_is_an_error() {
    let engine = engine(47900, 47903); // two pairs: 47900/1 and 47902/3
    let first = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    let (mut second, _events) = engine.open_call();
    let err = second.allocate(Side::A).unwrap_err();
    assert!(matches!(err, MediaError::PortsExhausted), "{err:?}");
    assert_eq!(err.sip_status(), 503);
    assert_eq!(engine.stats().port_pairs_in_use, 2);
    assert_eq!(engine.stats().port_exhausted, 1, "counted for /metrics");

    drop(first);
    // At once: allocate waits for the worker to close the sockets it was told to close.
    let a = second.allocate(Side::A).unwrap();
    let b = second.allocate(Side::B).unwrap();
    assert_ne!(a, b);
    assert!(matches!(
        engine.open_call().0.allocate(Side::A),
        Err(MediaError::PortsExhausted)
    ));
    drop(second);
    let s = wait_stats(&engine, |s| s.calls == 0 && s.port_pairs_in_use == 0);
    assert_eq!((s.calls, s.legs, s.port_pairs_in_use), (0, 0, 0), "{s:?}");
    assert_eq!(s.port_exhausted, 2);
}

#[test]
fn a_port_held_by_another_process_is_a_bind_error() {
    let _squatter = UdpSocket::bind("127.0.0.1:47950").unwrap();
    let engine = engine(47950, 47951);
    let (mut c, _events) = engine.open_call();
    let err = c.allocate(Side::A).unwrap_err();
    assert!(
        matches!(err, MediaError::Bind { port: 47950, .. }),
        "{err:?}"
    );
    assert_eq!(err.sip_status(), 503);
}

#[test]
fn ringback_plays_to_a_and_yields_to_a_prompt() {
    let engine = engine(48000, 48099);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    settle();
    c.media.ringback(true);
    let ring = drain(&c.a, Duration::from_millis(200));
    assert!(
        (5..=14).contains(&ring.len()),
        "{} frames in 200 ms",
        ring.len()
    );
    let heads: Vec<RtpHeader> = ring.iter().map(|(_, p)| RtpHeader::of(p)).collect();
    assert!(continuous(&heads) && heads.iter().all(|h| h.pt == 0));
    assert!(
        ring.iter().all(|(_, p)| p[12..].iter().any(|&b| b != 0xff)),
        "a tone, not silence"
    );
    assert!(
        drain(&c.b, Duration::from_millis(1)).is_empty(),
        "ringback is for A only"
    );

    // A prompt takes over at the next frame, then ringback resumes on the same stream.
    let goodbye = prompts().get(PromptId::Goodbye).unwrap().clone();
    let audio = goodbye.encoded(CodecName::Pcmu);
    let frames = goodbye.samples().div_ceil(160);
    c.media.play(Side::A, PromptId::Goodbye);
    let got = drain(&c.a, goodbye.duration() + Duration::from_millis(200));
    let start = got
        .iter()
        .position(|(_, p)| p[12..] == audio[..160])
        .expect("the prompt was played");
    assert!(
        start <= 2,
        "the prompt starts at once, not after the cadence"
    );
    for (k, (_, p)) in got[start..start + frames - 1].iter().enumerate() {
        assert_eq!(p[12..], audio[k * 160..(k + 1) * 160], "prompt frame {k}");
    }
    let resumed = &got[start + frames..];
    assert!(resumed.len() >= 3, "ringback resumes: {}", resumed.len());
    let all: Vec<RtpHeader> = got.iter().map(|(_, p)| RtpHeader::of(p)).collect();
    assert!(
        continuous(&all) && all[0].ssrc == heads[0].ssrc,
        "one stream throughout"
    );
    assert_eq!(
        next_event(&mut c.events, Duration::from_millis(100)),
        Some(MediaEvent::PromptsDone { side: Side::A })
    );

    c.media.ringback(false);
    settle();
    drain(&c.a, Duration::from_millis(20));
    assert!(drain(&c.a, Duration::from_millis(60)).is_empty());
    assert!(engine.stats().ringback_frames >= 10);
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<MediaEngine>();
    send::<CallMedia>();
    send::<MediaError>();
}

/// The sockets on 127.0.0.1:`port`, as the kernel lists them: each one's peer, `None`
/// for an unconnected one; sorted.
fn sockets_on(port: u16) -> Vec<Option<SocketAddr>> {
    let addr = |hex: &str| -> SocketAddr {
        let (ip, port) = hex.split_once(':').unwrap();
        let ip = u32::from_str_radix(ip, 16).unwrap();
        let port = u16::from_str_radix(port, 16).unwrap();
        // The address is printed as the bytes in memory, read as a native integer.
        SocketAddr::from((std::net::Ipv4Addr::from(u32::from_be(ip)), port))
    };
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let mut on: Vec<Option<SocketAddr>> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace().skip(1);
            let (local, remote) = (addr(cols.next()?), addr(cols.next()?));
            (local == SocketAddr::from(([127, 0, 0, 1], port)))
                .then_some((remote.port() != 0).then_some(remote))
        })
        .collect();
    on.sort();
    on
}

/// Whether a socket of this process that asks to share ports (`SO_REUSEPORT`) may bind
/// `at`.
fn may_share(at: SocketAddr) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain system calls on a socket this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let set = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0);
        let SocketAddr::V4(v4) = at else {
            panic!("IPv4 here")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        libc::bind(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) == 0
    }
}

#[test]
fn a_leg_s_peer_gets_a_connected_socket_that_follows_it_and_strangers_are_still_counted() {
    let engine = engine(48400, 48499);
    let mut c = call(&engine, CodecName::Pcmu, CodecName::Pcmu);
    c.media.bridge(true);
    settle();
    assert_eq!(stream(&c.a, c.gw_a, &c.b, 3, 0x1111).len(), 3);
    assert_eq!(stream(&c.b, c.gw_b, &c.a, 3, 0x2222).len(), 3);
    // Each RTP port: the leg's socket, which hears everyone, and one connected to the peer.
    let (a, b) = (c.a.local_addr().unwrap(), c.b.local_addr().unwrap());
    assert_eq!(sockets_on(c.gw_a.port()), vec![None, Some(a)]);
    assert_eq!(sockets_on(c.gw_b.port()), vec![None, Some(b)]);
    // The port was shared only for that: nobody can join it now.
    assert!(!may_share(c.gw_a), "the RTP port still takes other sockets");
    // A stranger still reaches the leg's own socket, and is dropped and counted there.
    let intruder = peer();
    assert!(stream(&intruder, c.gw_a, &c.b, 2, 0x6666).is_empty());
    let s = wait_stats(&engine, |s| s.dropped_wrong_source >= 2);
    assert_eq!((s.dropped_wrong_source, s.relayed), (2, 6), "{s:?}");

    // A re-INVITE moves the handset: the connected socket follows it.
    let moved = peer();
    c.media
        .set_leg(Side::A, media(&moved, CodecName::Pcmu), LatchPolicy::Exact);
    settle();
    let moved_at = moved.local_addr().unwrap();
    assert_eq!(sockets_on(c.gw_a.port()), vec![None, Some(moved_at)]);
    assert_eq!(stream(&moved, c.gw_a, &c.b, 3, 0x3333).len(), 3);
    assert_eq!(stream(&c.b, c.gw_b, &moved, 3, 0x2222).len(), 3);
    // The old address is a stranger now.
    assert!(stream(&c.a, c.gw_a, &c.b, 2, 0x1111).is_empty());
    let s = wait_stats(&engine, |s| s.dropped_wrong_source >= 4);
    assert_eq!((s.dropped_wrong_source, s.relayed), (4, 12), "{s:?}");

    // The call's end closes both sockets of each port.
    drop(c.media);
    let end = Instant::now() + Duration::from_secs(2);
    while !(sockets_on(c.gw_a.port()).is_empty() && sockets_on(c.gw_b.port()).is_empty()) {
        assert!(Instant::now() < end, "sockets left open after the call");
        std::thread::sleep(Duration::from_millis(10));
    }
}
