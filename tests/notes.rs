//! Investigators' notes and bookmarks, and session records that name people, through the
//! real router against SQLite and PostgreSQL: facility scope, versions (an edit appends,
//! a delete is a tombstone, a stale edit is refused), search by text, per inmate and per
//! number, the audit entries every change leaves; search by inmate name and the sort
//! orders of `GET /calls`, and who terminated a call on its record; what a player actually
//! played (`POST /recordings/{id}/heard`), audited.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use sallyport::db::Backend;
use serde_json::{json, Value};
use support::inproc::{
    self, admin, ended_call, err_code, live_call, send, session, user, App, Call, Setup,
};

const ADMIN: &str = "test-admin-token";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).recordings().app(backend).await
}

/// Facilities F1 and F2, John Doe (B-1) in F1, and ended calls: `s1` and `s2` of his (to
/// +15551230001, +15551230002), `p1` of his to an attorney (privileged). Returns his id.
async fn calls(app: &App) -> String {
    inproc::facility(app, "F1").await;
    inproc::facility(app, "F2").await;
    let inmate = inproc::inmate(app, "F1", "B-1").await;
    let id = inmate["id"].as_str().unwrap().to_string();
    for (i, (call, e164, privileged)) in [
        ("s1", "+15551230001", false),
        ("s2", "+15551230002", false),
        ("p1", "+15551230003", true),
    ]
    .into_iter()
    .enumerate()
    {
        let hour = 10 + u32::try_from(i).unwrap();
        app.clock
            .set_wall(Utc.with_ymd_and_hms(2026, 3, 2, hour, 0, 0).unwrap());
        ended_call(
            app,
            Call {
                id: call,
                facility: "F1",
                dialed: &e164[2..],
                e164,
                inmate: Some(&id),
                reason: "callee_hangup",
                privileged,
            },
        )
        .await;
    }
    id
}

async fn audit(app: &App) -> Vec<Value> {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=200", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

fn ids(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect()
}

async fn notes(app: App) {
    let inmate = calls(&app).await;
    user(&app, "inv1", &["F1"]).await;
    user(&app, "inv1b", &["F1"]).await;
    user(&app, "inv2", &["F2"]).await;
    let (a, b, other) = (
        session(&app, "inv1").await,
        session(&app, "inv1b").await,
        session(&app, "inv2").await,
    );
    // Made by one investigator of the facility.
    let body = json!({ "session_id": "s1", "start_ms": 1500, "body": "Mentions the red car" });
    let (s, note) = send(&app, "POST", "/api/v1/notes", Some(&a), Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{note}");
    let id = note["id"].as_str().unwrap().to_string();
    assert_eq!(note["version"], 1);
    assert_eq!(note["inmate_id"], inmate.as_str());
    assert_eq!(note["number"], "+15551230001");
    assert_eq!(note["created_by"], "inv1");
    let range = json!({ "session_id": "s2", "start_ms": 2000, "end_ms": 9000, "body": "Talks of a meeting" });
    let (s, range) = send(&app, "POST", "/api/v1/notes", Some(&a), Some(range)).await;
    assert_eq!(s, StatusCode::CREATED, "{range}");
    assert_eq!(range["end_ms"], 9000);
    // Shared with the facility's other investigators: per session, inmate, number, text.
    for (query, expect) in [
        ("session_id=s1".to_string(), vec![id.as_str()]),
        (
            format!("inmate_id={inmate}"),
            vec![range["id"].as_str().unwrap(), &id],
        ),
        ("number=%2B15551230001".into(), vec![&id]),
        ("number=1%20555%20123%200001".into(), vec![&id]),
        ("q=RED%20car".into(), vec![&id]),
        ("q=boat".into(), vec![]),
        ("q=100%25".into(), vec![]),
    ] {
        let (s, v) = send(
            &app,
            "GET",
            &format!("/api/v1/notes?{query}"),
            Some(&b),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{query}: {v}");
        assert_eq!(ids(&v), expect, "{query}");
    }
    // Not with another facility's.
    let (s, v) = send(
        &app,
        "GET",
        &format!("/api/v1/notes?inmate_id={inmate}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!((s, ids(&v).len()), (StatusCode::OK, 0), "{v}");
    let (s, _) = send(
        &app,
        "GET",
        &format!("/api/v1/notes/{id}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(
        &app,
        "POST",
        "/api/v1/notes",
        Some(&other),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(
        &app,
        "GET",
        "/api/v1/notes?facility_id=F1",
        Some(&other),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let edit = json!({ "version": 1, "start_ms": 1500, "body": "x" });
    let (s, _) = send(
        &app,
        "PUT",
        &format!("/api/v1/notes/{id}"),
        Some(&other),
        Some(edit),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Never on a privileged call (refused and audited), never a bad moment or no text.
    let privileged = json!({ "session_id": "p1", "start_ms": 0, "body": "x" });
    let (s, v) = send(&app, "POST", "/api/v1/notes", Some(&a), Some(privileged)).await;
    assert_eq!((s, err_code(&v)), (StatusCode::FORBIDDEN, "privileged"));
    assert!(audit(&app)
        .await
        .iter()
        .any(|e| e["action"] == "note.refused" && e["target"] == "p1"));
    for bad in [
        json!({ "session_id": "s1", "start_ms": -1, "body": "x" }),
        json!({ "session_id": "s1", "start_ms": 10, "end_ms": 5, "body": "x" }),
        json!({ "session_id": "s1", "start_ms": 10, "body": " " }),
        json!({ "session_id": "s1", "start_ms": 10, "body": "x".repeat(1001) }),
    ] {
        let (s, v) = send(&app, "POST", "/api/v1/notes", Some(&a), Some(bad.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    let (s, _) = send(
        &app,
        "POST",
        "/api/v1/notes",
        Some(&a),
        Some(json!({ "session_id": "nope", "start_ms": 0, "body": "x" })),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // An edit by another investigator appends a version; an edit of a stale version is
    // refused.
    let edit = json!({ "version": 1, "start_ms": 1700, "end_ms": 4000, "body": "Mentions the red car and a name" });
    let (s, v) = send(
        &app,
        "PUT",
        &format!("/api/v1/notes/{id}"),
        Some(&b),
        Some(edit.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["version"].as_i64(), v["updated_by"].as_str()),
        (Some(2), Some("inv1b"))
    );
    assert_eq!(
        (v["start_ms"].as_i64(), v["created_by"].as_str()),
        (Some(1700), Some("inv1"))
    );
    let (s, v) = send(
        &app,
        "PUT",
        &format!("/api/v1/notes/{id}"),
        Some(&a),
        Some(edit),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // A delete is a tombstone: the note leaves the lists, its versions stay.
    let (s, v) = send(
        &app,
        "DELETE",
        &format!("/api/v1/notes/{id}?version=1"),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = send(
        &app,
        "DELETE",
        &format!("/api/v1/notes/{id}?version=2"),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["version"].as_i64(), v["deleted"].as_bool()),
        (Some(3), Some(true))
    );
    let (s, v) = send(&app, "GET", "/api/v1/notes?session_id=s1", Some(&b), None).await;
    assert_eq!((s, ids(&v).len()), (StatusCode::OK, 0), "{v}");
    let (s, v) = send(&app, "GET", &format!("/api/v1/notes/{id}"), Some(&b), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let versions: Vec<(i64, &str, bool, &str)> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["version"].as_i64().unwrap(),
                x["body"].as_str().unwrap(),
                x["deleted"].as_bool().unwrap(),
                x["author"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            (1, "Mentions the red car", false, "inv1"),
            (2, "Mentions the red car and a name", false, "inv1b"),
            (3, "Mentions the red car and a name", true, "inv1"),
        ]
    );
    let (s, _) = send(
        &app,
        "PUT",
        &format!("/api/v1/notes/{id}"),
        Some(&a),
        Some(json!({ "version": 3, "start_ms": 0, "body": "back" })),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "a deleted note stays deleted");
    // Every change is in the audit log, naming the note, its session and the version.
    let trail: Vec<(String, i64, String)> = audit(&app)
        .await
        .iter()
        .filter(|e| e["target"] == id.as_str())
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["detail"]["version"].as_i64().unwrap(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut trail = trail;
    trail.reverse();
    assert_eq!(
        trail,
        [
            ("note.create".to_string(), 1, "inv1".to_string()),
            ("note.edit".to_string(), 2, "inv1b".to_string()),
            ("note.delete".to_string(), 3, "inv1".to_string()),
        ]
    );
    let (s, v) = admin(&app, "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The versions cannot be changed or removed behind the API's back.
    let pool = app.t.db.pool();
    let changed = sqlx::query("UPDATE note_versions SET body = 'x' WHERE note_id = $1")
        .bind(&id)
        .execute(pool)
        .await;
    assert!(changed.is_err(), "note versions are append-only");
    let removed = sqlx::query("DELETE FROM notes WHERE id = $1")
        .bind(&id)
        .execute(pool)
        .await;
    assert!(removed.is_err(), "notes are never deleted");
    app.t.cleanup().await;
}

/// Records name people: the inmate, booking number, contact, the facility's zone and the
/// talk time; found by name, sorted by time, duration and amount; who terminated a call.
async fn people(app: App) {
    let inmate = calls(&app).await;
    let (s, v) = admin(
        &app,
        "POST",
        &format!("/api/v1/inmates/{inmate}/contacts"),
        Some(json!({ "number": "+15551230002", "name": "Jane Roe", "relationship": "sister" })),
    )
    .await;
    assert!(s.is_success(), "{v}");
    // As the call flow writes it for an approved number.
    sqlx::query("UPDATE sessions SET contact_id = $1 WHERE id = 's2'")
        .bind(v["id"].as_str().unwrap())
        .execute(app.t.db.pool())
        .await
        .unwrap();
    let (s, v) = admin(
        &app,
        "PUT",
        &format!("/api/v1/inmates/{inmate}/housing-unit"),
        Some(json!({ "housing_unit": "C-Block" })),
    )
    .await;
    assert!(s.is_success(), "{v}");
    user(&app, "inv1", &["F1"]).await;
    let a = session(&app, "inv1").await;
    for (query, expect) in [
        ("inmate_name=jo%20do", vec!["p1", "s2", "s1"]),
        (
            "inmate_name=DOE&sort=time&order=asc",
            vec!["s1", "s2", "p1"],
        ),
        ("inmate_name=doe&sort=duration", vec!["p1", "s2", "s1"]),
        (
            "inmate_name=doe&sort=amount&order=asc",
            vec!["s1", "s2", "p1"],
        ),
        ("inmate_name=smith", vec![]),
        ("inmate_name=%25", vec![]),
        ("name=john&booking_number=B-1", vec!["p1", "s2", "s1"]),
    ] {
        let (s, v) = send(
            &app,
            "GET",
            &format!("/api/v1/calls?{query}"),
            Some(&a),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{query}: {v}");
        assert_eq!(ids(&v["items"]), expect, "{query}");
    }
    for bad in ["sort=name", "order=up"] {
        let (s, v) = send(&app, "GET", &format!("/api/v1/calls?{bad}"), Some(&a), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (s, c) = send(&app, "GET", "/api/v1/calls/s1", Some(&a), None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["inmate_name"], "John Doe");
    assert_eq!(c["booking_number"], "B-1");
    assert_eq!(c["housing_unit"], "C-Block");
    assert_eq!(c["contact_name"], Value::Null);
    assert_eq!(c["time_zone"], "America/Chicago");
    assert_eq!(c["duration_secs"], 30);
    assert_eq!(c["terminated_by"], Value::Null);
    // A number on no list: no contact, the number stands.
    assert_eq!(c["number"], "+15551230001");
    let (_, c2) = send(&app, "GET", "/api/v1/calls/s2", Some(&a), None).await;
    assert_eq!(
        (
            c2["contact_name"].as_str(),
            c2["contact_relationship"].as_str()
        ),
        (Some("Jane Roe"), Some("sister")),
        "{c2}"
    );
    // Who terminated a live call goes on its record.
    live_call(&app, "live1", "F1", true, false).await;
    app.store.set_terminated_by("live1", "inv1").await.unwrap();
    app.store
        .set_terminated_by("live1", "someone-else")
        .await
        .unwrap();
    let (s, c) = send(&app, "GET", "/api/v1/calls/live1", Some(&a), None).await;
    assert_eq!(
        (s, c["terminated_by"].as_str()),
        (StatusCode::OK, Some("inv1")),
        "{c}"
    );
    app.store.set_terminated_by("s2", "inv1").await.unwrap();
    let (_, c) = send(&app, "GET", "/api/v1/calls/s2", Some(&a), None).await;
    assert_eq!(
        c["terminated_by"],
        Value::Null,
        "not on a call that ended otherwise"
    );
    app.t.cleanup().await;
}

/// What a player actually played is audited (`recording.heard`, the ranges and their
/// total), within the recording's facility, never for a privileged call.
async fn heard(app: App) {
    calls(&app).await;
    let (rec, _) = inproc::recording(&app, "s1", "F1", 16000 * 20, true).await;
    user(&app, "inv1", &["F1"]).await;
    user(&app, "inv2", &["F2"]).await;
    let (a, other) = (session(&app, "inv1").await, session(&app, "inv2").await);
    let path = format!("/api/v1/recordings/{rec}/heard");
    let body =
        json!({ "ranges": [{ "from_ms": 0, "to_ms": 2500 }, { "from_ms": 8000, "to_ms": 9000 }] });
    let (s, v) = send(&app, "POST", &path, Some(&a), Some(body.clone())).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let entry = audit(&app)
        .await
        .into_iter()
        .find(|e| e["action"] == "recording.heard")
        .unwrap();
    assert_eq!(entry["actor"], "inv1");
    assert_eq!(entry["target"], rec.as_str());
    assert_eq!(entry["detail"]["total_ms"], 3500);
    assert_eq!(entry["detail"]["ranges"], body["ranges"]);
    assert_eq!(entry["detail"]["session_id"], "s1");
    let (s, _) = send(&app, "POST", &path, Some(&other), Some(body)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for bad in [
        json!({ "ranges": [] }),
        json!({ "ranges": [{ "from_ms": 5, "to_ms": 1 }] }),
        json!({ "ranges": [{ "from_ms": -1, "to_ms": 1 }] }),
    ] {
        let (s, v) = send(&app, "POST", &path, Some(&a), Some(bad.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    app.t.cleanup().await;
}

battery!(notes, people, heard);
