//! The internal routes of a cluster (`/api/v1/cluster/calls/...`): what another node
//! sends when a terminate, release, listen or unlisten it was asked for concerns a call
//! this node carries ([`crate::cluster`]).
//!
//! Only a node may call them: every request carries the inter-node credential
//! ([`crate::cluster::token`]), checked against this very request (method, path, body,
//! this node's id) before anything runs; a bearer token is no use here. The caller's role
//! and facility were checked by the node the request arrived at, which also audits it;
//! here the request is logged with the node it came from. They act only on calls in
//! this node's live registry and never forward again: a call that is not here answers
//! 409 `call_ended`, whatever the database says, so a stale `sessions.node_id` can never
//! send a request round in a loop.

use crate::api::error::ApiError;
use crate::api::routes::listen::{listen_here, ListenFailure, ListenRequest, ListenResponse};
use crate::api::{AppState, Gateway, MAX_JSON_BODY_BYTES};
use crate::cluster::token;
use crate::store::Cdr;
use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Path, Request, State};
use axum::http::StatusCode;
use axum::Json;
use std::time::Duration;

/// How long a forwarded terminate or release waits for the call's CDR to be closed: less
/// than the forwarding node's `cluster.forward_timeout_secs` (5 s by default), so its
/// answer gets back in time.
const FORWARDED_WAIT: Duration = Duration::from_secs(3);

/// A request forwarded by another node, its credential checked: the node it came from
/// and the body it carried.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub from: String,
    pub body: Bytes,
}

impl FromRequest<AppState> for Forwarded {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &AppState) -> Result<Forwarded, ApiError> {
        let credential = req
            .headers()
            .get(token::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::unauthorized(format!(
                    "missing the node credential ({}): these routes are for the nodes of a \
                     cluster",
                    token::HEADER
                ))
            })?;
        let method = req.method().clone();
        // The path as the forwarding node sent it (the router strips `/api/v1`).
        let path = match req.extensions().get::<OriginalUri>() {
            Some(OriginalUri(uri)) => uri.path().to_string(),
            None => req.uri().path().to_string(),
        };
        let body = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY_BYTES)
            .await
            .map_err(|_| ApiError::payload_too_large(MAX_JSON_BODY_BYTES, "a forwarded request"))?;
        let got = token::Request {
            from: "",
            to: s.cluster.node_id(),
            method: method.as_str(),
            path: &path,
            body: &body,
        };
        let now = s.store.clock().wall().timestamp();
        match token::verify(s.cluster.key(), &credential, &got, now) {
            Ok(from) => Ok(Forwarded { from, body }),
            Err(e) => {
                tracing::warn!(error = %e, %method, path, "a forwarded request was refused");
                Err(ApiError::unauthorized(e.to_string()))
            }
        }
    }
}

/// The live call `id` if this node carries it; else 409 `call_ended`.
fn here<'a>(s: &'a AppState, id: &str) -> Result<&'a Gateway, ApiError> {
    s.gateway
        .as_ref()
        .filter(|g| g.live.contains(id))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "call_ended",
                format!("call {id} is not live on node {}", s.cluster.node_id()),
            )
        })
}

/// `POST /cluster/calls/{id}/terminate`: ends the call (reason `terminated`); the CDR.
pub(crate) async fn terminate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: Forwarded,
) -> Result<Json<Cdr>, ApiError> {
    let g = here(&s, &id)?;
    tracing::info!(session = %id, from = %f.from, "terminate forwarded by another node");
    let _ = g.live.terminate(&id, FORWARDED_WAIT).await;
    Ok(Json(s.store.call(&id).await?))
}

/// `POST /cluster/calls/{id}/release`: ends the call of a released inmate (reason
/// `released`); the CDR.
pub(crate) async fn release(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: Forwarded,
) -> Result<Json<Cdr>, ApiError> {
    let g = here(&s, &id)?;
    tracing::info!(session = %id, from = %f.from, "release forwarded by another node");
    let _ = g.live.release(&id, FORWARDED_WAIT).await;
    Ok(Json(s.store.call(&id).await?))
}

/// `POST /cluster/calls/{id}/listen`: a listener on the call for the offer; 201 with the
/// answer (this node's media address), 403 `privileged`, 409 as for a local listen.
pub(crate) async fn listen(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: Forwarded,
) -> Result<(StatusCode, Json<ListenResponse>), ApiError> {
    let req: ListenRequest = serde_json::from_slice(&f.body)
        .map_err(|e| ApiError::bad_request(format!("not a listen offer: {e}")))?;
    let g = here(&s, &id)?;
    tracing::info!(session = %id, from = %f.from, "listen forwarded by another node");
    match listen_here(g, &id, &req.sdp).await {
        Ok(answer) => Ok((StatusCode::CREATED, Json(answer))),
        Err(ListenFailure::Privileged) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "privileged",
            format!("call {id} is privileged: it is never recorded or monitored"),
        )),
        Err(ListenFailure::Api(e)) => Err(e),
    }
}

/// `DELETE /cluster/calls/{id}/listen/{listener_id}`: 204, or 404 when there is no such
/// listener here.
pub(crate) async fn unlisten(
    State(s): State<AppState>,
    Path((id, listener_id)): Path<(String, String)>,
    f: Forwarded,
) -> Result<StatusCode, ApiError> {
    tracing::info!(session = %id, from = %f.from, "unlisten forwarded by another node");
    match s
        .gateway
        .as_ref()
        .map(|g| g.monitor.stop(&id, &listener_id))
    {
        Some(Ok(())) => Ok(StatusCode::NO_CONTENT),
        _ => Err(ApiError::not_found(format!(
            "no listener {} on call {} on node {}",
            crate::text::quote(&listener_id),
            crate::text::quote(&id),
            s.cluster.node_id()
        ))),
    }
}
