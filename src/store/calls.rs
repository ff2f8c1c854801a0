//! CDRs: the `sessions` rows of calls (and, asked for with `kind`, of video visits),
//! searched by facility, inmate, number, dates and end reason. What each time of a CDR
//! means is in the `sessions` module doc; the fields below say why each is there.

use super::{flag, Store, StoreError};
use crate::db::{from_micros, to_micros};
use crate::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// One call's record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cdr {
    pub id: String,
    /// `call` or `visit` (a video visit's session: no handset, number or digits; its
    /// `accepted_at` is when both sides' media flowed and billing started).
    pub kind: String,
    /// The visit this session ran (`kind = visit`), else `null`.
    pub visit_id: Option<String>,
    /// Time billing stood paused while a side of a visit was away, in milliseconds (0 for
    /// a call).
    pub paused_ms: i64,
    pub facility_id: String,
    pub inmate_id: Option<String>,
    pub handset_id: Option<String>,
    /// The number called, in E.164: known once the dialed digits were normalized; `null`
    /// for a call refused before (wrong PIN, invalid number).
    pub number: Option<String>,
    /// The digits exactly as the handset dialed them (the INVITE's Request-URI), for
    /// every call, refused ones included: investigators see what was attempted. Shown
    /// only to staff of the call's facility, like the rest of the record; logs never
    /// carry it.
    pub dialed: String,
    /// The approved contact the number belongs to (authorized calls).
    pub contact_id: Option<String>,
    pub state: String,
    pub end_reason: Option<String>,
    pub privileged: bool,
    pub recorded: bool,
    pub recording_id: Option<String>,
    pub node_id: String,
    /// The handset's INVITE arrived.
    pub invite_at: DateTime<Utc>,
    /// The trunk answered.
    pub answer_at: Option<DateTime<Utc>>,
    /// The called party accepted: bridging, recording and billing start.
    pub accepted_at: Option<DateTime<Utc>>,
    /// The end of the last billed increment: `accepted_at + billed_increments ×
    /// tariff.increment_secs` (what the charge paid for). `null` when the call was never
    /// accepted or its tariff is unknown (records from before tariffs were kept).
    pub billed_until: Option<DateTime<Utc>>,
    /// The parties stopped hearing each other (a cut's notice starting, a BYE, a
    /// terminate), written at that moment, so a live call being cut shows it; after a
    /// crash with no cut under way, the last moment the call is known to have been up.
    pub media_end_at: Option<DateTime<Utc>>,
    /// The call ended, closing notice included; after a crash, the last moment the call
    /// is known to have been up (never before `media_end_at`).
    pub end_at: Option<DateTime<Utc>>,
    /// The record was written ended (after a crash: the restart that closed it).
    pub closed_at: Option<DateTime<Utc>>,
    /// Increments billed: from the ledger (live calls too, as debited so far), or on a
    /// free plan as counted.
    pub billed_increments: i64,
    /// Money debited: from the ledger, live calls as debited so far.
    pub amount: Money,
    /// The tariff applied, recorded when the call was authorized; `null` when it never
    /// was (refused before rating) or the record predates tariffs being kept.
    pub tariff: Option<AppliedTariff>,
    /// Whether an investigator may listen to it now: in progress, accepted (so bridged),
    /// not privileged, carried by a node.
    pub listenable: bool,
    /// The account that paid (or pays) for it, once the inmate was identified.
    pub account_id: Option<String>,
    /// Whose money that is: `inmate` (the inmate's debit account) or `family` (the
    /// prepaid account of the family whose number was called or who booked the visit).
    pub payer: Option<String>,
    /// The inmate's name (`First Last`), booking number and housing unit as they are
    /// now: investigators look for people, not ids. `null` before the inmate was
    /// identified (or no housing unit known).
    pub inmate_name: Option<String>,
    pub booking_number: Option<String>,
    pub housing_unit: Option<String>,
    /// The approved contact's name and relationship (`null` for a call to a number not
    /// on the inmate's list: `dialed` and `number` say what was attempted).
    pub contact_name: Option<String>,
    pub contact_relationship: Option<String>,
    /// The facility's time zone (IANA name): the console shows every time in it.
    pub time_zone: Option<String>,
    /// How long the parties talked, in seconds: from acceptance to when they stopped
    /// hearing each other (`null` while in progress or when never accepted).
    pub duration_secs: Option<i64>,
    /// The user who ended the call with a terminate (reason `terminated`).
    pub terminated_by: Option<String>,
}

/// The tariff a call was charged by: enough to reproduce its amount
/// (`billed_increments × cost_per_increment`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AppliedTariff {
    /// The rate plan in force (plans are immutable: a new version gets a new id).
    pub rate_plan_id: Option<String>,
    /// The rate deck that classified the number and the prefix that matched.
    pub rate_deck_id: Option<String>,
    pub prefix: Option<String>,
    /// `local`, `domestic` or `international`.
    pub class: String,
    /// `audio` (calls) or `video`.
    pub service: String,
    pub per_minute: Money,
    pub increment_secs: i64,
    /// One increment's charge (the per-minute rate for the increment, rounded toward zero
    /// to 1/10,000 once).
    pub cost_per_increment: Money,
}

/// Search filters; all optional, combined with AND. Empty values count as absent (a
/// search form sends every field). Old names (`facility`, `inmate`, `reason`) still work.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallFilter {
    #[serde(alias = "facility", default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facility_id: Option<String>,
    #[serde(alias = "inmate", default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inmate_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking_number: Option<String>,
    /// Words of the inmate's name: each must begin the first or the last name
    /// (case-insensitive), e.g. `jo doe` finds John Doe.
    #[serde(alias = "name", default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inmate_name: Option<String>,
    /// The number as dialed or as stored in E.164 (`+1555…`); punctuation is ignored.
    #[serde(default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(alias = "reason", default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Calls that started at or after: RFC 3339, or a date (`2026-03-02`, midnight UTC).
    #[serde(default, deserialize_with = "start_time")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Calls that started before: RFC 3339, or a date (the whole day, UTC, included).
    #[serde(default, deserialize_with = "end_time")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    #[serde(default)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub active: bool,
    /// Which sessions: `call` (the default: what this search found before visits
    /// existed), `visit` or `all`.
    #[serde(default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The order: `time` (the default: when the session started), `duration` (talk
    /// time) or `amount`.
    #[serde(default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// `desc` (the default) or `asc`.
    #[serde(default, deserialize_with = "text")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Page size, default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`].
    #[serde(default, deserialize_with = "number")]
    #[serde(skip_serializing)]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "number")]
    #[serde(skip_serializing)]
    pub offset: Option<i64>,
}

pub(super) const DEFAULT_LIMIT: i64 = 50;
pub(super) const MAX_LIMIT: i64 = 500;

/// One page of a search.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallPage {
    pub items: Vec<Cdr>,
    /// Matches in all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    text(d)?
        .map(|s| {
            s.parse()
                .map_err(|_| serde::de::Error::custom(format!("'{s}' is not an integer")))
        })
        .transpose()
}

fn time<'de, D: serde::Deserializer<'de>>(
    d: D,
    day_end: bool,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(s) = text(d)? else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    let day = chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| {
        serde::de::Error::custom(format!("'{s}' is neither RFC 3339 nor YYYY-MM-DD"))
    })?;
    let day = if day_end {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    Ok(Some(day.and_time(chrono::NaiveTime::MIN).and_utc()))
}

fn start_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    time(d, false)
}

fn end_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    time(d, true)
}

/// The values of [`CallFilter::kind`].
pub const SESSION_KINDS: [&str; 3] = ["call", "visit", "all"];

/// The values of [`CallFilter::sort`] and [`CallFilter::order`].
pub const SESSION_SORTS: [&str; 3] = ["time", "duration", "amount"];
pub const SORT_ORDERS: [&str; 2] = ["desc", "asc"];

/// Talk time in microseconds, as SQL (what `sort=duration` orders by); -1 for a session
/// never accepted or still live, so both databases put those at the same end (they sort
/// NULL differently).
const TALK_US: &str = "COALESCE(COALESCE(media_end_at, end_at) - accepted_at, -1)";

impl CallFilter {
    /// The condition on `sessions.kind` this filter asks for: calls unless it says
    /// `visit` or `all` (an unknown value is refused by the API before it gets here).
    fn kind_condition(&self) -> &'static str {
        match self.kind.as_deref() {
            Some("visit") => "kind = 'visit'",
            Some("all") => "kind IN ('call', 'visit')",
            _ => "kind = 'call'",
        }
    }

    /// The ORDER BY of a search: by time (what the time indexes serve), by talk time or
    /// by amount (sorted after the selective index found the rows; the id breaks ties,
    /// so pages never overlap). Unknown values are refused by the API before this.
    fn order_by(&self) -> String {
        let dir = match self.order.as_deref() {
            Some("asc") => "ASC",
            _ => "DESC",
        };
        match self.sort.as_deref() {
            Some("duration") => format!("{TALK_US} {dir}, invite_at {dir}, id {dir}"),
            Some("amount") => format!("amount_minor {dir}, invite_at {dir}, id {dir}"),
            _ => format!("invite_at {dir}, id {dir}"),
        }
    }

    /// The page size and offset this filter asks for, within bounds.
    pub fn page(&self) -> (i64, i64) {
        (
            self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
            self.offset.unwrap_or(0).max(0),
        )
    }
}

/// A bound parameter of the search statement.
enum Arg {
    Text(String),
    Int(i64),
}

/// The WHERE clause of a search and its parameters (`$1`…): only the filters that are
/// set, so each planner (SQLite's, PostgreSQL's generic plans) sees plain predicates it
/// can match to an index. A catch-all `($n IS NULL OR col = $n)` form kept one statement
/// text but made both databases scan every call of the facility (see `benches/search.rs`).
///
/// SQLite plans without statistics (nothing runs ANALYZE) and then prefers the facility
/// index to the inmate or number index, reading a facility's whole history to find one
/// inmate's calls. With `sqlite` and such a filter, the facility conditions are written
/// `+facility_id`, SQLite's documented way to keep a term off an index; PostgreSQL has
/// statistics and would reject `+` on text.
fn where_clause(f: &CallFilter, facilities: Option<&[String]>, sqlite: bool) -> (String, Vec<Arg>) {
    let selective = f.inmate_id.is_some()
        || f.booking_number.is_some()
        || f.inmate_name.is_some()
        || f.number.is_some();
    let facility = if sqlite && selective {
        "+facility_id"
    } else {
        "facility_id"
    };
    let mut conds: Vec<String> = vec![f.kind_condition().into()];
    let mut args: Vec<Arg> = Vec::new();
    let bind = |args: &mut Vec<Arg>, a: Arg| {
        args.push(a);
        format!("${}", args.len())
    };
    if let Some(v) = &f.facility_id {
        let p = bind(&mut args, Arg::Text(v.clone()));
        conds.push(format!("{facility} = {p}"));
    }
    if let Some(v) = &f.inmate_id {
        let p = bind(&mut args, Arg::Text(v.clone()));
        conds.push(format!("inmate_id = {p}"));
    }
    if let Some(v) = &f.booking_number {
        let p = bind(&mut args, Arg::Text(v.clone()));
        conds.push(format!(
            "inmate_id IN (SELECT id FROM inmates WHERE booking_number = {p})"
        ));
    }
    if let Some(name) = &f.inmate_name {
        // The inmates table is small beside the sessions: its matches are found first,
        // then each one's calls through `sessions_inmate_time`.
        let mut words = Vec::new();
        for w in name.split_whitespace().take(4) {
            let p = bind(&mut args, Arg::Text(name_prefix(w)));
            words.push(format!(
                "(LOWER(first_name) LIKE {p} ESCAPE '\\' OR LOWER(last_name) LIKE {p} ESCAPE '\\')"
            ));
        }
        conds.push(format!(
            "inmate_id IN (SELECT id FROM inmates WHERE {})",
            words.join(" AND ")
        ));
    }
    if let Some(n) = &f.number {
        // As typed, as digits, or as E.164 from the digits: `(555) 123-0001`, `5551230001`
        // and `+15551230001` all find what was dialed or stored.
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        let mut forms = vec![n.clone()];
        if !digits.is_empty() {
            for form in [format!("+{digits}"), digits] {
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        let marks: Vec<String> = forms
            .into_iter()
            .map(|v| bind(&mut args, Arg::Text(v)))
            .collect();
        let list = marks.join(", ");
        conds.push(format!("(number_e164 IN ({list}) OR dialed IN ({list}))"));
    }
    if let Some(v) = &f.end_reason {
        let p = bind(&mut args, Arg::Text(v.clone()));
        conds.push(format!("end_reason = {p}"));
    }
    if let Some(t) = f.from {
        let p = bind(&mut args, Arg::Int(to_micros(t)));
        conds.push(format!("invite_at >= {p}"));
    }
    if let Some(t) = f.to {
        let p = bind(&mut args, Arg::Int(to_micros(t)));
        conds.push(format!("invite_at < {p}"));
    }
    if f.active {
        conds.push("state = 'active'".into());
    }
    if let Some(list) = facilities {
        let marks: Vec<String> = list
            .iter()
            .map(|v| bind(&mut args, Arg::Text(v.clone())))
            .collect();
        conds.push(format!("{facility} IN ({})", marks.join(", ")));
    }
    (conds.join(" AND "), args)
}

/// A `LIKE` pattern matching names that begin with `word` (case-insensitive, wildcards
/// in `word` escaped with `\`).
fn name_prefix(word: &str) -> String {
    let mut p = String::new();
    for c in word.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v.as_str()),
            Arg::Int(v) => q.bind(*v),
        };
    }
    q
}

/// A session's record as [`from_row`] reads it (from `sessions`, unaliased).
pub(super) const COLUMNS: &str = "id, kind, visit_id, paused_ms, facility_id, inmate_id, handset_id, number_e164, dialed, contact_id, \
    state, end_reason, privileged, recorded, recording_id, node_id, invite_at, answer_at, \
    accepted_at, media_end_at, end_at, closed_at, billed_increments, amount_minor, \
    rate_plan_id, rate_deck_id, rate_prefix, class, service, per_minute_minor, increment_secs, \
    increment_cost_minor, account_id, terminated_by, \
    (SELECT a.kind FROM accounts a WHERE a.id = sessions.account_id) AS payer_kind, \
    (SELECT i.first_name || ' ' || i.last_name FROM inmates i WHERE i.id = sessions.inmate_id) AS inmate_name, \
    (SELECT i.booking_number FROM inmates i WHERE i.id = sessions.inmate_id) AS booking_number, \
    (SELECT i.housing_unit FROM inmates i WHERE i.id = sessions.inmate_id) AS housing_unit, \
    (SELECT c.name FROM contacts c WHERE c.id = sessions.contact_id) AS contact_name, \
    (SELECT c.relationship FROM contacts c WHERE c.id = sessions.contact_id) AS contact_relationship, \
    (SELECT f.time_zone FROM facilities f WHERE f.id = sessions.facility_id) AS time_zone";

fn tariff(r: &AnyRow) -> Result<Option<AppliedTariff>, sqlx::Error> {
    let class: Option<String> = r.try_get("class")?;
    let per_minute: Option<i64> = r.try_get("per_minute_minor")?;
    let increment_secs: Option<i64> = r.try_get("increment_secs")?;
    let cost: Option<i64> = r.try_get("increment_cost_minor")?;
    let (Some(class), Some(per_minute), Some(increment_secs), Some(cost)) =
        (class, per_minute, increment_secs, cost)
    else {
        return Ok(None);
    };
    Ok(Some(AppliedTariff {
        rate_plan_id: r.try_get("rate_plan_id")?,
        rate_deck_id: r.try_get("rate_deck_id")?,
        prefix: r.try_get("rate_prefix")?,
        class,
        service: r.try_get("service")?,
        per_minute: Money::from_minor(per_minute),
        increment_secs,
        cost_per_increment: Money::from_minor(cost),
    }))
}

pub(super) fn from_row(r: &AnyRow) -> Result<Cdr, sqlx::Error> {
    let t = |c: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(from_micros))
    };
    let mut cdr = Cdr {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        visit_id: r.try_get("visit_id")?,
        paused_ms: r.try_get("paused_ms")?,
        facility_id: r.try_get("facility_id")?,
        inmate_id: r.try_get("inmate_id")?,
        handset_id: r.try_get("handset_id")?,
        number: r.try_get("number_e164")?,
        dialed: r.try_get("dialed")?,
        contact_id: r.try_get("contact_id")?,
        state: r.try_get("state")?,
        end_reason: r.try_get("end_reason")?,
        privileged: flag(r.try_get("privileged")?),
        recorded: flag(r.try_get("recorded")?),
        recording_id: r.try_get("recording_id")?,
        node_id: r.try_get("node_id")?,
        invite_at: from_micros(r.try_get("invite_at")?),
        answer_at: t("answer_at")?,
        accepted_at: t("accepted_at")?,
        billed_until: None,
        media_end_at: t("media_end_at")?,
        end_at: t("end_at")?,
        closed_at: t("closed_at")?,
        billed_increments: r.try_get("billed_increments")?,
        amount: Money::from_minor(r.try_get("amount_minor")?),
        tariff: tariff(r)?,
        listenable: false,
        account_id: r.try_get("account_id")?,
        payer: r.try_get("payer_kind")?,
        inmate_name: r.try_get("inmate_name")?,
        booking_number: r.try_get("booking_number")?,
        housing_unit: r.try_get("housing_unit")?,
        contact_name: r.try_get("contact_name")?,
        contact_relationship: r.try_get("contact_relationship")?,
        time_zone: r.try_get("time_zone")?,
        duration_secs: None,
        terminated_by: r.try_get("terminated_by")?,
    };
    cdr.duration_secs = match (cdr.accepted_at, cdr.media_end_at.or(cdr.end_at)) {
        (Some(a), Some(e)) if cdr.state != "active" => Some((e - a).num_seconds().max(0)),
        _ => None,
    };
    cdr.listenable = cdr.state == "active"
        && cdr.accepted_at.is_some()
        && !cdr.privileged
        && !cdr.node_id.is_empty();
    cdr.billed_until = billed_until(&cdr);
    Ok(cdr)
}

/// `accepted_at + billed_increments × increment_secs`, when both are known.
fn billed_until(c: &Cdr) -> Option<DateTime<Utc>> {
    let secs = c.tariff.as_ref()?.increment_secs;
    let billed = chrono::Duration::try_seconds(c.billed_increments.checked_mul(secs)?)?;
    c.accepted_at?.checked_add_signed(billed)
}

impl Store {
    /// Calls matching `f` within `facilities` (`None` = every facility), newest first.
    pub async fn calls(
        &self,
        f: &CallFilter,
        facilities: Option<&[String]>,
    ) -> Result<Vec<Cdr>, StoreError> {
        Ok(self.search_calls(f, facilities).await?.items)
    }

    /// One page of the calls matching `f` within `facilities` (`None` = every facility),
    /// newest first, with the number of matches in all pages.
    pub async fn search_calls(
        &self,
        f: &CallFilter,
        facilities: Option<&[String]>,
    ) -> Result<CallPage, StoreError> {
        let (limit, offset) = f.page();
        let empty = CallPage {
            items: Vec::new(),
            total: 0,
            limit,
            offset,
        };
        if facilities.is_some_and(|l| l.is_empty()) {
            return Ok(empty);
        }
        let sqlite = self.db.backend() == crate::db::Backend::Sqlite;
        let (cond, args) = where_clause(f, facilities, sqlite);
        let n = args.len();
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions WHERE {cond} \
             ORDER BY {} LIMIT ${} OFFSET ${}",
            f.order_by(),
            n + 1,
            n + 2
        );
        let rows = bind_all(sqlx::query(&sql), &args)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.db.pool())
            .await?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        self.with_live_charges(&mut items).await?;
        let count = format!("SELECT COUNT(*) AS n FROM sessions WHERE {cond}");
        let total: i64 = bind_all(sqlx::query(&count), &args)
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?;
        Ok(CallPage {
            items,
            total,
            ..empty
        })
    }

    /// Puts on call `id`'s record that `user` terminated it: while it is live (the
    /// terminate under way) or once it ended by that terminate, never over another's name
    /// nor on a call that ended otherwise meanwhile.
    pub async fn set_terminated_by(&self, id: &str, user: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET terminated_by = $1 WHERE id = $2 AND terminated_by IS NULL \
             AND (state = 'active' OR end_reason = 'terminated')",
        )
        .bind(user)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn call(&self, id: &str) -> Result<Cdr, StoreError> {
        self.session_of(id, "kind = 'call'", "call").await
    }

    /// A session's record whatever its kind (a call or a video visit).
    pub async fn session(&self, id: &str) -> Result<Cdr, StoreError> {
        self.session_of(id, "kind IN ('call', 'visit')", "session")
            .await
    }

    /// A visit's session timeline: who joined, dropped, came back and left, and when
    /// billing paused and resumed, in order.
    pub async fn session_events(
        &self,
        id: &str,
    ) -> Result<Vec<crate::session::cdr::SessionEvent>, StoreError> {
        Ok(crate::session::cdr::events(&self.db, id).await?)
    }

    async fn session_of(
        &self,
        id: &str,
        kind: &str,
        what: &'static str,
    ) -> Result<Cdr, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE id = $1 AND {kind}"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found(what, id))?;
        let mut cdr = [from_row(&row)?];
        self.with_live_charges(&mut cdr).await?;
        let [cdr] = cdr;
        Ok(cdr)
    }

    /// A live call's record has no billed increments or amount of its own until it is
    /// closed: fills them in from the ledger, as debited so far (on a free plan, the
    /// increments counted on the session stand).
    async fn with_live_charges(&self, cdrs: &mut [Cdr]) -> Result<(), StoreError> {
        let live: Vec<&str> = cdrs
            .iter()
            .filter(|c| c.state == "active")
            .map(|c| c.id.as_str())
            .collect();
        let charged = crate::session::cdr::charged_many(&self.db, &live).await?;
        for c in cdrs.iter_mut().filter(|c| c.state == "active") {
            if let Some(&(n, total)) = charged.get(&c.id) {
                c.billed_increments = c.billed_increments.max(n);
                c.amount = Money::from_minor(total);
                c.billed_until = billed_until(c);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDb;
    use sqlx::Row;

    /// The index SQLite's plan for a scoped search with `f` reads first.
    async fn first_index(t: &TestDb, f: &CallFilter) -> String {
        let scope = ["F1".to_string(), "F2".to_string()];
        let (cond, args) = where_clause(f, Some(&scope), true);
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE {cond} \
             ORDER BY {} LIMIT 50",
            f.order_by()
        );
        let rows = bind_all(sqlx::query(&sql), &args)
            .fetch_all(t.db.pool())
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        plan.join(" | ")
    }

    /// Without statistics (a gateway never runs ANALYZE) SQLite still reads the inmate's or
    /// the number's index, not every call of the facility, and the facility index for a
    /// date range or the scope alone.
    #[tokio::test]
    async fn sqlite_searches_read_the_selective_index() {
        let t = TestDb::sqlite().await;
        let cases = [
            (
                CallFilter {
                    inmate_id: Some("I1".into()),
                    ..CallFilter::default()
                },
                "sessions_inmate_time",
            ),
            (
                CallFilter {
                    booking_number: Some("B-1".into()),
                    facility_id: Some("F1".into()),
                    ..CallFilter::default()
                },
                "sessions_inmate_time",
            ),
            (
                CallFilter {
                    inmate_name: Some("Jo Doe".into()),
                    facility_id: Some("F1".into()),
                    ..CallFilter::default()
                },
                "sessions_inmate_time",
            ),
            (
                CallFilter {
                    inmate_name: Some("doe".into()),
                    sort: Some("duration".into()),
                    ..CallFilter::default()
                },
                "sessions_inmate_time",
            ),
            (
                CallFilter {
                    number: Some("(555) 123-0001".into()),
                    ..CallFilter::default()
                },
                "sessions_number_time",
            ),
            (
                CallFilter {
                    from: Some(Utc::now()),
                    ..CallFilter::default()
                },
                "sessions_facility_time",
            ),
            (CallFilter::default(), "sessions_facility_time"),
        ];
        for (f, index) in cases {
            let plan = first_index(&t, &f).await;
            assert!(plan.contains(index), "{f:?}: {plan}");
        }
    }

    /// Only the filters that are set are in the statement, each bound once; the number
    /// is looked for as typed, as E.164 and as digits.
    #[test]
    fn only_set_filters_are_written() {
        let (sql, args) = where_clause(&CallFilter::default(), None, false);
        assert_eq!((sql.as_str(), args.len()), ("kind = 'call'", 0));
        let f = CallFilter {
            number: Some("+1 (555) 123-0001".into()),
            end_reason: Some("busy".into()),
            ..CallFilter::default()
        };
        let (sql, args) = where_clause(&f, Some(&["F1".into()]), false);
        assert_eq!(
            sql,
            "kind = 'call' AND (number_e164 IN ($1, $2, $3) OR dialed IN ($1, $2, $3)) \
             AND end_reason = $4 AND facility_id IN ($5)"
        );
        let texts: Vec<&str> = args
            .iter()
            .map(|a| match a {
                Arg::Text(s) => s.as_str(),
                Arg::Int(_) => "",
            })
            .collect();
        assert_eq!(
            texts,
            [
                "+1 (555) 123-0001",
                "+15551230001",
                "15551230001",
                "busy",
                "F1"
            ]
        );
        let (sql, _) = where_clause(&f, Some(&["F1".into()]), true);
        assert!(sql.ends_with("+facility_id IN ($5)"), "{sql}");
    }
}

/// A call or visit of an inmate that another account paid for (a family's prepaid
/// account): on the inmate's statement beside the lines of its own account.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PaidByOther {
    pub session_id: String,
    /// `call` or `visit`.
    pub kind: String,
    pub number: Option<String>,
    pub started_at: DateTime<Utc>,
    pub billed_increments: i64,
    pub amount: Money,
    /// Whose account paid: `family`.
    pub payer: Option<String>,
}

impl Store {
    /// The sessions of `inmate_id` started in [`from`, `to`) and charged to an account
    /// other than `account_id` (the inmate's own), oldest first.
    pub async fn sessions_paid_by_others(
        &self,
        inmate_id: &str,
        account_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PaidByOther>, StoreError> {
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM sessions WHERE inmate_id = $1 AND account_id IS NOT NULL \
             AND account_id <> $2 AND invite_at >= $3 AND invite_at < $4 ORDER BY invite_at, id",
        )
        .bind(inmate_id)
        .bind(account_id)
        .bind(to_micros(from))
        .bind(to_micros(to))
        .fetch_all(self.db.pool())
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let c = self.session(&id).await?;
            out.push(PaidByOther {
                session_id: c.id,
                kind: c.kind,
                number: c.number,
                started_at: c.invite_at,
                billed_increments: c.billed_increments,
                amount: c.amount,
                payer: c.payer,
            });
        }
        Ok(out)
    }
}
