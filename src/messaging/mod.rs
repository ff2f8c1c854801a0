//! Secure messaging between inmates and their approved contacts: the rules, as pure
//! functions over facts read beforehand.
//!
//! An inmate writes at a kiosk (in a sitting, [`crate::kiosk`]) to one of their approved
//! contacts; a family user bound to that contact reads it in the portal (and is emailed
//! that a message waits, never what it says) and answers, with photos if they like. What
//! happens to a message when it is sent is decided here:
//!
//! - its text is checked ([`check_body`]: not empty, within the facility's length limit,
//!   no control characters but line breaks and tabs, nothing invisible);
//! - it is scanned for the facility's watch words ([`scan`]: whole words and phrases,
//!   case-insensitive, punctuation ignored);
//! - the facility's [`ReviewPolicy`] and what the scan found decide whether it waits for
//!   staff or is delivered at once ([`initial_status`]). A privileged message (to or from
//!   an attorney contact) is never scanned, never held and never shown to staff.
//!
//! Photos are [`photo`]'s: PNG or JPEG recognised by their first bytes, within the
//! facility's (or the configured) size, decoded and encoded again so nothing but the
//! pixels survives (EXIF, comments, anything appended), and kept under the data directory
//! by the SHA-256 of the new file.
//!
//! The records are [`crate::store`]'s (`store::messages`), the price the ledger's
//! ([`crate::ledger::Ledger::charge_message`]), the routes `api::routes::messages`'.

pub mod photo;
pub mod purge;

use crate::money::Money;
use serde::{Deserialize, Serialize};

/// The `[messaging]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// The largest photo a family may send, in bytes, as uploaded; a facility may set a
    /// smaller limit of its own.
    pub max_photo_bytes: u64,
    /// The largest width or height of a photo, in pixels (a small file can hold a huge
    /// image: decoding one would take the memory of its pixels).
    pub max_photo_pixels: u32,
    /// How often a node removes messages past their facility's retention.
    pub purge_interval_secs: u64,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            max_photo_bytes: 5 * 1024 * 1024,
            max_photo_pixels: 6_000,
            purge_interval_secs: 3_600,
        }
    }
}

impl MessagingConfig {
    /// The first key out of bounds and what is wrong with it.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1_024..=MAX_UPLOAD_BYTES).contains(&self.max_photo_bytes) {
            return Err((
                "messaging.max_photo_bytes",
                "must be 1024 to 26214400 (25 MiB)",
            ));
        }
        if !(16..=20_000).contains(&self.max_photo_pixels) {
            return Err(("messaging.max_photo_pixels", "must be 16 to 20000"));
        }
        if !(60..=86_400).contains(&self.purge_interval_secs) {
            return Err(("messaging.purge_interval_secs", "must be 60 to 86400"));
        }
        Ok(())
    }
}

/// The most a photo upload may be, whatever is configured: the HTTP body limit of the
/// upload route.
pub const MAX_UPLOAD_BYTES: u64 = 25 * 1024 * 1024;

/// The longest text a facility may allow in one message.
pub const MAX_CHARS_LIMIT: u32 = 20_000;
/// The most photos a facility may allow on one message.
pub const MAX_PHOTOS_LIMIT: u32 = 10;
/// The longest watch word or phrase, in characters.
pub const MAX_WORD_CHARS: usize = 64;
/// The most watch words one facility may have.
pub const MAX_WATCH_WORDS: usize = 2_000;

/// Which messages wait for staff before they are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewPolicy {
    /// Every message (but privileged ones).
    All,
    /// Messages holding a watch word.
    Flagged,
    /// None: every message is delivered at once (watch words are still marked).
    None,
}

impl ReviewPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewPolicy::All => "all",
            ReviewPolicy::Flagged => "flagged",
            ReviewPolicy::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<ReviewPolicy> {
        match s {
            "all" => Some(ReviewPolicy::All),
            "flagged" => Some(ReviewPolicy::Flagged),
            "none" => Some(ReviewPolicy::None),
            _ => None,
        }
    }
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Waiting for staff review; the recipient does not see it.
    Held,
    /// The recipient sees it.
    Delivered,
    /// Staff refused it, with a reason the sender sees; the recipient never does.
    Rejected,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Held => "held",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        match s {
            "held" => Some(MessageStatus::Held),
            "delivered" => Some(MessageStatus::Delivered),
            "rejected" => Some(MessageStatus::Rejected),
            _ => None,
        }
    }
}

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Written by the inmate at a kiosk, to the contact.
    FromInmate,
    /// Written by a family user bound to the contact, to the inmate.
    ToInmate,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::FromInmate => "from_inmate",
            Direction::ToInmate => "to_inmate",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "from_inmate" => Some(Direction::FromInmate),
            "to_inmate" => Some(Direction::ToInmate),
            _ => None,
        }
    }
}

/// A facility's messaging rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub review: ReviewPolicy,
    /// The longest message, in characters.
    pub max_chars: u32,
    /// What one message costs its sender; `0.00`: free.
    pub price: Money,
    /// The largest photo, in bytes; 0: the configured limit.
    pub max_photo_bytes: u64,
    /// The most photos on one message; 0: none.
    pub max_photos: u32,
    /// Days a message is kept after it was sent.
    pub retention_days: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            review: ReviewPolicy::Flagged,
            max_chars: 2_000,
            price: Money::ZERO,
            max_photo_bytes: 0,
            max_photos: 3,
            retention_days: 365,
        }
    }
}

impl Settings {
    /// The first field out of bounds and what is wrong with it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_CHARS_LIMIT).contains(&self.max_chars) {
            return Err(("max_chars", format!("must be 1 to {MAX_CHARS_LIMIT}")));
        }
        if self.price.is_negative() || self.price.decimal() > rust_decimal::Decimal::from(100) {
            return Err(("price", "must be 0.00 to 100.00".into()));
        }
        if self.max_photo_bytes > MAX_UPLOAD_BYTES {
            return Err((
                "max_photo_bytes",
                format!("must be 0 (the configured limit) to {MAX_UPLOAD_BYTES}"),
            ));
        }
        if self.max_photos > MAX_PHOTOS_LIMIT {
            return Err(("max_photos", format!("must be 0 to {MAX_PHOTOS_LIMIT}")));
        }
        if !(1..=3_650).contains(&self.retention_days) {
            return Err(("retention_days", "must be 1 to 3650".into()));
        }
        Ok(())
    }

    /// The photo size limit in force: the facility's, never above the configured one.
    pub fn photo_limit(&self, config: &MessagingConfig) -> u64 {
        match self.max_photo_bytes {
            0 => config.max_photo_bytes,
            n => n.min(config.max_photo_bytes),
        }
    }
}

/// Why a message's text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyProblem {
    #[error("the message is empty")]
    Empty,
    #[error("the message is {chars} characters long; this facility allows {max}")]
    TooLong { chars: usize, max: u32 },
    #[error("the message holds a control or invisible character at position {position}")]
    Character { position: usize },
}

/// The text of a message as it is kept (white space around it dropped), or why not.
pub fn check_body(body: &str, max_chars: u32) -> Result<&str, BodyProblem> {
    let kept = body.trim();
    if kept.is_empty() {
        return Err(BodyProblem::Empty);
    }
    let chars = kept.chars().count();
    if chars > max_chars as usize {
        return Err(BodyProblem::TooLong {
            chars,
            max: max_chars,
        });
    }
    let rule = crate::text::Rule::new(max_chars as usize, crate::text::Form::Note);
    rule.check("body", kept).map_err(|e| match e.problem {
        crate::text::Problem::ControlCharacter { position }
        | crate::text::Problem::Invisible { position, .. } => BodyProblem::Character { position },
        _ => BodyProblem::Empty,
    })?;
    Ok(kept)
}

/// Why a watch word is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordProblem {
    #[error("a watch word holds at least one letter or digit")]
    Empty,
    #[error("a watch word or phrase is at most {MAX_WORD_CHARS} characters")]
    TooLong,
    #[error("a watch word holds no control or invisible characters")]
    Character,
}

/// A watch word as it is stored: trimmed, lower-case, inner white space one space.
pub fn normalize_word(raw: &str) -> Result<String, WordProblem> {
    if crate::text::Rule::new(MAX_WORD_CHARS * 4, crate::text::Form::Line)
        .check("word", raw)
        .is_err()
    {
        return Err(WordProblem::Character);
    }
    let word = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if !word.chars().any(char::is_alphanumeric) {
        return Err(WordProblem::Empty);
    }
    if word.chars().count() > MAX_WORD_CHARS {
        return Err(WordProblem::TooLong);
    }
    Ok(word)
}

/// Lower-case letters and digits, every other run of characters one space, with a
/// space on both ends: `" meet me at 5 "`.
fn words_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// The watch words (as stored) that `body` holds as whole words or phrases, ignoring
/// case and punctuation ("Meet me at the Gate!" holds "the gate", not "ate"), each once,
/// in the list's order.
pub fn scan(body: &str, words: &[String]) -> Vec<String> {
    let text = words_of(body);
    let mut found: Vec<String> = Vec::new();
    for w in words {
        let needle = words_of(w);
        if needle.trim().is_empty() || found.contains(w) {
            continue;
        }
        if text.contains(&needle) {
            found.push(w.clone());
        }
    }
    found
}

/// Where a message stands when it is sent: privileged messages are delivered (never
/// reviewed); otherwise the facility's policy over whether a watch word was found.
pub fn initial_status(policy: ReviewPolicy, privileged: bool, flagged: bool) -> MessageStatus {
    if privileged {
        return MessageStatus::Delivered;
    }
    match policy {
        ReviewPolicy::All => MessageStatus::Held,
        ReviewPolicy::Flagged if flagged => MessageStatus::Held,
        ReviewPolicy::Flagged | ReviewPolicy::None => MessageStatus::Delivered,
    }
}

/// The price of one message: nothing for privileged correspondence, else the facility's.
pub fn price(settings: &Settings, privileged: bool) -> Money {
    if privileged {
        Money::ZERO
    } else {
        settings.price
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| normalize_word(w).unwrap()).collect()
    }

    #[test]
    fn a_scan_finds_whole_words_and_phrases_whatever_their_case() {
        let list = words(&["Gate", "  the   Package ", "ate", "spice"]);
        assert_eq!(list[1], "the package");
        let found = scan("Bring THE package to the gate!", &list);
        assert_eq!(found, vec!["gate".to_string(), "the package".to_string()]);
        assert!(scan("I waited late; spices are nice", &list).is_empty());
        assert_eq!(scan("I ate.", &list), vec!["ate".to_string()]);
        assert_eq!(scan("spice, spice", &list), vec!["spice".to_string()]);
        assert!(scan("", &list).is_empty());
    }

    #[test]
    fn the_policy_holds_what_it_says_and_never_a_privileged_message() {
        use MessageStatus::*;
        use ReviewPolicy as P;
        assert_eq!(initial_status(P::All, false, false), Held);
        assert_eq!(initial_status(P::Flagged, false, true), Held);
        assert_eq!(initial_status(P::Flagged, false, false), Delivered);
        assert_eq!(initial_status(P::None, false, true), Delivered);
        for p in [P::All, P::Flagged, P::None] {
            assert_eq!(initial_status(p, true, true), Delivered);
        }
    }

    #[test]
    fn a_body_is_trimmed_and_bounded() {
        assert_eq!(check_body("  hi\n there ", 20), Ok("hi\n there"));
        assert_eq!(check_body(" \n ", 20), Err(BodyProblem::Empty));
        assert_eq!(
            check_body("abcdef", 5),
            Err(BodyProblem::TooLong { chars: 6, max: 5 })
        );
        assert!(matches!(
            check_body("a\u{7}b", 5),
            Err(BodyProblem::Character { position: 2 })
        ));
    }

    #[test]
    fn words_are_kept_lower_case_and_bounded() {
        assert_eq!(normalize_word("  Drop   OFF "), Ok("drop off".into()));
        assert_eq!(normalize_word(" !! "), Err(WordProblem::Empty));
        assert_eq!(normalize_word(&"a".repeat(65)), Err(WordProblem::TooLong));
        assert_eq!(normalize_word("a\u{0}b"), Err(WordProblem::Character));
    }

    #[test]
    fn settings_are_bounded_and_privileged_messages_are_free() {
        let mut s = Settings::default();
        assert!(s.check().is_ok());
        s.price = "0.25".parse().unwrap();
        assert_eq!(price(&s, false), s.price);
        assert_eq!(price(&s, true), Money::ZERO);
        s.max_chars = 0;
        assert_eq!(s.check().unwrap_err().0, "max_chars");
        let c = MessagingConfig::default();
        let mut s = Settings::default();
        assert_eq!(s.photo_limit(&c), c.max_photo_bytes);
        s.max_photo_bytes = 1_000;
        assert_eq!(s.photo_limit(&c), 1_000);
        assert!(MessagingConfig::default().check().is_ok());
    }
}
