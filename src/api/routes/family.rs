//! The family portal's accounts under `/api/v1/family`: register, verify the address, log
//! in to a cookie session, log out, reset a forgotten password by an emailed link, change
//! the password or the address, close the account.
//!
//! No answer tells whether an address has an account: registering a taken address and
//! asking a reset for an unknown one answer exactly as the other case (202, the same
//! body), after the same password work; the difference goes by email to the address's
//! owner. A login answers 401 `invalid_credentials` alike for every refusal (an unknown
//! address, a wrong password, a lock), as the investigators' login does; only the right
//! password of an unverified account learns `email_not_verified`.
//!
//! Limits: every unauthenticated route counts against its peer address
//! (`family.attempts_per_address` per `family.rate_window_secs`, then 429
//! `too_many_attempts`); emails to one address are capped (`family.emails_per_account`,
//! silently); failed logins lock the account as `http.login_lockout_*` say.
//!
//! The session cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when
//! `family.public_url` is `https://`. Requests it carries that change anything need the
//! session's `X-CSRF-Token` ([`crate::api::auth`]); the routes before a session exists
//! take only `application/json` bodies, which a cross-site form cannot send.

use crate::api::auth::{ApiJson, Caller, RemoteAddr, FAMILY_COOKIE};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::family::{self, texts, LinkPurpose};
use crate::store::passwords::{self, MAX_PASSWORD_BYTES};
use crate::store::{
    AuditEntry, FamilyAccount, LockoutPolicy, LoginOutcome, RateScope, Registration, Role,
};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Address {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Link {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reset {
    token: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailChange {
    password: String,
    new_email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Password {
    password: String,
}

/// `POST /family/register`: 202 whether or not the address had an account.
pub(crate) async fn register(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    limit_address(&s, remote).await?;
    let email = email_of(&body.email, "email")?;
    let outcome = s.store.family_register(&email, &body.password).await?;
    let (account, action, password_hash) = match &outcome {
        Registration::Created(a) => (a, "family.register", None),
        Registration::Existing {
            account,
            password_hash,
        } => (
            account,
            "family.register_repeated",
            Some(password_hash.as_str()),
        ),
    };
    audit_anonymous(&s, &account.username, action, remote).await;
    if may_email(&s, &email).await? {
        let base = public_url(&s);
        let mail = if account.verified {
            let secret = new_link(&s, account, LinkPurpose::Reset).await?;
            let link = family::link(&base, LinkPurpose::Reset, &secret);
            let hours = texts::hours(s.config.family.reset_link_ttl_secs);
            texts::already_registered(&email, &link, hours)
        } else {
            // Opening this link sets this registration's password: an earlier registrant
            // of an address they may not own keeps no way in.
            let ttl = s.config.family.verify_link_ttl_secs;
            let secret = s
                .store
                .family_new_link(
                    &account.user_id,
                    LinkPurpose::Verify,
                    &email,
                    ttl,
                    password_hash,
                )
                .await?;
            let link = family::link(&base, LinkPurpose::Verify, &secret);
            texts::verify(&email, &link, texts::hours(ttl))
        };
        crate::mail::send_later(s.config.clone(), mail);
    }
    Ok(check_email())
}

/// `POST /family/verify`: uses a verification link.
pub(crate) async fn verify(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Link>,
) -> Result<Json<Value>, ApiError> {
    limit_address(&s, remote).await?;
    let used = use_link(&s, &body.token, LinkPurpose::Verify).await?;
    if let Some(hash) = &used.password_hash {
        s.store
            .family_set_password_hash(&used.user_id, hash)
            .await?;
    }
    s.store.family_verify(&used.user_id, &used.email).await?;
    audit_user(&s, &used.user_id, "family.verify", remote).await;
    Ok(Json(json!({ "status": "verified" })))
}

/// `POST /family/login`: a session cookie, and the session's CSRF token in the body.
pub(crate) async fn login(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    limit_address(&s, remote).await?;
    let email = email_of(&body.email, "email")?;
    if body.password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid_credentials());
    }
    let account = s.store.family_account_by_email(&email).await?;
    // No account: the empty username, which no user has, so the same work is done.
    let username = account.as_ref().map_or("", |a| a.username.as_str());
    let http = &s.config.http;
    let policy = LockoutPolicy {
        after_failures: http.login_lockout_after_failures,
        lock_secs: http.login_lockout_secs,
    };
    let outcome = s
        .store
        .login(username, &body.password, session_ttl(&s), policy)
        .await?;
    let (action, detail) = match &outcome {
        LoginOutcome::Ok(_) => ("family.login", json!({})),
        LoginOutcome::Refused(why) => ("family.login_failed", json!({ "reason": why })),
    };
    let actor = if username.is_empty() {
        "unknown family address"
    } else {
        username
    };
    s.write_audit(AuditEntry {
        actor,
        action,
        target: actor,
        facility_id: None,
        detail,
        remote_addr: remote.map(|a| a.to_string()).as_deref(),
    })
    .await;
    let (LoginOutcome::Ok(session), Some(account)) = (outcome, account) else {
        return Err(invalid_credentials());
    };
    if !account.verified {
        s.store
            .revoke_token(&crate::store::token_hash(&session.token))
            .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "email_not_verified",
            "confirm your email address first: open the link we emailed you \
             (register again with the same address to get a new one)",
        ));
    }
    Ok(with_session(
        &s,
        StatusCode::OK,
        &session.token,
        session_json(&s, &account, &session.token, session.expires_at),
    ))
}

/// `GET /family/session`: the account of the session, and its CSRF token.
pub(crate) async fn session(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let account = account_of(&s, &caller).await?;
    let mut v = json!({
        "email": account.email,
        "created_at": account.created_at,
        "expires_at": caller.1.expires_at,
    });
    if let Some(hash) = &caller.1.token_hash {
        v["csrf_token"] = json!(family::csrf_token(&s.ticket_key, hash));
    }
    Ok(Json(v))
}

/// `POST /family/logout`: ends this session.
pub(crate) async fn logout(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    account_of(&s, &caller).await?;
    if let Some(hash) = &caller.1.token_hash {
        s.store.revoke_token(hash).await?;
    }
    s.audit(&caller, "family.logout", caller.subject(), None)
        .await;
    Ok(without_session(&s, StatusCode::NO_CONTENT, None))
}

/// `POST /family/password/forgot`: 202 whether or not the address has an account.
pub(crate) async fn forgot(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Address>,
) -> Result<Response, ApiError> {
    limit_address(&s, remote).await?;
    let email = email_of(&body.email, "email")?;
    let account = s.store.family_account_by_email(&email).await?;
    // Counted for an unknown address too: the same database work either way.
    let may = may_email(&s, &email).await?;
    if let Some(account) = account {
        audit_anonymous(&s, &account.username, "family.reset_requested", remote).await;
        if may {
            let secret = new_link(&s, &account, LinkPurpose::Reset).await?;
            let link = family::link(&public_url(&s), LinkPurpose::Reset, &secret);
            let hours = texts::hours(s.config.family.reset_link_ttl_secs);
            crate::mail::send_later(s.config.clone(), texts::reset(&email, &link, hours));
        }
    }
    Ok(check_email())
}

/// `POST /family/password/reset`: a new password by a reset link; every session ends.
pub(crate) async fn reset(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Reset>,
) -> Result<Response, ApiError> {
    limit_address(&s, remote).await?;
    // A password the rules refuse does not use up the link.
    passwords::check_rules(&body.password)?;
    let used = use_link(&s, &body.token, LinkPurpose::Reset).await?;
    s.store
        .family_set_password(&used.user_id, &body.password)
        .await?;
    // The link proved the address: an unverified account is verified by it too.
    s.store.family_verify(&used.user_id, &used.email).await?;
    audit_user(&s, &used.user_id, "family.password_reset", remote).await;
    notify(&s, &used.email, texts::PASSWORD_RESET);
    Ok(without_session(
        &s,
        StatusCode::OK,
        Some(json!({ "status": "password_reset" })),
    ))
}

/// `POST /family/password`: a new password; every session ends, this one is replaced.
pub(crate) async fn change_password(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let account = account_of(&s, &caller).await?;
    passwords::check_rules(&body.new_password)?;
    check_password(&s, &account, &body.current_password).await?;
    s.store
        .family_set_password(&account.user_id, &body.new_password)
        .await?;
    let (token, expires_at) = s
        .store
        .family_new_session(&account.user_id, session_ttl(&s))
        .await?;
    s.audit(&caller, "family.password_changed", &account.user_id, None)
        .await;
    notify(&s, &account.email, texts::PASSWORD_CHANGED);
    let body = session_json(&s, &account, &token, expires_at);
    Ok(with_session(&s, StatusCode::OK, &token, body))
}

/// `POST /family/email`: emails a confirmation link to the new address.
pub(crate) async fn change_email(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<EmailChange>,
) -> Result<Response, ApiError> {
    let account = account_of(&s, &caller).await?;
    let email = email_of(&body.new_email, "new_email")?;
    if email == account.email {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "new_email: that is already the account's address",
        ));
    }
    check_password(&s, &account, &body.password).await?;
    s.audit(
        &caller,
        "family.email_change_requested",
        &account.user_id,
        None,
    )
    .await;
    if may_email(&s, &email).await? {
        let secret = s
            .store
            .family_new_link(
                &account.user_id,
                LinkPurpose::Email,
                &email,
                s.config.family.verify_link_ttl_secs,
                None,
            )
            .await?;
        let link = family::link(&public_url(&s), LinkPurpose::Email, &secret);
        let hours = texts::hours(s.config.family.verify_link_ttl_secs);
        crate::mail::send_later(
            s.config.clone(),
            texts::confirm_new_address(&email, &link, hours),
        );
    }
    Ok(check_email())
}

/// `POST /family/email/confirm`: uses a change-of-address link; every session ends.
pub(crate) async fn confirm_email(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    ApiJson(body): ApiJson<Link>,
) -> Result<Response, ApiError> {
    limit_address(&s, remote).await?;
    let used = use_link(&s, &body.token, LinkPurpose::Email).await?;
    let old = s.store.family_account(&used.user_id).await?;
    if !s
        .store
        .family_change_email(&used.user_id, &used.email)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "email_taken",
            "another account uses this address now; the account keeps its old one",
        ));
    }
    audit_user(&s, &used.user_id, "family.email_changed", remote).await;
    if let Some(old) = old {
        notify(&s, &old.email, texts::EMAIL_CHANGED);
    }
    Ok(without_session(
        &s,
        StatusCode::OK,
        Some(json!({ "status": "email_changed" })),
    ))
}

/// `POST /family/close`: closes the account (its password confirms).
pub(crate) async fn close(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Password>,
) -> Result<Response, ApiError> {
    let account = account_of(&s, &caller).await?;
    check_password(&s, &account, &body.password).await?;
    s.store.family_close(&account.user_id).await?;
    s.audit(&caller, "family.close", &account.user_id, None)
        .await;
    notify(&s, &account.email, texts::ACCOUNT_CLOSED);
    Ok(without_session(&s, StatusCode::NO_CONTENT, None))
}

/// The open family account of a caller (a family session or a family user's token).
pub(super) async fn account_of(s: &AppState, caller: &Caller) -> Result<FamilyAccount, ApiError> {
    caller.require(&[Role::Family])?;
    let account = match &caller.0.user_id {
        Some(id) => s.store.family_account(id).await?,
        None => None,
    };
    account
        .ok_or_else(|| ApiError::forbidden("this token is not a family portal account's session"))
}

/// 403 `wrong_password` unless `password` is the account's.
async fn check_password(
    s: &AppState,
    account: &FamilyAccount,
    password: &str,
) -> Result<(), ApiError> {
    if password.len() <= MAX_PASSWORD_BYTES
        && s.store
            .family_check_password(&account.user_id, password)
            .await?
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "wrong_password",
        "the current password is not right",
    ))
}

/// The address in its stored form, or 422 naming `field`.
fn email_of(raw: &str, field: &str) -> Result<String, ApiError> {
    family::normalize_email(raw).map_err(|p| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("{field}: {p}"),
        )
    })
}

/// Uses a link, or 400 `invalid_link` (unknown, used, expired or of a closed account:
/// one answer).
async fn use_link(
    s: &AppState,
    token: &str,
    purpose: LinkPurpose,
) -> Result<crate::store::UsedLink, ApiError> {
    let well_formed = token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit());
    let used = if well_formed {
        s.store.family_use_link(token, purpose).await?
    } else {
        None
    };
    used.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_link",
            "this link does not work: it may have been used already or have expired; \
             ask for a new one",
        )
    })
}

async fn new_link(
    s: &AppState,
    account: &FamilyAccount,
    purpose: LinkPurpose,
) -> Result<String, ApiError> {
    let ttl = match purpose {
        LinkPurpose::Reset => s.config.family.reset_link_ttl_secs,
        LinkPurpose::Verify | LinkPurpose::Email => s.config.family.verify_link_ttl_secs,
    };
    Ok(s.store
        .family_new_link(&account.user_id, purpose, &account.email, ttl, None)
        .await?)
}

/// 429 once the peer address has made its share of attempts in the window (a request
/// without a peer address, as in-process tests send, is not counted).
async fn limit_address(s: &AppState, remote: Option<SocketAddr>) -> Result<(), ApiError> {
    let Some(remote) = remote else { return Ok(()) };
    let f = &s.config.family;
    let ip = remote.ip().to_string();
    if s.store
        .family_rate(
            RateScope::Address,
            &ip,
            f.attempts_per_address,
            f.rate_window_secs,
        )
        .await?
    {
        Ok(())
    } else {
        tracing::warn!(remote = %ip, "family portal attempts over the limit for this address");
        // The window slides: after its length, every attempt in it has aged out.
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many attempts from this network: try again later",
        )
        .retry_after(f.rate_window_secs))
    }
}

/// Whether another email may go to `email` in this window (counted when it may).
async fn may_email(s: &AppState, email: &str) -> Result<bool, ApiError> {
    let f = &s.config.family;
    Ok(s.store
        .family_rate(
            RateScope::Account,
            email,
            f.emails_per_account,
            f.rate_window_secs,
        )
        .await?)
}

/// Tells the account's address about a change (not counted against its email limit: it
/// follows an action that needed the password or a link).
fn notify(s: &AppState, email: &str, what: &str) {
    crate::mail::send_later(s.config.clone(), texts::notice(email, what));
}

/// The one answer of register, forgot and change of email.
fn check_email() -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "check_email",
            "message": "if this address can receive it, we have sent it an email with a link; \
                        open the link to go on",
        })),
    )
        .into_response()
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong email or password, or too many failed attempts (try again later)",
    )
}

/// Where emailed links point: `family.public_url`, else `http://` + `http.listen`.
fn public_url(s: &AppState) -> String {
    family::public_url(&s.config)
}

fn session_ttl(s: &AppState) -> i64 {
    i64::try_from(s.config.http.session_ttl_secs).unwrap_or(86_400)
}

fn session_json(
    s: &AppState,
    account: &FamilyAccount,
    token: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "email": account.email,
        "expires_at": expires_at,
        "csrf_token": family::csrf_token(&s.ticket_key, &crate::store::token_hash(token)),
    })
}

/// `Set-Cookie` for a session `token` (or, `None`, one that removes the cookie).
fn cookie(s: &AppState, token: Option<&str>) -> Option<HeaderValue> {
    let secure = if s.config.family.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let (value, max_age) = match token {
        Some(t) => (t, s.config.http.session_ttl_secs),
        None => ("", 0),
    };
    HeaderValue::from_str(&format!(
        "{FAMILY_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

fn with_session(s: &AppState, status: StatusCode, token: &str, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Some(c) = cookie(s, Some(token)) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn without_session(s: &AppState, status: StatusCode, body: Option<Value>) -> Response {
    let mut resp = match body {
        Some(b) => (status, Json(b)).into_response(),
        None => status.into_response(),
    };
    if let Some(c) = cookie(s, None) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

/// An audit entry by the account `username` before it has a session.
async fn audit_anonymous(s: &AppState, username: &str, action: &str, remote: Option<SocketAddr>) {
    s.write_audit(AuditEntry {
        actor: username,
        action,
        target: username,
        facility_id: None,
        detail: json!({ "role": "family" }),
        remote_addr: remote.map(|a| a.to_string()).as_deref(),
    })
    .await;
}

/// [`audit_anonymous`] for the account of user `user_id`.
async fn audit_user(s: &AppState, user_id: &str, action: &str, remote: Option<SocketAddr>) {
    match s.store.family_account(user_id).await {
        Ok(Some(a)) => audit_anonymous(s, &a.username, action, remote).await,
        Ok(None) => audit_anonymous(s, user_id, action, remote).await,
        Err(e) => tracing::error!(error = %e, action, "audit: family account lookup failed"),
    }
}
