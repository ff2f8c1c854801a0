//! The recorder thread: takes the packets every call's tap hands over, aligns them per
//! recording and writes the files, so the media workers never touch a disk.
//!
//! One thread serves every recording of the node. Packets arrive on one bounded channel
//! (the taps' `try_send` drop and count when it is full); opening and closing arrive on an
//! unbounded control channel, checked before every batch of packets, so a recording is
//! open before its first packet and a close is handled after the packets already queued
//! for it. Every `flush_interval` each open file gets the samples that became final and a
//! header that is true for the file's new length: a crash leaves a playable file up to
//! the last flush.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, warn};

use super::align::{Aligner, Pushed};
use super::wav::{self, Law};
use crate::media::engine::TapPacket;

/// Packets handled between two looks at the control channel and the flush clock.
const BATCH: usize = 256;

/// What the recorder is told besides packets.
pub(crate) enum Control {
    Open {
        key: u64,
        file: File,
        path: PathBuf,
        law: Law,
        start: Instant,
        dropped: Arc<AtomicU64>,
    },
    Close {
        key: u64,
        end: Instant,
        reply: oneshot::Sender<Result<ClosedFile, std::io::Error>>,
    },
}

/// A recording file the recorder closed (hashing is left to the caller).
#[derive(Debug, Clone)]
pub struct ClosedFile {
    pub path: PathBuf,
    /// Stereo frames (= samples per channel) in the file. As the recorder counted them:
    /// after a write failure the closing takes them from the repaired file instead.
    pub frames: u64,
    /// The file's length in bytes (counted like `frames`).
    pub bytes: u64,
    /// Packets the tap dropped because the recorder was behind.
    pub dropped: u64,
    /// Packets that arrived after their place was written.
    pub late: u64,
    /// A write failed (disk full, I/O error): the file holds the audio up to that point,
    /// perhaps past what its header says (a write cut short); the closing repairs it and
    /// the recording is finished `incomplete`.
    pub write_failed: bool,
}

/// The recorder's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub open: AtomicU64,
    pub packets: AtomicU64,
    pub late: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Files that stopped growing after a write error (finished `incomplete`).
    pub write_errors: AtomicU64,
    /// Recordings whose file could not be created (the call went on unrecorded).
    pub start_errors: AtomicU64,
}

struct OpenFile {
    path: PathBuf,
    file: File,
    aligner: Aligner,
    data_len: u64,
    dropped: Arc<AtomicU64>,
    failed: bool,
}

impl OpenFile {
    /// Appends `samples` and makes the header true for the new length.
    fn append(&mut self, samples: &[u8], stats: &RecorderStats) {
        if samples.is_empty() || self.failed {
            return;
        }
        let written = self.file.write_all(samples).and_then(|()| {
            self.data_len += samples.len() as u64;
            let len = u32::try_from(self.data_len).unwrap_or(u32::MAX - 1);
            wav::write_sizes(&self.file, self.aligner.law(), len)
        });
        match written {
            Ok(()) => {
                stats
                    .bytes_written
                    .fetch_add(samples.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Nothing more is written to this file; later audio is lost (counted), the
                // call goes on. A write cut short may have left samples past the length the
                // header was last made true for: the closing repairs the file.
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                error!(path = %self.path.display(), error = %e, "recording write failed");
                self.failed = true;
            }
        }
    }
}

pub(crate) struct RecorderThread {
    pub(crate) packets: Receiver<TapPacket>,
    pub(crate) control: Receiver<Control>,
    pub(crate) flush_interval: Duration,
    pub(crate) stats: Arc<RecorderStats>,
}

/// What the thread holds between messages.
struct State {
    open: HashMap<u64, OpenFile>,
    /// Closes seen while looking for an `Open` (handled at the top of the next loop, after
    /// the packets queued before them).
    deferred: VecDeque<Control>,
    scratch: Vec<u8>,
}

impl RecorderThread {
    pub(crate) fn run(self) {
        let mut st = State {
            open: HashMap::new(),
            deferred: VecDeque::new(),
            scratch: Vec::with_capacity(64 * 1024),
        };
        let mut next_flush = Instant::now() + self.flush_interval; // clock-ok: real disk pacing
        loop {
            if !self.controls(&mut st) {
                break;
            }
            let wait = next_flush.saturating_duration_since(Instant::now()); // clock-ok
            match self
                .packets
                .recv_timeout(wait.min(Duration::from_millis(50)))
            {
                Ok(p) => {
                    self.route(&mut st, &p);
                    for _ in 1..BATCH {
                        match self.packets.try_recv() {
                            Ok(p) => self.route(&mut st, &p),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now(); // clock-ok: the media workers' time line
            if now >= next_flush {
                self.flush_all(&mut st, now);
                next_flush = Instant::now() + self.flush_interval; // clock-ok
            }
        }
        // Shutting down: what is final goes to disk; the rows stay `recording` and the next
        // start closes them as incomplete.
        self.flush_all(&mut st, Instant::now()); // clock-ok
    }

    fn flush_all(&self, st: &mut State, now: Instant) {
        for f in st.open.values_mut() {
            st.scratch.clear();
            f.aligner.drain_ready(now, &mut st.scratch);
            f.append(&st.scratch, &self.stats);
        }
    }

    fn route(&self, st: &mut State, p: &TapPacket) {
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        if !st.open.contains_key(&p.key) {
            // Its `Open` may still be queued: the tap is attached right after it is sent.
            self.take_opens(st);
        }
        let pushed = st.open.get_mut(&p.key).map(|f| f.aligner.push(p));
        if pushed == Some(Pushed::Late) {
            self.stats.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies the queued `Open`s now and keeps the `Close`s for the top of the loop.
    fn take_opens(&self, st: &mut State) {
        while let Ok(c) = self.control.try_recv() {
            match c {
                Control::Open { .. } => self.apply(st, c),
                close => st.deferred.push_back(close),
            }
        }
    }

    /// Handles queued control messages; `false` when every handle is gone.
    fn controls(&self, st: &mut State) -> bool {
        while let Some(c) = st.deferred.pop_front() {
            self.apply(st, c);
        }
        loop {
            match self.control.try_recv() {
                Ok(c) => self.apply(st, c),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&self, st: &mut State, c: Control) {
        match c {
            Control::Open {
                key,
                file,
                path,
                law,
                start,
                dropped,
            } => {
                self.stats.open.fetch_add(1, Ordering::Relaxed);
                let f = OpenFile {
                    path,
                    file,
                    aligner: Aligner::new(law, start),
                    data_len: 0,
                    dropped,
                    failed: false,
                };
                st.open.insert(key, f);
            }
            Control::Close { key, end, reply } => {
                // Packets already queued for it come first.
                while let Ok(p) = self.packets.try_recv() {
                    self.route(st, &p);
                }
                let result = match st.open.remove(&key) {
                    Some(f) => {
                        self.stats.open.fetch_sub(1, Ordering::Relaxed);
                        Ok(self.close(f, end, &mut st.scratch))
                    }
                    None => Err(std::io::Error::other("recording is not open")),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Writes the rest (padding to `end`). Syncing and hashing are the caller's, off this
    /// thread, so one slow disk sync never holds up every other recording.
    fn close(&self, mut f: OpenFile, end: Instant, scratch: &mut Vec<u8>) -> ClosedFile {
        scratch.clear();
        f.aligner.finish(end, scratch);
        f.append(scratch, &self.stats);
        let late = f.aligner.stats().late;
        if late > 0 {
            warn!(path = %f.path.display(), late, "recording: packets arrived too late");
        }
        ClosedFile {
            frames: f.data_len / 2,
            bytes: wav::HEADER_LEN + f.data_len,
            dropped: f.dropped.load(Ordering::Relaxed),
            late,
            write_failed: f.failed,
            path: f.path,
        }
    }
}
