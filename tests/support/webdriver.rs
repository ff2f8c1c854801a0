//! A small synchronous WebDriver (W3C) client for Debian's chromedriver driving headless
//! Chromium: the handful of commands the browser tests use, over plain HTTP/1.1 on
//! loopback (no TLS, no async runtime, no extra dependency).

use super::api::exchange;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser and its driver are (overridable for other distributions).
pub(crate) fn chromium() -> PathBuf {
    std::env::var_os("SALLYPORT_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

pub(crate) fn chromedriver() -> PathBuf {
    std::env::var_os("SALLYPORT_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// Whether both are installed; prints why not (or panics under
/// `SALLYPORT_REQUIRE_EXTERNAL=1`), naming `what` is skipped.
pub(crate) fn present(what: &str) -> bool {
    for (tool, path) in [("chromium", chromium()), ("chromedriver", chromedriver())] {
        if !path.exists() {
            sallyport::db::testing::skip_or_fail(&format!(
                "{tool} is not installed at {} (Debian packages chromium and chromium-driver): \
                 {what} skipped",
                path.display()
            ));
            return false;
        }
    }
    true
}

/// One chromedriver process with one browser session.
pub(crate) struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `log` receives the driver's output.
    pub(crate) fn start(log: &Path) -> Browser {
        let port = free_port();
        let out = std::fs::File::create(log).expect("driver log");
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(out.try_clone().expect("log handle")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut b = Browser {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
            _profile: profile,
        };
        b.wait_ready();
        b.session = b.new_session();
        // Scripts that open many peer connections take their time.
        b.cmd("POST", "/timeouts", Some(json!({ "script": 120_000 })));
        b
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, v)) = http(&self.addr, "GET", "/status", None) {
                if v["value"]["ready"] == true {
                    return;
                }
            }
            if let Ok(Some(st)) = self.driver.try_wait() {
                panic!("chromedriver exited: {st}");
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn new_session(&self) -> String {
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            // ICE candidates on 127.0.0.1 (the gateway listens there in tests), not
            // hidden behind mDNS names the gateway cannot resolve.
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            profile.as_str(),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium().display().to_string(), "args": args },
            "unhandledPromptBehavior": "ignore",
        }}});
        let v = self.cmd_at("POST", "/session", Some(caps));
        v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_string()
    }

    fn cmd_at(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = http(&self.addr, method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        assert_eq!(status, 200, "webdriver {method} {path}: {v}");
        v["value"].clone()
    }

    /// A command of this session (`path` after `/session/{id}`).
    pub(crate) fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd_at(method, &format!("/session/{}{path}", self.session), body)
    }

    pub(crate) fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching `css`, if any.
    pub(crate) fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({ "using": "css selector", "value": css });
        let (status, v) = http(&self.addr, "POST", &path, Some(body)).ok()?;
        (status == 200)
            .then(|| v["value"][ELEMENT].as_str().map(str::to_string))
            .flatten()
    }

    /// The element matching `css`, waiting for it up to 15 s.
    pub(crate) fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(Instant::now() < deadline, "no element {css} after 15 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn click(&self, css: &str) {
        let e = self.wait_for(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Replaces the text of the input `css`.
    pub(crate) fn fill(&self, css: &str, text: &str) {
        let e = self.wait_for(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub(crate) fn text(&self, css: &str) -> String {
        let e = self.wait_for(css);
        let v = self.cmd("GET", &format!("/element/{e}/text"), None);
        v.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub(crate) fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` until it calls `arguments[arguments.length - 1](value)`.
    pub(crate) fn js_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` (a function body returning a value) until `done` accepts its value,
    /// up to `timeout`; returns that value, or panics with the last one and `what`.
    pub(crate) fn wait_js(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, json!([]));
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still {v} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Accepts the open `confirm()` / `alert()`, waiting for it up to 5 s.
    pub(crate) fn accept_dialog(&self) {
        let path = format!("/session/{}/alert/accept", self.session);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok((200, _)) = http(&self.addr, "POST", &path, Some(json!({}))) {
                return;
            }
            assert!(Instant::now() < deadline, "no dialog to accept");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the viewport to `path` (and prints where).
    pub(crate) fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().unwrap_or_default());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = http(&self.addr, "DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver request; the status and the JSON body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let ctype = [("Content-Type", "application/json; charset=utf-8")];
    let (status, _, body) = exchange(addr, method, path, &ctype, &body, Duration::from_secs(150))?;
    Ok((
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    ))
}

/// Standard base64 (screenshots), ignoring padding and whitespace.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
