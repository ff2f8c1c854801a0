//! One video visit run by its task end to end, without browsers: two synthetic str0m
//! participants (VP8 and Opus made by Debian's ffmpeg) join through the task's page
//! channel, get their answers from a real forwarding hub on loopback UDP, exchange media,
//! and the visit is charged through the real ledger on SQLite, told to both pages, and
//! cut at the end of its slot; its session row and timeline say what happened.
//!
//! Without ffmpeg the test prints why and passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use chrono::Utc;
use sallyport::charging::ChargingPlan;
use sallyport::clock::{Clock, SystemClock};
use sallyport::db::testing::TestDb;
use sallyport::money::Money;
use sallyport::recording::chain;
use sallyport::session::cdr;
use sallyport::session::EndReason;
use sallyport::sfu::synthetic::{self, Counts, Script, SyntheticPeer};
use sallyport::sfu::{spawn_hub, HubHandle, Participant, Side};
use sallyport::store::{RecordingStatus, Store};
use sallyport::visit::signal::{FromPage, Phase, ToPage, WarningKind};
use sallyport::visit::task::{VisitInput, VisitSetup, VisitTask};
use sqlx::Row;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

/// Facility F1; one inmate with `balance` and an approved, video-allowed contact.
async fn world(balance: &str) -> (TestDb, Store, String, String, String) {
    let t = TestDb::sqlite().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Store::new(t.db.clone(), clock, "test-pepper-0123456789");
    let s = support::seed::inmate_with_contact(&store, balance, true).await;
    (t, store, s.inmate, s.account, s.contact)
}

/// Waits for the first message on `rx` that `pick` accepts.
async fn until<T>(
    rx: &mut mpsc::Receiver<ToPage>,
    what: &str,
    pick: impl Fn(&ToPage) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within 30 s"))
            .unwrap_or_else(|| panic!("the page channel closed before {what}"));
        if let Some(v) = pick(&msg) {
            return v;
        }
    }
}

struct Running {
    inputs: mpsc::Sender<VisitInput>,
    visit: tokio::task::JoinHandle<sallyport::visit::task::VisitSummary>,
    hub: HubHandle,
}

/// A visit of `slot_secs` open now, $0.10 per 2-second increment, warnings 3 s ahead, run
/// by its task with a real hub on loopback whose events go to the task.
async fn start(
    store: &Store,
    inmate: &str,
    account: &str,
    contact: &str,
    slot_secs: i64,
    recordings_dir: Option<PathBuf>,
) -> Running {
    let (events_tx, mut events_rx) = mpsc::channel(256);
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let hub = spawn_hub(socket, LOOPBACK, Arc::new(SystemClock), events_tx).unwrap();
    let (inputs_tx, inputs_rx) = mpsc::channel(256);
    let forward = inputs_tx.clone();
    tokio::spawn(async move {
        while let Some((_room, e)) = events_rx.recv().await {
            if forward.send(VisitInput::Room(e)).await.is_err() {
                break;
            }
        }
    });

    let now = Utc::now();
    let setup = VisitSetup {
        visit_id: "vis_1".into(),
        session_id: "ses_1".into(),
        facility_id: "F1".into(),
        inmate_id: inmate.to_string(),
        contact_id: contact.to_string(),
        account_id: account.to_string(),
        privileged: false,
        node_id: "n1".into(),
        recordings_dir,
        opens_at: now,
        ends_at: now + chrono::Duration::seconds(slot_secs),
        no_show_at: now + chrono::Duration::seconds(6),
        room: 1,
    };
    let plan = ChargingPlan {
        cost_per_increment: m("0.10"),
        increment: Duration::from_secs(2),
        max_duration: Duration::ZERO,
        warning_lead: Duration::from_secs(3),
        debit_timeout: Duration::from_secs(5),
    };
    let task = VisitTask::new(
        setup,
        plan,
        store.clone(),
        hub.clone(),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let visit = tokio::spawn(task.run(inputs_rx));
    Running {
        inputs: inputs_tx,
        visit,
        hub,
    }
}

/// A side's page attaches, sees the slot open, offers from a synthetic participant and
/// gets its answer; the participant then plays `secs` of media.
async fn join(
    r: &Running,
    side: Side,
    script: &Arc<Script>,
    secs: u64,
) -> (mpsc::Receiver<ToPage>, tokio::task::JoinHandle<Counts>) {
    let (tx, mut rx) = mpsc::channel(64);
    r.inputs
        .send(VisitInput::Attach { side, tx })
        .await
        .unwrap();
    let phase = until(&mut rx, "a state", |m| match m {
        ToPage::State { phase, .. } => Some(*phase),
        _ => None,
    })
    .await;
    assert_ne!(phase, Phase::Lobby, "{side:?}: the slot is open");
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let (mut peer, offer) =
        SyntheticPeer::offer(socket.local_addr().unwrap(), Instant::now()).unwrap();
    let msg = FromPage::Offer { sdp: offer };
    r.inputs.send(VisitInput::Page { side, msg }).await.unwrap();
    let answer = until(&mut rx, "an answer", |m| match m {
        ToPage::Answer { sdp } => Some(sdp.clone()),
        _ => None,
    })
    .await;
    peer.accept_answer(&answer).unwrap();
    let player = tokio::spawn(synthetic::run(
        socket,
        peer,
        script.clone(),
        Duration::from_secs(secs),
        Duration::from_millis(500),
    ));
    (rx, player)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_is_forwarded_charged_warned_and_cut_at_the_end_of_its_slot() {
    let Some((ivf, ogg)) = support::visit_media::sfu_media() else {
        return;
    };
    let script = Arc::new(Script::from_files(&ivf, &ogg).unwrap());
    let (t, store, inmate, account, contact) = world("1.00").await;
    let recordings = tempfile::tempdir().unwrap();
    let dir = recordings.path().to_path_buf();
    let r = start(&store, &inmate, &account, &contact, 8, Some(dir.clone())).await;

    // Both pages attach, see the slot open, offer, and play their media.
    let mut pages = Vec::new();
    let mut players = Vec::new();
    for side in [Side::Visitor, Side::Inmate] {
        let (rx, player) = join(&r, side, &script, 12).await;
        pages.push(rx);
        players.push(player);
    }

    // Both pages see billing start, the slot's warning and the end.
    for (rx, side) in pages.iter_mut().zip(["visitor", "inmate"]) {
        until(rx, "connected", |m| match m {
            ToPage::State {
                phase: Phase::Connected,
                ..
            } => Some(()),
            _ => None,
        })
        .await;
        let warning = until(rx, "a warning", |m| match m {
            ToPage::Warning { reason, .. } => Some(*reason),
            _ => None,
        })
        .await;
        assert_eq!(warning, WarningKind::SlotEnding, "{side}");
        let reason = until(rx, "the end", |m| match m {
            ToPage::Ended { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert_eq!(reason, "slot_ended", "{side}");
    }
    let summary = tokio::time::timeout(Duration::from_secs(30), r.visit)
        .await
        .expect("the visit's task ends")
        .unwrap();
    eprintln!("visit summary: {summary:?}");
    assert_eq!(summary.reason, EndReason::SlotEnded);
    // Connected from both sides' media to the slot's end: under 8 s, so 1 to 4 increments
    // of 2 s (media takes a moment to connect on a loaded machine).
    assert!(
        (1..=4).contains(&summary.increments),
        "{} increments over {:?} connected",
        summary.increments,
        summary.connected
    );
    assert_eq!(
        summary.charged,
        m("0.10").times(u64::from(summary.increments))
    );
    for p in players {
        let counts = p.await.unwrap();
        eprintln!("participant: {counts:?}");
        assert!(
            counts.video_frames > 0 && counts.opus_packets > 0,
            "each side received the other's media: {counts:?}"
        );
    }

    // The ledger, the session row and its timeline agree.
    let balance = store.ledger().balance(&account).await.unwrap();
    assert_eq!(balance, m("1.00") - summary.charged);
    let db = store.db();
    let row = sqlx::query(
        "SELECT kind, service, state, end_reason, billed_increments, amount_minor, accepted_at, \
         end_at FROM sessions WHERE id = 'ses_1'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("kind"), "visit");
    assert_eq!(row.get::<String, _>("service"), "video");
    assert_eq!(row.get::<String, _>("state"), "ended");
    assert_eq!(row.get::<String, _>("end_reason"), "slot_ended");
    assert_eq!(
        row.get::<i64, _>("billed_increments"),
        i64::from(summary.increments)
    );
    assert_eq!(
        row.get::<i64, _>("amount_minor"),
        summary.charged.to_minor()
    );
    assert!(row.get::<Option<i64>, _>("accepted_at").is_some());
    let kinds: Vec<(String, String)> = cdr::events(db, "ses_1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.side))
        .collect();
    for expected in [
        ("joined", "visitor"),
        ("joined", "inmate"),
        ("media", "visitor"),
        ("media", "inmate"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, s)| k == expected.0 && s == expected.1),
            "{expected:?} missing from {kinds:?}"
        );
    }
    // Both sides recorded, finished, chained, and their files read back as VP8 + Opus
    // for about the connected time.
    let recs = store.session_recordings("ses_1").await.unwrap();
    assert_eq!(recs.len(), 2, "{recs:?}");
    for rec in &recs {
        assert_eq!(rec.status, RecordingStatus::Complete, "{rec:?}");
        assert!(rec.sha256.is_some() && rec.chain_seq.is_some(), "{rec:?}");
        let secs = rec.duration_ms.unwrap() as f64 / 1000.0;
        assert!(
            (summary.connected.as_secs_f64() - secs).abs() < 1.5,
            "{} recorded {secs} s of {:?} connected",
            rec.participant.as_str(),
            summary.connected
        );
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(dir.join(&rec.path))
            .output()
            .unwrap();
        let codecs = String::from_utf8_lossy(&probe.stdout);
        assert!(
            codecs.contains("vp8") && codecs.contains("opus"),
            "{}: {codecs}",
            rec.path
        );
    }
    let report = chain::verify_all(&store, &dir).await.unwrap();
    assert!(report.ok, "{report:?}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_that_drops_out_pauses_the_charge_until_it_is_back() {
    let Some((ivf, ogg)) = support::visit_media::sfu_media() else {
        return;
    };
    let script = Arc::new(Script::from_files(&ivf, &ogg).unwrap());
    let (t, store, inmate, account, contact) = world("1.00").await;
    let r = start(&store, &inmate, &account, &contact, 14, None).await;
    let (mut visitor, _v) = join(&r, Side::Visitor, &script, 20).await;
    let (mut kiosk, _k) = join(&r, Side::Inmate, &script, 20).await;
    let connected = |m: &ToPage| match m {
        ToPage::State {
            phase: Phase::Connected,
            ..
        } => Some(()),
        _ => None,
    };
    until(&mut visitor, "connected", connected).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The visitor's network goes: the forwarding core reports the side gone.
    r.hub
        .remove(1, Participant::Side(Side::Visitor))
        .await
        .unwrap();
    until(&mut kiosk, "paused", |m| match m {
        ToPage::State {
            phase: Phase::Paused,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The visitor's page reloads: a new page and a new offer from the same side.
    let (mut again, _v2) = join(&r, Side::Visitor, &script, 20).await;
    // The page it replaced (still open, as a second tab would be) is told why it is done.
    let code = until(&mut visitor, "the old page told", |m| match m {
        ToPage::Error { code, .. } => Some(code.clone()),
        _ => None,
    })
    .await;
    assert_eq!(code, "opened_elsewhere");
    until(&mut again, "connected again", connected).await;
    let leave = VisitInput::Page {
        side: Side::Inmate,
        msg: FromPage::Leave,
    };
    r.inputs.send(leave).await.unwrap();
    let reason = until(&mut again, "the end", |m| match m {
        ToPage::Ended { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, "inmate_left");
    let summary = tokio::time::timeout(Duration::from_secs(30), r.visit)
        .await
        .expect("the visit's task ends")
        .unwrap();
    eprintln!("visit summary: {summary:?}");
    assert_eq!(summary.reason, EndReason::InmateLeft);
    assert!(
        summary.paused >= Duration::from_secs(4),
        "paused {:?}",
        summary.paused
    );
    // The connected time excludes the pause; the increments pay for it and no more.
    let bound = u64::try_from(summary.connected.as_millis())
        .unwrap()
        .div_ceil(2000)
        .max(1);
    assert!(
        u64::from(summary.increments) <= bound,
        "{} increments for {:?} connected",
        summary.increments,
        summary.connected
    );
    let db = store.db();
    let paused_ms: i64 = sqlx::query("SELECT paused_ms FROM sessions WHERE id = 'ses_1'")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        paused_ms,
        i64::try_from(summary.paused.as_millis()).unwrap()
    );
    let kinds: Vec<String> = cdr::events(db, "ses_1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for k in ["dropped", "paused", "resumed", "left"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    t.cleanup().await;
}
