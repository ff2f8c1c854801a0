//! Kamailio in front of two nodes: the shipped `config/kamailio.cfg`, its dispatcher
//! probing the nodes with SIP OPTIONS and record-routing the calls, handsets calling the
//! proxy's one address.
//!
//! Two `sallyport serve` on one PostgreSQL behind Kamailio: a call through the proxy lands
//! on a node; that node is drained during the call. The dispatcher stops sending it calls
//! (its OPTIONS answer 503; an INVITE it still got would be refused 503 and failed over):
//! the next two calls through the proxy land on the other node, though round robin would
//! have sent one back. The first call goes on to its end, the drained node exits, and a
//! fourth call through the proxy lands on the node that is left. Every call ends as its
//! handset ended it, and the ledger is clean.
//!
//! Three nodes behind Kamailio: three calls through the proxy land on the three nodes;
//! one node is killed mid-call; a survivor closes its call within the heartbeat timeout,
//! the other two go on, and the inmate calls again through the proxy at once.
//!
//! Behind the proxy: a call cut by the node for funds is torn down through Kamailio (the
//! node's 200 carries the proxy's Record-Route, its BYE goes along the route set and
//! reaches the handset from the proxy), and a handset's BYE through the proxy ends its
//! call; a handset authenticates by digest through the proxy in front of two nodes; a node whose link to PostgreSQL is cut answers
//! OPTIONS 503 within seconds, the calls go to the other node, and once the link is back
//! both nodes take calls again. An INVITE the proxy failed over from a paused node is one
//! call; a node reached over TCP through a host-named Record-Route sends its BYE there.
//!
//! Without PostgreSQL (`SALLYPORT_TEST_DATABASE_URL`), sipp or Kamailio the test prints
//! why and passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use sallyport::db::testing::{skip_or_fail, TestDb};
use serde_json::Value;
use std::fs;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::api::{book, fund, three_second_increments, Api, NUMBER};
use support::gateway::Gateway;
use support::sipp::{self, Handset, Ports, Trunk, Via};
use support::Workdir;

const SECRET: &str = "cluster-secret-for-the-tests";

/// Kamailio with `config/kamailio.cfg` on `addr`, its dispatcher set the `nodes`; killed
/// when dropped.
struct Kamailio(Child);

impl Kamailio {
    fn start(dir: &Workdir, addr: SocketAddr, nodes: &[SocketAddr]) -> Kamailio {
        let uris: Vec<String> = nodes.iter().map(|n| format!("sip:{n}")).collect();
        Kamailio::start_with(dir, addr, &uris, &[])
    }

    /// Kamailio dispatching to the SIP URIs `nodes`, with more `-A` defines.
    fn start_with(dir: &Workdir, addr: SocketAddr, nodes: &[String], defines: &[&str]) -> Kamailio {
        let list = dir.join("dispatcher.list");
        let lines: Vec<String> = nodes.iter().map(|n| format!("1 {n}\n")).collect();
        fs::write(&list, lines.concat()).unwrap();
        let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/kamailio.cfg");
        let child = Command::new("kamailio")
            // Its own process group, so that dropping it reaches its workers too.
            .process_group(0)
            .args(["-f", cfg, "-DD", "-E", "-m", "32", "-M", "8"])
            .arg("-Y")
            .arg(&**dir)
            .arg("-A")
            .arg(format!("LISTEN=udp:{addr}"))
            .arg("-A")
            .arg(format!("DS_LIST=\"{}\"", list.display()))
            .args(["-A", "DS_PING_SECS=1"])
            .args(defines.iter().flat_map(|d| ["-A", d]))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(dir.join("gateway-kamailio.log")).unwrap(),
            ))
            .spawn()
            .expect("start kamailio");
        Kamailio(child)
    }
}

impl Drop for Kamailio {
    /// SIGTERM to its process group (the main process and the workers it forked; a
    /// SIGKILL of the main process alone would leave the workers running), then SIGKILL
    /// to what is left after 3 s.
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn kamailio_present() -> bool {
    let ok = Command::new("kamailio")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_or_fail("kamailio is not installed (Debian package kamailio): proxy test skipped");
    }
    ok
}

fn node(dir: &Workdir, ports: &Ports, url: &str, id: &str) -> Gateway {
    Gateway::start_with(dir, ports, &format!("gateway-{id}"), |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", url)
            .env("SALLYPORT_NODE_ID", id)
            .env("SALLYPORT_CLUSTER_SECRET", SECRET)
            .env("SALLYPORT_CLUSTER_HEARTBEAT_SECS", "1")
            .env("SALLYPORT_CLUSTER_DEAD_AFTER_SECS", "3");
    })
}

/// The calls [`accepted_call_of`] returned, so that it never returns one twice.
static RETURNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The call of `inmate` (its CDR) once it is accepted: live, or already ended (a short
/// call on a loaded machine can end between two looks); never a call it returned before
/// (the same inmate's earlier call).
fn accepted_call_of(api: &Api, inmate: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    let accepted = |list: &Value| {
        let returned = RETURNED.lock().unwrap();
        list.as_array().and_then(|a| {
            a.iter()
                .find(|c| {
                    c["inmate_id"] == inmate
                        && !c["accepted_at"].is_null()
                        && !returned.iter().any(|r| c["id"] == r.as_str())
                })
                .cloned()
        })
    };
    let keep = |c: Value| {
        let id = c["id"].as_str().unwrap_or_default().to_string();
        RETURNED.lock().unwrap().push(id);
        c
    };
    loop {
        let live = api.get("/api/v1/calls/active");
        if let Some(c) = accepted(&live) {
            return keep(c);
        }
        if let Some(c) = accepted(&api.get("/api/v1/calls?facility_id=DEMO&limit=500")["items"]) {
            return keep(c);
        }
        assert!(
            Instant::now() < deadline,
            "no accepted call of {inmate}: {live}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A runtime, a fresh PostgreSQL database and its URL, when sipp, Kamailio and PostgreSQL
/// are all here (`None`, said why, otherwise).
fn postgres_and_peers() -> Option<(tokio::runtime::Runtime, TestDb, String)> {
    if !sipp::present("Kamailio test") || !kamailio_present() {
        return None;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::postgres())?;
    let url = db.postgres_url().expect("a PostgreSQL URL");
    Some((rt, db, url))
}

fn free_udp() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[test]
fn calls_through_kamailio_go_around_a_draining_node() {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", "drain_behind_proxy");
    let (pa, pb) = (sipp::ports(), sipp::ports());
    let ids = ["node-a", "node-b"];
    let ports = [pa, pb];
    let mut nodes = [
        node(&dir, &ports[0], &url, ids[0]),
        node(&dir, &ports[1], &url, ids[1]),
    ];
    let api = nodes[0].api.clone();
    three_second_increments(&api);
    let proxy = free_udp();
    let _kamailio = Kamailio::start(&dir, proxy, &[nodes[0].sip, nodes[1].sip]);
    // Let the dispatcher probe both nodes.
    std::thread::sleep(Duration::from_secs(3));

    // Call 1 through the proxy; a trunk waits on each node's trunk port.
    let first = book(&api, "P-1", "1357", NUMBER, false);
    let second = book(&api, "P-2", "2468", NUMBER, false);
    let third = book(&api, "P-3", "3579", NUMBER, false);
    let fourth = book(&api, "P-4", "4680", NUMBER, false);
    for i in [&first, &second, &third, &fourth] {
        fund(&api, i, "1.00");
    }
    let mut trunks = [
        Trunk::answer("1").spawn(&dir.join("a"), &ports[0]),
        Trunk::answer("1").spawn(&dir.join("b"), &ports[1]),
    ];
    let mut h1 = Handset::new(&first.pin, Via::Info)
        .hang_up_after(20_000)
        .spawn(&dir, 0, &ports[0], proxy);
    let c1 = accepted_call_of(&api, &first.id);
    let d = ids.iter().position(|i| c1["node_id"] == *i).unwrap();
    let o = 1 - d;

    // Drain the node that carries call 1; the dispatcher sees its OPTIONS answer 503.
    let pid = nodes[d].child.id() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    std::thread::sleep(Duration::from_secs(2));

    // Calls 2 and 3 through the proxy land on the other node, though round robin would
    // have sent one of them to the draining node.
    let mut during = Vec::new();
    for (inmate, slot) in [(&second, 1), (&third, 1)] {
        let mut h = Handset::new(&inmate.pin, Via::Info)
            .hang_up_after(1_000)
            .spawn(&dir, slot, &ports[0], proxy);
        let c = accepted_call_of(&api, &inmate.id);
        assert_eq!(c["node_id"], ids[o], "{c}");
        h.expect_ok(Duration::from_secs(40));
        trunks[o].expect_ok(Duration::from_secs(90));
        trunks[o] = Trunk::answer("1").spawn(&dir.join(format!("o{}", inmate.booking)), &ports[o]);
        during.push(c);
    }
    assert_eq!(
        api.get(&format!("/api/v1/calls/{}", c1["id"].as_str().unwrap()))["state"],
        "active",
        "call 1 still up on the draining node"
    );

    // Call 1 goes on to its end on the draining node, which then exits.
    h1.expect_ok(Duration::from_secs(90));
    trunks[d].expect_ok(Duration::from_secs(90));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = nodes[d].child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not exit after its call",
            ids[d]
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");

    // Call 4 through the proxy: the node that is left.
    let api = nodes[o].api.clone();
    let mut h4 = Handset::new(&fourth.pin, Via::Info)
        .hang_up_after(1_000)
        .spawn(&dir, 0, &ports[1], proxy);
    let c4 = accepted_call_of(&api, &fourth.id);
    assert_eq!(c4["node_id"], ids[o], "{c4}");
    h4.expect_ok(Duration::from_secs(40));
    trunks[o].expect_ok(Duration::from_secs(90));

    let (c2, c3) = (&during[0], &during[1]);
    for (i, c) in [(&first, &c1), (&second, c2), (&third, c3), (&fourth, &c4)] {
        let cdr = api.get(&format!("/api/v1/calls/{}", c["id"].as_str().unwrap()));
        assert_eq!(
            (cdr["state"].as_str(), cdr["end_reason"].as_str()),
            (Some("ended"), Some("caller_hangup")),
            "{} {cdr}",
            i.booking
        );
    }
    api.assert_ledger_clean();
    drop(nodes);
    rt.block_on(db.cleanup());
}

/// Three nodes behind Kamailio: three calls through the proxy land on the three nodes;
/// the node carrying the first is killed (SIGKILL). A survivor closes that call (reason
/// `system`, charges as committed) within the heartbeat timeout while the other two calls
/// go on, and the same inmate calls again through the proxy at once.
#[test]
fn a_node_killed_behind_kamailio_loses_no_call_but_its_own() {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", "kill_behind_proxy");
    let ids = ["node-a", "node-b", "node-c"];
    let ports = [sipp::ports(), sipp::ports(), sipp::ports()];
    let mut nodes: Vec<Option<Gateway>> = (0..3)
        .map(|i| Some(node(&dir, &ports[i], &url, ids[i])))
        .collect();
    let api = nodes[0].as_ref().unwrap().api.clone();
    three_second_increments(&api);
    let proxy = free_udp();
    let sips: Vec<SocketAddr> = nodes.iter().map(|n| n.as_ref().unwrap().sip).collect();
    let _kamailio = Kamailio::start(&dir, proxy, &sips);
    std::thread::sleep(Duration::from_secs(3));

    let inmates = [
        book(&api, "K-1", "1357", NUMBER, false),
        book(&api, "K-2", "2468", NUMBER, false),
        book(&api, "K-3", "3579", NUMBER, false),
    ];
    for i in &inmates {
        fund(&api, i, "1.00");
    }
    let mut trunks: Vec<_> = (0..3)
        .map(|i| Trunk::answer("1").spawn(&dir.join(format!("t{i}")), &ports[i]))
        .collect();
    let mut handsets = Vec::new();
    let mut calls = Vec::new();
    for (k, inmate) in inmates.iter().enumerate() {
        let h = Handset::new(&inmate.pin, Via::Info)
            .hang_up_after(15_000)
            .spawn(&dir, 0, &ports[k], proxy);
        handsets.push(h);
        calls.push(accepted_call_of(&api, &inmate.id));
    }
    let mut landed: Vec<&str> = calls
        .iter()
        .map(|c| c["node_id"].as_str().unwrap())
        .collect();
    landed.sort_unstable();
    assert_eq!(landed, ids, "the calls land on all three nodes");

    // The node of the first call dies.
    let x = ids.iter().position(|i| calls[0]["node_id"] == *i).unwrap();
    let survivor = (0..3).find(|&i| i != x).unwrap();
    let sapi = nodes[survivor].as_ref().unwrap().api.clone();
    nodes[x].take().unwrap().kill();
    let killed = Instant::now();
    handsets[0].stop();
    trunks[x].stop();
    let id = calls[0]["id"].as_str().unwrap();
    let cdr = loop {
        let cdr = sapi.get(&format!("/api/v1/calls/{id}"));
        if cdr["state"] == "ended" {
            break cdr;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "never closed: {cdr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        killed.elapsed() < Duration::from_secs(7),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(cdr["end_reason"], "system", "{cdr}");
    let charged = support::api::money(&cdr["amount"]);
    let billed = cdr["billed_increments"].as_i64().unwrap();
    assert!(billed >= 1, "{cdr}");
    assert_eq!(
        sapi.call_charges(&inmates[0].account).len() as i64,
        billed,
        "{cdr}"
    );
    assert_eq!(
        sapi.balance(&inmates[0].account),
        support::api::dec("1.00") - charged
    );
    // The other two calls go on.
    for c in &calls[1..] {
        let live = sapi.get(&format!("/api/v1/calls/{}", c["id"].as_str().unwrap()));
        assert_eq!(live["state"], "active", "{live}");
    }

    // The same inmate calls again through the proxy, at once: a survivor takes it. Its
    // trunk waits on both survivors' trunk ports once their calls are over.
    for h in &mut handsets[1..] {
        h.expect_ok(Duration::from_secs(60));
    }
    for i in (0..3).filter(|&i| i != x) {
        trunks[i].expect_ok(Duration::from_secs(90));
        trunks[i] = Trunk::answer("1").spawn(&dir.join(format!("again{i}")), &ports[i]);
    }
    let again = Instant::now();
    let mut h = Handset::new(&inmates[0].pin, Via::Info)
        .hang_up_after(1_000)
        .spawn(&dir, 1, &ports[0], proxy);
    let c = accepted_call_of(&sapi, &inmates[0].id);
    assert_ne!(c["node_id"], ids[x], "{c}");
    assert!(
        again.elapsed() < Duration::from_secs(15),
        "{:?}",
        again.elapsed()
    );
    h.expect_ok(Duration::from_secs(40));
    let cdr = sapi.get(&format!("/api/v1/calls/{}", c["id"].as_str().unwrap()));
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    sapi.assert_ledger_clean();
    drop(trunks);
    drop(nodes);
    rt.block_on(db.cleanup());
}

/// Behind a proxy it trusts (`sip.trusted_proxies`), a node admits a handset on the
/// trusted networks by the handset's own address (the Via the proxy forwards), never by
/// the proxy's: with 127.0.0.2/32 the facility's only trusted network, a handset on
/// 127.0.0.2 calls through Kamailio on 127.0.0.1 and is connected; a handset on 127.0.0.3
/// (not on the network) is refused through the same proxy, though the proxy's own address
/// would once have been all the node saw.
#[test]
fn behind_a_trusted_proxy_a_handset_is_admitted_by_its_own_address() {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", "trusted_proxy");
    let ports = sipp::ports();
    let gw = Gateway::start_with(&dir, &ports, "gateway-node-a", |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", &url)
            .env("SALLYPORT_NODE_ID", "node-a")
            .env("SALLYPORT_CLUSTER_SECRET", SECRET)
            .env("SALLYPORT_SIP_TRUSTED_PROXIES", "127.0.0.1/32");
    });
    let api = gw.api.clone();
    three_second_increments(&api);
    // The handsets' network only: not the proxy's address.
    rt.block_on(sqlx::query("DELETE FROM trusted_networks").execute(db.db.pool()))
        .unwrap();
    api.post(
        "/api/v1/facilities/DEMO/trusted-networks",
        serde_json::json!({ "cidr": "127.0.0.2/32", "description": "unit A handsets" }),
    );
    let proxy = free_udp();
    let _kamailio = Kamailio::start(&dir, proxy, &[gw.sip]);
    std::thread::sleep(Duration::from_secs(3));

    let inside = book(&api, "T-1", "1357", NUMBER, false);
    let outside = book(&api, "T-2", "2468", NUMBER, false);
    for i in [&inside, &outside] {
        fund(&api, i, "1.00");
    }
    let mut trunk = Trunk::answer("1").spawn(&dir.join("t"), &ports);
    let mut h = Handset::new(&inside.pin, Via::Info)
        .sending_from("127.0.0.2")
        .hang_up_after(2_000)
        .spawn(&dir, 0, &ports, proxy);
    let call = accepted_call_of(&api, &inside.id);
    assert_eq!(call["node_id"], "node-a", "{call}");
    assert!(
        h.wait(Duration::from_secs(30)).success(),
        "the handset inside"
    );

    // From 127.0.0.3 through the same proxy: not on the trusted network, so not admitted
    // by it (challenged for credentials it does not have), and never connected.
    let mut refused = Handset::new(&outside.pin, Via::Info)
        .sending_from("127.0.0.3")
        .spawn(&dir, 1, &ports, proxy);
    assert!(
        !refused.wait(Duration::from_secs(30)).success(),
        "a handset outside the trusted network got through the proxy"
    );
    let live = api.get("/api/v1/calls/active");
    assert!(
        !live.to_string().contains(&outside.id),
        "the outside handset's call is live: {live}"
    );
    trunk.stop();
}

/// The Call-ID of the one call a handset placed (from its message trace).
fn call_id_of(h: &support::sipp::Sipp) -> String {
    h.messages()
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .map(|c| c.trim().to_string())
        .expect("a Call-ID in the handset's trace")
}

/// The first message in a sipp trace whose first line starts with `start` (its lines up
/// to the blank line that ends its headers).
fn message_starting(trace: &str, start: &str) -> Option<String> {
    let lines: Vec<&str> = trace.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(start))?;
    let end = lines[at..]
        .iter()
        .position(|l| l.trim().is_empty())
        .map_or(lines.len(), |n| at + n);
    Some(lines[at..end].join("\n"))
}

/// Waits for `needle` in Kamailio's log.
fn kamailio_logged(dir: &Workdir, needle: &str) {
    let log = dir.join("gateway-kamailio.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Kamailio never logged {needle:?}:\n{}",
            &text[text.len().saturating_sub(4000)..]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Record-Route behind the proxy (RFC 3261 12.1.1, 12.2.1.1): Kamailio record-routes the
/// INVITE, the node's 200 carries the Record-Route back to the handset, and both ends'
/// in-dialog requests pass the proxy along that route set.
///
/// - A call funded for three increments is cut by the node when the money runs out: the
///   node's BYE goes to Kamailio with its Route (Kamailio's log says it loose-routed a BYE
///   from the node), and the handset receives it from the proxy (the proxy's Via on top)
///   and answers it; the CDR says `funds_exhausted`, the balance is exactly zero.
/// - A second call is ended by the handset: its BYE, routed through the proxy, ends the
///   call (`caller_hangup`).
#[test]
fn a_call_cut_by_the_node_is_torn_down_through_kamailio() {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", "record_route");
    let ports = sipp::ports();
    let gw = node(&dir, &ports, &url, "node-a");
    let api = gw.api.clone();
    three_second_increments(&api);
    let proxy = free_udp();
    let _kamailio = Kamailio::start(&dir, proxy, &[gw.sip]);
    std::thread::sleep(Duration::from_secs(3));

    let cut = book(&api, "R-1", "1357", NUMBER, false);
    fund(&api, &cut, "0.0075");
    let mut trunk = Trunk::answer("1").spawn(&dir.join("t1"), &ports);
    // The handset waits for the node's BYE.
    let mut h = Handset::new(&cut.pin, Via::Info).spawn(&dir, 0, &ports, proxy);
    h.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
    assert_eq!(cdr["billed_increments"], 3, "{cdr}");
    assert_eq!(api.balance(&cut.account), rust_decimal::Decimal::ZERO);

    let trace = h.messages();
    let ok = message_starting(&trace, "SIP/2.0 200 OK").expect("the 200 in the trace");
    assert!(
        ok.contains(&format!("Record-Route: <sip:{proxy};")),
        "the node's 200 carries the proxy's Record-Route:\n{ok}"
    );
    let bye = message_starting(&trace, "BYE sip:").expect("the node's BYE in the trace");
    let top_via = bye
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap_or_default();
    assert!(
        top_via.starts_with(&format!("Via: SIP/2.0/UDP {proxy};")),
        "the node's BYE reached the handset through the proxy:\n{bye}"
    );
    assert!(
        !bye.contains("Route:"),
        "the proxy took its Route off:\n{bye}"
    );
    let call_id = call_id_of(&h);
    kamailio_logged(&dir, &format!("BYE {call_id} routed from {}", gw.sip));

    // The handset hangs up: its BYE goes along the route set too.
    let hangs_up = book(&api, "R-2", "2468", NUMBER, false);
    fund(&api, &hangs_up, "1.00");
    let mut trunk = Trunk::answer("1").spawn(&dir.join("t2"), &ports);
    let mut h = Handset::new(&hangs_up.pin, Via::Info)
        .hang_up_after(1_000)
        .spawn(&dir, 1, &ports, proxy);
    h.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));
    let call_id = call_id_of(&h);
    let handset = SocketAddr::from(([127, 0, 0, 1], ports.handsets[1].0));
    kamailio_logged(&dir, &format!("BYE {call_id} routed from {handset}"));
    let calls = api.ended_calls(2);
    let cdr = calls
        .iter()
        .find(|c| c["inmate_id"] == hangs_up.id.as_str())
        .expect("the second call");
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    api.assert_ledger_clean();
    drop(gw);
    rt.block_on(db.cleanup());
}

/// Digest authentication through the proxy: with no trusted network, a handset must
/// authenticate. Its first INVITE is challenged (401, passed back by Kamailio untouched),
/// its second, with credentials, is a new transaction that the proxy's round robin may
/// send to the other node (which verifies the first node's nonce): either way the call is
/// connected and ends as the handset ends it.
#[test]
fn a_handset_authenticates_by_digest_through_kamailio() {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", "digest");
    let ports = [sipp::ports(), sipp::ports()];
    let nodes = [
        node(&dir, &ports[0], &url, "node-a"),
        node(&dir, &ports[1], &url, "node-b"),
    ];
    let api = nodes[0].api.clone();
    three_second_increments(&api);
    rt.block_on(sqlx::query("DELETE FROM trusted_networks").execute(db.db.pool()))
        .unwrap();
    let proxy = free_udp();
    let _kamailio = Kamailio::start(&dir, proxy, &[nodes[0].sip, nodes[1].sip]);
    std::thread::sleep(Duration::from_secs(3));

    let inmate = book(&api, "D-1", "1357", NUMBER, false);
    fund(&api, &inmate, "1.00");
    let mut trunks = [
        Trunk::answer("1").spawn(&dir.join("a"), &ports[0]),
        Trunk::answer("1").spawn(&dir.join("b"), &ports[1]),
    ];
    let mut h = Handset::new(&inmate.pin, Via::Info)
        .digest(sallyport::demo::HANDSET_PASSWORD)
        .hang_up_after(4_000)
        .spawn(&dir, 0, &ports[0], proxy);
    let call = accepted_call_of(&api, &inmate.id);
    h.expect_ok(Duration::from_secs(60));
    let on = usize::from(call["node_id"] == "node-b");
    trunks[on].expect_ok(Duration::from_secs(60));
    trunks[1 - on].stop();
    let trace = h.messages();
    assert!(
        trace.contains("SIP/2.0 401"),
        "the first INVITE was challenged:\n{trace}"
    );
    let cdr = api.get(&format!("/api/v1/calls/{}", call["id"].as_str().unwrap()));
    assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    api.assert_ledger_clean();
    drop(nodes);
    rt.block_on(db.cleanup());
}

/// A TCP link between one node and PostgreSQL that the test can cut: while cut, every
/// connection it carried is shut and every new one closed at once (what a network
/// partition or a database going away looks like to the node); restored, it forwards
/// again. Stopped when dropped.
struct DbLink {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    carried: Arc<Mutex<Vec<TcpStream>>>,
}

impl DbLink {
    fn start(upstream: SocketAddr) -> DbLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let link = DbLink {
            addr: listener.local_addr().unwrap(),
            cut: Arc::default(),
            stop: Arc::default(),
            carried: Arc::default(),
        };
        let (cut, stop, carried) = (link.cut.clone(), link.stop.clone(), link.carried.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if cut.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut held = carried.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        link
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for s in self.carried.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for DbLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let at = url.find('@').expect("a user in the URL") + 1;
    let slash = at + url[at..].find('/').expect("a database in the URL");
    format!("{}{addr}{}", &url[..at], &url[slash..])
}

/// host:port of a PostgreSQL URL.
fn upstream_of(url: &str) -> SocketAddr {
    let at = url.find('@').expect("a user in the URL") + 1;
    let slash = at + url[at..].find('/').expect("a database in the URL");
    let hostport = &url[at..slash];
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .unwrap()
        .next()
        .unwrap()
}

/// The status code of the answer to one OPTIONS sent to `to` from a socket of its own
/// (and its reason phrase).
fn options(to: SocketAddr) -> (u16, String) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let n = uuid::Uuid::new_v4().simple().to_string();
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=f{n}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: probe-{n}@{me}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (len, _) = s.recv_from(&mut buf).expect("an answer to OPTIONS");
        let text = String::from_utf8_lossy(&buf[..len]).to_string();
        let line = text.lines().next().unwrap_or_default().to_string();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if status >= 200 {
            return (status, line);
        }
    }
}

/// Polls OPTIONS to `to` until it answers `want`; how long that took.
fn options_until(to: SocketAddr, want: u16, within: Duration) -> (Duration, String) {
    let t0 = Instant::now();
    loop {
        let (status, line) = options(to);
        if status == want {
            return (t0.elapsed(), line);
        }
        assert!(
            t0.elapsed() < within,
            "OPTIONS to {to} still answers {line} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A node whose database goes away: node-a reaches PostgreSQL through a link the test
/// cuts. Within a few seconds node-a answers OPTIONS 503 (database unreachable); the
/// calls placed through Kamailio meanwhile land on node-b. The link restored, node-a
/// answers 200 again and the proxy sends it calls again: of the next two calls through
/// the proxy, one lands on each node. Every call ends as its handset ended it; the
/// ledger is clean.
#[test]
fn a_node_that_loses_its_database_answers_503_and_calls_go_to_the_other() {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", "database_down");
    let link = DbLink::start(upstream_of(&url));
    let ports = [sipp::ports(), sipp::ports()];
    let ids = ["node-a", "node-b"];
    let nodes = [
        node(&dir, &ports[0], &through(&url, link.addr), ids[0]),
        node(&dir, &ports[1], &url, ids[1]),
    ];
    let api = nodes[1].api.clone();
    three_second_increments(&api);
    let proxy = free_udp();
    let _kamailio = Kamailio::start(&dir, proxy, &[nodes[0].sip, nodes[1].sip]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(options(nodes[0].sip).0, 200);
    let inmates: Vec<_> = (0..4)
        .map(|k| {
            let i = book(
                &api,
                &format!("U-{k}"),
                &format!("{}", 1357 + k),
                NUMBER,
                false,
            );
            fund(&api, &i, "1.00");
            i
        })
        .collect();

    link.cut();
    let (took, line) = options_until(nodes[0].sip, 503, Duration::from_secs(15));
    assert!(line.contains("database"), "{line}");
    assert!(took < Duration::from_secs(6), "503 after {took:?}");
    eprintln!("node-a answered OPTIONS 503 {took:?} after its database went away");
    assert_eq!(options(nodes[1].sip).0, 200, "node-b still serves");
    // Let the dispatcher see it (it would fail an INVITE over to node-b anyway).
    std::thread::sleep(Duration::from_secs(2));
    let mut calls = Vec::new();
    for (k, inmate) in inmates[..2].iter().enumerate() {
        let mut trunk = Trunk::answer("1").spawn(&dir.join(format!("down{k}")), &ports[1]);
        let mut h = Handset::new(&inmate.pin, Via::Info)
            .hang_up_after(1_000)
            .spawn(&dir, k % 2, &ports[1], proxy);
        let c = accepted_call_of(&api, &inmate.id);
        assert_eq!(c["node_id"], ids[1], "{c}");
        h.expect_ok(Duration::from_secs(40));
        trunk.expect_ok(Duration::from_secs(60));
        calls.push(c);
    }

    link.restore();
    let (took, _) = options_until(nodes[0].sip, 200, Duration::from_secs(15));
    eprintln!("node-a answered OPTIONS 200 {took:?} after its database came back");
    // The dispatcher probes every second; one probe answered 200 makes node-a active.
    std::thread::sleep(Duration::from_secs(3));
    let mut trunks = [
        Trunk::answer("1").spawn(&dir.join("up-a"), &ports[0]),
        Trunk::answer("1").spawn(&dir.join("up-b"), &ports[1]),
    ];
    let mut landed = Vec::new();
    for (k, inmate) in inmates[2..].iter().enumerate() {
        let mut h = Handset::new(&inmate.pin, Via::Info)
            .hang_up_after(1_000)
            .spawn(&dir, k, &ports[0], proxy);
        let c = accepted_call_of(&api, &inmate.id);
        h.expect_ok(Duration::from_secs(40));
        landed.push(c["node_id"].as_str().unwrap().to_string());
        calls.push(c);
    }
    for t in &mut trunks {
        t.expect_ok(Duration::from_secs(60));
    }
    landed.sort_unstable();
    assert_eq!(
        landed, ids,
        "after the outage the proxy uses both nodes again"
    );
    for c in &calls {
        let cdr = api.get(&format!("/api/v1/calls/{}", c["id"].as_str().unwrap()));
        assert_eq!(cdr["end_reason"], "caller_hangup", "{cdr}");
    }
    api.assert_ledger_clean();
    drop(nodes);
    drop(link);
    rt.block_on(db.cleanup());
}

/// `id`'s sessions for the handset INVITE with Call-ID `call_id`: (node, state, end
/// reason, billed increments).
fn sessions_of(
    rt: &tokio::runtime::Runtime,
    db: &TestDb,
    call_id: &str,
) -> Vec<(String, String, Option<String>, i64)> {
    use sqlx::Row;
    rt.block_on(
        sqlx::query(
            "SELECT node_id, state, end_reason, billed_increments FROM sessions \
             WHERE sip_call_id = $1 ORDER BY invite_at",
        )
        .bind(call_id)
        .fetch_all(db.db.pool()),
    )
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("node_id"),
            r.get("state"),
            r.get("end_reason"),
            r.get::<i64, _>("billed_increments"),
        )
    })
    .collect()
}

/// An INVITE failed over while the first node still holds it (bench/README, "The failed
/// run"): the node the proxy's round robin sends the next call to is paused (SIGSTOP) for
/// longer than the proxy's 2 s `fr_timer`, so Kamailio fails the INVITE over to the other
/// node, which sets the call up; then the paused node resumes and reads the INVITE (and
/// the proxy's retransmissions of it) from its socket. The handset's one call is one
/// session, charged once and bridged once: the resumed node finds the INVITE already taken
/// by the other node and refuses it (482, a merged request, RFC 3261 8.2.2.2) without
/// opening a session, and nothing is left open.
///
/// Twice: the node resumes 2 s after the failover, while the proxy still holds the
/// transaction (it CANCELs the node's branch once it answers 100), and 10 s after, when
/// the proxy has forgotten the transaction and the node's late answers reach it as
/// strays (it drops them: `reply_route` in `config/kamailio.cfg`).
#[test]
fn an_invite_failed_over_from_a_paused_node_is_one_call() {
    failover_from_a_paused_node("failover_paused", Duration::from_secs(2));
}

#[test]
fn an_invite_a_node_reads_after_the_proxy_forgot_it_is_one_call() {
    failover_from_a_paused_node("failover_forgotten", Duration::from_secs(10));
}

fn failover_from_a_paused_node(name: &str, resume_after: Duration) {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", name);
    let ports = [sipp::ports(), sipp::ports()];
    let ids = ["node-a", "node-b"];
    // Dead only after 20 s: the pause below is not a death.
    let start = |i: usize| {
        Gateway::start_with(&dir, &ports[i], &format!("gateway-{}", ids[i]), |cmd| {
            cmd.env("SALLYPORT_DATABASE_URL", &url)
                .env("SALLYPORT_NODE_ID", ids[i])
                .env("SALLYPORT_CLUSTER_SECRET", SECRET)
                .env("SALLYPORT_CLUSTER_HEARTBEAT_SECS", "1")
                .env("SALLYPORT_CLUSTER_DEAD_AFTER_SECS", "20");
        })
    };
    let nodes = [start(0), start(1)];
    let api = nodes[0].api.clone();
    three_second_increments(&api);
    let proxy = free_udp();
    let _kamailio = Kamailio::start(&dir, proxy, &[nodes[0].sip, nodes[1].sip]);
    std::thread::sleep(Duration::from_secs(3));
    let first = book(&api, "F-1", "1357", NUMBER, false);
    let moved = book(&api, "F-2", "2468", NUMBER, false);
    for i in [&first, &moved] {
        fund(&api, i, "1.00");
    }
    let mut trunks = [
        Trunk::answer("1").spawn(&dir.join("a"), &ports[0]),
        Trunk::answer("1").spawn(&dir.join("b"), &ports[1]),
    ];

    // A first call shows where the round robin stands: the next call goes to the other
    // node, p.
    let mut h = Handset::new(&first.pin, Via::Info)
        .hang_up_after(500)
        .spawn(&dir, 0, &ports[0], proxy);
    let c = accepted_call_of(&api, &first.id);
    let d = ids.iter().position(|i| c["node_id"] == *i).unwrap();
    let p = 1 - d;
    h.expect_ok(Duration::from_secs(60));
    trunks[d].expect_ok(Duration::from_secs(60));
    trunks[d] = Trunk::answer("1").spawn(&dir.join("again"), &ports[d]);

    // p stops reading its socket (still marked active: its first missed probe shows only
    // after 2 s); the next call goes there and gets no answer, not even 100 Trying.
    let paused = nodes[p].child.id() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(paused, libc::SIGSTOP) }, 0);
    let mut h = Handset::new(&moved.pin, Via::Info)
        .hang_up_after(15_000)
        .spawn(&dir, 1, &ports[0], proxy);
    kamailio_logged(&dir, "failed over to node");
    std::thread::sleep(resume_after);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(paused, libc::SIGCONT) }, 0);
    h.expect_ok(Duration::from_secs(60));
    trunks[d].expect_ok(Duration::from_secs(60));
    let call_id = call_id_of(&h);
    kamailio_logged(
        &dir,
        &format!("INVITE {call_id} to node sip:{}", nodes[p].sip),
    );
    kamailio_logged(
        &dir,
        &format!("INVITE {call_id} failed over to node sip:{}", nodes[d].sip),
    );
    // The resumed node refused the INVITE it read late (482: node d took it; or 487, if
    // the proxy's CANCEL came first), and whatever it answered, the handset in the middle
    // of its call never saw it: a stray reply is dropped by the proxy.
    let log = nodes[p].log.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&format!("sip_call_id={call_id}"))
    {
        assert!(
            Instant::now() < deadline,
            "node {} never read the INVITE",
            ids[p]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !h.messages().contains("SIP/2.0 482"),
        "the handset saw the stale refusal"
    );
    let sessions = sessions_of(&rt, &db, &call_id);
    assert_eq!(
        sessions.len(),
        1,
        "one session for the one call: {sessions:?}"
    );
    let (node, state, reason, billed) = &sessions[0];
    assert_eq!(node, ids[d], "{sessions:?}");
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("ended", Some("caller_hangup")),
        "{sessions:?}"
    );
    assert_eq!(
        api.call_charges(&moved.account).len() as i64,
        *billed,
        "charged by the one session"
    );
    trunks[p].stop();
    api.assert_ledger_clean();
    drop(nodes);
    rt.block_on(db.cleanup());
}

/// The node's SIP over TCP address, from the line `serve` printed.
fn tcp_of(dir: &Workdir, name: &str) -> SocketAddr {
    let out = fs::read_to_string(dir.join(format!("{name}.stdout"))).unwrap();
    out.lines()
        .find_map(|l| l.split("tcp://").nth(1))
        .map(|a| a.trim().parse().unwrap())
        .expect("the node's SIP over TCP address")
}

/// The proxy reaches the node over TCP and names itself by a host name in its
/// Record-Route (`advertise localhost:…`): the node's 200 carries that route back, and the
/// BYE the node sends when the money runs out goes to the name it resolves, over TCP, and
/// reaches the handset through the proxy (a handset on UDP; the proxy record-routes
/// twice, one entry per side).
#[test]
fn a_node_behind_the_proxy_over_tcp_routes_its_bye_to_a_host_name() {
    let Some((rt, db, url)) = postgres_and_peers() else {
        return;
    };
    let dir = Workdir::new("kamailio", "tcp_host_name");
    let ports = sipp::ports();
    let gw = node(&dir, &ports, &url, "node-a");
    let api = gw.api.clone();
    three_second_increments(&api);
    let node_tcp = tcp_of(&dir, "gateway-node-a");
    let proxy = free_udp();
    let proxy_tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listen_tcp = format!(
        "LISTEN_TCP=tcp:{proxy_tcp} advertise localhost:{}",
        proxy_tcp.port()
    );
    let _kamailio = Kamailio::start_with(
        &dir,
        proxy,
        &[format!("sip:{node_tcp};transport=tcp")],
        &[&listen_tcp],
    );
    std::thread::sleep(Duration::from_secs(3));

    let cut = book(&api, "H-1", "1357", NUMBER, false);
    fund(&api, &cut, "0.0075");
    let mut trunk = Trunk::answer("1").spawn(&dir.join("t1"), &ports);
    let mut h = Handset::new(&cut.pin, Via::Info).spawn(&dir, 0, &ports, proxy);
    h.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));
    let cdr = &api.ended_calls(1)[0];
    assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
    assert_eq!(cdr["billed_increments"], 3, "{cdr}");

    let trace = h.messages();
    let ok = message_starting(&trace, "SIP/2.0 200 OK").expect("the 200 in the trace");
    assert!(
        ok.contains(&format!(
            "<sip:localhost:{};transport=tcp;",
            proxy_tcp.port()
        )),
        "the node's 200 carries the proxy's host-named TCP Record-Route:\n{ok}"
    );
    let bye = message_starting(&trace, "BYE sip:").expect("the node's BYE in the trace");
    let top_via = bye
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap_or_default();
    assert!(
        top_via.starts_with(&format!("Via: SIP/2.0/UDP {proxy};")),
        "the node's BYE reached the handset through the proxy:\n{bye}"
    );
    assert!(
        bye.contains("Via: SIP/2.0/TCP"),
        "the node sent its BYE over TCP:\n{bye}"
    );
    kamailio_logged(
        &dir,
        &format!("BYE {} routed from 127.0.0.1:", call_id_of(&h)),
    );
    api.assert_ledger_clean();
    drop(gw);
    rt.block_on(db.cleanup());
}
