//! Building a package: the driver half. Reads the sessions' charges, recordings and chain
//! entries, anchors the chain head in the audit log, and writes the tar under
//! `<recording dir>/evidence/` (to a `.part` file renamed when complete, so a package
//! that exists is whole). The package is checked with [`super::verify`] as soon as it is
//! written: the answer says whether it verifies.
//!
//! The caller (the API) has already decided who may package which sessions: this module
//! refuses nothing but what it cannot do.

use super::tar::{TarError, Writer};
use super::verify::{verify_file, Report, VerifyError};
use super::{
    AnchorProof, AuditLine, ChainEntry, Manifest, OmittedRecording, PackagedFile,
    PackagedRecording, PackagedSession, ANCHOR, CHAIN, FORMAT, MANIFEST, NOTES, SESSIONS_CSV,
    VERIFY_TXT,
};
use crate::ledger::LedgerError;
use crate::recording::chain::ENTRY_COLUMNS;
use crate::recording::chain::{anchor_head, resolve, ChainError, HEAD_ANCHOR_ACTION};
use crate::recording::MediaKind;
use crate::store::{new_id, Cdr, Recording, RecordingStatus, Store, StoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::BTreeMap;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

/// The folder of packages under the recordings directory.
pub const PACKAGES_DIR: &str = "evidence";

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("serializing the package: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the package writer stopped: {0}")]
    Task(String),
}

impl From<sqlx::Error> for EvidenceError {
    fn from(e: sqlx::Error) -> EvidenceError {
        EvidenceError::Store(StoreError::Db(e))
    }
}

/// What to package: sessions already checked by the caller (ended, not privileged, in
/// scope), who asks and why.
#[derive(Debug, Clone, Copy)]
pub struct PackageRequest<'a> {
    pub sessions: &'a [Cdr],
    pub built_by: &'a str,
    pub reason: &'a str,
}

/// A package built and checked.
#[derive(Debug, Clone)]
pub struct Built {
    pub id: String,
    pub path: PathBuf,
    pub manifest: Manifest,
    /// The check of the file as written (its `package_sha256` is the file's hash).
    pub report: Report,
}

/// Where package `id` is stored; `None` for an id that is not one [`build`] makes
/// (`evp_` and lowercase hex), so no request can name another file.
pub fn package_path(rec_dir: &Path, id: &str) -> Option<PathBuf> {
    let hex = id.strip_prefix("evp_")?;
    let ok = !hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| rec_dir.join(PACKAGES_DIR).join(format!("{id}.tar")))
}

/// Where a member's bytes come from.
enum Source {
    Data(Vec<u8>),
    File(PathBuf),
}

struct Pending {
    path: String,
    source: Source,
}

const AUDIT_COLUMNS: &str =
    "id, at, actor, action, target, facility_id, detail, remote_addr, prev_hash, hash";

fn audit_line(r: &sqlx::any::AnyRow) -> Result<AuditLine, sqlx::Error> {
    Ok(AuditLine {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        facility_id: r.try_get("facility_id")?,
        detail: r.try_get("detail")?,
        remote_addr: r.try_get("remote_addr")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// A session's folder name: its id when that is a plain name, else its position.
fn folder(id: &str, index: usize) -> String {
    let plain = !id.is_empty()
        && id.len() <= 80
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        id.to_string()
    } else {
        format!("session-{}", index + 1)
    }
}

/// Builds, stores and checks a package of `req.sessions`.
pub async fn build(
    store: &Store,
    rec_dir: &Path,
    req: PackageRequest<'_>,
) -> Result<Built, EvidenceError> {
    let id = new_id("evp");
    let built_at = store.clock().wall();
    let mut pending = Vec::new();
    let mut sessions = Vec::new();
    let mut chained: Vec<(i64, String)> = Vec::new();
    let mut cdrs = Vec::new();
    for (i, cdr) in req.sessions.iter().enumerate() {
        let dir = format!("sessions/{}", folder(&cdr.id, i));
        let cdr_value = serde_json::to_value(cdr)?;
        pending.push(data(format!("{dir}/cdr.json"), pretty(&cdr_value)?));
        let charges = store.ledger().session_charges(&cdr.id).await?;
        let charges = serde_json::to_value(&charges)?;
        pending.push(data(format!("{dir}/charges.json"), pretty(&charges)?));
        let rows = charges.as_array().cloned().unwrap_or_default();
        pending.push(data(
            format!("{dir}/charges.csv"),
            csv_of(CHARGE_COLUMNS, &rows)?,
        ));
        cdrs.push(cdr_value);
        if cdr.kind == "visit" {
            pending.extend(visit_members(store, cdr, &dir).await?);
        }
        let mut packaged = Vec::new();
        let mut omitted = Vec::new();
        for rec in store.session_recordings(&cdr.id).await? {
            match file_of(rec_dir, &rec) {
                Ok((seq, file)) => {
                    let ext = MediaKind::of_recording(&rec.format, &rec.path)
                        .map_or("bin", MediaKind::extension);
                    let member = format!("{dir}/{}.{ext}", folder(&rec.id, packaged.len()));
                    pending.push(Pending {
                        path: member.clone(),
                        source: Source::File(file),
                    });
                    chained.push((seq, rec.id.clone()));
                    packaged.push(PackagedRecording {
                        id: rec.id.clone(),
                        file: member,
                        chain_seq: seq,
                        participant: rec.participant.as_str().to_string(),
                    });
                }
                Err(why) => omitted.push(OmittedRecording {
                    id: rec.id.clone(),
                    status: rec.status.as_str().to_string(),
                    why,
                }),
            }
        }
        sessions.push(PackagedSession {
            id: cdr.id.clone(),
            kind: cdr.kind.clone(),
            facility_id: cdr.facility_id.clone(),
            dir,
            recordings: packaged,
            omitted,
        });
    }
    let (entries, anchor) = proof(store, &chained).await?;
    let ids: Vec<String> = req.sessions.iter().map(|c| c.id.clone()).collect();
    let notes = serde_json::to_value(store.notes_of_sessions(&ids).await?)?;
    let mut head = vec![
        data(VERIFY_TXT.into(), verify_text(&id).into_bytes()),
        data(NOTES.into(), pretty(&notes)?),
        data(SESSIONS_CSV.into(), csv_of(SESSION_COLUMNS, &cdrs)?),
        data(CHAIN.into(), pretty(&serde_json::to_value(&entries)?)?),
    ];
    if let Some(a) = &anchor {
        head.push(data(ANCHOR.into(), pretty(&serde_json::to_value(a)?)?));
    }
    head.append(&mut pending);
    let manifest_base = Manifest {
        format: FORMAT.into(),
        package_id: id.clone(),
        built_at,
        built_by: req.built_by.to_string(),
        reason: req.reason.to_string(),
        sessions,
        files: Vec::new(),
    };
    let path = rec_dir.join(PACKAGES_DIR).join(format!("{id}.tar"));
    let out = path.clone();
    let mtime = u64::try_from(built_at.timestamp()).unwrap_or(0);
    let (manifest, report) =
        tokio::task::spawn_blocking(move || write_package(&out, manifest_base, head, mtime))
            .await
            .map_err(|e| EvidenceError::Task(e.to_string()))??;
    Ok(Built {
        id,
        path,
        manifest,
        report,
    })
}

/// A visit's booking (`visit.json`, when it still exists) and timeline (`timeline.json`:
/// joined, media, dropped, paused, resumed, left, with the side), as `GET /calls/{id}`
/// shows them.
async fn visit_members(store: &Store, cdr: &Cdr, dir: &str) -> Result<Vec<Pending>, EvidenceError> {
    let mut out = Vec::new();
    if let Some(visit_id) = cdr.visit_id.as_deref() {
        match store.visit(visit_id).await {
            Ok(v) => out.push(data(
                format!("{dir}/visit.json"),
                pretty(&serde_json::to_value(&v)?)?,
            )),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let timeline = serde_json::to_value(store.session_events(&cdr.id).await?)?;
    out.push(data(format!("{dir}/timeline.json"), pretty(&timeline)?));
    Ok(out)
}

fn data(path: String, bytes: Vec<u8>) -> Pending {
    Pending {
        path,
        source: Source::Data(bytes),
    }
}

fn pretty(v: &Value) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec_pretty(v)?;
    out.push(b'\n');
    Ok(out)
}

/// The chain entry `seq` and file of a finished recording, or why it is left out.
fn file_of(rec_dir: &Path, rec: &Recording) -> Result<(i64, PathBuf), String> {
    match (rec.status, rec.chain_seq) {
        (RecordingStatus::Complete | RecordingStatus::Incomplete, Some(seq)) => {
            match resolve(rec_dir, &rec.path) {
                Some(p) => Ok((seq, p)),
                None => Err("its stored path is not inside the recordings directory".into()),
            }
        }
        (RecordingStatus::Purged, _) => Err("removed by the retention policy".into()),
        (RecordingStatus::Recording, _) => Err("still recording".into()),
        _ => Err("it has no chain entry".into()),
    }
}

/// The chain entries of the recordings (`(seq, id)`), the entry before and after each,
/// and the head, anchored in the audit log now; with the anchor's proof. No anchor when
/// the chain is empty.
async fn proof(
    store: &Store,
    recordings: &[(i64, String)],
) -> Result<(Vec<ChainEntry>, Option<AnchorProof>), EvidenceError> {
    let pool = store.db().pool();
    if anchor_head(store).await?.is_none() {
        return Ok((Vec::new(), None));
    }
    let Some(anchor) = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE action = $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(HEAD_ANCHOR_ACTION)
    .fetch_optional(pool)
    .await?
    else {
        return Ok((Vec::new(), None));
    };
    let anchor = audit_line(&anchor)?;
    let detail: super::AnchorDetail = serde_json::from_str(&anchor.detail)?;
    let before = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(anchor.id)
    .fetch_optional(pool)
    .await?;
    let mut audit = Vec::new();
    if let Some(b) = before {
        audit.push(audit_line(&b)?);
    }
    let anchor_id = anchor.id;
    audit.push(anchor);
    let mut entries: BTreeMap<i64, ChainEntry> = BTreeMap::new();
    let at = format!("SELECT {ENTRY_COLUMNS} FROM recording_chain WHERE seq = $1");
    let before = format!(
        "SELECT {ENTRY_COLUMNS} FROM recording_chain WHERE seq < $1 ORDER BY seq DESC LIMIT 1"
    );
    let after = format!(
        "SELECT {ENTRY_COLUMNS} FROM recording_chain WHERE seq > $1 AND seq <= $2 \
         ORDER BY seq LIMIT 1"
    );
    let mut wanted = vec![detail.seq];
    wanted.extend(recordings.iter().map(|(seq, _)| *seq));
    for seq in wanted {
        let rows = [
            sqlx::query(&at).bind(seq).fetch_optional(pool).await?,
            sqlx::query(&before).bind(seq).fetch_optional(pool).await?,
            sqlx::query(&after)
                .bind(seq)
                .bind(detail.seq)
                .fetch_optional(pool)
                .await?,
        ];
        for r in rows.iter().flatten() {
            let e = ChainEntry::from_row(r)?;
            entries.insert(e.seq, e);
        }
    }
    Ok((
        entries.into_values().collect(),
        Some(AnchorProof {
            head_seq: detail.seq,
            head_link: detail.link,
            anchor_audit_id: anchor_id,
            audit,
        }),
    ))
}

/// SHA-256 and size of a member's bytes.
fn measure(source: &Source) -> Result<(String, u64), EvidenceError> {
    match source {
        Source::Data(d) => Ok((hex::encode(Sha256::digest(d)), d.len() as u64)),
        Source::File(p) => {
            let io = |source| EvidenceError::Io {
                path: p.clone(),
                source,
            };
            let mut f = std::fs::File::open(p).map_err(io)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut len = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                h.update(buf.get(..n).unwrap_or(&[]));
                len += n as u64;
            }
            Ok((hex::encode(h.finalize()), len))
        }
    }
}

/// Hashes every member, writes the manifest and the members to `out` (through a `.part`
/// file), and checks the result.
fn write_package(
    out: &Path,
    mut manifest: Manifest,
    members: Vec<Pending>,
    mtime: u64,
) -> Result<(Manifest, Report), EvidenceError> {
    let mut sizes = Vec::with_capacity(members.len());
    for m in &members {
        let (sha256, bytes) = measure(&m.source)?;
        sizes.push(bytes);
        manifest.files.push(PackagedFile {
            path: m.path.clone(),
            sha256,
            bytes,
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvidenceError::Io { path, source }
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let part = out.with_extension("tar.part");
    let written = write_tar(&part, &manifest, &members, &sizes, mtime)
        .and_then(|()| std::fs::rename(&part, out).map_err(io(out)));
    if let Err(e) = written {
        // A package that exists is whole: what was half written goes.
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    let report = verify_file(out)?;
    Ok((manifest, report))
}

/// The manifest then every member, into `part`, synced.
fn write_tar(
    part: &Path,
    manifest: &Manifest,
    members: &[Pending],
    sizes: &[u64],
    mtime: u64,
) -> Result<(), EvidenceError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvidenceError::Io { path, source }
    };
    let file = std::fs::File::create(part).map_err(io(part))?;
    let mut w = Writer::new(BufWriter::with_capacity(256 * 1024, file), mtime);
    w.bytes(MANIFEST, &pretty(&serde_json::to_value(manifest)?)?)?;
    for (m, size) in members.iter().zip(sizes) {
        match &m.source {
            Source::Data(d) => w.bytes(&m.path, d)?,
            Source::File(p) => {
                let mut f = std::fs::File::open(p).map_err(io(p))?;
                w.stream(&m.path, *size, &mut f)?;
            }
        }
    }
    let file = w.finish()?.into_inner().map_err(|e| EvidenceError::Io {
        path: part.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(part))?;
    Ok(())
}

/// The columns of `charges.csv`, in order.
const CHARGE_COLUMNS: &[&str] = &[
    "increment",
    "at",
    "kind",
    "account_id",
    "amount",
    "balance_after",
    "transaction_id",
];

/// The columns of `sessions.csv`, in order.
const SESSION_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "facility_id",
    "inmate_id",
    "number",
    "dialed",
    "contact_id",
    "state",
    "end_reason",
    "privileged",
    "recorded",
    "recording_id",
    "visit_id",
    "invite_at",
    "answer_at",
    "accepted_at",
    "end_at",
    "billed_increments",
    "amount",
    "account_id",
    "node_id",
    "inmate_name",
    "booking_number",
    "housing_unit",
    "contact_name",
    "contact_relationship",
    "time_zone",
    "duration_secs",
    "terminated_by",
];

/// A CSV table of `columns` from JSON objects: text as it is, numbers and booleans as
/// JSON writes them, `null` empty, anything else as its JSON text.
fn csv_of(columns: &[&str], rows: &[Value]) -> Result<Vec<u8>, EvidenceError> {
    let csv_err = |e: csv::Error| EvidenceError::Io {
        path: PathBuf::from("<csv>"),
        source: std::io::Error::other(e.to_string()),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(columns).map_err(csv_err)?;
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match row.get(*c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            })
            .collect();
        w.write_record(&cells).map_err(csv_err)?;
    }
    w.into_inner().map_err(|e| EvidenceError::Io {
        path: PathBuf::from("<csv>"),
        source: std::io::Error::other(e.to_string()),
    })
}

/// `VERIFY.txt`.
fn verify_text(id: &str) -> String {
    format!(
        "Evidence package {id} ({FORMAT})
==========================================================================

Checking it with sallyport (no database, no network, no configuration):

    sallyport verify-package {id}.tar

Checking it by hand (tar, sha256sum, and any SHA-256 over bytes):

1. Unpack:  tar -xf {id}.tar
2. Files:   every member but manifest.json is listed in manifest.json under
            \"files\" with its SHA-256 and size. `sha256sum FILE` must print the
            listed hash for each.
3. Recordings: each recording in manifest.json (\"sessions\" -> \"recordings\")
            names its file and its chain entry (\"chain_seq\"). In
            chain/entries.json, that entry's \"file_sha256\" must equal
            `sha256sum` of the file.
4. Chain:   each entry's \"link\" is SHA-256 over, in order,
                prev_link, at, kind, recording_id, file_sha256, metadata
            each written as its length in bytes (8 bytes, big-endian) then its
            UTF-8 bytes; `at` (microseconds since 1970) written in decimal.
            An entry follows the one before it when its \"prev_link\" is that
            entry's \"link\"; the first entry of the chain has prev_link \"\".
            The entries around each recording must follow each other.
5. Anchor:  chain/anchor.json holds the audit log's entry that anchored the
            chain head (action \"{HEAD_ANCHOR_ACTION}\", detail {{\"link\",\"seq\"}})
            and the audit entry before it. Its \"hash\" is SHA-256 over
                prev_hash, at, actor, action, target, facility_id, detail, remote_addr
            written the same way, except that an absent (null) field is the 8
            bytes FF FF FF FF FF FF FF FF alone. Its prev_hash must be the hash
            of the audit entry before it, and the detail's seq and link must be
            those of the head entry in chain/entries.json, at or after every
            packaged recording's entry.

The package's own SHA-256 (sha256sum {id}.tar) is written in the gateway's
audit log when it is built (evidence_package.build) and at every download
(evidence_package.download).

notes.json holds investigators' notes and bookmarks on the sessions as they
stood when the package was built (each with its session_id, the moment start_ms
and end_ms in milliseconds into the recording, the text, its version and who
wrote it); its SHA-256 is in the manifest like every other file's.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_paths_accept_only_built_ids() {
        let dir = Path::new("/rec");
        assert_eq!(
            package_path(dir, "evp_0193ab"),
            Some(PathBuf::from("/rec/evidence/evp_0193ab.tar"))
        );
        for bad in ["evp_", "evp_../x", "evp_ABC", "x_01", "evp_01/..", ""] {
            assert_eq!(package_path(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn session_folders_are_plain_names() {
        assert_eq!(folder("ses_01", 0), "ses_01");
        assert_eq!(folder("..", 1), "session-2");
        assert_eq!(folder("a/b", 2), "session-3");
    }

    #[test]
    fn csv_cells_follow_the_columns() {
        let rows = vec![serde_json::json!({"increment": 1, "amount": "0.21", "kind": null})];
        let out = csv_of(&["increment", "amount", "kind"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "increment,amount,kind\n1,0.21,\n"
        );
    }
}
