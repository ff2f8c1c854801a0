//! Accounts: opening them, the per-facility system accounts, reading them, and locking an
//! account row for the length of a write transaction.

use super::error::LedgerError;
use super::types::{Account, AccountKind, AccountStatus};
use crate::db::Conn;
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// The book-keeping accounts every facility has, one of each. Their ids are
/// `sys:{facility}:{name}`; their balances are the sums of their entries.
///
/// Sign convention: entries are signed so that every transaction sums to zero, and a
/// positive inmate/family balance is money held for that person. So `deposits_clearing`
/// goes negative as money comes in from outside; revenue and commissary accounts grow
/// positive; `refunds` goes negative by the credits granted; `refunds_payable` grows by
/// what released inmates are owed (paid out by check outside the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemAccount {
    /// Counterpart of every deposit: money entering from card processors, kiosks, mail.
    DepositsClearing,
    /// Credited by audio call increments.
    CallRevenue,
    /// Credited by video visit increments.
    VisitRevenue,
    /// Credited by commissary purchases.
    Commissary,
    /// Source of refunds and credits (dropped calls, commissary returns).
    Refunds,
    /// Balances of released inmates, owed back to them.
    RefundsPayable,
    /// Credited by the price of messages.
    MessageRevenue,
}

impl SystemAccount {
    pub const ALL: [SystemAccount; 7] = [
        SystemAccount::DepositsClearing,
        SystemAccount::CallRevenue,
        SystemAccount::VisitRevenue,
        SystemAccount::Commissary,
        SystemAccount::Refunds,
        SystemAccount::RefundsPayable,
        SystemAccount::MessageRevenue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SystemAccount::DepositsClearing => "deposits_clearing",
            SystemAccount::CallRevenue => "call_revenue",
            SystemAccount::VisitRevenue => "visit_revenue",
            SystemAccount::Commissary => "commissary",
            SystemAccount::Refunds => "refunds",
            SystemAccount::RefundsPayable => "refunds_payable",
            SystemAccount::MessageRevenue => "message_revenue",
        }
    }

    /// The account id of this system account at `facility_id`.
    pub fn id(self, facility_id: &str) -> String {
        format!("sys:{facility_id}:{}", self.name())
    }
}

/// Inserts a new open account with a zero balance and returns its id (a UUIDv7).
pub(crate) async fn open_in(
    conn: &mut Conn,
    kind: AccountKind,
    facility_id: Option<&str>,
    owner_id: Option<&str>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<String, LedgerError> {
    let id = uuid::Uuid::now_v7().to_string();
    if kind == AccountKind::System {
        return Err(LedgerError::WrongAccountKind {
            id,
            kind,
            action: "open",
        });
    }
    if kind == AccountKind::Inmate && facility_id.is_none() {
        return Err(LedgerError::NoFacility { id });
    }
    insert(conn, &id, kind, facility_id, owner_id, name, to_micros(now)).await?;
    tracing::info!(account_id = %id, kind = %kind, "ledger: account opened");
    Ok(id)
}

async fn insert(
    conn: &mut Conn,
    id: &str,
    kind: AccountKind,
    facility_id: Option<&str>,
    owner_id: Option<&str>,
    name: &str,
    now: i64,
) -> Result<bool, LedgerError> {
    let done = sqlx::query(
        "INSERT INTO accounts (id, kind, facility_id, owner_id, name, status, balance_minor, opened_at) \
         VALUES ($1, $2, $3, $4, $5, 'open', 0, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(facility_id)
    .bind(owner_id)
    .bind(name)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Creates the facility's missing system accounts (idempotent).
pub(crate) async fn ensure_system(
    conn: &mut Conn,
    facility_id: &str,
    now: i64,
) -> Result<(), LedgerError> {
    let exists = sqlx::query("SELECT id FROM facilities WHERE id = $1")
        .bind(facility_id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Err(LedgerError::FacilityNotFound {
            id: facility_id.to_string(),
        });
    }
    for sys in SystemAccount::ALL {
        let id = sys.id(facility_id);
        if insert(
            conn,
            &id,
            AccountKind::System,
            Some(facility_id),
            None,
            sys.name(),
            now,
        )
        .await?
        {
            tracing::info!(account_id = %id, "ledger: system account opened");
        }
    }
    Ok(())
}

/// The prepaid account of family user `owner_id` at `facility_id`, opened on first use
/// (one per user and facility: a unique index, so two nodes opening it at once end with
/// one). A closed account stays closed: a closed family account is never reopened here.
pub(crate) async fn family_in(
    conn: &mut Conn,
    owner_id: &str,
    facility_id: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Account, LedgerError> {
    let exists = sqlx::query("SELECT 1 AS one FROM facilities WHERE id = $1")
        .bind(facility_id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Err(LedgerError::FacilityNotFound {
            id: facility_id.to_string(),
        });
    }
    let id = uuid::Uuid::now_v7().to_string();
    let opened = sqlx::query(
        "INSERT INTO accounts (id, kind, facility_id, owner_id, name, status, balance_minor, opened_at) \
         VALUES ($1, 'family', $2, $3, $4, 'open', 0, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&id)
    .bind(facility_id)
    .bind(owner_id)
    .bind(name)
    .bind(to_micros(now))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if opened {
        tracing::info!(account_id = %id, facility = facility_id, "ledger: family prepaid account opened");
    }
    family_of(conn, owner_id, facility_id)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound { id })
}

/// The prepaid account of family user `owner_id` at `facility_id`, if it was opened.
pub(crate) async fn family_of(
    conn: &mut Conn,
    owner_id: &str,
    facility_id: &str,
) -> Result<Option<Account>, LedgerError> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE kind = 'family' AND owner_id = $1 AND facility_id = $2"
    ))
    .bind(owner_id)
    .bind(facility_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// Every prepaid account of family user `owner_id`, by facility.
pub(crate) async fn families_of(
    conn: &mut Conn,
    owner_id: &str,
) -> Result<Vec<Account>, LedgerError> {
    let rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE kind = 'family' AND owner_id = $1 ORDER BY facility_id"
    ))
    .bind(owner_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

const ACCOUNT_COLUMNS: &str =
    "id, kind, facility_id, owner_id, name, status, balance_minor, opened_at, closed_at";

/// Reads an account; a system account's balance is summed from its entries.
pub(crate) async fn read(conn: &mut Conn, id: &str) -> Result<Account, LedgerError> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::AccountNotFound { id: id.to_string() })?;
    let mut account = decode(&row)?;
    if account.kind == AccountKind::System {
        account.balance = Money::from_minor(entries_sum(conn, id).await?);
    }
    Ok(account)
}

/// The sum of an account's entries, in minor units.
pub(crate) async fn entries_sum(conn: &mut Conn, id: &str) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS total FROM ledger_entries WHERE account_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("total")?)
}

fn decode(row: &AnyRow) -> Result<Account, LedgerError> {
    let closed_at: Option<i64> = row.try_get("closed_at")?;
    Ok(Account {
        id: row.try_get("id")?,
        kind: AccountKind::parse_db(&row.try_get::<String, _>("kind")?)?,
        facility_id: row.try_get("facility_id")?,
        owner_id: row.try_get("owner_id")?,
        name: row.try_get("name")?,
        status: AccountStatus::parse_db(&row.try_get::<String, _>("status")?)?,
        balance: Money::from_minor(row.try_get("balance_minor")?),
        opened_at: from_micros(row.try_get("opened_at")?),
        closed_at: closed_at.map(from_micros),
    })
}

/// An inmate or family account, locked for the rest of the transaction.
#[derive(Debug)]
pub(crate) struct Locked {
    pub id: String,
    pub facility_id: Option<String>,
    pub balance_minor: i64,
}

impl Locked {
    /// The account's facility, required for deposits, purchases, refunds and release.
    pub(super) fn facility(&self) -> Result<&str, LedgerError> {
        self.facility_id
            .as_deref()
            .ok_or_else(|| LedgerError::NoFacility {
                id: self.id.clone(),
            })
    }
}

/// Locks an open inmate/family account row until the transaction ends (a no-op UPDATE:
/// a row lock on PostgreSQL, already exclusive on SQLite under `BEGIN IMMEDIATE`), so
/// checks made after it (daily limit, balance) hold until commit.
pub(crate) async fn lock_open(
    conn: &mut Conn,
    id: &str,
    action: &'static str,
) -> Result<Locked, LedgerError> {
    let row = sqlx::query(
        "UPDATE accounts SET balance_minor = balance_minor WHERE id = $1 \
         RETURNING kind, status, facility_id, balance_minor",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::AccountNotFound { id: id.to_string() })?;
    let kind = AccountKind::parse_db(&row.try_get::<String, _>("kind")?)?;
    if kind == AccountKind::System {
        return Err(LedgerError::WrongAccountKind {
            id: id.to_string(),
            kind,
            action,
        });
    }
    if AccountStatus::parse_db(&row.try_get::<String, _>("status")?)? == AccountStatus::Closed {
        return Err(LedgerError::AccountClosed { id: id.to_string() });
    }
    Ok(Locked {
        id: id.to_string(),
        facility_id: row.try_get("facility_id")?,
        balance_minor: row.try_get("balance_minor")?,
    })
}
