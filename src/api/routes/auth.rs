//! Logging in with a password (investigators, staff), logging out, and who am I.
//!
//! A login answers 401 `invalid_credentials` alike for an unknown user, a wrong password,
//! a user without a password and a locked user, after the same password work, so neither
//! the answer nor its timing tells which usernames exist. Failures are counted in the
//! database; `http.login_lockout_after_failures` in a row lock the user for
//! `http.login_lockout_secs`. Every attempt is audited (`auth.login`, `auth.login_failed`
//! with the reason, which only admins reading the audit log see).

use crate::api::auth::{ApiJson, Caller, RemoteAddr};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{
    AuditEntry, LockoutPolicy, LoginOutcome, LoginRefusal, LoginSession, Principal,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

fn principal_json(p: &Principal) -> Value {
    json!({ "username": p.subject, "role": p.role, "facilities": p.facilities })
}

pub async fn login(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<Value>, ApiError> {
    let http = &s.config.http;
    let policy = LockoutPolicy {
        after_failures: http.login_lockout_after_failures,
        lock_secs: http.login_lockout_secs,
    };
    let ttl = i64::try_from(http.session_ttl_secs).unwrap_or(i64::MAX / 2_000_000);
    let outcome = s
        .store
        .login(&body.username, &body.password, ttl, policy)
        .await?;
    let remote = remote.map(|a| a.to_string());
    let (action, detail) = match &outcome {
        LoginOutcome::Ok(_) => ("auth.login", json!({})),
        LoginOutcome::Refused(why) => ("auth.login_failed", json!({ "reason": why })),
    };
    s.write_audit(AuditEntry {
        actor: &body.username,
        action,
        target: &body.username,
        facility_id: None,
        detail,
        remote_addr: remote.as_deref(),
    })
    .await;
    match outcome {
        LoginOutcome::Ok(session) => Ok(Json(session_json(&session))),
        LoginOutcome::Refused(why) => {
            if why == LoginRefusal::WrongPasswordLocked {
                tracing::warn!(username = %body.username, remote = ?remote, "login locked after repeated failures");
            }
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong username or password, or too many failed attempts (try again later)",
            ))
        }
    }
}

fn session_json(session: &LoginSession) -> Value {
    let mut v = principal_json(&session.principal);
    v["token"] = json!(session.token);
    v["expires_at"] = json!(session.expires_at);
    v
}

/// Ends the caller's token at once (the configured admin token cannot be ended).
pub async fn logout(State(s): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    let Some(hash) = &caller.1.token_hash else {
        return Err(ApiError::bad_request(
            "the configured administrator token cannot be logged out",
        ));
    };
    s.store.revoke_token(hash).await?;
    s.audit(&caller, "auth.logout", caller.subject(), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the token belongs to and when it expires (`null` for the configured admin token).
pub async fn me(caller: Caller) -> Json<Value> {
    let mut v = principal_json(&caller.0);
    v["expires_at"] = json!(caller.1.expires_at);
    Json(v)
}
