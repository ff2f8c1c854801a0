//! The family portal's account pages in headless Chromium against the real binary: a new
//! family registers, opens the verification link from the `.eml` file the gateway wrote
//! under its data directory, logs in with the keyboard (Enter submits), sees its account,
//! deposits by card (a declined card, an accepted one, a double submit that deposits once)
//! and logs out; a family finds an inmate, asks to be a contact, confirms its number by
//! keying the code the page shows on the gateway's call (sipp as the trunk) and sees staff
//! approve it. Skipped (with the reason) without Chromium (or sipp, for the linking walk),
//! unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::axe;
use support::gateway::Gateway;
use support::sipp::{Handset, Trunk};
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
    axe::assert_accessible(&browser, "registration");
    browser.fill("#register-email", EMAIL);
    browser.fill("#register-password", PASSWORD);
    browser.fill("#register-confirm", "not the same password");
    browser.click("#register-submit");
    shown(&browser, "error");
    assert!(browser.text("#error").contains("not the same"));
    axe::assert_accessible(&browser, "registration with an error");
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
    axe::assert_accessible(&browser, "log in");
    // The secret is gone from the address bar.
    let url = browser.js("return location.href;", json!([]));
    assert!(!url.as_str().unwrap().contains(&secret), "{url}");

    browser.fill("#login-email", EMAIL);
    browser.fill("#login-password", &format!("{PASSWORD}\n"));
    shown(&browser, "account-view");
    assert_eq!(browser.text("#account-email"), EMAIL);
    axe::assert_accessible(&browser, "the account page");
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

    // In Spanish: the switch in the header, kept across pages; the API's messages too.
    browser.click("#lang-switch");
    browser.wait_for("body[data-ready=\"1\"]");
    browser.wait_js(
        "the page in Spanish",
        Duration::from_secs(10),
        "return [document.documentElement.lang, document.getElementById('login-title').textContent];",
        |v: &Value| v == &json!(["es", "Iniciar sesión"]),
    );
    assert_eq!(browser.text("label[for=\"login-password\"]"), "Contraseña");
    browser.fill("#login-email", EMAIL);
    browser.fill("#login-password", "not the password at all\n");
    shown(&browser, "error");
    browser.wait_js(
        "a Spanish error",
        Duration::from_secs(10),
        "return document.getElementById('error').textContent;",
        |v: &Value| {
            v.as_str()
                .is_some_and(|t| t.starts_with("Correo o contraseña incorrectos"))
        },
    );
    axe::assert_accessible(&browser, "log in, in Spanish");
    browser.goto(&format!("{base}/family/prepaid.html"));
    browser.wait_for("body[data-ready=\"1\"]");
    shown(&browser, "signed-out");
    assert_eq!(
        browser.text("#signed-out-title"),
        "Inicie sesión, por favor"
    );
    browser.click("#lang-switch");
    browser.wait_for("body[data-ready=\"1\"]");
    browser.wait_js(
        "back in English",
        Duration::from_secs(10),
        "return document.getElementById('signed-out-title').textContent;",
        |v: &Value| v == &json!("Please log in"),
    );
    drop(gateway);
}

/// Issue 12, family prepaid calling in the portal: a family member linked to the demo
/// inmate opens a prepaid account at the demo facility from the page, sees the deposit
/// made to it with its running balance on the statement page, and the CSV link gives the
/// same lines.
#[test]
fn a_family_opens_a_prepaid_account_and_reads_its_statement_in_chromium() {
    if !webdriver::present("family prepaid browser test") {
        return;
    }
    let dir = Workdir::new("family_browser", "prepaid");
    let ports = sipp::ports();
    let gateway = Gateway::start(&dir, &ports);
    let api = &gateway.api;
    let email = "prepaid.family@example.org";
    let (s, v) = api.anonymous().request(
        "POST",
        "/api/v1/family/register",
        Some(json!({ "email": email, "password": PASSWORD })),
    );
    assert_eq!(s, 202, "{v}");
    let secret = verify_secret(&dir.join("mail"));
    let (s, v) = api.anonymous().request(
        "POST",
        "/api/v1/family/verify",
        Some(json!({ "token": secret })),
    );
    assert_eq!(s, 200, "{v}");

    let browser = Browser::start(&dir.join("chromedriver.log"));
    let base = gateway.base_url();
    browser.goto(&format!("{base}/family/#login"));
    browser.wait_for("body[data-ready=\"1\"]");
    browser.fill("#login-email", email);
    browser.fill("#login-password", &format!("{PASSWORD}\n"));
    shown(&browser, "account-view");
    // Staff bind the family user to the demo inmate's contact (what approving a linking
    // request does).
    let me = browser.js_async(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/auth/me').then(r => r.json()).then(done);",
        json!([]),
    );
    let username = me["username"].as_str().expect("username").to_string();
    let facility = support::api::FACILITY;
    let inmates = api.get(&format!("/api/v1/facilities/{facility}/inmates"));
    let inmate = inmates[0]["id"].as_str().expect("demo inmate").to_string();
    let contacts = api.get(&format!("/api/v1/inmates/{inmate}/contacts"));
    let contact = contacts[0]["id"]
        .as_str()
        .expect("demo contact")
        .to_string();
    api.post(
        "/api/v1/tokens",
        json!({ "username": username, "role": "family", "facilities": [facility],
                "contacts": [contact] }),
    );

    browser.goto(&format!("{base}/family/prepaid.html"));
    browser.wait_for("body[data-ready=\"1\"]");
    shown(&browser, "accounts-view");
    shown(&browser, "no-accounts");
    axe::assert_accessible(&browser, "prepaid calling");
    browser.click("#open-submit");
    shown(&browser, "notice");
    assert!(browser.text("#notice").contains("prepaid account is open"));
    let accounts = browser.js_async(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/family/prepaid').then(r => r.json()).then(done);",
        json!([]),
    );
    let account = accounts["accounts"][0]["account"]["id"]
        .as_str()
        .expect("account")
        .to_string();
    // The deposit form offers the new account and the linked inmate's.
    browser.goto(&format!("{base}/family/"));
    shown(&browser, "account-view");
    browser.wait_js(
        "the deposit form's accounts",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#deposit-targets option')].map(o => o.value);",
        |v: &Value| {
            v.as_array()
                .is_some_and(|a| a.len() == 2 && a[0] == json!(account))
        },
    );
    let (s, v) = api.post_keyed(
        &format!("/api/v1/accounts/{account}/deposits"),
        "prepaid-browser-1",
        json!({ "amount": "25.00", "method": "online", "depositor": "family" }),
    );
    assert_eq!(s, 201, "{v}");
    browser.goto(&format!("{base}/family/prepaid.html"));
    browser.wait_for("body[data-ready=\"1\"]");
    browser.wait_js(
        "the balance",
        Duration::from_secs(10),
        "const b = document.querySelector('#accounts .balance'); return b && b.textContent;",
        |v: &Value| v == &json!("$25.00"),
    );
    browser.click("#accounts a");
    browser.wait_for("body[data-ready=\"1\"]");
    shown(&browser, "statement-view");
    browser.wait_js(
        "the statement's lines",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#lines tr')].map(r => r.textContent);",
        |v: &Value| v.as_array().is_some_and(|rows| rows.len() == 1),
    );
    let row = browser.text("#lines tr");
    assert!(row.contains("Deposit") && row.contains("$25.00"), "{row}");
    assert_eq!(browser.text("#closing"), "$25.00");
    axe::assert_accessible(&browser, "a prepaid statement");
    // The check sees what it is for: an input without a label is reported.
    browser.js(
        "document.querySelector('main').append(document.createElement('input')); return 1;",
        json!([]),
    );
    if let Some(found) = axe::serious_violations(&browser) {
        assert!(
            found.iter().any(|v| v["id"] == "label"),
            "axe-core missed an unlabelled input: {found:?}"
        );
    }
    let csv = browser.js_async(
        "const done = arguments[arguments.length - 1];
         fetch(document.getElementById('csv-link').href).then(r => r.text()).then(done);",
        json!([]),
    );
    let csv = csv.as_str().expect("csv").to_string();
    assert!(
        csv.starts_with("transaction_id,time,kind,memo,amount,balance_after\n"),
        "{csv}"
    );
    assert!(
        csv.contains(",deposit,") && csv.contains(",25.00,25.00"),
        "{csv}"
    );
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

/// The family's own number in the linking and walk-through tests.
const FAMILY_NUMBER: &str = "+15557654321";

/// In the signed-in account page: finds `inmate` by booking number (roster fields only),
/// asks to be its contact for `number` with video, keys the code shown on the
/// confirmation call (sipp as the phone), staff approve, and the page says approved.
fn link_number(
    browser: &Browser,
    gateway: &Gateway,
    dir: &Workdir,
    ports: &sipp::Ports,
    inmate: &support::api::Inmate,
    number: &str,
) {
    let base = gateway.base_url();
    browser.wait_for("#search-facility option[value=\"DEMO\"]");

    // Find: by booking number; the result shows roster fields only.
    browser.fill("#search-booking", &inmate.booking);
    browser.click("#search-submit");
    browser.wait_for("#search-results button");
    let row = browser.text("#search-results li");
    assert!(row.contains(&inmate.booking), "{row}");
    assert!(!row.contains(&inmate.calling_id), "{row}");
    axe::assert_accessible(browser, "roster search results");
    browser.click("#search-results button");
    shown(browser, "request-form");
    browser.fill("#request-name", "June Test");
    browser.fill("#request-relationship", "sister");
    browser.fill("#request-number", number);
    browser.click("#request-video");
    browser.click("#request-submit");
    request_status(browser, "pending_verification");

    // Confirm: the page shows the code; the phone that answers the call keys it.
    browser.click("#requests-list button.call-me");
    browser.wait_for("#link-code");
    let code = browser.text("#link-code");
    axe::assert_accessible(browser, "the code to key and the requests");
    assert_eq!(code.len(), 6, "{code}");
    let mut trunk =
        sipp::confirmation_trunk(dir, ports, "trunk", &format!("{code}#"), sipp::Via::Rtp);
    trunk.expect_ok(Duration::from_secs(40));
    request_status(browser, "pending_approval");

    // Staff approve the pending contact; the family sees it after a reload.
    let contacts = gateway
        .api
        .get(&format!("/api/v1/inmates/{}/contacts", inmate.id));
    let pending = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number"] == number)
        .expect("the contact the confirmed request made");
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["video_allowed"], true);
    let id = pending["id"].as_str().unwrap();
    gateway
        .api
        .post(&format!("/api/v1/contacts/{id}/approve"), json!({}));
    browser.goto(&format!("{base}/family/"));
    shown(browser, "account-view");
    request_status(browser, "approved");
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
    link_number(&browser, &gateway, &dir, &ports, &inmate, FAMILY_NUMBER);
    drop(gateway);
}

/// Issue 12's walk through the portal, in one Chromium session against the real binary,
/// its email through a real SMTP server (aiosmtpd) and its calls through sipp: a new
/// family registers and verifies by the delivered link, logs in, finds the inmate, proves
/// its number on the confirmation call, is approved by staff, deposits to the inmate by
/// card (a declined card, an accepted one, one submitted twice), opens a prepaid account and funds it by card,
/// is called by the inmate (charged to the prepaid account), reads its statement and the
/// inmate's, has the rest of the prepaid balance refunded to the card, and resets its
/// password by the emailed link. axe-core checks each page.
#[test]
fn a_new_family_walks_through_the_portal_in_chromium() {
    if !webdriver::present("family walk-through") || !sipp::present("family walk-through") {
        return;
    }
    let dir = Workdir::new("family_browser", "walk");
    let Some(smtp) = support::mail::start_smtp(&dir.join("maildir")) else {
        return;
    };
    let ports = sipp::ports();
    let smtp_port = smtp.port.to_string();
    let gateway = Gateway::start_with(&dir, &ports, "gateway", |cmd| {
        cmd.env("SALLYPORT_MAIL_TRANSPORT", "smtp")
            .env("SALLYPORT_MAIL_SMTP_HOST", "127.0.0.1")
            .env("SALLYPORT_MAIL_SMTP_PORT", &smtp_port)
            .env("SALLYPORT_MAIL_SMTP_TLS", "none");
    });
    let api = gateway.api.clone();
    support::api::three_second_increments(&api);
    let inmate = support::api::book(&api, "W-300", "7733", support::api::NUMBER, false);
    let email = "walk.family@example.org";
    let browser = Browser::start(&dir.join("chromedriver.log"));
    let base = gateway.base_url();

    // Register in the page; verify by the link the SMTP server received.
    browser.goto(&format!("{base}/family/#register"));
    browser.wait_for("body[data-ready=\"1\"]");
    browser.fill("#register-email", email);
    browser.fill("#register-password", PASSWORD);
    browser.fill("#register-confirm", PASSWORD);
    browser.click("#register-submit");
    shown(&browser, "notice");
    let (fragment, _) = smtp.wait_for("#verify=");
    browser.goto(&format!("{base}/family/{fragment}"));
    shown(&browser, "login-view");
    browser.fill("#login-email", email);
    browser.fill("#login-password", &format!("{PASSWORD}\n"));
    shown(&browser, "account-view");
    axe::assert_accessible(&browser, "the account page");

    // Find, request, prove the number, approved.
    link_number(&browser, &gateway, &dir, &ports, &inmate, FAMILY_NUMBER);

    // A gift to the inmate: a declined card, then an accepted one.
    let gift_before = api.balance(&inmate.account);
    fill_deposit(&browser, &inmate.account, "50.00", "4000 0000 0000 0002");
    browser.click("#deposit-submit");
    deposit_state(&browser, "declined");
    fill_deposit(&browser, &inmate.account, "50.00", "4242 4242 4242 4242");
    browser.click("#deposit-submit");
    deposit_state(&browser, "posted");
    assert!(browser.text("#deposit-confirmation").starts_with("SP-"));
    axe::assert_accessible(&browser, "a deposit's status and timeline");
    assert!(browser
        .text("#deposit-timeline")
        .contains("posted to the account"));
    // The form submitted twice before the first answer: one deposit.
    fill_deposit(&browser, &inmate.account, "70.00", "4242 4242 4242 4242");
    browser.js(
        "const f = document.getElementById('deposit-form'); f.requestSubmit(); f.requestSubmit();",
        json!([]),
    );
    browser.wait_js(
        "three deposits listed",
        Duration::from_secs(10),
        "return document.querySelectorAll('#deposit-list li').length;",
        |v: &Value| v == &json!(3),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        api.balance(&inmate.account) - gift_before,
        support::api::dec("120.00"),
        "the declined card nothing, then 50.00 and one 70.00"
    );

    // A prepaid account at the facility, funded by card through the same form.
    browser.goto(&format!("{base}/family/prepaid.html"));
    browser.wait_for("body[data-ready=\"1\"]");
    shown(&browser, "accounts-view");
    browser.click("#open-submit");
    shown(&browser, "notice");
    let list = browser.js_async(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/family/prepaid').then(r => r.json()).then(done);",
        json!([]),
    );
    let prepaid = list["accounts"][0]["account"]["id"]
        .as_str()
        .expect("the prepaid account")
        .to_string();
    browser.goto(&format!("{base}/family/"));
    shown(&browser, "account-view");
    browser.wait_for(&format!("#deposit-targets option[value=\"{prepaid}\"]"));
    fill_deposit(&browser, &prepaid, "50.00", "4242 4242 4242 4242");
    browser.click("#deposit-submit");
    deposit_state(&browser, "posted");
    assert_eq!(api.balance(&prepaid), support::api::dec("50.00"));

    // The inmate calls the family's number; the prepaid account pays.
    let inmate_before = api.balance(&inmate.account);
    let mut trunk = Trunk::answer("1").spawn(&dir, &ports);
    let mut hs = Handset::new(&inmate.pin, sipp::Via::Rtp)
        .dial(FAMILY_NUMBER)
        .hang_up_after(5000)
        .spawn(&dir, 0, &ports, gateway.sip);
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(20));
    let calls = api.get("/api/v1/calls?facility_id=DEMO");
    let call = calls["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number"] == FAMILY_NUMBER && c["state"] == "ended")
        .expect("the call to the family")
        .clone();
    assert_eq!(call["payer"], "family", "{call}");
    assert_eq!(call["account_id"], prepaid.as_str(), "{call}");
    let charged = support::api::money(&call["amount"]);
    assert!(charged > rust_decimal::Decimal::ZERO, "{call}");
    assert_eq!(api.balance(&prepaid), support::api::dec("50.00") - charged);
    assert_eq!(api.balance(&inmate.account), inmate_before);

    // Both statements: the family's names the call; the inmate's shows it paid by family.
    browser.goto(&format!("{base}/family/prepaid.html?account={prepaid}"));
    browser.wait_for("body[data-ready=\"1\"]");
    shown(&browser, "statement-view");
    browser.wait_js(
        "the call on the family's statement",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#lines tr')].map(r => r.textContent).join('|');",
        |v: &Value| {
            v.as_str()
                .is_some_and(|t| t.contains(&format!("Call to {FAMILY_NUMBER} from Test W-300")))
        },
    );
    axe::assert_accessible(&browser, "the prepaid statement with a call");
    let own = browser.js_async(
        &format!(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/accounts/{}/statement').then(r => r.json()).then(done);",
            inmate.account
        ),
        json!([]),
    );
    let others = own["paid_by_others"].as_array().expect("paid_by_others");
    assert_eq!(others.len(), 1, "{own}");
    assert_eq!(others[0]["session_id"], call["id"], "{own}");

    // The rest of the prepaid balance back to the card, without a fee.
    browser.goto(&format!("{base}/family/prepaid.html"));
    browser.wait_for("body[data-ready=\"1\"]");
    browser.wait_for("#accounts button.refund");
    browser.click("#accounts button.refund");
    browser.accept_dialog();
    browser.wait_js(
        "the refund requested",
        Duration::from_secs(10),
        "return document.getElementById('notice').textContent;",
        |v: &Value| {
            v.as_str()
                .is_some_and(|t| t.contains("to the card ending 4242"))
        },
    );
    axe::assert_accessible(&browser, "prepaid calling after a refund");
    assert_eq!(api.balance(&prepaid), rust_decimal::Decimal::ZERO);
    let left = support::api::dec("50.00") - charged;
    assert!(
        browser
            .text("#notice")
            .contains(&format!("Refund of ${left}")),
        "{}",
        browser.text("#notice")
    );

    // Forgot the password: the emailed link sets a new one; the old no longer works.
    browser.goto(&format!("{base}/family/"));
    shown(&browser, "account-view");
    browser.click("#logout");
    shown(&browser, "login-view");
    browser.goto(&format!("{base}/family/#forgot"));
    shown(&browser, "forgot-view");
    axe::assert_accessible(&browser, "forgot password");
    browser.fill("#forgot-email", email);
    browser.click("#forgot-submit");
    shown(&browser, "notice");
    let (fragment, _) = smtp.wait_for("#reset=");
    browser.goto(&format!("{base}/family/{fragment}"));
    shown(&browser, "reset-view");
    axe::assert_accessible(&browser, "choose a new password");
    let new_password = "a brand new long passphrase";
    browser.fill("#reset-password", new_password);
    browser.fill("#reset-confirm", new_password);
    browser.click("#reset-submit");
    shown(&browser, "login-view");
    browser.fill("#login-email", email);
    browser.fill("#login-password", &format!("{PASSWORD}\n"));
    shown(&browser, "error");
    browser.fill("#login-email", email);
    browser.fill("#login-password", &format!("{new_password}\n"));
    shown(&browser, "account-view");
    api.assert_ledger_clean();
    drop(gateway);
}
