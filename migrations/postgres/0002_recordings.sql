-- Recordings (issue 4) -----------------------------------------------------------------------
-- One row per recording file. The row's status moves recording -> complete (or incomplete,
-- when the gateway stopped mid-call and the file was closed at restart) -> purged; the
-- facts that make it evidence are frozen in recording_chain when it is finished.
CREATE TABLE recordings (
    id               TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions(id),
    facility_id      TEXT NOT NULL REFERENCES facilities(id),
    path             TEXT NOT NULL UNIQUE,      -- relative to [recording] dir
    format           TEXT NOT NULL,             -- e.g. 'wav-pcmu', 'wav-pcma'
    status           TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'incomplete', 'purged')),
    node_id          TEXT NOT NULL DEFAULT '',
    started_at       BIGINT NOT NULL,
    ended_at         BIGINT,
    duration_ms      BIGINT,
    bytes            BIGINT,
    sha256           TEXT,
    dropped_packets  BIGINT NOT NULL DEFAULT 0,
    chain_seq        BIGINT,
    purged_at        BIGINT
);
CREATE INDEX recordings_session ON recordings (session_id);
CREATE INDEX recordings_facility_time ON recordings (facility_id, started_at);
CREATE INDEX recordings_status ON recordings (status);

-- The recordings hash chain: append-only, one entry per finished recording (kind
-- 'recording') and one per purge (kind 'purge'); link = SHA-256(prev_link ‖ fields).
CREATE TABLE recording_chain (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            BIGINT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('recording', 'purge')),
    recording_id  TEXT NOT NULL,
    file_sha256   TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    prev_link     TEXT NOT NULL,
    link          TEXT NOT NULL
);
CREATE INDEX recording_chain_recording ON recording_chain (recording_id);
CREATE TRIGGER recording_chain_no_update BEFORE UPDATE ON recording_chain
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('the recording chain is append-only');
CREATE TRIGGER recording_chain_no_delete BEFORE DELETE ON recording_chain
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('the recording chain is append-only');
