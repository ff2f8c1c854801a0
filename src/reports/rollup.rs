//! Report rollups: the sums the slow reports add up (calls and visits per 15-minute slot,
//! spending per slot, call lengths and end reasons per day, calls per number per month),
//! written once per facility for each UTC day that is over, and read instead of that
//! day's raw rows. Nothing is written on the call path: a report summarises what its range
//! needs before it reads ([`refresh`]), and every node's background task
//! ([`spawn`]) summarises the days just ended so that reports find them ready.
//!
//! # When a day is summarised, and why it is never wrong
//!
//! A UTC day is summarised for a facility when
//!
//! - it ended at least [`SETTLE`] ago (sessions are written when they are invited and
//!   ledger transactions when they are posted, both with the time of the writer's clock:
//!   the margin covers clocks apart and writes in flight), and
//! - no session of the facility invited that day is still open. An ended session's row
//!   never changes again (every update of a session's times, reason, number or charge is
//!   for `state = 'active'` only, and a debit after the close is refused), so a call that
//!   ends late keeps its day on the raw rows until it has ended.
//!
//! What can still arrive in a summarised day is a ledger transaction written with a past
//! date (an import, a correction): each refresh looks at the transactions written since
//! the last one ([`report_rollup_ledger`](self), by id) and sends any day they are dated
//! in back to the raw rows, to be summarised again. A deposit's status (posted later,
//! refunded) changes its day's deposits report: that report reads the deposits
//! themselves, through an index that holds everything it reads, and has no rollup.
//!
//! Anything else that writes rows dated in the past (the report generator of
//! [`super::sample`], a restore) calls [`forget`] for the facility afterwards.
//!
//! # How a report reads them
//!
//! [`coverage`] splits a report's UTC range into the part the rollups cover (whole
//! summarised periods inside the range; for 15-minute parts, any summarised slot inside
//! it: a facility's local midnight is on a 15-minute boundary in every zone) and the raw
//! rest, which the report reads as it always did. Every sum is additive, so the report's
//! numbers are the raw rows' numbers whichever way each part was read.

use crate::clock::Clock;
use crate::db::{to_micros, Backend, Db};
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use sqlx::Row;
use std::sync::Arc;

/// How long after a UTC day ends it may be summarised.
pub const SETTLE: Duration = Duration::hours(1);
/// A 15-minute slot and a day, in microseconds.
pub const SLOT_US: i64 = 900_000_000;
pub const DAY_US: i64 = 86_400_000_000;
/// How far back the background task summarises (the longest report range).
const BACKGROUND_DAYS: i64 = super::MAX_RANGE_DAYS;

/// What a part of the rollups is summarised by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// 15-minute slots of summarised days.
    Slot,
    Day,
    /// UTC calendar months whose every day is summarised.
    Month,
}

impl Grain {
    /// The period holding instant `us`.
    pub fn period(self, us: i64) -> i64 {
        match self {
            Grain::Slot => us.div_euclid(SLOT_US),
            Grain::Day => us.div_euclid(DAY_US),
            Grain::Month => {
                let t = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
                i64::from(t.year()) * 12 + i64::from(t.month0())
            }
        }
    }

    /// The first instant of period `p`.
    pub fn start(self, p: i64) -> i64 {
        match self {
            Grain::Slot => p * SLOT_US,
            Grain::Day => p * DAY_US,
            Grain::Month => {
                let (y, m) = (p.div_euclid(12), p.rem_euclid(12));
                i32::try_from(y)
                    .ok()
                    .and_then(|y| Utc.with_ymd_and_hms(y, m as u32 + 1, 1, 0, 0, 0).single())
                    .map_or(0, to_micros)
            }
        }
    }

    /// The first period boundary at or after `us`.
    fn ceil(self, us: i64) -> i64 {
        let p = self.period(us);
        if self.start(p) == us {
            us
        } else {
            self.start(p + 1)
        }
    }

    fn floor(self, us: i64) -> i64 {
        self.start(self.period(us))
    }

    fn name(self) -> &'static str {
        match self {
            Grain::Month => "month",
            Grain::Slot | Grain::Day => "day",
        }
    }
}

/// A report range split: `rollup` (UTC microsecond intervals to read from the rollups,
/// each on boundaries of the part's grain) and `raw` (the rest, to read from the rows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    pub rollup: Vec<(i64, i64)>,
    pub raw: Vec<(i64, i64)>,
}

impl Coverage {
    /// Everything from the raw rows.
    pub fn raw(start: i64, end: i64) -> Coverage {
        Coverage {
            rollup: Vec::new(),
            raw: if start < end {
                vec![(start, end)]
            } else {
                Vec::new()
            },
        }
    }
}

/// Splits `[start, end)` given the summarised intervals `done` (sorted, disjoint, on
/// boundaries of `grain`'s marker: days, or months).
pub fn split(grain: Grain, done: &[(i64, i64)], start: i64, end: i64) -> Coverage {
    if grain == Grain::Slot && (start % SLOT_US != 0 || end % SLOT_US != 0) {
        return Coverage::raw(start, end);
    }
    let (lo, hi) = (grain.ceil(start), grain.floor(end));
    let mut c = Coverage::default();
    let mut at = start;
    for &(a, b) in done {
        let (a, b) = (a.max(lo), b.min(hi));
        if a >= b {
            continue;
        }
        if at < a {
            c.raw.push((at, a));
        }
        c.rollup.push((a, b));
        at = b;
    }
    if at < end {
        c.raw.push((at, end));
    }
    c
}

/// The summarised intervals of `facility` for `grain` overlapping `[start, end)`, merged.
async fn done(
    db: &Db,
    facility: &str,
    grain: Grain,
    start: i64,
    end: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    // Slots are summarised with their day.
    let grain = if grain == Grain::Slot {
        Grain::Day
    } else {
        grain
    };
    let rows = sqlx::query(
        "SELECT period FROM report_rollup_periods WHERE facility_id = $1 AND grain = $2 \
         AND period >= $3 AND period <= $4 ORDER BY period",
    )
    .bind(facility)
    .bind(grain.name())
    .bind(grain.period(start))
    .bind(grain.period(end))
    .fetch_all(db.pool())
    .await?;
    let mut out: Vec<(i64, i64)> = Vec::new();
    for r in &rows {
        let p: i64 = r.try_get("period")?;
        let (a, b) = (grain.start(p), grain.start(p + 1));
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    Ok(out)
}

/// How `[start, end)` of `facility` is read for a part of `grain`.
pub async fn coverage(
    db: &Db,
    facility: &str,
    grain: Grain,
    start: i64,
    end: i64,
) -> Result<Coverage, sqlx::Error> {
    if start >= end {
        return Ok(Coverage::default());
    }
    let d = done(db, facility, grain, start, end).await?;
    Ok(split(grain, &d, start, end))
}

/// Summarises what `[start, end)` of `facility` needs (the settled days in it, and the
/// months they complete) as of `now`, after sending back to the raw rows any day a
/// ledger transaction written since the last check is dated in. Each day and month is its
/// own short transaction.
pub async fn refresh(
    db: &Db,
    facility: &str,
    start: i64,
    end: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let settled = Grain::Day.floor(to_micros(now - SETTLE));
    // Nothing before the month of the facility's first session or transaction needs
    // summarising (that month whole, so that it can be summarised per number).
    let Some(earliest) = earliest(db, facility).await? else {
        return Ok(());
    };
    let start = start.max(Grain::Month.floor(earliest));
    let (first, last) = (
        Grain::Day.period(start),
        Grain::Day.period(end.min(settled) - 1),
    );
    if end.min(settled) <= start || first > last {
        return Ok(());
    }
    check_ledger(db, facility, settled).await?;
    let have = done(db, facility, Grain::Day, start, end.min(settled)).await?;
    let open = open_days(db, facility).await?;
    let (mut days_built, mut months_built) = (0usize, 0usize);
    for day in first..=last {
        let at = Grain::Day.start(day);
        if have.iter().any(|&(a, b)| a <= at && at < b) || open.contains(&day) {
            continue;
        }
        days_built += usize::from(build_day(db, facility, day, now).await?);
    }
    // Months whose every day is summarised now.
    let (m0, m1) = (
        Grain::Month.period(start),
        Grain::Month.period(end.min(settled) - 1),
    );
    let months = done(db, facility, Grain::Month, start, end.min(settled)).await?;
    for m in m0..=m1 {
        let (a, b) = (Grain::Month.start(m), Grain::Month.start(m + 1));
        if b > settled || months.iter().any(|&(x, y)| x <= a && a < y) {
            continue;
        }
        let days = done(db, facility, Grain::Day, a, b - 1).await?;
        if days.first().is_some_and(|&(x, y)| x <= a && y >= b) {
            months_built += usize::from(build_month(db, facility, m, now).await?);
        }
    }
    if db.backend() == Backend::Postgres && (months_built > 0 || days_built >= ANALYZE_DAYS) {
        // The planner's statistics of the rollups, after many rows were added at once (a
        // first summary of past data, a month's numbers): without them PostgreSQL
        // estimates one row, sorts a year's numbers on disk and top numbers takes 1.3 s
        // instead of 0.25 s on a large facility's year. Autovacuum does the same later,
        // if it runs.
        sqlx::query("ANALYZE report_rollups")
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

/// How many days summarised at once call for fresh planner statistics of the rollups
/// (one day's rows do not change them much; the hourly task summarises one at a time).
const ANALYZE_DAYS: usize = 7;

/// When `facility`'s first session or ledger transaction is dated, if it has any.
async fn earliest(db: &Db, facility: &str) -> Result<Option<i64>, sqlx::Error> {
    let mut first: Option<i64> = None;
    for sql in [
        "SELECT invite_at AS t FROM sessions WHERE facility_id = $1 ORDER BY invite_at LIMIT 1",
        "SELECT created_at AS t FROM ledger_transactions WHERE facility_id = $1 \
         ORDER BY created_at LIMIT 1",
    ] {
        if let Some(r) = sqlx::query(sql)
            .bind(facility)
            .fetch_optional(db.pool())
            .await?
        {
            let t: i64 = r.try_get("t")?;
            first = Some(first.map_or(t, |f| f.min(t)));
        }
    }
    Ok(first)
}

/// The UTC days in which a session of `facility` is still open (the open sessions are
/// few: they are read through the index on the state alone and filtered here).
async fn open_days(db: &Db, facility: &str) -> Result<Vec<i64>, sqlx::Error> {
    let rows = sqlx::query("SELECT facility_id, invite_at FROM sessions WHERE state = 'active'")
        .fetch_all(db.pool())
        .await?;
    let mut days = Vec::new();
    for r in &rows {
        if r.try_get::<String, _>("facility_id")? == facility {
            days.push(r.try_get::<i64, _>("invite_at")?.div_euclid(DAY_US));
        }
    }
    Ok(days)
}

/// Sends back to the raw rows the summarised days (before `settled`) that a ledger
/// transaction written since the last check is dated in, then records the newest id seen.
async fn check_ledger(db: &Db, facility: &str, settled: i64) -> Result<(), sqlx::Error> {
    let newest: i64 =
        sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) AS m FROM ledger_transactions")
            .fetch_one(db.pool())
            .await?
            .try_get("m")?;
    let checked: Option<i64> =
        sqlx::query("SELECT checked_id FROM report_rollup_ledger WHERE facility_id = $1")
            .bind(facility)
            .fetch_optional(db.pool())
            .await?
            .map(|r| r.try_get("checked_id"))
            .transpose()?;
    let Some(checked) = checked else {
        // Nothing summarised yet: every transaction so far is read by the first summaries.
        sqlx::query(
            "INSERT INTO report_rollup_ledger (facility_id, checked_id) VALUES ($1, $2) \
             ON CONFLICT (facility_id) DO NOTHING",
        )
        .bind(facility)
        .bind(newest)
        .execute(db.pool())
        .await?;
        return Ok(());
    };
    if newest <= checked {
        return Ok(());
    }
    // Read by id alone (the transactions since the last check, of every facility), so no
    // planner walks the facility's whole history instead.
    let since = sqlx::query(
        "SELECT facility_id, created_at FROM ledger_transactions WHERE id > $1 AND id <= $2",
    )
    .bind(checked)
    .bind(newest)
    .fetch_all(db.pool())
    .await?;
    let mut late = Vec::new();
    for r in &since {
        let at: i64 = r.try_get("created_at")?;
        let of: Option<String> = r.try_get("facility_id")?;
        if at < settled && of.as_deref() == Some(facility) {
            late.push(at.div_euclid(DAY_US));
        }
    }
    late.sort_unstable();
    late.dedup();
    let mut tx = db.begin().await?;
    for &day in &late {
        tracing::info!(facility, day = %crate::db::from_micros(day * DAY_US).date_naive(),
            "a ledger transaction dated in a summarised day: summarising it again");
        unsummarise(&mut tx, facility, day).await?;
    }
    sqlx::query(
        "UPDATE report_rollup_ledger SET checked_id = $2 WHERE facility_id = $1 AND checked_id < $2",
    )
    .bind(facility)
    .bind(newest)
    .execute(&mut tx)
    .await?;
    tx.commit().await
}

/// Removes day `day`'s summaries (and its month's) in `tx`.
async fn unsummarise(
    tx: &mut crate::db::Conn,
    facility: &str,
    day: i64,
) -> Result<(), sqlx::Error> {
    let month = Grain::Month.period(Grain::Day.start(day));
    let (s0, s1) = (day * (DAY_US / SLOT_US), (day + 1) * (DAY_US / SLOT_US));
    for (grain, p) in [("day", day), ("month", month)] {
        sqlx::query(
            "DELETE FROM report_rollup_periods WHERE facility_id = $1 AND grain = $2 AND period = $3",
        )
        .bind(facility)
        .bind(grain)
        .bind(p)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "DELETE FROM report_rollups WHERE facility_id = $1 AND \
         ((part IN ('sessions', 'spending') AND period >= $2 AND period < $3) \
          OR (part IN ('length', 'reasons') AND period = $4) \
          OR (part = 'numbers' AND period = $5))",
    )
    .bind(facility)
    .bind(s0)
    .bind(s1)
    .bind(day)
    .bind(month)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Claims period `(grain, p)` of `facility` in `tx`: `false` if it is summarised already.
async fn claim(
    tx: &mut crate::db::Conn,
    facility: &str,
    grain: &str,
    p: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO report_rollup_periods (facility_id, grain, period, built_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (facility_id, grain, period) DO NOTHING",
    )
    .bind(facility)
    .bind(grain)
    .bind(p)
    .bind(to_micros(now))
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Summarises UTC day `day` of `facility`, unless a session of that day is open (checked
/// again inside the transaction) or it is summarised already. Whether it was.
async fn build_day(
    db: &Db,
    facility: &str,
    day: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let (a, b) = (Grain::Day.start(day), Grain::Day.start(day + 1));
    let mut tx = db.begin().await?;
    let open: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM sessions WHERE state = 'active' AND facility_id = $1 \
         AND invite_at >= $2 AND invite_at < $3",
    )
    .bind(facility)
    .bind(a)
    .bind(b)
    .fetch_one(&mut tx)
    .await?
    .try_get("n")?;
    if open > 0 || !claim(&mut tx, facility, "day", day, now).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    // Rows of an earlier summary whose marker was removed by hand go first.
    sqlx::query(
        "DELETE FROM report_rollups WHERE facility_id = $1 AND \
         ((part IN ('sessions', 'spending') AND period >= $2 AND period < $3) \
          OR (part IN ('length', 'reasons') AND period = $4))",
    )
    .bind(facility)
    .bind(a / SLOT_US)
    .bind(b / SLOT_US)
    .bind(day)
    .execute(&mut tx)
    .await?;
    let class = super::length_class_sql("secs");
    let talk = super::store::TALK_SECS;
    let not_spending = super::store::not_spending_sql();
    let statements = [
        "INSERT INTO report_rollups (facility_id, part, period, key, v1, v2) \
         SELECT $1, 'sessions', CAST(invite_at / 900000000 AS BIGINT), kind, COUNT(*), \
         CAST(SUM(CASE WHEN accepted_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) \
         FROM sessions WHERE facility_id = $1 AND invite_at >= $2 AND invite_at < $3 \
         GROUP BY CAST(invite_at / 900000000 AS BIGINT), kind"
            .to_string(),
        format!(
            "INSERT INTO report_rollups (facility_id, part, period, key, v1) \
             SELECT $1, 'spending', CAST(t.created_at / 900000000 AS BIGINT), {kind}, \
             CAST(SUM(-e.amount_minor) AS BIGINT) \
             FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
             WHERE t.facility_id = $1 AND t.created_at >= $2 AND t.created_at < $3 \
             AND t.kind NOT IN ({not_spending}) AND {spent} \
             GROUP BY CAST(t.created_at / 900000000 AS BIGINT), {kind}",
            kind = super::store::SPENDING_KIND_SQL,
            spent = super::store::SPENT_SQL,
        ),
        format!(
            "INSERT INTO report_rollups (facility_id, part, period, key, v1, v2) \
             SELECT $1, 'length', $4, CAST(c AS TEXT), COUNT(*), CAST(SUM(secs) AS BIGINT) \
             FROM (SELECT CAST({class} AS BIGINT) AS c, secs FROM (SELECT {talk} AS secs \
             FROM sessions WHERE facility_id = $1 AND invite_at >= $2 AND invite_at < $3 \
             AND kind = 'call' AND state = 'ended' AND accepted_at IS NOT NULL) x) y GROUP BY c"
        ),
        "INSERT INTO report_rollups (facility_id, part, period, key, key2, v1) \
         SELECT $1, 'reasons', $4, kind, COALESCE(end_reason, ''), COUNT(*) FROM sessions \
         WHERE facility_id = $1 AND invite_at >= $2 AND invite_at < $3 AND state = 'ended' \
         GROUP BY kind, COALESCE(end_reason, '')"
            .to_string(),
    ];
    for sql in &statements {
        let mut q = sqlx::query(sql).bind(facility).bind(a).bind(b);
        if sql.contains("$4") {
            q = q.bind(day);
        }
        q.execute(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Summarises the calls per number of UTC month `month` (every day of which is).
async fn build_month(
    db: &Db,
    facility: &str,
    month: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let (a, b) = (Grain::Month.start(month), Grain::Month.start(month + 1));
    let mut tx = db.begin().await?;
    if !claim(&mut tx, facility, "month", month, now).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM report_rollups WHERE facility_id = $1 AND part = 'numbers' AND period = $2",
    )
    .bind(facility)
    .bind(month)
    .execute(&mut tx)
    .await?;
    let talk = super::store::TALK_SECS;
    sqlx::query(&format!(
        "INSERT INTO report_rollups (facility_id, part, period, key, v1, v2, v3, v4) \
         SELECT $1, 'numbers', $4, number_e164, COUNT(*), \
         CAST(SUM(CASE WHEN accepted_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN accepted_at IS NOT NULL AND state = 'ended' THEN {talk} ELSE 0 END) AS BIGINT), \
         CAST(SUM(amount_minor) AS BIGINT) \
         FROM sessions WHERE facility_id = $1 AND invite_at >= $2 AND invite_at < $3 \
         AND kind = 'call' AND privileged = 0 AND number_e164 IS NOT NULL \
         GROUP BY number_e164"
    ))
    .bind(facility)
    .bind(a)
    .bind(b)
    .bind(month)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Drops every summary of `facility` (after rows dated in the past were written some
/// other way than the gateway's own: the reports' generator, a restore). The next report
/// or background run summarises again.
pub async fn forget(db: &Db, facility: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for table in [
        "report_rollup_periods",
        "report_rollups",
        "report_rollup_ledger",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE facility_id = $1"))
            .bind(facility)
            .execute(&mut tx)
            .await?;
    }
    tx.commit().await
}

/// Summarises every facility's settled days of the last two years, now and then every
/// `every`, in the background (a node's start summarises what the reports will read).
pub fn spawn(db: Db, clock: Arc<dyn Clock>, every: std::time::Duration) {
    tokio::spawn(async move {
        loop {
            let now = clock.wall();
            let end = to_micros(now);
            let start = end - BACKGROUND_DAYS * DAY_US;
            match facilities(&db).await {
                Ok(list) => {
                    for f in list {
                        if let Err(e) = refresh(&db, &f, start, end, now).await {
                            tracing::warn!(facility = %f, error = %e, "report rollups not refreshed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "report rollups: facilities not read"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

async fn facilities(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT id FROM facilities ORDER BY id")
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(|r| r.try_get("id")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(y: i32, m: u32, d: u32, h: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .map_or(0, to_micros)
    }

    #[test]
    fn months_round_trip() {
        let t = us(2025, 3, 17, 5);
        let p = Grain::Month.period(t);
        assert_eq!(p, 2025 * 12 + 2);
        assert_eq!(Grain::Month.start(p), us(2025, 3, 1, 0));
        assert_eq!(Grain::Month.start(p + 10), us(2026, 1, 1, 0));
        assert_eq!(Grain::Month.ceil(us(2025, 3, 1, 0)), us(2025, 3, 1, 0));
        assert_eq!(Grain::Month.ceil(t), us(2025, 4, 1, 0));
    }

    #[test]
    fn a_range_is_split_on_summarised_periods() {
        // Chicago's 2025: 06:00 UTC on 1 January to 06:00 UTC on 1 January 2026.
        let (start, end) = (us(2025, 1, 1, 6), us(2026, 1, 1, 6));
        // Days summarised: 1-10 January and 12 January onwards to 31 December.
        let done = [
            (us(2025, 1, 1, 0), us(2025, 1, 11, 0)),
            (us(2025, 1, 12, 0), us(2026, 1, 1, 0)),
        ];
        let slots = split(Grain::Slot, &done, start, end);
        assert_eq!(
            slots.rollup,
            vec![
                (start, us(2025, 1, 11, 0)),
                (us(2025, 1, 12, 0), us(2026, 1, 1, 0))
            ]
        );
        assert_eq!(
            slots.raw,
            vec![
                (us(2025, 1, 11, 0), us(2025, 1, 12, 0)),
                (us(2026, 1, 1, 0), end)
            ]
        );
        let days = split(Grain::Day, &done, start, end);
        assert_eq!(days.rollup[0], (us(2025, 1, 2, 0), us(2025, 1, 11, 0)));
        assert_eq!(days.raw[0], (start, us(2025, 1, 2, 0)));
        let months = split(
            Grain::Month,
            &[(us(2025, 2, 1, 0), us(2026, 1, 1, 0))],
            start,
            end,
        );
        assert_eq!(months.rollup, vec![(us(2025, 2, 1, 0), us(2026, 1, 1, 0))]);
        assert_eq!(
            months.raw,
            vec![(start, us(2025, 2, 1, 0)), (us(2026, 1, 1, 0), end)]
        );
        // Nothing summarised, or a range off the 15-minute grid: all raw.
        assert_eq!(
            split(Grain::Day, &[], start, end),
            Coverage::raw(start, end)
        );
        assert_eq!(
            split(Grain::Slot, &done, start + 1, end),
            Coverage::raw(start + 1, end)
        );
    }
}
