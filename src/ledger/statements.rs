//! Account statements: the entries of one account in a time range, with running balances,
//! for the inmate's kiosk, the family's page and staff; and their CSV form.

use super::error::LedgerError;
use super::types::TransactionKind;
use crate::db::Conn;
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// An account's movements over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub account_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The balance at `from`: the sum of every earlier entry.
    pub opening_balance: Money,
    pub lines: Vec<StatementLine>,
    /// `opening_balance` plus every line.
    pub closing_balance: Money,
}

/// One entry of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub transaction_id: i64,
    pub at: DateTime<Utc>,
    pub kind: TransactionKind,
    pub memo: String,
    /// Signed: positive credits the account, negative debits it.
    pub amount: Money,
    /// The running balance after this line.
    pub balance_after: Money,
    /// The call or visit (its CDR, `GET /calls/{id}`) a charge paid for, and which of its
    /// increments; `null` for lines that are not session charges. (The CSV carries both in
    /// the memo: `call_charge <session> increment <n>`.)
    pub session_id: Option<String>,
    pub increment: Option<i64>,
}

impl Statement {
    pub const CSV_HEADER: &'static str = "transaction_id,time,kind,memo,amount,balance_after";

    /// The lines as CSV (RFC 4180, CRLF-free `\n` rows) with a header row. Memo fields are
    /// quoted as needed and defused against spreadsheet formula injection.
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 * (self.lines.len() + 1));
        out.push_str(Self::CSV_HEADER);
        out.push('\n');
        for l in &self.lines {
            let fields = [
                l.transaction_id.to_string(),
                l.at.to_rfc3339_opts(SecondsFormat::Micros, true),
                l.kind.to_string(),
                csv_field(&l.memo),
                l.amount.to_string(),
                l.balance_after.to_string(),
            ];
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }
}

/// Quotes a free-text field; a leading `= + - @` gets a `'` so spreadsheets show it as text.
fn csv_field(s: &str) -> String {
    let defused = match s.chars().next() {
        Some('=' | '+' | '-' | '@') => format!("'{s}"),
        _ => s.to_string(),
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

async fn opening(conn: &mut Conn, account_id: &str, from: i64) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS total FROM ledger_entries \
         WHERE account_id = $1 AND created_at < $2",
    )
    .bind(account_id)
    .bind(from)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("total")?)
}

/// Builds the statement inside a read transaction (one snapshot).
pub(crate) async fn build(
    conn: &mut Conn,
    account_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Statement, LedgerError> {
    super::accounts::read(conn, account_id).await?;
    let open = opening(conn, account_id, to_micros(from)).await?;
    let rows = sqlx::query(
        "SELECT e.transaction_id, e.created_at, e.amount_minor, t.kind, t.memo, t.session_id, t.increment \
         FROM ledger_entries e \
         JOIN ledger_transactions t ON t.id = e.transaction_id \
         WHERE e.account_id = $1 AND e.created_at >= $2 AND e.created_at < $3 ORDER BY e.id",
    )
    .bind(account_id)
    .bind(to_micros(from))
    .bind(to_micros(to))
    .fetch_all(&mut *conn)
    .await?;
    let mut running = open;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        lines.push(line(row, &mut running)?);
    }
    Ok(Statement {
        account_id: account_id.to_string(),
        from,
        to,
        opening_balance: Money::from_minor(open),
        lines,
        closing_balance: Money::from_minor(running),
    })
}

fn line(row: &AnyRow, running: &mut i64) -> Result<StatementLine, LedgerError> {
    let amount: i64 = row.try_get("amount_minor")?;
    *running = running
        .checked_add(amount)
        .ok_or_else(|| LedgerError::corrupt("statement balance overflows"))?;
    Ok(StatementLine {
        transaction_id: row.try_get("transaction_id")?,
        at: from_micros(row.try_get("created_at")?),
        kind: TransactionKind::parse_db(&row.try_get::<String, _>("kind")?)?,
        memo: row.try_get("memo")?,
        amount: Money::from_minor(amount),
        balance_after: Money::from_minor(*running),
        session_id: row.try_get("session_id")?,
        increment: row.try_get("increment")?,
    })
}

/// One billing increment charged to a session (a call or visit), as its CDR shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCharge {
    pub transaction_id: i64,
    /// 1-based increment number within the session.
    pub increment: i64,
    pub at: DateTime<Utc>,
    pub kind: TransactionKind,
    pub account_id: String,
    /// What was charged (positive; zero for an increment billed at no charge).
    pub amount: Money,
    /// The account's balance after this charge.
    pub balance_after: Money,
}

/// The debits of one session, in increment order.
pub(crate) async fn session_charges(
    conn: &mut Conn,
    session_id: &str,
) -> Result<Vec<SessionCharge>, LedgerError> {
    let rows = sqlx::query(
        "SELECT t.id, t.increment, t.kind, e.created_at, e.account_id, e.amount_minor, \
         e.balance_after_minor FROM ledger_transactions t \
         JOIN ledger_entries e ON e.transaction_id = t.id \
         WHERE t.session_id = $1 AND e.balance_after_minor IS NOT NULL \
         ORDER BY t.increment, t.id",
    )
    .bind(session_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(charge).collect()
}

fn charge(row: &AnyRow) -> Result<SessionCharge, LedgerError> {
    let amount: i64 = row.try_get("amount_minor")?;
    Ok(SessionCharge {
        transaction_id: row.try_get("id")?,
        increment: row.try_get::<Option<i64>, _>("increment")?.unwrap_or(0),
        at: from_micros(row.try_get("created_at")?),
        kind: TransactionKind::parse_db(&row.try_get::<String, _>("kind")?)?,
        account_id: row.try_get("account_id")?,
        amount: Money::from_minor(
            amount
                .checked_neg()
                .ok_or_else(|| LedgerError::corrupt("charge amount overflows"))?,
        ),
        balance_after: Money::from_minor(row.try_get("balance_after_minor")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain memo"), "plain memo");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_field("@x,y"), "\"'@x,y\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn csv_has_a_header_and_signed_amounts() {
        let at = from_micros(1_700_000_000_000_000);
        let s = Statement {
            account_id: "a".into(),
            from: at,
            to: at,
            opening_balance: Money::from_minor(10_000),
            lines: vec![StatementLine {
                transaction_id: 7,
                at,
                kind: TransactionKind::CallCharge,
                memo: "call s1 increment 1".into(),
                amount: Money::from_minor(-2_100),
                balance_after: Money::from_minor(7_900),
                session_id: Some("s1".into()),
                increment: Some(1),
            }],
            closing_balance: Money::from_minor(7_900),
        };
        assert_eq!(
            s.to_csv(),
            "transaction_id,time,kind,memo,amount,balance_after\n\
             7,2023-11-14T22:13:20.000000Z,call_charge,call s1 increment 1,-0.21,0.79\n"
        );
    }
}
