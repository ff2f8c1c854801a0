//! The call flow's questions to the database: whose PIN is this, and may this inmate call
//! this number now? The [`Call`](super::Call) machine asks them with
//! `CheckPin` / `CheckDestination`; the call driver answers with these functions.
//!
//! Everything that must hold across nodes lives in the database: PIN failures and
//! lockouts are columns of `handsets`, the one-live-call rule is a unique index on
//! `sessions`, balances are the ledger's.

use super::{Authorization, Destination, EndReason, PinVerdict};
use crate::charging::ChargingPlan;
use crate::config::{BillingConfig, SecurityConfig};
use crate::db::{from_micros, to_micros};
use crate::policy::hours::{local_day, CallingHours};
use crate::rating::{normalize_e164, rate, RatingError, Service, E164};
use crate::sessions;
use crate::store::{ContactStatus, Facility, Inmate, InmateStatus, Store, StoreError};
use chrono::{DateTime, NaiveTime, Utc};
use sqlx::Row;
use std::time::Duration;

/// How long the ledger has to confirm a debit before the call is cut.
pub const DEBIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks an entered PIN at a handset. Every attempt is logged in `pin_attempts`. Wrong
/// PINs count against the handset (the only identity known before the PIN matches); at
/// `lockout_after_failures` in a row the handset is locked for `lockout_secs`, and while
/// it is locked even a right PIN is refused. A right PIN resets the count.
pub async fn check_pin(
    store: &Store,
    facility_id: &str,
    handset_id: &str,
    pin: &str,
    security: &SecurityConfig,
    now: DateTime<Utc>,
) -> Result<PinVerdict, StoreError> {
    let db = store.db();
    let row = sqlx::query(
        "SELECT failed_pins, locked_until FROM handsets WHERE id = $1 AND facility_id = $2",
    )
    .bind(handset_id)
    .bind(facility_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or_else(|| StoreError::not_found("handset", handset_id))?;
    let locked_until: Option<i64> = row.try_get("locked_until")?;
    let inmate = store.inmate_by_pin(facility_id, pin).await?;
    let locked = locked_until.is_some_and(|t| from_micros(t) > now)
        || inmate
            .as_ref()
            .and_then(|i| i.locked_until)
            .is_some_and(|t| t > now);
    log_attempt(
        store,
        facility_id,
        handset_id,
        inmate.as_ref().map(|i| i.id.as_str()),
        !locked && inmate.is_some(),
        now,
    )
    .await?;
    if locked {
        return Ok(PinVerdict::Locked);
    }
    match inmate {
        Some(i) => {
            sqlx::query("UPDATE handsets SET failed_pins = 0, locked_until = NULL WHERE id = $1")
                .bind(handset_id)
                .execute(db.pool())
                .await?;
            Ok(PinVerdict::Valid { inmate_id: i.id })
        }
        None => {
            record_failure(store, handset_id, security, now).await?;
            Ok(PinVerdict::Wrong)
        }
    }
}

async fn record_failure(
    store: &Store,
    handset_id: &str,
    security: &SecurityConfig,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let until = now
        + chrono::Duration::seconds(
            i64::try_from(security.lockout_secs).unwrap_or(i64::MAX / 2_000_000),
        );
    // One statement: concurrent failures on two nodes both count.
    sqlx::query(
        "UPDATE handsets SET failed_pins = failed_pins + 1, \
         locked_until = CASE WHEN failed_pins + 1 >= $2 THEN $3 ELSE locked_until END WHERE id = $1",
    )
    .bind(handset_id)
    .bind(i64::from(security.lockout_after_failures))
    .bind(to_micros(until))
    .execute(store.db().pool())
    .await?;
    Ok(())
}

async fn log_attempt(
    store: &Store,
    facility_id: &str,
    handset_id: &str,
    inmate_id: Option<&str>,
    success: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO pin_attempts (facility_id, handset_id, inmate_id, success, at) VALUES ($1,$2,$3,$4,$5)")
        .bind(facility_id)
        .bind(handset_id)
        .bind(inmate_id)
        .bind(i64::from(success))
        .bind(to_micros(now))
        .execute(store.db().pool())
        .await?;
    tracing::info!(handset = handset_id, success, "PIN attempt");
    Ok(())
}

/// SPEC.md steps 4 and 5 in order: inmate active; number E.164; approved contact; not
/// blocked; within calling hours; daily and concurrent limits; rating and the first
/// increment affordable (the last is the call machine's, from the balance given here).
/// The concurrent-call rule is enforced by claiming the inmate on the live session.
///
/// What the CDR needs is written on the session as it becomes known: an authorized call
/// gets its contact, E.164 number and the tariff applied (plan, deck prefix, class,
/// per-minute rate, increment, cost of one increment: [`sessions::record_authorization`]),
/// so its charge can be reproduced from the record; a call refused after its number was
/// normalized gets that number (the digits as dialed are on the session from the start).
pub async fn check_destination(
    store: &Store,
    session_id: &str,
    inmate_id: &str,
    dialed: &str,
    billing: &BillingConfig,
    now: DateTime<Utc>,
) -> Result<Destination, StoreError> {
    let refused = |r| Ok(Destination::Refused(r));
    let inmate = store.inmate(inmate_id).await?;
    if inmate.status != InmateStatus::Active {
        return refused(EndReason::InmateInactive);
    }
    let facility = store.facility(&inmate.facility_id).await?;
    let Ok(number) = normalize_e164(dialed, &facility.country_code) else {
        return refused(EndReason::InvalidNumber);
    };
    let d = check_number(store, session_id, &inmate, &facility, &number, billing, now).await?;
    if let Destination::Refused(_) = d {
        let p = sessions::Progress {
            number_e164: Some(number.as_str()),
            ..Default::default()
        };
        sessions::progress(store.db(), session_id, &p).await?;
    }
    Ok(d)
}

/// [`check_destination`] from the normalized number on.
async fn check_number(
    store: &Store,
    session_id: &str,
    inmate: &Inmate,
    facility: &Facility,
    number: &E164,
    billing: &BillingConfig,
    now: DateTime<Utc>,
) -> Result<Destination, StoreError> {
    let refused = |r| Ok(Destination::Refused(r));
    let contact = store
        .contact_for_number(&inmate.id, number.as_str())
        .await?;
    let Some(contact) = contact.filter(|c| c.status == ContactStatus::Approved) else {
        return refused(EndReason::NotApproved);
    };
    if store.is_blocked(&facility.id, number.as_str()).await? {
        return refused(EndReason::Blocked);
    }
    let hours = CallingHours::parse(
        &facility.time_zone,
        &facility.calling_hours_start,
        &facility.calling_hours_end,
    )
    .map_err(|e| StoreError::invalid("calling_hours", e.to_string()))?;
    if !hours.allows(now) {
        return refused(EndReason::OutsideHours);
    }
    if facility.daily_call_limit > 0 {
        let midnight = local_midnight(&hours, now);
        if sessions::accepted_calls_since(store.db(), &inmate.id, midnight).await?
            >= facility.daily_call_limit
        {
            return refused(EndReason::CallLimit);
        }
    }
    if !sessions::claim_inmate(store.db(), session_id, &inmate.id, &inmate.account_id).await? {
        return refused(EndReason::CallLimit);
    }
    let (Some(plan_id), Some(deck_id)) = (&facility.rate_plan_id, &facility.rate_deck_id) else {
        return Err(StoreError::invalid(
            "rate_plan_id",
            format!("facility {} has no rate plan or deck", facility.id),
        ));
    };
    let plan = store
        .load_rate_plan(plan_id, &facility.cap_category)
        .await?;
    let deck = store.load_rate_deck(deck_id).await?;
    let rating = match rate(&deck, &plan, number, Service::Audio) {
        Ok(r) => r,
        Err(RatingError::NotRateable { .. }) => return refused(EndReason::InvalidNumber),
        Err(e) => return Err(StoreError::invalid("rate_plan_id", e.to_string())),
    };
    let tariff = &rating.tariff;
    let applied = sessions::Authorized {
        contact_id: &contact.id,
        number_e164: number.as_str(),
        privileged: contact.privileged,
        rate_plan_id: plan_id,
        rate_deck_id: deck_id,
        rate_prefix: rating.prefix,
        class: rating.class.as_str(),
        service: rating.service.as_str(),
        per_minute: tariff.per_minute(),
        increment_secs: tariff.increment_secs(),
        cost_per_increment: tariff.cost_of_increment(),
    };
    sessions::record_authorization(store.db(), session_id, &applied).await?;
    let charging = ChargingPlan::for_tariff(
        tariff,
        plan.max_duration(),
        Duration::from_secs(u64::from(billing.warning_lead_secs)),
        DEBIT_TIMEOUT,
    );
    let balance = store.ledger().balance(&inmate.account_id).await?;
    Ok(Destination::Authorized(Authorization {
        number: number.as_str().to_string(),
        privileged: contact.privileged,
        charging,
        balance,
    }))
}

/// The start of the facility-local day containing `now`, in UTC.
fn local_midnight(hours: &CallingHours, now: DateTime<Utc>) -> DateTime<Utc> {
    let day = local_day(hours.zone, now);
    chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .ok()
        .and_then(|d| {
            d.and_time(NaiveTime::MIN)
                .and_local_timezone(hours.zone)
                .earliest()
        })
        .map_or(now - chrono::Duration::days(1), |t| t.with_timezone(&Utc))
}
