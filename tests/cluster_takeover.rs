//! A node that dies mid-call, and a node that drains (issue 13): the real `sallyport
//! serve` processes, sipp on both sides.
//!
//! - Two nodes on one PostgreSQL, heartbeats every second, dead after 3 s: a call on
//!   node-a, node-a killed (`SIGKILL`) while it bills. node-b closes the call's CDR
//!   with reason `system` within the heartbeat timeout, with exactly the increments the
//!   ledger committed (nothing after the kill), audits and counts the takeover (its
//!   `/metrics`), the ledger check is
//!   clean, a terminate through node-b answers as for any ended call (409 `call_ended`,
//!   not a 502 naming the dead node), and the inmate calls again through node-b at once
//!   (no `call_limit`).
//! - One node (SQLite) drained during a call by `sallyport drain`: OPTIONS answers 503
//!   (200 before), a new INVITE gets 503 with `Retry-After`, `/readyz` 503 `draining`, the call in progress goes
//!   on to its own end, and the node exits (status 0, pid file gone) after it.
//! - A session whose 200 is never ACKed ends `system` within 64·T1, and the same INVITE
//!   on a new branch (a merged request) gets 482 and no second session.
//!
//! Without PostgreSQL (`SALLYPORT_TEST_DATABASE_URL`) or sipp the tests print why and
//! pass, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sallyport::db::testing::TestDb;
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use support::api::{book, dec, fund, money, three_second_increments, NUMBER};
use support::gateway::{Gateway, BIN};
use support::sipp::{self, Handset, Ports, Trunk, Via};
use support::Workdir;

const SECRET: &str = "cluster-secret-for-the-tests";
/// $0.05 a minute in 3-second increments.
const COST: &str = "0.0025";
const HEARTBEAT_SECS: u64 = 1;
const DEAD_AFTER_SECS: u64 = 3;

/// Node `id` on the database at `url`, beating every second, dead after 3 s; its log
/// `gateway-<log>.log`.
fn node(dir: &Workdir, ports: &Ports, url: &str, id: &str, log: &str) -> Gateway {
    let log = format!("gateway-{log}");
    Gateway::start_with(dir, ports, &log, |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", url)
            .env("SALLYPORT_NODE_ID", id)
            .env("SALLYPORT_CLUSTER_SECRET", SECRET)
            .env(
                "SALLYPORT_CLUSTER_HEARTBEAT_SECS",
                HEARTBEAT_SECS.to_string(),
            )
            .env(
                "SALLYPORT_CLUSTER_DEAD_AFTER_SECS",
                DEAD_AFTER_SECS.to_string(),
            );
    })
}

fn time(v: &Value, key: &str) -> DateTime<Utc> {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}: {v}"))
        .parse()
        .unwrap()
}

/// One SIP request (no body) to `to` from a socket of its own: the status line of the
/// first final answer.
fn sip(to: SocketAddr, method: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let n = rand_tag();
    let msg = format!(
        "{method} sip:{NUMBER}@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=f{n}\r\n\
         To: <sip:{NUMBER}@{to}>\r\n\
         Call-ID: probe-{n}@{me}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:probe@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (len, _) = s.recv_from(&mut buf).expect("an answer to the SIP request");
        let text = String::from_utf8_lossy(&buf[..len]).to_string();
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if status >= 200 {
            return text;
        }
    }
}

fn rand_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

#[test]
fn a_dead_nodes_call_is_closed_by_a_survivor_and_the_inmate_calls_again() {
    if !sipp::present("dead-node takeover test") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let url = db.postgres_url().expect("a PostgreSQL URL");
    let dir = Workdir::new("cluster_takeover", "killed");
    let (pa, pb) = (sipp::ports(), sipp::ports());
    let a = node(&dir, &pa, &url, "node-a", "a");
    let b = node(&dir, &pb, &url, "node-b", "b");
    let (api_a, api_b) = (a.api.clone(), b.api.clone());
    three_second_increments(&api_a);
    assert!(status_line(&sip(b.sip, "OPTIONS")).starts_with("SIP/2.0 200"));

    // A call through node-a, billing every 3 s.
    let inmate = book(&api_a, "K-1", "2468", NUMBER, false);
    fund(&api_a, &inmate, "1.00");
    let mut trunk = Trunk::answer("1").spawn(&dir, &pa);
    let mut handset = Handset::new(&inmate.pin, Via::Rtp).spawn(&dir, 0, &pa, a.sip);
    let id = api_b.accepted_call(Duration::from_secs(40));
    let deadline = Instant::now() + Duration::from_secs(30);
    while api_b.balance(&inmate.account) > dec("1.00") - dec(COST) * Decimal::from(2) {
        assert!(Instant::now() < deadline, "no second increment");
        std::thread::sleep(Duration::from_millis(100));
    }

    // node-a dies. node-b closes the call within the heartbeat timeout, as committed.
    a.kill();
    let killed_at = Utc::now();
    let killed = Instant::now();
    handset.stop();
    trunk.stop();
    let charged_at_kill = dec("1.00") - api_b.balance(&inmate.account);
    let cdr = loop {
        let cdr = api_b.get(&format!("/api/v1/calls/{id}"));
        if cdr["state"] == "ended" {
            break cdr;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "node-b never closed node-a's call: {cdr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = killed.elapsed();
    let bound = Duration::from_secs(DEAD_AFTER_SECS + 2 * HEARTBEAT_SECS + 2);
    assert!(
        took < bound,
        "closed {took:?} after the kill (bound {bound:?})"
    );
    assert_eq!(cdr["end_reason"], "system", "{cdr}");
    assert_eq!(cdr["node_id"], "node-a", "{cdr}");
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 2, "{cdr}");
    let charged = dec(COST) * Decimal::from(billed);
    assert_eq!(money(&cdr["amount"]), charged, "{cdr}");
    assert_eq!(charged, charged_at_kill, "nothing after the kill: {cdr}");
    assert_eq!(api_b.call_charges(&inmate.account).len() as i64, billed);
    assert!(time(&cdr, "end_at") <= killed_at, "{cdr}");
    assert!(time(&cdr, "closed_at") >= killed_at, "{cdr}");
    api_b.assert_ledger_clean();
    // Its recording (on the recordings directory both nodes share) finished incomplete.
    let recordings: Vec<(String,)> = rt.block_on(async {
        sqlx::query_as("SELECT status FROM recordings WHERE session_id = $1")
            .bind(&id)
            .fetch_all(db.db.pool())
            .await
            .unwrap()
    });
    assert_eq!(recordings, vec![("incomplete".to_string(),)]);
    // Audited once, by node-b, naming node-a.
    let audit = api_b.get("/api/v1/audit?limit=200");
    let entries: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "session.takeover" && e["target"] == id.as_str())
        .collect();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (
            entries[0]["detail"]["node"].as_str(),
            entries[0]["detail"]["closed_by"].as_str()
        ),
        (Some("node-a"), Some("node-b")),
        "{audit}"
    );
    // Counted in node-b's /metrics: one dead node taken over, one session, one recording.
    assert_eq!(api_b.metric("sallyport_takeover_nodes_total"), 1);
    assert_eq!(api_b.metric("sallyport_takeover_sessions_total"), 1);
    assert_eq!(api_b.metric("sallyport_takeover_recordings_total"), 1);

    // A terminate through node-b answers as for any ended call.
    let (s, v) = api_b.request("POST", &format!("/api/v1/calls/{id}/terminate"), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("call_ended")),
        "{v}"
    );

    // The inmate calls again through node-b at once: no `call_limit`.
    let mut trunk = Trunk::answer("1").spawn(&dir, &pb);
    let mut handset = Handset::new(&inmate.pin, Via::Info)
        .hang_up_after(4_000)
        .spawn(&dir, 1, &pb, b.sip);
    handset.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let calls = api_b.ended_calls(2);
    let second = &calls[1];
    assert_ne!(second["id"], id.as_str());
    assert_eq!(
        (second["end_reason"].as_str(), second["node_id"].as_str()),
        (Some("caller_hangup"), Some("node-b")),
        "{second}"
    );
    assert!(
        second["billed_increments"].as_i64().unwrap() >= 1,
        "{second}"
    );
    api_b.assert_ledger_clean();

    // node-a restarts under its id: it finds nothing of its own left to close.
    let a = node(&dir, &pa, &url, "node-a", "a-restarted");
    assert_eq!(
        a.api.get(&format!("/api/v1/calls/{id}"))["closed_at"],
        cdr["closed_at"]
    );
    drop((a, b));
    rt.block_on(db.cleanup());
}

#[test]
fn a_draining_node_finishes_its_call_refuses_new_ones_and_exits() {
    if !sipp::present("drain test") {
        return;
    }
    let dir = Workdir::new("cluster_takeover", "drain");
    let ports = sipp::ports();
    let mut g = Gateway::start_as(&dir, &ports, "gateway");
    let api = g.api.clone();
    three_second_increments(&api);
    assert!(status_line(&sip(g.sip, "OPTIONS")).starts_with("SIP/2.0 200"));
    let inmate = book(&api, "D-1", "1357", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunk = Trunk::answer("1").spawn(&dir, &ports);
    let mut handset = Handset::new(&inmate.pin, Via::Rtp)
        .hang_up_after(8_000)
        .spawn(&dir, 0, &ports, g.sip);
    let id = api.accepted_call(Duration::from_secs(40));

    // `sallyport drain`, as an operator runs it (same config: the node's pid file).
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("drain")
        .env("SALLYPORT_NODE_DATA_DIR", &*dir)
        .env("SALLYPORT_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("draining"),
        "{out:?}"
    );

    // No new calls: OPTIONS and a new INVITE get 503 (a proxy goes elsewhere).
    let options = sip(g.sip, "OPTIONS");
    assert!(
        status_line(&options).starts_with("SIP/2.0 503"),
        "{options}"
    );
    let invite = sip(g.sip, "INVITE");
    assert!(status_line(&invite).starts_with("SIP/2.0 503"), "{invite}");
    assert!(invite.contains("Retry-After: "), "{invite}");
    // An HTTP load balancer sees it too.
    let (s, v) = api.anonymous().request("GET", "/readyz", None);
    assert_eq!((s, v["status"].as_str()), (503, Some("draining")), "{v}");
    // The call in progress goes on to its own end; the API still answers meanwhile.
    assert_eq!(api.get(&format!("/api/v1/calls/{id}"))["state"], "active");
    handset.expect_ok(Duration::from_secs(40));
    trunk.expect_ok(Duration::from_secs(20));
    let ended = Instant::now();
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    api.assert_ledger_clean();

    // Then the node exits by itself, cleanly, its pid file removed.
    let status = loop {
        if let Some(st) = g.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(15),
            "the drained node did not exit after its last call"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(!dir.join("sallyport-node-1.pid").exists());
}

/// A session whose 200 is never ACKed — what a node that answered an INVITE a proxy had
/// already failed over would be left with, had it opened one — ends by itself with a
/// reason (`system`) when the 200's retransmissions give up (64·T1, 32 s), never staying
/// open. The same INVITE again on a new branch (a merged request) gets 482 and no second
/// session.
#[test]
fn a_200_never_acked_ends_its_session_with_a_reason() {
    let dir = Workdir::new("cluster_takeover", "never_acked");
    let ports = sipp::ports();
    let g = Gateway::start_as(&dir, &ports, "gateway");
    let api = g.api.clone();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let to = g.sip;
    let n = rand_tag();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ports.handsets[0].1
    );
    let invite = |branch: &str| {
        format!(
            "INVITE sip:{NUMBER}@{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:handset-1@{me}>;tag=f{n}\r\n\
             To: <sip:{NUMBER}@{to}>\r\n\
             Call-ID: unacked-{n}@{me}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:handset-1@{me}>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let final_answer = |s: &UdpSocket| loop {
        let mut buf = [0u8; 4096];
        let (len, _) = s.recv_from(&mut buf).expect("an answer");
        let text = String::from_utf8_lossy(&buf[..len]).to_string();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    };
    s.send_to(invite(&format!("a{n}")).as_bytes(), to).unwrap();
    let ok = final_answer(&s);
    assert!(status_line(&ok).starts_with("SIP/2.0 200"), "{ok}");
    let opened = Instant::now();
    s.send_to(invite(&format!("b{n}")).as_bytes(), to).unwrap();
    // Skip the 200's retransmissions: the merged request's own answer.
    let merged = loop {
        let a = final_answer(&s);
        if !a.starts_with("SIP/2.0 200") {
            break a;
        }
    };
    assert!(status_line(&merged).starts_with("SIP/2.0 482"), "{merged}");

    // Never ACKed: the session ends by itself.
    let cdr = loop {
        let calls = api.get("/api/v1/calls?facility_id=DEMO&limit=10")["items"].clone();
        let calls = calls.as_array().unwrap().clone();
        assert_eq!(calls.len(), 1, "one session: {calls:?}");
        if calls[0]["state"] == "ended" {
            break calls[0].clone();
        }
        assert!(
            opened.elapsed() < Duration::from_secs(60),
            "still open: {calls:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(cdr["end_reason"], "system", "{cdr}");
    assert!(cdr["accepted_at"].is_null(), "{cdr}");
    assert!(opened.elapsed() >= Duration::from_secs(30), "{cdr}");
    drop(g);
}
