//! The two ways into a video visit, and what a participant learns with its pass
//! ([`crate::visit::pass`] has the pass itself and why it is stateless).
//!
//! - `POST /visits/{id}/join-link`: the **visitor's** join link, for an approved visit
//!   whose slot has not ended, to staff (admins of the facility) or to the family user
//!   bound to the visit's contact. The link is the visitor page's path with the pass in
//!   the fragment, `/visit/join#<pass>`: a browser never sends a fragment to a server, so
//!   the pass stays out of access logs, proxies and `Referer` headers; the page reads it
//!   from `location.hash` and sends it as `Authorization: Visit <pass>`. Audited
//!   `visit.join_link`.
//! - `POST /visits/{id}/kiosk-join`: the **inmate** confirms at the kiosk of the visit's
//!   station with calling ID and PIN, checked by the handsets' own check
//!   ([`crate::call::checks::check_pin`]: the same PIN hash, the same attempt log and
//!   locks), the station counted where a handset and its line are
//!   ([`crate::call::checks::station_line`], [`PinLockout::at_station`]). The PIN is
//!   checked only for a visit of this station that can be joined now by an active inmate,
//!   so a kiosk is no place to guess outside a visit. Audited `visit.kiosk_join`, never the digits.
//! - `GET /visit-session`: what a pass lets in (either side), read-only.
//!
//! Refusals, each with its own code: a pass that is not ours or has run out is a 401
//! (`link_invalid`, `link_expired`), like a token; a visit that cannot be joined now is a
//! 409 (`link_not_yet_valid`, `visit_cancelled`, `visit_not_open`, `visit_over`), like the
//! other state refusals of visits; a kiosk of another station and a refused ID + PIN are
//! 403 (`wrong_station`, `pin_invalid`, `account_locked`, `station_locked`): the kiosk's
//! own token is good, what it asked is not allowed.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::call::checks::{check_pin, station_line, PinEntry};
use crate::call::stats::PinOutcome;
use crate::call::PinVerdict;
use crate::policy::lockout::PinLockout;
use crate::store::{InmateStatus, Role, StoreError, Visit};
use crate::visit::pass::{self, Pass, PassRefusal, Side};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// Where the visitor page is served; the pass follows in the fragment.
pub(crate) const VISITOR_PAGE: &str = "/visit/join";

/// The scheme of a pass in `Authorization`.
const SCHEME: &str = "Visit ";

impl From<PassRefusal> for ApiError {
    fn from(r: PassRefusal) -> ApiError {
        let status = match r {
            PassRefusal::Invalid | PassRefusal::Expired => StatusCode::UNAUTHORIZED,
            PassRefusal::NotYetValid | PassRefusal::Cancelled | PassRefusal::NotOpen(_) => {
                StatusCode::CONFLICT
            }
        };
        ApiError::new(status, r.code(), r.to_string())
    }
}

fn lead(s: &AppState) -> Duration {
    Duration::seconds(i64::from(s.config.visits.join_lead_secs))
}

/// A pass of `side` for `v`, good through its join window.
fn issue(s: &AppState, v: &Visit, side: Side, now: DateTime<Utc>) -> (Pass, String) {
    let (valid_from, expires_at) = pass::window(v.starts_at, v.ends_at, lead(s));
    let p = Pass {
        side,
        visit_id: v.id.clone(),
        valid_from,
        expires_at,
        issued_at: now,
    };
    let text = pass::seal(&s.pass_key, &p);
    (p, text)
}

pub(crate) async fn join_link(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Admin, Role::Family])?;
    // Staff of the facility, or the family user bound to the visit's contact (403).
    let v = super::visits::visible(&s, &caller, &id).await?;
    let now = s.store.clock().wall();
    let (from, to) = pass::window(v.starts_at, v.ends_at, lead(&s));
    match pass::admit(v.status, from, to, now) {
        // Before the window is when a link is sent.
        Ok(()) | Err(PassRefusal::NotYetValid) => {}
        Err(PassRefusal::Expired) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "visit_over",
                "the visit's slot is over: it can no longer be joined",
            ))
        }
        Err(r) => return Err(r.into()),
    }
    let (p, text) = issue(&s, &v, Side::Visitor, now);
    let detail = json!({ "side": p.side.as_str(), "contact_id": v.contact_id,
        "valid_from": p.valid_from, "expires_at": p.expires_at });
    s.audit_detail(
        &caller,
        "visit.join_link",
        &v.id,
        Some(&v.facility_id),
        detail,
    )
    .await;
    let body = json!({ "visit_id": v.id, "side": p.side.as_str(),
        "url": format!("{VISITOR_PAGE}#{text}"),
        "valid_from": p.valid_from, "expires_at": p.expires_at });
    Ok((StatusCode::CREATED, Json(body)))
}

/// What the inmate keys at the kiosk.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KioskJoin {
    calling_id: String,
    pin: String,
}

impl std::fmt::Debug for KioskJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KioskJoin")
            .field(
                "calling_id",
                &format_args!("<{} digits>", self.calling_id.len()),
            )
            .field("pin", &format_args!("<redacted>"))
            .finish()
    }
}

/// Digits, at most 20 (what a keypad sends); anything else is refused before it is
/// counted or compared.
fn keyed(name: &str, value: &str) -> Result<(), ApiError> {
    if !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        format!("{name} must be 1 to 20 digits"),
    ))
}

fn refused(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

fn wrong_pin(message: &str) -> ApiError {
    refused("pin_invalid", message)
}

/// Checks calling ID + PIN keyed at a kiosk, on `line` (`station:<id>` for a visit
/// station), with the handsets' check, lockout and counters; the inmate they are of.
pub(crate) async fn kiosk_pin(
    s: &AppState,
    line: &str,
    facility_id: &str,
    body: &KioskJoin,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    keyed("calling_id", &body.calling_id)?;
    keyed("pin", &body.pin)?;
    let entry = PinEntry {
        facility_id,
        handset_id: None,
        line,
        calling_id: &body.calling_id,
        pin: &body.pin,
    };
    let policy = PinLockout::from_config(&s.config.security).at_station();
    let check = check_pin(&s.store, entry, &policy, now).await?;
    if let Some(g) = &s.gateway {
        // The handsets' counters: a lockout or a guessing alert is one whichever keypad
        // it came from.
        g.calls.pin_attempt(match check.verdict {
            PinVerdict::Valid { .. } => PinOutcome::Valid,
            PinVerdict::Wrong => PinOutcome::Wrong,
            PinVerdict::Locked => PinOutcome::PhoneLocked,
            PinVerdict::AccountLocked => PinOutcome::AccountLocked,
        });
        check.locked.iter().for_each(|l| g.calls.locked(*l));
        if check.alert.is_some() {
            g.calls.alert();
        }
    }
    match check.verdict {
        PinVerdict::Valid { inmate_id } => Ok(inmate_id),
        PinVerdict::Wrong => Err(wrong_pin("the calling ID and PIN do not match")),
        PinVerdict::AccountLocked => Err(refused(
            "account_locked",
            "the inmate's PIN entry is locked after repeated failures; staff can clear it",
        )),
        PinVerdict::Locked => Err(refused(
            "station_locked",
            "ID + PIN entry at this kiosk is locked after repeated failures; staff can clear it",
        )),
    }
}

pub(crate) async fn kiosk_join(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<KioskJoin>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Kiosk])?;
    let station = match caller.0.user_id.as_deref() {
        Some(u) => s.store.kiosk_station(u).await?,
        None => None,
    };
    let v = s.store.visit(&id).await?;
    caller.scope(&v.facility_id)?;
    let Some(station) = station.filter(|st| *st == v.station_id) else {
        return Err(refused(
            "wrong_station",
            "the visit is at another station than the one this kiosk is bound to",
        ));
    };
    let now = s.store.clock().wall();
    let (from, to) = pass::window(v.starts_at, v.ends_at, lead(&s));
    match pass::admit(v.status, from, to, now) {
        Ok(()) => {}
        Err(PassRefusal::Cancelled) => return Err(PassRefusal::Cancelled.into()),
        Err(PassRefusal::NotYetValid) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "visit_not_open",
                format!(
                    "the visit opens for joining at {from} ({} minutes before its slot)",
                    lead(&s).num_minutes()
                ),
            ))
        }
        Err(PassRefusal::Expired) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "visit_not_open",
                "the visit's slot is over",
            ))
        }
        Err(r) => return Err(r.into()),
    }
    // A suspended or released inmate joins nothing, as such an inmate calls nobody.
    let inmate = s.store.inmate(&v.inmate_id).await?;
    if inmate.status != InmateStatus::Active {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "inmate_inactive",
            "the inmate is not active (suspended or released): the visit cannot be joined",
        ));
    }
    match kiosk_pin(&s, &station_line(&station), &v.facility_id, &body, now).await? {
        inmate_id if inmate_id == v.inmate_id => {}
        // Another inmate's right pair is answered as a wrong one: the kiosk tells nobody
        // whose PIN they guessed.
        _ => {
            return Err(wrong_pin(
                "the calling ID and PIN are not those of the visit's inmate",
            ))
        }
    }
    let (p, text) = issue(&s, &v, Side::Inmate, now);
    let detail = json!({ "side": p.side.as_str(), "station_id": station, "inmate_id": v.inmate_id,
        "valid_from": p.valid_from, "expires_at": p.expires_at });
    s.audit_detail(
        &caller,
        "visit.kiosk_join",
        &v.id,
        Some(&v.facility_id),
        detail,
    )
    .await;
    Ok(Json(
        json!({ "visit_id": v.id, "side": p.side.as_str(), "secret": text,
        "valid_from": p.valid_from, "expires_at": p.expires_at }),
    ))
}

/// The pass of `Authorization: Visit <pass>`; anything else is `link_invalid`.
fn pass_text(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix(SCHEME))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PassRefusal::Invalid.into())
}

pub(crate) async fn session(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let p = pass::open(&s.pass_key, pass_text(&headers)?)?;
    let v = match s.store.visit(&p.visit_id).await {
        Ok(v) => v,
        Err(StoreError::NotFound { .. }) => return Err(PassRefusal::Invalid.into()),
        Err(e) => return Err(e.into()),
    };
    let now = s.store.clock().wall();
    pass::admit(v.status, p.valid_from, p.expires_at, now)?;
    let inmate = s.store.inmate(&v.inmate_id).await?;
    Ok(Json(json!({
        "visit_id": v.id, "side": p.side.as_str(), "status": v.status,
        "slot_start": v.starts_at, "slot_end": v.ends_at,
        "valid_from": p.valid_from, "expires_at": p.expires_at,
        "opens_in_secs": pass::opens_in_secs(v.starts_at, now),
        "ends_in_secs": (v.ends_at - now).num_seconds().max(0),
        "inmate_name": pass::short_name(&inmate.first_name, &inmate.last_name),
        // Whether the page shows the visitor a balance: not yet. A visit a family member
        // booked may be paid from their prepaid account (`session::payer`, chosen when
        // the visit starts); the portal shows that account's balance and statement.
        "visitor_pays": false,
        "recorded": !v.privileged,
    })))
}
