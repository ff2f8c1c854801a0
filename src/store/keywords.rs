//! The keyword spotting queue (`keyword_jobs`), what it found (`keyword_hits`) and the
//! watch lists it reads (`watch_words`, kept by the facility's staff).
//!
//! A finished call recording becomes a job once ([`Store::queue_keyword_jobs`]: the
//! recording id is the key, so two nodes queueing at once queue it once). A job is
//! claimed with a lease ([`Store::claim_keyword_job`]): one UPDATE that moves it from
//! `pending` (or from a `running` whose lease ran out: its node died) to `running` under
//! this node's name and time, so two nodes never both hold it. Its hits are written in
//! the same transaction that marks it `done`, and only while the claim is still this
//! node's ([`Store::finish_keyword_job`]): a node that lost its claim writes nothing, so
//! no recording's words are listed twice.

use super::{new_id, Store, StoreError};
use crate::db::from_micros;
use crate::keywords::{Hit, Party};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// At most this many alerts in one list.
pub const MAX_ALERTS: i64 = 500;

/// A claimed job: the recording to spot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywordJob {
    pub recording_id: String,
    pub session_id: String,
    pub facility_id: String,
    /// Relative to the recordings directory.
    pub path: String,
    pub privileged: bool,
    pub attempts: i64,
    /// The claim's time (what [`Store::finish_keyword_job`] checks is still ours).
    pub claimed_at: i64,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Done,
    Skipped,
}

/// The queue's counts by state.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: i64,
    pub running: i64,
    pub done: i64,
    pub skipped: i64,
    pub failed: i64,
}

/// A watch word heard in a call: the alert an investigator follows to the session.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeywordAlert {
    pub id: String,
    pub session_id: String,
    pub recording_id: String,
    pub facility_id: String,
    pub inmate_id: Option<String>,
    pub number: Option<String>,
    /// When the call began.
    pub call_at: DateTime<Utc>,
    /// Who said it: `inmate` or `called`.
    pub party: Party,
    pub word: String,
    /// Where in the recording, in milliseconds.
    pub offset_ms: i64,
    pub end_ms: i64,
    /// The recognizer's own score as a probability (0..1): a ranking, not a guarantee.
    pub confidence: f64,
    pub spotted_at: DateTime<Utc>,
    /// The time zone of the call's facility: `call_at` is shown in it.
    pub time_zone: Option<String>,
}

fn alert(r: &AnyRow) -> Result<KeywordAlert, sqlx::Error> {
    let party: String = r.try_get("party")?;
    let milli: i64 = r.try_get("confidence_milli")?;
    Ok(KeywordAlert {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        recording_id: r.try_get("recording_id")?,
        facility_id: r.try_get("facility_id")?,
        inmate_id: r.try_get("inmate_id")?,
        number: r.try_get("number_e164")?,
        call_at: from_micros(r.try_get("call_at")?),
        party: Party::parse(&party)
            .ok_or_else(|| sqlx::Error::Decode(format!("party {party}").into()))?,
        word: r.try_get("word")?,
        offset_ms: r.try_get("offset_ms")?,
        end_ms: r.try_get("end_ms")?,
        confidence: milli as f64 / 1000.0,
        spotted_at: from_micros(r.try_get("spotted_at")?),
        time_zone: r.try_get("time_zone")?,
    })
}

const ALERT_COLUMNS: &str = "id, session_id, recording_id, facility_id, inmate_id, number_e164, \
    call_at, party, word, offset_ms, end_ms, confidence_milli, spotted_at, \
    (SELECT f.time_zone FROM facilities f WHERE f.id = keyword_hits.facility_id) AS time_zone";

/// Which alerts a list asks for.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub session_id: Option<String>,
    pub facility_id: Option<String>,
    /// Calls that began at or after this.
    pub since: Option<DateTime<Utc>>,
}

impl Store {
    /// Queues every finished call recording not queued yet that ended at or after
    /// `since`, of a facility whose watch list has words (a facility without any gets no
    /// jobs: nothing to look for, and nothing written per call); how many were queued.
    pub async fn queue_keyword_jobs(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO keyword_jobs (recording_id, session_id, facility_id, state, queued_at) \
             SELECT r.id, r.session_id, r.facility_id, 'pending', $1 FROM recordings r \
             JOIN sessions s ON s.id = r.session_id \
             WHERE r.status IN ('complete', 'incomplete') AND s.kind = 'call' AND s.privileged = 0 \
             AND r.format LIKE 'wav-%' AND r.ended_at >= $2 \
             AND EXISTS (SELECT 1 FROM watch_words w WHERE w.facility_id = r.facility_id) \
             AND NOT EXISTS (SELECT 1 FROM keyword_jobs j WHERE j.recording_id = r.id) \
             ON CONFLICT (recording_id) DO NOTHING",
        )
        .bind(self.now_us())
        .bind(crate::db::to_micros(since))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Claims the newest job waiting (or whose claim is older than `lease_us` and has
    /// tries left) for `node`; `None` when there is none. Jobs out of tries whose claim
    /// ran out are marked failed first.
    pub async fn claim_keyword_job(
        &self,
        node: &str,
        lease_us: i64,
        max_attempts: i64,
    ) -> Result<Option<KeywordJob>, StoreError> {
        let now = self.now_us();
        let stale = now - lease_us;
        sqlx::query(
            "UPDATE keyword_jobs SET state = 'failed', finished_at = $1, \
             error = COALESCE(error, 'the node spotting it stopped') \
             WHERE state = 'running' AND claimed_at < $2 AND attempts >= $3",
        )
        .bind(now)
        .bind(stale)
        .bind(max_attempts)
        .execute(self.db.pool())
        .await?;
        let claimable = "(state = 'pending' OR (state = 'running' AND claimed_at < $3)) \
                         AND attempts < $4";
        let row = sqlx::query(&format!(
            "UPDATE keyword_jobs SET state = 'running', claimed_by = $1, claimed_at = $2, \
             attempts = attempts + 1 \
             WHERE recording_id = (SELECT recording_id FROM keyword_jobs WHERE {claimable} \
             ORDER BY queued_at DESC, recording_id LIMIT 1) AND {claimable} \
             RETURNING recording_id, attempts"
        ))
        .bind(node)
        .bind(now)
        .bind(stale)
        .bind(max_attempts)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let recording_id: String = row.try_get("recording_id")?;
        let attempts: i64 = row.try_get("attempts")?;
        let r = sqlx::query(
            "SELECT r.session_id, r.facility_id, r.path, s.privileged FROM recordings r \
             JOIN sessions s ON s.id = r.session_id WHERE r.id = $1",
        )
        .bind(&recording_id)
        .fetch_one(self.db.pool())
        .await?;
        Ok(Some(KeywordJob {
            recording_id,
            session_id: r.try_get("session_id")?,
            facility_id: r.try_get("facility_id")?,
            path: r.try_get("path")?,
            privileged: super::flag(r.try_get("privileged")?),
            attempts,
            claimed_at: now,
        }))
    }

    /// The words of facility `facility_id`'s watch list (the list itself, with who added
    /// each word: `Store::watch_words`).
    pub async fn watch_list(&self, facility_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT word FROM watch_words WHERE facility_id = $1 ORDER BY word")
            .bind(facility_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("word").map_err(StoreError::from))
            .collect()
    }

    /// Ends a job this node holds: its hits written and the job `done` (or `skipped`)
    /// with the list spotted for (`words`, JSON), in one transaction, only if the claim
    /// is still ours. Whether it was.
    pub async fn finish_keyword_job(
        &self,
        job: &KeywordJob,
        node: &str,
        end: JobEnd,
        words: &serde_json::Value,
        hits: &[Hit],
    ) -> Result<bool, StoreError> {
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        let state = match end {
            JobEnd::Done => "done",
            JobEnd::Skipped => "skipped",
        };
        let moved = sqlx::query(
            "UPDATE keyword_jobs SET state = $1, finished_at = $2, words = $3, error = NULL \
             WHERE recording_id = $4 AND state = 'running' AND claimed_by = $5 \
             AND claimed_at = $6",
        )
        .bind(state)
        .bind(now)
        .bind(words.to_string())
        .bind(&job.recording_id)
        .bind(node)
        .bind(job.claimed_at)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for h in hits {
            sqlx::query(
                "INSERT INTO keyword_hits (id, recording_id, session_id, facility_id, inmate_id, \
                 number_e164, call_at, party, word, offset_ms, end_ms, score, confidence_milli, \
                 spotted_at) \
                 SELECT $1, $2, s.id, s.facility_id, s.inmate_id, s.number_e164, s.invite_at, \
                 $3, $4, $5, $6, $7, $8, $9 FROM sessions s WHERE s.id = $10 \
                 ON CONFLICT (recording_id, party, word, offset_ms) DO NOTHING",
            )
            .bind(new_id("kwh"))
            .bind(&job.recording_id)
            .bind(h.party.as_str())
            .bind(&h.word)
            .bind(h.offset_ms)
            .bind(h.end_ms)
            .bind(h.score)
            .bind(h.confidence_milli)
            .bind(now)
            .bind(&job.session_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A job that failed: back to `pending` while it has tries left, else `failed`.
    pub async fn fail_keyword_job(
        &self,
        job: &KeywordJob,
        node: &str,
        max_attempts: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE keyword_jobs SET state = CASE WHEN attempts >= $1 THEN 'failed' \
             ELSE 'pending' END, error = $2, finished_at = $3 \
             WHERE recording_id = $4 AND state = 'running' AND claimed_by = $5 \
             AND claimed_at = $6",
        )
        .bind(max_attempts)
        .bind(error)
        .bind(self.now_us())
        .bind(&job.recording_id)
        .bind(node)
        .bind(job.claimed_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The queue's counts by state.
    pub async fn keyword_queue(&self) -> Result<QueueCounts, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM keyword_jobs GROUP BY state")
            .fetch_all(self.db.pool())
            .await?;
        let mut c = QueueCounts::default();
        for r in rows {
            let state: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            match state.as_str() {
                "pending" => c.pending = n,
                "running" => c.running = n,
                "done" => c.done = n,
                "skipped" => c.skipped = n,
                _ => c.failed += n,
            }
        }
        Ok(c)
    }

    /// The state of recording `recording_id`'s job (`None`: not queued yet).
    pub async fn keyword_job_state(
        &self,
        recording_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM keyword_jobs WHERE recording_id = $1")
            .bind(recording_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("state")).transpose()?)
    }

    /// Alerts matching `f` within `facilities` (`None`: every facility): a session's in
    /// recording order, other lists newest call first.
    pub async fn keyword_alerts(
        &self,
        f: &AlertFilter,
        facilities: Option<&[String]>,
    ) -> Result<Vec<KeywordAlert>, StoreError> {
        if facilities.is_some_and(|l| l.is_empty()) {
            return Ok(Vec::new());
        }
        let mut conds: Vec<String> = vec!["1 = 1".into()];
        let mut args: Vec<String> = Vec::new();
        let mut bind = |v: String| {
            args.push(v);
            format!("${}", args.len())
        };
        if let Some(v) = &f.session_id {
            let p = bind(v.clone());
            conds.push(format!("session_id = {p}"));
        }
        if let Some(v) = &f.facility_id {
            let p = bind(v.clone());
            conds.push(format!("facility_id = {p}"));
        }
        if let Some(list) = facilities {
            let marks: Vec<String> = list.iter().map(|v| bind(v.clone())).collect();
            conds.push(format!("facility_id IN ({})", marks.join(", ")));
        }
        let since = f.since.map(crate::db::to_micros);
        if since.is_some() {
            conds.push(format!("call_at >= ${}", args.len() + 1));
        }
        let order = match f.session_id {
            Some(_) => "offset_ms, party",
            None => "call_at DESC, session_id, offset_ms",
        };
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM keyword_hits WHERE {} ORDER BY {order} LIMIT {MAX_ALERTS}",
            conds.join(" AND ")
        );
        let mut q = sqlx::query(&sql);
        for a in &args {
            q = q.bind(a);
        }
        if let Some(s) = since {
            q = q.bind(s);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| alert(r).map_err(StoreError::from))
            .collect()
    }

    /// One alert.
    pub async fn keyword_alert(&self, id: &str) -> Result<KeywordAlert, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM keyword_hits WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("keyword alert", id))?;
        Ok(alert(&row)?)
    }
}
