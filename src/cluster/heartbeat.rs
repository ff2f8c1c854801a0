//! A node's row in `nodes`: written when the node starts, then every
//! `cluster.heartbeat_secs` with its API address, so the other nodes can forward it the
//! requests for the calls it carries, and tell a dead node from a live one
//! ([`super::takeover`]).
//!
//! The beat also tells the node about itself: a beat that cannot be written makes it
//! answer 503 to OPTIONS and new INVITEs ([`super::health`]) until one gets through, and
//! a node that could write none for `cluster.dead_after_secs` has been, for all the
//! others know, dead that long: a survivor may have closed its sessions, so it ends its
//! calls ([`Pulse`], [`Watch::presumed_dead`]).

use super::health::NodeHealth;
use crate::store::Store;
use std::time::{Duration, Instant};

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

/// What the heartbeat does besides beating: tell the node's state whether the database
/// answers ([`NodeHealth`]) and, when it has not for as long as other nodes wait before
/// they take this one over, end this node's calls ([`Pulse`]).
pub struct Watch {
    pub health: NodeHealth,
    /// `cluster.dead_after_secs`.
    pub dead_after: Duration,
    /// Called once per outage that lasted `dead_after`: the other nodes may have closed
    /// this node's sessions (reason `system`), so its calls must end too.
    pub presumed_dead: Box<dyn Fn() + Send + Sync>,
}

/// Writes this node's heartbeat every `every`, for as long as the process runs. A failed
/// write is logged, makes the node answer 503 to OPTIONS and new INVITEs until a write
/// gets through, and is tried again at the next beat.
pub fn spawn(
    store: Store,
    node_id: String,
    api_url: String,
    every: Duration,
    watch: Watch,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: registration has just written the row.
        tick.tick().await;
        let mut pulse = Pulse::new(store.clock().now(), watch.dead_after);
        loop {
            tick.tick().await;
            let beat = store.node_heartbeat(&node_id, &api_url).await;
            if let Err(e) = &beat {
                tracing::warn!(error = %e, "node heartbeat failed; retrying at the next beat");
            }
            watch.health.database_reached(beat.is_ok());
            if pulse.beat(store.clock().now(), beat.is_ok()) == Verdict::PresumedDead {
                tracing::error!(
                    silent_secs = watch.dead_after.as_secs(),
                    "no heartbeat written for cluster.dead_after_secs: the other nodes may \
                     have closed this node's sessions; ending its calls"
                );
                (watch.presumed_dead)();
            }
        }
    })
}

/// What one heartbeat tells the node about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Beating, or silent for less than the timeout.
    Alive,
    /// The last beat written is `dead_after` old or more: the other nodes may take this
    /// one over. Said once per outage.
    PresumedDead,
}

/// The heartbeat's memory: when a beat was last written, and whether this outage was
/// already called. Pure (the caller gives the time).
#[derive(Debug, Clone, Copy)]
pub struct Pulse {
    last_written: Instant,
    dead_after: Duration,
    called: bool,
}

impl Pulse {
    /// A pulse whose last beat was written at `at` (the registration).
    pub fn new(at: Instant, dead_after: Duration) -> Pulse {
        Pulse {
            last_written: at,
            dead_after,
            called: false,
        }
    }

    /// A beat at `now`, `written` or not.
    pub fn beat(&mut self, now: Instant, written: bool) -> Verdict {
        if written {
            self.last_written = now;
            self.called = false;
            return Verdict::Alive;
        }
        if self.called || now.saturating_duration_since(self.last_written) < self.dead_after {
            return Verdict::Alive;
        }
        self.called = true;
        Verdict::PresumedDead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_silent_for_the_timeout_is_presumed_dead_once_per_outage() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Pulse::new(t0, s(30));
        assert_eq!(p.beat(t0 + s(10), true), Verdict::Alive);
        assert_eq!(p.beat(t0 + s(20), false), Verdict::Alive);
        assert_eq!(p.beat(t0 + s(39), false), Verdict::Alive);
        assert_eq!(p.beat(t0 + s(40), false), Verdict::PresumedDead);
        assert_eq!(p.beat(t0 + s(50), false), Verdict::Alive, "once");
        assert_eq!(p.beat(t0 + s(60), true), Verdict::Alive);
        assert_eq!(p.beat(t0 + s(90), false), Verdict::PresumedDead);
    }
}
