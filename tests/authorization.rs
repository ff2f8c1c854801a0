//! The authorization matrix of the investigation surface, through the real router
//! (`tower::ServiceExt::oneshot`), on SQLite and PostgreSQL.
//!
//! Every route is one row of [`routes`]; every row is tried by every caller of [`Who`]:
//! no token, a malformed header, an unknown token, an expired token (password session and
//! issued token), a logged-out token (both kinds), family and kiosk tokens, an
//! investigator of the other facility, an administrator of the call's facility only, an
//! investigator of the call's facility and the configured administrator. Rows that name a
//! call or a recording are tried again on a privileged call. For each request the test
//! asserts the exact status and error code and how the audit log moved: refusals leave
//! nothing, privileged refusals leave their entry, allowed accesses leave theirs.
//!
//! Without a gateway (no SIP side in-process) the listen and terminate routes stop at "not
//! on this node" for a permitted caller; every refusal above must come before that.
//! What the matrix establishes beyond the rows: another facility's call or recording is
//! refused with 403 (its existence is not hidden; ids are random UUIDv7), a search without
//! a facility is narrowed to the caller's own, and recording tickets are checked by the
//! ticket alone (see `ticket_matrix`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::http::StatusCode;
use sallyport::db::Backend;
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::inproc::{
    self, admin, bearer, ended_call, error_code as err_code, fetch, issue, json_of, live_call,
    recording, request_with, session, user, App, Call, Setup, PASSWORD,
};

const ADMIN: &str = "authz-admin-token";
const PEER: &str = "198.51.100.9:5060";
const PEPPER: &str = "authz-pepper-0123456789";
/// Password sessions last this long here (the config minimum is 60 s).
const SESSION_TTL: u64 = 600;
/// A listener id that exists nowhere.
const NO_LISTENER: &str = "lst_0000000000";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN)
        .peer(PEER)
        .recordings()
        .config(|c| {
            c.http.session_ttl_secs = SESSION_TTL;
            c.security.pin_pepper = PEPPER.into();
        })
        .app(backend)
        .await
}

/// One request from [`PEER`] with `authorization` as the whole header value (if any);
/// returns the status, the body as JSON (raw bytes as a JSON string otherwise) and bytes.
async fn call(
    app: &App,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value, Vec<u8>) {
    let (s, _, bytes) = fetch(app, request_with(method, path, authorization, body)).await;
    (s, json_of(&bytes), bytes)
}

fn ids(v: &Value) -> Vec<String> {
    let list = v.get("items").unwrap_or(v);
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn audit_count(app: &App) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM audit_log")
        .fetch_one(app.t.db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn last_audit(app: &App) -> Value {
    let (s, v) = admin(app, "GET", "/api/v1/audit?limit=1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v[0].clone()
}

/// Who calls. `F1` is the facility every row's call and recording belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    NoToken,
    Malformed,
    UnknownToken,
    /// A global administrator's issued token, past its expiry.
    ExpiredToken,
    /// An F1 investigator's password session, past its expiry.
    ExpiredLogin,
    /// A global administrator's issued token, logged out.
    LoggedOutToken,
    /// An F1 investigator's password session, logged out.
    LoggedOutLogin,
    Family,
    Kiosk,
    /// An investigator of F2.
    OtherFacility,
    /// An administrator of F1 only.
    FacilityAdmin,
    /// An investigator of F1.
    Investigator,
    /// The configured administrator token (every facility).
    Admin,
}

const EVERYONE: [Who; 13] = [
    Who::NoToken,
    Who::Malformed,
    Who::UnknownToken,
    Who::ExpiredToken,
    Who::ExpiredLogin,
    Who::LoggedOutToken,
    Who::LoggedOutLogin,
    Who::Family,
    Who::Kiosk,
    Who::OtherFacility,
    Who::FacilityAdmin,
    Who::Investigator,
    Who::Admin,
];

impl Who {
    /// The audit actor of this caller's entries.
    fn subject(self) -> &'static str {
        match self {
            Who::Family => "family-1",
            Who::Kiosk => "kiosk-1",
            Who::OtherFacility => "inv-f2",
            Who::FacilityAdmin => "admin-f1",
            Who::Investigator => "inv-f1",
            Who::Admin => "admin",
            _ => "<nobody>",
        }
    }

    fn authenticated(self) -> bool {
        matches!(
            self,
            Who::Family
                | Who::Kiosk
                | Who::OtherFacility
                | Who::FacilityAdmin
                | Who::Investigator
                | Who::Admin
        )
    }
}

/// Who may pass a route's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Admins and investigators of the call's (recording's) facility.
    Investigate,
    /// Administrators of every facility.
    GlobalAdmin,
    /// Any valid token.
    AnyUser,
}

impl Gate {
    fn permits(self, who: Who) -> bool {
        match self {
            Gate::Investigate => matches!(who, Who::Investigator | Who::FacilityAdmin | Who::Admin),
            Gate::GlobalAdmin => who == Who::Admin,
            Gate::AnyUser => who.authenticated(),
        }
    }
}

type Outcome = (StatusCode, Option<&'static str>);

const UNAUTHORIZED: Outcome = (StatusCode::UNAUTHORIZED, Some("unauthorized"));
const FORBIDDEN: Outcome = (StatusCode::FORBIDDEN, Some("forbidden"));
const PRIVILEGED: Outcome = (StatusCode::FORBIDDEN, Some("privileged"));
/// A live call of node n1, which never registered its API address (no SIP side here): a
/// permitted caller's request is forwarded, and cannot be.
const NODE_UNKNOWN: Outcome = (StatusCode::SERVICE_UNAVAILABLE, Some("node_unknown"));

/// What a permitted caller gets on a privileged call, and the entry it leaves.
struct OnPrivileged {
    path: String,
    outcome: Outcome,
    audited: Option<&'static str>,
}

struct Route {
    name: &'static str,
    method: &'static str,
    path: String,
    body: Option<Value>,
    gate: Gate,
    /// What a permitted caller gets (not always 2xx: see the module doc).
    allowed: Outcome,
    /// The audit action an allowed 2xx answer writes.
    audited: Option<&'static str>,
    /// A JSON field of the allowed answer and its value (`/id`, …).
    shows: Option<(&'static str, Value)>,
    /// Outcomes that differ from what the gate implies, by caller.
    except: Vec<(Who, Outcome)>,
    /// The route ends the token it is called with (logout): fresh tokens per request.
    consumes_token: bool,
    privileged: Option<OnPrivileged>,
}

impl Route {
    fn new(
        name: &'static str,
        method: &'static str,
        path: String,
        gate: Gate,
        allowed: Outcome,
    ) -> Route {
        Route {
            name,
            method,
            path,
            body: None,
            gate,
            allowed,
            audited: None,
            shows: None,
            except: Vec::new(),
            consumes_token: false,
            privileged: None,
        }
    }
    fn body(mut self, b: Value) -> Route {
        self.body = Some(b);
        self
    }
    fn audited(mut self, action: &'static str) -> Route {
        self.audited = Some(action);
        self
    }
    fn shows(mut self, pointer: &'static str, v: Value) -> Route {
        self.shows = Some((pointer, v));
        self
    }
    fn except(mut self, who: Who, o: Outcome) -> Route {
        self.except.push((who, o));
        self
    }
    fn privileged(
        mut self,
        path: String,
        outcome: Outcome,
        audited: Option<&'static str>,
    ) -> Route {
        self.privileged = Some(OnPrivileged {
            path,
            outcome,
            audited,
        });
        self
    }

    /// The expected answer for `who` on the normal target (`privileged` = false) or on
    /// the privileged call.
    fn expect(&self, who: Who, privileged: bool) -> Outcome {
        if !who.authenticated() {
            return UNAUTHORIZED;
        }
        if let Some((_, o)) = self.except.iter().find(|(w, _)| *w == who) {
            return *o;
        }
        if !self.gate.permits(who) {
            return FORBIDDEN;
        }
        match (privileged, &self.privileged) {
            (true, Some(p)) => p.outcome,
            _ => self.allowed,
        }
    }
}

/// The fixtures: two facilities, calls and recordings, and every caller's token.
struct World {
    tokens: HashMap<Who, String>,
    rec_a: String,
    rec_b: String,
    rec_priv: String,
    wav_a: Vec<u8>,
    inmate_f1: String,
    users: AtomicUsize,
}

impl World {
    /// The Authorization header value `who` sends.
    fn header(&self, who: Who) -> Option<String> {
        match who {
            Who::NoToken => None,
            Who::Malformed => Some(format!("Basic {ADMIN}")),
            Who::UnknownToken => Some(bearer("spt_not_a_token_anyone_was_given")),
            _ => Some(bearer(&self.tokens[&who])),
        }
    }
}

/// A facility with one booked inmate (booking `fid`-1); returns the inmate id.
async fn facility(app: &App, fid: &str) -> String {
    inproc::facility(app, fid).await;
    let inmate = inproc::inmate(app, fid, &format!("{fid}-1")).await;
    inmate["id"].as_str().unwrap().to_string()
}

async fn logout(app: &App, token: &str) {
    let (s, v, _) = call(
        app,
        "POST",
        "/api/v1/auth/logout",
        Some(&bearer(token)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}

/// A fresh token of `who` (for routes that end the token they are called with).
async fn fresh(app: &App, w: &World, who: Who) -> Option<String> {
    let token = match who {
        Who::Family => issue(app, "family-1", "family", &["F1"], Some(3600)).await,
        Who::Kiosk => issue(app, "kiosk-1", "kiosk", &["F1"], Some(3600)).await,
        Who::FacilityAdmin => issue(app, "admin-f1", "admin", &["F1"], Some(3600)).await,
        Who::OtherFacility => session(app, "inv-f2").await,
        Who::Investigator => session(app, "inv-f1").await,
        _ => return w.header(who),
    };
    Some(bearer(&token))
}

async fn world(app: &App) -> World {
    let inmate_f1 = facility(app, "F1").await;
    let inmate_f2 = facility(app, "F2").await;
    // F1: an ended call with its recording, a privileged ended call, a live call and a
    // live privileged call. F2: an ended call with its recording and a live call.
    ended_call(app, Call::answered("a-done", "F1", &inmate_f1, false)).await;
    ended_call(app, Call::answered("a-priv", "F1", &inmate_f1, true)).await;
    live_call(app, "a-live", "F1", true, false).await;
    live_call(app, "a-live-priv", "F1", true, true).await;
    ended_call(app, Call::answered("b-done", "F2", &inmate_f2, false)).await;
    live_call(app, "b-live", "F2", true, false).await;
    let (rec_a, wav_a) = recording(app, "a-done", "F1", 1600, true).await;
    let (rec_b, _) = recording(app, "b-done", "F2", 1600, true).await;
    // A privileged call is never recorded; this row stands for one that is there anyway
    // (a capture bug, a restored backup): every recording route must still refuse it.
    let (rec_priv, _) = recording(app, "a-priv", "F1", 1600, true).await;

    user(app, "inv-f1", &["F1"]).await;
    user(app, "inv-f2", &["F2"]).await;
    user(app, "inv-f1-old", &["F1"]).await;
    user(app, "inv-f1-gone", &["F1"]).await;
    // Expired: issued now, then the clock moves past both lifetimes.
    let mut tokens = HashMap::new();
    tokens.insert(Who::ExpiredLogin, session(app, "inv-f1-old").await);
    tokens.insert(
        Who::ExpiredToken,
        issue(app, "admin-old", "admin", &[], Some(60)).await,
    );
    app.clock.advance(Duration::from_secs(SESSION_TTL));
    let (s, _, _) = call(
        app,
        "GET",
        "/api/v1/auth/me",
        Some(&bearer(&tokens[&Who::ExpiredLogin])),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired at exactly its TTL");
    // Logged out.
    let gone = session(app, "inv-f1-gone").await;
    logout(app, &gone).await;
    tokens.insert(Who::LoggedOutLogin, gone);
    let gone = issue(app, "admin-gone", "admin", &[], Some(3600)).await;
    logout(app, &gone).await;
    tokens.insert(Who::LoggedOutToken, gone);
    // Valid tokens of every kind.
    tokens.insert(
        Who::Family,
        issue(app, "family-1", "family", &["F1"], Some(3600)).await,
    );
    tokens.insert(
        Who::Kiosk,
        issue(app, "kiosk-1", "kiosk", &["F1"], Some(3600)).await,
    );
    tokens.insert(
        Who::FacilityAdmin,
        issue(app, "admin-f1", "admin", &["F1"], Some(3600)).await,
    );
    tokens.insert(Who::OtherFacility, session(app, "inv-f2").await);
    tokens.insert(Who::Investigator, session(app, "inv-f1").await);
    tokens.insert(Who::Admin, ADMIN.to_string());
    World {
        tokens,
        rec_a,
        rec_b,
        rec_priv,
        wav_a,
        inmate_f1,
        users: AtomicUsize::new(0),
    }
}

/// Every route of the investigation surface.
fn routes(w: &World) -> Vec<Route> {
    use Gate::*;
    let ok = (StatusCode::OK, None);
    let offer = json!({ "sdp": "v=0\r\n", "type": "offer" });
    let (a, p) = (&w.rec_a, &w.rec_priv);
    vec![
        // Search: without a facility an investigator of F2 gets F2's rows (see `scope`).
        Route::new("search", "GET", "/api/v1/calls".into(), Investigate, ok)
            .audited("call.search")
            .except(Who::OtherFacility, ok),
        Route::new(
            "search F1",
            "GET",
            "/api/v1/calls?facility_id=F1".into(),
            Investigate,
            ok,
        )
        .audited("call.search")
        .shows("/total", json!(4)),
        Route::new(
            "active",
            "GET",
            "/api/v1/calls/active".into(),
            Investigate,
            ok,
        )
        .except(Who::OtherFacility, ok),
        Route::new(
            "active F1",
            "GET",
            "/api/v1/calls/active?facility_id=F1".into(),
            Investigate,
            ok,
        ),
        // The CDR of a privileged call is visible; its recording never is.
        Route::new(
            "call",
            "GET",
            "/api/v1/calls/a-done".into(),
            Investigate,
            ok,
        )
        .shows("/recording/id", json!(a))
        .privileged("/api/v1/calls/a-priv".into(), ok, None),
        // Terminating a privileged call reveals nothing of it: not refused.
        Route::new(
            "terminate",
            "POST",
            "/api/v1/calls/a-live/terminate".into(),
            Investigate,
            NODE_UNKNOWN,
        )
        .privileged(
            "/api/v1/calls/a-live-priv/terminate".into(),
            NODE_UNKNOWN,
            None,
        ),
        Route::new(
            "call recording",
            "GET",
            "/api/v1/calls/a-done/recording".into(),
            Investigate,
            ok,
        )
        .shows("/id", json!(a))
        .privileged(
            "/api/v1/calls/a-priv/recording".into(),
            PRIVILEGED,
            Some("recording.refused"),
        ),
        Route::new(
            "listen",
            "POST",
            "/api/v1/calls/a-live/listen".into(),
            Investigate,
            NODE_UNKNOWN,
        )
        .body(offer)
        .privileged(
            "/api/v1/calls/a-live-priv/listen".into(),
            PRIVILEGED,
            Some("call.listen_refused"),
        ),
        // Stopping a listener: none can exist on a privileged call, so nothing to refuse;
        // it is asked for on the node that carries the call.
        Route::new(
            "unlisten",
            "DELETE",
            format!("/api/v1/calls/a-live/listen/{NO_LISTENER}"),
            Investigate,
            NODE_UNKNOWN,
        )
        .privileged(
            format!("/api/v1/calls/a-live-priv/listen/{NO_LISTENER}"),
            NODE_UNKNOWN,
            None,
        ),
        Route::new(
            "recording",
            "GET",
            format!("/api/v1/recordings/{a}"),
            Investigate,
            ok,
        )
        .shows("/session_id", json!("a-done"))
        .privileged(
            format!("/api/v1/recordings/{p}"),
            PRIVILEGED,
            Some("recording.refused"),
        ),
        Route::new(
            "play",
            "POST",
            format!("/api/v1/recordings/{a}/play"),
            Investigate,
            ok,
        )
        .audited("recording.play")
        .privileged(
            format!("/api/v1/recordings/{p}/play"),
            PRIVILEGED,
            Some("recording.refused"),
        ),
        Route::new(
            "download",
            "POST",
            format!("/api/v1/recordings/{a}/download"),
            Investigate,
            ok,
        )
        .audited("recording.download")
        .privileged(
            format!("/api/v1/recordings/{p}/download"),
            PRIVILEGED,
            Some("recording.refused"),
        ),
        Route::new(
            "audio (bearer)",
            "GET",
            format!("/api/v1/recordings/{a}/audio"),
            Investigate,
            ok,
        )
        .audited("recording.play")
        .privileged(
            format!("/api/v1/recordings/{p}/audio"),
            PRIVILEGED,
            Some("recording.refused"),
        ),
        Route::new(
            "verify one",
            "GET",
            format!("/api/v1/recordings/{a}/verify"),
            Investigate,
            ok,
        )
        .audited("recording.verify")
        .privileged(
            format!("/api/v1/recordings/{p}/verify"),
            PRIVILEGED,
            Some("recording.refused"),
        ),
        Route::new(
            "verify all",
            "GET",
            "/api/v1/recordings/verify".into(),
            GlobalAdmin,
            ok,
        ),
        Route::new("audit", "GET", "/api/v1/audit".into(), GlobalAdmin, ok),
        Route::new(
            "audit verify",
            "GET",
            "/api/v1/audit/verify".into(),
            GlobalAdmin,
            ok,
        )
        .shows("/problems", json!([])),
        // The body is a template: each request names a new user.
        Route::new(
            "create user",
            "POST",
            "/api/v1/users".into(),
            GlobalAdmin,
            (StatusCode::CREATED, None),
        )
        .body(json!({ "password": PASSWORD, "role": "investigator", "facilities": ["F1"] }))
        .audited("user.create"),
        Route::new("me", "GET", "/api/v1/auth/me".into(), AnyUser, ok),
        // The configured administrator token cannot be logged out.
        Route {
            consumes_token: true,
            ..Route::new(
                "logout",
                "POST",
                "/api/v1/auth/logout".into(),
                AnyUser,
                (StatusCode::NO_CONTENT, None),
            )
            .audited("auth.logout")
            .except(Who::Admin, (StatusCode::BAD_REQUEST, Some("bad_request")))
        },
    ]
}

/// Sends `route` (its privileged variant when `privileged`) as `who`; checks the answer
/// and the audit log.
async fn check(app: &App, w: &World, route: &Route, who: Who, privileged: bool) {
    let want = route.expect(who, privileged);
    let path = match (privileged, &route.privileged) {
        (true, Some(p)) => p.path.as_str(),
        _ => route.path.as_str(),
    };
    let header = match route.consumes_token {
        true => fresh(app, w, who).await,
        false => w.header(who),
    };
    let body = route.body.clone().map(|mut b| {
        if route.name == "create user" {
            let n = w.users.fetch_add(1, Ordering::Relaxed);
            b["username"] = json!(format!("new-user-{n}"));
        }
        b
    });
    let before = audit_count(app).await;
    let (s, v, _) = call(app, route.method, path, header.as_deref(), body.as_ref()).await;
    let what = format!(
        "{} ({}{path}) as {who:?}",
        route.name,
        if privileged { "privileged: " } else { "" }
    );
    assert_eq!((s, err_code(&v)), want, "{what}: {v}");
    // What the audit log must show.
    let entry = if s.is_success() {
        route.audited
    } else if want == PRIVILEGED {
        route.privileged.as_ref().and_then(|p| p.audited)
    } else {
        None
    };
    let after = audit_count(app).await;
    match entry {
        None => assert_eq!(after, before, "{what}: no audit entry expected"),
        Some(action) => {
            assert_eq!(after, before + 1, "{what}: one audit entry expected");
            let e = last_audit(app).await;
            assert_eq!(
                (
                    e["action"].as_str(),
                    e["actor"].as_str(),
                    e["remote_addr"].as_str()
                ),
                (Some(action), Some(who.subject()), Some(PEER)),
                "{what}: {e}"
            );
            if want == PRIVILEGED {
                assert_eq!(e["facility_id"], "F1", "{what}: {e}");
            }
        }
    }
    if s.is_success() && !privileged {
        if let Some((pointer, value)) = &route.shows {
            if who != Who::OtherFacility {
                assert_eq!(v.pointer(pointer), Some(value), "{what}: {v}");
            }
        }
    }
}

/// The whole matrix: every route × every caller, then the privileged variants.
async fn matrix(app: App) {
    let w = world(&app).await;
    let routes = routes(&w);
    for route in &routes {
        for who in EVERYONE {
            check(&app, &w, route, who, false).await;
        }
        if route.privileged.is_some() {
            for who in EVERYONE {
                check(&app, &w, route, who, true).await;
            }
        }
    }
    // Every permitted caller was really let through somewhere (the matrix does not pass by
    // refusing everyone).
    for who in [Who::Investigator, Who::FacilityAdmin, Who::Admin] {
        let through = routes
            .iter()
            .filter(|r| r.expect(who, false).0.is_success())
            .count();
        assert!(through >= 10, "{who:?} allowed on {through} routes only");
    }
    app.t.cleanup().await;
}

/// Facility scope beyond status codes: what a search shows, and what the answers tell.
async fn scope(app: App) {
    let w = world(&app).await;
    let get = |who: Who, path: String| {
        let h = w.header(who);
        let app = &app;
        async move {
            let (s, v, _) = call(app, "GET", &path, h.as_deref(), None).await;
            assert_eq!(s, StatusCode::OK, "{who:?} {path}: {v}");
            v
        }
    };
    let f1 = ["a-done", "a-live", "a-live-priv", "a-priv"];
    let f2 = ["b-done", "b-live"];
    let all: Vec<&str> = {
        let mut all = [&f1[..], &f2[..]].concat();
        all.sort();
        all
    };
    for (who, want) in [
        (Who::OtherFacility, &f2[..]),
        (Who::Investigator, &f1[..]),
        (Who::FacilityAdmin, &f1[..]),
        (Who::Admin, &all[..]),
    ] {
        let v = get(who, "/api/v1/calls".into()).await;
        assert_eq!(ids(&v), want, "{who:?}: {v}");
        assert_eq!(v["total"].as_u64(), Some(want.len() as u64), "{who:?}");
        let v = get(who, "/api/v1/calls/active".into()).await;
        let live: Vec<&str> = want
            .iter()
            .copied()
            .filter(|c| c.contains("live"))
            .collect();
        assert_eq!(ids(&v), live, "{who:?} active: {v}");
    }
    // Another facility's inmate or booking number finds nothing.
    let v = get(
        Who::OtherFacility,
        format!("/api/v1/calls?inmate_id={}", w.inmate_f1),
    )
    .await;
    assert_eq!((ids(&v).len(), v["total"].as_u64()), (0, Some(0)), "{v}");
    let v = get(
        Who::OtherFacility,
        "/api/v1/calls?booking_number=F1-1".into(),
    )
    .await;
    assert_eq!(ids(&v).len(), 0, "{v}");
    // A privileged live call is listed, never as listenable.
    let v = get(Who::Investigator, "/api/v1/calls/active".into()).await;
    let listenable: HashMap<&str, bool> = inproc::listenable(&v).into_iter().collect();
    assert_eq!(
        listenable,
        HashMap::from([("a-live", true), ("a-live-priv", false)])
    );
    // The CDR of a privileged call never shows a recording, even one that is there.
    let v = get(Who::Investigator, "/api/v1/calls/a-priv".into()).await;
    assert!(v["recording"].is_null(), "{v}");
    // Existence is not hidden across facilities: another facility's call is 403, an
    // unknown one 404 (ids are random, so this tells nothing worth guessing for).
    let other = w.header(Who::OtherFacility);
    for (path, want) in [
        ("/api/v1/calls/a-done", FORBIDDEN),
        (
            "/api/v1/calls/no-such-call",
            (StatusCode::NOT_FOUND, Some("not_found")),
        ),
        (
            "/api/v1/recordings/rec_nope",
            (StatusCode::NOT_FOUND, Some("not_found")),
        ),
    ] {
        let (s, v, _) = call(&app, "GET", path, other.as_deref(), None).await;
        assert_eq!((s, err_code(&v)), want, "{path}: {v}");
    }
    // The privileged refusal comes after the facility check: an outsider learns nothing
    // of the call's privilege.
    for who in [Who::OtherFacility, Who::Family, Who::Kiosk] {
        let (s, v, _) = call(
            &app,
            "GET",
            "/api/v1/calls/a-priv/recording",
            w.header(who).as_deref(),
            None,
        )
        .await;
        assert_eq!((s, err_code(&v)), FORBIDDEN, "{who:?}: {v}");
    }
    app.t.cleanup().await;
}

/// `GET /recordings/{id}/audio?ticket=…`: the ticket stands for the token that asked for
/// it: access is checked (and audited) when it is issued and again at every fetch, a
/// download ticket's fetch and a play ticket's fetch from byte 0 are audited, refusals
/// are not.
async fn ticket_matrix(app: App) {
    let w = world(&app).await;
    let ticket = |who: Who, rec: String, purpose: &'static str| {
        let h = w.header(who);
        let app = &app;
        async move {
            let path = format!("/api/v1/recordings/{rec}/{purpose}");
            let (s, v, _) = call(app, "POST", &path, h.as_deref(), None).await;
            assert_eq!(s, StatusCode::OK, "{who:?} {path}: {v}");
            v["url"].as_str().unwrap().to_string()
        }
    };
    let audio = |url: String| {
        let app = &app;
        async move {
            let before = audit_count(app).await;
            let (s, v, bytes) = call(app, "GET", &url, None, None).await;
            let audited = audit_count(app).await - before;
            if s != StatusCode::OK {
                assert_eq!(audited, 0, "a refused fetch is not audited: {url}");
            }
            (s, err_code(&v).map(str::to_string), bytes, audited)
        }
    };
    let a = &w.rec_a;
    // Allowed: the investigator's and the administrator's tickets play without a header.
    for who in [Who::Investigator, Who::FacilityAdmin, Who::Admin] {
        let url = ticket(who, a.clone(), "play").await;
        let (s, _, bytes, audited) = audio(url).await;
        assert_eq!(
            (s, bytes == w.wav_a, audited),
            (StatusCode::OK, true, 1),
            "{who:?}"
        );
        let url = ticket(who, a.clone(), "download").await;
        assert!(url.ends_with("&download=1"), "{url}");
        let (s, _, bytes, audited) = audio(url).await;
        assert_eq!(
            (s, bytes.len(), audited),
            (StatusCode::OK, w.wav_a.len(), 1),
            "{who:?}"
        );
    }
    // No ticket and no token; a ticket that is not one; a forged MAC.
    let url = ticket(Who::Investigator, a.clone(), "play").await;
    let base = format!("/api/v1/recordings/{a}/audio");
    let mut forged = url.clone().into_bytes();
    let at = forged.len() - 1;
    forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    for (u, want) in [
        (base.clone(), "unauthorized"),
        (format!("{base}?ticket="), "invalid_ticket"),
        (format!("{base}?ticket=00.00"), "invalid_ticket"),
        (forged, "invalid_ticket"),
    ] {
        let (s, code, _, _) = audio(u.clone()).await;
        assert_eq!(
            (s, code.as_deref()),
            (StatusCode::UNAUTHORIZED, Some(want)),
            "{u}"
        );
    }
    // Wrong role or facility cannot get a ticket (the play row of `matrix`); a ticket of
    // another facility's recording does not open this one, nor does a play ticket download.
    let other = ticket(Who::OtherFacility, w.rec_b.clone(), "play").await;
    let (s, code, _, _) = audio(other.replace(&w.rec_b, a)).await;
    assert_eq!(
        (s, code.as_deref()),
        (StatusCode::FORBIDDEN, Some("ticket_mismatch"))
    );
    let (s, code, _, _) = audio(format!("{url}&download=1")).await;
    assert_eq!(
        (s, code.as_deref()),
        (StatusCode::FORBIDDEN, Some("ticket_purpose"))
    );
    // A privileged call's recording never gets a ticket (refused and audited).
    for purpose in ["play", "download"] {
        let path = format!("/api/v1/recordings/{}/{purpose}", w.rec_priv);
        let (s, v, _) = call(
            &app,
            "POST",
            &path,
            w.header(Who::Investigator).as_deref(),
            None,
        )
        .await;
        assert_eq!((s, err_code(&v)), PRIVILEGED, "{path}: {v}");
        assert_eq!(last_audit(&app).await["action"], "recording.refused");
    }
    // Logging out ends the token and the tickets it obtained.
    let session = session(&app, "inv-f1").await;
    let (s, v, _) = call(
        &app,
        "POST",
        &format!("/api/v1/recordings/{a}/play"),
        Some(&bearer(&session)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let after_logout = v["url"].as_str().unwrap().to_string();
    logout(&app, &session).await;
    let (s, _, _) = call(
        &app,
        "POST",
        &format!("/api/v1/recordings/{a}/play"),
        Some(&bearer(&session)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, code, _, _) = audio(after_logout).await;
    assert_eq!(
        (s, code.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("ticket_revoked"))
    );
    // Expired: 900 s plus the recording's 1 s (0.1 s rounded up). (The configured admin
    // token's ticket: the token itself does not expire meanwhile.)
    let url = ticket(Who::Admin, a.clone(), "play").await;
    app.clock.advance(Duration::from_secs(901));
    let (s, code, _, _) = audio(url.clone()).await;
    assert_eq!(s, StatusCode::OK, "valid to its last second: {code:?}");
    app.clock.advance(Duration::from_secs(1));
    let (s, code, _, _) = audio(url).await;
    assert_eq!(
        (s, code.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("ticket_expired"))
    );
    app.t.cleanup().await;
}

battery!(matrix, scope, ticket_matrix);
