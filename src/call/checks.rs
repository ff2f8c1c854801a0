//! The call flow's questions to the database: whose ID and PIN are these, and may this
//! inmate call this number now? The [`Call`](super::Call) machine asks them with
//! `CheckPin` / `CheckDestination`; the call driver answers with these functions.
//!
//! Everything that must hold across nodes lives in the database: the attempt log and the
//! locks the PIN lockout counts and sets ([`crate::policy::lockout`], whose module doc has
//! the rules and the numbers), the one-live-call rule (a unique index on `sessions`),
//! balances (the ledger's).
//!
//! Round trips: each question is asked in as few statements as the order of the checks
//! allows (`store::setup`, `Store::pin_entry_facts`): an ID + PIN entry reads the
//! inmate, its PIN and the three locks in one, records the entry, and counts the
//! failures before it in one (PostgreSQL: under the subjects' advisory locks, taken in
//! one statement); a destination reads the inmate with its facility, then the contact,
//! blocks, the day's calls and the balance, and writes the claim on the inmate with the
//! tariff in one statement. Rate decks and plans come from memory.

use super::{Authorization, Destination, EndReason, PinVerdict};
use crate::charging::ChargingPlan;
use crate::config::BillingConfig;
use crate::policy::hours::{local_day, CallingHours};
use crate::policy::lockout::{Counting, Failures, LockState, PinLockout, Subject};
use crate::policy::pin::unknown_id_tag;
use crate::rating::{rate, RatingError, Service, E164};
use crate::session::{authorize, cdr, payer};
use crate::store::{
    AttemptOutcome, AuditEntry, CallingInmate, ContactStatus, Facility, GuessingPattern, Inmate,
    InmateStatus, NewAttempt, Store, StoreError,
};
use chrono::{DateTime, NaiveTime, Utc};
use std::time::Duration;

/// The audit log's actor for what the gateway itself decides (locks, alerts).
pub const SYSTEM_ACTOR: &str = "sallyport";

/// One ID + PIN entry: where it was keyed and what.
#[derive(Clone, Copy)]
pub struct PinEntry<'a> {
    pub facility_id: &'a str,
    /// The handset it was keyed on; `None` at a visit station (a kiosk), which is counted
    /// as its line alone ([`station_line`]).
    pub handset_id: Option<&'a str>,
    /// The source address of the call (the line), or a station's [`station_line`].
    pub line: &'a str,
    pub calling_id: &'a str,
    pub pin: &'a str,
}

impl std::fmt::Debug for PinEntry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinEntry")
            .field("facility_id", &self.facility_id)
            .field("handset_id", &self.handset_id)
            .field("line", &self.line)
            .field(
                "calling_id",
                &format_args!("<{} digits>", self.calling_id.len()),
            )
            .field("pin", &format_args!("<redacted>"))
            .finish()
    }
}

/// The line a visit station's ID + PIN entries are counted and locked under:
/// `station:<station id>` (no source address has that form). Staff see its lock among the
/// facility's PIN locks and clear it as a line's (`POST /facilities/{fid}/lines/{address}/unlock`).
pub fn station_line(station_id: &str) -> String {
    format!("station:{station_id}")
}

/// What an entry decided, and what it set off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCheck {
    pub verdict: PinVerdict,
    /// The subjects this entry locked (it was the failure that reached their threshold).
    pub locked: Vec<Subject>,
    /// The facility-wide guessing alert this entry raised, with what it saw.
    pub alert: Option<GuessingPattern>,
    /// The account that pays for the inmate's calls, with a `Valid` verdict (read with
    /// the inmate, so the caller needs no second look-up).
    pub account_id: Option<String>,
}

impl PinCheck {
    fn just(verdict: PinVerdict) -> PinCheck {
        PinCheck {
            verdict,
            locked: Vec::new(),
            alert: None,
            account_id: None,
        }
    }
}

/// One subject of an entry: what it is, its key, its lock and the failures recorded
/// before the entry.
struct Counted {
    subject: Subject,
    key: String,
    state: LockState,
    failures: Failures,
}

/// Checks an ID + PIN entry (`docs/behaviour.md`, "ID, PIN and lockout"). The calling ID
/// names the inmate in the handset's facility; the PIN is compared in constant time; a PIN
/// alone never names anyone. Each entry is counted against the inmate (when the ID names
/// one), the handset and the line; a right PIN resets nothing. While the handset or line
/// is locked nothing is checked ([`PinVerdict::Locked`]); while the inmate is, even the
/// right PIN is refused ([`PinVerdict::AccountLocked`]). The entry is recorded, decided,
/// in one step with the count of the failures recorded before it, serialized per subject,
/// so entries racing on many nodes never check more than the threshold: one with a
/// threshold's worth before it is refused as locked, right PIN or not. The failure that
/// reaches a threshold locks that subject (audited `pin.lockout`); a failure that
/// completes a facility-wide pattern raises the guessing alert (audited
/// `pin.guessing_alert`, once per window).
pub async fn check_pin(
    store: &Store,
    entry: PinEntry<'_>,
    policy: &PinLockout,
    now: DateTime<Utc>,
) -> Result<PinCheck, StoreError> {
    let facility = entry.facility_id;
    // The inmate, its PIN and the three locks: one statement (one snapshot).
    let facts = store
        .pin_entry_facts(facility, entry.calling_id, entry.handset_id, entry.line)
        .await?;
    let (inmate, stored_pin) = match facts.inmate {
        Some((i, pin, lock)) => (Some(i), Some((pin, lock))),
        None => (None, None),
    };
    let target = match &inmate {
        Some(i) => i.id.clone(),
        None => unknown_id_tag(store.pin_pepper(), facility, entry.calling_id),
    };
    let attempt = NewAttempt {
        facility_id: facility,
        handset_id: entry.handset_id,
        line: entry.line,
        inmate_id: inmate.as_ref().map(|i| i.id.as_str()),
        target: &target,
    };
    let mut subjects = Vec::with_capacity(3);
    let mut add = |subject, key: &str, state| {
        subjects.push(Counted {
            subject,
            key: key.to_string(),
            state,
            failures: Failures::default(),
        })
    };
    if let (Some(i), Some((_, lock))) = (&inmate, &stored_pin) {
        add(Subject::Inmate, &i.id, *lock);
    }
    if let Some(handset) = entry.handset_id {
        add(Subject::Handset, handset, facts.handset);
    }
    if policy.counts(Subject::Line) {
        add(Subject::Line, entry.line, facts.line);
    }
    let phone = [Subject::Handset, Subject::Line];
    let refusal = |subjects: &[Counted], shut: &dyn Fn(&Counted) -> bool| {
        if subjects
            .iter()
            .any(|c| phone.contains(&c.subject) && shut(c))
        {
            Some(PinVerdict::Locked)
        } else if subjects
            .iter()
            .any(|c| c.subject == Subject::Inmate && shut(c))
        {
            Some(PinVerdict::AccountLocked)
        } else {
            None
        }
    };
    // A lock in force: nothing is compared.
    if let Some(verdict) = refusal(&subjects, &|c: &Counted| c.state.is_locked(now)) {
        store
            .record_pin_attempt(&attempt, AttemptOutcome::Locked, now, &[])
            .await?;
        log_attempt(&entry, inmate.as_ref(), AttemptOutcome::Locked);
        return Ok(PinCheck::just(verdict));
    }
    let right = match (&inmate, &stored_pin) {
        (Some(i), Some((pin, _))) => store.pin_matches_stored(i, pin, entry.pin).await?,
        _ => false,
    };
    let decided = if right {
        AttemptOutcome::Valid
    } else {
        AttemptOutcome::Wrong
    };
    let counting: Vec<(Subject, &str, Counting)> = subjects
        .iter()
        .map(|c| (c.subject, c.key.as_str(), policy.counting(now, &c.state)))
        .collect();
    let (id, before) = store
        .record_pin_attempt(&attempt, decided, now, &counting)
        .await?;
    for (c, f) in subjects.iter_mut().zip(before) {
        c.failures = f;
    }
    // A threshold's worth of failures before this entry (entries racing it, or a lock
    // not yet set): refused as locked, right PIN or not, and the lock set.
    let over = |c: &Counted| policy.over_limit(c.subject, c.failures);
    if let Some(verdict) = refusal(&subjects, &over) {
        store.finish_pin_attempt(id, AttemptOutcome::Locked).await?;
        log_attempt(&entry, inmate.as_ref(), AttemptOutcome::Locked);
        let mut check = PinCheck::just(verdict);
        for c in subjects.iter().filter(|c| over(c)) {
            if lock(store, &entry, c, c.failures, policy, now).await? {
                check.locked.push(c.subject);
            }
        }
        return Ok(check);
    }
    log_attempt(&entry, inmate.as_ref(), decided);
    if let (true, Some(i)) = (right, &inmate) {
        let mut check = PinCheck::just(PinVerdict::Valid {
            inmate_id: i.id.clone(),
        });
        check.account_id = Some(i.account_id.clone());
        return Ok(check);
    }
    let mut check = PinCheck::just(PinVerdict::Wrong);
    for c in &subjects {
        let after = c.failures.and_one();
        if policy.reached(c.subject, after) && lock(store, &entry, c, after, policy, now).await? {
            check.locked.push(c.subject);
        }
    }
    check.alert = guessing_alert(store, &entry, policy, now).await?;
    Ok(check)
}

/// Locks one subject that reached its threshold; whether this entry set the lock (another
/// node's may have won).
async fn lock(
    store: &Store,
    entry: &PinEntry<'_>,
    c: &Counted,
    f: Failures,
    policy: &PinLockout,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let l = policy.lock(now, &c.state);
    let set = match c.subject {
        Subject::Inmate => store.lock_inmate_pin(&c.key, l, now).await?,
        Subject::Handset => store.lock_handset_pin(&c.key, l, now).await?,
        Subject::Line => {
            store
                .lock_line_pin(entry.facility_id, &c.key, l, now)
                .await?
        }
    };
    if set {
        tracing::warn!(subject = c.subject.as_str(), id = %c.key, failures = f.recent,
            failures_today = f.daily, until = %l.until, level = l.level,
            "PIN entry locked after repeated failures");
        let detail = serde_json::json!({
            "subject": c.subject.as_str(), "failures": f.recent, "failures_today": f.daily,
            "until": l.until, "level": l.level, "handset_id": entry.handset_id,
            "line": entry.line,
        });
        audit(store, "pin.lockout", &c.key, entry, detail).await;
    }
    Ok(set)
}

/// Raises the facility's guessing alert when the failures of the alert window name enough
/// distinct IDs and no alert was raised within the window.
async fn guessing_alert(
    store: &Store,
    entry: &PinEntry<'_>,
    policy: &PinLockout,
    now: DateTime<Utc>,
) -> Result<Option<GuessingPattern>, StoreError> {
    let pattern = store
        .guessing_pattern(entry.facility_id, now - policy.alert_window)
        .await?;
    if !policy.alerts(pattern.ids)
        || !store
            .claim_guessing_alert(entry.facility_id, now, policy.alert_window)
            .await?
    {
        return Ok(None);
    }
    tracing::error!(
        facility = entry.facility_id,
        ids = pattern.ids,
        failures = pattern.failures,
        handsets = pattern.handsets,
        lines = pattern.lines,
        "facility-wide PIN guessing: failed entries across many IDs"
    );
    let detail = serde_json::json!({
        "ids": pattern.ids, "failures": pattern.failures, "handsets": pattern.handsets,
        "lines": pattern.lines, "window_secs": policy.alert_window.num_seconds(),
        "last_handset_id": entry.handset_id, "last_line": entry.line,
    });
    audit(
        store,
        "pin.guessing_alert",
        entry.facility_id,
        entry,
        detail,
    )
    .await;
    Ok(Some(pattern))
}

/// An audit entry by the gateway itself; a failure to write it is logged (the lock or
/// alert stands in the database either way).
async fn audit(
    store: &Store,
    action: &str,
    target: &str,
    entry: &PinEntry<'_>,
    detail: serde_json::Value,
) {
    let e = AuditEntry {
        actor: SYSTEM_ACTOR,
        action,
        target,
        facility_id: Some(entry.facility_id),
        detail,
        remote_addr: Some(entry.line),
    };
    if let Err(err) = store.audit(e).await {
        tracing::error!(error = %err, action, "audit write failed");
    }
}

/// Every attempt is logged: where, whose ID (when it names an inmate), how it ended;
/// never the digits.
fn log_attempt(entry: &PinEntry<'_>, inmate: Option<&Inmate>, outcome: AttemptOutcome) {
    tracing::info!(
        facility = entry.facility_id,
        handset = entry.handset_id.unwrap_or("-"),
        line = entry.line,
        inmate = inmate.map_or("-", |i| i.id.as_str()),
        outcome = outcome.as_str(),
        "ID + PIN attempt"
    );
}

/// The destination checks of `docs/behaviour.md`, in order: inmate active; number E.164;
/// approved contact; not blocked; within calling hours; daily and concurrent limits; rating and the first
/// increment affordable (the last is the call machine's, from the balance given here).
/// The concurrent-call rule is enforced by claiming the inmate on the live session.
///
/// What the CDR needs is written on the session as it becomes known: an authorized call
/// gets its contact, E.164 number and the tariff applied (plan, deck prefix, class,
/// per-minute rate, increment, cost of one increment: [`cdr::claim_and_authorize`]),
/// so its charge can be reproduced from the record; a call refused after its number was
/// normalized gets that number (the digits as dialed are on the session from the start).
pub async fn check_destination(
    store: &Store,
    session_id: &str,
    inmate_id: &str,
    dialed: &str,
    service: Service,
    billing: &BillingConfig,
    now: DateTime<Utc>,
) -> Result<Destination, StoreError> {
    let refused = |r| Ok(Destination::Refused(r));
    // The inmate with its facility: one statement.
    let inmate = store.calling_inmate(inmate_id).await?;
    let active = inmate.status == InmateStatus::Active;
    let number = match authorize::caller(active, dialed, &inmate.facility.country_code) {
        Ok(n) => n,
        Err(reason) => return refused(reason),
    };
    let d = check_number(store, session_id, &inmate, &number, service, billing, now).await?;
    if let Destination::Refused(_) = d {
        let p = cdr::Progress {
            number_e164: Some(number.as_str()),
            ..Default::default()
        };
        cdr::progress(store.db(), session_id, &p).await?;
    }
    Ok(d)
}

/// What rating came to, before the inmate is claimed: a tariff, or how the call ends if
/// the claim succeeds (a refusal or an error).
enum Rated {
    Tariff {
        plan: std::sync::Arc<crate::rating::RatePlan>,
        prefix: String,
        class: crate::rating::CallClass,
        service: Service,
        tariff: crate::rating::Tariff,
        plan_id: String,
        deck_id: String,
    },
    Not(Result<Destination, StoreError>),
}

/// [`check_destination`] from the normalized number on. The contact, blocks, the day's
/// calls and the balance are read in one statement; the claim on the inmate (the
/// one-live-call rule) and the tariff are written in one (rating runs in memory, on the
/// cached deck and plan, before it).
async fn check_number(
    store: &Store,
    session_id: &str,
    inmate: &CallingInmate,
    number: &E164,
    service: Service,
    billing: &BillingConfig,
    now: DateTime<Utc>,
) -> Result<Destination, StoreError> {
    let refused = |r| Ok(Destination::Refused(r));
    let facility = &inmate.facility;
    let hours = CallingHours::parse(
        &facility.time_zone,
        &facility.calling_hours_start,
        &facility.calling_hours_end,
    )
    .map_err(|e| StoreError::invalid("calling_hours", e.to_string()));
    let since = match &hours {
        Ok(h) if facility.daily_call_limit > 0 => Some(local_midnight(h, now)),
        _ => None,
    };
    let facts = store
        .destination_facts(inmate, number.as_str(), since)
        .await?;
    let contact = facts
        .contact
        .filter(|c| c.status == ContactStatus::Approved);
    let policy = authorize::NumberFacts {
        approved_contact: contact.is_some(),
        blocked: facts.blocked,
        // Unreadable hours fail the check only if it is reached (as before).
        within_hours: match &hours {
            Ok(h) => h.allows(now),
            Err(_) => true,
        },
        daily_limit: facility.daily_call_limit,
        accepted_today: facts.accepted_since,
    };
    if let Err(reason) = authorize::destination(&policy) {
        return refused(reason);
    }
    hours?;
    let Some(contact) = contact else {
        return refused(EndReason::NotApproved);
    };
    let rated = rate_call(store, facility, number, service).await;
    let Rated::Tariff {
        plan,
        prefix,
        class,
        service,
        tariff,
        plan_id,
        deck_id,
    } = rated
    else {
        // No tariff: the claim still decides first whether the inmate was already on a
        // call (as when the tariff came after it).
        if !cdr::claim_inmate(store.db(), session_id, &inmate.id, &inmate.account_id).await? {
            return refused(EndReason::CallLimit);
        }
        return match rated {
            Rated::Not(r) => r,
            Rated::Tariff { .. } => Err(StoreError::invalid("rate_plan_id", "unreachable")),
        };
    };
    let tariff = &tariff;
    let applied = cdr::Authorized {
        contact_id: &contact.id,
        number_e164: number.as_str(),
        privileged: contact.privileged,
        rate_plan_id: &plan_id,
        rate_deck_id: &deck_id,
        rate_prefix: &prefix,
        class: class.as_str(),
        service: service.as_str(),
        per_minute: tariff.per_minute(),
        increment_secs: tariff.increment_secs(),
        cost_per_increment: tariff.cost_of_increment(),
    };
    // The payer: the family's prepaid account or the inmate's, in the facility's order.
    let own = payer::Candidate {
        account_id: inmate.account_id.clone(),
        balance: facts.balance,
    };
    let payer = payer::choose(
        facility.payer_order,
        own,
        facts.family,
        tariff.cost_of_increment(),
    );
    let claim = cdr::Claim {
        inmate_id: &inmate.id,
        account_id: &payer.account_id,
    };
    if !cdr::claim_and_authorize(store.db(), session_id, &claim, &applied).await? {
        return refused(EndReason::CallLimit);
    }
    let charging = ChargingPlan::for_tariff(
        tariff,
        plan.max_duration(),
        Duration::from_secs(u64::from(billing.warning_lead_secs)),
        crate::session::DEBIT_TIMEOUT,
    );
    Ok(Destination::Authorized(Authorization {
        number: number.as_str().to_string(),
        privileged: contact.privileged,
        charging,
        balance: payer.balance,
        account_id: payer.account_id,
    }))
}

/// Rates `number` with the facility's plan and deck (cached by id).
async fn rate_call(store: &Store, facility: &Facility, number: &E164, service: Service) -> Rated {
    let (Some(plan_id), Some(deck_id)) = (&facility.rate_plan_id, &facility.rate_deck_id) else {
        return Rated::Not(Err(StoreError::invalid(
            "rate_plan_id",
            format!("facility {} has no rate plan or deck", facility.id),
        )));
    };
    let plan = match store.load_rate_plan(plan_id, &facility.cap_category).await {
        Ok(p) => p,
        Err(e) => return Rated::Not(Err(e)),
    };
    let deck = match store.load_rate_deck(deck_id).await {
        Ok(d) => d,
        Err(e) => return Rated::Not(Err(e)),
    };
    match rate(&deck, &plan, number, service) {
        Ok(rating) => Rated::Tariff {
            prefix: rating.prefix.to_string(),
            class: rating.class,
            service: rating.service,
            tariff: rating.tariff,
            plan,
            plan_id: plan_id.clone(),
            deck_id: deck_id.clone(),
        },
        Err(RatingError::NotRateable { .. }) => {
            Rated::Not(Ok(Destination::Refused(EndReason::InvalidNumber)))
        }
        Err(e) => Rated::Not(Err(StoreError::invalid("rate_plan_id", e.to_string()))),
    }
}

/// The start of the facility-local day containing `now`, in UTC.
fn local_midnight(hours: &CallingHours, now: DateTime<Utc>) -> DateTime<Utc> {
    let day = local_day(hours.zone, now);
    chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .ok()
        .and_then(|d| {
            d.and_time(NaiveTime::MIN)
                .and_local_timezone(hours.zone)
                .earliest()
        })
        .map_or(now - chrono::Duration::days(1), |t| t.with_timezone(&Utc))
}
