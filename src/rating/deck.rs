//! The rate deck: destination prefixes → call class, matched by longest prefix.
//!
//! Stored as a digit trie in one flat vector, built once. It is built with plain
//! `[u32; 10]` child arrays, then laid out breadth-first into 12-byte nodes (a 10-bit child
//! mask, the index of the first child, the entry ending there): siblings are contiguous and
//! the child for a digit is found with one popcount. A lookup walks at most 15 nodes and
//! allocates nothing. A sorted array with a binary search per candidate length was the
//! alternative: as compact, but up to 15 searches of ~17 string comparisons each.
//! Memory: the synthetic 100k-prefix bench deck (1–8 digits) has ~200k nodes, 2.4 MB
//! (plus its entries' strings); the uncompacted layout needed 44 bytes a node.

use super::csvrows::{for_each_row, CsvProblem};
use super::CallClass;
use crate::text::quote;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// Longest prefix accepted (an E.164 number has at most 15 digits).
pub const MAX_PREFIX_DIGITS: usize = 15;
const NO_ENTRY: u32 = u32::MAX;

/// One row of a deck, as stored by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeckEntry {
    pub prefix: String,
    pub class: CallClass,
    pub description: String,
}

/// The result of a lookup, borrowed from the deck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeckMatch<'a> {
    pub prefix: &'a str,
    pub class: CallClass,
    pub description: &'a str,
}

/// Why a deck was refused. `line` is the 1-based line of the CSV file (the header is line 1),
/// or for [`RateDeck::from_entries`] the 1-based position of the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeckError {
    #[error("the rate deck is empty: a header row `prefix,class,description` is required")]
    MissingHeader,
    #[error("line {line}: expected header `prefix,class,description`, found `{}`", quote(.found))]
    BadHeader { line: u64, found: String },
    #[error("line {line}: {message}")]
    Csv { line: u64, message: String },
    #[error("line {line}: expected 3 fields (prefix,class,description), found {found}")]
    FieldCount { line: u64, found: usize },
    #[error("line {line}: prefix `{}` must be 1 to {MAX_PREFIX_DIGITS} digits", quote(.prefix))]
    BadPrefix { line: u64, prefix: String },
    #[error("line {line}: class `{}` is not local, domestic or international", quote(.class))]
    BadClass { line: u64, class: String },
    #[error("line {line}: prefix `{prefix}` already appears on line {first_line}")]
    DuplicatePrefix {
        line: u64,
        prefix: String,
        first_line: u64,
    },
    #[error("the rate deck is too large for a 32-bit node index")]
    TooLarge,
}

impl From<CsvProblem> for DeckError {
    fn from(p: CsvProblem) -> DeckError {
        match p {
            CsvProblem::Read { line, message } => DeckError::Csv { line, message },
            CsvProblem::MissingHeader => DeckError::MissingHeader,
            CsvProblem::BadHeader { line, found } => DeckError::BadHeader { line, found },
        }
    }
}

/// A built rate deck. Cheap to query from many threads (`&self` only).
#[derive(Debug, Clone, Default)]
pub struct RateDeck {
    /// Trie nodes in breadth-first order; node 0 is the root.
    nodes: Vec<Node>,
    entries: Vec<DeckEntry>,
}

/// One node of the compact trie (12 bytes): the children of a node are stored
/// contiguously from `first_child`, one per set bit of `mask` in digit order, so the child
/// for digit `d` is `first_child + popcount(mask & ((1 << d) - 1))`.
#[derive(Debug, Clone, Copy)]
struct Node {
    first_child: u32,
    /// Bit `d` set: there is a child for digit `d`.
    mask: u16,
    /// Index into `entries` of the prefix ending at this node, or `NO_ENTRY`.
    entry: u32,
}

impl RateDeck {
    /// Parses a CSV deck: header `prefix,class,description` (case-insensitive), then one
    /// row per prefix. Fields are trimmed; a description may be quoted. Prefixes are digits
    /// only; a duplicate prefix is an error naming both lines.
    pub fn from_csv(reader: impl Read) -> Result<RateDeck, DeckError> {
        let mut builder = Builder::new();
        for_each_row(
            reader,
            &["prefix", "class", "description"],
            |line, record| builder.insert(entry_from_record(record, line)?, line),
        )?;
        Ok(builder.build())
    }

    /// Builds a deck from stored entries (the API keeps decks in the database). Errors name
    /// the 1-based position of the offending entry as `line`.
    pub fn from_entries(
        entries: impl IntoIterator<Item = DeckEntry>,
    ) -> Result<RateDeck, DeckError> {
        let mut builder = Builder::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let line = i as u64 + 1;
            check_prefix(&entry.prefix, line)?;
            builder.insert(entry, line)?;
        }
        Ok(builder.build())
    }

    /// Longest prefix of `digits` present in the deck. `digits` are E.164 digits without
    /// `+` ([`super::E164::digits`]); a non-digit stops the walk. Allocation-free.
    #[inline]
    pub fn lookup(&self, digits: &str) -> Option<DeckMatch<'_>> {
        let mut node = self.nodes.first()?;
        let mut best = NO_ENTRY;
        for b in digits.bytes() {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            let bit = 1u16 << d;
            if node.mask & bit == 0 {
                break;
            }
            let below = (node.mask & (bit - 1)).count_ones() as usize;
            match self.nodes.get(node.first_child as usize + below) {
                Some(next) => node = next,
                None => break,
            }
            if node.entry != NO_ENTRY {
                best = node.entry;
            }
        }
        self.entries.get(best as usize).map(DeckEntry::as_match)
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Trie nodes in use (12 bytes each), for memory diagnostics.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The entries in insertion order (to store or export the deck).
    pub fn entries(&self) -> &[DeckEntry] {
        &self.entries
    }
}

/// The trie while it is built: plain `[u32; 10]` children, easy to insert into.
struct Builder {
    /// `children[d]`: index of the child for digit `d`, 0 if none (the root is never a child).
    children: Vec<[u32; 10]>,
    /// Per node, the index of the entry ending there, or `NO_ENTRY`.
    entry: Vec<u32>,
    entries: Vec<DeckEntry>,
    /// Line (or position) each entry came from, for duplicate reports.
    lines: Vec<u64>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            children: vec![[0; 10]],
            entry: vec![NO_ENTRY],
            entries: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Inserts an entry whose prefix is already checked to be digits only.
    fn insert(&mut self, entry: DeckEntry, line: u64) -> Result<(), DeckError> {
        let mut node = 0usize;
        for b in entry.prefix.bytes() {
            node = self.child_or_new(node, usize::from(b.wrapping_sub(b'0')) % 10)?;
        }
        let existing = self.entry[node];
        if existing != NO_ENTRY {
            return Err(DeckError::DuplicatePrefix {
                line,
                prefix: entry.prefix,
                first_line: self.lines.get(existing as usize).copied().unwrap_or(0),
            });
        }
        self.entry[node] = u32::try_from(self.entries.len()).map_err(|_| DeckError::TooLarge)?;
        self.entries.push(entry);
        self.lines.push(line);
        Ok(())
    }

    fn child_or_new(&mut self, node: usize, digit: usize) -> Result<usize, DeckError> {
        let existing = self.children[node][digit];
        if existing != 0 {
            return Ok(existing as usize);
        }
        let index = u32::try_from(self.children.len()).map_err(|_| DeckError::TooLarge)?;
        self.children.push([0; 10]);
        self.entry.push(NO_ENTRY);
        self.children[node][digit] = index;
        Ok(index as usize)
    }

    /// Lays the trie out breadth-first in compact nodes: a node's position in the queue is
    /// its index, and its children are queued together, so they are contiguous.
    fn build(self) -> RateDeck {
        let mut queue: Vec<usize> = Vec::with_capacity(self.children.len());
        queue.push(0);
        let mut nodes = Vec::with_capacity(self.children.len());
        let mut head = 0;
        while let Some(&old) = queue.get(head) {
            let first_child = queue.len() as u32; // fits: at most as many nodes as `children`
            let mut mask = 0u16;
            for (d, &child) in self.children[old].iter().enumerate() {
                if child != 0 {
                    mask |= 1 << d;
                    queue.push(child as usize);
                }
            }
            nodes.push(Node {
                first_child,
                mask,
                entry: self.entry[old],
            });
            head += 1;
        }
        RateDeck {
            nodes,
            entries: self.entries,
        }
    }
}

impl DeckEntry {
    #[inline]
    fn as_match(&self) -> DeckMatch<'_> {
        DeckMatch {
            prefix: &self.prefix,
            class: self.class,
            description: &self.description,
        }
    }
}

fn entry_from_record(record: &[String], line: u64) -> Result<DeckEntry, DeckError> {
    if record.len() != 3 {
        return Err(DeckError::FieldCount {
            line,
            found: record.len(),
        });
    }
    let prefix = record[0].as_str();
    check_prefix(prefix, line)?;
    let class = record[1].parse().map_err(|_| DeckError::BadClass {
        line,
        class: record[1].to_owned(),
    })?;
    Ok(DeckEntry {
        prefix: prefix.to_owned(),
        class,
        description: record[2].to_owned(),
    })
}

fn check_prefix(prefix: &str, line: u64) -> Result<(), DeckError> {
    let ok = (1..=MAX_PREFIX_DIGITS).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(DeckError::BadPrefix {
            line,
            prefix: prefix.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NESTED: &str = "prefix,class,description\n\
        1,domestic,NANP\n\
        1555,local,Springfield\n\
        15551,international,\"Weird, but nested\"\n\
        44,international,United Kingdom\n";

    fn deck(csv: &str) -> Result<RateDeck, DeckError> {
        RateDeck::from_csv(csv.as_bytes())
    }

    #[test]
    fn longest_prefix_wins() {
        let d = deck(NESTED).unwrap();
        assert_eq!(d.len(), 4);
        let m = d.lookup("15551234567").unwrap();
        assert_eq!((m.prefix, m.class), ("15551", CallClass::International));
        assert_eq!(m.description, "Weird, but nested");
        assert_eq!(d.lookup("15559234567").unwrap().prefix, "1555");
        assert_eq!(d.lookup("12125551234").unwrap().prefix, "1");
        assert_eq!(d.lookup("1555").unwrap().prefix, "1555");
        assert_eq!(
            d.lookup("442079460000").unwrap().class,
            CallClass::International
        );
        assert!(d.lookup("33123456789").is_none());
        assert!(d.lookup("").is_none());
        assert!(d.lookup("4").is_none(), "inner node without entry");
    }

    #[test]
    fn checked_in_fixture_parses() {
        let d = RateDeck::from_csv(&include_bytes!("../../tests/fixtures/ratedeck_small.csv")[..])
            .unwrap();
        assert!(d.len() >= 10);
        assert_eq!(d.lookup("15551234567").unwrap().class, CallClass::Local);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let h = "prefix,class,description\n";
        assert_eq!(deck("").err(), Some(DeckError::MissingHeader));
        assert!(matches!(
            deck("pfx,class,desc\n"),
            Err(DeckError::BadHeader { .. })
        ));
        assert_eq!(
            deck(&format!("{h}1,local,a\n12x,local,b\n")).err(),
            Some(DeckError::BadPrefix {
                line: 3,
                prefix: "12x".into()
            })
        );
        assert_eq!(
            deck(&format!("{h}1,local,a\n\n2,galactic,b\n")).err(),
            Some(DeckError::BadClass {
                line: 4,
                class: "galactic".into()
            })
        );
        assert_eq!(
            deck(&format!("{h}1,local,a\n2,local\n")).err(),
            Some(DeckError::FieldCount { line: 3, found: 2 })
        );
        assert_eq!(
            deck(&format!("{h}1,local,a\n2,local,b\n1,domestic,c\n")).err(),
            Some(DeckError::DuplicatePrefix {
                line: 4,
                prefix: "1".into(),
                first_line: 2
            })
        );
        assert!(matches!(
            deck(&format!("{h}+1,local,a\n")),
            Err(DeckError::BadPrefix { line: 2, .. })
        ));
        assert!(matches!(
            deck(&format!("{h},local,a\n")),
            Err(DeckError::BadPrefix { line: 2, .. })
        ));
        let long = "1".repeat(16);
        assert!(matches!(
            deck(&format!("{h}{long},local,a\n")),
            Err(DeckError::BadPrefix { .. })
        ));
        assert!(deck(h).unwrap().is_empty());
        assert!(deck("Prefix , CLASS,Description\n1 , Local , x\n").is_ok());
    }

    #[test]
    fn from_entries_round_trips_and_rejects_duplicates() {
        let d = deck(NESTED).unwrap();
        let again = RateDeck::from_entries(d.entries().to_vec()).unwrap();
        assert_eq!(again.lookup("15551999").unwrap().prefix, "15551");
        let dup = vec![d.entries()[0].clone(), d.entries()[0].clone()];
        assert!(matches!(
            RateDeck::from_entries(dup),
            Err(DeckError::DuplicatePrefix {
                line: 2,
                first_line: 1,
                ..
            })
        ));
    }

    fn naive<'a>(entries: &'a [DeckEntry], digits: &str) -> Option<&'a str> {
        entries
            .iter()
            .filter(|e| digits.starts_with(e.prefix.as_str()))
            .max_by_key(|e| e.prefix.len())
            .map(|e| e.prefix.as_str())
    }

    proptest! {
        #[test]
        fn lookup_equals_naive_scan(
            prefixes in proptest::collection::btree_set("[0-9]{1,6}", 1..200),
            numbers in proptest::collection::vec("[0-9]{0,15}", 1..50),
        ) {
            let entries: Vec<DeckEntry> = prefixes
                .into_iter()
                .map(|p| DeckEntry { prefix: p, class: CallClass::Domestic, description: String::new() })
                .collect();
            let d = RateDeck::from_entries(entries.clone()).unwrap();
            let extended = entries.iter().map(|e| format!("{}{}", e.prefix, numbers[0]));
            for n in numbers.iter().cloned().chain(extended) {
                prop_assert_eq!(d.lookup(&n).map(|m| m.prefix), naive(&entries, &n));
            }
        }
    }
}
