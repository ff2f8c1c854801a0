//! Who may place a call: the first step of the call flow in `docs/behaviour.md`. A handset
//! INVITE is admitted when it comes from a facility's trusted network and names (in its
//! From user) a handset of that facility, or
//! when it proves a handset's per-device digest credentials (RFC 3261 §22, stateless
//! nonces from [`DigestAuth`], so any node of a cluster can verify any other's challenge).
//! Everything else is challenged (401) or refused (403).
//!
//! A trusted network admits **provisioned handsets only**, without a password: an unknown
//! From user gets 403 even there. A handset names the facility the call belongs to and is
//! a key the PIN lockout counts by, so an unregistered phone on the network is no inmate
//! phone. (The lockout also counts the source address, so inventing From users of real
//! handsets gains no guesses.)

use crate::sip::auth::DigestAuth;
use crate::sip::message::Request;
use crate::sip::uri::Uri;
use crate::store::{Store, StoreError};
use std::net::IpAddr;

/// The verdict on one handset INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The call may proceed, for this facility and handset.
    Admitted {
        facility_id: String,
        handset_id: String,
    },
    /// Answer 401 with this `WWW-Authenticate` value; `failed` when credentials were
    /// given and did not verify (not the first step of digest, nor a stale nonce).
    Challenge {
        www_authenticate: String,
        failed: bool,
    },
    /// Answer with this status (403 for a handset we do not know on a trusted network).
    Refused { status: u16, reason: &'static str },
}

/// The user part of the request's From URI.
/// The address a handset's request is admitted by: `source`, unless `source` is one of
/// the `trusted_proxies` (CIDRs). Then it is the hop before the proxy: the second Via's
/// `received` (what the proxy saw), else its sent-by when that is an address; a request
/// from a trusted proxy that names no such hop is admitted by the proxy's address (which
/// is not on a handset network). A proxy not trusted cannot name an address: a Via is
/// what any sender may write.
pub fn handset_address<'a>(
    req: &Request,
    source: IpAddr,
    trusted_proxies: impl IntoIterator<Item = &'a str>,
) -> IpAddr {
    if !trusted_proxies
        .into_iter()
        .any(|c| crate::policy::net::cidr_contains(c, source))
    {
        return source;
    }
    let Some(hop) = req
        .headers
        .list("Via")
        .nth(1)
        .and_then(|v| crate::sip::typed::Via::parse(v).ok())
    else {
        return source;
    };
    if let Some(Some(received)) = hop.params.get("received") {
        if let Ok(ip) = received.trim_matches(|c| c == '[' || c == ']').parse() {
            return ip;
        }
    }
    match hop.host {
        crate::sip::uri::Host::V4(ip) => IpAddr::V4(ip),
        crate::sip::uri::Host::V6(ip) => IpAddr::V6(ip),
        crate::sip::uri::Host::Domain(_) => source,
    }
}

fn from_user(req: &Request) -> Option<String> {
    match req.headers.from().ok()?.uri {
        Uri::Sip(u) => u.user,
        _ => None,
    }
}

/// Decides whether `req`, received from `source`, may place a call. `now_secs` is Unix
/// time in seconds (for nonces).
pub async fn admit(
    store: &Store,
    auth: &DigestAuth,
    req: &Request,
    source: IpAddr,
    now_secs: u64,
) -> Result<Admission, StoreError> {
    let user = from_user(req);
    // The trusted network and the handset: one statement.
    if let Some((facility_id, handset)) = store.trusted_handset(source, user.as_deref()).await? {
        return Ok(match handset {
            Some(h) if h.facility_id == facility_id => Admission::Admitted {
                facility_id,
                handset_id: h.id,
            },
            _ => Admission::Refused {
                status: 403,
                reason: "Unknown handset",
            },
        });
    }
    let header = req.headers.get("Authorization");
    let creds = match auth.credentials(header, now_secs) {
        Ok(c) => c,
        Err(e) => return Ok(challenge(auth, &e, now_secs)),
    };
    let handset = store.handset_by_username(&creds.username).await?;
    let ha1 = handset.as_ref().and_then(|(_, ha1)| ha1.as_deref());
    match auth.check(&creds, req.method.as_str(), ha1, now_secs) {
        Ok(_) => match handset {
            Some((h, _)) => Ok(Admission::Admitted {
                facility_id: h.facility_id,
                handset_id: h.id,
            }),
            None => Ok(challenge(
                auth,
                &crate::sip::auth::AuthError::UnknownUser,
                now_secs,
            )),
        },
        Err(e) => {
            tracing::warn!(%source, "handset digest authentication failed: {e}");
            Ok(challenge(auth, &e, now_secs))
        }
    }
}

fn challenge(auth: &DigestAuth, e: &crate::sip::auth::AuthError, now_secs: u64) -> Admission {
    use crate::sip::auth::AuthError;
    Admission::Challenge {
        www_authenticate: auth.challenge_for(e, now_secs).header_value(),
        failed: !matches!(e, AuthError::Missing | AuthError::Stale),
    }
}

#[cfg(test)]
mod address_tests {
    use super::handset_address;
    use crate::sip::message::Request;
    use std::net::IpAddr;

    fn invite(vias: &str) -> Request {
        let text = format!(
            "INVITE sip:5551230001@gw SIP/2.0\r\n{vias}From: <sip:h1@gw>;tag=a\r\n\
             To: <sip:5551230001@gw>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
             Max-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
        );
        match crate::sip::parse::parse_datagram(text.as_bytes()).unwrap() {
            crate::sip::message::SipMessage::Request(r) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const TWO_HOPS: &str = "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKp1\r\n\
        Via: SIP/2.0/UDP 192.168.7.20:5062;branch=z9hG4bKh1;rport=5062;received=10.20.0.9\r\n";

    #[test]
    fn a_trusted_proxy_names_the_hop_before_it() {
        let req = invite(TWO_HOPS);
        assert_eq!(
            handset_address(&req, ip("10.0.0.5"), ["10.0.0.5/32"]),
            ip("10.20.0.9")
        );
        // Without `received`, the sent-by address.
        let req = invite(
            "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKp1\r\nVia: SIP/2.0/UDP 10.20.0.7:5062;branch=z9hG4bKh1\r\n",
        );
        assert_eq!(
            handset_address(&req, ip("10.0.0.5"), ["10.0.0.0/24"]),
            ip("10.20.0.7")
        );
    }

    #[test]
    fn an_untrusted_sender_cannot_name_an_address() {
        let req = invite(TWO_HOPS);
        assert_eq!(
            handset_address(&req, ip("10.0.0.6"), ["10.0.0.5/32"]),
            ip("10.0.0.6")
        );
        assert_eq!(handset_address(&req, ip("10.0.0.5"), []), ip("10.0.0.5"));
    }

    #[test]
    fn a_trusted_proxy_naming_no_hop_is_taken_as_itself() {
        let one = invite("Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKp1\r\n");
        assert_eq!(
            handset_address(&one, ip("10.0.0.5"), ["10.0.0.5/32"]),
            ip("10.0.0.5")
        );
        let named = invite(
            "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKp1\r\nVia: SIP/2.0/UDP phone.example;branch=z9hG4bKh1\r\n",
        );
        assert_eq!(
            handset_address(&named, ip("10.0.0.5"), ["10.0.0.5/32"]),
            ip("10.0.0.5")
        );
    }
}
