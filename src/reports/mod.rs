//! Facility reports: deposits, spending and revenue by service, calls and visits by day
//! and hour, call lengths, end reasons, top numbers, inmates without contact (welfare),
//! and balances held and refunded at release.
//!
//! Two parts, as everywhere in sallyport:
//!
//! - this module is the pure core: the report names, a facility-local date range and the
//!   UTC instants it covers, the time buckets queries group by, and the shaping of rows
//!   into one [`Table`] per report (the chart, the accessible table and the CSV are all
//!   drawn from that one table, so they cannot disagree);
//! - [`store`] holds every report's SQL (one query or two each, written once for SQLite
//!   and PostgreSQL) and returns rows;
//! - [`rollup`] summarises the days that are over, once, for the reports that would
//!   otherwise read a year of calls or charges row by row (they read the summaries for
//!   those days and the rows for the rest, with the same numbers);
//! - [`sample`] writes a synthetic facility-year (calls, visits, deposits, purchases,
//!   releases) with known totals, for the benchmark and the tests.
//!
//! Times are grouped by the facility's local day and hour. SQL cannot convert to a time
//! zone on SQLite, so the queries group by UTC buckets as long as the largest step that
//! divides every UTC offset the zone has in the range ([`bucket_secs`]: an hour for most
//! zones, 30 or 15 minutes for the others), and this module puts each bucket on its local
//! day and hour with `chrono-tz`. A bucket never straddles a local hour.
//!
//! Spending is grouped by the ledger's transaction kind, read from the data: a kind this
//! code has never heard of appears under its own name.

pub mod rollup;
pub mod sample;
pub mod store;

use crate::money::Money;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::BTreeMap;

/// The longest range a report covers, in days (two years).
pub const MAX_RANGE_DAYS: i64 = 731;
/// Welfare: the default and the bounds of "no contact for N days".
pub const WELFARE_DEFAULT_DAYS: i64 = 14;
pub const WELFARE_MAX_DAYS: i64 = 365;
/// Top numbers: the default and largest list.
pub const TOP_DEFAULT: i64 = 20;
pub const TOP_MAX: i64 = 200;

/// Every report, by the name its URL uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportName {
    Deposits,
    Spending,
    Revenue,
    SessionsDaily,
    SessionsHourly,
    CallLength,
    EndReasons,
    TopNumbers,
    Welfare,
    Balances,
}

impl ReportName {
    pub const ALL: [ReportName; 10] = [
        ReportName::Deposits,
        ReportName::Spending,
        ReportName::Revenue,
        ReportName::SessionsDaily,
        ReportName::SessionsHourly,
        ReportName::CallLength,
        ReportName::EndReasons,
        ReportName::TopNumbers,
        ReportName::Welfare,
        ReportName::Balances,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportName::Deposits => "deposits",
            ReportName::Spending => "spending",
            ReportName::Revenue => "revenue",
            ReportName::SessionsDaily => "sessions-daily",
            ReportName::SessionsHourly => "sessions-hourly",
            ReportName::CallLength => "call-length",
            ReportName::EndReasons => "end-reasons",
            ReportName::TopNumbers => "top-numbers",
            ReportName::Welfare => "welfare",
            ReportName::Balances => "balances",
        }
    }

    pub fn parse(s: &str) -> Option<ReportName> {
        ReportName::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            ReportName::Deposits => "Deposits by method and day",
            ReportName::Spending => "Spending by service and day",
            ReportName::Revenue => "Revenue per service",
            ReportName::SessionsDaily => "Calls and visits per day",
            ReportName::SessionsHourly => "Calls and visits by hour of day",
            ReportName::CallLength => "Call length",
            ReportName::EndReasons => "End reasons",
            ReportName::TopNumbers => "Top numbers called",
            ReportName::Welfare => "Inmates with no contact",
            ReportName::Balances => "Balances held and refunded at release",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            ReportName::Deposits => {
                "Posted deposits per facility-local day (the day each counts against), by method."
            }
            ReportName::Spending => {
                "What inmate and family accounts paid, per local day, by the ledger's kind of transaction."
            }
            ReportName::Revenue => {
                "Net amount credited to each of the facility's revenue accounts in the range."
            }
            ReportName::SessionsDaily => {
                "Calls and visits started per local day; connected: the ones accepted."
            }
            ReportName::SessionsHourly => {
                "Calls and visits started in the range, by local hour of the day."
            }
            ReportName::CallLength => {
                "Connected calls that ended, by talk time; the average is in the summary."
            }
            ReportName::EndReasons => "Ended calls and visits by end reason.",
            ReportName::TopNumbers => {
                "The numbers called most (attorney calls left out), with connected calls, talk minutes and charges."
            }
            ReportName::Welfare => {
                "Inmates in custody with no connected call or visit for the given number of days before the end of the range."
            }
            ReportName::Balances => {
                "Money held now in open inmate and family accounts, and what release refunded in the range."
            }
        }
    }
}

/// Why a report request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("{0}: must be a date, YYYY-MM-DD")]
    BadDate(&'static str),
    #[error("from: must not be after to")]
    Reversed,
    #[error("the range is longer than {MAX_RANGE_DAYS} days")]
    TooLong,
    #[error("{name}: must be a whole number from {min} to {max}")]
    OutOfBounds {
        name: &'static str,
        min: i64,
        max: i64,
    },
    #[error("no such report '{0}'")]
    UnknownReport(String),
}

/// A range of facility-local days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DateRange {
    pub fn parse(from: &str, to: &str) -> Result<DateRange, ReportError> {
        let day = |s: &str, name| {
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| ReportError::BadDate(name))
        };
        let (from, to) = (day(from, "from")?, day(to, "to")?);
        if from > to {
            return Err(ReportError::Reversed);
        }
        if (to - from).num_days() + 1 > MAX_RANGE_DAYS {
            return Err(ReportError::TooLong);
        }
        Ok(DateRange { from, to })
    }

    /// Every day of the range, in order.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> {
        self.from.iter_days().take_while({
            let to = self.to;
            move |d| *d <= to
        })
    }

    /// The UTC instants the range covers in `tz`: the start of `from` (inclusive) to the
    /// start of the day after `to` (exclusive).
    pub fn instants(&self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            day_start(tz, self.from),
            day_start(tz, self.to + Duration::days(1)),
        )
    }
}

/// The first instant of a local day (a day that starts in a DST gap starts when the gap
/// ends).
pub fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let mut t = day.and_time(chrono::NaiveTime::MIN);
    for _ in 0..8 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.with_timezone(&Utc);
        }
        t += Duration::minutes(15);
    }
    // No zone has a gap of two hours at midnight; fall back to the UTC reading.
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// The bucket, in seconds, queries group times by for `tz` over `[start, end)`: the
/// largest of an hour, 30 and 15 minutes that divides every UTC offset the zone has then,
/// so that each bucket lies in one local hour.
pub fn bucket_secs(tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    let mut offsets = Vec::new();
    let mut t = start;
    while t <= end {
        offsets.push(i64::from(
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        ));
        t += Duration::hours(12);
    }
    offsets.push(i64::from(
        tz.offset_from_utc_datetime(&end.naive_utc())
            .fix()
            .local_minus_utc(),
    ));
    [3600, 1800, 900]
        .into_iter()
        .find(|b| offsets.iter().all(|o| o % b == 0))
        .unwrap_or(60)
}

/// The local date and time at the start of UTC bucket `bucket` (of `secs` seconds).
pub fn local_of_bucket(tz: Tz, bucket: i64, secs: i64) -> NaiveDateTime {
    let utc = DateTime::<Utc>::from_timestamp(bucket.saturating_mul(secs), 0).unwrap_or_default();
    utc.with_timezone(&tz).naive_local()
}

/// How a column's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A local date, `YYYY-MM-DD`.
    Date,
    /// A local hour of the day, 0-23.
    Hour,
    Text,
    Count,
    /// An amount, a string in the one written form of [`Money`].
    Money,
    Minutes,
}

/// One column: its key (the CSV header), label and unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub key: String,
    pub label: String,
    pub unit: Unit,
}

impl Column {
    pub fn new(key: &str, label: &str, unit: Unit) -> Column {
        Column {
            key: key.to_string(),
            label: label.to_string(),
            unit,
        }
    }
}

/// One value of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Text(String),
    Int(i64),
    Money(Money),
}

impl Cell {
    /// The value as a CSV field: text a spreadsheet would run as a formula (starting with
    /// `=`, `@`, a tab or a carriage return, or `+`/`-` not followed by digits only) gets
    /// a leading `'`; numbers, amounts and E.164 numbers stay as they are.
    pub fn csv_text(&self) -> String {
        let s = self.text();
        let Cell::Text(t) = self else { return s };
        let risky = match t.chars().next() {
            Some('=' | '@' | '\t' | '\r') => true,
            Some('+' | '-') => !t[1..].chars().all(|c| c.is_ascii_digit()) || t.len() == 1,
            _ => false,
        };
        if risky {
            format!("'{s}")
        } else {
            s
        }
    }

    pub fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Money(m) => m.to_string(),
        }
    }
}

/// A report's numbers: what the chart draws, the page's table shows and the CSV holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// How the page draws the table: bars or lines, the column on the x axis and the columns
/// drawn as series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chart {
    pub kind: &'static str,
    pub x: usize,
    pub series: Vec<usize>,
}

/// A whole report as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: ReportName,
    pub title: &'static str,
    pub description: &'static str,
    pub facility_id: String,
    pub time_zone: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Figures that are not in the table (an average, the date balances are read at).
    pub summary: Vec<(String, String)>,
    pub chart: Chart,
    pub table: Table,
}

/// The table as CSV: a header of the column keys, then the rows (amounts in their written
/// form, `12.50`).
pub fn to_csv(table: &Table) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let head: Vec<&str> = table.columns.iter().map(|c| c.key.as_str()).collect();
    let mut ok = w.write_record(&head).is_ok();
    for row in &table.rows {
        ok &= w.write_record(row.iter().map(Cell::csv_text)).is_ok();
    }
    let bytes = w.into_inner().unwrap_or_default();
    debug_assert!(ok, "writing CSV to memory does not fail");
    String::from_utf8(bytes).unwrap_or_default()
}

/// A label for a stored name: `money_order` → `money order`.
pub fn label_of(name: &str) -> String {
    name.replace('_', " ")
}

/// Rows of (UTC bucket, key, value) summed per local day of `range` and per key: one row
/// per day (every day, zeros included), one column per key (`keys` first in that order,
/// then any other key found, by name), then a total column. `money`: values are minor
/// units.
pub fn per_day(
    tz: Tz,
    bucket: i64,
    range: &DateRange,
    rows: &[(i64, String, i64)],
    keys: &[&str],
    money: bool,
) -> Table {
    let mut all: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let mut extra: Vec<String> = rows
        .iter()
        .map(|r| r.1.clone())
        .filter(|k| !all.contains(k))
        .collect();
    extra.sort();
    extra.dedup();
    all.extend(extra);
    let mut sums: BTreeMap<(NaiveDate, usize), i64> = BTreeMap::new();
    for (b, key, v) in rows {
        let day = local_of_bucket(tz, *b, bucket).date();
        if let Some(i) = all.iter().position(|k| k == key) {
            *sums.entry((day, i)).or_default() += v;
        }
    }
    let unit = if money { Unit::Money } else { Unit::Count };
    let mut columns = vec![Column::new("day", "Day", Unit::Date)];
    columns.extend(all.iter().map(|k| Column::new(k, &label_of(k), unit)));
    columns.push(Column::new("total", "Total", unit));
    let cell = |v: i64| {
        if money {
            Cell::Money(Money::from_minor(v))
        } else {
            Cell::Int(v)
        }
    };
    let rows = range
        .days()
        .map(|d| {
            let vals: Vec<i64> = (0..all.len())
                .map(|i| sums.get(&(d, i)).copied().unwrap_or(0))
                .collect();
            let mut r = vec![Cell::Text(d.to_string())];
            r.extend(vals.iter().map(|v| cell(*v)));
            r.push(cell(vals.iter().sum()));
            r
        })
        .collect();
    Table { columns, rows }
}

/// Rows of (UTC bucket, key, count) summed per local hour of the day (0-23) and per key.
pub fn per_hour(tz: Tz, bucket: i64, rows: &[(i64, String, i64)], keys: &[&str]) -> Table {
    let mut sums = vec![vec![0i64; keys.len()]; 24];
    for (b, key, v) in rows {
        let hour = local_of_bucket(tz, *b, bucket).hour() as usize;
        if let (Some(i), Some(h)) = (keys.iter().position(|k| k == key), sums.get_mut(hour)) {
            h[i] += v;
        }
    }
    let mut columns = vec![Column::new("hour", "Hour", Unit::Hour)];
    columns.extend(
        keys.iter()
            .map(|k| Column::new(k, &label_of(k), Unit::Count)),
    );
    let rows = sums
        .into_iter()
        .enumerate()
        .map(|(h, vals)| {
            let mut r = vec![Cell::Int(h as i64)];
            r.extend(vals.into_iter().map(Cell::Int));
            r
        })
        .collect();
    Table { columns, rows }
}

/// The talk-time classes of the call-length report: (lower bound in seconds, label).
pub const LENGTH_CLASSES: [(i64, &str); 8] = [
    (0, "under 1 min"),
    (60, "1-2 min"),
    (120, "2-5 min"),
    (300, "5-10 min"),
    (600, "10-15 min"),
    (900, "15-20 min"),
    (1200, "20-30 min"),
    (1800, "30 min or more"),
];

/// The class of a talk time of `secs` seconds (an index into [`LENGTH_CLASSES`]).
pub fn length_class(secs: i64) -> usize {
    LENGTH_CLASSES
        .iter()
        .rposition(|(lo, _)| secs >= *lo)
        .unwrap_or(0)
}

/// The SQL `CASE` giving [`length_class`] of the expression `secs`.
pub fn length_class_sql(secs: &str) -> String {
    let mut s = String::from("CASE");
    for (i, (lo, _)) in LENGTH_CLASSES.iter().enumerate().rev() {
        s.push_str(&format!(" WHEN {secs} >= {lo} THEN {i}"));
    }
    s.push_str(" ELSE 0 END");
    s
}

/// `secs` as `m:ss`.
pub fn minutes_seconds(secs: i64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// Seconds as whole minutes, rounded up (how a billed minute counts), for tables.
pub fn minutes_up(secs: i64) -> i64 {
    (secs + 59).div_euclid(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> Tz {
        name.parse().unwrap_or(Tz::UTC)
    }

    #[test]
    fn names_round_trip_and_unknown_is_none() {
        for r in ReportName::ALL {
            assert_eq!(ReportName::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::json!(r.as_str()))
            );
        }
        assert_eq!(ReportName::parse("nope"), None);
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(
            DateRange::parse("2025-13-01", "2025-01-02"),
            Err(ReportError::BadDate("from"))
        );
        assert_eq!(
            DateRange::parse("2025-01-03", "2025-01-02"),
            Err(ReportError::Reversed)
        );
        assert_eq!(
            DateRange::parse("2023-01-01", "2025-01-02"),
            Err(ReportError::TooLong)
        );
        let r = DateRange::parse("2025-03-08", "2025-03-10").unwrap_or(DateRange {
            from: NaiveDate::MIN,
            to: NaiveDate::MIN,
        });
        assert_eq!(r.days().count(), 3);
    }

    #[test]
    fn range_instants_follow_the_zone_across_dst() {
        let chicago = tz("America/Chicago");
        let r = DateRange::parse("2025-03-09", "2025-03-09").unwrap_or(DateRange {
            from: NaiveDate::MIN,
            to: NaiveDate::MIN,
        });
        let (a, b) = r.instants(chicago);
        assert_eq!(a.to_rfc3339(), "2025-03-09T06:00:00+00:00");
        assert_eq!(b.to_rfc3339(), "2025-03-10T05:00:00+00:00");
        assert_eq!(
            (b - a).num_hours(),
            23,
            "the spring-forward day is 23 hours"
        );
    }

    #[test]
    fn buckets_divide_every_offset() {
        let y0 = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let y1 = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(bucket_secs(tz("America/Chicago"), y0, y1), 3600);
        assert_eq!(bucket_secs(tz("Asia/Kolkata"), y0, y1), 1800);
        assert_eq!(bucket_secs(tz("Asia/Kathmandu"), y0, y1), 900);
        assert_eq!(bucket_secs(tz("Australia/Adelaide"), y0, y1), 1800);
    }

    #[test]
    fn per_day_puts_buckets_on_local_days_and_fills_gaps() {
        let chicago = tz("America/Chicago");
        let r = DateRange::parse("2025-01-01", "2025-01-03").unwrap_or(DateRange {
            from: NaiveDate::MIN,
            to: NaiveDate::MIN,
        });
        // 2025-01-02 03:00 UTC is 2025-01-01 21:00 in Chicago.
        let h = |y, m, d, hh| {
            Utc.with_ymd_and_hms(y, m, d, hh, 0, 0)
                .single()
                .unwrap_or_default()
                .timestamp()
                / 3600
        };
        let rows = vec![
            (h(2025, 1, 2, 3), "kiosk".to_string(), 10_000),
            (h(2025, 1, 2, 7), "online".to_string(), 25_000),
            (h(2025, 1, 2, 7), "wire".to_string(), 5_000),
        ];
        let t = per_day(chicago, 3600, &r, &rows, &["online", "kiosk"], true);
        let keys: Vec<&str> = t.columns.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["day", "online", "kiosk", "wire", "total"]);
        assert_eq!(t.rows.len(), 3);
        let text: Vec<Vec<String>> = t
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::text).collect())
            .collect();
        assert_eq!(text[0], ["2025-01-01", "0.00", "1.00", "0.00", "1.00"]);
        assert_eq!(text[1], ["2025-01-02", "2.50", "0.00", "0.50", "3.00"]);
        assert_eq!(text[2], ["2025-01-03", "0.00", "0.00", "0.00", "0.00"]);
        let csv = to_csv(&t);
        assert_eq!(
            csv.lines().next(),
            Some("day,online,kiosk,wire,total"),
            "{csv}"
        );
        assert_eq!(csv.lines().nth(2), Some("2025-01-02,2.50,0.00,0.50,3.00"));
    }

    #[test]
    fn per_hour_uses_local_hours_in_half_hour_zones() {
        let kolkata = tz("Asia/Kolkata");
        // 2025-01-01 00:30 UTC is 06:00 in Kolkata; bucket of 30 minutes.
        let b = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 30, 0)
            .single()
            .unwrap_or_default()
            .timestamp()
            / 1800;
        let t = per_hour(
            kolkata,
            1800,
            &[(b, "call".into(), 3), (b + 1, "visit".into(), 2)],
            &["call", "visit"],
        );
        assert_eq!(t.rows.len(), 24);
        assert_eq!(t.rows[6], vec![Cell::Int(6), Cell::Int(3), Cell::Int(2)]);
        let total: i64 = t
            .rows
            .iter()
            .map(|r| match (&r[1], &r[2]) {
                (Cell::Int(a), Cell::Int(b)) => a + b,
                _ => 0,
            })
            .sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn length_classes_match_their_sql() {
        assert_eq!(length_class(0), 0);
        assert_eq!(length_class(59), 0);
        assert_eq!(length_class(60), 1);
        assert_eq!(length_class(299), 2);
        assert_eq!(length_class(1799), 6);
        assert_eq!(length_class(7200), 7);
        let sql = length_class_sql("x");
        assert!(sql.starts_with("CASE WHEN x >= 1800 THEN 7"), "{sql}");
        assert_eq!(minutes_seconds(754), "12:34");
        assert_eq!(minutes_up(61), 2);
        assert_eq!(minutes_up(0), 0);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let t = Table {
            columns: vec![
                Column::new("name", "Name", Unit::Text),
                Column::new("n", "N", Unit::Count),
            ],
            rows: vec![vec![Cell::Text("Doe, \"J\"".into()), Cell::Int(3)]],
        };
        assert_eq!(to_csv(&t), "name,n\n\"Doe, \"\"J\"\"\",3\n");
    }
}
