//! Visit recordings (WebM, `src/recording/webm`) against real media and a real demuxer:
//! VP8 and Opus encoded by ffmpeg (libvpx, libopus), taken frame by frame out of IVF and
//! Ogg as the visit path will get them out of RTP, fed through the writer with synthetic
//! RTP timestamps (wrapping) and jittered arrivals, then read back by ffprobe (both
//! streams, every frame, the duration) and decoded by ffmpeg without an error. The crash
//! test drops a writer without closing it, cuts its file inside a block, repairs it, and
//! checks the same of the blocks before the cut.
//!
//! Needs ffmpeg and ffprobe (Debian package `ffmpeg`); without them the tests print why
//! and pass, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
//! Run: `cargo test --test webm` (`SALLYPORT_WEBM_KEEP=/tmp/visit.webm` keeps the whole
//! recording to look at).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use sallyport::recording::webm::{self, AudioPacket, Params, VideoFrame, Writer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Seconds of media generated.
const SECS: u64 = 3;
const FPS: u64 = 15;

fn tool_present(tool: &str, what: &str) -> bool {
    let ok = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        sallyport::db::testing::skip_or_fail(&format!(
            "{tool} is not installed (Debian package ffmpeg): {what} skipped"
        ));
    }
    ok
}

fn present(what: &str) -> bool {
    tool_present("ffmpeg", what) && tool_present("ffprobe", what)
}

use support::visit_media::Media;

/// VP8 (about 300 kbit/s, a key frame every 2 s, no hidden alt-ref frames and no
/// look-ahead, as a real-time encoder sends) and 20 ms Opus, generated once per test binary
/// (`support::visit_media::encode`).
fn media() -> &'static Media {
    static MEDIA: OnceLock<Media> = OnceLock::new();
    MEDIA.get_or_init(|| support::visit_media::encode(SECS))
}

/// One frame to feed, in arrival order.
enum Item<'a> {
    Video(VideoFrame<'a>),
    Audio(AudioPacket<'a>),
}

/// The media as RTP would bring it: timestamps starting just before the 32-bit wrap,
/// arrivals on time give or take a few (deterministic) milliseconds of jitter, audio and
/// video interleaved by arrival.
fn schedule(m: &Media, t0: Instant) -> Vec<(Duration, Item<'_>)> {
    let jitter = |i: u64| Duration::from_millis(i * 7919 % 23);
    let mut items = Vec::new();
    for (i, (data, key)) in m.video.iter().enumerate() {
        let i = i as u64;
        let at = Duration::from_millis(i * 1000 / FPS) + jitter(i);
        let frame = VideoFrame {
            rtp_ts: (u32::MAX - 100_000).wrapping_add((i * 90_000 / FPS) as u32),
            arrival: t0 + at,
            keyframe: *key,
            data,
        };
        items.push((at, Item::Video(frame)));
    }
    for (i, data) in m.audio.iter().enumerate() {
        let i = i as u64;
        let at = Duration::from_millis(i * 20) + jitter(i + 3);
        let packet = AudioPacket {
            rtp_ts: (u32::MAX - 20_000).wrapping_add((i * 960) as u32),
            arrival: t0 + at,
            data,
        };
        items.push((at, Item::Audio(packet)));
    }
    items.sort_by_key(|(at, _)| *at);
    items
}

fn write(w: &mut Writer, item: &Item<'_>) {
    match item {
        Item::Video(f) => w.write_video(*f).unwrap(),
        Item::Audio(p) => w.write_audio(*p).unwrap(),
    }
}

/// What ffprobe reads: (codec, frames decoded) per stream, the duration, video size.
#[derive(Debug)]
struct Probe {
    streams: Vec<(String, u64)>,
    duration: f64,
    size: (u64, u64),
}

fn probe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-count_frames",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "ffprobe: {stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut streams = Vec::new();
    let mut size = (0, 0);
    for s in v["streams"].as_array().unwrap() {
        let frames = s["nb_read_frames"].as_str().unwrap().parse().unwrap();
        let codec = s["codec_name"].as_str().unwrap().to_string();
        if codec == "vp8" {
            size = (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap());
        }
        streams.push((codec, frames));
    }
    assert!(v["format"]["format_name"]
        .as_str()
        .unwrap()
        .contains("webm"));
    let duration = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    Probe {
        streams,
        duration,
        size,
    }
}

/// Decodes every frame; ffmpeg must report no error.
fn decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "decoding: {stderr}"
    );
}

fn out_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join("2026/12/01").join(name)
}

#[test]
fn a_recording_of_real_vp8_and_opus_plays_whole() {
    if !present("the WebM recording test") {
        return;
    }
    let m = media();
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "visit.webm");
    let t0 = Instant::now();
    let wall = chrono::Utc::now();
    let mut w = Writer::open(&path, Params::default(), t0, wall).unwrap();
    for (_, item) in schedule(m, t0) {
        write(&mut w, &item);
    }
    let (f, counters) = w.close().unwrap();
    assert_eq!(counters, webm::Counters::default());
    assert_eq!(f.video_frames as usize, m.video.len());
    assert_eq!(f.audio_frames as usize, m.audio.len());
    assert_eq!(
        f.started_at, wall,
        "time 0 is the first frame, which arrived at t0"
    );
    let p = probe(&path);
    eprintln!("whole: {p:?}");
    if let Some(keep) = std::env::var_os("SALLYPORT_WEBM_KEEP") {
        std::fs::copy(&path, keep).unwrap();
    }
    assert_eq!(
        p.streams,
        [
            ("vp8".to_string(), m.video.len() as u64),
            ("opus".to_string(), m.audio.len() as u64)
        ]
    );
    assert_eq!(p.size, (320, 240), "the size from the first key frame");
    assert!(
        (p.duration - SECS as f64).abs() <= 0.1,
        "duration {} for {SECS} s of media",
        p.duration
    );
    decodes_cleanly(&path);
    // A finished file is left as it is by the repair.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(webm::repair(&path).unwrap(), f);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_crashed_recording_cut_inside_a_block_is_repaired_and_plays() {
    if !present("the WebM crash test") {
        return;
    }
    let m = media();
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "crash.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, chrono::Utc::now()).unwrap();
    let items = schedule(m, t0);
    // Up to the last audio packet before 2 s, flushed (the recorder's interval); then
    // more that never reaches the disk: the writer is dropped as a crash would leave it.
    let cut = items
        .iter()
        .rposition(|(at, i)| *at < Duration::from_secs(2) && matches!(i, Item::Audio(_)))
        .unwrap();
    let (mut video, mut audio) = (0u64, 0u64);
    for (_, item) in &items[..=cut] {
        write(&mut w, item);
        match item {
            Item::Video(_) => video += 1,
            Item::Audio(_) => audio += 1,
        }
    }
    w.flush().unwrap();
    for (_, item) in &items[cut + 1..] {
        write(&mut w, item);
    }
    drop(w);
    // The last block (that audio packet) is cut in the middle, as by a write cut short.
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    let repaired = webm::repair(&path).unwrap();
    audio -= 1;
    assert_eq!(
        (repaired.video_frames, repaired.audio_frames),
        (video, audio)
    );
    let p = probe(&path);
    eprintln!("repaired: {p:?}");
    assert_eq!(
        p.streams,
        [("vp8".to_string(), video), ("opus".to_string(), audio)]
    );
    let expected = audio as f64 * 0.020;
    assert!(
        (p.duration - expected).abs() <= 0.1,
        "duration {} for {audio} Opus packets",
        p.duration
    );
    decodes_cleanly(&path);
}

/// Decodes from `secs` on: ffmpeg seeks through the Cues to the key frame's cluster at or
/// before `secs`; it must report no error. `-copyts` keeps the file's own timestamps: without
/// it ffmpeg rebases them to the seek point and rounds them to its guessed 1/15 s output
/// ticks, and two frames 66 ms apart (a millisecond time line can hold 1/15 s only as
/// 67, 66, 67 ms steps) that straddle a half tick land on one tick: "non monotonically
/// increasing dts" from the null muxer whenever the seek point falls midway between two
/// frames (-ss 2.5 here). ffmpeg's own libvpx WebM does the same at its own midway points
/// (see docs/architecture.md, "Seeking"); it is not in the file.
fn seeks_cleanly(path: &Path, secs: &str) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-copyts", "-ss", secs, "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "decoding from {secs} s: {stderr}"
    );
}

/// The packets ffprobe reads after seeking to `secs`: (stream, pts in ms, key frame).
fn packets_from(path: &Path, secs: &str) -> Vec<(u64, i64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-read_intervals", &format!("{secs}%+1")])
        .args([
            "-show_entries",
            "packet=stream_index,pts,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].starts_with('K'),
            )
        })
        .collect()
}

/// A player that seeks lands on a cluster the Cues name, which starts with a video key
/// frame at or before the target, and reads on from there with timestamps that only grow in
/// each track; ffmpeg decodes from there without an error.
#[test]
fn a_recording_seeks_to_the_middle_without_errors() {
    if !present("the WebM seek test") {
        return;
    }
    let m = media();
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "seek.webm");
    let t0 = Instant::now();
    let mut w = Writer::open(&path, Params::default(), t0, chrono::Utc::now()).unwrap();
    for (_, item) in schedule(m, t0) {
        write(&mut w, &item);
    }
    w.close().unwrap();
    if let Some(keep) = std::env::var_os("SALLYPORT_WEBM_SEEK_KEEP") {
        std::fs::copy(&path, keep).unwrap();
    }
    for (secs, key_ms) in [("0.5", 0), ("1.5", 0), ("2.1", 2000), ("2.5", 2000)] {
        let packets = packets_from(&path, secs);
        let first_video = packets.iter().find(|p| p.0 == 0).unwrap();
        assert_eq!(
            (first_video.1, first_video.2),
            (key_ms, true),
            "seeking to {secs} s starts at the key frame before it"
        );
        for stream in [0, 1] {
            let times: Vec<i64> = packets
                .iter()
                .filter(|p| p.0 == stream)
                .map(|p| p.1)
                .collect();
            assert!(!times.is_empty(), "stream {stream} after {secs} s");
            assert!(
                times.windows(2).all(|w| w[0] < w[1]),
                "stream {stream} after a seek to {secs} s: {times:?}"
            );
        }
        seeks_cleanly(&path, secs);
    }
}
