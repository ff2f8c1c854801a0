//! CDRs: the `sessions` rows of calls, searched by facility, inmate, number, dates and
//! end reason.

use super::{flag, Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// One call's record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cdr {
    pub id: String,
    pub facility_id: String,
    pub inmate_id: Option<String>,
    pub handset_id: Option<String>,
    pub number: Option<String>,
    pub state: String,
    pub end_reason: Option<String>,
    pub privileged: bool,
    pub recorded: bool,
    pub recording_id: Option<String>,
    pub node_id: String,
    pub invite_at: DateTime<Utc>,
    pub answer_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub billed_increments: i64,
    pub amount: Money,
}

/// Search filters; all optional, combined with AND.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallFilter {
    pub facility: Option<String>,
    pub inmate: Option<String>,
    /// E.164 number as stored (`+1555…`).
    pub number: Option<String>,
    pub reason: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    #[serde(default)]
    pub active: bool,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

const COLUMNS: &str = "id, facility_id, inmate_id, handset_id, number_e164, state, end_reason, \
    privileged, recorded, recording_id, node_id, invite_at, answer_at, accepted_at, end_at, \
    billed_increments, amount_minor";

fn from_row(r: &AnyRow) -> Result<Cdr, sqlx::Error> {
    let t = |c: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(from_micros))
    };
    Ok(Cdr {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        inmate_id: r.try_get("inmate_id")?,
        handset_id: r.try_get("handset_id")?,
        number: r.try_get("number_e164")?,
        state: r.try_get("state")?,
        end_reason: r.try_get("end_reason")?,
        privileged: flag(r.try_get("privileged")?),
        recorded: flag(r.try_get("recorded")?),
        recording_id: r.try_get("recording_id")?,
        node_id: r.try_get("node_id")?,
        invite_at: from_micros(r.try_get("invite_at")?),
        answer_at: t("answer_at")?,
        accepted_at: t("accepted_at")?,
        end_at: t("end_at")?,
        billed_increments: r.try_get("billed_increments")?,
        amount: Money::from_minor(r.try_get("amount_minor")?),
    })
}

impl Store {
    /// Calls matching `f` within `facilities` (`None` = every facility), newest first.
    pub async fn calls(
        &self,
        f: &CallFilter,
        facilities: Option<&[String]>,
    ) -> Result<Vec<Cdr>, StoreError> {
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        let offset = f.offset.unwrap_or(0).max(0);
        // Each filter is `($n IS NULL OR col = $n)` so the statement text only changes
        // with the number of facilities in scope.
        let scope = match facilities {
            None => String::new(),
            Some([]) => return Ok(Vec::new()),
            Some(list) => {
                let marks: Vec<String> = (0..list.len()).map(|i| format!("${}", i + 10)).collect();
                format!("AND facility_id IN ({})", marks.join(", "))
            }
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions WHERE kind = 'call' \
             AND ($1 IS NULL OR facility_id = $1) AND ($2 IS NULL OR inmate_id = $2) \
             AND ($3 IS NULL OR number_e164 = $3) AND ($4 IS NULL OR end_reason = $4) \
             AND ($5 IS NULL OR invite_at >= $5) AND ($6 IS NULL OR invite_at < $6) \
             AND ($7 = 0 OR state = 'active') {scope} \
             ORDER BY invite_at DESC, id DESC LIMIT $8 OFFSET $9"
        );
        let mut q = sqlx::query(&sql)
            .bind(f.facility.as_deref())
            .bind(f.inmate.as_deref())
            .bind(f.number.as_deref())
            .bind(f.reason.as_deref())
            .bind(f.from.map(to_micros))
            .bind(f.to.map(to_micros))
            .bind(i64::from(f.active))
            .bind(limit)
            .bind(offset);
        for fid in facilities.unwrap_or_default() {
            q = q.bind(fid.as_str());
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    pub async fn call(&self, id: &str) -> Result<Cdr, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE id = $1 AND kind = 'call'"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("call", id))?;
        Ok(from_row(&row)?)
    }
}
