//! A family registration whose verification email is delivered over SMTP to a real SMTP
//! server process (aiosmtpd, Debian's `python3-aiosmtpd`, saving to a maildir), read from
//! there, and followed: the link verifies the address and the account logs in.
//!
//! Without aiosmtpd the test is skipped with a printed reason, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use support::mail::quoted_printable;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use sallyport::api::{router, AppState};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::{skip_or_fail, TestDb};
use sallyport::store::Store;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::inproc::{fetch, json_of, App};

const PASSWORD: &str = "correct horse battery";

/// The aiosmtpd server, stopped when dropped.
struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python that has aiosmtpd (pyenv's may not; Debian's package is in /usr/bin).
fn python_with_aiosmtpd() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_smtp(python: &str, maildir: &Path) -> (Smtp, u16) {
    let port = free_port();
    let child = Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let smtp = Smtp(child);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (smtp, port);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("aiosmtpd did not listen on port {port}");
}

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

/// The verification link delivered to the maildir (waits for it).
async fn delivered_link(maildir: &Path) -> (String, String) {
    for _ in 0..400 {
        let new = maildir.join("new");
        for e in std::fs::read_dir(&new).into_iter().flatten() {
            let text = quoted_printable(&std::fs::read_to_string(e.unwrap().path()).unwrap());
            if let Some(at) = text.find("http://portal.test/family/#verify=") {
                let link = text[at..].split_whitespace().next().unwrap().to_string();
                return (link, text);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no verification email reached {}", maildir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_email_goes_through_a_real_smtp_server_and_its_link_works() {
    let Some(python) = python_with_aiosmtpd() else {
        skip_or_fail("aiosmtpd is not installed (apt-get install python3-aiosmtpd)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let (_smtp, port) = start_smtp(python, &maildir).await;

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
    let (link, message) = delivered_link(&maildir).await;
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
