//! One task per TCP connection: a framing read loop and a write loop over
//! a bounded channel, with only tokio's `net` feature (`try_read`/`try_write`).
//!
//! What bounds a connection here (the driver bounds how many there are):
//! - bytes are read straight into the framer's buffer, at most
//!   [`READ_CHUNK`] at a time, so an idle connection holds no buffer at all;
//! - a message must be complete within the message timeout of its first
//!   byte (slow-loris), else the connection is closed;
//! - a connection may hold [`FREE_BYTES`] of an unfinished message on its
//!   own; beyond that it draws on the shared [`BufferPool`] and is closed
//!   when the pool has nothing left to give;
//! - every complete message, keep-alive ping and write stamps the
//!   connection's [`Activity`], which the driver's idle sweep reads.

use super::framing::{Frame, StreamFramer};
use super::{ConnId, TransportStats};
use crate::sip::message::{Response, SipMessage, PONG};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

/// What connection tasks tell the driver.
#[derive(Debug)]
pub(super) enum ConnInput {
    /// A framed message.
    Message {
        conn: ConnId,
        peer: SocketAddr,
        msg: SipMessage,
    },
    /// Framing lost: answer (maybe), then close.
    Malformed {
        conn: ConnId,
        peer: SocketAddr,
        response: Option<Response>,
    },
    /// The peer closed, a read failed, an outbound connect failed, or the
    /// connection broke one of its bounds.
    Closed { conn: ConnId, connected: bool },
}

/// Messages queued per connection before writes are dropped.
pub(super) const WRITE_QUEUE: usize = 256;
/// Most bytes read at once.
pub const READ_CHUNK: usize = 4096;
/// Bytes of an unfinished message a connection may hold without the pool:
/// far more than any ordinary request (an INVITE with SDP is about 1.5 KiB).
pub const FREE_BYTES: usize = 8 * 1024;

/// When a connection last did something useful, for the idle sweep.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new(epoch: Instant, now: Instant) -> Activity {
        let a = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
        };
        a.touch_at(now);
        a
    }

    /// Stamps `now` (a complete message, a ping or a write).
    pub(super) fn touch(&self) {
        self.touch_at(Instant::now()); // clock-ok: the transport driver's own idle timer
    }

    fn touch_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The instant of the last stamp.
    pub(super) fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Bytes of unfinished messages beyond [`FREE_BYTES`] that all connections
/// may hold together; its level is [`TransportStats::tcp_pool_bytes`].
#[derive(Debug)]
pub struct BufferPool {
    limit: u64,
    stats: Arc<TransportStats>,
}

impl BufferPool {
    pub fn new(limit: u64, stats: Arc<TransportStats>) -> BufferPool {
        BufferPool { limit, stats }
    }

    /// Takes `n` bytes if the pool has them.
    pub fn try_take(&self, n: usize) -> bool {
        let n = n as u64;
        self.stats
            .tcp_pool_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Gives `n` bytes back.
    pub fn give(&self, n: usize) {
        let n = n as u64;
        let _ =
            self.stats
                .tcp_pool_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    Some(used.saturating_sub(n))
                });
    }
}

/// A connection's share of the pool, given back when it drops.
struct PoolShare {
    pool: Arc<BufferPool>,
    held: usize,
}

impl PoolShare {
    /// Holds exactly what `buffered` bytes need beyond [`FREE_BYTES`]; false
    /// when the pool cannot give it.
    fn cover(&mut self, buffered: usize) -> bool {
        let need = buffered.saturating_sub(FREE_BYTES);
        if need > self.held {
            if !self.pool.try_take(need - self.held) {
                return false;
            }
        } else {
            self.pool.give(self.held - need);
        }
        self.held = need;
        true
    }
}

impl Drop for PoolShare {
    fn drop(&mut self) {
        self.pool.give(self.held);
    }
}

/// What a connection task needs besides its socket.
pub(super) struct ConnContext {
    pub conn: ConnId,
    pub peer: SocketAddr,
    pub out_rx: mpsc::Receiver<Vec<u8>>,
    pub pong: mpsc::Sender<Vec<u8>>,
    pub to_driver: mpsc::Sender<ConnInput>,
    pub activity: Arc<Activity>,
    pub pool: Arc<BufferPool>,
    pub message_timeout: Duration,
    pub stats: Arc<TransportStats>,
}

/// Runs an accepted connection until both directions end.
pub(super) async fn run(stream: TcpStream, ctx: ConnContext) {
    let (read, write) = stream.into_split();
    let ConnContext {
        conn,
        peer,
        out_rx,
        pong,
        to_driver,
        activity,
        pool,
        message_timeout,
        stats,
    } = ctx;
    let reader = Reader {
        conn,
        peer,
        pong,
        to_driver,
        activity: activity.clone(),
        share: PoolShare { pool, held: 0 },
        message_timeout,
        stats,
    };
    let writer = write_loop(write, out_rx, activity);
    tokio::join!(reader.run(read), writer);
}

/// Connects to `peer`, then runs like an accepted connection.
pub(super) async fn connect_and_run(ctx: ConnContext) {
    match TcpStream::connect(ctx.peer).await {
        Ok(stream) => run(stream, ctx).await,
        Err(e) => {
            debug!(peer = %ctx.peer, error = %e, "SIP TCP connect failed");
            let closed = ConnInput::Closed {
                conn: ctx.conn,
                connected: false,
            };
            let _ = ctx.to_driver.send(closed).await;
        }
    }
}

/// Why a read loop stopped.
enum Stop {
    /// The peer closed or the socket failed.
    Eof,
    /// A message took longer than the message timeout.
    Slow,
    /// The buffer pool had nothing left for this connection.
    Pool,
    /// Framing was lost (the driver has been told) or the driver is gone.
    Done,
}

struct Reader {
    conn: ConnId,
    peer: SocketAddr,
    pong: mpsc::Sender<Vec<u8>>,
    to_driver: mpsc::Sender<ConnInput>,
    activity: Arc<Activity>,
    share: PoolShare,
    message_timeout: Duration,
    stats: Arc<TransportStats>,
}

impl Reader {
    async fn run(mut self, read: OwnedReadHalf) {
        let mut framer = StreamFramer::new();
        let stop = self.read_loop(&read, &mut framer).await;
        match stop {
            Stop::Done => return,
            Stop::Eof => {}
            Stop::Slow => {
                TransportStats::bump(&self.stats.tcp_closed_slow);
                debug!(peer = %self.peer, buffered = framer.buffered(), "SIP TCP message too slow: closing");
            }
            Stop::Pool => {
                TransportStats::bump(&self.stats.tcp_closed_buffer);
                debug!(peer = %self.peer, buffered = framer.buffered(), "SIP TCP buffer pool exhausted: closing");
            }
        }
        let closed = ConnInput::Closed {
            conn: self.conn,
            connected: true,
        };
        let _ = self.to_driver.send(closed).await;
    }

    async fn read_loop(&mut self, read: &OwnedReadHalf, framer: &mut StreamFramer) -> Stop {
        // Set when the first byte of an unfinished message arrived.
        let mut started: Option<tokio::time::Instant> = None;
        loop {
            let want = framer.room().min(READ_CHUNK);
            if !self.share.cover(framer.buffered() + want) {
                return Stop::Pool;
            }
            let filled = match started {
                None => fill(read, framer, want).await,
                Some(t) => {
                    let deadline = t + self.message_timeout;
                    match tokio::time::timeout_at(deadline, fill(read, framer, want)).await {
                        Ok(r) => r,
                        Err(_) => return Stop::Slow,
                    }
                }
            };
            match filled {
                Ok(0) | Err(_) => return Stop::Eof,
                Ok(_) => {}
            }
            if !self.drain(framer).await {
                return Stop::Done;
            }
            framer.shrink();
            started = match (framer.holds_message(), started) {
                (false, _) => None,
                (true, None) => Some(tokio::time::Instant::now()), // clock-ok: the slow-loris timer
                (true, s) => s,
            };
            // Give back what the drained messages no longer need.
            self.share.cover(framer.buffered());
        }
    }

    /// Sends every complete frame to the driver; false when the connection must close.
    async fn drain(&mut self, framer: &mut StreamFramer) -> bool {
        loop {
            let input = match framer.next_frame() {
                Frame::NeedMore => return true,
                Frame::Ping => {
                    self.activity.touch();
                    let _ = self.pong.try_send(PONG.to_vec());
                    continue;
                }
                Frame::Message(msg) => {
                    self.activity.touch();
                    ConnInput::Message {
                        conn: self.conn,
                        peer: self.peer,
                        msg,
                    }
                }
                Frame::Malformed { response, .. } => {
                    let input = ConnInput::Malformed {
                        conn: self.conn,
                        peer: self.peer,
                        response,
                    };
                    let _ = self.to_driver.send(input).await;
                    return false;
                }
            };
            if self.to_driver.send(input).await.is_err() {
                return false;
            }
        }
    }
}

/// Reads up to `want` bytes into the framer.
async fn fill(read: &OwnedReadHalf, framer: &mut StreamFramer, want: usize) -> io::Result<usize> {
    if want == 0 {
        return Ok(0);
    }
    loop {
        read.readable().await?;
        match framer.fill_with(want, |buf| read.try_read(buf)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_loop(
    write: OwnedWriteHalf,
    mut out_rx: mpsc::Receiver<Vec<u8>>,
    activity: Arc<Activity>,
) {
    while let Some(bytes) = out_rx.recv().await {
        if write_all(&write, &bytes).await.is_err() {
            break;
        }
        activity.touch();
    }
    // Dropping the write half shuts the write direction down (FIN).
}

async fn write_all(write: &OwnedWriteHalf, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        write.writable().await?;
        match write.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or(&[]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
