//! Investigative leads and spoken keyword alerts over HTTP ([`crate::leads`],
//! [`crate::keywords`]). Admins and investigators, within their facilities; every list
//! and every lead opened is audited (`lead.list`, `lead.open`, `keyword_alert.list`),
//! naming the sessions it showed.
//!
//! - `GET /leads?days=&min_inmates=&burst_hours=&pin_window_minutes=&facility_id=`: the
//!   period's shared numbers, new numbers, PIN-sharing leads and keyword alerts, and
//!   whether spotting runs.
//! - `GET /leads/numbers/{number}?days=`: who called the number (the graph: one edge
//!   per inmate) and the calls.
//! - `GET /leads/pin/{id}?days=&pin_window_minutes=`: a PIN-sharing lead with its
//!   attempts and the calls made with them.
//! - `GET /keyword-alerts?session_id=&facility_id=&days=`: watch words heard.
//! - `GET /keyword-alerts/{id}`: one, with where it is in its session.
//! - `GET /keywords/status`: spotting available or why not, and the queue.

use crate::api::auth::{ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::routes::calls::visible_session;
use crate::api::AppState;
use crate::leads::{pin_sharing, PinLead};
use crate::store::{
    AlertFilter, Facilities, KeywordAlert, LeadPerson, LeadSession, LeadWindow, NumberGraph,
    NumberLead, QueueCounts, Role,
};
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// The period and thresholds of a lead list; absent values take the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeadQuery {
    #[serde(default)]
    days: Option<i64>,
    #[serde(default)]
    min_inmates: Option<i64>,
    #[serde(default)]
    burst_hours: Option<i64>,
    #[serde(default)]
    pin_window_minutes: Option<i64>,
    #[serde(default)]
    facility_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
}

/// The period and thresholds as applied.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Period {
    since: DateTime<Utc>,
    days: i64,
    min_inmates: i64,
    burst_hours: i64,
    pin_window_minutes: i64,
}

fn bounded(name: &str, v: Option<i64>, default: i64, lo: i64, hi: i64) -> Result<i64, ApiError> {
    let v = v.unwrap_or(default);
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "{name} must be {lo} to {hi}"
        )))
    }
}

impl LeadQuery {
    fn period(&self, now: DateTime<Utc>) -> Result<Period, ApiError> {
        let days = bounded("days", self.days, 30, 1, 366)?;
        Ok(Period {
            since: now - Duration::days(days),
            days,
            min_inmates: bounded("min_inmates", self.min_inmates, 3, 2, 1000)?,
            burst_hours: bounded("burst_hours", self.burst_hours, 72, 1, 24 * 366)?,
            pin_window_minutes: bounded(
                "pin_window_minutes",
                self.pin_window_minutes,
                15,
                1,
                24 * 60,
            )?,
        })
    }
}

/// The caller's facilities, narrowed to `facility_id` when given (which must be theirs).
fn scope(caller: &Caller, facility_id: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let facility_id = facility_id.map(str::trim).filter(|f| !f.is_empty());
    if let Some(f) = facility_id {
        crate::text::SETTING
            .check("facility_id", f)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        caller.investigate(f)?;
        return Ok(Some(vec![f.to_string()]));
    }
    Ok(match &caller.0.facilities {
        Facilities::All => None,
        Facilities::Only(list) => Some(list.clone()),
    })
}

/// The audit entry's facility: the only one in scope, if one.
fn audit_facility(list: &Option<Vec<String>>) -> Option<&str> {
    match list.as_deref() {
        Some([one]) => Some(one.as_str()),
        _ => None,
    }
}

/// Whether spotting runs on this node, and the queue.
#[derive(Debug, Serialize)]
pub(crate) struct SpottingStatus {
    available: bool,
    reason: Option<String>,
    queue: QueueCounts,
}

async fn spotting(s: &AppState) -> Result<SpottingStatus, ApiError> {
    let cfg = s.config.keywords.clone();
    let check = tokio::task::spawn_blocking(move || crate::keywords::availability(&cfg))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(SpottingStatus {
        available: check.is_ok(),
        reason: check.err().map(|e| e.to_string()),
        queue: s.store.keyword_queue().await?,
    })
}

/// `GET /leads`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct Leads {
    period: Period,
    shared_numbers: Vec<NumberLead>,
    new_numbers: Vec<NumberLead>,
    pin_sharing: Vec<PinLead>,
    keyword_alerts: Vec<KeywordAlert>,
    spotting: SpottingStatus,
    /// The inmates the PIN-sharing leads and the alerts name, by id: the console shows
    /// names and booking numbers, not ids.
    people: BTreeMap<String, LeadPerson>,
}

/// `GET /leads`.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LeadQuery>,
) -> Result<Json<Leads>, ApiError> {
    let list = scope(&caller, q.facility_id.as_deref())?;
    let p = q.period(s.store.clock().wall())?;
    let w = LeadWindow {
        since: p.since,
        min_inmates: p.min_inmates,
        burst_us: p.burst_hours * 3_600_000_000,
    };
    let shared_numbers = s.store.shared_numbers(&w, list.as_deref()).await?;
    let new_numbers = s.store.new_numbers(&w, list.as_deref()).await?;
    let attempts = s
        .store
        .pin_attempts_for_leads(p.since, list.as_deref())
        .await?;
    let pin = pin_sharing(&attempts, p.pin_window_minutes * 60_000_000);
    let alerts = s
        .store
        .keyword_alerts(
            &AlertFilter {
                since: Some(p.since),
                ..AlertFilter::default()
            },
            list.as_deref(),
        )
        .await?;
    let detail = json!({ "period": p, "shared_numbers": shared_numbers.len(),
        "new_numbers": new_numbers.len(), "pin_sharing": pin.len(),
        "keyword_alerts": alerts.len() });
    s.audit_detail(&caller, "lead.list", "leads", audit_facility(&list), detail)
        .await;
    let named: Vec<&str> = pin
        .iter()
        .flat_map(|l| std::iter::once(l.inmate_id.as_str()).chain(l.other_inmate_id.as_deref()))
        .chain(alerts.iter().filter_map(|a| a.inmate_id.as_deref()))
        .collect();
    let people = s.store.lead_people(&named).await?;
    Ok(Json(Leads {
        period: p,
        shared_numbers,
        new_numbers,
        pin_sharing: pin,
        keyword_alerts: alerts,
        spotting: spotting(&s).await?,
        people,
    }))
}

fn session_ids(sessions: &[LeadSession]) -> Vec<&str> {
    sessions.iter().map(|x| x.id.as_str()).collect()
}

/// `GET /leads/numbers/{number}`.
pub(crate) async fn number(
    State(s): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    ApiQuery(q): ApiQuery<LeadQuery>,
) -> Result<Json<NumberGraph>, ApiError> {
    let list = scope(&caller, q.facility_id.as_deref())?;
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 15 {
        return Err(ApiError::bad_request(
            "number must be E.164 (+ and 1 to 15 digits)",
        ));
    }
    let number = format!("+{digits}");
    let p = q.period(s.store.clock().wall())?;
    let graph = s
        .store
        .number_graph(&number, p.since, list.as_deref())
        .await?;
    let detail = json!({ "kind": "number", "number": number, "days": p.days,
        "inmates": graph.callers.len(), "sessions": session_ids(&graph.sessions) });
    s.audit_detail(&caller, "lead.open", &number, audit_facility(&list), detail)
        .await;
    Ok(Json(graph))
}

/// A PIN-sharing lead with the calls made with its attempts.
#[derive(Debug, Serialize)]
pub(crate) struct PinLeadDetail {
    #[serde(flatten)]
    lead: PinLead,
    sessions: Vec<LeadSession>,
    /// The lead's inmates, by id (as in `GET /leads`).
    people: BTreeMap<String, LeadPerson>,
}

/// `GET /leads/pin/{id}`.
pub(crate) async fn pin(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LeadQuery>,
) -> Result<Json<PinLeadDetail>, ApiError> {
    let list = scope(&caller, q.facility_id.as_deref())?;
    let p = q.period(s.store.clock().wall())?;
    let attempts = s
        .store
        .pin_attempts_for_leads(p.since, list.as_deref())
        .await?;
    let lead = pin_sharing(&attempts, p.pin_window_minutes * 60_000_000)
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no PIN-sharing lead '{}' in the period",
                crate::text::quote(&id)
            ))
        })?;
    let mut inmates = vec![lead.inmate_id.clone()];
    inmates.extend(lead.other_inmate_id.clone());
    // The calls the attempts opened: from a minute before the first to ten after the last.
    let sessions = s
        .store
        .sessions_at_handsets(
            &inmates,
            &lead.handset_ids,
            lead.first_at - 60_000_000,
            lead.last_at + 600_000_000,
        )
        .await?;
    let detail = json!({ "kind": "pin", "lead": lead.id, "pattern": lead.pattern,
        "inmates": inmates, "sessions": session_ids(&sessions) });
    s.audit_detail(
        &caller,
        "lead.open",
        &lead.id,
        Some(&lead.facility_id),
        detail,
    )
    .await;
    let named: Vec<&str> = inmates.iter().map(String::as_str).collect();
    let people = s.store.lead_people(&named).await?;
    Ok(Json(PinLeadDetail {
        lead,
        sessions,
        people,
    }))
}

/// `GET /keyword-alerts`.
pub(crate) async fn alerts(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LeadQuery>,
) -> Result<Json<Vec<KeywordAlert>>, ApiError> {
    let list = scope(&caller, q.facility_id.as_deref())?;
    let session_id = q
        .session_id
        .as_deref()
        .map(str::trim)
        .filter(|x| !x.is_empty());
    let mut f = AlertFilter::default();
    if let Some(id) = session_id {
        crate::text::SETTING
            .check("session_id", id)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        visible_session(&s, &caller, id).await?;
        f.session_id = Some(id.to_string());
    } else {
        f.since = Some(q.period(s.store.clock().wall())?.since);
    }
    let alerts = s.store.keyword_alerts(&f, list.as_deref()).await?;
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    let detail = json!({ "session_id": f.session_id, "alerts": ids });
    s.audit_detail(
        &caller,
        "keyword_alert.list",
        session_id.unwrap_or("keyword-alerts"),
        audit_facility(&list),
        detail,
    )
    .await;
    Ok(Json(alerts))
}

/// `GET /keyword-alerts/{id}`.
pub(crate) async fn alert(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeywordAlert>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let a = s.store.keyword_alert(&id).await?;
    caller.investigate(&a.facility_id)?;
    let detail = json!({ "kind": "keyword", "word": a.word, "party": a.party,
        "offset_ms": a.offset_ms, "sessions": [a.session_id] });
    s.audit_detail(&caller, "lead.open", &a.id, Some(&a.facility_id), detail)
        .await;
    Ok(Json(a))
}

/// `GET /keywords/status`.
pub(crate) async fn status(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<SpottingStatus>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    Ok(Json(spotting(&s).await?))
}
