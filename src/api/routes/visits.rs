//! Video visits: booking, the staff's decisions, cancellations and no-shows, and the
//! lists (all visits, an inmate's, a contact's, a station's day).
//!
//! Who reaches what:
//!
//! - **admins** of the visit's facility book, approve, deny, cancel and mark no-shows;
//! - **investigators** of the facility read;
//! - **family** users book, read and cancel only the visits of the contacts they visit as
//!   (bound to their user: `POST /tokens` with `contacts`), within their facilities;
//! - **kiosk** users read only the visits of the station they are (bound with
//!   `station_id`), and of those only the approved ones.
//!
//! Every change is audited (`visit.request`, `visit.approve`, `visit.deny`,
//! `visit.cancel`, `visit.no_show`); a refusal changes nothing and is not.

use crate::api::auth::{ApiJson, ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::store::{
    Actor, Facilities, Role, Visit, VisitFilter, VisitPage, VisitRequest, VisitScope, VisitStation,
};
use crate::text;
use crate::visit::{Action, VisitStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// What a caller's role lets it reach among visits.
enum Reach {
    /// Admins and investigators: their facilities.
    Staff,
    /// A family user: the visits of these contacts.
    Family(Vec<String>),
    /// A kiosk user: the visits of this station, if it is bound to one.
    Kiosk(Option<String>),
}

async fn reach(s: &AppState, caller: &Caller) -> Result<Reach, ApiError> {
    let user = caller.0.user_id.as_deref();
    Ok(match caller.0.role {
        Role::Admin | Role::Investigator => Reach::Staff,
        Role::Family => match user {
            Some(u) => Reach::Family(s.store.family_contacts(u).await?),
            None => Reach::Family(Vec::new()),
        },
        Role::Kiosk => match user {
            Some(u) => Reach::Kiosk(s.store.kiosk_station(u).await?),
            None => Reach::Kiosk(None),
        },
    })
}

fn not_yours() -> ApiError {
    ApiError::forbidden("not a visit of a contact this user visits as")
}

fn not_this_station() -> ApiError {
    ApiError::forbidden("a kiosk reads only the visits of the station it is bound to")
}

/// Loads a visit and checks the caller may read it.
pub(super) async fn visible(s: &AppState, caller: &Caller, id: &str) -> Result<Visit, ApiError> {
    let v = s.store.visit(id).await?;
    caller.scope(&v.facility_id)?;
    match reach(s, caller).await? {
        Reach::Staff => {}
        Reach::Family(contacts) if contacts.contains(&v.contact_id) => {}
        Reach::Family(_) => return Err(not_yours()),
        Reach::Kiosk(Some(station)) if station == v.station_id => {}
        Reach::Kiosk(_) => return Err(not_this_station()),
    }
    Ok(v)
}

fn actor(caller: &Caller) -> Actor<'_> {
    Actor {
        subject: caller.subject(),
        role: caller.0.role,
    }
}

async fn audit_visit(s: &AppState, caller: &Caller, action: &str, v: &Visit) {
    let detail = json!({ "status": v.status, "inmate_id": v.inmate_id,
        "contact_id": v.contact_id, "station_id": v.station_id,
        "starts_at": v.starts_at, "privileged": v.privileged });
    s.audit_detail(caller, action, &v.id, Some(&v.facility_id), detail)
        .await;
}

pub(crate) async fn request(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<VisitRequest>,
) -> Result<(StatusCode, Json<Visit>), ApiError> {
    caller.require(&[Role::Admin, Role::Family])?;
    let inmate = s.store.inmate(&body.inmate_id).await?;
    caller.scope(&inmate.facility_id)?;
    if let Reach::Family(contacts) = reach(&s, &caller).await? {
        if !contacts.contains(&body.contact_id) {
            return Err(ApiError::forbidden(
                "a family user books visits only as a contact it is bound to",
            ));
        }
    }
    let v = s.store.request_visit(&body, actor(&caller)).await?;
    audit_visit(&s, &caller, "visit.request", &v).await;
    Ok((StatusCode::CREATED, Json(v)))
}

pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Visit>, ApiError> {
    Ok(Json(visible(&s, &caller, &id).await?))
}

pub(crate) async fn approve(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Visit>, ApiError> {
    change(s, caller, id, Action::Approve, &[Role::Admin]).await
}

pub(crate) async fn deny(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Visit>, ApiError> {
    change(s, caller, id, Action::Deny, &[Role::Admin]).await
}

/// Either side cancels: staff, or the family user who visits as the contact.
pub(crate) async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Visit>, ApiError> {
    change(s, caller, id, Action::Cancel, &[Role::Admin, Role::Family]).await
}

pub(crate) async fn no_show(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Visit>, ApiError> {
    change(s, caller, id, Action::NoShow, &[Role::Admin]).await
}

async fn change(
    s: AppState,
    caller: Caller,
    id: String,
    action: Action,
    roles: &[Role],
) -> Result<Json<Visit>, ApiError> {
    caller.require(roles)?;
    visible(&s, &caller, &id).await?;
    let v = s.store.change_visit(&id, action, actor(&caller)).await?;
    audit_visit(&s, &caller, &format!("visit.{}", action.as_str()), &v).await;
    Ok(Json(v))
}

/// Checks a list's filters: bounded text, a known status.
fn checked(f: &VisitFilter) -> Result<(), ApiError> {
    for (name, value) in [
        ("facility_id", &f.facility_id),
        ("inmate_id", &f.inmate_id),
        ("contact_id", &f.contact_id),
        ("station_id", &f.station_id),
        ("status", &f.status),
    ] {
        if let Some(v) = value {
            text::SETTING
                .check(name, v)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    if let Some(st) = f.status.as_deref() {
        if VisitStatus::parse(st).is_none() {
            let known = VisitStatus::ALL.map(VisitStatus::as_str).join(", ");
            return Err(ApiError::bad_request(format!(
                "status '{}' is not one of: {known}",
                text::quote(st)
            )));
        }
    }
    Ok(())
}

/// Lists visits within the caller's reach.
async fn list_for(s: &AppState, caller: &Caller, f: VisitFilter) -> Result<VisitPage, ApiError> {
    checked(&f)?;
    if let Some(fid) = &f.facility_id {
        caller.scope(fid)?;
    }
    let page = match reach(s, caller).await? {
        Reach::Staff => match &caller.0.facilities {
            Facilities::All => s.store.search_visits(&f, VisitScope::Everything).await?,
            Facilities::Only(list) => {
                s.store
                    .search_visits(&f, VisitScope::Facilities(list))
                    .await?
            }
        },
        Reach::Family(contacts) => {
            if f.contact_id.as_ref().is_some_and(|c| !contacts.contains(c)) {
                return Err(not_yours());
            }
            s.store
                .search_visits(&f, VisitScope::Contacts(&contacts))
                .await?
        }
        Reach::Kiosk(_) => {
            return Err(ApiError::forbidden(
                "a kiosk reads its station's day: GET /visit-stations/{id}/visits/today",
            ))
        }
    };
    Ok(page)
}

pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<VisitFilter>,
) -> Result<Json<VisitPage>, ApiError> {
    Ok(Json(list_for(&s, &caller, f).await?))
}

/// An inmate's visits (a family user: those of its own contacts).
pub(crate) async fn of_inmate(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(mut f): ApiQuery<VisitFilter>,
) -> Result<Json<VisitPage>, ApiError> {
    let inmate = s.store.inmate(&id).await?;
    caller.scope(&inmate.facility_id)?;
    if let Reach::Family(mine) = reach(&s, &caller).await? {
        let theirs = s.store.contacts(&inmate.id).await?;
        if !theirs.iter().any(|c| mine.contains(&c.id)) {
            return Err(ApiError::forbidden(
                "not an inmate this user visits: none of its contacts is bound to the user",
            ));
        }
    }
    f.inmate_id = Some(inmate.id);
    Ok(Json(list_for(&s, &caller, f).await?))
}

/// A contact's visits.
pub(crate) async fn of_contact(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(mut f): ApiQuery<VisitFilter>,
) -> Result<Json<VisitPage>, ApiError> {
    let contact = s.store.contact(&id).await?;
    let inmate = s.store.inmate(&contact.inmate_id).await?;
    caller.scope(&inmate.facility_id)?;
    f.contact_id = Some(contact.id);
    Ok(Json(list_for(&s, &caller, f).await?))
}

/// A station's visits that start on the facility's today. Staff see every status; the
/// kiosk bound to the station, the approved visits it will run.
pub(crate) async fn station_today(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator, Role::Kiosk])?;
    let station: VisitStation = s.store.visit_station(&id).await?;
    caller.scope(&station.facility_id)?;
    let statuses: &[VisitStatus] = match reach(&s, &caller).await? {
        Reach::Kiosk(Some(bound)) if bound == station.id => &[VisitStatus::Approved],
        Reach::Kiosk(_) => return Err(not_this_station()),
        _ => &VisitStatus::ALL,
    };
    let visits = s.store.station_day(&station, statuses).await?;
    Ok(Json(json!({ "station": station, "visits": visits })))
}
