-- Investigators' call search (GET /api/v1/calls, issue 4) by number and across facilities:
-- the dialed number and its E.164 form each with time, for the newest matches first, and
-- time alone for a global admin's newest calls. Measured by benches/search.rs.
CREATE INDEX sessions_number_time ON sessions (number_e164, invite_at);
CREATE INDEX sessions_dialed_time ON sessions (dialed, invite_at);
CREATE INDEX sessions_time ON sessions (invite_at);
