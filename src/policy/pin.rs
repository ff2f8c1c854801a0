//! PINs are never stored. A PIN is looked up by its keyed hash: HMAC-SHA256 under the
//! configured pepper of the facility code and the PIN. Without the pepper a stolen database
//! does not give the PINs away (a 4–8 digit PIN space is small enough to brute-force any
//! unkeyed hash). The hash found by lookup is compared again in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Shortest and longest accepted PIN.
pub const MIN_DIGITS: usize = 4;
pub const MAX_DIGITS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("a PIN is {MIN_DIGITS} to {MAX_DIGITS} digits")]
    BadFormat,
}

/// Checks the shape of a PIN.
pub fn validate(pin: &str) -> Result<(), PinError> {
    let ok =
        (MIN_DIGITS..=MAX_DIGITS).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(PinError::BadFormat)
    }
}

/// The lookup hash of `pin` in `facility_id`, hex encoded.
pub fn lookup_hash(pepper: &[u8], facility_id: &str, pin: &str) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for HMAC.
    let mut mac = match Hmac::<Sha256>::new_from_slice(pepper) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(facility_id.as_bytes());
    mac.update(&[0]);
    mac.update(pin.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time comparison of a stored lookup hash with one computed from an entered PIN.
pub fn matches(stored: &str, computed: &str) -> bool {
    stored.as_bytes().ct_eq(computed.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        assert!(validate("1234").is_ok());
        assert!(validate("12345678").is_ok());
        assert!(validate("123").is_err());
        assert!(validate("123456789").is_err());
        assert!(validate("12a4").is_err());
    }

    #[test]
    fn keyed_and_scoped() {
        let a = lookup_hash(b"pepper-one-0123456", "F1", "1234");
        assert_eq!(a.len(), 64);
        assert!(matches(
            &a,
            &lookup_hash(b"pepper-one-0123456", "F1", "1234")
        ));
        assert_ne!(a, lookup_hash(b"pepper-two-0123456", "F1", "1234"));
        assert_ne!(a, lookup_hash(b"pepper-one-0123456", "F2", "1234"));
        assert!(!a.contains("1234"));
    }
}
