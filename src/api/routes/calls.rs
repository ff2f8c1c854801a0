//! Call records (CDRs): search, live calls, one call.

use crate::api::auth::{ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{CallFilter, Cdr, Facilities, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use std::time::Duration;

/// Narrows a filter to the caller's facilities: a named facility must be the caller's; a
/// caller of one facility gets it filled in.
fn scoped(
    caller: &Caller,
    mut f: CallFilter,
) -> Result<(CallFilter, Option<Vec<String>>), ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    if let Some(fid) = &f.facility {
        caller.scope(fid)?;
    }
    let list = match &caller.0.facilities {
        Facilities::All => None,
        Facilities::Only(list) => {
            if f.facility.is_none() && list.len() == 1 {
                f.facility = list.first().cloned();
            }
            Some(list.clone())
        }
    };
    Ok((f, list))
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<CallFilter>,
) -> Result<Json<Vec<Cdr>>, ApiError> {
    let (f, list) = scoped(&caller, f)?;
    Ok(Json(s.store.calls(&f, list.as_deref()).await?))
}

pub async fn active(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(mut f): ApiQuery<CallFilter>,
) -> Result<Json<Vec<Cdr>>, ApiError> {
    f.active = true;
    let (f, list) = scoped(&caller, f)?;
    Ok(Json(s.store.calls(&f, list.as_deref()).await?))
}

/// The call, if the caller may see it (admin or investigator of its facility).
async fn visible_call(s: &AppState, caller: &Caller, id: &str) -> Result<Cdr, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let cdr = s.store.call(id).await?;
    caller.scope(&cdr.facility_id)?;
    Ok(cdr)
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Cdr>, ApiError> {
    Ok(Json(visible_call(&s, &caller, &id).await?))
}

/// Ends a live call (reason `terminated`): both legs get BYE, billing stops, the CDR is
/// closed; answers with the closed CDR. Audited.
pub async fn terminate(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Cdr>, ApiError> {
    let cdr = visible_call(&s, &caller, &id).await?;
    if cdr.state != "active" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_ended",
            format!("call {id} has already ended"),
        ));
    }
    let here = s.gateway.as_ref().filter(|g| g.live.contains(&id));
    let Some(g) = here else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_on_this_node",
            format!(
                "call {id} is carried by node {}; send the request to that node",
                cdr.node_id
            ),
        ));
    };
    // An ended-meanwhile call is fine: the CDR below says how it ended.
    let _ = g.live.terminate(&id, Duration::from_secs(5)).await;
    s.audit(&caller, "call.terminate", &id, Some(&cdr.facility_id))
        .await;
    Ok(Json(s.store.call(&id).await?))
}
