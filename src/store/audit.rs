//! The audit log: who did what, when, from where. Append-only (database triggers refuse
//! updates and deletes); the hash chain over it arrives with the investigator console.

use super::{Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub facility_id: Option<&'a str>,
    pub detail: serde_json::Value,
    pub remote_addr: Option<&'a str>,
}

impl Store {
    pub async fn audit(&self, e: AuditEntry<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, facility_id, detail, remote_addr) \
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(self.now_us())
        .bind(e.actor)
        .bind(e.action)
        .bind(e.target)
        .bind(e.facility_id)
        .bind(e.detail.to_string())
        .bind(e.remote_addr)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}
