//! Many nodes, one database: how a request for a live call that reaches any node's API
//! reaches the node that carries the call.
//!
//! # How
//!
//! - **Who carries a call** is already in the database: every session row names its node
//!   (`sessions.node_id`, from `node.id`). The live registry of a node
//!   ([`crate::call::live::LiveCalls`]) holds only the handles of its own calls, because a
//!   handle is a channel into a task of that process.
//! - **Where a node answers** is the `nodes` table ([`crate::store::NodeRecord`]): each
//!   node writes its id, its API address (`node.api_url`, or derived from the bound
//!   `http.listen`) and a heartbeat when it starts and every `cluster.heartbeat_secs`
//!   ([`heartbeat`]). The heartbeat is also how the nodes tell a dead node from a live
//!   one: a node silent for `cluster.dead_after_secs` is taken over by a survivor, its
//!   open sessions closed with reason `system` ([`takeover`]).
//! - **Which node takes calls**: [`health`] (OPTIONS 200, or 503 while draining or while
//!   the database cannot be reached) and [`drain`] (SIGUSR1 or `sallyport drain`: no new
//!   calls, the live ones finish, then the node exits).
//! - **Forwarding**: the API checks the caller (role, facility scope) where the request
//!   arrived, then, for a live call another node carries, sends the request over HTTP to
//!   that node's internal routes (`/api/v1/cluster/calls/...`) with a short-lived
//!   credential bound to that one request ([`token`]), and relays the answer. The receiver
//!   acts only on calls it carries itself and never forwards again (no loops, whatever
//!   the table says). An unknown node is a 503 `node_unknown`, an unreachable or silent
//!   one a 502 `node_unreachable` after `cluster.forward_timeout_secs`, a node that
//!   refuses the credential a 502 `node_refused`; each names the node.
//! - **Audit**: written once, by the node the request arrived at, which knows the caller
//!   (its subject, role and address); the entry's detail names the node that carried the
//!   call. The node that acts logs the forwarded request with the node it came from; a
//!   second audit entry there would make one access look like two, with no caller.
//!
//! # Why HTTP forwarding
//!
//! A listen must be answered by the node that carries the call: its SDP answer holds that
//! node's media address, and the WebRTC peer runs beside the call's media. That makes a
//! request/answer between nodes necessary; HTTP is the API every node already serves.
//! Through the database instead (a request row polled, or PostgreSQL `NOTIFY`, which the
//! `Any` driver cannot listen to and whose payloads stop at 8,000 bytes, under a browser's
//! offer) the answer would come back by polling, and a dead node would still be found only
//! by a timeout. A redirect to the carrying node would make every client reach every node
//! and present its bearer token to each, and split authorization and audit across nodes;
//! forwarding keeps one entry point per client, where the caller is checked and audited.
//!
//! Owns: the node's registration and heartbeat, the takeover of dead nodes, the node's
//! state (health, drain), the inter-node credential, the forwarding client. Called by: [`crate::server`] (registration) and the API's live-call routes.

pub(crate) mod client;
pub mod drain;
pub mod health;
pub mod heartbeat;
pub mod takeover;
pub mod token;

pub use client::NodeUrl;

use crate::config::Config;
use crate::store::{Store, StoreError};
use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// This node as a member of a cluster: its id, the key of the inter-node credential and
/// the forwarding timeout.
#[derive(Clone)]
pub struct Cluster {
    node_id: Arc<str>,
    key: Arc<[u8; 32]>,
    timeout: Duration,
    /// `cluster.dead_after_secs`: a node silent this long is not asked, it is taken over.
    dead_after: Duration,
    /// `recording.dir`, where a takeover looks for a dead node's recordings.
    recordings_dir: Arc<std::path::Path>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be forwarded to the node that carries the call.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("node {node} has never registered its API address (is it running this version?)")]
    UnknownNode { node: String },
    #[error("node {node} ({url}) cannot be reached: {reason}")]
    Unreachable {
        node: String,
        url: String,
        reason: String,
    },
    #[error(
        "node {node} ({url}) refused this node's credential: cluster.secret (or \
         security.pin_pepper) must be the same on every node, and their clocks in step"
    )]
    Refused { node: String, url: String },
    #[error(
        "node {node} is dead (its last heartbeat at {last_heartbeat}): its sessions are \
         closed, with reason system"
    )]
    Dead {
        node: String,
        last_heartbeat: chrono::DateTime<chrono::Utc>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer of the node that carries the call, relayed as it came.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub status: StatusCode,
    /// The JSON body (`null` for an empty one, such as a 204's).
    pub body: serde_json::Value,
    /// The node that answered.
    pub node: String,
}

impl Relayed {
    /// The error code of an error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

/// The secret the credential's key comes from: `cluster.secret`, or (empty) the PIN
/// pepper, which every node of one database must share already.
fn secret(config: &Config) -> &str {
    match config.cluster.secret.as_str() {
        "" => &config.security.pin_pepper,
        s => s,
    }
}

/// `%XX` for every byte of a path segment but the unreserved ones.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Cluster {
    pub fn from_config(config: &Config) -> Cluster {
        Cluster {
            node_id: config.node.id.as_str().into(),
            key: Arc::new(token::derive_key(secret(config))),
            timeout: Duration::from_secs(config.cluster.forward_timeout_secs),
            dead_after: Duration::from_secs(config.cluster.dead_after_secs),
            recordings_dir: config.recording.dir.as_path().into(),
        }
    }

    /// This node's id (`node.id`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The key of the inter-node credential.
    pub fn key(&self) -> &[u8] {
        &self.key[..]
    }

    /// Sends `method path` with `body` (JSON, or nothing) to node `node`, found in the
    /// `nodes` table, with a credential for that one request; its answer.
    pub async fn forward(
        &self,
        store: &Store,
        node: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Relayed, ForwardError> {
        let record = store
            .node(node)
            .await?
            .ok_or_else(|| ForwardError::UnknownNode { node: node.into() })?;
        self.take_over_if_dead(store, &record).await?;
        let unreachable = |reason: String| ForwardError::Unreachable {
            node: node.into(),
            url: record.api_url.clone(),
            reason,
        };
        let url = NodeUrl::parse(&record.api_url).map_err(unreachable)?;
        let body = Bytes::from(body.map(|b| b.to_string()).unwrap_or_default());
        let request = token::Request {
            from: self.node_id(),
            to: node,
            method: method.as_str(),
            path,
            body: &body,
        };
        let now = store.clock().wall().timestamp();
        let credential = token::issue(self.key(), &request, now);
        tracing::info!(node, %method, path, "forwarding a live-call request");
        let headers = [(token::HEADER, credential.as_str())];
        let (status, answer) = client::exchange(&url, method, path, &headers, body, self.timeout)
            .await
            .map_err(unreachable)?;
        if status == StatusCode::UNAUTHORIZED {
            // Only the credential is checked there: the caller was checked here.
            return Err(ForwardError::Refused {
                node: node.into(),
                url: record.api_url,
            });
        }
        let body = match answer.is_empty() {
            true => serde_json::Value::Null,
            false => serde_json::from_slice(&answer)
                .map_err(|_| unreachable(format!("its answer ({status}) is not JSON")))?,
        };
        Ok(Relayed {
            status,
            body,
            node: node.into(),
        })
    }
}

impl Cluster {
    /// A node silent for `cluster.dead_after_secs` is not asked: it is taken over here and
    /// now, if no other node has done so yet ([`takeover`]), and the answer is
    /// [`ForwardError::Dead`]: whatever was asked about, its session is closed.
    async fn take_over_if_dead(
        &self,
        store: &Store,
        record: &crate::store::NodeRecord,
    ) -> Result<(), ForwardError> {
        let now = store.clock().wall();
        let Some(cutoff) = takeover::cutoff(now, self.dead_after) else {
            return Ok(());
        };
        if record.heartbeat_at >= cutoff {
            return Ok(());
        }
        let dir = &self.recordings_dir;
        if let Err(e) = takeover::take_over(store, dir, self.node_id(), &record.id, cutoff).await {
            tracing::warn!(error = %e, node = %record.id, "taking over a dead node failed");
        }
        Err(ForwardError::Dead {
            node: record.id.clone(),
            last_heartbeat: record.heartbeat_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_segment("lsn_0193abc-.~"), "lsn_0193abc-.~");
        assert_eq!(encode_segment("a/b?c d%"), "a%2Fb%3Fc%20d%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn the_key_comes_from_the_cluster_secret_or_else_the_pepper() {
        let mut c = Config::default();
        c.security.pin_pepper = "pepper-0123456789abc".into();
        let from_pepper = Cluster::from_config(&c).key().to_vec();
        let tickets = crate::api::tickets::derive_key(&c);
        assert_ne!(
            &from_pepper[..],
            &tickets[..],
            "not the recording tickets' key"
        );
        c.cluster.secret = "cluster-secret-0123456789".into();
        let from_secret = Cluster::from_config(&c).key().to_vec();
        assert_ne!(from_pepper, from_secret);
        c.security.pin_pepper = "another-pepper-0123456789".into();
        assert_eq!(Cluster::from_config(&c).key(), &from_secret[..]);
    }
}
