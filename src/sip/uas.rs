//! The RFC 3261 §8.2 checks a user agent server makes before it processes a
//! request, in the RFC's order, as one pure function: [`Capabilities::screen`].
//!
//! 1. **Method** (§8.2.1): a method we do not recognise at all gets `501 Not
//!    Implemented` (§21.5.2); one we recognise but do not serve (REGISTER,
//!    MESSAGE, SUBSCRIBE…) gets `405 Method Not Allowed` with `Allow` (§21.4.6).
//! 2. **Request-URI** (§8.2.2.1): a scheme other than `sip`, `sips` or `tel`
//!    gets `416 Unsupported URI Scheme`; a SIP URI carrying `?headers` gets
//!    400 (§19.1.1: headers are not allowed in a Request-URI; RFC 4475
//!    "escruri"). The To tag check (§8.2.2.2, 481 for a dialog we do not
//!    know) is the call flow's: only it knows its dialogs.
//! 3. **Require** (§8.2.2.3): an option tag we do not support gets `420 Bad
//!    Extension` with `Unsupported` listing it. Never for ACK or CANCEL, and
//!    `Proxy-Require` is for proxies (§20.29), not us.
//! 4. **Content** (§8.2.3): an INVITE body that is not `application/sdp`, or
//!    is encoded, gets `415 Unsupported Media Type` with `Accept` (and
//!    `Accept-Encoding`); an INVITE whose `Accept` rules out SDP, the only
//!    body our answer can carry, gets `406 Not Acceptable`.
//!
//! The transport's endpoint runs this on every new request before the call
//! flow sees it, so the call flow only ever gets requests it can serve. ACK
//! is never answered and always passes.

use super::header::trim_lws;
use super::message::{new_tag, Method, Request, Response};
use super::typed::MediaType;
use super::uri::Uri;

/// The methods the gateway serves, as its `Allow` header says them.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, INFO, OPTIONS";

/// What a user agent server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Methods served (the `Allow` list).
    pub methods: &'static [Method],
    /// `Allow` header value listing `methods`.
    pub allow: &'static str,
    /// Option tags supported in `Require`.
    pub option_tags: &'static [&'static str],
}

/// The gateway: a B2BUA for inmate calls, no extensions.
pub const GATEWAY: Capabilities = Capabilities {
    methods: &[
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Info,
        Method::Options,
    ],
    allow: ALLOW,
    option_tags: &[],
};

impl Default for Capabilities {
    fn default() -> Self {
        GATEWAY
    }
}

impl Capabilities {
    /// The refusal RFC 3261 §8.2 calls for, or `None` when the request may be
    /// processed (see the module doc for the checks and their order).
    pub fn screen(&self, req: &Request) -> Option<Response> {
        if req.method == Method::Ack {
            return None;
        }
        self.check_method(req)
            .or_else(|| check_uri(req))
            .or_else(|| self.check_require(req))
            .or_else(|| check_content(req))
    }

    fn check_method(&self, req: &Request) -> Option<Response> {
        if self.methods.contains(&req.method) {
            return None;
        }
        let (status, reason) = match req.method {
            Method::Other(_) => (501, "Not Implemented"),
            _ => (405, "Method Not Allowed"),
        };
        Some(refuse(req, status, reason).with_header("Allow", self.allow))
    }

    fn check_require(&self, req: &Request) -> Option<Response> {
        if req.method == Method::Cancel {
            return None;
        }
        let unsupported: Vec<&str> = req
            .headers
            .list("Require")
            .map(trim_lws)
            .filter(|tag| !tag.is_empty())
            .filter(|tag| !self.option_tags.iter().any(|s| s.eq_ignore_ascii_case(tag)))
            .collect();
        if unsupported.is_empty() {
            return None;
        }
        Some(refuse(req, 420, "Bad Extension").with_header("Unsupported", &unsupported.join(", ")))
    }
}

fn check_uri(req: &Request) -> Option<Response> {
    match &req.uri {
        Uri::Other(_) => Some(refuse(req, 416, "Unsupported URI Scheme")),
        Uri::Sip(u) if u.headers.is_some() => {
            Some(refuse(req, 400, "Bad Request (headers in the Request-URI)"))
        }
        _ => None,
    }
}

/// §8.2.3 for the one body we read: the INVITE's SDP offer.
fn check_content(req: &Request) -> Option<Response> {
    if req.method != Method::Invite {
        return None;
    }
    if let Some(accept) = req.headers.get("Accept") {
        if !trim_lws(accept).is_empty() && !req.headers.list("Accept").any(accepts_sdp) {
            return Some(
                refuse(req, 406, "Not Acceptable").with_header("Accept", "application/sdp"),
            );
        }
    }
    if req.body.is_empty() {
        return None;
    }
    let encoded = req
        .headers
        .list("Content-Encoding")
        .map(trim_lws)
        .any(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
    let sdp = matches!(
        req.headers.content_type(),
        Ok(Some(MediaType { ref mime, .. })) if mime == "application/sdp"
    );
    if sdp && !encoded {
        return None;
    }
    Some(
        refuse(req, 415, "Unsupported Media Type")
            .with_header("Accept", "application/sdp")
            .with_header("Accept-Encoding", "identity"),
    )
}

/// True when one `Accept` element admits `application/sdp`.
fn accepts_sdp(element: &str) -> bool {
    let range = trim_lws(element.split(';').next().unwrap_or(""));
    ["application/sdp", "application/*", "*/*"]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(range))
}

fn refuse(req: &Request, status: u16, reason: &str) -> Response {
    Response::for_request(req, status, reason).with_to_tag(&new_tag())
}

trait WithHeader {
    fn with_header(self, name: &str, value: &str) -> Self;
}

impl WithHeader for Response {
    fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push(name, value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse_datagram, SipMessage};

    fn req(start: &str, extra: &str, body: &str) -> Request {
        let method = start.split(' ').next().unwrap();
        let text = format!(
            "{start} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse_datagram(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    fn status(r: &Request) -> Option<u16> {
        GATEWAY.screen(r).map(|resp| resp.status)
    }

    #[test]
    fn method_then_uri_then_require_then_content() {
        assert_eq!(status(&req("OPTIONS sip:x@h", "", "")), None);
        assert_eq!(status(&req("ACK nobody:x", "Require: x\r\n", "")), None);
        let unknown = GATEWAY.screen(&req("FOO sip:x@h", "", "")).unwrap();
        assert_eq!(unknown.status, 501);
        let message = GATEWAY.screen(&req("MESSAGE sip:x@h", "", "")).unwrap();
        assert_eq!(message.status, 405);
        assert_eq!(message.headers.get("Allow"), Some(ALLOW));
        assert!(message.headers.to().unwrap().tag().is_some());
        // The method is checked first, then the scheme, then Require.
        assert_eq!(
            status(&req("MESSAGE isbn:1", "Require: x\r\n", "")),
            Some(405)
        );
        assert_eq!(
            status(&req("OPTIONS isbn:1", "Require: x\r\n", "")),
            Some(416)
        );
        assert_eq!(status(&req("OPTIONS sip:x@h?Route=y", "", "")), Some(400));
        let ext = GATEWAY
            .screen(&req(
                "OPTIONS sip:x@h",
                "Require: a, b\r\nProxy-Require: c\r\n",
                "",
            ))
            .unwrap();
        assert_eq!(ext.status, 420);
        assert_eq!(ext.headers.get("Unsupported"), Some("a, b"));
        assert_eq!(
            status(&req("OPTIONS sip:x@h", "Proxy-Require: c\r\n", "")),
            None
        );
        assert_eq!(status(&req("CANCEL sip:x@h", "Require: a\r\n", "")), None);
    }

    #[test]
    fn invite_bodies_and_accept() {
        let sdp = "v=0\r\n";
        let ct = |t: &str| format!("Content-Type: {t}\r\n");
        assert_eq!(
            status(&req("INVITE sip:x@h", &ct("application/sdp"), sdp)),
            None
        );
        assert_eq!(
            status(&req("INVITE sip:x@h", &ct("Application/SDP"), sdp)),
            None
        );
        assert_eq!(
            status(&req("INVITE sip:x@h", "", "")),
            None,
            "late offer: the call flow's"
        );
        let odd = GATEWAY
            .screen(&req(
                "INVITE sip:x@h",
                &ct("application/unknownformat"),
                "<a/>",
            ))
            .unwrap();
        assert_eq!(
            (odd.status, odd.headers.get("Accept")),
            (415, Some("application/sdp"))
        );
        let gz = format!("{}Content-Encoding: gzip\r\n", ct("application/sdp"));
        assert_eq!(status(&req("INVITE sip:x@h", &gz, sdp)), Some(415));
        let accept = |a: &str| format!("{}Accept: {a}\r\n", ct("application/sdp"));
        assert_eq!(
            status(&req("INVITE sip:x@h", &accept("text/nobodyKnowsThis"), sdp)),
            Some(406)
        );
        assert_eq!(
            status(&req(
                "INVITE sip:x@h",
                &accept("text/plain, application/sdp"),
                sdp
            )),
            None
        );
        assert_eq!(
            status(&req("INVITE sip:x@h", &accept("*/*;q=0.5"), sdp)),
            None
        );
    }
}
