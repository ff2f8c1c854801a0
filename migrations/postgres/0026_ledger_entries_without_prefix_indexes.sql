-- Two indexes of ledger_entries were the leading columns of wider ones that 0021 added for
-- the reports: (transaction_id) of (transaction_id, balance_after_minor, amount_minor), and
-- (account_id, created_at) of (account_id, created_at, amount_minor). Every query that used
-- a narrow one uses the wide one as well, and each debit's two entries wrote both: a call's
-- debits now update three indexes of the table instead of five. Only indexes go; every older
-- node's statements run unchanged.
DROP INDEX IF EXISTS ledger_entries_txn;
DROP INDEX IF EXISTS ledger_entries_account_time;
