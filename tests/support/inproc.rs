//! The harness of the in-process API tests (`api`, `investigation`, `authorization` and
//! the in-process half of `live_listen`): the real router on a fresh [`TestDb`] with a
//! [`ManualClock`], called through `tower::ServiceExt::oneshot`; the requests they send;
//! the facility, inmate, token and user fixtures; and a recording made without the capture
//! code (a small WAV under a temporary recordings directory, registered with
//! `start_recording` / `finish_recording`).

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use sallyport::api::{router, AppState};
use sallyport::clock::{Clock, ManualClock};
use sallyport::config::Config;
use sallyport::db::testing::TestDb;
use sallyport::db::Backend;
use sallyport::recording::wav::{self, Law};
use sallyport::store::{FinishedRecording, NewRecording, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;
use tower::ServiceExt;

/// The PIN pepper of every in-process router (unless a test's `config` changes it).
pub(crate) const PEPPER: &str = "test-pepper-0123456789";
/// The password of the users [`user`] creates.
pub(crate) const PASSWORD: &str = "long-enough-pass";

/// One router on its own database and clock.
pub(crate) struct App {
    pub router: Router,
    pub clock: Arc<ManualClock>,
    pub store: Store,
    /// The configured administrator token.
    pub admin: &'static str,
    /// The `ConnectInfo` peer address requests carry, as the server would set it (none:
    /// the requests carry none).
    pub peer: Option<SocketAddr>,
    /// The configured recordings directory, if the test set one.
    pub rec_dir: Option<TempDir>,
    pub t: TestDb,
}

impl App {
    /// The recordings directory (the test must have asked for one).
    pub(crate) fn recordings(&self) -> &Path {
        self.rec_dir
            .as_ref()
            .expect("an App built with .recordings()")
            .path()
    }
}

/// How a test file's [`App`] differs from the others': `Setup::new(ADMIN)` is an App with
/// that administrator token, the [`PEPPER`], no peer address and no recordings directory.
pub(crate) struct Setup {
    admin: &'static str,
    peer: Option<SocketAddr>,
    recordings: bool,
    config: fn(&mut Config),
}

impl Setup {
    pub(crate) fn new(admin: &'static str) -> Setup {
        Setup {
            admin,
            peer: None,
            recordings: false,
            config: |_| {},
        }
    }

    /// Requests carry `ConnectInfo(peer)`.
    pub(crate) fn peer(mut self, peer: &str) -> Setup {
        self.peer = Some(peer.parse().expect("a socket address"));
        self
    }

    /// A fresh temporary recordings directory is configured.
    pub(crate) fn recordings(mut self) -> Setup {
        self.recordings = true;
        self
    }

    /// Changes the configuration last (the store takes its PIN pepper from it).
    pub(crate) fn config(mut self, f: fn(&mut Config)) -> Setup {
        self.config = f;
        self
    }

    /// The App on `backend`; `None` where that backend is not available.
    pub(crate) async fn app(self, backend: Backend) -> Option<App> {
        Some(self.app_and_state(backend).await?.0)
    }

    /// [`Setup::app`] and the state its router serves (for the parts tests drive
    /// directly, such as the payments' reconciliation).
    pub(crate) async fn app_and_state(self, backend: Backend) -> Option<(App, AppState)> {
        let t = TestDb::of(backend).await?;
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap(),
        ));
        let rec_dir = self.recordings.then(|| tempfile::tempdir().unwrap());
        let mut config = Config::default();
        config.http.admin_token = self.admin.into();
        config.security.pin_pepper = PEPPER.into();
        if let Some(d) = &rec_dir {
            config.recording.dir = d.path().to_path_buf();
        }
        (self.config)(&mut config);
        let store = Store::new(
            t.db.clone(),
            clock.clone() as Arc<dyn Clock>,
            &config.security.pin_pepper,
        );
        let state = AppState::new(store.clone(), Arc::new(config));
        let app = App {
            router: router(state.clone()),
            clock,
            store,
            admin: self.admin,
            peer: self.peer,
            rec_dir,
            t,
        };
        Some((app, state))
    }
}

/// The battery of a test file: `battery!(a, b)` makes the tests `sqlite::a`, `sqlite::b`,
/// `postgres::a` and `postgres::b`, each calling the file's `async fn a(app: App)` with
/// the file's `app(backend)` (the PostgreSQL ones pass when no server is configured, as
/// `TestDb::of` decides).
#[macro_export]
macro_rules! battery {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::app(super::Backend::Sqlite).await.unwrap()).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { if let Some(a) = super::app(super::Backend::Postgres).await { super::$name(a).await } } )*
        }
    };
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request with `authorization` as the whole header value (if any) and a JSON body (if
/// any).
pub(crate) fn request_with(
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(h) = authorization {
        req = req.header("authorization", h);
    }
    match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap()
}

/// A request with `token` (if any) as its bearer token and a JSON body (if any).
pub(crate) fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    request_with(method, path, token.map(bearer).as_deref(), body.as_ref())
}

/// Sends a request (from the App's peer, if it has one); returns status, headers and body
/// bytes.
pub(crate) async fn fetch(app: &App, mut req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    if let Some(peer) = app.peer {
        req.extensions_mut().insert(ConnectInfo(peer));
    }
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

/// A body as JSON (or, if it is not JSON, as a JSON string).
pub(crate) fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
}

/// Sends one request; returns the status and the body as JSON (or as a JSON string).
pub(crate) async fn send(
    app: &App,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, _, bytes) = fetch(app, request(method, path, token, body)).await;
    (s, json_of(&bytes))
}

/// [`send`] with the configured administrator token.
pub(crate) async fn admin(
    app: &App,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    send(app, method, path, Some(app.admin), body).await
}

/// The error code of an error answer, if it is one.
pub(crate) fn error_code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

pub(crate) fn err_code(v: &Value) -> &str {
    error_code(v).unwrap_or("<no error code>")
}

/// `(id, listenable)` of each call of a `GET /calls/active` answer, in its order.
pub(crate) fn listenable(v: &Value) -> Vec<(&str, bool)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap(),
                c["listenable"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A facility `fid` ("`fid` County Jail", Chicago, deposit limits 100 and 150 a day).
pub(crate) async fn facility(app: &App, fid: &str) {
    let (s, v) = admin(
        app,
        "POST",
        "/api/v1/facilities",
        Some(json!({
            "id": fid, "name": format!("{fid} County Jail"), "time_zone": "America/Chicago",
            "deposit_max": "100.00", "deposit_daily_max": "150.00"
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// An inmate John Doe booked into `fid` as `booking` (no PIN); returns the inmate.
pub(crate) async fn inmate(app: &App, fid: &str, booking: &str) -> Value {
    let (s, inmate) = admin(
        app,
        "POST",
        &format!("/api/v1/facilities/{fid}/inmates"),
        Some(json!({ "booking_number": booking, "first_name": "John", "last_name": "Doe" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{inmate}");
    inmate
}

/// A token from `POST /tokens` (a token-only user), for `ttl` seconds or the default.
pub(crate) async fn issue(
    app: &App,
    username: &str,
    role: &str,
    facilities: &[&str],
    ttl: Option<i64>,
) -> String {
    let mut body = json!({ "username": username, "role": role, "facilities": facilities });
    if let Some(ttl) = ttl {
        body["ttl_secs"] = ttl.into();
    }
    let (s, v) = admin(app, "POST", "/api/v1/tokens", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// An investigator of `facilities` with the password [`PASSWORD`].
pub(crate) async fn user(app: &App, username: &str, facilities: &[&str]) {
    let body = json!({ "username": username, "password": PASSWORD, "role": "investigator",
                       "facilities": facilities });
    let (s, v) = admin(app, "POST", "/api/v1/users", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

pub(crate) async fn login(app: &App, username: &str, password: &str) -> (StatusCode, Value) {
    send(
        app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({ "username": username, "password": password })),
    )
    .await
}

/// A password session of `username` (password [`PASSWORD`]): its token.
pub(crate) async fn session(app: &App, username: &str) -> String {
    let (s, v) = login(app, username, PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// An ended call at the clock's current time (answered and accepted then, ended 30 s
/// later on node n1; recorded unless privileged).
pub(crate) struct Call<'a> {
    pub id: &'a str,
    pub facility: &'a str,
    pub dialed: &'a str,
    pub e164: &'a str,
    pub inmate: Option<&'a str>,
    pub reason: &'a str,
    pub privileged: bool,
}

impl<'a> Call<'a> {
    /// `inmate`'s call to 5551230001, hung up by the callee.
    pub(crate) fn answered(
        id: &'a str,
        facility: &'a str,
        inmate: &'a str,
        privileged: bool,
    ) -> Self {
        Call {
            id,
            facility,
            dialed: "5551230001",
            e164: "+15551230001",
            inmate: Some(inmate),
            reason: "callee_hangup",
            privileged,
        }
    }
}

pub(crate) async fn ended_call(app: &App, c: Call<'_>) {
    opened_call(app, &c).await;
    closed_call(app, &c).await;
}

/// The first half of [`ended_call`]: the session opened (live), for charges to be debited
/// before [`closed_call`] ends it, as a real call's are.
pub(crate) async fn opened_call(app: &App, c: &Call<'_>) {
    let now = app.clock.wall();
    let s = sallyport::session::cdr::NewSession {
        id: c.id,
        facility_id: c.facility,
        handset_id: None,
        dialed: c.dialed,
        node_id: "n1",
        sip_call_id: None,
    };
    sallyport::session::cdr::open_call(&app.t.db, &s, now)
        .await
        .unwrap();
}

/// The second half of [`ended_call`]: the session closed, its charges read from the ledger.
pub(crate) async fn closed_call(app: &App, c: &Call<'_>) {
    let now = app.clock.wall();
    let end = sallyport::session::cdr::SessionEnd {
        reason: c.reason,
        inmate_id: c.inmate,
        number_e164: Some(c.e164),
        privileged: c.privileged,
        recorded: !c.privileged,
        answer_at: Some(now),
        accepted_at: Some(now),
        end_at: now + chrono::Duration::seconds(30),
    };
    assert!(sallyport::session::cdr::close(&app.t.db, c.id, &end)
        .await
        .unwrap());
}

/// A live call to 5551230009 on node n1 (not this process): `accepted` marks it accepted
/// (bridged), `privileged` as to an attorney.
pub(crate) async fn live_call(
    app: &App,
    id: &str,
    facility: &str,
    accepted: bool,
    privileged: bool,
) {
    let now = app.clock.wall();
    let s = sallyport::session::cdr::NewSession {
        id,
        facility_id: facility,
        handset_id: None,
        dialed: "5551230009",
        node_id: "n1",
        sip_call_id: None,
    };
    sallyport::session::cdr::open_call(&app.t.db, &s, now)
        .await
        .unwrap();
    let p = sallyport::session::cdr::Progress {
        number_e164: Some("+15551230009"),
        privileged: Some(privileged),
        answer_at: accepted.then_some(now),
        accepted_at: accepted.then_some(now),
    };
    sallyport::session::cdr::progress(&app.t.db, id, &p)
        .await
        .unwrap();
}

/// A stereo μ-law WAV (the recorder's header) of `data_len` data bytes, a known pattern.
pub(crate) fn wav(data_len: usize) -> Vec<u8> {
    let mut wav = wav::header(Law::Ulaw, data_len as u32).to_vec();
    wav.extend((0..data_len).map(|i| (i % 251) as u8));
    wav
}

/// A [`wav`] of `data_len` data bytes for `session`, written under the recordings
/// directory and registered at the clock's time; when `finish`, finished (30 s later) and
/// chained. Returns (recording id, file bytes).
pub(crate) async fn recording(
    app: &App,
    session: &str,
    facility: &str,
    data_len: usize,
    finish: bool,
) -> (String, Vec<u8>) {
    let wav = wav(data_len);
    let rel = format!("2026/03/02/{session}.wav");
    let path = app.recordings().join(&rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &wav).unwrap();
    let started = app.clock.wall();
    let id = app
        .store
        .start_recording(NewRecording {
            session_id: session,
            facility_id: facility,
            path: &rel,
            format: wav::format_name(Law::Ulaw),
            node_id: "n1",
            started_at: started,
        })
        .await
        .unwrap();
    if finish {
        let f = FinishedRecording {
            ended_at: started + chrono::Duration::seconds(30),
            duration_ms: (data_len as i64) * 1000 / 16000,
            bytes: wav.len() as i64,
            sha256: hex::encode(Sha256::digest(&wav)),
            dropped_packets: 0,
            complete: true,
        };
        app.store.finish_recording(&id, &f).await.unwrap();
    }
    (id, wav)
}
