//! Regulatory per-minute rate caps by facility category and service, effective-dated.
//!
//! A [`CapTable`] is data, not code: the checked-in presets `config/fcc_caps_2024.toml`
//! (FCC 24-75) and `config/fcc_caps_2025.toml` (FCC 25-75, in force from its compliance
//! date, 2026-04-06) make [`CapSchedule::fcc`]; operators under other rules (a state PUC
//! order, a corrected table) load their own files with [`CapSchedule::from_files`]. The
//! table in force on a day is the latest whose `effective_from` is not after it. A cap
//! applies to every call class (local, domestic, international alike) of its service.

use super::{exact, Service};
use crate::money::Money;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Facility categories of FCC 24-75 (47 CFR § 64.6000, "Average Daily Population" tiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FacilityCapCategory {
    /// Any prison, whatever its population.
    Prison,
    /// Jail with an average daily population (ADP) of 1,000 or more.
    LargeJail,
    /// Jail with ADP 350–999.
    MediumJail,
    /// Jail with ADP 100–349.
    SmallJail,
    /// Jail with ADP 50–99 (0–99 under FCC 24-75, which had no smaller tier).
    VerySmallJail,
    /// Jail with ADP 0–49 (FCC 25-75's new tier). A table without this tier caps these
    /// jails as very small jails.
    ExtremelySmallJail,
}

impl FacilityCapCategory {
    pub const ALL: [FacilityCapCategory; 6] = [
        Self::Prison,
        Self::LargeJail,
        Self::MediumJail,
        Self::SmallJail,
        Self::VerySmallJail,
        Self::ExtremelySmallJail,
    ];

    /// The jail tier for an average daily population.
    pub fn jail_by_adp(adp: u32) -> FacilityCapCategory {
        match adp {
            1000.. => Self::LargeJail,
            350..=999 => Self::MediumJail,
            100..=349 => Self::SmallJail,
            50..=99 => Self::VerySmallJail,
            _ => Self::ExtremelySmallJail,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prison => "prison",
            Self::LargeJail => "large_jail",
            Self::MediumJail => "medium_jail",
            Self::SmallJail => "small_jail",
            Self::VerySmallJail => "very_small_jail",
            Self::ExtremelySmallJail => "extremely_small_jail",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FacilityCapCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown facility category name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown facility category `{}` (prison, large_jail, medium_jail, small_jail, very_small_jail, extremely_small_jail)", crate::text::quote(.0))]
pub struct UnknownCategory(pub String);

impl FromStr for FacilityCapCategory {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, UnknownCategory> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownCategory(s.to_owned()))
    }
}

/// Why a cap table or schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("rate cap table: {0}")]
    Toml(String),
    #[error("rate cap table {path}: {message}")]
    File { path: String, message: String },
    #[error("rate cap tables `{0}` and `{1}` take effect on the same day")]
    SameDay(String, String),
}

/// Per-minute caps, by facility category and service, from a day on. A missing cap means
/// "uncapped".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapTable {
    name: String,
    source: Option<String>,
    /// The first day it is in force; `None`: since always.
    effective_from: Option<NaiveDate>,
    /// A separate per-minute charge for facility costs the rules allow (reported; never
    /// added to a rate).
    facility_charge_per_minute: Option<Money>,
    caps: [[Option<Money>; 2]; 6],
    /// Where each tier's figures come from.
    sources: [Option<String>; 6],
}

impl CapTable {
    /// An empty (uncapped) table.
    pub fn new(name: impl Into<String>) -> CapTable {
        CapTable {
            name: name.into(),
            ..CapTable::default()
        }
    }

    /// Sets one cap.
    pub fn with_cap(mut self, category: FacilityCapCategory, service: Service, cap: Money) -> Self {
        self.caps[category.index()][service.index()] = Some(cap);
        self
    }

    /// The same table, in force from `day`.
    pub fn effective_from(mut self, day: NaiveDate) -> Self {
        self.effective_from = Some(day);
        self
    }

    /// The preset of FCC 24-75 (2024), from the checked-in `config/fcc_caps_2024.toml`.
    /// Fails only if that file is broken, which the module's tests rule out.
    pub fn fcc_2024() -> Result<CapTable, CapError> {
        CapTable::from_toml(include_str!("../../config/fcc_caps_2024.toml"))
    }

    /// The preset of FCC 25-75 (2025, in force from 2026-04-06), from the checked-in
    /// `config/fcc_caps_2025.toml` (figures from secondary sources: see the file).
    pub fn fcc_2025() -> Result<CapTable, CapError> {
        CapTable::from_toml(include_str!("../../config/fcc_caps_2025.toml"))
    }

    /// Parses a table:
    ///
    /// ```toml
    /// name = "FCC 24-75"
    /// source = "https://…"          # optional
    /// effective_from = "2024-11-19" # optional: the first day it is in force
    /// facility_charge_per_minute = "0.02" # optional, reported only
    /// [caps.prison]
    /// audio = "0.06"                # per minute, a quoted decimal
    /// video = "0.16"
    /// source = "Table One"          # optional: where this tier's figures come from
    /// [caps.large_jail]             # also medium_jail, small_jail, very_small_jail,
    /// audio = "0.06"                # extremely_small_jail
    /// ```
    pub fn from_toml(text: &str) -> Result<CapTable, CapError> {
        let file: CapFile = toml::from_str(text).map_err(|e| CapError::Toml(e.to_string()))?;
        let effective_from = file
            .effective_from
            .as_deref()
            .map(|d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    CapError::Toml(format!(
                        "effective_from `{}` is not a date (YYYY-MM-DD)",
                        crate::text::quote(d)
                    ))
                })
            })
            .transpose()?;
        let mut table = CapTable::new(file.name);
        table.source = file.source;
        table.effective_from = effective_from;
        table.facility_charge_per_minute = file.facility_charge_per_minute;
        for (category, tier) in file.caps.tiers() {
            table.caps[category.index()] = [tier.audio, tier.video];
            table.sources[category.index()] = tier.source;
        }
        Ok(table)
    }

    /// The per-minute cap for a category and service, if any. An extremely small jail
    /// without its own tier in the table is capped as a very small jail (the tier that
    /// covered it before FCC 25-75).
    pub fn cap(&self, category: FacilityCapCategory, service: Service) -> Option<Money> {
        let own = self.caps[category.index()][service.index()];
        match category {
            FacilityCapCategory::ExtremelySmallJail if !self.has_tier(category) => {
                self.caps[FacilityCapCategory::VerySmallJail.index()][service.index()]
            }
            _ => own,
        }
    }

    fn has_tier(&self, category: FacilityCapCategory) -> bool {
        self.caps[category.index()].iter().any(Option::is_some)
    }

    /// Where the figures of `category`'s tier come from, if the table says.
    pub fn tier_source(&self, category: FacilityCapCategory) -> Option<&str> {
        self.sources[category.index()].as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    pub fn starts(&self) -> Option<NaiveDate> {
        self.effective_from
    }

    pub fn facility_charge_per_minute(&self) -> Option<Money> {
        self.facility_charge_per_minute
    }
}

/// Cap tables over time: on each day the latest table whose `effective_from` is not after
/// it is in force; before the first, nothing is capped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapSchedule {
    /// Oldest first; at most one without a start, and then first.
    tables: Vec<CapTable>,
}

impl CapSchedule {
    /// A schedule of `tables` (any order). Two tables starting on the same day are refused.
    pub fn new(mut tables: Vec<CapTable>) -> Result<CapSchedule, CapError> {
        tables.sort_by_key(|t| t.effective_from);
        for pair in tables.windows(2) {
            if pair[0].effective_from == pair[1].effective_from {
                return Err(CapError::SameDay(
                    pair[0].name.clone(),
                    pair[1].name.clone(),
                ));
            }
        }
        Ok(CapSchedule { tables })
    }

    /// The checked-in presets: FCC 24-75, then FCC 25-75 from its compliance date.
    pub fn fcc() -> Result<CapSchedule, CapError> {
        CapSchedule::new(vec![CapTable::fcc_2024()?, CapTable::fcc_2025()?])
    }

    /// The tables in these files (TOML, as [`CapTable::from_toml`]); an error names the
    /// file.
    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<CapSchedule, CapError> {
        let mut tables = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let err = |message: String| CapError::File {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            tables.push(CapTable::from_toml(&text).map_err(|e| err(e.to_string()))?);
        }
        CapSchedule::new(tables)
    }

    /// The table in force on `day`, if any.
    pub fn in_force(&self, day: NaiveDate) -> Option<&CapTable> {
        self.tables
            .iter()
            .rev()
            .find(|t| t.effective_from.is_none_or(|from| from <= day))
    }

    /// The next table to take effect after `day`, if one is scheduled.
    pub fn next_after(&self, day: NaiveDate) -> Option<&CapTable> {
        self.tables
            .iter()
            .find(|t| t.effective_from.is_some_and(|from| from > day))
    }

    /// Every table, oldest first.
    pub fn tables(&self) -> &[CapTable] {
        &self.tables
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapFile {
    name: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    effective_from: Option<String>,
    #[serde(default, deserialize_with = "exact::opt_rate")]
    facility_charge_per_minute: Option<Money>,
    #[serde(default)]
    caps: CapTiers,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CapTiers {
    #[serde(default)]
    prison: TierCaps,
    #[serde(default)]
    large_jail: TierCaps,
    #[serde(default)]
    medium_jail: TierCaps,
    #[serde(default)]
    small_jail: TierCaps,
    #[serde(default)]
    very_small_jail: TierCaps,
    #[serde(default)]
    extremely_small_jail: TierCaps,
}

impl CapTiers {
    fn tiers(self) -> [(FacilityCapCategory, TierCaps); 6] {
        use FacilityCapCategory::*;
        [
            (Prison, self.prison),
            (LargeJail, self.large_jail),
            (MediumJail, self.medium_jail),
            (SmallJail, self.small_jail),
            (VerySmallJail, self.very_small_jail),
            (ExtremelySmallJail, self.extremely_small_jail),
        ]
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TierCaps {
    #[serde(default, deserialize_with = "exact::opt_rate")]
    audio: Option<Money>,
    #[serde(default, deserialize_with = "exact::opt_rate")]
    video: Option<Money>,
    #[serde(default)]
    source: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use FacilityCapCategory::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn checked_in_fcc_2024_preset_has_the_order_figures() {
        let t = CapTable::fcc_2024().unwrap();
        assert!(t.name().contains("24-75"));
        assert!(t.source().is_some_and(|s| s.contains("2024-19037")));
        let expected = [
            (Prison, "0.06", "0.16"),
            (LargeJail, "0.06", "0.11"),
            (MediumJail, "0.07", "0.12"),
            (SmallJail, "0.09", "0.14"),
            (VerySmallJail, "0.12", "0.25"),
        ];
        for (cat, audio, video) in expected {
            assert_eq!(t.cap(cat, Service::Audio), Some(m(audio)), "{cat} audio");
            assert_eq!(t.cap(cat, Service::Video), Some(m(video)), "{cat} video");
        }
    }

    #[test]
    fn floats_and_unknown_keys_are_refused() {
        let float = "name = \"x\"\n[caps.prison]\naudio = 0.06\n";
        let err = CapTable::from_toml(float).unwrap_err().to_string();
        assert!(err.contains("quote it"), "{err}");
        let typo = "name = \"x\"\n[caps.prisons]\naudio = \"0.06\"\n";
        assert!(CapTable::from_toml(typo).is_err());
        let neg = "name = \"x\"\n[caps.prison]\naudio = \"-0.06\"\n";
        assert!(CapTable::from_toml(neg).is_err());
        let int = "name = \"x\"\n[caps.prison]\naudio = 1\n";
        assert_eq!(
            CapTable::from_toml(int)
                .unwrap()
                .cap(Prison, Service::Audio),
            Some(m("1"))
        );
        let partial = CapTable::from_toml("name = \"x\"\n").unwrap();
        assert_eq!(partial.cap(SmallJail, Service::Video), None);
    }

    #[test]
    fn checked_in_fcc_2025_preset_has_the_figures_and_names_their_sources() {
        let t = CapTable::fcc_2025().unwrap();
        assert!(t.name().contains("25-75"));
        assert_eq!(t.starts(), NaiveDate::from_ymd_opt(2026, 4, 6));
        assert_eq!(t.facility_charge_per_minute(), Some(m("0.02")));
        let expected = [
            (Prison, "0.11", "0.25"),
            (LargeJail, "0.10", "0.19"),
            (MediumJail, "0.12", "0.19"),
            (SmallJail, "0.13", "0.21"),
            (VerySmallJail, "0.15", "0.25"),
            (ExtremelySmallJail, "0.19", "0.44"),
        ];
        for (cat, audio, video) in expected {
            assert_eq!(t.cap(cat, Service::Audio), Some(m(audio)), "{cat} audio");
            assert_eq!(t.cap(cat, Service::Video), Some(m(video)), "{cat} video");
            assert!(
                t.tier_source(cat).is_some_and(|s| s.contains("25-75")),
                "{cat}"
            );
        }
    }

    #[test]
    fn the_table_in_force_changes_on_the_compliance_date() {
        let s = CapSchedule::fcc().unwrap();
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert!(
            s.in_force(day(2024, 11, 18)).is_none(),
            "nothing before 24-75"
        );
        let before = s.in_force(day(2026, 4, 5)).unwrap();
        assert!(before.name().contains("24-75"));
        assert!(s
            .next_after(day(2026, 4, 5))
            .unwrap()
            .name()
            .contains("25-75"));
        let after = s.in_force(day(2026, 4, 6)).unwrap();
        assert!(after.name().contains("25-75"));
        assert!(s.next_after(day(2026, 4, 6)).is_none());
        // An extremely small jail under 24-75 is a very small jail.
        assert_eq!(
            before.cap(ExtremelySmallJail, Service::Audio),
            Some(m("0.12"))
        );
        assert_eq!(
            after.cap(ExtremelySmallJail, Service::Audio),
            Some(m("0.19"))
        );
        // Two tables from one day are refused; so is a date that is not one.
        let a = CapTable::new("a").effective_from(day(2030, 1, 1));
        let b = CapTable::new("b").effective_from(day(2030, 1, 1));
        assert!(matches!(
            CapSchedule::new(vec![a, b]),
            Err(CapError::SameDay(..))
        ));
        let bad = "name = \"x\"\neffective_from = \"April 6\"\n";
        assert!(CapTable::from_toml(bad)
            .unwrap_err()
            .to_string()
            .contains("April 6"));
    }

    #[test]
    fn a_schedule_loads_from_files_and_names_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("state.toml");
        std::fs::write(
            &good,
            "name = \"State PUC\"\neffective_from = \"2027-01-01\"\n[caps.prison]\naudio = \"0.05\"\n",
        )
        .unwrap();
        let s = CapSchedule::from_files(&[&good]).unwrap();
        let t = s
            .in_force(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap())
            .unwrap();
        assert_eq!(t.cap(Prison, Service::Audio), Some(m("0.05")));
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "name = 1\n").unwrap();
        let err = CapSchedule::from_files(&[&good, &broken])
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken.toml"), "{err}");
    }

    #[test]
    fn jail_tiers_by_adp() {
        assert_eq!(FacilityCapCategory::jail_by_adp(0), ExtremelySmallJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(49), ExtremelySmallJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(50), VerySmallJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(99), VerySmallJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(100), SmallJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(349), SmallJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(350), MediumJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(999), MediumJail);
        assert_eq!(FacilityCapCategory::jail_by_adp(1000), LargeJail);
        assert_eq!("Large_Jail".parse::<FacilityCapCategory>(), Ok(LargeJail));
        assert!("county".parse::<FacilityCapCategory>().is_err());
    }
}
