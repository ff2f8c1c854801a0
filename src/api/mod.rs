//! The HTTP API: JSON under `/api/v1`, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! Owns: routing, authentication (bearer tokens; roles admin, investigator, family, kiosk;
//! facility scope), request validation and the error format
//! `{ "error": { "code", "message" } }`. It decides nothing about money or policy itself:
//! handlers check who may call, then hand the request to the [`crate::store::Store`] and
//! the [`crate::ledger::Ledger`]. The OpenAPI document is served at
//! `/api/v1/openapi.json` ([`openapi`]).
//!
//! Every request body is bounded before it is read: [`MAX_JSON_BODY_BYTES`] for JSON,
//! [`MAX_UPLOAD_BODY_BYTES`] for the CSV uploads of rate decks and plans; past it, a 413
//! `payload_too_large` in the usual error shape. Every string a body can have stored has
//! its own limit ([`crate::text`]), and every amount one written form ([`crate::money`]).
//!
//! `router(state)` builds the whole app, so tests drive it with `tower::ServiceExt::oneshot`
//! exactly as a client would over TCP.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod serve;
pub mod tickets;
pub mod web;

use crate::config::Config;
use crate::store::{AuditEntry, Store};
use auth::Caller;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use metrics::Metrics;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Largest JSON request body, in bytes. The largest real one (a facility, a contact with
/// every field at its limit) is a few KiB; a browser's SDP offer for live listening about
/// 10 KiB. Past it: 413 `payload_too_large`, before anything is parsed.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;

/// Largest CSV upload (`POST /rate-decks`, `POST /rate-plans`), in bytes: a deck of
/// 100,000 prefixes with short descriptions is about 4.4 MB, so this holds some 750,000.
pub const MAX_UPLOAD_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the configured admin token (compared in constant time), if enabled.
    pub admin_token_hash: Option<Arc<[u8]>>,
    /// The calls this node carries (terminate reaches them here) and the SIP and media
    /// counters; `None` when the API runs without the SIP side (tests, tools).
    pub gateway: Option<Gateway>,
    /// Key of the recording tickets' MAC, derived from the config so every node configured
    /// alike verifies every other's tickets ([`tickets`]).
    pub ticket_key: Arc<[u8]>,
    /// Key of the participant passes of video visits ([`crate::visit::pass`]): from the
    /// same secret as the tickets, under its own label.
    pub pass_key: Arc<[u8]>,
    /// Key of inmates' kiosk sittings ([`crate::kiosk`]): the same secret, its own label.
    pub sitting_key: Arc<[u8]>,
    /// This node in its cluster: a live call another node carries is reached through it
    /// ([`crate::cluster`]).
    pub cluster: crate::cluster::Cluster,
    /// The payment provider of online deposits ([`crate::payments`]).
    pub payments: crate::payments::Payments,
}

/// The live side of the gateway, as the API sees it.
#[derive(Clone)]
pub struct Gateway {
    pub live: crate::call::live::LiveCalls,
    pub sip_stats: Arc<crate::sip::transport::TransportStats>,
    pub media: crate::media::engine::MediaEngine,
    pub recorder: crate::recording::Recorder,
    /// Live listeners (WebRTC) of this node's calls.
    pub monitor: crate::monitor::Monitor,
    /// Refused INVITEs, ID + PIN attempts, PIN locks and guessing alerts.
    pub calls: Arc<crate::call::stats::CallStats>,
    /// The video visits this node runs; `None` when it runs none.
    pub visits: Option<crate::visit::live::LiveVisits>,
    /// The calls that confirm a family's number (family link requests); `None`: none.
    pub number_calls: Option<crate::call::verify::NumberCalls>,
    /// Whether this node takes new calls and visits (draining: `/readyz` answers 503 and
    /// a visit page that would start a visit here is refused).
    pub health: crate::cluster::health::NodeHealth,
}

impl AppState {
    pub fn new(store: Store, config: Arc<Config>) -> AppState {
        let admin_token_hash = Some(config.http.admin_token.as_str())
            .filter(|t| !t.is_empty())
            .map(|t| Arc::from(Sha256::digest(t.as_bytes()).as_slice()));
        let payments = crate::payments::Payments::from_config(
            store.db().clone(),
            store.clock().clone(),
            &config,
        );
        AppState {
            store,
            metrics: Arc::new(Metrics::default()),
            admin_token_hash,
            gateway: None,
            ticket_key: Arc::from(tickets::derive_key(&config).as_slice()),
            pass_key: Arc::from(tickets::derive_pass_key(&config).as_slice()),
            sitting_key: Arc::from(tickets::derive_sitting_key(&config).as_slice()),
            cluster: crate::cluster::Cluster::from_config(&config),
            payments,
            config,
        }
    }

    /// The API of a running gateway (live calls, SIP and media counters).
    pub fn with_gateway(mut self, gateway: Gateway) -> AppState {
        self.gateway = Some(gateway);
        self
    }

    /// Writes an audit entry for `caller` (actor, role, remote address); a failure to
    /// audit is logged, not shown to the caller, since the action itself has already been
    /// committed.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        facility: Option<&str>,
    ) {
        self.audit_detail(caller, action, target, facility, json!({}))
            .await
    }

    /// [`AppState::audit`] with more detail (an object; the caller's role is added).
    pub(crate) async fn audit_detail(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        facility: Option<&str>,
        mut detail: serde_json::Value,
    ) {
        if let Some(d) = detail.as_object_mut() {
            d.insert("role".into(), json!(caller.0.role));
        }
        let remote = caller.remote();
        let entry = AuditEntry {
            actor: caller.subject(),
            action,
            target,
            facility_id: facility,
            detail,
            remote_addr: remote.as_deref(),
        };
        self.write_audit(entry).await
    }

    /// Writes an entry as built (for actors that are not an authenticated caller, such as
    /// a login attempt).
    pub(crate) async fn write_audit(&self, entry: AuditEntry<'_>) {
        let action = entry.action.to_string();
        if let Err(e) = self.store.audit(entry).await {
            tracing::error!(error = %e, action, "audit write failed");
        }
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    use routes::{
        auth, calls, cluster, deposits, evidence, facilities, family, family_links, family_prepaid,
        inmates, integrity, kiosk, leads, listen, messages, money, notes, rates, recordings,
        reports, tokens, users, visit_join, visit_watch, visit_ws, visiting, visits,
    };
    let api = Router::new()
        .route("/openapi.json", get(openapi_doc))
        .route("/tokens", post(tokens::issue))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/users", post(users::create))
        .route("/family/register", post(family::register))
        .route("/family/verify", post(family::verify))
        .route("/family/login", post(family::login))
        .route("/family/logout", post(family::logout))
        .route("/family/session", get(family::session))
        .route("/family/password/forgot", post(family::forgot))
        .route("/family/password/reset", post(family::reset))
        .route("/family/password", post(family::change_password))
        .route("/family/email", post(family::change_email))
        .route("/family/email/confirm", post(family::confirm_email))
        .route("/family/close", post(family::close))
        .route("/family/facilities", get(family_links::facilities))
        .route("/family/roster", get(family_links::roster))
        .route(
            "/family/links",
            get(family_links::list).post(family_links::create),
        )
        .route("/family/links/{id}/call", post(family_links::call))
        .route("/family/links/{id}/withdraw", post(family_links::withdraw))
        .route(
            "/family/prepaid",
            get(family_prepaid::list).post(family_prepaid::open),
        )
        .route(
            "/family/prepaid/{id}/statement",
            get(family_prepaid::statement),
        )
        .route("/family/prepaid/{id}/refund", post(family_prepaid::refund))
        .route(
            "/family/deposits",
            get(deposits::family_list).post(deposits::family_deposit),
        )
        .route("/deposits/{id}", get(deposits::get))
        .route("/deposits/{id}/refund", post(deposits::refund))
        .route("/payments/webhook", post(deposits::webhook))
        .route("/payments/info", get(deposits::info))
        .route(
            "/facilities",
            get(facilities::list).post(facilities::create),
        )
        .route(
            "/facilities/{fid}",
            get(facilities::get).patch(facilities::update),
        )
        .route(
            "/facilities/{fid}/inmates",
            get(inmates::list).post(inmates::book),
        )
        .route(
            "/facilities/{fid}/handsets",
            get(facilities::handsets).post(facilities::add_handset),
        )
        .route("/facilities/{fid}/pin-locks", get(facilities::pin_locks))
        .route(
            "/facilities/{fid}/lines/{address}/unlock",
            post(facilities::unlock_line),
        )
        .route("/handsets/{id}/unlock", post(facilities::unlock_handset))
        .route(
            "/facilities/{fid}/trusted-networks",
            get(facilities::trusted_networks).post(facilities::add_trusted_network),
        )
        .route(
            "/facilities/{fid}/blocks",
            get(facilities::blocks).post(facilities::add_block),
        )
        .route(
            "/blocks",
            get(facilities::global_blocks).post(facilities::add_global_block),
        )
        .route("/blocks/{id}", delete(facilities::remove_block))
        .route("/inmates/{id}", get(inmates::get))
        .route("/inmates/{id}/suspend", post(inmates::suspend))
        .route("/inmates/{id}/reinstate", post(inmates::reinstate))
        .route("/inmates/{id}/pin", put(inmates::set_pin))
        .route("/inmates/{id}/unlock", post(inmates::unlock))
        .route("/inmates/{id}/release", post(inmates::release))
        .route(
            "/inmates/{id}/contacts",
            get(inmates::contacts).post(inmates::add_contact),
        )
        .route("/contacts/{id}/approve", post(inmates::approve))
        .route("/contacts/{id}/deny", post(inmates::deny))
        .route("/rate-caps", get(rates::caps))
        .route(
            "/rate-decks",
            get(rates::decks)
                .post(rates::upload_deck)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY_BYTES)),
        )
        .route("/rate-decks/{id}", get(rates::deck))
        .route("/rate-decks/{id}/lookup/{number}", get(rates::lookup))
        .route(
            "/rate-plans",
            get(rates::plans)
                .post(rates::upload_plan)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY_BYTES)),
        )
        .route("/rate-plans/{id}", get(rates::plan))
        .route("/accounts/{id}", get(money::get))
        .route(
            "/accounts/{id}/deposits",
            get(money::deposits).post(money::deposit),
        )
        .route("/accounts/{id}/purchases", post(money::purchase))
        .route("/accounts/{id}/refunds", post(money::refund))
        .route("/accounts/{id}/statement", get(money::statement))
        .route("/deposits/{id}/post", post(money::post_money_order))
        .route("/deposits/{id}/void", post(money::void_money_order))
        .route("/ledger/check", get(rates::ledger_check))
        .route("/audit", get(rates::audit))
        .route("/audit/verify", get(rates::audit_verify))
        .route("/calls", get(calls::list))
        .route("/calls/active", get(calls::active))
        .route("/calls/{id}", get(calls::get))
        .route("/calls/{id}/terminate", post(calls::terminate))
        .route("/recordings/verify", get(integrity::verify_all))
        .route("/recordings/{id}/verify", get(integrity::verify_one))
        .route("/calls/{id}/recording", get(calls::recording))
        .route("/calls/{id}/recordings", get(calls::recordings))
        .route("/reports", get(reports::list))
        .route("/reports/{name}", get(reports::get))
        .route("/notes", get(notes::list).post(notes::create))
        .route(
            "/notes/{id}",
            get(notes::get).put(notes::edit).delete(notes::delete),
        )
        .route("/leads", get(leads::list))
        .route("/leads/numbers/{number}", get(leads::number))
        .route("/leads/pin/{id}", get(leads::pin))
        .route("/keyword-alerts", get(leads::alerts))
        .route("/keyword-alerts/{id}", get(leads::alert))
        .route("/keywords/status", get(leads::status))
        .route("/evidence-packages", post(evidence::create))
        .route("/evidence-packages/{id}", get(evidence::download))
        .route("/recordings/{id}", get(recordings::get))
        .route("/recordings/{id}/play", post(recordings::play))
        .route("/recordings/{id}/download", post(recordings::download))
        .route("/recordings/{id}/heard", post(recordings::heard))
        .route("/recordings/{id}/audio", get(recordings::audio))
        .route("/calls/{id}/listen", post(listen::listen))
        .route("/calls/{id}/listen/{listener_id}", delete(listen::unlisten))
        .route("/visits", get(visits::list).post(visits::request))
        .route("/visits/live", get(visit_watch::live))
        .route("/visits/{id}", get(visits::get))
        .route("/visits/{id}/watch", post(visit_watch::watch))
        .route(
            "/visits/{id}/watch/{watcher_id}",
            delete(visit_watch::unwatch),
        )
        .route("/visits/{id}/terminate", post(visit_watch::terminate))
        .route("/visits/{id}/approve", post(visits::approve))
        .route("/visits/{id}/deny", post(visits::deny))
        .route("/visits/{id}/cancel", post(visits::cancel))
        .route("/visits/{id}/no-show", post(visits::no_show))
        .route("/visits/{id}/join-link", post(visit_join::join_link))
        .route("/visits/{id}/kiosk-join", post(visit_join::kiosk_join))
        .route("/kiosk/sittings", post(kiosk::start))
        .route("/kiosk/sitting", get(kiosk::show))
        .route(
            "/kiosk/messages",
            get(messages::kiosk_list).post(messages::kiosk_send),
        )
        .route(
            "/family/messages",
            get(messages::family_list).post(messages::family_send),
        )
        .route(
            "/family/messages/photos",
            post(messages::family_photo).layer(DefaultBodyLimit::max(
                crate::messaging::MAX_UPLOAD_BYTES as usize,
            )),
        )
        .route("/message-photos/{id}", get(messages::photo_file))
        .route("/messages", get(messages::search))
        .route("/messages/review", get(messages::queue))
        .route("/messages/{id}", get(messages::get))
        .route("/messages/{id}/approve", post(messages::approve))
        .route("/messages/{id}/reject", post(messages::reject))
        .route(
            "/facilities/{fid}/messaging",
            get(messages::settings).put(messages::set_settings),
        )
        .route(
            "/facilities/{fid}/watch-words",
            get(messages::words)
                .post(messages::add_word)
                .delete(messages::remove_word_by_text),
        )
        .route(
            "/facilities/{fid}/watch-words/{wid}",
            delete(messages::remove_word),
        )
        .route("/visit-session", get(visit_join::session))
        .route("/visit-session/ws", get(visit_ws::socket))
        .route("/inmates/{id}/visits", get(visits::of_inmate))
        .route("/contacts/{id}/visits", get(visits::of_contact))
        .route(
            "/visit-stations/{id}/visits/today",
            get(visits::station_today),
        )
        .route(
            "/facilities/{fid}/visiting-rules",
            get(visiting::rules)
                .put(visiting::set_rules)
                .delete(visiting::delete_rules),
        )
        .route(
            "/facilities/{fid}/visit-stations",
            get(visiting::stations).post(visiting::add_station),
        )
        .route(
            "/visit-stations/{id}",
            get(visiting::station)
                .patch(visiting::update_station)
                .delete(visiting::retire_station),
        )
        .route(
            "/inmates/{id}/housing-unit",
            put(visiting::set_housing_unit),
        )
        .route("/cluster/calls/{id}/terminate", post(cluster::terminate))
        .route("/cluster/calls/{id}/release", post(cluster::release))
        .route("/cluster/calls/{id}/listen", post(cluster::listen))
        .route(
            "/cluster/calls/{id}/listen/{listener_id}",
            delete(cluster::unlisten),
        )
        .route(
            "/cluster/visits/{id}/watch",
            post(visit_watch::cluster_watch),
        )
        .route(
            "/cluster/visits/{id}/watch/{watcher_id}",
            delete(visit_watch::cluster_unwatch),
        )
        .route(
            "/cluster/visits/{id}/terminate",
            post(visit_watch::cluster_terminate),
        )
        .fallback(not_found);
    let metrics = state.metrics.clone();
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(web::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(refuse_control_characters))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .with_state(state)
}

/// A path or query whose decoded bytes hold a control character (`%00`, `%0A`, ...) names
/// nothing sallyport stores (ids, numbers and filters are printable) and would only reach
/// a log line or the database as an attack: PostgreSQL refuses a NUL in text outright,
/// which surfaced as a 500. 400, before any handler runs.
async fn refuse_control_characters(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let uri = req.uri();
    let bad = [Some(uri.path()), uri.query()]
        .into_iter()
        .flatten()
        .any(holds_encoded_control);
    if bad {
        return error::ApiError::bad_request(
            "the request's path or query holds a control character",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether `s`, percent-decoded, holds a control character (C0 or DEL). Raw control
/// characters cannot reach here: the HTTP parser refuses them in a request target.
fn holds_encoded_control(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && b.get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .is_some_and(|v| v < 0x20 || v == 0x7f)
    })
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such route")
}

async fn openapi_doc() -> impl IntoResponse {
    Json(openapi::document())
}

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the node is not draining and the database answers.
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.gateway.as_ref().is_some_and(|g| g.health.draining()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    match sqlx::query("SELECT 1").execute(s.store.db().pool()).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "database unavailable" })),
            )
        }
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = s.metrics.render();
        if let Some(g) = &s.gateway {
            metrics::render_gateway(&mut text, g);
        }
        metrics::render_db(&mut text, &s.store.db().group_stats());
        text
    })
}
