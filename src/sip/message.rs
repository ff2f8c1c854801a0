//! SIP requests and responses: types, serializer, and the builders the
//! B2BUA uses to answer requests and originate its own.
//!
//! Parsing lives in [`super::parse`] and is re-exported here, so the whole
//! message API is `sip::message::{parse, parse_datagram, SipMessage, …}`.
//!
//! Only SIP/2.0 exists: a message with another version never becomes a
//! [`SipMessage`] (it fails with [`ParseError::UnsupportedVersion`]), so the
//! types carry no version field.

use std::fmt;

use rand::Rng;

pub use super::error::ParseError;
use super::header::{is_token, Headers};
pub use super::parse::{
    is_keepalive_ping, parse, parse_datagram, parse_datagram_with, parse_with,
    response_to_malformed, Limits, Parsed, PONG,
};
use super::typed::{CSeq, NameAddr, Via};
use super::uri::Uri;

/// A request method. Methods are case-sensitive (RFC 3261 §7.1): `invite`
/// is [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// INFO (DTMF relay)
    Info,
    /// PRACK
    Prack,
    /// UPDATE
    Update,
    /// REFER
    Refer,
    /// NOTIFY
    Notify,
    /// SUBSCRIBE
    Subscribe,
    /// MESSAGE
    Message,
    /// An extension method (a token).
    Other(String),
}

impl Method {
    /// Parses a method token.
    pub fn parse(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            _ if is_token(s) => Method::Other(s.to_owned()),
            _ => return Err(ParseError::InvalidMethod),
        })
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Other(s) => s,
        }
    }

    /// False only for ACK, which never gets a response.
    pub fn expects_response(&self) -> bool {
        *self != Method::Ack
    }

    /// True for methods that can establish a dialog.
    pub fn creates_dialog(&self) -> bool {
        matches!(self, Method::Invite | Method::Subscribe | Method::Refer)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Method {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::parse(s)
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Header lines in order.
    pub headers: Headers,
    /// Raw body (SDP, dtmf-relay…); Content-Length is derived from it.
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase (free text; non-UTF-8 bytes were replaced on parse).
    pub reason: String,
    /// Header lines in order.
    pub headers: Headers,
    /// Raw body.
    pub body: Vec<u8>,
}

/// Either kind of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl SipMessage {
    /// The header lines.
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    /// The header lines, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            SipMessage::Request(r) => &mut r.headers,
            SipMessage::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }

    /// Serializes to wire form (see [`SipMessage::write_to`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body().len());
        self.write_to(&mut out);
        out
    }

    /// Appends the wire form to `out`: CRLF line endings, the first
    /// Content-Length rewritten from the body length (later duplicates
    /// dropped), appended last when there was none.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            SipMessage::Request(r) => r.write_to(out),
            SipMessage::Response(r) => r.write_to(out),
        }
    }
}

/// `fmt::Write` over a byte vector (never fails).
struct VecWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn write_headers_and_body(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    let mut wrote_length = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            if !wrote_length {
                write_content_length(out, body.len());
            }
            wrote_length = true;
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        write_text(out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        write_content_length(out, body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Writes a header value or reason phrase with any CR or LF turned into a
/// space: values our own code sets (a display name from the database…)
/// can never break a line. Parsed values never contain them.
fn write_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend_from_slice(bytes);
        return;
    }
    out.extend(
        bytes
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

fn write_content_length(out: &mut Vec<u8>, len: usize) {
    use fmt::Write;
    let _ = write!(VecWriter(out), "Content-Length: {len}\r\n");
}

impl Request {
    /// A request with no headers and no body; see [`RequestBuilder`].
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use fmt::Write;
        let _ = write!(VecWriter(out), "{} {} SIP/2.0\r\n", self.method, self.uri);
        write_headers_and_body(out, &self.headers, &self.body);
    }

    /// Serializes to wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.write_to(&mut out);
        out
    }

    /// The CANCEL for this INVITE (RFC 3261 §9.1): same Request-URI,
    /// Call-ID, From, To and CSeq number; only the top Via; Route copied.
    pub fn cancel_for(&self) -> Result<Request, ParseError> {
        self.hop_request(Method::Cancel, None)
    }

    /// The ACK for a non-2xx final response to this INVITE (RFC 3261
    /// §17.1.1.3): like CANCEL, but To is the response's (with its tag).
    /// The ACK for a 2xx is a new transaction built by the dialog layer.
    pub fn ack_for(&self, response: &Response) -> Result<Request, ParseError> {
        let to = response
            .headers
            .get("To")
            .ok_or(ParseError::MissingHeader("To"))?;
        self.hop_request(Method::Ack, Some(to))
    }

    fn hop_request(&self, method: Method, to: Option<&str>) -> Result<Request, ParseError> {
        let h = &self.headers;
        let top_via = h
            .list("Via")
            .next()
            .ok_or(ParseError::MissingHeader("Via"))?;
        let seq = h.cseq()?.seq;
        let to = to
            .or_else(|| h.get("To"))
            .ok_or(ParseError::MissingHeader("To"))?;
        let mut req = RequestBuilder::new(method.clone(), self.uri.clone())
            .header("Via", top_via)
            .header(
                "From",
                h.get("From").ok_or(ParseError::MissingHeader("From"))?,
            )
            .header("To", to)
            .call_id(h.call_id()?)
            .header("CSeq", format!("{seq} {method}"));
        for route in h.get_all("Route") {
            req = req.header("Route", route);
        }
        Ok(req.build())
    }
}

impl Response {
    /// A bare response with no headers.
    pub fn new(status: u16, reason: impl Into<String>) -> Response {
        Response {
            status,
            reason: reason.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` per RFC 3261 §8.2.6: every Via (in order), From,
    /// To, Call-ID and CSeq copied; Timestamp copied into a 100. Add a To tag
    /// with [`Response::with_to_tag`] for anything but 100.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut resp = Response::new(status, reason);
        let mut copy = |name: &str| {
            for v in req.headers.get_all(name) {
                resp.headers.push(name, v);
            }
        };
        copy("Via");
        copy("From");
        copy("To");
        copy("Call-ID");
        copy("CSeq");
        if status == 100 {
            copy("Timestamp");
        }
        resp
    }

    /// Copies the request's Record-Route values, in order, as a response that creates a
    /// dialog must (RFC 3261 §12.1.1): the 2xx to an INVITE that came through a
    /// record-routing proxy, so that the caller's in-dialog requests pass it too.
    pub fn with_record_route(mut self, req: &Request) -> Response {
        for v in req.headers.get_all("Record-Route") {
            self.headers.push("Record-Route", v);
        }
        self
    }

    /// Appends `;tag=` to To unless it already has one (or cannot be
    /// parsed). The rest of the To value stays byte for byte as copied.
    pub fn with_to_tag(mut self, tag: &str) -> Response {
        let untagged = self.headers.to().is_ok_and(|to| to.tag().is_none());
        if let (true, Some(to)) = (untagged, self.headers.get("To")) {
            let tagged = format!("{to};tag={tag}");
            self.headers.set("To", tagged);
        }
        self
    }

    /// Sets the body and its Content-Type.
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Response {
        self.headers.set("Content-Type", content_type);
        self.body = body;
        self
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use fmt::Write;
        let _ = write!(VecWriter(out), "SIP/2.0 {} ", self.status);
        write_text(out, &self.reason);
        out.extend_from_slice(b"\r\n");
        write_headers_and_body(out, &self.headers, &self.body);
    }

    /// Serializes to wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.write_to(&mut out);
        out
    }

    /// 1xx.
    pub fn is_provisional(&self) -> bool {
        is_provisional(self.status)
    }

    /// 2xx–6xx.
    pub fn is_final(&self) -> bool {
        !is_provisional(self.status)
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// 3xx–6xx: the request failed or was redirected.
    pub fn is_failure(&self) -> bool {
        self.status >= 300
    }

    /// The class digit: 1 for 1xx … 6 for 6xx.
    pub fn class(&self) -> u16 {
        self.status / 100
    }
}

/// True for 1xx status codes.
pub fn is_provisional(status: u16) -> bool {
    (100..200).contains(&status)
}

/// Builds an outbound request (INVITE, BYE, ACK, CANCEL…) header by header.
/// Max-Forwards: 70 is added when not set.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    req: Request,
}

impl RequestBuilder {
    /// Starts a request.
    pub fn new(method: Method, uri: Uri) -> RequestBuilder {
        RequestBuilder {
            req: Request::new(method, uri),
        }
    }

    /// Appends any header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.req.headers.push(name, value);
        self
    }

    /// Appends a Via (call once per hop; ours goes first).
    pub fn via(self, via: &Via) -> Self {
        self.header("Via", via.to_string())
    }

    /// Sets From.
    pub fn from(self, from: &NameAddr) -> Self {
        self.header("From", from.to_string())
    }

    /// Sets To.
    pub fn to(self, to: &NameAddr) -> Self {
        self.header("To", to.to_string())
    }

    /// Sets Call-ID.
    pub fn call_id(self, id: &str) -> Self {
        self.header("Call-ID", id)
    }

    /// Sets CSeq with this request's method.
    pub fn cseq(self, seq: u32) -> Self {
        let cseq = CSeq {
            seq,
            method: self.req.method.clone(),
        };
        self.header("CSeq", cseq.to_string())
    }

    /// Sets Max-Forwards.
    pub fn max_forwards(self, hops: u8) -> Self {
        self.header("Max-Forwards", hops.to_string())
    }

    /// Appends a Contact.
    pub fn contact(self, contact: &NameAddr) -> Self {
        self.header("Contact", contact.to_string())
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.req.headers.set("Content-Type", content_type);
        self.req.body = body;
        self
    }

    /// Finishes the request.
    pub fn build(mut self) -> Request {
        if !self.req.headers.contains("Max-Forwards") {
            self.req.headers.push("Max-Forwards", "70");
        }
        self.req
    }
}

/// A new Via branch: the RFC 3261 magic cookie and 64 random bits.
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::thread_rng().gen::<u64>())
}

/// A new From/To tag with 64 random bits.
pub fn new_tag() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// A new Call-ID with 128 random bits, `@host` appended when given.
pub fn new_call_id(host: Option<&str>) -> String {
    let id = format!("{:032x}", rand::thread_rng().gen::<u128>());
    match host {
        Some(h) => format!("{id}@{h}"),
        None => id,
    }
}
