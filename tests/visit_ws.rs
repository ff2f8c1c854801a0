//! A video visit through the real binary's visit WebSocket (`/api/v1/visit-session/ws`):
//! the visitor joins with the pass of its join link, the inmate with the pass the kiosk got
//! for the calling ID + PIN, each page's offer comes from a synthetic str0m participant
//! (VP8 and Opus made by ffmpeg) over loopback UDP, and the visit is forwarded, charged
//! and cut at the end of its slot; garbage on the socket is refused without effect.
//!
//! Without ffmpeg the test prints why and passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use futures_util::SinkExt;
use sallyport::db::Db;
use sallyport::sfu::synthetic::Script;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::api::{self as e2e, Api, Inmate};
use support::gateway::Gateway;
use support::visit_page::{self, next_json, send};
use support::{sipp, Workdir};
use tokio_tungstenite::tungstenite::Message;

/// One page whose synthetic participant sends for up to 15 s.
async fn page(gw: &Gateway, pass: String, script: Arc<Script>) -> Vec<Value> {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    visit_page::page(
        gw.base_url(),
        pass,
        script,
        Duration::from_secs(15),
        counter,
    )
    .await
}

async fn connect(gw: &Gateway) -> visit_page::Socket {
    visit_page::connect(&gw.base_url()).await
}

/// A visit of `inmate` with `contact` at `station`, booked by `requester` (name, role),
/// approved, its 12-second slot open now (written as a booking would leave it).
async fn open_visit(
    db: &Db,
    id: &str,
    inmate: &str,
    contact: &str,
    station: &str,
    requester: (&str, &str),
) {
    let now = chrono::Utc::now();
    let us = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    sqlx::query(
        "INSERT INTO visits (id, facility_id, inmate_id, contact_id, station_id, starts_at, \
         ends_at, status, privileged, requested_by, requested_role, created_at) \
         VALUES ($1, 'DEMO', $2, $3, $4, $5, $6, 'approved', 0, $7, $8, $9)",
    )
    .bind(id)
    .bind(inmate)
    .bind(contact)
    .bind(station)
    .bind(us(now - chrono::Duration::seconds(1)))
    .bind(us(now + chrono::Duration::seconds(12)))
    .bind(requester.0)
    .bind(requester.1)
    .bind(us(now))
    .execute(db.pool())
    .await
    .unwrap();
}

/// The visitor's pass (from the join link) and the inmate's (the kiosk's ID + PIN).
fn passes(api: &Api, kiosk: &Api, visit: &str, inmate: &Inmate) -> (String, String) {
    let link = api.post(&format!("/api/v1/visits/{visit}/join-link"), json!({}));
    let visitor = link["url"].as_str().unwrap().split_once('#').unwrap().1;
    let joined = kiosk.post(
        &format!("/api/v1/visits/{visit}/kiosk-join"),
        json!({ "calling_id": inmate.calling_id, "pin": inmate.pin }),
    );
    (
        visitor.to_string(),
        joined["secret"].as_str().unwrap().to_string(),
    )
}

#[test]
fn two_pages_join_a_visit_over_the_websocket_and_it_ends_with_its_slot() {
    let Some((ivf, ogg)) = support::visit_media::sfu_media() else {
        return;
    };
    let script = Arc::new(Script::from_files(&ivf, &ogg).unwrap());
    let dir = Workdir::new("visit_ws", "two_pages");
    let gw = Gateway::start(&dir, &sipp::ports());
    let api: Api = gw.api.clone();

    // Video at $0.12 a minute in 6-second increments; an inmate with $5.00; a station and
    // its kiosk.
    api.upload(
        "/api/v1/rate-plans?id=video&max_call_secs=3600",
        "class,service,per_minute,increment_secs\nlocal,audio,0.05,60\ndomestic,audio,0.05,60\n\
         international,audio,0.05,60\nlocal,video,0.12,6\n",
    );
    api.ok(
        "PATCH",
        "/api/v1/facilities/DEMO",
        Some(json!({ "rate_plan_id": "video" })),
    );
    let inmate = e2e::book(&api, "V-1", "2468", e2e::NUMBER, false);
    e2e::fund(&api, &inmate, "5.00");
    let station = api.post(
        "/api/v1/facilities/DEMO/visit-stations",
        json!({ "name": "Kiosk 1", "housing_unit": "A", "capacity": 1 }),
    );
    let station = station["id"].as_str().unwrap().to_string();
    let kiosk = api.post(
        "/api/v1/tokens",
        json!({ "username": "kiosk-1", "role": "kiosk", "facilities": ["DEMO"],
                "station_id": station, "ttl_secs": 3600 }),
    );
    let kiosk = api.as_token(kiosk["token"].as_str().unwrap());

    let rt = tokio::runtime::Runtime::new().unwrap();
    // The visit: a 12-second slot open now (written as a booking would leave it).
    let db = rt
        .block_on(Db::connect(
            &format!("sqlite://{}/db.sqlite", dir.path.display()),
            1,
        ))
        .unwrap();
    let contact: String = rt
        .block_on(
            sqlx::query_scalar("SELECT id FROM contacts WHERE inmate_id = $1")
                .bind(&inmate.id)
                .fetch_one(db.pool()),
        )
        .unwrap();
    let booked = |id: &str, by: &str, role: &str| {
        rt.block_on(open_visit(
            &db,
            id,
            &inmate.id,
            &contact,
            &station,
            (by, role),
        ))
    };
    booked("vis_ws", "admin", "admin");

    // The two passes, as the pages get them.
    let (visitor_pass, inmate_pass) = passes(&api, &kiosk, "vis_ws", &inmate);

    rt.block_on(async {
        // Garbage first: refused with a code, nothing joined.
        let mut ws = connect(&gw).await;
        send(&mut ws, json!({ "type": "offer", "sdp": "v=0" })).await;
        let e = next_json(&mut ws).await;
        assert_eq!(e["code"], "hello_first", "{e}");
        let mut ws = connect(&gw).await;
        ws.send(Message::Text("not json".into())).await.unwrap();
        assert_eq!(next_json(&mut ws).await["code"], "bad_json");
        let mut ws = connect(&gw).await;
        send(
            &mut ws,
            json!({ "type": "hello", "credential": "forged.pass" }),
        )
        .await;
        assert_eq!(next_json(&mut ws).await["code"], "link_invalid");

        let (visitor, kiosk_page) = tokio::join!(
            page(&gw, visitor_pass, script.clone()),
            page(&gw, inmate_pass, script.clone())
        );
        for (name, got) in [("visitor", &visitor), ("kiosk", &kiosk_page)] {
            let phases: Vec<&str> = got
                .iter()
                .filter(|m| m["type"] == "state")
                .filter_map(|m| m["phase"].as_str())
                .collect();
            assert!(phases.contains(&"connected"), "{name}: {got:?}");
            let last = got.last().unwrap();
            assert_eq!(last["reason"], "slot_ended", "{name}: {got:?}");
        }
    });

    // The record: a visit session, charged through the ledger, both sides recorded.
    let (kind, reason, increments, amount): (String, String, i64, i64) = rt.block_on(async {
        // The CDR is closed a moment after the pages are told.
        for _ in 0..50 {
            let ended: Option<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT kind, end_reason, billed_increments, amount_minor FROM sessions \
                 WHERE visit_id = 'vis_ws' AND state = 'ended'",
            )
            .fetch_optional(db.pool())
            .await
            .unwrap();
            if let Some(r) = ended {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the visit's session was not closed");
    });
    assert_eq!((kind.as_str(), reason.as_str()), ("visit", "slot_ended"));
    assert!((1..=2).contains(&increments), "{increments} increments");
    assert_eq!(amount, increments * 120, "$0.012 per 6-second increment");
    let balance = api.balance(&inmate.account);
    assert_eq!(
        balance,
        e2e::dec("5.00") - rust_decimal::Decimal::new(amount, 4)
    );
    let recorded: i64 = rt.block_on(async {
        for _ in 0..50 {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM recordings r JOIN sessions s ON s.id = r.session_id \
                 WHERE s.visit_id = 'vis_ws' AND r.status = 'complete'",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            if n == 2 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        0
    });
    assert_eq!(recorded, 2, "both sides recorded and finished");
    api.assert_ledger_clean();

    // Issue 12: a visit a family member booked is paid from that family's prepaid
    // account (the facility's default order), and the inmate's account is not touched.
    let family = api.post(
        "/api/v1/tokens",
        json!({ "username": "family-visit", "role": "family", "facilities": ["DEMO"],
                "contacts": [contact] }),
    );
    let family = api.as_token(family["token"].as_str().unwrap());
    let prepaid = family.post("/api/v1/family/prepaid", json!({ "facility_id": "DEMO" }));
    let prepaid = prepaid["id"].as_str().unwrap().to_string();
    let (s, v) = family.post_keyed(
        "/api/v1/family/deposits",
        "visit-prepaid",
        json!({ "account_id": prepaid, "amount": "1.00", "depositor": "family",
            "card_number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123" }),
    );
    assert_eq!(s, 201, "{v}");
    let inmate_before = api.balance(&inmate.account);
    booked("vis_fam", "family-visit", "family");
    let (visitor_pass, inmate_pass) = passes(&api, &kiosk, "vis_fam", &inmate);
    rt.block_on(async {
        tokio::join!(
            page(&gw, visitor_pass, script.clone()),
            page(&gw, inmate_pass, script.clone())
        )
    });
    let (account, amount): (String, i64) = rt.block_on(async {
        for _ in 0..50 {
            let ended: Option<(String, i64)> = sqlx::query_as(
                "SELECT account_id, amount_minor FROM sessions \
                 WHERE visit_id = 'vis_fam' AND state = 'ended'",
            )
            .fetch_optional(db.pool())
            .await
            .unwrap();
            if let Some(r) = ended {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the family's visit was not closed");
    });
    assert_eq!(account, prepaid, "the family's prepaid account paid");
    assert!(amount > 0, "the visit was charged");
    assert_eq!(api.balance(&inmate.account), inmate_before);
    assert_eq!(
        family.balance(&prepaid),
        e2e::dec("1.00") - rust_decimal::Decimal::new(amount, 4)
    );
    api.assert_ledger_clean();
}
