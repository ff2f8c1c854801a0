//! Messages between inmates and contacts, their photos, each facility's messaging
//! settings and its watch words ([`crate::messaging`] has the rules).
//!
//! A message's status changes only from `held` (`UPDATE ... WHERE status = 'held'`), so of
//! two staff deciding at once one decision stands. Privileged messages are never held,
//! never in a review queue and never in a search: every staff read filters them out in
//! the query itself.

use super::{conflict_on_unique, flag, new_id, Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::messaging::{self, Direction, MessageStatus, ReviewPolicy, Settings};
use crate::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A word or phrase of a facility's watch list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WatchWord {
    pub id: String,
    pub facility_id: String,
    pub word: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// A photo of a message (or uploaded, not yet sent: `message_id` none).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessagePhoto {
    pub id: String,
    #[serde(skip)]
    pub facility_id: String,
    #[serde(skip)]
    pub uploaded_by: String,
    #[serde(skip)]
    pub message_id: Option<String>,
    #[serde(skip)]
    pub sha256: String,
    pub content_type: String,
    pub bytes: i64,
    pub width: i64,
    pub height: i64,
}

/// One message, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub id: String,
    pub facility_id: String,
    pub inmate_id: String,
    pub inmate_name: String,
    pub contact_id: String,
    pub contact_name: String,
    pub direction: Direction,
    /// The inmate's id (from the inmate) or the family user's (to the inmate).
    #[serde(skip)]
    pub sender: String,
    pub body: String,
    pub privileged: bool,
    pub status: MessageStatus,
    /// The watch words it holds (none for privileged messages: never scanned).
    pub flagged: Vec<String>,
    /// Why staff rejected it.
    pub reason: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub price: Money,
    #[serde(skip)]
    pub account_id: Option<String>,
    /// When its recipient first saw it.
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub photos: Vec<MessagePhoto>,
    /// The facility's time zone (IANA name): staff see the message's times in it.
    pub time_zone: Option<String>,
}

/// A message to insert (its checks done by the caller).
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub facility_id: &'a str,
    pub inmate_id: &'a str,
    pub contact_id: &'a str,
    pub direction: Direction,
    pub sender: &'a str,
    pub body: &'a str,
    pub privileged: bool,
    pub status: MessageStatus,
    pub flagged: &'a [String],
    pub price: Money,
    pub account_id: Option<&'a str>,
    /// Uploaded photos of `sender` to attach.
    pub photos: &'a [String],
}

/// A staff search of messages (never privileged ones).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageFilter {
    pub facility_id: Option<String>,
    pub inmate_id: Option<String>,
    pub contact_id: Option<String>,
    /// Words of the text (case-insensitive, anywhere).
    pub q: Option<String>,
    pub status: Option<MessageStatus>,
    /// Only messages holding a watch word.
    #[serde(default)]
    pub flagged: Option<bool>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Page size: default [`DEFAULT_MESSAGES`], at most [`MAX_MESSAGES`] (as `GET /calls`).
    pub limit: Option<i64>,
    /// Matches to skip (newest first) before the page.
    pub offset: Option<i64>,
}

impl MessageFilter {
    /// The page size and offset asked for, within bounds.
    pub fn page(&self) -> (i64, i64) {
        (
            self.limit
                .unwrap_or(DEFAULT_MESSAGES)
                .clamp(1, MAX_MESSAGES),
            self.offset.unwrap_or(0).max(0),
        )
    }
}

/// The most messages one list (or one page of a search) returns.
pub const MAX_MESSAGES: i64 = 500;
/// A search's page size when none is asked for.
pub const DEFAULT_MESSAGES: i64 = 50;

/// One page of a message search, newest first, with the number of matches in all pages.
#[derive(Debug, Clone, Serialize)]
pub struct MessagePage {
    pub items: Vec<Message>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

const SELECT: &str = "SELECT m.id, m.facility_id, m.inmate_id, m.contact_id, m.direction, \
     m.sender, m.body, m.privileged, m.status, m.flagged, m.reason, m.reviewed_by, \
     m.reviewed_at, m.price_minor, m.account_id, m.read_at, m.created_at, \
     i.first_name, i.last_name, c.name AS contact_name, \
     (SELECT f.time_zone FROM facilities f WHERE f.id = m.facility_id) AS time_zone \
     FROM messages m JOIN inmates i ON i.id = m.inmate_id JOIN contacts c ON c.id = m.contact_id";

const PHOTO_COLUMNS: &str =
    "id, facility_id, uploaded_by, message_id, sha256, content_type, bytes, width, height";

fn corrupt(what: &'static str, value: &str) -> StoreError {
    StoreError::Corrupt {
        what,
        message: value.to_string(),
    }
}

fn message_from_row(r: &AnyRow) -> Result<Message, StoreError> {
    let direction: String = r.try_get("direction")?;
    let status: String = r.try_get("status")?;
    let flagged: String = r.try_get("flagged")?;
    let first: String = r.try_get("first_name")?;
    let last: String = r.try_get("last_name")?;
    Ok(Message {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        inmate_id: r.try_get("inmate_id")?,
        inmate_name: format!("{first} {last}"),
        contact_id: r.try_get("contact_id")?,
        contact_name: r.try_get("contact_name")?,
        direction: Direction::parse(&direction)
            .ok_or_else(|| corrupt("message direction", &direction))?,
        sender: r.try_get("sender")?,
        body: r.try_get("body")?,
        privileged: flag(r.try_get("privileged")?),
        status: MessageStatus::parse(&status).ok_or_else(|| corrupt("message status", &status))?,
        flagged: flagged
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        reason: r.try_get("reason")?,
        reviewed_by: r.try_get("reviewed_by")?,
        reviewed_at: r.try_get::<Option<i64>, _>("reviewed_at")?.map(from_micros),
        price: Money::from_minor(r.try_get("price_minor")?),
        account_id: r.try_get("account_id")?,
        read_at: r.try_get::<Option<i64>, _>("read_at")?.map(from_micros),
        created_at: from_micros(r.try_get("created_at")?),
        photos: Vec::new(),
        time_zone: r.try_get("time_zone")?,
    })
}

fn photo_from_row(r: &AnyRow) -> Result<MessagePhoto, StoreError> {
    Ok(MessagePhoto {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        uploaded_by: r.try_get("uploaded_by")?,
        message_id: r.try_get("message_id")?,
        sha256: r.try_get("sha256")?,
        content_type: r.try_get("content_type")?,
        bytes: r.try_get("bytes")?,
        width: r.try_get("width")?,
        height: r.try_get("height")?,
    })
}

fn word_from_row(r: &AnyRow) -> Result<WatchWord, StoreError> {
    Ok(WatchWord {
        id: r.try_get("id")?,
        facility_id: r.try_get("facility_id")?,
        word: r.try_get("word")?,
        created_at: from_micros(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
    })
}

/// `s` for a `LIKE ... ESCAPE '\'` pattern matching it anywhere.
fn like_anywhere(s: &str) -> String {
    let mut out = String::from("%");
    for c in s.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    /// A facility's messaging settings (the defaults when it never set any).
    pub async fn message_settings(&self, facility_id: &str) -> Result<Settings, StoreError> {
        self.facility(facility_id).await?;
        let row = sqlx::query(
            "SELECT review, max_chars, price_minor, max_photo_bytes, max_photos, retention_days \
             FROM message_settings WHERE facility_id = $1",
        )
        .bind(facility_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(r) = row else {
            return Ok(Settings::default());
        };
        let review: String = r.try_get("review")?;
        let num = |v: i64, what: &'static str| {
            u32::try_from(v).map_err(|_| corrupt(what, &v.to_string()))
        };
        Ok(Settings {
            review: ReviewPolicy::parse(&review)
                .ok_or_else(|| corrupt("review policy", &review))?,
            max_chars: num(r.try_get("max_chars")?, "max_chars")?,
            price: Money::from_minor(r.try_get("price_minor")?),
            max_photo_bytes: u64::try_from(r.try_get::<i64, _>("max_photo_bytes")?)
                .unwrap_or_default(),
            max_photos: num(r.try_get("max_photos")?, "max_photos")?,
            retention_days: num(r.try_get("retention_days")?, "retention_days")?,
        })
    }

    /// Replaces a facility's messaging settings (checked).
    pub async fn set_message_settings(
        &self,
        facility_id: &str,
        s: &Settings,
        by: &str,
    ) -> Result<Settings, StoreError> {
        s.check()
            .map_err(|(field, message)| StoreError::invalid(field, message))?;
        self.facility(facility_id).await?;
        sqlx::query(
            "INSERT INTO message_settings (facility_id, review, max_chars, price_minor, \
             max_photo_bytes, max_photos, retention_days, updated_at, updated_by) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (facility_id) DO UPDATE SET \
             review = excluded.review, max_chars = excluded.max_chars, \
             price_minor = excluded.price_minor, max_photo_bytes = excluded.max_photo_bytes, \
             max_photos = excluded.max_photos, retention_days = excluded.retention_days, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(facility_id)
        .bind(s.review.as_str())
        .bind(i64::from(s.max_chars))
        .bind(s.price.to_minor())
        .bind(i64::try_from(s.max_photo_bytes).unwrap_or(i64::MAX))
        .bind(i64::from(s.max_photos))
        .bind(i64::from(s.retention_days))
        .bind(self.now_us())
        .bind(by)
        .execute(self.db.pool())
        .await?;
        self.message_settings(facility_id).await
    }

    /// A facility's watch words, alphabetically.
    pub async fn watch_words(&self, facility_id: &str) -> Result<Vec<WatchWord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, facility_id, word, created_at, created_by FROM watch_words \
             WHERE facility_id = $1 ORDER BY word",
        )
        .bind(facility_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(word_from_row).collect()
    }

    /// Adds a word or phrase (normalized, [`messaging::normalize_word`]); 409 when the
    /// facility has it already.
    pub async fn add_watch_word(
        &self,
        facility_id: &str,
        raw: &str,
        by: &str,
    ) -> Result<WatchWord, StoreError> {
        let word = messaging::normalize_word(raw)
            .map_err(|e| StoreError::invalid("word", e.to_string()))?;
        self.facility(facility_id).await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM watch_words WHERE facility_id = $1")
            .bind(facility_id)
            .fetch_one(self.db.pool())
            .await?
            .try_get(0)?;
        if n >= messaging::MAX_WATCH_WORDS as i64 {
            return Err(StoreError::invalid(
                "word",
                format!(
                    "a facility has at most {} watch words",
                    messaging::MAX_WATCH_WORDS
                ),
            ));
        }
        let id = new_id("wwd");
        sqlx::query(
            "INSERT INTO watch_words (id, facility_id, word, created_at, created_by) \
             VALUES ($1,$2,$3,$4,$5)",
        )
        .bind(&id)
        .bind(facility_id)
        .bind(&word)
        .bind(self.now_us())
        .bind(by)
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, format!("'{word}' is already on the watch list")))?;
        Ok(WatchWord {
            id,
            facility_id: facility_id.to_string(),
            word,
            created_at: from_micros(self.now_us()),
            created_by: by.to_string(),
        })
    }

    /// Removes a word of `facility_id`'s list; returns it.
    pub async fn remove_watch_word(
        &self,
        facility_id: &str,
        id: &str,
    ) -> Result<WatchWord, StoreError> {
        let row = sqlx::query(
            "SELECT id, facility_id, word, created_at, created_by FROM watch_words \
             WHERE id = $1 AND facility_id = $2",
        )
        .bind(id)
        .bind(facility_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("watch word", id))?;
        let word = word_from_row(&row)?;
        sqlx::query("DELETE FROM watch_words WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(word)
    }

    /// Keeps an uploaded photo's row (its file is already written).
    pub async fn add_message_photo(
        &self,
        facility_id: &str,
        uploaded_by: &str,
        photo: &messaging::photo::CleanPhoto,
    ) -> Result<MessagePhoto, StoreError> {
        let id = new_id("pho");
        sqlx::query(&format!(
            "INSERT INTO message_photos ({PHOTO_COLUMNS}, created_at) \
             VALUES ($1,$2,$3,NULL,$4,$5,$6,$7,$8,$9)"
        ))
        .bind(&id)
        .bind(facility_id)
        .bind(uploaded_by)
        .bind(&photo.sha256)
        .bind(photo.kind.content_type())
        .bind(photo.data.len() as i64)
        .bind(i64::from(photo.width))
        .bind(i64::from(photo.height))
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        self.message_photo(&id).await
    }

    pub async fn message_photo(&self, id: &str) -> Result<MessagePhoto, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PHOTO_COLUMNS} FROM message_photos WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("photo", id))?;
        photo_from_row(&row)
    }

    /// Inserts a message and attaches its photos, in one transaction. A message whose id
    /// exists already (a retried request) is a 409 `Conflict` the caller resolves.
    pub async fn insert_message(&self, m: &NewMessage<'_>) -> Result<Message, StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO messages (id, facility_id, inmate_id, contact_id, direction, sender, \
             body, privileged, status, flagged, price_minor, account_id, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
        )
        .bind(m.id)
        .bind(m.facility_id)
        .bind(m.inmate_id)
        .bind(m.contact_id)
        .bind(m.direction.as_str())
        .bind(m.sender)
        .bind(m.body)
        .bind(i64::from(m.privileged))
        .bind(m.status.as_str())
        .bind(m.flagged.join("\n"))
        .bind(m.price.to_minor())
        .bind(m.account_id)
        .bind(self.now_us())
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, "this message was sent already"))?;
        for p in m.photos {
            let done = sqlx::query(
                "UPDATE message_photos SET message_id = $1 \
                 WHERE id = $2 AND uploaded_by = $3 AND facility_id = $4 AND message_id IS NULL",
            )
            .bind(m.id)
            .bind(p)
            .bind(m.sender)
            .bind(m.facility_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::invalid(
                    "photos",
                    format!(
                        "photo {} is not one you uploaded for this facility, or was sent already",
                        crate::text::quote(p)
                    ),
                ));
            }
        }
        tx.commit().await?;
        self.message(m.id).await
    }

    /// One message with its photos.
    pub async fn message(&self, id: &str) -> Result<Message, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE m.id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("message", id))?;
        let mut m = message_from_row(&row)?;
        m.photos = self.photos_of(&m.id).await?;
        Ok(m)
    }

    async fn photos_of(&self, message_id: &str) -> Result<Vec<MessagePhoto>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PHOTO_COLUMNS} FROM message_photos WHERE message_id = $1 ORDER BY created_at, id"
        ))
        .bind(message_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(photo_from_row).collect()
    }

    /// The messages of `rows` with their photos, read in a few statements (at most 100
    /// messages' photos each), not one per message.
    async fn with_photos(&self, rows: Vec<AnyRow>) -> Result<Vec<Message>, StoreError> {
        let mut out = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<Message>, StoreError>>()?;
        for chunk in (0..out.len()).collect::<Vec<_>>().chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {PHOTO_COLUMNS} FROM message_photos WHERE message_id IN ({}) \
                 ORDER BY created_at, id",
                marks.join(",")
            );
            let mut q = sqlx::query(&sql);
            for &i in chunk {
                q = q.bind(out[i].id.clone());
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let p = photo_from_row(&r)?;
                if let Some(m) = chunk
                    .iter()
                    .copied()
                    .find(|&i| p.message_id.as_deref() == Some(out[i].id.as_str()))
                {
                    out[m].photos.push(p);
                }
            }
        }
        Ok(out)
    }

    /// What an inmate sees at a kiosk: what they sent (any status, with the reason of a
    /// rejection) and what was delivered to them; newest last.
    pub async fn inmate_messages(&self, inmate_id: &str) -> Result<Vec<Message>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE m.inmate_id = $1 AND (m.direction = 'from_inmate' OR m.status = 'delivered') \
             ORDER BY m.created_at DESC, m.id DESC LIMIT {MAX_MESSAGES}"
        ))
        .bind(inmate_id)
        .fetch_all(self.db.pool())
        .await?;
        let mut list = self.with_photos(rows).await?;
        list.reverse();
        Ok(list)
    }

    /// What a family user bound to `contact_ids` sees: what was written to the inmate
    /// for those contacts (any status) and what the inmate's delivered messages say to
    /// them; newest last.
    pub async fn contact_messages(
        &self,
        contact_ids: &[String],
    ) -> Result<Vec<Message>, StoreError> {
        let mut all = Vec::new();
        for c in contact_ids {
            let rows = sqlx::query(&format!(
                "{SELECT} WHERE m.contact_id = $1 AND (m.direction = 'to_inmate' OR m.status = 'delivered') \
                 ORDER BY m.created_at DESC, m.id DESC LIMIT {MAX_MESSAGES}"
            ))
            .bind(c)
            .fetch_all(self.db.pool())
            .await?;
            all.extend(self.with_photos(rows).await?);
        }
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// Marks the delivered messages of `direction` among `ids` read now (the first time).
    pub async fn mark_messages_read(
        &self,
        ids: &[String],
        direction: Direction,
    ) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query(
                "UPDATE messages SET read_at = $1 WHERE id = $2 AND direction = $3 \
                 AND status = 'delivered' AND read_at IS NULL",
            )
            .bind(self.now_us())
            .bind(id)
            .bind(direction.as_str())
            .execute(self.db.pool())
            .await?;
        }
        Ok(())
    }

    /// Messages waiting for review in `facilities` (`None`: every facility), oldest first.
    /// Never a privileged one.
    pub async fn review_queue(
        &self,
        facility_id: Option<&str>,
        facilities: Option<&[String]>,
    ) -> Result<Vec<Message>, StoreError> {
        let f = MessageFilter {
            facility_id: facility_id.map(str::to_string),
            status: Some(MessageStatus::Held),
            limit: Some(MAX_MESSAGES),
            ..MessageFilter::default()
        };
        let mut list = self.search_messages(&f, facilities).await?.items;
        list.reverse();
        Ok(list)
    }

    /// A staff search: one page ([`MessageFilter::page`]), newest first, with the number
    /// of matches; privileged messages are never found.
    pub async fn search_messages(
        &self,
        f: &MessageFilter,
        facilities: Option<&[String]>,
    ) -> Result<MessagePage, StoreError> {
        let (limit, offset) = f.page();
        let mut page = MessagePage {
            items: Vec::new(),
            total: 0,
            limit,
            offset,
        };
        let mut sql = String::from(" WHERE m.privileged = 0");
        let mut binds: Vec<String> = Vec::new();
        let mut bind = |sql: &mut String, clause: &str, v: String| {
            binds.push(v);
            sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
        };
        if let Some(v) = &f.facility_id {
            bind(&mut sql, " AND m.facility_id = $?", v.clone());
        }
        if let Some(v) = &f.inmate_id {
            bind(&mut sql, " AND m.inmate_id = $?", v.clone());
        }
        if let Some(v) = &f.contact_id {
            bind(&mut sql, " AND m.contact_id = $?", v.clone());
        }
        if let Some(v) = &f.status {
            bind(&mut sql, " AND m.status = $?", v.as_str().to_string());
        }
        if let Some(q) = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            bind(
                &mut sql,
                " AND LOWER(m.body) LIKE $? ESCAPE '\\'",
                like_anywhere(q),
            );
        }
        match f.flagged {
            Some(true) => sql.push_str(" AND m.flagged <> ''"),
            Some(false) => sql.push_str(" AND m.flagged = ''"),
            None => {}
        }
        if let Some(list) = facilities {
            if list.is_empty() {
                return Ok(page);
            }
            sql.push_str(" AND m.facility_id IN (");
            for (i, fid) in list.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                bind(&mut sql, "$?", fid.clone());
            }
            sql.push(')');
        }
        let n = binds.len();
        if f.from.is_some() {
            sql.push_str(&format!(" AND m.created_at >= ${}", n + 1));
        }
        if f.to.is_some() {
            let k = n + 1 + usize::from(f.from.is_some());
            sql.push_str(&format!(" AND m.created_at < ${k}"));
        }
        let list_sql = format!(
            "{SELECT}{sql} ORDER BY m.created_at DESC, m.id DESC LIMIT {limit} OFFSET {offset}"
        );
        let count_sql = format!("SELECT COUNT(*) AS n FROM messages m{sql}");
        let mut q = sqlx::query(&list_sql);
        let mut c = sqlx::query(&count_sql);
        for b in &binds {
            q = q.bind(b);
            c = c.bind(b);
        }
        for t in [f.from, f.to].into_iter().flatten() {
            q = q.bind(to_micros(t));
            c = c.bind(to_micros(t));
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        page.total = c.fetch_one(self.db.pool()).await?.try_get("n")?;
        page.items = self.with_photos(rows).await?;
        Ok(page)
    }

    /// A staff decision on a held message: delivered, or rejected with `reason`. 409 when
    /// it is no longer held (decided by someone else, or never held).
    pub async fn decide_message(
        &self,
        id: &str,
        status: MessageStatus,
        reason: Option<&str>,
        staff: &str,
    ) -> Result<Message, StoreError> {
        if status == MessageStatus::Held {
            return Err(StoreError::invalid(
                "status",
                "a decision delivers or rejects",
            ));
        }
        let done = sqlx::query(
            "UPDATE messages SET status = $2, reason = $3, reviewed_by = $4, reviewed_at = $5 \
             WHERE id = $1 AND status = 'held' AND privileged = 0",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(reason)
        .bind(staff)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            let m = self.message(id).await?;
            return Err(StoreError::Conflict(format!(
                "message {} is {}, not waiting for review",
                m.id,
                m.status.as_str()
            )));
        }
        self.message(id).await
    }

    /// The family users to tell of a message delivered to `contact_id`: open accounts
    /// with a verified address bound to the contact (their addresses).
    pub async fn message_recipients(&self, contact_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT f.email FROM family_contacts fc JOIN family_accounts f ON f.user_id = fc.user_id \
             WHERE fc.contact_id = $1 AND f.closed_at IS NULL AND f.email_verified_at IS NOT NULL \
             ORDER BY f.email",
        )
        .bind(contact_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("email").map_err(Into::into))
            .collect()
    }

    /// Removes the messages sent before their facility's retention (`now` minus its
    /// `retention_days`) and their photos' rows, and photos uploaded but never sent for a
    /// day; returns the ids of the messages removed and the SHA-256 of every photo file no
    /// row names any more (for the caller to delete).
    pub async fn purge_messages(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let facilities = sqlx::query("SELECT id FROM facilities ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        let mut purged = Vec::new();
        let mut shas: Vec<String> = Vec::new();
        for f in &facilities {
            let fid: String = f.try_get("id")?;
            let days = self.message_settings(&fid).await?.retention_days;
            let cutoff = to_micros(now - chrono::Duration::days(i64::from(days)));
            let ids = sqlx::query(
                "SELECT id FROM messages WHERE facility_id = $1 AND created_at < $2 ORDER BY id",
            )
            .bind(&fid)
            .bind(cutoff)
            .fetch_all(self.db.pool())
            .await?;
            for r in &ids {
                let id: String = r.try_get("id")?;
                let mut tx = self.db.begin_write().await?;
                let photos = sqlx::query("SELECT sha256 FROM message_photos WHERE message_id = $1")
                    .bind(&id)
                    .fetch_all(&mut *tx)
                    .await?;
                for p in &photos {
                    shas.push(p.try_get("sha256")?);
                }
                sqlx::query("DELETE FROM message_photos WHERE message_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM messages WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                purged.push(id);
            }
        }
        let stale = to_micros(now - chrono::Duration::days(1));
        let unsent = sqlx::query(
            "SELECT sha256 FROM message_photos WHERE message_id IS NULL AND created_at < $1",
        )
        .bind(stale)
        .fetch_all(self.db.pool())
        .await?;
        for p in &unsent {
            shas.push(p.try_get("sha256")?);
        }
        sqlx::query("DELETE FROM message_photos WHERE message_id IS NULL AND created_at < $1")
            .bind(stale)
            .execute(self.db.pool())
            .await?;
        shas.sort();
        shas.dedup();
        let mut orphans = Vec::new();
        for sha in shas {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM message_photos WHERE sha256 = $1")
                .bind(&sha)
                .fetch_one(self.db.pool())
                .await?
                .try_get(0)?;
            if n == 0 {
                orphans.push(sha);
            }
        }
        Ok((purged, orphans))
    }
}
