//! Throws arbitrary bytes at the SIP message parser.
//!
//! Properties: nothing panics; whatever parses (as a datagram or from a
//! stream) serializes to bytes that parse again into the same message
//! (Content-Length aside: serialization adds it when absent), serializing
//! that is byte-for-byte stable, and every typed accessor and the 400
//! builder survive any input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sallyport::sip::message::{parse, parse_datagram, response_to_malformed, SipMessage};

fuzz_target!(|data: &[u8]| {
    match parse_datagram(data) {
        Ok(m) => check(&m),
        Err(e) => {
            // The 400 copies the request's (possibly malformed) headers as
            // RFC 3261 §8.2.6 says, so it need not parse; it must serialize.
            if let Some(r) = response_to_malformed(data, &e) {
                assert!(matches!(r.status, 400 | 505 | 513));
                assert!(r.to_bytes().ends_with(b"\r\n\r\n"));
            }
        }
    }
    if let Ok(p) = parse(data) {
        assert!(p.consumed <= data.len());
        check(&p.message);
    }
});

fn check(m: &SipMessage) {
    touch_accessors(m);
    let wire = m.to_bytes();
    let again = match parse_datagram(&wire) {
        Ok(again) => again,
        Err(e) => panic!("reparse failed: {e}\n{}", String::from_utf8_lossy(&wire)),
    };
    assert_eq!(without_length(m.clone()), without_length(again.clone()));
    assert_eq!(again.to_bytes(), wire);
    let streamed = parse(&wire).map(|p| (p.message, p.consumed));
    assert_eq!(streamed, Ok((again, wire.len())));
}

fn without_length(mut m: SipMessage) -> SipMessage {
    m.headers_mut().remove("Content-Length");
    m
}

fn touch_accessors(m: &SipMessage) {
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
    let _ = (h.retry_after(), h.authorization(), h.www_authenticate());
    let _ = h.name_addrs("Record-Route");
}
