//! The SIP transport driver on real sockets (127.0.0.1, port 0).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use sallyport::clock::{Clock, ManualClock};
use sallyport::config::SipConfig;
use sallyport::sip::message::{parse, parse_datagram, Response, SipMessage};
use sallyport::sip::transaction::TimerConfig;
use sallyport::sip::transport::{DriverOptions, Event, SipDriver, SipHandle, Transport, TxKey};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;

fn config(rate: u32) -> SipConfig {
    SipConfig {
        udp_listen: "127.0.0.1:0".parse().unwrap(),
        tcp_listen: "127.0.0.1:0".parse().unwrap(),
        max_requests_per_second: rate,
        ..SipConfig::default()
    }
}

async fn start(rate: u32) -> (SipHandle, mpsc::Receiver<Event>) {
    let opts = DriverOptions {
        timers: TimerConfig {
            t1: Duration::from_millis(10),
            t2: Duration::from_millis(40),
            t4: Duration::from_millis(50),
        },
        ..DriverOptions::default()
    };
    SipDriver::start_with(&config(rate), opts).await.unwrap()
}

/// A request with a sent-by that is not where it comes from, asking for rport.
fn request(method: &str, branch: &str, transport: &str) -> String {
    format!(
        "{method} sip:gw@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/{transport} 192.0.2.9:5999;branch=z9hG4bK{branch};rport\r\n\
From: <sip:handset@example.org>;tag=f{branch}\r\n\
To: <sip:gw@example.org>\r\n\
Call-ID: call-{branch}@example.org\r\n\
CSeq: 1 {method}\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    )
}

async fn recv_response(sock: &UdpSocket, wait: Duration) -> Option<Response> {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = timeout(wait, sock.recv_from(&mut buf)).await.ok()?.ok()?;
    match parse_datagram(&buf[..n]).ok()? {
        SipMessage::Response(r) => Some(r),
        SipMessage::Request(_) => None,
    }
}

async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    timeout(Duration::from_secs(3), events.recv())
        .await
        .expect("event in time")
        .expect("driver alive")
}

/// Whether a datagram reaches `sock` within `wait` (zero: one is already queued).
async fn datagram_within(sock: &UdpSocket, wait: Duration) -> bool {
    let mut buf = vec![0u8; 65_535];
    timeout(wait, sock.recv_from(&mut buf)).await.is_ok()
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn udp_options_reaches_the_tu_and_its_200_returns_to_the_sender() {
    let (handle, mut events) = start(100).await;
    assert_ne!(handle.local_udp_addr().port(), 0);
    assert_ne!(handle.local_tcp_addr().port(), 0);
    let sock = client().await;
    let me = sock.local_addr().unwrap();
    let raw = request("OPTIONS", "opt1", "UDP");
    sock.send_to(raw.as_bytes(), handle.local_udp_addr())
        .await
        .unwrap();
    let Event::Request {
        key,
        request,
        source,
        transport,
    } = next_event(&mut events).await
    else {
        panic!("expected a request")
    };
    assert_eq!(source, me);
    assert_eq!(transport, Transport::Udp);
    let via = request.headers.top_via().unwrap();
    assert_eq!(via.received(), Some("127.0.0.1"));
    assert_eq!(via.rport(), Some(Some(me.port())));
    let ok = Response::for_request(&request, 200, "OK").with_to_tag("gw1");
    handle.respond(key, ok).await.unwrap();
    let resp = recv_response(&sock, Duration::from_secs(2)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(handle.stats().snapshot().sent >= 1);
}

#[tokio::test]
async fn retransmitted_invite_gets_the_last_provisional_without_a_second_event() {
    let (handle, mut events) = start(100).await;
    let sock = client().await;
    let raw = request("INVITE", "inv1", "UDP");
    let gw = handle.local_udp_addr();
    sock.send_to(raw.as_bytes(), gw).await.unwrap();
    let trying = recv_response(&sock, Duration::from_secs(2)).await.unwrap();
    assert_eq!(trying.status, 100);
    let Event::Request { key, request, .. } = next_event(&mut events).await else {
        panic!("expected the INVITE")
    };
    let ringing = Response::for_request(&request, 180, "Ringing").with_to_tag("gw2");
    handle.respond(key, ringing).await.unwrap();
    assert_eq!(
        recv_response(&sock, Duration::from_secs(2))
            .await
            .unwrap()
            .status,
        180
    );
    sock.send_to(raw.as_bytes(), gw).await.unwrap();
    assert_eq!(
        recv_response(&sock, Duration::from_secs(2))
            .await
            .unwrap()
            .status,
        180
    );
    let again = timeout(Duration::from_millis(300), events.recv()).await;
    assert!(again.is_err(), "a retransmission must not reach the TU");
}

#[tokio::test]
async fn garbage_is_dropped_and_a_malformed_request_gets_400() {
    let (handle, mut events) = start(100).await;
    let sock = client().await;
    let gw = handle.local_udp_addr();
    sock.send_to(b"\x00\x01 this is not SIP \xff", gw)
        .await
        .unwrap();
    assert!(recv_response(&sock, Duration::from_millis(300))
        .await
        .is_none());
    // Every header present, but the CSeq method disagrees with the request's.
    let bad = request("OPTIONS", "bad1", "UDP").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    sock.send_to(bad.as_bytes(), gw).await.unwrap();
    let resp = recv_response(&sock, Duration::from_secs(2)).await.unwrap();
    assert_eq!(resp.status, 400);
    assert!(timeout(Duration::from_millis(200), events.recv())
        .await
        .is_err());
    let stats = handle.stats().snapshot();
    assert_eq!(stats.malformed_400, 1);
    assert_eq!(stats.dropped, 1);
}

/// Datagrams queued faster than the driver reads them all reach the TU: the driver reads
/// a batch at a time, and a batch's end must not read one more and drop it (it did, one
/// per full batch, so under load a request waited for its sender's retransmission).
#[tokio::test]
async fn a_burst_of_queued_requests_all_reach_the_tu() {
    let (handle, mut events) = start(0).await;
    let gw = handle.local_udp_addr();
    // A blocking socket: every send completes before the driver's task (on this test's
    // one thread) runs, so all of them wait in the driver's queue, several batches deep.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    const N: usize = 100;
    for i in 0..N {
        let raw = request("OPTIONS", &format!("burst{i}"), "UDP");
        sock.send_to(raw.as_bytes(), gw).unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N {
        match timeout(Duration::from_secs(2), events.recv()).await {
            Ok(Some(Event::Request { request, .. })) => {
                seen.insert(request.headers.call_id().unwrap().to_string());
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(seen.len(), N, "every queued request reaches the TU");
    assert_eq!(handle.stats().snapshot().received, N as u64);
}

#[tokio::test]
async fn a_flood_gets_503_with_retry_after() {
    let (handle, mut events) = start(20).await;
    let sock = client().await;
    let gw = handle.local_udp_addr();
    for i in 0..200 {
        let raw = request("OPTIONS", &format!("flood{i}"), "UDP");
        sock.send_to(raw.as_bytes(), gw).await.unwrap();
    }
    let mut unavailable = 0;
    while let Some(resp) = recv_response(&sock, Duration::from_millis(500)).await {
        if resp.status == 503 {
            let ra = resp.headers.retry_after().unwrap().unwrap();
            assert!(ra.seconds >= 1);
            unavailable += 1;
        }
    }
    let mut admitted = 0;
    while let Ok(Some(_)) = timeout(Duration::from_millis(100), events.recv()).await {
        admitted += 1;
    }
    let stats = handle.stats().snapshot();
    assert!(unavailable >= 100, "503s: {unavailable}");
    assert!((20..=60).contains(&admitted), "admitted: {admitted}");
    assert!(stats.throttled_503 >= unavailable as u64);
}

async fn read_tcp_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Response {
    loop {
        if let Ok(p) = parse(buf) {
            buf.drain(..p.consumed);
            if let SipMessage::Response(r) = p.message {
                return r;
            }
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(Duration::from_secs(2), stream.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn answer_ok(handle: &SipHandle, events: &mut mpsc::Receiver<Event>) -> Transport {
    let Event::Request {
        key,
        request,
        transport,
        ..
    } = next_event(events).await
    else {
        panic!("expected a request")
    };
    let ok = Response::for_request(&request, 200, "OK").with_to_tag("t");
    handle.respond(key, ok).await.unwrap();
    transport
}

#[tokio::test]
async fn tcp_frames_two_messages_in_one_write_and_one_split_across_writes() {
    let (handle, mut events) = start(100).await;
    let mut stream = TcpStream::connect(handle.local_tcp_addr()).await.unwrap();
    let two = request("OPTIONS", "tcp1", "TCP") + &request("OPTIONS", "tcp2", "TCP");
    stream.write_all(two.as_bytes()).await.unwrap();
    let t1 = answer_ok(&handle, &mut events).await;
    let t2 = answer_ok(&handle, &mut events).await;
    assert!(matches!(t1, Transport::Tcp(Some(_))));
    assert_eq!(t1, t2);
    let mut buf = Vec::new();
    assert_eq!(read_tcp_response(&mut stream, &mut buf).await.status, 200);
    assert_eq!(read_tcp_response(&mut stream, &mut buf).await.status, 200);

    let split = request("OPTIONS", "tcp3", "TCP");
    let (a, b) = split.as_bytes().split_at(split.len() / 2);
    stream.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b).await.unwrap();
    answer_ok(&handle, &mut events).await;
    assert_eq!(read_tcp_response(&mut stream, &mut buf).await.status, 200);
}

#[tokio::test]
async fn tcp_framing_error_gets_400_then_close() {
    let (handle, _events) = start(100).await;
    let mut stream = TcpStream::connect(handle.local_tcp_addr()).await.unwrap();
    let bad = request("OPTIONS", "tcpbad", "TCP").replace("Content-Length: 0", "Content-Length: x");
    stream.write_all(bad.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_tcp_response(&mut stream, &mut buf).await.status, 400);
    let mut rest = [0u8; 64];
    let n = timeout(Duration::from_secs(2), stream.read(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed");
}

/// Sends an OPTIONS (Call-ID `call_id`) from the gateway to `peer` over UDP; its key.
async fn options_to(handle: &SipHandle, peer: &UdpSocket, call_id: &str) -> TxKey {
    let raw = request("OPTIONS", call_id, "UDP");
    let SipMessage::Request(req) = parse_datagram(raw.as_bytes()).unwrap() else {
        panic!()
    };
    let dest: SocketAddr = peer.local_addr().unwrap();
    handle
        .send_request(req, dest, Transport::Udp)
        .await
        .unwrap()
}

#[tokio::test]
async fn client_transaction_to_a_silent_peer_times_out() {
    let (handle, mut events) = start(100).await;
    let silent = client().await;
    let key = options_to(&handle, &silent, "out1").await;
    let ev = next_event(&mut events).await;
    assert_eq!(ev, Event::Timeout { key });
    let mut copies = 0;
    let mut buf = vec![0u8; 65_535];
    while let Ok(Ok(_)) = timeout(Duration::from_millis(50), silent.recv_from(&mut buf)).await {
        copies += 1;
    }
    assert!(copies >= 3, "retransmissions seen: {copies}");
}

/// The driver runs its transactions on the injected clock: a client transaction's Timer E
/// (retransmit) and Timer F (give up) fire when a `ManualClock` is advanced to them, and
/// not when real time passes them.
#[tokio::test]
async fn client_transaction_timers_fire_on_the_injected_clock() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let t1 = Duration::from_millis(10);
    let opts = DriverOptions {
        timers: TimerConfig {
            t1,
            t2: Duration::from_millis(40),
            t4: Duration::from_millis(50),
        },
        clock: clock.clone() as Arc<dyn Clock>,
        ..DriverOptions::default()
    };
    let (handle, mut events) = SipDriver::start_with(&config(100), opts).await.unwrap();
    let silent = client().await;
    let key = options_to(&handle, &silent, "manual1").await;
    let secs = Duration::from_secs(3);
    assert!(
        datagram_within(&silent, secs).await,
        "the request goes out at once"
    );

    // On the real clock Timer E (T1 = 10 ms, doubling up to T2) would have fired over a
    // dozen times and Timer F (64·T1 = 640 ms) once by now: on a stopped clock, never.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !datagram_within(&silent, Duration::ZERO).await,
        "no retransmission while the clock stands still"
    );
    assert!(
        events.try_recv().is_err(),
        "no timeout while the clock stands still"
    );

    // Timer E: advancing the clock by T1 sends the first retransmission.
    clock.advance(t1);
    assert!(
        datagram_within(&silent, secs).await,
        "Timer E fired on the advance"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        events.try_recv().is_err(),
        "Timer F is not due yet on the clock"
    );

    // Timer F: advancing past 64·T1 gives the transaction up.
    clock.advance(t1 * 64);
    assert_eq!(next_event(&mut events).await, Event::Timeout { key });
}

const SIPP_OPTIONS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options">
  <send retrans="500">
    <![CDATA[
OPTIONS sip:gw@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]
To: <sip:gw@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

#[tokio::test]
async fn sipp_options_are_answered() {
    if std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_err()
    {
        sallyport::db::testing::skip_or_fail("sipp is not installed: sipp test skipped");
        return;
    }
    let (handle, mut events) = start(100).await;
    let tu = handle.clone();
    tokio::spawn(async move {
        while let Some(Event::Request { key, request, .. }) = events.recv().await {
            let ok = Response::for_request(&request, 200, "OK").with_to_tag("s");
            let _ = tu.respond(key, ok).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("options.xml");
    std::fs::write(&xml, SIPP_OPTIONS).unwrap();
    let port = client().await.local_addr().unwrap().port();
    let target = handle.local_udp_addr().to_string();
    let xml = xml.to_str().unwrap().to_owned();
    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sipp")
            .args(["-sf", &xml, "-m", "5", "-t", "u1", "-i", "127.0.0.1"])
            .args([
                "-p",
                &port.to_string(),
                "-timeout",
                "15s",
                "-nostdin",
                &target,
            ])
            .current_dir(cwd)
            .output()
    });
    let out = timeout(Duration::from_secs(30), out)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
