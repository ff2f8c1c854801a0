//! Integration tests of the SIP message layer: real-world messages,
//! RFC 4475-style torture cases, framing, limits, the 400 for malformed
//! requests, builders, and property tests (round trip, never panic).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use proptest::prelude::*;
use sallyport::sip::header::Headers;
use sallyport::sip::message::{
    is_keepalive_ping, new_branch, new_call_id, new_tag, parse, parse_datagram, parse_with,
    response_to_malformed, Limits, Method, ParseError, Request, RequestBuilder, Response,
    SipMessage,
};
use sallyport::sip::typed::{Contact, NameAddr, Transport, Via};
use sallyport::sip::uri::{Host, Uri};

/// Joins lines with CRLF and appends the body after a blank line.
fn msg(lines: &[&str], body: &str) -> Vec<u8> {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n\r\n");
    s.push_str(body);
    s.into_bytes()
}

const SDP: &str = "v=0\r\no=- 3912 3912 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n";

fn softphone_invite() -> Vec<u8> {
    let cl = format!("Content-Length: {}", SDP.len());
    msg(
        &[
            "INVITE sip:15551234567@gw.facility.example;transport=udp SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-524287-1---6a1f0e2d3c4b5a69;rport",
            "Max-Forwards: 70",
            "Contact: <sip:unit4-phone17@192.168.1.20:5060;transport=UDP>",
            "To: <sip:15551234567@gw.facility.example>",
            "From: \"Unit 4 Phone 17\"<sip:unit4-phone17@gw.facility.example>;tag=8c1b2f7e",
            "Call-ID: ZTk3NjY5YjQ3ZjQ2NjU3ZTk1YjY0ZDc2ZGE4ZjZjNjE",
            "CSeq: 1 INVITE",
            "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
            "Content-Type: application/sdp",
            "Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri",
            "User-Agent: Z 5.6.1 v2.10.20.1",
            "Allow-Events: presence, kpml, talk",
            &cl,
        ],
        SDP,
    )
}

fn request(m: SipMessage) -> Request {
    match m {
        SipMessage::Request(r) => r,
        SipMessage::Response(r) => panic!("expected request, got {}", r.status),
    }
}

fn response(m: SipMessage) -> Response {
    match m {
        SipMessage::Response(r) => r,
        SipMessage::Request(r) => panic!("expected response, got {}", r.method),
    }
}

#[test]
fn softphone_invite_with_sdp() {
    let bytes = softphone_invite();
    let req = request(parse_datagram(&bytes).unwrap());
    assert_eq!(req.method, Method::Invite);
    let uri = req.uri.as_sip().unwrap();
    assert_eq!(uri.user.as_deref(), Some("15551234567"));
    assert_eq!(uri.transport(), Some("udp"));
    let h = &req.headers;
    let via = h.top_via().unwrap();
    assert_eq!(via.transport, Transport::Udp);
    assert_eq!(via.host, Host::V4([192, 168, 1, 20].into()));
    assert_eq!(via.port, Some(5060));
    assert_eq!(via.branch(), Some("z9hG4bK-524287-1---6a1f0e2d3c4b5a69"));
    assert_eq!(via.rport(), Some(None));
    let from = h.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("Unit 4 Phone 17"));
    assert_eq!(from.tag(), Some("8c1b2f7e"));
    assert_eq!(h.to().unwrap().tag(), None);
    assert_eq!(
        h.call_id().unwrap(),
        "ZTk3NjY5YjQ3ZjQ2NjU3ZTk1YjY0ZDc2ZGE4ZjZjNjE"
    );
    let cseq = h.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, Method::Invite));
    assert_eq!(h.max_forwards().unwrap(), Some(70));
    assert_eq!(h.content_length().unwrap(), Some(SDP.len()));
    assert_eq!(h.content_type().unwrap().unwrap().mime, "application/sdp");
    assert!(matches!(&h.contacts().unwrap()[..], [Contact::Addr(_)]));
    assert_eq!(h.list("Allow").count(), 10);
    assert_eq!(req.body, SDP.as_bytes());

    let stream = parse(&bytes).unwrap();
    assert_eq!(stream.consumed, bytes.len());
    assert_eq!(stream.message, SipMessage::Request(req));
}

#[test]
fn sipp_compact_headers() {
    let bytes = msg(
        &[
            "INVITE sip:service@127.0.0.1:5060 SIP/2.0",
            "v: SIP/2.0/UDP 127.0.1.1:5061;branch=z9hG4bK-1-0",
            "f: sipp <sip:sipp@127.0.1.1:5061>;tag=1",
            "t: sut <sip:service@127.0.0.1:5060>",
            "i: 1-3130@127.0.1.1",
            "CSeq: 1 INVITE",
            "m: sip:sipp@127.0.1.1:5061",
            "Max-Forwards: 70",
            "s: Performance Test",
            "k: 100rel",
            "c: application/sdp",
            "l: 4",
        ],
        "v=0\n",
    );
    let req = request(parse_datagram(&bytes).unwrap());
    let names: Vec<&str> = req.headers.iter().map(|h| &*h.name).collect();
    assert_eq!(
        names,
        [
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Max-Forwards",
            "Subject",
            "Supported",
            "Content-Type",
            "Content-Length"
        ]
    );
    assert_eq!(req.headers.call_id().unwrap(), "1-3130@127.0.1.1");
    assert_eq!(req.headers.get("Subject"), Some("Performance Test"));
    assert_eq!(req.body, b"v=0\n");
    let out = String::from_utf8(req.to_bytes()).unwrap();
    assert!(out.contains("\r\nCall-ID: 1-3130@127.0.1.1\r\n"));
    assert!(out.ends_with("Content-Length: 4\r\n\r\nv=0\n"));
}

fn response_bytes(status: &str, extra: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        status,
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;received=192.0.2.9;rport=6000",
        "From: <sip:gw@10.0.0.5>;tag=aa",
        "To: <sip:+15551234567@trunk.example>;tag=bb",
        "Call-ID: c1@10.0.0.5",
        "CSeq: 2 INVITE",
    ];
    lines.extend_from_slice(extra);
    msg(&lines, "")
}

#[test]
fn common_responses() {
    let cases: [(&str, u16, bool); 5] = [
        ("SIP/2.0 100 Trying", 100, true),
        ("SIP/2.0 180 Ringing", 180, true),
        ("SIP/2.0 200 OK", 200, false),
        ("SIP/2.0 401 Unauthorized", 401, false),
        ("SIP/2.0 486 Busy Here", 486, false),
    ];
    for (line, status, provisional) in cases {
        let r = response(parse_datagram(&response_bytes(line, &[])).unwrap());
        assert_eq!(r.status, status);
        assert_eq!(r.is_provisional(), provisional);
        assert_eq!(r.is_final(), !provisional);
        assert_eq!(r.is_success(), status == 200);
        assert_eq!(r.is_failure(), status >= 300);
        let via = r.headers.top_via().unwrap();
        assert_eq!(
            (via.received(), via.rport()),
            (Some("192.0.2.9"), Some(Some(6000)))
        );
    }
    let challenge = r#"WWW-Authenticate: Digest realm="facility.example", nonce="abc", algorithm=MD5, qop="auth""#;
    let r = response(
        parse_datagram(&response_bytes("SIP/2.0 401 Unauthorized", &[challenge])).unwrap(),
    );
    let a = r.headers.www_authenticate().unwrap().unwrap();
    assert_eq!(
        (a.get("realm"), a.get("qop")),
        (Some("facility.example"), Some("auth"))
    );
    let busy = response_bytes(
        "SIP/2.0 486 Busy Here",
        &["Retry-After: 60 (busy) ;duration=10"],
    );
    let r = response(parse_datagram(&busy).unwrap());
    assert_eq!(r.headers.retry_after().unwrap().unwrap().seconds, 60);
    let r = response(parse_datagram(&response_bytes("SIP/2.0 200", &[])).unwrap());
    assert_eq!(r.reason, "");
}

/// In the spirit of RFC 4475 §3.1.1.1 "wsinv": odd case, spacing and folding.
#[test]
fn torture_whitespace_and_folding() {
    let body = "v=0\r\n";
    let cl = format!("Content-Length   : {}", body.len());
    let bytes = msg(
        &[
            "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
            "TO :",
            " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
            "from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>",
            "  ;",
            "  tag = 98asjd8",
            "MaX-fOrWaRdS: 0068",
            "Call-ID: wsinv.ndaksdj@192.0.2.1",
            &cl,
            "cseq: 0009",
            "  INVITE",
            "Via  : SIP  /   2.0",
            " /UDP",
            "    192.0.2.2;branch=390skdjuw",
            "s :",
            "NewFangledHeader:   newfangled value",
            " continued newfangled value",
            "UnknownHeaderWithUnusualValue: ;;,,;;,;",
            "Content-Type: application/sdp",
            "Route:",
            " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
            "v:  SIP  / 2.0  / TCP     spindle.example.com   ;",
            "  branch  =   z9hG4bK9ikj8  ,",
            " SIP  /    2.0   / UDP  192.168.255.111   ; branch=",
            " z9hG4bK30239",
            "m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =",
            "      newvalue ;",
            "  secondparam ; q = 0.33",
        ],
        body,
    );
    let req = request(parse_datagram(&bytes).unwrap());
    let h = &req.headers;
    assert_eq!(h.to().unwrap().tag(), Some("1918181833n"));
    let from = h.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(h.max_forwards().unwrap(), Some(68));
    assert_eq!(h.cseq().unwrap().seq, 9);
    assert_eq!(h.get("Subject"), Some(""));
    assert_eq!(
        h.get("newfangledheader"),
        Some("newfangled value continued newfangled value")
    );
    let vias = h.vias().unwrap();
    let branches: Vec<_> = vias.iter().map(|v| v.branch().unwrap()).collect();
    assert_eq!(branches, ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]);
    assert_eq!(vias[1].transport, Transport::Tcp);
    assert_eq!(vias[1].host, Host::Domain("spindle.example.com".into()));
    let Contact::Addr(c) = &h.contacts().unwrap()[0] else {
        panic!("wildcard")
    };
    assert_eq!(c.display_name.as_deref(), Some("Quoted string \"\""));
    assert_eq!(c.params.value("newparam"), Some("newvalue"));
    assert_eq!(c.params.get("secondparam"), Some(None));
    assert_eq!(c.params.value("q"), Some("0.33"));
    let route = h.name_addrs("Route").unwrap();
    assert!(route[0].uri.as_sip().unwrap().lr());
    assert_eq!(req.body, body.as_bytes());
    assert_round_trip(&bytes);
}

/// RFC 4475 "esc01"/"escnull"-style escaping in URIs.
#[test]
fn torture_escapes() {
    let bytes = msg(
        &[
            "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
            "To: sip:%75se%72@example.com",
            "From: <sip:null-%00-null@example.com>;tag=839923423",
            "Max-Forwards: 70",
            "Call-ID: esc01.239409asdfakjkn23onasd0-3234",
            "CSeq: 234234 INVITE",
            "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw",
            "Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
        ],
        "",
    );
    let req = request(parse_datagram(&bytes).unwrap());
    assert_eq!(req.uri.user(), Some("sips:user@example.com"));
    assert_eq!(req.headers.to().unwrap().uri.user(), Some("user"));
    assert_eq!(req.headers.from().unwrap().uri.user(), Some("null-\0-null"));
    let Contact::Addr(c) = &req.headers.contacts().unwrap()[0] else {
        panic!()
    };
    assert_eq!(c.uri.user(), Some("caller"));
    assert_round_trip(&bytes);
}

fn basic_request(extra: &[&str], body: &str) -> Vec<u8> {
    let mut lines = vec![
        "OPTIONS sip:gw.example SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1",
        "From: <sip:a@10.0.0.1>;tag=1",
        "To: <sip:gw.example>",
        "Call-ID: x1",
        "CSeq: 1 OPTIONS",
    ];
    lines.extend_from_slice(extra);
    msg(&lines, body)
}

#[test]
fn content_length_udp_vs_tcp() {
    // No Content-Length: over UDP the body is the rest of the datagram;
    // over TCP the body is empty and the rest is the next message.
    let bytes = basic_request(&[], "hello");
    assert_eq!(parse_datagram(&bytes).unwrap().body(), b"hello");
    let p = parse(&bytes).unwrap();
    assert_eq!(p.message.body(), b"");
    assert_eq!(p.consumed, bytes.len() - 5);
    assert_eq!(parse(&bytes[p.consumed..]), Err(ParseError::Incomplete));

    // Shorter Content-Length: extra datagram bytes are discarded.
    let bytes = basic_request(&["Content-Length: 2"], "hello");
    assert_eq!(parse_datagram(&bytes).unwrap().body(), b"he");

    // Longer Content-Length: malformed datagram, incomplete stream.
    let bytes = basic_request(&["Content-Length: 9"], "hello");
    assert_eq!(parse_datagram(&bytes), Err(ParseError::BodyTruncated));
    assert_eq!(parse(&bytes), Err(ParseError::Incomplete));

    for bad in ["-999", "abc", "1 2", "99999999999999999999", ""] {
        let line = format!("Content-Length: {bad}");
        let bytes = basic_request(&[&line], "");
        assert_eq!(
            parse_datagram(&bytes),
            Err(ParseError::InvalidContentLength),
            "{bad}"
        );
        assert_eq!(
            parse(&bytes),
            Err(ParseError::InvalidContentLength),
            "{bad}"
        );
    }
    let bytes = basic_request(&["Content-Length: 3", "l: 4"], "abcd");
    assert_eq!(
        parse_datagram(&bytes),
        Err(ParseError::InvalidContentLength)
    );
    let bytes = basic_request(&["Content-Length: 4", "l: 004"], "abcd");
    let m = parse_datagram(&bytes).unwrap();
    assert_eq!(
        m.headers().get_all("Content-Length").collect::<Vec<_>>(),
        ["4"]
    );
    let bytes = basic_request(&["Content-Length: 999999"], "");
    assert!(matches!(parse(&bytes), Err(ParseError::TooLarge { .. })));
}

#[test]
fn stream_framing_incomplete_then_complete() {
    let one = softphone_invite();
    for cut in 0..one.len() {
        assert_eq!(
            parse(&one[..cut]),
            Err(ParseError::Incomplete),
            "cut at {cut}"
        );
    }
    let mut two = b"\r\n".to_vec();
    two.extend_from_slice(&one);
    two.extend_from_slice(&one);
    let first = parse(&two).unwrap();
    assert_eq!(first.consumed, one.len() + 2);
    let second = parse(&two[first.consumed..]).unwrap();
    assert_eq!(second.consumed, one.len());
    assert_eq!(first.message, second.message);
}

#[test]
fn garbage_fails_before_the_head_is_complete() {
    assert_eq!(
        parse(b"HELLO WORLD\r\nVia: x"),
        Err(ParseError::InvalidStartLine)
    );
    assert_eq!(
        parse(b"INVITE sip:a@b SIP/3.0\r\n"),
        Err(ParseError::UnsupportedVersion)
    );
    assert_eq!(
        parse(b"INVITE sip:a@b SIP/2.0\r\nVia: x"),
        Err(ParseError::Incomplete)
    );
}

#[test]
fn keepalives() {
    assert!(is_keepalive_ping(b"\r\n\r\n"));
    assert!(!is_keepalive_ping(b"\r\n"));
    assert_eq!(parse_datagram(b"\r\n\r\n"), Err(ParseError::Empty));
    assert_eq!(parse_datagram(b"\r\n"), Err(ParseError::Empty));
    assert_eq!(parse(b"\r\n\r\n"), Err(ParseError::Incomplete));
    let mut bytes = b"\r\n\r\n".to_vec();
    bytes.extend_from_slice(&basic_request(&[], ""));
    assert_eq!(parse(&bytes).unwrap().consumed, bytes.len());
    assert!(parse_datagram(&bytes).is_ok());
    let flood = vec![b'\n'; 70_000];
    assert!(matches!(parse(&flood), Err(ParseError::TooLarge { .. })));
}

#[test]
fn start_line_errors() {
    let cases: [(&[u8], ParseError); 9] = [
        (
            b"INVITE  sip:a@b SIP/2.0\r\n\r\n",
            ParseError::InvalidStartLine,
        ),
        (
            b"INVITE sip:a@b SIP/2.0 \r\n\r\n",
            ParseError::InvalidStartLine,
        ),
        (b"INVITE sip:a@b\r\n\r\n", ParseError::InvalidStartLine),
        (b"INV@TE sip:a@b SIP/2.0\r\n\r\n", ParseError::InvalidMethod),
        (
            b"INVITE sip:a@b SIP/7.0\r\n\r\n",
            ParseError::UnsupportedVersion,
        ),
        (b"INVITE <sip:a@b> SIP/2.0\r\n\r\n", ParseError::InvalidUri),
        (b"SIP/2.0 99 Low\r\n\r\n", ParseError::InvalidStatus),
        (b"SIP/2.0 2000 OK\r\n\r\n", ParseError::InvalidStatus),
        (
            b"INVITE sip:a@\xff SIP/2.0\r\n\r\n",
            ParseError::InvalidStartLine,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            parse_datagram(bytes),
            Err(want),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn required_headers_are_validated() {
    let full = [
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1",
        "From: <sip:a@10.0.0.1>;tag=1",
        "To: <sip:gw.example>",
        "Call-ID: x1",
        "CSeq: 1 OPTIONS",
    ];
    let names = ["Via", "From", "To", "Call-ID", "CSeq"];
    for (skip, name) in names.iter().enumerate() {
        let mut lines = vec!["OPTIONS sip:gw.example SIP/2.0"];
        lines.extend(
            full.iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l),
        );
        let err = parse_datagram(&msg(&lines, "")).unwrap_err();
        assert_eq!(err, ParseError::MissingHeader(name));
    }
    let bad = basic_request(&["CSeq: 2 INVITE"], "");
    assert_eq!(parse_datagram(&bad), Err(ParseError::InvalidHeader("CSeq")));
    let mut lines = vec!["INVITE sip:gw.example SIP/2.0"];
    lines.extend_from_slice(&full);
    assert_eq!(
        parse_datagram(&msg(&lines, "")),
        Err(ParseError::CSeqMethodMismatch)
    );
    let dup = basic_request(&["From: <sip:b@10.0.0.1>;tag=2"], "");
    assert_eq!(parse_datagram(&dup), Err(ParseError::InvalidHeader("From")));
}

#[test]
fn malformed_header_lines() {
    let bad = [
        "NoColonHere",
        "Bad Name: x",
        ": empty",
        "Na\u{e9}me: x",
        "Subject: a\rb",
        "X: \0",
    ];
    for line in bad {
        let bytes = basic_request(&[line], "");
        assert_eq!(
            parse_datagram(&bytes),
            Err(ParseError::InvalidHeaderLine),
            "{line}"
        );
    }
    let folded_first = msg(&["OPTIONS sip:gw SIP/2.0", " folded: x"], "");
    assert_eq!(
        parse_datagram(&folded_first),
        Err(ParseError::InvalidHeaderLine)
    );
}

/// RFC 4475 "intmeth": control characters escaped as quoted-pairs inside a quoted string
/// are valid (they were refused before, and the message dropped); bare ones, and escaped
/// CR or LF (which no quoted-pair may hold), are not. What we write back escapes them.
#[test]
fn quoted_pairs_may_escape_control_characters() {
    let to = "To: \"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" <sip:u@example.com>";
    let bytes = with_to(to);
    let m = parse_datagram(&bytes).expect("escaped controls are valid");
    let name = m.headers().to().unwrap().display_name.unwrap();
    assert_eq!(name, "BEL:\x07 NUL:\0 DEL:\x7f");
    assert_round_trip(&bytes);
    let echoed = NameAddr::parse(m.headers().get("To").unwrap(), "To")
        .unwrap()
        .to_string();
    assert_eq!(
        echoed,
        "\"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" <sip:u@example.com>"
    );
    for bad in [
        "To: \"BEL:\x07\" <sip:u@example.com>",
        "To: <sip:u@example.com>;x=\\\x07",
        "To: \"a\\\rb\" <sip:u@example.com>",
    ] {
        let bytes = with_to(bad);
        assert_eq!(
            parse_datagram(&bytes),
            Err(ParseError::InvalidHeaderLine),
            "{bad:?}"
        );
    }
}

/// [`basic_request`] with its To line replaced.
fn with_to(to: &str) -> Vec<u8> {
    let mut bytes = basic_request(&[], "");
    let at = bytes.windows(4).position(|w| w == b"To: ").unwrap();
    let end = at + bytes[at..].windows(2).position(|w| w == b"\r\n").unwrap();
    bytes.splice(at..end, to.bytes());
    bytes
}

/// RFC 4475 "trws": blanks after the version are malformed, and answered 400 (they were
/// dropped unanswered before).
#[test]
fn trailing_blanks_on_the_request_line_get_400() {
    let mut bytes = basic_request(&[], "");
    let eol = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
    bytes.splice(eol..eol, *b"  ");
    let err = parse_datagram(&bytes).unwrap_err();
    assert_eq!(err, ParseError::InvalidStartLine);
    let resp = response_to_malformed(&bytes, &err).expect("answered");
    assert_eq!(resp.status, 400);
}

/// On a stream, a head that cannot be processed fails at once instead of waiting for the
/// body its Content-Length announces (RFC 4475 "multi01" over TCP).
#[test]
fn a_bad_head_fails_before_its_body_arrives() {
    let bytes = basic_request(&["Call-ID: second", "Content-Length: 0"], "");
    let text = String::from_utf8(bytes)
        .unwrap()
        .replace("Content-Length: 0", "Content-Length: 500");
    assert!(matches!(
        parse(text.as_bytes()),
        Err(e) if e != ParseError::Incomplete
    ));
}

#[test]
fn non_utf8_bytes() {
    let mut bytes = basic_request(&["Subject: caf\u{e9}"], "");
    let pos = bytes.windows(4).position(|w| w == b"caf\xc3").unwrap();
    bytes[pos + 3] = 0xff;
    bytes[pos + 4] = b' ';
    bytes.extend_from_slice(b"\x00\xff\xfe binary");
    let m = parse_datagram(&bytes).unwrap();
    assert_eq!(m.headers().get("Subject"), Some("caf\u{fffd}"));
    assert_eq!(m.body(), b"\x00\xff\xfe binary");
    assert_round_trip(&bytes);
}

#[test]
fn bare_lf_and_missing_final_blank_line() {
    let lf = b"OPTIONS sip:gw SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\nFrom: <sip:a@h>;tag=1\nTo: <sip:gw>\nCall-ID: y\nCSeq: 3 OPTIONS\n\n";
    assert!(parse_datagram(lf).is_ok());
    assert!(parse(lf).is_ok());
    let unterminated = &lf[..lf.len() - 2];
    assert!(parse_datagram(unterminated).is_ok());
    assert_eq!(parse(unterminated), Err(ParseError::Incomplete));
}

#[test]
fn limits_are_typed_errors() {
    let limits = Limits {
        max_message: 2048,
        max_headers: 8,
        max_line: 200,
    };
    let many: Vec<String> = (0..9).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let bytes = basic_request(&many, "");
    assert_eq!(
        parse_with(&bytes, &limits),
        Err(ParseError::TooManyHeaders { limit: 8 })
    );
    let long = format!("X-Long: {}", "a".repeat(300));
    let bytes = basic_request(&[&long], "");
    assert_eq!(
        parse_with(&bytes, &limits),
        Err(ParseError::LineTooLong { limit: 200 })
    );
    // A line that never ends is caught before it is complete.
    let endless = format!("OPTIONS sip:gw SIP/2.0\r\nX: {}", "a".repeat(300));
    assert_eq!(
        parse_with(endless.as_bytes(), &limits),
        Err(ParseError::LineTooLong { limit: 200 })
    );
    let body = "b".repeat(3000);
    let cl = format!("Content-Length: {}", body.len());
    let bytes = basic_request(&[&cl], &body);
    assert_eq!(
        parse_with(&bytes, &limits),
        Err(ParseError::TooLarge { limit: 2048 })
    );
    let big = vec![b'a'; 70_000];
    assert!(matches!(
        parse_datagram(&big),
        Err(ParseError::TooLarge { .. })
    ));
    let endless_headers: String = (0..2000).map(|i| format!("X-{i}: v\r\n")).collect();
    let stream = format!("OPTIONS sip:gw SIP/2.0\r\n{endless_headers}");
    assert!(matches!(
        parse(stream.as_bytes()),
        Err(ParseError::TooManyHeaders { .. })
    ));
}

#[test]
fn bad_requests_get_400_naming_the_problem() {
    let bytes = basic_request(&["Content-Length: -1"], "");
    let err = parse_datagram(&bytes).unwrap_err();
    let r = response_to_malformed(&bytes, &err).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.reason, "Bad Request (malformed Content-Length)");
    assert_eq!(r.headers.call_id().unwrap(), "x1");
    assert!(r.headers.to().unwrap().tag().is_some());
    assert_eq!(r.headers.cseq().unwrap().seq, 1);

    let bytes = basic_request(&["Max-Forwards: 70", "From: <sip:b@h>;tag=2"], "");
    let err = parse_datagram(&bytes).unwrap_err();
    let r = response_to_malformed(&bytes, &err).unwrap();
    assert_eq!(r.reason, "Bad Request (malformed From)");
    assert_eq!(r.headers.get_all("From").count(), 2);

    let v3 = String::from_utf8(basic_request(&[], ""))
        .unwrap()
        .replacen("SIP/2.0", "SIP/3.0", 1);
    let v3 = v3.as_bytes();
    let err = parse_datagram(v3).unwrap_err();
    assert_eq!(err, ParseError::UnsupportedVersion);
    assert_eq!(response_to_malformed(v3, &err).unwrap().status, 505);

    let bytes = basic_request(&["Bad Line"], "");
    let err = parse_datagram(&bytes).unwrap_err();
    assert_eq!(
        response_to_malformed(&bytes, &err).unwrap().reason,
        "Bad Request (malformed header line)"
    );
}

#[test]
fn unanswerable_garbage_is_dropped() {
    // Missing Call-ID: no response can be matched, so drop (RFC 3261 §8.1.1).
    let no_call_id = msg(
        &[
            "OPTIONS sip:gw SIP/2.0",
            "Via: SIP/2.0/UDP h;branch=z9hG4bK3",
            "From: <sip:a@h>;tag=1",
            "To: <sip:gw>",
            "CSeq: 1 OPTIONS",
        ],
        "",
    );
    let err = parse_datagram(&no_call_id).unwrap_err();
    assert_eq!(err, ParseError::MissingHeader("Call-ID"));
    assert_eq!(response_to_malformed(&no_call_id, &err), None);
    let ack = String::from_utf8(basic_request(&["Content-Length: x"], ""))
        .unwrap()
        .replacen("OPTIONS", "ACK", 1);
    let err = parse_datagram(ack.as_bytes()).unwrap_err();
    assert_eq!(response_to_malformed(ack.as_bytes(), &err), None);
    let resp = response_bytes("SIP/2.0 200 OK", &["Content-Length: x"]);
    let err = parse_datagram(&resp).unwrap_err();
    assert_eq!(response_to_malformed(&resp, &err), None);
    assert_eq!(
        response_to_malformed(b"\x00\x01", &ParseError::InvalidStartLine),
        None
    );
    assert_eq!(response_to_malformed(b"", &ParseError::Incomplete), None);
}

#[test]
fn response_for_request_copies_rfc3261_headers() {
    let bytes = msg(
        &[
            "INVITE sip:15551234567@gw SIP/2.0",
            "Via: SIP/2.0/UDP proxy.example;branch=z9hG4bKp, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKa",
            "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb",
            "From: <sip:a@h>;tag=1",
            "To: <sip:15551234567@gw>",
            "Call-ID: abc",
            "CSeq: 7 INVITE",
            "Timestamp: 54",
            "Max-Forwards: 69",
        ],
        "",
    );
    let req = request(parse_datagram(&bytes).unwrap());
    let trying = Response::for_request(&req, 100, "Trying");
    assert_eq!(trying.headers.get("Timestamp"), Some("54"));
    assert_eq!(trying.headers.to().unwrap().tag(), None);
    let busy = Response::for_request(&req, 486, "Busy Here").with_to_tag("xyz");
    assert_eq!(busy.headers.get("Timestamp"), None);
    assert_eq!(busy.headers.vias().unwrap().len(), 3);
    assert_eq!(busy.headers.to().unwrap().tag(), Some("xyz"));
    assert_eq!(
        busy.clone()
            .with_to_tag("other")
            .headers
            .to()
            .unwrap()
            .tag(),
        Some("xyz")
    );
    let again = response(parse_datagram(&busy.to_bytes()).unwrap());
    assert_eq!(again.status, 486);
    assert_eq!(again.headers.cseq().unwrap().seq, 7);

    let cancel = req.cancel_for().unwrap();
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, req.uri);
    assert_eq!(cancel.headers.vias().unwrap().len(), 1);
    assert_eq!(cancel.headers.get("CSeq"), Some("7 CANCEL"));
    let ack = req.ack_for(&busy).unwrap();
    assert_eq!(ack.headers.get("CSeq"), Some("7 ACK"));
    assert_eq!(ack.headers.to().unwrap().tag(), Some("xyz"));
    assert_eq!(ack.headers.top_via().unwrap().branch(), Some("z9hG4bKp"));
    for r in [cancel, ack] {
        assert!(parse_datagram(&r.to_bytes()).is_ok());
    }
}

#[test]
fn outbound_invite_builder() {
    let trunk = Uri::parse("sip:+15551234567@203.0.113.7:5080").unwrap();
    let branch = new_branch();
    let via = Via::new(
        Transport::Udp,
        Host::V4([192, 0, 2, 1].into()),
        Some(5060),
        &branch,
    );
    let mut from = NameAddr::new(Uri::parse("sip:gateway@192.0.2.1").unwrap());
    from.display_name = Some("Facility \"North\"".into());
    from.params.set("tag", Some(&new_tag()));
    let call_id = new_call_id(Some("192.0.2.1"));
    let req = RequestBuilder::new(Method::Invite, trunk.clone())
        .via(&via)
        .from(&from)
        .to(&NameAddr::new(trunk))
        .call_id(&call_id)
        .cseq(1)
        .contact(&NameAddr::new(
            Uri::parse("sip:gateway@192.0.2.1:5060").unwrap(),
        ))
        .body("application/sdp", SDP.as_bytes().to_vec())
        .build();
    let bytes = req.to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("INVITE sip:+15551234567@203.0.113.7:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"));
    assert!(text.contains("\r\nMax-Forwards: 70\r\n"));
    let parsed = request(parse_datagram(&bytes).unwrap());
    assert_eq!(parsed.headers.from().unwrap(), from);
    assert_eq!(parsed.headers.top_via().unwrap(), via);
    assert_eq!(parsed.headers.call_id().unwrap(), call_id);
    assert_eq!(parsed.body, SDP.as_bytes());
    assert!(branch.starts_with("z9hG4bK") && branch.len() == 23);
    assert_ne!(new_branch(), branch);
    assert_ne!(new_tag(), new_tag());
}

#[test]
fn serializer_recomputes_content_length() {
    let bytes = basic_request(&["Content-Length: 5"], "hello");
    let mut m = parse_datagram(&bytes).unwrap();
    if let SipMessage::Request(r) = &mut m {
        r.body = b"hi".to_vec();
        r.headers.push("Content-Length", "999");
    }
    let out = String::from_utf8(m.to_bytes()).unwrap();
    assert_eq!(out.matches("Content-Length").count(), 1);
    assert!(out.ends_with("Content-Length: 2\r\n\r\nhi"));
    let mut r = Response::new(200, "OK\r\nX-Injected: 1");
    r.headers.push("Subject", "a\r\nX-Injected: 2");
    let out = String::from_utf8(r.to_bytes()).unwrap();
    assert!(!out.contains("\nX-Injected"), "{out}");
    let mut h = Headers::new();
    h.push("l", "3");
    assert_eq!(h.content_length(), Ok(Some(3)));
}

/// Parse → serialize → parse gives the same message (Content-Length aside,
/// which serialization adds when absent), and serializing is then stable.
fn assert_round_trip(bytes: &[u8]) {
    let Ok(first) = parse_datagram(bytes) else {
        return;
    };
    let wire = first.to_bytes();
    let second = parse_datagram(&wire)
        .unwrap_or_else(|e| panic!("reparse failed: {e}\n{}", String::from_utf8_lossy(&wire)));
    assert_eq!(without_length(first), without_length(second.clone()));
    assert_eq!(second.to_bytes(), wire);
    let streamed = parse(&wire).unwrap();
    assert_eq!((streamed.message, streamed.consumed), (second, wire.len()));
}

fn without_length(mut m: SipMessage) -> SipMessage {
    m.headers_mut().remove("Content-Length");
    m
}

// ---------------------------------------------------------------- properties

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,12}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}",
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/% -]{1,12}"),
        host(),
        prop::option::of(any::<u16>()),
        prop::collection::vec((token(), prop::option::of(token())), 0..3),
    )
        .prop_map(|(user, host, port, params)| {
            let mut s = String::from("sip:");
            if let Some(u) = user {
                let escaped: String = u.bytes().map(|b| format!("%{b:02x}")).collect();
                s.push_str(&escaped);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for (n, v) in params {
                s.push(';');
                s.push_str(&n);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            s
        })
}

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        4 => sip_uri(),
        1 => "tel:\\+?[0-9]{3,12}(;phone-context=[a-z]{2,8})?",
        1 => "urn:service:[a-z]{2,8}",
    ]
    .prop_map(|s| Uri::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}")))
}

fn name_addr() -> impl Strategy<Value = String> {
    (
        prop::option::of("[ -~\u{e9}\u{4e2d}]{0,10}"),
        uri(),
        prop::option::of(token()),
    )
        .prop_map(|(display, uri, tag)| {
            let mut a = NameAddr::new(uri);
            a.display_name = display;
            if let Some(t) = tag {
                a.params.set("tag", Some(&t));
            }
            a.to_string()
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Info),
        "[A-Z]{3,10}".prop_map(|m| Method::parse(&m).unwrap()),
    ]
}

/// A header value as the parser leaves it: no CR/LF, no outer blanks.
fn header_value() -> impl Strategy<Value = String> {
    "[ -~\t\u{e9}\u{fffd}]{0,30}".prop_map(|v| v.trim_matches([' ', '\t']).to_owned())
}

fn message() -> impl Strategy<Value = SipMessage> {
    (
        prop::option::of((100u16..700, "[ -~]{0,20}")),
        method(),
        uri(),
        (name_addr(), name_addr(), token(), 0u32..(1 << 31)),
        prop::collection::vec((host(), token()), 1..4),
        prop::collection::vec(("X-[a-zA-Z0-9-]{1,10}", header_value()), 0..6),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |(status, method, uri, (from, to, call_id, seq), vias, extra, body)| {
                let mut h = Headers::new();
                for (host, branch) in vias {
                    h.push("Via", format!("SIP/2.0/UDP {host};branch=z9hG4bK{branch}"));
                }
                h.push("From", from);
                h.push("To", to);
                h.push("Call-ID", call_id);
                h.push("CSeq", format!("{seq} {method}"));
                for (n, v) in extra {
                    h.push(&n, v);
                }
                match status {
                    Some((status, reason)) => SipMessage::Response(Response {
                        status,
                        reason: reason.trim_matches([' ', '\t']).to_owned(),
                        headers: h,
                        body,
                    }),
                    None => SipMessage::Request(Request {
                        method,
                        uri,
                        headers: h,
                        body,
                    }),
                }
            },
        )
}

/// A valid message with a few bytes flipped, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![
        Just(softphone_invite()),
        Just(basic_request(&["Content-Length: 2"], "ab")),
        Just(response_bytes(
            "SIP/2.0 200 OK",
            &["Contact: <sip:x@[::1]:5060>;expires=60"]
        )),
    ];
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8);
    (base, edits).prop_map(|(mut bytes, edits)| {
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        bytes
    })
}

/// Touches every typed accessor; none may panic.
fn exercise(m: &SipMessage) {
    let h = m.headers();
    let _ = (
        h.vias(),
        h.from(),
        h.to(),
        h.call_id(),
        h.cseq(),
        h.max_forwards(),
    );
    let _ = (
        h.contacts(),
        h.content_length(),
        h.content_type(),
        h.expires(),
    );
    let _ = (
        h.retry_after(),
        h.authorization(),
        h.www_authenticate(),
        h.name_addrs("Route"),
    );
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn generated_messages_round_trip(m in message()) {
        let wire = m.to_bytes();
        let parsed = parse_datagram(&wire).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&wire))))?;
        prop_assert_eq!(without_length(parsed.clone()), m);
        prop_assert_eq!(parsed.to_bytes(), wire.clone());
        let streamed = parse(&wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(streamed.consumed, wire.len());
        prop_assert_eq!(streamed.message, parsed);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        for result in [parse_datagram(&bytes), parse(&bytes).map(|p| p.message)] {
            match result {
                Ok(m) => exercise(&m),
                Err(e) => { let _ = response_to_malformed(&bytes, &e); }
            }
        }
    }

    #[test]
    fn mutated_messages_never_panic_and_round_trip(bytes in mutated()) {
        match parse_datagram(&bytes) {
            Ok(m) => { exercise(&m); assert_round_trip(&bytes); }
            Err(e) => { let _ = response_to_malformed(&bytes, &e); }
        }
        if let Ok(p) = parse(&bytes) {
            prop_assert!(p.consumed <= bytes.len());
        }
    }
}

/// Parse timing sanity check; run with
/// `cargo test --release --test sip_message -- --ignored --nocapture`.
#[test]
#[ignore]
fn parse_timing() {
    let bytes = softphone_invite();
    let n = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(parse_datagram(std::hint::black_box(&bytes)).unwrap());
    }
    let per = t.elapsed() / n;
    let m = parse_datagram(&bytes).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(std::hint::black_box(&m).to_bytes());
    }
    let ser = t.elapsed() / n;
    println!(
        "parse_datagram({} B INVITE with SDP): {per:?}; to_bytes: {ser:?}",
        bytes.len()
    );
}
