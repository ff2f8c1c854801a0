//! The real `sallyport` binary: `demo --json` is idempotent and prints what it made;
//! `serve` seeds on first start, answers on the port it printed, and on restart closes
//! the sessions a killed run left open (reason `system`) without touching their charges;
//! `user add` takes the password from stdin or the environment, and a login over TCP is
//! audited with the peer's address.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sallyport");

fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "SALLYPORT_DATABASE_URL",
            format!("sqlite://{}/db.sqlite", dir.display()),
        )
        .env("SALLYPORT_NODE_DATA_DIR", dir)
        .env("SALLYPORT_HTTP_LISTEN", "127.0.0.1:0")
        .env("SALLYPORT_SIP_UDP_LISTEN", "127.0.0.1:0")
        .env("SALLYPORT_SIP_TCP_LISTEN", "127.0.0.1:0")
        .env("SALLYPORT_LOG", "warn");
    c
}

fn demo_json(dir: &std::path::Path) -> serde_json::Value {
    let out = command(dir).args(["demo", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts `serve` and returns the child and the HTTP address it printed.
fn serve(dir: &std::path::Path) -> (Child, String) {
    let mut child = command(dir)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("sallyport: HTTP API listening on http://") {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    exchange(addr, "GET", path, token, None)
}

fn post_json(addr: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    exchange(addr, "POST", path, token, Some(body))
}

/// One HTTP/1.1 request over a fresh TCP connection (what a client outside the process
/// sends): the status and the body.
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = json
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{body}Connection: close\r\n\r\n{}",
        json.unwrap_or("")
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn demo_is_idempotent_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let first = demo_json(dir.path());
    for key in [
        "facility",
        "booking_number",
        "pin",
        "approved_number",
        "handset_username",
        "trusted_network",
        "trunk_address",
        "admin_token",
        "account_id",
        "investigator_username",
        "investigator_password",
    ] {
        assert!(
            first[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} missing: {first}"
        );
    }
    assert_eq!(first["balance"], "20.00");
    // What to key: the demo's calling ID, #, its PIN, #.
    assert_eq!(
        (&first["calling_id"], &first["pin"], &first["keys"]),
        (&json!("100001"), &json!("1234"), &json!("100001#1234#")),
        "{first}"
    );
    let second = demo_json(dir.path());
    assert_eq!(
        first, second,
        "a second demo changes nothing (no second deposit)"
    );
    // A demo inmate with another calling ID and the demo PIN (what an upgrade leaves:
    // it drew an ID) gets the demo's ID back, so what the demo prints is what works.
    let set_pin = |pin: &str, id: &str| {
        let out = command(dir.path())
            .args(["set-pin", "--facility", "DEMO", "--booking", "D-1001"])
            .args(["--pin", pin, "--calling-id", id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(set["calling_id"], id, "{set}");
    };
    set_pin("1234", "555555");
    assert_eq!(demo_json(dir.path())["keys"], "100001#1234#");
    // Credentials staff set (another PIN) are never reset by the demo: it says what to
    // key without showing a PIN it does not know.
    set_pin("9999", "555555");
    let after = demo_json(dir.path());
    assert_eq!(
        (&after["calling_id"], &after["pin"], &after["keys"]),
        (
            &json!("555555"),
            &json!("(set by staff, not shown)"),
            &json!("555555#<the PIN staff set>#")
        ),
        "{after}"
    );
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("SALLYPORT_RTP_PORT_MIN", "abc")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SALLYPORT_RTP_PORT_MIN") && err.contains("port_min"),
        "{err}"
    );
}

#[test]
fn serve_seeds_answers_and_closes_orphans_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path());
    let (s, body) = get(&addr, "/healthz", None);
    assert_eq!(s, 200, "{body}");
    let info = demo_json(dir.path());
    let token = info["admin_token"].as_str().unwrap();
    let (s, body) = get(
        &addr,
        &format!("/api/v1/accounts/{}", info["account_id"].as_str().unwrap()),
        Some(token),
    );
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"20.00\""), "seeded on first start: {body}");
    // A call in progress when the node dies: one increment already debited.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = sallyport::db::Db::connect(&format!("sqlite://{}/db.sqlite", dir.path().display()), 1).await.unwrap();
        sqlx::query("INSERT INTO sessions (id, kind, facility_id, account_id, state, node_id, invite_at) VALUES ('s-1', 'call', 'DEMO', $1, 'active', 'node-1', 1)")
            .bind(info["account_id"].as_str().unwrap())
            .execute(db.pool()).await.unwrap();
        let clock: std::sync::Arc<dyn sallyport::clock::Clock> = std::sync::Arc::new(sallyport::clock::SystemClock);
        let ledger = sallyport::ledger::Ledger::new(db.clone(), clock);
        let d = sallyport::ledger::SessionDebit {
            session_id: "s-1".into(), increment: 1, account_id: info["account_id"].as_str().unwrap().into(),
            amount: "0.05".parse().unwrap(), service: sallyport::ledger::Service::Audio, facility_id: "DEMO".into(),
        };
        ledger.debit_session(d).await.unwrap();
        db.close().await;
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, addr) = serve(dir.path());
    let (s, _) = get(&addr, "/readyz", None);
    assert_eq!(s, 200);
    rt.block_on(async {
        let db = sallyport::db::Db::connect(&format!("sqlite://{}/db.sqlite", dir.path().display()), 1).await.unwrap();
        let row = sqlx::query("SELECT state, end_reason, billed_increments, amount_minor FROM sessions WHERE id = 's-1'")
            .fetch_one(db.pool()).await.unwrap();
        use sqlx::Row;
        assert_eq!(row.get::<String, _>("state"), "ended");
        assert_eq!(row.get::<String, _>("end_reason"), "system");
        assert_eq!(row.get::<i64, _>("billed_increments"), 1);
        assert_eq!(row.get::<i64, _>("amount_minor"), 500);
        db.close().await;
    });
    let (_, body) = get(
        &addr,
        &format!("/api/v1/accounts/{}", info["account_id"].as_str().unwrap()),
        Some(token),
    );
    assert!(
        body.contains("\"19.95\""),
        "the committed increment stands, charged once: {body}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `verify-audit` walks the chain: intact, exit 0; after an entry is changed behind the
/// database's back, it names the entry and exits non-zero.
#[test]
fn verify_audit_names_a_changed_entry() {
    use sqlx::Row;
    let dir = tempfile::tempdir().unwrap();
    demo_json(dir.path());
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(sallyport::db::Db::connect(&url, 1)).unwrap();
    let clock = std::sync::Arc::new(sallyport::clock::SystemClock);
    let store = sallyport::store::Store::new(db.clone(), clock, "demo-pepper-change-me-0123456789");
    for target in ["c1", "c2", "c3"] {
        let e = sallyport::store::AuditEntry {
            actor: "admin",
            action: "call.terminate",
            target,
            facility_id: Some("DEMO"),
            detail: serde_json::json!({}),
            remote_addr: None,
        };
        rt.block_on(store.audit(e)).unwrap();
    }
    let ok = command(dir.path()).arg("verify-audit").output().unwrap();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("audit log intact: 3 entries"), "{out}");
    let id: i64 = rt.block_on(async {
        let pool = db.pool();
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(pool)
            .await
            .unwrap();
        let id: i64 = sqlx::query("SELECT id FROM audit_log WHERE target = 'c2'")
            .fetch_one(pool)
            .await
            .unwrap()
            .try_get("id")
            .unwrap();
        sqlx::query("UPDATE audit_log SET actor = 'nobody' WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
        db.close().await;
        id
    });
    let bad = command(dir.path()).arg("verify-audit").output().unwrap();
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{out}");
    assert!(out.contains(&format!("audit entry {id}: changed")), "{out}");
}

/// `user add`: the password from stdin or from the variable --password-env names (never
/// an argument); too short is refused. The users then log in over TCP, and the audit
/// entry of the login carries the peer address (ConnectInfo).
#[test]
fn user_add_then_login_over_tcp_is_audited_with_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let info = demo_json(dir.path());
    let add = |name: &str, stdin: &str, env: Option<(&str, &str)>| {
        let mut c = command(dir.path());
        c.args([
            "user",
            "add",
            "--username",
            name,
            "--role",
            "investigator",
            "--facility",
            "DEMO",
        ]);
        if let Some((var, value)) = env {
            c.args(["--password-env", var]).env(var, value);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add("inv-stdin", "stdin-password-1\n", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (user["role"].as_str(), user["facilities"][0].as_str()),
        (Some("investigator"), Some("DEMO"))
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("stdin-password-1"));
    let out = add("inv-env", "", Some(("SP_TEST_PW", "env-password-12")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = add("inv-short", "short\n", None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("12"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut child, addr) = serve(dir.path());
    for (u, p) in [
        ("inv-stdin", "stdin-password-1"),
        ("inv-env", "env-password-12"),
        ("investigator", "demo-investigator-pass"),
    ] {
        let (s, body) = post_json(
            &addr,
            "/api/v1/auth/login",
            None,
            &format!(r#"{{"username":"{u}","password":"{p}"}}"#),
        );
        assert_eq!(s, 200, "{u}: {body}");
    }
    let (s, _) = post_json(
        &addr,
        "/api/v1/auth/login",
        None,
        r#"{"username":"inv-env","password":"stdin-password-1"}"#,
    );
    assert_eq!(s, 401);
    let (s, body) = get(
        &addr,
        "/api/v1/audit?limit=10",
        Some(info["admin_token"].as_str().unwrap()),
    );
    assert_eq!(s, 200, "{body}");
    let entries: serde_json::Value = serde_json::from_str(&body).unwrap();
    let logins: Vec<&serde_json::Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "auth.login")
        .collect();
    assert_eq!(logins.len(), 3, "{body}");
    for e in logins {
        assert!(
            e["remote_addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{e}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Logs written to a file are plain text: no ANSI colour escapes when standard error is
/// not a terminal, even without `NO_COLOR` (issue 9).
#[test]
fn logs_written_to_a_file_have_no_colour_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let out = command(dir.path())
        .env_remove("NO_COLOR")
        .env("SALLYPORT_LOG", "info")
        .args(["demo", "--json"])
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ledger: deposit"),
        "the run logged something: {text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no escape in the log file: {text:?}"
    );
}

/// The repository's config, by absolute path.
fn repo_config() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sallyport.toml")
}

/// `serve --config <repo>/config/sallyport.toml` from another directory finds its prompts
/// (relative paths in the file are relative to the file) and serves the demo.
#[test]
fn serve_from_another_directory_finds_its_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .current_dir(elsewhere.path())
        .arg("--config")
        .arg(repo_config())
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve exited before listening: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if let Some(rest) = line.strip_prefix("sallyport: HTTP API listening on http://") {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let (s, body) = get(
        &addr,
        "/api/v1/facilities/DEMO",
        Some("demo-admin-token-change-me"),
    );
    assert_eq!(s, 200, "the demo was seeded: {body}");
    child.kill().unwrap();
    child.wait().unwrap();
    let entries: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().collect();
    assert!(
        entries.is_empty(),
        "nothing written to the current directory"
    );
}

/// A prompts folder that is not there: the start fails once, naming `rtp.prompts_dir` and
/// the path it looked in, says the OS error once, and leaves no database (so no demo) behind.
#[test]
fn a_missing_prompts_dir_fails_once_before_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let conf = conf_dir.join("sallyport.toml");
    std::fs::copy(repo_config(), &conf).unwrap();
    let out = command(dir.path())
        .current_dir(elsewhere.path())
        .arg("--config")
        .arg(&conf)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let wanted = conf_dir.canonicalize().unwrap().join("prompts");
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "one error: {err}");
    let line = error_lines[0];
    assert!(
        line.contains("rtp.prompts_dir") && line.contains(&wanted.display().to_string()),
        "names the key and the path: {line}"
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "the OS error once: {line}"
    );
    assert!(
        !dir.path().join("db.sqlite").exists(),
        "no database was made, so no demo was seeded into one"
    );
}

/// The CLI stores what the API stores, under the same limits and the same one written
/// form of amounts, and its idempotency keys are its own.
#[test]
fn the_cli_checks_text_and_amounts_as_the_api_does() {
    let dir = tempfile::tempdir().unwrap();
    demo_json(dir.path());
    let run = |args: &[&str]| command(dir.path()).args(args).output().unwrap();
    let long = "n".repeat(101);
    let refused = [
        (
            vec![
                "book",
                "--facility",
                "DEMO",
                "--booking",
                "B-9",
                "--first-name",
                &long,
                "--last-name",
                "Doe",
            ],
            "first_name",
        ),
        (
            vec![
                "add-contact",
                "--facility",
                "DEMO",
                "--booking",
                "D-1001",
                "--number",
                "+15551230009",
                "--name",
                "Ann\u{1b}[31m",
            ],
            "name",
        ),
        (
            vec![
                "deposit",
                "--facility",
                "DEMO",
                "--booking",
                "D-1001",
                "--amount",
                " 5.00",
                "--key",
                "c-1",
            ],
            "decimal string",
        ),
        (
            vec![
                "deposit",
                "--facility",
                "DEMO",
                "--booking",
                "D-1001",
                "--amount",
                "5.",
                "--key",
                "c-1",
            ],
            "decimal string",
        ),
        (
            vec![
                "deposit",
                "--facility",
                "DEMO",
                "--booking",
                "D-1001",
                "--amount",
                "5.00",
                "--key",
                "c-1",
                "--depositor",
                &long,
            ],
            "depositor",
        ),
        (
            vec![
                "deposit",
                "--facility",
                "DEMO",
                "--booking",
                "D-1001",
                "--amount",
                "5.00",
                "--key",
                "has space",
            ],
            "Idempotency-Key",
        ),
    ];
    for (args, named) in refused {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was refused");
        assert!(err.contains(named), "{args:?}: names {named}: {err}");
    }
    // The demo's own deposit key, sent from the CLI, is the CLI's: a new deposit.
    let ok = run(&[
        "deposit",
        "--facility",
        "DEMO",
        "--booking",
        "D-1001",
        "--amount",
        "5.00",
        "--key",
        "demo-seed-deposit-1",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let again = run(&[
        "deposit",
        "--facility",
        "DEMO",
        "--booking",
        "D-1001",
        "--amount",
        "5.00",
        "--key",
        "demo-seed-deposit-1",
    ]);
    assert_eq!(ok.stdout, again.stdout, "a replay prints the first answer");
    let info = demo_json(dir.path());
    assert_eq!(info["balance"], "25.00", "20.00 seeded + 5.00 once");
}
