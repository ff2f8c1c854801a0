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
    /// The time zones of the facilities the first and the last call were made in (a
    /// lead may span facilities): each time is shown in its own.
    pub first_time_zone: Option<String>,
    pub last_time_zone: Option<String>,
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
    /// The time zones of the facilities of the inmate's first and last call to it.
    pub first_time_zone: Option<String>,
    pub last_time_zone: Option<String>,
}

/// A session behind a lead: its whole record, people first, as every list of sessions
/// gives it (the inmate's name and booking number, the contact, duration, amount, its
/// facility's `time_zone`).
pub type LeadSession = super::Cdr;

/// A number with who called it and the calls.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NumberGraph {
    pub number: String,
    pub callers: Vec<CallerEdge>,
    pub sessions: Vec<LeadSession>,
}

/// An inmate named by a lead: who the console shows instead of the id.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeadPerson {
    pub inmate_id: String,
    /// `First Last`.
    pub name: String,
    pub booking_number: String,
    pub housing_unit: Option<String>,
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
        first_time_zone: r.try_get("first_time_zone")?,
        last_time_zone: r.try_get("last_time_zone")?,
    })
}

/// `, first_time_zone, last_time_zone`: the zones of the facilities of the calls at a
/// grouped row `g`'s `first_at` and `last_at` (`g.number_e164` is the number; `also`
/// narrows further, e.g. to one inmate), within the scope (its values appended to `args`,
/// numbered from `first`).
fn zones_at_ends(
    also: &str,
    facilities: Option<&[String]>,
    args: &mut Vec<String>,
    first: usize,
) -> String {
    let sc = scope("l.facility_id", facilities, args, first);
    let at = |end: &str| {
        format!(
            "(SELECT f.time_zone FROM sessions l JOIN facilities f ON f.id = l.facility_id \
             WHERE l.number_e164 = g.number_e164 AND l.invite_at = g.{end}_at \
             AND l.kind = 'call' AND l.privileged = 0{also}{sc} ORDER BY l.id LIMIT 1) \
             AS {end}_time_zone"
        )
    };
    format!(", {}, {}", at("first"), at("last"))
}

/// `SELECT` of the records of the sessions `ids_sql` (a query of session ids) names, in
/// `order` (of `sessions`' columns).
fn lead_sessions_sql(ids_sql: &str, order: &str) -> String {
    format!(
        "SELECT {} FROM sessions WHERE id IN ({ids_sql}) ORDER BY {order}",
        super::calls::COLUMNS
    )
}

fn lead_session(r: &sqlx::any::AnyRow) -> Result<LeadSession, sqlx::Error> {
    super::calls::from_row(r)
}

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
        let zones = zones_at_ends("", facilities, &mut args, 3);
        let sql = format!(
            "SELECT g.*{zones} FROM (SELECT s.number_e164, \
             COUNT(DISTINCT s.inmate_id) AS inmates, \
             COUNT(DISTINCT s.facility_id) AS facilities, COUNT(*) AS calls, \
             MIN(s.invite_at) AS first_at, MAX(s.invite_at) AS last_at \
             FROM sessions s WHERE {CALLS} AND s.invite_at >= $1{sc} \
             GROUP BY s.number_e164 HAVING COUNT(DISTINCT s.inmate_id) >= $2 \
             ORDER BY inmates DESC, calls DESC, s.number_e164 LIMIT {MAX_LEADS}) g \
             ORDER BY g.inmates DESC, g.calls DESC, g.number_e164"
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
        let zones = zones_at_ends("", facilities, &mut args, 4);
        let sql = format!(
            "SELECT g.*{zones} FROM (SELECT s.number_e164, \
             COUNT(DISTINCT s.inmate_id) AS inmates, \
             COUNT(DISTINCT s.facility_id) AS facilities, COUNT(*) AS calls, \
             MIN(s.invite_at) AS first_at, MAX(s.invite_at) AS last_at \
             FROM sessions s JOIN (SELECT f.number_e164, MIN(f.invite_at) AS first_at \
               FROM sessions f WHERE f.kind = 'call' AND f.privileged = 0 \
               AND f.number_e164 IS NOT NULL{sc_inner} GROUP BY f.number_e164) n \
             ON n.number_e164 = s.number_e164 \
             WHERE {CALLS} AND n.first_at >= $1 AND s.invite_at <= n.first_at + $3{sc_outer} \
             GROUP BY s.number_e164 HAVING COUNT(DISTINCT s.inmate_id) >= $2 \
             ORDER BY first_at DESC, s.number_e164 LIMIT {MAX_LEADS}) g \
             ORDER BY g.first_at DESC, g.number_e164"
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
        let mut edge_args = args.clone();
        let zones = zones_at_ends(
            " AND l.inmate_id = g.inmate_id",
            facilities,
            &mut edge_args,
            3,
        );
        let sql = format!(
            "SELECT g.*{zones} FROM (SELECT s.inmate_id, s.number_e164, \
             COALESCE(MAX(i.first_name), '') AS first_name, \
             COALESCE(MAX(i.last_name), '') AS last_name, \
             COALESCE(MAX(i.booking_number), '') AS booking_number, \
             MAX(s.facility_id) AS facility_id, COUNT(*) AS calls, \
             MIN(s.invite_at) AS first_at, MAX(s.invite_at) AS last_at \
             FROM sessions s LEFT JOIN inmates i ON i.id = s.inmate_id \
             WHERE {CALLS} AND s.number_e164 = $1 AND s.invite_at >= $2{sc} \
             GROUP BY s.inmate_id, s.number_e164 \
             ORDER BY calls DESC, s.inmate_id LIMIT {MAX_LEADS}) g \
             ORDER BY g.calls DESC, g.inmate_id"
        );
        let mut q = sqlx::query(&sql).bind(number).bind(to_micros(since));
        for a in &edge_args {
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
                    first_time_zone: r.try_get("first_time_zone")?,
                    last_time_zone: r.try_get("last_time_zone")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let sql = lead_sessions_sql(
            &format!(
                "SELECT s.id FROM sessions s \
                 WHERE {CALLS} AND s.number_e164 = $1 AND s.invite_at >= $2{sc} \
                 ORDER BY s.invite_at DESC, s.id LIMIT {MAX_LEADS}"
            ),
            "invite_at DESC, id",
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

    /// The inmates `ids` names (each once; ids of no inmate are left out), by id.
    pub async fn lead_people(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::BTreeMap<String, LeadPerson>, StoreError> {
        let mut wanted: Vec<&str> = ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut people = std::collections::BTreeMap::new();
        for chunk in wanted.chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT id, first_name, last_name, booking_number, housing_unit FROM inmates \
                 WHERE id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let first: String = r.try_get("first_name")?;
                let last: String = r.try_get("last_name")?;
                let p = LeadPerson {
                    inmate_id: r.try_get("id")?,
                    name: format!("{first} {last}").trim().to_string(),
                    booking_number: r.try_get("booking_number")?,
                    housing_unit: r.try_get("housing_unit")?,
                };
                people.insert(p.inmate_id.clone(), p);
            }
        }
        Ok(people)
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
            "SELECT a.id, a.facility_id, a.handset_id, h.location, a.inmate_id, a.outcome, a.at, \
             (SELECT f.time_zone FROM facilities f WHERE f.id = a.facility_id) AS time_zone \
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
                    time_zone: r.try_get("time_zone")?,
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
        let sql = lead_sessions_sql(
            &format!(
                "SELECT s.id FROM sessions s WHERE s.kind = 'call' AND s.privileged = 0 \
                 AND s.invite_at >= $1 AND s.invite_at <= $2 AND s.inmate_id IN ({im}) \
                 AND s.handset_id IN ({hm}) ORDER BY s.invite_at, s.id LIMIT {MAX_LEADS}"
            ),
            "invite_at, id",
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
