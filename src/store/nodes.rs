//! The `nodes` table: which gateway processes share this database, where their APIs
//! answer, and when each last said it was alive. Its one writer is the node itself
//! ([`crate::cluster::heartbeat`]); its readers are the API, when it forwards a request to
//! the node that carries a call ([`crate::cluster`]), and later the dead-node check of
//! issue 13 ([`Store::nodes_silent_since`], [`Store::nodes_with_open_work`]).

use super::{Store, StoreError};
use crate::db::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// One node as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// `node.id`, as written on every session the node carries.
    pub id: String,
    /// Where the other nodes reach its API (`node.api_url`, or derived from `http.listen`).
    pub api_url: String,
    /// When it last started (registered).
    pub started_at: DateTime<Utc>,
    /// When it last wrote its heartbeat.
    pub heartbeat_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, api_url, started_at, heartbeat_at";

fn node(r: &AnyRow) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        id: r.try_get("id")?,
        api_url: r.try_get("api_url")?,
        started_at: from_micros(r.try_get("started_at")?),
        heartbeat_at: from_micros(r.try_get("heartbeat_at")?),
    })
}

impl Store {
    /// Registers node `id` as starting now at `api_url`; returns the row it replaces,
    /// if any (a recent heartbeat from another address there means two processes share
    /// one `node.id`).
    pub async fn register_node(
        &self,
        id: &str,
        api_url: &str,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let before = self.node(id).await?;
        let now = self.now_us();
        sqlx::query(
            "INSERT INTO nodes (id, api_url, started_at, heartbeat_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET api_url = excluded.api_url, \
             started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(id)
        .bind(api_url)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(before)
    }

    /// Node `id` is alive now at `api_url` (the row is written again if it was removed).
    pub async fn node_heartbeat(&self, id: &str, api_url: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, api_url, started_at, heartbeat_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET api_url = excluded.api_url, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(id)
        .bind(api_url)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Node `id`, if it ever registered.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(node).transpose()
    }

    /// Every node that ever registered, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes ORDER BY id"))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(node).collect()
    }

    /// The nodes whose last heartbeat is older than `cutoff`: stopped, or dead (what the
    /// dead-node check of issue 13 starts from), by id.
    pub async fn nodes_silent_since(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM nodes WHERE heartbeat_at < $1 ORDER BY id"
        ))
        .bind(to_micros(cutoff))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(node).collect()
    }

    /// The nodes that left work open: sessions `active` or recordings in progress, by
    /// id. Among them, those whose heartbeat is stale are what a survivor takes over
    /// ([`crate::cluster::takeover`]).
    pub async fn nodes_with_open_work(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id FROM sessions WHERE state = 'active' \
             UNION SELECT node_id FROM recordings WHERE status = 'recording' ORDER BY node_id",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("node_id").map_err(StoreError::from))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::clock::{Clock, ManualClock};
    use crate::db::testing::TestDb;
    use crate::store::Store;
    use chrono::{Duration, TimeZone, Utc};
    use std::sync::Arc;

    #[tokio::test]
    async fn nodes_register_beat_and_fall_silent() {
        let t = TestDb::sqlite().await;
        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let store = Store::new(t.db.clone(), clock.clone() as Arc<dyn Clock>, "pepper");
        assert_eq!(store.node("a").await.unwrap(), None);
        assert_eq!(store.register_node("a", "http://a:1").await.unwrap(), None);
        store.register_node("b", "http://b:1").await.unwrap();
        clock.advance(std::time::Duration::from_secs(30));
        store.node_heartbeat("a", "http://a:2").await.unwrap();
        let a = store.node("a").await.unwrap().unwrap();
        assert_eq!(a.api_url, "http://a:2");
        assert_eq!(
            (a.started_at, a.heartbeat_at),
            (t0, t0 + Duration::seconds(30))
        );
        let silent = store
            .nodes_silent_since(t0 + Duration::seconds(10))
            .await
            .unwrap();
        assert_eq!(
            silent.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // A restart replaces the start time and tells what was there.
        let before = store
            .register_node("b", "http://b:3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(before.api_url, "http://b:1");
        let b = store.node("b").await.unwrap().unwrap();
        assert_eq!(b.started_at, t0 + Duration::seconds(30));
        assert_eq!(store.nodes().await.unwrap().len(), 2);
        t.cleanup().await;
    }
}
