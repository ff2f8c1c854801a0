//! Finding an inmate and linking a family number: the roster search, the family's link
//! requests, the code of each verification call and what a keyed code does
//! ([`crate::family::linking`] has the rules and why).

use super::{conflict_on_unique, flag, new_id, InmateStatus, Store, StoreError};
use crate::db::{from_micros, Backend};
use crate::family::linking::{self, Keyed, LinkStatus, Pending, RosterQuery};
use crate::text;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// What a roster search shows of an inmate: what a public jail roster shows, no more
/// (no PIN or calling ID, account, balance, contacts, housing unit or dates).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RosterEntry {
    /// The handle a link request names the inmate by.
    pub inmate_id: String,
    pub first_name: String,
    pub last_name: String,
    pub booking_number: String,
    pub facility_id: String,
    pub facility_name: String,
}

/// A family's request to become a contact of an inmate for one of its numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkRequest {
    pub id: String,
    pub status: LinkStatus,
    pub inmate_id: String,
    pub inmate_name: String,
    pub booking_number: String,
    pub facility_id: String,
    pub number: String,
    pub name: String,
    pub relationship: String,
    pub video: bool,
    /// Verification calls placed for it.
    pub calls: u32,
    pub wrong_codes: u32,
    /// Until when the code of the last call works (while pending verification).
    pub code_expires_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    /// The contact it created once the number was proved.
    pub contact_id: Option<String>,
    /// Why staff denied it, when they said.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub user_id: String,
}

/// What a family asks for.
#[derive(Debug, Clone)]
pub struct NewLinkRequest<'a> {
    pub inmate_id: &'a str,
    pub number: &'a str,
    pub name: &'a str,
    pub relationship: &'a str,
    pub video: bool,
}

const SELECT: &str = "SELECT r.id, r.user_id, r.status, r.inmate_id, r.number_e164, r.name, \
     r.relationship, r.video, r.calls, r.wrong_codes, r.code_expires_at, r.verified_at, \
     r.contact_id, r.created_at, i.first_name, i.last_name, i.booking_number, i.facility_id, \
     c.status AS contact_status, c.decision_reason \
     FROM family_link_requests r JOIN inmates i ON i.id = r.inmate_id \
     LEFT JOIN contacts c ON c.id = r.contact_id";

fn from_row(r: &AnyRow) -> Result<LinkRequest, StoreError> {
    let status: String = r.try_get("status")?;
    let contact_status: Option<String> = r.try_get("contact_status")?;
    let link = linking::link_status(&status, contact_status.as_deref());
    let first: String = r.try_get("first_name")?;
    let last: String = r.try_get("last_name")?;
    let count = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    let at = |v: Option<i64>| v.map(from_micros);
    Ok(LinkRequest {
        id: r.try_get("id")?,
        status: link,
        inmate_id: r.try_get("inmate_id")?,
        inmate_name: format!("{first} {last}"),
        booking_number: r.try_get("booking_number")?,
        facility_id: r.try_get("facility_id")?,
        number: r.try_get("number_e164")?,
        name: r.try_get("name")?,
        relationship: r.try_get("relationship")?,
        video: flag(r.try_get("video")?),
        calls: count(r.try_get("calls")?),
        wrong_codes: count(r.try_get("wrong_codes")?),
        code_expires_at: at(r.try_get("code_expires_at")?)
            .filter(|_| link == LinkStatus::PendingVerification),
        verified_at: at(r.try_get("verified_at")?),
        contact_id: r.try_get("contact_id")?,
        reason: r
            .try_get::<Option<String>, _>("decision_reason")?
            .filter(|_| link == LinkStatus::Denied),
        created_at: from_micros(r.try_get("created_at")?),
        user_id: r.try_get("user_id")?,
    })
}

impl Store {
    /// Inmates in custody at `facility_id` matching `q`: at most
    /// [`linking::MAX_ROSTER_RESULTS`] + 1 (one more says "narrow the search").
    pub async fn roster_search(
        &self,
        facility_id: &str,
        q: &RosterQuery,
    ) -> Result<Vec<RosterEntry>, StoreError> {
        let limit = i64::try_from(linking::MAX_ROSTER_RESULTS + 1).unwrap_or(21);
        let base = "SELECT i.id, i.first_name, i.last_name, i.booking_number, i.facility_id, \
                    f.name AS facility_name FROM inmates i JOIN facilities f ON f.id = i.facility_id \
                    WHERE i.facility_id = $1 AND i.status <> 'released'";
        let (sql, second, third) = match q {
            RosterQuery::Booking(b) => (
                format!(
                    "{base} AND UPPER(i.booking_number) = UPPER($2) \
                     ORDER BY i.last_name, i.first_name, i.id LIMIT $3"
                ),
                b.clone(),
                None,
            ),
            RosterQuery::Name { last, first_prefix } => (
                format!(
                    "{base} AND LOWER(i.last_name) = $2 AND LOWER(i.first_name) LIKE $3 \
                     ORDER BY i.last_name, i.first_name, i.id LIMIT $4"
                ),
                last.clone(),
                Some(format!("{}%", first_prefix.as_deref().unwrap_or(""))),
            ),
        };
        let mut query = sqlx::query(&sql).bind(facility_id).bind(second);
        if let Some(t) = third {
            query = query.bind(t);
        }
        let rows = query.bind(limit).fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(RosterEntry {
                    inmate_id: r.try_get("id")?,
                    first_name: r.try_get("first_name")?,
                    last_name: r.try_get("last_name")?,
                    booking_number: r.try_get("booking_number")?,
                    facility_id: r.try_get("facility_id")?,
                    facility_name: r.try_get("facility_name")?,
                })
            })
            .collect()
    }

    /// A new request of `user_id`, waiting for its number to be proved. Refused (409) when
    /// the number is blocked in the facility or everywhere, the inmate has it already, the
    /// account asked for it already, or has `max_open` requests waiting for verification.
    pub async fn link_request_create(
        &self,
        user_id: &str,
        r: &NewLinkRequest<'_>,
        max_open: u32,
    ) -> Result<LinkRequest, StoreError> {
        let name = text::NAME.accept_required("name", r.name)?;
        let relationship = text::NAME.accept("relationship", r.relationship)?;
        let inmate = match self.inmate(r.inmate_id).await {
            Ok(i) if i.status != InmateStatus::Released => i,
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                return Err(StoreError::not_found("inmate", r.inmate_id))
            }
            Err(e) => return Err(e),
        };
        let number = self.normalize_number(&inmate.facility_id, r.number).await?;
        let blocked: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM blocked_numbers WHERE number_e164 = $1 \
             AND (facility_id IS NULL OR facility_id = $2)",
        )
        .bind(&number)
        .bind(&inmate.facility_id)
        .fetch_one(self.db.pool())
        .await?
        .try_get("n")?;
        if blocked > 0 {
            // Neither called nor listed: a blocked number (a victim's, a court order's)
            // is refused before any call, without saying why.
            return Err(StoreError::Conflict(
                "this number cannot be added: ask the facility".into(),
            ));
        }
        if self
            .contact_for_number(&inmate.id, &number)
            .await?
            .is_some()
        {
            return Err(StoreError::Conflict(
                "that number is already on this person's contact list".into(),
            ));
        }
        let mut tx = self.db.begin_write().await?;
        let open: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM family_link_requests WHERE user_id = $1 AND status = 'verifying'",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if open >= i64::from(max_open) {
            return Err(StoreError::Conflict(format!(
                "{open} requests are waiting for their number to be confirmed: confirm or \
                 withdraw one first"
            )));
        }
        let same: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM family_link_requests WHERE user_id = $1 AND inmate_id = $2 \
             AND number_e164 = $3 AND status = 'verifying'",
        )
        .bind(user_id)
        .bind(&inmate.id)
        .bind(&number)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if same > 0 {
            return Err(StoreError::Conflict(
                "you have asked for this number already: confirm that request".into(),
            ));
        }
        let id = new_id("lnk");
        sqlx::query(
            "INSERT INTO family_link_requests (id, user_id, inmate_id, number_e164, name, \
             relationship, video, status, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,'verifying',$8)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(&inmate.id)
        .bind(&number)
        .bind(name)
        .bind(relationship)
        .bind(i64::from(r.video))
        .bind(self.now_us())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.link_request(&id).await
    }

    /// A request by id (any account's: the caller checks whose it is).
    pub async fn link_request(&self, id: &str) -> Result<LinkRequest, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("link request", id))?;
        from_row(&row)
    }

    /// The requests of `user_id`, newest first.
    pub async fn link_requests(&self, user_id: &str) -> Result<Vec<LinkRequest>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE r.user_id = $1 ORDER BY r.created_at DESC, r.id DESC"
        ))
        .bind(user_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// A new code for request `id` (its hash, in force until `expires_at`): replaces any
    /// earlier one and counts a call. Conflict unless the request waits for verification.
    pub async fn link_new_code(
        &self,
        id: &str,
        code_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<LinkRequest, StoreError> {
        let done = sqlx::query(
            "UPDATE family_link_requests SET code_hash = $2, code_expires_at = $3, \
             calls = calls + 1 WHERE id = $1 AND status = 'verifying'",
        )
        .bind(id)
        .bind(code_hash)
        .bind(crate::db::to_micros(expires_at))
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "this request is not waiting for its number to be confirmed".into(),
            ));
        }
        self.link_request(id).await
    }

    /// A code keyed on request `id`'s call (its [`linking::code_hash`] is `keyed_hash`),
    /// judged and recorded in one transaction: the right code in time creates the contact
    /// (pending approval, video as asked) and binds it to the account; a wrong one is
    /// counted and the last allowed fails the request; any verdict but `Expired` uses up
    /// the code.
    pub async fn link_keyed(
        &self,
        id: &str,
        keyed_hash: &str,
        attempts: u32,
    ) -> Result<Keyed, StoreError> {
        let now = self.now_us();
        let lock = match self.db.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT user_id, inmate_id, number_e164, name, relationship, video, status, \
             code_hash, code_expires_at, wrong_codes FROM family_link_requests WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::not_found("link request", id))?;
        let status: String = row.try_get("status")?;
        let wrong: i64 = row.try_get("wrong_codes")?;
        let pending = Pending {
            verifying: status == "verifying",
            code_hash: row.try_get("code_hash")?,
            code_expires_at: row.try_get("code_expires_at")?,
            wrong_codes: u32::try_from(wrong).unwrap_or(u32::MAX),
        };
        let verdict = linking::judge(&pending, keyed_hash, now, attempts);
        match verdict {
            Keyed::Expired => return Ok(verdict),
            Keyed::Wrong { .. } | Keyed::Failed => {
                let next = if verdict == Keyed::Failed {
                    "failed"
                } else {
                    "verifying"
                };
                sqlx::query(
                    "UPDATE family_link_requests SET wrong_codes = wrong_codes + 1, status = $2, \
                     code_hash = NULL, code_expires_at = NULL, \
                     closed_at = CASE WHEN $2 = 'failed' THEN $3 ELSE closed_at END WHERE id = $1",
                )
                .bind(id)
                .bind(next)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Keyed::Verified => {
                let contact_id = new_id("con");
                let inmate_id: String = row.try_get("inmate_id")?;
                let number: String = row.try_get("number_e164")?;
                sqlx::query(
                    "INSERT INTO contacts (id, inmate_id, number_e164, name, relationship, status, \
                     privileged, video_allowed, decided_by, decided_at, created_at) \
                     VALUES ($1,$2,$3,$4,$5,'pending',0,$6,NULL,NULL,$7)",
                )
                .bind(&contact_id)
                .bind(&inmate_id)
                .bind(&number)
                .bind(row.try_get::<String, _>("name")?)
                .bind(row.try_get::<String, _>("relationship")?)
                .bind(row.try_get::<i64, _>("video")?)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    conflict_on_unique(e, "that number is already on this person's contact list")
                })?;
                sqlx::query(
                    "INSERT INTO family_contacts (user_id, contact_id, created_at) VALUES ($1,$2,$3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(row.try_get::<String, _>("user_id")?)
                .bind(&contact_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE family_link_requests SET status = 'submitted', contact_id = $2, \
                     verified_at = $3, code_hash = NULL, code_expires_at = NULL WHERE id = $1",
                )
                .bind(id)
                .bind(&contact_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(verdict)
    }

    /// The family withdraws request `id`: one waiting for verification closes; one whose
    /// contact is pending or approved also ends that contact (denied, "withdrawn by the
    /// family") and the account's binding to it. Conflict when nothing is left to withdraw.
    pub async fn link_withdraw(&self, id: &str) -> Result<LinkRequest, StoreError> {
        let now = self.now_us();
        let before = self.link_request(id).await?;
        let open = matches!(
            before.status,
            LinkStatus::PendingVerification | LinkStatus::PendingApproval | LinkStatus::Approved
        );
        if !open {
            return Err(StoreError::Conflict(
                "this request is closed already: there is nothing to withdraw".into(),
            ));
        }
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE family_link_requests SET status = 'withdrawn', closed_at = $2, \
             code_hash = NULL, code_expires_at = NULL \
             WHERE id = $1 AND status IN ('verifying', 'submitted')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "this request is closed already: there is nothing to withdraw".into(),
            ));
        }
        if let Some(contact) = &before.contact_id {
            sqlx::query(
                "UPDATE contacts SET status = 'denied', decided_by = $2, decided_at = $3, \
                 decision_reason = 'withdrawn by the family' WHERE id = $1 AND status <> 'denied'",
            )
            .bind(contact)
            .bind(&before.user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM family_contacts WHERE user_id = $1 AND contact_id = $2")
                .bind(&before.user_id)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.link_request(id).await
    }

    /// Once contact `contact_id` is approved, the family accounts bound to it may act in
    /// its inmate's facility (a new account has none); what they read there is still only
    /// what their approved contacts link them to.
    pub(super) async fn link_grant_facility(&self, contact_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_facilities (user_id, facility_id) \
             SELECT fc.user_id, i.facility_id FROM family_contacts fc \
             JOIN family_accounts fa ON fa.user_id = fc.user_id \
             JOIN contacts c ON c.id = fc.contact_id JOIN inmates i ON i.id = c.inmate_id \
             WHERE fc.contact_id = $1 ON CONFLICT DO NOTHING",
        )
        .bind(contact_id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Records why staff decided a contact as they did (`None`: they gave no reason).
    pub async fn set_contact_reason(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(r) = reason {
            text::NOTE.check("reason", r)?;
        }
        sqlx::query("UPDATE contacts SET decision_reason = $2 WHERE id = $1")
            .bind(id)
            .bind(reason)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}
