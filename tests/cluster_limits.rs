//! The limits that hold for the whole cluster (issue 13), on two real `sallyport serve`
//! processes sharing one PostgreSQL database, sipp handsets calling each node directly:
//!
//! - **One live call per inmate**: while an inmate's call is up on node-a, the same
//!   inmate's call through node-b is refused (`call_limit`) after the PIN.
//! - **The daily call limit**: with the facility's `daily_call_limit` at 1, set through
//!   node-b, an inmate who called once through node-a is refused through node-b.
//! - **PIN lockouts**: with `security.lockout_after_failures = 4`, three wrong PINs for
//!   an inmate's calling ID through node-a and three through node-b lock the inmate; the
//!   right PIN through node-a then connects nothing, and node-b lists the lock.
//! - **Login lockouts**: with `http.login_lockout_after_failures = 3`, wrong passwords
//!   through node-a, node-b, node-a lock the account: the right password is refused on
//!   both nodes.
//!
//! Each is decided in the database (a unique index, a count of the day's accepted calls,
//! the PIN attempt log, the user's failure counter), never in a node's memory, which is
//! what these tests would catch. Rate limits that are per node are in the operator guide.
//!
//! Without PostgreSQL (`SALLYPORT_TEST_DATABASE_URL`) or sipp the test prints why and
//! passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use sallyport::db::testing::TestDb;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::api::{book, fund, three_second_increments, Api, NUMBER};
use support::gateway::Gateway;
use support::sipp::{self, Handset, Ports, Trunk, Via};
use support::Workdir;

const SECRET: &str = "cluster-secret-for-the-tests";

fn node(dir: &Workdir, ports: &Ports, url: &str, id: &str) -> Gateway {
    Gateway::start_with(dir, ports, &format!("gateway-{id}"), |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", url)
            .env("SALLYPORT_NODE_ID", id)
            .env("SALLYPORT_CLUSTER_SECRET", SECRET)
            .env("SALLYPORT_SECURITY_LOCKOUT_AFTER_FAILURES", "4")
            // Every sipp handset sends from 127.0.0.1: one line.
            .env("SALLYPORT_SECURITY_LINE_LOCKOUT_AFTER_FAILURES", "0")
            .env("SALLYPORT_HTTP_LOGIN_LOCKOUT_AFTER_FAILURES", "3");
    })
}

/// The calls of `inmate` that have ended, newest first, once there are `n`.
fn ended_calls_of(api: &Api, inmate: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let all = api.get("/api/v1/calls?facility_id=DEMO&limit=500")["items"].clone();
        let ended: Vec<Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["inmate_id"] == inmate && c["state"] == "ended")
            .cloned()
            .collect();
        if ended.len() >= n {
            return ended;
        }
        assert!(
            Instant::now() < deadline,
            "{n} ended calls of {inmate}: {all}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one ended call whose session `node` carried and that never connected: its end
/// reason.
fn refused_on(api: &Api, inmate: &str, n: usize, node: &str) -> String {
    let calls = ended_calls_of(api, inmate, n);
    let c = calls
        .iter()
        .find(|c| c["node_id"] == node && c["accepted_at"].is_null())
        .unwrap_or_else(|| panic!("no refused call of {inmate} on {node}: {calls:?}"));
    c["end_reason"].as_str().unwrap().to_string()
}

#[test]
fn limits_hold_across_two_nodes() {
    if !sipp::present("cluster limits test") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let url = db.postgres_url().expect("a PostgreSQL URL");
    let dir = Workdir::new("cluster_limits", "two_nodes");
    let ports = [sipp::ports(), sipp::ports()];
    let nodes = [
        node(&dir, &ports[0], &url, "node-a"),
        node(&dir, &ports[1], &url, "node-b"),
    ];
    let (a, b) = (nodes[0].api.clone(), nodes[1].api.clone());
    three_second_increments(&a);
    let live = book(&a, "L-1", "1357", NUMBER, false);
    let guessed = book(&a, "L-2", "2468", NUMBER, false);
    for i in [&live, &guessed] {
        fund(&a, i, "1.00");
    }

    // One live call per inmate: up on node-a, refused on node-b.
    let mut trunk = Trunk::answer("1").spawn(&dir.join("a"), &ports[0]);
    let mut first = Handset::new(&live.pin, Via::Info)
        .hang_up_after(12_000)
        .spawn(&dir, 0, &ports[0], nodes[0].sip);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !a
        .get("/api/v1/calls/active")
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["inmate_id"] == live.id.as_str() && !c["accepted_at"].is_null())
    {
        assert!(Instant::now() < deadline, "the first call never connected");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut second = Handset::new(&live.pin, Via::Info).spawn(&dir, 0, &ports[1], nodes[1].sip);
    second.expect_ok(Duration::from_secs(40));
    assert_eq!(refused_on(&b, &live.id, 1, "node-b"), "call_limit");
    first.expect_ok(Duration::from_secs(60));
    trunk.expect_ok(Duration::from_secs(60));

    // The daily limit, set through node-b, counts the call node-a carried.
    let (s, v) = b.request(
        "PATCH",
        "/api/v1/facilities/DEMO",
        Some(json!({ "daily_call_limit": 1 })),
    );
    assert_eq!(s, 200, "{v}");
    let mut again = Handset::new(&live.pin, Via::Info).spawn(&dir, 1, &ports[1], nodes[1].sip);
    again.expect_ok(Duration::from_secs(40));
    let calls = ended_calls_of(&b, &live.id, 3);
    let connected = calls.iter().filter(|c| !c["accepted_at"].is_null()).count();
    assert_eq!(connected, 1, "{calls:?}");
    let reasons: Vec<&str> = calls
        .iter()
        .filter(|c| c["node_id"] == "node-b")
        .map(|c| c["end_reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["call_limit", "call_limit"], "{calls:?}");

    // PIN lockout: three wrong PINs through each node lock the inmate (4 in the hour).
    for (k, n) in [(0, &nodes[0]), (1, &nodes[1])] {
        let wrong = Handset::new("9081", Via::Info)
            .id(&guessed.calling_id)
            .attempts(3);
        let mut h = wrong.spawn(&dir, 1 - k, &ports[k], n.sip);
        h.expect_ok(Duration::from_secs(60));
    }
    let locks = b.get("/api/v1/facilities/DEMO/pin-locks");
    assert!(
        locks.to_string().contains(&guessed.id),
        "node-b lists the lock: {locks}"
    );
    let mut right = Handset::new(&guessed.pin, Via::Info).spawn(&dir, 0, &ports[0], nodes[0].sip);
    right.expect_ok(Duration::from_secs(60));
    // Refused calls name no inmate (no entry identified one): all three ended
    // `pin_failed`, the last on node-a, and none of the inmate's calls connected.
    let all = a.get("/api/v1/calls?facility_id=DEMO&limit=500")["items"].clone();
    let all = all.as_array().unwrap();
    let failed: Vec<&str> = all
        .iter()
        .filter(|c| c["end_reason"] == "pin_failed")
        .map(|c| c["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["node-a", "node-b", "node-a"],
        "newest first: {all:?}"
    );
    assert!(
        !all.iter().any(|c| c["inmate_id"] == guessed.id.as_str()),
        "the locked inmate was identified: {all:?}"
    );
    assert_eq!(a.balance(&guessed.account), support::api::dec("1.00"));

    // Login lockout: failures through both nodes count together.
    a.add_user(
        "officer",
        "correct horse battery",
        "investigator",
        &["DEMO"],
    );
    let login = |api: &Api, password: &str| {
        api.anonymous()
            .request(
                "POST",
                "/api/v1/auth/login",
                Some(json!({ "username": "officer", "password": password })),
            )
            .0
    };
    assert_eq!(login(&b, "correct horse battery"), 200);
    for api in [&a, &b, &a] {
        assert_eq!(login(api, "wrong"), 401);
    }
    assert_eq!(login(&b, "correct horse battery"), 401, "locked on node-b");
    assert_eq!(login(&a, "correct horse battery"), 401, "locked on node-a");

    a.assert_ledger_clean();
    drop(nodes);
    rt.block_on(db.cleanup());
}
