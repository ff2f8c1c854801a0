-- Refunds of a family's prepaid balance (issue 12): on request the whole balance goes back
-- to the cards that paid it, newest deposit first, each part at most what is left of that
-- deposit. What no card deposit covers (money staff entered) is owed by the facility
-- (its `refunds_payable` account) and paid outside the gateway, as at an inmate's release.
-- One row per part; the parts of one request share `request_id`. A card part is confirmed
-- when the payment provider took it (`confirmed_at`; NULL: the reconciliation asks again).
CREATE TABLE prepaid_refunds (
    id              TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    deposit_id      TEXT REFERENCES deposits(id),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    transaction_id  BIGINT NOT NULL REFERENCES ledger_transactions(id),
    requested_by    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    confirmed_at    BIGINT
);
CREATE INDEX prepaid_refunds_deposit ON prepaid_refunds (deposit_id);
CREATE INDEX prepaid_refunds_request ON prepaid_refunds (request_id);
CREATE INDEX prepaid_refunds_unconfirmed ON prepaid_refunds (confirmed_at, created_at);

-- The built-in test provider's partial refunds of a payment (a real provider keeps these
-- on its side): one per part, keyed by the gateway's part id, never more than the payment.
CREATE TABLE testpay_refunds (
    reference     TEXT PRIMARY KEY,
    payment_id    TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor > 0),
    created_at    BIGINT NOT NULL
);
CREATE INDEX testpay_refunds_payment ON testpay_refunds (payment_id);
