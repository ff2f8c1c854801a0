//! Sessions (CDRs) at the database: what survives a crash.
//!
//! The call flow (and later video visits) writes a session row when a call starts and
//! closes it with a reason when it ends. A node that dies mid-call leaves rows `active`;
//! on its next start [`close_orphans`] ends them with reason `system`. Their charges stand
//! exactly as committed: each increment was debited atomically and idempotently by the
//! ledger, and the CDR's billed increments and amount are recomputed from the ledger so
//! they cannot disagree with the money.

use crate::db::{to_micros, Db};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Ends every session this node left `active`; returns how many it closed.
pub async fn close_orphans(db: &Db, node_id: &str, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query("SELECT id FROM sessions WHERE state = 'active' AND node_id = $1")
        .bind(node_id)
        .fetch_all(db.pool())
        .await?;
    let mut closed = 0;
    for r in rows {
        let id: String = r.try_get("id")?;
        let charged = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) AS total \
             FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
             WHERE t.session_id = $1 AND e.amount_minor > 0 AND e.balance_after_minor IS NULL",
        )
        .bind(&id)
        .fetch_one(db.pool())
        .await?;
        let increments: i64 = charged.try_get("n")?;
        let amount: i64 = charged.try_get("total")?;
        let done = sqlx::query(
            "UPDATE sessions SET state = 'ended', end_reason = 'system', end_at = $2, \
             billed_increments = $3, amount_minor = $4 WHERE id = $1 AND state = 'active'",
        )
        .bind(&id)
        .bind(to_micros(now))
        .bind(increments)
        .bind(amount)
        .execute(db.pool())
        .await?;
        closed += done.rows_affected();
        tracing::warn!(session = %id, increments, "orphaned session closed");
    }
    Ok(closed)
}
