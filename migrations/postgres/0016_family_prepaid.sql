-- Family prepaid calling (issue 12): a family member's prepaid account pays for calls to
-- their verified numbers and for the visits they book.
--
-- Which account pays first at a facility: the family's prepaid account ('family_first',
-- the default: the family funded it for exactly these calls) or the inmate's debit account
-- ('inmate_first'). One payer pays for a whole call or visit; it is chosen at set-up.
ALTER TABLE facilities ADD COLUMN payer_order TEXT NOT NULL DEFAULT 'family_first'
    CHECK (payer_order IN ('family_first', 'inmate_first'));

-- One prepaid account per family user per facility (the revenue of a call goes to the
-- facility's books, so the money that pays for it sits at that facility).
CREATE UNIQUE INDEX accounts_family_owner ON accounts (owner_id, facility_id) WHERE kind = 'family';

-- A balance left untouched is never taken. Before it has been idle for 180 days its owner
-- is told it is still theirs and how to have it refunded: one notice per idle stretch
-- (`idle_since` is the account's last movement when the notice went out).
CREATE TABLE balance_notices (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    idle_since  BIGINT NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (account_id, idle_since)
);
