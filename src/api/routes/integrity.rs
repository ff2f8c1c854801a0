//! Integrity of the recordings over HTTP: the same check as `sallyport verify-recordings`,
//! for one recording (admins and investigators of its facility; refused with 403
//! `privileged` and audited for a privileged call's) or for everything
//! (administrators of every facility). See [`crate::recording::chain`].

use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::routes::recordings::visible_recording;
use crate::api::AppState;
use crate::recording::chain::{self, ChainError, ChainReport, RecordingCheck};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

impl From<ChainError> for ApiError {
    fn from(e: ChainError) -> ApiError {
        match e {
            ChainError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "recordings check failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// `GET /recordings/{id}/verify`: the chain entries, the row and the file of one recording.
/// Audited `recording.verify`.
pub async fn verify_one(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RecordingCheck>, ApiError> {
    // The same check as every other recording route, a privileged call's refusal included.
    let rec = visible_recording(&s, &caller, &id).await?;
    let check = chain::verify_recording(&s.store, &s.config.recording.dir, &id).await?;
    s.audit(&caller, "recording.verify", &id, Some(&rec.facility_id))
        .await;
    Ok(Json(check))
}

/// `GET /recordings/verify`: the whole chain, every row and every file.
pub async fn verify_all(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<ChainReport>, ApiError> {
    caller.require_global_admin()?;
    Ok(Json(
        chain::verify_all(&s.store, &s.config.recording.dir).await?,
    ))
}
