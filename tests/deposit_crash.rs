//! The gateway killed between a deposit's authorization and its posting: the real
//! `sallyport serve`, on SQLite and on PostgreSQL. A family deposits with the test card that
//! is confirmed later (4000 0000 0000 0077); the answer says `authorized`, and the gateway
//! is killed with SIGKILL at once, before the provider's webhook (delayed 3 s) reaches it.
//! Restarted on the same database after the payment has settled at the provider, the
//! gateway's reconciliation (and then the late webhook, a duplicate) posts the deposit:
//! the balance grows by the amount exactly once, the timeline shows one `posted`, and the
//! ledger checks clean.
//!
//! Then the webhooks themselves, over real HTTP from the test provider's delivery task:
//! each sent three times and newest first (`test_webhook_copies`, `test_webhook_reverse`),
//! with the reconciliation kept out of the way, post the deposit exactly once; a webhook
//! signed with another secret is refused with 401 and changes nothing.
//!
//! The PostgreSQL runs need `SALLYPORT_TEST_DATABASE_URL` (skipped with the reason printed
//! when unset, failed instead with `SALLYPORT_REQUIRE_EXTERNAL=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use sallyport::db::testing::TestDb;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::api::{dec, Api};
use support::gateway::Gateway;
use support::{sipp, Workdir};

/// The provider's webhooks (and the settling of a "confirm later" card) take this long.
const WEBHOOK_DELAY_MS: u64 = 3_000;

fn settings(cmd: &mut Command, database_url: Option<&str>) {
    cmd.env(
        "SALLYPORT_PAYMENTS_TEST_WEBHOOK_DELAY_MS",
        WEBHOOK_DELAY_MS.to_string(),
    )
    // The restarted gateway asks about every waiting deposit at once.
    .env("SALLYPORT_PAYMENTS_RECONCILE_AFTER_SECS", "0")
    .env("SALLYPORT_PAYMENTS_RECONCILE_INTERVAL_SECS", "1");
    if let Some(url) = database_url {
        cmd.env("SALLYPORT_DATABASE_URL", url);
    }
}

#[test]
fn killed_between_authorization_and_posting_on_sqlite() {
    killed_between_authorization_and_posting("sqlite", None);
}

#[test]
fn killed_between_authorization_and_posting_on_postgres() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let url = db
        .postgres_url()
        .expect("a PostgreSQL test database has a URL");
    killed_between_authorization_and_posting("postgres", Some(&url));
    drop(db);
}

/// The demo inmate's account and a family user's token.
fn setup(api: &Api) -> (String, String) {
    let inmates = api.get("/api/v1/facilities/DEMO/inmates");
    let account = inmates[0]["account_id"]
        .as_str()
        .expect("demo inmate")
        .to_string();
    let t = api.post(
        "/api/v1/tokens",
        json!({ "username": "family-crash", "role": "family", "facilities": ["DEMO"] }),
    );
    (account, t["token"].as_str().unwrap().to_string())
}

fn deposit_status(api: &Api, id: &str) -> Value {
    api.get(&format!("/api/v1/deposits/{id}"))
}

fn killed_between_authorization_and_posting(name: &str, database_url: Option<&str>) {
    let dir = Workdir::new("deposit_crash", name);
    let ports = sipp::ports();
    let gw = Gateway::start_with(&dir.path, &ports, "gateway", |c| settings(c, database_url));
    let (account, token) = setup(&gw.api);
    let family = gw.api.as_token(&token);
    let before = gw.api.balance(&account);
    let body = json!({
        "account_id": account, "amount": "60.00", "depositor": "Jane Doe",
        "card_number": "4000 0000 0000 0077", "exp_month": 12, "exp_year": 2030, "cvc": "123"
    });
    let (s, d) = family.post_keyed("/api/v1/family/deposits", "crash-1", body.clone());
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "authorized", "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    gw.kill();

    // The payment settles at the provider while the gateway is down.
    std::thread::sleep(Duration::from_millis(WEBHOOK_DELAY_MS + 500));
    let gw = Gateway::start_with(&dir.path, &ports, "gateway2", |c| settings(c, database_url));
    let deadline = Instant::now() + Duration::from_secs(30);
    let posted = loop {
        let v = deposit_status(&gw.api, &id);
        if v["state"] == "posted" {
            break v;
        }
        assert!(Instant::now() < deadline, "never posted: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Give the late webhook (and a few reconciliation passes) time to try again.
    std::thread::sleep(Duration::from_millis(WEBHOOK_DELAY_MS + 1_500));
    let after = deposit_status(&gw.api, &id);
    assert_eq!(after["state"], "posted", "{after}");
    let posts = after["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "posted")
        .count();
    assert_eq!(posts, 1, "{after}");
    assert_eq!(posted["transaction_id"], after["transaction_id"]);
    assert_eq!(gw.api.balance(&account), before + dec("60.00"));
    // The family's retry of the same request (it never saw the end) changes nothing.
    let family = gw.api.as_token(&token);
    let (s, again) = family.post_keyed("/api/v1/family/deposits", "crash-1", body);
    assert_eq!(
        (s, &again["id"], &again["state"]),
        (201, &json!(id), &json!("posted"))
    );
    assert_eq!(gw.api.balance(&account), before + dec("60.00"));
    gw.api.assert_ledger_clean();
}

#[test]
fn duplicated_and_reversed_webhooks_over_http_on_sqlite() {
    duplicated_and_reversed_webhooks("sqlite-webhooks", None);
}

#[test]
fn duplicated_and_reversed_webhooks_over_http_on_postgres() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let url = db
        .postgres_url()
        .expect("a PostgreSQL test database has a URL");
    duplicated_and_reversed_webhooks("postgres-webhooks", Some(&url));
    drop(db);
}

fn duplicated_and_reversed_webhooks(name: &str, database_url: Option<&str>) {
    let dir = Workdir::new("deposit_crash", name);
    let ports = sipp::ports();
    let gw = Gateway::start_with(&dir.path, &ports, "gateway", |c| {
        settings(c, database_url);
        c.env("SALLYPORT_PAYMENTS_TEST_WEBHOOK_COPIES", "3")
            .env("SALLYPORT_PAYMENTS_TEST_WEBHOOK_REVERSE", "true")
            .env("SALLYPORT_PAYMENTS_RECONCILE_AFTER_SECS", "3600");
    });
    let (account, token) = setup(&gw.api);
    let family = gw.api.as_token(&token);
    let before = gw.api.balance(&account);
    let body = json!({
        "account_id": account, "amount": "61.00",
        "card_number": "4000000000000077", "exp_month": 12, "exp_year": 2030, "cvc": "123"
    });
    let (s, d) = family.post_keyed("/api/v1/family/deposits", "webhooks-1", body);
    assert_eq!((s, &d["state"]), (201, &json!("authorized")), "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    // A forged confirmation (another secret) first: refused, nothing changes.
    let forged = json!({ "id": "evt_forged", "type": "payment.succeeded", "data": {
        "id": d["payment_id"], "reference": id, "amount": "61.00", "status": "succeeded" } })
    .to_string();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = sallyport::payments::signature::sign(
        b"not the webhook secret",
        i64::try_from(t).unwrap(),
        forged.as_bytes(),
    );
    let (s, _, v) = gw.api.anonymous().send(
        "POST",
        "/api/v1/payments/webhook",
        Some(("application/json", forged)),
        &[("Sallyport-Signature", &sig)],
    );
    assert_eq!(
        (s, &v["error"]["code"]),
        (401, &json!("bad_signature")),
        "{v}"
    );
    assert_eq!(deposit_status(&gw.api, &id)["state"], "authorized");
    // The real ones: processing and succeeded, three copies each, newest first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while deposit_status(&gw.api, &id)["state"] != "posted" {
        assert!(Instant::now() < deadline, "never posted");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let after = deposit_status(&gw.api, &id);
    let timeline: Vec<(&str, &str)> = after["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["state"].as_str().unwrap(), e["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        timeline,
        [
            ("submitted", "request"),
            ("authorized", "provider"),
            ("posted", "webhook")
        ]
    );
    assert_eq!(gw.api.balance(&account), before + dec("61.00"));
    gw.api.assert_ledger_clean();
}
