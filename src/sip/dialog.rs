//! RFC 3261 §12 dialogs: what a B2BUA leg remembers between requests.
//!
//! A [`Dialog`] is created from an INVITE we answered ([`Dialog::uas`]) or from our INVITE
//! and the 2xx that answered it ([`Dialog::uac`]). It builds the in-dialog requests the call
//! flow sends — BYE, INFO, the ACK for a 2xx — with the right Call-ID, tags, CSeq, route
//! set and remote target, and it recognizes requests that belong to it. Sans-IO like the
//! rest of `sip`: it returns [`Request`]s; the driver sends them.
//!
//! Behind a proxy that record-routes (Kamailio in front of a cluster), the route set is
//! the INVITE's Record-Route (as the UAS) or the 2xx's reversed (as the UAC), and every
//! request of the dialog follows it (§12.2.1.1): with a loose router first (`;lr`) the
//! Request-URI is the remote target, the Route headers the route set, and the request
//! goes to the first route's address ([`Dialog::next_hop`]); with a strict router first,
//! the Request-URI is that router's URI and the remote target goes last in Route.
//!
//! What it does not do (not needed by the calls the gateway carries): target refresh by
//! re-INVITE or UPDATE (the remote target stays the one from dialog creation), forking
//! (the trunk's first 2xx wins), early dialogs (provisional responses create none).

use super::error::ParseError;
use super::message::{new_branch, Method, Request, RequestBuilder, Response};
use super::typed::{Contact, NameAddr};
use super::uri::{SipUri, Uri};

/// Which end of the INVITE we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We answered the INVITE (the handset leg).
    Uas,
    /// We sent the INVITE (the trunk leg).
    Uac,
}

/// One confirmed (or about to be confirmed) dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub role: Role,
    pub call_id: String,
    /// Our party as it goes in From of our requests (with our tag).
    pub local: String,
    /// Their party as it goes in To of our requests (with their tag).
    pub remote: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Where our requests go (their Contact).
    pub remote_target: Uri,
    /// The route set (§12.1): the proxies our requests pass, nearest first.
    pub route_set: Vec<NameAddr>,
    local_cseq: u32,
    /// `SIP/2.0/UDP` or `SIP/2.0/TCP`.
    via_transport: &'static str,
    /// host:port of our Via.
    sent_by: String,
}

fn contact_uri(headers: &super::header::Headers) -> Result<Uri, ParseError> {
    match headers.contacts()?.into_iter().next() {
        Some(Contact::Addr(a)) => Ok(a.uri),
        _ => Err(ParseError::MissingHeader("Contact")),
    }
}

/// The request's CSeq number.
fn cseq(headers: &super::header::Headers) -> Result<u32, ParseError> {
    Ok(headers.cseq()?.seq)
}

impl Dialog {
    /// The dialog of an INVITE we answer with `local_tag` in the To of our 2xx. `reliable`
    /// picks the Via transport of our requests (TCP when the INVITE came over TCP).
    pub fn uas(
        invite: &Request,
        local_tag: &str,
        sent_by: &str,
        reliable: bool,
    ) -> Result<Dialog, ParseError> {
        let h = &invite.headers;
        let to = h.get("To").ok_or(ParseError::MissingHeader("To"))?;
        let from = h.get("From").ok_or(ParseError::MissingHeader("From"))?;
        let remote_tag = h.from()?.tag().map(str::to_string);
        Ok(Dialog {
            role: Role::Uas,
            call_id: h.call_id()?.to_string(),
            local: format!("{to};tag={local_tag}"),
            remote: from.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag,
            remote_target: contact_uri(h)?,
            route_set: h.name_addrs("Record-Route")?,
            // Our own CSeq space starts anywhere; RFC 3261 §12.1.1 leaves it to us.
            local_cseq: 1,
            via_transport: via_transport(reliable),
            sent_by: sent_by.to_string(),
        })
    }

    /// The dialog our INVITE created when `response` (a 2xx) answered it.
    pub fn uac(
        invite: &Request,
        response: &Response,
        sent_by: &str,
        reliable: bool,
    ) -> Result<Dialog, ParseError> {
        let h = &invite.headers;
        let from = h.get("From").ok_or(ParseError::MissingHeader("From"))?;
        let local_tag = h
            .from()?
            .tag()
            .ok_or(ParseError::MissingHeader("From tag"))?
            .to_string();
        let rh = &response.headers;
        let to = rh.get("To").ok_or(ParseError::MissingHeader("To"))?;
        let remote_tag = rh.to()?.tag().map(str::to_string);
        let mut route_set = rh.name_addrs("Record-Route")?;
        route_set.reverse();
        Ok(Dialog {
            role: Role::Uac,
            call_id: h.call_id()?.to_string(),
            local: from.to_string(),
            remote: to.to_string(),
            local_tag,
            remote_tag,
            remote_target: contact_uri(rh)?,
            route_set,
            local_cseq: cseq(h)?,
            via_transport: via_transport(reliable),
            sent_by: sent_by.to_string(),
        })
    }

    /// Whether `req` (received) belongs to this dialog: same Call-ID, its To tag ours.
    pub fn matches(&self, req: &Request) -> bool {
        let h = &req.headers;
        h.call_id().is_ok_and(|c| c == self.call_id)
            && h.to()
                .is_ok_and(|to| to.tag() == Some(self.local_tag.as_str()))
    }

    /// A new in-dialog request (BYE, INFO…) with the next CSeq and a new branch.
    pub fn request(&mut self, method: Method) -> Request {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        self.build(method, self.local_cseq)
    }

    /// The ACK for the 2xx to our INVITE (RFC 3261 §13.2.2.4): the INVITE's CSeq number,
    /// a new branch, sent to the remote target.
    pub fn ack(&self, invite_cseq: u32) -> Request {
        self.build(Method::Ack, invite_cseq)
    }

    /// The SIP URI whose address our requests are sent to when the route set is not
    /// empty: its first element (§12.2.1.1, §8.1.2). `None` with an empty route set: the
    /// request goes to the remote target (the gateway sends it where the peer's requests
    /// came from, which is that target's address or the NAT in front of it).
    pub fn next_hop(&self) -> Option<&SipUri> {
        self.route_set.first().and_then(|r| r.uri.as_sip())
    }

    fn build(&self, method: Method, seq: u32) -> Request {
        let via = format!(
            "{} {};branch={};rport",
            self.via_transport,
            self.sent_by,
            new_branch()
        );
        let strict = self.route_set.first().filter(|r| !loose(r));
        let (target, routes): (Uri, Vec<String>) = match strict {
            // A strict router first (§12.2.1.1): it is the Request-URI, and the remote
            // target goes last in Route.
            Some(first) => {
                let mut uri = first.uri.clone();
                if let Uri::Sip(u) = &mut uri {
                    // Parameters not allowed in a Request-URI (§19.1.1, table 1).
                    for p in ["method", "ttl", "maddr", "lr"] {
                        u.params.remove(p);
                    }
                }
                let mut routes: Vec<String> = self
                    .route_set
                    .iter()
                    .skip(1)
                    .map(ToString::to_string)
                    .collect();
                routes.push(format!("<{}>", self.remote_target));
                (uri, routes)
            }
            None => (
                self.remote_target.clone(),
                self.route_set.iter().map(ToString::to_string).collect(),
            ),
        };
        let mut b = RequestBuilder::new(method, target)
            .header("Via", via)
            .header("From", self.local.as_str())
            .header("To", self.remote.as_str())
            .call_id(&self.call_id)
            .cseq(seq);
        for r in routes {
            b = b.header("Route", r);
        }
        b.build()
    }
}

/// A loose router (`;lr` on its URI, RFC 3261 §16.12), or a route that is no SIP URI
/// (taken as loose: it cannot be a Request-URI we send to).
fn loose(route: &NameAddr) -> bool {
    route.uri.as_sip().is_none_or(SipUri::lr)
}

fn via_transport(reliable: bool) -> &'static str {
    if reliable {
        "SIP/2.0/TCP"
    } else {
        "SIP/2.0/UDP"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse_datagram, SipMessage};

    fn request(text: &str) -> Request {
        match parse_datagram(text.replace('\n', "\r\n").as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn response(text: &str) -> Response {
        match parse_datagram(text.replace('\n', "\r\n").as_bytes()) {
            Ok(SipMessage::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:+15551230001@gw SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKaaa
Record-Route: <sip:p1;lr>
Record-Route: <sip:p2;lr>
From: <sip:handset-1@10.0.0.5>;tag=h1
To: <sip:+15551230001@gw>
Call-ID: c1@10.0.0.5
CSeq: 7 INVITE
Contact: <sip:handset-1@10.0.0.5:5062>
Content-Length: 0

";

    #[test]
    fn uas_dialog_builds_bye_to_the_contact_with_swapped_tags_and_its_own_cseq() {
        let inv = request(INVITE);
        let mut d = Dialog::uas(&inv, "gw1", "192.0.2.1:5060", false).unwrap();
        let bye = d.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:handset-1@10.0.0.5:5062");
        let h = &bye.headers;
        assert_eq!(h.from().unwrap().tag(), Some("gw1"));
        assert_eq!(h.to().unwrap().tag(), Some("h1"));
        assert_eq!(h.call_id().unwrap(), "c1@10.0.0.5");
        assert_eq!(h.cseq().unwrap().seq, 2);
        assert_eq!(h.cseq().unwrap().method, Method::Bye);
        let via = h.top_via().unwrap();
        assert!(via.branch().unwrap().starts_with("z9hG4bK"));
        assert_eq!(
            h.get_all("Route").collect::<Vec<_>>(),
            ["<sip:p1;lr>", "<sip:p2;lr>"]
        );
        let again = d.request(Method::Info);
        assert_eq!(again.headers.cseq().unwrap().seq, 3);
        assert_ne!(
            again.headers.top_via().unwrap().branch(),
            via.branch(),
            "every request gets a new branch"
        );
    }

    #[test]
    fn uas_dialog_recognizes_its_in_dialog_requests() {
        let inv = request(INVITE);
        let d = Dialog::uas(&inv, "gw1", "192.0.2.1:5060", false).unwrap();
        let bye = request(
            "BYE sip:gw SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbbb
From: <sip:handset-1@10.0.0.5>;tag=h1
To: <sip:+15551230001@gw>;tag=gw1
Call-ID: c1@10.0.0.5
CSeq: 8 BYE
Content-Length: 0

",
        );
        assert!(d.matches(&bye));
        assert!(!d.matches(&inv), "the initial INVITE has no To tag");
    }

    #[test]
    fn uac_dialog_acks_with_the_invite_cseq_and_reverses_the_route_set() {
        let inv = request(
            "INVITE sip:+15551230001@trunk SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKccc
From: <sip:gw@192.0.2.1>;tag=t1
To: <sip:+15551230001@trunk>
Call-ID: out1
CSeq: 1 INVITE
Contact: <sip:gw@192.0.2.1:5060>
Content-Length: 0

",
        );
        let ok = response(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKccc
Record-Route: <sip:r1;lr>
Record-Route: <sip:r2;lr>
From: <sip:gw@192.0.2.1>;tag=t1
To: <sip:+15551230001@trunk>;tag=far
Call-ID: out1
CSeq: 1 INVITE
Contact: <sip:callee@198.51.100.7:5070>
Content-Length: 0

",
        );
        let mut d = Dialog::uac(&inv, &ok, "192.0.2.1:5060", false).unwrap();
        let ack = d.ack(1);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri.to_string(), "sip:callee@198.51.100.7:5070");
        assert_eq!(ack.headers.cseq().unwrap().seq, 1);
        assert_eq!(ack.headers.to().unwrap().tag(), Some("far"));
        assert_eq!(
            ack.headers.get_all("Route").collect::<Vec<_>>(),
            ["<sip:r2;lr>", "<sip:r1;lr>"]
        );
        let bye = d.request(Method::Bye);
        assert_eq!(bye.headers.cseq().unwrap().seq, 2);
        assert_eq!(bye.headers.from().unwrap().tag(), Some("t1"));
    }

    #[test]
    fn a_loose_route_set_keeps_the_target_and_names_the_next_hop() {
        let inv = request(&INVITE.replace(
            "Record-Route: <sip:p1;lr>\nRecord-Route: <sip:p2;lr>",
            "Record-Route: <sip:127.0.0.1:5070;lr;ftag=h1>, <sip:p2;lr>",
        ));
        let mut d = Dialog::uas(&inv, "gw1", "192.0.2.1:5060", false).unwrap();
        let hop = d.next_hop().expect("a route set");
        assert_eq!(hop.to_string(), "sip:127.0.0.1:5070;lr;ftag=h1");
        let bye = d.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:handset-1@10.0.0.5:5062");
        assert_eq!(
            bye.headers.get_all("Route").collect::<Vec<_>>(),
            ["<sip:127.0.0.1:5070;lr;ftag=h1>", "<sip:p2;lr>"],
            "one Record-Route line with two values is two routes"
        );
    }

    #[test]
    fn the_2xx_copies_the_record_route_in_order() {
        let inv = request(INVITE);
        let ok = Response::for_request(&inv, 200, "OK")
            .with_to_tag("gw1")
            .with_record_route(&inv);
        assert_eq!(
            ok.headers.get_all("Record-Route").collect::<Vec<_>>(),
            ["<sip:p1;lr>", "<sip:p2;lr>"]
        );
    }

    #[test]
    fn a_strict_router_first_becomes_the_request_uri() {
        let inv = request(&INVITE.replace(
            "Record-Route: <sip:p1;lr>\nRecord-Route: <sip:p2;lr>",
            "Record-Route: <sip:strict.example;maddr=10.0.0.9>\nRecord-Route: <sip:p2;lr>",
        ));
        let mut d = Dialog::uas(&inv, "gw1", "192.0.2.1:5060", false).unwrap();
        let bye = d.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:strict.example");
        assert_eq!(
            bye.headers.get_all("Route").collect::<Vec<_>>(),
            ["<sip:p2;lr>", "<sip:handset-1@10.0.0.5:5062>"]
        );
    }

    #[test]
    fn without_record_route_there_is_no_next_hop() {
        let inv =
            request(&INVITE.replace("Record-Route: <sip:p1;lr>\nRecord-Route: <sip:p2;lr>\n", ""));
        let mut d = Dialog::uas(&inv, "gw1", "192.0.2.1:5060", false).unwrap();
        assert!(d.next_hop().is_none());
        assert_eq!(d.request(Method::Bye).headers.get_all("Route").count(), 0);
    }

    #[test]
    fn a_dialog_needs_a_contact() {
        let inv = request(&INVITE.replace("Contact: <sip:handset-1@10.0.0.5:5062>\n", ""));
        assert!(Dialog::uas(&inv, "gw1", "h:1", false).is_err());
    }
}
