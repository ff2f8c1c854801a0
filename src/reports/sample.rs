//! A synthetic facility-year for the reports' benchmark and tests: one facility, its
//! inmates (booked through the store, as staff would), and a year of calls, video visits,
//! commissary purchases and deposits written straight into the tables, a day per
//! database transaction (a million calls through the call flow would take days), then a
//! few releases through the ledger as staff would do them. The loaded tables' non-unique
//! indexes are dropped for the load and made again after it, as the migrations wrote
//! them (building an index once from sorted rows is far cheaper than a million random
//! inserts into it).
//!
//! Everything is drawn from a seeded generator, so a spec always writes the same data,
//! and [`Totals`] counts what was written as it is written: the tests compare the reports
//! with these totals and with direct SQL.
//!
//! What is written is what the gateway itself writes: a `sessions` row per call or visit
//! (ended, with its end reason, tariff, times and charge), and double-entry ledger
//! postings that keep every balance at or above zero (a call is cut when the money runs
//! out, a purchase without the money is not made). One simplification: a session's
//! charge is one ledger transaction (increment 1, the whole amount), where the gateway
//! posts one per billing increment. On PostgreSQL the tables are vacuumed and analyzed at
//! the end, as autovacuum would soon after a load this size.

use crate::clock::{Clock, ManualClock};
use crate::db::{to_micros, Backend, Db};
use crate::ledger::RequestKey;
use crate::store::{Booking, NewFacility, Store, StoreError};
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::sync::Arc;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub facility_id: String,
    pub time_zone: String,
    /// The facility-local calendar year the data covers.
    pub year: i32,
    pub inmates: u32,
    pub calls: u64,
    pub deposits: u64,
    /// Video visits (in addition to the calls).
    pub visits: u64,
    /// Commissary purchases attempted (one without the money is not made).
    pub purchases: u64,
    /// Inmates released, spread over the year (their balance refunded at release).
    pub releases: u32,
    pub seed: u64,
}

impl Spec {
    /// A large facility's year: 1,000,000 calls and 200,000 deposits.
    pub fn facility_year(facility_id: &str) -> Spec {
        Spec {
            facility_id: facility_id.to_string(),
            time_zone: "America/Chicago".to_string(),
            year: 2025,
            inmates: 2_000,
            calls: 1_000_000,
            deposits: 200_000,
            visits: 25_000,
            purchases: 100_000,
            releases: 120,
            seed: 7,
        }
    }
}

/// What was written, counted as it was written (amounts in minor units).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub connected_calls: u64,
    /// Talk seconds of the connected calls, summed.
    pub talk_secs: i64,
    pub call_charges: i64,
    pub visits: u64,
    pub visit_charges: i64,
    pub purchases: u64,
    pub purchase_amount: i64,
    /// Per method: (count, amount).
    pub deposits: HashMap<String, (u64, i64)>,
    /// Releases that refunded a balance, and what they refunded.
    pub releases_refunded: u64,
    pub released_amount: i64,
    /// Inmates who never had a call or visit.
    pub silent_inmates: u64,
    /// What the open inmate accounts hold at the end.
    pub held: i64,
}

/// Why generation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("{0}")]
    Spec(String),
}

/// splitmix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How many calls start in each local hour, relative (calling hours 07:00-22:00).
const HOUR_WEIGHTS: [u64; 24] = [
    0, 0, 0, 0, 0, 0, 1, 6, 8, 9, 10, 10, 9, 9, 10, 10, 11, 12, 13, 13, 12, 10, 6, 1,
];
/// Per-minute rates, minor units: calls 0.21, visits 0.10.
const CALL_RATE: i64 = 2_100;
const VISIT_RATE: i64 = 1_000;
/// The longest call (the rate plan's maximum), seconds.
const MAX_CALL_SECS: i64 = 1_800;
const VISIT_SECS: i64 = 1_200;
/// Rows per INSERT statement.
const BATCH: usize = 400;

#[derive(Clone, Copy)]
enum Event {
    Call,
    Visit,
    Purchase,
    Deposit,
}

/// One inmate as the generator tracks them.
struct Person {
    id: String,
    account: String,
    balance: i64,
    released: bool,
    /// Never calls or visits (the welfare report finds them).
    silent: bool,
    contacted: bool,
}

/// Rows waiting for their INSERT.
#[derive(Default)]
struct Pending {
    sessions: Vec<[Val; 22]>,
    txns: Vec<[Val; 7]>,
    entries: Vec<[Val; 6]>,
    deposits: Vec<[Val; 10]>,
}

#[derive(Clone)]
enum Val {
    I(i64),
    T(String),
    NullI,
    NullT,
}

/// Writes `spec`'s facility-year into `db` (migrated, without that facility) and returns
/// what it wrote.
pub async fn generate(db: &Db, spec: &Spec) -> Result<Totals, SampleError> {
    let tz: Tz = spec
        .time_zone
        .parse()
        .map_err(|_| SampleError::Spec(format!("time_zone: unknown zone '{}'", spec.time_zone)))?;
    let first = NaiveDate::from_ymd_opt(spec.year, 1, 1)
        .ok_or_else(|| SampleError::Spec("year: out of range".into()))?;
    let days: Vec<NaiveDate> = first
        .iter_days()
        .take_while(|d| d.year() == spec.year)
        .collect();
    let start = super::day_start(tz, first);
    let clock = Arc::new(ManualClock::new(start - Duration::days(30)));
    let store = Store::new(db.clone(), clock.clone() as Arc<dyn Clock>, "report-sample");
    let facility: NewFacility = serde_json::from_value(serde_json::json!({
        "id": spec.facility_id,
        "name": format!("{} (generated)", spec.facility_id),
        "time_zone": spec.time_zone,
        "deposit_max": "500.00",
        "deposit_daily_max": "1000.00",
    }))
    .map_err(|e| SampleError::Spec(e.to_string()))?;
    store.create_facility(facility).await?;
    // The loaded tables' secondary indexes are built once after the load (a sort) rather
    // than updated row by row (a million random B-tree inserts each).
    let indexes = drop_secondary_indexes(db).await?;
    let mut rng = Rng(spec.seed);
    let mut people = Vec::with_capacity(spec.inmates as usize);
    for i in 0..spec.inmates {
        let b = Booking {
            booking_number: format!("G{:06}", i + 1),
            first_name: FIRST[(i as usize) % FIRST.len()].to_string(),
            last_name: LAST[(i as usize / FIRST.len()) % LAST.len()].to_string(),
            pin: None,
            calling_id: None,
            housing_unit: None,
        };
        let inmate = store.book_inmate(&spec.facility_id, b).await?;
        people.push(Person {
            id: inmate.id,
            account: inmate.account_id,
            balance: 0,
            released: false,
            silent: i % 50 == 7,
            contacted: false,
        });
    }
    let sys = |name: &str| format!("sys:{}:{name}", spec.facility_id);
    let (clearing, call_rev, visit_rev, commissary) = (
        sys("deposits_clearing"),
        sys("call_revenue"),
        sys("visit_revenue"),
        sys("commissary"),
    );
    let mut next_txn: i64 = {
        use sqlx::Row;
        let r = sqlx::query(
            "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) AS m FROM ledger_transactions",
        )
        .fetch_one(db.pool())
        .await?;
        r.try_get::<i64, _>("m")? + 1
    };
    let mut totals = Totals::default();
    let n_days = days.len() as u64;
    let share = |total: u64, d: u64| total / n_days + u64::from(d < total % n_days);
    let release_days: Vec<u64> = (0..u64::from(spec.releases))
        .map(|k| {
            (k * n_days) / u64::from(spec.releases.max(1))
                + n_days / (2 * u64::from(spec.releases.max(1)))
        })
        .collect();
    let mut seq: u64 = 0;
    for (d, day) in days.iter().enumerate() {
        let d = d as u64;
        let mut events: Vec<(i64, Event)> = Vec::new();
        let plan = [
            (share(spec.calls, d), Event::Call),
            (share(spec.visits, d), Event::Visit),
            (share(spec.purchases, d), Event::Purchase),
            (share(spec.deposits, d), Event::Deposit),
        ];
        for (n, kind) in plan {
            for _ in 0..n {
                events.push((local_instant(tz, *day, &mut rng), kind));
            }
        }
        events.sort_by_key(|e| e.0);
        let mut p = Pending::default();
        let local_day = day.to_string();
        for (at, kind) in events {
            seq += 1;
            // Someone in custody (and, for a call or visit, not one of the silent): drawn
            // again until found, so the spec's numbers are what is written.
            let sessions = matches!(kind, Event::Call | Event::Visit);
            let fits = |x: &Person| !(x.released || (sessions && x.silent));
            let mut who = rng.below(people.len() as u64) as usize;
            for _ in 0..256 {
                if people.get(who).is_some_and(fits) {
                    break;
                }
                who = rng.below(people.len() as u64) as usize;
            }
            let Some(person) = people.get_mut(who).filter(|x| fits(x)) else {
                continue;
            };
            match kind {
                Event::Deposit => {
                    let (method, weight) = match rng.below(10) {
                        0..=5 => ("online", 1),
                        6..=8 => ("kiosk", 1),
                        _ => ("money_order", 2),
                    };
                    let amount = (5 + rng.below(20) as i64 * 5 * weight) * 10_000;
                    person.balance += amount;
                    let txn = next_txn;
                    next_txn += 1;
                    p.txns
                        .push(txn_row(txn, "deposit", None, &spec.facility_id, at));
                    p.entries.push(entry(
                        txn,
                        &person.account,
                        amount,
                        Some(person.balance),
                        at,
                    ));
                    p.entries.push(entry(txn, &clearing, -amount, None, at));
                    p.deposits.push([
                        Val::T(format!("gd-{}-{seq}", spec.facility_id)),
                        Val::T(person.account.clone()),
                        Val::T(spec.facility_id.clone()),
                        Val::T(method.into()),
                        Val::I(amount),
                        Val::T("posted".into()),
                        Val::I(txn),
                        Val::I(at),
                        Val::T(local_day.clone()),
                        Val::T("generated".into()),
                    ]);
                    let t = totals.deposits.entry(method.to_string()).or_default();
                    t.0 += 1;
                    t.1 += amount;
                }
                Event::Purchase => {
                    let amount = (1 + rng.below(30) as i64) * 10_000;
                    if person.balance < amount {
                        continue;
                    }
                    person.balance -= amount;
                    let txn = next_txn;
                    next_txn += 1;
                    p.txns
                        .push(txn_row(txn, "purchase", None, &spec.facility_id, at));
                    p.entries.push(entry(
                        txn,
                        &person.account,
                        -amount,
                        Some(person.balance),
                        at,
                    ));
                    p.entries.push(entry(txn, &commissary, amount, None, at));
                    totals.purchases += 1;
                    totals.purchase_amount += amount;
                }
                Event::Call | Event::Visit => {
                    let visit = matches!(kind, Event::Visit);
                    let s = session(&mut rng, visit, person.balance, seq);
                    let id = format!("gs-{}-{seq}", spec.facility_id);
                    let accepted = s.accepted.then_some(at + 15_000_000);
                    let end = accepted.map_or(at + 30_000_000, |a| a + s.secs * 1_000_000);
                    if s.cost > 0 {
                        person.balance -= s.cost;
                        let txn = next_txn;
                        next_txn += 1;
                        let (tkind, rev) = if visit {
                            ("visit_charge", &visit_rev)
                        } else {
                            ("call_charge", &call_rev)
                        };
                        p.txns
                            .push(txn_row(txn, tkind, Some(&id), &spec.facility_id, end));
                        p.entries.push(entry(
                            txn,
                            &person.account,
                            -s.cost,
                            Some(person.balance),
                            end,
                        ));
                        p.entries.push(entry(txn, rev, s.cost, None, end));
                    }
                    if visit {
                        totals.visits += 1;
                        totals.visit_charges += s.cost;
                    } else {
                        totals.calls += 1;
                        totals.call_charges += s.cost;
                        if s.accepted {
                            totals.connected_calls += 1;
                            totals.talk_secs += s.secs;
                        }
                    }
                    person.contacted |= s.accepted;
                    let number = 15_550_000_000 + (rng.unit().powi(3) * 20_000.0) as i64;
                    p.sessions.push([
                        Val::T(id),
                        Val::T(if visit { "visit" } else { "call" }.into()),
                        Val::T(spec.facility_id.clone()),
                        Val::T(person.id.clone()),
                        Val::T(person.account.clone()),
                        if visit {
                            Val::T(String::new())
                        } else {
                            Val::T(number.to_string())
                        },
                        if visit {
                            Val::NullT
                        } else {
                            Val::T(format!("+{number}"))
                        },
                        Val::T(if visit { "video" } else { "audio" }.into()),
                        Val::I(if visit { VISIT_RATE } else { CALL_RATE }),
                        Val::I(60),
                        Val::T(s.reason.into()),
                        Val::I(i64::from(s.privileged)),
                        Val::I(at),
                        accepted.map_or(Val::NullI, Val::I),
                        accepted.map_or(Val::NullI, Val::I),
                        Val::I(end),
                        accepted.map_or(Val::NullI, |_| Val::I(end)),
                        Val::I(end),
                        Val::I(i64::from(s.cost > 0)),
                        Val::I(s.cost),
                        Val::T("local".into()),
                        Val::T(if visit {
                            String::new()
                        } else {
                            "domestic".into()
                        }),
                    ]);
                }
            }
        }
        // One transaction per day (about 2,700 calls and their postings at 1,000,000 a
        // year), in statements of BATCH rows.
        flush(db, &mut p).await?;
        // Releases: the balance is set as the postings left it, then the ledger refunds it.
        if release_days.contains(&d) {
            sync_sequence(db).await?;
        }
        for (k, _) in release_days.iter().enumerate().filter(|(_, rd)| **rd == d) {
            let idx = (k * 13 + 5) % people.len().max(1);
            let Some(person) = people.get_mut(idx).filter(|x| !x.released) else {
                continue;
            };
            set_balance(db, &person.account, person.balance).await?;
            clock.set_wall(super::day_start(tz, *day) + Duration::hours(23));
            let key = RequestKey::new("sample", &format!("release-{}", person.id))
                .map_err(|e| SampleError::Spec(e.to_string()))?;
            let (_, rel) = store.release_inmate(&key, &person.id).await?;
            if rel.transaction_id.is_some() {
                totals.releases_refunded += 1;
                totals.released_amount += rel.refunded.to_minor();
            }
            person.released = true;
            person.balance = 0;
            next_txn = next_txn.max(rel.transaction_id.unwrap_or(0) + 1);
        }
    }
    for person in people.iter().filter(|p| !p.released) {
        set_balance(db, &person.account, person.balance).await?;
        totals.held += person.balance;
    }
    totals.silent_inmates = people
        .iter()
        .filter(|p| !p.contacted && !p.released)
        .count() as u64;
    sync_sequence(db).await?;
    for sql in &indexes {
        sqlx::query(sql).execute(db.pool()).await?;
    }
    // Rows dated in the past, written around the gateway: no summary may predate them.
    super::rollup::forget(db, &spec.facility_id).await?;
    if db.backend() == Backend::Postgres {
        // What autovacuum would do after a bulk load: statistics for the planner and the
        // visibility map for index-only scans.
        sqlx::query("VACUUM ANALYZE").execute(db.pool()).await?;
    }
    clock.set_wall(super::day_start(
        tz,
        days.last().copied().unwrap_or(first) + Duration::days(1),
    ));
    Ok(totals)
}

const FIRST: [&str; 10] = [
    "Alex", "Blake", "Casey", "Dana", "Emery", "Finley", "Gray", "Harper", "Indy", "Jordan",
];
const LAST: [&str; 10] = [
    "Adams", "Brooks", "Cole", "Diaz", "Evans", "Ford", "Grant", "Hayes", "Irwin", "Jones",
];

/// A random instant of a local day, in Unix microseconds, by the hour weights.
fn local_instant(tz: Tz, day: NaiveDate, rng: &mut Rng) -> i64 {
    let total: u64 = HOUR_WEIGHTS.iter().sum();
    let mut pick = rng.below(total);
    let mut hour = 0u32;
    for (h, w) in HOUR_WEIGHTS.iter().enumerate() {
        if pick < *w {
            hour = h as u32;
            break;
        }
        pick -= w;
    }
    let secs = rng.below(3600) as u32;
    let local = day
        .and_hms_opt(hour, secs / 60, secs % 60)
        .unwrap_or_default();
    let t = tz
        .from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&local));
    to_micros(t) + rng.below(1_000_000) as i64
}

struct SessionDraw {
    accepted: bool,
    secs: i64,
    cost: i64,
    reason: &'static str,
    privileged: bool,
}

/// One call or visit: whether it connected, for how long, what it cost (never more than
/// `balance`) and how it ended.
fn session(rng: &mut Rng, visit: bool, balance: i64, seq: u64) -> SessionDraw {
    let rate = if visit { VISIT_RATE } else { CALL_RATE };
    let privileged = !visit && seq % 53 == 0;
    if balance < rate && !privileged {
        return SessionDraw {
            accepted: false,
            secs: 0,
            cost: 0,
            reason: "insufficient_funds",
            privileged,
        };
    }
    if !visit && rng.below(100) < 15 {
        let reason = ["no_answer", "busy", "declined"][rng.below(3) as usize];
        return SessionDraw {
            accepted: false,
            secs: 0,
            cost: 0,
            reason,
            privileged,
        };
    }
    let (mut secs, mut reason) = if visit {
        let s = VISIT_SECS - rng.below(300) as i64 * i64::from(rng.below(3) == 0);
        let r = if s == VISIT_SECS {
            "slot_ended"
        } else {
            ["visitor_left", "inmate_left"][rng.below(2) as usize]
        };
        (s, r)
    } else {
        let s = (rng.unit().powf(1.6) * (MAX_CALL_SECS + 120) as f64) as i64;
        if s >= MAX_CALL_SECS {
            (MAX_CALL_SECS, "max_duration")
        } else {
            (s, ["caller_hangup", "callee_hangup"][rng.below(2) as usize])
        }
    };
    // Attorney calls are free; the others are charged per started minute, up to what
    // the balance pays for (then the call is cut).
    if privileged {
        return SessionDraw {
            accepted: true,
            secs,
            cost: 0,
            reason,
            privileged,
        };
    }
    let mut minutes = (secs + 59) / 60;
    let affordable = balance / rate;
    if minutes > affordable {
        minutes = affordable;
        secs = affordable * 60;
        reason = "funds_exhausted";
    }
    SessionDraw {
        accepted: true,
        secs,
        cost: minutes * rate,
        reason,
        privileged,
    }
}

fn txn_row(id: i64, kind: &str, session: Option<&str>, facility: &str, at: i64) -> [Val; 7] {
    [
        Val::I(id),
        Val::T(kind.into()),
        session.map_or(Val::NullT, |s| Val::T(s.into())),
        session.map_or(Val::NullI, |_| Val::I(1)),
        Val::T(facility.into()),
        Val::T("generated".into()),
        Val::I(at),
    ]
}

fn entry(txn: i64, account: &str, amount: i64, after: Option<i64>, at: i64) -> [Val; 6] {
    [
        Val::I(txn),
        Val::T(account.into()),
        Val::I(amount),
        after.map_or(Val::NullI, Val::I),
        Val::I(at),
        Val::NullI,
    ]
}

/// The tables the generator loads in bulk.
const LOADED: [&str; 4] = [
    "sessions",
    "ledger_transactions",
    "ledger_entries",
    "deposits",
];

/// Drops the non-unique indexes of the [`LOADED`] tables (unique ones stay: the store's
/// writes during the load, releases, rely on them) and returns the statements that make
/// them again, as the migrations wrote them.
async fn drop_secondary_indexes(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::Row;
    let tables = LOADED
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = match db.backend() {
        Backend::Sqlite => format!(
            "SELECT name, sql AS def FROM sqlite_master WHERE type = 'index' \
             AND tbl_name IN ({tables}) AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%' \
             ORDER BY name"
        ),
        Backend::Postgres => format!(
            "SELECT CAST(indexname AS TEXT) AS name, CAST(indexdef AS TEXT) AS def FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename IN ({tables}) \
             AND indexdef NOT LIKE 'CREATE UNIQUE%' ORDER BY indexname"
        ),
    };
    let rows = sqlx::query(&sql).fetch_all(db.pool()).await?;
    let mut made = Vec::with_capacity(rows.len());
    for r in &rows {
        let (name, def): (String, String) = (r.try_get("name")?, r.try_get("def")?);
        sqlx::query(&format!("DROP INDEX \"{name}\""))
            .execute(db.pool())
            .await?;
        made.push(def);
    }
    Ok(made)
}

/// On PostgreSQL, moves the transaction ids' sequence past the ids written here, so the
/// ledger's own next transaction gets a free one (SQLite's AUTOINCREMENT follows by itself).
async fn sync_sequence(db: &Db) -> Result<(), sqlx::Error> {
    if db.backend() == Backend::Postgres {
        sqlx::query(
            "SELECT CAST(setval(pg_get_serial_sequence('ledger_transactions', 'id'), \
             (SELECT MAX(id) FROM ledger_transactions)) AS BIGINT) AS v",
        )
        .fetch_optional(db.pool())
        .await?;
    }
    Ok(())
}

async fn set_balance(db: &Db, account: &str, balance: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET balance_minor = $1 WHERE id = $2")
        .bind(balance)
        .bind(account)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Writes the pending rows (transactions before their entries and deposits) in one
/// database transaction.
async fn flush(db: &Db, p: &mut Pending) -> Result<(), sqlx::Error> {
    let pg = db.backend() == Backend::Postgres;
    let mut tx = db.begin_write().await.map_err(|e| match e {
        crate::db::DbError::Sqlx(s) => s,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    let over = if pg { " OVERRIDING SYSTEM VALUE" } else { "" };
    insert(
        &mut tx,
        &format!(
            "INSERT INTO ledger_transactions (id, kind, session_id, increment, facility_id, memo, created_at){over}"
        ),
        "",
        &std::mem::take(&mut p.txns),
    )
    .await?;
    let entries: Vec<[Val; 5]> = std::mem::take(&mut p.entries)
        .into_iter()
        .map(|e| {
            let [a, b, c, d, e, _] = e;
            [a, b, c, d, e]
        })
        .collect();
    insert(
        &mut tx,
        "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, balance_after_minor, created_at)",
        "",
        &entries,
    )
    .await?;
    insert(
        &mut tx,
        "INSERT INTO deposits (id, account_id, facility_id, method, amount_minor, status, \
         transaction_id, created_at, local_day, depositor)",
        "",
        &std::mem::take(&mut p.deposits),
    )
    .await?;
    insert(
        &mut tx,
        "INSERT INTO sessions (id, kind, facility_id, inmate_id, account_id, dialed, number_e164, \
         service, per_minute_minor, increment_secs, end_reason, privileged, invite_at, answer_at, \
         accepted_at, end_at, media_end_at, closed_at, billed_increments, amount_minor, node_id, class, state)",
        ",'ended'",
        &std::mem::take(&mut p.sessions),
    )
    .await?;
    tx.commit().await
}

/// `head VALUES (…, tail), (…, tail)` for `rows`, in statements of at most [`BATCH`]
/// rows; `tail` is SQL appended to every row (constants).
async fn insert<const N: usize>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    head: &str,
    tail: &str,
    rows: &[[Val; N]],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(BATCH) {
        let mut sql = String::with_capacity(head.len() + chunk.len() * N * 7);
        sql.push_str(head);
        sql.push_str(" VALUES ");
        let mut n = 0;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            for j in 0..N {
                if j > 0 {
                    sql.push(',');
                }
                n += 1;
                sql.push_str(&format!("${n}"));
            }
            sql.push_str(tail);
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for row in chunk {
            for v in row {
                q = match v {
                    Val::I(i) => q.bind(*i),
                    Val::T(t) => q.bind(t.clone()),
                    Val::NullI => q.bind(None::<i64>),
                    Val::NullT => q.bind(None::<String>),
                };
            }
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
