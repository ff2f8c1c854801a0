//! A minimal client of rtpengine's ng control protocol, for the side-by-side benchmark:
//! bencode values, the `cookie <dict>` datagram framing over UDP, `offer` / `answer` /
//! `delete`, and reading the relay's address out of the SDP it returns.
//!
//! A message is `<cookie> <bencoded dictionary>`; the reply carries the same cookie and a
//! dictionary whose `result` is `ok` (or `error` with an `error-reason`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// A bencode value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    pub(crate) fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary of string keys.
    pub(crate) fn dict<'a>(items: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(
            items
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Appends the bencoding of `self` (dictionary keys in sorted order, as bencode wants).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode_into(out));
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Value::Bytes(k.clone()).encode_into(out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes one value that must span all of `input`.
    pub(crate) fn decode(input: &[u8]) -> Result<Value, NgError> {
        let (v, rest) = decode_one(input, 0)?;
        match rest {
            [] => Ok(v),
            _ => Err(NgError::Bencode("trailing bytes after the value")),
        }
    }
}

const MAX_DEPTH: usize = 32;

fn decode_one(input: &[u8], depth: usize) -> Result<(Value, &[u8]), NgError> {
    if depth > MAX_DEPTH {
        return Err(NgError::Bencode("nested too deeply"));
    }
    match input.first() {
        None => Err(NgError::Bencode("unexpected end")),
        Some(b'i') => {
            let end = input
                .iter()
                .position(|&c| c == b'e')
                .ok_or(NgError::Bencode("integer without its 'e'"))?;
            let digits = std::str::from_utf8(&input[1..end])
                .map_err(|_| NgError::Bencode("integer is not ASCII"))?;
            let valid = !digits.is_empty()
                && digits != "-"
                && digits != "-0"
                && !(digits.len() > 1 && digits.starts_with('0'))
                && !digits.starts_with("-0");
            let i = digits
                .parse::<i64>()
                .ok()
                .filter(|_| valid)
                .ok_or(NgError::Bencode("malformed integer"))?;
            Ok((Value::Int(i), &input[end + 1..]))
        }
        Some(b'l') => {
            let mut rest = &input[1..];
            let mut items = Vec::new();
            loop {
                match rest.first() {
                    Some(b'e') => return Ok((Value::List(items), &rest[1..])),
                    None => return Err(NgError::Bencode("list without its 'e'")),
                    _ => {
                        let (v, r) = decode_one(rest, depth + 1)?;
                        items.push(v);
                        rest = r;
                    }
                }
            }
        }
        Some(b'd') => {
            let mut rest = &input[1..];
            let mut items = BTreeMap::new();
            loop {
                match rest.first() {
                    Some(b'e') => return Ok((Value::Dict(items), &rest[1..])),
                    None => return Err(NgError::Bencode("dictionary without its 'e'")),
                    _ => {
                        let (k, r) = decode_one(rest, depth + 1)?;
                        let Value::Bytes(k) = k else {
                            return Err(NgError::Bencode("dictionary key is not a string"));
                        };
                        let (v, r) = decode_one(r, depth + 1)?;
                        items.insert(k, v);
                        rest = r;
                    }
                }
            }
        }
        Some(c) if c.is_ascii_digit() => {
            let colon = input
                .iter()
                .position(|&c| c == b':')
                .ok_or(NgError::Bencode("string length without ':'"))?;
            let len: usize = std::str::from_utf8(&input[..colon])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(NgError::Bencode("malformed string length"))?;
            let body = &input[colon + 1..];
            if body.len() < len {
                return Err(NgError::Bencode("string shorter than its length"));
            }
            Ok((Value::Bytes(body[..len].to_vec()), &body[len..]))
        }
        Some(_) => Err(NgError::Bencode("unknown value type")),
    }
}

#[derive(Debug)]
pub(crate) enum NgError {
    Io(std::io::Error),
    Bencode(&'static str),
    /// The reply had no `<cookie> ` prefix or another request's cookie.
    Framing,
    /// rtpengine answered `result: error` (or something else than `ok`).
    Refused(String),
    /// The reply's SDP names no `c=` address or no `m=audio` port.
    Sdp(&'static str),
}

impl fmt::Display for NgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NgError::Io(e) => write!(f, "ng socket: {e}"),
            NgError::Bencode(why) => write!(f, "bencode: {why}"),
            NgError::Framing => write!(f, "reply without the request's cookie"),
            NgError::Refused(why) => write!(f, "rtpengine refused: {why}"),
            NgError::Sdp(why) => write!(f, "SDP: {why}"),
        }
    }
}

impl From<std::io::Error> for NgError {
    fn from(e: std::io::Error) -> Self {
        NgError::Io(e)
    }
}

/// `<cookie> <bencoded message>`.
pub(crate) fn frame(cookie: &str, message: &Value) -> Vec<u8> {
    let mut out = format!("{cookie} ").into_bytes();
    out.extend_from_slice(&message.encode());
    out
}

/// Splits a reply into its cookie and message.
pub(crate) fn unframe(datagram: &[u8]) -> Result<(&str, Value), NgError> {
    let space = datagram
        .iter()
        .position(|&c| c == b' ')
        .ok_or(NgError::Framing)?;
    let cookie = std::str::from_utf8(&datagram[..space]).map_err(|_| NgError::Framing)?;
    Ok((cookie, Value::decode(&datagram[space + 1..])?))
}

/// The SDP of one plain RTP/AVP PCMU audio stream at `addr`.
pub(crate) fn pcmu_sdp(addr: SocketAddr) -> String {
    let ip = addr.ip();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        addr.port()
    )
}

/// The address an SDP asks audio to be sent to: the media-level `c=` if any, else the
/// session-level one, and the `m=audio` port.
pub(crate) fn sdp_audio_addr(sdp: &str) -> Result<SocketAddr, NgError> {
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // the first audio stream only
            }
            in_audio = m.starts_with("audio ");
            if in_audio {
                port = m.split_whitespace().nth(1).and_then(|p| p.parse().ok());
                if port.is_none() {
                    return Err(NgError::Sdp("m=audio without a port"));
                }
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c.split_whitespace().nth(2).and_then(|a| a.parse().ok());
            match (in_audio, port.is_some()) {
                (false, false) => session_ip = ip,
                (true, _) => media_ip = ip,
                _ => {}
            }
        }
    }
    let port = port.ok_or(NgError::Sdp("no m=audio line"))?;
    let ip = media_ip
        .or(session_ip)
        .ok_or(NgError::Sdp("no c= address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// A blocking ng client on its own UDP socket.
pub(crate) struct NgClient {
    socket: UdpSocket,
    next: u64,
}

impl NgClient {
    pub(crate) fn connect(ng: SocketAddr) -> Result<Self, NgError> {
        let socket = UdpSocket::bind((ng.ip(), 0))?;
        socket.connect(ng)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(NgClient { socket, next: 0 })
    }

    /// Sends `message` and returns the reply's dictionary when its `result` is `ok`.
    /// Replies to earlier (timed-out) requests are skipped by their cookie.
    pub(crate) fn request(&mut self, message: &Value) -> Result<Value, NgError> {
        self.next += 1;
        let cookie = format!("{}_{}", std::process::id(), self.next);
        self.socket.send(&frame(&cookie, message))?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.socket.recv(&mut buf)?;
            let (got, reply) = unframe(&buf[..n])?;
            if got != cookie {
                continue;
            }
            return match reply.get("result").and_then(Value::as_str) {
                Some("ok") => Ok(reply),
                other => Err(NgError::Refused(
                    reply
                        .get("error-reason")
                        .and_then(Value::as_str)
                        .or(other)
                        .unwrap_or("no result")
                        .to_string(),
                )),
            };
        }
    }

    pub(crate) fn ping(&mut self) -> Result<(), NgError> {
        let reply = self.socket_ping()?;
        match reply.get("result").and_then(Value::as_str) {
            Some("pong") => Ok(()),
            _ => Err(NgError::Refused("no pong".into())),
        }
    }

    fn socket_ping(&mut self) -> Result<Value, NgError> {
        self.next += 1;
        let cookie = format!("{}_{}", std::process::id(), self.next);
        self.socket.send(&frame(
            &cookie,
            &Value::dict([("command", Value::str("ping"))]),
        ))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf)?;
            let (got, reply) = unframe(&buf[..n])?;
            if got == cookie {
                return Ok(reply);
            }
        }
    }

    /// Anchors one call between two plain PCMU peers: `offer` with A's SDP, `answer` with
    /// B's. Returns (where A must send, where B must send).
    pub(crate) fn anchor(
        &mut self,
        call_id: &str,
        a: SocketAddr,
        b: SocketAddr,
    ) -> Result<(SocketAddr, SocketAddr), NgError> {
        let offer = self.request(&Value::dict([
            ("command", Value::str("offer")),
            ("call-id", Value::str(call_id)),
            ("from-tag", Value::str("a")),
            ("sdp", Value::str(&pcmu_sdp(a))),
        ]))?;
        // The offer as rewritten for B: where B sends.
        let for_b = sdp_audio_addr(
            offer
                .get("sdp")
                .and_then(Value::as_str)
                .ok_or(NgError::Sdp("offer reply without sdp"))?,
        )?;
        let answer = self.request(&Value::dict([
            ("command", Value::str("answer")),
            ("call-id", Value::str(call_id)),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            ("sdp", Value::str(&pcmu_sdp(b))),
        ]))?;
        let for_a = sdp_audio_addr(
            answer
                .get("sdp")
                .and_then(Value::as_str)
                .ok_or(NgError::Sdp("answer reply without sdp"))?,
        )?;
        Ok((for_a, for_b))
    }

    pub(crate) fn delete(&mut self, call_id: &str) -> Result<(), NgError> {
        self.request(&Value::dict([
            ("command", Value::str("delete")),
            ("call-id", Value::str(call_id)),
        ]))
        .map(|_| ())
    }
}
