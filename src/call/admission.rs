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
