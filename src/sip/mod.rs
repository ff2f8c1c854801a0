//! The SIP layer: everything between bytes on port 5060 and the call flow.
//!
//! # What it owns
//!
//! - [`message`]: requests and responses, the stream and datagram parsers
//!   (with abuse limits and the 400 for malformed requests), the serializer,
//!   and the builders the B2BUA uses to answer and originate requests.
//! - [`header`], [`typed`], [`uri`]: the ordered header list, typed views of
//!   the headers we act on (Via, From/To, CSeq, Contact, auth parameters…),
//!   and SIP/SIPS/tel URIs.
//! - [`auth`]: digest authentication of handsets with stateless,
//!   cluster-wide nonces.
//! - [`transaction`]: the RFC 3261 §17 client and server transactions as
//!   state machines over a named-timer table fed `now`.
//! - [`transport`]: the transaction table, flood control and the UDP/TCP
//!   drivers (framing with [`message::parse`]).
//! - [`dialog`]: RFC 3261 §12 dialogs, which build the B2BUA's in-dialog
//!   requests (BYE, INFO, the ACK for a 2xx).
//! - [`uas`]: the RFC 3261 §8.2 checks (405/501, 416, 420, 415/406) a new
//!   request passes before the call flow sees it.
//!
//! Everything here is sans-IO: no tokio, no sockets, no clock. Functions take
//! bytes and `now` and return values; the transport driver does the I/O.
//!
//! # Who calls it
//!
//! The transport driver parses incoming bytes with [`message::parse`]
//! (streams) or [`message::parse_datagram`] (UDP), answers what fails with
//! [`message::response_to_malformed`], and hands messages to the transaction
//! layer, which feeds the call flow (`call`). The call flow builds its
//! requests and responses with [`message::RequestBuilder`] and
//! [`message::Response::for_request`] and authenticates handsets with
//! [`auth::DigestAuth`].
//!
//! # Why our own parser
//!
//! `rsip` was asked for, but its last release is from 2022; `rsipstack` is
//! maintained but not sans-IO (its transaction timers read the clock
//! themselves), which breaks the "cores take `now`" rule that lets a 61-minute
//! call be tested in milliseconds. So the parser is ours: small, no
//! dependencies beyond `std`, never panicking on any input (no indexing or
//! unwrap on network bytes; checked by a proptest of random bytes and the
//! cargo-fuzz target in `fuzz/`, parse → serialize → parse must agree),
//! bounded in memory by [`message::Limits`], and fast (one `String` per
//! header value, names borrowed from a static table).
//!
//! # Choices worth knowing
//!
//! - Header values are text: bytes that are not UTF-8 become U+FFFD. Bodies
//!   stay raw bytes.
//! - A parsed message always has a well-formed top Via, From, To, Call-ID and
//!   CSeq (the request's CSeq method matching), so later layers need not
//!   re-check; other headers are parsed on demand by [`typed`] accessors.
//! - Content-Length is derived from the body when serializing; the parser
//!   keeps the header (normalized) so the message round-trips.

pub mod auth;
pub mod dialog;
pub mod error;
pub mod header;
pub mod message;
pub mod parse;
pub mod transaction;
pub mod transport;
pub mod typed;
pub mod uas;
pub mod uri;
