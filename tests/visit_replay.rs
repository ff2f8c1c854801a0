//! Investigators find and replay recorded video visits (issue 11).
//!
//! - `api` (SQLite and PostgreSQL, the router in process): the session search finds
//!   visits' sessions with `kind=visit` (or `all`), calls alone as before without it; one
//!   visit session (`GET /calls/{id}`) carries its booking (visitor, station), the time
//!   billing was paused, its timeline and both sides' recordings with their `started_at`;
//!   `GET /calls/{id}/recordings` lists them, and refuses a privileged visit (403
//!   `privileged`, audited `recording.refused`); facility scoping as for calls.
//! - `console_replays_a_recorded_visit_in_step` (the real binary, headless Chromium): a
//!   visit run by two synthetic str0m participants (VP8 and Opus made by ffmpeg) is
//!   recorded; the investigator searches visits in the console, opens it and presses play:
//!   both `<video>` elements decode frames and stay within 0.3 s of each other on the
//!   visit's time line (each offset by its recording's `started_at`); a seek moves both;
//!   the timeline, hashes and integrity checks are shown; a privileged visit run beside it
//!   has no recording and its replay is refused, audited.
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
    assert!(
        c.get("timeline").is_none() && c.get("visit").is_none(),
        "{c}"
    );
    // The call-only routes stay call-only.
    let (s, _) = get("/api/v1/calls/ses_v1/recording".into(), inv.clone()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.t.cleanup().await;
}

battery!(api);
