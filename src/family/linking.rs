//! Finding an inmate and linking a family number (issue 12), without IO: what a roster
//! search may ask, the code of a verification call and how a keyed code is judged, and the
//! status a family reads for each of its requests.
//!
//! # Proving a number is the family's
//!
//! The portal shows the family a short code; the gateway calls the number through the
//! trunk, says what the call is for and asks whoever answers to key the code. Only the
//! person holding that phone *and* looking at the requester's page can complete it, so
//!
//! - a stranger's or a victim's number cannot be added: its owner hears a call that says
//!   what it is for and has no code to key (and is told to hang up if they did not ask);
//! - the code never travels over the phone line, so an answering machine, a voicemail box
//!   or someone reading a spoken code back to a caller does not prove anything;
//! - each call is a fresh code that expires (`family.verify_code_ttl_secs`), a request
//!   fails after `family.verify_code_attempts` wrong codes, and calls are limited per
//!   number and per account per day, so the gateway cannot be used to ring a number over
//!   and over or to guess a code.
//!
//! The call charges nobody: no inmate is on it, no session or CDR is opened.
//!
//! Called by: the family link routes, the store's link records and the verification call.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// Digits of a verification code.
pub const CODE_DIGITS: usize = 6;
/// Most roster entries one search answers; more means the query must be narrower.
pub const MAX_ROSTER_RESULTS: usize = 20;
/// The fewest letters of a last name a search accepts.
pub const MIN_LAST_NAME_CHARS: usize = 2;

/// A roster search, checked: by booking number, or by last name (whole, any case) and
/// optionally the start of the first name. Never empty, never a wildcard: a roster cannot
/// be listed by searching for everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterQuery {
    Booking(String),
    Name {
        last: String,
        first_prefix: Option<String>,
    },
}

/// Why a search was refused (shown to the person searching).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryProblem {
    #[error("search by booking number, or by last name (and first name if you like)")]
    Empty,
    #[error("enter the whole last name (at least 2 letters)")]
    ShortName,
    #[error("names and booking numbers are letters, digits, spaces, - ' and . only")]
    Characters,
    #[error("that is too long for a name or booking number")]
    TooLong,
}

fn clean(raw: Option<&str>) -> Result<Option<String>, QueryProblem> {
    let Some(v) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > 64 {
        return Err(QueryProblem::TooLong);
    }
    let ok = |c: char| c.is_alphanumeric() || " -'.".contains(c);
    if !v.chars().all(ok) || v.contains('%') || v.contains('_') {
        return Err(QueryProblem::Characters);
    }
    Ok(Some(v.to_string()))
}

impl RosterQuery {
    /// The query of a search form: a booking number wins over names.
    pub fn parse(
        booking: Option<&str>,
        last_name: Option<&str>,
        first_name: Option<&str>,
    ) -> Result<RosterQuery, QueryProblem> {
        if let Some(b) = clean(booking)? {
            return Ok(RosterQuery::Booking(b));
        }
        let first = clean(first_name)?;
        let Some(last) = clean(last_name)? else {
            return Err(QueryProblem::Empty);
        };
        if last.chars().filter(|c| c.is_alphabetic()).count() < MIN_LAST_NAME_CHARS {
            return Err(QueryProblem::ShortName);
        }
        Ok(RosterQuery::Name {
            last: last.to_lowercase(),
            first_prefix: first.map(|f| f.to_lowercase()),
        })
    }
}

/// A fresh code of [`CODE_DIGITS`] digits, uniformly drawn.
pub fn new_code() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..CODE_DIGITS)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

/// The stored form of `code` for request `request_id`: an HMAC under the gateway's key,
/// so the database alone does not give a six-digit code away by trying all of them.
pub fn code_hash(key: &[u8], request_id: &str, code: &str) -> String {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(b"sallyport family number code v1\0");
            mac.update(request_id.as_bytes());
            mac.update(b"\0");
            mac.update(code.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        // Not reachable (HMAC takes any key); an empty hash matches nothing.
        Err(_) => String::new(),
    }
}

/// What a request holds when a code is keyed on its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The request is still waiting for its number to be proved.
    pub verifying: bool,
    pub code_hash: Option<String>,
    /// Unix microseconds.
    pub code_expires_at: Option<i64>,
    pub wrong_codes: u32,
}

/// The verdict on a keyed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keyed {
    /// The right code in time: the number is proved.
    Verified,
    /// A wrong code; `left` more may be tried (with a new call).
    Wrong { left: u32 },
    /// A wrong code, the last allowed: the request has failed.
    Failed,
    /// No code is in force (expired, used, or never given): nothing is counted.
    Expired,
}

/// Judges `keyed_hash` (the [`code_hash`] of what was keyed) at `now_us` against `p`,
/// allowing `attempts` wrong codes per request.
pub fn judge(p: &Pending, keyed_hash: &str, now_us: i64, attempts: u32) -> Keyed {
    let in_force = p.verifying && p.code_expires_at.is_some_and(|t| now_us < t);
    let Some(stored) = p.code_hash.as_deref().filter(|_| in_force) else {
        return Keyed::Expired;
    };
    let same = !stored.is_empty()
        && stored.len() == keyed_hash.len()
        && subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), keyed_hash.as_bytes()).into();
    if same {
        return Keyed::Verified;
    }
    let wrong = p.wrong_codes.saturating_add(1);
    if wrong >= attempts {
        Keyed::Failed
    } else {
        Keyed::Wrong {
            left: attempts - wrong,
        }
    }
}

/// What a family reads of one of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    /// The number is not proved yet (ask for a call and key the code).
    PendingVerification,
    /// Too many wrong codes: make a new request.
    VerificationFailed,
    /// Proved; staff have not decided yet.
    PendingApproval,
    Approved,
    Denied,
    Withdrawn,
}

/// The status of a request from its stored `status` and its contact's (once submitted).
pub fn link_status(request: &str, contact: Option<&str>) -> LinkStatus {
    match (request, contact) {
        ("verifying", _) => LinkStatus::PendingVerification,
        ("failed", _) => LinkStatus::VerificationFailed,
        ("withdrawn", _) => LinkStatus::Withdrawn,
        (_, Some("approved")) => LinkStatus::Approved,
        (_, Some("denied")) => LinkStatus::Denied,
        _ => LinkStatus::PendingApproval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_never_empty_or_a_wildcard() {
        assert_eq!(
            RosterQuery::parse(None, Some("  "), Some("Ana")),
            Err(QueryProblem::Empty)
        );
        assert_eq!(
            RosterQuery::parse(None, None, None),
            Err(QueryProblem::Empty)
        );
        assert_eq!(
            RosterQuery::parse(None, Some("D"), None),
            Err(QueryProblem::ShortName)
        );
        assert_eq!(
            RosterQuery::parse(None, Some("D%"), None),
            Err(QueryProblem::Characters)
        );
        assert_eq!(
            RosterQuery::parse(None, Some("__"), None),
            Err(QueryProblem::Characters)
        );
        assert_eq!(
            RosterQuery::parse(Some(" B-100 "), Some("x"), None),
            Ok(RosterQuery::Booking("B-100".into()))
        );
        assert_eq!(
            RosterQuery::parse(None, Some("O'Neil"), Some("Jo")),
            Ok(RosterQuery::Name {
                last: "o'neil".into(),
                first_prefix: Some("jo".into())
            })
        );
    }

    #[test]
    fn codes_are_six_digits_and_hashed_per_request() {
        let c = new_code();
        assert_eq!(c.len(), CODE_DIGITS);
        assert!(c.bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(
            code_hash(b"k", "r1", "123456"),
            code_hash(b"k", "r2", "123456")
        );
        assert_ne!(
            code_hash(b"k", "r1", "123456"),
            code_hash(b"j", "r1", "123456")
        );
    }

    #[test]
    fn keyed_codes_are_judged_in_time_and_counted() {
        let h = code_hash(b"k", "r", "123456");
        let p = Pending {
            verifying: true,
            code_hash: Some(h.clone()),
            code_expires_at: Some(1_000),
            wrong_codes: 0,
        };
        assert_eq!(judge(&p, &h, 999, 3), Keyed::Verified);
        assert_eq!(judge(&p, &h, 1_000, 3), Keyed::Expired);
        let wrong = code_hash(b"k", "r", "654321");
        assert_eq!(judge(&p, &wrong, 10, 3), Keyed::Wrong { left: 2 });
        let p2 = Pending {
            wrong_codes: 2,
            ..p.clone()
        };
        assert_eq!(judge(&p2, &wrong, 10, 3), Keyed::Failed);
        let done = Pending {
            verifying: false,
            ..p.clone()
        };
        assert_eq!(judge(&done, &h, 10, 3), Keyed::Expired);
        let none = Pending {
            code_hash: None,
            ..p
        };
        assert_eq!(judge(&none, "", 10, 3), Keyed::Expired);
    }

    #[test]
    fn statuses_follow_the_request_then_its_contact() {
        assert_eq!(
            link_status("verifying", None),
            LinkStatus::PendingVerification
        );
        assert_eq!(link_status("failed", None), LinkStatus::VerificationFailed);
        assert_eq!(
            link_status("submitted", Some("pending")),
            LinkStatus::PendingApproval
        );
        assert_eq!(
            link_status("submitted", Some("approved")),
            LinkStatus::Approved
        );
        assert_eq!(link_status("submitted", Some("denied")), LinkStatus::Denied);
        assert_eq!(
            link_status("withdrawn", Some("denied")),
            LinkStatus::Withdrawn
        );
    }
}
