//! The header container and the lexical helpers every typed header shares.
//!
//! [`Headers`] keeps header lines in arrival order with duplicates, names
//! normalized to their canonical full form (compact `v` becomes `Via`,
//! `call-id` becomes `Call-ID`), values as received after unfolding and
//! trimming. Typed views (Via, From, CSeq…) live in [`super::typed`] and parse
//! on demand, so a proxy-style pass-through never pays for them.
//!
//! The splitting helpers here understand quoted strings (with backslash
//! escapes) and `<…>` so a comma or semicolon inside either never splits.

use std::borrow::Cow;
use std::fmt;

use super::error::ParseError;

/// One header line: canonical name and raw (unfolded, trimmed) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name: a `&'static str` for the headers we know, so the
    /// common case allocates nothing for the name.
    pub name: Cow<'static, str>,
    /// The value as received, folding replaced by one space, outer blanks trimmed.
    pub value: String,
}

/// Ordered header lines, duplicates kept, case-insensitive lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// An empty list with room for `n` headers.
    pub fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n))
    }

    /// Appends a header; the name is normalized (compact forms expanded).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    /// Replaces the first header of that name in place (removing any later
    /// ones), or appends it when absent.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.position(name) {
            Some(i) => {
                let mut seen = false;
                self.0.retain(|h| {
                    let same = h.name.eq_ignore_ascii_case(name_for_compare(name));
                    let keep = !same || !seen;
                    seen |= same;
                    keep
                });
                if let Some(h) = self.0.get_mut(i) {
                    h.value = value;
                }
            }
            None => self.push(name, value),
        }
    }

    /// Removes every header of that name; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let target = name_for_compare(name);
        let before = self.0.len();
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(target));
        before - self.0.len()
    }

    /// The value of the first header of that name (compact names accepted).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Values of every header line of that name, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let target = canonical_name(name);
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&target))
            .map(|h| h.value.as_str())
    }

    /// Every comma-separated element of every header line of that name,
    /// split outside quotes and `<…>` (RFC 3261 §7.3.1), trimmed, empty
    /// elements skipped.
    pub fn list<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(|v| split_top(v, b','))
            .map(trim_lws)
            .filter(|s| !s.is_empty())
    }

    /// True when at least one header of that name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All header lines in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Option<usize> {
        let target = name_for_compare(name);
        self.0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(target))
    }

    /// Appends an already-normalized header (parser fast path).
    pub(crate) fn push_header(&mut self, header: Header) {
        self.0.push(header);
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Expands a compact name to its canonical full name; compares by that.
fn name_for_compare(name: &str) -> &str {
    match canonical_name(name) {
        Cow::Borrowed(s) => s,
        Cow::Owned(_) => name,
    }
}

/// The canonical spelling of a header name: compact forms (RFC 3261 §7.3.3
/// and later RFCs) expanded, well-known names in their usual case, unknown
/// names kept as received.
pub fn canonical_name(name: &str) -> Cow<'static, str> {
    let mut buf = [0u8; 24];
    let bytes = name.as_bytes();
    let Some(slot) = buf.get_mut(..bytes.len()) else {
        return Cow::Owned(name.to_owned());
    };
    for (d, s) in slot.iter_mut().zip(bytes) {
        *d = s.to_ascii_lowercase();
    }
    match known_name(slot) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(name.to_owned()),
    }
}

fn known_name(lower: &[u8]) -> Option<&'static str> {
    Some(match lower {
        b"via" | b"v" => "Via",
        b"from" | b"f" => "From",
        b"to" | b"t" => "To",
        b"call-id" | b"i" => "Call-ID",
        b"cseq" => "CSeq",
        b"contact" | b"m" => "Contact",
        b"content-length" | b"l" => "Content-Length",
        b"content-type" | b"c" => "Content-Type",
        b"supported" | b"k" => "Supported",
        b"subject" | b"s" => "Subject",
        b"content-encoding" | b"e" => "Content-Encoding",
        b"event" | b"o" => "Event",
        b"refer-to" | b"r" => "Refer-To",
        b"referred-by" | b"b" => "Referred-By",
        b"allow-events" | b"u" => "Allow-Events",
        b"session-expires" | b"x" => "Session-Expires",
        b"max-forwards" => "Max-Forwards",
        b"route" => "Route",
        b"record-route" => "Record-Route",
        b"authorization" => "Authorization",
        b"www-authenticate" => "WWW-Authenticate",
        b"proxy-authenticate" => "Proxy-Authenticate",
        b"proxy-authorization" => "Proxy-Authorization",
        b"authentication-info" => "Authentication-Info",
        b"expires" => "Expires",
        b"min-expires" => "Min-Expires",
        b"retry-after" => "Retry-After",
        b"user-agent" => "User-Agent",
        b"server" => "Server",
        b"allow" => "Allow",
        b"require" => "Require",
        b"proxy-require" => "Proxy-Require",
        b"unsupported" => "Unsupported",
        b"timestamp" => "Timestamp",
        b"date" => "Date",
        b"warning" => "Warning",
        b"reason" => "Reason",
        b"accept" => "Accept",
        b"accept-encoding" => "Accept-Encoding",
        b"accept-language" => "Accept-Language",
        b"content-disposition" => "Content-Disposition",
        b"rseq" => "RSeq",
        b"rack" => "RAck",
        b"min-se" => "Min-SE",
        b"p-asserted-identity" => "P-Asserted-Identity",
        b"privacy" => "Privacy",
        b"organization" => "Organization",
        b"subscription-state" => "Subscription-State",
        b"mime-version" => "MIME-Version",
        _ => return None,
    })
}

/// True for RFC 3261 `token` characters.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// True when `s` is a non-empty RFC 3261 token.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Trims SP and HTAB (linear white space after unfolding) from both ends.
pub fn trim_lws(s: &str) -> &str {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or("")
}

/// Splits `s` on `sep` wherever it is outside a quoted string and outside
/// `<…>`. Never panics: an unterminated quote or bracket just runs to the end.
pub fn split_top(s: &str, sep: u8) -> SplitTop<'_> {
    SplitTop { rest: Some(s), sep }
}

/// Iterator returned by [`split_top`].
pub struct SplitTop<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for SplitTop<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match find_top(s, self.sep) {
            Some(i) => {
                self.rest = s.get(i + 1..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// Index of the first `sep` outside quotes and angle brackets.
pub fn find_top(s: &str, sep: u8) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut angle = false;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
            continue;
        }
        match b {
            b'"' => in_quote = true,
            _ if b == sep && !angle => return Some(i),
            b'<' => angle = true,
            b'>' => angle = false,
            _ => {}
        }
    }
    None
}

/// Parses a quoted string at the start of `s` (which must begin with `"`),
/// returning the unescaped content and the rest after the closing quote.
pub fn parse_quoted(s: &str) -> Result<(String, &str), ParseError> {
    let body = s.strip_prefix('"').ok_or(ParseError::InvalidHeaderLine)?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, body.get(i + 1..).unwrap_or(""))),
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => break,
            },
            _ => out.push(c),
        }
    }
    Err(ParseError::InvalidHeaderLine)
}

/// Writes `s` as a quoted string, escaping `"`, `\` and control characters
/// (quoted-pairs, RFC 3261 §25.1); CR and LF, which no quoted-pair may hold,
/// become spaces.
pub fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '\r' | '\n' => f.write_char(' ')?,
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c if c.is_ascii_control() && c != '\t' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// `;name[=value]` parameters of a URI or header, in order, names compared
/// case-insensitively. Values are kept as written (a quoted value keeps its
/// quotes) so they serialize back unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// Parses `a=b;c;d="x;y"` (no leading semicolon). Blanks around `;` and
    /// `=` are allowed; an empty element (`a;;b`) or a non-token name is an error.
    pub fn parse(s: &str, what: &'static str) -> Result<Params, ParseError> {
        let mut out = Vec::new();
        for part in split_top(s, b';') {
            out.push(parse_param(trim_lws(part), what)?);
        }
        Ok(Params(out))
    }

    /// Parses what follows a value: empty, or `;`-prefixed parameters.
    pub fn parse_tail(s: &str, what: &'static str) -> Result<Params, ParseError> {
        let s = trim_lws(s);
        if s.is_empty() {
            return Ok(Params::new());
        }
        let rest = s.strip_prefix(';').ok_or(ParseError::InvalidHeader(what))?;
        Params::parse(rest, what)
    }

    /// `Some(value)` if present (`Some(None)` for a flag like `;lr`).
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The value of a parameter, `None` when absent or valueless.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    /// True when the parameter is present, with or without a value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets a parameter, replacing an existing one of the same name.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Removes every parameter named `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_param(part: &str, what: &'static str) -> Result<(String, Option<String>), ParseError> {
    let bad = ParseError::InvalidHeader(what);
    let (name, value) = match part.split_once('=') {
        Some((n, v)) => (trim_lws(n), Some(trim_lws(v))),
        None => (part, None),
    };
    if !is_token(name) {
        return Err(bad);
    }
    if let Some(v) = value {
        if !is_param_value(v) {
            return Err(bad);
        }
    }
    Ok((name.to_owned(), value.map(str::to_owned)))
}

/// A parameter value: a quoted string, or printable characters without
/// blanks, quotes, separators or angle brackets (tokens, hosts, `[v6]`).
fn is_param_value(v: &str) -> bool {
    if v.starts_with('"') {
        return matches!(parse_quoted(v), Ok((_, rest)) if rest.is_empty());
    }
    v.bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"<>,;".contains(&b))
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_lookup() {
        let mut h = Headers::new();
        h.push("v", "SIP/2.0/UDP a");
        h.push("CALL-ID", "x");
        h.push("X-Custom", "1");
        assert_eq!(h.get("via"), Some("SIP/2.0/UDP a"));
        assert_eq!(h.get("i"), Some("x"));
        assert_eq!(h.iter().nth(1).map(|x| &*x.name), Some("Call-ID"));
        assert_eq!(h.get("x-custom"), Some("1"));
    }

    #[test]
    fn set_replaces_first_and_drops_rest() {
        let mut h = Headers::new();
        h.push("A", "1");
        h.push("Y", "2");
        h.push("a", "3");
        h.set("a", "9");
        let v: Vec<_> = h.iter().map(|x| (&*x.name, x.value.as_str())).collect();
        assert_eq!(v, [("A", "9"), ("Y", "2")]);
        assert_eq!(h.remove("y"), 1);
    }

    #[test]
    fn split_respects_quotes_and_brackets() {
        let v: Vec<_> = split_top(r#""a,\"b" <sip:x;a,b>;p=1, <sip:y>"#, b',').collect();
        assert_eq!(v, [r#""a,\"b" <sip:x;a,b>;p=1"#, " <sip:y>"]);
    }

    #[test]
    fn quoted_roundtrip() {
        let (s, rest) = parse_quoted(r#""a\"b\\c" tail"#).unwrap();
        assert_eq!((s.as_str(), rest), ("a\"b\\c", " tail"));
        let mut out = String::new();
        write_quoted(&mut out, &s).unwrap();
        assert_eq!(out, r#""a\"b\\c""#);
        assert!(parse_quoted("\"open").is_err());
    }

    #[test]
    fn params() {
        let p = Params::parse("branch=z9 ; lr;x=\"a;b\"", "Via").unwrap();
        assert_eq!(p.value("BRANCH"), Some("z9"));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.value("x"), Some("\"a;b\""));
        assert_eq!(p.to_string(), ";branch=z9;lr;x=\"a;b\"");
        assert!(Params::parse("a;;b", "Via").is_err());
        assert!(Params::parse("a b=c", "Via").is_err());
    }
}
