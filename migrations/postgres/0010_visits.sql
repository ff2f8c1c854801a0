-- Video visit scheduling (issue 11), PostgreSQL: the same model as migrations/sqlite.
-- Visiting rules and visit stations per facility, the
-- visits, and the occupancy rows that keep a booking honest under concurrent requests.
--
-- An inmate cannot be double-booked, a station cannot be overbooked and the weekly limit
-- cannot be passed, whichever node two racing requests reach: each booking claims rows
-- whose keys are unique, in the transaction that inserts the visit (INSERT ... ON
-- CONFLICT DO NOTHING: the claim that finds its key taken changes nothing and the booking
-- is refused). Time is counted in five-minute cells of Unix time (cell = seconds / 300):
--   visit_inmate_cells   one row per (inmate, cell): the inmate's time;
--   visit_station_cells  one row per (station, cell, place), place < the station's capacity;
--   visit_week_places    one row per (inmate, facility-local week, place), place < the limit.
-- A denied or cancelled visit deletes its rows in the transaction that changes its status,
-- so its places are free again at once. Times are Unix microseconds (UTC), as everywhere.

-- One row per facility that takes visits; windows and slot lengths as JSON
-- (src/visit/rules.rs is their one reader and writer).
CREATE TABLE visiting_rules (
    facility_id         TEXT PRIMARY KEY REFERENCES facilities(id),
    approval            TEXT NOT NULL CHECK (approval IN ('auto', 'staff')),
    windows             TEXT NOT NULL,
    slot_lengths        TEXT NOT NULL,
    start_step_minutes  BIGINT NOT NULL,
    min_notice_minutes  BIGINT NOT NULL,
    max_days_ahead      BIGINT NOT NULL,
    visits_per_week     BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

-- A kiosk (or a room of them) in a housing unit, hosting `capacity` visits at a time.
-- Stations are retired (active = 0), never deleted: visits keep naming them.
CREATE TABLE visit_stations (
    id            TEXT PRIMARY KEY,
    facility_id   TEXT NOT NULL REFERENCES facilities(id),
    name          TEXT NOT NULL,
    housing_unit  TEXT NOT NULL,
    capacity      BIGINT NOT NULL CHECK (capacity BETWEEN 1 AND 64),
    active        BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at    BIGINT NOT NULL,
    UNIQUE (facility_id, name)
);

-- Where an inmate lives: the stations of that unit are the ones their visits use.
ALTER TABLE inmates ADD COLUMN housing_unit TEXT;

CREATE TABLE visits (
    id              TEXT PRIMARY KEY,
    facility_id     TEXT NOT NULL REFERENCES facilities(id),
    inmate_id       TEXT NOT NULL REFERENCES inmates(id),
    contact_id      TEXT NOT NULL REFERENCES contacts(id),
    station_id      TEXT NOT NULL REFERENCES visit_stations(id),
    starts_at       BIGINT NOT NULL,
    ends_at         BIGINT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'cancelled', 'no_show')),
    -- an attorney (privileged contact): never recorded, never watched
    privileged      BIGINT NOT NULL DEFAULT 0 CHECK (privileged IN (0, 1)),
    requested_by    TEXT NOT NULL,
    requested_role  TEXT NOT NULL,
    decided_by      TEXT,
    decided_at      BIGINT,
    closed_by       TEXT,             -- who cancelled it or marked it a no-show
    closed_at       BIGINT,
    created_at      BIGINT NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX visits_facility_time ON visits (facility_id, starts_at);
CREATE INDEX visits_inmate_time ON visits (inmate_id, starts_at);
CREATE INDEX visits_contact_time ON visits (contact_id, starts_at);
CREATE INDEX visits_station_time ON visits (station_id, starts_at);

CREATE TABLE visit_inmate_cells (
    inmate_id  TEXT NOT NULL,
    cell       BIGINT NOT NULL,
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    PRIMARY KEY (inmate_id, cell)
);
CREATE INDEX visit_inmate_cells_visit ON visit_inmate_cells (visit_id);

CREATE TABLE visit_station_cells (
    station_id  TEXT NOT NULL,
    cell        BIGINT NOT NULL,
    place       BIGINT NOT NULL CHECK (place >= 0),
    visit_id    TEXT NOT NULL REFERENCES visits(id),
    PRIMARY KEY (station_id, cell, place),
    UNIQUE (visit_id, cell)
);

CREATE TABLE visit_week_places (
    inmate_id  TEXT NOT NULL,
    week       TEXT NOT NULL,           -- the facility-local Monday, YYYY-MM-DD
    place      BIGINT NOT NULL CHECK (place >= 0),
    visit_id   TEXT NOT NULL UNIQUE REFERENCES visits(id),
    PRIMARY KEY (inmate_id, week, place)
);

-- Who a family user is: the contacts (person and number, per inmate) they visit as.
-- A family token sees and books only the visits of these contacts.
CREATE TABLE family_contacts (
    user_id     TEXT NOT NULL REFERENCES users(id),
    contact_id  TEXT NOT NULL REFERENCES contacts(id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, contact_id)
);
CREATE INDEX family_contacts_contact ON family_contacts (contact_id);

-- The station a kiosk user (a device) is: its token reads that station's day.
CREATE TABLE kiosk_stations (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    station_id  TEXT NOT NULL REFERENCES visit_stations(id),
    created_at  BIGINT NOT NULL
);
