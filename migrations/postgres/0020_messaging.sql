-- Secure messaging between inmates and their approved contacts (docs/behaviour.md,
-- "Messages"). Times are Unix microseconds (UTC), as everywhere.

-- A facility's watch list: words and short phrases that flag a message for review (and
-- that keyword spotting on calls looks for). Stored lower-case and trimmed.
CREATE TABLE watch_words (
    id           TEXT PRIMARY KEY,
    facility_id  TEXT NOT NULL REFERENCES facilities(id),
    word         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    UNIQUE (facility_id, word)
);

-- A facility's messaging rules; a facility without a row has the defaults
-- (`messaging::Settings::default`).
-- review: 'all' (every message waits for staff), 'flagged' (only those with a watch word),
-- 'none' (nothing waits; watch words are still marked for investigators).
-- max_photo_bytes 0: the configured limit (`messaging.max_photo_bytes`).
CREATE TABLE message_settings (
    facility_id      TEXT PRIMARY KEY REFERENCES facilities(id),
    review           TEXT NOT NULL CHECK (review IN ('all', 'flagged', 'none')),
    max_chars        BIGINT NOT NULL CHECK (max_chars > 0),
    price_minor      BIGINT NOT NULL CHECK (price_minor >= 0),
    max_photo_bytes  BIGINT NOT NULL CHECK (max_photo_bytes >= 0),
    max_photos       BIGINT NOT NULL CHECK (max_photos >= 0),
    retention_days   BIGINT NOT NULL CHECK (retention_days > 0),
    updated_at       BIGINT NOT NULL,
    updated_by       TEXT NOT NULL
);

-- One message between an inmate and one of the inmate's contacts, either way.
-- direction: 'from_inmate' (written at a kiosk) or 'to_inmate' (written in the portal by a
-- family user bound to the contact; `sender` is then that user's id, else the inmate's).
-- status: 'held' (waiting for staff review), 'delivered', 'rejected' (with `reason`, which
-- the sender sees). `flagged`: the watch words found, one per line. A privileged message
-- (to or from an attorney) is never held, scanned or shown to staff.
-- The price charged (0: free) and the account that paid it, refunded when rejected.
CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    facility_id   TEXT NOT NULL REFERENCES facilities(id),
    inmate_id     TEXT NOT NULL REFERENCES inmates(id),
    contact_id    TEXT NOT NULL REFERENCES contacts(id),
    direction     TEXT NOT NULL CHECK (direction IN ('from_inmate', 'to_inmate')),
    sender        TEXT NOT NULL,
    body          TEXT NOT NULL,
    privileged    BIGINT NOT NULL CHECK (privileged IN (0, 1)),
    status        TEXT NOT NULL CHECK (status IN ('held', 'delivered', 'rejected')),
    flagged       TEXT NOT NULL DEFAULT '',
    reason        TEXT,
    reviewed_by   TEXT,
    reviewed_at   BIGINT,
    price_minor   BIGINT NOT NULL DEFAULT 0 CHECK (price_minor >= 0),
    account_id    TEXT,
    read_at       BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX messages_contact ON messages (contact_id, created_at);
CREATE INDEX messages_inmate ON messages (inmate_id, created_at);
CREATE INDEX messages_queue ON messages (facility_id, status, created_at);

-- Photos sent with messages: uploaded first (re-encoded, `message_id` NULL), then attached
-- when the message is sent. The file is `<data_dir>/messages/<sha256 of the re-encoded
-- file>`, shared by every row with the same content.
CREATE TABLE message_photos (
    id            TEXT PRIMARY KEY,
    facility_id   TEXT NOT NULL REFERENCES facilities(id),
    uploaded_by   TEXT NOT NULL,
    message_id    TEXT REFERENCES messages(id),
    sha256        TEXT NOT NULL,
    content_type  TEXT NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg')),
    bytes         BIGINT NOT NULL,
    width         BIGINT NOT NULL,
    height        BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX message_photos_message ON message_photos (message_id);
CREATE INDEX message_photos_sha256 ON message_photos (sha256);
