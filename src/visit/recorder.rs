//! Recording one side of a video visit: the frames the forwarding room copies to a tap are
//! written, as received, into that participant's WebM file by a thread of its own.
//!
//! Owns: one writer thread per recorded side. It reads the room's tap (a bounded channel
//! the room fills without ever waiting: a full channel drops the frame and counts it, so
//! the forwarding path never waits on the disk), writes each VP8 frame and Opus packet
//! with its RTP time and arrival, flushes every [`FLUSH_EVERY`] so a crash loses little
//! (the next start repairs the file: `recording::recover_in_progress`), and closes the
//! file when the room closes the tap. [`SideRecording::finish`] then syncs, hashes and
//! chains it through the one recording path calls use (`recording::seal`,
//! `recording::visit_finished`, `Store::finish_recording`).
//! Calls: `recording` (paths, the WebM writer, the chain), the store.
//! Called by: `visit::task` when both sides' media first flows (never for privileged
//! visits).

use crate::recording::{self, webm, MediaKind, Participant};
use crate::sfu::{Side, TapReceiver};
use crate::store::{NewRecording, Store};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use str0m::media::MediaKind as Track;
use tracing::{info, warn};

/// How often the writer makes what it has durable.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Why a side's recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum VisitRecordingError {
    #[error("cannot open the recording file: {0}")]
    File(String),
    #[error("cannot register the recording: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// Where a visit's recordings go and whose they are.
#[derive(Debug, Clone)]
pub struct VisitFiles {
    /// The recordings directory.
    pub dir: PathBuf,
    pub session_id: String,
    pub facility_id: String,
    pub node_id: String,
}

/// One side's recording in progress.
#[derive(Debug)]
pub struct SideRecording {
    pub id: String,
    pub side: Side,
    path: PathBuf,
    thread: std::thread::JoinHandle<Written>,
    tap_dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What the writer thread ended with.
#[derive(Debug)]
struct Written {
    finished: Option<webm::Finished>,
    /// Whether every frame handed over was written.
    complete: bool,
}

fn participant(side: Side) -> Participant {
    match side {
        Side::Visitor => Participant::Visitor,
        Side::Inmate => Participant::Inmate,
    }
}

impl SideRecording {
    /// Opens `side`'s file under `files.dir`, registers its row, and starts writing what
    /// `tap` carries.
    pub async fn start(
        store: &Store,
        files: &VisitFiles,
        side: Side,
        tap: TapReceiver,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Result<SideRecording, VisitRecordingError> {
        let who = participant(side);
        let relative =
            recording::relative_path(&files.session_id, MediaKind::VisitVideo, who, wall);
        let path = files.dir.join(&relative);
        let open_path = path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            if let Some(parent) = open_path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            webm::Writer::open(&open_path, webm::Params::default(), now, wall)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| VisitRecordingError::File(e.to_string()))?
        .map_err(VisitRecordingError::File)?;
        let row = NewRecording {
            session_id: &files.session_id,
            facility_id: &files.facility_id,
            path: &relative,
            format: webm::FORMAT_NAME,
            node_id: &files.node_id,
            started_at: wall,
        };
        let id = match store.start_visit_recording(row, who).await {
            Ok(id) => id,
            Err(e) => {
                // No row names the file: remove it, or verification reports it added.
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
        };
        let TapReceiver { frames, dropped } = tap;
        let thread = std::thread::Builder::new()
            .name(format!("visit-rec-{}", side.as_str()))
            .spawn(move || write(writer, frames))
            .map_err(VisitRecordingError::Thread)?;
        info!(recording = %id, side = side.as_str(), "visit recording started");
        Ok(SideRecording {
            id,
            side,
            path,
            thread,
            tap_dropped: dropped,
        })
    }

    /// After the room closed its tap: waits for the file to close, syncs and hashes it,
    /// and finishes its row (which chains it).
    pub async fn finish(self, store: &Store) {
        let SideRecording {
            id,
            side,
            path,
            thread,
            tap_dropped,
        } = self;
        let sealed = tokio::task::spawn_blocking(move || {
            let written = thread.join().ok();
            let sha = recording::seal(&path);
            (written, sha)
        })
        .await;
        let (written, sha) = match sealed {
            Ok((Some(w), Ok(sha))) => (w, sha),
            Ok((_, Err(e))) => {
                return warn!(recording = %id, error = %e, "cannot seal the visit recording")
            }
            Ok((None, _)) | Err(_) => {
                return warn!(recording = %id, "the visit recorder stopped abnormally; the next start repairs the file")
            }
        };
        let Some(file) = written.finished else {
            return warn!(recording = %id, "the visit recording could not be closed; the next start repairs it");
        };
        let dropped = tap_dropped.load(Ordering::Relaxed);
        let complete = written.complete && dropped == 0;
        let finished = recording::visit_finished(&file, sha, dropped, complete);
        match store.finish_recording(&id, &finished).await {
            Ok(_) => info!(recording = %id, side = side.as_str(), bytes = file.bytes,
                duration_ms = file.duration_ms, dropped, "visit recording finished"),
            Err(e) => warn!(recording = %id, error = %e, "cannot finish the visit recording"),
        }
    }
}

/// The writer thread alone, without the store: opens a WebM file at `path` and writes
/// what `tap` carries until the tap closes, as [`SideRecording::start`] does. The visit
/// load benchmark (`examples/visit_load.rs`) records through this, so it measures the
/// gateway's writer; the thread returns whether the file closed with every frame in it.
pub fn record_tap(
    path: &std::path::Path,
    side: Side,
    tap: TapReceiver,
    now: Instant,
    wall: DateTime<Utc>,
) -> Result<std::thread::JoinHandle<bool>, VisitRecordingError> {
    let writer = webm::Writer::open(path, webm::Params::default(), now, wall)
        .map_err(|e| VisitRecordingError::File(e.to_string()))?;
    let TapReceiver { frames, dropped } = tap;
    std::thread::Builder::new()
        .name(format!("visit-rec-{}", side.as_str()))
        .spawn(move || {
            let w = write(writer, frames);
            w.finished.is_some() && w.complete && dropped.load(Ordering::Relaxed) == 0
        })
        .map_err(VisitRecordingError::Thread)
}

/// The writer thread: every frame of the tap into the file, until the tap closes.
fn write(
    mut w: webm::Writer,
    mut frames: tokio::sync::mpsc::Receiver<crate::sfu::TapFrame>,
) -> Written {
    let mut complete = true;
    let mut flushed = Instant::now(); // clock-ok: flush pacing of a file writer
    while let Some(f) = frames.blocking_recv() {
        // The writer takes 32-bit RTP time (it unwraps it itself).
        let rtp_ts = (f.rtp_time & 0xffff_ffff) as u32;
        let r = match f.kind {
            Track::Video => w.write_video(webm::VideoFrame {
                rtp_ts,
                arrival: f.arrived,
                keyframe: f.keyframe,
                data: &f.payload,
            }),
            Track::Audio => w.write_audio(webm::AudioPacket {
                rtp_ts,
                arrival: f.arrived,
                data: &f.payload,
            }),
        };
        match r {
            Ok(()) => {}
            Err(webm::WebmError::BadFrame { .. }) => complete = false,
            Err(e) => {
                warn!(error = %e, "visit recording: write failed; the rest is not recorded");
                return Written {
                    finished: None,
                    complete: false,
                };
            }
        }
        if flushed.elapsed() >= FLUSH_EVERY {
            flushed = Instant::now(); // clock-ok
            if let Err(e) = w.flush() {
                warn!(error = %e, "visit recording: flush failed");
            }
        }
    }
    match w.close() {
        Ok((finished, _)) => Written {
            finished: Some(finished),
            complete,
        },
        Err(e) => {
            warn!(error = %e, "visit recording: close failed");
            Written {
                finished: None,
                complete: false,
            }
        }
    }
}
