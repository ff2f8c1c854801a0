//! Live listening: `POST /calls/{id}/listen` answers a browser's WebRTC offer with a
//! receive-only peer fed by the call's audio; `DELETE /calls/{id}/listen/{listener_id}`
//! closes it. Who may: admins and investigators of the call's facility. Privileged calls
//! are refused (403 `privileged`) and the attempt is audited; so is every listen. Sent to
//! any node: a call another node carries is listened to there ([`crate::cluster`]).

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::routes::calls::{
    carrier, cluster_path, forward_error, refuse_privileged, relay, visible_call, Carrier,
};
use crate::api::{AppState, Gateway};
use crate::call::live::{ListenError, ListenRefusal};
use crate::cluster::encode_segment;
use crate::monitor::MonitorError;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenRequest {
    /// The browser's SDP offer (one or two recvonly audio m-lines).
    pub sdp: String,
    /// `"offer"` if given (what `RTCSessionDescription.toJSON()` carries).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ListenResponse {
    pub listener_id: String,
    /// The gateway's SDP answer.
    pub sdp: String,
    /// `"answer"`.
    #[serde(rename = "type")]
    pub kind: String,
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

/// Why a listener could not be opened on a call this node carries.
pub(crate) enum ListenFailure {
    /// The call task says the call is privileged (refused; the caller's node audits).
    Privileged,
    Api(ApiError),
}

/// Opens a listener on call `id`, carried by this node, for the browser's `offer`.
pub(crate) async fn listen_here(
    g: &Gateway,
    id: &str,
    offer: &str,
) -> Result<ListenResponse, ListenFailure> {
    let prepared = g
        .monitor
        .prepare(offer)
        .await
        .map_err(|e| ListenFailure::Api(offer_error(e)))?;
    match g.live.listen(id, prepared.tap()).await {
        Ok(()) => {}
        Err(ListenError::Refused(ListenRefusal::Privileged)) => {
            return Err(ListenFailure::Privileged)
        }
        Err(ListenError::Refused(ListenRefusal::NotConnected)) => {
            return Err(ListenFailure::Api(conflict(
                "not_connected",
                format!("call {id} is not accepted and bridged"),
            )))
        }
        Err(ListenError::NotHere | ListenError::AlreadyEnded) => {
            return Err(ListenFailure::Api(conflict(
                "call_ended",
                format!("call {id} has ended"),
            )))
        }
    }
    let listener_id = prepared.listener_id.clone();
    let answer = prepared.answer.clone();
    g.monitor.start(prepared, id);
    Ok(ListenResponse {
        listener_id,
        sdp: answer,
        kind: "answer".into(),
    })
}

/// `POST /calls/{id}/listen`: 201 with the answer and the listener id. A call another
/// node carries gets its listener there (the offer is forwarded; the answer names that
/// node's media address). Checked and audited here.
pub(crate) async fn listen(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ListenRequest>,
) -> Result<Response, ApiError> {
    let cdr = visible_call(&s, &caller, &id).await?;
    if cdr.privileged {
        return Err(refuse_privileged(&s, &caller, &cdr, "call.listen_refused").await);
    }
    if req.kind.as_deref().is_some_and(|k| k != "offer") {
        return Err(ApiError::bad_request("type must be \"offer\""));
    }
    let (answer, node) = match carrier(&s, &cdr)? {
        Carrier::Here(g) => match listen_here(g, &id, &req.sdp).await {
            Ok(answer) => (answer, s.cluster.node_id().to_string()),
            Err(ListenFailure::Privileged) => {
                return Err(refuse_privileged(&s, &caller, &cdr, "call.listen_refused").await)
            }
            Err(ListenFailure::Api(e)) => return Err(e),
        },
        Carrier::Node(node) => {
            let path = cluster_path(&id, "listen");
            let body = json!({ "sdp": req.sdp, "type": "offer" });
            let r = s
                .cluster
                .forward(&s.store, &node, Method::POST, &path, Some(&body))
                .await
                .map_err(|e| forward_error(&id, e))?;
            if r.status == StatusCode::FORBIDDEN && r.error_code() == Some("privileged") {
                return Err(refuse_privileged(&s, &caller, &cdr, "call.listen_refused").await);
            }
            if r.status != StatusCode::CREATED {
                return Ok(relay(r));
            }
            match serde_json::from_value::<ListenResponse>(r.body.clone()) {
                Ok(answer) => (answer, node),
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "node_unreachable",
                        format!("call {id} is carried by node {node}, whose answer is no listen answer: {e}"),
                    ))
                }
            }
        }
    };
    let detail = json!({ "listener_id": answer.listener_id, "node": node });
    s.audit_detail(&caller, "call.listen", &id, Some(&cdr.facility_id), detail)
        .await;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /calls/{id}/listen/{listener_id}`: 204. A listener lives on the node that
/// carries the call: one that is not here is asked for there.
pub(crate) async fn unlisten(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, listener_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let cdr = visible_call(&s, &caller, &id).await?;
    let stopped = s
        .gateway
        .as_ref()
        .map(|g| g.monitor.stop(&id, &listener_id));
    let node = match stopped {
        Some(Ok(())) => s.cluster.node_id().to_string(),
        _ if !cdr.node_id.is_empty() && cdr.node_id != s.cluster.node_id() => {
            let path = cluster_path(&id, &format!("listen/{}", encode_segment(&listener_id)));
            let r = s
                .cluster
                .forward(&s.store, &cdr.node_id, Method::DELETE, &path, None)
                .await
                .map_err(|e| forward_error(&id, e))?;
            if r.status != StatusCode::NO_CONTENT {
                return Ok(relay(r));
            }
            cdr.node_id.clone()
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "no listener {} on call {} on this node",
                crate::text::quote(&listener_id),
                crate::text::quote(&id)
            )))
        }
    };
    let detail = json!({ "listener_id": listener_id, "node": node });
    s.audit_detail(
        &caller,
        "call.unlisten",
        &id,
        Some(&cdr.facility_id),
        detail,
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
