//! An inmate's credentials: a calling ID and a PIN, keyed together.
//!
//! The **calling ID** is a facility-issued number (`security.calling_id_digits` digits,
//! default 6; random at booking unless staff give one, so IDs cannot be enumerated; unique
//! per facility). It is not a secret, but no roster item either. The **PIN** is
//! `security.pin_min_digits` to `pin_max_digits` digits (default 4–8). The pair names the
//! inmate: a PIN alone never does, and two inmates may share a PIN.
//!
//! PINs are never stored. The stored form is HMAC-SHA256 under the configured pepper of
//! the facility, the calling ID and the PIN ([`pin_hash`]); without the pepper a stolen
//! database does not give the PINs away (a 4–8 digit PIN space is small enough to
//! brute-force any unkeyed hash). An entered pair is checked by looking the inmate up by
//! (facility, calling ID) and comparing the hash in constant time ([`matches`]).
//!
//! Before calling IDs, the stored form was HMAC(facility ‖ PIN) ([`legacy_hash`]),
//! looked up facility-wide. Such hashes are still verified — after the ID names the
//! inmate — and replaced by the new form at the first right entry (the PIN is needed to
//! compute it, so no migration can do it ahead of time).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Lengths of calling IDs and PINs (from `[security]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialRules {
    pub calling_id_digits: usize,
    pub pin_min_digits: usize,
    pub pin_max_digits: usize,
}

impl Default for CredentialRules {
    fn default() -> Self {
        CredentialRules {
            calling_id_digits: 6,
            pin_min_digits: 4,
            pin_max_digits: 8,
        }
    }
}

impl CredentialRules {
    pub fn from_config(c: &crate::config::SecurityConfig) -> CredentialRules {
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        CredentialRules {
            calling_id_digits: n(c.calling_id_digits),
            pin_min_digits: n(c.pin_min_digits),
            pin_max_digits: n(c.pin_max_digits),
        }
    }

    /// Checks the shape of a PIN.
    pub fn validate_pin(&self, pin: &str) -> Result<(), PinError> {
        if (self.pin_min_digits..=self.pin_max_digits).contains(&pin.len()) && all_digits(pin) {
            Ok(())
        } else {
            Err(PinError::BadPin {
                min: self.pin_min_digits,
                max: self.pin_max_digits,
            })
        }
    }

    /// Checks the shape of a calling ID.
    pub fn validate_calling_id(&self, id: &str) -> Result<(), PinError> {
        if id.len() == self.calling_id_digits && all_digits(id) {
            Ok(())
        } else {
            Err(PinError::BadCallingId {
                digits: self.calling_id_digits,
            })
        }
    }

    /// A calling ID made of `draw(10)` values (each below 10): the first digit is never 0,
    /// so an ID survives a spreadsheet as a number. The caller supplies the randomness.
    pub fn calling_id_from(&self, mut draw: impl FnMut(u8) -> u8) -> String {
        (0..self.calling_id_digits)
            .map(|i| {
                let d = if i == 0 {
                    1 + draw(9) % 9
                } else {
                    draw(10) % 10
                };
                char::from(b'0' + d)
            })
            .collect()
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("a PIN is {min} to {max} digits")]
    BadPin { min: usize, max: usize },
    #[error("a calling ID is {digits} digits")]
    BadCallingId { digits: usize },
}

fn mac(pepper: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail for HMAC.
    match Hmac::<Sha256>::new_from_slice(pepper) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// The stored form of `pin` for the inmate with `calling_id` in `facility_id`, hex encoded.
pub fn pin_hash(pepper: &[u8], facility_id: &str, calling_id: &str, pin: &str) -> String {
    let mut m = mac(pepper);
    // A label keeps this form apart from the legacy one whatever the inputs.
    m.update(b"sallyport pin v2\0");
    for part in [facility_id, calling_id] {
        m.update(part.as_bytes());
        m.update(&[0]);
    }
    m.update(pin.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The pre-calling-ID stored form: HMAC of the facility and the PIN.
pub fn legacy_hash(pepper: &[u8], facility_id: &str, pin: &str) -> String {
    let mut m = mac(pepper);
    m.update(facility_id.as_bytes());
    m.update(&[0]);
    m.update(pin.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A keyed digest of an entered calling ID that names no inmate: failed entries are
/// grouped by ID for the facility-wide guessing alert without storing the digits.
pub fn unknown_id_tag(pepper: &[u8], facility_id: &str, entered_id: &str) -> String {
    let mut m = mac(pepper);
    m.update(b"sallyport unknown calling id\0");
    m.update(facility_id.as_bytes());
    m.update(&[0]);
    m.update(entered_id.as_bytes());
    format!("id:{}", &hex::encode(m.finalize().into_bytes())[..16])
}

/// Constant-time comparison of a stored hash with one computed from an entry.
pub fn matches(stored: &str, computed: &str) -> bool {
    stored.as_bytes().ct_eq(computed.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEPPER: &[u8] = b"pepper-one-0123456";

    #[test]
    fn shapes_follow_the_rules() {
        let r = CredentialRules::default();
        assert!(r.validate_pin("1234").is_ok());
        assert!(r.validate_pin("12345678").is_ok());
        assert!(r.validate_pin("123").is_err());
        assert!(r.validate_pin("123456789").is_err());
        assert!(r.validate_pin("12a4").is_err());
        assert!(r.validate_calling_id("100001").is_ok());
        assert!(r.validate_calling_id("10001").is_err());
        assert!(r.validate_calling_id("1000011").is_err());
        assert!(r.validate_calling_id("10000x").is_err());
        let six = CredentialRules {
            calling_id_digits: 8,
            pin_min_digits: 6,
            pin_max_digits: 6,
        };
        assert!(six.validate_pin("1234").is_err());
        assert!(six.validate_pin("123456").is_ok());
        assert_eq!(
            six.validate_pin("1").unwrap_err().to_string(),
            "a PIN is 6 to 6 digits"
        );
        assert!(six.validate_calling_id("12345678").is_ok());
    }

    #[test]
    fn generated_ids_have_the_length_and_no_leading_zero() {
        let r = CredentialRules::default();
        let mut zeros = std::iter::repeat(0u8);
        let id = r.calling_id_from(|_| zeros.next().unwrap_or(0));
        assert_eq!(id, "100000");
        let mut n = 0u8;
        let id = r.calling_id_from(|_| {
            n = n.wrapping_add(7);
            n
        });
        assert!(r.validate_calling_id(&id).is_ok(), "{id}");
        assert_ne!(id.as_bytes()[0], b'0');
    }

    #[test]
    fn keyed_by_facility_id_and_pin() {
        let a = pin_hash(PEPPER, "F1", "100001", "1234");
        assert_eq!(a.len(), 64);
        assert!(matches(&a, &pin_hash(PEPPER, "F1", "100001", "1234")));
        assert_ne!(a, pin_hash(b"pepper-two-0123456", "F1", "100001", "1234"));
        assert_ne!(a, pin_hash(PEPPER, "F2", "100001", "1234"));
        // The same PIN under another ID is another hash: PINs need not be unique.
        assert_ne!(a, pin_hash(PEPPER, "F1", "100002", "1234"));
        // Field boundaries are kept: ID 10000 + PIN 11234 is not ID 100001 + PIN 1234.
        assert_ne!(a, pin_hash(PEPPER, "F1", "10000", "11234"));
        assert_ne!(a, legacy_hash(PEPPER, "F1", "1234"));
        assert!(!a.contains("1234"));
    }

    #[test]
    fn unknown_ids_are_tagged_without_their_digits() {
        let t = unknown_id_tag(PEPPER, "F1", "999999");
        assert!(t.starts_with("id:") && !t.contains("999999"), "{t}");
        assert_eq!(t, unknown_id_tag(PEPPER, "F1", "999999"));
        assert_ne!(t, unknown_id_tag(PEPPER, "F1", "999998"));
    }
}
