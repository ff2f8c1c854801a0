//! The file this writer makes, byte for byte where it matters: the head written at the
//! start (with room reserved for what is only known at the end), finding that room again
//! in a file ([`parse_layout`]), and finishing a file ([`finish`]): Cues appended, the
//! SeekHead, Duration and Segment size written into their reserved places. The writer's
//! close and [`super::repair`] finish a file through the same code from the same facts
//! ([`Tally`], [`CueList`]), so repairing a cleanly closed file changes no byte.
//!
//! ```text
//! EBML header            DocType webm, DocTypeVersion 4
//! Segment (size: 8 bytes, unknown until finished)
//!   Void (96 bytes)      → SeekHead (Info, Tracks, Cues) + Void at the finish
//!   Info                 TimestampScale 1 ms, MuxingApp/WritingApp, DateUTC (8 bytes,
//!                        the time line's origin), Void (11 bytes) → Duration at the finish
//!   Tracks               1: V_VP8, PixelWidth/PixelHeight 2 bytes each (from the first
//!                        key frame); 2: A_OPUS, OpusHead, CodecDelay, SeekPreRoll
//!   Cluster (size: 8 bytes, written when the next one starts)
//!     Timestamp, SimpleBlock…
//!   …
//!   Cues                 at the finish: one CuePoint per cluster that starts with a video
//!                        key frame (per cluster when there is no video)
//! ```

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::codec::{self, OPUS_PRE_SKIP, OPUS_RATE, OPUS_SEEK_PRE_ROLL_NS};
use super::ebml::{self, id, Head};
use super::Params;

pub(crate) const VIDEO_TRACK: u8 = 1;
pub(crate) const AUDIO_TRACK: u8 = 2;
/// Room for the SeekHead at the start of the Segment (three entries take 68 bytes).
const SEEK_SLOT: usize = 96;
/// Room for Duration in Info (ID, size, 8-byte float).
const DURATION_SLOT: usize = 11;
/// Bytes of a Cluster's head: ID and the 8-byte size.
pub(crate) const CLUSTER_HEAD: u64 = 12;
/// The track size written until a key frame tells the real one (PixelWidth must not be 0).
const PLACEHOLDER_SIZE: (u16, u16) = (640, 480);
/// A file's head is read this far to find its layout (the head is about 400 bytes).
pub(crate) const HEAD_MAX: usize = 4096;

/// Where the places written after the head are, as offsets in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The Segment's 8-byte size.
    pub(crate) segment_size_at: u64,
    /// The Segment's data: positions in SeekHead and Cues count from here.
    pub(crate) segment_data: u64,
    /// The reserved SeekHead room ([`SEEK_SLOT`] bytes).
    pub(crate) seek_at: u64,
    pub(crate) info_at: u64,
    pub(crate) tracks_at: u64,
    /// DateUTC's 8 data bytes.
    pub(crate) date_at: u64,
    /// The Duration room ([`DURATION_SLOT`] bytes).
    pub(crate) duration_at: u64,
    /// PixelWidth's and PixelHeight's 2 data bytes each, when the video track has them so.
    pub(crate) size_at: Option<(u64, u64)>,
    /// Where the first Cluster starts (the end of the head).
    pub(crate) clusters_at: u64,
}

/// The head of a new file: EBML header, Segment of unknown size, the reserved SeekHead
/// room, Info (DateUTC `date_ns`: nanoseconds since 2001-01-01 UTC) and Tracks.
pub(crate) fn header(params: &Params, date_ns: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    ebml::master(&mut out, id::EBML, |b| {
        ebml::uint(b, id::EBML_VERSION, 1);
        ebml::uint(b, id::EBML_READ_VERSION, 1);
        ebml::uint(b, id::EBML_MAX_ID_LENGTH, 4);
        ebml::uint(b, id::EBML_MAX_SIZE_LENGTH, 8);
        ebml::bytes(b, id::DOC_TYPE, b"webm");
        ebml::uint(b, id::DOC_TYPE_VERSION, 4);
        ebml::uint(b, id::DOC_TYPE_READ_VERSION, 2);
    });
    ebml::write_id(&mut out, id::SEGMENT);
    out.extend_from_slice(&ebml::UNKNOWN_SIZE);
    ebml::void(&mut out, SEEK_SLOT);
    ebml::master(&mut out, id::INFO, |b| {
        ebml::uint(b, id::TIMESTAMP_SCALE, 1_000_000);
        ebml::bytes(b, id::MUXING_APP, b"sallyport");
        ebml::bytes(b, id::WRITING_APP, b"sallyport");
        ebml::bytes(b, id::DATE_UTC, &date_ns.to_be_bytes());
        ebml::void(b, DURATION_SLOT);
    });
    let (w, h) = params.video_size.unwrap_or(PLACEHOLDER_SIZE);
    let channels = params.opus_channels.clamp(1, 2);
    ebml::master(&mut out, id::TRACKS, |b| {
        ebml::master(b, id::TRACK_ENTRY, |t| {
            ebml::uint(t, id::TRACK_NUMBER, VIDEO_TRACK.into());
            ebml::uint(t, id::TRACK_UID, VIDEO_TRACK.into());
            ebml::uint(t, id::TRACK_TYPE, 1);
            ebml::bytes(t, id::CODEC_ID, b"V_VP8");
            ebml::uint(t, id::FLAG_LACING, 0);
            ebml::master(t, id::VIDEO, |v| {
                ebml::uint_fixed(v, id::PIXEL_WIDTH, w.max(1).into(), 2);
                ebml::uint_fixed(v, id::PIXEL_HEIGHT, h.max(1).into(), 2);
            });
        });
        ebml::master(b, id::TRACK_ENTRY, |t| {
            ebml::uint(t, id::TRACK_NUMBER, AUDIO_TRACK.into());
            ebml::uint(t, id::TRACK_UID, AUDIO_TRACK.into());
            ebml::uint(t, id::TRACK_TYPE, 2);
            ebml::bytes(t, id::CODEC_ID, b"A_OPUS");
            ebml::uint(t, id::FLAG_LACING, 0);
            let delay_ns = u64::from(OPUS_PRE_SKIP) * 1_000_000_000 / u64::from(OPUS_RATE);
            ebml::uint(t, id::CODEC_DELAY, delay_ns);
            ebml::uint(t, id::SEEK_PRE_ROLL, OPUS_SEEK_PRE_ROLL_NS);
            ebml::bytes(t, id::CODEC_PRIVATE, &codec::opus_head(channels));
            ebml::master(t, id::AUDIO, |a| {
                ebml::float64(a, id::SAMPLING_FREQUENCY, f64::from(OPUS_RATE));
                ebml::uint(a, id::CHANNELS, channels.into());
            });
        });
    });
    out
}

/// The children of the master element whose data is `b[start..end]`: (offset, head).
/// Stops at the first child that is cut off or has an unknown size.
fn children(b: &[u8], start: usize, end: usize) -> Vec<(usize, Head)> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let Some(h) = b.get(pos..end).and_then(ebml::read_head) else {
            break;
        };
        let Some(total) = h.total().and_then(|t| usize::try_from(t).ok()) else {
            break;
        };
        if pos.saturating_add(total) > end {
            break;
        }
        out.push((pos, h));
        pos += total;
    }
    out
}

/// The data of the element at `at`.
fn data_of(b: &[u8], at: usize, h: Head) -> Option<&[u8]> {
    let start = at.checked_add(h.head_len)?;
    b.get(start..start.checked_add(usize::try_from(h.size?).ok()?)?)
}

/// Finds the layout in the first bytes of a file this module wrote (not WebM in general).
pub(crate) fn parse_layout(b: &[u8]) -> Result<Layout, &'static str> {
    let ebml_head = ebml::read_head(b).ok_or("no EBML header")?;
    let ebml_end = ebml_head
        .total()
        .and_then(|t| usize::try_from(t).ok())
        .filter(|&t| ebml_head.id == id::EBML && t <= b.len())
        .ok_or("no EBML header")?;
    let webm = children(b, ebml_head.head_len, ebml_end)
        .iter()
        .any(|(at, h)| h.id == id::DOC_TYPE && data_of(b, *at, *h) == Some(&b"webm"[..]));
    if !webm {
        return Err("not WebM");
    }
    let seg = b
        .get(ebml_end..)
        .and_then(ebml::read_head)
        .filter(|h| h.id == id::SEGMENT && h.size_len == 8)
        .ok_or("no Segment with an 8-byte size")?;
    let segment_data = ebml_end + seg.head_len;
    let mut layout = Layout {
        segment_size_at: (ebml_end + ebml::id_len(id::SEGMENT)) as u64,
        segment_data: segment_data as u64,
        seek_at: segment_data as u64,
        info_at: 0,
        tracks_at: 0,
        date_at: 0,
        duration_at: 0,
        size_at: None,
        clusters_at: 0,
    };
    if seek_room(b, segment_data) != Some(SEEK_SLOT as u64) {
        return Err("no SeekHead room at the start of the Segment");
    }
    let mut pos = segment_data;
    loop {
        let h = b
            .get(pos..)
            .and_then(ebml::read_head)
            .ok_or("the head is cut off")?;
        let end = h
            .total()
            .and_then(|t| usize::try_from(t).ok())
            .map(|t| pos.saturating_add(t))
            .filter(|&e| e <= b.len())
            .ok_or("the head is cut off")?;
        let data = pos + h.head_len;
        match h.id {
            id::INFO => {
                layout.info_at = pos as u64;
                for (at, c) in children(b, data, end) {
                    match (c.id, c.size, c.total()) {
                        (id::DATE_UTC, Some(8), _) => layout.date_at = (at + c.head_len) as u64,
                        (id::VOID | id::DURATION, _, Some(t)) if t == DURATION_SLOT as u64 => {
                            layout.duration_at = at as u64;
                        }
                        _ => {}
                    }
                }
            }
            id::TRACKS => {
                layout.tracks_at = pos as u64;
                layout.size_at = video_size_at(b, data, end);
                // The clusters follow the Tracks (whatever is there: the scan judges it).
                layout.clusters_at = end as u64;
                break;
            }
            _ => {}
        }
        pos = end;
    }
    if layout.info_at == 0 || layout.tracks_at == 0 {
        return Err("no Info or Tracks");
    }
    if layout.date_at == 0 || layout.duration_at == 0 {
        return Err("no DateUTC or Duration room in Info");
    }
    Ok(layout)
}

/// The length of the SeekHead room at `at`: a Void (before the finish), or a SeekHead and
/// the Void after it.
fn seek_room(b: &[u8], at: usize) -> Option<u64> {
    let first = b.get(at..).and_then(ebml::read_head)?;
    match first.id {
        id::VOID => first.total(),
        id::SEEK_HEAD => {
            let len = first.total()?;
            let next = at.checked_add(usize::try_from(len).ok()?)?;
            let void = b.get(next..).and_then(ebml::read_head)?;
            (void.id == id::VOID).then_some(len.checked_add(void.total()?)?)
        }
        _ => None,
    }
}

/// Where the video track's PixelWidth and PixelHeight data are, when 2 bytes each.
fn video_size_at(b: &[u8], start: usize, end: usize) -> Option<(u64, u64)> {
    for (at, entry) in children(b, start, end) {
        let data = at + entry.head_len;
        let entry_end = data + usize::try_from(entry.size?).ok()?;
        let kids = children(b, data, entry_end);
        let video = kids.iter().any(|(a, h)| {
            h.id == id::TRACK_NUMBER
                && data_of(b, *a, *h).and_then(ebml::read_uint) == Some(VIDEO_TRACK.into())
        });
        let Some((v_at, v)) = kids.iter().find(|(_, h)| h.id == id::VIDEO) else {
            continue;
        };
        if !video {
            continue;
        }
        let v_data = v_at + v.head_len;
        let v_end = v_data + usize::try_from(v.size?).ok()?;
        let field = |want: u32| {
            children(b, v_data, v_end)
                .into_iter()
                .find(|(_, h)| h.id == want && h.size == Some(2))
                .map(|(a, h)| (a + h.head_len) as u64)
        };
        return Some((field(id::PIXEL_WIDTH)?, field(id::PIXEL_HEIGHT)?));
    }
    None
}

/// A point in the Cues: a cluster a player can start decoding at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cue {
    pub(crate) time_ms: u64,
    pub(crate) track: u8,
    /// The Cluster's offset in the file.
    pub(crate) cluster_at: u64,
}

/// The clusters worth a CuePoint: those starting with a video key frame; when the file has
/// no video, every cluster (Opus can start anywhere, after its pre-roll).
#[derive(Debug, Default)]
pub(crate) struct CueList {
    video: Vec<Cue>,
    audio: Vec<Cue>,
}

impl CueList {
    /// A cluster at `at` with time `time_ms` whose first block is of `track`.
    pub(crate) fn on_cluster(&mut self, time_ms: u64, at: u64, track: u8, key: bool) {
        let cue = Cue {
            time_ms,
            track,
            cluster_at: at,
        };
        match track {
            VIDEO_TRACK if key => self.video.push(cue),
            AUDIO_TRACK => self.audio.push(cue),
            _ => {}
        }
    }

    pub(crate) fn cues(&self) -> &[Cue] {
        if self.video.is_empty() {
            &self.audio
        } else {
            &self.video
        }
    }
}

/// What the blocks of a file add up to: frames per track and the duration.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) video_frames: u64,
    pub(crate) audio_frames: u64,
    last_video_ms: Option<u64>,
    /// The last video frame's distance from the one before (its own duration is unknown:
    /// the same again is assumed).
    video_step_ms: u64,
    /// Where the last Opus packet ends (its duration is in its TOC byte).
    audio_end_ms: u64,
}

impl Tally {
    /// A block of `track` at `ms` whose payload starts with `payload` (two bytes suffice).
    pub(crate) fn on_block(&mut self, track: u8, ms: u64, payload: &[u8]) {
        match track {
            VIDEO_TRACK => {
                self.video_frames += 1;
                if let Some(last) = self.last_video_ms {
                    self.video_step_ms = ms.saturating_sub(last);
                }
                self.last_video_ms = Some(ms);
            }
            AUDIO_TRACK => {
                self.audio_frames += 1;
                let samples = u64::from(codec::opus_packet_samples(payload));
                let end = ms.saturating_add(samples.div_ceil(u64::from(OPUS_RATE / 1000)));
                self.audio_end_ms = self.audio_end_ms.max(end);
            }
            _ => {}
        }
    }

    pub(crate) fn duration_ms(&self) -> u64 {
        let video = self
            .last_video_ms
            .map_or(0, |l| l.saturating_add(self.video_step_ms));
        video.max(self.audio_end_ms)
    }
}

/// The SeekHead room's bytes: a SeekHead naming Info, Tracks and (when written) Cues,
/// then a Void to the end of the room.
fn seek_head(layout: &Layout, cues_at: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEEK_SLOT);
    let entries = [
        Some((id::INFO, layout.info_at)),
        Some((id::TRACKS, layout.tracks_at)),
        cues_at.map(|at| (id::CUES, at)),
    ];
    ebml::master(&mut out, id::SEEK_HEAD, |b| {
        for (element, at) in entries.into_iter().flatten() {
            ebml::master(b, id::SEEK, |s| {
                ebml::bytes(s, id::SEEK_ID, &element.to_be_bytes());
                let pos = at.saturating_sub(layout.segment_data);
                ebml::uint_fixed(s, id::SEEK_POSITION, pos, 8);
            });
        }
    });
    let rest = SEEK_SLOT.saturating_sub(out.len());
    ebml::void(&mut out, rest);
    out
}

/// Finishes a file whose clusters end at `end`: writes the Cues there and cuts anything
/// after them, then the SeekHead, the Duration and the Segment's size into their rooms.
/// Returns the file's length. In this order a crash halfway leaves a file that
/// [`super::repair`] finishes again.
pub(crate) fn finish(
    file: &File,
    layout: &Layout,
    end: u64,
    cues: &[Cue],
    duration_ms: u64,
) -> io::Result<u64> {
    let mut tail = Vec::new();
    if !cues.is_empty() {
        ebml::master(&mut tail, id::CUES, |b| {
            for cue in cues {
                ebml::master(b, id::CUE_POINT, |p| {
                    ebml::uint(p, id::CUE_TIME, cue.time_ms);
                    ebml::master(p, id::CUE_TRACK_POSITIONS, |t| {
                        ebml::uint(t, id::CUE_TRACK, cue.track.into());
                        let pos = cue.cluster_at.saturating_sub(layout.segment_data);
                        ebml::uint(t, id::CUE_CLUSTER_POSITION, pos);
                    });
                });
            }
        });
    }
    file.write_all_at(&tail, end)?;
    let len = end + tail.len() as u64;
    file.set_len(len)?;
    let cues_at = (!cues.is_empty()).then_some(end);
    file.write_all_at(&seek_head(layout, cues_at), layout.seek_at)?;
    let mut duration = Vec::with_capacity(DURATION_SLOT);
    // Milliseconds: the file's TimestampScale.
    ebml::float64(&mut duration, id::DURATION, duration_ms as f64);
    file.write_all_at(&duration, layout.duration_at)?;
    let size = ebml::size8(len.saturating_sub(layout.segment_data));
    file.write_all_at(&size, layout.segment_size_at)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_found_again_with_its_rooms() {
        let params = Params {
            opus_channels: 1,
            video_size: Some((320, 240)),
        };
        let h = header(&params, 42);
        let l = parse_layout(&h).unwrap();
        assert_eq!(l.clusters_at, h.len() as u64);
        assert_eq!(l.seek_at, l.segment_data);
        let at = |o: u64| o as usize;
        assert_eq!(
            h[at(l.segment_size_at)..at(l.segment_size_at) + 8],
            ebml::UNKNOWN_SIZE
        );
        assert_eq!(h[at(l.date_at)..at(l.date_at) + 8], 42i64.to_be_bytes());
        assert_eq!(h[at(l.duration_at)], 0xEC, "Duration's room is a Void");
        let (w, hh) = l.size_at.unwrap();
        assert_eq!(h[at(w)..at(w) + 2], 320u16.to_be_bytes());
        assert_eq!(h[at(hh)..at(hh) + 2], 240u16.to_be_bytes());
        assert!(h.len() < HEAD_MAX);
        // A head followed by a cluster: the clusters start where the head ends.
        let mut more = h.clone();
        ebml::write_id(&mut more, id::CLUSTER);
        more.extend_from_slice(&ebml::UNKNOWN_SIZE);
        assert_eq!(parse_layout(&more).unwrap().clusters_at, h.len() as u64);
    }

    #[test]
    fn a_cut_or_foreign_head_is_refused() {
        let h = header(&Params::default(), 0);
        for len in [0, 4, 40, h.len() / 2, h.len() - 1] {
            assert!(parse_layout(&h[..len]).is_err(), "cut at {len}");
        }
        let mut mkv = h.clone();
        let i = mkv.windows(4).position(|w| w == b"webm").unwrap();
        mkv[i..i + 4].copy_from_slice(b"webx");
        assert_eq!(parse_layout(&mkv), Err("not WebM"));
        assert!(parse_layout(b"RIFF\0\0\0\0WAVEfmt ").is_err());
    }

    #[test]
    fn the_seek_head_fills_its_room_exactly() {
        let l = parse_layout(&header(&Params::default(), 0)).unwrap();
        assert_eq!(seek_head(&l, Some(5000)).len(), SEEK_SLOT);
        assert_eq!(seek_head(&l, None).len(), SEEK_SLOT);
    }

    #[test]
    fn the_tally_counts_frames_and_ends_at_the_last_frames_end() {
        let mut t = Tally::default();
        assert_eq!(t.duration_ms(), 0);
        for i in 0..45u64 {
            t.on_block(VIDEO_TRACK, i * 200 / 3, &[]);
        }
        for i in 0..150u64 {
            t.on_block(AUDIO_TRACK, i * 20, &[0xFC]);
        }
        assert_eq!((t.video_frames, t.audio_frames), (45, 150));
        assert_eq!(t.duration_ms(), 3000);
        let mut cues = CueList::default();
        cues.on_cluster(0, 100, AUDIO_TRACK, true);
        assert_eq!(
            cues.cues().len(),
            1,
            "audio clusters when there is no video"
        );
        cues.on_cluster(10, 200, VIDEO_TRACK, false);
        cues.on_cluster(20, 300, VIDEO_TRACK, true);
        assert_eq!(
            cues.cues(),
            [Cue {
                time_ms: 20,
                track: VIDEO_TRACK,
                cluster_at: 300
            }]
        );
    }
}
