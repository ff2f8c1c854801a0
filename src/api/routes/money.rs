//! Accounts, deposits, money orders, purchases, refunds and statements. Every request
//! that moves money carries an `Idempotency-Key`, which names the request together with
//! its caller ([`crate::api::auth::IdempotencyKey::of`]); the ledger stores the first
//! answer and returns it to that caller's replay, and only to it.

use crate::api::auth::{ApiJson, ApiQuery, Caller, IdempotencyKey};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::ledger::{
    Account, AccountKind, Deposit, DepositMethod, DepositRequest, PurchaseRequest, Receipt,
    RefundRequest,
};
use crate::money::Money;
use crate::store::Role;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Loads an account and checks the caller may act on it: system accounts are for
/// administrators only; others for the listed roles within the account's facility.
async fn scoped_account(
    s: &AppState,
    caller: &Caller,
    roles: &[Role],
    id: &str,
) -> Result<Account, ApiError> {
    caller.require(roles)?;
    let account = s.store.ledger().account(id).await?;
    if account.kind == AccountKind::System {
        caller.require(&[Role::Admin])?;
    }
    if own_prepaid(caller, &account) {
        return Ok(account);
    }
    match &account.facility_id {
        Some(f) => caller.scope(f)?,
        None => caller.require_global_admin()?,
    }
    Ok(account)
}

/// Whether `account` is the family caller's own prepaid account (which it reads and funds
/// wherever it is, without a facility scope: `routes::family_prepaid`).
fn own_prepaid(caller: &Caller, account: &Account) -> bool {
    caller.0.role == Role::Family
        && account.kind == AccountKind::Family
        && caller.0.user_id.is_some()
        && account.owner_id == caller.0.user_id
}

/// [`scoped_account`] for reading: a kiosk reads only the account of the inmate signed in
/// at it (its sitting), a family user only those of the inmates it is a contact of; both
/// deposit to any inmate's account ([`deposit`]) without seeing it.
async fn readable_account(
    s: &AppState,
    caller: &Caller,
    roles: &[Role],
    id: &str,
) -> Result<Account, ApiError> {
    let account = scoped_account(s, caller, roles, id).await?;
    let owner = account.owner_id.as_deref().unwrap_or_default();
    match caller.0.role {
        Role::Kiosk => caller.kiosk_acts_for(owner)?,
        Role::Family if own_prepaid(caller, &account) => {}
        Role::Family => family_linked(s, caller, owner).await?,
        Role::Admin | Role::Investigator => {}
    }
    Ok(account)
}

/// Whether the family caller is a contact of the inmate `inmate_id` (one of the inmate's
/// approved contacts is bound to the caller's user): 403 `not_linked` otherwise. A contact
/// a family asked for links it only once staff approve it.
async fn family_linked(s: &AppState, caller: &Caller, inmate_id: &str) -> Result<(), ApiError> {
    let mine = match caller.0.user_id.as_deref() {
        Some(u) => s.store.family_contacts(u).await?,
        None => Vec::new(),
    };
    let linked = !mine.is_empty()
        && !inmate_id.is_empty()
        && s.store
            .contacts(inmate_id)
            .await?
            .iter()
            .any(|c| c.status == crate::store::ContactStatus::Approved && mine.contains(&c.id));
    if linked {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not_linked",
            "a family user sees only the accounts of inmates it is a contact of",
        ))
    }
}

pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Account>, ApiError> {
    let roles = [Role::Admin, Role::Investigator, Role::Kiosk, Role::Family];
    Ok(Json(readable_account(&s, &caller, &roles, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DepositBody {
    amount: Money,
    method: DepositMethod,
    #[serde(default)]
    depositor: String,
    #[serde(default)]
    reference: String,
}

/// Which deposit methods each role may use here: a kiosk takes cash at the kiosk, staff
/// enter money orders (and may record any method, an online payment taken elsewhere among
/// them). A family deposits by card through the payment provider instead
/// (`POST /family/deposits`, [`super::deposits`]): here an `online` deposit posts at once
/// with no payment behind it.
fn method_allowed(role: Role, method: DepositMethod) -> bool {
    match role {
        Role::Admin => true,
        Role::Kiosk => method == DepositMethod::Kiosk,
        Role::Family | Role::Investigator => false,
    }
}

pub(crate) async fn deposit(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DepositBody>,
) -> Result<(StatusCode, Json<Deposit>), ApiError> {
    let account =
        scoped_account(&s, &caller, &[Role::Admin, Role::Kiosk, Role::Family], &id).await?;
    if caller.0.role == Role::Family {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "use_family_deposits",
            "a family deposits by card at POST /api/v1/family/deposits, through the payment provider",
        ));
    }
    if !method_allowed(caller.0.role, body.method) {
        return Err(ApiError::forbidden(format!(
            "role {} may not make {:?} deposits",
            caller.0.role.as_str(),
            body.method
        )));
    }
    let req = DepositRequest {
        account_id: account.id.clone(),
        method: body.method,
        amount: body.amount,
        depositor: body.depositor,
        reference: body.reference,
    };
    let d = s.store.ledger().deposit(&key.of(&caller)?, req).await?;
    s.audit(
        &caller,
        "deposit.create",
        &d.id,
        account.facility_id.as_deref(),
    )
    .await;
    Ok((StatusCode::CREATED, Json(d)))
}

pub(crate) async fn deposits(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Deposit>>, ApiError> {
    let account = readable_account(&s, &caller, &[Role::Admin, Role::Kiosk], &id).await?;
    Ok(Json(s.store.ledger().deposits(&account.id).await?))
}

pub(crate) async fn post_money_order(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<Deposit>, ApiError> {
    decide_money_order(s, caller, key, id, true).await
}

pub(crate) async fn void_money_order(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<Deposit>, ApiError> {
    decide_money_order(s, caller, key, id, false).await
}

async fn decide_money_order(
    s: AppState,
    caller: Caller,
    key: IdempotencyKey,
    id: String,
    post: bool,
) -> Result<Json<Deposit>, ApiError> {
    caller.require(&[Role::Admin])?;
    let pending = s.store.ledger().deposit_by_id(&id).await?;
    caller.scope(&pending.facility_id)?;
    let ledger = s.store.ledger();
    let key = key.of(&caller)?;
    let d = if post {
        ledger.post_money_order(&key, &id, caller.subject()).await?
    } else {
        ledger.void_money_order(&key, &id, caller.subject()).await?
    };
    let action = if post {
        "money_order.post"
    } else {
        "money_order.void"
    };
    s.audit(&caller, action, &id, Some(&pending.facility_id))
        .await;
    Ok(Json(d))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpendBody {
    amount: Money,
    /// The commissary order id, or what a refund is for.
    #[serde(default)]
    reference: String,
    #[serde(default)]
    memo: String,
}

/// A commissary purchase posted by the commissary system (an admin token of the facility).
pub(crate) async fn purchase(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SpendBody>,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    spend(s, caller, key, id, body, Spend::Purchase).await
}

/// A credit to an account (a dropped-call credit, a commissary return).
pub(crate) async fn refund(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SpendBody>,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    spend(s, caller, key, id, body, Spend::Refund).await
}

#[derive(Clone, Copy)]
enum Spend {
    Purchase,
    Refund,
}

/// Purchases and refunds: same scope, same body, opposite directions in the ledger.
async fn spend(
    s: AppState,
    caller: Caller,
    key: IdempotencyKey,
    id: String,
    body: SpendBody,
    kind: Spend,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    let account = scoped_account(&s, &caller, &[Role::Admin], &id).await?;
    let (account_id, amount, reference, memo) =
        (account.id.clone(), body.amount, body.reference, body.memo);
    let ledger = s.store.ledger();
    let key = key.of(&caller)?;
    let (receipt, action) = match kind {
        Spend::Purchase => {
            let req = PurchaseRequest {
                account_id,
                amount,
                reference,
                memo,
            };
            (ledger.purchase(&key, req).await?, "purchase.create")
        }
        Spend::Refund => {
            let req = RefundRequest {
                account_id,
                amount,
                reference,
                memo,
            };
            (ledger.refund(&key, req).await?, "refund.create")
        }
    };
    s.audit(&caller, action, &account.id, account.facility_id.as_deref())
        .await;
    Ok((StatusCode::CREATED, Json(receipt)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatementQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    format: Option<String>,
}

impl StatementQuery {
    /// The period `[from, to)` asked for: by default the 31 days up to `now`, included.
    pub(super) fn period(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let to = self
            .to
            .unwrap_or_else(|| now + chrono::Duration::microseconds(1));
        let from = self.from.unwrap_or(to - chrono::Duration::days(31));
        if from > to {
            return Err(ApiError::bad_request("from must not be after to"));
        }
        Ok((from, to))
    }

    /// Whether CSV was asked for (`format=csv`) rather than JSON (the default).
    pub(super) fn csv(&self) -> Result<bool, ApiError> {
        match self.format.as_deref() {
            None | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "format '{}' is not json or csv",
                crate::text::quote(other)
            ))),
        }
    }
}

/// A statement as a CSV download.
pub(super) fn csv_response(st: &crate::ledger::Statement) -> Response {
    (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        st.to_csv(),
    )
        .into_response()
}

/// Transaction history with running balance, as JSON (default) or CSV (`format=csv`).
/// Without `from`/`to` it covers the last 31 days up to now.
pub(crate) async fn statement(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    let roles = [Role::Admin, Role::Investigator, Role::Kiosk, Role::Family];
    let account = readable_account(&s, &caller, &roles, &id).await?;
    let (from, to) = q.period(s.store.clock().wall())?;
    let st = s.store.ledger().statement(&account.id, from, to).await?;
    if q.csv()? {
        return Ok(csv_response(&st));
    }
    let mut v = serde_json::to_value(&st).map_err(|e| ApiError::internal(&e))?;
    if let (AccountKind::Inmate, Some(inmate)) = (account.kind, &account.owner_id) {
        // The inmate's calls and visits a family paid for: not lines of this account, but
        // on its statement all the same.
        let others = s
            .store
            .sessions_paid_by_others(inmate, &account.id, from, to)
            .await?;
        v["paid_by_others"] = serde_json::to_value(others).map_err(|e| ApiError::internal(&e))?;
    }
    Ok(Json(v).into_response())
}
