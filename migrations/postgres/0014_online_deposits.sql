-- Online deposits through a payment provider (issue 12, "deposits that never go missing").
-- An online deposit made through the provider is a `deposits` row of method 'online' that
-- stays 'pending' (counting toward the facility's daily limit) until the provider confirms
-- the payment; this table adds its lifecycle: submitted -> authorized -> posted, or
-- declined / held (with a reason) / voided; posted -> refunded. `deposits.status` follows:
-- submitted, authorized and held are 'pending'; posted and refunded 'posted' (the credit
-- stays in the ledger, the refund is its own reversing transaction); declined and voided
-- 'voided'. Times are Unix microseconds (UTC).
CREATE TABLE online_deposits (
    deposit_id             TEXT PRIMARY KEY REFERENCES deposits(id),
    -- What the family reads out on the phone: 'SP-' and two groups of four characters.
    confirmation           TEXT NOT NULL UNIQUE,
    state                  TEXT NOT NULL CHECK (state IN ('submitted', 'authorized', 'posted',
                               'declined', 'held', 'voided', 'refunded')),
    reason                 TEXT NOT NULL DEFAULT '',
    provider               TEXT NOT NULL,
    -- The provider's id of the payment, once it answered.
    payment_id             TEXT,
    card_last4             TEXT NOT NULL DEFAULT '',
    -- The family user who made it (NULL when staff or a token without user made it).
    made_by                TEXT,
    refund_transaction_id  BIGINT REFERENCES ledger_transactions(id),
    -- When the provider confirmed the refund of a refunded deposit (NULL: ask again).
    provider_refunded_at   BIGINT,
    updated_at             BIGINT NOT NULL,
    CHECK ((state = 'refunded') = (refund_transaction_id IS NOT NULL))
);
CREATE INDEX online_deposits_made_by ON online_deposits (made_by);
CREATE INDEX online_deposits_payment ON online_deposits (payment_id);
CREATE INDEX online_deposits_open ON online_deposits (state, updated_at);

-- Each change of an online deposit's state, with the time, the reason and what caused it
-- ('request', 'provider', 'webhook', 'reconcile', 'staff', 'family'). Append-only.
CREATE TABLE deposit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deposit_id  TEXT NOT NULL REFERENCES deposits(id),
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX deposit_events_deposit ON deposit_events (deposit_id, id);
CREATE TRIGGER deposit_events_no_update BEFORE UPDATE ON deposit_events
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('deposit events are append-only');
CREATE TRIGGER deposit_events_no_delete BEFORE DELETE ON deposit_events
    FOR EACH ROW EXECUTE FUNCTION sallyport_append_only('deposit events are append-only');

-- The built-in test payment provider's own books (`payments.provider = "test"`): its
-- payments and the webhook events it still has to deliver. A real provider keeps these on
-- its side; the test provider keeps them here so that they outlive a crash of the gateway,
-- as a real provider's do. Nothing else reads them.
CREATE TABLE testpay_payments (
    id           TEXT PRIMARY KEY,
    -- The gateway's deposit id, sent as the provider's idempotency key.
    reference    TEXT NOT NULL UNIQUE,
    amount_minor BIGINT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    -- A captured payment becomes `final_status`: at once, or (settle_later = 1) after
    -- processing until `settles_at`.
    final_status TEXT NOT NULL,
    settle_later BIGINT NOT NULL CHECK (settle_later IN (0, 1)),
    final_reason TEXT NOT NULL DEFAULT '',
    settles_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE TABLE testpay_events (
    id            TEXT PRIMARY KEY,
    payment_id    TEXT NOT NULL,
    body          TEXT NOT NULL,
    due_at        BIGINT NOT NULL,
    -- Delivery order among events due together (larger first when reversed).
    seq           BIGINT NOT NULL,
    delivered_at  BIGINT,
    attempts      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX testpay_events_due ON testpay_events (delivered_at, due_at);
