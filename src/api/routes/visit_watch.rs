//! Live control of video visits from the console: the visits in progress
//! (`GET /visits/live`), watching one (`POST /visits/{id}/watch` answers a browser's
//! receive-only WebRTC offer with a watcher of the visit's room, fed both sides;
//! `DELETE /visits/{id}/watch/{watcher_id}` ends it) and ending one
//! (`POST /visits/{id}/terminate`, reason `terminated`).
//!
//! Who may: admins and investigators of the visit's facility, as for a call's listen and
//! terminate. Privileged (attorney) visits are never watched: 403 `privileged`, the attempt
//! audited (`visit.watch_refused`); every watch, unwatch and terminate is audited
//! (`visit.watch`, `visit.unwatch`, `visit.terminate`) with the node that runs the visit.
//! A visit that is not in progress is 404 `visit_not_live`.
//!
//! Sent to any node: a visit runs on the node whose `sessions.node_id` its live session
//! names; another node's visit is reached by forwarding the request there
//! ([`crate::cluster`], the internal `/cluster/visits/...` routes below), as calls are.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::routes::calls::relay;
use crate::api::routes::cluster::Forwarded;
use crate::api::AppState;
use crate::cluster::{encode_segment, ForwardError};
use crate::sfu::SfuError;
use crate::store::{Facilities, LiveVisit, Role, Visit, VisitSession};
use crate::visit::live::{LiveVisits, WatchError};
use crate::visit::task::{WatchRefusal, Watching};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

/// How long a terminate waits for the visit's session to be closed here.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);
/// The same, for a terminate another node forwarded: less than its
/// `cluster.forward_timeout_secs` (5 s by default), so its answer gets back in time.
const FORWARDED_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WatchRequest {
    /// The browser's SDP offer: recvonly audio, video, audio, video (the visitor's m-lines,
    /// then the inmate's).
    pub sdp: String,
    /// `"offer"` if given (what `RTCSessionDescription.toJSON()` carries).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WatchResponse {
    pub watcher_id: String,
    /// The gateway's SDP answer.
    pub sdp: String,
    /// `"answer"`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The visit, if the caller may watch or end it (admin or investigator of its facility).
async fn visible_visit(s: &AppState, caller: &Caller, id: &str) -> Result<Visit, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let v = s.store.visit(id).await?;
    caller.scope(&v.facility_id)?;
    Ok(v)
}

fn privileged_error(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "privileged",
        format!("visit {id} is privileged: it is never recorded or watched"),
    )
}

/// Audits a refused watch of a privileged visit; the 403 to answer.
async fn refuse_privileged(s: &AppState, caller: &Caller, v: &Visit) -> ApiError {
    let detail = json!({ "reason": "privileged", "visit_id": v.id });
    s.audit_detail(
        caller,
        "visit.watch_refused",
        &v.id,
        Some(&v.facility_id),
        detail,
    )
    .await;
    privileged_error(&v.id)
}

fn not_live(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "visit_not_live",
        format!("visit {} is not in progress", crate::text::quote(id)),
    )
}

/// Where a visit in progress runs, as the API reaches it.
enum Runner<'a> {
    Here(&'a LiveVisits),
    Node(String),
}

fn here(s: &AppState) -> Option<&LiveVisits> {
    s.gateway.as_ref().and_then(|g| g.visits.as_ref())
}

/// Where visit `id` runs, and its live session: 404 `visit_not_live` when it is not in
/// progress (or, run by this node, is ending: its task has left the registry).
async fn runner<'a>(s: &'a AppState, id: &str) -> Result<(Runner<'a>, VisitSession), ApiError> {
    let session = match s.store.visit_session(id).await? {
        Some(session) if session.state == "active" => session,
        _ => return Err(not_live(id)),
    };
    if let Some(live) = here(s).filter(|l| l.contains(id)) {
        return Ok((Runner::Here(live), session));
    }
    if session.node_id.is_empty() || session.node_id == s.cluster.node_id() {
        return Err(not_live(id));
    }
    Ok((Runner::Node(session.node_id.clone()), session))
}

/// The error of a request about visit `id` that could not reach the node running it, as
/// for calls ([`crate::api::routes::calls::forward_error`]): 503 `node_unknown`, 502
/// `node_unreachable` / `node_refused`, each naming the node.
fn forward_error(id: &str, e: ForwardError) -> ApiError {
    let message = format!("visit {id} runs on another node, and {e}");
    match e {
        ForwardError::UnknownNode { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_unknown", message)
        }
        ForwardError::Unreachable { .. } => {
            tracing::warn!(error = %e, visit = id, "forwarding failed");
            ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", message)
        }
        ForwardError::Refused { .. } => {
            tracing::error!(error = %e, visit = id, "forwarding refused");
            ApiError::new(StatusCode::BAD_GATEWAY, "node_refused", message)
        }
        // Taken over: the visit's session is closed.
        ForwardError::Dead { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "visit_not_live", message)
        }
        ForwardError::Store(e) => e.into(),
    }
}

/// `/api/v1/cluster/visits/{id}/{rest}`, the id percent-encoded.
fn cluster_path(id: &str, rest: &str) -> String {
    format!("/api/v1/cluster/visits/{}/{rest}", encode_segment(id))
}

/// A watcher on visit `id`, running here.
async fn watch_here(live: &LiveVisits, id: &str, sdp: String) -> Result<Watching, ApiError> {
    live.watch(id, sdp).await.map_err(|e| match e {
        WatchError::NotHere | WatchError::Refused(WatchRefusal::Ended) => not_live(id),
        WatchError::Refused(WatchRefusal::Privileged) => privileged_error(id),
        WatchError::Refused(WatchRefusal::Offer(
            e @ (SfuError::BadSdp(_) | SfuError::NoUsableMedia | SfuError::Rtc(_)),
        )) => ApiError::new(StatusCode::BAD_REQUEST, "bad_offer", e.to_string()),
        WatchError::Refused(e) => {
            tracing::error!(error = %e, visit = id, "a watcher could not be let in");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the watcher could not be opened",
            )
        }
    })
}

/// `GET /visits/live`: the visits in progress in the caller's facilities, each with its
/// session (the node that runs it) and whether it may be watched.
pub(crate) async fn live(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<LiveVisit>>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let list = match &caller.0.facilities {
        Facilities::All => None,
        Facilities::Only(list) => Some(list.as_slice()),
    };
    Ok(Json(s.store.live_visits(list).await?))
}

/// `POST /visits/{id}/watch`: 201 with the answer and the watcher id. A visit another node
/// runs gets its watcher there (the offer is forwarded; the answer names that node's media
/// address). Checked and audited here.
pub(crate) async fn watch(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WatchRequest>,
) -> Result<Response, ApiError> {
    let v = visible_visit(&s, &caller, &id).await?;
    if v.privileged {
        return Err(refuse_privileged(&s, &caller, &v).await);
    }
    if req.kind.as_deref().is_some_and(|k| k != "offer") {
        return Err(ApiError::bad_request("type must be \"offer\""));
    }
    let (answer, node) = match runner(&s, &id).await?.0 {
        Runner::Here(live) => match watch_here(live, &id, req.sdp).await {
            Ok(w) => (
                WatchResponse {
                    watcher_id: w.watcher_id,
                    sdp: w.answer,
                    kind: "answer".into(),
                },
                s.cluster.node_id().to_string(),
            ),
            Err(e) if e.code == "privileged" => {
                return Err(refuse_privileged(&s, &caller, &v).await)
            }
            Err(e) => return Err(e),
        },
        Runner::Node(node) => {
            let body = json!({ "sdp": req.sdp, "type": "offer" });
            let r = s
                .cluster
                .forward(
                    &s.store,
                    &node,
                    Method::POST,
                    &cluster_path(&id, "watch"),
                    Some(&body),
                )
                .await
                .map_err(|e| forward_error(&id, e))?;
            if r.status == StatusCode::FORBIDDEN && r.error_code() == Some("privileged") {
                return Err(refuse_privileged(&s, &caller, &v).await);
            }
            if r.status != StatusCode::CREATED {
                return Ok(relay(r));
            }
            match serde_json::from_value::<WatchResponse>(r.body.clone()) {
                Ok(answer) => (answer, node),
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "node_unreachable",
                        format!(
                            "visit {id} runs on node {node}, whose answer is no watch answer: {e}"
                        ),
                    ))
                }
            }
        }
    };
    let detail = json!({ "watcher_id": answer.watcher_id, "node": node });
    s.audit_detail(&caller, "visit.watch", &id, Some(&v.facility_id), detail)
        .await;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /visits/{id}/watch/{watcher_id}`: 204; 404 when the visit has no such watcher.
pub(crate) async fn unwatch(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, watcher_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let v = visible_visit(&s, &caller, &id).await?;
    let no_watcher = || {
        ApiError::not_found(format!(
            "no watcher {} on visit {}",
            crate::text::quote(&watcher_id),
            crate::text::quote(&id)
        ))
    };
    // A visit that ended took its watchers along: nothing to stop.
    let (runs, _) = runner(&s, &id).await.map_err(|_| no_watcher())?;
    let node = match runs {
        Runner::Here(live) => {
            if !live.unwatch(&id, &watcher_id).await {
                return Err(no_watcher());
            }
            s.cluster.node_id().to_string()
        }
        Runner::Node(node) => {
            let path = cluster_path(&id, &format!("watch/{}", encode_segment(&watcher_id)));
            let r = s
                .cluster
                .forward(&s.store, &node, Method::DELETE, &path, None)
                .await
                .map_err(|e| forward_error(&id, e))?;
            if r.status != StatusCode::NO_CONTENT {
                return Ok(relay(r));
            }
            node
        }
    };
    let detail = json!({ "watcher_id": watcher_id, "node": node });
    s.audit_detail(&caller, "visit.unwatch", &id, Some(&v.facility_id), detail)
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /visits/{id}/terminate`: ends the visit now (reason `terminated`): both pages are
/// told, billing stops, the session is closed; answers with the closed session. A visit
/// another node runs is ended there. Audited here, the node named.
pub(crate) async fn terminate(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = visible_visit(&s, &caller, &id).await?;
    let (runs, session) = runner(&s, &id).await?;
    let node = match runs {
        Runner::Here(live) => {
            // An ended-meanwhile visit is fine: the session below says how it ended.
            live.terminate(&id, TERMINATE_WAIT).await;
            s.cluster.node_id().to_string()
        }
        Runner::Node(node) => {
            let r = s
                .cluster
                .forward(
                    &s.store,
                    &node,
                    Method::POST,
                    &cluster_path(&id, "terminate"),
                    None,
                )
                .await
                .map_err(|e| forward_error(&id, e))?;
            if !r.status.is_success() {
                return Ok(relay(r));
            }
            node
        }
    };
    let detail = json!({ "node": node, "session_id": session.id });
    s.audit_detail(
        &caller,
        "visit.terminate",
        &id,
        Some(&v.facility_id),
        detail,
    )
    .await;
    let closed = s.store.visit_session(&id).await?.unwrap_or(session);
    Ok(Json(closed).into_response())
}

// ---- between nodes ----------------------------------------------------------------------

/// This node's visits, if it runs visit `id`; else 404 `visit_not_live` (never forwarded
/// again, whatever the database says, so a stale `node_id` cannot make a loop).
fn running_here<'a>(s: &'a AppState, id: &str) -> Result<&'a LiveVisits, ApiError> {
    here(s).filter(|l| l.contains(id)).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "visit_not_live",
            format!("visit {id} does not run on node {}", s.cluster.node_id()),
        )
    })
}

/// `POST /cluster/visits/{id}/watch`: a watcher on a visit this node runs; 201 with the
/// answer (this node's media address), 403 `privileged`, 404 `visit_not_live`.
pub(crate) async fn cluster_watch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: Forwarded,
) -> Result<(StatusCode, Json<WatchResponse>), ApiError> {
    let req: WatchRequest = serde_json::from_slice(&f.body)
        .map_err(|e| ApiError::bad_request(format!("not a watch offer: {e}")))?;
    let live = running_here(&s, &id)?;
    tracing::info!(visit = %id, from = %f.from, "watch forwarded by another node");
    let w = watch_here(live, &id, req.sdp).await?;
    Ok((
        StatusCode::CREATED,
        Json(WatchResponse {
            watcher_id: w.watcher_id,
            sdp: w.answer,
            kind: "answer".into(),
        }),
    ))
}

/// `DELETE /cluster/visits/{id}/watch/{watcher_id}`: 204, or 404.
pub(crate) async fn cluster_unwatch(
    State(s): State<AppState>,
    Path((id, watcher_id)): Path<(String, String)>,
    f: Forwarded,
) -> Result<StatusCode, ApiError> {
    tracing::info!(visit = %id, from = %f.from, "unwatch forwarded by another node");
    let live = running_here(&s, &id)?;
    match live.unwatch(&id, &watcher_id).await {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found(format!(
            "no watcher {} on visit {} on node {}",
            crate::text::quote(&watcher_id),
            crate::text::quote(&id),
            s.cluster.node_id()
        ))),
    }
}

/// `POST /cluster/visits/{id}/terminate`: ends a visit this node runs; its session.
pub(crate) async fn cluster_terminate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: Forwarded,
) -> Result<Json<Option<VisitSession>>, ApiError> {
    let live = running_here(&s, &id)?;
    tracing::info!(visit = %id, from = %f.from, "terminate forwarded by another node");
    live.terminate(&id, FORWARDED_WAIT).await;
    Ok(Json(s.store.visit_session(&id).await?))
}
