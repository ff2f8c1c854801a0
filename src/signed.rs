//! Signed text: a payload and its HMAC-SHA256 under a key, as one URL- and header-safe
//! string (`hex(payload).hex(mac)`). What the recording playback tickets
//! (`api::tickets`) and the inter-node credential (`cluster::token`) are made of; each
//! keeps its own fields, version and expiry rules inside the payload.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `payload` signed with `key`.
pub fn seal(key: &[u8], payload: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail; if it did, the text
    // would carry no MAC and never open.
    let tag = match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(payload.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("{}.{tag}", hex::encode(payload))
}

/// The payload of `text` if its MAC under `key` is right (compared in constant time);
/// `None` for anything else.
pub fn open(key: &[u8], text: &str) -> Option<String> {
    let (payload, tag) = text.trim().split_once('.')?;
    let payload = hex::decode(payload).ok()?;
    let tag = hex::decode(tag).ok()?;
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(&payload);
    m.verify_slice(&tag).ok()?;
    String::from_utf8(payload).ok()
}

/// A time as the payloads write it: Unix seconds.
pub fn unix_secs(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp()
}

/// A time written by [`unix_secs`], if `s` is one.
pub fn from_unix_secs(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(s.parse().ok()?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_key_opens_an_untouched_text() {
        let text = seal(b"key", "v1\nhello");
        assert_eq!(open(b"key", &text).as_deref(), Some("v1\nhello"));
        assert_eq!(open(b"other", &text), None);
        let mut tampered = text.clone().into_bytes();
        tampered[0] = if tampered[0] == b'7' { b'6' } else { b'7' };
        assert_eq!(open(b"key", &String::from_utf8(tampered).unwrap()), None);
        assert_eq!(open(b"key", "not a sealed text"), None);
        assert_eq!(open(b"key", "zz.zz"), None);
    }
}
