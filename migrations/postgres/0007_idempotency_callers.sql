-- Idempotency keys belong to their caller (issue 9, items 5 and 11): the same key sent by
-- two callers names two requests, and neither ever gets the other's answer. A stored
-- answer is now found by (caller, key); `caller` is the authenticated principal as the
-- ledger is told it ('admin-token', 'user:<user id>', 'cli', 'demo').
--
-- Keys stored before this migration have no known caller: they keep caller '' and stay
-- honoured for an identical replay by anyone (a retry that straddles the upgrade must not
-- move money twice), and a different request under one of them is still a 409.
--
-- ledger_transactions.idempotency_key (UNIQUE, append-only, left as it is) holds from now
-- on '<caller> <key>' (neither part can contain a space), so two callers' keys never
-- collide there either; rows written before keep the bare key.
ALTER TABLE idempotency_keys ADD COLUMN caller TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ALTER COLUMN caller DROP DEFAULT;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (caller, key);
