//! Idle balances: money a family deposited stays theirs. A prepaid balance nobody has
//! touched for [`FamilyConfig::idle_notice_days`](super::FamilyConfig) gets one email
//! saying so — the balance, that it is not taken however long it waits, and how to have
//! it refunded without a fee — before it reaches the 180 days after which some systems
//! keep it. Nothing is ever moved: the sweep only writes to `balance_notices` and mails.
//!
//! Once per idle stretch: the notice's row is keyed by the account and the time of its
//! last movement, inserted before the mail goes out, so two nodes sweeping at once send
//! one, and a family that spends or deposits starts a new stretch (a later notice).

use crate::config::Config;
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

/// How often a node sweeps for idle balances.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3_600);

/// One notice to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleBalance {
    pub account_id: String,
    pub facility_id: String,
    pub email: String,
    pub balance: Money,
    /// The account's last movement (its opening when it has none).
    pub idle_since: DateTime<Utc>,
}

/// Finds the open family prepaid accounts with money on them, idle since `cutoff` or
/// earlier, whose owner has an open verified address and no notice for this stretch, and
/// claims a notice for each (a row in `balance_notices`; a row another node inserted first
/// is skipped). Returns the claimed ones, to be mailed.
pub async fn claim_idle(
    store: &Store,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<IdleBalance>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.id, a.facility_id, a.balance_minor, f.email, \
         COALESCE((SELECT MAX(e.created_at) FROM ledger_entries e WHERE e.account_id = a.id), a.opened_at) AS idle_since \
         FROM accounts a JOIN family_accounts f ON f.user_id = a.owner_id \
         WHERE a.kind = 'family' AND a.status = 'open' AND a.balance_minor > 0 \
         AND f.closed_at IS NULL AND f.email_verified_at IS NOT NULL",
    )
    .fetch_all(store.db().pool())
    .await?;
    let mut claimed = Vec::new();
    for row in &rows {
        let idle_since: i64 = row.try_get("idle_since")?;
        if idle_since > to_micros(cutoff) {
            continue;
        }
        let account_id: String = row.try_get("id")?;
        let inserted = sqlx::query(
            "INSERT INTO balance_notices (account_id, idle_since, sent_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&account_id)
        .bind(idle_since)
        .bind(to_micros(now))
        .execute(store.db().pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            claimed.push(IdleBalance {
                account_id,
                facility_id: row
                    .try_get::<Option<String>, _>("facility_id")?
                    .unwrap_or_default(),
                email: row.try_get("email")?,
                balance: Money::from_minor(row.try_get("balance_minor")?),
                idle_since: from_micros(idle_since),
            });
        }
    }
    Ok(claimed)
}

/// One sweep at `now`: claims the notices due and mails them (a failed mail is logged;
/// its claim stands, so a broken mail server never turns into a flood later).
pub async fn sweep(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let days = i64::from(config.family.idle_notice_days);
    let cutoff = now - chrono::Duration::days(days);
    let due = claim_idle(store, cutoff, now).await?;
    let base = super::public_url(config);
    for idle in &due {
        let mail =
            super::texts::idle_balance(&idle.email, idle.balance, &idle.facility_id, days, &base);
        if let Err(e) = crate::mail::send(config, &mail).await {
            tracing::error!(error = %e, account = %idle.account_id, "idle-balance notice not sent");
        }
        tracing::info!(account = %idle.account_id, "idle-balance notice sent");
    }
    Ok(due.len())
}

/// Sweeps every [`SWEEP_EVERY`] with the store's clock.
pub fn spawn(store: Store, config: Arc<Config>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = store.clock().wall();
            if let Err(e) = sweep(&store, &config, now).await {
                tracing::warn!(error = %e, "idle-balance sweep failed; retrying later");
            }
        }
    })
}
