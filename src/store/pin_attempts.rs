//! The ID + PIN attempt log (`pin_attempts`), the lines calls come from (`pin_lines`) and
//! the facility-wide guessing alerts (`pin_alerts`): what the lockout of
//! [`crate::policy::lockout`] counts and where it keeps the lines' locks.
//!
//! Every attempt is a row, written before its PIN is compared (`pending`: entries begun
//! after it wait for it when it could tip a threshold) and then marked `valid`, `wrong`
//! or `locked` (refused unchecked).
//! A row names the facility, the handset, the line (`remote_addr`), the inmate when the ID
//! named one, and a `target` grouping failures by ID: never the digits. A node that dies
//! between the two writes leaves `pending`, which after
//! [`STALE_PENDING`](crate::policy::lockout::STALE_PENDING) counts as the failure it may
//! have been and decays like one.

use super::{Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::policy::lockout::{Counting, Failures, Lock, LockState, Subject};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::Row;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Written, not yet decided (a failure once stale).
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
    pub handset_id: &'a str,
    /// The source address of the call.
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

/// A count column (never negative).
fn count(r: &sqlx::any::AnyRow, col: &str) -> Result<u64, StoreError> {
    Ok(u64::try_from(r.try_get::<i64, _>(col)?).unwrap_or(0))
}

fn bool_to_i64(b: bool) -> i64 {
    i64::from(b)
}

impl Store {
    /// Writes an attempt as `pending`; its id.
    pub async fn begin_pin_attempt(
        &self,
        a: &NewAttempt<'_>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO pin_attempts (facility_id, handset_id, inmate_id, success, remote_addr, \
             at, outcome, target) VALUES ($1,$2,$3,0,$4,$5,'pending',$6) RETURNING id",
        )
        .bind(a.facility_id)
        .bind(a.handset_id)
        .bind(a.inmate_id)
        .bind(a.line)
        .bind(to_micros(now))
        .bind(a.target)
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Decides an attempt.
    pub async fn finish_pin_attempt(
        &self,
        id: i64,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE pin_attempts SET outcome = $2, success = $3 WHERE id = $1")
            .bind(id)
            .bind(outcome.as_str())
            .bind(bool_to_i64(outcome == AttemptOutcome::Valid))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// One subject's failures (`key` is the inmate id, the handset id, or the line's
    /// address in `facility_id`) counted as `c` says: decided ones, and entries begun
    /// before `entry` and still pending. `entry` itself is left out (`None`: nothing is).
    pub async fn pin_failures(
        &self,
        subject: Subject,
        facility_id: &str,
        key: &str,
        c: &Counting,
        entry: Option<i64>,
    ) -> Result<Failures, StoreError> {
        let who = match subject {
            Subject::Inmate => "inmate_id = $2 AND facility_id = $1",
            Subject::Handset => "handset_id = $2 AND facility_id = $1",
            Subject::Line => "facility_id = $1 AND remote_addr = $2",
        };
        let failed = "(outcome = 'wrong' OR (outcome = 'pending' AND at < $5))";
        let sql = format!(
            "SELECT \
             COALESCE(SUM(CASE WHEN at >= $3 AND {failed} THEN 1 ELSE 0 END), 0) AS recent, \
             COALESCE(SUM(CASE WHEN at >= $4 AND {failed} THEN 1 ELSE 0 END), 0) AS daily, \
             COALESCE(SUM(CASE WHEN outcome = 'pending' AND at >= $5 AND id < $6 \
               THEN 1 ELSE 0 END), 0) AS racing \
             FROM pin_attempts WHERE {who} AND at >= $7 AND id <> $6"
        );
        let r = sqlx::query(&sql)
            .bind(facility_id)
            .bind(key)
            .bind(to_micros(c.recent_from))
            .bind(to_micros(c.daily_from))
            .bind(to_micros(c.stale_before))
            .bind(entry.unwrap_or(0))
            .bind(to_micros(c.recent_from.min(c.daily_from)))
            .fetch_one(self.db.pool())
            .await?;
        let n = |col: &str| count(&r, col);
        Ok(Failures {
            recent: n("recent")?,
            daily: n("daily")?,
            racing: n("racing")?,
        })
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
