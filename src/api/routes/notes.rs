//! Investigators' notes and bookmarks over HTTP ([`crate::store::Note`]).
//!
//! A note is about one session and belongs to its facility: admins and investigators of
//! that facility read, write, edit and delete it (403/404 as for `GET /calls/{id}`).
//! A privileged session has no recording and gets no note (403 `privileged`, audited
//! `note.refused`).
//!
//! - `GET /notes?session_id=&inmate_id=&number=&facility_id=&q=`: the notes as they
//!   stand, within the caller's facilities (a session's in recording order, other lists
//!   newest first); `q` finds words of the text.
//! - `POST /notes` `{session_id, start_ms, end_ms?, body}` -> 201, audited `note.create`.
//! - `GET /notes/{id}`: the note with every version, `versions`, oldest first.
//! - `PUT /notes/{id}` `{version, start_ms, end_ms?, body}` -> a new version (409 when
//!   `version` is no longer the current one), audited `note.edit`.
//! - `DELETE /notes/{id}?version=` -> a tombstone version, audited `note.delete`.
//!
//! Every audit entry names the note, its session and the version written, so the audit
//! log and the versions tell the same story.

use crate::api::auth::{ApiJson, ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::routes::calls::{refuse_privileged, visible_session};
use crate::api::AppState;
use crate::store::{Facilities, Note, NoteFilter, NoteText, NoteVersion, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `POST /notes`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewNote {
    session_id: String,
    start_ms: i64,
    #[serde(default)]
    end_ms: Option<i64>,
    body: String,
}

/// `PUT /notes/{id}`'s body: the version edited and the new text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteEdit {
    version: i64,
    start_ms: i64,
    #[serde(default)]
    end_ms: Option<i64>,
    body: String,
}

/// `DELETE /notes/{id}`'s query: the version deleted (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    #[serde(default)]
    version: Option<i64>,
}

/// A note with its history.
#[derive(Serialize)]
pub(crate) struct NoteHistory {
    #[serde(flatten)]
    note: Note,
    versions: Vec<NoteVersion>,
}

/// The note, if the caller may see it (admin or investigator of its facility).
async fn visible_note(s: &AppState, caller: &Caller, id: &str) -> Result<Note, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let note = s.store.note(id).await?;
    caller.investigate(&note.facility_id)?;
    Ok(note)
}

async fn audit(s: &AppState, caller: &Caller, action: &str, note: &Note) {
    let detail = json!({ "note_id": note.id, "session_id": note.session_id,
                         "version": note.version, "start_ms": note.start_ms,
                         "end_ms": note.end_ms });
    s.audit_detail(caller, action, &note.id, Some(&note.facility_id), detail)
        .await;
}

/// `GET /notes`.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<NoteFilter>,
) -> Result<Json<Vec<Note>>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let f = f.normalized();
    super::check_search_filters(
        &[
            ("session_id", &f.session_id),
            ("inmate_id", &f.inmate_id),
            ("number", &f.number),
            ("facility_id", &f.facility_id),
        ],
        f.q.as_ref(),
    )?;
    if let Some(fid) = &f.facility_id {
        caller.investigate(fid)?;
    }
    let scope = match &caller.0.facilities {
        Facilities::All => None,
        Facilities::Only(list) => Some(list.clone()),
    };
    Ok(Json(s.store.notes(&f, scope.as_deref()).await?))
}

/// `POST /notes`.
pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewNote>,
) -> Result<Response, ApiError> {
    let cdr = visible_session(&s, &caller, &body.session_id).await?;
    if cdr.privileged {
        return Err(refuse_privileged(&s, &caller, &cdr, "note.refused").await);
    }
    let text = NoteText {
        start_ms: body.start_ms,
        end_ms: body.end_ms,
        body: body.body,
    };
    let note = s
        .store
        .create_note(&cdr.id, caller.subject(), &text)
        .await?;
    audit(&s, &caller, "note.create", &note).await;
    Ok((StatusCode::CREATED, Json(note)).into_response())
}

/// `GET /notes/{id}`.
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<NoteHistory>, ApiError> {
    let note = visible_note(&s, &caller, &id).await?;
    let versions = s.store.note_versions(&id).await?;
    Ok(Json(NoteHistory { note, versions }))
}

/// `PUT /notes/{id}`.
pub(crate) async fn edit(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NoteEdit>,
) -> Result<Json<Note>, ApiError> {
    visible_note(&s, &caller, &id).await?;
    let text = NoteText {
        start_ms: body.start_ms,
        end_ms: body.end_ms,
        body: body.body,
    };
    let note = s
        .store
        .revise_note(&id, Some(body.version), caller.subject(), Some(&text))
        .await?;
    audit(&s, &caller, "note.edit", &note).await;
    Ok(Json(note))
}

/// `DELETE /notes/{id}`.
pub(crate) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<Note>, ApiError> {
    visible_note(&s, &caller, &id).await?;
    let note = s
        .store
        .revise_note(&id, q.version, caller.subject(), None)
        .await?;
    audit(&s, &caller, "note.delete", &note).await;
    Ok(Json(note))
}
