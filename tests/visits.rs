//! Video visit scheduling through the real router (`tower::ServiceExt::oneshot`), on
//! SQLite and PostgreSQL: every rule's refusal and its code, double booking, station
//! capacity, the weekly limit, the transitions (approve, deny, cancel, no-show), who sees
//! what (family and kiosk tokens), the audit entries, and races for the last place: many
//! tasks on one node, and on PostgreSQL two nodes (two independent pools on one database).
//!
//! The clock stands at Monday 2026-03-02 12:00 in Chicago (18:00 UTC), where the test
//! facility is; visits are asked for in Chicago time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use sallyport::api::{router, AppState};
use sallyport::clock::Clock;
use sallyport::config::Config;
use sallyport::db::{Backend, Db};
use sallyport::store::Store;
use serde_json::{json, Value};
use std::sync::Arc;
use support::inproc::{self, admin, err_code, fetch, json_of, request, send, App, Setup};
use tower::ServiceExt;

const ADMIN: &str = "visits-admin-token";
const FID: &str = "F1";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).app(backend).await
}

/// Local time in Chicago on 2026-03-`day`, as RFC 3339 UTC.
fn at(day: u32, h: u32, m: u32) -> String {
    local(day, h, m).to_rfc3339()
}

fn local(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    chrono_tz::America::Chicago
        .with_ymd_and_hms(2026, 3, day, h, m, 0)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// Rules: every day 09:00-17:00, 30 or 60 minutes on the half hour, an hour's notice, two
/// weeks ahead, no weekly limit; `approval` as given.
fn rules(approval: &str) -> Value {
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let windows: Vec<Value> = days
        .iter()
        .map(|d| json!({ "day": d, "start": "09:00", "end": "17:00" }))
        .collect();
    json!({ "approval": approval, "windows": windows, "slot_lengths_minutes": [30, 60],
            "start_step_minutes": 30, "min_notice_minutes": 60, "max_days_ahead": 14 })
}

async fn ok(app: &App, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = admin(app, method, path, body).await;
    assert!(s.is_success(), "{method} {path}: {s} {v}");
    v
}

async fn set_rules(app: &App, fid: &str, r: Value) {
    ok(
        app,
        "PUT",
        &format!("/api/v1/facilities/{fid}/visiting-rules"),
        Some(r),
    )
    .await;
}

/// A station of `unit` with `capacity`; its id.
async fn station(app: &App, fid: &str, name: &str, unit: &str, capacity: i64) -> String {
    let body = json!({ "name": name, "housing_unit": unit, "capacity": capacity });
    let path = format!("/api/v1/facilities/{fid}/visit-stations");
    let v = ok(app, "POST", &path, Some(body)).await;
    v["id"].as_str().unwrap().to_string()
}

/// An inmate booked into `fid` in `unit`; its id.
async fn inmate(app: &App, fid: &str, booking: &str, unit: Option<&str>) -> String {
    let body = json!({ "booking_number": booking, "first_name": "John", "last_name": booking,
                       "housing_unit": unit });
    let v = ok(
        app,
        "POST",
        &format!("/api/v1/facilities/{fid}/inmates"),
        Some(body),
    )
    .await;
    v["id"].as_str().unwrap().to_string()
}

/// A contact of `inmate`, approved unless `approve` is false; its id.
async fn contact(app: &App, inmate: &str, number: &str, extra: Value, approve: bool) -> String {
    let mut body = json!({ "number": number, "name": "Jane Visitor", "video_allowed": true });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let c = ok(
        app,
        "POST",
        &format!("/api/v1/inmates/{inmate}/contacts"),
        Some(body),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_string();
    if approve {
        ok(app, "POST", &format!("/api/v1/contacts/{id}/approve"), None).await;
    }
    id
}

/// A token of `role` for `fid` with a binding (`contacts` or `station_id`) as given.
async fn token(app: &App, username: &str, role: &str, fid: &str, binding: Value) -> String {
    let mut body = json!({ "username": username, "role": role, "facilities": [fid],
                           "ttl_secs": 14 * 86_400 });
    for (k, v) in binding.as_object().unwrap() {
        body[k] = v.clone();
    }
    let v = ok(app, "POST", "/api/v1/tokens", Some(body)).await;
    v["token"].as_str().unwrap().to_string()
}

fn visit(inmate: &str, contact: &str, starts_at: &str, len: i64) -> Value {
    json!({ "inmate_id": inmate, "contact_id": contact, "starts_at": starts_at, "length_minutes": len })
}

async fn book(app: &App, token: &str, body: Value) -> (StatusCode, Value) {
    send(app, "POST", "/api/v1/visits", Some(token), Some(body)).await
}

/// The facility with the default rules (`approval`), a station "Kiosk A" (unit A,
/// capacity 1), an inmate in unit A and an approved, video-allowed contact.
struct World {
    station: String,
    inmate: String,
    contact: String,
}

async fn world(app: &App, approval: &str) -> World {
    inproc::facility(app, FID).await;
    set_rules(app, FID, rules(approval)).await;
    let station = station(app, FID, "Kiosk A", "A", 1).await;
    let inmate = inmate(app, FID, "B-1", Some("A")).await;
    let contact = contact(app, &inmate, "5551230001", json!({}), true).await;
    World {
        station,
        inmate,
        contact,
    }
}

async fn audit_actions(app: &App) -> Vec<String> {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=500", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut a: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    a.reverse();
    a
}

async fn visit_count(app: &App) -> i64 {
    let (s, v) = admin(app, "GET", "/api/v1/visits", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["total"].as_i64().unwrap()
}

fn expect(got: (StatusCode, Value), status: StatusCode, code: &str) -> Value {
    assert_eq!((got.0, err_code(&got.1)), (status, code), "{}", got.1);
    got.1
}

// ---------------------------------------------------------------------------------------

/// Every rule refuses with its own code (422), changes nothing and audits nothing.
async fn every_rule_has_its_own_refusal(app: App) {
    let w = world(&app, "auto").await;
    let (i, c) = (w.inmate.as_str(), w.contact.as_str());
    let before = (visit_count(&app).await, audit_actions(&app).await.len());
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let refused = |body: Value, code: &'static str| {
        let app = &app;
        async move { expect(book(app, ADMIN, body).await, unprocessable, code) }
    };
    // The rules' own checks.
    refused(visit(i, c, &at(3, 10, 0), 45), "slot_length_invalid").await;
    refused(visit(i, c, &at(3, 10, 15), 30), "slot_start_invalid").await;
    refused(visit(i, c, &at(2, 12, 30), 30), "notice_too_short").await;
    refused(visit(i, c, &at(1, 10, 0), 30), "notice_too_short").await;
    refused(visit(i, c, &at(17, 10, 0), 30), "too_far_ahead").await;
    refused(visit(i, c, "9999-12-31T23:30:00Z", 30), "too_far_ahead").await;
    refused(visit(i, c, "+262142-12-31T23:30:00Z", 30), "too_far_ahead").await;
    let v = refused(visit(i, c, &at(3, 16, 30), 60), "outside_visiting_hours").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("America/Chicago"),
        "{v}"
    );
    refused(visit(i, c, &at(3, 8, 0), 30), "outside_visiting_hours").await;
    // The contact's approval and video permission.
    let pending = contact(&app, i, "5551230002", json!({}), false).await;
    refused(
        visit(i, &pending, &at(3, 10, 0), 30),
        "contact_not_approved",
    )
    .await;
    let audio = contact(
        &app,
        i,
        "5551230003",
        json!({ "video_allowed": false }),
        true,
    )
    .await;
    refused(visit(i, &audio, &at(3, 10, 0), 30), "video_not_allowed").await;
    // Another inmate's contact is no contact of this one.
    let other = inmate(&app, FID, "B-2", Some("A")).await;
    let theirs = contact(&app, &other, "5551230004", json!({}), true).await;
    refused(visit(i, &theirs, &at(3, 10, 0), 30), "invalid").await;
    // Stations: retired, another housing unit, none in the unit.
    let b = station(&app, FID, "Kiosk B", "B", 1).await;
    let mut body = visit(i, c, &at(3, 10, 0), 30);
    body["station_id"] = json!(b);
    refused(body.clone(), "station_not_in_housing_unit").await;
    ok(
        &app,
        "DELETE",
        &format!("/api/v1/visit-stations/{}", w.station),
        None,
    )
    .await;
    refused(visit(i, c, &at(3, 10, 0), 30), "no_station").await;
    body["station_id"] = json!(w.station);
    refused(body, "station_inactive").await;
    ok(
        &app,
        "PATCH",
        &format!("/api/v1/visit-stations/{}", w.station),
        Some(json!({ "active": true })),
    )
    .await;
    // An inmate who is not active.
    ok(&app, "POST", &format!("/api/v1/inmates/{i}/suspend"), None).await;
    refused(visit(i, c, &at(3, 10, 0), 30), "inmate_inactive").await;
    ok(
        &app,
        "POST",
        &format!("/api/v1/inmates/{i}/reinstate"),
        None,
    )
    .await;
    // A facility without rules takes no visits.
    ok(
        &app,
        "DELETE",
        &format!("/api/v1/facilities/{FID}/visiting-rules"),
        None,
    )
    .await;
    refused(visit(i, c, &at(3, 10, 0), 30), "no_visiting_rules").await;
    set_rules(&app, FID, rules("auto")).await;
    // Nothing was booked by any of it; only the set-up was audited.
    assert_eq!(visit_count(&app).await, before.0);
    let actions = audit_actions(&app).await;
    assert!(
        !actions[before.1..].iter().any(|a| a.starts_with("visit.")),
        "{actions:?}"
    );
    // The same request, fixed, passes.
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(3, 10, 0), 30)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "approved");
    assert_eq!(v["station_name"], "Kiosk A");
    assert_eq!(v["length_minutes"], 30);
    assert_eq!(
        v["starts_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(local(3, 10, 0))
    );
    // Bad bodies are 4xx too.
    let (s, _) = book(&app, ADMIN, json!({ "inmate_id": i })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let mut bad_time = visit(i, c, "tomorrow at ten", 30);
    expect(
        book(&app, ADMIN, bad_time.clone()).await,
        unprocessable,
        "invalid_json",
    );
    bad_time["starts_at"] = json!(at(3, 10, 0));
    bad_time["colour"] = json!("red");
    expect(
        book(&app, ADMIN, bad_time).await,
        unprocessable,
        "invalid_json",
    );
    expect(
        book(&app, ADMIN, visit("inm_nobody", c, &at(3, 10, 0), 30)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    app.t.cleanup().await;
}

/// The weekly limit counts pending, approved and no-show visits of the facility-local
/// week (Monday to Sunday); a cancelled visit gives its place back.
async fn the_weekly_limit(app: App) {
    let w = world(&app, "auto").await;
    let mut r = rules("auto");
    r["visits_per_week"] = json!(2);
    set_rules(&app, FID, r).await;
    let (i, c) = (w.inmate.as_str(), w.contact.as_str());
    let first = book(&app, ADMIN, visit(i, c, &at(3, 10, 0), 30)).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let second = book(&app, ADMIN, visit(i, c, &at(4, 10, 0), 30)).await;
    assert_eq!(second.0, StatusCode::CREATED, "{}", second.1);
    // Sunday the 8th is still the week of Monday the 2nd.
    let v = expect(
        book(&app, ADMIN, visit(i, c, &at(8, 16, 0), 30)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "weekly_limit_reached",
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2026-03-02"),
        "{v}"
    );
    // Monday the 9th begins another.
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(9, 10, 0), 30)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // A cancelled visit gives its place back.
    let id = first.1["id"].as_str().unwrap();
    ok(&app, "POST", &format!("/api/v1/visits/{id}/cancel"), None).await;
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(8, 16, 0), 30)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    app.t.cleanup().await;
}

/// An inmate is never in two visits at once; a station hosts at most its capacity; the
/// inmate's housing unit's stations are tried in name order when none is named.
async fn double_booking_and_capacity(app: App) {
    let w = world(&app, "auto").await;
    let (i, c) = (w.inmate.as_str(), w.contact.as_str());
    let wide = station(&app, FID, "Room W", "W", 2).await;
    ok(
        &app,
        "PUT",
        &format!("/api/v1/inmates/{i}/housing-unit"),
        Some(json!({ "housing_unit": "W" })),
    )
    .await;
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(3, 10, 0), 60)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["station_id"], json!(wide));
    // The same inmate, overlapping by half an hour, at the station's second place.
    expect(
        book(&app, ADMIN, visit(i, c, &at(3, 10, 30), 30)).await,
        StatusCode::CONFLICT,
        "inmate_double_booked",
    );
    // Right after is fine.
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(3, 11, 0), 30)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Two other inmates of the unit share the station's two places; a third finds none.
    let mut others = Vec::new();
    for n in 2..=4 {
        let o = inmate(&app, FID, &format!("B-{n}"), Some("W")).await;
        let oc = contact(&app, &o, &format!("555123100{n}"), json!({}), true).await;
        others.push((o, oc));
    }
    let (s, v) = book(
        &app,
        ADMIN,
        visit(&others[0].0, &others[0].1, &at(3, 10, 30), 30),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let v = expect(
        book(
            &app,
            ADMIN,
            visit(&others[1].0, &others[1].1, &at(3, 10, 30), 30),
        )
        .await,
        StatusCode::CONFLICT,
        "station_full",
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Room W"),
        "{v}"
    );
    // Half an hour earlier, one of its two places is free.
    let (s, v) = book(
        &app,
        ADMIN,
        visit(&others[2].0, &others[2].1, &at(3, 10, 0), 30),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    ok(
        &app,
        "POST",
        &format!("/api/v1/visits/{}/cancel", v["id"].as_str().unwrap()),
        None,
    )
    .await;
    // A second station in the unit takes the overflow; then both are full.
    let second = station(&app, FID, "Room X", "W", 1).await;
    let (s, v) = book(
        &app,
        ADMIN,
        visit(&others[1].0, &others[1].1, &at(3, 10, 30), 30),
    )
    .await;
    assert_eq!(
        (s, v["station_id"].clone()),
        (StatusCode::CREATED, json!(second)),
        "{v}"
    );
    expect(
        book(
            &app,
            ADMIN,
            visit(&others[2].0, &others[2].1, &at(3, 10, 30), 30),
        )
        .await,
        StatusCode::CONFLICT,
        "no_station_free",
    );
    // A lower capacity keeps what is booked and refuses what would pass it.
    ok(
        &app,
        "PATCH",
        &format!("/api/v1/visit-stations/{wide}"),
        Some(json!({ "capacity": 1 })),
    )
    .await;
    let mut body = visit(&others[2].0, &others[2].1, &at(3, 10, 30), 30);
    body["station_id"] = json!(wide);
    expect(
        book(&app, ADMIN, body).await,
        StatusCode::CONFLICT,
        "station_full",
    );
    let (s, v) = admin(
        &app,
        "GET",
        &format!("/api/v1/visits?station_id={wide}"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["total"].as_i64()),
        (StatusCode::OK, Some(4)),
        "the cancelled one too: {v}"
    );
    app.t.cleanup().await;
}

/// Approve, deny, cancel and no-show, each from the statuses it may leave; the others are
/// 409 with the reason; denied and cancelled visits free their places; each change is
/// audited.
async fn transitions(app: App) {
    let w = world(&app, "staff").await;
    let (i, c) = (w.inmate.as_str(), w.contact.as_str());
    let family = token(&app, "jane", "family", FID, json!({ "contacts": [c] })).await;
    // A family request waits for staff; it holds its place meanwhile.
    let (s, v) = book(&app, &family, visit(i, c, &at(3, 10, 0), 30)).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::CREATED, Some("pending")),
        "{v}"
    );
    assert_eq!(
        (v["requested_by"].as_str(), v["requested_role"].as_str()),
        (Some("jane"), Some("family"))
    );
    let pending = v["id"].as_str().unwrap().to_string();
    expect(
        book(&app, ADMIN, visit(i, c, &at(3, 10, 0), 30)).await,
        StatusCode::CONFLICT,
        "inmate_double_booked",
    );
    // Staff book at once, approved.
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(4, 10, 0), 30)).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::CREATED, Some("approved")),
        "{v}"
    );
    let approved = v["id"].as_str().unwrap().to_string();
    let change = |id: &str, what: &str| {
        let app = &app;
        let path = format!("/api/v1/visits/{id}/{what}");
        async move { admin(app, "POST", &path, None).await }
    };
    // Pending: approve. Then neither approve nor deny again.
    let (s, v) = change(&pending, "approve").await;
    assert_eq!(
        (s, v["status"].as_str(), v["decided_by"].as_str()),
        (StatusCode::OK, Some("approved"), Some("admin")),
        "{v}"
    );
    let v = expect(
        change(&pending, "approve").await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    assert_eq!(
        v["error"]["message"],
        "a visit that is approved cannot be approved"
    );
    expect(
        change(&pending, "deny").await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    // A no-show only from the start.
    expect(
        change(&approved, "no-show").await,
        StatusCode::CONFLICT,
        "visit_not_started",
    );
    // The family cancels its own; the place is free again.
    let (s, v) = send(
        &app,
        "POST",
        &format!("/api/v1/visits/{pending}/cancel"),
        Some(&family),
        None,
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str(), v["closed_by"].as_str()),
        (StatusCode::OK, Some("cancelled"), Some("jane")),
        "{v}"
    );
    expect(
        change(&pending, "cancel").await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    expect(
        change(&pending, "approve").await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    let (s, v) = book(&app, &family, visit(i, c, &at(3, 10, 0), 30)).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the cancelled visit's place is free: {v}"
    );
    // Denied: free too, and final.
    let again = v["id"].as_str().unwrap().to_string();
    let (s, v) = change(&again, "deny").await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("denied")),
        "{v}"
    );
    expect(
        change(&again, "approve").await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(3, 10, 0), 30)).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the denied visit's place is free: {v}"
    );
    // At the start of the approved visit: a no-show, which is final and keeps its place.
    app.clock.set_wall(local(4, 10, 0));
    let (s, v) = change(&approved, "no-show").await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("no_show")),
        "{v}"
    );
    expect(
        change(&approved, "cancel").await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    // Once a slot is over it cannot be cancelled.
    let (_, v) = book(&app, ADMIN, visit(i, c, &at(4, 12, 0), 30)).await;
    let later = v["id"].as_str().unwrap().to_string();
    app.clock.set_wall(local(4, 12, 30));
    expect(
        change(&later, "cancel").await,
        StatusCode::CONFLICT,
        "visit_over",
    );
    // Families neither approve, deny nor mark no-shows.
    for what in ["approve", "deny", "no-show"] {
        let path = format!("/api/v1/visits/{later}/{what}");
        expect(
            send(&app, "POST", &path, Some(&family), None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    expect(
        change("vis_nothing", "approve").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let visits: Vec<String> = audit_actions(&app)
        .await
        .into_iter()
        .filter(|a| a.starts_with("visit."))
        .collect();
    assert_eq!(
        visits,
        [
            "visit.request",
            "visit.request",
            "visit.approve",
            "visit.cancel",
            "visit.request",
            "visit.deny",
            "visit.request",
            "visit.no_show",
            "visit.request"
        ]
    );
    let (_, log) = admin(&app, "GET", "/api/v1/audit?limit=1", None).await;
    assert_eq!(log[0]["detail"]["station_id"], json!(w.station), "{log}");
    app.t.cleanup().await;
}

/// Two staff members deciding one pending visit at the same moment: one decision stands.
async fn one_decision_stands(app: App) {
    let w = world(&app, "staff").await;
    let family = token(
        &app,
        "jane",
        "family",
        FID,
        json!({ "contacts": [w.contact] }),
    )
    .await;
    let (s, v) = book(
        &app,
        &family,
        visit(&w.inmate, &w.contact, &at(3, 10, 0), 30),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let paths: Vec<String> = ["approve", "deny", "approve", "deny", "approve", "deny"]
        .iter()
        .map(|a| format!("/api/v1/visits/{id}/{a}"))
        .collect();
    let results = race(
        std::slice::from_ref(&app.router),
        paths.iter().map(|p| (p.clone(), None)).collect(),
    )
    .await;
    let won: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for (s, v) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(
            (*s, err_code(v)),
            (StatusCode::CONFLICT, "invalid_transition"),
            "{v}"
        );
    }
    app.t.cleanup().await;
}

/// A family token reaches only the visits of the contacts it is bound to; a kiosk token
/// only its station's day.
async fn who_sees_what(app: App) {
    let w = world(&app, "auto").await;
    let (i, c) = (w.inmate.as_str(), w.contact.as_str());
    let c2 = contact(
        &app,
        i,
        "5551230009",
        json!({ "name": "Someone Else" }),
        true,
    )
    .await;
    let jane = token(&app, "jane", "family", FID, json!({ "contacts": [c] })).await;
    let unbound = token(&app, "nobody", "family", FID, json!({})).await;
    let (_, mine) = book(&app, &jane, visit(i, c, &at(3, 10, 0), 30)).await;
    let mine = mine["id"].as_str().unwrap().to_string();
    let (_, theirs) = book(&app, ADMIN, visit(i, &c2, &at(3, 11, 0), 30)).await;
    let theirs = theirs["id"].as_str().unwrap().to_string();
    // Jane books only as her own contact.
    expect(
        book(&app, &jane, visit(i, &c2, &at(3, 12, 0), 30)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        book(&app, &unbound, visit(i, c, &at(3, 12, 0), 30)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // She reads her visit, not the other; lists hold hers only.
    let get = |tok: &str, path: String| {
        let app = &app;
        let tok = tok.to_string();
        async move { send(app, "GET", &path, Some(&tok), None).await }
    };
    assert_eq!(
        get(&jane, format!("/api/v1/visits/{mine}")).await.0,
        StatusCode::OK
    );
    expect(
        get(&jane, format!("/api/v1/visits/{theirs}")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = get(&jane, "/api/v1/visits".into()).await;
    assert_eq!((s, ids(&v)), (StatusCode::OK, vec![mine.clone()]), "{v}");
    let (s, v) = get(&jane, format!("/api/v1/inmates/{i}/visits")).await;
    assert_eq!((s, ids(&v)), (StatusCode::OK, vec![mine.clone()]), "{v}");
    let (s, v) = get(&jane, format!("/api/v1/contacts/{c}/visits")).await;
    assert_eq!((s, ids(&v)), (StatusCode::OK, vec![mine.clone()]), "{v}");
    expect(
        get(&jane, format!("/api/v1/contacts/{c2}/visits")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (s, v) = get(&unbound, "/api/v1/visits".into()).await;
    assert_eq!((s, v["total"].as_i64()), (StatusCode::OK, Some(0)), "{v}");
    expect(
        get(&unbound, format!("/api/v1/inmates/{i}/visits")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // She cancels hers only.
    let cancel = |id: &str| format!("/api/v1/visits/{id}/cancel");
    expect(
        send(&app, "POST", &cancel(&theirs), Some(&jane), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Staff see both, in start order; the admin lists filter.
    let (s, v) = admin(&app, "GET", &format!("/api/v1/inmates/{i}/visits"), None).await;
    assert_eq!(
        (s, ids(&v)),
        (StatusCode::OK, vec![mine.clone(), theirs.clone()]),
        "{v}"
    );
    let (s, v) = admin(&app, "GET", "/api/v1/visits?status=nonsense", None).await;
    assert_eq!(
        (s, err_code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
    let to = local(3, 10, 30).to_rfc3339().replace('+', "%2B");
    let (s, v) = admin(&app, "GET", &format!("/api/v1/visits?to={to}"), None).await;
    assert_eq!((s, ids(&v)), (StatusCode::OK, vec![mine.clone()]), "{v}");
    // Another facility's staff and family reach nothing here.
    inproc::facility(&app, "F2").await;
    let f2_admin = token(&app, "f2-admin", "admin", "F2", json!({})).await;
    expect(
        get(&f2_admin, format!("/api/v1/visits/{mine}")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (s, v) = get(&f2_admin, "/api/v1/visits".into()).await;
    assert_eq!((s, v["total"].as_i64()), (StatusCode::OK, Some(0)), "{v}");
    expect(
        book(&app, &f2_admin, visit(i, c, &at(3, 12, 0), 30)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // A family token cannot be bound to another facility's contact, nor a kiosk to its station.
    let body = json!({ "username": "x", "role": "family", "facilities": ["F2"], "contacts": [c] });
    expect(
        admin(&app, "POST", "/api/v1/tokens", Some(body)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    );
    let body = json!({ "username": "y", "role": "admin", "facilities": [FID], "contacts": [c] });
    expect(
        admin(&app, "POST", "/api/v1/tokens", Some(body)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    );
    let body =
        json!({ "username": "z", "role": "family", "facilities": [FID], "station_id": w.station });
    expect(
        admin(&app, "POST", "/api/v1/tokens", Some(body)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    );
    // Kiosks: the bound one reads its day (approved visits only); another station's is
    // refused, as is an unbound kiosk and the general lists.
    let other = station(&app, FID, "Kiosk Z", "A", 1).await;
    let kiosk = token(
        &app,
        "kiosk-a",
        "kiosk",
        FID,
        json!({ "station_id": w.station }),
    )
    .await;
    let kiosk_z = token(
        &app,
        "kiosk-z",
        "kiosk",
        FID,
        json!({ "station_id": other }),
    )
    .await;
    let lone = token(&app, "kiosk-lone", "kiosk", FID, json!({})).await;
    let today = format!("/api/v1/visit-stations/{}/visits/today", w.station);
    let (s, v) = get(&kiosk, today.clone()).await;
    assert_eq!(
        (s, v["visits"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "nothing today: {v}"
    );
    expect(
        get(&kiosk_z, today.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        get(&lone, today.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        get(&jane, today.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        get(&kiosk, "/api/v1/visits".into()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        get(&kiosk, format!("/api/v1/visits/{mine}")).await.0,
        StatusCode::OK,
        "its station's visit"
    );
    expect(
        book(&app, &kiosk, visit(i, c, &at(3, 12, 0), 30)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // The day comes: the kiosk sees the approved visits of today, staff every status.
    app.clock.set_wall(local(3, 7, 0));
    let (s, v) = book(&app, ADMIN, visit(i, c, &at(3, 9, 0), 30)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, tomorrow) = book(&app, ADMIN, visit(i, c, &at(4, 9, 0), 30)).await;
    assert_eq!(tomorrow["status"], "approved");
    ok(
        &app,
        "POST",
        &format!("/api/v1/visits/{}/cancel", v["id"].as_str().unwrap()),
        None,
    )
    .await;
    let (s, v) = get(&kiosk, today.clone()).await;
    let names = |v: &Value| -> Vec<String> {
        v["visits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                format!(
                    "{} {}",
                    x["status"].as_str().unwrap(),
                    x["visitor_name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let expected = ["approved Jane Visitor", "approved Someone Else"].map(String::from);
    assert_eq!((s, names(&v)), (StatusCode::OK, expected.to_vec()), "{v}");
    assert_eq!(v["station"]["id"], json!(w.station));
    let (s, v) = admin(&app, "GET", &today, None).await;
    assert_eq!(
        (s, names(&v).len()),
        (StatusCode::OK, 3),
        "staff: the cancelled one too: {v}"
    );
    app.t.cleanup().await;
}

/// A visit with an attorney is privileged (never recorded, never watched).
async fn attorney_visits_are_privileged(app: App) {
    let w = world(&app, "auto").await;
    let lawyer = contact(
        &app,
        &w.inmate,
        "5551239999",
        json!({ "privileged": true, "name": "Counsel" }),
        true,
    )
    .await;
    let (s, v) = book(&app, ADMIN, visit(&w.inmate, &lawyer, &at(3, 10, 0), 60)).await;
    assert_eq!(
        (s, v["privileged"].as_bool()),
        (StatusCode::CREATED, Some(true)),
        "{v}"
    );
    let (s, v) = book(&app, ADMIN, visit(&w.inmate, &w.contact, &at(3, 14, 0), 60)).await;
    assert_eq!(
        (s, v["privileged"].as_bool()),
        (StatusCode::CREATED, Some(false)),
        "{v}"
    );
    app.t.cleanup().await;
}

/// The rules and stations: written by admins, checked field by field, audited.
async fn rules_and_stations(app: App) {
    inproc::facility(&app, FID).await;
    let path = format!("/api/v1/facilities/{FID}/visiting-rules");
    expect(
        admin(&app, "GET", &path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, v) = admin(&app, "PUT", &path, Some(rules("staff"))).await;
    assert_eq!(
        (s, v["time_zone"].as_str()),
        (StatusCode::OK, Some("America/Chicago")),
        "{v}"
    );
    assert_eq!(v["windows"].as_array().map(Vec::len), Some(7));
    let (s, v) = admin(&app, "GET", &path, None).await;
    assert_eq!(
        (s, v["approval"].as_str(), v["min_notice_minutes"].as_i64()),
        (StatusCode::OK, Some("staff"), Some(60))
    );
    for (field, value) in [
        ("slot_lengths_minutes", json!([7])),
        ("slot_lengths_minutes", json!([])),
        ("start_step_minutes", json!(0)),
        ("max_days_ahead", json!(0)),
        (
            "windows",
            json!([{ "day": "mon", "start": "12:00", "end": "09:00" }]),
        ),
        (
            "windows.start",
            json!([{ "day": "mon", "start": "9am", "end": "12:00" }]),
        ),
    ] {
        let mut r = rules("staff");
        r[field.split('.').next().unwrap()] = value;
        let v = expect(
            admin(&app, "PUT", &path, Some(r)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        );
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{field}: {v}"
        );
    }
    let mut r = rules("staff");
    r["windows"][0]["day"] = json!("funday");
    expect(
        admin(&app, "PUT", &path, Some(r)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_json",
    );
    // Stations.
    let stations = format!("/api/v1/facilities/{FID}/visit-stations");
    let a = station(&app, FID, "Kiosk A", "A", 2).await;
    let dup = json!({ "name": "Kiosk A", "housing_unit": "B" });
    expect(
        admin(&app, "POST", &stations, Some(dup)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    for bad in [
        json!({ "name": "K", "housing_unit": "A", "capacity": 0 }),
        json!({ "name": "", "housing_unit": "A" }),
        json!({ "name": "K\u{202e}", "housing_unit": "A" }),
    ] {
        expect(
            admin(&app, "POST", &stations, Some(bad)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        );
    }
    let v = ok(
        &app,
        "PATCH",
        &format!("/api/v1/visit-stations/{a}"),
        Some(json!({ "capacity": 3, "name": "Kiosk A1" })),
    )
    .await;
    assert_eq!(
        (v["capacity"].as_i64(), v["name"].as_str()),
        (Some(3), Some("Kiosk A1"))
    );
    let v = ok(&app, "DELETE", &format!("/api/v1/visit-stations/{a}"), None).await;
    assert_eq!(v["active"], false);
    let (s, v) = admin(&app, "GET", &stations, None).await;
    assert_eq!((s, v.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    // Families read the rules (to pick a time) but write nothing.
    let family = token(&app, "jane", "family", FID, json!({})).await;
    assert_eq!(
        send(&app, "GET", &path, Some(&family), None).await.0,
        StatusCode::OK
    );
    expect(
        send(&app, "PUT", &path, Some(&family), Some(rules("auto"))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        send(&app, "GET", &stations, Some(&family), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    ok(&app, "DELETE", &path, None).await;
    expect(
        admin(&app, "DELETE", &path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let actions = audit_actions(&app).await;
    let ours: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("visit"))
        .collect();
    assert_eq!(
        ours,
        [
            "visiting_rules.set",
            "visit_station.create",
            "visit_station.update",
            "visit_station.retire",
            "visiting_rules.delete"
        ]
    );
    app.t.cleanup().await;
}

// --- Races ------------------------------------------------------------------------------

/// Sends every request at once (after a barrier), spreading them over `nodes` in turn;
/// returns the answers in order.
async fn race(
    nodes: &[Router],
    requests: Vec<(String, Option<Value>)>,
) -> Vec<(StatusCode, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::new();
    for (k, (path, body)) in requests.into_iter().enumerate() {
        let node = nodes[k % nodes.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let req = request("POST", &path, Some(ADMIN), body);
            barrier.wait().await;
            let resp = node.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, json_of(&bytes))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Exactly one request won (201) and every other got `code` with `status`.
fn one_winner(results: &[(StatusCode, Value)], status: StatusCode, code: &str) {
    let won = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(won, 1, "{results:?}");
    for (s, v) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!((*s, err_code(v)), (status, code), "{v}");
    }
}

const RACERS: usize = 16;

/// Many requests for the last place, spread over `nodes`: one visit, the rest a clear
/// refusal, for each kind of place (a station's last place, the inmate's time, the last
/// place in the inmate's week).
async fn races_for_the_last_place(app: &App, nodes: &[Router]) {
    set_rules(app, FID, {
        let mut r = rules("auto");
        r["visits_per_week"] = json!(1);
        r
    })
    .await;
    let lone = station(app, FID, "Lone Kiosk", "L", 1).await;
    // 1. Sixteen inmates of unit L, one station with one place, the same half hour.
    let mut bodies = Vec::new();
    for n in 0..RACERS {
        let i = inmate(app, FID, &format!("L-{n}"), Some("L")).await;
        let c = contact(app, &i, &format!("55512320{n:02}"), json!({}), true).await;
        bodies.push(visit(&i, &c, &at(3, 10, 0), 30));
    }
    let reqs = bodies
        .iter()
        .map(|b| ("/api/v1/visits".to_string(), Some(b.clone())))
        .collect();
    one_winner(
        &race(nodes, reqs).await,
        StatusCode::CONFLICT,
        "station_full",
    );
    let (_, v) = admin(
        app,
        "GET",
        &format!("/api/v1/visits?station_id={lone}"),
        None,
    )
    .await;
    assert_eq!(v["total"], 1, "{v}");
    // 2. One inmate, sixteen stations with room, the same half hour.
    let i = inmate(app, FID, "M-1", None).await;
    let c = contact(app, &i, "5551233000", json!({}), true).await;
    let mut reqs = Vec::new();
    for n in 0..RACERS {
        let s = station(app, FID, &format!("Many {n:02}"), "M", 4).await;
        let mut b = visit(&i, &c, &at(5, 14, 0), 60);
        b["station_id"] = json!(s);
        reqs.push(("/api/v1/visits".to_string(), Some(b)));
    }
    one_winner(
        &race(nodes, reqs).await,
        StatusCode::CONFLICT,
        "inmate_double_booked",
    );
    // 3. Another inmate, sixteen different times of one week, a limit of one a week.
    let weekly = station(app, FID, "Week Kiosk", "K", 1).await;
    let j = inmate(app, FID, "M-2", None).await;
    let d = contact(app, &j, "5551233001", json!({}), true).await;
    let reqs = (0..RACERS)
        .map(|n| {
            let (day, hour) = (3 + (n / 4) as u32, 9 + (n % 4) as u32);
            let mut b = visit(&j, &d, &at(day, hour, 0), 30);
            b["station_id"] = json!(weekly);
            ("/api/v1/visits".to_string(), Some(b))
        })
        .collect();
    one_winner(
        &race(nodes, reqs).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "weekly_limit_reached",
    );
    let (_, v) = admin(app, "GET", &format!("/api/v1/inmates/{j}/visits"), None).await;
    assert_eq!(v["total"], 1, "{v}");
    // The winners hold no more rows than they should: the loser's claims were undone.
    let cells: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM visit_station_cells")
        .fetch_one(app.t.db.pool())
        .await
        .unwrap();
    assert_eq!(
        cells,
        6 + 12 + 6,
        "one half hour, one hour, one half hour: {cells}"
    );
}

/// On one node: sixteen tasks.
async fn races_on_one_node(app: App) {
    world(&app, "auto").await;
    races_for_the_last_place(&app, std::slice::from_ref(&app.router)).await;
    app.t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_between_two_nodes_on_one_postgresql() {
    let Some(app) = app(Backend::Postgres).await else {
        return;
    };
    world(&app, "auto").await;
    // A second node: its own pool on the same database, its own store and router.
    let url = app.t.postgres_url().unwrap();
    let db = Db::connect(&url, 10).await.unwrap();
    let mut config = Config::default();
    config.http.admin_token = ADMIN.into();
    config.security.pin_pepper = inproc::PEPPER.into();
    let store = Store::new(
        db.clone(),
        app.clock.clone() as Arc<dyn Clock>,
        inproc::PEPPER,
    );
    let second = router(AppState::new(store, Arc::new(config)));
    races_for_the_last_place(&app, &[app.router.clone(), second]).await;
    db.close().await;
    app.t.cleanup().await;
}

battery!(
    every_rule_has_its_own_refusal,
    the_weekly_limit,
    double_booking_and_capacity,
    transitions,
    one_decision_stands,
    who_sees_what,
    attorney_visits_are_privileged,
    rules_and_stations,
    races_on_one_node
);

/// The visits' routes are in the OpenAPI document with their schemas.
#[tokio::test]
async fn the_openapi_document_describes_visits() {
    let app = app(Backend::Sqlite).await.unwrap();
    let (s, _, bytes) = fetch(&app, request("GET", "/api/v1/openapi.json", None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let doc = json_of(&bytes);
    let post = &doc["paths"]["/visits"]["post"];
    assert_eq!(
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/VisitRequest"
    );
    let statuses = &doc["components"]["schemas"]["Visit"]["properties"]["status"]["enum"];
    assert_eq!(
        statuses,
        &json!(["pending", "approved", "denied", "cancelled", "no_show"])
    );
    let params = doc["paths"]["/inmates/{id}/visits"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(
        params.iter().all(|p| p["name"] != "inmate_id"),
        "{params:?}"
    );
    app.t.cleanup().await;
}
