//! Retention: removes recordings whose facility's retention period has passed, and
//! records that it did so the hash chain stays verifiable.
//!
//! Owns: choosing expired recordings (status `complete` or `incomplete`, `ended_at` at or
//! before the facility's cutoff, now minus its `recording_retention_days`, read from the
//! injected [`crate::clock::Clock`]; the cutoff is computed per facility in Rust with
//! saturating arithmetic, so no period can overflow `BIGINT` in the query, and a facility
//! whose stored period is outside [`RETENTION_DAYS`] (validated at create and patch, but a
//! row may predate that) is skipped with a warning rather than purged early), and purging
//! each one: in one transaction the row moves to
//! `purged` only if it is still `complete`/`incomplete` (so two nodes purging at once
//! purge it once: the loser updates no row and backs out) and a `purge` entry carrying
//! the file's chained hash joins the chain; after the commit the file is deleted and an
//! audit entry (actor `system`, action `recording.purge`) is written. A file whose
//! deletion fails is logged and left; verification does not count a purged recording's
//! file as `removed` (nor as `added` when left behind). A file already gone when the purge
//! deletes it counts as deleted, but is logged as a warning naming the path and listed in
//! [`PurgeReport::already_gone`]: something else removed evidence before its time, and
//! only the purge's own chain entry now accounts for it.
//!
//! Every run, whatever it purged, ends by anchoring the chain head: an audit entry (actor
//! `system`, action [`super::chain::HEAD_ANCHOR_ACTION`]) with the last chain entry's
//! `seq` and `link`, which `verify-recordings` later checks is still in the chain (see
//! [`super::chain`] for what that catches).
//!
//! Every node runs the job; like the check, it assumes the nodes share `[recording] dir`
//! (a recording's file is deleted by whichever node wins its purge).
//!
//! Called by: the periodic task [`spawn`] (started by [`crate::server`] every
//! `[recording] purge_interval_secs`) and the tests, which call [`purge_expired`] with a
//! manual clock.

use crate::db::{to_micros, Backend};
use crate::store::{AuditEntry, Store, StoreError, CHAIN_LOCK_KEY, RETENTION_DAYS};
use serde_json::json;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Microseconds in a day.
const DAY_US: i64 = 86_400 * 1_000_000;
/// Candidates read per query.
const PAGE: i64 = 500;

/// Errors that stop a purge run.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RetentionError {
    fn from(e: sqlx::Error) -> RetentionError {
        RetentionError::Store(StoreError::Db(e))
    }
}

impl From<crate::db::DbError> for RetentionError {
    fn from(e: crate::db::DbError) -> RetentionError {
        RetentionError::Store(e.into())
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Recordings this run purged.
    pub purged: Vec<String>,
    /// Expired recordings another run (another node) purged first.
    pub already_purged: u64,
    /// Expired recordings left alone because the chain holds no `recording` entry for
    /// them (verification names them): evidence of tampering is not deleted.
    pub unchained: Vec<String>,
    /// Purged recordings whose file could not be deleted, with the reason.
    pub files_left: Vec<(String, String)>,
    /// Purged recordings whose file was already gone (recording id, path).
    pub already_gone: Vec<(String, String)>,
    /// Facilities skipped because their stored retention period is out of range.
    pub facilities_skipped: Vec<String>,
}

/// An expired recording as the candidate query finds it.
#[derive(Debug, Clone)]
struct Candidate {
    id: String,
    facility_id: String,
    session_id: String,
    ended_at: i64,
    retention_days: i64,
}

/// How one purge attempt ended.
enum Outcome {
    /// Purged; the chained path of the file to delete, and the purge entry's seq.
    Purged {
        path: String,
        seq: i64,
    },
    AlreadyPurged,
    Unchained,
}

/// Purges every recording expired at the store clock's now; `dir` is `[recording] dir`.
/// Ends by anchoring the chain head in the audit log.
pub async fn purge_expired(store: &Store, dir: &Path) -> Result<PurgeReport, RetentionError> {
    let now = to_micros(store.clock().wall());
    let mut report = PurgeReport::default();
    for (facility_id, days) in retention_periods(store).await? {
        let Some(cutoff) = cutoff(now, days) else {
            tracing::warn!(facility = %facility_id, days, "retention period out of range; facility not purged");
            report.facilities_skipped.push(facility_id);
            continue;
        };
        purge_facility(store, dir, &facility_id, days, cutoff, &mut report).await?;
    }
    if let Err(e) = super::chain::anchor_head(store).await {
        tracing::error!(error = %e, "anchoring the recordings chain head failed");
    }
    Ok(report)
}

/// The instant at or before which a recording ended `days` ago has expired, or `None`
/// when `days` is outside [`RETENTION_DAYS`]. Never overflows.
fn cutoff(now: i64, days: i64) -> Option<i64> {
    RETENTION_DAYS
        .contains(&days)
        .then(|| now.saturating_sub(days.saturating_mul(DAY_US)))
}

/// Every facility with its retention period.
async fn retention_periods(store: &Store) -> Result<Vec<(String, i64)>, RetentionError> {
    let rows = sqlx::query("SELECT id, recording_retention_days FROM facilities ORDER BY id")
        .fetch_all(store.db().pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("recording_retention_days")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Purges the recordings of one facility that ended at or before `cutoff`.
async fn purge_facility(
    store: &Store,
    dir: &Path,
    facility_id: &str,
    days: i64,
    cutoff: i64,
    report: &mut PurgeReport,
) -> Result<(), RetentionError> {
    let mut after = String::new();
    loop {
        let page = candidates(store, facility_id, days, cutoff, &after).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id.clone();
        for c in &page {
            match purge_one(store, c).await? {
                Outcome::Purged { path, seq } => {
                    finish_purge(store, dir, c, &path, seq, report).await;
                    report.purged.push(c.id.clone());
                }
                Outcome::AlreadyPurged => report.already_purged += 1,
                Outcome::Unchained => {
                    tracing::warn!(recording = %c.id, "expired recording is not in the chain; not purged");
                    report.unchained.push(c.id.clone());
                }
            }
        }
    }
}

/// Up to [`PAGE`] recordings of `facility_id` that ended at or before `cutoff`, with ids
/// after `after`.
async fn candidates(
    store: &Store,
    facility_id: &str,
    retention_days: i64,
    cutoff: i64,
    after: &str,
) -> Result<Vec<Candidate>, RetentionError> {
    let rows = sqlx::query(
        "SELECT id, session_id, ended_at FROM recordings \
         WHERE facility_id = $1 AND status IN ('complete', 'incomplete') \
         AND ended_at IS NOT NULL AND ended_at <= $2 AND id > $3 \
         ORDER BY id LIMIT $4",
    )
    .bind(facility_id)
    .bind(cutoff)
    .bind(after)
    .bind(PAGE)
    .fetch_all(store.db().pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Candidate {
                id: r.try_get("id")?,
                facility_id: facility_id.to_string(),
                session_id: r.try_get("session_id")?,
                ended_at: r.try_get("ended_at")?,
                retention_days,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The transaction: the conditional status move, then the `purge` chain entry.
async fn purge_one(store: &Store, c: &Candidate) -> Result<Outcome, RetentionError> {
    let db = store.db();
    let mut tx = db.begin().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut tx)
            .await?;
    }
    let now = to_micros(store.clock().wall());
    let moved = sqlx::query(
        "UPDATE recordings SET status = 'purged', purged_at = $1 \
         WHERE id = $2 AND status IN ('complete', 'incomplete')",
    )
    .bind(now)
    .bind(&c.id)
    .execute(&mut tx)
    .await?
    .rows_affected();
    if moved != 1 {
        tx.rollback().await?;
        return Ok(Outcome::AlreadyPurged);
    }
    let Some((sha256, path)) = chained_file(&mut tx, &c.id).await? else {
        tx.rollback().await?;
        return Ok(Outcome::Unchained);
    };
    let metadata = json!({
        "reason": "retention",
        "retention_days": c.retention_days,
        "facility_id": c.facility_id,
        "session_id": c.session_id,
        "path": path,
        "ended_at": c.ended_at,
    })
    .to_string();
    let seq = store
        .append_chain(&mut tx, "purge", &c.id, &sha256, &metadata)
        .await?;
    tx.commit().await?;
    Ok(Outcome::Purged { path, seq })
}

/// The hash and path the recording's `recording` entry froze, if the chain has one with
/// readable metadata.
async fn chained_file(
    tx: &mut crate::db::Conn,
    id: &str,
) -> Result<Option<(String, String)>, RetentionError> {
    let row = sqlx::query(
        "SELECT file_sha256, metadata FROM recording_chain \
         WHERE recording_id = $1 AND kind = 'recording' ORDER BY seq DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let sha256: String = row.try_get("file_sha256")?;
    let metadata: String = row.try_get("metadata")?;
    let path = serde_json::from_str::<serde_json::Value>(&metadata)
        .ok()
        .and_then(|m| m.get("path").and_then(|p| p.as_str()).map(str::to_string));
    Ok(path.map(|p| (sha256, p)))
}

/// After the commit: delete the file, audit the purge. Failures are logged and reported,
/// not returned: the purge itself is committed.
async fn finish_purge(
    store: &Store,
    dir: &Path,
    c: &Candidate,
    path: &str,
    seq: i64,
    report: &mut PurgeReport,
) {
    match delete_file(dir, path).await {
        Ok(Deleted::Now) => {}
        Ok(Deleted::AlreadyGone) => {
            tracing::warn!(recording = %c.id, path, "purged recording's file was already gone; verification will tell");
            report.already_gone.push((c.id.clone(), path.to_string()));
        }
        Err(e) => {
            tracing::error!(recording = %c.id, path, error = %e, "purged recording's file not deleted");
            report.files_left.push((c.id.clone(), e));
        }
    }
    let entry = AuditEntry {
        actor: "system",
        action: "recording.purge",
        target: &c.id,
        facility_id: Some(&c.facility_id),
        detail: json!({
            "reason": "retention",
            "retention_days": c.retention_days,
            "path": path,
            "chain_seq": seq,
        }),
        remote_addr: None,
    };
    if let Err(e) = store.audit(entry).await {
        tracing::error!(recording = %c.id, error = %e, "audit of a purge failed");
    }
}

/// How a purged recording's file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deleted {
    Now,
    /// It was not there (`NotFound`): fine for the purge, worth a warning.
    AlreadyGone,
}

/// Deletes `dir/path`.
async fn delete_file(dir: &Path, path: &str) -> Result<Deleted, String> {
    let full = super::chain::resolve(dir, path)
        .ok_or("the chained path is not inside the recordings directory")?;
    let res = tokio::task::spawn_blocking(move || match std::fs::remove_file(&full) {
        Ok(()) => Ok(Deleted::Now),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e.to_string()),
    })
    .await;
    res.map_err(|e| e.to_string())?
}

/// Runs [`purge_expired`] now and then every `every`, for as long as the runtime runs.
pub fn spawn(store: Store, dir: PathBuf, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match purge_expired(&store, &dir).await {
                Ok(r) if r.purged.is_empty() => {}
                Ok(r) => tracing::info!(purged = r.purged.len(), "retention purge"),
                Err(e) => tracing::warn!(error = %e, "retention purge failed; retrying later"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_never_overflows_and_refuses_periods_out_of_range() {
        let now = 1_800_000_000_000_000;
        assert_eq!(cutoff(now, 1), Some(now - DAY_US));
        assert_eq!(cutoff(now, 36_500), Some(now - 36_500 * DAY_US));
        for bad in [0, -5, 36_501, 106_752, i64::MAX, i64::MIN] {
            assert_eq!(cutoff(now, bad), None, "{bad}");
        }
        assert_eq!(cutoff(i64::MIN + 1, 36_500), Some(i64::MIN));
    }
}
