//! Video-visit recordings on the one recordings path (issue 11): WebM files of real VP8 and
//! Opus (Debian's ffmpeg) written by `recording::webm::Writer`, registered per participant
//! as the visit path will (a visit session has two recordings, `inmate` and `visitor`) and
//! chained like call recordings.
//!
//! - `verify_recordings_passes_then_names_a_flipped_byte`: `sallyport verify-recordings`
//!   passes on a visit's two intact WebM files, then exits 1 naming the recording and the
//!   file whose byte was flipped, the one removed and a stray `.webm` (added).
//! - `a_visit_recording_left_in_progress_is_repaired_at_start`: a writer dropped mid-visit
//!   (a crash) leaves a row `recording`; the start-up recovery repairs the WebM, chains it
//!   `incomplete` with its real size and duration, and the chain verifies; the retention
//!   purge then removes both kinds of file and the chain still verifies.
//! - `a_visit_recording_plays_and_seeks_in_chromium`: the real `sallyport serve`; a play
//!   ticket for the inmate's recording; Chromium's `<video>` decodes frames, shows the
//!   media's duration (within a second) and seeks to the middle (range requests: 206,
//!   `video/webm`); a privileged visit's recording is refused (403).
//!
//! Needs ffmpeg (and, for the browser test, Debian's `chromium` and `chromium-driver`):
//! without them a test prints why and passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
//! Run: `cargo test --test visit_recording -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use chrono::{DateTime, Duration as TimeDelta, TimeZone, Utc};
use sallyport::clock::{Clock, ManualClock, SystemClock};
use sallyport::db::Db;
use sallyport::recording::{self, chain, retention, webm, Participant};
use sallyport::store::{NewFacility, RecordingStatus, Store};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::visit_media::{self, Media};

const SECS: u64 = 6;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 14, 0, 0).unwrap()
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

/// A SQLite database file in `db_dir` (migrated) and a store on it at `start()`.
async fn store_on(db_dir: &Path) -> (Db, Store, Arc<ManualClock>) {
    let url = format!("sqlite://{}/db.sqlite", db_dir.display());
    let db = Db::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    let store = Store::new(
        db.clone(),
        clock.clone() as Arc<dyn Clock>,
        "test-pepper-0123456789",
    );
    store.create_facility(facility("F1", 30)).await.unwrap();
    (db, store, clock)
}

/// `sallyport verify-recordings` against the SQLite file in `db_dir` and `rec_dir`.
fn verify_cli(db_dir: &Path, rec_dir: &Path) -> (i32, String) {
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
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn media() -> Media {
    visit_media::encode(SECS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_recordings_passes_then_names_a_flipped_byte() {
    if !visit_media::present("the visit verify-recordings test") {
        return;
    }
    let m = media();
    let db_dir = tempfile::tempdir().unwrap();
    let rec_dir = tempfile::tempdir().unwrap();
    let (db, store, _clock) = store_on(db_dir.path()).await;
    visit_media::insert_visit(&store, "ses_visit_1", "F1", start()).await;
    let inmate = visit_media::record_visit(
        &store,
        rec_dir.path(),
        "ses_visit_1",
        "F1",
        Participant::Inmate,
        start(),
        &m,
    )
    .await;
    let visitor = visit_media::record_visit(
        &store,
        rec_dir.path(),
        "ses_visit_1",
        "F1",
        Participant::Visitor,
        start(),
        &m,
    )
    .await;
    assert_eq!(inmate.path, "2026/12/01/ses_visit_1-inmate.webm");
    assert_eq!(visitor.path, "2026/12/01/ses_visit_1-visitor.webm");
    // One session, two recordings, one of each participant; a third is refused.
    let both = store.session_recordings("ses_visit_1").await.unwrap();
    let who: Vec<_> = both.iter().map(|r| (r.participant, r.status)).collect();
    assert_eq!(
        who,
        [
            (Participant::Inmate, RecordingStatus::Complete),
            (Participant::Visitor, RecordingStatus::Complete)
        ]
    );
    assert!(both.iter().all(|r| r.format == webm::FORMAT_NAME));
    let again = store
        .start_visit_recording(
            sallyport::store::NewRecording {
                session_id: "ses_visit_1",
                facility_id: "F1",
                path: "2026/12/01/ses_visit_1-inmate-2.webm",
                format: webm::FORMAT_NAME,
                node_id: "node-1",
                started_at: start(),
            },
            Participant::Inmate,
        )
        .await;
    assert!(
        matches!(again, Err(sallyport::store::StoreError::Conflict(_))),
        "{again:?}"
    );
    assert!(
        (inmate.finished.duration_ms as i64 - SECS as i64 * 1000).abs() <= 100,
        "{:?}",
        inmate.finished
    );
    db.close().await;

    let (code, out) = verify_cli(db_dir.path(), rec_dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("recordings chain: 2 entries, 2 recordings (0 purged), 2 files"),
        "{out}"
    );
    assert!(out.contains("recordings intact"), "{out}");

    // One byte in the middle of the visitor's video, flipped.
    let file = rec_dir.path().join(&visitor.path);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let (code, out) = verify_cli(db_dir.path(), rec_dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "changed: recording {}, file {}",
            visitor.id, visitor.path
        )),
        "{out}"
    );
    assert!(out.contains("; 1 problem(s)"), "{out}");
    assert!(
        !out.contains(&inmate.id),
        "the intact file is not named: {out}"
    );

    // The inmate's file removed, and a WebM nobody recorded put in its place's directory.
    std::fs::remove_file(rec_dir.path().join(&inmate.path)).unwrap();
    let stray = "2026/12/01/ses_other-visitor.webm";
    std::fs::write(rec_dir.path().join(stray), b"\x1a\x45\xdf\xa3 not ours").unwrap();
    // Old enough not to be taken for a file being written.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(rec_dir.path().join(stray))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (code, out) = verify_cli(db_dir.path(), rec_dir.path());
    assert_eq!(code, 1, "{out}");
    for line in [
        format!("changed: recording {}, file {}", visitor.id, visitor.path),
        format!("removed: recording {}, file {}", inmate.id, inmate.path),
        format!("added: file {stray}"),
    ] {
        assert!(out.contains(&line), "{line} in {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_recording_left_in_progress_is_repaired_at_start() {
    if !visit_media::present("the visit recovery test") {
        return;
    }
    let m = media();
    let db_dir = tempfile::tempdir().unwrap();
    let rec_dir = tempfile::tempdir().unwrap();
    let (_db, store, clock) = store_on(db_dir.path()).await;
    visit_media::insert_visit(&store, "ses_visit_2", "F1", start()).await;
    let done = visit_media::record_visit(
        &store,
        rec_dir.path(),
        "ses_visit_2",
        "F1",
        Participant::Visitor,
        start(),
        &m,
    )
    .await;
    // The inmate's side: 3 s flushed, then the gateway dies (the writer is dropped).
    let (id, path, mut w, t0) = visit_media::begin_visit(
        &store,
        rec_dir.path(),
        "ses_visit_2",
        "F1",
        Participant::Inmate,
        start(),
    )
    .await;
    visit_media::feed(&mut w, &m, t0, Duration::from_secs(3));
    w.flush().unwrap();
    drop(w);
    let report = chain::verify_all(&store, rec_dir.path()).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let closed = recording::recover_in_progress(&store, rec_dir.path(), "node-1")
        .await
        .unwrap();
    assert_eq!(closed, 1);
    let rec = store.recording(&id).await.unwrap();
    assert_eq!(rec.status, RecordingStatus::Incomplete);
    let full = rec_dir.path().join(&path);
    assert_eq!(
        rec.bytes,
        Some(std::fs::metadata(&full).unwrap().len() as i64)
    );
    let ms = rec.duration_ms.unwrap();
    assert!(
        (2_900..=3_100).contains(&ms),
        "3 s flushed, {ms} ms chained"
    );
    assert_eq!(
        rec.sha256.as_deref(),
        Some(recording::hash_file(&full).unwrap().as_str())
    );
    // The repaired file is a finished WebM: repairing it again changes nothing.
    assert_eq!(
        webm::repair(&full).unwrap().bytes,
        rec.bytes.unwrap() as u64
    );
    let report = chain::verify_all(&store, rec_dir.path()).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.recordings, report.files), (2, 2));

    // Retention: both files of the visit are purged, the chain still verifies.
    clock.advance(TimeDelta::days(31).to_std().unwrap());
    let purged = retention::purge_expired(&store, rec_dir.path())
        .await
        .unwrap();
    assert_eq!(purged.purged.len(), 2, "{purged:?}");
    assert!(!full.exists() && !rec_dir.path().join(&done.path).exists());
    let report = chain::verify_all(&store, rec_dir.path()).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.purged, 2);
}

/// An ended video visit of the demo facility and the inmate's recording of it, written
/// into the running gateway's database and recordings directory as the visit path does;
/// and a privileged visit with a recording (there should never be one: it is refused).
/// Returns the two recordings' ids.
fn record_into_gateway(dir: &Path, m: &Media) -> (String, String) {
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = Db::connect(&url, 1).await.expect("db");
        let store = Store::new(
            db.clone(),
            Arc::new(SystemClock),
            "unused-pepper-0123456789",
        );
        let now = Utc::now();
        visit_media::insert_visit(&store, "ses_visit_play", support::api::FACILITY, now).await;
        let r = visit_media::record_visit(
            &store,
            &dir.join("recordings"),
            "ses_visit_play",
            support::api::FACILITY,
            Participant::Inmate,
            now,
            m,
        )
        .await;
        visit_media::insert_visit(&store, "ses_visit_privileged", support::api::FACILITY, now)
            .await;
        sqlx::query("UPDATE sessions SET privileged = 1 WHERE id = 'ses_visit_privileged'")
            .execute(db.pool())
            .await
            .unwrap();
        let privileged = visit_media::record_visit(
            &store,
            &dir.join("recordings"),
            "ses_visit_privileged",
            support::api::FACILITY,
            Participant::Visitor,
            now,
            m,
        )
        .await;
        db.close().await;
        (r.id, privileged.id)
    })
}

#[test]
fn a_visit_recording_plays_and_seeks_in_chromium() {
    use support::webdriver::{self, Browser};
    if !visit_media::present("the visit playback test") || !webdriver::present("browser test") {
        return;
    }
    let m = media();
    let dir = support::Workdir::new("visit_recording", "plays_in_chromium");
    let ports = support::sipp::ports();
    let gateway = support::gateway::Gateway::start(&dir, &ports);
    let api = gateway.api.clone();
    let (id, privileged) = record_into_gateway(&dir, &m);
    let (status, refused) = api.request(
        "POST",
        &format!("/api/v1/recordings/{privileged}/play"),
        None,
    );
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("privileged")),
        "{refused}"
    );

    let rec = api.get(&format!("/api/v1/recordings/{id}"));
    assert_eq!(rec["participant"], "inmate", "{rec}");
    assert_eq!(rec["format"], webm::FORMAT_NAME, "{rec}");
    let ticket = api.post(&format!("/api/v1/recordings/{id}/play"), json!({}));
    let url = ticket["url"].as_str().expect("url").to_string();

    // Range requests as a <video> makes them: 206 with the WebM's type.
    let anonymous = api.anonymous();
    let (status, head, _) = anonymous.send("GET", &url, None, &[("Range", "bytes=1000-1999")]);
    assert_eq!(status, 206, "{head}");
    assert!(head.contains("content-type: video/webm"), "{head}");
    assert!(head.contains("content-range: bytes 1000-1999/"), "{head}");

    let browser = Browser::start(&dir.join("chromedriver.log"));
    let b = &browser;
    // The gateway's own origin (its CSP allows media from itself), as the console plays it.
    b.goto(&format!("{}/console/", gateway.base_url()));
    b.wait_for("body[data-ready='1']");
    let loaded = b.js_async(
        "const done = arguments[arguments.length - 1];
         const v = document.createElement('video');
         v.id = 'visit-video'; v.muted = true; v.preload = 'auto';
         v.onloadedmetadata = () => done({ duration: v.duration, w: v.videoWidth, h: v.videoHeight });
         v.onerror = () => done({ error: String(v.error && v.error.message) });
         v.src = arguments[0];
         document.body.appendChild(v);",
        json!([url]),
    );
    assert!(loaded["error"].is_null(), "the video loads: {loaded}");
    let duration = loaded["duration"].as_f64().expect("duration");
    assert!(
        (duration - SECS as f64).abs() <= 1.0,
        "duration {duration} s for {SECS} s of media"
    );
    assert_eq!(
        (loaded["w"].as_u64(), loaded["h"].as_u64()),
        (Some(320), Some(240))
    );

    let played = b.js_async(
        "const done = arguments[arguments.length - 1];
         document.getElementById('visit-video').play().then(() => done('playing'), e => done(String(e)));",
        json!([]),
    );
    assert_eq!(played, "playing");
    let frames = b.wait_js(
        "frames decoded",
        Duration::from_secs(20),
        "const v = document.getElementById('visit-video');
         return { frames: v.getVideoPlaybackQuality().totalVideoFrames, t: v.currentTime };",
        |v| v["frames"].as_u64().unwrap_or(0) > 5 && v["t"].as_f64().unwrap_or(0.0) > 0.5,
    );
    eprintln!("played: {frames}");

    // Seek to the middle: Chromium asks ranges of the file and plays on from there.
    let middle = duration / 2.0;
    let seeked = b.js_async(
        "const done = arguments[arguments.length - 1];
         const v = document.getElementById('visit-video');
         v.pause();
         v.onseeked = () => done({ t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames });
         v.onerror = () => done({ error: String(v.error && v.error.message) });
         v.currentTime = arguments[0];",
        json!([middle]),
    );
    assert!(seeked["error"].is_null(), "seek: {seeked}");
    let t = seeked["t"].as_f64().expect("currentTime");
    assert!((t - middle).abs() < 0.5, "seeked to {t}, asked {middle}");
    let before = seeked["frames"].as_u64().unwrap_or(0);
    b.js_async(
        "const done = arguments[arguments.length - 1];
         document.getElementById('visit-video').play().then(() => done('playing'), e => done(String(e)));",
        json!([]),
    );
    let after = b.wait_js(
        "frames decoded after the seek",
        Duration::from_secs(20),
        "const v = document.getElementById('visit-video');
         return { frames: v.getVideoPlaybackQuality().totalVideoFrames, t: v.currentTime,
                  error: v.error && v.error.message };",
        |v| {
            v["frames"].as_u64().unwrap_or(0) > before + 5
                && v["t"].as_f64().unwrap_or(0.0) > middle + 0.5
        },
    );
    assert!(after["error"].is_null(), "{after}");
    eprintln!("after the seek: {after}");
    // The <video> fetched the file with range requests (its fetch from byte 0 is audited
    // with the range served).
    let audit = api.get("/api/v1/audit?limit=500");
    let ranges: Vec<String> = audit
        .as_array()
        .expect("audit entries")
        .iter()
        .filter(|e| {
            e["action"] == "recording.play"
                && e["detail"]["via"] == "ticket_fetch"
                && e["detail"]["session_id"] == "ses_visit_play"
        })
        .filter_map(|e| e["detail"]["range"].as_str().map(str::to_string))
        .collect();
    assert!(
        ranges.iter().any(|r| r.starts_with("bytes=0-")),
        "the video's fetches: {ranges:?}"
    );
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("visit-recording.png");
    b.screenshot(&shots);
    drop(browser);
    drop(gateway);
}
