//! Throws arbitrary Authorization values at the digest verifier: it must
//! never panic and never accept credentials it did not compute a match for.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sallyport::sip::auth::{digest_ha1, DigestAuth};

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    let auth = DigestAuth::new("fuzz.example", b"secret".to_vec(), 300);
    let lookup = |user: &str| Some(digest_ha1(user, "fuzz.example", "pw"));
    // Without a nonce we issued, nothing may verify.
    assert!(auth.verify(Some(&value), "INVITE", 1_000, lookup).is_err());
});
