-- Investigative leads and spoken keyword alerts.
--
-- The facility's word-watch list (`watch_words`, migration 0020) is what the spotter
-- looks for.

-- The spotting queue: one row per finished call recording, so a crash loses nothing and
-- no recording is spotted twice. `state`: pending (waiting), running (claimed by node
-- `claimed_by` at `claimed_at`; a claim older than the lease is taken over), done,
-- skipped (privileged, no words, or the recording is gone), failed (`error`, after
-- `attempts` tries). `words`: the list spotted for, as JSON, when done.
CREATE TABLE keyword_jobs (
    recording_id  TEXT PRIMARY KEY REFERENCES recordings(id),
    session_id    TEXT NOT NULL REFERENCES sessions(id),
    facility_id   TEXT NOT NULL REFERENCES facilities(id),
    state         TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'skipped', 'failed')),
    attempts      BIGINT NOT NULL DEFAULT 0,
    queued_at     BIGINT NOT NULL,
    claimed_by    TEXT,
    claimed_at    BIGINT,
    finished_at   BIGINT,
    words         TEXT,
    error         TEXT
);
CREATE INDEX keyword_jobs_state ON keyword_jobs (state, queued_at);

-- What the spotter heard: a watch word said on one side of a call (`party`: inmate, the
-- recording's left channel; called, its right channel) at `offset_ms`..`end_ms` into the
-- recording. `score` is the recognizer's own log score (base 1.0001), `confidence_milli`
-- the same as 1.0001^score in thousandths. Copied from the session: facility, inmate,
-- number and when the call began (`call_at`), so alert lists read one index.
CREATE TABLE keyword_hits (
    id                TEXT PRIMARY KEY,
    recording_id      TEXT NOT NULL REFERENCES recordings(id),
    session_id        TEXT NOT NULL REFERENCES sessions(id),
    facility_id       TEXT NOT NULL REFERENCES facilities(id),
    inmate_id         TEXT,
    number_e164       TEXT,
    call_at           BIGINT NOT NULL,
    party             TEXT NOT NULL CHECK (party IN ('inmate', 'called')),
    word              TEXT NOT NULL,
    offset_ms         BIGINT NOT NULL,
    end_ms            BIGINT NOT NULL,
    score             BIGINT NOT NULL,
    confidence_milli  BIGINT NOT NULL,
    spotted_at        BIGINT NOT NULL,
    UNIQUE (recording_id, party, word, offset_ms)
);
CREATE INDEX keyword_hits_facility ON keyword_hits (facility_id, call_at);
CREATE INDEX keyword_hits_session ON keyword_hits (session_id, offset_ms);

-- The queue looks for recordings finished since a cutoff.
CREATE INDEX recordings_ended ON recordings (ended_at);
