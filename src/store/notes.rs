//! Investigators' notes and bookmarks on sessions.
//!
//! A note marks a moment (`start_ms`, milliseconds into the session's recording) or a range
//! (`start_ms`..`end_ms`) of one session, with text. It belongs to the session's facility:
//! every investigator of that facility sees it (the API scopes by facility as for the
//! sessions themselves). It is listed per session, per inmate and per number (copied from
//! the session when the note is made, so each list reads one index) and found by its text.
//!
//! Nothing is overwritten without trace: `note_versions` is append-only (triggers refuse
//! UPDATE and DELETE); an edit appends a version, a delete appends a tombstone version
//! (`deleted`). The `notes` row keeps what never changes and which version is current, so
//! a list reads one row per note. An edit names the version it edits: an edit of a version
//! that is no longer current is refused (409), so two investigators never silently undo
//! each other. Auditing (`note.create`, `note.edit`, `note.delete`) is the API's.

use super::{flag, new_id, Store, StoreError};
use crate::db::from_micros;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// At most this many notes in one list.
pub const MAX_NOTES: i64 = 500;

/// A note as it stands (its current version).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Note {
    pub id: String,
    pub facility_id: String,
    pub session_id: String,
    /// The session's inmate and number, when it had them.
    pub inmate_id: Option<String>,
    pub number: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The current version, counted from 1.
    pub version: i64,
    /// The moment marked, in milliseconds into the session's recording.
    pub start_ms: i64,
    /// The end of the range marked, when it is a range.
    pub end_ms: Option<i64>,
    pub body: String,
    /// Who wrote the current version, and when.
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
    pub deleted: bool,
    /// The time zone of the session's facility: the note's times are shown in it.
    pub time_zone: Option<String>,
}

/// One version of a note: what it said, who wrote it and when.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NoteVersion {
    pub version: i64,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub body: String,
    /// A tombstone: the note was deleted by this version.
    pub deleted: bool,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// What a note says: the moment or range and the text (a new note, or an edit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteText {
    pub start_ms: i64,
    #[serde(default)]
    pub end_ms: Option<i64>,
    pub body: String,
}

impl NoteText {
    fn check(&self) -> Result<(), StoreError> {
        if self.start_ms < 0 {
            return Err(StoreError::invalid("start_ms", "must be 0 or more"));
        }
        if self.end_ms.is_some_and(|e| e < self.start_ms) {
            return Err(StoreError::invalid("end_ms", "must not be before start_ms"));
        }
        crate::text::NOTE.check_required("body", &self.body)?;
        Ok(())
    }
}

/// Which notes a list asks for; all set filters are combined with AND, and the list is
/// within the caller's facilities.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoteFilter {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inmate_id: Option<String>,
    /// The number in E.164 (`+15551230001`); punctuation is ignored, digits alone are read
    /// as E.164 (with their country code).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facility_id: Option<String>,
    /// Words the text must contain (each, case-insensitively).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
}

impl NoteFilter {
    /// Empty values count as absent (a form sends every field).
    pub fn normalized(mut self) -> NoteFilter {
        for v in [
            &mut self.session_id,
            &mut self.inmate_id,
            &mut self.number,
            &mut self.facility_id,
            &mut self.q,
        ] {
            *v = v
                .take()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
        }
        if let Some(n) = &self.number {
            let digits: String = n.chars().filter(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                self.number = Some(format!("+{digits}"));
            }
        }
        self
    }
}

const COLUMNS: &str =
    "n.id, n.facility_id, n.session_id, n.inmate_id, n.number_e164, n.created_by, \
    n.created_at, n.version, n.deleted, v.start_ms, v.end_ms, v.body, v.author, v.at, \
    (SELECT f.time_zone FROM facilities f WHERE f.id = n.facility_id) AS time_zone";

fn note(r: &AnyRow) -> Result<Note, sqlx::Error> {
    Ok(Note {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        session_id: r.try_get("session_id")?,
        inmate_id: r.try_get("inmate_id")?,
        number: r.try_get("number_e164")?,
        created_by: r.try_get("created_by")?,
        created_at: from_micros(r.try_get("created_at")?),
        version: r.try_get("version")?,
        start_ms: r.try_get("start_ms")?,
        end_ms: r.try_get("end_ms")?,
        body: r.try_get("body")?,
        updated_by: r.try_get("author")?,
        updated_at: from_micros(r.try_get("at")?),
        deleted: flag(r.try_get("deleted")?),
        time_zone: r.try_get("time_zone")?,
    })
}

/// `LIKE` pattern for a word, its wildcards escaped (with `\`).
fn contains(word: &str) -> String {
    let mut p = String::from("%");
    for c in word.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Store {
    /// A new note on session `session_id` by `author`: version 1.
    pub async fn create_note(
        &self,
        session_id: &str,
        author: &str,
        text: &NoteText,
    ) -> Result<Note, StoreError> {
        text.check()?;
        let id = new_id("note");
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        let made = sqlx::query(
            "INSERT INTO notes (id, facility_id, session_id, inmate_id, number_e164, created_by, \
             created_at, version, deleted) \
             SELECT $1, facility_id, id, inmate_id, number_e164, $2, $3, 1, 0 FROM sessions \
             WHERE id = $4",
        )
        .bind(&id)
        .bind(author)
        .bind(now)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
        if made.rows_affected() == 0 {
            return Err(StoreError::not_found("session", session_id));
        }
        insert_version(&mut tx, &id, 1, text, false, author, now).await?;
        tx.commit().await?;
        self.note(&id).await
    }

    /// Appends a version to note `id`, which must be at version `expected` (else 409: it
    /// was edited or deleted meanwhile). `text: None` appends a tombstone (the current
    /// moment and text, marked deleted).
    pub async fn revise_note(
        &self,
        id: &str,
        expected: Option<i64>,
        author: &str,
        text: Option<&NoteText>,
    ) -> Result<Note, StoreError> {
        if let Some(t) = text {
            t.check()?;
        }
        let current = self.note(id).await?;
        if current.deleted {
            return Err(StoreError::Conflict(format!("note {id} was deleted")));
        }
        let at = expected.unwrap_or(current.version);
        if at != current.version {
            return Err(StoreError::Conflict(format!(
                "note {id} is at version {}, not {at}: it was edited meanwhile",
                current.version
            )));
        }
        let next = current.version + 1;
        let deleted = text.is_none();
        let kept = NoteText {
            start_ms: current.start_ms,
            end_ms: current.end_ms,
            body: current.body.clone(),
        };
        let text = text.unwrap_or(&kept);
        let now = self.now_us();
        let mut tx = self.db.begin_write().await?;
        // The version moves only from the one read: a concurrent edit makes this a no-op.
        let moved = sqlx::query(
            "UPDATE notes SET version = $1, deleted = $2 WHERE id = $3 AND version = $4 \
             AND deleted = 0",
        )
        .bind(next)
        .bind(i64::from(deleted))
        .bind(id)
        .bind(current.version)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "note {id} was edited meanwhile"
            )));
        }
        insert_version(&mut tx, id, next, text, deleted, author, now).await?;
        tx.commit().await?;
        self.note(id).await
    }

    /// Note `id` as it stands (a deleted one too, marked `deleted`).
    pub async fn note(&self, id: &str) -> Result<Note, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notes n JOIN note_versions v \
             ON v.note_id = n.id AND v.version = n.version WHERE n.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("note", id))?;
        Ok(note(&row)?)
    }

    /// Every version of note `id`, oldest first.
    pub async fn note_versions(&self, id: &str) -> Result<Vec<NoteVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, start_ms, end_ms, body, deleted, author, at FROM note_versions \
             WHERE note_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NoteVersion {
                    version: r.try_get("version")?,
                    start_ms: r.try_get("start_ms")?,
                    end_ms: r.try_get("end_ms")?,
                    body: r.try_get("body")?,
                    deleted: flag(r.try_get("deleted")?),
                    author: r.try_get("author")?,
                    at: from_micros(r.try_get("at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The notes (not deleted) matching `f` within `facilities` (`None` = every
    /// facility): a session's in the order of the recording, other lists newest first.
    pub async fn notes(
        &self,
        f: &NoteFilter,
        facilities: Option<&[String]>,
    ) -> Result<Vec<Note>, StoreError> {
        if facilities.is_some_and(|l| l.is_empty()) {
            return Ok(Vec::new());
        }
        let mut conds = vec!["n.deleted = 0".to_string()];
        let mut args: Vec<String> = Vec::new();
        let mut bind = |v: String| {
            args.push(v);
            format!("${}", args.len())
        };
        for (col, v) in [
            ("n.session_id", &f.session_id),
            ("n.inmate_id", &f.inmate_id),
            ("n.number_e164", &f.number),
            ("n.facility_id", &f.facility_id),
        ] {
            if let Some(v) = v {
                let p = bind(v.clone());
                conds.push(format!("{col} = {p}"));
            }
        }
        for word in f.q.as_deref().unwrap_or("").split_whitespace() {
            let p = bind(contains(word));
            conds.push(format!("LOWER(v.body) LIKE {p} ESCAPE '\\'"));
        }
        if let Some(list) = facilities {
            let marks: Vec<String> = list.iter().map(|v| bind(v.clone())).collect();
            conds.push(format!("n.facility_id IN ({})", marks.join(", ")));
        }
        let order = match f.session_id {
            Some(_) => "v.start_ms, n.created_at, n.id",
            None => "n.created_at DESC, n.id DESC",
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM notes n JOIN note_versions v \
             ON v.note_id = n.id AND v.version = n.version WHERE {} ORDER BY {order} LIMIT {MAX_NOTES}",
            conds.join(" AND ")
        );
        let mut q = sqlx::query(&sql);
        for a in &args {
            q = q.bind(a.as_str());
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        Ok(rows.iter().map(note).collect::<Result<_, _>>()?)
    }

    /// The notes (not deleted) of the sessions `ids`, by session then moment: what an
    /// evidence package carries.
    pub async fn notes_of_sessions(&self, ids: &[String]) -> Result<Vec<Note>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            let f = NoteFilter {
                session_id: Some(id.clone()),
                ..NoteFilter::default()
            };
            out.extend(self.notes(&f, None).await?);
        }
        Ok(out)
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    version: i64,
    text: &NoteText,
    deleted: bool,
    author: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO note_versions (note_id, version, start_ms, end_ms, body, deleted, author, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(version)
    .bind(text.start_ms)
    .bind(text.end_ms)
    .bind(text.body.as_str())
    .bind(i64::from(deleted))
    .bind(author)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
