//! A family's own money under `/api/v1/family/prepaid`: the prepaid accounts that pay for
//! calls to the family's verified numbers and for the visits it books (one per facility,
//! opened on first use), and their statements (JSON, CSV, and the portal's printable page).
//!
//! Only the family user who owns an account reads it: another family user, or a family
//! token asking for an inmate's or someone else's account here, gets 404 `not_found`, as
//! for an account that does not exist (no answer tells one family's accounts from
//! another's). Funding one is a card deposit to its id (`POST /family/deposits`); its
//! balance is refunded on request (`POST /family/prepaid/{id}/refund`).

use super::deposits::{family_user, payment_error};
use super::money::{csv_response, StatementQuery};
use crate::api::auth::{ApiJson, ApiQuery, Caller, IdempotencyKey};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::ledger::{Account, AccountKind, PrepaidRefund};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// The prepaid account `id` if the caller owns it; 404 otherwise.
async fn own_account(s: &AppState, caller: &Caller, id: &str) -> Result<Account, ApiError> {
    let user = family_user(caller)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account");
    let account = match s.store.ledger().account(id).await {
        Ok(a) => a,
        Err(crate::ledger::LedgerError::AccountNotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if account.kind != AccountKind::Family || account.owner_id.as_deref() != Some(user) {
        return Err(not_found());
    }
    Ok(account)
}

/// `GET /family/prepaid`: the caller's prepaid accounts with their balances, and for each
/// facility whether the family's account is asked first; the facilities of the inmates the
/// caller is a contact of (where an account is of use); and the inmates it is an approved
/// contact of, with their accounts (where the portal offers to deposit).
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let user = family_user(&caller)?;
    let accounts = s.store.ledger().family_accounts(user).await?;
    let mut out = Vec::with_capacity(accounts.len());
    for a in accounts {
        let facility = match &a.facility_id {
            Some(f) => Some(s.store.facility(f).await?),
            None => None,
        };
        out.push(json!({
            "account": a,
            "facility_name": facility.as_ref().map(|f| f.name.clone()),
            "payer_order": facility.as_ref().map(|f| f.payer_order),
        }));
    }
    let facilities: Vec<Value> = s
        .store
        .family_facilities(user)
        .await?
        .into_iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    let linked = s.store.family_linked_inmates(user).await?;
    Ok(Json(
        json!({ "accounts": out, "facilities": facilities, "linked_inmates": linked }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Open {
    facility_id: String,
}

/// `POST /family/prepaid`: the caller's prepaid account at a facility, opened if it was
/// not (idempotent: asking twice gives the same account).
pub(crate) async fn open(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Open>,
) -> Result<Json<Account>, ApiError> {
    let user = family_user(&caller)?;
    crate::text::SETTING
        .check("facility_id", &body.facility_id)
        .map_err(crate::store::StoreError::from)?;
    let account = s
        .store
        .ledger()
        .family_account(user, &body.facility_id, "family prepaid")
        .await?;
    s.audit(
        &caller,
        "family.prepaid_open",
        &account.id,
        account.facility_id.as_deref(),
    )
    .await;
    Ok(Json(account))
}

/// `GET /family/prepaid/{id}/statement`: deposits in and charges out with the running
/// balance, each charge naming its call or visit (`session_id`, `increment`), and for each
/// session the number and inmate it was for; JSON, or CSV with `format=csv`. Without
/// `from`/`to`: the last 31 days up to now.
pub(crate) async fn statement(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    let account = own_account(&s, &caller, &id).await?;
    let (from, to) = q.period(s.store.clock().wall())?;
    let st = s.store.ledger().statement(&account.id, from, to).await?;
    if q.csv()? {
        return Ok(csv_response(&st));
    }
    // What each charged session was: the family sees the number it paid for and whose
    // call or visit it was, never more of the record.
    let mut sessions = serde_json::Map::new();
    for id in st.lines.iter().filter_map(|l| l.session_id.as_deref()) {
        if sessions.contains_key(id) {
            continue;
        }
        // A charge whose record is gone (never expected) still shows, without details.
        let cdr = match s.store.session(id).await {
            Ok(c) => c,
            Err(crate::store::StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let inmate = match &cdr.inmate_id {
            Some(i) => Some(s.store.inmate(i).await?),
            None => None,
        };
        sessions.insert(
            id.to_string(),
            json!({
                "kind": cdr.kind, "number": cdr.number, "started_at": cdr.invite_at,
                "accepted_at": cdr.accepted_at, "end_at": cdr.end_at,
                "billed_increments": cdr.billed_increments, "amount": cdr.amount,
                "inmate_name": inmate.map(|i| format!("{} {}", i.first_name, i.last_name)),
            }),
        );
    }
    Ok(Json(json!({
        "account_id": st.account_id, "from": st.from, "to": st.to,
        "opening_balance": st.opening_balance, "closing_balance": st.closing_balance,
        "lines": st.lines, "sessions": sessions,
    }))
    .into_response())
}

/// `POST /family/prepaid/{id}/refund`: the whole balance of the caller's prepaid account
/// back to the cards that paid it, newest deposit first; what no card covers is owed by
/// the facility (`ledger::prepaid`). No fee. Idempotent under its `Idempotency-Key`; an
/// empty account is 409 `invalid_state`.
pub(crate) async fn refund(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<PrepaidRefund>, ApiError> {
    let account = own_account(&s, &caller, &id).await?;
    let user = family_user(&caller)?;
    let key = key.of(&caller)?;
    let r = s
        .payments
        .refund_prepaid(s.store.ledger(), &key, &account.id, user)
        .await
        .map_err(payment_error)?;
    let detail = json!({ "request_id": r.request_id, "total": r.total, "parts": r.parts.len() });
    s.audit_detail(
        &caller,
        "family.prepaid_refund",
        &account.id,
        account.facility_id.as_deref(),
        detail,
    )
    .await;
    Ok(Json(r))
}
