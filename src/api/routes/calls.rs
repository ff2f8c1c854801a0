//! Call records (CDRs): search (paged, audited `call.search`; calls, or with `kind` video
//! visits' sessions too), live calls (with whether each may be listened to), one session
//! with its charges and recordings (a visit's: its booking, its timeline and both sides'
//! recordings), its recordings (refused and audited for a privileged session), terminate
//! (on any node: a call another node carries is reached by forwarding,
//! [`crate::cluster`]).

use crate::api::auth::{ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::{AppState, Gateway};
use crate::cluster::{encode_segment, ForwardError, Relayed};
use crate::ledger::SessionCharge;
use crate::money::Money;
use crate::session::cdr::SessionEvent;
use crate::session::timeline::{self, TimelineEvent};
use crate::session::EndReason;
use crate::store::{
    CallFilter, CallPage, Cdr, Facilities, Recording, Role, StoreError, Visit, SESSION_KINDS,
    SESSION_SORTS, SORT_ORDERS,
};
use crate::text;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

/// Narrows a filter to the caller's facilities: a named facility must be the caller's; a
/// caller of one facility gets it filled in.
fn scoped(
    caller: &Caller,
    mut f: CallFilter,
) -> Result<(CallFilter, Option<Vec<String>>), ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    // The filters are written into the audit entry of the search: bounded like any text
    // a client has stored ([`crate::text`]).
    for (name, value) in [
        ("facility_id", &f.facility_id),
        ("inmate_id", &f.inmate_id),
        ("booking_number", &f.booking_number),
        ("inmate_name", &f.inmate_name),
        ("sort", &f.sort),
        ("order", &f.order),
        ("number", &f.number),
        ("end_reason", &f.end_reason),
        ("kind", &f.kind),
    ] {
        if let Some(v) = value {
            text::SETTING
                .check(name, v)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    if let Some(fid) = &f.facility_id {
        caller.scope(fid)?;
    }
    if let Some(k) = f.kind.as_deref() {
        if !SESSION_KINDS.contains(&k) {
            return Err(ApiError::bad_request(format!(
                "kind '{}' is not one of: {}",
                crate::text::quote(k),
                SESSION_KINDS.join(", ")
            )));
        }
    }
    for (name, value, known) in [
        ("sort", &f.sort, &SESSION_SORTS[..]),
        ("order", &f.order, &SORT_ORDERS[..]),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !known.contains(v)) {
            return Err(ApiError::bad_request(format!(
                "{name} '{}' is not one of: {}",
                crate::text::quote(v),
                known.join(", ")
            )));
        }
    }
    // A mistyped reason would find nothing and look like "no such calls".
    if let Some(r) = f.end_reason.as_deref() {
        if EndReason::parse(r).is_none() {
            let known = EndReason::ALL.map(EndReason::as_str).join(", ");
            return Err(ApiError::bad_request(format!(
                "end_reason '{}' is not one of: {known}",
                crate::text::quote(r)
            )));
        }
    }
    let list = match &caller.0.facilities {
        Facilities::All => None,
        Facilities::Only(list) => {
            if f.facility_id.is_none() && list.len() == 1 {
                f.facility_id = list.first().cloned();
            }
            Some(list.clone())
        }
    };
    Ok((f, list))
}

/// `GET /calls`: one page of matches `{items, total, limit, offset}`, audited with the
/// filters.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<CallFilter>,
) -> Result<Json<CallPage>, ApiError> {
    let (f, list) = scoped(&caller, f)?;
    let page = s.store.search_calls(&f, list.as_deref()).await?;
    let detail = json!({ "filters": f, "total": page.total, "limit": page.limit,
                         "offset": page.offset, "returned": page.items.len() });
    s.audit_detail(
        &caller,
        "call.search",
        "calls",
        f.facility_id.as_deref(),
        detail,
    )
    .await;
    Ok(Json(page))
}

/// A live call with what is left to pay for it.
#[derive(Serialize)]
pub(crate) struct LiveCall {
    #[serde(flatten)]
    cdr: Cdr,
    /// The paying account's balance now (each increment's debit lowers it); `null` before
    /// the inmate was identified.
    balance: Option<Money>,
}

/// `GET /calls/active`: the calls in progress, each with its payer's balance now.
pub(crate) async fn active(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(mut f): ApiQuery<CallFilter>,
) -> Result<Json<Vec<LiveCall>>, ApiError> {
    f.active = true;
    // Live calls only: live visits have their own list (`GET /visits/live`).
    f.kind = None;
    let (f, list) = scoped(&caller, f)?;
    let calls = s.store.calls(&f, list.as_deref()).await?;
    let payers: Vec<&str> = calls
        .iter()
        .filter_map(|c| c.account_id.as_deref())
        .collect();
    let balances = s.store.ledger().balances(&payers).await?;
    let live = calls
        .into_iter()
        .map(|cdr| {
            let balance = cdr
                .account_id
                .as_deref()
                .and_then(|a| balances.get(a).copied());
            LiveCall { cdr, balance }
        })
        .collect();
    Ok(Json(live))
}

/// The call, if the caller may see it (admin or investigator of its facility).
pub(crate) async fn visible_call(s: &AppState, caller: &Caller, id: &str) -> Result<Cdr, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let cdr = s.store.call(id).await?;
    caller.scope(&cdr.facility_id)?;
    Ok(cdr)
}

/// The session (a call or a video visit), if the caller may see it (admin or
/// investigator of its facility).
pub(crate) async fn visible_session(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Cdr, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let cdr = s.store.session(id).await?;
    caller.scope(&cdr.facility_id)?;
    Ok(cdr)
}

/// A session's record with what it cost and its recordings.
#[derive(Serialize)]
pub(crate) struct CallDetail {
    #[serde(flatten)]
    cdr: Cdr,
    /// The session's debits, in increment order.
    charges: Vec<SessionCharge>,
    /// A call's recording's metadata, or `null` (privileged calls never have one; a
    /// visit's are in `recordings`).
    recording: Option<Recording>,
    /// Every recording of the session, oldest first: a call's one, a visit's two (one per
    /// side, `participant` `inmate` or `visitor`, each with its own `started_at`: the
    /// offset to play them side by side). Empty for a privileged session.
    recordings: Vec<Recording>,
    /// A visit's booking (who visited, the station, the slot); absent for a call.
    #[serde(skip_serializing_if = "Option::is_none")]
    visit: Option<Visit>,
    /// A visit's timeline (joined, media, dropped, paused, resumed, left, with the side),
    /// or a call's ([`crate::session::timeline`]: INVITE, PIN entries, checks, trunk
    /// answer, announcement, acceptance, each increment with the balance after it,
    /// warnings, the cut and who ended it, the end, the recording's start).
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Timeline>,
}

/// A session's timeline: a visit's or a call's.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Timeline {
    Visit(Vec<SessionEvent>),
    Call(Vec<TimelineEvent>),
}

/// `GET /calls/{id}`: a call's record, or a video visit's session (`kind: visit`).
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CallDetail>, ApiError> {
    let cdr = visible_session(&s, &caller, &id).await?;
    let charges = s.store.ledger().session_charges(&id).await?;
    let recordings = match cdr.privileged {
        true => Vec::new(),
        false => s.store.session_recordings(&id).await?,
    };
    let (visit, timeline) = match cdr.visit_id.as_deref() {
        Some(visit_id) if cdr.kind == "visit" => {
            // A session whose booking is gone still shows (its record stands on its own).
            let visit = match s.store.visit(visit_id).await {
                Ok(v) => Some(v),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let events = s.store.session_events(&id).await?;
            (visit, Some(Timeline::Visit(events)))
        }
        _ => (None, None),
    };
    let recording = match cdr.kind.as_str() {
        "call" => recordings.first().cloned(),
        _ => None,
    };
    let timeline = match cdr.kind.as_str() {
        "call" => {
            let events = timeline::call_events(s.store.db(), &id)
                .await
                .map_err(StoreError::from)?;
            Some(Timeline::Call(timeline::call_timeline(
                &cdr,
                &events,
                &charges,
                recording.as_ref(),
            )))
        }
        _ => timeline,
    };
    Ok(Json(CallDetail {
        cdr,
        charges,
        recording,
        recordings,
        visit,
        timeline,
    }))
}

/// `GET /calls/{id}/recordings`: every recording of a session (a call's one, a visit's
/// two), oldest first; 403 `privileged` (audited `recording.refused`) for a privileged
/// session, which never has any.
pub(crate) async fn recordings(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Recording>>, ApiError> {
    let cdr = visible_session(&s, &caller, &id).await?;
    if cdr.privileged {
        return Err(refuse_privileged(&s, &caller, &cdr, "recording.refused").await);
    }
    Ok(Json(s.store.session_recordings(&id).await?))
}

/// `GET /calls/{id}/recording`: the call's recording metadata; 403 `privileged` (audited
/// `recording.refused`) for a privileged call, 404 `no_recording` when it has none.
pub(crate) async fn recording(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Recording>, ApiError> {
    let cdr = visible_call(&s, &caller, &id).await?;
    if cdr.privileged {
        return Err(refuse_privileged(&s, &caller, &cdr, "recording.refused").await);
    }
    match s.store.session_recording(&id).await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_recording",
            format!("call {id} has no recording"),
        )),
    }
}

/// Audits a refused attempt (`action`: `recording.refused`, `call.listen_refused`) at a
/// privileged call; the 403 to answer.
pub(crate) async fn refuse_privileged(
    s: &AppState,
    caller: &Caller,
    cdr: &Cdr,
    action: &str,
) -> ApiError {
    if cdr.kind == "visit" {
        let detail =
            json!({ "reason": "privileged", "session_id": cdr.id, "visit_id": cdr.visit_id });
        s.audit_detail(caller, action, &cdr.id, Some(&cdr.facility_id), detail)
            .await;
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "privileged",
            format!(
                "visit {} is privileged: it is never recorded or watched",
                cdr.visit_id.as_deref().unwrap_or(&cdr.id)
            ),
        );
    }
    let detail = json!({ "reason": "privileged", "call_id": cdr.id });
    s.audit_detail(caller, action, &cdr.id, Some(&cdr.facility_id), detail)
        .await;
    ApiError::new(
        StatusCode::FORBIDDEN,
        "privileged",
        format!(
            "call {} is privileged: it is never recorded or monitored",
            cdr.id
        ),
    )
}

/// Where a live call is carried, as the API reaches it.
pub(crate) enum Carrier<'a> {
    /// By this node: its handle is in this node's live registry.
    Here(&'a Gateway),
    /// By another node (its id): reached by forwarding the request ([`crate::cluster`]).
    Node(String),
}

/// Where the live call `cdr` is carried: 409 `call_ended` when it has ended (or, carried
/// by this node, is ending: its handle has left the registry).
pub(crate) fn carrier<'a>(s: &'a AppState, cdr: &Cdr) -> Result<Carrier<'a>, ApiError> {
    let ended = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "call_ended",
            format!("call {} has already ended", cdr.id),
        )
    };
    if cdr.state != "active" {
        return Err(ended());
    }
    if let Some(g) = s.gateway.as_ref().filter(|g| g.live.contains(&cdr.id)) {
        return Ok(Carrier::Here(g));
    }
    if cdr.node_id.is_empty() || cdr.node_id == s.cluster.node_id() {
        return Err(ended());
    }
    Ok(Carrier::Node(cdr.node_id.clone()))
}

/// The error of a request about call `call` that could not reach the node carrying it:
/// 503 `node_unknown` (never registered), 502 `node_unreachable` (no answer in time, or
/// none that makes sense), 502 `node_refused` (it refused this node's credential), 409
/// `call_ended` (it is dead: this node has just closed its sessions). Each names the node.
pub(crate) fn forward_error(call: &str, e: ForwardError) -> ApiError {
    let message = format!("call {call} is carried by another node, and {e}");
    match e {
        ForwardError::UnknownNode { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_unknown", message)
        }
        ForwardError::Unreachable { .. } => {
            tracing::warn!(error = %e, call, "forwarding failed");
            ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", message)
        }
        ForwardError::Refused { .. } => {
            tracing::error!(error = %e, call, "forwarding refused");
            ApiError::new(StatusCode::BAD_GATEWAY, "node_refused", message)
        }
        // Taken over: the session is closed, as for any ended call.
        ForwardError::Dead { .. } => ApiError::new(StatusCode::CONFLICT, "call_ended", message),
        ForwardError::Store(e) => e.into(),
    }
}

/// The answer of the node that carries the call, as it came (a 204 stays empty).
pub(crate) fn relay(r: Relayed) -> Response {
    match r.body {
        serde_json::Value::Null => r.status.into_response(),
        body => (r.status, Json(body)).into_response(),
    }
}

/// The path of an internal route of another node about call `id`: `/api/v1/cluster/calls/
/// {id}/{rest}`, the id percent-encoded.
pub(crate) fn cluster_path(id: &str, rest: &str) -> String {
    format!("/api/v1/cluster/calls/{}/{rest}", encode_segment(id))
}

/// Ends a live call (reason `terminated`): both legs get BYE, billing stops, the CDR is
/// closed; answers with the closed CDR. A call another node carries is ended there (the
/// request is forwarded). Audited here, the carrying node named; the record keeps who
/// terminated it (`terminated_by`).
pub(crate) async fn terminate(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let cdr = visible_call(&s, &caller, &id).await?;
    let detail = |node: &str| json!({ "node": node });
    match carrier(&s, &cdr)? {
        Carrier::Here(g) => {
            // An ended-meanwhile call is fine: the CDR below says how it ended.
            let _ = g.live.terminate(&id, Duration::from_secs(5)).await;
            s.store.set_terminated_by(&id, caller.subject()).await?;
            let d = detail(s.cluster.node_id());
            s.audit_detail(&caller, "call.terminate", &id, Some(&cdr.facility_id), d)
                .await;
            Ok(Json(s.store.call(&id).await?).into_response())
        }
        Carrier::Node(node) => {
            let path = cluster_path(&id, "terminate");
            let r = s
                .cluster
                .forward(&s.store, &node, Method::POST, &path, None)
                .await
                .map_err(|e| forward_error(&id, e))?;
            if r.status.is_success() {
                s.store.set_terminated_by(&id, caller.subject()).await?;
                let d = detail(&node);
                s.audit_detail(&caller, "call.terminate", &id, Some(&cdr.facility_id), d)
                    .await;
            }
            Ok(relay(r))
        }
    }
}
