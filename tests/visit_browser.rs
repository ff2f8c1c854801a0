//! Video visits between real browsers: the visitor page (`/visit/join#<pass>`) and the
//! inmate kiosk page (`/kiosk`, set up with its station and kiosk token, the inmate
//! confirming with calling ID and PIN), each in its own headless browser with a fake camera
//! and microphone, against the real `sallyport serve` on SQLite. The gateway is each
//! browser's only WebRTC peer and forwards the two sides to each other.
//!
//! - `a_visit_between_two_browsers_is_cut_when_the_funds_run_out`: both pages connect;
//!   each page's `getStats()` shows the other side's video decoded (frames rising, a
//!   picture with a width) and its audio heard (audio energy above 0); both show the
//!   funds warning, then "ended" with the reason `funds_exhausted` after exactly the
//!   increments the balance paid for; the CDR, the charges on the statement and the
//!   balance agree, and both sides are recorded.
//! - `a_reload_pauses_the_visit_and_it_ends_with_its_slot`: the visitor reloads mid-visit;
//!   the kiosk shows the pause, the visitor rejoins from the reloaded page, media flows
//!   again, and both pages end with `slot_ended`; the paused time is not charged (the CDR's
//!   `paused_ms`, its timeline, the charges and the statement agree).
//! - `firefox_visits_chromium`: the visitor in Firefox ESR (driven through Marionette),
//!   the kiosk in Chromium; media flows both ways; a third browser, the investigator's
//!   console, watches both sides (frames decoded from each); the visitor ends the visit and
//!   both pages say so (`visitor_left`).
//!
//! - `the_kiosk_shows_the_inmate_their_own_account`: at the same kiosk page, "My account"
//!   with calling ID and PIN shows the inmate's balance, history and visits ahead, the
//!   same numbers as the API; a wrong PIN shows nothing; "Done" forgets the sitting.
//!
//! Without Chromium/chromedriver (or Firefox ESR for the firefox test) a test prints why and
//! passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`. Screenshots of both pages go to
//! `target/browser-screenshots/` (also on failure, `visit-<test>-<side>-failure.png`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use rust_decimal::Decimal;
use sallyport::db::Db;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::api::{self as e2e, Api, Inmate};
use support::axe;
use support::gateway::Gateway;
use support::webdriver::{self, Browser, Options};
use support::{sipp, Workdir};

fn screenshots() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map_or(tmp.clone(), |t| t.to_path_buf())
        .join("browser-screenshots")
}

/// A side's page in its browser; a screenshot of it when the test fails.
struct Page {
    name: String,
    browser: Browser,
}

impl Page {
    fn chromium(case: &Case, side: &str) -> Page {
        let log = case.dir.join(format!("{side}-chromedriver.log"));
        Page {
            name: format!("visit-{}-{side}", case.name),
            browser: Browser::chromium(
                &log,
                &Options {
                    fake_media: true,
                    ..Options::default()
                },
            ),
        }
    }

    fn firefox(case: &Case, side: &str) -> Page {
        let log = case.dir.join(format!("{side}-firefox.log"));
        Page {
            name: format!("visit-{}-{side}", case.name),
            browser: Browser::firefox(
                &log,
                &Options {
                    fake_media: true,
                    ..Options::default()
                },
            ),
        }
    }

    fn screenshot(&self, what: &str) {
        self.browser
            .screenshot(&screenshots().join(format!("{}-{what}.png", self.name)));
    }

    /// Waits (up to `timeout`) for the room's phase to be `phase`.
    fn phase(&self, phase: &str, timeout: Duration) {
        self.browser.wait_js(
            &format!("{} in phase {phase}", self.name),
            timeout,
            "const p = document.getElementById('room-phase');
             return { phase: p && p.dataset.phase, text: p && p.textContent,
                      error: document.getElementById('room-error').textContent };",
            |v| v["phase"] == phase,
        );
    }

    /// Waits (up to `timeout`) for "visit ended" with `reason`; returns the text shown.
    fn ended(&self, reason: &str, timeout: Duration) -> String {
        let v = self.browser.wait_js(
            &format!("{} ended with {reason}", self.name),
            timeout,
            "const r = document.getElementById('room-ended-reason');
             return { shown: !document.getElementById('room-ended').hidden,
                      reason: r.dataset.reason || null, text: r.textContent,
                      status: document.getElementById('room-status').textContent };",
            |v| v["shown"] == true && v["reason"].is_string(),
        );
        assert_eq!(v["reason"], reason, "{}: {v}", self.name);
        v["text"].as_str().unwrap_or_default().to_string()
    }

    /// What the page's peer has received, from `getStats()`.
    fn stats(&self) -> Value {
        self.browser.js_async(STATS_JS, json!([]))
    }

    /// Waits until the other side's video is decoded (at least `frames` frames, a picture
    /// with a width) and its audio heard (energy above 0); returns those statistics.
    fn media_flows(&self, frames: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let v = self.stats();
            let ok = v["state"] == "connected"
                && v["frames"].as_u64().unwrap_or(0) >= frames
                && v["width"].as_u64().unwrap_or(0) > 0
                && v["audio_packets"].as_u64().unwrap_or(0) > 0
                && v["audio_energy"].as_f64().unwrap_or(0.0) > 0.0;
            if ok {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: media not flowing after 40 s: {v}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// [`Page::media_flows`], then again a second later with more frames decoded.
    fn media_keeps_flowing(&self) -> Value {
        let first = self.media_flows(20);
        std::thread::sleep(Duration::from_secs(1));
        let frames = first["frames"].as_u64().unwrap_or(0) + 5;
        let second = self.media_flows(frames);
        let (e1, e2) = (
            first["audio_energy"].as_f64(),
            second["audio_energy"].as_f64(),
        );
        assert!(
            e2 > e1,
            "{}: audio energy not rising: {first} → {second}",
            self.name
        );
        second
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let shot = screenshots().join(format!("{}-failure.png", self.name));
            let b = &self.browser;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.screenshot(&shot)));
        }
    }
}

/// The inbound RTP of the page's peer: the other side's video frames decoded, the remote
/// picture's width, its audio packets and energy (`totalAudioEnergy`).
const STATS_JS: &str = "
const done = arguments[arguments.length - 1];
const room = window.visitRoom;
const other = document.getElementById('room-other');
if (!room || !room.pc) { done({ state: 'no peer' }); return; }
room.pc.getStats().then((report) => {
  const out = { state: room.pc.connectionState, width: other.videoWidth, frames: 0,
                audio_packets: 0, audio_energy: 0 };
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') out.frames += s.framesDecoded || 0;
    if (s.kind === 'audio') {
      out.audio_packets += s.packetsReceived || 0;
      out.audio_energy += s.totalAudioEnergy || 0;
    }
  });
  done(out);
}, (e) => done({ state: 'getStats failed: ' + e }));
";

/// One test's gateway, with a video rate, a funded inmate, a visit station with its kiosk
/// token, and one approved visit whose slot is open.
struct Case {
    name: &'static str,
    gw: Gateway,
    api: Api,
    inmate: Inmate,
    station: String,
    kiosk_token: String,
    visit: String,
    rt: tokio::runtime::Runtime,
    db: Db,
    /// Last: dropped (failure dump, removal) after the gateway.
    dir: Workdir,
}

impl Case {
    /// `None` (after printing why) when a browser is missing. The plan charges
    /// `per_minute` in 6-second increments; the inmate has `balance`; the slot opened a
    /// second ago and lasts `slot_secs`.
    fn start(
        name: &'static str,
        per_minute: &str,
        balance: &str,
        slot_secs: i64,
        firefox: bool,
    ) -> Option<Case> {
        if !webdriver::present("visit browser test")
            || (firefox && !webdriver::firefox_present("visit browser test"))
        {
            return None;
        }
        let dir = Workdir::new("visit_browser", name);
        let gw = Gateway::start(&dir, &sipp::ports());
        let api = gw.api.clone();
        api.upload(
            "/api/v1/rate-plans?id=video&max_call_secs=3600",
            &format!(
                "class,service,per_minute,increment_secs\nlocal,audio,0.05,60\n\
                 domestic,audio,0.05,60\ninternational,audio,0.05,60\n\
                 local,video,{per_minute},6\n"
            ),
        );
        api.ok(
            "PATCH",
            "/api/v1/facilities/DEMO",
            Some(json!({ "rate_plan_id": "video" })),
        );
        let inmate = e2e::book(&api, "VB-1", "2468", e2e::NUMBER, false);
        e2e::fund(&api, &inmate, balance);
        let station = api.post(
            "/api/v1/facilities/DEMO/visit-stations",
            json!({ "name": "Kiosk 1", "housing_unit": "A", "capacity": 1 }),
        );
        let station = station["id"].as_str().unwrap().to_string();
        let kiosk = api.post(
            "/api/v1/tokens",
            json!({ "username": "kiosk-1", "role": "kiosk", "facilities": ["DEMO"],
                    "station_id": station, "ttl_secs": 3600 }),
        );
        let kiosk_token = kiosk["token"].as_str().unwrap().to_string();

        // The visit, written as an approved booking leaves it (booking itself, with its
        // notice and slot rules, is tests/visits.rs's): its slot opened a second ago.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = rt
            .block_on(Db::connect(
                &format!("sqlite://{}/db.sqlite", dir.path.display()),
                1,
            ))
            .unwrap();
        let now = chrono::Utc::now();
        let us = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
        let visit = format!("vis_{name}");
        rt.block_on(async {
            let contact: String =
                sqlx::query_scalar("SELECT id FROM contacts WHERE inmate_id = $1")
                    .bind(&inmate.id)
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
            sqlx::query(
                "INSERT INTO visits (id, facility_id, inmate_id, contact_id, station_id, \
                 starts_at, ends_at, status, privileged, requested_by, requested_role, \
                 created_at) VALUES ($1, 'DEMO', $2, $3, $4, $5, $6, 'approved', 0, 'admin', \
                 'admin', $7)",
            )
            .bind(&visit)
            .bind(&inmate.id)
            .bind(&contact)
            .bind(&station)
            .bind(us(now - chrono::Duration::seconds(1)))
            .bind(us(now + chrono::Duration::seconds(slot_secs)))
            .bind(us(now))
            .execute(db.pool())
            .await
            .unwrap();
        });
        Some(Case {
            name,
            gw,
            api,
            inmate,
            station,
            kiosk_token,
            visit,
            rt,
            db,
            dir,
        })
    }

    /// The family member: opens the join link, checks camera and microphone (the preview
    /// shows a picture and the meter moves), joins.
    fn visitor_joins(&self, page: &Page) {
        let link = self.api.post(
            &format!("/api/v1/visits/{}/join-link", self.visit),
            json!({}),
        );
        let url = link["url"].as_str().unwrap();
        assert!(url.starts_with("/visit/join#"), "{link}");
        let b = &page.browser;
        b.goto(&format!("{}{url}", self.gw.base_url()));
        b.wait_for("body[data-ready='1']");
        b.wait_js(
            "the visitor page shows the visit",
            Duration::from_secs(10),
            "return { check: !document.getElementById('check-view').hidden,
                      with: document.getElementById('visit-inmate').textContent,
                      error: document.getElementById('error').textContent };",
            |v| v["check"] == true,
        );
        b.click("#check-start");
        // Headless Firefox here has no audio output device, so its Web Audio graph (the
        // meter's analyser) does not run: there only the picture is checked.
        let meter = b.name() == "chromium";
        b.wait_js(
            "the preview shows the camera and the microphone meter moves",
            Duration::from_secs(15),
            "const v = document.getElementById('check-video');
             return { width: v.videoWidth, level: document.getElementById('check-level').value,
                      error: document.getElementById('error').textContent };",
            |v| {
                v["width"].as_u64().unwrap_or(0) > 0
                    && (!meter || v["level"].as_f64().unwrap_or(0.0) > 0.0)
            },
        );
        page.screenshot("check");
        b.click("#join");
    }

    /// The inmate at the kiosk: staff set it up once; the inmate picks the visit from
    /// today's list and confirms with calling ID and PIN.
    fn inmate_joins(&self, page: &Page) {
        let b = &page.browser;
        b.goto(&format!("{}/kiosk", self.gw.base_url()));
        b.wait_for("body[data-ready='1']");
        b.fill("#setup-station", &self.station);
        b.fill("#setup-token", &self.kiosk_token);
        b.click("#setup-save");
        b.click(&format!("tr[data-visit-id='{}'] button.join", self.visit));
        b.fill("#pin-id", &self.inmate.calling_id);
        b.fill("#pin-pin", &self.inmate.pin);
        b.click("#pin-submit");
        b.wait_js(
            "the kiosk enters the room",
            Duration::from_secs(10),
            "return { room: !document.getElementById('room-view').hidden,
                      error: document.getElementById('pin-error').textContent };",
            |v| v["room"] == true,
        );
    }

    /// An investigator logs into the console, opens the live page and watches the visit
    /// until both sides' video is decoded and their audio received.
    fn console_watches(&self, page: &Page) {
        const PASSWORD: &str = "correct horse battery staple";
        self.api
            .add_user("inv-visits", PASSWORD, "investigator", &[e2e::FACILITY]);
        let b = &page.browser;
        b.goto(&format!("{}/console/", self.gw.base_url()));
        b.wait_for("body[data-ready='1']");
        b.fill("#login-username", "inv-visits");
        b.fill("#login-password", PASSWORD);
        b.click("#login-submit");
        b.wait_js(
            "the investigator logs in",
            Duration::from_secs(10),
            "return !document.getElementById('search-view').hidden;",
            |v| v == true,
        );
        b.click("#nav-live");
        let row = format!("tr[data-visit-id='{}']", self.visit);
        b.click(&format!("{row} button.watch"));
        let stats = b.wait_js(
            "the console receives both sides",
            Duration::from_secs(30),
            "return ['visitor', 'inmate'].map((s) => ({
                frames: Number(document.getElementById('watch-frames-' + s).textContent),
                width: document.getElementById('watch-video-' + s).videoWidth }));",
            |v| {
                v.as_array().is_some_and(|sides| {
                    sides.iter().all(|s| {
                        s["frames"].as_f64().is_some_and(|n| n > 10.0)
                            && s["width"].as_u64().is_some_and(|w| w > 0)
                    })
                })
            },
        );
        println!("{}: {stats}", page.name);
        page.screenshot("watching");
    }

    /// The visit's ended session: (end reason, increments, amount in 1/10,000 of a dollar,
    /// paused ms), waiting for the CDR's close.
    fn ended_session(&self) -> (String, i64, i64, i64) {
        self.rt.block_on(async {
            for _ in 0..100 {
                let row: Option<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT end_reason, billed_increments, amount_minor, paused_ms \
                     FROM sessions WHERE visit_id = $1 AND state = 'ended'",
                )
                .bind(&self.visit)
                .fetch_optional(self.db.pool())
                .await
                .unwrap();
                if let Some(r) = row {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("the visit's session was not closed");
        })
    }

    /// The kinds on the visit session's timeline, in order.
    fn timeline(&self) -> Vec<String> {
        self.rt.block_on(async {
            sqlx::query_scalar(
                "SELECT e.kind FROM session_events e JOIN sessions s ON s.id = e.session_id \
                 WHERE s.visit_id = $1 ORDER BY e.seq",
            )
            .bind(&self.visit)
            .fetch_all(self.db.pool())
            .await
            .unwrap()
        })
    }

    /// How many of the visit's recordings are finished `complete` (waiting up to 10 s for
    /// `want`).
    fn complete_recordings(&self, want: i64) -> i64 {
        self.rt.block_on(async {
            let mut n = 0;
            for _ in 0..50 {
                n = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM recordings r JOIN sessions s ON s.id = r.session_id \
                     WHERE s.visit_id = $1 AND r.status = 'complete'",
                )
                .bind(&self.visit)
                .fetch_one(self.db.pool())
                .await
                .unwrap();
                if n == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            n
        })
    }

    /// The connected time (accepted to end, less the pauses) and each finished
    /// recording's duration, in ms.
    fn recorded_vs_connected(&self) -> (i64, Vec<i64>) {
        self.rt.block_on(async {
            let (accepted, end, paused): (i64, i64, i64) = sqlx::query_as(
                "SELECT accepted_at, end_at, paused_ms FROM sessions WHERE visit_id = $1",
            )
            .bind(&self.visit)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
            let durations: Vec<i64> = sqlx::query_scalar(
                "SELECT r.duration_ms FROM recordings r JOIN sessions s ON s.id = r.session_id \
                 WHERE s.visit_id = $1 AND r.status = 'complete' ORDER BY r.participant",
            )
            .bind(&self.visit)
            .fetch_all(self.db.pool())
            .await
            .unwrap();
            ((end - accepted) / 1000 - paused, durations)
        })
    }

    /// The visit charges on the inmate's statement: their count and their sum.
    fn statement_charges(&self) -> (usize, Decimal) {
        let st = self.api.get(&format!(
            "/api/v1/accounts/{}/statement",
            self.inmate.account
        ));
        let lines: Vec<&Value> = st["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "visit_charge")
            .collect();
        let sum = lines.iter().map(|l| e2e::money(&l["amount"])).sum();
        (lines.len(), sum)
    }

    /// The CDR, the statement and the balance agree: `increments` charges of `price`
    /// each, from `opening` balance.
    fn money_agrees(&self, increments: i64, amount_minor: i64, price: &str, opening: &str) {
        let amount = Decimal::new(amount_minor, 4);
        assert_eq!(
            amount,
            e2e::dec(price) * Decimal::from(increments),
            "CDR amount"
        );
        let (lines, sum) = self.statement_charges();
        assert_eq!(lines as i64, increments, "one statement line per increment");
        assert_eq!(
            sum, -amount,
            "the statement's visit charges are the CDR's amount"
        );
        assert_eq!(
            self.api.balance(&self.inmate.account),
            e2e::dec(opening) - amount,
            "the balance paid exactly the charges"
        );
        self.api.assert_ledger_clean();
    }
}

#[test]
fn a_visit_between_two_browsers_is_cut_when_the_funds_run_out() {
    // $0.16 a minute (the prison cap) in 6-second increments: $0.016 each; $0.048 pays
    // for three (18 s).
    let Some(case) = Case::start("funds", "0.16", "0.048", 600, false) else {
        return;
    };
    let visitor = Page::chromium(&case, "visitor");
    let kiosk = Page::chromium(&case, "kiosk");
    case.visitor_joins(&visitor);
    case.inmate_joins(&kiosk);
    for page in [&visitor, &kiosk] {
        page.phase("connected", Duration::from_secs(30));
        let stats = page.media_keeps_flowing();
        println!("{}: {stats}", page.name);
        // Well under a minute of funds: the warning shows at once.
        let warning = page.browser.wait_js(
            "the funds warning",
            Duration::from_secs(10),
            "const w = document.getElementById('room-warning');
             return { shown: !w.hidden, text: w.textContent };",
            |v| v["shown"] == true,
        );
        assert!(
            warning["text"].as_str().unwrap().contains("running low"),
            "{warning}"
        );
        page.screenshot("connected");
    }
    for page in [&visitor, &kiosk] {
        let text = page.ended("funds_exhausted", Duration::from_secs(40));
        assert!(text.contains("run out of funds"), "{text}");
        page.screenshot("ended");
    }

    let (reason, increments, amount, paused) = case.ended_session();
    assert_eq!(reason, "funds_exhausted");
    assert_eq!(increments, 3, "the balance paid for three increments");
    assert_eq!(paused, 0);
    case.money_agrees(increments, amount, "0.016", "0.048");
    assert_eq!(case.api.balance(&case.inmate.account), Decimal::ZERO);
    assert_eq!(case.complete_recordings(2), 2, "both sides recorded");
    let (connected, recorded) = case.recorded_vs_connected();
    println!("connected {connected} ms, recorded {recorded:?} ms");
    for ms in recorded {
        assert!(
            (ms - connected).abs() <= 1_000,
            "a recording of {ms} ms for {connected} ms connected"
        );
    }
}

#[test]
fn a_reload_pauses_the_visit_and_it_ends_with_its_slot() {
    // $0.12 a minute in 6-second increments ($0.012 each); an 80-second slot: joining,
    // connecting, the reload and the second join take 30-50 s while the other browser
    // tests run beside this one, and the visitor must be back before the slot is over.
    let Some(case) = Case::start("reload", "0.12", "5.00", 80, false) else {
        return;
    };
    let visitor = Page::chromium(&case, "visitor");
    let kiosk = Page::chromium(&case, "kiosk");
    case.visitor_joins(&visitor);
    case.inmate_joins(&kiosk);
    for page in [&visitor, &kiosk] {
        page.phase("connected", Duration::from_secs(30));
        page.media_keeps_flowing();
    }

    // The visitor reloads: the kiosk sees the visit paused until the visitor is back.
    visitor.browser.js("location.reload();", json!([]));
    kiosk.phase("paused", Duration::from_secs(20));
    kiosk.screenshot("paused");
    std::thread::sleep(Duration::from_secs(2));
    let b = &visitor.browser;
    b.wait_for("body[data-ready='1']");
    b.wait_js(
        "the reloaded page offers to join again",
        Duration::from_secs(10),
        "return { check: !document.getElementById('check-view').hidden };",
        |v| v["check"] == true,
    );
    b.click("#join");
    for page in [&visitor, &kiosk] {
        page.phase("connected", Duration::from_secs(30));
        page.media_keeps_flowing();
    }
    for page in [&visitor, &kiosk] {
        let text = page.ended("slot_ended", Duration::from_secs(90));
        assert!(text.contains("time is over"), "{text}");
    }

    let (reason, increments, amount, paused) = case.ended_session();
    assert_eq!(reason, "slot_ended");
    assert!(paused >= 2_000, "the pause ({paused} ms) is on the CDR");
    // Billed: the connected time only, in whole increments.
    assert!(
        (1..=13).contains(&increments),
        "{increments} increments in an 80 s slot with a pause"
    );
    case.money_agrees(increments, amount, "0.012", "5.00");
    let timeline = case.timeline();
    for kind in ["paused", "resumed"] {
        assert!(
            timeline.iter().any(|k| k == kind),
            "{kind} in the timeline {timeline:?}"
        );
    }
    assert_eq!(case.complete_recordings(2), 2, "both sides recorded");
}

#[test]
fn firefox_visits_chromium() {
    let Some(case) = Case::start("firefox", "0.12", "5.00", 600, true) else {
        return;
    };
    let visitor = Page::firefox(&case, "visitor");
    let kiosk = Page::chromium(&case, "kiosk");
    case.visitor_joins(&visitor);
    case.inmate_joins(&kiosk);
    for page in [&visitor, &kiosk] {
        page.phase("connected", Duration::from_secs(30));
        let stats = page.media_keeps_flowing();
        println!("{}: {stats}", page.name);
        page.screenshot("connected");
    }
    // A third browser: the investigator's console watches both sides.
    let console = Page {
        name: "visit-firefox-console".into(),
        browser: Browser::start(&case.dir.join("console-chromedriver.log")),
    };
    case.console_watches(&console);
    visitor.browser.click("#room-leave");
    for page in [&visitor, &kiosk] {
        let text = page.ended("visitor_left", Duration::from_secs(20));
        assert!(text.contains("visitor ended"), "{text}");
    }
    let (reason, increments, amount, _) = case.ended_session();
    assert_eq!(reason, "visitor_left");
    assert!(increments >= 1, "connected, so charged");
    case.money_agrees(increments, amount, "0.012", "5.00");
}

#[test]
fn the_kiosk_shows_the_inmate_their_own_account() {
    let Some(case) = Case::start("account", "0.12", "5.00", 600, false) else {
        return;
    };
    // A second deposit, so the history has two lines.
    let (s, v) = case.api.post_keyed(
        &format!("/api/v1/accounts/{}/deposits", case.inmate.account),
        "kiosk-test-2",
        json!({ "amount": "2.50", "method": "online", "depositor": "test" }),
    );
    assert_eq!(s, 201, "{v}");
    let page = Page::chromium(&case, "account");
    let b = &page.browser;
    b.goto(&format!("{}/kiosk", case.gw.base_url()));
    b.wait_for("body[data-ready='1']");
    b.fill("#setup-station", &case.station);
    b.fill("#setup-token", &case.kiosk_token);
    b.click("#setup-save");
    b.wait_for(&format!("tr[data-visit-id='{}']", case.visit));
    axe::assert_accessible(b, "the kiosk's day");
    // A wrong PIN: an error, no account.
    b.click("#account-start");
    b.fill("#pin-id", &case.inmate.calling_id);
    b.fill("#pin-pin", "0000");
    b.click("#pin-submit");
    let error = b.wait_js(
        "the wrong PIN is refused",
        Duration::from_secs(10),
        "const e = document.getElementById('pin-error');
         return { shown: !e.hidden, text: e.textContent,
                  account: !document.getElementById('account-view').hidden };",
        |v| v["shown"] == true,
    );
    assert_eq!(error["account"], false, "{error}");
    // The right one: the inmate's own numbers.
    b.fill("#pin-id", &case.inmate.calling_id);
    b.fill("#pin-pin", &case.inmate.pin);
    b.click("#pin-submit");
    let shown = b.wait_js(
        "the account is shown",
        Duration::from_secs(10),
        "return { shown: !document.getElementById('account-view').hidden,
                  balance: document.getElementById('account-balance').textContent,
                  name: document.getElementById('account-name').textContent,
                  history: document.querySelectorAll('#account-history-body tr').length,
                  visits: document.getElementById('account-visits-body').textContent };",
        |v| v["shown"] == true,
    );
    page.screenshot("shown");
    axe::assert_accessible(b, "the inmate's account at the kiosk");
    let account = case
        .api
        .get(&format!("/api/v1/accounts/{}", case.inmate.account));
    assert_eq!(
        shown["balance"],
        format!("${}", account["balance"].as_str().unwrap())
    );
    assert_eq!(shown["balance"], "$7.50", "{shown}");
    let statement = case.api.get(&format!(
        "/api/v1/accounts/{}/statement",
        case.inmate.account
    ));
    assert_eq!(
        shown["history"].as_u64(),
        statement["lines"].as_array().map(|l| l.len() as u64),
        "{shown}"
    );
    assert!(shown["name"].as_str().unwrap().contains("VB-1"), "{shown}");
    assert!(
        shown["visits"].as_str().unwrap().contains("Kiosk 1"),
        "{shown}"
    );
    // Done: back to the day's list, nothing of the inmate left on the page.
    b.click("#account-done");
    let after = b.wait_js(
        "Done forgets the account",
        Duration::from_secs(10),
        "return { today: !document.getElementById('today-view').hidden,
                  left: document.getElementById('account-view').textContent.includes('7.50') };",
        |v| v["today"] == true,
    );
    assert_eq!(after["left"], false, "{after}");
}
