//! The end-to-end half of `tests/live_listen.rs`: the gateway binary, two sipps, Chromium.
//!
//! The gateway, port and sipp plumbing follows `tests/sip_calls.rs` (same scenarios, same
//! port blocks); what differs: the keys' captures go on with a PCMU tone, so both parties
//! "speak" once the call is bridged, and a WebDriver client (plain HTTP/1.1 to
//! chromedriver, no extra crate) drives the browser.

use sallyport::db::testing::skip_or_fail;
use sallyport::media::g711::Law;
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sallyport");
const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");
const ADMIN: &str = "listen-e2e-admin-token";
const FACILITY: &str = "DEMO";
const NUMBER: &str = "+15551230001";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long each party's tone lasts after its keys (the call is ended before).
const TONE: Duration = Duration::from_secs(40);
/// Listeners opened on top of the first one to measure CPU per listener.
const EXTRA_LISTENERS: usize = 8;

// ---- external tools -------------------------------------------------------------------

fn pcap_dir() -> PathBuf {
    std::env::var_os("SALLYPORT_SIPP_PCAPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/sip-tester"))
}

fn tools_present() -> bool {
    let sipp = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let missing = [
        (!sipp, "sipp".to_string()),
        (
            !pcap_dir().join("dtmf_2833_1.pcap").exists(),
            format!("sipp's DTMF captures in {}", pcap_dir().display()),
        ),
        (!Path::new(CHROMIUM).exists(), CHROMIUM.to_string()),
        (!Path::new(CHROMEDRIVER).exists(), CHROMEDRIVER.to_string()),
    ];
    let missing: Vec<String> = missing
        .into_iter()
        .filter(|(m, _)| *m)
        .map(|(_, what)| what)
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(&format!(
        "live listen browser test skipped: missing {}",
        missing.join(", ")
    ));
    false
}

// ---- ports ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Ports {
    trunk_sip: u16,
    trunk_media: u16,
    handset: (u16, u16),
    rtp: (u16, u16),
}

fn ports() -> Ports {
    const BLOCK: u32 = 64;
    let blocks = 20_000 / BLOCK;
    let start = (std::process::id() + 7) % blocks;
    for i in 0..blocks {
        let base = u16::try_from(10_000 + ((start + i) % blocks) * BLOCK).expect("port");
        if (0..BLOCK as u16).all(|o| UdpSocket::bind(("127.0.0.1", base + o)).is_ok()) {
            return Ports {
                trunk_sip: base,
                trunk_media: base + 2,
                handset: (base + 8, base + 10),
                rtp: (base + 24, base + 63),
            };
        }
    }
    panic!("no free block of UDP ports in 10000-29999");
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

// ---- captures: keys (RFC 4733) then a PCMU tone -----------------------------------------

type Record = (u32, u32, Vec<u8>);

fn read_pcap(path: &Path) -> (Vec<u8>, Vec<Record>) {
    let d = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(d.len() >= 24 && d[..4] == [0xd4, 0xc3, 0xb2, 0xa1]);
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut recs = Vec::new();
    let mut off = 24;
    while off + 16 <= d.len() {
        let (s, us, len) = (
            u32le(&d[off..]),
            u32le(&d[off + 4..]),
            u32le(&d[off + 8..]) as usize,
        );
        recs.push((s, us, d[off + 16..off + 16 + len].to_vec()));
        off += 16 + len;
    }
    (d[..24].to_vec(), recs)
}

fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One record of a tone frame: `template`'s Ethernet/IP/UDP headers, RTP PCMU `payload`.
fn tone_frame(template: &[u8], seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let ip = 14;
    let ihl = usize::from(template[ip] & 0x0f) * 4;
    let udp = ip + ihl;
    let rtp = udp + 8;
    let mut f = template[..rtp + 12].to_vec();
    f.extend_from_slice(payload);
    let ip_len = u16::try_from(f.len() - ip).unwrap();
    f[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
    f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let sum = ip_checksum(&f[ip..ip + ihl]);
    f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    let udp_len = u16::try_from(f.len() - udp).unwrap();
    f[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
    f[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    f[rtp] = 0x80;
    f[rtp + 1] = 0; // PCMU, no marker
    f[rtp + 2..rtp + 4].copy_from_slice(&seq.to_be_bytes());
    f[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
    f[rtp + 8..rtp + 12].copy_from_slice(&ssrc.to_be_bytes());
    f
}

/// 20 ms of a `hz` tone in PCMU, starting at sample `n`.
fn tone(hz: f64, n: u64) -> Vec<u8> {
    (0..160u64)
        .map(|i| {
            let t = (n + i) as f64 / 8000.0;
            let s = (std::f64::consts::TAU * hz * t).sin() * 8000.0;
            Law::Ulaw.encode(s as i16)
        })
        .collect()
}

fn push_record(file: &mut Vec<u8>, t_us: u64, frame: &[u8]) {
    let len = u32::try_from(frame.len()).unwrap();
    for v in [
        u32::try_from(t_us / 1_000_000).unwrap(),
        u32::try_from(t_us % 1_000_000).unwrap(),
        len,
        len,
    ] {
        file.extend_from_slice(&v.to_le_bytes());
    }
    file.extend_from_slice(frame);
}

/// Writes `out`: the key presses of `keys` as RFC 4733 events (one SSRC, 300 ms apart),
/// then [`TONE`] of a `hz` PCMU tone on the same stream. Returns how long the keys play.
fn keys_then_tone(keys: &str, hz: f64, out: &Path) -> Duration {
    let mut file = Vec::new();
    let (mut seq, mut ts, ssrc) = (1000u16, 160_000u32, 0x5a11_9047u32 ^ hz as u32);
    let mut at_us: u64 = 0;
    let mut origin = None;
    let mut template = Vec::new();
    for key in keys.chars() {
        let name = match key {
            '0'..='9' => format!("dtmf_2833_{key}.pcap"),
            '#' => "dtmf_2833_pound.pcap".into(),
            _ => panic!("no capture for key {key:?}"),
        };
        let (header, recs) = read_pcap(&pcap_dir().join(name));
        if file.is_empty() {
            file.extend_from_slice(&header);
        }
        let first = u64::from(recs[0].0) * 1_000_000 + u64::from(recs[0].1);
        let origin = *origin.get_or_insert(first);
        for (s, us, mut frame) in recs {
            let t = origin + at_us + (u64::from(s) * 1_000_000 + u64::from(us) - first);
            let udp = 14 + usize::from(frame[14] & 0x0f) * 4;
            frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
            let rtp = udp + 8;
            frame[rtp + 2..rtp + 4].copy_from_slice(&seq.to_be_bytes());
            frame[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
            frame[rtp + 8..rtp + 12].copy_from_slice(&ssrc.to_be_bytes());
            seq = seq.wrapping_add(1);
            push_record(&mut file, t, &frame);
            template = frame;
        }
        at_us += 300_000;
        ts = ts.wrapping_add(2_400);
    }
    let keys_play = Duration::from_micros(at_us);
    let origin = origin.expect("at least one key");
    let frames = TONE.as_millis() as u64 / 20;
    for i in 0..frames {
        let frame = tone_frame(&template, seq, ts, ssrc, &tone(hz, i * 160));
        push_record(&mut file, origin + at_us + i * 20_000, &frame);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
    }
    fs::write(out, file).unwrap();
    keys_play
}

// ---- HTTP (the API and chromedriver) --------------------------------------------------

/// One HTTP/1.1 request; the status and the body as JSON (or a JSON string).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    http_key(addr, method, path, token, body, None)
}

/// [`http`] with an `Idempotency-Key` (money-moving requests).
fn http_key(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(k) = key {
        head.push_str(&format!("Idempotency-Key: {k}\r\n"));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let (head, body) = read_response(&mut s);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

/// Reads one response (head, body) without waiting for the server to close: chromedriver
/// keeps connections open.
fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let complete = |buf: &[u8]| -> bool {
        let text = String::from_utf8_lossy(buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let head = head.to_ascii_lowercase();
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return body.len() >= len;
        }
        head.contains("transfer-encoding: chunked") && body.ends_with("0\r\n\r\n")
    };
    while !complete(&buf) {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading an HTTP response: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[derive(Clone)]
struct Api {
    addr: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = http(&self.addr, method, path, Some(ADMIN), body.as_ref());
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, text) = http(&self.addr, "GET", "/metrics", None, None);
        text.as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }
}

// ---- the gateway and sipp ---------------------------------------------------------------

struct Gateway {
    child: Child,
    api: Api,
    sip: SocketAddr,
}

impl Gateway {
    fn start(dir: &Path, ports: &Ports) -> Gateway {
        let log = fs::File::create(dir.join("gateway.log")).unwrap();
        let mut child = Command::new(BIN)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("serve")
            .env(
                "SALLYPORT_DATABASE_URL",
                format!("sqlite://{}/db.sqlite", dir.display()),
            )
            .env("SALLYPORT_NODE_DATA_DIR", dir)
            .env("SALLYPORT_HTTP_LISTEN", "127.0.0.1:0")
            .env("SALLYPORT_HTTP_ADMIN_TOKEN", ADMIN)
            .env("SALLYPORT_SIP_UDP_LISTEN", "127.0.0.1:0")
            .env("SALLYPORT_SIP_TCP_LISTEN", "127.0.0.1:0")
            .env(
                "SALLYPORT_SIP_TRUNK",
                format!("127.0.0.1:{}", ports.trunk_sip),
            )
            .env("SALLYPORT_RTP_PORT_MIN", ports.rtp.0.to_string())
            .env("SALLYPORT_RTP_PORT_MAX", ports.rtp.1.to_string())
            .env("SALLYPORT_RTP_ADVERTISED_IP", "127.0.0.1")
            .env("SALLYPORT_RTP_LISTEN_IP", "127.0.0.1")
            .env("NO_COLOR", "1")
            .env("SALLYPORT_BILLING_ACCEPT_TIMEOUT_SECS", "10")
            .env(
                "SALLYPORT_LOG",
                std::env::var("SALLYPORT_TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sallyport serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut http_addr, mut sip) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_addr.is_none() || sip.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("the gateway did not start within 30 s; see gateway.log");
            };
            if let Some(a) = line.strip_prefix("sallyport: HTTP API listening on http://") {
                http_addr = Some(a.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("sallyport: SIP listening on ") {
                let udp = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("udp://"))
                    .expect("udp:// address");
                sip = Some(udp.parse().expect("SIP UDP address"));
            }
        }
        Gateway {
            child,
            api: Api {
                addr: http_addr.unwrap(),
            },
            sip: sip.unwrap(),
        }
    }

    /// User + system CPU seconds the gateway process has used.
    fn cpu_secs(&self) -> f64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which may hold spaces) start at field 3.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / hz
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Spawned {
    child: Child,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sipp(dir: &Path, name: &str, scenario: &str, args: &[String]) -> Spawned {
    let dir = dir.join(name);
    let child = Command::new("sipp")
        .current_dir(&dir)
        .arg("-sf")
        .arg(Path::new(SCENARIOS).join(scenario))
        .args(args)
        .args(["-m", "1", "-nostdin", "-aa", "-timeout", "120s"])
        .args(["-trace_msg", "-message_file", "messages.log"])
        .args(["-trace_err", "-error_file", "errors.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            fs::File::create(dir.join("screen.log")).unwrap(),
        ))
        .stderr(Stdio::from(
            fs::File::create(dir.join("stderr.log")).unwrap(),
        ))
        .spawn()
        .expect("start sipp");
    Spawned { child }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The called party: answers, presses 1 (RFC 4733) a second after the ACK, then a 600 Hz
/// tone; waits for the gateway's BYE.
fn trunk(dir: &Path, p: &Ports) -> Spawned {
    let d = dir.join("trunk");
    fs::create_dir_all(&d).unwrap();
    keys_then_tone("1", 600.0, &d.join("key1.pcap"));
    keys_then_tone("2", 600.0, &d.join("key2.pcap"));
    let args = strings(&[
        "-i",
        "127.0.0.1",
        "-p",
        &p.trunk_sip.to_string(),
        "-mi",
        "127.0.0.1",
        "-mp",
        &p.trunk_media.to_string(),
        "-set",
        "mode",
        "answer",
        "-set",
        "ring_ms",
        "500",
        "-set",
        "key",
        "1",
        "-set",
        "key_ms",
        "1000",
        "-set",
        "key_via",
        "rtp",
        "-set",
        "then",
        "wait",
        "-set",
        "hold_ms",
        "0",
    ]);
    let s = sipp(dir, "trunk", "trunk.xml", &args);
    std::thread::sleep(Duration::from_millis(300));
    s
}

/// The inmate: dials, enters `pin` and `#` (RFC 4733), then a 400 Hz tone; waits for BYE.
fn handset(dir: &Path, p: &Ports, gw: SocketAddr, pin: &str) -> Spawned {
    let d = dir.join("handset");
    fs::create_dir_all(&d).unwrap();
    let keys = keys_then_tone(&format!("{pin}#"), 400.0, &d.join("pin.pcap"));
    let c: Vec<char> = pin.chars().collect();
    fs::write(
        d.join("calls.csv"),
        format!(
            "SEQUENTIAL\nhandset-1;{};{};{};{}\n",
            c[0], c[1], c[2], c[3]
        ),
    )
    .unwrap();
    let args = strings(&[
        "-i",
        "127.0.0.1",
        "-p",
        &p.handset.0.to_string(),
        "-mi",
        "127.0.0.1",
        "-mp",
        &p.handset.1.to_string(),
        "-s",
        NUMBER,
        &gw.to_string(),
        "-inf",
        "calls.csv",
        "-set",
        "pin_via",
        "rtp",
        "-set",
        "attempts",
        "1",
        "-set",
        "pin_ms",
        &(keys.as_millis() + 300).to_string(),
        "-set",
        "then",
        "wait",
        "-set",
        "hold_ms",
        "0",
    ]);
    sipp(dir, "handset", "handset.xml", &args)
}

// ---- WebDriver --------------------------------------------------------------------------

struct Browser {
    driver: Spawned,
    addr: String,
    session: String,
}

impl Browser {
    fn start(dir: &Path) -> Browser {
        let port = free_tcp_port();
        let log = dir.join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Spawned { child };
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join("chromium-profile");
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
        } } });
        let (s, v) = http(&addr, "POST", "/session", None, Some(&caps));
        assert_eq!(s, 200, "new WebDriver session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let b = Browser {
            driver,
            addr,
            session,
        };
        b.cmd("timeouts", json!({ "script": 120_000 }));
        b
    }

    fn cmd(&self, what: &str, body: Value) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        let (s, v) = http(&self.addr, "POST", &path, None, Some(&body));
        assert_eq!(s, 200, "WebDriver {what}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("url", json!({ "url": url }));
    }

    /// Runs `script` (its last argument is the completion callback) and returns its value.
    fn run(&self, script: &str, args: Value) -> Value {
        self.cmd("execute/async", json!({ "script": script, "args": args }))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(&self.addr, "DELETE", &path, None, None);
        let _ = &self.driver;
    }
}

/// Opens `arguments[2]` listeners on the call at path `arguments[0]` with token
/// `arguments[1]`: two recvonly audio transceivers each; resolves to their ids.
const LISTEN_JS: &str = r#"
const [path, token, count, done] = arguments;
(async () => {
  window.pcs = window.pcs || [];
  const ids = [];
  for (let i = 0; i < count; i++) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(path, { method: 'POST',
      headers: { 'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: 'offer' }) });
    const body = await r.json();
    if (r.status !== 201) { done({ error: r.status, body }); return; }
    await pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
    // Play both tracks, as the console does (audioLevel is measured on played audio).
    for (const t of pc.getTransceivers()) {
      const a = new Audio();
      a.srcObject = new MediaStream([t.receiver.track]);
      a.play().catch(() => {});
    }
    window.pcs.push(pc);
    ids.push(body.listener_id);
  }
  done({ ids });
})().catch(e => done({ error: String(e) }));
"#;

/// Per peer: connection state and, per transceiver, its inbound-rtp counters and codec.
const STATS_JS: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const out = [];
  for (const pc of (window.pcs || [])) {
    const tracks = [];
    for (const t of pc.getTransceivers()) {
      const stats = await t.receiver.getStats();
      const codecs = {};
      let inbound = null;
      stats.forEach(s => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
      stats.forEach(s => { if (s.type === 'inbound-rtp') inbound = {
        packets: s.packetsReceived, lost: s.packetsLost, bytes: s.bytesReceived,
        codec: codecs[s.codecId] || null, level: s.audioLevel ?? null }; });
      tracks.push({ mid: t.mid, inbound });
    }
    out.push({ state: pc.connectionState, tracks });
  }
  done(out);
})().catch(e => done({ error: String(e) }));
"#;

fn packets(peer: &Value, track: usize) -> u64 {
    peer["tracks"][track]["inbound"]["packets"]
        .as_u64()
        .unwrap_or(0)
}

/// Polls the page's stats until every peer has packets on both tracks.
fn wait_for_audio(b: &Browser, peers: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = b.run(STATS_JS, json!([]));
        let all = stats.as_array().map_or(0, |a| {
            a.iter()
                .filter(|p| packets(p, 0) > 0 && packets(p, 1) > 0)
                .count()
        });
        if all >= peers {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "no audio on every listener: {stats}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---- the test ---------------------------------------------------------------------------

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = fs::read_to_string(self.0.join("gateway.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(120);
            eprintln!("==== files kept in {}; gateway.log tail:", self.0.display());
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        } else if std::env::var_os("SALLYPORT_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn book_and_fund(api: &Api, pin: &str) {
    let i = api.call(
        "POST",
        &format!("/api/v1/facilities/{FACILITY}/inmates"),
        Some(json!({ "booking_number": "L-1", "first_name": "Live", "last_name": "Listen", "pin": pin })),
    );
    let id = i["id"].as_str().unwrap();
    let c = api.call(
        "POST",
        &format!("/api/v1/inmates/{id}/contacts"),
        Some(json!({ "number": NUMBER, "name": "Called Party", "relationship": "friend" })),
    );
    let cid = c["id"].as_str().unwrap();
    api.call("POST", &format!("/api/v1/contacts/{cid}/approve"), None);
    let acc = i["account_id"].as_str().unwrap();
    let deposit = json!({ "amount": "20.00", "method": "online", "depositor": "tests" });
    let path = format!("/api/v1/accounts/{acc}/deposits");
    let (s, v) = http_key(
        &api.addr,
        "POST",
        &path,
        Some(ADMIN),
        Some(&deposit),
        Some("live-1"),
    );
    assert_eq!(s, 201, "deposit: {v}");
}

/// Waits for the call to be accepted and bridged; returns its id.
fn accepted_call(api: &Api) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let live = api.call(
            "GET",
            &format!("/api/v1/calls/active?facility={FACILITY}"),
            None,
        );
        let found = live.as_array().and_then(|a| {
            a.iter()
                .find(|c| !c["accepted_at"].is_null())
                .and_then(|c| c["id"].as_str().map(String::from))
        });
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no call was accepted: {live}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Gateway CPU (share of one core) over `window`.
fn cpu_over(gw: &Gateway, window: Duration) -> f64 {
    let c0 = gw.cpu_secs();
    std::thread::sleep(window);
    (gw.cpu_secs() - c0) / window.as_secs_f64()
}

pub fn chromium_hears_both_parties() {
    if !tools_present() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("live_listen")
        .join(format!("e2e-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let dir = Dir(dir);
    let p = ports();
    let gw = Gateway::start(&dir.0, &p);
    let api = gw.api.clone();
    book_and_fund(&api, "1357");
    let inv = api.call(
        "POST",
        "/api/v1/tokens",
        Some(json!({ "username": "investigator-1", "role": "investigator", "facilities": [FACILITY] })),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let _trunk = trunk(&dir.0, &p);
    let _handset = handset(&dir.0, &p, gw.sip, "1357");
    let browser = Browser::start(&dir.0);
    browser.goto(&format!("http://{}/healthz", api.addr));
    let id = accepted_call(&api);
    let path = format!("/api/v1/calls/{id}/listen");
    let idle_cpu = cpu_over(&gw, Duration::from_secs(4));

    // One listener: both parties arrive, as PCMU.
    let opened = browser.run(LISTEN_JS, json!([path, inv, 1]));
    let first = opened["ids"][0]
        .as_str()
        .unwrap_or_else(|| panic!("listen: {opened}"))
        .to_string();
    let stats = wait_for_audio(&browser, 1);
    println!("one listener: {stats}");
    let peer = &stats[0];
    assert_eq!(peer["state"], "connected", "{stats}");
    for t in 0..2 {
        assert_eq!(
            peer["tracks"][t]["inbound"]["codec"], "audio/PCMU",
            "{stats}"
        );
    }
    // Both tones are heard (the page plays both tracks): 8000/32768 of full scale.
    let level = |stats: &Value, t: usize| stats[0]["tracks"][t]["inbound"]["level"].as_f64();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stats = stats;
    while !(level(&stats, 0) > Some(0.1) && level(&stats, 1) > Some(0.1)) {
        assert!(Instant::now() < deadline, "both parties are heard: {stats}");
        std::thread::sleep(Duration::from_millis(500));
        stats = browser.run(STATS_JS, json!([]));
    }
    println!(
        "levels heard: inmate {:?}, called party {:?}",
        level(&stats, 0),
        level(&stats, 1)
    );

    // CPU per listener stream: more listeners on the same call.
    let more = browser.run(LISTEN_JS, json!([path, inv, EXTRA_LISTENERS]));
    assert_eq!(
        more["ids"].as_array().map(Vec::len),
        Some(EXTRA_LISTENERS),
        "{more}"
    );
    wait_for_audio(&browser, 1 + EXTRA_LISTENERS);
    let open = api.metric("sallyport_listeners_open");
    assert_eq!(open, 1 + EXTRA_LISTENERS as u64);
    let busy_cpu = cpu_over(&gw, Duration::from_secs(5));
    let per_listener = (busy_cpu - idle_cpu) / (1 + EXTRA_LISTENERS) as f64;
    println!(
        "gateway CPU: call alone {:.2}% of a core, with {} listeners {:.2}%: {:.3}% per listener \
         (2 streams of 50 packets/s each)",
        idle_cpu * 100.0,
        1 + EXTRA_LISTENERS,
        busy_cpu * 100.0,
        per_listener * 100.0
    );
    assert!(api.metric("sallyport_listen_packets_sent_total") > 0);

    // DELETE one listener: 204, audited; the others go on.
    let (s, v) = http(
        &api.addr,
        "DELETE",
        &format!("{path}/{first}"),
        Some(&inv),
        None,
    );
    assert_eq!(s, 204, "{v}");
    let (s, _) = http(
        &api.addr,
        "DELETE",
        &format!("{path}/{first}"),
        Some(&inv),
        None,
    );
    assert_eq!(s, 404, "a deleted listener is gone");
    assert_eq!(
        api.metric("sallyport_listeners_open"),
        EXTRA_LISTENERS as u64
    );
    let audit = api.call("GET", "/api/v1/audit?limit=100", None);
    let actions = |a: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == a && e["target"] == id.as_str())
            .count()
    };
    assert_eq!(actions("call.listen"), 1 + EXTRA_LISTENERS, "{audit}");
    assert_eq!(actions("call.unlisten"), 1, "{audit}");

    // The call ends: every listener ends with it.
    api.call("POST", &format!("/api/v1/calls/{id}/terminate"), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.metric("sallyport_listeners_open") > 0 {
        assert!(Instant::now() < deadline, "listeners outlived their call");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, v) = http(
        &api.addr,
        "POST",
        &path,
        Some(&inv),
        Some(&json!({ "sdp": "v=0" })),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("call_ended")),
        "{v}"
    );
    drop(browser);
    drop(gw);
}
