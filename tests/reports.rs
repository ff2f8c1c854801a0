//! Facility reports on generated data, on SQLite and PostgreSQL: a facility-year from
//! `sallyport::reports::sample` (known totals), every report through the API (JSON and
//! CSV) compared with those totals and with direct SQL over the same tables; who may read
//! them, and that each read is audited.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use chrono::{Duration, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;
use sallyport::clock::Clock;
use sallyport::db::{Backend, Db};
use sallyport::reports::sample::{generate, Spec, Totals};
use sallyport::reports::{day_start, length_class, LENGTH_CLASSES};
use serde_json::Value;
use sqlx::Row;
use std::collections::HashMap;
use support::inproc::{admin, fetch, issue, request, send, App, Setup};

const ADMIN: &str = "reports-admin-token";
const F: &str = "RPT";
const RANGE: &str = "from=2025-01-01&to=2025-12-31";

fn spec() -> Spec {
    Spec {
        facility_id: F.into(),
        time_zone: "America/Chicago".into(),
        year: 2025,
        inmates: 60,
        calls: 6_000,
        deposits: 1_200,
        visits: 300,
        purchases: 600,
        releases: 4,
        seed: 11,
    }
}

fn tz() -> Tz {
    "America/Chicago".parse().unwrap()
}

async fn world(backend: Backend) -> Option<(App, Totals)> {
    let app = Setup::new(ADMIN).app(backend).await?;
    let totals = generate(&app.t.db, &spec()).await.expect("generate");
    // Calls drawn for a released or a silent inmate are not made.
    let calls = scalar(
        &app.t.db,
        "SELECT COUNT(*) FROM sessions WHERE kind = 'call'",
        &[],
    )
    .await;
    assert_eq!(totals.calls, calls as u64);
    assert!(totals.calls > 5_000, "{totals:?}");
    Some((app, totals))
}

async fn scalar(db: &Db, sql: &str, binds: &[i64]) -> i64 {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let r = q.fetch_one(db.pool()).await.unwrap();
    r.try_get::<i64, _>(0).unwrap()
}

async fn report(app: &App, name: &str, extra: &str) -> Value {
    let (s, v) = admin(
        app,
        "GET",
        &format!("/api/v1/reports/{name}?facility={F}&{RANGE}{extra}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{name}: {v}");
    v
}

fn col(v: &Value, key: &str) -> usize {
    v["table"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["key"] == key)
        .unwrap_or_else(|| panic!("no column {key}"))
}

fn rows(v: &Value) -> &Vec<Value> {
    v["table"]["rows"].as_array().unwrap()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// An amount cell ("12.50") in minor units.
fn minor(v: &Value) -> i64 {
    let d: rust_decimal::Decimal = v.as_str().unwrap().parse().unwrap();
    (d * rust_decimal::Decimal::from(10_000))
        .try_into()
        .unwrap()
}

fn sum_col(v: &Value, key: &str, money: bool) -> i64 {
    let i = col(v, key);
    rows(v)
        .iter()
        .map(|r| if money { minor(&r[i]) } else { int(&r[i]) })
        .sum()
}

fn day_bounds(d: NaiveDate) -> (i64, i64) {
    let a = day_start(tz(), d).timestamp_micros();
    let b = day_start(tz(), d + Duration::days(1)).timestamp_micros();
    (a, b)
}

async fn every_report_equals_its_totals_and_direct_sql(backend: Backend) {
    let Some((app, totals)) = world(backend).await else {
        return;
    };
    let db = &app.t.db;

    // Deposits: per method and per day.
    let v = report(&app, "deposits", "").await;
    assert_eq!(rows(&v).len(), 365);
    for (method, (n, amount)) in &totals.deposits {
        assert_eq!(sum_col(&v, method, true), *amount, "{method}");
        let direct = scalar(
            db,
            &format!("SELECT CAST(SUM(amount_minor) AS BIGINT) FROM deposits WHERE facility_id = 'RPT' AND status = 'posted' AND method = '{method}'"),
            &[],
        )
        .await;
        assert_eq!(direct, *amount, "{method}");
        let _ = n;
    }
    let count: u64 = totals.deposits.values().map(|t| t.0).sum();
    assert_eq!(sum_col(&v, "deposits", false) as u64, count);
    for r in rows(&v).iter().step_by(17) {
        let day = r[0].as_str().unwrap();
        let direct = scalar(
            db,
            &format!("SELECT COALESCE(CAST(SUM(amount_minor) AS BIGINT), 0) FROM deposits WHERE facility_id = 'RPT' AND status = 'posted' AND local_day = '{day}'"),
            &[],
        )
        .await;
        assert_eq!(minor(&r[col(&v, "total")]), direct, "{day}");
    }

    // Spending by the ledger's kind, per day.
    let v = report(&app, "spending", "").await;
    assert_eq!(sum_col(&v, "call_charge", true), totals.call_charges);
    assert_eq!(sum_col(&v, "visit_charge", true), totals.visit_charges);
    assert_eq!(sum_col(&v, "purchase", true), totals.purchase_amount);
    for (i, r) in rows(&v).iter().enumerate().step_by(29) {
        let (a, b) =
            day_bounds(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Duration::days(i as i64));
        let direct = scalar(
            db,
            "SELECT COALESCE(CAST(SUM(-e.amount_minor) AS BIGINT), 0) FROM ledger_transactions t \
             JOIN ledger_entries e ON e.transaction_id = t.id JOIN accounts a ON a.id = e.account_id \
             WHERE t.facility_id = 'RPT' AND a.kind = 'inmate' AND t.kind = 'call_charge' \
             AND t.created_at >= $1 AND t.created_at < $2",
            &[a, b],
        )
        .await;
        assert_eq!(minor(&r[col(&v, "call_charge")]), direct, "{}", r[0]);
    }

    // Revenue per account.
    let v = report(&app, "revenue", "").await;
    let by: HashMap<String, i64> = rows(&v)
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), minor(&r[2])))
        .collect();
    assert_eq!(by["call revenue"], totals.call_charges);
    assert_eq!(by["visit revenue"], totals.visit_charges);
    assert_eq!(by["commissary"], totals.purchase_amount);

    // Calls and visits per day: totals, and every day against a direct count.
    let v = report(&app, "sessions-daily", "").await;
    assert_eq!(sum_col(&v, "calls", false) as u64, totals.calls);
    assert_eq!(
        sum_col(&v, "connected_calls", false) as u64,
        totals.connected_calls
    );
    assert_eq!(sum_col(&v, "visits", false) as u64, totals.visits);
    for (i, r) in rows(&v).iter().enumerate() {
        let (a, b) =
            day_bounds(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Duration::days(i as i64));
        let direct = scalar(
            db,
            "SELECT COUNT(*) FROM sessions WHERE facility_id = 'RPT' AND kind = 'call' \
             AND invite_at >= $1 AND invite_at < $2",
            &[a, b],
        )
        .await;
        assert_eq!(int(&r[col(&v, "calls")]), direct, "{}", r[0]);
    }

    // By hour of day: against each session's own local hour.
    let v = report(&app, "sessions-hourly", "").await;
    let all = sqlx::query("SELECT invite_at, kind FROM sessions WHERE facility_id = 'RPT'")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let mut hours = [[0i64; 2]; 24];
    for r in &all {
        let at: i64 = r.try_get("invite_at").unwrap();
        let kind: String = r.try_get("kind").unwrap();
        let h = tz().timestamp_micros(at).unwrap().hour() as usize;
        hours[h][usize::from(kind == "visit")] += 1;
    }
    for (h, r) in rows(&v).iter().enumerate() {
        assert_eq!(int(&r[0]), h as i64);
        assert_eq!(int(&r[col(&v, "calls")]), hours[h][0], "hour {h}");
        assert_eq!(int(&r[col(&v, "visits")]), hours[h][1], "hour {h}");
    }
    assert_eq!(hours[3], [0, 0], "nobody calls at 3 in the morning");

    // Call length: the distribution and the average.
    let v = report(&app, "call-length", "").await;
    assert_eq!(sum_col(&v, "calls", false) as u64, totals.connected_calls);
    let avg = totals.talk_secs / totals.connected_calls as i64;
    let summary = v["summary"].as_array().unwrap();
    assert!(
        summary.iter().any(|s| s[0] == "Average talk time (seconds)"
            && s[1].as_str() == Some(avg.to_string().as_str())),
        "{summary:?}"
    );
    let talks = sqlx::query(
        "SELECT (COALESCE(media_end_at, end_at) - accepted_at) / 1000000 AS s FROM sessions \
         WHERE facility_id = 'RPT' AND kind = 'call' AND accepted_at IS NOT NULL",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut classes = [0i64; LENGTH_CLASSES.len()];
    for r in &talks {
        classes[length_class(r.try_get::<i64, _>("s").unwrap())] += 1;
    }
    for (i, r) in rows(&v).iter().enumerate() {
        assert_eq!(int(&r[1]), classes[i], "{}", r[0]);
    }

    // End reasons.
    let v = report(&app, "end-reasons", "").await;
    let direct = sqlx::query(
        "SELECT end_reason, COUNT(*) AS n FROM sessions WHERE facility_id = 'RPT' AND kind = 'call' \
         GROUP BY end_reason",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(direct.len() >= 5, "the data has several end reasons");
    for d in &direct {
        let reason: String = d.try_get("end_reason").unwrap();
        let n: i64 = d.try_get("n").unwrap();
        let r = rows(&v).iter().find(|r| r[0] == reason.as_str()).unwrap();
        assert_eq!(int(&r[1]), n, "{reason}");
    }

    // Top numbers: the first five against a direct count, attorney calls left out.
    let v = report(&app, "top-numbers", "&limit=5").await;
    assert_eq!(rows(&v).len(), 5);
    let direct = sqlx::query(
        "SELECT number_e164, COUNT(*) AS n, CAST(SUM(amount_minor) AS BIGINT) AS a FROM sessions \
         WHERE facility_id = 'RPT' AND kind = 'call' AND privileged = 0 \
         GROUP BY number_e164 ORDER BY COUNT(*) DESC, number_e164 LIMIT 5",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    for (r, d) in rows(&v).iter().zip(&direct) {
        assert_eq!(
            r[0],
            d.try_get::<String, _>("number_e164").unwrap().as_str()
        );
        assert_eq!(int(&r[1]), d.try_get::<i64, _>("n").unwrap());
        assert_eq!(minor(&r[4]), d.try_get::<i64, _>("a").unwrap());
    }

    // Welfare: the silent inmates are there, never contacted; the count matches SQL.
    let v = report(&app, "welfare", "&days=14").await;
    let never = rows(&v).iter().filter(|r| r[2] == "never").count() as u64;
    assert_eq!(never, totals.silent_inmates);
    assert!(never >= 1);
    let end = day_start(tz(), NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()).timestamp_micros();
    let cutoff = end - 14 * 86_400_000_000;
    let direct = scalar(
        db,
        "SELECT COUNT(*) FROM inmates i WHERE i.facility_id = 'RPT' AND i.status <> 'released' \
         AND i.booked_at <= $2 AND COALESCE((SELECT MAX(s.accepted_at) FROM sessions s \
         WHERE s.inmate_id = i.id AND s.accepted_at < $1), 0) < $2",
        &[end, cutoff],
    )
    .await;
    assert_eq!(rows(&v).len() as i64, direct);

    // Balances: what open accounts hold, what release refunded.
    let v = report(&app, "balances", "").await;
    assert_eq!(minor(&rows(&v)[0][2]), totals.held);
    let held = scalar(
        db,
        "SELECT CAST(SUM(balance_minor) AS BIGINT) FROM accounts WHERE facility_id = 'RPT' \
         AND kind = 'inmate' AND status = 'open'",
        &[],
    )
    .await;
    assert_eq!(held, totals.held);
    assert_eq!(int(&rows(&v)[2][1]) as u64, totals.releases_refunded);
    assert_eq!(minor(&rows(&v)[2][2]), totals.released_amount);
    assert!(totals.releases_refunded >= 1);

    // The ledger still balances after the generator's postings.
    let (s, check) = admin(&app, "GET", "/api/v1/ledger/check", None).await;
    assert_eq!(s, StatusCode::OK, "{check}");

    // CSV: the same table, header of column keys.
    for name in ["deposits", "top-numbers", "welfare"] {
        let json = report(&app, name, "").await;
        let (s, h, body) = fetch(
            &app,
            request(
                "GET",
                &format!("/api/v1/reports/{name}.csv?facility={F}&{RANGE}"),
                Some(ADMIN),
                None,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["content-type"], "text/csv; charset=utf-8");
        assert_eq!(
            h["content-disposition"],
            format!("attachment; filename=\"{name}-RPT-2025-01-01-2025-12-31.csv\"")
        );
        let mut rd = csv::Reader::from_reader(body.as_slice());
        let head: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
        let keys: Vec<String> = json["table"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(head, keys);
        let csv_rows: Vec<Vec<String>> = rd
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        let table: Vec<Vec<String>> = rows(&json)
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), String::from))
                    .collect()
            })
            .collect();
        assert_eq!(csv_rows, table, "{name}");
    }
    app.t.cleanup().await;
}

async fn who_may_read_reports(backend: Backend) {
    let Some(app) = Setup::new(ADMIN).app(backend).await else {
        return;
    };
    support::inproc::facility(&app, "A").await;
    support::inproc::facility(&app, "B").await;
    let inv = issue(&app, "inv-a", "investigator", &["A"], None).await;
    let kiosk = issue(&app, "kiosk-a", "kiosk", &["A"], None).await;
    let path = |name: &str, f: &str| {
        format!("/api/v1/reports/{name}?facility={f}&from=2026-03-01&to=2026-03-02")
    };
    let (s, v) = send(&app, "GET", &path("deposits", "A"), Some(&inv), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(rows(&v).len(), 2);
    let (s, _) = send(&app, "GET", &path("deposits", "B"), Some(&inv), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another facility's");
    let (s, _) = send(&app, "GET", &path("deposits", "A"), Some(&kiosk), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a kiosk");
    let (s, _) = send(&app, "GET", &path("deposits", "A"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = send(&app, "GET", &path("nope", "A"), Some(&inv), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = send(
        &app,
        "GET",
        "/api/v1/reports/deposits?facility=A&from=2026-03-05&to=2026-03-01",
        Some(&inv),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = send(
        &app,
        "GET",
        "/api/v1/reports/welfare?facility=A&from=2026-03-01&to=2026-03-01&days=0",
        Some(&inv),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("days"));
    let (s, v) = send(&app, "GET", "/api/v1/reports", Some(&inv), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 10);
    // Each read is audited, with the report, the range and the format.
    let (s, _, _) = fetch(
        &app,
        request(
            "GET",
            &path("welfare", "A").replace("welfare?", "welfare.csv?"),
            Some(&inv),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, log) = admin(&app, "GET", "/api/v1/audit?limit=50", None).await;
    let reads: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "report.read" && e["actor"] == "inv-a")
        .collect();
    assert_eq!(reads.len(), 2, "{log}");
    assert!(reads.iter().any(|e| e["target"] == "welfare"
        && e["detail"]["format"] == "csv"
        && e["detail"]["from"] == "2026-03-01"
        && e["facility_id"] == "A"));
    app.t.cleanup().await;
}

/// What the rollups hold for facility RPT: summarised days and months.
async fn summarised(db: &Db, grain: &str) -> i64 {
    scalar(
        db,
        &format!("SELECT COUNT(*) FROM report_rollup_periods WHERE facility_id = 'RPT' AND grain = '{grain}'"),
        &[],
    )
    .await
}

/// A UTC day number (the rollups' day) of a local instant in Chicago.
fn utc_day(us: i64) -> i64 {
    us.div_euclid(86_400_000_000)
}

/// Rows that arrive for a period the rollups already summarised: a call still open when
/// its day was summarised that ends later, a money order received on a summarised day
/// and posted months later, and a purchase written with a past date (a correction or an
/// import). Every report still equals direct SQL.
async fn rollups_stay_exact_when_rows_arrive_late(backend: Backend) {
    let Some((app, totals)) = world(backend).await else {
        return;
    };
    let db = &app.t.db;
    let now = app.clock.wall();
    let us = |d: NaiveDate, h: u32| {
        tz().from_local_datetime(&d.and_hms_opt(h, 0, 0).unwrap())
            .single()
            .unwrap()
            .timestamp_micros()
    };
    let june10 = NaiveDate::from_ymd_opt(2025, 6, 10).unwrap();
    let invite = us(june10, 15);
    // The number called most, called once more by the late call.
    let top: String = sqlx::query(
        "SELECT number_e164 FROM sessions WHERE facility_id = 'RPT' AND kind = 'call' \
         AND privileged = 0 GROUP BY number_e164 ORDER BY COUNT(*) DESC, number_e164 LIMIT 1",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, kind, facility_id, number_e164, state, node_id, invite_at, \
         answer_at, accepted_at) VALUES ('late-call', 'call', 'RPT', $1, 'active', 'n1', $2, $3, $3)",
    )
    .bind(&top)
    .bind(invite)
    .bind(invite + 10_000_000)
    .execute(db.pool())
    .await
    .unwrap();

    // Every report once: the settled days are summarised, but not the open call's day.
    for name in [
        "sessions-daily",
        "call-length",
        "end-reasons",
        "top-numbers",
        "spending",
    ] {
        report(&app, name, "").await;
    }
    let days = summarised(db, "day").await;
    assert!(days >= 360, "{days} days summarised");
    assert_eq!(summarised(db, "month").await, 11, "every month but June");
    let open_day = scalar(
        db,
        "SELECT COUNT(*) FROM report_rollup_periods WHERE facility_id = 'RPT' AND grain = 'day' \
         AND period = $1",
        &[utc_day(invite)],
    )
    .await;
    assert_eq!(open_day, 0, "a day with an open call is not summarised");
    let v = report(&app, "sessions-daily", "").await;
    assert_eq!(sum_col(&v, "calls", false) as u64, totals.calls + 1);

    // The call ends (23 minutes after acceptance) with a charge; its day can be summarised.
    let accepted = invite + 10_000_000;
    sqlx::query(
        "UPDATE sessions SET state = 'ended', end_reason = 'completed', end_at = $2, \
         media_end_at = $2, closed_at = $2, amount_minor = 48300 WHERE id = $1",
    )
    .bind("late-call")
    .bind(accepted + 23 * 60_000_000)
    .execute(db.pool())
    .await
    .unwrap();

    // A money order received on 2 April (a summarised day), posted now.
    let april2 = NaiveDate::from_ymd_opt(2025, 4, 2).unwrap();
    let account: String = sqlx::query(
        "SELECT id FROM accounts WHERE facility_id = 'RPT' AND kind = 'inmate' AND status = 'open' \
         ORDER BY id LIMIT 1",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    app.clock.set_wall(
        tz().timestamp_micros(us(april2, 11))
            .unwrap()
            .with_timezone(&chrono::Utc),
    );
    let ledger = app.store.ledger();
    let mo = ledger
        .deposit(
            &sallyport::ledger::RequestKey::new("t", "late-mo").unwrap(),
            sallyport::ledger::DepositRequest {
                account_id: account.clone(),
                method: sallyport::ledger::DepositMethod::MoneyOrder,
                amount: sallyport::money::Money::from_minor(1_230_000),
                depositor: "aunt".into(),
                reference: "MO-1".into(),
            },
        )
        .await
        .unwrap();
    app.clock.set_wall(now);
    ledger
        .post_money_order(
            &sallyport::ledger::RequestKey::new("t", "late-mo-post").unwrap(),
            &mo.id,
            "staff",
        )
        .await
        .unwrap();

    // A purchase written with a past date (5 March) into a summarised day.
    let march5 = us(NaiveDate::from_ymd_opt(2025, 3, 5).unwrap(), 12);
    let txn: i64 = sqlx::query(
        "INSERT INTO ledger_transactions (kind, facility_id, memo, created_at) \
         VALUES ('purchase', 'RPT', 'late purchase', $1) RETURNING id",
    )
    .bind(march5)
    .fetch_one(db.pool())
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    for (acct, amount, after) in [
        (account.as_str(), -70_000i64, Some(0i64)),
        ("sys:RPT:commissary", 70_000, None),
    ] {
        sqlx::query(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, \
             balance_after_minor, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(txn)
        .bind(acct)
        .bind(amount)
        .bind(after)
        .bind(march5)
        .execute(db.pool())
        .await
        .unwrap();
    }

    // Sessions: the late call counts on its day, in its hour, its length and reason.
    let v = report(&app, "sessions-daily", "").await;
    assert_eq!(sum_col(&v, "calls", false) as u64, totals.calls + 1);
    assert_eq!(
        sum_col(&v, "connected_calls", false) as u64,
        totals.connected_calls + 1
    );
    let (a, b) = day_bounds(june10);
    let direct = scalar(
        db,
        "SELECT COUNT(*) FROM sessions WHERE facility_id = 'RPT' AND kind = 'call' \
         AND invite_at >= $1 AND invite_at < $2",
        &[a, b],
    )
    .await;
    let row = rows(&v).iter().find(|r| r[0] == "2025-06-10").unwrap();
    assert_eq!(int(&row[col(&v, "calls")]), direct);
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM report_rollup_periods WHERE facility_id = 'RPT' AND grain = 'day' AND period = $1",
            &[utc_day(invite)],
        )
        .await,
        1,
        "its day is summarised once the call has ended"
    );
    let v = report(&app, "sessions-hourly", "").await;
    assert_eq!(sum_col(&v, "calls", false) as u64, totals.calls + 1);
    let v = report(&app, "call-length", "").await;
    assert_eq!(
        sum_col(&v, "calls", false) as u64,
        totals.connected_calls + 1
    );
    let twenty = rows(&v).iter().find(|r| r[0] == "20-30 min").unwrap();
    let direct = scalar(
        db,
        "SELECT COUNT(*) FROM sessions WHERE facility_id = 'RPT' AND kind = 'call' \
         AND state = 'ended' AND accepted_at IS NOT NULL \
         AND (COALESCE(media_end_at, end_at) - accepted_at) >= 1200000000 \
         AND (COALESCE(media_end_at, end_at) - accepted_at) < 1800000000",
        &[],
    )
    .await;
    assert_eq!(int(&twenty[1]), direct);
    let v = report(&app, "end-reasons", "").await;
    let direct = scalar(
        db,
        "SELECT COUNT(*) FROM sessions WHERE facility_id = 'RPT' AND kind = 'call' \
         AND end_reason = 'completed'",
        &[],
    )
    .await;
    let completed = rows(&v).iter().find(|r| r[0] == "completed").unwrap();
    assert_eq!(int(&completed[1]), direct);
    let v = report(&app, "top-numbers", "&limit=3").await;
    let direct = sqlx::query(
        "SELECT number_e164, COUNT(*) AS n, CAST(SUM(amount_minor) AS BIGINT) AS a FROM sessions \
         WHERE facility_id = 'RPT' AND kind = 'call' AND privileged = 0 \
         GROUP BY number_e164 ORDER BY COUNT(*) DESC, number_e164 LIMIT 3",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows(&v)[0][0], top.as_str());
    for (r, d) in rows(&v).iter().zip(&direct) {
        assert_eq!(
            r[0],
            d.try_get::<String, _>("number_e164").unwrap().as_str()
        );
        assert_eq!(int(&r[1]), d.try_get::<i64, _>("n").unwrap());
        assert_eq!(minor(&r[4]), d.try_get::<i64, _>("a").unwrap());
    }
    assert_eq!(summarised(db, "month").await, 12, "June too, now");

    // Spending: the late purchase on its day; deposits: the money order on its day.
    let v = report(&app, "spending", "").await;
    assert_eq!(
        sum_col(&v, "purchase", true),
        totals.purchase_amount + 70_000
    );
    let row = rows(&v).iter().find(|r| r[0] == "2025-03-05").unwrap();
    let (a, b) = day_bounds(NaiveDate::from_ymd_opt(2025, 3, 5).unwrap());
    let direct = scalar(
        db,
        "SELECT COALESCE(CAST(SUM(-e.amount_minor) AS BIGINT), 0) FROM ledger_transactions t \
         JOIN ledger_entries e ON e.transaction_id = t.id JOIN accounts a ON a.id = e.account_id \
         WHERE t.facility_id = 'RPT' AND a.kind = 'inmate' AND t.kind = 'purchase' \
         AND t.created_at >= $1 AND t.created_at < $2",
        &[a, b],
    )
    .await;
    assert_eq!(minor(&row[col(&v, "purchase")]), direct);
    let v = report(&app, "deposits", "").await;
    assert_eq!(
        sum_col(&v, "money_order", true),
        totals.deposits["money_order"].1 + 1_230_000
    );
    let row = rows(&v).iter().find(|r| r[0] == "2025-04-02").unwrap();
    let direct = scalar(
        db,
        "SELECT CAST(SUM(amount_minor) AS BIGINT) FROM deposits WHERE facility_id = 'RPT' \
         AND status = 'posted' AND local_day = '2025-04-02'",
        &[],
    )
    .await;
    assert_eq!(minor(&row[col(&v, "total")]), direct);

    // The reports do read the rollups: a summarised slot's count shows (then is put back).
    let bump = |d: i64| {
        format!(
            "UPDATE report_rollups SET v1 = v1 + ({d}) WHERE facility_id = 'RPT' AND part = 'sessions' \
             AND key = 'call' AND period = (SELECT MIN(period) FROM report_rollups \
             WHERE facility_id = 'RPT' AND part = 'sessions' AND key = 'call')"
        )
    };
    sqlx::query(&bump(1000)).execute(db.pool()).await.unwrap();
    let v = report(&app, "sessions-hourly", "").await;
    assert_eq!(sum_col(&v, "calls", false) as u64, totals.calls + 1 + 1000);
    sqlx::query(&bump(-1000)).execute(db.pool()).await.unwrap();

    // The same numbers with the rollups gone (every row read).
    let before = report(&app, "top-numbers", "").await;
    let spending = report(&app, "spending", "").await;
    sallyport::reports::rollup::forget(db, F).await.unwrap();
    sqlx::query("DELETE FROM report_rollup_periods")
        .execute(db.pool())
        .await
        .unwrap();
    app.clock.set_wall(
        tz().timestamp_micros(us(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), 0))
            .unwrap()
            .with_timezone(&chrono::Utc),
    );
    let raw = report(&app, "top-numbers", "").await;
    assert_eq!(
        summarised(db, "day").await,
        0,
        "nothing is settled on 1 January"
    );
    assert_eq!(before["table"], raw["table"]);
    assert_eq!(
        spending["table"],
        report(&app, "spending", "").await["table"]
    );
    app.t.cleanup().await;
}

#[tokio::test]
async fn rollups_stay_exact_late_rows_sqlite() {
    rollups_stay_exact_when_rows_arrive_late(Backend::Sqlite).await;
}

#[tokio::test]
async fn rollups_stay_exact_late_rows_postgres() {
    rollups_stay_exact_when_rows_arrive_late(Backend::Postgres).await;
}

#[tokio::test]
async fn reports_equal_totals_and_sql_sqlite() {
    every_report_equals_its_totals_and_direct_sql(Backend::Sqlite).await;
}

#[tokio::test]
async fn reports_equal_totals_and_sql_postgres() {
    every_report_equals_its_totals_and_direct_sql(Backend::Postgres).await;
}

#[tokio::test]
async fn who_may_read_reports_sqlite() {
    who_may_read_reports(Backend::Sqlite).await;
}

#[tokio::test]
async fn who_may_read_reports_postgres() {
    who_may_read_reports(Backend::Postgres).await;
}
