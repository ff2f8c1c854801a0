//! The two ways into a video visit through the real router, on SQLite and PostgreSQL: the
//! visitor's join link (who gets one, its window on the injected clock, cancelling
//! revokes it, it is no bearer token, a forged one is refused) and the inmate's ID + PIN
//! at the kiosk of the visit's station (right, wrong, another station, outside the window,
//! a locked inmate, and guessing that locks the station as it locks a handset).
//!
//! The clock starts at Monday 2026-03-02 12:00 in Chicago; the visit is on Tuesday the
//! 3rd, 10:00-10:30 Chicago time, and can be joined from 09:45 (the default lead of 15
//! minutes).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use chrono::{DateTime, TimeZone, Utc};
use sallyport::db::Backend;
use serde_json::{json, Value};
use support::inproc::{self, admin, err_code, fetch, json_of, request_with, send, App, Setup};

const ADMIN: &str = "visit-join-admin-token";
const FID: &str = "F1";
const PIN: &str = "97531864";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).app(backend).await
}

fn local(day: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    chrono_tz::America::Chicago
        .with_ymd_and_hms(2026, 3, day, h, m, s)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

async fn ok(app: &App, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = admin(app, method, path, body).await;
    assert!(s.is_success(), "{method} {path}: {s} {v}");
    v
}

fn expect(got: (StatusCode, Value), status: StatusCode, code: &str) -> Value {
    assert_eq!((got.0, err_code(&got.1)), (status, code), "{}", got.1);
    got.1
}

/// A token of `role` for the facility with a binding (`contacts` or `station_id`).
async fn token(app: &App, username: &str, role: &str, binding: Value) -> String {
    let mut body = json!({ "username": username, "role": role, "facilities": [FID],
                           "ttl_secs": 14 * 86_400 });
    for (k, v) in binding.as_object().unwrap() {
        body[k] = v.clone();
    }
    let v = ok(app, "POST", "/api/v1/tokens", Some(body)).await;
    v["token"].as_str().unwrap().to_string()
}

async fn contact(app: &App, inmate: &str, number: &str, name: &str) -> String {
    let body = json!({ "number": number, "name": name, "video_allowed": true });
    let c = ok(
        app,
        "POST",
        &format!("/api/v1/inmates/{inmate}/contacts"),
        Some(body),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_string();
    ok(app, "POST", &format!("/api/v1/contacts/{id}/approve"), None).await;
    id
}

/// A facility with visiting rules (every day 09:00-17:00, 30-minute slots, an hour's
/// notice; `approval` as given), stations A and B (unit A), an inmate "John Doe" in unit
/// A with a PIN, two approved contacts, a family token for each and a kiosk token for
/// each station.
struct World {
    station: String,
    other_station: String,
    inmate: String,
    calling_id: String,
    jane: String,
    joe: String,
    contact: String,
    kiosk: String,
    other_kiosk: String,
}

async fn world(app: &App, approval: &str) -> World {
    inproc::facility(app, FID).await;
    let windows: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({ "day": d, "start": "09:00", "end": "17:00" }))
        .collect();
    let rules = json!({ "approval": approval, "windows": windows, "slot_lengths_minutes": [30],
        "start_step_minutes": 30, "min_notice_minutes": 60, "max_days_ahead": 14 });
    ok(
        app,
        "PUT",
        &format!("/api/v1/facilities/{FID}/visiting-rules"),
        Some(rules),
    )
    .await;
    let mut stations = Vec::new();
    for name in ["Kiosk A", "Kiosk B"] {
        let body = json!({ "name": name, "housing_unit": "A", "capacity": 2 });
        let path = format!("/api/v1/facilities/{FID}/visit-stations");
        let v = ok(app, "POST", &path, Some(body)).await;
        stations.push(v["id"].as_str().unwrap().to_string());
    }
    let body = json!({ "booking_number": "B-1", "first_name": "John", "last_name": "Doe",
                       "housing_unit": "A" });
    let i = ok(
        app,
        "POST",
        &format!("/api/v1/facilities/{FID}/inmates"),
        Some(body),
    )
    .await;
    let inmate = i["id"].as_str().unwrap().to_string();
    let i = ok(
        app,
        "PUT",
        &format!("/api/v1/inmates/{inmate}/pin"),
        Some(json!({ "pin": PIN })),
    )
    .await;
    let calling_id = i["calling_id"].as_str().unwrap().to_string();
    let c = contact(app, &inmate, "5551230001", "Jane Visitor").await;
    let c2 = contact(app, &inmate, "5551230002", "Joe Other").await;
    let jane = token(app, "jane", "family", json!({ "contacts": [c] })).await;
    let joe = token(app, "joe", "family", json!({ "contacts": [c2] })).await;
    let kiosk = token(
        app,
        "kiosk-a",
        "kiosk",
        json!({ "station_id": stations[0] }),
    )
    .await;
    let other_kiosk = token(
        app,
        "kiosk-b",
        "kiosk",
        json!({ "station_id": stations[1] }),
    )
    .await;
    World {
        station: stations[0].clone(),
        other_station: stations[1].clone(),
        inmate,
        calling_id,
        jane,
        joe,
        contact: c,
        kiosk,
        other_kiosk,
    }
}

/// A visit of the world's inmate and Jane on Tuesday the 3rd at `h:m` Chicago time, 30
/// minutes, at station A, booked with `token`; its id.
async fn book(app: &App, w: &World, token: &str, h: u32, m: u32) -> String {
    let body = json!({ "inmate_id": w.inmate, "contact_id": w.contact,
        "starts_at": local(3, h, m, 0).to_rfc3339(), "length_minutes": 30,
        "station_id": w.station });
    let (s, v) = send(app, "POST", "/api/v1/visits", Some(token), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn join_link(app: &App, token: &str, visit: &str) -> (StatusCode, Value) {
    let path = format!("/api/v1/visits/{visit}/join-link");
    send(app, "POST", &path, Some(token), None).await
}

/// The pass of a join link's URL (its fragment).
fn pass_of(link: &Value) -> String {
    let url = link["url"].as_str().unwrap();
    let (page, pass) = url.split_once('#').unwrap();
    assert_eq!(page, "/visit/join", "{url}");
    pass.to_string()
}

/// `GET /visit-session` with `authorization` as the whole header value.
async fn session_with(app: &App, authorization: Option<&str>) -> (StatusCode, Value) {
    let req = request_with("GET", "/api/v1/visit-session", authorization, None);
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

async fn session(app: &App, pass: &str) -> (StatusCode, Value) {
    session_with(app, Some(&format!("Visit {pass}"))).await
}

async fn kiosk_join(
    app: &App,
    token: &str,
    visit: &str,
    calling_id: &str,
    pin: &str,
) -> (StatusCode, Value) {
    let path = format!("/api/v1/visits/{visit}/kiosk-join");
    let body = json!({ "calling_id": calling_id, "pin": pin });
    send(app, "POST", &path, Some(token), Some(body)).await
}

async fn audit_log(app: &App) -> Vec<Value> {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=500", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

async fn pin_attempts(app: &App) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM pin_attempts")
        .fetch_one(app.t.db.pool())
        .await
        .unwrap()
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    v[field].as_str().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------

/// Who gets a join link, and what the visitor page learns with it through the window.
async fn the_join_link_and_its_window(app: App) {
    let w = world(&app, "auto").await;
    let visit = book(&app, &w, ADMIN, 10, 0).await;
    // Jane (bound to the visit's contact) and staff get a link; Joe, a kiosk and an
    // investigator do not.
    let (s, link) = join_link(&app, &w.jane, &visit).await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    assert_eq!(link["visit_id"], json!(visit));
    assert_eq!(link["side"], "visitor");
    assert_eq!(time(&link, "valid_from"), local(3, 9, 45, 0));
    assert_eq!(time(&link, "expires_at"), local(3, 10, 30, 0));
    let pass = pass_of(&link);
    let (s, staff) = join_link(&app, ADMIN, &visit).await;
    assert_eq!(s, StatusCode::CREATED, "{staff}");
    for tok in [&w.joe, &w.kiosk] {
        expect(
            join_link(&app, tok, &visit).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    let inv = inproc::issue(&app, "inv", "investigator", &[FID], None).await;
    expect(
        join_link(&app, &inv, &visit).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        join_link(&app, &w.jane, "vis_nothing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Too early: the day before, and a second before the lead.
    expect(
        session(&app, &pass).await,
        StatusCode::CONFLICT,
        "link_not_yet_valid",
    );
    app.clock.set_wall(local(3, 9, 44, 59));
    expect(
        session(&app, &pass).await,
        StatusCode::CONFLICT,
        "link_not_yet_valid",
    );
    // From the lead: the lobby, with the time to the slot.
    app.clock.set_wall(local(3, 9, 45, 0));
    let (s, v) = session(&app, &pass).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["visit_id"], json!(visit));
    assert_eq!(v["side"], "visitor");
    assert_eq!(v["status"], "approved");
    assert_eq!(v["opens_in_secs"], 900);
    assert_eq!(v["ends_in_secs"], 2_700);
    assert_eq!(v["inmate_name"], "John D.");
    assert_eq!(v["visitor_pays"], false);
    assert_eq!(v["recorded"], true);
    assert_eq!(time(&v, "slot_start"), local(3, 10, 0, 0));
    assert_eq!(time(&v, "slot_end"), local(3, 10, 30, 0));
    assert!(!v.to_string().contains("Doe"), "{v}");
    // In the slot; its last second; then expired.
    app.clock.set_wall(local(3, 10, 10, 0));
    let (s, v) = session(&app, &pass).await;
    assert_eq!((s, v["opens_in_secs"].as_i64()), (StatusCode::OK, Some(0)));
    app.clock.set_wall(local(3, 10, 29, 59));
    assert_eq!(session(&app, &pass).await.0, StatusCode::OK);
    app.clock.set_wall(local(3, 10, 30, 0));
    expect(
        session(&app, &pass).await,
        StatusCode::UNAUTHORIZED,
        "link_expired",
    );
    // No new link once the slot is over.
    expect(
        join_link(&app, &w.jane, &visit).await,
        StatusCode::CONFLICT,
        "visit_over",
    );
    // Each link issued was audited, without the pass.
    let log = audit_log(&app).await;
    let issued: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "visit.join_link")
        .collect();
    assert_eq!(issued.len(), 2, "{log:?}");
    assert!(issued.iter().all(|e| e["target"] == json!(visit)));
    assert!(!serde_json::to_string(&log).unwrap().contains(&pass));
    app.t.cleanup().await;
}

/// A pass is good for its visit and nothing else: not as a bearer token, not forged,
/// not in another header.
async fn the_pass_is_no_token_and_cannot_be_forged(app: App) {
    let w = world(&app, "auto").await;
    let visit = book(&app, &w, ADMIN, 10, 0).await;
    let pass = pass_of(&join_link(&app, &w.jane, &visit).await.1);
    app.clock.set_wall(local(3, 10, 0, 0));
    assert_eq!(session(&app, &pass).await.0, StatusCode::OK);
    // As a bearer token, on the visit itself and elsewhere: 401.
    for path in [
        format!("/api/v1/visits/{visit}"),
        "/api/v1/auth/me".to_string(),
        "/api/v1/visits".to_string(),
        format!("/api/v1/inmates/{}", w.inmate),
    ] {
        expect(
            send(&app, "GET", &path, Some(&pass), None).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    expect(
        send(
            &app,
            "POST",
            &format!("/api/v1/visits/{visit}/cancel"),
            Some(&pass),
            None,
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // Tampered, truncated, garbage, a bearer token, no header: link_invalid.
    let mut flipped = pass.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let truncated = &pass[..pass.len() - 2];
    let long = "ab".repeat(10_000);
    for bad in [
        flipped.as_str(),
        truncated,
        "garbage",
        "00.00",
        long.as_str(),
    ] {
        expect(
            session(&app, bad).await,
            StatusCode::UNAUTHORIZED,
            "link_invalid",
        );
    }
    for header in [
        None,
        Some(format!("Bearer {pass}")),
        Some(format!("Bearer {}", w.jane)),
        Some("Visit ".to_string()),
        Some(pass.clone()),
    ] {
        expect(
            session_with(&app, header.as_deref()).await,
            StatusCode::UNAUTHORIZED,
            "link_invalid",
        );
    }
    // A family token is no pass either.
    expect(
        session(&app, &w.jane).await,
        StatusCode::UNAUTHORIZED,
        "link_invalid",
    );
    app.t.cleanup().await;
}

/// Cancelling a visit revokes its links; a visit not approved gets none.
async fn cancelling_revokes_the_link(app: App) {
    let w = world(&app, "staff").await;
    let visit = book(&app, &w, ADMIN, 10, 0).await;
    let pass = pass_of(&join_link(&app, &w.jane, &visit).await.1);
    // Pending (Jane's own request, the facility approves by staff): no link.
    let pending = book(&app, &w, &w.jane, 11, 0).await;
    expect(
        join_link(&app, &w.jane, &pending).await,
        StatusCode::CONFLICT,
        "visit_not_open",
    );
    app.clock.set_wall(local(3, 9, 50, 0));
    assert_eq!(session(&app, &pass).await.0, StatusCode::OK);
    let (s, v) = send(
        &app,
        "POST",
        &format!("/api/v1/visits/{visit}/cancel"),
        Some(&w.jane),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    expect(
        session(&app, &pass).await,
        StatusCode::CONFLICT,
        "visit_cancelled",
    );
    expect(
        join_link(&app, &w.jane, &visit).await,
        StatusCode::CONFLICT,
        "visit_cancelled",
    );
    // The kiosk cannot join it either, and no PIN was asked.
    let before = pin_attempts(&app).await;
    expect(
        kiosk_join(&app, &w.kiosk, &visit, &w.calling_id, PIN).await,
        StatusCode::CONFLICT,
        "visit_cancelled",
    );
    assert_eq!(pin_attempts(&app).await, before);
    app.t.cleanup().await;
}

/// The inmate confirms at the kiosk of the visit's station with ID and PIN: right,
/// wrong, another station, outside the window, a body that is no keypad's.
async fn the_kiosk_confirms_with_id_and_pin(app: App) {
    let w = world(&app, "auto").await;
    let visit = book(&app, &w, ADMIN, 10, 0).await;
    let id = w.calling_id.as_str();
    // Before the window: refused, and the PIN is not even compared.
    expect(
        kiosk_join(&app, &w.kiosk, &visit, id, PIN).await,
        StatusCode::CONFLICT,
        "visit_not_open",
    );
    assert_eq!(pin_attempts(&app).await, 0);
    app.clock.set_wall(local(3, 9, 50, 0));
    // Another station's kiosk, a family token, staff: not here.
    expect(
        kiosk_join(&app, &w.other_kiosk, &visit, id, PIN).await,
        StatusCode::FORBIDDEN,
        "wrong_station",
    );
    for tok in [w.jane.as_str(), ADMIN] {
        expect(
            kiosk_join(&app, tok, &visit, id, PIN).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    // Not a keypad's entry: refused before it is counted.
    for (cid, pin) in [("12ab", PIN), (id, ""), (id, "1234 5678")] {
        expect(
            kiosk_join(&app, &w.kiosk, &visit, cid, pin).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        );
    }
    let (s, v) = send(
        &app,
        "POST",
        &format!("/api/v1/visits/{visit}/kiosk-join"),
        Some(&w.kiosk),
        Some(json!({ "calling_id": id, "pin": PIN, "extra": 1 })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(pin_attempts(&app).await, 0);
    // A suspended inmate joins nothing (and keys nothing).
    let inmate = format!("/api/v1/inmates/{}", w.inmate);
    ok(&app, "POST", &format!("{inmate}/suspend"), None).await;
    expect(
        kiosk_join(&app, &w.kiosk, &visit, id, PIN).await,
        StatusCode::CONFLICT,
        "inmate_inactive",
    );
    ok(&app, "POST", &format!("{inmate}/reinstate"), None).await;
    assert_eq!(pin_attempts(&app).await, 0);
    // A wrong PIN, an ID that names nobody: pin_invalid, counted.
    expect(
        kiosk_join(&app, &w.kiosk, &visit, id, "0000").await,
        StatusCode::FORBIDDEN,
        "pin_invalid",
    );
    expect(
        kiosk_join(&app, &w.kiosk, &visit, "000000", PIN).await,
        StatusCode::FORBIDDEN,
        "pin_invalid",
    );
    assert_eq!(pin_attempts(&app).await, 2);
    // The right pair: a pass for the inmate's side.
    let (s, joined) = kiosk_join(&app, &w.kiosk, &visit, id, PIN).await;
    assert_eq!(s, StatusCode::OK, "{joined}");
    assert_eq!(joined["side"], "inmate");
    assert_eq!(joined["visit_id"], json!(visit));
    assert_eq!(time(&joined, "expires_at"), local(3, 10, 30, 0));
    let pass = joined["secret"].as_str().unwrap();
    let (s, v) = session(&app, pass).await;
    assert_eq!(
        (s, v["side"].as_str()),
        (StatusCode::OK, Some("inmate")),
        "{v}"
    );
    assert_eq!(v["opens_in_secs"], 600);
    // Audited, never the PIN.
    let log = audit_log(&app).await;
    let joins: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "visit.kiosk_join")
        .collect();
    assert_eq!(joins.len(), 1, "{log:?}");
    assert_eq!(joins[0]["detail"]["station_id"], json!(w.station));
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(PIN) && !text.contains("\"pin\""), "{text}");
    // After the slot: closed again.
    app.clock.set_wall(local(3, 10, 30, 0));
    expect(
        kiosk_join(&app, &w.kiosk, &visit, id, PIN).await,
        StatusCode::CONFLICT,
        "visit_not_open",
    );
    // The other station's own visits are its own.
    let _ = &w.other_station;
    app.t.cleanup().await;
}

/// Guessing at a kiosk locks out as on the handsets: the inmate and the station are
/// counted; a locked station refuses everything, a locked inmate even the right PIN.
async fn guessing_at_a_kiosk_locks_out(app: App) {
    let w = world(&app, "auto").await;
    let visit = book(&app, &w, ADMIN, 10, 0).await;
    let id = w.calling_id.as_str();
    app.clock.set_wall(local(3, 9, 50, 0));
    // Six wrong PINs for the inmate (the default threshold): each pin_invalid.
    for n in 0..6 {
        let wrong = format!("{:04}", 1000 + n);
        expect(
            kiosk_join(&app, &w.kiosk, &visit, id, &wrong).await,
            StatusCode::FORBIDDEN,
            "pin_invalid",
        );
    }
    // Both are locked now: the station first (nothing is checked there), then the inmate
    // (even the right PIN).
    expect(
        kiosk_join(&app, &w.kiosk, &visit, id, PIN).await,
        StatusCode::FORBIDDEN,
        "station_locked",
    );
    let (_, locks) = admin(
        &app,
        "GET",
        &format!("/api/v1/facilities/{FID}/pin-locks"),
        None,
    )
    .await;
    let line = format!("station:{}", w.station);
    let subjects: Vec<(String, String)> = locks
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["subject"].as_str().unwrap().to_string(),
                l["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        subjects.contains(&("inmate".into(), w.inmate.clone())),
        "{locks}"
    );
    assert!(subjects.contains(&("line".into(), line.clone())), "{locks}");
    // A minute later, staff clear the station's lock (the count restarts from then): the
    // inmate is still locked.
    app.clock.set_wall(local(3, 9, 51, 0));
    ok(
        &app,
        "POST",
        &format!("/api/v1/facilities/{FID}/lines/{line}/unlock"),
        None,
    )
    .await;
    expect(
        kiosk_join(&app, &w.kiosk, &visit, id, PIN).await,
        StatusCode::FORBIDDEN,
        "account_locked",
    );
    // And once the inmate's lock is cleared too, the right PIN joins.
    ok(
        &app,
        "POST",
        &format!("/api/v1/inmates/{}/unlock", w.inmate),
        None,
    )
    .await;
    let (s, v) = kiosk_join(&app, &w.kiosk, &visit, id, PIN).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let log = audit_log(&app).await;
    let lockouts = log.iter().filter(|e| e["action"] == "pin.lockout").count();
    assert_eq!(lockouts, 2, "{log:?}");
    app.t.cleanup().await;
}

/// A guesser who rotates IDs at one kiosk locks the station, not the inmates: the station
/// plays the handset's part.
async fn rotating_ids_locks_the_station(app: App) {
    let w = world(&app, "auto").await;
    let visit = book(&app, &w, ADMIN, 10, 0).await;
    app.clock.set_wall(local(3, 9, 50, 0));
    for n in 0..6 {
        let nobody = format!("{}", 900_000 + n);
        expect(
            kiosk_join(&app, &w.kiosk, &visit, &nobody, PIN).await,
            StatusCode::FORBIDDEN,
            "pin_invalid",
        );
    }
    expect(
        kiosk_join(&app, &w.kiosk, &visit, &w.calling_id, PIN).await,
        StatusCode::FORBIDDEN,
        "station_locked",
    );
    // The inmate was never named, so is not locked: after staff clear the station (a
    // minute later; the count restarts from then), the right PIN joins.
    app.clock.set_wall(local(3, 9, 51, 0));
    let line = format!("station:{}", w.station);
    ok(
        &app,
        "POST",
        &format!("/api/v1/facilities/{FID}/lines/{line}/unlock"),
        None,
    )
    .await;
    let (s, v) = kiosk_join(&app, &w.kiosk, &visit, &w.calling_id, PIN).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.t.cleanup().await;
}

battery!(
    the_join_link_and_its_window,
    the_pass_is_no_token_and_cannot_be_forged,
    cancelling_revokes_the_link,
    the_kiosk_confirms_with_id_and_pin,
    guessing_at_a_kiosk_locks_out,
    rotating_ids_locks_the_station
);

/// The lead is `visits.join_lead_secs`.
#[tokio::test]
async fn the_lead_is_configured() {
    let app = Setup::new(ADMIN)
        .config(|c| c.visits.join_lead_secs = 300)
        .app(Backend::Sqlite)
        .await
        .unwrap();
    let w = world(&app, "auto").await;
    let visit = book(&app, &w, ADMIN, 10, 0).await;
    let (s, link) = join_link(&app, &w.jane, &visit).await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    assert_eq!(time(&link, "valid_from"), local(3, 9, 55, 0));
    let pass = pass_of(&link);
    app.clock.set_wall(local(3, 9, 54, 0));
    expect(
        session(&app, &pass).await,
        StatusCode::CONFLICT,
        "link_not_yet_valid",
    );
    app.clock.set_wall(local(3, 9, 55, 0));
    assert_eq!(session(&app, &pass).await.0, StatusCode::OK);
    app.t.cleanup().await;
}
