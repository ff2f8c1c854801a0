//! The visit pages' signalling: the JSON messages of the WebSocket each participant (the
//! visitor's page, the inmate's kiosk, an investigator's watch) holds with the gateway.
//!
//! Owns the wire format only — what each message is called, which fields it has, how big
//! it may be — and the decoding of what a browser sends, which trusts nothing: a message
//! that is not text, not JSON, too large, of an unknown type or missing a field is a
//! [`SignalError`] with a code the page can show, and changes nothing. The visit's driver
//! decides what a message does.
//!
//! # From the page
//!
//! | `type` | fields | meaning |
//! |---|---|---|
//! | `hello` | `credential` | first message: the participant's visit secret (the join link's, or the one the kiosk got for the inmate's ID + PIN); browsers cannot put a header on a WebSocket, and a URL would carry it into logs |
//! | `offer` | `sdp` | the page's WebRTC offer (audio + video, `sendrecv`; a watcher: `recvonly`) |
//! | `leave` | — | the person ended the visit (the end button) |
//! | `ping` | — | keep-alive; answered with `pong` |
//!
//! # To the page
//!
//! | `type` | fields | meaning |
//! |---|---|---|
//! | `answer` | `sdp` | the gateway's answer (ICE-lite, one host candidate) |
//! | `state` | `phase`, `remaining_secs`, `other_side`, `balance`? | where the visit is: `lobby` (`opens_in_secs`), `waiting`, `connected`, `paused`; what is left of the slot; whether the other side is there; the balance when the visitor pays |
//! | `warning` | `reason`, `remaining_secs` | the visit ends soon: `funds_low` or `slot_ending` |
//! | `ended` | `reason` | the visit is over, and why (the CDR's end reason) |
//! | `error` | `code`, `message` | a message could not be used; nothing changed (or `opened_elsewhere`: a newer page of this side took over, and this one is closed) |
//! | `pong` | — | the answer to `ping` |
//!
//! An offer is at most [`MAX_SDP_BYTES`]; a whole message at most [`MAX_MESSAGE_BYTES`]
//! (browsers' offers for one audio and one video m-line are 4–8 KB).

use serde::{Deserialize, Serialize};

/// The largest message a page may send.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The largest SDP offer accepted.
pub const MAX_SDP_BYTES: usize = 32 * 1024;

/// What a page sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromPage {
    Hello { credential: String },
    Offer { sdp: String },
    Leave,
    Ping,
}

/// Why a page's message was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("the message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("messages are JSON text")]
    NotText,
    #[error("the message is not valid JSON: {0}")]
    BadJson(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("the message has no `type`")]
    NoType,
    #[error("`{0}` is missing or not a string")]
    MissingField(&'static str),
    #[error("the offer is larger than {MAX_SDP_BYTES} bytes")]
    OfferTooLarge,
    #[error("the offer is not an SDP offer")]
    NotSdp,
}

impl SignalError {
    /// The code the page is sent (`error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            SignalError::TooLarge => "message_too_large",
            SignalError::NotText => "not_text",
            SignalError::BadJson(_) => "bad_json",
            SignalError::UnknownType(_) => "unknown_type",
            SignalError::NoType => "no_type",
            SignalError::MissingField(_) => "missing_field",
            SignalError::OfferTooLarge => "offer_too_large",
            SignalError::NotSdp => "not_sdp",
        }
    }
}

/// Decodes a text message from a page.
pub fn decode(text: &str) -> Result<FromPage, SignalError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(SignalError::TooLarge);
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| SignalError::BadJson(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or(SignalError::NoType)?;
    match kind {
        "hello" => {
            let credential = value
                .get("credential")
                .and_then(serde_json::Value::as_str)
                .ok_or(SignalError::MissingField("credential"))?;
            Ok(FromPage::Hello {
                credential: credential.to_string(),
            })
        }
        "offer" => {
            let sdp = value
                .get("sdp")
                .and_then(serde_json::Value::as_str)
                .ok_or(SignalError::MissingField("sdp"))?;
            if sdp.len() > MAX_SDP_BYTES {
                return Err(SignalError::OfferTooLarge);
            }
            if !sdp.starts_with("v=0") {
                return Err(SignalError::NotSdp);
            }
            Ok(FromPage::Offer {
                sdp: sdp.to_string(),
            })
        }
        "leave" => Ok(FromPage::Leave),
        "ping" => Ok(FromPage::Ping),
        other => Err(SignalError::UnknownType(other.chars().take(40).collect())),
    }
}

/// Where a visit is, as a page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the slot opens.
    Lobby,
    /// The slot is open; the other side is not connected yet.
    Waiting,
    /// Both connected and billed.
    Connected,
    /// A side dropped out: billing paused until it is back.
    Paused,
}

/// What ends soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    FundsLow,
    SlotEnding,
}

/// What the gateway sends a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToPage {
    Answer {
        sdp: String,
    },
    State {
        phase: Phase,
        remaining_secs: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        opens_in_secs: Option<u64>,
        other_side: bool,
        /// The paying account's balance, when the visitor pays (a decimal string).
        #[serde(skip_serializing_if = "Option::is_none")]
        balance: Option<String>,
    },
    Warning {
        reason: WarningKind,
        remaining_secs: u64,
    },
    Ended {
        reason: String,
    },
    Error {
        code: String,
        message: String,
    },
    Pong,
}

impl ToPage {
    /// The message for a refused one.
    pub fn error(e: &SignalError) -> ToPage {
        ToPage::Error {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }

    /// As JSON text.
    pub fn encode(&self) -> String {
        // Plain enums and strings: serializing cannot fail; an empty object if it did.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_pages_send() {
        assert_eq!(
            decode(r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"}"#),
            Ok(FromPage::Offer {
                sdp: "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n".into()
            })
        );
        assert_eq!(decode(r#"{"type":"leave"}"#), Ok(FromPage::Leave));
        assert_eq!(
            decode(r#"{"type":"hello","credential":"abc"}"#),
            Ok(FromPage::Hello {
                credential: "abc".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"ping","extra":[1,2]}"#),
            Ok(FromPage::Ping)
        );
    }

    #[test]
    fn refuses_garbage_with_a_code() {
        let cases: [(&str, &str); 8] = [
            (r#"{"type":"hello"}"#, "missing_field"),
            ("not json", "bad_json"),
            ("[1,2]", "no_type"),
            (r#"{"type":7}"#, "no_type"),
            (r#"{"type":"dance"}"#, "unknown_type"),
            (r#"{"type":"offer"}"#, "missing_field"),
            (r#"{"type":"offer","sdp":42}"#, "missing_field"),
            (r#"{"type":"offer","sdp":"hello"}"#, "not_sdp"),
        ];
        for (text, code) in cases {
            let e = decode(text).unwrap_err();
            assert_eq!(e.code(), code, "{text}");
        }
        let big_sdp = format!(
            r#"{{"type":"offer","sdp":"v=0{}"}}"#,
            "a".repeat(MAX_SDP_BYTES)
        );
        assert_eq!(decode(&big_sdp), Err(SignalError::OfferTooLarge));
        let huge = format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(decode(&huge), Err(SignalError::TooLarge));
        // A long unknown type is cut in the message.
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(500));
        assert!(decode(&long).unwrap_err().to_string().len() < 100);
    }

    #[test]
    fn encodes_for_pages() {
        let s = ToPage::State {
            phase: Phase::Lobby,
            remaining_secs: 1200,
            opens_in_secs: Some(90),
            other_side: false,
            balance: None,
        };
        assert_eq!(
            s.encode(),
            r#"{"type":"state","phase":"lobby","remaining_secs":1200,"opens_in_secs":90,"other_side":false}"#
        );
        assert_eq!(
            ToPage::Warning {
                reason: WarningKind::FundsLow,
                remaining_secs: 60
            }
            .encode(),
            r#"{"type":"warning","reason":"funds_low","remaining_secs":60}"#
        );
        assert_eq!(
            ToPage::error(&SignalError::NotText).encode(),
            r#"{"type":"error","code":"not_text","message":"messages are JSON text"}"#
        );
        assert_eq!(
            ToPage::Ended {
                reason: "slot_ended".into()
            }
            .encode(),
            r#"{"type":"ended","reason":"slot_ended"}"#
        );
        let back: ToPage = serde_json::from_str(&ToPage::Pong.encode()).unwrap();
        assert_eq!(back, ToPage::Pong);
    }
}
