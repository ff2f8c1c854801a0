//! Recording when the disk fails, end to end: the real `sallyport serve` between two sipp
//! processes (as in `sip_calls`), with its recordings disk made to fail for real.
//!
//! The gateway is started with `RLIMIT_FSIZE` lowered to [`LIMIT`] bytes (about 6 s of
//! stereo G.711 at 16,000 B/s) and `SIGXFSZ` ignored (`SIG_IGN` survives `exec`), so a
//! write that would grow a file past the limit is cut at the limit and the next one fails
//! with `EFBIG`, as on a full disk. The limit applies to every regular file the process
//! writes: its database is PostgreSQL (a socket), its log goes to a pipe (the harness
//! copies it to `gateway.log`), its stdout is a pipe, and nothing else under its data
//! directory is written, so the recordings are the only files it hits.
//!
//! One call runs twice as long as the limit allows: the call is not disturbed, the
//! recording is finished `incomplete` with the audio up to the limit in a valid WAV, its
//! hash chained, and both integrity checks pass. Then the limit is lowered to 0 on the
//! running gateway (`prlimit`: the disk is now full): a second call cannot start its
//! recording, goes on unrecorded, and leaves no file behind.
//!
//! Needs sipp (skipped like `sip_calls` without it) and PostgreSQL
//! (`SALLYPORT_TEST_DATABASE_URL`; skipped with the reason printed when unset, failed
//! instead with `SALLYPORT_REQUIRE_EXTERNAL=1`).
//! Run: `SALLYPORT_TEST_DATABASE_URL=postgres://… cargo test --test recording_faults`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use rust_decimal::Decimal;
use sallyport::db::testing::TestDb;
use sallyport::recording::wav;
use serde_json::Value;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::api::{book, dec, fund, money, three_second_increments, Api};
use support::gateway::{self, Gateway};
use support::sipp::{self, bursts, tone_share, Handset, Ports, Tone, Trunk, Via};
use support::Workdir;

/// The largest file the gateway may write: the header and 99,942 bytes of audio, 49,971
/// stereo frames, 6.246 s.
const LIMIT: u64 = 100_000;

/// $0.05 per minute in 3-second increments.
const INCREMENT_SECS: f64 = 3.0;
const COST: &str = "0.0025";

/// The called party: a 400 ms 1 kHz burst every second, from 500 ms after pressing 1.
const CALLEE_VOICE: Tone = Tone {
    hz: 1000.0,
    lead_ms: 500,
    on_ms: 400,
    off_ms: 600,
    bursts: 20,
};
/// The inmate: 300 ms of 440 Hz every 500 ms from the end of the PIN.
const INMATE_VOICE: Tone = Tone {
    hz: 440.0,
    lead_ms: 0,
    on_ms: 300,
    off_ms: 200,
    bursts: 40,
};

/// Before `exec`: files may grow to `bytes` (the soft limit; the hard one is left, so it
/// can be lowered further later), and a write past it fails instead of killing.
fn limit_file_size(cmd: &mut Command, bytes: u64) {
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // system calls (signal, getrlimit, setrlimit), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            set_file_size_limit(0, bytes)
        });
    }
}

/// Sets the soft `RLIMIT_FSIZE` of process `pid` (0: this one) to `bytes`.
fn set_file_size_limit(pid: libc::pid_t, bytes: u64) -> std::io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads and writes only the two structs passed, which outlive the call.
    unsafe {
        if libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = bytes as libc::rlim_t;
        if libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A fresh PostgreSQL database, or `None` (skipped, the reason printed).
fn postgres(rt: &tokio::runtime::Runtime) -> Option<(TestDb, String)> {
    let t = rt.block_on(TestDb::postgres())?;
    let url = t
        .postgres_url()
        .expect("a PostgreSQL test database has a URL");
    Some((t, url))
}

/// `sallyport verify-recordings` on the files of `dir` and the database at `url` passes.
fn assert_verifies(dir: &Path, url: &str) {
    let out = gateway::verify_recordings_on(dir, url);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify-recordings: {text}");
}

/// Every `.wav` under `dir`.
fn wav_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "wav") {
                out.push(p);
            }
        }
    }
    out
}

/// Seconds from acceptance to the end of the call.
fn connected_secs(cdr: &Value) -> f64 {
    let t = |f: &str| -> chrono::DateTime<chrono::Utc> {
        cdr[f]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("CDR {f}: {cdr}"))
    };
    (t("end_at") - t("accepted_at")).num_milliseconds() as f64 / 1000.0
}

/// The inmate hung up after `secs` connected: every increment started is charged, no more.
fn assert_charged_as_connected(api: &Api, cdr: &Value) -> Decimal {
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    let secs = connected_secs(cdr);
    let billed = cdr["billed_increments"]
        .as_i64()
        .expect("billed_increments");
    let started = (secs / INCREMENT_SECS).floor() as i64 + 1;
    let near_boundary = (secs % INCREMENT_SECS) < 0.3 || (secs % INCREMENT_SECS) > 2.7;
    assert!(
        billed == started || (near_boundary && (billed - started).abs() <= 1),
        "connected {secs} s: {started} increments started, {billed} billed: {cdr}"
    );
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    api.assert_ledger_clean();
    charged
}

/// One inmate call through sipp: the handset (slot) hangs up `hold_ms` after its PIN.
fn call(dir: &Path, ports: &Ports, gw: &Gateway, slot: usize, pin: &str, hold_ms: u32) {
    let mut trunk = Trunk::answer("1").speaking(CALLEE_VOICE).spawn(dir, ports);
    let mut hs = Handset::new(pin, Via::Rtp)
        .speaking(INMATE_VOICE)
        .hang_up_after(hold_ms)
        .spawn(dir, slot, ports, gw.sip);
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(20));
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk leg got its BYE");
}

/// The disk fills during a recorded call, then stays full for the next call.
#[test]
fn a_full_disk_cuts_the_recording_not_the_call() {
    if !sipp::present("recording fault test") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some((db, url)) = postgres(&rt) else {
        return;
    };
    let dir = Workdir::new("recording_faults", "disk_full");
    let ports = sipp::ports();
    let gw = Gateway::start_with(&dir, &ports, "gateway", |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", &url)
            .stderr(Stdio::piped());
        limit_file_size(cmd, LIMIT);
    });
    let api = gw.api.clone();
    three_second_increments(&api);
    let inmate = book(&api, "S-DF1", "5821", support::api::NUMBER, false);
    fund(&api, &inmate, "1.00");

    // ---- 1: the disk fills 6 s into a 12 s call ---------------------------------------
    call(&dir, &ports, &gw, 0, &inmate.pin, 14_000);
    let cdr = &api.ended_calls(1)[0];
    let charged = assert_charged_as_connected(&api, cdr);
    let secs = connected_secs(cdr);
    assert!(secs > 10.0, "the call ran its course: {secs} s: {cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00") - charged);
    // Both legs were bridged to the end: ~50 packets a second each way while connected
    // (from the first key press), long after the recording stopped growing.
    let relayed = api.metric("sallyport_rtp_relayed_total");
    assert!(
        relayed as f64 >= 2.0 * 50.0 * (secs - 1.0) * 0.9,
        "{relayed} packets relayed in {secs} s"
    );
    assert_eq!(api.metric("sallyport_rtp_tap_dropped_total"), 0);
    // One call is far from the engine's capacity: its receives never found the pool empty.
    assert_eq!(
        api.metric("sallyport_media_receive_buffers_exhausted_total"),
        0
    );
    assert_eq!(api.metric("sallyport_recorder_write_errors_total"), 1);
    assert_eq!(api.metric("sallyport_recordings_open"), 0);

    assert_eq!(cdr["recorded"], true, "{cdr}");
    let id = cdr["recording_id"].as_str().expect("recording id");
    let rec = api.get(&format!("/api/v1/recordings/{id}"));
    assert_eq!(rec["status"], "incomplete", "{rec}");
    assert_eq!(rec["dropped_packets"], 0, "{rec}");
    let path = dir
        .join("recordings")
        .join(rec["path"].as_str().expect("path"));
    let bytes = fs::read(&path).unwrap();
    // The file grew to the limit and was cut there: every byte that fitted is kept, the
    // header is true for all of it (whole frames), and the row says so.
    assert_eq!(bytes.len() as u64, LIMIT, "{}", path.display());
    assert_eq!(rec["bytes"], LIMIT, "{rec}");
    let header = wav::parse_header(&bytes).expect("a WAV header");
    assert_eq!(u64::from(header.data_len), LIMIT - wav::HEADER_LEN);
    assert_eq!(
        Some(sallyport::recording::hash_file(&path).unwrap().as_str()),
        rec["sha256"].as_str(),
        "the file hashes to its row"
    );
    let frames = (LIMIT - wav::HEADER_LEN) / 2;
    assert_eq!(rec["duration_ms"], frames * 1000 / 8000, "{rec}");

    // The audio up to the failure: each party on its channel, to the last second.
    let file = wav::read(&path).unwrap();
    assert_eq!(file.left.len() as u64, frames);
    assert_eq!(file.right.len() as u64, frames);
    let decode = |c: &[u8]| -> Vec<i16> { c.iter().map(|&b| file.law.decode(b)).collect() };
    let (left, right) = (decode(&file.left), decode(&file.right));
    let file_ms = frames / 8;
    let callee = bursts(&tone_share(&right, CALLEE_VOICE.hz));
    assert_eq!(callee.len(), 6, "callee bursts on the right: {callee:?}");
    for (i, (at, len)) in callee.iter().enumerate() {
        let expected = CALLEE_VOICE.lead_ms + i as u64 * 1000;
        assert!(
            at.abs_diff(expected) <= 30 && len.abs_diff(CALLEE_VOICE.on_ms) <= 20,
            "burst {i} at {at} ms for {len} ms, expected at {expected}: {callee:?}"
        );
    }
    let inmate_bursts = bursts(&tone_share(&left, INMATE_VOICE.hz));
    assert!(
        inmate_bursts.len() >= 11,
        "inmate bursts on the left: {inmate_bursts:?}"
    );
    // The first and last may be cut by acceptance and by the end of the file.
    let whole = &inmate_bursts[1..inmate_bursts.len() - 1];
    for pair in whole.windows(2) {
        assert!(
            (pair[1].0 - pair[0].0).abs_diff(500) <= 20
                && pair[0].1.abs_diff(INMATE_VOICE.on_ms) <= 20,
            "inmate bursts {pair:?} of {inmate_bursts:?}"
        );
    }
    // Audio right up to the failure: the last burst starts within a period (and a
    // window's cut) of the file's end.
    let last = inmate_bursts.last().expect("a burst");
    assert!(
        last.0 + 520 >= file_ms,
        "the inmate's last burst at {} ms of {file_ms} ms: {inmate_bursts:?}",
        last.0
    );
    assert!(bursts(&tone_share(&left, CALLEE_VOICE.hz)).is_empty());
    assert!(bursts(&tone_share(&right, INMATE_VOICE.hz)).is_empty());

    // An honestly incomplete recording is not tampering: both checks pass.
    let check = api.get(&format!("/api/v1/recordings/{id}/verify"));
    assert_eq!(check["ok"], true, "{check}");
    assert_verifies(&dir, &url);

    // ---- 2: the disk is full: not one byte more ---------------------------------------
    set_file_size_limit(libc::pid_t::try_from(gw.child.id()).expect("pid"), 0)
        .expect("lower the gateway's file size limit");
    call(&dir, &ports, &gw, 1, &inmate.pin, 5_000);
    let cdr = &api.ended_calls(2)[1];
    let charged_2 = assert_charged_as_connected(&api, cdr);
    assert!(connected_secs(cdr) > 2.0, "{cdr}");
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - charged - charged_2
    );
    // The recording could not start: the call went on unrecorded, nothing is left on disk
    // for it, and the failure is counted.
    assert_eq!(cdr["recorded"], false, "{cdr}");
    assert!(cdr["recording_id"].is_null(), "{cdr}");
    assert_verifies(&dir, &url);
    assert_eq!(wav_files(&dir.join("recordings")), vec![path.clone()]);
    assert_eq!(api.metric("sallyport_recorder_start_errors_total"), 1);
    assert_eq!(api.metric("sallyport_recorder_write_errors_total"), 1);

    drop(gw);
    rt.block_on(db.cleanup());
}
