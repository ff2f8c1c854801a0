//! Online deposits through the built-in test payment provider, through the real router
//! (`tower::ServiceExt::oneshot`), on SQLite and PostgreSQL: an approved card, a declined
//! one, a confirmation that arrives later by webhook, duplicated and reordered webhooks, a
//! wrong or stale signature, a double submit, a retry with the same key, the
//! reconciliation of a deposit whose webhook never came, refunds, and who may read a
//! deposit. After each, the account holds the money exactly once and the ledger checks
//! clean. The test provider's webhooks are taken from its queue ([`TestProvider::due`])
//! and posted to the router as the delivery task would post them over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sallyport::clock::Clock;
use sallyport::db::{to_micros, Backend};
use sallyport::payments::signature;
use sallyport::payments::Payments;
use sallyport::store::Registration;
use serde_json::{json, Value};
use std::time::Duration;
use support::inproc::{admin, fetch, json_of, App, Setup};

const ADMIN: &str = "deposits-admin-token";
const APPROVE: &str = "4242 4242 4242 4242";
const LATER: &str = "4000 0000 0000 0077";
const DECLINE: &str = "4000 0000 0000 0002";
const HELD: &str = "4000 0000 0000 9235";

struct Dep {
    app: App,
    payments: Payments,
}

async fn app(backend: Backend) -> Option<Dep> {
    let (app, state) = Setup::new(ADMIN)
        .config(|c| {
            c.payments.test_webhook_delay_ms = 1_000;
            c.payments.reconcile_after_secs = 30;
        })
        .app_and_state(backend)
        .await?;
    Some(Dep {
        app,
        payments: state.payments.clone(),
    })
}

battery!(
    an_approved_card_posts_once_and_its_webhook_changes_nothing,
    a_declined_card_posts_nothing,
    a_later_confirmation_posts_when_its_webhook_arrives,
    duplicated_and_reordered_webhooks_post_once,
    a_wrong_or_stale_signature_changes_nothing,
    a_double_submit_and_a_retry_deposit_once,
    a_lost_webhook_is_reconciled,
    a_refund_reverses_the_deposit_once,
    only_the_depositor_and_staff_read_a_deposit,
    bad_input_is_refused_before_anything_is_recorded,
    a_payment_confirmed_after_release_is_held_once,
    a_prepaid_balance_goes_back_to_the_cards_that_paid_it,
);

/// A family portal session: (cookie, CSRF token).
struct Family {
    cookie: String,
    csrf: String,
}

async fn family(app: &App, email: &str) -> Family {
    let user = match app
        .store
        .family_register(email, "correct horse battery")
        .await
        .unwrap()
    {
        Registration::Created(a) => a.user_id,
        Registration::Existing { .. } => panic!("{email} exists"),
    };
    assert!(app.store.family_verify(&user, email).await.unwrap());
    let (cookie, _) = app.store.family_new_session(&user, 3_600).await.unwrap();
    let (s, v) = call(
        app,
        "GET",
        "/api/v1/family/session",
        None,
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    Family {
        cookie,
        csrf: v["csrf_token"].as_str().unwrap().to_string(),
    }
}

async fn call(
    app: &App,
    method: &str,
    path: &str,
    body: Option<Value>,
    cookie: Option<&str>,
    csrf: Option<&str>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("sp_family={c}"));
    }
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
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
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

/// A facility and an inmate; returns the inmate's account id.
async fn account(app: &App) -> String {
    support::inproc::facility(app, "dep").await;
    let inmate = support::inproc::inmate(app, "dep", "B-100").await;
    inmate["account_id"].as_str().unwrap().to_string()
}

fn card_body(account: &str, amount: &str, number: &str) -> Value {
    json!({
        "account_id": account, "amount": amount, "depositor": "Jane Doe",
        "card_number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"
    })
}

async fn deposit(app: &App, f: &Family, body: Value, key: &str) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        "/api/v1/family/deposits",
        Some(body),
        Some(&f.cookie),
        Some(&f.csrf),
        Some(key),
    )
    .await
}

async fn balance(app: &App, account: &str) -> String {
    let (s, v) = admin(app, "GET", &format!("/api/v1/accounts/{account}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["balance"].as_str().unwrap().to_string()
}

async fn ledger_clean(app: &App) {
    let (s, v) = admin(app, "GET", "/api/v1/ledger/check", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["violations"], json!([]), "{v}");
}

/// Posts one webhook (body, signature header) to the router.
async fn post_webhook(app: &App, body: &str, sig: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/api/v1/payments/webhook")
        .header("content-type", "application/json");
    if let Some(s) = sig {
        req = req.header("sallyport-signature", s);
    }
    let (s, _, bytes) = fetch(app, req.body(Body::from(body.to_string())).unwrap()).await;
    (s, json_of(&bytes))
}

/// Moves the clock `secs` on and delivers every webhook then due, as the delivery task
/// does; returns the answers.
async fn deliver(d: &Dep, secs: u64) -> Vec<(StatusCode, Value)> {
    d.app.clock.advance(Duration::from_secs(secs));
    let test = d.payments.test_provider().unwrap();
    let now = to_micros(d.app.clock.wall());
    let mut out = Vec::new();
    for w in test.due(now).await.unwrap() {
        let r = post_webhook(&d.app, &w.body, Some(&w.signature)).await;
        test.delivered(&w.event_id, r.0.is_success()).await.unwrap();
        out.push(r);
    }
    out
}

async fn status(app: &App, f: &Family, id: &str) -> Value {
    let path = format!("/api/v1/deposits/{id}");
    let (s, v) = call(app, "GET", &path, None, Some(&f.cookie), None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn states(v: &Value) -> Vec<String> {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_string())
        .collect()
}

async fn an_approved_card_posts_once_and_its_webhook_changes_nothing(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let (s, v) = deposit(app, &f, card_body(&acct, "60.00", APPROVE), "k-1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "posted", "{v}");
    assert_eq!(v["card_last4"], "4242");
    assert!(
        v["confirmation"].as_str().unwrap().starts_with("SP-"),
        "{v}"
    );
    assert_eq!(states(&v), ["submitted", "authorized", "posted"]);
    assert_eq!(balance(app, &acct).await, "60.00");
    // The provider's confirmation arrives later: a duplicate of what the capture said.
    let answers = deliver(&d, 2).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(answers[0].1["changed"], false, "{answers:?}");
    assert_eq!(balance(app, &acct).await, "60.00");
    let id = v["id"].as_str().unwrap();
    assert_eq!(states(&status(app, &f, id).await).len(), 3);
    // The family's list has it; staff see it pending-then-posted in the account's deposits.
    let (s, list) = call(
        app,
        "GET",
        "/api/v1/family/deposits",
        None,
        Some(&f.cookie),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    ledger_clean(app).await;
}

async fn a_declined_card_posts_nothing(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let (s, v) = deposit(app, &f, card_body(&acct, "60.00", DECLINE), "k-1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "declined", "{v}");
    assert_eq!(v["reason"], "card_declined", "{v}");
    assert_eq!(v["transaction_id"], Value::Null);
    assert_eq!(balance(app, &acct).await, "0.00");
    // Its `payment.failed` webhook changes nothing; a declined deposit no longer counts
    // toward the daily limit (150.00): 100 + 50 still go through.
    deliver(&d, 2).await;
    for (amount, key) in [("100.00", "k-2"), ("50.00", "k-3")] {
        let (s, v) = deposit(app, &f, card_body(&acct, amount, APPROVE), key).await;
        assert_eq!(
            (s, v["state"].as_str()),
            (StatusCode::CREATED, Some("posted")),
            "{v}"
        );
    }
    assert_eq!(balance(app, &acct).await, "150.00");
    ledger_clean(app).await;
}

async fn a_later_confirmation_posts_when_its_webhook_arrives(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let (s, v) = deposit(app, &f, card_body(&acct, "75.00", LATER), "k-1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "authorized", "{v}");
    assert_eq!(balance(app, &acct).await, "0.00");
    // Not yet due: nothing is delivered.
    assert!(deliver(&d, 0).await.is_empty());
    let answers = deliver(&d, 2).await;
    assert_eq!(answers.len(), 2, "processing, then succeeded: {answers:?}");
    let id = v["id"].as_str().unwrap();
    let now = status(app, &f, id).await;
    assert_eq!(now["state"], "posted", "{now}");
    assert_eq!(states(&now), ["submitted", "authorized", "posted"]);
    assert_eq!(now["timeline"][2]["source"], "webhook");
    assert_eq!(balance(app, &acct).await, "75.00");
    // A card held for review is held, with the reason, and posts nothing.
    let (_, v) = deposit(app, &f, card_body(&acct, "60.00", HELD), "k-2").await;
    deliver(&d, 2).await;
    let held = status(app, &f, v["id"].as_str().unwrap()).await;
    assert_eq!(
        (held["state"].as_str(), held["reason"].as_str()),
        (Some("held"), Some("risk_review")),
        "{held}"
    );
    assert_eq!(balance(app, &acct).await, "75.00");
    ledger_clean(app).await;
}

async fn duplicated_and_reordered_webhooks_post_once(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let (_, v) = deposit(app, &f, card_body(&acct, "80.00", LATER), "k-1").await;
    let id = v["id"].as_str().unwrap().to_string();
    // Collect the two events (processing, succeeded) and deliver them in reverse, each
    // three times.
    d.app.clock.advance(Duration::from_secs(2));
    let test = d.payments.test_provider().unwrap();
    let mut due = test.due(to_micros(d.app.clock.wall())).await.unwrap();
    assert_eq!(due.len(), 2);
    due.reverse();
    for w in &due {
        for _ in 0..3 {
            let (s, r) = post_webhook(app, &w.body, Some(&w.signature)).await;
            assert_eq!(s, StatusCode::OK, "{r}");
        }
    }
    assert_eq!(balance(app, &acct).await, "80.00");
    let after = status(app, &f, &id).await;
    assert_eq!(
        states(&after),
        ["submitted", "authorized", "posted"],
        "{after}"
    );
    // Refunded, then the `succeeded` event once more (reordered after the refund): the
    // refund stands and nothing posts again.
    let path = format!("/api/v1/deposits/{id}/refund");
    let (s, r) = call(
        app,
        "POST",
        &path,
        None,
        Some(&f.cookie),
        Some(&f.csrf),
        Some("r-1"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "refunded");
    let succeeded = due
        .iter()
        .find(|w| w.body.contains("payment.succeeded"))
        .unwrap();
    let t = d.app.clock.wall().timestamp();
    let fresh = signature::sign(d.payments.secret(), t, succeeded.body.as_bytes());
    let (s, r) = post_webhook(app, &succeeded.body, Some(&fresh)).await;
    assert_eq!((s, &r["changed"]), (StatusCode::OK, &json!(false)), "{r}");
    assert_eq!(balance(app, &acct).await, "0.00");
    ledger_clean(app).await;
}

async fn a_wrong_or_stale_signature_changes_nothing(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let (_, v) = deposit(app, &f, card_body(&acct, "90.00", LATER), "k-1").await;
    let id = v["id"].as_str().unwrap().to_string();
    d.app.clock.advance(Duration::from_secs(2));
    let test = d.payments.test_provider().unwrap();
    let due = test.due(to_micros(d.app.clock.wall())).await.unwrap();
    let succeeded = due
        .iter()
        .find(|w| w.body.contains("payment.succeeded"))
        .unwrap();
    let t = d.app.clock.wall().timestamp();
    let body = &succeeded.body;
    let cases = [
        (
            signature::sign(b"not the shared secret", t, body.as_bytes()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            signature::sign(d.payments.secret(), t - 301, body.as_bytes()),
            StatusCode::UNAUTHORIZED,
        ),
        ("t=abc,v1=00".to_string(), StatusCode::BAD_REQUEST),
    ];
    for (sig, want) in cases {
        let (s, r) = post_webhook(app, body, Some(&sig)).await;
        assert_eq!(s, want, "{sig}: {r}");
        assert_eq!(r["error"]["code"], "bad_signature", "{r}");
    }
    let (s, _) = post_webhook(app, body, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A body changed after signing does not verify either.
    let forged = body.replace("\"amount\":\"90", "\"amount\":\"99");
    let (s, _) = post_webhook(app, &forged, Some(&succeeded.signature)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(status(app, &f, &id).await["state"], "authorized");
    assert_eq!(balance(app, &acct).await, "0.00");
    // Each refusal is in the audit log.
    let (s, audit) = admin(app, "GET", "/api/v1/audit?limit=200", None).await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    assert!(
        audit.to_string().matches("payment.webhook_refused").count() >= 5,
        "{audit}"
    );
    // The genuine one still posts.
    let (s, _) = post_webhook(app, body, Some(&succeeded.signature)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(balance(app, &acct).await, "90.00");
    ledger_clean(app).await;
}

async fn a_double_submit_and_a_retry_deposit_once(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let body = card_body(&acct, "55.00", APPROVE);
    // Two clicks at once with the key the form was given.
    let (a, b) = tokio::join!(
        deposit(app, &f, body.clone(), "form-1"),
        deposit(app, &f, body.clone(), "form-1")
    );
    assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
    assert_eq!(b.0, StatusCode::CREATED, "{}", b.1);
    assert_eq!(a.1["id"], b.1["id"]);
    assert_eq!(b.1["state"], "posted", "{}", b.1);
    // A retry later with the same key: the same deposit, as it stands.
    let (s, c) = deposit(app, &f, body.clone(), "form-1").await;
    assert_eq!(
        (s, &c["id"], &c["state"]),
        (StatusCode::CREATED, &a.1["id"], &json!("posted"))
    );
    // The same key for another amount is a conflict, not a second deposit.
    let (s, e) = deposit(app, &f, card_body(&acct, "56.00", APPROVE), "form-1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    deliver(&d, 2).await;
    assert_eq!(balance(app, &acct).await, "55.00");
    ledger_clean(app).await;
}

async fn a_lost_webhook_is_reconciled(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let (_, v) = deposit(app, &f, card_body(&acct, "70.00", LATER), "k-1").await;
    let id = v["id"].as_str().unwrap().to_string();
    // Too recent: the reconciliation leaves it alone.
    let r = d.payments.reconcile(app.store.ledger()).await.unwrap();
    assert_eq!(r.checked, 0);
    // The webhooks are lost (never delivered); 60 s later the reconciliation asks.
    app.clock.advance(Duration::from_secs(60));
    let r = d.payments.reconcile(app.store.ledger()).await.unwrap();
    assert_eq!((r.checked, r.moved), (1, 1), "{r:?}");
    let now = status(app, &f, &id).await;
    assert_eq!(now["state"], "posted", "{now}");
    assert_eq!(now["timeline"][2]["source"], "reconcile");
    // Then the webhooks arrive after all: duplicates.
    deliver(&d, 1).await;
    let r = d.payments.reconcile(app.store.ledger()).await.unwrap();
    assert_eq!(r.checked, 0);
    assert_eq!(balance(app, &acct).await, "70.00");
    ledger_clean(app).await;
}

async fn a_refund_reverses_the_deposit_once(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let (_, v) = deposit(app, &f, card_body(&acct, "65.00", APPROVE), "k-1").await;
    let id = v["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/deposits/{id}/refund");
    let (s, r) = admin_keyed(app, &path, "staff-r-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "refunded");
    assert_eq!(
        states(&r),
        ["submitted", "authorized", "posted", "refunded"]
    );
    assert_eq!(r["timeline"][3]["source"], "staff");
    // Again (another key), and the provider's `refunded` webhook: nothing more moves.
    let (s, e) = admin_keyed(app, &path, "staff-r-2").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    deliver(&d, 2).await;
    assert_eq!(balance(app, &acct).await, "0.00");
    let r = d.payments.reconcile(app.store.ledger()).await.unwrap();
    assert_eq!(
        r.refunds_confirmed, 0,
        "the provider confirmed at once: {r:?}"
    );
    // A refund the account cannot cover (the money was spent) is refused.
    let (_, v) = deposit(app, &f, card_body(&acct, "60.00", APPROVE), "k-2").await;
    let (s, _) = admin(
        app,
        "POST",
        &format!("/api/v1/accounts/{acct}/purchases"),
        Some(json!({"amount": "10.00", "reference": "order-1"})),
    )
    .await;
    assert!(
        s == StatusCode::CREATED || s == StatusCode::BAD_REQUEST,
        "{s}"
    );
    if s == StatusCode::CREATED {
        let path = format!("/api/v1/deposits/{}/refund", v["id"].as_str().unwrap());
        let (s, e) = admin_keyed(app, &path, "staff-r-3").await;
        assert_eq!(s, StatusCode::CONFLICT, "{e}");
        assert_eq!(balance(app, &acct).await, "50.00");
    }
    ledger_clean(app).await;
}

async fn admin_keyed(app: &App, path: &str, key: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("idempotency-key", key)
        .body(Body::empty())
        .unwrap();
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

async fn only_the_depositor_and_staff_read_a_deposit(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let jane = family(app, "jane@example.org").await;
    let other = family(app, "other@example.org").await;
    let (_, v) = deposit(app, &jane, card_body(&acct, "60.00", APPROVE), "k-1").await;
    let path = format!("/api/v1/deposits/{}", v["id"].as_str().unwrap());
    let (s, _) = call(app, "GET", &path, None, Some(&other.cookie), None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, r) = admin(app, "GET", &path, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["confirmation"], v["confirmation"]);
    let (s, list) = call(
        app,
        "GET",
        "/api/v1/family/deposits",
        None,
        Some(&other.cookie),
        None,
        None,
    )
    .await;
    assert_eq!((s, list), (StatusCode::OK, json!([])));
    // Another family cannot refund it either.
    let refund = format!("{path}/refund");
    let (s, _) = call(
        app,
        "POST",
        &refund,
        None,
        Some(&other.cookie),
        Some(&other.csrf),
        Some("x"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn bad_input_is_refused_before_anything_is_recorded(d: Dep) {
    let app = &d.app;
    let acct = account(app).await;
    let f = family(app, "jane@example.org").await;
    let cases = [
        (
            card_body(&acct, "60.00", "4242 4242 4242 4241"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_card",
        ),
        (
            json!({"account_id": acct, "amount": "60.00", "card_number": APPROVE, "exp_month": 1, "exp_year": 2026, "cvc": "123"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "card_expired",
        ),
        (
            card_body(&acct, "0", APPROVE),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            card_body(&acct, "60.001", APPROVE),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            card_body(&acct, "100.01", APPROVE),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            card_body("no-such-account", "60.00", APPROVE),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (i, (body, want, code)) in cases.into_iter().enumerate() {
        let (s, v) = deposit(app, &f, body, &format!("bad-{i}")).await;
        assert!(
            s == want || (code.is_empty() && s.is_client_error()),
            "case {i}: {s} {v}"
        );
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "case {i}: {v}");
        }
    }
    // Without the CSRF token, or without a key: refused.
    let (s, _) = call(
        app,
        "POST",
        "/api/v1/family/deposits",
        Some(card_body(&acct, "60.00", APPROVE)),
        Some(&f.cookie),
        None,
        Some("k"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        app,
        "POST",
        "/api/v1/family/deposits",
        Some(card_body(&acct, "60.00", APPROVE)),
        Some(&f.cookie),
        Some(&f.csrf),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, list) = call(
        app,
        "GET",
        "/api/v1/family/deposits",
        None,
        Some(&f.cookie),
        None,
        None,
    )
    .await;
    assert_eq!((s, list), (StatusCode::OK, json!([])));
    assert_eq!(balance(app, &acct).await, "0.00");
    ledger_clean(app).await;
}

async fn a_payment_confirmed_after_release_is_held_once(d: Dep) {
    let app = &d.app;
    support::inproc::facility(app, "dep").await;
    let inmate = support::inproc::inmate(app, "dep", "B-200").await;
    let acct = inmate["account_id"].as_str().unwrap().to_string();
    let f = family(app, "jane@example.org").await;
    let (_, v) = deposit(app, &f, card_body(&acct, "60.00", LATER), "k-1").await;
    assert_eq!(v["state"], "authorized", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let release = format!("/api/v1/inmates/{}/release", inmate["id"].as_str().unwrap());
    let (s, r) = admin_keyed(app, &release, "rel-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    // The confirmation arrives for a closed account: held, with the reason, once, however
    // often the webhook and the reconciliation say it again.
    deliver(&d, 2).await;
    app.clock.advance(Duration::from_secs(120));
    for _ in 0..2 {
        d.payments.reconcile(app.store.ledger()).await.unwrap();
    }
    let now = status(app, &f, &id).await;
    assert_eq!(now["state"], "held", "{now}");
    assert!(now["reason"].as_str().unwrap().contains("closed"), "{now}");
    assert_eq!(states(&now), ["submitted", "authorized", "held"], "{now}");
    assert_eq!(balance(app, &acct).await, "0.00");
    ledger_clean(app).await;
}

async fn refund_prepaid(app: &App, f: &Family, account: &str, key: &str) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        &format!("/api/v1/family/prepaid/{account}/refund"),
        None,
        Some(&f.cookie),
        Some(&f.csrf),
        Some(key),
    )
    .await
}

/// Issue 12: a family's unused prepaid balance is refunded on request, without a fee, to
/// the cards that paid it: newest deposit first, each part at most what is left of its
/// deposit, each part taken by the provider once; a replay moves nothing; an empty account
/// has nothing to refund; a deposit partly refunded this way is not refunded whole again.
async fn a_prepaid_balance_goes_back_to_the_cards_that_paid_it(d: Dep) {
    let app = &d.app;
    support::inproc::facility(app, "dep").await;
    let f = family(app, "prepaid.refund@example.org").await;
    let (s, acct) = call(
        app,
        "POST",
        "/api/v1/family/prepaid",
        Some(json!({ "facility_id": "dep" })),
        Some(&f.cookie),
        Some(&f.csrf),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{acct}");
    let prepaid = acct["id"].as_str().unwrap().to_string();
    let (s, older) = deposit(app, &f, card_body(&prepaid, "60.00", APPROVE), "pp-1").await;
    assert_eq!(
        (s, older["state"].as_str()),
        (StatusCode::CREATED, Some("posted")),
        "{older}"
    );
    d.app.clock.advance(Duration::from_secs(60));
    let (s, newer) = deposit(app, &f, card_body(&prepaid, "50.00", APPROVE), "pp-2").await;
    assert_eq!(
        (s, newer["state"].as_str()),
        (StatusCode::CREATED, Some("posted")),
        "{newer}"
    );
    // $30 of calls: $80 left.
    let ledger = app.store.ledger();
    let debit = sallyport::ledger::SessionDebit {
        session_id: "sess-prepaid".into(),
        increment: 1,
        account_id: prepaid.clone(),
        facility_id: "dep".into(),
        amount: "30".parse().unwrap(),
        service: sallyport::ledger::Service::Audio,
    };
    ledger.debit_session(debit).await.unwrap();
    assert_eq!(balance(app, &prepaid).await, "80.00");

    let (s, r) = refund_prepaid(app, &f, &prepaid, "refund-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["total"], "80.00", "{r}");
    let parts = r["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{r}");
    assert_eq!(parts[0]["deposit_id"], newer["id"], "newest first: {r}");
    assert_eq!(parts[0]["amount"], "50.00", "{r}");
    assert_eq!(parts[1]["deposit_id"], older["id"], "{r}");
    assert_eq!(parts[1]["amount"], "30.00", "{r}");
    assert!(
        parts.iter().all(|p| !p["confirmed_at"].is_null()),
        "the provider took both: {r}"
    );
    assert_eq!(balance(app, &prepaid).await, "0.00");
    // The provider's books: two partial refunds, none more than its payment.
    let refunded: Vec<(String, i64)> = sqlx::query_as(
        "SELECT payment_id, amount_minor FROM testpay_refunds ORDER BY amount_minor DESC",
    )
    .fetch_all(app.t.db.pool())
    .await
    .unwrap();
    assert_eq!(refunded.len(), 2, "{refunded:?}");
    assert_eq!((refunded[0].1, refunded[1].1), (500_000, 300_000));
    // A part the provider never got (its answer lost): the reconciliation asks again, by
    // the part's id, once.
    let lost = parts[1]["id"].as_str().unwrap();
    sqlx::query("DELETE FROM testpay_refunds WHERE reference = $1")
        .bind(lost)
        .execute(app.t.db.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE prepaid_refunds SET confirmed_at = NULL WHERE id = $1")
        .bind(lost)
        .execute(app.t.db.pool())
        .await
        .unwrap();
    d.app.clock.advance(Duration::from_secs(31));
    let rec = d.payments.reconcile(ledger).await.unwrap();
    assert_eq!(rec.refunds_confirmed, 1, "{rec:?}");
    let rec = d.payments.reconcile(ledger).await.unwrap();
    assert_eq!(rec.refunds_confirmed, 0, "asked once: {rec:?}");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM testpay_refunds")
        .fetch_one(app.t.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 2);
    // A replay answers the same and moves nothing; a new request finds nothing to refund.
    let (s, again) = refund_prepaid(app, &f, &prepaid, "refund-1").await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(
        (&again["request_id"], &again["total"]),
        (&r["request_id"], &r["total"])
    );
    assert_eq!(balance(app, &prepaid).await, "0.00");
    let (s, v) = refund_prepaid(app, &f, &prepaid, "refund-2").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "invalid_state", "{v}");
    // The older deposit, partly refunded, is not refunded whole (that would return its
    // $30 twice); the newer, refunded to its last cent by the prepaid refund, neither.
    let older_id = older["id"].as_str().unwrap();
    let (s, v) = call(
        app,
        "POST",
        &format!("/api/v1/deposits/{older_id}/refund"),
        None,
        Some(&f.cookie),
        Some(&f.csrf),
        Some("whole-older"),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // The statement shows the two parts going out.
    let (s, st) = call(
        app,
        "GET",
        &format!("/api/v1/family/prepaid/{prepaid}/statement"),
        None,
        Some(&f.cookie),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    let out: Vec<&str> = st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "deposit_refund")
        .map(|l| l["amount"].as_str().unwrap())
        .collect();
    assert_eq!(out, vec!["-50.00", "-30.00"], "{st}");
    // Another family cannot refund it.
    let g = family(app, "someone.else@example.org").await;
    let (s, _) = call(
        app,
        "POST",
        &format!("/api/v1/family/prepaid/{prepaid}/refund"),
        None,
        Some(&g.cookie),
        Some(&g.csrf),
        Some("not-mine"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    ledger_clean(app).await;
}
