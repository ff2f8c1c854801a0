//! The CSV reading shared by the rate-deck and rate-plan parsers: a required header row,
//! RFC 4180 quoting within a line (`"a, b"`, `""` for a quote), blank lines skipped, and
//! the 1-based file line of every row for error messages. Quoted fields spanning lines are
//! not supported (no deck or plan needs them), which keeps every row on exactly one line,
//! so line numbers are always right.
//!
//! # White space
//!
//! Spaces and tabs around an unquoted field are the file's layout, not the value: a
//! hand-aligned `local, audio, 0.05, 60` reads as `local`, `audio`, `0.05`, `60`. Only
//! ASCII spaces and tabs are layout; any other white space (a no-break space, a line
//! separator) stays in the field, where the value's own rule refuses it. A quoted field is
//! taken verbatim, spaces included (`" 0.05"` is the value ` 0.05`, which the amount rule
//! refuses). Each value is then held to its own written form by the parser that reads
//! it: an amount to [`crate::money::Money::parse_amount`], a whole number of seconds to
//! digits without sign or leading zeros (`+60`, `060`, `6e1` are refused). A line may end
//! in CRLF.

use std::io::Read;

/// A problem with the CSV file itself (as opposed to a value in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvProblem {
    /// Unreadable input (I/O, bad UTF-8, broken quoting) at `line` (0: not line-related).
    Read { line: u64, message: String },
    /// No header row at all.
    MissingHeader,
    /// The first row is not the expected header; `found` is what it was.
    BadHeader { line: u64, found: String },
}

/// Calls `row(line, fields)` for every row after the header, which must be exactly
/// `header` (case-insensitive, trimmed, a UTF-8 byte-order mark tolerated).
pub(super) fn for_each_row<R: Read, E: From<CsvProblem>>(
    mut reader: R,
    header: &[&str],
    mut row: impl FnMut(u64, &[String]) -> Result<(), E>,
) -> Result<(), E> {
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|e| CsvProblem::Read {
            line: 0,
            message: e.to_string(),
        })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut fields = Vec::new();
    let mut seen_header = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim_matches(LAYOUT).is_empty() {
            continue;
        }
        split_line(raw, &mut fields).map_err(|message| CsvProblem::Read { line, message })?;
        if seen_header {
            row(line, &fields)?;
        } else {
            check_header(&fields, header, line)?;
            seen_header = true;
        }
    }
    if seen_header {
        Ok(())
    } else {
        Err(CsvProblem::MissingHeader.into())
    }
}

fn check_header(fields: &[String], header: &[&str], line: u64) -> Result<(), CsvProblem> {
    let matches = fields.len() == header.len()
        && fields
            .iter()
            .zip(header)
            .all(|(got, want)| got.eq_ignore_ascii_case(want));
    if matches {
        Ok(())
    } else {
        Err(CsvProblem::BadHeader {
            line,
            found: fields.join(","),
        })
    }
}

/// The white space around a field that is layout (module doc).
const LAYOUT: [char; 2] = [' ', '\t'];

/// Splits one line into fields, without the layout around unquoted ones.
fn split_line(line: &str, out: &mut Vec<String>) -> Result<(), String> {
    out.clear();
    let mut rest = line;
    loop {
        let (field, after) = next_field(rest)?;
        out.push(field);
        match after {
            Some(r) => rest = r,
            None => return Ok(()),
        }
    }
}

/// One field and what follows its comma (`None` at the end of the line).
fn next_field(s: &str) -> Result<(String, Option<&str>), String> {
    let s = s.trim_start_matches(LAYOUT);
    let Some(quoted) = s.strip_prefix('"') else {
        return Ok(match s.split_once(',') {
            Some((field, rest)) => (field.trim_matches(LAYOUT).to_owned(), Some(rest)),
            None => (s.trim_matches(LAYOUT).to_owned(), None),
        });
    };
    let (field, rest) = unquote(quoted)?;
    let rest = rest.trim_start_matches(LAYOUT);
    match rest.strip_prefix(',') {
        Some(after) => Ok((field, Some(after))),
        None if rest.is_empty() => Ok((field, None)),
        None => Err("unexpected text after a closing quote".to_owned()),
    }
}

/// The content of a quoted field (after its opening quote) and the text after it.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut field = String::new();
    let mut rest = s;
    loop {
        let Some(q) = rest.find('"') else {
            return Err("unterminated quoted field".to_owned());
        };
        field.push_str(&rest[..q]);
        rest = &rest[q + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                field.push('"');
                rest = after;
            }
            None => return Ok((field, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Result<Vec<String>, String> {
        let mut v = Vec::new();
        split_line(s, &mut v).map(|()| v)
    }

    #[test]
    fn quoting() {
        assert_eq!(split("a, b ,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split("1,\"x, \"\"y\"\"\" ,").unwrap(),
            ["1", "x, \"y\"", ""]
        );
        assert_eq!(split("").unwrap(), [""]);
        assert!(split("1,\"open").is_err());
        assert!(split("1,\"a\"b").is_err());
    }

    #[test]
    fn only_spaces_and_tabs_around_unquoted_fields_are_layout() {
        assert_eq!(split(" a\t,\tb ").unwrap(), ["a", "b"]);
        // Quoted: verbatim.
        assert_eq!(split("\" 0.05\" , x").unwrap(), [" 0.05", "x"]);
        // Other white space is part of the value, for its own rule to judge.
        assert_eq!(
            split("0.05\u{a0},\u{2028}60").unwrap(),
            ["0.05\u{a0}", "\u{2028}60"]
        );
    }

    #[test]
    fn crlf_lines_and_blank_lines() {
        let mut rows = Vec::new();
        for_each_row::<_, CsvProblem>(
            "h1,h2\r\n\r\n \t \r\na,b\r\n".as_bytes(),
            &["h1", "h2"],
            |line, f| {
                rows.push((line, f.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(rows, [(4, vec!["a".to_owned(), "b".to_owned()])]);
    }
}
