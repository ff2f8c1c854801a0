//! An inmate's **sitting** at a kiosk: what lets a kiosk act for one inmate.
//!
//! A kiosk's own token (role `kiosk`) takes cash deposits for any inmate of its
//! facilities and reads the visits of the station it is bound to, and nothing of any one
//! inmate. An inmate who confirms with calling ID and PIN at the kiosk
//! (`POST /kiosk/sittings`, the handsets' check and lockout) starts a sitting: a signed,
//! short-lived credential naming that kiosk and that inmate, sent with the kiosk's token in
//! the `X-Kiosk-Sitting` header. With it, and only for that inmate, the kiosk reads the
//! inmate's record, account, deposits, statement, contacts and visits.
//!
//! A sitting is signed text ([`crate::signed`]): `v1 \n kiosk user \n inmate id \n
//! expires at \n issued at` (Unix seconds) under a key of its own (derived from the same
//! secret as recording tickets and visit passes, with another label, so none opens as
//! another). It is stateless, as visit passes are: any node configured alike checks it and
//! nothing is written when one starts. It lasts [`SITTING_SECS`]; the kiosk page forgets
//! it when the inmate presses "Done" or leaves the kiosk idle. A sitting is checked
//! against the token it comes with: another kiosk's sitting is refused.
//!
//! Pure: the key, the facts and `now` are arguments.

use chrono::{DateTime, Duration, Utc};

const VERSION: &str = "v1";
/// The label of the sitting key ([`crate::config::derive_key`]).
pub const KEY_LABEL: &[u8] = b"sallyport kiosk sitting v1";
/// How long a sitting lasts at most: long enough to read an account, short enough that a
/// kiosk left without "Done" soon forgets whose it was.
pub const SITTING_SECS: i64 = 600;

/// What a sitting says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sitting {
    /// The kiosk's user (its token's user id).
    pub kiosk: String,
    pub inmate_id: String,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

impl Sitting {
    /// A sitting of `inmate_id` at `kiosk` from `now`.
    pub fn start(kiosk: &str, inmate_id: &str, now: DateTime<Utc>) -> Sitting {
        Sitting {
            kiosk: kiosk.to_string(),
            inmate_id: inmate_id.to_string(),
            expires_at: now + Duration::seconds(SITTING_SECS),
            issued_at: now,
        }
    }
}

/// Why a sitting is refused. Each has its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SittingRefusal {
    #[error("the kiosk sitting is malformed or was not issued by this gateway")]
    Invalid,
    #[error("the kiosk sitting has ended: confirm with calling ID and PIN again")]
    Expired,
    #[error("the kiosk sitting belongs to another kiosk")]
    OtherKiosk,
}

impl SittingRefusal {
    pub fn code(self) -> &'static str {
        match self {
            SittingRefusal::Invalid => "sitting_invalid",
            SittingRefusal::Expired => "sitting_expired",
            SittingRefusal::OtherKiosk => "sitting_other_kiosk",
        }
    }
}

fn unix(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn from_unix(s: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(s.parse().ok()?, 0)
}

/// The sitting's text: hex digits and one dot (safe in a header).
pub fn seal(key: &[u8], s: &Sitting) -> String {
    let payload = format!(
        "{VERSION}\n{}\n{}\n{}\n{}",
        s.kiosk,
        s.inmate_id,
        unix(s.expires_at),
        unix(s.issued_at)
    );
    crate::signed::seal(key, &payload)
}

/// The sitting in `text` if this gateway signed it for the kiosk `kiosk` and it has not
/// ended at `now`.
pub fn admit(
    key: &[u8],
    text: &str,
    kiosk: &str,
    now: DateTime<Utc>,
) -> Result<Sitting, SittingRefusal> {
    let invalid = SittingRefusal::Invalid;
    if text.len() > 1_024 {
        return Err(invalid);
    }
    let payload = crate::signed::open(key, text).ok_or(invalid)?;
    let mut parts = payload.split('\n');
    let mut next = || parts.next().ok_or(invalid);
    if next()? != VERSION {
        return Err(invalid);
    }
    let sitting = Sitting {
        kiosk: next()?.to_string(),
        inmate_id: next()?.to_string(),
        expires_at: from_unix(next()?).ok_or(invalid)?,
        issued_at: from_unix(next()?).ok_or(invalid)?,
    };
    if parts.next().is_some() {
        return Err(invalid);
    }
    if sitting.kiosk != kiosk {
        return Err(SittingRefusal::OtherKiosk);
    }
    if now >= sitting.expires_at || now < sitting.issued_at - Duration::seconds(60) {
        return Err(SittingRefusal::Expired);
    }
    Ok(sitting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 14, 0, 0).unwrap()
    }

    #[test]
    fn a_sitting_opens_for_its_kiosk_until_it_ends() {
        let s = Sitting::start("kiosk-1", "inm_1", t0());
        let text = seal(KEY, &s);
        assert_eq!(admit(KEY, &text, "kiosk-1", t0()), Ok(s.clone()));
        let late = t0() + Duration::seconds(SITTING_SECS);
        assert_eq!(
            admit(KEY, &text, "kiosk-1", late),
            Err(SittingRefusal::Expired)
        );
        assert_eq!(
            admit(KEY, &text, "kiosk-2", t0()),
            Err(SittingRefusal::OtherKiosk)
        );
    }

    #[test]
    fn anything_else_is_invalid() {
        let s = Sitting::start("kiosk-1", "inm_1", t0());
        let text = seal(KEY, &s);
        let other_key = b"fedcba9876543210fedcba9876543210";
        assert_eq!(
            admit(other_key, &text, "kiosk-1", t0()),
            Err(SittingRefusal::Invalid)
        );
        let mut flipped = text.clone().into_bytes();
        flipped[3] = if flipped[3] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            admit(KEY, &flipped, "kiosk-1", t0()),
            Err(SittingRefusal::Invalid)
        );
        assert_eq!(
            admit(KEY, "not a sitting", "kiosk-1", t0()),
            Err(SittingRefusal::Invalid)
        );
        let long = "a".repeat(2_000);
        assert_eq!(
            admit(KEY, &long, "kiosk-1", t0()),
            Err(SittingRefusal::Invalid)
        );
    }
}
