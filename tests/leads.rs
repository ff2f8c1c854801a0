//! Investigative leads and the keyword spotting queue, through the real router against
//! SQLite and PostgreSQL, on generated calls and PIN attempts whose right answers are
//! known: numbers several inmates call (per scope), numbers newly called by many, PIN
//! sharing (one PIN in two housing units within minutes; a failure for one inmate then a
//! success for another on one handset), each lead's sessions, the audit of every lead
//! opened; and the queue: privileged calls never queued, one claim per job, a lease
//! taken over, results written once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, TimeZone, Utc};
use sallyport::clock::Clock;
use sallyport::db::{to_micros, Backend};
use sallyport::keywords::{Hit, Party};
use sallyport::store::JobEnd;
use serde_json::{json, Value};
use support::inproc::{self, admin, ended_call, send, session, user, App, Call, Setup};

const ADMIN: &str = "test-admin-token";
const N1: &str = "+15550000001";
const N2: &str = "+15550000002";
const N3: &str = "+15550000003";
const N4: &str = "+15550000004";
const N5: &str = "+15550000005";
const CHICAGO: &str = "America/Chicago";
const NEW_YORK: &str = "America/New_York";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).app(backend).await
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

struct World {
    inmates: Vec<String>,
}

async fn call_at(
    app: &App,
    id: &str,
    fid: &str,
    inmate: &str,
    e164: &str,
    at: DateTime<Utc>,
    privileged: bool,
) {
    app.clock.set_wall(at);
    ended_call(
        app,
        Call {
            id,
            facility: fid,
            dialed: &e164[2..],
            e164,
            inmate: Some(inmate),
            reason: "callee_hangup",
            privileged,
        },
    )
    .await;
}

async fn sql(app: &App, q: &str, args: &[Value]) {
    let mut query = sqlx::query(q);
    for a in args {
        query = match a {
            Value::String(s) => query.bind(s.clone()),
            Value::Number(n) => query.bind(n.as_i64().unwrap()),
            Value::Null => query.bind(None::<String>),
            other => panic!("{other}"),
        };
    }
    query.execute(app.t.db.pool()).await.unwrap();
}

/// F1: inmates A B C D, handsets H1 (Unit A), H2 (Unit B), H3 (Unit A); F2: inmate E.
async fn world(app: &App) -> World {
    inproc::facility(app, "F1").await;
    inproc::facility(app, "F2").await;
    // F2 in another zone than F1's (Chicago): a lead across both shows each time in its own.
    let (s, v) = admin(
        app,
        "PATCH",
        "/api/v1/facilities/F2",
        Some(json!({ "time_zone": NEW_YORK })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut inmates = Vec::new();
    for (fid, b) in [
        ("F1", "A"),
        ("F1", "B"),
        ("F1", "C"),
        ("F1", "D"),
        ("F2", "E"),
    ] {
        let i = inproc::inmate(app, fid, b).await;
        inmates.push(i["id"].as_str().unwrap().to_string());
    }
    for (id, unit) in [("H1", "Unit A"), ("H2", "Unit B"), ("H3", "Unit A")] {
        sql(
            app,
            "INSERT INTO handsets (id, facility_id, name, location, created_at) VALUES ($1, 'F1', $2, $3, 0)",
            &[json!(id), json!(id), json!(unit)],
        )
        .await;
    }
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| inmates[i].clone());
    let days = |n: i64| now() - Duration::days(n);
    // N1: A (20 days ago), B (10), E in F2 (3): three inmates, two facilities; not new.
    call_at(app, "n1a", "F1", &a, N1, days(20), false).await;
    call_at(app, "n1b", "F1", &b, N1, days(10), false).await;
    call_at(app, "n1e", "F2", &e, N1, days(3), false).await;
    // N2: A alone, often.
    for i in 0..4 {
        call_at(
            app,
            &format!("n2a{i}"),
            "F1",
            &a,
            N2,
            days(5) + Duration::hours(i),
            false,
        )
        .await;
    }
    // N3: new two days ago, A B C within five hours.
    call_at(app, "n3a", "F1", &a, N3, days(2), false).await;
    call_at(
        app,
        "n3b",
        "F1",
        &b,
        N3,
        days(2) + Duration::hours(2),
        false,
    )
    .await;
    call_at(
        app,
        "n3c",
        "F1",
        &c,
        N3,
        days(2) + Duration::hours(5),
        false,
    )
    .await;
    // N4: an attorney: privileged calls never make a lead.
    for (i, who) in [&a, &b, &c].into_iter().enumerate() {
        call_at(app, &format!("n4{i}"), "F1", who, N4, days(4), true).await;
    }
    // N5: D 40 days ago (before the period), then B and C: two inmates in the period.
    call_at(app, "n5d", "F1", &d, N5, days(40), false).await;
    call_at(app, "n5b", "F1", &b, N5, days(6), false).await;
    call_at(app, "n5c", "F1", &c, N5, days(6), false).await;

    // PIN attempts, a day ago. A's PIN at H1 (Unit A) then H2 (Unit B) 5 minutes later.
    let t0 = days(1);
    let attempt = |h: &str, who: &str, outcome: &str, at: DateTime<Utc>| {
        vec![json!(h), json!(who), json!(outcome), json!(to_micros(at))]
    };
    let rows = [
        attempt("H1", &a, "valid", t0),
        attempt("H2", &a, "valid", t0 + Duration::minutes(5)),
        // B in H1 then H3: one housing unit, no lead.
        attempt("H1", &b, "valid", t0 + Duration::minutes(1)),
        attempt("H3", &b, "valid", t0 + Duration::minutes(3)),
        // At H3: C's ID with a wrong PIN twice, then D's succeeds.
        attempt("H3", &c, "wrong", t0 + Duration::minutes(30)),
        attempt("H3", &c, "wrong", t0 + Duration::minutes(31)),
        attempt("H3", &d, "valid", t0 + Duration::minutes(32)),
    ];
    for r in rows {
        sql(
            app,
            "INSERT INTO pin_attempts (facility_id, handset_id, inmate_id, success, remote_addr, at, outcome, target) \
             VALUES ('F1', $1, $2, CASE WHEN $3 = 'valid' THEN 1 ELSE 0 END, '10.0.0.1', $4, $3, $2)",
            &[r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()],
        )
        .await;
    }
    // The calls those attempts opened (A's two; D's one).
    for (id, who, h, at, number) in [
        ("pa1", &a, "H1", t0, "+15559990000"),
        ("pa2", &a, "H2", t0 + Duration::minutes(5), "+15559990000"),
        ("pd1", &d, "H3", t0 + Duration::minutes(32), "+15559990001"),
    ] {
        call_at(app, id, "F1", who, number, at, false).await;
        sql(
            app,
            "UPDATE sessions SET handset_id = $1 WHERE id = $2",
            &[json!(h), json!(id)],
        )
        .await;
    }
    app.clock.set_wall(now());
    World { inmates }
}

async fn get(app: &App, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    match token {
        Some(t) => send(app, "GET", path, Some(t), None).await,
        None => admin(app, "GET", path, None).await,
    }
}

fn numbers(v: &Value) -> Vec<(String, i64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["number"].as_str().unwrap().to_string(),
                n["inmates"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn audit(app: &App) -> Vec<Value> {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=500", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

async fn leads(app: App) {
    let w = world(&app).await;
    user(&app, "inv1", &["F1"]).await;
    user(&app, "inv2", &["F2"]).await;
    let (i1, i2) = (session(&app, "inv1").await, session(&app, "inv2").await);

    // Every facility (the administrator): N1 and N3 have three inmates each.
    let (s, all) = get(&app, None, "/api/v1/leads").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(
        numbers(&all["shared_numbers"]),
        vec![(N1.into(), 3), (N3.into(), 3)]
    );
    assert_eq!(all["shared_numbers"][0]["facilities"], 2);
    // N1's first call was A's in F1, its last E's in F2: each end in its own facility's
    // zone. N3's calls were all in F1.
    let ends = |v: &Value| (v["first_time_zone"].clone(), v["last_time_zone"].clone());
    assert_eq!(
        ends(&all["shared_numbers"][0]),
        (json!(CHICAGO), json!(NEW_YORK))
    );
    assert_eq!(
        ends(&all["shared_numbers"][1]),
        (json!(CHICAGO), json!(CHICAGO))
    );
    assert_eq!(
        ends(&all["new_numbers"][0]),
        (json!(CHICAGO), json!(CHICAGO))
    );
    assert_eq!(numbers(&all["new_numbers"]), vec![(N3.into(), 3)]);
    assert_eq!(all["period"]["min_inmates"], 3);
    // F1's investigator sees F1's calls only: N1 has two inmates there.
    let (_, f1) = get(&app, Some(&i1), "/api/v1/leads").await;
    assert_eq!(numbers(&f1["shared_numbers"]), vec![(N3.into(), 3)]);
    let (_, f1two) = get(&app, Some(&i1), "/api/v1/leads?min_inmates=2").await;
    assert_eq!(
        numbers(&f1two["shared_numbers"]),
        vec![(N3.into(), 3), (N1.into(), 2), (N5.into(), 2)]
    );
    // A short period: N3 only (two days ago), and nothing from N1's first call.
    let (_, recent) = get(&app, None, "/api/v1/leads?days=2&min_inmates=2").await;
    assert_eq!(numbers(&recent["shared_numbers"]), vec![(N3.into(), 3)]);

    // PIN sharing: exactly the two planted patterns, in F1.
    let pins = f1["pin_sharing"].as_array().unwrap();
    assert_eq!(pins.len(), 2, "{pins:?}");
    let across = &pins[0];
    assert_eq!(across["pattern"], "across_units");
    assert_eq!(across["inmate_id"], w.inmates[0].as_str());
    assert_eq!(across["housing_units"], json!(["Unit A", "Unit B"]));
    let failed = &pins[1];
    assert_eq!(failed["pattern"], "failed_then_other");
    assert_eq!(failed["inmate_id"], w.inmates[2].as_str());
    assert_eq!(failed["other_inmate_id"], w.inmates[3].as_str());
    assert_eq!(failed["attempt_ids"].as_array().unwrap().len(), 3);
    for p in pins {
        assert_eq!(
            (p["first_time_zone"].as_str(), p["last_time_zone"].as_str()),
            (Some(CHICAGO), Some(CHICAGO)),
            "{p}"
        );
    }
    // The inmates the PIN leads name, by name and booking number.
    for (i, booking) in [(0, "A"), (2, "C"), (3, "D")] {
        let p = &f1["people"][w.inmates[i].as_str()];
        assert_eq!(
            (p["name"].as_str(), p["booking_number"].as_str()),
            (Some("John Doe"), Some(booking)),
            "{f1}"
        );
    }
    let (_, f2) = get(&app, Some(&i2), "/api/v1/leads").await;
    assert_eq!(f2["pin_sharing"], json!([]));
    assert_eq!(f2["shared_numbers"], json!([]));

    // A number's graph: who called it, and the calls.
    let (s, g) = get(
        &app,
        None,
        &format!("/api/v1/leads/numbers/{}", "%2B15550000001"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let mut callers: Vec<&str> = g["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["inmate_id"].as_str().unwrap())
        .collect();
    callers.sort_unstable();
    let mut want = vec![
        w.inmates[0].as_str(),
        w.inmates[1].as_str(),
        w.inmates[4].as_str(),
    ];
    want.sort_unstable();
    assert_eq!(callers, want);
    let sessions: Vec<&str> = g["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(sessions, vec!["n1e", "n1b", "n1a"]);
    // Each session and each caller's calls carry their facility's zone, which the console
    // shows their times in: E's in F2 (New York), the others in F1 (Chicago).
    for x in g["sessions"].as_array().unwrap() {
        let zone = if x["id"] == "n1e" { NEW_YORK } else { CHICAGO };
        assert_eq!(x["time_zone"], zone, "{x}");
    }
    for c in g["callers"].as_array().unwrap() {
        let zone = if c["inmate_id"] == w.inmates[4].as_str() {
            NEW_YORK
        } else {
            CHICAGO
        };
        assert_eq!(c["first_time_zone"], zone, "{c}");
        assert_eq!(c["last_time_zone"], zone, "{c}");
    }
    // Within F1's scope, F2's caller is not shown.
    let (_, g1) = get(&app, Some(&i1), "/api/v1/leads/numbers/%2B15550000001").await;
    assert_eq!(g1["callers"].as_array().unwrap().len(), 2);
    assert_eq!(g1["sessions"].as_array().unwrap().len(), 2);
    // An attorney's number has no graph.
    let (_, g4) = get(&app, None, "/api/v1/leads/numbers/%2B15550000004").await;
    assert_eq!(g4["callers"], json!([]));

    // A PIN lead's calls; another facility's investigator cannot open it.
    let id = across["id"].as_str().unwrap();
    let (s, p) = get(&app, Some(&i1), &format!("/api/v1/leads/pin/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let ps: Vec<&str> = p["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ps, vec!["pa1", "pa2"]);
    assert_eq!(
        p["people"][w.inmates[0].as_str()]["booking_number"],
        "A",
        "{p}"
    );
    let fid = failed["id"].as_str().unwrap();
    let (_, pf) = get(&app, Some(&i1), &format!("/api/v1/leads/pin/{fid}")).await;
    let ps: Vec<&str> = pf["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ps, vec!["pd1"]);
    let (s, _) = get(&app, Some(&i2), &format!("/api/v1/leads/pin/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&app, Some(&i2), "/api/v1/leads?facility_id=F1").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = get(&app, Some(&i1), "/api/v1/leads?days=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Every list and every lead opened is audited, naming the sessions shown.
    let log = audit(&app).await;
    let opened: Vec<&Value> = log.iter().filter(|e| e["action"] == "lead.open").collect();
    assert!(
        opened.iter().any(|e| e["actor"] == "inv1"
            && e["target"] == id
            && e["detail"]["sessions"] == json!(["pa1", "pa2"])),
        "{opened:?}"
    );
    assert!(
        opened
            .iter()
            .any(|e| e["target"] == N1 && e["detail"]["sessions"] == json!(["n1e", "n1b", "n1a"])),
        "{opened:?}"
    );
    assert!(log
        .iter()
        .any(|e| e["action"] == "lead.list" && e["actor"] == "inv1"));
    app.t.cleanup().await;
}

/// A finished recording row for session `sid`.
async fn recording(app: &App, id: &str, sid: &str, fid: &str) {
    let at = to_micros(app.clock.wall());
    sql(
        app,
        "INSERT INTO recordings (id, session_id, facility_id, path, format, status, node_id, started_at, ended_at, duration_ms) \
         VALUES ($1, $2, $3, $4, 'wav-pcmu', 'complete', 'n1', $5, $5, 30000)",
        &[json!(id), json!(sid), json!(fid), json!(format!("2026/03/10/{sid}.wav")), json!(at)],
    )
    .await;
}

async fn queue(app: App) {
    inproc::facility(&app, "F1").await;
    inproc::facility(&app, "F2").await;
    let a = inproc::inmate(&app, "F1", "A").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    call_at(&app, "s1", "F1", &a, N1, now(), false).await;
    call_at(&app, "sp", "F1", &a, N4, now(), true).await;
    recording(&app, "r1", "s1", "F1").await;
    // A privileged session's recording (there is none in practice) is never queued.
    recording(&app, "rp", "sp", "F1").await;
    let store = &app.store;
    let since = now() - Duration::days(30);
    // A facility without watch words gets no jobs: nothing to look for.
    assert_eq!(store.queue_keyword_jobs(since).await.unwrap(), 0);
    sql(
        &app,
        "INSERT INTO watch_words (id, facility_id, word, created_at, created_by) \
         VALUES ('w1', 'F1', 'lawyer', $1, 'admin')",
        &[json!(to_micros(app.clock.wall()))],
    )
    .await;
    assert_eq!(store.queue_keyword_jobs(since).await.unwrap(), 1);
    assert_eq!(
        store.queue_keyword_jobs(since).await.unwrap(),
        0,
        "queued once"
    );
    assert_eq!(store.keyword_job_state("rp").await.unwrap(), None);
    let lease = 600 * 1_000_000;
    let job = store
        .claim_keyword_job("n1", lease, 3)
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(job.recording_id, "r1");
    assert!(!job.privileged);
    // Held: nobody else gets it.
    assert!(store
        .claim_keyword_job("n2", lease, 3)
        .await
        .unwrap()
        .is_none());
    // n1 stops; after the lease n2 takes it over, and n1's late result is dropped.
    app.clock.set_wall(now() + Duration::seconds(601));
    let again = store
        .claim_keyword_job("n2", lease, 3)
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!(again.attempts, 2);
    let hit = |party, word: &str, at| Hit {
        party,
        word: word.into(),
        offset_ms: at,
        end_ms: at + 400,
        score: -1500,
        confidence_milli: sallyport::keywords::confidence_milli(-1500),
    };
    let words = json!({ "spotted": ["package"], "unknown": [] });
    let late = store
        .finish_keyword_job(
            &job,
            "n1",
            JobEnd::Done,
            &words,
            &[hit(Party::Inmate, "package", 100)],
        )
        .await
        .unwrap();
    assert!(!late, "a claim that was taken over writes nothing");
    let hits = [
        hit(Party::Inmate, "package", 12_340),
        hit(Party::Called, "nobody", 15_000),
    ];
    assert!(store
        .finish_keyword_job(&again, "n2", JobEnd::Done, &words, &hits)
        .await
        .unwrap());
    assert_eq!(
        store.keyword_job_state("r1").await.unwrap().as_deref(),
        Some("done")
    );
    assert!(store
        .claim_keyword_job("n3", lease, 3)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.keyword_queue().await.unwrap().done, 1);

    // The alerts: F1's investigators, in recording order, each opened audited.
    user(&app, "inv1", &["F1"]).await;
    user(&app, "inv2", &["F2"]).await;
    let (i1, i2) = (session(&app, "inv1").await, session(&app, "inv2").await);
    let (s, v) = get(&app, Some(&i1), "/api/v1/keyword-alerts?session_id=s1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got: Vec<(String, String, i64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["party"].as_str().unwrap().into(),
                x["word"].as_str().unwrap().into(),
                x["offset_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("inmate".into(), "package".into(), 12_340),
            ("called".into(), "nobody".into(), 15_000)
        ]
    );
    assert_eq!(v[0]["number"], N1);
    assert_eq!(v[0]["inmate_id"], a.as_str());
    // The call's time comes with its facility's zone.
    assert_eq!(v[0]["time_zone"], "America/Chicago", "{v}");
    let (s, _) = get(&app, Some(&i2), "/api/v1/keyword-alerts?session_id=s1").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, none) = get(&app, Some(&i2), "/api/v1/keyword-alerts").await;
    assert_eq!(none, json!([]));
    let id = v[0]["id"].as_str().unwrap();
    let (s, one) = get(&app, Some(&i1), &format!("/api/v1/keyword-alerts/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{one}");
    let (s, _) = get(&app, Some(&i2), &format!("/api/v1/keyword-alerts/{id}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, leads) = get(&app, Some(&i1), "/api/v1/leads").await;
    assert_eq!(leads["keyword_alerts"].as_array().unwrap().len(), 2);
    // The alerts' inmate by name and booking number.
    assert_eq!(
        leads["people"][a.as_str()]["booking_number"],
        "A",
        "{leads}"
    );
    assert_eq!(leads["people"][a.as_str()]["name"], "John Doe", "{leads}");
    let log = audit(&app).await;
    assert!(log.iter().any(|e| e["action"] == "lead.open"
        && e["target"] == id
        && e["detail"]["sessions"] == json!(["s1"])
        && e["actor"] == "inv1"));
    assert!(log
        .iter()
        .any(|e| e["action"] == "keyword_alert.list" && e["target"] == "s1"));
    // The status says whether spotting can run here, and the queue.
    let (s, st) = get(&app, Some(&i1), "/api/v1/keywords/status").await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["queue"]["done"], 1);
    assert!(st["available"].is_boolean());
    app.t.cleanup().await;
}

battery!(leads, queue);
