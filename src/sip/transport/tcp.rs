//! One task per TCP connection: a framing read loop and a write loop over
//! a bounded channel, with only tokio's `net` feature (`try_read`/`try_write`).

use super::framing::{Frame, StreamFramer};
use super::ConnId;
use crate::sip::message::{Response, SipMessage, PONG};
use std::io;
use std::net::SocketAddr;
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
    /// The peer closed, a read failed, or an outbound connect failed.
    Closed { conn: ConnId, connected: bool },
}

/// Bytes queued per connection before writes are dropped.
pub(super) const WRITE_QUEUE: usize = 256;

/// Runs an accepted connection until both directions end.
pub(super) async fn run(
    conn: ConnId,
    peer: SocketAddr,
    stream: TcpStream,
    out_rx: mpsc::Receiver<Vec<u8>>,
    pong: mpsc::Sender<Vec<u8>>,
    to_driver: mpsc::Sender<ConnInput>,
) {
    let (read, write) = stream.into_split();
    let reader = read_loop(conn, peer, read, pong, to_driver);
    let writer = write_loop(write, out_rx);
    tokio::join!(reader, writer);
}

/// Connects to `peer`, then runs like an accepted connection.
pub(super) async fn connect_and_run(
    conn: ConnId,
    peer: SocketAddr,
    out_rx: mpsc::Receiver<Vec<u8>>,
    pong: mpsc::Sender<Vec<u8>>,
    to_driver: mpsc::Sender<ConnInput>,
) {
    match TcpStream::connect(peer).await {
        Ok(stream) => run(conn, peer, stream, out_rx, pong, to_driver).await,
        Err(e) => {
            debug!(%peer, error = %e, "SIP TCP connect failed");
            let closed = ConnInput::Closed {
                conn,
                connected: false,
            };
            let _ = to_driver.send(closed).await;
        }
    }
}

async fn read_loop(
    conn: ConnId,
    peer: SocketAddr,
    read: OwnedReadHalf,
    pong: mpsc::Sender<Vec<u8>>,
    to_driver: mpsc::Sender<ConnInput>,
) {
    let mut framer = StreamFramer::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let room = framer.room().min(chunk.len());
        let n = match read_some(&read, chunk.get_mut(..room).unwrap_or(&mut [])).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(chunk.get(..n).unwrap_or(&[]));
        if !drain_frames(conn, peer, &mut framer, &pong, &to_driver).await {
            return;
        }
    }
    let closed = ConnInput::Closed {
        conn,
        connected: true,
    };
    let _ = to_driver.send(closed).await;
}

/// Sends every complete frame to the driver; false when the connection must close.
async fn drain_frames(
    conn: ConnId,
    peer: SocketAddr,
    framer: &mut StreamFramer,
    pong: &mpsc::Sender<Vec<u8>>,
    to_driver: &mpsc::Sender<ConnInput>,
) -> bool {
    loop {
        let input = match framer.next_frame() {
            Frame::NeedMore => return true,
            Frame::Ping => {
                let _ = pong.try_send(PONG.to_vec());
                continue;
            }
            Frame::Message(msg) => ConnInput::Message { conn, peer, msg },
            Frame::Malformed { response, .. } => {
                let input = ConnInput::Malformed {
                    conn,
                    peer,
                    response,
                };
                let _ = to_driver.send(input).await;
                return false;
            }
        };
        if to_driver.send(input).await.is_err() {
            return false;
        }
    }
}

async fn read_some(read: &OwnedReadHalf, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    loop {
        read.readable().await?;
        match read.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_loop(write: OwnedWriteHalf, mut out_rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = out_rx.recv().await {
        if write_all(&write, &bytes).await.is_err() {
            break;
        }
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
