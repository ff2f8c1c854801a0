//! Facilities: time zone, calling hours, deposit limits, rate plan and deck.

use super::{conflict_on_unique, Store, StoreError};
use crate::db::from_micros;
use crate::money::Money;
use crate::policy::hours::{time_of_day, zone};
use crate::session::payer::PayerOrder;
use crate::text;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Facility {
    /// The facility code, e.g. `DEMO`; used in every path and record.
    pub id: String,
    pub name: String,
    pub time_zone: String,
    pub country_code: String,
    /// Which row of the rate-cap table applies (FCC 24-75 tiers).
    pub cap_category: String,
    pub calling_hours_start: String,
    pub calling_hours_end: String,
    pub deposit_max: Money,
    pub deposit_daily_max: Money,
    pub daily_call_limit: i64,
    pub rate_plan_id: Option<String>,
    pub rate_deck_id: Option<String>,
    pub recording_retention_days: i64,
    /// Which account pays first: the family's prepaid or the inmate's ([`PayerOrder`]).
    pub payer_order: PayerOrder,
    pub created_at: DateTime<Utc>,
}

/// What creating a facility takes; omitted fields get operator defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFacility {
    pub id: String,
    pub name: String,
    pub time_zone: String,
    #[serde(default = "default_country_code")]
    pub country_code: String,
    #[serde(default = "default_cap_category")]
    pub cap_category: String,
    #[serde(default = "default_hours_start")]
    pub calling_hours_start: String,
    #[serde(default = "default_hours_end")]
    pub calling_hours_end: String,
    pub deposit_max: Money,
    pub deposit_daily_max: Money,
    #[serde(default)]
    pub daily_call_limit: i64,
    #[serde(default = "default_retention")]
    pub recording_retention_days: i64,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilityPatch {
    pub name: Option<String>,
    pub time_zone: Option<String>,
    pub cap_category: Option<String>,
    pub calling_hours_start: Option<String>,
    pub calling_hours_end: Option<String>,
    pub deposit_max: Option<Money>,
    pub deposit_daily_max: Option<Money>,
    pub daily_call_limit: Option<i64>,
    pub rate_plan_id: Option<String>,
    pub rate_deck_id: Option<String>,
    pub recording_retention_days: Option<i64>,
    pub payer_order: Option<PayerOrder>,
}

fn default_country_code() -> String {
    "1".into()
}
fn default_cap_category() -> String {
    "prison".into()
}
fn default_hours_start() -> String {
    "07:00".into()
}
fn default_hours_end() -> String {
    "22:00".into()
}
fn default_retention() -> i64 {
    365
}

pub(super) const COLUMNS: &str =
    "id, name, time_zone, country_code, cap_category, calling_hours_start, \
    calling_hours_end, deposit_max_minor, deposit_daily_max_minor, daily_call_limit, \
    rate_plan_id, rate_deck_id, recording_retention_days, created_at, payer_order";

pub(super) fn from_row(r: &AnyRow) -> Result<Facility, sqlx::Error> {
    Ok(Facility {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        time_zone: r.try_get("time_zone")?,
        country_code: r.try_get("country_code")?,
        cap_category: r.try_get("cap_category")?,
        calling_hours_start: r.try_get("calling_hours_start")?,
        calling_hours_end: r.try_get("calling_hours_end")?,
        deposit_max: Money::from_minor(r.try_get("deposit_max_minor")?),
        deposit_daily_max: Money::from_minor(r.try_get("deposit_daily_max_minor")?),
        daily_call_limit: r.try_get("daily_call_limit")?,
        rate_plan_id: r.try_get("rate_plan_id")?,
        rate_deck_id: r.try_get("rate_deck_id")?,
        recording_retention_days: r.try_get("recording_retention_days")?,
        payer_order: {
            let stored: String = r.try_get("payer_order")?;
            PayerOrder::parse(&stored).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "payer_order".into(),
                source: format!("unknown payer order '{stored}'").into(),
            })?
        },
        created_at: from_micros(r.try_get("created_at")?),
    })
}

/// The retention periods a facility may have: one day to a hundred years (the purge's
/// cutoff, `days` in microseconds, then stays far inside `BIGINT`).
pub const RETENTION_DAYS: std::ops::RangeInclusive<i64> = 1..=36_500;

/// The lowest per-deposit limit a facility may set: $50 (`docs/behaviour.md`, "Money").
/// A low cap forces a family into several deposits to fund one month of calls. The daily
/// limit is at least the per-deposit one, or the per-deposit limit could never be reached.
pub(super) fn min_deposit_max() -> Money {
    Money::from_minor(50 * crate::money::MINOR_PER_UNIT)
}

/// Checks the fields every facility must get right.
fn validate(f: &mut Facility) -> Result<(), StoreError> {
    let code_ok = !f.id.is_empty()
        && f.id.len() <= 32
        && f.id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !code_ok {
        return Err(StoreError::invalid(
            "id",
            "1-32 letters, digits, '-' or '_'",
        ));
    }
    f.name = text::NAME.accept_required("name", &f.name)?.to_owned();
    for (field, value) in [
        ("time_zone", &f.time_zone),
        ("cap_category", &f.cap_category),
        ("calling_hours_start", &f.calling_hours_start),
        ("calling_hours_end", &f.calling_hours_end),
        ("country_code", &f.country_code),
    ] {
        text::SETTING.check(field, value)?;
    }
    zone(&f.time_zone).map_err(|e| StoreError::invalid("time_zone", e.to_string()))?;
    time_of_day(&f.calling_hours_start)
        .map_err(|e| StoreError::invalid("calling_hours_start", e.to_string()))?;
    time_of_day(&f.calling_hours_end)
        .map_err(|e| StoreError::invalid("calling_hours_end", e.to_string()))?;
    if f.country_code.is_empty()
        || f.country_code.len() > 3
        || !f.country_code.bytes().all(|b| b.is_ascii_digit())
        || f.country_code.starts_with('0')
    {
        return Err(StoreError::invalid(
            "country_code",
            "1-3 digits, not starting with 0",
        ));
    }
    if f.deposit_max < min_deposit_max() {
        return Err(StoreError::invalid(
            "deposit_max",
            format!(
                "must be at least {}: a family must be able to deposit $50 at once",
                min_deposit_max()
            ),
        ));
    }
    if f.deposit_daily_max < f.deposit_max {
        return Err(StoreError::invalid(
            "deposit_daily_max",
            format!("must be at least deposit_max ({})", f.deposit_max),
        ));
    }
    if f.daily_call_limit < 0 {
        return Err(StoreError::invalid("daily_call_limit", "must be >= 0"));
    }
    if !RETENTION_DAYS.contains(&f.recording_retention_days) {
        return Err(StoreError::invalid(
            "recording_retention_days",
            format!(
                "must be {} to {} days",
                RETENTION_DAYS.start(),
                RETENTION_DAYS.end()
            ),
        ));
    }
    f.cap_category
        .parse::<crate::rating::FacilityCapCategory>()
        .map_err(|e| StoreError::invalid("cap_category", e.to_string()))?;
    Ok(())
}

impl Store {
    /// Creates a facility and its system ledger accounts.
    pub async fn create_facility(&self, n: NewFacility) -> Result<Facility, StoreError> {
        let mut f = Facility {
            id: n.id,
            name: n.name,
            time_zone: n.time_zone,
            country_code: n.country_code,
            cap_category: n.cap_category,
            calling_hours_start: n.calling_hours_start,
            calling_hours_end: n.calling_hours_end,
            deposit_max: n.deposit_max,
            deposit_daily_max: n.deposit_daily_max,
            daily_call_limit: n.daily_call_limit,
            rate_plan_id: None,
            rate_deck_id: None,
            recording_retention_days: n.recording_retention_days,
            // The default; a facility changes it with an update.
            payer_order: PayerOrder::default(),
            created_at: self.clock.wall(),
        };
        validate(&mut f)?;
        sqlx::query(&format!(
            "INSERT INTO facilities ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
        ))
        .bind(&f.id)
        .bind(&f.name)
        .bind(&f.time_zone)
        .bind(&f.country_code)
        .bind(&f.cap_category)
        .bind(&f.calling_hours_start)
        .bind(&f.calling_hours_end)
        .bind(f.deposit_max.to_minor())
        .bind(f.deposit_daily_max.to_minor())
        .bind(f.daily_call_limit)
        .bind(&f.rate_plan_id)
        .bind(&f.rate_deck_id)
        .bind(f.recording_retention_days)
        .bind(self.now_us())
        .bind(f.payer_order.as_str())
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, format!("facility '{}' already exists", f.id)))?;
        self.ledger.ensure_system_accounts(&f.id).await?;
        Ok(f)
    }

    pub async fn facility(&self, id: &str) -> Result<Facility, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM facilities WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("facility", id))?;
        Ok(from_row(&row)?)
    }

    pub async fn facilities(&self) -> Result<Vec<Facility>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM facilities ORDER BY id"))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Applies `p`; a rate plan is checked against the facility's cap before it is set.
    pub async fn update_facility(
        &self,
        id: &str,
        p: FacilityPatch,
    ) -> Result<Facility, StoreError> {
        let mut f = self.facility(id).await?;
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = p.$field { f.$field = v; } )* };
        }
        set!(
            name,
            time_zone,
            cap_category,
            calling_hours_start,
            calling_hours_end,
            deposit_max,
            deposit_daily_max,
            daily_call_limit,
            recording_retention_days,
            payer_order
        );
        if let Some(plan) = p.rate_plan_id {
            f.rate_plan_id = Some(plan);
        }
        if let Some(deck) = p.rate_deck_id {
            self.rate_deck_summary(&deck).await?;
            f.rate_deck_id = Some(deck);
        }
        validate(&mut f)?;
        if let Some(plan_id) = &f.rate_plan_id {
            self.check_plan_for_facility(plan_id, &f.cap_category)
                .await?;
        }
        sqlx::query(
            "UPDATE facilities SET name=$2, time_zone=$3, cap_category=$4, calling_hours_start=$5, \
             calling_hours_end=$6, deposit_max_minor=$7, deposit_daily_max_minor=$8, \
             daily_call_limit=$9, rate_plan_id=$10, rate_deck_id=$11, recording_retention_days=$12, \
             payer_order=$13 WHERE id=$1",
        )
        .bind(&f.id)
        .bind(&f.name)
        .bind(&f.time_zone)
        .bind(&f.cap_category)
        .bind(&f.calling_hours_start)
        .bind(&f.calling_hours_end)
        .bind(f.deposit_max.to_minor())
        .bind(f.deposit_daily_max.to_minor())
        .bind(f.daily_call_limit)
        .bind(&f.rate_plan_id)
        .bind(&f.rate_deck_id)
        .bind(f.recording_retention_days)
        .bind(f.payer_order.as_str())
        .execute(self.db.pool())
        .await?;
        Ok(f)
    }
}
