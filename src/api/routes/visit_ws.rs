//! `GET /api/v1/visit-session/ws`: the WebSocket a visit page (the visitor's or the
//! kiosk's) holds with the gateway while the visit lasts.
//!
//! The first message must be `hello` with the page's pass (browsers cannot put a header on
//! a WebSocket, and a URL would carry the pass into logs), within [`HELLO_WITHIN`]. The
//! pass is checked as `GET /visit-session` checks it (signed by this gateway, the visit
//! approved, inside its window); the page is then attached to the visit's task on this
//! node (started if it is the first page), and what it sends and what the task answers
//! flow through until either side ends. Refusals are an `error` message with the pass's
//! code, then the close: nothing changes. Message formats: `crate::visit::signal`.

use crate::api::AppState;
use crate::store::StoreError;
use crate::visit::pass::{self, PassRefusal};
use crate::visit::signal::{self, FromPage, SignalError, ToPage};
use crate::visit::task::VisitInput;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long a page has to say `hello`.
pub(crate) const HELLO_WITHIN: Duration = Duration::from_secs(10);

pub(crate) async fn socket(State(s): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let Some(live) = s.gateway.as_ref().and_then(|g| g.visits.clone()) else {
        return crate::api::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "visits_unavailable",
            "this node does not run video visits",
        )
        .into_response();
    };
    ws.max_message_size(signal::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| page(s, live, socket))
}

fn refusal(code: &str, message: &str) -> Message {
    Message::Text(
        ToPage::Error {
            code: code.to_string(),
            message: message.to_string(),
        }
        .encode()
        .into(),
    )
}

async fn refuse(mut socket: WebSocket, code: &str, message: &str) {
    let _ = socket.send(refusal(code, message)).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn page(s: AppState, live: crate::visit::live::LiveVisits, mut socket: WebSocket) {
    let credential = match tokio::time::timeout(HELLO_WITHIN, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => match signal::decode(&t) {
            Ok(FromPage::Hello { credential }) => credential,
            Ok(_) => return refuse(socket, "hello_first", "the first message must be hello").await,
            Err(e) => return refuse(socket, e.code(), &e.to_string()).await,
        },
        Ok(Some(Ok(Message::Binary(_)))) => {
            let e = SignalError::NotText;
            return refuse(socket, e.code(), &e.to_string()).await;
        }
        Err(_) => return refuse(socket, "hello_timeout", "no hello in time").await,
        _ => return,
    };
    let p = match pass::open(&s.pass_key, &credential) {
        Ok(p) => p,
        Err(r) => return refuse(socket, r.code(), &r.to_string()).await,
    };
    let v = match s.store.visit(&p.visit_id).await {
        Ok(v) => v,
        Err(StoreError::NotFound { .. }) => {
            let r = PassRefusal::Invalid;
            return refuse(socket, r.code(), &r.to_string()).await;
        }
        Err(e) => return refuse(socket, "store", &e.to_string()).await,
    };
    let now = s.store.clock().wall();
    if let Err(r) = pass::admit(v.status, p.valid_from, p.expires_at, now) {
        return refuse(socket, r.code(), &r.to_string()).await;
    }
    // A draining node starts no visit; a page of a visit running here still joins.
    let draining = s.gateway.as_ref().is_some_and(|g| g.health.draining());
    if draining && !live.contains(&v.id) {
        let why = "this node is draining: join the visit through another node";
        return refuse(socket, "node_draining", why).await;
    }
    let inputs = match live.attach(&v.id).await {
        Ok(tx) => tx,
        Err(e) => {
            warn!(visit = %v.id, error = %e, "a visit page could not join");
            return refuse(socket, e.code(), &e.to_string()).await;
        }
    };
    let side = p.side;
    info!(visit = %v.id, side = side.as_str(), "a visit page joined");
    let (tx, mut out) = mpsc::channel(64);
    if inputs.send(VisitInput::Attach { side, tx }).await.is_err() {
        return refuse(socket, "visit_over", "the visit has ended").await;
    }
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => match signal::decode(&t) {
                    Ok(FromPage::Hello { .. }) => {}
                    Ok(msg) => {
                        if inputs.send(VisitInput::Page { side, msg }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        if socket.send(refusal(e.code(), &e.to_string())).await.is_err() {
                            break;
                        }
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    let e = SignalError::NotText;
                    if socket.send(refusal(e.code(), &e.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // pings are answered by the library
            },
            m = out.recv() => match m {
                Some(m) => {
                    let ended = matches!(m, ToPage::Ended { .. });
                    if socket.send(Message::Text(m.encode().into())).await.is_err() || ended {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    drop(out); // the task tells this page from a newer one of its side by it
    let _ = inputs.send(VisitInput::Detach { side }).await;
    let _ = socket.send(Message::Close(None)).await;
    info!(visit = %v.id, side = side.as_str(), "a visit page left");
}
