//! Property test of the transaction layer under hostile input: random sequences of
//! plausible and mangled SIP datagrams (requests and responses that collide on branches,
//! Call-IDs and CSeqs, truncated and bit-flipped copies, raw garbage), interleaved with the
//! TU answering and sending requests and with time passing. The table must never panic,
//! must only ever emit bytes that parse as SIP, and must forget every transaction once the
//! RFC 3261 timers have run out (no leak an attacker could grow).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use proptest::prelude::*;
use sallyport::sip::message::{parse_datagram, Method, RequestBuilder, Response};
use sallyport::sip::transport::{Endpoint, EndpointConfig, Event, Transport, TransportStats};
use sallyport::sip::uri::Uri;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const METHODS: [&str; 6] = ["INVITE", "ACK", "CANCEL", "BYE", "INFO", "OPTIONS"];
const STATUSES: [u16; 6] = [100, 180, 200, 404, 486, 603];

#[derive(Debug, Clone)]
enum Op {
    /// A request from the network.
    Request {
        method: usize,
        branch: u8,
        call: u8,
        seq: u8,
    },
    /// A response from the network.
    Response {
        status: usize,
        branch: u8,
        call: u8,
        seq: u8,
        method: usize,
    },
    /// A plausible message with bytes flipped or cut.
    Mangled {
        base: Box<Op>,
        cut: usize,
        flips: Vec<(usize, u8)>,
    },
    /// Arbitrary bytes.
    Garbage(Vec<u8>),
    /// The TU answers the oldest pending request.
    Answer { status: usize },
    /// The TU sends a request.
    Send { method: usize, branch: u8 },
    /// Time passes.
    Advance { ms: u16 },
}

fn text(op: &Op) -> String {
    match op {
        Op::Request {
            method,
            branch,
            call,
            seq,
        } => {
            let m = METHODS[*method];
            format!(
                "{m} sip:+15551230001@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{branch}\r\n\
                 From: <sip:h@10.0.0.9>;tag=f{call}\r\nTo: <sip:+15551230001@gw>\r\nCall-ID: c{call}\r\n\
                 CSeq: {seq} {m}\r\nContact: <sip:h@10.0.0.9>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        }
        Op::Response {
            status,
            branch,
            call,
            seq,
            method,
        } => {
            let (s, m) = (STATUSES[*status], METHODS[*method]);
            format!(
                "SIP/2.0 {s} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtu{branch}\r\n\
                 From: <sip:gw@127.0.0.1>;tag=g\r\nTo: <sip:x@trunk>;tag=t{call}\r\nCall-ID: c{call}\r\n\
                 CSeq: {seq} {m}\r\nContact: <sip:x@10.0.0.8>\r\nContent-Length: 0\r\n\r\n"
            )
        }
        _ => String::new(),
    }
}

fn plausible() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..METHODS.len(), 0u8..6, 0u8..4, 1u8..4).prop_map(|(method, branch, call, seq)| {
            Op::Request {
                method,
                branch,
                call,
                seq,
            }
        }),
        (0..STATUSES.len(), 0u8..6, 0u8..4, 1u8..4, 0..METHODS.len()).prop_map(
            |(status, branch, call, seq, method)| Op::Response {
                status,
                branch,
                call,
                seq,
                method
            }
        ),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => plausible(),
        2 => (plausible(), 0usize..400, prop::collection::vec((0usize..400, any::<u8>()), 0..4))
            .prop_map(|(base, cut, flips)| Op::Mangled { base: Box::new(base), cut, flips }),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Op::Garbage),
        2 => (0..STATUSES.len()).prop_map(|status| Op::Answer { status }),
        1 => (0..METHODS.len(), 0u8..6).prop_map(|(method, branch)| Op::Send { method, branch }),
        2 => (0u16..5000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn bytes_of(op: &Op) -> Option<Vec<u8>> {
    match op {
        Op::Request { .. } | Op::Response { .. } => Some(text(op).into_bytes()),
        Op::Mangled { base, cut, flips } => {
            let mut b = text(base).into_bytes();
            for (i, x) in flips {
                if let Some(byte) = b.get_mut(*i) {
                    *byte ^= x;
                }
            }
            b.truncate((*cut).max(1));
            Some(b)
        }
        Op::Garbage(g) => Some(g.clone()),
        _ => None,
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let stats = Arc::new(TransportStats::default());
    let mut ep = Endpoint::new(EndpointConfig::default(), stats);
    let peer: SocketAddr = "10.0.0.9:5060".parse().unwrap();
    let mut now = Instant::now();
    let mut pending = Vec::new();
    let check = |ep: &mut Endpoint, pending: &mut Vec<_>| -> Result<(), TestCaseError> {
        while let Some(t) = ep.poll_transmit() {
            // The answer to a malformed request (400, or 505/513) echoes its headers as
            // RFC 3261 §8.2.6 asks, including the malformed one; everything else must parse.
            let parsed = parse_datagram(&t.bytes);
            let echo = [&b"SIP/2.0 400 "[..], b"SIP/2.0 505 ", b"SIP/2.0 513 "]
                .iter()
                .any(|p| t.bytes.starts_with(p));
            prop_assert!(
                parsed.is_ok() || echo,
                "emitted unparsable bytes ({:?}): {}",
                parsed.err(),
                String::from_utf8_lossy(&t.bytes)
            );
        }
        while let Some(ev) = ep.poll_event() {
            if let Event::Request { key, request, .. } = ev {
                pending.push((key, request));
            }
        }
        Ok(())
    };
    for op in ops {
        match op {
            Op::Answer { status } => {
                if !pending.is_empty() {
                    let (key, req) = pending.remove(0);
                    let status = STATUSES[*status];
                    let resp = Response::for_request(&req, status, "X").with_to_tag("gw");
                    let _ = ep.respond(now, &key, resp);
                    if status < 200 {
                        // A provisional answer: the TU still owes a final one.
                        pending.push((key, req));
                    }
                }
            }
            Op::Send { method, branch } => {
                let m = Method::parse(METHODS[*method]).unwrap();
                let req = RequestBuilder::new(m.clone(), Uri::parse("sip:x@10.0.0.8").unwrap())
                    .header(
                        "Via",
                        format!("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtu{branch}"),
                    )
                    .header("From", "<sip:gw@127.0.0.1>;tag=g")
                    .header("To", "<sip:x@trunk>")
                    .call_id(&format!("c{branch}"))
                    .cseq(1)
                    .build();
                let _ = ep.send_request(now, req, peer, Transport::Udp);
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(*ms));
                ep.handle_timeout(now);
            }
            _ => {
                if let Some(b) = bytes_of(op) {
                    ep.handle_datagram(now, peer, Transport::Udp, &b);
                }
            }
        }
        check(&mut ep, &mut pending)?;
    }
    // The TU answers what is left; then every timer runs out.
    for (key, req) in pending.drain(..) {
        let _ = ep.respond(
            now,
            &key,
            Response::for_request(&req, 486, "Busy").with_to_tag("gw"),
        );
    }
    for _ in 0..200 {
        now += Duration::from_secs(1);
        ep.handle_timeout(now);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
    prop_assert_eq!(ep.transaction_counts(), (0, 0), "transactions leaked");
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn hostile_sequences_never_panic_emit_garbage_or_leak(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}

#[test]
fn a_mangled_flood_is_answered_or_dropped_and_forgotten() {
    let ops: Vec<Op> = (0..300u16)
        .map(|i| Op::Mangled {
            base: Box::new(Op::Request {
                method: 0,
                branch: (i % 6) as u8,
                call: (i % 4) as u8,
                seq: 1,
            }),
            cut: 40 + (i as usize * 7) % 300,
            flips: vec![((i as usize * 13) % 200, 0x20)],
        })
        .collect();
    run(&ops).unwrap();
}
