//! What clients can send (issue 9, items 4, 5, 6 and 11), through the real router on
//! SQLite and PostgreSQL: every stored string has a limit and a 422 naming the field past
//! it, every body a limit and a 413 past it; an idempotency key belongs to its caller; an
//! amount has one written form and a JSON number is never taken. Each test repeats the
//! attack that found the defect and checks that nothing was stored or moved.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sallyport::db::Backend;
use serde_json::{json, Value};
use support::inproc::{self, admin, err_code, fetch, issue, json_of, App, Setup};

const ADMIN: &str = "input-admin-token";
const TEN_MB: usize = 10 * 1024 * 1024;

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).app(backend).await
}

/// One JSON request as `token`, with an `Idempotency-Key` if given: status and body.
async fn send(
    app: &App,
    method: &str,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = inproc::request(method, path, Some(token), body);
    if let Some(k) = key {
        req.headers_mut()
            .insert("idempotency-key", k.parse().unwrap());
    }
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

/// A raw body with a content type, as the administrator.
async fn send_raw(app: &App, path: &str, ctype: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", ctype)
        .body(Body::from(body))
        .unwrap();
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

/// The error message of an error answer.
fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

/// Asserts a 422 `code` whose message names every one of `words`.
fn assert_422(got: &(StatusCode, Value), code: &str, words: &[&str], what: &str) {
    let (s, v) = got;
    assert_eq!(
        (*s, err_code(v)),
        (StatusCode::UNPROCESSABLE_ENTITY, code),
        "{what}: {v}"
    );
    for w in words {
        assert!(
            message(v).contains(w),
            "{what}: the message names {w:?}: {v}"
        );
    }
}

/// Asserts a 413 in the error shape.
fn assert_413(got: &(StatusCode, Value), what: &str) {
    let (s, v) = got;
    assert_eq!(
        (*s, err_code(v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        "{what}: {v}"
    );
    assert!(message(v).contains("bytes"), "{what}: names the limit: {v}");
}

async fn balance(app: &App, account: &str) -> String {
    let (s, v) = admin(app, "GET", &format!("/api/v1/accounts/{account}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["balance"].as_str().unwrap().to_string()
}

async fn count(app: &App, path: &str) -> usize {
    let (s, v) = admin(app, "GET", path, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().len()
}

/// Facility `fid` with an inmate (booking B-1); returns (inmate id, account id).
async fn booked(app: &App, fid: &str) -> (String, String) {
    inproc::facility(app, fid).await;
    let i = inproc::inmate(app, fid, "B-1").await;
    (
        i["id"].as_str().unwrap().to_string(),
        i["account_id"].as_str().unwrap().to_string(),
    )
}

/// Item 4: a 10 MB first_name, contact name or depositor (the last from a kiosk token, a
/// lobby kiosk's cash deposit: families deposit by card on their own route since issue 12;
/// a kiosk adds contacts only in an inmate's sitting, `tests/api.rs::kiosk_sittings`) is
/// refused and nothing is stored; so is a string one character past
/// its limit, with a 422 naming the field and the limit, and a name with a control
/// character. At the limit, it is stored whole.
async fn stored_text_is_bounded(app: App) {
    let (iid, acc) = booked(&app, "F1").await;
    let kiosk = issue(&app, "kiosk-1", "kiosk", &["F1"], None).await;
    let huge = "x".repeat(TEN_MB);
    let over = "n".repeat(101);
    let at_limit = "ñ".repeat(100);
    let inmates = "/api/v1/facilities/F1/inmates";
    let contacts = format!("/api/v1/inmates/{iid}/contacts");
    let deposits = format!("/api/v1/accounts/{acc}/deposits");
    let book =
        |first: &str| json!({ "booking_number": "B-2", "first_name": first, "last_name": "Doe" });
    let contact = |name: &str| json!({ "number": "+15551230002", "name": name });
    let deposit = |who: &str| json!({ "amount": "5.00", "method": "kiosk", "depositor": who });

    // The attacks as found: 10 MB, refused before the body is read.
    let got = send(&app, "POST", inmates, ADMIN, None, Some(book(&huge))).await;
    assert_413(&got, "10 MB first_name");
    let got = send(&app, "POST", &contacts, ADMIN, None, Some(contact(&huge))).await;
    assert_413(&got, "10 MB contact name");
    let got = send(
        &app,
        "POST",
        &deposits,
        &kiosk,
        Some("f-1"),
        Some(deposit(&huge)),
    )
    .await;
    assert_413(&got, "10 MB depositor from a kiosk token");

    // One character past the limit: a 422 naming the field and the limit.
    let got = send(&app, "POST", inmates, ADMIN, None, Some(book(&over))).await;
    assert_422(
        &got,
        "invalid",
        &["first_name", "100"],
        "101-character first_name",
    );
    let got = send(&app, "POST", &contacts, ADMIN, None, Some(contact(&over))).await;
    assert_422(
        &got,
        "invalid",
        &["name", "100"],
        "101-character contact name",
    );
    let got = send(
        &app,
        "POST",
        &deposits,
        &kiosk,
        Some("f-1"),
        Some(deposit(&over)),
    )
    .await;
    assert_422(
        &got,
        "invalid",
        &["depositor", "100"],
        "101-character depositor",
    );
    for (field, body) in [
        (
            "reference",
            json!({ "amount": "5.00", "method": "online", "reference": "r".repeat(201) }),
        ),
        (
            "memo",
            json!({ "amount": "1.00", "memo": "m".repeat(1001) }),
        ),
    ] {
        let path = if field == "memo" {
            format!("/api/v1/accounts/{acc}/purchases")
        } else {
            deposits.clone()
        };
        let got = send(&app, "POST", &path, ADMIN, Some("t-1"), Some(body)).await;
        assert_422(&got, "invalid", &[field], field);
    }
    // Control characters in a name (an ANSI escape, a newline) are refused.
    for bad in ["\u{1b}[2J\u{1b}[31mJohn", "John\nDoe", "nul\u{0}"] {
        let got = send(&app, "POST", inmates, ADMIN, None, Some(book(bad))).await;
        assert_422(&got, "invalid", &["first_name", "control"], bad);
        let got = send(&app, "POST", &contacts, ADMIN, None, Some(contact(bad))).await;
        assert_422(&got, "invalid", &["name", "control"], bad);
    }
    // The other stores: facility, handset, trusted network, block, user, token.
    let refused = [
        ("/api/v1/facilities/F1", "PATCH", json!({ "name": over })),
        (
            "/api/v1/facilities/F1/handsets",
            "POST",
            json!({ "name": over }),
        ),
        (
            "/api/v1/facilities/F1/handsets",
            "POST",
            json!({ "name": "h", "location": over }),
        ),
        (
            "/api/v1/facilities/F1/handsets",
            "POST",
            json!({ "name": "h", "sip_username": "a b" }),
        ),
        (
            "/api/v1/facilities/F1/trusted-networks",
            "POST",
            json!({ "cidr": "10.0.0.0/8", "description": "d".repeat(1001) }),
        ),
        (
            "/api/v1/facilities/F1/blocks",
            "POST",
            json!({ "number": "+15551239999", "reason": "r".repeat(1001) }),
        ),
        (
            "/api/v1/tokens",
            "POST",
            json!({ "username": "u".repeat(65), "role": "family", "facilities": ["F1"] }),
        ),
    ];
    for (path, method, body) in refused {
        let got = send(&app, method, path, ADMIN, None, Some(body.clone())).await;
        assert_422(&got, "invalid", &[], &format!("{method} {path} {body}"));
    }

    // A call search's filters go into its audit entry: bounded too, and nothing audited.
    let audited = count(&app, "/api/v1/audit?limit=1000").await;
    let long_number = "5".repeat(10_000);
    let (s, e) = admin(
        &app,
        "GET",
        &format!("/api/v1/calls?number={long_number}"),
        None,
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{e}"
    );
    assert!(
        message(&e).contains("number") && message(&e).contains("64"),
        "{e}"
    );
    assert_eq!(count(&app, "/api/v1/audit?limit=1000").await, audited);

    // Nothing of the above was stored, and no money moved.
    assert_eq!(count(&app, inmates).await, 1, "no inmate booked");
    assert_eq!(count(&app, &contacts).await, 0, "no contact added");
    assert_eq!(count(&app, &deposits).await, 0, "no deposit made");
    assert_eq!(count(&app, "/api/v1/facilities/F1/handsets").await, 0);
    assert_eq!(
        count(&app, "/api/v1/facilities/F1/trusted-networks").await,
        0
    );
    assert_eq!(count(&app, "/api/v1/facilities/F1/blocks").await, 0);
    assert_eq!(balance(&app, &acc).await, "0.00");
    let (_, f) = admin(&app, "GET", "/api/v1/facilities/F1", None).await;
    assert_eq!(f["name"], "F1 County Jail");

    // At the limit a name is stored whole, and the refused key is free for a good request.
    let (s, i) = send(&app, "POST", inmates, ADMIN, None, Some(book(&at_limit))).await;
    assert_eq!(s, StatusCode::CREATED, "{i}");
    assert_eq!(i["first_name"].as_str(), Some(at_limit.as_str()));
    let (s, d) = send(
        &app,
        "POST",
        &deposits,
        &kiosk,
        Some("f-1"),
        Some(deposit(&at_limit)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["depositor"].as_str(), Some(at_limit.as_str()));
    let (s, c) = send(
        &app,
        "POST",
        &contacts,
        ADMIN,
        None,
        Some(contact(&at_limit)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(balance(&app, &acc).await, "5.00");
    app.t.cleanup().await;
}

/// Item 4: every route bounds its body (JSON 64 KiB, a 413 in the error shape past it,
/// even where the body would be refused anyway); the CSV uploads take a deck of 100,000
/// prefixes and refuse one over 32 MiB.
async fn request_bodies_are_bounded(app: App) {
    inproc::facility(&app, "F1").await;
    let limit = sallyport::api::MAX_JSON_BODY_BYTES;
    let just_over = json!({ "id": "F2", "name": "x".repeat(limit), "time_zone": "UTC",
                            "deposit_max": "1", "deposit_daily_max": "1" });
    let got = send(
        &app,
        "POST",
        "/api/v1/facilities",
        ADMIN,
        None,
        Some(just_over),
    )
    .await;
    assert_413(&got, "a facility just over the JSON limit");
    assert!(message(&got.1).contains(&limit.to_string()), "{}", got.1);
    let got = send(
        &app,
        "POST",
        "/api/v1/auth/login",
        ADMIN,
        None,
        Some(json!({ "username": "x".repeat(TEN_MB), "password": "p" })),
    )
    .await;
    assert_413(&got, "a 10 MB login");
    assert_eq!(count(&app, "/api/v1/facilities").await, 1);

    // A deck of 100,000 prefixes (about 4.4 MB) is taken...
    let mut deck = String::from("prefix,class,description\n");
    for i in 0..100_000u32 {
        deck.push_str(&format!("44{i:06},international,United Kingdom {i}\n"));
    }
    assert!(deck.len() > limit * 16, "{} bytes", deck.len());
    let (s, v) = send_raw(
        &app,
        "/api/v1/rate-decks?id=big",
        "text/csv",
        deck.into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["prefixes"], 100_000, "{v}");
    // ... one over the upload limit is not, and a CSV description has its limit too.
    let over = vec![b'1'; sallyport::api::MAX_UPLOAD_BODY_BYTES + 1];
    let got = send_raw(&app, "/api/v1/rate-decks?id=huge", "text/csv", over).await;
    assert_413(&got, "a 32 MiB + 1 deck");
    let long = format!(
        "prefix,class,description\n1,domestic,{}\n",
        "d".repeat(1001)
    );
    let got = send_raw(
        &app,
        "/api/v1/rate-decks?id=long",
        "text/csv",
        long.into_bytes(),
    )
    .await;
    assert_422(
        &got,
        "invalid",
        &["description", "1000"],
        "a 1001-character description",
    );
    let (s, v) = admin(&app, "GET", "/api/v1/rate-decks", None).await;
    assert_eq!(
        (s, v.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    app.t.cleanup().await;
}

/// Items 5 and 11: another user's token that reuses the admin's key gets its own deposit, never
/// the admin's receipt; each caller's replays still return its own first answer and a
/// different request under its key is still a 409; a user's keys are the same across its
/// tokens; and the account belongs to the request, not the key's namespace (the same
/// caller's key on another account is a 409).
async fn idempotency_keys_belong_to_their_caller(app: App) {
    let (_, acc) = booked(&app, "F1").await;
    let other = inproc::inmate(&app, "F1", "B-2").await;
    let acc2 = other["account_id"].as_str().unwrap().to_string();
    let other = issue(&app, "staff-2", "admin", &["F1"], None).await;
    let kiosk = issue(&app, "kiosk-1", "kiosk", &["F1"], None).await;
    let deposits = format!("/api/v1/accounts/{acc}/deposits");
    let online = json!({ "amount": "30.00", "method": "online", "depositor": "Jane" });

    let (s, by_admin) = send(
        &app,
        "POST",
        &deposits,
        ADMIN,
        Some("shared-1"),
        Some(online.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{by_admin}");
    assert_eq!(balance(&app, &acc).await, "30.00");

    // The attack: the same key, the same request, from another user's token.
    let (s, by_other) = send(
        &app,
        "POST",
        &deposits,
        &other,
        Some("shared-1"),
        Some(online.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{by_other}");
    assert_ne!(by_other["id"], by_admin["id"], "not the admin's receipt");
    assert_eq!(
        balance(&app, &acc).await,
        "60.00",
        "the other user's money arrived"
    );

    // Each caller's replay returns its own first answer and moves nothing.
    let again = send(
        &app,
        "POST",
        &deposits,
        &other,
        Some("shared-1"),
        Some(online.clone()),
    )
    .await;
    assert_eq!(again, (StatusCode::CREATED, by_other.clone()));
    let again = send(
        &app,
        "POST",
        &deposits,
        ADMIN,
        Some("shared-1"),
        Some(online.clone()),
    )
    .await;
    assert_eq!(again, (StatusCode::CREATED, by_admin.clone()));
    assert_eq!(balance(&app, &acc).await, "60.00");

    // A different request under a caller's own key is that caller's 409, and only its.
    let mut more = online.clone();
    more["amount"] = json!("31.00");
    for token in [ADMIN, other.as_str()] {
        let (s, e) = send(
            &app,
            "POST",
            &deposits,
            token,
            Some("shared-1"),
            Some(more.clone()),
        )
        .await;
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::CONFLICT, "idempotency_conflict"),
            "{e}"
        );
    }
    let kiosk_dep = json!({ "amount": "31.00", "method": "kiosk" });
    let (s, k) = send(
        &app,
        "POST",
        &deposits,
        &kiosk,
        Some("shared-1"),
        Some(kiosk_dep),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "a third caller's key is its own: {k}"
    );
    assert_eq!(balance(&app, &acc).await, "91.00");

    // The same caller's key on another account: a 409, not a second movement.
    let other_acc = format!("/api/v1/accounts/{acc2}/deposits");
    let (s, e) = send(
        &app,
        "POST",
        &other_acc,
        &other,
        Some("shared-1"),
        Some(online.clone()),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::CONFLICT, "idempotency_conflict"),
        "{e}"
    );
    assert_eq!(balance(&app, &acc2).await, "0.00");

    // Purchases and refunds: an admin user's key is not the configured admin's.
    let staff = issue(&app, "staff-1", "admin", &["F1"], None).await;
    let purchases = format!("/api/v1/accounts/{acc}/purchases");
    let buy = json!({ "amount": "1.00", "reference": "o-1" });
    let (s, first) = send(
        &app,
        "POST",
        &purchases,
        ADMIN,
        Some("buy-1"),
        Some(buy.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, second) = send(
        &app,
        "POST",
        &purchases,
        &staff,
        Some("buy-1"),
        Some(buy.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    assert_ne!(first["transaction_id"], second["transaction_id"]);
    assert_eq!(balance(&app, &acc).await, "89.00");

    // Every token of one user shares the user's keys: a retry after logging in again (a
    // new token) gets the first answer, not a second deposit.
    let other_again = issue(&app, "staff-2", "admin", &["F1"], None).await;
    assert_ne!(other_again, other);
    let again = send(
        &app,
        "POST",
        &deposits,
        &other_again,
        Some("shared-1"),
        Some(online),
    )
    .await;
    assert_eq!(again, (StatusCode::CREATED, by_other));
    assert_eq!(balance(&app, &acc).await, "89.00");
    let (s, v) = admin(&app, "GET", "/api/v1/ledger/check", None).await;
    assert_eq!((s, &v["violations"]), (StatusCode::OK, &json!([])), "{v}");
    app.t.cleanup().await;
}

/// Items 6 and 11: an amount is a JSON string in one written form; each lenient form the
/// gateway took, and every JSON number, is a 422 `invalid_amount` that says what the form
/// is, wherever an amount enters (deposits, purchases, refunds, facility limits, rate-plan
/// CSV); nothing moves and nothing is rounded.
async fn amounts_have_one_written_form(app: App) {
    let (_, acc) = booked(&app, "F1").await;
    let deposits = format!("/api/v1/accounts/{acc}/deposits");
    let purchases = format!("/api/v1/accounts/{acc}/purchases");
    let refunds = format!("/api/v1/accounts/{acc}/refunds");
    let (s, d) = send(
        &app,
        "POST",
        &deposits,
        ADMIN,
        Some("seed"),
        Some(json!({ "amount": "50.00", "method": "kiosk" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let lenient: Vec<Value> = [
        "  5.00", "5.00\n", "+0.5", "05.00", "5.", ".5", "5,00", "1e1", " 5", "５",
    ]
    .iter()
    .map(|s| json!(s))
    .chain(
        // JSON numbers: the issue's, which were rounded, and plain ones.
        [
            "9.999999999999999999",
            "0.00009999999999999999",
            "5",
            "5.0",
            "1e1",
        ]
        .iter()
        .map(|n| serde_json::from_str::<Value>(n).unwrap()),
    )
    .collect();
    for (i, amount) in lenient.iter().enumerate() {
        let key = format!("lenient-{i}");
        let dep = json!({ "amount": amount, "method": "online" });
        let spend = json!({ "amount": amount, "reference": "o" });
        for (path, body) in [(&deposits, &dep), (&purchases, &spend), (&refunds, &spend)] {
            let got = send(&app, "POST", path, ADMIN, Some(&key), Some(body.clone())).await;
            assert_422(
                &got,
                "invalid_amount",
                &["decimal string"],
                &format!("{path} {amount}"),
            );
        }
        for field in ["deposit_max", "deposit_daily_max"] {
            let got = send(
                &app,
                "PATCH",
                "/api/v1/facilities/F1",
                ADMIN,
                None,
                Some(json!({ field: amount })),
            )
            .await;
            assert_422(
                &got,
                "invalid_amount",
                &[field],
                &format!("{field} {amount}"),
            );
        }
    }
    // A fifth decimal is refused, never rounded (the ledger keeps four).
    for amount in ["0.00001", "1.00005"] {
        let got = send(
            &app,
            "POST",
            &purchases,
            ADMIN,
            Some("fine"),
            Some(json!({ "amount": amount })),
        )
        .await;
        assert_422(&got, "invalid_amount", &["decimal places"], amount);
    }
    let plan = "class,service,per_minute,increment_secs\nlocal,audio,.05,60\n";
    let got = send_raw(
        &app,
        "/api/v1/rate-plans?id=p",
        "text/csv",
        plan.as_bytes().to_vec(),
    )
    .await;
    assert_422(&got, "invalid", &["decimal string"], "a rate of .05");
    assert_eq!(balance(&app, &acc).await, "50.00", "nothing moved");
    let (_, f) = admin(&app, "GET", "/api/v1/facilities/F1", None).await;
    assert_eq!(
        (f["deposit_max"].as_str(), f["deposit_daily_max"].as_str()),
        (Some("100.00"), Some("150.00"))
    );

    // The written form is taken exactly, to four places where the ledger allows them.
    let (s, r) = send(
        &app,
        "POST",
        &purchases,
        ADMIN,
        Some("exact"),
        Some(json!({ "amount": "0.0001" })),
    )
    .await;
    assert_eq!(
        (s, r["amount"].as_str()),
        (StatusCode::CREATED, Some("0.0001")),
        "{r}"
    );
    let (s, r) = send(
        &app,
        "POST",
        &refunds,
        ADMIN,
        Some("exact-back"),
        Some(json!({ "amount": "0.0001" })),
    )
    .await;
    assert_eq!(
        (s, r["balance_after"].as_str()),
        (StatusCode::CREATED, Some("50.00")),
        "{r}"
    );
    let (s, f) = send(
        &app,
        "PATCH",
        "/api/v1/facilities/F1",
        ADMIN,
        None,
        Some(json!({ "deposit_max": "75.5" })),
    )
    .await;
    assert_eq!(
        (s, f["deposit_max"].as_str()),
        (StatusCode::OK, Some("75.50")),
        "{f}"
    );
    app.t.cleanup().await;
}

/// A NUL (or another control character) in an id, a path or a reference is refused with
/// a 4xx on both backends: on PostgreSQL, which stores no NUL in text, each of these was a
/// 500 (a family token could cause one), on SQLite the NUL reached the database.
async fn nul_bytes_are_refused_not_failed_on(app: App) {
    let (_, acc) = booked(&app, "F1").await;
    let family = issue(&app, "family-nul", "family", &["F1"], None).await;
    for (method, path, token) in [
        ("GET", "/api/v1/accounts/a%00b".to_string(), family.as_str()),
        ("GET", format!("/api/v1/accounts/{acc}%0A"), family.as_str()),
        ("GET", "/api/v1/calls/a%00b".to_string(), ADMIN),
        ("GET", "/api/v1/inmates/a%00b".to_string(), ADMIN),
        ("GET", "/api/v1/facilities/a%00b".to_string(), ADMIN),
        ("GET", "/api/v1/calls?number=1%00".to_string(), ADMIN),
        ("POST", "/api/v1/deposits/a%00b/post".to_string(), ADMIN),
        ("POST", "/api/v1/contacts/a%00b/approve".to_string(), ADMIN),
    ] {
        let (s, v) = send(&app, method, &path, token, Some("nul-key"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path}: {v}");
    }
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/accounts/a%00b/deposits",
        &family,
        Some("nul-dep"),
        Some(json!({ "amount": "5.00", "method": "online", "depositor": "x" })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    for body in [
        json!({ "rate_plan_id": "a\u{0}b" }),
        json!({ "rate_deck_id": "a\u{0}b" }),
    ] {
        let (s, v) = send(
            &app,
            "PATCH",
            "/api/v1/facilities/F1",
            ADMIN,
            None,
            Some(body.clone()),
        )
        .await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
    }
    let token = json!({ "username": "u", "role": "family", "facilities": ["a\u{0}b"] });
    let (s, v) = send(&app, "POST", "/api/v1/tokens", ADMIN, None, Some(token)).await;
    assert!(s.is_client_error(), "{s} {v}");
    app.t.cleanup().await;
}

/// Review, L4 and the depositor: one-line fields refuse line separators, bidirectional
/// controls and the byte-order mark; a required name needs a visible character (100
/// zero-width spaces are not a first name); the joiners real names need are kept; and
/// every name field — booking names, contact, depositor, facility, handset, references —
/// is stored without the white space around it. Nothing refused is stored.
async fn one_line_fields_refuse_invisible_formatting_and_are_trimmed(app: App) {
    let (iid, acc) = booked(&app, "F1").await;
    let kiosk = issue(&app, "kiosk-l4", "kiosk", &["F1"], None).await;
    let inmates = "/api/v1/facilities/F1/inmates";
    let contacts = format!("/api/v1/inmates/{iid}/contacts");
    let deposits = format!("/api/v1/accounts/{acc}/deposits");
    let book = |n: &str, first: &str| json!({ "booking_number": n, "first_name": first, "last_name": "Doe" });
    // The attacks as found.
    for (bad, words) in [
        (
            "Jane\u{2028}Doe",
            &["first_name", "separator", "U+2028"][..],
        ),
        (
            "Evil\u{202e}gnp.exe",
            &["first_name", "bidirectional", "U+202E"][..],
        ),
        ("\u{feff}Jane", &["first_name", "byte-order mark"][..]),
        (
            "Jane\u{2066}x\u{2069}",
            &["first_name", "bidirectional"][..],
        ),
    ] {
        let got = send(&app, "POST", inmates, ADMIN, None, Some(book("B-9", bad))).await;
        assert_422(&got, "invalid", words, bad);
        let body = json!({ "number": "+15551230002", "name": bad });
        let got = send(&app, "POST", &contacts, ADMIN, None, Some(body)).await;
        assert_422(&got, "invalid", &["name"], bad);
        let body = json!({ "amount": "5.00", "method": "kiosk", "depositor": bad });
        let got = send(&app, "POST", &deposits, &kiosk, Some("l4-bad"), Some(body)).await;
        assert_422(&got, "invalid", &["depositor"], bad);
    }
    let zero_width = "\u{200b}".repeat(100);
    let got = send(
        &app,
        "POST",
        inmates,
        ADMIN,
        None,
        Some(book("B-9", &zero_width)),
    )
    .await;
    assert_422(
        &got,
        "invalid",
        &["first_name", "visible"],
        "100 zero-width spaces",
    );
    let got = send(
        &app,
        "POST",
        inmates,
        ADMIN,
        None,
        Some(book("\u{200b}", "Jane")),
    )
    .await;
    assert_422(
        &got,
        "invalid",
        &["booking_number", "visible"],
        "an invisible booking number",
    );
    assert_eq!(count(&app, inmates).await, 1, "nothing booked");
    assert_eq!(count(&app, &contacts).await, 0);
    assert_eq!(count(&app, &deposits).await, 0);

    // A Persian name with its zero-width non-joiner is a name.
    let persian = "می\u{200c}خواهم";
    let (s, i) = send(
        &app,
        "POST",
        inmates,
        ADMIN,
        None,
        Some(book("B-3", persian)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{i}");
    assert_eq!(i["first_name"].as_str(), Some(persian));

    // Surrounding white space is never kept, whichever name field.
    let (s, i) = send(
        &app,
        "POST",
        inmates,
        ADMIN,
        None,
        Some(
            json!({ "booking_number": " B-4\t", "first_name": " Jane ", "last_name": "\u{a0}Doe" }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{i}");
    assert_eq!(
        (&i["booking_number"], &i["first_name"], &i["last_name"]),
        (&json!("B-4"), &json!("Jane"), &json!("Doe"))
    );
    let body = json!({ "amount": "5.00", "method": "kiosk", "depositor": "  Jane Doe ", "reference": " PAY-1 " });
    let (s, d) = send(
        &app,
        "POST",
        &deposits,
        &kiosk,
        Some("l4-dep"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(
        (&d["depositor"], &d["reference"]),
        (&json!("Jane Doe"), &json!("PAY-1"))
    );
    // The replay of the request as sent gets the same answer and moves nothing.
    let (s, again) = send(&app, "POST", &deposits, &kiosk, Some("l4-dep"), Some(body)).await;
    assert_eq!((s, &again), (StatusCode::CREATED, &d));
    let (s, listed) = admin(&app, "GET", &deposits, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(listed[0]["depositor"], "Jane Doe", "{listed}");
    let body = json!({ "amount": "1.00", "reference": " ORD-1 ", "memo": " as written " });
    let path = format!("/api/v1/accounts/{acc}/purchases");
    let (s, r) = send(&app, "POST", &path, ADMIN, Some("l4-buy"), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["reference"], "ORD-1", "{r}");
    let body = json!({ "number": "+15551230002", "name": " Mom ", "relationship": " mother " });
    let (s, c) = send(&app, "POST", &contacts, ADMIN, None, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(
        (&c["name"], &c["relationship"]),
        (&json!("Mom"), &json!("mother"))
    );
    let (s, f) = admin(
        &app,
        "PATCH",
        "/api/v1/facilities/F1",
        Some(json!({ "name": " North Jail " })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["name"], "North Jail");
    let (s, h) = admin(
        &app,
        "POST",
        "/api/v1/facilities/F1/handsets",
        Some(json!({ "name": " Pod A ", "location": " Unit 3 " })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    assert_eq!(
        (&h["name"], &h["location"]),
        (&json!("Pod A"), &json!("Unit 3"))
    );
    assert_eq!(balance(&app, &acc).await, "4.00");
    app.t.cleanup().await;
}

/// Review, L3: an error message quotes at most 64 characters of what the client sent,
/// then `…`: an 8 KB `?format=`, a 60 KB rate plan id in a PATCH body, a long account
/// id in the path, and a long unknown enum value that serde quotes in its own words.
async fn error_messages_quote_a_bounded_part_of_what_was_sent(app: App) {
    let (_, acc) = booked(&app, "F1").await;
    let bounded = |v: &Value, what: &str| {
        let m = message(v);
        assert!(
            m.chars().count() < 400 && m.contains('…'),
            "{what}: the message is bounded ({} characters): {}",
            m.chars().count(),
            &m[..m.len().min(300)]
        );
        let longest = m.split(' ').map(|w| w.chars().count()).max();
        assert!(
            longest <= Some(sallyport::text::WORD_MAX_CHARS),
            "{what}: {longest:?}"
        );
    };
    let format = "f".repeat(8 * 1024);
    let (s, v) = admin(
        &app,
        "GET",
        &format!("/api/v1/accounts/{acc}/statement?format={format}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{}", message(&v).len());
    bounded(&v, "8 KB format");
    assert!(
        message(&v).starts_with(&format!("format '{}…'", "f".repeat(64))),
        "{}",
        message(&v)
    );

    let plan = "p".repeat(60 * 1024);
    let (s, v) = admin(
        &app,
        "PATCH",
        "/api/v1/facilities/F1",
        Some(json!({ "rate_plan_id": plan })),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{}", message(&v).len());
    bounded(&v, "60 KB rate_plan_id");
    assert!(
        message(&v).contains(&format!("'{}…'", "p".repeat(64))),
        "{}",
        message(&v)
    );

    let id = "a".repeat(2000);
    let (s, v) = admin(&app, "GET", &format!("/api/v1/accounts/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{}", message(&v).len());
    bounded(&v, "a 2,000-character account id");
    let (s, v) = admin(
        &app,
        "GET",
        &format!("/api/v1/accounts/{id}/statement"),
        None,
    )
    .await;
    assert!(s.is_client_error(), "{s}");
    bounded(&v, "a 2,000-character account id, statement");

    // A value quoted by serde, not by us: bounded as it is sent.
    let method = "m".repeat(10_000);
    let body = json!({ "amount": "5.00", "method": method });
    let path = format!("/api/v1/accounts/{acc}/deposits");
    let (s, v) = send(&app, "POST", &path, ADMIN, Some("l3-enum"), Some(body)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{}", message(&v).len());
    bounded(&v, "a 10,000-character deposit method");
    app.t.cleanup().await;
}

battery!(
    one_line_fields_refuse_invisible_formatting_and_are_trimmed,
    error_messages_quote_a_bounded_part_of_what_was_sent,
    nul_bytes_are_refused_not_failed_on,
    stored_text_is_bounded,
    request_bodies_are_bounded,
    idempotency_keys_belong_to_their_caller,
    amounts_have_one_written_form
);

/// The OpenAPI document states the limits: `maxLength` on stored strings, the amount
/// pattern, the 413.
#[tokio::test]
async fn the_openapi_document_states_the_limits() {
    let app = app(Backend::Sqlite).await.unwrap();
    let (s, doc) = send(&app, "GET", "/api/v1/openapi.json", ADMIN, None, None).await;
    assert_eq!(s, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Booking"]["properties"]["first_name"]["maxLength"],
        100
    );
    assert_eq!(
        schemas["NewContact"]["properties"]["name"]["maxLength"],
        100
    );
    assert_eq!(
        schemas["DepositBody"]["properties"]["depositor"]["maxLength"],
        100
    );
    assert_eq!(
        schemas["SpendBody"]["properties"]["memo"]["maxLength"],
        1000
    );
    let pattern = schemas["Money"]["pattern"].as_str().unwrap();
    assert_eq!(pattern, "^(0|[1-9][0-9]*)(\\.[0-9]{1,4})?$");
    let post = &doc["paths"]["/accounts/{id}/deposits"]["post"];
    assert!(post["responses"]["413"].is_object(), "{post}");
    app.t.cleanup().await;
}
