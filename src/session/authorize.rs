//! Who may be reached, and when: the destination policy of a session (`docs/behaviour.md`,
//! the destination checks) as pure functions over facts the driver read beforehand. No
//! database, no clock: the same facts give the same answer, so the order of the checks —
//! which refusal an inmate hears when several apply — is tested here without I/O.
//!
//! The order: the inmate is active; the dialed digits are an E.164 number
//! ([`caller`]); then, for that number ([`destination`]): an approved contact, not blocked,
//! within calling hours, under the daily limit. What follows needs the database to decide
//! atomically or the rate tables, and stays with the driver: the one-live-session claim,
//! rating for the session's [`Service`](super::Service) and the funds for the first
//! increment.

use super::EndReason;
use crate::rating::{normalize_e164, E164};

/// The first two checks: an active inmate, and digits that make an E.164 number in the
/// facility's country.
pub fn caller(inmate_active: bool, dialed: &str, country_code: &str) -> Result<E164, EndReason> {
    if !inmate_active {
        return Err(EndReason::InmateInactive);
    }
    normalize_e164(dialed, country_code).map_err(|_| EndReason::InvalidNumber)
}

/// What the checks of a number need, read before they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberFacts {
    /// The inmate has an approved contact with this number.
    pub approved_contact: bool,
    /// The number is on the facility's or the global block list.
    pub blocked: bool,
    /// The facility's calling hours allow a call now.
    pub within_hours: bool,
    /// The facility's daily limit of accepted calls (0: none) and how many the inmate had
    /// today.
    pub daily_limit: i64,
    pub accepted_today: i64,
}

/// The checks of a number, in order: the first that fails is the refusal.
pub fn destination(f: &NumberFacts) -> Result<(), EndReason> {
    if !f.approved_contact {
        return Err(EndReason::NotApproved);
    }
    if f.blocked {
        return Err(EndReason::Blocked);
    }
    if !f.within_hours {
        return Err(EndReason::OutsideHours);
    }
    if f.daily_limit > 0 && f.accepted_today >= f.daily_limit {
        return Err(EndReason::CallLimit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: NumberFacts = NumberFacts {
        approved_contact: true,
        blocked: false,
        within_hours: true,
        daily_limit: 0,
        accepted_today: 0,
    };

    #[test]
    fn the_caller_must_be_active_and_dial_a_number() {
        assert_eq!(
            caller(true, "5551230001", "1").map(|n| n.as_str().to_string()),
            Ok("+15551230001".to_string())
        );
        assert_eq!(
            caller(false, "5551230001", "1"),
            Err(EndReason::InmateInactive)
        );
        assert_eq!(
            caller(false, "12", "1"),
            Err(EndReason::InmateInactive),
            "first"
        );
        assert_eq!(caller(true, "12", "1"), Err(EndReason::InvalidNumber));
    }

    #[test]
    fn the_first_failing_check_is_the_refusal() {
        assert_eq!(destination(&OPEN), Ok(()));
        let everything_wrong = NumberFacts {
            approved_contact: false,
            blocked: true,
            within_hours: false,
            daily_limit: 3,
            accepted_today: 3,
        };
        assert_eq!(destination(&everything_wrong), Err(EndReason::NotApproved));
        let approved = NumberFacts {
            approved_contact: true,
            ..everything_wrong
        };
        assert_eq!(destination(&approved), Err(EndReason::Blocked));
        let unblocked = NumberFacts {
            blocked: false,
            ..approved
        };
        assert_eq!(destination(&unblocked), Err(EndReason::OutsideHours));
        let in_hours = NumberFacts {
            within_hours: true,
            ..unblocked
        };
        assert_eq!(destination(&in_hours), Err(EndReason::CallLimit));
        let under = NumberFacts {
            accepted_today: 2,
            ..in_hours
        };
        assert_eq!(destination(&under), Ok(()));
        let no_limit = NumberFacts {
            daily_limit: 0,
            accepted_today: 99,
            ..in_hours
        };
        assert_eq!(destination(&no_limit), Ok(()));
    }
}
