//! What the call side counts for `/metrics`: handset INVITEs refused before a call exists
//! (by reason), ID + PIN attempts (by outcome), PIN locks (by subject) and facility-wide
//! guessing alerts. Relaxed atomics, written by the call tasks of this node and read by
//! `/metrics`; a cluster sums its nodes.
//!
//! A refusal before a call exists (unknown handset, failed authentication, no common
//! codec, …) writes no CDR: a CDR records a session — an answered handset leg, whose
//! inmate, number and charges it explains — and none was opened. Each is logged with its
//! reason (never the dialed number or a digit) and counted here instead.

use crate::policy::lockout::Subject;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a handset INVITE was answered with an error before any call existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403: on a trusted network, the From user names no handset of that facility.
    UnknownHandset,
    /// 401: no credentials yet, or a stale nonce (the normal first step of digest).
    Challenged,
    /// 401: credentials that do not verify (wrong password, unknown user, foreign nonce).
    AuthFailed,
    /// 487: CANCEL before the handset was admitted.
    Cancelled,
    /// 404: no dialable number in the Request-URI (none, over 32 characters, or holding
    /// anything but printable ASCII).
    NoNumber,
    /// 488: no SDP offer.
    NoOffer,
    /// 415: a body that is not SDP.
    NotSdp,
    /// 400: an SDP offer that does not parse, or a request that makes no dialog.
    BadRequest,
    /// 488: no audio stream or no codec in common (PCMU or PCMA required).
    NoCommonCodec,
    /// 503: every RTP port pair in use.
    NoMediaPorts,
    /// 500: the database failed during admission or when opening the session.
    Internal,
    /// 482: another node of the cluster (or this one) already took this very INVITE (a
    /// proxy failed it over while this node had not answered it yet).
    Merged,
}

impl Refusal {
    pub const ALL: [Refusal; 12] = [
        Refusal::UnknownHandset,
        Refusal::Challenged,
        Refusal::AuthFailed,
        Refusal::Cancelled,
        Refusal::NoNumber,
        Refusal::NoOffer,
        Refusal::NotSdp,
        Refusal::BadRequest,
        Refusal::NoCommonCodec,
        Refusal::NoMediaPorts,
        Refusal::Internal,
        Refusal::Merged,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownHandset => "unknown_handset",
            Refusal::Challenged => "challenged",
            Refusal::AuthFailed => "auth_failed",
            Refusal::Cancelled => "cancelled",
            Refusal::NoNumber => "no_number",
            Refusal::NoOffer => "no_offer",
            Refusal::NotSdp => "not_sdp",
            Refusal::BadRequest => "bad_request",
            Refusal::NoCommonCodec => "no_common_codec",
            Refusal::NoMediaPorts => "no_media_ports",
            Refusal::Internal => "internal",
            Refusal::Merged => "merged",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// How an ID + PIN attempt ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    Valid,
    Wrong,
    /// Refused unchecked: the handset or line is locked.
    PhoneLocked,
    /// Refused: the inmate is locked.
    AccountLocked,
}

impl PinOutcome {
    const ALL: [PinOutcome; 4] = [
        PinOutcome::Valid,
        PinOutcome::Wrong,
        PinOutcome::PhoneLocked,
        PinOutcome::AccountLocked,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PinOutcome::Valid => "valid",
            PinOutcome::Wrong => "wrong",
            PinOutcome::PhoneLocked => "phone_locked",
            PinOutcome::AccountLocked => "account_locked",
        }
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct CallStats {
    refused: [AtomicU64; Refusal::ALL.len()],
    pin: [AtomicU64; PinOutcome::ALL.len()],
    locks: [AtomicU64; Subject::ALL.len()],
    alerts: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl CallStats {
    pub fn refused(&self, r: Refusal) {
        bump(&self.refused[r.index()]);
    }

    pub fn pin_attempt(&self, o: PinOutcome) {
        let i = PinOutcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
        bump(&self.pin[i]);
    }

    pub fn locked(&self, s: Subject) {
        let i = Subject::ALL.iter().position(|x| *x == s).unwrap_or(0);
        bump(&self.locks[i]);
    }

    pub fn alert(&self) {
        bump(&self.alerts);
    }

    /// The Prometheus families.
    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP sallyport_sip_invites_refused_total Handset INVITEs refused before a call existed (no CDR), by reason.\n# TYPE sallyport_sip_invites_refused_total counter");
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "sallyport_sip_invites_refused_total{{reason=\"{}\"}} {}",
                r.as_str(),
                load(&self.refused[r.index()])
            );
        }
        let _ = writeln!(out, "# HELP sallyport_pin_attempts_total ID + PIN entries checked on this node, by outcome.\n# TYPE sallyport_pin_attempts_total counter");
        for (o, c) in PinOutcome::ALL.iter().zip(&self.pin) {
            let _ = writeln!(
                out,
                "sallyport_pin_attempts_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                load(c)
            );
        }
        let _ = writeln!(out, "# HELP sallyport_pin_lockouts_total PIN locks set by this node after repeated failures, by subject.\n# TYPE sallyport_pin_lockouts_total counter");
        for (s, c) in Subject::ALL.iter().zip(&self.locks) {
            let _ = writeln!(
                out,
                "sallyport_pin_lockouts_total{{subject=\"{}\"}} {}",
                s.as_str(),
                load(c)
            );
        }
        let _ = writeln!(out, "# HELP sallyport_pin_guessing_alerts_total Facility-wide PIN guessing alerts raised by this node (each also in the audit log).\n# TYPE sallyport_pin_guessing_alerts_total counter\nsallyport_pin_guessing_alerts_total {}", load(&self.alerts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_rendered_with_its_count() {
        let s = CallStats::default();
        s.refused(Refusal::NoCommonCodec);
        s.refused(Refusal::NoCommonCodec);
        s.pin_attempt(PinOutcome::AccountLocked);
        s.locked(Subject::Line);
        s.alert();
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.contains("sallyport_sip_invites_refused_total{reason=\"no_common_codec\"} 2"));
        assert!(out.contains("sallyport_sip_invites_refused_total{reason=\"unknown_handset\"} 0"));
        assert!(out.contains("sallyport_pin_attempts_total{outcome=\"account_locked\"} 1"));
        assert!(out.contains("sallyport_pin_lockouts_total{subject=\"line\"} 1"));
        assert!(out.contains("sallyport_pin_guessing_alerts_total 1"));
        let names: std::collections::HashSet<_> = Refusal::ALL.map(Refusal::as_str).into();
        assert_eq!(names.len(), Refusal::ALL.len());
    }
}
