//! Recording rows and the recordings hash chain.
//!
//! A recording is a row from the moment capture starts (`status = 'recording'`, the
//! in-progress mark) to its end (`complete`, or `incomplete` when its file stopped growing
//! after a write error or a gateway that stopped mid-call closes it at restart), and
//! `purged` once retention removed its file. When a
//! recording is finished its facts (the file's SHA-256, size, times, path, session) are
//! appended to `recording_chain`, an append-only table where each entry's link is
//! `SHA-256(previous link ‖ its fields)`, so a file that was changed, removed, added or
//! reordered, or an entry edited behind the database's back, shows up when the chain is
//! walked. Appends are serialized like the audit log's (SQLite's write lock, a PostgreSQL
//! advisory lock), so every node extends one chain.

use super::{new_id, Store, StoreError};
use crate::db::{from_micros, Backend};
pub use crate::recording::media::Participant;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// The PostgreSQL advisory lock key that serializes chain appends ("recchn" in ASCII).
pub(crate) const CHAIN_LOCK_KEY: i64 = 0x7265_6363_686e;

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Capture is running (or the gateway stopped and has not restarted yet).
    Recording,
    /// Finished at the end of the call and chained.
    Complete,
    /// Chained, playable up to where the audio stops: writing the file failed during the
    /// call (disk full, I/O error; the call went on), or the gateway stopped mid-call and
    /// closed it at restart (up to the last flushed second).
    Incomplete,
    /// Its file was removed by the retention job (the chain keeps its entry).
    Purged,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Complete => "complete",
            RecordingStatus::Incomplete => "incomplete",
            RecordingStatus::Purged => "purged",
        }
    }

    fn parse(s: &str) -> Result<RecordingStatus, StoreError> {
        Ok(match s {
            "recording" => RecordingStatus::Recording,
            "complete" => RecordingStatus::Complete,
            "incomplete" => RecordingStatus::Incomplete,
            "purged" => RecordingStatus::Purged,
            other => {
                return Err(StoreError::Corrupt {
                    what: "recording status",
                    message: other.to_string(),
                })
            }
        })
    }
}

/// What capture knows when it starts.
#[derive(Debug, Clone)]
pub struct NewRecording<'a> {
    pub session_id: &'a str,
    pub facility_id: &'a str,
    /// Relative to the recordings directory: `YYYY/MM/DD/<session>.wav` for a call,
    /// `YYYY/MM/DD/<session>-<participant>.webm` for a visit
    /// ([`crate::recording::relative_path`]).
    pub path: &'a str,
    /// `wav-pcmu` or `wav-pcma` (a call), `webm-vp8-opus` (a visit participant).
    pub format: &'a str,
    pub node_id: &'a str,
    pub started_at: DateTime<Utc>,
}

/// What capture knows when the file is closed.
#[derive(Debug, Clone)]
pub struct FinishedRecording {
    pub ended_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub bytes: i64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// Packets the recorder could not take (it was behind); the call went on.
    pub dropped_packets: i64,
    /// `false` when writing the file failed, or when closed at restart rather than at the
    /// end of the call.
    pub complete: bool,
}

/// A recording as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recording {
    pub id: String,
    pub session_id: String,
    pub facility_id: String,
    pub path: String,
    pub format: String,
    pub status: RecordingStatus,
    pub node_id: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub dropped_packets: i64,
    pub chain_seq: Option<i64>,
    pub purged_at: Option<DateTime<Utc>>,
    /// Whose media: `both` (a call's stereo file), `inmate` or `visitor` (one side of a
    /// visit: a visit session has one recording of each).
    pub participant: Participant,
}

/// The facts a chain entry of kind `recording` freezes, serialized in this field order.
#[derive(Debug, Clone, Serialize)]
struct ChainMetadata<'a> {
    session_id: &'a str,
    facility_id: &'a str,
    path: &'a str,
    format: &'a str,
    started_at: i64,
    ended_at: i64,
    duration_ms: i64,
    bytes: i64,
    /// Left out for `both` (a call), so a call's entry reads as before visits existed; the
    /// integrity check reads a missing one as `both`.
    #[serde(skip_serializing_if = "is_both")]
    participant: &'a str,
}

fn is_both(p: &&str) -> bool {
    *p == Participant::Both.as_str()
}

/// The fields a chain entry's link covers, as stored.
pub(crate) struct ChainFields<'a> {
    pub at: i64,
    pub kind: &'a str,
    pub recording_id: &'a str,
    pub file_sha256: &'a str,
    pub metadata: &'a str,
}

/// `SHA-256(prev ‖ fields)`, hex; every field length-prefixed so no two different entries
/// hash the same bytes.
pub(crate) fn chain_link(prev: &str, f: &ChainFields<'_>) -> String {
    let mut h = Sha256::new();
    for s in [
        prev,
        &f.at.to_string(),
        f.kind,
        f.recording_id,
        f.file_sha256,
        f.metadata,
    ] {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    hex::encode(h.finalize())
}

pub(crate) const COLUMNS: &str =
    "id, session_id, facility_id, path, format, status, node_id, started_at, \
     ended_at, duration_ms, bytes, sha256, dropped_packets, chain_seq, purged_at, participant";

pub(crate) fn recording(r: &sqlx::any::AnyRow) -> Result<Recording, StoreError> {
    let status: String = r.try_get("status")?;
    let participant: String = r.try_get("participant")?;
    let opt_time = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(r.try_get::<Option<i64>, _>(col)?.map(from_micros))
    };
    Ok(Recording {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        facility_id: r.try_get("facility_id")?,
        path: r.try_get("path")?,
        format: r.try_get("format")?,
        status: RecordingStatus::parse(&status)?,
        node_id: r.try_get("node_id")?,
        started_at: from_micros(r.try_get("started_at")?),
        ended_at: opt_time("ended_at")?,
        duration_ms: r.try_get("duration_ms")?,
        bytes: r.try_get("bytes")?,
        sha256: r.try_get("sha256")?,
        dropped_packets: r.try_get("dropped_packets")?,
        chain_seq: r.try_get("chain_seq")?,
        purged_at: opt_time("purged_at")?,
        participant: Participant::parse(&participant).ok_or_else(|| StoreError::Corrupt {
            what: "recording participant",
            message: participant.clone(),
        })?,
    })
}

impl Store {
    /// Registers a recording that starts now and marks its session recorded. Returns its id.
    pub async fn start_recording(&self, r: NewRecording<'_>) -> Result<String, StoreError> {
        self.start_recording_accepted(r, None).await
    }

    /// Registers the recording of one participant of a visit (a WebM file of their video
    /// and audio) that starts now, and marks its session recorded (the session's
    /// `recording_id` keeps the first of its recordings; [`Store::session_recordings`]
    /// lists both). A second recording of the same participant of a session is refused
    /// (`Conflict`): the database's unique index decides.
    pub async fn start_visit_recording(
        &self,
        r: NewRecording<'_>,
        participant: Participant,
    ) -> Result<String, StoreError> {
        self.insert_recording(r, participant, None).await
    }

    /// [`Store::start_recording`] that also records the session's acceptance
    /// (`accepted_at`, unless already set) in the same transaction: a call's recording
    /// starts at its acceptance, and the two were two commits.
    pub(crate) async fn start_recording_accepted(
        &self,
        r: NewRecording<'_>,
        accepted_at: Option<DateTime<Utc>>,
    ) -> Result<String, StoreError> {
        self.insert_recording(r, Participant::Both, accepted_at)
            .await
    }

    async fn insert_recording(
        &self,
        r: NewRecording<'_>,
        participant: Participant,
        accepted_at: Option<DateTime<Utc>>,
    ) -> Result<String, StoreError> {
        let id = new_id("rec");
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO recordings (id, session_id, facility_id, path, format, status, node_id, \
             started_at, participant) VALUES ($1,$2,$3,$4,$5,'recording',$6,$7,$8)",
        )
        .bind(&id)
        .bind(r.session_id)
        .bind(r.facility_id)
        .bind(r.path)
        .bind(r.format)
        .bind(r.node_id)
        .bind(crate::db::to_micros(r.started_at))
        .bind(participant.as_str())
        .execute(&mut tx)
        .await
        .map_err(|e| duplicate_participant(e, r.session_id, participant))?;
        crate::session::cdr::mark_recorded(&mut tx, r.session_id, &id, accepted_at).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Closes a recording: stores its hash and size and appends it to the chain, in one
    /// transaction. A recording already finished is left as it is (`Conflict`).
    pub async fn finish_recording(
        &self,
        id: &str,
        f: &FinishedRecording,
    ) -> Result<Recording, StoreError> {
        let mut tx = self.db.begin().await?;
        if self.db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CHAIN_LOCK_KEY)
                .execute(&mut tx)
                .await?;
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM recordings WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut tx)
            .await?
            .ok_or_else(|| StoreError::not_found("recording", id))?;
        let rec = recording(&row)?;
        if rec.status != RecordingStatus::Recording {
            return Err(StoreError::Conflict(format!(
                "recording {id} is already {}",
                rec.status.as_str()
            )));
        }
        let ended_at = crate::db::to_micros(f.ended_at);
        let metadata = serde_json::to_string(&ChainMetadata {
            session_id: &rec.session_id,
            facility_id: &rec.facility_id,
            path: &rec.path,
            format: &rec.format,
            started_at: crate::db::to_micros(rec.started_at),
            ended_at,
            duration_ms: f.duration_ms,
            bytes: f.bytes,
            participant: rec.participant.as_str(),
        })
        .map_err(|e| StoreError::Corrupt {
            what: "recording metadata",
            message: e.to_string(),
        })?;
        let seq = self
            .append_chain(&mut tx, "recording", id, &f.sha256, &metadata)
            .await?;
        let status = if f.complete {
            RecordingStatus::Complete
        } else {
            RecordingStatus::Incomplete
        };
        sqlx::query(
            "UPDATE recordings SET status = $1, ended_at = $2, duration_ms = $3, bytes = $4, \
             sha256 = $5, dropped_packets = $6, chain_seq = $7 WHERE id = $8",
        )
        .bind(status.as_str())
        .bind(ended_at)
        .bind(f.duration_ms)
        .bind(f.bytes)
        .bind(&f.sha256)
        .bind(f.dropped_packets)
        .bind(seq)
        .bind(id)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        // The row as now stored, from what was read and written (no second read).
        Ok(Recording {
            status,
            ended_at: Some(crate::db::from_micros(ended_at)),
            duration_ms: Some(f.duration_ms),
            bytes: Some(f.bytes),
            sha256: Some(f.sha256.clone()),
            dropped_packets: f.dropped_packets,
            chain_seq: Some(seq),
            ..rec
        })
    }

    /// Appends one chain entry inside `tx` (which must hold the chain lock on PostgreSQL;
    /// SQLite's write transaction serializes by itself). Returns its sequence number.
    pub(crate) async fn append_chain(
        &self,
        tx: &mut crate::db::Conn,
        kind: &str,
        recording_id: &str,
        file_sha256: &str,
        metadata: &str,
    ) -> Result<i64, StoreError> {
        let prev: String =
            sqlx::query("SELECT link FROM recording_chain ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("link"))
                .transpose()?
                .unwrap_or_default();
        let fields = ChainFields {
            at: self.now_us(),
            kind,
            recording_id,
            file_sha256,
            metadata,
        };
        let link = chain_link(&prev, &fields);
        let row = sqlx::query(
            "INSERT INTO recording_chain (at, kind, recording_id, file_sha256, metadata, \
             prev_link, link) VALUES ($1,$2,$3,$4,$5,$6,$7) RETURNING seq",
        )
        .bind(fields.at)
        .bind(kind)
        .bind(recording_id)
        .bind(file_sha256)
        .bind(metadata)
        .bind(&prev)
        .bind(&link)
        .fetch_one(&mut *tx)
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// One recording.
    pub async fn recording(&self, id: &str) -> Result<Recording, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM recordings WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("recording", id))?;
        recording(&row)
    }

    /// The recording of a session, if it has one.
    pub async fn session_recording(
        &self,
        session_id: &str,
    ) -> Result<Option<Recording>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM recordings WHERE session_id = $1 ORDER BY started_at LIMIT 1"
        ))
        .bind(session_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(recording).transpose()
    }

    /// Every recording of a session, the earliest first: a call's one, a visit's two (one
    /// per participant, inmate first when they started together).
    pub async fn session_recordings(&self, session_id: &str) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM recordings WHERE session_id = $1 \
             ORDER BY started_at, participant"
        ))
        .bind(session_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(recording).collect()
    }

    /// A session's kind (`call` or `visit`) and whether it is privileged (its media is
    /// never recorded nor served): what serving a recording checks. `NotFound` when there is
    /// no such session.
    pub async fn session_kind_privileged(
        &self,
        session_id: &str,
    ) -> Result<(String, bool), StoreError> {
        let row = sqlx::query("SELECT kind, privileged FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("session", session_id))?;
        Ok((
            row.try_get("kind")?,
            row.try_get::<i64, _>("privileged")? != 0,
        ))
    }

    /// Up to `limit` recordings whose id sorts after `after`, in id order: a walk over
    /// every recording (the integrity check) pages with it.
    pub async fn recordings_after(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM recordings WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(recording).collect()
    }

    /// Recordings still marked in progress that `node_id` started (closed at its restart).
    pub async fn recordings_in_progress(
        &self,
        node_id: &str,
    ) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM recordings WHERE status = 'recording' AND node_id = $1 \
             ORDER BY started_at"
        ))
        .bind(node_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(recording).collect()
    }
}

/// A second recording of one participant of a session is a conflict, not a failure.
fn duplicate_participant(e: sqlx::Error, session_id: &str, p: Participant) -> StoreError {
    let unique = e
        .as_database_error()
        .is_some_and(|d| d.is_unique_violation() && d.message().contains("participant"));
    if unique {
        StoreError::Conflict(format!(
            "session {session_id} already has a recording of participant {}",
            p.as_str()
        ))
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(meta: &'a str, hash: &'a str) -> ChainFields<'a> {
        ChainFields {
            at: 1,
            kind: "recording",
            recording_id: "rec_1",
            file_sha256: hash,
            metadata: meta,
        }
    }

    #[test]
    fn a_link_covers_the_previous_link_the_file_hash_and_the_metadata() {
        let base = chain_link("", &fields("{}", "ab"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, chain_link("", &fields("{}", "ab")));
        assert_ne!(base, chain_link("x", &fields("{}", "ab")));
        assert_ne!(base, chain_link("", &fields("{ }", "ab")));
        assert_ne!(base, chain_link("", &fields("{}", "ac")));
        assert_ne!(
            chain_link("", &fields("a", "b")),
            chain_link("", &fields("", "ab")),
            "length prefixes keep field boundaries"
        );
    }
}
