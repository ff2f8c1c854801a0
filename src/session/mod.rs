//! The session: what a call and a video visit have in common, between the protocol legs
//! that carry them (`call` for SIP, `visit` next for WebRTC) and the ledger that charges
//! them.
//!
//! The data walk reads bytes → `sip` → `call` → `session` (policy, rating, charging) →
//! `ledger`. What lives here:
//!
//! - [`EndReason`]: why a session ended, the CDR's `end_reason`, whichever protocol carried
//!   it (the API and the console name the reasons without knowing of SIP);
//! - [`authorize`]: the destination policy in its order, as pure functions over facts
//!   read beforehand;
//! - [`cdr`]: the one owner of the `sessions` table — open, authorize, progress, the cut,
//!   counted increments, the recording's mark, the close, and crash recovery;
//! - [`runner`]: the session's database work (debits, balance checks, CDR writes, the
//!   recording's rows) carried out one item at a time, in order, *beside* the task that
//!   drives the session, so that task's loop always serves signalling, control and timers
//!   (a stalled database never stops the charging core's `DebitTimeout` from firing, nor
//!   a BYE from being answered);
//! - [`payer`]: which account pays for a session (the inmate's or a family's prepaid);
//! - [`Service`]: what is charged (audio calls, video visits), a parameter of the
//!   authorization and the debit, never hard-coded by a protocol.

pub mod authorize;
pub mod cdr;
pub mod payer;
pub mod runner;
pub mod timeline;

pub use crate::rating::Service;

use crate::media::prompts::PromptId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long the ledger has to confirm an increment's debit before the session is cut
/// (`debit_timeout`). The ledger's own wait on PostgreSQL,
/// [`crate::ledger::SESSION_DEBIT_LOCK_WAIT`], is longer, so the cut comes first.
pub const DEBIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session ended: the CDR's `end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    CallerHangup,
    CalleeHangup,
    FundsExhausted,
    MaxDuration,
    Declined,
    NoAnswer,
    Busy,
    TrunkError,
    PinFailed,
    /// The inmate is suspended or released (the first destination check).
    InmateInactive,
    /// The dialed digits are not a valid number.
    InvalidNumber,
    NotApproved,
    Blocked,
    OutsideHours,
    /// A daily or concurrent-call limit.
    CallLimit,
    InsufficientFunds,
    Terminated,
    /// The inmate was released (`POST /inmates/{id}/release`): the live call ends at once
    /// (see [`Call::inmate_released`]).
    Released,
    System,
    /// A bridged leg sent no RTP for `rtp.media_timeout_secs` (the `call` module doc).
    MediaTimeout,
    /// The ledger did not confirm an increment's debit within the debit timeout (the
    /// database stalled): the session is cut rather than run unpaid (`charging` module
    /// doc, "Timeouts").
    DebitTimeout,
    /// A video visit reached the end of its slot.
    SlotEnded,
    /// A side of a video visit never connected by the no-show deadline.
    NoShow,
    /// The inmate ended a video visit.
    InmateLeft,
    /// The visitor ended a video visit.
    VisitorLeft,
}

impl EndReason {
    /// Every reason, in the order the documentation lists them (OpenAPI, console filter).
    pub const ALL: [EndReason; 25] = [
        EndReason::CallerHangup,
        EndReason::CalleeHangup,
        EndReason::FundsExhausted,
        EndReason::MaxDuration,
        EndReason::MediaTimeout,
        EndReason::DebitTimeout,
        EndReason::Declined,
        EndReason::NoAnswer,
        EndReason::Busy,
        EndReason::TrunkError,
        EndReason::PinFailed,
        EndReason::InmateInactive,
        EndReason::InvalidNumber,
        EndReason::NotApproved,
        EndReason::Blocked,
        EndReason::OutsideHours,
        EndReason::CallLimit,
        EndReason::InsufficientFunds,
        EndReason::Terminated,
        EndReason::Released,
        EndReason::SlotEnded,
        EndReason::NoShow,
        EndReason::InmateLeft,
        EndReason::VisitorLeft,
        EndReason::System,
    ];

    /// The reason a CDR's `end_reason` names, if it is one.
    pub fn parse(s: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller_hangup",
            EndReason::CalleeHangup => "callee_hangup",
            EndReason::FundsExhausted => "funds_exhausted",
            EndReason::MaxDuration => "max_duration",
            EndReason::Declined => "declined",
            EndReason::NoAnswer => "no_answer",
            EndReason::Busy => "busy",
            EndReason::TrunkError => "trunk_error",
            EndReason::PinFailed => "pin_failed",
            EndReason::InmateInactive => "inmate_inactive",
            EndReason::InvalidNumber => "invalid_number",
            EndReason::NotApproved => "not_approved",
            EndReason::Blocked => "blocked",
            EndReason::OutsideHours => "outside_hours",
            EndReason::CallLimit => "call_limit",
            EndReason::InsufficientFunds => "insufficient_funds",
            EndReason::Terminated => "terminated",
            EndReason::Released => "released",
            EndReason::System => "system",
            EndReason::MediaTimeout => "media_timeout",
            EndReason::DebitTimeout => "debit_timeout",
            EndReason::SlotEnded => "slot_ended",
            EndReason::NoShow => "no_show",
            EndReason::InmateLeft => "inmate_left",
            EndReason::VisitorLeft => "visitor_left",
        }
    }

    /// The prompt the inmate hears before a refusal, if any.
    pub fn prompt(self) -> Option<PromptId> {
        match self {
            EndReason::PinFailed => Some(PromptId::PinInvalid),
            EndReason::NotApproved | EndReason::InvalidNumber | EndReason::InmateInactive => {
                Some(PromptId::NotApproved)
            }
            EndReason::Blocked => Some(PromptId::Blocked),
            EndReason::OutsideHours => Some(PromptId::OutsideHours),
            EndReason::CallLimit => Some(PromptId::CallLimit),
            EndReason::InsufficientFunds => Some(PromptId::InsufficientFunds),
            EndReason::FundsExhausted => Some(PromptId::FundsExhausted),
            EndReason::Declined => Some(PromptId::Declined),
            EndReason::Busy | EndReason::NoAnswer | EndReason::TrunkError => {
                Some(PromptId::Goodbye)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cuts_before_the_ledger_gives_up_its_debit() {
        assert!(DEBIT_TIMEOUT < crate::ledger::SESSION_DEBIT_LOCK_WAIT);
    }
}
