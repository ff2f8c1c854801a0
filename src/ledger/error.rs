//! The ledger's one error type.

use super::types::{AccountKind, DepositLimit};
use crate::db::DbError;
use crate::money::Money;
use crate::text::quote;

/// Why a ledger request failed. Refusals (limits, funds, state) write nothing, so the same
/// idempotency key may be retried once the cause is gone.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account {} not found", quote(.id))]
    AccountNotFound { id: String },
    #[error("account {} is closed", quote(.id))]
    AccountClosed { id: String },
    #[error("deposit {} not found", quote(.id))]
    DepositNotFound { id: String },
    #[error("facility {} not found", quote(.id))]
    FacilityNotFound { id: String },
    #[error("invalid amount {amount}: {rule}")]
    InvalidAmount { amount: Money, rule: AmountRule },
    /// A depositor, reference or memo beyond its limit ([`crate::text`]).
    #[error(transparent)]
    InvalidText(#[from] crate::text::TextError),
    #[error("{limit} deposit limit of {limit_amount} exceeded by a deposit of {attempted} ({remaining} remaining)")]
    LimitExceeded {
        limit: DepositLimit,
        /// The facility's limit.
        limit_amount: Money,
        /// The amount of the refused deposit.
        attempted: Money,
        /// What could still be deposited under this limit (for the per-day limit: the
        /// daily limit less today's pending and posted deposits).
        remaining: Money,
    },
    #[error("insufficient funds: balance {balance}, amount {amount}")]
    InsufficientFunds { balance: Money, amount: Money },
    #[error("idempotency key {} was used for a different request", quote(.key))]
    IdempotencyConflict { key: String },
    #[error("cannot {action} {}: it is {state}", quote(.id))]
    InvalidState {
        id: String,
        state: String,
        action: &'static str,
    },
    #[error("cannot {action} account {} of kind {kind}", quote(.id))]
    WrongAccountKind {
        id: String,
        kind: AccountKind,
        action: &'static str,
    },
    #[error("account {} belongs to no facility", quote(.id))]
    NoFacility { id: String },
    /// A stored row the ledger cannot read back (unknown enum text, bad time zone,
    /// undecodable stored response). Never expected; reported instead of panicking.
    #[error("corrupt ledger data: {what}")]
    Corrupt { what: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Database(DbError),
}

/// The rule an amount broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountRule {
    #[error("must be greater than zero")]
    NotPositive,
    #[error("must not be negative")]
    Negative,
    #[error("must have at most {max_places} decimal places")]
    TooPrecise { max_places: u32 },
}

impl From<DbError> for LedgerError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlx(e) => LedgerError::Db(e),
            other => LedgerError::Database(other),
        }
    }
}

impl LedgerError {
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        LedgerError::Corrupt { what: what.into() }
    }
}
