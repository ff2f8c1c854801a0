//! Booking, status, PINs, release, contacts and approvals.

use crate::api::auth::{ApiJson, Caller, IdempotencyKey};
use crate::api::error::ApiError;
use crate::api::routes::calls::cluster_path;
use crate::api::AppState;
use crate::store::{
    Booking, CallFilter, Contact, ContactStatus, Inmate, InmateStatus, NewContact, Role,
};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Loads an inmate and checks the caller may act on its facility.
async fn scoped_inmate(
    s: &AppState,
    caller: &Caller,
    roles: &[Role],
    id: &str,
) -> Result<Inmate, ApiError> {
    caller.require(roles)?;
    let inmate = s.store.inmate(id).await?;
    caller.scope(&inmate.facility_id)?;
    // A kiosk acts only for the inmate signed in at it.
    caller.kiosk_acts_for(&inmate.id)?;
    Ok(inmate)
}

pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Vec<Inmate>>, ApiError> {
    caller.allow(&[Role::Admin, Role::Investigator], &fid)?;
    s.store.facility(&fid).await?;
    Ok(Json(s.store.inmates(&fid).await?))
}

pub(crate) async fn book(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<Booking>,
) -> Result<(StatusCode, Json<Inmate>), ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let i = s.store.book_inmate(&fid, body).await?;
    s.audit(&caller, "inmate.book", &i.id, Some(&fid)).await;
    Ok((StatusCode::CREATED, Json(i)))
}

pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Inmate>, ApiError> {
    Ok(Json(
        scoped_inmate(
            &s,
            &caller,
            &[Role::Admin, Role::Investigator, Role::Kiosk],
            &id,
        )
        .await?,
    ))
}

pub(crate) async fn suspend(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Inmate>, ApiError> {
    set_status(s, caller, id, InmateStatus::Suspended).await
}

pub(crate) async fn reinstate(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Inmate>, ApiError> {
    set_status(s, caller, id, InmateStatus::Active).await
}

async fn set_status(
    s: AppState,
    caller: Caller,
    id: String,
    status: InmateStatus,
) -> Result<Json<Inmate>, ApiError> {
    let i = scoped_inmate(&s, &caller, &[Role::Admin], &id).await?;
    let i2 = s.store.set_inmate_status(&i.id, status).await?;
    s.audit(
        &caller,
        &format!("inmate.{}", status.as_str()),
        &id,
        Some(&i.facility_id),
    )
    .await;
    Ok(Json(i2))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPin {
    pin: String,
    /// A new calling ID, set with the PIN (the PIN's hash includes it).
    #[serde(default)]
    calling_id: Option<String>,
}

pub(crate) async fn set_pin(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetPin>,
) -> Result<Json<Inmate>, ApiError> {
    let i = scoped_inmate(&s, &caller, &[Role::Admin], &id).await?;
    let i2 = s
        .store
        .set_credentials(&i.id, &body.pin, body.calling_id.as_deref())
        .await?;
    let detail = json!({ "calling_id_changed": i2.calling_id != i.calling_id });
    s.audit_detail(&caller, "inmate.set_pin", &id, Some(&i.facility_id), detail)
        .await;
    Ok(Json(i2))
}

/// Clears the inmate's PIN lock without changing the PIN (and restarts the count).
pub(crate) async fn unlock(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Inmate>, ApiError> {
    let i = scoped_inmate(&s, &caller, &[Role::Admin], &id).await?;
    let i2 = s.store.unlock_inmate_pin(&i.id).await?;
    s.audit(&caller, "inmate.unlock", &id, Some(&i.facility_id))
        .await;
    Ok(Json(i2))
}

/// Releases an inmate: refunds the balance and closes the account, then ends their live
/// call at once (reason `released`: BYE to both legs, billing stops, the CDR is closed).
/// In that order, so a release the ledger refuses (an idempotency conflict, a database
/// error) changes nothing, the call included. The increment in progress was debited at its
/// start and stands (the refund is what is left); a debit the call attempts between the
/// two steps is refused by the closed account, which ends the call `released` too. A
/// call carried by another node is ended there the same way (the request is forwarded,
/// [`crate::cluster`]). A call whose node cannot be reached (unknown, down, silent) ends
/// at its next increment, when the closed account refuses the debit (a free call: when
/// it counts its next increment), with the same reason, uncharged. The answer lists the
/// calls ended (`ended_calls`) and those left to their unreachable node
/// (`calls_elsewhere`); the audit entry says the same.
pub(crate) async fn release(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let i = scoped_inmate(&s, &caller, &[Role::Admin], &id).await?;
    let (inmate, release) = s.store.release_inmate(&key.of(&caller)?, &i.id).await?;
    let (ended, elsewhere) = end_live_calls(&s, &i.id).await?;
    let detail = json!({ "ended_calls": ended, "calls_elsewhere": elsewhere });
    s.audit_detail(&caller, "inmate.release", &id, Some(&i.facility_id), detail)
        .await;
    Ok(Json(json!({ "inmate": inmate, "release": release,
                     "ended_calls": ended, "calls_elsewhere": elsewhere })))
}

/// Ends the inmate's live calls (reason `released`, waiting for each CDR), here or on the
/// node that carries each; returns (ended, carried by a node that could not be reached).
async fn end_live_calls(
    s: &AppState,
    inmate_id: &str,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let f = CallFilter {
        inmate_id: Some(inmate_id.to_string()),
        active: true,
        ..CallFilter::default()
    };
    let (mut ended, mut elsewhere) = (Vec::new(), Vec::new());
    for call in s.store.calls(&f, None).await? {
        let here = s.gateway.as_ref().filter(|g| g.live.contains(&call.id));
        if let Some(g) = here {
            // A call that ended on its own meanwhile is fine: it is over either way.
            let _ = g.live.release(&call.id, Duration::from_secs(5)).await;
            ended.push(call.id);
        } else if call.node_id.is_empty() || call.node_id == s.cluster.node_id() {
            // This node's, but its handle has left the registry: it is ending.
            ended.push(call.id);
        } else if release_elsewhere(s, &call.id, &call.node_id).await {
            ended.push(call.id);
        } else {
            elsewhere.push(call.id);
        }
    }
    Ok((ended, elsewhere))
}

/// Asks `node` to end call `id` (reason `released`); whether it is over (ended there, or
/// had ended already).
async fn release_elsewhere(s: &AppState, id: &str, node: &str) -> bool {
    let path = cluster_path(id, "release");
    let forwarded = s
        .cluster
        .forward(&s.store, node, Method::POST, &path, None)
        .await;
    match forwarded {
        Ok(r) if r.status.is_success() || r.error_code() == Some("call_ended") => true,
        // Its node is dead: the call was closed by the takeover.
        Err(crate::cluster::ForwardError::Dead { .. }) => true,
        outcome => {
            let why = match outcome {
                Ok(r) => format!("node {node} answered {}: {}", r.status, r.body),
                Err(e) => e.to_string(),
            };
            tracing::warn!(session = %id, node, why,
                "the released inmate's call could not be ended on its node: it ends \
                 (reason released) at its next increment, refused by the closed account");
            false
        }
    }
}

pub(crate) async fn contacts(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Contact>>, ApiError> {
    let i = scoped_inmate(
        &s,
        &caller,
        &[Role::Admin, Role::Investigator, Role::Kiosk],
        &id,
    )
    .await?;
    Ok(Json(s.store.contacts(&i.id).await?))
}

pub(crate) async fn add_contact(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewContact>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let i = scoped_inmate(&s, &caller, &[Role::Admin, Role::Kiosk], &id).await?;
    let c = s.store.add_contact(&i.id, body).await?;
    s.audit(&caller, "contact.create", &c.id, Some(&i.facility_id))
        .await;
    Ok((StatusCode::CREATED, Json(c)))
}

pub(crate) async fn approve(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    decide(s, caller, id, ContactStatus::Approved, None).await
}

/// The optional body of a denial: why, shown to the family that asked for the contact.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Denial {
    #[serde(default)]
    reason: Option<String>,
}

/// Denies a contact; an optional JSON body `{"reason": "…"}` says why (the family portal
/// shows it to the family that asked). No body: no reason.
pub(crate) async fn deny(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Contact>, ApiError> {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let d: Denial = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        d.reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
    };
    decide(s, caller, id, ContactStatus::Denied, reason).await
}

async fn decide(
    s: AppState,
    caller: Caller,
    id: String,
    status: ContactStatus,
    reason: Option<String>,
) -> Result<Json<Contact>, ApiError> {
    caller.require(&[Role::Admin])?;
    let c = s.store.contact(&id).await?;
    let i = scoped_inmate(&s, &caller, &[Role::Admin], &c.inmate_id).await?;
    // Checked (and kept) before the decision: a reason refused changes nothing.
    s.store.set_contact_reason(&id, reason.as_deref()).await?;
    let c = s
        .store
        .decide_contact(&id, status, caller.subject())
        .await?;
    s.audit(
        &caller,
        &format!("contact.{}", status.as_str()),
        &id,
        Some(&i.facility_id),
    )
    .await;
    Ok(Json(c))
}
