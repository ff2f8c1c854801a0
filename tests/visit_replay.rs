//! Investigators find and replay recorded video visits (issue 11).
//!
//! - `api` (SQLite and PostgreSQL, the router in process): the session search finds
//!   visits' sessions with `kind=visit` (or `all`), calls alone as before without it; one
//!   visit session (`GET /calls/{id}`) carries its booking (visitor, station), the time
//!   billing was paused, its timeline and both sides' recordings with their `started_at`;
//!   `GET /calls/{id}/recordings` lists them, and refuses a privileged visit (403
//!   `privileged`, audited `recording.refused`); facility scoping as for calls; an
//!   evidence package of the visit holds both sides' WebM files, its booking and
//!   timeline, and verifies (the privileged visit is refused).
//! - `console_replays_a_recorded_visit_in_step` (the real binary, headless Chromium): a
//!   visit run by two synthetic str0m participants (VP8 and Opus made by ffmpeg) is
//!   recorded; the investigator searches visits in the console, opens it and presses play:
//!   both `<video>` elements decode frames and stay within 0.3 s of each other on the
//!   visit's time line (each offset by its recording's `started_at`); a seek moves both;
//!   the timeline, hashes and integrity checks are shown; a privileged visit run beside it
//!   has no recording and its replay is refused, audited. Play, Pause, a note at the
//!   replay's position (and its moment, which moves the replay back there), a timeline
//!   event's moment and the position slider (End) are pressed from the keyboard, and the
//!   page is readable at 1024 and 1280 px (axe-core too) before and after playing.
//!
//! Without ffmpeg, Chromium or chromedriver the console test prints why and passes, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`; without `SALLYPORT_TEST_DATABASE_URL` the PostgreSQL half
//! of `api` is skipped the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sallyport::clock::Clock;
use sallyport::db::Backend;
use sallyport::session::cdr::{self, CallEnd, NewVisitSession, SessionEnd, SessionEventKind};
use sallyport::store::{FinishedRecording, NewRecording, Participant};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::inproc::{self, admin, ended_call, err_code, issue, send, App, Call, Setup};

const ADMIN: &str = "test-admin-token";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).recordings().app(backend).await
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// A visit of F1's seeded inmate and contact at station `st_1`, its slot `at`..`at+10 min`.
async fn insert_visit(app: &App, id: &str, inmate: &str, contact: &str, privileged: bool) {
    let at = app.clock.wall().timestamp_micros();
    sqlx::query(
        "INSERT INTO visits (id, facility_id, inmate_id, contact_id, station_id, starts_at, \
         ends_at, status, privileged, requested_by, requested_role, created_at) \
         VALUES ($1, 'F1', $2, $3, 'st_1', $4, $5, 'approved', $6, 'admin', 'admin', $4)",
    )
    .bind(id)
    .bind(inmate)
    .bind(contact)
    .bind(at)
    .bind(at + 600_000_000)
    .bind(i64::from(privileged))
    .execute(app.t.db.pool())
    .await
    .unwrap();
}

/// One side's recording of session `session`, started at `at`: a file of a few bytes
/// (what is served is not decoded here), registered, finished and chained.
async fn side_recording(
    app: &App,
    session: &str,
    participant: Participant,
    at: DateTime<Utc>,
) -> (String, String) {
    let rel = format!("2026/03/02/{session}-{}.webm", participant.as_str());
    let path = app.recordings().join(&rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = format!("webm of the {} side", participant.as_str()).into_bytes();
    std::fs::write(&path, &bytes).unwrap();
    let id = app
        .store
        .start_visit_recording(
            NewRecording {
                session_id: session,
                facility_id: "F1",
                path: &rel,
                format: sallyport::recording::webm::FORMAT_NAME,
                node_id: "n1",
                started_at: at,
            },
            participant,
        )
        .await
        .unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    let f = FinishedRecording {
        ended_at: at + chrono::Duration::seconds(60),
        duration_ms: 60_000,
        bytes: bytes.len() as i64,
        sha256: sha.clone(),
        dropped_packets: 0,
        complete: true,
    };
    app.store.finish_recording(&id, &f).await.unwrap();
    (id, sha)
}

/// Search with visits, one visit session in detail, its recordings, a privileged visit.
async fn api(app: App) {
    let seeded = support::seed::inmate_with_contact(&app.store, "5.00", true).await;
    inproc::facility(&app, "F2").await;
    let (inmate, contact) = (seeded.inmate.as_str(), seeded.contact.as_str());
    let now = app.clock.wall();
    sqlx::query(
        "INSERT INTO visit_stations (id, facility_id, name, housing_unit, capacity, created_at) \
         VALUES ('st_1', 'F1', 'Kiosk 1', 'A', 2, $1)",
    )
    .bind(now.timestamp_micros())
    .execute(app.t.db.pool())
    .await
    .unwrap();
    insert_visit(&app, "vis_1", inmate, contact, false).await;
    insert_visit(&app, "vis_p", inmate, contact, true).await;
    ended_call(&app, Call::answered("call_1", "F1", inmate, false)).await;
    let db = app.store.db().clone();
    let t = |s: i64| now + chrono::Duration::seconds(s);
    for (id, visit, privileged) in [("ses_v1", "vis_1", false), ("ses_vp", "vis_p", true)] {
        let open = NewVisitSession {
            id,
            visit_id: visit,
            facility_id: "F1",
            inmate_id: inmate,
            contact_id: contact,
            account_id: &seeded.account,
            privileged,
            node_id: "n1",
        };
        assert!(cdr::open_visit(&db, &open, t(1)).await.unwrap());
        for (s, kind, side) in [
            (1, SessionEventKind::Joined, "visitor"),
            (2, SessionEventKind::Joined, "inmate"),
            (3, SessionEventKind::Media, "visitor"),
            (4, SessionEventKind::Media, "inmate"),
            (20, SessionEventKind::Dropped, "visitor"),
            (20, SessionEventKind::Paused, ""),
            (30, SessionEventKind::Media, "visitor"),
            (30, SessionEventKind::Resumed, ""),
            (64, SessionEventKind::Left, "visitor"),
        ] {
            cdr::add_event(&db, id, t(s), kind, side).await.unwrap();
        }
    }
    // The inmate's side started recording at 4 s, the visitor's 1.5 s later.
    let (rec_inmate, sha_inmate) = side_recording(&app, "ses_v1", Participant::Inmate, t(4)).await;
    let later = t(5) + chrono::Duration::milliseconds(500);
    let (rec_visitor, _) = side_recording(&app, "ses_v1", Participant::Visitor, later).await;
    for (id, privileged) in [("ses_v1", false), ("ses_vp", true)] {
        let end = SessionEnd {
            reason: "visitor_left",
            inmate_id: Some(inmate),
            number_e164: None,
            privileged,
            recorded: !privileged,
            answer_at: None,
            accepted_at: Some(t(4)),
            end_at: t(64),
        };
        let detail = CallEnd {
            media_end_at: Some(t(64)),
            counted_increments: 0,
            closed_at: None,
            paused: Some(std::time::Duration::from_secs(10)),
        };
        assert!(cdr::close_with(&db, id, &end, &detail).await.unwrap());
    }

    let inv = issue(&app, "inv-f1", "investigator", &["F1"], None).await;
    let other = issue(&app, "inv-f2", "investigator", &["F2"], None).await;
    let get = |path: String, token: String| {
        let app = &app;
        async move { send(app, "GET", &path, Some(&token), None).await }
    };

    // Without `kind` the search finds calls, as it always did.
    let (s, page) = get("/api/v1/calls".into(), inv.clone()).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), ["call_1"]);
    assert_eq!(page["items"][0]["kind"], "call");
    let (_, page) = get("/api/v1/calls?kind=call".into(), inv.clone()).await;
    assert_eq!(ids(&page), ["call_1"]);
    let (_, page) = get("/api/v1/calls?kind=visit".into(), inv.clone()).await;
    assert_eq!(
        (ids(&page), page["total"].clone()),
        (vec!["ses_v1".to_string(), "ses_vp".to_string()], json!(2))
    );
    for item in page["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "visit", "{item}");
        assert!(
            item["visit_id"].as_str().unwrap().starts_with("vis_"),
            "{item}"
        );
    }
    let (_, page) = get("/api/v1/calls?kind=all".into(), inv.clone()).await;
    assert_eq!(ids(&page), ["call_1", "ses_v1", "ses_vp"]);
    // Other filters hold for visits too: the inmate, the end reason.
    let q = format!("/api/v1/calls?kind=all&inmate_id={inmate}&end_reason=visitor_left");
    let (_, page) = get(q, inv.clone()).await;
    assert_eq!(ids(&page), ["ses_v1", "ses_vp"]);
    let (s, bad) = get("/api/v1/calls?kind=visits".into(), inv.clone()).await;
    assert_eq!(
        (s, err_code(&bad)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{bad}"
    );
    // Another facility's investigator finds none of them and may not open them.
    let (_, page) = get("/api/v1/calls?kind=all".into(), other.clone()).await;
    assert_eq!(page["total"], 0, "{page}");
    for path in ["/api/v1/calls/ses_v1", "/api/v1/calls/ses_v1/recordings"] {
        let (s, v) = get(path.into(), other.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
    }
    // The search is audited with its kind.
    let (_, audit) = admin(&app, "GET", "/api/v1/audit?limit=50", None).await;
    let searched = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "call.search" && e["detail"]["filters"]["kind"] == "visit");
    assert!(searched.is_some(), "{audit}");

    // One visit session: the booking, the pause, the timeline, both recordings.
    let (s, v) = get("/api/v1/calls/ses_v1".into(), inv.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["kind"].as_str(),
            v["visit_id"].as_str(),
            v["paused_ms"].as_i64(),
            v["end_reason"].as_str(),
            v["privileged"].as_bool()
        ),
        (
            Some("visit"),
            Some("vis_1"),
            Some(10_000),
            Some("visitor_left"),
            Some(false)
        ),
        "{v}"
    );
    assert_eq!(v["visit"]["visitor_name"], "C", "{v}");
    assert_eq!(v["visit"]["station_name"], "Kiosk 1", "{v}");
    assert_eq!(v["visit"]["inmate_id"], inmate, "{v}");
    let timeline: Vec<(String, String)> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["side"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(timeline.len(), 9, "{v}");
    assert_eq!(timeline[4], ("dropped".to_string(), "visitor".to_string()));
    assert_eq!(timeline[5], ("paused".to_string(), String::new()));
    assert!(
        v["recording"].is_null(),
        "a visit's recordings are in `recordings`: {v}"
    );
    let recs = v["recordings"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{v}");
    assert_eq!(
        (recs[0]["id"].as_str(), recs[0]["participant"].as_str()),
        (Some(rec_inmate.as_str()), Some("inmate"))
    );
    assert_eq!(
        (recs[1]["id"].as_str(), recs[1]["participant"].as_str()),
        (Some(rec_visitor.as_str()), Some("visitor"))
    );
    assert_eq!(recs[0]["sha256"], sha_inmate.as_str());
    assert_eq!(recs[0]["status"], "complete");
    assert_eq!(recs[0]["duration_ms"], 60_000);
    let started =
        |r: &Value| DateTime::parse_from_rfc3339(r["started_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        (started(&recs[1]) - started(&recs[0])).num_milliseconds(),
        1500
    );
    let (s, listed) = get("/api/v1/calls/ses_v1/recordings".into(), inv.clone()).await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(&listed, &v["recordings"]);
    // Each side plays through the usual tickets.
    for rec in [&rec_inmate, &rec_visitor] {
        let (s, t) = send(
            &app,
            "POST",
            &format!("/api/v1/recordings/{rec}/play"),
            Some(&inv),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{t}");
    }

    // A privileged visit: shown, never recorded, its recordings refused and audited.
    let (s, p) = get("/api/v1/calls/ses_vp".into(), inv.clone()).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        (p["privileged"].as_bool(), p["recordings"].clone()),
        (Some(true), json!([]))
    );
    assert_eq!(p["visit"]["privileged"], true, "{p}");
    let (s, refused) = get("/api/v1/calls/ses_vp/recordings".into(), inv.clone()).await;
    assert_eq!(
        (s, err_code(&refused)),
        (StatusCode::FORBIDDEN, "privileged"),
        "{refused}"
    );
    let (_, audit) = admin(&app, "GET", "/api/v1/audit?limit=50", None).await;
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "recording.refused" && e["target"] == "ses_vp")
        .cloned()
        .unwrap_or_else(|| panic!("no recording.refused for ses_vp: {audit}"));
    assert_eq!(entry["actor"], "inv-f1", "{entry}");
    assert_eq!(entry["detail"]["visit_id"], "vis_p", "{entry}");

    // A call's detail is as before, its recording in `recordings` too.
    let (s, c) = get("/api/v1/calls/call_1".into(), inv.clone()).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(
        (c["kind"].as_str(), c["visit_id"].clone()),
        (Some("call"), Value::Null)
    );
    // No visit; its timeline is a call's (what happened from the INVITE on).
    assert!(c.get("visit").is_none(), "{c}");
    assert_eq!(c["timeline"][0]["kind"], "invite", "{c}");
    assert!(c["timeline"][0].get("side").is_none(), "{c}");
    // The call-only routes stay call-only.
    let (s, _) = get("/api/v1/calls/ses_v1/recording".into(), inv.clone()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // An evidence package of the visit holds both sides' files, its booking and timeline,
    // and verifies; the privileged visit is refused.
    let body = json!({ "session_ids": ["ses_v1", "ses_vp"], "reason": "case v" });
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/evidence-packages",
        Some(&inv),
        Some(body),
    )
    .await;
    assert_eq!(
        (s, err_code(&v)),
        (StatusCode::FORBIDDEN, "privileged"),
        "{v}"
    );
    let body = json!({ "session_ids": ["ses_v1"], "reason": "case v" });
    let (s, built) = send(
        &app,
        "POST",
        "/api/v1/evidence-packages",
        Some(&inv),
        Some(body),
    )
    .await;
    assert_eq!(
        (s, &built["intact"]),
        (StatusCode::CREATED, &json!(true)),
        "{built}"
    );
    let stored = app
        .recordings()
        .join("evidence")
        .join(format!("{}.tar", built["id"].as_str().unwrap()));
    let tar = std::fs::read(&stored).unwrap();
    let members = sallyport::evidence::tar::read_all(&tar[..]).unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    for n in [
        format!("sessions/ses_v1/{rec_inmate}.webm"),
        format!("sessions/ses_v1/{rec_visitor}.webm"),
        "sessions/ses_v1/visit.json".to_string(),
        "sessions/ses_v1/timeline.json".to_string(),
    ] {
        assert!(names.contains(&n.as_str()), "{n} not in {names:?}");
    }
    let report = sallyport::evidence::verify(&tar[..]).unwrap();
    assert!(
        report.intact(),
        "{:?}",
        report.failures().collect::<Vec<_>>()
    );
    app.t.cleanup().await;
}

battery!(api);

// ---- the console, against the real binary -----------------------------------------------

mod console {
    use super::support::api::{self as e2e, Api};
    use super::support::console as ui;
    use super::support::gateway::Gateway;
    use super::support::visit_page;
    use super::support::webdriver::{self, Browser};
    use super::support::{sipp, Workdir};
    use sallyport::db::Db;
    use sallyport::sfu::synthetic::Script;
    use serde_json::{json, Value};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const PASSWORD: &str = "correct horse battery staple";
    /// How long each visit's slot lasts.
    const SLOT_SECS: i64 = 14;

    /// One side of a visit whose synthetic participant sends until the visit ends.
    async fn page(base_url: String, pass: String, script: Arc<Script>) -> Vec<Value> {
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        visit_page::page(base_url, pass, script, Duration::from_secs(90), counter).await
    }

    /// The gateway with a video rate, two inmates with money and their contacts, a
    /// station and its kiosk, an investigator of the demo facility.
    struct Fixture {
        gw: Gateway,
        api: Api,
        kiosk: Api,
        station: String,
        db: Db,
        rt: tokio::runtime::Runtime,
        script: Arc<Script>,
        /// Last: dropped (failure dump, removal) after the gateway.
        dir: Workdir,
    }

    impl Fixture {
        fn start() -> Option<Fixture> {
            let (ivf, ogg) = super::support::visit_media::sfu_media()?;
            let script = Arc::new(Script::from_files(&ivf, &ogg).unwrap());
            let dir = Workdir::new("visit_replay", "console");
            let gw = Gateway::start(&dir, &sipp::ports());
            let rt = tokio::runtime::Runtime::new().unwrap();
            let url = format!("sqlite://{}/db.sqlite", dir.path.display());
            let db = rt.block_on(Db::connect(&url, 1)).unwrap();
            let api: Api = gw.api.clone();
            api.upload(
                "/api/v1/rate-plans?id=video&max_call_secs=3600",
                "class,service,per_minute,increment_secs\nlocal,audio,0.05,60\n\
                 domestic,audio,0.05,60\ninternational,audio,0.05,60\nlocal,video,0.12,6\n",
            );
            api.ok(
                "PATCH",
                "/api/v1/facilities/DEMO",
                Some(json!({ "rate_plan_id": "video" })),
            );
            api.add_user("inv-demo", PASSWORD, "investigator", &["DEMO"]);
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
            Some(Fixture {
                gw,
                api,
                kiosk,
                station,
                db,
                rt,
                script,
                dir,
            })
        }

        /// Books inmate `booking` (PIN `pin`, funded) and inserts its visit `id`, the slot
        /// opened a second ago and lasting [`SLOT_SECS`]; its two passes.
        fn visit(&self, id: &str, booking: &str, pin: &str, privileged: bool) -> (String, String) {
            let inmate = e2e::book(&self.api, booking, pin, e2e::NUMBER, false);
            e2e::fund(&self.api, &inmate, "5.00");
            let now = chrono::Utc::now();
            let us = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
            self.rt.block_on(async {
                let contact: String =
                    sqlx::query_scalar("SELECT id FROM contacts WHERE inmate_id = $1")
                        .bind(&inmate.id)
                        .fetch_one(self.db.pool())
                        .await
                        .unwrap();
                sqlx::query(
                    "INSERT INTO visits (id, facility_id, inmate_id, contact_id, station_id, \
                     starts_at, ends_at, status, privileged, requested_by, requested_role, \
                     created_at) VALUES ($1, 'DEMO', $2, $3, $4, $5, $6, 'approved', $7, \
                     'admin', 'admin', $8)",
                )
                .bind(id)
                .bind(&inmate.id)
                .bind(&contact)
                .bind(&self.station)
                .bind(us(now - chrono::Duration::seconds(1)))
                .bind(us(now + chrono::Duration::seconds(SLOT_SECS)))
                .bind(i64::from(privileged))
                .bind(us(now))
                .execute(self.db.pool())
                .await
                .unwrap();
            });
            let link = self
                .api
                .post(&format!("/api/v1/visits/{id}/join-link"), json!({}));
            let visitor = link["url"].as_str().unwrap().split_once('#').unwrap().1;
            let joined = self.kiosk.post(
                &format!("/api/v1/visits/{id}/kiosk-join"),
                json!({ "calling_id": inmate.calling_id, "pin": inmate.pin }),
            );
            (
                visitor.to_string(),
                joined["secret"].as_str().unwrap().to_string(),
            )
        }

        /// The session of visit `id` once it is closed.
        fn closed_session(&self, id: &str) -> String {
            self.rt.block_on(async {
                for _ in 0..150 {
                    let ended: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM sessions WHERE visit_id = $1 AND state = 'ended'",
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
    }

    fn wait_visible(b: &Browser, id: &str) {
        b.wait_js(
            &format!("#{id} shown"),
            Duration::from_secs(20),
            &format!("return !document.getElementById('{id}').hidden;"),
            |v| v == true,
        );
    }

    /// Where both videos are: each side's currentTime, its offset and frames decoded.
    const POSITIONS: &str = "const r = state.replay;
        if (!r) return null;
        const sides = {};
        for (const s of r.sides) {
          sides[s.side] = { t: s.video.currentTime, offset: s.offset, paused: s.video.paused,
            frames: s.video.getVideoPlaybackQuality().totalVideoFrames,
            length: r.length(s), ready: s.video.readyState };
        }
        return { playing: r.playing, now: r.now(), duration: r.duration(), sides,
          error: document.getElementById('error').textContent };";

    fn side(v: &Value, s: &str) -> (f64, f64, u64) {
        let x = &v["sides"][s];
        (
            x["t"].as_f64().unwrap_or(-1.0),
            x["offset"].as_f64().unwrap_or(-1.0),
            x["frames"].as_u64().unwrap_or(0),
        )
    }

    /// How far apart the two sides are on the visit's time line (seconds).
    fn apart(v: &Value) -> f64 {
        let (tv, ov, _) = side(v, "visitor");
        let (ti, oi, _) = side(v, "inmate");
        ((tv + ov) - (ti + oi)).abs()
    }

    #[test]
    fn console_replays_a_recorded_visit_in_step() {
        if !webdriver::present("visit replay console test") {
            return;
        }
        let Some(f) = Fixture::start() else {
            return;
        };
        // Two visits at once: one recorded, one privileged (never recorded).
        let (v1, i1) = f.visit("vis_replay", "R-1", "2468", false);
        let (v2, i2) = f.visit("vis_attorney", "R-2", "1357", true);
        let url = f.gw.base_url();
        let script = f.script.clone();
        let pages = f.rt.spawn(async move {
            tokio::join!(
                page(url.clone(), v1, script.clone()),
                page(url.clone(), i1, script.clone()),
                page(url.clone(), v2, script.clone()),
                page(url, i2, script)
            )
        });
        let (a, b, c, d) = f.rt.block_on(pages).unwrap();
        for got in [&a, &b, &c, &d] {
            assert_eq!(got.last().unwrap()["reason"], "slot_ended", "{got:?}");
        }
        let session = f.closed_session("vis_replay");
        let attorney = f.closed_session("vis_attorney");

        // Both sides' recordings are finished; the privileged visit has none.
        let detail = {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let d = f.api.get(&format!("/api/v1/calls/{session}"));
                let recs = d["recordings"].as_array().cloned().unwrap_or_default();
                if recs.len() == 2 && recs.iter().all(|r| r["status"] == "complete") {
                    break d;
                }
                assert!(Instant::now() < deadline, "recordings not finished: {d}");
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        println!("visit session: {detail}");
        let recs = detail["recordings"].as_array().unwrap().clone();
        let started = |r: &Value| {
            chrono::DateTime::parse_from_rfc3339(r["started_at"].as_str().unwrap()).unwrap()
        };
        let rec = |p: &str| recs.iter().find(|r| r["participant"] == p).unwrap().clone();
        let (rv, ri) = (rec("visitor"), rec("inmate"));
        let t0 = started(&rv).min(started(&ri));
        let offset = |r: &Value| (started(r) - t0).num_microseconds().unwrap() as f64 / 1e6;
        let p = f.api.get(&format!("/api/v1/calls/{attorney}"));
        assert_eq!(p["recordings"], json!([]), "{p}");
        let none: i64 = f.rt.block_on(async {
            sqlx::query_scalar("SELECT COUNT(*) FROM recordings WHERE session_id = $1")
                .bind(&attorney)
                .fetch_one(f.db.pool())
                .await
                .unwrap()
        });
        assert_eq!(none, 0, "a privileged visit is never recorded");

        // The investigator finds the visit in the console and opens it.
        let browser = Browser::start(&f.dir.join("chromedriver.log"));
        let b = &browser;
        b.goto(&format!("{}/console/", f.gw.base_url()));
        b.wait_for("body[data-ready='1']");
        b.fill("#login-username", "inv-demo");
        b.fill("#login-password", PASSWORD);
        b.click("#login-submit");
        wait_visible(b, "search-view");
        b.js(
            "document.getElementById('search-kind').value = 'visit';",
            json!([]),
        );
        b.click("#search-submit");
        let row = format!("tr[data-session-id='{session}']");
        b.wait_for(&row);
        b.wait_for(&format!("tr[data-session-id='{attorney}']"));
        assert_eq!(b.text("#results-total"), "2");
        let kind = b.js(
            "return document.querySelector(arguments[0]).dataset.kind;",
            json!([row]),
        );
        assert_eq!(kind, "visit");
        b.click(&format!("{row} a.session-link"));
        wait_visible(b, "replay");
        assert_eq!(b.text("#cdr-kind"), "visit");
        assert_eq!(b.text("#visit-id"), "vis_replay");
        assert_eq!(
            b.text("#visit-visitor-name"),
            detail["visit"]["visitor_name"].as_str().unwrap()
        );
        assert_eq!(b.text("#visit-station-name"), "Kiosk 1");
        assert!(b.text("#cdr-end-reason").contains("slot_ended"));
        let events = b.js(
            "return [...document.querySelectorAll('#timeline-body tr')].map(r => r.dataset.event);",
            json!([]),
        );
        let events: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            events.contains(&"joined") && events.contains(&"media"),
            "timeline: {events:?}"
        );
        for (s, r) in [("visitor", &rv), ("inmate", &ri)] {
            b.wait_js(
                &format!("the {s} side verified"),
                Duration::from_secs(10),
                &format!("return document.getElementById('replay-verify-{s}').dataset.status;"),
                |v| v == "ok",
            );
            assert_eq!(
                b.text(&format!("#replay-sha256-{s}")),
                r["sha256"].as_str().unwrap()
            );
            assert!(b
                .text(&format!("#replay-caption-{s}"))
                .to_lowercase()
                .starts_with(s));
        }
        // Opening the page fetches nothing: no play ticket (audited recording.play), no
        // source on either video, until Play.
        std::thread::sleep(Duration::from_secs(1));
        let sources = b.js(
            "return ['visitor', 'inmate'].map(s => document.getElementById('replay-video-' + s).getAttribute('src'));",
            json!([]),
        );
        assert_eq!(sources, json!([null, null]), "nothing fetched on open");
        let plays = |audit: &Value| {
            audit
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == "recording.play" && e["actor"] == "inv-demo")
                .count()
        };
        assert_eq!(
            plays(&f.api.get("/api/v1/audit?limit=500")),
            0,
            "no recording.play from opening the page"
        );
        ui::readable_at_both_widths(b, "the visit's replay page");
        // The offsets are the recordings' started_at differences.
        let at = b.js(POSITIONS, json!([]));
        println!("before play: {at}");
        for (s, r) in [("visitor", &rv), ("inmate", &ri)] {
            let shown = side(&at, s).1;
            assert!(
                (shown - offset(r)).abs() < 0.002,
                "{s}: offset {shown} in the console, {} from the API",
                offset(r)
            );
        }

        // One play button asks both tickets and plays both, in step (pressed from the
        // keyboard).
        ui::tab_to(b, "#replay-play");
        ui::press(b, "\u{E007}");
        b.wait_js(
            "both videos' metadata",
            Duration::from_secs(20),
            POSITIONS,
            |v| {
                ["visitor", "inmate"]
                    .iter()
                    .all(|s| v["sides"][s]["ready"].as_u64().is_some_and(|r| r >= 1))
            },
        );
        let playing = b.wait_js("both sides play", Duration::from_secs(20), POSITIONS, |v| {
            ["visitor", "inmate"].iter().all(|s| {
                let (t, _, frames) = side(v, s);
                t > 1.5 && frames > 10
            })
        });
        println!("playing: {playing}");
        let mut worst: f64 = 0.0;
        for _ in 0..12 {
            let v = b.js(POSITIONS, json!([]));
            assert!(v["error"].as_str().unwrap_or("").is_empty(), "{v}");
            assert_eq!(v["playing"], true, "{v}");
            worst = worst.max(apart(&v));
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("while playing, at most {worst:.3} s apart");
        assert!(worst < 0.3, "the two sides drifted {worst} s apart");
        let before = b.js(POSITIONS, json!([]));

        // A seek (the slider, as a keyboard or mouse moves it) moves both.
        let duration = before["duration"].as_f64().unwrap();
        let target = (duration / 2.0).max(1.0);
        b.js(
            "const s = document.getElementById('replay-seek');
             s.value = String(arguments[0]);
             s.dispatchEvent(new Event('change'));",
            json!([target]),
        );
        let after = b.wait_js(
            "both sides moved and play on",
            Duration::from_secs(20),
            POSITIONS,
            |v| {
                let now = v["now"].as_f64().unwrap_or(0.0);
                now > target + 0.5
                    && now < target + 3.0
                    && ["visitor", "inmate"].iter().all(|s| {
                        let (_, _, frames) = side(v, s);
                        frames > side(&before, s).2
                    })
            },
        );
        println!("after the seek to {target:.1}: {after}");
        for s in ["visitor", "inmate"] {
            let (t, o, _) = side(&after, s);
            assert!(
                (t + o - target) > 0.0 && (t + o - target) < 3.0,
                "{s} at {t} (+{o}) after a seek to {target}"
            );
        }
        let mut worst: f64 = 0.0;
        for _ in 0..6 {
            let v = b.js(POSITIONS, json!([]));
            worst = worst.max(apart(&v));
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(worst < 0.3, "after the seek, {worst} s apart");
        // Pause (from the keyboard) stops both.
        ui::tab_to(b, "#replay-play");
        ui::press(b, "\u{E007}");
        let paused = b.wait_js("both paused", Duration::from_secs(5), POSITIONS, |v| {
            v["playing"] == false
                && ["visitor", "inmate"]
                    .iter()
                    .all(|s| v["sides"][s]["paused"] == true)
        });
        println!("paused: {paused}");
        assert_eq!(b.text("#replay-play"), "Play");
        // A note at the replay's position, on the visit's time line (from the keyboard).
        let clock = |t: &str| -> Option<f64> {
            let (m, s) = t.trim().split_once(':')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        };
        let paused_at = paused["now"].as_f64().unwrap();
        ui::tab_to(b, "#note-mark");
        ui::press(b, "\u{E007}");
        let marked = b.js(
            "return document.getElementById('note-start').value;",
            json!([]),
        );
        let marked_at = marked.as_str().and_then(clock).unwrap();
        assert!(
            (marked_at - paused_at).abs() < 0.2,
            "the note marks {marked} (paused at {paused_at})"
        );
        ui::press(b, "seen at the kiosk");
        ui::tab_to(b, "#note-add");
        ui::press(b, "\u{E007}");
        b.wait_for("#notes-body tr[data-note-id] button.note-seek");
        // (The latest event well within the recordings, else any within them.)
        let target = b.js(
            "const d = state.replay.duration();
             const at = (b) => { const [m, s] = b.textContent.split(':'); return Number(m) * 60 + Number(s); };
             const all = [...document.querySelectorAll('#timeline-body button.timeline-seek')]
               .filter((b) => !b.textContent.startsWith('-') && at(b) <= d - 0.5);
             const inside = all.filter((b) => at(b) >= 1);
             const b = inside.length ? inside[inside.length - 1] : all[0];
             if (!b) return null;
             b.setAttribute('data-pick', '');
             return b.textContent;",
            json!([]),
        );
        let target = target
            .as_str()
            .and_then(clock)
            .unwrap_or_else(|| panic!("a timeline event within the recordings: {target}"));
        ui::tab_to(b, "#timeline-body button.timeline-seek[data-pick]");
        ui::press(b, "\u{E007}");
        let moved = b.wait_js("at the event", Duration::from_secs(10), POSITIONS, |v| {
            v["now"].as_f64().is_some_and(|t| (t - target).abs() < 1.0)
        });
        println!("the event at {target} s: {moved}");
        // The position slider from the keyboard: End goes to the end of the visit.
        ui::tab_to(b, "#replay-seek");
        ui::press(b, "\u{E010}");
        let end = b.wait_js("at the end", Duration::from_secs(10), POSITIONS, |v| {
            let d = v["duration"].as_f64().unwrap_or(f64::MAX);
            v["now"].as_f64().is_some_and(|t| t > d - 0.5)
        });
        println!("after End: {end}");
        // The note's moment moves the replay back there.
        ui::tab_to(b, "#notes-body tr[data-note-id] button.note-seek");
        ui::press(b, "\u{E007}");
        let noted = b.wait_js("at the note", Duration::from_secs(10), POSITIONS, |v| {
            v["now"]
                .as_f64()
                .is_some_and(|t| (t - marked_at).abs() < 1.0)
        });
        println!("the note at {marked_at} s: {noted}");
        if b.js(POSITIONS, json!([]))["playing"] == true {
            ui::tab_to(b, "#replay-play");
            ui::press(b, "\u{E007}");
        }
        ui::readable_at_both_widths(b, "the visit's replay page, played, with a note");
        b.js(
            "document.getElementById('recording-title').scrollIntoView();",
            json!([]),
        );
        ui::doc_screenshot(b, "visit-replay");
        let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .map(|t| t.join("browser-screenshots"))
            .unwrap();
        b.js(
            "document.getElementById('replay').scrollIntoView();",
            json!([]),
        );
        b.screenshot(&shots.join("visit_replay.png"));
        // The two recordings were played through tickets, each audited.
        let audit = f.api.get("/api/v1/audit?limit=500");
        for r in [&rv, &ri] {
            let n = audit
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["action"] == "recording.play"
                        && e["target"] == r["id"]
                        && e["actor"] == "inv-demo"
                })
                .count();
            assert!(n >= 1, "no recording.play for {}", r["id"]);
        }

        // Two sides whose recordings started apart: here both started together, so the
        // visitor's is moved 2 s later (its chain entry no longer matches, and the console
        // says so). Before 2 s the visitor's side waits at its first frame; after, both
        // play 2 s apart in their files and together on the visit's time line.
        f.rt.block_on(async {
            sqlx::query("UPDATE recordings SET started_at = started_at + 2000000 WHERE id = $1")
                .bind(rv["id"].as_str().unwrap())
                .execute(f.db.pool())
                .await
                .unwrap();
        });
        b.goto(&format!("{}/console/#/search", f.gw.base_url()));
        wait_visible(b, "search-view");
        b.goto(&format!("{}/console/#/session/{session}", f.gw.base_url()));
        wait_visible(b, "replay");
        b.wait_js(
            "the moved side fails its check",
            Duration::from_secs(10),
            "return document.getElementById('replay-verify-visitor').dataset.status;",
            |v| v == "failed",
        );
        b.click("#replay-play");
        let ready = b.wait_js(
            "both loaded again",
            Duration::from_secs(20),
            POSITIONS,
            |v| {
                ["visitor", "inmate"]
                    .iter()
                    .all(|s| v["sides"][s]["ready"].as_u64().is_some_and(|r| r >= 1))
            },
        );
        assert!(
            (side(&ready, "visitor").1 - (2.0 + offset(&rv))).abs() < 0.002,
            "{ready}"
        );
        assert_eq!(side(&ready, "inmate").1, 0.0, "{ready}");
        let early = b.wait_js(
            "the inmate's side plays alone",
            Duration::from_secs(10),
            POSITIONS,
            |v| {
                let now = v["now"].as_f64().unwrap_or(0.0);
                now > 0.8 && now < 1.8
            },
        );
        println!("before the visitor's start: {early}");
        assert_eq!(early["sides"]["visitor"]["paused"], true, "{early}");
        assert!(side(&early, "visitor").0 < 0.05, "{early}");
        b.wait_js("both play", Duration::from_secs(10), POSITIONS, |v| {
            v["now"].as_f64().unwrap_or(0.0) > 3.5 && v["sides"]["visitor"]["paused"] == false
        });
        let mut worst: f64 = 0.0;
        for _ in 0..8 {
            let v = b.js(POSITIONS, json!([]));
            worst = worst.max(apart(&v));
            let (tv, _, _) = side(&v, "visitor");
            let (ti, _, _) = side(&v, "inmate");
            assert!((ti - tv - 2.0).abs() < 0.3, "2 s apart in their files: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("offset by 2 s: at most {worst:.3} s apart on the visit's time line");
        assert!(worst < 0.3, "offset sides drifted {worst} s apart");
        b.click("#replay-play");

        // The privileged visit: its details, no replay, the refusal audited.
        b.goto(&format!("{}/console/#/session/{attorney}", f.gw.base_url()));
        wait_visible(b, "replay-refused");
        assert!(b.text("#replay-refused").contains("Privileged"));
        assert!(
            b.js(
                "return document.getElementById('replay').hidden;",
                json!([])
            ) == true,
            "no players for a privileged visit"
        );
        assert_eq!(b.text("#visit-privileged"), "true");
        let audit = f.api.get("/api/v1/audit?limit=500");
        let refused = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["action"] == "recording.refused"
                    && e["target"] == attorney.as_str()
                    && e["actor"] == "inv-demo"
            })
            .count();
        assert_eq!(refused, 1, "the refusal is audited once");
        drop(browser);
        drop(f);
    }
}
