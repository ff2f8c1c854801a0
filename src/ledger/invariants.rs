//! The ledger's invariants, checked over one snapshot of the whole database: what the
//! tests assert after every operation and what an operator can run (`check_invariants`).

use super::error::LedgerError;
use crate::db::Conn;
use crate::money::Money;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// The result of a check; healthy when `violations` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantReport {
    pub transactions: i64,
    pub entries: i64,
    pub accounts: i64,
    /// The sum of every entry; zero in a healthy ledger.
    pub ledger_total: Money,
    pub violations: Vec<Violation>,
}

impl InvariantReport {
    pub fn is_healthy(&self) -> bool {
        self.violations.is_empty()
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// A transaction's entries do not sum to zero.
    UnbalancedTransaction { transaction_id: i64, sum: Money },
    /// A transaction with fewer than two entries.
    IncompleteTransaction { transaction_id: i64, entries: i64 },
    /// All entries together do not sum to zero.
    LedgerNotZero { sum: Money },
    /// A stored balance differs from the sum of the account's entries.
    BalanceMismatch {
        account_id: String,
        stored: Money,
        entries: Money,
    },
    /// A stored balance below zero.
    NegativeBalance { account_id: String, balance: Money },
    /// An inmate/family account's last entry does not show its stored balance, or a
    /// system account stores a balance.
    BalanceAfterMismatch {
        account_id: String,
        stored: Money,
        last_balance_after: Option<Money>,
    },
    /// A deposit whose status and ledger transaction disagree (posted ⇔ has a transaction).
    DepositMismatch { deposit_id: String },
}

const UNBALANCED: &str =
    "SELECT transaction_id, CAST(SUM(amount_minor) AS BIGINT) AS s FROM ledger_entries \
     GROUP BY transaction_id HAVING SUM(amount_minor) <> 0";
const INCOMPLETE: &str = "SELECT t.id, COUNT(e.id) AS n FROM ledger_transactions t \
     LEFT JOIN ledger_entries e ON e.transaction_id = t.id GROUP BY t.id HAVING COUNT(e.id) < 2";
const MISMATCH: &str =
    "SELECT a.id, a.balance_minor, CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) AS s \
     FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id WHERE a.kind <> 'system' \
     GROUP BY a.id, a.balance_minor HAVING a.balance_minor <> COALESCE(SUM(e.amount_minor), 0)";
const NEGATIVE: &str = "SELECT id, balance_minor FROM accounts WHERE balance_minor < 0";
const LAST_ENTRY: &str = "SELECT a.id, a.balance_minor, e.balance_after_minor FROM accounts a \
     JOIN ledger_entries e ON e.id = (SELECT MAX(id) FROM ledger_entries WHERE account_id = a.id) \
     WHERE (a.kind <> 'system' AND (e.balance_after_minor IS NULL OR e.balance_after_minor <> a.balance_minor)) \
     OR (a.kind = 'system' AND (a.balance_minor <> 0 OR e.balance_after_minor IS NOT NULL))";
const DEPOSITS: &str =
    "SELECT id FROM deposits WHERE (status = 'posted' AND transaction_id IS NULL) \
     OR (status <> 'posted' AND transaction_id IS NOT NULL)";

async fn count(conn: &mut Conn, table: &str) -> Result<i64, LedgerError> {
    let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get("n")?)
}

async fn total(conn: &mut Conn) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS s FROM ledger_entries",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("s")?)
}

/// Runs every check (the caller provides one read snapshot).
pub(crate) async fn check(conn: &mut Conn) -> Result<InvariantReport, LedgerError> {
    let mut v = Vec::new();
    for r in sqlx::query(UNBALANCED).fetch_all(&mut *conn).await? {
        let sum = Money::from_minor(r.try_get("s")?);
        v.push(Violation::UnbalancedTransaction {
            transaction_id: r.try_get("transaction_id")?,
            sum,
        });
    }
    for r in sqlx::query(INCOMPLETE).fetch_all(&mut *conn).await? {
        v.push(Violation::IncompleteTransaction {
            transaction_id: r.try_get("id")?,
            entries: r.try_get("n")?,
        });
    }
    let sum = total(conn).await?;
    if sum != 0 {
        v.push(Violation::LedgerNotZero {
            sum: Money::from_minor(sum),
        });
    }
    balances(conn, &mut v).await?;
    for r in sqlx::query(DEPOSITS).fetch_all(&mut *conn).await? {
        v.push(Violation::DepositMismatch {
            deposit_id: r.try_get("id")?,
        });
    }
    Ok(InvariantReport {
        transactions: count(conn, "ledger_transactions").await?,
        entries: count(conn, "ledger_entries").await?,
        accounts: count(conn, "accounts").await?,
        ledger_total: Money::from_minor(sum),
        violations: v,
    })
}

async fn balances(conn: &mut Conn, v: &mut Vec<Violation>) -> Result<(), LedgerError> {
    for r in sqlx::query(MISMATCH).fetch_all(&mut *conn).await? {
        v.push(Violation::BalanceMismatch {
            account_id: r.try_get("id")?,
            stored: Money::from_minor(r.try_get("balance_minor")?),
            entries: Money::from_minor(r.try_get("s")?),
        });
    }
    for r in sqlx::query(NEGATIVE).fetch_all(&mut *conn).await? {
        let balance = Money::from_minor(r.try_get("balance_minor")?);
        v.push(Violation::NegativeBalance {
            account_id: r.try_get("id")?,
            balance,
        });
    }
    for r in sqlx::query(LAST_ENTRY).fetch_all(&mut *conn).await? {
        let last: Option<i64> = r.try_get("balance_after_minor")?;
        v.push(Violation::BalanceAfterMismatch {
            account_id: r.try_get("id")?,
            stored: Money::from_minor(r.try_get("balance_minor")?),
            last_balance_after: last.map(Money::from_minor),
        });
    }
    Ok(())
}
