//! Family accounts through the real router (`tower::ServiceExt::oneshot`), on SQLite and
//! PostgreSQL: register, verify by the link in the `.eml` file the gateway wrote, log in to
//! a cookie session (HttpOnly, SameSite=Strict), CSRF refused without the token, log out;
//! a reset link that works once and expires (the clock is moved); the lockout; the same
//! answers for known and unknown addresses; a change of password or address that ends
//! the other sessions; closing; the limit per peer address.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use support::mail::quoted_printable;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::{TimeZone, Utc};
use sallyport::api::{router, AppState};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::store::Store;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::inproc::{fetch, json_of, App};
use tempfile::TempDir;

const ADMIN: &str = "family-admin-token";
const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "another long passphrase";

struct Fam {
    app: App,
    mail: TempDir,
}

async fn app(backend: Backend) -> Option<Fam> {
    app_with(backend, None, |_| {}).await
}

async fn app_with(backend: Backend, peer: Option<&str>, change: fn(&mut Config)) -> Option<Fam> {
    let t = TestDb::of(backend).await?;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap(),
    ));
    let mail = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.http.admin_token = ADMIN.into();
    config.security.pin_pepper = support::inproc::PEPPER.into();
    config.mail.dir = mail.path().to_path_buf();
    config.family.public_url = "http://portal.test".into();
    change(&mut config);
    let store = Store::new(
        t.db.clone(),
        clock.clone() as Arc<dyn Clock>,
        &config.security.pin_pepper,
    );
    let router = router(AppState::new(store.clone(), Arc::new(config)));
    Some(Fam {
        app: App {
            router,
            clock,
            store,
            admin: ADMIN,
            peer: peer.map(|p| p.parse().unwrap()),
            rec_dir: None,
            t,
        },
        mail,
    })
}

battery!(
    register_verify_login_logout,
    reset_link_works_once_and_expires,
    repeated_failures_lock_the_account,
    known_and_unknown_addresses_get_the_same_answers,
    a_new_password_ends_the_other_sessions,
    closing_the_account,
    attempts_are_limited_per_address,
    emails_to_one_address_are_capped,
    an_earlier_registrant_of_an_unverified_address_gets_no_way_in,
    the_cookie_is_secure_behind_https_and_staff_tokens_are_not_accounts,
    an_idle_prepaid_balance_is_never_taken_and_its_owner_is_told_once,
);

/// A request with a JSON body (if any), the session cookie (if any) and the CSRF token
/// (if any).
async fn call(
    f: &Fam,
    method: &str,
    path: &str,
    body: Option<Value>,
    cookie: Option<&str>,
    csrf: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/api/v1/family{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("sp_family={c}"));
    }
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let (s, h, bytes) = fetch(&f.app, req).await;
    (s, h, json_of(&bytes))
}

async fn post(f: &Fam, path: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, v) = call(f, "POST", path, Some(body), None, None).await;
    (s, v)
}

/// The link secret of `purpose` in the newest unread email to `to` (waits for the
/// background send); the file is removed once read.
async fn link(dir: &Path, to: &str, purpose: &str) -> String {
    for _ in 0..200 {
        if let Some((path, text)) = find_mail(dir, to, purpose) {
            std::fs::remove_file(path).unwrap();
            let start = text.find(&format!("#{purpose}=")).unwrap() + purpose.len() + 2;
            return text[start..start + 64].to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no {purpose} email to {to} in {}", dir.display());
}

fn find_mail(dir: &Path, to: &str, marker: &str) -> Option<(PathBuf, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files.into_iter().find_map(|p| {
        let text = quoted_printable(&std::fs::read_to_string(&p).ok()?);
        let for_them = text
            .lines()
            .any(|l| l.starts_with("To: ") && l.contains(to));
        (for_them && text.contains(&format!("#{marker}="))).then_some((p, text))
    })
}

/// Whether any email to `to` holding `needle` arrives within a second.
async fn has_mail(dir: &Path, to: &str, needle: &str) -> bool {
    for _ in 0..40 {
        let found = std::fs::read_dir(dir).into_iter().flatten().any(|e| {
            let text =
                quoted_printable(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
            text.lines()
                .any(|l| l.starts_with("To: ") && l.contains(to))
                && text.contains(needle)
        });
        if found {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Registers `email` and verifies it by the emailed link.
async fn registered(f: &Fam, email: &str) {
    let (s, v) = post(
        f,
        "/register",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let token = link(f.mail.path(), email, "verify").await;
    let (s, v) = post(f, "/verify", json!({ "token": token })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Logs in; returns the cookie's value, the whole `Set-Cookie` and the CSRF token.
async fn login(f: &Fam, email: &str, password: &str) -> (String, String, String) {
    let (s, h, v) = call(
        f,
        "POST",
        "/login",
        Some(json!({ "email": email, "password": password })),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let set = h["set-cookie"].to_str().unwrap().to_string();
    let value = set
        .strip_prefix("sp_family=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (value, set, v["csrf_token"].as_str().unwrap().to_string())
}

async fn session_status(f: &Fam, cookie: &str) -> StatusCode {
    call(f, "GET", "/session", None, Some(cookie), None).await.0
}

async fn register_verify_login_logout(f: Fam) {
    let email = "ana.diaz@example.org";
    let (s, v) = post(
        &f,
        "/register",
        json!({ "email": "  Ana.Diaz@Example.ORG ", "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // Before the address is verified, the right password learns only that.
    let (s, v) = post(
        &f,
        "/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "email_not_verified");
    let token = link(f.mail.path(), email, "verify").await;
    let (s, v) = post(&f, "/verify", json!({ "token": token })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = post(&f, "/verify", json!({ "token": token })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a link works once: {v}");
    assert_eq!(v["error"]["code"], "invalid_link");

    let (cookie, set, csrf) = login(&f, email, PASSWORD).await;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "not Secure over plain http: {set}");
    let (s, _, v) = call(&f, "GET", "/session", None, Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["email"], email);
    assert_eq!(v["csrf_token"], csrf.as_str());
    // The cookie is a family caller for the rest of the API too.
    let req = Request::builder()
        .uri("/api/v1/auth/me")
        .header("cookie", format!("sp_family={cookie}"))
        .body(Body::empty())
        .unwrap();
    let (s, _, bytes) = fetch(&f.app, req).await;
    let me = json_of(&bytes);
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["role"], "family");
    assert_eq!(me["facilities"], json!([]));

    // A state-changing request carried by the cookie needs the session's CSRF token.
    let (s, _, v) = call(&f, "POST", "/logout", None, Some(&cookie), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "csrf_failed");
    let (s, _, v) = call(
        &f,
        "POST",
        "/logout",
        None,
        Some(&cookie),
        Some("0".repeat(64).as_str()),
    )
    .await;
    assert_eq!(v["error"]["code"], "csrf_failed", "{s}");
    assert_eq!(session_status(&f, &cookie).await, StatusCode::OK);
    let (s, h, _) = call(&f, "POST", "/logout", None, Some(&cookie), Some(&csrf)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(session_status(&f, &cookie).await, StatusCode::UNAUTHORIZED);

    // Bad input: clear errors naming the field.
    let (s, v) = post(
        &f,
        "/register",
        json!({ "email": "not-an-address", "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("email:"),
        "{v}"
    );
    let (s, v) = post(
        &f,
        "/register",
        json!({ "email": "bo@example.org", "password": "short" }),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = post(&f, "/register", json!({ "email": "bo@example.org" })).await;
    assert_eq!(s.as_u16() / 100, 4, "{v}");
}

async fn reset_link_works_once_and_expires(f: Fam) {
    let email = "carl@example.org";
    registered(&f, email).await;
    let (old_session, _, _) = login(&f, email, PASSWORD).await;
    let (s, v) = post(&f, "/password/forgot", json!({ "email": email })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let token = link(f.mail.path(), email, "reset").await;
    // A password the rules refuse does not use up the link.
    let (s, _) = post(
        &f,
        "/password/reset",
        json!({ "token": token, "password": "short" }),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = post(
        &f,
        "/password/reset",
        json!({ "token": token, "password": NEW_PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = post(
        &f,
        "/password/reset",
        json!({ "token": token, "password": PASSWORD }),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_link"))
    );
    assert_eq!(
        session_status(&f, &old_session).await,
        StatusCode::UNAUTHORIZED,
        "a reset ends every session"
    );
    let (s, _) = post(
        &f,
        "/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    login(&f, email, NEW_PASSWORD).await;

    // A link past its hour does nothing.
    post(&f, "/password/forgot", json!({ "email": email })).await;
    let token = link(f.mail.path(), email, "reset").await;
    f.app.clock.advance(Duration::from_secs(3_601));
    let (s, v) = post(
        &f,
        "/password/reset",
        json!({ "token": token, "password": PASSWORD }),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_link"))
    );
    // Only the newest link works.
    post(&f, "/password/forgot", json!({ "email": email })).await;
    let first = link(f.mail.path(), email, "reset").await;
    post(&f, "/password/forgot", json!({ "email": email })).await;
    let second = link(f.mail.path(), email, "reset").await;
    let (s, _) = post(
        &f,
        "/password/reset",
        json!({ "token": first, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = post(
        &f,
        "/password/reset",
        json!({ "token": second, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Garbage is the same refusal.
    let (s, _) = post(
        &f,
        "/password/reset",
        json!({ "token": "x", "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

async fn repeated_failures_lock_the_account(f: Fam) {
    let email = "dee@example.org";
    registered(&f, email).await;
    for _ in 0..5 {
        let (s, _) = post(
            &f,
            "/login",
            json!({ "email": email, "password": "wrong password!" }),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, v) = post(
        &f,
        "/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "locked, even with the right password: {v}"
    );
    f.app.clock.advance(Duration::from_secs(901));
    login(&f, email, PASSWORD).await;
}

async fn known_and_unknown_addresses_get_the_same_answers(f: Fam) {
    let known = "eve@example.org";
    registered(&f, known).await;
    let unknown = "nobody@example.org";
    let body = |e: &str| json!({ "email": e, "password": PASSWORD });
    let a = post(&f, "/register", body(known)).await;
    let b = post(&f, "/register", body(unknown)).await;
    assert_eq!(a, b, "registration");
    let a = post(&f, "/password/forgot", json!({ "email": known })).await;
    let b = post(
        &f,
        "/password/forgot",
        json!({ "email": "nobody2@example.org" }),
    )
    .await;
    assert_eq!(a, b, "reset request");
    let wrong = |e: &str| json!({ "email": e, "password": "not the password" });
    let a = post(&f, "/login", wrong(known)).await;
    let b = post(&f, "/login", wrong("nobody3@example.org")).await;
    assert_eq!(a, b, "login");
    assert_eq!(a.0, StatusCode::UNAUTHORIZED);
    // The owner of the known address is told by email instead.
    assert!(has_mail(f.mail.path(), known, "already has one").await);
}

async fn a_new_password_ends_the_other_sessions(f: Fam) {
    let email = "fay@example.org";
    registered(&f, email).await;
    let (a, _, csrf_a) = login(&f, email, PASSWORD).await;
    let (b, _, _) = login(&f, email, PASSWORD).await;
    let (s, _, v) = call(
        &f,
        "POST",
        "/password",
        Some(json!({ "current_password": "not the password", "new_password": NEW_PASSWORD })),
        Some(&a),
        Some(&csrf_a),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("wrong_password"))
    );
    let (s, h, v) = call(
        &f,
        "POST",
        "/password",
        Some(json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD })),
        Some(&a),
        Some(&csrf_a),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let c = h["set-cookie"].to_str().unwrap();
    let c = c
        .strip_prefix("sp_family=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert_eq!(session_status(&f, &a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(session_status(&f, &b).await, StatusCode::UNAUTHORIZED);
    assert_eq!(session_status(&f, c).await, StatusCode::OK);
    assert!(
        has_mail(
            f.mail.path(),
            email,
            "password of your family portal account was changed"
        )
        .await
    );

    // A change of address, confirmed by the link sent to the new one, ends them too.
    let csrf = v["csrf_token"].as_str().unwrap();
    let (s, _, v) = call(
        &f,
        "POST",
        "/email",
        Some(json!({ "new_email": "fay.new@example.org", "password": NEW_PASSWORD })),
        Some(c),
        Some(csrf),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let token = link(f.mail.path(), "fay.new@example.org", "email").await;
    let (s, v) = post(&f, "/email/confirm", json!({ "token": token })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(session_status(&f, c).await, StatusCode::UNAUTHORIZED);
    let (s, _) = post(
        &f,
        "/login",
        json!({ "email": email, "password": NEW_PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    login(&f, "fay.new@example.org", NEW_PASSWORD).await;
}

async fn closing_the_account(f: Fam) {
    let email = "gus@example.org";
    registered(&f, email).await;
    let (cookie, _, csrf) = login(&f, email, PASSWORD).await;
    let (s, _, _) = call(
        &f,
        "POST",
        "/close",
        Some(json!({ "password": "not it at all" })),
        Some(&cookie),
        Some(&csrf),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &f,
        "POST",
        "/close",
        Some(json!({ "password": PASSWORD })),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "CSRF");
    let (s, _, v) = call(
        &f,
        "POST",
        "/close",
        Some(json!({ "password": PASSWORD })),
        Some(&cookie),
        Some(&csrf),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(session_status(&f, &cookie).await, StatusCode::UNAUTHORIZED);
    let (s, _) = post(
        &f,
        "/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The address is free again: a new account, verified by a new link.
    registered(&f, email).await;
    login(&f, email, PASSWORD).await;
}

async fn attempts_are_limited_per_address(f: Fam) {
    let f = app_with(f.app.t.db.backend(), Some("203.0.113.7:40000"), |c| {
        c.family.attempts_per_address = 3;
    })
    .await
    .unwrap();
    for _ in 0..3 {
        let (s, _) = post(&f, "/password/forgot", json!({ "email": "h@example.org" })).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let body = json!({ "email": "h@example.org", "password": PASSWORD });
    let (s, headers, v) = call(&f, "POST", "/login", Some(body), None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts"))
    );
    assert_eq!(
        headers.get("retry-after").and_then(|h| h.to_str().ok()),
        Some("3600"),
        "the window's length"
    );
    f.app.clock.advance(Duration::from_secs(3_601));
    let (s, _) = post(&f, "/password/forgot", json!({ "email": "h@example.org" })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "the window has passed");
}

async fn emails_to_one_address_are_capped(f: Fam) {
    let f = app_with(f.app.t.db.backend(), None, |c| {
        c.family.emails_per_account = 2
    })
    .await
    .unwrap();
    let email = "ivy@example.org";
    registered(&f, email).await; // the first email: the verification link
    let (s, _) = post(&f, "/password/forgot", json!({ "email": email })).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    link(f.mail.path(), email, "reset").await; // the second
    let (s, v) = post(&f, "/password/forgot", json!({ "email": email })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "the same answer past the cap: {v}");
    assert!(
        !has_mail(f.mail.path(), email, "#reset=").await,
        "no third email within the window"
    );
    f.app.clock.advance(Duration::from_secs(3_601));
    post(&f, "/password/forgot", json!({ "email": email })).await;
    link(f.mail.path(), email, "reset").await;
}

/// Account pre-hijacking: someone registers an address they do not own; its owner, who
/// registers later and opens the link, gets the password they chose.
async fn an_earlier_registrant_of_an_unverified_address_gets_no_way_in(f: Fam) {
    let email = "kim@example.org";
    let squatter = "squatter's password";
    let (s, _) = post(
        &f,
        "/register",
        json!({ "email": email, "password": squatter }),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let first = link(f.mail.path(), email, "verify").await;
    let (s, _) = post(
        &f,
        "/register",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let token = link(f.mail.path(), email, "verify").await;
    let (s, _) = post(&f, "/verify", json!({ "token": first })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "only the newest link works");
    let (s, v) = post(&f, "/verify", json!({ "token": token })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = post(
        &f,
        "/login",
        json!({ "email": email, "password": squatter }),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    login(&f, email, PASSWORD).await;
}

async fn the_cookie_is_secure_behind_https_and_staff_tokens_are_not_accounts(f: Fam) {
    let f = app_with(f.app.t.db.backend(), None, |c| {
        c.family.public_url = "https://portal.example.org".into();
    })
    .await
    .unwrap();
    let email = "lee@example.org";
    registered(&f, email).await;
    let (cookie, set, _) = login(&f, email, PASSWORD).await;
    assert!(set.contains("; Secure"), "{set}");
    // A cookie carrying anything but a family session is refused.
    let admin_cookie = call(&f, "GET", "/session", None, Some(ADMIN), None).await;
    assert_eq!(admin_cookie.0, StatusCode::UNAUTHORIZED);
    // A staff-issued family token is a family caller but not a portal account.
    support::inproc::facility(&f.app, "F1").await;
    let token = support::inproc::issue(&f.app, "fam-token", "family", &["F1"], None).await;
    let req = Request::builder()
        .uri("/api/v1/family/session")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (s, _, bytes) = fetch(&f.app, req).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{}", json_of(&bytes));
    assert_eq!(session_status(&f, &cookie).await, StatusCode::OK);
}

/// A request to any API path with the family's cookie, CSRF token and an idempotency key.
async fn family_request(
    f: &Fam,
    method: &str,
    path: &str,
    body: Option<Value>,
    session: (&str, &str),
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", format!("sp_family={}", session.0))
        .header("x-csrf-token", session.1);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let (s, _, bytes) = fetch(&f.app, req).await;
    (s, json_of(&bytes))
}

/// Issue 12: a family's prepaid balance left idle is never taken. After
/// `family.idle_notice_days` (150) without a movement the owner gets one email saying it is
/// still theirs and how to have it refunded; later sweeps of the same idle stretch send
/// nothing more, however long it lasts, and the balance never changes. A new movement
/// starts a new stretch.
async fn an_idle_prepaid_balance_is_never_taken_and_its_owner_is_told_once(f: Fam) {
    let email = "idle.balance@example.org";
    support::inproc::facility(&f.app, "F1").await;
    registered(&f, email).await;
    let (cookie, _, csrf) = login(&f, email, PASSWORD).await;
    let session = (cookie.as_str(), csrf.as_str());
    let (s, account) = family_request(
        &f,
        "POST",
        "/api/v1/family/prepaid",
        Some(json!({ "facility_id": "F1" })),
        session,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{account}");
    let id = account["id"].as_str().unwrap().to_string();
    let (s, v) = family_request(
        &f,
        "POST",
        "/api/v1/family/deposits",
        Some(
            json!({ "account_id": id, "amount": "12.34", "depositor": "me",
            "card_number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123" }),
        ),
        session,
        Some("idle-1"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, list) = family_request(&f, "GET", "/api/v1/family/prepaid", None, session, None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["accounts"][0]["account"]["balance"], "12.34", "{list}");
    assert_eq!(list["accounts"][0]["payer_order"], "family_first", "{list}");

    let mut config = Config::default();
    config.mail.dir = f.mail.path().to_path_buf();
    config.family.public_url = "http://portal.test".into();
    let sweep = |days: u64| {
        let (store, config) = (f.app.store.clone(), config.clone());
        let clock = f.app.clock.clone();
        async move {
            clock.advance(Duration::from_secs(days * 86_400));
            sallyport::family::notices::sweep(&store, &config, clock.wall())
                .await
                .unwrap()
        }
    };
    assert_eq!(sweep(149).await, 0, "not idle long enough");
    assert_eq!(sweep(2).await, 1, "151 days idle: one notice");
    assert!(has_mail(f.mail.path(), email, "still yours").await);
    assert!(has_mail(f.mail.path(), email, "$12.34").await);
    assert_eq!(sweep(0).await, 0, "one notice per idle stretch");
    assert_eq!(sweep(400).await, 0, "still the same stretch");
    let balance = f.app.store.ledger().balance(&id).await.unwrap();
    assert_eq!(balance.to_string(), "12.34", "nothing is ever taken");
    // A deposit starts a new stretch: a notice again 150 days after it (a new session:
    // the first one expired long ago).
    let (cookie, _, csrf) = login(&f, email, PASSWORD).await;
    let (s, v) = family_request(
        &f,
        "POST",
        "/api/v1/family/deposits",
        Some(
            json!({ "account_id": id, "amount": "1.00", "depositor": "me",
            "card_number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123" }),
        ),
        (cookie.as_str(), csrf.as_str()),
        Some("idle-2"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(sweep(100).await, 0);
    assert_eq!(sweep(51).await, 1);
    let report = f.app.store.ledger().check_invariants().await.unwrap();
    assert!(report.violations.is_empty(), "{report:?}");
}
