//! Rating: what a destination costs per minute. A pure core: no I/O, no clock, no async.
//!
//! # What it owns
//!
//! - **Numbers**: [`normalize_e164`] turns what a handset or a family member dialed into an
//!   [`E164`] (rules on the function). `E164` is stored inline and is `Copy`.
//! - **Rate decks**: [`RateDeck`] maps destination prefixes to a [`CallClass`] by longest
//!   prefix (a flat digit trie; lookups allocate nothing).
//! - **Rate plans**: [`RatePlan`] holds a [`Tariff`] (per-minute rate + billing increment)
//!   per (class, [`Service`]), a default increment (60 s) and a maximum call duration.
//! - **Caps**: [`CapTable`] holds regulatory per-minute caps by [`FacilityCapCategory`] and
//!   service, from a day on; [`CapSchedule`] says which table is in force on a day.
//!   [`CapSchedule::fcc`] is FCC 24-75 (`config/fcc_caps_2024.toml`) then FCC 25-75 from
//!   2026-04-06 (`config/fcc_caps_2025.toml`), every figure's source named there.
//!   [`RatePlan::validate`] refuses a plan above its cap.
//! - **Tariff arithmetic**: the cost of an increment, of `n` increments, and how many
//!   increments a balance pays for.
//!
//! # Who calls it
//!
//! - The SIP call flow (`call`) at step 5 of a call: [`normalize_e164`] + [`rate`], then it
//!   refuses the call if [`Tariff::increments_affordable`] is 0 and otherwise hands the tariff
//!   to the charging core (`charging::ChargingPlan::for_tariff`).
//! - Video visits (`visit`) rate the visit with [`Service::Video`] the same way.
//! - The API's rate-deck and rate-plan upload uses the parsers ([`RateDeck::from_csv`],
//!   [`RatePlan::from_toml`], [`RatePlan::from_csv`]) and [`RatePlan::validate`]; stored
//!   decks are rebuilt with [`RateDeck::from_entries`].
//!
//! It calls nothing but [`crate::money`].
//!
//! # Decisions
//!
//! - **One rounding, per increment.** An increment costs
//!   `Money::round_charge(per_minute × increment_secs / 60)` (toward zero, 1/10,000), and
//!   `n` increments cost exactly `n ×` that, because the ledger debits one increment at a
//!   time: the sum of a call's debits always equals [`Tariff::cost_of`]. Rounding toward
//!   zero means the effective per-minute price never exceeds the stated rate.
//! - **Caps** are checked on both the stated rate and the effective price
//!   ([`Tariff::within_cap`]); a cap applies to every call class of its service, and a
//!   service without a cap in the table is uncapped.
//! - **No fees.** FCC 24-75 bans separate ancillary service charges, so the model has only
//!   per-minute charges: no per-call, connection, or account fees exist here.
//! - **Exact rates.** Rates are decimal strings (`"0.021"`) or integers; a TOML/JSON float
//!   is refused with a message saying to quote it. Nothing here uses `f64`.
//! - **A free tariff** (rate 0) affords `u64::MAX` increments for any positive balance; the
//!   plan's maximum duration bounds the call.
//! - **Errors carry no phone numbers in their messages** (numbers are personal data and
//!   errors get logged); [`RatingError::NotRateable`] keeps the number as a field.
//!
//! # Formats
//!
//! Rate deck CSV (header required, `line` in errors is the file line, header = 1):
//!
//! ```text
//! prefix,class,description
//! 1,domestic,North America
//! 1555,local,Springfield
//! 44,international,"United Kingdom, all"
//! ```
//!
//! Rate plan TOML:
//!
//! ```toml
//! name = "County standard"
//! default_increment_secs = 60     # optional, 60
//! max_duration_secs = 900         # optional, 900 (15 minutes)
//!
//! [[tariff]]
//! class = "local"                 # local | domestic | international
//! service = "audio"               # audio | video
//! per_minute = "0.021"            # quoted decimal, at most 4 places
//! increment_secs = 6              # optional, the plan default
//! ```
//!
//! Rate plan CSV (name and limits come from [`PlanSettings`]; an empty increment means
//! the default; rates in the one written form of amounts, increments as digits without
//! sign or leading zeros; spaces and tabs around an unquoted field are layout, a quoted
//! field is verbatim):
//!
//! ```text
//! class,service,per_minute,increment_secs
//! local,audio,0.021,6
//! domestic,audio,0.05,
//! ```

mod caps;
mod csvrows;
mod deck;
mod e164;
mod exact;
mod plan;

pub use caps::{CapError, CapSchedule, CapTable, FacilityCapCategory, UnknownCategory};
pub use deck::{DeckEntry, DeckError, DeckMatch, RateDeck, MAX_PREFIX_DIGITS};
pub use e164::{normalize_e164, NumberError, E164, MAX_DIGITS, MIN_DIGITS};
pub use plan::{affordable, PlanError, PlanSettings, RatePlan, Tariff, MAX_INCREMENT_SECS};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Destination class, from the rate deck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallClass {
    Local,
    Domestic,
    International,
}

/// What is being sold: a phone call or a video visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Audio,
    Video,
}

/// An unknown class or service name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{}`", crate::text::quote(.value))]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

impl CallClass {
    pub const ALL: [CallClass; 3] = [Self::Local, Self::Domestic, Self::International];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Domestic => "domestic",
            Self::International => "international",
        }
    }

    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

impl Service {
    pub const ALL: [Service; 2] = [Self::Audio, Self::Video];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }

    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

fn parse_name<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    kind: &'static str,
    s: &str,
) -> Result<T, UnknownName> {
    let s = s.trim();
    all.iter()
        .copied()
        .find(|&v| name(v).eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownName {
            kind,
            value: s.to_owned(),
        })
}

impl FromStr for CallClass {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        parse_name(&Self::ALL, Self::as_str, "call class", s)
    }
}

impl FromStr for Service {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        parse_name(&Self::ALL, Self::as_str, "service", s)
    }
}

impl fmt::Display for CallClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rating of one call or visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating<'d> {
    pub class: CallClass,
    /// The deck prefix that matched (for the CDR).
    pub prefix: &'d str,
    pub service: Service,
    pub tariff: Tariff,
}

/// Why a number could not be rated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    /// No deck prefix matches: the destination is not rateable, so not callable.
    #[error("no rate deck prefix matches the destination")]
    NotRateable { number: E164 },
    /// The deck classifies the number but the plan has no tariff for it.
    #[error("the rate plan has no tariff for {class} {service}")]
    NoTariff { class: CallClass, service: Service },
}

/// Rates `number` for `service`: deck class by longest prefix, then the plan's tariff.
/// Allocation-free.
#[inline]
pub fn rate<'d>(
    deck: &'d RateDeck,
    plan: &RatePlan,
    number: &E164,
    service: Service,
) -> Result<Rating<'d>, RatingError> {
    let matched = deck
        .lookup(number.digits())
        .ok_or(RatingError::NotRateable { number: *number })?;
    let tariff = plan
        .tariff(matched.class, service)
        .ok_or(RatingError::NoTariff {
            class: matched.class,
            service,
        })?;
    Ok(Rating {
        class: matched.class,
        prefix: matched.prefix,
        service,
        tariff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deck() -> RateDeck {
        RateDeck::from_csv(&include_bytes!("../../tests/fixtures/ratedeck_small.csv")[..]).unwrap()
    }

    fn plan() -> RatePlan {
        RatePlan::from_toml(
            r#"
            name = "p"
            [[tariff]]
            class = "local"
            service = "audio"
            per_minute = "0.021"
            increment_secs = 6
            [[tariff]]
            class = "international"
            service = "audio"
            per_minute = "0.06"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn rates_a_dialed_number() {
        let (deck, plan) = (deck(), plan());
        let n = normalize_e164("(555) 123-4567", "1").unwrap();
        let r = rate(&deck, &plan, &n, Service::Audio).unwrap();
        assert_eq!((r.class, r.prefix), (CallClass::Local, "1555123"));
        assert_eq!(r.tariff.cost_of_increment().to_string(), "0.0021");
        let uk = normalize_e164("011 44 20 7946 0000", "1").unwrap();
        let r = rate(&deck, &plan, &uk, Service::Audio).unwrap();
        assert_eq!((r.class, r.prefix), (CallClass::International, "4420"));
    }

    #[test]
    fn rating_errors() {
        let (deck, plan) = (deck(), plan());
        let nowhere = normalize_e164("+861012345678", "1").unwrap();
        let e = rate(&deck, &plan, &nowhere, Service::Audio).unwrap_err();
        assert_eq!(e, RatingError::NotRateable { number: nowhere });
        assert!(
            !e.to_string().contains("861012345678"),
            "no number in messages"
        );
        let toll_free = normalize_e164("1-800-555-0100", "1").unwrap();
        assert_eq!(
            rate(&deck, &plan, &toll_free, Service::Audio),
            Err(RatingError::NoTariff {
                class: CallClass::Domestic,
                service: Service::Audio
            })
        );
    }

    #[test]
    fn names_parse_and_serialize_lowercase() {
        assert_eq!(
            "International".parse::<CallClass>(),
            Ok(CallClass::International)
        );
        assert_eq!(" video ".parse::<Service>(), Ok(Service::Video));
        assert!("fax".parse::<Service>().is_err());
        assert_eq!(
            serde_json::to_string(&CallClass::Domestic).unwrap(),
            "\"domestic\""
        );
        assert_eq!(
            serde_json::from_str::<Service>("\"audio\"").unwrap(),
            Service::Audio
        );
    }
}
