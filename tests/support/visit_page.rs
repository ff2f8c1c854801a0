//! A visit page without a browser: the visit WebSocket (`/api/v1/visit-session/ws`) of
//! the real binary, with a synthetic str0m participant (`sallyport::sfu::synthetic`)
//! sending the test media once the slot opens. Used by the visit tests that need the
//! gateway's side of a visit but not a browser's (`visit_ws`, `visit_watch`,
//! `visit_replay`).

use futures_util::{SinkExt, StreamExt};
use sallyport::sfu::synthetic::{self, Script, SyntheticPeer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A new connection to the visit WebSocket of the gateway at `base_url` (`http://…`).
pub(crate) async fn connect(base_url: &str) -> Socket {
    let url = format!(
        "{}/api/v1/visit-session/ws",
        base_url.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next JSON message (text frames only), waiting up to 120 s.
pub(crate) async fn next_json(ws: &mut Socket) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a message within 120 s")
            .expect("the socket open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

pub(crate) async fn send(ws: &mut Socket, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// One page: hello with `pass`, then (once the slot is open) an offer from a synthetic
/// participant sending `script` for up to `media`; adds one to `connected` when its state
/// first says `connected`; returns every message the page got, up to and including
/// `ended`.
pub(crate) async fn page(
    base_url: String,
    pass: String,
    script: Arc<Script>,
    media: Duration,
    connected: Arc<AtomicUsize>,
) -> Vec<Value> {
    let mut ws = connect(&base_url).await;
    send(&mut ws, json!({ "type": "hello", "credential": pass })).await;
    let mut got = Vec::new();
    let mut player = None;
    let mut counted = false;
    loop {
        let m = next_json(&mut ws).await;
        got.push(m.clone());
        match m["type"].as_str() {
            Some("state") if m["phase"] == "connected" && !counted => {
                counted = true;
                connected.fetch_add(1, Ordering::SeqCst);
            }
            Some("state") if m["phase"] != "lobby" && player.is_none() => {
                let socket = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
                let (mut peer, offer) =
                    SyntheticPeer::offer(socket.local_addr().unwrap(), Instant::now()).unwrap();
                send(&mut ws, json!({ "type": "offer", "sdp": offer })).await;
                let answer = loop {
                    let a = next_json(&mut ws).await;
                    got.push(a.clone());
                    if a["type"] == "answer" {
                        break a["sdp"].as_str().unwrap().to_string();
                    }
                };
                peer.accept_answer(&answer).unwrap();
                player = Some(tokio::spawn(synthetic::run(
                    socket,
                    peer,
                    script.clone(),
                    media,
                    Duration::from_millis(200),
                )));
            }
            Some("ended") => break,
            _ => {}
        }
    }
    if let Some(p) = player {
        p.abort();
    }
    got
}
