//! The inmate at a kiosk: `POST /kiosk/sittings` starts a sitting with calling ID + PIN
//! (the handsets' check and lockout; the kiosk's station, or the kiosk itself, standing for
//! the handset line), and `GET /kiosk/sitting` is what the kiosk page shows the inmate of
//! the sitting: their record, balance, pending deposits, recent history and the visits
//! ahead. See [`crate::kiosk`] for what a sitting is and lets a kiosk do.

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::routes::visit_join::{kiosk_pin, KioskJoin};
use crate::api::AppState;
use crate::call::checks::station_line;
use crate::kiosk::{self, Sitting};
use crate::ledger::DepositStatus;
use crate::store::{InmateStatus, Role, VisitFilter, VisitScope};
use crate::visit::VisitStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Duration;
use serde_json::{json, Value};

/// The handset line a kiosk's entries count against: its station's, or its own.
fn kiosk_line(station: Option<&str>, kiosk_user: &str) -> String {
    match station {
        Some(st) => station_line(st),
        None => format!("kiosk:{kiosk_user}"),
    }
}

fn kiosk_user(caller: &Caller) -> Result<&str, ApiError> {
    caller.0.user_id.as_deref().ok_or_else(|| {
        ApiError::forbidden("a kiosk acts for an inmate only with a kiosk token of its own")
    })
}

/// Starts an inmate's sitting at the calling kiosk.
pub(crate) async fn start(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<KioskJoin>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Kiosk])?;
    let user = kiosk_user(&caller)?;
    let station = s.store.kiosk_station(user).await?;
    let facility = match &caller.0.facilities {
        crate::store::Facilities::Only(list) if list.len() == 1 => list[0].clone(),
        _ => {
            return Err(ApiError::forbidden(
                "a kiosk that acts for inmates serves exactly one facility",
            ))
        }
    };
    let now = s.store.clock().wall();
    let line = kiosk_line(station.as_deref(), user);
    let inmate_id = kiosk_pin(&s, &line, &facility, &body, now).await?;
    let inmate = s.store.inmate(&inmate_id).await?;
    if inmate.status == InmateStatus::Released {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "inmate_released",
            "the inmate has been released",
        ));
    }
    let sitting = Sitting::start(user, &inmate.id, now);
    let text = kiosk::seal(&s.sitting_key, &sitting);
    let detail = json!({ "inmate_id": inmate.id, "line": line, "expires_at": sitting.expires_at });
    s.audit_detail(
        &caller,
        "kiosk.sitting",
        &inmate.id,
        Some(&inmate.facility_id),
        detail,
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "sitting": text,
            "inmate_id": inmate.id,
            "expires_at": sitting.expires_at,
        })),
    ))
}

/// What the kiosk shows the inmate of its sitting.
pub(crate) async fn show(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Kiosk])?;
    let inmate_id = caller.sitting_inmate()?.to_string();
    let inmate = s.store.inmate(&inmate_id).await?;
    caller.scope(&inmate.facility_id)?;
    let ledger = s.store.ledger();
    let account = ledger.account(&inmate.account_id).await?;
    let now = s.store.clock().wall();
    let statement = ledger
        .statement(
            &account.id,
            now - Duration::days(31),
            now + Duration::microseconds(1),
        )
        .await?;
    let paid_by_others = s
        .store
        .sessions_paid_by_others(
            &inmate.id,
            &account.id,
            now - Duration::days(31),
            now + Duration::microseconds(1),
        )
        .await?;
    let pending: Vec<_> = ledger
        .deposits(&account.id)
        .await?
        .into_iter()
        .filter(|d| d.status == DepositStatus::Pending)
        .collect();
    let filter = VisitFilter {
        inmate_id: Some(inmate.id.clone()),
        from: Some(now - Duration::hours(1)),
        ..VisitFilter::default()
    };
    let visits: Vec<Value> = s
        .store
        .search_visits(&filter, VisitScope::Everything)
        .await?
        .items
        .into_iter()
        .filter(|v| matches!(v.status, VisitStatus::Approved | VisitStatus::Pending))
        .filter(|v| v.ends_at > now)
        .map(|v| {
            json!({ "id": v.id, "starts_at": v.starts_at, "ends_at": v.ends_at,
                    "visitor_name": v.visitor_name, "station_name": v.station_name,
                    "status": v.status })
        })
        .collect();
    Ok(Json(json!({
        "inmate": {
            "id": inmate.id,
            "first_name": inmate.first_name,
            "last_name": inmate.last_name,
            "booking_number": inmate.booking_number,
            "facility_id": inmate.facility_id,
        },
        "account": { "id": account.id, "balance": account.balance, "status": account.status },
        "pending_deposits": pending,
        "statement": statement,
        "paid_by_others": paid_by_others,
        "visits": visits,
        "sitting_expires_at": caller.1.sitting.as_ref().map(|s| s.expires_at),
    })))
}
