//! What the leads are computed from ([`crate::leads`]): calls grouped by number, the graph
//! of who called a number, PIN attempts with their handset's housing unit, and the
//! sessions behind a lead. Every read is within a list of facilities (the caller's
//! scope; `None`: all) and leaves privileged calls out.

use super::{Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::leads::Attempt;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

/// At most this many leads of one kind, and sessions behind one lead.
pub const MAX_LEADS: i64 = 200;

/// The period a lead list looks at, and its thresholds.
#[derive(Debug, Clone)]
pub struct LeadWindow {
    pub since: DateTime<Utc>,
    /// Inmates a number needs to be a lead.
    pub min_inmates: i64,
    /// How soon after its first call a new number must reach `min_inmates`.
    pub burst_us: i64,
}

/// A number called by several inmates.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NumberLead {
    pub number: String,
    pub inmates: i64,
    pub facilities: i64,
    pub calls: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// One inmate who called a number: an edge of the number's graph.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallerEdge {
    pub inmate_id: String,
    pub name: String,
    pub booking_number: String,
    pub facility_id: String,
    pub calls: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// A session behind a lead.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeadSession {
    pub id: String,
    pub facility_id: String,
    pub inmate_id: Option<String>,
    pub number: Option<String>,
    pub handset_id: Option<String>,
    pub invite_at: DateTime<Utc>,
    pub end_reason: Option<String>,
    pub recorded: bool,
    /// The session's facility's time zone: its times are shown in it.
    pub time_zone: Option<String>,
}

/// A number with who called it and the calls.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NumberGraph {
    pub number: String,
    pub callers: Vec<CallerEdge>,
    pub sessions: Vec<LeadSession>,
}

/// A PIN attempt row (see [`Attempt`]).
pub type PinAttemptRow = Attempt;

/// `AND s.facility_id IN (...)` for `facilities`, its values appended to `args`.
fn scope(col: &str, facilities: Option<&[String]>, args: &mut Vec<String>, first: usize) -> String {
    match facilities {
        None => String::new(),
        Some(list) => {
            let marks: Vec<String> = list
                .iter()
                .map(|f| {
                    args.push(f.clone());
                    format!("${}", first + args.len() - 1)
                })
                .collect();
            format!(" AND {col} IN ({})", marks.join(", "))
        }
    }
}

const CALLS: &str = "s.kind = 'call' AND s.privileged = 0 AND s.number_e164 IS NOT NULL \
                     AND s.inmate_id IS NOT NULL";

fn number_lead(r: &sqlx::any::AnyRow) -> Result<NumberLead, sqlx::Error> {
    Ok(NumberLead {
        number: r.try_get("number_e164")?,
        inmates: r.try_get("inmates")?,
        facilities: r.try_get("facilities")?,
        calls: r.try_get("calls")?,
        first_at: from_micros(r.try_get("first_at")?),
        last_at: from_micros(r.try_get("last_at")?),
    })
}

fn lead_session(r: &sqlx::any::AnyRow) -> Result<LeadSession, sqlx::Error> {
    Ok(LeadSession {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        inmate_id: r.try_get("inmate_id")?,
        number: r.try_get("number_e164")?,
        handset_id: r.try_get("handset_id")?,
        invite_at: from_micros(r.try_get("invite_at")?),
        end_reason: r.try_get("end_reason")?,
        recorded: super::flag(r.try_get("recorded")?),
        time_zone: r.try_get("time_zone")?,
    })
}

const SESSION_COLUMNS: &str =
    "s.id, s.facility_id, s.inmate_id, s.number_e164, s.handset_id, s.invite_at, s.end_reason, s.recorded, \
     (SELECT f.time_zone FROM facilities f WHERE f.id = s.facility_id) AS time_zone";

impl Store {
    /// Numbers called by at least `w.min_inmates` inmates since `w.since`, most inmates
    /// first.
    pub async fn shared_numbers(
        &self,
        w: &LeadWindow,
        facilities: Option<&[String]>,
    ) -> Result<Vec<NumberLead>, StoreError> {
        let mut args = Vec::new();
        let sc = scope("s.facility_id", facilities, &mut args, 3);
        let sql = format!(
            "SELECT s.number_e164, COUNT(DISTINCT s.inmate_id) AS inmates, \
             COUNT(DISTINCT s.facility_id) AS facilities, COUNT(*) AS calls, \
             MIN(s.invite_at) AS first_at, MAX(s.invite_at) AS last_at \
             FROM sessions s WHERE {CALLS} AND s.invite_at >= $1{sc} \
             GROUP BY s.number_e164 HAVING COUNT(DISTINCT s.inmate_id) >= $2 \
             ORDER BY inmates DESC, calls DESC, s.number_e164 LIMIT {MAX_LEADS}"
        );
        let mut q = sqlx::query(&sql)
            .bind(to_micros(w.since))
            .bind(w.min_inmates);
        for a in &args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| number_lead(r).map_err(StoreError::from))
            .collect()
    }

    /// Numbers first called (in the scope) since `w.since` and by at least
    /// `w.min_inmates` inmates within `w.burst_us` of that first call; newest first.
    pub async fn new_numbers(
        &self,
        w: &LeadWindow,
        facilities: Option<&[String]>,
    ) -> Result<Vec<NumberLead>, StoreError> {
        let mut args = Vec::new();
        let sc_inner = scope("f.facility_id", facilities, &mut args, 4);
        let n = args.len();
        let sc_outer = scope("s.facility_id", facilities, &mut args, 4);
        debug_assert_eq!(args.len(), 2 * n);
        let sql = format!(
            "SELECT s.number_e164, COUNT(DISTINCT s.inmate_id) AS inmates, \
             COUNT(DISTINCT s.facility_id) AS facilities, COUNT(*) AS calls, \
             MIN(s.invite_at) AS first_at, MAX(s.invite_at) AS last_at \
             FROM sessions s JOIN (SELECT f.number_e164, MIN(f.invite_at) AS first_at \
               FROM sessions f WHERE f.kind = 'call' AND f.privileged = 0 \
               AND f.number_e164 IS NOT NULL{sc_inner} GROUP BY f.number_e164) n \
             ON n.number_e164 = s.number_e164 \
             WHERE {CALLS} AND n.first_at >= $1 AND s.invite_at <= n.first_at + $3{sc_outer} \
             GROUP BY s.number_e164 HAVING COUNT(DISTINCT s.inmate_id) >= $2 \
             ORDER BY first_at DESC, s.number_e164 LIMIT {MAX_LEADS}"
        );
        let mut q = sqlx::query(&sql)
            .bind(to_micros(w.since))
            .bind(w.min_inmates)
            .bind(w.burst_us);
        for a in &args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| number_lead(r).map_err(StoreError::from))
            .collect()
    }

    /// Who called `number` since `since` (one edge per inmate, most calls first) and the
    /// calls, newest first.
    pub async fn number_graph(
        &self,
        number: &str,
        since: DateTime<Utc>,
        facilities: Option<&[String]>,
    ) -> Result<NumberGraph, StoreError> {
        let mut args = Vec::new();
        let sc = scope("s.facility_id", facilities, &mut args, 3);
        let sql = format!(
            "SELECT s.inmate_id, COALESCE(MAX(i.first_name), '') AS first_name, \
             COALESCE(MAX(i.last_name), '') AS last_name, \
             COALESCE(MAX(i.booking_number), '') AS booking_number, \
             MAX(s.facility_id) AS facility_id, COUNT(*) AS calls, \
             MIN(s.invite_at) AS first_at, MAX(s.invite_at) AS last_at \
             FROM sessions s LEFT JOIN inmates i ON i.id = s.inmate_id \
             WHERE {CALLS} AND s.number_e164 = $1 AND s.invite_at >= $2{sc} \
             GROUP BY s.inmate_id ORDER BY calls DESC, s.inmate_id LIMIT {MAX_LEADS}"
        );
        let mut q = sqlx::query(&sql).bind(number).bind(to_micros(since));
        for a in &args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        let callers = rows
            .iter()
            .map(|r| {
                let first: String = r.try_get("first_name")?;
                let last: String = r.try_get("last_name")?;
                Ok(CallerEdge {
                    inmate_id: r.try_get("inmate_id")?,
                    name: format!("{first} {last}").trim().to_string(),
                    booking_number: r.try_get("booking_number")?,
                    facility_id: r.try_get("facility_id")?,
                    calls: r.try_get("calls")?,
                    first_at: from_micros(r.try_get("first_at")?),
                    last_at: from_micros(r.try_get("last_at")?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s \
             WHERE {CALLS} AND s.number_e164 = $1 AND s.invite_at >= $2{sc} \
             ORDER BY s.invite_at DESC, s.id LIMIT {MAX_LEADS}"
        );
        let mut q = sqlx::query(&sql).bind(number).bind(to_micros(since));
        for a in &args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        let sessions = rows
            .iter()
            .map(lead_session)
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(NumberGraph {
            number: number.to_string(),
            callers,
            sessions,
        })
    }

    /// Valid and wrong PIN attempts at handsets since `since`, with each handset's
    /// housing unit (its location), oldest first.
    pub async fn pin_attempts_for_leads(
        &self,
        since: DateTime<Utc>,
        facilities: Option<&[String]>,
    ) -> Result<Vec<PinAttemptRow>, StoreError> {
        let mut args = Vec::new();
        let sc = scope("a.facility_id", facilities, &mut args, 2);
        let sql = format!(
            "SELECT a.id, a.facility_id, a.handset_id, h.location, a.inmate_id, a.outcome, a.at \
             FROM pin_attempts a JOIN handsets h ON h.id = a.handset_id \
             WHERE a.at >= $1 AND a.outcome IN ('valid', 'wrong'){sc} ORDER BY a.at, a.id"
        );
        let mut q = sqlx::query(&sql).bind(to_micros(since));
        for a in &args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| {
                let outcome: String = r.try_get("outcome")?;
                Ok(Attempt {
                    id: r.try_get("id")?,
                    facility_id: r.try_get("facility_id")?,
                    handset_id: r.try_get("handset_id")?,
                    housing_unit: r.try_get::<String, _>("location")?.trim().to_string(),
                    inmate_id: r.try_get("inmate_id")?,
                    valid: outcome == "valid",
                    at: r.try_get("at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Calls of `inmates` from `handsets` that began between `from_us` and `to_us`
    /// (Unix microseconds), oldest first: the sessions behind a PIN lead.
    pub async fn sessions_at_handsets(
        &self,
        inmates: &[String],
        handsets: &[String],
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<LeadSession>, StoreError> {
        if inmates.is_empty() || handsets.is_empty() {
            return Ok(Vec::new());
        }
        let mut n = 2;
        let mut marks = |k: usize| {
            (0..k)
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let im = marks(inmates.len());
        let hm = marks(handsets.len());
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.kind = 'call' AND s.privileged = 0 \
             AND s.invite_at >= $1 AND s.invite_at <= $2 AND s.inmate_id IN ({im}) \
             AND s.handset_id IN ({hm}) ORDER BY s.invite_at, s.id LIMIT {MAX_LEADS}"
        );
        let mut q = sqlx::query(&sql).bind(from_us).bind(to_us);
        for v in inmates.iter().chain(handsets) {
            q = q.bind(v);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| lead_session(r).map_err(StoreError::from))
            .collect()
    }
}
