-- Investigators' notes and bookmarks (issue 16), and who terminated a call.
--
-- A note marks a moment (`start_ms`) or a range (`start_ms`..`end_ms`, milliseconds into the
-- session's recording) of one session, with text. It is shared with the investigators of
-- the session's facility and listed per inmate and per number (copied from the session, so
-- the lists read one index). `notes` holds what never changes and the current version;
-- `note_versions` holds every version, append-only: an edit appends a version, a delete
-- appends a tombstone (`deleted` = 1). Nothing is overwritten without trace.
CREATE TABLE notes (
    id           TEXT PRIMARY KEY,
    facility_id  TEXT NOT NULL REFERENCES facilities(id),
    session_id   TEXT NOT NULL REFERENCES sessions(id),
    inmate_id    TEXT,
    number_e164  TEXT,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL,            -- the current version (the newest in note_versions)
    deleted      BIGINT NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX notes_session ON notes (session_id, created_at);
CREATE INDEX notes_inmate ON notes (inmate_id, created_at);
CREATE INDEX notes_number ON notes (number_e164, created_at);
CREATE INDEX notes_facility ON notes (facility_id, created_at);
CREATE TRIGGER notes_no_delete BEFORE DELETE ON notes
BEGIN SELECT RAISE(ABORT, 'notes are never deleted (a delete is a tombstone version)'); END;

CREATE TABLE note_versions (
    note_id      TEXT NOT NULL REFERENCES notes(id),
    version      BIGINT NOT NULL,
    start_ms     BIGINT NOT NULL,
    end_ms       BIGINT,
    body         TEXT NOT NULL,
    deleted      BIGINT NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    author       TEXT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (note_id, version)
);
CREATE TRIGGER note_versions_no_update BEFORE UPDATE ON note_versions
BEGIN SELECT RAISE(ABORT, 'note versions are append-only'); END;
CREATE TRIGGER note_versions_no_delete BEFORE DELETE ON note_versions
BEGIN SELECT RAISE(ABORT, 'note versions are append-only'); END;

-- The user who ended a call with a terminate (reason `terminated`), on its record.
ALTER TABLE sessions ADD COLUMN terminated_by TEXT;
