//! Finding an inmate and linking a family number, under `/api/v1/family` (a family
//! session; CSRF as the other family routes): search the roster, ask to become a contact
//! for one of the family's numbers, have the gateway call that number to prove it is
//! theirs, follow each request's status, withdraw one. The rules and why are
//! [`crate::family::linking`]'s; staff approve or deny the contact the proved request
//! creates with the existing contact routes.

use super::family::account_of;
use crate::api::auth::{ApiJson, ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::family::linking::{self, RosterQuery};
use crate::store::{FamilyAccount, LinkRequest, NewLinkRequest, RateScope};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// A day, the window of the verification call limits.
const DAY_SECS: u64 = 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RosterSearch {
    facility: String,
    #[serde(default)]
    booking_number: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewLink {
    inmate_id: String,
    number: String,
    name: String,
    #[serde(default)]
    relationship: String,
    #[serde(default)]
    video: bool,
}

/// `GET /family/facilities`: the facilities a roster search may name (id and name only).
pub(crate) async fn facilities(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    account_of(&s, &caller).await?;
    let list: Vec<Value> = s
        .store
        .facilities()
        .await?
        .into_iter()
        .map(|f| json!({ "id": f.id, "name": f.name }))
        .collect();
    Ok(Json(json!({ "facilities": list })))
}

/// `GET /family/roster?facility=…&booking_number=…` or `&last_name=…[&first_name=…]`:
/// what a public roster shows of the inmates in custody that match. Counted against the
/// account (`family.searches_per_account` per `family.rate_window_secs`).
pub(crate) async fn roster(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RosterSearch>,
) -> Result<Json<Value>, ApiError> {
    let account = account_of(&s, &caller).await?;
    let query = RosterQuery::parse(
        q.booking_number.as_deref(),
        q.last_name.as_deref(),
        q.first_name.as_deref(),
    )
    .map_err(|p| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_search",
            p.to_string(),
        )
    })?;
    let f = &s.config.family;
    let subject = format!("roster search {}", account.user_id);
    if !s
        .store
        .family_rate(
            RateScope::Account,
            &subject,
            f.searches_per_account,
            f.rate_window_secs,
        )
        .await?
    {
        return Err(too_many(
            "too many searches: try again later",
            f.rate_window_secs,
        ));
    }
    // An unknown facility finds nobody (the same answer as a facility without a match).
    let mut found = s.store.roster_search(q.facility.trim(), &query).await?;
    let more = found.len() > linking::MAX_ROSTER_RESULTS;
    found.truncate(linking::MAX_ROSTER_RESULTS);
    Ok(Json(json!({ "inmates": found, "more": more })))
}

/// `GET /family/links`: the account's requests, newest first, each with its status.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let account = account_of(&s, &caller).await?;
    let links = s.store.link_requests(&account.user_id).await?;
    Ok(Json(json!({ "links": links })))
}

/// `POST /family/links`: asks to become a contact of an inmate for one of the family's
/// numbers; 201 with the request, pending verification.
pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewLink>,
) -> Result<(StatusCode, Json<LinkRequest>), ApiError> {
    let account = account_of(&s, &caller).await?;
    let new = NewLinkRequest {
        inmate_id: body.inmate_id.trim(),
        number: &body.number,
        name: &body.name,
        relationship: &body.relationship,
        video: body.video,
    };
    let link = s
        .store
        .link_request_create(&account.user_id, &new, s.config.family.open_link_requests)
        .await?;
    let detail = json!({ "inmate_id": link.inmate_id, "video": link.video });
    s.audit_detail(
        &caller,
        "family.link_request",
        &link.id,
        Some(&link.facility_id),
        detail,
    )
    .await;
    Ok((StatusCode::CREATED, Json(link)))
}

/// `POST /family/links/{id}/call`: a fresh code, shown once in this answer, and the
/// gateway calls the request's number to have it keyed. Limited per number and per
/// account per day; 503 `calls_unavailable` where this node places no calls.
pub(crate) async fn call(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account = account_of(&s, &caller).await?;
    let link = own_link(&s, &account, &id).await?;
    if link.status != linking::LinkStatus::PendingVerification {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_verifying",
            "this request is not waiting for its number to be confirmed",
        ));
    }
    let Some(calls) = s.gateway.as_ref().and_then(|g| g.number_calls.clone()) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "calls_unavailable",
            "this server cannot place the confirmation call now: try again later",
        ));
    };
    let f = &s.config.family;
    let by_account = format!("number call by {}", account.user_id);
    let to_number = format!("number call to {}", link.number);
    let store = &s.store;
    if !store
        .family_rate(
            RateScope::Account,
            &by_account,
            f.verify_calls_per_account,
            DAY_SECS,
        )
        .await?
    {
        return Err(too_many(
            "you have asked for too many confirmation calls today: try again tomorrow",
            DAY_SECS,
        ));
    }
    if !store
        .family_rate(
            RateScope::Account,
            &to_number,
            f.verify_calls_per_number,
            DAY_SECS,
        )
        .await?
    {
        return Err(too_many(
            "this number has had too many confirmation calls today: try again tomorrow",
            DAY_SECS,
        ));
    }
    let code = linking::new_code();
    let key = crate::call::verify::code_key(&s.config);
    let ttl = i64::try_from(f.verify_code_ttl_secs).unwrap_or(600);
    let expires_at = s.store.clock().wall() + chrono::Duration::seconds(ttl);
    let link = s
        .store
        .link_new_code(
            &link.id,
            &linking::code_hash(&key, &link.id, &code),
            expires_at,
        )
        .await?;
    calls.place(
        link.id.clone(),
        link.number.clone(),
        link.facility_id.clone(),
    );
    s.audit(
        &caller,
        "family.link_call",
        &link.id,
        Some(&link.facility_id),
    )
    .await;
    let body = json!({ "link": link, "code": code, "expires_at": expires_at });
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /family/links/{id}/withdraw`: the family withdraws a request (and, once proved,
/// the contact it created).
pub(crate) async fn withdraw(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LinkRequest>, ApiError> {
    let account = account_of(&s, &caller).await?;
    let link = own_link(&s, &account, &id).await?;
    let link = s.store.link_withdraw(&link.id).await?;
    s.audit(
        &caller,
        "family.link_withdrawn",
        &link.id,
        Some(&link.facility_id),
    )
    .await;
    Ok(Json(link))
}

/// The account's request `id`; another account's is as unknown as a missing one (404).
async fn own_link(
    s: &AppState,
    account: &FamilyAccount,
    id: &str,
) -> Result<LinkRequest, ApiError> {
    match s.store.link_request(id).await {
        Ok(l) if l.user_id == account.user_id => Ok(l),
        Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => Err(ApiError::not_found(
            format!("link request '{}' not found", crate::text::quote(id)),
        )),
        Err(e) => Err(e.into()),
    }
}

fn too_many(message: &'static str, window_secs: u64) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message)
        .retry_after(window_secs)
}
