//! Finding an inmate and linking a family number (issue 12).
//!
//! In process, on SQLite and PostgreSQL: a roster search shows only roster fields and
//! refuses what would list the roster; a request waits for its number to be proved; a
//! keyed code is judged by the store as the confirmation call has it judged (wrong,
//! expired, the attempt limit); staff approve (the family then reads the account) or
//! deny with a reason (the family sees it); a family withdraws; another account sees
//! nothing of it.
//!
//! End to end (the real binary, sipp as the trunk): the gateway calls the number, the
//! called party keys the code shown to the family (RFC 4733), the request is proved;
//! a wrong code keyed on a second call is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sallyport::db::Backend;
use sallyport::family::linking::{code_hash, Keyed};
use sallyport::store::Registration;
use serde_json::{json, Value};
use std::time::Duration;
use support::inproc::{admin, facility, fetch, inmate, json_of, App, Setup};

const ADMIN: &str = "linking-admin-token";
const PASSWORD: &str = "correct horse battery";
const FAMILY_NUMBER: &str = "+15557654321";

async fn app(backend: Backend) -> Option<App> {
    Setup::new(ADMIN).app(backend).await
}

battery!(
    search_shows_only_roster_fields_and_refuses_enumeration,
    a_proved_and_approved_request_links_the_family,
    wrong_and_expired_codes_and_the_attempt_limit,
    a_denial_shows_its_reason_and_requests_can_be_withdrawn,
    blocked_numbers_are_refused_and_searches_are_limited,
);

/// A family session: its cookie value and CSRF token.
struct Family {
    cookie: String,
    csrf: String,
}

/// A verified family account for `email`, logged in.
async fn family(app: &App, email: &str) -> Family {
    let Registration::Created(account) = app.store.family_register(email, PASSWORD).await.unwrap()
    else {
        panic!("{email} registered already");
    };
    assert!(app
        .store
        .family_verify(&account.user_id, email)
        .await
        .unwrap());
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/family/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "email": email, "password": PASSWORD }).to_string(),
        ))
        .unwrap();
    let (s, h, bytes) = fetch(app, req).await;
    let v = json_of(&bytes);
    assert_eq!(s, StatusCode::OK, "{v}");
    let set = h["set-cookie"].to_str().unwrap();
    let cookie = set
        .strip_prefix("sp_family=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    Family {
        cookie,
        csrf: v["csrf_token"].as_str().unwrap().to_string(),
    }
}

/// A request under `/api/v1/family` as `f` (with its CSRF token).
async fn as_family(
    app: &App,
    f: &Family,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("/api/v1/family{path}"))
        .header("cookie", format!("sp_family={}", f.cookie))
        .header("x-csrf-token", &f.csrf);
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let (s, _, bytes) = fetch(app, req).await;
    (s, json_of(&bytes))
}

/// The DEMO facility with John Doe (B-100) and Jane Roe (B-200); John's id.
async fn roster(app: &App) -> String {
    facility(app, "DEMO").await;
    let john = inmate(app, "DEMO", "B-100").await;
    let (s, v) = admin(
        app,
        "POST",
        "/api/v1/facilities/DEMO/inmates",
        Some(json!({ "booking_number": "B-200", "first_name": "Jane", "last_name": "Roe" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    john["id"].as_str().unwrap().to_string()
}

/// A request of `f` for John's number [`FAMILY_NUMBER`]; its id.
async fn request(app: &App, f: &Family, inmate_id: &str, video: bool) -> String {
    let body = json!({ "inmate_id": inmate_id, "number": FAMILY_NUMBER, "name": "Ana Doe",
                       "relationship": "sister", "video": video });
    let (s, v) = as_family(app, f, "POST", "/links", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "pending_verification", "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// The code key of the in-process app's configuration (its pepper).
fn key() -> [u8; 32] {
    let mut c = sallyport::config::Config::default();
    c.security.pin_pepper = support::inproc::PEPPER.into();
    sallyport::call::verify::code_key(&c)
}

/// What the confirmation call does: a code in force for 10 minutes (as the call route
/// stores it), then `keyed` keyed on the call.
async fn call_and_key(app: &App, id: &str, code: &str, keyed: &str) -> Keyed {
    let expires = app.store.clock().wall() + chrono::Duration::minutes(10);
    app.store
        .link_new_code(id, &code_hash(&key(), id, code), expires)
        .await
        .unwrap();
    app.store
        .link_keyed(id, &code_hash(&key(), id, keyed), 3)
        .await
        .unwrap()
}

async fn link_of(app: &App, f: &Family, id: &str) -> Value {
    let (s, v) = as_family(app, f, "GET", "/links", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no link {id} in {v}"))
}

async fn search_shows_only_roster_fields_and_refuses_enumeration(app: App) {
    roster(&app).await;
    let f = family(&app, "ana@example.org").await;
    let (s, v) = as_family(
        &app,
        &f,
        "GET",
        "/roster?facility=DEMO&booking_number=b-100",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let found = v["inmates"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    let mut keys: Vec<&str> = found[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "booking_number",
            "facility_id",
            "facility_name",
            "first_name",
            "inmate_id",
            "last_name"
        ],
        "only what a public roster shows"
    );
    assert_eq!(found[0]["last_name"], "Doe");
    assert_eq!(v["more"], false);

    // By whole last name (any case), narrowed by the start of the first name.
    let (_, v) = as_family(&app, &f, "GET", "/roster?facility=DEMO&last_name=ROE", None).await;
    assert_eq!(v["inmates"][0]["first_name"], "Jane", "{v}");
    let (_, v) = as_family(
        &app,
        &f,
        "GET",
        "/roster?facility=DEMO&last_name=roe&first_name=x",
        None,
    )
    .await;
    assert_eq!(v["inmates"].as_array().unwrap().len(), 0, "{v}");
    // A part of a name is not a search: no listing by initials.
    let (_, v) = as_family(&app, &f, "GET", "/roster?facility=DEMO&last_name=Ro", None).await;
    assert_eq!(v["inmates"].as_array().unwrap().len(), 0, "{v}");

    // Nothing that would list the roster.
    for q in [
        "facility=DEMO",
        "facility=DEMO&last_name=",
        "facility=DEMO&first_name=John",
        "facility=DEMO&last_name=D",
        "facility=DEMO&last_name=%25",
        "facility=DEMO&last_name=__",
    ] {
        let (s, v) = as_family(&app, &f, "GET", &format!("/roster?{q}"), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {v}");
        assert_eq!(v["error"]["code"], "invalid_search", "{q}: {v}");
    }
    let (s, _) = as_family(&app, &f, "GET", "/roster?last_name=Doe", None).await;
    assert!(s.is_client_error(), "a facility is required");

    // Only a family session searches; staff tokens and strangers do not.
    let (s, _) = support::inproc::send(
        &app,
        "GET",
        "/api/v1/family/roster?facility=DEMO&last_name=Doe",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = admin(
        &app,
        "GET",
        "/api/v1/family/roster?facility=DEMO&last_name=Doe",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn a_proved_and_approved_request_links_the_family(app: App) {
    let john = roster(&app).await;
    let f = family(&app, "ana@example.org").await;
    let id = request(&app, &f, &john, true).await;
    // Asking twice for the same number is refused while the first waits.
    let body = json!({ "inmate_id": john, "number": FAMILY_NUMBER, "name": "Ana Doe" });
    let (s, v) = as_family(&app, &f, "POST", "/links", Some(body)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // No gateway in process: no call, and nothing counted or stored.
    let (s, v) = as_family(&app, &f, "POST", &format!("/links/{id}/call"), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "calls_unavailable");
    assert_eq!(link_of(&app, &f, &id).await["calls"], 0);

    assert_eq!(
        call_and_key(&app, &id, "482913", "482913").await,
        Keyed::Verified
    );
    let link = link_of(&app, &f, &id).await;
    assert_eq!(link["status"], "pending_approval", "{link}");
    assert_eq!(link["number"], FAMILY_NUMBER);
    let contact = link["contact_id"].as_str().unwrap().to_string();
    let c = app.store.contact(&contact).await.unwrap();
    assert!(c.video_allowed, "video as asked");
    assert_eq!(c.number, FAMILY_NUMBER);

    // Not linked before staff approve: the account stays closed to the family.
    let (_, i) = admin(&app, "GET", &format!("/api/v1/inmates/{john}"), None).await;
    let account = i["account_id"].as_str().unwrap().to_string();
    let read = |app: &App, f: &Family, account: String| {
        let req = Request::builder()
            .uri(format!("/api/v1/accounts/{account}"))
            .header("cookie", format!("sp_family={}", f.cookie))
            .body(Body::empty())
            .unwrap();
        let app = app.router.clone();
        async move {
            let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
            resp.status()
        }
    };
    assert_eq!(read(&app, &f, account.clone()).await, StatusCode::FORBIDDEN);
    let (s, v) = admin(
        &app,
        "POST",
        &format!("/api/v1/contacts/{contact}/approve"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(link_of(&app, &f, &id).await["status"], "approved");
    assert_eq!(read(&app, &f, account.clone()).await, StatusCode::OK);

    // Another account sees none of it and cannot act on it.
    let other = family(&app, "bo@example.org").await;
    let (_, v) = as_family(&app, &other, "GET", "/links", None).await;
    assert_eq!(v["links"].as_array().unwrap().len(), 0, "{v}");
    let (s, _) = as_family(&app, &other, "POST", &format!("/links/{id}/withdraw"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(read(&app, &other, account).await, StatusCode::FORBIDDEN);
}

async fn wrong_and_expired_codes_and_the_attempt_limit(app: App) {
    let john = roster(&app).await;
    let f = family(&app, "ana@example.org").await;
    let id = request(&app, &f, &john, false).await;

    assert_eq!(
        call_and_key(&app, &id, "111111", "222222").await,
        Keyed::Wrong { left: 2 }
    );
    let link = link_of(&app, &f, &id).await;
    assert_eq!(link["status"], "pending_verification", "{link}");
    assert_eq!(link["wrong_codes"], 1);
    // A wrong code uses the code up: the right one keyed after it is not in force.
    let again = code_hash(&key(), &id, "111111");
    assert_eq!(
        app.store.link_keyed(&id, &again, 3).await.unwrap(),
        Keyed::Expired
    );

    // An expired code proves nothing and is not counted.
    let expires = app.store.clock().wall() + chrono::Duration::minutes(10);
    app.store
        .link_new_code(&id, &code_hash(&key(), &id, "333333"), expires)
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(601));
    let right = code_hash(&key(), &id, "333333");
    assert_eq!(
        app.store.link_keyed(&id, &right, 3).await.unwrap(),
        Keyed::Expired
    );
    assert_eq!(link_of(&app, &f, &id).await["wrong_codes"], 1);

    assert_eq!(
        call_and_key(&app, &id, "444444", "000000").await,
        Keyed::Wrong { left: 1 }
    );
    assert_eq!(
        call_and_key(&app, &id, "555555", "000000").await,
        Keyed::Failed
    );
    let link = link_of(&app, &f, &id).await;
    assert_eq!(link["status"], "verification_failed", "{link}");
    assert!(link["contact_id"].is_null());
    // A failed request takes no more codes or calls; no contact was made.
    let expires = app.store.clock().wall() + chrono::Duration::minutes(10);
    assert!(app
        .store
        .link_new_code(&id, &code_hash(&key(), &id, "666666"), expires)
        .await
        .is_err());
    let (s, v) = as_family(&app, &f, "POST", &format!("/links/{id}/call"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(app.store.contacts(&john).await.unwrap().is_empty());
}

async fn a_denial_shows_its_reason_and_requests_can_be_withdrawn(app: App) {
    let john = roster(&app).await;
    let f = family(&app, "ana@example.org").await;
    let id = request(&app, &f, &john, false).await;
    assert_eq!(
        call_and_key(&app, &id, "123456", "123456").await,
        Keyed::Verified
    );
    let contact = link_of(&app, &f, &id).await["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A reason too long is refused and changes nothing.
    let long = json!({ "reason": "x".repeat(1001) });
    let (s, v) = admin(
        &app,
        "POST",
        &format!("/api/v1/contacts/{contact}/deny"),
        Some(long),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(link_of(&app, &f, &id).await["status"], "pending_approval");
    let why = json!({ "reason": "victim contact order" });
    let (s, v) = admin(
        &app,
        "POST",
        &format!("/api/v1/contacts/{contact}/deny"),
        Some(why),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let link = link_of(&app, &f, &id).await;
    assert_eq!(link["status"], "denied", "{link}");
    assert_eq!(link["reason"], "victim contact order");
    let (s, _) = as_family(&app, &f, "POST", &format!("/links/{id}/withdraw"), None).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a denied request has nothing to withdraw"
    );

    // Withdrawn while waiting for verification, and once proved (the contact ends too).
    let body = json!({ "inmate_id": john, "number": "+15557650000", "name": "Ana Doe" });
    let (s, v) = as_family(&app, &f, "POST", "/links", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let waiting = v["id"].as_str().unwrap().to_string();
    let (s, v) = as_family(
        &app,
        &f,
        "POST",
        &format!("/links/{waiting}/withdraw"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "withdrawn");
    let body = json!({ "inmate_id": john, "number": "+15557651111", "name": "Ana Doe" });
    let (_, v) = as_family(&app, &f, "POST", "/links", Some(body)).await;
    let proved = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        call_and_key(&app, &proved, "654321", "654321").await,
        Keyed::Verified
    );
    let contact = link_of(&app, &f, &proved).await["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = as_family(&app, &f, "POST", &format!("/links/{proved}/withdraw"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "withdrawn");
    let c = app.store.contact(&contact).await.unwrap();
    assert_eq!(c.status, sallyport::store::ContactStatus::Denied);

    // Without the CSRF token nothing changes.
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/family/links")
        .header("cookie", format!("sp_family={}", f.cookie))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "inmate_id": john, "number": "+15557652222", "name": "A" }).to_string(),
        ))
        .unwrap();
    let (s, _, _) = fetch(&app, req).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Bad input: clear 4xx.
    for (body, want) in [
        (
            json!({ "inmate_id": "inm_nobody", "number": "+15557653333", "name": "A" }),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({ "inmate_id": john, "number": "not a number", "name": "A" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "inmate_id": john, "number": "+15557653333", "name": "" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "inmate_id": john, "number": "+15557653333", "name": "A", "pin": "1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, v) = as_family(&app, &f, "POST", "/links", Some(body.clone())).await;
        assert_eq!(s, want, "{body}: {v}");
    }
}

async fn blocked_numbers_are_refused_and_searches_are_limited(app: App) {
    let john = roster(&app).await;
    let f = family(&app, "ana@example.org").await;
    // A number staff blocked (a victim's, a court order's) is refused before any call.
    let (s, v) = admin(
        &app,
        "POST",
        "/api/v1/facilities/DEMO/blocks",
        Some(json!({ "number": FAMILY_NUMBER, "reason": "no-contact order" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let body = json!({ "inmate_id": john, "number": FAMILY_NUMBER, "name": "Ana Doe" });
    let (s, v) = as_family(&app, &f, "POST", "/links", Some(body)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        !v.to_string().contains("no-contact"),
        "the reason stays staff's: {v}"
    );
    let (_, v) = as_family(&app, &f, "GET", "/links", None).await;
    assert_eq!(v["links"].as_array().unwrap().len(), 0, "{v}");

    // Searches count against the account (60 per window by default).
    let mut limited = None;
    for n in 0..61 {
        let (s, _) = as_family(&app, &f, "GET", "/roster?facility=DEMO&last_name=Doe", None).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(n);
            break;
        }
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        limited,
        Some(60),
        "the 61st search in the window is refused"
    );
    // Another account is not held back by it.
    let other = family(&app, "bo@example.org").await;
    let (s, _) = as_family(
        &app,
        &other,
        "GET",
        "/roster?facility=DEMO&last_name=Doe",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    app.clock.advance(Duration::from_secs(3_601));
    let (s, _) = as_family(&app, &f, "GET", "/roster?facility=DEMO&last_name=Doe", None).await;
    assert_eq!(s, StatusCode::OK, "the window slides");
}

// ---- end to end: the confirmation call through sipp as the trunk --------------------------

mod end_to_end {
    use super::support::api::{book, Api};
    use super::support::gateway::Gateway;
    use super::support::sipp::{self, confirmation_trunk, Via};
    use super::support::Workdir;
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};

    /// A family session on the real gateway.
    struct Session {
        api: Api,
        cookie: String,
        csrf: String,
    }

    impl Session {
        fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
            let cookie = format!("sp_family={}", self.cookie);
            let headers = [
                ("Cookie", cookie.as_str()),
                ("X-CSRF-Token", self.csrf.as_str()),
            ];
            let body = body.map(|b| ("application/json", b.to_string()));
            let (s, _, v) = self
                .api
                .send(method, &format!("/api/v1/family{path}"), body, &headers);
            (s, v)
        }
    }

    /// Registers `email`, opens the verification email the gateway wrote, logs in.
    fn session(dir: &std::path::Path, api: &Api, email: &str) -> Session {
        let anon = api.anonymous();
        let creds = json!({ "email": email, "password": super::PASSWORD });
        assert_eq!(
            anon.request("POST", "/api/v1/family/register", Some(creds.clone()))
                .0,
            202
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let token = loop {
            let found = std::fs::read_dir(dir.join("mail"))
                .into_iter()
                .flatten()
                .find_map(|e| {
                    let text = super::support::mail::quoted_printable(
                        &std::fs::read_to_string(e.ok()?.path()).ok()?,
                    );
                    let to_them = text
                        .lines()
                        .any(|l| l.starts_with("To: ") && l.contains(email));
                    let at = text.find("#verify=")? + "#verify=".len();
                    to_them.then(|| text.get(at..at + 64).map(str::to_string))?
                });
            if let Some(t) = found {
                break t;
            }
            assert!(Instant::now() < deadline, "no verification email");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            anon.request(
                "POST",
                "/api/v1/family/verify",
                Some(json!({ "token": token }))
            )
            .0,
            200
        );
        let (s, head, v) = anon.send(
            "POST",
            "/api/v1/family/login",
            Some(("application/json", creds.to_string())),
            &[],
        );
        assert_eq!(s, 200, "{v}");
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: sp_family="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        Session {
            api: anon,
            cookie,
            csrf: v["csrf_token"].as_str().unwrap().to_string(),
        }
    }

    fn status_becomes(s: &Session, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let (_, v) = s.send("GET", "/links", None);
            let link = v["links"]
                .as_array()
                .and_then(|l| l.iter().find(|l| l["id"] == id).cloned())
                .unwrap_or(Value::Null);
            if link["status"] == want {
                return link;
            }
            assert!(Instant::now() < deadline, "status never {want}: {link}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn the_code_shown_is_keyed_on_a_call_through_the_trunk() {
        if !sipp::present("the family number confirmation call test") {
            return;
        }
        let dir = Workdir::new("linking", "confirmation_call");
        let ports = sipp::ports();
        // Two confirmation calls a day to one number, to see the limit.
        let gw = Gateway::start_with(&dir, &ports, "gateway", |cmd| {
            cmd.env("SALLYPORT_FAMILY_VERIFY_CALLS_PER_NUMBER", "2");
        });
        let inmate = book(&gw.api, "L-100", "5511", super::support::api::NUMBER, false);
        let fam = session(&dir, &gw.api, "ana@example.org");

        let (s, v) = fam.send("GET", "/roster?facility=DEMO&booking_number=L-100", None);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["inmates"][0]["inmate_id"], inmate.id.as_str(), "{v}");
        let body = json!({ "inmate_id": inmate.id, "number": super::FAMILY_NUMBER,
                           "name": "Ana", "relationship": "sister", "video": true });
        let (s, v) = fam.send("POST", "/links", Some(body));
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_string();

        // A wrong code first (keyed by SIP INFO): refused, counted, the request still waits.
        let (s, v) = fam.send("POST", &format!("/links/{id}/call"), None);
        assert_eq!(s, 202, "{v}");
        let code = v["code"].as_str().unwrap().to_string();
        let wrong: String = code
            .chars()
            .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
            .collect();
        let mut t =
            confirmation_trunk(&dir, &ports, "trunk-wrong", &format!("{wrong}#"), Via::Info);
        t.expect_ok(Duration::from_secs(40));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, v) = fam.send("GET", "/links", None);
            if v["links"][0]["wrong_codes"] == 1 {
                assert_eq!(v["links"][0]["status"], "pending_verification", "{v}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the wrong code was not counted: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        // The right code (RFC 4733): the number is proved, the contact waits for staff.
        let (s, v) = fam.send("POST", &format!("/links/{id}/call"), None);
        assert_eq!(s, 202, "{v}");
        let code = v["code"].as_str().unwrap().to_string();
        let mut t = confirmation_trunk(&dir, &ports, "trunk-right", &format!("{code}#"), Via::Rtp);
        t.expect_ok(Duration::from_secs(40));
        let link = status_becomes(&fam, &id, "pending_approval");
        assert_eq!(t.count_requests("BYE"), 1, "the gateway hung up");

        let contact = link["contact_id"].as_str().unwrap();
        gw.api
            .post(&format!("/api/v1/contacts/{contact}/approve"), json!({}));
        status_becomes(&fam, &id, "approved");
        let cookie = format!("sp_family={}", fam.cookie);
        let (s, _, v) = fam.api.send(
            "GET",
            &format!("/api/v1/accounts/{}", inmate.account),
            None,
            &[("Cookie", &cookie)],
        );
        assert_eq!(s, 200, "linked: the family reads the account: {v}");
        // No charge and no call record: the inmate's balance and history are untouched.
        assert!(gw.api.calls(&format!("inmate_id={}", inmate.id)).is_empty());
        // Proved: no more calls for this request.
        let (s, v) = fam.send("POST", &format!("/links/{id}/call"), None);
        assert_eq!(s, 409, "{v}");

        // The number had its two calls today: another account asking for it (as the
        // contact of another inmate) gets no third.
        let other = book(&gw.api, "L-200", "5512", super::support::api::NUMBER, false);
        let bo = session(&dir, &gw.api, "bo@example.org");
        let body = json!({ "inmate_id": other.id, "number": super::FAMILY_NUMBER, "name": "Bo" });
        let (s, v) = bo.send("POST", "/links", Some(body));
        assert_eq!(s, 201, "{v}");
        let (s, v) = bo.send(
            "POST",
            &format!("/links/{}/call", v["id"].as_str().unwrap()),
            None,
        );
        assert_eq!(s, 429, "{v}");
        assert_eq!(v["error"]["code"], "too_many_attempts");
    }
}
