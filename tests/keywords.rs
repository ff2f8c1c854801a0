//! Spoken keyword alerts through the real call path: sipp handsets and trunk play
//! espeak-ng speech (converted by ffmpeg to 8 kHz G.711 at test time) into the RTP of a
//! real call through `sallyport serve`; the recording is spotted by PocketSphinx after
//! the call, and the alert must name the side that said the word and its moment in the
//! recording within a second. On SQLite and on PostgreSQL.
//!
//! `leads_page_follows_a_lead_to_the_moment_a_word_was_said`: Chromium (chromedriver) on
//! the console: the leads page (axe-core), a shared number's lead to its sessions, and a
//! watch word's alert to the session page, whose player starts at that moment.
//!
//! `keyword_spotting_recall` (ignored: about ten minutes) places twenty-four such calls,
//! two voices, some with no watch word at all, and prints recall and false alarms: the
//! figures in `docs/behaviour.md`. Run it with
//! `cargo test --test keywords -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use sallyport::db::testing::{skip_or_fail, TestDb};
use sallyport::keywords::{availability, KeywordConfig};
use sallyport::media::g711::Law;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::api::{book, fund, Api, FACILITY};
use support::axe;
use support::gateway::Gateway;
use support::sipp::{self, Handset, Ports, Trunk, Via};
use support::webdriver::{self, Browser};
use support::Workdir;

/// Silence the handset sends after its PIN before speaking: the call is accepted by then.
const HANDSET_LEAD_MS: usize = 5000;

/// Whether espeak-ng, ffmpeg, sipp and PocketSphinx are all here (else skipped, or failed
/// under SALLYPORT_REQUIRE_EXTERNAL=1).
fn tools_present(what: &str) -> bool {
    for tool in ["espeak-ng", "ffmpeg"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            skip_or_fail(&format!("{tool} is not installed: {what} skipped"));
            return false;
        }
    }
    if let Err(e) = availability(&KeywordConfig::default()) {
        skip_or_fail(&format!("{e}: {what} skipped"));
        return false;
    }
    sipp::present(what)
}

/// `text` said by espeak-ng `voice`, as 8 kHz µ-law (ffmpeg).
fn speak(dir: &Path, name: &str, voice: &str, text: &str) -> Vec<u8> {
    let wav = dir.join(format!("{name}.wav"));
    let ulaw = dir.join(format!("{name}.ulaw"));
    let st = Command::new("espeak-ng")
        .args(["-v", voice, "-w"])
        .arg(&wav)
        .arg(text)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "espeak-ng {voice} {text:?}");
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&wav)
        .args(["-ar", "8000", "-ac", "1", "-f", "mulaw"])
        .arg(&ulaw)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg {}", wav.display());
    std::fs::read(&ulaw).unwrap()
}

fn pcm(codes: &[u8]) -> Vec<i16> {
    codes.iter().map(|&b| Law::Ulaw.decode(b)).collect()
}

/// The sentence `parts` said as one by espeak-ng `voice` (8 kHz µ-law), and where each
/// part begins, in ms from the sentence's first sound: part i begins where the words
/// before it, said alone, end (within a syllable).
fn say(dir: &Path, name: &str, voice: &str, parts: &[&str]) -> (Vec<u8>, Vec<usize>) {
    let codes = speak(dir, name, voice, &parts.join(" "));
    let mut starts = vec![0];
    for i in 1..parts.len() {
        let before = speak(dir, &format!("{name}-{i}"), voice, &parts[..i].join(" "));
        let p = pcm(&before);
        let (on, off) = (onset_ms(&p).unwrap_or(0), end_ms(&p).unwrap_or(0));
        starts.push(off.saturating_sub(on));
    }
    (codes, starts)
}

/// Where the last 20 ms window of `pcm` loud enough to be speech ends, in ms.
fn end_ms(pcm: &[i16]) -> Option<usize> {
    pcm.chunks(160).rposition(loud).map(|i| (i + 1) * 20)
}

fn loud(w: &[i16]) -> bool {
    let e: f64 = w.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / w.len() as f64;
    e.sqrt() > 300.0
}

/// The first 20 ms window of `pcm` (8 kHz) loud enough to be speech, in ms.
fn onset_ms(pcm: &[i16]) -> Option<usize> {
    pcm.chunks(160).position(loud).map(|i| i * 20)
}

/// A call's speech on one side: the words said and where (ms into the speech).
struct Side {
    codes: &'static [u8],
    /// (word, ms from the speech's first sound to the word's).
    words: Vec<(String, i64)>,
}

/// `parts` said by `voice`; `words` are the parts (by index) that are watch words.
fn side(
    dir: &Path,
    name: &str,
    voice: &str,
    parts: &[&str],
    words: &[usize],
    lead_ms: usize,
) -> Side {
    let (codes, starts) = say(dir, name, voice, parts);
    let mut all = vec![Law::Ulaw.silence(); lead_ms * 8];
    all.extend_from_slice(&codes);
    Side {
        codes: Box::leak(all.into_boxed_slice()),
        words: words
            .iter()
            .map(|&i| (parts[i].to_string(), starts[i] as i64))
            .collect(),
    }
}

fn gateway(dir: &Path, ports: &Ports, db_url: Option<&str>) -> Gateway {
    Gateway::start_with(dir, ports, "gateway", |cmd| {
        cmd.env("SALLYPORT_KEYWORDS_POLL_INTERVAL_SECS", "1");
        if let Some(url) = db_url {
            cmd.env("SALLYPORT_DATABASE_URL", url);
        }
    })
}

/// Inserts the facility's watch words directly (their API is another module's).
fn watch(rt: &tokio::runtime::Runtime, db_url: &str, words: &[&str]) {
    rt.block_on(async {
        let db = sallyport::db::Db::connect(db_url, 2).await.unwrap();
        for (i, w) in words.iter().enumerate() {
            sqlx::query(
                "INSERT INTO watch_words (id, facility_id, word, created_at, created_by) \
                 VALUES ($1, $2, $3, 0, 'test')",
            )
            .bind(format!("ww_{i}"))
            .bind(FACILITY)
            .bind(*w)
            .execute(db.pool())
            .await
            .unwrap();
        }
        db.close().await;
    });
}

/// The call both end-to-end tests place: the inmate says "lawyer" and the called party
/// (another voice) "nobody", each inside the same sentence.
fn lawyer_and_nobody(dir: &Path) -> (Side, Side) {
    let said = side(
        dir,
        "inmate",
        "en-us",
        &[
            "okay so listen, the",
            "lawyer",
            "is what we talked about last week",
        ],
        &[1],
        HANDSET_LEAD_MS,
    );
    let heard = side(
        dir,
        "called",
        "en-us+f3",
        &[
            "okay so listen, the",
            "nobody",
            "is what we talked about last week",
        ],
        &[1],
        0,
    );
    (said, heard)
}

/// One call: the handset says `inmate`, the called party `called`; returns the session.
fn call(
    dir: &Path,
    ports: &Ports,
    gw: &Gateway,
    pin: &str,
    inmate: &Side,
    called: &Side,
) -> String {
    let speech_ms = (inmate.codes.len() / 8).max(called.codes.len() / 8 + 3000) as u32;
    let mut trunk = Trunk::answer("1").saying(called.codes).spawn(dir, ports);
    let mut hs = Handset::new(pin, Via::Rtp)
        .saying(inmate.codes)
        .hang_up_after(speech_ms + 1500)
        .spawn(dir, 0, ports, gw.sip);
    hs.expect_ok(Duration::from_secs(120));
    trunk.expect_ok(Duration::from_secs(30));
    let calls = gw.api.calls("");
    calls[0]["id"].as_str().expect("session id").to_string()
}

/// Waits until `n` recordings have been spotted (done or skipped).
fn wait_spotted(api: &Api, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = api.get("/api/v1/keywords/status");
        assert_eq!(st["available"], true, "{st}");
        let q = &st["queue"];
        let finished = q["done"].as_u64().unwrap_or(0) + q["skipped"].as_u64().unwrap_or(0);
        assert_eq!(q["failed"], 0, "{st}");
        if finished >= n {
            return st;
        }
        assert!(Instant::now() < deadline, "not spotted in time: {st}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where each side's speech begins in the recording of `session` (ms).
fn speech_onsets(dir: &Path, api: &Api, session: &str) -> (i64, i64) {
    let cdr = api.get(&format!("/api/v1/calls/{session}"));
    let path = dir
        .join("recordings")
        .join(cdr["recording"]["path"].as_str().expect("path"));
    let file = sallyport::recording::wav::read(&path).unwrap();
    let onset = |c: &[u8]| {
        let samples: Vec<i16> = c.iter().map(|&b| file.law.decode(b)).collect();
        onset_ms(&samples).expect("speech in the recording") as i64
    };
    (onset(&file.left), onset(&file.right))
}

fn alerts(api: &Api, session: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/keyword-alerts?session_id={session}"))
        .as_array()
        .expect("alerts")
        .clone()
}

fn spotted_near(alerts: &[Value], party: &str, word: &str, at: i64) -> bool {
    alerts.iter().any(|a| {
        a["party"] == party
            && a["word"] == word
            && (a["offset_ms"].as_i64().unwrap() - at).abs() <= 1000
    })
}

fn run_one(rt: &tokio::runtime::Runtime, name: &str, pg: Option<&TestDb>) {
    let dir = Workdir::new("keywords", name);
    let ports = sipp::ports();
    let url = pg
        .map(|t| t.postgres_url().expect("url"))
        .unwrap_or_else(|| format!("sqlite://{}/db.sqlite", dir.display()));
    let gw = gateway(&dir, &ports, pg.map(|_| url.as_str()));
    let api = gw.api.clone();
    watch(rt, &url, &["lawyer", "nobody", "package", "zzyzxq"]);
    let inmate = book(&api, "S-KW1", "4821", support::api::NUMBER, false);
    fund(&api, &inmate, "5.00");
    let (said, heard) = lawyer_and_nobody(&dir);
    let session = call(&dir, &ports, &gw, &inmate.pin, &said, &heard);
    let st = wait_spotted(&api, 1);
    assert_eq!(st["queue"]["done"], 1, "{st}");
    let (left, right) = speech_onsets(&dir, &api, &session);
    let found = alerts(&api, &session);
    let lawyer_at = left + said.words[0].1;
    let nobody_at = right + heard.words[0].1;
    assert!(
        spotted_near(&found, "inmate", "lawyer", lawyer_at),
        "the inmate's 'lawyer' at {lawyer_at} ms: {found:?}"
    );
    assert!(
        spotted_near(&found, "called", "nobody", nobody_at),
        "the called party's 'nobody' at {nobody_at} ms: {found:?}"
    );
    // Each side is spotted alone: a word is never put on the side that did not say it.
    assert!(
        !spotted_near(&found, "called", "lawyer", lawyer_at),
        "{found:?}"
    );
    assert!(
        !spotted_near(&found, "inmate", "nobody", nobody_at),
        "{found:?}"
    );
    // Opening an alert is audited, naming its session.
    let id = found[0]["id"].as_str().unwrap();
    let one = api.get(&format!("/api/v1/keyword-alerts/{id}"));
    assert_eq!(one["session_id"], session.as_str());
    let audit = api.get("/api/v1/audit?limit=50");
    let text = audit.to_string();
    assert!(text.contains(id) && text.contains(&session), "{audit}");
}

#[test]
fn spoken_words_are_spotted_on_their_side_of_a_call() {
    if !tools_present("keyword spotting through a call") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    run_one(&rt, "sqlite", None);
    if let Some(pg) = rt.block_on(TestDb::postgres()) {
        run_one(&rt, "postgres", Some(&pg));
        rt.block_on(pg.cleanup());
    }
}

/// Twenty-four calls, both voices on both sides, watch words said in most and none in
/// some: recall (watch words said and found on the right side within a second) and false
/// alarms (alerts for words not said there), printed.
#[test]
#[ignore = "about ten minutes of calls; run for the figures in docs/behaviour.md"]
fn keyword_spotting_recall() {
    if !tools_present("keyword spotting recall") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = Workdir::new("keywords", "recall");
    let ports = sipp::ports();
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let gw = gateway(&dir, &ports, None);
    let api = gw.api.clone();
    let list = [
        "package", "nobody", "money", "phone", "tomorrow", "lawyer", "search", "knife",
    ];
    watch(&rt, &url, &list);
    let inmate = book(&api, "S-KWR", "4822", support::api::NUMBER, false);
    fund(&api, &inmate, "50.00");
    // (filler, watch word or "", filler)
    let lines: [(&str, &str, &str); 12] = [
        (
            "they moved the",
            "package",
            "into the laundry cart this morning",
        ),
        ("make sure that", "nobody", "hears about it before friday"),
        ("put the", "money", "on the card for my brother"),
        ("he still has the", "phone", "hidden in the cell"),
        ("we will do it", "tomorrow", "right after the count"),
        ("did you talk to my", "lawyer", "about the hearing"),
        ("there was a", "search", "in the unit last night"),
        ("he said he has a", "knife", "under the bunk"),
        (
            "the weather has been cold all week and",
            "",
            "the heater is broken again",
        ),
        (
            "tell the kids I love them and",
            "",
            "I will call again on sunday",
        ),
        (
            "grandma is doing better after the surgery and",
            "",
            "she says hello",
        ),
        ("the food is terrible but", "", "the library is open now"),
    ];
    let voices = ["en-us", "en-us+f3"];
    let (mut said, mut found_right, mut false_alarms, mut calls, mut speech_ms) =
        (0, 0, 0, 0, 0usize);
    for n in 0..24usize {
        let a = &lines[n % 12];
        let b = &lines[(n * 5 + 3) % 12];
        let (va, vb) = (voices[n % 2], voices[(n + 1) % 2]);
        let parts =
            |l: &(&'static str, &'static str, &'static str)| -> (Vec<&'static str>, Vec<usize>) {
                if l.1.is_empty() {
                    (vec![l.0, l.2], vec![])
                } else {
                    (vec![l.0, l.1, l.2], vec![1])
                }
            };
        let (pa, wa) = parts(a);
        let (pb, wb) = parts(b);
        let inmate_side = side(&dir, &format!("c{n}-inmate"), va, &pa, &wa, HANDSET_LEAD_MS);
        let called_side = side(&dir, &format!("c{n}-called"), vb, &pb, &wb, 0);
        speech_ms += (inmate_side.codes.len() / 8 - HANDSET_LEAD_MS) + called_side.codes.len() / 8;
        let session = call(&dir, &ports, &gw, &inmate.pin, &inmate_side, &called_side);
        calls += 1;
        wait_spotted(&api, calls);
        let (left, right) = speech_onsets(&dir, &api, &session);
        let got = alerts(&api, &session);
        let mut expected: Vec<(&str, String, i64)> = Vec::new();
        for (w, at) in &inmate_side.words {
            expected.push(("inmate", w.clone(), left + at));
        }
        for (w, at) in &called_side.words {
            expected.push(("called", w.clone(), right + at));
        }
        for (party, w, at) in &expected {
            said += 1;
            if spotted_near(&got, party, w, *at) {
                found_right += 1;
            }
        }
        for g in &got {
            let matches = expected.iter().any(|(p, w, at)| {
                g["party"] == *p
                    && g["word"] == w.as_str()
                    && (g["offset_ms"].as_i64().unwrap() - at).abs() <= 1000
            });
            if !matches {
                false_alarms += 1;
            }
        }
        println!(
            "call {n}: expected {expected:?}; alerts {:?}",
            got.iter()
                .map(|g| (
                    g["party"].clone(),
                    g["word"].clone(),
                    g["offset_ms"].clone()
                ))
                .collect::<Vec<_>>()
        );
    }
    let hours = speech_ms as f64 / 3_600_000.0;
    println!(
        "keyword spotting over {calls} calls: recall {found_right}/{said} ({:.0}%), \
         {false_alarms} false alarms in {:.1} minutes of speech ({:.1} per hour of speech), \
         threshold 1e-{} per word",
        100.0 * found_right as f64 / said as f64,
        speech_ms as f64 / 60_000.0,
        false_alarms as f64 / hours,
        KeywordConfig::default().threshold_exponent
    );
}

const PASSWORD: &str = "correct horse battery staple";

fn wait_visible(b: &Browser, id: &str) {
    b.wait_js(
        &format!("#{id} shown"),
        Duration::from_secs(15),
        &format!("return !document.getElementById('{id}').hidden;"),
        |v| v == true,
    );
}

#[test]
fn leads_page_follows_a_lead_to_the_moment_a_word_was_said() {
    if !tools_present("the leads page") || !webdriver::present("the leads page") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = Workdir::new("keywords", "browser");
    let ports = sipp::ports();
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let gw = gateway(&dir, &ports, None);
    let api = gw.api.clone();
    api.add_user("inv-leads", PASSWORD, "investigator", &[FACILITY]);
    watch(&rt, &url, &["lawyer", "nobody"]);
    let inmate = book(&api, "S-KWB", "4824", support::api::NUMBER, false);
    let other = book(&api, "S-KWC", "4825", support::api::NUMBER, false);
    fund(&api, &inmate, "5.00");
    let (said, heard) = lawyer_and_nobody(&dir);
    let session = call(&dir, &ports, &gw, &inmate.pin, &said, &heard);
    wait_spotted(&api, 1);
    let found = alerts(&api, &session);
    let alert = found
        .iter()
        .find(|a| a["party"] == "inmate" && a["word"] == "lawyer")
        .unwrap_or_else(|| panic!("the inmate's 'lawyer' spotted: {found:?}"))
        .clone();
    let at_ms = alert["offset_ms"].as_i64().unwrap();
    // Another inmate called the same number earlier today (a generated session): the
    // number is a lead at two inmates.
    rt.block_on(async {
        let db = sallyport::db::Db::connect(&url, 2).await.unwrap();
        let now = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
        sqlx::query(
            "INSERT INTO sessions (id, kind, facility_id, inmate_id, dialed, number_e164, state, \
             end_reason, invite_at, answer_at, accepted_at, end_at) \
             VALUES ('gen-other', 'call', $1, $2, '5551230001', $3, 'ended', 'callee_hangup', $4, $4, $4, $4)",
        )
        .bind(FACILITY)
        .bind(&other.id)
        .bind(support::api::NUMBER)
        .bind(now)
        .execute(db.pool())
        .await
        .unwrap();
        db.close().await;
    });

    let b = Browser::start(&dir.join("chromedriver.log"));
    b.goto(&format!("{}/console/", gw.base_url()));
    b.wait_for("body[data-ready='1']");
    b.fill("#login-username", "inv-leads");
    b.fill("#login-password", PASSWORD);
    b.click("#login-submit");
    wait_visible(&b, "search-view");
    b.click("#nav-leads");
    wait_visible(&b, "leads-view");
    b.fill("#leads-min", "2");
    b.click("#leads-refresh");
    let number_link = format!(
        "#leads-shared-body a[href='#/lead/number/{}']",
        "%2B15551230001"
    );
    b.wait_for(&number_link);
    b.wait_for(&format!(
        "#leads-words-body a[href='#/session/{session}/at/{at_ms}']"
    ));
    assert!(
        b.text("#leads-spotting").contains("spotting runs"),
        "{}",
        b.text("#leads-spotting")
    );
    axe::assert_accessible(&b, "the leads page");

    // A shared number: who called it and the sessions behind it.
    b.click(&number_link);
    wait_visible(&b, "lead-view");
    let link = format!("#lead-sessions-body a[href='#/session/{session}']");
    b.wait_for(&link);
    b.wait_for("#lead-sessions-body a[href='#/session/gen-other']");
    let callers = b.text("#lead-callers-body");
    assert!(
        callers.contains("S-KWB") && callers.contains("S-KWC"),
        "{callers}"
    );
    axe::assert_accessible(&b, "a number's lead");
    b.click(&link);
    wait_visible(&b, "session-view");
    wait_visible(&b, "spotted");

    // The alert: the session page at the moment the word was said.
    b.click("#nav-leads");
    wait_visible(&b, "leads-view");
    b.click(&format!(
        "#leads-words-body a[href='#/session/{session}/at/{at_ms}']"
    ));
    wait_visible(&b, "spotted");
    b.wait_for(&format!(
        "#spotted-body tr.current[data-alert-id='{}']",
        alert["id"].as_str().unwrap()
    ));
    assert!(b.text("#spotted-body").contains("lawyer"));
    assert!(
        b.text("#recording-play").contains("Play recording from"),
        "{}",
        b.text("#recording-play")
    );
    axe::assert_accessible(&b, "the session page with its watch words");
    b.click("#recording-play");
    let t = b.wait_js(
        "the player starts at the word",
        Duration::from_secs(15),
        "const a = document.getElementById('recording-audio'); return a.readyState > 0 && !a.paused ? a.currentTime : null;",
        |v| v.as_f64().is_some(),
    );
    let t = t.as_f64().unwrap();
    assert!(
        (t - at_ms as f64 / 1000.0).abs() < 1.5,
        "played from {t} s, the word at {at_ms} ms"
    );
    // Following the leads was audited.
    let log = api.get("/api/v1/audit?limit=100").to_string();
    assert!(
        log.contains("lead.open")
            && log.contains("inv-leads")
            && log.contains("keyword_alert.list"),
        "{log}"
    );
}
