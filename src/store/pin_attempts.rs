//! The ID + PIN attempt log (`pin_attempts`), the lines calls come from (`pin_lines`) and
//! the facility-wide guessing alerts (`pin_alerts`): what the lockout of
//! [`crate::policy::lockout`] counts and where it keeps the lines' locks.
//!
//! Every attempt is a row, written once its PIN was compared (`valid` or `wrong`, or
//! `locked` when it was refused as locked) together with the count of the failures
//! before it ([`Store::record_pin_attempt`]).
//! A row names the facility, the handset, the line (`remote_addr`), the inmate when the ID
//! named one, and a `target` grouping failures by ID: never the digits. Earlier versions
//! wrote a row `pending` before comparing; one left so by a node that died counts, after
//! [`STALE_PENDING`](crate::policy::lockout::STALE_PENDING), as the failure it may have
//! been and decays like one.

use super::inmates::StoredPin;
use super::{Inmate, Store, StoreError};
use crate::db::Conn;
use crate::db::{from_micros, to_micros, Backend};
use crate::policy::lockout::{Counting, Failures, Lock, LockState, Subject};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::Row;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Written by an earlier version before deciding (a failure once stale).
    Pending,
    /// The ID and PIN named the inmate.
    Valid,
    /// A wrong pair (unknown ID or wrong PIN).
    Wrong,
    /// Refused unchecked: the inmate, handset or line was locked.
    Locked,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Pending => "pending",
            AttemptOutcome::Valid => "valid",
            AttemptOutcome::Wrong => "wrong",
            AttemptOutcome::Locked => "locked",
        }
    }
}

/// Who made an attempt, and at what.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    pub facility_id: &'a str,
    /// `None` for an entry at a visit station (counted as its line).
    pub handset_id: Option<&'a str>,
    /// The source address of the call (a station's `station:<id>`).
    pub line: &'a str,
    /// The inmate the keyed ID names, if any.
    pub inmate_id: Option<&'a str>,
    /// The inmate id, or a keyed digest of an ID naming nobody
    /// ([`crate::policy::pin::unknown_id_tag`]).
    pub target: &'a str,
}

/// Failed entries of a facility within a window: the facility-wide picture the guessing
/// alert is raised on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuessingPattern {
    pub failures: u64,
    /// Distinct IDs keyed (known or not).
    pub ids: u64,
    pub handsets: u64,
    pub lines: u64,
}

/// One lock in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinLock {
    /// `inmate`, `handset` or `line`.
    pub subject: &'static str,
    /// The inmate or handset id, or the line's address.
    pub id: String,
    /// A booking number or handset name (empty for a line).
    pub name: String,
    pub locked_until: DateTime<Utc>,
}

/// A failure: counts until decided otherwise.
const FAILED: &str = "outcome IN ('pending', 'wrong')";

/// The advisory lock key of one subject's attempts (PostgreSQL): the first 8 bytes of
/// SHA-256 over a label, the subject, the facility and the key.
fn subject_lock_key(subject: Subject, facility_id: &str, key: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in ["pin_attempts", subject.as_str(), facility_id, key] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// Inserts an attempt, decided; its id.
async fn insert_attempt(
    conn: &mut Conn,
    a: &NewAttempt<'_>,
    outcome: AttemptOutcome,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO pin_attempts (facility_id, handset_id, inmate_id, success, remote_addr, \
         at, outcome, target) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING id",
    )
    .bind(a.facility_id)
    .bind(a.handset_id)
    .bind(a.inmate_id)
    .bind(bool_to_i64(outcome == AttemptOutcome::Valid))
    .bind(a.line)
    .bind(to_micros(now))
    .bind(outcome.as_str())
    .bind(a.target)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("id")?)
}

/// Each subject's failures (`key` is the inmate id, the handset id, or the line's address
/// in `facility_id`) recorded before attempt `before`, counted as its `Counting` says: one
/// statement for all of them, the counts in the order of `subjects`. Only failures are
/// read (`outcome IN ('wrong', 'pending')`, the predicate of the partial indexes of
/// migration 0009; the other outcomes count nothing), so the cost follows the failures
/// of the day, not the entries.
async fn failures_before(
    conn: &mut Conn,
    facility_id: &str,
    subjects: &[(Subject, &str, Counting)],
    before: i64,
) -> Result<Vec<Failures>, StoreError> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::with_capacity(subjects.len());
    for (n, (subject, _, _)) in subjects.iter().enumerate() {
        // $1 facility, $2 the attempt; then five per subject: key, recent from, daily
        // from, stale before, the earlier of the two starts.
        let p = 3 + 5 * n;
        let (key, recent, daily, stale, from) = (p, p + 1, p + 2, p + 3, p + 4);
        let who = match subject {
            Subject::Inmate => format!("inmate_id = ${key} AND facility_id = $1"),
            Subject::Handset => format!("handset_id = ${key} AND facility_id = $1"),
            Subject::Line => format!("facility_id = $1 AND remote_addr = ${key}"),
        };
        let failed = format!("(outcome = 'wrong' OR (outcome = 'pending' AND at < ${stale}))");
        parts.push(format!(
            "SELECT {n} AS n, \
             COALESCE(SUM(CASE WHEN at >= ${recent} AND {failed} THEN 1 ELSE 0 END), 0) AS recent, \
             COALESCE(SUM(CASE WHEN at >= ${daily} AND {failed} THEN 1 ELSE 0 END), 0) AS daily \
             FROM pin_attempts WHERE {who} AND outcome IN ('wrong', 'pending') \
             AND at >= ${from} AND id < $2"
        ));
    }
    let sql = format!("{} ORDER BY n", parts.join(" UNION ALL "));
    let mut q = sqlx::query(&sql).bind(facility_id).bind(before);
    for (_, key, c) in subjects {
        q = q
            .bind(*key)
            .bind(to_micros(c.recent_from))
            .bind(to_micros(c.daily_from))
            .bind(to_micros(c.stale_before))
            .bind(to_micros(c.recent_from.min(c.daily_from)));
    }
    let rows = q.fetch_all(&mut *conn).await?;
    if rows.len() != subjects.len() {
        return Err(StoreError::Corrupt {
            what: "PIN failure counts",
            message: format!("{} counts for {} subjects", rows.len(), subjects.len()),
        });
    }
    rows.iter()
        .map(|r| {
            Ok(Failures {
                recent: count(r, "recent")?,
                daily: count(r, "daily")?,
            })
        })
        .collect()
}

/// A count column (never negative).
fn count(r: &sqlx::any::AnyRow, col: &str) -> Result<u64, StoreError> {
    Ok(u64::try_from(r.try_get::<i64, _>(col)?).unwrap_or(0))
}

fn bool_to_i64(b: bool) -> i64 {
    i64::from(b)
}

/// What an ID + PIN entry is checked against, read in one statement
/// ([`Store::pin_entry_facts`]).
pub(crate) struct PinFacts {
    /// The inmate the calling ID names in the facility, its PIN as stored and its lock.
    pub inmate: Option<(Inmate, StoredPin, LockState)>,
    /// The handset's lock.
    pub handset: LockState,
    /// The line's lock (never locked: the default).
    pub line: LockState,
}

/// A lock's columns under `prefix` (`h_`, `l_`, `i_`); a missing row (a line never
/// locked) is the default.
fn lock_of(r: &sqlx::any::AnyRow, prefix: &str) -> Result<LockState, StoreError> {
    let until: Option<i64> = r.try_get(format!("{prefix}until").as_str())?;
    let level: Option<i64> = r.try_get(format!("{prefix}level").as_str())?;
    let from: Option<i64> = r.try_get(format!("{prefix}from").as_str())?;
    Ok(LockState {
        locked_until: until.map(from_micros),
        level: u32::try_from(level.unwrap_or(0)).unwrap_or(u32::MAX),
        count_from: from.map(from_micros),
    })
}

impl Store {
    /// The facts an ID + PIN entry is checked against, in one statement: the inmate
    /// `calling_id` names in `facility_id` (none for an ID that is not all digits, or
    /// too long) with its stored PIN and lock, the handset's lock and the line's. The
    /// handset, when there is one, must exist (it was admitted); a visit station's entry
    /// has none (its lock is its line's).
    pub(crate) async fn pin_entry_facts(
        &self,
        facility_id: &str,
        calling_id: &str,
        handset_id: Option<&str>,
        line: &str,
    ) -> Result<PinFacts, StoreError> {
        let mut dbc = self.db.conn().await?;
        let shaped = !calling_id.is_empty()
            && calling_id.len() <= 20
            && calling_id.bytes().all(|b| b.is_ascii_digit());
        let inmate_columns = super::inmates::COLUMNS
            .split(',')
            .map(|c| format!("i.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let row = sqlx::query(&format!(
            "SELECT h.locked_until AS h_until, h.pin_lock_level AS h_level, \
             h.pin_count_from AS h_from, l.locked_until AS l_until, l.lock_level AS l_level, \
             l.count_from AS l_from, i.locked_until AS i_until, i.pin_lock_level AS i_level, \
             i.pin_count_from AS i_from, h.id AS h_id, {inmate_columns} \
             FROM (SELECT 1 AS one) entry \
             LEFT JOIN handsets h ON h.id = $4 \
             LEFT JOIN inmates i ON i.facility_id = $1 AND i.calling_id = $2 \
             LEFT JOIN pin_lines l ON l.facility_id = $1 AND l.address = $3"
        ))
        .bind(facility_id)
        .bind(shaped.then_some(calling_id))
        .bind(line)
        .bind(handset_id)
        .fetch_one(&mut dbc)
        .await?;
        if let Some(h) = handset_id {
            if row.try_get::<Option<String>, _>("h_id")?.is_none() {
                return Err(StoreError::not_found("handset", h));
            }
        }
        let inmate = match row.try_get::<Option<String>, _>("id")? {
            Some(_) => Some((
                super::inmates::from_row(&row)?,
                StoredPin::from_row(&row)?,
                lock_of(&row, "i_")?,
            )),
            None => None,
        };
        Ok(PinFacts {
            inmate,
            handset: lock_of(&row, "h_")?,
            line: lock_of(&row, "l_")?,
        })
    }

    /// Records a decided attempt and counts, in the same step, each subject's failures
    /// recorded before it (see [`crate::policy::lockout`], "Racing entries"), exactly
    /// whatever races it: on SQLite ids follow commit order; on PostgreSQL the step holds
    /// a transaction-scoped advisory lock per subject, taken in one order. Returns the attempt's id and the
    /// failures in the order of `subjects` (each a subject, its key, and where its count
    /// starts).
    pub async fn record_pin_attempt(
        &self,
        a: &NewAttempt<'_>,
        outcome: AttemptOutcome,
        now: DateTime<Utc>,
        subjects: &[(Subject, &str, Counting)],
    ) -> Result<(i64, Vec<Failures>), StoreError> {
        // SQLite assigns ids in commit order (one writer at a time), so every attempt
        // with a smaller id is visible once ours is in: insert, then count. PostgreSQL
        // draws ids before commit, so there the two go in one transaction holding each
        // subject's advisory lock.
        if self.db.backend() == Backend::Sqlite {
            // A member of a group commit (`db::group`): the attempts of the group's earlier
            // members are on this connection, in id order, and counted as committed ones.
            let mut conn = self.db.write().await?;
            let id = insert_attempt(&mut conn, a, outcome, now).await?;
            let counted = failures_before(&mut conn, a.facility_id, subjects, id).await?;
            conn.commit().await?;
            return Ok((id, counted));
        }
        let mut tx = self.db.begin().await?;
        let mut keys: Vec<i64> = subjects
            .iter()
            .map(|(subject, key, _)| subject_lock_key(*subject, a.facility_id, key))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        // One statement takes them all, in the order of its select list (PostgreSQL
        // evaluates a target list left to right), so every step takes its locks in one
        // global order and two steps never deadlock.
        if !keys.is_empty() {
            let calls: Vec<String> = (1..=keys.len())
                .map(|i| format!("pg_advisory_xact_lock(${i})"))
                .collect();
            let sql = format!("SELECT {}", calls.join(", "));
            let mut q = sqlx::query(&sql);
            for k in keys {
                q = q.bind(k);
            }
            q.execute(&mut tx).await?;
        }
        let id = insert_attempt(&mut tx, a, outcome, now).await?;
        let counted = failures_before(&mut tx, a.facility_id, subjects, id).await?;
        tx.commit().await?;
        Ok((id, counted))
    }

    /// Changes a recorded attempt's outcome (an entry refused as locked after all).
    pub async fn finish_pin_attempt(
        &self,
        id: i64,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        let mut dbc = self.db.write().await?;
        sqlx::query("UPDATE pin_attempts SET outcome = $2, success = $3 WHERE id = $1")
            .bind(id)
            .bind(outcome.as_str())
            .bind(bool_to_i64(outcome == AttemptOutcome::Valid))
            .execute(&mut dbc)
            .await?;
        dbc.commit().await?;
        Ok(())
    }

    /// The line's PIN lock (never locked: the default).
    pub async fn line_pin_lock(
        &self,
        facility_id: &str,
        address: &str,
    ) -> Result<LockState, StoreError> {
        let row = sqlx::query(
            "SELECT locked_until, lock_level, count_from FROM pin_lines WHERE facility_id = $1 AND address = $2",
        )
        .bind(facility_id)
        .bind(address)
        .fetch_optional(self.db.pool())
        .await?;
        match row {
            Some(r) => super::lock_state(&r, "lock_level", "count_from"),
            None => Ok(LockState::default()),
        }
    }

    /// Locks ID + PIN entry from a line as `lock` says, unless a lock already runs at
    /// `now`; whether this call set it.
    pub async fn lock_line_pin(
        &self,
        facility_id: &str,
        address: &str,
        lock: Lock,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO pin_lines (facility_id, address, locked_until, count_from, lock_level) \
             VALUES ($1, $2, $3, $3, $4) ON CONFLICT (facility_id, address) DO UPDATE SET \
             locked_until = excluded.locked_until, count_from = excluded.count_from, \
             lock_level = excluded.lock_level \
             WHERE pin_lines.locked_until IS NULL OR pin_lines.locked_until <= $5",
        )
        .bind(facility_id)
        .bind(address)
        .bind(to_micros(lock.until))
        .bind(i64::from(lock.level))
        .bind(to_micros(now))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Clears a line's PIN lock (staff) and restarts its count; not found when the line
    /// was never locked.
    pub async fn unlock_line_pin(
        &self,
        facility_id: &str,
        address: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE pin_lines SET locked_until = NULL, lock_level = 0, count_from = $3 \
             WHERE facility_id = $1 AND address = $2",
        )
        .bind(facility_id)
        .bind(address)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("locked line", address));
        }
        Ok(())
    }

    /// The PIN locks in force at `now` in a facility: inmates, handsets, lines.
    pub async fn pin_locks(
        &self,
        facility_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PinLock>, StoreError> {
        let queries = [
            ("inmate", "SELECT id, booking_number AS name, locked_until FROM inmates WHERE facility_id = $1 AND locked_until > $2 ORDER BY locked_until"),
            ("handset", "SELECT id, name, locked_until FROM handsets WHERE facility_id = $1 AND locked_until > $2 ORDER BY locked_until"),
            ("line", "SELECT address AS id, '' AS name, locked_until FROM pin_lines WHERE facility_id = $1 AND locked_until > $2 ORDER BY locked_until"),
        ];
        let mut locks = Vec::new();
        for (subject, sql) in queries {
            let rows = sqlx::query(sql)
                .bind(facility_id)
                .bind(to_micros(now))
                .fetch_all(self.db.pool())
                .await?;
            for r in rows {
                locks.push(PinLock {
                    subject,
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    locked_until: from_micros(r.try_get("locked_until")?),
                });
            }
        }
        Ok(locks)
    }

    /// The facility's failed entries since `since`.
    pub async fn guessing_pattern(
        &self,
        facility_id: &str,
        since: DateTime<Utc>,
    ) -> Result<GuessingPattern, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT COUNT(*) AS failures, COUNT(DISTINCT target) AS ids, \
             COUNT(DISTINCT handset_id) AS handsets, COUNT(DISTINCT remote_addr) AS lines \
             FROM pin_attempts WHERE facility_id = $1 AND at >= $2 AND {FAILED}"
        ))
        .bind(facility_id)
        .bind(to_micros(since))
        .fetch_one(self.db.pool())
        .await?;
        let n = |col: &str| count(&r, col);
        Ok(GuessingPattern {
            failures: n("failures")?,
            ids: n("ids")?,
            handsets: n("handsets")?,
            lines: n("lines")?,
        })
    }

    /// Claims the facility's guessing alert at `now` unless one was raised within
    /// `window`: true for exactly one caller per window, across nodes.
    pub async fn claim_guessing_alert(
        &self,
        facility_id: &str,
        now: DateTime<Utc>,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO pin_alerts (facility_id, raised_at) VALUES ($1, $2) \
             ON CONFLICT (facility_id) DO UPDATE SET raised_at = excluded.raised_at \
             WHERE pin_alerts.raised_at <= $3",
        )
        .bind(facility_id)
        .bind(to_micros(now))
        .bind(to_micros(now - window))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
