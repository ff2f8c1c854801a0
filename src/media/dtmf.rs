//! DTMF: RFC 4733 telephone-events in RTP, SIP INFO digit bodies, and PIN collection.
//!
//! - [`TelephoneEvent::parse`] reads the 4-byte event payload; [`DtmfDetector`] turns the
//!   stream of event packets into one [`DigitPress`] per key press. Senders repeat the
//!   start packet while the key is held (growing `duration`) and send the end packet three
//!   times; all share one RTP timestamp, so the detector keys presses by timestamp and
//!   reports a digit on the *first* packet seen for a new timestamp (fast feedback for
//!   barge-in, and a lost end packet cannot lose the digit). A long press split into
//!   segments (RFC 4733 §2.5.1.3) continues at `timestamp + duration` and is not a new press.
//! - [`parse_sip_info`] reads `application/dtmf-relay` (`Signal=5\r\nDuration=160`) and
//!   `application/dtmf` (`5`) bodies.
//! - [`DigitCollector`] collects a PIN sans-IO: until `#` or a maximum length, with a
//!   first-digit and an inter-digit timeout; the caller passes `now` and polls
//!   [`DigitCollector::poll_timeout`]. `*` clears what was typed (a retype, as IVRs do).
//!   Collected digits are wrapped in [`Digits`], whose `Debug` does not show them: they are
//!   PINs and must never reach a log.

use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors parsing DTMF from RTP payloads or SIP INFO bodies.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DtmfError {
    /// A telephone-event payload shorter than 4 bytes.
    #[error("telephone-event payload of {0} bytes, need 4")]
    ShortEvent(usize),
    /// A SIP INFO body without a recognizable digit.
    #[error("SIP INFO body carries no DTMF digit")]
    NoSignal,
    /// A SIP INFO body whose signal is not a DTMF key.
    #[error("SIP INFO signal is not a DTMF key")]
    BadSignal,
    /// A SIP INFO content type other than `application/dtmf-relay` or `application/dtmf`.
    #[error("unsupported DTMF content type")]
    UnsupportedContentType,
}

/// Maps an RFC 4733 event code to its key: 0–9, 10 `*`, 11 `#`, 12–15 `A`–`D`.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => char::from_digit(u32::from(event), 10),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (event - 12))),
        _ => None,
    }
}

/// Maps a key to its RFC 4733 event code (inverse of [`event_to_digit`]).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => digit.to_digit(10).and_then(|d| u8::try_from(d).ok()),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => u8::try_from(u32::from(digit) - u32::from('A') + 12).ok(),
        'a'..='d' => digit_to_event(digit.to_ascii_uppercase()),
        _ => None,
    }
}

/// One RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–15 are DTMF keys).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes of an RTP payload (extra bytes, e.g. redundancy, ignored).
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let [event, flags, d0, d1] = *payload
            .first_chunk::<4>()
            .ok_or(DtmfError::ShortEvent(payload.len()))?;
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The key, if the event is a DTMF key.
    pub fn digit(&self) -> Option<char> {
        event_to_digit(self.event)
    }
}

/// One key press detected in RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitPress {
    /// The key: `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    /// RTP timestamp of the event (its start).
    pub timestamp: u32,
}

/// The event being received, to recognize its repeats.
#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    duration: u16,
    ended: bool,
}

/// De-duplicates telephone-event packets into one [`DigitPress`] per key press.
#[derive(Debug, Clone, Default)]
pub struct DtmfDetector {
    current: Option<Current>,
}

impl DtmfDetector {
    /// A detector that has seen no event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event packet (its RTP timestamp and payload). Returns the press
    /// the first time a key press is seen; repeats, end retransmissions, long-press
    /// segments and non-DTMF events return `None`.
    pub fn on_event(&mut self, rtp_timestamp: u32, event: &TelephoneEvent) -> Option<DigitPress> {
        let new_press = match self.current {
            Some(c) if c.timestamp == rtp_timestamp => false,
            Some(c) => !Self::continues(&c, rtp_timestamp, event),
            None => true,
        };
        let ended = event.end
            || self
                .current
                .is_some_and(|c| c.timestamp == rtp_timestamp && c.ended);
        self.current = Some(Current {
            timestamp: rtp_timestamp,
            event: event.event,
            duration: event.duration,
            ended,
        });
        let digit = event.digit()?;
        new_press.then_some(DigitPress {
            digit,
            timestamp: rtp_timestamp,
        })
    }

    /// Whether a packet at `ts` is the next segment of a long press of the same key.
    fn continues(c: &Current, ts: u32, event: &TelephoneEvent) -> bool {
        !c.ended
            && c.event == event.event
            && c.duration == u16::MAX
            && ts == c.timestamp.wrapping_add(u32::from(c.duration))
    }

    /// Parses an RTP payload and feeds it; malformed payloads are ignored (`None`).
    pub fn on_payload(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<DigitPress> {
        let event = TelephoneEvent::parse(payload).ok()?;
        self.on_event(rtp_timestamp, &event)
    }
}

/// A digit received in a SIP INFO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    /// The key.
    pub digit: char,
    /// The `Duration=` value in milliseconds, if given.
    pub duration_ms: Option<u32>,
}

/// Parses a SIP INFO body by its `Content-Type` (parameters and case ignored).
pub fn parse_sip_info(content_type: &str, body: &str) -> Result<InfoDigit, DtmfError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/dtmf-relay" => parse_dtmf_relay(body),
        "application/dtmf" => Ok(InfoDigit {
            digit: parse_signal(body.trim())?,
            duration_ms: None,
        }),
        _ => Err(DtmfError::UnsupportedContentType),
    }
}

/// Parses an `application/dtmf-relay` body: `Signal=5` and optional `Duration=160` lines.
pub fn parse_dtmf_relay(body: &str) -> Result<InfoDigit, DtmfError> {
    let mut digit = None;
    let mut duration_ms = None;
    for line in body.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "signal" => digit = Some(parse_signal(value)?),
            "duration" => duration_ms = value.parse().ok(),
            _ => {}
        }
    }
    let digit = digit.ok_or(DtmfError::NoSignal)?;
    Ok(InfoDigit { digit, duration_ms })
}

/// A signal value: a key (`5`, `*`, `#`, `A`) or an event code (`10` for `*`, `11` for `#`).
fn parse_signal(value: &str) -> Result<char, DtmfError> {
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Err(DtmfError::NoSignal),
        (Some(c), None) => digit_to_event(c)
            .and_then(event_to_digit)
            .ok_or(DtmfError::BadSignal),
        _ => value
            .parse::<u8>()
            .ok()
            .and_then(event_to_digit)
            .ok_or(DtmfError::BadSignal),
    }
}

/// Collected digits. `Debug` hides them: they are usually a PIN.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Digits(String);

impl Digits {
    /// The digits as typed (without the terminator).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// How many digits.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no digit was typed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Digits {
    fn from(s: String) -> Digits {
        Digits(s)
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digits(<{} redacted>)", self.0.len())
    }
}

/// How a [`DigitCollector`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorConfig {
    /// Collection completes when this many digits are typed.
    pub max_digits: usize,
    /// The key that ends entry early (`#`); `None` to rely on length and timeouts.
    pub terminator: Option<char>,
    /// How long to wait for the first digit after the collector starts.
    pub first_digit_timeout: Duration,
    /// How long to wait after each digit for the next.
    pub inter_digit_timeout: Duration,
}

impl Default for CollectorConfig {
    /// A PIN: up to 8 digits ended by `#`, 10 s for the first digit, 5 s between digits.
    fn default() -> Self {
        CollectorConfig {
            max_digits: 8,
            terminator: Some('#'),
            first_digit_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
        }
    }
}

/// What a [`DigitCollector`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// The terminator was pressed or the maximum length reached.
    Complete(Digits),
    /// Digits were typed but the inter-digit timeout expired before the terminator; the
    /// call flow decides whether that counts as an entry (a PIN attempt) or a retry.
    InterDigitTimeout(Digits),
    /// No digit at all before the first-digit timeout.
    TimedOut,
}

/// Sans-IO PIN / menu collector.
#[derive(Debug, Clone)]
pub struct DigitCollector {
    config: CollectorConfig,
    digits: String,
    /// When the running timeout expires; `None` once finished.
    deadline: Option<Instant>,
}

impl DigitCollector {
    /// Starts collecting at `now` (usually when the prompt starts, so typing ahead works).
    pub fn new(config: CollectorConfig, now: Instant) -> Self {
        DigitCollector {
            config,
            digits: String::with_capacity(config.max_digits),
            deadline: Some(now + config.first_digit_timeout),
        }
    }

    /// Restarts collection (e.g. after a wrong PIN) at `now`.
    pub fn restart(&mut self, now: Instant) {
        self.digits.clear();
        self.deadline = Some(now + self.config.first_digit_timeout);
    }

    /// Whether collection has produced its result.
    pub fn is_finished(&self) -> bool {
        self.deadline.is_none()
    }

    /// How many digits have been typed so far.
    pub fn typed(&self) -> usize {
        self.digits.len()
    }

    /// Feeds one key press. Ignored once finished and for keys that are not DTMF.
    pub fn on_digit(&mut self, digit: char, now: Instant) -> Option<Collected> {
        self.deadline?;
        if Some(digit) == self.config.terminator {
            return Some(self.finish(Collected::Complete));
        }
        match digit {
            '*' => self.digits.clear(),
            '0'..='9' | 'A'..='D' => self.digits.push(digit),
            _ => return None,
        }
        if self.digits.len() >= self.config.max_digits {
            return Some(self.finish(Collected::Complete));
        }
        self.deadline = Some(now + self.config.inter_digit_timeout);
        None
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Expires the running timeout if `now` has reached it.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Collected> {
        if now < self.deadline? {
            return None;
        }
        if self.digits.is_empty() {
            self.deadline = None;
            Some(Collected::TimedOut)
        } else {
            Some(self.finish(Collected::InterDigitTimeout))
        }
    }

    fn finish(&mut self, outcome: fn(Digits) -> Collected) -> Collected {
        self.deadline = None;
        outcome(Digits(std::mem::take(&mut self.digits)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn digit_mapping() {
        let keys: String = (0..16).filter_map(event_to_digit).collect();
        assert_eq!(keys, "0123456789*#ABCD");
        assert_eq!(event_to_digit(16), None);
        for (i, k) in keys.chars().enumerate() {
            assert_eq!(digit_to_event(k), Some(i as u8));
        }
        assert_eq!(digit_to_event('b'), Some(13));
        assert_eq!(digit_to_event('x'), None);
    }

    #[test]
    fn parses_event_payload() {
        let e = TelephoneEvent::parse(&[0x0b, 0x8a, 0x03, 0x20]).unwrap();
        assert_eq!(e, ev(11, true, 800));
        assert_eq!(e.digit(), Some('#'));
        assert_eq!(
            TelephoneEvent::parse(&[1, 2]),
            Err(DtmfError::ShortEvent(2))
        );
    }

    #[test]
    fn one_press_per_timestamp() {
        let mut d = DtmfDetector::new();
        let got: Vec<_> = [
            (1000, ev(5, false, 160)),
            (1000, ev(5, false, 320)),
            (1000, ev(5, true, 480)),
            (1000, ev(5, true, 480)),
            (1000, ev(5, true, 480)),
            (2000, ev(5, true, 400)),   // same key again, start packets lost
            (3000, ev(16, false, 160)), // flash: not a digit
            (4000, ev(11, false, 160)),
        ]
        .iter()
        .filter_map(|(ts, e)| d.on_event(*ts, e))
        .map(|p| p.digit)
        .collect();
        assert_eq!(got.iter().collect::<String>(), "55#");
    }

    #[test]
    fn long_press_segments_are_one_press() {
        let mut d = DtmfDetector::new();
        assert!(d
            .on_event(u32::MAX - 100, &ev(1, false, u16::MAX))
            .is_some());
        let next = (u32::MAX - 100).wrapping_add(65535);
        assert!(d.on_event(next, &ev(1, false, 160)).is_none());
        assert!(d.on_event(next, &ev(1, true, 320)).is_none());
        assert!(d.on_payload(next + 500, &[1, 0x80, 0, 160]).is_some());
        assert!(d.on_payload(next + 900, &[1]).is_none());
    }

    #[test]
    fn sip_info_bodies() {
        let d = parse_sip_info("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            d,
            InfoDigit {
                digit: '5',
                duration_ms: Some(160)
            }
        );
        let d = parse_sip_info("Application/DTMF-Relay; x=y", "signal= #\nduration=bad").unwrap();
        assert_eq!((d.digit, d.duration_ms), ('#', None));
        assert_eq!(parse_dtmf_relay("Signal=10").unwrap().digit, '*');
        assert_eq!(
            parse_sip_info("application/dtmf", " 7\r\n").unwrap().digit,
            '7'
        );
        assert_eq!(parse_dtmf_relay("Duration=100"), Err(DtmfError::NoSignal));
        assert_eq!(parse_dtmf_relay("Signal=Z"), Err(DtmfError::BadSignal));
        assert_eq!(parse_dtmf_relay("Signal=99"), Err(DtmfError::BadSignal));
        assert_eq!(
            parse_sip_info("text/plain", "Signal=1"),
            Err(DtmfError::UnsupportedContentType)
        );
    }

    #[test]
    fn digits_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Digits("1234".into())),
            "Digits(<4 redacted>)"
        );
    }
}
