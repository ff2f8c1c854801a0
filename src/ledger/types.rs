//! The ledger's nouns: what callers send and what they get back. All of them serialize
//! to JSON with amounts as strings (`"12.50"`), so the API returns them as they are and
//! the ledger stores them as idempotent responses.

use super::error::LedgerError;
use crate::money::Money;
/// What a session debit pays for (audio call or video visit); picks the revenue account.
/// The rating engine's type, so the charging driver passes it straight through.
pub use crate::rating::Service;
use crate::text::{self, TextError};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A closed set of values stored as TEXT: `as_str` for SQL, `parse_db` back (an unknown
/// value is [`LedgerError::Corrupt`]), `Display` as the stored text.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $var),+
        }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }
            #[allow(dead_code)]
            pub(crate) fn parse_db(s: &str) -> Result<Self, LedgerError> {
                match s {
                    $($text => Ok($name::$var),)+
                    other => Err(LedgerError::corrupt(format!(
                        "unknown {} '{other}'", stringify!($name)))),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Who an account belongs to.
    AccountKind {
        /// An inmate's debit account, opened at booking.
        Inmate => "inmate",
        /// A family member's prepaid account.
        Family => "family",
        /// A facility's book-keeping account (see [`super::SystemAccount`]).
        System => "system",
    }
);

text_enum!(
    AccountStatus {
        Open => "open",
        /// Closed at release: refuses deposits and debits for good.
        Closed => "closed",
    }
);

text_enum!(
    DepositMethod {
        /// Card or bank payment: posted at once.
        Online => "online",
        /// Cash at a lobby kiosk: posted at once.
        Kiosk => "kiosk",
        /// Pending until staff post (or void) it.
        MoneyOrder => "money_order",
    }
);

text_enum!(
    DepositStatus {
        Pending => "pending",
        Posted => "posted",
        Voided => "voided",
    }
);

text_enum!(
    /// The kind of a ledger transaction (`ledger_transactions.kind`).
    TransactionKind {
        Deposit => "deposit",
        MoneyOrder => "money_order",
        CallCharge => "call_charge",
        VisitCharge => "visit_charge",
        Purchase => "purchase",
        Refund => "refund",
        Release => "release",
        /// An online deposit returned to the payer: the reverse of its deposit (or of a
        /// part of it, when a family's prepaid balance is refunded).
        DepositRefund => "deposit_refund",
        /// A family's prepaid balance no card deposit covers, owed back by the facility
        /// (`refunds_payable`) and paid outside the gateway.
        BalanceRefund => "balance_refund",
        /// A message's price, paid by its sender's account when the facility prices
        /// messages ([`crate::messaging`]).
        MessageCharge => "message_charge",
        /// A message's price given back (it was rejected, or never sent): the reverse of
        /// its charge, from the facility's message revenue to the account that paid.
        MessageRefund => "message_refund",
    }
);

text_enum!(
    /// Where an online deposit made through the payment provider stands
    /// ([`super::online`]): submitted → authorized → posted, or declined / held /
    /// voided; posted → refunded.
    OnlineState {
        /// Recorded; the provider has not answered yet.
        Submitted => "submitted",
        /// The card was authorized; the provider has not confirmed the money yet.
        Authorized => "authorized",
        /// Confirmed and credited to the account (once).
        Posted => "posted",
        /// Refused by the provider (the reason says why).
        Declined => "declined",
        /// Stopped, with the reason, until the provider or staff decide.
        Held => "held",
        /// Cancelled before any money moved.
        Voided => "voided",
        /// Posted, then returned to the payer by a reversing transaction.
        Refunded => "refunded",
    }
);

text_enum!(
    /// Which facility deposit limit refused a deposit.
    DepositLimit {
        PerDeposit => "per-deposit",
        PerDay => "per-day",
    }
);

/// An account as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub kind: AccountKind,
    pub facility_id: Option<String>,
    /// The inmate or user who owns it (None for system accounts).
    pub owner_id: Option<String>,
    pub name: String,
    pub status: AccountStatus,
    /// Stored for inmate and family accounts; the sum of entries for system accounts.
    pub balance: Money,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

/// A deposit to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRequest {
    pub account_id: String,
    pub method: DepositMethod,
    /// Positive, at most two decimal places (cents): no payment instrument carries less.
    pub amount: Money,
    /// Who paid (name or user id); stored, never logged.
    pub depositor: String,
    /// The payment processor's id, kiosk receipt or money order serial.
    pub reference: String,
}

impl DepositRequest {
    /// The request as it is kept: depositor and reference without the white space around
    /// them, each within its limits ([`crate::text`]).
    pub(crate) fn kept(&self) -> Result<DepositRequest, TextError> {
        Ok(DepositRequest {
            depositor: text::NAME.accept("depositor", &self.depositor)?.to_owned(),
            reference: text::REFERENCE
                .accept("reference", &self.reference)?
                .to_owned(),
            ..self.clone()
        })
    }
}

/// A purchase's or refund's reference as it is kept (trimmed) and its memo (as written),
/// within their limits.
fn kept_spend_text(reference: &str, memo: &str) -> Result<String, TextError> {
    text::NOTE.check("memo", memo)?;
    Ok(text::REFERENCE.accept("reference", reference)?.to_owned())
}

/// A deposit as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub id: String,
    pub account_id: String,
    pub facility_id: String,
    pub method: DepositMethod,
    pub amount: Money,
    pub status: DepositStatus,
    pub depositor: String,
    pub reference: String,
    /// The ledger transaction that credited the account (None until posted).
    pub transaction_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// The facility-local date the deposit counts against for the daily limit.
    pub local_day: NaiveDate,
    /// The staff member who posted or voided a money order.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// One billing increment of a call or visit, debited at its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDebit {
    pub session_id: String,
    /// 1-based increment number within the session; with `session_id`, the debit's key.
    pub increment: u32,
    pub account_id: String,
    /// Zero or more (a zero-rate increment is recorded as billed at no charge).
    pub amount: Money,
    pub service: Service,
    /// The facility whose revenue account is credited.
    pub facility_id: String,
}

/// What a session debit did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DebitOutcome {
    /// Charged now.
    Committed {
        transaction_id: i64,
        balance_after: Money,
    },
    /// This (session, increment) was charged before; nothing was written.
    AlreadyCommitted {
        transaction_id: i64,
        balance_after: Money,
    },
    /// The balance cannot pay the increment; nothing was written.
    Refused { balance: Money },
}

/// A commissary purchase posted by the commissary system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRequest {
    pub account_id: String,
    /// Positive.
    pub amount: Money,
    /// The commissary order id.
    pub reference: String,
    pub memo: String,
}

impl PurchaseRequest {
    /// The request as it is kept: the reference trimmed, within its limits
    /// ([`crate::text`]).
    pub(crate) fn kept(&self) -> Result<PurchaseRequest, TextError> {
        Ok(PurchaseRequest {
            reference: kept_spend_text(&self.reference, &self.memo)?,
            ..self.clone()
        })
    }
}

/// A credit to an inmate or family account (dropped-call credit, commissary return...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub account_id: String,
    /// Positive.
    pub amount: Money,
    /// What is refunded (session id, order id...).
    pub reference: String,
    pub memo: String,
}

impl RefundRequest {
    /// The request as it is kept: the reference trimmed, within its limits
    /// ([`crate::text`]).
    pub(crate) fn kept(&self) -> Result<RefundRequest, TextError> {
        Ok(RefundRequest {
            reference: kept_spend_text(&self.reference, &self.memo)?,
            ..self.clone()
        })
    }
}

/// The result of a purchase or refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub transaction_id: i64,
    pub kind: TransactionKind,
    pub account_id: String,
    /// The system account on the other side.
    pub counter_account_id: String,
    pub amount: Money,
    pub balance_after: Money,
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

/// The result of closing an account at release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub account_id: String,
    /// The balance moved to the facility's refunds-payable account.
    pub refunded: Money,
    /// None when the balance was already zero (nothing to move).
    pub transaction_id: Option<i64>,
    pub payable_account_id: String,
    pub closed_at: DateTime<Utc>,
}
