//! Checking a package: pure. [`verify`] reads the tar from any reader, hashing every
//! member streaming and keeping only the small JSON members; [`check`] judges what was
//! read. No database, no network, no clock: the same bytes give the same [`Report`].
//!
//! Every check is named ([`CheckKind`]) and says what it concerns: the member (a file
//! whose hash differs, a file missing or not listed) or the chain entry (`seq`) or audit
//! entry (`id`) where a link breaks.

use super::tar::{self, TarError};
use super::{AnchorDetail, AnchorProof, ChainEntry, Manifest, ANCHOR, CHAIN, FORMAT, MANIFEST};
use crate::recording::chain::HEAD_ANCHOR_ACTION;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest JSON member kept in memory to be read (64 MiB).
const MAX_JSON: u64 = 64 * 1024 * 1024;

/// Why a package could not be checked at all (as opposed to the checks that fail).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Tar(#[from] TarError),
}

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// `manifest.json` is the first member, parses, and declares the known format.
    Manifest,
    /// A member listed in the manifest is there with the SHA-256 and size listed.
    FileHash,
    /// A member is listed in the manifest (nothing was added).
    FileListed,
    /// A chain file (`chain/entries.json`, `chain/anchor.json`) parses.
    ChainFile,
    /// A recording's file hashes to the SHA-256 its chain entry froze.
    RecordingHash,
    /// A chain entry's link recomputes from its fields and the link before it.
    ChainEntry,
    /// A recording's chain entry follows the entry before it in the package.
    ChainLinkBefore,
    /// The entry after a recording's chain entry in the package follows it (or it is the
    /// anchored head).
    ChainLinkAfter,
    /// An audit entry's hash recomputes from its fields and the hash before it.
    AuditEntry,
    /// The anchor's audit entry follows the audit entry before it.
    AuditLink,
    /// The anchor's audit entry names the head the package holds, with the same link.
    AnchorHead,
    /// The anchored head is at or after every packaged recording's entry.
    AnchorCovers,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Manifest => "manifest",
            CheckKind::FileHash => "file_hash",
            CheckKind::FileListed => "file_listed",
            CheckKind::ChainFile => "chain_file",
            CheckKind::RecordingHash => "recording_hash",
            CheckKind::ChainEntry => "chain_entry",
            CheckKind::ChainLinkBefore => "chain_link_before",
            CheckKind::ChainLinkAfter => "chain_link_after",
            CheckKind::AuditEntry => "audit_entry",
            CheckKind::AuditLink => "audit_link",
            CheckKind::AnchorHead => "anchor_head",
            CheckKind::AnchorCovers => "anchor_covers",
        }
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub kind: CheckKind,
    pub ok: bool,
    /// The member it concerns, if one.
    pub file: Option<String>,
    /// The chain entry it concerns, if one.
    pub chain_seq: Option<i64>,
    /// The audit entry it concerns, if one.
    pub audit_id: Option<i64>,
    pub detail: String,
}

impl Check {
    fn new(kind: CheckKind, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            kind,
            ok,
            file: None,
            chain_seq: None,
            audit_id: None,
            detail: detail.into(),
        }
    }

    fn file(mut self, f: &str) -> Check {
        self.file = Some(f.to_string());
        self
    }

    fn seq(mut self, s: i64) -> Check {
        self.chain_seq = Some(s);
        self
    }

    fn audit(mut self, id: i64) -> Check {
        self.audit_id = Some(id);
        self
    }
}

impl fmt::Display for Check {
    /// `FAILED file_hash sessions/s/r.wav: …`, `ok     chain_entry entry 12: …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok { "ok    " } else { "FAILED" };
        write!(f, "{verdict} {}", self.kind.as_str())?;
        if let Some(file) = &self.file {
            write!(f, " {file}")?;
        }
        if let Some(seq) = self.chain_seq {
            write!(f, " chain entry {seq}")?;
        }
        if let Some(id) = self.audit_id {
            write!(f, " audit entry {id}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The result of checking a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The SHA-256 of the package file as read: what the audit log's
    /// `evidence_package.build` and `.download` entries record.
    pub package_sha256: String,
    pub package_bytes: u64,
    pub package_id: Option<String>,
    pub checks: Vec<Check>,
}

impl Report {
    /// Every check passed (and there was at least the manifest's).
    pub fn intact(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// What reading a package found: each member's hash and size, and the JSON members the
/// checks read.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// Members in archive order: name, SHA-256, size.
    pub members: Vec<(String, String, u64)>,
    pub manifest: Option<Vec<u8>>,
    pub chain: Option<Vec<u8>>,
    pub anchor: Option<Vec<u8>>,
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or(&[]);
        self.hash.update(read);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads a package: every member hashed, the JSON members the checks need kept.
pub fn read(input: impl Read) -> Result<(Contents, String, u64), TarError> {
    let mut whole = Hashing {
        inner: input,
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut c = Contents::default();
    tar::for_each(&mut whole, |m, body| {
        let keep = [MANIFEST, CHAIN, ANCHOR].contains(&m.name.as_str()) && m.size <= MAX_JSON;
        let mut h = Sha256::new();
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or(&[]);
            h.update(chunk);
            if keep {
                kept.extend_from_slice(chunk);
            }
        }
        let slot = match m.name.as_str() {
            MANIFEST => Some(&mut c.manifest),
            CHAIN => Some(&mut c.chain),
            ANCHOR => Some(&mut c.anchor),
            _ => None,
        };
        // A second member of the same name is not read: the file checks report it.
        if let Some(slot) = slot.filter(|s| keep && s.is_none()) {
            *slot = Some(kept);
        }
        c.members
            .push((m.name.clone(), hex::encode(h.finalize()), m.size));
        Ok(())
    })?;
    // What follows the end marker is read too, so the hash is the whole file's.
    io::copy(&mut whole, &mut io::sink())?;
    Ok((c, hex::encode(whole.hash.finalize()), whole.bytes))
}

/// Checks the package read from `input`.
pub fn verify(input: impl Read) -> Result<Report, TarError> {
    let (contents, sha, bytes) = read(input)?;
    let package_id = contents
        .manifest
        .as_deref()
        .and_then(|m| serde_json::from_slice::<Manifest>(m).ok())
        .map(|m| m.package_id);
    Ok(Report {
        package_sha256: sha,
        package_bytes: bytes,
        package_id,
        checks: check(&contents),
    })
}

/// Checks the package file at `path`.
pub fn verify_file(path: &Path) -> Result<Report, VerifyError> {
    let f = std::fs::File::open(path).map_err(|source| VerifyError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(verify(io::BufReader::with_capacity(256 * 1024, f))?)
}

/// Judges what [`read`] found: every check, in a stable order (manifest, files,
/// recordings against the chain, chain entries and links, the anchor).
pub fn check(c: &Contents) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(manifest) = manifest(c, &mut out) else {
        return out;
    };
    files(c, &manifest, &mut out);
    let entries = parse_member::<Vec<ChainEntry>>(c.chain.as_deref(), CHAIN, &mut out);
    let has_recordings = manifest.sessions.iter().any(|s| !s.recordings.is_empty());
    // A package without recordings (refused calls only) has nothing to anchor.
    let anchor = match (&c.anchor, has_recordings) {
        (None, false) => None,
        (a, _) => parse_member::<AnchorProof>(a.as_deref(), ANCHOR, &mut out),
    };
    let entries = entries.unwrap_or_default();
    let by_seq: BTreeMap<i64, &ChainEntry> = entries.iter().map(|e| (e.seq, e)).collect();
    for e in by_seq.values() {
        let ok = e.recomputed_link() == e.link;
        let detail = if ok {
            format!("its link {} recomputes from its fields", short(&e.link))
        } else {
            "its link does not recompute from its fields and the link before it: the entry was changed".to_string()
        };
        out.push(Check::new(CheckKind::ChainEntry, ok, detail).seq(e.seq));
    }
    let head_seq = anchor.as_ref().map(|a| a.head_seq);
    recordings(c, &manifest, &by_seq, head_seq, &mut out);
    if let Some(a) = &anchor {
        anchor_checks(a, &manifest, &by_seq, &mut out);
    }
    out
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

fn manifest(c: &Contents, out: &mut Vec<Check>) -> Option<Manifest> {
    let first = c.members.first().map(|m| m.0.as_str());
    let fail = |out: &mut Vec<Check>, d: String| {
        out.push(Check::new(CheckKind::Manifest, false, d).file(MANIFEST));
        None
    };
    if first != Some(MANIFEST) {
        return fail(
            out,
            format!("the first member is {first:?}, not {MANIFEST}"),
        );
    }
    let Some(bytes) = c.manifest.as_deref() else {
        return fail(out, "the manifest is too large to read".into());
    };
    let m: Manifest = match serde_json::from_slice(bytes) {
        Ok(m) => m,
        Err(e) => return fail(out, format!("the manifest does not parse: {e}")),
    };
    if m.format != FORMAT {
        return fail(out, format!("the format {:?} is not {FORMAT:?}", m.format));
    }
    out.push(
        Check::new(
            CheckKind::Manifest,
            true,
            format!(
                "package {} built {} by {}: {} session(s), {} file(s)",
                m.package_id,
                m.built_at.to_rfc3339(),
                m.built_by,
                m.sessions.len(),
                m.files.len()
            ),
        )
        .file(MANIFEST),
    );
    Some(m)
}

fn files(c: &Contents, m: &Manifest, out: &mut Vec<Check>) {
    let mut found: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (name, sha, size) in &c.members {
        found.entry(name).or_default().push((sha, *size));
    }
    for f in &m.files {
        let (ok, detail) = match found.get(f.path.as_str()).map(Vec::as_slice) {
            None | Some([]) => (false, "missing from the package".to_string()),
            Some([(sha, size)]) if *sha == f.sha256 && *size == f.bytes => {
                (true, format!("SHA-256 {sha}, {size} bytes"))
            }
            Some([(sha, size)]) => (
                false,
                format!(
                    "SHA-256 {sha} ({size} bytes) differs from the manifest's {} ({} bytes): the file was changed",
                    f.sha256, f.bytes
                ),
            ),
            Some(many) => (false, format!("the package holds it {} times", many.len())),
        };
        out.push(Check::new(CheckKind::FileHash, ok, detail).file(&f.path));
    }
    let listed: std::collections::HashSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for (name, _, _) in &c.members {
        if name != MANIFEST && !listed.contains(name.as_str()) {
            let d = "the manifest does not list it: it was added";
            out.push(Check::new(CheckKind::FileListed, false, d).file(name));
        }
    }
}

fn parse_member<T: serde::de::DeserializeOwned>(
    bytes: Option<&[u8]>,
    name: &str,
    out: &mut Vec<Check>,
) -> Option<T> {
    let Some(bytes) = bytes else {
        let d = "missing from the package (or too large to read)";
        out.push(Check::new(CheckKind::ChainFile, false, d).file(name));
        return None;
    };
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            let d = format!("does not parse: {e}");
            out.push(Check::new(CheckKind::ChainFile, false, d).file(name));
            None
        }
    }
}

fn recordings(
    c: &Contents,
    m: &Manifest,
    by_seq: &BTreeMap<i64, &ChainEntry>,
    head_seq: Option<i64>,
    out: &mut Vec<Check>,
) {
    let hashes: BTreeMap<&str, &str> = c
        .members
        .iter()
        .map(|(n, sha, _)| (n.as_str(), sha.as_str()))
        .collect();
    for r in m.sessions.iter().flat_map(|s| s.recordings.iter()) {
        let entry = by_seq
            .values()
            .find(|e| e.kind == "recording" && e.recording_id == r.id);
        let Some(e) = entry else {
            let d = format!(
                "recording {} has no chain entry in the package (the manifest says entry {}): the entry was removed",
                r.id, r.chain_seq
            );
            out.push(
                Check::new(CheckKind::RecordingHash, false, d)
                    .file(&r.file)
                    .seq(r.chain_seq),
            );
            continue;
        };
        let check = match hashes.get(r.file.as_str()) {
            None => Check::new(CheckKind::RecordingHash, false, "the file is missing"),
            Some(sha) if *sha == e.file_sha256 => Check::new(
                CheckKind::RecordingHash,
                true,
                format!("recording {}: SHA-256 {sha} is the chained hash", r.id),
            ),
            Some(sha) => Check::new(
                CheckKind::RecordingHash,
                false,
                format!(
                    "recording {}: SHA-256 {sha} differs from the chained {}: the file was changed",
                    r.id, e.file_sha256
                ),
            ),
        };
        out.push(check.file(&r.file).seq(e.seq));
        out.push(link_before(e, by_seq));
        out.push(link_after(e, by_seq, head_seq));
    }
}

/// The entry just before `e` in the package must be the one `e` follows.
fn link_before(e: &ChainEntry, by_seq: &BTreeMap<i64, &ChainEntry>) -> Check {
    let before = by_seq.range(..e.seq).next_back().map(|(_, p)| *p);
    let (ok, detail) = match before {
        _ if e.prev_link.is_empty() && before.is_none() => {
            (true, "it is the first entry of the chain".to_string())
        }
        Some(p) if p.link == e.prev_link => (true, format!("it follows entry {}", p.seq)),
        Some(p) => (
            false,
            format!(
                "chain break before entry {}: it does not follow entry {}, the entry before it in the package (the entry it follows, link {}, was removed or changed)",
                e.seq,
                p.seq,
                short(&e.prev_link)
            ),
        ),
        None => (
            false,
            format!(
                "chain break before entry {}: the entry it follows (link {}) is not in the package",
                e.seq,
                short(&e.prev_link)
            ),
        ),
    };
    Check::new(CheckKind::ChainLinkBefore, ok, detail).seq(e.seq)
}

/// The entry just after `e` in the package must follow it, unless `e` is the head.
fn link_after(e: &ChainEntry, by_seq: &BTreeMap<i64, &ChainEntry>, head: Option<i64>) -> Check {
    let after = by_seq
        .range(e.seq.saturating_add(1)..)
        .next()
        .map(|(_, n)| *n);
    let (ok, detail) = match after {
        Some(n) if n.prev_link == e.link => (true, format!("entry {} follows it", n.seq)),
        Some(n) => (
            false,
            format!(
                "chain break after entry {}: entry {}, the next in the package, does not follow it (the entry after it was removed or changed)",
                e.seq, n.seq
            ),
        ),
        None if head == Some(e.seq) => (true, "it is the anchored head".to_string()),
        None => (
            false,
            format!(
                "chain break after entry {}: no entry in the package follows it and it is not the anchored head",
                e.seq
            ),
        ),
    };
    Check::new(CheckKind::ChainLinkAfter, ok, detail).seq(e.seq)
}

fn anchor_checks(
    a: &AnchorProof,
    m: &Manifest,
    by_seq: &BTreeMap<i64, &ChainEntry>,
    out: &mut Vec<Check>,
) {
    for line in &a.audit {
        let ok = line.recomputed_hash() == line.hash;
        let detail = if ok {
            format!(
                "its hash {} recomputes ({})",
                short(&line.hash),
                line.action
            )
        } else {
            format!(
                "its hash does not recompute from its fields ({}): the entry was changed",
                line.action
            )
        };
        out.push(Check::new(CheckKind::AuditEntry, ok, detail).audit(line.id));
    }
    let Some(pos) = a.audit.iter().position(|l| l.id == a.anchor_audit_id) else {
        let d = format!(
            "the anchor's audit entry {} is not in {ANCHOR}",
            a.anchor_audit_id
        );
        out.push(Check::new(CheckKind::AnchorHead, false, d).audit(a.anchor_audit_id));
        return;
    };
    let line = &a.audit[pos];
    let before = pos.checked_sub(1).and_then(|i| a.audit.get(i));
    let (ok, detail) = match before {
        None if line.prev_hash.is_empty() => (true, "it is the audit log's first entry".into()),
        None => (
            false,
            "the audit entry before the anchor is not in the package".to_string(),
        ),
        Some(b) if b.hash == line.prev_hash => (true, format!("it follows audit entry {}", b.id)),
        Some(b) => (
            false,
            format!("audit chain break: it does not follow audit entry {}", b.id),
        ),
    };
    out.push(Check::new(CheckKind::AuditLink, ok, detail).audit(line.id));
    let detail = serde_json::from_str::<AnchorDetail>(&line.detail).ok();
    let head = by_seq.get(&a.head_seq);
    let (ok, text) = match (&detail, head) {
        _ if line.action != HEAD_ANCHOR_ACTION => (
            false,
            format!(
                "the audit entry is a {:?}, not a chain head anchor",
                line.action
            ),
        ),
        (None, _) => (false, "the anchor's detail does not parse".to_string()),
        (Some(d), _) if d.seq != a.head_seq || d.link != a.head_link => (
            false,
            format!(
                "the audit log anchored entry {} (link {}), not the head {ANCHOR} names",
                d.seq,
                short(&d.link)
            ),
        ),
        (Some(d), None) => (
            false,
            format!(
                "the anchored head, chain entry {}, is not in the package",
                d.seq
            ),
        ),
        (Some(d), Some(h)) if h.link != d.link => (
            false,
            format!(
                "chain entry {}'s link {} is not the anchored {}: the chain was rewritten",
                d.seq,
                short(&h.link),
                short(&d.link)
            ),
        ),
        (Some(d), Some(_)) => (
            true,
            format!(
                "the audit log anchored chain entry {} with link {} as the head",
                d.seq,
                short(&d.link)
            ),
        ),
    };
    out.push(
        Check::new(CheckKind::AnchorHead, ok, text)
            .audit(line.id)
            .seq(a.head_seq),
    );
    let last = m
        .sessions
        .iter()
        .flat_map(|s| s.recordings.iter())
        .map(|r| r.chain_seq)
        .max();
    if let Some(last) = last {
        let ok = last <= a.head_seq;
        let detail = if ok {
            format!(
                "the anchored head (entry {}) is at or after every packaged recording (the last at entry {last})",
                a.head_seq
            )
        } else {
            format!(
                "recording entry {last} is after the anchored head (entry {})",
                a.head_seq
            )
        };
        out.push(Check::new(CheckKind::AnchorCovers, ok, detail).seq(a.head_seq));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tar::{read_all, write_all};
    use super::super::*;
    use super::*;

    fn sha(d: &[u8]) -> String {
        hex::encode(Sha256::digest(d))
    }

    /// A chain of `n` entries, entry `i` (1-based) for recording `rec_i` with file bytes
    /// `file(i)`.
    fn chain(n: i64) -> Vec<ChainEntry> {
        let mut prev = String::new();
        (1..=n)
            .map(|i| {
                let mut e = ChainEntry {
                    seq: i,
                    at: 1_700_000_000_000_000 + i,
                    kind: "recording".into(),
                    recording_id: format!("rec_{i}"),
                    file_sha256: sha(&file(i)),
                    metadata: format!("{{\"session_id\":\"ses_{i}\"}}"),
                    prev_link: prev.clone(),
                    link: String::new(),
                };
                e.link = e.recomputed_link();
                prev = e.link.clone();
                e
            })
            .collect()
    }

    fn file(i: i64) -> Vec<u8> {
        (0..1000).map(|b| (b as i64 * i % 251) as u8).collect()
    }

    fn anchor(head: &ChainEntry) -> AnchorProof {
        let mut before = AuditLine {
            id: 7,
            at: 1,
            actor: "inv".into(),
            action: "call.search".into(),
            target: "calls".into(),
            facility_id: Some("F1".into()),
            detail: "{}".into(),
            remote_addr: None,
            prev_hash: String::new(),
            hash: String::new(),
        };
        before.hash = before.recomputed_hash();
        let mut a = AuditLine {
            id: 8,
            at: 2,
            actor: "system".into(),
            action: HEAD_ANCHOR_ACTION.into(),
            target: "recording_chain".into(),
            facility_id: None,
            detail: serde_json::json!({"seq": head.seq, "link": head.link}).to_string(),
            remote_addr: None,
            prev_hash: before.hash.clone(),
            hash: String::new(),
        };
        a.hash = a.recomputed_hash();
        AnchorProof {
            head_seq: head.seq,
            head_link: head.link.clone(),
            anchor_audit_id: 8,
            audit: vec![before, a],
        }
    }

    /// A package of recordings 2, 3 and 4 of a chain of 5 (entries 1 to 5 included), the
    /// head (5) anchored.
    fn package(entries: &[ChainEntry], proof: &AnchorProof) -> Vec<(String, Vec<u8>)> {
        let mut members = vec![
            (CHAIN.to_string(), serde_json::to_vec(entries).unwrap()),
            (ANCHOR.to_string(), serde_json::to_vec(proof).unwrap()),
        ];
        let mut sessions = Vec::new();
        for i in 2..=4 {
            let path = format!("sessions/ses_{i}/rec_{i}.wav");
            members.push((path.clone(), file(i)));
            sessions.push(PackagedSession {
                id: format!("ses_{i}"),
                kind: "call".into(),
                facility_id: "F1".into(),
                dir: format!("sessions/ses_{i}"),
                recordings: vec![PackagedRecording {
                    id: format!("rec_{i}"),
                    file: path,
                    chain_seq: i,
                    participant: "both".into(),
                }],
                omitted: Vec::new(),
            });
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            package_id: "evp_1".into(),
            built_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            built_by: "inv".into(),
            reason: "case 1".into(),
            sessions,
            files: members
                .iter()
                .map(|(p, d)| PackagedFile {
                    path: p.clone(),
                    sha256: sha(d),
                    bytes: d.len() as u64,
                })
                .collect(),
        };
        members.insert(
            0,
            (MANIFEST.to_string(), serde_json::to_vec(&manifest).unwrap()),
        );
        members
    }

    fn run(members: &[(String, Vec<u8>)]) -> Report {
        verify(&write_all(members, 0).unwrap()[..]).unwrap()
    }

    fn failed(r: &Report) -> Vec<(CheckKind, Option<String>, Option<i64>)> {
        r.failures()
            .map(|c| (c.kind, c.file.clone(), c.chain_seq))
            .collect()
    }

    #[test]
    fn an_untouched_package_is_intact_and_every_check_is_named() {
        let entries = chain(5);
        let members = package(&entries, &anchor(&entries[4]));
        let tar = write_all(&members, 0).unwrap();
        let r = verify(&tar[..]).unwrap();
        assert!(r.intact(), "{:#?}", r.checks);
        assert_eq!(r.package_sha256, sha(&tar));
        assert_eq!(r.package_id.as_deref(), Some("evp_1"));
        let kinds: std::collections::HashSet<_> = r.checks.iter().map(|c| c.kind).collect();
        for k in [
            CheckKind::Manifest,
            CheckKind::FileHash,
            CheckKind::RecordingHash,
            CheckKind::ChainEntry,
            CheckKind::ChainLinkBefore,
            CheckKind::ChainLinkAfter,
            CheckKind::AuditEntry,
            CheckKind::AuditLink,
            CheckKind::AnchorHead,
            CheckKind::AnchorCovers,
        ] {
            assert!(kinds.contains(&k), "{k:?} not checked");
        }
        // The tar round-trips through the reader unchanged.
        assert_eq!(read_all(&tar[..]).unwrap(), members);
    }

    #[test]
    fn a_flipped_byte_names_the_recording_file() {
        let entries = chain(5);
        let mut members = package(&entries, &anchor(&entries[4]));
        let rec = members
            .iter_mut()
            .find(|(p, _)| p == "sessions/ses_3/rec_3.wav")
            .unwrap();
        rec.1[500] ^= 0x01;
        let r = run(&members);
        assert!(!r.intact());
        let f = Some("sessions/ses_3/rec_3.wav".to_string());
        assert_eq!(
            failed(&r),
            vec![
                (CheckKind::FileHash, f.clone(), None),
                (CheckKind::RecordingHash, f, Some(3)),
            ]
        );
    }

    #[test]
    fn a_removed_chain_entry_names_the_break() {
        let entries = chain(5);
        let proof = anchor(&entries[4]);
        let mut members = package(&entries, &proof);
        // Entry 3 goes, and the manifest is rewritten to hide it: the links still tell.
        let without: Vec<_> = entries.iter().filter(|e| e.seq != 3).cloned().collect();
        members[1].1 = serde_json::to_vec(&without).unwrap();
        let mut m: Manifest = serde_json::from_slice(&members[0].1).unwrap();
        m.files[0].sha256 = sha(&members[1].1);
        m.files[0].bytes = members[1].1.len() as u64;
        members[0].1 = serde_json::to_vec(&m).unwrap();
        let r = run(&members);
        let f = failed(&r);
        assert!(
            f.contains(&(
                CheckKind::RecordingHash,
                Some("sessions/ses_3/rec_3.wav".into()),
                Some(3)
            )),
            "{f:?}"
        );
        assert!(
            f.contains(&(CheckKind::ChainLinkAfter, None, Some(2))),
            "{f:?}"
        );
        assert!(
            f.contains(&(CheckKind::ChainLinkBefore, None, Some(4))),
            "{f:?}"
        );
        let text: Vec<String> = r.failures().map(|c| c.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("chain break before entry 4")),
            "{text:?}"
        );
    }

    #[test]
    fn an_edited_entry_and_a_rewritten_anchor_are_named() {
        let entries = chain(5);
        let mut edited = entries.clone();
        edited[1].metadata = "{\"session_id\":\"ses_X\"}".into();
        let proof = anchor(&entries[4]);
        let r = run(&package(&edited, &proof));
        assert!(failed(&r).contains(&(CheckKind::ChainEntry, None, Some(2))));
        let mut proof2 = proof.clone();
        proof2.audit[1].detail = serde_json::json!({"seq": 5, "link": "00"}).to_string();
        let r = run(&package(&entries, &proof2));
        let kinds: Vec<_> = r.failures().map(|c| c.kind).collect();
        assert!(kinds.contains(&CheckKind::AuditEntry), "{kinds:?}");
        assert!(kinds.contains(&CheckKind::AnchorHead), "{kinds:?}");
        // An anchor older than a packaged recording does not cover it.
        let old = anchor(&entries[2]);
        let r = run(&package(&entries, &old));
        let kinds: Vec<_> = r.failures().map(|c| c.kind).collect();
        assert!(kinds.contains(&CheckKind::AnchorCovers), "{kinds:?}");
    }

    #[test]
    fn added_and_missing_members_and_a_foreign_file_are_refused() {
        let entries = chain(5);
        let mut members = package(&entries, &anchor(&entries[4]));
        members.push(("extra.txt".into(), b"x".to_vec()));
        members.retain(|(p, _)| p != "sessions/ses_2/rec_2.wav");
        let r = run(&members);
        let f = failed(&r);
        assert!(f.contains(&(CheckKind::FileListed, Some("extra.txt".into()), None)));
        assert!(f.contains(&(
            CheckKind::FileHash,
            Some("sessions/ses_2/rec_2.wav".into()),
            None
        )));
        let r = run(&[("hello.txt".into(), b"hi".to_vec())]);
        assert_eq!(failed(&r)[0].0, CheckKind::Manifest);
        assert!(verify(&b"not a tar at all"[..]).is_err());
    }
}
