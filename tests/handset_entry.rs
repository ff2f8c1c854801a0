//! What an inmate and a new user meet at the handset, end to end against the real
//! `sallyport serve` and sipp: the README's "Placing a call" commands as written, the
//! refusals before a call exists (logged and counted, no CDR), what a trusted network
//! admits, and the PIN-guessing attacks repeated: rotating From users on one line, and
//! guessing across IDs.
//!
//! Without sipp the tests print why and pass, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use serde_json::{json, Value};
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::api::{book, fund, Api, FACILITY, NUMBER};
use support::gateway::Gateway;
use support::sipp::{self, Handset, Ports, Trunk, Via};
use support::Workdir;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The `sh` block of the README's "Placing a call" section.
fn readme_commands() -> String {
    let readme = fs::read_to_string(format!("{REPO}/README.md")).expect("README.md");
    let section = readme
        .split("\n## Placing a call\n")
        .nth(1)
        .expect("README has a 'Placing a call' section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("a ```sh block in 'Placing a call'");
    block.split("\n```").next().unwrap_or_default().to_string()
}

/// `text` with `from` replaced by `to`, which must occur: a README that drifted from the
/// ports and paths this test knows fails here, by name.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the README's commands no longer contain {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// The demo inmate (booked by the first start), as the API shows it.
fn demo_inmate(api: &Api) -> Value {
    let all = api.get(&format!("/api/v1/facilities/{FACILITY}/inmates"));
    all.as_array()
        .and_then(|a| a.iter().find(|i| i["booking_number"] == "D-1001").cloned())
        .expect("the demo inmate D-1001")
}

/// Waits for the process `pid` (not our child: sipp `-bg` detaches) to exit.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The new user's path: the README's commands, exactly as written but for the ports and
/// the directory, against a gateway seeded with the demo on its first start. The call is
/// accepted, billed and ends with a CDR; what the demo printed to key is what the README
/// keys.
#[test]
fn the_readme_call_runs_as_written() {
    if !sipp::present("README call test") {
        return;
    }
    let dir = Workdir::new("handset_entry", "readme");
    let ports = sipp::ports();
    let gw = Gateway::start(&dir, &ports);
    let api = gw.api.clone();
    let printed = fs::read_to_string(dir.join("gateway.stdout")).unwrap_or_default();
    assert!(
        printed.contains("100001#1234#") && printed.contains("calling ID 100001, PIN 1234"),
        "the demo prints what to key: {printed}"
    );
    let work = dir.join("call");
    let mut script = readme_commands();
    for (from, to) in [
        ("/tmp/call", work.display().to_string()),
        ("127.0.0.1:5060", gw.sip.to_string()),
        ("-p 5080", format!("-p {}", ports.trunk_sip)),
        ("-mp 16000", format!("-mp {}", ports.trunk_media)),
        ("-p 5070", format!("-p {}", ports.handsets[0].0)),
        ("-mp 16100", format!("-mp {}", ports.handsets[0].1)),
    ] {
        script = swap(&script, from, &to);
    }
    assert!(script.contains("100001#1234#"), "{script}");
    fs::write(dir.join("readme.sh"), &script).unwrap();
    // As pasted into a terminal: line after line (`sipp -bg` exits 99 once it has gone to
    // the background, so no `-e`), the last status the handset's; sipp in the foreground
    // reads keyboard commands from stdin, so it gets a pipe that stays open.
    let mut sh = Command::new("bash")
        .args(["-c", &script])
        .current_dir(REPO)
        .stdin(Stdio::piped())
        .env("SALLYPORT_SIPP_PCAPS", sipp::pcap_dir())
        .stdout(Stdio::from(
            fs::File::create(dir.join("readme.out")).unwrap(),
        ))
        .stderr(Stdio::from(
            fs::File::create(dir.join("readme.err")).unwrap(),
        ))
        .spawn()
        .expect("bash");
    let _keyboard = sh.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = sh.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = sh.kill();
            panic!("the README's commands still run after 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = fs::read_to_string(dir.join("readme.out")).unwrap_or_default()
        + &fs::read_to_string(dir.join("readme.err")).unwrap_or_default();
    // sipp -bg says where the trunk went; it ends with the call (-m 1).
    let trunk_pid: Option<u32> = out
        .split("PID=[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .and_then(|p| p.trim().parse().ok());
    if let Some(pid) = trunk_pid {
        if !wait_gone(pid, Duration::from_secs(15)) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
    assert!(
        status.success(),
        "the README's commands failed ({status}):\n{out}"
    );
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    assert!(!cdr["accepted_at"].is_null(), "accepted: {cdr}");
    assert!(
        cdr["billed_increments"].as_i64() >= Some(1),
        "billed: {cdr}"
    );
    assert_eq!(
        cdr["amount"], "0.05",
        "one 60-second increment at $0.05/min: {cdr}"
    );
    let inmate = demo_inmate(&api);
    assert_eq!(cdr["inmate_id"], inmate["id"], "{cdr}");
    let account = inmate["account_id"].as_str().unwrap();
    assert_eq!(api.call_charges(account).len(), 1);
    api.assert_ledger_clean();
}

/// What stops a handset before any call exists — an offer without PCMU or PCMA (what the
/// README's old commands met), a From user that is no provisioned handset on the trusted
/// network — is answered, logged with its reason and counted by reason; no CDR is
/// written. The demo says exactly what the trusted network admits.
#[test]
fn refusals_before_a_call_are_logged_and_counted() {
    if !sipp::present("refusal test") {
        return;
    }
    let dir = Workdir::new("handset_entry", "refusals");
    let ports = sipp::ports();
    let gw = Gateway::start(&dir, &ports);
    let api = gw.api.clone();
    let printed = fs::read_to_string(dir.join("gateway.stdout")).unwrap_or_default();
    assert!(
        printed.contains("admits provisioned handsets only: another From user gets 403"),
        "the demo says what the trusted network admits: {printed}"
    );
    let refused = |reason: &str| {
        api.metric_with(
            "sallyport_sip_invites_refused_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(
        (refused("no_common_codec"), refused("unknown_handset")),
        (0, 0)
    );

    let g729 = Handset::new("1234", Via::Info).offering("18");
    let mut hs = g729.spawn(&dir, 0, &ports, gw.sip);
    assert!(!hs.wait(Duration::from_secs(30)).success());
    assert!(hs.messages().contains("SIP/2.0 488"), "{}", hs.messages());
    let stranger = Handset::new("1234", Via::Info).user("not-a-handset");
    let mut hs = stranger.spawn(&dir, 1, &ports, gw.sip);
    assert!(!hs.wait(Duration::from_secs(30)).success());
    assert!(
        hs.messages().contains("SIP/2.0 403 Unknown handset"),
        "{}",
        hs.messages()
    );

    assert_eq!(refused("no_common_codec"), 1);
    assert_eq!(refused("unknown_handset"), 1);
    let log = fs::read_to_string(&gw.log).unwrap();
    for (reason, status) in [("no_common_codec", "488"), ("unknown_handset", "403")] {
        assert!(
            log.lines().any(|l| l.contains("handset INVITE refused")
                && l.contains(&format!("reason=\"{reason}\""))
                && l.contains(&format!("status={status}"))),
            "no log line for {reason}:\n{log}"
        );
    }
    assert!(
        !log.contains("+15551230001\" status"),
        "no number in refusal logs"
    );
    let calls = api.calls(&format!("facility_id={FACILITY}"));
    assert!(calls.is_empty(), "no CDR for a refusal: {calls:?}");
}

/// A gateway whose line lockout is 4 failures and whose guessing alert needs 2 IDs, with
/// an inmate to guess at and one to call as, and three extra handsets on the trusted
/// network (the From users an attacker rotates).
fn attack_case(dir: &Workdir, ports: &Ports) -> (Gateway, support::api::Inmate) {
    let gw = Gateway::start_with(dir, ports, "gateway", |cmd| {
        cmd.envs([
            ("SALLYPORT_SECURITY_LINE_LOCKOUT_AFTER_FAILURES", "4"),
            ("SALLYPORT_SECURITY_GUESS_ALERT_IDS", "2"),
        ]);
    });
    let api = gw.api.clone();
    support::api::three_second_increments(&api);
    for user in ["hs-a", "hs-b", "hs-c"] {
        api.post(
            &format!("/api/v1/facilities/{FACILITY}/handsets"),
            json!({ "name": user, "sip_username": user }),
        );
    }
    let inmate = book(&api, "K-1", "5813", NUMBER, false);
    fund(&api, &inmate, "1.00");
    (gw, inmate)
}

/// The attack that found it, repeated: guesses from one phone while rotating the From
/// user (all provisioned handsets of the trusted network) are counted against the line.
/// Four failures lock it; the next caller on it, as yet another handset and with the
/// right ID and PIN, hears that the phone is locked. The failures named two IDs, so the
/// facility-wide alert is raised, once: audit log and metric.
#[test]
fn rotating_from_users_on_one_line_locks_the_line() {
    if !sipp::present("line lockout test") {
        return;
    }
    let dir = Workdir::new("handset_entry", "line_lockout");
    let ports = sipp::ports();
    let (gw, inmate) = attack_case(&dir, &ports);
    let api = gw.api.clone();
    let mut trunk = Trunk::answer("1").spawn(&dir, &ports);
    // Call 1 as handset-1: three wrong PINs for the inmate's ID (three failures).
    let first = Handset::new("0000", Via::Rtp)
        .id(&inmate.calling_id)
        .attempts(3);
    first
        .spawn(&dir, 0, &ports, gw.sip)
        .expect_ok(Duration::from_secs(60));
    // Call 2 as hs-a: a guess at another ID (the fourth failure locks the line), then
    // the call is refused at its next entry.
    let second = Handset::new("1111", Via::Rtp).user("hs-a").attempts(2);
    second
        .spawn(&dir, 1, &ports, gw.sip)
        .expect_ok(Duration::from_secs(60));
    // Call 3 as hs-b, right ID and PIN: the line is locked, nothing is checked.
    let third = Handset::new(&inmate.pin, Via::Rtp).user("hs-b");
    third
        .spawn(&dir, 0, &ports, gw.sip)
        .expect_ok(Duration::from_secs(60));

    let calls = api.ended_calls(3);
    for c in &calls {
        assert_eq!(c["end_reason"], "pin_failed", "{c}");
        assert!(c["inmate_id"].is_null(), "{c}");
        assert_eq!(c["billed_increments"], 0, "{c}");
    }
    trunk.stop();
    assert_eq!(
        trunk.count_requests("INVITE"),
        0,
        "nothing reached the trunk"
    );
    let m = |name: &str, labels: &str| api.metric_with(name, labels);
    assert_eq!(m("sallyport_pin_attempts_total", "outcome=\"wrong\""), 4);
    assert_eq!(
        m("sallyport_pin_attempts_total", "outcome=\"phone_locked\""),
        2
    );
    assert_eq!(m("sallyport_pin_attempts_total", "outcome=\"valid\""), 0);
    assert_eq!(m("sallyport_pin_lockouts_total", "subject=\"line\""), 1);
    assert_eq!(m("sallyport_pin_lockouts_total", "subject=\"handset\""), 0);
    assert_eq!(api.metric("sallyport_pin_guessing_alerts_total"), 1);
    let audit = api.get("/api/v1/audit?limit=50");
    let entries = audit
        .get("items")
        .cloned()
        .unwrap_or(audit)
        .as_array()
        .cloned()
        .unwrap_or_default();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "pin.guessing_alert")
            .count(),
        1,
        "{actions:?}"
    );
    let lock = entries
        .iter()
        .find(|e| e["action"] == "pin.lockout")
        .expect("the line's lock is audited");
    assert_eq!(lock["target"], "127.0.0.1", "{lock}");
    assert_eq!(lock["detail"]["subject"], "line", "{lock}");
    // Staff see it and clear it; the right ID and PIN then work from that line.
    let locks = api.get(&format!("/api/v1/facilities/{FACILITY}/pin-locks"));
    assert_eq!(locks[0]["subject"], "line", "{locks}");
    let (s, _) = api.request(
        "POST",
        &format!("/api/v1/facilities/{FACILITY}/lines/127.0.0.1/unlock"),
        None,
    );
    assert_eq!(s, 204);
    let again = Handset::new(&inmate.pin, Via::Rtp)
        .user("hs-c")
        .hang_up_after(4_000);
    let mut trunk = Trunk::answer("1").spawn(&dir, &ports);
    again
        .spawn(&dir, 1, &ports, gw.sip)
        .expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(20));
    let last = &api.ended_calls(4)[3];
    assert_eq!(last["end_reason"], "caller_hangup", "{last}");
    assert_eq!(last["inmate_id"], inmate.id.as_str(), "{last}");
}
