-- Video visits as sessions (issue 11): a visit in progress is a `sessions` row of kind
-- 'visit' and service 'video', linked to its booking, with the time billing was paused
-- (a side dropped out) and a timeline of who joined, dropped, came back and left.
ALTER TABLE sessions ADD COLUMN visit_id TEXT;
ALTER TABLE sessions ADD COLUMN paused_ms BIGINT NOT NULL DEFAULT 0;
-- One live session per visit, across every node: a second open fails on this index.
CREATE UNIQUE INDEX sessions_one_live_visit ON sessions (visit_id) WHERE state = 'active' AND kind = 'visit';
CREATE INDEX sessions_visit ON sessions (visit_id);

-- What happened in a session and when, in order (append-only). `kind`: joined, media,
-- dropped, left, paused, resumed; `side`: visitor or inmate ('' when it names no side).
-- Times are Unix microseconds (UTC), as everywhere.
CREATE TABLE session_events (
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('joined', 'media', 'dropped', 'left', 'paused', 'resumed')),
    side        TEXT NOT NULL DEFAULT '' CHECK (side IN ('', 'visitor', 'inmate')),
    PRIMARY KEY (session_id, seq)
);
CREATE TRIGGER session_events_no_update BEFORE UPDATE ON session_events
BEGIN SELECT RAISE(ABORT, 'session events are append-only'); END;
CREATE TRIGGER session_events_no_delete BEFORE DELETE ON session_events
BEGIN SELECT RAISE(ABORT, 'session events are append-only'); END;
