-- Issue 9: a CDR that explains its charge and times that explain it.
--
-- The tariff applied is written when the call is authorized, beside the columns 0001 made
-- for it (class, per_minute_minor, increment_secs, contact_id, never written until now):
-- the rate plan and rate deck it came from (both immutable, a new version gets a new id),
-- the deck prefix that classified the number, and the cost of one increment after the
-- one rounding rule. media_end_at is when the parties stopped hearing each other (a cut's
-- notice starting, a BYE); closed_at is when the record was written ended (after a crash:
-- the restart). Sessions from before this migration keep NULLs: what was applied to them
-- was never recorded, and the API shows it as unknown.
ALTER TABLE sessions ADD COLUMN rate_plan_id TEXT;
ALTER TABLE sessions ADD COLUMN rate_deck_id TEXT;
ALTER TABLE sessions ADD COLUMN rate_prefix TEXT;
ALTER TABLE sessions ADD COLUMN increment_cost_minor BIGINT;
ALTER TABLE sessions ADD COLUMN media_end_at BIGINT;
ALTER TABLE sessions ADD COLUMN closed_at BIGINT;
