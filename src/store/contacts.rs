//! Contacts an inmate may call, and numbers nobody may call.

use super::{conflict_on_unique, flag, new_id, Store, StoreError};
use crate::db::from_micros;
use crate::rating::normalize_e164;
use crate::text;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ContactStatus {
    Pending,
    Approved,
    Denied,
}

impl ContactStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactStatus::Pending => "pending",
            ContactStatus::Approved => "approved",
            ContactStatus::Denied => "denied",
        }
    }

    fn parse(s: &str) -> Result<ContactStatus, StoreError> {
        match s {
            "pending" => Ok(ContactStatus::Pending),
            "approved" => Ok(ContactStatus::Approved),
            "denied" => Ok(ContactStatus::Denied),
            other => Err(StoreError::Corrupt {
                what: "contact status",
                message: other.to_string(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Contact {
    pub id: String,
    pub inmate_id: String,
    pub number: String,
    pub name: String,
    pub relationship: String,
    pub status: ContactStatus,
    /// An attorney: calls are never recorded or monitored.
    pub privileged: bool,
    pub video_allowed: bool,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    pub number: String,
    pub name: String,
    #[serde(default)]
    pub relationship: String,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub video_allowed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Block {
    pub id: String,
    /// `None`: blocked for every facility.
    pub facility_id: Option<String>,
    pub number: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

pub(super) const COLUMNS: &str =
    "id, inmate_id, number_e164, name, relationship, status, privileged, \
    video_allowed, decided_by, decided_at, created_at";

pub(super) fn from_row(r: &AnyRow) -> Result<Contact, StoreError> {
    let status: String = r.try_get("status")?;
    let decided_at: Option<i64> = r.try_get("decided_at")?;
    Ok(Contact {
        id: r.try_get("id")?,
        inmate_id: r.try_get("inmate_id")?,
        number: r.try_get("number_e164")?,
        name: r.try_get("name")?,
        relationship: r.try_get("relationship")?,
        status: ContactStatus::parse(&status)?,
        privileged: flag(r.try_get("privileged")?),
        video_allowed: flag(r.try_get("video_allowed")?),
        decided_by: r.try_get("decided_by")?,
        decided_at: decided_at.map(from_micros),
        created_at: from_micros(r.try_get("created_at")?),
    })
}

fn block_from_row(r: &AnyRow) -> Result<Block, StoreError> {
    Ok(Block {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        number: r.try_get("number_e164")?,
        reason: r.try_get("reason")?,
        created_at: from_micros(r.try_get("created_at")?),
    })
}

impl Store {
    /// Normalizes `number` with the default country code of `facility_id`.
    pub async fn normalize_number(
        &self,
        facility_id: &str,
        number: &str,
    ) -> Result<String, StoreError> {
        let f = self.facility(facility_id).await?;
        normalize_e164(number, &f.country_code)
            .map(|n| n.as_str().to_string())
            .map_err(|e| StoreError::invalid("number", e.to_string()))
    }

    /// Adds a contact to an inmate's list, pending approval.
    pub async fn add_contact(&self, inmate_id: &str, c: NewContact) -> Result<Contact, StoreError> {
        let name = text::NAME.accept_required("name", &c.name)?;
        let relationship = text::NAME.accept("relationship", &c.relationship)?;
        let inmate = self.inmate(inmate_id).await?;
        let number = self
            .normalize_number(&inmate.facility_id, &c.number)
            .await?;
        let id = new_id("con");
        sqlx::query(&format!(
            "INSERT INTO contacts ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,'pending',$6,$7,NULL,NULL,$8)"
        ))
        .bind(&id)
        .bind(inmate_id)
        .bind(&number)
        .bind(name)
        .bind(relationship)
        .bind(i64::from(c.privileged))
        .bind(i64::from(c.video_allowed))
        .bind(self.now_us())
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, format!("{number} is already on this inmate's list")))?;
        self.contact(&id).await
    }

    pub async fn contact(&self, id: &str) -> Result<Contact, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM contacts WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("contact", id))?;
        from_row(&row)
    }

    pub async fn contacts(&self, inmate_id: &str) -> Result<Vec<Contact>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM contacts WHERE inmate_id = $1 ORDER BY created_at, id"
        ))
        .bind(inmate_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The inmate's contact for an E.164 number, if any.
    pub async fn contact_for_number(
        &self,
        inmate_id: &str,
        number: &str,
    ) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM contacts WHERE inmate_id = $1 AND number_e164 = $2"
        ))
        .bind(inmate_id)
        .bind(number)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Approves or denies a contact (staff decision, recorded with who and when).
    pub async fn decide_contact(
        &self,
        id: &str,
        status: ContactStatus,
        staff: &str,
    ) -> Result<Contact, StoreError> {
        if status == ContactStatus::Pending {
            return Err(StoreError::invalid(
                "status",
                "a decision is approved or denied",
            ));
        }
        let done = sqlx::query(
            "UPDATE contacts SET status = $2, decided_by = $3, decided_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(staff)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("contact", id));
        }
        if status == ContactStatus::Approved {
            self.link_grant_facility(id).await?;
        }
        self.contact(id).await
    }

    /// Blocks a number for one facility, or for all (`facility_id = None`).
    pub async fn block_number(
        &self,
        facility_id: Option<&str>,
        number: &str,
        reason: &str,
    ) -> Result<Block, StoreError> {
        text::NOTE.check("reason", reason)?;
        let normalized = match facility_id {
            Some(f) => self.normalize_number(f, number).await?,
            None => normalize_e164(number, "1")
                .map(|n| n.as_str().to_string())
                .map_err(|e| StoreError::invalid("number", e.to_string()))?,
        };
        let id = new_id("blk");
        sqlx::query(
            "INSERT INTO blocked_numbers (id, facility_id, number_e164, reason, created_at) VALUES ($1,$2,$3,$4,$5)",
        )
        .bind(&id)
        .bind(facility_id)
        .bind(&normalized)
        .bind(reason)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, format!("{normalized} is already blocked there")))?;
        let row = sqlx::query("SELECT id, facility_id, number_e164, reason, created_at FROM blocked_numbers WHERE id = $1")
            .bind(&id)
            .fetch_one(self.db.pool())
            .await?;
        block_from_row(&row)
    }

    /// Blocks of one facility (with `include_global`, the global ones too), or only global.
    pub async fn blocks(&self, facility_id: Option<&str>) -> Result<Vec<Block>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, facility_id, number_e164, reason, created_at FROM blocked_numbers \
             WHERE ($1 IS NULL AND facility_id IS NULL) OR facility_id = $1 ORDER BY number_e164",
        )
        .bind(facility_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(block_from_row).collect()
    }

    pub async fn unblock(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM blocked_numbers WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("block", id));
        }
        Ok(())
    }

    pub async fn block(&self, id: &str) -> Result<Block, StoreError> {
        let row = sqlx::query("SELECT id, facility_id, number_e164, reason, created_at FROM blocked_numbers WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("block", id))?;
        block_from_row(&row)
    }

    /// True when `number` is blocked in `facility_id` or globally.
    pub async fn is_blocked(&self, facility_id: &str, number: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM blocked_numbers WHERE number_e164 = $2 AND (facility_id IS NULL OR facility_id = $1)",
        )
        .bind(facility_id)
        .bind(number)
        .fetch_one(self.db.pool())
        .await?
        .try_get(0)?;
        Ok(n > 0)
    }
}
