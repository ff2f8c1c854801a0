//! Video-visit recordings: one WebM file per participant, VP8 video and Opus audio exactly
//! as the browser sent them (no decoding, no transcoding), written live, and repaired after
//! a crash.
//!
//! Owns the file format of visit recordings: [`Writer`] (open, `write_video`,
//! `write_audio`, `flush`, `close`) and [`repair`], the same shape as the call recordings'
//! [`wav`](super::wav) module, so the recorder can hold either and the start-up recovery
//! ([`recover_in_progress`](super::recover_in_progress)) can repair either. Called by
//! nobody yet: the visit media path will feed it depacketized frames from its own recorder
//! thread. Calls only `std::fs`; reads no clock (every instant is an argument).
//!
//! # Input
//!
//! A [`VideoFrame`] is one VP8 frame: the reassembled payloads of the RTP packets that
//! share one timestamp, in decode order, with the key-frame flag the depacketizer found. An
//! [`AudioPacket`] is one Opus RTP payload. Both carry their RTP timestamp (90 kHz, 48 kHz)
//! and the instant they arrived.
//!
//! # Why our own writer
//!
//! The crates that write WebM either wrap libwebm (C++ built from source by a build script:
//! a C++ toolchain in every build, and no way to finish a file a crash left), are early
//! parts of larger media frameworks (a dozen crates for one container), or stopped before
//! muxing was done. A recording that must survive a crash needs control over the layout
//! anyway: sizes written 8 bytes wide so they can be filled in later, and rooms reserved for
//! what is known only at the end. The subset needed (one video and one audio track,
//! SimpleBlocks, Cues) is a few hundred lines of EBML (`ebml`) with no dependency, and
//! [`repair`] reads back exactly what the writer writes.
//!
//! # Layout and clusters
//!
//! The file is laid out for writing once, front to back, with places patched in place
//! (see `layout` for the byte map): the Segment and each Cluster start with an 8-byte
//! "unknown" size; a Cluster's size is written when the next one starts, the Segment's at
//! the close. A new Cluster starts at each video key frame (so a seek lands on one), and
//! otherwise when a block is 5 s past the cluster's start, well inside the ±32.767 s a
//! block's 16-bit relative time can reach. A block that would fall more than 32.768 s
//! *before* its cluster (only tracks wildly apart could) is placed at that limit.
//!
//! At a clean close the writer appends Cues (one per cluster that starts with a video key
//! frame), writes a SeekHead into the 96 bytes reserved for it, the Duration into the 11
//! bytes reserved in Info, and the Segment's size: a player seeks without reading the whole
//! file. Until then the file is a live WebM of unknown size, readable as it grows.
//!
//! # Time line and alignment
//!
//! Time 0 is the arrival of the file's first frame, of either track; within a track, frames
//! keep the spacing of their RTP timestamps, and a track whose timestamps jump (a rejoin, a
//! sender restart) is anchored again at arrival (`timeline`). DateUTC in Info holds the wall
//! time of time 0 (the gateway's clock), and [`Finished::started_at`] returns it for the
//! recording's row: the two participants' files of one visit each start at their own first
//! frame, and the console aligns them by the difference of their `started_at`, both read on
//! the gateway's one clock, whatever the clocks of the two devices say.
//!
//! # Crash tolerance
//!
//! Blocks are buffered and written to the file at every new cluster, whenever 256 KiB are
//! waiting, and on [`Writer::flush`] (the recorder's flush interval). A crash therefore
//! leaves a file that plays up to its last flush, with unknown sizes and no Cues; a
//! [`Writer`] dropped without [`Writer::close`] leaves the same (it writes nothing on
//! drop). [`repair`] scans it, cuts it after its last whole block, and finishes it as
//! `close` would have. Repairing a cleanly closed file changes nothing.
//!
//! # Bad input
//!
//! An empty or oversized frame is refused with [`WebmError::BadFrame`] and the writer goes
//! on. Video before the first key frame is dropped (nothing could decode it) and counted,
//! and a frame flagged as a key frame whose VP8 header says otherwise is written as an
//! inter frame (a Cue on it would seek into garbage). A failed write stops the file: every
//! later call answers [`WebmError::Failed`], and the caller repairs what reached the disk.

mod codec;
mod ebml;
mod layout;
mod repair;
mod timeline;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use thiserror::Error;

use layout::{CueList, Layout, Tally, AUDIO_TRACK, CLUSTER_HEAD, VIDEO_TRACK};
pub use repair::repair;
use timeline::TrackClock;

/// The largest frame accepted (a 1080p VP8 key frame is a few hundred KiB).
pub const MAX_FRAME_BYTES: usize = 4 << 20;
/// A cluster is closed once a block is this far past its start.
const CLUSTER_MS: u64 = 5_000;
/// Buffered blocks are written once this many bytes wait.
const FLUSH_BYTES: usize = 256 << 10;
/// The `recordings.format` name of these files.
pub const FORMAT_NAME: &str = "webm-vp8-opus";

/// Why a frame was refused (the writer goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BadFrame {
    #[error("empty")]
    Empty,
    #[error("{len} bytes, more than the {MAX_FRAME_BYTES} accepted")]
    TooLarge { len: usize },
}

/// A track of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

impl std::fmt::Display for Track {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Track::Video => "video",
            Track::Audio => "audio",
        })
    }
}

/// Why a recording could not be written or repaired.
#[derive(Debug, Error)]
pub enum WebmError {
    #[error("recording file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// [`repair`] was given a file this module did not write (or whose head is cut off).
    #[error("recording file {path} is not a sallyport WebM recording: {reason}")]
    NotOurs { path: PathBuf, reason: &'static str },
    #[error("{track} frame refused: {reason}")]
    BadFrame { track: Track, reason: BadFrame },
    /// An earlier write failed; the file is left as it is on disk, for [`repair`].
    #[error("recording file {path}: an earlier write failed, nothing more is written")]
    Failed { path: PathBuf },
}

/// What the tracks are, as far as known when the file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Opus channels for the OpusHead (1 or 2). WebRTC negotiates `opus/48000/2`; a mono
    /// packet decodes into both channels, so 2 loses nothing.
    pub opus_channels: u8,
    /// The video size if signalled; otherwise the first key frame's is written.
    pub video_size: Option<(u16, u16)>,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            opus_channels: 2,
            video_size: None,
        }
    }
}

/// One VP8 frame (the payloads of the RTP packets with one timestamp, reassembled).
#[derive(Debug, Clone, Copy)]
pub struct VideoFrame<'a> {
    pub rtp_ts: u32,
    pub arrival: Instant,
    /// As the depacketizer found it; checked against the VP8 frame tag.
    pub keyframe: bool,
    pub data: &'a [u8],
}

/// One Opus packet (one RTP payload).
#[derive(Debug, Clone, Copy)]
pub struct AudioPacket<'a> {
    pub rtp_ts: u32,
    pub arrival: Instant,
    pub data: &'a [u8],
}

/// A finished file: what its row is finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The wall time of the file's time 0 (its first frame's arrival; the opening when it
    /// has no frame), as stored in Info's DateUTC.
    pub started_at: DateTime<Utc>,
    /// From time 0 to the end of the last frame.
    pub duration_ms: u64,
    /// The file's length.
    pub bytes: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
}

/// What the writer did not write as given, for the recorder's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Video frames dropped because no key frame had come yet.
    pub before_key_frame: u64,
    /// Frames refused ([`WebmError::BadFrame`]).
    pub refused: u64,
    /// Times a track was anchored again at arrival (timestamp jumps).
    pub resyncs: u64,
    /// Blocks moved forward to stay within their cluster's reach.
    pub clamped: u64,
}

/// An open cluster.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    /// The Cluster element's offset in the file.
    at: u64,
    time_ms: u64,
}

/// A WebM recording being written (one participant of a visit).
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
    layout: Layout,
    /// Bytes in the file; `pending` goes after them.
    written: u64,
    /// Blocks not yet written to the file.
    pending: Vec<u8>,
    cluster: Option<Cluster>,
    /// The opening's instant and wall time: the wall time of any instant is derived from it.
    opened: (Instant, DateTime<Utc>),
    /// Time 0: the first frame's arrival.
    origin: Option<Instant>,
    started_at: DateTime<Utc>,
    video: TrackClock,
    audio: TrackClock,
    /// The track's size has been taken from a key frame (or was signalled).
    size_known: bool,
    key_seen: bool,
    cues: CueList,
    tally: Tally,
    counters: Counters,
    failed: bool,
}

/// Nanoseconds from 1970 to 2001-01-01 UTC, DateUTC's epoch.
const EPOCH_2001_NS: i64 = 978_307_200_000_000_000;

fn date_ns(wall: DateTime<Utc>) -> i64 {
    wall.timestamp_nanos_opt()
        .map_or(0, |ns| ns.saturating_sub(EPOCH_2001_NS))
}

fn date_from_ns(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns.saturating_add(EPOCH_2001_NS))
}

impl Writer {
    /// Creates the file at `path` (never over an existing one; parent directories made)
    /// and writes its head. `now` and `wall_now` are the same moment on the monotonic and
    /// the wall clock: the wall time of time 0 is derived from them.
    pub fn open(
        path: &Path,
        params: Params,
        now: Instant,
        wall_now: DateTime<Utc>,
    ) -> Result<Writer, WebmError> {
        let head = layout::header(&params, date_ns(wall_now));
        let layout = layout::parse_layout(&head).map_err(|reason| WebmError::NotOurs {
            path: path.to_path_buf(),
            reason,
        })?;
        let file = create(path, &head).map_err(|source| WebmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            layout,
            written: head.len() as u64,
            pending: Vec::with_capacity(64 << 10),
            cluster: None,
            opened: (now, wall_now),
            origin: None,
            started_at: wall_now,
            video: TrackClock::new(codec::VIDEO_RATE),
            audio: TrackClock::new(codec::OPUS_RATE),
            size_known: params.video_size.is_some(),
            key_seen: false,
            cues: CueList::default(),
            tally: Tally::default(),
            counters: Counters::default(),
            failed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The wall time of time 0 so far (the opening's until the first frame).
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Adds a VP8 frame.
    pub fn write_video(&mut self, frame: VideoFrame<'_>) -> Result<(), WebmError> {
        self.check(Track::Video, frame.data)?;
        let size = codec::vp8_key_frame_size(frame.data);
        let key = frame.keyframe && size.is_some();
        if !key && !self.key_seen {
            self.counters.before_key_frame += 1;
            return Ok(());
        }
        self.key_seen = true;
        if let (Some((w, h)), false) = (size.filter(|_| key), self.size_known) {
            self.size_known = true;
            if let Some((w_at, h_at)) = self.layout.size_at {
                self.patch(w_at, &w.to_be_bytes())?;
                self.patch(h_at, &h.to_be_bytes())?;
            }
        }
        let ms = self.place(Track::Video, frame.rtp_ts, frame.arrival)?;
        self.put_block(VIDEO_TRACK, ms, key, frame.data)
    }

    /// Adds an Opus packet.
    pub fn write_audio(&mut self, packet: AudioPacket<'_>) -> Result<(), WebmError> {
        self.check(Track::Audio, packet.data)?;
        let ms = self.place(Track::Audio, packet.rtp_ts, packet.arrival)?;
        // Every Opus packet is a point a decoder can start from (after the pre-roll).
        self.put_block(AUDIO_TRACK, ms, true, packet.data)
    }

    /// Writes the buffered blocks to the file (the recorder calls it on its flush interval).
    pub fn flush(&mut self) -> Result<(), WebmError> {
        if self.failed {
            return Err(self.failed_error());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.file.write_all_at(&self.pending, self.written) {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(source) => Err(self.fail(source)),
        }
    }

    /// Finishes the file: the last cluster's size, the Cues, SeekHead, Duration and the
    /// Segment's size. The caller syncs and hashes it (as for WAV recordings). After a
    /// failed write this answers [`WebmError::Failed`]: [`repair`] the file instead.
    pub fn close(mut self) -> Result<(Finished, Counters), WebmError> {
        self.end_cluster()?;
        self.flush()?;
        let bytes = layout::finish(
            &self.file,
            &self.layout,
            self.written,
            self.cues.cues(),
            self.tally.duration_ms(),
        )
        .map_err(|source| self.fail(source))?;
        let finished = Finished {
            started_at: self.started_at,
            duration_ms: self.tally.duration_ms(),
            bytes,
            video_frames: self.tally.video_frames,
            audio_frames: self.tally.audio_frames,
        };
        Ok((finished, self.counters))
    }

    /// Refuses what cannot be written: after a failure, an empty or oversized frame.
    fn check(&mut self, track: Track, data: &[u8]) -> Result<(), WebmError> {
        if self.failed {
            return Err(self.failed_error());
        }
        let reason = match data.len() {
            0 => BadFrame::Empty,
            len if len > MAX_FRAME_BYTES => BadFrame::TooLarge { len },
            _ => return Ok(()),
        };
        self.counters.refused += 1;
        Err(WebmError::BadFrame { track, reason })
    }

    /// The frame's time in ms; the first frame of the file sets time 0 and its wall time.
    fn place(&mut self, track: Track, ts: u32, arrival: Instant) -> Result<u64, WebmError> {
        let origin = match self.origin {
            Some(o) => o,
            None => {
                self.origin = Some(arrival);
                self.started_at = wall_at(self.opened, arrival);
                let date = date_ns(self.started_at).to_be_bytes();
                self.patch(self.layout.date_at, &date)?;
                arrival
            }
        };
        let arrival_ms = timeline::ms_since(origin, arrival);
        let placed = match track {
            Track::Video => self.video.place(ts, arrival_ms),
            Track::Audio => self.audio.place(ts, arrival_ms),
        };
        if placed.resynced {
            self.counters.resyncs += 1;
        }
        Ok(placed.ms)
    }

    /// Appends a SimpleBlock, starting a new cluster first when the policy says so.
    fn put_block(&mut self, track: u8, ms: u64, key: bool, data: &[u8]) -> Result<(), WebmError> {
        let current = match self.cluster {
            Some(c)
                if ms < c.time_ms
                    || (ms - c.time_ms < CLUSTER_MS && !(track == VIDEO_TRACK && key)) =>
            {
                c
            }
            _ => self.start_cluster(ms, track, key)?,
        };
        let relative = i64::try_from(ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(current.time_ms).unwrap_or(i64::MAX));
        let relative = i16::try_from(relative).unwrap_or_else(|_| {
            self.counters.clamped += 1;
            if relative < 0 {
                i16::MIN
            } else {
                i16::MAX
            }
        });
        let placed_ms = current.time_ms.saturating_add_signed(relative.into());
        let out = &mut self.pending;
        ebml::write_id(out, ebml::id::SIMPLE_BLOCK);
        ebml::write_size(out, 4 + data.len() as u64);
        out.push(0x80 | track); // the track number, a 1-byte variable-size integer
        out.extend_from_slice(&relative.to_be_bytes());
        out.push(if key { 0x80 } else { 0 });
        out.extend_from_slice(data);
        self.tally.on_block(track, placed_ms, data);
        if self.pending.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Closes the open cluster, writes what is buffered and starts a cluster at `ms`.
    fn start_cluster(&mut self, ms: u64, track: u8, key: bool) -> Result<Cluster, WebmError> {
        self.end_cluster()?;
        self.flush()?;
        let at = self.written + self.pending.len() as u64;
        ebml::write_id(&mut self.pending, ebml::id::CLUSTER);
        self.pending.extend_from_slice(&ebml::UNKNOWN_SIZE);
        ebml::uint(&mut self.pending, ebml::id::TIMESTAMP, ms);
        self.cues.on_cluster(ms, at, track, key);
        let c = Cluster { at, time_ms: ms };
        self.cluster = Some(c);
        Ok(c)
    }

    /// Writes the open cluster's size.
    fn end_cluster(&mut self) -> Result<(), WebmError> {
        let Some(c) = self.cluster.take() else {
            return Ok(());
        };
        let end = self.written + self.pending.len() as u64;
        let size = end.saturating_sub(c.at + CLUSTER_HEAD);
        self.patch(c.at + 4, &ebml::size8(size))
    }

    /// Overwrites bytes at `at`, in the file or in the buffer, wherever they are now.
    fn patch(&mut self, at: u64, bytes: &[u8]) -> Result<(), WebmError> {
        if self.failed {
            return Err(self.failed_error());
        }
        let on_disk = usize::try_from(self.written.saturating_sub(at))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let (disk, buffered) = bytes.split_at(on_disk);
        if !disk.is_empty() {
            if let Err(source) = self.file.write_all_at(disk, at) {
                return Err(self.fail(source));
            }
        }
        let from = usize::try_from((at + on_disk as u64).saturating_sub(self.written))
            .unwrap_or(usize::MAX);
        if let Some(dst) = self
            .pending
            .get_mut(from..from.saturating_add(buffered.len()))
        {
            dst.copy_from_slice(buffered);
        }
        Ok(())
    }

    fn fail(&mut self, source: io::Error) -> WebmError {
        self.failed = true;
        WebmError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn failed_error(&self) -> WebmError {
        WebmError::Failed {
            path: self.path.clone(),
        }
    }
}

/// The wall time of `at`, from a moment known on both clocks.
fn wall_at((then, wall): (Instant, DateTime<Utc>), at: Instant) -> DateTime<Utc> {
    let delta = |d| TimeDelta::from_std(d).unwrap_or(TimeDelta::zero());
    let moved = if at >= then {
        wall.checked_add_signed(delta(at.duration_since(then)))
    } else {
        wall.checked_sub_signed(delta(then.duration_since(at)))
    };
    moved.unwrap_or(wall)
}

/// Creates the file with its head; a file whose head cannot be written is removed again
/// (no row will name it).
fn create(path: &Path, head: &[u8]) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    if let Err(e) = file.write_all_at(head, 0) {
        drop(file);
        if let Err(rm) = std::fs::remove_file(path) {
            tracing::error!(path = %path.display(), error = %rm,
                "cannot remove a recording file whose head could not be written");
        }
        return Err(e);
    }
    Ok(file)
}

#[cfg(test)]
mod tests;
