//! A node's row in `nodes`: written when the node starts, then every
//! `cluster.heartbeat_secs` with its API address, so the other nodes can forward it the
//! requests for the calls it carries, and (issue 13) tell a dead node from a live one.

use crate::store::Store;
use std::time::Duration;

/// Registers this node (`node_id`, reachable at `api_url`) as started now. Warns when the
/// row it replaces was written recently from another address: two processes configured
/// with one `node.id` would close each other's sessions at restart.
pub async fn register(
    store: &Store,
    node_id: &str,
    api_url: &str,
    every: Duration,
) -> Result<(), crate::store::StoreError> {
    let before = store.register_node(node_id, api_url).await?;
    if let Some(b) = before {
        let quiet = store.clock().wall() - b.heartbeat_at;
        let recent = quiet.to_std().is_ok_and(|q| q < every * 3);
        if recent && b.api_url != api_url {
            tracing::warn!(
                node = node_id,
                other = %b.api_url,
                "node.id {node_id} was beating {}s ago at another address: is another \
                 process configured with the same node.id?",
                quiet.num_seconds()
            );
        }
    }
    tracing::info!(node = node_id, api_url, "registered in the cluster");
    Ok(())
}

/// Writes this node's heartbeat every `every`, for as long as the process runs. A failed
/// write is logged and tried again at the next beat.
pub fn spawn(
    store: Store,
    node_id: String,
    api_url: String,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: registration has just written the row.
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = store.node_heartbeat(&node_id, &api_url).await {
                tracing::warn!(error = %e, "node heartbeat failed; retrying at the next beat");
            }
        }
    })
}
