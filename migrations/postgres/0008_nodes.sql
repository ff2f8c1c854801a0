-- The nodes of a cluster (issue 10): each node writes its id, the URL of its API and a
-- heartbeat here, so that a request for a live call that reaches any node's API can be
-- forwarded to the node that carries it (`sessions.node_id` names that node). A node
-- upserts its row when it starts (`started_at`) and every `cluster.heartbeat_secs`
-- (`heartbeat_at`); rows are never deleted, so a node that stopped keeps its last
-- heartbeat: what a survivor needs to tell a dead node from a live one (issue 13).
-- Times are Unix microseconds (UTC), as everywhere.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    api_url       TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
