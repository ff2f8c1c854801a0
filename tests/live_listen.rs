//! Live listening (`POST/DELETE /api/v1/calls/{id}/listen`).
//!
//! - Who may listen, through the real router on SQLite and PostgreSQL: no token, wrong
//!   role, wrong facility, a privileged call (403 `privileged`, audited), an ended call
//!   (409), one carried by a node that never registered (503 `node_unknown`).
//! - The proof the issue asks for: the real `sallyport serve` carries a sipp call (handset
//!   UAC and trunk UAS from `tests/sipp`, both sending a PCMU tone after their keys), and
//!   Debian's headless Chromium, driven through chromedriver's WebDriver HTTP API, offers
//!   two recvonly audio transceivers from a page of the gateway's own origin, POSTs the
//!   offer and reads `getStats()`: inbound-rtp packets on both tracks, PCMU. The same page
//!   then opens more listeners to measure the gateway's CPU per listener stream (printed).
//!   A second call whose parties speak PCMA is heard as PCMA (no transcoding).
//!
//! - Firefox ESR (Marionette) listens through the console itself: both parties' packets
//!   arrive and both level meters move; with a simulated sound device the WebAudio graph
//!   runs and each party's volume (30 %, 200 %) is measured on what is played; without
//!   one, each track's element plays it and the slider sets its volume (at most 100 %).
//!   Without camera or microphone permission Firefox offers no loopback candidate: it
//!   cannot reach a gateway that offers only 127.0.0.1 (the panel says why, naming both
//!   sides), and it listens to one bound on 0.0.0.0, which offers every address of the
//!   host (the test without a sound device runs so).
//!
//! Without sipp, chromium or chromedriver the browser test prints why and passes, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`. A failing run keeps its files (gateway log, sipp
//! traces, chromedriver log) under `CARGO_TARGET_TMPDIR/live_listen`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use sallyport::db::Backend;
use sallyport::media::g711::Law;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::api as e2e;
use support::gateway::Gateway;
use support::inproc::{self, err_code, issue, send, App, Setup};
use support::sipp::{self, Handset, Sipp, Tone, Trunk, Via};
use support::webdriver::{self, Browser};
use support::Workdir;

const ADMIN: &str = "listen-tests-admin-token";

// ---- authorization, in process --------------------------------------------------------

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).app(backend).await
}

/// Facilities F1 and F2; calls `live` (F1, active), `priv` (F1, active, privileged) and
/// `over` (F1, ended).
async fn calls(app: &App) {
    for fid in ["F1", "F2"] {
        inproc::facility(app, fid).await;
    }
    let db = &app.t.db;
    let now = chrono::Utc::now();
    for id in ["live", "priv", "over"] {
        let s = sallyport::session::cdr::NewSession {
            id,
            facility_id: "F1",
            handset_id: None,
            dialed: "5551230001",
            node_id: "elsewhere",
            sip_call_id: None,
        };
        sallyport::session::cdr::open_call(db, &s, now)
            .await
            .unwrap();
    }
    let progress = sallyport::session::cdr::Progress {
        number_e164: Some("+15551230001"),
        privileged: Some(true),
        answer_at: Some(now),
        accepted_at: Some(now),
    };
    sallyport::session::cdr::progress(db, "priv", &progress)
        .await
        .unwrap();
    let end = sallyport::session::cdr::SessionEnd {
        reason: "callee_hangup",
        inmate_id: None,
        number_e164: Some("+15551230001"),
        privileged: false,
        recorded: false,
        answer_at: Some(now),
        accepted_at: Some(now),
        end_at: now,
    };
    sallyport::session::cdr::close(db, "over", &end)
        .await
        .unwrap();
}

async fn who_may_listen(app: App) {
    calls(&app).await;
    let inv1 = issue(&app, "inv-f1", "investigator", &["F1"], None).await;
    let inv2 = issue(&app, "inv-f2", "investigator", &["F2"], None).await;
    let family = issue(&app, "fam", "family", &["F1"], None).await;
    let offer = json!({ "sdp": "v=0\r\n", "type": "offer" });
    let listen = |id: &str| format!("/api/v1/calls/{id}/listen");
    let cases: [(&str, Option<&str>, StatusCode, &str); 6] = [
        ("live", None, StatusCode::UNAUTHORIZED, "unauthorized"),
        ("live", Some(&family), StatusCode::FORBIDDEN, "forbidden"),
        ("live", Some(&inv2), StatusCode::FORBIDDEN, "forbidden"),
        ("priv", Some(&inv1), StatusCode::FORBIDDEN, "privileged"),
        ("over", Some(&inv1), StatusCode::CONFLICT, "call_ended"),
        // Active, but not carried by this process (no SIP side here): node "elsewhere"'s,
        // which never registered its API address, so the offer cannot be forwarded.
        (
            "live",
            Some(&inv1),
            StatusCode::SERVICE_UNAVAILABLE,
            "node_unknown",
        ),
    ];
    for (id, tok, status, want) in cases {
        let (s, v) = send(&app, "POST", &listen(id), tok, Some(offer.clone())).await;
        assert_eq!((s, err_code(&v)), (status, want), "POST listen {id}: {v}");
    }
    let (s, v) = send(&app, "POST", &listen("nope"), Some(&inv1), Some(offer)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = send(&app, "POST", &listen("live"), Some(&inv1), Some(json!({}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "no sdp: {v}");
    let (s, _) = send(
        &app,
        "POST",
        &listen("priv"),
        Some(ADMIN),
        Some(json!({"sdp": ""})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "an admin may not listen to a privileged call either"
    );
    let del = "/api/v1/calls/live/listen/lsn_0000000000000001";
    let (s, _) = send(&app, "DELETE", del, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(&app, "DELETE", del, Some(&inv2), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(&app, "DELETE", del, Some(&family), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = send(&app, "DELETE", del, Some(&inv1), None).await;
    assert_eq!(
        (s, err_code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "node_unknown"),
        "the listener would be on node elsewhere: {v}"
    );
    let (s, v) = send(&app, "GET", "/api/v1/audit?limit=50", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let refused: Vec<&Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "call.listen_refused")
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "both privileged attempts are audited: {v}"
    );
    assert!(
        refused
            .iter()
            .all(|e| e["target"] == "priv" && e["facility_id"] == "F1"),
        "{v}"
    );
    assert!(refused.iter().any(|e| e["actor"] == "inv-f1"), "{v}");
    app.t.cleanup().await;
}

#[tokio::test]
async fn who_may_listen_sqlite() {
    who_may_listen(app(Backend::Sqlite).await.unwrap()).await;
}

#[tokio::test]
async fn who_may_listen_postgres() {
    if let Some(app) = app(Backend::Postgres).await {
        who_may_listen(app).await;
    }
}

// ---- Chromium hears a live call ---------------------------------------------------------

/// How long each party's tone lasts after its keys (the call is ended before).
const TONE_SECS: u64 = 40;
/// Listeners opened on top of the first one to measure CPU per listener.
const EXTRA_LISTENERS: usize = 8;

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
        let stats = b.js_async(STATS_JS, json!([]));
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

/// Gateway CPU (share of one core) over `window`.
fn cpu_over(gw: &Gateway, window: Duration) -> f64 {
    let c0 = gw.cpu_secs();
    std::thread::sleep(window);
    (gw.cpu_secs() - c0) / window.as_secs_f64()
}

/// A sipp call in progress through a real gateway, and a browser on the gateway's origin.
struct LiveCall {
    browser: Browser,
    _parties: (Sipp, Sipp),
    gw: Gateway,
    api: e2e::Api,
    /// An investigator's token for the call's facility.
    inv: String,
    /// The call's id.
    id: String,
    _dir: Workdir,
}

impl LiveCall {
    /// The called party answers, presses 1 and speaks a 600 Hz tone; the inmate enters the
    /// PIN and speaks a 400 Hz tone; both in `law`, both wait for the gateway's BYE.
    /// `None` (after printing why) without sipp, chromium or chromedriver.
    fn start(name: &str, law: Law) -> Option<LiveCall> {
        let what = "live listen browser test";
        if !sipp::present(what) || !webdriver::present(what) {
            return None;
        }
        let dir = Workdir::new("live_listen", name);
        let p = sipp::ports();
        let gw = Gateway::start(&dir, &p);
        let api = gw.api.clone();
        let inmate = e2e::book(&api, "L-1", "1357", e2e::NUMBER, false);
        e2e::fund(&api, &inmate, "20.00");
        let inv = api.post(
            "/api/v1/tokens",
            json!({ "username": "investigator-1", "role": "investigator", "facilities": [e2e::FACILITY] }),
        )["token"]
            .as_str()
            .unwrap()
            .to_string();
        let trunk = Trunk::answer("1")
            .speaking(Tone::steady(600.0, TONE_SECS))
            .law(law)
            .spawn(&dir, &p);
        let handset = Handset::new(&inmate.pin, Via::Rtp)
            .speaking(Tone::steady(400.0, TONE_SECS))
            .law(law)
            .spawn(&dir, 0, &p, gw.sip);
        let browser = Browser::start(&dir.join("chromedriver.log"));
        browser.goto(&format!("{}/healthz", gw.base_url()));
        let id = api.accepted_call(Duration::from_secs(40));
        Some(LiveCall {
            browser,
            _parties: (trunk, handset),
            gw,
            api,
            inv,
            id,
            _dir: dir,
        })
    }

    fn listen_path(&self) -> String {
        format!("/api/v1/calls/{}/listen", self.id)
    }

    /// Opens one listener and waits until both parties arrive, in `codec` on both tracks,
    /// and are heard (the page plays both tracks; the tones are 8000/32768 of full scale).
    /// Returns the listener's id.
    fn listen_and_hear(&self, codec: &str) -> String {
        let opened = self
            .browser
            .js_async(LISTEN_JS, json!([self.listen_path(), self.inv, 1]));
        let first = opened["ids"][0]
            .as_str()
            .unwrap_or_else(|| panic!("listen: {opened}"))
            .to_string();
        let stats = wait_for_audio(&self.browser, 1);
        println!("one listener: {stats}");
        let peer = &stats[0];
        assert_eq!(peer["state"], "connected", "{stats}");
        for t in 0..2 {
            assert_eq!(peer["tracks"][t]["inbound"]["codec"], codec, "{stats}");
        }
        let level = |stats: &Value, t: usize| stats[0]["tracks"][t]["inbound"]["level"].as_f64();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stats = stats;
        while !(level(&stats, 0) > Some(0.1) && level(&stats, 1) > Some(0.1)) {
            assert!(Instant::now() < deadline, "both parties are heard: {stats}");
            std::thread::sleep(Duration::from_millis(500));
            stats = self.browser.js_async(STATS_JS, json!([]));
        }
        println!(
            "levels heard: inmate {:?}, called party {:?}",
            level(&stats, 0),
            level(&stats, 1)
        );
        first
    }
}

/// A PCMA call is heard as PCMA: the relay's packets go to the browser as they are.
#[test]
fn chromium_hears_a_pcma_call_in_pcma() {
    let Some(call) = LiveCall::start("e2e-pcma", Law::Alaw) else {
        return;
    };
    call.listen_and_hear("audio/PCMA");
    call.api.ok(
        "POST",
        &format!("/api/v1/calls/{}/terminate", call.id),
        None,
    );
}

#[test]
fn chromium_hears_both_parties_of_a_live_call() {
    let Some(call) = LiveCall::start("e2e", Law::Ulaw) else {
        return;
    };
    let LiveCall {
        ref browser,
        ref gw,
        ref api,
        ref inv,
        ref id,
        ..
    } = call;
    let path = call.listen_path();
    let idle_cpu = cpu_over(gw, Duration::from_secs(4));

    // One listener: both parties arrive, as PCMU, and are heard.
    let first = call.listen_and_hear("audio/PCMU");

    // CPU per listener stream: more listeners on the same call.
    let more = browser.js_async(LISTEN_JS, json!([path, inv, EXTRA_LISTENERS]));
    assert_eq!(
        more["ids"].as_array().map(Vec::len),
        Some(EXTRA_LISTENERS),
        "{more}"
    );
    wait_for_audio(browser, 1 + EXTRA_LISTENERS);
    let open = api.metric("sallyport_listeners_open");
    assert_eq!(open, 1 + EXTRA_LISTENERS as u64);
    let busy_cpu = cpu_over(gw, Duration::from_secs(5));
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
    let investigator = api.as_token(inv);
    let (s, v) = investigator.request("DELETE", &format!("{path}/{first}"), None);
    assert_eq!(s, 204, "{v}");
    let (s, _) = investigator.request("DELETE", &format!("{path}/{first}"), None);
    assert_eq!(s, 404, "a deleted listener is gone");
    assert_eq!(
        api.metric("sallyport_listeners_open"),
        EXTRA_LISTENERS as u64
    );
    let audit = api.get("/api/v1/audit?limit=100");
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
    api.ok("POST", &format!("/api/v1/calls/{id}/terminate"), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.metric("sallyport_listeners_open") > 0 {
        assert!(Instant::now() < deadline, "listeners outlived their call");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, v) = investigator.request("POST", &path, Some(json!({ "sdp": "v=0" })));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("call_ended")),
        "{v}"
    );
}

/// Firefox ESR listens to a live call through the console, as Chromium does: the same
/// page, driven over Marionette, with a simulated sound device (`mock_audio_device`), so
/// the page's WebAudio graph runs. Both parties' packets arrive, both meters move, and
/// each party's volume slider sets what is played of that party (measured after the
/// volume), down to 30 % and up to 200 %, the other party untouched.
#[test]
fn firefox_listens_through_the_console() {
    firefox_listens(true);
}

/// The same without any sound device (as headless Firefox runs on this machine): the
/// audio context never starts, so each track plays through its element, the meters read
/// the receivers' `audioLevel`, and each volume slider sets its element's volume, at
/// most 100 % (the slider says so). And as an investigator's Firefox runs: no camera or
/// microphone permission, so it offers only its non-loopback addresses, against a gateway
/// bound on 0.0.0.0 (`rtp.listen_ip`) and advertising 127.0.0.1, whose answer offers
/// every address of the host; the connection is made through one of those.
#[test]
fn firefox_listens_without_a_sound_device() {
    firefox_listens(false);
}

/// What is played of party `p` over what is received (the RMS its meter's data carries,
/// refreshed every 100 ms), averaged over ten readings 120 ms apart: the volume actually
/// applied.
const PLAYED_OVER_RECEIVED: &str = "const p = arguments[0], done = arguments[arguments.length - 1];
    const m = document.getElementById('listen-meter-' + p);
    let played = 0, received = 0, n = 0;
    const t = setInterval(() => {
      played += Number(m.dataset.played); received += Number(m.dataset.received);
      if (++n === 10) { clearInterval(t); done(received > 0 ? played / received : null); }
    }, 120);";

/// The addresses the page's offer carried and the gateway address of the candidate pair
/// in use (from `getStats()` of the listen panel's connection).
const PAIR_JS: &str = "const done = arguments[arguments.length - 1];
    const pc = (window.listenPcs || []).slice(-1)[0];
    if (!pc) { done({ error: 'no connection recorded' }); return; }
    const offered = [...new Set((pc.localDescription.sdp || '').split(/\\r?\\n/)
      .filter((l) => l.startsWith('a=candidate:')).map((l) => l.split(' ')[4]))];
    pc.getStats().then((stats) => {
      let pair = null;
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.nominated || s.selected)) pair = s;
      });
      const remote = pair && stats.get(pair.remoteCandidateId);
      const local = pair && stats.get(pair.localCandidateId);
      const address = (c) => c && (c.address || c.ipAddress);
      done({ offered, local: address(local), remote: address(remote), remotePort: remote && remote.port,
             answered: [...new Set((pc.remoteDescription.sdp || '').split(/\\r?\\n/)
               .filter((l) => l.startsWith('a=candidate:')).map((l) => l.split(' ')[4]))] });
    });";

/// Keeps every connection the page opens in `window.listenPcs`, for [`PAIR_JS`].
const RECORD_PCS_JS: &str = "const P = window.RTCPeerConnection;
    window.listenPcs = [];
    window.RTCPeerConnection = function (config) { const pc = new P(config); window.listenPcs.push(pc); return pc; };
    window.RTCPeerConnection.prototype = P.prototype;
    return true;";

/// The Firefox investigator's password.
const PASSWORD: &str = "correct horse battery staple";

/// The Firefox tests' call: an inmate booked (`booking`, `pin`) and funded, the Firefox
/// investigator's account, and both parties speaking a steady tone (the trunk 600 Hz, the
/// handset 400 Hz); the two sipps live as long as what is returned.
fn firefox_call(
    dir: &Workdir,
    p: &sipp::Ports,
    gw: &Gateway,
    booking: &str,
    pin: &str,
) -> (Sipp, Sipp) {
    let api = &gw.api;
    let inmate = e2e::book(api, booking, pin, e2e::NUMBER, false);
    e2e::fund(api, &inmate, "20.00");
    api.add_user("inv-ff", PASSWORD, "investigator", &[e2e::FACILITY]);
    let trunk = Trunk::answer("1")
        .speaking(Tone::steady(600.0, TONE_SECS))
        .spawn(dir, p);
    let handset = Handset::new(&inmate.pin, Via::Rtp)
        .speaking(Tone::steady(400.0, TONE_SECS))
        .spawn(dir, 0, p, gw.sip);
    (trunk, handset)
}

/// Logs the Firefox investigator in and opens the live page at call `id`'s row; its selector.
fn live_row(b: &Browser, gw: &Gateway, id: &str) -> String {
    b.goto(&format!("{}/console/", gw.base_url()));
    b.wait_for("body[data-ready='1']");
    b.fill("#login-username", "inv-ff");
    b.fill("#login-password", PASSWORD);
    b.click("#login-submit");
    b.wait_js(
        "logged in",
        Duration::from_secs(10),
        "return !document.getElementById('search-view').hidden;",
        |v| v == true,
    );
    b.click("#nav-live");
    let row = format!("tr[data-call-id='{id}']");
    b.wait_for(&row);
    row
}

fn firefox_listens(sound_device: bool) {
    let what = "Firefox live listen test";
    if !sipp::present(what) || !webdriver::firefox_present(what) {
        return;
    }
    let dir = Workdir::new(
        "live_listen",
        if sound_device {
            "firefox"
        } else {
            "firefox-no-sound"
        },
    );
    let p = sipp::ports();
    // With a sound device, the permission is granted (loopback candidates, the gateway
    // on 127.0.0.1); without, neither: the gateway binds the wildcard.
    let permission = sound_device;
    let gw = Gateway::start_with(&dir, &p, "gateway", |cmd| {
        if !permission {
            cmd.env("SALLYPORT_RTP_LISTEN_IP", "0.0.0.0");
        }
    });
    let api = gw.api.clone();
    let _parties = firefox_call(&dir, &p, &gw, "L-2", "2468");
    // Camera and microphone granted (never used): Firefox then offers its loopback
    // address as an ICE candidate (see `Options::fake_media`).
    let b = Browser::firefox(
        &dir.join("firefox.log"),
        &webdriver::Options {
            fake_media: permission,
            mock_audio_device: sound_device,
        },
    );
    let id = api.accepted_call(Duration::from_secs(40));
    let row = live_row(&b, &gw, &id);
    b.js(RECORD_PCS_JS, json!([]));
    b.click(&format!("{row} button.listen"));
    let shown = b.wait_js(
        "packets counted in Firefox",
        Duration::from_secs(30),
        "return { n: Number(document.getElementById('listen-packets').textContent),
                  state: document.getElementById('listen-state').textContent,
                  error: document.getElementById('error').textContent };",
        |v| v["n"].as_f64().is_some_and(|n| n > 50.0),
    );
    println!("Firefox listening: {shown}");
    let pair = b.js_async(PAIR_JS, json!([]));
    println!("Firefox's candidate pair: {pair}");
    if !permission {
        // Firefox offered no loopback address: the pair joins two others.
        let offered = pair["offered"].as_array().cloned().unwrap_or_default();
        assert!(
            !offered.is_empty()
                && offered
                    .iter()
                    .all(|a| a.as_str().is_some_and(|a| a != "127.0.0.1" && a != "::1")),
            "{pair}"
        );
        // The gateway answered with more than its advertised 127.0.0.1, and the pair in
        // use joins one of those others.
        let answered = pair["answered"].as_array().cloned().unwrap_or_default();
        assert!(
            answered.len() >= 2 && answered.iter().any(|a| a == "127.0.0.1"),
            "{pair}"
        );
        let remote = pair["remote"].as_str().unwrap_or_default();
        assert!(
            !remote.is_empty() && remote != "127.0.0.1" && answered.iter().any(|a| a == remote),
            "{pair}"
        );
    }
    const PANEL: &str = "return { levels: ['inmate', 'called'].map(p => Number(document.getElementById('listen-meter-' + p).dataset.level)),
                  audio: document.getElementById('listen-panel').dataset.audio,
                  max: ['inmate', 'called'].map(p => document.getElementById('listen-volume-' + p).max),
                  shown: ['inmate', 'called'].map(p => document.getElementById('listen-gain-' + p).textContent),
                  tracks: [...document.querySelectorAll('#listen-audio audio')].map(a =>
                    ({ track: a.dataset.track, paused: a.paused, muted: a.muted, ready: a.readyState, volume: a.volume })) };";
    let levels = b.wait_js(
        "both meters move in Firefox",
        Duration::from_secs(15),
        PANEL,
        |v| {
            v["levels"]
                .as_array()
                .is_some_and(|a| a.iter().all(|l| l.as_f64().is_some_and(|l| l > 0.3)))
        },
    );
    println!("Firefox levels: {levels}");
    let tracks = levels["tracks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tracks.len(), 2, "{levels}");
    assert!(
        tracks
            .iter()
            .all(|t| t["paused"] == false && t["ready"].as_u64() >= Some(2)),
        "{levels}"
    );
    if sound_device {
        // The graph plays both tracks (their elements muted), the volume goes to 200 %.
        assert_eq!(levels["audio"], "running", "{levels}");
        assert!(tracks.iter().all(|t| t["muted"] == true), "{levels}");
        assert_eq!(levels["max"], json!(["2", "2"]), "{levels}");
        let ratio = |p: &str| {
            b.js_async(PLAYED_OVER_RECEIVED, json!([p]))
                .as_f64()
                .unwrap_or_else(|| panic!("{p}: nothing received"))
        };
        let (inmate0, called0) = (ratio("inmate"), ratio("called"));
        println!("played/received at 100 %: inmate {inmate0:.3}, called {called0:.3}");
        assert!((inmate0 - 1.0).abs() < 0.05 && (called0 - 1.0).abs() < 0.05);
        // The called party down seven steps with the keyboard (30 %), then the inmate up
        // to the top (End: 200 %): each played at its own volume, the other untouched.
        b.send_keys("#listen-volume-called", &"\u{E012}".repeat(7));
        b.send_keys("#listen-volume-inmate", "\u{E010}");
        let panel = b.wait_js(
            "the volumes follow the sliders",
            Duration::from_secs(5),
            PANEL,
            |v| v["shown"] == json!(["200%", "30%"]),
        );
        println!("after the sliders: {panel}");
        let (inmate1, called1) = (ratio("inmate"), ratio("called"));
        println!("played/received: inmate at 200 % {inmate1:.3}, called at 30 % {called1:.3}");
        assert!((inmate1 - 2.0).abs() < 0.1, "inmate at 200 %: {inmate1}");
        assert!((called1 - 0.3).abs() < 0.03, "called at 30 %: {called1}");
        let meters = b.js(PANEL, json!([]));
        assert!(
            meters["levels"]
                .as_array()
                .is_some_and(|a| a.iter().all(|l| l.as_f64().is_some_and(|l| l > 0.3))),
            "the meters show what is received, whatever the volume: {meters}"
        );
    } else {
        // No sound device: the elements play the tracks, unmuted; the slider stops at
        // 100 % and sets the element's volume.
        assert_ne!(levels["audio"], "running", "{levels}");
        assert!(tracks.iter().all(|t| t["muted"] == false), "{levels}");
        assert_eq!(levels["max"], json!(["1", "1"]), "{levels}");
        b.send_keys("#listen-volume-called", &"\u{E012}".repeat(7));
        b.send_keys("#listen-volume-inmate", "\u{E010}");
        let panel = b.wait_js(
            "the volumes follow the sliders",
            Duration::from_secs(5),
            PANEL,
            |v| v["shown"] == json!(["100%", "30%"]),
        );
        println!("after the sliders: {panel}");
        let volume = |track: &str| {
            panel["tracks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["track"] == track)
                .and_then(|t| t["volume"].as_f64())
                .unwrap_or_else(|| panic!("track {track}: {panel}"))
        };
        assert!((volume("1") - 1.0).abs() < 1e-6, "the inmate: {panel}");
        assert!(
            (volume("2") - 0.3).abs() < 1e-6,
            "the called party: {panel}"
        );
    }
    b.click("#listen-stop");
    b.wait_js(
        "the panel closes",
        Duration::from_secs(10),
        "return document.getElementById('listen-panel').hidden;",
        |v| v == true,
    );
    let audit = api.get("/api/v1/audit?limit=100");
    let listens = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "call.listen" && e["actor"] == "inv-ff")
        .count();
    assert_eq!(listens, 1, "{audit}");
    api.ok("POST", &format!("/api/v1/calls/{id}/terminate"), None);
}

/// Firefox without camera or microphone permission offers only its non-loopback addresses
/// as ICE candidates, and the test gateway advertises 127.0.0.1 (`rtp.advertised_ip`): no
/// connection is possible, and the listen panel says why (both sides' addresses and what
/// to change), not merely "failed".
#[test]
fn firefox_is_told_why_listening_fails() {
    let what = "Firefox listen failure test";
    if !sipp::present(what) || !webdriver::firefox_present(what) {
        return;
    }
    let dir = Workdir::new("live_listen", "firefox-fails");
    let p = sipp::ports();
    let gw = Gateway::start(&dir, &p);
    let api = gw.api.clone();
    let _parties = firefox_call(&dir, &p, &gw, "L-3", "2469");
    let b = Browser::firefox(&dir.join("firefox.log"), &webdriver::Options::default());
    let id = api.accepted_call(Duration::from_secs(40));
    let row = live_row(&b, &gw, &id);
    b.click(&format!("{row} button.listen"));
    let state = b.wait_js(
        "the panel says why listening failed",
        Duration::from_secs(60),
        "return document.getElementById('listen-state').textContent;",
        |v| v.as_str().is_some_and(|t| t.starts_with("failed")),
    );
    let state = state.as_str().unwrap_or_default().to_string();
    println!("Firefox without a loopback candidate: {state}");
    assert!(
        state.contains("127.0.0.1") && state.contains("rtp.advertised_ip"),
        "{state}"
    );
    b.click("#listen-stop");
    api.ok("POST", &format!("/api/v1/calls/{id}/terminate"), None);
}
