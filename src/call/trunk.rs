//! The trunk leg: the B2BUA's client side toward the carrier, as a sans-IO machine.
//!
//! The call task hands it the trunk's SIP input (responses to our INVITE, a transaction
//! timeout, a BYE) and the call's decisions (cancel, hang up); it answers with what the
//! call must hear ([`TrunkEvent`]) and queues the requests the driver must send
//! ([`TrunkLeg::poll_transmit`]), all to the configured trunk address over UDP: a carrier
//! trunk is one fixed peer, whatever its Contact says. No socket, no clock, no task.
//!
//! ```text
//! Calling ──1xx──► Calling (180/183: Ringing)
//!    │  ├──3xx–6xx──► Done (Failed)
//!    │  ├──Timer B──► Done (Failed: timeout)
//!    │  └──2xx──► Answered (ACK; Answered, or BYE at once when the call gave up)
//!    └─cancel─► Cancelling ──2xx crossing the CANCEL──► Answered → ACK + BYE at once
//!                    └──487 (or any final)──► Done
//! Answered ──hang_up / BYE received──► Done
//! ```
//!
//! - A 2xx that crossed our CANCEL, or that arrives after the call ended, is ACKed and
//!   hung up at once (never left ringing as an orphaned dialog); the driver lingers after
//!   the CDR while [`TrunkLeg::is_pending`] so that such a 2xx still finds the leg.
//! - A retransmitted 2xx (our ACK was lost) gets the same ACK again.
//! - A 2xx without a usable SDP answer is hung up and fails the call (488); one that
//!   cannot start a dialog (no Contact, no To tag) fails it as a bad gateway (502).

use super::TrunkFailure;
use crate::media::sdp::{self, NegotiatedMedia, SessionDescription};
use crate::sip::dialog::Dialog;
use crate::sip::message::{
    new_branch, new_call_id, new_tag, Method, Request, RequestBuilder, Response,
};
use crate::sip::transport::TxKey;
use crate::sip::uri::Uri;
use std::collections::VecDeque;
use tracing::{info, warn};

/// Where the trunk leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkState {
    /// INVITE sent, no final response.
    Calling,
    /// CANCEL sent, no final response yet.
    Cancelling,
    /// 2xx received and ACKed.
    Answered,
    /// Final answer received (failure) or the dialog ended.
    Done,
}

/// What the call hears from its trunk leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkEvent {
    /// 180 or 183: the called party is ringing.
    Ringing,
    /// The called party answered (2xx, ACKed) with this media.
    Answered(NegotiatedMedia),
    /// The INVITE failed: a final status, a timeout, or an unusable answer.
    Failed(TrunkFailure),
}

/// What the INVITE to the trunk needs.
#[derive(Debug, Clone)]
pub struct Placing<'a> {
    /// The E.164 number dialed.
    pub number: &'a str,
    /// The trunk's address (`sip.trunk`).
    pub trunk: std::net::SocketAddr,
    /// Who calls (the facility), in the From user.
    pub from_user: &'a str,
    /// Our advertised address: the From host and the Call-ID's host.
    pub advertised_ip: &'a str,
    /// host:port of our Via and Contact.
    pub sent_by: &'a str,
    /// Methods we accept, for `Allow`.
    pub allow: &'a str,
}

/// The trunk leg of one call (module doc).
#[derive(Debug)]
pub struct TrunkLeg {
    invite: Request,
    call_id: String,
    branch: String,
    key: Option<TxKey>,
    offer: SessionDescription,
    state: TrunkState,
    dialog: Option<Dialog>,
    /// Our ACK to its 2xx, sent again when the 2xx is retransmitted.
    ack: Option<Request>,
    /// What its 2xx settled (whether the called party sends media at all).
    media: Option<NegotiatedMedia>,
    sent_by: String,
    outbox: VecDeque<Request>,
}

impl TrunkLeg {
    /// The INVITE for `p` offering `offer`, with its own Call-ID; send it with
    /// [`TrunkLeg::invite`] and tell the leg its transaction with [`TrunkLeg::sent`].
    pub fn new(p: &Placing<'_>, offer: SessionDescription) -> Result<TrunkLeg, TrunkFailure> {
        let (number, trunk) = (p.number, p.trunk);
        let uri =
            Uri::parse(&format!("sip:{number}@{trunk}")).map_err(|_| TrunkFailure::Status(500))?;
        let call_id = new_call_id(Some(p.advertised_ip));
        let branch = new_branch();
        let invite = RequestBuilder::new(Method::Invite, uri)
            .header(
                "Via",
                format!("SIP/2.0/UDP {};branch={branch};rport", p.sent_by),
            )
            .header(
                "From",
                format!(
                    "<sip:{}@{}>;tag={}",
                    p.from_user,
                    p.advertised_ip,
                    new_tag()
                ),
            )
            .header("To", format!("<sip:{number}@{trunk}>"))
            .call_id(&call_id)
            .cseq(1)
            .header("Contact", format!("<sip:sallyport@{}>", p.sent_by))
            .header("Allow", p.allow)
            .body("application/sdp", offer.to_string().into_bytes())
            .build();
        Ok(TrunkLeg {
            invite,
            call_id,
            branch,
            key: None,
            offer,
            state: TrunkState::Calling,
            dialog: None,
            ack: None,
            media: None,
            sent_by: p.sent_by.to_string(),
            outbox: VecDeque::new(),
        })
    }

    /// The INVITE to send.
    pub fn invite(&self) -> &Request {
        &self.invite
    }

    /// The INVITE's Call-ID (the trunk dialog's, routed to this call).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The INVITE's branch (its client transaction, routed to this call).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The transport sent the INVITE as transaction `key`.
    pub fn sent(&mut self, key: TxKey) {
        self.key = Some(key);
    }

    pub fn state(&self) -> TrunkState {
        self.state
    }

    /// What the trunk's 2xx settled, once answered.
    pub fn media(&self) -> Option<&NegotiatedMedia> {
        self.media.as_ref()
    }

    pub fn media_mut(&mut self) -> Option<&mut NegotiatedMedia> {
        self.media.as_mut()
    }

    /// Our offer: the answer to a trunk re-INVITE (the media stays as agreed).
    pub fn offer(&self) -> &SessionDescription {
        &self.offer
    }

    /// Whether the INVITE still waits for a final answer (the driver lingers for it).
    pub fn is_pending(&self) -> bool {
        matches!(self.state, TrunkState::Calling | TrunkState::Cancelling)
    }

    /// The next request to send to the trunk.
    pub fn poll_transmit(&mut self) -> Option<Request> {
        self.outbox.pop_front()
    }

    /// A response for transaction `key`; `call_live`: the call still wants the trunk
    /// (it has not ended or given up).
    pub fn on_response(
        &mut self,
        key: &TxKey,
        resp: &Response,
        call_live: bool,
    ) -> Option<TrunkEvent> {
        if self.key.as_ref() != Some(key) {
            return None; // a response to our BYE, CANCEL or INFO: nothing to do
        }
        if resp.is_provisional() {
            return matches!(resp.status, 180 | 183).then_some(TrunkEvent::Ringing);
        }
        if !resp.is_success() {
            self.state = TrunkState::Done;
            info!(status = resp.status, "trunk refused");
            return Some(TrunkEvent::Failed(TrunkFailure::Status(resp.status)));
        }
        if let Some(ack) = &self.ack {
            // A retransmitted 2xx: our ACK was lost.
            self.outbox.push_back(ack.clone());
            return None;
        }
        let dialog = match Dialog::uac(&self.invite, resp, &self.sent_by, false) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "unusable trunk 2xx");
                self.state = TrunkState::Done;
                return Some(TrunkEvent::Failed(TrunkFailure::Status(502)));
            }
        };
        let ack = dialog.ack(1);
        self.ack = Some(ack.clone());
        self.dialog = Some(dialog);
        let was = self.state;
        self.state = TrunkState::Answered;
        self.outbox.push_back(ack);
        let negotiated = std::str::from_utf8(&resp.body)
            .ok()
            .and_then(|s| sdp::parse(s).ok())
            .and_then(|answer| sdp::negotiated_from_answer(&self.offer, &answer).ok());
        match (negotiated, was == TrunkState::Calling && call_live) {
            (Some(m), true) => {
                self.media = Some(m);
                info!(codec = ?m.codec.name, "trunk answered");
                Some(TrunkEvent::Answered(m))
            }
            (None, true) => {
                warn!("trunk 2xx without a usable SDP answer");
                self.hang_up();
                Some(TrunkEvent::Failed(TrunkFailure::Status(488)))
            }
            (_, false) => {
                info!("trunk answered after we gave up: hanging up");
                self.hang_up();
                None
            }
        }
    }

    /// Transaction `key` timed out (Timer B, or the transport failed).
    pub fn on_timeout(&mut self, key: &TxKey) -> Option<TrunkEvent> {
        if self.key.as_ref() != Some(key) || self.state == TrunkState::Answered {
            return None;
        }
        self.state = TrunkState::Done;
        warn!("trunk INVITE timed out");
        Some(TrunkEvent::Failed(TrunkFailure::Timeout))
    }

    /// The call gives up on a trunk that has not answered: CANCEL the INVITE.
    pub fn cancel(&mut self) {
        if self.state != TrunkState::Calling {
            return;
        }
        self.state = TrunkState::Cancelling;
        match self.invite.cancel_for() {
            Ok(cancel) => self.outbox.push_back(cancel),
            Err(e) => warn!(error = %e, "cannot build CANCEL"),
        }
    }

    /// BYE on an answered trunk (nothing before the answer: see [`TrunkLeg::cancel`]).
    pub fn hang_up(&mut self) {
        let Some(d) = self.dialog.as_mut() else {
            return;
        };
        self.state = TrunkState::Done;
        self.outbox.push_back(d.request(Method::Bye));
    }

    /// The trunk sent BYE (answered by the driver): the dialog is over.
    pub fn bye_received(&mut self) {
        self.state = TrunkState::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::LocalMedia;
    use crate::sip::message::{parse_datagram, SipMessage};

    fn leg() -> TrunkLeg {
        let local = LocalMedia::new("127.0.0.1:20000".parse().unwrap(), 7u32.into());
        let placing = Placing {
            number: "+15551230001",
            trunk: "127.0.0.1:5070".parse().unwrap(),
            from_user: "fac-1",
            advertised_ip: "127.0.0.1",
            sent_by: "127.0.0.1:5060",
            allow: "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO",
        };
        let mut t = TrunkLeg::new(&placing, sdp::offer(&local, None)).unwrap();
        t.sent(key(&t));
        t
    }

    fn key(t: &TrunkLeg) -> TxKey {
        TxKey {
            branch: t.branch().to_string(),
            sent_by: "127.0.0.1:5060".into(),
            method: Method::Invite,
        }
    }

    fn response(t: &TrunkLeg, status: u16, sdp: bool) -> Response {
        let inv = t.invite();
        let body = if sdp {
            "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
        } else {
            ""
        };
        let ctype = if sdp {
            "Content-Type: application/sdp\r\n"
        } else {
            ""
        };
        let text = format!(
            "SIP/2.0 {status} X\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=callee\r\nCall-ID: {}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:callee@10.0.0.9>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            inv.headers.get("Via").unwrap(),
            inv.headers.get("From").unwrap(),
            inv.headers.get("To").unwrap(),
            t.call_id(),
            body.len()
        );
        match parse_datagram(text.as_bytes()) {
            Ok(SipMessage::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn sent(t: &mut TrunkLeg) -> Vec<Method> {
        std::iter::from_fn(|| t.poll_transmit())
            .map(|r| r.method)
            .collect()
    }

    #[test]
    fn ringing_then_an_answer_is_acked_and_told_once() {
        let mut t = leg();
        let k = key(&t);
        assert_eq!(t.on_response(&k, &response(&t, 100, false), true), None);
        assert_eq!(
            t.on_response(&k, &response(&t, 180, false), true),
            Some(TrunkEvent::Ringing)
        );
        let ok = response(&t, 200, true);
        assert!(matches!(
            t.on_response(&k, &ok, true),
            Some(TrunkEvent::Answered(_))
        ));
        assert_eq!(sent(&mut t), [Method::Ack]);
        assert_eq!(t.state(), TrunkState::Answered);
        assert!(!t.is_pending());
        // Retransmitted 2xx: the same ACK again, nothing told.
        assert_eq!(t.on_response(&k, &ok, true), None);
        assert_eq!(sent(&mut t), [Method::Ack]);
        t.hang_up();
        assert_eq!(sent(&mut t), [Method::Bye]);
        assert_eq!(t.state(), TrunkState::Done);
    }

    #[test]
    fn a_2xx_crossing_our_cancel_is_acked_and_hung_up() {
        let mut t = leg();
        let k = key(&t);
        t.cancel();
        assert_eq!(sent(&mut t), [Method::Cancel]);
        assert!(
            t.is_pending(),
            "the INVITE still waits for its final answer"
        );
        assert_eq!(t.on_response(&k, &response(&t, 200, true), true), None);
        assert_eq!(sent(&mut t), [Method::Ack, Method::Bye]);
        assert_eq!(t.state(), TrunkState::Done);
    }

    #[test]
    fn an_answer_after_the_call_ended_is_hung_up() {
        let mut t = leg();
        let k = key(&t);
        assert_eq!(t.on_response(&k, &response(&t, 200, true), false), None);
        assert_eq!(sent(&mut t), [Method::Ack, Method::Bye]);
    }

    #[test]
    fn failures_timeouts_and_unusable_answers_fail_the_call() {
        let mut t = leg();
        let k = key(&t);
        assert_eq!(
            t.on_response(&k, &response(&t, 486, false), true),
            Some(TrunkEvent::Failed(TrunkFailure::Status(486)))
        );
        assert!(!t.is_pending());

        let mut t = leg();
        let k = key(&t);
        assert_eq!(
            t.on_timeout(&k),
            Some(TrunkEvent::Failed(TrunkFailure::Timeout))
        );

        let mut t = leg();
        let k = key(&t);
        assert_eq!(
            t.on_response(&k, &response(&t, 200, false), true),
            Some(TrunkEvent::Failed(TrunkFailure::Status(488)))
        );
        assert_eq!(sent(&mut t), [Method::Ack, Method::Bye], "no SDP: hung up");

        // Responses to other transactions (our BYE, CANCEL) change nothing.
        let mut t = leg();
        let other = TxKey {
            branch: "z9hG4bKother".into(),
            ..key(&t)
        };
        assert_eq!(t.on_response(&other, &response(&t, 486, false), true), None);
        assert_eq!(t.on_timeout(&other), None);
        assert!(t.is_pending());
    }
}
