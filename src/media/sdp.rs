//! SDP (RFC 4566) parsing and serialization, and the RFC 3264 offer/answer that anchors a
//! call's media on the gateway.
//!
//! # Model
//!
//! [`SessionDescription`] keeps what phones and carriers send: `v o s c t m` are typed,
//! attributes are kept as name/value pairs in order, and any other line (`i u e p b r z k`
//! or unknown letters) is preserved verbatim, so parse → serialize → parse is lossless
//! for everything the gateway does not rewrite. Lines may end in CRLF or LF; output uses
//! CRLF. Input is bounded ([`MAX_SDP_LEN`], [`MAX_MEDIA`]) and never panics the parser.
//!
//! # Anchoring (what [`answer`] and [`offer`] decide)
//!
//! - The gateway carries **one** audio stream per call: the first `m=audio` line with an
//!   RTP/AVP (or RTP/AVPF) profile, a non-zero port and a codec in common. Every other
//!   m-line (video, a second audio, SRTP profiles) is rejected with port 0, in place, so
//!   the answer has the offer's m-line order (RFC 3264 §6).
//! - Codecs: PCMU and PCMA, matched by static payload type or by `rtpmap` name, in the
//!   offerer's preference order; `telephone-event/8000` is echoed with the offerer's
//!   dynamic payload type and `fmtp`. By default ([`LocalMedia::single_codec`]) the answer
//!   names only the offerer's first common codec: the relay does not transcode, and a peer
//!   may switch among any codecs the answer lists (RFC 3264 §5.1), so naming one pins the
//!   codec the other leg is offered first.
//! - `ptime` is echoed; the direction is mirrored (`sendonly` ↔ `recvonly`). A legacy hold
//!   (`c=0.0.0.0`, RFC 3264 §8.4) is treated as `a=sendonly` from the peer: we answer
//!   `recvonly` and never send to an unspecified address.
//! - `a=rtcp` (RFC 3605) and `a=rtcp-mux` (RFC 5761) are honoured; the answer accepts
//!   `rtcp-mux` when offered, the relay demultiplexes RTCP either way.
//!
//! [`negotiated_from_answer`] reads the answer the trunk returns to our [`offer`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use thiserror::Error;

/// Largest SDP body accepted.
pub const MAX_SDP_LEN: usize = 16 * 1024;
/// Most m-lines accepted.
pub const MAX_MEDIA: usize = 16;

/// Errors from SDP parsing and negotiation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// Body larger than [`MAX_SDP_LEN`] or more than [`MAX_MEDIA`] m-lines.
    #[error("SDP too large")]
    TooLarge,
    /// A line that is not `<letter>=<value>`.
    #[error("malformed SDP line {line}")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// A required line is missing or out of place.
    #[error("SDP lacks a valid {0}= line")]
    Missing(char),
    /// A typed line whose fields do not parse.
    #[error("bad {kind}= line {line}")]
    BadField {
        /// The line's letter.
        kind: char,
        /// 1-based line number.
        line: usize,
    },
    /// An audio stream has no connection address (neither media nor session `c=`).
    #[error("media stream has no connection address")]
    NoConnection,
    /// No audio stream with an RTP/AVP profile and a non-zero port.
    #[error("no acceptable audio stream")]
    NoAudio,
    /// An audio stream exists but shares no codec with the gateway.
    #[error("no codec in common (PCMU or PCMA required)")]
    NoCommonCodec,
}

impl SdpError {
    /// The SIP status for an INVITE whose SDP fails this way: 488 for negotiation
    /// failures, 400 for malformed bodies.
    pub fn sip_status(&self) -> u16 {
        match self {
            SdpError::NoAudio | SdpError::NoCommonCodec | SdpError::NoConnection => 488,
            _ => 400,
        }
    }
}

/// A line the model does not type, kept verbatim (`i=`, `b=`, `k=`, unknown letters…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's letter.
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

/// An `a=` line: `a=name` or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Value after the first `:`, if any.
    pub value: Option<String>,
}

impl Attribute {
    /// A flag attribute (`a=sendrecv`).
    pub fn flag(name: &str) -> Self {
        Attribute {
            name: name.to_owned(),
            value: None,
        }
    }

    /// A valued attribute (`a=ptime:20`).
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Attribute {
            name: name.to_owned(),
            value: Some(value.into()),
        }
    }

    fn parse(value: &str) -> Self {
        match value.split_once(':') {
            Some((n, v)) => Attribute::new(n, v),
            None => Attribute::flag(value),
        }
    }
}

/// `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Username (`-` when none).
    pub username: String,
    /// Session id (digits; kept as text since some senders exceed 64 bits).
    pub session_id: String,
    /// Session version, bumped on every new offer in a dialog.
    pub session_version: String,
    /// The originator's address (kept verbatim; may be a host name).
    pub address: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
}

/// `c=` line (unicast `IN IP4|IP6 address`; a `/ttl` suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The connection address.
    pub addr: IpAddr,
}

impl Connection {
    fn parse(value: &str) -> Option<Self> {
        let mut it = value.split_whitespace();
        let (net, ty, addr) = (it.next()?, it.next()?, it.next()?);
        let addr = addr.split('/').next()?;
        if net != "IN" {
            return None;
        }
        let addr = match ty {
            "IP4" => IpAddr::V4(Ipv4Addr::from_str(addr).ok()?),
            "IP6" => IpAddr::V6(Ipv6Addr::from_str(addr).ok()?),
            _ => return None,
        };
        Some(Connection { addr })
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IN {} {}", addr_type(self.addr), self.addr)
    }
}

fn addr_type(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// Media direction (RFC 3264 §5.1), from the point of view of the description's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sends and receives.
    SendRecv,
    /// Only sends (puts the other side on hold).
    SendOnly,
    /// Only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn from_attr(name: &str) -> Option<Self> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answerer writes for this offered direction.
    pub fn mirror(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// Whether the author sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the author receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`…
    pub media: String,
    /// Transport port; 0 rejects/disables the stream.
    pub port: u16,
    /// The `/n` port count, rarely used.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`…
    pub proto: String,
    /// Format list (payload types for RTP profiles), in preference order.
    pub formats: Vec<String>,
    /// Media-level `c=`.
    pub connection: Option<Connection>,
    /// `i=`, `b=`, `k=` and unknown lines, in order.
    pub other: Vec<Line>,
    /// `a=` lines, in order.
    pub attributes: Vec<Attribute>,
}

/// An `a=rtpmap` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written.
    pub name: &'a str,
    /// Clock rate in Hz.
    pub clock_rate: u32,
}

impl MediaDescription {
    /// First value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_deref().unwrap_or(""))
    }

    /// Whether flag attribute `name` is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| a.name == name)
    }

    /// The `rtpmap` for payload type `pt`.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap<'_>> {
        self.attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| parse_rtpmap(a.value.as_deref()?))
            .find(|m| m.pt == pt)
    }

    /// The `fmtp` parameters for payload type `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name == "fmtp")
            .filter_map(|a| a.value.as_deref()?.split_once(' '))
            .find(|(p, _)| p.parse::<u8>() == Ok(pt))
            .map(|(_, v)| v.trim())
    }

    /// `a=ptime` in milliseconds.
    pub fn ptime(&self) -> Option<u32> {
        self.attribute("ptime")?.trim().parse().ok()
    }

    /// The direction attribute at media level, if any.
    pub fn direction(&self) -> Option<Direction> {
        self.attributes
            .iter()
            .find_map(|a| Direction::from_attr(&a.name))
    }

    /// The `a=rtcp` port and optional address (RFC 3605).
    pub fn rtcp(&self) -> Option<(u16, Option<IpAddr>)> {
        let value = self.attribute("rtcp")?;
        let (port, rest) = value.split_once(' ').unwrap_or((value, ""));
        let port = port.trim().parse().ok()?;
        Some((port, Connection::parse(rest.trim()).map(|c| c.addr)))
    }

    /// Payload types of the format list (non-numeric formats skipped).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok())
    }

    fn is_rtp_avp(&self) -> bool {
        matches!(self.proto.as_str(), "RTP/AVP" | "RTP/AVPF")
    }
}

fn parse_rtpmap(value: &str) -> Option<RtpMap<'_>> {
    let (pt, enc) = value.split_once(' ')?;
    let mut parts = enc.trim().split('/');
    let name = parts.next()?;
    let clock_rate = parts.next()?.parse().ok()?;
    Some(RtpMap {
        pt: pt.trim().parse().ok()?,
        name,
        clock_rate,
    })
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`.
    pub origin: Origin,
    /// `s=` (`-` when the sender left it empty or out).
    pub session_name: String,
    /// Session-level `c=`.
    pub connection: Option<Connection>,
    /// `t=` and `r=` lines, verbatim (`0 0` for a SIP session).
    pub timing: Vec<Line>,
    /// Other session-level lines (`i u e p b z k`, unknown letters), in order.
    pub other: Vec<Line>,
    /// Session-level `a=` lines.
    pub attributes: Vec<Attribute>,
    /// `m=` sections.
    pub media: Vec<MediaDescription>,
}

impl FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, SdpError> {
        parse(s)
    }
}

/// Parses an SDP body.
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    if text.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge);
    }
    let mut lines = text
        .lines()
        .map(str::trim_end)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| split_line(i + 1, l));
    match lines.next().transpose()? {
        Some((_, 'v', "0")) => {}
        _ => return Err(SdpError::Missing('v')),
    }
    let mut builder = Builder::default();
    for line in lines {
        let (no, kind, value) = line?;
        builder.line(no, kind, value)?;
    }
    builder.finish()
}

fn split_line(no: usize, line: &str) -> Result<(usize, char, &str), SdpError> {
    let mut chars = line.chars();
    match (chars.next(), chars.next()) {
        (Some(kind), Some('=')) if kind.is_ascii_lowercase() => Ok((no, kind, chars.as_str())),
        _ => Err(SdpError::MalformedLine { line: no }),
    }
}

/// Accumulates lines into a [`SessionDescription`].
#[derive(Default)]
struct Builder {
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<Connection>,
    timing: Vec<Line>,
    other: Vec<Line>,
    attributes: Vec<Attribute>,
    media: Vec<MediaDescription>,
}

impl Builder {
    fn line(&mut self, no: usize, kind: char, value: &str) -> Result<(), SdpError> {
        let bad = SdpError::BadField { kind, line: no };
        if kind == 'm' {
            if self.media.len() >= MAX_MEDIA {
                return Err(SdpError::TooLarge);
            }
            self.media.push(parse_media(value).ok_or(bad)?);
            return Ok(());
        }
        if let Some(m) = self.media.last_mut() {
            return media_line(m, kind, value).ok_or(bad);
        }
        match kind {
            'o' => self.origin = Some(parse_origin(value).ok_or(bad)?),
            's' => self.session_name = Some(value.to_owned()),
            'c' => self.connection = Some(Connection::parse(value).ok_or(bad)?),
            't' | 'r' => self.timing.push(line(kind, value)),
            'a' => self.attributes.push(Attribute::parse(value)),
            'v' => return Err(bad),
            _ => self.other.push(line(kind, value)),
        }
        Ok(())
    }

    fn finish(mut self) -> Result<SessionDescription, SdpError> {
        // Canonical RFC 4566 order, so serialize → parse gives back the same model.
        self.other.sort_by_key(|l| session_rank(l.kind));
        for m in &mut self.media {
            m.other.sort_by_key(|l| l.kind != 'i');
        }
        let mut timing = self.timing;
        if timing.is_empty() {
            timing.push(line('t', "0 0"));
        }
        let session_name = self
            .session_name
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "-".to_owned());
        Ok(SessionDescription {
            origin: self.origin.ok_or(SdpError::Missing('o'))?,
            session_name,
            connection: self.connection,
            timing,
            other: self.other,
            attributes: self.attributes,
            media: self.media,
        })
    }
}

/// Where an untyped session line goes: `i u e p` before `c=`, `b` after it, the rest
/// (`z k`, unknown letters) after the timing lines.
fn session_rank(kind: char) -> u8 {
    match kind {
        'i' | 'u' | 'e' | 'p' => 0,
        'b' => 1,
        _ => 2,
    }
}

fn line(kind: char, value: &str) -> Line {
    Line {
        kind,
        value: value.to_owned(),
    }
}

fn media_line(m: &mut MediaDescription, kind: char, value: &str) -> Option<()> {
    match kind {
        'c' => m.connection = Some(Connection::parse(value)?),
        'a' => m.attributes.push(Attribute::parse(value)),
        'v' | 'o' | 's' | 't' => return None,
        _ => m.other.push(line(kind, value)),
    }
    Some(())
}

fn parse_origin(value: &str) -> Option<Origin> {
    let f: Vec<&str> = value.split_whitespace().collect();
    let [username, session_id, session_version, "IN", addr_type, address] = f.as_slice() else {
        return None;
    };
    Some(Origin {
        username: (*username).to_owned(),
        session_id: (*session_id).to_owned(),
        session_version: (*session_version).to_owned(),
        addr_type: (*addr_type).to_owned(),
        address: (*address).to_owned(),
    })
}

fn parse_media(value: &str) -> Option<MediaDescription> {
    let mut it = value.split_whitespace();
    let media = it.next()?.to_owned();
    let port_field = it.next()?;
    let (port, count) = match port_field.split_once('/') {
        Some((p, n)) => (p.parse().ok()?, Some(n.parse().ok()?)),
        None => (port_field.parse().ok()?, None),
    };
    let proto = it.next()?.to_owned();
    Some(MediaDescription {
        media,
        port,
        port_count: count,
        proto,
        formats: it.map(str::to_owned).collect(),
        connection: None,
        other: Vec::new(),
        attributes: Vec::new(),
    })
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            o.username, o.session_id, o.session_version, o.addr_type, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        let rank = |r: u8| self.other.iter().filter(move |l| session_rank(l.kind) == r);
        write_lines(f, rank(0))?;
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        write_lines(f, rank(1))?;
        write_lines(f, self.timing.iter())?;
        write_lines(f, rank(2))?;
        write_attributes(f, &self.attributes)?;
        self.media.iter().try_for_each(|m| write!(f, "{m}"))
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        self.formats.iter().try_for_each(|p| write!(f, " {p}"))?;
        f.write_str("\r\n")?;
        write_lines(f, self.other.iter().filter(|l| l.kind == 'i'))?;
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        write_lines(f, self.other.iter().filter(|l| l.kind != 'i'))?;
        write_attributes(f, &self.attributes)
    }
}

fn write_lines<'a>(
    f: &mut fmt::Formatter<'_>,
    lines: impl Iterator<Item = &'a Line>,
) -> fmt::Result {
    lines
        .into_iter()
        .try_for_each(|l| write!(f, "{}={}\r\n", l.kind, l.value))
}

fn write_attributes(f: &mut fmt::Formatter<'_>, attrs: &[Attribute]) -> fmt::Result {
    for a in attrs {
        match &a.value {
            Some(v) => write!(f, "a={}:{}\r\n", a.name, v)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Offer/answer
// ---------------------------------------------------------------------------------------

/// The audio codecs the relay carries (G.711 only: no transcoding, prompts in both laws).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecName {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl CodecName {
    /// The G.711 law.
    pub fn law(self) -> crate::media::g711::Law {
        match self {
            CodecName::Pcmu => crate::media::g711::Law::Ulaw,
            CodecName::Pcma => crate::media::g711::Law::Alaw,
        }
    }

    /// The static payload type.
    pub fn static_pt(self) -> u8 {
        match self {
            CodecName::Pcmu => 0,
            CodecName::Pcma => 8,
        }
    }

    /// The encoding name in `rtpmap`.
    pub fn as_str(self) -> &'static str {
        match self {
            CodecName::Pcmu => "PCMU",
            CodecName::Pcma => "PCMA",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(CodecName::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(CodecName::Pcma)
        } else {
            None
        }
    }
}

impl fmt::Display for CodecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A negotiated audio codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    /// Payload type on the wire (static 0/8 in practice, but a peer may map them).
    pub pt: u8,
    /// Which G.711 law.
    pub name: CodecName,
    /// Clock rate (8000).
    pub clock_rate: u32,
}

/// What one leg's offer/answer settled, for the relay and the prompt player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where the peer receives RTP (its `c=` address and `m=` port).
    pub remote: SocketAddr,
    /// Where the peer receives RTCP (`a=rtcp`, else RTP port + 1, or `remote` with mux).
    pub remote_rtcp: SocketAddr,
    /// Whether RTCP shares the RTP port (`a=rtcp-mux` in offer and answer).
    pub rtcp_mux: bool,
    /// The codec both sides use.
    pub codec: Codec,
    /// telephone-event payload type, if both sides support RFC 4733.
    pub dtmf_pt: Option<u8>,
    /// Packetization time in ms (20 when not signalled).
    pub ptime: u32,
    /// The gateway's direction toward this peer (what our side of the exchange says).
    pub direction: Direction,
}

impl NegotiatedMedia {
    /// The common plain leg: `codec` at its static payload type, telephone-event on 101,
    /// 20 ms packets, RTCP on the next port, sendrecv (what a G.711 desk phone or a trunk
    /// negotiates). For tests, benchmarks and load tools that set legs up without SDP.
    pub fn plain(remote: SocketAddr, codec: CodecName) -> NegotiatedMedia {
        NegotiatedMedia {
            remote,
            remote_rtcp: SocketAddr::new(remote.ip(), remote.port().wrapping_add(1)),
            rtcp_mux: false,
            codec: Codec {
                pt: codec.static_pt(),
                name: codec,
                clock_rate: 8000,
            },
            dtmf_pt: Some(101),
            ptime: 20,
            direction: Direction::SendRecv,
        }
    }

    /// Whether the gateway may send media to the peer.
    pub fn may_send(&self) -> bool {
        self.direction.sends() && !self.remote.ip().is_unspecified()
    }

    /// Whether the peer is expected to send media.
    pub fn may_receive(&self) -> bool {
        self.direction.receives()
    }
}

/// The gateway's side of a media negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Advertised address and the allocated RTP port.
    pub addr: SocketAddr,
    /// Supported codecs, in our preference order (used when we offer).
    pub codecs: Vec<CodecName>,
    /// Payload type we offer for telephone-event (answers echo the offerer's).
    pub dtmf_pt: u8,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version (bump on every new offer or answer in the dialog).
    pub session_version: u64,
    /// Answer with only the first common codec (see the module doc); `false` answers the
    /// whole intersection.
    pub single_codec: bool,
}

impl LocalMedia {
    /// Defaults: PCMU then PCMA, telephone-event on 101, single-codec answers.
    pub fn new(addr: SocketAddr, session_id: u64) -> Self {
        LocalMedia {
            addr,
            codecs: vec![CodecName::Pcmu, CodecName::Pcma],
            dtmf_pt: 101,
            session_id,
            session_version: 1,
            single_codec: true,
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            username: "sallyport".to_owned(),
            session_id: self.session_id.to_string(),
            session_version: self.session_version.to_string(),
            addr_type: addr_type(self.addr.ip()).to_owned(),
            address: self.addr.ip().to_string(),
        }
    }

    fn session(&self, media: Vec<MediaDescription>) -> SessionDescription {
        SessionDescription {
            origin: self.origin(),
            session_name: "sallyport".to_owned(),
            connection: Some(Connection {
                addr: self.addr.ip(),
            }),
            timing: vec![line('t', "0 0")],
            other: Vec::new(),
            attributes: Vec::new(),
            media,
        }
    }
}

/// The codec a payload type in `m` stands for, if we support it.
fn supported_codec(m: &MediaDescription, pt: u8, ours: &[CodecName]) -> Option<Codec> {
    let (name, clock_rate) = match m.rtpmap(pt) {
        Some(map) => (CodecName::from_name(map.name)?, map.clock_rate),
        None => match pt {
            0 => (CodecName::Pcmu, 8000),
            8 => (CodecName::Pcma, 8000),
            _ => return None,
        },
    };
    (clock_rate == 8000 && ours.contains(&name)).then_some(Codec {
        pt,
        name,
        clock_rate,
    })
}

/// The telephone-event/8000 payload type in `m`, if any.
fn telephone_event_pt(m: &MediaDescription) -> Option<u8> {
    m.payload_types().find(|&pt| {
        m.rtpmap(pt)
            .is_some_and(|r| r.name.eq_ignore_ascii_case("telephone-event") && r.clock_rate == 8000)
    })
}

/// Codecs of `m` we support, in `m`'s order.
fn common_codecs(m: &MediaDescription, ours: &[CodecName]) -> Vec<Codec> {
    let mut out: Vec<Codec> = Vec::new();
    for pt in m.payload_types() {
        if let Some(c) = supported_codec(m, pt, ours) {
            if !out.iter().any(|o| o.pt == c.pt) {
                out.push(c);
            }
        }
    }
    out
}

/// The peer's effective direction: the media attribute, else the session attribute, else
/// sendrecv; a `c=0.0.0.0` hold means the peer does not receive.
fn peer_direction(sdp: &SessionDescription, m: &MediaDescription, addr: IpAddr) -> Direction {
    let written = m
        .direction()
        .or_else(|| {
            sdp.attributes
                .iter()
                .find_map(|a| Direction::from_attr(&a.name))
        })
        .unwrap_or(Direction::SendRecv);
    match (addr.is_unspecified(), written) {
        (true, Direction::SendRecv) => Direction::SendOnly,
        (true, Direction::RecvOnly) => Direction::Inactive,
        _ => written,
    }
}

/// The gateway's direction toward a peer that offers `offer` again (a re-INVITE: hold with
/// `sendonly`, `inactive` or `c=0.0.0.0`, resume with `sendrecv`), as an answer would
/// write it ([`NegotiatedMedia::direction`]); an audio stream with port 0 is switched off
/// (`inactive`). `None` when the offer has no audio stream or no address for it.
pub fn reoffered_direction(offer: &SessionDescription) -> Option<Direction> {
    let m = offer.media.iter().find(|m| m.media == "audio")?;
    if m.port == 0 {
        return Some(Direction::Inactive);
    }
    let addr = m.connection.or(offer.connection)?.addr;
    Some(peer_direction(offer, m, addr).mirror())
}

/// Where the peer of `m` receives RTP.
fn media_addr(sdp: &SessionDescription, m: &MediaDescription) -> Result<SocketAddr, SdpError> {
    let c = m
        .connection
        .or(sdp.connection)
        .ok_or(SdpError::NoConnection)?;
    Ok(SocketAddr::new(c.addr, m.port))
}

fn rtcp_addr(m: &MediaDescription, remote: SocketAddr, mux: bool) -> SocketAddr {
    match m.rtcp() {
        _ if mux => remote,
        Some((port, ip)) => SocketAddr::new(ip.unwrap_or(remote.ip()), port),
        None => SocketAddr::new(remote.ip(), remote.port().wrapping_add(1)),
    }
}

/// Which m-line of an offer the gateway anchors, and the codecs it keeps.
fn choose_stream(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(usize, Vec<Codec>), SdpError> {
    let mut saw_audio = false;
    for (i, m) in offer.media.iter().enumerate() {
        if m.media != "audio" || m.port == 0 || !m.is_rtp_avp() {
            continue;
        }
        saw_audio = true;
        let codecs = common_codecs(m, &local.codecs);
        if !codecs.is_empty() {
            return Ok((i, codecs));
        }
    }
    Err(if saw_audio {
        SdpError::NoCommonCodec
    } else {
        SdpError::NoAudio
    })
}

/// A rejected copy of an m-line (port 0, same formats, no attributes).
fn rejected(m: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media: m.media.clone(),
        port: 0,
        port_count: None,
        proto: m.proto.clone(),
        formats: m.formats.clone(),
        connection: None,
        other: Vec::new(),
        attributes: Vec::new(),
    }
}

/// Builds our audio m-line: codecs, optional telephone-event with its fmtp, ptime, direction.
fn audio_line(
    port: u16,
    proto: &str,
    codecs: &[Codec],
    dtmf: Option<(u8, &str)>,
    ptime: Option<u32>,
    direction: Direction,
) -> MediaDescription {
    let mut formats: Vec<String> = codecs.iter().map(|c| c.pt.to_string()).collect();
    let mut attributes: Vec<Attribute> = codecs
        .iter()
        .map(|c| Attribute::new("rtpmap", format!("{} {}/{}", c.pt, c.name, c.clock_rate)))
        .collect();
    if let Some((pt, fmtp)) = dtmf {
        formats.push(pt.to_string());
        attributes.push(Attribute::new(
            "rtpmap",
            format!("{pt} telephone-event/8000"),
        ));
        attributes.push(Attribute::new("fmtp", format!("{pt} {fmtp}")));
    }
    if let Some(p) = ptime {
        attributes.push(Attribute::new("ptime", p.to_string()));
    }
    attributes.push(Attribute::flag(direction.as_str()));
    MediaDescription {
        media: "audio".to_owned(),
        port,
        port_count: None,
        proto: proto.to_owned(),
        formats,
        connection: None,
        other: Vec::new(),
        attributes,
    }
}

/// Answers a peer's offer, anchoring its audio on `local.addr`.
///
/// Returns our answer and what was negotiated with that peer. Errors map to SIP via
/// [`SdpError::sip_status`] (488 when nothing is acceptable).
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(SessionDescription, NegotiatedMedia), SdpError> {
    let (index, mut codecs) = choose_stream(offer, local)?;
    if local.single_codec {
        codecs.truncate(1);
    }
    let m = offer.media.get(index).ok_or(SdpError::NoAudio)?;
    let codec = *codecs.first().ok_or(SdpError::NoCommonCodec)?;
    let remote = media_addr(offer, m)?;
    let direction = peer_direction(offer, m, remote.ip()).mirror();
    let dtmf_pt = telephone_event_pt(m);
    let dtmf = dtmf_pt.map(|pt| (pt, m.fmtp(pt).unwrap_or("0-15")));
    let mut ours = audio_line(
        local.addr.port(),
        &m.proto,
        &codecs,
        dtmf,
        m.ptime(),
        direction,
    );
    let rtcp_mux = m.has_attribute("rtcp-mux");
    if rtcp_mux {
        ours.attributes.push(Attribute::flag("rtcp-mux"));
    }
    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, other)| {
            if i == index {
                ours.clone()
            } else {
                rejected(other)
            }
        })
        .collect();
    let negotiated = NegotiatedMedia {
        remote,
        remote_rtcp: rtcp_addr(m, remote, rtcp_mux),
        rtcp_mux,
        codec,
        dtmf_pt,
        ptime: m.ptime().unwrap_or(20),
        direction,
    };
    Ok((local.session(media), negotiated))
}

/// Builds the offer for the other leg (the trunk): the codec the first leg settled on
/// first, so the trunk can match it and no transcoding is needed, then our other codecs,
/// then telephone-event. With no first leg, our codecs in our order.
pub fn offer(local: &LocalMedia, first_leg: Option<&NegotiatedMedia>) -> SessionDescription {
    let mut names: Vec<CodecName> = first_leg.map(|n| n.codec.name).into_iter().collect();
    for &c in &local.codecs {
        if !names.contains(&c) {
            names.push(c);
        }
    }
    let codecs: Vec<Codec> = names
        .iter()
        .map(|&name| Codec {
            pt: name.static_pt(),
            name,
            clock_rate: 8000,
        })
        .collect();
    let dtmf_pt = first_leg.and_then(|n| n.dtmf_pt).unwrap_or(local.dtmf_pt);
    let ptime = first_leg.map_or(20, |n| n.ptime);
    let m = audio_line(
        local.addr.port(),
        "RTP/AVP",
        &codecs,
        Some((dtmf_pt, "0-16")),
        Some(ptime),
        Direction::SendRecv,
    );
    local.session(vec![m])
}

/// Reads the answer to an [`offer`] we made: the codec the answerer picked (its first
/// format that we offered), telephone-event if kept, and where to send.
pub fn negotiated_from_answer(
    our_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedMedia, SdpError> {
    let ours = our_offer.media.first().ok_or(SdpError::NoAudio)?;
    let offered: Vec<CodecName> = common_codecs(ours, &[CodecName::Pcmu, CodecName::Pcma])
        .iter()
        .map(|c| c.name)
        .collect();
    let m = answer
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)
        .ok_or(SdpError::NoAudio)?;
    let codec = *common_codecs(m, &offered)
        .first()
        .ok_or(SdpError::NoCommonCodec)?;
    let remote = media_addr(answer, m)?;
    let rtcp_mux = m.has_attribute("rtcp-mux") && ours.has_attribute("rtcp-mux");
    let theirs = peer_direction(answer, m, remote.ip());
    Ok(NegotiatedMedia {
        remote,
        remote_rtcp: rtcp_addr(m, remote, rtcp_mux),
        rtcp_mux,
        codec,
        dtmf_pt: telephone_event_pt(m),
        ptime: m.ptime().or(ours.ptime()).unwrap_or(20),
        direction: theirs.mirror(),
    })
}
