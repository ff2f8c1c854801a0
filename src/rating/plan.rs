//! Rate plans and the tariff arithmetic.
//!
//! A [`RatePlan`] holds one [`Tariff`] per (call class, service): a per-minute rate and a
//! billing increment. All charge arithmetic lives on [`Tariff`], and it rounds exactly once
//! per increment with [`Money::round_charge`].

use super::caps::{CapTable, FacilityCapCategory};
use super::csvrows::{for_each_row, CsvProblem};
use super::{exact, CallClass, Service};
use crate::money::Money;
use crate::text::quote;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::time::Duration;

/// Longest billing increment accepted: one hour.
pub const MAX_INCREMENT_SECS: u32 = 3600;

/// Why a plan or tariff was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("rate plan: {0}")]
    Toml(String),
    #[error("line {line}: {message}")]
    Csv { line: u64, message: String },
    #[error("the rate plan CSV is empty: a header `class,service,per_minute,increment_secs` is required")]
    MissingHeader,
    #[error(
        "line {line}: expected header `class,service,per_minute,increment_secs`, found `{}`", quote(.found)
    )]
    BadHeader { line: u64, found: String },
    #[error(
        "line {line}: expected 4 fields (class,service,per_minute,increment_secs), found {found}"
    )]
    FieldCount { line: u64, found: usize },
    #[error("line {line}: class `{}` is not local, domestic or international", quote(.value))]
    BadClass { line: u64, value: String },
    #[error("line {line}: service `{}` is not audio or video", quote(.value))]
    BadService { line: u64, value: String },
    #[error("line {line}: rate `{}`: {reason}", quote(.value))]
    BadRate {
        line: u64,
        value: String,
        reason: String,
    },
    #[error("line {line}: increment `{}` is not a whole number of seconds written as digits (no sign, spaces or leading zeros: `60`)", quote(.value))]
    BadIncrement { line: u64, value: String },
    #[error("a billing increment must be 1 to {MAX_INCREMENT_SECS} seconds, not {secs}")]
    IncrementOutOfRange { secs: u32 },
    #[error("rate {rate} is negative")]
    NegativeRate { rate: Money },
    #[error("the maximum call duration must be more than zero")]
    ZeroMaxDuration,
    #[error("the plan has two tariffs for {class} {service}")]
    DuplicateTariff { class: CallClass, service: Service },
    #[error("{class} {service} at {rate}/min is above the {category} cap of {cap}/min")]
    AboveCap {
        class: CallClass,
        service: Service,
        rate: Money,
        cap: Money,
        category: FacilityCapCategory,
    },
}

impl From<CsvProblem> for PlanError {
    fn from(p: CsvProblem) -> PlanError {
        match p {
            CsvProblem::Read { line, message } => PlanError::Csv { line, message },
            CsvProblem::MissingHeader => PlanError::MissingHeader,
            CsvProblem::BadHeader { line, found } => PlanError::BadHeader { line, found },
        }
    }
}

/// A per-minute rate billed in whole increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TariffSpec", into = "TariffSpec")]
pub struct Tariff {
    per_minute: Money,
    increment_secs: u32,
    /// `round_charge(per_minute × increment_secs / 60)`, computed once.
    increment_cost: Money,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TariffSpec {
    #[serde(deserialize_with = "exact::rate")]
    per_minute: Money,
    increment_secs: u32,
}

impl TryFrom<TariffSpec> for Tariff {
    type Error = PlanError;
    fn try_from(s: TariffSpec) -> Result<Tariff, PlanError> {
        Tariff::new(s.per_minute, s.increment_secs)
    }
}

impl From<Tariff> for TariffSpec {
    fn from(t: Tariff) -> TariffSpec {
        TariffSpec {
            per_minute: t.per_minute,
            increment_secs: t.increment_secs,
        }
    }
}

impl Tariff {
    /// A tariff of `per_minute` billed in increments of `increment_secs` (1..=3600).
    pub fn new(per_minute: Money, increment_secs: u32) -> Result<Tariff, PlanError> {
        if per_minute.is_negative() {
            return Err(PlanError::NegativeRate { rate: per_minute });
        }
        check_increment(increment_secs)?;
        let exact = per_minute.decimal() * Decimal::from(increment_secs) / Decimal::from(60);
        Ok(Tariff {
            per_minute,
            increment_secs,
            increment_cost: Money::round_charge(exact),
        })
    }

    #[inline]
    pub fn per_minute(&self) -> Money {
        self.per_minute
    }

    #[inline]
    pub fn increment_secs(&self) -> u32 {
        self.increment_secs
    }

    pub fn increment(&self) -> Duration {
        Duration::from_secs(u64::from(self.increment_secs))
    }

    /// The charge for one increment: `round_charge(per_minute × increment_secs / 60)`.
    #[inline]
    pub fn cost_of_increment(&self) -> Money {
        self.increment_cost
    }

    /// The charge for `n` increments: [`Self::cost_of_increment`] × `n`. Each increment is
    /// rounded once and then multiplied, because the ledger debits increment by increment:
    /// the sum of the debits of a call is exactly `cost_of(n)`.
    pub fn cost_of(&self, n: u64) -> Money {
        self.increment_cost.times(n)
    }

    /// Whole increments `balance` pays for: 0 for a zero or negative balance, `u64::MAX`
    /// for a free tariff (the plan's maximum duration then bounds the call).
    pub fn increments_affordable(&self, balance: Money) -> u64 {
        affordable(balance, self.increment_cost)
    }

    /// The price actually charged per minute: `cost_of_increment × 60 / increment_secs`.
    /// Never above [`Self::per_minute`], since each increment is rounded toward zero.
    pub fn effective_per_minute(&self) -> Decimal {
        self.increment_cost.decimal() * Decimal::from(60) / Decimal::from(self.increment_secs)
    }

    /// Whether both the stated and the effective per-minute price are within `cap`.
    pub fn within_cap(&self, cap: Money) -> bool {
        self.per_minute <= cap && self.effective_per_minute() <= cap.decimal()
    }
}

/// Whole increments of `cost` that `balance` pays for (minor-unit integer arithmetic).
pub fn affordable(balance: Money, cost: Money) -> u64 {
    if !balance.is_positive() {
        return 0;
    }
    let cost = cost.to_minor();
    if cost <= 0 {
        return u64::MAX;
    }
    u64::try_from(balance.to_minor() / cost).unwrap_or(0)
}

fn check_increment(secs: u32) -> Result<(), PlanError> {
    if (1..=MAX_INCREMENT_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(PlanError::IncrementOutOfRange { secs })
    }
}

/// Name and limits of a plan, for building one from CSV rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    pub name: String,
    /// Increment of rows that leave `increment_secs` empty.
    pub default_increment_secs: u32,
    pub max_duration_secs: u32,
}

impl PlanSettings {
    pub fn new(name: impl Into<String>) -> PlanSettings {
        PlanSettings {
            name: name.into(),
            default_increment_secs: RatePlan::DEFAULT_INCREMENT_SECS,
            max_duration_secs: RatePlan::DEFAULT_MAX_DURATION_SECS,
        }
    }
}

/// A facility's rate plan: a tariff per (class, service), a default increment and a
/// maximum call duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatePlan {
    name: String,
    default_increment_secs: u32,
    max_duration_secs: u32,
    tariffs: [[Option<Tariff>; 2]; 3],
}

impl RatePlan {
    pub const DEFAULT_INCREMENT_SECS: u32 = 60;
    /// 15 minutes, the usual correctional-facility call limit.
    pub const DEFAULT_MAX_DURATION_SECS: u32 = 900;

    /// An empty plan (no tariffs yet).
    pub fn new(settings: PlanSettings) -> Result<RatePlan, PlanError> {
        check_increment(settings.default_increment_secs)?;
        if settings.max_duration_secs == 0 {
            return Err(PlanError::ZeroMaxDuration);
        }
        Ok(RatePlan {
            name: settings.name,
            default_increment_secs: settings.default_increment_secs,
            max_duration_secs: settings.max_duration_secs,
            tariffs: [[None; 2]; 3],
        })
    }

    /// Adds the tariff of a (class, service); a second one for the same pair is an error.
    pub fn add_tariff(
        &mut self,
        class: CallClass,
        service: Service,
        tariff: Tariff,
    ) -> Result<(), PlanError> {
        let slot = &mut self.tariffs[class.index()][service.index()];
        if slot.is_some() {
            return Err(PlanError::DuplicateTariff { class, service });
        }
        *slot = Some(tariff);
        Ok(())
    }

    #[inline]
    pub fn tariff(&self, class: CallClass, service: Service) -> Option<Tariff> {
        self.tariffs[class.index()][service.index()]
    }

    /// All tariffs, in class then service order.
    pub fn tariffs(&self) -> impl Iterator<Item = (CallClass, Service, Tariff)> + '_ {
        CallClass::ALL.into_iter().flat_map(move |c| {
            Service::ALL
                .into_iter()
                .filter_map(move |s| self.tariff(c, s).map(|t| (c, s, t)))
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn default_increment_secs(&self) -> u32 {
        self.default_increment_secs
    }

    pub fn max_duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.max_duration_secs))
    }

    /// Refuses a plan with any tariff above the cap of `facility` for its service (stated
    /// or effective per-minute price). A service without a cap in `caps` is uncapped.
    pub fn validate(
        &self,
        caps: &CapTable,
        facility: FacilityCapCategory,
    ) -> Result<(), PlanError> {
        for (class, service, tariff) in self.tariffs() {
            let Some(cap) = caps.cap(facility, service) else {
                continue;
            };
            if !tariff.within_cap(cap) {
                return Err(PlanError::AboveCap {
                    class,
                    service,
                    rate: tariff.per_minute(),
                    cap,
                    category: facility,
                });
            }
        }
        Ok(())
    }

    /// Parses a plan from TOML (format in the module doc of [`crate::rating`]).
    pub fn from_toml(text: &str) -> Result<RatePlan, PlanError> {
        let file: PlanFile = toml::from_str(text).map_err(|e| PlanError::Toml(e.to_string()))?;
        let mut plan = RatePlan::new(PlanSettings {
            name: file.name,
            default_increment_secs: file.default_increment_secs,
            max_duration_secs: file.max_duration_secs,
        })?;
        for t in file.tariff {
            let increment = t.increment_secs.unwrap_or(plan.default_increment_secs);
            plan.add_tariff(t.class, t.service, Tariff::new(t.per_minute, increment)?)?;
        }
        Ok(plan)
    }

    /// Parses the tariffs of a plan from CSV: header `class,service,per_minute,increment_secs`,
    /// one row per (class, service); an empty `increment_secs` means the plan default.
    pub fn from_csv(settings: PlanSettings, reader: impl Read) -> Result<RatePlan, PlanError> {
        let mut plan = RatePlan::new(settings)?;
        let header = ["class", "service", "per_minute", "increment_secs"];
        for_each_row(reader, &header, |line, record| {
            let (class, service, tariff) = plan.row_from_record(record, line)?;
            plan.add_tariff(class, service, tariff)
        })?;
        Ok(plan)
    }

    fn row_from_record(
        &self,
        record: &[String],
        line: u64,
    ) -> Result<(CallClass, Service, Tariff), PlanError> {
        if record.len() != 4 {
            return Err(PlanError::FieldCount {
                line,
                found: record.len(),
            });
        }
        let value = |i: usize| record[i].to_owned();
        let class = record[0].parse().map_err(|_| PlanError::BadClass {
            line,
            value: value(0),
        })?;
        let service = record[1].parse().map_err(|_| PlanError::BadService {
            line,
            value: value(1),
        })?;
        let per_minute = exact::parse_rate(&record[2]).map_err(|reason| PlanError::BadRate {
            line,
            value: value(2),
            reason,
        })?;
        let increment = match record[3].as_str() {
            "" => self.default_increment_secs,
            s => whole_secs(s).ok_or_else(|| PlanError::BadIncrement {
                line,
                value: value(3),
            })?,
        };
        Ok((class, service, Tariff::new(per_minute, increment)?))
    }
}

/// A whole number of seconds in its one written form: ASCII digits, no sign, no leading
/// zero (`60`; not `+60`, `060`, ` 60`, `6e1`), within `u32`. `str::parse` alone would
/// take `+60`.
pub(crate) fn whole_secs(s: &str) -> Option<u32> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

fn default_increment() -> u32 {
    RatePlan::DEFAULT_INCREMENT_SECS
}

fn default_max_duration() -> u32 {
    RatePlan::DEFAULT_MAX_DURATION_SECS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: String,
    #[serde(default = "default_increment")]
    default_increment_secs: u32,
    #[serde(default = "default_max_duration")]
    max_duration_secs: u32,
    #[serde(default)]
    tariff: Vec<TariffRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TariffRow {
    class: CallClass,
    service: Service,
    #[serde(deserialize_with = "exact::rate")]
    per_minute: Money,
    #[serde(default)]
    increment_secs: Option<u32>,
}

#[cfg(test)]
mod tests;
