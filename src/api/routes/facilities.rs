//! Facilities, handsets (and their PIN locks), trusted networks, the facility's PIN locks
//! and block lists.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{
    Block, Facility, FacilityPatch, Handset, NewFacility, NewHandset, PinLock, Role, TrustedNetwork,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Facility>>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let all = s.store.facilities().await?;
    Ok(Json(
        all.into_iter()
            .filter(|f| caller.0.may_access(&f.id))
            .collect(),
    ))
}

pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewFacility>,
) -> Result<(StatusCode, Json<Facility>), ApiError> {
    caller.require_global_admin()?;
    let f = s.store.create_facility(body).await?;
    s.audit(&caller, "facility.create", &f.id, Some(&f.id))
        .await;
    Ok((StatusCode::CREATED, Json(f)))
}

pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Facility>, ApiError> {
    caller.allow(&[Role::Admin, Role::Investigator], &fid)?;
    Ok(Json(s.store.facility(&fid).await?))
}

pub(crate) async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<FacilityPatch>,
) -> Result<Json<Facility>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let f = s.store.update_facility(&fid, body).await?;
    s.audit(&caller, "facility.update", &fid, Some(&fid)).await;
    Ok(Json(f))
}

pub(crate) async fn handsets(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Vec<Handset>>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    s.store.facility(&fid).await?;
    Ok(Json(s.store.handsets(&fid).await?))
}

pub(crate) async fn add_handset(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<NewHandset>,
) -> Result<(StatusCode, Json<Handset>), ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let h = s.store.add_handset(&fid, &s.config.sip.realm, body).await?;
    s.audit(&caller, "handset.create", &h.id, Some(&fid)).await;
    Ok((StatusCode::CREATED, Json(h)))
}

/// Clears a handset's PIN lock (and restarts its failure count).
pub(crate) async fn unlock_handset(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Handset>, ApiError> {
    caller.require(&[Role::Admin])?;
    let h = s.store.handset(&id).await?;
    caller.scope(&h.facility_id)?;
    let h = s.store.unlock_handset_pin(&id).await?;
    s.audit(&caller, "handset.unlock", &id, Some(&h.facility_id))
        .await;
    Ok(Json(h))
}

/// The PIN locks in force in a facility: inmates, handsets and lines.
pub(crate) async fn pin_locks(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Vec<PinLock>>, ApiError> {
    caller.allow(&[Role::Admin, Role::Investigator], &fid)?;
    s.store.facility(&fid).await?;
    let now = s.store.clock().wall();
    Ok(Json(s.store.pin_locks(&fid, now).await?))
}

/// Clears a line's PIN lock (a source address whose calls failed too often).
pub(crate) async fn unlock_line(
    State(s): State<AppState>,
    caller: Caller,
    Path((fid, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    s.store.unlock_line_pin(&fid, &address).await?;
    s.audit(&caller, "line.unlock", &address, Some(&fid)).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewNetwork {
    cidr: String,
    #[serde(default)]
    description: String,
}

pub(crate) async fn trusted_networks(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Vec<TrustedNetwork>>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    s.store.facility(&fid).await?;
    Ok(Json(s.store.trusted_networks(&fid).await?))
}

pub(crate) async fn add_trusted_network(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<NewNetwork>,
) -> Result<(StatusCode, Json<TrustedNetwork>), ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let n = s
        .store
        .add_trusted_network(&fid, &body.cidr, &body.description)
        .await?;
    s.audit(&caller, "trusted_network.create", &n.id, Some(&fid))
        .await;
    Ok((StatusCode::CREATED, Json(n)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBlock {
    number: String,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn blocks(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Vec<Block>>, ApiError> {
    caller.allow(&[Role::Admin, Role::Investigator], &fid)?;
    s.store.facility(&fid).await?;
    Ok(Json(s.store.blocks(Some(&fid)).await?))
}

pub(crate) async fn add_block(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<NewBlock>,
) -> Result<(StatusCode, Json<Block>), ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let b = s
        .store
        .block_number(Some(&fid), &body.number, &body.reason)
        .await?;
    s.audit(&caller, "block.create", &b.id, Some(&fid)).await;
    Ok((StatusCode::CREATED, Json(b)))
}

pub(crate) async fn global_blocks(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Block>>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    Ok(Json(s.store.blocks(None).await?))
}

pub(crate) async fn add_global_block(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewBlock>,
) -> Result<(StatusCode, Json<Block>), ApiError> {
    caller.require_global_admin()?;
    let b = s
        .store
        .block_number(None, &body.number, &body.reason)
        .await?;
    s.audit(&caller, "block.create", &b.id, None).await;
    Ok((StatusCode::CREATED, Json(b)))
}

pub(crate) async fn remove_block(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let b = s.store.block(&id).await?;
    match &b.facility_id {
        Some(f) => caller.allow(&[Role::Admin], f)?,
        None => caller.require_global_admin()?,
    }
    s.store.unblock(&id).await?;
    s.audit(&caller, "block.delete", &id, b.facility_id.as_deref())
        .await;
    Ok(StatusCode::NO_CONTENT)
}
