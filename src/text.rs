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
//! | [`NAME`] | 100 | one line | inmate `first_name`, `last_name`; contact `name`, `relationship`; deposit `depositor`; facility `name`; handset `name`, `location`; rate deck and plan `name` |
//! | [`REFERENCE`] | 200 | one line | deposit, purchase and refund `reference` |
//! | [`NOTE`] | 1000 | lines | purchase and refund `memo`; block `reason`; trusted network `description`; a rate-deck prefix's `description` |
//! | [`SETTING`] | 64 | one line | facility `time_zone`, `cap_category`, `calling_hours_start`, `calling_hours_end`, `country_code` (checked before they are parsed, so no error quotes a long value) |
//! | [`SIP_USERNAME`] | 64 | token | handset `sip_username` |
//! | [`SECRET`] | 128 | one line | handset `sip_password` (kept only as its digest hash) |
//! | [`BOOKING_NUMBER`] | 32 | one line | an inmate's `booking_number` |
//!
//! Identifiers have their own, narrower rules where they are made: facility ids (1-32
//! letters, digits, `-`, `_`), rate deck and plan ids (1-64),
//! usernames (1-64 printable ASCII, [`crate::store::MAX_USERNAME_BYTES`]), passwords
//! (12 characters to 1024 bytes), PINs, and idempotency keys (1-200 printable ASCII,
//! [`crate::ledger::idempotency::MAX_KEY_CHARS`]). Phone numbers are kept normalized to
//! E.164 (at most 15 digits), never as typed.
//!
//! # Control characters
//!
//! One-line fields refuse every control character (C0, DEL and C1: `\n`, `\0`, ESC...):
//! a newline or an ANSI escape in a name is an attack on whatever shows it (a log line,
//! a CSV statement, the console, an announcement), and no real name holds one. Notes
//! may hold line breaks and tabs and nothing else of the kind. Token fields are printable
//! ASCII without spaces.

use std::fmt;

/// The shape a string must have besides its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One line: no control characters at all.
    Line,
    /// Free text: line breaks (`\n`, `\r`) and tabs allowed, other control characters not.
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
    TooLong { max_chars: usize },
    Empty,
    ControlCharacter { position: usize },
    NotToken { position: usize },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TooLong { max_chars } => {
                write!(f, "must be at most {max_chars} characters")
            }
            Problem::Empty => f.write_str("must not be empty"),
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
            let allowed = match self.form {
                Form::Line => !c.is_control(),
                Form::Note => !c.is_control() || matches!(c, '\n' | '\r' | '\t'),
                Form::Token => c.is_ascii_graphic(),
            };
            if !allowed {
                return refuse(match self.form {
                    Form::Token => Problem::NotToken { position },
                    _ => Problem::ControlCharacter { position },
                });
            }
        }
        Ok(())
    }

    /// [`Rule::check`], and `value` must hold more than white space.
    pub fn check_required(self, field: &str, value: &str) -> Result<(), TextError> {
        self.check(field, value)?;
        if value.trim().is_empty() {
            return Err(TextError {
                field: field.to_string(),
                problem: Problem::Empty,
            });
        }
        Ok(())
    }
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
        assert_eq!(e.to_string(), "name: must not be empty");
    }
}
