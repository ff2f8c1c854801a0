//! The audit log's hash chain on SQLite and PostgreSQL: concurrent appends stay one chain;
//! an entry changed, removed or moved behind the database's back is named by
//! `verify_audit`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use chrono::{TimeZone, Utc};
use sallyport::clock::{Clock, ManualClock};
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::store::{AuditEntry, AuditFault, AuditProblem, Store};
use std::sync::Arc;

async fn store(backend: Backend) -> Option<(TestDb, Store)> {
    let t = TestDb::of(backend).await?;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
    ));
    let store = Store::new(
        t.db.clone(),
        clock as Arc<dyn Clock>,
        "test-pepper-0123456789",
    );
    Some((t, store))
}

fn entry<'a>(actor: &'a str, target: &'a str) -> AuditEntry<'a> {
    AuditEntry {
        actor,
        action: "call.terminate",
        target,
        facility_id: Some("F1"),
        detail: serde_json::json!({ "why": "test" }),
        remote_addr: Some("127.0.0.1"),
    }
}

/// Runs raw SQL that the append-only triggers would refuse: the tampering under test.
async fn tamper(t: &TestDb, backend: Backend, sql: &str) {
    let drop = match backend {
        Backend::Sqlite => [
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        Backend::Postgres => [
            "DROP TRIGGER audit_log_no_update ON audit_log",
            "DROP TRIGGER audit_log_no_delete ON audit_log",
        ],
    };
    for d in drop {
        let _ = sqlx::query(d).execute(t.db.pool()).await;
    }
    sqlx::query(sql).execute(t.db.pool()).await.unwrap();
}

async fn chain_and_tampering(backend: Backend) {
    let Some((t, store)) = store(backend).await else {
        return;
    };
    // Concurrent appends from many tasks still form one chain.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                let target = format!("c{i}-{j}");
                s.audit(entry("inv-1", &target)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let v = store.verify_audit().await.unwrap();
    assert_eq!(v.entries, 100);
    assert!(v.intact(), "{v:?}");
    let newest = store.audit_records(2, 0).await.unwrap();
    assert_eq!(
        newest[0].prev_hash, newest[1].hash,
        "each entry follows the one before"
    );
    assert_eq!(newest[0].hash, v.head);
    assert_eq!(newest[0].detail["why"], "test");

    // A changed entry.
    let ids: Vec<i64> = store
        .audit_records(100, 0)
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|r| r.id)
        .collect();
    let (changed, removed) = (ids[10], ids[40]);
    tamper(
        &t,
        backend,
        &format!("UPDATE audit_log SET actor = 'someone-else' WHERE id = {changed}"),
    )
    .await;
    // A removed entry: the one after it no longer follows.
    tamper(
        &t,
        backend,
        &format!("DELETE FROM audit_log WHERE id = {removed}"),
    )
    .await;
    let v = store.verify_audit().await.unwrap();
    assert_eq!(v.entries, 99);
    assert_eq!(
        v.problems,
        vec![
            AuditProblem {
                id: changed,
                fault: AuditFault::Changed
            },
            AuditProblem {
                id: ids[41],
                fault: AuditFault::BrokenLink
            },
        ],
        "{v:?}"
    );
    // New entries still append after the (tampered) head, and are themselves sound.
    store.audit(entry("admin", "after")).await.unwrap();
    let v = store.verify_audit().await.unwrap();
    assert_eq!(v.problems.len(), 2, "{v:?}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_chain_and_tampering() {
    chain_and_tampering(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chain_and_tampering() {
    chain_and_tampering(Backend::Postgres).await;
}
