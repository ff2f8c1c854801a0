//! The ng control client of the rtpengine side-by-side benchmark (`examples/rtp_load/ng.rs`):
//! bencode encoding and decoding, the cookie framing, the SDP it reads, and one call
//! anchored in a real rtpengine (userspace, its own ports) relaying both ways.

#[path = "../examples/rtp_load/ng.rs"]
#[allow(dead_code)]
mod ng;

use ng::{NgClient, NgError, Value};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn encodes_each_bencode_type_with_sorted_keys() {
    assert_eq!(Value::Int(42).encode(), b"i42e");
    assert_eq!(Value::Int(-7).encode(), b"i-7e");
    assert_eq!(Value::Int(0).encode(), b"i0e");
    assert_eq!(Value::str("spam").encode(), b"4:spam");
    assert_eq!(Value::str("").encode(), b"0:");
    assert_eq!(
        Value::List(vec![Value::str("a"), Value::Int(1)]).encode(),
        b"l1:ai1ee"
    );
    // Keys come out sorted whatever the order they were given in.
    let offer = Value::dict([
        ("sdp", Value::str("v=0")),
        ("command", Value::str("offer")),
        ("call-id", Value::str("c1")),
    ]);
    assert_eq!(
        offer.encode(),
        b"d7:call-id2:c17:command5:offer3:sdp3:v=0e".to_vec()
    );
}

#[test]
fn decodes_what_it_encodes_and_rtpengines_replies() {
    let nested = Value::dict([
        ("result", Value::str("ok")),
        (
            "flags",
            Value::List(vec![Value::str("trust-address"), Value::Int(-3)]),
        ),
        ("inner", Value::dict([("n", Value::Int(123_456_789_012))])),
    ]);
    assert_eq!(Value::decode(&nested.encode()).unwrap(), nested);

    // A reply as rtpengine sends it (the SDP's length counts its CRLFs).
    let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\n";
    let wire = format!("d3:sdp{}:{sdp}6:result2:oke", sdp.len());
    let v = Value::decode(wire.as_bytes()).unwrap();
    assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"));
    assert_eq!(v.get("sdp").and_then(Value::as_str), Some(sdp));
    assert_eq!(v.get("missing"), None);
    // Binary strings survive (a string is bytes, not UTF-8).
    let raw = Value::Bytes(vec![0, 0xff, b':', b'e']);
    assert_eq!(Value::decode(&raw.encode()).unwrap(), raw);
    assert_eq!(Value::decode(b"de").unwrap(), Value::Dict(BTreeMap::new()));
    assert_eq!(Value::decode(b"le").unwrap(), Value::List(vec![]));
}

#[test]
fn malformed_bencode_is_a_typed_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"i12",                       // no e
        b"ie",                        // no digits
        b"i-0e",                      // negative zero
        b"i03e",                      // leading zero
        b"i1x2e",                     // not a number
        b"5:abc",                     // shorter than its length
        b"3abc",                      // no colon
        b"l1:a",                      // list without e
        b"d1:ai1e",                   // dict without e
        b"di1ei2ee",                  // integer key
        b"x",                         // unknown type
        b"i1ei2e",                    // trailing bytes
        b"99999999999999999999999:a", // absurd length
    ] {
        match Value::decode(bad) {
            Err(NgError::Bencode(_)) => {}
            other => panic!("{:?} decoded to {other:?}", String::from_utf8_lossy(bad)),
        }
    }
    let deep = "l".repeat(100) + &"e".repeat(100);
    assert!(matches!(
        Value::decode(deep.as_bytes()),
        Err(NgError::Bencode(_))
    ));
}

#[test]
fn frames_with_a_cookie_and_reads_it_back() {
    let msg = Value::dict([("command", Value::str("ping"))]);
    let wire = ng::frame("1234_5", &msg);
    assert_eq!(wire, b"1234_5 d7:command4:pinge".to_vec());
    let (cookie, back) = ng::unframe(&wire).unwrap();
    assert_eq!(cookie, "1234_5");
    assert_eq!(back, msg);
    assert!(matches!(ng::unframe(b"nocookie"), Err(NgError::Framing)));
    assert!(matches!(
        ng::unframe(b"c d7:command"),
        Err(NgError::Bencode(_))
    ));
}

#[test]
fn reads_the_audio_address_of_an_sdp() {
    let at: SocketAddr = "127.0.0.1:40002".parse().unwrap();
    assert_eq!(ng::sdp_audio_addr(&ng::pcmu_sdp(at)).unwrap(), at);
    // A media-level c= wins over the session's; only the first audio stream counts.
    let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0 8\r\n\
               c=IN IP4 192.0.2.7\r\na=rtcp:5005\r\nm=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.9.9.9\r\n";
    assert_eq!(
        ng::sdp_audio_addr(sdp).unwrap(),
        "192.0.2.7:5004".parse::<SocketAddr>().unwrap()
    );
    let video_first =
        "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 7000 RTP/AVP 96\r\nm=audio 7002 RTP/AVP 0\r\n";
    assert_eq!(
        ng::sdp_audio_addr(video_first).unwrap(),
        "10.0.0.1:7002".parse::<SocketAddr>().unwrap()
    );
    assert!(matches!(
        ng::sdp_audio_addr("v=0\r\nc=IN IP4 10.0.0.1\r\n"),
        Err(NgError::Sdp(_))
    ));
    assert!(matches!(
        ng::sdp_audio_addr("v=0\r\nm=audio 5004 RTP/AVP 0\r\n"),
        Err(NgError::Sdp(_))
    ));
    assert!(matches!(
        ng::sdp_audio_addr("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio x RTP/AVP 0\r\n"),
        Err(NgError::Sdp(_))
    ));
}

/// Kills the rtpengine this test started when the test ends, passed or not.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rtp(seq: u16, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 172];
    p[0] = 0x80;
    p[1] = 0;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p
}

#[test]
fn anchors_a_call_in_rtpengine_which_relays_both_ways() {
    let ng_port = 22_940;
    let started = Command::new("rtpengine")
        .args([
            "--config-file=none",
            "--foreground",
            "--log-stderr",
            "--log-level=3",
            "--table=-1",
            "--interface=127.0.0.1",
            &format!("--listen-ng=127.0.0.1:{ng_port}"),
            "--port-min=41000",
            "--port-max=41099",
            "--num-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = started else {
        sallyport::db::testing::skip_or_fail(
            "rtpengine is not installed (Debian package rtpengine-daemon): ng client test skipped",
        );
        return;
    };
    let _daemon = Daemon(child);
    let mut ng = NgClient::connect(SocketAddr::from(([127, 0, 0, 1], ng_port))).unwrap();
    let t = Instant::now();
    while let Err(e) = ng.ping() {
        assert!(t.elapsed() < Duration::from_secs(10), "no pong: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (for_a, for_b) = ng
        .anchor(
            "ng-test-call",
            a.local_addr().unwrap(),
            b.local_addr().unwrap(),
        )
        .unwrap();
    for (addr, who) in [(for_a, "a"), (for_b, "b")] {
        assert!(addr.ip().is_loopback(), "{who} sends to {addr}");
        assert!(
            (41_000..=41_099).contains(&addr.port()),
            "{who} sends to {addr}"
        );
    }
    assert_ne!(for_a, for_b);
    // A command it does not know is refused, with its reason.
    let refused = ng.request(&Value::dict([("command", Value::str("no-such-command"))]));
    assert!(matches!(refused, Err(NgError::Refused(_))), "{refused:?}");

    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    for seq in 0..5u16 {
        a.send_to(&rtp(seq, 0xa1), for_a).unwrap();
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!(from, for_b, "b hears the port it sends to (symmetric)");
        assert_eq!(&buf[..n], &rtp(seq, 0xa1)[..], "relayed unchanged");
        b.send_to(&rtp(seq, 0xb2), for_b).unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(from, for_a);
        assert_eq!(&buf[..n], &rtp(seq, 0xb2)[..]);
    }
    ng.delete("ng-test-call").unwrap();
}
