//! Live listening: `POST /calls/{id}/listen` answers a browser's WebRTC offer with a
//! receive-only peer fed by the call's audio; `DELETE /calls/{id}/listen/{listener_id}`
//! closes it. Who may: admins and investigators of the call's facility. Privileged calls
//! are refused (403 `privileged`) and the attempt is audited; so is every listen.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::routes::calls::{carrier, refuse_privileged, visible_call};
use crate::api::AppState;
use crate::call::live::{ListenError, ListenRefusal};
use crate::monitor::MonitorError;
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
    let cdr = visible_call(&s, &caller, &id).await?;
    if cdr.privileged {
        return Err(refuse_privileged(&s, &caller, &cdr, "call.listen_refused").await);
    }
    if req.kind.as_deref().is_some_and(|k| k != "offer") {
        return Err(ApiError::bad_request("type must be \"offer\""));
    }
    let g = carrier(&s, &cdr)?;
    let prepared = g.monitor.prepare(&req.sdp).await.map_err(offer_error)?;
    match g.live.listen(&id, prepared.tap()).await {
        Ok(()) => {}
        Err(ListenError::Refused(ListenRefusal::Privileged)) => {
            return Err(refuse_privileged(&s, &caller, &cdr, "call.listen_refused").await)
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
    let cdr = visible_call(&s, &caller, &id).await?;
    let stopped = s
        .gateway
        .as_ref()
        .map(|g| g.monitor.stop(&id, &listener_id));
    match stopped {
        Some(Ok(())) => {}
        _ => {
            return Err(ApiError::not_found(format!(
                "no listener {} on call {} on this node",
                crate::text::quote(&listener_id),
                crate::text::quote(&id)
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
