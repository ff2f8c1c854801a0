//! Inmate calls over SIP, end to end: the real `sallyport serve` between two sipp
//! processes, a facility handset (UAC, `tests/sipp/handset.xml`) and the carrier trunk with
//! the called party behind it (UAS, `tests/sipp/trunk.xml`).
//!
//! Every test starts its own gateway on a fresh SQLite database (the demo is seeded on
//! first start), on ports it picked for itself: HTTP and SIP on port 0 (read back from the
//! lines `serve` prints), a free UDP port for the trunk sipp, a private RTP range. Through
//! the HTTP API it gives the demo facility a plan with 3-second increments at $0.05/min
//! (an increment costs $0.0025) and books a fresh inmate with its own PIN, approved
//! contact and exact balance, then plays the call and checks the CDR, the balance and the
//! ledger.
//!
//! PIN digits go as RFC 4733 telephone-events (a `pin.pcap` built here from the Debian
//! sip-tester captures with one SSRC and rising sequence numbers and timestamps, so that
//! repeated keys are distinct presses) or as SIP INFO `application/dtmf-relay`.
//!
//! Without sipp (or its pcaps) the tests print why and pass, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`. A failing test prints its gateway log and every sipp's
//! errors and message trace, and keeps its directory (under `CARGO_TARGET_TMPDIR`; set
//! `SALLYPORT_TEST_KEEP=1` to keep it when the test passes too).
//! Run one: `cargo test --test sip_calls -- busy`; all at once in less wall time:
//! `cargo test --test sip_calls -- --test-threads=8` (they mostly wait).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sallyport");
const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");
const ADMIN: &str = "sipp-tests-admin-token";
const FACILITY: &str = "DEMO";
/// The number every booked inmate has as an approved contact (local in the demo deck).
const NUMBER: &str = "+15551230001";
/// $0.05 per minute in 3-second increments.
const PER_MINUTE: &str = "0.05";
const INCREMENT_SECS: f64 = 3.0;
const COST: &str = "0.0025";

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("not a decimal: {s:?}: {e}"))
}

fn money(v: &Value) -> Decimal {
    dec(v
        .as_str()
        .unwrap_or_else(|| panic!("not a money string: {v}")))
}

// ---- external tools -------------------------------------------------------------------

/// Where the sip-tester RFC 2833 captures live (`dtmf_2833_1.pcap`, …).
fn pcap_dir() -> PathBuf {
    std::env::var_os("SALLYPORT_SIPP_PCAPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/sip-tester"))
}

/// Whether sipp and its pcaps are here; prints the reason (or panics in CI) when not.
fn sipp_present() -> bool {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        sallyport::db::testing::skip_or_fail("sipp is not installed: SIP call test skipped");
        return false;
    }
    if !pcap_dir().join("dtmf_2833_1.pcap").exists() {
        sallyport::db::testing::skip_or_fail(&format!(
            "no sipp DTMF captures in {} (set SALLYPORT_SIPP_PCAPS): SIP call test skipped",
            pcap_dir().display()
        ));
        return false;
    }
    true
}

// ---- ports ----------------------------------------------------------------------------

/// Ports of one test. Blocks come from 10000–29999 (below Linux's ephemeral range, so
/// port-0 binds of other processes do not land in them), starting at an offset derived
/// from the process id so two test processes rarely meet, and are checked free.
#[derive(Debug, Clone, Copy)]
struct Ports {
    /// sipp binds its media port and media port + 2 (video): media ports are 4 apart.
    trunk_sip: u16,
    trunk_media: u16,
    handsets: [(u16, u16); 2],
    rtp: (u16, u16),
}

const BLOCK: u32 = 64;

fn udp_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

fn ports() -> Ports {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let blocks = 20_000 / BLOCK;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % blocks,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..blocks {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % blocks;
        let base = u16::try_from(10_000 + n * BLOCK).expect("port");
        // Every port of the block, the gateway's RTP range included: other processes on
        // this machine (other test runs, load scripts) come and go in this range too.
        if (0..BLOCK as u16).all(|o| udp_free(base + o)) {
            return Ports {
                trunk_sip: base,
                trunk_media: base + 2,
                handsets: [(base + 8, base + 10), (base + 16, base + 18)],
                rtp: (base + 24, base + 63),
            };
        }
    }
    panic!("no free block of UDP ports in 10000-29999");
}

// ---- RFC 4733 captures ----------------------------------------------------------------

/// One record of a pcap file: (seconds, microseconds, frame).
type Record = (u32, u32, Vec<u8>);

fn read_pcap(path: &Path) -> (Vec<u8>, Vec<Record>) {
    let d = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        d.len() >= 24 && d[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "{}: not a little-endian microsecond pcap",
        path.display()
    );
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

/// Writes `out`: the key presses of `keys` (`0-9 * #`; `_` is a 1.5 s pause) as one RTP
/// stream: one SSRC, rising sequence numbers, one timestamp per press, 300 ms apart.
/// Returns how long it plays.
fn dtmf_pcap(keys: &str, out: &Path) -> Duration {
    dtmf_pcap_then(keys, out, None)
}

/// A burst pattern of one sine tone in PCMU: `bursts` times `on_ms` of tone then `off_ms`
/// of silence, starting `lead_ms` after the first key press of the stream.
#[derive(Debug, Clone, Copy)]
struct Tone {
    hz: f64,
    lead_ms: u64,
    on_ms: u64,
    off_ms: u64,
    bursts: u64,
}

/// The called party's voice: 1 kHz bursts 500 ms after pressing the key.
const CALLEE_TONE: Tone = Tone {
    hz: 1000.0,
    lead_ms: 500,
    on_ms: 400,
    off_ms: 200,
    bursts: 3,
};
/// The inmate's voice: 440 Hz bursts from the end of the PIN, for the whole call.
const INMATE_TONE: Tone = Tone {
    hz: 440.0,
    lead_ms: 0,
    on_ms: 300,
    off_ms: 200,
    bursts: 40,
};

impl Tone {
    /// 20 ms PCMU frames (silence between bursts is sent too, as a phone does).
    fn frames(&self) -> Vec<Vec<u8>> {
        let law = sallyport::media::g711::Law::Ulaw;
        let total = self.bursts * (self.on_ms + self.off_ms) / 20;
        (0..total)
            .map(|f| {
                (0..160u64)
                    .map(|i| {
                        let n = f * 160 + i;
                        let ms = n / 8;
                        let on = ms % (self.on_ms + self.off_ms) < self.on_ms;
                        let t = n as f64 / 8000.0;
                        let v = if on {
                            (8000.0 * (std::f64::consts::TAU * self.hz * t).sin()) as i16
                        } else {
                            0
                        };
                        law.encode(v)
                    })
                    .collect()
            })
            .collect()
    }
}

/// `dtmf_pcap`, then (if any) `tone` in the same RTP stream, `lead_ms` after the first
/// key press's first packet. Returns how long the keys play.
fn dtmf_pcap_then(keys: &str, out: &Path, tone: Option<Tone>) -> Duration {
    let mut file = Vec::new();
    let mut template: Option<Vec<u8>> = None;
    let (mut seq, mut ts, ssrc) = (1000u16, 160_000u32, 0x5a11_9047u32);
    let mut at_us: u64 = 0;
    let mut origin = None;
    for key in keys.chars() {
        if key == '_' {
            at_us += 1_500_000;
            ts = ts.wrapping_add(12_000);
            continue;
        }
        let name = match key {
            '0'..='9' => format!("dtmf_2833_{key}.pcap"),
            '#' => "dtmf_2833_pound.pcap".into(),
            '*' => "dtmf_2833_star.pcap".into(),
            _ => panic!("no capture for key {key:?}"),
        };
        let (header, recs) = read_pcap(&pcap_dir().join(name));
        if file.is_empty() {
            file.extend_from_slice(&header);
        }
        let first = u64::from(recs[0].0) * 1_000_000 + u64::from(recs[0].1);
        let origin = *origin.get_or_insert(first);
        for (s, us, mut frame) in recs {
            template.get_or_insert_with(|| frame.clone());
            let rel = u64::from(s) * 1_000_000 + u64::from(us) - first;
            let t = origin + at_us + rel;
            // Ethernet, IPv4 (IHL), UDP: no checksum (sipp sends the payload from a socket).
            let udp = 14 + usize::from(frame[14] & 0x0f) * 4;
            frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
            let rtp = udp + 8;
            frame[rtp + 2..rtp + 4].copy_from_slice(&seq.to_be_bytes());
            frame[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
            frame[rtp + 8..rtp + 12].copy_from_slice(&ssrc.to_be_bytes());
            seq = seq.wrapping_add(1);
            let len = u32::try_from(frame.len()).unwrap();
            for v in [
                u32::try_from(t / 1_000_000).unwrap(),
                u32::try_from(t % 1_000_000).unwrap(),
                len,
                len,
            ] {
                file.extend_from_slice(&v.to_le_bytes());
            }
            file.extend_from_slice(&frame);
        }
        at_us += 300_000;
        ts = ts.wrapping_add(2_400);
    }
    let keys_play = Duration::from_micros(at_us);
    if let (Some(tone), Some(template), Some(origin)) = (tone, template, origin) {
        let udp = 14 + usize::from(template[14] & 0x0f) * 4;
        let rtp = udp + 8;
        // A tone after the PIN starts where the keys end; after a single key, `lead_ms`
        // after its first packet. The timestamps already run to `at_us`.
        let start = if keys.len() > 1 {
            at_us
        } else {
            (tone.lead_ms * 1000).max(at_us)
        };
        ts = ts.wrapping_add(u32::try_from((start - at_us) / 125).unwrap());
        for (i, payload) in tone.frames().into_iter().enumerate() {
            let mut frame = template[..rtp + 12].to_vec();
            frame[rtp + 1] = 0; // PCMU, no marker
            frame[rtp + 2..rtp + 4].copy_from_slice(&seq.to_be_bytes());
            frame[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
            frame[rtp + 8..rtp + 12].copy_from_slice(&ssrc.to_be_bytes());
            frame.extend_from_slice(&payload);
            let ip_len = u16::try_from(frame.len() - 14).unwrap();
            frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
            let udp_len = u16::try_from(frame.len() - udp).unwrap();
            frame[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
            frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            let t = origin + start + i as u64 * 20_000;
            let len = u32::try_from(frame.len()).unwrap();
            for v in [
                u32::try_from(t / 1_000_000).unwrap(),
                u32::try_from(t % 1_000_000).unwrap(),
                len,
                len,
            ] {
                file.extend_from_slice(&v.to_le_bytes());
            }
            file.extend_from_slice(&frame);
        }
    }
    fs::write(out, file).unwrap();
    keys_play
}

// ---- HTTP API -------------------------------------------------------------------------

#[derive(Clone)]
struct Api {
    addr: String,
}

impl Api {
    /// One request; the status and the body as JSON (or a JSON string).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(k) = key {
            head.push_str(&format!("Idempotency-Key: {k}\r\n"));
        }
        let body = body.map_or(String::new(), |(ctype, b)| {
            head.push_str(&format!("Content-Type: {ctype}\r\n"));
            b
        });
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, v)
    }

    fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        key: Option<&str>,
    ) -> Value {
        let (s, v) = self.request(method, path, body, key);
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None, None)
    }

    fn send(&self, method: &str, path: &str, v: Value) -> Value {
        self.ok(
            method,
            path,
            Some(("application/json", v.to_string())),
            None,
        )
    }

    fn money(&self, path: &str, key: &str, v: Value) -> Value {
        self.ok(
            "POST",
            path,
            Some(("application/json", v.to_string())),
            Some(key),
        )
    }

    fn upload(&self, path: &str, csv: &str) -> Value {
        self.ok("POST", path, Some(("text/csv", csv.to_string())), None)
    }

    fn balance(&self, account: &str) -> Decimal {
        money(&self.get(&format!("/api/v1/accounts/{account}"))["balance"])
    }

    fn assert_ledger_clean(&self) {
        let v = self.get("/api/v1/ledger/check");
        assert_eq!(v["violations"], json!([]), "ledger check: {v}");
    }

    /// Call-charge lines on the account's statement.
    fn call_charges(&self, account: &str) -> Vec<Value> {
        let st = self.get(&format!("/api/v1/accounts/{account}/statement"));
        st["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "call_charge")
            .cloned()
            .collect()
    }

    /// Waits until `n` calls are recorded and all are ended; returns them, oldest first.
    fn ended_calls(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.get(&format!("/api/v1/calls?facility_id={FACILITY}"));
            let calls = v["items"].as_array().cloned().unwrap_or_default();
            if calls.len() >= n && calls.iter().all(|c| c["state"] == "ended") {
                assert_eq!(calls.len(), n, "more calls than expected: {v}");
                return calls.into_iter().rev().collect();
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} ended call(s), have: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
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

/// The plan every test uses: 3-second increments at $0.05/min ($0.0025 an increment),
/// under the FCC prison cap of $0.06/min, on the demo facility.
fn three_second_increments(api: &Api) {
    let csv = format!(
        "class,service,per_minute,increment_secs\nlocal,audio,{PER_MINUTE},3\ndomestic,audio,{PER_MINUTE},3\ninternational,audio,{PER_MINUTE},3\n"
    );
    api.upload("/api/v1/rate-plans?id=sipp-3s&max_call_secs=3600", &csv);
    api.send(
        "PATCH",
        &format!("/api/v1/facilities/{FACILITY}"),
        json!({ "rate_plan_id": "sipp-3s" }),
    );
}

struct Inmate {
    id: String,
    account: String,
    pin: String,
}

/// Books an inmate of the demo facility with `pin` and `number` as approved contact.
fn book(api: &Api, booking: &str, pin: &str, number: &str, privileged: bool) -> Inmate {
    let i = api.send(
        "POST",
        &format!("/api/v1/facilities/{FACILITY}/inmates"),
        json!({ "booking_number": booking, "first_name": "Test", "last_name": booking, "pin": pin }),
    );
    let id = i["id"].as_str().unwrap().to_string();
    let c = api.send(
        "POST",
        &format!("/api/v1/inmates/{id}/contacts"),
        json!({ "number": number, "name": "Called Party", "relationship": "friend", "privileged": privileged }),
    );
    api.ok(
        "POST",
        &format!("/api/v1/contacts/{}/approve", c["id"].as_str().unwrap()),
        None,
        None,
    );
    Inmate {
        id,
        account: i["account_id"].as_str().unwrap().to_string(),
        pin: pin.into(),
    }
}

/// Brings the inmate's balance (zero after booking) to exactly `amount`: deposits whole
/// cents (deposits take no less) and posts a commissary purchase of the excess.
fn fund(api: &Api, inmate: &Inmate, amount: &str) {
    let want = dec(amount);
    let cents = (want * Decimal::from(100)).ceil() / Decimal::from(100);
    let acc = &inmate.account;
    api.money(
        &format!("/api/v1/accounts/{acc}/deposits"),
        &format!("fund-{acc}"),
        json!({ "amount": cents.to_string(), "method": "online", "depositor": "sipp tests" }),
    );
    let excess = cents - want;
    if excess > Decimal::ZERO {
        api.money(
            &format!("/api/v1/accounts/{acc}/purchases"),
            &format!("trim-{acc}"),
            json!({ "amount": excess.to_string(), "reference": "trim", "memo": "exact test balance" }),
        );
    }
    assert_eq!(api.balance(acc), want);
}

// ---- the gateway ----------------------------------------------------------------------

struct Gateway {
    child: Child,
    api: Api,
    sip: SocketAddr,
}

impl Gateway {
    fn start(dir: &Path, ports: &Ports, run: usize) -> Gateway {
        let log = fs::File::create(dir.join(format!("gateway-{run}.log"))).unwrap();
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
        let out_path = dir.join(format!("gateway-{run}.stdout"));
        std::thread::spawn(move || {
            let mut out = fs::File::create(out_path).unwrap();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                let _ = tx.send(line);
            }
        });
        let (mut http, mut sip) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() || sip.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "the gateway did not print both 'HTTP API listening' and 'SIP listening' \
                         within 30 s (http {http:?}, sip {sip:?}); see gateway-{run}.log"
                    );
                }
            };
            if let Some(a) = line.strip_prefix("sallyport: HTTP API listening on http://") {
                http = Some(a.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("sallyport: SIP listening on ") {
                let udp = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("udp://"))
                    .unwrap_or_else(|| panic!("no udp:// in {line:?}"));
                sip = Some(udp.parse::<SocketAddr>().expect("SIP UDP address"));
            }
        }
        Gateway {
            child,
            api: Api {
                addr: http.unwrap(),
            },
            sip: sip.unwrap(),
        }
    }
}

// ---- sipp -----------------------------------------------------------------------------

struct Sipp {
    name: String,
    dir: PathBuf,
    child: Option<Child>,
    started: Instant,
}

impl Sipp {
    fn spawn(dir: &Path, name: &str, scenario: &str, args: &[String]) -> Sipp {
        let dir = dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sipp");
        cmd.current_dir(&dir)
            .arg("-sf")
            .arg(Path::new(SCENARIOS).join(scenario))
            .args(args)
            .args([
                "-m",
                "1",
                "-nostdin",
                "-aa",
                "-timeout",
                "90s",
                "-timeout_error",
            ])
            .args(["-trace_msg", "-message_file", "messages.log"])
            .args(["-trace_err", "-error_file", "errors.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                fs::File::create(dir.join("screen.log")).unwrap(),
            ))
            .stderr(Stdio::from(
                fs::File::create(dir.join("stderr.log")).unwrap(),
            ));
        fs::write(dir.join("command.txt"), format!("{cmd:?}\n")).unwrap();
        Sipp {
            name: name.into(),
            dir,
            child: Some(cmd.spawn().expect("start sipp")),
            started: Instant::now(),
        }
    }

    /// Waits for sipp to end with every call successful (exit 0); returns how long it ran.
    fn expect_ok(&mut self, timeout: Duration) -> Duration {
        let deadline = self.started + timeout;
        let child = self.child.as_mut().expect("sipp already reaped");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                assert!(
                    st.success(),
                    "sipp {} failed ({st}): see {}/errors.log and messages.log",
                    self.name,
                    self.dir.display()
                );
                return self.started.elapsed();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!("sipp {} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn messages(&self) -> String {
        fs::read_to_string(self.dir.join("messages.log")).unwrap_or_default()
    }

    /// Requests received or sent with `method` (request lines `METHOD sip:…`).
    fn count_requests(&self, method: &str) -> usize {
        let prefix = format!("{method} sip:");
        self.messages()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The called party's behaviour (`trunk.xml`).
#[derive(Clone, Copy)]
struct Trunk {
    mode: &'static str,
    ring_ms: u32,
    key: &'static str,
    key_via: Via,
    key_ms: u32,
    then: &'static str,
    hold_ms: u32,
    /// Audio sent after the key press (in the same RTP stream as the key).
    voice: Option<Tone>,
}

impl Trunk {
    /// Answers after 500 ms of ringing and presses `key` a second after the ACK; then
    /// waits for the gateway's BYE.
    fn answer(key: &'static str) -> Trunk {
        Trunk {
            mode: "answer",
            ring_ms: 500,
            key,
            key_via: Via::Rtp,
            key_ms: 1000,
            then: "wait",
            hold_ms: 0,
            voice: None,
        }
    }
    fn busy() -> Trunk {
        Trunk {
            mode: "busy",
            ..Trunk::answer("none")
        }
    }
    fn ring_forever() -> Trunk {
        Trunk {
            mode: "ring",
            ..Trunk::answer("none")
        }
    }
    /// Presses the key by SIP INFO instead of RFC 4733.
    fn key_by_info(self) -> Trunk {
        Trunk {
            key_via: Via::Info,
            ..self
        }
    }
    /// Speaks `tone` after pressing the key.
    fn speaking(self, tone: Tone) -> Trunk {
        Trunk {
            voice: Some(tone),
            ..self
        }
    }
    /// Hangs up `ms` after pressing the key.
    fn hang_up_after(self, ms: u32) -> Trunk {
        Trunk {
            then: "bye",
            hold_ms: ms,
            ..self
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Via {
    Rtp,
    Info,
}

/// The inmate's behaviour (`handset.xml`).
#[derive(Clone)]
struct Handset {
    user: String,
    number: String,
    pin: String,
    via: Via,
    attempts: u32,
    then: &'static str,
    hold_ms: u32,
    /// Audio sent after the PIN (RFC 4733 PINs only: same RTP stream).
    voice: Option<Tone>,
}

impl Handset {
    /// `handset-1` dials the contact, enters `pin` and `#`, then waits for the BYE.
    fn new(pin: &str, via: Via) -> Handset {
        Handset {
            user: "handset-1".into(),
            number: NUMBER.into(),
            pin: pin.into(),
            via,
            attempts: 1,
            then: "wait",
            hold_ms: 0,
            voice: None,
        }
    }
    fn dial(mut self, number: &str) -> Self {
        self.number = number.into();
        self
    }
    fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }
    fn user(mut self, u: &str) -> Self {
        self.user = u.into();
        self
    }
    /// Speaks `tone` after the PIN.
    fn speaking(mut self, tone: Tone) -> Self {
        self.voice = Some(tone);
        self
    }
    /// Hangs up `ms` after the PIN was entered.
    fn hang_up_after(mut self, ms: u32) -> Self {
        self.then = "bye";
        self.hold_ms = ms;
        self
    }
}

// ---- one test -------------------------------------------------------------------------

/// One test's gateway, sipps and files; on a panic it prints what is needed to see why.
struct Case {
    name: &'static str,
    dir: PathBuf,
    ports: Ports,
    gateway: Option<Gateway>,
    runs: usize,
    sipp_dirs: Mutex<Vec<PathBuf>>,
}

impl Case {
    /// Starts a gateway with the 3-second plan, or `None` when sipp is absent.
    fn start(name: &'static str) -> Option<Case> {
        if !sipp_present() {
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("sip_calls")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut case = Case {
            name,
            dir,
            ports: ports(),
            gateway: None,
            runs: 0,
            sipp_dirs: Mutex::new(Vec::new()),
        };
        case.restart_gateway();
        three_second_increments(&case.api());
        Some(case)
    }

    /// (Re)starts the gateway on the same database.
    fn restart_gateway(&mut self) {
        self.runs += 1;
        self.gateway = Some(Gateway::start(&self.dir, &self.ports, self.runs));
    }

    /// SIGKILL: no shutdown, no cleanup.
    fn kill_gateway(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            g.child.kill().unwrap();
            g.child.wait().unwrap();
        }
    }

    fn api(&self) -> Api {
        self.gateway.as_ref().expect("gateway running").api.clone()
    }

    /// `sallyport verify-recordings` on this test's database and files: exit 0?, output.
    fn verify_recordings(&self) -> (bool, String) {
        let out = Command::new(BIN)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("verify-recordings")
            .env(
                "SALLYPORT_DATABASE_URL",
                format!("sqlite://{}/db.sqlite", self.dir.display()),
            )
            .env("SALLYPORT_NODE_DATA_DIR", &self.dir)
            .env("SALLYPORT_LOG", "warn")
            .output()
            .expect("run verify-recordings");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn trunk(&self, t: Trunk) -> Sipp {
        let dir = self.dir.join("trunk");
        fs::create_dir_all(&dir).unwrap();
        dtmf_pcap_then("1", &dir.join("key1.pcap"), t.voice);
        dtmf_pcap("2", &dir.join("key2.pcap"));
        let args: Vec<String> = [
            "-i",
            "127.0.0.1",
            "-p",
            &self.ports.trunk_sip.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &self.ports.trunk_media.to_string(),
            "-set",
            "mode",
            t.mode,
            "-set",
            "ring_ms",
            &t.ring_ms.to_string(),
            "-set",
            "key",
            t.key,
            "-set",
            "key_ms",
            &t.key_ms.to_string(),
            "-set",
            "key_via",
            if t.key_via == Via::Rtp { "rtp" } else { "info" },
            "-set",
            "then",
            t.then,
            "-set",
            "hold_ms",
            &t.hold_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.sipp_dirs.lock().unwrap().push(dir);
        let s = Sipp::spawn(&self.dir, "trunk", "trunk.xml", &args);
        // Let the UAS bind before the gateway can send it anything.
        std::thread::sleep(Duration::from_millis(300));
        s
    }

    /// Handset `slot` (0 or 1: its own SIP and media ports) places a call.
    fn handset(&self, slot: usize, h: &Handset) -> Sipp {
        let name = format!("handset{slot}");
        let dir = self.dir.join(&name);
        fs::create_dir_all(&dir).unwrap();
        let keys = vec![format!("{}#", h.pin); h.attempts as usize].join("_");
        let plays = dtmf_pcap_then(&keys, &dir.join("pin.pcap"), h.voice);
        let d: Vec<char> = h.pin.chars().collect();
        assert_eq!(
            d.len(),
            4,
            "the INFO branch of handset.xml sends four digits"
        );
        fs::write(
            dir.join("calls.csv"),
            format!(
                "SEQUENTIAL\n{};{};{};{};{}\n",
                h.user, d[0], d[1], d[2], d[3]
            ),
        )
        .unwrap();
        let (sip, media) = self.ports.handsets[slot];
        let gw = self.gateway.as_ref().expect("gateway running").sip;
        let via = if h.via == Via::Rtp { "rtp" } else { "info" };
        let args: Vec<String> = [
            "-i",
            "127.0.0.1",
            "-p",
            &sip.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &media.to_string(),
            "-s",
            &h.number,
            &gw.to_string(),
            "-inf",
            "calls.csv",
            "-set",
            "pin_via",
            via,
            "-set",
            "attempts",
            &h.attempts.to_string(),
            "-set",
            "pin_ms",
            &(plays.as_millis() + 300).to_string(),
            "-set",
            "then",
            h.then,
            "-set",
            "hold_ms",
            &h.hold_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.sipp_dirs.lock().unwrap().push(dir);
        Sipp::spawn(&self.dir, &name, "handset.xml", &args)
    }

    fn dump(&self) {
        eprintln!(
            "==== {} failed; files kept in {}",
            self.name,
            self.dir.display()
        );
        for run in 1..=self.runs {
            let log =
                fs::read_to_string(self.dir.join(format!("gateway-{run}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(150);
            eprintln!("---- gateway-{run}.log (last {} lines)", lines.len() - from);
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
        for dir in self.sipp_dirs.lock().unwrap().iter() {
            for f in ["command.txt", "errors.log", "messages.log"] {
                let text = fs::read_to_string(dir.join(f)).unwrap_or_default();
                let text = if text.len() > 12_000 {
                    &text[text.len() - 12_000..]
                } else {
                    &text[..]
                };
                eprintln!("---- {}/{f}\n{text}", dir.display());
            }
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            let _ = g.child.kill();
            let _ = g.child.wait();
        }
        if std::thread::panicking() {
            self.dump();
        } else if std::env::var_os("SALLYPORT_TEST_KEEP").is_some() {
            eprintln!("{}: files kept in {}", self.name, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("CDR has no {field}: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("CDR {field}: {e}: {v}"))
}

/// Seconds from acceptance to the end of the call.
fn connected_secs(cdr: &Value) -> f64 {
    (time(cdr, "end_at") - time(cdr, "accepted_at")).num_milliseconds() as f64 / 1000.0
}

/// A refused call: the gateway played a notice and hung up; nothing reached the trunk,
/// nothing was charged.
fn assert_refused(case: &Case, trunk: &mut Sipp, reason: &str, inmate: Option<&Inmate>) {
    let api = case.api();
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], reason, "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(money(&cdr["amount"]), Decimal::ZERO, "{cdr}");
    assert!(cdr["accepted_at"].is_null(), "{cdr}");
    trunk.stop();
    assert_eq!(
        trunk.count_requests("INVITE"),
        0,
        "the trunk must see no INVITE:\n{}",
        trunk.messages()
    );
    if let Some(i) = inmate {
        assert!(api.call_charges(&i.account).is_empty());
    }
    api.assert_ledger_clean();
}

// ---- the calls ------------------------------------------------------------------------

/// The happy path to its end: PIN by RFC 4733, the called party presses 1, the call is
/// billed increment by increment and cut when the balance (exactly three increments) is
/// spent: notice, BYE to both legs, balance exactly zero.
#[test]
fn funds_exhaustion_cuts_after_three_increments() {
    let Some(case) = Case::start("funds_exhaustion") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-100", "4821", NUMBER, false);
    fund(&api, &inmate, "0.0075");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    assert_eq!(cdr["number"], NUMBER, "{cdr}");
    assert_eq!(cdr["billed_increments"], 3, "{cdr}");
    assert_eq!(money(&cdr["amount"]), dec("0.0075"), "{cdr}");
    // Three paid increments (9 s), then the ~2.5 s notice before the BYE: within one
    // increment of 9 s, and never a fourth increment.
    let secs = connected_secs(cdr);
    assert!(
        (8.5..=12.5).contains(&secs),
        "connected for {secs} s: {cdr}"
    );
    assert_eq!(api.balance(&inmate.account), Decimal::ZERO);
    assert_eq!(api.call_charges(&inmate.account).len(), 3);
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk leg got its BYE");
    // Neither party said anything: what the recording holds is the gateway's own prompts,
    // each on the channel of the party that heard it (the warning to the inmate on the
    // right, the notice to the called party on the left), in the last seconds of the call.
    let (rec, file) = recorded(&case, cdr);
    assert_eq!(rec.status, sallyport::store::RecordingStatus::Complete);
    for (name, channel) in [("left", &file.left), ("right", &file.right)] {
        let tail = &channel[channel.len().saturating_sub(6 * 8000)..];
        let loud = tail
            .iter()
            .filter(|&&b| file.law.decode(b).unsigned_abs() > 1_000)
            .count();
        assert!(
            loud > 4_000,
            "no prompt on the {name} channel in the last 6 s ({loud} loud samples)"
        );
    }
    api.assert_ledger_clean();
}

/// PIN by SIP INFO; the inmate hangs up mid-call: only the increments started are charged.
#[test]
fn pin_by_sip_info_then_caller_hangs_up_mid_call() {
    let Some(case) = Case::start("caller_hangup") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-200", "5930", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Info).hang_up_after(8_000),
    );
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    let secs = connected_secs(cdr);
    let billed = cdr["billed_increments"].as_i64().unwrap();
    let started = (secs / INCREMENT_SECS).floor() as i64 + 1;
    let near_boundary = (secs % INCREMENT_SECS) < 0.3 || (secs % INCREMENT_SECS) > 2.7;
    assert!(
        billed == started || (near_boundary && (billed - started).abs() <= 1),
        "connected {secs} s: {started} increments started, {billed} billed: {cdr}"
    );
    assert!(billed >= 1, "{cdr}");
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00") - charged);
    assert_eq!(api.call_charges(&inmate.account).len() as i64, billed);
    api.assert_ledger_clean();
}

/// PIN by RFC 4733 with a repeated key (each press its own event); the called party hangs
/// up.
#[test]
fn pin_by_rfc2833_then_callee_hangs_up() {
    let Some(case) = Case::start("callee_hangup") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-300", "7337", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1").hang_up_after(2_000));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    trunk.expect_ok(Duration::from_secs(40));
    hs.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "callee_hangup", "{cdr}");
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 1, "{cdr}");
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - dec(COST) * Decimal::from(billed)
    );
    api.assert_ledger_clean();
}

/// Three wrong PINs: a notice and BYE, reason pin_failed, no trunk INVITE.
#[test]
fn three_wrong_pins() {
    let Some(case) = Case::start("three_wrong_pins") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-400", "6142", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new("9081", Via::Info).attempts(3));
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "pin_failed", Some(&inmate));
    let cdr = &api.ended_calls(1)[0];
    assert!(
        cdr["inmate_id"].is_null(),
        "no inmate was identified: {cdr}"
    );
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
}

/// A number not on the inmate's approved list.
#[test]
fn number_not_approved() {
    let Some(case) = Case::start("not_approved") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-500", "3817", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).dial("+15551239999"));
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "not_approved", Some(&inmate));
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
}

/// An approved contact on the facility's block list.
#[test]
fn blocked_number() {
    let Some(case) = Case::start("blocked") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-600", "2749", NUMBER, false);
    fund(&api, &inmate, "1.00");
    api.send(
        "POST",
        &format!("/api/v1/facilities/{FACILITY}/blocks"),
        json!({ "number": NUMBER, "reason": "harassment complaint" }),
    );
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "blocked", Some(&inmate));
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
}

/// A balance below one increment: "insufficient funds", released uncharged, the trunk
/// never sees an INVITE.
#[test]
fn insufficient_funds() {
    let Some(case) = Case::start("insufficient_funds") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-700", "8263", NUMBER, false);
    fund(&api, &inmate, "0.0024");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "insufficient_funds", Some(&inmate));
    assert_eq!(api.balance(&inmate.account), dec("0.0024"));
}

/// The called party presses 2 (by SIP INFO): both legs end, nothing is charged.
#[test]
fn called_party_declines() {
    let Some(case) = Case::start("declined") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-800", "4096", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("2").key_by_info());
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(40));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "declined", "{cdr}");
    assert!(!cdr["answer_at"].is_null(), "the trunk answered: {cdr}");
    assert!(cdr["accepted_at"].is_null(), "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    assert!(api.call_charges(&inmate.account).is_empty());
    api.assert_ledger_clean();
}

/// The trunk answers 486 Busy Here.
#[test]
fn trunk_busy() {
    let Some(case) = Case::start("busy") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-900", "1357", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::busy());
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    trunk.expect_ok(Duration::from_secs(40));
    hs.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "busy", "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    api.assert_ledger_clean();
}

/// The inmate hangs up while the trunk still rings: the gateway CANCELs the trunk INVITE.
#[test]
fn caller_hangs_up_while_ringing_cancels_the_trunk() {
    let Some(case) = Case::start("cancel") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1000", "2468", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::ring_forever());
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).hang_up_after(4_000));
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    assert_eq!(trunk.count_requests("CANCEL"), 1, "{}", trunk.messages());
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    assert!(cdr["answer_at"].is_null(), "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    api.assert_ledger_clean();
}

/// An attorney: the call is never recorded. Dialed as a national number; the called
/// party accepts by SIP INFO.
#[test]
fn privileged_contact_is_not_recorded() {
    let Some(case) = Case::start("privileged") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1100", "9753", NUMBER, true);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1").key_by_info().hang_up_after(2_000));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).dial("5551230001"));
    trunk.expect_ok(Duration::from_secs(40));
    hs.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "callee_hangup", "{cdr}");
    assert_eq!(cdr["number"], NUMBER, "normalized to E.164: {cdr}");
    assert_eq!(cdr["privileged"], true, "{cdr}");
    assert_eq!(cdr["recorded"], false, "{cdr}");
    assert!(cdr["recording_id"].is_null(), "{cdr}");
    api.assert_ledger_clean();
}

/// One inmate, two handsets: the second call is refused while the first is up.
#[test]
fn second_concurrent_call_of_one_inmate_is_refused() {
    let Some(case) = Case::start("concurrent") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1200", "8024", NUMBER, false);
    fund(&api, &inmate, "1.00");
    api.send(
        "POST",
        &format!("/api/v1/facilities/{FACILITY}/handsets"),
        json!({ "name": "Second handset", "location": "Housing unit B", "sip_username": "handset-2" }),
    );
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut first = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).hang_up_after(9_000));
    // Wait until the first call holds the inmate (the claim is made at the destination check).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live = api.get("/api/v1/calls/active");
        if live
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["inmate_id"] == inmate.id.as_str()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first call never claimed the inmate: {live}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut second = case.handset(1, &Handset::new(&inmate.pin, Via::Info).user("handset-2"));
    second.expect_ok(Duration::from_secs(30));
    first.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let calls = api.ended_calls(2);
    assert_eq!(calls[0]["end_reason"], "caller_hangup", "{}", calls[0]);
    assert_eq!(calls[1]["end_reason"], "call_limit", "{}", calls[1]);
    assert_eq!(calls[1]["billed_increments"], 0, "{}", calls[1]);
    assert_eq!(trunk.count_requests("INVITE"), 1, "one trunk INVITE only");
    let billed = calls[0]["billed_increments"].as_i64().unwrap();
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - dec(COST) * Decimal::from(billed)
    );
    api.assert_ledger_clean();
}

/// The gateway is SIGKILLed while a call is bridged and billing, and restarted on the
/// same database: the CDR is closed with reason `system`, the increments debited before
/// the kill stand (once each), and the ledger is clean.
#[test]
fn gateway_killed_mid_call_loses_no_money() {
    let Some(mut case) = Case::start("killed_mid_call") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1300", "3141", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Rtp).speaking(INMATE_TONE),
    );
    // Bridged and billing: at least two increments debited.
    let deadline = Instant::now() + Duration::from_secs(40);
    while api.balance(&inmate.account) > dec("1.00") - dec(COST) * Decimal::from(2) {
        assert!(
            Instant::now() < deadline,
            "the call never got to its second increment"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    case.kill_gateway();
    hs.stop();
    trunk.stop();
    case.restart_gateway();
    let api = case.api();
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "system", "{cdr}");
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 2, "{cdr}");
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00") - charged);
    let charges = api.call_charges(&inmate.account);
    assert_eq!(
        charges.len() as i64,
        billed,
        "each increment debited once: {charges:?}"
    );
    // Nothing more is debited after the restart.
    std::thread::sleep(Duration::from_secs(2 * INCREMENT_SECS as u64));
    assert_eq!(api.balance(&inmate.account), dec("1.00") - charged);
    api.assert_ledger_clean();
    // The recording the killed gateway left open was closed at the restart: marked
    // incomplete, its header repaired (playable up to the last flush), hashed and chained.
    let (rec, file) = recorded(&case, cdr);
    assert_eq!(rec.status, sallyport::store::RecordingStatus::Incomplete);
    assert!(rec.chain_seq.is_some(), "chained: {rec:?}");
    // The kill came 3 s or more after acceptance; the file had the inmate's audio up to
    // the last flush (every second, holding back 200 ms for late packets).
    let secs = file.left.len() as f64 / 8000.0;
    assert!(
        secs >= 1.5,
        "only {secs} s survived the kill (two increments of 3 s ran)"
    );
    let left: Vec<i16> = file.left.iter().map(|&b| file.law.decode(b)).collect();
    let spoken = bursts(&tone_share(&left, INMATE_TONE.hz));
    assert!(spoken.len() >= 2, "the inmate's audio survived: {spoken:?}");
}

/// The harness itself, without the gateway: the two scenarios against each other (PIN by
/// SIP INFO twice, answer, press 1, BYE); then the handset against a bare UAS written
/// here, which checks that the generated PIN capture arrives from the port the handset's
/// SDP names (the gateway latches to exactly that), as one SSRC with rising sequence
/// numbers and one timestamp per key press, repeated keys included.
#[test]
fn scenarios_play_against_each_other() {
    if !sipp_present() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("sip_calls")
        .join(format!("self-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let p = ports();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (hs_sip, hs_media) = p.handsets[0];
    let handset_args = |via: &str, plays: Duration| {
        s(&[
            "-i",
            "127.0.0.1",
            "-p",
            &hs_sip.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &hs_media.to_string(),
            "-s",
            NUMBER,
            &format!("127.0.0.1:{}", p.trunk_sip),
            "-inf",
            "calls.csv",
            "-set",
            "pin_via",
            via,
            "-set",
            "attempts",
            "2",
            "-set",
            "pin_ms",
            &(plays.as_millis() + 300).to_string(),
            "-set",
            "then",
            "bye",
            "-set",
            "hold_ms",
            "500",
        ])
    };
    let prepare = |name: &str| {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        dtmf_pcap("1", &d.join("key1.pcap"));
        dtmf_pcap("2", &d.join("key2.pcap"));
        fs::write(d.join("calls.csv"), "SEQUENTIAL\nhandset-1;1;2;2;3\n").unwrap();
        dtmf_pcap("1223#", &d.join("pin.pcap"))
    };

    // A: sipp against sipp, PIN by INFO.
    prepare("trunk");
    let mut trunk = Sipp::spawn(
        &dir,
        "trunk",
        "trunk.xml",
        &s(&[
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
            "100",
            "-set",
            "key",
            "1",
            "-set",
            "key_ms",
            "200",
            "-set",
            "then",
            "wait",
            "-set",
            "hold_ms",
            "0",
        ]),
    );
    std::thread::sleep(Duration::from_millis(300));
    let plays = prepare("handset-info");
    let mut hs = Sipp::spawn(
        &dir,
        "handset-info",
        "handset.xml",
        &handset_args("info", plays),
    );
    hs.expect_ok(Duration::from_secs(30));
    trunk.expect_ok(Duration::from_secs(10));
    assert!(
        hs.count_requests("INFO") >= 10,
        "two PINs of five keys:\n{}",
        hs.messages()
    );
    assert_eq!(trunk.count_requests("BYE"), 1);

    // B: PIN by RTP to a bare UAS whose SDP names `media`.
    let uas = UdpSocket::bind(("127.0.0.1", p.trunk_sip)).unwrap();
    let media = UdpSocket::bind(("127.0.0.1", p.rtp.0)).unwrap();
    uas.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let plays = prepare("handset-rtp");
    let mut hs = Sipp::spawn(
        &dir,
        "handset-rtp",
        "handset.xml",
        &handset_args("rtp", plays),
    );
    let mut buf = [0u8; 4096];
    let (n, from) = uas.recv_from(&mut buf).expect("an INVITE");
    let invite = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(invite.starts_with("INVITE "), "{invite}");
    let sdp_port: u16 = invite
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio in the INVITE");
    assert_eq!(sdp_port, hs_media);
    let answer = |status: &str, req: &str, body: &str| {
        let h = |name: &str| {
            req.lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
                .unwrap_or("")
                .to_string()
        };
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "SIP/2.0 {status}\r\n{}\r\n{}\r\n{};tag=bare-uas\r\n{}\r\n{}\r\nContact: <sip:uas@127.0.0.1:{}>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            h("Via"), h("From"), h("To").trim_end_matches(";tag=bare-uas"), h("Call-ID"), h("CSeq"),
            p.trunk_sip, body.len()
        )
    };
    let sdp = format!(
        "v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        p.rtp.0
    );
    uas.send_to(answer("200 OK", &invite, &sdp).as_bytes(), from)
        .unwrap();
    // ACK (and perhaps a retransmitted INVITE) first, then RTP, then the BYE.
    let mut events = Vec::new();
    while let Ok((n, src)) = media.recv_from(&mut buf) {
        assert_eq!(src.port(), hs_media, "RTP must come from the SDP's port");
        let b = &buf[..n];
        events.push((
            b[1] & 0x7f,
            u16::from_be_bytes([b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            b[12],
        ));
    }
    loop {
        let (n, from) = uas.recv_from(&mut buf).expect("a BYE");
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        if req.starts_with("BYE ") {
            uas.send_to(answer("200 OK", &req, "").as_bytes(), from)
                .unwrap();
            break;
        }
    }
    hs.expect_ok(Duration::from_secs(10));
    assert_eq!(events.len(), 50, "5 keys × 10 packets: {events:?}");
    assert!(
        events.iter().all(|e| e.0 == 101 && e.3 == events[0].3),
        "{events:?}"
    );
    assert!(
        events.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
        "{events:?}"
    );
    let mut presses: Vec<(u32, u8)> = events.iter().map(|e| (e.2, e.4)).collect();
    presses.dedup();
    assert_eq!(
        presses.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![1, 2, 2, 3, 11]
    );
    let _ = fs::remove_dir_all(&dir);
}

/// An investigator (here the administrator) ends a live, billed call through the API: both
/// legs get BYE, the CDR says `terminated`, the increments started stand and no more are
/// charged; the call can be terminated once, and a caller without the right role cannot.
#[test]
fn terminate_through_the_api_ends_a_live_call() {
    let Some(case) = Case::start("terminate") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-950", "2468", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let live = api.get(&format!("/api/v1/calls/active?facility={FACILITY}"));
        let accepted = live
            .as_array()
            .and_then(|a| a.iter().find(|c| !c["accepted_at"].is_null()).cloned());
        if let Some(c) = accepted {
            break c["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no call was accepted: {live}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !api.get(&format!("/api/v1/calls/{id}"))["number"].is_null(),
        "a live call shows its number"
    );
    // Let both scenarios reach their wait for BYE (and a second increment start).
    std::thread::sleep(Duration::from_millis(4_000));
    let path = format!("/api/v1/calls/{id}/terminate");
    let (status, cdr) = api.request("POST", &path, None, None);
    assert_eq!(status, 200, "{cdr}");
    assert_eq!(cdr["state"], "ended", "{cdr}");
    assert_eq!(cdr["end_reason"], "terminated", "{cdr}");
    trunk.expect_ok(Duration::from_secs(20));
    hs.expect_ok(Duration::from_secs(20));
    let (again, body) = api.request("POST", &path, None, None);
    assert_eq!(again, 409, "a second terminate: {body}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 1, "{cdr}");
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    std::thread::sleep(Duration::from_millis(INCREMENT_SECS as u64 * 1000 + 500));
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - charged,
        "nothing after the end"
    );
    assert_eq!(api.call_charges(&inmate.account).len() as i64, billed);
    api.assert_ledger_clean();
}

// ---- recordings -----------------------------------------------------------------------

/// The recording row of `id`, read from the test's SQLite database.
fn recording_row(case: &Case, id: &str) -> sallyport::store::Recording {
    let url = format!("sqlite://{}/db.sqlite", case.dir.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = sallyport::db::Db::connect(&url, 1).await.unwrap();
        let store = sallyport::store::Store::new(
            db,
            std::sync::Arc::new(sallyport::clock::SystemClock),
            "unused-pepper-for-reading",
        );
        store.recording(id).await.unwrap()
    })
}

/// The recording of an ended call: its row (checked against the file: hash, size) and
/// its samples.
fn recorded(
    case: &Case,
    cdr: &Value,
) -> (
    sallyport::store::Recording,
    sallyport::recording::wav::Decoded,
) {
    assert_eq!(cdr["recorded"], true, "{cdr}");
    let id = cdr["recording_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording id: {cdr}"));
    let rec = recording_row(case, id);
    let path = case.dir.join("recordings").join(&rec.path);
    assert_eq!(
        Some(sallyport::recording::hash_file(&path).unwrap()),
        rec.sha256,
        "the file hashes to its row"
    );
    assert_eq!(Some(fs::metadata(&path).unwrap().len() as i64), rec.bytes);
    let file = sallyport::recording::wav::read(&path).unwrap();
    assert_eq!(file.left.len(), file.right.len());
    (rec, file)
}

/// Power of `hz` in each 10 ms window of `samples` (Goertzel), relative to the window's
/// total power (1.0 = a pure tone at `hz`).
fn tone_share(samples: &[i16], hz: f64) -> Vec<f64> {
    samples
        .chunks(80)
        .map(|w| {
            let k = 2.0 * (std::f64::consts::TAU * hz / 8000.0).cos();
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            let mut total = 0.0;
            for &x in w {
                let x = f64::from(x);
                total += x * x;
                let s0 = x + k * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - k * s1 * s2;
            if total < 1e3 * w.len() as f64 {
                0.0
            } else {
                power / (total * w.len() as f64 / 2.0)
            }
        })
        .collect()
}

/// Start times (ms) of the runs of windows where `share` says the tone is on, and each
/// run's length (ms).
fn bursts(share: &[f64]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &v) in share.iter().chain(std::iter::once(&0.0)).enumerate() {
        match (v > 0.5, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s as u64 * 10, (i - s) as u64 * 10));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// A recorded call: the inmate speaks 440 Hz bursts after the PIN, the called party 1 kHz
/// bursts 500 ms after pressing 1. The file is stereo G.711 with the inmate on the left
/// and the called party on the right, each side's bursts where and as long as they were
/// sent, nothing of one side on the other's channel; its length is the CDR's connected
/// time within a packet, and its SHA-256 is the row's.
#[test]
fn a_recorded_call_keeps_each_party_on_its_channel_at_the_right_time() {
    let Some(case) = Case::start("recording") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1500", "4682", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1").speaking(CALLEE_TONE));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Rtp)
            .speaking(INMATE_TONE)
            .hang_up_after(9_000),
    );
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    let (rec, file) = recorded(&case, cdr);
    assert_eq!(rec.status, sallyport::store::RecordingStatus::Complete);
    assert_eq!(rec.format, "wav-pcmu");
    assert!(
        rec.path
            .ends_with(&format!("{}.wav", cdr["id"].as_str().unwrap())),
        "{}",
        rec.path
    );
    let connected_ms = (time(cdr, "end_at") - time(cdr, "accepted_at")).num_milliseconds();
    let duration = rec.duration_ms.unwrap();
    assert!(
        (duration - connected_ms).abs() <= 20,
        "recording {duration} ms, CDR connected {connected_ms} ms"
    );
    assert_eq!(rec.dropped_packets, 0);

    let decode = |c: &[u8]| -> Vec<i16> { c.iter().map(|&b| file.law.decode(b)).collect() };
    let (left, right) = (decode(&file.left), decode(&file.right));
    assert_eq!(
        left.len() as i64 / 8,
        duration,
        "duration_ms is the file's length"
    );
    assert_eq!(left.len(), right.len());

    // The called party: three 400 ms bursts 600 ms apart, the first 500 ms after acceptance
    // (the key press that accepted is the start of the recording).
    let callee = bursts(&tone_share(&right, CALLEE_TONE.hz));
    assert_eq!(callee.len(), 3, "callee bursts on the right: {callee:?}");
    for (i, (at, len)) in callee.iter().enumerate() {
        let expected = CALLEE_TONE.lead_ms + i as u64 * 600;
        assert!(
            at.abs_diff(expected) <= 30,
            "burst {i} at {at} ms, expected {expected}: {callee:?}"
        );
        assert!(
            len.abs_diff(CALLEE_TONE.on_ms) <= 20,
            "burst {i} lasts {len} ms: {callee:?}"
        );
    }
    // The inmate: 300 ms bursts every 500 ms for the whole call, on the left only.
    let inmate_bursts = bursts(&tone_share(&left, INMATE_TONE.hz));
    // The first and last may be cut by acceptance and hang-up.
    let whole = inmate_bursts
        .get(1..inmate_bursts.len().saturating_sub(1))
        .unwrap_or(&[]);
    assert!(
        whole.len() >= 4,
        "inmate bursts on the left: {inmate_bursts:?}"
    );
    for pair in whole.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap.abs_diff(500) <= 20,
            "inmate bursts {pair:?} are {gap} ms apart"
        );
        assert!(
            pair[0].1.abs_diff(INMATE_TONE.on_ms) <= 20,
            "inmate burst {pair:?}"
        );
    }
    // Nothing of one party on the other's channel.
    assert!(
        bursts(&tone_share(&left, CALLEE_TONE.hz)).is_empty(),
        "callee tone on the left"
    );
    assert!(
        bursts(&tone_share(&right, INMATE_TONE.hz)).is_empty(),
        "inmate tone on the right"
    );

    // The integrity checks see it: the API's per-recording check, then the CLI's whole
    // chain, clean; one byte changed in the file and both name it.
    let check = api.get(&format!("/api/v1/recordings/{}/verify", rec.id));
    assert_eq!(check["ok"], true, "{check}");
    let (ok, out) = case.verify_recordings();
    assert!(ok, "verify-recordings on the fresh recording: {out}");
    let path = case.dir.join("recordings").join(&rec.path);
    let mut bytes = fs::read(&path).unwrap();
    bytes[1000] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let (ok, out) = case.verify_recordings();
    assert!(
        !ok && out.contains(&rec.id) && out.contains("changed"),
        "{out}"
    );
    let check = api.get(&format!("/api/v1/recordings/{}/verify", rec.id));
    assert_eq!(check["ok"], false, "{check}");
    api.assert_ledger_clean();
}
