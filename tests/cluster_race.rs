//! One account spent from two nodes at once, on PostgreSQL.
//!
//! Two real `sallyport serve` processes, node-a and node-b, on one PostgreSQL database.
//! Two inmates call the same family member's verified number, one through each node, at
//! the same time; with the facility's default payer order (`family_first`) both calls
//! are charged, increment by increment, to that family's one prepaid account. While both
//! calls bill, commissary purchases against the same account go through the HTTP API of
//! both nodes at once (a third path into the ledger), each purchase sent twice with one
//! idempotency key, once to each node.
//!
//! What must hold: the balance, sampled throughout, never goes below zero; nothing is
//! spent twice (one transaction per purchase key, whatever node answered; the account's
//! statement holds exactly the increments the two CDRs billed and the purchases that
//! succeeded, and they add up to what left the account); both calls are cut for funds
//! (`funds_exhausted`) once the money is gone, with less than one increment left; and the
//! ledger's invariant check is clean.
//!
//! Without PostgreSQL (`SALLYPORT_TEST_DATABASE_URL`) or sipp the test prints why and
//! passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use rust_decimal::Decimal;
use sallyport::db::testing::TestDb;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::api::{book, dec, money, three_second_increments, Api, FACILITY, NUMBER};
use support::gateway::Gateway;
use support::sipp::{self, Handset, Ports, Trunk, Via};
use support::Workdir;

const SECRET: &str = "cluster-secret-for-the-tests";
/// $0.05 a minute in 3-second increments.
const INCREMENT: &str = "0.0025";
/// What the family puts on its prepaid account.
const DEPOSIT: &str = "0.05";
/// Purchases posted while both calls bill, each of one increment's amount.
const PURCHASES: usize = 20;

/// Each purchase key's answers (status, body), from both nodes.
type Answers = BTreeMap<usize, Vec<(u16, Value)>>;

fn node(dir: &Workdir, ports: &Ports, url: &str, id: &str) -> Gateway {
    Gateway::start_with(dir, ports, &format!("gateway-{id}"), |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", url)
            .env("SALLYPORT_NODE_ID", id)
            .env("SALLYPORT_CLUSTER_SECRET", SECRET);
    })
}

/// The accepted call of `inmate`, waiting for it.
fn accepted_call_of(api: &Api, inmate: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let live = api.get("/api/v1/calls/active");
        let found = live.as_array().and_then(|a| {
            a.iter()
                .find(|c| c["inmate_id"] == inmate && !c["accepted_at"].is_null())
                .cloned()
        });
        if let Some(c) = found {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no accepted call of {inmate}: {live}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_account_spent_by_two_nodes_and_the_commissary_at_once() {
    if !sipp::present("two-node race test") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let url = db.postgres_url().expect("a PostgreSQL URL");
    let dir = Workdir::new("cluster_race", "shared_account");
    let ports = [sipp::ports(), sipp::ports()];
    let nodes = [
        node(&dir, &ports[0], &url, "node-a"),
        node(&dir, &ports[1], &url, "node-b"),
    ];
    let apis = [nodes[0].api.clone(), nodes[1].api.clone()];
    let api = &apis[0];
    three_second_increments(api);

    // Two inmates, each with the family member's number approved as a contact.
    let inmates = [
        book(api, "W-1", "1357", NUMBER, false),
        book(api, "W-2", "2468", NUMBER, false),
    ];
    let contacts: Vec<String> = inmates
        .iter()
        .map(|i| {
            api.get(&format!("/api/v1/inmates/{}/contacts", i.id))[0]["id"]
                .as_str()
                .expect("contact id")
                .to_string()
        })
        .collect();
    let token = api.post(
        "/api/v1/tokens",
        json!({ "username": "family-shared", "role": "family", "facilities": [FACILITY],
                "contacts": contacts }),
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    let family = api.as_token(&token);
    let prepaid = family.post("/api/v1/family/prepaid", json!({ "facility_id": FACILITY }))["id"]
        .as_str()
        .expect("account id")
        .to_string();
    let (s, v) = family.post_keyed(
        "/api/v1/family/deposits",
        "race-deposit",
        json!({ "account_id": prepaid, "amount": DEPOSIT, "depositor": "family",
            "card_number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123" }),
    );
    assert_eq!(s, 201, "deposit: {v}");
    assert_eq!(api.balance(&prepaid), dec(DEPOSIT));

    // A call on each node, both waiting for the node to cut them.
    let mut trunks = [
        Trunk::answer("1").spawn(&dir.join("a"), &ports[0]),
        Trunk::answer("1").spawn(&dir.join("b"), &ports[1]),
    ];
    let mut handsets = [
        Handset::new(&inmates[0].pin, Via::Info).spawn(&dir, 0, &ports[0], nodes[0].sip),
        Handset::new(&inmates[1].pin, Via::Info).spawn(&dir, 1, &ports[1], nodes[1].sip),
    ];
    let calls = [
        accepted_call_of(api, &inmates[0].id),
        accepted_call_of(api, &inmates[1].id),
    ];
    assert_eq!(calls[0]["node_id"], "node-a", "{}", calls[0]);
    assert_eq!(calls[1]["node_id"], "node-b", "{}", calls[1]);

    // The balance, sampled until the end: never below zero.
    let done = Arc::new(AtomicBool::new(false));
    let lowest = Arc::new(Mutex::new(dec(DEPOSIT)));
    let sampler = {
        let (api, done, lowest, prepaid) = (
            apis[1].clone(),
            done.clone(),
            lowest.clone(),
            prepaid.clone(),
        );
        std::thread::spawn(move || {
            let mut samples = 0u32;
            while !done.load(Ordering::Acquire) {
                let b = api.balance(&prepaid);
                let mut low = lowest.lock().unwrap();
                if b < *low {
                    *low = b;
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };

    // Both calls billing, each increment of one racing the other's for the account:
    // six increments debited before the commissary joins in.
    let deadline = Instant::now() + Duration::from_secs(40);
    while api.balance(&prepaid) > dec(DEPOSIT) - dec(INCREMENT) * Decimal::from(6) {
        assert!(Instant::now() < deadline, "the calls never billed");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The commissary: every purchase sent to both nodes at once with one key.
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let posters: Vec<_> = (0..PURCHASES)
        .flat_map(|k| [(k, 0usize), (k, 1usize)])
        .map(|(k, n)| {
            let (api, answers, prepaid) = (apis[n].clone(), answers.clone(), prepaid.clone());
            std::thread::spawn(move || {
                let (s, v) = api.post_keyed(
                    &format!("/api/v1/accounts/{prepaid}/purchases"),
                    &format!("race-purchase-{k}"),
                    json!({ "amount": INCREMENT, "reference": format!("order-{k}") }),
                );
                answers.lock().unwrap().entry(k).or_default().push((s, v));
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }

    // Both calls go on until the money is gone, then both are cut.
    for h in &mut handsets {
        h.expect_ok(Duration::from_secs(120));
    }
    for t in &mut trunks {
        t.expect_ok(Duration::from_secs(60));
    }
    done.store(true, Ordering::Release);
    let samples = sampler.join().unwrap();
    let lowest = *lowest.lock().unwrap();
    assert!(lowest >= Decimal::ZERO, "the balance went to {lowest}");
    assert!(samples > 10, "{samples} samples");

    // One transaction per purchase key, whichever node answered; refusals only for funds
    // (or a duplicate still in flight on the other node).
    let answers = answers.lock().unwrap();
    let mut bought = 0usize;
    for (k, replies) in answers.iter() {
        let ids: Vec<i64> = replies
            .iter()
            .filter(|(s, _)| (200..300).contains(s))
            .map(|(_, v)| v["transaction_id"].as_i64().expect("a receipt"))
            .collect();
        for (s, v) in replies {
            assert!(
                (200..300).contains(s)
                    || (*s == 422 && v["error"]["code"] == "insufficient_funds")
                    || *s == 409,
                "purchase {k}: {s} {v}"
            );
        }
        if let Some(first) = ids.first() {
            assert!(
                ids.iter().all(|i| i == first),
                "purchase {k} twice: {replies:?}"
            );
            bought += 1;
        }
    }
    assert!(bought >= 1, "no purchase went through: {answers:?}");

    let cdrs: Vec<Value> = calls
        .iter()
        .map(|c| api.get(&format!("/api/v1/calls/{}", c["id"].as_str().unwrap())))
        .collect();
    let mut billed = 0i64;
    let mut charged = Decimal::ZERO;
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "funds_exhausted", "{cdr}");
        assert!(cdr["billed_increments"].as_i64().unwrap() >= 2, "{cdr}");
        assert_eq!(cdr["payer"], "family", "{cdr}");
        assert_eq!(cdr["account_id"], prepaid.as_str(), "{cdr}");
        billed += cdr["billed_increments"].as_i64().unwrap();
        charged += money(&cdr["amount"]);
    }
    let statement = api.get(&format!("/api/v1/accounts/{prepaid}/statement"));
    let lines = statement["lines"].as_array().unwrap();
    let count = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    assert_eq!(count("call_charge") as i64, billed, "{statement}");
    assert_eq!(count("purchase"), bought, "{statement}");
    let spent = charged + dec(INCREMENT) * Decimal::from(bought as u64);
    let left = api.balance(&prepaid);
    assert_eq!(left, dec(DEPOSIT) - spent, "{statement}");
    assert!(
        left >= Decimal::ZERO && left < dec(INCREMENT),
        "the calls were cut with {left} left"
    );
    api.assert_ledger_clean();
    eprintln!(
        "two calls billed {billed} increments ({charged}), {bought} of {PURCHASES} purchases \
         went through, {left} left, lowest balance sampled {lowest} ({samples} samples)"
    );
    drop(nodes);
    rt.block_on(db.cleanup());
}
