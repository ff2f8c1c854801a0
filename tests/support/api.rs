//! The gateway's HTTP API over plain HTTP/1.1 on loopback (no TLS, no async runtime), the
//! one HTTP exchange the WebDriver client uses too, and the API fixtures of the end-to-end
//! tests: the 3-second rate plan, booked and funded inmates.

use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The administrator token every test gateway is started with.
pub(crate) const ADMIN: &str = "e2e-tests-admin-token";
pub(crate) const FACILITY: &str = "DEMO";
/// The number booked inmates get as their approved contact (local in the demo deck).
pub(crate) const NUMBER: &str = "+15551230001";

/// One HTTP/1.1 request: status, head (lower-cased) and body (de-chunked).
pub(crate) fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let (head, body) = read_response(&mut s)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head, body))
}

/// Reads one response: chromedriver keeps the connection open whatever the request says,
/// so the body ends at its Content-Length (or at the last chunk, or when the server
/// closes).
pub(crate) fn read_response(s: &mut impl Read) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut split = None;
    loop {
        if split.is_none() {
            split = buf.windows(4).position(|w| w == b"\r\n\r\n");
        }
        if let Some(at) = split {
            let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
            let body = &buf[at + 4..];
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            });
            let chunked = head.contains("transfer-encoding: chunked");
            let complete = match length {
                Some(n) => body.len() >= n,
                None => chunked && body.ends_with(b"0\r\n\r\n"),
            };
            if complete {
                let text = String::from_utf8_lossy(body).into_owned();
                let text = if chunked { dechunk(&text) } else { text };
                return Ok((head, text));
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            let at = split.unwrap_or(buf.len());
            let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
            let body = String::from_utf8_lossy(buf.get(at + 4..).unwrap_or_default()).into_owned();
            let body = if head.contains("transfer-encoding: chunked") {
                dechunk(&body)
            } else {
                body
            };
            return Ok((head, body));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub(crate) fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("not a decimal: {s:?}: {e}"))
}

pub(crate) fn money(v: &Value) -> Decimal {
    dec(v
        .as_str()
        .unwrap_or_else(|| panic!("not a money string: {v}")))
}

/// The API as one bearer (or none).
#[derive(Clone)]
pub(crate) struct Api {
    pub addr: String,
    pub token: Option<String>,
}

impl Api {
    pub(crate) fn admin(addr: &str) -> Api {
        Api {
            addr: addr.into(),
            token: Some(ADMIN.into()),
        }
    }

    /// The same API as the bearer of `token`.
    pub(crate) fn as_token(&self, token: &str) -> Api {
        Api {
            addr: self.addr.clone(),
            token: Some(token.into()),
        }
    }

    /// The same API without a token.
    pub(crate) fn anonymous(&self) -> Api {
        Api {
            addr: self.addr.clone(),
            token: None,
        }
    }

    /// One request: status, head (lower-cased) and the body as JSON (or a string).
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> (u16, String, Value) {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = Vec::new();
        if let Some(b) = &bearer {
            all.push(("Authorization", b));
        }
        all.extend_from_slice(headers);
        let body = body.map_or(String::new(), |(ctype, b)| {
            all.push(("Content-Type", ctype));
            b
        });
        let (status, head, body) = exchange(
            &self.addr,
            method,
            path,
            &all,
            &body,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.addr));
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, head, v)
    }

    /// A JSON request (or none): status and body.
    pub(crate) fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| ("application/json", b.to_string()));
        let (s, _, v) = self.send(method, path, body, &[]);
        (s, v)
    }

    /// A JSON request that must succeed (2xx); its body.
    pub(crate) fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.request(method, path, body);
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None)
    }

    pub(crate) fn post(&self, path: &str, v: Value) -> Value {
        self.ok("POST", path, Some(v))
    }

    /// A money-moving POST with its `Idempotency-Key`: status and body.
    pub(crate) fn post_keyed(&self, path: &str, key: &str, v: Value) -> (u16, Value) {
        let body = Some(("application/json", v.to_string()));
        let (s, _, v) = self.send("POST", path, body, &[("Idempotency-Key", key)]);
        (s, v)
    }

    /// A CSV upload that must succeed.
    pub(crate) fn upload(&self, path: &str, csv: &str) -> Value {
        let (s, _, v) = self.send("POST", path, Some(("text/csv", csv.to_string())), &[]);
        assert!((200..300).contains(&s), "POST {path}: {s} {v}");
        v
    }

    /// Creates a user (global admin only; `POST /users`).
    pub(crate) fn add_user(&self, username: &str, password: &str, role: &str, facilities: &[&str]) {
        self.post(
            "/api/v1/users",
            json!({ "username": username, "password": password, "role": role,
                    "facilities": facilities }),
        );
    }

    /// A facility like the demo one, with `id`.
    pub(crate) fn add_facility(&self, id: &str) {
        self.post(
            "/api/v1/facilities",
            json!({ "id": id, "name": format!("Facility {id}"), "time_zone": "UTC",
                    "deposit_max": "300.00", "deposit_daily_max": "300.00" }),
        );
    }

    /// Search results: the `items` of the paged answer (or a bare list).
    pub(crate) fn calls(&self, query: &str) -> Vec<Value> {
        let v = self.get(&format!("/api/v1/calls?{query}"));
        let list = v.get("items").cloned().unwrap_or(v);
        list.as_array().cloned().unwrap_or_default()
    }

    /// Waits until a call of the demo facility is accepted (bridged); returns its id.
    pub(crate) fn accepted_call(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.get(&format!("/api/v1/calls/active?facility={FACILITY}"));
            let found = live.as_array().and_then(|a| {
                a.iter()
                    .find(|c| !c["accepted_at"].is_null())
                    .and_then(|c| c["id"].as_str().map(String::from))
            });
            if let Some(id) = found {
                return id;
            }
            assert!(Instant::now() < deadline, "no call was accepted: {live}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of the unlabelled metric `name` (`GET /metrics`, no token).
    pub(crate) fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.anonymous().request("GET", "/metrics", None);
        text.as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// The value of `name{labels}` (e.g. `reason="no_common_codec"`), `GET /metrics`.
    pub(crate) fn metric_with(&self, name: &str, labels: &str) -> u64 {
        let (_, text) = self.anonymous().request("GET", "/metrics", None);
        let series = format!("{name}{{{labels}}} ");
        text.as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {series}"))
    }

    pub(crate) fn balance(&self, account: &str) -> Decimal {
        money(&self.get(&format!("/api/v1/accounts/{account}"))["balance"])
    }

    pub(crate) fn assert_ledger_clean(&self) {
        let v = self.get("/api/v1/ledger/check");
        assert_eq!(v["violations"], json!([]), "ledger check: {v}");
    }

    /// Call-charge lines on the account's statement.
    pub(crate) fn call_charges(&self, account: &str) -> Vec<Value> {
        let st = self.get(&format!("/api/v1/accounts/{account}/statement"));
        st["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "call_charge")
            .cloned()
            .collect()
    }

    /// Waits until `n` calls are recorded and all are ended; returns them, oldest first.
    pub(crate) fn ended_calls(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.get(&format!("/api/v1/calls?facility_id={FACILITY}"));
            let calls = v["items"].as_array().cloned().unwrap_or_default();
            if calls.len() >= n && calls.iter().all(|c| c["state"] == "ended") {
                assert_eq!(calls.len(), n, "more calls than expected: {v}");
                return calls.into_iter().rev().collect();
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} ended call(s), have: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The plan of the call tests: 3-second increments at $0.05/min ($0.0025 an increment),
/// under the FCC prison cap of $0.06/min, on the demo facility.
pub(crate) fn three_second_increments(api: &Api) {
    let mut csv = String::from("class,service,per_minute,increment_secs\n");
    for class in ["local", "domestic", "international"] {
        csv.push_str(&format!("{class},audio,0.05,3\n"));
    }
    api.upload("/api/v1/rate-plans?id=e2e-3s&max_call_secs=3600", &csv);
    api.ok(
        "PATCH",
        &format!("/api/v1/facilities/{FACILITY}"),
        Some(json!({ "rate_plan_id": "e2e-3s" })),
    );
}

pub(crate) struct Inmate {
    pub id: String,
    pub account: String,
    pub booking: String,
    /// Keyed before the PIN ([`calling_id_for`] of the PIN).
    pub calling_id: String,
    pub pin: String,
}

/// The calling ID the fixtures give the inmate booked with `pin`: 9 and the PIN padded to
/// five digits (a 4-digit PIN 4821 gives 904821), so a handset told only the PIN
/// (`sipp::Handset::new`) keys the right ID too. Real IDs are random; the booking API
/// takes one from staff, which is what this uses. Two inmates of one test gateway need
/// different PINs.
pub(crate) fn calling_id_for(pin: &str) -> String {
    assert!(
        pin.len() <= 5,
        "the fixtures' calling IDs take PINs of up to 5 digits"
    );
    format!("9{pin:0>5}")
}

/// Books an inmate of the demo facility with `pin` (and the calling ID [`calling_id_for`]
/// it) and `number` as approved contact.
pub(crate) fn book(api: &Api, booking: &str, pin: &str, number: &str, privileged: bool) -> Inmate {
    let calling_id = calling_id_for(pin);
    let i = api.post(
        &format!("/api/v1/facilities/{FACILITY}/inmates"),
        json!({ "booking_number": booking, "first_name": "Test", "last_name": booking, "pin": pin,
                "calling_id": calling_id }),
    );
    assert_eq!(i["calling_id"], calling_id.as_str(), "{i}");
    let id = i["id"].as_str().expect("inmate id").to_string();
    let c = api.post(
        &format!("/api/v1/inmates/{id}/contacts"),
        json!({ "number": number, "name": "Called Party", "relationship": "friend", "privileged": privileged }),
    );
    let contact = c["id"].as_str().expect("contact id");
    api.ok("POST", &format!("/api/v1/contacts/{contact}/approve"), None);
    Inmate {
        id,
        account: i["account_id"].as_str().expect("account").to_string(),
        booking: booking.into(),
        calling_id,
        pin: pin.into(),
    }
}

/// Brings the inmate's balance (zero after booking) to exactly `amount`: deposits whole
/// cents (201; deposits take no less) and posts a commissary purchase of the excess.
pub(crate) fn fund(api: &Api, inmate: &Inmate, amount: &str) {
    let want = dec(amount);
    let cents = (want * Decimal::from(100)).ceil() / Decimal::from(100);
    let acc = &inmate.account;
    let (s, v) = api.post_keyed(
        &format!("/api/v1/accounts/{acc}/deposits"),
        &format!("fund-{acc}"),
        json!({ "amount": cents.to_string(), "method": "online", "depositor": "e2e tests" }),
    );
    assert_eq!(s, 201, "deposit: {v}");
    let excess = cents - want;
    if excess > Decimal::ZERO {
        let (s, v) = api.post_keyed(
            &format!("/api/v1/accounts/{acc}/purchases"),
            &format!("trim-{acc}"),
            json!({ "amount": excess.to_string(), "reference": "trim", "memo": "exact test balance" }),
        );
        assert!((200..300).contains(&s), "purchase: {s} {v}");
    }
    assert_eq!(api.balance(acc), want);
}

/// Books an inmate of the demo facility with [`NUMBER`] approved, funded with `amount`.
pub(crate) fn book_funded(api: &Api, booking: &str, pin: &str, amount: &str) -> Inmate {
    let inmate = book(api, booking, pin, NUMBER, false);
    fund(api, &inmate, amount);
    inmate
}
