//! Sans-IO framing of a SIP byte stream (TCP): bytes in, messages out.

use crate::sip::message::{
    is_keepalive_ping, parse, response_to_malformed, Limits, ParseError, Response, SipMessage,
};

/// What the front of the buffer holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A complete message (drained from the buffer).
    Message(SipMessage),
    /// An RFC 5626 CRLFCRLF ping (drained): answer CRLF.
    Ping,
    /// Read more bytes.
    NeedMore,
    /// Framing is lost: send `response` if any, then close the connection.
    Malformed {
        error: ParseError,
        response: Option<Response>,
    },
}

/// A bounded per-connection buffer.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

impl StreamFramer {
    pub fn new() -> StreamFramer {
        StreamFramer::default()
    }

    /// Most bytes kept waiting for a message: one maximal message plus slack.
    pub fn capacity() -> usize {
        Limits::default().max_message + 4096
    }

    /// Room left before the buffer is full.
    pub fn room(&self) -> usize {
        Self::capacity().saturating_sub(self.buf.len())
    }

    /// Appends bytes read from the socket (at most [`StreamFramer::room`]).
    pub fn push(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.room());
        self.buf.extend_from_slice(bytes.get(..take).unwrap_or(&[]));
    }

    /// Reads at most `want` bytes (and never past [`StreamFramer::room`])
    /// straight into the buffer with `read`, which returns how many it wrote
    /// at the front of the slice it is given.
    pub fn fill_with(
        &mut self,
        want: usize,
        read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let len = self.buf.len();
        let want = want.min(self.room());
        self.buf.resize(len + want, 0);
        let result = read(self.buf.get_mut(len..).unwrap_or(&mut []));
        let n = match &result {
            Ok(n) => (*n).min(want),
            Err(_) => 0,
        };
        self.buf.truncate(len + n);
        result.map(|_| n)
    }

    /// Bytes buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when the buffer holds part of a message (not only CR/LF
    /// keep-alive bytes).
    pub fn holds_message(&self) -> bool {
        self.buf.iter().any(|&b| b != b'\r' && b != b'\n')
    }

    /// Frees a large allocation once its message has been drained, so an
    /// idle connection holds no buffer.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
    }

    /// The next frame; call until [`Frame::NeedMore`] or [`Frame::Malformed`].
    pub fn next_frame(&mut self) -> Frame {
        if is_keepalive_ping(&self.buf) {
            self.buf.drain(..4);
            return Frame::Ping;
        }
        match parse(&self.buf) {
            Ok(parsed) => {
                self.buf.drain(..parsed.consumed.min(self.buf.len()));
                Frame::Message(parsed.message)
            }
            Err(ParseError::Incomplete) if self.room() > 0 => Frame::NeedMore,
            Err(ParseError::Incomplete) => self.malformed(ParseError::TooLarge {
                limit: Limits::default().max_message,
            }),
            Err(error) => self.malformed(error),
        }
    }

    fn malformed(&mut self, error: ParseError) -> Frame {
        let response = response_to_malformed(&self.buf, &error);
        self.buf.clear();
        Frame::Malformed { error, response }
    }
}
