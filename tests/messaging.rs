//! Secure messaging over the API, on SQLite and PostgreSQL: a kiosk's inmate writes to a
//! contact, the message waits for review, staff approve it, the family reads it and
//! answers with a photo (re-encoded, served with its type, nosniff and a sandbox), the
//! inmate reads the answer; watch words hold a message, privileged correspondence is
//! never held, searched or read by staff; staff of another facility see nothing; the
//! price is charged once per request, never below zero, refused whole when funds are
//! short and credited back on rejection; bad input is a 4xx with a message; retention
//! removes old messages and their photo files. Every staff read is in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sallyport::clock::Clock;
use sallyport::db::Backend;
use sallyport::ledger::{DepositMethod, DepositRequest, RequestKey};
use serde_json::{json, Value};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::inproc::{self, admin, err_code, fetch, json_of, request, App, Setup};

const ADMIN: &str = "messaging-admin-token";

static APPS: AtomicUsize = AtomicUsize::new(0);

/// A data directory of its own for each App (photos are kept under it).
fn data_dir() -> PathBuf {
    let n = APPS.fetch_add(1, Ordering::SeqCst);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("messaging")
        .join(format!("{}-{n}", std::process::id()));
    LAST_DATA_DIR.with(|d| *d.borrow_mut() = dir.clone());
    dir
}

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN)
        .config(|c| c.node.data_dir = data_dir())
        .app(backend)
        .await
}

battery!(
    a_message_is_reviewed_read_and_answered_with_a_photo,
    watch_words_hold_messages_and_privileged_ones_are_never_reviewed,
    the_price_is_charged_once_never_below_zero_and_refunded_on_rejection,
    bad_input_is_refused_with_a_message,
    retention_removes_old_messages_and_their_photos,
    the_search_pages_newest_first_as_calls_do,
);

/// What [`world`] made.
struct World {
    inmate: String,
    account: String,
    /// An approved contact with a family user bound to it.
    contact: String,
    /// An approved attorney.
    attorney: String,
    kiosk: String,
    calling_id: String,
    sitting: String,
    family: String,
    family_user: String,
    /// An investigator of F1 and one of F2.
    investigator: String,
    outsider: String,
}

async fn ok(app: &App, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = admin(app, method, path, body).await;
    assert!(s.is_success(), "{method} {path}: {s} {v}");
    v
}

/// F1 with an inmate (PIN 4321), an approved contact bound to a family token, an
/// approved attorney, a kiosk with the inmate's sitting; F2 with an investigator.
async fn world(app: &App) -> World {
    inproc::facility(app, "F1").await;
    inproc::facility(app, "F2").await;
    let inmate = ok(
        app,
        "POST",
        "/api/v1/facilities/F1/inmates",
        Some(json!({ "booking_number": "B-1", "first_name": "John", "last_name": "Doe", "pin": "4321" })),
    )
    .await;
    let iid = inmate["id"].as_str().unwrap().to_string();
    let mut contacts = Vec::new();
    for (number, name, privileged) in [
        ("5551230001", "June Doe", false),
        ("5551230002", "Counsel", true),
    ] {
        let c = ok(
            app,
            "POST",
            &format!("/api/v1/inmates/{iid}/contacts"),
            Some(json!({ "number": number, "name": name, "privileged": privileged })),
        )
        .await;
        let cid = c["id"].as_str().unwrap().to_string();
        ok(
            app,
            "POST",
            &format!("/api/v1/contacts/{cid}/approve"),
            None,
        )
        .await;
        contacts.push(cid);
    }
    let kiosk = inproc::issue(app, "kiosk-1", "kiosk", &["F1"], Some(YEAR)).await;
    let calling_id = inmate["calling_id"].as_str().unwrap().to_string();
    let sitting = sit(app, &kiosk, &calling_id).await;
    let (s, v) = admin(
        app,
        "POST",
        "/api/v1/tokens",
        Some(
            json!({ "username": "june", "role": "family", "facilities": ["F1"],
                     "contacts": [contacts[0]], "ttl_secs": YEAR }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let family = v["token"].as_str().unwrap().to_string();
    let family_user: String = sqlx::Row::get(
        &sqlx::query("SELECT id FROM users WHERE username = $1")
            .bind("june")
            .fetch_one(app.t.db.pool())
            .await
            .unwrap(),
        "id",
    );
    let investigator = inproc::issue(app, "inv-1", "investigator", &["F1"], Some(YEAR)).await;
    let outsider = inproc::issue(app, "inv-2", "investigator", &["F2"], Some(YEAR)).await;
    World {
        inmate: iid,
        account: inmate["account_id"].as_str().unwrap().to_string(),
        contact: contacts[0].clone(),
        attorney: contacts[1].clone(),
        kiosk,
        calling_id,
        sitting,
        family,
        family_user,
        investigator,
        outsider,
    }
}

/// Tokens that outlive the clock's jumps.
const YEAR: i64 = 366 * 86_400;

/// A new sitting of the inmate (PIN 4321) at the kiosk.
async fn sit(app: &App, kiosk: &str, calling_id: &str) -> String {
    let (s, v) = send(
        app,
        "POST",
        "/api/v1/kiosk/sittings",
        kiosk,
        None,
        None,
        Some(json!({ "calling_id": calling_id, "pin": "4321" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["sitting"].as_str().unwrap().to_string()
}

/// A request with `token`, optionally a sitting and an idempotency key, and a JSON body.
async fn send(
    app: &App,
    method: &str,
    path: &str,
    token: &str,
    sitting: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = request(method, path, Some(token), body);
    if let Some(s) = sitting {
        req.headers_mut()
            .insert("x-kiosk-sitting", s.parse().unwrap());
    }
    if let Some(k) = key {
        req.headers_mut()
            .insert("idempotency-key", k.parse().unwrap());
    }
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

/// The inmate writes at the kiosk.
async fn kiosk_send(
    app: &App,
    w: &World,
    key: &str,
    contact: &str,
    body: &str,
) -> (StatusCode, Value) {
    send(
        app,
        "POST",
        "/api/v1/kiosk/messages",
        &w.kiosk,
        Some(&w.sitting),
        Some(key),
        Some(json!({ "contact_id": contact, "body": body })),
    )
    .await
}

async fn kiosk_list(app: &App, w: &World) -> Value {
    let (s, v) = send(
        app,
        "GET",
        "/api/v1/kiosk/messages",
        &w.kiosk,
        Some(&w.sitting),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn family_list(app: &App, w: &World) -> Value {
    let (s, v) = send(
        app,
        "GET",
        "/api/v1/family/messages",
        &w.family,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn set_settings(app: &App, fid: &str, settings: Value) -> Value {
    let mut full = json!({ "review": "flagged", "max_chars": 2000, "price": "0.00",
        "max_photo_bytes": 0, "max_photos": 3, "retention_days": 365 });
    for (k, v) in settings.as_object().unwrap() {
        full[k] = v.clone();
    }
    ok(
        app,
        "PUT",
        &format!("/api/v1/facilities/{fid}/messaging"),
        Some(full),
    )
    .await
}

/// A PNG of `w`x`h` pixels whose colours depend on `seed`, with a text chunk holding
/// "GPS 41.88,-87.63" (as a phone's metadata would).
fn png_with_metadata(w: u32, h: u32, seed: u8) -> Vec<u8> {
    // Noise (a linear congruential sequence from `seed`), so the size is near w*h*3.
    let mut n = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let b = n.to_be_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    let mut bytes = out.into_inner();
    let iend = bytes.len() - 12;
    let data = b"Comment\0GPS 41.88,-87.63";
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend(b"tEXt");
    chunk.extend(data);
    let crc = crc32(&chunk[4..]);
    chunk.extend(crc.to_be_bytes());
    bytes.splice(iend..iend, chunk);
    bytes
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

async fn upload_photo(
    app: &App,
    w: &World,
    contact: &str,
    bytes: Vec<u8>,
    content_type: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(format!(
            "/api/v1/family/messages/photos?contact_id={contact}"
        ))
        .header("authorization", format!("Bearer {}", w.family))
        .header("content-type", content_type)
        .body(Body::from(bytes))
        .unwrap();
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

/// The audit entries of `action`, newest first.
async fn audits(app: &App, action: &str) -> Vec<Value> {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=1000", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

async fn a_message_is_reviewed_read_and_answered_with_a_photo(app: App) {
    let w = world(&app).await;
    set_settings(&app, "F1", json!({ "review": "all" })).await;
    let (s, m) = kiosk_send(
        &app,
        &w,
        "k-1",
        &w.contact,
        "  Hello June, see you Sunday.  ",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    app.clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(m["status"], "held", "{m}");
    assert_eq!(m["body"], "Hello June, see you Sunday.");
    assert!(
        m.get("flagged").is_none(),
        "the sender never sees watch words: {m}"
    );
    let id = m["id"].as_str().unwrap().to_string();
    // Not delivered yet: the family does not see it.
    let f = family_list(&app, &w).await;
    assert_eq!(f["contacts"][0]["id"], json!(w.contact), "{f}");
    assert_eq!(f["contacts"][0]["inmate_name"], "John Doe", "{f}");
    assert!(f["messages"].as_array().unwrap().is_empty(), "{f}");
    // The queue: F1's investigator sees it; F2's sees nothing and may not open it.
    let (s, q) = send(
        &app,
        "GET",
        "/api/v1/messages/review",
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q[0]["id"], json!(id));
    // With its facility's zone: the console shows when it was sent in it.
    assert_eq!(q[0]["time_zone"], "America/Chicago", "{q}");
    let (s, q) = send(
        &app,
        "GET",
        "/api/v1/messages/review",
        &w.outsider,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, q.as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{q}"
    );
    let (s, q) = send(
        &app,
        "GET",
        "/api/v1/messages?facility_id=F1",
        &w.outsider,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{q}");
    let (s, q) = send(
        &app,
        "GET",
        "/api/v1/messages",
        &w.outsider,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, q["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{q}"
    );
    for path in [
        format!("/api/v1/messages/{id}"),
        format!("/api/v1/messages/{id}/approve"),
    ] {
        let method = if path.ends_with("approve") {
            "POST"
        } else {
            "GET"
        };
        let (s, e) = send(&app, method, &path, &w.outsider, None, None, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {e}");
    }
    // A family token may not review.
    let (s, e) = send(
        &app,
        "GET",
        "/api/v1/messages/review",
        &w.family,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // Approved: delivered, and the family reads it (marked read once).
    let (s, a) = send(
        &app,
        "POST",
        &format!("/api/v1/messages/{id}/approve"),
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["status"], "delivered");
    assert_eq!(a["reviewed_by"], "inv-1");
    let (s, e) = send(
        &app,
        "POST",
        &format!("/api/v1/messages/{id}/approve"),
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::CONFLICT, "conflict"),
        "decided once: {e}"
    );
    let f = family_list(&app, &w).await;
    assert_eq!(f["messages"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(f["messages"][0]["body"], "Hello June, see you Sunday.");
    assert_eq!(
        f["messages"][0]["read_at"],
        Value::Null,
        "the first read marks it"
    );
    let f = family_list(&app, &w).await;
    assert!(f["messages"][0]["read_at"].is_string(), "{f}");

    // The family answers with a photo: re-encoded, the metadata gone.
    let png = png_with_metadata(40, 30, 7);
    let (s, p) = upload_photo(&app, &w, &w.contact, png.clone(), "image/png").await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(
        (p["width"].as_i64(), p["height"].as_i64()),
        (Some(40), Some(30))
    );
    assert_eq!(p["content_type"], "image/png");
    let photo = p["id"].as_str().unwrap().to_string();
    let (s, r) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("f-1"),
        Some(json!({ "contact_id": w.contact, "body": "Sunday it is. Here is the garden.", "photos": [photo] })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["status"], "held", "review: all applies both ways");
    let rid = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["photos"][0]["id"], json!(photo));
    // The same photo cannot be attached twice.
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("f-2"),
        Some(json!({ "contact_id": w.contact, "body": "again", "photos": [photo] })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, a) = send(
        &app,
        "POST",
        &format!("/api/v1/messages/{rid}/approve"),
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    // The inmate reads it at the kiosk, with the photo.
    let k = kiosk_list(&app, &w).await;
    let msgs = k["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{k}");
    assert_eq!(msgs[0]["direction"], "from_inmate");
    assert_eq!(msgs[1]["direction"], "to_inmate");
    assert_eq!(msgs[1]["body"], "Sunday it is. Here is the garden.");
    assert_eq!(k["contacts"].as_array().unwrap().len(), 2, "{k}");
    let mut req = request(
        "GET",
        &format!("/api/v1/message-photos/{photo}"),
        Some(&w.kiosk),
        None,
    );
    req.headers_mut()
        .insert("x-kiosk-sitting", w.sitting.parse().unwrap());
    let (s, h, bytes) = fetch(&app, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "sandbox");
    assert!(h["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("inline; filename="));
    assert!(bytes.starts_with(b"\x89PNG"));
    assert!(!bytes.windows(3).any(|w| w == b"GPS"), "metadata dropped");
    assert_ne!(bytes, png);
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (40, 30));
    // Staff of F1 may see it (audited); F2's may not; nor another family.
    let (s, _, _) = fetch(
        &app,
        request(
            "GET",
            &format!("/api/v1/message-photos/{photo}"),
            Some(&w.investigator),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = fetch(
        &app,
        request(
            "GET",
            &format!("/api/v1/message-photos/{photo}"),
            Some(&w.outsider),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = admin(&app, "POST", "/api/v1/tokens", Some(json!({ "username": "stranger", "role": "family", "facilities": ["F1"], "contacts": [] }))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let stranger = v["token"].as_str().unwrap();
    let (s, _, _) = fetch(
        &app,
        request(
            "GET",
            &format!("/api/v1/message-photos/{photo}"),
            Some(stranger),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = send(
        &app,
        "GET",
        "/api/v1/family/messages",
        stranger,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, v["messages"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{v}"
    );

    // Investigators search by words of the text; every read is audited with what it showed.
    let (s, found) = send(
        &app,
        "GET",
        "/api/v1/messages?q=GARDEN",
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["items"][0]["id"], json!(rid));
    assert_eq!(found["total"], 1, "{found}");
    let (s, one) = send(
        &app,
        "GET",
        &format!("/api/v1/messages/{id}"),
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    for action in [
        "message.queue",
        "message.search",
        "message.read",
        "message.approve",
        "message.photo",
        "message.send",
    ] {
        assert!(
            !audits(&app, action).await.is_empty(),
            "no {action} in the audit log"
        );
    }
    let search = audits(&app, "message.search").await;
    assert!(
        search
            .iter()
            .any(|e| e["detail"]["messages"] == json!([rid])),
        "{search:?}"
    );
    let (s, v) = admin(&app, "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    remove_data_dir();
    app.t.cleanup().await;
}

/// `GET /messages` pages as `GET /calls` does: `limit` (default 50, at most 500) and
/// `offset`, newest first, `{items, total, limit, offset}`; pages meet without a gap or a
/// repeat, and every page is audited with what it showed.
async fn the_search_pages_newest_first_as_calls_do(app: App) {
    let w = world(&app).await;
    set_settings(&app, "F1", json!({ "review": "none" })).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        app.clock.advance(std::time::Duration::from_secs(60));
        let (s, m) = kiosk_send(
            &app,
            &w,
            &format!("page-{i}"),
            &w.contact,
            &format!("note {i}"),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{m}");
        sent.push(m["id"].as_str().unwrap().to_string());
    }
    sent.reverse();
    let page = |q: &str| {
        let path = format!("/api/v1/messages?facility_id=F1{q}");
        let app = &app;
        let token = w.investigator.clone();
        async move {
            let (s, v) = send(app, "GET", &path, &token, None, None, None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
            v
        }
    };
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = page("").await;
    assert_eq!(
        (
            all["total"].clone(),
            all["limit"].clone(),
            all["offset"].clone()
        ),
        (json!(7), json!(50), json!(0))
    );
    assert_eq!(ids(&all), sent, "newest first");
    let mut walked = Vec::new();
    for offset in [0, 3, 6] {
        let p = page(&format!("&limit=3&offset={offset}")).await;
        assert_eq!(p["total"], 7, "{p}");
        assert_eq!(p["offset"], offset, "{p}");
        walked.extend(ids(&p));
    }
    assert_eq!(walked, sent, "the pages meet without a gap or a repeat");
    let past = page("&limit=3&offset=9").await;
    assert_eq!((ids(&past).len(), past["total"].clone()), (0, json!(7)));
    // Bounds as for calls: a page of 1 to 500; a filter narrows the total too.
    assert_eq!(page("&limit=0").await["limit"], 1);
    assert_eq!(page("&limit=9000").await["limit"], 500);
    let one = page("&q=NOTE%204&limit=1").await;
    assert_eq!(
        (ids(&one), one["total"].clone()),
        (vec![sent[2].clone()], json!(1))
    );
    let (s, e) = send(
        &app,
        "GET",
        "/api/v1/messages?limit=many",
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    // Each page's audit names the messages it showed and where the page was.
    let searches = audits(&app, "message.search").await;
    let last_page = searches
        .iter()
        .find(|e| e["detail"]["offset"] == 6 && e["detail"]["limit"] == 3)
        .unwrap_or_else(|| panic!("{searches:?}"));
    assert_eq!(last_page["detail"]["messages"], json!([sent[6]]));
    assert_eq!(last_page["detail"]["total"], 7);
    app.t.cleanup().await;
    remove_data_dir();
}

async fn watch_words_hold_messages_and_privileged_ones_are_never_reviewed(app: App) {
    let w = world(&app).await;
    // The list: admins of the facility only; stored lower-case, trimmed; once each.
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/facilities/F1/watch-words",
        &w.investigator,
        None,
        None,
        Some(json!({ "word": "x" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, word) = admin(
        &app,
        "POST",
        "/api/v1/facilities/F1/watch-words",
        Some(json!({ "word": "  Green   LIGHT " })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{word}");
    assert_eq!(word["word"], "green light");
    let (s, e) = admin(
        &app,
        "POST",
        "/api/v1/facilities/F1/watch-words",
        Some(json!({ "word": "green light" })),
    )
    .await;
    assert_eq!((s, err_code(&e)), (StatusCode::CONFLICT, "conflict"), "{e}");
    let (s, e) = admin(
        &app,
        "POST",
        "/api/v1/facilities/F1/watch-words",
        Some(json!({ "word": " ?! " })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("letter"),
        "{e}"
    );
    ok(
        &app,
        "POST",
        "/api/v1/facilities/F1/watch-words",
        Some(json!({ "word": "package" })),
    )
    .await;
    let (s, list) = admin(&app, "GET", "/api/v1/facilities/F1/watch-words", None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let words: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["word"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["green light", "package"]);
    // The other engineer's read: exactly this query.
    let rows = sqlx::query("SELECT word FROM watch_words WHERE facility_id = $1")
        .bind("F1")
        .fetch_all(app.t.db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(!audits(&app, "watch_word.add").await.is_empty());

    // Policy "flagged" (the default): a watch word holds the message; others go through.
    let (s, held) = kiosk_send(
        &app,
        &w,
        "k-1",
        &w.contact,
        "We got the GREEN light, bring the package.",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{held}");
    assert_eq!(held["status"], "held", "{held}");
    let hid = held["id"].as_str().unwrap().to_string();
    let (s, plain) = kiosk_send(&app, &w, "k-2", &w.contact, "Tell mom hello.").await;
    assert_eq!(
        (s, plain["status"].as_str()),
        (StatusCode::CREATED, Some("delivered")),
        "{plain}"
    );
    // To the attorney, with both words: delivered, never scanned, never in a queue or a
    // search, never opened by staff (403 privileged, audited).
    let (s, legal) = kiosk_send(
        &app,
        &w,
        "k-3",
        &w.attorney,
        "About the package and the green light.",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{legal}");
    assert_eq!(legal["status"], "delivered", "{legal}");
    assert_eq!(legal["privileged"], true);
    let lid = legal["id"].as_str().unwrap().to_string();
    let (_, q) = admin(&app, "GET", "/api/v1/messages/review", None).await;
    let queued: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(queued, [hid.as_str()], "{q}");
    assert_eq!(q[0]["flagged"], json!(["green light", "package"]), "{q}");
    let (_, all) = admin(&app, "GET", "/api/v1/messages?facility_id=F1", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    assert!(!all.to_string().contains(&lid), "{all}");
    let (_, found) = admin(
        &app,
        "GET",
        &format!("/api/v1/messages?contact_id={}", w.attorney),
        None,
    )
    .await;
    assert_eq!(found["items"], json!([]));
    assert_eq!(found["total"], 0);
    let (_, flagged) = admin(&app, "GET", "/api/v1/messages?flagged=true", None).await;
    assert_eq!(flagged["items"].as_array().unwrap().len(), 1, "{flagged}");
    for (method, path) in [
        ("GET", format!("/api/v1/messages/{lid}")),
        ("POST", format!("/api/v1/messages/{lid}/approve")),
    ] {
        let (s, e) = admin(&app, method, &path, None).await;
        assert_eq!(
            (s, err_code(&e)),
            (StatusCode::FORBIDDEN, "privileged"),
            "{path}: {e}"
        );
    }
    assert!(!audits(&app, "message.refused").await.is_empty());

    // Rejected with a reason: the inmate sees the reason; the family never sees it.
    let (s, e) = admin(
        &app,
        "POST",
        &format!("/api/v1/messages/{hid}/reject"),
        Some(json!({ "reason": "  " })),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reason is required: {e}"
    );
    let (s, r) = admin(
        &app,
        "POST",
        &format!("/api/v1/messages/{hid}/reject"),
        Some(json!({ "reason": "Talks of contraband." })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let k = kiosk_list(&app, &w).await;
    let mine = k["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == json!(hid))
        .unwrap()
        .clone();
    assert_eq!(
        (mine["status"].as_str(), mine["reason"].as_str()),
        (Some("rejected"), Some("Talks of contraband."))
    );
    let f = family_list(&app, &w).await;
    let seen: Vec<&str> = f["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [plain["id"].as_str().unwrap()], "{f}");

    // Policy "none": delivered, still marked for investigators.
    set_settings(&app, "F1", json!({ "review": "none" })).await;
    let (_, m) = kiosk_send(&app, &w, "k-4", &w.contact, "package").await;
    assert_eq!(m["status"], "delivered", "{m}");
    let (_, one) = admin(
        &app,
        "GET",
        &format!("/api/v1/messages/{}", m["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(one["flagged"], json!(["package"]), "{one}");

    // Removing words, by id or by the word.
    let wid = word["id"].as_str().unwrap();
    let (s, v) = admin(
        &app,
        "DELETE",
        &format!("/api/v1/facilities/F1/watch-words/{wid}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = admin(
        &app,
        "DELETE",
        "/api/v1/facilities/F1/watch-words?word=PACKAGE",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, list) = admin(&app, "GET", "/api/v1/facilities/F1/watch-words", None).await;
    assert_eq!(list, json!([]));
    let (s, _) = admin(
        &app,
        "DELETE",
        &format!("/api/v1/facilities/F1/watch-words/{wid}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!audits(&app, "watch_word.remove").await.is_empty());
    remove_data_dir();
    app.t.cleanup().await;
}

async fn deposit(app: &App, account: &str, amount: &str, key: &str) {
    app.store
        .ledger()
        .deposit(
            &RequestKey::new("tests", key).unwrap(),
            DepositRequest {
                account_id: account.into(),
                method: DepositMethod::Online,
                amount: amount.parse().unwrap(),
                depositor: String::new(),
                reference: String::new(),
            },
        )
        .await
        .unwrap();
}

/// An account's statement through the API.
async fn statement(app: &App, account: &str) -> Value {
    let (s, st) = admin(
        app,
        "GET",
        &format!("/api/v1/accounts/{account}/statement"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    st
}

async fn balance(app: &App, account: &str) -> String {
    app.store
        .ledger()
        .balance(account)
        .await
        .unwrap()
        .to_string()
}

async fn the_price_is_charged_once_never_below_zero_and_refunded_on_rejection(app: App) {
    let w = world(&app).await;
    // Free by default: nothing moves.
    let (s, m) = kiosk_send(&app, &w, "free-1", &w.contact, "free").await;
    assert_eq!(
        (s, m["price"].as_str()),
        (StatusCode::CREATED, Some("0.00")),
        "{m}"
    );
    assert_eq!(balance(&app, &w.account).await, "0.00");
    set_settings(&app, "F1", json!({ "price": "0.50" })).await;
    deposit(&app, &w.account, "1.00", "d-1").await;
    let (s, first) = kiosk_send(&app, &w, "p-1", &w.contact, "one").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["price"], "0.50");
    assert_eq!(balance(&app, &w.account).await, "0.50");
    // The same request again: the same message, nothing more charged.
    let (s, again) = kiosk_send(&app, &w, "p-1", &w.contact, "one").await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(balance(&app, &w.account).await, "0.50");
    // Another message under that key: refused.
    let (s, e) = kiosk_send(&app, &w, "p-1", &w.contact, "two").await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::CONFLICT, "idempotency_conflict"),
        "{e}"
    );
    let (s, _) = kiosk_send(&app, &w, "p-2", &w.contact, "two").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(balance(&app, &w.account).await, "0.00");
    // Short of funds: refused whole; nothing stored, nothing charged, never negative.
    let before = kiosk_list(&app, &w).await["messages"]
        .as_array()
        .unwrap()
        .len();
    let (s, e) = kiosk_send(&app, &w, "p-3", &w.contact, "three").await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"),
        "{e}"
    );
    assert!(e["error"]["message"].as_str().unwrap().len() > 10, "{e}");
    let after = kiosk_list(&app, &w).await["messages"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    assert_eq!(balance(&app, &w.account).await, "0.00");
    // Attorneys are free.
    let (s, legal) = kiosk_send(&app, &w, "p-4", &w.attorney, "legal").await;
    assert_eq!(
        (s, legal["price"].as_str()),
        (StatusCode::CREATED, Some("0.00")),
        "{legal}"
    );
    // The family pays from its prepaid account at the facility; none: refused.
    let body = json!({ "contact_id": w.contact, "body": "hi" });
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("fp-1"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"),
        "{e}"
    );
    let (s, acct) = send(
        &app,
        "POST",
        "/api/v1/family/prepaid",
        &w.family,
        None,
        None,
        Some(json!({ "facility_id": "F1" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{acct}");
    let prepaid = acct["id"].as_str().unwrap().to_string();
    deposit(&app, &prepaid, "0.50", "d-2").await;
    set_settings(&app, "F1", json!({ "price": "0.50", "review": "all" })).await;
    // A photo that is not the family's: refused before anything is charged.
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("fp-0"),
        Some(json!({ "contact_id": w.contact, "body": "hi", "photos": ["pho_nope"] })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(balance(&app, &prepaid).await, "0.50");
    let (s, fm) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("fp-1"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{fm}");
    assert_eq!(balance(&app, &prepaid).await, "0.00");
    // Rejected: the price comes back (once, however often it is asked).
    let fid = fm["id"].as_str().unwrap();
    let (s, r) = admin(
        &app,
        "POST",
        &format!("/api/v1/messages/{fid}/reject"),
        Some(json!({ "reason": "No." })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(balance(&app, &prepaid).await, "0.50");
    let (s, _) = admin(
        &app,
        "POST",
        &format!("/api/v1/messages/{fid}/reject"),
        Some(json!({ "reason": "No." })),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(balance(&app, &prepaid).await, "0.50");
    // The ledger: message_charge entries to message_revenue, balanced, none negative.
    let (s, check) = admin(&app, "GET", "/api/v1/ledger/check", None).await;
    assert_eq!(s, StatusCode::OK, "{check}");
    assert_eq!(check["violations"], json!([]), "{check}");
    let revenue = app
        .store
        .ledger()
        .account("sys:F1:message_revenue")
        .await
        .unwrap();
    assert_eq!(
        revenue.balance.to_string(),
        "1.00",
        "three paid messages, one rejected: its price went back out of message revenue"
    );
    let st = statement(&app, &prepaid).await;
    let refunds: Vec<&Value> = st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "message_refund")
        .collect();
    assert_eq!(refunds.len(), 1, "the rejection's refund, once: {st}");
    assert_eq!(refunds[0]["amount"], "0.50", "{st}");
    let st = statement(&app, &w.account).await;
    let kinds: Vec<&str> = st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "message_charge").count(),
        2,
        "{kinds:?}"
    );
    let _ = &w.family_user;
    remove_data_dir();
    app.t.cleanup().await;
}

async fn bad_input_is_refused_with_a_message(app: App) {
    let w = world(&app).await;
    let cases: Vec<(Option<&str>, Value, StatusCode, &str)> = vec![
        (
            Some("b-1"),
            json!({ "contact_id": w.contact, "body": "   " }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty",
        ),
        (
            Some("b-2"),
            json!({ "contact_id": w.contact, "body": "x".repeat(2001) }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "2000",
        ),
        (
            Some("b-3"),
            json!({ "contact_id": w.contact, "body": "a\u{0007}b" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "control",
        ),
        (
            Some("b-4"),
            json!({ "contact_id": "con_nope", "body": "hi" }),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            Some("b-5"),
            json!({ "contact_id": w.contact, "body": "hi", "extra": 1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            Some("b-6"),
            json!({ "contact_id": w.contact }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "body",
        ),
        (
            None,
            json!({ "contact_id": w.contact, "body": "hi" }),
            StatusCode::BAD_REQUEST,
            "Idempotency-Key",
        ),
    ];
    for (key, body, status, says) in cases {
        let (s, e) = send(
            &app,
            "POST",
            "/api/v1/kiosk/messages",
            &w.kiosk,
            Some(&w.sitting),
            key,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, status, "{body}: {e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {e}");
    }
    // No sitting: nothing.
    let (s, e) = send(
        &app,
        "GET",
        "/api/v1/kiosk/messages",
        &w.kiosk,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::FORBIDDEN, "sitting_required"),
        "{e}"
    );
    // Another inmate's contact, from this inmate's sitting: not found.
    let other = inproc::inmate(&app, "F1", "B-2").await;
    let c = ok(
        &app,
        "POST",
        &format!("/api/v1/inmates/{}/contacts", other["id"].as_str().unwrap()),
        Some(json!({ "number": "5551239999", "name": "Other" })),
    )
    .await;
    let oc = c["id"].as_str().unwrap();
    ok(
        &app,
        "POST",
        &format!("/api/v1/contacts/{oc}/approve"),
        None,
    )
    .await;
    let (s, e) = kiosk_send(&app, &w, "b-7", oc, "hi").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    // A contact not approved: refused.
    let c = ok(
        &app,
        "POST",
        &format!("/api/v1/inmates/{}/contacts", w.inmate),
        Some(json!({ "number": "5551238888", "name": "Pending" })),
    )
    .await;
    let (s, e) = kiosk_send(&app, &w, "b-8", c["id"].as_str().unwrap(), "hi").await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::CONFLICT, "contact_not_approved"),
        "{e}"
    );
    // Not JSON.
    let mut req = request("POST", "/api/v1/kiosk/messages", Some(&w.kiosk), None);
    req.headers_mut()
        .insert("x-kiosk-sitting", w.sitting.parse().unwrap());
    req.headers_mut()
        .insert("idempotency-key", "b-9".parse().unwrap());
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    *req.body_mut() = Body::from("{not json");
    let (s, _, bytes) = fetch(&app, req).await;
    assert!(s.is_client_error(), "{s}");
    assert!(json_of(&bytes)["error"]["message"].is_string());
    // The family may write only as its own contacts.
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("fb-1"),
        Some(json!({ "contact_id": w.attorney, "body": "hi" })),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("fb-2"),
        Some(json!({ "contact_id": w.contact, "body": "hi", "photos": ["pho_nope"] })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("photo"),
        "{e}"
    );
    // Photos: not an image, a fake PNG, over the limit, for someone else's contact.
    let (s, e) = upload_photo(
        &app,
        &w,
        &w.contact,
        b"<svg onload=alert(1)>".to_vec(),
        "image/png",
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "photo_type"),
        "{e}"
    );
    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend(b"<script>alert(1)</script>");
    let (s, e) = upload_photo(&app, &w, &w.contact, fake, "image/png").await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, "photo_unreadable"),
        "{e}"
    );
    set_settings(&app, "F1", json!({ "max_photo_bytes": 2000 })).await;
    let (s, e) = upload_photo(
        &app,
        &w,
        &w.contact,
        png_with_metadata(200, 200, 3),
        "image/png",
    )
    .await;
    assert_eq!(
        (s, err_code(&e)),
        (StatusCode::PAYLOAD_TOO_LARGE, "photo_too_large"),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("2000"),
        "{e}"
    );
    let (s, e) = upload_photo(
        &app,
        &w,
        &w.attorney,
        png_with_metadata(4, 4, 3),
        "image/png",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    set_settings(&app, "F1", json!({ "max_photos": 0 })).await;
    let (s, e) = upload_photo(
        &app,
        &w,
        &w.contact,
        png_with_metadata(4, 4, 3),
        "image/png",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Settings: each bad value names its field; investigators may read, not change.
    for (body, field) in [
        (json!({ "max_chars": 0 }), "max_chars"),
        (json!({ "retention_days": 0 }), "retention_days"),
        (json!({ "max_photos": 99 }), "max_photos"),
    ] {
        let mut full = json!({ "review": "flagged", "max_chars": 2000, "price": "0.00",
            "max_photo_bytes": 0, "max_photos": 3, "retention_days": 365 });
        for (k, v) in body.as_object().unwrap() {
            full[k] = v.clone();
        }
        let (s, e) = admin(&app, "PUT", "/api/v1/facilities/F1/messaging", Some(full)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }
    let (s, e) = admin(
        &app,
        "PUT",
        "/api/v1/facilities/F1/messaging",
        Some(json!({ "review": "sometimes" })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = admin(&app, "PUT", "/api/v1/facilities/F1/messaging", Some(json!({ "review": "all", "max_chars": 10, "price": "-1.00", "max_photo_bytes": 0, "max_photos": 0, "retention_days": 1 }))).await;
    assert!(s.is_client_error(), "a negative price: {s} {e}");
    let (s, v) = send(
        &app,
        "GET",
        "/api/v1/facilities/F1/messaging",
        &w.investigator,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, e) = send(
        &app,
        "PUT",
        "/api/v1/facilities/F1/messaging",
        &w.investigator,
        None,
        None,
        Some(v),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, e) = send(
        &app,
        "GET",
        "/api/v1/facilities/F1/messaging",
        &w.outsider,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // Staff: unknown message, bad search.
    let (s, _) = admin(&app, "GET", "/api/v1/messages/msg_nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = admin(&app, "GET", "/api/v1/messages?status=lost", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = admin(&app, "GET", "/api/v1/messages?from=yesterday", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    remove_data_dir();
    app.t.cleanup().await;
}

async fn retention_removes_old_messages_and_their_photos(app: App) {
    let w = world(&app).await;
    set_settings(
        &app,
        "F1",
        json!({ "review": "none", "retention_days": 30 }),
    )
    .await;
    let (s, p) = upload_photo(
        &app,
        &w,
        &w.contact,
        png_with_metadata(12, 9, 91),
        "image/png",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (s, m) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("r-1"),
        Some(json!({ "contact_id": w.contact, "body": "old news", "photos": [p["id"]] })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let dir = data_dir_of(&app);
    let files = || {
        std::fs::read_dir(dir.join("messages"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(files(), 1);
    app.clock
        .advance(std::time::Duration::from_secs(20 * 86_400));
    let w = World {
        sitting: sit(&app, &w.kiosk, &w.calling_id).await,
        ..w
    };
    let (s, fresh) = kiosk_send(&app, &w, "r-2", &w.contact, "newer").await;
    assert_eq!(s, StatusCode::CREATED, "{fresh}");
    let config = config_of(&app);
    let r = sallyport::messaging::purge::purge(&app.store, &config, app.clock.wall())
        .await
        .unwrap();
    assert!(r.messages.is_empty(), "nothing is 30 days old yet: {r:?}");
    app.clock
        .advance(std::time::Duration::from_secs(11 * 86_400));
    let w = World {
        sitting: sit(&app, &w.kiosk, &w.calling_id).await,
        ..w
    };
    let r = sallyport::messaging::purge::purge(&app.store, &config, app.clock.wall())
        .await
        .unwrap();
    assert_eq!(r.messages, vec![m["id"].as_str().unwrap().to_string()]);
    assert_eq!(r.files.len(), 1);
    assert_eq!(files(), 0, "the photo's file is gone");
    let k = kiosk_list(&app, &w).await;
    let left: Vec<&str> = k["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [fresh["id"].as_str().unwrap()]);
    assert!(!audits(&app, "message.purge").await.is_empty());
    remove_data_dir();
    app.t.cleanup().await;
}

/// The data directory of the App this test thread built last (the test's own: each test
/// runs on its own thread, which builds its App on that thread).
fn data_dir_of(_app: &App) -> PathBuf {
    LAST_DATA_DIR.with(|d| d.borrow().clone())
}

/// A config naming the test's data directory, as its router's does.
fn config_of(app: &App) -> sallyport::config::Config {
    let mut c = sallyport::config::Config::default();
    c.node.data_dir = data_dir_of(app);
    c
}

/// Removes the photos the test's App kept.
fn remove_data_dir() {
    let dir = LAST_DATA_DIR.with(|d| d.borrow().clone());
    if !dir.as_os_str().is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

thread_local! {
    static LAST_DATA_DIR: std::cell::RefCell<PathBuf> = std::cell::RefCell::new(PathBuf::new());
}

/// The family is told of a delivered message by email through a real SMTP server
/// (aiosmtpd): with the portal's link, never the message; a held message is told only
/// once staff approve it. Skipped without aiosmtpd unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_family_is_emailed_through_smtp_when_a_message_waits() {
    use sallyport::api::{router, AppState};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = support::mail::start_smtp(&dir.path().join("maildir")) else {
        return;
    };
    let t = sallyport::db::testing::TestDb::sqlite().await;
    let clock = Arc::new(sallyport::clock::ManualClock::new(
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 2, 18, 0, 0).unwrap(),
    ));
    let mut config = sallyport::config::Config::default();
    config.http.admin_token = ADMIN.into();
    config.security.pin_pepper = inproc::PEPPER.into();
    config.node.data_dir = dir.path().join("data");
    config.family.public_url = "http://portal.test".into();
    config.mail.transport = "smtp".into();
    config.mail.smtp_host = "127.0.0.1".into();
    config.mail.smtp_port = smtp.port;
    config.mail.smtp_tls = "none".into();
    config.mail.from = "Family portal <portal@jail.test>".into();
    let store = sallyport::store::Store::new(
        t.db.clone(),
        clock.clone() as Arc<dyn Clock>,
        &config.security.pin_pepper,
    );
    let app = App {
        router: router(AppState::new(store.clone(), Arc::new(config))),
        clock,
        store,
        admin: ADMIN,
        peer: None,
        rec_dir: None,
        t,
    };
    let w = world(&app).await;
    // A family account of its own (verified through the emailed link), bound to the
    // contact.
    let email = "june.smtp@example.org";
    let creds = json!({ "email": email, "password": "correct horse battery" });
    let (s, v) = send_anonymous(&app, "/api/v1/family/register", creds).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (link, _) = smtp.wait_for("http://portal.test/family/#verify=");
    let token = link.rsplit_once("#verify=").unwrap().1;
    let (s, v) = send_anonymous(&app, "/api/v1/family/verify", json!({ "token": token })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let username = audits(&app, "family.register").await[0]["actor"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = admin(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(
            json!({ "username": username, "role": "family", "facilities": ["F1"],
                     "contacts": [w.contact] }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Held: no email yet; approved: one, with the link and without the text.
    set_settings(&app, "F1", json!({ "review": "all" })).await;
    let (s, m) = kiosk_send(&app, &w, "s-1", &w.contact, "The secret is in the garden.").await;
    assert_eq!(
        (s, m["status"].as_str()),
        (StatusCode::CREATED, Some("held")),
        "{m}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let waiting = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("new"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(waiting(&smtp.maildir), 1, "only the verification so far");
    let id = m["id"].as_str().unwrap();
    let (s, v) = admin(
        &app,
        "POST",
        &format!("/api/v1/messages/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (link, text) = smtp.wait_for("http://portal.test/family/#messages");
    assert_eq!(link, "http://portal.test/family/#messages");
    assert!(text.contains(email), "{text}");
    assert!(text.contains("John Doe"), "{text}");
    assert!(!text.contains("garden"), "never the message: {text}");
    // The family's own messages tell nobody by email.
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/family/messages",
        &w.family,
        None,
        Some("s-2"),
        Some(json!({ "contact_id": w.contact, "body": "Got it." })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        waiting(&smtp.maildir),
        2,
        "{:?}",
        std::fs::read_dir(smtp.maildir.join("new")).map(|d| d.count())
    );
    remove_data_dir();
    app.t.cleanup().await;
}

async fn send_anonymous(app: &App, path: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, bytes) = fetch(app, request("POST", path, None, Some(body))).await;
    (s, json_of(&bytes))
}
