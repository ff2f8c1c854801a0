//! Live calls reached from any node (issue 10): terminate, listen, unlisten and release
//! sent to one node reach the node that carries the call ([`sallyport::cluster`]).
//!
//! - Two real `sallyport serve` processes, node-a and node-b, on one PostgreSQL database:
//!   a sipp call carried by node-a is listened to through node-b's API (a str0m peer in
//!   this test plays the browser: the SDP answer carries node-a's media address, not
//!   node-b's, and ICE, DTLS and the call's audio arrive from node-a), the listener is
//!   stopped through node-b, then the call is terminated through node-b (CDR
//!   `terminated`, BYE to both legs), and its recording (made by node-a, on the
//!   recordings directory the nodes share) is played through node-b, with a ticket
//!   node-a honours too; a second call is ended by releasing its inmate
//!   through node-b (`released`). Each action is audited once, naming node-a.
//! - In process: a node that is dead (silent for `cluster.dead_after_secs`) is taken over
//!   by the node a request reached, which answers 409 `call_ended`; a node that never
//!   registered is a 503 `node_unknown`, one that refuses
//!   connections or never answers a 502 `node_unreachable` within the timeout, one keyed
//!   with another secret a 502 `node_refused`, each naming the node; the internal routes
//!   refuse a missing, foreign, expired or replayed-elsewhere credential, and act only on
//!   calls they carry (never forwarding again).
//!
//! Without PostgreSQL (`SALLYPORT_TEST_DATABASE_URL`) or sipp the two-node test prints
//! why and passes, unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use sallyport::api::{router, AppState};
use sallyport::clock::Clock;
use sallyport::cluster::token;
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::api::{book, fund, Api, NUMBER};
use support::gateway::Gateway;
use support::inproc::{self, err_code, issue, send, App, Setup};
use support::sipp::{self, Handset, Ports, Tone, Trunk, Via};
use support::Workdir;

const ADMIN: &str = "cluster-tests-admin-token";
const SECRET: &str = "cluster-secret-for-the-tests";

// ---- in process: what a node answers when the carrying node cannot be reached ----------

/// An error answer: its status, its code, and a message that says `says`.
fn assert_error(s: StatusCode, v: &Value, status: StatusCode, code: &str, says: &str) {
    assert_eq!((s, err_code(v)), (status, code), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{v}");
}

/// The App is node-1; calls `live` and `live2` (F1, accepted) are carried by node n1.
async fn app_with(config: fn(&mut Config)) -> App {
    let app = Setup::new(ADMIN)
        .config(config)
        .app(Backend::Sqlite)
        .await
        .expect("sqlite");
    inproc::facility(&app, "F1").await;
    inproc::live_call(&app, "live", "F1", true, false).await;
    app
}

fn one_second(c: &mut Config) {
    c.cluster.secret = SECRET.into();
    c.cluster.forward_timeout_secs = 1;
}

/// Actions audited so far, oldest first.
async fn audited(app: &App) -> Vec<String> {
    let (s, v) = send(app, "GET", "/api/v1/audit?limit=100", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    out.reverse();
    out
}

/// POST terminate and listen, DELETE listen on call `live`: each answer.
async fn all_three(app: &App, token: &str) -> Vec<(StatusCode, Value)> {
    let offer = json!({ "sdp": "v=0\r\n", "type": "offer" });
    vec![
        send(
            app,
            "POST",
            "/api/v1/calls/live/terminate",
            Some(token),
            None,
        )
        .await,
        send(
            app,
            "POST",
            "/api/v1/calls/live/listen",
            Some(token),
            Some(offer),
        )
        .await,
        send(
            app,
            "DELETE",
            "/api/v1/calls/live/listen/lsn_1",
            Some(token),
            None,
        )
        .await,
    ]
}

#[tokio::test]
async fn a_node_that_cannot_be_reached_is_named_in_a_502_or_503() {
    let app = app_with(one_second).await;
    let inv = issue(&app, "inv", "investigator", &["F1"], None).await;

    // Never registered: 503 node_unknown.
    for (s, v) in all_three(&app, &inv).await {
        assert_eq!(
            (s, err_code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "node_unknown"),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains("node n1"),
            "{v}"
        );
    }

    // Registered at a port nobody listens on: 502 node_unreachable, at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    app.store.register_node("n1", &url).await.unwrap();
    let t0 = Instant::now();
    for (s, v) in all_three(&app, &inv).await {
        assert_eq!(
            (s, err_code(&v)),
            (StatusCode::BAD_GATEWAY, "node_unreachable"),
            "{v}"
        );
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("node n1") && m.contains(&url), "{v}");
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // Registered at a listener that accepts and never answers: 502 after the timeout
    // (cluster.forward_timeout_secs = 1), never a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            open.push(c);
        }
    });
    app.store.register_node("n1", &url).await.unwrap();
    for (s, v) in all_three(&app, &inv).await {
        assert_eq!(
            (s, err_code(&v)),
            (StatusCode::BAD_GATEWAY, "node_unreachable"),
            "{v}"
        );
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("node n1") && m.contains("no answer within 1"),
            "{v}"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());

    // A release still releases: the call is left to its node (the closed account ends
    // it at its next increment), and says so.
    let inmate = inproc::inmate(&app, "F1", "B-1").await;
    let iid = inmate["id"].as_str().unwrap();
    let db = &app.t.db;
    sqlx::query("UPDATE sessions SET inmate_id = $1 WHERE id = 'live'")
        .bind(iid)
        .execute(db.pool())
        .await
        .unwrap();
    let (s, _, body) = inproc::fetch(
        &app,
        axum::http::Request::builder()
            .method("POST")
            .uri(format!("/api/v1/inmates/{iid}/release"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("idempotency-key", "rel-1")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    let v = inproc::json_of(&body);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["ended_calls"].clone(), v["calls_elsewhere"].clone()),
        (json!([]), json!(["live"])),
        "{v}"
    );
    held.abort();

    // Nothing reached a call: nothing was audited as done.
    let actions = audited(&app).await;
    for done in ["call.terminate", "call.listen", "call.unlisten"] {
        assert!(!actions.iter().any(|a| a == done), "{actions:?}");
    }
    app.t.cleanup().await;
}

/// Issue 13: a request about a call whose node is dead (silent for
/// `cluster.dead_after_secs`) is not forwarded into the void: the node it reached takes
/// the dead node over there and then and answers as for an ended call; the session is
/// closed `system` and the takeover audited once, whichever route asked.
#[tokio::test]
async fn a_request_for_a_dead_nodes_call_closes_it_and_answers_call_ended() {
    let app = app_with(one_second).await;
    let inv = issue(&app, "inv", "investigator", &["F1"], None).await;
    // n1 registered at an address nobody answers, then fell silent for 31 s.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    app.store.register_node("n1", &url).await.unwrap();
    app.clock.advance(Duration::from_secs(31));
    let answers = all_three(&app, &inv).await;
    // The terminate finds n1 dead and closes its call; the listen then finds it ended.
    let (s, v) = &answers[0];
    assert_error(*s, v, StatusCode::CONFLICT, "call_ended", "node n1 is dead");
    let (s, v) = &answers[1];
    assert_error(*s, v, StatusCode::CONFLICT, "call_ended", "already ended");
    let (s, v) = send(&app, "GET", "/api/v1/calls/live", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["end_reason"].as_str()),
        (Some("ended"), Some("system")),
        "{v}"
    );
    let actions = audited(&app).await;
    let takeovers = actions.iter().filter(|a| *a == "session.takeover").count();
    assert_eq!(takeovers, 1, "{actions:?}");
    assert!(
        !actions.iter().any(|a| a == "call.terminate"),
        "{actions:?}"
    );
    app.t.cleanup().await;
}

/// node-1 (the App) forwards to node n1: a second router on the same database, served over
/// TCP without a SIP side (so it carries no call), keyed with `secret`.
async fn serve_n1(app: &App, secret: &str) -> tokio::task::JoinHandle<()> {
    let mut config = Config::default();
    config.node.id = "n1".into();
    config.security.pin_pepper = inproc::PEPPER.into();
    config.cluster.secret = secret.into();
    let n1 = router(AppState::new(app.store.clone(), Arc::new(config)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    app.store.register_node("n1", &url).await.unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, n1).await;
    })
}

#[tokio::test]
async fn a_forwarded_request_is_answered_by_the_carrying_node_and_relayed() {
    let app = app_with(one_second).await;
    inproc::facility(&app, "F2").await;
    let inv = issue(&app, "inv", "investigator", &["F1"], None).await;

    // Same secret: n1 accepts the credential, finds no such live call (it carries none)
    // and answers as the node that carries the call would: relayed as it came.
    let n1 = serve_n1(&app, SECRET).await;
    let answers = all_three(&app, &inv).await;
    for (s, v) in &answers[..2] {
        assert_error(
            *s,
            v,
            StatusCode::CONFLICT,
            "call_ended",
            "not live on node n1",
        );
    }
    let (s, v) = &answers[2];
    assert_error(*s, v, StatusCode::NOT_FOUND, "not_found", "on node n1");
    // The caller is still checked where the request arrives: another facility's
    // investigator never gets as far as forwarding.
    let other = issue(&app, "inv-f2", "investigator", &["F2"], None).await;
    for (s, v) in all_three(&app, &other).await {
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    n1.abort();

    // Another secret there: n1 refuses the credential.
    let n1 = serve_n1(&app, "another-secret-for-the-tests").await;
    for (s, v) in all_three(&app, &inv).await {
        assert_eq!(
            (s, err_code(&v)),
            (StatusCode::BAD_GATEWAY, "node_refused"),
            "{v}"
        );
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("node n1") && m.contains("cluster.secret"), "{v}");
    }
    n1.abort();
    app.t.cleanup().await;
}

/// A forwarded request to the App (node-1) with `credential` (or none) and `body`.
async fn internal(
    app: &App,
    method: &str,
    path: &str,
    credential: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if let Some(c) = credential {
        req = req.header(token::HEADER, c);
    }
    let req = req
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let (s, _, bytes) = inproc::fetch(app, req).await;
    (s, inproc::json_of(&bytes))
}

#[tokio::test]
async fn the_internal_routes_take_only_a_credential_for_that_request() {
    let app = app_with(one_second).await;
    // n1 is registered at a silent address: a request that were forwarded again would
    // take the 1 s timeout and answer 502; an internal route never forwards.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    app.store.register_node("n1", &url).await.unwrap();
    let key = token::derive_key(SECRET);
    let now = app.clock.wall().timestamp();
    let path = "/api/v1/cluster/calls/live/terminate";
    let made = |key: &[u8], to: &str, path: &str, body: &str, at: i64| {
        let r = token::Request {
            from: "n2",
            to,
            method: "POST",
            path,
            body: body.as_bytes(),
        };
        token::issue(key, &r, at)
    };
    let good = made(&key, "node-1", path, "", now);
    let unauthorized = |(s, v): (StatusCode, Value)| {
        assert_eq!(
            (s, err_code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{v}"
        );
        v["error"]["message"].as_str().unwrap().to_string()
    };
    // No credential; a bearer token is no use either.
    let m = unauthorized(internal(&app, "POST", path, None, "").await);
    assert!(m.contains(token::HEADER), "{m}");
    let (s, _) = send(&app, "POST", path, Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Another secret, another node, another call, another body, expired.
    let foreign = made(
        &token::derive_key("another-secret-for-the-tests"),
        "node-1",
        path,
        "",
        now,
    );
    assert!(
        unauthorized(internal(&app, "POST", path, Some(&foreign), "").await).contains("secret")
    );
    let elsewhere = made(&key, "node-2", path, "", now);
    assert!(
        unauthorized(internal(&app, "POST", path, Some(&elsewhere), "").await)
            .contains("another request")
    );
    let other_call = "/api/v1/cluster/calls/live2/terminate";
    assert!(
        unauthorized(internal(&app, "POST", other_call, Some(&good), "").await)
            .contains("another request")
    );
    assert!(
        unauthorized(internal(&app, "POST", path, Some(&good), "{}").await)
            .contains("another request")
    );
    let old = made(&key, "node-1", path, "", now - token::VALIDITY_SECS - 1);
    assert!(unauthorized(internal(&app, "POST", path, Some(&old), "").await).contains("expired"));
    // The right credential: node-1 acts only on calls it carries (none: no SIP side
    // here), and answers at once instead of forwarding to n1.
    let t0 = Instant::now();
    let (s, v) = internal(&app, "POST", path, Some(&good), "").await;
    assert_eq!(
        (s, err_code(&v)),
        (StatusCode::CONFLICT, "call_ended"),
        "{v}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    let listen = "/api/v1/cluster/calls/live/listen";
    let offer = json!({ "sdp": "v=0\r\n", "type": "offer" }).to_string();
    let c = made(&key, "node-1", listen, &offer, now);
    let (s, v) = internal(&app, "POST", listen, Some(&c), &offer).await;
    assert_eq!(
        (s, err_code(&v)),
        (StatusCode::CONFLICT, "call_ended"),
        "{v}"
    );
    drop(silent);
    app.t.cleanup().await;
}

// ---- two real nodes on one PostgreSQL ---------------------------------------------------

/// Starts node `id` on the database at `url`, its RTP (and live listeners) on `ip`.
fn node(dir: &Workdir, ports: &Ports, url: &str, id: &str, ip: &str) -> Gateway {
    let log = format!("gateway-{id}");
    Gateway::start_with(dir, ports, &log, |cmd| {
        cmd.env("SALLYPORT_DATABASE_URL", url)
            .env("SALLYPORT_NODE_ID", id)
            .env("SALLYPORT_CLUSTER_SECRET", SECRET)
            .env("SALLYPORT_RTP_ADVERTISED_IP", ip)
            .env("SALLYPORT_RTP_LISTEN_IP", ip);
    })
}

/// A browser's part, played by str0m: an offer of two recvonly audio m-lines, the
/// answer applied, then ICE (to the candidate of the answer), DTLS and media over a real
/// UDP socket until `frames` audio frames arrived.
struct Listener {
    rtc: str0m::Rtc,
    pending: Option<str0m::change::SdpPendingOffer>,
    socket: UdpSocket,
    local: SocketAddr,
}

impl Listener {
    fn offer() -> (Listener, String) {
        use str0m::media::{Direction, MediaKind};
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = str0m::Rtc::builder()
            .clear_codecs()
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(str0m::Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let l = Listener {
            rtc,
            pending: Some(pending),
            socket,
            local,
        };
        (l, offer.to_sdp_string())
    }

    /// Applies `answer` and runs until connected with `frames` audio frames received.
    fn hear(&mut self, answer: &str, frames: usize) {
        use str0m::net::{Protocol, Receive};
        use str0m::{Event, Input, Output};
        let answer = str0m::change::SdpAnswer::from_sdp_string(answer).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut connected, mut got) = (false, 0);
        let mut buf = vec![0u8; 2000];
        loop {
            let until = match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => t,
                Output::Transmit(t) => {
                    self.socket.send_to(&t.contents, t.destination).unwrap();
                    continue;
                }
                Output::Event(Event::Connected) => {
                    connected = true;
                    continue;
                }
                Output::Event(Event::MediaData(_)) => {
                    got += 1;
                    continue;
                }
                Output::Event(_) => continue,
            };
            if connected && got >= frames {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "listening through the other node: connected {connected}, {got} frames"
            );
            let wait = until
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            let input = match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents: buf[..n].try_into().unwrap(),
                    },
                ),
                Err(_) => Input::Timeout(Instant::now()),
            };
            self.rtc.handle_input(input).unwrap();
        }
    }
}

/// The audit entries of `action` on `target`.
fn audit_of(api: &Api, action: &str, target: &str) -> Vec<Value> {
    let v = api.get("/api/v1/audit?limit=200");
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action && e["target"] == target)
        .cloned()
        .collect()
}

fn wait_for_metric(api: &Api, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.metric(name) != want {
        assert!(
            Instant::now() < deadline,
            "{name} on {} is not {want}",
            api.addr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_call_on_one_node_is_listened_to_terminated_and_released_through_another() {
    if !sipp::present("two-node cluster test") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let url = db.postgres_url().expect("a PostgreSQL URL");
    let dir = Workdir::new("cluster", "two_nodes");
    let (pa, pb) = (sipp::ports(), sipp::ports());
    let a = node(&dir, &pa, &url, "node-a", "127.0.0.1");
    let b = node(&dir, &pb, &url, "node-b", "127.0.0.2");
    let (api_a, api_b) = (a.api.clone(), b.api.clone());

    // Both registered, each with the address its API is bound to.
    let nodes: Vec<(String, String)> = rt.block_on(async {
        sqlx::query_as("SELECT id, api_url FROM nodes ORDER BY id")
            .fetch_all(db.db.pool())
            .await
            .unwrap()
    });
    assert_eq!(
        nodes,
        vec![
            ("node-a".to_string(), a.base_url()),
            ("node-b".to_string(), b.base_url())
        ]
    );

    // A call through node-a; both parties speak.
    let inmate = book(&api_a, "C-1", "1357", NUMBER, false);
    fund(&api_a, &inmate, "20.00");
    let mut trunk = Trunk::answer("1")
        .speaking(Tone::steady(600.0, 40))
        .spawn(&dir, &pa);
    let mut handset = Handset::new(&inmate.pin, Via::Rtp)
        .speaking(Tone::steady(400.0, 40))
        .spawn(&dir, 0, &pa, a.sip);
    let id = api_b.accepted_call(Duration::from_secs(40));
    assert_eq!(
        api_b.get(&format!("/api/v1/calls/{id}"))["node_id"],
        "node-a"
    );

    // Listen through node-b: node-a answers with its own media address and sends the
    // call's audio; node-b opens nothing.
    let (mut listener, offer) = Listener::offer();
    let (s, v) = api_b.request(
        "POST",
        &format!("/api/v1/calls/{id}/listen"),
        Some(json!({ "sdp": offer, "type": "offer" })),
    );
    assert_eq!(s, 201, "{v}");
    let answer = v["sdp"].as_str().unwrap();
    assert!(
        answer.contains("a=candidate:") && answer.contains(" 127.0.0.1 "),
        "{answer}"
    );
    assert!(!answer.contains("127.0.0.2"), "node-b's address: {answer}");
    assert_eq!(api_a.metric("sallyport_listeners_open"), 1);
    assert_eq!(api_b.metric("sallyport_listeners_open"), 0);
    listener.hear(answer, 50);
    let listener_id = v["listener_id"].as_str().unwrap().to_string();

    // Stop it through node-b.
    let (s, v) = api_b.request(
        "DELETE",
        &format!("/api/v1/calls/{id}/listen/{listener_id}"),
        None,
    );
    assert_eq!(s, 204, "{v}");
    wait_for_metric(&api_a, "sallyport_listeners_open", 0);

    // Terminate through node-b: node-a ends the call, both legs get BYE.
    let (s, cdr) = api_b.request("POST", &format!("/api/v1/calls/{id}/terminate"), None);
    assert_eq!(s, 200, "{cdr}");
    assert_eq!(
        (cdr["state"].as_str(), cdr["end_reason"].as_str()),
        (Some("ended"), Some("terminated")),
        "{cdr}"
    );
    trunk.expect_ok(Duration::from_secs(20));
    handset.expect_ok(Duration::from_secs(20));
    assert_eq!(trunk.count_requests("BYE"), 1, "the trunk leg got its BYE");
    let (s, v) = api_b.request("POST", &format!("/api/v1/calls/{id}/terminate"), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("call_ended")),
        "{v}"
    );

    // Its recording, made by node-a, played through node-b (the nodes share
    // recording.dir, as a cluster must): a ticket from node-b plays on node-b and on
    // node-a alike, the whole file.
    let rec_id = cdr["recording_id"]
        .as_str()
        .expect("a recorded call")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let rec = api_b.get(&format!("/api/v1/recordings/{rec_id}"));
        if !rec["bytes"].is_null() {
            break rec;
        }
        assert!(Instant::now() < deadline, "never finished: {rec}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rec["node_id"], "node-a", "{rec}");
    let ticket = api_b.post(&format!("/api/v1/recordings/{rec_id}/play"), json!({}));
    let url = ticket["url"].as_str().expect("a playback URL");
    for api in [&api_b, &api_a] {
        let (s, head, _) = api.anonymous().send("GET", url, None, &[]);
        assert_eq!(s, 200, "{head}");
        assert!(head.contains("content-type: audio/wav"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", rec["bytes"])),
            "{head} {rec}"
        );
    }

    // Audited once each, by node-b (where the caller was), naming node-a.
    for action in ["call.listen", "call.unlisten", "call.terminate"] {
        let entries = audit_of(&api_b, action, &id);
        assert_eq!(entries.len(), 1, "{action}: {entries:?}");
        assert_eq!(entries[0]["detail"]["node"], "node-a", "{entries:?}");
    }

    // Release a second inmate, on a call through node-a, through node-b.
    let second = book(&api_a, "C-2", "2468", NUMBER, false);
    fund(&api_a, &second, "20.00");
    let mut trunk = Trunk::answer("1").spawn(&dir, &pa);
    let mut handset = Handset::new(&second.pin, Via::Info).spawn(&dir, 1, &pa, a.sip);
    let id2 = api_b.accepted_call(Duration::from_secs(40));
    assert_ne!(id2, id);
    // Let both scenarios reach their wait for BYE (past their key presses).
    std::thread::sleep(Duration::from_secs(4));
    let (s, _, v) = api_b.send(
        "POST",
        &format!("/api/v1/inmates/{}/release", second.id),
        None,
        &[("Idempotency-Key", "release-c2")],
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["ended_calls"].clone(), v["calls_elsewhere"].clone()),
        (json!([id2]), json!([])),
        "{v}"
    );
    let cdr = api_b.get(&format!("/api/v1/calls/{id2}"));
    assert_eq!(
        (cdr["state"].as_str(), cdr["end_reason"].as_str()),
        (Some("ended"), Some("released")),
        "{cdr}"
    );
    trunk.expect_ok(Duration::from_secs(20));
    handset.expect_ok(Duration::from_secs(20));

    drop((a, b));
    rt.block_on(db.cleanup());
}
