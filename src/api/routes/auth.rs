//! Logging in with a password (investigators, staff), logging out, and who am I.
//!
//! A login answers 401 `invalid_credentials` alike for an unknown user, a wrong password,
//! a user without a password and a locked user, after the same password work, so neither
//! the answer nor its timing tells which usernames exist. Failures are counted in the
//! database; `http.login_lockout_after_failures` in a row lock the user for
//! `http.login_lockout_secs`. Every attempt is audited (`auth.login`, `auth.login_failed`
//! with the reason, which only admins reading the audit log see).
//!
//! A username that breaks the user rules (more than 64 bytes, spaces, non-ASCII) or a
//! password over 1024 bytes cannot belong to any user: it is answered with the same 401 at
//! once, before any database, password or audit work, so a huge body costs nothing but its
//! parsing. The attempted name in a failed login's audit entry is cut to 64 bytes.

use crate::api::auth::{ApiJson, Caller, RemoteAddr};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::passwords::MAX_PASSWORD_BYTES;
use crate::store::{
    valid_username, AuditEntry, LockoutPolicy, LoginOutcome, LoginRefusal, LoginSession, Principal,
    MAX_USERNAME_BYTES,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    username: String,
    password: String,
}

fn principal_json(p: &Principal) -> Value {
    json!({ "username": p.subject, "role": p.role, "facilities": p.facilities })
}

pub(crate) async fn login(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<Value>, ApiError> {
    if !plausible(&body) {
        tracing::debug!(username = %bounded(&body.username), "login refused unchecked: username or password breaks the rules");
        return Err(invalid_credentials());
    }
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
    let name = bounded(&body.username);
    s.write_audit(AuditEntry {
        actor: name,
        action,
        target: name,
        facility_id: None,
        detail,
        remote_addr: remote.as_deref(),
    })
    .await;
    match outcome {
        LoginOutcome::Ok(session) => Ok(Json(session_json(&session))),
        LoginOutcome::Refused(why) => {
            if why == LoginRefusal::WrongPasswordLocked {
                tracing::warn!(username = %name, remote = ?remote, "login locked after repeated failures");
            }
            Err(invalid_credentials())
        }
    }
}

/// The one answer to every refused login.
fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong username or password, or too many failed attempts (try again later)",
    )
}

/// Whether the attempt could match a user at all: a username by the user rules and a
/// password within the longest allowed.
fn plausible(body: &Login) -> bool {
    valid_username(&body.username) && body.password.len() <= MAX_PASSWORD_BYTES
}

/// The attempted name cut to [`MAX_USERNAME_BYTES`] (at a character boundary), for the
/// audit log and the logs.
fn bounded(name: &str) -> &str {
    let mut end = name.len().min(MAX_USERNAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn session_json(session: &LoginSession) -> Value {
    let mut v = principal_json(&session.principal);
    v["token"] = json!(session.token);
    v["expires_at"] = json!(session.expires_at);
    v
}

/// Ends the caller's token at once (the configured admin token cannot be ended).
pub(crate) async fn logout(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
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
pub(crate) async fn me(caller: Caller) -> Json<Value> {
    let mut v = principal_json(&caller.0);
    v["expires_at"] = json!(caller.1.expires_at);
    Json(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempted_names_are_bounded_at_a_character_boundary() {
        assert_eq!(bounded("inv1"), "inv1");
        assert_eq!(bounded(&"a".repeat(100)).len(), MAX_USERNAME_BYTES);
        let name = format!("{}é", "a".repeat(MAX_USERNAME_BYTES - 1));
        assert_eq!(bounded(&name), "a".repeat(MAX_USERNAME_BYTES - 1));
    }
}
