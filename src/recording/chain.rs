//! The integrity check of the recordings: the hash chain, the rows, the sessions and the
//! files agree.
//!
//! Owns: walking `recording_chain` (appended by [`Store::finish_recording`] and by the
//! retention purge) and the files under `[recording] dir`, and naming every problem with
//! the recording and the file it concerns:
//!
//! | kind | meaning |
//! |---|---|
//! | `changed` | the file's SHA-256 differs from the chained hash (edited, truncated, swapped) |
//! | `removed` | a chained file is missing and the chain has no purge for it |
//! | `unreadable` | a chained file exists but cannot be read |
//! | `added` | a recording file (`.wav` of a call, `.webm` of a visit participant) under the directory that no chain entry (nor an in-progress recording) accounts for |
//! | `reordered` | an entry follows another entry of the chain, not the one just before it |
//! | `broken_link` | an entry follows no entry of the chain (entries removed before it), or the next entry does not follow it |
//! | `entry_changed` | an entry's link does not recompute from its fields: it was edited |
//! | `row_mismatch` | the `recordings` row disagrees with the chain (hash, path, facility, times, status...) |
//! | `missing_recording` | a session says it was recorded (`recorded = 1` / `recording_id`) but names no recording row that exists |
//! | `truncated` | the chain no longer has an entry the audit log anchored as its head: entries were removed from its end |
//! | `anchor_mismatch` | the entry at an anchored position is not the anchored one: the chain was rewritten from there |
//!
//! The chain is the trusted side: a file is checked against the hash its chain entry froze,
//! and a row against the entry's facts (the `recordings` table has no append-only
//! triggers). Files are hashed streaming, on a blocking thread. Every chained file is
//! expected under the one directory: nodes of a cluster share it.
//!
//! **A live system.** The whole check ([`verify_all`]) runs on a node that keeps recording
//! and purging, so it reads one consistent state and reports only what persists:
//! - the chain, the rows, the sessions and the head anchors are read in one read
//!   transaction (`REPEATABLE READ READ ONLY` on PostgreSQL; one deferred transaction on
//!   SQLite, whose WAL snapshot is fixed by its first read), so a call that finishes or a
//!   recording the purge removes during the check is either wholly before the snapshot or
//!   out of its scope: no `row_mismatch` from half of a commit;
//! - the directory is listed during that snapshot; a recording file modified since the check
//!   began, by the filesystem's own clock (`filesystem_now`), is counted but not judged
//!   `added` (the recorder creates the file before it inserts the row, and rewrites it every
//!   second while it records); a file with a modification
//!   time in the future (after the listing) is judged;
//! - files are hashed while the snapshot is open but the files themselves are live, so
//!   every recording or file flagged is re-checked once more, afterwards, on its own
//!   ([`verify_recording`], which itself reads in one transaction and retries once when a
//!   file it expects is missing, in case a purge committed meanwhile; an `added` file is
//!   re-checked by looking its row up by path). Only problems the re-check confirms are
//!   reported: for a recording, the snapshot's problems of the kinds the re-check finds
//!   again, or the re-check's own when none match.
//!
//! A long check holds the read transaction open: on SQLite the WAL cannot be checkpointed
//! past it until it ends (the file grows, writers are not blocked); on PostgreSQL vacuum
//! waits for it.
//!
//! **Memory.** Nothing grows with the number of recordings: the chain is read 1000 entries
//! at a time in `seq` order, and for each page the rows and the other entries of the same
//! recordings are fetched by id (`IN (…)`, indexed), compared and forgotten; the files of
//! the page are hashed before the next page is read. Then the rows without a chain entry
//! are found by paging `recordings` by id, the sessions by a query that returns only the
//! bad ones, and the directory is listed one directory at a time, each batch of files
//! looked up by path (the `UNIQUE` index). What is kept across pages is bounded by the
//! problems found: the paths the chain names that no row does, and the row paths the chain
//! does not name (both are `row_mismatch` problems), and the entries that do not follow
//! their predecessor (resolved at the end by one lookup of their links).
//!
//! **The API** runs in the gateway, so `GET /recordings/verify` checks a range of the
//! chain ([`verify_range`]: `?after_seq=&limit=`, at most [`MAX_RANGE`] entries, the next
//! range's `after_seq` in the answer): the links, the rows and the files of the
//! recordings whose entries are in the range, and, on the range that reaches the head,
//! the head anchors. Rows the chain does not hold, sessions and `added` files are found
//! only by the whole check (`sallyport verify-recordings`).
//!
//! **Truncation of the chain's end.** Deleting the last entries, their rows and their
//! files behind the triggers leaves a chain that links up. Two cross-checks catch it:
//! - `missing_recording`: the session of a recording still says it was recorded and names
//!   the recording (both set in the transaction that inserts the row), so a deleted row
//!   shows unless the sessions are edited too;
//! - the head anchor: every retention run (every `[recording] purge_interval_secs`, an
//!   hour by default, whatever it purged) and every whole check that found nothing wrong
//!   write the chain's head (`seq` and `link`) to the hash-chained audit log (action
//!   [`HEAD_ANCHOR_ACTION`], actor `system`); the whole check then requires every anchored
//!   entry to still be in the chain with its link (`truncated` / `anchor_mismatch`), so the
//!   chain cannot lose what an anchor covers without the audit log losing its anchors too.
//!
//! What they do not catch: entries appended after the last anchor, removed with their rows
//! and files while their sessions are edited as well (at most one purge interval of
//! recordings); and a truncation of both the chain and the audit log's end (the audit log
//! has the same blind spot; copy the head `verify-recordings` prints somewhere else to
//! close it).
//!
//! Called by: `sallyport verify-recordings` ([`crate::cli`]), `GET /api/v1/recordings/verify`
//! and `GET /api/v1/recordings/{id}/verify` ([`crate::api`]), the retention job (the head
//! anchor), and the tests.

use crate::db::{to_micros, Backend};
use crate::recording::media::{MediaKind, Participant};
use crate::store::{
    chain_link, recording_from_row, AuditEntry, ChainFields, Recording, RecordingStatus, Store,
    StoreError, RECORDING_COLUMNS,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The audit action of a chain head anchor.
pub const HEAD_ANCHOR_ACTION: &str = "recording.chain_head";
/// Chain entries, rows or sessions read per query.
const PAGE: i64 = 1000;
/// Ids or paths per `IN (…)` lookup (below SQLite's oldest bind limit).
const LOOKUP: usize = 200;
/// The most chain entries one [`verify_range`] checks.
pub const MAX_RANGE: i64 = 10_000;

/// A read transaction.
type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Errors that stop a check (as opposed to the problems it finds).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the recordings directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the file check stopped: {0}")]
    Task(String),
}

impl From<sqlx::Error> for ChainError {
    fn from(e: sqlx::Error) -> ChainError {
        ChainError::Store(StoreError::Db(e))
    }
}

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Changed,
    Removed,
    Unreadable,
    Added,
    Reordered,
    BrokenLink,
    EntryChanged,
    RowMismatch,
    MissingRecording,
    Truncated,
    AnchorMismatch,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Changed => "changed",
            ProblemKind::Removed => "removed",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Added => "added",
            ProblemKind::Reordered => "reordered",
            ProblemKind::BrokenLink => "broken_link",
            ProblemKind::EntryChanged => "entry_changed",
            ProblemKind::RowMismatch => "row_mismatch",
            ProblemKind::MissingRecording => "missing_recording",
            ProblemKind::Truncated => "truncated",
            ProblemKind::AnchorMismatch => "anchor_mismatch",
        }
    }
}

/// One problem, with the recording and file it concerns when they are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub recording_id: Option<String>,
    /// Relative to the recordings directory.
    pub path: Option<String>,
    /// The chain entry it was found at, for chain problems.
    pub chain_seq: Option<i64>,
    pub detail: String,
}

impl fmt::Display for Problem {
    /// `changed: recording rec_…, file 2026/11/25/ses_….wav: <detail>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.kind.as_str())?;
        let mut sep = " ";
        if let Some(id) = &self.recording_id {
            write!(f, "{sep}recording {id}")?;
            sep = ", ";
        }
        if let Some(p) = &self.path {
            write!(f, "{sep}file {p}")?;
            sep = ", ";
        }
        if let Some(seq) = self.chain_seq {
            write!(f, "{sep}chain entry {seq}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything ([`verify_all`]).
    All,
    /// The chain entries after `after_seq`, up to a limit ([`verify_range`]).
    Range,
}

/// The result of a check (`verify-recordings`, `GET /recordings/verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub ok: bool,
    pub scope: Scope,
    /// The range began after this entry (0: at the start of the chain).
    pub after_seq: i64,
    /// Where the next range begins; `None` when this one reached the head (and always for
    /// the whole check).
    pub next_after_seq: Option<i64>,
    /// Chain entries walked.
    pub entries: u64,
    /// Recordings the walked entries hold (finished ones, purged included).
    pub recordings: u64,
    /// Of those, purged by retention.
    pub purged: u64,
    /// Recording files (`.wav`, `.webm`) found under the directory (whole check), or chained files hashed
    /// (range).
    pub files: u64,
    /// The last link walked (for the whole check, what the next entry will follow).
    pub head: String,
    pub problems: Vec<Problem>,
}

/// The result of checking one recording (`GET /recordings/{id}/verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingCheck {
    pub recording_id: String,
    pub ok: bool,
    pub status: RecordingStatus,
    pub path: String,
    /// The hash the chain froze (none while recording).
    pub file_sha256_expected: Option<String>,
    /// The file's hash now (none when it is missing, purged or still recording).
    pub file_sha256_actual: Option<String>,
    pub problems: Vec<Problem>,
}

/// A point of the whole check where a test may hold it (see [`verify_all_with_hook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The snapshot is open (its first read done); nothing is checked yet.
    Snapshot,
    /// The snapshot is closed; the flagged recordings and files are about to be re-checked.
    Recheck,
}

/// At each [`Phase`] the check sends the phase and a reply sender, and waits for the reply
/// (or for the sender to be dropped).
pub type PhaseHook = tokio::sync::mpsc::Sender<(Phase, tokio::sync::oneshot::Sender<()>)>;

async fn pause(hook: Option<&PhaseHook>, phase: Phase) {
    if let Some(h) = hook {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if h.send((phase, tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// One entry of the recordings hash chain, every field as stored (`recording_chain`): what
/// the integrity checks read and what an evidence package carries
/// (`crate::evidence::ChainEntry` is this type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    pub seq: i64,
    /// Microseconds since the Unix epoch, as the link hashed it.
    pub at: i64,
    /// `recording` or `purge`.
    pub kind: String,
    pub recording_id: String,
    pub file_sha256: String,
    /// The facts the entry froze, as the exact JSON text the link hashed.
    pub metadata: String,
    pub prev_link: String,
    pub link: String,
}

pub(crate) const ENTRY_COLUMNS: &str =
    "seq, at, kind, recording_id, file_sha256, metadata, prev_link, link";

impl ChainEntry {
    /// A row selected with [`ENTRY_COLUMNS`].
    pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<ChainEntry, sqlx::Error> {
        Ok(ChainEntry {
            seq: r.try_get("seq")?,
            at: r.try_get("at")?,
            kind: r.try_get("kind")?,
            recording_id: r.try_get("recording_id")?,
            file_sha256: r.try_get("file_sha256")?,
            metadata: r.try_get("metadata")?,
            prev_link: r.try_get("prev_link")?,
            link: r.try_get("link")?,
        })
    }

    /// Whether the stored link is the hash of the stored fields.
    fn recomputes(&self) -> bool {
        let fields = ChainFields {
            at: self.at,
            kind: &self.kind,
            recording_id: &self.recording_id,
            file_sha256: &self.file_sha256,
            metadata: &self.metadata,
        };
        chain_link(&self.prev_link, &fields) == self.link
    }

    fn problem(&self, kind: ProblemKind, detail: String) -> Problem {
        Problem {
            kind,
            recording_id: Some(self.recording_id.clone()),
            path: None,
            chain_seq: Some(self.seq),
            detail,
        }
    }

    /// The facts of a `recording` entry, if its metadata parses.
    fn facts(&self) -> Option<Facts> {
        serde_json::from_str::<Facts>(&self.metadata).ok()
    }
}

/// The facts a `recording` entry froze (see `ChainMetadata` in the store).
#[derive(Debug, Clone, Deserialize)]
struct Facts {
    session_id: String,
    facility_id: String,
    path: String,
    format: String,
    started_at: i64,
    ended_at: i64,
    duration_ms: i64,
    bytes: i64,
    /// Absent in a call's entry (and in every entry made before visits were recorded).
    #[serde(default)]
    participant: Option<String>,
}

/// What the chain says about one recording.
#[derive(Debug, Clone)]
struct Chained {
    /// The `recording` entry.
    seq: i64,
    sha256: String,
    /// `None` when its metadata does not parse (reported as `entry_changed`).
    facts: Option<Facts>,
    /// The `purge` entry, if retention removed the file.
    purged_seq: Option<i64>,
}

impl Chained {
    fn path(&self) -> Option<&str> {
        self.facts.as_ref().map(|f| f.path.as_str())
    }
}

/// Recordings by id in the order the chain first names them (one recording's entries).
#[derive(Default)]
struct ChainedSet {
    by_id: HashMap<String, Chained>,
}

impl ChainedSet {
    /// Takes in one entry; entries that make no sense for the recording are problems.
    fn absorb(&mut self, e: &ChainEntry, problems: &mut Vec<Problem>) {
        match e.kind.as_str() {
            "recording" => {
                let facts = e.facts();
                if facts.is_none() {
                    problems.push(e.problem(
                        ProblemKind::EntryChanged,
                        "the entry's metadata is not the facts of a recording".into(),
                    ));
                }
                if self.by_id.contains_key(&e.recording_id) {
                    problems.push(e.problem(
                        ProblemKind::BrokenLink,
                        "a second `recording` entry for the same recording".into(),
                    ));
                    return;
                }
                let c = Chained {
                    seq: e.seq,
                    sha256: e.file_sha256.clone(),
                    facts,
                    purged_seq: None,
                };
                self.by_id.insert(e.recording_id.clone(), c);
            }
            "purge" => match self.by_id.get_mut(&e.recording_id) {
                Some(c) => c.purged_seq = Some(e.seq),
                None => problems.push(e.problem(
                    ProblemKind::BrokenLink,
                    "a purge of a recording the chain has not recorded before it".into(),
                )),
            },
            other => problems.push(e.problem(
                ProblemKind::EntryChanged,
                format!("unknown entry kind `{other}`"),
            )),
        }
    }

    fn get(&self, id: &str) -> Option<&Chained> {
        self.by_id.get(id)
    }
}

/// An entry whose `prev_link` is not the link just before it, classified once the links
/// it could follow are looked up.
struct Misfit {
    seq: i64,
    recording_id: String,
    path: Option<String>,
    prev_link: String,
    expected_from: Option<i64>,
}

/// `reordered` when the entry follows some other entry of the chain (or the start), else
/// `broken_link` (what it followed is gone).
fn classify(m: &Misfit, links: &HashMap<String, i64>) -> Problem {
    let just_before = match m.expected_from {
        Some(seq) => format!("entry {seq} just before it"),
        None => "the start of the chain".to_string(),
    };
    let (kind, detail) = if m.prev_link.is_empty() {
        (
            ProblemKind::Reordered,
            format!("it follows the start of the chain, not {just_before}: entries were moved"),
        )
    } else if let Some(seq) = links.get(&m.prev_link) {
        (
            ProblemKind::Reordered,
            format!(
                "it follows chain entry {seq}, not {just_before}: entries were moved or inserted"
            ),
        )
    } else {
        (
            ProblemKind::BrokenLink,
            format!(
                "it follows no entry of the chain (expected {just_before}): entries were removed"
            ),
        )
    };
    Problem {
        kind,
        recording_id: Some(m.recording_id.clone()),
        path: m.path.clone(),
        chain_seq: Some(m.seq),
        detail,
    }
}

/// The row against what the chain holds for it.
fn compare_row(row: &Recording, chained: Option<&Chained>) -> Vec<Problem> {
    let finished = row.status != RecordingStatus::Recording;
    let mismatch = |detail: String, path: &str| Problem {
        kind: ProblemKind::RowMismatch,
        recording_id: Some(row.id.clone()),
        path: Some(path.to_string()),
        chain_seq: chained.map(|c| c.seq),
        detail,
    };
    let Some(c) = chained else {
        if finished {
            return vec![mismatch(
                format!(
                    "the row is {} but the chain has no entry for it",
                    row.status.as_str()
                ),
                &row.path,
            )];
        }
        return Vec::new();
    };
    let path = c.path().unwrap_or(&row.path);
    if !finished {
        return vec![mismatch(
            "the row says recording in progress but the chain has it finished".into(),
            path,
        )];
    }
    let mut problems = Vec::new();
    let differing = differing_fields(row, c);
    if !differing.is_empty() {
        problems.push(mismatch(
            format!(
                "the row differs from the chain in: {}",
                differing.join(", ")
            ),
            path,
        ));
    }
    match (row.status == RecordingStatus::Purged, c.purged_seq) {
        (true, None) => problems.push(mismatch(
            "the row says purged but the chain has no purge for it".into(),
            path,
        )),
        (false, Some(seq)) => problems.push(mismatch(
            format!(
                "the chain purged it (entry {seq}) but the row says {}",
                row.status.as_str()
            ),
            path,
        )),
        _ => {}
    }
    problems
}

/// The names of the row's fields that differ from the chained ones.
fn differing_fields(row: &Recording, c: &Chained) -> Vec<&'static str> {
    let mut out = Vec::new();
    if row.sha256.as_deref() != Some(c.sha256.as_str()) {
        out.push("sha256");
    }
    if row.chain_seq != Some(c.seq) {
        out.push("chain_seq");
    }
    let Some(f) = &c.facts else {
        return out;
    };
    let participant = f
        .participant
        .as_deref()
        .unwrap_or(Participant::Both.as_str());
    let checks: [(&'static str, bool); 9] = [
        ("path", row.path == f.path),
        ("session_id", row.session_id == f.session_id),
        ("facility_id", row.facility_id == f.facility_id),
        ("format", row.format == f.format),
        ("started_at", to_micros(row.started_at) == f.started_at),
        ("ended_at", row.ended_at.map(to_micros) == Some(f.ended_at)),
        ("duration_ms", row.duration_ms == Some(f.duration_ms)),
        ("bytes", row.bytes == Some(f.bytes)),
        ("participant", row.participant.as_str() == participant),
    ];
    out.extend(checks.iter().filter(|(_, same)| !same).map(|(n, _)| *n));
    out
}

/// What a check gathers: counters, problems, and what it must remember across pages (all
/// of it bounded by the problems found).
#[derive(Default)]
struct Scan {
    entries: u64,
    recordings: u64,
    purged: u64,
    /// Recording files (`.wav`, `.webm`) listed under the directory.
    files: u64,
    /// Chained files hashed.
    hashed: u64,
    head: String,
    head_seq: Option<i64>,
    problems: Vec<Problem>,
    misfits: Vec<Misfit>,
    /// Paths a `recording` entry names that no row has (its row is gone or elsewhere):
    /// their files are accounted for.
    chain_only_paths: HashSet<String>,
    /// Paths of rows the chain does not name: their files are `added`.
    unchained_row_paths: HashSet<String>,
}

/// Opens the read transaction of a check and makes its first read (which fixes the
/// snapshot on both databases): the last chain entry's `seq` (0 when the chain is empty).
async fn begin_snapshot(store: &Store) -> Result<(Tx, i64), ChainError> {
    let pool = store.db().pool();
    let mut tx = match store.db().backend() {
        Backend::Postgres => {
            pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?
        }
        Backend::Sqlite => pool.begin().await?,
    };
    let top: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS top FROM recording_chain")
        .fetch_one(&mut *tx)
        .await?
        .try_get("top")?;
    Ok((tx, top))
}

/// `$from, $from+1, …` for `n` binds.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The other entries of the recordings of a page.
#[derive(Default)]
struct History {
    first_recording: Option<i64>,
    purges: Vec<i64>,
}

/// Every chain entry's `seq` and kind for these recordings, by recording.
async fn histories(tx: &mut Tx, ids: &[String]) -> Result<HashMap<String, History>, ChainError> {
    let mut out: HashMap<String, History> = HashMap::new();
    for chunk in ids.chunks(LOOKUP) {
        let sql = format!(
            "SELECT seq, kind, recording_id FROM recording_chain WHERE recording_id IN ({}) \
             ORDER BY seq",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let (seq, kind, id): (i64, String, String) = (
                r.try_get("seq")?,
                r.try_get("kind")?,
                r.try_get("recording_id")?,
            );
            let h = out.entry(id).or_default();
            match kind.as_str() {
                "recording" if h.first_recording.is_none() => h.first_recording = Some(seq),
                "purge" => h.purges.push(seq),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The rows of these recordings, by id.
async fn rows_by_id(tx: &mut Tx, ids: &[String]) -> Result<HashMap<String, Recording>, ChainError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(LOOKUP) {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let rec = recording_from_row(&r)?;
            out.insert(rec.id.clone(), rec);
        }
    }
    Ok(out)
}

/// Walks the chain entries with `after < seq <= top` (at most `limit` of them) in `seq`
/// order, a page at a time: links, entries, rows, files.
async fn walk_chain(
    tx: &mut Tx,
    dir: &Path,
    after: i64,
    top: i64,
    limit: Option<i64>,
    scan: &mut Scan,
) -> Result<(), ChainError> {
    if after > 0 {
        let before = sqlx::query(
            "SELECT seq, link FROM recording_chain WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(after)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(r) = before {
            scan.head = r.try_get("link")?;
            scan.head_seq = Some(r.try_get("seq")?);
        }
    }
    let mut cursor = after;
    let mut left = limit.unwrap_or(i64::MAX);
    while left > 0 {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM recording_chain WHERE seq > $1 AND seq <= $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(cursor)
        .bind(top)
        .bind(left.min(PAGE))
        .fetch_all(&mut **tx)
        .await?;
        let page = rows
            .iter()
            .map(ChainEntry::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = page.last() else {
            break;
        };
        cursor = last.seq;
        left -= page.len() as i64;
        check_page(tx, dir, &page, scan).await?;
    }
    Ok(())
}

/// One page of entries against their neighbours, their rows and their files.
async fn check_page(
    tx: &mut Tx,
    dir: &Path,
    page: &[ChainEntry],
    scan: &mut Scan,
) -> Result<(), ChainError> {
    let mut ids: Vec<String> = page.iter().map(|e| e.recording_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let history = histories(tx, &ids).await?;
    let rows = rows_by_id(tx, &ids).await?;
    let mut expected = Vec::new();
    for e in page {
        if e.prev_link != scan.head {
            scan.misfits.push(Misfit {
                seq: e.seq,
                recording_id: e.recording_id.clone(),
                path: None,
                prev_link: e.prev_link.clone(),
                expected_from: scan.head_seq,
            });
        }
        if !e.recomputes() {
            scan.problems.push(e.problem(
                ProblemKind::EntryChanged,
                "its link does not match its fields: the entry was edited".into(),
            ));
        }
        let h = history.get(&e.recording_id);
        match e.kind.as_str() {
            "recording" => {
                let row = rows.get(&e.recording_id);
                if let Some(file) = check_recording_entry(e, h, row, scan) {
                    expected.push(file);
                }
            }
            "purge" => {
                let first = h.and_then(|h| h.first_recording);
                if first.is_none_or(|s| s >= e.seq) {
                    scan.problems.push(e.problem(
                        ProblemKind::BrokenLink,
                        "a purge of a recording the chain has not recorded before it".into(),
                    ));
                }
            }
            other => scan.problems.push(e.problem(
                ProblemKind::EntryChanged,
                format!("unknown entry kind `{other}`"),
            )),
        }
        scan.head = e.link.clone();
        scan.head_seq = Some(e.seq);
        scan.entries += 1;
    }
    scan.hashed += expected.len() as u64;
    let dir = dir.to_path_buf();
    let found = blocking(move || {
        Ok(expected
            .iter()
            .filter_map(|e| check_file(&dir, e).0)
            .collect::<Vec<_>>())
    })
    .await?;
    scan.problems.extend(found);
    Ok(())
}

/// A `recording` entry against its history and its row; the file to hash, unless purged.
fn check_recording_entry(
    e: &ChainEntry,
    h: Option<&History>,
    row: Option<&Recording>,
    scan: &mut Scan,
) -> Option<Expected> {
    let facts = e.facts();
    if facts.is_none() {
        scan.problems.push(e.problem(
            ProblemKind::EntryChanged,
            "the entry's metadata is not the facts of a recording".into(),
        ));
    }
    if h.and_then(|h| h.first_recording) != Some(e.seq) {
        scan.problems.push(e.problem(
            ProblemKind::BrokenLink,
            "a second `recording` entry for the same recording".into(),
        ));
        return None;
    }
    scan.recordings += 1;
    let purged_seq = h.and_then(|h| h.purges.iter().copied().find(|s| *s > e.seq));
    if purged_seq.is_some() {
        scan.purged += 1;
    }
    let c = Chained {
        seq: e.seq,
        sha256: e.file_sha256.clone(),
        facts,
        purged_seq,
    };
    match row {
        Some(row) => {
            scan.problems.extend(compare_row(row, Some(&c)));
            if let Some(p) = c.path().filter(|p| *p != row.path) {
                scan.chain_only_paths.insert(p.to_string());
                scan.unchained_row_paths.insert(row.path.clone());
            }
        }
        None => {
            scan.problems.push(Problem {
                kind: ProblemKind::RowMismatch,
                recording_id: Some(e.recording_id.clone()),
                path: c.path().map(str::to_string),
                chain_seq: Some(e.seq),
                detail: "the chain records it but there is no recordings row".into(),
            });
            if let Some(p) = c.path() {
                scan.chain_only_paths.insert(p.to_string());
            }
        }
    }
    let path = c.path()?;
    purged_seq.is_none().then(|| Expected {
        recording_id: e.recording_id.clone(),
        path: path.to_string(),
        sha256: c.sha256.clone(),
    })
}

/// Classifies the entries that did not follow their predecessor, looking their
/// `prev_link` up among the chain's links.
async fn resolve_misfits(tx: &mut Tx, scan: &mut Scan) -> Result<(), ChainError> {
    let misfits = std::mem::take(&mut scan.misfits);
    let mut wanted: Vec<String> = misfits
        .iter()
        .filter(|m| !m.prev_link.is_empty())
        .map(|m| m.prev_link.clone())
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut links = HashMap::new();
    for chunk in wanted.chunks(LOOKUP) {
        let sql = format!(
            "SELECT seq, link FROM recording_chain WHERE link IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for l in chunk {
            q = q.bind(l);
        }
        for r in q.fetch_all(&mut **tx).await? {
            links.insert(r.try_get::<String, _>("link")?, r.try_get::<i64, _>("seq")?);
        }
    }
    for m in &misfits {
        scan.problems.push(classify(m, &links));
    }
    Ok(())
}

/// Rows the chain holds no `recording` entry for, a page of rows at a time.
async fn rows_without_chain(tx: &mut Tx, scan: &mut Scan) -> Result<(), ChainError> {
    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(&after)
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        let page = rows
            .iter()
            .map(recording_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id.clone();
        let ids: Vec<String> = page.iter().map(|r| r.id.clone()).collect();
        let mut chained = HashSet::new();
        for chunk in ids.chunks(LOOKUP) {
            let sql = format!(
                "SELECT DISTINCT recording_id FROM recording_chain \
                 WHERE kind = 'recording' AND recording_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&mut **tx).await? {
                chained.insert(r.try_get::<String, _>("recording_id")?);
            }
        }
        for row in page.iter().filter(|r| !chained.contains(&r.id)) {
            let found = compare_row(row, None);
            if !found.is_empty() {
                scan.unchained_row_paths.insert(row.path.clone());
            }
            scan.problems.extend(found);
        }
    }
}

/// Sessions that say they were recorded but name no recording row that exists.
async fn missing_recordings(tx: &mut Tx, scan: &mut Scan) -> Result<(), ChainError> {
    let mut after = String::new();
    loop {
        let rows = sqlx::query(
            "SELECT s.id, s.recording_id FROM sessions s \
             WHERE s.id > $1 AND (s.recorded = 1 OR s.recording_id IS NOT NULL) \
             AND (s.recording_id IS NULL \
                  OR NOT EXISTS (SELECT 1 FROM recordings r WHERE r.id = s.recording_id)) \
             ORDER BY s.id LIMIT $2",
        )
        .bind(&after)
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        for r in &rows {
            let session: String = r.try_get("id")?;
            let recording_id: Option<String> = r.try_get("recording_id")?;
            let detail = match &recording_id {
                Some(_) => format!(
                    "session {session} says it was recorded but its recording row is gone: \
                     the recording was removed (with its chain entry if the chain shows nothing)"
                ),
                None => format!("session {session} says it was recorded but names no recording"),
            };
            scan.problems.push(Problem {
                kind: ProblemKind::MissingRecording,
                recording_id,
                path: None,
                chain_seq: None,
                detail,
            });
            after = session;
        }
    }
}

/// A head anchor as the audit log holds it.
#[derive(Deserialize)]
struct Anchor {
    seq: i64,
    link: String,
}

/// Every head anchor of the audit log against the chain.
async fn check_anchors(tx: &mut Tx, scan: &mut Scan) -> Result<(), ChainError> {
    let mut after = 0i64;
    let mut reported = HashSet::new();
    loop {
        let rows = sqlx::query(
            "SELECT id, at, detail FROM audit_log WHERE action = $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(HEAD_ANCHOR_ACTION)
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut anchors = Vec::new();
        for r in &rows {
            let (id, at, detail): (i64, i64, String) =
                (r.try_get("id")?, r.try_get("at")?, r.try_get("detail")?);
            after = id;
            match serde_json::from_str::<Anchor>(&detail) {
                Ok(a) => anchors.push((id, at, a)),
                Err(e) => scan.problems.push(Problem {
                    kind: ProblemKind::AnchorMismatch,
                    recording_id: None,
                    path: None,
                    chain_seq: None,
                    detail: format!("audit entry {id} is no chain head anchor: {e}"),
                }),
            }
        }
        let seqs: Vec<i64> = anchors.iter().map(|(_, _, a)| a.seq).collect();
        let mut links = HashMap::new();
        for chunk in seqs.chunks(LOOKUP) {
            let sql = format!(
                "SELECT seq, link FROM recording_chain WHERE seq IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(*s);
            }
            for r in q.fetch_all(&mut **tx).await? {
                links.insert(r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("link")?);
            }
        }
        for (id, at, a) in anchors {
            let when = crate::db::from_micros(at).to_rfc3339();
            let (kind, detail) = match links.get(&a.seq) {
                Some(l) if *l == a.link => continue,
                Some(_) => (
                    ProblemKind::AnchorMismatch,
                    format!(
                        "the audit log anchored entry {} as the head at {when} (audit entry {id}) \
                         but the entry there now has another link: the chain was rewritten",
                        a.seq
                    ),
                ),
                None => (
                    ProblemKind::Truncated,
                    format!(
                        "the audit log anchored entry {} as the head at {when} (audit entry {id}) \
                         but the chain has no entry {}: entries were removed from its end",
                        a.seq, a.seq
                    ),
                ),
            };
            if reported.insert(a.seq) {
                scan.problems.push(Problem {
                    kind,
                    recording_id: None,
                    path: None,
                    chain_seq: Some(a.seq),
                    detail,
                });
            }
        }
    }
}

/// Writes the chain head (`seq`, `link`) to the audit log. Used by the retention job after
/// each run and by the whole check when it found nothing wrong.
async fn anchor(store: &Store, seq: i64, link: &str) -> Result<(), ChainError> {
    store
        .audit(AuditEntry {
            actor: "system",
            action: HEAD_ANCHOR_ACTION,
            target: "recording_chain",
            facility_id: None,
            detail: serde_json::json!({ "seq": seq, "link": link }),
            remote_addr: None,
        })
        .await?;
    Ok(())
}

/// Anchors the chain's current head in the audit log; `None` when the chain is empty.
pub async fn anchor_head(store: &Store) -> Result<Option<i64>, ChainError> {
    let head = sqlx::query("SELECT seq, link FROM recording_chain ORDER BY seq DESC LIMIT 1")
        .fetch_optional(store.db().pool())
        .await?;
    let Some(r) = head else {
        return Ok(None);
    };
    let (seq, link): (i64, String) = (r.try_get("seq")?, r.try_get("link")?);
    anchor(store, seq, &link).await?;
    Ok(Some(seq))
}

/// One directory's listing: its subdirectories and its recording files (of every
/// [`MediaKind`]: `.wav`, `.webm`) with their
/// modification times.
struct Listing {
    dirs: Vec<(PathBuf, String)>,
    files: Vec<(String, Option<SystemTime>)>,
}

/// Lists `abs` (relative path `rel`); a missing top directory has nothing. Symbolic links
/// to directories are not followed.
fn list_dir(abs: &Path, rel: &str) -> Result<Listing, ChainError> {
    let mut out = Listing {
        dirs: Vec::new(),
        files: Vec::new(),
    };
    let entries = match std::fs::read_dir(abs) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.is_empty() => return Ok(out),
        Err(source) => {
            return Err(ChainError::Io {
                path: abs.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| ChainError::Io {
            path: abs.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            out.dirs.push((entry.path(), child));
        } else if MediaKind::of_path(&name).is_some() {
            let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
            out.files.push((child, modified));
        }
    }
    out.files.sort();
    Ok(out)
}

/// Which of these paths a `recordings` row has.
async fn paths_with_rows<'a>(
    tx: &mut Tx,
    paths: impl Iterator<Item = &'a String>,
) -> Result<HashSet<String>, ChainError> {
    let paths: Vec<&String> = paths.collect();
    let mut out = HashSet::new();
    for chunk in paths.chunks(LOOKUP) {
        let sql = format!(
            "SELECT path FROM recordings WHERE path IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for p in chunk {
            q = q.bind(p.as_str());
        }
        for r in q.fetch_all(&mut **tx).await? {
            out.insert(r.try_get::<String, _>("path")?);
        }
    }
    Ok(out)
}

/// The start of a check, by the clock that stamps the files under `dir`: the modification
/// time of a file created there and removed again, after which the check waits
/// [`FS_TICK`] so that every file written from then on carries a later time. A filesystem
/// stamps files from a coarse clock (a kernel tick behind the fine one `SystemTime::now`
/// reads, so a file written a millisecond after `SystemTime::now` can carry an earlier
/// time), and a shared directory's server from its own: compared with our clock, a file
/// written just after the check began could look older than the check, and one written
/// just before it could look newer. Where nothing can be created (a read-only mount), our
/// own clock.
async fn filesystem_now(dir: &Path) -> SystemTime {
    let dir = dir.to_path_buf();
    let probe = tokio::task::spawn_blocking(move || {
        let f = tempfile::Builder::new()
            .prefix(".verify-clock-")
            .tempfile_in(&dir)?;
        f.as_file().metadata()?.modified()
    })
    .await;
    match probe {
        Ok(Ok(t)) => {
            tokio::time::sleep(FS_TICK).await;
            t
        }
        // clock-ok: compared with the files' modification times, as close as we can get.
        _ => SystemTime::now(),
    }
}

/// Longer than a kernel tick (1 to 10 ms), the granularity of file modification times.
const FS_TICK: Duration = Duration::from_millis(20);

/// Whether a file is accounted for: a row has its path and the chain does not disown it,
/// or the chain names it.
fn accounted(path: &str, has_row: bool, scan: &Scan) -> bool {
    (has_row && !scan.unchained_row_paths.contains(path)) || scan.chain_only_paths.contains(path)
}

/// Lists the directory, one directory at a time, and names the recording files (`.wav`, `.webm`) nothing
/// accounts for. Files modified after `started` ([`filesystem_now`]) up to the listing are
/// out of scope.
async fn check_directory(
    tx: &mut Tx,
    dir: &Path,
    started: SystemTime,
    scan: &mut Scan,
) -> Result<(), ChainError> {
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        let listing = blocking(move || list_dir(&abs, &rel)).await?;
        // clock-ok: compared with the files' modification times, the filesystem's clock.
        let listed = SystemTime::now() + Duration::from_secs(2);
        stack.extend(listing.dirs);
        scan.files += listing.files.len() as u64;
        for chunk in listing.files.chunks(LOOKUP) {
            let known = paths_with_rows(tx, chunk.iter().map(|(p, _)| p)).await?;
            for (path, modified) in chunk {
                let recent = modified.is_some_and(|m| m > started && m <= listed);
                if recent || accounted(path, known.contains(path), scan) {
                    continue;
                }
                scan.problems.push(Problem {
                    kind: ProblemKind::Added,
                    recording_id: None,
                    path: Some(path.clone()),
                    chain_seq: None,
                    detail: "no chain entry accounts for this file".into(),
                });
            }
        }
    }
    Ok(())
}

/// Re-checks every flagged recording and file on its own, now, and keeps what persists;
/// then names the files of problems that name only a recording.
async fn confirm(store: &Store, dir: &Path, scan: &mut Scan) -> Result<Vec<Problem>, ChainError> {
    let suspects = std::mem::take(&mut scan.problems);
    let mut out = Vec::new();
    let mut by_id: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    for p in suspects {
        match (&p.recording_id, p.kind) {
            (Some(id), _) => by_id.entry(id.clone()).or_default().push(p),
            (None, ProblemKind::Added) => {
                if added_persists(store, dir, &p, scan).await? {
                    out.push(p);
                }
            }
            (None, _) => out.push(p),
        }
    }
    for (id, found) in by_id {
        match verify_recording(store, dir, &id).await {
            Ok(now) if now.ok => {
                tracing::info!(recording = %id, "a problem seen during the check is gone: it changed meanwhile")
            }
            Ok(now) => {
                let kinds: HashSet<ProblemKind> = now.problems.iter().map(|p| p.kind).collect();
                let kept: Vec<Problem> = found
                    .into_iter()
                    .filter(|p| kinds.contains(&p.kind))
                    .collect();
                if kept.is_empty() {
                    out.extend(now.problems);
                } else {
                    out.extend(kept);
                }
            }
            Err(ChainError::Store(StoreError::NotFound { .. })) => out.extend(found),
            Err(e) => return Err(e),
        }
    }
    name_paths(store, &mut out).await?;
    Ok(out)
}

/// An `added` file still there and still without a row that accounts for it.
async fn added_persists(
    store: &Store,
    dir: &Path,
    p: &Problem,
    scan: &Scan,
) -> Result<bool, ChainError> {
    let Some(path) = p.path.as_deref() else {
        return Ok(true);
    };
    let Some(full) = resolve(dir, path) else {
        return Ok(true);
    };
    if !blocking(move || Ok(full.exists())).await? {
        return Ok(false);
    }
    let row = sqlx::query("SELECT id FROM recordings WHERE path = $1")
        .bind(path)
        .fetch_optional(store.db().pool())
        .await?;
    Ok(!accounted(path, row.is_some(), scan))
}

/// Fills in the path of problems that name a recording but no file, from its chain entry
/// (or its row).
async fn name_paths(store: &Store, problems: &mut [Problem]) -> Result<(), ChainError> {
    let pool = store.db().pool();
    let mut known: HashMap<String, Option<String>> = HashMap::new();
    for p in problems.iter_mut().filter(|p| p.path.is_none()) {
        let Some(id) = p.recording_id.clone() else {
            continue;
        };
        if !known.contains_key(&id) {
            let entry = sqlx::query(
                "SELECT metadata FROM recording_chain WHERE recording_id = $1 \
                 AND kind = 'recording' ORDER BY seq LIMIT 1",
            )
            .bind(&id)
            .fetch_optional(pool)
            .await?;
            let mut path = match entry {
                Some(r) => serde_json::from_str::<Facts>(&r.try_get::<String, _>("metadata")?)
                    .ok()
                    .map(|f| f.path),
                None => None,
            };
            if path.is_none() {
                path = sqlx::query("SELECT path FROM recordings WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(pool)
                    .await?
                    .map(|r| r.try_get::<String, _>("path"))
                    .transpose()?;
            }
            known.insert(id.clone(), path);
        }
        p.path = known.get(&id).cloned().flatten();
    }
    Ok(())
}

/// Checks everything: the chain's links, every row against the chain, every session's
/// recording, the head anchors, every chained file against its hash, and every recording file
/// under `dir` against the chain. Anchors the head when it finds nothing wrong.
pub async fn verify_all(store: &Store, dir: &Path) -> Result<ChainReport, ChainError> {
    whole(store, dir, None).await
}

/// [`verify_all`], held at each [`Phase`] until `hook` answers: the seam tests use to
/// change things between the snapshot and the checks.
#[doc(hidden)]
pub async fn verify_all_with_hook(
    store: &Store,
    dir: &Path,
    hook: PhaseHook,
) -> Result<ChainReport, ChainError> {
    whole(store, dir, Some(&hook)).await
}

async fn whole(
    store: &Store,
    dir: &Path,
    hook: Option<&PhaseHook>,
) -> Result<ChainReport, ChainError> {
    let started = filesystem_now(dir).await;
    let (mut tx, top) = begin_snapshot(store).await?;
    pause(hook, Phase::Snapshot).await;
    let mut scan = Scan::default();
    walk_chain(&mut tx, dir, 0, top, None, &mut scan).await?;
    resolve_misfits(&mut tx, &mut scan).await?;
    rows_without_chain(&mut tx, &mut scan).await?;
    missing_recordings(&mut tx, &mut scan).await?;
    check_anchors(&mut tx, &mut scan).await?;
    check_directory(&mut tx, dir, started, &mut scan).await?;
    tx.rollback().await?;
    pause(hook, Phase::Recheck).await;
    let problems = confirm(store, dir, &mut scan).await?;
    let ok = problems.is_empty();
    if let (true, Some(seq)) = (ok, scan.head_seq) {
        if let Err(e) = anchor(store, seq, &scan.head).await {
            tracing::warn!(error = %e, "anchoring the verified recordings chain head failed");
        }
    }
    Ok(ChainReport {
        ok,
        scope: Scope::All,
        after_seq: 0,
        next_after_seq: None,
        entries: scan.entries,
        recordings: scan.recordings,
        purged: scan.purged,
        files: scan.files,
        head: scan.head,
        problems,
    })
}

/// Checks the chain entries after `after_seq`, at most `limit` (1..=[`MAX_RANGE`]) of
/// them: their links, the rows and files of their recordings, and the head anchors when
/// the range reaches the head. Memory and time are bounded by `limit`; what it does not
/// cover is listed in the module doc.
pub async fn verify_range(
    store: &Store,
    dir: &Path,
    after_seq: i64,
    limit: i64,
) -> Result<ChainReport, ChainError> {
    let limit = limit.clamp(1, MAX_RANGE);
    let after_seq = after_seq.max(0);
    let (mut tx, top) = begin_snapshot(store).await?;
    let mut scan = Scan::default();
    walk_chain(&mut tx, dir, after_seq, top, Some(limit), &mut scan).await?;
    resolve_misfits(&mut tx, &mut scan).await?;
    let reached_head = scan.head_seq.is_none_or(|s| s >= top);
    if reached_head {
        check_anchors(&mut tx, &mut scan).await?;
    }
    tx.rollback().await?;
    let problems = confirm(store, dir, &mut scan).await?;
    Ok(ChainReport {
        ok: problems.is_empty(),
        scope: Scope::Range,
        after_seq,
        next_after_seq: if reached_head { None } else { scan.head_seq },
        entries: scan.entries,
        recordings: scan.recordings,
        purged: scan.purged,
        files: scan.hashed,
        head: scan.head,
        problems,
    })
}

/// The chain entries of one recording, in order.
async fn entries_of(tx: &mut Tx, id: &str) -> Result<Vec<ChainEntry>, ChainError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM recording_chain WHERE recording_id = $1 ORDER BY seq"
    ))
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .iter()
        .map(ChainEntry::from_row)
        .collect::<Result<_, _>>()?)
}

/// One entry against its neighbours: it recomputes, follows the entry before it, and the
/// entry after it follows it.
async fn check_links(tx: &mut Tx, e: &ChainEntry) -> Result<Vec<Problem>, ChainError> {
    let mut problems = Vec::new();
    if !e.recomputes() {
        problems.push(e.problem(
            ProblemKind::EntryChanged,
            "its link does not match its fields: the entry was edited".into(),
        ));
    }
    problems.extend(check_predecessor(tx, e).await?);
    problems.extend(check_successor(tx, e).await?);
    Ok(problems)
}

/// `reordered`/`broken_link` when `e` does not follow the entry just before it.
async fn check_predecessor(tx: &mut Tx, e: &ChainEntry) -> Result<Option<Problem>, ChainError> {
    let before = sqlx::query(
        "SELECT seq, link FROM recording_chain WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(e.seq)
    .fetch_optional(&mut **tx)
    .await?;
    let (expected_from, expected_link) = match &before {
        Some(r) => (Some(r.try_get::<i64, _>("seq")?), r.try_get("link")?),
        None => (None, String::new()),
    };
    if e.prev_link == expected_link {
        return Ok(None);
    }
    let mut links = HashMap::new();
    if !e.prev_link.is_empty() {
        let found = sqlx::query("SELECT seq FROM recording_chain WHERE link = $1 LIMIT 1")
            .bind(&e.prev_link)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(r) = found {
            links.insert(e.prev_link.clone(), r.try_get::<i64, _>("seq")?);
        }
    }
    let m = Misfit {
        seq: e.seq,
        recording_id: e.recording_id.clone(),
        path: None,
        prev_link: e.prev_link.clone(),
        expected_from,
    };
    Ok(Some(classify(&m, &links)))
}

/// `broken_link` when the entry just after `e` does not follow it (`e`'s link was
/// rewritten, or entries were inserted or removed after it).
async fn check_successor(tx: &mut Tx, e: &ChainEntry) -> Result<Option<Problem>, ChainError> {
    let after = sqlx::query(
        "SELECT seq, prev_link FROM recording_chain WHERE seq > $1 ORDER BY seq LIMIT 1",
    )
    .bind(e.seq)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(r) = after else {
        return Ok(None);
    };
    let (next, prev): (i64, String) = (r.try_get("seq")?, r.try_get("prev_link")?);
    Ok((prev != e.link).then(|| {
        e.problem(
            ProblemKind::BrokenLink,
            format!("the next chain entry ({next}) does not follow this one"),
        )
    }))
}

/// Checks one recording: its chain entries and their neighbours, its row against the
/// chain, and its file against the chained hash. `NotFound` when there is no such row.
/// The rows and entries are read in one transaction; when the file it expects is
/// missing, it looks once more (a purge may have committed between the read and the
/// hash).
pub async fn verify_recording(
    store: &Store,
    dir: &Path,
    id: &str,
) -> Result<RecordingCheck, ChainError> {
    let first = check_one(store, dir, id).await?;
    if first
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Removed)
    {
        return check_one(store, dir, id).await;
    }
    Ok(first)
}

async fn check_one(store: &Store, dir: &Path, id: &str) -> Result<RecordingCheck, ChainError> {
    let (mut tx, _) = begin_snapshot(store).await?;
    let row = sqlx::query(&format!(
        "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::not_found("recording", id))?;
    let row = recording_from_row(&row)?;
    let entries = entries_of(&mut tx, id).await?;
    let mut problems = Vec::new();
    let mut chained = ChainedSet::default();
    for e in &entries {
        problems.extend(check_links(&mut tx, e).await?);
        chained.absorb(e, &mut problems);
    }
    tx.rollback().await?;
    let c = chained.get(id).cloned();
    problems.extend(compare_row(&row, c.as_ref()));
    let expected = c.as_ref().and_then(|c| {
        let path = c.path()?;
        c.purged_seq.is_none().then(|| Expected {
            recording_id: id.to_string(),
            path: path.to_string(),
            sha256: c.sha256.clone(),
        })
    });
    let mut actual = None;
    if let Some(e) = expected {
        let dir = dir.to_path_buf();
        let (problem, hash) = blocking(move || Ok(check_file(&dir, &e))).await?;
        problems.extend(problem);
        actual = hash;
    }
    let path = c
        .as_ref()
        .and_then(|c| c.path().map(str::to_string))
        .unwrap_or(row.path.clone());
    for p in problems.iter_mut().filter(|p| p.path.is_none()) {
        p.path = Some(path.clone());
    }
    Ok(RecordingCheck {
        recording_id: row.id.clone(),
        ok: problems.is_empty(),
        status: row.status,
        path,
        file_sha256_expected: c.map(|c| c.sha256),
        file_sha256_actual: actual,
        problems,
    })
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ChainError> + Send + 'static,
) -> Result<T, ChainError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ChainError::Task(e.to_string()))?
}

/// A file the chain says must be there with this hash.
#[derive(Debug, Clone)]
struct Expected {
    recording_id: String,
    path: String,
    sha256: String,
}

/// The recordings directory `dir` joined with a stored relative path, or `None` when the
/// stored path would leave the directory (absolute, `..`).
pub(crate) fn resolve(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && !rel.as_os_str().is_empty()).then(|| dir.join(rel))
}

/// SHA-256 of a file, hex ([`super::hash_file`]); `None` when it does not exist.
pub fn hash_file(path: &Path) -> std::io::Result<Option<String>> {
    match super::hash_file(path) {
        Ok(h) => Ok(Some(h)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Hashes one expected file: the problem if any, and the hash found.
fn check_file(dir: &Path, e: &Expected) -> (Option<Problem>, Option<String>) {
    let problem = |kind, detail: String| Problem {
        kind,
        recording_id: Some(e.recording_id.clone()),
        path: Some(e.path.clone()),
        chain_seq: None,
        detail,
    };
    let Some(full) = resolve(dir, &e.path) else {
        let p = problem(
            ProblemKind::Removed,
            "the chained path is not inside the recordings directory".into(),
        );
        return (Some(p), None);
    };
    match hash_file(&full) {
        Ok(Some(actual)) if actual == e.sha256 => (None, Some(actual)),
        Ok(Some(actual)) => {
            let detail = format!("SHA-256 {actual} differs from the chained {}", e.sha256);
            (Some(problem(ProblemKind::Changed, detail)), Some(actual))
        }
        Ok(None) => {
            let detail = "the file is missing and the chain has no purge for it".to_string();
            (Some(problem(ProblemKind::Removed, detail)), None)
        }
        Err(err) => {
            let detail = format!("cannot read the file: {err}");
            (Some(problem(ProblemKind::Unreadable, detail)), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_paths_stay_inside_the_directory() {
        let dir = Path::new("/rec");
        assert_eq!(
            resolve(dir, "2026/11/25/a.wav"),
            Some(PathBuf::from("/rec/2026/11/25/a.wav"))
        );
        assert_eq!(resolve(dir, "../etc/passwd"), None);
        assert_eq!(resolve(dir, "/etc/passwd"), None);
        assert_eq!(
            resolve(dir, "a/./b.wav"),
            Some(PathBuf::from("/rec/a/b.wav"))
        );
        assert_eq!(resolve(dir, ""), None);
    }

    #[test]
    fn a_problem_line_names_the_recording_and_the_file() {
        let p = Problem {
            kind: ProblemKind::Changed,
            recording_id: Some("rec_1".into()),
            path: Some("2026/11/25/s.wav".into()),
            chain_seq: None,
            detail: "x".into(),
        };
        assert_eq!(
            p.to_string(),
            "changed: recording rec_1, file 2026/11/25/s.wav: x"
        );
        let added = Problem {
            kind: ProblemKind::Added,
            recording_id: None,
            path: Some("a.wav".into()),
            chain_seq: None,
            detail: "y".into(),
        };
        assert_eq!(added.to_string(), "added: file a.wav: y");
    }

    #[test]
    fn a_misfit_that_follows_another_entry_is_reordered_else_broken() {
        let links = HashMap::from([("L1".to_string(), 1)]);
        let m = |prev: &str| Misfit {
            seq: 3,
            recording_id: "rec_3".into(),
            path: None,
            prev_link: prev.into(),
            expected_from: Some(2),
        };
        assert_eq!(classify(&m("L1"), &links).kind, ProblemKind::Reordered);
        assert_eq!(classify(&m(""), &links).kind, ProblemKind::Reordered);
        assert_eq!(classify(&m("gone"), &links).kind, ProblemKind::BrokenLink);
    }

    #[test]
    fn files_hash_streaming_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.wav");
        std::fs::write(&p, vec![7u8; 200_000]).expect("write");
        let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(vec![7u8; 200_000]));
        assert_eq!(hash_file(&p).expect("hash"), Some(want));
        assert_eq!(hash_file(&dir.path().join("b.wav")).expect("hash"), None);
    }
}
