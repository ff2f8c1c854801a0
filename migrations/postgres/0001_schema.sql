-- sallyport schema (PostgreSQL dialect; migrations/sqlite holds the same model).
-- Conventions: ids TEXT; amounts BIGINT minor units (1/10,000 of the currency, see
-- src/money.rs); times BIGINT Unix microseconds UTC; flags BIGINT 0/1 (sqlx Any cannot read SQLite BOOLEAN);
-- sums are CAST(SUM(x) AS BIGINT) (PostgreSQL sums BIGINT to NUMERIC, which Any cannot read).

CREATE FUNCTION sallyport_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END;
$$;

-- Rating --------------------------------------------------------------------------------
CREATE TABLE rate_decks (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE rate_deck_entries (
    deck_id     TEXT NOT NULL REFERENCES rate_decks(id) ON DELETE CASCADE,
    prefix      TEXT NOT NULL,
    class       TEXT NOT NULL CHECK (class IN ('local', 'domestic', 'international')),
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (deck_id, prefix)
);

CREATE TABLE rate_plans (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    max_call_secs    BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);

-- One row per (class, service): the per-minute rate and the billing increment.
CREATE TABLE rate_plan_tariffs (
    plan_id           TEXT NOT NULL REFERENCES rate_plans(id) ON DELETE CASCADE,
    class             TEXT NOT NULL CHECK (class IN ('local', 'domestic', 'international')),
    service           TEXT NOT NULL CHECK (service IN ('audio', 'video')),
    per_minute_minor  BIGINT NOT NULL CHECK (per_minute_minor >= 0),
    increment_secs    BIGINT NOT NULL CHECK (increment_secs > 0),
    PRIMARY KEY (plan_id, class, service)
);

-- Facilities ----------------------------------------------------------------------------
CREATE TABLE facilities (
    id                       TEXT PRIMARY KEY,          -- the facility code, e.g. 'DEMO'
    name                     TEXT NOT NULL,
    time_zone                TEXT NOT NULL,             -- IANA name, e.g. 'America/Chicago'
    country_code             TEXT NOT NULL DEFAULT '1', -- default for E.164 normalization
    cap_category             TEXT NOT NULL DEFAULT 'prison', -- FCC 24-75 cap tier
    calling_hours_start      TEXT NOT NULL DEFAULT '07:00',  -- local time HH:MM
    calling_hours_end        TEXT NOT NULL DEFAULT '22:00',
    deposit_max_minor        BIGINT NOT NULL,           -- largest single deposit
    deposit_daily_max_minor  BIGINT NOT NULL,           -- per inmate account per local day
    daily_call_limit         BIGINT NOT NULL DEFAULT 0, -- calls per inmate per day, 0 = none
    rate_plan_id             TEXT REFERENCES rate_plans(id),
    rate_deck_id             TEXT REFERENCES rate_decks(id),
    recording_retention_days BIGINT NOT NULL DEFAULT 365,
    created_at               BIGINT NOT NULL
);

-- Inmates and their devices ---------------------------------------------------------------
CREATE TABLE inmates (
    id              TEXT PRIMARY KEY,
    facility_id     TEXT NOT NULL REFERENCES facilities(id),
    booking_number  TEXT NOT NULL,
    first_name      TEXT NOT NULL,
    last_name       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'released')),
    -- keyed hash (HMAC-SHA256 with the configured pepper) of facility and PIN, for lookup;
    -- the PIN itself is never stored
    pin_lookup      TEXT,
    failed_pins     BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    account_id      TEXT NOT NULL,
    booked_at       BIGINT NOT NULL,
    released_at     BIGINT,
    UNIQUE (facility_id, booking_number),
    UNIQUE (facility_id, pin_lookup)
);

CREATE TABLE handsets (
    id            TEXT PRIMARY KEY,
    facility_id   TEXT NOT NULL REFERENCES facilities(id),
    name          TEXT NOT NULL,
    location      TEXT NOT NULL DEFAULT '',
    sip_username  TEXT UNIQUE,      -- per-device digest credentials
    digest_ha1    TEXT,             -- MD5(username:realm:password), as RFC 2617 stores it
    failed_pins   BIGINT NOT NULL DEFAULT 0,
    locked_until  BIGINT,
    created_at    BIGINT NOT NULL
);

-- Handsets from these networks are admitted without digest authentication.
CREATE TABLE trusted_networks (
    id           TEXT PRIMARY KEY,
    facility_id  TEXT NOT NULL REFERENCES facilities(id),
    cidr         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL
);

CREATE TABLE pin_attempts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id  TEXT NOT NULL,
    handset_id   TEXT,
    inmate_id    TEXT,
    success      BIGINT NOT NULL CHECK (success IN (0, 1)),
    remote_addr  TEXT,
    at           BIGINT NOT NULL
);

CREATE TABLE contacts (
    id             TEXT PRIMARY KEY,
    inmate_id      TEXT NOT NULL REFERENCES inmates(id),
    number_e164    TEXT NOT NULL,
    name           TEXT NOT NULL,
    relationship   TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    privileged     BIGINT NOT NULL DEFAULT 0 CHECK (privileged IN (0, 1)),  -- attorney: never recorded or monitored
    video_allowed  BIGINT NOT NULL DEFAULT 0 CHECK (video_allowed IN (0, 1)),
    decided_by     TEXT,
    decided_at     BIGINT,
    created_at     BIGINT NOT NULL,
    UNIQUE (inmate_id, number_e164)
);

-- facility_id NULL = blocked for every facility.
CREATE TABLE blocked_numbers (
    id           TEXT PRIMARY KEY,
    facility_id  TEXT REFERENCES facilities(id),
    number_e164  TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX blocked_numbers_scope ON blocked_numbers (COALESCE(facility_id, ''), number_e164);

-- People who use the API --------------------------------------------------------------------
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'investigator', 'family', 'kiosk')),
    password_hash  TEXT,
    created_at     BIGINT NOT NULL
);

CREATE TABLE user_facilities (
    user_id      TEXT NOT NULL REFERENCES users(id),
    facility_id  TEXT NOT NULL REFERENCES facilities(id),
    PRIMARY KEY (user_id, facility_id)
);

CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,   -- SHA-256 of the bearer token
    user_id     TEXT NOT NULL REFERENCES users(id),
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Money -------------------------------------------------------------------------------------
-- kind: inmate (debit account, opened at booking), family (prepaid), system (deposits
-- clearing, call/visit revenue, commissary, refunds). System accounts are the other side of
-- every movement; their balance is derived from their entries, never stored, so they are
-- not a contended row.
CREATE TABLE accounts (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('inmate', 'family', 'system')),
    facility_id    TEXT REFERENCES facilities(id),
    owner_id       TEXT,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    balance_minor  BIGINT NOT NULL DEFAULT 0,
    opened_at      BIGINT NOT NULL,
    closed_at      BIGINT,
    CHECK (kind = 'system' OR balance_minor >= 0),
    CHECK (kind <> 'system' OR balance_minor = 0),          -- system balances are derived
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);

CREATE TABLE ledger_transactions (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    session_id       TEXT,
    increment        BIGINT,
    facility_id      TEXT,
    memo             TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    UNIQUE (session_id, increment)
);

CREATE TABLE ledger_entries (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id       BIGINT NOT NULL REFERENCES ledger_transactions(id),
    account_id           TEXT NOT NULL REFERENCES accounts(id),
    amount_minor         BIGINT NOT NULL,
    balance_after_minor  BIGINT,          -- NULL for system accounts
    created_at           BIGINT NOT NULL,
    CHECK (balance_after_minor IS NULL OR balance_after_minor >= 0)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_txn ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account_time ON ledger_entries (account_id, created_at); -- statements

-- The ledger only appends.
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('ledger entries are append-only');
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('ledger entries are append-only');
CREATE TRIGGER ledger_transactions_no_update BEFORE UPDATE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('ledger transactions are append-only');
CREATE TRIGGER ledger_transactions_no_delete BEFORE DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('ledger transactions are append-only');

CREATE TABLE deposits (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    facility_id      TEXT NOT NULL REFERENCES facilities(id),
    method           TEXT NOT NULL CHECK (method IN ('online', 'kiosk', 'money_order')),
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    status           TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided')),
    depositor        TEXT NOT NULL DEFAULT '',
    reference        TEXT NOT NULL DEFAULT '',
    transaction_id   BIGINT REFERENCES ledger_transactions(id),
    created_at       BIGINT NOT NULL,
    local_day        TEXT NOT NULL,   -- facility-local date the deposit counts against
    decided_by       TEXT,
    decided_at       BIGINT,
    CHECK ((status = 'posted') = (transaction_id IS NOT NULL))
);
CREATE INDEX deposits_account_day ON deposits (account_id, local_day);

-- A replayed money-moving request returns the first answer; a different request under the
-- same key is refused.
CREATE TABLE idempotency_keys (
    key              TEXT PRIMARY KEY,
    scope            TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    response_status  BIGINT NOT NULL,
    response_body    TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);

-- Sessions (CDRs): calls now, video visits later ---------------------------------------------
CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    kind               TEXT NOT NULL CHECK (kind IN ('call', 'visit')),
    facility_id        TEXT NOT NULL REFERENCES facilities(id),
    inmate_id          TEXT REFERENCES inmates(id),
    handset_id         TEXT,
    contact_id         TEXT,
    account_id         TEXT,
    dialed             TEXT NOT NULL DEFAULT '',
    number_e164        TEXT,
    class              TEXT,
    service            TEXT NOT NULL DEFAULT 'audio',
    per_minute_minor   BIGINT,
    increment_secs     BIGINT,
    state              TEXT NOT NULL CHECK (state IN ('active', 'ended')),
    end_reason         TEXT,
    privileged         BIGINT NOT NULL DEFAULT 0 CHECK (privileged IN (0, 1)),
    recorded           BIGINT NOT NULL DEFAULT 0 CHECK (recorded IN (0, 1)),
    recording_id       TEXT,
    node_id            TEXT NOT NULL DEFAULT '',
    sip_call_id        TEXT,
    invite_at          BIGINT NOT NULL,
    answer_at          BIGINT,
    accepted_at        BIGINT,
    end_at             BIGINT,
    billed_increments  BIGINT NOT NULL DEFAULT 0,
    amount_minor       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_facility_time ON sessions (facility_id, invite_at);
CREATE INDEX sessions_inmate_time ON sessions (inmate_id, invite_at);
CREATE INDEX sessions_state ON sessions (state);
-- One live call per inmate, across every node: claiming a second fails on this index.
CREATE UNIQUE INDEX sessions_one_live_call ON sessions (inmate_id) WHERE state = 'active' AND kind = 'call';

-- Audit ---------------------------------------------------------------------------------------
CREATE TABLE audit_log (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL DEFAULT '',
    facility_id  TEXT,
    detail       TEXT NOT NULL DEFAULT '{}',
    remote_addr  TEXT,
    prev_hash    TEXT NOT NULL DEFAULT '',
    hash         TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('the audit log is append-only');
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('the audit log is append-only');
