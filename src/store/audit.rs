//! The audit log: who did what, when, from where. Append-only (database triggers refuse
//! updates and deletes) and hash-chained: each entry stores the previous entry's link and
//! its own, `SHA-256(previous link ‖ its fields)`, so anyone who edits, removes, inserts or
//! reorders entries behind the database's back (dropping the triggers, editing the file)
//! breaks the chain at that point, and [`Store::verify_audit`] names the entry.
//!
//! Appends are serialized so the chain stays a line across writers and nodes: SQLite's
//! write lock (`BEGIN IMMEDIATE`), a transaction-scoped advisory lock on PostgreSQL.

use super::{Store, StoreError};
use crate::db::{from_micros, Backend};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// The PostgreSQL advisory lock key that serializes audit appends ("audit" in ASCII).
const AUDIT_LOCK_KEY: i64 = 0x0061_7564_6974;

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub facility_id: Option<&'a str>,
    pub detail: serde_json::Value,
    pub remote_addr: Option<&'a str>,
}

/// One stored entry, as `GET /api/v1/audit` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub facility_id: Option<String>,
    pub detail: serde_json::Value,
    pub remote_addr: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// What is wrong at one entry of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFault {
    /// The entry's fields no longer match its hash: it was changed.
    Changed,
    /// The entry does not follow the one before it: entries were removed, inserted or
    /// reordered just before it.
    BrokenLink,
}

/// One fault, at the entry `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    pub id: i64,
    pub fault: AuditFault,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    pub entries: u64,
    pub problems: Vec<AuditProblem>,
    /// The last link (what the next entry will follow).
    pub head: String,
}

impl AuditVerification {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The fields an entry's link covers, as stored (the evidence package verifier
/// recomputes an anchor's link from them: [`crate::evidence`]).
pub(crate) struct Fields<'a> {
    pub(crate) at: i64,
    pub(crate) actor: &'a str,
    pub(crate) action: &'a str,
    pub(crate) target: &'a str,
    pub(crate) facility_id: Option<&'a str>,
    pub(crate) detail: &'a str,
    pub(crate) remote_addr: Option<&'a str>,
}

/// `SHA-256(prev ‖ fields)`, hex. Every field is length-prefixed (absent ones marked) so
/// no two different entries hash the same bytes.
pub(crate) fn link(prev: &str, f: &Fields<'_>) -> String {
    let mut h = Sha256::new();
    let mut put = |s: Option<&str>| match s {
        Some(s) => {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        None => h.update(u64::MAX.to_be_bytes()),
    };
    put(Some(prev));
    put(Some(&f.at.to_string()));
    put(Some(f.actor));
    put(Some(f.action));
    put(Some(f.target));
    put(f.facility_id);
    put(Some(f.detail));
    put(f.remote_addr);
    hex::encode(h.finalize())
}

const COLUMNS: &str =
    "id, at, actor, action, target, facility_id, detail, remote_addr, prev_hash, hash";

fn record(r: &sqlx::any::AnyRow) -> Result<AuditRecord, StoreError> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditRecord {
        id: r.try_get("id")?,
        at: from_micros(r.try_get("at")?),
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        facility_id: r.try_get("facility_id")?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        remote_addr: r.try_get("remote_addr")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

impl Store {
    /// Appends an entry to the chain.
    pub async fn audit(&self, e: AuditEntry<'_>) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        if self.db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let prev: String = sqlx::query("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("hash"))
            .transpose()?
            .unwrap_or_default();
        let detail = e.detail.to_string();
        let fields = Fields {
            at: self.now_us(),
            actor: e.actor,
            action: e.action,
            target: e.target,
            facility_id: e.facility_id,
            detail: &detail,
            remote_addr: e.remote_addr,
        };
        let hash = link(&prev, &fields);
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, facility_id, detail, remote_addr, \
             prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        )
        .bind(fields.at)
        .bind(e.actor)
        .bind(e.action)
        .bind(e.target)
        .bind(e.facility_id)
        .bind(&detail)
        .bind(e.remote_addr)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries, newest first, `limit` from `offset`.
    pub async fn audit_records(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// Walks the whole chain in order and names every entry that was changed or does not
    /// follow its predecessor.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut problems = Vec::new();
        let mut expected_prev = String::new();
        let mut entries = 0u64;
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT 1000"
            ))
            .bind(after)
            .fetch_all(self.db.pool())
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let id: i64 = r.try_get("id")?;
                let prev: String = r.try_get("prev_hash")?;
                let hash: String = r.try_get("hash")?;
                let detail: String = r.try_get("detail")?;
                let (actor, action, target): (String, String, String) = (
                    r.try_get("actor")?,
                    r.try_get("action")?,
                    r.try_get("target")?,
                );
                let facility: Option<String> = r.try_get("facility_id")?;
                let remote: Option<String> = r.try_get("remote_addr")?;
                let fields = Fields {
                    at: r.try_get("at")?,
                    actor: &actor,
                    action: &action,
                    target: &target,
                    facility_id: facility.as_deref(),
                    detail: &detail,
                    remote_addr: remote.as_deref(),
                };
                if prev != expected_prev {
                    problems.push(AuditProblem {
                        id,
                        fault: AuditFault::BrokenLink,
                    });
                }
                if link(&prev, &fields) != hash {
                    problems.push(AuditProblem {
                        id,
                        fault: AuditFault::Changed,
                    });
                }
                expected_prev = hash;
                entries += 1;
                after = id;
            }
        }
        Ok(AuditVerification {
            entries,
            problems,
            head: expected_prev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(detail: &'a str, facility: Option<&'a str>) -> Fields<'a> {
        Fields {
            at: 1,
            actor: "admin",
            action: "call.terminate",
            target: "c1",
            facility_id: facility,
            detail,
            remote_addr: None,
        }
    }

    #[test]
    fn a_link_covers_the_previous_link_and_every_field() {
        let base = link("", &fields("{}", Some("F1")));
        assert_eq!(base.len(), 64);
        assert_eq!(base, link("", &fields("{}", Some("F1"))));
        assert_ne!(base, link("x", &fields("{}", Some("F1"))));
        assert_ne!(base, link("", &fields("{ }", Some("F1"))));
        assert_ne!(base, link("", &fields("{}", None)));
        assert_ne!(
            link("", &fields("{}", Some(""))),
            link("", &fields("{}", None)),
            "absent and empty differ"
        );
    }
}
