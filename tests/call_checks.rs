//! The call flow's database checks (ID + PIN, the lockout and the guessing alert,
//! destination policy, one live call per inmate) against SQLite and PostgreSQL, and
//! migration 0005 on the data of an older database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use chrono::{DateTime, Duration, TimeZone, Utc};
use sallyport::call::checks::{check_destination, check_pin, PinCheck, PinEntry};
use sallyport::call::{Destination, EndReason, PinVerdict};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::ledger::{DepositMethod, DepositRequest, RequestKey};
use sallyport::policy::lockout::{PinLockout, Subject};
use sallyport::session::cdr::{self, NewSession, SessionEnd};
use sallyport::store::{
    AttemptOutcome, Booking, ContactStatus, FacilityPatch, NewAttempt, NewContact, NewFacility,
    NewHandset, Store,
};
use std::sync::Arc;

/// `key` in the namespace of the one caller these tests are.
fn rk(key: &str) -> RequestKey {
    RequestKey::new("tests", key).unwrap()
}

struct World {
    t: TestDb,
    clock: Arc<ManualClock>,
    store: Store,
    config: Config,
    lockout: PinLockout,
    /// Calling ID 100001, PIN 2468.
    inmate: String,
    handset: String,
}

/// The first inmate's calling ID and PIN.
const ID: &str = "100001";
const PIN: &str = "2468";

/// 2026-03-02 18:00 UTC is noon in Chicago.
fn noon() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap()
}

async fn world(backend: Backend) -> Option<World> {
    let t = TestDb::of(backend).await?;
    let clock = Arc::new(ManualClock::new(noon()));
    let mut config = Config::default();
    config.security.pin_pepper = "test-pepper-0123456789".into();
    let store = Store::new(
        t.db.clone(),
        clock.clone() as Arc<dyn Clock>,
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
        pin: Some(PIN.into()),
        calling_id: Some(ID.into()),
        housing_unit: None,
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
        clock,
        store,
        lockout: PinLockout::from_config(&config.security),
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
    cdr::open_call(w.store.db(), &s, noon()).await.unwrap();
}

async fn dest(w: &World, session: &str, dialed: &str) -> Destination {
    check_destination(
        &w.store,
        session,
        &w.inmate,
        dialed,
        sallyport::session::Service::Audio,
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

/// One ID + PIN entry at handset `handset` from line `line`, at `at`.
async fn entry(
    w: &World,
    handset: &str,
    line: &str,
    calling_id: &str,
    pin: &str,
    at: DateTime<Utc>,
) -> PinCheck {
    let e = PinEntry {
        facility_id: "F1",
        handset_id: Some(handset),
        line,
        calling_id,
        pin,
    };
    check_pin(&w.store, e, &w.lockout, at).await.unwrap()
}

/// An entry now (the world's clock).
async fn verdict(w: &World, handset: &str, line: &str, id: &str, pin: &str) -> PinVerdict {
    entry(w, handset, line, id, pin, w.clock.wall())
        .await
        .verdict
}

async fn add_handset(w: &World, name: &str) -> String {
    let h = NewHandset {
        name: name.into(),
        location: String::new(),
        sip_username: Some(name.into()),
        sip_password: None,
    };
    w.store.add_handset("F1", "sallyport", h).await.unwrap().id
}

async fn book_with(w: &World, booking: &str, id: &str, pin: &str) -> String {
    let b = Booking {
        booking_number: booking.into(),
        first_name: "C".into(),
        last_name: "D".into(),
        pin: Some(pin.into()),
        calling_id: Some(id.into()),
        housing_unit: None,
    };
    w.store.book_inmate("F1", b).await.unwrap().id
}

fn valid(id: &str) -> PinVerdict {
    PinVerdict::Valid {
        inmate_id: id.to_string(),
    }
}

async fn count(w: &World, sql: &str) -> i64 {
    sqlx::Row::get(
        &sqlx::query(sql)
            .fetch_one(w.store.db().pool())
            .await
            .unwrap(),
        0,
    )
}

async fn audits(w: &World, action: &str) -> Vec<sallyport::store::AuditRecord> {
    let all = w.store.audit_records(1000, 0).await.unwrap();
    all.into_iter().filter(|r| r.action == action).collect()
}

/// The pair names the inmate; a PIN alone (no ID, a wrong ID, another inmate's ID) never
/// does, and two inmates may share a PIN. Every attempt is logged, without its digits.
async fn id_and_pin_name_the_inmate(w: World) {
    let (h, line) = (w.handset.clone(), "10.0.0.1");
    let twin = book_with(&w, "B2", "100002", PIN).await;
    let other = book_with(&w, "B3", "100003", "1357").await;
    assert_eq!(verdict(&w, &h, line, ID, PIN).await, valid(&w.inmate));
    assert_eq!(verdict(&w, &h, line, "100002", PIN).await, valid(&twin));
    assert_eq!(verdict(&w, &h, line, "100003", "1357").await, valid(&other));
    // Seven wrong entries, from two phones (six on one would lock it).
    let h2 = add_handset(&w, "second").await;
    for (n, (id, pin, why)) in [
        ("", PIN, "no ID"),
        ("999999", PIN, "an ID naming nobody"),
        ("100003", PIN, "another inmate's ID"),
        ("10000", PIN, "a short ID"),
        ("1000011", PIN, "a long ID"),
        (ID, "", "no PIN"),
        (ID, "2469", "a wrong PIN"),
    ]
    .into_iter()
    .enumerate()
    {
        let (h, line) = if n < 4 { (&h, line) } else { (&h2, "10.0.0.2") };
        assert_eq!(
            verdict(&w, h, line, id, pin).await,
            PinVerdict::Wrong,
            "{why}"
        );
    }
    assert_eq!(
        count(&w, "SELECT COUNT(*) FROM pin_attempts").await,
        10,
        "every attempt is logged"
    );
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM pin_attempts WHERE outcome = 'valid' AND success = 1"
        )
        .await,
        3
    );
    let rows = sqlx::query("SELECT * FROM pin_attempts")
        .fetch_all(w.store.db().pool())
        .await
        .unwrap();
    for r in &rows {
        for (i, column) in sqlx::Row::columns(r).iter().enumerate() {
            // Ids are random (a UUIDv7's clock digits can spell anything, "2469" at times):
            // `inm_…`, `hs_…` (32 hex digits after the prefix) or a hyphenated UUID.
            let name = sqlx::Column::name(column);
            let v: Option<String> = sqlx::Row::try_get(r, i).ok().flatten();
            let v = v.unwrap_or_default();
            let hex = |t: &str, n: usize| {
                t.len() == n && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            };
            let is_id = v.split_once('_').is_some_and(|(_, rest)| hex(rest, 32)) || hex(&v, 36);
            if is_id {
                continue;
            }
            assert!(
                !v.contains(PIN) && !v.contains("999999") && !v.contains("2469"),
                "digits stored in pin_attempts.{name}: {v}"
            );
        }
    }
    // Unknown IDs are told apart for the alert, without their digits.
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(DISTINCT target) FROM pin_attempts WHERE inmate_id IS NULL"
        )
        .await,
        4
    );
    w.t.cleanup().await;
}

/// The attack that found it: a right PIN (the attacker's own) between guesses used to
/// reset the handset's count. Now nothing resets: the sixth wrong entry locks the inmate
/// guessed at, the handset and the line, whatever valid entries came between.
async fn a_right_pin_resets_nothing(w: World) {
    let (h, line) = (w.handset.clone(), "10.0.0.1");
    let own = book_with(&w, "B2", "100002", "9753").await;
    for guess in 0..6 {
        let c = entry(&w, &h, line, ID, &format!("{:04}", 1000 + guess), noon()).await;
        assert_eq!(c.verdict, PinVerdict::Wrong);
        if guess < 5 {
            assert!(c.locked.is_empty(), "guess {guess}: {c:?}");
            assert_eq!(verdict(&w, &h, line, "100002", "9753").await, valid(&own));
        } else {
            assert_eq!(
                c.locked,
                vec![Subject::Inmate, Subject::Handset, Subject::Line],
                "the sixth failure locks all three"
            );
        }
    }
    assert_eq!(
        verdict(&w, &h, line, "100002", "9753").await,
        PinVerdict::Locked,
        "the handset is locked: not even the attacker's own PIN is checked"
    );
    // Elsewhere, the guessed-at inmate is locked even with the right PIN (and told so);
    // the attacker's own account is not.
    let h2 = add_handset(&w, "elsewhere").await;
    assert_eq!(
        verdict(&w, &h2, "10.0.0.2", ID, PIN).await,
        PinVerdict::AccountLocked
    );
    assert_eq!(
        verdict(&w, &h2, "10.0.0.2", "100002", "9753").await,
        valid(&own)
    );
    let i = w.store.inmate(&w.inmate).await.unwrap();
    assert_eq!(i.locked_until, Some(noon() + Duration::minutes(15)));
    // Each lock is in the audit log, by the gateway, from the line.
    let locks = audits(&w, "pin.lockout").await;
    assert_eq!(locks.len(), 3, "{locks:?}");
    assert!(locks
        .iter()
        .all(|a| a.actor == "sallyport" && a.remote_addr.as_deref() == Some(line)));
    let subjects: Vec<_> = locks.iter().map(|a| a.detail["subject"].clone()).collect();
    for s in ["inmate", "handset", "line"] {
        assert!(subjects.contains(&serde_json::json!(s)), "{subjects:?}");
    }
    // What staff see, and how they clear it (a minute later).
    let in_force = w.store.pin_locks("F1", noon()).await.unwrap();
    assert_eq!(in_force.len(), 3, "{in_force:?}");
    w.clock.advance(std::time::Duration::from_secs(60));
    w.store.unlock_handset_pin(&h).await.unwrap();
    w.store.unlock_line_pin("F1", line).await.unwrap();
    assert_eq!(verdict(&w, &h, line, "100002", "9753").await, valid(&own));
    w.store.set_pin(&w.inmate, "8642").await.unwrap();
    assert_eq!(verdict(&w, &h, line, ID, "8642").await, valid(&w.inmate));
    // A clear restarts the count: one wrong entry after it locks nothing.
    let c = entry(&w, &h, line, ID, "0000", w.clock.wall()).await;
    assert_eq!((c.verdict, c.locked), (PinVerdict::Wrong, vec![]));
    assert!(w
        .store
        .pin_locks("F1", w.clock.wall())
        .await
        .unwrap()
        .is_empty());
    w.t.cleanup().await;
}

/// On a trusted network a handset is only its From user: guessing from several handsets
/// on one line (one source address) is counted against the line.
async fn rotating_handsets_on_one_line_is_counted(w: World) {
    let line = "10.0.0.9";
    let mut handsets = Vec::new();
    for n in 0..3 {
        handsets.push(add_handset(&w, &format!("wall-{n}")).await);
    }
    for (i, h) in handsets.iter().cycle().take(6).enumerate() {
        let c = entry(&w, h, line, &format!("5{i:05}"), PIN, noon()).await;
        assert_eq!(c.verdict, PinVerdict::Wrong);
        let want = if i == 5 { vec![Subject::Line] } else { vec![] };
        assert_eq!(c.locked, want, "entry {i}");
    }
    let fresh = add_handset(&w, "wall-new").await;
    assert_eq!(
        verdict(&w, &fresh, line, ID, PIN).await,
        PinVerdict::Locked,
        "a handset never used before is locked on that line"
    );
    assert_eq!(
        verdict(&w, &handsets[0], "10.0.0.10", ID, PIN).await,
        valid(&w.inmate),
        "the handsets themselves are not locked (two failures each)"
    );
    w.t.cleanup().await;
}

/// Failures decay after the window; a lock forgets the failures that caused it, so one
/// wrong entry after it expires does not relock; the next lock that follows soon after
/// lasts twice as long.
async fn failures_decay_and_locks_forget(w: World) {
    let (h, line) = (w.handset.clone(), "10.0.0.1");
    let t0 = noon();
    for _ in 0..3 {
        entry(&w, &h, line, ID, "0000", t0).await;
    }
    // An hour later those three no longer count against the hourly threshold (they do
    // against the daily one, 10): five more lock nothing...
    let t1 = t0 + Duration::minutes(61);
    for _ in 0..5 {
        let c = entry(&w, &h, line, ID, "0000", t1).await;
        assert!(c.locked.is_empty(), "{c:?}");
    }
    // ... the sixth within the window does.
    let c = entry(&w, &h, line, ID, "0000", t1).await;
    assert_eq!(c.locked.len(), 3, "{c:?}");
    let first_end = t1 + Duration::minutes(15);
    assert_eq!(
        w.store.handset(&h).await.unwrap().locked_until,
        Some(first_end)
    );
    // Right after the lock ends: one wrong entry is just wrong, and the right PIN works.
    let t2 = first_end + Duration::seconds(1);
    let c = entry(&w, &h, line, ID, "0000", t2).await;
    assert_eq!((c.verdict, c.locked), (PinVerdict::Wrong, vec![]));
    assert_eq!(
        entry(&w, &h, line, ID, PIN, t2).await.verdict,
        valid(&w.inmate)
    );
    // Five more (six since the lock): locked again, for 30 minutes this time.
    for _ in 0..4 {
        entry(&w, &h, line, ID, "0000", t2).await;
    }
    let c = entry(&w, &h, line, ID, "0000", t2).await;
    assert_eq!(c.locked.len(), 3, "{c:?}");
    assert_eq!(
        w.store.handset(&h).await.unwrap().locked_until,
        Some(t2 + Duration::minutes(30))
    );
    w.t.cleanup().await;
}

/// Failures spread over many IDs raise one alert per window (an audit entry), however
/// many more follow; the next window can raise another.
async fn guessing_across_ids_alerts(w: World) {
    let mut phones = Vec::new();
    // Eight phones: no handset or line reaches its own threshold in this test.
    for n in 0..8 {
        phones.push((
            add_handset(&w, &format!("unit-{n}")).await,
            format!("10.1.0.{n}"),
        ));
    }
    let guess = |i: usize, at: DateTime<Utc>| {
        let (h, line) = phones[i % 8].clone();
        let w = &w;
        async move { entry(w, &h, &line, &format!("7{i:05}"), PIN, at).await }
    };
    for i in 0..9 {
        assert_eq!(guess(i, noon()).await.alert, None, "guess {i}");
    }
    let c = guess(9, noon()).await;
    let pattern = c.alert.expect("the tenth distinct ID raises the alert");
    assert_eq!(
        (
            pattern.ids,
            pattern.failures,
            pattern.handsets,
            pattern.lines
        ),
        (10, 10, 8, 8)
    );
    for i in 10..20 {
        assert_eq!(guess(i, noon() + Duration::seconds(30)).await.alert, None);
    }
    let alerts = audits(&w, "pin.guessing_alert").await;
    assert_eq!(alerts.len(), 1, "rate-limited: {alerts:?}");
    assert_eq!(alerts[0].facility_id.as_deref(), Some("F1"));
    assert_eq!(alerts[0].detail["ids"], 10);
    // The same ID again and again is one ID: no alert for an inmate's own typos.
    let later = noon() + Duration::minutes(11);
    for _ in 0..5 {
        assert_eq!(
            entry(&w, &w.handset, "10.2.0.1", ID, "0000", later)
                .await
                .alert,
            None
        );
    }
    // Ten more distinct IDs in a later window: a second alert.
    let mut raised = 0;
    for i in 100..110 {
        raised += usize::from(guess(i, later).await.alert.is_some());
    }
    assert_eq!(raised, 1);
    assert_eq!(audits(&w, "pin.guessing_alert").await.len(), 2);
    w.t.cleanup().await;
}

/// Entries racing on many connections (many nodes) cannot check more than the threshold:
/// each is written before its PIN is compared, and one that entries begun before it could
/// push over waits for them.
async fn racing_entries_cannot_pass_the_threshold(w: World) {
    let h = w.handset.clone();
    let tries = (0..24).map(|i| {
        let (w, h) = (&w, h.clone());
        async move { entry(w, &h, "10.0.0.1", ID, &format!("{:04}", 3000 + i), noon()).await }
    });
    let results = futures_util::future::join_all(tries).await;
    let checked = results
        .iter()
        .filter(|c| c.verdict == PinVerdict::Wrong)
        .count();
    assert_eq!(checked, 6, "exactly the threshold is checked");
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM pin_attempts WHERE outcome = 'wrong'"
        )
        .await,
        6
    );
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM pin_attempts WHERE outcome = 'pending'"
        )
        .await,
        0
    );
    // The sixth locked the inmate, the handset and the line: the right PIN is refused.
    let v = verdict(&w, &h, "10.0.0.1", ID, PIN).await;
    assert!(
        matches!(v, PinVerdict::Locked | PinVerdict::AccountLocked),
        "{v:?}"
    );
    w.t.cleanup().await;
}

/// Right entries checked at the same moment (a dozen handsets behind one address, an
/// inmate who redials at once) are never refused for each other's sake: an entry being
/// checked is not a failure.
async fn racing_right_entries_are_all_let_through(w: World) {
    let mut phones = Vec::new();
    for i in 0..12 {
        phones.push(add_handset(&w, &format!("wing-{i}")).await);
    }
    let tries = phones.iter().map(|h| {
        let w = &w;
        async move { entry(w, h, "10.0.0.9", ID, PIN, noon()).await }
    });
    let results = futures_util::future::join_all(tries).await;
    for r in &results {
        assert_eq!(r.verdict, valid(&w.inmate), "{results:?}");
    }
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM pin_attempts WHERE outcome = 'valid'"
        )
        .await,
        12
    );
    w.t.cleanup().await;
}

/// A guesser who stays under the hourly threshold (one wrong pair every two hours) is
/// locked by the daily one at the tenth, and the next lock, a few hours after the first
/// ends, lasts twice as long.
async fn a_paced_guesser_is_locked_by_the_daily_count(w: World) {
    let (h, line) = (w.handset.clone(), "10.0.0.1");
    let mut at = noon();
    for n in 1..=9 {
        let c = entry(&w, &h, line, ID, &format!("{:04}", 4000 + n), at).await;
        assert_eq!(
            (c.verdict, c.locked),
            (PinVerdict::Wrong, vec![]),
            "guess {n}"
        );
        at += Duration::hours(2);
    }
    let c = entry(&w, &h, line, ID, "4010", at).await;
    assert_eq!(c.locked.len(), 3, "{c:?}");
    assert_eq!(
        entry(&w, &h, line, ID, PIN, at + Duration::minutes(14))
            .await
            .verdict,
        PinVerdict::Locked
    );
    let lock = audits(&w, "pin.lockout").await;
    assert!(
        lock.iter().all(|a| a.detail["failures_today"] == 10),
        "{lock:?}"
    );
    // Ten more at the same pace from the end of the lock: locked again, for 30 minutes
    // (the doubling survives a clean spell shorter than a day).
    at += Duration::minutes(15);
    for _ in 1..=9 {
        assert!(entry(&w, &h, line, ID, "0000", at).await.locked.is_empty());
        at += Duration::hours(2);
    }
    assert_eq!(entry(&w, &h, line, ID, "0000", at).await.locked.len(), 3);
    assert_eq!(
        w.store.handset(&h).await.unwrap().locked_until,
        Some(at + Duration::minutes(30))
    );
    w.t.cleanup().await;
}

/// Entries an older version's node left pending (it wrote them before comparing, then
/// died) count as failures once stale: six of them refuse the next entry, right PIN or
/// not, and lock what they reached.
async fn stale_pending_entries_count_as_failures(w: World) {
    let h = w.handset.clone();
    for _ in 0..6 {
        let a = NewAttempt {
            facility_id: "F1",
            handset_id: Some(&h),
            line: "10.0.0.1",
            inmate_id: Some(&w.inmate),
            target: &w.inmate,
        };
        w.store
            .record_pin_attempt(
                &a,
                AttemptOutcome::Pending,
                noon() - Duration::minutes(1),
                &[],
            )
            .await
            .unwrap();
    }
    let c = entry(&w, &h, "10.0.0.1", ID, PIN, noon()).await;
    assert_eq!(c.verdict, PinVerdict::Locked, "{c:?}");
    assert_eq!(c.locked.len(), 3, "{c:?}");
    w.t.cleanup().await;
}

/// Decks and plans are immutable by id, so each is read from the database once: after
/// the first load the rows could vanish and rating would not notice (a 100,000-prefix
/// deck used to be rebuilt on every call set-up). A cached plan is still checked against
/// the cap of the facility asking for it.
async fn rate_decks_and_plans_are_read_once(w: World) {
    let first = w.store.load_rate_deck("d").await.unwrap();
    let plan = w.store.load_rate_plan("p", "prison").await.unwrap();
    for sql in [
        "DELETE FROM rate_deck_entries WHERE deck_id = 'd'",
        "DELETE FROM rate_plan_tariffs WHERE plan_id = 'p'",
    ] {
        sqlx::query(sql).execute(w.store.db().pool()).await.unwrap();
    }
    let again = w.store.load_rate_deck("d").await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the deck was rebuilt");
    let plan_again = w.store.load_rate_plan("p", "prison").await.unwrap();
    assert!(Arc::ptr_eq(&plan, &plan_again), "the plan was rebuilt");
    // A set-up rates from the cached deck and plan.
    open(&w, "s1").await;
    assert!(matches!(
        dest(&w, "s1", "5551230001").await,
        Destination::Authorized(_)
    ));
    // Set-ups asking at once for a deck not yet loaded share one rebuild.
    w.store
        .store_rate_deck("d2", "d2", b"prefix,class,description\n1,domestic,US\n")
        .await
        .unwrap();
    let loads = (0..16).map(|_| w.store.load_rate_deck("d2"));
    let decks = futures_util::future::join_all(loads).await;
    let first = decks[0].as_ref().unwrap();
    for d in &decks {
        assert!(
            Arc::ptr_eq(first, d.as_ref().unwrap()),
            "rebuilt more than once"
        );
    }
    // 0.08 a minute: within a small jail's cap (0.09), above a prison's (0.06), cached
    // or not.
    w.store
        .store_rate_plan(
            "p08",
            "p08",
            900,
            b"class,service,per_minute,increment_secs\ndomestic,audio,0.08,60\n",
        )
        .await
        .unwrap();
    assert!(w.store.load_rate_plan("p08", "small_jail").await.is_ok());
    assert!(w.store.load_rate_plan("p08", "prison").await.is_err());
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
    assert!(cdr::close(w.store.db(), "s1", &end).await.unwrap());
    cdr::close(w.store.db(), "s2", &end).await.unwrap();
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
        cdr::close(w.store.db(), &s, &end).await.unwrap();
    }
    open(&w, "p1").await;
    match dest(&w, "p1", "5559990000").await {
        Destination::Authorized(a) => assert!(a.privileged),
        other => panic!("{other:?}"),
    }
    cdr::close(w.store.db(), "p1", &end).await.unwrap();
    w.store
        .block_number(Some("F1"), "5551230001", "threats")
        .await
        .unwrap();
    open(&w, "b1").await;
    assert_eq!(
        refused(&dest(&w, "b1", "5551230001").await),
        Some(EndReason::Blocked)
    );
    cdr::close(w.store.db(), "b1", &end).await.unwrap();
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
    cdr::close(w.store.db(), "h1", &end).await.unwrap();
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
    cdr::close(w.store.db(), "s1", &end).await.unwrap();
    open(&w, "s2").await;
    assert_eq!(
        refused(&dest(&w, "s2", "5551230001").await),
        Some(EndReason::CallLimit)
    );
    w.t.cleanup().await;
}

/// Migration 0005 on a database release 0004 left: an inmate whose PIN was hashed without
/// a calling ID (and looked up facility-wide), failure counters in columns, the old attempt
/// log. The inmate gets a random calling ID at start; the old PIN works with it (and only
/// with it) and is rehashed at its first right entry; the log's outcomes are filled in.
async fn migration_0005_keeps_old_pins(backend: Backend) {
    let Some(t) = TestDb::of_version(backend, 4).await else {
        return;
    };
    let pepper = "test-pepper-0123456789";
    let at = noon().timestamp_micros();
    let legacy = sallyport::policy::pin::legacy_hash(pepper.as_bytes(), "F1", "4321");
    let pool = t.db.pool();
    for (sql, binds) in [
        ("INSERT INTO facilities (id, name, time_zone, deposit_max_minor, deposit_daily_max_minor, created_at) VALUES ('F1', 'F1', 'UTC', 1000000, 1000000, $1)", vec![]),
        ("INSERT INTO inmates (id, facility_id, booking_number, first_name, last_name, status, pin_lookup, failed_pins, account_id, booked_at) VALUES ('inm_old', 'F1', 'OLD-1', 'A', 'B', 'active', $2, 2, 'acc_old', $1)", vec![legacy.clone()]),
        ("INSERT INTO inmates (id, facility_id, booking_number, first_name, last_name, status, pin_lookup, failed_pins, account_id, booked_at) VALUES ('inm_nopin', 'F1', 'OLD-2', 'C', 'D', 'active', NULL, 0, 'acc_old2', $1)", vec![]),
        ("INSERT INTO handsets (id, facility_id, name, failed_pins, created_at) VALUES ('hs_old', 'F1', 'wall', 3, $1)", vec![]),
        ("INSERT INTO pin_attempts (facility_id, handset_id, inmate_id, success, at) VALUES ('F1', 'hs_old', 'inm_old', 1, $1)", vec![]),
        ("INSERT INTO pin_attempts (facility_id, handset_id, inmate_id, success, at) VALUES ('F1', 'hs_old', NULL, 0, $1)", vec![]),
        ("INSERT INTO pin_attempts (facility_id, handset_id, inmate_id, success, at) VALUES ('F1', 'hs_old', 'inm_old', 0, $1)", vec![]),
    ] {
        let mut q = sqlx::query(sql).bind(at);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(pool).await.unwrap();
    }
    t.db.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(noon()));
    let store = Store::new(t.db.clone(), clock as Arc<dyn Clock>, pepper);
    assert_eq!(store.assign_calling_ids().await.unwrap(), 2);
    assert_eq!(store.assign_calling_ids().await.unwrap(), 0, "done once");
    let old = store.inmate("inm_old").await.unwrap();
    let id = old.calling_id.clone().expect("a calling ID");
    assert!(
        store.credential_rules().validate_calling_id(&id).is_ok(),
        "{id}"
    );
    assert_ne!(
        store.inmate("inm_nopin").await.unwrap().calling_id,
        Some(id.clone()),
        "unique in the facility"
    );
    assert!(old.has_pin);
    let outcomes: Vec<String> = sqlx::query("SELECT outcome FROM pin_attempts ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    assert_eq!(outcomes, ["valid", "wrong", "locked"]);
    let lockout = PinLockout::from_config(&Config::default().security);
    let check = |calling_id: String, pin: &'static str| {
        let store = store.clone();
        async move {
            let e = PinEntry {
                facility_id: "F1",
                handset_id: Some("hs_old"),
                line: "10.0.0.1",
                calling_id: &calling_id,
                pin,
            };
            check_pin(&store, e, &lockout, noon())
                .await
                .unwrap()
                .verdict
        }
    };
    let hashes = || async {
        let r = sqlx::query("SELECT pin_hash, pin_lookup FROM inmates WHERE id = 'inm_old'")
            .fetch_one(pool)
            .await
            .unwrap();
        let h: (Option<String>, Option<String>) = (sqlx::Row::get(&r, 0), sqlx::Row::get(&r, 1));
        (h.0.is_some(), h.1.is_some())
    };
    assert_eq!(hashes().await, (false, true));
    // The old PIN with another ID (or none) names nobody any more.
    assert_eq!(check(String::new(), "4321").await, PinVerdict::Wrong);
    let other = store.inmate("inm_nopin").await.unwrap().calling_id.unwrap();
    assert_eq!(check(other, "4321").await, PinVerdict::Wrong);
    assert_eq!(check(id.clone(), "4320").await, PinVerdict::Wrong);
    assert_eq!(hashes().await, (false, true), "a wrong PIN changes nothing");
    assert_eq!(check(id.clone(), "4321").await, valid("inm_old"));
    assert_eq!(
        hashes().await,
        (true, false),
        "rehashed with the calling ID"
    );
    assert_eq!(check(id, "4321").await, valid("inm_old"));
    t.cleanup().await;
}

#[tokio::test]
async fn sqlite_migration_0005_keeps_old_pins() {
    migration_0005_keeps_old_pins(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_migration_0005_keeps_old_pins() {
    migration_0005_keeps_old_pins(Backend::Postgres).await
}

/// A start loads the decks and plans the facilities rate with before SIP takes a call
/// (`Store::warm_rates`), so the first set-up does not wait for a large deck to be built; a
/// deck no facility uses stays on disk until something asks for it.
async fn a_start_loads_the_facilities_decks_before_any_call(w: World) {
    w.store
        .store_rate_deck(
            "unused",
            "unused",
            b"prefix,class,description\n1,domestic,US\n",
        )
        .await
        .unwrap();
    // A store as a restarted node opens it: nothing in memory yet.
    let started = Store::new(
        w.store.db().clone(),
        w.clock.clone() as Arc<dyn Clock>,
        &w.config.security.pin_pepper,
    );
    assert!(!started.rate_deck_in_memory("d"));
    assert_eq!(
        started.warm_rates().await.unwrap(),
        1,
        "one facility, one pair"
    );
    assert!(
        started.rate_deck_in_memory("d"),
        "the facility's deck is loaded"
    );
    assert!(
        !started.rate_deck_in_memory("unused"),
        "a deck no facility uses is not"
    );
    // What was loaded is what rates: the deck's rows could go and a set-up still rates.
    sqlx::query("DELETE FROM rate_deck_entries WHERE deck_id = 'd'")
        .execute(w.store.db().pool())
        .await
        .unwrap();
    let from_started = started.load_rate_deck("d").await.unwrap();
    assert!(
        from_started.lookup("15551230001").is_some(),
        "the warmed deck rates"
    );
    w.t.cleanup().await;
}

macro_rules! battery {
    ($($name:ident),*) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::world(super::Backend::Sqlite).await.unwrap()).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { if let Some(w) = super::world(super::Backend::Postgres).await { super::$name(w).await } } )* }
    };
}

battery!(
    id_and_pin_name_the_inmate,
    a_right_pin_resets_nothing,
    rotating_handsets_on_one_line_is_counted,
    failures_decay_and_locks_forget,
    guessing_across_ids_alerts,
    racing_entries_cannot_pass_the_threshold,
    racing_right_entries_are_all_let_through,
    a_paced_guesser_is_locked_by_the_daily_count,
    stale_pending_entries_count_as_failures,
    rate_decks_and_plans_are_read_once,
    a_start_loads_the_facilities_decks_before_any_call,
    destinations,
    daily_limit
);
