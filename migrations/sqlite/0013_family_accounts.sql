-- Family accounts (issue 12, first slice): a family member registers with an email address
-- and a password. The account is a `users` row of role 'family' (its argon2id hash, failure
-- count and lock live there, as for investigators; its sessions are `api_tokens` rows), and
-- this table adds what only a family account has: the address, when it was verified and
-- when the account was closed. A closed account keeps its row (later slices' deposits and
-- statements name its user id) but loses its password, its sessions and its address, which
-- a new registration may then take. Times are Unix microseconds (UTC), as everywhere.
CREATE TABLE family_accounts (
    user_id            TEXT PRIMARY KEY REFERENCES users(id),
    email              TEXT NOT NULL,
    email_verified_at  BIGINT,
    created_at         BIGINT NOT NULL,
    closed_at          BIGINT
);
-- One open account per address, across every node.
CREATE UNIQUE INDEX family_accounts_open_email ON family_accounts (email) WHERE closed_at IS NULL;

-- The links the gateway emails: verify an address ('verify', 'email' for a change of
-- address, which carries the new address) or reset a password ('reset'). Only the SHA-256
-- of the link's secret is stored; a link works once (`used_at`) and until `expires_at`.
-- A verification link sent for a second registration of a still-unverified address carries
-- that registration's password hash, set when the link is used: whoever opens the link in
-- the mailbox gets the password they chose, never one an earlier registrant (who may not
-- own the address) chose.
CREATE TABLE family_links (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    purpose     TEXT NOT NULL CHECK (purpose IN ('verify', 'reset', 'email')),
    email       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    password_hash TEXT
);
CREATE INDEX family_links_user ON family_links (user_id);

-- Attempts counted for rate limits, shared by every node: `scope` 'address' (the peer
-- address of a login, registration, reset or link) or 'account' (an email sent to an
-- address; `subject` is then the SHA-256 of the address, never the address itself).
-- Rows older than the window are deleted as new ones come.
CREATE TABLE family_rate_events (
    scope    TEXT NOT NULL CHECK (scope IN ('address', 'account')),
    subject  TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX family_rate_events_subject ON family_rate_events (scope, subject, at);
