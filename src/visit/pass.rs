//! The ways into a visit: a **participant pass**, one credential for both sides.
//!
//! A visitor gets one inside a join link (`POST /visits/{id}/join-link`, issued to staff
//! or to the family user who visits as the visit's contact); the inmate gets one at the
//! kiosk after confirming with calling ID and PIN (`POST /visits/{id}/kiosk-join`). The
//! signalling endpoint that comes next takes this one kind of credential, with its side.
//!
//! A pass is signed text ([`crate::signed`]): `v1 \n side \n visit id \n valid from \n
//! expires at \n issued at` (Unix seconds) under a key of its own, derived from the same
//! secret as the recording tickets with another label, so no ticket, cluster credential or
//! API token opens as a pass and no pass as one of them. It is **stateless**: any node
//! configured alike checks it, and nothing is written when one is issued. What a stored
//! secret would give, revocation, comes from the visit itself: every use reads the visit,
//! and a pass of a visit that is cancelled (or no longer approved) is refused
//! ([`admit`]), so cancelling a visit is revoking its passes. A pass is good only for its
//! visit and side, from `join_lead` before the slot until the slot's end; it is no bearer
//! token (the API looks bearer tokens up among the stored ones, where a pass never is).
//!
//! Pure: the key, the facts and `now` are arguments.

use super::VisitStatus;
use chrono::{DateTime, Duration, Utc};

const VERSION: &str = "v1";
/// The label of the pass key ([`crate::config::derive_key`]).
pub const KEY_LABEL: &[u8] = b"sallyport visit pass v1";

/// Which side of a visit a pass lets in: the visitor (from the join link) or the inmate
/// (at the visit's station); the forwarding core's own sides.
pub use crate::sfu::Side;

fn parse_side(s: &str) -> Option<Side> {
    [Side::Visitor, Side::Inmate]
        .into_iter()
        .find(|v| v.as_str() == s)
}

/// What a pass says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub side: Side,
    pub visit_id: String,
    /// From when it is accepted (`join_lead` before the slot).
    pub valid_from: DateTime<Utc>,
    /// From when it is refused (the slot's end).
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

/// The join window of a slot: from `lead` before its start until its end.
pub fn window(
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    lead: Duration,
) -> (DateTime<Utc>, DateTime<Utc>) {
    (starts_at - lead, ends_at)
}

/// Why a pass, or a join, is refused. Each has its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassRefusal {
    #[error("the link is malformed or was not issued by this gateway")]
    Invalid,
    #[error("the link is not valid yet: the visit can be joined shortly before its slot")]
    NotYetValid,
    #[error("the link has expired: the visit's slot is over")]
    Expired,
    #[error("the visit was cancelled")]
    Cancelled,
    #[error("the visit is {} and cannot be joined", .0.as_str())]
    NotOpen(VisitStatus),
}

impl PassRefusal {
    pub fn code(self) -> &'static str {
        match self {
            PassRefusal::Invalid => "link_invalid",
            PassRefusal::NotYetValid => "link_not_yet_valid",
            PassRefusal::Expired => "link_expired",
            PassRefusal::Cancelled => "visit_cancelled",
            PassRefusal::NotOpen(_) => "visit_not_open",
        }
    }
}

use crate::signed::{from_unix_secs as from_unix, unix_secs as unix};

/// The pass's text: hex digits and one dot (safe in a URL fragment, a query or a header).
pub fn seal(key: &[u8], p: &Pass) -> String {
    let payload = format!(
        "{VERSION}\n{}\n{}\n{}\n{}\n{}",
        p.side.as_str(),
        p.visit_id,
        unix(p.valid_from),
        unix(p.expires_at),
        unix(p.issued_at)
    );
    crate::signed::seal(key, &payload)
}

/// The pass in `text` if this gateway signed it: [`PassRefusal::Invalid`] otherwise. Its
/// times are not checked here ([`admit`] does, with the visit).
pub fn open(key: &[u8], text: &str) -> Result<Pass, PassRefusal> {
    let invalid = PassRefusal::Invalid;
    // A pass is a few hundred characters: anything much longer is not one, and is not
    // worth a MAC.
    if text.len() > 1_024 {
        return Err(invalid);
    }
    let payload = crate::signed::open(key, text).ok_or(invalid)?;
    let mut parts = payload.split('\n');
    let mut next = || parts.next().ok_or(invalid);
    if next()? != VERSION {
        return Err(invalid);
    }
    let side = parse_side(next()?).ok_or(invalid)?;
    let visit_id = next()?.to_string();
    let valid_from = from_unix(next()?).ok_or(invalid)?;
    let expires_at = from_unix(next()?).ok_or(invalid)?;
    let issued_at = from_unix(next()?).ok_or(invalid)?;
    if parts.next().is_some() {
        return Err(invalid);
    }
    Ok(Pass {
        side,
        visit_id,
        valid_from,
        expires_at,
        issued_at,
    })
}

/// Whether a visit in `status` can be joined at `now` through a window
/// `[valid_from, expires_at)`: a cancelled visit never, one not approved never (pending,
/// denied, a no-show), then the times.
pub fn admit(
    status: VisitStatus,
    valid_from: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), PassRefusal> {
    match status {
        VisitStatus::Approved => {}
        VisitStatus::Cancelled => return Err(PassRefusal::Cancelled),
        other => return Err(PassRefusal::NotOpen(other)),
    }
    if now < valid_from {
        return Err(PassRefusal::NotYetValid);
    }
    if now >= expires_at {
        return Err(PassRefusal::Expired);
    }
    Ok(())
}

/// Seconds until the slot opens (0 once it has).
pub fn opens_in_secs(starts_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (starts_at - now).num_seconds().max(0)
}

/// How a visitor sees the inmate's name: the first name and the last name's initial.
pub fn short_name(first: &str, last: &str) -> String {
    match last.chars().next() {
        Some(c) => format!("{first} {c}."),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap()
    }

    fn pass() -> Pass {
        let (valid_from, expires_at) = window(t(15, 0), t(15, 30), Duration::minutes(15));
        Pass {
            side: Side::Visitor,
            visit_id: "vis_1".into(),
            valid_from,
            expires_at,
            issued_at: t(9, 0),
        }
    }

    #[test]
    fn a_pass_opens_with_its_key_only() {
        let key = [3u8; 32];
        let text = seal(&key, &pass());
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'));
        assert_eq!(open(&key, &text), Ok(pass()));
        assert_eq!(open(&[4u8; 32], &text), Err(PassRefusal::Invalid));
        let mut bytes = text.into_bytes();
        bytes[3] = if bytes[3] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(open(&key, &flipped), Err(PassRefusal::Invalid));
        for junk in ["", ".", "zz.zz", "00.00", &"a".repeat(5_000)] {
            assert_eq!(open(&key, junk), Err(PassRefusal::Invalid), "{junk}");
        }
    }

    #[test]
    fn another_signed_text_is_no_pass() {
        let key = [3u8; 32];
        let ticket = crate::signed::seal(&key, "v2\nrec_1\nplay\n1\nab\ninv");
        assert_eq!(open(&key, &ticket), Err(PassRefusal::Invalid));
        let longer = crate::signed::seal(&key, "v1\nvisitor\nvis_1\n1\n2\n3\n4");
        assert_eq!(open(&key, &longer), Err(PassRefusal::Invalid));
    }

    #[test]
    fn the_window_runs_from_the_lead_to_the_end_of_the_slot() {
        let p = pass();
        let ok = VisitStatus::Approved;
        let (from, to) = (p.valid_from, p.expires_at);
        assert_eq!(from, t(14, 45));
        assert_eq!(
            admit(ok, from, to, t(14, 44)),
            Err(PassRefusal::NotYetValid)
        );
        assert_eq!(admit(ok, from, to, t(14, 45)), Ok(()));
        assert_eq!(admit(ok, from, to, t(15, 29)), Ok(()));
        assert_eq!(admit(ok, from, to, t(15, 30)), Err(PassRefusal::Expired));
    }

    #[test]
    fn only_an_approved_visit_is_joined_and_a_cancelled_one_says_so() {
        let p = pass();
        let now = t(15, 0);
        let (from, to) = (p.valid_from, p.expires_at);
        assert_eq!(
            admit(VisitStatus::Cancelled, from, to, now),
            Err(PassRefusal::Cancelled)
        );
        for s in [
            VisitStatus::Pending,
            VisitStatus::Denied,
            VisitStatus::NoShow,
        ] {
            assert_eq!(admit(s, from, to, now), Err(PassRefusal::NotOpen(s)));
        }
        assert_eq!(
            admit(VisitStatus::Cancelled, from, to, t(9, 0)).map_err(PassRefusal::code),
            Err("visit_cancelled")
        );
    }

    #[test]
    fn names_and_countdowns() {
        assert_eq!(short_name("John", "Doe"), "John D.");
        assert_eq!(short_name("Zoë", "Émile"), "Zoë É.");
        assert_eq!(short_name("Cher", ""), "Cher");
        assert_eq!(opens_in_secs(t(15, 0), t(14, 50)), 600);
        assert_eq!(opens_in_secs(t(15, 0), t(15, 10)), 0);
    }
}
