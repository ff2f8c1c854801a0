//! Video visits: what may be booked, and what may happen to a booking.
//!
//! Owns the scheduling rules of a visit as pure functions over facts read beforehand
//! ([`rules`]: the facility's visiting windows in its time zone, slot lengths, notice,
//! horizon, the weekly limit, the contact's approval and video permission) and the life of
//! a booking ([`VisitStatus::after`]: approve, deny, cancel, no-show). No database, no
//! clock: `now` is an argument, so a rule or a transition is tested without I/O and the
//! same facts always give the same answer.
//!
//! What needs the database to decide atomically stays with the driver
//! ([`crate::store`]'s visits): an inmate who is not double-booked, a station that is not
//! overbooked, the weekly limit under concurrent requests. Those are claimed there as rows
//! with unique keys (one per inmate and five-minute [`cell`](rules::CELL_SECS), one per
//! station, cell and place, one per inmate, week and place), so two requests racing for
//! the last place get one visit and one [`Refusal`], on one node or many.
//!
//! Every refusal has its own code ([`Refusal::code`]); the API answers rule refusals with
//! 422 and conflicts (a place taken, a transition no longer possible) with 409
//! ([`Refusal::is_conflict`]).
//!
//! Called by: the store (the booking and the transitions) and the API. Calls nothing but
//! the facility time-zone helpers of [`crate::policy::hours`].

pub mod core;
pub mod live;
pub mod pass;
pub mod recorder;
pub mod rules;
pub mod signal;
pub mod task;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a booking stands.
///
/// ```text
/// pending ──approve──► approved ──no-show (from the start)──► no_show
///    │  └──deny──► denied   │
///    └──cancel──┐           └──cancel (before the end)──► cancelled
///               ▼
///           cancelled
/// ```
///
/// A pending or approved visit holds its places (the inmate's time, a station place, a
/// place in the inmate's week); a denied or cancelled one gives them back. A no-show keeps
/// them: the slot was used, and it counts against the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    Pending,
    Approved,
    Denied,
    Cancelled,
    NoShow,
}

impl VisitStatus {
    pub const ALL: [VisitStatus; 5] = [
        VisitStatus::Pending,
        VisitStatus::Approved,
        VisitStatus::Denied,
        VisitStatus::Cancelled,
        VisitStatus::NoShow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VisitStatus::Pending => "pending",
            VisitStatus::Approved => "approved",
            VisitStatus::Denied => "denied",
            VisitStatus::Cancelled => "cancelled",
            VisitStatus::NoShow => "no_show",
        }
    }

    pub fn parse(s: &str) -> Option<VisitStatus> {
        VisitStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether a visit in this status holds its places.
    pub fn holds_places(self) -> bool {
        matches!(
            self,
            VisitStatus::Pending | VisitStatus::Approved | VisitStatus::NoShow
        )
    }

    /// The status after `action` at `now`, for a visit of `slot`; or why not.
    pub fn after(self, action: Action, slot: Slot, now: DateTime<Utc>) -> Result<Self, Refusal> {
        use VisitStatus::*;
        let refused = || Refusal::InvalidTransition { from: self, action };
        match (action, self) {
            (Action::Approve, Pending) => Ok(Approved),
            (Action::Deny, Pending) => Ok(Denied),
            (Action::Cancel, Pending | Approved) if now >= slot.ends_at => Err(Refusal::VisitOver),
            (Action::Cancel, Pending | Approved) => Ok(Cancelled),
            (Action::NoShow, Approved) if now < slot.starts_at => Err(Refusal::VisitNotStarted),
            (Action::NoShow, Approved) => Ok(NoShow),
            _ => Err(refused()),
        }
    }
}

/// What staff or a visitor do to a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Approve,
    Deny,
    Cancel,
    NoShow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Cancel => "cancel",
            Action::NoShow => "no_show",
        }
    }
}

/// A visit's time: `[starts_at, ends_at)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// Why a visit cannot be booked, or a booking cannot change. Each has its own code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the inmate is not active (suspended or released): no visits can be booked")]
    InmateInactive,
    #[error("the contact is not approved")]
    ContactNotApproved,
    #[error("the contact is approved for calls but not for video visits")]
    VideoNotAllowed,
    #[error("the facility has no visiting rules: no visits can be booked")]
    NoVisitingRules,
    #[error("a visit lasts one of {allowed:?} minutes, not {asked}")]
    SlotLengthInvalid { asked: i64, allowed: Vec<u32> },
    #[error("visits start on whole minutes, every {step} minutes from the start of a visiting window ({window})")]
    SlotStartInvalid { step: u32, window: String },
    #[error("the visit must lie within one visiting window in the facility's time zone ({zone}); that day's windows: {windows}")]
    OutsideVisitingHours { zone: String, windows: String },
    #[error("a visit must be booked at least {min_notice_minutes} minutes before it starts")]
    NoticeTooShort { min_notice_minutes: u32 },
    #[error("a visit may be booked at most {max_days_ahead} days ahead")]
    TooFarAhead { max_days_ahead: u32 },
    #[error("the inmate has {limit} visit(s) that week already (the facility's weekly limit, week of {week})")]
    WeeklyLimitReached { limit: u32, week: String },
    #[error("the inmate has another visit at that time")]
    InmateDoubleBooked,
    #[error("{station} has no place left at that time")]
    StationFull { station: String },
    #[error("no visit station of the inmate's housing unit has a place left at that time")]
    NoStationFree,
    #[error("the inmate's housing unit (or, for an inmate without one, the facility) has no active visit station")]
    NoStation,
    #[error("the station is retired: no visits can be booked on it")]
    StationInactive,
    #[error("the station belongs to housing unit '{station_unit}', the inmate to '{inmate_unit}'")]
    StationNotInHousingUnit {
        station_unit: String,
        inmate_unit: String,
    },
    #[error("a visit that is {} cannot be {}", .from.as_str(), past_tense(*.action))]
    InvalidTransition { from: VisitStatus, action: Action },
    #[error("the visit has not started yet: a no-show is marked from its start")]
    VisitNotStarted,
    #[error("the visit's slot is over: it can no longer be cancelled")]
    VisitOver,
    #[error(
        "another request for the same places was being decided at the same moment; send it again"
    )]
    Contended,
}

fn past_tense(a: Action) -> &'static str {
    match a {
        Action::Approve => "approved",
        Action::Deny => "denied",
        Action::Cancel => "cancelled",
        Action::NoShow => "marked a no-show",
    }
}

impl Refusal {
    /// The error code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InmateInactive => "inmate_inactive",
            Refusal::ContactNotApproved => "contact_not_approved",
            Refusal::VideoNotAllowed => "video_not_allowed",
            Refusal::NoVisitingRules => "no_visiting_rules",
            Refusal::SlotLengthInvalid { .. } => "slot_length_invalid",
            Refusal::SlotStartInvalid { .. } => "slot_start_invalid",
            Refusal::OutsideVisitingHours { .. } => "outside_visiting_hours",
            Refusal::NoticeTooShort { .. } => "notice_too_short",
            Refusal::TooFarAhead { .. } => "too_far_ahead",
            Refusal::WeeklyLimitReached { .. } => "weekly_limit_reached",
            Refusal::InmateDoubleBooked => "inmate_double_booked",
            Refusal::StationFull { .. } => "station_full",
            Refusal::NoStationFree => "no_station_free",
            Refusal::NoStation => "no_station",
            Refusal::StationInactive => "station_inactive",
            Refusal::StationNotInHousingUnit { .. } => "station_not_in_housing_unit",
            Refusal::InvalidTransition { .. } => "invalid_transition",
            Refusal::VisitNotStarted => "visit_not_started",
            Refusal::VisitOver => "visit_over",
            Refusal::Contended => "contended",
        }
    }

    /// A conflict with the state of the world (409: a place taken, a booking that moved
    /// on), rather than a request the rules refuse (422).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Refusal::InmateDoubleBooked
                | Refusal::StationFull { .. }
                | Refusal::NoStationFree
                | Refusal::InvalidTransition { .. }
                | Refusal::VisitNotStarted
                | Refusal::VisitOver
                | Refusal::Contended
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn slot() -> Slot {
        Slot {
            starts_at: Utc.with_ymd_and_hms(2026, 3, 10, 15, 0, 0).unwrap(),
            ends_at: Utc.with_ymd_and_hms(2026, 3, 10, 15, 30, 0).unwrap(),
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap()
    }

    #[test]
    fn pending_is_approved_denied_or_cancelled() {
        use VisitStatus::*;
        let before = at(9, 0);
        assert_eq!(Pending.after(Action::Approve, slot(), before), Ok(Approved));
        assert_eq!(Pending.after(Action::Deny, slot(), before), Ok(Denied));
        assert_eq!(Pending.after(Action::Cancel, slot(), before), Ok(Cancelled));
        assert_eq!(
            Pending.after(Action::NoShow, slot(), at(15, 10)),
            Err(Refusal::InvalidTransition {
                from: Pending,
                action: Action::NoShow
            })
        );
    }

    #[test]
    fn approved_is_cancelled_before_its_end_and_a_no_show_from_its_start() {
        use VisitStatus::*;
        assert_eq!(
            Approved.after(Action::Cancel, slot(), at(15, 29)),
            Ok(Cancelled)
        );
        assert_eq!(
            Approved.after(Action::Cancel, slot(), at(15, 30)),
            Err(Refusal::VisitOver)
        );
        assert_eq!(
            Approved.after(Action::NoShow, slot(), at(14, 59)),
            Err(Refusal::VisitNotStarted)
        );
        assert_eq!(
            Approved.after(Action::NoShow, slot(), at(15, 0)),
            Ok(NoShow)
        );
        for a in [Action::Approve, Action::Deny] {
            assert_eq!(
                Approved.after(a, slot(), at(9, 0)),
                Err(Refusal::InvalidTransition {
                    from: Approved,
                    action: a
                })
            );
        }
    }

    #[test]
    fn the_ends_are_final() {
        let all = [
            Action::Approve,
            Action::Deny,
            Action::Cancel,
            Action::NoShow,
        ];
        for from in [
            VisitStatus::Denied,
            VisitStatus::Cancelled,
            VisitStatus::NoShow,
        ] {
            for a in all {
                let r = from.after(a, slot(), at(9, 0));
                assert_eq!(r, Err(Refusal::InvalidTransition { from, action: a }));
                assert!(r.unwrap_err().is_conflict());
            }
        }
    }

    #[test]
    fn only_live_and_used_bookings_hold_places() {
        let holding: Vec<_> = VisitStatus::ALL
            .into_iter()
            .filter(|s| s.holds_places())
            .collect();
        assert_eq!(
            holding,
            [
                VisitStatus::Pending,
                VisitStatus::Approved,
                VisitStatus::NoShow
            ]
        );
        for s in VisitStatus::ALL {
            assert_eq!(VisitStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_refused_transition_says_what_and_from_what() {
        let r = Refusal::InvalidTransition {
            from: VisitStatus::Cancelled,
            action: Action::Approve,
        };
        assert_eq!(
            r.to_string(),
            "a visit that is cancelled cannot be approved"
        );
        assert_eq!(r.code(), "invalid_transition");
    }
}
