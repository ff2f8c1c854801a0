//! The ledger battery: every test runs against SQLite and PostgreSQL (when
//! `SALLYPORT_TEST_DATABASE_URL` is set; skipped with a printed reason otherwise, failed
//! with `SALLYPORT_REQUIRE_EXTERNAL=1`), each on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use chrono::{DateTime, TimeZone, Utc};
use sallyport::clock::{Clock, ManualClock};
use sallyport::db::Db;
use sallyport::ledger::*;
use sallyport::money::Money;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

const FAC: &str = "F1";

/// `key` in the namespace of the one caller these tests are.
fn rk(key: &str) -> RequestKey {
    RequestKey::new("tests", key).unwrap()
}

/// A facility in America/Chicago with a $100 per-deposit and $200 per-day limit, its
/// system accounts, one inmate account, and a manual clock at 2026-01-15 12:00 UTC.
struct Fx {
    ledger: Ledger,
    clock: Arc<ManualClock>,
    db: Db,
    inmate: String,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()
}

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

async fn setup(db: Db) -> Fx {
    sqlx::query("INSERT INTO facilities (id, name, time_zone, deposit_max_minor, deposit_daily_max_minor, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(FAC).bind("County Jail").bind("America/Chicago").bind(1_000_000i64).bind(2_000_000i64).bind(0i64)
        .execute(db.pool()).await.unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let ledger = Ledger::new(db.clone(), clock.clone() as Arc<dyn Clock>);
    ledger.ensure_system_accounts(FAC).await.unwrap();
    let inmate = open_inmate(&db, "I1").await;
    Fx {
        ledger,
        clock,
        db,
        inmate,
    }
}

/// Opens an inmate account the way booking does: inside the caller's transaction.
async fn open_inmate(db: &Db, owner: &str) -> String {
    let mut tx = db.begin().await.unwrap();
    let id = Ledger::open_account_in(
        &mut tx,
        AccountKind::Inmate,
        Some(FAC),
        Some(owner),
        "inmate",
        t0(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

fn dep(account: &str, method: DepositMethod, amount: &str) -> DepositRequest {
    DepositRequest {
        account_id: account.into(),
        method,
        amount: m(amount),
        depositor: "Jane Doe".into(),
        reference: "ref-1".into(),
    }
}

fn debit(account: &str, session: &str, increment: u32, amount: &str) -> SessionDebit {
    SessionDebit {
        session_id: session.into(),
        increment,
        account_id: account.into(),
        amount: m(amount),
        service: Service::Audio,
        facility_id: FAC.into(),
    }
}

fn purchase(account: &str, amount: &str, order: &str) -> PurchaseRequest {
    PurchaseRequest {
        account_id: account.into(),
        amount: m(amount),
        reference: order.into(),
        memo: "snacks".into(),
    }
}

fn refund(account: &str, amount: &str) -> RefundRequest {
    RefundRequest {
        account_id: account.into(),
        amount: m(amount),
        reference: "call-9".into(),
        memo: "dropped call".into(),
    }
}

async fn bal(f: &Fx, id: &str) -> Money {
    f.ledger.account(id).await.unwrap().balance
}

async fn sys(f: &Fx, a: SystemAccount) -> Money {
    bal(f, &a.id(FAC)).await
}

/// Everything a replay must leave unchanged.
#[derive(Debug, PartialEq)]
struct Snapshot {
    balances: Vec<(String, i64, String)>,
    entries: i64,
    transactions: i64,
    deposits: Vec<(String, String)>,
    keys: i64,
}

async fn snapshot(db: &Db) -> Snapshot {
    let p = db.pool();
    let balances = sqlx::query("SELECT id, balance_minor, status FROM accounts ORDER BY id")
        .fetch_all(p)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let deposits = sqlx::query("SELECT id, status FROM deposits ORDER BY id")
        .fetch_all(p)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let n = |t: &'static str| async move {
        sqlx::query(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(p)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    Snapshot {
        balances,
        entries: n("ledger_entries").await,
        transactions: n("ledger_transactions").await,
        deposits,
        keys: n("idempotency_keys").await,
    }
}

async fn healthy(f: &Fx) {
    let r = f.ledger.check_invariants().await.unwrap();
    assert!(r.is_healthy(), "{:?}", r.violations);
    assert_eq!(r.ledger_total, Money::ZERO);
}

// ---------------------------------------------------------------------------------------

async fn deposits_each_method(db: Db) {
    let f = setup(db).await;
    let online = f
        .ledger
        .deposit(&rk("k1"), dep(&f.inmate, DepositMethod::Online, "25.50"))
        .await
        .unwrap();
    assert_eq!(online.status, DepositStatus::Posted);
    assert!(online.transaction_id.is_some());
    assert_eq!(online.local_day.to_string(), "2026-01-15");
    let kiosk = f
        .ledger
        .deposit(&rk("k2"), dep(&f.inmate, DepositMethod::Kiosk, "10"))
        .await
        .unwrap();
    assert_eq!(kiosk.status, DepositStatus::Posted);
    let mo = f
        .ledger
        .deposit(
            &rk("k3"),
            dep(&f.inmate, DepositMethod::MoneyOrder, "40.00"),
        )
        .await
        .unwrap();
    assert_eq!(mo.status, DepositStatus::Pending);
    assert_eq!(mo.transaction_id, None);
    assert_eq!(bal(&f, &f.inmate).await, m("35.50"));
    assert_eq!(sys(&f, SystemAccount::DepositsClearing).await, m("-35.50"));
    let json = serde_json::to_value(&online).unwrap();
    assert_eq!(json["amount"], "25.50");
    assert_eq!(json["method"], "online");
    healthy(&f).await;
}

async fn money_order_post_and_void(db: Db) {
    let f = setup(db).await;
    let a = f
        .ledger
        .deposit(&rk("mo-a"), dep(&f.inmate, DepositMethod::MoneyOrder, "40"))
        .await
        .unwrap();
    let b = f
        .ledger
        .deposit(&rk("mo-b"), dep(&f.inmate, DepositMethod::MoneyOrder, "15"))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(3600));
    let posted = f
        .ledger
        .post_money_order(&rk("post-a"), &a.id, "staff-1")
        .await
        .unwrap();
    assert_eq!(posted.status, DepositStatus::Posted);
    assert_eq!(posted.decided_by.as_deref(), Some("staff-1"));
    assert!(posted.transaction_id.is_some());
    assert_eq!(bal(&f, &f.inmate).await, m("40"));
    let voided = f
        .ledger
        .void_money_order(&rk("void-b"), &b.id, "staff-1")
        .await
        .unwrap();
    assert_eq!(voided.status, DepositStatus::Voided);
    assert_eq!(voided.transaction_id, None);
    assert_eq!(bal(&f, &f.inmate).await, m("40"));
    // Posting twice, posting a voided one, voiding a posted one: refused.
    let e = f
        .ledger
        .post_money_order(&rk("post-a2"), &a.id, "staff-1")
        .await
        .unwrap_err();
    assert!(
        matches!(e, LedgerError::InvalidState { action: "post", .. }),
        "{e:?}"
    );
    let e = f
        .ledger
        .post_money_order(&rk("post-b"), &b.id, "staff-1")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::InvalidState { .. }), "{e:?}");
    let e = f
        .ledger
        .void_money_order(&rk("void-a"), &a.id, "staff-1")
        .await
        .unwrap_err();
    assert!(
        matches!(e, LedgerError::InvalidState { action: "void", .. }),
        "{e:?}"
    );
    let online = f
        .ledger
        .deposit(&rk("on"), dep(&f.inmate, DepositMethod::Online, "1"))
        .await
        .unwrap();
    let e = f
        .ledger
        .post_money_order(&rk("post-on"), &online.id, "staff-1")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::InvalidState { .. }), "{e:?}");
    let e = f
        .ledger
        .post_money_order(&rk("post-x"), "nope", "staff-1")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::DepositNotFound { .. }), "{e:?}");
    assert_eq!(bal(&f, &f.inmate).await, m("41"));
    healthy(&f).await;
}

async fn deposit_validation(db: Db) {
    let f = setup(db).await;
    for bad in ["0", "-5", "1.001", "0.0001"] {
        let e = f
            .ledger
            .deposit(&rk("v"), dep(&f.inmate, DepositMethod::Online, bad))
            .await
            .unwrap_err();
        assert!(
            matches!(e, LedgerError::InvalidAmount { .. }),
            "{bad}: {e:?}"
        );
    }
    let e = f
        .ledger
        .deposit(&rk("v"), dep("missing", DepositMethod::Online, "1"))
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::AccountNotFound { .. }), "{e:?}");
    let clearing = SystemAccount::DepositsClearing.id(FAC);
    let e = f
        .ledger
        .deposit(&rk("v"), dep(&clearing, DepositMethod::Online, "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            LedgerError::WrongAccountKind {
                kind: AccountKind::System,
                ..
            }
        ),
        "{e:?}"
    );
    // The key was never stored: it works now.
    f.ledger
        .deposit(&rk("v"), dep(&f.inmate, DepositMethod::Online, "1.10"))
        .await
        .unwrap();
    assert_eq!(bal(&f, &f.inmate).await, m("1.10"));
    healthy(&f).await;
}

async fn per_deposit_limit(db: Db) {
    let f = setup(db).await;
    let e = f
        .ledger
        .deposit(&rk("big"), dep(&f.inmate, DepositMethod::Online, "100.01"))
        .await
        .unwrap_err();
    match e {
        LedgerError::LimitExceeded {
            limit,
            limit_amount,
            attempted,
            ..
        } => {
            assert_eq!(limit, DepositLimit::PerDeposit);
            assert_eq!(limit_amount, m("100"));
            assert_eq!(attempted, m("100.01"));
        }
        e => panic!("{e:?}"),
    }
    let e = f
        .ledger
        .deposit(
            &rk("big2"),
            dep(&f.inmate, DepositMethod::MoneyOrder, "500"),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        LedgerError::LimitExceeded {
            limit: DepositLimit::PerDeposit,
            ..
        }
    ));
    f.ledger
        .deposit(&rk("big"), dep(&f.inmate, DepositMethod::Online, "100.00"))
        .await
        .unwrap();
    assert_eq!(bal(&f, &f.inmate).await, m("100"));
    assert_eq!(
        snapshot(&f.db).await.keys,
        1,
        "refused deposits store no key"
    );
    healthy(&f).await;
}

async fn per_day_limit_follows_facility_midnight(db: Db) {
    let f = setup(db).await;
    // 17:00 in Chicago on Jan 15.
    f.clock
        .set_wall(Utc.with_ymd_and_hms(2026, 1, 15, 23, 0, 0).unwrap());
    f.ledger
        .deposit(&rk("d1"), dep(&f.inmate, DepositMethod::Online, "100"))
        .await
        .unwrap();
    f.ledger
        .deposit(&rk("d2"), dep(&f.inmate, DepositMethod::MoneyOrder, "50"))
        .await
        .unwrap();
    // Already Jan 16 in UTC, still Jan 15 (19:00) in Chicago: the pending money order counts.
    f.clock
        .set_wall(Utc.with_ymd_and_hms(2026, 1, 16, 1, 0, 0).unwrap());
    let e = f
        .ledger
        .deposit(&rk("d3"), dep(&f.inmate, DepositMethod::Kiosk, "60"))
        .await
        .unwrap_err();
    match e {
        LedgerError::LimitExceeded {
            limit,
            limit_amount,
            remaining,
            attempted,
        } => {
            assert_eq!(
                (limit, limit_amount, remaining, attempted),
                (DepositLimit::PerDay, m("200"), m("50"), m("60"))
            );
        }
        e => panic!("{e:?}"),
    }
    let d = f
        .ledger
        .deposit(&rk("d4"), dep(&f.inmate, DepositMethod::Kiosk, "50"))
        .await
        .unwrap();
    assert_eq!(d.local_day.to_string(), "2026-01-15");
    let e = f
        .ledger
        .deposit(&rk("d5"), dep(&f.inmate, DepositMethod::Kiosk, "0.01"))
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        LedgerError::LimitExceeded {
            limit: DepositLimit::PerDay,
            ..
        }
    ));
    // 23:59 local: still refused. 00:01 local Jan 16: a new day.
    f.clock
        .set_wall(Utc.with_ymd_and_hms(2026, 1, 16, 5, 59, 0).unwrap());
    assert!(f
        .ledger
        .deposit(&rk("d6"), dep(&f.inmate, DepositMethod::Kiosk, "0.01"))
        .await
        .is_err());
    f.clock
        .set_wall(Utc.with_ymd_and_hms(2026, 1, 16, 6, 1, 0).unwrap());
    let d = f
        .ledger
        .deposit(&rk("d6"), dep(&f.inmate, DepositMethod::Kiosk, "100"))
        .await
        .unwrap();
    assert_eq!(d.local_day.to_string(), "2026-01-16");
    healthy(&f).await;
}

async fn voided_money_order_frees_the_daily_limit(db: Db) {
    let f = setup(db).await;
    let mo = f
        .ledger
        .deposit(&rk("mo"), dep(&f.inmate, DepositMethod::MoneyOrder, "100"))
        .await
        .unwrap();
    f.ledger
        .deposit(&rk("d1"), dep(&f.inmate, DepositMethod::Online, "100"))
        .await
        .unwrap();
    assert!(f
        .ledger
        .deposit(&rk("d2"), dep(&f.inmate, DepositMethod::Online, "1"))
        .await
        .is_err());
    f.ledger
        .void_money_order(&rk("v"), &mo.id, "staff")
        .await
        .unwrap();
    f.ledger
        .deposit(&rk("d2"), dep(&f.inmate, DepositMethod::Online, "100"))
        .await
        .unwrap();
    assert_eq!(bal(&f, &f.inmate).await, m("200"));
    healthy(&f).await;
}

async fn every_method_replays(db: Db) {
    let f = setup(db).await;
    let other = open_inmate(&f.db, "I2").await;
    let d = f
        .ledger
        .deposit(&rk("dep"), dep(&f.inmate, DepositMethod::Online, "50"))
        .await
        .unwrap();
    let mo = f
        .ledger
        .deposit(&rk("mo1"), dep(&f.inmate, DepositMethod::MoneyOrder, "20"))
        .await
        .unwrap();
    let mo2 = f
        .ledger
        .deposit(&rk("mo2"), dep(&f.inmate, DepositMethod::MoneyOrder, "5"))
        .await
        .unwrap();
    let post = f
        .ledger
        .post_money_order(&rk("post"), &mo.id, "s")
        .await
        .unwrap();
    let void = f
        .ledger
        .void_money_order(&rk("void"), &mo2.id, "s")
        .await
        .unwrap();
    let p = f
        .ledger
        .purchase(&rk("buy"), purchase(&f.inmate, "7.25", "o1"))
        .await
        .unwrap();
    let r = f
        .ledger
        .refund(&rk("ref"), refund(&f.inmate, "1.0021"))
        .await
        .unwrap();
    let db1 = f
        .ledger
        .debit_session(debit(&f.inmate, "s1", 1, "0.21"))
        .await
        .unwrap();
    f.ledger
        .deposit(&rk("dep-o"), dep(&other, DepositMethod::Kiosk, "3"))
        .await
        .unwrap();
    let rel = f.ledger.release(&rk("rel"), &other).await.unwrap();
    let before = snapshot(&f.db).await;
    f.clock.advance(Duration::from_secs(86_400 * 3));
    assert_eq!(
        f.ledger
            .deposit(&rk("dep"), dep(&f.inmate, DepositMethod::Online, "50"))
            .await
            .unwrap(),
        d
    );
    assert_eq!(
        f.ledger
            .deposit(&rk("mo1"), dep(&f.inmate, DepositMethod::MoneyOrder, "20"))
            .await
            .unwrap(),
        mo,
        "first answer: pending"
    );
    assert_eq!(
        f.ledger
            .post_money_order(&rk("post"), &mo.id, "s")
            .await
            .unwrap(),
        post
    );
    assert_eq!(
        f.ledger
            .void_money_order(&rk("void"), &mo2.id, "s")
            .await
            .unwrap(),
        void
    );
    assert_eq!(
        f.ledger
            .purchase(&rk("buy"), purchase(&f.inmate, "7.25", "o1"))
            .await
            .unwrap(),
        p
    );
    assert_eq!(
        f.ledger
            .refund(&rk("ref"), refund(&f.inmate, "1.0021"))
            .await
            .unwrap(),
        r
    );
    let DebitOutcome::Committed {
        transaction_id,
        balance_after,
    } = db1
    else {
        panic!("{db1:?}")
    };
    assert_eq!(
        f.ledger
            .debit_session(debit(&f.inmate, "s1", 1, "0.21"))
            .await
            .unwrap(),
        DebitOutcome::AlreadyCommitted {
            transaction_id,
            balance_after
        }
    );
    assert_eq!(f.ledger.release(&rk("rel"), &other).await.unwrap(), rel);
    assert_eq!(snapshot(&f.db).await, before, "replays changed nothing");
    assert_eq!(
        bal(&f, &f.inmate).await,
        m("50") + m("20") - m("7.25") + m("1.0021") - m("0.21")
    );
    healthy(&f).await;
}

async fn same_key_different_request_conflicts(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("k"), dep(&f.inmate, DepositMethod::Online, "50"))
        .await
        .unwrap();
    let before = snapshot(&f.db).await;
    let conflict = |e: LedgerError| {
        assert!(
            matches!(&e, LedgerError::IdempotencyConflict { key } if key == "k"),
            "{e:?}"
        )
    };
    conflict(
        f.ledger
            .deposit(&rk("k"), dep(&f.inmate, DepositMethod::Online, "51"))
            .await
            .unwrap_err(),
    );
    conflict(
        f.ledger
            .deposit(&rk("k"), dep(&f.inmate, DepositMethod::Kiosk, "50"))
            .await
            .unwrap_err(),
    );
    conflict(
        f.ledger
            .purchase(&rk("k"), purchase(&f.inmate, "1", "o"))
            .await
            .unwrap_err(),
    );
    conflict(
        f.ledger
            .refund(&rk("k"), refund(&f.inmate, "1"))
            .await
            .unwrap_err(),
    );
    conflict(f.ledger.release(&rk("k"), &f.inmate).await.unwrap_err());
    conflict(
        f.ledger
            .post_money_order(&rk("k"), "x", "s")
            .await
            .unwrap_err(),
    );
    // "50" and "50.00" are the same request.
    f.ledger
        .deposit(&rk("k"), dep(&f.inmate, DepositMethod::Online, "50.00"))
        .await
        .unwrap();
    f.ledger
        .purchase(&rk("p"), purchase(&f.inmate, "1", "o"))
        .await
        .unwrap();
    let before2 = snapshot(&f.db).await;
    conflict_p(
        f.ledger
            .purchase(&rk("p"), purchase(&f.inmate, "1", "o2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(snapshot(&f.db).await, before2);
    assert_ne!(before, before2);
    healthy(&f).await;
}

fn conflict_p(e: LedgerError) {
    assert!(
        matches!(e, LedgerError::IdempotencyConflict { .. }),
        "{e:?}"
    );
}

async fn refused_request_keeps_key_free(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "5"))
        .await
        .unwrap();
    let before = snapshot(&f.db).await;
    let e = f
        .ledger
        .purchase(&rk("buy"), purchase(&f.inmate, "6", "o"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, LedgerError::InsufficientFunds { balance, amount } if balance == m("5") && amount == m("6")),
        "{e:?}"
    );
    assert_eq!(
        snapshot(&f.db).await,
        before,
        "refused purchase wrote nothing"
    );
    f.ledger
        .deposit(&rk("d2"), dep(&f.inmate, DepositMethod::Online, "5"))
        .await
        .unwrap();
    let p = f
        .ledger
        .purchase(&rk("buy"), purchase(&f.inmate, "6", "o"))
        .await
        .unwrap();
    assert_eq!(p.balance_after, m("4"));
    assert_eq!(p.counter_account_id, SystemAccount::Commissary.id(FAC));
    assert_eq!(sys(&f, SystemAccount::Commissary).await, m("6"));
    healthy(&f).await;
}

async fn debit_retry_is_a_noop(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "1"))
        .await
        .unwrap();
    let first = f
        .ledger
        .debit_session(debit(&f.inmate, "call-1", 1, "0.2100"))
        .await
        .unwrap();
    assert!(
        matches!(first, DebitOutcome::Committed { balance_after, .. } if balance_after == m("0.79"))
    );
    let before = snapshot(&f.db).await;
    for _ in 0..3 {
        let again = f
            .ledger
            .debit_session(debit(&f.inmate, "call-1", 1, "0.21"))
            .await
            .unwrap();
        assert!(
            matches!(again, DebitOutcome::AlreadyCommitted { balance_after, .. } if balance_after == m("0.79"))
        );
    }
    assert_eq!(snapshot(&f.db).await, before);
    // Same increment, different amount: a caller bug, refused.
    let e = f
        .ledger
        .debit_session(debit(&f.inmate, "call-1", 1, "0.22"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, LedgerError::IdempotencyConflict { .. }),
        "{e:?}"
    );
    f.ledger
        .debit_session(debit(&f.inmate, "call-1", 2, "0.21"))
        .await
        .unwrap();
    f.ledger
        .debit_session(debit(&f.inmate, "call-2", 1, "0.21"))
        .await
        .unwrap();
    assert_eq!(bal(&f, &f.inmate).await, m("0.37"));
    assert_eq!(sys(&f, SystemAccount::CallRevenue).await, m("0.63"));
    healthy(&f).await;
}

async fn refused_debit_writes_nothing(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "0.50"))
        .await
        .unwrap();
    f.ledger
        .debit_session(debit(&f.inmate, "c", 1, "0.30"))
        .await
        .unwrap();
    let before = snapshot(&f.db).await;
    let out = f
        .ledger
        .debit_session(debit(&f.inmate, "c", 2, "0.30"))
        .await
        .unwrap();
    assert_eq!(out, DebitOutcome::Refused { balance: m("0.20") });
    assert_eq!(snapshot(&f.db).await, before);
    // The increment was not consumed: after a deposit it can be charged.
    f.ledger
        .deposit(&rk("d2"), dep(&f.inmate, DepositMethod::Online, "1"))
        .await
        .unwrap();
    let out = f
        .ledger
        .debit_session(debit(&f.inmate, "c", 2, "0.30"))
        .await
        .unwrap();
    assert!(
        matches!(out, DebitOutcome::Committed { balance_after, .. } if balance_after == m("0.90"))
    );
    // Exactly the balance is affordable.
    let out = f
        .ledger
        .debit_session(debit(&f.inmate, "c", 3, "0.90"))
        .await
        .unwrap();
    assert!(
        matches!(out, DebitOutcome::Committed { balance_after, .. } if balance_after.is_zero())
    );
    healthy(&f).await;
}

async fn debits_by_service_and_bad_accounts(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "10"))
        .await
        .unwrap();
    let mut v = debit(&f.inmate, "visit-1", 1, "0.50");
    v.service = Service::Video;
    f.ledger.debit_session(v).await.unwrap();
    assert_eq!(sys(&f, SystemAccount::VisitRevenue).await, m("0.50"));
    assert_eq!(sys(&f, SystemAccount::CallRevenue).await, Money::ZERO);
    let e = f
        .ledger
        .debit_session(debit("ghost", "x", 1, "1"))
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::AccountNotFound { .. }), "{e:?}");
    let e = f
        .ledger
        .debit_session(debit(&f.inmate, "x", 1, "-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            LedgerError::InvalidAmount {
                rule: AmountRule::Negative,
                ..
            }
        ),
        "{e:?}"
    );
    let mut wrong = debit(&f.inmate, "x", 1, "1");
    wrong.facility_id = "NOFAC".into();
    let e = f.ledger.debit_session(wrong).await.unwrap_err();
    assert!(
        matches!(&e, LedgerError::AccountNotFound { id } if id == "sys:NOFAC:call_revenue"),
        "{e:?}"
    );
    // A zero-rate increment is recorded as billed at no charge.
    let out = f
        .ledger
        .debit_session(debit(&f.inmate, "free", 1, "0"))
        .await
        .unwrap();
    assert!(
        matches!(out, DebitOutcome::Committed { balance_after, .. } if balance_after == m("9.50"))
    );
    healthy(&f).await;
}

async fn purchase_and_refund(db: Db) {
    let f = setup(db).await;
    let e = f
        .ledger
        .purchase(&rk("p0"), purchase(&f.inmate, "0.01", "o"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, LedgerError::InsufficientFunds { balance, .. } if balance.is_zero()),
        "{e:?}"
    );
    let e = f
        .ledger
        .purchase(&rk("p0"), purchase(&f.inmate, "0", "o"))
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::InvalidAmount { .. }), "{e:?}");
    let r = f
        .ledger
        .refund(&rk("r1"), refund(&f.inmate, "2.50"))
        .await
        .unwrap();
    assert_eq!(r.kind, TransactionKind::Refund);
    assert_eq!(r.balance_after, m("2.50"));
    assert_eq!(r.counter_account_id, SystemAccount::Refunds.id(FAC));
    assert_eq!(sys(&f, SystemAccount::Refunds).await, m("-2.50"));
    let p = f
        .ledger
        .purchase(&rk("p1"), purchase(&f.inmate, "2.50", "o1"))
        .await
        .unwrap();
    assert_eq!(
        (p.kind, p.balance_after),
        (TransactionKind::Purchase, Money::ZERO)
    );
    let e = f
        .ledger
        .refund(&rk("r2"), refund(&f.inmate, "-1"))
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::InvalidAmount { .. }), "{e:?}");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["amount"], "2.50");
    healthy(&f).await;
}

async fn release_refunds_and_closes(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "30"))
        .await
        .unwrap();
    let mo = f
        .ledger
        .deposit(&rk("mo"), dep(&f.inmate, DepositMethod::MoneyOrder, "10"))
        .await
        .unwrap();
    f.ledger
        .debit_session(debit(&f.inmate, "c", 1, "4.25"))
        .await
        .unwrap();
    let rel = f.ledger.release(&rk("rel"), &f.inmate).await.unwrap();
    assert_eq!(rel.refunded, m("25.75"));
    assert!(rel.transaction_id.is_some());
    assert_eq!(
        rel.payable_account_id,
        SystemAccount::RefundsPayable.id(FAC)
    );
    let acct = f.ledger.account(&f.inmate).await.unwrap();
    assert_eq!(
        (acct.status, acct.balance),
        (AccountStatus::Closed, Money::ZERO)
    );
    assert_eq!(acct.closed_at, Some(t0()));
    assert_eq!(sys(&f, SystemAccount::RefundsPayable).await, m("25.75"));
    let closed = |e: LedgerError| assert!(matches!(e, LedgerError::AccountClosed { .. }), "{e:?}");
    closed(
        f.ledger
            .deposit(&rk("d2"), dep(&f.inmate, DepositMethod::Online, "1"))
            .await
            .unwrap_err(),
    );
    closed(
        f.ledger
            .debit_session(debit(&f.inmate, "c", 2, "0.10"))
            .await
            .unwrap_err(),
    );
    closed(
        f.ledger
            .debit_session(debit(&f.inmate, "c2", 1, "0"))
            .await
            .unwrap_err(),
    );
    closed(
        f.ledger
            .purchase(&rk("p"), purchase(&f.inmate, "1", "o"))
            .await
            .unwrap_err(),
    );
    closed(
        f.ledger
            .refund(&rk("r"), refund(&f.inmate, "1"))
            .await
            .unwrap_err(),
    );
    closed(f.ledger.release(&rk("rel2"), &f.inmate).await.unwrap_err());
    closed(
        f.ledger
            .post_money_order(&rk("post"), &mo.id, "s")
            .await
            .unwrap_err(),
    );
    // The pending money order can still be voided (returned to the sender).
    f.ledger
        .void_money_order(&rk("void"), &mo.id, "s")
        .await
        .unwrap();
    // Releasing an empty account closes it without a transaction.
    let empty = open_inmate(&f.db, "I3").await;
    let rel = f.ledger.release(&rk("rel3"), &empty).await.unwrap();
    assert_eq!((rel.refunded, rel.transaction_id), (Money::ZERO, None));
    healthy(&f).await;
}

async fn statement_lines_range_and_csv(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d1"), dep(&f.inmate, DepositMethod::Online, "20"))
        .await
        .unwrap(); // Jan 15 12:00
    f.clock.advance(Duration::from_secs(3600));
    f.ledger
        .debit_session(debit(&f.inmate, "c", 1, "1.05"))
        .await
        .unwrap(); // 13:00
    f.clock.advance(Duration::from_secs(3600));
    f.ledger
        .purchase(
            &rk("p"),
            PurchaseRequest {
                memo: "=cmd, \"x\"".into(),
                ..purchase(&f.inmate, "3", "o1")
            },
        )
        .await
        .unwrap(); // 14:00
    f.clock.advance(Duration::from_secs(3600));
    f.ledger
        .refund(&rk("r"), refund(&f.inmate, "0.5"))
        .await
        .unwrap(); // 15:00
    let h = |hour| Utc.with_ymd_and_hms(2026, 1, 15, hour, 0, 0).unwrap();
    let all = f.ledger.statement(&f.inmate, h(0), h(23)).await.unwrap();
    assert_eq!(all.opening_balance, Money::ZERO);
    let amounts: Vec<_> = all
        .lines
        .iter()
        .map(|l| (l.kind, l.amount.to_string(), l.balance_after.to_string()))
        .collect();
    assert_eq!(
        amounts,
        vec![
            (TransactionKind::Deposit, "20.00".into(), "20.00".into()),
            (TransactionKind::CallCharge, "-1.05".into(), "18.95".into()),
            (TransactionKind::Purchase, "-3.00".into(), "15.95".into()),
            (TransactionKind::Refund, "0.50".into(), "16.45".into()),
        ]
    );
    assert_eq!(all.closing_balance, bal(&f, &f.inmate).await);
    // [13:00, 15:00): the debit and the purchase; opening = after the deposit.
    let mid = f.ledger.statement(&f.inmate, h(13), h(15)).await.unwrap();
    assert_eq!(mid.opening_balance, m("20"));
    assert_eq!(mid.lines.len(), 2);
    assert_eq!(mid.closing_balance, m("15.95"));
    let csv = mid.to_csv();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], Statement::CSV_HEADER);
    assert_eq!(rows.len(), 3);
    assert!(
        rows[1].starts_with(&format!(
            "{},2026-01-15T13:00:00.000000Z,call_charge,",
            mid.lines[0].transaction_id
        )),
        "{}",
        rows[1]
    );
    assert!(rows[1].ends_with(",-1.05,18.95"), "{}", rows[1]);
    assert!(
        rows[2].contains(",\"commissary order o1: =cmd, \"\"x\"\"\",-3.00,15.95"),
        "{}",
        rows[2]
    );
    let empty = f.ledger.statement(&f.inmate, h(20), h(21)).await.unwrap();
    assert!(empty.lines.is_empty());
    assert_eq!(empty.opening_balance, m("16.45"));
    assert_eq!(empty.to_csv().lines().count(), 1);
    let rev = f
        .ledger
        .statement(&SystemAccount::CallRevenue.id(FAC), h(0), h(23))
        .await
        .unwrap();
    assert_eq!(rev.closing_balance, m("1.05"));
    let e = f.ledger.statement("nope", h(0), h(1)).await.unwrap_err();
    assert!(matches!(e, LedgerError::AccountNotFound { .. }));
    healthy(&f).await;
}

async fn system_accounts_and_opening(db: Db) {
    let f = setup(db).await;
    f.ledger.ensure_system_accounts(FAC).await.unwrap();
    let e = f.ledger.ensure_system_accounts("NOFAC").await.unwrap_err();
    assert!(matches!(e, LedgerError::FacilityNotFound { .. }), "{e:?}");
    for s in SystemAccount::ALL {
        let a = f.ledger.account(&s.id(FAC)).await.unwrap();
        assert_eq!(
            (a.kind, a.balance, a.facility_id.as_deref()),
            (AccountKind::System, Money::ZERO, Some(FAC))
        );
    }
    let a = f.ledger.account(&f.inmate).await.unwrap();
    assert_eq!(
        (a.kind, a.status, a.owner_id.as_deref()),
        (AccountKind::Inmate, AccountStatus::Open, Some("I1"))
    );
    let fam = f
        .ledger
        .open_account(AccountKind::Family, Some(FAC), Some("user-7"), "family")
        .await
        .unwrap();
    f.ledger
        .deposit(&rk("fd"), dep(&fam, DepositMethod::Online, "12"))
        .await
        .unwrap();
    assert_eq!(bal(&f, &fam).await, m("12"));
    let e = f
        .ledger
        .open_account(AccountKind::System, Some(FAC), None, "x")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::WrongAccountKind { .. }), "{e:?}");
    let e = f
        .ledger
        .open_account(AccountKind::Inmate, None, None, "x")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::NoFacility { .. }), "{e:?}");
    let nofac = f
        .ledger
        .open_account(AccountKind::Family, None, Some("u"), "x")
        .await
        .unwrap();
    let e = f
        .ledger
        .deposit(&rk("nf"), dep(&nofac, DepositMethod::Online, "1"))
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::NoFacility { .. }), "{e:?}");
    assert!(matches!(
        f.ledger.account("ghost").await,
        Err(LedgerError::AccountNotFound { .. })
    ));
    healthy(&f).await;
}

async fn invariants_report_corruption(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "10"))
        .await
        .unwrap();
    healthy(&f).await;
    // Someone edits a balance behind the ledger's back.
    sqlx::query("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE id = $1")
        .bind(&f.inmate)
        .execute(f.db.pool())
        .await
        .unwrap();
    // And writes an unbalanced transaction (inserts are allowed, updates are not).
    let id: i64 = sqlx::query(
        "INSERT INTO ledger_transactions (kind, created_at) VALUES ('refund', 0) RETURNING id",
    )
    .fetch_one(f.db.pool())
    .await
    .unwrap()
    .get(0);
    sqlx::query("INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, created_at) VALUES ($1, $2, 5, 0)")
        .bind(id).bind(SystemAccount::Refunds.id(FAC)).execute(f.db.pool()).await.unwrap();
    let r = f.ledger.check_invariants().await.unwrap();
    let has = |p: &dyn Fn(&Violation) -> bool| r.violations.iter().any(p);
    assert!(
        has(
            &|v| matches!(v, Violation::BalanceMismatch { account_id, .. } if *account_id == f.inmate)
        ),
        "{:?}",
        r.violations
    );
    assert!(has(&|v| matches!(
        v,
        Violation::BalanceAfterMismatch { .. }
    )));
    assert!(has(
        &|v| matches!(v, Violation::UnbalancedTransaction { transaction_id, .. } if *transaction_id == id)
    ));
    assert!(has(&|v| matches!(
        v,
        Violation::IncompleteTransaction { .. }
    )));
    assert!(has(
        &|v| matches!(v, Violation::LedgerNotZero { sum } if *sum == Money::from_minor(5))
    ));
    // The append-only triggers hold.
    assert!(sqlx::query("DELETE FROM ledger_entries")
        .execute(f.db.pool())
        .await
        .is_err());
}

async fn concurrent_debits_cannot_overspend(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "2.10"))
        .await
        .unwrap();
    let tasks: Vec<_> = (1..=50u32)
        .map(|i| {
            let ledger = f.ledger.clone();
            let d = debit(&f.inmate, "call-c", i, "0.21");
            tokio::spawn(async move { ledger.debit_session(d).await })
        })
        .collect();
    let (mut committed, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap().unwrap() {
            DebitOutcome::Committed { .. } => committed += 1,
            DebitOutcome::Refused { .. } => refused += 1,
            o => panic!("{o:?}"),
        }
    }
    assert_eq!((committed, refused), (10, 40));
    assert_eq!(bal(&f, &f.inmate).await, Money::ZERO);
    assert_eq!(sys(&f, SystemAccount::CallRevenue).await, m("2.10"));
    healthy(&f).await;
}

async fn concurrent_duplicate_deposits_post_once(db: Db) {
    let f = setup(db).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let ledger = f.ledger.clone();
            let req = dep(&f.inmate, DepositMethod::Online, "12.34");
            tokio::spawn(async move { ledger.deposit(&rk("same-key"), req).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert!(results.iter().all(|r| *r == results[0]));
    assert_eq!(bal(&f, &f.inmate).await, m("12.34"));
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM deposits")
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    healthy(&f).await;
}

async fn concurrent_mixed_spenders(db: Db) {
    let f = setup(db).await;
    f.ledger
        .deposit(&rk("d"), dep(&f.inmate, DepositMethod::Online, "10"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..30u32 {
        let ledger = f.ledger.clone();
        let acct = f.inmate.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => matches!(
                    ledger
                        .debit_session(debit(&acct, "mix", i, "1"))
                        .await
                        .unwrap(),
                    DebitOutcome::Committed { .. }
                ),
                1 => ledger
                    .purchase(&rk(&format!("p{i}")), purchase(&acct, "1", "o"))
                    .await
                    .is_ok(),
                _ => ledger
                    .debit_session(debit(&acct, &format!("s{i}"), 1, "1"))
                    .await
                    .is_ok_and(|o| matches!(o, DebitOutcome::Committed { .. })),
            }
        }));
    }
    let mut spent = 0;
    for t in tasks {
        spent += i32::from(t.await.unwrap());
    }
    assert_eq!(spent, 10);
    assert_eq!(bal(&f, &f.inmate).await, Money::ZERO);
    healthy(&f).await;
}

/// Keys belong to their caller (issue 9, items 5 and 11): the same key and the same
/// request from two callers are two movements with two answers; every method keeps its
/// replay and its conflict per caller; the ledger transaction of each names its caller.
async fn keys_belong_to_their_caller(db: Db) {
    let f = setup(db).await;
    let admin = RequestKey::new("admin-token", "k").unwrap();
    let family = RequestKey::new("user:usr_family", "k").unwrap();
    let req = dep(&f.inmate, DepositMethod::Online, "40");
    let a = f.ledger.deposit(&admin, req.clone()).await.unwrap();
    let b = f.ledger.deposit(&family, req.clone()).await.unwrap();
    assert_ne!(
        a.id, b.id,
        "the family's own deposit, not the admin's receipt"
    );
    assert_eq!(bal(&f, &f.inmate).await, m("80"));
    assert_eq!(f.ledger.deposit(&family, req.clone()).await.unwrap(), b);
    assert_eq!(f.ledger.deposit(&admin, req.clone()).await.unwrap(), a);
    let other = dep(&f.inmate, DepositMethod::Online, "41");
    for k in [&admin, &family] {
        let e = f.ledger.deposit(k, other.clone()).await.unwrap_err();
        assert!(
            matches!(e, LedgerError::IdempotencyConflict { .. }),
            "{e:?}"
        );
    }
    let p1 = f
        .ledger
        .purchase(&admin, purchase(&f.inmate, "1", "o"))
        .await;
    assert!(
        matches!(p1, Err(LedgerError::IdempotencyConflict { .. })),
        "{p1:?}"
    );
    let staff = RequestKey::new("user:usr_staff", "k").unwrap();
    let p = f
        .ledger
        .purchase(&staff, purchase(&f.inmate, "1", "o"))
        .await
        .unwrap();
    assert_eq!(bal(&f, &f.inmate).await, m("79"));
    assert_eq!(
        f.ledger
            .purchase(&staff, purchase(&f.inmate, "1", "o"))
            .await
            .unwrap(),
        p
    );
    let keys: Vec<String> = sqlx::query(
        "SELECT idempotency_key FROM ledger_transactions WHERE idempotency_key IS NOT NULL ORDER BY id",
    )
    .fetch_all(f.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("idempotency_key"))
    .collect();
    assert_eq!(
        keys,
        ["admin-token k", "user:usr_family k", "user:usr_staff k"]
    );
    let stored: i64 = sqlx::query("SELECT COUNT(*) AS n FROM idempotency_keys WHERE key = 'k'")
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(stored, 3, "one stored answer per caller");
    healthy(&f).await;
}

/// Depositor, reference and memo have their limits at the ledger itself, so every way in
/// (API, CLI, demo) meets them; a refusal stores nothing and keeps the key free.
async fn stored_text_has_limits(db: Db) {
    let f = setup(db).await;
    let mut req = dep(&f.inmate, DepositMethod::Online, "5");
    req.depositor = "d".repeat(101);
    let e = f.ledger.deposit(&rk("t"), req.clone()).await.unwrap_err();
    assert_eq!(e.to_string(), "depositor: must be at most 100 characters");
    req.depositor = "Jane\nDoe".into();
    assert!(matches!(
        f.ledger.deposit(&rk("t"), req.clone()).await,
        Err(LedgerError::InvalidText(_))
    ));
    req.depositor = "Jane".into();
    req.reference = "r".repeat(201);
    assert!(f.ledger.deposit(&rk("t"), req.clone()).await.is_err());
    let mut p = purchase(&f.inmate, "1", "o");
    p.memo = "m".repeat(1001);
    let e = f.ledger.purchase(&rk("t"), p).await.unwrap_err();
    assert!(e.to_string().starts_with("memo: "), "{e}");
    assert_eq!(bal(&f, &f.inmate).await, Money::ZERO);
    req.reference = "ref-1".into();
    f.ledger.deposit(&rk("t"), req).await.unwrap();
    healthy(&f).await;
}

/// Keys stored before migration 0007 (no caller) move over with caller '' and keep
/// answering for a day after they were stored: an identical replay from any caller gets
/// the stored answer and moves nothing (a retry that straddles the upgrade), a different
/// request under one is a 409. After the day (review, L2), a legacy key answers nobody:
/// each caller's own namespace decides, so a family token replaying the admin's request
/// makes its own deposit and never gets the admin's receipt.
async fn keys_from_before_callers_survive_the_migration(t: sallyport::db::testing::TestDb) {
    use sha2::{Digest, Sha256};
    let f = setup(t.db.clone()).await;
    let req = DepositRequest {
        depositor: "County admin".into(),
        reference: "ADMIN-REF-1".into(),
        ..dep(&f.inmate, DepositMethod::Online, "25")
    };
    // Stored by the release before 0007, an hour before now.
    let stored_at = t0() - chrono::Duration::hours(1);
    let first = Deposit {
        id: "dep_before_upgrade".into(),
        account_id: f.inmate.clone(),
        facility_id: FAC.into(),
        method: DepositMethod::Online,
        amount: m("25"),
        status: DepositStatus::Posted,
        depositor: req.depositor.clone(),
        reference: req.reference.clone(),
        transaction_id: Some(1),
        created_at: stored_at,
        local_day: stored_at.date_naive(),
        decided_by: None,
        decided_at: None,
    };
    // The row as the release before 0007 stored it: the scope, then the request's JSON.
    let hash = hex::encode(Sha256::digest(format!(
        "deposit\n{}",
        serde_json::to_string(&req).unwrap()
    )));
    sqlx::query(
        "INSERT INTO idempotency_keys (key, scope, request_hash, response_status, response_body, created_at) \
         VALUES ('old-1', 'deposit', $1, 200, $2, $3)",
    )
    .bind(&hash)
    .bind(serde_json::to_string(&first).unwrap())
    .bind(stored_at.timestamp_micros())
    .execute(t.db.pool())
    .await
    .unwrap();
    t.db.migrate().await.unwrap();
    let caller: String = sqlx::query("SELECT caller FROM idempotency_keys WHERE key = 'old-1'")
        .fetch_one(t.db.pool())
        .await
        .unwrap()
        .get("caller");
    assert_eq!(caller, "");
    // Within the day: the retry that straddles the upgrade, whoever sends it.
    for who in ["admin-token", "user:usr_1", "cli"] {
        let k = RequestKey::new(who, "old-1").unwrap();
        assert_eq!(
            f.ledger.deposit(&k, req.clone()).await.unwrap(),
            first,
            "{who}"
        );
        let other = dep(&f.inmate, DepositMethod::Online, "26");
        let e = f.ledger.deposit(&k, other).await.unwrap_err();
        assert!(
            matches!(e, LedgerError::IdempotencyConflict { .. }),
            "{who}: {e:?}"
        );
    }
    assert_eq!(bal(&f, &f.inmate).await, Money::ZERO, "nothing moved twice");
    // The last moment of the day still answers.
    f.clock.set_wall(stored_at + chrono::Duration::hours(24));
    let family = RequestKey::new("user:usr_family", "old-1").unwrap();
    assert_eq!(f.ledger.deposit(&family, req.clone()).await.unwrap(), first);
    assert_eq!(bal(&f, &f.inmate).await, Money::ZERO);
    // A day and a second after it was stored, the legacy key speaks for nobody: the
    // family's replay of the admin's request is the family's own deposit, with its own
    // receipt; the admin's receipt (depositor, reference) is never shown to it.
    f.clock
        .set_wall(stored_at + chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    let own = f.ledger.deposit(&family, req.clone()).await.unwrap();
    assert_ne!(own.id, first.id, "{own:?}");
    assert_eq!(own.amount, m("25"));
    assert_eq!(bal(&f, &f.inmate).await, m("25"));
    // Its own replay answers from its own namespace; a different request under its key
    // is its own conflict.
    assert_eq!(f.ledger.deposit(&family, req.clone()).await.unwrap(), own);
    let e = f
        .ledger
        .deposit(&family, dep(&f.inmate, DepositMethod::Online, "26"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, LedgerError::IdempotencyConflict { .. }),
        "{e:?}"
    );
    // Another caller's different request under the old key is no longer held back by it.
    let cli = RequestKey::new("cli", "old-1").unwrap();
    let other = f
        .ledger
        .deposit(&cli, dep(&f.inmate, DepositMethod::Online, "26"))
        .await
        .unwrap();
    assert_eq!(other.amount, m("26"));
    assert_eq!(bal(&f, &f.inmate).await, m("51"));
    let new = RequestKey::new("cli", "new-1").unwrap();
    f.ledger.deposit(&new, req.clone()).await.unwrap();
    assert_eq!(f.ledger.deposit(&new, req).await.unwrap().amount, m("25"));
    assert_eq!(bal(&f, &f.inmate).await, m("76"));
    healthy(&f).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keys_from_before_callers_survive_the_migration() {
    let t = sallyport::db::testing::TestDb::of_version(sallyport::db::Backend::Sqlite, 6).await;
    keys_from_before_callers_survive_the_migration(t.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keys_from_before_callers_survive_the_migration() {
    let t = sallyport::db::testing::TestDb::of_version(sallyport::db::Backend::Postgres, 6).await;
    if let Some(t) = t {
        keys_from_before_callers_survive_the_migration(t).await;
    }
}

/// The same tests against both backends, each on a fresh database that is dropped after.
macro_rules! battery {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let t = sallyport::db::testing::TestDb::sqlite().await;
                    let r = tokio::spawn(super::$name(t.db.clone())).await;
                    t.cleanup().await;
                    if let Err(e) = r { std::panic::resume_unwind(e.into_panic()) }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(t) = sallyport::db::testing::TestDb::postgres().await else { return };
                    let r = tokio::spawn(super::$name(t.db.clone())).await;
                    t.cleanup().await;
                    if let Err(e) = r { std::panic::resume_unwind(e.into_panic()) }
                }
            )*
        }
    };
}

battery!(
    deposits_each_method,
    money_order_post_and_void,
    deposit_validation,
    per_deposit_limit,
    per_day_limit_follows_facility_midnight,
    voided_money_order_frees_the_daily_limit,
    every_method_replays,
    same_key_different_request_conflicts,
    refused_request_keeps_key_free,
    debit_retry_is_a_noop,
    refused_debit_writes_nothing,
    debits_by_service_and_bad_accounts,
    purchase_and_refund,
    release_refunds_and_closes,
    statement_lines_range_and_csv,
    system_accounts_and_opening,
    invariants_report_corruption,
    concurrent_debits_cannot_overspend,
    concurrent_duplicate_deposits_post_once,
    concurrent_mixed_spenders,
    keys_belong_to_their_caller,
    stored_text_has_limits,
);
