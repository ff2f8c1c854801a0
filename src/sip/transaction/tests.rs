use super::*;
use crate::sip::message::parse_datagram;

fn invite() -> Request {
    let raw = "INVITE sip:+15551230001@gw SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-abc\r\n\
From: <sip:handset-1@gw>;tag=f1\r\n\
To: <sip:+15551230001@gw>\r\n\
Call-ID: c1@10.0.0.5\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";
    request(raw)
}

fn request(raw: &str) -> Request {
    match parse_datagram(raw.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("not a request"),
    }
}

fn options() -> Request {
    request(
        &invite_text()
            .replace("INVITE sip", "OPTIONS sip")
            .replace("1 INVITE", "1 OPTIONS"),
    )
}

fn invite_text() -> String {
    String::from_utf8(invite().to_bytes()).unwrap()
}

fn reply(req: &Request, status: u16) -> Response {
    Response::for_request(req, status, "X").with_to_tag("t9")
}

fn drain_client(tx: &mut ClientTransaction) -> Vec<TxAction> {
    std::iter::from_fn(|| tx.poll_action()).collect()
}

fn drain_server(tx: &mut ServerTransaction) -> Vec<TxAction> {
    std::iter::from_fn(|| tx.poll_action()).collect()
}

fn transmits(actions: &[TxAction]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, TxAction::Transmit(_)))
        .count()
}

/// Steps the client to each of its timeouts until `until`, collecting actions and times.
fn run_client(
    tx: &mut ClientTransaction,
    start: Instant,
    until: Duration,
) -> Vec<(Duration, TxAction)> {
    let mut out = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        if at > start + until {
            break;
        }
        tx.handle_timeout(at);
        out.extend(drain_client(tx).into_iter().map(|a| (at - start, a)));
    }
    out
}

#[test]
fn invite_client_retransmits_with_doubling_then_times_out() {
    let t0 = crate::clock::epoch();
    let mut tx = ClientTransaction::new(invite(), false, TimerConfig::default(), t0);
    assert_eq!(transmits(&drain_client(&mut tx)), 1);
    let events = run_client(&mut tx, t0, Duration::from_secs(40));
    let sends: Vec<u64> = events
        .iter()
        .filter(|(_, a)| matches!(a, TxAction::Transmit(_)))
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    // Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B at 32 s.
    assert_eq!(sends, vec![500, 1500, 3500, 7500, 15500, 31500]);
    let timeout = events
        .iter()
        .find(|(_, a)| *a == TxAction::Timeout)
        .map(|(t, _)| *t);
    assert_eq!(timeout, Some(Duration::from_secs(32)));
    assert!(tx.is_terminated());
}

#[test]
fn invite_client_over_tcp_never_retransmits() {
    let t0 = crate::clock::epoch();
    let mut tx = ClientTransaction::new(invite(), true, TimerConfig::default(), t0);
    drain_client(&mut tx);
    let events = run_client(&mut tx, t0, Duration::from_secs(40));
    assert_eq!(
        transmits(&events.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>()),
        0
    );
    assert!(events
        .iter()
        .any(|(t, a)| *a == TxAction::Timeout && *t == Duration::from_secs(32)));
}

#[test]
fn invite_client_provisional_stops_retransmission_and_error_is_acked() {
    let t0 = crate::clock::epoch();
    let inv = invite();
    let mut tx = ClientTransaction::new(inv.clone(), false, TimerConfig::default(), t0);
    drain_client(&mut tx);
    tx.handle_response(t0 + Duration::from_millis(100), reply(&inv, 180));
    assert!(matches!(drain_client(&mut tx).as_slice(), [TxAction::Response(r)] if r.status == 180));
    assert_eq!(tx.state(), ClientState::Proceeding);
    let busy = reply(&inv, 486);
    tx.handle_response(t0 + Duration::from_secs(2), busy.clone());
    let acts = drain_client(&mut tx);
    let ack = acts.iter().find_map(|a| match a {
        TxAction::Transmit(SipMessage::Request(r)) => Some(r.clone()),
        _ => None,
    });
    let ack = ack.expect("an ACK is sent for the 486");
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(
        ack.headers.get("To").map(|t| t.contains("t9")),
        Some(true),
        "ACK carries the To tag"
    );
    assert!(acts
        .iter()
        .any(|a| matches!(a, TxAction::Response(r) if r.status == 486)));
    // A retransmitted 486 is ACKed again but not passed up.
    tx.handle_response(t0 + Duration::from_secs(3), busy);
    let acts = drain_client(&mut tx);
    assert_eq!(transmits(&acts), 1);
    assert!(!acts.iter().any(|a| matches!(a, TxAction::Response(_))));
    // Timer D (32 s over UDP) ends it.
    tx.handle_timeout(t0 + Duration::from_secs(34));
    assert!(drain_client(&mut tx).contains(&TxAction::Terminated));
}

#[test]
fn invite_client_passes_every_2xx_up_while_accepted() {
    let t0 = crate::clock::epoch();
    let inv = invite();
    let mut tx = ClientTransaction::new(inv.clone(), false, TimerConfig::default(), t0);
    drain_client(&mut tx);
    tx.handle_response(t0, reply(&inv, 200));
    tx.handle_response(t0 + Duration::from_millis(500), reply(&inv, 200));
    let ups = drain_client(&mut tx)
        .iter()
        .filter(|a| matches!(a, TxAction::Response(r) if r.status == 200))
        .count();
    assert_eq!(ups, 2, "the TU ACKs each 2xx (RFC 6026)");
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert!(drain_client(&mut tx).contains(&TxAction::Terminated));
}

#[test]
fn non_invite_client_caps_interval_at_t2() {
    let t0 = crate::clock::epoch();
    let mut tx = ClientTransaction::new(options(), false, TimerConfig::default(), t0);
    drain_client(&mut tx);
    let events = run_client(&mut tx, t0, Duration::from_secs(40));
    let sends: Vec<u64> = events
        .iter()
        .filter(|(_, a)| matches!(a, TxAction::Transmit(_)))
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    assert_eq!(
        &sends[..6],
        &[500, 1500, 3500, 7500, 11500, 15500],
        "E doubles to T2 = 4 s"
    );
    assert!(events
        .iter()
        .any(|(t, a)| *a == TxAction::Timeout && *t == Duration::from_secs(32)));
}

#[test]
fn invite_server_sends_trying_and_absorbs_retransmissions() {
    let t0 = crate::clock::epoch();
    let inv = invite();
    let mut tx = ServerTransaction::new(inv.clone(), false, TimerConfig::default());
    let acts = drain_server(&mut tx);
    assert!(
        matches!(acts.as_slice(), [TxAction::Transmit(SipMessage::Response(r))] if r.status == 100)
    );
    tx.respond(t0, reply(&inv, 180));
    drain_server(&mut tx);
    tx.handle_request(t0 + Duration::from_millis(500), &inv);
    assert!(
        matches!(drain_server(&mut tx).as_slice(), [TxAction::Transmit(SipMessage::Response(r))] if r.status == 180)
    );
}

#[test]
fn invite_server_error_retransmits_until_ack() {
    let t0 = crate::clock::epoch();
    let inv = invite();
    let mut tx = ServerTransaction::new(inv.clone(), false, TimerConfig::default());
    drain_server(&mut tx);
    tx.respond(t0, reply(&inv, 403));
    drain_server(&mut tx);
    // Timer G: 0.5, 1.5 s ...
    tx.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(transmits(&drain_server(&mut tx)), 1);
    tx.handle_timeout(t0 + Duration::from_millis(1500));
    assert_eq!(transmits(&drain_server(&mut tx)), 1);
    let ack = request(
        &invite_text()
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK"),
    );
    tx.handle_request(t0 + Duration::from_secs(2), &ack);
    assert_eq!(tx.state(), ServerState::Confirmed);
    tx.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(
        transmits(&drain_server(&mut tx)),
        0,
        "no more retransmissions after the ACK"
    );
    tx.handle_timeout(t0 + Duration::from_secs(7));
    assert!(tx.is_terminated(), "Timer I (T4) ends it");
}

#[test]
fn invite_server_gives_up_without_ack() {
    let t0 = crate::clock::epoch();
    let inv = invite();
    let mut tx = ServerTransaction::new(inv.clone(), false, TimerConfig::default());
    tx.respond(t0, reply(&inv, 486));
    while let Some(at) = tx.poll_timeout() {
        tx.handle_timeout(at);
    }
    assert!(tx.is_terminated());
}

#[test]
fn invite_server_2xx_retransmitted_until_ack_else_ack_timeout() {
    let t0 = crate::clock::epoch();
    let inv = invite();
    let mut tx = ServerTransaction::new(inv.clone(), false, TimerConfig::default());
    drain_server(&mut tx);
    tx.respond(t0, reply(&inv, 200));
    drain_server(&mut tx);
    let mut acts = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        tx.handle_timeout(at);
        acts.extend(drain_server(&mut tx));
    }
    assert!(
        transmits(&acts) >= 7,
        "2xx retransmitted: {}",
        transmits(&acts)
    );
    assert!(acts.contains(&TxAction::AckTimeout));
    // With the ACK, no timeout.
    let mut tx = ServerTransaction::new(inv.clone(), false, TimerConfig::default());
    tx.respond(t0, reply(&inv, 200));
    tx.ack_received();
    drain_server(&mut tx);
    let mut acts = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        tx.handle_timeout(at);
        acts.extend(drain_server(&mut tx));
    }
    assert!(!acts.contains(&TxAction::AckTimeout));
    assert_eq!(transmits(&acts), 0);
    assert!(tx.is_terminated());
}

#[test]
fn non_invite_server_answers_retransmissions_then_expires() {
    let t0 = crate::clock::epoch();
    let opt = options();
    let mut tx = ServerTransaction::new(opt.clone(), false, TimerConfig::default());
    assert!(drain_server(&mut tx).is_empty(), "no 100 for non-INVITE");
    tx.respond(t0, reply(&opt, 200));
    drain_server(&mut tx);
    tx.handle_request(t0 + Duration::from_secs(1), &opt);
    assert_eq!(transmits(&drain_server(&mut tx)), 1);
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert!(tx.is_terminated(), "Timer J = 64*T1");
}

#[test]
fn keys_match_ack_to_invite_and_responses_to_requests() {
    let inv = invite();
    let ack = request(
        &invite_text()
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK"),
    );
    assert_eq!(TxKey::of_request(&inv), TxKey::of_request(&ack));
    assert_eq!(
        TxKey::of_request(&inv),
        TxKey::of_response(&reply(&inv, 180))
    );
    let cancel = inv.cancel_for().unwrap();
    assert_ne!(
        TxKey::of_request(&inv),
        TxKey::of_request(&cancel),
        "CANCEL is its own transaction"
    );
    let old = request(&invite_text().replace("branch=z9hG4bK-abc", "branch=1234"));
    assert_eq!(
        TxKey::of_request(&old),
        None,
        "pre-RFC 3261 branches are not served"
    );
}

#[test]
fn one_slot_per_timer() {
    crate::timers::check_slots::<Timer>();
}
