//! Typed views of the headers the gateway acts on, parsed on demand.
//!
//! Each accessor on [`Headers`] returns `Result<_, ParseError>`: a required
//! header that is absent is [`ParseError::MissingHeader`], one that is present
//! but broken is [`ParseError::InvalidHeader`] naming it, so the caller can
//! answer "400 Bad Request (malformed CSeq)". Optional headers come back as
//! `Result<Option<_>>`. Each type's `Display` writes the canonical form, and
//! parsing that form gives the same value back.

use std::fmt;

use super::error::ParseError;
use super::header::{
    find_top, is_token, parse_quoted, split_top, trim_lws, write_quoted, Headers, Params,
};
use super::message::Method;
use super::uri::{parse_hostport, Host, Uri};

/// Transport named in a Via header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// UDP
    Udp,
    /// TCP
    Tcp,
    /// TLS over TCP
    Tls,
    /// SCTP
    Sctp,
    /// WebSocket (RFC 7118)
    Ws,
    /// Secure WebSocket
    Wss,
    /// Anything else, as written.
    Other(String),
}

impl Transport {
    /// Parses a transport token, case-insensitively.
    pub fn parse(s: &str) -> Result<Transport, ParseError> {
        let t = match s.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "SCTP" => Transport::Sctp,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            _ if is_token(s) => Transport::Other(s.to_owned()),
            _ => return Err(ParseError::InvalidHeader("Via")),
        };
        Ok(t)
    }

    /// The token as written in a Via header.
    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// True for transports that need Content-Length framing.
    pub fn is_stream(&self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// One Via entry (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// UDP, TCP, TLS…
    pub transport: Transport,
    /// sent-by host.
    pub host: Host,
    /// sent-by port, when given.
    pub port: Option<u16>,
    /// branch, received, rport, maddr, ttl and extensions.
    pub params: Params,
}

impl Via {
    /// A Via for a request we send: `SIP/2.0/{transport} {host}[:port];branch={branch};rport`.
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::new();
        params.set("branch", Some(branch));
        params.set("rport", None);
        Via {
            transport,
            host,
            port,
            params,
        }
    }

    /// Parses one Via element (not a comma-separated list).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let bad = ParseError::InvalidHeader("Via");
        let s = trim_lws(s);
        let (proto, params) = match find_top(s, b';') {
            Some(i) => (s.get(..i).unwrap_or(""), s.get(i..).unwrap_or("")),
            None => (s, ""),
        };
        let mut parts = proto.splitn(3, '/');
        let name = parts.next().map(trim_lws).ok_or(bad.clone())?;
        let version = parts.next().map(trim_lws).ok_or(bad.clone())?;
        let rest = parts.next().map(trim_lws).ok_or(bad.clone())?;
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(bad);
        }
        let split = rest.find([' ', '\t']).ok_or(bad.clone())?;
        let (transport, sent_by) = rest.split_at(split);
        let (host, port) = parse_hostport(sent_by).ok_or(bad)?;
        Ok(Via {
            transport: Transport::parse(transport)?,
            host,
            port,
            params: Params::parse_tail(params, "Via")?,
        })
    }

    /// The branch parameter (transaction id; RFC 3261 magic cookie `z9hG4bK`).
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// The `received` parameter set by the next hop.
    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }

    /// `None` without rport, `Some(None)` for a bare `;rport` (RFC 3581
    /// request), `Some(Some(p))` when filled in. An unparsable value reads as `None`.
    pub fn rport(&self) -> Option<Option<u16>> {
        match self.params.get("rport")? {
            None => Some(None),
            Some(v) => v.parse().ok().map(Some),
        }
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.params.value("maddr")
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport.as_str(), self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// `["display"] <uri>;params` — From, To, Contact, Route, Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted.
    pub display_name: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters (tag, expires, q…), not URI parameters.
    pub params: Params,
}

impl NameAddr {
    /// A bare address without display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Params::new(),
        }
    }

    /// Parses one name-addr or addr-spec with header parameters; `what`
    /// names the header in errors.
    pub fn parse(s: &str, what: &'static str) -> Result<NameAddr, ParseError> {
        let bad = ParseError::InvalidHeader(what);
        let s = trim_lws(s);
        let (display_name, rest) = if s.starts_with('"') {
            let (d, rest) = parse_quoted(s).map_err(|_| bad.clone())?;
            (Some(d), trim_lws(rest))
        } else {
            match find_top(s, b'<') {
                Some(i) => (
                    display_token(s.get(..i).unwrap_or(""), what)?,
                    s.get(i..).unwrap_or(""),
                ),
                None => return Self::parse_addr_spec(s, what),
            }
        };
        let inner = rest.strip_prefix('<').ok_or(bad.clone())?;
        let (uri, tail) = inner.split_once('>').ok_or(bad.clone())?;
        Ok(NameAddr {
            display_name,
            uri: Uri::parse(uri).map_err(|_| bad)?,
            params: Params::parse_tail(tail, what)?,
        })
    }

    /// Without angle brackets, every `;param` belongs to the header (§20.10).
    fn parse_addr_spec(s: &str, what: &'static str) -> Result<NameAddr, ParseError> {
        let (uri, params) = match s.split_once(';') {
            Some((u, p)) => (u, Params::parse(p, what)?),
            None => (s, Params::new()),
        };
        Ok(NameAddr {
            display_name: None,
            uri: Uri::parse(trim_lws(uri)).map_err(|_| ParseError::InvalidHeader(what))?,
            params,
        })
    }

    /// The `tag` parameter (dialog identifier half).
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

/// An unquoted display name: tokens separated by blanks, or nothing.
fn display_token(s: &str, what: &'static str) -> Result<Option<String>, ParseError> {
    let s = trim_lws(s);
    if s.is_empty() {
        return Ok(None);
    }
    if !s.split([' ', '\t']).filter(|w| !w.is_empty()).all(is_token) {
        return Err(ParseError::InvalidHeader(what));
    }
    Ok(Some(s.to_owned()))
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write_quoted(f, d)?;
            f.write_str(" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// One Contact element: `*` (REGISTER removal) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *`
    Wildcard,
    /// An address with its parameters (expires, q).
    Addr(NameAddr),
}

/// CSeq: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number, below 2^31.
    pub seq: u32,
    /// Method of the transaction.
    pub method: Method,
}

impl CSeq {
    /// Parses `4711 INVITE`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let bad = ParseError::InvalidHeader("CSeq");
        let mut words = s.split([' ', '\t']).filter(|w| !w.is_empty());
        let (Some(n), Some(m), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad);
        };
        let seq = parse_u32(n).filter(|&n| n < 1 << 31).ok_or(bad)?;
        let method = Method::parse(m).map_err(|_| ParseError::InvalidHeader("CSeq"))?;
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Parses 1–10 decimal digits into a u32.
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses delta-seconds, saturating at u32::MAX as RFC 3261 §20.19 asks.
fn parse_delta(s: &str, what: &'static str) -> Result<u32, ParseError> {
    let s = trim_lws(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidHeader(what));
    }
    Ok(s.parse::<u64>()
        .map_or(u32::MAX, |v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// `Digest username="…", realm="…"…`: a scheme and its comma-separated
/// parameters, quotes removed. Duplicate parameters are an error, so two
/// `response=` values can never disagree between parser and verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    /// `Digest` (compare case-insensitively).
    pub scheme: String,
    /// Parameter names (lowercased) and unquoted values, in order.
    pub params: Vec<(String, String)>,
}

impl AuthParams {
    /// Parses a credentials or challenge value; `what` names the header in errors.
    pub fn parse(s: &str, what: &'static str) -> Result<AuthParams, ParseError> {
        let bad = ParseError::InvalidHeader(what);
        let s = trim_lws(s);
        let split = s.find([' ', '\t']).unwrap_or(s.len());
        let (scheme, rest) = s.split_at(split);
        if !is_token(scheme) {
            return Err(bad);
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for part in split_top(rest, b',') {
            let (name, value) = parse_auth_param(trim_lws(part)).ok_or(bad.clone())?;
            if params.iter().any(|(n, _)| *n == name) {
                return Err(bad);
            }
            params.push((name, value));
        }
        Ok(AuthParams {
            scheme: scheme.to_owned(),
            params,
        })
    }

    /// A parameter's value by (case-insensitive) name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_auth_param(part: &str) -> Option<(String, String)> {
    let (name, value) = part.split_once('=')?;
    let name = trim_lws(name);
    let value = trim_lws(value);
    if !is_token(name) {
        return None;
    }
    let value = if value.starts_with('"') {
        let (v, rest) = parse_quoted(value).ok()?;
        rest.is_empty().then_some(v)?
    } else {
        is_token(value).then(|| value.to_owned())?
    };
    Some((name.to_ascii_lowercase(), value))
}

/// Content-Type: `type/subtype` (lowercased) and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `application/sdp`, lowercased.
    pub mime: String,
    /// `;charset=…` and others.
    pub params: Params,
}

impl MediaType {
    /// Parses `application/sdp;charset=utf-8`.
    pub fn parse(s: &str) -> Result<MediaType, ParseError> {
        let bad = ParseError::InvalidHeader("Content-Type");
        let (mime, tail) = match s.split_once(';') {
            Some((m, t)) => (m, t),
            None => (s, ""),
        };
        let (ty, sub) = trim_lws(mime).split_once('/').ok_or(bad.clone())?;
        if !is_token(trim_lws(ty)) || !is_token(trim_lws(sub)) {
            return Err(bad);
        }
        let mime = format!("{}/{}", trim_lws(ty), trim_lws(sub)).to_ascii_lowercase();
        let params = if tail.is_empty() {
            Params::new()
        } else {
            Params::parse(tail, "Content-Type")?
        };
        Ok(MediaType { mime, params })
    }
}

/// Retry-After: seconds, optional comment, optional `;duration=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter {
    /// Seconds to wait.
    pub seconds: u32,
    /// `;duration=` and other parameters.
    pub params: Params,
}

impl RetryAfter {
    /// Parses `120 (I'm in a meeting);duration=3600`; the comment is skipped.
    pub fn parse(s: &str) -> Result<RetryAfter, ParseError> {
        let what = "Retry-After";
        let (head, tail) = match find_top(s, b';') {
            Some(i) => (s.get(..i).unwrap_or(""), s.get(i..).unwrap_or("")),
            None => (s, ""),
        };
        let digits_end = head.find(['(', ' ', '\t']).unwrap_or(head.len());
        let (digits, comment) = head.split_at(digits_end);
        let comment = trim_lws(comment);
        let is_comment = comment.len() >= 2 && comment.starts_with('(') && comment.ends_with(')');
        if !comment.is_empty() && !is_comment {
            return Err(ParseError::InvalidHeader(what));
        }
        Ok(RetryAfter {
            seconds: parse_delta(digits, what)?,
            params: Params::parse_tail(tail, what)?,
        })
    }
}

impl Headers {
    /// The single value of a header that must not repeat.
    fn single(&self, name: &'static str) -> Result<Option<&str>, ParseError> {
        let mut all = self.get_all(name);
        let first = all.next();
        match all.next() {
            Some(_) => Err(ParseError::InvalidHeader(name)),
            None => Ok(first),
        }
    }

    fn required(&self, name: &'static str) -> Result<&str, ParseError> {
        self.single(name)?.ok_or(ParseError::MissingHeader(name))
    }

    /// Every Via, top first, splitting comma-separated lines.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        let vias = self
            .list("Via")
            .map(Via::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if vias.is_empty() {
            return Err(ParseError::MissingHeader("Via"));
        }
        Ok(vias)
    }

    /// The topmost Via: where a response goes.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let top = self
            .list("Via")
            .next()
            .ok_or(ParseError::MissingHeader("Via"))?;
        Via::parse(top)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("From")?, "From")
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("To")?, "To")
    }

    /// The Call-ID (`word [@ word]`, no blanks).
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = self.required("Call-ID")?;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::InvalidHeader("Call-ID"));
        }
        Ok(v)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.required("CSeq")?)
    }

    /// Max-Forwards (0–255), `None` when absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        let bad = ParseError::InvalidHeader("Max-Forwards");
        self.single("Max-Forwards")?
            .map(|v| parse_u32(v).and_then(|n| u8::try_from(n).ok()).ok_or(bad))
            .transpose()
    }

    /// Every Contact element, `*` included.
    pub fn contacts(&self) -> Result<Vec<Contact>, ParseError> {
        self.list("Contact")
            .map(|c| match c {
                "*" => Ok(Contact::Wildcard),
                _ => NameAddr::parse(c, "Contact").map(Contact::Addr),
            })
            .collect()
    }

    /// Route set from Record-Route (dialog creation) or Route.
    pub fn name_addrs(&self, name: &'static str) -> Result<Vec<NameAddr>, ParseError> {
        self.list(name).map(|r| NameAddr::parse(r, name)).collect()
    }

    /// Content-Length, `None` when absent.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        let bad = ParseError::InvalidContentLength;
        self.single("Content-Length")
            .map_err(|_| bad.clone())?
            .map(|v| parse_u32(v).map(|n| n as usize).ok_or(bad))
            .transpose()
    }

    /// Content-Type, `None` when absent.
    pub fn content_type(&self) -> Result<Option<MediaType>, ParseError> {
        self.single("Content-Type")?
            .map(MediaType::parse)
            .transpose()
    }

    /// Expires in seconds, `None` when absent.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.single("Expires")?
            .map(|v| parse_delta(v, "Expires"))
            .transpose()
    }

    /// Retry-After, `None` when absent.
    pub fn retry_after(&self) -> Result<Option<RetryAfter>, ParseError> {
        self.single("Retry-After")?
            .map(RetryAfter::parse)
            .transpose()
    }

    /// The first Authorization header's parameters, `None` when absent.
    pub fn authorization(&self) -> Result<Option<AuthParams>, ParseError> {
        self.auth_params("Authorization")
    }

    /// The first Proxy-Authorization header's parameters.
    pub fn proxy_authorization(&self) -> Result<Option<AuthParams>, ParseError> {
        self.auth_params("Proxy-Authorization")
    }

    /// The first WWW-Authenticate challenge's parameters.
    pub fn www_authenticate(&self) -> Result<Option<AuthParams>, ParseError> {
        self.auth_params("WWW-Authenticate")
    }

    /// The first Proxy-Authenticate challenge's parameters.
    pub fn proxy_authenticate(&self) -> Result<Option<AuthParams>, ParseError> {
        self.auth_params("Proxy-Authenticate")
    }

    fn auth_params(&self, name: &'static str) -> Result<Option<AuthParams>, ParseError> {
        self.get(name)
            .map(|v| AuthParams::parse(v, name))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_spaces_and_params() {
        let v = Via::parse("SIP / 2.0 / UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1").unwrap();
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.host, Host::Domain("first.example.com".into()));
        assert_eq!(v.port, Some(4000));
        assert_eq!(v.branch(), Some("z9hG4bKa7c6a8dlze.1"));
        assert_eq!(v.maddr(), Some("224.2.0.1"));
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    }

    #[test]
    fn via_rport_received() {
        let v =
            Via::parse("SIP/2.0/TCP [::1];rport=5061;received=10.0.0.1;branch=z9hG4bK1").unwrap();
        assert_eq!(v.rport(), Some(Some(5061)));
        assert_eq!(v.received(), Some("10.0.0.1"));
        assert_eq!(
            Via::parse("SIP/2.0/UDP h;rport").unwrap().rport(),
            Some(None)
        );
        assert_eq!(Via::parse("SIP/2.0/UDP h").unwrap().rport(), None);
        for bad in [
            "SIP/2.0/UDP",
            "SIP/3.0/UDP h",
            "SIP/2.0 h",
            "SIP/2.0/UDP h;;x",
            "SIP/2.0/U@P h",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(
            r#""Bob \"B\"" <sip:bob@b.com;transport=tcp>;tag=a6c85cf"#,
            "To",
        )
        .unwrap();
        assert_eq!(a.display_name.as_deref(), Some("Bob \"B\""));
        assert_eq!(a.tag(), Some("a6c85cf"));
        assert_eq!(a.uri.as_sip().and_then(|u| u.transport()), Some("tcp"));
        let b = NameAddr::parse("Alice Smith <sip:alice@a.com>", "From").unwrap();
        assert_eq!(b.display_name.as_deref(), Some("Alice Smith"));
        let c = NameAddr::parse("sip:carol@c.com;tag=1", "From").unwrap();
        assert_eq!(c.tag(), Some("1"));
        assert!(c.uri.as_sip().is_some_and(|u| u.params.is_empty()));
        assert_eq!(NameAddr::parse(&a.to_string(), "To").unwrap(), a);
        for bad in [
            "<sip:x",
            "\"open <sip:x>",
            "a<b <sip:x>",
            "<sip:x> junk",
            "",
        ] {
            assert!(NameAddr::parse(bad, "To").is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_and_numbers() {
        let c = CSeq::parse("4711  INVITE").unwrap();
        assert_eq!((c.seq, c.method), (4711, Method::Invite));
        for bad in [
            "INVITE",
            "1",
            "-1 INVITE",
            "2147483648 INVITE",
            "1 INVITE x",
            "1 IN VITE",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_delta("99999999999", "Expires"), Ok(u32::MAX));
    }

    #[test]
    fn auth_params() {
        let a = AuthParams::parse(
            r#"Digest realm="a, b", nonce="n", qop="auth,auth-int", algorithm=MD5"#,
            "WWW-Authenticate",
        )
        .unwrap();
        assert_eq!(a.scheme, "Digest");
        assert_eq!(a.get("realm"), Some("a, b"));
        assert_eq!(a.get("QOP"), Some("auth,auth-int"));
        assert!(AuthParams::parse(r#"Digest a="1", a="2""#, "Authorization").is_err());
        assert!(AuthParams::parse(r#"Digest a="1"#, "Authorization").is_err());
        assert!(AuthParams::parse("Digest a", "Authorization").is_err());
    }

    #[test]
    fn media_type_and_retry_after() {
        let m = MediaType::parse("Application/SDP ; charset=utf-8").unwrap();
        assert_eq!(m.mime, "application/sdp");
        assert_eq!(m.params.value("charset"), Some("utf-8"));
        let r = RetryAfter::parse("120 (I'm in a meeting);duration=3600").unwrap();
        assert_eq!((r.seconds, r.params.value("duration")), (120, Some("3600")));
        assert!(RetryAfter::parse("soon").is_err());
    }
}
