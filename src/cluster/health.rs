//! Whether this node takes new calls, as a SIP load balancer asks it (OPTIONS) and as a
//! new INVITE finds it: `200` while it takes calls, `503` while it drains or cannot
//! reach the database.
//!
//! One [`NodeHealth`] per process, shared (an `Arc` of two flags): the heartbeat
//! ([`super::heartbeat`]) says whether the database answers, the drain
//! ([`super::drain`]) says the node is going away, and the switchboard reads
//! [`NodeHealth::state`] for every OPTIONS and every new INVITE. Calls in progress are
//! never refused: only the start of new ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the node answers for new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Takes new calls: OPTIONS 200.
    Serving,
    /// Going away (`sallyport drain` or SIGUSR1): calls in progress finish, new ones are
    /// refused 503 so a proxy sends them to another node.
    Draining,
    /// Its last heartbeat could not be written: a call could not be admitted, charged or
    /// recorded. 503 until a heartbeat gets through.
    DatabaseDown,
}

impl NodeState {
    /// The SIP status and reason phrase of an OPTIONS answer, and of a refused INVITE.
    pub fn sip_status(self) -> (u16, &'static str) {
        match self {
            NodeState::Serving => (200, "OK"),
            NodeState::Draining => (503, "Service Unavailable (draining)"),
            NodeState::DatabaseDown => (503, "Service Unavailable (database unreachable)"),
        }
    }

    /// Whether a new INVITE may start a call.
    pub fn takes_calls(self) -> bool {
        self == NodeState::Serving
    }

    /// The name the logs and `/readyz` use.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Draining => "draining",
            NodeState::DatabaseDown => "database_down",
        }
    }
}

/// The seconds a refused INVITE's `Retry-After` asks for: a proxy fails over at once; a
/// handset that talks to this node directly tries again a little later.
pub const RETRY_AFTER_SECS: u32 = 5;

/// This node's state, shared by the heartbeat, the drain and the switchboard.
#[derive(Debug, Clone, Default)]
pub struct NodeHealth {
    inner: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    draining: AtomicBool,
    database_down: AtomicBool,
}

impl NodeHealth {
    /// What the node answers now. Draining wins: a draining node never takes a call
    /// again, whatever the database does.
    pub fn state(&self) -> NodeState {
        if self.inner.draining.load(Ordering::Acquire) {
            NodeState::Draining
        } else if self.inner.database_down.load(Ordering::Acquire) {
            NodeState::DatabaseDown
        } else {
            NodeState::Serving
        }
    }

    /// Starts draining (for good: a drain is not undone).
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// What the last heartbeat found: `true` when it could write, `false` when not.
    pub fn database_reached(&self, reached: bool) {
        self.inner.database_down.store(!reached, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_serves_until_the_database_fails_and_never_after_a_drain() {
        let h = NodeHealth::default();
        assert_eq!(h.state(), NodeState::Serving);
        assert_eq!(h.state().sip_status().0, 200);
        h.database_reached(false);
        assert_eq!(h.state(), NodeState::DatabaseDown);
        assert!(!h.state().takes_calls());
        assert_eq!(h.state().sip_status().0, 503);
        h.database_reached(true);
        assert!(h.state().takes_calls());
        let shared = h.clone();
        shared.drain();
        assert_eq!(h.state(), NodeState::Draining);
        h.database_reached(false);
        h.database_reached(true);
        assert_eq!(h.state(), NodeState::Draining, "a drain is for good");
        assert_eq!(
            h.state().sip_status(),
            (503, "Service Unavailable (draining)")
        );
    }
}
