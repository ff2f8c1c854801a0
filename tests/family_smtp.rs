//! A family registration whose verification email is delivered over SMTP to a real SMTP
//! server process (aiosmtpd, Debian's `python3-aiosmtpd`, saving to a maildir), read from
//! there, and followed: the link verifies the address and the account logs in.
//!
//! Without aiosmtpd the test is skipped with a printed reason, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use support::mail::start_smtp;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use sallyport::api::{router, AppState};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::store::Store;
use serde_json::{json, Value};
use std::sync::Arc;
use support::inproc::{fetch, json_of, App};

const PASSWORD: &str = "correct horse battery";

async fn post(app: &App, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/family{path}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_email_goes_through_a_real_smtp_server_and_its_link_works() {
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = start_smtp(&dir.path().join("maildir")) else {
        return;
    };
    let port = smtp.port;

    let t = TestDb::sqlite().await;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap(),
    ));
    let mut config = Config::default();
    config.security.pin_pepper = support::inproc::PEPPER.into();
    config.family.public_url = "http://portal.test".into();
    config.mail.transport = "smtp".into();
    config.mail.smtp_host = "127.0.0.1".into();
    config.mail.smtp_port = port;
    config.mail.smtp_tls = "none".into();
    config.mail.from = "Family portal <portal@jail.test>".into();
    config.mail.dir = dir.path().join("files-must-stay-empty");
    let store = Store::new(
        t.db.clone(),
        clock.clone() as Arc<dyn Clock>,
        &config.security.pin_pepper,
    );
    let app = App {
        router: router(AppState::new(store.clone(), Arc::new(config))),
        clock,
        store,
        admin: "",
        peer: None,
        rec_dir: None,
        t,
    };

    let email = "ida@example.org";
    let (s, v) = post(
        &app,
        "/register",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (link, message) = smtp.wait_for("http://portal.test/family/#verify=");
    assert!(message.contains("portal@jail.test"), "{message}");
    assert!(message.contains(email), "{message}");
    let token = link.rsplit_once("#verify=").unwrap().1;
    let (s, v) = post(&app, "/verify", json!({ "token": token })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = post(
        &app,
        "/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        !dir.path().join("files-must-stay-empty").exists(),
        "SMTP delivery writes no .eml file"
    );
}
