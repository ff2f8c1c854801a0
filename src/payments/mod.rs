//! Online deposits through a payment provider, end to end.
//!
//! # What it owns
//!
//! The [`PaymentProvider`] interface and the built-in [`testpay::TestProvider`]; the
//! webhook signature ([`signature`]); and the driver that carries a deposit from the
//! family's request to the ledger: [`Payments::deposit`], [`Payments::webhook`],
//! [`Payments::refund`] and [`Payments::reconcile`]. Money moves only in the ledger
//! ([`crate::ledger::Ledger::online_signal`]), whose lifecycle core
//! ([`crate::ledger::online_next`]) decides what each word from the provider does.
//!
//! # Exactly once
//!
//! The deposit is recorded (`submitted`) before the provider is asked, under the family's
//! `Idempotency-Key`; the provider is asked with the deposit id as *its* idempotency key.
//! So a retried or double-submitted request finds the same deposit and the same payment,
//! and carries on from where the first stopped. Every answer — the provider's reply, each
//! webhook (duplicated, reordered, late), the reconciliation's lookup — is a signal applied
//! under the deposit's row lock; only the first confirmation posts, and the credit's ledger
//! key (`online-deposit:<id>`, unique) makes a second posting impossible in the database.
//! If the gateway dies between authorization and posting, the deposit stays `submitted` or
//! `authorized`; at start and every `payments.reconcile_interval_secs` the reconciliation
//! asks the provider about every deposit unchanged for `payments.reconcile_after_secs` and
//! applies its answer (capturing a payment left authorized), and the provider's own
//! webhook, delivered late, is then a duplicate.
//!
//! # Who calls it
//!
//! The API (`/api/v1/family/deposits`, `/api/v1/deposits/{id}`, `/api/v1/payments/webhook`)
//! and the server, which starts the reconciliation and the test provider's deliveries.

pub mod provider;
pub mod signature;
pub mod testpay;

pub use provider::{
    AuthorizeRequest, Card, PaymentProvider, PaymentStatus, ProviderError, ProviderPayment,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::db::Db;
use crate::ledger::{
    Ledger, LedgerError, OnlineDeposit, OnlineDepositRequest, OnlineState, OnlineStep,
    PaymentSignal, PrepaidRefund, RefundPart, RequestKey,
};
use serde::Deserialize;
use signature::SignatureError;
use std::sync::Arc;
use std::time::Duration;

/// Label of the webhook secret derived from `security.pin_pepper` when
/// `payments.webhook_secret` is empty.
const WEBHOOK_KEY_LABEL: &[u8] = b"sallyport payments webhook v1";

/// The payment side of the gateway. Cheap to clone.
#[derive(Clone)]
pub struct Payments {
    provider: Arc<dyn PaymentProvider>,
    test: Option<Arc<testpay::TestProvider>>,
    secret: Arc<[u8]>,
    tolerance_secs: u64,
    reconcile_after: Duration,
    reconcile_every: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("provider", &self.provider.kind())
            .finish_non_exhaustive()
    }
}

/// The webhook secret: `payments.webhook_secret`, or derived from the PIN pepper.
pub fn webhook_secret(config: &Config) -> Vec<u8> {
    match config.payments.webhook_secret.as_str() {
        "" => crate::config::derive_key(
            config.security.pin_pepper.as_bytes(),
            WEBHOOK_KEY_LABEL,
            &[],
        )
        .to_vec(),
        s => s.as_bytes().to_vec(),
    }
}

/// Why a payment request failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Why a webhook was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the webhook body is not a payment event: {0}")]
    Body(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A webhook event as providers send it.
#[derive(Debug, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: ProviderPayment,
}

/// What a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Applied to a deposit (the step may be [`OnlineStep::Ignore`]: a duplicate).
    Applied {
        deposit_id: String,
        state: OnlineState,
        step: OnlineStep,
    },
    /// No deposit of ours: acknowledged, nothing done.
    Unknown,
}

/// What one reconciliation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Deposits asked about.
    pub checked: usize,
    /// Of those, deposits whose state changed.
    pub moved: usize,
    /// Refunds the provider confirmed.
    pub refunds_confirmed: usize,
    /// Questions the provider could not answer (asked again next pass).
    pub failures: usize,
}

impl Payments {
    /// The provider `payments.provider` names (only `test` is built in).
    pub fn from_config(db: Db, clock: Arc<dyn Clock>, config: &Config) -> Payments {
        let secret: Arc<[u8]> = Arc::from(webhook_secret(config));
        let p = &config.payments;
        let test = Arc::new(testpay::TestProvider::new(
            db,
            clock.clone(),
            testpay::TestSettings {
                webhook_delay: Duration::from_millis(p.test_webhook_delay_ms),
                copies: p.test_webhook_copies,
                reverse: p.test_webhook_reverse,
                secret: secret.clone(),
            },
        ));
        Payments {
            provider: test.clone(),
            test: Some(test),
            secret,
            tolerance_secs: p.webhook_tolerance_secs,
            reconcile_after: Duration::from_secs(p.reconcile_after_secs),
            reconcile_every: Duration::from_secs(p.reconcile_interval_secs),
            clock,
        }
    }

    pub fn provider_kind(&self) -> &'static str {
        self.provider.kind()
    }

    /// The built-in test provider, when it is the one configured.
    pub fn test_provider(&self) -> Option<&Arc<testpay::TestProvider>> {
        self.test.as_ref()
    }

    /// The webhook secret (tests sign with it).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Submits the deposit, then asks the provider to authorize and capture it, applying
    /// each answer. A provider that cannot be reached leaves the deposit waiting (the
    /// reconciliation asks again); the deposit as it stands is returned either way.
    pub async fn deposit(
        &self,
        ledger: &Ledger,
        key: &RequestKey,
        req: OnlineDepositRequest,
        card: Card,
    ) -> Result<OnlineDeposit, PaymentError> {
        let submitted = ledger.submit_online(key, req).await?;
        let id = submitted.id.clone();
        let current = ledger.online_deposit(&id).await?;
        if !matches!(
            current.state,
            OnlineState::Submitted | OnlineState::Authorized
        ) {
            return Ok(current); // a replay of a request that already finished
        }
        let auth = AuthorizeRequest {
            reference: id.clone(),
            amount: current.amount,
            card,
        };
        if let Err(e) = self.carry(ledger, &auth, "provider").await {
            tracing::warn!(deposit_id = %id, error = %e, "payments: provider not reached; the reconciliation will ask again");
        }
        Ok(ledger.online_deposit(&id).await?)
    }

    /// Authorize, then capture, applying each answer.
    async fn carry(
        &self,
        ledger: &Ledger,
        auth: &AuthorizeRequest,
        source: &str,
    ) -> Result<(), PaymentError> {
        let p = self.provider.authorize(auth).await?;
        let (d, _) = ledger
            .online_signal(&auth.reference, &p.signal(), source, Some(&p.id))
            .await?;
        // Only a deposit still waiting is captured: one voided meanwhile (the
        // reconciliation gave up on a provider that answered too late) keeps its
        // authorization uncaptured, and the provider releases it.
        if p.status == PaymentStatus::RequiresCapture && d.state == OnlineState::Authorized {
            self.capture(ledger, &auth.reference, &p.id, source).await?;
        }
        Ok(())
    }

    async fn capture(
        &self,
        ledger: &Ledger,
        deposit_id: &str,
        payment_id: &str,
        source: &str,
    ) -> Result<(), PaymentError> {
        let p = self.provider.capture(payment_id).await?;
        ledger
            .online_signal(deposit_id, &p.signal(), source, Some(&p.id))
            .await?;
        Ok(())
    }

    /// Checks a webhook's signature at `now` (Unix seconds) and applies its event. A bad
    /// signature changes nothing ([`WebhookError::Signature`]).
    pub async fn webhook(
        &self,
        ledger: &Ledger,
        signature_header: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookOutcome, WebhookError> {
        let now = self.clock.wall().timestamp();
        signature::verify(
            &self.secret,
            signature_header,
            body,
            now,
            self.tolerance_secs,
        )?;
        let event: WebhookEvent =
            serde_json::from_slice(body).map_err(|e| WebhookError::Body(e.to_string()))?;
        let expected = format!("payment.{}", event.data.status.as_str());
        if event.kind != expected {
            return Err(WebhookError::Body(format!(
                "event type {} does not match its payment's status {}",
                crate::text::quote(&event.kind),
                event.data.status.as_str()
            )));
        }
        let deposit_id = event.data.reference.as_str();
        let current = match ledger.online_deposit(deposit_id).await {
            Ok(d) => d,
            Err(LedgerError::DepositNotFound { .. }) => {
                tracing::warn!(event = %event.id, "payments: webhook for no deposit of ours");
                return Ok(WebhookOutcome::Unknown);
            }
            Err(e) => return Err(e.into()),
        };
        if current
            .payment_id
            .as_deref()
            .is_some_and(|p| p != event.data.id)
        {
            tracing::warn!(event = %event.id, deposit_id, "payments: webhook names another payment of this deposit");
            return Ok(WebhookOutcome::Unknown);
        }
        let (d, step) = ledger
            .online_signal(
                deposit_id,
                &event.data.signal(),
                "webhook",
                Some(&event.data.id),
            )
            .await?;
        Ok(WebhookOutcome::Applied {
            deposit_id: d.id,
            state: d.state,
            step,
        })
    }

    /// Refunds a posted deposit: the ledger first (the account must still hold the
    /// money), then the provider. A provider that fails here is asked again by the
    /// reconciliation until it confirms.
    pub async fn refund(
        &self,
        ledger: &Ledger,
        key: &RequestKey,
        deposit_id: &str,
        source: &str,
    ) -> Result<OnlineDeposit, PaymentError> {
        let d = ledger.refund_online(key, deposit_id, source).await?;
        if let Err(e) = self.refund_at_provider(ledger, &d).await {
            tracing::warn!(deposit_id, error = %e, "payments: refund not confirmed by the provider yet");
        }
        Ok(ledger.online_deposit(deposit_id).await?)
    }

    /// Refunds the whole balance of a family's prepaid account: the ledger first (every
    /// part in one transaction, [`crate::ledger::PrepaidRefund`]), then the provider, part
    /// by part. A part the provider does not confirm now is asked again by the
    /// reconciliation; the answer shows which parts it confirmed.
    pub async fn refund_prepaid(
        &self,
        ledger: &Ledger,
        key: &RequestKey,
        account_id: &str,
        requested_by: &str,
    ) -> Result<PrepaidRefund, PaymentError> {
        let mut r = ledger.refund_prepaid(key, account_id, requested_by).await?;
        // The parts as they stand (a replay finds them confirmed already).
        let known = ledger.prepaid_refund_confirmations(&r.request_id).await?;
        for part in r.parts.iter_mut() {
            part.confirmed_at = known
                .iter()
                .find(|(id, _)| *id == part.id)
                .and_then(|(_, at)| *at);
            if part.confirmed_at.is_some() || part.payment_id.is_none() {
                continue;
            }
            match self.part_at_provider(ledger, part).await {
                Ok(()) => part.confirmed_at = Some(self.clock.wall()),
                Err(e) => {
                    tracing::warn!(part = %part.id, error = %e, "payments: prepaid refund part not confirmed by the provider yet")
                }
            }
        }
        Ok(r)
    }

    /// Asks the provider for one card part of a prepaid refund (idempotent by its id).
    async fn part_at_provider(
        &self,
        ledger: &Ledger,
        part: &RefundPart,
    ) -> Result<(), PaymentError> {
        let Some(payment_id) = part.payment_id.as_deref() else {
            return Ok(()); // owed by the facility: nothing to ask
        };
        self.provider
            .refund_part(payment_id, part.amount, &part.id)
            .await?;
        ledger.prepaid_refund_confirmed(&part.id).await?;
        Ok(())
    }

    async fn refund_at_provider(
        &self,
        ledger: &Ledger,
        d: &OnlineDeposit,
    ) -> Result<(), PaymentError> {
        let Some(payment_id) = d.payment_id.as_deref() else {
            return Err(ProviderError::NotFound(d.id.clone()).into());
        };
        let p = self.provider.refund(payment_id).await?;
        if p.status == PaymentStatus::Refunded {
            ledger.online_provider_refunded(&d.id).await?;
        }
        Ok(())
    }

    /// One reconciliation pass: every deposit still waiting for its provider and
    /// unchanged for `reconcile_after` is looked up at the provider (by payment id, or by
    /// its own id when the answer to the authorization was lost) and the answer applied;
    /// a payment left authorized is captured; unconfirmed refunds are asked again.
    pub async fn reconcile(&self, ledger: &Ledger) -> Result<Reconciled, LedgerError> {
        let after =
            chrono::Duration::from_std(self.reconcile_after).unwrap_or(chrono::Duration::zero());
        let before = self.clock.wall() - after;
        let mut r = Reconciled::default();
        for id in ledger.online_unsettled(before).await? {
            r.checked += 1;
            match self.reconcile_one(ledger, &id).await {
                Ok(true) => r.moved += 1,
                Ok(false) => {}
                Err(e) => {
                    r.failures += 1;
                    tracing::warn!(deposit_id = %id, error = %e, "payments: reconciliation could not settle a deposit");
                }
            }
        }
        for id in ledger.online_unconfirmed_refunds().await? {
            let d = ledger.online_deposit(&id).await?;
            match self.refund_at_provider(ledger, &d).await {
                Ok(()) => r.refunds_confirmed += 1,
                Err(e) => {
                    r.failures += 1;
                    tracing::warn!(deposit_id = %id, error = %e, "payments: refund still not confirmed");
                }
            }
        }
        for part in ledger.prepaid_refunds_unconfirmed(before).await? {
            match self.part_at_provider(ledger, &part).await {
                Ok(()) => r.refunds_confirmed += 1,
                Err(e) => {
                    r.failures += 1;
                    tracing::warn!(part = %part.id, error = %e, "payments: prepaid refund part still not confirmed");
                }
            }
        }
        if r.checked > 0 || r.failures > 0 {
            tracing::info!(
                checked = r.checked,
                moved = r.moved,
                failures = r.failures,
                "payments: reconciled"
            );
        }
        Ok(r)
    }

    async fn reconcile_one(&self, ledger: &Ledger, id: &str) -> Result<bool, PaymentError> {
        let before = ledger.online_deposit(id).await?;
        let found = match before.payment_id.as_deref() {
            Some(p) => self.provider.retrieve(p).await?,
            None => self.provider.find(id).await?,
        };
        match found {
            None => {
                ledger
                    .online_signal(id, &PaymentSignal::Unknown, "reconcile", None)
                    .await?;
            }
            Some(p) => {
                let (d, _) = ledger
                    .online_signal(id, &p.signal(), "reconcile", Some(&p.id))
                    .await?;
                if p.status == PaymentStatus::RequiresCapture && d.state == OnlineState::Authorized
                {
                    self.capture(ledger, id, &p.id, "reconcile").await?;
                }
            }
        }
        let after = ledger.online_deposit(id).await?;
        Ok(after.state != before.state)
    }

    /// Starts the reconciliation (now, then every `payments.reconcile_interval_secs`) and,
    /// for the test provider, its webhook deliveries to the API at `api_url`.
    pub fn spawn(&self, ledger: Ledger, api_url: crate::cluster::NodeUrl) {
        if let Some(test) = &self.test {
            test.clone().spawn_delivery(api_url);
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.reconcile(&ledger).await {
                    tracing::warn!(error = %e, "payments: reconciliation failed");
                }
                tokio::time::sleep(me.reconcile_every).await;
            }
        });
    }
}
