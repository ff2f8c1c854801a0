//! Online deposits through the payment provider ([`crate::payments`]): a family deposits
//! by card (`POST /family/deposits`, with an `Idempotency-Key`; a portal session also needs
//! its CSRF token, as every family route), lists its own deposits, and reads one deposit's
//! status and timeline (`GET /deposits/{id}`: the family user who made it, or staff of its
//! facility); a posted deposit is refunded to its card by staff or by the family user who
//! made it. The provider's signed webhooks arrive at `POST /payments/webhook`; one whose
//! signature is wrong or stale changes nothing, is answered 400/401 and is audited.
//! `GET /payments/info` tells the family page about money orders and the test cards.

use crate::api::auth::{ApiBytes, ApiJson, Caller, IdempotencyKey, RemoteAddr};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::ledger::{AccountKind, LedgerError, OnlineDeposit, OnlineDepositRequest};
use crate::money::Money;
use crate::payments::signature::SIGNATURE_HEADER;
use crate::payments::{Card, PaymentError, WebhookError, WebhookOutcome};
use crate::store::{AuditEntry, Role};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Datelike;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FamilyDepositBody {
    /// The inmate's account (or a family prepaid account) to credit.
    account_id: String,
    amount: Money,
    /// The name on the card.
    #[serde(default)]
    depositor: String,
    card_number: String,
    exp_month: u32,
    exp_year: u32,
    cvc: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Whether `digits` passes the Luhn check every card number carries.
pub(crate) fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b.wrapping_sub(b'0'));
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// The card of a request, checked: 422 `invalid_card` naming the field, or
/// `card_expired`. `today` is (year, month).
fn card_of(b: &FamilyDepositBody, today: (i32, u32)) -> Result<Card, ApiError> {
    let number: String = b
        .card_number
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    if !(12..=19).contains(&number.len())
        || !number.bytes().all(|c| c.is_ascii_digit())
        || !luhn(&number)
    {
        return Err(invalid(
            "invalid_card",
            "card_number: must be the 12 to 19 digits of a card (spaces allowed)",
        ));
    }
    if !(1..=12).contains(&b.exp_month) {
        return Err(invalid("invalid_card", "exp_month: must be 1 to 12"));
    }
    if !(2000..=2100).contains(&b.exp_year) {
        return Err(invalid(
            "invalid_card",
            "exp_year: must be a four-digit year",
        ));
    }
    let exp = (i32::try_from(b.exp_year).unwrap_or(i32::MAX), b.exp_month);
    if exp < today {
        return Err(invalid(
            "card_expired",
            "exp_month/exp_year: the card has expired",
        ));
    }
    if !(3..=4).contains(&b.cvc.len()) || !b.cvc.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid("invalid_card", "cvc: must be 3 or 4 digits"));
    }
    Ok(Card {
        number,
        exp_month: b.exp_month,
        exp_year: b.exp_year,
        cvc: b.cvc.clone(),
    })
}

pub(super) fn payment_error(e: PaymentError) -> ApiError {
    match e {
        PaymentError::Ledger(e) => e.into(),
        PaymentError::Provider(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "payment_provider_unavailable",
            e.to_string(),
        ),
    }
}

/// The family user of a family caller (a portal session or a family user's token).
pub(super) fn family_user(caller: &Caller) -> Result<&str, ApiError> {
    caller.require(&[Role::Family])?;
    caller
        .0
        .user_id
        .as_deref()
        .ok_or_else(|| ApiError::forbidden("this family token belongs to no family user"))
}

/// `POST /family/deposits`: 201 with the deposit as it stands (posted, authorized and
/// waiting for the provider's confirmation, or declined with the reason).
pub(crate) async fn family_deposit(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<FamilyDepositBody>,
) -> Result<(StatusCode, Json<OnlineDeposit>), ApiError> {
    let user = family_user(&caller)?.to_string();
    let now = s.store.clock().wall();
    let card = card_of(&body, (now.year(), now.month()))?;
    // A family deposits to any inmate's account (without seeing it), whatever the
    // facility; to a family prepaid account only if it is its own.
    let account = s.store.ledger().account(&body.account_id).await?;
    let allowed = match account.kind {
        AccountKind::Inmate => true,
        AccountKind::Family => account.owner_id.as_deref() == Some(user.as_str()),
        AccountKind::System => false,
    };
    if !allowed {
        return Err(ApiError::forbidden(
            "a family deposits to an inmate's account or its own prepaid account",
        ));
    }
    let req = OnlineDepositRequest {
        account_id: account.id.clone(),
        amount: body.amount,
        depositor: body.depositor,
        made_by: Some(user),
        provider: s.payments.provider_kind().to_string(),
        card_last4: card.last4().to_string(),
    };
    let key = key.of(&caller)?;
    let d = s
        .payments
        .deposit(s.store.ledger(), &key, req, card)
        .await
        .map_err(payment_error)?;
    let detail = json!({ "state": d.state, "confirmation": d.confirmation });
    s.audit_detail(
        &caller,
        "deposit.online",
        &d.id,
        Some(&d.facility_id),
        detail,
    )
    .await;
    Ok((StatusCode::CREATED, Json(d)))
}

/// `GET /family/deposits`: the caller's own online deposits, newest first.
pub(crate) async fn family_list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<OnlineDeposit>>, ApiError> {
    let user = family_user(&caller)?;
    Ok(Json(s.store.ledger().online_deposits_by(user).await?))
}

/// The online deposit `id` if `caller` may read it: the family user who made it, or staff
/// (administrators, investigators) of its facility. Anyone else: 404, as for no deposit.
async fn readable(s: &AppState, caller: &Caller, id: &str) -> Result<OnlineDeposit, ApiError> {
    let not_found = || ApiError::not_found(format!("deposit {}", crate::text::quote(id)));
    let d = match s.store.ledger().online_deposit(id).await {
        Ok(d) => d,
        Err(LedgerError::DepositNotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let allowed = match caller.0.role {
        Role::Family => caller.0.user_id.is_some() && caller.0.user_id == d.made_by,
        Role::Admin | Role::Investigator => caller.0.may_access(&d.facility_id),
        Role::Kiosk => false,
    };
    if allowed {
        Ok(d)
    } else {
        Err(not_found())
    }
}

/// `GET /deposits/{id}`: an online deposit's status, confirmation number and timeline.
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OnlineDeposit>, ApiError> {
    Ok(Json(readable(&s, &caller, &id).await?))
}

/// `POST /deposits/{id}/refund`: returns a posted online deposit to its card (staff of its
/// facility, or the family user who made it, while the account still holds the amount).
pub(crate) async fn refund(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<OnlineDeposit>, ApiError> {
    let d = readable(&s, &caller, &id).await?;
    let source = match caller.0.role {
        Role::Admin => "staff",
        Role::Family => "family",
        _ => {
            return Err(ApiError::forbidden(
                "only staff or the depositor refund a deposit",
            ))
        }
    };
    let key = key.of(&caller)?;
    let d = s
        .payments
        .refund(s.store.ledger(), &key, &d.id, source)
        .await
        .map_err(payment_error)?;
    s.audit(&caller, "deposit.refund", &d.id, Some(&d.facility_id))
        .await;
    Ok(Json(d))
}

/// `POST /payments/webhook`: the provider's signed event.
pub(crate) async fn webhook(
    State(s): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<Value>, ApiError> {
    let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    match s.payments.webhook(s.store.ledger(), sig, &body).await {
        Ok(WebhookOutcome::Applied {
            deposit_id,
            state,
            step,
        }) => Ok(Json(json!({
            "received": true, "deposit_id": deposit_id, "state": state,
            "changed": step != crate::ledger::OnlineStep::Ignore,
        }))),
        Ok(WebhookOutcome::Unknown) => Ok(Json(json!({ "received": true, "deposit_id": null }))),
        Err(WebhookError::Ledger(e)) => Err(e.into()),
        Err(e) => {
            let (status, code) = match &e {
                WebhookError::Signature(se) if !se.is_malformed() => {
                    (StatusCode::UNAUTHORIZED, "bad_signature")
                }
                WebhookError::Signature(_) => (StatusCode::BAD_REQUEST, "bad_signature"),
                _ => (StatusCode::BAD_REQUEST, "bad_event"),
            };
            tracing::warn!(error = %e, remote = ?remote, "payments: webhook refused");
            s.write_audit(AuditEntry {
                actor: "payment-provider",
                action: "payment.webhook_refused",
                target: "webhook",
                facility_id: None,
                detail: json!({ "reason": e.to_string(), "bytes": body.len() }),
                remote_addr: remote.map(|a| a.to_string()).as_deref(),
            })
            .await;
            Err(ApiError::new(status, code, e.to_string()))
        }
    }
}

/// `GET /payments/info`: what the family page shows beside the card form.
pub(crate) async fn info(State(s): State<AppState>) -> Json<Value> {
    let test_cards = if s.payments.test_provider().is_some() {
        json!([
            { "number": "4242 4242 4242 4242", "outcome": "approved, posted at once" },
            { "number": "4000 0000 0000 0077", "outcome": "approved, confirmed later by webhook" },
            { "number": "4000 0000 0000 0341", "outcome": "approved, then declined by the bank" },
            { "number": "4000 0000 0000 9235", "outcome": "approved, then held for review" },
            { "number": "4000 0000 0000 0002", "outcome": "declined: card_declined" },
            { "number": "4000 0000 0000 9995", "outcome": "declined: insufficient_funds" },
        ])
    } else {
        json!([])
    };
    Json(json!({
        "provider": s.payments.provider_kind(),
        "fees": "none",
        "money_order_instructions": s.config.payments.money_order_instructions,
        "test_cards": test_cards,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(number: &str, month: u32, year: u32, cvc: &str) -> FamilyDepositBody {
        FamilyDepositBody {
            account_id: "a".into(),
            amount: Money::from_minor(1),
            depositor: String::new(),
            card_number: number.into(),
            exp_month: month,
            exp_year: year,
            cvc: cvc.into(),
        }
    }

    #[test]
    fn cards_are_checked_before_any_provider_sees_them() {
        let today = (2026, 3);
        assert!(card_of(&body("4242 4242 4242 4242", 3, 2026, "123"), today).is_ok());
        assert!(luhn("4000000000000077") && luhn("4000000000009235"));
        let code = |b| card_of(&b, today).unwrap_err().code;
        assert_eq!(
            code(body("4242 4242 4242 4241", 3, 2027, "123")),
            "invalid_card"
        );
        assert_eq!(
            code(body("42424242x4242424", 3, 2027, "123")),
            "invalid_card"
        );
        assert_eq!(
            code(body("4242424242424242", 13, 2027, "123")),
            "invalid_card"
        );
        assert_eq!(
            code(body("4242424242424242", 2, 2026, "123")),
            "card_expired"
        );
        assert_eq!(
            code(body("4242424242424242", 3, 2027, "12")),
            "invalid_card"
        );
    }
}
