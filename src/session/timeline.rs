//! A call's timeline for the investigator: what happened and when, from what the gateway
//! recorded as it happened — never reconstructed or guessed.
//!
//! Most moments are in the records already: the session row (INVITE, trunk answer,
//! acceptance, the cut with its reason and who terminated the call, the end), the ledger
//! (each increment's debit with the balance after it) and the recording (its start, the
//! recording's time 0). The rest has no column of its own and is written as it happens into
//! `call_events` (append-only, [`add_call_event`]): each ID + PIN entry's outcome (never the
//! digits), the destination checks' verdict, the announcement to the called party, and the
//! warnings played to the inmate. [`call_timeline`] merges them (a pure function) into one
//! list in time order, the way the console's session page draws it on one axis.

use crate::db::{from_micros, to_micros, Db};
use crate::ledger::SessionCharge;
use crate::money::Money;
use crate::store::{Cdr, Recording};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

/// What a `call_events` row says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEventKind {
    /// An ID + PIN entry was decided (detail: `valid`, `wrong`, `locked`, `account_locked`).
    Pin,
    /// The destination checks decided (detail: `authorized`, or the end reason).
    Checks,
    /// The announcement to the called party started (detail: `recorded`, `privileged`).
    Announcement,
    /// A warning played to the inmate (detail: `funds_low`, `max_duration`).
    Warning,
}

impl CallEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallEventKind::Pin => "pin",
            CallEventKind::Checks => "checks",
            CallEventKind::Announcement => "announcement",
            CallEventKind::Warning => "warning",
        }
    }
}

/// One `call_events` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}

/// A timeline event noted by a call and not yet written: when, what, the detail.
pub type PendingEvent = (DateTime<Utc>, CallEventKind, &'static str);

/// Appends events, in order, to a live call's record, in one transaction (one commit for
/// the lot). A no-op once the session has ended (a late report changes no closed record).
pub async fn add_call_events(
    db: &Db,
    session_id: &str,
    events: &[PendingEvent],
) -> Result<(), sqlx::Error> {
    // The call path's connection (SQLite's local one, in this thread: no hop to a pool
    // thread), with the write turn.
    let mut conn = db.begin().await?;
    for &(at, kind, detail) in events {
        sqlx::query(
            "INSERT INTO call_events (session_id, seq, at, kind, detail) \
             SELECT s.id, COALESCE((SELECT MAX(seq) FROM call_events WHERE session_id = $1), 0) + 1, \
             $2, $3, $4 FROM sessions s WHERE s.id = $1 AND s.state = 'active'",
        )
        .bind(session_id)
        .bind(to_micros(at))
        .bind(kind.as_str())
        .bind(detail)
        .execute(&mut conn)
        .await?;
    }
    conn.commit().await
}

/// Appends one event to a live call's record ([`add_call_events`]).
pub async fn add_call_event(
    db: &Db,
    session_id: &str,
    at: DateTime<Utc>,
    kind: CallEventKind,
    detail: &'static str,
) -> Result<(), sqlx::Error> {
    add_call_events(db, session_id, &[(at, kind, detail)]).await
}

/// A call's events, in the order they were written.
pub async fn call_events(db: &Db, session_id: &str) -> Result<Vec<CallEvent>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT at, kind, detail FROM call_events WHERE session_id = $1 ORDER BY seq")
            .bind(session_id)
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|r| {
            Ok(CallEvent {
                at: from_micros(r.try_get("at")?),
                kind: r.try_get("kind")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}

/// One moment of a call's timeline.
///
/// `kind` is one of `invite`, `pin`, `checks`, `trunk_answer`, `announcement`,
/// `accepted`, `recording_started`, `increment`, `warning`, `cut`, `ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    /// What the event says beyond its kind: a PIN entry's outcome, the checks' verdict,
    /// the announcement played, the warning's reason, the cut's end reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// An increment's number (1-based), what it cost and the balance after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub increment: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<Money>,
    /// Who ended the call: `inmate` (handset hang-up), `called_party`, the user who
    /// terminated it, or `gateway` (funds, duration, media, a release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl TimelineEvent {
    fn at(at: DateTime<Utc>, kind: &'static str) -> TimelineEvent {
        TimelineEvent {
            at,
            kind,
            detail: None,
            increment: None,
            amount: None,
            balance_after: None,
            by: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> TimelineEvent {
        self.detail = Some(detail.into());
        self
    }
}

/// The order of kinds that share a moment: the call's own sequence.
fn rank(kind: &str) -> u8 {
    match kind {
        "invite" => 0,
        "pin" => 1,
        "checks" => 2,
        "trunk_answer" => 3,
        "announcement" => 4,
        "accepted" => 5,
        "recording_started" => 6,
        "increment" => 7,
        "warning" => 8,
        "cut" => 9,
        _ => 10,
    }
}

/// Who ended a call, from its end reason (and who terminated it).
fn ended_by(cdr: &Cdr, reason: &str) -> &'static str {
    match reason {
        "caller_hangup" => "inmate",
        "callee_hangup" | "declined" => "called_party",
        "terminated" if cdr.terminated_by.is_some() => "staff",
        _ => "gateway",
    }
}

/// The call's timeline in time order (ties in the call's own sequence): from the CDR's
/// times, the recorded `events`, the ledger's `charges` and the recording's start.
pub fn call_timeline(
    cdr: &Cdr,
    events: &[CallEvent],
    charges: &[SessionCharge],
    recording: Option<&Recording>,
) -> Vec<TimelineEvent> {
    let mut out = vec![TimelineEvent::at(cdr.invite_at, "invite").detail(cdr.dialed.clone())];
    for e in events {
        let kind = match e.kind.as_str() {
            "pin" => "pin",
            "checks" => "checks",
            "announcement" => "announcement",
            "warning" => "warning",
            _ => continue,
        };
        out.push(TimelineEvent::at(e.at, kind).detail(e.detail.clone()));
    }
    if let Some(at) = cdr.answer_at {
        out.push(TimelineEvent::at(at, "trunk_answer"));
    }
    if let Some(at) = cdr.accepted_at {
        out.push(TimelineEvent::at(at, "accepted"));
    }
    if let Some(r) = recording {
        out.push(TimelineEvent::at(r.started_at, "recording_started"));
    }
    for c in charges {
        let mut e = TimelineEvent::at(c.at, "increment");
        e.increment = Some(c.increment);
        e.amount = Some(c.amount);
        e.balance_after = Some(c.balance_after);
        out.push(e);
    }
    let reason = cdr.end_reason.clone();
    // The cut: when the parties stopped hearing each other (a bridged call), or the end of
    // a call refused or given up before.
    let cut_at = cdr.media_end_at.or(match cdr.accepted_at {
        None => cdr.end_at,
        Some(_) => None,
    });
    if let (Some(at), Some(reason)) = (cut_at, reason.as_deref()) {
        let mut e = TimelineEvent::at(at, "cut").detail(reason);
        e.by = Some(match (reason, cdr.terminated_by.as_deref()) {
            ("terminated", Some(user)) => user.to_string(),
            _ => ended_by(cdr, reason).to_string(),
        });
        out.push(e);
    }
    if let Some(at) = cdr.end_at {
        out.push(TimelineEvent::at(at, "ended"));
    }
    out.sort_by_key(|a| (a.at, rank(a.kind), a.increment));
    out
}
