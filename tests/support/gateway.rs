//! The real `sallyport serve` for end-to-end tests: a SQLite database and recordings
//! directory under the test's directory, configured through `SALLYPORT_*` variables: HTTP
//! and SIP on port 0 (read back from the lines `serve` prints), the trunk and RTP range of
//! the test's [`Ports`]. Its log stays in the test's directory (`<name>.log`, what it
//! printed in `<name>.stdout`).

use super::api::{Api, ADMIN};
use super::sipp::Ports;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sallyport");

pub(crate) struct Gateway {
    pub child: Child,
    /// The API as the administrator.
    pub api: Api,
    /// Where it listens for SIP over UDP.
    pub sip: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
}

impl Gateway {
    /// Starts the gateway on `dir` (its database there), logging to `gateway.log`.
    pub(crate) fn start(dir: &Path, ports: &Ports) -> Gateway {
        Gateway::start_as(dir, ports, "gateway")
    }

    /// Starts the gateway on `dir`, logging to `<name>.log` (a restart on the same
    /// database takes another name).
    pub(crate) fn start_as(dir: &Path, ports: &Ports, name: &str) -> Gateway {
        Gateway::start_with(dir, ports, name, |_| {})
    }

    /// [`Gateway::start_as`] with the child's command customised by `customise` before it
    /// is spawned (more `SALLYPORT_*` variables, a `pre_exec`). When it pipes stderr, the
    /// log is copied from the pipe to `<name>.log`.
    pub(crate) fn start_with(
        dir: &Path,
        ports: &Ports,
        name: &str,
        customise: impl FnOnce(&mut Command),
    ) -> Gateway {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(BIN);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("serve")
            .envs(env(dir, ports))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(fs::File::create(&log).expect("gateway log")));
        customise(&mut cmd);
        let mut child = cmd.spawn().expect("start sallyport serve");
        if let Some(mut stderr) = child.stderr.take() {
            let mut out = fs::File::create(&log).expect("gateway log");
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut out));
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let out_path = dir.join(format!("{name}.stdout"));
        std::thread::spawn(move || {
            let mut out = fs::File::create(out_path).expect("gateway stdout");
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                let _ = tx.send(line);
            }
        });
        let (mut http, mut sip) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() || sip.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!(
                    "the gateway did not print both 'HTTP API listening' and 'SIP listening' \
                     within 30 s (http {http:?}, sip {sip:?}); see {}",
                    log.display()
                );
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
            api: Api::admin(&http.expect("http")),
            sip: sip.expect("sip"),
            log,
        }
    }

    /// `http://host:port` of the API and console.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.api.addr)
    }

    /// SIGKILL: no shutdown, no cleanup.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("kill the gateway");
        self.child.wait().expect("reap the gateway");
    }

    /// User + system CPU seconds the gateway process has used.
    pub(crate) fn cpu_secs(&self) -> f64 {
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

/// The harness's configuration. `rtp.media_timeout_secs` keeps its default (60 s), so
/// every end-to-end call runs with the media timeout on: the scenarios' parties fall
/// silent once their keys and tones have played (no RTP at all), and every test's bridged
/// phase stays well under a minute (the longest, about 15 s). A test that bridges longer
/// in silence must set the key itself ([`Gateway::start_with`]).
fn env(dir: &Path, ports: &Ports) -> Vec<(String, String)> {
    let d = dir.display();
    [
        ("DATABASE_URL", format!("sqlite://{d}/db.sqlite")),
        ("NODE_DATA_DIR", d.to_string()),
        ("RECORDING_DIR", format!("{d}/recordings")),
        ("HTTP_LISTEN", "127.0.0.1:0".into()),
        ("HTTP_ADMIN_TOKEN", ADMIN.into()),
        ("SIP_UDP_LISTEN", "127.0.0.1:0".into()),
        ("SIP_TCP_LISTEN", "127.0.0.1:0".into()),
        ("SIP_TRUNK", format!("127.0.0.1:{}", ports.trunk_sip)),
        ("RTP_PORT_MIN", ports.rtp.0.to_string()),
        ("RTP_PORT_MAX", ports.rtp.1.to_string()),
        ("RTP_ADVERTISED_IP", "127.0.0.1".into()),
        ("RTP_LISTEN_IP", "127.0.0.1".into()),
        ("BILLING_ACCEPT_TIMEOUT_SECS", "10".into()),
        (
            "LOG",
            std::env::var("SALLYPORT_TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (format!("SALLYPORT_{k}"), v))
    .chain([("NO_COLOR".to_string(), "1".to_string())])
    .collect()
}

/// `sallyport verify-recordings` on the database and files of `dir`.
pub(crate) fn verify_recordings(dir: &Path) -> Output {
    verify_recordings_on(dir, &format!("sqlite://{}/db.sqlite", dir.display()))
}

/// `sallyport verify-recordings` on the files of `dir` and the database at `database_url`.
pub(crate) fn verify_recordings_on(dir: &Path, database_url: &str) -> Output {
    Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("verify-recordings")
        .env("SALLYPORT_DATABASE_URL", database_url)
        .env("SALLYPORT_NODE_DATA_DIR", dir)
        .env("SALLYPORT_LOG", "warn")
        .output()
        .expect("run verify-recordings")
}
