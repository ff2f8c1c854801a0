//! The call set-up's reads of facts that change (inmate, facility, contact, blocks,
//! limits, balance), each a single statement, so a set-up asks the database as few times
//! as the order of its checks allows (`call::checks`): the facility's country code must
//! be known before the dialed number can be normalized, and the number before its contact
//! and blocks can be looked up, so there are two.

use super::{Contact, Facility, InmateStatus, Store, StoreError};
use crate::db::to_micros;
use crate::money::Money;
use crate::session::payer::Candidate;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// An inmate about to be authorized for a call, with its facility.
#[derive(Debug, Clone)]
pub struct CallingInmate {
    pub id: String,
    pub status: InmateStatus,
    pub account_id: String,
    pub facility: Facility,
}

/// What the destination checks need once the number is normalized.
#[derive(Debug, Clone)]
pub struct DestinationFacts {
    /// The inmate's contact with that number, whatever its status.
    pub contact: Option<Contact>,
    /// The number is blocked in the facility or everywhere.
    pub blocked: bool,
    /// Calls of the inmate accepted since the `since` asked for (0 when not asked).
    pub accepted_since: i64,
    /// The inmate's account's balance.
    pub balance: Money,
    /// The best-funded open prepaid account, at the inmate's facility, of a family user
    /// the contact is bound to (a verified number), with its balance.
    pub family: Option<Candidate>,
}

fn prefixed(columns: &str, table: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// The inmate and its facility, in one statement.
    pub async fn calling_inmate(&self, inmate_id: &str) -> Result<CallingInmate, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {}, i.status AS inmate_status, i.account_id AS inmate_account \
             FROM inmates i JOIN facilities f ON f.id = i.facility_id WHERE i.id = $1",
            prefixed(super::facilities::COLUMNS, "f")
        ))
        .bind(inmate_id)
        .fetch_optional(&mut self.db.conn().await?)
        .await?
        .ok_or_else(|| StoreError::not_found("inmate", inmate_id))?;
        let status: String = row.try_get("inmate_status")?;
        Ok(CallingInmate {
            id: inmate_id.to_string(),
            status: InmateStatus::parse(&status)?,
            account_id: row.try_get("inmate_account")?,
            facility: super::facilities::from_row(&row)?,
        })
    }

    /// The contact, blocks, accepted calls since `since` (when asked) and the balance for
    /// a call of `inmate` to `number_e164`, in one statement.
    pub async fn destination_facts(
        &self,
        inmate: &CallingInmate,
        number_e164: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<DestinationFacts, StoreError> {
        let accepted = if since.is_some() {
            "(SELECT COUNT(*) FROM sessions WHERE inmate_id = $1 AND kind = 'call' \
             AND accepted_at IS NOT NULL AND accepted_at >= $5)"
        } else {
            "CAST($5 AS BIGINT)"
        };
        let row = sqlx::query(&format!(
            "SELECT {}, \
             (SELECT COUNT(*) FROM blocked_numbers WHERE number_e164 = $2 \
              AND (facility_id IS NULL OR facility_id = $3)) AS blocked, \
             {accepted} AS accepted_since, \
             (SELECT balance_minor FROM accounts WHERE id = $4 AND kind <> 'system') AS balance_minor, \
             (SELECT a.id FROM family_contacts fc JOIN accounts a ON a.kind = 'family' \
              AND a.owner_id = fc.user_id AND a.facility_id = $3 AND a.status = 'open' \
              WHERE fc.contact_id = c.id ORDER BY a.balance_minor DESC, a.id LIMIT 1) AS family_account_id, \
             (SELECT MAX(a.balance_minor) FROM family_contacts fc JOIN accounts a ON a.kind = 'family' \
              AND a.owner_id = fc.user_id AND a.facility_id = $3 AND a.status = 'open' \
              WHERE fc.contact_id = c.id) AS family_balance_minor \
             FROM (SELECT 1 AS one) one \
             LEFT JOIN contacts c ON c.inmate_id = $1 AND c.number_e164 = $2",
            prefixed(super::contacts::COLUMNS, "c")
        ))
        .bind(&inmate.id)
        .bind(number_e164)
        .bind(&inmate.facility.id)
        .bind(&inmate.account_id)
        .bind(since.map_or(0, to_micros))
        .fetch_one(&mut self.db.conn().await?)
        .await?;
        let contact = match row.try_get::<Option<String>, _>("id")? {
            Some(_) => Some(super::contacts::from_row(&row)?),
            None => None,
        };
        let balance = match row.try_get::<Option<i64>, _>("balance_minor")? {
            Some(b) => Money::from_minor(b),
            // Not a person's account (or none): as the ledger reads it.
            None => self.ledger().balance(&inmate.account_id).await?,
        };
        let family = match (
            row.try_get::<Option<String>, _>("family_account_id")?,
            row.try_get::<Option<i64>, _>("family_balance_minor")?,
        ) {
            (Some(account_id), Some(b)) => Some(Candidate {
                account_id,
                balance: Money::from_minor(b),
            }),
            _ => None,
        };
        Ok(DestinationFacts {
            contact,
            blocked: row.try_get::<i64, _>("blocked")? > 0,
            accepted_since: row.try_get("accepted_since")?,
            balance,
            family,
        })
    }
}

impl Store {
    /// The prepaid account, at `facility_id`, of the family user named `username` (a
    /// visit's requester), with its balance: `None` when the requester is not a family
    /// user or has no open prepaid account there.
    pub async fn family_payer(
        &self,
        username: &str,
        facility_id: &str,
    ) -> Result<Option<Candidate>, StoreError> {
        let row = sqlx::query(
            "SELECT a.id, a.balance_minor FROM users u JOIN accounts a ON a.kind = 'family' \
             AND a.owner_id = u.id AND a.facility_id = $2 AND a.status = 'open' \
             WHERE u.username = $1 AND u.role = 'family'",
        )
        .bind(username)
        .bind(facility_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Candidate {
            account_id: row.try_get("id")?,
            balance: Money::from_minor(row.try_get("balance_minor")?),
        }))
    }
}

impl Store {
    /// The facilities (id, name) of the inmates a family user is a contact of: where its
    /// prepaid accounts are of use.
    pub async fn family_facilities(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT f.id, f.name FROM family_contacts fc \
             JOIN contacts c ON c.id = fc.contact_id JOIN inmates i ON i.id = c.inmate_id \
             JOIN facilities f ON f.id = i.facility_id WHERE fc.user_id = $1 ORDER BY f.id",
        )
        .bind(user_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
            .collect()
    }
}

/// An inmate a family user is an approved contact of, with the inmate's account: where
/// the portal offers to deposit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkedInmate {
    pub inmate_name: String,
    pub booking_number: String,
    pub facility_id: String,
    pub account_id: String,
}

impl Store {
    /// The inmates `user_id` is an approved contact of (one row per inmate).
    pub async fn family_linked_inmates(
        &self,
        user_id: &str,
    ) -> Result<Vec<LinkedInmate>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT i.first_name, i.last_name, i.booking_number, i.facility_id, i.account_id \
             FROM family_contacts fc JOIN contacts c ON c.id = fc.contact_id AND c.status = 'approved' \
             JOIN inmates i ON i.id = c.inmate_id WHERE fc.user_id = $1 AND i.status <> 'released' \
             ORDER BY i.last_name, i.first_name, i.booking_number",
        )
        .bind(user_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let first: String = r.try_get("first_name")?;
                let last: String = r.try_get("last_name")?;
                Ok(LinkedInmate {
                    inmate_name: format!("{first} {last}"),
                    booking_number: r.try_get("booking_number")?,
                    facility_id: r.try_get("facility_id")?,
                    account_id: r.try_get("account_id")?,
                })
            })
            .collect()
    }
}
