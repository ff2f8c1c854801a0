//! The inter-node credential: what a node sends with a request it forwards to another
//! node, and how the receiver checks it. Sans-IO: the caller gives the time.
//!
//! A token is `hex(payload) "." hex(HMAC-SHA256(key, payload))`, the payload
//! `v1 \n from node \n to node \n method \n path \n expiry (Unix seconds) \n
//! hex(SHA-256(body))`. It names the one request it was made for: the receiver recomputes
//! the MAC (constant-time), then checks that the request it got is that request (method,
//! path as sent, body) sent to it, and that the token has not expired. So a token read off
//! the wire cannot be used for another call, another node or another body, and not after
//! [`VALIDITY_SECS`]; the one request it names could be replayed within that time, which
//! does nothing new (a terminate or release of a call already ended answers 409; a listen
//! offer replayed needs the browser's DTLS key to ever hear anything; an unlisten of a
//! closed listener answers 404).
//!
//! The key is `HMAC-SHA256(cluster.secret, "sallyport inter-node request v1")` (or from
//! `security.pin_pepper` when the secret is empty), so every node configured alike shares
//! it and no other purpose does. Clocks of the nodes must agree within a few seconds (as
//! the CDR times of a cluster need anyway): a token more than [`VALIDITY_SECS`] old by the
//! receiver's clock is refused, and so is one from further in the future than twice that.

use sha2::{Digest, Sha256};

/// The request header that carries the token.
pub const HEADER: &str = "sallyport-node-token";
/// How long a token is valid after it was made.
pub const VALIDITY_SECS: i64 = 10;
const VERSION: &str = "v1";
const KEY_LABEL: &[u8] = b"sallyport inter-node request v1";

/// The one request a token is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The node that forwards it.
    pub from: &'a str,
    /// The node it is sent to.
    pub to: &'a str,
    /// `POST`, `DELETE`...
    pub method: &'a str,
    /// The path as sent (percent-encoded), without a query.
    pub path: &'a str,
    pub body: &'a [u8],
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the node credential is malformed or was not made with this cluster's secret")]
    Invalid,
    #[error("the node credential has expired (are the nodes' clocks in step?)")]
    Expired,
    #[error("the node credential was made for another request or another node")]
    OtherRequest,
}

/// The key of the tokens: from `secret` (`cluster.secret`, or the PIN pepper when it is
/// empty).
pub fn derive_key(secret: &str) -> [u8; 32] {
    crate::config::derive_key(secret.as_bytes(), KEY_LABEL, &[])
}

fn payload(r: &Request<'_>, expires_at: i64) -> String {
    let body = hex::encode(Sha256::digest(r.body));
    format!(
        "{VERSION}\n{}\n{}\n{}\n{}\n{expires_at}\n{body}",
        r.from, r.to, r.method, r.path
    )
}

/// A token for `r`, made at `now` (Unix seconds).
pub fn issue(key: &[u8], r: &Request<'_>, now: i64) -> String {
    let payload = payload(r, now.saturating_add(VALIDITY_SECS));
    crate::signed::seal(key, &payload)
}

/// Checks `token` against the request received (`got.to` is this node) at `now` (Unix
/// seconds); the node that sent it.
pub fn verify(key: &[u8], token: &str, got: &Request<'_>, now: i64) -> Result<String, TokenError> {
    // The MAC is compared in constant time.
    let payload = crate::signed::open(key, token).ok_or(TokenError::Invalid)?;
    let fields: Vec<&str> = payload.split('\n').collect();
    let &[version, from, _, _, _, expires, _] = fields.as_slice() else {
        return Err(TokenError::Invalid);
    };
    if version != VERSION {
        return Err(TokenError::Invalid);
    }
    let expires_at: i64 = expires.parse().map_err(|_| TokenError::Invalid)?;
    let expected = payload_of(got, from, expires_at);
    if payload != expected {
        return Err(TokenError::OtherRequest);
    }
    if now > expires_at {
        return Err(TokenError::Expired);
    }
    if expires_at > now.saturating_add(2 * VALIDITY_SECS) {
        // Made by a clock far ahead of this one: it would stay valid too long here.
        return Err(TokenError::Expired);
    }
    Ok(from.to_string())
}

/// The payload the request `got`, sent by `from`, would have.
fn payload_of(got: &Request<'_>, from: &str, expires_at: i64) -> String {
    payload(&Request { from, ..*got }, expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn request(body: &[u8]) -> Request<'_> {
        Request {
            from: "node-b",
            to: "node-a",
            method: "POST",
            path: "/api/v1/cluster/calls/c1/terminate",
            body,
        }
    }

    #[test]
    fn a_token_opens_for_its_request_until_it_expires() {
        let key = derive_key("cluster-secret-0123456789");
        let r = request(b"{}");
        let t = issue(&key, &r, NOW);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'));
        assert_eq!(verify(&key, &t, &r, NOW), Ok("node-b".to_string()));
        assert_eq!(
            verify(&key, &t, &r, NOW + VALIDITY_SECS),
            Ok("node-b".to_string())
        );
        assert_eq!(
            verify(&key, &t, &r, NOW + VALIDITY_SECS + 1),
            Err(TokenError::Expired)
        );
        // From a clock far ahead: refused too.
        let ahead = issue(&key, &r, NOW + 3 * VALIDITY_SECS);
        assert_eq!(verify(&key, &ahead, &r, NOW), Err(TokenError::Expired));
    }

    #[test]
    fn another_secret_is_refused() {
        let r = request(b"{}");
        let t = issue(&derive_key("cluster-secret-0123456789"), &r, NOW);
        let other = derive_key("another-secret-0123456789");
        assert_eq!(verify(&other, &t, &r, NOW), Err(TokenError::Invalid));
        assert_ne!(
            derive_key("cluster-secret-0123456789"),
            crate::config::derive_key(b"cluster-secret-0123456789", b"", &[]),
            "the label keeps the key apart from other keys of the same secret"
        );
    }

    #[test]
    fn tampering_or_another_request_is_refused() {
        let key = derive_key("cluster-secret-0123456789");
        let r = request(b"{\"sdp\":\"a\"}");
        let t = issue(&key, &r, NOW);
        // Another body, path, method, target node: the token names one request.
        let others = [
            Request {
                body: b"{\"sdp\":\"b\"}",
                ..r
            },
            Request {
                path: "/api/v1/cluster/calls/c2/terminate",
                ..r
            },
            Request {
                method: "DELETE",
                ..r
            },
            Request { to: "node-c", ..r },
        ];
        for other in others {
            assert_eq!(
                verify(&key, &t, &other, NOW),
                Err(TokenError::OtherRequest),
                "{other:?}"
            );
        }
        // A payload rewritten (a later expiry) under the old MAC.
        let (_, tag) = t.split_once('.').unwrap();
        let forged = issue(&key, &r, NOW + 5);
        let (payload, _) = forged.split_once('.').unwrap();
        assert_eq!(
            verify(&key, &format!("{payload}.{tag}"), &r, NOW),
            Err(TokenError::Invalid)
        );
        // One bit of the MAC flipped.
        let mut bytes = t.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(verify(&key, &flipped, &r, NOW), Err(TokenError::Invalid));
        for junk in ["", ".", "zz.zz", "00", "00.00", &t[..t.len() / 2]] {
            assert_eq!(
                verify(&key, junk, &r, NOW),
                Err(TokenError::Invalid),
                "{junk}"
            );
        }
    }
}
