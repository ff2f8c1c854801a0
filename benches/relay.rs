//! Relay per-packet path: classify, latch check, parse the RTP header in place, map the
//! payload type, rewrite SSRC/sequence/timestamp, pick the destination — in ns/packet.
//! (Socket `recv`/`send` are the driver's and are not included; see `README.md` for the
//! end-to-end figures.) The allocation-free proof is `tests/relay_no_alloc.rs`.
//!
//! `udp_loopback/send_recv` is the floor the socket driver (`media::engine`) adds per
//! relayed packet: one `sendto` and one `recv` of a 172-byte datagram on loopback, which
//! is what a worker does per packet when each socket holds one datagram at a time.
//!
//! `cargo bench --bench relay -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sallyport::media::relay::{LatchPolicy, LegConfig, Relay, RelayDecision, Side};
use sallyport::media::sdp::{CodecName, NegotiatedMedia};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn leg(remote: SocketAddr, codec: CodecName, ssrc: u32) -> LegConfig {
    LegConfig {
        media: NegotiatedMedia::plain(remote, codec),
        latch: LatchPolicy::Exact,
        ssrc,
        initial_seq: 1,
        initial_ts: 1,
    }
}

/// A 20 ms G.711 packet: 12-byte header + 160 bytes.
fn packet(pt: u8) -> [u8; 172] {
    let mut p = [0xd5u8; 172];
    p[..12].copy_from_slice(&[0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    p
}

fn relay(b_codec: CodecName) -> Relay {
    let mut r = Relay::new(leg("10.0.0.1:4000".parse().unwrap(), CodecName::Pcmu, 0xA));
    r.set_leg(Side::B, leg("10.0.0.2:5000".parse().unwrap(), b_codec, 0xB));
    r.bridge(true);
    r
}

fn bench(c: &mut Criterion) {
    let handset: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(1));
    for (name, b_codec) in [
        ("forward_same_codec", CodecName::Pcmu),
        ("forward_ulaw_to_alaw", CodecName::Pcma),
    ] {
        let mut r = relay(b_codec);
        let mut buf = packet(0);
        let t0 = Instant::now();
        let mut seq: u16 = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                // What the receive path would have put in the buffer: a new sequence number
                // and timestamp (the relay rewrote the previous packet in place).
                seq = seq.wrapping_add(1);
                buf[1] = 0;
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                buf[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                buf[8..12].copy_from_slice(&5u32.to_be_bytes());
                let now = t0 + Duration::from_millis(u64::from(seq) * 20);
                match r.on_packet(Side::A, black_box(handset), black_box(&mut buf), now) {
                    RelayDecision::Forward { to, len, .. } => black_box((to, len)),
                    other => panic!("{other:?}"),
                }
            })
        });
    }
    let mut r = relay(CodecName::Pcmu);
    let mut buf = packet(0);
    let stranger: SocketAddr = "10.0.0.66:4000".parse().unwrap();
    let now = Instant::now();
    group.bench_function("drop_wrong_source", |b| {
        b.iter(|| black_box(r.on_packet(Side::A, black_box(stranger), &mut buf, now)))
    });
    group.finish();
}

fn bench_syscalls(c: &mut Criterion) {
    let mut group = c.benchmark_group("udp_loopback");
    group.throughput(Throughput::Elements(1));
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let packet = packet(0);
    let mut buf = [0u8; 2048];
    group.bench_function("send_recv", |b| {
        b.iter(|| {
            tx.send_to(&packet, to).unwrap();
            black_box(rx.recv(&mut buf).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_syscalls);
criterion_main!(benches);
