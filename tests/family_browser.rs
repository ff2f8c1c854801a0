//! The family portal's account pages in headless Chromium against the real binary: a new
//! family registers, opens the verification link from the `.eml` file the gateway wrote
//! under its data directory, logs in with the keyboard (Enter submits), sees its account,
//! and logs out; and a family finds an inmate, asks to be a contact, confirms its number
//! by keying the code the page shows on the gateway's call (sipp as the trunk), and sees
//! staff's approval. Skipped (with the reason) without Chromium (or sipp, for the second),
//! unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::gateway::Gateway;
use support::webdriver::{self, Browser};
use support::{sipp, Workdir};

const EMAIL: &str = "june@example.org";
const PASSWORD: &str = "correct horse battery";

/// The verification secret in the `.eml` file under `mail` (quoted-printable undone).
fn verify_secret(mail: &Path) -> String {
    for _ in 0..200 {
        for e in std::fs::read_dir(mail).into_iter().flatten() {
            let raw = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let text = raw
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=");
            if let Some(at) = text.find("#verify=") {
                return text[at + 8..at + 8 + 64].to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no verification email in {}", mail.display());
}

/// Waits until the element `id` is shown.
fn shown(b: &Browser, id: &str) {
    b.wait_js(
        &format!("#{id} shown"),
        Duration::from_secs(10),
        &format!("const e = document.getElementById('{id}'); return !!e && !e.hidden;"),
        |v: &Value| v == &json!(true),
    );
}

#[test]
fn a_family_registers_verifies_logs_in_and_out_in_chromium() {
    if !webdriver::present("family portal browser test") {
        return;
    }
    let dir = Workdir::new("family_browser", "register_login");
    let ports = sipp::ports();
    let gateway = Gateway::start(&dir, &ports);
    let browser = Browser::start(&dir.join("chromedriver.log"));
    let base = gateway.base_url();

    browser.goto(&format!("{base}/family/#register"));
    browser.wait_for("body[data-ready=\"1\"]");
    shown(&browser, "register-view");
    browser.fill("#register-email", EMAIL);
    browser.fill("#register-password", PASSWORD);
    browser.fill("#register-confirm", "not the same password");
    browser.click("#register-submit");
    shown(&browser, "error");
    assert!(browser.text("#error").contains("not the same"));
    browser.fill("#register-confirm", PASSWORD);
    browser.click("#register-submit");
    shown(&browser, "notice");
    assert!(browser.text("#notice").contains("Check your email"));

    let secret = verify_secret(&dir.join("mail"));
    browser.goto(&format!("{base}/family/#verify={secret}"));
    browser.wait_js(
        "verified",
        Duration::from_secs(10),
        "return document.getElementById('notice').textContent;",
        |v: &Value| v.as_str().is_some_and(|t| t.contains("confirmed")),
    );
    shown(&browser, "login-view");
    // The secret is gone from the address bar.
    let url = browser.js("return location.href;", json!([]));
    assert!(!url.as_str().unwrap().contains(&secret), "{url}");

    browser.fill("#login-email", EMAIL);
    browser.fill("#login-password", &format!("{PASSWORD}\n"));
    shown(&browser, "account-view");
    assert_eq!(browser.text("#account-email"), EMAIL);
    // The page's script cannot read the session cookie.
    let cookies = browser.js("return document.cookie;", json!([]));
    assert!(
        !cookies.as_str().unwrap().contains("sp_family"),
        "{cookies}"
    );

    // A reload keeps the session (GET /family/session gives the CSRF token again), and
    // logging out (a POST that needs it) works.
    browser.goto(&format!("{base}/family/"));
    shown(&browser, "account-view");
    browser.click("#logout");
    shown(&browser, "login-view");
    assert!(browser.text("#notice").contains("logged out"));
    browser.goto(&format!("{base}/family/#account"));
    shown(&browser, "login-view");
    drop(gateway);
}

/// Waits until the request list shows a request in `status`.
fn request_status(b: &Browser, status: &str) {
    b.wait_js(
        &format!("a request {status}"),
        Duration::from_secs(40),
        &format!("return !!document.querySelector('#requests-list li[data-status=\"{status}\"]');"),
        |v: &Value| v == &json!(true),
    );
}

#[test]
fn a_family_finds_an_inmate_confirms_its_number_and_is_approved_in_chromium() {
    if !webdriver::present("family linking browser test")
        || !sipp::present("family linking browser test")
    {
        return;
    }
    let dir = Workdir::new("family_browser", "linking");
    let ports = sipp::ports();
    let gateway = Gateway::start(&dir, &ports);
    let inmate = support::api::book(&gateway.api, "W-100", "6622", support::api::NUMBER, false);
    // The account, made through the API (the first test walks registration in the page).
    let anon = gateway.api.anonymous();
    let creds = json!({ "email": EMAIL, "password": PASSWORD });
    assert_eq!(
        anon.request("POST", "/api/v1/family/register", Some(creds))
            .0,
        202
    );
    let secret = verify_secret(&dir.join("mail"));
    assert_eq!(
        anon.request(
            "POST",
            "/api/v1/family/verify",
            Some(json!({ "token": secret }))
        )
        .0,
        200
    );

    let browser = Browser::start(&dir.join("chromedriver.log"));
    let base = gateway.base_url();
    browser.goto(&format!("{base}/family/#login"));
    browser.wait_for("body[data-ready=\"1\"]");
    browser.fill("#login-email", EMAIL);
    browser.fill("#login-password", &format!("{PASSWORD}\n"));
    shown(&browser, "account-view");
    browser.wait_for("#search-facility option[value=\"DEMO\"]");

    // Find: by booking number; the result shows roster fields only.
    browser.fill("#search-booking", "W-100");
    browser.click("#search-submit");
    browser.wait_for("#search-results button");
    let row = browser.text("#search-results li");
    assert!(row.contains("W-100"), "{row}");
    assert!(!row.contains(&inmate.calling_id), "{row}");
    browser.click("#search-results button");
    shown(&browser, "request-form");
    browser.fill("#request-name", "June Test");
    browser.fill("#request-relationship", "sister");
    browser.fill("#request-number", "+15557654321");
    browser.click("#request-video");
    browser.click("#request-submit");
    request_status(&browser, "pending_verification");

    // Confirm: the page shows the code; the phone that answers the call keys it.
    browser.click("#requests-list button.call-me");
    browser.wait_for("#link-code");
    let code = browser.text("#link-code");
    assert_eq!(code.len(), 6, "{code}");
    let mut trunk =
        sipp::confirmation_trunk(&dir, &ports, "trunk", &format!("{code}#"), sipp::Via::Rtp);
    trunk.expect_ok(Duration::from_secs(40));
    request_status(&browser, "pending_approval");

    // Staff approve the pending contact; the family sees it after a reload.
    let contacts = gateway
        .api
        .get(&format!("/api/v1/inmates/{}/contacts", inmate.id));
    let pending = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number"] == "+15557654321")
        .expect("the contact the confirmed request made");
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["video_allowed"], true);
    let id = pending["id"].as_str().unwrap();
    gateway
        .api
        .post(&format!("/api/v1/contacts/{id}/approve"), json!({}));
    browser.goto(&format!("{base}/family/"));
    shown(&browser, "account-view");
    request_status(&browser, "approved");
    drop(gateway);
}
