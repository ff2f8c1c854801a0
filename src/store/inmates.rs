//! Inmates: booking (which opens the debit account), status, calling ID and PIN, the
//! inmate's PIN lock, release.
//!
//! An inmate is named on a handset by the calling ID and PIN together ([`crate::policy::pin`]):
//! [`Store::inmate_by_calling_id`] finds the inmate, [`Store::pin_matches`] compares the
//! PIN's keyed hash in constant time (and replaces a pre-calling-ID hash at its first
//! right entry).

use super::{conflict_on_unique, new_id, Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::ledger::{AccountKind, Ledger};
use crate::policy::lockout::{Lock, LockState};
use crate::policy::pin;
use crate::text;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InmateStatus {
    Active,
    Suspended,
    Released,
}

impl InmateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InmateStatus::Active => "active",
            InmateStatus::Suspended => "suspended",
            InmateStatus::Released => "released",
        }
    }

    pub(super) fn parse(s: &str) -> Result<InmateStatus, StoreError> {
        match s {
            "active" => Ok(InmateStatus::Active),
            "suspended" => Ok(InmateStatus::Suspended),
            "released" => Ok(InmateStatus::Released),
            other => Err(StoreError::Corrupt {
                what: "inmate status",
                message: other.to_string(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Inmate {
    pub id: String,
    pub facility_id: String,
    pub booking_number: String,
    pub first_name: String,
    pub last_name: String,
    pub status: InmateStatus,
    /// The number keyed before the PIN (facility-issued, unique in the facility). Not a
    /// secret, but no roster item either: admins, investigators and the inmate's own kiosk
    /// see it.
    /// `None` only for an inmate booked before calling IDs existed, until the next start
    /// gives one ([`Store::assign_calling_ids`]).
    pub calling_id: Option<String>,
    /// Whether a PIN is set (the PIN itself is never stored or shown).
    pub has_pin: bool,
    /// While in the future, calls naming this inmate are refused (too many failed entries).
    pub locked_until: Option<DateTime<Utc>>,
    pub account_id: String,
    pub booked_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    /// Where the inmate lives: the visit stations of this unit are the ones the inmate's
    /// visits use (`None`: any station of the facility).
    pub housing_unit: Option<String>,
}

/// What booking an inmate takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Booking {
    pub booking_number: String,
    pub first_name: String,
    pub last_name: String,
    /// Optional PIN set at booking.
    #[serde(default)]
    pub pin: Option<String>,
    /// The calling ID staff give; omitted, a random free one is drawn.
    #[serde(default)]
    pub calling_id: Option<String>,
    /// The housing unit the inmate is assigned to (visits use its stations).
    #[serde(default)]
    pub housing_unit: Option<String>,
}

pub(super) const COLUMNS: &str = "id, facility_id, booking_number, first_name, last_name, status, \
    calling_id, pin_hash, pin_lookup, locked_until, account_id, booked_at, released_at, \
    housing_unit";

/// Random draws before giving up on finding a free calling ID.
const CALLING_ID_DRAWS: usize = 64;

/// An inmate's PIN as stored (keyed hashes; never the digits).
#[derive(Clone, Default)]
pub(crate) struct StoredPin {
    /// The calling-ID form.
    pub hash: Option<String>,
    /// The pre-calling-ID form, replaced by `hash` at the first right entry.
    pub lookup: Option<String>,
}

impl StoredPin {
    pub(crate) fn from_row(r: &AnyRow) -> Result<StoredPin, StoreError> {
        Ok(StoredPin {
            hash: r.try_get("pin_hash")?,
            lookup: r.try_get("pin_lookup")?,
        })
    }
}

/// Digits a PIN comparison may be made on. No length rule here: a PIN set under other
/// length rules still works.
fn pin_shaped(entered: &str) -> bool {
    !entered.is_empty() && entered.len() <= 32 && entered.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn from_row(r: &AnyRow) -> Result<Inmate, StoreError> {
    let status: String = r.try_get("status")?;
    let pin_hash: Option<String> = r.try_get("pin_hash")?;
    let pin_lookup: Option<String> = r.try_get("pin_lookup")?;
    let locked: Option<i64> = r.try_get("locked_until")?;
    let released: Option<i64> = r.try_get("released_at")?;
    Ok(Inmate {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        booking_number: r.try_get("booking_number")?,
        first_name: r.try_get("first_name")?,
        last_name: r.try_get("last_name")?,
        status: InmateStatus::parse(&status)?,
        calling_id: r.try_get("calling_id")?,
        has_pin: pin_hash.is_some() || pin_lookup.is_some(),
        locked_until: locked.map(from_micros),
        account_id: r.try_get("account_id")?,
        booked_at: from_micros(r.try_get("booked_at")?),
        released_at: released.map(from_micros),
        housing_unit: r.try_get("housing_unit")?,
    })
}

/// A booking's text as it is kept: names and the booking number without the white space
/// around them ([`crate::text`], "Surrounding white space").
struct BookingText<'b> {
    booking_number: &'b str,
    first_name: &'b str,
    last_name: &'b str,
    housing_unit: Option<&'b str>,
}

/// Checks a booking and returns its text as it is kept.
fn validate<'b>(
    b: &'b Booking,
    rules: &pin::CredentialRules,
) -> Result<BookingText<'b>, StoreError> {
    let kept = BookingText {
        booking_number: text::BOOKING_NUMBER
            .accept_required("booking_number", &b.booking_number)?,
        first_name: text::NAME.accept_required("first_name", &b.first_name)?,
        last_name: text::NAME.accept_required("last_name", &b.last_name)?,
        housing_unit: b
            .housing_unit
            .as_deref()
            .map(|u| text::NAME.accept_required("housing_unit", u))
            .transpose()?,
    };
    if let Some(p) = &b.pin {
        rules
            .validate_pin(p)
            .map_err(|e| StoreError::invalid("pin", e.to_string()))?;
    }
    if let Some(id) = &b.calling_id {
        rules
            .validate_calling_id(id)
            .map_err(|e| StoreError::invalid("calling_id", e.to_string()))?;
    }
    Ok(kept)
}

impl Store {
    /// Books an inmate into `facility_id` and opens the inmate's debit account, in one
    /// database transaction: there is never an inmate without an account. The calling ID
    /// is the one given, or a random free one.
    pub async fn book_inmate(&self, facility_id: &str, b: Booking) -> Result<Inmate, StoreError> {
        let kept = validate(&b, &self.credentials)?;
        self.facility(facility_id).await?;
        let calling_id = match &b.calling_id {
            Some(id) => id.clone(),
            None => self.free_calling_id(facility_id).await?,
        };
        let now = self.clock.wall();
        let id = new_id("inm");
        let hash = b
            .pin
            .as_deref()
            .map(|p| pin::pin_hash(self.pin_pepper.as_bytes(), facility_id, &calling_id, p));
        let mut tx = self.db.begin().await?;
        let name = format!(
            "{} {} ({})",
            kept.first_name, kept.last_name, kept.booking_number
        );
        let account_id = Ledger::open_account_in(
            &mut tx,
            AccountKind::Inmate,
            Some(facility_id),
            Some(&id),
            &name,
            now,
        )
        .await?;
        sqlx::query(&format!(
            "INSERT INTO inmates ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,'active',$6,$7,NULL,NULL,$8,$9,NULL,$10)"
        ))
        .bind(&id)
        .bind(facility_id)
        .bind(kept.booking_number)
        .bind(kept.first_name)
        .bind(kept.last_name)
        .bind(&calling_id)
        .bind(&hash)
        .bind(&account_id)
        .bind(to_micros(now))
        .bind(kept.housing_unit)
        .execute(&mut tx)
        .await
        .map_err(|e| {
            conflict_on_unique(
                e,
                "booking number or calling ID already in use in this facility",
            )
        })?;
        tx.commit().await?;
        tracing::info!(inmate = %id, facility = facility_id, "inmate booked");
        self.inmate(&id).await
    }

    /// A random calling ID no inmate of the facility has (random, not sequential, so IDs
    /// cannot be enumerated from one's own).
    async fn free_calling_id(&self, facility_id: &str) -> Result<String, StoreError> {
        for _ in 0..CALLING_ID_DRAWS {
            let candidate = {
                let mut rng = rand::thread_rng();
                self.credentials.calling_id_from(|n| rng.gen_range(0..n))
            };
            let taken =
                sqlx::query("SELECT 1 FROM inmates WHERE facility_id = $1 AND calling_id = $2")
                    .bind(facility_id)
                    .bind(&candidate)
                    .fetch_optional(self.db.pool())
                    .await?;
            if taken.is_none() {
                return Ok(candidate);
            }
        }
        Err(StoreError::Conflict(format!(
            "no free calling ID found in facility {facility_id}: raise security.calling_id_digits"
        )))
    }

    /// Gives every inmate without a calling ID (booked before calling IDs existed) a
    /// random free one; returns how many. The data step of migration 0005, run at every
    /// start after the SQL migrations (a no-op once done).
    pub async fn assign_calling_ids(&self) -> Result<u64, StoreError> {
        let rows =
            sqlx::query("SELECT id, facility_id FROM inmates WHERE calling_id IS NULL ORDER BY id")
                .fetch_all(self.db.pool())
                .await?;
        let mut assigned = 0;
        for r in &rows {
            let (id, facility_id): (String, String) = (r.try_get("id")?, r.try_get("facility_id")?);
            for attempt in 0.. {
                let candidate = self.free_calling_id(&facility_id).await?;
                let done = sqlx::query(
                    "UPDATE inmates SET calling_id = $2 WHERE id = $1 AND calling_id IS NULL",
                )
                .bind(&id)
                .bind(&candidate)
                .execute(self.db.pool())
                .await;
                match done {
                    Ok(d) => {
                        assigned += d.rows_affected();
                        break;
                    }
                    // Another node drew the same ID for another inmate meanwhile: draw again.
                    Err(e) if crate::db::is_unique_violation(&e) && attempt < 3 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if assigned > 0 {
            tracing::info!(
                assigned,
                "calling IDs given to inmates booked before they existed"
            );
        }
        Ok(assigned)
    }

    pub async fn inmate(&self, id: &str) -> Result<Inmate, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM inmates WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("inmate", id))?;
        from_row(&row)
    }

    pub async fn inmate_by_booking(
        &self,
        facility_id: &str,
        booking: &str,
    ) -> Result<Inmate, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM inmates WHERE facility_id = $1 AND booking_number = $2"
        ))
        .bind(facility_id)
        .bind(booking)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("inmate", booking))?;
        from_row(&row)
    }

    pub async fn inmates(&self, facility_id: &str) -> Result<Vec<Inmate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM inmates WHERE facility_id = $1 ORDER BY booking_number"
        ))
        .bind(facility_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Suspends or reinstates an inmate; a released inmate stays released.
    pub async fn set_inmate_status(
        &self,
        id: &str,
        status: InmateStatus,
    ) -> Result<Inmate, StoreError> {
        if status == InmateStatus::Released {
            return Err(StoreError::invalid(
                "status",
                "use release to release an inmate",
            ));
        }
        let done =
            sqlx::query("UPDATE inmates SET status = $2 WHERE id = $1 AND status <> 'released'")
                .bind(id)
                .bind(status.as_str())
                .execute(self.db.pool())
                .await?;
        if done.rows_affected() == 0 {
            let i = self.inmate(id).await?;
            return Err(StoreError::Conflict(format!(
                "inmate {} is {}",
                i.id,
                i.status.as_str()
            )));
        }
        self.inmate(id).await
    }

    /// Assigns an inmate to a housing unit (`None`: to none); the unit is a name, as the
    /// facility's stations name theirs.
    pub async fn set_housing_unit(
        &self,
        id: &str,
        unit: Option<&str>,
    ) -> Result<Inmate, StoreError> {
        let unit = unit
            .map(|u| text::NAME.accept_required("housing_unit", u))
            .transpose()?;
        let done = sqlx::query("UPDATE inmates SET housing_unit = $2 WHERE id = $1")
            .bind(id)
            .bind(unit)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("inmate", id));
        }
        self.inmate(id).await
    }

    /// Sets (or replaces) an inmate's PIN and clears a lockout.
    pub async fn set_pin(&self, id: &str, new_pin: &str) -> Result<Inmate, StoreError> {
        self.set_credentials(id, new_pin, None).await
    }

    /// Sets an inmate's PIN, and with `calling_id` their calling ID too (the PIN's hash
    /// includes the ID, so the two change together); clears the inmate's PIN lock and
    /// restarts the failure count. Two inmates may share a PIN.
    pub async fn set_credentials(
        &self,
        id: &str,
        new_pin: &str,
        calling_id: Option<&str>,
    ) -> Result<Inmate, StoreError> {
        self.credentials
            .validate_pin(new_pin)
            .map_err(|e| StoreError::invalid("pin", e.to_string()))?;
        if let Some(c) = calling_id {
            self.credentials
                .validate_calling_id(c)
                .map_err(|e| StoreError::invalid("calling_id", e.to_string()))?;
        }
        let inmate = self.inmate(id).await?;
        let calling_id = match (calling_id, &inmate.calling_id) {
            (Some(c), _) => c.to_string(),
            (None, Some(c)) => c.clone(),
            (None, None) => self.free_calling_id(&inmate.facility_id).await?,
        };
        let hash = pin::pin_hash(
            self.pin_pepper.as_bytes(),
            &inmate.facility_id,
            &calling_id,
            new_pin,
        );
        sqlx::query(
            "UPDATE inmates SET calling_id = $2, pin_hash = $3, pin_lookup = NULL, \
             locked_until = NULL, pin_lock_level = 0, pin_count_from = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(&calling_id)
        .bind(&hash)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, "that calling ID is in use in this facility"))?;
        self.inmate(id).await
    }

    /// The inmate of `facility_id` whose calling ID `entered` is (`None` for anything that
    /// is not one, including an empty entry). Any length is looked up: IDs issued before
    /// `security.calling_id_digits` changed keep working.
    pub async fn inmate_by_calling_id(
        &self,
        facility_id: &str,
        entered: &str,
    ) -> Result<Option<Inmate>, StoreError> {
        if entered.is_empty() || entered.len() > 20 || !entered.bytes().all(|b| b.is_ascii_digit())
        {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM inmates WHERE facility_id = $1 AND calling_id = $2"
        ))
        .bind(facility_id)
        .bind(entered)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Whether `entered` is the PIN of `inmate` (keyed hash of facility, calling ID and
    /// PIN, compared in constant time). A PIN still stored in the pre-calling-ID form is
    /// compared in that form and, when right, replaced by the new one.
    pub async fn pin_matches(&self, inmate: &Inmate, entered: &str) -> Result<bool, StoreError> {
        if inmate.calling_id.is_none() || !pin_shaped(entered) {
            return Ok(false);
        }
        let row = sqlx::query("SELECT pin_hash, pin_lookup FROM inmates WHERE id = $1")
            .bind(&inmate.id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("inmate", &inmate.id))?;
        let stored = StoredPin::from_row(&row)?;
        self.pin_matches_stored(inmate, &stored, entered).await
    }

    /// [`Store::pin_matches`] against the PIN as read with the inmate (the set-up path
    /// reads both in one statement: [`Store::pin_entry_facts`]).
    pub(crate) async fn pin_matches_stored(
        &self,
        inmate: &Inmate,
        stored: &StoredPin,
        entered: &str,
    ) -> Result<bool, StoreError> {
        let Some(calling_id) = &inmate.calling_id else {
            return Ok(false);
        };
        if !pin_shaped(entered) {
            return Ok(false);
        }
        let pepper = self.pin_pepper.as_bytes();
        let fid = &inmate.facility_id;
        if let Some(stored) = &stored.hash {
            return Ok(pin::matches(
                stored,
                &pin::pin_hash(pepper, fid, calling_id, entered),
            ));
        }
        let Some(legacy) = &stored.lookup else {
            return Ok(false);
        };
        if !pin::matches(legacy, &pin::legacy_hash(pepper, fid, entered)) {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE inmates SET pin_hash = $2, pin_lookup = NULL WHERE id = $1 AND pin_lookup = $3",
        )
        .bind(&inmate.id)
        .bind(pin::pin_hash(pepper, fid, calling_id, entered))
        .bind(legacy)
        .execute(self.db.pool())
        .await?;
        tracing::info!(inmate = %inmate.id, "PIN hash moved to the calling-ID form");
        Ok(true)
    }

    /// The inmate's PIN lock as stored.
    pub async fn inmate_pin_lock(&self, id: &str) -> Result<LockState, StoreError> {
        self.pin_lock_state(super::PinLocked::Inmate, id).await
    }

    /// Locks the inmate's PIN entry as `lock` says, unless a lock already runs at `now`
    /// (another node's); whether this call set it. Failures before its end are forgotten.
    pub async fn lock_inmate_pin(
        &self,
        id: &str,
        lock: Lock,
        now: chrono::DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.set_pin_lock(super::PinLocked::Inmate, id, lock, now)
            .await
    }

    /// Clears the inmate's PIN lock (staff) and restarts the failure count.
    pub async fn unlock_inmate_pin(&self, id: &str) -> Result<Inmate, StoreError> {
        self.clear_pin_lock(super::PinLocked::Inmate, id).await?;
        self.inmate(id).await
    }

    /// Releases an inmate: the ledger refunds the balance and closes the account, then the
    /// inmate is marked released. Idempotent under `key` (a retry finishes a release that
    /// stopped between the two steps).
    pub async fn release_inmate(
        &self,
        key: &crate::ledger::RequestKey,
        id: &str,
    ) -> Result<(Inmate, crate::ledger::Release), StoreError> {
        let inmate = self.inmate(id).await?;
        let release = self.ledger.release(key, &inmate.account_id).await?;
        sqlx::query("UPDATE inmates SET status = 'released', released_at = COALESCE(released_at, $2) WHERE id = $1")
            .bind(id)
            .bind(self.now_us())
            .execute(self.db.pool())
            .await?;
        tracing::info!(inmate = %id, "inmate released");
        Ok((self.inmate(id).await?, release))
    }
}
