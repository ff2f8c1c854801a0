//! The investigator console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver), against the real `sallyport serve` on a fresh SQLite database
//! and, for calls, sipp on both sides of the gateway sending tones.
//!
//! - `console_is_served_by_the_gateway`: `/` leads to `/console/`, files with their types
//!   and the Content-Security-Policy (no browser needed).
//! - `wrong_password_is_refused_in_the_console`: the page loads under its CSP, every script
//!   runs, a refused login shows the API's error and keeps no token.
//! - `investigator_searches_and_replays_a_recording`: a recorded sipp call; the investigator
//!   logs in, searches by booking number, opens the session (CDR, hash, integrity), plays
//!   the recording (`currentTime` advances) and seeks into it.
//! - `investigator_of_another_facility_gets_nothing`: the same search finds the session for
//!   the facility's investigator and nothing for another facility's; opening it is refused.
//! - `investigator_builds_and_downloads_an_evidence_package`: a session ticked in the
//!   search results, a reason, Build package (it verifies), Download package (audited).
//! - `investigator_listens_live_then_terminates`: a sipp call in progress; Listen (WebRTC,
//!   receive-only) until `getStats()` counts inbound RTP packets, Stop, then Terminate.
//! - `investigator_finds_a_person_and_bookmarks_a_moment`: a recorded sipp call found by
//!   the inmate's name; results and session page show the inmate, booking number, contact
//!   and relationship and facility-local times with the zone (the table fits its card);
//!   opening the session fetches and audits no playback; Play, then a note at the playback
//!   position (audited), found again on the inmate's page; axe-core on every page.
//! - `terminate_works_after_the_listener_died_and_logout_clears_live_rows`: logout leaves
//!   no live row; with a listener the gateway no longer knows, one Terminate click ends the
//!   call, and the record (and session page) names who terminated it.
//!
//! - `investigator_follows_a_calls_timeline`: a recorded sipp call whose called party
//!   speaks in bursts; the API's timeline and the session page list its events in order
//!   (INVITE, PIN, checks, trunk answer, announcement, acceptance, recording, increments
//!   with the balance after each, the cut by the inmate, the end); nothing is fetched
//!   before Play, then the waveform is drawn; clicking the acceptance (or an increment),
//!   in the table or on the axis, seeks the audio to within 100 ms of it; 1.5× sets
//!   `playbackRate`, `]` and `[` change it, skip silence jumps a
//!   silent stretch; axe-core on the page.
//! - The live test also checks the balance left falling, the listen panel's two labelled
//!   meters moving and a volume slider changing its party's gain.
//! - `investigator_packages_three_recorded_calls_that_verify_until_changed`: three recorded
//!   sipp calls ticked, packaged and downloaded by Chromium; `sallyport verify-package` on
//!   the downloaded file passes, fails naming the recording after one byte of it is
//!   flipped, and names the chain break after its chain entry is removed.
//! - `every_console_page_by_keyboard_at_1280_and_1024_px`: every console page by keyboard
//!   alone (Tab to each main action, Enter), each checked at 1024 and 1280 px (nothing
//!   runs off the side, tables fit their boxes) and by axe-core; the leads' times shown in
//!   the zone of the facility each happened in, named.
//! - `investigator_sorts_the_results_by_time_duration_and_amount`: the results' Started,
//!   Duration and Amount headers (clicked, and from the keyboard) and the Order menu sort
//!   the rows as each asks; the header says which way.
//! - `an_inmates_page_offers_all_their_sessions_in_the_search`: an inmate's page with more
//!   sessions than it lists says so, and its button shows them all in the search.
//! - The live test runs by keyboard too (Listen, a volume, Stop, Terminate) and checks the
//!   live page, with the call's row and with the listen panel, at 1024 and 1280 px.
//!
//! With `SALLYPORT_DOC_SCREENSHOTS=1` the pictures of `docs/investigator-guide.md` are
//! written to `docs/img/` (with `visit_watch` and `visit_replay`, which take the visit
//! pages'): the one way to make them again (`docs/investigator-guide.md` says how).
//!
//! Every browser test saves a screenshot into `target/browser-screenshots/` (also on
//! failure, `<test>-failure.png`) and prints its path. Without Chromium/chromedriver (Debian
//! packages `chromium`, `chromium-driver`) or sipp (`sip-tester`) a test prints why and
//! passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`. Run: `cargo test --test browser --
//! --nocapture`; a failing test keeps its directory (gateway log, sipp traces, driver log)
//! under `target/tmp/browser/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::api::{self, Api, Inmate, FACILITY};
use support::axe;
use support::console::{
    doc_screenshot, press, readable_at_both_widths, screenshots, tab_to, wait_visible,
};
use support::gateway::Gateway;
use support::sipp::{self, Handset, Tone, Trunk, Via};
use support::webdriver::{self, Browser};
use support::Workdir;

const PASSWORD: &str = "correct horse battery staple";

/// One test: its ports, gateway, (when it uses one) browser and directory.
struct Case {
    name: &'static str,
    ports: sipp::Ports,
    gateway: Gateway,
    browser: Option<Browser>,
    /// Last: dropped (failure dump, removal) after the browser and the gateway.
    dir: Workdir,
}

impl Case {
    /// `None` (after printing why) when a tool the test needs is missing.
    fn start(name: &'static str, browser: bool, calls: bool) -> Option<Case> {
        if (browser && !webdriver::present("browser test"))
            || (calls && !sipp::present("browser test"))
        {
            return None;
        }
        let dir = Workdir::new("browser", name);
        let ports = sipp::ports();
        let gateway = Gateway::start(&dir, &ports);
        let browser = browser.then(|| Browser::start(&dir.join("chromedriver.log")));
        Some(Case {
            name,
            ports,
            gateway,
            browser,
            dir,
        })
    }

    fn api(&self) -> Api {
        self.gateway.api.clone()
    }

    fn browser(&self) -> &Browser {
        self.browser.as_ref().expect("a browser test")
    }

    fn screenshot(&self, what: &str) {
        self.browser()
            .screenshot(&screenshots().join(format!("{}-{what}.png", self.name)));
    }

    /// The called party: answers, presses 1 (accepting the call) and keeps sending a
    /// 660 Hz tone until the gateway's BYE.
    fn trunk(&self) -> sipp::Sipp {
        Trunk::answer("1")
            .speaking(Tone::steady(660.0, 100))
            .spawn(&self.dir, &self.ports)
    }

    /// The inmate: `handset-1` dials [`api::NUMBER`], enters `pin` (RFC 4733), keeps
    /// sending a 440 Hz tone, and hangs up `hold` after the PIN (or, with `None`, waits for
    /// the gateway's BYE).
    fn handset(&self, pin: &str, hold: Option<Duration>) -> sipp::Sipp {
        let mut h = Handset::new(pin, Via::Rtp).speaking(Tone::steady(440.0, 100));
        if let Some(hold) = hold {
            h = h.hang_up_after(u32::try_from(hold.as_millis()).expect("hold"));
        }
        h.spawn(&self.dir, 0, &self.ports, self.gateway.sip)
    }

    /// Opens the console and logs in; waits for the search page.
    fn login(&self, username: &str, password: &str) {
        let b = self.browser();
        b.goto(&format!("{}/console/", self.gateway.base_url()));
        b.wait_for("body[data-ready='1']");
        b.fill("#login-username", username);
        b.fill("#login-password", password);
        b.click("#login-submit");
        b.wait_js(
            &format!("{username} logs in"),
            Duration::from_secs(10),
            "return { search: !document.getElementById('search-view').hidden,
                      error: document.getElementById('login-error').textContent };",
            |v| v["search"] == true,
        );
    }

    fn logout(&self) {
        let b = self.browser();
        b.click("#logout");
        wait_visible(b, "login-view");
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(b) = &self.browser {
                let shot = screenshots().join(format!("{}-failure.png", self.name));
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.screenshot(&shot)));
            }
        }
    }
}

/// Investigators of the demo facility and of another one.
fn investigators(api: &Api) {
    api.add_facility("OTHER");
    api.add_user("inv-demo", PASSWORD, "investigator", &[FACILITY]);
    api.add_user("inv-other", PASSWORD, "investigator", &["OTHER"]);
}

/// Waits for `inmate`'s call to have ended with a finished recording: the call's id and
/// the recording.
fn ended_recorded_call(api: &Api, inmate: &Inmate) -> (String, Value) {
    wait_until(
        "the call ended with a finished recording",
        Duration::from_secs(20),
        || {
            let calls = api.calls(&format!("facility_id={FACILITY}"));
            let c = calls
                .iter()
                .find(|c| c["inmate_id"] == inmate.id.as_str() && c["state"] == "ended")?;
            let rid = c["recording_id"].as_str()?;
            let rec = api.get(&format!("/api/v1/recordings/{rid}"));
            (rec["status"] == "complete")
                .then(|| (c["id"].as_str().unwrap_or_default().to_string(), rec))
        },
    )
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---- tests ----------------------------------------------------------------------------

#[test]
fn console_is_served_by_the_gateway() {
    let Some(case) = Case::start("served", false, false) else {
        return;
    };
    let api = case.api();
    let (status, head, _) = api.send("GET", "/", None, &[]);
    assert!((300..400).contains(&status), "/ answers {status}");
    assert!(head.contains("location: /console/"), "{head}");
    for (path, ctype) in [
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/api.js", "text/javascript"),
        ("/console/listen.js", "text/javascript"),
        ("/console/style.css", "text/css"),
    ] {
        let (status, head, _) = api.send("GET", path, None, &[]);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            head.contains(&format!("content-type: {ctype}")),
            "{path}: {head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}: {head}"
        );
    }
}

#[test]
fn wrong_password_is_refused_in_the_console() {
    let Some(case) = Case::start("wrong_password", true, false) else {
        return;
    };
    let b = case.browser();
    b.goto(&format!("{}/", case.gateway.base_url()));
    b.wait_for("body[data-ready='1']");
    wait_visible(b, "login-view");
    let scripts = b.js(
        "return [typeof Api, typeof Listener, typeof route, location.pathname];",
        json!([]),
    );
    assert_eq!(
        scripts,
        json!(["object", "function", "function", "/console/"]),
        "every script ran under the CSP"
    );
    axe::assert_accessible(b, "the login page");
    b.fill("#login-username", "nobody");
    b.fill("#login-password", "not the password");
    b.click("#login-submit");
    wait_visible(b, "login-error");
    let error = b.text("#login-error");
    assert!(!error.trim().is_empty(), "an error is shown");
    let token = b.js(
        "return sessionStorage.getItem('sallyport.token');",
        json!([]),
    );
    assert_eq!(token, Value::Null, "no token kept");
    assert!(
        b.js(
            "return document.getElementById('search-view').hidden;",
            json!([])
        ) == true
    );
    println!("refused login shows: {error}");
    case.screenshot("refused");
}

#[test]
fn investigator_searches_and_replays_a_recording() {
    let Some(case) = Case::start("replay", true, true) else {
        return;
    };
    let api = case.api();
    api::three_second_increments(&api);
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7001", "4821", "5.00");
    // A call of about ten connected seconds, both sides sending a tone.
    let mut trunk = case.trunk();
    let mut hs = case.handset(&inmate.pin, Some(Duration::from_secs(14)));
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(30));
    let (id, rec) = ended_recorded_call(&api, &inmate);
    let sha = rec["sha256"].as_str().expect("sha256").to_string();

    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    b.fill("#search-booking", &inmate.booking);
    b.click("#search-submit");
    let row = format!("tr[data-session-id='{id}']");
    b.wait_for(&row);
    assert_eq!(b.text("#results-total"), "1");
    b.click(&format!("{row} a.session-link"));
    wait_visible(b, "recording");
    assert_eq!(b.text("#cdr-id"), id);
    b.wait_js(
        "the hash shown",
        Duration::from_secs(10),
        "return document.getElementById('recording-sha256').textContent;",
        |v| v == sha.as_str(),
    );
    b.wait_js(
        "integrity verified",
        Duration::from_secs(10),
        "return document.getElementById('recording-verify').dataset.status;",
        |v| v == "ok",
    );
    let href = b.js(
        "return document.getElementById('recording-download').getAttribute('href');",
        json!([]),
    );
    assert!(
        href.as_str().is_some_and(|h| !h.is_empty() && h != "#"),
        "download link: {href}"
    );
    // Opening the session asked no download ticket: the audit log has no download yet.
    let downloads = || {
        let entries = api.get("/api/v1/audit?limit=500");
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["action"] == "recording.download" && e["actor"] == "inv-demo")
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(downloads(), 0, "no download before the link is clicked");
    // An integrity problem is shown as kind, path and detail.
    let shown = b.js(
        "const s = document.createElement('span');
         renderVerification(s, { ok: false, problems: [{ kind: 'changed', recording_id: 'rec_x',
           path: '2026/03/02/x.wav', chain_seq: null, detail: 'sha256 differs' }] });
         return s.textContent;",
        json!([]),
    );
    assert_eq!(shown, "FAILED: changed 2026/03/02/x.wav: sha256 differs");

    // Nothing is fetched before Play is pressed.
    b.click("#recording-play");
    let t = b.wait_js(
        "the audio advances",
        Duration::from_secs(15),
        "const a = document.getElementById('recording-audio');
         return { t: a.currentTime, d: a.duration, err: a.error && a.error.message };",
        |v| v["t"].as_f64().is_some_and(|t| t > 1.0),
    );
    println!("playing: {t}");
    let duration = t["d"].as_f64().unwrap_or(0.0);
    assert!(duration > 6.0, "the recording lasts the call: {t}");
    b.js(
        "document.getElementById('recording-audio').currentTime = arguments[0];",
        json!([duration - 2.5]),
    );
    let seeked = b.wait_js(
        "the seek lands",
        Duration::from_secs(10),
        "const a = document.getElementById('recording-audio');
         return { t: a.currentTime, seeking: a.seeking, paused: a.paused };",
        |v| v["seeking"] == false && v["t"].as_f64().is_some_and(|t| t >= duration - 2.5),
    );
    println!("after the seek: {seeked}");
    // The download link asks its ticket when clicked (audited then).
    b.click("#recording-download");
    wait_until("the download is audited", Duration::from_secs(10), || {
        (downloads() > 0).then_some(())
    });
    case.screenshot("session");
}

#[test]
fn investigator_of_another_facility_gets_nothing() {
    let Some(case) = Case::start("other_facility", true, false) else {
        return;
    };
    let api = case.api();
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7002", "4822", "1.00");
    let id = "sess-browser-1";
    insert_ended_call(&case.dir, id, &inmate);

    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    b.click("#search-submit");
    b.wait_for(&format!("tr[data-session-id='{id}']"));
    assert_eq!(
        b.text("#results-total"),
        "1",
        "the facility's own investigator finds it"
    );
    // A number on no list of the inmate's: said so, with the number.
    let shown = b.text(&format!("tr[data-session-id='{id}']"));
    assert!(
        shown.contains("not on list") && shown.contains(api::NUMBER),
        "{shown}"
    );
    case.logout();

    case.login("inv-other", PASSWORD);
    b.click("#search-submit");
    wait_visible(b, "results-empty");
    assert_eq!(b.text("#results-total"), "0");
    assert!(b.find(&format!("tr[data-session-id='{id}']")).is_none());
    let options = b.js(
        "return [...document.getElementById('search-facility').options].map(o => o.value);",
        json!([]),
    );
    assert_eq!(
        options,
        json!(["", "OTHER"]),
        "only the investigator's facility is offered"
    );
    b.js("location.hash = '#/session/' + arguments[0];", json!([id]));
    wait_visible(b, "error");
    let error = b.text("#error");
    assert!(
        error.contains("forbidden") || error.contains("not_found"),
        "{error}"
    );
    assert_eq!(b.text("#cdr"), "", "nothing of the session is shown");
    case.screenshot("refused");
}

#[test]
fn investigator_builds_and_downloads_an_evidence_package() {
    let Some(case) = Case::start("evidence", true, false) else {
        return;
    };
    let api = case.api();
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7003", "4823", "1.00");
    let id = "sess-browser-evidence";
    insert_ended_call(&case.dir, id, &inmate);

    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    b.click("#search-submit");
    b.wait_for(&format!("tr[data-session-id='{id}']"));
    let build_disabled = "return document.getElementById('evidence-build').disabled;";
    assert_eq!(
        b.js(build_disabled, json!([])),
        json!(true),
        "nothing ticked"
    );
    b.click(&format!("input.evidence-select[data-session-id='{id}']"));
    assert_eq!(b.text("#evidence-count"), "1");
    assert_eq!(b.js(build_disabled, json!([])), json!(false));
    b.fill("#evidence-reason", "case 2026-7");
    b.click("#evidence-build");
    wait_visible(b, "evidence-result");
    let verdict = b.js(
        "return document.getElementById('evidence-verdict').dataset.status;",
        json!([]),
    );
    assert_eq!(verdict, json!("ok"), "{}", b.text("#evidence-verdict"));
    let package = b.text("#evidence-id");
    assert!(package.starts_with("evp_"), "{package}");
    b.click("#evidence-download");
    let entry = wait_until("the download is audited", Duration::from_secs(10), || {
        let log = api.get("/api/v1/audit?limit=50");
        log.as_array()?
            .iter()
            .find(|e| e["action"] == "evidence_package.download")
            .cloned()
    });
    assert_eq!(entry["actor"], "inv-demo");
    assert_eq!(entry["target"], package.as_str());
    assert_eq!(
        entry["detail"]["sha256"],
        b.text("#evidence-sha256").as_str()
    );
    axe::assert_accessible(b, "the evidence package built");
    case.screenshot("built");
}

/// An ended call of the demo facility a minute long, written straight into the gateway's
/// database.
fn insert_ended_call(dir: &std::path::Path, id: &str, inmate: &Inmate) {
    insert_call(dir, id, inmate, Duration::from_secs(60), 55, 0);
}

/// An ended call of the demo facility begun `ago` before now, talking `talk_secs` and
/// charged `amount_minor` (1/10,000), written straight into the gateway's database.
fn insert_call(
    dir: &std::path::Path,
    id: &str,
    inmate: &Inmate,
    ago: Duration,
    talk_secs: i64,
    amount_minor: i64,
) {
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let invite = chrono::Utc::now().timestamp_micros() - i64::try_from(ago.as_micros()).unwrap();
    let accepted = invite + 5_000_000;
    let end = accepted + talk_secs * 1_000_000;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = sallyport::db::Db::connect(&url, 1).await.expect("db");
        sqlx::query(
            "INSERT INTO sessions (id, kind, facility_id, inmate_id, account_id, number_e164, \
             state, end_reason, node_id, invite_at, answer_at, accepted_at, media_end_at, end_at, \
             amount_minor) \
             VALUES ($1, 'call', $2, $3, $4, $5, 'ended', 'caller_hangup', 'node-1', $6, $7, $7, \
             $8, $8, $9)",
        )
        .bind(id)
        .bind(FACILITY)
        .bind(&inmate.id)
        .bind(&inmate.account)
        .bind(api::NUMBER)
        .bind(invite)
        .bind(accepted)
        .bind(end)
        .bind(amount_minor)
        .execute(db.pool())
        .await
        .expect("insert session");
        db.close().await;
    });
}

/// The search results sorted through the page's own controls: the Started, Duration and
/// Amount column headers (clicked, and pressed from the keyboard) and the Order menu; the
/// rows drawn in the order each asks for, the header saying which way it is sorted.
#[test]
fn investigator_sorts_the_results_by_time_duration_and_amount() {
    let Some(case) = Case::start("sorting", true, false) else {
        return;
    };
    let api = case.api();
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7501", "4871", "1.00");
    // Four calls an hour apart; each order below is a different one.
    let calls = [
        ("sort-1", 4, 100, 9_000, "1:40", "0.90"),
        ("sort-2", 3, 20, 3_000, "0:20", "0.30"),
        ("sort-3", 2, 300, 5_000, "5:00", "0.50"),
        ("sort-4", 1, 60, 1_000, "1:00", "0.10"),
    ];
    for (id, hours, talk, amount, _, _) in calls {
        insert_call(
            &case.dir,
            id,
            &inmate,
            Duration::from_secs(hours * 3600),
            talk,
            amount,
        );
    }
    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    let rows_js =
        "return [...document.querySelectorAll('#results-body tr')].map(r => r.dataset.sessionId);";
    let sorted = |what: &str, want: [&str; 4]| {
        b.wait_js(what, Duration::from_secs(10), rows_js, |v| {
            *v == json!(want)
        });
    };
    let header = |key: &str| {
        b.js(
            "const th = document.querySelector(`#results-table th[data-sort='${arguments[0]}']`);
             return [th.getAttribute('aria-sort'), th.textContent.trim(),
                     document.getElementById('search-sort').value];",
            json!([key]),
        )
    };
    b.click("#search-submit");
    sorted("newest first", ["sort-4", "sort-3", "sort-2", "sort-1"]);
    assert_eq!(header("time")[0], "descending");
    // Each row shows what it is sorted by.
    for (id, _, _, _, talk, amount) in calls {
        let shown = b.text(&format!("tr[data-session-id='{id}']"));
        assert!(
            shown.contains(talk) && shown.contains(amount),
            "{id}: {talk} and {amount} in {shown}"
        );
    }

    // Duration: a click sorts longest first; Enter on the focused header, shortest first.
    b.click("#results-table button.sort[data-sort='duration']");
    sorted("longest first", ["sort-3", "sort-1", "sort-4", "sort-2"]);
    assert_eq!(
        header("duration"),
        json!(["descending", "Duration ▼", "duration:desc"])
    );
    assert_eq!(header("time")[0], "none");
    tab_to(b, "#results-table button.sort[data-sort='duration']");
    press(b, "\u{E007}");
    sorted("shortest first", ["sort-2", "sort-4", "sort-1", "sort-3"]);
    assert_eq!(
        header("duration"),
        json!(["ascending", "Duration ▲", "duration:asc"])
    );

    // Amount from the keyboard (Space on the header), then again the other way.
    tab_to(b, "#results-table button.sort[data-sort='amount']");
    press(b, " ");
    sorted(
        "highest amount first",
        ["sort-1", "sort-3", "sort-2", "sort-4"],
    );
    assert_eq!(header("amount")[0], "descending");
    tab_to(b, "#results-table button.sort[data-sort='amount']");
    press(b, " ");
    sorted(
        "lowest amount first",
        ["sort-4", "sort-2", "sort-3", "sort-1"],
    );

    // Started: newest first, then oldest first.
    b.click("#results-table button.sort[data-sort='time']");
    sorted(
        "newest first again",
        ["sort-4", "sort-3", "sort-2", "sort-1"],
    );
    b.click("#results-table button.sort[data-sort='time']");
    sorted("oldest first", ["sort-1", "sort-2", "sort-3", "sort-4"]);
    assert_eq!(
        header("time"),
        json!(["ascending", "Started ▲", "time:asc"])
    );

    // The Order menu, then Search: the same orders, and the headers follow it.
    b.click("#search-sort option[value='amount:desc']");
    b.click("#search-submit");
    sorted(
        "the menu's highest amount first",
        ["sort-1", "sort-3", "sort-2", "sort-4"],
    );
    assert_eq!(header("amount")[0], "descending");
    assert_eq!(header("time")[0], "none");
    axe::assert_accessible(b, "the sorted results");
    case.screenshot("sorted");
}

/// An inmate with more sessions than the inmate's page lists: the page says it shows the
/// 20 newest of how many, and its button shows them all in the search (paged there).
#[test]
fn an_inmates_page_offers_all_their_sessions_in_the_search() {
    let Some(case) = Case::start("all_sessions", true, false) else {
        return;
    };
    let api = case.api();
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7601", "4881", "1.00");
    let other = api::book_funded(&api, "B-7602", "4882", "1.00");
    for n in 0..23_u64 {
        insert_call(
            &case.dir,
            &format!("many-{n:02}"),
            &inmate,
            Duration::from_secs(3600 + 60 * n),
            30,
            100,
        );
    }
    insert_call(
        &case.dir,
        "another",
        &other,
        Duration::from_secs(60),
        30,
        100,
    );
    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    b.js(
        "location.hash = '#/inmate/' + arguments[0];",
        json!([inmate.id]),
    );
    wait_visible(b, "subject-sessions-more");
    assert_eq!(
        b.text("#subject-sessions-count"),
        "The 20 newest of 23 sessions."
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#subject-sessions-body tr').length;",
            json!([])
        ),
        json!(20)
    );
    tab_to(b, "#subject-search-all");
    press(b, "\u{E007}");
    wait_visible(b, "search-view");
    b.wait_js(
        "all of the inmate's sessions found",
        Duration::from_secs(10),
        "return document.getElementById('results-total').textContent;",
        |v| v == "23",
    );
    assert_eq!(
        b.js(
            "return document.getElementById('search-inmate').value;",
            json!([])
        ),
        json!(inmate.id)
    );
    assert!(b.find("tr[data-session-id='another']").is_none());
    assert_eq!(b.text("#page-info"), "1–20 of 23");
    b.click("#page-next");
    b.wait_for("tr[data-session-id='many-22']");
    // An inmate with few sessions: no such line.
    b.js(
        "location.hash = '#/inmate/' + arguments[0];",
        json!([other.id]),
    );
    b.wait_for("#subject-sessions-body tr[data-session-id='another']");
    assert_eq!(
        b.js(
            "return document.getElementById('subject-sessions-more').hidden;",
            json!([])
        ),
        json!(true)
    );
}

#[test]
fn investigator_listens_live_then_terminates() {
    let Some(case) = Case::start("live_listen", true, true) else {
        return;
    };
    let api = case.api();
    api::three_second_increments(&api);
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7003", "4823", "5.00");
    let mut trunk = case.trunk();
    let mut hs = case.handset(&inmate.pin, None);
    let id = api.accepted_call(Duration::from_secs(30));

    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    // By keyboard: the live page, its row of the call in progress, Listen.
    tab_to(b, "#nav-live");
    press(b, "\u{E007}");
    let row = format!("tr[data-call-id='{id}']");
    b.wait_for(&row);
    readable_at_both_widths(b, "the live page with a call in progress");
    tab_to(b, &format!("{row} button.listen"));
    press(b, "\u{E007}");
    wait_visible(b, "listen-panel");
    let shown = b.wait_js(
        "packets counted on the page",
        Duration::from_secs(20),
        "return { n: Number(document.getElementById('listen-packets').textContent),
                  state: document.getElementById('listen-state').textContent,
                  error: document.getElementById('error').textContent };",
        |v| v["n"].as_f64().is_some_and(|n| n > 0.0),
    );
    println!("listening: {shown}");
    let stats = b.js_async(
        "const done = arguments[arguments.length - 1];
         state.listener.pc.getStats().then(s => {
           const inbound = [];
           s.forEach(r => { if (r.type === 'inbound-rtp') inbound.push({ mid: r.mid, packets: r.packetsReceived, codec: r.codecId }); });
           done(inbound);
         }, e => done(String(e)));",
        json!([]),
    );
    println!("inbound-rtp: {stats}");
    let packets: u64 = stats
        .as_array()
        .map_or(0, |a| a.iter().filter_map(|r| r["packets"].as_u64()).sum());
    assert!(packets > 0, "getStats() shows packets received: {stats}");
    // Each party labelled, its level on a meter that moves (both speak a tone).
    let labels = b.js(
        "return [document.getElementById('listen-label-inmate').textContent,
                 document.getElementById('listen-label-called').textContent];",
        json!([]),
    );
    assert!(
        labels[0]
            .as_str()
            .is_some_and(|t| t.contains("inmate") && t.contains(&inmate.booking))
            && labels[1]
                .as_str()
                .is_some_and(|t| t.contains("called party") && t.contains("Called Party")),
        "{labels}"
    );
    let levels = b.wait_js(
        "both meters move",
        Duration::from_secs(15),
        "return ['inmate', 'called'].map(p => Number(document.getElementById('listen-meter-' + p).dataset.level));",
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|l| l.as_f64().is_some_and(|l| l > 0.3)))
        },
    );
    println!("levels on the meters: {levels}");
    // The called party's volume down three steps with the keyboard: its gain follows.
    tab_to(b, "#listen-volume-called");
    press(b, "\u{E012}\u{E012}\u{E012}");
    let gains = b.wait_js(
        "the gain follows the slider",
        Duration::from_secs(5),
        "return [state.listener.volume(0), state.listener.volume(1),
                 document.getElementById('listen-gain-called').textContent];",
        |v| v[1].as_f64().is_some_and(|g| (g - 0.7).abs() < 0.01),
    );
    assert_eq!(gains[0].as_f64(), Some(1.0), "{gains}");
    assert_eq!(gains[2], "70%", "{gains}");
    // The balance left falls as increments are charged.
    let balance = |v: &Value| v.as_str().and_then(|t| t.parse::<f64>().ok());
    let balance_js =
        format!("const e = document.querySelector(\"{row} .balance\"); return e && e.textContent;");
    let first = b.wait_js(
        "a balance shown",
        Duration::from_secs(10),
        &balance_js,
        |v| balance(v).is_some(),
    );
    let fallen = b.wait_js(
        "the balance falls",
        Duration::from_secs(15),
        &balance_js,
        |v| {
            balance(v)
                .zip(balance(&first))
                .is_some_and(|(now, then)| now < then)
        },
    );
    println!("balance left: {first} then {fallen}");
    readable_at_both_widths(b, "the live page while listening");
    // The picture shows the call's row and the panel under it.
    b.js("window.scrollTo(0, 0);", json!([]));
    doc_screenshot(b, "live-listen");
    case.screenshot("listening");
    tab_to(b, "#listen-stop");
    press(b, "\u{E007}");
    b.wait_js(
        "the panel closes",
        Duration::from_secs(10),
        "return document.getElementById('listen-panel').hidden;",
        |v| v == true,
    );
    // The focus goes back to the call's Listen button, not to the top of the page.
    b.wait_js(
        "the focus back on the row",
        Duration::from_secs(5),
        &format!("return document.activeElement.matches(\"{row} button.listen\");"),
        |v| v == true,
    );

    tab_to(b, &format!("{row} button.terminate"));
    press(b, "\u{E007}");
    b.accept_dialog();
    b.wait_js(
        "the call leaves the list",
        Duration::from_secs(15),
        &format!("return !document.querySelector(\"{row}\");"),
        |v| v == true,
    );
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(cdr["end_reason"], "terminated", "{cdr}");
    hs.expect_ok(Duration::from_secs(20));
    trunk.expect_ok(Duration::from_secs(20));
}

/// The audit entries with `action` written for `actor`.
fn audited(api: &Api, action: &str, actor: &str) -> Vec<Value> {
    let log = api.get("/api/v1/audit?limit=500");
    log.as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["action"] == action && e["actor"] == actor)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// `at` (RFC 3339) in `zone` as the console writes it: `2026-03-02 10:00:05 CST`.
fn facility_time(at: &str, zone: &str) -> String {
    let tz: chrono_tz::Tz = zone.parse().expect("zone");
    chrono::DateTime::parse_from_rfc3339(at)
        .expect("time")
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// That the results table fits its card (no horizontal overflow) at the window's width.
fn fits_its_card(b: &Browser, table: &str) {
    let sizes = b.js(
        "const t = document.getElementById(arguments[0]);
         const card = t.closest('section');
         return { table: t.getBoundingClientRect().right, card: card.getBoundingClientRect().right,
                  scroll: card.scrollWidth, client: card.clientWidth, window: window.innerWidth };",
        json!([table]),
    );
    let f = |k: &str| sizes[k].as_f64().unwrap_or(f64::MAX);
    assert!(
        f("table") <= f("card") + 0.5 && f("scroll") <= f("client"),
        "{table} overflows its card: {sizes}"
    );
}

#[test]
fn investigator_finds_a_person_and_bookmarks_a_moment() {
    let Some(case) = Case::start("people_notes", true, true) else {
        return;
    };
    let api = case.api();
    api::three_second_increments(&api);
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7101", "4831", "5.00");
    api.ok(
        "PUT",
        &format!("/api/v1/inmates/{}/housing-unit", inmate.id),
        Some(json!({ "housing_unit": "C-Block" })),
    );
    let mut trunk = case.trunk();
    let mut hs = case.handset(&inmate.pin, Some(Duration::from_secs(14)));
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(30));
    let id = ended_recorded_call(&api, &inmate).0;
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    let zone = cdr["time_zone"]
        .as_str()
        .expect("the facility's zone")
        .to_string();
    let invite = facility_time(cdr["invite_at"].as_str().expect("invite_at"), &zone);
    let name = format!("Test {}", inmate.booking);

    // Found by name, shown by the people in it, in the facility's time with seconds.
    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    axe::assert_accessible(b, "the search page");
    b.fill("#search-name", &name.to_lowercase());
    b.click("#search-submit");
    let row = format!("tr[data-session-id='{id}']");
    b.wait_for(&row);
    assert_eq!(b.text("#results-total"), "1");
    let shown = b.text(&row);
    for expect in [
        format!("{name} ({})", inmate.booking),
        "Called Party (friend)".to_string(),
        "Unit C-Block".to_string(),
        invite.clone(),
    ] {
        assert!(
            shown.contains(&expect),
            "{expect:?} in the result row: {shown}"
        );
    }
    fits_its_card(b, "results-table");
    axe::assert_accessible(b, "the search results");
    case.screenshot("results");
    doc_screenshot(b, "search-results");
    // Readable on a laptop: at 1024 px the table still fits, the cells wrap.
    b.window_size(1024, 768);
    b.wait_js(
        "the window is 1024 px wide",
        Duration::from_secs(5),
        "return window.outerWidth;",
        |v| v.as_f64().is_some_and(|w| w <= 1024.0),
    );
    fits_its_card(b, "results-table");
    b.js(
        "document.getElementById('results').scrollIntoView();",
        json!([]),
    );
    case.screenshot("results-1024");
    b.window_size(1280, 1000);

    // Opening the session fetches and audits no playback.
    b.click(&format!("{row} a.session-link"));
    wait_visible(b, "recording");
    b.wait_js(
        "the inmate's name on the record",
        Duration::from_secs(10),
        "return document.getElementById('cdr-inmate-name').textContent;",
        |v| v == name.as_str(),
    );
    assert_eq!(b.text("#cdr-contact-name"), "Called Party");
    assert_eq!(b.text("#cdr-contact-relationship"), "friend");
    assert_eq!(b.text("#cdr-invite-at"), invite);
    assert_eq!(b.text("#session-zone"), zone);
    std::thread::sleep(Duration::from_secs(2));
    let audio = b.js(
        "const a = document.getElementById('recording-audio');
         return { src: a.getAttribute('src'), preload: a.preload, network: a.networkState };",
        json!([]),
    );
    assert_eq!(audio["src"], Value::Null, "nothing fetched: {audio}");
    assert_eq!(audio["preload"], "none");
    assert!(
        audited(&api, "recording.play", "inv-demo").is_empty(),
        "no recording.play from opening the page"
    );
    axe::assert_accessible(b, "the session page");

    // Play, pause, bookmark the moment with a note.
    b.click("#recording-play");
    b.wait_js(
        "the audio advances",
        Duration::from_secs(15),
        "return document.getElementById('recording-audio').currentTime;",
        |v| v.as_f64().is_some_and(|t| t > 2.0),
    );
    let at = b.js(
        "const a = document.getElementById('recording-audio'); a.pause(); return a.currentTime;",
        json!([]),
    );
    // What was heard is audited when playback pauses.
    let heard = wait_until("what was heard is audited", Duration::from_secs(10), || {
        audited(&api, "recording.heard", "inv-demo")
            .first()
            .cloned()
    });
    let total = heard["detail"]["total_ms"].as_f64().unwrap_or(0.0);
    assert!(
        total >= 2000.0 && total <= at.as_f64().unwrap_or(0.0) * 1000.0 + 100.0,
        "heard {total} ms, paused at {at} s: {heard}"
    );
    assert!(
        !audited(&api, "recording.play", "inv-demo").is_empty(),
        "pressing Play is audited"
    );
    b.click("#note-mark");
    b.fill("#note-body", "Mentions the meeting on Friday");
    b.click("#note-add");
    b.wait_for("#notes-body tr[data-note-id]");
    let note_row = b.text("#notes-body tr[data-note-id]");
    assert!(
        note_row.contains("Mentions the meeting on Friday"),
        "{note_row}"
    );
    let entry = wait_until("the note is audited", Duration::from_secs(10), || {
        audited(&api, "note.create", "inv-demo").first().cloned()
    });
    let start_ms = entry["detail"]["start_ms"].as_f64().unwrap_or(-1.0);
    let at_ms = at.as_f64().unwrap_or(0.0) * 1000.0;
    assert!(
        (start_ms - at_ms).abs() <= 100.0,
        "the note marks the playback position: {start_ms} ms, paused at {at_ms} ms"
    );
    assert_eq!(entry["detail"]["session_id"], id.as_str());
    case.screenshot("session");

    // Found again from the inmate's page.
    b.click("#cdr-inmate-name a");
    wait_visible(b, "subject-view");
    b.wait_for("#subject-notes-body tr[data-note-id]");
    let listed = b.text("#subject-notes-body");
    assert!(
        listed.contains("Mentions the meeting on Friday") && listed.contains(&id),
        "{listed}"
    );
    b.wait_for(&format!("#subject-sessions-body {row}"));
    axe::assert_accessible(b, "the inmate's page");
    case.screenshot("inmate");
    doc_screenshot(b, "inmate");
    // The number's page.
    b.js(
        "location.hash = '#/number/' + encodeURIComponent(arguments[0]);",
        json!([api::NUMBER]),
    );
    b.wait_for(&format!("#subject-sessions-body {row}"));
    axe::assert_accessible(b, "the number's page");
    // The notes search on the search page finds it too.
    b.click("#nav-search");
    wait_visible(b, "search-view");
    b.fill("#notes-q", "meeting on Friday");
    b.click("#notes-search-submit");
    b.wait_for("#notes-found-body tr[data-note-id]");
    axe::assert_accessible(b, "the notes search");
}

#[test]
fn terminate_works_after_the_listener_died_and_logout_clears_live_rows() {
    let Some(case) = Case::start("terminate_dead_listener", true, true) else {
        return;
    };
    let api = case.api();
    api::three_second_increments(&api);
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7102", "4832", "5.00");
    let mut trunk = case.trunk();
    let mut hs = case.handset(&inmate.pin, None);
    let id = api.accepted_call(Duration::from_secs(30));

    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    b.click("#nav-live");
    let row = format!("tr[data-call-id='{id}']");
    b.wait_for(&row);
    let shown = b.text(&row);
    assert!(
        shown.contains(&format!("Test {} ({})", inmate.booking, inmate.booking))
            && shown.contains("Called Party (friend)"),
        "{shown}"
    );
    b.wait_js(
        "the connected time ticks",
        Duration::from_secs(10),
        &format!(
            "const e = document.querySelector(\"{row} .elapsed\"); return e && e.textContent;"
        ),
        |v| v.as_str().is_some_and(|t| t.starts_with("connected 0:")),
    );
    axe::assert_accessible(b, "the live page");
    // Logging out leaves none of the live rows in the document.
    case.logout();
    assert!(
        b.find(&row).is_none(),
        "the live rows are gone after logout"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('live-body').children.length;",
            json!([])
        ),
        json!(0)
    );

    case.login("inv-demo", PASSWORD);
    b.click("#nav-live");
    b.wait_for(&row);
    // A listener whose connection died: the gateway no longer knows it (its delete
    // answers not_found). One Terminate click still ends the call.
    b.js(
        "state.listener = new Listener(arguments[0], document.getElementById('listen-audio'));
         state.listener.listenerId = 'lst_gone';",
        json!([id]),
    );
    b.click(&format!("{row} button.terminate"));
    b.accept_dialog();
    b.wait_js(
        "the call leaves the list after one click",
        Duration::from_secs(15),
        &format!("return !document.querySelector(\"{row}\");"),
        |v| v == true,
    );
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(cdr["end_reason"], "terminated", "{cdr}");
    assert_eq!(cdr["terminated_by"], "inv-demo", "{cdr}");
    hs.expect_ok(Duration::from_secs(20));
    trunk.expect_ok(Duration::from_secs(20));
    // Who terminated it is on the session page.
    b.js("location.hash = '#/session/' + arguments[0];", json!([id]));
    b.wait_js(
        "the record names who terminated it",
        Duration::from_secs(10),
        "return document.getElementById('cdr-terminated-by') && document.getElementById('cdr-terminated-by').textContent;",
        |v| v == "inv-demo",
    );
}

/// The audio element now: position, rate, state.
const AUDIO_JS: &str = "const a = document.getElementById('recording-audio');
    return { t: a.currentTime, rate: a.playbackRate, paused: a.paused, seeking: a.seeking,
             ready: a.readyState, src: a.getAttribute('src'), d: a.duration };";

#[test]
fn investigator_follows_a_calls_timeline() {
    let Some(case) = Case::start("timeline", true, true) else {
        return;
    };
    let api = case.api();
    api::three_second_increments(&api);
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7201", "4841", "5.00");
    // The called party speaks in bursts (3 s of tone, 5 s of silence), the inmate only for
    // half a second after the PIN: the recording has silent stretches of about 5 s.
    let mut trunk = Trunk::answer("1")
        .speaking(Tone {
            hz: 660.0,
            lead_ms: 0,
            on_ms: 3000,
            off_ms: 5000,
            bursts: 5,
        })
        .spawn(&case.dir, &case.ports);
    let mut hs = Handset::new(&inmate.pin, Via::Rtp)
        .speaking(Tone {
            hz: 440.0,
            lead_ms: 0,
            on_ms: 500,
            off_ms: 40_000,
            bursts: 1,
        })
        .hang_up_after(24_000)
        .spawn(&case.dir, 0, &case.ports, case.gateway.sip);
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(30));
    let id = ended_recorded_call(&api, &inmate).0;
    // The API's timeline: what the gateway recorded, in order.
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    let timeline = cdr["timeline"]
        .as_array()
        .expect("a call's timeline")
        .clone();
    let kinds: Vec<&str> = timeline
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default())
        .collect();
    println!("timeline: {kinds:?}");
    let first = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    let order = [
        "invite",
        "pin",
        "checks",
        "trunk_answer",
        "announcement",
        "accepted",
        "increment",
        "cut",
        "ended",
    ];
    for w in order.windows(2) {
        assert!(
            first(w[0]) < first(w[1]),
            "{} before {}: {kinds:?}",
            w[0],
            w[1]
        );
    }
    first("recording_started");
    let at = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap_or_default()).expect("at")
    };
    assert!(
        timeline.windows(2).all(|w| at(&w[0]) <= at(&w[1])),
        "in time order: {timeline:?}"
    );
    assert_eq!(timeline[first("pin")]["detail"], "valid");
    assert_eq!(timeline[first("checks")]["detail"], "authorized");
    assert_eq!(timeline[first("announcement")]["detail"], "recorded");
    let cut = &timeline[first("cut")];
    assert_eq!(cut["detail"], "caller_hangup", "{cut}");
    assert_eq!(cut["by"], "inmate", "{cut}");
    let charges = cdr["charges"].as_array().expect("charges");
    let increments: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["kind"] == "increment")
        .collect();
    assert!(increments.len() >= 4, "{increments:?}");
    assert_eq!(increments.len(), charges.len());
    for (e, c) in increments.iter().zip(charges) {
        assert_eq!(e["increment"], c["increment"]);
        assert_eq!(e["balance_after"], c["balance_after"], "{e} {c}");
    }

    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    b.js("location.hash = '#/session/' + arguments[0];", json!([id]));
    wait_visible(b, "call-timeline");
    // The page lists the same events in the same order, each increment with its balance.
    let rows = b.js(
        "return [...document.querySelectorAll('#call-timeline-body tr')].map(r =>
           ({ kind: r.dataset.event, offset: r.dataset.offset === undefined ? null : Number(r.dataset.offset),
              balance: r.cells[4].textContent, text: r.textContent }));",
        json!([]),
    );
    let shown: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(shown, kinds, "{rows}");
    let balances: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "increment")
        .map(|r| r["balance"].as_str().unwrap_or_default())
        .collect();
    let want: Vec<&str> = charges
        .iter()
        .map(|c| c["balance_after"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(balances, want, "the balance after each increment");
    assert!(
        rows[first("pin")]["text"]
            .as_str()
            .is_some_and(|t| !t.contains(&inmate.pin)),
        "never the digits: {rows}"
    );
    // Nothing of the recording is fetched before Play: no ticket, no waveform.
    std::thread::sleep(Duration::from_secs(1));
    let before = b.js(AUDIO_JS, json!([]));
    assert_eq!(before["src"], Value::Null, "{before}");
    assert!(audited(&api, "recording.play", "inv-demo").is_empty());
    assert_eq!(
        b.js(
            "return document.getElementById('waveform').dataset.drawn || null;",
            json!([])
        ),
        Value::Null
    );
    axe::assert_accessible(b, "the session page with its timeline");

    // Play: the ticket (audited) and the waveform of both channels.
    b.click("#recording-play");
    b.wait_js(
        "the audio advances",
        Duration::from_secs(15),
        AUDIO_JS,
        |v| v["t"].as_f64().is_some_and(|t| t > 0.5),
    );
    b.wait_js(
        "the waveform drawn",
        Duration::from_secs(15),
        "return document.getElementById('waveform').dataset.drawn || null;",
        |v| v == "1",
    );
    assert!(!audited(&api, "recording.play", "inv-demo").is_empty());
    let silences = b.js("return state.timeline.silences;", json!([]));
    println!("silent stretches: {silences}");
    b.js(
        "document.getElementById('recording-audio').pause();",
        json!([]),
    );

    // Clicking an event seeks the audio there, to within 100 ms: the acceptance (the
    // recording starts with it) and the third increment from their rows, the fourth increment
    // from its marker on the axis. Where it should land is worked out from the API's times, not
    // read from the page.
    let rec_start = at(&timeline[first("recording_started")]);
    let seek_to = |kind: &str, nth: usize, how: &str| {
        let index = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == kind)
            .nth(nth)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no {kind} #{nth} in {kinds:?}"));
        let event_at = at(&timeline[index]);
        let target = ((event_at - rec_start).num_microseconds().unwrap() as f64 / 1e6).max(0.0);
        b.js(
            "document.getElementById('recording-audio').pause();
             window.seekedAt = [];
             const a = document.getElementById('recording-audio');
             if (!window.seekWatch) { window.seekWatch = true;
               a.addEventListener('seeked', () => window.seekedAt.push(a.currentTime)); }",
            json!([]),
        );
        let selector = match how {
            "row" => format!("#call-timeline-body tr[data-index='{index}'] button.event-seek"),
            _ => format!("#call-markers button.marker[data-index='{index}']"),
        };
        b.click(&selector);
        let seeked = b.wait_js(
            "the click seeks",
            Duration::from_secs(10),
            "return window.seekedAt;",
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        );
        let landed = seeked[0].as_f64().unwrap();
        println!("{kind} #{nth} ({how}) at {target:.3} s, the audio seeked to {landed:.3} s");
        assert!(
            (landed - target).abs() <= 0.1,
            "{kind} ({how}): seeked to {landed}, the event is at {target}"
        );
    };
    seek_to("increment", 2, "row");
    seek_to("accepted", 0, "row");
    seek_to("increment", 3, "marker");
    b.js(
        "document.getElementById('recording-audio').pause();",
        json!([]),
    );

    // Speed 1.5× from the menu; then the "]" shortcut, one step faster.
    b.click("#playback-speed option[value='1.5']");
    b.wait_js("1.5×", Duration::from_secs(5), AUDIO_JS, |v| {
        v["rate"] == 1.5
    });
    b.send_keys("#waveform", "]");
    b.wait_js("] is faster", Duration::from_secs(5), AUDIO_JS, |v| {
        v["rate"] == 1.75
    });
    b.send_keys("#waveform", "[[[");
    b.wait_js("[ is slower", Duration::from_secs(5), AUDIO_JS, |v| {
        v["rate"] == 1.0
    });

    // Skip silence: playing from the start of a silent stretch lands past its end at once.
    let stretch = silences
        .as_array()
        .and_then(|a| {
            a.iter().find(|s| {
                s["to"].as_f64().unwrap_or(0.0) - s["from"].as_f64().unwrap_or(0.0) >= 3.0
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("a silent stretch of 3 s or more: {silences}"));
    let (from, to) = (
        stretch["from"].as_f64().unwrap(),
        stretch["to"].as_f64().unwrap(),
    );
    b.click("#skip-silence");
    b.js(
        "const a = document.getElementById('recording-audio');
         a.currentTime = arguments[0]; a.play();",
        json!([from + 0.1]),
    );
    let started = std::time::Instant::now();
    let skipped = b.wait_js(
        "the silence is skipped",
        Duration::from_secs(3),
        AUDIO_JS,
        |v| v["t"].as_f64().is_some_and(|t| t >= to - 0.3),
    );
    println!(
        "silence {from:.1}-{to:.1} s skipped in {:?}: {skipped}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs_f64((to - from) * 0.6),
        "skipped, not played through"
    );
    b.js(
        "document.getElementById('recording-audio').pause();",
        json!([]),
    );
    b.js(
        "document.getElementById('call-timeline').scrollIntoView();",
        json!([]),
    );
    doc_screenshot(b, "session-timeline");
    axe::assert_accessible(b, "the session page, playing");
}

/// Every console page by keyboard alone (Tab to each main action, Enter to activate it),
/// each readable at 1280 and 1024 px and clean under axe-core: log in, search by name,
/// open the session, play, seek to the acceptance, add a note, the inmate's page, live
/// calls, messages, leads and a number's lead (its sessions by the
/// inmates' names), a report, log out.
#[test]
fn every_console_page_by_keyboard_at_1280_and_1024_px() {
    let Some(case) = Case::start("keyboard", true, true) else {
        return;
    };
    let api = case.api();
    api::three_second_increments(&api);
    investigators(&api);
    let inmate = api::book_funded(&api, "B-7301", "4851", "5.00");
    // Two more inmates called the same number: a lead at three inmates.
    for (n, booking, pin) in [(1, "B-7302", "4852"), (2, "B-7303", "4853")] {
        let other = api::book_funded(&api, booking, pin, "1.00");
        insert_ended_call(&case.dir, &format!("sess-keyboard-{n}"), &other);
    }
    let mut trunk = case.trunk();
    let mut hs = case.handset(&inmate.pin, Some(Duration::from_secs(8)));
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(30));
    let id = ended_recorded_call(&api, &inmate).0;
    let b = case.browser();
    b.goto(&format!("{}/console/", case.gateway.base_url()));
    b.wait_for("body[data-ready='1']");
    readable_at_both_widths(b, "the login page");
    doc_screenshot(b, "login");

    // Log in.
    tab_to(b, "#login-username");
    press(b, "inv-demo");
    tab_to(b, "#login-password");
    press(b, &format!("{PASSWORD}\u{E007}"));
    wait_visible(b, "search-view");
    readable_at_both_widths(b, "the search page");

    // Search by name; open the session.
    tab_to(b, "#search-name");
    press(b, &format!("Test {}\u{E007}", inmate.booking));
    let link = format!("tr[data-session-id='{id}'] a.session-link");
    b.wait_for(&link);
    readable_at_both_widths(b, "the search results");
    tab_to(b, &link);
    press(b, "\u{E007}");
    wait_visible(b, "session-view");
    wait_visible(b, "call-timeline");
    readable_at_both_widths(b, "the session page");

    // Play; then the acceptance's moment from the timeline.
    tab_to(b, "#recording-play");
    press(b, "\u{E007}");
    b.wait_js("playing", Duration::from_secs(15), AUDIO_JS, |v| {
        v["paused"] == false && v["t"].as_f64().is_some_and(|t| t > 0.5)
    });
    tab_to(
        b,
        "#call-timeline-body tr[data-event='accepted'] button.event-seek",
    );
    press(b, "\u{E007}");
    b.wait_js(
        "back at the acceptance",
        Duration::from_secs(10),
        AUDIO_JS,
        |v| v["t"].as_f64().is_some_and(|t| t < 0.5),
    );
    // A note at the playback position.
    tab_to(b, "#note-mark");
    press(b, "\u{E007}");
    tab_to(b, "#note-body");
    press(b, "typed at the keyboard");
    tab_to(b, "#note-add");
    press(b, "\u{E007}");
    b.wait_js(
        "the note is listed",
        Duration::from_secs(10),
        "return document.getElementById('notes-body').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("typed at the keyboard"))
        },
    );
    b.js(
        "document.getElementById('recording-audio').pause();",
        json!([]),
    );
    readable_at_both_widths(b, "the session page, playing, with a note");

    // The inmate's page, from the session's people.
    let inmate_link = format!("#cdr a[href='#/inmate/{}']", inmate.id);
    tab_to(b, &inmate_link);
    press(b, "\u{E007}");
    wait_visible(b, "subject-view");
    b.wait_js(
        "the inmate's note",
        Duration::from_secs(10),
        "return document.getElementById('subject-notes-body').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("typed at the keyboard"))
        },
    );
    readable_at_both_widths(b, "the inmate's page");

    // The number the inmate called, from the session's row on the inmate's page.
    tab_to(
        b,
        &format!("#subject-sessions-body tr[data-session-id='{id}'] a.number-link"),
    );
    press(b, "\u{E007}");
    b.wait_js(
        "the number's page",
        Duration::from_secs(10),
        "return document.getElementById('subject-title').textContent;",
        |v| v == format!("Number {}", api::NUMBER).as_str(),
    );
    b.wait_for("#subject-sessions-body tr[data-session-id='sess-keyboard-2']");
    b.wait_js(
        "the note on the number's page",
        Duration::from_secs(10),
        "return document.getElementById('subject-notes-body').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("typed at the keyboard"))
        },
    );
    readable_at_both_widths(b, "the number's page");
    doc_screenshot(b, "number");

    // Live calls (none now), messages, leads.
    tab_to(b, "#nav-live");
    press(b, "\u{E007}");
    wait_visible(b, "live-view");
    readable_at_both_widths(b, "the live page");

    tab_to(b, "#nav-messages");
    press(b, "\u{E007}");
    wait_visible(b, "messages-view");
    tab_to(b, "#msg-refresh");
    press(b, "\u{E007}");
    readable_at_both_widths(b, "the messages page");
    doc_screenshot(b, "messages");

    tab_to(b, "#nav-leads");
    press(b, "\u{E007}");
    wait_visible(b, "leads-view");
    tab_to(b, "#leads-refresh");
    press(b, "\u{E007}");
    let number_link = "#leads-shared-body a.lead-link[href='#/lead/number/%2B15551230001']";
    b.wait_for(number_link);
    // Times in the facility's zone, named: the number's last call as the API gives it.
    let leads = api.get("/api/v1/leads");
    let lead = leads["shared_numbers"]
        .as_array()
        .and_then(|l| l.iter().find(|n| n["number"] == api::NUMBER))
        .unwrap_or_else(|| panic!("the number's lead: {leads}"))
        .clone();
    let last_call = facility_time(
        lead["last_at"].as_str().expect("last_at"),
        lead["last_time_zone"]
            .as_str()
            .expect("the zone of the last call"),
    );
    let shown = b.text("#leads-shared-body");
    assert!(shown.contains(&last_call), "{last_call:?} in {shown}");
    readable_at_both_widths(b, "the leads page");
    doc_screenshot(b, "leads");
    tab_to(b, number_link);
    press(b, "\u{E007}");
    wait_visible(b, "lead-view");
    b.wait_for("#lead-sessions-body a[href='#/session/sess-keyboard-2']");
    // The lead's sessions name their inmates, and its callers' last calls are in the
    // facility's zone.
    let sessions = b.text("#lead-sessions-body");
    for booking in [inmate.booking.as_str(), "B-7302", "B-7303"] {
        assert!(
            sessions.contains(&format!("Test {booking} ({booking})")),
            "{booking} in the lead's sessions: {sessions}"
        );
    }
    let graph = api.get("/api/v1/leads/numbers/%2B15551230001");
    let callers = b.text("#lead-callers-body");
    for c in graph["callers"].as_array().expect("callers") {
        let at = facility_time(
            c["last_at"].as_str().expect("last_at"),
            c["last_time_zone"].as_str().expect("its zone"),
        );
        assert!(callers.contains(&at), "{at:?} in {callers}");
    }
    readable_at_both_widths(b, "a number's lead");
    doc_screenshot(b, "lead");

    // A report: its form by keyboard.
    tab_to(b, "#nav-reports");
    press(b, "\u{E007}");
    wait_visible(b, "reports-view");
    tab_to(b, "#report-show");
    press(b, "\u{E007}");
    wait_visible(b, "report-output");
    b.wait_for("#report-chart canvas");
    readable_at_both_widths(b, "a report");
    doc_screenshot(b, "report");

    // Log out.
    tab_to(b, "#logout");
    press(b, "\u{E007}");
    wait_visible(b, "login-view");
    case.screenshot("logged-out");
}

/// Three recorded sipp calls packaged from the console: ticked in the search results,
/// built, downloaded by Chromium; the downloaded file is the package the page names, and
/// `sallyport verify-package` (no database, no network) finds it intact, then fails naming
/// the recording after one byte of it is flipped, and names the chain break after that
/// recording's chain entry is removed.
#[test]
fn investigator_packages_three_recorded_calls_that_verify_until_changed() {
    let Some(case) = Case::start("evidence_three", true, true) else {
        return;
    };
    let api = case.api();
    api::three_second_increments(&api);
    investigators(&api);
    let mut ids = Vec::new();
    for (slot, (booking, pin)) in [("B-7401", "4861"), ("B-7402", "4862"), ("B-7403", "4863")]
        .into_iter()
        .enumerate()
    {
        let inmate = api::book_funded(&api, booking, pin, "5.00");
        let mut trunk = case.trunk();
        let mut hs = Handset::new(&inmate.pin, Via::Rtp)
            .speaking(Tone::steady(440.0, 100))
            .hang_up_after(4000)
            // One call after the other: the two handset slots in turn.
            .spawn(&case.dir, slot % 2, &case.ports, case.gateway.sip);
        hs.expect_ok(Duration::from_secs(60));
        trunk.expect_ok(Duration::from_secs(30));
        ids.push(ended_recorded_call(&api, &inmate).0);
    }

    case.login("inv-demo", PASSWORD);
    let b = case.browser();
    b.click("#search-submit");
    for id in &ids {
        b.click(&format!("input.evidence-select[data-session-id='{id}']"));
    }
    assert_eq!(b.text("#evidence-count"), "3");
    b.fill("#evidence-reason", "case 2026-8");
    b.click("#evidence-build");
    wait_visible(b, "evidence-result");
    assert_eq!(
        b.js(
            "return document.getElementById('evidence-verdict').dataset.status;",
            json!([])
        ),
        json!("ok"),
        "{}",
        b.text("#evidence-verdict")
    );
    let sha = b.text("#evidence-sha256");
    b.js(
        "document.getElementById('evidence-result').scrollIntoView();",
        json!([]),
    );
    doc_screenshot(b, "evidence-package");
    b.click("#evidence-download");
    let file = wait_until("the package downloaded", Duration::from_secs(20), || {
        let done: Vec<PathBuf> = std::fs::read_dir(b.downloads())
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        done.into_iter().next()
    });
    let tar = std::fs::read(&file).expect("the downloaded package");
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&tar)),
        sha,
        "{}",
        file.display()
    );
    let download = audited(&api, "evidence_package.download", "inv-demo");
    assert_eq!(download.len(), 1, "{download:?}");
    assert_eq!(
        download[0]["detail"]["session_ids"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    let verify = |tar: &[u8], name: &str| {
        let path = case.dir.join(name);
        std::fs::write(&path, tar).expect("write the package");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .arg("verify-package")
            .arg(&path)
            .current_dir(&*case.dir)
            .env_clear()
            .output()
            .expect("sallyport verify-package");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("verify-package {name}:\n{text}");
        (out.status.code(), text)
    };
    let (code, text) = verify(&tar, "downloaded.tar");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("INTACT") && text.contains(&sha), "{text}");

    // One byte of the second session's recording flipped.
    let members = sallyport::evidence::tar::read_all(&tar[..]).expect("a tar");
    let manifest: Value = serde_json::from_slice(
        &members
            .iter()
            .find(|m| m.0 == "manifest.json")
            .expect("manifest.json")
            .1,
    )
    .expect("the manifest");
    let session = manifest["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == ids[1].as_str()))
        .unwrap_or_else(|| panic!("{} in the manifest: {manifest}", ids[1]))
        .clone();
    let rec = &session["recordings"][0];
    let rec_file = rec["file"].as_str().expect("its file").to_string();
    let mut flipped = members.clone();
    let m = flipped
        .iter_mut()
        .find(|m| m.0 == rec_file)
        .unwrap_or_else(|| panic!("{rec_file} in the package"));
    m.1[2000] ^= 0x40;
    let (code, text) = verify(
        &sallyport::evidence::tar::write_all(&flipped, 0).unwrap(),
        "flipped.tar",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("NOT INTACT") && text.contains(&format!("FAILED file_hash {rec_file}")),
        "{text}"
    );

    // That recording's chain entry removed.
    let seq = rec["chain_seq"].as_i64().expect("chain_seq");
    let mut cut = members.clone();
    let chain = cut
        .iter_mut()
        .find(|m| m.0 == "chain/entries.json")
        .expect("chain/entries.json");
    let mut entries: Vec<Value> = serde_json::from_slice(&chain.1).unwrap();
    entries.retain(|e| e["seq"] != seq);
    chain.1 = serde_json::to_vec_pretty(&entries).unwrap();
    let (code, text) = verify(
        &sallyport::evidence::tar::write_all(&cut, 0).unwrap(),
        "cut.tar",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("chain break before entry {}", seq + 1))
            && text.contains(&format!("chain break after entry {}", seq - 1)),
        "{text}"
    );
    case.screenshot("packaged");
}
