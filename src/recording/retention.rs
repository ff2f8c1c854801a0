//! Retention: removes recordings whose facility's retention period has passed, and
//! records that it did so the hash chain stays verifiable.
//!
//! Owns: choosing expired recordings (status `complete` or `incomplete`, `ended_at` plus
//! the facility's `recording_retention_days` at or before now, read from the injected
//! [`crate::clock::Clock`]), and purging each one: in one transaction the row moves to
//! `purged` only if it is still `complete`/`incomplete` (so two nodes purging at once
//! purge it once: the loser updates no row and backs out) and a `purge` entry carrying
//! the file's chained hash joins the chain; after the commit the file is deleted and an
//! audit entry (actor `system`, action `recording.purge`) is written. A file whose
//! deletion fails is logged and left; verification does not count a purged recording's
//! file as `removed` (nor as `added` when left behind).
//!
//! Every node runs the job; like the check, it assumes the nodes share `[recording] dir`
//! (a recording's file is deleted by whichever node wins its purge).
//!
//! Called by: the periodic task [`spawn`] (started by [`crate::server`] every
//! `[recording] purge_interval_secs`) and the tests, which call [`purge_expired`] with a
//! manual clock.

use crate::db::{to_micros, Backend};
use crate::store::{AuditEntry, Store, StoreError, CHAIN_LOCK_KEY};
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
pub async fn purge_expired(store: &Store, dir: &Path) -> Result<PurgeReport, RetentionError> {
    let now = to_micros(store.clock().wall());
    let mut report = PurgeReport::default();
    let mut after = String::new();
    loop {
        let page = candidates(store, now, &after).await?;
        let Some(last) = page.last() else {
            return Ok(report);
        };
        after = last.id.clone();
        for c in &page {
            match purge_one(store, c).await? {
                Outcome::Purged { path, seq } => {
                    finish_purge(store, dir, c, &path, seq, &mut report).await;
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

/// Up to [`PAGE`] expired recordings with ids after `after`.
async fn candidates(
    store: &Store,
    now: i64,
    after: &str,
) -> Result<Vec<Candidate>, RetentionError> {
    let rows = sqlx::query(
        "SELECT r.id, r.facility_id, r.session_id, r.ended_at, f.recording_retention_days \
         FROM recordings r JOIN facilities f ON f.id = r.facility_id \
         WHERE r.status IN ('complete', 'incomplete') AND r.ended_at IS NOT NULL \
         AND r.ended_at + f.recording_retention_days * $1 <= $2 AND r.id > $3 \
         ORDER BY r.id LIMIT $4",
    )
    .bind(DAY_US)
    .bind(now)
    .bind(after)
    .bind(PAGE)
    .fetch_all(store.db().pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Candidate {
                id: r.try_get("id")?,
                facility_id: r.try_get("facility_id")?,
                session_id: r.try_get("session_id")?,
                ended_at: r.try_get("ended_at")?,
                retention_days: r.try_get("recording_retention_days")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The transaction: the conditional status move, then the `purge` chain entry.
async fn purge_one(store: &Store, c: &Candidate) -> Result<Outcome, RetentionError> {
    let db = store.db();
    let mut tx = db.begin_write().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    let now = to_micros(store.clock().wall());
    let moved = sqlx::query(
        "UPDATE recordings SET status = 'purged', purged_at = $1 \
         WHERE id = $2 AND status IN ('complete', 'incomplete')",
    )
    .bind(now)
    .bind(&c.id)
    .execute(&mut *tx)
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
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> Result<Option<(String, String)>, RetentionError> {
    let row = sqlx::query(
        "SELECT file_sha256, metadata FROM recording_chain \
         WHERE recording_id = $1 AND kind = 'recording' ORDER BY seq DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
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
    if let Err(e) = delete_file(dir, path).await {
        tracing::error!(recording = %c.id, path, error = %e, "purged recording's file not deleted");
        report.files_left.push((c.id.clone(), e));
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

/// Deletes `dir/path`; a file already gone is fine.
async fn delete_file(dir: &Path, path: &str) -> Result<(), String> {
    let full = super::chain::resolve(dir, path)
        .ok_or("the chained path is not inside the recordings directory")?;
    let res = tokio::task::spawn_blocking(move || match std::fs::remove_file(&full) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
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
