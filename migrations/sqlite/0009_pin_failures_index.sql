-- The PIN lockout counts, for every entry, the failures of its inmate, handset and line
-- within the day (`store::pin_attempts`). Almost every attempt is valid: counting through
-- the indexes of all attempts read every entry of the day on a busy line (all handsets
-- behind one address: 1 ms per entry after 2,000 entries, growing all day). These hold
-- the failures only (a `pending` row of an earlier version counts as one once stale).
CREATE INDEX pin_attempts_line_failed ON pin_attempts (facility_id, remote_addr, at)
    WHERE outcome IN ('wrong', 'pending');
CREATE INDEX pin_attempts_inmate_failed ON pin_attempts (inmate_id, at)
    WHERE outcome IN ('wrong', 'pending');
CREATE INDEX pin_attempts_handset_failed ON pin_attempts (handset_id, at)
    WHERE outcome IN ('wrong', 'pending');
