//! Evidence packages through the real router on SQLite and PostgreSQL, checked with the
//! real `sallyport verify-package` binary: three sessions are packaged and downloaded and
//! the package verifies; one byte of one recording flipped inside the package, it fails
//! naming that file; one chain entry removed, it fails naming the break. Building and
//! downloading are audited (who, which sessions, the package's SHA-256); a privileged
//! session is refused (403, audited) and nothing is built; another facility's
//! investigator can neither build nor download.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use sallyport::db::Backend;
use sallyport::evidence::tar::{read_all, write_all, BLOCK};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use support::inproc::{
    self, admin, closed_call, ended_call, err_code, fetch, opened_call, recording, request, send,
    session, user, App, Call, Setup,
};

const ADMIN: &str = "test-admin-token";
const PEER: &str = "203.0.113.9:4711";
const BIN: &str = env!("CARGO_BIN_EXE_sallyport");

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).peer(PEER).recordings().app(backend).await
}

/// `sallyport verify-package FILE`, run where there is no configuration, with no
/// database configured.
fn verify_package(file: &Path) -> Output {
    let cwd = file.parent().unwrap();
    Command::new(BIN)
        .arg("verify-package")
        .arg(file)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The newest audit entry with `action`.
async fn last_audit(app: &App, action: &str) -> Value {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=200", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == action)
        .cloned()
        .unwrap_or_else(|| panic!("no audit entry {action}"))
}

/// The byte offset of member `name`'s data in a tar.
fn member_offset(tar: &[u8], name: &str) -> usize {
    let mut at = 0;
    loop {
        let h = &tar[at..at + BLOCK];
        assert!(h.iter().any(|b| *b != 0), "no member {name}");
        let end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let short = std::str::from_utf8(&h[..end]).unwrap();
        let pend = h[345..500].iter().position(|b| *b == 0).unwrap_or(155);
        let prefix = std::str::from_utf8(&h[345..345 + pend]).unwrap();
        let full = if prefix.is_empty() {
            short.to_string()
        } else {
            format!("{prefix}/{short}")
        };
        let size_text = std::str::from_utf8(&h[124..135]).unwrap();
        let size = usize::from_str_radix(size_text.trim_matches('\0'), 8).unwrap();
        if full == name {
            return at + BLOCK;
        }
        at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
    }
}

/// Runs the shell of `docs/evidence.md`, "Checking by hand", on `package`: `sha256sum -c`
/// over the manifest and the chained hashes, then the chain and audit formulas
/// recomputed for every entry of the package. Skipped (said so) without bash, jq or xxd,
/// unless `SALLYPORT_REQUIRE_EXTERNAL=1`.
fn by_hand(package: &Path, intact: bool) {
    let have = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !["bash", "jq", "xxd", "sha256sum", "tar"]
        .iter()
        .all(|t| have(t))
    {
        sallyport::db::testing::skip_or_fail(
            "the by-hand check of docs/evidence.md needs bash, jq, xxd, sha256sum and tar",
        );
        return;
    }
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/evidence.md")).unwrap();
    let section = doc
        .split("## Checking by hand")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let mut script = String::new();
    for block in section.split("```sh\n").skip(1) {
        let code = block.split("```").next().unwrap();
        script.push_str(&code.replace("evp_….tar", &package.display().to_string()));
        script.push('\n');
    }
    script.push_str(
        r#"
for s in $(jq '.[].seq' chain/entries.json); do
  [ "$(link "$s" | sort -u | wc -l)" = 1 ] || echo "BYHAND-MISMATCH chain entry $s"
done
for i in $(jq '.audit[].id' chain/anchor.json); do
  [ "$(audit_hash "$i" | sort -u | wc -l)" = 1 ] || echo "BYHAND-MISMATCH audit entry $i"
done
echo BYHAND-DONE
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("BYHAND-DONE"), "{text}\n{err}");
    assert!(!text.contains("BYHAND-MISMATCH"), "{text}\n{err}");
    assert!(text.contains(": OK"), "{text}");
    assert_eq!(!text.contains("FAILED"), intact, "{text}\n{err}");
}

/// Facility F1 with an inmate and an account holding money; F2 with nobody.
/// Returns the inmate id and account id.
async fn facilities(app: &App) -> (String, String) {
    inproc::facility(app, "F1").await;
    inproc::facility(app, "F2").await;
    let inmate = inproc::inmate(app, "F1", "B-1").await;
    let acc = inmate["account_id"].as_str().unwrap().to_string();
    let mut req = request(
        "POST",
        &format!("/api/v1/accounts/{acc}/deposits"),
        Some(ADMIN),
        Some(json!({ "amount": "5.00", "method": "online" })),
    );
    req.headers_mut()
        .insert("idempotency-key", "dep-1".parse().unwrap());
    assert_eq!(fetch(app, req).await.0, StatusCode::CREATED);
    (inmate["id"].as_str().unwrap().to_string(), acc)
}

/// An ended, recorded call `id` of F1's inmate with `increments` debits of 0.21.
async fn recorded_call(app: &App, id: &str, inmate: &str, acc: &str, increments: u32) -> String {
    let call = Call::answered(id, "F1", inmate, false);
    opened_call(app, &call).await;
    for increment in 1..=increments {
        let debit = sallyport::ledger::SessionDebit {
            session_id: id.into(),
            increment,
            account_id: acc.into(),
            amount: "0.21".parse().unwrap(),
            service: sallyport::ledger::Service::Audio,
            facility_id: "F1".into(),
        };
        app.store.ledger().debit_session(debit).await.unwrap();
    }
    closed_call(app, &call).await;
    let (rec, _) = recording(app, id, "F1", 4000 + increments as usize * 100, true).await;
    app.clock.advance(Duration::from_secs(60));
    rec
}

async fn packages_three_sessions_that_verify_until_changed(app: App) {
    let (inmate, acc) = facilities(&app).await;
    // A recording before the packaged ones: the first packaged entry has a neighbour.
    recorded_call(&app, "c-before", &inmate, &acc, 0).await;
    let mut recs = Vec::new();
    for (i, id) in ["c-1", "c-2", "c-3"].iter().enumerate() {
        recs.push(recorded_call(&app, id, &inmate, &acc, i as u32 + 1).await);
    }
    user(&app, "ivy", &["F1"]).await;
    let ivy = session(&app, "ivy").await;
    // A bookmark on one packaged session and one on a session left out.
    for (sid, text) in [
        ("c-2", "the name of the supplier"),
        ("c-before", "not packaged"),
    ] {
        let note = json!({ "session_id": sid, "start_ms": 1200, "end_ms": 2500, "body": text });
        let (s, v) = send(&app, "POST", "/api/v1/notes", Some(&ivy), Some(note)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let body = json!({ "session_ids": ["c-1", "c-2", "c-3"], "reason": "case 2026-114" });
    let (s, built) = send(
        &app,
        "POST",
        "/api/v1/evidence-packages",
        Some(&ivy),
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{built}");
    assert_eq!(built["intact"], true, "{built}");
    let id = built["id"].as_str().unwrap().to_string();
    let audit = last_audit(&app, "evidence_package.build").await;
    assert_eq!(audit["actor"], "ivy", "{audit}");
    assert_eq!(audit["target"], id.as_str());
    assert_eq!(audit["detail"]["session_ids"], json!(["c-1", "c-2", "c-3"]));
    assert_eq!(audit["detail"]["sha256"], built["sha256"]);
    assert_eq!(audit["detail"]["reason"], "case 2026-114");

    // Download: the bytes are the package the build answer named, and the download is
    // audited with their hash.
    let (s, headers, tar) = fetch(
        &app,
        request(
            "GET",
            &format!("/api/v1/evidence-packages/{id}"),
            Some(&ivy),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-tar");
    let sha = hex::encode(Sha256::digest(&tar));
    assert_eq!(sha, built["sha256"].as_str().unwrap());
    assert_eq!(headers["x-content-sha256"], sha.as_str());
    let audit = last_audit(&app, "evidence_package.download").await;
    assert_eq!(audit["actor"], "ivy", "{audit}");
    assert_eq!(audit["detail"]["sha256"], sha.as_str());
    assert_eq!(audit["detail"]["session_ids"], json!(["c-1", "c-2", "c-3"]));
    assert_eq!(audit["remote_addr"], PEER);

    // What is inside: the records, the charges as JSON and CSV, the recordings, the proof.
    let members = read_all(&tar[..]).unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names[0], "manifest.json");
    for n in [
        "VERIFY.txt",
        "notes.json",
        "sessions.csv",
        "chain/entries.json",
        "chain/anchor.json",
        "sessions/c-2/cdr.json",
        "sessions/c-2/charges.json",
        "sessions/c-2/charges.csv",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let get = |n: &str| &members.iter().find(|m| m.0 == n).unwrap().1;
    // The packaged sessions' notes, hashed in the manifest like every file.
    let notes: Value = serde_json::from_slice(get("notes.json")).unwrap();
    let notes = notes.as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["session_id"], "c-2");
    assert_eq!(notes[0]["body"], "the name of the supplier");
    assert_eq!(
        (notes[0]["start_ms"].as_i64(), notes[0]["end_ms"].as_i64()),
        (Some(1200), Some(2500))
    );
    let charges: Value = serde_json::from_slice(get("sessions/c-3/charges.json")).unwrap();
    assert_eq!(charges.as_array().unwrap().len(), 3);
    let csv = String::from_utf8(get("sessions/c-3/charges.csv").clone()).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains("0.21"), "{csv}");
    let manifest: Value = serde_json::from_slice(get("manifest.json")).unwrap();
    let files = manifest["sessions"][1]["recordings"].as_array().unwrap();
    let rec2_file = files[0]["file"].as_str().unwrap().to_string();
    assert_eq!(rec2_file, format!("sessions/c-2/{}.wav", recs[1]));
    let on_disk = std::fs::read(app.recordings().join("2026/03/02/c-2.wav")).unwrap();
    assert_eq!(get(&rec2_file), &on_disk);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{id}.tar"));
    std::fs::write(&file, &tar).unwrap();
    let out = verify_package(&file);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("INTACT"), "{}", stdout(&out));
    assert!(stdout(&out).contains(&sha), "{}", stdout(&out));

    by_hand(&file, true);

    // One byte of one recording flipped inside the package.
    let mut flipped = tar.clone();
    let at = member_offset(&flipped, &rec2_file) + 2000;
    flipped[at] ^= 0x40;
    let bad = dir.path().join("flipped.tar");
    std::fs::write(&bad, &flipped).unwrap();
    let out = verify_package(&bad);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("NOT INTACT"), "{text}");
    assert!(
        text.contains(&format!("FAILED file_hash {rec2_file}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("FAILED recording_hash {rec2_file}")),
        "{text}"
    );
    assert_eq!(
        text.matches("FAILED").count() / 2,
        2,
        "only that file: {text}"
    );
    by_hand(&bad, false);

    // One chain entry removed: recording 2's.
    let mut members = members.clone();
    let chain = members
        .iter_mut()
        .find(|m| m.0 == "chain/entries.json")
        .unwrap();
    let mut entries: Vec<Value> = serde_json::from_slice(&chain.1).unwrap();
    let seq2 = manifest["sessions"][1]["recordings"][0]["chain_seq"]
        .as_i64()
        .unwrap();
    let before = entries.len();
    entries.retain(|e| e["seq"] != seq2);
    assert_eq!(entries.len(), before - 1);
    chain.1 = serde_json::to_vec_pretty(&entries).unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, write_all(&members, 0).unwrap()).unwrap();
    let out = verify_package(&cut);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAILED file_hash chain/entries.json"),
        "{text}"
    );
    assert!(
        text.contains(&format!("chain break before entry {}", seq2 + 1)),
        "{text}"
    );
    assert!(
        text.contains(&format!("chain break after entry {}", seq2 - 1)),
        "{text}"
    );

    // Packages stored beside the recordings do not disturb their integrity check.
    let whole = sallyport::recording::chain::verify_all(&app.store, app.recordings())
        .await
        .unwrap();
    assert!(whole.ok, "{:?}", whole.problems);

    // Not a package at all.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"hello").unwrap();
    assert_eq!(verify_package(&junk).status.code(), Some(2));

    // The package is stored: a second download serves the same bytes.
    let (s, _, again) = fetch(
        &app,
        request(
            "GET",
            &format!("/api/v1/evidence-packages/{id}"),
            Some(&ivy),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again, tar);
}

async fn privileged_and_foreign_sessions_are_refused(app: App) {
    let (inmate, acc) = facilities(&app).await;
    recorded_call(&app, "c-1", &inmate, &acc, 1).await;
    ended_call(&app, Call::answered("c-law", "F1", &inmate, true)).await;
    user(&app, "ivy", &["F1"]).await;
    user(&app, "otto", &["F2"]).await;
    let ivy = session(&app, "ivy").await;
    let otto = session(&app, "otto").await;
    let evidence = app.recordings().join("evidence");

    let body = json!({ "session_ids": ["c-1", "c-law"], "reason": "case 9" });
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/evidence-packages",
        Some(&ivy),
        Some(body),
    )
    .await;
    assert_eq!(
        (s, err_code(&v)),
        (StatusCode::FORBIDDEN, "privileged"),
        "{v}"
    );
    let audit = last_audit(&app, "evidence_package.refused").await;
    assert_eq!(audit["actor"], "ivy");
    assert_eq!(audit["target"], "c-law");
    assert!(!evidence.exists(), "nothing is built");

    let body = json!({ "session_ids": ["c-1"], "reason": "case 9" });
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/evidence-packages",
        Some(&otto),
        Some(body.clone()),
    )
    .await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
        "another facility's investigator: {s} {v}"
    );
    for bad in [
        json!({ "session_ids": [], "reason": "x" }),
        json!({ "session_ids": ["c-1"], "reason": "  " }),
        json!({ "session_ids": ["c-1", "c-1"], "reason": "x" }),
    ] {
        let (s, v) = send(
            &app,
            "POST",
            "/api/v1/evidence-packages",
            Some(&ivy),
            Some(bad),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    let (s, built) = send(
        &app,
        "POST",
        "/api/v1/evidence-packages",
        Some(&ivy),
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{built}");
    let path = format!(
        "/api/v1/evidence-packages/{}",
        built["id"].as_str().unwrap()
    );
    let (s, _, _) = fetch(&app, request("GET", &path, Some(&otto), None)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = fetch(&app, request("GET", &path, None, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for id in ["evp_00", "..%2Fx", "evp_ZZ"] {
        let (s, v) = send(
            &app,
            "GET",
            &format!("/api/v1/evidence-packages/{id}"),
            Some(&ivy),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}: {v}");
    }
}

battery!(
    packages_three_sessions_that_verify_until_changed,
    privileged_and_foreign_sessions_are_refused
);
