//! Issuing bearer tokens for staff, investigators, kiosks and family users.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{Role, TokenBinding};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    username: String,
    role: Role,
    /// Facilities the token may act on; empty = every facility (admins only).
    #[serde(default)]
    facilities: Vec<String>,
    #[serde(default = "default_ttl")]
    ttl_secs: i64,
    /// A family user: the contacts it visits as (replacing those it had; omitted: kept).
    #[serde(default)]
    contacts: Option<Vec<String>>,
    /// A kiosk user: the visit station it is (replacing the one it had; omitted: kept).
    #[serde(default)]
    station_id: Option<String>,
}

fn default_ttl() -> i64 {
    86_400
}

pub(crate) async fn issue(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_global_admin()?;
    let binding = TokenBinding {
        contacts: body.contacts.clone(),
        station_id: body.station_id.clone(),
    };
    let token = s
        .store
        .issue_bound_token(
            &body.username,
            body.role,
            &body.facilities,
            body.ttl_secs,
            &binding,
        )
        .await?;
    // What the user is for visits, where the request said: in the audit entry and the
    // answer alike.
    let mut bound = json!({});
    if let Some(c) = body.contacts {
        bound["contacts"] = json!(c);
    }
    if let Some(st) = body.station_id {
        bound["station_id"] = json!(st);
    }
    s.audit_detail(&caller, "token.issue", &body.username, None, bound.clone())
        .await;
    let mut answer = json!({ "token": token, "username": body.username, "role": body.role,
                             "facilities": body.facilities, "ttl_secs": body.ttl_secs });
    if let (Some(a), Some(b)) = (answer.as_object_mut(), bound.as_object()) {
        a.extend(b.clone());
    }
    Ok((StatusCode::CREATED, Json(answer)))
}
