#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sqlx::Row;

async fn roundtrip(backend: Backend) {
    let Some(t) = TestDb::of(backend).await else {
        return;
    };
    let db = &t.db;
    sqlx::query("INSERT INTO facilities (id, name, time_zone, deposit_max_minor, deposit_daily_max_minor, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind("F1").bind("Fac").bind("America/Chicago").bind(1_000_000i64).bind(5_000_000i64).bind(1i64)
        .execute(db.pool()).await.unwrap();
    sqlx::query("INSERT INTO inmates (id, facility_id, booking_number, first_name, last_name, status, account_id, booked_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)")
        .bind("I1").bind("F1").bind("B1").bind("A").bind("B").bind("active").bind("acc").bind(2i64)
        .execute(db.pool()).await.unwrap();
    sqlx::query("INSERT INTO contacts (id, inmate_id, number_e164, name, status, privileged, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7)")
        .bind("C1").bind("I1").bind("+15551230000").bind("Mom").bind("approved").bind(1i64).bind(3i64)
        .execute(db.pool()).await.unwrap();
    let row = sqlx::query("SELECT privileged, video_allowed, contacts.created_at, deposit_max_minor FROM contacts JOIN inmates ON inmates.id = contacts.inmate_id JOIN facilities ON facilities.id = inmates.facility_id")
        .fetch_one(db.pool()).await.unwrap();
    let p: i64 = row.try_get(0).unwrap();
    let p = p == 1;
    let v: i64 = row.try_get(1).unwrap();
    let v = v == 1;
    let c: i64 = row.try_get(2).unwrap();
    let d: i64 = row.try_get(3).unwrap();
    assert!(p && !v && c == 3 && d == 1_000_000);
    let r = sqlx::query(
        "INSERT INTO ledger_transactions (kind, created_at) VALUES ($1, $2) RETURNING id",
    )
    .bind("x")
    .bind(1i64)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let id: i64 = r.try_get(0).unwrap();
    let e = sqlx::query("UPDATE ledger_transactions SET memo = 'y' WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await;
    assert!(e.is_err(), "append-only trigger");
    let cnt: i64 = sqlx::query("SELECT COUNT(*) FROM ledger_transactions")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(cnt, 1);
    let s: Option<i64> =
        sqlx::query("SELECT CAST(SUM(amount_minor) AS BIGINT) FROM ledger_entries")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    assert_eq!(s, None);
    t.cleanup().await;
}

#[tokio::test]
async fn sqlite_roundtrip() {
    roundtrip(Backend::Sqlite).await
}
#[tokio::test]
async fn postgres_roundtrip() {
    roundtrip(Backend::Postgres).await
}
