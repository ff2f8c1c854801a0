//! The pages the gateway serves: the investigator console (the plain HTML/JS/CSS files of
//! `web/`, under `/console/`; `/` redirects there) and the two video-visit pages of
//! `web/visit/` — the visitor's (`/visit/join`, opened from the join link) and the inmate
//! kiosk's (`/kiosk`) — with their files under `/visit/`, and the family portal's account
//! pages (`web/family/`, under `/family/`). All embedded in the binary.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and media only
//! from this origin (media and images also from `blob:`: the kiosk shows a message's
//! photo from a blob it fetched with its token), no inline script, no framing. The console
//! talks to `/api/v1` with its bearer token; audio comes from the recordings endpoint with
//! a play ticket, live audio (calls) and video (visits) over WebRTC (not covered by
//! `connect-src`).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob:; media-src 'self' blob:; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// One embedded file: name under `/console/`, content type, contents.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: HTML,
        body: include_str!("../../web/index.html"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("../../web/api.js"),
    },
    Asset {
        name: "listen.js",
        content_type: JS,
        body: include_str!("../../web/listen.js"),
    },
    Asset {
        name: "timeline.js",
        content_type: JS,
        body: include_str!("../../web/timeline.js"),
    },
    Asset {
        name: "watch.js",
        content_type: JS,
        body: include_str!("../../web/watch.js"),
    },
    Asset {
        name: "replay.js",
        content_type: JS,
        body: include_str!("../../web/replay.js"),
    },
    Asset {
        name: "leads.js",
        content_type: JS,
        body: include_str!("../../web/leads.js"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_str!("../../web/app.js"),
    },
    Asset {
        name: "messages.js",
        content_type: JS,
        body: include_str!("../../web/messages.js"),
    },
    Asset {
        name: "reports.js",
        content_type: JS,
        body: include_str!("../../web/reports.js"),
    },
    // Third-party, unmodified (web/README.md names its version and licence).
    Asset {
        name: "vendor/uplot/uPlot.iife.min.js",
        content_type: JS,
        body: include_str!("../../web/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        name: "vendor/uplot/uPlot.min.css",
        content_type: CSS,
        body: include_str!("../../web/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        name: "style.css",
        content_type: CSS,
        body: include_str!("../../web/style.css"),
    },
];

/// The visit pages' files, served under `/visit/`.
const VISIT_ASSETS: &[Asset] = &[
    Asset {
        name: "visitor.html",
        content_type: HTML,
        body: include_str!("../../web/visit/visitor.html"),
    },
    Asset {
        name: "kiosk.html",
        content_type: HTML,
        body: include_str!("../../web/visit/kiosk.html"),
    },
    Asset {
        name: "room.js",
        content_type: JS,
        body: include_str!("../../web/visit/room.js"),
    },
    Asset {
        name: "visitor.js",
        content_type: JS,
        body: include_str!("../../web/visit/visitor.js"),
    },
    Asset {
        name: "kiosk.js",
        content_type: JS,
        body: include_str!("../../web/visit/kiosk.js"),
    },
    Asset {
        name: "visit.css",
        content_type: CSS,
        body: include_str!("../../web/visit/visit.css"),
    },
];

/// The family portal's files, served under `/family/` (`web/family/`).
const FAMILY_ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: HTML,
        body: include_str!("../../web/family/index.html"),
    },
    Asset {
        name: "family.js",
        content_type: JS,
        body: include_str!("../../web/family/family.js"),
    },
    Asset {
        name: "family.css",
        content_type: CSS,
        body: include_str!("../../web/family/family.css"),
    },
    Asset {
        name: "i18n.js",
        content_type: JS,
        body: include_str!("../../web/family/i18n.js"),
    },
    Asset {
        name: "links.js",
        content_type: JS,
        body: include_str!("../../web/family/links.js"),
    },
    Asset {
        name: "prepaid.html",
        content_type: HTML,
        body: include_str!("../../web/family/prepaid.html"),
    },
    Asset {
        name: "prepaid.js",
        content_type: JS,
        body: include_str!("../../web/family/prepaid.js"),
    },
    Asset {
        name: "deposits.js",
        content_type: JS,
        body: include_str!("../../web/family/deposits.js"),
    },
    Asset {
        name: "messages.js",
        content_type: JS,
        body: include_str!("../../web/family/messages.js"),
    },
];

/// The pages' routes; merged into the application router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/visit/join",
            get(|| async { serve_from(VISIT_ASSETS, "visitor.html") }),
        )
        .route(
            "/kiosk",
            get(|| async { serve_from(VISIT_ASSETS, "kiosk.html") }),
        )
        .route("/visit/{file}", get(visit_asset))
        .route("/family", get(|| async { Redirect::temporary("/family/") }))
        .route(
            "/family/",
            get(|| async { serve_from(FAMILY_ASSETS, "index.html") }),
        )
        .route("/family/{file}", get(family_asset))
        .route("/", get(|| async { Redirect::temporary("/console/") }))
        .route(
            "/console",
            get(|| async { Redirect::temporary("/console/") }),
        )
        .route("/console/", get(|| async { serve("index.html") }))
        .route("/console/{file}", get(asset))
        .route("/console/vendor/{lib}/{file}", get(vendor_asset))
}

async fn vendor_asset(Path((lib, file)): Path<(String, String)>) -> Response {
    serve(&format!("vendor/{lib}/{file}"))
}

async fn asset(Path(file): Path<String>) -> Response {
    serve(&file)
}

async fn family_asset(Path(file): Path<String>) -> Response {
    serve_from(FAMILY_ASSETS, &file)
}

async fn visit_asset(Path(file): Path<String>) -> Response {
    serve_from(VISIT_ASSETS, &file)
}

fn serve(name: &str) -> Response {
    serve_from(ASSETS, name)
}

fn serve_from(assets: &[Asset], name: &str) -> Response {
    let Some(a) = assets.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut resp = a.body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn fetch(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let app: Router = routes();
        let req = Request::get(path).body(Body::empty()).expect("request");
        let resp = app.oneshot(req).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
        (parts.status, parts.headers, text)
    }

    #[tokio::test]
    async fn pages_are_served_with_their_types_and_the_policy() {
        for (path, ctype, needle) in [
            ("/console/", HTML, "id=\"login-form\""),
            ("/console/index.html", HTML, "<!doctype html>"),
            ("/console/app.js", JS, "function route"),
            ("/console/api.js", JS, "/api/v1"),
            ("/console/listen.js", JS, "recvonly"),
            ("/console/watch.js", JS, "recvonly"),
            ("/console/style.css", CSS, "body"),
            ("/console/reports.js", JS, "/reports/"),
            ("/console/vendor/uplot/uPlot.iife.min.js", JS, "uPlot"),
            ("/console/vendor/uplot/uPlot.min.css", CSS, ".uplot"),
        ] {
            let (status, h, body) = fetch(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h[header::CONTENT_TYPE], ctype, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert!(body.contains(needle), "{path}: {needle} missing");
        }
    }

    #[tokio::test]
    async fn the_visit_pages_are_served_with_the_policy() {
        for (path, ctype, needle) in [
            ("/visit/join", HTML, "id=\"check-start\""),
            ("/kiosk", HTML, "id=\"pin-form\""),
            ("/visit/room.js", JS, "RTCPeerConnection"),
            ("/visit/visitor.js", JS, "/api/v1/visit-session"),
            ("/visit/kiosk.js", JS, "kiosk-join"),
            ("/visit/visit.css", CSS, "body"),
        ] {
            let (status, h, body) = fetch(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h[header::CONTENT_TYPE], ctype, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
            assert!(body.contains(needle), "{path}: {needle} missing");
        }
        let (status, _, _) = fetch("/visit/index.html").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = fetch("/visit/app.js").await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "console files stay under /console/"
        );
    }

    #[test]
    fn visit_pages_carry_no_inline_script_or_outside_reference() {
        for page in ["visitor.html", "kiosk.html"] {
            let html = VISIT_ASSETS
                .iter()
                .find(|a| a.name == page)
                .map(|a| a.body)
                .unwrap_or_default();
            for tag in html.split("<script").skip(1) {
                let open = tag.split('>').next().unwrap_or_default();
                assert!(
                    open.contains("src=\"/visit/"),
                    "{page}: inline script: {open}"
                );
                assert!(tag.contains("></script>"), "{page}: script with a body");
            }
            let handler = html
                .split_whitespace()
                .find(|w| w.starts_with("on") && w.contains('='));
            assert_eq!(handler, None, "{page}: inline event handler");
            for src in html.split("src=\"/visit/").skip(1) {
                let name = src.split('"').next().unwrap_or_default();
                assert!(
                    VISIT_ASSETS.iter().any(|a| a.name == name),
                    "{name} not embedded"
                );
            }
        }
        for a in VISIT_ASSETS {
            assert!(!a.body.contains("http://"), "{}: absolute URL", a.name);
            assert!(!a.body.contains("https://"), "{}: absolute URL", a.name);
        }
    }

    #[tokio::test]
    async fn the_family_pages_are_served_with_the_policy_and_no_inline_script() {
        for (path, ctype, needle) in [
            ("/family/", HTML, "id=\"register-form\""),
            ("/family/family.js", JS, "const STRINGS"),
            ("/family/family.css", CSS, "body"),
            ("/family/links.js", JS, "const LINK_STRINGS"),
        ] {
            let (status, h, body) = fetch(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h[header::CONTENT_TYPE], ctype, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
            assert!(body.contains(needle), "{path}: {needle} missing");
        }
        let (status, h, _) = fetch("/family").await;
        assert!(status.is_redirection());
        assert_eq!(h[header::LOCATION], "/family/");
        let html = FAMILY_ASSETS[0].body;
        for tag in html.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap_or_default();
            assert!(open.contains("src=\"/family/"), "inline script: {open}");
            assert!(tag.contains("></script>"), "script with a body");
        }
        let handler = html
            .split_whitespace()
            .find(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(handler, None, "inline event handler");
        // Every input has its label.
        for input in html.split("<input id=\"").skip(1) {
            let id = input.split('"').next().unwrap_or_default();
            assert!(
                html.contains(&format!("<label for=\"{id}\">")),
                "{id} unlabelled"
            );
        }
        for a in FAMILY_ASSETS {
            assert!(!a.body.contains("https://"), "{}: absolute URL", a.name);
            assert!(!a.body.contains("http://"), "{}: absolute URL", a.name);
        }
    }

    #[tokio::test]
    async fn root_redirects_and_unknown_files_are_404() {
        for path in ["/", "/console"] {
            let (status, h, _) = fetch(path).await;
            assert!(status.is_redirection(), "{path}: {status}");
            assert_eq!(h[header::LOCATION], "/console/");
        }
        let (status, _, _) = fetch("/console/secret.txt").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_search_filter_offers_every_end_reason() {
        let app = ASSETS.iter().find(|a| a.name == "app.js").map(|a| a.body);
        let list = app
            .and_then(|b| b.split("const END_REASONS = [").nth(1))
            .and_then(|rest| rest.split("];").next())
            .unwrap_or_default();
        let listed: Vec<&str> = list
            .split(',')
            .map(|r| r.trim().trim_matches('"'))
            .filter(|r| !r.is_empty())
            .collect();
        let all = crate::session::EndReason::ALL.map(crate::session::EndReason::as_str);
        assert_eq!(listed, all, "web/app.js END_REASONS");
    }

    #[test]
    fn pages_carry_no_inline_script_or_outside_reference() {
        let html = ASSETS[0].body;
        for tag in html.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap_or_default();
            assert!(open.contains("src=\"/console/"), "inline script: {open}");
            assert!(tag.contains("></script>"), "script with a body: {tag}");
        }
        // Ours only: a vendored library keeps its own licence banner (its home page).
        for a in ASSETS.iter().filter(|a| !a.name.starts_with("vendor/")) {
            assert!(!a.body.contains("http://"), "{}: absolute URL", a.name);
            assert!(!a.body.contains("https://"), "{}: absolute URL", a.name);
        }
        let handler = html
            .split_whitespace()
            .find(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(handler, None, "inline event handler");
        // Every script the page loads is one we serve.
        for src in html.split("src=\"/console/").skip(1) {
            let name = src.split('"').next().unwrap_or_default();
            assert!(ASSETS.iter().any(|a| a.name == name), "{name} not embedded");
        }
    }
}
