//! Facility reports ([`crate::reports`]): `GET /reports` lists them; `GET /reports/{name}`
//! returns one as JSON (title, summary, chart and table) and `GET /reports/{name}.csv` the
//! same table as CSV, for `?facility=…&from=YYYY-MM-DD&to=YYYY-MM-DD` (facility-local
//! days, both included), with `days` (welfare) and `limit` (top numbers).
//!
//! Who: administrators and investigators of the facility (the staff roles; family users
//! and kiosks are refused). Every read is audited as `report.read` with the report, the
//! range and the format: the tables name inmates and numbers.

use crate::api::auth::{ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::reports::store::{build, Params};
use crate::reports::{
    to_csv, DateRange, Report, ReportError, ReportName, TOP_MAX, WELFARE_MAX_DAYS,
};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    facility: String,
    from: String,
    to: String,
    #[serde(default)]
    days: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e {
            ReportError::UnknownReport(_) => ApiError::not_found(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

fn bounded(name: &'static str, v: Option<i64>, default: i64, max: i64) -> Result<i64, ReportError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ReportError::OutOfBounds { name, min: 1, max }),
    }
}

/// `GET /reports`: the reports there are.
pub(crate) async fn list(caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[crate::store::Role::Admin, crate::store::Role::Investigator])?;
    let list: Vec<Value> = ReportName::ALL
        .iter()
        .map(|r| json!({ "name": r, "title": r.title(), "description": r.description() }))
        .collect();
    Ok(Json(json!(list)))
}

/// `GET /reports/{name}` (JSON) and `GET /reports/{name}.csv`.
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let (stem, csv) = match file.strip_suffix(".csv") {
        Some(stem) => (stem, true),
        None => (file.as_str(), false),
    };
    let name =
        ReportName::parse(stem).ok_or_else(|| ReportError::UnknownReport(stem.to_string()))?;
    caller.investigate(&q.facility)?;
    let range = DateRange::parse(&q.from, &q.to)?;
    let params = Params {
        days: bounded(
            "days",
            q.days,
            crate::reports::WELFARE_DEFAULT_DAYS,
            WELFARE_MAX_DAYS,
        )?,
        limit: bounded("limit", q.limit, crate::reports::TOP_DEFAULT, TOP_MAX)?,
    };
    let facility = s.store.facility(&q.facility).await?;
    let now = s.store.clock().wall();
    let report: Report = build(s.store.db(), &facility, name, &range, params, now)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let detail = json!({
        "report": name,
        "from": range.from.to_string(),
        "to": range.to.to_string(),
        "format": if csv { "csv" } else { "json" },
    });
    s.audit_detail(
        &caller,
        "report.read",
        name.as_str(),
        Some(&facility.id),
        detail,
    )
    .await;
    if !csv {
        return Ok(Json(report).into_response());
    }
    let filename = format!(
        "{}-{}-{}-{}.csv",
        name.as_str(),
        safe(&facility.id),
        range.from,
        range.to
    );
    let mut resp = (StatusCode::OK, to_csv(&report.table)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// A facility id as a file name part: letters, digits, `-` and `_` only.
fn safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
