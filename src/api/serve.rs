//! The HTTP accept loop: what a flood of connections can take from the API.
//!
//! - **Connections are capped**, in total (`http.max_connections`) and per source address
//!   (`http.max_connections_per_source`). Past the total the loop stops accepting until a
//!   connection closes (the kernel's backlog holds the rest); past a source's share the
//!   new connection is closed at once, so one address cannot take the API from the others.
//! - **Every request head has a deadline** (`http.header_timeout_secs`): a client that
//!   sends its head too slowly, or keeps a connection idle between requests longer than
//!   that, is disconnected. A slow client cannot hold a connection (and its descriptor)
//!   for ever.
//! - **Descriptors run out gracefully**: an accept that fails for want of descriptors
//!   backs off briefly and retries instead of spinning; SIP over TCP leaves a reserve
//!   for the API and media (`sip.tcp_fd_reserve`).
//!
//! Each connection gets the peer's address as [`ConnectInfo`], as axum's own `serve`
//! would give it, and shutdown lets requests in flight finish (up to [`DRAIN`]).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long shutdown waits for requests in flight.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The bounds of `[http]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub header_timeout: Duration,
}

impl HttpLimits {
    pub fn from_config(c: &crate::config::HttpConfig) -> HttpLimits {
        HttpLimits {
            max_connections: c.max_connections.max(1) as usize,
            max_per_source: c.max_connections_per_source.max(1) as usize,
            header_timeout: Duration::from_secs(c.header_timeout_secs.max(1)),
        }
    }
}

/// Connections open per source address.
#[derive(Debug, Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in its source's count, given back when it closes.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self
            .sources
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then lets the
/// requests in flight finish (up to [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources::default());
    // Graceful shutdown by hand: hyper-util's watcher does not take connections that may
    // upgrade (the visit pages' WebSocket). Each connection's task holds `alive`; shutdown
    // tells them through `stop` and waits until every `alive` is gone.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = total.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = sources.take(peer.ip(), limits.max_per_source) else {
            tracing::debug!(%peer, "HTTP connection refused: its source has its share");
            continue; // dropping the stream closes it
        };
        let service =
            app.clone()
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            // The visit pages' WebSocket (`/api/v1/visit-session/ws`) is an upgrade.
            .with_upgrades();
        let (mut stop, alive) = (stop_rx.clone(), alive.clone());
        tokio::spawn(async move {
            let _held = (permit, slot, alive);
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive);
    if tokio::time::timeout(DRAIN, drained.recv()).await.is_err() {
        tracing::warn!("HTTP requests still in flight at shutdown were cut");
    }
}

/// An accept error: out of descriptors (or another transient failure) backs off instead
/// of spinning.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "HTTP accept failed; retrying shortly");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
