//! A first visit load run: N rooms on one SFU hub socket, two synthetic participants per
//! room playing VP8 (about 500 kbit/s) and Opus at their real rates over loopback, for
//! a number of seconds. The hub runs on its own thread (a current-thread runtime), so its
//! CPU time is read apart from the participants' (`/proc/self/task/<tid>/stat`).
//!
//! Reports frames and packets sent and received (loss), and the hub thread's CPU per
//! forwarded stream (a room forwards four: each side's audio and video). Added latency is
//! not measured yet: the pre-encoded payloads carry no send time.
//!
//! `cargo run --release --example visit_load -- [--visits 10] [--secs 10] [--rcvbuf BYTES]
//! --ivf visit.ivf --ogg visit.ogg` (make the files as `tests/sfu.rs` does, with Debian's
//! ffmpeg). Without `--rcvbuf` the hub's socket keeps the kernel's default buffer, which
//! overflows at a few dozen visits (see `sallyport::sfu::driver`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a load tool: a bad set-up aborts the run

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport::clock::SystemClock;
use sallyport::sfu::synthetic::{self, Counts, Script, SyntheticPeer};
use sallyport::sfu::{spawn_hub, HubHandle, Participant, RoomConfig, RoomEvent, Side};
use tokio::net::UdpSocket;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Args {
    visits: u64,
    secs: u64,
    ivf: PathBuf,
    ogg: PathBuf,
    /// `--rcvbuf BYTES`: SO_RCVBUF for the hub's socket (the kernel's default otherwise).
    rcvbuf: Option<i32>,
}

fn args() -> Args {
    let mut a = Args {
        visits: 10,
        secs: 10,
        ivf: PathBuf::from("visit.ivf"),
        ogg: PathBuf::from("visit.ogg"),
        rcvbuf: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag takes a value");
        match flag.as_str() {
            "--visits" => a.visits = value.parse().expect("--visits N"),
            "--secs" => a.secs = value.parse().expect("--secs N"),
            "--ivf" => a.ivf = value.into(),
            "--ogg" => a.ogg = value.into(),
            "--rcvbuf" => a.rcvbuf = Some(value.parse().expect("--rcvbuf BYTES")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// user + system CPU time of one thread of this process.
fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1_000 / hz)
}

/// Starts the hub on its own thread; returns its handle and the thread's id.
type Events = Arc<std::sync::Mutex<Vec<(u64, RoomEvent)>>>;

/// Asks for a larger receive buffer on the hub's socket (capped by net.core.rmem_max).
fn set_rcvbuf(socket: &std::net::UdpSocket, bytes: i32) {
    let granted = sallyport::sfu::set_receive_buffer(socket, usize::try_from(bytes).unwrap())
        .expect("setsockopt SO_RCVBUF");
    eprintln!("hub socket receive buffer: {granted} bytes");
}

fn hub_thread(log: Events, rcvbuf: Option<i32>) -> (HubHandle, i32) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let socket = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
            if let Some(bytes) = rcvbuf {
                set_rcvbuf(&socket, bytes);
            }
            socket.set_nonblocking(true).unwrap();
            let socket = UdpSocket::from_std(socket).unwrap();
            let (events, mut rx_events) = tokio::sync::mpsc::channel(65_536);
            let hub = spawn_hub(socket, LOOPBACK, Arc::new(SystemClock), events).unwrap();
            tx.send((hub, unsafe { libc::gettid() })).unwrap();
            while let Some(e) = rx_events.recv().await {
                if !matches!(e.1, RoomEvent::KeyframeRequested { .. }) {
                    log.lock().unwrap().push(e);
                }
            }
        });
    });
    rx.recv().unwrap()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let script = Arc::new(Script::from_files(&a.ivf, &a.ogg).expect("media files"));
    let log = Events::default();
    let (hub, tid) = hub_thread(log.clone(), a.rcvbuf);
    let play = Duration::from_secs(a.secs);
    let linger = Duration::from_millis(700);
    let mut runs = Vec::new();
    let joins = Instant::now();
    for room in 0..a.visits {
        assert!(hub.open_room(room, RoomConfig::default()).await.unwrap());
        for side in [Side::Visitor, Side::Inmate] {
            let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
            let local = socket.local_addr().unwrap();
            let (mut peer, offer) = SyntheticPeer::offer(local, Instant::now()).unwrap();
            let who = Participant::Side(side);
            let answer = hub.offer(room, who, offer).await.unwrap();
            peer.accept_answer(&answer).unwrap();
            let run = synthetic::run(socket, peer, script.clone(), play, linger);
            runs.push((room, side, tokio::spawn(run)));
        }
    }
    println!(
        "{} offers answered in {:.2} s",
        a.visits * 2,
        joins.elapsed().as_secs_f64()
    );
    let cpu0 = thread_cpu(tid);
    let t0 = Instant::now();
    let mut counts: Vec<(u64, Side, Counts)> = Vec::new();
    for (room, side, run) in runs {
        counts.push((room, side, run.await.unwrap()));
    }
    let (cpu, wall) = (thread_cpu(tid) - cpu0, t0.elapsed());
    let (mut sent, mut got) = ([0u64; 2], [0u64; 2]);
    for (room, side, c) in &counts {
        let other = counts
            .iter()
            .find(|(r, s, _)| r == room && *s == side.other())
            .map(|(_, _, c)| *c)
            .unwrap_or_default();
        sent[0] += other.sent_video_frames;
        sent[1] += other.sent_opus_packets;
        got[0] += c.video_frames;
        got[1] += c.opus_packets;
    }
    let silent = counts
        .iter()
        .filter(|(_, _, c)| c.sent_video_frames == 0)
        .count();
    for (room, side, _) in counts.iter().filter(|(_, _, c)| c.sent_video_frames == 0) {
        let events: Vec<RoomEvent> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == room)
            .map(|(_, e)| e.clone())
            .collect();
        println!("not connected: room {room} {side:?}; the room's events: {events:?}");
    }
    let st = hub.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "participants that never sent (not connected): {silent}; hub datagrams in {} out {} \
         unrouted {} send errors {}",
        load(&st.datagrams_in),
        load(&st.datagrams_out),
        load(&st.unrouted),
        load(&st.send_errors)
    );
    let streams = a.visits * 4;
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "visits {}  VP8 frames {}/{} received  Opus packets {}/{} received",
        a.visits, got[0], sent[0], got[1], sent[1]
    );
    println!(
        "hub thread CPU {:.1} % of a core over {:.1} s; {:.3} % per forwarded stream ({streams} streams)",
        share * 100.0,
        wall.as_secs_f64(),
        share * 100.0 / streams as f64
    );
}
