//! An investigator watches a live video visit and ends it (issue 11), through the real
//! binary: the two sides are synthetic str0m participants (VP8 and Opus made by ffmpeg)
//! joined over the visit WebSocket as in `visit_ws.rs`; the watcher is a synthetic
//! receive-only participant (`api_watch_refuse_and_terminate`) or the console in headless
//! Chromium (`console_watches_a_visit_and_ends_it`).
//!
//! - the watcher gets both sides' audio and video, each on its own m-line;
//! - a privileged visit is refused (403 `privileged`, audited `visit.watch_refused`), an
//!   investigator of another facility is refused, a visit not in progress is 404;
//! - terminate ends the visit: both pages get `ended` with reason `terminated`, the session
//!   is closed `terminated`, and the watch, unwatch and terminate are in the audit log with
//!   who did them;
//! - two nodes on one PostgreSQL (`a_visit_on_one_node_is_watched_and_ended_through_another`):
//!   a visit node-a runs is watched, unwatched and ended through node-b's API (the answer
//!   carries node-a's media address), audited by node-b naming node-a.
//!
//! - in the console, by keyboard: the live visit's row names the inmate (booking number),
//!   the visitor (relationship) and the station, its start and end in the facility's zone
//!   (named) with the connected time ticking; the live page is readable at 1024 and 1280
//!   px (axe-core too) with the row and while watching; Watch, Stop watching and End visit
//!   are reached and pressed from the keyboard.
//!
//! Without ffmpeg (or, for the console test, Chromium and chromedriver; for the two-node
//! test, PostgreSQL in `SALLYPORT_TEST_DATABASE_URL`) a test prints why and passes, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use sallyport::db::Db;
use sallyport::sfu::synthetic::{self, Script, SyntheticPeer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::api::{self as e2e, Api};
use support::console;
use support::gateway::Gateway;
use support::visit_page::page;
use support::webdriver::{self, Browser};
use support::{sipp, Workdir};
use tokio::net::UdpSocket;

const PASSWORD: &str = "correct horse battery staple";

/// The two pages of a visit running in the background: their messages once it ended.
type Pages = tokio::task::JoinHandle<(Vec<Value>, Vec<Value>)>;

/// The synthetic sides' media, or `None` (skipped) without ffmpeg.
fn media() -> Option<Arc<Script>> {
    let (ivf, ogg) = support::visit_media::sfu_media()?;
    Some(Arc::new(Script::from_files(&ivf, &ogg).unwrap()))
}

/// `username` logged in through `api`'s gateway.
fn login(api: &Api, username: &str) -> Api {
    let t = api.anonymous().post(
        "/api/v1/auth/login",
        json!({ "username": username, "password": PASSWORD }),
    );
    api.as_token(t["token"].as_str().unwrap())
}

/// A gateway with a video rate, an inmate with money, a station and its kiosk, two
/// investigators (of the visit's facility and of another), and visits inserted as a
/// booking would leave them.
struct Fixture {
    gw: Gateway,
    api: Api,
    kiosk: Api,
    inmate: e2e::Inmate,
    station: String,
    contact: String,
    db: Db,
    rt: tokio::runtime::Runtime,
    script: Arc<Script>,
    /// Last: dropped (failure dump, removal) after the gateway.
    dir: Workdir,
}

impl Fixture {
    fn start(name: &str) -> Option<Fixture> {
        let script = media()?;
        let dir = Workdir::new("visit_watch", name);
        let gw = Gateway::start(&dir, &sipp::ports());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = rt
            .block_on(Db::connect(
                &format!("sqlite://{}/db.sqlite", dir.path.display()),
                1,
            ))
            .unwrap();
        Some(Fixture::seed(gw, db, rt, script, dir))
    }

    /// Seeds the gateway `gw` (its database reached directly through `db`).
    fn seed(
        gw: Gateway,
        db: Db,
        rt: tokio::runtime::Runtime,
        script: Arc<Script>,
        dir: Workdir,
    ) -> Fixture {
        let api: Api = gw.api.clone();
        api.upload(
            "/api/v1/rate-plans?id=video&max_call_secs=3600",
            "class,service,per_minute,increment_secs\nlocal,audio,0.05,60\ndomestic,audio,0.05,60\n\
             international,audio,0.05,60\nlocal,video,0.12,6\n",
        );
        api.ok(
            "PATCH",
            "/api/v1/facilities/DEMO",
            Some(json!({ "rate_plan_id": "video" })),
        );
        api.add_facility("OTHER");
        api.add_user("inv-demo", PASSWORD, "investigator", &["DEMO"]);
        api.add_user("inv-other", PASSWORD, "investigator", &["OTHER"]);
        let inmate = e2e::book(&api, "V-1", "2468", e2e::NUMBER, false);
        e2e::fund(&api, &inmate, "5.00");
        let station = api.post(
            "/api/v1/facilities/DEMO/visit-stations",
            json!({ "name": "Kiosk 1", "housing_unit": "A", "capacity": 2 }),
        );
        let station = station["id"].as_str().unwrap().to_string();
        let kiosk = api.post(
            "/api/v1/tokens",
            json!({ "username": "kiosk-1", "role": "kiosk", "facilities": ["DEMO"],
                    "station_id": station, "ttl_secs": 3600 }),
        );
        let kiosk = api.as_token(kiosk["token"].as_str().unwrap());
        let contact: String = rt.block_on(async {
            sqlx::query_scalar("SELECT id FROM contacts WHERE inmate_id = $1")
                .bind(&inmate.id)
                .fetch_one(db.pool())
                .await
                .unwrap()
        });
        Fixture {
            gw,
            api,
            kiosk,
            inmate,
            station,
            contact,
            db,
            rt,
            script,
            dir,
        }
    }

    /// `username` logged in (an investigator made by [`Fixture::seed`]).
    fn investigator(&self, username: &str) -> Api {
        login(&self.api, username)
    }

    /// Inserts visit `id`: its slot opened a second ago and lasts `secs`.
    fn visit(&self, id: &str, secs: i64, privileged: bool) {
        let now = chrono::Utc::now();
        let us = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
        self.rt.block_on(async {
            sqlx::query(
                "INSERT INTO visits (id, facility_id, inmate_id, contact_id, station_id, \
                 starts_at, ends_at, status, privileged, requested_by, requested_role, \
                 created_at) VALUES ($1, 'DEMO', $2, $3, $4, $5, $6, 'approved', $7, 'admin', \
                 'admin', $8)",
            )
            .bind(id)
            .bind(&self.inmate.id)
            .bind(&self.contact)
            .bind(&self.station)
            .bind(us(now - chrono::Duration::seconds(1)))
            .bind(us(now + chrono::Duration::seconds(secs)))
            .bind(i64::from(privileged))
            .bind(us(now))
            .execute(self.db.pool())
            .await
            .unwrap();
        });
    }

    /// The passes of the visitor's join link and of the inmate at the kiosk.
    fn passes(&self, id: &str) -> (String, String) {
        let link = self
            .api
            .post(&format!("/api/v1/visits/{id}/join-link"), json!({}));
        let visitor = link["url"]
            .as_str()
            .unwrap()
            .split_once('#')
            .unwrap()
            .1
            .to_string();
        let joined = self.kiosk.post(
            &format!("/api/v1/visits/{id}/kiosk-join"),
            json!({ "calling_id": self.inmate.calling_id, "pin": self.inmate.pin }),
        );
        (visitor, joined["secret"].as_str().unwrap().to_string())
    }

    /// Both pages of visit `id`, in the background: their messages once the visit ended,
    /// and how many saw the visit connected.
    fn join(&self, id: &str) -> (Pages, Arc<AtomicUsize>) {
        let (visitor, inmate) = self.passes(id);
        let connected = Arc::new(AtomicUsize::new(0));
        let media = Duration::from_secs(90);
        let (url, script, c) = (self.gw.base_url(), self.script.clone(), connected.clone());
        let pages = self.rt.spawn(async move {
            tokio::join!(
                page(url.clone(), visitor, script.clone(), media, c.clone()),
                page(url, inmate, script, media, c)
            )
        });
        (pages, connected)
    }

    fn wait_connected(&self, connected: &AtomicUsize) {
        let deadline = Instant::now() + Duration::from_secs(45);
        while connected.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the visit did not connect");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The visit's session once it is closed: (state, end_reason).
    fn closed_session(&self, id: &str) -> (String, String) {
        self.rt.block_on(async {
            for _ in 0..75 {
                let ended: Option<(String, String)> = sqlx::query_as(
                    "SELECT state, end_reason FROM sessions WHERE visit_id = $1 \
                     AND state = 'ended'",
                )
                .bind(id)
                .fetch_optional(self.db.pool())
                .await
                .unwrap();
                if let Some(r) = ended {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("the session of visit {id} was not closed");
        })
    }

    /// Audit entries of `action` on `target`, newest first.
    fn audited(&self, action: &str, target: &str) -> Vec<Value> {
        let all = self.api.get("/api/v1/audit?limit=500");
        all.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action && e["target"] == target)
            .cloned()
            .collect()
    }

    /// A synthetic watcher of visit `id` through `api`: receives for 5 s once connected;
    /// what each of its m-lines got, its id and the gateway's answer.
    fn watch(&self, api: &Api, id: &str) -> (Vec<synthetic::LineCounts>, String, String) {
        let (api, path) = (api.clone(), format!("/api/v1/visits/{id}/watch"));
        let (lines, answer) = self.rt.block_on(async {
            let socket = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
            let (mut peer, sdp) =
                SyntheticPeer::offer_watcher(socket.local_addr().unwrap(), Instant::now()).unwrap();
            let (s, answer) = tokio::task::spawn_blocking(move || {
                api.request("POST", &path, Some(json!({ "sdp": sdp, "type": "offer" })))
            })
            .await
            .unwrap();
            assert_eq!(s, 201, "{answer}");
            assert_eq!(answer["type"], "answer");
            peer.accept_answer(answer["sdp"].as_str().unwrap()).unwrap();
            let (_, lines) = synthetic::run_for_lines(
                socket,
                peer,
                self.script.clone(),
                Duration::from_secs(5),
                Duration::from_millis(200),
            )
            .await;
            (lines, answer)
        });
        assert_eq!(lines.len(), 4, "{lines:?}");
        for l in &lines {
            println!(
                "watcher m-line {} {:?}: {} frames, {} bytes",
                l.mid, l.kind, l.frames, l.bytes
            );
        }
        let watcher_id = answer["watcher_id"].as_str().unwrap().to_string();
        let sdp = answer["sdp"].as_str().unwrap().to_string();
        (lines, watcher_id, sdp)
    }

    /// Both pages ended with `reason`.
    fn pages_ended(&self, pages: Pages, reason: &str) {
        let (visitor, inmate) = self.rt.block_on(pages).unwrap();
        for (name, got) in [("visitor", &visitor), ("kiosk", &inmate)] {
            let last = got.last().unwrap();
            assert_eq!(last["type"], "ended", "{name}: {got:?}");
            assert_eq!(last["reason"], reason, "{name}: {got:?}");
        }
    }
}

#[test]
fn api_watch_refuse_and_terminate() {
    let Some(f) = Fixture::start("api") else {
        return;
    };
    let inv = f.investigator("inv-demo");
    let other = f.investigator("inv-other");
    f.visit("vis_watch", 120, false);
    f.visit("vis_priv", 120, true);

    // Not in progress yet: nothing to watch or end.
    let offer = |sdp: &str| Some(json!({ "sdp": sdp, "type": "offer" }));
    let (s, v) = inv.request("POST", "/api/v1/visits/vis_watch/watch", offer("v=0"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("visit_not_live")),
        "{v}"
    );
    let (s, v) = inv.request("POST", "/api/v1/visits/vis_watch/terminate", None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("visit_not_live")),
        "{v}"
    );

    // Privileged: refused whatever its state, and the attempt audited.
    let (s, v) = inv.request("POST", "/api/v1/visits/vis_priv/watch", offer("v=0"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("privileged")),
        "{v}"
    );
    let refused = f.audited("visit.watch_refused", "vis_priv");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"], "inv-demo", "{refused:?}");
    assert_eq!(refused[0]["detail"]["reason"], "privileged", "{refused:?}");

    let (pages, connected) = f.join("vis_watch");
    f.wait_connected(&connected);
    let live = inv.get("/api/v1/visits/live");
    let row = live
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "vis_watch")
        .unwrap_or_else(|| panic!("vis_watch live: {live}"));
    assert_eq!(row["watchable"], true, "{row}");
    assert_eq!(row["session"]["state"], "active", "{row}");
    // The people and the facility's zone, as every session in the console.
    assert_eq!(row["time_zone"], "America/Chicago", "{row}");
    assert_eq!(row["booking_number"], f.inmate.booking.as_str(), "{row}");
    assert!(row["visitor_relationship"].is_string(), "{row}");
    assert_eq!(other.get("/api/v1/visits/live"), json!([]));

    // Another facility's investigator: refused, nothing audited for it.
    let (s, v) = other.request("POST", "/api/v1/visits/vis_watch/watch", offer("v=0"));
    assert_eq!(s, 403, "{v}");
    let (s, v) = other.request("POST", "/api/v1/visits/vis_watch/terminate", None);
    assert_eq!(s, 403, "{v}");
    // An offer that is not SDP: 400, nothing let in.
    let (s, v) = inv.request("POST", "/api/v1/visits/vis_watch/watch", offer("v=0"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_offer")),
        "{v}"
    );

    // The watcher: four recvonly m-lines, each gets its side's media.
    let (lines, watcher_id, _) = f.watch(&inv, "vis_watch");
    for l in &lines {
        assert!(
            l.frames > 0,
            "m-line {} ({:?}) received nothing",
            l.mid,
            l.kind
        );
    }
    let watched = f.audited("visit.watch", "vis_watch");
    assert_eq!(watched.len(), 1, "{watched:?}");
    assert_eq!(watched[0]["actor"], "inv-demo");
    assert_eq!(watched[0]["detail"]["watcher_id"], watcher_id.as_str());
    assert_eq!(watched[0]["facility_id"], "DEMO");

    let path = format!("/api/v1/visits/vis_watch/watch/{watcher_id}");
    let (s, v) = inv.request("DELETE", &path, None);
    assert_eq!(s, 204, "{v}");
    let (s, v) = inv.request("DELETE", &path, None);
    assert_eq!(s, 404, "{v}");
    assert_eq!(f.audited("visit.unwatch", "vis_watch").len(), 1);

    // The end: both pages told why, the session closed, the terminate audited.
    let closed = inv.post("/api/v1/visits/vis_watch/terminate", json!({}));
    assert_eq!(
        (closed["state"].as_str(), closed["end_reason"].as_str()),
        (Some("ended"), Some("terminated")),
        "{closed}"
    );
    f.pages_ended(pages, "terminated");
    assert_eq!(
        f.closed_session("vis_watch"),
        ("ended".to_string(), "terminated".to_string())
    );
    let ended = f.audited("visit.terminate", "vis_watch");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["actor"], "inv-demo");
    assert_eq!(ended[0]["detail"]["session_id"], closed["id"]);
    // Over: no watch, no second terminate.
    let (s, _) = inv.request("POST", "/api/v1/visits/vis_watch/watch", offer("v=0"));
    assert_eq!(s, 404);
    let (s, _) = inv.request("POST", "/api/v1/visits/vis_watch/terminate", None);
    assert_eq!(s, 404);
    assert_eq!(inv.get("/api/v1/visits/live"), json!([]));
    f.api.assert_ledger_clean();
}

/// `at` (RFC 3339) in `zone` as the console writes it: `2026-03-02 10:00:05 CST`.
fn facility_time(at: &str, zone: &str) -> String {
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

fn wait_visible(b: &Browser, id: &str) {
    b.wait_js(
        &format!("#{id} shown"),
        Duration::from_secs(10),
        &format!("return !document.getElementById('{id}').hidden;"),
        |v| v == true,
    );
}

#[test]
fn console_watches_a_visit_and_ends_it() {
    if !webdriver::present("console watch test") {
        return;
    }
    let Some(f) = Fixture::start("console") else {
        return;
    };
    let browser = Browser::start(&f.dir.join("chromedriver.log"));
    let b = &browser;
    f.visit("vis_console", 120, false);
    let (pages, connected) = f.join("vis_console");
    f.wait_connected(&connected);

    b.goto(&format!("{}/console/", f.gw.base_url()));
    b.wait_for("body[data-ready='1']");
    b.fill("#login-username", "inv-demo");
    b.fill("#login-password", PASSWORD);
    b.click("#login-submit");
    b.wait_js(
        "inv-demo logs in",
        Duration::from_secs(10),
        "return !document.getElementById('search-view').hidden;",
        |v| v == true,
    );
    // By keyboard: the live page, the visit's row (its people, its times in the
    // facility's zone, named), Watch.
    console::tab_to(b, "#nav-live");
    console::press(b, "\u{E007}");
    let row = "tr[data-visit-id='vis_console']";
    b.wait_for(row);
    let live = f.investigator("inv-demo").get("/api/v1/visits/live");
    let v = &live[0];
    assert_eq!(v["time_zone"], "America/Chicago", "{live}");
    let started = facility_time(
        v["session"]["started_at"].as_str().unwrap(),
        "America/Chicago",
    );
    let ends = facility_time(v["ends_at"].as_str().unwrap(), "America/Chicago");
    let shown = b.wait_js(
        "the connected time ticks",
        Duration::from_secs(10),
        &format!("return document.querySelector(\"{row}\").textContent;"),
        |t| t.as_str().is_some_and(|t| t.contains("connected 0:")),
    );
    let shown = shown.as_str().unwrap_or_default();
    for want in [
        format!(
            "{} ({})",
            v["inmate_name"].as_str().unwrap(),
            f.inmate.booking
        ),
        format!(
            "{} ({})",
            v["visitor_name"].as_str().unwrap(),
            v["visitor_relationship"].as_str().unwrap()
        ),
        "Kiosk 1".to_string(),
        started,
        ends,
    ] {
        assert!(
            shown.contains(&want),
            "{want:?} in the live visit's row: {shown}"
        );
    }
    console::readable_at_both_widths(b, "the live page with a visit in progress");
    console::tab_to(b, &format!("{row} button.watch"));
    console::press(b, "\u{E007}");
    wait_visible(b, "watch-panel");
    let shown = b.wait_js(
        "frames decoded from both sides",
        Duration::from_secs(30),
        "return { visitor: Number(document.getElementById('watch-frames-visitor').textContent),
                  inmate: Number(document.getElementById('watch-frames-inmate').textContent),
                  state: document.getElementById('watch-state').textContent,
                  error: document.getElementById('error').textContent };",
        |v| {
            v["visitor"].as_f64().is_some_and(|n| n > 0.0)
                && v["inmate"].as_f64().is_some_and(|n| n > 0.0)
        },
    );
    println!("watching: {shown}");
    let stats = b.js_async(
        "const done = arguments[arguments.length - 1];
         state.watcher.pc.getStats().then(s => {
           const inbound = [];
           s.forEach(r => { if (r.type === 'inbound-rtp') inbound.push({ mid: r.mid, kind: r.kind,
             frames: r.framesDecoded, packets: r.packetsReceived }); });
           done(inbound);
         }, e => done(String(e)));",
        json!([]),
    );
    println!("inbound-rtp: {stats}");
    let video: Vec<&Value> = stats
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "video")
        .collect();
    assert_eq!(video.len(), 2, "two inbound video streams: {stats}");
    for v in &video {
        assert!(v["frames"].as_u64().is_some_and(|n| n > 0), "{stats}");
    }
    let audio = stats
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "audio" && r["packets"].as_u64().is_some_and(|n| n > 0))
        .count();
    assert_eq!(audio, 2, "both sides heard: {stats}");
    // Both <video> elements play their side.
    let playing = b.wait_js(
        "both videos have a picture",
        Duration::from_secs(10),
        "return ['visitor', 'inmate'].map(s => document.getElementById('watch-video-' + s).videoWidth);",
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|w| w.as_u64().is_some_and(|w| w > 0)))
        },
    );
    println!("video widths: {playing}");
    let screenshots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|t| t.join("browser-screenshots"))
        .unwrap();
    b.screenshot(&screenshots.join("visit_watch-watching.png"));
    assert_eq!(f.audited("visit.watch", "vis_console").len(), 1);
    console::readable_at_both_widths(b, "the live page, watching a visit");
    b.js("window.scrollTo(0, 0);", json!([]));
    console::doc_screenshot(b, "visit-watch");

    // Stop watching and End visit are both reached from the keyboard; End visit ends it.
    console::tab_to(b, "#watch-stop");
    console::tab_to(b, "#watch-end");
    console::press(b, "\u{E007}");
    b.accept_dialog();
    b.wait_js(
        "the visit leaves the list",
        Duration::from_secs(20),
        &format!("return !document.querySelector(\"{row}\");"),
        |v| v == true,
    );
    assert!(b.text("#error").is_empty(), "{}", b.text("#error"));
    f.pages_ended(pages, "terminated");
    assert_eq!(
        f.closed_session("vis_console"),
        ("ended".to_string(), "terminated".to_string())
    );
    let ended = f.audited("visit.terminate", "vis_console");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["actor"], "inv-demo");
    drop(browser);
    drop(f);
}

/// Node `id` of a cluster on the PostgreSQL database at `url`, its media (calls and
/// visits) on `ip`.
fn node(dir: &Workdir, url: &str, id: &str, ip: &str) -> Gateway {
    Gateway::start_with(dir, &sipp::ports(), &format!("gateway-{id}"), |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", url)
            .env("SALLYPORT_NODE_ID", id)
            .env("SALLYPORT_CLUSTER_SECRET", "visit-watch-cluster-secret")
            .env("SALLYPORT_RTP_ADVERTISED_IP", ip)
            .env("SALLYPORT_RTP_LISTEN_IP", ip);
    })
}

#[test]
fn a_visit_on_one_node_is_watched_and_ended_through_another() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(test_db) = rt.block_on(sallyport::db::testing::TestDb::postgres()) else {
        return;
    };
    let Some(script) = media() else {
        rt.block_on(test_db.cleanup());
        return;
    };
    let url = test_db.postgres_url().expect("a PostgreSQL URL");
    let dir = Workdir::new("visit_watch", "two_nodes");
    let a = node(&dir, &url, "node-a", "127.0.0.1");
    let b = node(&dir, &url, "node-b", "127.0.0.2");
    let api_b = b.api.clone();
    let f = Fixture::seed(a, test_db.db.clone(), rt, script, dir);
    let inv_b = login(&api_b, "inv-demo");

    // The visit runs on node-a (its pages reached node-a).
    f.visit("vis_2n", 120, false);
    let (pages, connected) = f.join("vis_2n");
    f.wait_connected(&connected);
    let live = inv_b.get("/api/v1/visits/live");
    assert_eq!(live[0]["session"]["node_id"], "node-a", "{live}");

    // Watched through node-b: node-a answers with its own media address and sends both
    // sides.
    let (lines, watcher_id, answer) = f.watch(&inv_b, "vis_2n");
    assert!(
        answer.contains("a=candidate:") && answer.contains(" 127.0.0.1 "),
        "{answer}"
    );
    assert!(!answer.contains("127.0.0.2"), "node-b's address: {answer}");
    for l in &lines {
        assert!(
            l.frames > 0,
            "m-line {} ({:?}) received nothing",
            l.mid,
            l.kind
        );
    }
    let path = format!("/api/v1/visits/vis_2n/watch/{watcher_id}");
    let (s, v) = inv_b.request("DELETE", &path, None);
    assert_eq!(s, 204, "{v}");
    let (s, v) = inv_b.request("DELETE", &path, None);
    assert_eq!(s, 404, "{v}");

    // Ended through node-b: node-a ends it, both pages told, the session closed.
    let closed = inv_b.post("/api/v1/visits/vis_2n/terminate", json!({}));
    assert_eq!(
        (closed["state"].as_str(), closed["end_reason"].as_str()),
        (Some("ended"), Some("terminated")),
        "{closed}"
    );
    f.pages_ended(pages, "terminated");
    let (s, v) = inv_b.request("POST", "/api/v1/visits/vis_2n/terminate", None);
    assert_eq!(s, 404, "{v}");

    // Audited once each, by node-b (where the caller was), naming node-a.
    let all = api_b.get("/api/v1/audit?limit=500");
    for action in ["visit.watch", "visit.unwatch", "visit.terminate"] {
        let entries: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action && e["target"] == "vis_2n")
            .collect();
        assert_eq!(entries.len(), 1, "{action}: {entries:?}");
        assert_eq!(entries[0]["detail"]["node"], "node-a", "{entries:?}");
        assert_eq!(entries[0]["actor"], "inv-demo", "{entries:?}");
    }
    drop(b);
    f.rt.block_on(test_db.cleanup());
}
