//! A video visit's session row (issue 11) against SQLite and PostgreSQL, through the
//! functions the visit driver uses: the row opened once per visit across nodes, the
//! timeline of joins and drops, video debits through the ledger, and the close with the
//! time billing was paused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use chrono::{DateTime, TimeZone, Utc};
use sallyport::clock::{Clock, ManualClock};
use sallyport::db::testing::TestDb;
use sallyport::db::{Backend, Db};
use sallyport::ledger::{DebitOutcome, Service, SessionDebit};
use sallyport::money::Money;
use sallyport::session::cdr::{
    self, CallEnd, NewVisitSession, SessionEnd, SessionEvent, SessionEventKind,
};
use sallyport::session::EndReason;
use sallyport::store::Store;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

struct World {
    t: TestDb,
    clock: Arc<ManualClock>,
    store: Store,
    inmate: String,
    account: String,
    contact: String,
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap()
}

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

/// Facility F1, one inmate with $1.00 and an approved, video-allowed contact.
async fn world(backend: Backend) -> Option<World> {
    let t = TestDb::of(backend).await?;
    let clock = Arc::new(ManualClock::new(noon()));
    let store = Store::new(
        t.db.clone(),
        clock.clone() as Arc<dyn Clock>,
        "test-pepper-0123456789",
    );
    let seeded = support::seed::inmate_with_contact(&store, "1.00", true).await;
    Some(World {
        t,
        clock,
        store,
        inmate: seeded.inmate,
        account: seeded.account,
        contact: seeded.contact,
    })
}

impl World {
    fn now(&self) -> DateTime<Utc> {
        self.clock.wall()
    }

    fn session<'a>(&'a self, id: &'a str, node: &'a str) -> NewVisitSession<'a> {
        NewVisitSession {
            id,
            visit_id: "vis_1",
            facility_id: "F1",
            inmate_id: &self.inmate,
            contact_id: &self.contact,
            account_id: &self.account,
            privileged: false,
            node_id: node,
        }
    }

    async fn debit(&self, id: &str, increment: u32) {
        let d = SessionDebit {
            session_id: id.into(),
            increment,
            account_id: self.account.clone(),
            amount: m("0.25"),
            service: Service::Video,
            facility_id: "F1".into(),
        };
        let out = self.store.ledger().debit_session(d).await.unwrap();
        assert!(matches!(out, DebitOutcome::Committed { .. }), "{out:?}");
    }
}

async fn one_live_session_per_visit_and_its_timeline(w: World) {
    let db = w.store.db();
    assert!(cdr::open_visit(db, &w.session("ses_a", "n1"), w.now())
        .await
        .unwrap());
    // A second node (its own pool on PostgreSQL) cannot open the same visit again.
    let other = match w.t.postgres_url() {
        Some(url) => Db::connect(&url, 2).await.unwrap(),
        None => db.clone(),
    };
    assert!(!cdr::open_visit(&other, &w.session("ses_b", "n2"), w.now())
        .await
        .unwrap());

    let t0 = w.now();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    for (s, kind, side) in [
        (0, SessionEventKind::Joined, "visitor"),
        (5, SessionEventKind::Media, "visitor"),
        (9, SessionEventKind::Media, "inmate"),
        (40, SessionEventKind::Dropped, "visitor"),
        (40, SessionEventKind::Paused, ""),
        (100, SessionEventKind::Media, "visitor"),
        (100, SessionEventKind::Resumed, ""),
    ] {
        cdr::add_event(db, "ses_a", at(s), kind, side)
            .await
            .unwrap();
    }
    w.debit("ses_a", 1).await;
    w.debit("ses_a", 2).await;
    let end = SessionEnd {
        reason: EndReason::SlotEnded.as_str(),
        inmate_id: Some(&w.inmate),
        number_e164: None,
        privileged: false,
        recorded: true,
        answer_at: None,
        accepted_at: Some(at(9)),
        end_at: at(130),
    };
    let detail = CallEnd {
        media_end_at: Some(at(130)),
        counted_increments: 0,
        closed_at: None,
        paused: Some(Duration::from_secs(60)),
    };
    assert!(cdr::close_with(db, "ses_a", &end, &detail).await.unwrap());
    // After the close the timeline takes nothing more.
    cdr::add_event(db, "ses_a", at(200), SessionEventKind::Left, "inmate")
        .await
        .unwrap();

    let events = cdr::events(db, "ses_a").await.unwrap();
    let kinds: Vec<(i64, &str, &str)> = events
        .iter()
        .map(|e: &SessionEvent| ((e.at - t0).num_seconds(), e.kind.as_str(), e.side.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, "joined", "visitor"),
            (5, "media", "visitor"),
            (9, "media", "inmate"),
            (40, "dropped", "visitor"),
            (40, "paused", ""),
            (100, "media", "visitor"),
            (100, "resumed", ""),
        ]
    );
    let row = sqlx::query(
        "SELECT kind, service, visit_id, state, end_reason, billed_increments, amount_minor, \
         paused_ms, contact_id FROM sessions WHERE id = 'ses_a'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("kind"), "visit");
    assert_eq!(row.get::<String, _>("service"), "video");
    assert_eq!(row.get::<String, _>("visit_id"), "vis_1");
    assert_eq!(row.get::<String, _>("state"), "ended");
    assert_eq!(row.get::<String, _>("end_reason"), "slot_ended");
    assert_eq!(row.get::<i64, _>("billed_increments"), 2);
    assert_eq!(row.get::<i64, _>("amount_minor"), 5_000); // $0.50 in 1/10,000
    assert_eq!(row.get::<i64, _>("paused_ms"), 60_000);
    assert_eq!(row.get::<String, _>("contact_id"), w.contact);

    // Once ended, the visit may be opened again (a rejoin after the node restarted).
    assert!(cdr::open_visit(&other, &w.session("ses_c", "n2"), w.now())
        .await
        .unwrap());
    // The timeline only appends.
    let changed = sqlx::query("UPDATE session_events SET kind = 'left' WHERE session_id = 'ses_a'")
        .execute(db.pool())
        .await;
    assert!(changed.is_err(), "session events must be append-only");
    let removed = sqlx::query("DELETE FROM session_events WHERE session_id = 'ses_a'")
        .execute(db.pool())
        .await;
    assert!(removed.is_err(), "session events must be append-only");
    if w.t.postgres_url().is_some() {
        other.close().await;
    }
    w.t.cleanup().await;
}

async fn racing_opens_give_one_live_session(w: World) {
    let db = w.store.db().clone();
    let w = Arc::new(w);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let w = w.clone();
        let db = match w.t.postgres_url() {
            Some(url) if i % 2 == 1 => Db::connect(&url, 2).await.unwrap(),
            _ => db.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let id = format!("ses_{i}");
            cdr::open_visit(&db, &w.session(&id, "n"), w.now())
                .await
                .unwrap()
        }));
    }
    let mut opened = 0;
    for t in tasks {
        opened += usize::from(t.await.unwrap());
    }
    assert_eq!(opened, 1, "exactly one live session per visit");
    let live: i64 =
        sqlx::query("SELECT COUNT(*) FROM sessions WHERE visit_id = 'vis_1' AND state = 'active'")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
    assert_eq!(live, 1);
    if let Ok(w) = Arc::try_unwrap(w) {
        w.t.cleanup().await;
    }
}

macro_rules! battery {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::world(super::Backend::Sqlite).await.unwrap()).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { if let Some(w) = super::world(super::Backend::Postgres).await { super::$name(w).await } } )* }
    };
}

battery!(
    one_live_session_per_visit_and_its_timeline,
    racing_opens_give_one_live_session,
);
