//! Users with passwords (investigators, staff), created by an administrator of every
//! facility. Passwords: at least 12 characters, stored as argon2id hashes only.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{NewUser, User};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    caller.require_global_admin()?;
    let user = s.store.create_user(&body).await?;
    s.audit(&caller, "user.create", &user.username, None).await;
    Ok((StatusCode::CREATED, Json(user)))
}
