//! The call record (issue 9, items 8, 9, 10 and what investigators see) against SQLite and
//! PostgreSQL, through the functions the call driver uses: the destination check writes
//! the tariff applied, the ledger debits, the session is closed (or left open by a crash
//! and closed at the next start), and `Store::call` — what `GET /api/v1/calls/{id}`
//! returns — says it all.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use chrono::{DateTime, TimeZone, Utc};
use sallyport::call::checks::check_destination;
use sallyport::call::{Destination, EndReason};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::ledger::{DebitOutcome, DepositMethod, DepositRequest, Service, SessionDebit};
use sallyport::money::Money;
use sallyport::session::cdr::{self, CallEnd, NewSession, Progress, SessionEnd};
use sallyport::store::{
    Booking, Cdr, ContactStatus, FacilityPatch, FinishedRecording, NewContact, NewFacility,
    NewRecording, Store,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

struct World {
    t: TestDb,
    clock: Arc<ManualClock>,
    store: Store,
    config: Config,
    inmate: String,
    account: String,
    contact: String,
}

/// 2026-03-02 18:00 UTC is noon in Chicago.
fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap()
}

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

/// Facility F1 on rate plan `p` ($0.06/min in 60 s increments; `free`: $0.00) and deck `d`
/// (prefix 1555 local, 1 domestic); one inmate with 5551230001 approved and $1.00.
async fn world(backend: Backend) -> Option<World> {
    let t = TestDb::of(backend).await?;
    let clock = Arc::new(ManualClock::new(noon()));
    let config = Config::default();
    let store = Store::new(
        t.db.clone(),
        clock.clone() as Arc<dyn Clock>,
        "test-pepper-0123456789",
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
        .store_rate_deck(
            "d",
            "d",
            b"prefix,class,description\n1,domestic,US\n1555,local,Here\n",
        )
        .await
        .unwrap();
    for (id, rate) in [("p", "0.06"), ("free", "0")] {
        let csv = format!(
            "class,service,per_minute,increment_secs\nlocal,audio,{rate},60\ndomestic,audio,{rate},60\n"
        );
        store
            .store_rate_plan(id, id, 900, csv.as_bytes())
            .await
            .unwrap();
    }
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
        calling_id: None,
        housing_unit: None,
    };
    let inmate = store.book_inmate("F1", b).await.unwrap();
    let c = store
        .add_contact(
            &inmate.id,
            NewContact {
                number: "5551230001".into(),
                name: "C".into(),
                relationship: String::new(),
                privileged: false,
                video_allowed: false,
            },
        )
        .await
        .unwrap();
    store
        .decide_contact(&c.id, ContactStatus::Approved, "staff")
        .await
        .unwrap();
    let dep = DepositRequest {
        account_id: inmate.account_id.clone(),
        method: DepositMethod::Online,
        amount: m("1.00"),
        depositor: String::new(),
        reference: String::new(),
    };
    store
        .ledger()
        .deposit(
            &sallyport::ledger::RequestKey::new("tests", "seed").unwrap(),
            dep,
        )
        .await
        .unwrap();
    Some(World {
        t,
        clock,
        store,
        config,
        inmate: inmate.id,
        account: inmate.account_id,
        contact: c.id,
    })
}

impl World {
    fn now(&self) -> DateTime<Utc> {
        self.clock.wall()
    }

    fn advance(&self, s: u64) {
        self.clock.advance(Duration::from_secs(s));
    }

    /// Opens a session for `dialed` on node n1 and runs the destination check.
    async fn dial(&self, id: &str, dialed: &str) -> Destination {
        let s = NewSession {
            id,
            facility_id: "F1",
            handset_id: None,
            dialed,
            node_id: "n1",
            sip_call_id: None,
        };
        cdr::open_call(self.store.db(), &s, self.now())
            .await
            .unwrap();
        check_destination(
            &self.store,
            id,
            &self.inmate,
            dialed,
            sallyport::session::Service::Audio,
            &self.config.billing,
            self.now(),
        )
        .await
        .unwrap()
    }

    async fn accept(&self, id: &str) {
        let p = Progress {
            answer_at: Some(self.now()),
            accepted_at: Some(self.now()),
            ..Default::default()
        };
        cdr::progress(self.store.db(), id, &p).await.unwrap();
    }

    async fn debit(&self, id: &str, increment: u32, amount: &str) {
        let d = SessionDebit {
            session_id: id.into(),
            increment,
            account_id: self.account.clone(),
            amount: m(amount),
            service: Service::Audio,
            facility_id: "F1".into(),
        };
        let out = self.store.ledger().debit_session(d).await.unwrap();
        assert!(matches!(out, DebitOutcome::Committed { .. }), "{out:?}");
    }

    async fn cdr(&self, id: &str) -> Cdr {
        self.store.call(id).await.unwrap()
    }

    /// Closes `id` as the call driver does, with `reason`, the times given.
    async fn close(&self, id: &str, reason: EndReason, ends: [DateTime<Utc>; 3], counted: u32) {
        let [media_end, end, closed] = ends;
        let cdr = self.cdr(id).await;
        let end_row = SessionEnd {
            reason: reason.as_str(),
            inmate_id: Some(&self.inmate),
            number_e164: cdr.number.as_deref(),
            privileged: false,
            recorded: false,
            answer_at: cdr.answer_at,
            accepted_at: cdr.accepted_at,
            end_at: end,
        };
        let call = CallEnd {
            media_end_at: Some(media_end),
            counted_increments: counted,
            closed_at: Some(closed),
            paused: None,
        };
        assert!(cdr::close_with(self.store.db(), id, &end_row, &call)
            .await
            .unwrap());
    }
}

/// Item 8 and what a live call shows: the tariff applied is on the record from the
/// authorization (plan, deck prefix, class, per-minute rate, increment, cost of one
/// increment) with the contact; a live call shows the increments and amount debited so
/// far; the closed record's times explain its charge: billed until acceptance plus the
/// increments, the parties disconnected at the cut, the call ended after the notice, the
/// record closed after that.
async fn the_record_explains_its_charge(w: World) {
    let d = w.dial("c1", "5551230001").await;
    assert!(matches!(d, Destination::Authorized(_)), "{d:?}");
    let cdr = w.cdr("c1").await;
    assert_eq!(cdr.number.as_deref(), Some("+15551230001"));
    assert_eq!(cdr.dialed, "5551230001");
    assert_eq!(cdr.contact_id.as_deref(), Some(w.contact.as_str()));
    let tariff = serde_json::to_value(&cdr.tariff).unwrap();
    assert_eq!(
        tariff,
        json!({ "rate_plan_id": "p", "rate_deck_id": "d", "prefix": "1555", "class": "local",
                "service": "audio", "per_minute": "0.06", "increment_secs": 60,
                "cost_per_increment": "0.06" })
    );
    assert_eq!(cdr.billed_until, None, "not accepted yet");

    w.accept("c1").await;
    let accepted = w.now();
    w.debit("c1", 1, "0.06").await;
    w.advance(60);
    w.debit("c1", 2, "0.06").await;
    w.advance(8);
    // Live: what the ledger debited so far, not 0.
    let live = w.cdr("c1").await;
    assert_eq!(live.state, "active");
    assert_eq!((live.billed_increments, live.amount), (2, m("0.12")));
    assert_eq!(live.billed_until, Some(accepted + secs(120)));
    let active = w
        .store
        .calls(
            &sallyport::store::CallFilter {
                active: true,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (active[0].billed_increments, active[0].amount),
        (2, m("0.12")),
        "the active list too"
    );

    // Cut at the end of the second increment (the third debit refused), notice 2.5 s.
    let cut = accepted + secs(120);
    let end = cut + chrono::Duration::milliseconds(2_500);
    let closed = end + chrono::Duration::milliseconds(40);
    w.close("c1", EndReason::FundsExhausted, [cut, end, closed], 2)
        .await;
    let cdr = w.cdr("c1").await;
    assert_eq!(cdr.end_reason.as_deref(), Some("funds_exhausted"));
    assert_eq!((cdr.billed_increments, cdr.amount), (2, m("0.12")));
    assert_eq!(cdr.billed_until, Some(accepted + secs(120)));
    assert_eq!(cdr.media_end_at, Some(cut));
    assert_eq!(cdr.end_at, Some(end));
    assert_eq!(cdr.closed_at, Some(closed));
    // The charge from the record alone.
    let t = cdr.tariff.as_ref().unwrap();
    assert_eq!(t.cost_per_increment.times(2), cdr.amount);
    let billed = cdr.billed_until.unwrap() - cdr.accepted_at.unwrap();
    assert_eq!(billed, secs(2 * t.increment_secs));
    let v = serde_json::to_value(&cdr).unwrap();
    for key in [
        "billed_until",
        "media_end_at",
        "closed_at",
        "dialed",
        "contact_id",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    w.t.cleanup().await;
}

/// Investigators see what was dialed on a refused call: the digits always, the E.164
/// number once they were normalized; no tariff was applied.
async fn a_refused_call_shows_what_was_dialed(w: World) {
    let d = w.dial("r1", "(555) 123-9999").await;
    assert!(matches!(d, Destination::Refused(EndReason::NotApproved)));
    let d = w.dial("r2", "12").await;
    assert!(matches!(d, Destination::Refused(EndReason::InvalidNumber)));
    for (id, reason) in [
        ("r1", EndReason::NotApproved),
        ("r2", EndReason::InvalidNumber),
    ] {
        let end = SessionEnd {
            reason: reason.as_str(),
            inmate_id: Some(&w.inmate),
            number_e164: None,
            privileged: false,
            recorded: false,
            answer_at: None,
            accepted_at: None,
            end_at: w.now(),
        };
        cdr::close(w.store.db(), id, &end).await.unwrap();
    }
    let r1 = serde_json::to_value(w.cdr("r1").await).unwrap();
    assert_eq!(r1["dialed"], "(555) 123-9999");
    assert_eq!(r1["number"], "+15551239999");
    assert_eq!(r1["tariff"], json!(null));
    assert_eq!(r1["billed_until"], json!(null));
    let r2 = serde_json::to_value(w.cdr("r2").await).unwrap();
    assert_eq!(r2["dialed"], "12");
    assert_eq!(r2["number"], json!(null));
    w.t.cleanup().await;
}

/// Item 10: a free plan's increments are counted on the session as they begin (no ledger
/// entries: no money moves) and the CDR bills them at 0.00, live and closed; counting on
/// an account closed by a release says so.
async fn free_increments_are_billed_at_zero(w: World) {
    let patch = FacilityPatch {
        rate_plan_id: Some("free".into()),
        ..Default::default()
    };
    w.store.update_facility("F1", patch).await.unwrap();
    assert!(matches!(
        w.dial("f1", "5551230001").await,
        Destination::Authorized(_)
    ));
    w.accept("f1").await;
    let accepted = w.now();
    let db = w.store.db();
    assert!(cdr::count_increment(db, "f1", 1).await.unwrap());
    w.advance(60);
    assert!(cdr::count_increment(db, "f1", 2).await.unwrap());
    assert!(
        cdr::count_increment(db, "f1", 1).await.unwrap(),
        "a repeat changes nothing"
    );
    let live = w.cdr("f1").await;
    assert_eq!((live.billed_increments, live.amount), (2, Money::ZERO));
    w.advance(30);
    let end = w.now();
    w.close("f1", EndReason::CallerHangup, [end, end, end], 2)
        .await;
    let cdr = w.cdr("f1").await;
    assert_eq!((cdr.billed_increments, cdr.amount), (2, Money::ZERO));
    assert_eq!(cdr.billed_until, Some(accepted + secs(120)));
    assert_eq!(
        cdr.tariff.as_ref().map(|t| t.cost_per_increment),
        Some(Money::ZERO)
    );
    assert!(w
        .store
        .ledger()
        .session_charges("f1")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        w.store.ledger().balance(&w.account).await.unwrap(),
        m("1.00")
    );

    // A second free call; the inmate is released meanwhile.
    assert!(matches!(
        w.dial("f2", "5551230001").await,
        Destination::Authorized(_)
    ));
    w.store
        .release_inmate(
            &sallyport::ledger::RequestKey::new("tests", "rel").unwrap(),
            &w.inmate,
        )
        .await
        .unwrap();
    assert!(
        !cdr::count_increment(db, "f2", 1).await.unwrap(),
        "the account is closed"
    );
    w.t.cleanup().await;
}

/// Item 9: a session left open by a crash is closed at the next start with the times
/// that explain it — it ends where it was last known alive (here its recording, repaired
/// at restart, ran 35 s into the second increment), billed until two increments after
/// acceptance — and the restart, 423 s after acceptance, only as `closed_at`. Without a
/// recording the last debit is the last sign of life.
async fn a_crashed_call_ends_where_it_was_last_alive(w: World) {
    assert!(matches!(
        w.dial("k1", "5551230001").await,
        Destination::Authorized(_)
    ));
    w.accept("k1").await;
    let accepted = w.now();
    let rec = w
        .store
        .start_recording(NewRecording {
            session_id: "k1",
            facility_id: "F1",
            path: "2026/03/02/k1.wav",
            format: "wav-pcmu",
            node_id: "n1",
            started_at: accepted,
        })
        .await
        .unwrap();
    w.debit("k1", 1, "0.06").await;
    w.advance(60);
    w.debit("k1", 2, "0.06").await;
    // The restart repairs the recording: 95 s were flushed before the kill.
    let finished = FinishedRecording {
        ended_at: accepted + secs(95),
        duration_ms: 95_000,
        bytes: 44 + 95 * 16_000,
        sha256: "0".repeat(64),
        dropped_packets: 0,
        complete: false,
    };
    w.store.finish_recording(&rec, &finished).await.unwrap();

    // A second call of another node's making, with no recording: only its debit.
    let s = NewSession {
        id: "k2",
        facility_id: "F1",
        handset_id: None,
        dialed: "5551230001",
        node_id: "n1",
        sip_call_id: None,
    };
    cdr::open_call(w.store.db(), &s, w.now()).await.unwrap();

    let restart = accepted + secs(423);
    let closed = cdr::close_orphans(w.store.db(), "n1", restart)
        .await
        .unwrap();
    assert_eq!(closed, 2);
    let cdr = w.cdr("k1").await;
    assert_eq!(cdr.end_reason.as_deref(), Some("system"));
    assert_eq!((cdr.billed_increments, cdr.amount), (2, m("0.12")));
    assert_eq!(cdr.billed_until, Some(accepted + secs(120)));
    assert_eq!(cdr.end_at, Some(accepted + secs(95)), "{cdr:?}");
    assert_eq!(cdr.media_end_at, Some(accepted + secs(95)));
    assert_eq!(cdr.closed_at, Some(restart));

    let k2 = w.cdr("k2").await;
    assert_eq!(
        k2.end_at,
        Some(k2.invite_at),
        "never got further than its INVITE"
    );
    assert_eq!(k2.media_end_at, None, "never bridged");
    assert_eq!(k2.closed_at, Some(restart));
    w.t.cleanup().await;
}

/// The same crash without a recording (a privileged call): it ends at its last debit.
async fn a_crashed_unrecorded_call_ends_at_its_last_debit(w: World) {
    assert!(matches!(
        w.dial("u1", "5551230001").await,
        Destination::Authorized(_)
    ));
    w.accept("u1").await;
    let accepted = w.now();
    w.debit("u1", 1, "0.06").await;
    w.advance(60);
    w.clock
        .set_wall(accepted + chrono::Duration::milliseconds(60_040));
    w.debit("u1", 2, "0.06").await;
    let restart = accepted + secs(423);
    cdr::close_orphans(w.store.db(), "n1", restart)
        .await
        .unwrap();
    let cdr = w.cdr("u1").await;
    let last_debit = accepted + chrono::Duration::milliseconds(60_040);
    assert_eq!(
        (cdr.end_at, cdr.media_end_at),
        (Some(last_debit), Some(last_debit))
    );
    assert_eq!(cdr.billed_until, Some(accepted + secs(120)));
    assert_eq!(cdr.closed_at, Some(restart));
    w.t.cleanup().await;
}

/// Review, L5: a call cut for funds has the reason and the media end written on its live
/// row at the cut, before its notice plays; the node dies 1.2 s into the notice; the
/// restart closes the call `funds_exhausted` with the media end at the cut (not after
/// it), the end at the last sign of life (the notice, recorded), the charge as debited
/// (2 increments), and the restart only as `closed_at`. A second cut recorded later
/// changes nothing (the first stands); a call with no cut recorded still ends `system`.
async fn a_cut_recorded_before_a_crash_survives_it(w: World) {
    assert!(matches!(
        w.dial("c1", "5551230001").await,
        Destination::Authorized(_)
    ));
    w.accept("c1").await;
    let accepted = w.now();
    let rec = w
        .store
        .start_recording(NewRecording {
            session_id: "c1",
            facility_id: "F1",
            path: "2026/03/02/c1.wav",
            format: "wav-pcmu",
            node_id: "n1",
            started_at: accepted,
        })
        .await
        .unwrap();
    w.debit("c1", 1, "0.06").await;
    w.advance(60);
    w.debit("c1", 2, "0.06").await;
    // The third increment is refused at +120 s (the account is short): the cut.
    let cut_at = accepted + chrono::Duration::milliseconds(120_030);
    cdr::record_media_end(w.store.db(), "c1", "funds_exhausted", cut_at)
        .await
        .unwrap();
    let live = w.cdr("c1").await;
    assert_eq!(live.state, "active", "still up: the notice plays");
    assert_eq!(live.end_reason.as_deref(), Some("funds_exhausted"));
    assert_eq!(live.media_end_at, Some(cut_at));
    // The first cut stands.
    cdr::record_media_end(w.store.db(), "c1", "caller_hangup", cut_at + secs(1))
        .await
        .unwrap();
    // Killed at +121.2 s; the recording, repaired at restart, ran to its last flush.
    let finished = FinishedRecording {
        ended_at: accepted + chrono::Duration::milliseconds(121_000),
        duration_ms: 121_000,
        bytes: 44 + 121 * 16_000,
        sha256: "0".repeat(64),
        dropped_packets: 0,
        complete: false,
    };
    w.store.finish_recording(&rec, &finished).await.unwrap();

    // Another session of the same node, not being cut when the node died: `system`.
    let s = NewSession {
        id: "c2",
        facility_id: "F1",
        handset_id: None,
        dialed: "5551230001",
        node_id: "n1",
        sip_call_id: None,
    };
    cdr::open_call(w.store.db(), &s, w.now()).await.unwrap();

    let restart = accepted + secs(423);
    let closed = cdr::close_orphans(w.store.db(), "n1", restart)
        .await
        .unwrap();
    assert_eq!(closed, 2);
    let cdr = w.cdr("c1").await;
    assert_eq!(
        cdr.end_reason.as_deref(),
        Some("funds_exhausted"),
        "{cdr:?}"
    );
    assert_eq!((cdr.billed_increments, cdr.amount), (2, m("0.12")));
    assert_eq!(cdr.billed_until, Some(accepted + secs(120)));
    assert_eq!(cdr.media_end_at, Some(cut_at), "{cdr:?}");
    assert_eq!(
        cdr.end_at,
        Some(accepted + chrono::Duration::milliseconds(121_000)),
        "{cdr:?}"
    );
    assert_eq!(cdr.closed_at, Some(restart));
    assert_eq!(w.cdr("c2").await.end_reason.as_deref(), Some("system"));
    w.t.cleanup().await;
}

/// A call's timeline: the events written as they happened (a wrong then a valid PIN, the
/// checks, the announcement, a warning) merged with the record's times and the ledger's
/// debits (each with the balance after it), in time order; the events are append-only and
/// a late one after the end changes nothing.
async fn the_timeline_tells_the_call_in_order(w: World) {
    use sallyport::session::timeline::{add_call_event, call_events, call_timeline, CallEventKind};
    let db = w.store.db().clone();
    let invite = w.now();
    w.advance(4);
    add_call_event(&db, "t1", w.now(), CallEventKind::Pin, "wrong")
        .await
        .unwrap();
    assert!(
        call_events(&db, "t1").await.unwrap().is_empty(),
        "no event for a session that does not exist"
    );
    let d = w.dial("t1", "5551230001").await;
    assert!(matches!(d, Destination::Authorized(_)), "{d:?}");
    add_call_event(&db, "t1", w.now(), CallEventKind::Pin, "wrong")
        .await
        .unwrap();
    w.advance(5);
    add_call_event(&db, "t1", w.now(), CallEventKind::Pin, "valid")
        .await
        .unwrap();
    add_call_event(&db, "t1", w.now(), CallEventKind::Checks, "authorized")
        .await
        .unwrap();
    w.advance(6);
    add_call_event(&db, "t1", w.now(), CallEventKind::Announcement, "recorded")
        .await
        .unwrap();
    w.advance(3);
    w.accept("t1").await;
    let accepted = w.now();
    w.debit("t1", 1, "0.06").await;
    w.advance(60);
    w.debit("t1", 2, "0.06").await;
    w.advance(30);
    add_call_event(&db, "t1", w.now(), CallEventKind::Warning, "funds_low")
        .await
        .unwrap();
    w.advance(30);
    let cut = w.now();
    let end = cut + chrono::Duration::milliseconds(2_500);
    w.close("t1", EndReason::FundsExhausted, [cut, end, end], 2)
        .await;
    add_call_event(&db, "t1", end, CallEventKind::Warning, "max_duration")
        .await
        .unwrap();
    let events = call_events(&db, "t1").await.unwrap();
    assert_eq!(
        events.len(),
        5,
        "the late warning is not written: {events:?}"
    );
    let refused = sqlx::query("DELETE FROM call_events WHERE session_id = 't1'")
        .execute(db.pool())
        .await;
    assert!(refused.is_err(), "call events are append-only");

    let cdr = w.cdr("t1").await;
    let charges = w.store.ledger().session_charges("t1").await.unwrap();
    let timeline = call_timeline(&cdr, &events, &charges, None);
    let v = serde_json::to_value(&timeline).unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "invite",
            "pin",
            "pin",
            "checks",
            "announcement",
            "trunk_answer",
            "accepted",
            "increment",
            "increment",
            "warning",
            "cut",
            "ended"
        ],
        "{v}"
    );
    assert!(timeline[0].at >= invite);
    assert_eq!(v[1]["detail"], "wrong");
    assert_eq!(v[2]["detail"], "valid");
    assert_eq!(timeline[6].at, accepted);
    assert_eq!(
        (
            v[7]["increment"].clone(),
            v[7]["amount"].clone(),
            v[7]["balance_after"].clone()
        ),
        (json!(1), json!("0.06"), json!("0.94")),
        "{v}"
    );
    assert_eq!(v[8]["balance_after"], "0.88");
    assert_eq!(v[9]["detail"], "funds_low");
    assert_eq!(
        (v[10]["detail"].clone(), v[10]["by"].clone()),
        (json!("funds_exhausted"), json!("gateway"))
    );
    assert_eq!(timeline[10].at, cut);
    assert_eq!(timeline[11].at, end);
    w.t.cleanup().await;
}

/// One session per handset INVITE (RFC 3261 8.2.2.2: Call-ID, From tag, CSeq), whichever
/// node opens it: the INVITE a proxy failed over from a node that read it later is
/// refused there, naming the node that took it; the handset's authenticated retry (a
/// higher CSeq) and another call are new INVITEs; opened at once from two connections,
/// one wins. Forgotten after a day.
async fn one_session_per_handset_invite(w: World) {
    let session = |id: &'static str, node: &'static str| NewSession {
        id,
        facility_id: "F1",
        handset_id: None,
        dialed: "5551230001",
        node_id: node,
        sip_call_id: Some("c1@handset"),
    };
    let invite = cdr::InviteKey {
        call_id: "c1@handset",
        from_tag: "t1",
        cseq: 2,
    };
    let db = w.store.db();
    let opened = cdr::open_handset_call(db, &session("v1", "n2"), &invite, w.now()).await;
    assert_eq!(opened.unwrap(), cdr::Opened::Opened);
    let again = cdr::open_handset_call(db, &session("v2", "n1"), &invite, w.now()).await;
    assert_eq!(
        again.unwrap(),
        cdr::Opened::TakenBy {
            node_id: "n2".into(),
            session_id: "v1".into()
        }
    );
    assert!(w.store.call("v2").await.is_err(), "no second session");
    // Still refused once the first session has ended.
    let now = w.now();
    w.close("v1", EndReason::CallerHangup, [now, now, now], 0)
        .await;
    let after = cdr::open_handset_call(db, &session("v3", "n1"), &invite, w.now()).await;
    assert!(matches!(after.unwrap(), cdr::Opened::TakenBy { .. }));
    for (id, key) in [
        ("v4", cdr::InviteKey { cseq: 3, ..invite }),
        (
            "v5",
            cdr::InviteKey {
                from_tag: "t2",
                ..invite
            },
        ),
        (
            "v6",
            cdr::InviteKey {
                call_id: "c2@handset",
                ..invite
            },
        ),
    ] {
        let opened = cdr::open_handset_call(db, &session(id, "n1"), &key, w.now()).await;
        assert_eq!(opened.unwrap(), cdr::Opened::Opened, "{key:?}");
    }

    // Two at once (two nodes' connections on PostgreSQL; SQLite's writes take turns).
    let race = cdr::InviteKey {
        call_id: "c3@handset",
        ..invite
    };
    let (r1, r2) = (session("r1", "n1"), session("r2", "n2"));
    let (a, b) = tokio::join!(
        cdr::open_handset_call(db, &r1, &race, w.now()),
        cdr::open_handset_call(db, &r2, &race, w.now()),
    );
    let mut results = [a.unwrap(), b.unwrap()];
    results.sort_by_key(|r| *r != cdr::Opened::Opened);
    assert_eq!(results[0], cdr::Opened::Opened, "{results:?}");
    assert!(
        matches!(results[1], cdr::Opened::TakenBy { .. }),
        "{results:?}"
    );
    let live = [
        w.store.call("r1").await.is_ok(),
        w.store.call("r2").await.is_ok(),
    ];
    assert_eq!(live.iter().filter(|l| **l).count(), 1, "{live:?}");

    let forgotten = cdr::forget_invites_before(db, w.now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(forgotten, 5, "v1, v4, v5, v6 and the race's winner");
    w.t.cleanup().await;
}

macro_rules! battery {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::world(super::Backend::Sqlite).await.unwrap()).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { if let Some(w) = super::world(super::Backend::Postgres).await { super::$name(w).await } } )* }
    };
}

battery!(
    the_record_explains_its_charge,
    a_refused_call_shows_what_was_dialed,
    free_increments_are_billed_at_zero,
    a_crashed_call_ends_where_it_was_last_alive,
    a_crashed_unrecorded_call_ends_at_its_last_debit,
    a_cut_recorded_before_a_crash_survives_it,
    the_timeline_tells_the_call_in_order,
    one_session_per_handset_invite,
);
