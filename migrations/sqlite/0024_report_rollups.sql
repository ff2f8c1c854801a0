-- Report rollups (src/reports/rollup.rs): what the slow facility reports read for days
-- that are over, summarised once, off the call path (nothing here is written when a call
-- is set up, charged or ended). A report reads these for the settled days of its range
-- and the raw rows for the rest, so its numbers are the raw rows' numbers.
-- Times are UTC, so a facility's time zone can change without touching them:
--   grain 'day'    period = Unix day (microseconds / 86,400,000,000)
--   grain 'month'  period = year * 12 + month - 1 (UTC calendar month)
-- A period is summarised when this table has its row; its rollup rows are written in the
-- same transaction.
CREATE TABLE report_rollup_periods (
    facility_id TEXT NOT NULL,
    grain       TEXT NOT NULL CHECK (grain IN ('day', 'month')),
    period      BIGINT NOT NULL,
    built_at    BIGINT NOT NULL,
    PRIMARY KEY (facility_id, grain, period)
);
-- One row per (facility, part, period, key): the sums a report adds up.
--   sessions  period = 15-minute slot (Unix seconds / 900), key = kind; v1 sessions, v2 accepted
--   spending  period = 15-minute slot, key = ledger kind; v1 minor units paid by people
--   length    period = day, key = talk-time class; v1 connected ended calls, v2 talk seconds
--   reasons   period = day, key = kind, key2 = end reason; v1 ended sessions
--   numbers   period = month, key = number; v1 calls, v2 connected, v3 talk seconds, v4 charged
CREATE TABLE report_rollups (
    facility_id TEXT NOT NULL,
    part        TEXT NOT NULL,
    period      BIGINT NOT NULL,
    key         TEXT NOT NULL,
    key2        TEXT NOT NULL DEFAULT '',
    v1          BIGINT NOT NULL DEFAULT 0,
    v2          BIGINT NOT NULL DEFAULT 0,
    v3          BIGINT NOT NULL DEFAULT 0,
    v4          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (facility_id, part, period, key, key2)
);
-- The newest ledger transaction id the rollups of a facility have been checked against:
-- a transaction with a larger id dated in a summarised day (one written with a past date)
-- sends that day back to the raw rows until it is summarised again.
CREATE TABLE report_rollup_ledger (
    facility_id TEXT PRIMARY KEY,
    checked_id  BIGINT NOT NULL
);
