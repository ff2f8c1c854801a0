//! Evidence packages: the sessions an investigator selects, with their recordings, their
//! records and charges, and the proof that the recordings are the ones the gateway made,
//! in one tar file that a court's expert can check without sallyport's database or
//! network (`sallyport verify-package FILE`, or by hand with `sha256sum`: `VERIFY.txt` in
//! every package, `docs/evidence.md`).
//!
//! Owns: the package format ([`Manifest`] and the members named below), building a
//! package from the store ([`build`], a driver: database reads, file copies), and checking
//! one ([`verify`], pure: bytes in, a [`Report`] out, no database, no network, no clock).
//!
//! A package (format [`FORMAT`]) holds, in this order:
//!
//! | member | what |
//! |---|---|
//! | `manifest.json` | package id, when built, by whom, why, the sessions and their recordings, and every other member with its SHA-256 and size |
//! | `VERIFY.txt` | how to check the package by hand |
//! | `notes.json` | investigators' notes on the sessions: the notes and bookmarks of the packaged sessions as they stood when it was built (current versions, deleted ones left out), by session then moment |
//! | `sessions.csv` | one line per session: its record (CDR) |
//! | `sessions/<id>/cdr.json` | the session's record (CDR), as `GET /calls/{id}` gives it |
//! | `sessions/<id>/visit.json`, `timeline.json` | a visit's booking and timeline (visits only) |
//! | `sessions/<id>/charges.json`, `charges.csv` | the ledger's debits for the session |
//! | `sessions/<id>/<recording id>.wav` / `.webm` | the recording files, byte for byte |
//! | `chain/entries.json` | the recordings hash chain's entries of those recordings, the entry before and after each, and the anchored head entry ([`ChainEntry`]) |
//! | `chain/anchor.json` | the chain head anchored in the audit log when the package was built: the anchor's audit entry and the audit entry before it, with their hash links ([`AnchorProof`]) |
//!
//! **Stored, not rebuilt.** A package is built once (`POST /api/v1/evidence-packages`)
//! and kept under `<recording dir>/evidence/<id>.tar`; a download serves those bytes. A
//! package rebuilt on each download would differ every time (its build time, a fresher
//! anchor), so the SHA-256 the audit log records for a download would name a file nobody
//! can produce again, and a recording purged by retention meanwhile would be gone from
//! it. A stored package is what a chain of custody needs: one file, one hash, audited at
//! every hand-over. Packages are not purged by the recording retention (they are held
//! for a case); an operator removes them when the case closes.
//!
//! **What the proof covers.** Each recording's file hashes to the SHA-256 its chain entry
//! froze; that entry's link recomputes from its fields and the link before it
//! (`SHA-256` over length-prefixed fields: [`ChainEntry::recomputed_link`]); the entries
//! around it in the package link to it; the audit log anchored the chain's head (an entry
//! at or after every packaged recording) in an audit entry whose own hash recomputes and
//! follows the audit entry before it. The entries between a recording's neighbours and the
//! head are not in the package (a busy gateway has millions; they hold other sessions'
//! facts): the anchor's audit entry pins the head, and `sallyport verify-recordings` on
//! the gateway walks the whole chain between.
//!
//! Called by: the evidence routes of [`crate::api`], `sallyport verify-package`
//! ([`crate::cli`]), and the tests.

pub mod build;
pub mod tar;
pub mod verify;

use crate::store::{audit_link, chain_link, AuditFields, ChainFields};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use build::{build, Built, EvidenceError, PackageRequest};
pub use verify::{verify, verify_file, Check, CheckKind, Report, VerifyError};

/// The format a package's manifest declares.
pub const FORMAT: &str = "sallyport-evidence-package/1";
/// The manifest: the first member.
pub const MANIFEST: &str = "manifest.json";
/// The chain entries.
pub const CHAIN: &str = "chain/entries.json";
/// The head anchor.
pub const ANCHOR: &str = "chain/anchor.json";
/// How to verify by hand.
pub const VERIFY_TXT: &str = "VERIFY.txt";
/// Investigators' notes on the packaged sessions.
pub const NOTES: &str = "notes.json";
/// The sessions' records as one table.
pub const SESSIONS_CSV: &str = "sessions.csv";
/// The most sessions one package holds.
pub const MAX_SESSIONS: usize = 50;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    pub package_id: String,
    pub built_at: DateTime<Utc>,
    /// Who asked for it (the user or token subject, as the audit log names them).
    pub built_by: String,
    /// Why, as the investigator gave it (the case, the request).
    pub reason: String,
    pub sessions: Vec<PackagedSession>,
    /// Every member but the manifest itself.
    pub files: Vec<PackagedFile>,
}

/// One session of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagedSession {
    pub id: String,
    /// `call` or `visit`.
    pub kind: String,
    pub facility_id: String,
    /// Its folder in the package (`sessions/<id>`).
    pub dir: String,
    pub recordings: Vec<PackagedRecording>,
    /// Recordings of the session the package does not hold, and why (purged by retention,
    /// still recording).
    #[serde(default)]
    pub omitted: Vec<OmittedRecording>,
}

/// One recording file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagedRecording {
    pub id: String,
    /// The member holding it.
    pub file: String,
    /// Its chain entry's `seq`.
    pub chain_seq: i64,
    /// `both` (a call's two channels), `inmate` or `visitor` (one side of a visit).
    pub participant: String,
}

/// A recording left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OmittedRecording {
    pub id: String,
    pub status: String,
    pub why: String,
}

/// One member with its hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagedFile {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

pub use crate::recording::chain::ChainEntry;

impl ChainEntry {
    /// `SHA-256(len(prev_link) ‖ prev_link ‖ len(at) ‖ at ‖ len(kind) ‖ kind ‖
    /// len(recording_id) ‖ recording_id ‖ len(file_sha256) ‖ file_sha256 ‖ len(metadata) ‖
    /// metadata)`, hex; each length 8 bytes big-endian, `at` in decimal: what the gateway
    /// computed when it appended the entry.
    pub fn recomputed_link(&self) -> String {
        chain_link(
            &self.prev_link,
            &ChainFields {
                at: self.at,
                kind: &self.kind,
                recording_id: &self.recording_id,
                file_sha256: &self.file_sha256,
                metadata: &self.metadata,
            },
        )
    }
}

/// One entry of the audit log, every field as stored (`audit_log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    pub id: i64,
    /// Microseconds since the Unix epoch, as the hash covered it.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub facility_id: Option<String>,
    /// The exact JSON text the hash covered.
    pub detail: String,
    pub remote_addr: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditLine {
    /// The audit log's link: like the chain's ([`ChainEntry::recomputed_link`]) over
    /// `prev_hash, at, actor, action, target, facility_id, detail, remote_addr`, an absent
    /// field (`null`) hashed as the 8 bytes `FF FF FF FF FF FF FF FF` and nothing else.
    pub fn recomputed_hash(&self) -> String {
        audit_link(
            &self.prev_hash,
            &AuditFields {
                at: self.at,
                actor: &self.actor,
                action: &self.action,
                target: &self.target,
                facility_id: self.facility_id.as_deref(),
                detail: &self.detail,
                remote_addr: self.remote_addr.as_deref(),
            },
        )
    }
}

/// `chain/anchor.json`: the chain head the audit log anchored when the package was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorProof {
    /// The anchored head: its `seq` and `link` (the anchor entry's `detail` says the same).
    pub head_seq: i64,
    pub head_link: String,
    /// The anchor's audit entry id.
    pub anchor_audit_id: i64,
    /// The audit entry before the anchor (absent when the anchor is the log's first entry)
    /// and the anchor, in order.
    pub audit: Vec<AuditLine>,
}

/// What an anchor's `detail` holds.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AnchorDetail {
    pub(crate) seq: i64,
    pub(crate) link: String,
}
