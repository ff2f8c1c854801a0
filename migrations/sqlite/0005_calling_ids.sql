-- Calling IDs and the PIN-guessing defence (issue 9). An inmate keys a facility-issued
-- calling ID, then the PIN: the pair names the inmate, a PIN alone never does.

-- Digits, unique per facility. Inmates booked before this migration get a random one at
-- the next start (`Store::assign_calling_ids`: SQL has no portable random unique digits).
ALTER TABLE inmates ADD COLUMN calling_id TEXT;
CREATE UNIQUE INDEX inmates_calling_id ON inmates (facility_id, calling_id);
-- HMAC of (facility, calling ID, PIN). A PIN set before this migration stays in
-- pin_lookup (HMAC of facility and PIN) until its first right entry replaces it here;
-- the UNIQUE (facility_id, pin_lookup) of 0001 no longer matters (new PINs leave it NULL).
ALTER TABLE inmates ADD COLUMN pin_hash TEXT;
-- Failures are counted from pin_attempts (with decay), not in a column: the old counters go.
-- pin_count_from: failures before it are forgotten (the end of the last lock, or a clear);
-- pin_lock_level: locks in a row (each one twice as long as the last).
ALTER TABLE inmates DROP COLUMN failed_pins;
ALTER TABLE inmates ADD COLUMN pin_count_from BIGINT;
ALTER TABLE inmates ADD COLUMN pin_lock_level BIGINT NOT NULL DEFAULT 0;
ALTER TABLE handsets DROP COLUMN failed_pins;
ALTER TABLE handsets ADD COLUMN pin_count_from BIGINT;
ALTER TABLE handsets ADD COLUMN pin_lock_level BIGINT NOT NULL DEFAULT 0;

-- A line: the source address calls come from, counted and locked like a handset (on a
-- trusted network the From user proves nothing).
CREATE TABLE pin_lines (
    facility_id   TEXT NOT NULL REFERENCES facilities(id),
    address       TEXT NOT NULL,
    locked_until  BIGINT,
    count_from    BIGINT,
    lock_level    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (facility_id, address)
);

-- The last facility-wide guessing alert (at most one per facility per alert window).
CREATE TABLE pin_alerts (
    facility_id  TEXT PRIMARY KEY REFERENCES facilities(id),
    raised_at    BIGINT NOT NULL
);

-- Each attempt: pending (counted as a failure until decided), valid, wrong, or locked
-- (refused unchecked). remote_addr is the line; target groups failures by ID for the alert
-- (the inmate id, or a keyed digest of an ID that names nobody: never the digits).
ALTER TABLE pin_attempts ADD COLUMN outcome TEXT NOT NULL DEFAULT 'wrong'
    CHECK (outcome IN ('pending', 'valid', 'wrong', 'locked'));
-- Before: a success, a wrong PIN (no inmate), or a refusal while locked (inmate, no success).
UPDATE pin_attempts SET outcome = CASE
    WHEN success = 1 THEN 'valid' WHEN inmate_id IS NULL THEN 'wrong' ELSE 'locked' END;
ALTER TABLE pin_attempts ADD COLUMN target TEXT;
CREATE INDEX pin_attempts_inmate ON pin_attempts (inmate_id, at);
CREATE INDEX pin_attempts_handset ON pin_attempts (handset_id, at);
CREATE INDEX pin_attempts_line ON pin_attempts (facility_id, remote_addr, at);
CREATE INDEX pin_attempts_facility ON pin_attempts (facility_id, at);
