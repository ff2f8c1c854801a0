//! Handset admission (trusted network or digest) against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use sallyport::call::admission::{admit, Admission};
use sallyport::clock::{Clock, SystemClock};
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::sip::auth::{digest_ha1, digest_response, DigestAuth};
use sallyport::sip::message::{parse_datagram, Request, SipMessage};
use sallyport::store::{NewFacility, NewHandset, Store};
use std::net::IpAddr;
use std::sync::Arc;

const NOW: u64 = 1_780_000_000;

async fn world(backend: Backend) -> Option<(TestDb, Store, String, String)> {
    let t = TestDb::of(backend).await?;
    let store = Store::new(
        t.db.clone(),
        Arc::new(SystemClock) as Arc<dyn Clock>,
        "pepper-0123456789abc",
    );
    let fac = |id: &str| NewFacility {
        id: id.into(),
        name: id.into(),
        time_zone: "UTC".into(),
        country_code: "1".into(),
        cap_category: "prison".into(),
        calling_hours_start: "00:00".into(),
        calling_hours_end: "00:00".into(),
        deposit_max: "100".parse().unwrap(),
        deposit_daily_max: "100".parse().unwrap(),
        daily_call_limit: 0,
        recording_retention_days: 30,
    };
    store.create_facility(fac("F1")).await.unwrap();
    store.create_facility(fac("F2")).await.unwrap();
    store
        .add_trusted_network("F1", "10.1.0.0/16", "unit A")
        .await
        .unwrap();
    let wall = store
        .add_handset(
            "F1",
            "sallyport",
            NewHandset {
                name: "wall".into(),
                location: String::new(),
                sip_username: Some("wall-1".into()),
                sip_password: None,
            },
        )
        .await
        .unwrap();
    let roaming = store
        .add_handset(
            "F2",
            "sallyport",
            NewHandset {
                name: "r".into(),
                location: String::new(),
                sip_username: Some("hs-2".into()),
                sip_password: Some("secret-pass".into()),
            },
        )
        .await
        .unwrap();
    Some((t, store, wall.id, roaming.id))
}

fn invite(user: &str, authorization: Option<&str>) -> Request {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let raw = format!(
        "INVITE sip:5551230001@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-1\r\n\
         From: <sip:{user}@gw>;tag=a\r\nTo: <sip:5551230001@gw>\r\nCall-ID: x1\r\nCSeq: 1 INVITE\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    match parse_datagram(raw.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn nonce_of(www: &str) -> String {
    let start = www.find("nonce=\"").unwrap() + 7;
    www[start..].split('"').next().unwrap().to_string()
}

fn authorization(user: &str, password: &str, nonce: &str) -> String {
    let ha1 = digest_ha1(user, "sallyport", password);
    let resp = digest_response(&ha1, nonce, "INVITE", "sip:5551230001@gw", None);
    format!("Digest username=\"{user}\", realm=\"sallyport\", nonce=\"{nonce}\", uri=\"sip:5551230001@gw\", response=\"{resp}\", algorithm=MD5")
}

async fn admission(backend: Backend) {
    let Some((t, store, wall, roaming)) = world(backend).await else {
        return;
    };
    let auth = DigestAuth::new("sallyport", b"node-secret".to_vec(), 300);
    let inside: IpAddr = "10.1.2.3".parse().unwrap();
    let outside: IpAddr = "192.0.2.10".parse().unwrap();
    // A known handset on its facility's trusted network.
    let a = admit(&store, &auth, &invite("wall-1", None), inside, NOW)
        .await
        .unwrap();
    assert_eq!(
        a,
        Admission::Admitted {
            facility_id: "F1".into(),
            handset_id: wall
        }
    );
    // Trusted network, unknown handset (or another facility's): refused.
    let a = admit(&store, &auth, &invite("nobody", None), inside, NOW)
        .await
        .unwrap();
    assert!(matches!(a, Admission::Refused { status: 403, .. }), "{a:?}");
    let a = admit(&store, &auth, &invite("hs-2", None), inside, NOW)
        .await
        .unwrap();
    assert!(matches!(a, Admission::Refused { status: 403, .. }), "{a:?}");
    // Elsewhere: challenged, then admitted with the right password only.
    // The first challenge is digest's first step, not a failure.
    let Admission::Challenge {
        www_authenticate,
        failed: false,
    } = admit(&store, &auth, &invite("hs-2", None), outside, NOW)
        .await
        .unwrap()
    else {
        panic!("expected a challenge");
    };
    let nonce = nonce_of(&www_authenticate);
    let good = authorization("hs-2", "secret-pass", &nonce);
    let a = admit(
        &store,
        &auth,
        &invite("hs-2", Some(&good)),
        outside,
        NOW + 5,
    )
    .await
    .unwrap();
    assert_eq!(
        a,
        Admission::Admitted {
            facility_id: "F2".into(),
            handset_id: roaming
        }
    );
    // Another node with the same secret accepts the same nonce (stateless).
    let other_node = DigestAuth::new("sallyport", b"node-secret".to_vec(), 300);
    assert!(matches!(
        admit(
            &store,
            &other_node,
            &invite("hs-2", Some(&good)),
            outside,
            NOW + 6
        )
        .await
        .unwrap(),
        Admission::Admitted { .. }
    ));
    let bad = authorization("hs-2", "wrong-pass", &nonce);
    assert!(matches!(
        admit(&store, &auth, &invite("hs-2", Some(&bad)), outside, NOW + 5)
            .await
            .unwrap(),
        Admission::Challenge { failed: true, .. }
    ));
    let ghost = authorization("ghost", "secret-pass", &nonce);
    assert!(matches!(
        admit(
            &store,
            &auth,
            &invite("ghost", Some(&ghost)),
            outside,
            NOW + 5
        )
        .await
        .unwrap(),
        Admission::Challenge { failed: true, .. }
    ));
    // An expired nonce is answered with a stale challenge (not a failure).
    let Admission::Challenge {
        www_authenticate,
        failed: false,
    } = admit(
        &store,
        &auth,
        &invite("hs-2", Some(&good)),
        outside,
        NOW + 3600,
    )
    .await
    .unwrap()
    else {
        panic!("expected a challenge");
    };
    assert!(
        www_authenticate.to_ascii_lowercase().contains("stale=true"),
        "{www_authenticate}"
    );
    // A trusted-network handset (no password) cannot authenticate by digest from outside.
    let wall_auth = authorization("wall-1", "anything-8", &nonce);
    assert!(matches!(
        admit(
            &store,
            &auth,
            &invite("wall-1", Some(&wall_auth)),
            outside,
            NOW + 5
        )
        .await
        .unwrap(),
        Admission::Challenge { .. }
    ));
    t.cleanup().await;
}

#[tokio::test]
async fn sqlite_admission() {
    admission(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_admission() {
    admission(Backend::Postgres).await
}
