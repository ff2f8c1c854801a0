//! Finishing a file that a crash (or a failed write) left unfinished.
//!
//! Such a file has its head, clusters whose sizes may be "unknown", no Cues, no Duration,
//! and perhaps a block cut off at the end (or bytes a failed write left past it). The scan
//! walks the clusters from the end of the head, reading only the heads of elements (and
//! the first bytes of each block: track, time, flags, the Opus TOC), and stops at the first
//! thing that is not a whole block of a whole cluster: a cut-off element, an unknown ID,
//! Cues (a finished file's, rebuilt), the end. The file is cut after the last whole block,
//! the last cluster's size made true, and the file finished as the writer's close does
//! (`layout::finish`), from the same tally of blocks, so a repaired file is what a clean
//! close at that block would have written, and repairing a finished file changes nothing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::ebml::{self, id};
use super::layout::{self, CueList, Layout, Tally, AUDIO_TRACK, HEAD_MAX, VIDEO_TRACK};
use super::{date_from_ns, Finished, WebmError};

/// Repairs the recording at `path` in place (see the module doc) and syncs it. Returns the
/// file as repaired. A file this module did not write, or whose head is cut off, is
/// [`WebmError::NotOurs`] and left untouched.
pub fn repair(path: &Path) -> Result<Finished, WebmError> {
    let io_err = |source| WebmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut head = vec![0u8; usize::try_from(len).unwrap_or(HEAD_MAX).min(HEAD_MAX)];
    let n = read_at_most(&file, 0, &mut head).map_err(io_err)?;
    head.truncate(n);
    let layout = layout::parse_layout(&head).map_err(|reason| WebmError::NotOurs {
        path: path.to_path_buf(),
        reason,
    })?;
    let scan = scan(&file, &layout, len).map_err(io_err)?;
    for (at, size) in &scan.sizes {
        file.write_all_at(&ebml::size8(*size), at + 4)
            .map_err(io_err)?;
    }
    let bytes = layout::finish(
        &file,
        &layout,
        scan.end,
        scan.cues.cues(),
        scan.tally.duration_ms(),
    )
    .map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    let date = usize::try_from(layout.date_at)
        .ok()
        .and_then(|at| head.get(at..at + 8))
        .and_then(|d| <[u8; 8]>::try_from(d).ok())
        .map_or(0, i64::from_be_bytes);
    Ok(Finished {
        started_at: date_from_ns(date),
        duration_ms: scan.tally.duration_ms(),
        bytes,
        video_frames: scan.tally.video_frames,
        audio_frames: scan.tally.audio_frames,
    })
}

/// What the scan found.
#[derive(Debug, Default)]
struct Scan {
    /// Where the kept clusters end.
    end: u64,
    /// Clusters whose size field must be written: (offset of the Cluster, data size).
    sizes: Vec<(u64, u64)>,
    cues: CueList,
    tally: Tally,
}

/// How a cluster's scan ended.
enum After {
    /// Whole: the next top-level element starts here.
    Next(u64),
    /// Something cut off or foreign: nothing after the last whole block is kept.
    Stop,
}

fn scan(file: &File, layout: &Layout, len: u64) -> io::Result<Scan> {
    let mut s = Scan {
        end: layout.clusters_at,
        ..Scan::default()
    };
    let mut pos = layout.clusters_at;
    let mut buf = [0u8; 32];
    while pos < len {
        let n = read_at_most(file, pos, &mut buf)?;
        let Some(h) = buf.get(..n).and_then(ebml::read_head) else {
            break;
        };
        if h.id != id::CLUSTER {
            break;
        }
        let data = pos + h.head_len as u64;
        let limit = h
            .size
            .map_or(len, |size| data.saturating_add(size).min(len));
        let (kept, after) = scan_cluster(file, &mut s, pos, data, limit, h.size.is_none())?;
        let Some(kept) = kept else {
            break; // no whole block: the cluster is dropped with what follows
        };
        if h.size != Some(kept - data) {
            s.sizes.push((pos, kept - data));
        }
        s.end = kept;
        match after {
            After::Next(next) if next == kept => pos = next,
            _ => break,
        }
    }
    Ok(s)
}

/// Scans one cluster's children in `data..limit`: returns where its last whole block ends
/// (if any) and how the scan ended.
fn scan_cluster(
    file: &File,
    s: &mut Scan,
    cluster_at: u64,
    data: u64,
    limit: u64,
    unknown_size: bool,
) -> io::Result<(Option<u64>, After)> {
    let mut buf = [0u8; 32];
    let mut time = None;
    let mut kept = None;
    let mut p = data;
    while p < limit {
        let n = read_at_most(file, p, &mut buf)?;
        let got = buf.get(..n).unwrap_or(&[]);
        let Some(h) = ebml::read_head(got) else {
            return Ok((kept, After::Stop));
        };
        if unknown_size && matches!(h.id, id::CLUSTER | id::CUES) {
            return Ok((kept, After::Next(p)));
        }
        let Some(end) = h
            .total()
            .and_then(|t| p.checked_add(t))
            .filter(|&e| e <= limit)
        else {
            return Ok((kept, After::Stop)); // cut off
        };
        let body = got.get(h.head_len..).unwrap_or(&[]);
        let size = h.size.unwrap_or(0);
        match h.id {
            id::TIMESTAMP if time.is_none() && size <= 8 => {
                let Some(t) = body
                    .get(..usize::try_from(size).unwrap_or(usize::MAX))
                    .and_then(ebml::read_uint)
                else {
                    return Ok((kept, After::Stop));
                };
                time = Some(t);
            }
            id::SIMPLE_BLOCK => {
                let (Some(t), Some(block)) = (time, parse_block(body, size)) else {
                    return Ok((kept, After::Stop));
                };
                if kept.is_none() {
                    s.cues.on_cluster(t, cluster_at, block.track, block.key);
                }
                let ms = t.saturating_add_signed(block.relative.into());
                s.tally.on_block(block.track, ms, block.payload);
                kept = Some(end);
            }
            _ => return Ok((kept, After::Stop)),
        }
        p = end;
    }
    Ok((kept, After::Next(p)))
}

/// The head of a SimpleBlock this writer made.
struct Block<'a> {
    track: u8,
    relative: i16,
    key: bool,
    /// The first bytes of the payload (as many as were read).
    payload: &'a [u8],
}

fn parse_block(body: &[u8], size: u64) -> Option<Block<'_>> {
    if size < 5 {
        return None; // track, time, flags and at least one byte of payload
    }
    let track = body.first()? & 0x7F;
    if *body.first()? & 0x80 == 0 || !matches!(track, VIDEO_TRACK | AUDIO_TRACK) {
        return None;
    }
    let relative = i16::from_be_bytes([*body.get(1)?, *body.get(2)?]);
    let key = body.get(3)? & 0x80 != 0;
    let shown = usize::try_from(size - 4).unwrap_or(usize::MAX);
    let payload = body.get(4..)?;
    Some(Block {
        track,
        relative,
        key,
        payload: payload.get(..shown.min(payload.len()))?,
    })
}

/// Reads from `at` until `buf` is full or the file ends; returns the bytes read.
fn read_at_most(file: &File, at: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match file.read_at(rest, at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
