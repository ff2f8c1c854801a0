//! The relay's per-packet path makes no allocation: a counting global allocator (per
//! thread, so the test harness's own threads do not interfere) sees zero allocations over
//! 100,000 relayed packets in both directions, including DTMF detection, RTCP termination,
//! wrong-source drops and prompt frames stamped in between.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use sallyport::media::relay::{LatchPolicy, LegConfig, Relay, RelayDecision, Side};
use sallyport::media::sdp::{CodecName, NegotiatedMedia};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

fn media(remote: SocketAddr, codec: CodecName) -> NegotiatedMedia {
    NegotiatedMedia::plain(remote, codec)
}

fn leg(remote: SocketAddr, codec: CodecName, ssrc: u32) -> LegConfig {
    LegConfig {
        media: media(remote, codec),
        latch: LatchPolicy::Exact,
        ssrc,
        initial_seq: 1,
        initial_ts: 1,
    }
}

fn write_header(buf: &mut [u8], pt: u8, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = pt;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[test]
fn relay_hot_path_allocates_nothing() {
    let handset: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let trunk: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let stranger: SocketAddr = "10.0.0.66:4000".parse().unwrap();
    let mut relay = Relay::new(leg(handset, CodecName::Pcmu, 0xA));
    // Different laws on the two legs, so the in-place conversion runs too.
    relay.set_leg(Side::B, leg(trunk, CodecName::Pcma, 0xB));
    relay.bridge(true);
    let mut buf = [0xffu8; 1500];
    let rtcp = {
        let mut rr = [0u8; 32];
        rr[..8].copy_from_slice(&[0x81, 201, 0, 7, 0, 0, 0, 9]);
        rr
    };
    let t0 = Instant::now();
    let mut forwarded = 0u64;

    let before = allocations();
    for i in 0..100_000u32 {
        let now = t0 + Duration::from_millis(u64::from(i) * 10);
        let (side, from) = if i % 2 == 0 {
            (Side::A, handset)
        } else {
            (Side::B, trunk)
        };
        let seq = (i / 2) as u16;
        let ts = (i / 2).wrapping_mul(160);
        let len = if i % 100 == 7 {
            // A telephone-event in the middle of the talk.
            write_header(&mut buf, 101, seq, ts, 0x5);
            buf[12..16].copy_from_slice(&[1, 0x8a, 0, 160]);
            16
        } else {
            write_header(&mut buf, if side == Side::A { 0 } else { 8 }, seq, ts, 0x5);
            172
        };
        if let RelayDecision::Forward { len, .. } =
            relay.on_packet(side, from, &mut buf[..len], now)
        {
            forwarded += u64::from(len > 0);
        }
        if i % 500 == 0 {
            let _ = relay.on_packet(side, stranger, &mut buf[..172], now);
            let _ = relay.on_rtcp(side, from, &rtcp, now);
            let _ = relay.stamp_local(Side::A, &mut buf, 160, 160, now);
        }
    }
    let after = allocations();

    assert_eq!(after - before, 0, "allocations on the relay path");
    assert_eq!(forwarded, 100_000);
    let a = relay.leg(Side::A).unwrap().counters();
    let b = relay.leg(Side::B).unwrap().counters();
    assert_eq!((a.dropped_wrong_source, a.rtcp_received), (200, 200));
    assert_eq!(b.digits, 1000);
    assert_eq!(
        b.converted, 50_000,
        "every A→B audio packet converted to A-law"
    );
}
