//! The real `sallyport` binary: `demo --json` is idempotent and prints what it made;
//! `serve` seeds on first start, answers on the port it printed, and on restart closes
//! the sessions a killed run left open (reason `system`) without touching their charges;
//! `user add` takes the password from stdin or the environment, and a login over TCP is
//! audited with the peer's address.

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
    // A demo inmate with another calling ID (one an upgrade drew for it) gets the demo's
    // back, so what the demo prints is what works.
    let out = command(dir.path())
        .args(["set-pin", "--facility", "DEMO", "--booking", "D-1001"])
        .args(["--pin", "9999", "--calling-id", "555555"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set["calling_id"], "555555", "{set}");
    assert_eq!(demo_json(dir.path())["keys"], "100001#1234#");
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
