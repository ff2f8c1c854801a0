//! The inmate call: the B2BUA's decisions as one sans-IO state machine.
//!
//! The call flow of `docs/behaviour.md`, as states of [`Call`]:
//!
//! ```text
//! Answered ─► CollectingId ─► CollectingPin ─► CheckingPin ─► CheckingDestination ─► Dialing ─► Announcing ─► Connected ─► Ending ─► Ended
//!  (ID prompt)   (ID, #)         (PIN, #)        (DB lookup)    (policy + rating)     (trunk)    (press 1/2)   (charging)   (notice)
//! ```
//!
//! # ID and PIN
//!
//! The inmate hears "enter your ID number, then pound", keys the calling ID and `#`, hears
//! "enter your PIN, then pound", keys the PIN and `#` (typing ahead works: a key stops the
//! prompt, and digits keyed before a prompt ends are kept). Only then is one `CheckPin`
//! asked with both: a wrong ID and a wrong PIN get the same "ID or PIN not valid" (never
//! which), and each wrong pair — or an empty or timed-out entry of either — is one of the
//! call's `pin_attempts` (after the last, the call ends `pin_failed`). The pair is judged
//! and counted in the database ([`checks::check_pin`]); a locked handset or line hears
//! "this phone is locked", a locked inmate "this account is locked" (IDs are not secret).
//!
//! Owns: the order of things, the retries, the timeouts (`InterDigit`, `Dial`,
//! `AcceptTimeout`, `PromptGuard`, the media timeout) and the end reason. It asks its
//! driver (a thin tokio task, `call::driver`) to do everything that needs I/O with
//! [`CallAction`]s — check an ID + PIN, check a destination, place the trunk INVITE, play a
//! prompt, bridge, debit — and is told the outcome with `handle_*` calls. Billing is the nested [`Charging`] machine, the
//! same one video visits drive. Nothing here reads the clock, a socket or the database:
//! every input carries `now`, so a 61-minute call is tested in microseconds.
//!
//! Which policy checks run and in what order (active inmate, E.164, approved contact,
//! block lists, calling hours, limits, rating and funds) is the driver's
//! `CheckDestination`; the machine only needs the verdict: a refusal with its
//! [`EndReason`] and prompt, or an authorization with the tariff and balance.
//!
//! # Media timeout
//!
//! A bridged call whose peer vanished without a BYE (handset unplugged, trunk or network
//! dead) would otherwise go on debiting the account until funds or the maximum duration
//! run out. So while `Connected`, the call ends with [`EndReason::MediaTimeout`] — BYE to
//! both legs at once, no notice — when **either** leg has sent no RTP for
//! [`CallTimers::media`] (`rtp.media_timeout_secs`, default 60 s; `None`/0: never).
//!
//! - **Per leg, not per call.** rtpengine's `timeout` drops a call only when all of its
//!   streams are dead, which suits a proxy reclaiming ports; here it would never fire in
//!   the case that costs money, one party gone while the other still sends (and hears
//!   nothing). A party who is merely silent still sends RTP: SIP phones and trunks send
//!   G.711 frames on mute and in silence (we negotiate no comfort noise), so only a leg
//!   that sends *nothing* is cut. A peer that holds with a re-INVITE saying it will send
//!   nothing (`inactive`, `recvonly`) is not silent but on hold, and is not cut (the
//!   driver's module doc); one that suppresses silence without sending comfort noise is;
//!   raise or disable the timeout for such peers.
//! - **What is heard.** The driver reads the media engine's per-leg stamp of the last
//!   valid RTP packet (from the negotiated peer, any payload type, comfort noise included;
//!   RTCP does not count) and hands it to [`Call::rtp_received`] before every
//!   [`Call::handle_timeout`] and every key press (one may accept the call). The trunk's
//!   silence counts from its last packet or from acceptance, whichever is later (its
//!   media was not needed before); the handset's from its last packet or from when it was
//!   answered, so a handset that went dead while the called party rang ends the call at
//!   acceptance, before the first increment.
//!   [`Call::poll_timeout`] includes the earliest leg's deadline, so the driver wakes then,
//!   refreshes the stamps and the deadline moves on while media flows: about one wake-up
//!   per timeout per call.
//! - **Charges.** Increments are debited at their start (`docs/behaviour.md`, "Money");
//!   those begun while the media was not yet known dead stand. The media check runs first in
//!   `handle_timeout`, so when the timeout and an increment boundary fall due together (or
//!   the task woke late past both) the call ends and that increment is never debited: no
//!   increment starts once the media is known dead.
//! - **Before bridging** the phases have their own bounds and charge nothing: ID and PIN entry
//!   (first-digit and inter-digit timeouts, a limited number of attempts), the trunk's
//!   ringing (`Dial`), the announcement (`AcceptTimeout`), a closing notice
//!   (`PromptGuard`). The media timeout applies only to `Connected`.
//!
//! # Money and the end
//!
//! - **Charging** decides increments, warnings and cuts (the `charging` module doc): the
//!   machine passes its `Debit`, `CheckBalance` (the funds warning re-checks the balance
//!   before it plays) and `CountIncrement` (a free increment, recorded on the session) to
//!   the driver and feeds the answers back. A refused debit is the only funds cut, so a
//!   deposit made during the last paid increment keeps the call up.
//! - **Release.** [`Call::inmate_released`] ends the call at once, no notice, reason
//!   [`EndReason::Released`]: the API's release asks it of the call before the account is
//!   closed, and a debit (or free count) that finds the account closed — the release was
//!   made where the call could not hear it — ends the call the same way, uncharged.
//! - **The record's times.** [`CallSummary`] carries when the call was accepted (billing
//!   starts), when the parties stopped hearing each other (`media_ended_at`: the call left
//!   `Connected`, its closing notice then plays over them) and when it ended (`ended_at`,
//!   notice included). The `sessions` module doc says what each CDR time means.
//! - **The cut survives a crash.** The moment a bridged call leaves `Connected` — a cut
//!   for funds or the maximum duration, the media timeout, a BYE, a terminate, a release
//!   — the machine's first action is [`CallAction::MediaEnded`] with the end reason, and
//!   the driver writes both on the session before it carries out anything else (the
//!   exhaustion notice, the BYEs, the CDR). A node killed during the ~2.5 s notice thus
//!   leaves the session saying `funds_exhausted` and where the parties were cut, and the
//!   restart closes it with them instead of `system` and the crash time (the review's
//!   L5: killed 1.2 s into the notice, the CDR said `system` with a media end after the
//!   notice had begun).

pub mod admission;
pub mod checks;
pub mod driver;
pub mod live;
pub mod stats;
mod task;
#[cfg(test)]
mod tests;
pub mod trunk;
pub mod verify;

pub use crate::session::EndReason;

use crate::charging::{Charging, ChargingAction, ChargingPlan, CutReason, WarningReason};
use crate::media::dtmf::{Collected, CollectorConfig, DigitCollector, Digits};
use crate::media::prompts::PromptId;
use crate::money::Money;
use crate::timers::{TimerSlot, TimerTable};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The longest ID or PIN entry collected: a cap on a runaway entry, well above any
/// configured length, so that an entry ends with `#` (or a timeout) rather than at a
/// length whose `#` would then spill into the next entry.
pub const ENTRY_MAX_DIGITS: usize = 20;

/// The two legs of the B2BUA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// The inmate's handset (UAC side).
    Handset,
    /// The called party, through the carrier trunk.
    Trunk,
}

/// Outcome of an ID + PIN check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinVerdict {
    /// The calling ID and the PIN name this inmate of the handset's facility.
    Valid { inmate_id: String },
    /// A wrong pair: the ID names nobody, or the PIN is not theirs (never said which).
    Wrong,
    /// The handset or the line is locked after repeated failures: nothing was checked.
    Locked,
    /// The inmate the ID names is locked after repeated failures: even the right PIN is
    /// refused.
    AccountLocked,
}

/// Outcome of the destination checks (`docs/behaviour.md`, the destination checks).
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    Refused(EndReason),
    Authorized(Authorization),
}

/// What the call may do once authorized.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    /// The E.164 number to dial on the trunk.
    pub number: String,
    /// Attorney: no recording, no monitoring, the announcement says so.
    pub privileged: bool,
    /// How billing runs (cost per increment, increment, max duration, warning lead).
    pub charging: ChargingPlan,
    /// The paying account's balance at authorization (the first increment must be
    /// affordable).
    pub balance: Money,
    /// The account that pays for the whole call ([`crate::session::payer`]): the
    /// inmate's, or the prepaid account of the family whose number is called.
    pub account_id: String,
}

/// How a trunk INVITE ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkFailure {
    /// A final response 300–699 with its status.
    Status(u16),
    /// Timer B fired or the transport failed.
    Timeout,
}

/// Timeouts the call itself keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimers {
    /// How long the trunk may ring before the call is given up (no_answer).
    pub dial: Duration,
    /// How long the called party has to press 1.
    pub accept: Duration,
    /// Longest a prompt may take before the machine stops waiting for `prompt_finished`.
    pub prompt_guard: Duration,
    /// Wrong ID + PIN pairs (or empty entries) that end the call.
    pub pin_attempts: u32,
    /// How the ID and the PIN are collected (each ends with `#` or the inter-digit
    /// timeout; `max_digits` only caps a runaway entry).
    pub pin_entry: CollectorConfig,
    /// How long a bridged leg may send no RTP before the call ends (`media_timeout`);
    /// `None`: never (see the module doc).
    pub media: Option<Duration>,
}

impl Default for CallTimers {
    fn default() -> Self {
        CallTimers {
            dial: Duration::from_secs(60),
            accept: Duration::from_secs(30),
            prompt_guard: Duration::from_secs(30),
            pin_attempts: 3,
            pin_entry: CollectorConfig {
                max_digits: ENTRY_MAX_DIGITS,
                ..CollectorConfig::default()
            },
            media: Some(Duration::from_secs(60)),
        }
    }
}

/// What the call asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum CallAction {
    /// Answer the handset INVITE with 200 OK and our SDP (media anchored on the gateway).
    AnswerHandset,
    /// Refuse the handset INVITE before answering it (e.g. 487 after CANCEL).
    RejectHandset { status: u16 },
    /// Play a prompt to a leg; `prompt_finished(leg)` reports its end.
    Play { leg: Leg, prompt: PromptId },
    /// Stop whatever is playing to a leg.
    StopPlaying { leg: Leg },
    /// Check the ID + PIN pair for this handset's facility (and count it).
    CheckPin { calling_id: String, pin: Digits },
    /// Run the destination checks and rating for the inmate and dialed digits.
    CheckDestination { inmate_id: String, dialed: String },
    /// Send the INVITE to the trunk (own Call-ID, own SDP).
    PlaceTrunkCall { number: String },
    /// Play ringback to the handset while the trunk rings.
    Ringback { on: bool },
    /// CANCEL the trunk INVITE.
    CancelTrunk,
    /// Connect the two legs' media in the relay.
    Bridge,
    /// Start the recording (never for privileged calls); `at` is the acceptance, where the
    /// recording's time line begins (the CDR's `accepted_at`).
    StartRecording { at: Instant },
    /// Debit increment `increment` of `amount` (idempotent per call and increment).
    Debit { increment: u32, amount: Money },
    /// Read the paying account's balance and answer with [`Call::balance_checked`] (the
    /// funds warning is due; see the `charging` module doc).
    CheckBalance { after_increment: u32 },
    /// A free increment began (a plan that costs nothing): record it on the session for
    /// the CDR; no money moves.
    CountIncrement { increment: u32 },
    /// The parties of a bridged call stopped hearing each other at `at`, for `reason`:
    /// record both on the session now, before the notice that may follow plays, so that a
    /// node that dies before the call's end still closes it with them (module doc, "The
    /// cut survives a crash"). Comes before every other action of the end.
    MediaEnded { reason: EndReason, at: Instant },
    /// Send BYE on a leg.
    Hangup { leg: Leg },
    /// The call is over: write the CDR. Always the last action.
    Ended(CallSummary),
}

/// What the CDR records, in the call's own terms (the driver adds wall-clock times).
#[derive(Debug, Clone, PartialEq)]
pub struct CallSummary {
    pub reason: EndReason,
    pub inmate_id: Option<String>,
    pub number: Option<String>,
    pub privileged: bool,
    pub recorded: bool,
    /// Increments the charging machine counted: paid ones (confirmed by the ledger) or,
    /// on a free plan, begun ones.
    pub increments: u32,
    pub charged: Money,
    pub answered_at: Option<Instant>,
    /// When the called party accepted: bridging, recording and billing start here.
    pub accepted_at: Option<Instant>,
    /// When the parties stopped hearing each other: the call left `Connected` (a cut, its
    /// notice starting; a BYE; a terminate). `None` if they were never bridged.
    pub media_ended_at: Option<Instant>,
    /// When the call ended: BYEs sent or received, any closing notice included.
    pub ended_at: Instant,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    CollectingId,
    CollectingPin,
    CheckingPin,
    CheckingDestination,
    Dialing,
    Announcing,
    Connected,
    /// Playing a last notice before hanging up.
    Ending,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Dial,
    Accept,
    PromptGuard,
}

impl TimerSlot for Timer {
    /// The order [`Call::handle_timeout`] checks them in.
    const ALL: &'static [Timer] = &[Timer::Dial, Timer::Accept, Timer::PromptGuard];

    fn slot(self) -> usize {
        self as usize
    }
}

/// One inmate call.
#[derive(Debug)]
pub struct Call {
    state: CallState,
    timers_cfg: CallTimers,
    dialed: String,
    collector: DigitCollector,
    /// The calling ID keyed in this attempt, while the PIN is collected and checked.
    entered_id: Option<String>,
    wrong_pins: u32,
    inmate_id: Option<String>,
    auth: Option<Authorization>,
    charging: Option<Charging>,
    timers: TimerTable<Timer, 3>,
    trunk_up: bool,
    recorded: bool,
    pending_reason: Option<EndReason>,
    answered_at: Option<Instant>,
    accepted_at: Option<Instant>,
    /// When the call left `Connected` (see [`CallSummary::media_ended_at`]).
    media_ended_at: Option<Instant>,
    /// When the gateway answered the handset: its media has been flowing since.
    began_at: Instant,
    /// Per leg (handset, trunk): when its last RTP packet arrived, as the driver last
    /// read it from the media engine.
    rtp_heard: [Option<Instant>; 2],
    actions: VecDeque<CallAction>,
}

impl Call {
    /// A handset INVITE for `dialed` arrived (already authenticated and of a known
    /// facility): answer it and ask for the ID.
    pub fn new(now: Instant, dialed: &str, timers: CallTimers) -> Call {
        let mut call = Call {
            state: CallState::CollectingId,
            collector: DigitCollector::new(timers.pin_entry, now),
            timers_cfg: timers,
            dialed: dialed.to_string(),
            entered_id: None,
            wrong_pins: 0,
            inmate_id: None,
            auth: None,
            charging: None,
            timers: TimerTable::default(),
            trunk_up: false,
            recorded: false,
            pending_reason: None,
            answered_at: None,
            accepted_at: None,
            media_ended_at: None,
            began_at: now,
            rtp_heard: [None; 2],
            actions: VecDeque::new(),
        };
        call.actions.push_back(CallAction::AnswerHandset);
        call.actions.push_back(CallAction::Play {
            leg: Leg::Handset,
            prompt: PromptId::EnterId,
        });
        call
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    pub fn charging(&self) -> Option<&Charging> {
        self.charging.as_ref()
    }

    /// Whether the dialed number is privileged (attorney and the like): never recorded,
    /// never monitored.
    pub fn is_privileged(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.privileged)
    }

    pub fn is_ended(&self) -> bool {
        self.state == CallState::Ended
    }

    /// Whether the inmate is keying the ID or the PIN (the driver logs no digit then).
    pub fn collecting_credentials(&self) -> bool {
        matches!(
            self.state,
            CallState::CollectingId | CallState::CollectingPin
        )
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A DTMF digit from a leg (RFC 4733 or SIP INFO).
    pub fn digit(&mut self, now: Instant, leg: Leg, digit: char) {
        match (self.state, leg) {
            (CallState::CollectingId | CallState::CollectingPin, Leg::Handset) => {
                if self.collector.typed() == 0 {
                    self.actions
                        .push_back(CallAction::StopPlaying { leg: Leg::Handset });
                }
                if let Some(c) = self.collector.on_digit(digit, now) {
                    self.entry_collected(now, c);
                }
            }
            (CallState::Announcing, Leg::Trunk) => match digit {
                '1' => self.accept(now),
                '2' => self.end_with_notice(now, EndReason::Declined),
                _ => {}
            },
            _ => {}
        }
    }

    /// An ID or a PIN was keyed (or not: an empty or timed-out entry is a wrong one).
    fn entry_collected(&mut self, now: Instant, c: Collected) {
        let digits = match c {
            Collected::Complete(d) | Collected::InterDigitTimeout(d) if !d.is_empty() => d,
            _ => return self.pin_wrong(now),
        };
        match self.state {
            CallState::CollectingId => {
                self.entered_id = Some(digits.into_string());
                self.state = CallState::CollectingPin;
                self.collector.restart(now);
                self.actions.push_back(CallAction::Play {
                    leg: Leg::Handset,
                    prompt: PromptId::EnterPin,
                });
            }
            CallState::CollectingPin => {
                self.state = CallState::CheckingPin;
                let calling_id = self.entered_id.take().unwrap_or_default();
                self.actions.push_back(CallAction::CheckPin {
                    calling_id,
                    pin: digits,
                });
            }
            _ => {}
        }
    }

    /// The ID + PIN check's verdict.
    pub fn pin_checked(&mut self, now: Instant, verdict: PinVerdict) {
        if self.state != CallState::CheckingPin {
            return;
        }
        match verdict {
            PinVerdict::Valid { inmate_id } => {
                self.state = CallState::CheckingDestination;
                self.inmate_id = Some(inmate_id.clone());
                let dialed = self.dialed.clone();
                self.actions
                    .push_back(CallAction::CheckDestination { inmate_id, dialed });
            }
            PinVerdict::Wrong => self.pin_wrong(now),
            PinVerdict::Locked => {
                self.play_then_end(now, PromptId::PinLocked, EndReason::PinFailed);
            }
            PinVerdict::AccountLocked => {
                self.play_then_end(now, PromptId::AccountLocked, EndReason::PinFailed);
            }
        }
    }

    /// A wrong (or empty) entry: "ID or PIN not valid", then the ID again, until the
    /// call's attempts are spent.
    fn pin_wrong(&mut self, now: Instant) {
        self.wrong_pins += 1;
        self.entered_id = None;
        if self.wrong_pins >= self.timers_cfg.pin_attempts {
            self.end_with_notice(now, EndReason::PinFailed);
            return;
        }
        self.state = CallState::CollectingId;
        self.collector.restart(now);
        self.actions.push_back(CallAction::Play {
            leg: Leg::Handset,
            prompt: PromptId::PinInvalid,
        });
        self.actions.push_back(CallAction::Play {
            leg: Leg::Handset,
            prompt: PromptId::EnterId,
        });
    }

    /// The destination checks' verdict.
    pub fn destination_checked(&mut self, now: Instant, d: Destination) {
        if self.state != CallState::CheckingDestination {
            return;
        }
        let auth = match d {
            Destination::Refused(reason) => return self.end_with_notice(now, reason),
            Destination::Authorized(a) => a,
        };
        let first = auth.charging.cost_per_increment;
        if first.is_positive() && auth.balance < first {
            return self.end_with_notice(now, EndReason::InsufficientFunds);
        }
        self.state = CallState::Dialing;
        self.actions.push_back(CallAction::Play {
            leg: Leg::Handset,
            prompt: PromptId::PleaseWait,
        });
        self.actions.push_back(CallAction::PlaceTrunkCall {
            number: auth.number.clone(),
        });
        self.arm(Timer::Dial, now, self.timers_cfg.dial);
        self.auth = Some(auth);
    }

    /// A provisional response from the trunk (180/183): the handset hears ringback.
    pub fn trunk_ringing(&mut self, _now: Instant) {
        if self.state == CallState::Dialing {
            self.actions.push_back(CallAction::Ringback { on: true });
        }
    }

    /// The trunk answered (200 OK, ACKed by the driver): announce the call.
    pub fn trunk_answered(&mut self, now: Instant) {
        if self.state != CallState::Dialing {
            return;
        }
        self.trunk_up = true;
        self.answered_at = Some(now);
        self.disarm(Timer::Dial);
        self.state = CallState::Announcing;
        self.actions.push_back(CallAction::Ringback { on: false });
        let privileged = self.auth.as_ref().is_some_and(|a| a.privileged);
        let prompt = if privileged {
            PromptId::AnnouncementPrivileged
        } else {
            PromptId::AnnouncementRecorded
        };
        self.actions.push_back(CallAction::Play {
            leg: Leg::Trunk,
            prompt,
        });
        self.arm(Timer::Accept, now, self.timers_cfg.accept);
    }

    /// The trunk INVITE failed.
    pub fn trunk_failed(&mut self, now: Instant, failure: TrunkFailure) {
        if self.state != CallState::Dialing {
            return;
        }
        self.disarm(Timer::Dial);
        self.actions.push_back(CallAction::Ringback { on: false });
        let reason = match failure {
            TrunkFailure::Status(486 | 600) => EndReason::Busy,
            TrunkFailure::Status(408 | 480 | 487 | 603) => EndReason::NoAnswer,
            TrunkFailure::Status(_) | TrunkFailure::Timeout => EndReason::TrunkError,
        };
        self.end_with_notice(now, reason);
    }

    /// A BYE (or CANCEL before answer) from a leg.
    pub fn hangup_from(&mut self, now: Instant, leg: Leg) {
        if matches!(self.state, CallState::Ended) {
            return;
        }
        let reason = match leg {
            Leg::Handset => EndReason::CallerHangup,
            Leg::Trunk => EndReason::CalleeHangup,
        };
        if leg == Leg::Trunk {
            self.trunk_up = false;
        }
        if self.state == CallState::Ending {
            // Already on the way out (a notice was playing): keep the first reason.
            if leg == Leg::Handset {
                self.finish(now);
            }
            return;
        }
        self.ending(now, reason);
        self.hang_up_others(leg);
        self.finish(now);
    }

    /// An investigator (or the operator) terminates the call.
    pub fn terminate(&mut self, now: Instant) {
        if self.state == CallState::Ended {
            return;
        }
        self.ending(now, EndReason::Terminated);
        self.hang_up_others_all();
        self.finish(now);
    }

    /// The inmate was released, or the account paying the call was found closed (only a
    /// release closes an account): end at once with reason `released`, no notice.
    pub fn inmate_released(&mut self, now: Instant) {
        if self.state == CallState::Ended {
            return;
        }
        self.ending(now, EndReason::Released);
        self.hang_up_others_all();
        self.finish(now);
    }

    /// The driver or the system failed (database down, media error): end cleanly.
    pub fn fail(&mut self, now: Instant) {
        if self.state == CallState::Ended {
            return;
        }
        self.ending(now, EndReason::System);
        self.hang_up_others_all();
        self.finish(now);
    }

    /// A prompt ended on a leg.
    pub fn prompt_finished(&mut self, now: Instant, leg: Leg) {
        if self.state == CallState::Ending && leg == Leg::Handset {
            self.finish_after_notice(now);
        }
    }

    /// The ledger's answer to a `Debit`.
    pub fn debit_succeeded(&mut self, now: Instant, increment: u32, balance_after: Money) {
        if let Some(c) = self.charging.as_mut() {
            c.debit_succeeded(now, increment, balance_after);
        }
        self.drain_charging(now);
    }

    /// The ledger refused a `Debit` (the balance could not pay it).
    pub fn debit_refused(&mut self, now: Instant, increment: u32) {
        if let Some(c) = self.charging.as_mut() {
            c.debit_refused(now, increment);
        }
        self.drain_charging(now);
    }

    /// The answer to `CheckBalance`: the paying account's balance, or `None` if it could
    /// not be read.
    pub fn balance_checked(&mut self, now: Instant, after_increment: u32, balance: Option<Money>) {
        if let Some(c) = self.charging.as_mut() {
            c.balance_checked(now, after_increment, balance);
        }
        self.drain_charging(now);
    }

    /// The newest RTP packet from `leg` arrived at `at` (what the media engine stamped).
    /// The driver reports both legs before every [`Call::handle_timeout`]; an older `at`
    /// than one already reported changes nothing.
    pub fn rtp_received(&mut self, leg: Leg, at: Instant) {
        let heard = &mut self.rtp_heard[leg_index(leg)];
        if heard.is_none_or(|h| h < at) {
            *heard = Some(at);
        }
    }

    /// Fires whatever is due at `now`. The media timeout first: a call whose media is
    /// known dead starts no increment (module doc).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.media_deadline().is_some_and(|at| at <= now) {
            // No notice: the silent leg cannot hear it, the other has heard a dead line
            // for the whole timeout already.
            return self.end_with_notice(now, EndReason::MediaTimeout);
        }
        if self.collecting_credentials() {
            if let Some(c) = self.collector.handle_timeout(now) {
                self.entry_collected(now, c);
            }
        }
        if let Some(c) = self.charging.as_mut() {
            c.handle_timeout(now);
            self.drain_charging(now);
        }
        for &t in Timer::ALL {
            if self.timers.take_if_due(t, now) {
                self.on_timer(now, t);
            }
        }
    }

    fn on_timer(&mut self, now: Instant, t: Timer) {
        match (t, self.state) {
            (Timer::Dial, CallState::Dialing) => {
                self.actions.push_back(CallAction::Ringback { on: false });
                self.actions.push_back(CallAction::CancelTrunk);
                self.end_with_notice(now, EndReason::NoAnswer);
            }
            (Timer::Accept, CallState::Announcing) => {
                self.end_with_notice(now, EndReason::NoAnswer)
            }
            (Timer::PromptGuard, CallState::Ending) => self.finish_after_notice(now),
            _ => {}
        }
    }

    /// When the quieter leg's silence reaches the media timeout: only while bridged.
    /// The handset's silence counts from when it was answered (a handset dead while the
    /// called party was ringing is dead at acceptance), the trunk's from acceptance (its
    /// media may start late and was not needed before).
    fn media_deadline(&self) -> Option<Instant> {
        if self.state != CallState::Connected {
            return None;
        }
        let (timeout, accepted) = (self.timers_cfg.media?, self.accepted_at?);
        let floors = [self.began_at, accepted];
        let quietest = self
            .rtp_heard
            .iter()
            .zip(floors)
            .map(|(h, floor)| h.map_or(floor, |h| h.max(floor)))
            .min()?;
        quietest.checked_add(timeout)
    }

    // ---- the accepted call --------------------------------------------------------------

    fn accept(&mut self, now: Instant) {
        self.disarm(Timer::Accept);
        self.accepted_at = Some(now);
        self.state = CallState::Connected;
        if self.media_deadline().is_some_and(|at| at <= now) {
            // The handset went silent while the called party was ringing: end before the
            // first increment, uncharged.
            return self.end_with_notice(now, EndReason::MediaTimeout);
        }
        self.actions
            .push_back(CallAction::StopPlaying { leg: Leg::Trunk });
        self.actions
            .push_back(CallAction::StopPlaying { leg: Leg::Handset });
        let Some(auth) = self.auth.clone() else {
            return self.fail(now);
        };
        // Recording starts before the parties hear each other, so nothing they say is missed.
        if !auth.privileged {
            self.recorded = true;
            self.actions
                .push_back(CallAction::StartRecording { at: now });
        }
        self.actions.push_back(CallAction::Bridge);
        match Charging::new(auth.charging) {
            Ok(mut c) => {
                c.start(now, auth.balance);
                self.charging = Some(c);
                self.drain_charging(now);
            }
            Err(_) => self.fail(now),
        }
    }

    /// Carries out what the charging machine decided.
    fn drain_charging(&mut self, now: Instant) {
        let mut cut = None;
        if let Some(c) = self.charging.as_mut() {
            while let Some(a) = c.poll_action() {
                match a {
                    ChargingAction::Debit { increment, amount } => self
                        .actions
                        .push_back(CallAction::Debit { increment, amount }),
                    ChargingAction::CheckBalance { after_increment } => self
                        .actions
                        .push_back(CallAction::CheckBalance { after_increment }),
                    ChargingAction::Count { increment } => self
                        .actions
                        .push_back(CallAction::CountIncrement { increment }),
                    ChargingAction::PlayWarning { reason } => {
                        let prompt = match reason {
                            WarningReason::FundsLow => PromptId::FundsWarning,
                            WarningReason::MaxDuration => PromptId::DurationWarning,
                        };
                        self.actions.push_back(CallAction::Play {
                            leg: Leg::Handset,
                            prompt,
                        });
                    }
                    ChargingAction::Cut { reason } => cut = Some(reason),
                }
            }
        }
        if let Some(reason) = cut {
            if self.state == CallState::Connected {
                let reason = match reason {
                    CutReason::FundsExhausted => EndReason::FundsExhausted,
                    CutReason::MaxDuration => EndReason::MaxDuration,
                    CutReason::DebitTimeout => EndReason::DebitTimeout,
                };
                self.end_with_notice(now, reason);
            }
        }
    }

    // ---- ending -------------------------------------------------------------------------

    /// Plays the reason's notice to the handset (and tells the called party goodbye when
    /// the trunk is up), then ends.
    fn end_with_notice(&mut self, now: Instant, reason: EndReason) {
        match reason.prompt() {
            Some(p) => self.play_then_end(now, p, reason),
            None => {
                self.ending(now, reason);
                self.hang_up_others_all();
                self.finish(now);
            }
        }
    }

    fn play_then_end(&mut self, now: Instant, prompt: PromptId, reason: EndReason) {
        self.ending(now, reason);
        self.state = CallState::Ending;
        self.stop_billing(now);
        self.actions.push_back(CallAction::Play {
            leg: Leg::Handset,
            prompt,
        });
        if self.trunk_up {
            self.actions.push_back(CallAction::Play {
                leg: Leg::Trunk,
                prompt,
            });
        }
        self.arm(Timer::PromptGuard, now, self.timers_cfg.prompt_guard);
    }

    fn finish_after_notice(&mut self, now: Instant) {
        self.hang_up_others_all();
        self.finish(now);
    }

    /// The call starts ending for `reason`: the parties of a bridged call stop hearing
    /// each other now, and the driver is told so first.
    fn ending(&mut self, now: Instant, reason: EndReason) {
        self.pending_reason = Some(reason);
        self.leave_connected(now);
    }

    /// The parties stop hearing each other now (a notice plays over them, or the call
    /// ends): the CDR's media end, recorded on the session at once
    /// ([`CallAction::MediaEnded`]).
    fn leave_connected(&mut self, now: Instant) {
        if self.state == CallState::Connected && self.media_ended_at.is_none() {
            self.media_ended_at = Some(now);
            let reason = self.pending_reason.unwrap_or(EndReason::System);
            self.actions
                .push_back(CallAction::MediaEnded { reason, at: now });
        }
    }

    /// Freezes billing: no debit is issued after the call starts ending.
    fn stop_billing(&mut self, now: Instant) {
        if let Some(c) = self.charging.as_mut() {
            c.hung_up(now);
        }
    }

    fn hang_up_others(&mut self, from: Leg) {
        match from {
            Leg::Handset => {
                if self.trunk_up {
                    self.actions
                        .push_back(CallAction::Hangup { leg: Leg::Trunk });
                    self.trunk_up = false;
                } else if self.state == CallState::Dialing {
                    self.actions.push_back(CallAction::Ringback { on: false });
                    self.actions.push_back(CallAction::CancelTrunk);
                }
            }
            Leg::Trunk => self
                .actions
                .push_back(CallAction::Hangup { leg: Leg::Handset }),
        }
    }

    fn hang_up_others_all(&mut self) {
        if self.trunk_up {
            self.actions
                .push_back(CallAction::Hangup { leg: Leg::Trunk });
            self.trunk_up = false;
        } else if self.state == CallState::Dialing {
            self.actions.push_back(CallAction::CancelTrunk);
        }
        self.actions
            .push_back(CallAction::Hangup { leg: Leg::Handset });
    }

    fn finish(&mut self, now: Instant) {
        self.leave_connected(now);
        self.stop_billing(now);
        self.timers.clear();
        let reason = self.pending_reason.unwrap_or(EndReason::System);
        let (increments, charged) = self
            .charging
            .as_ref()
            .map_or((0, Money::ZERO), |c| (c.increments_charged(), c.charged()));
        self.state = CallState::Ended;
        self.actions.push_back(CallAction::Ended(CallSummary {
            reason,
            inmate_id: self.inmate_id.clone(),
            number: self.auth.as_ref().map(|a| a.number.clone()),
            privileged: self.auth.as_ref().is_some_and(|a| a.privileged),
            recorded: self.recorded,
            increments,
            charged,
            answered_at: self.answered_at,
            accepted_at: self.accepted_at,
            media_ended_at: self.media_ended_at,
            ended_at: now,
        }));
    }

    // ---- timers and output --------------------------------------------------------------

    fn arm(&mut self, t: Timer, now: Instant, d: Duration) {
        self.timers.arm(t, now, d);
    }

    fn disarm(&mut self, t: Timer) {
        self.timers.stop(t);
    }

    /// The next action for the driver; `Ended` is always the last.
    pub fn poll_action(&mut self) -> Option<CallAction> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == CallState::Ended {
            return None;
        }
        let own = self.timers.earliest();
        let pin = self
            .collecting_credentials()
            .then(|| self.collector.poll_timeout())
            .flatten();
        let billing = self.charging.as_ref().and_then(|c| c.poll_timeout());
        [own, pin, billing, self.media_deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}

fn leg_index(leg: Leg) -> usize {
    match leg {
        Leg::Handset => 0,
        Leg::Trunk => 1,
    }
}
