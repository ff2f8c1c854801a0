//! Every report's SQL, and [`build`]: a report from its rows.
//!
//! One query (two for revenue and balances) per report, written once for both databases
//! (`$n` placeholders, `CAST(… AS BIGINT)` around sums and `CASE`s, integer division of
//! Unix microseconds for time buckets). Each reads one facility over a UTC range
//! ([`super::DateRange::instants`]) through an index that holds what it reads
//! (`migrations/*/0021_report_indexes.sql`).

use super::rollup::{self, Coverage, Grain, DAY_US, SLOT_US};
use super::{
    bucket_secs, label_of, length_class_sql, minutes_seconds, per_day, per_hour, Cell, Chart,
    Column, DateRange, Report, ReportName, Table, Unit, LENGTH_CLASSES,
};
use crate::db::{from_micros, to_micros, Db};
use crate::money::Money;
use crate::store::Facility;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::Row;

/// The deposit methods in the order the report shows them (any other stored method
/// follows under its own name).
const METHODS: [&str; 3] = ["online", "kiosk", "money_order"];
/// Ledger kinds that return money to the outside rather than pay for a service.
const NOT_SPENDING: [&str; 3] = ["release", "deposit_refund", "balance_refund"];
/// The known spending kinds, first in the table, shown even when nothing was spent on
/// them (calls, visits, messages, commissary; any other kind follows by name).
const SPENDING: [&str; 4] = ["call_charge", "visit_charge", "message_charge", "purchase"];
/// The spending kind of a ledger transaction `t`, as SQL: a message's refund counts
/// against messages (a rejected message was not spent on), everything else is its kind.
pub(crate) const SPENDING_KIND_SQL: &str =
    "CASE WHEN t.kind = 'message_refund' THEN 'message_charge' ELSE t.kind END";
/// Which entries `e` of a transaction `t` are spending, as SQL: a person's debits, and a
/// message refund's credit (negative spending on messages).
pub(crate) const SPENT_SQL: &str =
    "e.balance_after_minor IS NOT NULL AND (e.amount_minor < 0 OR t.kind = 'message_refund')";
/// System accounts that are not revenue.
const NOT_REVENUE: [&str; 3] = ["deposits_clearing", "refunds", "refunds_payable"];

/// What a report request may add to the facility and range.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Welfare: no contact for this many days.
    pub days: i64,
    /// Top numbers: how many.
    pub limit: i64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            days: super::WELFARE_DEFAULT_DAYS,
            limit: super::TOP_DEFAULT,
        }
    }
}

/// The facility's time zone (UTC if the stored name is unknown; facilities are checked
/// when saved).
pub fn zone_of(f: &Facility) -> Tz {
    f.time_zone.parse().unwrap_or(Tz::UTC)
}

/// Builds report `name` for facility `f` over `range`, as of `now` (balances are read
/// now; welfare counts up to the end of the range or now, whichever is first).
pub async fn build(
    db: &Db,
    f: &Facility,
    name: ReportName,
    range: &DateRange,
    params: Params,
    now: DateTime<Utc>,
) -> Result<Report, sqlx::Error> {
    let tz = zone_of(f);
    let (start, end) = range.instants(tz);
    let q = Window {
        facility: &f.id,
        start: to_micros(start),
        end: to_micros(end),
        bucket: bucket_secs(tz, start, end),
    };
    if matches!(
        name,
        ReportName::Spending
            | ReportName::SessionsDaily
            | ReportName::SessionsHourly
            | ReportName::CallLength
            | ReportName::EndReasons
            | ReportName::TopNumbers
    ) {
        // The settled days of the range summarised first (a no-op once they are); a
        // failure leaves the report on the raw rows for what is not summarised.
        if let Err(e) = rollup::refresh(db, &f.id, q.start, q.end, now).await {
            tracing::warn!(facility = %f.id, error = %e, "report rollups not refreshed");
        }
    }
    let mut summary = Vec::new();
    let (table, chart) = match name {
        ReportName::Deposits => {
            let rows = deposits(db, &f.id, range).await?;
            let t = deposits_table(range, &rows);
            let n = t.columns.len();
            (t, chart("bars", (1..n - 1).collect()))
        }
        ReportName::Spending => {
            let rows = spending(db, &q).await?;
            let t = per_day(tz, q.bucket, range, &rows, &SPENDING, true);
            let n = t.columns.len();
            (t, chart("lines", (1..n - 1).collect()))
        }
        ReportName::Revenue => {
            let t = revenue(db, &q).await?;
            (t, chart("bars", vec![2]))
        }
        ReportName::SessionsDaily => {
            let rows = sessions(db, &q).await?;
            let t = per_day(tz, q.bucket, range, &rows, &SESSION_KEYS, false);
            (t, chart("lines", vec![1, 2, 3]))
        }
        ReportName::SessionsHourly => {
            let rows = sessions(db, &q).await?;
            let t = per_hour(tz, q.bucket, &rows, &SESSION_KEYS);
            (t, chart("bars", vec![1, 2, 3]))
        }
        ReportName::CallLength => {
            let (t, calls, secs) = call_length(db, &q).await?;
            let avg = if calls > 0 { secs / calls } else { 0 };
            summary.push(("Connected calls".into(), calls.to_string()));
            summary.push(("Average talk time (m:ss)".into(), minutes_seconds(avg)));
            summary.push(("Average talk time (seconds)".into(), avg.to_string()));
            (t, chart("bars", vec![1]))
        }
        ReportName::EndReasons => {
            let t = end_reasons(db, &q).await?;
            (t, chart("bars", vec![1, 2]))
        }
        ReportName::TopNumbers => {
            let t = top_numbers(db, &q, params.limit).await?;
            (t, chart("bars", vec![1, 2]))
        }
        ReportName::Welfare => {
            let as_of = end.min(now);
            summary.push(("Counted up to".into(), local_minute(tz, as_of)));
            summary.push(("Days without contact".into(), params.days.to_string()));
            let t = welfare(db, &f.id, tz, as_of, params.days).await?;
            (t, chart("bars", vec![3]))
        }
        ReportName::Balances => {
            summary.push(("Balances read at".into(), local_minute(tz, now)));
            let t = balances(db, &q).await?;
            (t, chart("bars", vec![2]))
        }
    };
    Ok(Report {
        name,
        title: name.title(),
        description: name.description(),
        facility_id: f.id.clone(),
        time_zone: f.time_zone.clone(),
        from: range.from,
        to: range.to,
        summary,
        chart,
        table,
    })
}

fn chart(kind: &'static str, series: Vec<usize>) -> Chart {
    Chart { kind, x: 0, series }
}

fn local_minute(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// A facility and a UTC range in microseconds, with the bucket (seconds) times group by.
pub struct Window<'a> {
    pub facility: &'a str,
    pub start: i64,
    pub end: i64,
    pub bucket: i64,
}

impl<'a> Window<'a> {
    fn bucket_us(&self) -> i64 {
        self.bucket * 1_000_000
    }

    /// The same facility and bucket over `[start, end)`.
    fn part(&self, (start, end): (i64, i64)) -> Window<'a> {
        Window {
            facility: self.facility,
            start,
            end,
            bucket: self.bucket,
        }
    }

    /// How a part of `grain` reads this window: rollups where summarised, rows elsewhere
    /// (all rows when the time bucket is finer than the rollups' 15-minute slots).
    async fn coverage(&self, db: &Db, grain: Grain) -> Result<Coverage, sqlx::Error> {
        if grain == Grain::Slot && (self.bucket * 1_000_000) % SLOT_US != 0 {
            return Ok(Coverage::raw(self.start, self.end));
        }
        rollup::coverage(db, self.facility, grain, self.start, self.end).await
    }
}

/// The ledger kinds that are not spending, as an SQL list.
pub(crate) fn not_spending_sql() -> String {
    NOT_SPENDING
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of `part` summed per report bucket over the 15-minute slots of `[a, b)`:
/// (bucket, key, SUM(v1), SUM(v2)).
async fn rollup_slots(
    db: &Db,
    q: &Window<'_>,
    part: &str,
    (a, b): (i64, i64),
    extra: &str,
) -> Result<Vec<(i64, String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT CAST(period * 900 / $4 AS BIGINT) AS b, key, CAST(SUM(v1) AS BIGINT) AS v1, \
         CAST(SUM(v2) AS BIGINT) AS v2 FROM report_rollups WHERE facility_id = $1 AND part = $5 \
         AND period >= $2 AND period < $3{extra} GROUP BY CAST(period * 900 / $4 AS BIGINT), key"
    ))
    .bind(q.facility)
    .bind(a / SLOT_US)
    .bind(b / SLOT_US)
    .bind(q.bucket)
    .bind(part)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("b")?,
                r.try_get("key")?,
                r.try_get("v1")?,
                r.try_get("v2")?,
            ))
        })
        .collect()
}

/// Posted deposits per (local day, method): count and amount.
pub async fn deposits(
    db: &Db,
    facility: &str,
    range: &DateRange,
) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT local_day, method, COUNT(*) AS n, CAST(SUM(amount_minor) AS BIGINT) AS amount \
         FROM deposits WHERE facility_id = $1 AND status = 'posted' \
         AND local_day >= $2 AND local_day <= $3 GROUP BY local_day, method",
    )
    .bind(facility)
    .bind(range.from.to_string())
    .bind(range.to.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("local_day")?,
                r.try_get("method")?,
                r.try_get("n")?,
                r.try_get("amount")?,
            ))
        })
        .collect()
}

/// One row per day: the amount of each method, the total and the number of deposits.
fn deposits_table(range: &DateRange, rows: &[(String, String, i64, i64)]) -> Table {
    let mut methods: Vec<String> = METHODS.iter().map(|m| m.to_string()).collect();
    let mut extra: Vec<String> = rows
        .iter()
        .map(|r| r.1.clone())
        .filter(|m| !methods.contains(m))
        .collect();
    extra.sort();
    extra.dedup();
    methods.extend(extra);
    let mut columns = vec![Column::new("day", "Day", Unit::Date)];
    columns.extend(
        methods
            .iter()
            .map(|m| Column::new(m, &label_of(m), Unit::Money)),
    );
    columns.push(Column::new("total", "Total", Unit::Money));
    columns.push(Column::new("deposits", "Deposits", Unit::Count));
    let table_rows = range
        .days()
        .map(|d| {
            let day = d.to_string();
            let mut r = vec![Cell::Text(day.clone())];
            let (mut total, mut count) = (0, 0);
            for m in &methods {
                let (n, a) = rows
                    .iter()
                    .filter(|x| x.0 == day && &x.1 == m)
                    .fold((0, 0), |(n, a), x| (n + x.2, a + x.3));
                total += a;
                count += n;
                r.push(Cell::Money(Money::from_minor(a)));
            }
            r.push(Cell::Money(Money::from_minor(total)));
            r.push(Cell::Int(count));
            r
        })
        .collect();
    Table {
        columns,
        rows: table_rows,
    }
}

/// What inmate and family accounts paid, per (UTC bucket, ledger kind), in minor units:
/// from the rollups for summarised days, from the ledger for the rest.
pub async fn spending(db: &Db, q: &Window<'_>) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    let cov = q.coverage(db, Grain::Slot).await?;
    let mut out = Vec::new();
    for r in cov.raw {
        out.extend(spending_rows(db, &q.part(r)).await?);
    }
    let not = format!(" AND key NOT IN ({})", not_spending_sql());
    for r in cov.rollup {
        let rows = rollup_slots(db, q, "spending", r, &not).await?;
        out.extend(rows.into_iter().map(|(b, k, v, _)| (b, k, v)));
    }
    Ok(out)
}

/// [`spending`] from the ledger's rows.
async fn spending_rows(db: &Db, q: &Window<'_>) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    let not = not_spending_sql();
    let sql = format!(
        "SELECT CAST(t.created_at / $4 AS BIGINT) AS b, {kind} AS kind, \
         CAST(SUM(-e.amount_minor) AS BIGINT) AS v \
         FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
         WHERE t.facility_id = $1 AND t.created_at >= $2 AND t.created_at < $3 \
         AND t.kind NOT IN ({not}) AND {spent} \
         GROUP BY CAST(t.created_at / $4 AS BIGINT), {kind}",
        kind = SPENDING_KIND_SQL,
        spent = SPENT_SQL,
    );
    let rows = sqlx::query(&sql)
        .bind(q.facility)
        .bind(q.start)
        .bind(q.end)
        .bind(q.bucket_us())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("b")?, r.try_get("kind")?, r.try_get("v")?)))
        .collect()
}

/// The facility's revenue accounts (every system account but clearing, refunds and
/// refunds payable): entries and net amount in the range, largest first.
async fn revenue(db: &Db, q: &Window<'_>) -> Result<Table, sqlx::Error> {
    let accounts = sqlx::query(
        "SELECT id FROM accounts WHERE kind = 'system' AND facility_id = $1 ORDER BY id",
    )
    .bind(q.facility)
    .fetch_all(db.pool())
    .await?;
    let prefix = format!("sys:{}:", q.facility);
    let mut lines = Vec::new();
    for a in &accounts {
        let id: String = a.try_get("id")?;
        let name = id.strip_prefix(&prefix).unwrap_or(&id).to_string();
        if NOT_REVENUE.contains(&name.as_str()) {
            continue;
        }
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS v \
             FROM ledger_entries WHERE account_id = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind(&id)
        .bind(q.start)
        .bind(q.end)
        .fetch_one(db.pool())
        .await?;
        let (n, v): (i64, i64) = (r.try_get("n")?, r.try_get("v")?);
        lines.push((name, n, v));
    }
    lines.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let total: i64 = lines.iter().map(|l| l.2).sum();
    let rows = lines
        .into_iter()
        .map(|(name, n, v)| {
            let share = if total > 0 { v * 100 / total } else { 0 };
            vec![
                Cell::Text(label_of(&name)),
                Cell::Int(n),
                Cell::Money(Money::from_minor(v)),
                Cell::Int(share),
            ]
        })
        .collect();
    Ok(Table {
        columns: vec![
            Column::new("account", "Revenue account", Unit::Text),
            Column::new("entries", "Entries", Unit::Count),
            Column::new("amount", "Amount", Unit::Money),
            Column::new("share_percent", "Share (%)", Unit::Count),
        ],
        rows,
    })
}

/// The series of the sessions reports.
const SESSION_KEYS: [&str; 3] = ["calls", "connected_calls", "visits"];

/// Calls, connected calls and visits started per UTC bucket: from the rollups for
/// summarised days, from the sessions for the rest.
pub async fn sessions(db: &Db, q: &Window<'_>) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    let cov = q.coverage(db, Grain::Slot).await?;
    let mut counts = Vec::new();
    for r in cov.raw {
        counts.extend(session_rows(db, &q.part(r)).await?);
    }
    for r in cov.rollup {
        counts.extend(rollup_slots(db, q, "sessions", r, "").await?);
    }
    let mut out = Vec::with_capacity(counts.len() * 2);
    for (b, kind, n, connected) in counts {
        match kind.as_str() {
            "call" => {
                out.push((b, "calls".to_string(), n));
                out.push((b, "connected_calls".to_string(), connected));
            }
            "visit" => out.push((b, "visits".to_string(), n)),
            _ => {}
        }
    }
    Ok(out)
}

/// Per (UTC bucket, kind) from the sessions: started, and accepted.
async fn session_rows(
    db: &Db,
    q: &Window<'_>,
) -> Result<Vec<(i64, String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT CAST(invite_at / $4 AS BIGINT) AS b, kind, COUNT(*) AS n, \
         CAST(SUM(CASE WHEN accepted_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS connected \
         FROM sessions WHERE facility_id = $1 AND invite_at >= $2 AND invite_at < $3 \
         GROUP BY CAST(invite_at / $4 AS BIGINT), kind",
    )
    .bind(q.facility)
    .bind(q.start)
    .bind(q.end)
    .bind(q.bucket_us())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("b")?,
                r.try_get("kind")?,
                r.try_get("n")?,
                r.try_get("connected")?,
            ))
        })
        .collect()
}

/// Talk time of an ended session in whole seconds, as SQL (never negative), as the CDR
/// computes it.
pub(crate) const TALK_SECS: &str = "CASE WHEN COALESCE(media_end_at, end_at) > accepted_at \
     THEN (COALESCE(media_end_at, end_at) - accepted_at) / 1000000 ELSE 0 END";

/// Connected, ended calls by talk-time class; with their number and total seconds.
async fn call_length(db: &Db, q: &Window<'_>) -> Result<(Table, i64, i64), sqlx::Error> {
    let cov = q.coverage(db, Grain::Day).await?;
    let class = length_class_sql("secs");
    let raw_sql = format!(
        "SELECT CAST({class} AS BIGINT) AS c, COUNT(*) AS n, CAST(SUM(secs) AS BIGINT) AS s \
         FROM (SELECT {TALK_SECS} AS secs FROM sessions \
         WHERE facility_id = $1 AND invite_at >= $2 AND invite_at < $3 AND kind = 'call' \
         AND state = 'ended' AND accepted_at IS NOT NULL) x \
         GROUP BY CAST({class} AS BIGINT)"
    );
    let rollup_sql = "SELECT CAST(key AS BIGINT) AS c, CAST(SUM(v1) AS BIGINT) AS n, \
         CAST(SUM(v2) AS BIGINT) AS s FROM report_rollups WHERE facility_id = $1 \
         AND part = 'length' AND period >= $2 AND period < $3 GROUP BY key";
    let mut rows = rows_over(db, q.facility, &raw_sql, &cov.raw, |t| t).await?;
    rows.extend(rows_over(db, q.facility, rollup_sql, &cov.rollup, |t| t / DAY_US).await?);
    let mut counts = [0i64; LENGTH_CLASSES.len()];
    let (mut calls, mut secs) = (0, 0);
    for r in &rows {
        let (c, n, s): (i64, i64, i64) = (r.try_get("c")?, r.try_get("n")?, r.try_get("s")?);
        if let Some(slot) = usize::try_from(c).ok().and_then(|c| counts.get_mut(c)) {
            *slot += n;
        }
        calls += n;
        secs += s;
    }
    let rows = LENGTH_CLASSES
        .iter()
        .zip(counts)
        .map(|((_, label), n)| vec![Cell::Text((*label).to_string()), Cell::Int(n)])
        .collect();
    let t = Table {
        columns: vec![
            Column::new("talk_time", "Talk time", Unit::Text),
            Column::new("calls", "Calls", Unit::Count),
        ],
        rows,
    };
    Ok((t, calls, secs))
}

/// The rows of `sql` (bound to the facility and a range's two ends, each mapped by
/// `period`) over every range of `ranges`: one part of a report's [`Coverage`] at a time.
async fn rows_over(
    db: &Db,
    facility: &str,
    sql: &str,
    ranges: &[(i64, i64)],
    period: impl Fn(i64) -> i64,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut rows = Vec::new();
    for &(a, b) in ranges {
        rows.extend(
            sqlx::query(sql)
                .bind(facility)
                .bind(period(a))
                .bind(period(b))
                .fetch_all(db.pool())
                .await?,
        );
    }
    Ok(rows)
}

/// Ended sessions by end reason: calls and visits, most frequent first.
async fn end_reasons(db: &Db, q: &Window<'_>) -> Result<Table, sqlx::Error> {
    let cov = q.coverage(db, Grain::Day).await?;
    let raw_sql = "SELECT kind, COALESCE(end_reason, '') AS reason, COUNT(*) AS n FROM sessions \
         WHERE facility_id = $1 AND invite_at >= $2 AND invite_at < $3 AND state = 'ended' \
         GROUP BY kind, COALESCE(end_reason, '')";
    let rollup_sql = "SELECT key AS kind, key2 AS reason, CAST(SUM(v1) AS BIGINT) AS n \
         FROM report_rollups WHERE facility_id = $1 AND part = 'reasons' \
         AND period >= $2 AND period < $3 GROUP BY key, key2";
    let mut rows = rows_over(db, q.facility, raw_sql, &cov.raw, |t| t).await?;
    rows.extend(rows_over(db, q.facility, rollup_sql, &cov.rollup, |t| t / DAY_US).await?);
    let mut by: Vec<(String, i64, i64)> = Vec::new();
    for r in &rows {
        let (kind, reason, n): (String, String, i64) =
            (r.try_get("kind")?, r.try_get("reason")?, r.try_get("n")?);
        let reason = if reason.is_empty() {
            "unknown".to_string()
        } else {
            reason
        };
        let i = match by.iter().position(|x| x.0 == reason) {
            Some(i) => i,
            None => {
                by.push((reason, 0, 0));
                by.len() - 1
            }
        };
        if kind == "visit" {
            by[i].2 += n;
        } else {
            by[i].1 += n;
        }
    }
    by.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
    Ok(Table {
        columns: vec![
            Column::new("end_reason", "End reason", Unit::Text),
            Column::new("calls", "Calls", Unit::Count),
            Column::new("visits", "Visits", Unit::Count),
        ],
        rows: by
            .into_iter()
            .map(|(r, c, v)| vec![Cell::Text(r), Cell::Int(c), Cell::Int(v)])
            .collect(),
    })
}

/// The numbers called most (attorney calls left out): calls, connected calls, talk
/// minutes (whole, rounded down) and charges. Summarised months come from the rollups and
/// the rest of the range from the sessions, added up per number in one statement, which
/// returns only the numbers with at least as many calls as the `limit`-th (ties
/// included), so a year's tens of thousands of numbers never leave the database; the
/// order (calls, then number) and the cut are made here.
async fn top_numbers(db: &Db, q: &Window<'_>, limit: i64) -> Result<Table, sqlx::Error> {
    let cov = q.coverage(db, Grain::Month).await?;
    let mut parts = Vec::new();
    let mut binds: Vec<i64> = Vec::new();
    for &(a, b) in &cov.raw {
        let (x, y) = (binds.len() + 2, binds.len() + 3);
        parts.push(format!(
            "SELECT number_e164 AS num, COUNT(*) AS n, \
             SUM(CASE WHEN accepted_at IS NOT NULL THEN 1 ELSE 0 END) AS connected, \
             SUM(CASE WHEN accepted_at IS NOT NULL AND state = 'ended' THEN {TALK_SECS} ELSE 0 END) AS secs, \
             SUM(amount_minor) AS amount \
             FROM sessions WHERE facility_id = $1 AND invite_at >= ${x} AND invite_at < ${y} \
             AND kind = 'call' AND privileged = 0 AND number_e164 IS NOT NULL \
             GROUP BY number_e164"
        ));
        binds.extend([a, b]);
    }
    for &(a, b) in &cov.rollup {
        let (x, y) = (binds.len() + 2, binds.len() + 3);
        parts.push(format!(
            "SELECT key AS num, SUM(v1) AS n, SUM(v2) AS connected, SUM(v3) AS secs, \
             SUM(v4) AS amount FROM report_rollups WHERE facility_id = $1 \
             AND part = 'numbers' AND period >= ${x} AND period < ${y} GROUP BY key"
        ));
        binds.extend([Grain::Month.period(a), Grain::Month.period(b)]);
    }
    let mut top: Vec<(String, [i64; 4])> = Vec::new();
    if !parts.is_empty() && limit > 0 {
        let sql = format!(
            "WITH g AS (SELECT num, CAST(SUM(n) AS BIGINT) AS n, \
             CAST(SUM(connected) AS BIGINT) AS connected, CAST(SUM(secs) AS BIGINT) AS secs, \
             CAST(SUM(amount) AS BIGINT) AS amount FROM ({}) u GROUP BY num) \
             SELECT num, n, connected, secs, amount FROM g WHERE n >= COALESCE(\
             (SELECT n FROM g ORDER BY n DESC LIMIT 1 OFFSET {}), 0)",
            parts.join(" UNION ALL "),
            limit - 1
        );
        let mut query = sqlx::query(&sql).bind(q.facility);
        for v in &binds {
            query = query.bind(*v);
        }
        for r in &query.fetch_all(db.pool()).await? {
            let mut e = [0i64; 4];
            for (i, col) in ["n", "connected", "secs", "amount"].iter().enumerate() {
                e[i] = r.try_get::<i64, _>(*col)?;
            }
            top.push((r.try_get("num")?, e));
        }
    }
    top.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    top.truncate(usize::try_from(limit).unwrap_or(0));
    let out: Vec<Vec<Cell>> = top
        .into_iter()
        .map(|(number, [n, connected, secs, amount])| {
            vec![
                Cell::Text(number),
                Cell::Int(n),
                Cell::Int(connected),
                Cell::Int(secs / 60),
                Cell::Money(Money::from_minor(amount)),
            ]
        })
        .collect();
    Ok(Table {
        columns: vec![
            Column::new("number", "Number", Unit::Text),
            Column::new("calls", "Calls", Unit::Count),
            Column::new("connected", "Connected", Unit::Count),
            Column::new("talk_minutes", "Talk minutes", Unit::Minutes),
            Column::new("amount", "Charged", Unit::Money),
        ],
        rows: out,
    })
}

/// Inmates in custody (not released) booked at least `days` days before `as_of` whose
/// last connected call or visit before `as_of` is older than `days` days, or who have
/// none: longest without contact first.
async fn welfare(
    db: &Db,
    facility: &str,
    tz: Tz,
    as_of: DateTime<Utc>,
    days: i64,
) -> Result<Table, sqlx::Error> {
    let cutoff = to_micros(as_of - chrono::Duration::days(days));
    let rows = sqlx::query(
        "SELECT i.booking_number, i.first_name, i.last_name, i.booked_at, \
         (SELECT MAX(s.accepted_at) FROM sessions s WHERE s.inmate_id = i.id \
          AND s.accepted_at IS NOT NULL AND s.accepted_at < $2) AS last_contact \
         FROM inmates i WHERE i.facility_id = $1 AND i.status <> 'released' AND i.booked_at <= $3",
    )
    .bind(facility)
    .bind(to_micros(as_of))
    .bind(cutoff)
    .fetch_all(db.pool())
    .await?;
    let mut found = Vec::new();
    for r in &rows {
        let last: Option<i64> = r.try_get("last_contact")?;
        if last.is_some_and(|l| l >= cutoff) {
            continue;
        }
        let booked: i64 = r.try_get("booked_at")?;
        let since = last.unwrap_or(booked);
        let days_without = (to_micros(as_of) - since) / 86_400_000_000;
        let first: String = r.try_get("first_name")?;
        let last_name: String = r.try_get("last_name")?;
        found.push((
            days_without,
            r.try_get::<String, _>("booking_number")?,
            format!("{last_name}, {first}"),
            last.map_or_else(|| "never".to_string(), |l| local_minute(tz, from_micros(l))),
        ));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(Table {
        columns: vec![
            Column::new("booking_number", "Booking number", Unit::Text),
            Column::new("name", "Name", Unit::Text),
            Column::new("last_contact", "Last contact", Unit::Text),
            Column::new("days_without_contact", "Days without contact", Unit::Count),
        ],
        rows: found
            .into_iter()
            .map(|(d, b, n, l)| vec![Cell::Text(b), Cell::Text(n), Cell::Text(l), Cell::Int(d)])
            .collect(),
    })
}

/// Money held now in open inmate and family accounts, and what release took out of
/// inmate accounts (owed back to them) in the range.
async fn balances(db: &Db, q: &Window<'_>) -> Result<Table, sqlx::Error> {
    let held = sqlx::query(
        "SELECT kind, COUNT(*) AS n, CAST(COALESCE(SUM(balance_minor), 0) AS BIGINT) AS v \
         FROM accounts WHERE facility_id = $1 AND status = 'open' AND kind IN ('inmate', 'family') \
         GROUP BY kind",
    )
    .bind(q.facility)
    .fetch_all(db.pool())
    .await?;
    let mut inmate = (0i64, 0i64);
    let mut family = (0i64, 0i64);
    for r in &held {
        let (kind, n, v): (String, i64, i64) =
            (r.try_get("kind")?, r.try_get("n")?, r.try_get("v")?);
        if kind == "inmate" {
            inmate = (n, v);
        } else {
            family = (n, v);
        }
    }
    let released = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(-e.amount_minor), 0) AS BIGINT) AS v \
         FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
         WHERE t.facility_id = $1 AND t.kind = 'release' AND t.created_at >= $2 \
         AND t.created_at < $3 AND e.balance_after_minor IS NOT NULL",
    )
    .bind(q.facility)
    .bind(q.start)
    .bind(q.end)
    .fetch_one(db.pool())
    .await?;
    let rel: (i64, i64) = (released.try_get("n")?, released.try_get("v")?);
    let line = |label: &str, (n, v): (i64, i64)| {
        vec![
            Cell::Text(label.to_string()),
            Cell::Int(n),
            Cell::Money(Money::from_minor(v)),
        ]
    };
    Ok(Table {
        columns: vec![
            Column::new("balance", "Balance", Unit::Text),
            Column::new("accounts", "Accounts", Unit::Count),
            Column::new("amount", "Amount", Unit::Money),
        ],
        rows: vec![
            line("held in open inmate accounts", inmate),
            line("held in open family prepaid accounts", family),
            line("refunded at release in the range", rel),
        ],
    })
}
