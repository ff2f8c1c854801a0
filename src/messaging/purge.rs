//! Retention: removes messages older than their facility's `retention_days`, with their
//! photos, and photos uploaded but never sent for a day. A photo's file is deleted once no
//! row names its content. Each run that removed anything writes one audit entry (actor
//! `system`, action `message.purge`, the ids removed).
//!
//! Every node runs it every `messaging.purge_interval_secs`; two runs at once remove each
//! row once (the second finds nothing). Like recordings, it assumes the nodes share the
//! data directory's `messages` folder.

use crate::config::Config;
use crate::store::{AuditEntry, Store, StoreError};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// What one run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub messages: Vec<String>,
    /// Photo files deleted (their SHA-256).
    pub files: Vec<String>,
}

/// One run at `now`.
pub async fn purge(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<PurgeReport, StoreError> {
    let (messages, orphans) = store.purge_messages(now).await?;
    let dir = super::photo::dir(config);
    let mut files = Vec::new();
    for sha in orphans {
        let Some(path) = super::photo::path(&dir, &sha) else {
            continue;
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => files.push(sha),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => files.push(sha),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "message photo not deleted")
            }
        }
    }
    if !messages.is_empty() || !files.is_empty() {
        let detail = json!({ "messages": messages, "photo_files": files.len() });
        store
            .audit(AuditEntry {
                actor: "system",
                action: "message.purge",
                target: "",
                facility_id: None,
                detail,
                remote_addr: None,
            })
            .await?;
    }
    Ok(PurgeReport { messages, files })
}

/// Purges every `messaging.purge_interval_secs` with the store's clock.
pub fn spawn(store: Store, config: Arc<Config>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(config.messaging.purge_interval_secs);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = store.clock().wall();
            if let Err(e) = purge(&store, &config, now).await {
                tracing::warn!(error = %e, "message purge failed; retrying later");
            }
        }
    })
}
