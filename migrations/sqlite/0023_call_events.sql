-- What happened in a call before and around the conversation that the session row has
-- no column for, in order (append-only), for the investigator's timeline:
--   pin           an ID + PIN entry was decided; detail: valid, wrong, locked or
--                 account_locked (never the digits)
--   checks        the destination checks decided; detail: authorized or the end reason
--   announcement  the announcement to the called party started; detail: recorded or
--                 privileged
--   warning       a warning played to the inmate; detail: funds_low or max_duration
-- The rest of the timeline (INVITE, trunk answer, acceptance, debits with the balance
-- after, the cut and who ended it, the recording's start) is in sessions, the ledger and
-- recordings already. Times are Unix microseconds (UTC), as everywhere.
CREATE TABLE call_events (
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('pin', 'checks', 'announcement', 'warning')),
    detail      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session_id, seq)
);
CREATE TRIGGER call_events_no_update BEFORE UPDATE ON call_events
BEGIN SELECT RAISE(ABORT, 'call events are append-only'); END;
CREATE TRIGGER call_events_no_delete BEFORE DELETE ON call_events
BEGIN SELECT RAISE(ABORT, 'call events are append-only'); END;
