//! The integrity check of the recordings: the hash chain, the rows and the files agree.
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
//! | `added` | a `.wav` under the directory that no chain entry (nor an in-progress recording) accounts for |
//! | `reordered` | an entry follows another entry of the chain, not the one just before it |
//! | `broken_link` | an entry follows no entry of the chain (entries removed before it), or the next entry does not follow it |
//! | `entry_changed` | an entry's link does not recompute from its fields: it was edited |
//! | `row_mismatch` | the `recordings` row disagrees with the chain (hash, path, facility, times, status...) |
//!
//! The chain is the trusted side: a file is checked against the hash its chain entry froze,
//! and a row against the entry's facts (the `recordings` table has no append-only
//! triggers). Files are hashed streaming, on a blocking thread. Every chained file is
//! expected under the one directory: nodes of a cluster share it.
//!
//! Called by: `sallyport verify-recordings` ([`crate::cli`]), `GET /api/v1/recordings/verify`
//! and `GET /api/v1/recordings/{id}/verify` ([`crate::api`]), and the tests.

use crate::db::to_micros;
use crate::store::{chain_link, ChainFields, Recording, RecordingStatus, Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

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

/// The result of checking everything (`verify-recordings`, `GET /recordings/verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub ok: bool,
    /// Chain entries walked.
    pub entries: u64,
    /// Recordings the chain holds (finished ones, purged included).
    pub recordings: u64,
    /// Of those, purged by retention.
    pub purged: u64,
    /// `.wav` files found under the directory.
    pub files: u64,
    /// The last link (what the next entry will follow).
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

/// One `recording_chain` row as stored.
struct Entry {
    seq: i64,
    at: i64,
    kind: String,
    recording_id: String,
    file_sha256: String,
    metadata: String,
    prev_link: String,
    link: String,
}

const ENTRY_COLUMNS: &str = "seq, at, kind, recording_id, file_sha256, metadata, prev_link, link";

impl Entry {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Entry, sqlx::Error> {
        Ok(Entry {
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

/// Recordings by id in the order the chain first names them.
#[derive(Default)]
struct ChainedSet {
    order: Vec<String>,
    by_id: HashMap<String, Chained>,
}

impl ChainedSet {
    /// Takes in one entry; entries that make no sense for the recording are problems.
    fn absorb(&mut self, e: &Entry, problems: &mut Vec<Problem>) {
        match e.kind.as_str() {
            "recording" => {
                let facts = serde_json::from_str::<Facts>(&e.metadata).ok();
                if facts.is_none() {
                    problems.push(e.problem(
                        ProblemKind::EntryChanged,
                        "the entry's metadata is not the facts of a recording".into(),
                    ));
                }
                let c = Chained {
                    seq: e.seq,
                    sha256: e.file_sha256.clone(),
                    facts,
                    purged_seq: None,
                };
                if self.by_id.insert(e.recording_id.clone(), c).is_some() {
                    problems.push(e.problem(
                        ProblemKind::BrokenLink,
                        "a second `recording` entry for the same recording".into(),
                    ));
                } else {
                    self.order.push(e.recording_id.clone());
                }
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

    fn iter(&self) -> impl Iterator<Item = (&String, &Chained)> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id).map(|c| (id, c)))
    }
}

/// The chain walked in order: its recordings and the link problems found.
struct ChainWalk {
    entries: u64,
    head: String,
    chained: ChainedSet,
    problems: Vec<Problem>,
}

/// An entry whose `prev_link` is not the link just before it, classified once every link
/// is known.
struct Misfit {
    seq: i64,
    recording_id: String,
    prev_link: String,
    expected_from: Option<i64>,
}

/// Walks `recording_chain` in `seq` order, 1000 entries at a time.
async fn walk_chain(store: &Store) -> Result<ChainWalk, ChainError> {
    let mut walk = ChainWalk {
        entries: 0,
        head: String::new(),
        chained: ChainedSet::default(),
        problems: Vec::new(),
    };
    let mut links: HashMap<String, i64> = HashMap::new();
    let mut misfits = Vec::new();
    let mut prev_seq: Option<i64> = None;
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM recording_chain WHERE seq > $1 ORDER BY seq LIMIT 1000"
        ))
        .bind(after)
        .fetch_all(store.db().pool())
        .await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let e = Entry::from_row(r)?;
            if e.prev_link != walk.head {
                misfits.push(Misfit {
                    seq: e.seq,
                    recording_id: e.recording_id.clone(),
                    prev_link: e.prev_link.clone(),
                    expected_from: prev_seq,
                });
            }
            if !e.recomputes() {
                walk.problems.push(e.problem(
                    ProblemKind::EntryChanged,
                    "its link does not match its fields: the entry was edited".into(),
                ));
            }
            walk.chained.absorb(&e, &mut walk.problems);
            links.insert(e.link.clone(), e.seq);
            walk.head = e.link;
            walk.entries += 1;
            prev_seq = Some(e.seq);
            after = e.seq;
        }
    }
    for m in misfits {
        walk.problems.push(classify(&m, &links));
    }
    Ok(walk)
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
        path: None,
        chain_seq: Some(m.seq),
        detail,
    }
}

/// Every `recordings` row, 1000 at a time.
async fn all_rows(store: &Store) -> Result<Vec<Recording>, ChainError> {
    let mut out: Vec<Recording> = Vec::new();
    loop {
        let after = out.last().map(|r| r.id.clone()).unwrap_or_default();
        let page = store.recordings_after(&after, 1000).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
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
    let checks: [(&'static str, bool); 8] = [
        ("path", row.path == f.path),
        ("session_id", row.session_id == f.session_id),
        ("facility_id", row.facility_id == f.facility_id),
        ("format", row.format == f.format),
        ("started_at", to_micros(row.started_at) == f.started_at),
        ("ended_at", row.ended_at.map(to_micros) == Some(f.ended_at)),
        ("duration_ms", row.duration_ms == Some(f.duration_ms)),
        ("bytes", row.bytes == Some(f.bytes)),
    ];
    out.extend(checks.iter().filter(|(_, same)| !same).map(|(n, _)| *n));
    out
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

/// Every `.wav` under `dir`, as relative paths with `/` separators (symbolic links to
/// directories are not followed). A missing directory has no files.
fn wav_files(dir: &Path) -> Result<Vec<String>, ChainError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.is_empty() => break,
            Err(source) => return Err(ChainError::Io { path: abs, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| ChainError::Io {
                path: abs.clone(),
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
                stack.push((entry.path(), child));
            } else if name.to_ascii_lowercase().ends_with(".wav") {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The file side of the whole check: hashes every expected file and finds the added ones.
fn check_files(
    dir: &Path,
    expected: &[Expected],
    accounted: &HashSet<String>,
) -> Result<(u64, Vec<Problem>), ChainError> {
    let mut problems: Vec<Problem> = expected
        .iter()
        .filter_map(|e| check_file(dir, e).0)
        .collect();
    let files = wav_files(dir)?;
    for f in &files {
        if !accounted.contains(f) {
            problems.push(Problem {
                kind: ProblemKind::Added,
                recording_id: None,
                path: Some(f.clone()),
                chain_seq: None,
                detail: "no chain entry accounts for this file".into(),
            });
        }
    }
    Ok((files.len() as u64, problems))
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ChainError> + Send + 'static,
) -> Result<T, ChainError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ChainError::Task(e.to_string()))?
}

/// Fills in the path of problems that name a recording but no file.
fn name_paths(problems: &mut [Problem], chained: &ChainedSet) {
    for p in problems.iter_mut().filter(|p| p.path.is_none()) {
        if let Some(c) = p.recording_id.as_deref().and_then(|id| chained.get(id)) {
            p.path = c.path().map(str::to_string);
        }
    }
}

/// Every row against the chain, and every chained recording that has no row. Also returns
/// the paths of recordings in progress (their files are not `added`).
fn rows_against_chain(rows: &[Recording], chained: &ChainedSet) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut in_progress = Vec::new();
    for row in rows {
        problems.extend(compare_row(row, chained.get(&row.id)));
        if row.status == RecordingStatus::Recording {
            in_progress.push(row.path.clone());
        }
    }
    let row_ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    for (id, c) in chained.iter() {
        if !row_ids.contains(id.as_str()) {
            problems.push(Problem {
                kind: ProblemKind::RowMismatch,
                recording_id: Some(id.clone()),
                path: None,
                chain_seq: Some(c.seq),
                detail: "the chain records it but there is no recordings row".into(),
            });
        }
    }
    (problems, in_progress)
}

/// What the chain expects on disk.
#[derive(Default)]
struct FilePlan {
    /// Files that must be there with their chained hash (not purged).
    expected: Vec<Expected>,
    /// Every path a chain entry names (purged ones too: a file left behind is no `added`).
    accounted: HashSet<String>,
    recordings: u64,
    purged: u64,
}

fn plan_files(chained: &ChainedSet) -> FilePlan {
    let mut plan = FilePlan::default();
    for (id, c) in chained.iter() {
        plan.recordings += 1;
        let Some(path) = c.path() else {
            continue;
        };
        plan.accounted.insert(path.to_string());
        if c.purged_seq.is_some() {
            plan.purged += 1;
        } else {
            plan.expected.push(Expected {
                recording_id: id.clone(),
                path: path.to_string(),
                sha256: c.sha256.clone(),
            });
        }
    }
    plan
}

/// Checks everything: the chain's links, every row against the chain, every chained file
/// against its hash, and every `.wav` under `dir` against the chain.
pub async fn verify_all(store: &Store, dir: &Path) -> Result<ChainReport, ChainError> {
    let walk = walk_chain(store).await?;
    let rows = all_rows(store).await?;
    let mut problems = walk.problems;
    let (row_problems, in_progress) = rows_against_chain(&rows, &walk.chained);
    problems.extend(row_problems);
    let mut plan = plan_files(&walk.chained);
    plan.accounted.extend(in_progress);
    let (recordings, purged) = (plan.recordings, plan.purged);
    let dir_owned = dir.to_path_buf();
    let (files, file_problems) =
        blocking(move || check_files(&dir_owned, &plan.expected, &plan.accounted)).await?;
    problems.extend(file_problems);
    name_paths(&mut problems, &walk.chained);
    Ok(ChainReport {
        ok: problems.is_empty(),
        entries: walk.entries,
        recordings,
        purged,
        files,
        head: walk.head,
        problems,
    })
}

/// The chain entries of one recording, in order.
async fn entries_of(store: &Store, id: &str) -> Result<Vec<Entry>, ChainError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM recording_chain WHERE recording_id = $1 ORDER BY seq"
    ))
    .bind(id)
    .fetch_all(store.db().pool())
    .await?;
    Ok(rows.iter().map(Entry::from_row).collect::<Result<_, _>>()?)
}

/// One entry against its neighbours: it recomputes, follows the entry before it, and the
/// entry after it follows it.
async fn check_links(store: &Store, e: &Entry) -> Result<Vec<Problem>, ChainError> {
    let mut problems = Vec::new();
    if !e.recomputes() {
        problems.push(e.problem(
            ProblemKind::EntryChanged,
            "its link does not match its fields: the entry was edited".into(),
        ));
    }
    problems.extend(check_predecessor(store, e).await?);
    problems.extend(check_successor(store, e).await?);
    Ok(problems)
}

/// `reordered`/`broken_link` when `e` does not follow the entry just before it.
async fn check_predecessor(store: &Store, e: &Entry) -> Result<Option<Problem>, ChainError> {
    let pool = store.db().pool();
    let before = sqlx::query(
        "SELECT seq, link FROM recording_chain WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(e.seq)
    .fetch_optional(pool)
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
            .fetch_optional(pool)
            .await?;
        if let Some(r) = found {
            links.insert(e.prev_link.clone(), r.try_get::<i64, _>("seq")?);
        }
    }
    let m = Misfit {
        seq: e.seq,
        recording_id: e.recording_id.clone(),
        prev_link: e.prev_link.clone(),
        expected_from,
    };
    Ok(Some(classify(&m, &links)))
}

/// `broken_link` when the entry just after `e` does not follow it (`e`'s link was
/// rewritten, or entries were inserted or removed after it).
async fn check_successor(store: &Store, e: &Entry) -> Result<Option<Problem>, ChainError> {
    let after = sqlx::query(
        "SELECT seq, prev_link FROM recording_chain WHERE seq > $1 ORDER BY seq LIMIT 1",
    )
    .bind(e.seq)
    .fetch_optional(store.db().pool())
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
pub async fn verify_recording(
    store: &Store,
    dir: &Path,
    id: &str,
) -> Result<RecordingCheck, ChainError> {
    let row = store.recording(id).await?;
    let entries = entries_of(store, id).await?;
    let mut problems = Vec::new();
    let mut chained = ChainedSet::default();
    for e in &entries {
        problems.extend(check_links(store, e).await?);
        chained.absorb(e, &mut problems);
    }
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
    name_paths(&mut problems, &chained);
    Ok(RecordingCheck {
        recording_id: row.id.clone(),
        ok: problems.is_empty(),
        status: row.status,
        path: c
            .as_ref()
            .and_then(|c| c.path().map(str::to_string))
            .unwrap_or(row.path),
        file_sha256_expected: c.map(|c| c.sha256),
        file_sha256_actual: actual,
        problems,
    })
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
