//! Call records (CDRs): search, live calls, one call.

use crate::api::auth::{ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{CallFilter, Cdr, Facilities, Role};
use axum::extract::{Path, State};
use axum::Json;

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

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Cdr>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let cdr = s.store.call(&id).await?;
    caller.scope(&cdr.facility_id)?;
    Ok(Json(cdr))
}
