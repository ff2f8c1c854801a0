//! Exact rates from config: a rate is a quoted decimal string (`"0.021"`) or an integer.
//! TOML floats are binary (`f64`) and are refused with a message saying how to fix them.

use crate::money::Money;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// Parses a rate exactly, in the one written form of amounts ([`Money::parse_amount`]:
/// never negative, at most 4 decimal places).
pub(super) fn parse_rate(s: &str) -> Result<Money, String> {
    Money::parse_amount(s).map_err(|e| e.to_string())
}

/// `deserialize_with` for a required rate.
pub(super) fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
    d.deserialize_any(RateVisitor)
}

/// `deserialize_with` for an optional rate (use with `#[serde(default)]`).
pub(super) fn opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Money>, D::Error> {
    d.deserialize_any(RateVisitor).map(Some)
}

struct RateVisitor;

impl Visitor<'_> for RateVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a rate as a quoted decimal string such as \"0.021\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
        parse_rate(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
        parse_rate(&v.to_string()).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
        parse_rate(&v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
        Err(E::custom(format!(
            "rate {v} is written as a TOML float, which is inexact; quote it: \"{v}\""
        )))
    }
}
