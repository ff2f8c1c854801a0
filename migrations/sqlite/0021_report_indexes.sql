-- Facility reports (src/reports): each report reads one facility over a time range, and
-- these indexes hold what the report reads, so a year of a large facility's data is read
-- from the index alone. Measured in bench/README.md ("Reports").
-- Calls and visits per day and hour read sessions_facility_time (facility, time) and the
-- rows: a wider index on the same two leading columns would be chosen by call searches too,
-- and sort their results in a temporary tree (PostgreSQL's planner does not, and has it).
-- Welfare: an inmate's last connected call or visit.
CREATE INDEX sessions_inmate_accepted ON sessions (inmate_id, accepted_at) WHERE accepted_at IS NOT NULL;
-- Spending by service and refunds at release: a facility's transactions by time, and
-- each one's entries with their amounts and whether they are a person's (one index
-- search per transaction instead of an index search and a row).
CREATE INDEX ledger_transactions_facility_time ON ledger_transactions (facility_id, created_at, kind);
CREATE INDEX ledger_entries_txn_amount ON ledger_entries (transaction_id, balance_after_minor, amount_minor);
-- Top numbers read sessions_facility_time and the rows on SQLite: an index leading with
-- (facility_id, kind) would be chosen by every call search and sort its results in a
-- temporary tree (PostgreSQL's planner does not, and has it).
-- Revenue per service: a revenue account's entries over a range, with their amounts.
CREATE INDEX ledger_entries_account_time_amount ON ledger_entries (account_id, created_at, amount_minor);
-- Deposits by method and day.
CREATE INDEX deposits_report_day ON deposits (facility_id, local_day, status, method, amount_minor);
