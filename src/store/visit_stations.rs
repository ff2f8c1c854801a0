//! What video visits are booked against: a facility's visiting rules, its visit stations
//! (kiosks per housing unit, each with a capacity), and who a family or kiosk user is for
//! visits (the contacts a family user visits as; the station a kiosk user is).
//!
//! The rules are checked here when they are written ([`VisitingRules::schedule`]) and
//! again when they are read, so a booking never applies rules that do not parse.

use super::{conflict_on_unique, flag, new_id, Role, Store, StoreError};
use crate::db::from_micros;
use crate::text;
use crate::visit::rules::{Approval, Schedule, VisitingRules, Window};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// The most visits one station hosts at a time.
pub const MAX_STATION_CAPACITY: i64 = 64;

/// A visit station: a kiosk, or a room of them, in a housing unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VisitStation {
    pub id: String,
    pub facility_id: String,
    pub name: String,
    pub housing_unit: String,
    /// How many visits it hosts at the same time.
    pub capacity: i64,
    /// A retired station takes no new visits; its visits keep naming it.
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// What adding a station takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVisitStation {
    pub name: String,
    pub housing_unit: String,
    #[serde(default = "one")]
    pub capacity: i64,
}

fn one() -> i64 {
    1
}

/// A partial update of a station; `None` leaves a field as it is. Lowering the capacity
/// keeps the visits booked: it refuses new ones until fewer than the new capacity share a
/// time.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitStationPatch {
    pub name: Option<String>,
    pub housing_unit: Option<String>,
    pub capacity: Option<i64>,
    pub active: Option<bool>,
}

/// What a token is for, beyond its role and facilities: a family user's contacts, a kiosk
/// user's station. `None` leaves what the user has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBinding {
    pub contacts: Option<Vec<String>>,
    pub station_id: Option<String>,
}

const STATION_COLUMNS: &str = "id, facility_id, name, housing_unit, capacity, active, created_at";

fn station_from_row(r: &AnyRow) -> Result<VisitStation, StoreError> {
    Ok(VisitStation {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        name: r.try_get("name")?,
        housing_unit: r.try_get("housing_unit")?,
        capacity: r.try_get("capacity")?,
        active: flag(r.try_get("active")?),
        created_at: from_micros(r.try_get("created_at")?),
    })
}

fn check_capacity(capacity: i64) -> Result<(), StoreError> {
    if (1..=MAX_STATION_CAPACITY).contains(&capacity) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "capacity",
            format!("1 to {MAX_STATION_CAPACITY} visits at a time"),
        ))
    }
}

fn corrupt(message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: "visiting rules",
        message: message.to_string(),
    }
}

fn rules_from_row(r: &AnyRow) -> Result<VisitingRules, StoreError> {
    let approval: String = r.try_get("approval")?;
    let windows: String = r.try_get("windows")?;
    let lengths: String = r.try_get("slot_lengths")?;
    let number = |name: &str| -> Result<u32, StoreError> {
        let v: i64 = r.try_get(name)?;
        u32::try_from(v).map_err(corrupt)
    };
    Ok(VisitingRules {
        approval: Approval::parse(&approval).ok_or_else(|| corrupt(&approval))?,
        windows: serde_json::from_str::<Vec<Window>>(&windows).map_err(corrupt)?,
        slot_lengths_minutes: serde_json::from_str(&lengths).map_err(corrupt)?,
        start_step_minutes: number("start_step_minutes")?,
        min_notice_minutes: number("min_notice_minutes")?,
        max_days_ahead: number("max_days_ahead")?,
        visits_per_week: number("visits_per_week")?,
    })
}

impl Store {
    /// A facility's visiting rules, checked; `None` when it has none (it takes no visits).
    pub async fn visiting_rules(&self, facility_id: &str) -> Result<Option<Schedule>, StoreError> {
        let row = sqlx::query(
            "SELECT approval, windows, slot_lengths, start_step_minutes, min_notice_minutes, \
             max_days_ahead, visits_per_week FROM visiting_rules WHERE facility_id = $1",
        )
        .bind(facility_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let rules = rules_from_row(&row)?;
        rules.schedule().map(Some).map_err(corrupt)
    }

    /// Sets a facility's visiting rules (all of them: what is left out takes its default).
    /// Visits already booked stay as they are.
    pub async fn set_visiting_rules(
        &self,
        facility_id: &str,
        rules: VisitingRules,
    ) -> Result<Schedule, StoreError> {
        let schedule = rules
            .schedule()
            .map_err(|e| StoreError::invalid(e.field, e.message))?;
        self.facility(facility_id).await?;
        let windows = serde_json::to_string(&rules.windows).map_err(corrupt)?;
        let lengths = serde_json::to_string(&rules.slot_lengths_minutes).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO visiting_rules (facility_id, approval, windows, slot_lengths, \
             start_step_minutes, min_notice_minutes, max_days_ahead, visits_per_week, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (facility_id) DO UPDATE SET \
             approval = excluded.approval, windows = excluded.windows, \
             slot_lengths = excluded.slot_lengths, \
             start_step_minutes = excluded.start_step_minutes, \
             min_notice_minutes = excluded.min_notice_minutes, \
             max_days_ahead = excluded.max_days_ahead, \
             visits_per_week = excluded.visits_per_week, updated_at = excluded.updated_at",
        )
        .bind(facility_id)
        .bind(rules.approval.as_str())
        .bind(windows)
        .bind(lengths)
        .bind(i64::from(rules.start_step_minutes))
        .bind(i64::from(rules.min_notice_minutes))
        .bind(i64::from(rules.max_days_ahead))
        .bind(i64::from(rules.visits_per_week))
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        Ok(schedule)
    }

    /// Removes a facility's visiting rules: it takes no new visits. Visits already booked
    /// stay.
    pub async fn delete_visiting_rules(&self, facility_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM visiting_rules WHERE facility_id = $1")
            .bind(facility_id)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found(
                "visiting rules of facility",
                facility_id,
            ));
        }
        Ok(())
    }

    pub async fn add_visit_station(
        &self,
        facility_id: &str,
        n: NewVisitStation,
    ) -> Result<VisitStation, StoreError> {
        let name = text::NAME.accept_required("name", &n.name)?;
        let unit = text::NAME.accept_required("housing_unit", &n.housing_unit)?;
        check_capacity(n.capacity)?;
        self.facility(facility_id).await?;
        let id = new_id("vst");
        sqlx::query(&format!(
            "INSERT INTO visit_stations ({STATION_COLUMNS}) VALUES ($1,$2,$3,$4,$5,1,$6)"
        ))
        .bind(&id)
        .bind(facility_id)
        .bind(name)
        .bind(unit)
        .bind(n.capacity)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, format!("a station named {name} exists already")))?;
        self.visit_station(&id).await
    }

    pub async fn visit_station(&self, id: &str) -> Result<VisitStation, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {STATION_COLUMNS} FROM visit_stations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("visit station", id))?;
        station_from_row(&row)
    }

    /// A facility's stations, by housing unit and name (retired ones too).
    pub async fn visit_stations(&self, facility_id: &str) -> Result<Vec<VisitStation>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STATION_COLUMNS} FROM visit_stations WHERE facility_id = $1 \
             ORDER BY housing_unit, name, id"
        ))
        .bind(facility_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(station_from_row).collect()
    }

    pub async fn update_visit_station(
        &self,
        id: &str,
        p: VisitStationPatch,
    ) -> Result<VisitStation, StoreError> {
        let mut s = self.visit_station(id).await?;
        if let Some(name) = &p.name {
            s.name = text::NAME.accept_required("name", name)?.to_string();
        }
        if let Some(unit) = &p.housing_unit {
            s.housing_unit = text::NAME
                .accept_required("housing_unit", unit)?
                .to_string();
        }
        if let Some(c) = p.capacity {
            check_capacity(c)?;
            s.capacity = c;
        }
        if let Some(a) = p.active {
            s.active = a;
        }
        sqlx::query(
            "UPDATE visit_stations SET name = $2, housing_unit = $3, capacity = $4, active = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(&s.name)
        .bind(&s.housing_unit)
        .bind(s.capacity)
        .bind(i64::from(s.active))
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, format!("a station named {} exists already", s.name)))?;
        Ok(s)
    }

    /// The contacts a family user visits as.
    pub async fn family_contacts(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact_id FROM family_contacts WHERE user_id = $1 ORDER BY contact_id",
        )
        .bind(user_id)
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("contact_id"))
            .collect::<Result<_, _>>()?)
    }

    /// The station a kiosk user is, if any.
    pub async fn kiosk_station(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT station_id FROM kiosk_stations WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("station_id")).transpose()?)
    }

    /// Checks a token's binding against its role and facilities before anything is
    /// written: contacts for a family user, a station for a kiosk user, each in one of
    /// the token's facilities.
    pub(super) async fn check_binding(
        &self,
        role: Role,
        facilities: &[String],
        b: &TokenBinding,
    ) -> Result<(), StoreError> {
        let within = |f: &str| facilities.iter().any(|x| x == f);
        if let Some(contacts) = &b.contacts {
            if role != Role::Family {
                return Err(StoreError::invalid(
                    "contacts",
                    "only a family user visits as contacts",
                ));
            }
            for c in contacts {
                let contact = self.contact(c).await?;
                let inmate = self.inmate(&contact.inmate_id).await?;
                if !within(&inmate.facility_id) {
                    return Err(StoreError::invalid(
                        "contacts",
                        format!(
                            "contact {c} is of facility {}, not one of the token's",
                            inmate.facility_id
                        ),
                    ));
                }
            }
        }
        if let Some(station) = &b.station_id {
            if role != Role::Kiosk {
                return Err(StoreError::invalid(
                    "station_id",
                    "only a kiosk user is a station",
                ));
            }
            let s = self.visit_station(station).await?;
            if !within(&s.facility_id) {
                return Err(StoreError::invalid(
                    "station_id",
                    format!(
                        "station {station} is of facility {}, not one of the token's",
                        s.facility_id
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Writes a user's binding in the token's transaction: what is given replaces what the
/// user had; what is not given stays.
pub(super) async fn write_binding(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    b: &TokenBinding,
    now: i64,
) -> Result<(), StoreError> {
    if let Some(contacts) = &b.contacts {
        sqlx::query("DELETE FROM family_contacts WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        for c in contacts {
            sqlx::query(
                "INSERT INTO family_contacts (user_id, contact_id, created_at) VALUES ($1,$2,$3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(c)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
    }
    if let Some(station) = &b.station_id {
        sqlx::query(
            "INSERT INTO kiosk_stations (user_id, station_id, created_at) VALUES ($1,$2,$3) \
             ON CONFLICT (user_id) DO UPDATE SET station_id = excluded.station_id, \
             created_at = excluded.created_at",
        )
        .bind(user_id)
        .bind(station)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
