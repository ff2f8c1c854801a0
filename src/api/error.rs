//! API errors: `{ "error": { "code", "message" } }` with the right status. Internal causes
//! are logged, never shown. A body over its limit is a 413 `payload_too_large`, a string
//! over its limit a 422 `invalid` naming the field ([`crate::text`]), an amount not in
//! its one written form a 422 `invalid_amount` ([`crate::money`]).
//!
//! A message quotes at most 64 characters of any value a client sent, then `…`: the
//! errors that quote a value do it with [`crate::text::quote`], and every message is
//! bounded once more as it is sent ([`crate::text::bound_message`]: no run of
//! non-space characters over 64, at most 1,000 characters), which covers the text of
//! serde and axum rejections that quote a body, a query or a path as they found it. An
//! 8 KB `?format=` or a 60 KB id comes back as its first 64 characters and `…`.

use crate::ledger::LedgerError;
use crate::money::INVALID_AMOUNT;
use crate::store::{StoreError, VisitError};
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (a limit that lifts by itself).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The same error, telling the client to try again after `secs`.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413: the body of `what` is over its limit of `limit` bytes; nothing was read past it.
    pub fn payload_too_large(limit: usize, what: &str) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over the limit of {limit} bytes for {what}"),
        )
    }

    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = crate::text::bound_message(&self.message);
        let body = json!({ "error": { "code": self.code, "message": message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            StoreError::Ledger(l) => l.into(),
            StoreError::Db(ref d) if refused_text(d) => text_refused(),
            StoreError::Corrupt { .. } | StoreError::Db(_) => ApiError::internal(&e),
        }
    }
}

impl From<VisitError> for ApiError {
    /// A refusal keeps its own code: 409 for a conflict (a place taken, a booking that
    /// moved on), 422 for a request the visiting rules refuse.
    fn from(e: VisitError) -> ApiError {
        match e {
            VisitError::Refused(r) => {
                let status = match r.is_conflict() {
                    true => StatusCode::CONFLICT,
                    false => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, r.code(), r.to_string())
            }
            VisitError::Store(s) => s.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        let (status, code) = match &e {
            LedgerError::AccountNotFound { .. }
            | LedgerError::DepositNotFound { .. }
            | LedgerError::FacilityNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            LedgerError::WrongAccountKind { .. } => (StatusCode::CONFLICT, "wrong_account_kind"),
            LedgerError::NoFacility { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "no_facility"),
            LedgerError::AccountClosed { .. } => (StatusCode::CONFLICT, "account_closed"),
            LedgerError::IdempotencyConflict { .. } => {
                (StatusCode::CONFLICT, "idempotency_conflict")
            }
            LedgerError::InvalidState { .. } => (StatusCode::CONFLICT, "invalid_state"),
            LedgerError::InvalidAmount { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount")
            }
            LedgerError::InvalidText(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            LedgerError::LimitExceeded { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded")
            }
            LedgerError::InsufficientFunds { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds")
            }
            LedgerError::Db(d) if refused_text(d) => return text_refused(),
            _ => return ApiError::internal(&e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Whether the database refused a string for its characters: PostgreSQL takes no NUL in
/// text (`22021`, `character_not_in_repertoire`) nor a byte its encoding cannot hold
/// (`22P05`). Such a string arrives in a JSON body as `\u0000`: an id or a reference no
/// stored text rule saw ([`crate::text`] refuses control characters in what it checks).
fn refused_text(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "22021" || c == "22P05")
}

fn text_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "a string in the request holds a character that cannot be stored (NUL)",
    )
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::payload_too_large(super::MAX_JSON_BODY_BYTES, "a JSON body");
        }
        let (status, code) = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            // An amount refused while the body was read: its own code, as the ledger's
            // refusals of amounts have.
            JsonRejection::JsonDataError(e) if e.body_text().contains(INVALID_AMOUNT) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount")
            }
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_json"),
            _ => (StatusCode::BAD_REQUEST, "invalid_json"),
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::payload_too_large(super::MAX_UPLOAD_BODY_BYTES, "an upload");
        }
        ApiError::bad_request(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(r.body_text())
    }
}
