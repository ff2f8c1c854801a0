//! The investigation API through the real router (`tower::ServiceExt::oneshot`), against
//! SQLite and PostgreSQL: password logins (expiry, logout, lockout), session search,
//! call detail, recordings (tickets, byte ranges, purged, privileged) and the audit
//! entries they leave, with every route tried without a token, with an expired token, with
//! the wrong role, from the wrong facility and on a privileged call.
//!
//! Requests carry a `ConnectInfo` peer address as the server would set it, so the audit
//! entries' `remote_addr` can be checked. Recordings are made without the capture code: a
//! small WAV written under a temporary recordings directory, registered with
//! `start_recording` / `finish_recording`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use sallyport::api::{router, AppState};
use sallyport::clock::Clock;
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use support::inproc::{
    self, admin, ended_call, err_code, fetch, issue, live_call, login, recording, request, send,
    session, user, App, Call, Setup, PEPPER,
};

const ADMIN: &str = "test-admin-token";
const PEER: &str = "203.0.113.7:4711";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).peer(PEER).recordings().app(backend).await
}

fn items(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A facility with one booked inmate (booking B-1). Returns (inmate id, account id).
async fn facility(app: &App, fid: &str) -> (String, String) {
    inproc::facility(app, fid).await;
    let inmate = inproc::inmate(app, fid, "B-1").await;
    (
        inmate["id"].as_str().unwrap().to_string(),
        inmate["account_id"].as_str().unwrap().to_string(),
    )
}

/// A user with a password, logged in; returns the token.
async fn investigator(app: &App, username: &str, facilities: &[&str]) -> String {
    user(app, username, facilities).await;
    session(app, username).await
}

/// The newest audit entries (admin view).
async fn audit(app: &App, limit: u32) -> Vec<Value> {
    let (s, v) = admin(app, "GET", &format!("/api/v1/audit?limit={limit}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

/// The newest audit entry with `action`.
async fn last_audit(app: &App, action: &str) -> Value {
    audit(app, 200)
        .await
        .into_iter()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no audit entry {action}"))
}

/// Password logins: creating users, login, me, logout, expiry, lockout, the same answer
/// for every refusal, and the audit entries they leave.
async fn logins(app: App) {
    facility(&app, "F1").await;
    facility(&app, "F2").await;
    let new_user = |name: &str, pw: &str, role: &str, f: &[&str]| {
        Some(json!({ "username": name, "password": pw, "role": role, "facilities": f }))
    };
    // Who may create users: global admins only.
    let body = new_user("inv1", "long-enough-pass", "investigator", &["F1"]);
    let (s, _) = send(&app, "POST", "/api/v1/users", None, body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let f2_admin = issue(&app, "f2-admin", "admin", &["F2"], Some(3600)).await;
    let (s, _) = send(&app, "POST", "/api/v1/users", Some(&f2_admin), body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an admin of one facility");
    let kiosk = issue(&app, "kiosk-1", "kiosk", &["F1"], Some(3600)).await;
    let (s, _) = send(&app, "POST", "/api/v1/users", Some(&kiosk), body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Rules.
    for (b, status) in [
        (
            new_user("inv1", "short-pass", "investigator", &["F1"]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            new_user("inv1", "long-enough-pass", "investigator", &[]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            new_user("has space", "long-enough-pass", "investigator", &["F1"]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            new_user("inv1", "long-enough-pass", "investigator", &["NOPE"]),
            StatusCode::NOT_FOUND,
        ),
        (
            new_user("inv1", "long-enough-pass", "warden", &["F1"]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, v) = admin(&app, "POST", "/api/v1/users", b.clone()).await;
        assert_eq!(s, status, "{b:?}: {v}");
    }
    let (s, user) = admin(&app, "POST", "/api/v1/users", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    assert_eq!(
        (user["role"].as_str(), user["facilities"].clone()),
        (Some("investigator"), json!(["F1"]))
    );
    assert!(!user.to_string().contains("long-enough-pass") && user.get("password_hash").is_none());
    let (s, e) = admin(&app, "POST", "/api/v1/users", body).await;
    assert_eq!((s, err_code(&e)), (StatusCode::CONFLICT, "conflict"));
    // Login and me.
    let (s, v) = login(&app, "inv1", "long-enough-pass").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let expires: DateTime<Utc> = serde_json::from_value(v["expires_at"].clone()).unwrap();
    assert_eq!(
        expires,
        app.clock.wall() + chrono::Duration::hours(8),
        "default TTL"
    );
    assert_eq!(
        (v["username"].as_str(), v["role"].as_str()),
        (Some("inv1"), Some("investigator"))
    );
    assert_eq!(v["facilities"], json!(["F1"]));
    let tok = v["token"].as_str().unwrap().to_string();
    let (s, me) = send(&app, "GET", "/api/v1/auth/me", Some(&tok), None).await;
    assert_eq!(
        (s, me["username"].as_str()),
        (StatusCode::OK, Some("inv1")),
        "{me}"
    );
    assert_eq!(me["expires_at"], v["expires_at"]);
    let (s, me) = admin(&app, "GET", "/api/v1/auth/me", None).await;
    assert_eq!(
        (s, me["facilities"].as_str(), me["expires_at"].is_null()),
        (StatusCode::OK, Some("all"), true)
    );
    let (s, _) = send(&app, "GET", "/api/v1/auth/me", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let entry = last_audit(&app, "auth.login").await;
    assert_eq!(
        (entry["actor"].as_str(), entry["remote_addr"].as_str()),
        (Some("inv1"), Some(PEER)),
        "{entry}"
    );
    // Every refusal is the same answer.
    let (s1, wrong) = login(&app, "inv1", "wrong-password!").await;
    let (s2, unknown) = login(&app, "nobody", "long-enough-pass").await;
    issue(&app, "token-only", "investigator", &["F1"], Some(3600)).await;
    let (s3, no_pw) = login(&app, "token-only", "long-enough-pass").await;
    assert_eq!(
        (s1, s2, s3),
        (
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED
        )
    );
    assert_eq!(err_code(&wrong), "invalid_credentials");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, no_pw);
    let entry = last_audit(&app, "auth.login_failed").await;
    assert_eq!(
        (
            entry["detail"]["reason"].as_str(),
            entry["remote_addr"].as_str()
        ),
        (Some("no_password"), Some(PEER))
    );
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({ "username": "inv1" })),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_json"),
        "{e}"
    );
    // Logout ends the token at once; the configured admin token cannot be logged out.
    let (s, _) = send(&app, "POST", "/api/v1/auth/logout", Some(&tok), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = send(&app, "GET", "/api/v1/auth/me", Some(&tok), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(&app, "POST", "/api/v1/auth/logout", Some(&tok), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = admin(&app, "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(last_audit(&app, "auth.logout").await["actor"], "inv1");
    // Expiry.
    let (_, v) = login(&app, "inv1", "long-enough-pass").await;
    let tok = v["token"].as_str().unwrap().to_string();
    app.clock.advance(Duration::from_secs(8 * 3600 - 1));
    let (s, _) = send(&app, "GET", "/api/v1/auth/me", Some(&tok), None).await;
    assert_eq!(s, StatusCode::OK);
    app.clock.advance(Duration::from_secs(1));
    let (s, e) = send(&app, "GET", "/api/v1/auth/me", Some(&tok), None).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    // Lockout: a success resets the count; five failures in a row lock even the right
    // password out, with the same answer; after the lock the right password works again.
    for _ in 0..4 {
        assert_eq!(
            login(&app, "inv1", "wrong-password!").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&app, "inv1", "long-enough-pass").await.0,
        StatusCode::OK
    );
    for _ in 0..5 {
        assert_eq!(
            login(&app, "inv1", "wrong-password!").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (s, locked) = login(&app, "inv1", "long-enough-pass").await;
    assert_eq!(
        (s, &locked),
        (StatusCode::UNAUTHORIZED, &wrong),
        "locked: the same answer"
    );
    let entries = audit(&app, 3).await;
    assert_eq!(entries[0]["detail"]["reason"], "locked", "{entries:?}");
    assert_eq!(
        entries[1]["detail"]["reason"], "wrong_password_locked",
        "{entries:?}"
    );
    app.clock.advance(Duration::from_secs(899));
    assert_eq!(
        login(&app, "inv1", "long-enough-pass").await.0,
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(
        login(&app, "inv1", "long-enough-pass").await.0,
        StatusCode::OK
    );
    // The lockout lives in the database: a second router (another node) sees it.
    for _ in 0..5 {
        login(&app, "inv1", "wrong-password!").await;
    }
    let mut config = Config::default();
    config.security.pin_pepper = PEPPER.into();
    let other = App {
        router: router(AppState::new(app.store.clone(), Arc::new(config))),
        clock: app.clock.clone(),
        store: app.store.clone(),
        admin: app.admin,
        peer: app.peer,
        rec_dir: None,
        t: TestDb::sqlite().await,
    };
    assert_eq!(
        login(&other, "inv1", "long-enough-pass").await.0,
        StatusCode::UNAUTHORIZED
    );
    other.t.cleanup().await;
    oversized_logins(&app, &wrong).await;
    concurrent_guesses(&app).await;
    app.t.cleanup().await;
}

/// A username that breaks the user rules or a password over 1024 bytes: the same 401,
/// and nothing else happens (no audit entry, no counted failure).
async fn oversized_logins(app: &App, wrong: &Value) {
    user(app, "inv-big", &["F1"]).await;
    let before = audit(app, 1000).await.len();
    for (name, pw) in [
        ("u".repeat(65).as_str(), "long-enough-pass"),
        ("inv-big", &"p".repeat(1025)),
    ] {
        let (s, v) = login(app, name, pw).await;
        assert_eq!((s, &v), (StatusCode::UNAUTHORIZED, wrong), "{}", name.len());
    }
    // A body over the JSON limit is refused before it is read, as for every route.
    let huge = "u".repeat(256 * 1024);
    let (s, v) = login(app, &huge, "long-enough-pass").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{v}"
    );
    assert_eq!(
        audit(app, 1000).await.len(),
        before,
        "refused before any work"
    );
    // The longest allowed name is audited whole.
    let name = "n".repeat(64);
    assert_eq!(login(app, &name, "x").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(last_audit(app, "auth.login_failed").await["target"], name);
    // Nothing was counted against inv-big.
    for _ in 0..4 {
        login(app, "inv-big", "wrong-password!").await;
    }
    assert_eq!(
        login(app, "inv-big", "long-enough-pass").await.0,
        StatusCode::OK
    );
}

/// Many wrong guesses at once: only as many as the lockout allows are checked, the rest
/// are refused as locked, and then the right password is refused too.
async fn concurrent_guesses(app: &App) {
    user(app, "inv-race", &["F1"]).await;
    let guesses =
        (0..20).map(|i| async move { login(app, "inv-race", &format!("guess-{i}")).await });
    for (s, _) in futures_util::future::join_all(guesses).await {
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let reasons: Vec<String> = audit(app, 25)
        .await
        .into_iter()
        .filter(|e| e["action"] == "auth.login_failed" && e["target"] == "inv-race")
        .map(|e| e["detail"]["reason"].as_str().unwrap_or("").to_string())
        .collect();
    let count = |r: &str| reasons.iter().filter(|x| *x == r).count();
    assert_eq!(
        (
            count("wrong_password"),
            count("wrong_password_locked"),
            count("locked")
        ),
        (4, 1, 15),
        "{reasons:?}"
    );
    let (s, _) = login(app, "inv-race", "long-enough-pass").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "locked");
    assert_eq!(
        last_audit(app, "auth.login_failed").await["detail"]["reason"],
        "locked"
    );
}

/// Session search: every filter, paging, scope, roles, tokens, and the audit entry.
async fn search(app: App) {
    let (i1, acc1) = facility(&app, "F1").await;
    let (i2, _) = facility(&app, "F2").await;
    let day = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap();
    let calls = [
        (
            "s1",
            "F1",
            "5551230001",
            "+15551230001",
            Some(i1.as_str()),
            "callee_hangup",
            day(1, 10),
        ),
        (
            "s2",
            "F1",
            "5551230002",
            "+15551230002",
            Some(i1.as_str()),
            "funds_exhausted",
            day(2, 10),
        ),
        (
            "s3",
            "F1",
            "5551230001",
            "+15551230001",
            None,
            "no_answer",
            day(2, 12),
        ),
        (
            "t1",
            "F2",
            "5551230001",
            "+15551230001",
            Some(i2.as_str()),
            "callee_hangup",
            day(1, 11),
        ),
    ];
    for (id, fac, dialed, e164, inmate, reason, at) in calls {
        app.clock.set_wall(at);
        let c = Call {
            id,
            facility: fac,
            dialed,
            e164,
            inmate,
            reason,
            privileged: false,
        };
        ended_call(&app, c).await;
    }
    app.clock.set_wall(day(2, 18));
    live_call(&app, "live-ok", "F1", true, false).await;
    live_call(&app, "live-priv", "F1", true, true).await;
    live_call(&app, "live-ringing", "F1", false, false).await;
    let q = |query: &str| format!("/api/v1/calls?{query}");
    let ids = |v: &Value| items(v).join(",");
    let cases = [
        ("facility_id=F1&end_reason=callee_hangup", "s1"),
        ("facility=F1&reason=callee_hangup", "s1"),
        (&format!("inmate_id={i1}") as &str, "s2,s1"),
        ("booking_number=B-1", "s2,t1,s1"),
        ("booking_number=B-1&facility_id=F2", "t1"),
        ("number=%2B15551230002", "s2"),
        ("number=(555)%20123-0001&facility_id=F1", "s3,s1"),
        ("number=5551230001&from=2026-03-02", "s3"),
        ("from=2026-03-01T10:30:00Z&to=2026-03-01", "t1"),
        ("to=2026-03-01&facility_id=F1", "s1"),
        ("end_reason=no_answer&inmate_id=", "s3"),
        ("active=true", "live-ringing,live-priv,live-ok"),
    ];
    for (query, want) in cases {
        let (s, v) = admin(&app, "GET", &q(query), None).await;
        assert_eq!(
            (s, ids(&v)),
            (StatusCode::OK, want.to_string()),
            "{query}: {v}"
        );
    }
    // Paging: total counts every match, pages are newest first.
    let (_, v) = admin(&app, "GET", &q("limit=2"), None).await;
    assert_eq!(
        (
            v["total"].as_i64(),
            v["limit"].as_i64(),
            v["offset"].as_i64()
        ),
        (Some(7), Some(2), Some(0))
    );
    assert_eq!(ids(&v), "live-ringing,live-priv");
    let (_, v) = admin(&app, "GET", &q("limit=2&offset=6"), None).await;
    assert_eq!((ids(&v), v["total"].as_i64()), ("s1".to_string(), Some(7)));
    let (_, v) = admin(&app, "GET", &q("limit=100000"), None).await;
    assert_eq!(v["limit"], 500);
    let (_, v) = admin(&app, "GET", "/api/v1/calls", None).await;
    assert_eq!(v["limit"], 50);
    for bad in [
        "limit=x",
        "from=yesterday",
        "colour=red",
        "end_reason=hung_up",
    ] {
        let (s, e) = admin(&app, "GET", &q(bad), None).await;
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad}: {e}"
        );
    }
    // Scope, roles, tokens.
    let inv2 = investigator(&app, "inv2", &["F2"]).await;
    let (s, v) = send(&app, "GET", "/api/v1/calls", Some(&inv2), None).await;
    assert_eq!((s, ids(&v)), (StatusCode::OK, "t1".to_string()), "F2 only");
    let (_, v) = send(
        &app,
        "GET",
        &q("inmate_id=".to_string().as_str()),
        Some(&inv2),
        None,
    )
    .await;
    assert_eq!(ids(&v), "t1");
    let (_, v) = send(
        &app,
        "GET",
        &q(&format!("inmate_id={i1}")),
        Some(&inv2),
        None,
    )
    .await;
    assert_eq!(
        (ids(&v), v["total"].as_i64()),
        (String::new(), Some(0)),
        "another facility's inmate: nothing"
    );
    let (s, e) = send(&app, "GET", &q("facility_id=F1"), Some(&inv2), None).await;
    assert_eq!((s, err_code(&e)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, _) = send(&app, "GET", "/api/v1/calls/s1", Some(&inv2), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = send(&app, "GET", "/api/v1/calls/active", Some(&inv2), None).await;
    assert_eq!((s, v.as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    for role in ["family", "kiosk"] {
        let t = issue(&app, &format!("{role}-1"), role, &["F1"], Some(3600)).await;
        for path in ["/api/v1/calls", "/api/v1/calls/active", "/api/v1/calls/s1"] {
            let (s, _) = send(&app, "GET", path, Some(&t), None).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{role} {path}");
        }
    }
    let short = issue(&app, "inv-short", "investigator", &["F1"], Some(60)).await;
    let (s, _) = send(&app, "GET", "/api/v1/calls", Some(&short), None).await;
    assert_eq!(s, StatusCode::OK);
    app.clock.advance(Duration::from_secs(61));
    for path in ["/api/v1/calls", "/api/v1/calls/active", "/api/v1/calls/s1"] {
        let (s, _) = send(&app, "GET", path, Some(&short), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "expired {path}");
        let (s, _) = send(&app, "GET", path, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "no token {path}");
    }
    // Searches are audited with the filters, the actor and the address.
    let inv1 = investigator(&app, "inv1", &["F1"]).await;
    let (_, v) = send(
        &app,
        "GET",
        &q("end_reason=callee_hangup&number=5551230001"),
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!(ids(&v), "s1");
    let e = last_audit(&app, "call.search").await;
    assert_eq!(
        (
            e["actor"].as_str(),
            e["remote_addr"].as_str(),
            e["facility_id"].as_str()
        ),
        (Some("inv1"), Some(PEER), Some("F1")),
        "{e}"
    );
    assert_eq!(e["detail"]["filters"]["end_reason"], "callee_hangup", "{e}");
    assert_eq!(e["detail"]["filters"]["number"], "5551230001", "{e}");
    assert_eq!(
        (e["detail"]["total"].as_i64(), e["detail"]["role"].as_str()),
        (Some(1), Some("investigator"))
    );
    // Live calls: only the accepted, non-privileged one may be listened to.
    let (_, v) = send(&app, "GET", "/api/v1/calls/active", Some(&inv1), None).await;
    assert_eq!(
        inproc::listenable(&v),
        vec![
            ("live-ringing", false),
            ("live-priv", false),
            ("live-ok", true)
        ]
    );
    // One call: its charges (the session's debits) and its recording (none yet).
    let (s, d) = send(
        &app,
        "POST",
        &format!("/api/v1/accounts/{acc1}/deposits"),
        Some(ADMIN),
        Some(json!({ "amount": "5.00", "method": "online" })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "needs a key: {d}");
    let mut req = request(
        "POST",
        &format!("/api/v1/accounts/{acc1}/deposits"),
        Some(ADMIN),
        Some(json!({ "amount": "5.00", "method": "online" })),
    );
    req.headers_mut()
        .insert("idempotency-key", "dep-1".parse().unwrap());
    assert_eq!(fetch(&app, req).await.0, StatusCode::CREATED);
    for increment in [1, 2] {
        let debit = sallyport::ledger::SessionDebit {
            session_id: "live-ok".into(),
            increment,
            account_id: acc1.clone(),
            amount: "0.21".parse().unwrap(),
            service: sallyport::ledger::Service::Audio,
            facility_id: "F1".into(),
        };
        app.store.ledger().debit_session(debit).await.unwrap();
    }
    let (s, v) = send(&app, "GET", "/api/v1/calls/live-ok", Some(&inv1), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["id"].as_str(),
            v["listenable"].as_bool(),
            v["recording"].is_null()
        ),
        (Some("live-ok"), Some(true), true),
        "{v}"
    );
    let charges = v["charges"].as_array().unwrap();
    assert_eq!(charges.len(), 2, "{v}");
    assert_eq!(
        (
            charges[0]["increment"].as_i64(),
            charges[0]["amount"].as_str(),
            charges[0]["balance_after"].as_str()
        ),
        (Some(1), Some("0.21"), Some("4.79"))
    );
    assert_eq!(
        (
            charges[1]["increment"].as_i64(),
            charges[1]["balance_after"].as_str(),
            charges[1]["kind"].as_str()
        ),
        (Some(2), Some("4.58"), Some("call_charge"))
    );
    let (_, v) = send(&app, "GET", "/api/v1/calls/s1", Some(&inv1), None).await;
    assert_eq!(v["charges"], json!([]));
    app.t.cleanup().await;
}

/// Recordings: metadata, tickets, byte ranges, downloads, purged and privileged, with
/// every refusal and the audit entries.
async fn recordings(app: App) {
    let (i1, _) = facility(&app, "F1").await;
    let (i2, _) = facility(&app, "F2").await;
    let call = Call::answered;
    ended_call(&app, call("r1", "F1", &i1, false)).await;
    ended_call(&app, call("p1", "F1", &i1, true)).await;
    ended_call(&app, call("n1", "F1", &i1, false)).await;
    ended_call(&app, call("r2", "F2", &i2, false)).await;
    let (rec1, wav1) = recording(&app, "r1", "F1", 16_000, true).await;
    let (rec2, _) = recording(&app, "r2", "F2", 800, true).await;
    let len = wav1.len();
    let sha1 = hex::encode(Sha256::digest(&wav1));
    let inv1 = investigator(&app, "inv1", &["F1"]).await;
    let inv2 = investigator(&app, "inv2", &["F2"]).await;
    let family = issue(&app, "family-1", "family", &["F1"], Some(3600)).await;
    let kiosk = issue(&app, "kiosk-1", "kiosk", &["F1"], Some(3600)).await;
    let short = issue(&app, "inv-short", "investigator", &["F1"], Some(60)).await;
    // Metadata, from the call and by id.
    let (s, v) = send(&app, "GET", "/api/v1/calls/r1/recording", Some(&inv1), None).await;
    assert_eq!(
        (
            s,
            v["id"].as_str(),
            v["sha256"].as_str(),
            v["status"].as_str()
        ),
        (
            StatusCode::OK,
            Some(rec1.as_str()),
            Some(sha1.as_str()),
            Some("complete")
        ),
        "{v}"
    );
    assert_eq!(v["bytes"].as_u64(), Some(len as u64));
    let (s, v) = send(
        &app,
        "GET",
        &format!("/api/v1/recordings/{rec1}"),
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!((s, v["session_id"].as_str()), (StatusCode::OK, Some("r1")));
    let (_, v) = send(&app, "GET", "/api/v1/calls/r1", Some(&inv1), None).await;
    assert_eq!(
        v["recording"]["id"],
        rec1.as_str(),
        "the call shows its recording"
    );
    let (s, e) = send(&app, "GET", "/api/v1/calls/n1/recording", Some(&inv1), None).await;
    assert_eq!((s, err_code(&e)), (StatusCode::NOT_FOUND, "no_recording"));
    let (s, _) = send(
        &app,
        "GET",
        "/api/v1/recordings/rec_nope",
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A privileged call: refused, 403 `privileged`, audited with the address.
    let (s, e) = send(&app, "GET", "/api/v1/calls/p1/recording", Some(&inv1), None).await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "privileged"),
        "{e}"
    );
    let (_, v) = send(&app, "GET", "/api/v1/calls/p1", Some(&inv1), None).await;
    assert!(v["recording"].is_null(), "{v}");
    let entry = last_audit(&app, "recording.refused").await;
    assert_eq!(
        (
            entry["actor"].as_str(),
            entry["target"].as_str(),
            entry["remote_addr"].as_str(),
            entry["facility_id"].as_str()
        ),
        (Some("inv1"), Some("p1"), Some(PEER), Some("F1")),
        "{entry}"
    );
    // Every route refuses no token, an expired token, the wrong role, the wrong facility.
    app.clock.advance(Duration::from_secs(61));
    let routes = [
        ("GET", format!("/api/v1/recordings/{rec1}")),
        ("POST", format!("/api/v1/recordings/{rec1}/play")),
        ("POST", format!("/api/v1/recordings/{rec1}/download")),
        ("GET", format!("/api/v1/recordings/{rec1}/audio")),
        ("GET", "/api/v1/calls/r1/recording".to_string()),
    ];
    for (method, path) in &routes {
        for (who, tok, status) in [
            ("no token", None, StatusCode::UNAUTHORIZED),
            ("expired", Some(short.as_str()), StatusCode::UNAUTHORIZED),
            ("family", Some(family.as_str()), StatusCode::FORBIDDEN),
            ("kiosk", Some(kiosk.as_str()), StatusCode::FORBIDDEN),
            ("other facility", Some(inv2.as_str()), StatusCode::FORBIDDEN),
        ] {
            let (s, e) = send(&app, method, path, tok, None).await;
            assert_eq!(s, status, "{who} {method} {path}: {e}");
        }
    }
    // A playback ticket: the URL plays without a bearer token, whole or by ranges.
    let (s, t) = send(
        &app,
        "POST",
        &format!("/api/v1/recordings/{rec1}/play"),
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!(
        (s, t["sha256"].as_str()),
        (StatusCode::OK, Some(sha1.as_str())),
        "{t}"
    );
    let url = t["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("/api/v1/recordings/{rec1}/audio?ticket=")),
        "{url}"
    );
    let expires: DateTime<Utc> = serde_json::from_value(t["expires_at"].clone()).unwrap();
    assert_eq!(
        expires,
        app.clock.wall() + chrono::Duration::seconds(900 + 1),
        "15 min plus the 1 s recording"
    );
    let entry = last_audit(&app, "recording.play").await;
    assert_eq!(
        (
            entry["actor"].as_str(),
            entry["target"].as_str(),
            entry["remote_addr"].as_str(),
            entry["detail"]["via"].as_str()
        ),
        (
            Some("inv1"),
            Some(rec1.as_str()),
            Some(PEER),
            Some("ticket")
        ),
        "{entry}"
    );
    let get = |uri: &str, range: Option<&str>| {
        let mut req = Request::builder().uri(uri);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.body(Body::empty()).unwrap()
    };
    let (s, h, body) = fetch(&app, get(&url, None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, wav1);
    assert_eq!(h["content-type"], "audio/wav");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], len.to_string().as_str());
    assert_eq!(h["x-content-sha256"], sha1.as_str());
    assert!(h.get("content-disposition").is_none());
    let n = len as u64;
    for (range, a, b) in [
        ("bytes=0-99", 0, 99),
        ("bytes=5000-9999", 5000, 9999),
        ("bytes=-500", n - 500, n - 1),
        ("bytes=16000-", 16000, n - 1),
        ("bytes=16000-99999999", 16000, n - 1),
    ] {
        let (s, h, body) = fetch(&app, get(&url, Some(range))).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            h["content-range"],
            format!("bytes {a}-{b}/{n}").as_str(),
            "{range}"
        );
        assert_eq!(h["content-length"], (b - a + 1).to_string().as_str());
        assert_eq!(body, wav1[a as usize..=b as usize], "{range}");
    }
    let (s, h, _) = fetch(&app, get(&url, Some(&format!("bytes={n}-")))).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], format!("bytes */{n}").as_str());
    let (s, _, body) = fetch(&app, get(&url, Some("bytes=0-1,5-6"))).await;
    assert_eq!(
        (s, body.len()),
        (StatusCode::OK, len),
        "several ranges: the whole file"
    );
    // Tickets: tampered, for another recording, for playback used to download, expired.
    let mut tampered = url.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
    let (s, _, body) = fetch(&app, get(&String::from_utf8(tampered).unwrap(), None)).await;
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNAUTHORIZED, "invalid_ticket")
    );
    let (s, _, body) = fetch(
        &app,
        get(
            &format!("/api/v1/recordings/{rec1}/audio?ticket=00.00"),
            None,
        ),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let other = url.replace(&rec1, &rec2);
    let (s, _, body) = fetch(&app, get(&other, None)).await;
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "ticket_mismatch")
    );
    let (s, _, body) = fetch(&app, get(&format!("{url}&download=1"), None)).await;
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, err_code(&e)), (StatusCode::FORBIDDEN, "ticket_purpose"));
    // A download ticket: an attachment, audited as a download.
    let (s, t) = send(
        &app,
        "POST",
        &format!("/api/v1/recordings/{rec1}/download"),
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!(
        (s, t["sha256"].as_str()),
        (StatusCode::OK, Some(sha1.as_str())),
        "{t}"
    );
    let durl = t["url"].as_str().unwrap();
    assert!(durl.ends_with("&download=1"), "{durl}");
    let (s, h, body) = fetch(&app, get(durl, None)).await;
    assert_eq!((s, body.len()), (StatusCode::OK, len));
    assert_eq!(h["content-disposition"], "attachment; filename=\"r1.wav\"");
    assert_eq!(h["x-content-sha256"], sha1.as_str());
    let entry = last_audit(&app, "recording.download").await;
    assert_eq!(
        (
            entry["actor"].as_str(),
            entry["remote_addr"].as_str(),
            entry["facility_id"].as_str()
        ),
        (Some("inv1"), Some(PEER), Some("F1"))
    );
    assert_eq!(
        (
            entry["detail"]["via"].as_str(),
            entry["detail"]["range"].as_str()
        ),
        (Some("ticket_fetch"), Some("all")),
        "the fetch of a download ticket: {entry}"
    );
    // A download ticket is an attachment even without `download=1`, and every fetch of
    // it is audited, from any byte.
    let before = audit(&app, 500).await.len();
    let bare = durl.trim_end_matches("&download=1");
    let (s, h, _) = fetch(&app, get(bare, Some("bytes=1-"))).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-disposition"], "attachment; filename=\"r1.wav\"");
    assert_eq!(audit(&app, 500).await.len(), before + 1);
    let entry = last_audit(&app, "recording.download").await;
    assert_eq!(entry["detail"]["range"], format!("bytes=1-{}", len - 1));
    // A play ticket's fetches are audited when they start at byte 0, not on every seek.
    let before = audit(&app, 500).await.len();
    fetch(&app, get(&url, Some("bytes=0-99"))).await;
    fetch(&app, get(&url, Some("bytes=100-199"))).await;
    assert_eq!(audit(&app, 500).await.len(), before + 1);
    let entry = last_audit(&app, "recording.play").await;
    assert_eq!(
        (
            entry["actor"].as_str(),
            entry["detail"]["via"].as_str(),
            entry["detail"]["range"].as_str()
        ),
        (Some("inv1"), Some("ticket_fetch"), Some("bytes=0-99"))
    );
    // With a bearer token: every fetch is audited, with its range (a fetch from byte 1
    // takes the file as surely as one from byte 0).
    let bearer = |range: Option<&str>, download: bool| {
        let q = if download { "?download=1" } else { "" };
        let mut req = get(&format!("/api/v1/recordings/{rec1}/audio{q}"), range);
        req.headers_mut()
            .insert("authorization", format!("Bearer {inv1}").parse().unwrap());
        req
    };
    let before = audit(&app, 500).await.len();
    let (s, _, body) = fetch(&app, bearer(Some("bytes=0-9"), false)).await;
    assert_eq!((s, body.len()), (StatusCode::PARTIAL_CONTENT, 10));
    let (s, _, body) = fetch(&app, bearer(Some("bytes=1-"), false)).await;
    assert_eq!((s, body.len()), (StatusCode::PARTIAL_CONTENT, len - 1));
    assert_eq!(
        audit(&app, 500).await.len(),
        before + 2,
        "one entry per fetch"
    );
    let entry = last_audit(&app, "recording.play").await;
    assert_eq!(
        (
            entry["detail"]["via"].as_str(),
            entry["detail"]["range"].as_str(),
            entry["remote_addr"].as_str()
        ),
        (
            Some("bearer"),
            Some(format!("bytes=1-{}", len - 1).as_str()),
            Some(PEER)
        )
    );
    let (s, h, _) = fetch(&app, bearer(None, true)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(
        last_audit(&app, "recording.download").await["detail"]["via"],
        "bearer"
    );
    // Admins of every facility too; an expired ticket stops working.
    let (s, _) = admin(
        &app,
        "POST",
        &format!("/api/v1/recordings/{rec2}/play"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    app.clock.advance(Duration::from_secs(900));
    let (s, _, _) = fetch(&app, get(&url, Some("bytes=0-1"))).await;
    assert_eq!(
        s,
        StatusCode::PARTIAL_CONTENT,
        "still valid for the recording's length"
    );
    app.clock.advance(Duration::from_secs(2));
    let (s, _, body) = fetch(&app, get(&url, Some("bytes=0-1"))).await;
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNAUTHORIZED, "ticket_expired")
    );
    tickets_follow_their_token(&app, &rec1).await;
    // A recording in progress plays (it grows); it has no hash yet.
    ended_call(&app, call("r3", "F1", &i1, false)).await;
    let (rec3, wav3) = recording(&app, "r3", "F1", 3_000, false).await;
    let (s, t) = send(
        &app,
        "POST",
        &format!("/api/v1/recordings/{rec3}/play"),
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!(
        (s, t["sha256"].is_null(), t["status"].as_str()),
        (StatusCode::OK, true, Some("recording")),
        "{t}"
    );
    let (s, h, body) = fetch(&app, get(t["url"].as_str().unwrap(), None)).await;
    assert_eq!((s, body), (StatusCode::OK, wav3));
    assert!(h.get("x-content-sha256").is_none());
    // A purged recording: 410 for tickets and audio; its metadata stays.
    let t = send(
        &app,
        "POST",
        &format!("/api/v1/recordings/{rec1}/play"),
        Some(&inv1),
        None,
    )
    .await
    .1;
    sqlx::query("UPDATE recordings SET status = 'purged', purged_at = 1 WHERE id = $1")
        .bind(&rec1)
        .execute(app.t.db.pool())
        .await
        .unwrap();
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/recordings/{rec1}/play"),
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!((s, err_code(&e)), (StatusCode::GONE, "purged"));
    let (s, _, _) = fetch(&app, get(t["url"].as_str().unwrap(), None)).await;
    assert_eq!(s, StatusCode::GONE, "a ticket issued before the purge");
    let (s, _, _) = fetch(&app, bearer(None, false)).await;
    assert_eq!(s, StatusCode::GONE);
    let (s, v) = send(
        &app,
        "GET",
        &format!("/api/v1/recordings/{rec1}"),
        Some(&inv1),
        None,
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("purged")));
    // A file gone without a purge: 404 `file_missing`, not a crash.
    std::fs::remove_file(app.recordings().join("2026/03/02/r2.wav")).unwrap();
    let (s, e) = send(
        &app,
        "GET",
        &format!("/api/v1/recordings/{rec2}/audio"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!((s, err_code(&e)), (StatusCode::NOT_FOUND, "file_missing"));
    // A recording stuck in `recording` for a week: its tickets last at most the TTL plus
    // 4 hours.
    ended_call(&app, call("r4", "F1", &i1, false)).await;
    let (rec4, _) = recording(&app, "r4", "F1", 800, false).await;
    app.clock.advance(Duration::from_secs(7 * 86_400));
    let (s, t) = admin(
        &app,
        "POST",
        &format!("/api/v1/recordings/{rec4}/play"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let expires: DateTime<Utc> = serde_json::from_value(t["expires_at"].clone()).unwrap();
    assert_eq!(
        expires,
        app.clock.wall() + chrono::Duration::seconds(900 + 4 * 3600)
    );
    // An admin-token ticket works while that token is configured.
    let (s, _, _) = fetch(&app, get(t["url"].as_str().unwrap(), Some("bytes=0-1"))).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    // The audit chain still verifies.
    let (_, v) = admin(&app, "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(v["problems"], json!([]), "{v}");
    app.t.cleanup().await;
}

/// A ticket works only while the token that asked for it lives and its user may still
/// reach the recording.
async fn tickets_follow_their_token(app: &App, rec: &str) {
    let get = |uri: &str| Request::builder().uri(uri).body(Body::empty()).unwrap();
    let ticket = |tok: String, what: &'static str| async move {
        let path = format!("/api/v1/recordings/{rec}/{what}");
        let (s, t) = send(app, "POST", &path, Some(&tok), None).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        t["url"].as_str().unwrap().to_string()
    };
    let code = |body: &[u8]| {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        err_code(&v).to_string()
    };
    // Logged out: refused.
    let tok = investigator(app, "inv-t1", &["F1"]).await;
    let url = ticket(tok.clone(), "play").await;
    assert_eq!(fetch(app, get(&url)).await.0, StatusCode::OK);
    let (s, _) = send(app, "POST", "/api/v1/auth/logout", Some(&tok), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, body) = fetch(app, get(&url)).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "ticket_revoked")
    );
    // The token expired: refused (a token-only user with a one-minute token).
    let short = issue(app, "inv-t2", "investigator", &["F1"], Some(60)).await;
    let url = ticket(short, "download").await;
    assert_eq!(fetch(app, get(&url)).await.0, StatusCode::OK);
    app.clock.advance(Duration::from_secs(61));
    let (s, _, body) = fetch(app, get(&url)).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "ticket_revoked")
    );
    // The user lost the facility: refused.
    let tok = investigator(app, "inv-t3", &["F1"]).await;
    let url = ticket(tok, "play").await;
    sqlx::query(
        "DELETE FROM user_facilities WHERE user_id = \
         (SELECT id FROM users WHERE username = $1)",
    )
    .bind("inv-t3")
    .execute(app.t.db.pool())
    .await
    .unwrap();
    assert_eq!(fetch(app, get(&url)).await.0, StatusCode::FORBIDDEN);
}

/// An unknown user's login does the same database write as a wrong password (so their
/// timing does not differ by it): on SQLite both wait for the write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_login_does_the_same_database_write() {
    use sallyport::store::{LockoutPolicy, LoginOutcome, LoginRefusal};
    let app = app(Backend::Sqlite).await.unwrap();
    let policy = LockoutPolicy {
        after_failures: 5,
        lock_secs: 900,
    };
    let tx = app.t.db.begin_write().await.unwrap();
    let store = app.store.clone();
    let attempt = tokio::spawn(async move {
        store
            .login("nobody", "long-enough-pass", 3600, policy)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !attempt.is_finished(),
        "the unknown user's attempt waits for the write lock"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        attempt.await.unwrap(),
        LoginOutcome::Refused(LoginRefusal::UnknownUser)
    );
    app.t.cleanup().await;
}

battery!(logins, search, recordings);
