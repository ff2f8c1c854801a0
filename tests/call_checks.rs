//! The call flow's database checks (PIN and lockout, destination policy, one live call per
//! inmate) against SQLite and PostgreSQL.

use chrono::{TimeZone, Utc};
use sallyport::call::checks::{check_destination, check_pin};
use sallyport::call::{Destination, EndReason, PinVerdict};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::ledger::{DepositMethod, DepositRequest, RequestKey};
use sallyport::sessions::{self, NewSession, SessionEnd};
use sallyport::store::{
    Booking, ContactStatus, FacilityPatch, NewContact, NewFacility, NewHandset, Store,
};
use std::sync::Arc;

/// `key` in the namespace of the one caller these tests are.
fn rk(key: &str) -> RequestKey {
    RequestKey::new("tests", key).unwrap()
}

struct World {
    t: TestDb,
    store: Store,
    config: Config,
    inmate: String,
    handset: String,
}

/// 2026-03-02 18:00 UTC is noon in Chicago.
fn noon() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap()
}

async fn world(backend: Backend) -> Option<World> {
    let t = TestDb::of(backend).await?;
    let clock = Arc::new(ManualClock::new(noon()));
    let mut config = Config::default();
    config.security.pin_pepper = "test-pepper-0123456789".into();
    config.security.lockout_after_failures = 4;
    let store = Store::new(
        t.db.clone(),
        clock as Arc<dyn Clock>,
        &config.security.pin_pepper,
    );
    store
        .create_facility(NewFacility {
            id: "F1".into(),
            name: "F1 Jail".into(),
            time_zone: "America/Chicago".into(),
            country_code: "1".into(),
            cap_category: "prison".into(),
            calling_hours_start: "07:00".into(),
            calling_hours_end: "22:00".into(),
            deposit_max: "100".parse().unwrap(),
            deposit_daily_max: "200".parse().unwrap(),
            daily_call_limit: 0,
            recording_retention_days: 30,
        })
        .await
        .unwrap();
    store
        .store_rate_deck("d", "d", b"prefix,class,description\n1,domestic,US\n")
        .await
        .unwrap();
    store
        .store_rate_plan(
            "p",
            "p",
            900,
            b"class,service,per_minute,increment_secs\ndomestic,audio,0.06,60\n",
        )
        .await
        .unwrap();
    let patch = FacilityPatch {
        rate_plan_id: Some("p".into()),
        rate_deck_id: Some("d".into()),
        ..Default::default()
    };
    store.update_facility("F1", patch).await.unwrap();
    let b = Booking {
        booking_number: "B1".into(),
        first_name: "A".into(),
        last_name: "B".into(),
        pin: Some("2468".into()),
    };
    let inmate = store.book_inmate("F1", b).await.unwrap();
    for (num, privileged) in [("5551230001", false), ("5559990000", true)] {
        let c = store
            .add_contact(
                &inmate.id,
                NewContact {
                    number: num.into(),
                    name: "C".into(),
                    relationship: String::new(),
                    privileged,
                    video_allowed: false,
                },
            )
            .await
            .unwrap();
        store
            .decide_contact(&c.id, ContactStatus::Approved, "staff")
            .await
            .unwrap();
    }
    store
        .add_contact(
            &inmate.id,
            NewContact {
                number: "5557770000".into(),
                name: "P".into(),
                relationship: String::new(),
                privileged: false,
                video_allowed: false,
            },
        )
        .await
        .unwrap();
    let dep = DepositRequest {
        account_id: inmate.account_id.clone(),
        method: DepositMethod::Online,
        amount: "1.00".parse().unwrap(),
        depositor: String::new(),
        reference: String::new(),
    };
    store.ledger().deposit(&rk("seed"), dep).await.unwrap();
    let h = store
        .add_handset(
            "F1",
            "sallyport",
            NewHandset {
                name: "H".into(),
                location: String::new(),
                sip_username: None,
                sip_password: None,
            },
        )
        .await
        .unwrap();
    Some(World {
        t,
        store,
        config,
        inmate: inmate.id,
        handset: h.id,
    })
}

async fn open(w: &World, id: &str) {
    let s = NewSession {
        id,
        facility_id: "F1",
        handset_id: Some(&w.handset),
        dialed: "",
        node_id: "n1",
        sip_call_id: None,
    };
    sessions::open_call(w.store.db(), &s, noon()).await.unwrap();
}

async fn dest(w: &World, session: &str, dialed: &str) -> Destination {
    check_destination(
        &w.store,
        session,
        &w.inmate,
        dialed,
        &w.config.billing,
        noon(),
    )
    .await
    .unwrap()
}

fn refused(d: &Destination) -> Option<EndReason> {
    match d {
        Destination::Refused(r) => Some(*r),
        Destination::Authorized(_) => None,
    }
}

async fn pin(p: &str, w: &World) -> Result<PinVerdict, sallyport::store::StoreError> {
    check_pin(&w.store, "F1", &w.handset, p, &w.config.security, noon()).await
}

async fn pins_and_lockout(w: World) {
    assert_eq!(
        pin("2468", &w).await.unwrap(),
        PinVerdict::Valid {
            inmate_id: w.inmate.clone()
        }
    );
    for _ in 0..3 {
        assert_eq!(pin("1111", &w).await.unwrap(), PinVerdict::Wrong);
    }
    assert_eq!(
        pin("2468", &w).await.unwrap(),
        PinVerdict::Valid {
            inmate_id: w.inmate.clone()
        },
        "a right PIN resets the count"
    );
    for _ in 0..4 {
        assert_eq!(pin("1111", &w).await.unwrap(), PinVerdict::Wrong);
    }
    assert_eq!(
        pin("2468", &w).await.unwrap(),
        PinVerdict::Locked,
        "locked after 4 failures in a row"
    );
    let later = noon() + chrono::Duration::seconds(901);
    let v = check_pin(
        &w.store,
        "F1",
        &w.handset,
        "2468",
        &w.config.security,
        later,
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        PinVerdict::Valid {
            inmate_id: w.inmate.clone()
        },
        "the lockout expires"
    );
    let n: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM pin_attempts")
            .fetch_one(w.store.db().pool())
            .await
            .unwrap(),
        0,
    );
    assert_eq!(n, 11, "every attempt is logged");
    w.t.cleanup().await;
}

async fn destinations(w: World) {
    open(&w, "s1").await;
    match dest(&w, "s1", "(555) 123-0001").await {
        Destination::Authorized(a) => {
            assert_eq!(a.number, "+15551230001");
            assert!(!a.privileged);
            assert_eq!(a.balance.to_string(), "1.00");
            assert_eq!(a.charging.cost_per_increment.to_string(), "0.06");
            assert_eq!(a.charging.max_duration.as_secs(), 900);
        }
        other => panic!("{other:?}"),
    }
    // The same inmate on a second handset, anywhere in the cluster: refused.
    open(&w, "s2").await;
    assert_eq!(
        refused(&dest(&w, "s2", "5551230001").await),
        Some(EndReason::CallLimit)
    );
    let end = SessionEnd {
        reason: "caller_hangup",
        inmate_id: None,
        number_e164: None,
        privileged: false,
        recorded: false,
        answer_at: None,
        accepted_at: None,
        end_at: noon(),
    };
    assert!(sessions::close(w.store.db(), "s1", &end).await.unwrap());
    sessions::close(w.store.db(), "s2", &end).await.unwrap();
    let checks = [
        ("5557770000", EndReason::NotApproved),
        ("5550000000", EndReason::NotApproved),
        ("12", EndReason::InvalidNumber),
    ];
    for (i, (number, reason)) in checks.into_iter().enumerate() {
        let s = format!("c{i}");
        open(&w, &s).await;
        assert_eq!(
            refused(&dest(&w, &s, number).await),
            Some(reason),
            "{number}"
        );
        sessions::close(w.store.db(), &s, &end).await.unwrap();
    }
    open(&w, "p1").await;
    match dest(&w, "p1", "5559990000").await {
        Destination::Authorized(a) => assert!(a.privileged),
        other => panic!("{other:?}"),
    }
    sessions::close(w.store.db(), "p1", &end).await.unwrap();
    w.store
        .block_number(Some("F1"), "5551230001", "threats")
        .await
        .unwrap();
    open(&w, "b1").await;
    assert_eq!(
        refused(&dest(&w, "b1", "5551230001").await),
        Some(EndReason::Blocked)
    );
    sessions::close(w.store.db(), "b1", &end).await.unwrap();
    let hours = FacilityPatch {
        calling_hours_start: Some("13:00".into()),
        calling_hours_end: Some("14:00".into()),
        ..Default::default()
    };
    w.store.update_facility("F1", hours).await.unwrap();
    open(&w, "h1").await;
    assert_eq!(
        refused(&dest(&w, "h1", "5559990000").await),
        Some(EndReason::OutsideHours)
    );
    sessions::close(w.store.db(), "h1", &end).await.unwrap();
    w.store
        .set_inmate_status(&w.inmate, sallyport::store::InmateStatus::Suspended)
        .await
        .unwrap();
    open(&w, "x1").await;
    assert_eq!(
        refused(&dest(&w, "x1", "5559990000").await),
        Some(EndReason::InmateInactive)
    );
    w.t.cleanup().await;
}

async fn daily_limit(w: World) {
    w.store
        .update_facility(
            "F1",
            FacilityPatch {
                daily_call_limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    open(&w, "s1").await;
    assert!(matches!(
        dest(&w, "s1", "5551230001").await,
        Destination::Authorized(_)
    ));
    let end = SessionEnd {
        reason: "callee_hangup",
        inmate_id: Some(&w.inmate),
        number_e164: Some("+15551230001"),
        privileged: false,
        recorded: true,
        answer_at: Some(noon()),
        accepted_at: Some(noon()),
        end_at: noon(),
    };
    sessions::close(w.store.db(), "s1", &end).await.unwrap();
    open(&w, "s2").await;
    assert_eq!(
        refused(&dest(&w, "s2", "5551230001").await),
        Some(EndReason::CallLimit)
    );
    w.t.cleanup().await;
}

macro_rules! battery {
    ($($name:ident),*) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::world(super::Backend::Sqlite).await.unwrap()).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { if let Some(w) = super::world(super::Backend::Postgres).await { super::$name(w).await } } )* }
    };
}

battery!(pins_and_lockout, destinations, daily_limit);
