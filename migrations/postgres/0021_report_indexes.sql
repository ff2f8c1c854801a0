-- Facility reports (src/reports): each report reads one facility over a time range, and
-- these indexes hold what the report reads, so a year of a large facility's data is read
-- from the index alone. Measured in bench/README.md ("Reports").
-- Calls and visits per day and hour: kind and whether accepted, by facility and time.
CREATE INDEX sessions_report_time ON sessions (facility_id, invite_at, kind, accepted_at);
-- Welfare: an inmate's last connected call or visit.
CREATE INDEX sessions_inmate_accepted ON sessions (inmate_id, accepted_at);
-- Spending by service and refunds at release: a facility's transactions by time.
CREATE INDEX ledger_transactions_facility_time ON ledger_transactions (facility_id, created_at, kind);
-- Revenue per service: a revenue account's entries over a range, with their amounts.
CREATE INDEX ledger_entries_account_time_amount ON ledger_entries (account_id, created_at, amount_minor);
-- Deposits by method and day.
CREATE INDEX deposits_report_day ON deposits (facility_id, local_day, status, method, amount_minor);
