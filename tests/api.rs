//! The HTTP API through the real router (`tower::ServiceExt::oneshot`), against SQLite and
//! PostgreSQL: the same battery on both.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sallyport::clock::Clock;
use sallyport::db::Backend;
use serde_json::{json, Value};
use support::inproc::{self, admin, err_code, fetch, json_of, request, App, Setup};

const ADMIN: &str = "test-admin-token";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).app(backend).await
}

/// Sends one request; returns the status and the body as JSON (or as a JSON string).
async fn send(
    app: &App,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = request(method, path, token, body);
    if let Some(k) = key {
        req.headers_mut()
            .insert("idempotency-key", k.parse().unwrap());
    }
    raw(app, req).await
}

async fn raw(app: &App, req: Request<Body>) -> (StatusCode, Value) {
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

async fn upload(app: &App, path: &str, csv: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "text/csv")
        .body(Body::from(csv.to_string()))
        .unwrap();
    raw(app, req).await
}

/// The `items` of a page.
fn items(v: &Value) -> &Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    v["items"].as_array().unwrap_or(&EMPTY)
}

/// A facility with rates, one booked inmate with an approved contact. Returns (inmate id, account id).
async fn setup(app: &App, fid: &str) -> (String, String) {
    inproc::facility(app, fid).await;
    let deck = "prefix,class,description\n1555,local,Local\n1,domestic,US\n44,international,UK\n";
    let (s, v) = upload(app, &format!("/api/v1/rate-decks?id={fid}-deck"), deck).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let plan = "class,service,per_minute,increment_secs\nlocal,audio,0.021,60\ndomestic,audio,0.05,60\ninternational,audio,0.06,60\n";
    let (s, v) = upload(
        app,
        &format!("/api/v1/rate-plans?id={fid}-plan&max_call_secs=1800"),
        plan,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = admin(
        app,
        "PATCH",
        &format!("/api/v1/facilities/{fid}"),
        Some(
            json!({ "rate_plan_id": format!("{fid}-plan"), "rate_deck_id": format!("{fid}-deck") }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, inmate) = admin(
        app,
        "POST",
        &format!("/api/v1/facilities/{fid}/inmates"),
        Some(json!({
            "booking_number": "B-1", "first_name": "John", "last_name": "Doe", "pin": "4321"
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{inmate}");
    assert_eq!(inmate["has_pin"], true);
    // Neither the PIN nor anything derived from it under a pin-like key. (A substring
    // search of the whole body would also match a timestamp's microseconds or a UUID.)
    let pin_like = inmate.as_object().map_or(0, |o| {
        o.iter()
            .filter(|(k, v)| (k.contains("pin") && *k != "has_pin") || v.as_str() == Some("4321"))
            .count()
    });
    assert_eq!(pin_like, 0, "PIN never shown: {inmate}");
    let iid = inmate["id"].as_str().unwrap().to_string();
    let (s, c) = admin(
        app,
        "POST",
        &format!("/api/v1/inmates/{iid}/contacts"),
        Some(json!({ "number": "(555) 123-0001", "name": "Jane Doe", "relationship": "mother" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["number"], "+15551230001");
    assert_eq!(c["status"], "pending");
    let (s, c) = admin(
        app,
        "POST",
        &format!("/api/v1/contacts/{}/approve", c["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(
        (s, c["status"].as_str()),
        (StatusCode::OK, Some("approved"))
    );
    (iid, inmate["account_id"].as_str().unwrap().to_string())
}

async fn balance(app: &App, account: &str) -> String {
    let (s, v) = admin(app, "GET", &format!("/api/v1/accounts/{account}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["balance"].as_str().unwrap().to_string()
}

async fn ledger_healthy(app: &App) {
    let (s, v) = admin(app, "GET", "/api/v1/ledger/check", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["violations"], json!([]), "{v}");
}

async fn money_flow(app: App) {
    let (iid, acc) = setup(&app, "F1").await;
    let dep = json!({ "amount": "40.00", "method": "online", "depositor": "Jane" });
    let (s, d) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/deposits"),
        Some(ADMIN),
        Some("d1"),
        Some(dep),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["status"], "posted");
    let mo = json!({ "amount": "25.00", "method": "money_order", "reference": "MO-77" });
    let (s, m) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/deposits"),
        Some(ADMIN),
        Some("mo1"),
        Some(mo),
    )
    .await;
    assert_eq!(
        (s, m["status"].as_str()),
        (StatusCode::CREATED, Some("pending")),
        "{m}"
    );
    assert_eq!(balance(&app, &acc).await, "40.00");
    let (s, m) = send(
        &app,
        "POST",
        &format!("/api/v1/deposits/{}/post", m["id"].as_str().unwrap()),
        Some(ADMIN),
        Some("mo1-post"),
        None,
    )
    .await;
    assert_eq!(
        (s, m["status"].as_str()),
        (StatusCode::OK, Some("posted")),
        "{m}"
    );
    assert_eq!(balance(&app, &acc).await, "65.00");
    let buy = json!({ "amount": "5.25", "reference": "ORD-1", "memo": "soap" });
    let (s, r) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/purchases"),
        Some(ADMIN),
        Some("p1"),
        Some(buy),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["balance_after"], "59.75");
    let back = json!({ "amount": "1.25", "reference": "ORD-1", "memo": "return" });
    let (s, r) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/refunds"),
        Some(ADMIN),
        Some("r1"),
        Some(back),
    )
    .await;
    assert_eq!(
        (s, r["balance_after"].as_str()),
        (StatusCode::CREATED, Some("61.00")),
        "{r}"
    );
    let (s, st) = admin(
        &app,
        "GET",
        &format!("/api/v1/accounts/{acc}/statement"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["closing_balance"], "61.00", "{st}");
    assert_eq!(st["lines"].as_array().unwrap().len(), 4, "{st}");
    let (s, csv) = admin(
        &app,
        "GET",
        &format!("/api/v1/accounts/{acc}/statement?format=csv"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        csv.as_str().unwrap().lines().count(),
        5,
        "header + 4 lines: {csv}"
    );
    let (s, rel) = send(
        &app,
        "POST",
        &format!("/api/v1/inmates/{iid}/release"),
        Some(ADMIN),
        Some("rel1"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rel}");
    assert_eq!(rel["release"]["refunded"], "61.00");
    assert_eq!(rel["inmate"]["status"], "released");
    assert_eq!(balance(&app, &acc).await, "0.00");
    let dep = json!({ "amount": "1.00", "method": "online" });
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/deposits"),
        Some(ADMIN),
        Some("d-after"),
        Some(dep),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::CONFLICT, "account_closed"),
        "{e}"
    );
    ledger_healthy(&app).await;
    app.t.cleanup().await;
}

/// Every money-moving call replayed with its key returns the first answer and changes
/// nothing; the same key with a different request is a 409.
async fn idempotent_replays(app: App) {
    let (iid, acc) = setup(&app, "F1").await;
    let calls: Vec<(String, String, Option<Value>)> = vec![
        (
            "k-dep".into(),
            format!("/api/v1/accounts/{acc}/deposits"),
            Some(json!({ "amount": "30.00", "method": "kiosk" })),
        ),
        (
            "k-mo".into(),
            format!("/api/v1/accounts/{acc}/deposits"),
            Some(json!({ "amount": "10.00", "method": "money_order" })),
        ),
        (
            "k-buy".into(),
            format!("/api/v1/accounts/{acc}/purchases"),
            Some(json!({ "amount": "2.00", "reference": "o1" })),
        ),
        (
            "k-ref".into(),
            format!("/api/v1/accounts/{acc}/refunds"),
            Some(json!({ "amount": "0.50", "reference": "o1" })),
        ),
    ];
    let mut mo_id = String::new();
    for (key, path, body) in &calls {
        let first = send(&app, "POST", path, Some(ADMIN), Some(key), body.clone()).await;
        assert!(first.0.is_success(), "{key}: {:?}", first);
        if key == "k-mo" {
            mo_id = first.1["id"].as_str().unwrap().to_string();
        }
        let before = balance(&app, &acc).await;
        let again = send(&app, "POST", path, Some(ADMIN), Some(key), body.clone()).await;
        assert_eq!(again, first, "{key}: a replay returns the first answer");
        assert_eq!(
            balance(&app, &acc).await,
            before,
            "{key}: a replay moves nothing"
        );
        let mut other = body.clone().unwrap();
        other["amount"] = json!("3.00");
        let (s, e) = send(&app, "POST", path, Some(ADMIN), Some(key), Some(other)).await;
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::CONFLICT, "idempotency_conflict"),
            "{key}: {e}"
        );
        assert_eq!(balance(&app, &acc).await, before);
    }
    for (key, path) in [
        ("k-post", format!("/api/v1/deposits/{mo_id}/post")),
        ("k-rel", format!("/api/v1/inmates/{iid}/release")),
    ] {
        let first = send(&app, "POST", &path, Some(ADMIN), Some(key), None).await;
        assert!(first.0.is_success(), "{key}: {:?}", first);
        let before = balance(&app, &acc).await;
        let again = send(&app, "POST", &path, Some(ADMIN), Some(key), None).await;
        assert_eq!(again, first, "{key}");
        assert_eq!(balance(&app, &acc).await, before);
    }
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/deposits"),
        Some(ADMIN),
        None,
        Some(json!({ "amount": "1", "method": "online" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "a money call without a key: {e}"
    );
    ledger_healthy(&app).await;
    app.t.cleanup().await;
}

/// Bad input gets the right 4xx and a JSON error, and no balance moves.
async fn bad_requests(app: App) {
    let (iid, acc) = setup(&app, "F1").await;
    let dep_path = format!("/api/v1/accounts/{acc}/deposits");
    // Malformed JSON, wrong content type, unknown field, wrong type.
    let req = Request::builder()
        .method("POST")
        .uri(&dep_path)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("idempotency-key", "x1")
        .header("content-type", "application/json")
        .body(Body::from("{\"amount\": "))
        .unwrap();
    let (s, e) = raw(&app, req).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::BAD_REQUEST, "invalid_json"),
        "{e}"
    );
    let req = Request::builder()
        .method("POST")
        .uri(&dep_path)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("idempotency-key", "x2")
        .body(Body::from("{}"))
        .unwrap();
    let (s, e) = raw(&app, req).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        "{e}"
    );
    let (s, e) = send(
        &app,
        "POST",
        &dep_path,
        Some(ADMIN),
        Some("x3"),
        Some(json!({ "amount": "5", "method": "online", "tip": 1 })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_json"),
        "{e}"
    );
    let (s, e) = send(
        &app,
        "POST",
        &dep_path,
        Some(ADMIN),
        Some("x4"),
        Some(json!({ "amount": "5.001", "method": "online" })),
    )
    .await;
    assert!(s.is_client_error(), "sub-cent deposit: {s} {e}");
    let (s, e) = send(
        &app,
        "POST",
        &dep_path,
        Some(ADMIN),
        Some("x5"),
        Some(json!({ "amount": "-5", "method": "online" })),
    )
    .await;
    assert!(s.is_client_error(), "negative deposit: {s} {e}");
    // Over the per-deposit limit (100.00), then over the daily limit (150.00).
    let (s, e) = send(
        &app,
        "POST",
        &dep_path,
        Some(ADMIN),
        Some("x6"),
        Some(json!({ "amount": "100.01", "method": "online" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{e}"
    );
    for (k, amt) in [("x7", "100.00"), ("x8", "50.00")] {
        let (s, e) = send(
            &app,
            "POST",
            &dep_path,
            Some(ADMIN),
            Some(k),
            Some(json!({ "amount": amt, "method": "online" })),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
    }
    let (s, e) = send(
        &app,
        "POST",
        &dep_path,
        Some(ADMIN),
        Some("x9"),
        Some(json!({ "amount": "0.01", "method": "online" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{e}"
    );
    // The next facility-local day the limit is fresh again.
    app.clock.advance(std::time::Duration::from_secs(24 * 3600));
    let (s, e) = send(
        &app,
        "POST",
        &dep_path,
        Some(ADMIN),
        Some("x10"),
        Some(json!({ "amount": "0.01", "method": "online" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(balance(&app, &acc).await, "150.01");
    // Overspending a purchase.
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/purchases"),
        Some(ADMIN),
        Some("x11"),
        Some(json!({ "amount": "500.00" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"),
        "{e}"
    );
    // Unknown things.
    let (s, e) = admin(&app, "GET", "/api/v1/inmates/inm_nope", None).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{e}"
    );
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/accounts/acc_nope/deposits",
        Some(ADMIN),
        Some("x12"),
        Some(json!({ "amount": "5", "method": "online" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{e}"
    );
    let (s, e) = admin(&app, "GET", "/api/v1/nothing-here", None).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{e}"
    );
    // Bad records.
    let (s, e) = admin(
        &app,
        "POST",
        &format!("/api/v1/inmates/{iid}/contacts"),
        Some(json!({ "number": "call me maybe", "name": "X" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{e}"
    );
    let (s, e) = admin(
        &app,
        "PUT",
        &format!("/api/v1/inmates/{iid}/pin"),
        Some(json!({ "pin": "12" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{e}"
    );
    let (s, e) = admin(&app, "POST", "/api/v1/facilities", Some(json!({ "id": "F9", "name": "x", "time_zone": "Mars/Base", "deposit_max": "50", "deposit_daily_max": "50" }))).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{e}"
    );
    // A retention period outside 1..=36500 days is refused, naming the field: a huge one
    // would overflow the purge's cutoff (days in microseconds) on PostgreSQL.
    let retention = |days: i64| {
        admin(
            &app,
            "PATCH",
            "/api/v1/facilities/F1",
            Some(json!({ "recording_retention_days": days })),
        )
    };
    for days in [0, -1, 36_501, 106_752, i64::MAX] {
        let (s, e) = admin(&app, "POST", "/api/v1/facilities", Some(json!({ "id": "F8", "name": "x", "time_zone": "UTC", "deposit_max": "50", "deposit_daily_max": "50", "recording_retention_days": days }))).await;
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            "{days}: {e}"
        );
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("recording_retention_days"), "{e}");
        let (s, e) = retention(days).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{days}: {e}");
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("recording_retention_days"), "{e}");
    }
    for days in [1, 36_500] {
        let (s, e) = retention(days).await;
        assert_eq!(s, StatusCode::OK, "{days}: {e}");
        assert_eq!(e["recording_retention_days"], days, "{e}");
    }
    // A per-deposit limit below $50, or a daily limit below the per-deposit one, is
    // refused naming its field; nothing changes.
    let limits = |body: Value| admin(&app, "PATCH", "/api/v1/facilities/F1", Some(body));
    for (body, field) in [
        (json!({ "deposit_max": "49.99" }), "deposit_max"),
        (json!({ "deposit_max": "0" }), "deposit_max"),
        (json!({ "deposit_daily_max": "49.99" }), "deposit_daily_max"),
        (
            json!({ "deposit_max": "80.00", "deposit_daily_max": "60.00" }),
            "deposit_daily_max",
        ),
    ] {
        let (s, e) = limits(body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(&format!("{field}:")), "{body}: {e}");
    }
    let (s, e) = admin(&app, "POST", "/api/v1/facilities", Some(json!({ "id": "F7", "name": "x", "time_zone": "UTC", "deposit_max": "49.99", "deposit_daily_max": "100" }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = limits(json!({ "deposit_max": "50.00", "deposit_daily_max": "50.00" })).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["deposit_max"], "50.00", "{e}");
    let (s, e) = upload(
        &app,
        "/api/v1/rate-decks?id=bad",
        "prefix,class,description\n1,local,ok\n12x,local,bad\n",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains('3'),
        "names the line: {e}"
    );
    // A plan above the FCC cap for prisons ($0.06/min audio) is refused for the facility.
    let (s, e) = upload(
        &app,
        "/api/v1/rate-plans?id=greedy",
        "class,service,per_minute,increment_secs\nlocal,audio,0.25,60\n",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let (s, e) = admin(
        &app,
        "PATCH",
        "/api/v1/facilities/F1",
        Some(json!({ "rate_plan_id": "greedy" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{e}"
    );
    assert_eq!(
        balance(&app, &acc).await,
        "150.01",
        "nothing above moved money"
    );
    ledger_healthy(&app).await;
    app.t.cleanup().await;
}

/// Tokens, roles and facility scope.
async fn authorization(app: App) {
    let (iid, acc) = setup(&app, "F1").await;
    let (_, acc2) = setup(&app, "F2").await;
    let dep = |amt: &str| Some(json!({ "amount": amt, "method": "online" }));
    let path = format!("/api/v1/accounts/{acc}/deposits");
    let (s, e) = send(&app, "POST", &path, None, Some("a1"), dep("5")).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{e}"
    );
    let (s, e) = send(
        &app,
        "POST",
        &path,
        Some("not-a-token"),
        Some("a2"),
        dep("5"),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{e}"
    );
    let token = |v: &Value| v["token"].as_str().unwrap().to_string();
    let (s, f2_admin) = admin(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(json!({ "username": "f2-staff", "role": "admin", "facilities": ["F2"] })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{f2_admin}");
    let f2_admin = token(&f2_admin);
    let (_, kiosk) = admin(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(json!({ "username": "kiosk-1", "role": "kiosk", "facilities": ["F1"] })),
    )
    .await;
    let kiosk = token(&kiosk);
    let (_, family) = admin(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(
            json!({ "username": "jane", "role": "family", "facilities": ["F1"], "ttl_secs": 600 }),
        ),
    )
    .await;
    let family = token(&family);
    // Wrong facility: an F2 admin cannot touch an F1 account or inmate.
    let (s, e) = send(&app, "POST", &path, Some(&f2_admin), Some("a3"), dep("5")).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{e}"
    );
    let (s, _) = send(
        &app,
        "GET",
        &format!("/api/v1/inmates/{iid}"),
        Some(&f2_admin),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(
        &app,
        "GET",
        &format!("/api/v1/accounts/{acc2}"),
        Some(&f2_admin),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "its own facility is fine");
    let (s, v) = send(
        &app,
        "GET",
        "/api/v1/facilities",
        Some(&f2_admin),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, v.as_array().map(|a| a.len())),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    let (s, _) = send(&app, "POST", "/api/v1/facilities", Some(&f2_admin), None, Some(json!({ "id": "F3", "name": "x", "time_zone": "UTC", "deposit_max": "50", "deposit_daily_max": "50" }))).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "only an all-facility admin creates facilities"
    );
    // Wrong role: kiosks take kiosk deposits only; families deposit by card through the
    // payment provider (POST /family/deposits), not here; neither posts purchases.
    let (s, e) = send(&app, "POST", &path, Some(&kiosk), Some("a4"), dep("5")).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{e}"
    );
    let (s, e) = send(
        &app,
        "POST",
        &path,
        Some(&kiosk),
        Some("a5"),
        Some(json!({ "amount": "5", "method": "kiosk" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let (s, e) = send(&app, "POST", &path, Some(&family), Some("a6"), dep("5")).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "use_family_deposits"),
        "{e}"
    );
    let (s, _) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc}/purchases"),
        Some(&kiosk),
        Some("a7"),
        Some(json!({ "amount": "1" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(
        &app,
        "POST",
        "/api/v1/facilities/F1/inmates",
        Some(&family),
        None,
        Some(json!({ "booking_number": "B-9", "first_name": "a", "last_name": "b" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = send(
        &app,
        "GET",
        &format!("/api/v1/accounts/{acc}/statement"),
        Some(&kiosk),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "sitting_required"),
        "a kiosk shows an inmate's history only to that inmate (kiosk_sittings): {e}"
    );
    // Expired token.
    app.clock.advance(std::time::Duration::from_secs(601));
    let (s, e) = send(&app, "POST", &path, Some(&family), Some("a8"), dep("5")).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{e}"
    );
    assert_eq!(
        balance(&app, &acc).await,
        "5.00",
        "only the one allowed deposit (the kiosk's) moved money"
    );
    assert_eq!(balance(&app, &acc2).await, "0.00");
    app.t.cleanup().await;
}

/// Call records: search by filters, live calls, scope.
async fn call_records(app: App) {
    let (iid, _) = setup(&app, "F1").await;
    setup(&app, "F2").await;
    let db = &app.t.db;
    let now = app.clock.wall();
    for (id, fac) in [("c1", "F1"), ("c2", "F1"), ("c3", "F2")] {
        let s = sallyport::session::cdr::NewSession {
            id,
            facility_id: fac,
            handset_id: None,
            dialed: "5551230001",
            node_id: "n1",
            sip_call_id: None,
        };
        sallyport::session::cdr::open_call(db, &s, now)
            .await
            .unwrap();
    }
    let end = sallyport::session::cdr::SessionEnd {
        reason: "callee_hangup",
        inmate_id: Some(&iid),
        number_e164: Some("+15551230001"),
        privileged: false,
        recorded: true,
        answer_at: Some(now),
        accepted_at: Some(now),
        end_at: now,
    };
    sallyport::session::cdr::close(db, "c1", &end)
        .await
        .unwrap();
    let (s, v) = admin(&app, "GET", "/api/v1/calls?facility=F1", None).await;
    assert_eq!(
        (s, items(&v).len(), v["total"].as_i64()),
        (StatusCode::OK, 2, Some(2)),
        "{v}"
    );
    let (_, v) = admin(&app, "GET", "/api/v1/calls?reason=callee_hangup", None).await;
    assert_eq!(items(&v).len(), 1, "{v}");
    assert_eq!(v["items"][0]["inmate_id"], iid.as_str());
    assert_eq!(v["items"][0]["number"], "+15551230001");
    let (_, v) = admin(
        &app,
        "GET",
        &format!("/api/v1/calls?inmate={iid}&number=%2B15551230001"),
        None,
    )
    .await;
    assert_eq!(items(&v).len(), 1, "{v}");
    let (_, v) = admin(&app, "GET", "/api/v1/calls/active", None).await;
    assert_eq!(v.as_array().map(|a| a.len()), Some(2), "{v}");
    let (s, v) = admin(&app, "GET", "/api/v1/calls/c1", None).await;
    assert_eq!(
        (s, v["end_reason"].as_str()),
        (StatusCode::OK, Some("callee_hangup")),
        "{v}"
    );
    let (s, e) = admin(&app, "GET", "/api/v1/calls?limit=x", None).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{e}"
    );
    let (_, inv) = admin(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(json!({ "username": "inv-f2", "role": "investigator", "facilities": ["F2"] })),
    )
    .await;
    let inv = inv["token"].as_str().unwrap().to_string();
    let (_, v) = send(&app, "GET", "/api/v1/calls", Some(&inv), None, None).await;
    assert_eq!(items(&v).len(), 1, "an F2 investigator sees F2 only: {v}");
    let (s, _) = send(&app, "GET", "/api/v1/calls/c1", Some(&inv), None, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(
        &app,
        "GET",
        "/api/v1/calls?facility=F1",
        Some(&inv),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, both) = admin(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(json!({ "username": "inv-both", "role": "investigator", "facilities": ["F1", "F2"] })),
    )
    .await;
    let both = both["token"].as_str().unwrap().to_string();
    let (_, v) = send(
        &app,
        "GET",
        "/api/v1/calls?limit=2",
        Some(&both),
        None,
        None,
    )
    .await;
    assert_eq!(
        (items(&v).len(), v["total"].as_i64()),
        (2, Some(3)),
        "scope is in the query, so pages are full: {v}"
    );
    let (_, v) = send(
        &app,
        "GET",
        "/api/v1/calls?limit=2&offset=2",
        Some(&both),
        None,
        None,
    )
    .await;
    assert_eq!(items(&v).len(), 1, "{v}");
    // Terminate: the same scope rules; an ended call is a 409; a live call this process
    // does not carry (no SIP side here: another node's) is forwarded to its node, and
    // node n1 never registered: a 503 naming it. (Terminating a real call:
    // tests/sip_calls.rs; through another node: tests/cluster.rs.)
    let (s, _) = send(&app, "POST", "/api/v1/calls/c2/terminate", None, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(
        &app,
        "POST",
        "/api/v1/calls/c2/terminate",
        Some(&inv),
        None,
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "an F2 investigator cannot end an F1 call"
    );
    let (s, _) = admin(&app, "POST", "/api/v1/calls/nope/terminate", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = admin(&app, "POST", "/api/v1/calls/c1/terminate", None).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::CONFLICT, "call_ended"),
        "{e}"
    );
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/calls/c2/terminate",
        Some(&both),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::SERVICE_UNAVAILABLE, "node_unknown"),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("node n1"),
        "{e}"
    );
    // Progress of a live call shows before it ends.
    sallyport::session::cdr::progress(
        db,
        "c2",
        &sallyport::session::cdr::Progress {
            number_e164: Some("+15551230001"),
            privileged: Some(true),
            answer_at: Some(now),
            accepted_at: Some(now),
        },
    )
    .await
    .unwrap();
    let (_, v) = admin(&app, "GET", "/api/v1/calls/c2", None).await;
    assert_eq!(
        (
            v["state"].as_str(),
            v["number"].as_str(),
            v["privileged"].as_bool()
        ),
        (Some("active"), Some("+15551230001"), Some(true)),
        "{v}"
    );
    assert!(!v["accepted_at"].is_null(), "{v}");
    // The audit log (admins of every facility) and its chain.
    let (s, v) = admin(&app, "GET", "/api/v1/audit?limit=5", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 5, "{v}");
    assert_eq!(entries[0]["prev_hash"], entries[1]["hash"], "{v}");
    let (s, v) = admin(&app, "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["problems"], json!([]), "{v}");
    assert!(v["entries"].as_u64().unwrap() >= 5, "{v}");
    let (s, _) = send(&app, "GET", "/api/v1/audit", Some(&both), None, None).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "investigators do not read the audit log"
    );
    let (s, _) = admin(&app, "GET", "/api/v1/audit?limit=x", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    app.t.cleanup().await;
}

/// The last audit entry.
async fn last_audit(app: &App) -> Value {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v[0].clone()
}

/// Calling IDs and PINs through the API: drawn at random at booking or given by staff,
/// unique in the facility, changed with a PIN; PINs shared between inmates; the locks
/// staff see and clear, each clear audited.
async fn inmate_credentials(app: App) {
    let (iid, _) = setup(&app, "F1").await;
    let book = |n: &str, extra: Value| {
        let mut b =
            json!({ "booking_number": n, "first_name": "A", "last_name": n, "pin": "4321" });
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let app = &app;
        async move { admin(app, "POST", "/api/v1/facilities/F1/inmates", Some(b)).await }
    };
    // Drawn: six digits, no leading zero, different each time (the first inmate's too).
    let (_, first) = admin(&app, "GET", &format!("/api/v1/inmates/{iid}"), None).await;
    let mut drawn = vec![first["calling_id"].as_str().unwrap().to_string()];
    for n in ["B-2", "B-3"] {
        let (s, v) = book(n, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "the same PIN as B-1 is fine: {v}");
        drawn.push(v["calling_id"].as_str().unwrap().to_string());
    }
    for id in &drawn {
        assert!(
            id.len() == 6 && id.bytes().all(|b| b.is_ascii_digit()),
            "{id}"
        );
        assert!(!id.starts_with('0'), "{id}");
    }
    drawn.sort();
    drawn.dedup();
    assert_eq!(drawn.len(), 3, "unique: {drawn:?}");
    // Given by staff: kept; taken: 409; the wrong shape: 422 naming the field.
    let (s, v) = book("B-4", json!({ "calling_id": "123456" })).await;
    assert_eq!(
        (s, v["calling_id"].as_str()),
        (StatusCode::CREATED, Some("123456")),
        "{v}"
    );
    let b4 = v["id"].as_str().unwrap().to_string();
    let (s, e) = book("B-5", json!({ "calling_id": "123456" })).await;
    assert_eq!((s, err_code(&e)), (StatusCode::CONFLICT, "conflict"), "{e}");
    for bad in ["12345", "1234567", "12345a"] {
        let (s, e) = book("B-6", json!({ "calling_id": bad })).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {e}");
        assert!(e.to_string().contains("calling_id"), "{e}");
    }
    // A new ID goes with a new PIN (the PIN's hash includes it); audited.
    let (s, v) = admin(
        &app,
        "PUT",
        &format!("/api/v1/inmates/{b4}/pin"),
        Some(json!({ "pin": "8642", "calling_id": "654321" })),
    )
    .await;
    assert_eq!(
        (s, v["calling_id"].as_str()),
        (StatusCode::OK, Some("654321")),
        "{v}"
    );
    let a = last_audit(&app).await;
    assert_eq!(
        (
            a["action"].as_str(),
            a["detail"]["calling_id_changed"].as_bool()
        ),
        (Some("inmate.set_pin"), Some(true)),
        "{a}"
    );
    let (s, e) = admin(
        &app,
        "PUT",
        &format!("/api/v1/inmates/{iid}/pin"),
        Some(json!({ "pin": "8642", "calling_id": "654321" })),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    // Locks: none in force; clearing is audited; an unknown line is a 404.
    let (s, v) = admin(&app, "GET", "/api/v1/facilities/F1/pin-locks", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let (s, v) = admin(&app, "POST", &format!("/api/v1/inmates/{iid}/unlock"), None).await;
    assert_eq!(
        (s, v["locked_until"].clone()),
        (StatusCode::OK, Value::Null),
        "{v}"
    );
    assert_eq!(last_audit(&app).await["action"], "inmate.unlock");
    let (s, h) = admin(
        &app,
        "POST",
        "/api/v1/facilities/F1/handsets",
        Some(json!({ "name": "wall", "sip_username": "wall-1" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    let hid = h["id"].as_str().unwrap();
    let (s, v) = admin(
        &app,
        "POST",
        &format!("/api/v1/handsets/{hid}/unlock"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(last_audit(&app).await["action"], "handset.unlock");
    let (s, e) = admin(
        &app,
        "POST",
        "/api/v1/facilities/F1/lines/10.9.9.9/unlock",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, _) = admin(&app, "POST", "/api/v1/handsets/hs_nope/unlock", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.t.cleanup().await;
}

/// A kiosk acts for one inmate only while that inmate is signed in at it (calling ID and
/// PIN): their record, account, statement, deposits and contacts; nobody else's; not
/// after the sitting ends; not with another kiosk's sitting. It still takes cash for any
/// inmate.
async fn kiosk_sittings(app: App) {
    let (iid, acc) = setup(&app, "F1").await;
    let other = inproc::inmate(&app, "F1", "B-2").await;
    let other_acc = other["account_id"].as_str().unwrap().to_string();
    let other_id = other["id"].as_str().unwrap().to_string();
    let (_, inmate) = admin(&app, "GET", &format!("/api/v1/inmates/{iid}"), None).await;
    let calling_id = inmate["calling_id"].as_str().unwrap().to_string();
    let kiosk = inproc::issue(&app, "kiosk-1", "kiosk", &["F1"], Some(3600)).await;
    let kiosk2 = inproc::issue(&app, "kiosk-2", "kiosk", &["F1"], Some(3600)).await;
    let with_sitting = |method: &str, path: &str, token: &str, sitting: &str| {
        let mut req = request(method, path, Some(token), None);
        req.headers_mut()
            .insert("x-kiosk-sitting", sitting.parse().unwrap());
        req
    };
    // Without a sitting: nothing of any inmate.
    for path in [
        format!("/api/v1/inmates/{iid}"),
        format!("/api/v1/inmates/{iid}/contacts"),
        format!("/api/v1/accounts/{acc}"),
        format!("/api/v1/accounts/{acc}/statement"),
        format!("/api/v1/accounts/{acc}/deposits"),
        "/api/v1/kiosk/sitting".to_string(),
    ] {
        let (s, e) = send(&app, "GET", &path, Some(&kiosk), None, None).await;
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::FORBIDDEN, "sitting_required"),
            "{path}: {e}"
        );
    }
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/inmates/{iid}/contacts"),
        Some(&kiosk),
        None,
        Some(json!({ "number": "5551230009", "name": "X", "relationship": "" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no contacts for anyone: {e}");
    // Cash at the kiosk, for any inmate, needs no sitting.
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{other_acc}/deposits"),
        Some(&kiosk),
        Some("cash-1"),
        Some(json!({ "amount": "20.00", "method": "kiosk" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    // A wrong PIN starts nothing and says nothing of whose it is.
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/kiosk/sittings",
        Some(&kiosk),
        None,
        Some(json!({ "calling_id": calling_id, "pin": "0000" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "pin_invalid"),
        "{e}"
    );
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/kiosk/sittings",
        Some(&kiosk),
        None,
        Some(json!({ "calling_id": calling_id, "pin": "12ab" })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // The right pair: a sitting, audited.
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/kiosk/sittings",
        Some(&kiosk),
        None,
        Some(json!({ "calling_id": calling_id, "pin": "4321" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["inmate_id"], iid.as_str());
    let sitting = v["sitting"].as_str().unwrap().to_string();
    let audit = last_audit(&app).await;
    assert_eq!(audit["action"], "kiosk.sitting", "{audit}");
    assert!(
        !audit.to_string().contains("4321"),
        "never the PIN: {audit}"
    );
    for path in [
        format!("/api/v1/inmates/{iid}"),
        format!("/api/v1/inmates/{iid}/contacts"),
        format!("/api/v1/accounts/{acc}"),
        format!("/api/v1/accounts/{acc}/statement"),
        format!("/api/v1/accounts/{acc}/deposits"),
    ] {
        let (s, _, b) = fetch(&app, with_sitting("GET", &path, &kiosk, &sitting)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {}", json_of(&b));
    }
    let (s, _, b) = fetch(
        &app,
        with_sitting("GET", "/api/v1/kiosk/sitting", &kiosk, &sitting),
    )
    .await;
    let shown = json_of(&b);
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["inmate"]["id"], iid.as_str());
    assert_eq!(shown["account"]["id"], acc.as_str());
    assert!(shown["statement"]["lines"].is_array(), "{shown}");
    // Nobody else's, in the same sitting.
    for path in [
        format!("/api/v1/inmates/{other_id}"),
        format!("/api/v1/accounts/{other_acc}"),
        format!("/api/v1/accounts/{other_acc}/statement"),
    ] {
        let (s, _, b) = fetch(&app, with_sitting("GET", &path, &kiosk, &sitting)).await;
        let e = json_of(&b);
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::FORBIDDEN, "other_inmate"),
            "{path}: {e}"
        );
    }
    // Another kiosk cannot use it; a forged one is refused; a family token cannot send one.
    let path = format!("/api/v1/accounts/{acc}");
    let (s, _, b) = fetch(&app, with_sitting("GET", &path, &kiosk2, &sitting)).await;
    assert_eq!(
        (s, err_code(&json_of(&b))),
        (StatusCode::UNAUTHORIZED, "sitting_other_kiosk")
    );
    let (s, _, b) = fetch(&app, with_sitting("GET", &path, &kiosk, "00.forged")).await;
    assert_eq!(
        (s, err_code(&json_of(&b))),
        (StatusCode::UNAUTHORIZED, "sitting_invalid")
    );
    let family = inproc::issue(&app, "fam-1", "family", &["F1"], Some(3600)).await;
    let (s, _, _) = fetch(&app, with_sitting("GET", &path, &family, &sitting)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Ten minutes on, the sitting is over.
    app.clock.advance(std::time::Duration::from_secs(
        sallyport::kiosk::SITTING_SECS as u64,
    ));
    let (s, _, b) = fetch(&app, with_sitting("GET", &path, &kiosk, &sitting)).await;
    assert_eq!(
        (s, err_code(&json_of(&b))),
        (StatusCode::UNAUTHORIZED, "sitting_expired")
    );
    app.t.cleanup().await;
}

/// A family user reads the account, statement and balance only of the inmates it is a
/// contact of; it still deposits to any inmate (a gift needs no link), without seeing it.
async fn family_reads_only_linked_accounts(app: App) {
    let (iid, acc) = setup(&app, "F1").await;
    let other = inproc::inmate(&app, "F1", "B-2").await;
    let other_acc = other["account_id"].as_str().unwrap().to_string();
    let (_, contacts) = admin(
        &app,
        "GET",
        &format!("/api/v1/inmates/{iid}/contacts"),
        None,
    )
    .await;
    let contact = contacts[0]["id"].as_str().unwrap().to_string();
    let (s, v) = admin(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(
            json!({ "username": "jane", "role": "family", "facilities": ["F1"],
                     "contacts": [contact], "ttl_secs": 600 }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let linked = v["token"].as_str().unwrap().to_string();
    let stranger = inproc::issue(&app, "stranger", "family", &["F1"], Some(600)).await;
    for path in [
        format!("/api/v1/accounts/{acc}"),
        format!("/api/v1/accounts/{acc}/statement"),
    ] {
        let (s, v) = send(&app, "GET", &path, Some(&linked), None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        let (s, e) = send(&app, "GET", &path, Some(&stranger), None, None).await;
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::FORBIDDEN, "not_linked"),
            "{path}: {e}"
        );
    }
    let (s, e) = send(
        &app,
        "GET",
        &format!("/api/v1/accounts/{other_acc}"),
        Some(&linked),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "not_linked"),
        "{e}"
    );
    // A gift to any inmate goes through the payment provider (tests/deposits.rs); the
    // staff route, which posts an online deposit at once, is not a family's.
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{other_acc}/deposits"),
        Some(&stranger),
        Some("gift-1"),
        Some(json!({ "amount": "5.00", "method": "online" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "use_family_deposits"),
        "{e}"
    );
    let card = json!({ "account_id": other_acc, "amount": "55.00", "card_number": "4242424242424242",
        "exp_month": 12, "exp_year": 2031, "cvc": "123" });
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/family/deposits",
        Some(&stranger),
        Some("gift-2"),
        Some(card),
    )
    .await;
    assert_eq!(
        (s, &e["state"]),
        (StatusCode::CREATED, &json!("posted")),
        "a gift to any inmate: {e}"
    );
    app.t.cleanup().await;
}

battery!(
    family_reads_only_linked_accounts,
    money_flow,
    idempotent_replays,
    bad_requests,
    authorization,
    call_records,
    inmate_credentials,
    kiosk_sittings
);

#[tokio::test]
async fn health_metrics_and_openapi() {
    let app = app(Backend::Sqlite).await.unwrap();
    let (s, v) = send(&app, "GET", "/healthz", None, None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, _) = send(&app, "GET", "/readyz", None, None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, doc) = send(&app, "GET", "/api/v1/openapi.json", None, None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    // The call search names every end reason the gateway writes.
    let reasons = doc["paths"]["/calls"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "end_reason"))
        .map(|p| p["schema"]["enum"].clone())
        .unwrap_or_default();
    let all: Vec<&str> = sallyport::call::EndReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(reasons, json!(all), "openapi end_reason enum");
    assert!(all.contains(&"media_timeout"));
    // Every documented operation is routed: without a token it is a 401, never a 404.
    for op in sallyport::api::openapi::OPERATIONS {
        let path = format!("/api/v1{}", op.path)
            .replace("{fid}", "F1")
            .replace("{id}", "x")
            .replace("{number}", "1");
        let (s, v) = send(&app, &op.method.to_uppercase(), &path, None, None, None).await;
        assert!(
            s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
            "{} {} is documented but not routed: {v}",
            op.method,
            op.path
        );
    }
    // Every routed path is documented.
    let src = include_str!("../src/api/mod.rs");
    for line in src
        .lines()
        .filter(|l| l.trim_start().starts_with(".route(\"/"))
    {
        let path = line.split('"').nth(1).unwrap();
        if ["/healthz", "/readyz", "/metrics"].contains(&path) {
            continue;
        }
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} is routed but not in openapi.json"
        );
    }
    let (s, m) = send(&app, "GET", "/metrics", None, None, None).await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap();
    assert!(m.contains("sallyport_up 1"));
    assert!(
        m.contains(
            "sallyport_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"
        ),
        "{m}"
    );
    app.t.cleanup().await;
}

/// The cap table in force changes on FCC 25-75's compliance date (2026-04-06): before it
/// a plan is held to the 2024 caps, from it to the 2025 ones; `GET /rate-caps` shows the
/// table in force and the next one.
#[tokio::test]
async fn the_cap_in_force_is_the_one_of_the_day() {
    let app = app(Backend::Sqlite).await.unwrap();
    inproc::facility(&app, "F1").await; // a prison
                                        // The app's clock: 2026-03-02, under FCC 24-75.
    let (s, caps) = admin(&app, "GET", "/api/v1/rate-caps", None).await;
    assert_eq!(s, StatusCode::OK, "{caps}");
    assert!(
        caps["in_force"]["name"].as_str().unwrap().contains("24-75"),
        "{caps}"
    );
    assert_eq!(caps["next"]["effective_from"], "2026-04-06", "{caps}");
    assert_eq!(caps["next"]["facility_charge_per_minute"], "0.02", "{caps}");
    let prison_audio = |table: &Value| {
        table["caps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["category"] == "prison" && r["service"] == "audio")
            .map(|r| r["per_minute_cap"].clone())
            .unwrap()
    };
    assert_eq!(prison_audio(&caps["in_force"]), "0.06");
    assert_eq!(prison_audio(&caps["next"]), "0.11");
    // $0.10 a minute: above 24-75's prison cap, within 25-75's.
    for (id, rate) in [("p10", "0.10"), ("p12", "0.12")] {
        let (s, v) = upload(
            &app,
            &format!("/api/v1/rate-plans?id={id}"),
            &format!("class,service,per_minute,increment_secs\ndomestic,audio,{rate},60\n"),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let assign = |plan: &'static str| {
        let app = &app;
        async move {
            admin(
                app,
                "PATCH",
                "/api/v1/facilities/F1",
                Some(json!({ "rate_plan_id": plan })),
            )
            .await
        }
    };
    let (s, e) = assign("p10").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "before the date: {e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("0.06"),
        "{e}"
    );
    // From the compliance date on, 25-75's caps.
    let to_date = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 4, 6, 0, 0, 1).unwrap();
    app.clock
        .advance((to_date - app.clock.wall()).to_std().unwrap());
    let (s, e) = assign("p10").await;
    assert_eq!(s, StatusCode::OK, "after the date: {e}");
    let (s, e) = assign("p12").await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "above 25-75's $0.11: {e}"
    );
    let (_, caps) = admin(&app, "GET", "/api/v1/rate-caps", None).await;
    assert!(
        caps["in_force"]["name"].as_str().unwrap().contains("25-75"),
        "{caps}"
    );
    assert!(caps["next"].is_null(), "{caps}");
    // A jail of under 50 is its own tier now.
    let (s, v) = admin(
        &app,
        "PATCH",
        "/api/v1/facilities/F1",
        Some(json!({ "cap_category": "extremely_small_jail" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, e) = assign("p12").await;
    assert_eq!(s, StatusCode::OK, "within $0.19: {e}");
}
