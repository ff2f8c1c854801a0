-- Finding and linking (issue 12): a family account asks to become a contact of an inmate
-- for one of its own numbers. The request is its own row until the family proves the
-- number is theirs: the gateway calls the number through the trunk and the person who
-- answers keys the code the portal shows (docs/behaviour.md, "Linking a family number").
-- Only then does the request create the `contacts` row (pending staff approval, the
-- existing flow) and bind it to the account (`family_contacts`), in one transaction.
--
-- status: 'verifying' (no number proved yet), 'failed' (too many wrong codes: a new
-- request is needed), 'submitted' (proved; `contact_id` names the contact, whose status
-- is then what the family sees), 'withdrawn' (by the family).
-- The code is stored only as an HMAC under the gateway's key, with its expiry; it is
-- cleared when used, replaced by each new call. Times are Unix microseconds (UTC).
CREATE TABLE family_link_requests (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users(id),
    inmate_id        TEXT NOT NULL REFERENCES inmates(id),
    number_e164      TEXT NOT NULL,
    name             TEXT NOT NULL,
    relationship     TEXT NOT NULL DEFAULT '',
    video            BIGINT NOT NULL DEFAULT 0 CHECK (video IN (0, 1)),
    status           TEXT NOT NULL
        CHECK (status IN ('verifying', 'failed', 'submitted', 'withdrawn')),
    code_hash        TEXT,
    code_expires_at  BIGINT,
    calls            BIGINT NOT NULL DEFAULT 0,
    wrong_codes      BIGINT NOT NULL DEFAULT 0,
    verified_at      BIGINT,
    contact_id       TEXT REFERENCES contacts(id),
    created_at       BIGINT NOT NULL,
    closed_at        BIGINT
);
CREATE INDEX family_link_requests_user ON family_link_requests (user_id, created_at);
CREATE INDEX family_link_requests_number ON family_link_requests (number_e164);

-- Why staff denied a contact, when they said (shown to the family that asked).
ALTER TABLE contacts ADD COLUMN decision_reason TEXT;
