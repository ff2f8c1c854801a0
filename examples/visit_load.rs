//! The visit load benchmark: N concurrent 1:1 visits on one machine, each side a synthetic
//! str0m participant (`sallyport::sfu::synthetic`) playing pre-encoded VP8 (about
//! 500 kbit/s) and Opus at their real rates, through either sallyport's SFU or Janus 1.1.
//!
//! - `--sfu sallyport`: N rooms on one hub (`sfu::spawn_hub`, one socket with the
//!   gateway's 4 MiB receive buffer) on a thread of its own; a room forwards each side's
//!   audio and video to the other side. `--record`: both sides of every room are recorded
//!   the way the gateway records them: a room tap per side (`HubHandle::tap`, capacity
//!   1,024 as in `visit::task`) read by the gateway's WebM writer thread
//!   (`visit::recorder::record_tap`, the thread `SideRecording` runs, without the
//!   database row).
//! - `--sfu janus`: a running Janus (started by `bench/visit_load.sh`) through its HTTP
//!   API: one session, one EchoTest handle per participant; Janus sends each
//!   participant's audio and video back to it. `--record`: EchoTest's own recorder (one
//!   `.mjr` file per stream, Janus's native format). See `bench/README.md` for why this
//!   is the comparison.
//!
//! Either way a visit is 2 peer connections and 4 forwarded streams (2 audio, 2 video):
//! 4 streams in and 4 out of the SFU. Every payload carries its send time (12 bytes
//! appended: 8 of nanoseconds since the run's epoch, then `SPLT`): the receiving
//! participant, in this same process, takes receive − send for each frame (whole frame:
//! sender's packetizing, SFU, receiver's reassembly). After all participants have
//! connected (or 30 s), a settle time, then a window of `--secs`: frames sent in the
//! window are counted, received frames are matched by their stamp, and CPU is read at both
//! ends of the window (each thread's run time from `/proc/<pid>/task/<tid>/schedstat`):
//! - sallyport: the hub thread(s) plus the recorder threads;
//! - Janus: the whole Janus process (every thread);
//! - the participants: this process (less the hub and recorders for sallyport);
//! - the machine: `/proc/stat` (busy share of both cores) and the load average.
//!
//! `cargo run --release --example visit_load -- --sfu sallyport|janus [--record]
//! [--visits 10] [--secs 20] [--settle 3] [--ivf visit.ivf] [--ogg visit.ogg]
//! [--dir /tmp/rec] [--janus 127.0.0.1:18088] [--janus-pid PID] [--rcvbuf BYTES] [--ip ADDR]
//! [--join-rate 20] [--hubs 1]`
//!
//! `--hubs N` (sallyport): N hub workers, each a thread with its own socket, the rooms
//! placed on them in turn (the gateway runs one today; `sfu` says more cores means more
//! hubs).
//! `--join-rate`: participants that join per second (offer, answer, ICE, DTLS), for both
//! SFUs alike.
//!
//! `--ip`: where the SFU and the participants bind (127.0.0.1 by default). Janus (libnice)
//! offers no loopback candidate, so the script gives both SFUs the machine's own address
//! (the kernel routes it through the loopback device all the same).
//!
//! The last line is `RESULT key=value …` for `bench/visit_load.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a load tool: a bad set-up aborts the run

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sallyport::clock::SystemClock;
use sallyport::sfu::synthetic::{Script, SyntheticPeer};
use sallyport::sfu::{spawn_hub, HubHandle, Participant, RoomConfig, RoomEvent, Side};
use serde_json::{json, Value};
use str0m::media::MediaKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const MAGIC: &[u8; 4] = b"SPLT";
/// The gateway's tap capacity (`visit::task::TAP_CAPACITY`).
const TAP_CAPACITY: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sfu {
    Sallyport,
    Janus,
}

struct Args {
    sfu: Sfu,
    record: bool,
    visits: u64,
    secs: u64,
    settle: u64,
    ivf: PathBuf,
    ogg: PathBuf,
    dir: PathBuf,
    janus: String,
    janus_pid: Option<i32>,
    rcvbuf: usize,
    /// The address the SFU and the participants bind (`--ip`).
    ip: IpAddr,
    /// Participants that join per second (`--join-rate`).
    join_rate: f64,
    /// sallyport: hub workers, each a thread with its own socket (`--hubs`).
    hubs: u64,
}

fn args() -> Args {
    let mut a = Args {
        sfu: Sfu::Sallyport,
        record: false,
        visits: 10,
        secs: 20,
        settle: 3,
        ivf: PathBuf::from("visit.ivf"),
        ogg: PathBuf::from("visit.ogg"),
        dir: std::env::temp_dir().join("visit_load"),
        janus: "127.0.0.1:18088".into(),
        janus_pid: None,
        rcvbuf: 4 * 1024 * 1024,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        join_rate: 20.0,
        hubs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--record" {
            a.record = true;
            continue;
        }
        let value = it.next().expect("every other flag takes a value");
        match flag.as_str() {
            "--sfu" => {
                a.sfu = match value.as_str() {
                    "sallyport" => Sfu::Sallyport,
                    "janus" => Sfu::Janus,
                    v => panic!("--sfu sallyport|janus, not {v}"),
                }
            }
            "--visits" => a.visits = value.parse().expect("--visits N"),
            "--secs" => a.secs = value.parse().expect("--secs N"),
            "--settle" => a.settle = value.parse().expect("--settle N"),
            "--ivf" => a.ivf = value.into(),
            "--ogg" => a.ogg = value.into(),
            "--dir" => a.dir = value.into(),
            "--janus" => a.janus = value,
            "--janus-pid" => a.janus_pid = Some(value.parse().expect("--janus-pid PID")),
            "--rcvbuf" => a.rcvbuf = value.parse().expect("--rcvbuf BYTES"),
            "--ip" => a.ip = value.parse().expect("--ip ADDRESS"),
            "--join-rate" => a.join_rate = value.parse().expect("--join-rate PER_SECOND"),
            "--hubs" => a.hubs = value.parse().expect("--hubs N"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

// ---------------------------------------------------------------------------------------
// CPU time

/// Seconds a thread has run (`/proc/…/task/<tid>/schedstat`, nanoseconds: the scheduler's
/// own account, where `stat`'s tick sampling misses threads that run in short bursts).
fn thread_cpu(task: &std::path::Path) -> f64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// CPU seconds of the threads of process `pid` ("self" for this one) whose name starts
/// with `prefix` ("" for all of them; threads that already ended are not counted).
fn threads_cpu(pid: &str, prefix: &str) -> f64 {
    let mut sum = 0.0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    for e in tasks.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            sum += thread_cpu(&p);
        }
    }
    sum
}

/// (busy, total) jiffies of the whole machine.
fn machine_cpu() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap();
    let line = s.lines().next().unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The kernel's count of UDP datagrams dropped because a socket's receive buffer was
/// full (`RcvbufErrors` in `/proc/net/snmp`, the whole machine).
fn udp_rcvbuf_errors() -> u64 {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Datagrams dropped by full receive buffers, per local UDP port (`/proc/net/udp`, the
/// last column), for the sockets open now.
fn udp_drops_by_port() -> HashMap<u16, u64> {
    let s = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    s.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            Some((port, f.last()?.parse().ok()?))
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Clone, Copy, Default)]
struct CpuSample {
    sfu: f64,
    recorders: f64,
    own: f64,
    machine: (u64, u64),
}

fn sample(a: &Args) -> CpuSample {
    let own = threads_cpu("self", "");
    let (sfu, recorders) = match a.sfu {
        Sfu::Sallyport => (
            threads_cpu("self", "sfu-hub"),
            threads_cpu("self", "visit-rec"),
        ),
        Sfu::Janus => (
            a.janus_pid
                .map(|p| threads_cpu(&p.to_string(), ""))
                .unwrap_or(0.0),
            0.0,
        ),
    };
    CpuSample {
        sfu,
        recorders,
        own,
        machine: machine_cpu(),
    }
}

// ---------------------------------------------------------------------------------------
// The participants

/// The measured window, known once everyone has connected.
type Window = Arc<OnceLock<(Instant, Instant)>>;

#[derive(Default, Debug)]
struct Received {
    /// [audio, video] frames received whose stamp is inside the window.
    frames: [u64; 2],
    /// Receive − send, µs, of those frames.
    latency_us: Vec<u32>,
    unstamped: u64,
}

#[derive(Default, Debug)]
struct Report {
    connected: bool,
    /// [audio, video] frames sent inside the window.
    sent: [u64; 2],
    received: Received,
}

fn kind_index(k: MediaKind) -> usize {
    match k {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

fn stamped(data: &[u8], epoch: Instant, now: Instant) -> Arc<[u8]> {
    let mut v = Vec::with_capacity(data.len() + 12);
    v.extend_from_slice(data);
    v.extend_from_slice(&((now - epoch).as_nanos() as u64).to_le_bytes());
    v.extend_from_slice(MAGIC);
    v.into()
}

fn within(window: &Window, t: Instant) -> bool {
    window.get().is_some_and(|&(a, b)| t >= a && t < b)
}

/// Installs the receive hook: counts and times what arrives with a stamp in the window.
fn hook(peer: &mut SyntheticPeer, epoch: Instant, window: Window) -> Arc<Mutex<Received>> {
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    peer.on_media(Box::new(move |kind, data| {
        let now = Instant::now();
        let mut g = g.lock().unwrap();
        let n = data.len();
        if n < 12 || &data[n - 4..] != MAGIC {
            g.unstamped += 1;
            return;
        }
        let nanos = u64::from_le_bytes(data[n - 12..n - 4].try_into().unwrap());
        let sent = epoch + Duration::from_nanos(nanos);
        if within(&window, sent) {
            g.frames[kind_index(kind)] += 1;
            let us = now.saturating_duration_since(sent).as_micros();
            g.latency_us.push(us.min(u32::MAX as u128) as u32);
        }
    }));
    got
}

/// Plays the script through `peer` from when it connects until the window's end, then
/// receives for `linger` more. The media loops; each frame's RTP time advances with it.
async fn participant(
    socket: UdpSocket,
    mut peer: SyntheticPeer,
    script: Arc<Script>,
    epoch: Instant,
    window: Window,
    connected: Arc<AtomicUsize>,
    give_up: Instant,
) -> Report {
    let got = hook(&mut peer, epoch, window.clone());
    let linger = Duration::from_millis(1_000);
    let mut report = Report::default();
    let spans = spans(&script);
    let mut media_start: Option<Instant> = None;
    let (mut vi, mut ai) = (0usize, 0usize);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if peer.is_connected() && media_start.is_none() {
            media_start = Some(now);
            report.connected = true;
            connected.fetch_add(1, Ordering::Relaxed);
        }
        if peer.is_disconnected() {
            break;
        }
        let end = window.get().map(|w| w.1);
        if end.is_some_and(|e| now >= e + linger) {
            break;
        }
        if media_start.is_none() && now > give_up {
            break;
        }
        let mut next_send = None;
        if let Some(start) = media_start.filter(|_| end.is_none_or(|e| now < e)) {
            let at = |t: u64, hz: u64| start + Duration::from_micros(t * 1_000_000 / hz);
            let vt = |i: usize| looped(&script.video, i, spans.0, |f| f.rtp_time);
            let atime = |i: usize| looped(&script.audio, i, spans.1, |p| p.rtp_time);
            let inside = within(&window, now);
            while let Some(t) = vt(vi).filter(|&t| at(t, 90_000) <= now) {
                let f = &script.video[vi % script.video.len()];
                if peer.send_video(now, t, &stamped(&f.data, epoch, now)) && inside {
                    report.sent[1] += 1;
                }
                vi += 1;
            }
            while let Some(t) = atime(ai).filter(|&t| at(t, 48_000) <= now) {
                let p = &script.audio[ai % script.audio.len()];
                if peer.send_audio(now, t, &stamped(&p.data, epoch, now)) && inside {
                    report.sent[0] += 1;
                }
                ai += 1;
            }
            let nv = vt(vi).map(|t| at(t, 90_000));
            let na = atime(ai).map(|t| at(t, 48_000));
            next_send = nv.into_iter().chain(na).min();
        }
        let timeout = peer.poll(&mut out);
        for d in out.drain(..) {
            let _ = socket.send_to(&d.bytes, d.to).await;
        }
        let wake = [timeout, next_send, Some(now + Duration::from_millis(50))]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    peer.handle_datagram(from, &buf[..n], Instant::now());
                    // Whatever else is queued, without another wake-up.
                    for _ in 0..16 {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => peer.handle_datagram(from, &buf[..n], Instant::now()),
                            Err(_) => break,
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                peer.handle_timeout(Instant::now());
            }
        }
    }
    report.received = std::mem::take(&mut *got.lock().unwrap());
    report
}

/// One loop of the video (90 kHz) and the audio (48 kHz).
fn spans(s: &Script) -> (u64, u64) {
    let span = |t: Vec<u64>, fallback: u64| match t.as_slice() {
        [.., a, b] => b + (b - a).max(1),
        _ => fallback,
    };
    (
        span(s.video.iter().map(|f| f.rtp_time).collect(), 3_000),
        span(s.audio.iter().map(|p| p.rtp_time).collect(), 960),
    )
}

fn looped<T>(items: &[T], i: usize, span: u64, time: impl Fn(&T) -> u64) -> Option<u64> {
    let n = items.len();
    let item = items.get(i.checked_rem(n)?)?;
    Some((i / n) as u64 * span + time(item))
}

// ---------------------------------------------------------------------------------------
// sallyport

type Events = Arc<Mutex<Vec<(u64, RoomEvent)>>>;

fn hub_thread(log: Events, rcvbuf: usize, ip: IpAddr) -> HubHandle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sfu-hub".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
                let granted = sallyport::sfu::set_receive_buffer(&socket, rcvbuf).unwrap();
                eprintln!("hub socket receive buffer: {granted} bytes");
                socket.set_nonblocking(true).unwrap();
                let socket = UdpSocket::from_std(socket).unwrap();
                let (events, mut rx_events) = tokio::sync::mpsc::channel(65_536);
                let hub = spawn_hub(socket, ip, Arc::new(SystemClock), events).unwrap();
                tx.send(hub).unwrap();
                while let Some(e) = rx_events.recv().await {
                    if !matches!(e.1, RoomEvent::KeyframeRequested { .. }) {
                        log.lock().unwrap().push(e);
                    }
                }
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

// ---------------------------------------------------------------------------------------
// Janus over HTTP

/// One HTTP/1.0 request (so the answer is not chunked); the JSON body of the answer.
async fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(addr).await.expect("Janus HTTP");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("Janus answered {body:?}: {e}"))
}

fn txn() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("t{}", N.fetch_add(1, Ordering::Relaxed))
}

struct Janus {
    addr: String,
    session: u64,
    /// Handle → who waits for its answer.
    waiting: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<String>>>,
    /// Event counts by kind ("webrtcup", "hangup", "slowlink", …).
    seen: Mutex<HashMap<String, u64>>,
}

impl Janus {
    async fn connect(addr: &str) -> Arc<Janus> {
        let r = http(
            addr,
            "POST",
            "/janus",
            Some(&json!({"janus":"create","transaction":txn()})),
        )
        .await;
        let session = r["data"]["id"].as_u64().expect("a Janus session");
        let j = Arc::new(Janus {
            addr: addr.into(),
            session,
            waiting: Mutex::default(),
            seen: Mutex::default(),
        });
        tokio::spawn(j.clone().pump());
        j
    }

    /// Long-polls the session's events: answers go to whoever waits for them.
    async fn pump(self: Arc<Self>) {
        let path = format!("/janus/{}?maxev=50", self.session);
        loop {
            let r = http(&self.addr, "GET", &path, None).await;
            let events = match r {
                Value::Array(v) => v,
                v => vec![v],
            };
            for e in events {
                let kind = e["janus"].as_str().unwrap_or("?").to_string();
                *self.seen.lock().unwrap().entry(kind).or_default() += 1;
                if let (Some(h), Some(sdp)) = (e["sender"].as_u64(), e["jsep"]["sdp"].as_str()) {
                    if let Some(tx) = self.waiting.lock().unwrap().remove(&h) {
                        let _ = tx.send(sdp.to_string());
                    }
                }
            }
        }
    }

    /// An EchoTest handle answering `offer`; returns the answer.
    async fn echo(&self, offer: &str, record: Option<String>) -> String {
        let s = self.session;
        let r = http(
            &self.addr,
            "POST",
            &format!("/janus/{s}"),
            Some(&json!({"janus":"attach","plugin":"janus.plugin.echotest","transaction":txn()})),
        )
        .await;
        let h = r["data"]["id"].as_u64().expect("an EchoTest handle");
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.lock().unwrap().insert(h, tx);
        let mut body = json!({"audio": true, "video": true});
        if let Some(file) = record {
            body["record"] = json!(true);
            body["filename"] = json!(file);
        }
        let msg = json!({"janus":"message","transaction":txn(),"body":body,
            "jsep":{"type":"offer","sdp":offer}});
        let r = http(&self.addr, "POST", &format!("/janus/{s}/{h}"), Some(&msg)).await;
        assert_eq!(r["janus"], "ack", "Janus refused the offer: {r}");
        // The candidates are in the offer; say there are no more.
        let done = json!({"janus":"trickle","transaction":txn(),"candidate":{"completed":true}});
        http(&self.addr, "POST", &format!("/janus/{s}/{h}"), Some(&done)).await;
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("Janus answered within 20 s")
            .unwrap()
    }

    async fn destroy(&self) {
        let s = self.session;
        let msg = json!({"janus":"destroy","transaction":txn()});
        http(&self.addr, "POST", &format!("/janus/{s}"), Some(&msg)).await;
    }
}

// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1_000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let script = Arc::new(Script::from_files(&a.ivf, &a.ogg).expect("media files"));
    let epoch = Instant::now();
    let window: Window = Arc::default();
    let connected = Arc::new(AtomicUsize::new(0));
    // A participant that has not connected this long after its answer stops trying (the
    // SFU side gives up after `sfu::CONNECT_TIMEOUT`, 20 s).
    let connect_within = Duration::from_secs(30);
    if a.record {
        std::fs::create_dir_all(&a.dir).unwrap();
    }
    let log = Events::default();
    let mut hubs: Vec<HubHandle> = Vec::new();
    let mut janus = None;
    match a.sfu {
        Sfu::Sallyport => {
            for _ in 0..a.hubs.max(1) {
                hubs.push(hub_thread(log.clone(), a.rcvbuf, a.ip));
            }
        }
        Sfu::Janus => janus = Some(Janus::connect(&a.janus).await),
    }
    let participants = (a.visits * 2) as usize;
    // (visit, side index, the participant's run)
    let mut runs = Vec::new();
    let mut recorders = Vec::new();
    let setup = Instant::now();
    for visit in 0..a.visits {
        // Rooms are placed on the hubs in turn.
        let hub = hubs.get(visit as usize % hubs.len().max(1));
        if let Some(hub) = hub {
            assert!(hub.open_room(visit, RoomConfig::default()).await.unwrap());
            if a.record {
                for side in [Side::Visitor, Side::Inmate] {
                    let tap = hub.tap(visit, side, TAP_CAPACITY).await.unwrap();
                    let path = a.dir.join(format!("v{visit}-{}.webm", side.as_str()));
                    let t = sallyport::visit::recorder::record_tap(
                        &path,
                        side,
                        tap,
                        Instant::now(),
                        chrono::Utc::now(),
                    )
                    .unwrap();
                    recorders.push(t);
                }
            }
        }
        for (i, side) in [Side::Visitor, Side::Inmate].into_iter().enumerate() {
            // Joins are paced: a browser's ICE and DTLS cost the SFU and the participants
            // far more than a second of media, and every visit of a slot joining within
            // the same instant is not what happens (see bench/README.md).
            let nth = (visit * 2) as f64 + i as f64;
            let due = setup + Duration::from_secs_f64(nth / a.join_rate.max(0.1));
            tokio::time::sleep_until(due.into()).await;
            let socket = UdpSocket::bind((a.ip, 0)).await.unwrap();
            let local = socket.local_addr().unwrap();
            let (mut peer, offer) = SyntheticPeer::offer(local, Instant::now()).unwrap();
            let shown = std::env::var_os("VISIT_LOAD_SDP").map(|_| offer.clone());
            let answer = match (hub, &janus) {
                (Some(hub), _) => hub
                    .offer(visit, Participant::Side(side), offer)
                    .await
                    .unwrap(),
                (_, Some(j)) => {
                    let file = a.record.then(|| {
                        let f = a.dir.join(format!("v{visit}-{}", side.as_str()));
                        f.to_string_lossy().into_owned()
                    });
                    j.echo(&offer, file).await
                }
                _ => unreachable!(),
            };
            if let Some(offer) = shown {
                eprintln!("offer:\n{offer}\nanswer:\n{answer}");
            }
            peer.accept_answer(&answer).unwrap();
            let run = participant(
                socket,
                peer,
                script.clone(),
                epoch,
                window.clone(),
                connected.clone(),
                Instant::now() + connect_within,
            );
            runs.push((visit, i, tokio::spawn(run)));
        }
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    // Everyone connected (or the give-up time), then the settle time, then the window.
    let give_up = Instant::now() + connect_within;
    while connected.load(Ordering::Relaxed) < participants && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_connected = setup.elapsed().as_secs_f64();
    let w0 = Instant::now() + Duration::from_secs(a.settle);
    let w1 = w0 + Duration::from_secs(a.secs);
    window.set((w0, w1)).unwrap();
    tokio::time::sleep_until(w0.into()).await;
    let (c0, l0, d0) = (sample(&a), loadavg(), udp_rcvbuf_errors());
    let p0 = udp_drops_by_port();
    tokio::time::sleep_until(w1.into()).await;
    let (c1, l1) = (sample(&a), loadavg());
    let p1 = udp_drops_by_port();
    let hub_ports: Vec<u16> = hubs.iter().map(|h| h.local().port()).collect();
    let (mut hub_drops, mut other_drops) = (0u64, 0u64);
    for (port, n) in &p1 {
        let d = n.saturating_sub(p0.get(port).copied().unwrap_or(0));
        if hub_ports.contains(port) {
            hub_drops += d;
        } else {
            other_drops += d;
        }
    }
    // Until the receivers' last second is over: the frames of the window are in flight.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kernel_drops = udp_rcvbuf_errors().saturating_sub(d0);
    let mut reports: Vec<(u64, usize, Report)> = Vec::new();
    for (visit, i, run) in runs {
        reports.push((visit, i, run.await.unwrap()));
    }
    // After the participants: close rooms (closing the taps ends the recorders).
    let mut recorded_complete = 0;
    let recorders_n = recorders.len();
    if !hubs.is_empty() {
        for visit in 0..a.visits {
            let _ = hubs[visit as usize % hubs.len()].close_room(visit).await;
        }
        for r in recorders {
            if tokio::task::spawn_blocking(move || r.join().unwrap_or(false))
                .await
                .unwrap()
            {
                recorded_complete += 1;
            }
        }
    }
    if let Some(j) = &janus {
        j.destroy().await;
        let seen = j.seen.lock().unwrap().clone();
        println!("Janus events: {seen:?}");
    }

    // Loss: each stream goes to exactly one receiver. sallyport: a side receives the
    // other side's; Janus: a participant receives its own.
    let source = |visit: u64, i: usize| match a.sfu {
        Sfu::Sallyport => (visit, 1 - i),
        Sfu::Janus => (visit, i),
    };
    let by: HashMap<(u64, usize), &Report> =
        reports.iter().map(|(v, i, r)| ((*v, *i), r)).collect();
    let (mut sent, mut got) = ([0u64; 2], [0u64; 2]);
    let mut lossy = 0;
    let mut latency: Vec<u32> = Vec::new();
    let mut unstamped = 0;
    for (visit, i, r) in &reports {
        let src = by[&source(*visit, *i)];
        for k in 0..2 {
            sent[k] += src.sent[k];
            got[k] += r.received.frames[k];
        }
        if src.sent != r.received.frames {
            lossy += 1;
        }
        latency.extend_from_slice(&r.received.latency_us);
        unstamped += r.received.unstamped;
    }
    latency.sort_unstable();
    let not_connected = reports.iter().filter(|(_, _, r)| !r.connected).count();
    for (visit, i, _) in reports.iter().filter(|(_, _, r)| !r.connected) {
        let events: Vec<RoomEvent> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == visit)
            .map(|(_, e)| e.clone())
            .collect();
        println!("not connected: visit {visit} participant {i}; room events: {events:?}");
    }
    for hub in &hubs {
        let st = hub.stats();
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        println!(
            "hub datagrams in {} out {} unrouted {} send errors {} events dropped {}",
            n(&st.datagrams_in),
            n(&st.datagrams_out),
            n(&st.unrouted),
            n(&st.send_errors),
            n(&st.events_dropped)
        );
    }
    let wall = (w1 - w0).as_secs_f64();
    let sfu_cpu = (c1.sfu - c0.sfu) + (c1.recorders - c0.recorders);
    let rec_cpu = c1.recorders - c0.recorders;
    let own_cpu = (c1.own - c0.own)
        - if a.sfu == Sfu::Sallyport {
            sfu_cpu
        } else {
            0.0
        };
    let (busy, total) = (c1.machine.0 - c0.machine.0, c1.machine.1 - c0.machine.1);
    let machine = busy as f64 / total.max(1) as f64;
    let streams = a.visits * 4;
    let lost = (sent[0] + sent[1]).saturating_sub(got[0] + got[1]);
    let loss_pct = 100.0 * lost as f64 / (sent[0] + sent[1]).max(1) as f64;
    let per_stream_ms = sfu_cpu * 1_000.0 / wall / streams as f64;
    let sfu_name = match a.sfu {
        Sfu::Sallyport => "sallyport",
        Sfu::Janus => "janus",
    };
    println!(
        "{sfu_name} visits {} record {}: offers answered in {setup_secs:.1} s, all connected \
         at {all_connected:.1} s; not connected {not_connected}/{participants}",
        a.visits, a.record
    );
    println!(
        "window {wall:.1} s: Opus {}/{} VP8 {}/{} received; lost {lost} ({loss_pct:.4} %), \
         receivers with loss {lossy}, unstamped {unstamped}; UDP datagrams the kernel \
         dropped (receive buffers full, whole machine): {kernel_drops}",
        got[0], sent[0], got[1], sent[1]
    );
    println!(
        "datagrams dropped in the window by full receive buffers: hub sockets {hub_drops}, \
         every other UDP socket (participants, Janus) {other_drops}"
    );
    println!(
        "latency (send → frame received, {} frames): p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        latency.len(),
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        latency.last().map_or(f64::NAN, |&m| m as f64 / 1_000.0),
    );
    println!(
        "SFU CPU {:.1} % of a core (recorders {:.1} %) = {per_stream_ms:.3} ms CPU per second \
         per forwarded stream ({streams} streams); participants {:.1} %; machine busy {:.0} \
         % of 2 cores; load {l0} → {l1}",
        sfu_cpu * 100.0 / wall,
        rec_cpu * 100.0 / wall,
        own_cpu * 100.0 / wall,
        machine * 100.0,
    );
    if a.record && a.sfu == Sfu::Sallyport {
        println!("recordings complete (no frame dropped): {recorded_complete}/{recorders_n}");
    }
    println!(
        "RESULT sfu={sfu_name} hubs={} record={} visits={} streams={streams} \
         kernel_drops={kernel_drops} hub_drops={hub_drops} other_drops={other_drops} \
         not_connected={not_connected} \
         sent={} lost={lost} loss_pct={loss_pct:.4} p50_ms={:.2} p99_ms={:.2} \
         sfu_cpu_pct={:.1} rec_cpu_pct={:.1} per_stream_ms={per_stream_ms:.3} gen_cpu_pct={:.1} \
         machine_pct={:.0} load={l1} rec_complete={recorded_complete}/{recorders_n}",
        hubs.len(),
        a.record,
        a.visits,
        sent[0] + sent[1],
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        sfu_cpu * 100.0 / wall,
        rec_cpu * 100.0 / wall,
        own_cpu * 100.0 / wall,
        machine * 100.0,
    );
}
