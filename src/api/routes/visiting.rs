//! What visits are booked against: a facility's visiting rules and its visit stations,
//! and the housing unit of an inmate. Staff (admins of the facility) write them, audited
//! (`visiting_rules.set`, `visiting_rules.delete`, `visit_station.create`,
//! `visit_station.update`, `visit_station.retire`, `inmate.housing_unit`); every role of
//! the facility reads the rules (a family needs them to pick a time), staff the stations.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{Inmate, NewVisitStation, Role, VisitStation, VisitStationPatch};
use crate::visit::rules::{Schedule, VisitingRules};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// The rules as the API shows them, with the zone they are read in.
fn rules_json(time_zone: &str, s: &Schedule) -> Value {
    let mut v = json!(s.rules);
    v["time_zone"] = json!(time_zone);
    v
}

pub(crate) async fn rules(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.scope(&fid)?;
    let f = s.store.facility(&fid).await?;
    let schedule = s.store.visiting_rules(&fid).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "facility {fid} has no visiting rules: it takes no visits"
        ))
    })?;
    Ok(Json(rules_json(&f.time_zone, &schedule)))
}

pub(crate) async fn set_rules(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<VisitingRules>,
) -> Result<Json<Value>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let schedule = s.store.set_visiting_rules(&fid, body).await?;
    let f = s.store.facility(&fid).await?;
    let v = rules_json(&f.time_zone, &schedule);
    s.audit_detail(
        &caller,
        "visiting_rules.set",
        &fid,
        Some(&fid),
        json!({ "rules": v }),
    )
    .await;
    Ok(Json(v))
}

pub(crate) async fn delete_rules(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    s.store.delete_visiting_rules(&fid).await?;
    s.audit(&caller, "visiting_rules.delete", &fid, Some(&fid))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn stations(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Vec<VisitStation>>, ApiError> {
    caller.allow(&[Role::Admin, Role::Investigator], &fid)?;
    s.store.facility(&fid).await?;
    Ok(Json(s.store.visit_stations(&fid).await?))
}

pub(crate) async fn add_station(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<NewVisitStation>,
) -> Result<(StatusCode, Json<VisitStation>), ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let st = s.store.add_visit_station(&fid, body).await?;
    s.audit(&caller, "visit_station.create", &st.id, Some(&fid))
        .await;
    Ok((StatusCode::CREATED, Json(st)))
}

/// Loads a station and checks the caller may act on its facility in one of `roles`.
async fn scoped_station(
    s: &AppState,
    caller: &Caller,
    roles: &[Role],
    id: &str,
) -> Result<VisitStation, ApiError> {
    caller.require(roles)?;
    let st = s.store.visit_station(id).await?;
    caller.scope(&st.facility_id)?;
    Ok(st)
}

pub(crate) async fn station(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<VisitStation>, ApiError> {
    let roles = [Role::Admin, Role::Investigator];
    Ok(Json(scoped_station(&s, &caller, &roles, &id).await?))
}

pub(crate) async fn update_station(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VisitStationPatch>,
) -> Result<Json<VisitStation>, ApiError> {
    let st = scoped_station(&s, &caller, &[Role::Admin], &id).await?;
    let st = s.store.update_visit_station(&st.id, body).await?;
    s.audit(&caller, "visit_station.update", &id, Some(&st.facility_id))
        .await;
    Ok(Json(st))
}

/// Retires a station: it takes no new visits; the visits booked on it stay (staff cancel
/// or move them). Stations are never deleted, as visits name them.
pub(crate) async fn retire_station(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<VisitStation>, ApiError> {
    let st = scoped_station(&s, &caller, &[Role::Admin], &id).await?;
    let retire = VisitStationPatch {
        active: Some(false),
        ..VisitStationPatch::default()
    };
    let st = s.store.update_visit_station(&st.id, retire).await?;
    s.audit(&caller, "visit_station.retire", &id, Some(&st.facility_id))
        .await;
    Ok(Json(st))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HousingUnit {
    /// `null`: no unit (the inmate's visits may use any station of the facility).
    housing_unit: Option<String>,
}

pub(crate) async fn set_housing_unit(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HousingUnit>,
) -> Result<Json<Inmate>, ApiError> {
    caller.require(&[Role::Admin])?;
    let i = s.store.inmate(&id).await?;
    caller.scope(&i.facility_id)?;
    let i = s
        .store
        .set_housing_unit(&i.id, body.housing_unit.as_deref())
        .await?;
    let detail = json!({ "housing_unit": i.housing_unit });
    s.audit_detail(
        &caller,
        "inmate.housing_unit",
        &id,
        Some(&i.facility_id),
        detail,
    )
    .await;
    Ok(Json(i))
}
