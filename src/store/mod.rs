//! Records: facilities, family accounts ([`FamilyAccount`]), inmates, handsets, contacts, block lists, rate decks and plans,
//! API principals, the audit log, messages between inmates and contacts ([`Message`]) and
//! the watch words that flag them, investigators' notes ([`Note`]: versioned, never
//! overwritten), the nodes of a cluster ([`NodeRecord`]), and video
//! visits: visiting rules, visit stations and the visits booked ([`Visit`]; the rules
//! themselves are [`crate::visit`]'s).
//!
//! Owns: the rows of those tables and the rules that keep them consistent (a booking opens
//! the inmate's account in the same database transaction; a rate plan above its cap is
//! refused when it is loaded; a PIN is stored only as a keyed hash of facility, calling ID
//! and PIN; PIN attempts, lines and guessing alerts are [`pin_attempts`]'s). Money lives in
//! [`crate::ledger`]; this module calls it only to open accounts.
//! Called by: the API, the CLI and the demo seed; later the call flow (lookups).

mod audit;
mod calls;
mod contacts;
mod facilities;
mod family;
mod handsets;
mod inmates;
mod keywords;
mod leads;
mod links;
mod messages;
mod nodes;
mod notes;
pub mod passwords;
mod pin_attempts;
mod principals;
mod rates;
mod recordings;
mod setup;
mod users;
mod visit_sessions;
mod visit_stations;
mod visits;

pub(crate) use audit::{link as audit_link, Fields as AuditFields};
pub use audit::{AuditEntry, AuditFault, AuditProblem, AuditRecord, AuditVerification};
pub use calls::{
    AppliedTariff, CallFilter, CallPage, Cdr, PaidByOther, SESSION_KINDS, SESSION_SORTS,
    SORT_ORDERS,
};
pub use contacts::{Block, Contact, ContactStatus, NewContact};
pub use facilities::{Facility, FacilityPatch, NewFacility, RETENTION_DAYS};
pub use family::{FamilyAccount, RateScope, Registration, UsedLink};
pub use handsets::{Handset, NewHandset, TrustedNetwork};
pub use inmates::{Booking, Inmate, InmateStatus};
pub use keywords::{AlertFilter, JobEnd, KeywordAlert, KeywordJob, QueueCounts, MAX_ALERTS};
pub use leads::{
    CallerEdge, LeadPerson, LeadSession, LeadWindow, NumberGraph, NumberLead, PinAttemptRow,
    MAX_LEADS,
};
pub use links::{LinkRequest, NewLinkRequest, RosterEntry};
pub use messages::{
    Message, MessageFilter, MessagePage, MessagePhoto, NewMessage, WatchWord, DEFAULT_MESSAGES,
    MAX_MESSAGES,
};
pub use nodes::NodeRecord;
pub use notes::{Note, NoteFilter, NoteText, NoteVersion, MAX_NOTES};
pub use pin_attempts::{AttemptOutcome, GuessingPattern, NewAttempt, PinLock};
pub use principals::{token_hash, Facilities, Principal, Role, TokenSession};
pub use rates::{preset_caps, DeckSummary, PlanSummary, TariffRow};
pub(crate) use recordings::{
    chain_link, recording as recording_from_row, ChainFields, CHAIN_LOCK_KEY,
    COLUMNS as RECORDING_COLUMNS,
};
pub use recordings::{FinishedRecording, NewRecording, Participant, Recording, RecordingStatus};
pub use setup::{CallingInmate, DestinationFacts, LinkedInmate};
pub use users::{
    valid_username, LockoutPolicy, LoginOutcome, LoginRefusal, LoginSession, NewUser, User,
    MAX_USERNAME_BYTES,
};
pub use visit_sessions::{LiveVisit, VisitSession};
pub use visit_stations::{
    NewVisitStation, TokenBinding, VisitStation, VisitStationPatch, MAX_STATION_CAPACITY,
};
pub use visits::{
    Actor, Visit, VisitError, VisitFilter, VisitPage, VisitRequest, VisitScope,
    MAX_PAGE as MAX_VISIT_PAGE,
};

use crate::clock::Clock;
use crate::db::Db;
use crate::ledger::{Ledger, LedgerError};
use crate::policy::lockout::LockState;
use crate::policy::pin::CredentialRules;
use std::sync::Arc;

/// Errors at the records boundary; the API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} '{}' not found", crate::text::quote(.id))]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("stored {what} is corrupt: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    pub fn invalid(field: &str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: &str) -> StoreError {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

impl From<crate::text::TextError> for StoreError {
    fn from(e: crate::text::TextError) -> StoreError {
        StoreError::Invalid {
            field: e.field,
            message: e.problem.to_string(),
        }
    }
}

impl From<crate::db::DbError> for StoreError {
    fn from(e: crate::db::DbError) -> StoreError {
        match e {
            crate::db::DbError::Sqlx(e) => StoreError::Db(e),
            other => StoreError::Corrupt {
                what: "database",
                message: other.to_string(),
            },
        }
    }
}

/// Access to the records, with the clock, the PIN key and the credential rules.
#[derive(Clone)]
pub struct Store {
    db: Db,
    clock: Arc<dyn Clock>,
    pin_pepper: Arc<str>,
    /// Lengths of calling IDs and PINs (`[security]`; the defaults until told otherwise).
    credentials: CredentialRules,
    ledger: Ledger,
    /// Rate decks and plans by id, shared by the store's clones.
    rates: Arc<rates::RateCache>,
    /// The configured rate cap tables (`rates.cap_tables`); `None`: the checked-in ones.
    caps: Option<Arc<crate::rating::CapSchedule>>,
}

impl Store {
    pub fn new(db: Db, clock: Arc<dyn Clock>, pin_pepper: &str) -> Store {
        Store {
            ledger: Ledger::new(db.clone(), clock.clone()),
            db,
            clock,
            pin_pepper: pin_pepper.into(),
            credentials: CredentialRules::default(),
            rates: Arc::default(),
            caps: None,
        }
    }

    /// The same store checking plans against `caps` instead of the checked-in tables.
    pub fn with_cap_schedule(mut self, caps: crate::rating::CapSchedule) -> Store {
        self.caps = Some(Arc::new(caps));
        self
    }

    /// The same store with these calling ID and PIN lengths.
    pub fn with_credential_rules(mut self, rules: CredentialRules) -> Store {
        self.credentials = rules;
        self
    }

    pub fn credential_rules(&self) -> &CredentialRules {
        &self.credentials
    }

    /// The key for PIN hashes and ID digests.
    pub(crate) fn pin_pepper(&self) -> &[u8] {
        self.pin_pepper.as_bytes()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn now_us(&self) -> i64 {
        crate::db::to_micros(self.clock.wall())
    }
}

/// A fresh random id with a readable prefix, e.g. `inm_0193…`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Maps a unique violation to a conflict with `message`, anything else to a DB error.
pub(crate) fn conflict_on_unique(e: sqlx::Error, message: impl Into<String>) -> StoreError {
    if crate::db::is_unique_violation(&e) {
        StoreError::Conflict(message.into())
    } else {
        StoreError::Db(e)
    }
}

/// Reads a BIGINT 0/1 flag.
pub(crate) fn flag(v: i64) -> bool {
    v != 0
}

/// The tables whose rows, by id, carry a PIN lock (lines have their own table, keyed by
/// facility and address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PinLocked {
    Inmate,
    Handset,
}

impl PinLocked {
    fn table(self) -> &'static str {
        match self {
            PinLocked::Inmate => "inmates",
            PinLocked::Handset => "handsets",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            PinLocked::Inmate => "inmate",
            PinLocked::Handset => "handset",
        }
    }
}

impl Store {
    /// An inmate's or handset's PIN lock as stored.
    pub(crate) async fn pin_lock_state(
        &self,
        what: PinLocked,
        id: &str,
    ) -> Result<LockState, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT locked_until, pin_lock_level, pin_count_from FROM {} WHERE id = $1",
            what.table()
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found(what.noun(), id))?;
        lock_state(&row, "pin_lock_level", "pin_count_from")
    }

    /// Locks ID + PIN entry of an inmate or handset as `lock` says, unless a lock already
    /// runs at `now` (another node's); whether this call set it. Failures before its end
    /// are forgotten.
    pub(crate) async fn set_pin_lock(
        &self,
        what: PinLocked,
        id: &str,
        lock: crate::policy::lockout::Lock,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET locked_until = $2, pin_count_from = $2, pin_lock_level = $3 \
             WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $4)",
            what.table()
        ))
        .bind(id)
        .bind(crate::db::to_micros(lock.until))
        .bind(i64::from(lock.level))
        .bind(crate::db::to_micros(now))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Clears an inmate's or handset's PIN lock (staff) and restarts its failure count.
    pub(crate) async fn clear_pin_lock(&self, what: PinLocked, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET locked_until = NULL, pin_lock_level = 0, pin_count_from = $2 \
             WHERE id = $1",
            what.table()
        ))
        .bind(id)
        .bind(self.now_us())
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found(what.noun(), id));
        }
        Ok(())
    }
}

/// A PIN lock read from a row with `locked_until` and the named level and count-from
/// columns (inmates, handsets and lines name them alike but for the prefix).
pub(crate) fn lock_state(
    row: &sqlx::any::AnyRow,
    level: &str,
    count_from: &str,
) -> Result<LockState, StoreError> {
    use sqlx::Row;
    let until: Option<i64> = row.try_get("locked_until")?;
    let level: i64 = row.try_get(level)?;
    let from: Option<i64> = row.try_get(count_from)?;
    Ok(LockState {
        locked_until: until.map(crate::db::from_micros),
        level: u32::try_from(level).unwrap_or(u32::MAX),
        count_from: from.map(crate::db::from_micros),
    })
}
