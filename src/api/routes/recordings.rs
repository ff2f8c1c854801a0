//! Recordings over HTTP: metadata, playback and download tickets, and the media itself
//! with single-range requests (so `<audio>` and `<video>` can seek). A call's recording is
//! served as `audio/wav`, a visit participant's as `video/webm` (the row's `format` says
//! which: [`MediaKind`]); the path `…/audio` serves both.
//!
//! Access is checked, and audited, when a ticket is issued (`POST …/play`,
//! `POST …/download`), and checked again on every fetch of the audio: with a bearer token,
//! or with a ticket, which names the token that asked for it (see
//! [`crate::api::tickets`]): a ticket stops working when that token ends (logout, expiry)
//! or its user loses the role or the facility. A range fetch seeks to the range and
//! streams it in 64 KiB chunks: a file is never read whole into memory.
//!
//! Fetches are audited (`recording.play` / `recording.download`, `detail.range` the range
//! served):
//! - with a bearer token, every fetch (`via: "bearer"`): API clients fetch a few times,
//!   and auditing only the fetches from byte 0 would let `Range: bytes=1-` take the file
//!   unaudited;
//! - with a download ticket, every fetch (`via: "ticket_fetch"`);
//! - with a play ticket, the fetches that start at byte 0 (`via: "ticket_fetch"`): an
//!   `<audio>` element asks many ranges while it plays and seeks, and issuing the ticket
//!   was audited already.
//!
//! What a player actually played is reported apart (`POST …/heard`, audited
//! `recording.heard` with the ranges in milliseconds): fetches say which bytes left the
//! gateway, which is not what was listened to (a browser buffers ahead).
//!
//! A play ticket never serves `download=1`; a download ticket always answers as an
//! attachment. A ticket lasts `http.ticket_ttl_secs` plus the recording's length, of
//! which at most [`MAX_LENGTH_SECS`] count (a recording stuck in `recording` must not
//! mint week-long tickets).

use crate::api::auth::{ApiQuery, Caller};
use crate::api::error::ApiError;
use crate::api::routes::calls::refuse_privileged;
use crate::api::tickets::{self, Purpose, Ticket, TicketError};
use crate::api::AppState;
use crate::recording::chain::resolve;
use crate::recording::{MediaKind, Participant};
use crate::store::{Recording, RecordingStatus};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::SeekFrom;
use std::path::Path as FsPath;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

/// Bytes read and sent per chunk of an audio answer.
const CHUNK: usize = 64 * 1024;

/// At most this much of a recording's length is added to a ticket's lifetime (4 hours).
pub(crate) const MAX_LENGTH_SECS: i64 = 4 * 3600;

/// A recording the caller may reach: admin or investigator of its facility, and not of a
/// privileged session (refused and audited; there should never be such a recording).
pub(crate) async fn visible_recording(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Recording, ApiError> {
    caller.require(&[crate::store::Role::Admin, crate::store::Role::Investigator])?;
    let rec = s.store.recording(id).await?;
    caller.investigate(&rec.facility_id)?;
    let (kind, privileged) = s.store.session_kind_privileged(&rec.session_id).await?;
    if !privileged {
        return Ok(rec);
    }
    if kind == "call" {
        let cdr = s.store.call(&rec.session_id).await?;
        return Err(refuse_privileged(s, caller, &cdr, "recording.refused").await);
    }
    let detail = json!({ "reason": "privileged", "session_id": rec.session_id });
    s.audit_detail(
        caller,
        "recording.refused",
        &rec.session_id,
        Some(&rec.facility_id),
        detail,
    )
    .await;
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "privileged",
        format!(
            "visit {} is privileged: it is never recorded or watched",
            rec.session_id
        ),
    ))
}

fn purged(rec: &Recording) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "purged",
        format!("recording {} was removed by the retention policy", rec.id),
    )
}

/// `GET /recordings/{id}`.
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Recording>, ApiError> {
    Ok(Json(visible_recording(&s, &caller, &id).await?))
}

/// `POST /recordings/{id}/play` -> `{url, expires_at, sha256}`; audited `recording.play`.
pub(crate) async fn play(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    issue(&s, &caller, &id, Purpose::Play).await
}

/// `POST /recordings/{id}/download` -> `{url, expires_at, sha256}`; audited
/// `recording.download`.
pub(crate) async fn download(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    issue(&s, &caller, &id, Purpose::Download).await
}

/// At most this many ranges in one `POST /recordings/{id}/heard`.
pub(crate) const MAX_HEARD_RANGES: usize = 100;

/// One stretch of a recording that was played, in milliseconds from its start.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeardRange {
    from_ms: i64,
    to_ms: i64,
}

/// `POST /recordings/{id}/heard`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Heard {
    ranges: Vec<HeardRange>,
}

/// `POST /recordings/{id}/heard` `{ranges: [{from_ms, to_ms}]}` -> 204: what the console's
/// player actually played (every range of its `played` so far, sent when playback pauses
/// or ends and when the session is left: the last entry of a sitting is the whole of it),
/// audited `recording.heard` with the ranges and their total. The play ticket says
/// playback was asked for; this says what was heard.
pub(crate) async fn heard(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    crate::api::auth::ApiJson(body): crate::api::auth::ApiJson<Heard>,
) -> Result<StatusCode, ApiError> {
    let rec = visible_recording(&s, &caller, &id).await?;
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m);
    if body.ranges.is_empty() || body.ranges.len() > MAX_HEARD_RANGES {
        return Err(invalid(format!(
            "ranges must hold 1 to {MAX_HEARD_RANGES} ranges ({} given)",
            body.ranges.len()
        )));
    }
    let mut total: i64 = 0;
    for r in &body.ranges {
        if r.from_ms < 0 || r.to_ms < r.from_ms {
            return Err(invalid(format!(
                "range {}..{} ms: from_ms must be 0 or more and to_ms not before it",
                r.from_ms, r.to_ms
            )));
        }
        total = total.saturating_add(r.to_ms - r.from_ms);
    }
    let detail = json!({ "session_id": rec.session_id, "ranges": body.ranges, "total_ms": total });
    s.audit_detail(
        &caller,
        "recording.heard",
        &rec.id,
        Some(&rec.facility_id),
        detail,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// How long from now a ticket for `rec` lasts: the configured time plus the recording's
/// length (so a listener can seek to its end), or its age while it is still recording,
/// counting at most [`MAX_LENGTH_SECS`] of it.
fn ticket_secs(s: &AppState, rec: &Recording, now: DateTime<Utc>) -> i64 {
    let length = match rec.duration_ms {
        Some(ms) => ms.saturating_add(999) / 1000,
        None => (now - rec.started_at).num_seconds().max(0),
    };
    i64::try_from(s.config.http.ticket_ttl_secs)
        .unwrap_or(86_400)
        .saturating_add(length.min(MAX_LENGTH_SECS))
}

async fn issue(
    s: &AppState,
    caller: &Caller,
    id: &str,
    purpose: Purpose,
) -> Result<Json<Value>, ApiError> {
    let rec = visible_recording(s, caller, id).await?;
    if rec.status == RecordingStatus::Purged {
        return Err(purged(&rec));
    }
    let now = s.store.clock().wall();
    let expires_at = now.timestamp().saturating_add(ticket_secs(s, &rec, now));
    let ticket = tickets::issue(
        &s.ticket_key,
        &Ticket {
            recording_id: rec.id.clone(),
            purpose,
            expires_at,
            token: caller.ticket_token_ref(s),
            subject: caller.subject().to_string(),
        },
    );
    let mut url = format!("/api/v1/recordings/{}/audio?ticket={ticket}", rec.id);
    if purpose == Purpose::Download {
        url.push_str("&download=1");
    }
    let expires = DateTime::from_timestamp(expires_at, 0);
    let detail = json!({ "session_id": rec.session_id, "via": "ticket", "expires_at": expires });
    let action = format!("recording.{}", purpose.as_str());
    s.audit_detail(caller, &action, &rec.id, Some(&rec.facility_id), detail)
        .await;
    Ok(Json(
        json!({ "url": url, "expires_at": expires, "sha256": rec.sha256, "status": rec.status }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AudioQuery {
    ticket: Option<String>,
    #[serde(default)]
    download: Option<String>,
}

impl AudioQuery {
    fn download(&self) -> bool {
        matches!(self.download.as_deref(), Some("1" | "true"))
    }
}

/// How a request for the audio was allowed, and for whom.
enum Access {
    Ticket(Ticket, Caller),
    Bearer(Caller),
}

impl Access {
    fn caller(&self) -> &Caller {
        match self {
            Access::Ticket(_, c) | Access::Bearer(c) => c,
        }
    }
}

fn ticket_error(e: TicketError) -> ApiError {
    let code = match e {
        TicketError::Invalid => "invalid_ticket",
        TicketError::Expired => "ticket_expired",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
}

/// Checks the ticket or the bearer token before anything about the recording is told.
async fn access(
    s: &AppState,
    id: &str,
    q: &AudioQuery,
    req: Request,
) -> Result<(Access, Recording), ApiError> {
    let (mut parts, _) = req.into_parts();
    if let Some(text) = &q.ticket {
        let t = open_ticket(s, id, q, text)?;
        let remote = crate::api::auth::remote_addr(&parts);
        let caller = Caller::of_ticket_token(s, &t.token, remote)
            .await?
            .ok_or_else(ticket_revoked)?;
        let rec = visible_recording(s, &caller, id).await?;
        return Ok((Access::Ticket(t, caller), rec));
    }
    let caller = Caller::from_request_parts(&mut parts, s).await?;
    let rec = visible_recording(s, &caller, id).await?;
    Ok((Access::Bearer(caller), rec))
}

/// The ticket's facts, when it is valid now, for recording `id`, and for what is asked
/// (a play ticket does not serve `download=1`).
fn open_ticket(s: &AppState, id: &str, q: &AudioQuery, text: &str) -> Result<Ticket, ApiError> {
    let now = s.store.clock().wall().timestamp();
    let t = tickets::open(&s.ticket_key, text, now).map_err(ticket_error)?;
    if t.recording_id != id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ticket_mismatch",
            "this ticket is for another recording",
        ));
    }
    if q.download() && t.purpose != Purpose::Download {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ticket_purpose",
            "this ticket is for playback; ask POST /recordings/{id}/download for a download",
        ));
    }
    Ok(t)
}

fn ticket_revoked() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "ticket_revoked",
        "the session this ticket was issued to has ended (logged out or expired)",
    )
}

/// `GET /recordings/{id}/audio[?ticket=…][&download=1]`: the file (a call's WAV, a visit
/// participant's WebM), or one range of it.
pub(crate) async fn audio(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AudioQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let range_header = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (access, rec) = access(&s, &id, &q, req).await?;
    if rec.status == RecordingStatus::Purged {
        return Err(purged(&rec));
    }
    let attachment = match &access {
        Access::Ticket(t, _) => t.purpose == Purpose::Download,
        Access::Bearer(_) => q.download(),
    };
    let (file, len) = open_file(&s.config.recording.dir, &rec).await?;
    let range = parse_range(range_header.as_deref(), len);
    if let Some(via) = audited_via(&access, range) {
        let action = if attachment {
            "recording.download"
        } else {
            "recording.play"
        };
        let detail = json!({ "session_id": rec.session_id, "via": via, "range": range.describe() });
        s.audit_detail(
            access.caller(),
            action,
            &rec.id,
            Some(&rec.facility_id),
            detail,
        )
        .await;
    }
    respond(file, len, range, &rec, attachment).await
}

/// Whether a fetch is audited, and as what `via` (see the module doc).
fn audited_via(access: &Access, range: ByteRange) -> Option<&'static str> {
    match access {
        Access::Bearer(_) => Some("bearer"),
        Access::Ticket(t, _) if t.purpose == Purpose::Download => Some("ticket_fetch"),
        Access::Ticket(..) => range.starts_at_zero().then_some("ticket_fetch"),
    }
}

/// The recording's file under the recordings directory, and its current length (a file
/// still being recorded grows).
async fn open_file(dir: &FsPath, rec: &Recording) -> Result<(tokio::fs::File, u64), ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "file_missing",
            format!(
                "the file of recording {} (recorded by node {}) is missing from recording.dir \
                 (in a cluster, every node must mount the same recordings directory)",
                rec.id, rec.node_id
            ),
        )
    };
    let Some(path) = resolve(dir, &rec.path) else {
        tracing::error!(recording = %rec.id, path = %rec.path, "recording path leaves the recordings directory");
        return Err(missing());
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(recording = %rec.id, path = %path.display(), error = %e, "recording file cannot be opened");
            return Err(missing());
        }
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(&e))?
        .len();
    Ok((file, len))
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// No range, or one we ignore (another unit, several ranges, bad syntax): the whole
    /// file with 200, as RFC 9110 §14.2 allows.
    Full,
    /// Bytes `start..=end`, answered with 206.
    Part(u64, u64),
    /// Nothing of the file: 416.
    Unsatisfiable,
}

impl ByteRange {
    /// Whether the answer starts at the first byte of the file.
    pub(crate) fn starts_at_zero(self) -> bool {
        matches!(self, ByteRange::Full | ByteRange::Part(0, _))
    }

    /// For the audit log: `all`, `bytes=a-b` (as served) or `unsatisfiable`.
    pub(crate) fn describe(self) -> String {
        match self {
            ByteRange::Full => "all".into(),
            ByteRange::Part(a, b) => format!("bytes={a}-{b}"),
            ByteRange::Unsatisfiable => "unsatisfiable".into(),
        }
    }
}

/// Parses a single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`).
pub(crate) fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part(len.saturating_sub(n), len - 1),
            None => ByteRange::Full,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return ByteRange::Full;
            };
            let end = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            match end {
                None => ByteRange::Full,
                Some(end) if end < start => ByteRange::Full,
                Some(_) if start >= len => ByteRange::Unsatisfiable,
                Some(end) => ByteRange::Part(start, end.min(len - 1)),
            }
        }
        (true, true) => ByteRange::Full,
    }
}

async fn respond(
    mut file: tokio::fs::File,
    len: u64,
    range: ByteRange,
    rec: &Recording,
    attachment: bool,
) -> Result<Response, ApiError> {
    let (status, start, count) = match range {
        ByteRange::Full => (StatusCode::OK, 0, len),
        ByteRange::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        ByteRange::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the file has {len} bytes"),
            )
            .into_response();
            insert(
                r.headers_mut(),
                header::CONTENT_RANGE,
                format!("bytes */{len}"),
            );
            insert(r.headers_mut(), header::ACCEPT_RANGES, "bytes".into());
            return Ok(r);
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    let mut r = Response::new(Body::from_stream(chunks(file.take(count))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let kind = MediaKind::of_recording(&rec.format, &rec.path).unwrap_or(MediaKind::CallAudio);
    insert(h, header::CONTENT_TYPE, kind.content_type().into());
    insert(h, header::ACCEPT_RANGES, "bytes".into());
    insert(h, header::CONTENT_LENGTH, count.to_string());
    insert(h, header::CACHE_CONTROL, "private, no-store".into());
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        insert(
            h,
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{len}"),
        );
    }
    if let Some(sha) = &rec.sha256 {
        insert(
            h,
            header::HeaderName::from_static("x-content-sha256"),
            sha.clone(),
        );
    }
    if attachment {
        let name = format!("attachment; filename=\"{}\"", download_name(rec, kind));
        insert(h, header::CONTENT_DISPOSITION, name);
    }
    Ok(r)
}

fn insert(h: &mut HeaderMap, name: header::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

/// The name a download is saved under: `<session>.wav` for a call,
/// `<session>-<participant>.webm` for one side of a visit.
fn download_name(rec: &Recording, kind: MediaKind) -> String {
    let session = safe_name(&rec.session_id);
    match rec.participant {
        Participant::Both => format!("{session}.{}", kind.extension()),
        p => format!("{session}-{}.{}", p.as_str(), kind.extension()),
    }
}

/// A file name made of `[A-Za-z0-9_-]` only.
fn safe_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// The reader as a stream of chunks of at most [`CHUNK`] bytes; ends after an error.
pub(crate) fn chunks<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        let mut buf = vec![0u8; CHUNK];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn ranges() {
        let p = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), ByteRange::Full);
        assert_eq!(p("bytes=0-9"), ByteRange::Part(0, 9));
        assert_eq!(p("bytes=10-"), ByteRange::Part(10, 99));
        assert_eq!(p("bytes=90-500"), ByteRange::Part(90, 99));
        assert_eq!(p("bytes=-10"), ByteRange::Part(90, 99));
        assert_eq!(p("bytes=-500"), ByteRange::Part(0, 99));
        assert_eq!(p("bytes=100-"), ByteRange::Unsatisfiable);
        assert_eq!(p("bytes=-0"), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        for ignored in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=x-1",
            "bytes=-",
            "bytes",
        ] {
            assert_eq!(p(ignored), ByteRange::Full, "{ignored}");
        }
    }

    #[test]
    fn ranges_as_audited() {
        assert!(ByteRange::Full.starts_at_zero());
        assert!(ByteRange::Part(0, 9).starts_at_zero());
        assert!(!ByteRange::Part(1, 9).starts_at_zero());
        assert!(!ByteRange::Unsatisfiable.starts_at_zero());
        assert_eq!(ByteRange::Part(1, 99).describe(), "bytes=1-99");
        assert_eq!(ByteRange::Full.describe(), "all");
    }

    #[test]
    fn downloads_are_named_by_session_participant_and_kind() {
        let rec = |participant, format: &str, path: &str| Recording {
            id: "rec_1".into(),
            session_id: "ses/../1".into(),
            facility_id: "F".into(),
            path: path.into(),
            format: format.into(),
            status: RecordingStatus::Complete,
            node_id: "n".into(),
            started_at: Utc::now(),
            ended_at: None,
            duration_ms: None,
            bytes: None,
            sha256: None,
            dropped_packets: 0,
            chain_seq: None,
            purged_at: None,
            participant,
        };
        let call = rec(Participant::Both, "wav-pcmu", "2026/03/02/ses_1.wav");
        let visit = rec(
            Participant::Visitor,
            crate::recording::webm::FORMAT_NAME,
            "2026/03/02/ses_1-visitor.webm",
        );
        let kind = |r: &Recording| MediaKind::of_recording(&r.format, &r.path).unwrap();
        assert_eq!(kind(&call).content_type(), "audio/wav");
        assert_eq!(kind(&visit).content_type(), "video/webm");
        assert_eq!(download_name(&call, kind(&call)), "ses1.wav");
        assert_eq!(download_name(&visit, kind(&visit)), "ses1-visitor.webm");
    }

    #[test]
    fn paths_stay_under_the_directory() {
        let d = FsPath::new("/rec");
        assert_eq!(
            resolve(d, "2026/03/02/c1.wav"),
            Some(PathBuf::from("/rec/2026/03/02/c1.wav"))
        );
        for bad in ["../x.wav", "/etc/passwd", "a/../../x", "", "./a"] {
            assert_eq!(resolve(d, bad), None, "{bad}");
        }
    }
}
