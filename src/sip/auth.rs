//! SIP digest authentication for handsets (RFC 3261 §22, RFC 2617 digest
//! with MD5 as RFC 8760 keeps it, `qop=auth` and the legacy no-qop form).
//!
//! **Credentials.** The record store keeps HA1 = hex(MD5("user:realm:password"))
//! per device, never the password; [`digest_ha1`] computes it.
//!
//! **Stateless nonces.** A nonce is hex(issued_at ‖ salt ‖ HMAC-SHA256(secret,
//! issued_at ‖ salt ‖ realm)[..16]): 8 bytes of big-endian seconds, 8 random
//! bytes, 16 bytes of MAC, 64 hex characters. Any node of a cluster sharing
//! the secret verifies any other node's nonce by recomputing the MAC, so no
//! nonce table is shared. The price: `nc` replay counting needs state, so a
//! captured request can be replayed until its nonce expires; keep the
//! lifetime short (minutes) and rely on the transaction layer to absorb
//! retransmissions. The clock is never read: `now` (seconds since the epoch)
//! is an argument.
//!
//! **Two steps for an async store.** [`DigestAuth::credentials`] parses the
//! Authorization value and checks realm and nonce integrity; the driver then
//! fetches HA1 for `username` (from the database, asynchronously) and
//! [`DigestAuth::check`] finishes. [`DigestAuth::verify`] does both with a
//! synchronous lookup closure.
//!
//! **Outcomes.** [`AuthError::status`] maps each failure to 400 or 401;
//! [`DigestAuth::challenge_for`] builds the next challenge with `stale=true`
//! when only the nonce had expired (RFC 2617 §3.2.1: only when the digest was
//! right). Unknown user and wrong password are distinct variants for logs and
//! lockout policy, but answer the same 401 so the handset learns nothing;
//! turning repeated failures into 403 is the call layer's policy. The digest
//! is compared in constant time, and a digest is computed even for an
//! unknown user so timing does not reveal which usernames exist.

use std::fmt;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::header::write_quoted;
use super::typed::AuthParams;

/// Nonce lifetime used by the free [`verify`] function: 5 minutes.
pub const DEFAULT_NONCE_LIFETIME: u64 = 300;
/// How far in the future a nonce's issue time may lie (clock skew between nodes).
const MAX_SKEW: u64 = 60;
const SALT_LEN: usize = 8;
const MAC_LEN: usize = 16;
const NONCE_BYTES: usize = 8 + SALT_LEN + MAC_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No Authorization header: answer 401 with a challenge.
    #[error("no credentials")]
    Missing,
    /// The Authorization value does not follow the grammar: 400.
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// Not the Digest scheme.
    #[error("unsupported authentication scheme")]
    UnsupportedScheme,
    /// An algorithm other than MD5.
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// A qop other than `auth`.
    #[error("unsupported qop")]
    UnsupportedQop,
    /// Credentials for another realm.
    #[error("wrong realm")]
    WrongRealm,
    /// The nonce was not issued by us (tampered, foreign, future-dated).
    #[error("invalid nonce")]
    InvalidNonce,
    /// Right digest, expired nonce: challenge again with `stale=true`.
    #[error("stale nonce")]
    Stale,
    /// No credentials stored for this username.
    #[error("unknown user")]
    UnknownUser,
    /// The digest does not match (wrong password).
    #[error("wrong digest response")]
    WrongResponse,
}

impl AuthError {
    /// 400 for malformed credentials, 401 (with a fresh challenge) otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Malformed(_) => 400,
            _ => 401,
        }
    }

    /// True when the next challenge should carry `stale=true`.
    pub fn is_stale(&self) -> bool {
        *self == AuthError::Stale
    }
}

/// HA1 = hex(MD5("username:realm:password")), the stored credential.
pub fn digest_ha1(username: &str, realm: &str, password: &str) -> String {
    md5_hex(&[username, realm, password])
}

/// hex(MD5(parts joined by ':')).
fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The `qop=auth` inputs a client adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QopAuth<'a> {
    /// Nonce count, 8 hex digits as sent.
    pub nc: &'a str,
    /// Client nonce.
    pub cnonce: &'a str,
}

/// The expected `response` (RFC 2617 §3.2.2.1): with `qop=auth`
/// MD5(HA1:nonce:nc:cnonce:auth:HA2), without qop MD5(HA1:nonce:HA2), where
/// HA2 = MD5(method:digest-uri).
pub fn digest_response(
    ha1: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<QopAuth<'_>>,
) -> String {
    let ha2 = md5_hex(&[method, uri]);
    match qop {
        Some(q) => md5_hex(&[ha1, nonce, q.nc, q.cnonce, "auth", &ha2]),
        None => md5_hex(&[ha1, nonce, &ha2]),
    }
}

/// A `WWW-Authenticate` challenge; `Display` writes the header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection realm (the facility's SIP domain).
    pub realm: String,
    /// Stateless nonce (see module doc).
    pub nonce: String,
    /// Set when re-challenging after an expired nonce.
    pub stale: bool,
}

impl Challenge {
    /// A fresh challenge with a random salt.
    pub fn new(realm: &str, secret: &[u8], now: u64) -> Challenge {
        Challenge::with_salt(realm, secret, now, rand::random())
    }

    /// A challenge with a given salt (deterministic, for tests).
    pub fn with_salt(realm: &str, secret: &[u8], now: u64, salt: [u8; SALT_LEN]) -> Challenge {
        Challenge {
            realm: realm.to_owned(),
            nonce: make_nonce(realm, secret, now, salt),
            stale: false,
        }
    }

    /// Marks the challenge `stale=true`.
    pub fn stale(mut self) -> Challenge {
        self.stale = true;
        self
    }

    /// The `WWW-Authenticate` header value.
    pub fn header_value(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        write!(f, ", nonce=\"{}\", algorithm=MD5, qop=\"auth\"", self.nonce)?;
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

fn make_nonce(realm: &str, secret: &[u8], issued_at: u64, salt: [u8; SALT_LEN]) -> String {
    let time = issued_at.to_be_bytes();
    // HMAC takes keys of any length; should it ever refuse, the zero MAC
    // fails verification (fail closed) since verification refuses too.
    let mac = nonce_mac(secret, &time, &salt, realm).unwrap_or([0; MAC_LEN]);
    let mut raw = Vec::with_capacity(NONCE_BYTES);
    raw.extend_from_slice(&time);
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(&mac);
    hex::encode(raw)
}

fn nonce_mac(secret: &[u8], time: &[u8], salt: &[u8], realm: &str) -> Option<[u8; MAC_LEN]> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).ok()?;
    mac.update(time);
    mac.update(salt);
    mac.update(realm.as_bytes());
    let full = mac.finalize().into_bytes();
    full.get(..MAC_LEN)?.try_into().ok()
}

/// Checks a nonce's MAC; returns its issue time.
fn open_nonce(nonce: &str, realm: &str, secret: &[u8]) -> Result<u64, AuthError> {
    let raw = hex::decode(nonce).map_err(|_| AuthError::InvalidNonce)?;
    if raw.len() != NONCE_BYTES {
        return Err(AuthError::InvalidNonce);
    }
    let (time, rest) = raw.split_at(8);
    let (salt, mac) = rest.split_at(SALT_LEN);
    let expected = nonce_mac(secret, time, salt, realm).ok_or(AuthError::InvalidNonce)?;
    if !bool::from(expected.ct_eq(mac)) {
        return Err(AuthError::InvalidNonce);
    }
    let time: [u8; 8] = time.try_into().map_err(|_| AuthError::InvalidNonce)?;
    Ok(u64::from_be_bytes(time))
}

/// Parsed `Authorization: Digest …` credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// Device username.
    pub username: String,
    /// Realm the client answered.
    pub realm: String,
    /// Nonce the client answered.
    pub nonce: String,
    /// digest-uri the client hashed.
    pub uri: String,
    /// Client's digest, lowercased hex.
    pub response: String,
    /// `Some((nc, cnonce))` with `qop=auth`, `None` for the legacy form.
    pub qop: Option<(String, String)>,
    /// Nonce issue time, filled by [`DigestAuth::credentials`].
    pub issued_at: u64,
}

impl DigestCredentials {
    /// Parses an Authorization (or Proxy-Authorization) value.
    pub fn parse(value: &str) -> Result<DigestCredentials, AuthError> {
        let p = AuthParams::parse(value, "Authorization")
            .map_err(|_| AuthError::Malformed("syntax"))?;
        if !p.scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::UnsupportedScheme);
        }
        if p.get("algorithm")
            .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
        {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let need = |name: &'static str| {
            p.get(name)
                .map(str::to_owned)
                .ok_or(AuthError::Malformed(name))
        };
        let response = need("response")?.to_ascii_lowercase();
        if response.len() != 32 || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Malformed("response"));
        }
        Ok(DigestCredentials {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response,
            qop: parse_qop(&p)?,
            issued_at: 0,
        })
    }
}

fn parse_qop(p: &AuthParams) -> Result<Option<(String, String)>, AuthError> {
    let Some(qop) = p.get("qop") else {
        return Ok(None);
    };
    if !qop.eq_ignore_ascii_case("auth") {
        return Err(AuthError::UnsupportedQop);
    }
    let nc = p.get("nc").ok_or(AuthError::Malformed("nc"))?;
    if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed("nc"));
    }
    let cnonce = p
        .get("cnonce")
        .filter(|c| !c.is_empty())
        .ok_or(AuthError::Malformed("cnonce"))?;
    Ok(Some((nc.to_owned(), cnonce.to_owned())))
}

/// A device whose digest checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    /// The authenticated username (device id).
    pub username: String,
    /// The realm.
    pub realm: String,
    /// The digest-uri the client signed; the caller may compare it with the
    /// Request-URI.
    pub digest_uri: String,
}

/// The digest verifier of one realm: realm, cluster-wide nonce secret and
/// nonce lifetime.
#[derive(Clone)]
pub struct DigestAuth {
    realm: String,
    secret: Vec<u8>,
    nonce_lifetime: u64,
}

impl fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestAuth")
            .field("realm", &self.realm)
            .field("secret", &"<redacted>")
            .field("nonce_lifetime", &self.nonce_lifetime)
            .finish()
    }
}

impl DigestAuth {
    /// A verifier for `realm`; `secret` must be the same on every node.
    pub fn new(
        realm: impl Into<String>,
        secret: impl Into<Vec<u8>>,
        nonce_lifetime_secs: u64,
    ) -> Self {
        DigestAuth {
            realm: realm.into(),
            secret: secret.into(),
            nonce_lifetime: nonce_lifetime_secs,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A fresh challenge.
    pub fn challenge(&self, now: u64) -> Challenge {
        Challenge::new(&self.realm, &self.secret, now)
    }

    /// The challenge that answers `error`: `stale=true` after [`AuthError::Stale`].
    pub fn challenge_for(&self, error: &AuthError, now: u64) -> Challenge {
        let c = self.challenge(now);
        if error.is_stale() {
            c.stale()
        } else {
            c
        }
    }

    /// Step one: parse credentials, check realm and that we issued the nonce.
    pub fn credentials(
        &self,
        authorization: Option<&str>,
        now: u64,
    ) -> Result<DigestCredentials, AuthError> {
        let mut creds = DigestCredentials::parse(authorization.ok_or(AuthError::Missing)?)?;
        if creds.realm != self.realm {
            return Err(AuthError::WrongRealm);
        }
        creds.issued_at = open_nonce(&creds.nonce, &self.realm, &self.secret)?;
        if creds.issued_at > now.saturating_add(MAX_SKEW) {
            return Err(AuthError::InvalidNonce);
        }
        Ok(creds)
    }

    /// Step two: compare the digest against the stored HA1 (`None`: no such
    /// user), then the nonce's age.
    pub fn check(
        &self,
        creds: &DigestCredentials,
        method: &str,
        ha1: Option<&str>,
        now: u64,
    ) -> Result<VerifiedUser, AuthError> {
        const DUMMY_HA1: &str = "00000000000000000000000000000000";
        let ha1_lower = ha1.unwrap_or(DUMMY_HA1).to_ascii_lowercase();
        let qop = creds
            .qop
            .as_ref()
            .map(|(nc, cnonce)| QopAuth { nc, cnonce });
        let expected = digest_response(&ha1_lower, &creds.nonce, method, &creds.uri, qop);
        let matches = bool::from(expected.as_bytes().ct_eq(creds.response.as_bytes()));
        if ha1.is_none() {
            return Err(AuthError::UnknownUser);
        }
        if !matches {
            return Err(AuthError::WrongResponse);
        }
        if now.saturating_sub(creds.issued_at) > self.nonce_lifetime {
            return Err(AuthError::Stale);
        }
        Ok(VerifiedUser {
            username: creds.username.clone(),
            realm: creds.realm.clone(),
            digest_uri: creds.uri.clone(),
        })
    }

    /// Both steps with a synchronous HA1 lookup by username.
    pub fn verify<F>(
        &self,
        authorization: Option<&str>,
        method: &str,
        now: u64,
        ha1_lookup: F,
    ) -> Result<VerifiedUser, AuthError>
    where
        F: FnOnce(&str) -> Option<String>,
    {
        let creds = self.credentials(authorization, now)?;
        let ha1 = ha1_lookup(&creds.username);
        self.check(&creds, method, ha1.as_deref(), now)
    }
}

/// One-call verification with [`DEFAULT_NONCE_LIFETIME`]; see [`DigestAuth`]
/// for a configured lifetime and the two-step form.
pub fn verify<F>(
    authorization: Option<&str>,
    method: &str,
    expected_realm: &str,
    ha1_lookup: F,
    secret: &[u8],
    now: u64,
) -> Result<VerifiedUser, AuthError>
where
    F: FnOnce(&str) -> Option<String>,
{
    DigestAuth::new(expected_realm, secret, DEFAULT_NONCE_LIFETIME).verify(
        authorization,
        method,
        now,
        ha1_lookup,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"cluster-secret";
    const REALM: &str = "facility.example";
    const T0: u64 = 1_700_000_000;

    /// RFC 2617 §3.5.
    #[test]
    fn rfc2617_example() {
        let ha1 = digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let qop = QopAuth {
            nc: "00000001",
            cnonce: "0a4f113b",
        };
        let r = digest_response(
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "GET",
            "/dir/index.html",
            Some(qop),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    fn authorization(nonce: &str, password: &str, qop: bool) -> String {
        let ha1 = digest_ha1("phone17", REALM, password);
        let uri = "sip:5551234@facility.example";
        if qop {
            let q = QopAuth {
                nc: "00000001",
                cnonce: "abc",
            };
            let r = digest_response(&ha1, nonce, "INVITE", uri, Some(q));
            format!(
                r#"Digest username="phone17", realm="{REALM}", nonce="{nonce}", uri="{uri}", response="{r}", qop=auth, nc=00000001, cnonce="abc", algorithm=MD5"#
            )
        } else {
            let r = digest_response(&ha1, nonce, "INVITE", uri, None);
            format!(
                r#"Digest username="phone17",realm="{REALM}",nonce="{nonce}",uri="{uri}",response="{r}""#
            )
        }
    }

    fn lookup(user: &str) -> Option<String> {
        (user == "phone17").then(|| digest_ha1("phone17", REALM, "s3cret"))
    }

    fn auth() -> DigestAuth {
        DigestAuth::new(REALM, SECRET, 300)
    }

    #[test]
    fn challenge_and_verify_both_forms() {
        let c = auth().challenge(T0);
        assert!(c
            .to_string()
            .starts_with(r#"Digest realm="facility.example", nonce=""#));
        assert!(c.to_string().ends_with(r#"algorithm=MD5, qop="auth""#));
        for qop in [true, false] {
            let h = authorization(&c.nonce, "s3cret", qop);
            let u = auth().verify(Some(&h), "INVITE", T0 + 10, lookup).unwrap();
            assert_eq!(u.username, "phone17");
        }
        let h = authorization(&c.nonce, "s3cret", true);
        let other_node = verify(Some(&h), "INVITE", REALM, lookup, SECRET, T0 + 299);
        assert!(other_node.is_ok());
    }

    #[test]
    fn failures_are_distinguished() {
        let a = auth();
        let nonce = a.challenge(T0).nonce;
        let v = |h: &str, now| a.verify(Some(h), "INVITE", now, lookup);
        assert_eq!(
            v(&authorization(&nonce, "wrong", true), T0),
            Err(AuthError::WrongResponse)
        );
        assert_eq!(
            a.verify(None, "INVITE", T0, lookup),
            Err(AuthError::Missing)
        );
        let stale = v(&authorization(&nonce, "s3cret", true), T0 + 301);
        assert_eq!(stale, Err(AuthError::Stale));
        assert!(a
            .challenge_for(&AuthError::Stale, T0)
            .to_string()
            .ends_with("stale=true"));
        assert_eq!(
            v(&authorization(&nonce, "wrong", true), T0 + 301),
            Err(AuthError::WrongResponse)
        );
        let mut tampered = nonce.clone().into_bytes();
        tampered[3] = if tampered[3] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            v(&authorization(&tampered, "s3cret", true), T0),
            Err(AuthError::InvalidNonce)
        );
        let h = authorization(&nonce, "s3cret", true);
        assert_eq!(
            a.verify(Some(&h), "INVITE", T0, |_| None),
            Err(AuthError::UnknownUser)
        );
        let other_realm = DigestAuth::new("other", SECRET, 300);
        assert_eq!(
            other_realm.verify(Some(&h), "INVITE", T0, lookup),
            Err(AuthError::WrongRealm)
        );
        let wrong_secret = DigestAuth::new(REALM, b"x".to_vec(), 300);
        assert_eq!(
            wrong_secret.verify(Some(&h), "INVITE", T0, lookup),
            Err(AuthError::InvalidNonce)
        );
        assert_eq!(v(&h, T0 - 1000), Err(AuthError::InvalidNonce));
    }

    #[test]
    fn malformed_credentials() {
        let a = auth();
        let cases = [
            ("", AuthError::Malformed("syntax")),
            ("Basic dXNlcjpwYXNz", AuthError::Malformed("syntax")),
            ("Basic realm=x", AuthError::UnsupportedScheme),
            (r#"Digest username="u""#, AuthError::Malformed("response")),
            (
                r#"Digest username="u", response="zz""#,
                AuthError::Malformed("response"),
            ),
            (
                r#"Digest algorithm=SHA-256"#,
                AuthError::UnsupportedAlgorithm,
            ),
            (
                r#"Digest qop=auth-int, username="u", realm="r", nonce="n", uri="u", response="6629fae49393a05397450978507c4ef1""#,
                AuthError::UnsupportedQop,
            ),
            (
                r#"Digest qop=auth, nc=1, username="u", realm="r", nonce="n", uri="u", response="6629fae49393a05397450978507c4ef1""#,
                AuthError::Malformed("nc"),
            ),
            (
                r#"Digest username="u", username="v""#,
                AuthError::Malformed("syntax"),
            ),
            ("Digest username=\"u", AuthError::Malformed("syntax")),
        ];
        for (h, want) in cases {
            assert_eq!(
                a.verify(Some(h), "INVITE", T0, lookup),
                Err(want.clone()),
                "{h}"
            );
            assert_eq!(
                want.status() == 400,
                matches!(want, AuthError::Malformed(_))
            );
        }
    }

    #[test]
    fn challenge_parses_back() {
        let c = Challenge::with_salt("a \"quoted\" realm", SECRET, T0, [7; 8]).stale();
        let p = AuthParams::parse(&c.header_value(), "WWW-Authenticate").unwrap();
        assert_eq!(p.get("realm"), Some("a \"quoted\" realm"));
        assert_eq!(p.get("nonce"), Some(c.nonce.as_str()));
        assert_eq!(p.get("stale"), Some("true"));
        assert_eq!(c.nonce.len(), 2 * NONCE_BYTES);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_credentials_never_verify(tail in ".{0,200}", digest in proptest::bool::ANY) {
            let value = if digest { format!("Digest {tail}") } else { tail };
            let r = auth().verify(Some(&value), "INVITE", T0, lookup);
            proptest::prop_assert!(r.is_err());
        }
    }
}
