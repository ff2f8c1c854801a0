//! A node's row in `nodes`: written when the node starts, then every
//! `cluster.heartbeat_secs` with its API address, so the other nodes can forward it the
//! requests for the calls it carries, and tell a dead node from a live one
//! ([`super::takeover`]).
//!
//! The beat also tells the node about itself: a beat that cannot be written (or a probe
//! of the database between beats, every [`PROBE_EVERY`], that gets no answer within
//! [`ANSWER_WITHIN`]) makes it answer 503 to OPTIONS and new INVITEs ([`super::health`])
//! until one gets through, and
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

/// How often a node checks, between heartbeats, that it reaches the database: the 503 a
/// load balancer's OPTIONS gets follows an outage within about this plus
/// [`ANSWER_WITHIN`], whatever `cluster.heartbeat_secs` is.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a heartbeat write or a probe may take before the database counts as
/// unreachable for it (a partition or a dead server can leave a connection attempt
/// hanging far longer than a healthy database takes for one statement).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// What a tick of the watch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Write the heartbeat (`every` has passed since the last attempt).
    Beat,
    /// Only check that the database answers.
    Probe,
}

/// Whether the tick at `now` writes the heartbeat, the last attempt having been at
/// `last_beat`. Pure. Half a probe period of slack, so that ticks of [`PROBE_EVERY`]
/// land on a beat every `every` and not one tick late.
pub fn tick(now: Instant, last_beat: Instant, every: Duration) -> Tick {
    if now.saturating_duration_since(last_beat) + PROBE_EVERY / 2 >= every {
        Tick::Beat
    } else {
        Tick::Probe
    }
}

/// Writes this node's heartbeat every `every`, and checks every [`PROBE_EVERY`] in between
/// that the database answers, for as long as the process runs. A failed (or, past
/// [`ANSWER_WITHIN`], unanswered) write or probe is logged and makes the node answer 503
/// to OPTIONS and new INVITEs until one gets through; a failed write is tried again at
/// the next beat.
pub fn spawn(
    store: Store,
    node_id: String,
    api_url: String,
    every: Duration,
    watch: Watch,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PROBE_EVERY.min(every));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: registration has just written the row.
        ticks.tick().await;
        let mut pulse = Pulse::new(store.clock().now(), watch.dead_after);
        let mut last_beat = store.clock().now();
        loop {
            ticks.tick().await;
            let now = store.clock().now();
            if tick(now, last_beat, every) == Tick::Probe {
                let probe = sqlx::query("SELECT 1").execute(store.db().pool());
                let reached = match tokio::time::timeout(ANSWER_WITHIN, probe).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the database does not answer");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(within = ?ANSWER_WITHIN, "the database does not answer");
                        false
                    }
                };
                watch.health.database_reached(reached);
                continue;
            }
            last_beat = now;
            let write = store.node_heartbeat(&node_id, &api_url);
            let written = match tokio::time::timeout(ANSWER_WITHIN, write).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "node heartbeat failed; retrying at the next beat");
                    false
                }
                Err(_) => {
                    tracing::warn!(within = ?ANSWER_WITHIN, "node heartbeat not written in time; retrying at the next beat");
                    false
                }
            };
            watch.health.database_reached(written);
            if pulse.beat(store.clock().now(), written) == Verdict::PresumedDead {
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
    fn ticks_probe_between_beats_and_beat_every_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(tick(t0 + s(1), t0, s(10)), Tick::Probe);
        assert_eq!(tick(t0 + s(9), t0, s(10)), Tick::Probe);
        assert_eq!(tick(t0 + s(10), t0, s(10)), Tick::Beat);
        assert_eq!(
            tick(t0 + Duration::from_millis(9_600), t0, s(10)),
            Tick::Beat,
            "a tick a little early still beats"
        );
        assert_eq!(
            tick(t0 + s(1), t0, s(1)),
            Tick::Beat,
            "every tick beats at 1 s"
        );
    }

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
