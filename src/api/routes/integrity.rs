//! Integrity of the recordings over HTTP: the same check as `sallyport verify-recordings`,
//! for one recording (admins and investigators of its facility; refused with 403
//! `privileged` and audited for a privileged call's) or for a range of the chain
//! (administrators of every facility). The gateway never walks the whole chain in one
//! request: `GET /recordings/verify?after_seq=&limit=` checks at most
//! [`chain::MAX_RANGE`] entries (1000 by default) and answers the next `after_seq`; the
//! whole check (rows the chain does not hold, sessions, `added` files) is the CLI's. See
//! [`crate::recording::chain`].

use crate::api::auth::{ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::routes::recordings::visible_recording;
use crate::api::AppState;
use crate::recording::chain::{self, ChainError, ChainReport, RecordingCheck};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

impl From<ChainError> for ApiError {
    fn from(e: ChainError) -> ApiError {
        match e {
            ChainError::Store(s) => s.into(),
            other => ApiError::internal(&other),
        }
    }
}

/// `GET /recordings/{id}/verify`: the chain entries, the row and the file of one recording.
/// Audited `recording.verify`.
pub(crate) async fn verify_one(
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

/// Which part of the chain `GET /recordings/verify` checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    /// Start after this chain entry (default 0: the start).
    #[serde(default)]
    pub after_seq: i64,
    /// Entries to check, 1..=[`chain::MAX_RANGE`] (default 1000).
    #[serde(default = "default_limit")]
    pub limit: i64,
}

fn default_limit() -> i64 {
    1000
}

/// `GET /recordings/verify?after_seq=&limit=`: a range of the chain, its rows and files.
pub(crate) async fn verify_all(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<ChainReport>, ApiError> {
    caller.require_global_admin()?;
    if !(1..=chain::MAX_RANGE).contains(&q.limit) || q.after_seq < 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("limit must be 1 to {} and after_seq >= 0", chain::MAX_RANGE),
        ));
    }
    Ok(Json(
        chain::verify_range(&s.store, &s.config.recording.dir, q.after_seq, q.limit).await?,
    ))
}
