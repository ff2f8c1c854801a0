//! The writer and the repair without external tools: files read back with this module's
//! own EBML reader. (`tests/webm.rs` checks real VP8 and Opus with ffprobe and ffmpeg.)

use super::ebml::{self, id};
use super::*;
use std::time::Duration;

/// A VP8 key frame head (320x240) followed by `n` bytes.
fn key_frame(n: usize) -> Vec<u8> {
    let mut f = vec![0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00];
    f.resize(10 + n, 0x55);
    f
}

fn inter_frame(n: usize) -> Vec<u8> {
    let mut f = vec![0x11, 0x02, 0x00];
    f.resize(3 + n, 0x66);
    f
}

/// A 20 ms CELT Opus packet.
fn opus(n: usize) -> Vec<u8> {
    let mut p = vec![0xFC];
    p.resize(1 + n, 0x77);
    p
}

fn wall() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// A block as read back: track, time (ms), key flag, payload length.
type Read = (u8, u64, bool, usize);

/// Top-level elements of the Segment and the blocks of its clusters.
struct Parsed {
    segment_size: Option<u64>,
    top: Vec<u32>,
    blocks: Vec<Read>,
    /// Where each block ends in the file.
    ends: Vec<usize>,
    cluster_times: Vec<u64>,
    cue_times: Vec<u64>,
    duration: Option<f64>,
}

fn parse(b: &[u8]) -> Parsed {
    let l = layout::parse_layout(b).unwrap();
    let seg = ebml::read_head(&b[l.segment_size_at as usize - 4..]).unwrap();
    let mut p = Parsed {
        segment_size: seg.size,
        top: Vec::new(),
        blocks: Vec::new(),
        ends: Vec::new(),
        cluster_times: Vec::new(),
        cue_times: Vec::new(),
        duration: None,
    };
    let d = &b[l.duration_at as usize..l.duration_at as usize + 11];
    if d[..3] == [0x44, 0x89, 0x88] {
        p.duration = Some(f64::from_be_bytes(d[3..].try_into().unwrap()));
    }
    let mut pos = l.segment_data as usize;
    while pos < b.len() {
        let h = ebml::read_head(&b[pos..]).unwrap();
        p.top.push(h.id);
        let data = pos + h.head_len;
        let end = data + h.size.expect("a finished file has every size") as usize;
        match h.id {
            id::CLUSTER => walk_cluster(&b[data..end], data, &mut p),
            id::CUES => walk_cues(&b[data..end], &mut p),
            _ => {}
        }
        pos = end;
    }
    assert_eq!(pos, b.len(), "the elements fill the file");
    p
}

/// The children of a master's data: (ID, data, end offset within `b`).
fn children(b: &[u8]) -> Vec<(u32, &[u8], usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let h = ebml::read_head(&b[pos..]).unwrap();
        let data = pos + h.head_len;
        let end = data + h.size.unwrap() as usize;
        out.push((h.id, &b[data..end], end));
        pos = end;
    }
    assert_eq!(pos, b.len(), "children fill their parent");
    out
}

fn walk_cluster(b: &[u8], at: usize, p: &mut Parsed) {
    let mut time = None;
    for (id, data, end) in children(b) {
        match id {
            id::TIMESTAMP => {
                time = ebml::read_uint(data);
                p.cluster_times.push(time.unwrap());
            }
            id::SIMPLE_BLOCK => {
                let rel = i16::from_be_bytes([data[1], data[2]]);
                let t = time.unwrap().checked_add_signed(rel.into()).unwrap();
                p.blocks
                    .push((data[0] & 0x7F, t, data[3] & 0x80 != 0, data.len() - 4));
                p.ends.push(at + end);
            }
            other => panic!("unexpected {other:#x} in a cluster"),
        }
    }
}

fn walk_cues(b: &[u8], p: &mut Parsed) {
    for (id, point, _) in children(b) {
        assert_eq!(id, id::CUE_POINT);
        for (id, data, _) in children(point) {
            if id == id::CUE_TIME {
                p.cue_times.push(ebml::read_uint(data).unwrap());
            }
        }
    }
}

/// Feeds `secs` seconds of 15 fps video (a key frame every 2 s) and 20 ms Opus, both
/// arriving in time order, with timestamps that wrap. Returns the writer and the frames.
fn feed(w: &mut Writer, t0: Instant, secs: u64) -> (u64, u64) {
    let (mut v, mut a) = (0u64, 0u64);
    let (v_base, a_base) = (u32::MAX - 50_000, u32::MAX - 10_000);
    while v * 1000 / 15 < secs * 1000 || a * 20 < secs * 1000 {
        let v_ms = v * 1000 / 15;
        let a_ms = a * 20;
        if v_ms <= a_ms && v_ms < secs * 1000 {
            let data = if v % 30 == 0 {
                key_frame(300)
            } else {
                inter_frame(100)
            };
            w.write_video(VideoFrame {
                rtp_ts: v_base.wrapping_add((v * 6000) as u32),
                arrival: t0 + Duration::from_millis(v_ms),
                keyframe: v % 30 == 0,
                data: &data,
            })
            .unwrap();
            v += 1;
        } else {
            w.write_audio(AudioPacket {
                rtp_ts: a_base.wrapping_add((a * 960) as u32),
                arrival: t0 + Duration::from_millis(a_ms),
                data: &opus(60),
            })
            .unwrap();
            a += 1;
        }
    }
    (v, a)
}

#[test]
fn a_closed_file_has_its_sizes_cues_and_duration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("2026/12/01/visit.webm");
    let t0 = Instant::now();
    let opened = t0 - Duration::from_millis(250);
    let mut w = Writer::open(&path, Params::default(), opened, wall()).unwrap();
    let (v, a) = feed(&mut w, t0, 12);
    let (f, counters) = w.close().unwrap();
    assert_eq!((f.video_frames, f.audio_frames), (v, a));
    assert_eq!((v, a), (180, 600));
    assert_eq!(f.duration_ms, 12_000);
    assert_eq!(
        f.started_at,
        wall() + TimeDelta::milliseconds(250),
        "time 0 is the first frame"
    );
    assert_eq!(counters, Counters::default());
    let b = std::fs::read(&path).unwrap();
    assert_eq!(f.bytes, b.len() as u64);
    let p = parse(&b);
    let l = layout::parse_layout(&b).unwrap();
    assert_eq!(p.segment_size, Some(b.len() as u64 - l.segment_data));
    assert_eq!(p.duration, Some(12_000.0));
    assert_eq!(p.top.first(), Some(&id::SEEK_HEAD));
    assert_eq!(p.top.last(), Some(&id::CUES));
    // Key frames at 0, 2, 4 … 10 s each start a cluster and have a cue; no cluster
    // spans more than 5 s.
    assert_eq!(p.cue_times, [0, 2000, 4000, 6000, 8000, 10_000]);
    assert!(p.cluster_times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(p.blocks.len(), 780);
    let video: Vec<_> = p.blocks.iter().filter(|b| b.0 == 1).collect();
    assert_eq!(video.len(), 180);
    assert!(video.iter().all(|b| b.2 == (b.1 % 2000 == 0)));
    assert_eq!(video[1].1, 67);
    let audio_times: Vec<u64> = p.blocks.iter().filter(|b| b.0 == 2).map(|b| b.1).collect();
    assert_eq!(audio_times, (0..600).map(|i| i * 20).collect::<Vec<_>>());
    // The DateUTC and the track size were patched in.
    let date = i64::from_be_bytes(b[l.date_at as usize..][..8].try_into().unwrap());
    assert_eq!(date_from_ns(date), f.started_at);
    let (w_at, h_at) = l.size_at.unwrap();
    assert_eq!(b[w_at as usize..][..2], 320u16.to_be_bytes());
    assert_eq!(b[h_at as usize..][..2], 240u16.to_be_bytes());
    // Repairing a finished file changes nothing.
    let again = repair(&path).unwrap();
    assert_eq!(again, f);
    assert_eq!(std::fs::read(&path).unwrap(), b);
}

#[test]
fn without_video_the_clusters_are_audio_and_cued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
    for i in 0..600u32 {
        w.write_audio(AudioPacket {
            rtp_ts: i * 960,
            arrival: t0 + Duration::from_millis(u64::from(i) * 20),
            data: &opus(10),
        })
        .unwrap();
    }
    let (f, _) = w.close().unwrap();
    assert_eq!(
        (f.video_frames, f.audio_frames, f.duration_ms),
        (0, 600, 12_000)
    );
    let p = parse(&std::fs::read(&path).unwrap());
    assert_eq!(p.cluster_times, [0, 5000, 10_000]);
    assert_eq!(p.cue_times, [0, 5000, 10_000]);
}

#[test]
fn an_empty_recording_closes_into_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.webm");
    let w = Writer::open(&path, Params::default(), Instant::now(), wall()).unwrap();
    let (f, _) = w.close().unwrap();
    assert_eq!((f.duration_ms, f.video_frames, f.audio_frames), (0, 0, 0));
    assert_eq!(f.started_at, wall());
    let p = parse(&std::fs::read(&path).unwrap());
    assert!(p.blocks.is_empty());
    assert_eq!(p.top, [id::SEEK_HEAD, id::VOID, id::INFO, id::TRACKS]);
    assert_eq!(repair(&path).unwrap(), f);
    assert!(matches!(
        Writer::open(&path, Params::default(), Instant::now(), wall()),
        Err(WebmError::Io { .. })
    ));
}

#[test]
fn odd_frames_are_refused_or_dropped_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
    let at = |ms| t0 + Duration::from_millis(ms);
    let video = |ts, ms, keyframe, data: &[u8]| {
        let data = data.to_vec();
        move |w: &mut Writer| {
            w.write_video(VideoFrame {
                rtp_ts: ts,
                arrival: at(ms),
                keyframe,
                data: &data,
            })
        }
    };
    assert!(matches!(
        video(0, 0, true, &[])(&mut w),
        Err(WebmError::BadFrame {
            track: Track::Video,
            reason: BadFrame::Empty
        })
    ));
    let huge = vec![0u8; MAX_FRAME_BYTES + 1];
    assert!(matches!(
        w.write_audio(AudioPacket {
            rtp_ts: 0,
            arrival: at(0),
            data: &huge
        }),
        Err(WebmError::BadFrame {
            reason: BadFrame::TooLarge { .. },
            ..
        })
    ));
    // Inter frames before any key frame, and a "key frame" that is not one: dropped.
    video(0, 0, false, &inter_frame(10))(&mut w).unwrap();
    video(3000, 33, true, &inter_frame(10))(&mut w).unwrap();
    video(3000, 33, true, &[0x10])(&mut w).unwrap();
    video(6000, 66, true, &key_frame(10))(&mut w).unwrap();
    video(9000, 100, false, &inter_frame(10))(&mut w).unwrap();
    // A random timestamp jump (a new stream): anchored again at arrival.
    video(0x8000_0000, 3_000, true, &key_frame(10))(&mut w).unwrap();
    assert_eq!(
        w.counters(),
        Counters {
            before_key_frame: 3,
            refused: 2,
            resyncs: 1,
            clamped: 0
        }
    );
    let (f, _) = w.close().unwrap();
    assert_eq!(f.video_frames, 3);
    let p = parse(&std::fs::read(&path).unwrap());
    assert_eq!(
        p.blocks.iter().map(|b| (b.1, b.2)).collect::<Vec<_>>(),
        [(0, true), (33, false), (2934, true)]
    );
}

#[test]
fn a_block_far_behind_its_cluster_is_clamped_into_reach() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("far.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
    let audio = |w: &mut Writer, ts, ms| {
        w.write_audio(AudioPacket {
            rtp_ts: ts,
            arrival: t0 + Duration::from_millis(ms),
            data: &opus(5),
        })
    };
    audio(&mut w, 0, 0).unwrap();
    w.write_video(VideoFrame {
        rtp_ts: 0,
        arrival: t0 + Duration::from_secs(40),
        keyframe: true,
        data: &key_frame(5),
    })
    .unwrap();
    // An audio packet handed over 40 s late (with its old arrival): 20 ms, which is
    // 39.98 s before the cluster the key frame started, past a block's reach.
    audio(&mut w, 960, 20).unwrap();
    assert_eq!(w.counters().clamped, 1);
    let (f, _) = w.close().unwrap();
    let p = parse(&std::fs::read(&path).unwrap());
    let times: Vec<u64> = p.blocks.iter().map(|b| b.1).collect();
    assert_eq!(times, [0, 40_000, 40_000 - 32_768]);
    assert_eq!((f.video_frames, f.audio_frames), (1, 2));
}

/// Feeds 7 s, flushes, feeds more without flushing, drops the writer: the file holds what
/// was flushed, and the repair finishes it with exactly those blocks.
#[test]
fn a_dropped_writer_leaves_what_was_flushed_and_repair_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
    let (v, a) = feed(&mut w, t0, 7);
    w.flush().unwrap();
    let flushed = std::fs::read(&path).unwrap();
    w.write_audio(AudioPacket {
        rtp_ts: 1,
        arrival: t0 + Duration::from_secs(8),
        data: &opus(5),
    })
    .unwrap();
    drop(w);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        flushed,
        "nothing written on drop"
    );
    let f = repair(&path).unwrap();
    assert_eq!((f.video_frames, f.audio_frames), (v, a));
    assert_eq!(f.duration_ms, 7_000);
    let b = std::fs::read(&path).unwrap();
    let p = parse(&b);
    assert_eq!(p.duration, Some(7_000.0));
    assert_eq!(p.cue_times, [0, 2000, 4000, 6000]);
    assert_eq!(f.bytes, b.len() as u64);
}

/// A file cut at every length: the repair never panics, refuses a cut head, and otherwise
/// keeps the whole blocks before the cut, in a file that parses and repairs to itself.
#[test]
fn a_file_cut_anywhere_is_repaired_to_its_whole_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whole.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
    feed(&mut w, t0, 6);
    w.flush().unwrap();
    drop(w);
    let whole = std::fs::read(&path).unwrap();
    let head = layout::parse_layout(&whole).unwrap().clusters_at as usize;
    let full = {
        let p = dir.path().join("full.webm");
        std::fs::write(&p, &whole).unwrap();
        repair(&p).unwrap();
        parse(&std::fs::read(&p).unwrap())
    };
    let cut_path = dir.path().join("cut.webm");
    // Every 61st length, and around block ends (just before, at, just after).
    let around_ends = full.ends.iter().step_by(3).flat_map(|&e| [e - 1, e, e + 1]);
    let lens = (0..whole.len()).step_by(61).chain(around_ends);
    for len in lens.filter(|&l| l <= whole.len()) {
        std::fs::write(&cut_path, &whole[..len]).unwrap();
        let r = repair(&cut_path);
        if len < head {
            assert!(matches!(r, Err(WebmError::NotOurs { .. })), "cut at {len}");
            assert_eq!(
                std::fs::read(&cut_path).unwrap(),
                &whole[..len],
                "untouched"
            );
            continue;
        }
        let f = r.unwrap_or_else(|e| panic!("cut at {len}: {e}"));
        let b = std::fs::read(&cut_path).unwrap();
        let p = parse(&b);
        // Every block that was whole before the cut, and no other.
        let whole_before = full.ends.iter().filter(|&&end| end <= len).count();
        assert_eq!(p.blocks, full.blocks[..whole_before], "cut at {len}");
        assert_eq!(p.blocks.len() as u64, f.video_frames + f.audio_frames);
        assert_eq!(repair(&cut_path).unwrap(), f, "repair is idempotent");
        assert_eq!(std::fs::read(&cut_path).unwrap(), b);
    }
}

/// Garbage after the last block (a write cut short, a foreign tail) is cut away.
#[test]
fn garbage_after_the_blocks_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
    let (v, a) = feed(&mut w, t0, 3);
    w.flush().unwrap();
    drop(w);
    let mut b = std::fs::read(&path).unwrap();
    b.extend_from_slice(&[0xFF, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9A]);
    std::fs::write(&path, &b).unwrap();
    let f = repair(&path).unwrap();
    assert_eq!((f.video_frames, f.audio_frames), (v, a));
    parse(&std::fs::read(&path).unwrap());
    std::fs::write(&path, b"not a webm at all").unwrap();
    assert!(matches!(repair(&path), Err(WebmError::NotOurs { .. })));
    assert!(matches!(
        repair(&dir.path().join("missing.webm")),
        Err(WebmError::Io { .. })
    ));
}

/// A write that fails stops the writer; what reached the disk is repaired.
#[test]
fn a_failed_write_stops_the_writer_and_the_file_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
    let (v, a) = feed(&mut w, t0, 2);
    w.flush().unwrap();
    // Every later write to a read-only descriptor fails: here the size of the cluster
    // that the next key frame closes.
    w.file = File::open(&path).unwrap();
    let key = key_frame(10);
    let frame = VideoFrame {
        rtp_ts: 2 * 90_000,
        arrival: t0 + Duration::from_secs(2),
        keyframe: true,
        data: &key,
    };
    assert!(matches!(w.write_video(frame), Err(WebmError::Io { .. })));
    assert!(matches!(
        w.write_video(frame),
        Err(WebmError::Failed { .. })
    ));
    assert!(matches!(w.flush(), Err(WebmError::Failed { .. })));
    assert!(matches!(w.close(), Err(WebmError::Failed { .. })));
    let f = repair(&path).unwrap();
    assert_eq!((f.video_frames, f.audio_frames), (v, a));
}

/// One call on the writer, for the random sequences.
#[derive(Debug, Clone)]
enum Op {
    Video {
        ts: u32,
        at_ms: u64,
        flagged: bool,
        kind: u8,
        len: usize,
    },
    Audio {
        ts: u32,
        at_ms: u64,
        len: usize,
    },
    Flush,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    // Timestamps mostly near each other (steps and wraps), sometimes anywhere; arrivals
    // mostly rising, sometimes far apart or out of order.
    let ts =
        prop_oneof![4 => (u32::MAX - 400_000)..u32::MAX, 4 => 0u32..400_000, 1 => any::<u32>()];
    let at = prop_oneof![8 => 0u64..20_000, 1 => 0u64..200_000];
    prop_oneof![
        5 => (ts.clone(), at.clone(), any::<bool>(), 0u8..4, 0usize..400)
            .prop_map(|(ts, at_ms, flagged, kind, len)| Op::Video { ts, at_ms, flagged, kind, len }),
        5 => (ts, at, 0usize..200).prop_map(|(ts, at_ms, len)| Op::Audio { ts, at_ms, len }),
        1 => Just(Op::Flush),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever frames come, in whatever order: no panic, the closed file parses whole,
    /// holds as many blocks as were accepted, and the repair leaves it as it is.
    #[test]
    fn any_sequence_of_frames_gives_a_whole_file(ops in proptest::collection::vec(op(), 0..120)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.webm");
        let t0 = Instant::now();
        let mut w = Writer::open(&path, Params::default(), t0, wall()).unwrap();
        let (mut video_ok, mut audio_ok) = (0, 0);
        for op in &ops {
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            let r = match op {
                Op::Video { ts, at_ms, flagged, kind, len } => {
                    let data = match kind {
                        0 => key_frame(*len),
                        1 => inter_frame(*len),
                        2 => vec![0xA5; *len],
                        _ => Vec::new(),
                    };
                    w.write_video(VideoFrame { rtp_ts: *ts, arrival: at(*at_ms), keyframe: *flagged, data: &data })
                }
                Op::Audio { ts, at_ms, len } => {
                    w.write_audio(AudioPacket { rtp_ts: *ts, arrival: at(*at_ms), data: &vec![0x3C; *len] })
                }
                Op::Flush => w.flush(),
            };
            proptest::prop_assert!(matches!(r, Ok(()) | Err(WebmError::BadFrame { .. })), "{r:?}");
            match (op, r) {
                (Op::Video { .. }, Ok(())) => video_ok += 1,
                (Op::Audio { .. }, Ok(())) => audio_ok += 1,
                _ => {}
            }
        }
        let (f, counters) = w.close().unwrap();
        // Every frame accepted is in the file, but video before the first key frame.
        proptest::prop_assert_eq!(f.video_frames, video_ok - counters.before_key_frame);
        proptest::prop_assert_eq!(f.audio_frames, audio_ok);
        let b = std::fs::read(&path).unwrap();
        let p = parse(&b);
        proptest::prop_assert_eq!(p.blocks.len() as u64, f.video_frames + f.audio_frames);
        proptest::prop_assert!(p.cluster_times.windows(2).all(|w| w[0] <= w[1]));
        proptest::prop_assert_eq!(repair(&path).unwrap(), f);
        proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), b);
    }
}
