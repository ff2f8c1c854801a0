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
        let (increments, amount) = charged(db, &id).await?;
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

/// A session row as the call flow opens it (at the handset INVITE, before the PIN).
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub facility_id: &'a str,
    pub handset_id: Option<&'a str>,
    pub dialed: &'a str,
    pub node_id: &'a str,
    pub sip_call_id: Option<&'a str>,
}

/// Opens an `active` call session.
pub async fn open_call(db: &Db, s: &NewSession<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, kind, facility_id, handset_id, dialed, state, node_id, sip_call_id, invite_at) \
         VALUES ($1, 'call', $2, $3, $4, 'active', $5, $6, $7)",
    )
    .bind(s.id)
    .bind(s.facility_id)
    .bind(s.handset_id)
    .bind(s.dialed)
    .bind(s.node_id)
    .bind(s.sip_call_id)
    .bind(to_micros(now))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Attaches the identified inmate (and the account that pays) to a live session. Returns
/// `false` when the inmate already has a live call anywhere in the cluster: the unique
/// index `sessions_one_live_call` decides, atomically, across nodes.
pub async fn claim_inmate(
    db: &Db,
    session_id: &str,
    inmate_id: &str,
    account_id: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE sessions SET inmate_id = $2, account_id = $3 WHERE id = $1 AND state = 'active'",
    )
    .bind(session_id)
    .bind(inmate_id)
    .bind(account_id)
    .execute(db.pool())
    .await;
    match r {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(e) if crate::db::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Calls the inmate was connected on (accepted) since `since`.
pub async fn accepted_calls_since(
    db: &Db,
    inmate_id: &str,
    since: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) FROM sessions WHERE inmate_id = $1 AND kind = 'call' AND accepted_at IS NOT NULL AND accepted_at >= $2",
    )
    .bind(inmate_id)
    .bind(to_micros(since))
    .fetch_one(db.pool())
    .await?
    .try_get(0)
}

/// What a live session has reached so far, written as it happens so that live-call views
/// (`GET /api/v1/calls/active`, monitoring) see it before the call ends. Fields left
/// `None` keep their stored value.
#[derive(Debug, Clone, Default)]
pub struct Progress<'a> {
    pub number_e164: Option<&'a str>,
    pub privileged: Option<bool>,
    pub answer_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
}

/// Records a live session's progress (see [`Progress`]); a no-op once it has ended.
pub async fn progress(db: &Db, id: &str, p: &Progress<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET number_e164 = COALESCE($2, number_e164), \
         privileged = COALESCE($3, privileged), answer_at = COALESCE($4, answer_at), \
         accepted_at = COALESCE($5, accepted_at) WHERE id = $1 AND state = 'active'",
    )
    .bind(id)
    .bind(p.number_e164)
    .bind(p.privileged.map(i64::from))
    .bind(p.answer_at.map(to_micros))
    .bind(p.accepted_at.map(to_micros))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// How a session ended, in wall-clock terms, for its CDR.
#[derive(Debug, Clone)]
pub struct SessionEnd<'a> {
    pub reason: &'a str,
    pub inmate_id: Option<&'a str>,
    pub number_e164: Option<&'a str>,
    pub privileged: bool,
    pub recorded: bool,
    pub answer_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub end_at: DateTime<Utc>,
}

/// Closes a live session with its reason. Billed increments and amount are counted from
/// the ledger (the source of truth), never from the caller's own tally.
pub async fn close(db: &Db, id: &str, e: &SessionEnd<'_>) -> Result<bool, sqlx::Error> {
    let (increments, amount) = charged(db, id).await?;
    let done = sqlx::query(
        "UPDATE sessions SET state = 'ended', end_reason = $2, inmate_id = COALESCE(inmate_id, $3), \
         number_e164 = COALESCE($4, number_e164), privileged = $5, recorded = $6, answer_at = $7, \
         accepted_at = $8, end_at = $9, billed_increments = $10, amount_minor = $11 \
         WHERE id = $1 AND state = 'active'",
    )
    .bind(id)
    .bind(e.reason)
    .bind(e.inmate_id)
    .bind(e.number_e164)
    .bind(i64::from(e.privileged))
    .bind(i64::from(e.recorded))
    .bind(e.answer_at.map(to_micros))
    .bind(e.accepted_at.map(to_micros))
    .bind(to_micros(e.end_at))
    .bind(increments)
    .bind(amount)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// (increments, amount in minor units) debited for a session, from the ledger: the
/// revenue-side entries of the session's transactions.
async fn charged(db: &Db, id: &str) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) AS total \
         FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
         WHERE t.session_id = $1 AND e.amount_minor > 0 AND e.balance_after_minor IS NULL",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await?;
    Ok((row.try_get("n")?, row.try_get("total")?))
}
