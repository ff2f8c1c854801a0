//! sipp around the gateway: facility handsets (UAC, `tests/sipp/handset.xml`) and the
//! carrier trunk with the called party behind it (UAS, `tests/sipp/trunk.xml`), the UDP
//! ports of one test, and the audio they send: key presses as RFC 4733 events (a pcap
//! built from the Debian sip-tester captures with one SSRC and rising sequence numbers and
//! timestamps, so that repeated keys are distinct presses), optionally followed in the
//! same RTP stream by a PCMU tone, and finding those tones again in a recording.

use sallyport::media::g711::Law;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");

/// Where the sip-tester RFC 2833 captures live (`dtmf_2833_1.pcap`, …).
pub(crate) fn pcap_dir() -> PathBuf {
    std::env::var_os("SALLYPORT_SIPP_PCAPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/sip-tester"))
}

/// Whether sipp and its captures are here; prints why not (or panics under
/// `SALLYPORT_REQUIRE_EXTERNAL=1`), naming `what` is skipped.
pub(crate) fn present(what: &str) -> bool {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        sallyport::db::testing::skip_or_fail(&format!(
            "sipp is not installed (Debian package sip-tester): {what} skipped"
        ));
        return false;
    }
    if !pcap_dir().join("dtmf_2833_1.pcap").exists() {
        sallyport::db::testing::skip_or_fail(&format!(
            "no sipp DTMF captures in {} (set SALLYPORT_SIPP_PCAPS): {what} skipped",
            pcap_dir().display()
        ));
        return false;
    }
    true
}

// ---- ports ----------------------------------------------------------------------------

/// UDP ports of one test. Blocks come from 10000–29999 (below Linux's ephemeral range, so
/// port-0 binds of other processes do not land in them), starting at an offset derived
/// from the process id (and the test binary, so that two binaries rarely meet), and are
/// checked free.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    /// sipp binds its media port and media port + 2 (video): media ports are 4 apart.
    pub trunk_sip: u16,
    pub trunk_media: u16,
    /// (SIP, media) of each handset slot.
    pub handsets: [(u16, u16); 2],
    /// The gateway's RTP range.
    pub rtp: (u16, u16),
}

const BLOCK: u32 = 64;

fn udp_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// Where this test binary starts in the blocks (each binary compiles this module).
fn first_block(blocks: u32) -> u32 {
    let spread = match env!("CARGO_CRATE_NAME") {
        "sip_calls" => 0,
        "browser" => blocks / 2,
        _ => 7,
    };
    (std::process::id() + spread) % blocks
}

/// The next free block of this process.
pub(crate) fn ports() -> Ports {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let blocks = 20_000 / BLOCK;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        first_block(blocks),
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

// ---- RFC 4733 captures and tones ------------------------------------------------------

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

/// A burst pattern of one sine tone: `bursts` times `on_ms` of tone then `off_ms`
/// of silence, starting `lead_ms` after the first key press of the stream (after a PIN:
/// where the keys end).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tone {
    pub hz: f64,
    pub lead_ms: u64,
    pub on_ms: u64,
    pub off_ms: u64,
    pub bursts: u64,
}

impl Tone {
    /// `secs` of an unbroken tone at `hz`, from the end of the keys.
    pub(crate) const fn steady(hz: f64, secs: u64) -> Tone {
        Tone {
            hz,
            lead_ms: 0,
            on_ms: secs * 1000,
            off_ms: 0,
            bursts: 1,
        }
    }

    /// 20 ms frames in `law` (silence between bursts is sent too, as a phone does).
    fn frames(&self, law: Law) -> Vec<Vec<u8>> {
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

/// The SDP encoding name of `law`.
pub(crate) fn codec_name(law: Law) -> &'static str {
    match law {
        Law::Ulaw => "PCMU",
        Law::Alaw => "PCMA",
    }
}

/// The static RTP payload type of `law` (RFC 3551).
pub(crate) fn payload_type(law: Law) -> u8 {
    match law {
        Law::Ulaw => 0,
        Law::Alaw => 8,
    }
}

/// Power of `hz` in each 10 ms window of `samples` (Goertzel), relative to the window's
/// total power (1.0 = a pure tone at `hz`).
pub(crate) fn tone_share(samples: &[i16], hz: f64) -> Vec<f64> {
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
pub(crate) fn bursts(share: &[f64]) -> Vec<(u64, u64)> {
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

/// Writes `out`: the key presses of `keys` (`0-9 * #`; `_` is a 1.5 s pause) as one RTP
/// stream: one SSRC, rising sequence numbers, one timestamp per press, 300 ms apart.
/// Returns how long it plays.
pub(crate) fn dtmf_pcap(keys: &str, out: &Path) -> Duration {
    dtmf_pcap_then(keys, out, None, Law::Ulaw)
}

/// `dtmf_pcap`, then (if any) `tone` in `law` in the same RTP stream, whose SSRC then
/// depends on the tone's frequency (the parties' streams differ). Returns how long the
/// keys play.
pub(crate) fn dtmf_pcap_then(keys: &str, out: &Path, tone: Option<Tone>, law: Law) -> Duration {
    let audio = tone.map(|t| Audio {
        salt: t.hz as u32,
        lead_ms: t.lead_ms,
        frames: t.frames(law),
    });
    dtmf_pcap_then_audio(keys, out, audio, law)
}

/// Audio sent after the keys in the same RTP stream: 20 ms G.711 frames, starting
/// `lead_ms` after a single key's first packet (after several keys: where they end);
/// `salt` varies the SSRC (the parties' streams differ).
pub(crate) struct Audio {
    pub salt: u32,
    pub lead_ms: u64,
    pub frames: Vec<Vec<u8>>,
}

impl Audio {
    /// `codes` (G.711 in the stream's law) cut into 20 ms frames (the last padded with
    /// `silence`).
    pub(crate) fn speech(codes: &[u8], silence: u8, salt: u32) -> Audio {
        Audio {
            salt,
            lead_ms: 0,
            frames: codes
                .chunks(160)
                .map(|c| {
                    let mut f = c.to_vec();
                    f.resize(160, silence);
                    f
                })
                .collect(),
        }
    }
}

/// [`dtmf_pcap_then`] with any audio after the keys.
pub(crate) fn dtmf_pcap_then_audio(
    keys: &str,
    out: &Path,
    tone: Option<Audio>,
    law: Law,
) -> Duration {
    let mut file = Vec::new();
    let mut template: Option<Vec<u8>> = None;
    let ssrc = 0x5a11_9047u32 ^ tone.as_ref().map_or(0, |t| t.salt);
    let (mut seq, mut ts) = (1000u16, 160_000u32);
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
            // Ethernet, IPv4 (IHL), UDP: no checksum (sipp sends the payload from a socket).
            let udp = 14 + usize::from(frame[14] & 0x0f) * 4;
            frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
            let rtp = udp + 8;
            frame[rtp + 2..rtp + 4].copy_from_slice(&seq.to_be_bytes());
            frame[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
            frame[rtp + 8..rtp + 12].copy_from_slice(&ssrc.to_be_bytes());
            seq = seq.wrapping_add(1);
            push_record(&mut file, origin + at_us + rel, &frame);
        }
        at_us += 300_000;
        ts = ts.wrapping_add(2_400);
    }
    let keys_play = Duration::from_micros(at_us);
    if let (Some(tone), Some(template), Some(origin)) = (tone, template, origin) {
        let ip = 14;
        let ihl = usize::from(template[ip] & 0x0f) * 4;
        let udp = ip + ihl;
        let rtp = udp + 8;
        // A tone after the PIN starts where the keys end; after a single key, `lead_ms`
        // after its first packet. The timestamps already run to `at_us`.
        let start = if keys.len() > 1 {
            at_us
        } else {
            (tone.lead_ms * 1000).max(at_us)
        };
        ts = ts.wrapping_add(u32::try_from((start - at_us) / 125).unwrap());
        for (i, payload) in tone.frames.into_iter().enumerate() {
            let mut frame = template[..rtp + 12].to_vec();
            frame[rtp + 1] = payload_type(law); // no marker
            frame[rtp + 2..rtp + 4].copy_from_slice(&seq.to_be_bytes());
            frame[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
            frame[rtp + 8..rtp + 12].copy_from_slice(&ssrc.to_be_bytes());
            frame.extend_from_slice(&payload);
            let ip_len = u16::try_from(frame.len() - ip).unwrap();
            frame[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
            frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
            let sum = ip_checksum(&frame[ip..ip + ihl]);
            frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
            let udp_len = u16::try_from(frame.len() - udp).unwrap();
            frame[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
            frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            push_record(&mut file, origin + start + i as u64 * 20_000, &frame);
        }
    }
    fs::write(out, file).unwrap();
    keys_play
}

// ---- sipp processes -------------------------------------------------------------------

/// One sipp process, its files in `dir` (`command.txt`, `screen.log`, `stderr.log`,
/// `errors.log`, `messages.log`); killed when dropped.
pub(crate) struct Sipp {
    pub name: String,
    pub dir: PathBuf,
    child: Option<Child>,
    started: Instant,
}

impl Sipp {
    /// Runs `scenario` (of `tests/sipp`) for one call in `dir/name`.
    pub(crate) fn spawn(dir: &Path, name: &str, scenario: &str, args: &[String]) -> Sipp {
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
                "120s",
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
    pub(crate) fn expect_ok(&mut self, timeout: Duration) -> Duration {
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

    /// Waits for sipp to end (whatever its status); its exit status.
    pub(crate) fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = self.started + timeout;
        let child = self.child.as_mut().expect("sipp already reaped");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
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

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn messages(&self) -> String {
        fs::read_to_string(self.dir.join("messages.log")).unwrap_or_default()
    }

    /// Requests received or sent with `method` (request lines `METHOD sip:…`).
    pub(crate) fn count_requests(&self, method: &str) -> usize {
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

pub(crate) fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// sipp's own addresses: SIP on `sip`, media on `media`, both on 127.0.0.1; then `rest`.
pub(crate) fn endpoint_args(sip: u16, media: u16, rest: &[&str]) -> Vec<String> {
    endpoint_args_at("127.0.0.1", sip, media, rest)
}

/// [`endpoint_args`] on loopback address `ip` (127.0.0.2, … : a handset on another
/// address than the gateway's and a proxy's).
pub(crate) fn endpoint_args_at(ip: &str, sip: u16, media: u16, rest: &[&str]) -> Vec<String> {
    let (sip, media) = (sip.to_string(), media.to_string());
    let own = ["-i", ip, "-p", &sip, "-mi", ip, "-mp", &media];
    strings(&own).into_iter().chain(strings(rest)).collect()
}

/// Prints the command, errors and message trace (their last 12 kB) of every sipp that
/// ran under `dir`.
pub(crate) fn dump_traces(dir: &Path) {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.join("command.txt").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        for f in ["command.txt", "errors.log", "messages.log"] {
            let text = fs::read_to_string(dir.join(f)).unwrap_or_default();
            let from = text.len().saturating_sub(12_000);
            let from = (from..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            eprintln!("---- {}/{f}\n{}", dir.display(), &text[from..]);
        }
    }
}

// ---- scenarios ------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Via {
    Rtp,
    Info,
}

impl Via {
    fn arg(self) -> &'static str {
        match self {
            Via::Rtp => "rtp",
            Via::Info => "info",
        }
    }
}

/// The called party's behaviour (`trunk.xml`).
#[derive(Clone, Copy)]
pub(crate) struct Trunk {
    pub mode: &'static str,
    pub ring_ms: u32,
    pub key: &'static str,
    pub key_via: Via,
    pub key_ms: u32,
    pub then: &'static str,
    pub hold_ms: u32,
    /// Audio sent after the key press (in the same RTP stream as the key).
    pub voice: Option<Tone>,
    /// The one codec the called party answers with (and speaks in).
    pub law: Law,
    /// Speech sent after the key press instead of `voice`: G.711 codes in `law`.
    pub speech: Option<&'static [u8]>,
}

impl Trunk {
    /// Answers after 500 ms of ringing and presses `key` a second after the ACK; then
    /// waits for the gateway's BYE.
    pub(crate) fn answer(key: &'static str) -> Trunk {
        Trunk {
            mode: "answer",
            ring_ms: 500,
            key,
            key_via: Via::Rtp,
            key_ms: 1000,
            then: "wait",
            hold_ms: 0,
            voice: None,
            law: Law::Ulaw,
            speech: None,
        }
    }
    /// Says `codes` (G.711 in the trunk's law) after pressing the key.
    pub(crate) fn saying(self, codes: &'static [u8]) -> Trunk {
        Trunk {
            speech: Some(codes),
            ..self
        }
    }
    pub(crate) fn busy() -> Trunk {
        Trunk {
            mode: "busy",
            ..Trunk::answer("none")
        }
    }
    pub(crate) fn ring_forever() -> Trunk {
        Trunk {
            mode: "ring",
            ..Trunk::answer("none")
        }
    }
    /// Presses the key by SIP INFO instead of RFC 4733.
    pub(crate) fn key_by_info(self) -> Trunk {
        Trunk {
            key_via: Via::Info,
            ..self
        }
    }
    /// Speaks `tone` after pressing the key.
    pub(crate) fn speaking(self, tone: Tone) -> Trunk {
        Trunk {
            voice: Some(tone),
            ..self
        }
    }
    /// Puts the call on hold without media (re-INVITE, `a=inactive`) after pressing the
    /// key, then waits for the gateway's BYE.
    pub(crate) fn hold_after_key(self) -> Trunk {
        Trunk {
            then: "hold",
            ..self
        }
    }
    /// Hangs up `ms` after pressing the key.
    pub(crate) fn hang_up_after(self, ms: u32) -> Trunk {
        Trunk {
            then: "bye",
            hold_ms: ms,
            ..self
        }
    }
    /// Answers with `law` only (PCMU by default).
    pub(crate) fn law(self, law: Law) -> Trunk {
        Trunk { law, ..self }
    }

    /// The trunk's sipp (in `dir/trunk`) on the trunk ports of `ports`, bound when this
    /// returns.
    pub(crate) fn spawn(&self, dir: &Path, ports: &Ports) -> Sipp {
        let d = dir.join("trunk");
        fs::create_dir_all(&d).unwrap();
        match self.speech {
            Some(codes) => {
                let audio = Audio::speech(codes, self.law.silence(), 0x7a1c);
                dtmf_pcap_then_audio("1", &d.join("key1.pcap"), Some(audio), self.law);
            }
            None => {
                dtmf_pcap_then("1", &d.join("key1.pcap"), self.voice, self.law);
            }
        }
        dtmf_pcap("2", &d.join("key2.pcap"));
        let args = endpoint_args(
            ports.trunk_sip,
            ports.trunk_media,
            &[
                "-set",
                "mode",
                self.mode,
                "-set",
                "ring_ms",
                &self.ring_ms.to_string(),
                "-set",
                "key",
                self.key,
                "-set",
                "key_ms",
                &self.key_ms.to_string(),
                "-set",
                "key_via",
                self.key_via.arg(),
                "-set",
                "then",
                self.then,
                "-set",
                "hold_ms",
                &self.hold_ms.to_string(),
                "-set",
                "pt",
                &payload_type(self.law).to_string(),
                "-set",
                "codec",
                codec_name(self.law),
            ],
        );
        let s = Sipp::spawn(dir, "trunk", "trunk.xml", &args);
        // Let the UAS bind before the gateway can send it anything.
        std::thread::sleep(Duration::from_millis(300));
        s
    }
}

/// The trunk answering a family number's confirmation call (`verify_trunk.xml`, in
/// `dir/name`) on the trunk ports of `ports`: it answers, then keys `keys` (a code of six
/// digits and `#`) by `via` (RFC 4733 or SIP INFO) and waits for the gateway's BYE.
pub(crate) fn confirmation_trunk(
    dir: &Path,
    ports: &Ports,
    name: &str,
    keys: &str,
    via: Via,
) -> Sipp {
    let d = dir.join(name);
    fs::create_dir_all(&d).unwrap();
    dtmf_pcap(keys, &d.join("code.pcap"));
    let mut rest = vec!["-set".to_string(), "via".into(), via.arg().into()];
    if via == Via::Info {
        assert_eq!(keys.chars().count(), 7, "six digits and #: {keys}");
        for (i, k) in keys.chars().enumerate() {
            rest.extend(["-set".into(), format!("k{}", i + 1), k.to_string()]);
        }
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let args = endpoint_args(ports.trunk_sip, ports.trunk_media, &rest);
    Sipp::spawn(dir, name, "verify_trunk.xml", &args)
}

/// The inmate's behaviour (`handset.xml`): keys `calling_id`, `#`, `pin`, `#`.
#[derive(Clone)]
pub(crate) struct Handset {
    pub user: String,
    pub number: String,
    /// The calling ID keyed before the PIN.
    pub calling_id: String,
    pub pin: String,
    pub via: Via,
    pub attempts: u32,
    pub then: &'static str,
    pub hold_ms: u32,
    /// Audio sent after the PIN (RFC 4733 PINs only: same RTP stream).
    pub voice: Option<Tone>,
    /// The codec offered first (both PCMU and PCMA are offered) and spoken.
    pub law: Law,
    /// The payload types offered instead (`-set formats`), e.g. "18" for G.729 alone.
    pub formats: Option<&'static str>,
    /// The loopback address the handset sends from (127.0.0.1 unless [`Handset::sending_from`]).
    pub ip: &'static str,
    /// The SIP password it answers a digest challenge with (`handset_digest.xml`: keys by
    /// INFO, then hangs up after `hold_ms`); `None`: it has none (`handset.xml`).
    pub password: Option<&'static str>,
    /// Speech sent after the PIN instead of `voice`: G.711 codes in `law`.
    pub speech: Option<&'static [u8]>,
}

impl Handset {
    /// `handset-1` dials [`super::api::NUMBER`], keys the calling ID the fixtures give the
    /// inmate booked with `pin` ([`super::api::calling_id_for`]), `#`, `pin`, `#`, then
    /// waits for the BYE.
    pub(crate) fn new(pin: &str, via: Via) -> Handset {
        Handset {
            user: "handset-1".into(),
            number: super::api::NUMBER.into(),
            calling_id: super::api::calling_id_for(pin),
            pin: pin.into(),
            via,
            attempts: 1,
            then: "wait",
            hold_ms: 0,
            voice: None,
            law: Law::Ulaw,
            formats: None,
            ip: "127.0.0.1",
            password: None,
            speech: None,
        }
    }
    /// Authenticates by digest with `password` (its user name is [`Handset::user`]).
    pub(crate) fn digest(mut self, password: &'static str) -> Self {
        self.password = Some(password);
        self
    }
    /// Offers these payload types (space-separated) instead of PCMU and PCMA.
    /// Sends from loopback address `ip` (127.0.0.2, …) instead of 127.0.0.1.
    pub(crate) fn sending_from(mut self, ip: &'static str) -> Self {
        self.ip = ip;
        self
    }

    pub(crate) fn offering(mut self, formats: &'static str) -> Self {
        self.formats = Some(formats);
        self
    }
    /// Offers `law` first and speaks in it.
    pub(crate) fn law(mut self, law: Law) -> Self {
        self.law = law;
        self
    }
    pub(crate) fn dial(mut self, number: &str) -> Self {
        self.number = number.into();
        self
    }
    pub(crate) fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }
    pub(crate) fn user(mut self, u: &str) -> Self {
        self.user = u.into();
        self
    }
    /// Keys this calling ID (instead of the one the fixtures derive from the PIN).
    pub(crate) fn id(mut self, calling_id: &str) -> Self {
        self.calling_id = calling_id.into();
        self
    }
    /// What one attempt keys: the calling ID, `#`, the PIN, `#`.
    pub(crate) fn keys(&self) -> String {
        format!("{}#{}#", self.calling_id, self.pin)
    }
    /// Says `codes` (G.711 in the handset's law) after the PIN.
    pub(crate) fn saying(mut self, codes: &'static [u8]) -> Self {
        self.speech = Some(codes);
        self
    }
    /// Speaks `tone` after the PIN.
    pub(crate) fn speaking(mut self, tone: Tone) -> Self {
        self.voice = Some(tone);
        self
    }
    /// Hangs up `ms` after the PIN was entered.
    pub(crate) fn hang_up_after(mut self, ms: u32) -> Self {
        self.then = "bye";
        self.hold_ms = ms;
        self
    }

    /// Handset `slot` (0 or 1: its own SIP and media ports of `ports`, files in
    /// `dir/handset<slot>`) calls `gateway`.
    pub(crate) fn spawn(
        &self,
        dir: &Path,
        slot: usize,
        ports: &Ports,
        gateway: SocketAddr,
    ) -> Sipp {
        let name = format!("handset{slot}");
        let d = dir.join(&name);
        fs::create_dir_all(&d).unwrap();
        let keys = vec![self.keys(); self.attempts as usize].join("_");
        let plays = match self.speech {
            Some(codes) => {
                let audio = Audio::speech(codes, self.law.silence(), 0x1a7e);
                dtmf_pcap_then_audio(&keys, &d.join("pin.pcap"), Some(audio), self.law)
            }
            None => dtmf_pcap_then(&keys, &d.join("pin.pcap"), self.voice, self.law),
        };
        fs::write(
            d.join("calls.csv"),
            format!("SEQUENTIAL\n{};{}\n", self.user, self.keys()),
        )
        .unwrap();
        let (sip, media) = ports.handsets[slot];
        let credentials = match self.password {
            Some(p) => vec!["-au", self.user.as_str(), "-ap", p],
            None => Vec::new(),
        };
        let scenario = match self.password {
            Some(_) => "handset_digest.xml",
            None => "handset.xml",
        };
        let mut args = endpoint_args_at(
            self.ip,
            sip,
            media,
            &[
                "-s",
                &self.number,
                &gateway.to_string(),
                "-inf",
                "calls.csv",
                "-set",
                "pin_via",
                self.via.arg(),
                "-set",
                "attempts",
                &self.attempts.to_string(),
                "-set",
                "pin_ms",
                &(plays.as_millis() + 300).to_string(),
                "-set",
                "then",
                self.then,
                "-set",
                "hold_ms",
                &self.hold_ms.to_string(),
                "-set",
                "formats",
                self.formats.unwrap_or(match self.law {
                    Law::Ulaw => "0 8",
                    Law::Alaw => "8 0",
                }),
            ],
        );
        args.extend(strings(&credentials));
        Sipp::spawn(dir, &name, scenario, &args)
    }
}
