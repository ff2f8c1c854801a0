//! sipp around the gateway: a handset (UAC, `tests/sipp/handset.xml`) and the carrier trunk
//! with the called party behind it (UAS, `tests/sipp/trunk.xml`), each sending audio: the
//! key presses (RFC 4733 events from Debian's sip-tester captures) followed, in the same RTP
//! stream, by a PCMU tone, so that the relay has media to carry, record and monitor.
//! (The same harness as `tests/sip_calls.rs`, cut down to what the browser tests need.)

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");

fn pcap_dir() -> PathBuf {
    std::env::var_os("SALLYPORT_SIPP_PCAPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/sip-tester"))
}

/// Whether sipp and its captures are here; prints why not (or panics in CI).
pub fn present() -> bool {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok || !pcap_dir().join("dtmf_2833_1.pcap").exists() {
        sallyport::db::testing::skip_or_fail(
            "sipp or its captures (Debian package sip-tester) are missing: browser test skipped",
        );
        return false;
    }
    true
}

// ---- ports ----------------------------------------------------------------------------

/// UDP ports of one test, from a block of 64 checked free in 10000-29999 (below the
/// ephemeral range), starting at an offset derived from the process id.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub trunk_sip: u16,
    pub trunk_media: u16,
    pub handset_sip: u16,
    pub handset_media: u16,
    pub rtp: (u16, u16),
}

const BLOCK: u32 = 64;

pub fn ports() -> Ports {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let blocks = 20_000 / BLOCK;
    // Away from the blocks tests/sip_calls.rs starts at in the same process-id scheme.
    let start = (std::process::id() + blocks / 2) % blocks;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    let free = |p: u16| UdpSocket::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..blocks {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % blocks;
        let base = u16::try_from(10_000 + n * BLOCK).expect("port");
        if (0..BLOCK as u16).all(|o| free(base + o)) {
            return Ports {
                trunk_sip: base,
                trunk_media: base + 2,
                handset_sip: base + 8,
                handset_media: base + 10,
                rtp: (base + 24, base + 63),
            };
        }
    }
    panic!("no free block of UDP ports in 10000-29999");
}

// ---- audio ----------------------------------------------------------------------------

type Record = (u32, u32, Vec<u8>);

fn read_pcap(path: &Path) -> (Vec<u8>, Vec<Record>) {
    let d = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        d.len() >= 24 && d[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "{}: not a pcap",
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

/// G.711 µ-law of one linear sample.
fn ulaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    s = s.abs().min(32_635) + 0x84;
    let mut exp = 7;
    while exp > 0 && s & (0x80 << exp) == 0 {
        exp -= 1;
    }
    let mantissa = (s >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) | mantissa) as u8
}

/// One RTP stream written as a pcap: key presses, then a tone.
struct Stream {
    file: Vec<u8>,
    /// Ethernet + IPv4 + UDP header of a capture, the lengths rewritten per frame.
    link: Vec<u8>,
    seq: u16,
    ts: u32,
    ssrc: u32,
    at_us: u64,
    origin: u64,
}

impl Stream {
    fn new() -> Stream {
        let (header, recs) = read_pcap(&pcap_dir().join("dtmf_2833_0.pcap"));
        let frame = &recs[0].2;
        let rtp = 14 + usize::from(frame[14] & 0x0f) * 4 + 8;
        let origin = u64::from(recs[0].0) * 1_000_000 + u64::from(recs[0].1);
        Stream {
            file: header,
            link: frame[..rtp].to_vec(),
            seq: 1000,
            ts: 160_000,
            ssrc: 0x5a11_9047,
            at_us: 0,
            origin,
        }
    }

    fn push(&mut self, t_us: u64, mut frame: Vec<u8>) {
        let t = self.origin + t_us;
        let len = u32::try_from(frame.len()).expect("frame");
        let ip = 14;
        let udp = ip + usize::from(frame[ip] & 0x0f) * 4;
        let ip_len = u16::try_from(frame.len() - ip).expect("ip length");
        let udp_len = u16::try_from(frame.len() - udp).expect("udp length");
        frame[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
        frame[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
        frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
        for v in [(t / 1_000_000) as u32, (t % 1_000_000) as u32, len, len] {
            self.file.extend_from_slice(&v.to_le_bytes());
        }
        self.file.extend_from_slice(&frame);
    }

    /// The captured presses of `keys` (`0-9 * #`), 300 ms apart, renumbered into this stream.
    fn keys(&mut self, keys: &str) {
        for key in keys.chars() {
            let name = match key {
                '0'..='9' => format!("dtmf_2833_{key}.pcap"),
                '#' => "dtmf_2833_pound.pcap".into(),
                '*' => "dtmf_2833_star.pcap".into(),
                _ => panic!("no capture for key {key:?}"),
            };
            let (_, recs) = read_pcap(&pcap_dir().join(name));
            let first = u64::from(recs[0].0) * 1_000_000 + u64::from(recs[0].1);
            for (s, us, mut frame) in recs {
                let rel = u64::from(s) * 1_000_000 + u64::from(us) - first;
                let rtp = 14 + usize::from(frame[14] & 0x0f) * 4 + 8;
                frame[rtp + 2..rtp + 4].copy_from_slice(&self.seq.to_be_bytes());
                frame[rtp + 4..rtp + 8].copy_from_slice(&self.ts.to_be_bytes());
                frame[rtp + 8..rtp + 12].copy_from_slice(&self.ssrc.to_be_bytes());
                self.seq = self.seq.wrapping_add(1);
                self.push(self.at_us + rel, frame);
            }
            self.at_us += 300_000;
            self.ts = self.ts.wrapping_add(2_400);
        }
    }

    /// `secs` of a PCMU sine at `hz`, 20 ms a packet.
    fn tone(&mut self, hz: f64, secs: u32) {
        let mut n = 0u64;
        for _ in 0..secs * 50 {
            let mut frame = self.link.clone();
            frame.extend_from_slice(&[0x80, 0]);
            frame.extend_from_slice(&self.seq.to_be_bytes());
            frame.extend_from_slice(&self.ts.to_be_bytes());
            frame.extend_from_slice(&self.ssrc.to_be_bytes());
            for _ in 0..160 {
                let x = (2.0 * std::f64::consts::PI * hz * n as f64 / 8000.0).sin();
                frame.push(ulaw((x * 8000.0) as i16));
                n += 1;
            }
            self.push(self.at_us, frame);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
            self.at_us += 20_000;
        }
    }
}

/// Writes `out`: the presses of `keys`, then `secs` of a tone at `hz`; returns how long
/// the presses take.
pub fn keys_then_tone(keys: &str, hz: f64, secs: u32, out: &Path) -> Duration {
    let mut s = Stream::new();
    s.keys(keys);
    let keys_take = Duration::from_micros(s.at_us);
    s.tone(hz, secs);
    fs::write(out, &s.file).expect("write pcap");
    keys_take
}

// ---- sipp processes -------------------------------------------------------------------

pub struct Sipp {
    pub name: String,
    pub dir: PathBuf,
    child: Option<Child>,
    started: Instant,
}

impl Sipp {
    fn spawn(dir: &Path, scenario: &str, args: &[String]) -> Sipp {
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir)
            .arg("-sf")
            .arg(Path::new(SCENARIOS).join(scenario))
            .args(args)
            .args([
                "-m",
                "1",
                "-nostdin",
                "-aa",
                "-timeout",
                "120s",
                "-timeout_error",
            ])
            .args(["-trace_msg", "-message_file", "messages.log"])
            .args(["-trace_err", "-error_file", "errors.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                fs::File::create(dir.join("screen.log")).expect("log"),
            ))
            .stderr(Stdio::from(
                fs::File::create(dir.join("stderr.log")).expect("log"),
            ));
        Sipp {
            name: scenario.into(),
            dir: dir.to_path_buf(),
            child: Some(cmd.spawn().expect("start sipp")),
            started: Instant::now(),
        }
    }

    /// Waits for sipp to end with its call successful.
    pub fn expect_ok(&mut self, timeout: Duration) {
        let child = self.child.as_mut().expect("sipp already reaped");
        loop {
            if let Some(st) = child.try_wait().expect("wait sipp") {
                self.child = None;
                assert!(
                    st.success(),
                    "sipp {} failed ({st}): see {}/errors.log",
                    self.name,
                    self.dir.display()
                );
                return;
            }
            assert!(
                self.started.elapsed() < timeout,
                "sipp {} still running after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The called party: answers, presses 1 (accepting the call) and keeps sending a 660 Hz
/// tone until the gateway's BYE.
pub fn trunk(dir: &Path, ports: &Ports) -> Sipp {
    let dir = dir.join("trunk");
    fs::create_dir_all(&dir).expect("trunk dir");
    keys_then_tone("1", 660.0, 100, &dir.join("key1.pcap"));
    keys_then_tone("2", 660.0, 1, &dir.join("key2.pcap"));
    let (sip, media) = (ports.trunk_sip.to_string(), ports.trunk_media.to_string());
    let args = strings(&[
        "-i",
        "127.0.0.1",
        "-p",
        &sip,
        "-mi",
        "127.0.0.1",
        "-mp",
        &media,
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
    let s = Sipp::spawn(&dir, "trunk.xml", &args);
    // Let the UAS bind before the gateway can send it anything.
    std::thread::sleep(Duration::from_millis(300));
    s
}

/// The inmate: `handset-1` dials [`super::gateway::NUMBER`], enters `pin` (RFC 4733), keeps
/// sending a 440 Hz tone, and hangs up `hold` after the PIN (or, with `None`, waits for
/// the gateway's BYE).
pub fn handset(
    dir: &Path,
    ports: &Ports,
    gateway: std::net::SocketAddr,
    pin: &str,
    hold: Option<Duration>,
) -> Sipp {
    let dir = dir.join("handset");
    fs::create_dir_all(&dir).expect("handset dir");
    let keys_take = keys_then_tone(&format!("{pin}#"), 440.0, 100, &dir.join("pin.pcap"));
    let d: Vec<char> = pin.chars().collect();
    assert_eq!(d.len(), 4, "four-digit PIN");
    fs::write(
        dir.join("calls.csv"),
        format!(
            "SEQUENTIAL\nhandset-1;{};{};{};{}\n",
            d[0], d[1], d[2], d[3]
        ),
    )
    .expect("calls.csv");
    let (sip, media) = (
        ports.handset_sip.to_string(),
        ports.handset_media.to_string(),
    );
    let pin_ms = (keys_take.as_millis() + 300).to_string();
    let (then, hold_ms) = match hold {
        Some(h) => ("bye", h.as_millis().to_string()),
        None => ("wait", "0".to_string()),
    };
    let args = strings(&[
        "-i",
        "127.0.0.1",
        "-p",
        &sip,
        "-mi",
        "127.0.0.1",
        "-mp",
        &media,
        "-s",
        super::gateway::NUMBER,
        &gateway.to_string(),
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
        &pin_ms,
        "-set",
        "then",
        then,
        "-set",
        "hold_ms",
        &hold_ms,
    ]);
    Sipp::spawn(&dir, "handset.xml", &args)
}
