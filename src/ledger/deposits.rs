//! Deposits: online and kiosk deposits post at once; money orders wait for staff.
//!
//! Limits come from the account's facility: `deposit_max_minor` per deposit and
//! `deposit_daily_max_minor` per account per facility-local day (the facility's
//! `time_zone`). Pending money orders count toward the day they were received, posted
//! deposits toward the day they were made, voided ones toward nothing: the daily limit
//! caps what may enter an account per day, and a money order in the mail room has entered.
//! The account row is locked before the day's total is read, so two concurrent deposits
//! cannot both pass the same remaining allowance.

use super::accounts::{lock_open, Locked, SystemAccount};
use super::error::{AmountRule, LedgerError};
use super::postings::{transfer, NewTxn};
use super::types::{
    Deposit, DepositLimit, DepositMethod, DepositRequest, DepositStatus, TransactionKind,
};
use crate::db::Conn;
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// Decimal places a deposit may carry: cents.
pub const DEPOSIT_MAX_PLACES: u32 = 2;

/// Refuses a deposit amount that is not positive or finer than cents.
pub(crate) fn validate(amount: Money) -> Result<(), LedgerError> {
    if !amount.is_positive() {
        return Err(LedgerError::InvalidAmount {
            amount,
            rule: AmountRule::NotPositive,
        });
    }
    if amount.decimal().normalize().scale() > DEPOSIT_MAX_PLACES {
        let rule = AmountRule::TooPrecise {
            max_places: DEPOSIT_MAX_PLACES,
        };
        return Err(LedgerError::InvalidAmount { amount, rule });
    }
    Ok(())
}

/// A facility's deposit rules.
struct Limits {
    tz: chrono_tz::Tz,
    per_deposit: i64,
    per_day: i64,
}

async fn limits(conn: &mut Conn, facility_id: &str) -> Result<Limits, LedgerError> {
    let row = sqlx::query(
        "SELECT time_zone, deposit_max_minor, deposit_daily_max_minor FROM facilities WHERE id = $1",
    )
    .bind(facility_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::FacilityNotFound { id: facility_id.to_string() })?;
    let tz_name: String = row.try_get("time_zone")?;
    let tz = tz_name.parse().map_err(|_| {
        LedgerError::corrupt(format!("facility {facility_id} has time zone '{tz_name}'"))
    })?;
    Ok(Limits {
        tz,
        per_deposit: row.try_get("deposit_max_minor")?,
        per_day: row.try_get("deposit_daily_max_minor")?,
    })
}

/// The facility-local date of `now`.
pub fn local_day(tz: chrono_tz::Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

async fn day_total(conn: &mut Conn, account_id: &str, day: NaiveDate) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS total FROM deposits \
         WHERE account_id = $1 AND local_day = $2 AND status <> 'voided'",
    )
    .bind(account_id)
    .bind(day.to_string())
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("total")?)
}

fn exceeded(
    limit: DepositLimit,
    limit_minor: i64,
    attempted: Money,
    remaining: i64,
) -> LedgerError {
    LedgerError::LimitExceeded {
        limit,
        limit_amount: Money::from_minor(limit_minor),
        attempted,
        remaining: Money::from_minor(remaining.max(0)),
    }
}

async fn check_limits(
    conn: &mut Conn,
    account_id: &str,
    day: NaiveDate,
    amount: Money,
    l: &Limits,
) -> Result<(), LedgerError> {
    let minor = amount.to_minor();
    if minor > l.per_deposit {
        return Err(exceeded(
            DepositLimit::PerDeposit,
            l.per_deposit,
            amount,
            l.per_deposit,
        ));
    }
    let today = day_total(conn, account_id, day).await?;
    if today.saturating_add(minor) > l.per_day {
        return Err(exceeded(
            DepositLimit::PerDay,
            l.per_day,
            amount,
            l.per_day - today,
        ));
    }
    Ok(())
}

/// Records a deposit (the key is already claimed) and, unless it is a money order, posts
/// it: clearing −amount, account +amount.
pub(crate) async fn create(
    conn: &mut Conn,
    key: &str,
    req: &DepositRequest,
    now: DateTime<Utc>,
) -> Result<Deposit, LedgerError> {
    record(conn, key, req, now, req.method != DepositMethod::MoneyOrder).await
}

/// Records a deposit within the facility's limits (the key is already claimed); posts it
/// now when `post_now`, else leaves it pending (a money order, or an online deposit that
/// waits for its payment provider, [`super::online`]).
pub(super) async fn record(
    conn: &mut Conn,
    key: &str,
    req: &DepositRequest,
    now: DateTime<Utc>,
    post_now: bool,
) -> Result<Deposit, LedgerError> {
    let account = lock_open(conn, &req.account_id, "deposit to").await?;
    let facility_id = account.facility()?.to_string();
    let limits = limits(conn, &facility_id).await?;
    let day = local_day(limits.tz, now);
    check_limits(conn, &account.id, day, req.amount, &limits).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut deposit = Deposit {
        id,
        account_id: account.id.clone(),
        facility_id,
        method: req.method,
        amount: req.amount,
        status: DepositStatus::Pending,
        depositor: req.depositor.clone(),
        reference: req.reference.clone(),
        transaction_id: None,
        created_at: now,
        local_day: day,
        decided_by: None,
        decided_at: None,
    };
    if post_now {
        deposit.transaction_id = Some(post(conn, key, &account, &deposit, now).await?);
        deposit.status = DepositStatus::Posted;
    }
    insert(conn, &deposit).await?;
    Ok(deposit)
}

/// The ledger transaction of a deposit: clearing −, account +.
pub(super) async fn post(
    conn: &mut Conn,
    key: &str,
    account: &Locked,
    d: &Deposit,
    now: DateTime<Utc>,
) -> Result<i64, LedgerError> {
    let kind = match d.method {
        DepositMethod::MoneyOrder => TransactionKind::MoneyOrder,
        _ => TransactionKind::Deposit,
    };
    let memo = format!("{} deposit {}", d.method, d.id);
    let txn = NewTxn {
        kind,
        key: Some(key),
        facility_id: &d.facility_id,
        memo: &memo,
        at: to_micros(now),
    };
    let clearing = SystemAccount::DepositsClearing.id(&d.facility_id);
    let posted = transfer(conn, &txn, &account.id, &clearing, d.amount.to_minor()).await?;
    let (id, _) = posted.ok_or_else(|| LedgerError::corrupt("a credit was refused"))?;
    Ok(id)
}

async fn insert(conn: &mut Conn, d: &Deposit) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO deposits (id, account_id, facility_id, method, amount_minor, status, depositor, \
         reference, transaction_id, created_at, local_day) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(d.id.as_str())
    .bind(d.account_id.as_str())
    .bind(d.facility_id.as_str())
    .bind(d.method.as_str())
    .bind(d.amount.to_minor())
    .bind(d.status.as_str())
    .bind(d.depositor.as_str())
    .bind(d.reference.as_str())
    .bind(d.transaction_id)
    .bind(to_micros(d.created_at))
    .bind(d.local_day.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks a deposit row (no-op UPDATE) and reads it.
pub(super) async fn lock(conn: &mut Conn, id: &str) -> Result<Deposit, LedgerError> {
    let row = sqlx::query(
        "UPDATE deposits SET status = status WHERE id = $1 RETURNING id, account_id, facility_id, method, \
         amount_minor, status, depositor, reference, transaction_id, created_at, local_day, decided_by, decided_at",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| LedgerError::DepositNotFound { id: id.to_string() })?;
    decode(&row)
}

pub(super) fn decode(row: &AnyRow) -> Result<Deposit, LedgerError> {
    let day: String = row.try_get("local_day")?;
    let decided_at: Option<i64> = row.try_get("decided_at")?;
    Ok(Deposit {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        facility_id: row.try_get("facility_id")?,
        method: DepositMethod::parse_db(&row.try_get::<String, _>("method")?)?,
        amount: Money::from_minor(row.try_get("amount_minor")?),
        status: DepositStatus::parse_db(&row.try_get::<String, _>("status")?)?,
        depositor: row.try_get("depositor")?,
        reference: row.try_get("reference")?,
        transaction_id: row.try_get("transaction_id")?,
        created_at: from_micros(row.try_get("created_at")?),
        local_day: day
            .parse()
            .map_err(|_| LedgerError::corrupt(format!("deposit local_day '{day}'")))?,
        decided_by: row.try_get("decided_by")?,
        decided_at: decided_at.map(from_micros),
    })
}

/// Locks a money order that must still be pending.
async fn pending_money_order(
    conn: &mut Conn,
    id: &str,
    action: &'static str,
) -> Result<Deposit, LedgerError> {
    let d = lock(conn, id).await?;
    if d.method != DepositMethod::MoneyOrder || d.status != DepositStatus::Pending {
        let state = format!("a {} {} deposit", d.status, d.method);
        return Err(LedgerError::InvalidState {
            id: id.to_string(),
            state,
            action,
        });
    }
    Ok(d)
}

/// Posts a pending money order (the key is already claimed). The daily limit is not
/// checked again: the money order counted against the day it was received.
pub(crate) async fn post_money_order(
    conn: &mut Conn,
    key: &str,
    id: &str,
    staff: &str,
    now: DateTime<Utc>,
) -> Result<Deposit, LedgerError> {
    let mut d = pending_money_order(conn, id, "post").await?;
    let account = lock_open(conn, &d.account_id, "post a money order to").await?;
    let txn = post(conn, key, &account, &d, now).await?;
    decide(conn, &mut d, DepositStatus::Posted, Some(txn), staff, now).await?;
    Ok(d)
}

/// Voids a pending money order (the key is already claimed); nothing reaches the ledger.
pub(crate) async fn void_money_order(
    conn: &mut Conn,
    id: &str,
    staff: &str,
    now: DateTime<Utc>,
) -> Result<Deposit, LedgerError> {
    let mut d = pending_money_order(conn, id, "void").await?;
    decide(conn, &mut d, DepositStatus::Voided, None, staff, now).await?;
    Ok(d)
}

async fn decide(
    conn: &mut Conn,
    d: &mut Deposit,
    status: DepositStatus,
    txn: Option<i64>,
    staff: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE deposits SET status = $1, transaction_id = $2, decided_by = $3, decided_at = $4 \
         WHERE id = $5 AND status = 'pending'",
    )
    .bind(status.as_str())
    .bind(txn)
    .bind(staff)
    .bind(to_micros(now))
    .bind(d.id.as_str())
    .execute(&mut *conn)
    .await?;
    d.status = status;
    d.transaction_id = txn;
    d.decided_by = Some(staff.to_string());
    d.decided_at = Some(now);
    Ok(())
}

const DEPOSIT_COLUMNS: &str =
    "id, account_id, facility_id, method, amount_minor, status, depositor, \
    reference, transaction_id, created_at, local_day, decided_by, decided_at";

impl super::Ledger {
    /// One deposit by id (for scoping a money-order decision before it is made).
    pub async fn deposit_by_id(&self, id: &str) -> Result<Deposit, LedgerError> {
        let row = sqlx::query(&format!(
            "SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| LedgerError::DepositNotFound { id: id.to_string() })?;
        decode(&row)
    }

    /// Deposits to an account, newest first.
    pub async fn deposits(&self, account_id: &str) -> Result<Vec<Deposit>, LedgerError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE account_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(account_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn deposits_are_positive_cents() {
        assert!(validate(m("0.01")).is_ok());
        assert!(validate(m("100")).is_ok());
        assert!(
            validate(m("1.50")).is_ok(),
            "trailing zero is not precision"
        );
        for (bad, rule) in [
            ("0", AmountRule::NotPositive),
            ("-1", AmountRule::NotPositive),
            ("1.005", AmountRule::TooPrecise { max_places: 2 }),
        ] {
            match validate(m(bad)) {
                Err(LedgerError::InvalidAmount { rule: r, .. }) => assert_eq!(r, rule, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn local_day_follows_the_facility_time_zone() {
        let tz: chrono_tz::Tz = "America/Chicago".parse().unwrap();
        let late = Utc.with_ymd_and_hms(2026, 1, 16, 5, 59, 59).unwrap();
        assert_eq!(local_day(tz, late).to_string(), "2026-01-15");
        let after = Utc.with_ymd_and_hms(2026, 1, 16, 6, 0, 0).unwrap();
        assert_eq!(local_day(tz, after).to_string(), "2026-01-16");
        // Daylight time: midnight is 05:00 UTC in July.
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 5, 0, 0).unwrap();
        assert_eq!(local_day(tz, summer).to_string(), "2026-07-01");
    }
}
