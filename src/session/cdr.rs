//! Sessions (CDRs) at the database: what survives a crash. This module is the one writer
//! of the `sessions` table (the recording's mark included: [`mark_recorded`]).
//!
//! The call flow (and later video visits) writes a session row when a call starts, the
//! tariff applied when it is authorized ([`claim_and_authorize`]), its progress as it
//! goes ([`progress`], [`count_increment`]), the end reason and media end the moment a
//! bridged call is cut ([`record_media_end`]), and closes it with a reason when it ends
//! ([`close`]). A node that dies mid-call leaves rows `active`; on its next start
//! [`close_orphans`] ends them with reason `system` — or, for a call that was already
//! being cut (its notice playing), with the reason and media end recorded at the cut
//! (see "A cut before a crash" below). Their charges stand exactly as
//! committed: each increment was debited atomically and idempotently by the ledger, and
//! the CDR's billed increments and amount are recomputed from the ledger so they cannot
//! disagree with the money.
//!
//! A video visit is a row of kind `visit` (service `video`) linked to its booking
//! ([`open_visit`]; one live row per visit across nodes, by a unique index), with a
//! timeline of who joined, dropped out, came back and left, and when billing paused and
//! resumed ([`add_event`], [`events`]; `session_events`, append-only), and the time it was
//! paused written at the close ([`CallEnd::paused`]). Its `accepted_at` is the moment
//! billing started (both sides' media flowing) and `media_end_at` the moment they stopped
//! seeing each other.
//!
//! # The times of a CDR
//!
//! Each names one moment, so that the charge can be explained from the record alone:
//!
//! | column | API field | meaning |
//! |---|---|---|
//! | `invite_at` | `invite_at` | the handset's INVITE arrived |
//! | `answer_at` | `answer_at` | the trunk answered (200 OK) |
//! | `accepted_at` | `accepted_at` | the called party pressed 1: bridging, recording and billing start |
//! | — | `billed_until` | `accepted_at + billed_increments × increment_secs`: the end of the last billed increment, what the charge paid for (derived; after a hang-up mid-increment it lies after `media_end_at`, a started increment being charged in full) |
//! | `media_end_at` | `media_end_at` | the parties stopped hearing each other: a cut (its notice starts), a BYE, a terminate |
//! | `end_at` | `end_at` | the call ended: BYEs sent or received, a closing notice included |
//! | `closed_at` | `closed_at` | the record was written ended (normally a moment after `end_at`) |
//!
//! After a crash nobody saw the end. [`close_orphans`] then writes as `end_at` (and, for
//! an accepted call, `media_end_at`) the last moment the call is *known* to have been up
//! — the latest of its last committed debit, the start of its last counted increment and
//! the end of its recording as repaired at restart — and the restart time only as
//! `closed_at`. So a call killed 2 increments in and closed 7 minutes later reads: 2
//! increments, `billed_until` 2 increments after acceptance, `end_at` at the crash (within
//! the recorder's last flush), `closed_at` at the restart. (Run the recording recovery
//! first, as `server::run` does, so the repaired recording's end is known.)
//!
//! # A cut before a crash
//!
//! A bridged call that is cut (funds exhausted, maximum duration, media timeout, a BYE,
//! a terminate, a release) has its end reason and `media_end_at` written on the still
//! `active` row at once ([`record_media_end`]), before its notice plays. A node killed
//! during that notice leaves the row saying how and when the parties were cut, and
//! [`close_orphans`] keeps both: reason `funds_exhausted` (not `system`), `media_end_at`
//! at the cut, `end_at` the later of the cut and the last moment known alive (the notice
//! plays into the recording), `closed_at` the restart. Only a call that was not being cut
//! when its node died ends `system`. While the notice plays, live views show the row
//! `active` with its end reason already set: the call is ending.

//!
//! # The row before the answer
//!
//! A call's row is written (`open_call`) before the handset's INVITE is answered, not
//! as the runner's first job after it. Answering first would take one insert off
//! INVITE→200, but a node that died between its 200 and the insert would leave an
//! answered call — one the handset's user heard answered, whose ID and PIN may already
//! have been keyed on another attempt — with no CDR after the restart: nothing for
//! [`close_orphans`] to close, and a gap in the record of who used which phone when.
//! Every answered call has a CDR, so the insert stays first. What it costs is kept
//! small instead: on SQLite it waits only for the writes queued before it in this
//! process (`Db::write_turn`), never in SQLite's busy handler.

use crate::db::{from_micros, to_micros, Db};
use crate::money::Money;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Ends every session this node left `active`; returns how many it closed. Each gets
/// reason `system`, its charges from the ledger, `end_at` (and `media_end_at` when it was
/// accepted) at the last moment it is known to have been up, and `closed_at` = `now`.
pub async fn close_orphans(db: &Db, node_id: &str, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let closed = close_left_open(db, node_id, None, now).await?;
    Ok(closed.len() as u64)
}

/// A session closed because its node died ([`close_dead_node_sessions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedOrphan {
    pub id: String,
    pub facility_id: String,
    /// `system`, or the reason of a cut recorded before the node died.
    pub reason: String,
    /// Increments billed and their amount (minor units), as the ledger committed them.
    pub increments: i64,
    pub amount_minor: i64,
}

/// [`close_orphans`] for another node, dead: the sessions node `node_id` left `active`,
/// closed by a surviving node, each only while that node's heartbeat is still older than
/// `silent_before` (checked by the closing statement itself, so a node that came back
/// meanwhile keeps its calls). Returns the sessions this call closed: a session another
/// survivor, or the node's own restart, closed first is not among them, so each session
/// is closed, and reported, once.
pub async fn close_dead_node_sessions(
    db: &Db,
    node_id: &str,
    silent_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<ClosedOrphan>, sqlx::Error> {
    close_left_open(db, node_id, Some(silent_before), now).await
}

/// The closing of [`close_orphans`] and [`close_dead_node_sessions`]: with
/// `silent_before`, only while the node's heartbeat is older than that.
async fn close_left_open(
    db: &Db,
    node_id: &str,
    silent_before: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Vec<ClosedOrphan>, sqlx::Error> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM sessions WHERE state = 'active' AND node_id = $1")
            .bind(node_id)
            .fetch_all(db.pool())
            .await?;
    let mut closed = Vec::new();
    for id in ids {
        let _turn = db.write_turn().await;
        let mut tx = match db.backend() {
            crate::db::Backend::Sqlite => db.pool().begin_with("BEGIN IMMEDIATE").await?,
            crate::db::Backend::Postgres => db.pool().begin().await?,
        };
        if let Some(c) = close_one(&mut tx, &id, silent_before, now).await? {
            tx.commit().await?;
            tracing::warn!(session = %id, node = node_id, reason = %c.reason,
                increments = c.increments, "orphaned session closed");
            closed.push(c);
        }
    }
    Ok(closed)
}

/// Closes session `id` if it is still open (and, with `silent_before`, its node still
/// silent), in the caller's transaction. The row is locked first: a debit in flight on
/// the session holds the same lock (`ledger::spending`) until it commits, so the charges
/// counted next include it, and a debit after the close is refused.
async fn close_one(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    silent_before: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<ClosedOrphan>, sqlx::Error> {
    // Open, and (for a dead node) its node still silent: the one condition that makes
    // two closers, or a closer and the node's restart, close a session once.
    let mut lock =
        String::from("UPDATE sessions SET state = state WHERE id = $1 AND state = 'active'");
    if silent_before.is_some() {
        lock.push_str(
            " AND EXISTS (SELECT 1 FROM nodes n WHERE n.id = sessions.node_id \
             AND n.heartbeat_at < $2)",
        );
    }
    let mut q = sqlx::query(&lock).bind(id);
    if let Some(cutoff) = silent_before {
        q = q.bind(to_micros(cutoff));
    }
    if q.execute(&mut *conn).await?.rows_affected() == 0 {
        return Ok(None);
    }
    let r = sqlx::query(
        "SELECT facility_id, invite_at, answer_at, accepted_at, increment_secs, \
         billed_increments, end_reason, media_end_at FROM sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let c = charged_in(&mut *conn, id).await?;
    let counted = c.increments.max(r.try_get("billed_increments")?);
    let recording_end: Option<i64> =
        sqlx::query("SELECT MAX(ended_at) AS ended_at FROM recordings WHERE session_id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
            .try_get("ended_at")?;
    let alive = KnownAlive {
        invite_at: r.try_get("invite_at")?,
        answer_at: r.try_get("answer_at")?,
        accepted_at: r.try_get("accepted_at")?,
        increment_secs: r.try_get("increment_secs")?,
        increments: counted,
        last_debit_at: c.last_debit_at,
        recording_end,
    };
    let cut = Cut {
        reason: r.try_get("end_reason")?,
        media_end_at: r.try_get("media_end_at")?,
    };
    let end = orphan_end(&alive, &cut);
    sqlx::query(
        "UPDATE sessions SET state = 'ended', end_reason = $2, end_at = $3, \
         media_end_at = $4, closed_at = $5, billed_increments = $6, amount_minor = $7 \
         WHERE id = $1 AND state = 'active'",
    )
    .bind(id)
    .bind(&end.reason)
    .bind(end.end_at)
    .bind(end.media_end_at)
    .bind(to_micros(now))
    .bind(counted)
    .bind(c.amount_minor)
    .execute(&mut *conn)
    .await?;
    tracing::debug!(session = %id, last_alive = %from_micros(end.end_at), "closing");
    Ok(Some(ClosedOrphan {
        id: id.to_owned(),
        facility_id: r.try_get("facility_id")?,
        reason: end.reason,
        increments: counted,
        amount_minor: c.amount_minor,
    }))
}

/// What a live session's row says of a cut already under way ([`record_media_end`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cut {
    reason: Option<String>,
    /// Microseconds since the epoch.
    media_end_at: Option<i64>,
}

/// How [`close_orphans`] ends a session (microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrphanEnd {
    reason: String,
    end_at: i64,
    media_end_at: Option<i64>,
}

/// The end of a session its node left open: with the reason and media end of a cut
/// recorded before the crash, if there was one (module doc), else `system` at the last
/// moment it is known to have been up.
fn orphan_end(alive: &KnownAlive, cut: &Cut) -> OrphanEnd {
    let last = alive.last();
    let media_end_at = cut.media_end_at.or(alive.accepted_at.map(|_| last));
    OrphanEnd {
        reason: cut.reason.clone().unwrap_or_else(|| "system".to_owned()),
        end_at: media_end_at.map_or(last, |m| m.max(last)),
        media_end_at,
    }
}

/// What a session left open by a crash shows of its life (microseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KnownAlive {
    invite_at: i64,
    answer_at: Option<i64>,
    accepted_at: Option<i64>,
    increment_secs: Option<i64>,
    /// Increments billed (paid, or counted on a free plan).
    increments: i64,
    last_debit_at: Option<i64>,
    /// The end of its recording (as repaired at restart: the recorder's last flush).
    recording_end: Option<i64>,
}

impl KnownAlive {
    /// The last moment the call is known to have been up. The start of the last billed
    /// increment counts (it began while the call was up), its end does not (the call may
    /// have died during it).
    fn last(&self) -> i64 {
        let last_increment_start = match (self.accepted_at, self.increment_secs) {
            (Some(a), Some(secs)) if self.increments > 0 => {
                let offset = (self.increments - 1).saturating_mul(secs.saturating_mul(1_000_000));
                Some(a.saturating_add(offset))
            }
            _ => None,
        };
        [
            Some(self.invite_at),
            self.answer_at,
            self.accepted_at,
            last_increment_start,
            self.last_debit_at,
            self.recording_end,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(self.invite_at)
    }
}

/// A session row as the call flow opens it (at the handset INVITE, before the PIN).
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub facility_id: &'a str,
    pub handset_id: Option<&'a str>,
    pub dialed: &'a str,
    pub node_id: &'a str,
    pub sip_call_id: Option<&'a str>,
}

/// Opens an `active` call session.
pub async fn open_call(db: &Db, s: &NewSession<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let mut dbc = db.write().await?;
    insert_call(&mut dbc, s, now).await?;
    dbc.commit().await
}

async fn insert_call(
    conn: &mut crate::db::Conn,
    s: &NewSession<'_>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, kind, facility_id, handset_id, dialed, state, node_id, sip_call_id, invite_at) \
         VALUES ($1, 'call', $2, $3, $4, 'active', $5, $6, $7)",
    )
    .bind(s.id)
    .bind(s.facility_id)
    .bind(s.handset_id)
    .bind(s.dialed)
    .bind(s.node_id)
    .bind(s.sip_call_id)
    .bind(to_micros(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// A handset's INVITE as RFC 3261 8.2.2.2 tells one request from another: a proxy that
/// fails an INVITE over to a second node sends the same three, and a handset's
/// authenticated retry has a higher CSeq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteKey<'a> {
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub cseq: u32,
}

/// What [`open_handset_call`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The session is open: this node took the INVITE.
    Opened,
    /// A node took this INVITE before (its session, which may already have ended): no
    /// session was opened here.
    TakenBy { node_id: String, session_id: String },
}

/// Opens the `active` call session of a handset's INVITE, unless a node (this one or
/// another of the cluster) already opened one for the same INVITE: the row in
/// `handset_invites` and the session are written in one transaction, and the table's
/// primary key lets exactly one node take an INVITE, whatever the timing.
pub async fn open_handset_call(
    db: &Db,
    s: &NewSession<'_>,
    invite: &InviteKey<'_>,
    now: DateTime<Utc>,
) -> Result<Opened, sqlx::Error> {
    let mut conn = db.begin().await?;
    let taken = sqlx::query(
        "INSERT INTO handset_invites (call_id, from_tag, cseq, session_id, node_id, at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(invite.call_id)
    .bind(invite.from_tag)
    .bind(i64::from(invite.cseq))
    .bind(s.id)
    .bind(s.node_id)
    .bind(to_micros(now))
    .execute(&mut conn)
    .await?
    .rows_affected()
        == 1;
    if !taken {
        let row = sqlx::query(
            "SELECT node_id, session_id FROM handset_invites \
             WHERE call_id = $1 AND from_tag = $2 AND cseq = $3",
        )
        .bind(invite.call_id)
        .bind(invite.from_tag)
        .bind(i64::from(invite.cseq))
        .fetch_one(&mut conn)
        .await?;
        return Ok(Opened::TakenBy {
            node_id: row.try_get("node_id")?,
            session_id: row.try_get("session_id")?,
        });
    }
    insert_call(&mut conn, s, now).await?;
    conn.commit().await?;
    Ok(Opened::Opened)
}

/// Forgets the INVITEs taken before `before` (a failover comes within seconds; a day is
/// kept). Returns how many.
pub async fn forget_invites_before(db: &Db, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut dbc = db.write_conn().await?;
    let done = sqlx::query("DELETE FROM handset_invites WHERE at < $1")
        .bind(to_micros(before))
        .execute(&mut dbc)
        .await?;
    Ok(done.rows_affected())
}

/// A video visit's session row as its driver opens it (when the slot opens).
#[derive(Debug, Clone)]
pub struct NewVisitSession<'a> {
    pub id: &'a str,
    pub visit_id: &'a str,
    pub facility_id: &'a str,
    pub inmate_id: &'a str,
    pub contact_id: &'a str,
    /// The account that pays (the inmate's debit account today; a family's prepaid
    /// account with the family portal).
    pub account_id: &'a str,
    pub privileged: bool,
    pub node_id: &'a str,
}

/// Opens an `active` session of kind `visit` (service `video`). Returns `false` when the
/// visit already has a live session, on this node or another: the unique index
/// `sessions_one_live_visit` decides, atomically, so two nodes never run one visit.
pub async fn open_visit(
    db: &Db,
    s: &NewVisitSession<'_>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let _turn = db.write_turn().await;
    let r = sqlx::query(
        "INSERT INTO sessions (id, kind, facility_id, inmate_id, contact_id, account_id, service,          privileged, state, node_id, invite_at, visit_id)          VALUES ($1, 'visit', $2, $3, $4, $5, 'video', $6, 'active', $7, $8, $9)",
    )
    .bind(s.id)
    .bind(s.facility_id)
    .bind(s.inmate_id)
    .bind(s.contact_id)
    .bind(s.account_id)
    .bind(i64::from(s.privileged))
    .bind(s.node_id)
    .bind(to_micros(now))
    .bind(s.visit_id)
    .execute(db.pool())
    .await;
    match r {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(e) if crate::db::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What happened in a visit, for its timeline (`session_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEventKind {
    /// A side's page connected its signalling.
    Joined,
    /// A side's media reached the gateway.
    Media,
    /// A side dropped out (it may come back).
    Dropped,
    /// A side ended the visit.
    Left,
    /// Billing paused (a side is gone).
    Paused,
    /// Billing resumed (both are back).
    Resumed,
}

impl SessionEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEventKind::Joined => "joined",
            SessionEventKind::Media => "media",
            SessionEventKind::Dropped => "dropped",
            SessionEventKind::Left => "left",
            SessionEventKind::Paused => "paused",
            SessionEventKind::Resumed => "resumed",
        }
    }
}

/// One entry of a session's timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionEvent {
    pub at: DateTime<Utc>,
    pub kind: String,
    /// `visitor`, `inmate`, or empty when the event names no side.
    pub side: String,
}

/// Appends an event to a live session's timeline; `side` is `"visitor"`, `"inmate"` or
/// `""`. A no-op once the session has ended (a late report changes no closed record).
pub async fn add_event(
    db: &Db,
    session_id: &str,
    at: DateTime<Utc>,
    kind: SessionEventKind,
    side: &str,
) -> Result<(), sqlx::Error> {
    let _turn = db.write_turn().await;
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, at, kind, side)          SELECT s.id, COALESCE((SELECT MAX(seq) FROM session_events WHERE session_id = $1), 0) + 1,          $2, $3, $4 FROM sessions s WHERE s.id = $1 AND s.state = 'active'",
    )
    .bind(session_id)
    .bind(to_micros(at))
    .bind(kind.as_str())
    .bind(side)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A session's timeline, oldest first.
pub async fn events(db: &Db, session_id: &str) -> Result<Vec<SessionEvent>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT at, kind, side FROM session_events WHERE session_id = $1 ORDER BY seq")
            .bind(session_id)
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|r| {
            Ok(SessionEvent {
                at: from_micros(r.try_get("at")?),
                kind: r.try_get("kind")?,
                side: r.try_get("side")?,
            })
        })
        .collect()
}

/// Attaches the identified inmate (and the account that pays) to a live session. Returns
/// `false` when the inmate already has a live call anywhere in the cluster: the unique
/// index `sessions_one_live_call` decides, atomically, across nodes.
pub async fn claim_inmate(
    db: &Db,
    session_id: &str,
    inmate_id: &str,
    account_id: &str,
) -> Result<bool, sqlx::Error> {
    let mut dbc = db.write().await?;
    let r = sqlx::query(
        "UPDATE sessions SET inmate_id = $2, account_id = $3 WHERE id = $1 AND state = 'active'",
    )
    .bind(session_id)
    .bind(inmate_id)
    .bind(account_id)
    .execute(&mut dbc)
    .await;
    let claimed = claimed(r)?;
    dbc.commit().await?;
    Ok(claimed)
}

/// Whether a claim's UPDATE took the session: `false` when the unique index
/// `sessions_one_live_call` refused it (the inmate is live elsewhere) or the session ended.
fn claimed(r: Result<sqlx::any::AnyQueryResult, sqlx::Error>) -> Result<bool, sqlx::Error> {
    match r {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(e) if crate::db::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Calls the inmate was connected on (accepted) since `since`.
pub async fn accepted_calls_since(
    db: &Db,
    inmate_id: &str,
    since: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let mut dbc = db.conn().await?;
    sqlx::query(
        "SELECT COUNT(*) FROM sessions WHERE inmate_id = $1 AND kind = 'call' AND accepted_at IS NOT NULL AND accepted_at >= $2",
    )
    .bind(inmate_id)
    .bind(to_micros(since))
    .fetch_one(&mut dbc)
    .await?
    .try_get(0)
}

/// What a live session has reached so far, written as it happens so that live-call views
/// (`GET /api/v1/calls/active`, monitoring) see it before the call ends. Fields left
/// `None` keep their stored value.
#[derive(Debug, Clone, Default)]
pub struct Progress<'a> {
    pub number_e164: Option<&'a str>,
    pub privileged: Option<bool>,
    pub answer_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
}

/// Records a live session's progress (see [`Progress`]); a no-op once it has ended.
pub async fn progress(db: &Db, id: &str, p: &Progress<'_>) -> Result<(), sqlx::Error> {
    let mut dbc = db.write().await?;
    sqlx::query(
        "UPDATE sessions SET number_e164 = COALESCE($2, number_e164), \
         privileged = COALESCE($3, privileged), answer_at = COALESCE($4, answer_at), \
         accepted_at = COALESCE($5, accepted_at) WHERE id = $1 AND state = 'active'",
    )
    .bind(id)
    .bind(p.number_e164)
    .bind(p.privileged.map(i64::from))
    .bind(p.answer_at.map(to_micros))
    .bind(p.accepted_at.map(to_micros))
    .execute(&mut dbc)
    .await?;
    dbc.commit().await
}

/// The tariff applied to a call and what it was authorized for, written at authorization
/// (`call::checks::check_destination`): what a CDR needs to explain its charge.
#[derive(Debug, Clone)]
pub struct Authorized<'a> {
    /// The approved contact the number belongs to.
    pub contact_id: &'a str,
    pub number_e164: &'a str,
    pub privileged: bool,
    /// The rate plan in force (immutable: a new version has a new id).
    pub rate_plan_id: &'a str,
    /// The rate deck that classified the number, and the prefix that matched.
    pub rate_deck_id: &'a str,
    pub rate_prefix: &'a str,
    /// `local`, `domestic` or `international`.
    pub class: &'a str,
    /// `audio` or `video`.
    pub service: &'a str,
    pub per_minute: Money,
    pub increment_secs: u32,
    /// The charge of one increment (the per-minute rate for the increment, rounded once).
    pub cost_per_increment: Money,
}

/// The inmate a live session is claimed for, and the account that pays.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub inmate_id: &'a str,
    pub account_id: &'a str,
}

/// [`claim_inmate`] and the tariff applied in one statement: the call set-up's one
/// write between the PIN and the trunk. `false` (nothing written) when the inmate already
/// has a live call anywhere in the cluster (the unique index `sessions_one_live_call`
/// decides, atomically) or the session has ended.
pub async fn claim_and_authorize(
    db: &Db,
    id: &str,
    c: &Claim<'_>,
    a: &Authorized<'_>,
) -> Result<bool, sqlx::Error> {
    let mut dbc = db.write().await?;
    let r = sqlx::query(
        "UPDATE sessions SET inmate_id = $13, account_id = $14, contact_id = $2, \
         number_e164 = $3, privileged = $4, rate_plan_id = $5, rate_deck_id = $6, \
         rate_prefix = $7, class = $8, service = $9, per_minute_minor = $10, \
         increment_secs = $11, increment_cost_minor = $12 \
         WHERE id = $1 AND state = 'active'",
    )
    .bind(id)
    .bind(a.contact_id)
    .bind(a.number_e164)
    .bind(i64::from(a.privileged))
    .bind(a.rate_plan_id)
    .bind(a.rate_deck_id)
    .bind(a.rate_prefix)
    .bind(a.class)
    .bind(a.service)
    .bind(a.per_minute.to_minor())
    .bind(i64::from(a.increment_secs))
    .bind(a.cost_per_increment.to_minor())
    .bind(c.inmate_id)
    .bind(c.account_id)
    .execute(&mut dbc)
    .await;
    let claimed = claimed(r)?;
    dbc.commit().await?;
    Ok(claimed)
}

/// Records on a live session that its parties were cut apart at `media_end_at` for
/// `reason` (the CDR's `end_reason`), before the call's closing notice plays: what
/// [`close_orphans`] keeps if the node dies before the call's end (module doc, "A cut
/// before a crash"). The first cut stands; a no-op once the session has ended.
pub async fn record_media_end(
    db: &Db,
    id: &str,
    reason: &str,
    media_end_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut dbc = db.write().await?;
    sqlx::query(
        "UPDATE sessions SET end_reason = $2, media_end_at = $3 \
         WHERE id = $1 AND state = 'active' AND end_reason IS NULL",
    )
    .bind(id)
    .bind(reason)
    .bind(to_micros(media_end_at))
    .execute(&mut dbc)
    .await?;
    dbc.commit().await
}

/// Marks a live session recorded by `recording_id`, inside the transaction that registers
/// the recording (`Store::start_recording`), so a row and its session never disagree; with
/// the acceptance (`accepted_at`, unless already set) when the recording starts with it.
/// A session already marked keeps the recording it names (a visit has two recordings, one
/// per participant: the session names the first; `Store::session_recordings` lists both).
pub async fn mark_recorded(
    conn: &mut crate::db::Conn,
    session_id: &str,
    recording_id: &str,
    accepted_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET recorded = 1, recording_id = COALESCE(recording_id, $1), \
         accepted_at = COALESCE(accepted_at, $3) WHERE id = $2",
    )
    .bind(recording_id)
    .bind(session_id)
    .bind(accepted_at.map(to_micros))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that free increment `increment` (a plan that costs nothing: the ledger gets
/// nothing) began on a live session, so its CDR counts it, across a crash too. Returns
/// whether the account paying the call is still open: `false` once the inmate was
/// released (the call must end `released`).
pub async fn count_increment(db: &Db, id: &str, increment: u32) -> Result<bool, sqlx::Error> {
    let mut dbc = db.write().await?;
    sqlx::query(
        "UPDATE sessions SET billed_increments = $2 \
         WHERE id = $1 AND state = 'active' AND billed_increments < $2",
    )
    .bind(id)
    .bind(i64::from(increment))
    .execute(&mut dbc)
    .await?;
    let status: Option<String> = sqlx::query(
        "SELECT a.status FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE s.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut dbc)
    .await?
    .map(|r| r.try_get("status"))
    .transpose()?;
    dbc.commit().await?;
    Ok(status.as_deref() != Some("closed"))
}

/// How a session ended, in wall-clock terms, for its CDR (see the module doc's times).
#[derive(Debug, Clone)]
pub struct SessionEnd<'a> {
    pub reason: &'a str,
    pub inmate_id: Option<&'a str>,
    pub number_e164: Option<&'a str>,
    pub privileged: bool,
    pub recorded: bool,
    pub answer_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub end_at: DateTime<Utc>,
}

/// What the call itself knows of its end beyond [`SessionEnd`] (see [`close_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallEnd {
    /// When the parties stopped hearing each other; `None` if never bridged.
    pub media_end_at: Option<DateTime<Utc>>,
    /// Increments the call counted itself. The ledger's count wins; this one matters only
    /// where the ledger has none because no money moved (free plans).
    pub counted_increments: u32,
    /// When the record is written ended; `None`: at `end_at`.
    pub closed_at: Option<DateTime<Utc>>,
    /// Billing was paused this long (a visit's side dropped out); `None` keeps the stored
    /// value (0 for calls).
    pub paused: Option<std::time::Duration>,
}

/// Closes a live session with its reason. Billed increments and amount are counted from
/// the ledger (the source of truth), never from the caller's own tally — except on a free
/// plan, where no money moved and the ledger holds nothing: there the increments counted
/// (by the call, and as recorded with [`count_increment`]) stand, with amount 0. The
/// larger count is taken; on a paid plan the call can never count more than the ledger
/// committed (it counts confirmed debits).
pub async fn close(db: &Db, id: &str, e: &SessionEnd<'_>) -> Result<bool, sqlx::Error> {
    close_with(db, id, e, &CallEnd::default()).await
}

/// [`close`] with what the call knows of its end: its media end, the increments it
/// counted (free plans), when the record is closed.
pub async fn close_with(
    db: &Db,
    id: &str,
    e: &SessionEnd<'_>,
    call: &CallEnd,
) -> Result<bool, sqlx::Error> {
    let mut dbc = db.write().await?;
    // The ledger's count and amount are read by the statement itself (one round trip):
    // the charges of every debit committed before it.
    let (n, amount) = (
        format!("SELECT COUNT(*) {CHARGED_FROM}"),
        format!("SELECT CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) {CHARGED_FROM}"),
    );
    let done = sqlx::query(&format!(
        "UPDATE sessions SET state = 'ended', end_reason = $2, inmate_id = COALESCE(inmate_id, $3), \
         number_e164 = COALESCE($4, number_e164), privileged = $5, recorded = $6, answer_at = $7, \
         accepted_at = $8, end_at = $9, \
         billed_increments = CASE \
           WHEN billed_increments >= $10 AND billed_increments >= ({n}) THEN billed_increments \
           WHEN $10 >= ({n}) THEN $10 ELSE ({n}) END, \
         amount_minor = ({amount}), media_end_at = $11, closed_at = $12, \
         paused_ms = COALESCE($13, paused_ms) \
         WHERE id = $1 AND state = 'active'"
    ))
    .bind(id)
    .bind(e.reason)
    .bind(e.inmate_id)
    .bind(e.number_e164)
    .bind(i64::from(e.privileged))
    .bind(i64::from(e.recorded))
    .bind(e.answer_at.map(to_micros))
    .bind(e.accepted_at.map(to_micros))
    .bind(to_micros(e.end_at))
    .bind(i64::from(call.counted_increments))
    .bind(call.media_end_at.map(to_micros))
    .bind(to_micros(call.closed_at.unwrap_or(e.end_at)))
    .bind(
        call.paused
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
    .execute(&mut dbc)
    .await?;
    dbc.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// The revenue-side entries of the session's (`$1`) transactions: one per increment
/// debited ([`charged_in`]).
const CHARGED_FROM: &str =
    "FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
     WHERE t.session_id = $1 AND e.amount_minor > 0 AND e.balance_after_minor IS NULL";

/// What the ledger holds of a session's charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charged {
    pub increments: i64,
    pub amount_minor: i64,
    /// When the last debit was committed (microseconds since the epoch).
    pub last_debit_at: Option<i64>,
}

/// Increments and amount (minor units) debited for a session, from the ledger: the
/// revenue-side entries of the session's transactions (read inside the closing
/// transaction).
async fn charged_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Charged, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) AS total, \
         MAX(t.created_at) AS last_at {CHARGED_FROM}"
    ))
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(Charged {
        increments: row.try_get("n")?,
        amount_minor: row.try_get("total")?,
        last_debit_at: row.try_get("last_at")?,
    })
}

/// The same for each of the live sessions `ids`, in one statement (live views).
pub(crate) async fn charged_many(
    db: &Db,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, (i64, i64)>, sqlx::Error> {
    let mut out = std::collections::HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT t.session_id AS id, COUNT(*) AS n, \
         CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) AS total \
         FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
         WHERE t.session_id IN ({}) AND e.amount_minor > 0 AND e.balance_after_minor IS NULL \
         GROUP BY t.session_id",
        marks.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(*id);
    }
    for r in q.fetch_all(db.pool()).await? {
        out.insert(r.try_get("id")?, (r.try_get("n")?, r.try_get("total")?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn alive() -> KnownAlive {
        KnownAlive {
            invite_at: 100 * S,
            answer_at: Some(110 * S),
            accepted_at: Some(120 * S),
            increment_secs: Some(60),
            increments: 0,
            last_debit_at: None,
            recording_end: None,
        }
    }

    #[test]
    fn the_last_moment_known_alive_is_the_latest_evidence() {
        assert_eq!(alive().last(), 120 * S, "accepted, nothing more known");
        let two = KnownAlive {
            increments: 2,
            ..alive()
        };
        assert_eq!(two.last(), 180 * S, "the second increment began at +60 s");
        let debited = KnownAlive {
            last_debit_at: Some(180 * S + 40_000),
            ..two
        };
        assert_eq!(
            debited.last(),
            180 * S + 40_000,
            "its debit committed 40 ms later"
        );
        let recorded = KnownAlive {
            recording_end: Some(215 * S),
            ..debited
        };
        assert_eq!(recorded.last(), 215 * S, "the recording ran to +95 s");
        let never_accepted = KnownAlive {
            accepted_at: None,
            answer_at: None,
            increments: 0,
            ..alive()
        };
        assert_eq!(never_accepted.last(), 100 * S);
        let tariff_unknown = KnownAlive {
            increment_secs: None,
            increments: 3,
            ..alive()
        };
        assert_eq!(tariff_unknown.last(), 120 * S);
    }

    /// Review, L5: a session cut before the crash (its notice playing) keeps the reason
    /// and media end of the cut; `end_at` is the later of the cut and the last sign of
    /// life (the notice went into the recording); without a cut it is `system` as before.
    #[test]
    fn a_cut_recorded_before_the_crash_decides_the_orphans_end() {
        // Two increments of 60 s billed; the fundsless third refused at +120 s; the
        // recording (the notice over the parties) ran to +121.2 s when the node died.
        let up = KnownAlive {
            increments: 2,
            last_debit_at: Some(180 * S + 40_000),
            recording_end: Some(241 * S + 200_000),
            ..alive()
        };
        let cut = Cut {
            reason: Some("funds_exhausted".into()),
            media_end_at: Some(240 * S + 30_000),
        };
        assert_eq!(
            orphan_end(&up, &cut),
            OrphanEnd {
                reason: "funds_exhausted".into(),
                end_at: 241 * S + 200_000,
                media_end_at: Some(240 * S + 30_000),
            }
        );
        // Killed in the same moment as the cut: nothing later is known than the cut.
        let early = KnownAlive {
            recording_end: Some(239 * S),
            ..up
        };
        assert_eq!(orphan_end(&early, &cut).end_at, 240 * S + 30_000);
        // No cut recorded: `system`, ended (and the media too) when last seen alive.
        assert_eq!(
            orphan_end(&up, &Cut::default()),
            OrphanEnd {
                reason: "system".into(),
                end_at: 241 * S + 200_000,
                media_end_at: Some(241 * S + 200_000),
            }
        );
        // Never bridged: no media end.
        let never = KnownAlive {
            accepted_at: None,
            answer_at: None,
            ..alive()
        };
        assert_eq!(orphan_end(&never, &Cut::default()).media_end_at, None);
    }
}
