//! Messages in headless Chromium against the real binary, with axe-core on every new page:
//! an inmate writes from the kiosk page (calling ID + PIN), the message waits in the
//! console's review queue, staff approve it there, the family reads it in the portal (and
//! was emailed that it waits) and answers with a photo, the inmate reads the answer and
//! sees the photo; a watch word (added in the console) holds a message; a message to the
//! attorney is delivered at once and is never in any queue. Skipped (with the reason)
//! without Chromium, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use serde_json::{json, Value};
use std::io::Cursor;
use std::path::Path;
use std::time::Duration;
use support::api::{self as e2e, Api};
use support::axe;
use support::gateway::Gateway;
use support::webdriver::{self, Browser};
use support::{sipp, Workdir};

const EMAIL: &str = "june.messages@example.org";
const PASSWORD: &str = "correct horse battery";
const STAFF: &str = "reviewer";
const STAFF_PASSWORD: &str = "long-enough-pass";

/// The verification secret in the `.eml` files under `mail` (quoted-printable undone).
fn verify_secret(mail: &Path) -> String {
    wait_mail(mail, "#verify=", |text, at| {
        text[at + 8..at + 8 + 64].to_string()
    })
}

/// Waits for an email under `mail` holding `needle`; returns `f(text, where)`.
fn wait_mail(mail: &Path, needle: &str, f: impl Fn(&str, usize) -> String) -> String {
    for _ in 0..200 {
        for e in std::fs::read_dir(mail).into_iter().flatten() {
            let raw = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let text = raw
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=");
            if let Some(at) = text.find(needle) {
                return f(&text, at);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no email with {needle:?} in {}", mail.display());
}

/// A 40x30 PNG with a text chunk a phone might write (a location).
fn photo() -> Vec<u8> {
    let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 120]));
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
    let mut c = 0xFFFF_FFFFu32;
    for &b in &chunk[4..] {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    chunk.extend((!c).to_be_bytes());
    bytes.splice(iend..iend, chunk);
    bytes
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Waits until the element `id` is shown.
fn shown(b: &Browser, id: &str) {
    b.wait_js(
        &format!("#{id} shown"),
        Duration::from_secs(15),
        &format!("const e = document.getElementById('{id}'); return !!e && !e.hidden;"),
        |v: &Value| v == &json!(true),
    );
}

/// The messages listed in `list` (an element id): `[id, status, body, photos loaded]`.
fn listed(b: &Browser, list: &str) -> Value {
    b.js(
        &format!(
            "return [...document.querySelectorAll('#{list} li')].map(li => [li.dataset.messageId,
               li.dataset.status, li.querySelector('.body').textContent,
               [...li.querySelectorAll('img.photo')].map(i => i.complete ? i.naturalWidth : -1)]);"
        ),
        json!([]),
    )
}

/// The kiosk's inmate signs in to "Messages".
fn kiosk_messages(b: &Browser, calling_id: &str, pin: &str) {
    b.click("#messages-start");
    b.fill("#pin-id", calling_id);
    b.fill("#pin-pin", pin);
    b.click("#pin-submit");
    shown(b, "messages-view");
}

/// The kiosk sends `body` to the contact named `name`; returns the message's status.
fn kiosk_send(b: &Browser, name: &str, body: &str) -> String {
    let before = listed(b, "messages-list").as_array().unwrap().len();
    b.js(
        "const s = document.getElementById('compose-contact');
         s.value = [...s.options].find(o => o.textContent.startsWith(arguments[0])).value;",
        json!([name]),
    );
    b.fill("#compose-body", body);
    b.click("#compose-send");
    let list = b.wait_js(
        "the message is listed",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#messages-list li')].map(li => [li.dataset.status, li.querySelector('.body').textContent]);",
        |v| v.as_array().is_some_and(|l| l.len() > before),
    );
    let last = list.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last[1], body, "{list}");
    last[0].as_str().unwrap().to_string()
}

fn queue_ids(api: &Api) -> Vec<String> {
    api.get("/api/v1/messages/review")
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn inmate_and_family_write_staff_review_attorneys_are_never_reviewed() {
    if !webdriver::present("messaging browser test") {
        return;
    }
    let dir = Workdir::new("messaging_browser", "walk");
    let gateway = Gateway::start(&dir, &sipp::ports());
    let api = gateway.api.clone();
    let base = gateway.base_url();
    let inmate = e2e::book(&api, "MB-1", "2468", e2e::NUMBER, false);
    let contact = api.get(&format!("/api/v1/inmates/{}/contacts", inmate.id))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let attorney = api.post(
        &format!("/api/v1/inmates/{}/contacts", inmate.id),
        json!({ "number": "5551230077", "name": "Counsel Smith", "privileged": true }),
    );
    api.ok(
        "POST",
        &format!(
            "/api/v1/contacts/{}/approve",
            attorney["id"].as_str().unwrap()
        ),
        None,
    );
    api.ok(
        "PUT",
        "/api/v1/facilities/DEMO/messaging",
        Some(json!({ "review": "all", "max_chars": 500, "price": "0.00",
                     "max_photo_bytes": 0, "max_photos": 2, "retention_days": 90 })),
    );
    let station = api.post(
        "/api/v1/facilities/DEMO/visit-stations",
        json!({ "name": "Kiosk 1", "housing_unit": "A", "capacity": 1 }),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kiosk_token = api.post(
        "/api/v1/tokens",
        json!({ "username": "kiosk-1", "role": "kiosk", "facilities": ["DEMO"],
                "station_id": station, "ttl_secs": 3600 }),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    api.add_user(STAFF, STAFF_PASSWORD, "admin", &["DEMO"]);
    // The family: an account of its own, bound to the inmate's contact (as a proved link
    // request leaves it).
    let anon = api.anonymous();
    let creds = json!({ "email": EMAIL, "password": PASSWORD });
    assert_eq!(
        anon.request("POST", "/api/v1/family/register", Some(creds))
            .0,
        202
    );
    let secret = verify_secret(&dir.join("mail"));
    let (s, v) = anon.request(
        "POST",
        "/api/v1/family/verify",
        Some(json!({ "token": secret })),
    );
    assert_eq!(s, 200, "{v}");
    let audit = api.get("/api/v1/audit?limit=1000");
    let username = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "family.register")
        .map(|e| e["actor"].as_str().unwrap().to_string())
        .unwrap();
    api.post(
        "/api/v1/tokens",
        json!({ "username": username, "role": "family", "facilities": ["DEMO"],
                "contacts": [contact], "ttl_secs": 60 }),
    );

    // The kiosk: set up once, then the inmate's messages.
    let kiosk = Browser::start(&dir.join("kiosk-chromedriver.log"));
    kiosk.goto(&format!("{base}/kiosk"));
    kiosk.wait_for("body[data-ready='1']");
    kiosk.fill("#setup-station", &station);
    kiosk.fill("#setup-token", &kiosk_token);
    kiosk.click("#setup-save");
    shown(&kiosk, "today-view");
    kiosk_messages(&kiosk, &inmate.calling_id, &inmate.pin);
    axe::assert_accessible(&kiosk, "the kiosk's messages");
    let status = kiosk_send(&kiosk, "Called Party", "Hello June, see you Sunday.");
    assert_eq!(status, "held", "review: all");
    assert!(kiosk.text("#compose-status").contains("staff review"));
    let held = queue_ids(&api);
    assert_eq!(held.len(), 1);

    // Staff approve it in the console's queue, and add a watch word.
    let staff = Browser::start(&dir.join("staff-chromedriver.log"));
    staff.goto(&format!("{base}/console/"));
    staff.wait_for("body[data-ready='1']");
    staff.fill("#login-username", STAFF);
    staff.fill("#login-password", STAFF_PASSWORD);
    staff.click("#login-submit");
    shown(&staff, "search-view");
    staff.goto(&format!("{base}/console/#/messages"));
    shown(&staff, "messages-view");
    staff.wait_for(&format!("#queue-body tr[data-message-id='{}']", held[0]));
    // When it was sent, in the facility's zone (named), as the API dates it.
    let m = api.get(&format!("/api/v1/messages/{}", held[0]));
    let tz: chrono_tz::Tz = m["time_zone"].as_str().unwrap().parse().unwrap();
    let sent = chrono::DateTime::parse_from_rfc3339(m["created_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string();
    let row = staff.text(&format!("#queue-body tr[data-message-id='{}']", held[0]));
    assert!(row.starts_with(&sent), "{sent:?} in the queue's row: {row}");
    axe::assert_accessible(&staff, "the console's messages");
    staff.fill("#word-new", "  Contraband ");
    staff.click("#word-add");
    staff.wait_for("#words-list li[data-word-id]");
    assert!(staff.text("#words-list").contains("contraband"));
    staff.click(&format!(
        "#queue-body tr[data-message-id='{}'] button.approve",
        held[0]
    ));
    shown(&staff, "queue-empty");
    let m = api.get(&format!("/api/v1/messages/{}", held[0]));
    assert_eq!(
        (m["status"].as_str(), m["reviewed_by"].as_str()),
        (Some("delivered"), Some(STAFF)),
        "{m}"
    );
    // The family is told by email, without the message.
    let mail = wait_mail(&dir.join("mail"), "sent you a message", |t, _| {
        t.to_string()
    });
    assert!(
        mail.contains(EMAIL) && mail.contains("/family/#messages"),
        "{mail}"
    );
    assert!(!mail.contains("see you Sunday"), "{mail}");

    // The family reads it in the portal and answers with a photo.
    let family = Browser::start(&dir.join("family-chromedriver.log"));
    family.goto(&format!("{base}/family/#login"));
    family.wait_for("body[data-ready=\"1\"]");
    family.fill("#login-email", EMAIL);
    family.fill("#login-password", &format!("{PASSWORD}\n"));
    shown(&family, "account-view");
    family.wait_for(&format!("#messages-list li[data-message-id='{}']", held[0]));
    let list = listed(&family, "messages-list");
    assert_eq!(list[0][2], "Hello June, see you Sunday.", "{list}");
    axe::assert_accessible(&family, "the family's messages");
    family.js(
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
         const dt = new DataTransfer();
         dt.items.add(new File([bytes], 'garden.png', { type: 'image/png' }));
         document.getElementById('message-photo').files = dt.files;",
        json!([base64(&photo())]),
    );
    family.fill("#message-body", "Sunday it is. Here is the garden.");
    family.click("#message-submit");
    family.wait_js(
        "the answer is sent",
        Duration::from_secs(15),
        "return document.getElementById('message-status').textContent;",
        |v| v.as_str().is_some_and(|t| t.contains("sent")),
    );
    let list = family.wait_js(
        "the answer is listed with its photo",
        Duration::from_secs(15),
        "return [...document.querySelectorAll('#messages-list li')].map(li => [li.dataset.status,
           [...li.querySelectorAll('img.photo')].map(i => i.complete ? i.naturalWidth : -1)]);",
        |v| {
            v.as_array()
                .is_some_and(|l| l.len() == 2 && l[1][1] == json!([40]))
        },
    );
    assert_eq!(list[1][0], "held", "{list}");
    axe::assert_accessible(&family, "the family's messages with a photo");
    let answer = queue_ids(&api);
    assert_eq!(answer.len(), 1);
    // The reviewer sees the photo in the queue and approves the answer there.
    staff.click("#msg-refresh");
    let row = format!("#queue-body tr[data-message-id='{}']", answer[0]);
    staff.wait_for(&row);
    staff.wait_js(
        "the reviewer sees the photo",
        Duration::from_secs(15),
        &format!(
            "return [...document.querySelectorAll(\"{row} img.photo\")].map(i => i.complete ? i.naturalWidth : -1);"
        ),
        |v| v == &json!([40]),
    );
    axe::assert_accessible(&staff, "the review queue with a photo");
    staff.click(&format!("{row} button.approve"));
    shown(&staff, "queue-empty");

    // The inmate reads the answer at the kiosk, with the photo (re-encoded: no metadata).
    kiosk.click("#messages-done");
    shown(&kiosk, "today-view");
    kiosk_messages(&kiosk, &inmate.calling_id, &inmate.pin);
    let list = kiosk.wait_js(
        "the answer and its photo at the kiosk",
        Duration::from_secs(15),
        "return [...document.querySelectorAll('#messages-list li')].map(li => [li.className,
           li.querySelector('.body').textContent,
           [...li.querySelectorAll('img.photo')].map(i => i.complete ? i.naturalWidth : -1)]);",
        |v| {
            v.as_array()
                .is_some_and(|l| l.len() == 2 && l[1][2] == json!([40]))
        },
    );
    assert_eq!(list[1][0], "received", "{list}");
    assert_eq!(list[1][1], "Sunday it is. Here is the garden.");
    axe::assert_accessible(&kiosk, "the kiosk's messages with a photo");
    let m = api.get(&format!("/api/v1/messages/{}", answer[0]));
    let photo_id = m["photos"][0]["id"].as_str().unwrap();
    let (s, head, _) = api.send(
        "GET",
        &format!("/api/v1/message-photos/{photo_id}"),
        None,
        &[],
    );
    assert_eq!(s, 200);
    for h in [
        "content-type: image/png",
        "x-content-type-options: nosniff",
        "content-security-policy: sandbox",
        "content-disposition: inline",
    ] {
        assert!(head.to_lowercase().contains(h), "{h}: {head}");
    }

    // A watch word holds a message (the facility now reviews flagged ones only); a plain
    // one goes through; the attorney's, with the same word, is never held or queued.
    api.ok(
        "PUT",
        "/api/v1/facilities/DEMO/messaging",
        Some(
            json!({ "review": "flagged", "max_chars": 500, "price": "0.00",
                     "max_photo_bytes": 0, "max_photos": 2, "retention_days": 90 }),
        ),
    );
    assert_eq!(
        kiosk_send(&kiosk, "Called Party", "Can you bring the CONTRABAND?"),
        "held"
    );
    assert_eq!(
        kiosk_send(&kiosk, "Called Party", "Say hello to mom."),
        "delivered"
    );
    assert_eq!(
        kiosk_send(&kiosk, "Counsel Smith", "About the contraband charge."),
        "delivered"
    );
    let queued = api.get("/api/v1/messages/review");
    let bodies: Vec<&str> = queued
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["Can you bring the CONTRABAND?"], "{queued}");
    assert_eq!(queued[0]["flagged"], json!(["contraband"]));
    let found = api.get("/api/v1/messages?q=charge");
    assert_eq!(
        (&found["items"], &found["total"]),
        (&json!([]), &json!(0)),
        "the attorney's message is never found: {found}"
    );
    staff.click("#msg-refresh");
    staff.wait_for("#queue-body tr[data-message-id]");
    let rows = staff.js(
        "return document.getElementById('queue-body').textContent;",
        json!([]),
    );
    assert!(rows.as_str().unwrap().contains("CONTRABAND"), "{rows}");
    assert!(!rows.as_str().unwrap().contains("charge"), "{rows}");
    // The family sees the plain message, not the held one.
    family.click("#messages-refresh");
    let bodies = family.wait_js(
        "the plain message reaches the family",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#messages-list .body')].map(b => b.textContent);",
        |v| v.as_array().is_some_and(|l| l.len() == 3),
    );
    assert!(!bodies.to_string().contains("CONTRABAND"), "{bodies}");
    assert!(
        !bodies.to_string().contains("contraband charge"),
        "{bodies}"
    );
    // Every staff read is in the audit log, and the chain holds.
    let audit = api.get("/api/v1/audit?limit=1000").to_string();
    for action in [
        "message.queue",
        "message.approve",
        "message.read",
        "watch_word.add",
    ] {
        assert!(audit.contains(action), "{action}");
    }
    let verified = api.get("/api/v1/audit/verify");
    assert_eq!(verified["problems"], json!([]), "{verified}");
}
