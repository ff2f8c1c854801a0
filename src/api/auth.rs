//! Bearer-token authentication, roles and facility scope, and the other request parts
//! every handler needs (idempotency key, JSON body with JSON errors).
//!
//! A request without an `Authorization` header may carry a family portal session in the
//! [`FAMILY_COOKIE`] cookie instead: the same kind of token (a login of the family user),
//! so it becomes the same [`Caller`]. A cookie is sent by the browser on its own, so every
//! request carried by it other than GET and HEAD must also carry the session's CSRF
//! token in `X-CSRF-Token` ([`crate::family::csrf_token`]), or it is refused with 403
//! `csrf_failed` before any handler runs. Only family sessions are accepted in a cookie.

use super::error::ApiError;
use super::AppState;
use crate::ledger::idempotency::{KEY_RULE, MAX_KEY_CHARS};
use crate::ledger::RequestKey;
use crate::store::{token_hash, Facilities, Principal, Role};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// The authenticated caller: who (`.0`) and how they reached us (`.1`).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal, pub CallerMeta);

/// The request facts about a caller that are not its identity.
#[derive(Debug, Clone, Default)]
pub struct CallerMeta {
    /// The peer address of the connection (`None` when the router is driven without a
    /// socket, as tests do with `oneshot`). The gateway does not trust forwarding headers.
    pub remote_addr: Option<SocketAddr>,
    /// SHA-256 of the bearer token used, hex (`None` for the configured admin token).
    pub token_hash: Option<String>,
    /// When that token expires (`None` for the configured admin token).
    pub expires_at: Option<DateTime<Utc>>,
    /// A kiosk's inmate sitting (header `X-Kiosk-Sitting`), checked against the kiosk's
    /// token: the one inmate the kiosk may act for ([`crate::kiosk`]).
    pub sitting: Option<crate::kiosk::Sitting>,
}

/// The connection's peer address, when the server provides it (`ConnectInfo`).
pub fn remote_addr(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// The connection's peer address as an extractor that never fails (absent without a
/// socket, as with `oneshot` in tests).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for RemoteAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<RemoteAddr, Self::Rejection> {
        Ok(RemoteAddr(remote_addr(parts)))
    }
}

/// The bearer token of a request, if it carries a well-formed one.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))
}

/// A JSON body whose rejections are JSON errors.
#[derive(FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A raw body (a CSV upload) whose rejections, a body over the limit among them, are
/// JSON errors.
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<ApiBytes, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state).await?;
        Ok(ApiBytes(bytes))
    }
}

/// Query parameters whose rejections are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The `Idempotency-Key` header every money-moving request must carry: 1-200 printable
/// ASCII characters ([`crate::ledger::idempotency::KEY_RULE`]). It names a request only
/// together with its caller ([`IdempotencyKey::of`]).
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// The key in `caller`'s namespace, as the ledger stores it.
    pub fn of(&self, caller: &Caller) -> Result<RequestKey, ApiError> {
        RequestKey::new(&caller.key_namespace(), &self.0)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .is_none()
        {
            if let Some(session) = family_cookie(parts) {
                return Caller::of_family_cookie(state, parts, session).await;
            }
        }
        let token = bearer(parts)?;
        let remote_addr = remote_addr(parts);
        if let Some(admin) = &state.admin_token_hash {
            let given = Sha256::digest(token.as_bytes());
            if bool::from(given.as_slice().ct_eq(&admin[..])) {
                return Ok(Caller::admin(remote_addr));
            }
        }
        let mut caller = Caller::of_token_hash(state, &token_hash(token), remote_addr)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or expired token"))?;
        if let Some(h) = parts.headers.get(SITTING_HEADER) {
            caller.1.sitting = Some(sitting(state, &caller, h)?);
        }
        Ok(caller)
    }
}

/// The cookie that carries a family portal session.
pub const FAMILY_COOKIE: &str = "sp_family";

/// The family session token of a request's `Cookie` headers, if any.
pub fn family_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == FAMILY_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// The header a kiosk sends an inmate's sitting in.
pub const SITTING_HEADER: &str = "x-kiosk-sitting";

/// The sitting in `header`, if it is one of this caller's (a kiosk's): 401 with the
/// refusal's code otherwise, so the page asks for the PIN again.
fn sitting(
    state: &AppState,
    caller: &Caller,
    header: &axum::http::HeaderValue,
) -> Result<crate::kiosk::Sitting, ApiError> {
    let (Role::Kiosk, Some(kiosk)) = (caller.0.role, caller.0.user_id.as_deref()) else {
        return Err(ApiError::bad_request(
            "X-Kiosk-Sitting is sent only with a kiosk's token",
        ));
    };
    let text = header.to_str().unwrap_or_default().trim();
    let now = state.store.clock().wall();
    crate::kiosk::admit(&state.sitting_key, text, kiosk, now)
        .map_err(|r| ApiError::new(StatusCode::UNAUTHORIZED, r.code(), r.to_string()))
}

fn sitting_required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "sitting_required",
        "a kiosk reads an inmate's records only while that inmate is signed in at it with \
         calling ID and PIN (POST /kiosk/sittings)",
    )
}

impl Caller {
    /// The caller of a family session cookie: a stored, unexpired family token, and for a
    /// request that may change something, the session's CSRF token in `X-CSRF-Token`.
    async fn of_family_cookie(
        state: &AppState,
        parts: &Parts,
        token: &str,
    ) -> Result<Caller, ApiError> {
        let hash = token_hash(token);
        let caller = Caller::of_token_hash(state, &hash, remote_addr(parts))
            .await?
            .filter(|c| c.0.role == Role::Family)
            .ok_or_else(|| ApiError::unauthorized("the session has ended: log in again"))?;
        let safe = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        if !safe {
            let expected = crate::family::csrf_token(&state.ticket_key, &hash);
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let same =
                !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
            if !same {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "this request needs the session's X-CSRF-Token header: reload the page",
                ));
            }
        }
        Ok(caller)
    }

    /// The configured administrator.
    fn admin(remote_addr: Option<SocketAddr>) -> Caller {
        let admin = Principal {
            subject: "admin".into(),
            role: Role::Admin,
            facilities: Facilities::All,
            user_id: None,
        };
        let meta = CallerMeta {
            remote_addr,
            ..CallerMeta::default()
        };
        Caller(admin, meta)
    }

    /// The caller of a stored, unexpired token given by its SHA-256 (hex); `None` when no
    /// such token is valid now.
    async fn of_token_hash(
        state: &AppState,
        hash: &str,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Option<Caller>, ApiError> {
        let Some(t) = state.store.token_session_by_hash(hash).await? else {
            return Ok(None);
        };
        let meta = CallerMeta {
            remote_addr,
            token_hash: Some(hash.to_string()),
            expires_at: Some(t.expires_at),
            sitting: None,
        };
        Ok(Some(Caller(t.principal, meta)))
    }

    /// How a recording ticket names this caller's token (see [`crate::api::tickets`]).
    pub fn ticket_token_ref(&self, state: &AppState) -> String {
        match (&self.1.token_hash, &state.admin_token_hash) {
            (Some(hash), _) => hash.clone(),
            (None, Some(admin)) => super::tickets::admin_ref(&state.ticket_key, admin),
            // Not reachable (a caller without a token hash is the configured admin), and
            // a ticket naming nothing is refused at fetch time.
            (None, None) => String::new(),
        }
    }

    /// The caller a recording ticket was issued to, as of now: `None` when its token no
    /// longer exists (logged out, expired, or the admin token was changed or disabled).
    pub async fn of_ticket_token(
        state: &AppState,
        token_ref: &str,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Option<Caller>, ApiError> {
        if token_ref.starts_with("admin:") {
            let current = state
                .admin_token_hash
                .as_ref()
                .map(|admin| super::tickets::admin_ref(&state.ticket_key, admin));
            let same =
                current.is_some_and(|c| bool::from(c.as_bytes().ct_eq(token_ref.as_bytes())));
            return Ok(same.then(|| Caller::admin(remote_addr)));
        }
        if token_ref.is_empty() {
            return Ok(None);
        }
        Caller::of_token_hash(state, token_ref, remote_addr).await
    }
}

impl Caller {
    /// Refuses callers whose role is not in `roles`.
    /// The inmate of the kiosk's sitting: 403 `sitting_required` without one.
    pub fn sitting_inmate(&self) -> Result<&str, ApiError> {
        self.1
            .sitting
            .as_ref()
            .map(|s| s.inmate_id.as_str())
            .ok_or_else(sitting_required)
    }

    /// For a kiosk: whether it may act for `inmate_id` (only in that inmate's sitting).
    /// Any other role passes here (its own checks apply).
    pub fn kiosk_acts_for(&self, inmate_id: &str) -> Result<(), ApiError> {
        if self.0.role != Role::Kiosk || self.sitting_inmate()? == inmate_id {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "other_inmate",
            "the kiosk's sitting is another inmate's",
        ))
    }

    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not do this",
                self.0.role.as_str()
            )))
        }
    }

    /// Refuses callers not assigned to `facility_id`.
    pub fn scope(&self, facility_id: &str) -> Result<(), ApiError> {
        if self.0.may_access(facility_id) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "not authorized for facility {}",
                crate::text::quote(facility_id)
            )))
        }
    }

    /// Role and facility together.
    pub fn allow(&self, roles: &[Role], facility_id: &str) -> Result<(), ApiError> {
        self.require(roles)?;
        self.scope(facility_id)
    }

    /// Admins of every facility only (creating facilities, global block list, tokens).
    pub fn require_global_admin(&self) -> Result<(), ApiError> {
        self.require(&[Role::Admin])?;
        if self.0.facilities == Facilities::All {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "needs an administrator of every facility",
            ))
        }
    }

    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// Whose idempotency keys this caller's are: `user:<user id>` for every token of a
    /// user (a retry after logging in again finds its first answer), `admin-token` for
    /// the configured administrator token.
    pub fn key_namespace(&self) -> String {
        match &self.0.user_id {
            Some(id) => format!("user:{id}"),
            None => "admin-token".to_string(),
        }
    }

    /// The connection's peer address as text, for the audit log.
    pub fn remote(&self) -> Option<String> {
        self.1.remote_addr.map(|a| a.to_string())
    }

    /// Admins and investigators of `facility_id`: who may search, replay and listen.
    pub fn investigate(&self, facility_id: &str) -> Result<(), ApiError> {
        self.allow(&[Role::Admin, Role::Investigator], facility_id)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<IdempotencyKey, ApiError> {
        let v = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::bad_request("money-moving requests need an Idempotency-Key header")
        })?;
        let key = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| KEY_RULE.check_required("Idempotency-Key", k).is_ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Idempotency-Key must be 1-{MAX_KEY_CHARS} printable ASCII characters without spaces"
                ))
            })?;
        Ok(IdempotencyKey(key.to_string()))
    }
}
