//! The interface a payment provider implements, and what it answers.

use crate::ledger::PaymentSignal;
use crate::money::Money;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A card as the family typed it. Only the provider sees the number; the gateway keeps
/// the last four digits. `Debug` shows nothing else.
#[derive(Clone, PartialEq, Eq)]
pub struct Card {
    /// Digits only.
    pub number: String,
    pub exp_month: u32,
    pub exp_year: u32,
    pub cvc: String,
}

impl Card {
    pub fn last4(&self) -> &str {
        let n = self.number.len();
        self.number.get(n.saturating_sub(4)..).unwrap_or_default()
    }
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Card(…{})", self.last4())
    }
}

/// A payment to authorize.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// The gateway's deposit id: the provider's idempotency key and how the payment is
    /// found again ([`PaymentProvider::find`]) when the gateway lost the answer.
    pub reference: String,
    pub amount: Money,
    pub card: Card,
}

/// Where a payment stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Authorized, not captured yet.
    RequiresCapture,
    /// Captured; the money is not confirmed yet (a webhook will say).
    Processing,
    Succeeded,
    Failed,
    /// Stopped for review.
    Held,
    Canceled,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresCapture => "requires_capture",
            PaymentStatus::Processing => "processing",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Held => "held",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        Some(match s {
            "requires_capture" => PaymentStatus::RequiresCapture,
            "processing" => PaymentStatus::Processing,
            "succeeded" => PaymentStatus::Succeeded,
            "failed" => PaymentStatus::Failed,
            "held" => PaymentStatus::Held,
            "canceled" => PaymentStatus::Canceled,
            "refunded" => PaymentStatus::Refunded,
            _ => return None,
        })
    }
}

/// A payment as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPayment {
    /// The provider's id.
    pub id: String,
    /// The gateway's deposit id.
    pub reference: String,
    pub amount: Money,
    pub status: PaymentStatus,
    /// Why it failed or is held (the provider's code, e.g. `card_declined`).
    #[serde(default)]
    pub reason: String,
}

impl ProviderPayment {
    /// What this says to a deposit's lifecycle.
    pub fn signal(&self) -> PaymentSignal {
        signal_of(self.status, &self.reason)
    }
}

/// The lifecycle signal of a provider status (and its reason).
pub fn signal_of(status: PaymentStatus, reason: &str) -> PaymentSignal {
    let reason = if reason.is_empty() {
        status.as_str().to_string()
    } else {
        reason.to_string()
    };
    match status {
        PaymentStatus::RequiresCapture => PaymentSignal::Authorized,
        PaymentStatus::Processing => PaymentSignal::Processing,
        PaymentStatus::Succeeded => PaymentSignal::Succeeded,
        PaymentStatus::Failed => PaymentSignal::Failed { reason },
        PaymentStatus::Held => PaymentSignal::Held { reason },
        PaymentStatus::Canceled => PaymentSignal::Canceled { reason },
        PaymentStatus::Refunded => PaymentSignal::Refunded,
    }
}

/// A provider that could not be asked (network, outage, its own error). Nothing is
/// decided from it: the deposit waits and the reconciliation asks again.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    #[error("payment {0} not found at the provider")]
    NotFound(String),
    #[error("payment provider refused the request: {0}")]
    Refused(String),
}

/// A payment provider: cards authorized, captured and refunded; payments looked up. Each
/// call is idempotent at the provider (`reference` is its idempotency key), so the gateway
/// may repeat any of them after a crash. The final word on a payment also arrives by a
/// signed webhook (`POST /api/v1/payments/webhook`, [`super::signature`]).
pub trait PaymentProvider: Send + Sync + 'static {
    /// The `payments.provider` value that selects it.
    fn kind(&self) -> &'static str;
    /// Authorizes the card for the amount: `requires_capture`, or `failed` with a reason.
    fn authorize<'a>(
        &'a self,
        req: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<ProviderPayment, ProviderError>>;
    /// Captures an authorized payment: `succeeded`, or `processing` (confirmed later by a
    /// webhook), or `failed` / `held`.
    fn capture<'a>(
        &'a self,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<ProviderPayment, ProviderError>>;
    /// Returns a succeeded payment to the card.
    fn refund<'a>(
        &'a self,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<ProviderPayment, ProviderError>>;
    /// Returns `amount` of a succeeded payment to the card: one part of a partial refund,
    /// idempotent by `reference` (a part asked twice is refunded once). The parts of a
    /// payment never add up to more than it.
    fn refund_part<'a>(
        &'a self,
        payment_id: &'a str,
        amount: Money,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// The payment with this id.
    fn retrieve<'a>(
        &'a self,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProviderPayment>, ProviderError>>;
    /// The payment made for this deposit id, if the provider ever saw one.
    fn find<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProviderPayment>, ProviderError>>;
}
