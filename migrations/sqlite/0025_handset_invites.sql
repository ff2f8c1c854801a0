-- Which node took each handset INVITE (issue 13): one call session per INVITE in the
-- whole cluster. A proxy that gets no answer from a node within its failover timer
-- (Kamailio's fr_timer) sends the same INVITE to another node; the first node may still
-- read it later from its socket. An INVITE is known by its Call-ID, From tag and CSeq
-- number (RFC 3261 8.2.2.2; the proxy changes none of them, a handset's authenticated
-- retry has a higher CSeq): the node that opens the call session inserts this row in the
-- same transaction, and a node that finds the row already there opens nothing and
-- answers 482 (Loop Detected). Rows are forgotten after a day (no failover is that late).
-- Times are Unix microseconds (UTC), as everywhere.
CREATE TABLE handset_invites (
    call_id     TEXT NOT NULL,
    from_tag    TEXT NOT NULL,
    cseq        BIGINT NOT NULL,
    session_id  TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (call_id, from_tag, cseq)
);
CREATE INDEX handset_invites_at ON handset_invites (at);
