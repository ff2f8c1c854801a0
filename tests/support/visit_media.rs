//! Visit recordings made the way the visit path makes them: real VP8 and Opus encoded once
//! by Debian's ffmpeg (libvpx, libopus), taken frame by frame out of IVF and Ogg as the
//! visit path takes them out of RTP, fed through [`webm::Writer`] with RTP timestamps and
//! arrivals, registered as one participant's recording of a visit session
//! (`Store::start_visit_recording`), closed, sealed and chained
//! (`Store::finish_recording` with `recording::visit_finished`).

use chrono::{DateTime, Utc};
use sallyport::recording::{self, webm, MediaKind, Participant};
use sallyport::sfu::media_file;
use sallyport::store::{NewRecording, Store};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const FPS: u64 = 15;

/// Whether ffmpeg is installed; prints why the test is skipped (or fails it under
/// `SALLYPORT_REQUIRE_EXTERNAL=1`) when it is not.
pub(crate) fn present(what: &str) -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        sallyport::db::testing::skip_or_fail(&format!(
            "ffmpeg is not installed (Debian package ffmpeg): {what} skipped"
        ));
    }
    ok
}

/// Encoded media, frame by frame.
pub(crate) struct Media {
    pub secs: u64,
    /// VP8 frames and whether each is a key frame.
    pub video: Vec<(Vec<u8>, bool)>,
    /// 20 ms Opus packets.
    pub audio: Vec<Vec<u8>>,
}

fn ffmpeg(args: &str, out: &Path) {
    let run = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args.split(' '))
        .arg(out)
        .output()
        .expect("run ffmpeg");
    assert!(
        run.status.success(),
        "ffmpeg {args}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// `secs` seconds of a moving test pattern (VP8, 320x240, 15 fps, a key frame every 2 s,
/// as a real-time encoder sends) and a 440 Hz tone (Opus, 20 ms packets).
pub(crate) fn encode(secs: u64) -> Media {
    let dir = tempfile::tempdir().expect("tempdir");
    let ivf = dir.path().join("v.ivf");
    let ogg = dir.path().join("a.ogg");
    ffmpeg(
        &format!(
            "-f lavfi -i testsrc=size=320x240:rate={FPS} -t {secs} -c:v libvpx -b:v 300k \
             -g 30 -auto-alt-ref 0 -lag-in-frames 0 -deadline realtime -cpu-used 8 -f ivf"
        ),
        &ivf,
    );
    ffmpeg(
        &format!(
            "-f lavfi -i sine=frequency=440:sample_rate=48000 -t {secs} -c:a libopus \
             -b:a 32k -frame_duration 20 -f ogg"
        ),
        &ogg,
    );
    let video = media_file::read_ivf(&std::fs::read(&ivf).expect("ivf"))
        .expect("an IVF file")
        .into_iter()
        .map(|f| (f.data.to_vec(), f.keyframe))
        .collect();
    let audio = media_file::read_ogg_opus(&std::fs::read(&ogg).expect("ogg"))
        .expect("an Ogg Opus file")
        .into_iter()
        .map(|p| p.data.to_vec())
        .collect();
    Media { secs, video, audio }
}

/// Feeds the media to `w` as RTP brings it (timestamps near the 32-bit wrap, a few
/// milliseconds of jitter, the two tracks interleaved by arrival), up to `until` of it.
pub(crate) fn feed(w: &mut webm::Writer, m: &Media, t0: Instant, until: Duration) {
    let jitter = |i: u64| Duration::from_millis(i * 7919 % 23);
    let mut items: Vec<(Duration, bool, usize)> = Vec::new();
    for i in 0..m.video.len() {
        let at = Duration::from_millis(i as u64 * 1000 / FPS) + jitter(i as u64);
        items.push((at, true, i));
    }
    for i in 0..m.audio.len() {
        let at = Duration::from_millis(i as u64 * 20) + jitter(i as u64 + 3);
        items.push((at, false, i));
    }
    items.sort();
    for (at, video, i) in items.into_iter().filter(|(at, ..)| *at < until) {
        let n = i as u64;
        if video {
            let (data, key) = &m.video[i];
            w.write_video(webm::VideoFrame {
                rtp_ts: (u32::MAX - 100_000).wrapping_add((n * 90_000 / FPS) as u32),
                arrival: t0 + at,
                keyframe: *key,
                data,
            })
            .expect("video frame");
        } else {
            w.write_audio(webm::AudioPacket {
                rtp_ts: (u32::MAX - 20_000).wrapping_add((n * 960) as u32),
                arrival: t0 + at,
                data: &m.audio[i],
            })
            .expect("audio packet");
        }
    }
}

/// A visit participant's recording, registered, written and chained.
pub(crate) struct Recorded {
    pub id: String,
    /// Relative to the recordings directory.
    pub path: String,
    pub finished: webm::Finished,
}

/// Registers `participant`'s recording of visit `session` (facility `facility`) started at
/// `at`, writes the whole media into it, closes, seals and finishes it (chained).
pub(crate) async fn record_visit(
    store: &Store,
    dir: &Path,
    session: &str,
    facility: &str,
    participant: Participant,
    at: DateTime<Utc>,
    m: &Media,
) -> Recorded {
    let (id, path, mut w, t0) = begin_visit(store, dir, session, facility, participant, at).await;
    feed(&mut w, m, t0, Duration::from_secs(m.secs + 1));
    let (finished, _) = w.close().expect("close");
    let full = dir.join(&path);
    let sha256 = recording::seal(&full).expect("seal");
    store
        .finish_recording(&id, &recording::visit_finished(&finished, sha256, 0, true))
        .await
        .expect("finish the recording");
    Recorded { id, path, finished }
}

/// Registers `participant`'s recording of visit `session` and opens its writer: the row
/// is `recording` (in progress) until it is finished. Returns (id, relative path, writer,
/// the instant the media's time 0 arrives).
pub(crate) async fn begin_visit(
    store: &Store,
    dir: &Path,
    session: &str,
    facility: &str,
    participant: Participant,
    at: DateTime<Utc>,
) -> (String, String, webm::Writer, Instant) {
    let path = recording::relative_path(session, MediaKind::VisitVideo, participant, at);
    let t0 = Instant::now();
    let w = webm::Writer::open(&dir.join(&path), webm::Params::default(), t0, at)
        .expect("open the WebM writer");
    let id = store
        .start_visit_recording(
            NewRecording {
                session_id: session,
                facility_id: facility,
                path: &path,
                format: webm::FORMAT_NAME,
                node_id: "node-1",
                started_at: at,
            },
            participant,
        )
        .await
        .expect("register the recording");
    (id, path, w, t0)
}

/// Inserts an ended video visit session of `facility` (no inmate needed: the recording
/// path only reads its kind and privilege).
pub(crate) async fn insert_visit(store: &Store, id: &str, facility: &str, at: DateTime<Utc>) {
    let at = at.timestamp_micros();
    sqlx::query(
        "INSERT INTO sessions (id, kind, facility_id, service, state, end_reason, node_id, \
         invite_at, answer_at, accepted_at, end_at) \
         VALUES ($1, 'visit', $2, 'video', 'ended', 'slot_ended', 'node-1', $3, $3, $3, $4)",
    )
    .bind(id)
    .bind(facility)
    .bind(at)
    .bind(at + 60_000_000)
    .execute(store.db().pool())
    .await
    .expect("insert the visit session");
}

/// The test media (10 s of 640×360 VP8 at about 500 kbit/s with a keyframe every 3 s, and
/// 32 kbit/s Opus in 20 ms packets), made with ffmpeg unless already there; `None`
/// (skipped) without ffmpeg.
pub(crate) fn sfu_media() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sfu-media");
    let (ivf, ogg) = (dir.join("visit.ivf"), dir.join("visit.ogg"));
    if ivf.exists() && ogg.exists() {
        return Some((ivf, ogg));
    }
    std::fs::create_dir_all(&dir).unwrap();
    let ffmpeg = |args: &[&str], out: &Path| {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(out)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A moving pattern with a little noise: on plain `testsrc` libvpx undershoots to
    // about 220 kbit/s; with the noise it holds the 500 kbit/s asked for.
    let video = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "10",
    ];
    let vp8 = [
        "-vf",
        "noise=alls=8:allf=t",
        "-c:v",
        "libvpx",
        "-b:v",
        "500k",
        "-g",
        "90",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-f",
        "ivf",
    ];
    let audio = [
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "10",
    ];
    let opus = ["-c:a", "libopus", "-b:a", "32k", "-ac", "1", "-f", "ogg"];
    let made = ffmpeg(
        &[&video[..], &vp8[..]].concat(),
        &ivf.with_extension("tmp.ivf"),
    ) && ffmpeg(
        &[&audio[..], &opus[..]].concat(),
        &ogg.with_extension("tmp.ogg"),
    );
    if !made {
        sallyport::db::testing::skip_or_fail(
            "ffmpeg with libvpx and libopus is not installed (Debian package ffmpeg): \
             the visit media test skipped",
        );
        return None;
    }
    std::fs::rename(ivf.with_extension("tmp.ivf"), &ivf).unwrap();
    std::fs::rename(ogg.with_extension("tmp.ogg"), &ogg).unwrap();
    Some((ivf, ogg))
}
