//! What a flood of HTTP connections can take from the API (`sallyport::api::serve`):
//! a source past its share is closed at once and others are still served; a slow or idle
//! client is disconnected when its head's deadline passes; past the total cap new
//! connections wait until one closes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use sallyport::api::serve::{serve, HttpLimits};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn start(limits: HttpLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A connection from `source` (any 127.x.y.z address is loopback on Linux).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((source, 0))).unwrap();
    s.connect(to).await.unwrap()
}

/// One GET /peer on `conn`; the body, or None when the server closed the connection.
async fn get_peer(conn: &mut TcpStream) -> Option<String> {
    let req = "GET /peer HTTP/1.1\r\nHost: x\r\n\r\n";
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return None;
    }
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// Whether the server has closed `conn` (EOF or reset) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected data"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn one_source_cannot_take_the_api_from_the_others() {
    let (addr, _stop) = start(HttpLimits {
        max_connections: 100,
        max_per_source: 3,
        header_timeout: Duration::from_secs(30),
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from([127, 0, 0, 7], addr).await;
        assert_eq!(get_peer(&mut c).await.as_deref(), Some("127.0.0.7"));
        held.push(c);
    }
    // The fourth from that source is closed unanswered ...
    let mut fourth = connect_from([127, 0, 0, 7], addr).await;
    assert_eq!(get_peer(&mut fourth).await, None);
    // ... while another source is served, and the peer address reaches the handler.
    let mut other = connect_from([127, 0, 0, 8], addr).await;
    assert_eq!(get_peer(&mut other).await.as_deref(), Some("127.0.0.8"));
    // A closed connection gives its place back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut c = connect_from([127, 0, 0, 7], addr).await;
        if get_peer(&mut c).await.is_some() {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed place was never given back");
}

#[tokio::test]
async fn slow_and_idle_clients_are_disconnected_at_the_deadline() {
    let (addr, _stop) = start(HttpLimits {
        max_connections: 100,
        max_per_source: 100,
        header_timeout: Duration::from_secs(1),
    })
    .await;
    // A head trickled in (slowloris) ...
    let mut slow = connect_from([127, 0, 0, 9], addr).await;
    slow.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // ... a connection that never sends a byte ...
    let mut silent = connect_from([127, 0, 0, 9], addr).await;
    // ... and one kept alive after its request.
    let mut kept = connect_from([127, 0, 0, 9], addr).await;
    assert!(get_peer(&mut kept).await.is_some());
    for (name, c) in [
        ("slow", &mut slow),
        ("silent", &mut silent),
        ("kept", &mut kept),
    ] {
        assert!(
            closed_within(c, Duration::from_secs(4)).await,
            "{name} connection still open past the deadline"
        );
    }
}

#[tokio::test]
async fn past_the_total_new_connections_wait_for_a_place() {
    let (addr, _stop) = start(HttpLimits {
        max_connections: 2,
        max_per_source: 2,
        header_timeout: Duration::from_secs(30),
    })
    .await;
    let mut a = connect_from([127, 0, 0, 10], addr).await;
    let mut b = connect_from([127, 0, 0, 11], addr).await;
    assert!(get_peer(&mut a).await.is_some() && get_peer(&mut b).await.is_some());
    // A third connects (the kernel's backlog) but is not served while both are held.
    let mut c = connect_from([127, 0, 0, 12], addr).await;
    c.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf))
            .await
            .is_err(),
        "served past the cap"
    );
    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("never served after a place was freed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("127.0.0.12"));
}
