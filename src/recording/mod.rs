//! Call and visit recording: capture, files, and (with [`crate::store`]) the recordings hash chain.
//!
//! Owns: the recorder thread ([`recorder`]), the time line of a recording ([`align`]),
//! the file formats ([`wav`] for calls; [`webm`] for video visits, one file per
//! participant) and what tells them apart ([`media`]: the media kind and participant of a
//! row, and its file's name, [`relative_path`]), closing recordings a stopped gateway left
//! open, whichever their kind ([`recover_in_progress`]), verifying files against the chain
//! ([`chain`]) and the retention purge ([`retention`]): one path for both kinds, one chain.
//! Called by the call driver (start at acceptance, end with the call), the visit path
//! ([`visit_finished`], [`seal`] with `Store::start_visit_recording`) and the server
//! (start-up). Calls the media engine only through the
//! [`Tap`](crate::media::engine::Tap) a driver attaches to its call, and the store for
//! rows.
//!
//! # Path of a packet
//!
//! media worker sends an RTP packet toward a leg → the call's tap copies it into a fixed
//! size [`TapPacket`](crate::media::engine::TapPacket) and `try_send`s it on the recorder's
//! bounded channel (`[recording] queue_packets`; when full the packet is dropped and
//! counted on the recording and in `/metrics`, the call goes on) → the recorder thread
//! places it on its recording's time line ([`align::Aligner`]) → once per
//! `flush_interval_ms` the final samples are appended to the file and the header is made
//! true for the new length.
//!
//! # Format: G.711 in WAV, as sent
//!
//! Stereo RIFF/WAVE with the G.711 law of the inmate's leg (format tag 7 µ-law / 6 A-law),
//! 8 kHz, one byte per sample: 16,000 bytes per second, 960,000 bytes per minute. Chosen
//! over Opus in Ogg (about a tenth of the size) because it costs no encoding at all: the
//! payload bytes the parties exchanged are the samples in the file (a right channel in the
//! other law is converted by table lookup), nothing lossy is added to evidence, the
//! recorder needs no C codec library, and the file's header can be made valid after every
//! flush, so a crash leaves a playable file. Measured cost in `README.md` ("Performance").
//!
//! # Lifecycle
//!
//! [`Recorder::begin`] creates `<dir>/YYYY/MM/DD/<session>.wav` with an empty header and
//! registers it with the thread; the driver inserts the `recordings` row (status
//! `recording`: the in-progress mark) and attaches the tap. [`Recorder::end`] detaches,
//! lets the thread write the rest (padding to the end of the call), syncs the file and
//! hashes it; the driver then finishes the row, which chains it. A gateway that stopped
//! mid-call leaves rows in `recording`: [`recover_in_progress`] repairs their headers,
//! hashes and chains them as `incomplete` at the next start.
//!
//! # When the disk fails
//!
//! A write that fails (disk full, `EFBIG`, I/O error) stops that file: the recorder counts
//! it (`sallyport_recorder_write_errors_total`), writes nothing more to it and the call goes
//! on. At the end of the call the file is repaired like a crashed one (its header made true
//! for every whole frame that reached the disk, a write cut short included), hashed, and
//! the row finished and chained `incomplete` with the file's real size and duration: an
//! honest partial recording, which the integrity checks accept. A file that cannot even be
//! created with its header is removed again; that call goes on unrecorded (its CDR says
//! `recorded: false`) and is counted in `sallyport_recorder_start_errors_total`.

pub mod align;
pub mod chain;
pub mod media;
pub mod recorder;
pub mod retention;
pub mod wav;
pub mod webm;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::config::RecordingConfig;
use crate::media::engine::{Tap, TapPacket, TapSink};
use crate::store::{FinishedRecording, Store, StoreError};
pub use media::{relative_path, MediaKind, Participant};
use recorder::{ClosedFile, Control, RecorderStats, RecorderThread};
pub use wav::Law;

/// Why a recording could not be made or finished.
#[derive(Debug, Error)]
pub enum RecordingError {
    #[error("recording file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the recorder thread is gone")]
    RecorderGone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's recorder: a handle to its thread (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    dir: PathBuf,
    packets: SyncSender<TapPacket>,
    control: mpsc::Sender<Control>,
    next_key: Arc<AtomicU64>,
    stats: Arc<RecorderStats>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("dir", &self.dir).finish()
    }
}

/// One recording being captured: what [`Recorder::end`] needs.
#[derive(Debug)]
pub struct Capture {
    key: u64,
    /// Relative to the recordings directory (what the `recordings` row stores).
    pub relative_path: String,
    pub law: Law,
}

impl Capture {
    /// The key of its tap (to detach it from the call).
    pub fn tap_key(&self) -> u64 {
        self.key
    }
}

/// A finished file: what the row is finished with.
#[derive(Debug, Clone)]
pub struct FinishedFile {
    pub closed: ClosedFile,
    pub sha256: String,
}

impl FinishedFile {
    pub fn duration_ms(&self) -> i64 {
        i64::try_from(self.closed.frames * 1000 / u64::from(wav::SAMPLE_RATE)).unwrap_or(i64::MAX)
    }

    /// The row's end: `ended_at` is the start plus the recorded duration. A file whose
    /// writing failed is never `complete`.
    pub fn finished(&self, started_at: DateTime<Utc>, complete: bool) -> FinishedRecording {
        let complete = complete && !self.closed.write_failed;
        let duration_ms = self.duration_ms();
        FinishedRecording {
            ended_at: started_at + chrono::Duration::milliseconds(duration_ms),
            duration_ms,
            bytes: i64::try_from(self.closed.bytes).unwrap_or(i64::MAX),
            sha256: self.sha256.clone(),
            dropped_packets: i64::try_from(self.closed.dropped).unwrap_or(i64::MAX),
            complete,
        }
    }
}

impl Recorder {
    /// Starts the recorder thread.
    pub fn start(cfg: &RecordingConfig) -> io::Result<Recorder> {
        let (packets, packets_rx) = mpsc::sync_channel(cfg.queue_packets);
        let (control, control_rx) = mpsc::channel();
        let stats = Arc::new(RecorderStats::default());
        let thread = RecorderThread {
            packets: packets_rx,
            control: control_rx,
            flush_interval: Duration::from_millis(cfg.flush_interval_ms),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || thread.run())?;
        Ok(Recorder {
            dir: cfg.dir.clone(),
            packets,
            control,
            next_key: Arc::new(AtomicU64::new(1)),
            stats,
        })
    }

    /// The recordings directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    /// Creates the file and opens it on the recorder thread. Returns the capture and the
    /// tap to attach to the call (everything the call sends from `start` on).
    pub async fn begin(
        &self,
        relative_path: String,
        law: Law,
        start: Instant,
    ) -> Result<(Capture, Tap), RecordingError> {
        let path = self.dir.join(&relative_path);
        let create_path = path.clone();
        let file = tokio::task::spawn_blocking(move || create_file(&create_path, law))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| {
                self.stats.start_errors.fetch_add(1, Ordering::Relaxed);
                RecordingError::File {
                    path: path.clone(),
                    source,
                }
            })?;
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let tap = Tap::new(key, TapSink::Blocking(self.packets.clone()));
        self.control
            .send(Control::Open {
                key,
                file,
                path,
                law,
                start,
                dropped: Arc::clone(&tap.dropped),
            })
            .map_err(|_| RecordingError::RecorderGone)?;
        Ok((
            Capture {
                key,
                relative_path,
                law,
            },
            tap,
        ))
    }

    /// Asks the recorder thread to close the file at `end` (detach the tap first). Cheap:
    /// the call's end is written while the caller goes on (closing its CDR);
    /// [`Closing::finish`] then waits for it, syncs and hashes the file.
    pub fn close(&self, capture: Capture, end: Instant) -> Closing {
        let (reply, answer) = oneshot::channel();
        let sent = self.control.send(Control::Close {
            key: capture.key,
            end,
            reply,
        });
        Closing {
            path: self.dir.join(&capture.relative_path),
            answer: sent.ok().map(|()| answer),
        }
    }

    /// [`Recorder::close`] and [`Closing::finish`] in one.
    pub async fn end(
        &self,
        capture: Capture,
        end: Instant,
    ) -> Result<FinishedFile, RecordingError> {
        self.close(capture, end).finish().await
    }
}

/// A recording being closed by the recorder thread.
#[derive(Debug)]
pub struct Closing {
    path: PathBuf,
    answer: Option<oneshot::Receiver<Result<ClosedFile, io::Error>>>,
}

impl Closing {
    /// Waits for the file to be written to its end, syncs it to disk and hashes it (a file
    /// whose writing failed is made consistent first: [`settle`]).
    pub async fn finish(self) -> Result<FinishedFile, RecordingError> {
        let answer = self.answer.ok_or(RecordingError::RecorderGone)?;
        let closed = answer
            .await
            .map_err(|_| RecordingError::RecorderGone)?
            .map_err(|source| RecordingError::File {
                path: self.path.clone(),
                source,
            })?;
        let p = self.path.clone();
        tokio::task::spawn_blocking(move || settle(&p, closed))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| RecordingError::File {
                path: self.path,
                source,
            })
    }
}

/// Off the recorder thread: syncs and hashes a file the recorder closed.
///
/// A file whose writing failed is first made consistent. A write cut short (`EFBIG`,
/// `ENOSPC`: the kernel writes what fits, then fails the rest) leaves audio past the length
/// the header was last made true for, and a failed header write leaves it behind its data;
/// either way the file is not what the recorder counted. [`wav::repair`] makes the header
/// true for the whole frames on disk (trimming a half frame), and the size and duration the
/// row is finished with are taken from it, so the row, the chain and the file agree and every
/// sample that reached the disk stays playable. Should the repair itself fail, the file is
/// hashed as it is with its real length: chained as found rather than left unchained.
fn settle(path: &Path, mut closed: ClosedFile) -> io::Result<FinishedFile> {
    if closed.write_failed {
        let (frames, bytes) = match wav::repair(path) {
            Ok(h) => (h.frames(), h.file_len()),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e,
                    "cannot repair the header of a recording whose writing failed; chained as it is");
                let len = std::fs::metadata(path)?.len();
                (
                    u64::from(wav::data_len_of(len)) / u64::from(wav::CHANNELS),
                    len,
                )
            }
        };
        (closed.frames, closed.bytes) = (frames, bytes);
    }
    let sha256 = sync_and_hash(path)?;
    Ok(FinishedFile { closed, sha256 })
}

/// Syncs a file to disk and hashes it, through one fresh descriptor: the sync covers the
/// file whoever wrote it. A failed sync (EIO, a full disk) is logged and the file hashed as
/// it reads now: chaining what is there beats leaving the row `recording` and the file
/// unchained until a restart.
fn sync_and_hash(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    if let Err(e) = f.sync_all() {
        tracing::error!(path = %path.display(), error = %e,
            "cannot sync a finished recording to disk; hashed and chained as it reads");
    }
    hash_reader(&mut f)
}

/// Creates the file with its empty header. A file created whose header cannot be written
/// (the disk is full) is removed again: no row will name it, and a `.wav` no row names is
/// what the integrity check reports as `added`.
fn create_file(path: &Path, law: Law) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    if let Err(e) = f.write_all(&wav::header(law, 0)) {
        drop(f);
        if let Err(rm) = std::fs::remove_file(path) {
            tracing::error!(path = %path.display(), error = %rm,
                "cannot remove a recording file whose header could not be written");
        }
        return Err(e);
    }
    Ok(f)
}

/// SHA-256 of a file, hex.
pub fn hash_file(path: &Path) -> io::Result<String> {
    hash_reader(&mut File::open(path)?)
}

/// SHA-256 of what `r` reads to its end, hex, in 16 KiB pieces through a buffer on the
/// stack (a call's recording is hashed as it ends: no allocation for it).
fn hash_reader(r: &mut impl Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(hex::encode(h.finalize()))
}

/// What the row of a visit participant's file is finished with, from what the WebM
/// writer's close (or [`webm::repair`]) returned and the file's hash ([`seal`]). Its end is
/// the file's time 0 (its first frame, read on the gateway's clock) plus its duration; the
/// row's `started_at` stays when the file was registered (the writer opens before the first
/// frame arrives), and the file's own DateUTC holds its time 0 for aligning the two sides.
pub fn visit_finished(
    file: &webm::Finished,
    sha256: String,
    dropped_packets: u64,
    complete: bool,
) -> FinishedRecording {
    let duration_ms = i64::try_from(file.duration_ms).unwrap_or(i64::MAX);
    FinishedRecording {
        ended_at: file.started_at + chrono::Duration::milliseconds(duration_ms),
        duration_ms,
        bytes: i64::try_from(file.bytes).unwrap_or(i64::MAX),
        sha256,
        dropped_packets: i64::try_from(dropped_packets).unwrap_or(i64::MAX),
        complete,
    }
}

/// Syncs a closed recording file to disk and hashes it (blocking): what a visit file goes
/// through between the writer's close and its row's finish, as a call's WAV does in
/// [`Closing::finish`]. A failed sync is logged and the file hashed as it reads.
pub fn seal(path: &Path) -> io::Result<String> {
    sync_and_hash(path)
}

/// Closes the recordings `node_id` left in progress (it stopped mid-call or mid-visit):
/// repairs each file by its kind ([`wav::repair`] makes a WAV header true for the frames on
/// disk, [`webm::repair`] cuts a WebM after its last whole block and finishes it), hashes
/// it and chains it as `incomplete`. A file that is not there (while the recordings
/// directory is) is chained with the hash of nothing and 0 bytes, so verification reports
/// it removed. Any other error (the directory not mounted yet, permissions, I/O, a format
/// this build does not know) leaves the row in progress for the next start rather than
/// disown media that may still be on disk. Returns how many were closed.
pub async fn recover_in_progress(
    store: &Store,
    dir: &Path,
    node_id: &str,
) -> Result<usize, RecordingError> {
    recover(store, dir, node_id, Whose::Own).await
}

/// [`recover_in_progress`] for another node, found dead by this one
/// ([`crate::cluster::takeover`]): only the files this node reaches (recordings on shared
/// storage, the same `recording.dir` on every node) are repaired and chained. A file this
/// node does not find stays in progress, never chained as removed: it may be on the
/// dead node's own disk, for its restart to repair. A recording another node (or the
/// dead node's restart) closed first is left as that node closed it.
pub async fn recover_for_dead_node(
    store: &Store,
    dir: &Path,
    node_id: &str,
) -> Result<usize, RecordingError> {
    recover(store, dir, node_id, Whose::DeadNode).await
}

/// Whose recordings a recovery closes: what a missing file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whose {
    /// This node's own, at its start: a missing file was removed.
    Own,
    /// A dead node's: a missing file may be on that node's disk.
    DeadNode,
}

async fn recover(
    store: &Store,
    dir: &Path,
    node_id: &str,
    whose: Whose,
) -> Result<usize, RecordingError> {
    let open = store.recordings_in_progress(node_id).await?;
    let mut closed = 0;
    for rec in &open {
        let Some(recovered) = recover_file(dir, rec, whose).await else {
            continue;
        };
        match store
            .finish_recording(&rec.id, &recovered.finished(rec.started_at))
            .await
        {
            Ok(_) => closed += 1,
            // Closed meanwhile by another node, or by the node's own restart.
            Err(crate::store::StoreError::Conflict(why)) => {
                tracing::info!(recording = %rec.id, %why, "recording already closed elsewhere");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(closed)
}

/// A file left in progress as the start-up found it, repaired and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recovered {
    bytes: u64,
    duration_ms: u64,
    sha256: String,
}

impl Recovered {
    /// The row's end: never `complete` (closed at restart, not at the end of the session).
    fn finished(&self, started_at: DateTime<Utc>) -> FinishedRecording {
        let duration_ms = i64::try_from(self.duration_ms).unwrap_or(i64::MAX);
        FinishedRecording {
            ended_at: started_at + chrono::Duration::milliseconds(duration_ms),
            duration_ms,
            bytes: i64::try_from(self.bytes).unwrap_or(i64::MAX),
            sha256: self.sha256.clone(),
            dropped_packets: 0,
            complete: false,
        }
    }
}

/// Repairs a file of `kind` in place: its length and duration after the repair.
fn repair_file(path: &Path, kind: MediaKind) -> io::Result<(u64, u64)> {
    match kind {
        MediaKind::CallAudio => {
            let h = wav::repair(path)?;
            Ok((
                h.file_len(),
                h.frames() * 1000 / u64::from(wav::SAMPLE_RATE),
            ))
        }
        MediaKind::VisitVideo => match webm::repair(path) {
            Ok(f) => Ok((f.bytes, f.duration_ms)),
            Err(webm::WebmError::Io { source, .. }) => Err(source),
            // Not a file our writer made (or its head is cut off): nothing to repair by, and
            // nothing gained by waiting. Chained as it is, with no duration, like a WAV whose
            // repair failed at the end of a call.
            Err(e @ webm::WebmError::NotOurs { .. }) => {
                tracing::error!(path = %path.display(), error = %e,
                    "recording left in progress cannot be repaired; chained as it is");
                Ok((std::fs::metadata(path)?.len(), 0))
            }
            Err(e) => Err(io::Error::other(e.to_string())),
        },
    }
}

/// The file of a recording left in progress, repaired and hashed; `None` to leave it.
async fn recover_file(
    dir: &Path,
    rec: &crate::store::Recording,
    whose: Whose,
) -> Option<Recovered> {
    let Some(path) = chain::resolve(dir, &rec.path) else {
        tracing::error!(recording = %rec.id, path = %rec.path, "recording path leaves the recordings directory; left in progress");
        return None;
    };
    let Some(kind) = MediaKind::of_recording(&rec.format, &rec.path) else {
        tracing::error!(recording = %rec.id, format = %rec.format, path = %rec.path,
            "recording left in progress is of a format this build does not know; left in progress");
        return None;
    };
    let (p, d) = (path.clone(), dir.to_path_buf());
    let repaired = tokio::task::spawn_blocking(move || {
        if !d.is_dir() {
            return Err(io::Error::other("the recordings directory is not there"));
        }
        let (bytes, duration_ms) = repair_file(&p, kind)?;
        Ok(Recovered {
            bytes,
            duration_ms,
            sha256: hash_file(&p)?,
        })
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))
    .and_then(|r| r);
    match repaired {
        Ok(r) => Some(r),
        Err(e) if e.kind() == io::ErrorKind::NotFound && whose == Whose::DeadNode => {
            tracing::warn!(recording = %rec.id, node = %rec.node_id, path = %path.display(),
                "a dead node's recording is not on this node's recording.dir; left in progress \
                 for that node's restart");
            None
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::error!(recording = %rec.id, path = %path.display(),
                "recording left in progress has no file; chained as empty (verification reports it removed)");
            Some(Recovered {
                bytes: 0,
                duration_ms: 0,
                sha256: hex::encode(Sha256::digest(b"")),
            })
        }
        Err(e) => {
            tracing::error!(recording = %rec.id, path = %path.display(), error = %e,
                "recording left in progress cannot be read now; left for the next start");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::engine::RtpFields;
    use crate::media::relay::Side;

    fn recorder(dir: &Path) -> Recorder {
        Recorder::start(&RecordingConfig {
            dir: dir.to_path_buf(),
            queue_packets: 1024,
            flush_interval_ms: 100,
            purge_interval_secs: 3600,
        })
        .unwrap()
    }

    fn send(tap: &Tap, start: Instant, n: u16) {
        let TapSink::Blocking(tx) = &tap.sink else {
            panic!("the recorder's taps are blocking")
        };
        for i in 0..n {
            let rtp = RtpFields {
                ssrc: 1,
                seq: i,
                ts: u32::from(i) * 160,
                pt: 0,
                marker: false,
            };
            let at = start + Duration::from_millis(20 * u64::from(i));
            let p = TapPacket::new(tap.key, Side::B, at, rtp, &[0x42; 160]).unwrap();
            tx.send(p).unwrap();
        }
    }

    /// Packets handed over right after `begin` (before the thread saw the `Open`) are
    /// kept, the file holds them at their place, and the file's hash is returned.
    #[tokio::test]
    async fn the_first_packets_are_kept_and_the_file_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let start = Instant::now();
        let (capture, tap) = r
            .begin("2026/11/25/s1.wav".into(), Law::Ulaw, start)
            .await
            .unwrap();
        send(&tap, start, 50);
        let f = r
            .end(capture, start + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            (f.closed.frames, f.closed.late, f.closed.dropped),
            (8000, 0, 0)
        );
        assert!(!f.closed.write_failed);
        let path = dir.path().join("2026/11/25/s1.wav");
        assert_eq!(hash_file(&path).unwrap(), f.sha256);
        let d = wav::read(&path).unwrap();
        assert!(d.left.iter().all(|&b| b == 0x42), "every packet landed");
        assert!(d.right.iter().all(|&b| b == 0xFF));
        assert_eq!(r.stats().open.load(Ordering::Relaxed), 0);
    }

    /// A write that fails stops the file, not the recorder; the closing repairs the file
    /// to what reached the disk (here the whole frame of a write cut short past the
    /// header's length, as `EFBIG` and `ENOSPC` leave it), and the size, duration and hash
    /// returned are the repaired file's.
    #[tokio::test]
    async fn a_failed_write_is_closed_with_what_reached_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let path = dir.path().join("f.wav");
        let mut cut_short = wav::header(Law::Ulaw, 0).to_vec();
        cut_short.extend_from_slice(&[7, 8, 9]);
        std::fs::write(&path, &cut_short).unwrap();
        // Every write to a read-only descriptor fails.
        let read_only = File::open(&path).unwrap();
        let start = Instant::now();
        let key = r.next_key.fetch_add(1, Ordering::Relaxed);
        let tap = Tap::new(key, TapSink::Blocking(r.packets.clone()));
        r.control
            .send(Control::Open {
                key,
                file: read_only,
                path: path.clone(),
                law: Law::Ulaw,
                start,
                dropped: Arc::clone(&tap.dropped),
            })
            .unwrap();
        send(&tap, start, 50);
        let capture = Capture {
            key,
            relative_path: "f.wav".into(),
            law: Law::Ulaw,
        };
        let f = r
            .end(capture, start + Duration::from_secs(1))
            .await
            .unwrap();
        assert!(f.closed.write_failed);
        assert_eq!(r.stats().write_errors.load(Ordering::Relaxed), 1);
        assert_eq!((f.closed.frames, f.closed.bytes), (1, wav::HEADER_LEN + 2));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), wav::HEADER_LEN + 2);
        assert_eq!(hash_file(&path).unwrap(), f.sha256);
        let d = wav::read(&path).unwrap();
        assert_eq!((d.left, d.right), (vec![7], vec![8]));
        let row = f.finished(Utc::now(), true);
        assert!(
            !row.complete,
            "a file whose writing failed is never complete"
        );
        assert_eq!((row.bytes, row.duration_ms), (60, 0));
        // The recorder goes on with other recordings.
        let (c, _tap) = r.begin("g.wav".into(), Law::Ulaw, start).await.unwrap();
        let g = r.end(c, start + Duration::from_millis(500)).await.unwrap();
        assert!(!g.closed.write_failed);
        assert_eq!(g.closed.frames, 4000);
    }

    /// A file that cannot be repaired is still hashed and chained as it is, with its real
    /// length and the frames that length holds.
    #[test]
    fn a_failed_file_that_cannot_be_repaired_is_hashed_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.wav");
        std::fs::write(&path, vec![0u8; 101]).unwrap();
        let closed = ClosedFile {
            path: path.clone(),
            frames: 10,
            bytes: 78,
            dropped: 0,
            late: 0,
            write_failed: true,
        };
        let f = settle(&path, closed).unwrap();
        // 43 bytes after the header: 21 whole stereo frames, so the duration agrees
        // with the size chained.
        assert_eq!((f.closed.bytes, f.closed.frames), (101, 21));
        assert_eq!(f.sha256, hash_file(&path).unwrap());
    }

    #[tokio::test]
    async fn a_recording_cannot_overwrite_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let now = Instant::now();
        let (c, _tap) = r.begin("a/b.wav".into(), Law::Alaw, now).await.unwrap();
        assert!(matches!(
            r.begin("a/b.wav".into(), Law::Alaw, now).await,
            Err(RecordingError::File { .. })
        ));
        let f = r.end(c, now + Duration::from_millis(500)).await.unwrap();
        assert_eq!(f.closed.frames, 4000);
        assert_eq!(
            wav::read(&dir.path().join("a/b.wav")).unwrap().law,
            Law::Alaw
        );
    }

    #[tokio::test]
    async fn recovery_leaves_a_recording_whose_directory_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let rec = crate::store::Recording {
            id: "rec_1".into(),
            session_id: "s".into(),
            facility_id: "F".into(),
            path: "2026/01/01/s.wav".into(),
            format: "wav-pcmu".into(),
            status: crate::store::RecordingStatus::Recording,
            node_id: "n".into(),
            started_at: Utc::now(),
            ended_at: None,
            duration_ms: None,
            bytes: None,
            sha256: None,
            dropped_packets: 0,
            chain_seq: None,
            purged_at: None,
            participant: Participant::Both,
        };
        let unmounted = dir.path().join("not-mounted");
        for whose in [Whose::Own, Whose::DeadNode] {
            assert!(
                recover_file(&unmounted, &rec, whose).await.is_none(),
                "left for later"
            );
        }
        let missing = recover_file(dir.path(), &rec, Whose::Own)
            .await
            .expect("chained as missing");
        assert_eq!(missing.bytes, 0);
        // A dead node's file this node does not find may be on that node's disk.
        assert!(recover_file(dir.path(), &rec, Whose::DeadNode)
            .await
            .is_none());
        let bad = crate::store::Recording {
            path: "../escape.wav".into(),
            ..rec
        };
        assert!(recover_file(dir.path(), &bad, Whose::Own).await.is_none());
    }
}
