//! Limits on the text clients store.
//!
//! Every string a client can have sallyport keep (a name, a reference, a note, a key) has
//! one documented limit, checked in one place per record type with a [`Rule`], by the
//! store and the ledger themselves, so the HTTP API, the CLI and the demo seed all meet
//! the same check. A string beyond its limit is refused whole, never cut, with an error
//! that names the field and the limit (HTTP 422 `invalid`). Request bodies are bounded
//! before they are read at all (HTTP 413; see [`crate::api`]), so a 10 MB name never gets
//! as far as this check over the API.
//!
//! # What is counted
//!
//! Characters (Unicode scalar values), what a person typing a name counts: `José` is 4.
//! The bytes stored are at most four times the limit. [`Form::Token`] fields are ASCII,
//! where the two counts agree.
//!
//! # The rules
//!
//! | rule | at most | form | fields |
//! |---|---|---|---|
//! | [`NAME`] | 100 | one line, trimmed | inmate `first_name`, `last_name`; contact `name`, `relationship`; deposit `depositor`; facility `name`; handset `name`, `location`; rate deck and plan `name`; visit station `name`, `housing_unit`; an inmate's `housing_unit` |
//! | [`REFERENCE`] | 200 | one line, trimmed | deposit, purchase and refund `reference` |
//! | [`BOOKING_NUMBER`] | 32 | one line, trimmed | an inmate's `booking_number` |
//! | [`NOTE`] | 1000 | lines, as written | purchase and refund `memo`; block `reason`; trusted network `description`; a rate-deck prefix's `description` |
//! | [`SETTING`] | 64 | one line, as written | facility `time_zone`, `cap_category`, `calling_hours_start`, `calling_hours_end`, `country_code` (checked before they are parsed, so no error quotes a long value; the parse refuses spaces) |
//! | [`SIP_USERNAME`] | 64 | token | handset `sip_username` |
//! | [`SECRET`] | 128 | one line, as written | handset `sip_password` (kept only as its digest hash) |
//!
//! Identifiers have their own, narrower rules where they are made: facility ids (1-32
//! letters, digits, `-`, `_`), rate deck and plan ids (1-64),
//! usernames (1-64 printable ASCII, [`crate::store::MAX_USERNAME_BYTES`]), passwords
//! (12 characters to 1024 bytes), PINs, and idempotency keys (1-200 printable ASCII,
//! [`crate::ledger::idempotency::MAX_KEY_CHARS`]). Phone numbers are kept normalized to
//! E.164 (at most 15 digits), never as typed.
//!
//! # Surrounding white space
//!
//! Names, references and booking numbers ("trimmed" above) are stored without the white
//! space around them ([`Rule::accept`]): `" Smith "` is kept as `Smith`, whether it is an
//! inmate's name, a contact's, a depositor's or a facility's, through the API, the CLI or
//! the ledger. People paste names with a stray space; nobody means one, and two records
//! that differ only by it would look the same everywhere they are shown. White space is
//! Unicode's (`char::is_whitespace`: spaces, tabs, no-break and ideographic spaces). The
//! limit counts what is kept. Notes keep their text as written; settings and secrets are
//! taken exactly (a setting's parser refuses spaces; a password is what it is). Where a
//! request is idempotent, the request as sent is what a replay is compared with: the
//! same key with `" Jane"` and then `"Jane"` is two different requests (409).
//!
//! # Characters refused
//!
//! One-line fields refuse every control character (C0, DEL and C1: `\n`, `\0`, ESC...):
//! a newline or an ANSI escape in a name is an attack on whatever shows it (a log line,
//! a CSV statement, the console, an announcement), and no real name holds one. Notes
//! may hold line breaks (`\n`, `\r`) and tabs and nothing else of the kind. Token fields
//! are printable ASCII without spaces.
//!
//! Both one-line fields and notes also refuse the invisible characters that change how
//! the text around them is shown, or hide text ([`invisible_kind`]):
//!
//! - line and paragraph separators, U+2028 and U+2029 (a line break in all but name);
//! - bidirectional controls: U+061C, U+200E, U+200F, the embeddings and overrides
//!   U+202A-U+202E and the isolates U+2066-U+2069 (`"Evil\u{202E}gnp.exe"` shows as
//!   `Evilexe.png`: the name would not read as what was stored);
//! - the byte-order mark U+FEFF, the deprecated format controls U+206A-U+206F, the
//!   interlinear annotation controls U+FFF9-U+FFFB and the tag characters
//!   U+E0000-U+E007F (text that is not shown at all).
//!
//! The zero-width joiner and non-joiner (U+200D, U+200C) stay allowed: names written in
//! Persian, in Indic scripts and with some emoji need them; so do combining marks and
//! variation selectors. A *required* field (a name, a booking number) must hold at least
//! one visible character ([`Rule::accept_required`]): neither white space nor a default
//! ignorable code point (Unicode's `Default_Ignorable_Code_Point`: zero-width spaces and
//! joiners, soft hyphens, variation selectors, Hangul fillers...), so 100 zero-width
//! spaces are not a first name.
//!
//! # Quoting what a client sent
//!
//! An error message that quotes a value a client sent quotes at most
//! [`QUOTE_MAX_CHARS`] characters of it, then `…` ([`quote`]); the API bounds every error
//! message it sends the same way ([`bound_message`], applied by `api::error`), so a 60 KB
//! id in a path or a body comes back as 64 characters and an ellipsis.

use std::fmt;

/// The shape a string must have besides its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One line: no control characters at all, no invisible formatting (module doc).
    Line,
    /// Free text: line breaks (`\n`, `\r`) and tabs allowed, other control characters
    /// and invisible formatting not.
    Note,
    /// Printable ASCII without spaces (`!` to `~`).
    Token,
}

/// A limit on one kind of stored text: at most `max_chars` characters of a [`Form`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub max_chars: usize,
    pub form: Form,
}

/// Names of people and things.
pub const NAME: Rule = Rule::new(100, Form::Line);
/// External references: a payment processor's id, a receipt or money order number, an
/// order id.
pub const REFERENCE: Rule = Rule::new(200, Form::Line);
/// Free text an operator writes.
pub const NOTE: Rule = Rule::new(1000, Form::Note);
/// Short settings that are then parsed (a time zone, `07:00`, a phone number as typed).
pub const SETTING: Rule = Rule::new(64, Form::Line);
/// A handset's SIP user name.
pub const SIP_USERNAME: Rule = Rule::new(64, Form::Token);
/// A secret that is hashed before it is kept.
pub const SECRET: Rule = Rule::new(128, Form::Line);
/// An inmate's booking number.
pub const BOOKING_NUMBER: Rule = Rule::new(32, Form::Line);

/// What was wrong with a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    TooLong {
        max_chars: usize,
    },
    /// A required field with no visible character.
    Empty,
    ControlCharacter {
        position: usize,
    },
    /// An invisible character that reorders, breaks or hides text ([`invisible_kind`]).
    Invisible {
        position: usize,
        ch: char,
        kind: &'static str,
    },
    NotToken {
        position: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TooLong { max_chars } => {
                write!(f, "must be at most {max_chars} characters")
            }
            Problem::Empty => f.write_str("must not be empty (at least one visible character)"),
            Problem::Invisible { position, ch, kind } => write!(
                f,
                "must not contain {kind} (U+{:04X} at character {position})",
                u32::from(*ch)
            ),
            Problem::ControlCharacter { position } => write!(
                f,
                "must not contain control characters (found one at character {position})"
            ),
            Problem::NotToken { position } => write!(
                f,
                "must be printable ASCII without spaces (character {position} is not)"
            ),
        }
    }
}

/// A string refused by its [`Rule`], naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TextError {
    pub field: String,
    pub problem: Problem,
}

impl Rule {
    pub const fn new(max_chars: usize, form: Form) -> Rule {
        Rule { max_chars, form }
    }

    /// Checks `value` (which may be empty) against the rule; the error names `field`.
    pub fn check(self, field: &str, value: &str) -> Result<(), TextError> {
        let refuse = |problem| {
            Err(TextError {
                field: field.to_string(),
                problem,
            })
        };
        // Cheap on a huge string: stops at the first character past the limit.
        if value.chars().nth(self.max_chars).is_some() {
            return refuse(Problem::TooLong {
                max_chars: self.max_chars,
            });
        }
        for (i, c) in value.chars().enumerate() {
            let position = i + 1;
            if self.form == Form::Token {
                if !c.is_ascii_graphic() {
                    return refuse(Problem::NotToken { position });
                }
                continue;
            }
            let line_break = matches!(c, '\n' | '\r' | '\t');
            if c.is_control() && !(self.form == Form::Note && line_break) {
                return refuse(Problem::ControlCharacter { position });
            }
            if let Some(kind) = invisible_kind(c) {
                return refuse(Problem::Invisible {
                    position,
                    ch: c,
                    kind,
                });
            }
        }
        Ok(())
    }

    /// [`Rule::check`], and `value` must hold at least one visible character.
    pub fn check_required(self, field: &str, value: &str) -> Result<(), TextError> {
        self.check(field, value)?;
        if !value.chars().any(is_visible) {
            return Err(TextError {
                field: field.to_string(),
                problem: Problem::Empty,
            });
        }
        Ok(())
    }

    /// `value` without the white space around it, checked: what a name, a reference or
    /// a booking number is stored as (module doc, "Surrounding white space").
    pub fn accept<'v>(self, field: &str, value: &'v str) -> Result<&'v str, TextError> {
        let kept = value.trim();
        self.check(field, kept)?;
        Ok(kept)
    }

    /// [`Rule::accept`] for a field that must hold at least one visible character.
    pub fn accept_required<'v>(self, field: &str, value: &'v str) -> Result<&'v str, TextError> {
        let kept = value.trim();
        self.check_required(field, kept)?;
        Ok(kept)
    }
}

/// What kind of invisible formatting `c` is, if one-line fields and notes refuse it
/// (module doc, "Characters refused").
pub fn invisible_kind(c: char) -> Option<&'static str> {
    match c {
        '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator"),
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Some("a bidirectional control"),
        '\u{FEFF}' => Some("a byte-order mark"),
        '\u{206A}'..='\u{206F}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}' => {
            Some("an invisible formatting character")
        }
        _ => None,
    }
}

/// Whether `c` shows as something: not white space, not a control, not a default
/// ignorable code point (Unicode `Default_Ignorable_Code_Point`, DerivedCoreProperties).
pub fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !is_default_ignorable(c)
}

/// Unicode's `Default_Ignorable_Code_Point` (DerivedCoreProperties.txt, stable since 6.x):
/// code points a renderer shows as nothing unless it supports them specially.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// The most characters of a client's value an error message quotes ([`quote`]).
pub const QUOTE_MAX_CHARS: usize = 64;

/// The longest run of non-space characters an API error message keeps
/// ([`bound_message`]): a value quoted with [`quote`], with its quotes, `…` and a comma.
pub const WORD_MAX_CHARS: usize = QUOTE_MAX_CHARS + 4;

/// The most characters of an error message the API sends ([`bound_message`]).
pub const MESSAGE_MAX_CHARS: usize = 1000;

/// A client's value as an error message quotes it: at most [`QUOTE_MAX_CHARS`]
/// characters, then `…` if there was more.
pub fn quote(value: &str) -> Quoted<'_> {
    Quoted(value)
}

/// See [`quote`].
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTE_MAX_CHARS) {
            Some((cut, _)) => write!(f, "{}…", &self.0[..cut]),
            None => f.write_str(self.0),
        }
    }
}

/// An error message as the API sends it: every run of non-space characters longer than
/// [`WORD_MAX_CHARS`] between spaces (a value quoted by code that did not use [`quote`]: a serde or
/// axum rejection, a path) cut to [`QUOTE_MAX_CHARS`] and `…`, and the whole message to
/// at most [`MESSAGE_MAX_CHARS`] characters. Messages within both limits pass unchanged.
pub fn bound_message(message: &str) -> std::borrow::Cow<'_, str> {
    let long_word = message
        .split(' ')
        .any(|w| w.chars().nth(WORD_MAX_CHARS).is_some());
    let too_long = message.chars().nth(MESSAGE_MAX_CHARS).is_some();
    if !long_word && !too_long {
        return std::borrow::Cow::Borrowed(message);
    }
    let words: Vec<String> = message
        .split(' ')
        .map(|w| match w.chars().nth(WORD_MAX_CHARS) {
            Some(_) => quote(w).to_string(),
            None => w.to_owned(),
        })
        .collect();
    let mut out = words.join(" ");
    if let Some((cut, _)) = out.char_indices().nth(MESSAGE_MAX_CHARS) {
        out.truncate(cut);
        out.push('…');
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_characters_and_name_the_field() {
        let at_limit = "é".repeat(100);
        assert_eq!(NAME.check("first_name", &at_limit), Ok(()));
        let e = NAME
            .check("first_name", &format!("{at_limit}x"))
            .unwrap_err();
        assert_eq!(e.to_string(), "first_name: must be at most 100 characters");
        let huge = "x".repeat(10 * 1024 * 1024);
        assert!(matches!(
            NAME.check("first_name", &huge).unwrap_err().problem,
            Problem::TooLong { max_chars: 100 }
        ));
    }

    #[test]
    fn one_line_fields_refuse_control_characters_notes_allow_line_breaks() {
        for bad in [
            "a\nb",
            "a\rb",
            "a\tb",
            "\u{1b}[31mred",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            let e = NAME.check("name", bad).unwrap_err();
            assert!(
                matches!(e.problem, Problem::ControlCharacter { .. }),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            NOTE.check("memo", "line one\nline two\r\n\tindented"),
            Ok(())
        );
        assert!(NOTE.check("memo", "bell\u{7}").is_err());
        assert_eq!(NAME.check("name", "Zoë O'Brien-Łukasz 李"), Ok(()));
    }

    #[test]
    fn tokens_are_printable_ascii_and_required_means_not_blank() {
        assert_eq!(SIP_USERNAME.check("sip_username", "handset-1"), Ok(()));
        for bad in ["hand set", "handsét", "tab\t"] {
            assert!(SIP_USERNAME.check("sip_username", bad).is_err(), "{bad:?}");
        }
        assert_eq!(NAME.check("depositor", ""), Ok(()));
        let e = NAME.check_required("name", "   ").unwrap_err();
        assert_eq!(
            e.to_string(),
            "name: must not be empty (at least one visible character)"
        );
    }

    /// Issue 9 review (L4): separators, bidirectional controls and other invisible
    /// formatting are refused in one-line fields and notes; a required field needs a
    /// visible character; the joiners real names need stay allowed.
    #[test]
    fn invisible_formatting_is_refused_and_a_required_field_must_show_something() {
        for (bad, at, kind) in [
            ("Jane\u{2028}Doe", 5, "a line or paragraph separator"),
            ("Jane\u{2029}", 5, "a line or paragraph separator"),
            ("Evil\u{202E}gnp.exe", 5, "a bidirectional control"),
            ("\u{202A}x", 1, "a bidirectional control"),
            ("x\u{2066}y\u{2069}", 2, "a bidirectional control"),
            ("x\u{200E}", 2, "a bidirectional control"),
            ("x\u{200F}", 2, "a bidirectional control"),
            ("x\u{061C}", 2, "a bidirectional control"),
            ("\u{FEFF}Jane", 1, "a byte-order mark"),
            ("Jane\u{E0041}", 5, "an invisible formatting character"),
            ("a\u{FFF9}b", 2, "an invisible formatting character"),
        ] {
            for rule in [NAME, NOTE, REFERENCE, SECRET] {
                let e = rule.check("f", bad).unwrap_err();
                assert_eq!(
                    e.problem,
                    Problem::Invisible {
                        position: at,
                        ch: bad.chars().nth(at - 1).unwrap(),
                        kind
                    },
                    "{bad:?}"
                );
            }
        }
        let e = NAME.check("first_name", "Evil\u{202E}gnp.exe").unwrap_err();
        assert_eq!(
            e.to_string(),
            "first_name: must not contain a bidirectional control (U+202E at character 5)"
        );
        // 100 zero-width spaces, fillers and joiners alone are not a name.
        for blank in [
            "\u{200B}".repeat(100),
            "\u{200D}\u{200C}".into(),
            " \u{00A0}\u{3000}\u{2060}\u{00AD}\u{3164}\u{FE0F} ".into(),
        ] {
            let e = NAME.check_required("first_name", &blank).unwrap_err();
            assert_eq!(e.problem, Problem::Empty, "{blank:?}");
        }
        // Real names: Persian with a ZWNJ, Devanagari with a ZWJ, an emoji sequence,
        // combining accents, a zero-width space between Thai words.
        for good in [
            "می\u{200C}خواهم",
            "क्\u{200D}ष",
            "👩\u{200D}👩\u{200D}👧",
            "Jose\u{0301}",
            "สมชาย\u{200B}ใจดี",
        ] {
            assert_eq!(NAME.check_required("name", good), Ok(()), "{good:?}");
        }
        // Tokens stay ASCII.
        assert!(SIP_USERNAME.check("sip_username", "a\u{200B}").is_err());
    }

    /// Review: names, references and booking numbers are kept without surrounding white
    /// space, whichever field; the limit counts what is kept.
    #[test]
    fn accepted_text_is_trimmed_then_checked() {
        assert_eq!(NAME.accept("depositor", "  Jane Doe\t"), Ok("Jane Doe"));
        assert_eq!(NAME.accept("depositor", ""), Ok(""));
        assert_eq!(NAME.accept("depositor", "\u{3000}Jane\u{00A0}"), Ok("Jane"));
        assert_eq!(NAME.accept_required("first_name", " Zoë "), Ok("Zoë"));
        let padded = format!("  {}  ", "x".repeat(100));
        assert_eq!(NAME.accept("name", &padded).map(str::len), Ok(100));
        assert_eq!(
            NAME.accept_required("name", "  ").unwrap_err().problem,
            Problem::Empty
        );
        // Inside the value, a line break is still refused.
        assert!(NAME.accept("name", " a\nb ").is_err());
    }

    /// Review (L3): what an error message quotes of a client's value is bounded.
    #[test]
    fn quoted_values_and_messages_are_bounded() {
        assert_eq!(quote("acc_1").to_string(), "acc_1");
        let at = "x".repeat(QUOTE_MAX_CHARS);
        assert_eq!(quote(&at).to_string(), at);
        let long = "é".repeat(60 * 1024);
        let q = quote(&long).to_string();
        assert_eq!(q.chars().count(), QUOTE_MAX_CHARS + 1);
        assert!(q.ends_with('…'));

        let fine = "account acc_1 not found";
        assert!(matches!(bound_message(fine), std::borrow::Cow::Borrowed(_)));
        let long_format = format!("format '{}' is not json or csv", "a".repeat(8192));
        let m = bound_message(&long_format);
        assert_eq!(
            m,
            format!(
                "format '{}… is not json or csv",
                "a".repeat(QUOTE_MAX_CHARS - 1)
            )
        );
        let spaced = "a ".repeat(5000);
        let m = bound_message(&spaced);
        assert_eq!(m.chars().count(), MESSAGE_MAX_CHARS + 1);
        assert!(m.ends_with('…'));
    }
}
