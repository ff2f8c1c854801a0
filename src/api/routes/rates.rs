//! Rate caps, decks and plans (CSV uploads), and the ledger check.

use crate::api::auth::{ApiBytes, ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::rating::{normalize_e164, CapTable, FacilityCapCategory, Service};
use crate::store::{DeckSummary, PlanSummary, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// The rate cap table in force today and the next one scheduled, each with its tiers.
pub(crate) async fn caps(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let schedule = s.store.cap_schedule()?;
    let today = s.store.clock().wall().date_naive();
    let in_force = schedule.in_force(today);
    let next = schedule.next_after(today);
    Ok(Json(json!({
        "date": today,
        "in_force": in_force.map(cap_table_json),
        "next": next.map(cap_table_json),
        // The table in force, flat, as before (empty when nothing is capped).
        "name": in_force.map(CapTable::name),
        "source": in_force.and_then(CapTable::source),
        "caps": in_force.map(cap_rows).unwrap_or_default(),
    })))
}

fn cap_rows(table: &CapTable) -> Vec<Value> {
    let mut rows = Vec::new();
    for category in FacilityCapCategory::ALL {
        for service in Service::ALL {
            rows.push(json!({
                "category": category.as_str(), "service": service.as_str(),
                "per_minute_cap": table.cap(category, service),
                "source": table.tier_source(category),
            }));
        }
    }
    rows
}

fn cap_table_json(table: &CapTable) -> Value {
    json!({
        "name": table.name(),
        "source": table.source(),
        "effective_from": table.starts(),
        "facility_charge_per_minute": table.facility_charge_per_minute(),
        "caps": cap_rows(table),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    id: String,
    name: Option<String>,
    max_call_secs: Option<u32>,
}

pub(crate) async fn decks(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DeckSummary>>, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok(Json(s.store.rate_decks().await?))
}

pub(crate) async fn upload_deck(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<DeckSummary>), ApiError> {
    caller.require_global_admin()?;
    let name = q.name.unwrap_or_else(|| q.id.clone());
    let d = s.store.store_rate_deck(&q.id, &name, &body).await?;
    s.audit(&caller, "rate_deck.create", &d.id, None).await;
    Ok((StatusCode::CREATED, Json(d)))
}

pub(crate) async fn deck(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeckSummary>, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok(Json(s.store.rate_deck_summary(&id).await?))
}

/// Longest-prefix match of one number (normalized with country code 1 unless it is +E.164).
pub(crate) async fn lookup(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, number)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let deck = s.store.load_rate_deck(&id).await?;
    let n = normalize_e164(&number, "1").map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_number",
            e.to_string(),
        )
    })?;
    let m = deck.lookup(n.digits()).ok_or_else(|| {
        ApiError::not_found(format!(
            "no prefix of {} in deck {}",
            n.as_str(),
            crate::text::quote(&id)
        ))
    })?;
    Ok(Json(
        json!({ "number": n.as_str(), "prefix": m.prefix, "class": m.class.as_str(), "description": m.description }),
    ))
}

pub(crate) async fn plans(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<PlanSummary>>, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok(Json(s.store.rate_plans().await?))
}

pub(crate) async fn upload_plan(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<PlanSummary>), ApiError> {
    caller.require_global_admin()?;
    let name = q.name.unwrap_or_else(|| q.id.clone());
    let max = q
        .max_call_secs
        .unwrap_or(crate::rating::RatePlan::DEFAULT_MAX_DURATION_SECS);
    let p = s.store.store_rate_plan(&q.id, &name, max, &body).await?;
    s.audit(&caller, "rate_plan.create", &p.id, None).await;
    Ok((StatusCode::CREATED, Json(p)))
}

pub(crate) async fn plan(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PlanSummary>, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok(Json(s.store.rate_plan_summary(&id).await?))
}

/// Runs the ledger's invariant check (entries sum to zero, balances match entries, none
/// below zero).
pub(crate) async fn ledger_check(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_global_admin()?;
    let report = s.store.ledger().check_invariants().await?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::bad_request(e.to_string()))?,
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// The audit log, newest first (administrators of every facility).
pub(crate) async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    crate::api::auth::ApiQuery(page): crate::api::auth::ApiQuery<Page>,
) -> Result<Json<Vec<crate::store::AuditRecord>>, ApiError> {
    caller.require_global_admin()?;
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let offset = page.offset.unwrap_or(0).max(0);
    Ok(Json(s.store.audit_records(limit, offset).await?))
}

/// Walks the audit hash chain (as `sallyport verify-audit` does).
pub(crate) async fn audit_verify(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<crate::store::AuditVerification>, ApiError> {
    caller.require_global_admin()?;
    Ok(Json(s.store.verify_audit().await?))
}
