//! Video visits as booked: the `visits` table and its occupancy rows, one owner.
//!
//! A booking runs the rules of [`crate::visit::rules`] over facts read first (the inmate,
//! the contact, the facility's zone and rules), then claims its places in the database in
//! the transaction that inserts the visit, each claim an `INSERT ... ON CONFLICT DO
//! NOTHING` on a unique key, so that whatever races it (another task, another node on the
//! same PostgreSQL) at most one request gets a place and the other is told which place was
//! taken. The claims, always in this order (so two bookings never wait on each other in a
//! circle):
//!
//! 1. the inmate's time: one row per five-minute cell (`visit_inmate_cells`, key inmate
//!    and cell); a cell taken is [`Refusal::InmateDoubleBooked`];
//! 2. a place in the inmate's week (`visit_week_places`, key inmate, week and place below
//!    the limit, and only while fewer rows than the limit exist): none left is
//!    [`Refusal::WeeklyLimitReached`];
//! 3. a station place per cell (`visit_station_cells`, key station, cell and place below
//!    the capacity, and only while fewer rows than the capacity share the cell): the
//!    station asked for, or the first of the inmate's housing unit with room; none is
//!    [`Refusal::StationFull`] / [`Refusal::NoStationFree`].
//!
//! On PostgreSQL a claim whose key another open transaction holds waits for it: taken if
//! that one commits, free if it rolls back. On SQLite the writers take turns in the
//! process ([`crate::db::Db::write_turn`]) and in the file (`BEGIN IMMEDIATE`). A denied
//! or cancelled visit deletes its claims in the transaction that changes its status. A
//! status changes only from the status it was read in (`UPDATE ... WHERE status = $old`),
//! so two staff members, or a visitor and staff, cannot both change one visit.

use super::visit_stations::VisitStation;
use super::{flag, new_id, Role, Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::policy::hours::zone;
use crate::visit::rules::{self, Approval, Facts, Placement, Request};
use crate::visit::{Action, Refusal, Slot, VisitStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// Errors of booking and changing visits: a refusal with its own code, or the records'.
#[derive(Debug, thiserror::Error)]
pub enum VisitError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for VisitError {
    /// PostgreSQL gives up a transaction caught in a deadlock or a serialization failure;
    /// the request did nothing and may be sent again.
    fn from(e: sqlx::Error) -> VisitError {
        let code = e.as_database_error().and_then(|d| d.code());
        if code.is_some_and(|c| c == "40P01" || c == "40001") {
            return VisitError::Refused(Refusal::Contended);
        }
        VisitError::Store(StoreError::Db(e))
    }
}

impl From<crate::db::DbError> for VisitError {
    fn from(e: crate::db::DbError) -> VisitError {
        VisitError::Store(e.into())
    }
}

/// A visit as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visit {
    pub id: String,
    pub facility_id: String,
    pub inmate_id: String,
    /// The inmate's first and last name.
    pub inmate_name: String,
    pub contact_id: String,
    /// The contact's name: who visits.
    pub visitor_name: String,
    pub station_id: String,
    pub station_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub length_minutes: i64,
    pub status: VisitStatus,
    /// A visit with an attorney (a privileged contact): never recorded, never watched.
    pub privileged: bool,
    /// Who booked it (username, or `admin` for the configured token) and in which role.
    pub requested_by: String,
    pub requested_role: Role,
    /// Who approved or denied it, and when (`None` for a visit approved as booked).
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Who cancelled it or marked it a no-show, and when.
    pub closed_by: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A request for a visit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitRequest {
    pub inmate_id: String,
    /// The approved, video-allowed contact who visits.
    pub contact_id: String,
    pub starts_at: DateTime<Utc>,
    pub length_minutes: i64,
    /// A station of the inmate's housing unit; omitted, the first with room is taken.
    #[serde(default)]
    pub station_id: Option<String>,
}

/// Who books or changes a visit.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub subject: &'a str,
    pub role: Role,
}

/// Which visits to list. Every field narrows; `contacts` (a family user's) and
/// `facilities` (a staff user's) are the caller's scope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitFilter {
    pub facility_id: Option<String>,
    pub inmate_id: Option<String>,
    pub contact_id: Option<String>,
    pub station_id: Option<String>,
    pub status: Option<String>,
    /// Starting at or after.
    pub from: Option<DateTime<Utc>>,
    /// Starting before.
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Who may see what, for a list.
#[derive(Debug, Clone, Copy)]
pub enum VisitScope<'a> {
    Everything,
    Facilities(&'a [String]),
    Contacts(&'a [String]),
}

/// One page of visits, in start order, with the number of matches in all pages.
#[derive(Debug, Clone, Serialize)]
pub struct VisitPage {
    pub items: Vec<Visit>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Largest page.
pub const MAX_PAGE: i64 = 500;

const COLUMNS: &str = "v.id, v.facility_id, v.inmate_id, i.first_name, i.last_name, \
    v.contact_id, c.name AS visitor_name, v.station_id, s.name AS station_name, v.starts_at, \
    v.ends_at, v.status, v.privileged, v.requested_by, v.requested_role, v.decided_by, \
    v.decided_at, v.closed_by, v.closed_at, v.created_at";

const FROM: &str = "visits v JOIN inmates i ON i.id = v.inmate_id \
    JOIN contacts c ON c.id = v.contact_id JOIN visit_stations s ON s.id = v.station_id";

fn visit_from_row(r: &AnyRow) -> Result<Visit, StoreError> {
    let status: String = r.try_get("status")?;
    let role: String = r.try_get("requested_role")?;
    let (first, last): (String, String) = (r.try_get("first_name")?, r.try_get("last_name")?);
    let starts_at = from_micros(r.try_get("starts_at")?);
    let ends_at = from_micros(r.try_get("ends_at")?);
    let at = |name: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(r.try_get::<Option<i64>, _>(name)?.map(from_micros))
    };
    Ok(Visit {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        inmate_id: r.try_get("inmate_id")?,
        inmate_name: format!("{first} {last}"),
        contact_id: r.try_get("contact_id")?,
        visitor_name: r.try_get("visitor_name")?,
        station_id: r.try_get("station_id")?,
        station_name: r.try_get("station_name")?,
        starts_at,
        ends_at,
        length_minutes: (ends_at - starts_at).num_minutes(),
        status: VisitStatus::parse(&status).ok_or(StoreError::Corrupt {
            what: "visit status",
            message: status.clone(),
        })?,
        privileged: flag(r.try_get("privileged")?),
        requested_by: r.try_get("requested_by")?,
        requested_role: super::principals::parse_role(role)?,
        decided_by: r.try_get("decided_by")?,
        decided_at: at("decided_at")?,
        closed_by: r.try_get("closed_by")?,
        closed_at: at("closed_at")?,
        created_at: from_micros(r.try_get("created_at")?),
    })
}

/// A value bound to a list query.
enum Arg {
    Text(String),
    Int(i64),
}

impl Store {
    pub async fn visit(&self, id: &str) -> Result<Visit, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE v.id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("visit", id))?;
        visit_from_row(&row)
    }

    /// Books a visit, or says why not. Staff's bookings, and visitors' where the facility
    /// approves automatically, are approved at once; other requests wait for staff.
    pub async fn request_visit(
        &self,
        req: &VisitRequest,
        by: Actor<'_>,
    ) -> Result<Visit, VisitError> {
        let inmate = self.inmate(&req.inmate_id).await?;
        let contact = self.contact(&req.contact_id).await?;
        if contact.inmate_id != inmate.id {
            return Err(
                StoreError::invalid("contact_id", "is not a contact of that inmate").into(),
            );
        }
        let facility = self.facility(&inmate.facility_id).await?;
        let zone = zone(&facility.time_zone).map_err(|e| StoreError::Corrupt {
            what: "facility time zone",
            message: e.to_string(),
        })?;
        let schedule = self.visiting_rules(&facility.id).await?;
        let facts = Facts {
            now: self.clock.wall(),
            zone,
            schedule: schedule.as_ref(),
            inmate_active: inmate.status == super::InmateStatus::Active,
            contact_approved: contact.status == super::ContactStatus::Approved,
            contact_video_allowed: contact.video_allowed,
        };
        let placement = rules::check(
            &facts,
            &Request {
                starts_at: req.starts_at,
                length_minutes: req.length_minutes,
            },
        )?;
        let stations = self.candidate_stations(req, &inmate).await?;
        let auto = schedule
            .as_ref()
            .is_some_and(|s| s.rules.approval == Approval::Auto);
        let status = if by.role == Role::Admin || auto {
            VisitStatus::Approved
        } else {
            VisitStatus::Pending
        };
        let new = NewVisit {
            id: new_id("vis"),
            facility_id: &facility.id,
            inmate_id: &inmate.id,
            contact_id: &contact.id,
            privileged: contact.privileged,
            status,
            by,
        };
        self.book(&new, &placement, &stations).await?;
        Ok(self.visit(&new.id).await?)
    }

    /// The stations a request may use, in the order they are tried: the one it names
    /// (checked), or the active stations of the inmate's housing unit (of the facility,
    /// for an inmate without one) by name.
    async fn candidate_stations(
        &self,
        req: &VisitRequest,
        inmate: &super::Inmate,
    ) -> Result<Vec<VisitStation>, VisitError> {
        let unit = inmate.housing_unit.as_deref();
        if let Some(id) = &req.station_id {
            let s = self.visit_station(id).await?;
            if s.facility_id != inmate.facility_id {
                return Err(StoreError::invalid(
                    "station_id",
                    "is not a station of the inmate's facility",
                )
                .into());
            }
            if !s.active {
                return Err(Refusal::StationInactive.into());
            }
            if let Some(u) = unit.filter(|u| *u != s.housing_unit) {
                return Err(Refusal::StationNotInHousingUnit {
                    station_unit: s.housing_unit,
                    inmate_unit: u.to_string(),
                }
                .into());
            }
            return Ok(vec![s]);
        }
        let all = self.visit_stations(&inmate.facility_id).await?;
        let mut fit: Vec<VisitStation> = all
            .into_iter()
            .filter(|s| s.active && unit.is_none_or(|u| u == s.housing_unit))
            .collect();
        fit.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        if fit.is_empty() {
            return Err(Refusal::NoStation.into());
        }
        Ok(fit)
    }

    /// Inserts the visit and claims its places, all or nothing.
    async fn book(
        &self,
        v: &NewVisit<'_>,
        p: &Placement,
        stations: &[VisitStation],
    ) -> Result<(), VisitError> {
        let _turn = self.db.write_turn().await;
        let mut tx = self.db.begin_write().await?;
        let claimed = claim_all(&mut tx, v, p, stations, self.now_us()).await;
        finish(tx, claimed.map(|()| true)).await?;
        Ok(())
    }

    /// Approves, denies, cancels or marks a no-show, from the status the visit is in now;
    /// a visit that leaves its places gives them back in the same transaction.
    pub async fn change_visit(
        &self,
        id: &str,
        action: Action,
        by: Actor<'_>,
    ) -> Result<Visit, VisitError> {
        // A visit another request changed between the read and the write is read again:
        // its new status decides (a second try meets a settled status or refuses).
        for _ in 0..3 {
            let v = self.visit(id).await?;
            let slot = Slot {
                starts_at: v.starts_at,
                ends_at: v.ends_at,
            };
            let now = self.clock.wall();
            let to = v.status.after(action, slot, now)?;
            if self.write_change(id, v.status, to, action, by, now).await? {
                return Ok(self.visit(id).await?);
            }
        }
        Err(Refusal::Contended.into())
    }

    /// Writes `from → to` if the visit is still `from`; whether it was.
    async fn write_change(
        &self,
        id: &str,
        from: VisitStatus,
        to: VisitStatus,
        action: Action,
        by: Actor<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, VisitError> {
        let who = match action {
            Action::Approve | Action::Deny => "decided",
            Action::Cancel | Action::NoShow => "closed",
        };
        let _turn = self.db.write_turn().await;
        let mut tx = self.db.begin_write().await?;
        let written = write_status(&mut tx, id, (from, to), who, by.subject, now).await;
        finish(tx, written).await
    }

    /// One page of the visits matching `f` within `scope`, in start order.
    pub async fn search_visits(
        &self,
        f: &VisitFilter,
        scope: VisitScope<'_>,
    ) -> Result<VisitPage, StoreError> {
        let limit = f.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let offset = f.offset.unwrap_or(0).max(0);
        let mut page = VisitPage {
            items: Vec::new(),
            total: 0,
            limit,
            offset,
        };
        let (cond, args) = match where_clause(f, scope) {
            Some(w) => w,
            None => return Ok(page),
        };
        let n = args.len();
        let sql = format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE {cond} ORDER BY v.starts_at, v.id \
             LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = bind_all(sqlx::query(&sql), &args)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.db.pool())
            .await?;
        page.items = rows.iter().map(visit_from_row).collect::<Result<_, _>>()?;
        let count = format!("SELECT COUNT(*) AS n FROM visits v WHERE {cond}");
        page.total = bind_all(sqlx::query(&count), &args)
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?;
        Ok(page)
    }

    /// A station's visits that start on the facility's today, in start order.
    pub async fn station_day(
        &self,
        station: &VisitStation,
        statuses: &[VisitStatus],
    ) -> Result<Vec<Visit>, StoreError> {
        let facility = self.facility(&station.facility_id).await?;
        let zone = zone(&facility.time_zone).map_err(|e| StoreError::Corrupt {
            what: "facility time zone",
            message: e.to_string(),
        })?;
        let (from, to) = rules::local_day(zone, self.clock.wall());
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE v.station_id = $1 AND v.starts_at >= $2 \
             AND v.starts_at < $3 ORDER BY v.starts_at, v.id"
        ))
        .bind(&station.id)
        .bind(to_micros(from))
        .bind(to_micros(to))
        .fetch_all(self.db.pool())
        .await?;
        let all = rows
            .iter()
            .map(visit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(all
            .into_iter()
            .filter(|v| statuses.contains(&v.status))
            .collect())
    }
}

/// A visit about to be inserted.
struct NewVisit<'a> {
    id: String,
    facility_id: &'a str,
    inmate_id: &'a str,
    contact_id: &'a str,
    privileged: bool,
    status: VisitStatus,
    by: Actor<'a>,
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Commits when the work says so (`Ok(true)`), rolls back otherwise: at once, while the
/// write turn is still held, so the next writer does not find SQLite's lock held by a
/// transaction left to roll back when its connection is next used.
async fn finish(tx: Tx, r: Result<bool, VisitError>) -> Result<bool, VisitError> {
    match r {
        Ok(true) => {
            tx.commit().await?;
            Ok(true)
        }
        Ok(false) => {
            tx.rollback().await?;
            Ok(false)
        }
        Err(e) => {
            if let Err(re) = tx.rollback().await {
                tracing::warn!(error = %re, "visits: rollback failed");
            }
            Err(e)
        }
    }
}

/// `from → to` if the visit is still `from` (whether it was), naming who (`who`: the
/// `decided` or `closed` columns); a visit that leaves its places deletes its claims.
async fn write_status(
    tx: &mut Tx,
    id: &str,
    (from, to): (VisitStatus, VisitStatus),
    who: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<bool, VisitError> {
    let done = sqlx::query(&format!(
        "UPDATE visits SET status = $3, {who}_by = $4, {who}_at = $5 \
         WHERE id = $1 AND status = $2"
    ))
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(by)
    .bind(to_micros(now))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if !to.holds_places() {
        for table in [
            "visit_inmate_cells",
            "visit_week_places",
            "visit_station_cells",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE visit_id = $1"))
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(true)
}

/// The visit's row, then its claims in their order: the inmate's time, a place in the
/// week, a station's places (the row names the station that had them).
async fn claim_all(
    tx: &mut Tx,
    v: &NewVisit<'_>,
    p: &Placement,
    stations: &[VisitStation],
    now_us: i64,
) -> Result<(), VisitError> {
    let first = stations.first().ok_or(Refusal::NoStation)?;
    sqlx::query(
        "INSERT INTO visits (id, facility_id, inmate_id, contact_id, station_id, starts_at, \
         ends_at, status, privileged, requested_by, requested_role, created_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
    )
    .bind(&v.id)
    .bind(v.facility_id)
    .bind(v.inmate_id)
    .bind(v.contact_id)
    .bind(&first.id)
    .bind(to_micros(p.slot.starts_at))
    .bind(to_micros(p.slot.ends_at))
    .bind(v.status.as_str())
    .bind(i64::from(v.privileged))
    .bind(v.by.subject)
    .bind(v.by.role.as_str())
    .bind(now_us)
    .execute(&mut **tx)
    .await?;
    claim_inmate(tx, v, p).await?;
    claim_week(tx, v, p).await?;
    let station = claim_station(tx, &v.id, p, stations).await?;
    if station != first.id {
        sqlx::query("UPDATE visits SET station_id = $2 WHERE id = $1")
            .bind(&v.id)
            .bind(&station)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The inmate's cells, in one statement: any cell taken is a double booking.
async fn claim_inmate(tx: &mut Tx, v: &NewVisit<'_>, p: &Placement) -> Result<(), VisitError> {
    let cells: Vec<i64> = p.cells.clone().collect();
    let values = (0..cells.len())
        .map(|k| format!("($1, $2, ${})", k + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO visit_inmate_cells (inmate_id, visit_id, cell) VALUES {values} \
         ON CONFLICT DO NOTHING"
    );
    let mut q = sqlx::query(&sql).bind(v.inmate_id).bind(&v.id);
    for c in &cells {
        q = q.bind(*c);
    }
    let done = q.execute(&mut **tx).await?;
    if done.rows_affected() != cells.len() as u64 {
        return Err(Refusal::InmateDoubleBooked.into());
    }
    Ok(())
}

/// A place in the inmate's week, below the limit, while fewer than the limit are taken.
async fn claim_week(tx: &mut Tx, v: &NewVisit<'_>, p: &Placement) -> Result<(), VisitError> {
    let limit = i64::from(p.weekly_limit);
    if limit == 0 {
        return Ok(());
    }
    for place in 0..limit {
        let done = sqlx::query(
            "INSERT INTO visit_week_places (inmate_id, week, place, visit_id) \
             SELECT $1, $2, $3, $4 WHERE (SELECT COUNT(*) FROM visit_week_places \
             WHERE inmate_id = $1 AND week = $2) < $5 ON CONFLICT DO NOTHING",
        )
        .bind(v.inmate_id)
        .bind(&p.week)
        .bind(place)
        .bind(&v.id)
        .bind(limit)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
    }
    Err(Refusal::WeeklyLimitReached {
        limit: p.weekly_limit,
        week: p.week.clone(),
    }
    .into())
}

/// A place in every cell of one station: the first of `stations` that has them all.
/// Returns its id.
async fn claim_station(
    tx: &mut Tx,
    visit_id: &str,
    p: &Placement,
    stations: &[VisitStation],
) -> Result<String, VisitError> {
    for s in stations {
        if claim_cells(tx, visit_id, p, s).await? {
            return Ok(s.id.clone());
        }
        // Full at some cell: give back the cells of this station taken so far.
        sqlx::query("DELETE FROM visit_station_cells WHERE visit_id = $1")
            .bind(visit_id)
            .execute(&mut **tx)
            .await?;
    }
    Err(match stations {
        [one] => Refusal::StationFull {
            station: one.name.clone(),
        },
        _ => Refusal::NoStationFree,
    }
    .into())
}

/// Whether every cell of the visit got a place at `s`.
async fn claim_cells(
    tx: &mut Tx,
    visit_id: &str,
    p: &Placement,
    s: &VisitStation,
) -> Result<bool, VisitError> {
    'cells: for cell in p.cells.clone() {
        for place in 0..s.capacity {
            let done = sqlx::query(
                "INSERT INTO visit_station_cells (station_id, cell, place, visit_id) \
                 SELECT $1, $2, $3, $4 WHERE (SELECT COUNT(*) FROM visit_station_cells \
                 WHERE station_id = $1 AND cell = $2) < $5 ON CONFLICT DO NOTHING",
            )
            .bind(&s.id)
            .bind(cell)
            .bind(place)
            .bind(visit_id)
            .bind(s.capacity)
            .execute(&mut **tx)
            .await?;
            if done.rows_affected() == 1 {
                continue 'cells;
            }
        }
        return Ok(false);
    }
    Ok(true)
}

/// The WHERE clause of a list and its arguments; `None` when the scope is empty.
fn where_clause(f: &VisitFilter, scope: VisitScope<'_>) -> Option<(String, Vec<Arg>)> {
    let mut w = Where::default();
    match scope {
        VisitScope::Everything => {}
        VisitScope::Facilities([]) | VisitScope::Contacts([]) => return None,
        VisitScope::Facilities(list) => w.within("v.facility_id", list),
        VisitScope::Contacts(list) => w.within("v.contact_id", list),
    }
    let text = [
        ("v.facility_id", &f.facility_id),
        ("v.inmate_id", &f.inmate_id),
        ("v.contact_id", &f.contact_id),
        ("v.station_id", &f.station_id),
        ("v.status", &f.status),
    ];
    for (column, value) in text {
        if let Some(v) = value {
            w.within(column, std::slice::from_ref(v));
        }
    }
    if let Some(t) = f.from {
        w.time("v.starts_at >=", t);
    }
    if let Some(t) = f.to {
        w.time("v.starts_at <", t);
    }
    let cond = match w.conds.is_empty() {
        true => "1 = 1".to_string(),
        false => w.conds.join(" AND "),
    };
    Some((cond, w.args))
}

/// Conditions and their arguments, numbered as they are added.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    fn mark(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn within(&mut self, column: &str, list: &[String]) {
        let marks: Vec<String> = list
            .iter()
            .map(|v| self.mark(Arg::Text(v.clone())))
            .collect();
        self.conds
            .push(format!("{column} IN ({})", marks.join(", ")));
    }

    fn time(&mut self, compare: &str, t: DateTime<Utc>) {
        let m = self.mark(Arg::Int(to_micros(t)));
        self.conds.push(format!("{compare} {m}"));
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v.as_str()),
            Arg::Int(v) => q.bind(*v),
        };
    }
    q
}
