//! Inmate calls over SIP, end to end: the real `sallyport serve` between two sipp
//! processes, a facility handset (UAC, `tests/sipp/handset.xml`) and the carrier trunk with
//! the called party behind it (UAS, `tests/sipp/trunk.xml`).
//!
//! Every test starts its own gateway on a fresh SQLite database (the demo is seeded on
//! first start), on ports it picked for itself: HTTP and SIP on port 0 (read back from the
//! lines `serve` prints), a free UDP port for the trunk sipp, a private RTP range. Through
//! the HTTP API it gives the demo facility a plan with 3-second increments at $0.05/min
//! (an increment costs $0.0025) and books a fresh inmate with its own PIN, approved
//! contact and exact balance, then plays the call and checks the CDR, the balance and the
//! ledger.
//!
//! PIN digits go as RFC 4733 telephone-events (a `pin.pcap` built by `tests/support/sipp.rs`
//! from the Debian sip-tester captures with one SSRC and rising sequence numbers and
//! timestamps, so that repeated keys are distinct presses) or as SIP INFO
//! `application/dtmf-relay`. Both parties speak PCMU (the handset offers PCMU then PCMA,
//! the trunk answers PCMU) unless a test sets `law(Law::Alaw)` on both.
//!
//! Without sipp (or its pcaps) the tests print why and pass, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`. A failing test prints its gateway log and every sipp's
//! errors and message trace, and keeps its directory (under `CARGO_TARGET_TMPDIR`; set
//! `SALLYPORT_TEST_KEEP=1` to keep it when the test passes too).
//! Run one: `cargo test --test sip_calls -- busy`; all at once in less wall time:
//! `cargo test --test sip_calls -- --test-threads=8` (they mostly wait).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sallyport::media::g711::Law;
use serde_json::{json, Value};
use std::fs;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use support::api::{
    book, dec, fund, money, three_second_increments, Api, Inmate, FACILITY, NUMBER,
};
use support::gateway::{self, Gateway};
use support::sipp::{self, bursts, dtmf_pcap, tone_share, Handset, Ports, Sipp, Tone, Trunk, Via};
use support::Workdir;

/// $0.05 per minute in 3-second increments.
const INCREMENT_SECS: f64 = 3.0;
const COST: &str = "0.0025";

/// The called party's voice: 1 kHz bursts 500 ms after pressing the key.
const CALLEE_TONE: Tone = Tone {
    hz: 1000.0,
    lead_ms: 500,
    on_ms: 400,
    off_ms: 200,
    bursts: 3,
};
/// The inmate's voice: 440 Hz bursts from the end of the PIN, for the whole call.
const INMATE_TONE: Tone = Tone {
    hz: 440.0,
    lead_ms: 0,
    on_ms: 300,
    off_ms: 200,
    bursts: 40,
};

// ---- one test -------------------------------------------------------------------------

/// One test's gateway, sipps and files; on a panic its directory prints what is needed
/// to see why (gateway logs, sipp traces).
struct Case {
    ports: Ports,
    gateway: Option<Gateway>,
    runs: usize,
    dir: Workdir,
    /// Config overrides of this test (`SALLYPORT_` + key), at every (re)start.
    config: Vec<(&'static str, &'static str)>,
}

impl Case {
    /// Starts a gateway with the 3-second plan, or `None` when sipp is absent.
    fn start(name: &'static str) -> Option<Case> {
        Case::start_with(name, &[])
    }

    /// [`Case::start`] with config overrides, e.g. `("RTP_MEDIA_TIMEOUT_SECS", "3")`.
    fn start_with(name: &'static str, config: &[(&'static str, &'static str)]) -> Option<Case> {
        if !sipp::present("SIP call test") {
            return None;
        }
        let mut case = Case {
            ports: sipp::ports(),
            gateway: None,
            runs: 0,
            dir: Workdir::new("sip_calls", name),
            config: config.to_vec(),
        };
        case.restart_gateway();
        three_second_increments(&case.api());
        Some(case)
    }

    /// (Re)starts the gateway on the same database.
    fn restart_gateway(&mut self) {
        self.runs += 1;
        let name = format!("gateway-{}", self.runs);
        let config = &self.config;
        let gateway = Gateway::start_with(&self.dir, &self.ports, &name, |cmd| {
            // `(KEY, value)` overrides the harness's config as `SALLYPORT_KEY=value`.
            cmd.envs(config.iter().map(|(k, v)| (format!("SALLYPORT_{k}"), *v)));
        });
        self.gateway = Some(gateway);
    }

    /// SIGKILL: no shutdown, no cleanup.
    fn kill_gateway(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.kill();
        }
    }

    fn api(&self) -> Api {
        self.gateway.as_ref().expect("gateway running").api.clone()
    }

    /// `sallyport verify-recordings` on this test's database and files: exit 0?, output.
    fn verify_recordings(&self) -> (bool, String) {
        let out = gateway::verify_recordings(&self.dir);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn trunk(&self, t: Trunk) -> Sipp {
        t.spawn(&self.dir, &self.ports)
    }

    /// Handset `slot` (0 or 1: its own SIP and media ports) places a call.
    fn handset(&self, slot: usize, h: &Handset) -> Sipp {
        let gw = self.gateway.as_ref().expect("gateway running").sip;
        h.spawn(&self.dir, slot, &self.ports, gw)
    }
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("CDR has no {field}: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("CDR {field}: {e}: {v}"))
}

/// Seconds from acceptance to the end of the call.
fn connected_secs(cdr: &Value) -> f64 {
    (time(cdr, "end_at") - time(cdr, "accepted_at")).num_milliseconds() as f64 / 1000.0
}

/// The CDR's billed increments, checked to be those begun in `secs` of connected time
/// (one either way when the end fell within 0.3 s of an increment boundary).
fn billed_as_begun(cdr: &Value, secs: f64) -> i64 {
    let billed = cdr["billed_increments"].as_i64().unwrap();
    let started = (secs / INCREMENT_SECS).floor() as i64 + 1;
    let near_boundary = (secs % INCREMENT_SECS) < 0.3 || (secs % INCREMENT_SECS) > 2.7;
    assert!(
        billed == started || (near_boundary && (billed - started).abs() <= 1),
        "connected {secs} s: {started} increments started, {billed} billed: {cdr}"
    );
    billed
}

/// The CDR carries the tariff that was applied (issue 9, item 8) — the demo facility's
/// 3-second plan on the demo deck, to the approved contact — and its amount is billed
/// increments × the tariff's cost of one increment.
fn assert_charge_explained(cdr: &Value) {
    let t = &cdr["tariff"];
    assert_eq!(t["rate_plan_id"], "e2e-3s", "{cdr}");
    assert!(t["rate_deck_id"].is_string(), "{cdr}");
    assert!(t["prefix"].is_string(), "{cdr}");
    assert!(t["class"].is_string(), "{cdr}");
    assert_eq!(t["service"], "audio", "{cdr}");
    assert_eq!(money(&t["per_minute"]), dec("0.05"), "{cdr}");
    assert_eq!(t["increment_secs"], 3, "{cdr}");
    assert_eq!(money(&t["cost_per_increment"]), dec(COST), "{cdr}");
    assert!(cdr["contact_id"].is_string(), "{cdr}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert_eq!(
        money(&cdr["amount"]),
        money(&t["cost_per_increment"]) * Decimal::from(billed),
        "{cdr}"
    );
}

/// A refused call: the gateway played a notice and hung up; nothing reached the trunk,
/// nothing was charged.
fn assert_refused(case: &Case, trunk: &mut Sipp, reason: &str, inmate: Option<&Inmate>) {
    let api = case.api();
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], reason, "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(money(&cdr["amount"]), Decimal::ZERO, "{cdr}");
    assert!(cdr["accepted_at"].is_null(), "{cdr}");
    trunk.stop();
    assert_eq!(
        trunk.count_requests("INVITE"),
        0,
        "the trunk must see no INVITE:\n{}",
        trunk.messages()
    );
    if let Some(i) = inmate {
        assert!(api.call_charges(&i.account).is_empty());
    }
    api.assert_ledger_clean();
}

// ---- the calls ------------------------------------------------------------------------

/// The happy path to its end: PIN by RFC 4733, the called party presses 1, the call is
/// billed increment by increment and cut when the balance (exactly three increments) is
/// spent: notice, BYE to both legs, balance exactly zero.
#[test]
fn funds_exhaustion_cuts_after_three_increments() {
    let Some(case) = Case::start("funds_exhaustion") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-100", "4821", NUMBER, false);
    fund(&api, &inmate, "0.0075");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    assert_eq!(cdr["number"], NUMBER, "{cdr}");
    assert_eq!(cdr["billed_increments"], 3, "{cdr}");
    assert_eq!(money(&cdr["amount"]), dec("0.0075"), "{cdr}");
    // Three paid increments (9 s), then the ~2.5 s notice before the BYE: within one
    // increment of 9 s, and never a fourth increment.
    let secs = connected_secs(cdr);
    assert!(
        (8.5..=12.5).contains(&secs),
        "connected for {secs} s: {cdr}"
    );
    assert_eq!(api.balance(&inmate.account), Decimal::ZERO);
    assert_eq!(api.call_charges(&inmate.account).len(), 3);
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk leg got its BYE");
    assert_charge_explained(cdr);
    // The times explain the charge (issue 9, item 9): billed for exactly 3 × 3 s; the
    // parties were cut at the end of the third increment (the refused fourth debit takes
    // a moment); the call ended after the ~2.5 s notice; the record was closed after.
    let accepted = time(cdr, "accepted_at");
    assert_eq!(
        time(cdr, "billed_until") - accepted,
        chrono::Duration::seconds(9),
        "{cdr}"
    );
    let media = (time(cdr, "media_end_at") - accepted).num_milliseconds();
    assert!(media >= 9_000, "media end {media} ms: {cdr}");
    let notice = (time(cdr, "end_at") - time(cdr, "media_end_at")).num_milliseconds();
    assert!(
        (2_000..8_000).contains(&notice),
        "the notice (2.5 s) lies between the media end and the end: {notice} ms: {cdr}"
    );
    assert!(time(cdr, "closed_at") >= time(cdr, "end_at"), "{cdr}");
    // Neither party said anything: what the recording holds is the gateway's own prompts,
    // each on the channel of the party that heard it (the warning to the inmate on the
    // right, the notice to the called party on the left), in the last seconds of the call.
    let (rec, file) = recorded(&case, cdr);
    assert_eq!(rec.status, sallyport::store::RecordingStatus::Complete);
    for (name, channel) in [("left", &file.left), ("right", &file.right)] {
        let tail = &channel[channel.len().saturating_sub(6 * 8000)..];
        let loud = tail
            .iter()
            .filter(|&&b| file.law.decode(b).unsigned_abs() > 1_000)
            .count();
        assert!(
            loud > 4_000,
            "no prompt on the {name} channel in the last 6 s ({loud} loud samples)"
        );
    }
    api.assert_ledger_clean();
}

/// PIN by SIP INFO; the inmate hangs up mid-call: only the increments started are charged.
#[test]
fn pin_by_sip_info_then_caller_hangs_up_mid_call() {
    let Some(case) = Case::start("caller_hangup") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-200", "5930", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Info).hang_up_after(8_000),
    );
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    let secs = connected_secs(cdr);
    let billed = billed_as_begun(cdr, secs);
    assert!(billed >= 1, "{cdr}");
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00") - charged);
    assert_eq!(api.call_charges(&inmate.account).len() as i64, billed);
    api.assert_ledger_clean();
}

/// PIN by RFC 4733 with a repeated key (each press its own event); the called party hangs
/// up.
#[test]
fn pin_by_rfc2833_then_callee_hangs_up() {
    let Some(case) = Case::start("callee_hangup") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-300", "7337", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1").hang_up_after(2_000));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    trunk.expect_ok(Duration::from_secs(40));
    hs.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "callee_hangup", "{cdr}");
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 1, "{cdr}");
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - dec(COST) * Decimal::from(billed)
    );
    api.assert_ledger_clean();
}

/// Three wrong PINs for the inmate's own calling ID: a notice and BYE, reason
/// pin_failed, no trunk INVITE.
#[test]
fn three_wrong_pins() {
    let Some(case) = Case::start("three_wrong_pins") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-400", "6142", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let wrong = Handset::new("9081", Via::Info)
        .id(&inmate.calling_id)
        .attempts(3);
    let mut hs = case.handset(0, &wrong);
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "pin_failed", Some(&inmate));
    let cdr = &api.ended_calls(1)[0];
    assert!(
        cdr["inmate_id"].is_null(),
        "no inmate was identified: {cdr}"
    );
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    assert_eq!(
        api.metric_with("sallyport_pin_attempts_total", "outcome=\"wrong\""),
        3,
        "each attempt (ID, #, PIN, # by INFO) was one checked entry"
    );
}

/// A number not on the inmate's approved list.
#[test]
fn number_not_approved() {
    let Some(case) = Case::start("not_approved") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-500", "3817", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).dial("5551239999"));
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "not_approved", Some(&inmate));
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    // Investigators see what was attempted: the digits as dialed, and their E.164 form.
    let cdr = &api.ended_calls(1)[0];
    let one = api.get(&format!("/api/v1/calls/{}", cdr["id"].as_str().unwrap()));
    assert_eq!(one["dialed"], "5551239999", "{one}");
    assert_eq!(one["number"], "+15551239999", "{one}");
    assert!(one["tariff"].is_null(), "never rated: {one}");
}

/// An approved contact on the facility's block list.
#[test]
fn blocked_number() {
    let Some(case) = Case::start("blocked") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-600", "2749", NUMBER, false);
    fund(&api, &inmate, "1.00");
    api.post(
        &format!("/api/v1/facilities/{FACILITY}/blocks"),
        json!({ "number": NUMBER, "reason": "harassment complaint" }),
    );
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "blocked", Some(&inmate));
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
}

/// A balance below one increment: "insufficient funds", released uncharged, the trunk
/// never sees an INVITE.
#[test]
fn insufficient_funds() {
    let Some(case) = Case::start("insufficient_funds") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-700", "8263", NUMBER, false);
    fund(&api, &inmate, "0.0024");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    hs.expect_ok(Duration::from_secs(40));
    assert_refused(&case, &mut trunk, "insufficient_funds", Some(&inmate));
    assert_eq!(api.balance(&inmate.account), dec("0.0024"));
}

/// The called party presses 2 (by SIP INFO): both legs end, nothing is charged.
#[test]
fn called_party_declines() {
    let Some(case) = Case::start("declined") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-800", "4096", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("2").key_by_info());
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(40));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "declined", "{cdr}");
    assert!(!cdr["answer_at"].is_null(), "the trunk answered: {cdr}");
    assert!(cdr["accepted_at"].is_null(), "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    assert!(api.call_charges(&inmate.account).is_empty());
    api.assert_ledger_clean();
}

/// The trunk answers 486 Busy Here.
#[test]
fn trunk_busy() {
    let Some(case) = Case::start("busy") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-900", "1357", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::busy());
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    trunk.expect_ok(Duration::from_secs(40));
    hs.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "busy", "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    api.assert_ledger_clean();
}

/// The inmate hangs up while the trunk still rings: the gateway CANCELs the trunk INVITE.
#[test]
fn caller_hangs_up_while_ringing_cancels_the_trunk() {
    let Some(case) = Case::start("cancel") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1000", "2468", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::ring_forever());
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).hang_up_after(4_000));
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    assert_eq!(trunk.count_requests("CANCEL"), 1, "{}", trunk.messages());
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    assert!(cdr["answer_at"].is_null(), "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00"));
    api.assert_ledger_clean();
}

/// The called party accepts and puts the call on hold without media (re-INVITE with
/// `a=inactive`): its silence is announced, not a dead line, so a 3-second media timeout
/// does not cut it; the inmate hangs up 9 s after the PIN and the call ends as usual.
#[test]
fn a_called_party_on_hold_is_not_cut_by_the_media_timeout() {
    let Some(case) = Case::start_with("media_hold", &[("RTP_MEDIA_TIMEOUT_SECS", "3")]) else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1700", "6284", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1").hold_after_key());
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Rtp)
            .speaking(INMATE_TONE)
            .hang_up_after(12_000),
    );
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    let secs = connected_secs(cdr);
    assert!(
        secs > 6.0,
        "on hold for {secs} s, past the 3 s timeout: {cdr}"
    );
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk got BYE");
    let billed = billed_as_begun(cdr, secs);
    assert_eq!(money(&cdr["amount"]), dec(COST) * Decimal::from(billed));
    api.assert_ledger_clean();
}

/// The called party accepts and talks for 4 s, then its media stops without a BYE (a
/// trunk gone dead) while the inmate goes on talking. With a 3-second media timeout the
/// gateway ends the call 3 s after the trunk's last packet — not earlier, so RTP that
/// flows keeps a call up, and not later because the other leg still sends: both legs get
/// BYE, the CDR says `media_timeout`, the recording is finished, and exactly the
/// increments begun before the cut are charged, none after.
#[test]
fn a_trunk_that_falls_silent_is_ended_by_the_media_timeout() {
    let Some(case) = Case::start_with("media_timeout", &[("RTP_MEDIA_TIMEOUT_SECS", "3")]) else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1600", "5179", NUMBER, false);
    fund(&api, &inmate, "1.00");
    // The key (~0.3 s), then 4 s of tone: the trunk's RTP ends ~4.3 s after acceptance.
    let mut trunk = case.trunk(Trunk::answer("1").speaking(Tone::steady(1000.0, 4)));
    // The inmate talks for 20 s from the end of the PIN: through the cut.
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Rtp).speaking(INMATE_TONE),
    );
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "media_timeout", "{cdr}");
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk got BYE");
    assert_eq!(hs.count_requests("BYE"), 1, "the handset got BYE");
    let secs = connected_secs(cdr);
    assert!(
        (6.5..=9.5).contains(&secs),
        "cut {secs} s after acceptance, expected ~7.3 (4.3 s of trunk RTP + 3 s): {cdr}"
    );
    // Charged: every increment begun, once, and nothing after the end.
    let billed = billed_as_begun(cdr, secs);
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    assert_eq!(api.call_charges(&inmate.account).len() as i64, billed);
    std::thread::sleep(Duration::from_millis(INCREMENT_SECS as u64 * 1000 + 500));
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - charged,
        "nothing after the end"
    );
    // The recording was closed at the cut: complete, as long as the connected time; the
    // called party's tone stops seconds before the end, the inmate talks to the end.
    let (rec, file) = recorded(&case, cdr);
    assert_eq!(rec.status, sallyport::store::RecordingStatus::Complete);
    let connected_ms = (time(cdr, "end_at") - time(cdr, "accepted_at")).num_milliseconds();
    let duration = rec.duration_ms.unwrap();
    assert!(
        (duration - connected_ms).abs() <= 20,
        "recording {duration} ms, CDR connected {connected_ms} ms"
    );
    let decode = |c: &[u8]| -> Vec<i16> { c.iter().map(|&b| file.law.decode(b)).collect() };
    let callee = bursts(&tone_share(&decode(&file.right), 1000.0));
    let callee_end = callee.last().map_or(0, |(at, len)| at + len) as i64;
    assert!(
        (3_500..=duration - 2_500).contains(&callee_end),
        "the called party's tone ends at {callee_end} ms of {duration}: {callee:?}"
    );
    let inmate_bursts = bursts(&tone_share(&decode(&file.left), INMATE_TONE.hz));
    let inmate_last = inmate_bursts.last().map_or(0, |(at, _)| *at) as i64;
    assert!(
        inmate_last >= duration - 1_000,
        "the inmate talks to the end ({duration} ms): {inmate_bursts:?}"
    );
    let (ok, out) = case.verify_recordings();
    assert!(ok, "verify-recordings: {out}");
    api.assert_ledger_clean();
}

/// An attorney: the call is never recorded. Dialed as a national number; the called
/// party accepts by SIP INFO.
#[test]
fn privileged_contact_is_not_recorded() {
    let Some(case) = Case::start("privileged") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1100", "9753", NUMBER, true);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1").key_by_info().hang_up_after(2_000));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).dial("5551230001"));
    trunk.expect_ok(Duration::from_secs(40));
    hs.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "callee_hangup", "{cdr}");
    assert_eq!(cdr["number"], NUMBER, "normalized to E.164: {cdr}");
    assert_eq!(cdr["privileged"], true, "{cdr}");
    assert_eq!(cdr["recorded"], false, "{cdr}");
    assert!(cdr["recording_id"].is_null(), "{cdr}");
    api.assert_ledger_clean();
}

/// One inmate, two handsets: the second call is refused while the first is up.
#[test]
fn second_concurrent_call_of_one_inmate_is_refused() {
    let Some(case) = Case::start("concurrent") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1200", "8024", NUMBER, false);
    fund(&api, &inmate, "1.00");
    api.post(
        &format!("/api/v1/facilities/{FACILITY}/handsets"),
        json!({ "name": "Second handset", "location": "Housing unit B", "sip_username": "handset-2" }),
    );
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut first = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).hang_up_after(9_000));
    // Wait until the first call holds the inmate (the claim is made at the destination check).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live = api.get("/api/v1/calls/active");
        if live
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["inmate_id"] == inmate.id.as_str()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first call never claimed the inmate: {live}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut second = case.handset(1, &Handset::new(&inmate.pin, Via::Info).user("handset-2"));
    second.expect_ok(Duration::from_secs(30));
    first.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let calls = api.ended_calls(2);
    assert_eq!(calls[0]["end_reason"], "caller_hangup", "{}", calls[0]);
    assert_eq!(calls[1]["end_reason"], "call_limit", "{}", calls[1]);
    assert_eq!(calls[1]["billed_increments"], 0, "{}", calls[1]);
    assert_eq!(trunk.count_requests("INVITE"), 1, "one trunk INVITE only");
    let billed = calls[0]["billed_increments"].as_i64().unwrap();
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - dec(COST) * Decimal::from(billed)
    );
    api.assert_ledger_clean();
}

/// The gateway is SIGKILLed while a call is bridged and billing, and restarted on the
/// same database: the CDR is closed with reason `system`, the increments debited before
/// the kill stand (once each), and the ledger is clean.
#[test]
fn gateway_killed_mid_call_loses_no_money() {
    let Some(mut case) = Case::start("killed_mid_call") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1300", "3141", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Rtp).speaking(INMATE_TONE),
    );
    // Bridged and billing: at least two increments debited.
    let deadline = Instant::now() + Duration::from_secs(40);
    while api.balance(&inmate.account) > dec("1.00") - dec(COST) * Decimal::from(2) {
        assert!(
            Instant::now() < deadline,
            "the call never got to its second increment"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    case.kill_gateway();
    let killed_at = Utc::now();
    hs.stop();
    trunk.stop();
    // Down a while: the restart time must not pass for the end of the call.
    std::thread::sleep(Duration::from_secs(3));
    case.restart_gateway();
    let api = case.api();
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "system", "{cdr}");
    // Issue 9, item 9: the times explain the charge, not the restart. Billed until the
    // end of the last increment; ended (and the parties last known connected) where the
    // call was last seen alive — its last debit, or its recording flushed before the
    // kill — before the kill and not before its last increment began; the restart is
    // only when the record was closed.
    {
        let accepted = time(cdr, "accepted_at");
        let billed = cdr["billed_increments"].as_i64().unwrap();
        let inc = chrono::Duration::seconds(INCREMENT_SECS as i64);
        assert_eq!(
            time(cdr, "billed_until") - accepted,
            inc * billed as i32,
            "{cdr}"
        );
        let end = time(cdr, "end_at");
        assert!(end <= killed_at, "ended {end}, killed {killed_at}: {cdr}");
        assert!(end >= accepted + inc * (billed - 1) as i32, "{cdr}");
        assert_eq!(cdr["media_end_at"], cdr["end_at"], "{cdr}");
        let closed = time(cdr, "closed_at");
        assert!(
            closed >= killed_at + chrono::Duration::seconds(2),
            "closed at the restart {closed}, killed {killed_at}: {cdr}"
        );
    }
    assert_eq!(cdr["inmate_id"], inmate.id.as_str(), "{cdr}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 2, "{cdr}");
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    assert_eq!(api.balance(&inmate.account), dec("1.00") - charged);
    let charges = api.call_charges(&inmate.account);
    assert_eq!(
        charges.len() as i64,
        billed,
        "each increment debited once: {charges:?}"
    );
    // Nothing more is debited after the restart.
    std::thread::sleep(Duration::from_secs(2 * INCREMENT_SECS as u64));
    assert_eq!(api.balance(&inmate.account), dec("1.00") - charged);
    api.assert_ledger_clean();
    // The recording the killed gateway left open was closed at the restart: marked
    // incomplete, its header repaired (playable up to the last flush), hashed and chained.
    let (rec, file) = recorded(&case, cdr);
    assert_eq!(rec.status, sallyport::store::RecordingStatus::Incomplete);
    assert!(rec.chain_seq.is_some(), "chained: {rec:?}");
    // The kill came 3 s or more after acceptance; the file had the inmate's audio up to
    // the last flush (every second, holding back 200 ms for late packets).
    let secs = file.left.len() as f64 / 8000.0;
    assert!(
        secs >= 1.5,
        "only {secs} s survived the kill (two increments of 3 s ran)"
    );
    let left: Vec<i16> = file.left.iter().map(|&b| file.law.decode(b)).collect();
    let spoken = bursts(&tone_share(&left, INMATE_TONE.hz));
    assert!(spoken.len() >= 2, "the inmate's audio survived: {spoken:?}");
}

/// Review, L5: the gateway is SIGKILLed during the exhaustion notice. The cut (reason and
/// media end) is on the session before the notice plays, so the restart closes the call
/// `funds_exhausted` — not `system` — with the media end at the cut, not after the
/// notice began; the two increments debited stand, once each; the restart is only the
/// record's `closed_at`.
#[test]
fn gateway_killed_during_the_exhaustion_notice_keeps_the_cut() {
    let Some(mut case) = Case::start("killed_during_notice") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1400", "2718", NUMBER, false);
    fund(&api, &inmate, "0.0050");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Rtp).speaking(INMATE_TONE),
    );
    let id = api.accepted_call(Duration::from_secs(40));
    // Two increments of 3 s are paid; the third is refused 6 s after acceptance and the
    // ~2.5 s notice begins. The live record says so from the cut on.
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let live = api.get(&format!("/api/v1/calls/{id}"));
        if live["end_reason"] == "funds_exhausted" {
            break live;
        }
        assert!(
            live["state"] == "active" && Instant::now() < deadline,
            "the cut was not on the live record before the call ended: {live}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(live["state"], "active", "cut, the notice playing: {live}");
    std::thread::sleep(Duration::from_millis(500));
    case.kill_gateway();
    let killed_at = Utc::now();
    hs.stop();
    trunk.stop();
    std::thread::sleep(Duration::from_secs(3));
    case.restart_gateway();
    let api = case.api();
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(cdr["state"], "ended", "{cdr}");
    assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
    let closed = time(&cdr, "closed_at");
    assert!(
        closed >= killed_at + chrono::Duration::seconds(2),
        "closed by the restart {closed}, killed {killed_at} (the kill came during the notice): {cdr}"
    );
    assert_eq!(cdr["billed_increments"], 2, "{cdr}");
    assert_eq!(money(&cdr["amount"]), dec("0.0050"), "{cdr}");
    let accepted = time(&cdr, "accepted_at");
    assert_eq!(
        time(&cdr, "billed_until") - accepted,
        chrono::Duration::seconds(6),
        "{cdr}"
    );
    // The media ended at the cut: the end of the second increment, plus the moment the
    // refused debit took — not 1 s or more into the notice, as the crash time would say.
    let media = time(&cdr, "media_end_at");
    let after_cut = (media - accepted).num_milliseconds();
    assert!(
        (6_000..7_000).contains(&after_cut),
        "media end {after_cut} ms after acceptance: {cdr}"
    );
    assert_eq!(cdr["media_end_at"], live["media_end_at"], "{cdr}");
    let end = time(&cdr, "end_at");
    assert!(media <= end && end <= killed_at, "{cdr}");
    assert_charge_explained(&cdr);
    assert_eq!(api.balance(&inmate.account), Decimal::ZERO);
    assert_eq!(api.call_charges(&inmate.account).len(), 2);
    api.assert_ledger_clean();
}

/// The harness itself, without the gateway: the two scenarios against each other (PIN by
/// SIP INFO twice, answer, press 1, BYE); then the handset against a bare UAS written
/// here, which checks that the generated PIN capture arrives from the port the handset's
/// SDP names (the gateway latches to exactly that), as one SSRC with rising sequence
/// numbers and one timestamp per key press, repeated keys included.
#[test]
fn scenarios_play_against_each_other() {
    if !sipp::present("SIP call test") {
        return;
    }
    let dir = Workdir::new("sip_calls", "self");
    let p = sipp::ports();
    let (hs_sip, hs_media) = p.handsets[0];
    let handset_args = |via: &str, plays: Duration| {
        sipp::endpoint_args(
            hs_sip,
            hs_media,
            &[
                "-s",
                NUMBER,
                &format!("127.0.0.1:{}", p.trunk_sip),
                "-inf",
                "calls.csv",
                "-set",
                "pin_via",
                via,
                "-set",
                "attempts",
                "2",
                "-set",
                "pin_ms",
                &(plays.as_millis() + 300).to_string(),
                "-set",
                "then",
                "bye",
                "-set",
                "hold_ms",
                "500",
            ],
        )
    };
    let prepare = |name: &str| {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        dtmf_pcap("1", &d.join("key1.pcap"));
        dtmf_pcap("2", &d.join("key2.pcap"));
        fs::write(d.join("calls.csv"), "SEQUENTIAL\nhandset-1;1223#\n").unwrap();
        dtmf_pcap("1223#", &d.join("pin.pcap"))
    };

    // A: sipp against sipp, PIN by INFO.
    prepare("trunk");
    let mut trunk = Sipp::spawn(
        &dir,
        "trunk",
        "trunk.xml",
        &sipp::endpoint_args(
            p.trunk_sip,
            p.trunk_media,
            &[
                "-set", "mode", "answer", "-set", "ring_ms", "100", "-set", "key", "1", "-set",
                "key_ms", "200", "-set", "then", "wait", "-set", "hold_ms", "0",
            ],
        ),
    );
    std::thread::sleep(Duration::from_millis(300));
    let plays = prepare("handset-info");
    let mut hs = Sipp::spawn(
        &dir,
        "handset-info",
        "handset.xml",
        &handset_args("info", plays),
    );
    hs.expect_ok(Duration::from_secs(30));
    trunk.expect_ok(Duration::from_secs(10));
    assert!(
        hs.count_requests("INFO") >= 10,
        "two PINs of five keys:\n{}",
        hs.messages()
    );
    assert_eq!(trunk.count_requests("BYE"), 1);

    // B: PIN by RTP to a bare UAS whose SDP names `media`.
    let uas = UdpSocket::bind(("127.0.0.1", p.trunk_sip)).unwrap();
    let media = UdpSocket::bind(("127.0.0.1", p.rtp.0)).unwrap();
    uas.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let plays = prepare("handset-rtp");
    let mut hs = Sipp::spawn(
        &dir,
        "handset-rtp",
        "handset.xml",
        &handset_args("rtp", plays),
    );
    let mut buf = [0u8; 4096];
    let (n, from) = uas.recv_from(&mut buf).expect("an INVITE");
    let invite = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(invite.starts_with("INVITE "), "{invite}");
    let sdp_port: u16 = invite
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio in the INVITE");
    assert_eq!(sdp_port, hs_media);
    let answer = |status: &str, req: &str, body: &str| {
        let h = |name: &str| {
            req.lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
                .unwrap_or("")
                .to_string()
        };
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "SIP/2.0 {status}\r\n{}\r\n{}\r\n{};tag=bare-uas\r\n{}\r\n{}\r\nContact: <sip:uas@127.0.0.1:{}>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            h("Via"), h("From"), h("To").trim_end_matches(";tag=bare-uas"), h("Call-ID"), h("CSeq"),
            p.trunk_sip, body.len()
        )
    };
    let sdp = format!(
        "v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        p.rtp.0
    );
    uas.send_to(answer("200 OK", &invite, &sdp).as_bytes(), from)
        .unwrap();
    // ACK (and perhaps a retransmitted INVITE) first, then RTP, then the BYE.
    let mut events = Vec::new();
    while let Ok((n, src)) = media.recv_from(&mut buf) {
        assert_eq!(src.port(), hs_media, "RTP must come from the SDP's port");
        let b = &buf[..n];
        events.push((
            b[1] & 0x7f,
            u16::from_be_bytes([b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            b[12],
        ));
    }
    loop {
        let (n, from) = uas.recv_from(&mut buf).expect("a BYE");
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        if req.starts_with("BYE ") {
            uas.send_to(answer("200 OK", &req, "").as_bytes(), from)
                .unwrap();
            break;
        }
    }
    hs.expect_ok(Duration::from_secs(10));
    assert_eq!(events.len(), 50, "5 keys × 10 packets: {events:?}");
    assert!(
        events.iter().all(|e| e.0 == 101 && e.3 == events[0].3),
        "{events:?}"
    );
    assert!(
        events.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
        "{events:?}"
    );
    let mut presses: Vec<(u32, u8)> = events.iter().map(|e| (e.2, e.4)).collect();
    presses.dedup();
    assert_eq!(
        presses.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![1, 2, 2, 3, 11]
    );
}

/// An investigator (here the administrator) ends a live, billed call through the API: both
/// legs get BYE, the CDR says `terminated`, the increments started stand and no more are
/// charged; the call can be terminated once, and a caller without the right role cannot.
#[test]
fn terminate_through_the_api_ends_a_live_call() {
    let Some(case) = Case::start("terminate") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-950", "2468", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    let id = api.accepted_call(Duration::from_secs(30));
    assert!(
        !api.get(&format!("/api/v1/calls/{id}"))["number"].is_null(),
        "a live call shows its number"
    );
    // Let both scenarios reach their wait for BYE (and a second increment start).
    std::thread::sleep(Duration::from_millis(4_000));
    let path = format!("/api/v1/calls/{id}/terminate");
    let (status, cdr) = api.request("POST", &path, None);
    assert_eq!(status, 200, "{cdr}");
    assert_eq!(cdr["state"], "ended", "{cdr}");
    assert_eq!(cdr["end_reason"], "terminated", "{cdr}");
    trunk.expect_ok(Duration::from_secs(20));
    hs.expect_ok(Duration::from_secs(20));
    let (again, body) = api.request("POST", &path, None);
    assert_eq!(again, 409, "a second terminate: {body}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 1, "{cdr}");
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    std::thread::sleep(Duration::from_millis(INCREMENT_SECS as u64 * 1000 + 500));
    assert_eq!(
        api.balance(&inmate.account),
        dec("1.00") - charged,
        "nothing after the end"
    );
    assert_eq!(api.call_charges(&inmate.account).len() as i64, billed);
    api.assert_ledger_clean();
}

// ---- issue 9: the money and the record ----------------------------------------------------

/// Waits until the account's balance is `want` (a debit landed).
fn wait_for_balance(api: &Api, account: &str, want: Decimal, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while api.balance(account) != want {
        assert!(
            Instant::now() < deadline,
            "{what}: balance {}",
            api.balance(account)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 9, item 7, the attack repeated: two increments affordable (6 s each at $0.05/min,
/// $0.005 each), a deposit through the API during the second. The call is not cut at the
/// end of the second: it goes on into the third and fourth, which the deposit paid, and
/// is cut when the fifth is refused. The CDR, the ledger and the statement show exactly
/// the four increments billed; nothing of the deposit is left unused.
#[test]
fn a_deposit_during_the_last_paid_increment_keeps_the_call_going() {
    // The parties are silent once keyed: no media timeout in a call this long.
    let Some(case) = Case::start_with("deposit_mid_call", &[("RTP_MEDIA_TIMEOUT_SECS", "0")])
    else {
        return;
    };
    let api = case.api();
    let csv = "class,service,per_minute,increment_secs\nlocal,audio,0.05,6\n\
               domestic,audio,0.05,6\ninternational,audio,0.05,6\n";
    api.upload("/api/v1/rate-plans?id=e2e-6s&max_call_secs=3600", csv);
    api.ok(
        "PATCH",
        &format!("/api/v1/facilities/{FACILITY}"),
        Some(json!({ "rate_plan_id": "e2e-6s" })),
    );
    let inmate = book(&api, "S-2000", "5821", NUMBER, false);
    fund(&api, &inmate, "0.01");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    let id = api.accepted_call(Duration::from_secs(40));
    // The second increment is debited 6 s after acceptance: the balance is then 0.
    wait_for_balance(&api, &inmate.account, Decimal::ZERO, "the second increment");
    let (s, v) = api.post_keyed(
        &format!("/api/v1/accounts/{}/deposits", inmate.account),
        "family-top-up",
        json!({ "amount": "0.01", "method": "online", "depositor": "family" }),
    );
    assert_eq!(s, 201, "deposit: {v}");
    let live = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(live["state"], "active", "the deposit came in time: {live}");
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
    assert_eq!(cdr["billed_increments"], 4, "{cdr}");
    assert_eq!(money(&cdr["amount"]), dec("0.02"), "{cdr}");
    assert_eq!(
        time(&cdr, "billed_until") - time(&cdr, "accepted_at"),
        chrono::Duration::seconds(24),
        "{cdr}"
    );
    let increments: Vec<i64> = cdr["charges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["increment"].as_i64().unwrap())
        .collect();
    assert_eq!(increments, vec![1, 2, 3, 4], "{cdr}");
    assert_eq!(
        api.balance(&inmate.account),
        Decimal::ZERO,
        "the deposit was used"
    );
    let charges = api.call_charges(&inmate.account);
    assert_eq!(charges.len(), 4, "statement: {charges:?}");
    for c in &charges {
        assert_eq!(money(&c["amount"]), -dec("0.005"), "{c}");
    }
    api.assert_ledger_clean();
}

/// Issue 9, item 10 and what investigators see: a live call shows the increments and
/// amount debited so far; releasing the inmate through the API ends it at once with
/// reason `released` (both legs get BYE) before the account closes, so nothing is
/// attempted on the closed account; the release refunds what is left.
#[test]
fn releasing_an_inmate_ends_their_live_call_at_once() {
    let Some(case) = Case::start("release_mid_call") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-2100", "6931", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    let id = api.accepted_call(Duration::from_secs(40));
    let two = dec("1.00") - dec(COST) * Decimal::from(2);
    wait_for_balance(&api, &inmate.account, two, "two increments");
    let live = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(live["state"], "active", "{live}");
    let n = live["billed_increments"].as_i64().unwrap();
    assert!(n >= 2, "a live call shows what was debited so far: {live}");
    assert_eq!(
        money(&live["amount"]),
        dec(COST) * Decimal::from(n),
        "{live}"
    );
    assert_eq!(
        time(&live, "billed_until") - time(&live, "accepted_at"),
        chrono::Duration::seconds(3 * n),
        "{live}"
    );
    let listed = api.get("/api/v1/calls/active");
    let row = listed
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id.as_str()).cloned())
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row["billed_increments"].as_i64().unwrap() >= 2, "{row}");

    // A release the ledger refuses (the key already named the funding deposit) changes
    // nothing: the call goes on, the inmate stays booked.
    let (s, _, v) = api.send(
        "POST",
        &format!("/api/v1/inmates/{}/release", inmate.id),
        None,
        &[("Idempotency-Key", &format!("fund-{}", inmate.account))],
    );
    assert_eq!(s, 409, "{v}");
    let still = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(
        still["state"], "active",
        "a refused release ends no call: {still}"
    );
    let booked = api.get(&format!("/api/v1/inmates/{}", inmate.id));
    assert_eq!(booked["status"], "active", "{booked}");

    let (s, _, v) = api.send(
        "POST",
        &format!("/api/v1/inmates/{}/release", inmate.id),
        None,
        &[("Idempotency-Key", "release-s2100")],
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ended_calls"], json!([id]), "{v}");
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(
        cdr["state"], "ended",
        "ended before the release answered: {cdr}"
    );
    assert_eq!(cdr["end_reason"], "released", "{cdr}");
    trunk.expect_ok(Duration::from_secs(20));
    hs.expect_ok(Duration::from_secs(20));
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk got BYE");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    assert_eq!(
        money(&v["release"]["refunded"]),
        dec("1.00") - charged,
        "{v}"
    );
    assert_eq!(api.call_charges(&inmate.account).len() as i64, billed);
    // Nothing after: the call is over and the account closed.
    std::thread::sleep(Duration::from_millis(INCREMENT_SECS as u64 * 1000 + 500));
    assert_eq!(api.call_charges(&inmate.account).len() as i64, billed);
    api.assert_ledger_clean();
}

/// The release reaches the database but not the call (here `sallyport release` from
/// another process, as when another node carries the call): the call ends at its next
/// increment, which the closed account refuses, with the same reason `released` — not
/// `system` — and nothing is charged after the release.
#[test]
fn a_release_the_call_cannot_hear_ends_it_released_at_its_next_increment() {
    let Some(case) = Case::start("release_elsewhere") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-2300", "8042", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Info));
    let id = api.accepted_call(Duration::from_secs(40));
    let one = dec("1.00") - dec(COST);
    wait_for_balance(&api, &inmate.account, one, "the first increment");
    let dir = case.dir.display();
    let out = std::process::Command::new(gateway::BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["release", "--facility", FACILITY, "--booking", "S-2300"])
        .args(["--key", "cli-release"])
        .env(
            "SALLYPORT_DATABASE_URL",
            format!("sqlite://{dir}/db.sqlite"),
        )
        .env("SALLYPORT_NODE_DATA_DIR", dir.to_string())
        .env("SALLYPORT_LOG", "warn")
        .output()
        .expect("run sallyport release");
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains(&id), "the live call is named: {printed}");
    let released: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let refunded = money(&released["release"]["refunded"]);
    trunk.expect_ok(Duration::from_secs(20));
    hs.expect_ok(Duration::from_secs(20));
    let cdr = api.get(&format!("/api/v1/calls/{id}"));
    assert_eq!(cdr["end_reason"], "released", "{cdr}");
    let charged = money(&cdr["amount"]);
    assert_eq!(
        refunded + charged,
        dec("1.00"),
        "nothing charged after the release: {cdr}"
    );
    assert_eq!(
        api.call_charges(&inmate.account).len() as i64,
        cdr["billed_increments"].as_i64().unwrap()
    );
    api.assert_ledger_clean();
}

/// Issue 9, item 10: a plan that costs nothing records the increments the call began
/// (billed_increments > 0, amount 0.00), and no money moves: no ledger entries.
#[test]
fn a_free_call_records_its_increments_at_zero() {
    let Some(case) = Case::start("free_plan") else {
        return;
    };
    let api = case.api();
    let csv = "class,service,per_minute,increment_secs\nlocal,audio,0,3\n\
               domestic,audio,0,3\ninternational,audio,0,3\n";
    api.upload("/api/v1/rate-plans?id=e2e-free&max_call_secs=3600", csv);
    api.ok(
        "PATCH",
        &format!("/api/v1/facilities/{FACILITY}"),
        Some(json!({ "rate_plan_id": "e2e-free" })),
    );
    let inmate = book(&api, "S-2200", "7042", NUMBER, false);
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Info).hang_up_after(9_000),
    );
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    let billed = billed_as_begun(cdr, connected_secs(cdr));
    assert!(billed >= 1, "{cdr}");
    assert_eq!(money(&cdr["amount"]), Decimal::ZERO, "{cdr}");
    assert_eq!(
        money(&cdr["tariff"]["cost_per_increment"]),
        Decimal::ZERO,
        "{cdr}"
    );
    assert!(api.call_charges(&inmate.account).is_empty());
    assert_eq!(api.balance(&inmate.account), Decimal::ZERO);
    api.assert_ledger_clean();
}

// ---- recordings -----------------------------------------------------------------------

/// The recording row of `id`, read from the test's SQLite database.
fn recording_row(case: &Case, id: &str) -> sallyport::store::Recording {
    let url = format!("sqlite://{}/db.sqlite", case.dir.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = sallyport::db::Db::connect(&url, 1).await.unwrap();
        let store = sallyport::store::Store::new(
            db,
            std::sync::Arc::new(sallyport::clock::SystemClock),
            "unused-pepper-for-reading",
        );
        store.recording(id).await.unwrap()
    })
}

/// The recording of an ended call: its row (checked against the file: hash, size) and
/// its samples.
fn recorded(
    case: &Case,
    cdr: &Value,
) -> (
    sallyport::store::Recording,
    sallyport::recording::wav::Decoded,
) {
    assert_eq!(cdr["recorded"], true, "{cdr}");
    let id = cdr["recording_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording id: {cdr}"));
    let rec = recording_row(case, id);
    let path = case.dir.join("recordings").join(&rec.path);
    assert_eq!(
        Some(sallyport::recording::hash_file(&path).unwrap()),
        rec.sha256,
        "the file hashes to its row"
    );
    assert_eq!(Some(fs::metadata(&path).unwrap().len() as i64), rec.bytes);
    let file = sallyport::recording::wav::read(&path).unwrap();
    assert_eq!(file.left.len(), file.right.len());
    (rec, file)
}

/// A recorded call: the inmate speaks 440 Hz bursts after the PIN, the called party 1 kHz
/// bursts 500 ms after pressing 1. The file is stereo G.711 with the inmate on the left
/// and the called party on the right, each side's bursts where and as long as they were
/// sent, nothing of one side on the other's channel; its length is the CDR's connected
/// time within a packet, and its SHA-256 is the row's.
#[test]
fn a_recorded_call_keeps_each_party_on_its_channel_at_the_right_time() {
    recorded_call_in(Law::Ulaw);
}

/// The same with both parties speaking PCMA: recorded as PCMA, as sent.
#[test]
fn a_pcma_call_is_recorded_as_pcma_with_each_party_on_its_channel() {
    recorded_call_in(Law::Alaw);
}

fn recorded_call_in(law: Law) {
    let name = match law {
        Law::Ulaw => "recording",
        Law::Alaw => "recording-pcma",
    };
    let Some(case) = Case::start(name) else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-1500", "4682", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = case.trunk(Trunk::answer("1").speaking(CALLEE_TONE).law(law));
    let mut hs = case.handset(
        0,
        &Handset::new(&inmate.pin, Via::Rtp)
            .speaking(INMATE_TONE)
            .law(law)
            .hang_up_after(9_000),
    );
    hs.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    let (rec, file) = recorded(&case, cdr);
    assert_eq!(rec.status, sallyport::store::RecordingStatus::Complete);
    let format = format!("wav-{}", sipp::codec_name(law).to_lowercase());
    assert_eq!(rec.format, format);
    assert_eq!(
        file.law, law,
        "the file is in the parties' codec, not transcoded"
    );
    assert!(
        rec.path
            .ends_with(&format!("{}.wav", cdr["id"].as_str().unwrap())),
        "{}",
        rec.path
    );
    let connected_ms = (time(cdr, "end_at") - time(cdr, "accepted_at")).num_milliseconds();
    let duration = rec.duration_ms.unwrap();
    assert!(
        (duration - connected_ms).abs() <= 20,
        "recording {duration} ms, CDR connected {connected_ms} ms"
    );
    assert_eq!(rec.dropped_packets, 0);

    let decode = |c: &[u8]| -> Vec<i16> { c.iter().map(|&b| file.law.decode(b)).collect() };
    let (left, right) = (decode(&file.left), decode(&file.right));
    assert_eq!(
        left.len() as i64 / 8,
        duration,
        "duration_ms is the file's length"
    );
    assert_eq!(left.len(), right.len());

    // The called party: three 400 ms bursts 600 ms apart, the first 500 ms after acceptance
    // (the key press that accepted is the start of the recording).
    let callee = bursts(&tone_share(&right, CALLEE_TONE.hz));
    assert_eq!(callee.len(), 3, "callee bursts on the right: {callee:?}");
    for (i, (at, len)) in callee.iter().enumerate() {
        let expected = CALLEE_TONE.lead_ms + i as u64 * 600;
        assert!(
            at.abs_diff(expected) <= 30,
            "burst {i} at {at} ms, expected {expected}: {callee:?}"
        );
        assert!(
            len.abs_diff(CALLEE_TONE.on_ms) <= 20,
            "burst {i} lasts {len} ms: {callee:?}"
        );
    }
    // The inmate: 300 ms bursts every 500 ms for the whole call, on the left only.
    let inmate_bursts = bursts(&tone_share(&left, INMATE_TONE.hz));
    // The first and last may be cut by acceptance and hang-up.
    let whole = inmate_bursts
        .get(1..inmate_bursts.len().saturating_sub(1))
        .unwrap_or(&[]);
    assert!(
        whole.len() >= 4,
        "inmate bursts on the left: {inmate_bursts:?}"
    );
    for pair in whole.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap.abs_diff(500) <= 20,
            "inmate bursts {pair:?} are {gap} ms apart"
        );
        assert!(
            pair[0].1.abs_diff(INMATE_TONE.on_ms) <= 20,
            "inmate burst {pair:?}"
        );
    }
    // Nothing of one party on the other's channel.
    assert!(
        bursts(&tone_share(&left, CALLEE_TONE.hz)).is_empty(),
        "callee tone on the left"
    );
    assert!(
        bursts(&tone_share(&right, INMATE_TONE.hz)).is_empty(),
        "inmate tone on the right"
    );

    // The integrity checks see it: the API's per-recording check, then the CLI's whole
    // chain, clean; one byte changed in the file and both name it.
    let check = api.get(&format!("/api/v1/recordings/{}/verify", rec.id));
    assert_eq!(check["ok"], true, "{check}");
    let (ok, out) = case.verify_recordings();
    assert!(ok, "verify-recordings on the fresh recording: {out}");
    let path = case.dir.join("recordings").join(&rec.path);
    let mut bytes = fs::read(&path).unwrap();
    bytes[1000] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let (ok, out) = case.verify_recordings();
    assert!(
        !ok && out.contains(&rec.id) && out.contains("changed"),
        "{out}"
    );
    let check = api.get(&format!("/api/v1/recordings/{}/verify", rec.id));
    assert_eq!(check["ok"], false, "{check}");
    api.assert_ledger_clean();
}

/// Issue 10: the call task never waits on the database. Another PostgreSQL connection
/// holds the paying account's row, so the debit of the first increment hangs on its lock:
///
/// 1. the inmate hangs up meanwhile: the called party gets its BYE at once, while the
///    lock is still held (a task that awaited the debit would hold the BYE behind it);
/// 2. nobody hangs up: the call is cut `debit_timeout` within the debit timeout (5 s),
///    both legs get BYE while the lock is still held, the debit gives up a moment later
///    (the ledger's lock wait, 6 s) and moves nothing, and the CDR says so.
#[test]
fn a_stalled_debit_cuts_the_call_while_its_signalling_is_served() {
    if !sipp::present("stalled debit test") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A failed assertion drops the held transaction while unwinding: inside the runtime,
    // so the drop does not panic again (and abort every test of this binary).
    let _in_runtime = rt.enter();
    let Some(db) = rt.block_on(sallyport::db::testing::TestDb::postgres()) else {
        return;
    };
    let url: &'static str = Box::leak(db.postgres_url().expect("URL").into_boxed_str());
    let Some(mut case) = Case::start_with("stalled_debit", &[("DATABASE_URL", url)]) else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-STALL", "5182", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let hold = |what: &str| {
        let mut tx = rt.block_on(db.db.pool().begin()).unwrap();
        rt.block_on(
            sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(&inmate.account)
                .execute(&mut *tx),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        tx
    };

    // 1. The inmate hangs up 4 s after the PIN (about 2.5 s after acceptance).
    let lock = hold("first lock");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp).hang_up_after(4000));
    let accepted = Instant::now();
    api.accepted_call(Duration::from_secs(40));
    hs.expect_ok(Duration::from_secs(20));
    trunk.expect_ok(Duration::from_secs(10));
    let waited = accepted.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "the trunk's BYE waited {waited:?} behind the stalled debit"
    );
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk leg got its BYE");
    rt.block_on(lock.rollback()).unwrap();
    let first = api.ended_calls(1).remove(0);
    assert_eq!(first["end_reason"], "caller_hangup", "{first}");
    // The debit went on once the lock was gone: charged if it got the row in time.
    assert!(first["billed_increments"].as_i64() <= Some(1), "{first}");
    assert_charge_explained(&first);

    // 2. Nobody hangs up: the debit timeout cuts the call.
    let before = api.balance(&inmate.account);
    let lock = hold("second lock");
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    let id = api.accepted_call(Duration::from_secs(40));
    let seen = Instant::now();
    hs.expect_ok(Duration::from_secs(15));
    trunk.expect_ok(Duration::from_secs(5));
    let cut = seen.elapsed();
    assert!(
        cut < Duration::from_secs(8),
        "cut {cut:?} after acceptance was seen (debit timeout 5 s)"
    );
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk leg got its BYE");
    // Hold the row past the ledger's lock wait: the debit gives up and moves nothing.
    std::thread::sleep(Duration::from_secs(3));
    rt.block_on(lock.rollback()).unwrap();
    let cdr = api.ended_calls(2).remove(1);
    assert_eq!(cdr["id"], id.as_str(), "{cdr}");
    assert_eq!(cdr["end_reason"], "debit_timeout", "{cdr}");
    assert_eq!(cdr["billed_increments"], 0, "{cdr}");
    assert_eq!(money(&cdr["amount"]), Decimal::ZERO, "{cdr}");
    let media = (time(&cdr, "media_end_at") - time(&cdr, "accepted_at")).num_milliseconds();
    assert!(
        (4_500..7_000).contains(&media),
        "cut {media} ms after acceptance (debit timeout 5 s): {cdr}"
    );
    assert_eq!(api.balance(&inmate.account), before);
    api.assert_ledger_clean();
    case.kill_gateway();
    rt.block_on(db.cleanup());
}

/// Family prepaid calling (issue 12): the family whose verified number the inmate calls
/// funded a prepaid account at the facility; with the facility's default order
/// (`family_first`) that account pays for the whole call and the inmate's is not touched.
/// The CDR names the payer, the family's statement shows each increment with its call,
/// and the inmate's statement shows none. With `inmate_first`, the next call is the
/// inmate's to pay.
#[test]
fn a_call_to_a_familys_number_is_charged_to_its_prepaid_account() {
    let Some(case) = Case::start("family_prepaid") else {
        return;
    };
    let api = case.api();
    let inmate = book(&api, "S-3000", "6821", NUMBER, false);
    fund(&api, &inmate, "0.0025");
    let contacts = api.get(&format!("/api/v1/inmates/{}/contacts", inmate.id));
    let contact = contacts[0]["id"].as_str().expect("contact id").to_string();
    // The family member behind the number (bound to the contact: a verified number).
    let token = api.post(
        "/api/v1/tokens",
        json!({ "username": "family-prepaid", "role": "family", "facilities": [FACILITY],
                "contacts": [contact] }),
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    let family = api.as_token(&token);
    let opened = family.post("/api/v1/family/prepaid", json!({ "facility_id": FACILITY }));
    let again = family.post("/api/v1/family/prepaid", json!({ "facility_id": FACILITY }));
    assert_eq!(
        opened["id"], again["id"],
        "one prepaid account per facility"
    );
    assert_eq!(opened["kind"], "family", "{opened}");
    let prepaid = opened["id"].as_str().expect("account id").to_string();
    let (s, v) = family.post_keyed(
        "/api/v1/family/deposits",
        "family-prepaid-1",
        json!({ "account_id": prepaid, "amount": "0.01", "depositor": "family",
            "card_number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123" }),
    );
    assert_eq!(s, 201, "deposit: {v}");
    assert_eq!(family.balance(&prepaid), dec("0.01"));

    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
    assert_eq!(cdr["payer"], "family", "{cdr}");
    assert_eq!(cdr["account_id"], prepaid.as_str(), "{cdr}");
    assert_eq!(
        cdr["billed_increments"], 4,
        "$0.01 pays 4 increments: {cdr}"
    );
    assert_eq!(money(&cdr["amount"]), dec("0.01"), "{cdr}");
    assert_eq!(family.balance(&prepaid), Decimal::ZERO);
    assert_eq!(
        api.balance(&inmate.account),
        dec("0.0025"),
        "the inmate's account was not touched"
    );
    assert!(api.call_charges(&inmate.account).is_empty());
    // The inmate's statement shows the call beside its own lines, as the family's paid.
    let own = api.get(&format!("/api/v1/accounts/{}/statement", inmate.account));
    let others = own["paid_by_others"].as_array().expect("paid_by_others");
    assert_eq!(others.len(), 1, "{own}");
    assert_eq!(others[0]["session_id"], cdr["id"], "{own}");
    assert_eq!(others[0]["payer"], "family", "{own}");
    assert_eq!(others[0]["number"], NUMBER, "{own}");
    assert_eq!(money(&others[0]["amount"]), dec("0.01"), "{own}");
    // The family's statement: the deposit, then the four increments, each naming the call.
    let st = family.get(&format!("/api/v1/family/prepaid/{prepaid}/statement"));
    let lines = st["lines"].as_array().expect("lines");
    let charges: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "call_charge")
        .collect();
    assert_eq!(charges.len(), 4, "{st}");
    for (n, c) in charges.iter().enumerate() {
        assert_eq!(c["session_id"], cdr["id"], "{c}");
        assert_eq!(c["increment"], n as i64 + 1, "{c}");
        assert_eq!(money(&c["amount"]), -dec("0.0025"), "{c}");
    }
    let id = cdr["id"].as_str().expect("call id");
    assert_eq!(st["sessions"][id]["number"], NUMBER, "{st}");
    assert_eq!(st["sessions"][id]["inmate_name"], "Test S-3000", "{st}");
    assert_eq!(money(&st["closing_balance"]), Decimal::ZERO, "{st}");
    let (s, _, csv) = family.send(
        "GET",
        &format!("/api/v1/family/prepaid/{prepaid}/statement?format=csv"),
        None,
        &[],
    );
    assert_eq!(s, 200);
    assert_eq!(csv.as_str().expect("csv").lines().count(), 6, "{csv}");
    // Another family's token reads nothing of it.
    let stranger = api.post(
        "/api/v1/tokens",
        json!({ "username": "family-stranger", "role": "family", "facilities": [FACILITY] }),
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    let (s, v) = api.as_token(&stranger).request(
        "GET",
        &format!("/api/v1/family/prepaid/{prepaid}/statement"),
        None,
    );
    assert_eq!(s, 404, "{v}");

    // The facility asks the inmate's account first: the next call is the inmate's.
    let (s, v) = family.post_keyed(
        "/api/v1/family/deposits",
        "family-prepaid-2",
        json!({ "account_id": prepaid, "amount": "1.00", "depositor": "family",
            "card_number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123" }),
    );
    assert_eq!(s, 201, "deposit: {v}");
    api.ok(
        "PATCH",
        &format!("/api/v1/facilities/{FACILITY}"),
        Some(json!({ "payer_order": "inmate_first" })),
    );
    let mut trunk = case.trunk(Trunk::answer("1"));
    let mut hs = case.handset(0, &Handset::new(&inmate.pin, Via::Rtp));
    hs.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));
    let cdr = &api.ended_calls(2)[1];
    assert_eq!(cdr["payer"], "inmate", "{cdr}");
    assert_eq!(cdr["account_id"], inmate.account.as_str(), "{cdr}");
    assert_eq!(cdr["billed_increments"], 1, "{cdr}");
    assert_eq!(api.balance(&inmate.account), Decimal::ZERO);
    assert_eq!(
        family.balance(&prepaid),
        dec("1.00"),
        "the family paid nothing"
    );
    api.assert_ledger_clean();
}
