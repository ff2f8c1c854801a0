//! Session debits per second: the ledger's hot path (one conditional debit, its two
//! entries and a commit per billing increment).
//!
//! - `sequential`: one debit at a time on one account (latency of a debit).
//! - `concurrent16`: 16 tasks, each debiting its own account, one debit each per
//!   iteration (throughput with many calls in flight).
//!
//! SQLite runs on a temporary file (WAL, synchronous=NORMAL, as in production);
//! PostgreSQL on a fresh database when `SALLYPORT_TEST_DATABASE_URL` is set, skipped with
//! a message otherwise.
//!
//! `cargo bench --bench ledger -- --measurement-time 3 --warm-up-time 1`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sallyport::clock::{Clock, SystemClock};
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::ledger::{AccountKind, Ledger, RefundRequest, RequestKey, Service, SessionDebit};
use sallyport::money::Money;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// `key` in the namespace of the one caller these tests are.
fn rk(key: &str) -> RequestKey {
    RequestKey::new("tests", key).unwrap()
}

const FAC: &str = "BENCH";
const TASKS: usize = 16;

struct Fixture {
    ledger: Ledger,
    accounts: Vec<String>,
    t: TestDb,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    let t = TestDb::of(backend).await?;
    sqlx::query("INSERT INTO facilities (id, name, time_zone, deposit_max_minor, deposit_daily_max_minor, created_at) VALUES ($1, 'Bench', 'UTC', 1000000, 1000000, $2)")
        .bind(FAC).bind(Utc::now().timestamp_micros()).execute(t.db.pool()).await.ok()?;
    let ledger = Ledger::new(t.db.clone(), Arc::new(SystemClock) as Arc<dyn Clock>);
    ledger.ensure_system_accounts(FAC).await.ok()?;
    let mut accounts = Vec::new();
    for i in 0..TASKS {
        let id = ledger
            .open_account(
                AccountKind::Inmate,
                Some(FAC),
                Some(&format!("I{i}")),
                "bench",
            )
            .await
            .ok()?;
        // Funded by a large credit: refunds have no deposit limit.
        let amount: Money = "1000000".parse().ok()?;
        let req = RefundRequest {
            account_id: id.clone(),
            amount,
            reference: "fund".into(),
            memo: "bench funding".into(),
        };
        ledger.refund(&rk(&format!("fund-{i}")), req).await.ok()?;
        accounts.push(id);
    }
    Some(Fixture {
        ledger,
        accounts,
        t,
    })
}

/// A fresh increment number: each debit is a new (session, increment).
static NEXT: AtomicU32 = AtomicU32::new(1);

fn debit(account: &str) -> SessionDebit {
    SessionDebit {
        session_id: "bench-session".into(),
        increment: NEXT.fetch_add(1, Ordering::Relaxed),
        account_id: account.to_string(),
        amount: Money::from_minor(21),
        service: Service::Audio,
        facility_id: FAC.into(),
    }
}

async fn sequential(ledger: &Ledger, account: &str, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        ledger.debit_session(debit(account)).await.ok();
    }
    start.elapsed()
}

async fn concurrent(ledger: &Ledger, accounts: &[String], iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let tasks: Vec<_> = accounts
            .iter()
            .map(|a| {
                let (l, d) = (ledger.clone(), debit(a));
                tokio::spawn(async move { l.debit_session(d).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
    start.elapsed()
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, backend: Backend, name: &str) {
    let Some(f) = rt.block_on(fixture(backend)) else {
        eprintln!("ledger bench: {name} skipped (set SALLYPORT_TEST_DATABASE_URL for PostgreSQL)");
        return;
    };
    let mut g = c.benchmark_group(format!("debit_session/{name}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&f.ledger, &f.accounts[0], iters)))
    });
    g.throughput(Throughput::Elements(TASKS as u64));
    g.bench_function("concurrent16", |b| {
        b.iter_custom(|iters| rt.block_on(concurrent(&f.ledger, &f.accounts, iters)))
    });
    g.finish();
    if let Ok(report) = rt.block_on(f.ledger.check_invariants()) {
        assert!(report.is_healthy(), "{:?}", report.violations);
    }
    rt.block_on(f.t.cleanup());
}

fn benches(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        eprintln!("ledger bench: no tokio runtime");
        return;
    };
    bench_backend(c, &rt, Backend::Sqlite, "sqlite");
    bench_backend(c, &rt, Backend::Postgres, "postgres");
}

criterion_group!(ledger, benches);
criterion_main!(ledger);
