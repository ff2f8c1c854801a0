//! Live listening: `POST /calls/{id}/listen` answers a browser's WebRTC offer with a
//! receive-only peer fed by the call's audio; `DELETE /calls/{id}/listen/{listener_id}`
//! closes it. Who may: admins and investigators of the call's facility. Privileged calls
//! are refused (403 `privileged`) and the attempt is audited; so is every listen.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::{AppState, Gateway};
use crate::call::live::{ListenError, ListenRefusal};
use crate::monitor::MonitorError;
use crate::store::{Cdr, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenRequest {
    /// The browser's SDP offer (one or two recvonly audio m-lines).
    pub sdp: String,
    /// `"offer"` if given (what `RTCSessionDescription.toJSON()` carries).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ListenResponse {
    pub listener_id: String,
    /// The gateway's SDP answer.
    pub sdp: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

fn conflict(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

fn privileged(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "privileged",
        format!("call {id} is privileged: it is never monitored"),
    )
}

/// The call, if the caller may listen to calls of its facility.
async fn listenable_call(s: &AppState, caller: &Caller, id: &str) -> Result<Cdr, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let cdr = s.store.call(id).await?;
    caller.scope(&cdr.facility_id)?;
    Ok(cdr)
}

/// The gateway carrying the live call `cdr`, or why it cannot be listened to here.
fn carrier<'a>(s: &'a AppState, cdr: &Cdr) -> Result<&'a Gateway, ApiError> {
    if cdr.state != "active" {
        return Err(conflict("call_ended", format!("call {} has ended", cdr.id)));
    }
    s.gateway
        .as_ref()
        .filter(|g| g.live.contains(&cdr.id))
        .ok_or_else(|| {
            conflict(
                "not_on_this_node",
                format!(
                    "call {} is carried by node {}; send the request to that node",
                    cdr.id, cdr.node_id
                ),
            )
        })
}

async fn refuse_privileged(s: &AppState, caller: &Caller, cdr: &Cdr) -> ApiError {
    s.audit(
        caller,
        "call.listen_refused",
        &cdr.id,
        Some(&cdr.facility_id),
    )
    .await;
    privileged(&cdr.id)
}

fn offer_error(e: MonitorError) -> ApiError {
    match e {
        MonitorError::Offer(_) | MonitorError::OfferTooLarge => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_offer", e.to_string())
        }
        MonitorError::Socket { .. } | MonitorError::NoSuchListener(_) => {
            tracing::error!(error = %e, "live listener could not be opened");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the listener could not be opened",
            )
        }
    }
}

/// `POST /calls/{id}/listen`: 201 with the answer and the listener id.
pub async fn listen(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ListenRequest>,
) -> Result<(StatusCode, Json<ListenResponse>), ApiError> {
    let cdr = listenable_call(&s, &caller, &id).await?;
    if cdr.privileged {
        return Err(refuse_privileged(&s, &caller, &cdr).await);
    }
    if req.kind.as_deref().is_some_and(|k| k != "offer") {
        return Err(ApiError::bad_request("type must be \"offer\""));
    }
    let g = carrier(&s, &cdr)?;
    let prepared = g.monitor.prepare(&req.sdp).await.map_err(offer_error)?;
    match g.live.listen(&id, prepared.tap()).await {
        Ok(()) => {}
        Err(ListenError::Refused(ListenRefusal::Privileged)) => {
            return Err(refuse_privileged(&s, &caller, &cdr).await)
        }
        Err(ListenError::Refused(ListenRefusal::NotConnected)) => {
            return Err(conflict(
                "not_connected",
                format!("call {id} is not accepted and bridged"),
            ))
        }
        Err(ListenError::NotHere | ListenError::AlreadyEnded) => {
            return Err(conflict("call_ended", format!("call {id} has ended")))
        }
    }
    let listener_id = prepared.listener_id.clone();
    let answer = prepared.answer.clone();
    g.monitor.start(prepared, &id);
    let detail = json!({ "listener_id": listener_id });
    s.audit_detail(&caller, "call.listen", &id, Some(&cdr.facility_id), detail)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(ListenResponse {
            listener_id,
            sdp: answer,
            kind: "answer",
        }),
    ))
}

/// `DELETE /calls/{id}/listen/{listener_id}`: 204.
pub async fn unlisten(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, listener_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let cdr = listenable_call(&s, &caller, &id).await?;
    let stopped = s
        .gateway
        .as_ref()
        .map(|g| g.monitor.stop(&id, &listener_id));
    match stopped {
        Some(Ok(())) => {}
        _ => {
            return Err(ApiError::not_found(format!(
                "no listener {listener_id} on call {id} on this node"
            )))
        }
    }
    let detail = json!({ "listener_id": listener_id });
    s.audit_detail(
        &caller,
        "call.unlisten",
        &id,
        Some(&cdr.facility_id),
        detail,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
