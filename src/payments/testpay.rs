//! The built-in test provider (`payments.provider = "test"`): behaves like a card
//! processor's test mode (Stripe's PaymentIntents were the model) without moving money.
//!
//! The card number decides ([`outcome`]):
//!
//! | card | authorize | capture | later (by webhook) |
//! |---|---|---|---|
//! | 4242 4242 4242 4242 | authorized | succeeded | — |
//! | 4000 0000 0000 0077 | authorized | processing | succeeded |
//! | 4000 0000 0000 0341 | authorized | processing | failed `bank_declined` |
//! | 4000 0000 0000 9235 | authorized | processing | held `risk_review` |
//! | 4000 0000 0000 0002 | failed `card_declined` | | |
//! | 4000 0000 0000 9995 | failed `insufficient_funds` | | |
//! | 4000 0000 0000 0069 | failed `expired_card` | | |
//! | any other | failed `card_not_supported` | | |
//!
//! Every change of a payment queues a signed webhook event (`payment.<status>`), due
//! `test_webhook_delay_ms` later; a "processing" payment settles at the same moment.
//! Events are delivered over real HTTP to the gateway's own webhook route by a task in the
//! gateway process ([`TestProvider::spawn_delivery`]) — `test_webhook_copies` times each,
//! newest first when `test_webhook_reverse` — and retried with backoff until answered 2xx.
//!
//! Why inside the gateway, with its books in the gateway's database (`testpay_payments`,
//! `testpay_events`): a real provider's state survives a crash of the gateway, and so must
//! this one's, or the crash tests would test nothing (a `kill -9` between authorization and
//! posting must find the payment at the provider afterwards, and its webhook still
//! undelivered). Its own tables in the same database give that with no second process to
//! run in the two-command set-up. Its tables are its own: the gateway's deposit code never
//! reads them, only this provider's interface ([`super::PaymentProvider`]).

use super::provider::{
    AuthorizeRequest, PaymentProvider, PaymentStatus, ProviderError, ProviderPayment,
};
use super::signature;
use crate::clock::Clock;
use crate::db::{to_micros, Db};
use crate::money::Money;
use futures_util::future::BoxFuture;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// What a test card does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `Err(reason)`: declined at authorization.
    pub authorize: Result<(), &'static str>,
    /// What a capture leads to, and whether through `processing` first.
    pub settles_to: (PaymentStatus, &'static str),
    pub settle_later: bool,
}

/// The outcome of a test card number (digits only).
pub fn outcome(number: &str) -> Outcome {
    let ok = |to: PaymentStatus, reason, later| Outcome {
        authorize: Ok(()),
        settles_to: (to, reason),
        settle_later: later,
    };
    let declined = |reason| Outcome {
        authorize: Err(reason),
        settles_to: (PaymentStatus::Failed, reason),
        settle_later: false,
    };
    match number {
        "4242424242424242" => ok(PaymentStatus::Succeeded, "", false),
        "4000000000000077" => ok(PaymentStatus::Succeeded, "", true),
        "4000000000000341" => ok(PaymentStatus::Failed, "bank_declined", true),
        "4000000000009235" => ok(PaymentStatus::Held, "risk_review", true),
        "4000000000000002" => declined("card_declined"),
        "4000000000009995" => declined("insufficient_funds"),
        "4000000000000069" => declined("expired_card"),
        _ => declined("card_not_supported"),
    }
}

/// How the test provider delivers its webhooks.
#[derive(Debug, Clone)]
pub struct TestSettings {
    pub webhook_delay: Duration,
    pub copies: u32,
    pub reverse: bool,
    /// The webhook secret it signs with.
    pub secret: Arc<[u8]>,
}

/// One webhook to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub body: String,
    /// The `Sallyport-Signature` value, signed now.
    pub signature: String,
}

/// The test provider.
pub struct TestProvider {
    db: Db,
    clock: Arc<dyn Clock>,
    settings: TestSettings,
    /// Wakes the delivery task when an event is queued.
    wake: Notify,
}

impl std::fmt::Debug for TestProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProvider").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(e.to_string())
}

const PAYMENT_COLUMNS: &str =
    "id, reference, amount_minor, status, reason, final_status, final_reason, settle_later, settles_at";

impl TestProvider {
    pub fn new(db: Db, clock: Arc<dyn Clock>, settings: TestSettings) -> TestProvider {
        TestProvider {
            db,
            clock,
            settings,
            wake: Notify::new(),
        }
    }

    fn now(&self) -> i64 {
        to_micros(self.clock.wall())
    }

    fn delay_micros(&self) -> i64 {
        i64::try_from(self.settings.webhook_delay.as_micros()).unwrap_or(i64::MAX / 4)
    }

    /// A payment as it stands at `now`: a processing payment past its settling time has
    /// settled.
    fn effective(row: &AnyRow, now: i64) -> Result<ProviderPayment, ProviderError> {
        let get_s = |c: &str| row.try_get::<String, _>(c).map_err(unavailable);
        let status = PaymentStatus::parse(&get_s("status")?)
            .ok_or_else(|| unavailable("unknown test payment status"))?;
        let settles_at: i64 = row.try_get("settles_at").map_err(unavailable)?;
        let (status, reason) = if status == PaymentStatus::Processing && now >= settles_at {
            let fin = PaymentStatus::parse(&get_s("final_status")?)
                .ok_or_else(|| unavailable("unknown test payment status"))?;
            (fin, get_s("final_reason")?)
        } else {
            (status, get_s("reason")?)
        };
        Ok(ProviderPayment {
            id: get_s("id")?,
            reference: get_s("reference")?,
            amount: Money::from_minor(row.try_get("amount_minor").map_err(unavailable)?),
            status,
            reason,
        })
    }

    async fn row(&self, column: &str, value: &str) -> Result<Option<AnyRow>, ProviderError> {
        sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM testpay_payments WHERE {column} = $1"
        ))
        .bind(value)
        .fetch_optional(self.db.pool())
        .await
        .map_err(unavailable)
    }

    async fn lookup(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<ProviderPayment>, ProviderError> {
        let now = self.now();
        match self.row(column, value).await? {
            Some(r) => Ok(Some(Self::effective(&r, now)?)),
            None => Ok(None),
        }
    }

    /// Queues the webhook of `p` as it is (or will be) at `due`.
    async fn queue(
        &self,
        conn: &mut sqlx::AnyConnection,
        p: &ProviderPayment,
        due: i64,
        seq: i64,
    ) -> Result<(), ProviderError> {
        let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let body = json!({
            "id": id,
            "type": format!("payment.{}", p.status.as_str()),
            "created": due.div_euclid(1_000_000),
            "data": p,
        });
        sqlx::query(
            "INSERT INTO testpay_events (id, payment_id, body, due_at, seq) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.as_str())
        .bind(p.id.as_str())
        .bind(body.to_string())
        .bind(due)
        .bind(seq)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Sets a payment's status (and queues its webhooks) in one transaction.
    async fn change(
        &self,
        p: &ProviderPayment,
        settles_at: i64,
        then: Option<&ProviderPayment>,
    ) -> Result<(), ProviderError> {
        let now = self.now();
        let due = now.saturating_add(self.delay_micros());
        let _turn = self.db.write_turn().await;
        let mut tx = self.db.begin_write().await.map_err(unavailable)?;
        sqlx::query(
            "UPDATE testpay_payments SET status = $1, reason = $2, settles_at = $3 WHERE id = $4",
        )
        .bind(p.status.as_str())
        .bind(p.reason.as_str())
        .bind(settles_at)
        .bind(p.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let seq = now.saturating_mul(4);
        self.queue(&mut tx, p, due, seq).await?;
        if let Some(later) = then {
            self.queue(&mut tx, later, settles_at.max(due), seq + 1)
                .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        self.wake.notify_one();
        Ok(())
    }

    async fn do_authorize(&self, req: &AuthorizeRequest) -> Result<ProviderPayment, ProviderError> {
        if let Some(p) = self.lookup("reference", &req.reference).await? {
            return Ok(p); // the same idempotency key: the same payment
        }
        let o = outcome(&req.card.number);
        let (status, reason) = match o.authorize {
            Ok(()) => (PaymentStatus::RequiresCapture, ""),
            Err(r) => (PaymentStatus::Failed, r),
        };
        let p = ProviderPayment {
            id: format!("tp_{}", uuid::Uuid::now_v7().simple()),
            reference: req.reference.clone(),
            amount: req.amount,
            status,
            reason: reason.into(),
        };
        let now = self.now();
        {
            let _turn = self.db.write_turn().await;
            let inserted = sqlx::query(
                "INSERT INTO testpay_payments (id, reference, amount_minor, status, reason, \
                 final_status, final_reason, settle_later, settles_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9) ON CONFLICT (reference) DO NOTHING",
            )
            .bind(p.id.as_str())
            .bind(p.reference.as_str())
            .bind(p.amount.to_minor())
            .bind(p.status.as_str())
            .bind(p.reason.as_str())
            .bind(o.settles_to.0.as_str())
            .bind(o.settles_to.1)
            .bind(i64::from(o.settle_later))
            .bind(now)
            .execute(self.db.pool())
            .await
            .map_err(unavailable)?
            .rows_affected();
            if inserted == 0 {
                drop(_turn);
                return self
                    .lookup("reference", &req.reference)
                    .await?
                    .ok_or_else(|| unavailable("test payment vanished"));
            }
        }
        if p.status == PaymentStatus::Failed {
            self.change(&p, 0, None).await?;
        }
        Ok(p)
    }

    async fn do_capture(&self, payment_id: &str) -> Result<ProviderPayment, ProviderError> {
        let row = self
            .row("id", payment_id)
            .await?
            .ok_or_else(|| ProviderError::NotFound(payment_id.into()))?;
        let mut p = Self::effective(&row, self.now())?;
        if p.status != PaymentStatus::RequiresCapture {
            return Ok(p); // captured (or refused) before: as it stands
        }
        let get_s = |c: &str| row.try_get::<String, _>(c).map_err(unavailable);
        let fin = PaymentStatus::parse(&get_s("final_status")?)
            .ok_or_else(|| unavailable("unknown test payment status"))?;
        let fin_reason = get_s("final_reason")?;
        let later: i64 = row.try_get("settle_later").map_err(unavailable)?;
        if later == 1 {
            p.status = PaymentStatus::Processing;
            p.reason = String::new();
            let settles_at = self.now().saturating_add(self.delay_micros());
            let settled = ProviderPayment {
                status: fin,
                reason: fin_reason,
                ..p.clone()
            };
            self.change(&p, settles_at, Some(&settled)).await?;
        } else {
            p.status = fin;
            p.reason = fin_reason;
            self.change(&p, 0, None).await?;
        }
        Ok(p)
    }

    /// The sum of the partial refunds of `payment_id`, in minor units.
    async fn refunded_in_parts(
        conn: &mut sqlx::AnyConnection,
        payment_id: &str,
    ) -> Result<i64, ProviderError> {
        sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS total FROM testpay_refunds \
             WHERE payment_id = $1",
        )
        .bind(payment_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?
        .try_get("total")
        .map_err(unavailable)
    }

    async fn do_refund_part(
        &self,
        payment_id: &str,
        amount: Money,
        reference: &str,
    ) -> Result<(), ProviderError> {
        let p = self
            .lookup("id", payment_id)
            .await?
            .ok_or_else(|| ProviderError::NotFound(payment_id.into()))?;
        if p.status != PaymentStatus::Succeeded {
            return Err(ProviderError::Refused(format!(
                "payment {payment_id} is {}, not succeeded",
                p.status.as_str()
            )));
        }
        let minor = amount.to_minor();
        if minor <= 0 {
            return Err(ProviderError::Refused(format!("refund of {amount}")));
        }
        let _turn = self.db.write_turn().await;
        let mut tx = self.db.begin_write().await.map_err(unavailable)?;
        let done = sqlx::query("SELECT 1 AS one FROM testpay_refunds WHERE reference = $1")
            .bind(reference)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if done.is_none() {
            let total: i64 = sqlx::query("SELECT amount_minor FROM testpay_payments WHERE id = $1")
                .bind(payment_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?
                .try_get("amount_minor")
                .map_err(unavailable)?;
            let before = Self::refunded_in_parts(&mut tx, payment_id).await?;
            if before.saturating_add(minor) > total {
                return Err(ProviderError::Refused(format!(
                    "payment {payment_id}: refunds would exceed the payment"
                )));
            }
            sqlx::query(
                "INSERT INTO testpay_refunds (reference, payment_id, amount_minor, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(reference)
            .bind(payment_id)
            .bind(minor)
            .bind(self.now())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn do_refund(&self, payment_id: &str) -> Result<ProviderPayment, ProviderError> {
        let mut p = self
            .lookup("id", payment_id)
            .await?
            .ok_or_else(|| ProviderError::NotFound(payment_id.into()))?;
        // A payment partly refunded already is not refunded whole (that would return
        // its refunded parts twice).
        let mut conn = self.db.pool().acquire().await.map_err(unavailable)?;
        if Self::refunded_in_parts(&mut conn, payment_id).await? > 0 {
            return Err(ProviderError::Refused(format!(
                "payment {payment_id} is partly refunded already"
            )));
        }
        drop(conn);
        match p.status {
            PaymentStatus::Refunded => Ok(p),
            PaymentStatus::Succeeded => {
                p.status = PaymentStatus::Refunded;
                p.reason = String::new();
                self.change(&p, 0, None).await?;
                Ok(p)
            }
            other => Err(ProviderError::Refused(format!(
                "payment {payment_id} is {}, not succeeded",
                other.as_str()
            ))),
        }
    }

    /// The webhooks due at `now` (each `copies` times, newest first when reversed),
    /// signed now. Events that failed 12 times are given up (the reconciliation still
    /// finds their payments).
    pub async fn due(&self, now: i64) -> Result<Vec<Delivery>, ProviderError> {
        let order = if self.settings.reverse { "DESC" } else { "ASC" };
        let rows = sqlx::query(&format!(
            "SELECT id, body FROM testpay_events WHERE delivered_at IS NULL AND due_at <= $1 \
             AND attempts < 12 ORDER BY seq {order}, id {order} LIMIT 200"
        ))
        .bind(now)
        .fetch_all(self.db.pool())
        .await
        .map_err(unavailable)?;
        let t = now.div_euclid(1_000_000);
        let mut out = Vec::new();
        for r in rows {
            let event_id: String = r.try_get("id").map_err(unavailable)?;
            let body: String = r.try_get("body").map_err(unavailable)?;
            let sig = signature::sign(&self.settings.secret, t, body.as_bytes());
            for _ in 0..self.settings.copies.max(1) {
                out.push(Delivery {
                    event_id: event_id.clone(),
                    body: body.clone(),
                    signature: sig.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Records the outcome of a delivery: delivered, or retried after a backoff.
    pub async fn delivered(&self, event_id: &str, ok: bool) -> Result<(), ProviderError> {
        let now = self.now();
        let _turn = self.db.write_turn().await;
        let q = if ok {
            sqlx::query("UPDATE testpay_events SET delivered_at = $1 WHERE id = $2 AND delivered_at IS NULL")
                .bind(now)
        } else {
            sqlx::query(
                "UPDATE testpay_events SET attempts = attempts + 1, due_at = $1 WHERE id = $2",
            )
            .bind(now.saturating_add(2_000_000))
        };
        q.bind(event_id)
            .execute(self.db.pool())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// When the next undelivered event falls due (microseconds), if any.
    async fn next_due(&self) -> Result<Option<i64>, ProviderError> {
        let row = sqlx::query(
            "SELECT MIN(due_at) AS due FROM testpay_events WHERE delivered_at IS NULL AND attempts < 12",
        )
        .fetch_one(self.db.pool())
        .await
        .map_err(unavailable)?;
        row.try_get::<Option<i64>, _>("due").map_err(unavailable)
    }

    /// Delivers the due webhooks to the gateway at `url` (`POST /api/v1/payments/webhook`)
    /// until the process ends; sleeps until the next event is due or one is queued.
    pub fn spawn_delivery(self: Arc<Self>, url: crate::cluster::NodeUrl) {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.deliver_due(&url).await {
                    tracing::warn!(error = %e, "test payment provider: delivery failed");
                }
                let wait = match self.next_due().await {
                    Ok(Some(due)) => {
                        let micros = due.saturating_sub(self.now()).clamp(0, 5_000_000);
                        Duration::from_micros(micros.unsigned_abs())
                    }
                    _ => Duration::from_secs(5),
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                }
            }
        });
    }

    async fn deliver_due(&self, url: &crate::cluster::NodeUrl) -> Result<(), ProviderError> {
        for d in self.due(self.now()).await? {
            let headers = [(signature::SIGNATURE_HEADER, d.signature.as_str())];
            let sent = crate::cluster::client::exchange(
                url,
                axum::http::Method::POST,
                "/api/v1/payments/webhook",
                &headers,
                axum::body::Bytes::from(d.body.clone()),
                Duration::from_secs(10),
            )
            .await;
            let ok = matches!(&sent, Ok((s, _)) if s.is_success());
            match &sent {
                Ok((s, body)) if !s.is_success() => {
                    tracing::warn!(event = %d.event_id, status = %s, body = %String::from_utf8_lossy(body), "test payment provider: webhook refused")
                }
                Err(e) => {
                    tracing::warn!(event = %d.event_id, error = %e, "test payment provider: webhook not delivered")
                }
                Ok(_) => {
                    tracing::debug!(event = %d.event_id, "test payment provider: webhook delivered")
                }
            }
            self.delivered(&d.event_id, ok).await?;
        }
        Ok(())
    }
}

impl PaymentProvider for TestProvider {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn authorize<'a>(
        &'a self,
        req: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<ProviderPayment, ProviderError>> {
        Box::pin(self.do_authorize(req))
    }

    fn capture<'a>(
        &'a self,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<ProviderPayment, ProviderError>> {
        Box::pin(self.do_capture(payment_id))
    }

    fn refund<'a>(
        &'a self,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<ProviderPayment, ProviderError>> {
        Box::pin(self.do_refund(payment_id))
    }

    fn refund_part<'a>(
        &'a self,
        payment_id: &'a str,
        amount: Money,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.do_refund_part(payment_id, amount, reference))
    }

    fn retrieve<'a>(
        &'a self,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProviderPayment>, ProviderError>> {
        Box::pin(self.lookup("id", payment_id))
    }

    fn find<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProviderPayment>, ProviderError>> {
        Box::pin(self.lookup("reference", reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_decide_the_outcome() {
        assert_eq!(outcome("4242424242424242").authorize, Ok(()));
        assert!(!outcome("4242424242424242").settle_later);
        assert!(outcome("4000000000000077").settle_later);
        assert_eq!(outcome("4000000000000002").authorize, Err("card_declined"));
        assert_eq!(
            outcome("4000000000009235").settles_to,
            (PaymentStatus::Held, "risk_review")
        );
        assert_eq!(
            outcome("5555555555554444").authorize,
            Err("card_not_supported")
        );
    }
}
