//! A small synchronous browser driver for the browser tests: headless Chromium through
//! Debian's chromedriver (W3C WebDriver over plain HTTP/1.1 on loopback), and headless
//! Firefox ESR through its own Marionette protocol (length-prefixed JSON over TCP; Debian
//! has no geckodriver). The handful of commands the tests use, one implementation of the
//! waits above both; no TLS, no async runtime, no extra dependency.

use super::api::exchange;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
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

/// Where Firefox ESR is (overridable).
pub(crate) fn firefox() -> PathBuf {
    std::env::var_os("SALLYPORT_FIREFOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/firefox-esr"))
}

/// Whether Firefox ESR is installed; prints why not (or panics under
/// `SALLYPORT_REQUIRE_EXTERNAL=1`), naming `what` is skipped.
pub(crate) fn firefox_present(what: &str) -> bool {
    let path = firefox();
    if !path.exists() {
        sallyport::db::testing::skip_or_fail(&format!(
            "firefox-esr is not installed at {} (Debian package firefox-esr): {what} skipped",
            path.display()
        ));
        return false;
    }
    true
}

/// How a browser is started.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// A fake camera and microphone (Chromium: a test pattern and a beep; Firefox: a
    /// colour-cycling picture and a tone), granted without asking.
    pub fake_media: bool,
    /// Firefox only: a simulated sound device (`media.cubeb.force_mock_context`, the
    /// audio back end Firefox's own tests use). Without a sound device on the machine,
    /// headless Firefox never starts an `AudioContext` (it stays `suspended`, its
    /// `resume()` never settles); with this one the page's WebAudio graph runs in real
    /// time, its output going nowhere.
    pub mock_audio_device: bool,
}

/// One command, as both protocols name it.
enum Op<'a> {
    Navigate(&'a str),
    Find(&'a str),
    Click(&'a str),
    Clear(&'a str),
    SendKeys(&'a str, &'a str),
    Text(&'a str),
    Execute(&'a str, &'a Value),
    ExecuteAsync(&'a str, &'a Value),
    Screenshot,
    AcceptAlert,
    ScriptTimeout(u64),
    WindowSize(u32, u32),
}

impl Op<'_> {
    /// Method, path under the session, body.
    fn webdriver(&self) -> (&'static str, String, Option<Value>) {
        match self {
            Op::Navigate(url) => ("POST", "/url".into(), Some(json!({ "url": url }))),
            Op::Find(css) => (
                "POST",
                "/element".into(),
                Some(json!({ "using": "css selector", "value": css })),
            ),
            Op::Click(e) => ("POST", format!("/element/{e}/click"), Some(json!({}))),
            Op::Clear(e) => ("POST", format!("/element/{e}/clear"), Some(json!({}))),
            Op::SendKeys(e, text) => (
                "POST",
                format!("/element/{e}/value"),
                Some(json!({ "text": text })),
            ),
            Op::Text(e) => ("GET", format!("/element/{e}/text"), None),
            Op::Execute(script, args) => (
                "POST",
                "/execute/sync".into(),
                Some(json!({ "script": script, "args": args })),
            ),
            Op::ExecuteAsync(script, args) => (
                "POST",
                "/execute/async".into(),
                Some(json!({ "script": script, "args": args })),
            ),
            Op::Screenshot => ("GET", "/screenshot".into(), None),
            Op::AcceptAlert => ("POST", "/alert/accept".into(), Some(json!({}))),
            Op::ScriptTimeout(ms) => ("POST", "/timeouts".into(), Some(json!({ "script": ms }))),
            Op::WindowSize(w, h) => (
                "POST",
                "/window/rect".into(),
                Some(json!({ "width": w, "height": h })),
            ),
        }
    }

    /// Marionette's command name and parameters.
    fn marionette(&self) -> (&'static str, Value) {
        match self {
            Op::Navigate(url) => ("WebDriver:Navigate", json!({ "url": url })),
            Op::Find(css) => (
                "WebDriver:FindElement",
                json!({ "using": "css selector", "value": css }),
            ),
            Op::Click(e) => ("WebDriver:ElementClick", json!({ "id": e })),
            Op::Clear(e) => ("WebDriver:ElementClear", json!({ "id": e })),
            Op::SendKeys(e, text) => (
                "WebDriver:ElementSendKeys",
                json!({ "id": e, "text": text }),
            ),
            Op::Text(e) => ("WebDriver:GetElementText", json!({ "id": e })),
            Op::Execute(script, args) => (
                "WebDriver:ExecuteScript",
                json!({ "script": script, "args": args }),
            ),
            Op::ExecuteAsync(script, args) => (
                "WebDriver:ExecuteAsyncScript",
                json!({ "script": script, "args": args }),
            ),
            Op::Screenshot => ("WebDriver:TakeScreenshot", json!({})),
            Op::AcceptAlert => ("WebDriver:AcceptAlert", json!({})),
            Op::ScriptTimeout(ms) => ("WebDriver:SetTimeouts", json!({ "script": ms })),
            Op::WindowSize(w, h) => (
                "WebDriver:SetWindowRect",
                json!({ "width": w, "height": h }),
            ),
        }
    }
}

/// Firefox's Marionette connection: `<length>:<json>` frames; a command is
/// `[0, id, name, params]`, its response `[1, id, error, result]`.
struct Marionette {
    stream: TcpStream,
    next_id: u64,
}

impl Marionette {
    fn connect(addr: &str, firefox: &mut Child) -> Marionette {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            if let Ok(s) = TcpStream::connect(addr) {
                break s;
            }
            if let Ok(Some(st)) = firefox.try_wait() {
                panic!("firefox exited before Marionette listened: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "Marionette not listening in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(150)))
            .expect("read timeout");
        let mut m = Marionette { stream, next_id: 1 };
        let hello = m.read_frame().expect("Marionette hello");
        assert_eq!(hello["marionetteProtocol"], 3, "Marionette hello: {hello}");
        m
    }

    fn read_frame(&mut self) -> std::io::Result<Value> {
        let mut len = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            self.stream.read_exact(&mut byte)?;
            if byte[0] == b':' {
                break;
            }
            len.push(byte[0]);
        }
        let n: usize = String::from_utf8_lossy(&len).trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad Marionette frame length",
            )
        })?;
        let mut body = vec![0u8; n];
        self.stream.read_exact(&mut body)?;
        serde_json::from_slice(&body)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// The result of one command, or its error object.
    fn command(&mut self, name: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!([0, id, name, params]).to_string();
        let wire = format!("{}:{frame}", frame.len());
        self.stream
            .write_all(wire.as_bytes())
            .unwrap_or_else(|e| panic!("Marionette {name}: {e}"));
        loop {
            let v = self
                .read_frame()
                .unwrap_or_else(|e| panic!("Marionette {name}: {e}"));
            if v[0] == 1 && v[1] == id {
                return if v[2].is_null() {
                    Ok(v[3].clone())
                } else {
                    Err(v[2].clone())
                };
            }
        }
    }
}

enum Backend {
    /// chromedriver and the Chromium it started, with one session.
    Chromium {
        driver: Child,
        addr: String,
        session: String,
    },
    /// Firefox itself, answering Marionette.
    Firefox {
        firefox: Child,
        marionette: Mutex<Marionette>,
    },
}

/// One browser with one session (one tab).
pub(crate) struct Browser {
    backend: Backend,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `log` receives the driver's output.
    pub(crate) fn start(log: &Path) -> Browser {
        Browser::chromium(log, &Options::default())
    }

    /// [`Browser::start`] with `options`.
    pub(crate) fn chromium(log: &Path, options: &Options) -> Browser {
        let port = free_port();
        let out = std::fs::File::create(log).expect("driver log");
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(out.try_clone().expect("log handle")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let addr = format!("127.0.0.1:{port}");
        let mut backend = Backend::Chromium {
            driver,
            addr,
            session: String::new(),
        };
        if let Backend::Chromium {
            driver,
            addr,
            session,
        } = &mut backend
        {
            wait_ready(addr, driver);
            *session = new_session(addr, profile.path(), options);
        }
        let b = Browser {
            backend,
            _profile: profile,
        };
        // Scripts that open many peer connections take their time.
        b.op(Op::ScriptTimeout(120_000));
        b
    }

    /// Starts a headless Firefox ESR answering Marionette; `log` receives its output.
    pub(crate) fn firefox(log: &Path, options: &Options) -> Browser {
        let port = free_port();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut prefs = vec![
            format!("user_pref(\"marionette.port\", {port});"),
            // Quiet, offline, no first-run pages.
            "user_pref(\"browser.shell.checkDefaultBrowser\", false);".into(),
            "user_pref(\"app.update.enabled\", false);".into(),
            "user_pref(\"datareporting.policy.dataSubmissionEnabled\", false);".into(),
            "user_pref(\"toolkit.telemetry.enabled\", false);".into(),
            "user_pref(\"browser.startup.homepage_override.mstone\", \"ignore\");".into(),
            "user_pref(\"network.captive-portal-service.enabled\", false);".into(),
            "user_pref(\"media.autoplay.default\", 0);".into(),
            // ICE candidates on 127.0.0.1 (the gateway listens there in tests), not
            // hidden behind mDNS names the gateway cannot resolve.
            "user_pref(\"media.peerconnection.ice.loopback\", true);".into(),
            "user_pref(\"media.peerconnection.ice.obfuscate_host_addresses\", false);".into(),
        ];
        if options.mock_audio_device {
            prefs.push("user_pref(\"media.cubeb.force_mock_context\", true);".into());
        }
        if options.fake_media {
            prefs.push("user_pref(\"media.navigator.streams.fake\", true);".into());
            // Granted as a permission, not by skipping the prompt: without a granted
            // permission Firefox offers only the default route's address as an ICE
            // candidate (never 127.0.0.1, whatever `ice.loopback` says).
            prefs.push("user_pref(\"permissions.default.camera\", 1);".into());
            prefs.push("user_pref(\"permissions.default.microphone\", 1);".into());
        }
        std::fs::write(profile.path().join("user.js"), prefs.join("\n")).expect("user.js");
        let out = std::fs::File::create(log).expect("firefox log");
        let mut firefox = Command::new(self::firefox())
            .args(["--headless", "--marionette", "--no-remote", "--profile"])
            .arg(profile.path())
            .arg("about:blank")
            .env("MOZ_HEADLESS_WIDTH", "1280")
            .env("MOZ_HEADLESS_HEIGHT", "1000")
            .stdout(Stdio::from(out.try_clone().expect("log handle")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start firefox-esr");
        let mut marionette = Marionette::connect(&format!("127.0.0.1:{port}"), &mut firefox);
        let caps =
            json!({ "capabilities": { "alwaysMatch": { "unhandledPromptBehavior": "ignore" } } });
        if let Err(e) = marionette.command("WebDriver:NewSession", caps) {
            panic!("Marionette session: {e}");
        }
        let b = Browser {
            backend: Backend::Firefox {
                firefox,
                marionette: Mutex::new(marionette),
            },
            _profile: profile,
        };
        b.op(Op::ScriptTimeout(120_000));
        b
    }

    /// Which browser this is (`chromium`, `firefox`), for messages and file names.
    pub(crate) fn name(&self) -> &'static str {
        match self.backend {
            Backend::Chromium { .. } => "chromium",
            Backend::Firefox { .. } => "firefox",
        }
    }

    /// Runs `op`: its value, or the protocol's error.
    fn try_op(&self, op: Op<'_>) -> Result<Value, Value> {
        match &self.backend {
            Backend::Chromium { addr, session, .. } => {
                let (method, path, body) = op.webdriver();
                let path = format!("/session/{session}{path}");
                match http(addr, method, &path, body) {
                    Ok((200, v)) => Ok(v["value"].clone()),
                    Ok((_, v)) => Err(v["value"].clone()),
                    Err(e) => panic!("webdriver {method} {path}: {e}"),
                }
            }
            Backend::Firefox { marionette, .. } => {
                let (name, params) = op.marionette();
                let mut m = marionette.lock().unwrap_or_else(|e| e.into_inner());
                m.command(name, params).map(|r| r["value"].clone())
            }
        }
    }

    fn op(&self, op: Op<'_>) -> Value {
        let what = match &op {
            Op::Navigate(u) => format!("navigate to {u}"),
            Op::Execute(s, _) | Op::ExecuteAsync(s, _) => {
                format!("script {}", s.chars().take(80).collect::<String>())
            }
            _ => op.marionette().0.to_string(),
        };
        self.try_op(op)
            .unwrap_or_else(|e| panic!("{} {what}: {e}", self.name()))
    }

    pub(crate) fn goto(&self, url: &str) {
        self.op(Op::Navigate(url));
    }

    /// The first element matching `css`, if any.
    pub(crate) fn find(&self, css: &str) -> Option<String> {
        let v = self.try_op(Op::Find(css)).ok()?;
        v[ELEMENT].as_str().map(str::to_string)
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
        self.op(Op::Click(&e));
    }

    /// Replaces the text of the input `css`.
    pub(crate) fn fill(&self, css: &str, text: &str) {
        let e = self.wait_for(css);
        self.op(Op::Clear(&e));
        self.op(Op::SendKeys(&e, text));
    }

    /// Types `text` into the element `css` as key presses (WebDriver key codes such as
    /// `\u{E012}`, the left arrow, included), without clearing it first.
    pub(crate) fn send_keys(&self, css: &str, text: &str) {
        let e = self.wait_for(css);
        self.op(Op::SendKeys(&e, text));
    }

    pub(crate) fn text(&self, css: &str) -> String {
        let e = self.wait_for(css);
        let v = self.op(Op::Text(&e));
        v.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub(crate) fn js(&self, script: &str, args: Value) -> Value {
        self.op(Op::Execute(script, &args))
    }

    /// Runs `script` until it calls `arguments[arguments.length - 1](value)`.
    pub(crate) fn js_async(&self, script: &str, args: Value) -> Value {
        self.op(Op::ExecuteAsync(script, &args))
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
                "{what} ({}): still {v} after {timeout:?}",
                self.name()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Accepts the open `confirm()` / `alert()`, waiting for it up to 5 s.
    pub(crate) fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.try_op(Op::AcceptAlert).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "no dialog to accept");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resizes the window (a laptop's 1024 px, say).
    pub(crate) fn window_size(&self, width: u32, height: u32) {
        self.op(Op::WindowSize(width, height));
    }

    /// Where Chromium saves what the page downloads.
    pub(crate) fn downloads(&self) -> PathBuf {
        self._profile.path().join("downloads")
    }

    /// Saves a PNG of the viewport to `path` (and prints where).
    pub(crate) fn screenshot(&self, path: &Path) {
        let v = self.op(Op::Screenshot);
        let png = base64_decode(v.as_str().unwrap_or_default());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }
}

fn wait_ready(addr: &str, driver: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, v)) = http(addr, "GET", "/status", None) {
            if v["value"]["ready"] == true {
                return;
            }
        }
        if let Ok(Some(st)) = driver.try_wait() {
            panic!("chromedriver exited: {st}");
        }
        assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn new_session(addr: &str, profile_dir: &Path, options: &Options) -> String {
    let profile = format!("--user-data-dir={}", profile_dir.display());
    let mut args = vec![
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
    if options.fake_media {
        args.push("--use-fake-device-for-media-stream");
    }
    // Downloads land in the profile's `downloads/` ([`Browser::downloads`]), unasked.
    let downloads = profile_dir.join("downloads");
    let prefs = json!({
        "download.default_directory": downloads.display().to_string(),
        "download.prompt_for_download": false,
    });
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium().display().to_string(), "args": args, "prefs": prefs },
        "unhandledPromptBehavior": "ignore",
    }}});
    let (status, v) =
        http(addr, "POST", "/session", Some(caps)).unwrap_or_else(|e| panic!("new session: {e}"));
    assert_eq!(status, 200, "new session: {v}");
    v["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session id: {v}"))
        .to_string()
}

impl Drop for Browser {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Chromium {
                driver,
                addr,
                session,
            } => {
                if !session.is_empty() {
                    let _ = http(addr, "DELETE", &format!("/session/{session}"), None);
                }
                let _ = driver.kill();
                let _ = driver.wait();
            }
            Backend::Firefox { firefox, .. } => {
                let _ = firefox.kill();
                let _ = firefox.wait();
            }
        }
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
