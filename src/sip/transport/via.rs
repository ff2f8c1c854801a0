//! RFC 3261 §18.2.1 / RFC 3581 on the way in (stamp `received` and `rport`)
//! and §18.2.2 on the way out (where a response goes).

use crate::sip::header::{split_top, trim_lws, Headers};
use crate::sip::typed::Via;
use crate::sip::uri::Host;
use std::net::{IpAddr, SocketAddr};

/// Stamps the top Via with the address the message really came from:
/// `received` when the sent-by host differs (always with `rport`), and
/// `rport=<port>` when the client asked for it. Nothing changes if the top
/// Via does not parse (the parser already guarantees it does).
pub fn stamp_received(headers: &mut Headers, source: SocketAddr) {
    let Ok(mut via) = headers.top_via() else {
        return;
    };
    let rport = via.rport().is_some();
    if rport || host_ip(&via.host) != Some(source.ip()) {
        via.params.set("received", Some(&source.ip().to_string()));
    }
    if rport {
        via.params.set("rport", Some(&source.port().to_string()));
    }
    replace_top_via(headers, &via.to_string());
}

/// Rebuilds the header list with the first Via element replaced, every
/// other header and Via element kept in order.
fn replace_top_via(headers: &mut Headers, top: &str) {
    let mut out = Headers::with_capacity(headers.len());
    let mut done = false;
    for h in headers.iter() {
        if done || !h.name.eq_ignore_ascii_case("Via") {
            out.push(&h.name, h.value.clone());
            continue;
        }
        done = true;
        let rest: Vec<&str> = split_top(&h.value, b',')
            .map(trim_lws)
            .filter(|s| !s.is_empty())
            .skip(1)
            .collect();
        let mut value = top.to_owned();
        for r in rest {
            value.push_str(", ");
            value.push_str(r);
        }
        out.push("Via", value);
    }
    *headers = out;
}

/// The address literal of a host, if it is one.
fn host_ip(host: &Host) -> Option<IpAddr> {
    match host {
        Host::V4(a) => Some(IpAddr::V4(*a)),
        Host::V6(a) => Some(IpAddr::V6(*a)),
        Host::Domain(_) => None,
    }
}

/// Where a response with this top Via goes (§18.2.2, RFC 3581 §4): the
/// `received` address (else the sent-by address literal, else the request's
/// source), at the `rport` port (else the sent-by port, else 5060).
pub fn response_destination(via: &Via, source: SocketAddr) -> SocketAddr {
    let ip = via
        .received()
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .or_else(|| host_ip(&via.host))
        .unwrap_or(source.ip());
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(5060),
    };
    SocketAddr::new(ip, port)
}
