//! Bytes to [`SipMessage`]: framing for streams and datagrams, the start
//! line, header lines, Content-Length, and the 400 for what fails.
//!
//! Two passes over the input. `scan_head` walks lines only (no allocation
//! but one `Vec` of line slices) to find the end of the header block,
//! enforcing the [`Limits`] as it goes, so an abusive peer is stopped before
//! anything is built. Then the start line and header lines are parsed, each
//! header value copied once into its `String`. Finally the headers every
//! transaction needs (Via, From, To, Call-ID, CSeq) are validated so nothing
//! past this module has to wonder whether they exist.
//!
//! Leniency, following RFC 3261 §7.5 and RFC 4475: bare LF line ends, leading
//! CRLFs (keep-alives), folded header lines, blanks around the colon, and
//! non-UTF-8 bytes in header values (replaced by U+FFFD; the body is raw bytes
//! and untouched). Strict where it protects what we send on: control
//! characters (a lone CR, NUL…) in a header value or reason phrase are
//! malformed, so a copied header can never smuggle a line break — except
//! inside a quoted string as a quoted-pair (`\` then any octet but CR and LF,
//! RFC 3261 §25.1), which is valid SIP (RFC 4475 "intmeth": a To display
//! name holding escaped BEL, NUL and DEL) and still cannot break a line.

use super::error::ParseError;
use super::header::{canonical_name, is_token, trim_lws, Header, Headers};
use super::message::{Method, Request, Response, SipMessage};
use super::uri::Uri;

/// The RFC 5626 keep-alive a client sends (double CRLF).
pub const PING: &[u8] = b"\r\n\r\n";
/// The answer to [`PING`] (single CRLF).
pub const PONG: &[u8] = b"\r\n";

/// Bounds that keep a hostile peer from costing us memory or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (header block plus body), in bytes.
    pub max_message: usize,
    /// Most header lines (continuation lines count).
    pub max_headers: usize,
    /// Longest single line, in bytes.
    pub max_line: usize,
}

impl Default for Limits {
    /// 64 KiB messages, 128 header lines, 8 KiB lines.
    fn default() -> Self {
        Limits {
            max_message: 64 * 1024,
            max_headers: 128,
            max_line: 8 * 1024,
        }
    }
}

/// A message parsed from the front of a stream buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The message.
    pub message: SipMessage,
    /// Bytes to drain from the buffer (leading CRLFs, head and body).
    pub consumed: usize,
}

/// True when `buf` starts with an RFC 5626 double-CRLF ping: the transport
/// answers [`PONG`] and drains 4 bytes before parsing on.
pub fn is_keepalive_ping(buf: &[u8]) -> bool {
    buf.starts_with(PING)
}

/// Parses the first message of a stream (TCP/TLS) buffer with default limits.
///
/// Returns [`ParseError::Incomplete`] until the header block and the body
/// Content-Length announces are both in `buf`; a header block whose
/// required headers are bad fails at once, before its body arrives. A missing Content-Length
/// reads as 0 (RFC 3261 §18.3 makes it mandatory on streams; assuming an
/// empty body keeps framing). For any other error framing is lost: close
/// the connection after answering with [`response_to_malformed`].
pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    parse_with(buf, &Limits::default())
}

/// [`parse`] with explicit limits.
pub fn parse_with(buf: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let head = scan_head(buf, limits, false)?;
    let (message, declared) = build(&head)?;
    // A head that cannot be processed fails now, not after its body arrives.
    validate(&message)?;
    let len = declared.unwrap_or(0);
    let end = head.body_start.saturating_add(len);
    if end.saturating_sub(head.skip) > limits.max_message {
        return Err(too_large(limits));
    }
    let body = buf
        .get(head.body_start..end)
        .ok_or(ParseError::Incomplete)?;
    let message = attach(message, body);
    Ok(Parsed {
        message,
        consumed: end,
    })
}

/// Parses one UDP datagram with default limits: without Content-Length the
/// body runs to the end; with it, extra bytes are discarded and too few are
/// [`ParseError::BodyTruncated`] (RFC 3261 §18.3).
pub fn parse_datagram(buf: &[u8]) -> Result<SipMessage, ParseError> {
    parse_datagram_with(buf, &Limits::default())
}

/// [`parse_datagram`] with explicit limits.
pub fn parse_datagram_with(buf: &[u8], limits: &Limits) -> Result<SipMessage, ParseError> {
    if buf.len() > limits.max_message {
        return Err(too_large(limits));
    }
    let head = scan_head(buf, limits, true)?;
    let (message, declared) = build(&head)?;
    let rest = buf.get(head.body_start..).unwrap_or(&[]);
    let body = match declared {
        Some(n) => rest.get(..n).ok_or(ParseError::BodyTruncated)?,
        None => rest,
    };
    finish(message, body)
}

fn too_large(limits: &Limits) -> ParseError {
    ParseError::TooLarge {
        limit: limits.max_message,
    }
}

/// Where the parts of a message lie in the buffer.
struct Head<'a> {
    /// Leading CR/LF bytes skipped.
    skip: usize,
    /// The start line and header lines, line ends stripped.
    lines: Vec<&'a [u8]>,
    /// Index just past the blank line ending the header block.
    body_start: usize,
}

/// Finds the header block. `datagram` turns "only CRLFs" into
/// [`ParseError::Empty`] instead of [`ParseError::Incomplete`].
fn scan_head<'a>(buf: &'a [u8], limits: &Limits, datagram: bool) -> Result<Head<'a>, ParseError> {
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if skip > limits.max_message {
        return Err(too_large(limits));
    }
    if skip == buf.len() {
        return Err(if datagram {
            ParseError::Empty
        } else {
            ParseError::Incomplete
        });
    }
    let mut lines = Vec::with_capacity(24);
    let mut pos = skip;
    loop {
        let rest = buf.get(pos..).unwrap_or(&[]);
        let Some(nl) = find_lf(rest) else {
            if datagram {
                return end_of_datagram(buf, skip, lines, rest, limits);
            }
            return incomplete(&lines, rest.len(), pos - skip, limits);
        };
        let line = rest.get(..nl).unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let count = if line.is_empty() { 0 } else { lines.len() };
        check_line(line.len(), count, pos - skip + nl, limits)?;
        pos += nl + 1;
        if line.is_empty() {
            return Ok(Head {
                skip,
                lines,
                body_start: pos,
            });
        }
        lines.push(line);
    }
}

/// Index of the first LF, eight bytes at a time (the head scan is the one
/// loop that touches every byte of every message).
fn find_lf(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ (ONES * u64::from(b'\n'));
        if x.wrapping_sub(ONES) & !x & HIGH != 0 {
            break;
        }
        base += 8;
    }
    let tail = s.get(base..)?;
    tail.iter().position(|&b| b == b'\n').map(|i| base + i)
}

fn check_line(len: usize, count: usize, size: usize, limits: &Limits) -> Result<(), ParseError> {
    if len > limits.max_line {
        return Err(ParseError::LineTooLong {
            limit: limits.max_line,
        });
    }
    if count > limits.max_headers {
        return Err(ParseError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    if size > limits.max_message {
        return Err(too_large(limits));
    }
    Ok(())
}

/// A datagram may end without the blank line: its end ends the head.
fn end_of_datagram<'a>(
    buf: &'a [u8],
    skip: usize,
    mut lines: Vec<&'a [u8]>,
    rest: &'a [u8],
    limits: &Limits,
) -> Result<Head<'a>, ParseError> {
    let line = rest.strip_suffix(b"\r").unwrap_or(rest);
    if !line.is_empty() {
        check_line(line.len(), lines.len(), buf.len() - skip, limits)?;
        lines.push(line);
    }
    Ok(Head {
        skip,
        lines,
        body_start: buf.len(),
    })
}

/// The head is not complete: fail early if what we have is already bad.
fn incomplete(
    lines: &[&[u8]],
    partial: usize,
    size: usize,
    limits: &Limits,
) -> Result<Head<'static>, ParseError> {
    check_line(partial, lines.len(), size + partial, limits)?;
    if let Some(first) = lines.first() {
        parse_start_line(first)?;
    }
    Err(ParseError::Incomplete)
}

/// The first line, parsed.
enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    if line.len() >= 4
        && line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return parse_status_line(line);
    }
    let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidStartLine)?;
    // Exactly one space between the parts (RFC 3261 §7.1): no leading blank.
    if line.starts_with([' ', '\t']) {
        return Err(ParseError::InvalidStartLine);
    }
    let (method, rest) = line.split_once(' ').ok_or(ParseError::InvalidStartLine)?;
    let (uri, version) = rest.rsplit_once(' ').ok_or(ParseError::InvalidStartLine)?;
    check_version(version)?;
    let method = Method::parse(method)?;
    if uri.is_empty() || uri.contains([' ', '\t']) {
        return Err(ParseError::InvalidStartLine);
    }
    Ok(StartLine::Request(method, Uri::parse(uri)?))
}

fn check_version(v: &str) -> Result<(), ParseError> {
    // Whitespace or a control character around the version is a malformed start line
    // (400), not another version (505).
    if v.bytes().any(|b| b.is_ascii_whitespace() || is_ctl(b)) {
        return Err(ParseError::InvalidStartLine);
    }
    if v.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else if v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        Err(ParseError::UnsupportedVersion)
    } else {
        Err(ParseError::InvalidStartLine)
    }
}

fn parse_status_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let sp = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ParseError::InvalidStartLine)?;
    let (version, rest) = line.split_at(sp);
    let version = std::str::from_utf8(version).map_err(|_| ParseError::InvalidStartLine)?;
    check_version(version)?;
    let rest = rest.get(1..).unwrap_or(&[]);
    let code = rest.get(..3).ok_or(ParseError::InvalidStatus)?;
    let after = rest.get(3..).unwrap_or(&[]);
    if !code.iter().all(u8::is_ascii_digit) || !(after.is_empty() || after.starts_with(b" ")) {
        return Err(ParseError::InvalidStatus);
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&status) {
        return Err(ParseError::InvalidStatus);
    }
    let reason = after.get(1..).unwrap_or(&[]);
    if reason.iter().any(|&b| is_ctl(b)) {
        return Err(ParseError::InvalidStatus);
    }
    let reason = String::from_utf8_lossy(reason);
    Ok(StartLine::Response(status, trim_lws(&reason).to_owned()))
}

/// Parses the header lines, unfolding continuations.
fn parse_headers(lines: &[&[u8]]) -> Result<Headers, ParseError> {
    let mut headers: Vec<Header> = Vec::with_capacity(lines.len());
    for &line in lines {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            let last = headers.last_mut().ok_or(ParseError::InvalidHeaderLine)?;
            append_continuation(&mut last.value, line)?;
        } else {
            headers.push(parse_header_line(line)?);
        }
    }
    let mut out = Headers::with_capacity(headers.len());
    for h in headers {
        out.push_header(h);
    }
    Ok(out)
}

fn append_continuation(value: &mut String, line: &[u8]) -> Result<(), ParseError> {
    if has_bare_ctl(line) {
        return Err(ParseError::InvalidHeaderLine);
    }
    let cont = String::from_utf8_lossy(line);
    let cont = trim_lws(&cont);
    if cont.is_empty() {
        return Ok(());
    }
    if !value.is_empty() {
        value.push(' ');
    }
    value.push_str(cont);
    Ok(())
}

fn parse_header_line(line: &[u8]) -> Result<Header, ParseError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ParseError::InvalidHeaderLine)?;
    let (name, value) = line.split_at(colon);
    let name = std::str::from_utf8(name).map_err(|_| ParseError::InvalidHeaderLine)?;
    let name = name.trim_end_matches([' ', '\t']);
    if !is_token(name) {
        return Err(ParseError::InvalidHeaderLine);
    }
    let value = value.get(1..).unwrap_or(&[]);
    if has_bare_ctl(value) {
        return Err(ParseError::InvalidHeaderLine);
    }
    Ok(Header {
        name: canonical_name(name),
        value: text(value),
    })
}

/// Bytes as trimmed text: one UTF-8 check on the fast path, U+FFFD for
/// invalid sequences otherwise.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => trim_lws(s).to_owned(),
        Err(_) => trim_lws(&String::from_utf8_lossy(bytes)).to_owned(),
    }
}

/// Control characters other than HTAB: never allowed in a header value or
/// reason phrase (RFC 3261 §25.1 TEXT-UTF8), so none can reach our output.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// True when a header value holds a control character that is not escaped
/// as a quoted-pair inside a quoted string (`"BEL:\<07>"` is valid SIP), or
/// an escaped CR or LF (which no quoted-pair may hold). One pass over the
/// bytes on the usual path (no control character at all).
fn has_bare_ctl(value: &[u8]) -> bool {
    if !value.iter().any(|&b| is_ctl(b)) {
        return false;
    }
    let (mut quoted, mut escaped) = (false, false);
    for &b in value {
        if escaped {
            if b == b'\r' || b == b'\n' {
                return true;
            }
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if is_ctl(b) {
            return true;
        }
    }
    false
}

/// Builds the message without its body; returns the declared Content-Length.
fn build(head: &Head<'_>) -> Result<(SipMessage, Option<usize>), ParseError> {
    let (first, rest) = head
        .lines
        .split_first()
        .ok_or(ParseError::InvalidStartLine)?;
    let start = parse_start_line(first)?;
    let mut headers = parse_headers(rest)?;
    let declared = normalize_content_length(&mut headers)?;
    let message = match start {
        StartLine::Request(method, uri) => SipMessage::Request(Request {
            method,
            uri,
            headers,
            body: Vec::new(),
        }),
        StartLine::Response(status, reason) => SipMessage::Response(Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        }),
    };
    Ok((message, declared))
}

/// Checks every Content-Length agrees, keeps only the first, rewritten in
/// canonical decimal; returns its value.
fn normalize_content_length(headers: &mut Headers) -> Result<Option<usize>, ParseError> {
    let mut value: Option<usize> = None;
    for v in headers.get_all("Content-Length") {
        let n = parse_length(v)?;
        if value.is_some_and(|prev| prev != n) {
            return Err(ParseError::InvalidContentLength);
        }
        value = Some(n);
    }
    if let Some(n) = value {
        headers.set("Content-Length", n.to_string());
    }
    Ok(value)
}

fn parse_length(v: &str) -> Result<usize, ParseError> {
    let ok = !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(ParseError::InvalidContentLength);
    }
    v.parse().map_err(|_| ParseError::InvalidContentLength)
}

/// Attaches the body and validates the headers every transaction needs.
fn finish(message: SipMessage, body: &[u8]) -> Result<SipMessage, ParseError> {
    validate(&message)?;
    Ok(attach(message, body))
}

/// Attaches the body to a validated message.
fn attach(mut message: SipMessage, body: &[u8]) -> SipMessage {
    match &mut message {
        SipMessage::Request(r) => r.body = body.to_vec(),
        SipMessage::Response(r) => r.body = body.to_vec(),
    }
    message
}

/// RFC 3261 §8.1.1: Via, From, To, Call-ID and CSeq must be present, single
/// (Via excepted) and well-formed; a request's CSeq method is its method.
fn validate(message: &SipMessage) -> Result<(), ParseError> {
    let h = message.headers();
    h.top_via()?;
    h.from()?;
    h.to()?;
    h.call_id()?;
    let cseq = h.cseq()?;
    match message {
        SipMessage::Request(r) if r.method != cseq.method => Err(ParseError::CSeqMethodMismatch),
        _ => Ok(()),
    }
}

/// The response RFC 3261 allows for bytes that failed to parse with
/// `error`: 400 (505 for a version, 513 for size) whose reason phrase names
/// the problem, e.g. "Bad Request (missing Call-ID)".
///
/// `None` — drop silently — when the error is no failure (incomplete,
/// keep-alive), when the bytes are not a request or are an ACK, or when any
/// of Via, From, To, Call-ID and CSeq is absent (no response can be built or
/// matched without them, §16.3 / §18.3). Header lines that fail to parse are
/// skipped here, so one bad header does not prevent the 400 naming it.
pub fn response_to_malformed(buf: &[u8], error: &ParseError) -> Option<Response> {
    let status = error.status()?;
    let lines = lenient_lines(buf);
    let (first, rest) = lines.split_first()?;
    let method = lenient_method(first)?;
    if !method.expects_response() {
        return None;
    }
    let headers = lenient_headers(rest);
    let mut resp = Response::new(status, error.reason_phrase());
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let mut found = false;
        for v in headers.get_all(name).filter(|v| !v.is_empty()) {
            resp.headers.push(name, v);
            found = true;
        }
        if !found {
            return None;
        }
    }
    Some(resp.with_to_tag(&super::message::new_tag()))
}

/// Up to 128 lines of the head, bare of line ends, capped at 64 KiB.
fn lenient_lines(buf: &[u8]) -> Vec<&[u8]> {
    let limits = Limits::default();
    let start = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let head = buf.get(start..).unwrap_or(&[]);
    let head = head.get(..limits.max_message).unwrap_or(head);
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .take(limits.max_headers + 1)
        .collect()
}

/// A request line good enough to answer: a method token and a SIP version,
/// blanks at the end ignored (RFC 4475 "trws" deserves its 400).
fn lenient_method(line: &[u8]) -> Option<Method> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches([' ', '\t']);
    let (method, rest) = line.split_once(' ')?;
    let (_, version) = rest.rsplit_once(' ')?;
    if !version.get(..4)?.eq_ignore_ascii_case("SIP/") {
        return None;
    }
    Method::parse(method).ok()
}

/// Header lines that parse, unfolded; the rest skipped; long lines skipped.
fn lenient_headers(lines: &[&[u8]]) -> Headers {
    let max_line = Limits::default().max_line;
    let mut out: Vec<Header> = Vec::new();
    for &line in lines.iter().filter(|l| l.len() <= max_line) {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if let Some(last) = out.last_mut() {
                let _ = append_continuation(&mut last.value, line);
            }
        } else if let Ok(h) = parse_header_line(line) {
            out.push(h);
        }
    }
    let mut headers = Headers::with_capacity(out.len());
    for h in out {
        headers.push_header(h);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blanks around the parts of a start line are a 400 (malformed), not a 505 (another
    /// version) nor a method named "".
    #[test]
    fn blanks_around_the_start_line_are_malformed() {
        let err = |l: &str| parse_start_line(l.as_bytes()).err();
        for bad in [
            "INVITE sip:a@example.org SIP/2.0\t",
            "INVITE sip:a@example.org SIP/2.0 ",
            " INVITE sip:a@example.org SIP/2.0",
            "\tINVITE sip:a@example.org SIP/2.0",
            "INVITE sip:a@example.org \tSIP/2.0",
            "SIP/2.0\t200 OK",
        ] {
            assert_eq!(err(bad), Some(ParseError::InvalidStartLine), "{bad:?}");
        }
        assert_eq!(
            err("INVITE sip:a@example.org SIP/7.0"),
            Some(ParseError::UnsupportedVersion)
        );
        assert_eq!(err("INVITE sip:a@example.org SIP/2.0"), None);
    }

    proptest::proptest! {
        #[test]
        fn find_lf_matches_naive(bytes in proptest::collection::vec(proptest::sample::select(vec![b'\n', b'\r', b'a', 0x0b, 0x8a, 0xff]), 0..40)) {
            let naive = bytes.iter().position(|&b| b == b'\n');
            proptest::prop_assert_eq!(find_lf(&bytes), naive);
        }
    }
}
