//! The tokio task that drives one listener's [`Peer`]: its UDP sockets (one per host
//! candidate of its answer), the call's tap and the timer, until the browser goes away, the call ends (the tap closes) or the
//! listener is deleted.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Instrument};

use super::peer::{Closed, Datagram, Forwarded, Peer};
use super::MonitorStats;
use crate::clock::Clock;
use crate::media::engine::TapPacket;

/// Why a listener ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `DELETE .../listen/{id}` (or the gateway dropped the listener).
    Deleted,
    /// The call ended: its media, and with it the tap, is gone.
    CallEnded,
    /// The browser went away or never came.
    Peer(Closed),
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Deleted => "deleted",
            Ended::CallEnded => "call_ended",
            Ended::Peer(c) => c.as_str(),
        }
    }
}

/// Everything one listener task owns.
pub(super) struct Listener {
    pub peer: Peer,
    /// Each local candidate with its socket; the first is the one advertised as
    /// `rtp.advertised_ip`, bound on `rtp.listen_ip`.
    pub sockets: Vec<(SocketAddr, UdpSocket)>,
    pub taps: mpsc::Receiver<TapPacket>,
    pub stop: oneshot::Receiver<()>,
    pub clock: Arc<dyn Clock>,
    pub stats: Arc<MonitorStats>,
}

impl Listener {
    /// Runs in a span naming the listener and the call; returns why it ended.
    pub(super) async fn run(self, listener_id: String, call_id: String) -> Ended {
        let span = tracing::info_span!("listener", id = %listener_id, call = %call_id);
        async move {
            let ended = self.drive().await;
            info!(reason = ended.as_str(), "listener ended");
            ended
        }
        .instrument(span)
        .await
    }

    async fn drive(mut self) -> Ended {
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::new();
        // The socket polled first, moved on each time so that none is starved.
        let mut first = 0usize;
        loop {
            let deadline = self.peer.poll(&mut out);
            self.send(&mut out).await;
            if let Some(c) = self.peer.closed() {
                return Ended::Peer(c);
            }
            // The peer's deadline is on the injected clock: sleep on it too.
            let sleep = self.clock.sleep_until(deadline);
            tokio::select! {
                biased;
                _ = &mut self.stop => return Ended::Deleted,
                p = self.taps.recv() => match p {
                    Some(p) => self.forward(&p),
                    None => return Ended::CallEnded,
                },
                (to, r) = recv_any(&self.sockets, first, &mut buf) => match r {
                    Ok((n, from)) => {
                        first = first.wrapping_add(1);
                        self.datagram(from, to, buf.get(..n).unwrap_or_default());
                    }
                    // ICMP errors surface here on some systems; the peer's own timeouts
                    // decide whether the browser is gone.
                    Err(e) => warn!(error = %e, "listener socket receive failed"),
                },
                () = sleep => self.peer.on_timeout(self.clock.now()),
            }
        }
    }

    fn datagram(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let now = self.clock.now();
        self.peer.on_datagram(now, from, to, bytes);
    }

    fn forward(&mut self, p: &TapPacket) {
        match self.peer.on_tap(p) {
            Forwarded::Sent => {
                self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
            }
            Forwarded::Refused => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Forwarded::Skipped => {}
        }
    }

    async fn send(&mut self, out: &mut Vec<Datagram>) {
        for d in out.drain(..) {
            // From the socket of the candidate the browser reached (str0m answers from
            // the candidate a check arrived on).
            let socket = self
                .sockets
                .iter()
                .find(|(a, _)| *a == d.from)
                .or(self.sockets.first())
                .map(|(_, s)| s);
            let Some(socket) = socket else { return };
            if let Err(e) = socket.send_to(&d.bytes, d.to).await {
                tracing::debug!(error = %e, to = %d.to, "listener send failed");
            }
        }
    }
}

/// The next datagram on any of `sockets` (polled from `first` on, round the list): the
/// local candidate it arrived for, and its length and source.
async fn recv_any(
    sockets: &[(SocketAddr, UdpSocket)],
    first: usize,
    buf: &mut [u8],
) -> (SocketAddr, std::io::Result<(usize, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        let n = sockets.len();
        for k in 0..n {
            let Some((local, socket)) = sockets.get((first + k) % n) else {
                continue;
            };
            let mut read = ReadBuf::new(&mut *buf);
            if let Poll::Ready(r) = socket.poll_recv_from(cx, &mut read) {
                let len = read.filled().len();
                return Poll::Ready((*local, r.map(|from| (len, from))));
            }
        }
        Poll::Pending
    })
    .await
}
