//! The CSV reading shared by the rate-deck and rate-plan parsers: a required header row,
//! trimmed fields, and the 1-based line number of every row for error messages.

use std::io::Read;

/// A problem with the CSV file itself (as opposed to a value in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvProblem {
    /// Unreadable input (I/O, bad UTF-8, broken quoting) at `line`.
    Read { line: u64, message: String },
    /// No header row at all.
    MissingHeader,
    /// The first row is not the expected header; `found` is what it was.
    BadHeader { found: String },
}

/// Calls `row(line, record)` for every row after the header, which must be exactly
/// `header` (case-insensitive, trimmed, a UTF-8 byte-order mark tolerated).
pub fn for_each_row<R: Read, E: From<CsvProblem>>(
    reader: R,
    header: &[&str],
    mut row: impl FnMut(u64, &csv::StringRecord) -> Result<(), E>,
) -> Result<(), E> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut record = csv::StringRecord::new();
    let mut seen_header = false;
    while read_record(&mut csv, &mut record)? {
        if seen_header {
            row(record.position().map_or(0, |p| p.line()), &record)?;
        } else {
            check_header(&record, header)?;
            seen_header = true;
        }
    }
    if seen_header {
        Ok(())
    } else {
        Err(CsvProblem::MissingHeader.into())
    }
}

fn read_record<R: Read>(
    csv: &mut csv::Reader<R>,
    record: &mut csv::StringRecord,
) -> Result<bool, CsvProblem> {
    csv.read_record(record).map_err(|e| CsvProblem::Read {
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    })
}

fn check_header(record: &csv::StringRecord, header: &[&str]) -> Result<(), CsvProblem> {
    let matches = record.len() == header.len()
        && record.iter().zip(header).all(|(got, want)| {
            got.trim_start_matches('\u{feff}')
                .trim()
                .eq_ignore_ascii_case(want)
        });
    if matches {
        Ok(())
    } else {
        Err(CsvProblem::BadHeader {
            found: record.iter().collect::<Vec<_>>().join(","),
        })
    }
}
