//! The family portal's account pages in headless Chromium against the real binary: a new
//! family registers, opens the verification link from the `.eml` file the gateway wrote
//! under its data directory, logs in with the keyboard (Enter submits), sees its account,
//! deposits by card (a declined card, an accepted one, a double submit that deposits once)
//! and logs out. Skipped (with the reason) without Chromium, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`.
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

/// Fills the deposit form for the demo inmate with `card` and `amount`.
fn fill_deposit(b: &Browser, account: &str, amount: &str, card: &str) {
    b.fill("#deposit-account", account);
    b.fill("#deposit-amount", amount);
    b.fill("#deposit-name", "June Doe");
    b.fill("#deposit-card", card);
    b.fill("#deposit-exp-month", "12");
    b.fill("#deposit-exp-year", "2031");
    b.fill("#deposit-cvc", "123");
}

/// Waits until the shown deposit's state reads `want`.
fn deposit_state(b: &Browser, want: &str) {
    b.wait_js(
        &format!("deposit {want}"),
        Duration::from_secs(10),
        "const e = document.getElementById('deposit-state'); return e ? e.className : '';",
        |v: &Value| v.as_str() == Some(&format!("state-{want}")),
    );
}

/// A declined card, an accepted one, and a double submit that deposits once; the status
/// shows the confirmation number and the timeline.
fn deposits(b: &Browser, gateway: &Gateway) {
    let account = gateway.api.get("/api/v1/facilities/DEMO/inmates")[0]["account_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = gateway.api.balance(&account);
    fill_deposit(b, &account, "60.00", "4000 0000 0000 0002");
    b.click("#deposit-submit");
    deposit_state(b, "declined");
    assert!(b.text("#deposit-reason").contains("card_declined"));
    fill_deposit(b, &account, "60.00", "4242 4242 4242 4242");
    b.click("#deposit-submit");
    deposit_state(b, "posted");
    assert!(b.text("#deposit-confirmation").starts_with("SP-"));
    assert!(b
        .text("#deposit-timeline")
        .contains("posted to the account"));
    // Two submits of one form before the first answer: one deposit.
    fill_deposit(b, &account, "70.00", "4242 4242 4242 4242");
    b.js(
        "const f = document.getElementById('deposit-form'); f.requestSubmit(); f.requestSubmit();",
        json!([]),
    );
    b.wait_js(
        "three deposits listed",
        Duration::from_secs(10),
        "return document.querySelectorAll('#deposit-list li').length;",
        |v: &Value| v == &json!(3),
    );
    std::thread::sleep(Duration::from_millis(500));
    let n = b.js(
        "return document.querySelectorAll('#deposit-list li').length;",
        json!([]),
    );
    assert_eq!(n, json!(3), "declined, 60.00 and one 70.00");
    let after = gateway.api.balance(&account);
    assert_eq!(after - before, support::api::dec("130.00"));
    assert!(!b.text("#money-order-text").is_empty());
    gateway.api.assert_ledger_clean();
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

    deposits(&browser, &gateway);

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
