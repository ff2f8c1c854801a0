//! Recording tickets: short-lived capabilities that let an `<audio src>` (which cannot send
//! an `Authorization` header) fetch one recording's audio.
//!
//! A ticket is `hex(payload) "." hex(HMAC-SHA256(key, payload))` where the payload is
//! `v2 \n recording id \n purpose \n expiry (Unix seconds) \n token \n subject`. Nothing
//! is stored: any node verifies a ticket by recomputing the MAC. The key is
//! `HMAC-SHA256(http.ticket_secret, "sallyport recording ticket v1")`, so every node
//! configured alike shares it; when `http.ticket_secret` is empty it is derived from
//! `security.pin_pepper` instead (the label keeps it apart from every other key derived
//! from that secret; `serve` warns about it).
//!
//! `token` binds the ticket to the bearer token that asked for it: the token's SHA-256
//! (what `api_tokens` stores; the token itself cannot be recovered from it), or
//! [`admin_ref`] for the configured admin token. Issuing a ticket is where access is
//! checked and audited (`recording.play`, `recording.download`); a fetch with it checks
//! the ticket, then that the token still exists (not logged out, not expired) and that its
//! user still may reach the recording (role, facility), as a bearer fetch would.

use crate::config::Config;

const VERSION: &str = "v2";
const ADMIN_LABEL: &[u8] = b"sallyport ticket admin token";
const KEY_LABEL: &[u8] = b"sallyport recording ticket v1";

/// What a ticket allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Inline playback (`<audio>`), with range requests.
    Play,
    /// A download: the answer carries `Content-Disposition: attachment`.
    Download,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Play => "play",
            Purpose::Download => "download",
        }
    }

    fn parse(s: &str) -> Option<Purpose> {
        match s {
            "play" => Some(Purpose::Play),
            "download" => Some(Purpose::Download),
            _ => None,
        }
    }
}

/// The facts a ticket carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub recording_id: String,
    pub purpose: Purpose,
    /// Unix seconds after which the ticket is refused.
    pub expires_at: i64,
    /// The bearer token it was issued to: its SHA-256 (hex), or [`admin_ref`].
    pub token: String,
    /// Who it was issued to (for the logs).
    pub subject: String,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the ticket is malformed or was not issued by this gateway")]
    Invalid,
    #[error("the ticket has expired")]
    Expired,
}

/// The ticket key for this configuration: from `http.ticket_secret`, or (empty) from
/// `security.pin_pepper`.
pub fn derive_key(config: &Config) -> [u8; 32] {
    crate::config::derive_key(capability_secret(config).as_bytes(), KEY_LABEL, &[])
}

/// The key of video visits' participant passes ([`crate::visit::pass`]): the same secret
/// as the tickets', under the passes' own label, so neither opens as the other.
pub fn derive_pass_key(config: &Config) -> [u8; 32] {
    let label = crate::visit::pass::KEY_LABEL;
    crate::config::derive_key(capability_secret(config).as_bytes(), label, &[])
}

/// The key of kiosk sittings ([`crate::kiosk`]): the same secret, under their own label.
pub fn derive_sitting_key(config: &Config) -> [u8; 32] {
    let label = crate::kiosk::KEY_LABEL;
    crate::config::derive_key(capability_secret(config).as_bytes(), label, &[])
}

/// What the capabilities nodes check without the database are keyed from:
/// `http.ticket_secret`, or (empty) `security.pin_pepper`.
fn capability_secret(config: &Config) -> &str {
    match config.http.ticket_secret.as_str() {
        "" => &config.security.pin_pepper,
        s => s,
    }
}

/// What a ticket names the configured admin token by: a MAC of its hash (not the hash
/// itself, since a configured token may be guessable), prefixed `admin:`. A ticket of an
/// admin token that was changed since no longer matches.
pub fn admin_ref(key: &[u8], admin_token_hash: &[u8]) -> String {
    let tag = crate::config::derive_key(key, ADMIN_LABEL, admin_token_hash);
    format!("admin:{}", hex::encode(&tag[..16]))
}

/// The ticket's text (URL-safe: hex digits and one dot).
pub fn issue(key: &[u8], t: &Ticket) -> String {
    let payload = format!(
        "{VERSION}\n{}\n{}\n{}\n{}\n{}",
        t.recording_id,
        t.purpose.as_str(),
        t.expires_at,
        t.token,
        t.subject
    );
    crate::signed::seal(key, &payload)
}

/// Checks a ticket's MAC and expiry (`now` in Unix seconds) and returns its facts.
pub fn open(key: &[u8], text: &str, now: i64) -> Result<Ticket, TicketError> {
    let payload = crate::signed::open(key, text).ok_or(TicketError::Invalid)?;
    let mut parts = payload.splitn(6, '\n');
    let mut next = || parts.next().ok_or(TicketError::Invalid);
    if next()? != VERSION {
        return Err(TicketError::Invalid);
    }
    let recording_id = next()?.to_string();
    let purpose = Purpose::parse(next()?).ok_or(TicketError::Invalid)?;
    let expires_at: i64 = next()?.parse().map_err(|_| TicketError::Invalid)?;
    let token = next()?.to_string();
    let subject = next()?.to_string();
    if now > expires_at {
        return Err(TicketError::Expired);
    }
    Ok(Ticket {
        recording_id,
        purpose,
        expires_at,
        token,
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            recording_id: "rec_1".into(),
            purpose: Purpose::Play,
            expires_at: 1_000,
            token: "ab".repeat(32),
            subject: "inv".into(),
        }
    }

    #[test]
    fn a_ticket_opens_with_its_key_until_it_expires() {
        let key = [7u8; 32];
        let text = issue(&key, &ticket());
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'));
        assert_eq!(open(&key, &text, 1_000), Ok(ticket()));
        assert_eq!(open(&key, &text, 1_001), Err(TicketError::Expired));
        assert_eq!(open(&[8u8; 32], &text, 0), Err(TicketError::Invalid));
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let key = [7u8; 32];
        let text = issue(&key, &ticket());
        let mut forged = ticket();
        forged.recording_id = "rec_2".into();
        let (_, tag) = text.split_once('.').unwrap();
        let (payload, _) = issue(&key, &forged)
            .split_once('.')
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .unwrap();
        assert_eq!(
            open(&key, &format!("{payload}.{tag}"), 0),
            Err(TicketError::Invalid)
        );
        let mut bytes = text.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(open(&key, &flipped, 0), Err(TicketError::Invalid));
        for junk in ["", ".", "zz.zz", "00", "00.00"] {
            assert_eq!(open(&key, junk, 0), Err(TicketError::Invalid), "{junk}");
        }
    }

    #[test]
    fn nodes_configured_alike_share_the_key_and_it_is_not_the_pepper() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(derive_key(&a), derive_key(&b));
        b.security.pin_pepper = "another-pepper-0123456789".into();
        assert_ne!(derive_key(&a), derive_key(&b));
    }

    #[test]
    fn the_pass_key_is_not_the_ticket_key() {
        let c = Config::default();
        assert_ne!(derive_pass_key(&c), derive_key(&c));
    }

    #[test]
    fn a_ticket_secret_replaces_the_pepper() {
        let mut a = Config::default();
        a.security.pin_pepper = "pepper-0123456789".into();
        let from_pepper = derive_key(&a);
        a.http.ticket_secret = "ticket-secret-0123456789".into();
        let from_secret = derive_key(&a);
        assert_ne!(from_secret, from_pepper);
        a.security.pin_pepper = "another-pepper-0123456789".into();
        assert_eq!(derive_key(&a), from_secret, "the pepper no longer matters");
    }

    #[test]
    fn the_admin_reference_follows_the_admin_token() {
        let key = [7u8; 32];
        let a = admin_ref(&key, b"hash-a");
        assert!(a.starts_with("admin:") && !a.contains("hash-a"), "{a}");
        assert_eq!(a, admin_ref(&key, b"hash-a"));
        assert_ne!(a, admin_ref(&key, b"hash-b"));
    }
}
