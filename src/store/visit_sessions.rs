//! The session rows (CDRs) of video visits, as the investigators' console sees them: the
//! visits in progress (to watch or end them) and one visit's latest session.
//!
//! A visit's session is a `sessions` row of kind `visit` linked by `visit_id`; at most one
//! per visit is `active` at a time (`sessions_one_live_visit`), on the node named by
//! `node_id`.

use super::{flag, Store, StoreError, Visit};
use crate::db::from_micros;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A visit's session row: where it runs and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VisitSession {
    pub id: String,
    pub visit_id: String,
    pub facility_id: String,
    /// `active` while the visit runs, then `ended`.
    pub state: String,
    pub end_reason: Option<String>,
    pub privileged: bool,
    /// The node that runs (ran) the visit.
    pub node_id: String,
    /// The first page joined: the visit's task started.
    pub started_at: DateTime<Utc>,
    pub end_at: Option<DateTime<Utc>>,
}

/// A visit in progress, for the console's live list.
#[derive(Debug, Clone, Serialize)]
pub struct LiveVisit {
    #[serde(flatten)]
    pub visit: Visit,
    pub session: VisitSession,
    /// Whether an investigator may watch it: not privileged.
    pub watchable: bool,
    /// The people as the console shows every session: the inmate's booking number and
    /// housing unit, the visitor's relationship (`null` when unknown).
    pub booking_number: Option<String>,
    pub housing_unit: Option<String>,
    pub visitor_relationship: Option<String>,
    /// The facility's time zone (IANA name): the visit's times are shown in it.
    pub time_zone: Option<String>,
}

const COLUMNS: &str = "id, visit_id, facility_id, state, end_reason, privileged, node_id, \
    invite_at, end_at";

fn from_row(r: &AnyRow) -> Result<VisitSession, StoreError> {
    Ok(VisitSession {
        id: r.try_get("id")?,
        visit_id: r.try_get("visit_id")?,
        facility_id: r.try_get("facility_id")?,
        state: r.try_get("state")?,
        end_reason: r.try_get("end_reason")?,
        privileged: flag(r.try_get("privileged")?),
        node_id: r.try_get("node_id")?,
        started_at: from_micros(r.try_get("invite_at")?),
        end_at: r.try_get::<Option<i64>, _>("end_at")?.map(from_micros),
    })
}

impl Store {
    /// The visit's latest session (the live one if it runs), or `None` if it never ran.
    pub async fn visit_session(&self, visit_id: &str) -> Result<Option<VisitSession>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE kind = 'visit' AND visit_id = $1 \
             ORDER BY (state = 'active') DESC, invite_at DESC, id DESC LIMIT 1"
        ))
        .bind(visit_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The visits in progress within `facilities` (`None`: every facility), oldest first.
    pub async fn live_visits(
        &self,
        facilities: Option<&[String]>,
    ) -> Result<Vec<LiveVisit>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, \
             (SELECT i.booking_number FROM inmates i WHERE i.id = sessions.inmate_id) AS booking_number, \
             (SELECT i.housing_unit FROM inmates i WHERE i.id = sessions.inmate_id) AS housing_unit, \
             (SELECT c.relationship FROM contacts c WHERE c.id = sessions.contact_id) AS relationship, \
             (SELECT f.time_zone FROM facilities f WHERE f.id = sessions.facility_id) AS time_zone \
             FROM sessions WHERE kind = 'visit' AND state = 'active' ORDER BY invite_at, id"
        ))
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let session = from_row(r)?;
            if facilities.is_some_and(|l| !l.contains(&session.facility_id)) {
                continue;
            }
            let visit = self.visit(&session.visit_id).await?;
            let watchable = !visit.privileged && !session.privileged;
            out.push(LiveVisit {
                visit,
                session,
                watchable,
                booking_number: r.try_get("booking_number")?,
                housing_unit: r.try_get("housing_unit")?,
                visitor_relationship: r.try_get("relationship")?,
                time_zone: r.try_get("time_zone")?,
            });
        }
        Ok(out)
    }
}
