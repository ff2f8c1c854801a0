//! The recordings hash chain on SQLite and PostgreSQL: a clean chain verifies; a file
//! changed, removed, swapped or added, a chain entry deleted, moved or edited behind the
//! triggers, and a row edited are each named with the recording and the file; the
//! retention purge honours each facility's period, keeps the chain verifiable and purges
//! once when runs race; `sallyport verify-recordings` exits 1 naming the recording; the
//! verify endpoints are scoped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::BodyExt;
use sallyport::api::{router, AppState};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::{Backend, Db};
use sallyport::recording::chain::{self, ChainReport, Phase, ProblemKind};
use sallyport::recording::retention;
use sallyport::session::cdr::{open_call, NewSession};
use sallyport::store::{
    FinishedRecording, NewFacility, NewRecording, RecordingStatus, Role, Store,
};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const DAY: Duration = Duration::from_secs(86_400);

struct Env {
    t: TestDb,
    store: Store,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
    backend: Backend,
}

/// One recording made by the test: its id and path relative to the directory.
#[derive(Debug, Clone)]
struct Rec {
    id: String,
    path: String,
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn facility(id: &str, retention_days: i64) -> NewFacility {
    NewFacility {
        id: id.into(),
        name: id.into(),
        time_zone: "UTC".into(),
        country_code: "1".into(),
        cap_category: "prison".into(),
        calling_hours_start: "00:00".into(),
        calling_hours_end: "00:00".into(),
        deposit_max: "100".parse().unwrap(),
        deposit_daily_max: "100".parse().unwrap(),
        daily_call_limit: 0,
        recording_retention_days: retention_days,
    }
}

impl Env {
    /// Facilities F1 (30 days of retention) and F2 (90 days).
    async fn new(backend: Backend) -> Option<Env> {
        let t = TestDb::of(backend).await?;
        Some(Env::on(t.db.clone(), t, backend).await)
    }

    async fn on(db: Db, t: TestDb, backend: Backend) -> Env {
        let clock = Arc::new(ManualClock::new(start()));
        let store = Store::new(
            db,
            clock.clone() as Arc<dyn Clock>,
            "test-pepper-0123456789",
        );
        store.create_facility(facility("F1", 30)).await.unwrap();
        store.create_facility(facility("F2", 90)).await.unwrap();
        Env {
            t,
            store,
            clock,
            dir: tempfile::tempdir().unwrap(),
            backend,
        }
    }

    fn file(&self, r: &Rec) -> PathBuf {
        self.dir.path().join(&r.path)
    }

    /// Writes a small µ-law stereo WAV whose samples depend on `n`, registers and (unless
    /// `in_progress`) finishes it at the clock's now, as capture does.
    async fn record(&self, facility: &str, n: u8, in_progress: bool) -> Rec {
        let (session, path) = self.file_only(facility, n).await;
        self.register(facility, n, &session, &path, in_progress)
            .await
    }

    /// What the recorder does first: the session and the file, no row yet.
    async fn file_only(&self, facility: &str, n: u8) -> (String, String) {
        let now = self.clock.wall();
        let session = format!("ses_{facility}_{n}_{}", now.timestamp());
        open_call(
            self.store.db(),
            &NewSession {
                id: &session,
                facility_id: facility,
                handset_id: None,
                dialed: "15551234567",
                node_id: "node-1",
                sip_call_id: None,
            },
            now,
        )
        .await
        .unwrap();
        let path = format!("{}/{session}.wav", now.format("%Y/%m/%d"));
        let full = self.dir.path().join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, wav(n)).unwrap();
        (session, path)
    }

    /// What the recorder does next: the row, then (unless `in_progress`) the finish.
    async fn register(
        &self,
        facility: &str,
        n: u8,
        session: &str,
        path: &str,
        in_progress: bool,
    ) -> Rec {
        let now = self.clock.wall();
        let bytes = wav(n);
        let id = self
            .store
            .start_recording(NewRecording {
                session_id: session,
                facility_id: facility,
                path,
                format: "wav-pcmu",
                node_id: "node-1",
                started_at: now - chrono::Duration::seconds(60),
            })
            .await
            .unwrap();
        if !in_progress {
            let f = FinishedRecording {
                ended_at: now,
                duration_ms: 60_000,
                bytes: bytes.len() as i64,
                sha256: hex::encode(Sha256::digest(&bytes)),
                dropped_packets: 0,
                complete: n % 5 != 4,
            };
            self.store.finish_recording(&id, &f).await.unwrap();
        }
        Rec {
            id,
            path: path.to_string(),
        }
    }

    /// Finishes a recording left in progress, at the clock's now.
    async fn finish(&self, r: &Rec, n: u8) {
        let bytes = wav(n);
        let f = FinishedRecording {
            ended_at: self.clock.wall(),
            duration_ms: 60_000,
            bytes: bytes.len() as i64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            dropped_packets: 0,
            complete: true,
        };
        self.store.finish_recording(&r.id, &f).await.unwrap();
    }

    async fn records(&self, facility: &str, count: u8) -> Vec<Rec> {
        let mut out = Vec::new();
        for n in 0..count {
            out.push(self.record(facility, n, false).await);
        }
        out
    }

    async fn verify(&self) -> ChainReport {
        chain::verify_all(&self.store, self.dir.path())
            .await
            .unwrap()
    }

    /// Runs SQL the append-only triggers would refuse: the tampering under test.
    async fn tamper(&self, sql: &str, binds: &[String]) {
        let drop = match self.backend {
            Backend::Sqlite => [
                "DROP TRIGGER IF EXISTS recording_chain_no_update",
                "DROP TRIGGER IF EXISTS recording_chain_no_delete",
            ],
            Backend::Postgres => [
                "DROP TRIGGER IF EXISTS recording_chain_no_update ON recording_chain",
                "DROP TRIGGER IF EXISTS recording_chain_no_delete ON recording_chain",
            ],
        };
        for d in drop {
            sqlx::query(d)
                .execute(self.store.db().pool())
                .await
                .unwrap();
        }
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(self.store.db().pool()).await.unwrap();
    }

    async fn cleanup(self) {
        self.t.cleanup().await;
    }
}

/// A 44-byte WAV header (µ-law, 2 channels, 8 kHz) and 1600 bytes of samples from `n`.
fn wav(n: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..1600u32)
        .map(|i| (i as u8).wrapping_mul(n + 1) ^ n)
        .collect();
    let mut v = Vec::with_capacity(44 + data.len());
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&7u16.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&16000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&8u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(&data);
    v
}

/// The problems as (kind, recording id or path) for comparing.
fn named(r: &ChainReport) -> BTreeSet<(&'static str, String)> {
    r.problems
        .iter()
        .map(|p| {
            let who = p
                .recording_id
                .clone()
                .or_else(|| p.path.clone())
                .unwrap_or_default();
            (p.kind.as_str(), who)
        })
        .collect()
}

fn set(items: &[(&'static str, &str)]) -> BTreeSet<(&'static str, String)> {
    items.iter().map(|(k, w)| (*k, w.to_string())).collect()
}

async fn files_tampered(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let recs = env.records("F1", 4).await;
    let live = env.record("F2", 9, true).await;
    let r = env.verify().await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.entries, r.recordings, r.purged, r.files), (4, 4, 0, 5));
    for rec in &recs {
        let c = chain::verify_recording(&env.store, env.dir.path(), &rec.id)
            .await
            .unwrap();
        assert!(c.ok, "{c:?}");
        assert_eq!(c.file_sha256_expected, c.file_sha256_actual);
        assert_eq!(c.path, rec.path);
    }
    let c = chain::verify_recording(&env.store, env.dir.path(), &live.id)
        .await
        .unwrap();
    assert!(c.ok && c.status == RecordingStatus::Recording, "{c:?}");

    // One byte changed.
    let mut bytes = std::fs::read(env.file(&recs[0])).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(env.file(&recs[0]), &bytes).unwrap();
    let r = env.verify().await;
    assert_eq!(named(&r), set(&[("changed", &recs[0].id)]), "{r:?}");
    assert_eq!(r.problems[0].path.as_deref(), Some(recs[0].path.as_str()));
    let c = chain::verify_recording(&env.store, env.dir.path(), &recs[0].id)
        .await
        .unwrap();
    assert!(!c.ok);
    assert_ne!(c.file_sha256_expected, c.file_sha256_actual);
    assert_eq!(c.problems[0].kind, ProblemKind::Changed);

    // A file deleted.
    std::fs::remove_file(env.file(&recs[1])).unwrap();
    let r = env.verify().await;
    assert_eq!(
        named(&r),
        set(&[("changed", &recs[0].id), ("removed", &recs[1].id)]),
        "{r:?}"
    );
    let c = chain::verify_recording(&env.store, env.dir.path(), &recs[1].id)
        .await
        .unwrap();
    assert_eq!((c.ok, c.file_sha256_actual.as_deref()), (false, None));

    // Two files swapped: both named.
    let (a, b) = (env.file(&recs[2]), env.file(&recs[3]));
    let tmp = env.dir.path().join("swap.tmp");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    // A file nothing accounts for.
    let extra = "2026/11/25/planted.wav";
    std::fs::write(env.dir.path().join(extra), wav(7)).unwrap();
    let r = env.verify().await;
    assert_eq!(
        named(&r),
        set(&[
            ("changed", &recs[0].id),
            ("removed", &recs[1].id),
            ("changed", &recs[2].id),
            ("changed", &recs[3].id),
            ("added", extra),
        ]),
        "{r:?}"
    );
    assert!(!r.ok);
    // The line the CLI prints names the recording and the file.
    let line = r
        .problems
        .iter()
        .find(|p| p.recording_id.as_deref() == Some(recs[2].id.as_str()))
        .unwrap()
        .to_string();
    assert!(
        line.starts_with(&format!(
            "changed: recording {}, file {}",
            recs[2].id, recs[2].path
        )),
        "{line}"
    );
    env.cleanup().await;
}

/// Reads a chain entry's columns (all but seq) as strings, `at` included.
async fn entry(env: &Env, seq: i64) -> Vec<String> {
    let r = sqlx::query(
        "SELECT at, kind, recording_id, file_sha256, metadata, prev_link, link \
         FROM recording_chain WHERE seq = $1",
    )
    .bind(seq)
    .fetch_one(env.store.db().pool())
    .await
    .unwrap();
    let mut v = vec![r.try_get::<i64, _>("at").unwrap().to_string()];
    for c in [
        "kind",
        "recording_id",
        "file_sha256",
        "metadata",
        "prev_link",
        "link",
    ] {
        v.push(r.try_get::<String, _>(c).unwrap());
    }
    v
}

/// Overwrites entry `seq` with `fields` (as [`entry`] reads them).
async fn overwrite(env: &Env, seq: i64, fields: &[String]) {
    let sql = format!(
        "UPDATE recording_chain SET at = {}, kind = $1, recording_id = $2, file_sha256 = $3, \
         metadata = $4, prev_link = $5, link = $6 WHERE seq = {seq}",
        fields[0]
    );
    env.tamper(&sql, &fields[1..]).await;
}

async fn chain_tampered(backend: Backend) {
    // The triggers refuse edits.
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let recs = env.records("F1", 4).await;
    for sql in [
        "UPDATE recording_chain SET metadata = '{}' WHERE seq = 2",
        "DELETE FROM recording_chain WHERE seq = 2",
    ] {
        let refused = sqlx::query(sql).execute(env.store.db().pool()).await;
        assert!(refused.is_err(), "{sql} was allowed");
    }

    // An entry deleted: the next one follows nothing; its recording is no longer chained.
    env.tamper("DELETE FROM recording_chain WHERE seq = 2", &[])
        .await;
    let r = env.verify().await;
    assert_eq!(
        named(&r),
        set(&[
            ("broken_link", &recs[2].id),
            ("row_mismatch", &recs[1].id),
            ("added", &recs[1].path),
        ]),
        "{r:?}"
    );
    let broken = r
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::BrokenLink)
        .unwrap();
    assert_eq!(broken.chain_seq, Some(3));
    assert_eq!(broken.path.as_deref(), Some(recs[2].path.as_str()));
    let c = chain::verify_recording(&env.store, env.dir.path(), &recs[1].id)
        .await
        .unwrap();
    assert!(!c.ok, "{c:?}");
    let c = chain::verify_recording(&env.store, env.dir.path(), &recs[2].id)
        .await
        .unwrap();
    assert!(
        c.problems.iter().any(|p| p.kind == ProblemKind::BrokenLink),
        "{c:?}"
    );
    env.cleanup().await;

    // Two entries swapped: each that no longer follows its predecessor is named.
    let env = Env::new(backend).await.unwrap();
    let recs = env.records("F1", 4).await;
    let (two, three) = (entry(&env, 2).await, entry(&env, 3).await);
    overwrite(&env, 2, &three).await;
    overwrite(&env, 3, &two).await;
    let r = env.verify().await;
    assert_eq!(
        named(&r),
        set(&[
            ("reordered", &recs[2].id),
            ("reordered", &recs[1].id),
            ("reordered", &recs[3].id),
            ("row_mismatch", &recs[1].id),
            ("row_mismatch", &recs[2].id),
        ]),
        "{r:?}"
    );
    let c = chain::verify_recording(&env.store, env.dir.path(), &recs[2].id)
        .await
        .unwrap();
    assert!(
        c.problems.iter().any(|p| p.kind == ProblemKind::Reordered),
        "{c:?}"
    );
    env.cleanup().await;

    // An entry edited (its hash replaced by another file's): the link does not recompute.
    let env = Env::new(backend).await.unwrap();
    let recs = env.records("F1", 4).await;
    let first = entry(&env, 1).await;
    env.tamper(
        "UPDATE recording_chain SET file_sha256 = $1 WHERE seq = 2",
        &[first[3].clone()],
    )
    .await;
    let r = env.verify().await;
    assert_eq!(
        named(&r),
        set(&[
            ("entry_changed", &recs[1].id),
            ("changed", &recs[1].id),
            ("row_mismatch", &recs[1].id),
        ]),
        "{r:?}"
    );
    let c = chain::verify_recording(&env.store, env.dir.path(), &recs[1].id)
        .await
        .unwrap();
    assert!(
        c.problems
            .iter()
            .any(|p| p.kind == ProblemKind::EntryChanged),
        "{c:?}"
    );

    // Rows (no triggers) edited: moved to another facility, a fake purge.
    sqlx::query("UPDATE recordings SET facility_id = 'F2' WHERE id = $1")
        .bind(&recs[0].id)
        .execute(env.store.db().pool())
        .await
        .unwrap();
    sqlx::query("UPDATE recordings SET status = 'purged' WHERE id = $1")
        .bind(&recs[3].id)
        .execute(env.store.db().pool())
        .await
        .unwrap();
    std::fs::remove_file(env.file(&recs[3])).unwrap();
    let r = env.verify().await;
    assert!(
        named(&r).is_superset(&set(&[
            ("row_mismatch", &recs[0].id),
            ("row_mismatch", &recs[3].id),
            ("removed", &recs[3].id),
        ])),
        "{r:?}"
    );
    let moved = r
        .problems
        .iter()
        .find(|p| p.recording_id.as_deref() == Some(recs[0].id.as_str()))
        .unwrap();
    assert!(moved.detail.contains("facility_id"), "{moved:?}");
    env.cleanup().await;
}

async fn purge_per_facility(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // F1 keeps 30 days, F2 90.
    let f1_old = env.record("F1", 1, false).await;
    let f1_incomplete = env.record("F1", 4, false).await;
    let f2_old = env.record("F2", 2, false).await;
    env.clock.advance(20 * DAY);
    let f1_newer = env.record("F1", 3, false).await;
    let live = env.record("F1", 5, true).await;
    assert_eq!(
        env.store.recording(&f1_incomplete.id).await.unwrap().status,
        RecordingStatus::Incomplete
    );

    // Day 29: nothing has expired.
    env.clock.advance(9 * DAY);
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    assert!(p.purged.is_empty(), "{p:?}");

    // Day 31: F1's two first recordings only.
    env.clock.advance(2 * DAY);
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    let purged: BTreeSet<String> = p.purged.iter().cloned().collect();
    let want: BTreeSet<String> = [f1_old.id.clone(), f1_incomplete.id.clone()].into();
    assert_eq!(purged, want, "{p:?}");
    for rec in [&f1_old, &f1_incomplete] {
        assert!(!env.file(rec).exists());
        let row = env.store.recording(&rec.id).await.unwrap();
        assert_eq!(row.status, RecordingStatus::Purged);
        assert_eq!(row.purged_at, Some(env.clock.wall()));
        let c = chain::verify_recording(&env.store, env.dir.path(), &rec.id)
            .await
            .unwrap();
        assert!(c.ok, "{c:?}");
        assert_eq!(c.file_sha256_expected, row.sha256);
        assert_eq!(c.file_sha256_actual, None);
    }
    for rec in [&f2_old, &f1_newer, &live] {
        assert!(env.file(rec).exists());
    }
    let r = env.verify().await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.entries, r.recordings, r.purged, r.files), (6, 4, 2, 3));

    // The purge entry carries the purged file's chained hash and names why.
    let purge = sqlx::query(
        "SELECT file_sha256, metadata FROM recording_chain WHERE kind = 'purge' AND recording_id = $1",
    )
    .bind(&f1_old.id)
    .fetch_one(env.store.db().pool())
    .await
    .unwrap();
    let row = env.store.recording(&f1_old.id).await.unwrap();
    assert_eq!(
        Some(purge.try_get::<String, _>("file_sha256").unwrap()),
        row.sha256
    );
    let meta: serde_json::Value =
        serde_json::from_str(&purge.try_get::<String, _>("metadata").unwrap()).unwrap();
    assert_eq!(meta["reason"], "retention");
    assert_eq!(meta["retention_days"], 30);
    assert_eq!(meta["path"], f1_old.path.as_str());
    // And it is audited as the system's doing.
    let audit = env.store.audit_records(50, 0).await.unwrap();
    let purges: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "recording.purge")
        .collect();
    assert_eq!(purges.len(), 2);
    assert!(purges
        .iter()
        .all(|a| a.actor == "system" && a.facility_id.as_deref() == Some("F1")));
    assert!(purges.iter().any(|a| a.target == f1_old.id));
    assert!(env.store.verify_audit().await.unwrap().intact());

    // A second run the same day purges nothing more.
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    assert!(p.purged.is_empty(), "{p:?}");

    // Day 51: the newer F1 one; day 91: F2's. The recording in progress stays.
    env.clock.advance(20 * DAY);
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    assert_eq!(p.purged, vec![f1_newer.id.clone()]);
    env.clock.advance(40 * DAY);
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    assert_eq!(p.purged, vec![f2_old.id.clone()]);
    assert_eq!(
        env.store.recording(&live.id).await.unwrap().status,
        RecordingStatus::Recording
    );
    assert!(env.file(&live).exists());
    let r = env.verify().await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.entries, r.recordings, r.purged, r.files), (8, 4, 4, 1));

    // A purge entry deleted behind the triggers: the missing file is `removed` again.
    env.tamper(
        "DELETE FROM recording_chain WHERE kind = 'purge' AND recording_id = $1",
        std::slice::from_ref(&f2_old.id),
    )
    .await;
    let r = env.verify().await;
    assert!(
        named(&r).contains(&("removed", f2_old.id.clone())),
        "a purge removed behind the triggers makes the missing file `removed`: {r:?}"
    );
    env.cleanup().await;
}

async fn concurrent_purge(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let recs = env.records("F1", 12).await;
    env.clock.advance(31 * DAY);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, dir) = (env.store.clone(), env.dir.path().to_path_buf());
        tasks.push(tokio::spawn(async move {
            retention::purge_expired(&store, &dir).await.unwrap()
        }));
    }
    let mut purged = Vec::new();
    let mut already = 0;
    for t in tasks {
        let p = t.await.unwrap();
        purged.extend(p.purged);
        already += p.already_purged;
    }
    purged.sort();
    let mut want: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
    want.sort();
    assert_eq!(purged, want, "each recording purged exactly once");
    assert!(already <= 36);
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM recording_chain WHERE kind = 'purge'")
        .fetch_one(env.store.db().pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(n, 12);
    let r = env.verify().await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.entries, r.purged, r.files), (24, 12, 0));
    env.cleanup().await;
}

/// A busy node: while the check holds its snapshot, a call finishes, a recording starts
/// (file then row), the recorder has created a file whose row is not inserted yet, a
/// row arrives for a file that was already there, and the purge removes a recording and
/// its file. None of it is a problem; what persists (the file that never got a row) is
/// named by the next check.
async fn live_system(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let old = env.record("F1", 1, false).await;
    env.clock.advance(31 * DAY);
    let done = env.record("F1", 2, false).await;
    let live = env.record("F1", 3, true).await;
    // The file of a call whose row is inserted during the check (its file predates it).
    let (late_session, late_path) = env.file_only("F1", 6).await;
    // Let the snapshot's start be after every file above, at the file system's resolution.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (hook, mut phases) = tokio::sync::mpsc::channel(1);
    let (store, dir) = (env.store.clone(), env.dir.path().to_path_buf());
    let check = tokio::spawn(async move { chain::verify_all_with_hook(&store, &dir, hook).await });
    let (phase, go) = phases.recv().await.unwrap();
    assert_eq!(phase, Phase::Snapshot);
    env.finish(&live, 3).await;
    env.clock.advance(Duration::from_secs(1));
    let fresh = env.record("F2", 7, true).await;
    let (_, pending_path) = env.file_only("F2", 8).await;
    let late = env.register("F1", 6, &late_session, &late_path, true).await;
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    assert_eq!(p.purged, vec![old.id.clone()]);
    assert!(!env.file(&old).exists());
    go.send(()).unwrap();
    let (phase, go) = phases.recv().await.unwrap();
    assert_eq!(phase, Phase::Recheck);
    go.send(()).unwrap();
    let r = check.await.unwrap().unwrap();
    assert!(r.ok, "changes during the check are no problems: {r:?}");
    assert_eq!(
        (r.entries, r.recordings, r.purged),
        (2, 2, 0),
        "the snapshot's chain: `old` and `done`, not the finish nor the purge after it"
    );

    // Afterwards everything that happened is in scope; only the file that never got its
    // row is a problem.
    let r = env.verify().await;
    assert_eq!(named(&r), set(&[("added", &pending_path)]), "{r:?}");
    assert_eq!((r.entries, r.recordings, r.purged), (4, 3, 1), "{r:?}");
    for rec in [&done, &live, &fresh, &late] {
        let c = chain::verify_recording(&env.store, env.dir.path(), &rec.id)
            .await
            .unwrap();
        assert!(c.ok, "{c:?}");
    }
    env.cleanup().await;
}

/// A problem that is still there after the snapshot is reported; one that the re-check
/// no longer sees (a file put back during the check) is not.
async fn recheck_keeps_what_persists(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let recs = env.records("F1", 3).await;
    let saved = std::fs::read(env.file(&recs[0])).unwrap();
    std::fs::write(env.file(&recs[0]), b"edited").unwrap();
    std::fs::write(env.file(&recs[1]), b"edited").unwrap();
    let (hook, mut phases) = tokio::sync::mpsc::channel(1);
    let (store, dir) = (env.store.clone(), env.dir.path().to_path_buf());
    let check = tokio::spawn(async move { chain::verify_all_with_hook(&store, &dir, hook).await });
    let (_, go) = phases.recv().await.unwrap();
    go.send(()).unwrap();
    let (phase, go) = phases.recv().await.unwrap();
    assert_eq!(phase, Phase::Recheck);
    std::fs::write(env.file(&recs[0]), &saved).unwrap();
    go.send(()).unwrap();
    let r = check.await.unwrap().unwrap();
    assert_eq!(named(&r), set(&[("changed", &recs[1].id)]), "{r:?}");
    env.cleanup().await;
}

/// The chain's end deleted with its rows and files behind the triggers: the sessions
/// still name the recordings (`missing_recording`) and the head anchored by the last
/// retention run is gone (`truncated`); with the sessions edited too, the anchor alone
/// still tells.
async fn tail_truncated(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let recs = env.records("F1", 3).await;
    // A retention run that purges nothing anchors the head (entry 3).
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    assert!(p.purged.is_empty());
    let anchors: Vec<_> = env
        .store
        .audit_records(50, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "recording.chain_head")
        .collect();
    assert_eq!(anchors.len(), 1);
    assert_eq!(anchors[0].actor, "system");
    assert_eq!(anchors[0].detail["seq"], 3);
    let last = env.record("F1", 3, false).await;
    let r = env.verify().await;
    assert!(r.ok, "{r:?}");

    // Entries 3 and 4 (the anchored head and one after it) removed with rows and files.
    env.tamper("DELETE FROM recording_chain WHERE seq >= 3", &[])
        .await;
    for rec in [&recs[2], &last] {
        sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(&rec.id)
            .execute(env.store.db().pool())
            .await
            .unwrap();
        std::fs::remove_file(env.file(rec)).unwrap();
    }
    let r = env.verify().await;
    assert_eq!(
        named(&r),
        set(&[
            ("missing_recording", &recs[2].id),
            ("missing_recording", &last.id),
            ("truncated", ""),
        ]),
        "{r:?}"
    );
    let truncated: BTreeSet<i64> = r
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Truncated)
        .filter_map(|p| p.chain_seq)
        .collect();
    assert_eq!(
        truncated,
        [3, 4].into(),
        "the retention run anchored entry 3, the verify run entry 4: {r:?}"
    );

    // The sessions edited too: the anchors still catch it.
    sqlx::query("UPDATE sessions SET recorded = 0, recording_id = NULL")
        .execute(env.store.db().pool())
        .await
        .unwrap();
    let r = env.verify().await;
    assert!(!r.ok);
    assert_eq!(named(&r), set(&[("truncated", "")]), "{r:?}");
    let seqs: BTreeSet<i64> = r.problems.iter().filter_map(|p| p.chain_seq).collect();
    assert!(seqs.contains(&4), "{r:?}");
    env.cleanup().await;
}

/// A stored retention period too large for the cutoff (from before the bound) no longer
/// stops every purge (PostgreSQL: `bigint out of range`); its facility is skipped. A file
/// already gone when its recording is purged is reported, and the chain still verifies.
async fn retention_out_of_range(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let f1 = env.record("F1", 1, false).await;
    let gone = env.record("F1", 2, false).await;
    let f2 = env.record("F2", 3, false).await;
    sqlx::query("UPDATE facilities SET recording_retention_days = $1 WHERE id = 'F2'")
        .bind(106_752i64)
        .execute(env.store.db().pool())
        .await
        .unwrap();
    std::fs::remove_file(env.file(&gone)).unwrap();
    env.clock.advance(200 * 365 * DAY);
    let p = retention::purge_expired(&env.store, env.dir.path())
        .await
        .unwrap();
    let purged: BTreeSet<String> = p.purged.iter().cloned().collect();
    assert_eq!(purged, [f1.id.clone(), gone.id.clone()].into(), "{p:?}");
    assert_eq!(p.facilities_skipped, vec!["F2".to_string()]);
    assert_eq!(p.already_gone, vec![(gone.id.clone(), gone.path.clone())]);
    assert!(p.files_left.is_empty(), "{p:?}");
    assert!(env.file(&f2).exists());
    let r = env.verify().await;
    assert!(r.ok, "{r:?}");
    env.cleanup().await;
}

/// Sends a GET through the router; returns the status and JSON body.
async fn get(app: &axum::Router, path: &str, token: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

async fn api_scoped(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let recs = env.records("F1", 2).await;
    let mut config = Config::default();
    config.recording.dir = env.dir.path().to_path_buf();
    let app = router(AppState::new(env.store.clone(), Arc::new(config)));
    let token = |user: &'static str, role: Role, fac: &'static [&'static str]| {
        let store = env.store.clone();
        async move {
            let f: Vec<String> = fac.iter().map(|s| s.to_string()).collect();
            store.issue_token(user, role, &f, 3600).await.unwrap()
        }
    };
    let admin = token("root", Role::Admin, &[]).await;
    let inv1 = token("inv1", Role::Investigator, &["F1"]).await;
    let inv2 = token("inv2", Role::Investigator, &["F2"]).await;
    let admin1 = token("admin1", Role::Admin, &["F1"]).await;
    let family = token("fam", Role::Family, &["F1"]).await;
    let one = format!("/api/v1/recordings/{}/verify", recs[0].id);

    let (s, v) = get(&app, &one, &inv1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["recording_id"], recs[0].id.as_str());
    assert_eq!(v["ok"], true);
    assert_eq!(v["status"], "complete");
    assert_eq!(v["path"], recs[0].path.as_str());
    assert_eq!(v["file_sha256_expected"], v["file_sha256_actual"]);
    assert_eq!(v["problems"], serde_json::json!([]));
    for t in [&inv2, &family] {
        let (s, v) = get(&app, &one, t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    let (s, _) = get(&app, "/api/v1/recordings/rec_nope/verify", &admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let audited = env.store.audit_records(10, 0).await.unwrap();
    assert!(audited
        .iter()
        .any(|a| a.action == "recording.verify" && a.actor == "inv1" && a.target == recs[0].id));

    std::fs::write(env.file(&recs[0]), b"not the recording").unwrap();
    let (s, v) = get(&app, &one, &admin1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["kind"], "changed");
    assert_eq!(v["problems"][0]["recording_id"], recs[0].id.as_str());
    assert_eq!(v["problems"][0]["path"], recs[0].path.as_str());
    assert_ne!(v["file_sha256_expected"], v["file_sha256_actual"]);

    for t in [&inv1, &admin1] {
        let (s, v) = get(&app, "/api/v1/recordings/verify", t).await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "whole chain is for global admins: {v}"
        );
    }
    let (s, v) = get(&app, "/api/v1/recordings/verify", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["entries"], 2);
    assert_eq!(v["scope"], "range");
    assert_eq!(v["next_after_seq"], serde_json::Value::Null);
    assert_eq!(v["problems"].as_array().unwrap().len(), 1);
    assert_eq!(v["problems"][0]["kind"], "changed");
    // Bounded: a range at a time, with where the next one starts.
    let (s, v) = get(&app, "/api/v1/recordings/verify?limit=1", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["entries"].as_u64(), v["next_after_seq"].as_i64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["problems"][0]["recording_id"], recs[0].id.as_str());
    let (s, v) = get(
        &app,
        "/api/v1/recordings/verify?after_seq=1&limit=1",
        &admin,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["entries"].as_u64(), v["ok"].as_bool()),
        (Some(1), Some(true)),
        "{v}"
    );
    assert_eq!(v["next_after_seq"], serde_json::Value::Null);
    for bad in ["limit=0", "limit=10001", "after_seq=-1", "limit=x"] {
        let (s, v) = get(&app, &format!("/api/v1/recordings/verify?{bad}"), &admin).await;
        assert!(s.is_client_error(), "{bad}: {s} {v}");
    }
    env.cleanup().await;
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(sallyport::db::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(sallyport::db::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both!(
    files_tampered,
    chain_tampered,
    purge_per_facility,
    concurrent_purge,
    api_scoped,
    live_system,
    recheck_keeps_what_persists,
    tail_truncated,
    retention_out_of_range
);

/// Runs `sallyport verify-recordings` against a SQLite file and a recordings directory.
fn verify_cli(db_dir: &Path, rec_dir: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "SALLYPORT_DATABASE_URL",
            format!("sqlite://{}/db.sqlite", db_dir.display()),
        )
        .env("SALLYPORT_NODE_DATA_DIR", db_dir)
        .env("SALLYPORT_RECORDING_DIR", rec_dir)
        .env("SALLYPORT_LOG", "warn")
        .arg("verify-recordings")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_status_names_the_recording() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite", db_dir.path().display());
    let db = Db::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let spare = TestDb::sqlite().await;
    let env = Env::on(db.clone(), spare, Backend::Sqlite).await;
    let recs = env.records("F1", 3).await;
    db.close().await;

    let (code, out, err) = verify_cli(db_dir.path(), env.dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("recordings chain: 3 entries, 3 recordings (0 purged), 3 files"),
        "{out}"
    );
    assert!(out.contains("recordings intact"), "{out}");

    let mut bytes = std::fs::read(env.file(&recs[1])).unwrap();
    bytes[60] ^= 0xff;
    std::fs::write(env.file(&recs[1]), bytes).unwrap();
    std::fs::remove_file(env.file(&recs[2])).unwrap();
    let (code, out, err) = verify_cli(db_dir.path(), env.dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "changed: recording {}, file {}",
            recs[1].id, recs[1].path
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "removed: recording {}, file {}",
            recs[2].id, recs[2].path
        )),
        "{out}"
    );
    assert!(out.contains("; 2 problem(s)"), "{out}");
    assert!(err.contains("do not verify"), "{err}");
    env.cleanup().await;
}
