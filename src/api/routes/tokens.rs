//! Issuing bearer tokens for staff, investigators, kiosks and family users.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::Role;
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
    let token = s
        .store
        .issue_token(&body.username, body.role, &body.facilities, body.ttl_secs)
        .await?;
    s.audit(&caller, "token.issue", &body.username, None).await;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "token": token, "username": body.username, "role": body.role,
                     "facilities": body.facilities, "ttl_secs": body.ttl_secs }),
        ),
    ))
}
