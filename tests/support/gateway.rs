//! The real `sallyport serve` for end-to-end tests: a fresh SQLite database and recordings
//! directory under the test's directory, HTTP and SIP on port 0 (read back from the lines
//! `serve` prints), the trunk and RTP range of the test's [`Ports`](super::sipp::Ports),
//! and an HTTP client for its API.

use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sallyport");
pub const ADMIN: &str = "e2e-tests-admin-token";
pub const FACILITY: &str = "DEMO";
/// The number booked inmates get as their approved contact (local in the demo deck).
pub const NUMBER: &str = "+15551230001";

pub struct Gateway {
    pub child: Child,
    pub api: Api,
    pub sip: SocketAddr,
    pub dir: PathBuf,
}

/// Trunk SIP port and RTP range the gateway is given.
pub struct GatewayPorts {
    pub trunk_sip: u16,
    pub rtp: (u16, u16),
}

impl Gateway {
    pub fn start(dir: &Path, ports: &GatewayPorts) -> Gateway {
        let log = fs::File::create(dir.join("gateway.log")).expect("gateway log");
        let mut child = Command::new(BIN)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("serve")
            .envs(env(dir, ports))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sallyport serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
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
                    "the gateway did not start within 30 s; see {}/gateway.log",
                    dir.display()
                );
            };
            if let Some(a) = line.strip_prefix("sallyport: HTTP API listening on http://") {
                http = Some(a.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("sallyport: SIP listening on ") {
                sip = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("udp://"))
                    .and_then(|a| a.parse().ok());
            }
        }
        Gateway {
            child,
            api: Api::admin(&http.expect("http")),
            sip: sip.expect("sip"),
            dir: dir.to_path_buf(),
        }
    }

    /// `http://host:port` of the API and console.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.api.addr)
    }

    /// The last lines of the gateway's log (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(dir: &Path, ports: &GatewayPorts) -> Vec<(String, String)> {
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

/// The API over plain HTTP/1.1, as one bearer.
#[derive(Clone)]
pub struct Api {
    pub addr: String,
    pub token: String,
}

impl Api {
    pub fn admin(addr: &str) -> Api {
        Api {
            addr: addr.into(),
            token: ADMIN.into(),
        }
    }

    /// One request: status, head (lower-cased) and the body as JSON (or a string).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> (u16, String, Value) {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            self.addr, self.token
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.map_or(String::new(), |(ctype, b)| {
            head.push_str(&format!("Content-Type: {ctype}\r\n"));
            b
        });
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(head.as_bytes()).expect("send");
        s.write_all(body.as_bytes()).expect("send");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("read");
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            super::webdriver::dechunk(body)
        } else {
            body.to_string()
        };
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, head, v)
    }

    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| ("application/json", b.to_string()));
        let (s, _, v) = self.send(method, path, body, &[]);
        (s, v)
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.request(method, path, body);
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    pub fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None)
    }

    pub fn post(&self, path: &str, v: Value) -> Value {
        self.ok("POST", path, Some(v))
    }

    /// Creates a user (global admin only; `POST /users`).
    pub fn add_user(&self, username: &str, password: &str, role: &str, facilities: &[&str]) {
        self.post(
            "/api/v1/users",
            json!({ "username": username, "password": password, "role": role,
                    "facilities": facilities }),
        );
    }

    /// A facility like the demo one, with `id`.
    pub fn add_facility(&self, id: &str) {
        self.post(
            "/api/v1/facilities",
            json!({ "id": id, "name": format!("Facility {id}"), "time_zone": "UTC",
                    "deposit_max": "300.00", "deposit_daily_max": "300.00" }),
        );
    }

    /// Search results: the `items` of the paged answer (or a bare list).
    pub fn calls(&self, query: &str) -> Vec<Value> {
        let v = self.get(&format!("/api/v1/calls?{query}"));
        let list = v.get("items").cloned().unwrap_or(v);
        list.as_array().cloned().unwrap_or_default()
    }
}

/// 3-second increments at $0.05/min on the demo facility.
pub fn three_second_increments(api: &Api) {
    let mut csv = String::from("class,service,per_minute,increment_secs\n");
    for class in ["local", "domestic", "international"] {
        csv.push_str(&format!("{class},audio,0.05,3\n"));
    }
    let path = "/api/v1/rate-plans?id=e2e-3s&max_call_secs=3600";
    let (s, _, v) = api.send("POST", path, Some(("text/csv", csv)), &[]);
    assert!((200..300).contains(&s), "rate plan: {s} {v}");
    api.ok(
        "PATCH",
        &format!("/api/v1/facilities/{FACILITY}"),
        Some(json!({ "rate_plan_id": "e2e-3s" })),
    );
}

pub struct Inmate {
    pub id: String,
    pub account: String,
    pub booking: String,
    pub pin: String,
}

/// Books an inmate of the demo facility with [`NUMBER`] approved, funded with `amount`.
pub fn book_funded(api: &Api, booking: &str, pin: &str, amount: &str) -> Inmate {
    let i = api.post(
        &format!("/api/v1/facilities/{FACILITY}/inmates"),
        json!({ "booking_number": booking, "first_name": "Test", "last_name": booking, "pin": pin }),
    );
    let id = i["id"].as_str().expect("inmate id").to_string();
    let c = api.post(
        &format!("/api/v1/inmates/{id}/contacts"),
        json!({ "number": NUMBER, "name": "Called Party", "relationship": "friend", "privileged": false }),
    );
    let contact = c["id"].as_str().expect("contact id");
    api.ok("POST", &format!("/api/v1/contacts/{contact}/approve"), None);
    let account = i["account_id"].as_str().expect("account").to_string();
    let body = json!({ "amount": amount, "method": "online", "depositor": "e2e tests" });
    let key = format!("fund-{account}");
    let (s, _, v) = api.send(
        "POST",
        &format!("/api/v1/accounts/{account}/deposits"),
        Some(("application/json", body.to_string())),
        &[("Idempotency-Key", &key)],
    );
    assert!((200..300).contains(&s), "deposit: {s} {v}");
    Inmate {
        id,
        account,
        booking: booking.into(),
        pin: pin.into(),
    }
}
