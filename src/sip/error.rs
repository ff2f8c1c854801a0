//! The one error type of the SIP message layer.
//!
//! Every variant carries only static text and numbers, never bytes from the
//! peer, so its `Display` can go straight into a reason phrase
//! ("Bad Request (missing Call-ID)") without header injection.

use thiserror::Error;

/// Why bytes could not be turned into a [`SipMessage`](super::message::SipMessage)
/// or a header into its typed form.
///
/// The transport decides from the variant: [`ParseError::Incomplete`] means
/// "read more" (stream transports only); [`ParseError::Empty`] is a keep-alive;
/// everything else is a malformed or abusive message, answered with
/// [`response_to_malformed`](super::parse::response_to_malformed) when RFC 3261
/// allows it and dropped otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The header block or the body announced by Content-Length has not fully
    /// arrived yet. Not an error on a stream: read more and retry.
    #[error("incomplete message")]
    Incomplete,
    /// The buffer held nothing but CRLF keep-alives (RFC 5626 §3.5.1).
    #[error("empty message")]
    Empty,
    /// The message is larger than the configured limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in force, in bytes.
        limit: usize,
    },
    /// One header line (after unfolding) is longer than the configured limit.
    #[error("header line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force, in bytes.
        limit: usize,
    },
    /// More header lines than the configured limit.
    #[error("more than {limit} headers")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// The first line is neither a Request-Line nor a Status-Line.
    #[error("malformed start line")]
    InvalidStartLine,
    /// The method is not a token.
    #[error("malformed method")]
    InvalidMethod,
    /// The protocol version is not SIP/2.0 (answer 505 to a request).
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// The status code is not three digits in 100..=699.
    #[error("malformed status code")]
    InvalidStatus,
    /// A header line has no colon, an empty or non-token name, or is a
    /// continuation line with nothing to continue.
    #[error("malformed header line")]
    InvalidHeaderLine,
    /// Content-Length is not a decimal number, or several disagree.
    #[error("malformed Content-Length")]
    InvalidContentLength,
    /// A datagram is shorter than its Content-Length announces.
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    /// A header needed to process the message is absent.
    #[error("missing {0}")]
    MissingHeader(&'static str),
    /// A header is present but does not follow its grammar.
    #[error("malformed {0}")]
    InvalidHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match request method")]
    CSeqMethodMismatch,
    /// A URI does not follow RFC 3261 §19.1 / RFC 3966.
    #[error("malformed URI")]
    InvalidUri,
}

impl ParseError {
    /// The status code to answer a request that failed with this error, or
    /// `None` when the failure is no reason to answer (more bytes are needed,
    /// or the datagram was a keep-alive).
    pub fn status(&self) -> Option<u16> {
        match self {
            ParseError::Incomplete | ParseError::Empty => None,
            ParseError::UnsupportedVersion => Some(505),
            ParseError::TooLarge { .. } => Some(513),
            _ => Some(400),
        }
    }

    /// The reason phrase for [`ParseError::status`], naming the problem.
    pub fn reason_phrase(&self) -> String {
        let base = match self.status() {
            Some(505) => "Version Not Supported",
            Some(513) => "Message Too Large",
            _ => "Bad Request",
        };
        format!("{base} ({self})")
    }
}
