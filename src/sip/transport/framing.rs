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

    /// Bytes buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
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
