//! The sans-IO core with no sockets, in virtual time.

use super::*;
use crate::clock::epoch;
use crate::sip::message::{parse_datagram, SipMessage};
use crate::sip::transaction::TimerConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn src() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}

fn raw(method: &str, branch: &str) -> String {
    format!(
        "{method} sip:gw@example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK{branch};rport\r\n\
From: <sip:a@example.org>;tag=fa\r\n\
To: <sip:gw@example.org>\r\n\
Call-ID: c-{branch}\r\n\
CSeq: 1 {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
}

fn endpoint(rate: u32) -> Endpoint {
    let cfg = EndpointConfig {
        timers: TimerConfig::default(),
        flood: FloodConfig::per_second(rate),
        ..EndpointConfig::default()
    };
    Endpoint::new(cfg, Arc::new(TransportStats::default()))
}

fn transmits(ep: &mut Endpoint) -> Vec<(SocketAddr, Response)> {
    std::iter::from_fn(|| ep.poll_transmit())
        .filter_map(|t| match parse_datagram(&t.bytes) {
            Ok(SipMessage::Response(r)) => Some((t.dest, r)),
            _ => None,
        })
        .collect()
}

fn feed(ep: &mut Endpoint, now: Instant, text: &str) {
    ep.handle_datagram(now, src(), Transport::Udp, text.as_bytes());
}

fn request_event(ep: &mut Endpoint) -> (TxKey, Request) {
    match ep.poll_event() {
        Some(Event::Request { key, request, .. }) => (key, request),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn new_request_is_stamped_and_its_response_goes_to_received_rport() {
    let mut ep = endpoint(100);
    let now = epoch();
    feed(&mut ep, now, &raw("OPTIONS", "a1"));
    let (key, req) = request_event(&mut ep);
    let via = req.headers.top_via().unwrap();
    assert_eq!(via.received(), Some("198.51.100.7"));
    assert_eq!(via.rport(), Some(Some(40000)));
    ep.respond(now, &key, Response::for_request(&req, 200, "OK"))
        .unwrap();
    let out = transmits(&mut ep);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, src());
}

#[test]
fn retransmission_gets_the_last_response_and_no_event() {
    let mut ep = endpoint(100);
    let now = epoch();
    feed(&mut ep, now, &raw("INVITE", "i1"));
    let (key, req) = request_event(&mut ep);
    assert_eq!(transmits(&mut ep)[0].1.status, 100);
    ep.respond(now, &key, Response::for_request(&req, 180, "Ringing"))
        .unwrap();
    transmits(&mut ep);
    feed(&mut ep, now, &raw("INVITE", "i1"));
    assert_eq!(transmits(&mut ep)[0].1.status, 180);
    assert!(ep.poll_event().is_none());
}

#[test]
fn retransmissions_are_counted_by_whether_the_answer_was_out() {
    let mut ep = endpoint(100);
    let now = epoch();
    feed(&mut ep, now, &raw("OPTIONS", "r1"));
    let (key, req) = request_event(&mut ep);
    feed(&mut ep, now, &raw("OPTIONS", "r1"));
    let s = ep.stats().snapshot();
    assert_eq!(
        (s.retransmitted_unanswered, s.retransmitted_answered),
        (1, 0)
    );
    ep.respond(now, &key, Response::for_request(&req, 200, "OK"))
        .unwrap();
    transmits(&mut ep);
    feed(&mut ep, now, &raw("OPTIONS", "r1"));
    assert_eq!(transmits(&mut ep)[0].1.status, 200, "the answer again");
    let s = ep.stats().snapshot();
    assert_eq!(
        (s.retransmitted_unanswered, s.retransmitted_answered),
        (1, 1)
    );
    // An INVITE's 100 Trying is not its answer.
    feed(&mut ep, now, &raw("INVITE", "r2"));
    request_event(&mut ep);
    feed(&mut ep, now, &raw("INVITE", "r2"));
    assert_eq!(ep.stats().snapshot().retransmitted_unanswered, 2);
}

#[test]
fn garbage_is_dropped_and_malformed_gets_400() {
    let mut ep = endpoint(100);
    let now = epoch();
    feed(&mut ep, now, "hello\r\n\r\n");
    assert!(transmits(&mut ep).is_empty());
    let bad = raw("OPTIONS", "m1").replace("CSeq: 1 OPTIONS", "CSeq: 1 BYE");
    feed(&mut ep, now, &bad);
    let out = transmits(&mut ep);
    assert_eq!(out[0].1.status, 400);
    assert_eq!(out[0].0, src());
    let s = ep.stats().snapshot();
    assert_eq!((s.dropped, s.malformed_400, s.received), (1, 1, 2));
}

#[test]
fn stray_response_is_counted() {
    let mut ep = endpoint(100);
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    feed(&mut ep, epoch(), resp);
    assert_eq!(ep.stats().snapshot().stray_responses, 1);
    assert!(ep.poll_event().is_none());
}

#[test]
fn cancel_of_a_pending_invite_is_answered_and_reported() {
    let mut ep = endpoint(100);
    let now = epoch();
    feed(&mut ep, now, &raw("INVITE", "c1"));
    let (key, _) = request_event(&mut ep);
    transmits(&mut ep);
    let cancel = raw("INVITE", "c1").replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let cancel = cancel.replacen("INVITE sip", "CANCEL sip", 1);
    feed(&mut ep, now, &cancel);
    assert_eq!(transmits(&mut ep)[0].1.status, 200);
    match ep.poll_event() {
        Some(Event::Cancel { invite_key, .. }) => assert_eq!(invite_key, key),
        other => panic!("expected Cancel, got {other:?}"),
    }
    let orphan = cancel.replace("z9hG4bKc1", "z9hG4bKzz");
    feed(&mut ep, now, &orphan);
    assert_eq!(transmits(&mut ep)[0].1.status, 481);
}

#[test]
fn ack_for_2xx_goes_to_the_tu_and_stops_retransmissions() {
    let mut ep = endpoint(100);
    let now = epoch();
    feed(&mut ep, now, &raw("INVITE", "k1"));
    let (key, req) = request_event(&mut ep);
    ep.respond(
        now,
        &key,
        Response::for_request(&req, 200, "OK").with_to_tag("g"),
    )
    .unwrap();
    transmits(&mut ep);
    let ack = raw("ACK", "k2").replace("c-k2", "c-k1");
    feed(&mut ep, now, &ack);
    assert!(matches!(ep.poll_event(), Some(Event::Ack { .. })));
    ep.handle_timeout(now + Duration::from_secs(2));
    assert!(
        transmits(&mut ep).is_empty(),
        "no 2xx retransmission after ACK"
    );
}

#[test]
fn flood_gets_503_and_a_stray_ack_is_dropped() {
    let mut ep = endpoint(5);
    let now = epoch();
    for i in 0..5 {
        feed(&mut ep, now, &raw("OPTIONS", &format!("f{i}")));
    }
    feed(&mut ep, now, &raw("OPTIONS", "f5"));
    let out = transmits(&mut ep);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.status, 503);
    assert!(out[0].1.headers.retry_after().unwrap().unwrap().seconds >= 1);
    // An ACK that belongs to nothing we carry is input like any other.
    feed(&mut ep, now, &raw("ACK", "f6"));
    let events: Vec<Event> = std::iter::from_fn(|| ep.poll_event()).collect();
    assert_eq!(events.len(), 5);
    feed(&mut ep, now + Duration::from_secs(1), &raw("OPTIONS", "f7"));
    assert!(matches!(ep.poll_event(), Some(Event::Request { .. })));
    assert_eq!(ep.stats().snapshot().throttled_503, 1);
}

/// A request in the dialog `c-{call}` set up by [`answer_invite`]: From is
/// the handset's tag `fa`, To carries ours, `gw`.
fn in_dialog(method: &str, branch: &str, call: &str, seq: u32) -> String {
    raw(method, branch)
        .replace(&format!("c-{branch}"), &format!("c-{call}"))
        .replace(
            "To: <sip:gw@example.org>",
            "To: <sip:gw@example.org>;tag=gw",
        )
        .replace(
            &format!("CSeq: 1 {method}"),
            &format!("CSeq: {seq} {method}"),
        )
}

/// A handset INVITE answered 200 (To tag `gw`) and ACKed: a live dialog `c-{branch}`.
fn answer_invite(ep: &mut Endpoint, now: Instant, branch: &str) {
    feed(ep, now, &raw("INVITE", branch));
    let (key, req) = request_event(ep);
    let ok = Response::for_request(&req, 200, "OK").with_to_tag("gw");
    ep.respond(now, &key, ok).unwrap();
    transmits(ep);
    feed(ep, now, &in_dialog("ACK", &format!("{branch}a"), branch, 1));
    assert!(matches!(ep.poll_event(), Some(Event::Ack { .. })));
}

/// Spends the whole flood budget: the next new request gets 503.
fn flood(ep: &mut Endpoint, now: Instant, n: usize) {
    for i in 0..n {
        feed(ep, now, &raw("OPTIONS", &format!("flood{i}")));
    }
    while ep.poll_event().is_some() {}
    let out = transmits(ep);
    assert_eq!(out.last().map(|(_, r)| r.status), Some(503), "budget spent");
}

#[test]
fn requests_of_a_live_dialog_pass_a_flood_and_strays_do_not() {
    let mut ep = endpoint(3);
    let now = epoch();
    answer_invite(&mut ep, now, "d1");
    flood(&mut ep, now, 10);
    // INFO (a digit), a re-INVITE and the BYE of the live dialog all reach the TU.
    for (method, branch, seq) in [("INFO", "d1i", 2), ("INVITE", "d1r", 3), ("BYE", "d1b", 4)] {
        feed(&mut ep, now, &in_dialog(method, branch, "d1", seq));
        match ep.poll_event() {
            Some(Event::Request { request, .. }) => assert_eq!(request.method.as_str(), method),
            other => panic!("{method} in a live dialog was not passed up: {other:?}"),
        }
        assert!(transmits(&mut ep).iter().all(|(_, r)| r.status != 503));
    }
    // Guessing is no way in: the right Call-ID with a wrong tag, a To tag with an unknown
    // Call-ID, and a BYE with no tag at all are new requests, and the budget is spent.
    let wrong_tag = in_dialog("BYE", "x1", "d1", 5).replace("tag=fa", "tag=guess");
    let unknown_call = in_dialog("BYE", "x2", "nosuchcall", 5);
    let untagged = raw("BYE", "x3").replace("c-x3", "c-d1");
    for text in [wrong_tag, unknown_call, untagged] {
        feed(&mut ep, now, &text);
        assert!(ep.poll_event().is_none(), "a stray got through: {text}");
        assert_eq!(transmits(&mut ep)[0].1.status, 503);
    }
}

/// A party of a live dialog cannot flood through its exemption: past the dialog's own
/// budget its INFOs count like anyone's (503 once the shared budget is spent), other
/// methods always count, and its BYE still passes.
#[test]
fn a_dialog_has_its_own_budget_and_its_bye_always_passes() {
    let mut ep = endpoint(3);
    let now = epoch();
    answer_invite(&mut ep, now, "f1");
    flood(&mut ep, now, 10);
    let burst = dialogs::DIALOG_BURST as u32;
    for seq in 0..burst {
        feed(
            &mut ep,
            now,
            &in_dialog("INFO", &format!("f1i{seq}"), "f1", 2 + seq),
        );
        assert!(
            matches!(ep.poll_event(), Some(Event::Request { .. })),
            "INFO {seq}"
        );
    }
    let _ = transmits(&mut ep);
    feed(&mut ep, now, &in_dialog("INFO", "f1over", "f1", 100));
    assert!(
        ep.poll_event().is_none(),
        "past its budget an INFO is counted"
    );
    assert_eq!(transmits(&mut ep)[0].1.status, 503);
    feed(&mut ep, now, &in_dialog("MESSAGE", "f1m", "f1", 101));
    assert!(
        ep.poll_event().is_none(),
        "a MESSAGE in a dialog always counts"
    );
    assert_eq!(transmits(&mut ep)[0].1.status, 503);
    // The budget refills at its rate.
    let later = now + Duration::from_millis(200);
    feed(&mut ep, later, &in_dialog("INFO", "f1late", "f1", 102));
    assert!(matches!(ep.poll_event(), Some(Event::Request { .. })));
    feed(&mut ep, now, &in_dialog("BYE", "f1b", "f1", 103));
    match ep.poll_event() {
        Some(Event::Request { request, .. }) => assert_eq!(request.method.as_str(), "BYE"),
        other => panic!("the BYE was not passed up: {other:?}"),
    }
}

#[test]
fn an_ended_dialog_stops_passing_after_its_linger() {
    let mut ep = endpoint(3);
    let now = epoch();
    answer_invite(&mut ep, now, "e1");
    feed(&mut ep, now, &in_dialog("BYE", "e1b", "e1", 2));
    assert!(matches!(ep.poll_event(), Some(Event::Request { .. })));
    let later = now + Duration::from_secs(5);
    flood(&mut ep, later, 10);
    // A request crossing the BYE still passes for a while ...
    feed(&mut ep, later, &in_dialog("INFO", "e1i", "e1", 3));
    assert!(matches!(ep.poll_event(), Some(Event::Request { .. })));
    // ... but not once the dialog is gone.
    let gone = now + dialogs::LINGER + Duration::from_millis(1);
    flood(&mut ep, gone, 10);
    feed(&mut ep, gone, &in_dialog("INFO", "e1j", "e1", 4));
    assert!(ep.poll_event().is_none());
    assert_eq!(transmits(&mut ep)[0].1.status, 503);
}

#[test]
fn the_trunk_leg_dialog_passes_too_and_our_bye_ends_it() {
    let mut ep = endpoint(3);
    let now = epoch();
    // We send an INVITE (From tag `g`); the trunk answers 200 with its tag `t`.
    let invite = raw("INVITE", "tr1").replace("tag=fa", "tag=g");
    let SipMessage::Request(req) = parse_datagram(invite.as_bytes()).unwrap() else {
        panic!()
    };
    ep.send_request(now, req.clone(), src(), Transport::Udp)
        .unwrap();
    let ok = Response::for_request(&req, 200, "OK").with_to_tag("t");
    ep.handle_message(now, src(), Transport::Udp, SipMessage::Response(ok));
    assert!(matches!(ep.poll_event(), Some(Event::Response { .. })));
    assert_eq!(ep.dialog_count(), 1);
    flood(&mut ep, now, 10);
    // The trunk's BYE: From is its tag, To ours.
    let bye = raw("BYE", "tb1")
        .replace("c-tb1", "c-tr1")
        .replace(
            "From: <sip:a@example.org>;tag=fa",
            "From: <sip:a@example.org>;tag=t",
        )
        .replace("To: <sip:gw@example.org>", "To: <sip:gw@example.org>;tag=g")
        .replace("CSeq: 1 BYE", "CSeq: 7 BYE");
    feed(
        &mut ep,
        now,
        &bye.replace("CSeq: 7 BYE", "CSeq: 6 INFO")
            .replace("BYE sip", "INFO sip"),
    );
    assert!(matches!(ep.poll_event(), Some(Event::Request { .. })));
    // Our BYE ends the dialog: once its linger is over, the trunk's requests count again.
    let our_bye = in_dialog("BYE", "ob1", "tr1", 2)
        .replace("tag=fa", "tag=g")
        .replace(";tag=gw", ";tag=t");
    let SipMessage::Request(our_bye) = parse_datagram(our_bye.as_bytes()).unwrap() else {
        panic!()
    };
    ep.send_request(now, our_bye, src(), Transport::Udp)
        .unwrap();
    let gone = now + dialogs::LINGER + Duration::from_millis(1);
    flood(&mut ep, gone, 10);
    feed(&mut ep, gone, &bye);
    assert!(!matches!(ep.poll_event(), Some(Event::Request { .. })));
}

#[test]
fn cancel_passes_a_flood_only_for_an_invite_we_hold() {
    let mut ep = endpoint(3);
    let now = epoch();
    feed(&mut ep, now, &raw("INVITE", "cn1"));
    request_event(&mut ep);
    transmits(&mut ep);
    flood(&mut ep, now, 10);
    let cancel = |branch: &str| {
        raw("INVITE", branch)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
            .replacen("INVITE sip", "CANCEL sip", 1)
    };
    feed(&mut ep, now, &cancel("cn1"));
    assert_eq!(transmits(&mut ep)[0].1.status, 200);
    assert!(matches!(ep.poll_event(), Some(Event::Cancel { .. })));
    feed(&mut ep, now, &cancel("cn2"));
    assert_eq!(transmits(&mut ep)[0].1.status, 503);
}

#[test]
fn the_dialog_table_is_bounded_in_time() {
    let mut d = dialogs::LiveDialogs::default();
    let now = epoch();
    d.established(now, "c", "l", "r", None);
    assert!(d.is_live(now, "c", "l", "r"));
    assert!(!d.is_live(now, "c", "r", "l"), "tags are ordered");
    let day = now + dialogs::MAX_AGE;
    assert!(
        !d.is_live(day, "c", "l", "r"),
        "forgotten after a day without BYE"
    );
    d.sweep(day);
    assert!(d.is_empty());
}

#[test]
fn client_transaction_retransmits_then_times_out() {
    let mut ep = endpoint(100);
    let start = epoch();
    let SipMessage::Request(req) = parse_datagram(raw("OPTIONS", "o1").as_bytes()).unwrap() else {
        panic!()
    };
    let key = ep.send_request(start, req, src(), Transport::Udp).unwrap();
    let mut sent = std::iter::from_fn(|| ep.poll_transmit()).count();
    let mut timed_out = false;
    while let Some(at) = ep.poll_timeout() {
        ep.handle_timeout(at);
        sent += std::iter::from_fn(|| ep.poll_transmit()).count();
        if let Some(Event::Timeout { key: k }) = ep.poll_event() {
            assert_eq!(k, key);
            timed_out = true;
        }
    }
    assert!(timed_out);
    assert!(sent >= 5, "sent {sent}");
    assert_eq!(ep.transaction_counts(), (0, 0));
}

#[test]
fn response_routes_to_its_client_transaction() {
    let mut ep = endpoint(100);
    let now = epoch();
    let text = raw("OPTIONS", "r1");
    let SipMessage::Request(req) = parse_datagram(text.as_bytes()).unwrap() else {
        panic!()
    };
    let key = ep
        .send_request(now, req.clone(), src(), Transport::Udp)
        .unwrap();
    let resp = Response::for_request(&req, 200, "OK").with_to_tag("x");
    ep.handle_message(now, src(), Transport::Udp, SipMessage::Response(resp));
    match ep.poll_event() {
        Some(Event::Response { key: k, response }) => {
            assert_eq!((k, response.status), (key, 200));
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn framer_splits_joins_and_pings() {
    let mut f = StreamFramer::new();
    let two = raw("OPTIONS", "s1") + &raw("OPTIONS", "s2");
    f.push(b"\r\n\r\n");
    assert_eq!(f.next_frame(), Frame::Ping);
    f.push(two.as_bytes());
    assert!(matches!(f.next_frame(), Frame::Message(_)));
    assert!(matches!(f.next_frame(), Frame::Message(_)));
    assert_eq!(f.next_frame(), Frame::NeedMore);
    let one = raw("OPTIONS", "s3");
    let (a, b) = one.as_bytes().split_at(20);
    f.push(a);
    assert_eq!(f.next_frame(), Frame::NeedMore);
    f.push(b);
    assert!(matches!(f.next_frame(), Frame::Message(_)));
    f.push(b"NOT SIP AT ALL\r\n\r\n");
    assert!(matches!(f.next_frame(), Frame::Malformed { .. }));
    assert_eq!(f.buffered(), 0);
}

#[test]
fn response_destination_follows_received_and_rport() {
    let via = crate::sip::typed::Via::parse(
        "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.1;rport=1234",
    )
    .unwrap();
    let d = response_destination(&via, src());
    assert_eq!(d, "203.0.113.1:1234".parse().unwrap());
    let plain = crate::sip::typed::Via::parse("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1").unwrap();
    assert_eq!(
        response_destination(&plain, src()),
        "10.0.0.5:5060".parse().unwrap()
    );
}

#[test]
fn per_source_buckets_keep_one_noisy_source_from_starving_others() {
    let mut f = FloodControl::new(FloodConfig {
        rate: 100,
        burst: 100,
        per_source: 1,
        per_source_burst: 2,
    });
    let now = epoch();
    let noisy: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let quiet: std::net::IpAddr = "192.0.2.2".parse().unwrap();
    assert!(f.admit(now, noisy).is_ok());
    assert!(f.admit(now, noisy).is_ok());
    assert_eq!(f.admit(now, noisy), Err(1));
    assert!(f.admit(now, quiet).is_ok());
    assert!(f.admit(now + Duration::from_secs(1), noisy).is_ok());
    assert!(
        f.admit(now + Duration::from_secs(1), noisy).is_err(),
        "refills at its rate"
    );
}

#[test]
fn per_source_table_is_bounded() {
    let mut f = FloodControl::new(FloodConfig {
        rate: 0,
        burst: 0,
        per_source: 1,
        per_source_burst: 1,
    });
    let now = epoch();
    for i in 0..(flood::MAX_SOURCES as u32 + 100) {
        let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        assert!(f.admit(now, ip).is_ok());
    }
    assert!(f.tracked_sources() <= flood::MAX_SOURCES);
}
