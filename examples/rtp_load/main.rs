//! RTP load against the media engine, which runs as a separate process (this example
//! re-executes itself with `--engine`), so its CPU time is measured on its own.
//!
//! The parent binds two "peer" sockets per call (handset and trunk), has the engine
//! anchor and bridge every call, then blasts 172-byte PCMU packets (12-byte header + 160
//! bytes, the send time in the first 8 payload bytes) from every peer at 50 packets/s
//! each way, spread evenly over each 20 ms. A receiver thread takes what the engine
//! relays and records the one-way latency (loopback + engine) and the count. The engine
//! process reports its CPU time (getrusage, all threads) at the start and end of the
//! measured window.
//!
//! With `--record DIR` every call is also recorded (the recorder thread and its taps, as
//! in a real call, files under DIR): the report adds the recorder's CPU, its drops and
//! the bytes written per call-minute.
//!
//! With `--relay rtpengine` the same blaster and receiver drive rtpengine instead
//! (started here as a child, userspace only, `--num-threads` = `--workers`): every call is
//! anchored over its ng control protocol (`offer` with the handset's SDP, `answer` with
//! the trunk's, see `ng.rs`) and the peers send to the ports it answered. CPU is read the
//! same way for either relay: the scheduler's on-CPU nanoseconds of all the relay
//! process's threads (`/proc/<pid>/task/*/schedstat`).
//!
//! With `--far-stamps 1` the peers also ask the kernel to stamp each packet's arrival
//! (`SO_TIMESTAMPNS`; on loopback the stamp is taken while the relay's send delivers the
//! packet), and the report adds the latency to that moment, `FAR` (`far_p50_us` …): the
//! relay's share without the receiver thread's own wait for a core, which the first
//! figure includes. Off by default: stamping turns on a clock read for every packet the
//! host receives.
//!
//! `cargo run --release --example rtp_load -- [--calls 1000] [--secs 10] [--workers 2]
//! [--record DIR] [--relay sallyport|rtpengine] [--port-min 20000]
//! [--rtpengine-port-min 30000] [--rtpengine-port-max 39999] [--far-stamps 1]` (see
//! `bench/README.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a load tool: a bad set-up aborts the run

use sallyport::media::engine::{EngineConfig, MediaEngine};
use sallyport::media::prompts::PromptSet;
use sallyport::media::relay::{LatchPolicy, Side};
use sallyport::media::sdp::{CodecName, NegotiatedMedia};
use sallyport::recording::{Law, Recorder};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod ng;

const PORT_MIN: u16 = 20000;
const PACKET: usize = 172;
const PPS: u64 = 50;

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// CPU seconds of this process's thread named `name` (from /proc; 0 when absent).
fn thread_cpu_seconds(name: &str) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of comm: state is field 3; utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (num(11) + num(12)) / tick;
    }
    total
}

/// On-CPU seconds of every thread of process `pid` (the scheduler's nanoseconds, first
/// field of `/proc/<pid>/task/<tid>/schedstat`): the same reading for either relay.
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--engine") {
        engine_process();
    } else {
        blaster();
    }
}

fn media(remote: SocketAddr) -> NegotiatedMedia {
    NegotiatedMedia::plain(remote, CodecName::Pcmu)
}

/// CPU seconds (user + system) of this whole process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed value we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The engine side: reads "a_port b_port" per call on stdin, answers "gw_a gw_b", then
/// serves `cpu` and `stats` requests until stdin closes.
fn engine_process() {
    let calls = arg("--calls", 1000) as usize;
    let ports = u16::try_from(calls * 4 + 8).expect("too many calls for the port range");
    let port_min = u16::try_from(arg("--port-min", PORT_MIN.into())).expect("--port-min");
    let prompts =
        PromptSet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts"))
            .expect("prompts");
    let engine = MediaEngine::start(
        EngineConfig {
            port_min,
            port_max: port_min
                .checked_add(ports)
                .expect("--port-min too high for the calls"),
            bind_ip: "127.0.0.1".parse().unwrap(),
            advertised_ip: "127.0.0.1".parse().unwrap(),
            workers: arg("--workers", 0) as usize,
            max_queue: Duration::from_millis(arg("--max-queue-ms", 40)),
        },
        Arc::new(prompts),
    )
    .expect("engine");
    let record = arg_str("--record").map(|dir| {
        let cfg = sallyport::config::RecordingConfig {
            dir: dir.into(),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (Recorder::start(&cfg).expect("recorder"), rt)
    });
    let mut captures = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut held = Vec::with_capacity(calls);
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["call", a, b] => {
                let (mut call, events) = engine.open_call();
                let (gw_a, gw_b) = match (call.allocate(Side::A), call.allocate(Side::B)) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => {
                        writeln!(out, "error {e}").unwrap();
                        return;
                    }
                };
                call.set_leg(Side::A, media(a.parse().unwrap()), LatchPolicy::Exact);
                call.set_leg(Side::B, media(b.parse().unwrap()), LatchPolicy::Exact);
                call.bridge(true);
                if let Some((recorder, rt)) = &record {
                    let name = format!("load-{}-{}", std::process::id(), held.len());
                    let path = sallyport::recording::relative_path(
                        &name,
                        sallyport::recording::MediaKind::CallAudio,
                        sallyport::recording::Participant::Both,
                        chrono::Utc::now(),
                    );
                    let begun = rt.block_on(recorder.begin(path, Law::Ulaw, Instant::now()));
                    let (capture, tap) = begun.expect("recording file");
                    call.add_tap(tap).expect("tap");
                    captures.push(capture);
                }
                held.push((call, events));
                writeln!(out, "{gw_a} {gw_b}").unwrap();
            }
            ["cpu"] => writeln!(out, "{}", cpu_seconds()).unwrap(),
            ["rcpu"] => writeln!(out, "{}", thread_cpu_seconds("recorder")).unwrap(),
            ["finish"] => {
                let (mut bytes, mut frames, mut dropped, mut late, mut files) = (0, 0, 0, 0, 0);
                if let Some((recorder, rt)) = &record {
                    for c in captures.drain(..) {
                        let f = rt.block_on(recorder.end(c, Instant::now())).expect("close");
                        files += 1;
                        bytes += f.closed.bytes;
                        frames += f.closed.frames;
                        dropped += f.closed.dropped;
                        late += f.closed.late;
                    }
                }
                writeln!(out, "{files} {bytes} {frames} {dropped} {late}").unwrap();
            }
            ["stats"] => writeln!(out, "{:?}", engine.stats()).unwrap(),
            _ => writeln!(out, "?").unwrap(),
        }
        out.flush().unwrap();
    }
}

struct Child {
    process: std::process::Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl Child {
    fn ask(&mut self, line: &str) -> String {
        writeln!(self.input, "{line}").unwrap();
        self.input.flush().unwrap();
        let mut answer = String::new();
        self.output.read_line(&mut answer).unwrap();
        answer.trim().to_string()
    }
}

/// Latency histogram in 1 µs buckets up to 100 ms, then 1 ms buckets up to 10 s (an
/// engine past its limit without shedding queues for seconds).
struct Histogram(Vec<u64>);

const FINE_US: usize = 100_000;
const COARSE: usize = 9_900;

impl Histogram {
    fn new() -> Self {
        Histogram(vec![0; FINE_US + COARSE + 1])
    }
    fn add(&mut self, d: Duration) {
        let us = d.as_micros() as usize;
        let i = match us < FINE_US {
            true => us,
            false => FINE_US + ((us - FINE_US) / 1000).min(COARSE),
        };
        self.0[i] += 1;
    }
    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.0.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return match i < FINE_US {
                    true => i as u64,
                    false => (FINE_US + (i - FINE_US) * 1000) as u64,
                };
            }
        }
        0
    }
}

fn blaster() {
    let calls = arg("--calls", 1000) as usize;
    let secs = arg("--secs", 10);
    let workers = arg("--workers", 0);
    let record = arg_str("--record");
    let which = arg_str("--relay").unwrap_or_else(|| "sallyport".into());
    let mut relay = match which.as_str() {
        "sallyport" => Relay::Sallyport(start_engine(calls, workers, &record)),
        "rtpengine" => start_rtpengine(workers),
        other => {
            eprintln!("--relay {other}: sallyport or rtpengine");
            std::process::exit(2);
        }
    };

    let far_stamps = arg("--far-stamps", 0) != 0;
    // Peers: [a0, b0, a1, b1, ...]; targets: the relay's address for each.
    let mut peers = Vec::with_capacity(2 * calls);
    let mut targets = Vec::with_capacity(2 * calls);
    for i in 0..calls {
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let (ga, gb) = relay.anchor(i, a.local_addr().unwrap(), b.local_addr().unwrap());
        targets.push(ga);
        targets.push(gb);
        // Connected: the relay answers from the port it advertised (symmetric RTP), and
        // a connected socket sends without a route lookup per packet.
        a.connect(ga).unwrap();
        b.connect(gb).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        if far_stamps {
            for s in [&a, &b] {
                let on: libc::c_int = 1;
                // SAFETY: a live socket and a c_int option value of the size given.
                let r = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_TIMESTAMPNS,
                        (&on as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(r, 0, "SO_TIMESTAMPNS");
            }
        }
        peers.push(a);
        peers.push(b);
    }
    std::thread::sleep(Duration::from_millis(200));
    let peers = Arc::new(peers);
    let t0 = Instant::now();
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs(secs);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));

    let receiver = {
        let (peers, stop) = (Arc::clone(&peers), Arc::clone(&stop));
        std::thread::spawn(move || receive(&peers, t0, warmup, warmup + measure, &stop, far_stamps))
    };
    let sender = {
        let (peers, sent, stop) = (Arc::clone(&peers), Arc::clone(&sent), Arc::clone(&stop));
        std::thread::spawn(move || blast(&peers, t0, &sent, &stop))
    };

    std::thread::sleep(warmup);
    let pid = relay.pid();
    let cpu0 = process_cpu_seconds(pid);
    let rcpu0: f64 = relay.ask("rcpu").parse().unwrap_or(0.0);
    let own0 = cpu_seconds();
    let relayed0 = relayed(&relay.ask("stats"));
    let wall0 = Instant::now();
    std::thread::sleep(measure);
    let cpu1 = process_cpu_seconds(pid);
    let rcpu1: f64 = relay.ask("rcpu").parse().unwrap_or(0.0);
    let own = cpu_seconds() - own0;
    let relayed1 = relayed(&relay.ask("stats"));
    let wall = wall0.elapsed().as_secs_f64();
    let load = load_average();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (received, hist, far) = receiver.join().unwrap();
    let stats = relay.ask("stats");
    let recorded = relay.ask("finish");
    relay.stop(calls);

    let sent = sent.load(Ordering::Relaxed);
    // Packets delivered whose send stamp is inside the window: the same count for either
    // relay (rtpengine has no relayed counter here); the engine's own count is printed too.
    let delivered = hist.0.iter().sum::<u64>();
    let window = match which.as_str() {
        "sallyport" => relayed1 - relayed0,
        _ => delivered,
    };
    let cpu = cpu1 - cpu0;
    println!(
        "relay {which}, calls {calls}, {secs} s measured after 1 s warm-up, workers {workers} (0 = cores), load average {load}"
    );
    println!(
        "offered {:.0} packets/s ({} calls x 2 directions x {PPS}/s)",
        (calls as u64 * 2 * PPS) as f64,
        calls
    );
    println!(
        "relayed {:.0} packets/s in the window",
        window as f64 / wall
    );
    println!(
        "sent {sent}, received {received}, lost {} ({:.4} %)",
        sent.saturating_sub(received),
        100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64
    );
    println!(
        "latency (loopback + engine) p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.quantile(0.999),
        hist.quantile(1.0)
    );
    println!(
        "engine CPU {:.2} s over {:.1} s = {:.2} cores; {:.2} us per relayed packet ({:.5} CPU s per 1,000)",
        cpu,
        wall,
        cpu / wall,
        cpu * 1e6 / window.max(1) as f64,
        cpu * 1e3 / window.max(1) as f64
    );
    println!(
        "blaster CPU {:.2} s = {:.2} cores (shares the machine)",
        own,
        own / wall
    );
    println!("engine stats: {stats}");
    println!(
        "RESULT relay={which} calls={calls} workers={workers} sent={sent} received={received} lost={} loss_pct={:.4} p50_us={} p99_us={} p999_us={} max_us={} cpu_cores={:.3} us_per_packet={:.3} blaster_cores={:.2} load={load}",
        sent.saturating_sub(received),
        100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64,
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.quantile(0.999),
        hist.quantile(1.0),
        cpu / wall,
        cpu * 1e6 / delivered.max(1) as f64,
        own / wall,
    );
    if far_stamps {
        println!(
            "FAR relay={which} calls={calls} far_p50_us={} far_p99_us={} far_p999_us={} far_max_us={}",
            far.quantile(0.5),
            far.quantile(0.99),
            far.quantile(0.999),
            far.quantile(1.0)
        );
    }
    if record.is_some() {
        let n: Vec<u64> = recorded
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [files, bytes, frames, dropped, late] = n[..] else {
            return println!("recorder: {recorded}");
        };
        let minutes = frames as f64 / 8000.0 / 60.0;
        let rcpu = rcpu1 - rcpu0;
        println!(
            "recorded {files} files, {:.1} call-minutes, {bytes} bytes = {:.0} bytes per call-minute",
            minutes,
            bytes as f64 / minutes.max(1e-9)
        );
        println!("recorder drops {dropped} (tap queue full), late packets {late}");
        println!(
            "recorder thread CPU {:.3} s over {:.1} s = {:.3} cores; {:.1} us CPU per recorded call-second",
            rcpu,
            wall,
            rcpu / wall,
            rcpu * 1e6 / (wall * calls as f64)
        );
    }
}

/// The relay under test.
enum Relay {
    /// sallyport's `MediaEngine` in a child of this example (`--engine`).
    Sallyport(Child),
    /// rtpengine, userspace only, its calls anchored over ng.
    Rtpengine {
        process: std::process::Child,
        ng: ng::NgClient,
    },
}

impl Relay {
    fn pid(&self) -> u32 {
        match self {
            Relay::Sallyport(c) => c.process.id(),
            Relay::Rtpengine { process, .. } => process.id(),
        }
    }

    /// Commands of the engine child (`stats`, `rcpu`, `finish`); rtpengine has none here.
    fn ask(&mut self, line: &str) -> String {
        match self {
            Relay::Sallyport(c) => c.ask(line),
            Relay::Rtpengine { .. } => String::new(),
        }
    }

    /// Anchors call `i` between peers `a` and `b`: (where a sends, where b sends).
    fn anchor(&mut self, i: usize, a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
        match self {
            Relay::Sallyport(child) => {
                let answer = child.ask(&format!("call {a} {b}"));
                let Some((ga, gb)) = answer
                    .split_once(' ')
                    .filter(|_| !answer.starts_with("error"))
                else {
                    eprintln!(
                        "engine process: {answer:?} (is another process holding ports from --port-min, {}, up?)",
                        arg("--port-min", PORT_MIN.into())
                    );
                    std::process::exit(1);
                };
                (ga.parse().unwrap(), gb.parse().unwrap())
            }
            Relay::Rtpengine { ng, .. } => match ng.anchor(&format!("load-{i}"), a, b) {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("rtpengine: call {i}: {e}");
                    std::process::exit(1);
                }
            },
        }
    }

    fn stop(self, calls: usize) {
        match self {
            Relay::Sallyport(child) => {
                drop(child.input);
                let mut p = child.process;
                let _ = p.wait();
            }
            Relay::Rtpengine {
                mut process,
                mut ng,
            } => {
                for i in 0..calls {
                    let _ = ng.delete(&format!("load-{i}"));
                }
                // SAFETY: a signal to the child we started.
                unsafe { libc::kill(process.id() as i32, libc::SIGTERM) };
                let _ = process.wait();
            }
        }
    }
}

fn start_engine(calls: usize, workers: u64, record: &Option<String>) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut engine_args = vec![
        "--engine".to_string(),
        "--calls".into(),
        calls.to_string(),
        "--workers".into(),
        workers.to_string(),
        "--max-queue-ms".into(),
        arg("--max-queue-ms", 40).to_string(),
        "--port-min".into(),
        arg("--port-min", PORT_MIN.into()).to_string(),
    ];
    if let Some(dir) = record {
        engine_args.extend(["--record".to_string(), dir.clone()]);
    }
    let mut p = Command::new(exe)
        .args(&engine_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("engine process");
    Child {
        input: p.stdin.take().unwrap(),
        output: BufReader::new(p.stdout.take().unwrap()),
        process: p,
    }
}

/// Starts rtpengine in the foreground (not the system service): no kernel forwarding
/// (`--table=-1`), loopback only, its own ng and RTP ports, `--num-threads` = `workers`
/// (0 = cores). Waits for its ng port to answer `ping`.
fn start_rtpengine(workers: u64) -> Relay {
    let threads = match workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get() as u64),
        n => n,
    };
    let ng_port = arg("--ng-port", 22230);
    let bin = arg_str("--rtpengine").unwrap_or_else(|| "rtpengine".into());
    let log = std::fs::File::create(std::env::temp_dir().join("rtp_load-rtpengine.log"))
        .expect("rtpengine log file");
    let process = Command::new(bin)
        .args([
            "--config-file=none".to_string(),
            "--foreground".into(),
            "--log-stderr".into(),
            "--log-level=4".into(),
            "--table=-1".into(),
            "--interface=127.0.0.1".into(),
            format!("--listen-ng=127.0.0.1:{ng_port}"),
            format!("--port-min={}", arg("--rtpengine-port-min", 30000)),
            format!("--port-max={}", arg("--rtpengine-port-max", 39999)),
            format!("--num-threads={threads}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("rtpengine (Debian package rtpengine-daemon)");
    let mut ng = ng::NgClient::connect(SocketAddr::from(([127, 0, 0, 1], ng_port as u16)))
        .expect("ng socket");
    let t = Instant::now();
    while ng.ping().is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            eprintln!("rtpengine did not answer ng ping in 10 s (see its log in the temp dir)");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Relay::Rtpengine { process, ng }
}

fn relayed(stats: &str) -> u64 {
    stats
        .split("relayed: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends one packet per peer every 20 ms, spread over the 20 ms in 250 µs slices; each
/// slice's sends go to the kernel in one io_uring submission (the blaster shares the two
/// cores with the engine, so it must be cheap).
fn blast(peers: &[UdpSocket], t0: Instant, sent: &AtomicU64, stop: &AtomicBool) {
    let slices = 80usize;
    let per_slice = peers.len().div_ceil(slices);
    let mut ring = io_uring::IoUring::new(per_slice.next_power_of_two() as u32).expect("io_uring");
    let mut packets = vec![[0xffu8; PACKET]; per_slice];
    let mut seq: u16 = 0;
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for slice in 0..slices {
            let due = t0 + Duration::from_micros(tick * 20_000 + slice as u64 * 250);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let start = slice * per_slice;
            let end = (start + per_slice).min(peers.len());
            for (k, i) in (start..end).enumerate() {
                let ns = t0.elapsed().as_nanos() as u64;
                let p = &mut packets[k];
                p[0] = 0x80;
                p[1] = 0; // PCMU
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                p[8..12].copy_from_slice(&(i as u32).to_be_bytes());
                p[12..20].copy_from_slice(&ns.to_be_bytes());
                let op = io_uring::opcode::Send::new(
                    io_uring::types::Fd(peers[i].as_raw_fd()),
                    p.as_ptr(),
                    PACKET as u32,
                )
                .flags(libc::MSG_DONTWAIT)
                .build();
                // SAFETY: `packets` outlives the submission; all completions are reaped below.
                unsafe {
                    ring.submission()
                        .push(&op)
                        .expect("queue sized for a slice")
                };
            }
            let n = end.saturating_sub(start);
            let mut done = 0;
            while done < n {
                ring.submit_and_wait(n - done).expect("io_uring_enter");
                for cqe in ring.completion() {
                    done += 1;
                    if cqe.result() >= 0 {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        seq = seq.wrapping_add(1);
        tick += 1;
    }
}

/// Receives on every peer: epoll for readiness, then one io_uring submission receiving one
/// datagram from each ready socket; records the latency of packets sent in the window.
fn receive(
    peers: &[UdpSocket],
    t0: Instant,
    from: Duration,
    to: Duration,
    stop: &AtomicBool,
    far_stamps: bool,
) -> (u64, Histogram, Histogram) {
    const BATCH: usize = 256;
    // SAFETY: plain epoll calls on fds that outlive this function.
    let ep = unsafe { libc::epoll_create1(0) };
    for (i, s) in peers.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
    }
    let mut ring = io_uring::IoUring::new(BATCH as u32).expect("io_uring");
    let mut bufs = vec![[0u8; 2048]; BATCH];
    // With far stamps: one msghdr per slot, its data in `bufs`, its control message (the
    // kernel's arrival stamp) in `controls`; the vectors never grow, so the pointers hold.
    let mut controls = vec![[0u64; 8]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: 2048,
        })
        .collect();
    // SAFETY: all-zero is a valid msghdr.
    let mut msgs: Vec<libc::msghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (k, m) in msgs.iter_mut().enumerate() {
        m.msg_iov = &mut iovs[k];
        m.msg_iovlen = 1;
        m.msg_control = controls[k].as_mut_ptr().cast();
    }
    // The stamps are CLOCK_REALTIME; the send times are since `t0` (monotonic).
    let wall_t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .saturating_sub(t0.elapsed());
    let mut far = Histogram::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let mut hist = Histogram::new();
    let mut received = 0u64;
    let mut quiet_since: Option<Instant> = None;
    let tick = Duration::from_micros(arg("--rx-tick-us", 0));
    loop {
        // With a tick the receiver naps instead of blocking in epoll_wait, so the engine's
        // sends find no sleeping thread to wake (as when the far end is another host: on
        // loopback the sender pays the receiver's wake-up).
        if !tick.is_zero() {
            std::thread::sleep(tick);
        }
        let wait = if tick.is_zero() { 10 } else { 0 };
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), BATCH as i32, wait) };
        if n <= 0 {
            if stop.load(Ordering::Relaxed) {
                let q = *quiet_since.get_or_insert_with(Instant::now);
                if q.elapsed() > Duration::from_millis(200) {
                    break;
                }
            }
            continue;
        }
        let n = n as usize;
        for (k, ev) in events[..n].iter().enumerate() {
            let fd = peers[ev.u64 as usize].as_raw_fd();
            let op = if far_stamps {
                msgs[k].msg_controllen = std::mem::size_of::<[u64; 8]>() as _;
                io_uring::opcode::RecvMsg::new(io_uring::types::Fd(fd), &mut msgs[k])
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(k as u64)
            } else {
                io_uring::opcode::Recv::new(io_uring::types::Fd(fd), bufs[k].as_mut_ptr(), 2048)
                    .flags(libc::MSG_DONTWAIT)
                    .build()
                    .user_data(k as u64)
            };
            // SAFETY: `bufs` outlives the submission; all completions are reaped below.
            unsafe {
                ring.submission()
                    .push(&op)
                    .expect("queue sized for a batch")
            };
        }
        let mut done = 0;
        while done < n {
            ring.submit_and_wait(n - done).expect("io_uring_enter");
            let now = t0.elapsed();
            for cqe in ring.completion() {
                done += 1;
                let len = cqe.result();
                if len < 20 {
                    continue;
                }
                received += 1;
                let k = cqe.user_data() as usize;
                let buf = &bufs[k];
                let ns = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                let sent_at = Duration::from_nanos(ns);
                if sent_at >= from && sent_at < to {
                    hist.add(now.saturating_sub(sent_at));
                    if let Some(at) = far_stamps.then(|| arrival(&msgs[k])).flatten() {
                        far.add(at.saturating_sub(wall_t0).saturating_sub(sent_at));
                    }
                }
            }
        }
    }
    unsafe { libc::close(ep) };
    (received, hist, far)
}

/// The kernel's arrival stamp (`SCM_TIMESTAMPNS`, CLOCK_REALTIME) in a received msghdr.
fn arrival(m: &libc::msghdr) -> Option<Duration> {
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into the
    // msghdr's control buffer; the CMSG macros walk only within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    None
}
