//! Webhook signatures: `Sallyport-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the
//! MAC taken with the shared secret over `<t>.<body>` (the scheme of Stripe's
//! `Stripe-Signature`). Several `v1=` entries may be present (a secret being rotated):
//! one that matches is enough. The timestamp must be within the tolerance of now, so a
//! captured webhook cannot be replayed later; the comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a webhook's signature travels in.
pub const SIGNATURE_HEADER: &str = "sallyport-signature";

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Sallyport-Signature header")]
    Missing,
    #[error("the Sallyport-Signature header is not t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("the signature is {age_secs} s from now, beyond the tolerance")]
    Stale { age_secs: i64 },
    #[error("no signature matches the body")]
    Mismatch,
}

impl SignatureError {
    /// Whether the request is malformed (400) rather than unauthenticated (401).
    pub fn is_malformed(&self) -> bool {
        matches!(self, SignatureError::Missing | SignatureError::Malformed)
    }
}

/// The MAC of `<t>.<body>`. HMAC takes keys of any length, so `new_from_slice` cannot
/// fail; if it did, nothing would verify.
fn mac(secret: &[u8], t: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(secret).ok()?;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// The header value for `body` signed at `t` (Unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={t},v1={tag}")
}

/// Checks a header value against `body` at `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => tags.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {} // other schemes: ignored, as Stripe's receivers do
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = now.saturating_sub(t);
    if age.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::Stale { age_secs: age });
    }
    // `verify_slice` compares in constant time.
    let matched = tags
        .iter()
        .any(|tag| mac(secret, t, body).is_some_and(|m| m.verify_slice(tag).is_ok()));
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_0123456789";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment.succeeded"}"#;

    #[test]
    fn a_signature_verifies_within_the_tolerance_only() {
        let h = sign(SECRET, 1_000, BODY);
        assert_eq!(verify(SECRET, Some(&h), BODY, 1_000, 300), Ok(()));
        assert_eq!(verify(SECRET, Some(&h), BODY, 1_300, 300), Ok(()));
        assert_eq!(
            verify(SECRET, Some(&h), BODY, 1_301, 300),
            Err(SignatureError::Stale { age_secs: 301 })
        );
        assert_eq!(
            verify(SECRET, Some(&h), BODY, 600, 300),
            Err(SignatureError::Stale { age_secs: -400 })
        );
    }

    #[test]
    fn another_body_secret_or_time_does_not_verify() {
        let h = sign(SECRET, 1_000, BODY);
        let other = br#"{"id":"evt_1","type":"payment.refunded"}"#;
        assert_eq!(
            verify(SECRET, Some(&h), other, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another secret!!", Some(&h), BODY, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the MAC.
        let moved = h.replacen("t=1000", "t=1001", 1);
        assert_eq!(
            verify(SECRET, Some(&moved), BODY, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_told_apart() {
        for bad in [
            "",
            "t=1000",
            "v1=00",
            "t=x,v1=00",
            "t=1000,v1=zz",
            "garbage",
        ] {
            let e = verify(SECRET, Some(bad), BODY, 1_000, 300).unwrap_err();
            assert!(e.is_malformed(), "{bad}: {e:?}");
        }
        assert_eq!(
            verify(SECRET, None, BODY, 1_000, 300),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn one_matching_signature_of_several_is_enough() {
        let good = sign(SECRET, 1_000, BODY);
        let old = sign(b"the previous secret", 1_000, BODY);
        let both = format!("{old},{}", good.split(',').nth(1).unwrap());
        assert_eq!(verify(SECRET, Some(&both), BODY, 1_000, 300), Ok(()));
    }
}
