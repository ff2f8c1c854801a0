//! Video visits' forwarding over real UDP on loopback: two synthetic participants (str0m
//! clients playing VP8 and Opus made by Debian's ffmpeg/libvpx/libopus, at their real
//! rates) join one room of a hub driven by its tokio task on one shared socket, and each
//! receives the other's frames and packets; a receive-only watcher gets both sides. A second room on the same socket carries
//! its own pair at the same time, so the hub's routing is exercised too.
//!
//! Without ffmpeg the test prints why and passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
//! The media is made once per target directory (`CARGO_TARGET_TMPDIR/sfu-media`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport::clock::SystemClock;
use sallyport::sfu::synthetic::{self, Counts, Script, SyntheticPeer};
use sallyport::sfu::{spawn_hub, HubHandle, Participant, RoomConfig, RoomEvent, Side};
use str0m::media::MediaKind;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PLAY: Duration = Duration::from_secs(4);

/// A participant's socket, its offer answered by the hub in room `room`.
async fn join(hub: &HubHandle, room: u64, who: Participant) -> (UdpSocket, SyntheticPeer) {
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let local = socket.local_addr().unwrap();
    let (mut peer, offer) = match who {
        Participant::Side(_) => SyntheticPeer::offer(local, Instant::now()).unwrap(),
        Participant::Watcher(_) => SyntheticPeer::offer_watcher(local, Instant::now()).unwrap(),
    };
    let answer = hub.offer(room, who, offer).await.unwrap();
    assert!(
        answer.contains(&format!("{} typ host", hub.local().port())),
        "the answer advertises the hub's socket: {answer}"
    );
    peer.accept_answer(&answer).unwrap();
    (socket, peer)
}

fn close(got: u64, sent: u64, what: &str) {
    // Frames still in flight when the sender stops, or sent before the receiver's DTLS
    // was up, may miss; loopback loses nothing else.
    assert!(sent > 0, "{what}: nothing sent");
    assert!(
        got * 100 >= sent * 95 && got <= sent,
        "{what}: received {got} of {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_of_synthetic_participants_exchange_vp8_and_opus_over_one_socket() {
    let Some((ivf, ogg)) = support::visit_media::sfu_media() else {
        return;
    };
    let script = Arc::new(Script::from_files(&ivf, &ogg).unwrap());
    assert!(script.video.iter().filter(|f| f.keyframe).count() >= 3);

    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let (events_tx, mut events) = mpsc::channel(1_024);
    let hub = spawn_hub(socket, LOOPBACK, Arc::new(SystemClock), events_tx).unwrap();
    let mut runs = Vec::new();
    for room in [1u64, 2] {
        assert!(hub.open_room(room, RoomConfig::default()).await.unwrap());
        for side in [Side::Visitor, Side::Inmate] {
            let (socket, peer) = join(&hub, room, Participant::Side(side)).await;
            let script = script.clone();
            let run = synthetic::run(socket, peer, script, PLAY, Duration::from_millis(700));
            runs.push((room, side, tokio::spawn(run)));
        }
    }
    // An investigator watches room 1: receive-only, both sides.
    let (socket, watcher) = join(&hub, 1, Participant::Watcher(1)).await;
    let linger = Duration::from_millis(700);
    let watch = synthetic::run_for_lines(socket, watcher, script.clone(), PLAY, linger);
    let watch = tokio::spawn(watch);
    let mut counts: Vec<(u64, Side, Counts)> = Vec::new();
    for (room, side, run) in runs {
        counts.push((room, side, run.await.unwrap()));
    }
    let (watched, lines) = watch.await.unwrap();
    eprintln!("watcher: {watched:?}");
    assert_eq!(lines.len(), 4);
    let sides = [Side::Visitor, Side::Visitor, Side::Inmate, Side::Inmate];
    for (line, side) in lines.iter().zip(sides) {
        let (_, _, sent) = counts
            .iter()
            .find(|(r, s, _)| *r == 1 && *s == side)
            .unwrap();
        let sent = match line.kind {
            MediaKind::Audio => sent.sent_opus_packets,
            MediaKind::Video => sent.sent_video_frames,
        };
        // It joined last, so it may miss the first frames of each side.
        let what = format!("watcher {:?} of the {}", line.kind, side.as_str());
        assert!(
            line.frames * 100 >= sent * 90 && line.frames <= sent,
            "{what}: {} of {sent}",
            line.frames
        );
    }
    assert_eq!(watched.sent_video_frames + watched.sent_opus_packets, 0);
    for (room, side, got) in &counts {
        let (_, _, sent) = counts
            .iter()
            .find(|(r, s, _)| r == room && *s == side.other())
            .unwrap();
        eprintln!("room {room} {side:?}: {got:?}");
        let what = format!("room {room}, {}", side.as_str());
        close(
            got.video_frames,
            sent.sent_video_frames,
            &format!("{what} VP8"),
        );
        close(
            got.opus_packets,
            sent.sent_opus_packets,
            &format!("{what} Opus"),
        );
        assert!(got.keyframes >= 1, "{what}: {got:?}");
        assert!(
            got.video_bytes > 150_000,
            "{what}: about 500 kbit/s for 4 s: {got:?}"
        );
    }
    // About 30 frames and 50 packets a second each way.
    assert!(counts.iter().all(|(_, _, c)| c.sent_video_frames >= 100));
    assert!(counts.iter().all(|(_, _, c)| c.sent_opus_packets >= 170));

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    for room in [1u64, 2] {
        for side in [Side::Visitor, Side::Inmate] {
            let connected = RoomEvent::Connected(Participant::Side(side));
            assert!(seen.contains(&(room, connected)), "{seen:?}");
        }
        assert!(seen.contains(&(room, RoomEvent::MediaFlowing)), "{seen:?}");
        let stats = hub.close_room(room).await.unwrap().unwrap();
        assert!(stats.frames_forwarded >= 2 * 270, "{stats:?}");
        assert_eq!(stats.codec_mismatch, 0);
    }
    let s = hub.stats();
    assert_eq!(s.events_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(s.send_errors.load(Ordering::Relaxed), 0);
    eprintln!(
        "hub: {} datagrams in, {} out, {} unrouted",
        s.datagrams_in.load(Ordering::Relaxed),
        s.datagrams_out.load(Ordering::Relaxed),
        s.unrouted.load(Ordering::Relaxed)
    );
    let _: SocketAddr = hub.local();
}
