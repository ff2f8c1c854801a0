//! Evidence packages over HTTP ([`crate::evidence`]).
//!
//! - `POST /evidence-packages` `{session_ids, reason}`: admins and investigators; every
//!   session must be the caller's to investigate (its facility in scope: 403/404 as for
//!   `GET /calls/{id}`), ended (409 `session_active`), and not privileged (403
//!   `privileged`, audited `evidence_package.refused`: a privileged session is never
//!   recorded and never packaged). Nothing is built unless every session passes. The
//!   package is built, stored under `<recording dir>/evidence/`, checked, and audited
//!   (`evidence_package.build`: the sessions, the reason, the package's SHA-256 and size);
//!   the answer is `201 {id, sha256, bytes, sessions, intact, failed_checks, omitted,
//!   download}`.
//! - `GET /evidence-packages/{id}`: the package file (`application/x-tar`, an
//!   attachment), for an admin or an investigator of every facility its sessions belong
//!   to. Every download is audited (`evidence_package.download`: who, when, the
//!   sessions, the SHA-256 of the bytes served, hashed from the file as it is now).

use crate::api::auth::{ApiJson, Caller};
use crate::api::error::ApiError;
use crate::api::routes::calls::{refuse_privileged, visible_session};
use crate::api::routes::recordings::chunks;
use crate::api::AppState;
use crate::evidence::build::package_path;
use crate::evidence::{self, Manifest, PackageRequest, MANIFEST, MAX_SESSIONS};
use crate::store::Role;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::io::Read;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPackage {
    session_ids: Vec<String>,
    reason: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// `POST /evidence-packages`.
pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewPackage>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    crate::text::NOTE
        .check_required("reason", &body.reason)
        .map_err(|e| invalid(e.to_string()))?;
    let n = body.session_ids.len();
    if n == 0 || n > MAX_SESSIONS {
        return Err(invalid(format!(
            "session_ids must name 1 to {MAX_SESSIONS} sessions ({n} given)"
        )));
    }
    let mut seen = HashSet::new();
    let mut sessions = Vec::with_capacity(n);
    for id in &body.session_ids {
        crate::text::SETTING
            .check_required("session_ids", id)
            .map_err(|e| invalid(e.to_string()))?;
        if !seen.insert(id.as_str()) {
            return Err(invalid(format!(
                "session {} is named twice",
                crate::text::quote(id)
            )));
        }
        let cdr = visible_session(&s, &caller, id).await?;
        if cdr.privileged {
            return Err(refuse_privileged(&s, &caller, &cdr, "evidence_package.refused").await);
        }
        if cdr.state == "active" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "session_active",
                format!(
                    "session {} is still in progress: package it once it has ended",
                    cdr.id
                ),
            ));
        }
        sessions.push(cdr);
    }
    let req = PackageRequest {
        sessions: &sessions,
        built_by: caller.subject(),
        reason: body.reason.trim(),
    };
    let built = evidence::build(&s.store, &s.config.recording.dir, req)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let facilities: HashSet<&str> = sessions.iter().map(|c| c.facility_id.as_str()).collect();
    let facility = match facilities.len() {
        1 => facilities.into_iter().next(),
        _ => None,
    };
    let omitted: Vec<_> = built
        .manifest
        .sessions
        .iter()
        .flat_map(|p| {
            p.omitted
                .iter()
                .map(move |o| json!({ "session_id": p.id, "recording_id": o.id, "why": o.why }))
        })
        .collect();
    let failed: Vec<String> = built.report.failures().map(|c| c.to_string()).collect();
    let r = &built.report;
    let detail = json!({
        "package_id": built.id,
        "session_ids": body.session_ids,
        "reason": req.reason,
        "sha256": r.package_sha256,
        "bytes": r.package_bytes,
        "intact": r.intact(),
    });
    s.audit_detail(
        &caller,
        "evidence_package.build",
        &built.id,
        facility,
        detail,
    )
    .await;
    let answer = json!({
        "id": built.id,
        "sha256": r.package_sha256,
        "bytes": r.package_bytes,
        "built_at": built.manifest.built_at,
        "sessions": body.session_ids,
        "intact": r.intact(),
        "failed_checks": failed,
        "omitted": omitted,
        "download": format!("/api/v1/evidence-packages/{}", built.id),
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// The manifest of a stored package: its first member.
fn read_manifest(path: &std::path::Path) -> Result<Option<Manifest>, ApiError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ApiError::internal(&e)),
    };
    let mut found = None;
    let mut first = true;
    // Only the first member is read; the walk stops after it.
    let r = evidence::tar::for_each(std::io::BufReader::new(f), |m, body| {
        if first && m.name == MANIFEST && m.size <= 64 * 1024 * 1024 {
            let mut bytes = Vec::new();
            body.read_to_end(&mut bytes)?;
            found = serde_json::from_slice::<Manifest>(&bytes).ok();
        }
        first = false;
        Err(evidence::tar::TarError::Format("stop".into()))
    });
    match (r, found) {
        (_, Some(m)) => Ok(Some(m)),
        (Err(e), None) => Err(ApiError::internal(&e)),
        (Ok(()), None) => Err(ApiError::internal(&"the package holds no manifest")),
    }
}

/// SHA-256 and size of a file, hex.
fn hash_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    let len = std::fs::metadata(path)?.len();
    Ok((crate::recording::hash_file(path)?, len))
}

/// `GET /evidence-packages/{id}`.
pub(crate) async fn download(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let not_found = || {
        ApiError::not_found(format!(
            "evidence package {} does not exist",
            crate::text::quote(&id)
        ))
    };
    let path = package_path(&s.config.recording.dir, &id).ok_or_else(not_found)?;
    let p = path.clone();
    let manifest = tokio::task::spawn_blocking(move || read_manifest(&p))
        .await
        .map_err(|e| ApiError::internal(&e))??
        .ok_or_else(not_found)?;
    for session in &manifest.sessions {
        caller.investigate(&session.facility_id)?;
    }
    let p = path.clone();
    let (sha256, bytes) = tokio::task::spawn_blocking(move || hash_file(&p))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    let session_ids: Vec<&str> = manifest.sessions.iter().map(|x| x.id.as_str()).collect();
    let facilities: HashSet<&str> = manifest
        .sessions
        .iter()
        .map(|x| x.facility_id.as_str())
        .collect();
    let facility = match facilities.len() {
        1 => facilities.into_iter().next(),
        _ => None,
    };
    let detail = json!({ "package_id": id, "session_ids": session_ids, "sha256": sha256,
                         "bytes": bytes });
    s.audit_detail(&caller, "evidence_package.download", &id, facility, detail)
        .await;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut r = Response::new(Body::from_stream(chunks(tokio::io::AsyncReadExt::take(
        file, bytes,
    ))));
    let h = r.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, "application/x-tar".into());
    set(header::CONTENT_LENGTH, bytes.to_string());
    set(header::CACHE_CONTROL, "private, no-store".into());
    set(
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{id}.tar\""),
    );
    set(header::HeaderName::from_static("x-content-sha256"), sha256);
    Ok(r)
}
