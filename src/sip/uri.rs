//! SIP, SIPS (RFC 3261 §19.1) and tel (RFC 3966) URIs.
//!
//! The user part is percent-decoded on parse and re-escaped on output, so
//! `sip:%61lice@h` and `sip:alice@h` compare equal. URI parameters are kept
//! as written. The `?headers` part is kept verbatim but never interpreted: a
//! B2BUA has no business acting on headers smuggled inside a URI. Other
//! schemes (`urn:`, `im:`…) are carried as [`Uri::Other`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::ParseError;
use super::header::Params;

/// A Request-URI or the URI inside a From/To/Contact header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:`.
    Tel(TelUri),
    /// Any other absolute URI, kept verbatim.
    Other(String),
}

/// `sip` or `sips`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:` (TLS end to end)
    Sips,
}

/// A parsed `sip:`/`sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`.
    pub scheme: Scheme,
    /// Decoded user part (a phone number for calls to the trunk).
    pub user: Option<String>,
    /// Decoded password (deprecated by RFC 3261 but still parsed).
    pub password: Option<String>,
    /// Host name or address.
    pub host: Host,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// `;transport=tcp`, `;lr`, `;user=phone`…
    pub params: Params,
    /// Raw `?headers` part, never interpreted.
    pub headers: Option<String>,
}

/// The host of a URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, as written.
    Domain(String),
    /// A dotted IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    V6(Ipv6Addr),
}

/// A `tel:` URI: the number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// Global (`+1…`) or local number with visual separators as written.
    pub number: String,
    /// `;phone-context=…`, `;ext=…`.
    pub params: Params,
}

impl Uri {
    /// Parses an absolute URI.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        if s.is_empty() || !s.bytes().all(is_uri_byte) {
            return Err(ParseError::InvalidUri);
        }
        let (scheme, rest) = s.split_once(':').ok_or(ParseError::InvalidUri)?;
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse_rest(Scheme::Sip, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_rest(Scheme::Sips, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse_rest(rest).map(Uri::Tel)
        } else if is_scheme(scheme) && !rest.is_empty() {
            Ok(Uri::Other(s.to_owned()))
        } else {
            Err(ParseError::InvalidUri)
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The user part of a SIP URI or the number of a tel URI.
    pub fn user(&self) -> Option<&str> {
        match self {
            Uri::Sip(u) => u.user.as_deref(),
            Uri::Tel(t) => Some(&t.number),
            Uri::Other(_) => None,
        }
    }
}

/// Printable ASCII without blanks, quotes or angle brackets.
fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"\"<>".contains(&b)
}

fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

impl SipUri {
    /// A URI with just a scheme and host, to be filled in by the caller.
    pub fn new(scheme: Scheme, host: Host) -> Self {
        SipUri {
            scheme,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: None,
        }
    }

    fn parse_rest(scheme: Scheme, rest: &str) -> Result<SipUri, ParseError> {
        let (userinfo, rest) = match rest.split_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_owned())),
            None => (rest, None),
        };
        let (hostport, params) = match rest.split_once(';') {
            Some((hp, p)) => (
                hp,
                Params::parse(p, "URI").map_err(|_| ParseError::InvalidUri)?,
            ),
            None => (rest, Params::new()),
        };
        let (host, port) = parse_hostport(hostport).ok_or(ParseError::InvalidUri)?;
        let (user, password) = match userinfo {
            Some(u) => parse_userinfo(u)?,
            None => (None, None),
        };
        Ok(SipUri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The `transport` URI parameter, if any.
    pub fn transport(&self) -> Option<&str> {
        self.params.value("transport")
    }

    /// True for a loose-routing URI (`;lr`).
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }
}

fn parse_userinfo(u: &str) -> Result<(Option<String>, Option<String>), ParseError> {
    let (user, password) = match u.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (u, None),
    };
    if user.is_empty() {
        return Err(ParseError::InvalidUri);
    }
    let password = password.map(percent_decode).transpose()?;
    Ok((Some(percent_decode(user)?), password))
}

/// Parses `host[:port]` with blanks allowed around the colon (as Via
/// sent-by permits). Returns `None` when malformed.
pub fn parse_hostport(s: &str) -> Option<(Host, Option<u16>)> {
    let s = s.trim_matches([' ', '\t']);
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let host = Host::V6(addr.parse().ok()?);
        (host, after.trim_start_matches([' ', '\t']))
    } else {
        let end = s.find(':').unwrap_or(s.len());
        let (h, after) = s.split_at(end);
        (parse_host(h.trim_end_matches([' ', '\t']))?, after)
    };
    if port.is_empty() {
        return Some((host, None));
    }
    let digits = port.strip_prefix(':')?.trim_start_matches([' ', '\t']);
    Some((host, Some(parse_port(digits)?)))
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_host(h: &str) -> Option<Host> {
    if h.is_empty() {
        return None;
    }
    if let Ok(v4) = h.parse::<Ipv4Addr>() {
        return Some(Host::V4(v4));
    }
    let ok = h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    ok.then(|| Host::Domain(h.to_owned()))
}

/// Decodes `%XX` escapes; a bad escape or a result that is not UTF-8 is an error.
pub fn percent_decode(s: &str) -> Result<String, ParseError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = bytes.next().and_then(hex_val);
        let lo = bytes.next().and_then(hex_val);
        match (hi, lo) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return Err(ParseError::InvalidUri),
        }
    }
    String::from_utf8(out).map_err(|_| ParseError::InvalidUri)
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Writes a user or password part, escaping everything outside
/// `unreserved / user-unreserved` (RFC 3261 §25.1).
fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            write!(f, "{}", char::from(b))?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl TelUri {
    fn parse_rest(rest: &str) -> Result<TelUri, ParseError> {
        let (number, params) = match rest.split_once(';') {
            Some((n, p)) => (
                n,
                Params::parse(p, "URI").map_err(|_| ParseError::InvalidUri)?,
            ),
            None => (rest, Params::new()),
        };
        let ok = !number.is_empty()
            && number
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b"+-.()*#pPwW".contains(&b));
        if !ok {
            return Err(ParseError::InvalidUri);
        }
        Ok(TelUri {
            number: number.to_owned(),
            params,
        })
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        })?;
        if let Some(user) = &self.user {
            write_escaped(f, user)?;
            if let Some(pw) = &self.password {
                f.write_str(":")?;
                write_escaped(f, pw)?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}{}", self.number, self.params)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => t.fmt(f),
            Uri::Other(s) => f.write_str(s),
        }
    }
}

impl std::str::FromStr for Uri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn full_sip_uri() {
        let u = sip("sip:alice:secret@atlanta.com:5061;transport=tcp;lr?subject=x");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Domain("atlanta.com".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr());
        assert_eq!(u.headers.as_deref(), Some("subject=x"));
    }

    #[test]
    fn hosts() {
        assert_eq!(sip("sip:1.2.3.4").host, Host::V4(Ipv4Addr::new(1, 2, 3, 4)));
        let v6 = sip("sips:bob@[2001:db8::10]:5070");
        assert_eq!(v6.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(v6.port, Some(5070));
        assert_eq!(v6.to_string(), "sips:bob@[2001:db8::10]:5070");
        for bad in [
            "sip:",
            "sip:@h",
            "sip:h:99999",
            "sip:[::1",
            "sip:a b",
            "sip:h:",
            "x",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escapes_decode_and_reencode() {
        let u = sip("sip:%61lice%20b@h");
        assert_eq!(u.user.as_deref(), Some("alice b"));
        assert_eq!(u.to_string(), "sip:alice%20b@h");
        assert_eq!(
            sip("sip:null-%00-null@h").user.as_deref(),
            Some("null-\0-null")
        );
        assert!(Uri::parse("sip:%zz@h").is_err());
        assert!(Uri::parse("sip:%ff@h").is_err());
    }

    #[test]
    fn tel_and_other() {
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(t.user(), Some("+1-201-555-0123"));
        assert_eq!(
            t.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        assert_eq!(
            Uri::parse("urn:service:sos").unwrap(),
            Uri::Other("urn:service:sos".into())
        );
    }
}
