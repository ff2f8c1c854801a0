//! Regulatory per-minute rate caps by facility category and service.
//!
//! A [`CapTable`] is data, not code: the checked-in preset
//! `config/fcc_caps_2024.toml` (FCC 24-75) is loaded by [`CapTable::fcc_2024`]; operators
//! under other rules (a state PUC order, a later FCC order) load their own with
//! [`CapTable::from_toml`]. A cap applies to every call class (local, domestic,
//! international alike) of its service.

use super::{exact, Service};
use crate::money::Money;
use serde::{Deserialize, Serialize};
use std::fmt;
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
    /// Jail with ADP 0–99.
    VerySmallJail,
}

impl FacilityCapCategory {
    pub const ALL: [FacilityCapCategory; 5] = [
        Self::Prison,
        Self::LargeJail,
        Self::MediumJail,
        Self::SmallJail,
        Self::VerySmallJail,
    ];

    /// The jail tier for an average daily population.
    pub fn jail_by_adp(adp: u32) -> FacilityCapCategory {
        match adp {
            1000.. => Self::LargeJail,
            350..=999 => Self::MediumJail,
            100..=349 => Self::SmallJail,
            _ => Self::VerySmallJail,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prison => "prison",
            Self::LargeJail => "large_jail",
            Self::MediumJail => "medium_jail",
            Self::SmallJail => "small_jail",
            Self::VerySmallJail => "very_small_jail",
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
#[error("unknown facility category `{}` (prison, large_jail, medium_jail, small_jail, very_small_jail)", crate::text::quote(.0))]
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

/// Why a cap table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("rate cap table: {0}")]
    Toml(String),
}

/// Per-minute caps, by facility category and service. A missing cap means "uncapped".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapTable {
    name: String,
    source: Option<String>,
    caps: [[Option<Money>; 2]; 5],
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

    /// The preset of FCC 24-75 (2024), from the checked-in `config/fcc_caps_2024.toml`.
    /// Fails only if that file is broken, which the module's tests rule out.
    pub fn fcc_2024() -> Result<CapTable, CapError> {
        CapTable::from_toml(include_str!("../../config/fcc_caps_2024.toml"))
    }

    /// Parses a table:
    ///
    /// ```toml
    /// name = "FCC 24-75"
    /// source = "https://…"          # optional
    /// [caps.prison]
    /// audio = "0.06"                # per minute, a quoted decimal
    /// video = "0.16"
    /// [caps.large_jail]             # also medium_jail, small_jail, very_small_jail
    /// audio = "0.06"
    /// ```
    pub fn from_toml(text: &str) -> Result<CapTable, CapError> {
        let file: CapFile = toml::from_str(text).map_err(|e| CapError::Toml(e.to_string()))?;
        let mut table = CapTable::new(file.name);
        table.source = file.source;
        for (category, tier) in file.caps.tiers() {
            table.caps[category.index()] = [tier.audio, tier.video];
        }
        Ok(table)
    }

    /// The per-minute cap for a category and service, if any.
    pub fn cap(&self, category: FacilityCapCategory, service: Service) -> Option<Money> {
        self.caps[category.index()][service.index()]
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapFile {
    name: String,
    #[serde(default)]
    source: Option<String>,
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
}

impl CapTiers {
    fn tiers(self) -> [(FacilityCapCategory, TierCaps); 5] {
        use FacilityCapCategory::*;
        [
            (Prison, self.prison),
            (LargeJail, self.large_jail),
            (MediumJail, self.medium_jail),
            (SmallJail, self.small_jail),
            (VerySmallJail, self.very_small_jail),
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
    fn jail_tiers_by_adp() {
        assert_eq!(FacilityCapCategory::jail_by_adp(0), VerySmallJail);
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
