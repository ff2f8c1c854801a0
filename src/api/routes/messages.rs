//! Messages over HTTP ([`crate::messaging`] has the rules, `store::messages` the rows).
//!
//! The inmate, at a kiosk in a sitting ([`crate::kiosk`]):
//! - `GET /kiosk/messages`: their approved contacts, what they sent (with its status and,
//!   when rejected, the reason) and what was delivered to them (marked read);
//! - `POST /kiosk/messages` `{contact_id, body}` with an `Idempotency-Key` -> 201.
//!
//! A family user, bound to contacts (the portal's session cookie):
//! - `GET /family/messages`: the contacts they write as and the conversations;
//! - `POST /family/messages/photos?contact_id=` with a PNG or JPEG body -> 201, the photo
//!   (re-encoded) to attach;
//! - `POST /family/messages` `{contact_id, body, photos}` with an `Idempotency-Key` -> 201.
//!
//! Either side: `GET /message-photos/{id}`, a photo the caller may see, with its type,
//! `nosniff`, `inline` and `Content-Security-Policy: sandbox`.
//!
//! Staff (admins and investigators of the message's facility; privileged messages are
//! never shown, `403 privileged`): `GET /messages` (search), `GET /messages/review` (the
//! queue), `GET /messages/{id}`, `POST /messages/{id}/approve`, `POST /messages/{id}/reject`
//! `{reason}`. Every read is audited (`message.search`, `message.queue`, `message.read`,
//! `message.photo`) with the ids it showed. Admins of a facility: `GET|PUT
//! /facilities/{id}/messaging` (its settings) and `GET|POST /facilities/{id}/watch-words`,
//! `DELETE /facilities/{id}/watch-words/{word_id}` (or `?word=`), all audited.
//!
//! A send is idempotent: the message's id is derived from the caller and its key, so a
//! retry answers the first message (200) and charges nothing more; another message under
//! the same key is a 409 `idempotency_conflict`. The price (if the facility sets one) is
//! charged through the ledger under the same key before the message is stored; short
//! funds refuse the send (422 `insufficient_funds`) and nothing is stored or charged. A
//! rejected message's price is credited back.

use crate::api::auth::{ApiBytes, ApiJson, ApiQuery, Caller, IdempotencyKey};
use crate::api::error::ApiError;
use crate::api::routes::deposits::family_user;
use crate::api::AppState;
use crate::ledger::{LedgerError, PurchaseRequest, RefundRequest, RequestKey};
use crate::messaging::{self, photo, Direction, MessageStatus};
use crate::money::Money;
use crate::store::{
    Contact, ContactStatus, Facilities, Inmate, InmateStatus, Message, MessageFilter, MessagePage,
    MessagePhoto, NewMessage, Role, StoreError,
};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `POST /kiosk/messages`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KioskMessage {
    contact_id: String,
    body: String,
}

/// `POST /family/messages`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FamilyMessage {
    contact_id: String,
    body: String,
    #[serde(default)]
    photos: Vec<String>,
}

/// `POST /family/messages/photos`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhotoQuery {
    contact_id: String,
}

/// `POST /messages/{id}/reject`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rejection {
    reason: String,
}

/// `POST /facilities/{id}/watch-words`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWord {
    word: String,
}

/// `DELETE /facilities/{id}/watch-words?word=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WordQuery {
    #[serde(default)]
    word: Option<String>,
}

/// The review queue's query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueQuery {
    #[serde(default)]
    facility_id: Option<String>,
}

/// A message as its sender or recipient sees it: no watch words, no reviewer.
fn party_view(m: &Message) -> Value {
    let status = m.status;
    json!({
        "id": m.id,
        "direction": m.direction,
        "inmate_id": m.inmate_id,
        "inmate_name": m.inmate_name,
        "contact_id": m.contact_id,
        "contact_name": m.contact_name,
        "body": m.body,
        "status": status,
        "reason": if status == MessageStatus::Rejected { m.reason.clone() } else { None },
        "price": m.price,
        "privileged": m.privileged,
        "read_at": m.read_at,
        "created_at": m.created_at,
        "photos": m.photos,
    })
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// A message's id: the SHA-256 of the caller's namespace and key, so a retry of one
/// request names the same message on every node.
fn message_id(key: &RequestKey) -> String {
    let d = Sha256::digest(format!("{}\n{}", key.caller(), key.key()).as_bytes());
    format!("msg_{}", &hex::encode(d)[..32])
}

/// What a send is about, checked by the side's route.
struct Outgoing<'a> {
    inmate: Inmate,
    contact: Contact,
    direction: Direction,
    sender: &'a str,
    body: &'a str,
    photos: &'a [String],
}

/// The inmate and contact of a send: the contact approved, the inmate not released.
async fn parties(s: &AppState, contact_id: &str) -> Result<(Inmate, Contact), ApiError> {
    crate::text::SETTING
        .check_required("contact_id", contact_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let contact = s.store.contact(contact_id).await?;
    let inmate = s.store.inmate(&contact.inmate_id).await?;
    if contact.status != ContactStatus::Approved {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "contact_not_approved",
            "messages go only to and from approved contacts",
        ));
    }
    if inmate.status == InmateStatus::Released {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "inmate_released",
            "the inmate has been released",
        ));
    }
    Ok((inmate, contact))
}

/// The account that pays a message: the inmate's for theirs, the family user's prepaid
/// account at the inmate's facility for theirs (none: short of funds).
async fn payer(s: &AppState, out: &Outgoing<'_>, price: Money) -> Result<String, ApiError> {
    if out.direction == Direction::FromInmate {
        return Ok(out.inmate.account_id.clone());
    }
    let accounts = s.store.ledger().family_accounts(out.sender).await?;
    accounts
        .into_iter()
        .find(|a| a.facility_id.as_deref() == Some(out.inmate.facility_id.as_str()))
        .map(|a| a.id)
        .ok_or_else(|| {
            LedgerError::InsufficientFunds {
                balance: Money::ZERO,
                amount: price,
            }
            .into()
        })
}

/// Sends a message (both sides): checks, scans, charges, stores, tells.
async fn send(
    s: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    out: Outgoing<'_>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let facility = out.inmate.facility_id.clone();
    let settings = s.store.message_settings(&facility).await?;
    let body = messaging::check_body(out.body, settings.max_chars)
        .map_err(|e| invalid(format!("body: {e}")))?;
    if out.photos.len() > settings.max_photos as usize {
        return Err(invalid(format!(
            "photos: this facility allows {} photos on a message",
            settings.max_photos
        )));
    }
    let rk = key.of(caller)?;
    let id = message_id(&rk);
    match s.store.message(&id).await {
        Ok(first) => return replay(first, &out, body),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let privileged = out.contact.privileged;
    let flagged = if privileged {
        Vec::new()
    } else {
        let words: Vec<String> = s
            .store
            .watch_words(&facility)
            .await?
            .into_iter()
            .map(|w| w.word)
            .collect();
        messaging::scan(body, &words)
    };
    check_photos(s, &out, &facility).await?;
    let status = messaging::initial_status(settings.review, privileged, !flagged.is_empty());
    let price = messaging::price(&settings, privileged);
    let mut account = None;
    if price.is_positive() {
        let account_id = payer(s, &out, price).await?;
        let req = PurchaseRequest {
            account_id: account_id.clone(),
            amount: price,
            reference: id.clone(),
            memo: match out.direction {
                Direction::FromInmate => "message from the inmate".into(),
                Direction::ToInmate => "message to the inmate".into(),
            },
        };
        s.store.ledger().charge_message(&rk, &facility, req).await?;
        account = Some(account_id);
    }
    let new = NewMessage {
        id: &id,
        facility_id: &facility,
        inmate_id: &out.inmate.id,
        contact_id: &out.contact.id,
        direction: out.direction,
        sender: out.sender,
        body,
        privileged,
        status,
        flagged: &flagged,
        price,
        account_id: account.as_deref(),
        photos: out.photos,
    };
    let message = match s.store.insert_message(&new).await {
        Ok(m) => m,
        Err(StoreError::Conflict(_)) => return replay(s.store.message(&id).await?, &out, body),
        Err(e) => {
            // Charged, not stored (a photo sent meanwhile by another request): the price
            // goes back, once, so the refusal costs nothing.
            if let Some(account_id) = &account {
                credit_back(s, &id, account_id, price, "unsent").await?;
            }
            return Err(e.into());
        }
    };
    let detail = json!({ "message_id": message.id, "contact_id": message.contact_id,
        "inmate_id": message.inmate_id, "direction": message.direction,
        "status": message.status, "flagged": message.flagged.len(), "price": message.price,
        "photos": message.photos.len() });
    s.audit_detail(caller, "message.send", &message.id, Some(&facility), detail)
        .await;
    if message.status == MessageStatus::Delivered {
        notify(s, &message).await;
    }
    Ok((StatusCode::CREATED, Json(party_view(&message))))
}

/// Refuses, before anything is charged, photos that are not the sender's uploads for
/// this facility or were sent already.
async fn check_photos(s: &AppState, out: &Outgoing<'_>, facility: &str) -> Result<(), ApiError> {
    for id in out.photos {
        let p = s.store.message_photo(id).await;
        let ok = p.as_ref().is_ok_and(|p| {
            p.uploaded_by == out.sender && p.facility_id == facility && p.message_id.is_none()
        });
        if !ok {
            return Err(invalid(format!(
                "photos: photo '{}' is not one you uploaded for this facility, or was sent already",
                crate::text::quote(id)
            )));
        }
    }
    Ok(())
}

/// Gives a message's price back to `account_id` from the facility's message revenue
/// (keyed by the message and `why`, so twice is once).
async fn credit_back(
    s: &AppState,
    message_id: &str,
    account_id: &str,
    price: Money,
    why: &str,
) -> Result<(), ApiError> {
    let key = RequestKey::new("messages", &format!("{why}:{message_id}"))
        .map_err(|e| ApiError::internal(&e))?;
    let req = RefundRequest {
        account_id: account_id.to_string(),
        amount: price,
        reference: message_id.to_string(),
        memo: format!("message {why}"),
    };
    s.store.ledger().refund_message(&key, req).await?;
    Ok(())
}

/// The answer to a retried send: the first message (200), or 409 when the key was used
/// for another one.
fn replay(
    first: Message,
    out: &Outgoing<'_>,
    body: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if first.contact_id == out.contact.id && first.body == body && first.direction == out.direction
    {
        return Ok((StatusCode::OK, Json(party_view(&first))));
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this Idempotency-Key was used for another message",
    ))
}

/// Tells the family users bound to the contact that a message from the inmate waits in
/// the portal (never what it says). Mail goes out in the background.
async fn notify(s: &AppState, m: &Message) {
    if m.direction != Direction::FromInmate {
        return;
    }
    let recipients = match s.store.message_recipients(&m.contact_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, message = %m.id, "message notice: recipients not read");
            return;
        }
    };
    let facility = s
        .store
        .facility(&m.facility_id)
        .await
        .map(|f| f.name)
        .unwrap_or_else(|_| m.facility_id.clone());
    let base = crate::family::public_url(&s.config);
    for to in recipients {
        let email = crate::family::texts::new_message(&to, &m.inmate_name, &facility, &base);
        crate::mail::send_later(s.config.clone(), email);
    }
}

// The inmate's side -----------------------------------------------------------------------

async fn sitting_inmate(s: &AppState, caller: &Caller) -> Result<Inmate, ApiError> {
    caller.require(&[Role::Kiosk])?;
    let inmate = s.store.inmate(caller.sitting_inmate()?).await?;
    caller.scope(&inmate.facility_id)?;
    Ok(inmate)
}

/// `GET /kiosk/messages`.
pub(crate) async fn kiosk_list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let inmate = sitting_inmate(&s, &caller).await?;
    let settings = s.store.message_settings(&inmate.facility_id).await?;
    let contacts: Vec<Value> = s
        .store
        .contacts(&inmate.id)
        .await?
        .into_iter()
        .filter(|c| c.status == ContactStatus::Approved)
        .map(|c| {
            json!({ "id": c.id, "name": c.name, "relationship": c.relationship,
                    "privileged": c.privileged })
        })
        .collect();
    let messages = s.store.inmate_messages(&inmate.id).await?;
    let unread: Vec<String> = messages
        .iter()
        .filter(|m| m.direction == Direction::ToInmate && m.read_at.is_none())
        .map(|m| m.id.clone())
        .collect();
    s.store
        .mark_messages_read(&unread, Direction::ToInmate)
        .await?;
    Ok(Json(json!({
        "inmate": { "id": inmate.id, "name": format!("{} {}", inmate.first_name, inmate.last_name) },
        "contacts": contacts,
        "messages": messages.iter().map(party_view).collect::<Vec<_>>(),
        "max_chars": settings.max_chars,
        "price": settings.price,
    })))
}

/// `POST /kiosk/messages`.
pub(crate) async fn kiosk_send(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<KioskMessage>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let me = sitting_inmate(&s, &caller).await?;
    let (inmate, contact) = parties(&s, &body.contact_id).await?;
    if inmate.id != me.id {
        return Err(ApiError::not_found(format!(
            "contact '{}' not found",
            crate::text::quote(&body.contact_id)
        )));
    }
    let out = Outgoing {
        inmate,
        contact,
        direction: Direction::FromInmate,
        sender: &me.id,
        body: &body.body,
        photos: &[],
    };
    send(&s, &caller, &key, out).await
}

// The family's side -----------------------------------------------------------------------

/// A contact the family user is bound to, or 404 (the same answer as for no contact).
async fn family_contact(
    s: &AppState,
    user: &str,
    contact_id: &str,
) -> Result<(Inmate, Contact), ApiError> {
    let mine = s.store.family_contacts(user).await?;
    if !mine.iter().any(|c| c == contact_id) {
        return Err(ApiError::not_found(format!(
            "contact '{}' not found",
            crate::text::quote(contact_id)
        )));
    }
    parties(s, contact_id).await
}

/// `GET /family/messages`.
pub(crate) async fn family_list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let user = family_user(&caller)?;
    let mut contacts = Vec::new();
    let mut ids = Vec::new();
    for cid in s.store.family_contacts(user).await? {
        let c = s.store.contact(&cid).await?;
        if c.status != ContactStatus::Approved {
            continue;
        }
        let inmate = s.store.inmate(&c.inmate_id).await?;
        if inmate.status == InmateStatus::Released {
            continue;
        }
        let facility = s.store.facility(&inmate.facility_id).await?;
        let settings = s.store.message_settings(&inmate.facility_id).await?;
        contacts.push(json!({
            "id": c.id, "name": c.name, "privileged": c.privileged,
            "inmate_id": inmate.id,
            "inmate_name": format!("{} {}", inmate.first_name, inmate.last_name),
            "facility_id": facility.id, "facility_name": facility.name,
            "max_chars": settings.max_chars, "price": settings.price,
            "max_photos": settings.max_photos,
            "max_photo_bytes": settings.photo_limit(&s.config.messaging),
        }));
        ids.push(c.id);
    }
    let messages = s.store.contact_messages(&ids).await?;
    let unread: Vec<String> = messages
        .iter()
        .filter(|m| m.direction == Direction::FromInmate && m.read_at.is_none())
        .map(|m| m.id.clone())
        .collect();
    s.store
        .mark_messages_read(&unread, Direction::FromInmate)
        .await?;
    Ok(Json(json!({
        "contacts": contacts,
        "messages": messages.iter().map(party_view).collect::<Vec<_>>(),
    })))
}

/// `POST /family/messages/photos?contact_id=`: the body is the photo.
pub(crate) async fn family_photo(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PhotoQuery>,
    ApiBytes(bytes): ApiBytes,
) -> Result<(StatusCode, Json<MessagePhoto>), ApiError> {
    let user = family_user(&caller)?.to_string();
    let (inmate, _) = family_contact(&s, &user, &q.contact_id).await?;
    let settings = s.store.message_settings(&inmate.facility_id).await?;
    if settings.max_photos == 0 {
        return Err(invalid(
            "photos: this facility takes no photos with messages",
        ));
    }
    let limit = settings.photo_limit(&s.config.messaging);
    let side = s.config.messaging.max_photo_pixels;
    let dir = photo::dir(&s.config);
    let clean = tokio::task::spawn_blocking(move || {
        let clean = photo::reencode(&bytes, limit, side)?;
        photo::store(&dir, &clean).map_err(PhotoFailure::Io)?;
        Ok::<_, PhotoFailure>(clean)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let clean = match clean {
        Ok(c) => c,
        Err(PhotoFailure::Refused(e)) => {
            let status = match e {
                photo::PhotoError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                photo::PhotoError::NotAPhoto => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            return Err(ApiError::new(status, e.code(), e.to_string()));
        }
        Err(PhotoFailure::Io(e)) => return Err(ApiError::internal(&e)),
    };
    let kept = s
        .store
        .add_message_photo(&inmate.facility_id, &user, &clean)
        .await?;
    Ok((StatusCode::CREATED, Json(kept)))
}

enum PhotoFailure {
    Refused(photo::PhotoError),
    Io(std::io::Error),
}

impl From<photo::PhotoError> for PhotoFailure {
    fn from(e: photo::PhotoError) -> Self {
        PhotoFailure::Refused(e)
    }
}

/// `POST /family/messages`.
pub(crate) async fn family_send(
    State(s): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<FamilyMessage>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = family_user(&caller)?.to_string();
    let (inmate, contact) = family_contact(&s, &user, &body.contact_id).await?;
    let out = Outgoing {
        inmate,
        contact,
        direction: Direction::ToInmate,
        sender: &user,
        body: &body.body,
        photos: &body.photos,
    };
    send(&s, &caller, &key, out).await
}

// Photos ------------------------------------------------------------------------------------

/// `GET /message-photos/{id}`: for the kiosk of the message's inmate, a family user bound
/// to its contact (or who uploaded it), or staff of its facility (audited; never of a
/// privileged message).
pub(crate) async fn photo_file(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hidden = || ApiError::not_found(format!("photo '{}' not found", crate::text::quote(&id)));
    let p = s.store.message_photo(&id).await.map_err(|_| hidden())?;
    let message = match &p.message_id {
        Some(m) => Some(s.store.message(m).await?),
        None => None,
    };
    let seen_by_recipient = |m: &Message| m.status == MessageStatus::Delivered;
    match caller.0.role {
        Role::Kiosk => {
            let inmate = caller.sitting_inmate()?;
            let ok = message.as_ref().is_some_and(|m| {
                m.inmate_id == inmate
                    && (m.direction == Direction::FromInmate || seen_by_recipient(m))
            });
            if !ok {
                return Err(hidden());
            }
        }
        Role::Family => {
            let user = family_user(&caller)?;
            let own = p.uploaded_by == user;
            let bound = match &message {
                Some(m) => {
                    let mine = s.store.family_contacts(user).await?;
                    mine.contains(&m.contact_id)
                        && (m.direction == Direction::ToInmate || seen_by_recipient(m))
                }
                None => false,
            };
            if !own && !bound {
                return Err(hidden());
            }
        }
        Role::Admin | Role::Investigator => {
            caller.investigate(&p.facility_id)?;
            let Some(m) = &message else {
                return Err(hidden());
            };
            refuse_privileged(&s, &caller, m).await?;
            let detail = json!({ "message_id": m.id, "photo_id": p.id });
            s.audit_detail(
                &caller,
                "message.photo",
                &p.id,
                Some(&p.facility_id),
                detail,
            )
            .await;
        }
    }
    let path = photo::path(&photo::dir(&s.config), &p.sha256).ok_or_else(hidden)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal(&format!("photo {}: {e}", p.id)))?;
    Ok(photo_response(&p, bytes))
}

/// A photo as the browser gets it: its own type, never sniffed, shown inline, and
/// sandboxed should anything open it as a document.
fn photo_response(p: &MessagePhoto, bytes: Vec<u8>) -> Response {
    let kind =
        photo::PhotoKind::from_content_type(&p.content_type).unwrap_or(photo::PhotoKind::Jpeg);
    let disposition = format!("inline; filename=\"{}.{}\"", p.id, kind.extension());
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

// Staff ---------------------------------------------------------------------------------------

/// 403 `privileged` (audited `message.refused`) for a privileged message.
async fn refuse_privileged(s: &AppState, caller: &Caller, m: &Message) -> Result<(), ApiError> {
    if !m.privileged {
        return Ok(());
    }
    s.audit_detail(
        caller,
        "message.refused",
        &m.id,
        Some(&m.facility_id),
        json!({ "reason": "privileged" }),
    )
    .await;
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "privileged",
        "privileged correspondence is never read by staff",
    ))
}

/// The message, if the caller is staff of its facility and it is not privileged.
async fn staff_message(s: &AppState, caller: &Caller, id: &str) -> Result<Message, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    let m = s.store.message(id).await?;
    caller.investigate(&m.facility_id)?;
    refuse_privileged(s, caller, &m).await?;
    Ok(m)
}

fn scope_of(caller: &Caller) -> Option<Vec<String>> {
    match &caller.0.facilities {
        Facilities::All => None,
        Facilities::Only(list) => Some(list.clone()),
    }
}

fn ids(list: &[Message]) -> Vec<&str> {
    list.iter().map(|m| m.id.as_str()).collect()
}

/// `GET /messages?facility_id=&inmate_id=&contact_id=&q=&status=&flagged=&from=&to=&limit=&offset=`:
/// one page, newest first, as `GET /calls` pages (`{items, total, limit, offset}`).
pub(crate) async fn search(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<MessageFilter>,
) -> Result<Json<MessagePage>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    super::check_search_filters(
        &[
            ("facility_id", &f.facility_id),
            ("inmate_id", &f.inmate_id),
            ("contact_id", &f.contact_id),
        ],
        f.q.as_ref(),
    )?;
    if let Some(fid) = &f.facility_id {
        caller.investigate(fid)?;
    }
    let page = s
        .store
        .search_messages(&f, scope_of(&caller).as_deref())
        .await?;
    let detail = json!({ "filter": {
            "facility_id": f.facility_id, "inmate_id": f.inmate_id,
            "contact_id": f.contact_id, "q": f.q, "status": f.status, "flagged": f.flagged,
            "from": f.from, "to": f.to },
        "total": page.total, "limit": page.limit, "offset": page.offset,
        "messages": ids(&page.items) });
    s.audit_detail(
        &caller,
        "message.search",
        "",
        f.facility_id.as_deref(),
        detail,
    )
    .await;
    Ok(Json(page))
}

/// `GET /messages/review?facility_id=`: held messages, oldest first.
pub(crate) async fn queue(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<Vec<Message>>, ApiError> {
    caller.require(&[Role::Admin, Role::Investigator])?;
    if let Some(fid) = &q.facility_id {
        crate::text::SETTING
            .check("facility_id", fid)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        caller.investigate(fid)?;
    }
    let list = s
        .store
        .review_queue(q.facility_id.as_deref(), scope_of(&caller).as_deref())
        .await?;
    s.audit_detail(
        &caller,
        "message.queue",
        "",
        q.facility_id.as_deref(),
        json!({ "messages": ids(&list) }),
    )
    .await;
    Ok(Json(list))
}

/// `GET /messages/{id}`.
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let m = staff_message(&s, &caller, &id).await?;
    s.audit_detail(
        &caller,
        "message.read",
        &m.id,
        Some(&m.facility_id),
        json!({ "message_id": m.id, "inmate_id": m.inmate_id, "contact_id": m.contact_id }),
    )
    .await;
    Ok(Json(m))
}

/// `POST /messages/{id}/approve`: a held message is delivered.
pub(crate) async fn approve(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let m = staff_message(&s, &caller, &id).await?;
    let m = s
        .store
        .decide_message(&m.id, MessageStatus::Delivered, None, caller.subject())
        .await?;
    s.audit_detail(
        &caller,
        "message.approve",
        &m.id,
        Some(&m.facility_id),
        json!({ "message_id": m.id, "flagged": m.flagged }),
    )
    .await;
    notify(&s, &m).await;
    Ok(Json(m))
}

/// `POST /messages/{id}/reject {reason}`: a held message is refused; its sender sees the
/// reason, and its price is credited back.
pub(crate) async fn reject(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Rejection>,
) -> Result<Json<Message>, ApiError> {
    let reason = crate::text::NOTE
        .accept_required("reason", &body.reason)
        .map_err(|e| invalid(e.to_string()))?;
    let m = staff_message(&s, &caller, &id).await?;
    let m = s
        .store
        .decide_message(
            &m.id,
            MessageStatus::Rejected,
            Some(reason),
            caller.subject(),
        )
        .await?;
    if let (true, Some(account)) = (m.price.is_positive(), &m.account_id) {
        credit_back(&s, &m.id, account, m.price, "rejected").await?;
    }
    s.audit_detail(
        &caller,
        "message.reject",
        &m.id,
        Some(&m.facility_id),
        json!({ "message_id": m.id, "reason": reason, "refunded": m.price }),
    )
    .await;
    Ok(Json(m))
}

// Settings and watch words ------------------------------------------------------------------

/// `GET /facilities/{id}/messaging`.
pub(crate) async fn settings(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<messaging::Settings>, ApiError> {
    caller.investigate(&fid)?;
    Ok(Json(s.store.message_settings(&fid).await?))
}

/// `PUT /facilities/{id}/messaging`.
pub(crate) async fn set_settings(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<messaging::Settings>,
) -> Result<Json<messaging::Settings>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let kept = s
        .store
        .set_message_settings(&fid, &body, caller.subject())
        .await?;
    let detail = serde_json::to_value(&kept).unwrap_or_default();
    s.audit_detail(&caller, "messaging.settings", &fid, Some(&fid), detail)
        .await;
    Ok(Json(kept))
}

/// `GET /facilities/{id}/watch-words`.
pub(crate) async fn words(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
) -> Result<Json<Vec<crate::store::WatchWord>>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    s.store.facility(&fid).await?;
    let list = s.store.watch_words(&fid).await?;
    s.audit_detail(
        &caller,
        "watch_words.list",
        &fid,
        Some(&fid),
        json!({ "count": list.len() }),
    )
    .await;
    Ok(Json(list))
}

/// `POST /facilities/{id}/watch-words {word}`.
pub(crate) async fn add_word(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiJson(body): ApiJson<NewWord>,
) -> Result<(StatusCode, Json<crate::store::WatchWord>), ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let w = s
        .store
        .add_watch_word(&fid, &body.word, caller.subject())
        .await?;
    s.audit_detail(
        &caller,
        "watch_word.add",
        &w.id,
        Some(&fid),
        json!({ "word": w.word }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(w)))
}

/// `DELETE /facilities/{id}/watch-words/{word_id}`.
pub(crate) async fn remove_word(
    State(s): State<AppState>,
    caller: Caller,
    Path((fid, wid)): Path<(String, String)>,
) -> Result<Json<crate::store::WatchWord>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let w = s.store.remove_watch_word(&fid, &wid).await?;
    s.audit_detail(
        &caller,
        "watch_word.remove",
        &w.id,
        Some(&fid),
        json!({ "word": w.word }),
    )
    .await;
    Ok(Json(w))
}

/// `DELETE /facilities/{id}/watch-words?word=`: the same, by the word itself.
pub(crate) async fn remove_word_by_text(
    State(s): State<AppState>,
    caller: Caller,
    Path(fid): Path<String>,
    ApiQuery(q): ApiQuery<WordQuery>,
) -> Result<Json<crate::store::WatchWord>, ApiError> {
    caller.allow(&[Role::Admin], &fid)?;
    let raw = q
        .word
        .ok_or_else(|| ApiError::bad_request("name the word: ?word= or /watch-words/{id}"))?;
    let word = messaging::normalize_word(&raw).map_err(|e| invalid(format!("word: {e}")))?;
    let found = s
        .store
        .watch_words(&fid)
        .await?
        .into_iter()
        .find(|w| w.word == word)
        .ok_or_else(|| ApiError::not_found(format!("'{word}' is not on the watch list")))?;
    remove_word(State(s), caller, Path((fid, found.id))).await
}
