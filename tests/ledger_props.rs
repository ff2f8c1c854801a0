//! Randomized ledger operations against a model.
//!
//! Proptest generates sequences of deposits (every method), money-order decisions, session
//! debits (including retries of the same increment), purchases, refunds, releases and
//! replays of earlier keyed requests. After every operation: the ledger's invariants hold
//! (no balance below zero, every transaction and the whole ledger sum to zero, stored
//! balances equal their entries) and every balance equals the model's. SQLite always;
//! PostgreSQL with fewer cases when `SALLYPORT_TEST_DATABASE_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use sallyport::clock::{Clock, ManualClock};
use sallyport::db::testing::TestDb;
use sallyport::db::{Backend, Db};
use sallyport::ledger::*;
use sallyport::money::Money;
use std::collections::HashMap;
use std::sync::Arc;

/// `key` in the namespace of the one caller these tests are.
fn rk(key: &str) -> RequestKey {
    RequestKey::new("tests", key).unwrap()
}

const FAC: &str = "FP";
const ACCOUNTS: usize = 3;
const PER_DEPOSIT: i64 = 1_000_000; // $100.00
const PER_DAY: i64 = 3_000_000; // $300.00

#[derive(Debug, Clone)]
enum Op {
    Deposit {
        acct: usize,
        cents: i64,
        method: DepositMethod,
    },
    Decide {
        nth: usize,
        post: bool,
    },
    Debit {
        acct: usize,
        minor: i64,
        session: u8,
        increment: u8,
    },
    Purchase {
        acct: usize,
        minor: i64,
    },
    Refund {
        acct: usize,
        minor: i64,
    },
    Release {
        acct: usize,
    },
    Replay {
        nth: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let acct = 0..ACCOUNTS;
    let method = prop_oneof![
        Just(DepositMethod::Online),
        Just(DepositMethod::Kiosk),
        Just(DepositMethod::MoneyOrder)
    ];
    prop_oneof![
        4 => (acct.clone(), 1i64..12_000, method).prop_map(|(acct, cents, method)| Op::Deposit { acct, cents, method }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(nth, post)| Op::Decide { nth, post }),
        5 => (acct.clone(), 0i64..60_000, 0u8..3, 1u8..4).prop_map(|(acct, minor, session, increment)| Op::Debit { acct, minor, session, increment }),
        3 => (acct.clone(), 1i64..300_000).prop_map(|(acct, minor)| Op::Purchase { acct, minor }),
        2 => (acct.clone(), 1i64..50_000).prop_map(|(acct, minor)| Op::Refund { acct, minor }),
        1 => acct.prop_map(|acct| Op::Release { acct }),
        2 => any::<usize>().prop_map(|nth| Op::Replay { nth }),
    ]
}

/// A keyed request that succeeded, to replay later.
#[derive(Debug, Clone)]
enum Call {
    Deposit(DepositRequest),
    Post(String),
    Void(String),
    Purchase(PurchaseRequest),
    Refund(RefundRequest),
    Release(String),
}

#[derive(Default)]
struct Model {
    balance: [i64; ACCOUNTS],
    closed: [bool; ACCOUNTS],
    today: [i64; ACCOUNTS],
    /// Pending money orders: (deposit id, account, amount).
    pending: Vec<(String, usize, i64)>,
    /// Committed debits: (session, increment) → (account, amount, balance after).
    debits: HashMap<(u8, u8), (usize, i64, i64)>,
    done: Vec<(String, Call, String)>,
    next_key: u64,
}

struct World {
    ledger: Ledger,
    ids: Vec<String>,
    model: Model,
}

impl World {
    fn key(&mut self) -> String {
        self.model.next_key += 1;
        format!("k{}", self.model.next_key)
    }

    fn record<T: serde::Serialize>(&mut self, key: String, call: Call, result: &T) {
        let json = serde_json::to_string(result).unwrap();
        self.model.done.push((key, call, json));
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Deposit {
                acct,
                cents,
                method,
            } => self.deposit(acct, cents * 100, method).await,
            Op::Decide { nth, post } => self.decide(nth, post).await,
            Op::Debit {
                acct,
                minor,
                session,
                increment,
            } => self.debit(acct, minor, session, increment).await,
            Op::Purchase { acct, minor } => self.purchase(acct, minor).await,
            Op::Refund { acct, minor } => self.refund(acct, minor).await,
            Op::Release { acct } => self.release(acct).await,
            Op::Replay { nth } => self.replay(nth).await,
        }
    }

    async fn deposit(&mut self, a: usize, minor: i64, method: DepositMethod) {
        let key = self.key();
        let req = DepositRequest {
            account_id: self.ids[a].clone(),
            method,
            amount: Money::from_minor(minor),
            depositor: "d".into(),
            reference: key.clone(),
        };
        let r = self.ledger.deposit(&rk(&key), req.clone()).await;
        let m = &mut self.model;
        if m.closed[a] {
            assert!(matches!(r, Err(LedgerError::AccountClosed { .. })), "{r:?}");
        } else if minor > PER_DEPOSIT {
            assert!(
                matches!(
                    r,
                    Err(LedgerError::LimitExceeded {
                        limit: DepositLimit::PerDeposit,
                        ..
                    })
                ),
                "{r:?}"
            );
        } else if m.today[a] + minor > PER_DAY {
            assert!(
                matches!(
                    r,
                    Err(LedgerError::LimitExceeded {
                        limit: DepositLimit::PerDay,
                        ..
                    })
                ),
                "{r:?}"
            );
        } else {
            let d = r.unwrap();
            m.today[a] += minor;
            if method == DepositMethod::MoneyOrder {
                assert_eq!(d.status, DepositStatus::Pending);
                m.pending.push((d.id.clone(), a, minor));
            } else {
                assert_eq!(d.status, DepositStatus::Posted);
                m.balance[a] += minor;
            }
            self.record(key, Call::Deposit(req), &d);
        }
    }

    async fn decide(&mut self, nth: usize, post: bool) {
        if self.model.pending.is_empty() {
            return;
        }
        let i = nth % self.model.pending.len();
        let (id, a, minor) = self.model.pending[i].clone();
        let key = self.key();
        if post {
            let r = self.ledger.post_money_order(&rk(&key), &id, "staff").await;
            if self.model.closed[a] {
                assert!(matches!(r, Err(LedgerError::AccountClosed { .. })), "{r:?}");
                return;
            }
            let d = r.unwrap();
            self.model.balance[a] += minor;
            self.model.pending.remove(i);
            self.record(key, Call::Post(id), &d);
        } else {
            let d = self
                .ledger
                .void_money_order(&rk(&key), &id, "staff")
                .await
                .unwrap();
            self.model.today[a] -= minor;
            self.model.pending.remove(i);
            self.record(key, Call::Void(id), &d);
        }
    }

    async fn debit(&mut self, a: usize, minor: i64, session: u8, increment: u8) {
        let d = SessionDebit {
            session_id: format!("s{session}"),
            increment: increment.into(),
            account_id: self.ids[a].clone(),
            amount: Money::from_minor(minor),
            service: if session == 2 {
                Service::Video
            } else {
                Service::Audio
            },
            facility_id: FAC.into(),
        };
        let r = self.ledger.debit_session(d).await;
        let m = &mut self.model;
        match m.debits.get(&(session, increment)) {
            Some(&(pa, pm, after)) if pa == a && pm == minor => {
                assert!(
                    matches!(r, Ok(DebitOutcome::AlreadyCommitted { balance_after, .. }) if balance_after.to_minor() == after),
                    "{r:?}"
                );
            }
            Some(_) => assert!(
                matches!(r, Err(LedgerError::IdempotencyConflict { .. })),
                "{r:?}"
            ),
            None if m.closed[a] => {
                assert!(matches!(r, Err(LedgerError::AccountClosed { .. })), "{r:?}")
            }
            None if m.balance[a] >= minor => {
                m.balance[a] -= minor;
                assert!(
                    matches!(r, Ok(DebitOutcome::Committed { balance_after, .. }) if balance_after.to_minor() == m.balance[a]),
                    "{r:?}"
                );
                m.debits
                    .insert((session, increment), (a, minor, m.balance[a]));
            }
            None => assert!(
                matches!(r, Ok(DebitOutcome::Refused { balance }) if balance.to_minor() == m.balance[a]),
                "{r:?}"
            ),
        }
    }

    async fn purchase(&mut self, a: usize, minor: i64) {
        let key = self.key();
        let req = PurchaseRequest {
            account_id: self.ids[a].clone(),
            amount: Money::from_minor(minor),
            reference: key.clone(),
            memo: "m".into(),
        };
        let r = self.ledger.purchase(&rk(&key), req.clone()).await;
        if self.model.closed[a] {
            assert!(matches!(r, Err(LedgerError::AccountClosed { .. })), "{r:?}");
        } else if self.model.balance[a] < minor {
            assert!(
                matches!(r, Err(LedgerError::InsufficientFunds { .. })),
                "{r:?}"
            );
        } else {
            let receipt = r.unwrap();
            self.model.balance[a] -= minor;
            assert_eq!(receipt.balance_after.to_minor(), self.model.balance[a]);
            self.record(key, Call::Purchase(req), &receipt);
        }
    }

    async fn refund(&mut self, a: usize, minor: i64) {
        let key = self.key();
        let req = RefundRequest {
            account_id: self.ids[a].clone(),
            amount: Money::from_minor(minor),
            reference: key.clone(),
            memo: "m".into(),
        };
        let r = self.ledger.refund(&rk(&key), req.clone()).await;
        if self.model.closed[a] {
            assert!(matches!(r, Err(LedgerError::AccountClosed { .. })), "{r:?}");
        } else {
            let receipt = r.unwrap();
            self.model.balance[a] += minor;
            self.record(key, Call::Refund(req), &receipt);
        }
    }

    async fn release(&mut self, a: usize) {
        let key = self.key();
        let r = self.ledger.release(&rk(&key), &self.ids[a]).await;
        if self.model.closed[a] {
            assert!(matches!(r, Err(LedgerError::AccountClosed { .. })), "{r:?}");
        } else {
            let rel = r.unwrap();
            assert_eq!(rel.refunded.to_minor(), self.model.balance[a]);
            self.model.balance[a] = 0;
            self.model.closed[a] = true;
            self.record(key, Call::Release(self.ids[a].clone()), &rel);
        }
    }

    async fn replay(&mut self, nth: usize) {
        if self.model.done.is_empty() {
            return;
        }
        let (key, call, first) = self.model.done[nth % self.model.done.len()].clone();
        let l = &self.ledger;
        let again = match call {
            Call::Deposit(r) => serde_json::to_string(&l.deposit(&rk(&key), r).await.unwrap()),
            Call::Post(id) => {
                serde_json::to_string(&l.post_money_order(&rk(&key), &id, "staff").await.unwrap())
            }
            Call::Void(id) => {
                serde_json::to_string(&l.void_money_order(&rk(&key), &id, "staff").await.unwrap())
            }
            Call::Purchase(r) => serde_json::to_string(&l.purchase(&rk(&key), r).await.unwrap()),
            Call::Refund(r) => serde_json::to_string(&l.refund(&rk(&key), r).await.unwrap()),
            Call::Release(id) => serde_json::to_string(&l.release(&rk(&key), &id).await.unwrap()),
        };
        assert_eq!(again.unwrap(), first, "replay of {key}");
    }

    async fn check(&self) {
        let report = self.ledger.check_invariants().await.unwrap();
        assert!(report.is_healthy(), "{:?}", report.violations);
        for (a, id) in self.ids.iter().enumerate() {
            let acct = self.ledger.account(id).await.unwrap();
            assert_eq!(
                acct.balance.to_minor(),
                self.model.balance[a],
                "account {a}"
            );
            assert!(!acct.balance.is_negative());
            assert_eq!(acct.status == AccountStatus::Closed, self.model.closed[a]);
        }
    }
}

async fn world(db: Db) -> World {
    sqlx::query("INSERT INTO facilities (id, name, time_zone, deposit_max_minor, deposit_daily_max_minor, created_at) VALUES ($1, 'P', 'America/New_York', $2, $3, 0)")
        .bind(FAC).bind(PER_DEPOSIT).bind(PER_DAY).execute(db.pool()).await.unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 6, 1, 15, 0, 0).unwrap(),
    ));
    let ledger = Ledger::new(db, clock as Arc<dyn Clock>);
    ledger.ensure_system_accounts(FAC).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..ACCOUNTS {
        ids.push(
            ledger
                .open_account(
                    AccountKind::Inmate,
                    Some(FAC),
                    Some(&format!("I{i}")),
                    "inmate",
                )
                .await
                .unwrap(),
        );
    }
    World {
        ledger,
        ids,
        model: Model::default(),
    }
}

fn run(backend: Backend, ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(t) = TestDb::of(backend).await else {
            return;
        };
        let mut w = world(t.db.clone()).await;
        for op in &ops {
            w.apply(op).await;
            w.check().await;
        }
        t.cleanup().await;
    });
}

/// Cases per backend: `PROPTEST_CASES` when set (deeper runs), else the default given.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_keep_invariants_sqlite(ops in proptest::collection::vec(op(), 1..60)) {
        run(Backend::Sqlite, ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(8), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_keep_invariants_postgres(ops in proptest::collection::vec(op(), 1..60)) {
        run(Backend::Postgres, ops);
    }
}
