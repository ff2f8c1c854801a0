//! Exact money.
//!
//! Every amount in sallyport is a [`Money`]: a `rust_decimal::Decimal` that never carries
//! more than [`SCALE`] decimal places. In the database an amount is stored as a signed
//! 64-bit integer of *minor units* (1/10,000 of the currency unit), in SQLite and PostgreSQL
//! alike: sqlx cannot bind `Decimal` to SQLite, a `DECIMAL` column in SQLite silently
//! becomes a floating REAL, and a TEXT amount compares as text. 1/10,000 keeps a
//! $0.021/min rate and a 6-second increment of it ($0.0021) exact.
//!
//! # The one rounding rule
//!
//! Amounts that come from people (deposits, purchases, rates) are taken exactly or refused
//! ([`Money::exact`]); nothing a person typed is ever rounded. The only computed amounts
//! are charges (a per-minute rate times an increment's length), and they are rounded in
//! exactly one place, [`Money::round_charge`]: **toward zero, to 1/10,000**. Rounding toward
//! zero means a charge never exceeds the exact price, so a plan at a regulatory cap can
//! never bill above the cap through rounding.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::{Add, Neg, Sub};
use std::str::FromStr;

/// Decimal places kept, and the exponent of the minor unit stored in the database.
pub const SCALE: u32 = 4;
/// Minor units in one currency unit (10^SCALE).
pub const MINOR_PER_UNIT: i64 = 10_000;

/// An exact amount of money with at most [`SCALE`] decimal places.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount {0} has more than {SCALE} decimal places")]
    TooPrecise(String),
    #[error("amount {0} is out of range")]
    OutOfRange(String),
    #[error("'{0}' is not a decimal amount")]
    NotANumber(String),
}

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Takes `d` exactly, or refuses it if it has more than [`SCALE`] decimal places or
    /// does not fit the database's minor-unit integer.
    pub fn exact(d: Decimal) -> Result<Money, MoneyError> {
        let n = d.normalize();
        if n.scale() > SCALE {
            return Err(MoneyError::TooPrecise(d.to_string()));
        }
        let m = Money(n);
        m.checked_minor()
            .ok_or_else(|| MoneyError::OutOfRange(d.to_string()))?;
        Ok(m)
    }

    /// THE rounding rule of sallyport: a computed charge is rounded toward zero to
    /// 1/10,000. Nothing else in the code base rounds money.
    ///
    /// ```
    /// use rust_decimal::Decimal;
    /// use sallyport::money::Money;
    /// // $0.021 per minute for a 7-second increment is $0.00245, charged as $0.0024.
    /// let exact = Decimal::new(21, 3) * Decimal::from(7) / Decimal::from(60);
    /// assert_eq!(Money::round_charge(exact).to_minor(), 24);
    /// assert_eq!(Money::round_charge(exact).to_string(), "0.0024");
    /// ```
    pub fn round_charge(d: Decimal) -> Money {
        Money(
            d.round_dp_with_strategy(SCALE, RoundingStrategy::ToZero)
                .normalize(),
        )
    }

    /// An amount from its minor units (as stored in the database).
    pub fn from_minor(minor: i64) -> Money {
        Money(Decimal::new(minor, SCALE).normalize())
    }

    /// The amount in minor units. Exact: a `Money` never has more than [`SCALE`] places.
    /// Saturates only for amounts beyond ±922 trillion, which [`Money::exact`] refuses.
    pub fn to_minor(self) -> i64 {
        self.checked_minor()
            .unwrap_or(if self.0.is_sign_negative() {
                i64::MIN
            } else {
                i64::MAX
            })
    }

    fn checked_minor(self) -> Option<i64> {
        let scaled = self.0.checked_mul(Decimal::from(MINOR_PER_UNIT))?;
        i64::try_from(scaled.trunc()).ok()
    }

    pub fn decimal(self) -> Decimal {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    pub fn is_positive(self) -> bool {
        self.0.is_sign_positive() && !self.0.is_zero()
    }

    /// `self * n`, exact (used for the cost of `n` increments).
    pub fn times(self, n: u64) -> Money {
        Money((self.0 * Decimal::from(n)).normalize())
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money((self.0 + rhs.0).normalize())
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money((self.0 - rhs.0).normalize())
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(-self.0)
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

/// Shown with at least two decimal places: `12.50`, `0.0021`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = self.0;
        if d.scale() < 2 {
            d.rescale(2);
        }
        write!(f, "{d}")
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Money, MoneyError> {
        let d = Decimal::from_str_exact(s.trim()).map_err(|_| MoneyError::NotANumber(s.into()))?;
        Money::exact(d)
    }
}

/// Serialized as a JSON string (`"12.50"`) so no JSON reader turns it into a float.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Accepts a JSON string (`"12.50"`) or a JSON number (`12.5`); refuses more than
/// [`SCALE`] decimal places instead of rounding. A JSON number arrives as an `f64`; it is
/// taken by its shortest round-trip decimal form (what the sender wrote, for up to 15
/// significant digits), never by its binary expansion.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        d.deserialize_any(MoneyVisitor)
    }
}

struct MoneyVisitor;

impl serde::de::Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal amount such as \"12.50\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Money, E> {
        Money::exact(Decimal::from(v)).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Money, E> {
        Money::exact(Decimal::from(v)).map_err(E::custom)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
        if !v.is_finite() {
            return Err(E::custom("amount must be a finite number"));
        }
        format!("{v}").parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn minor_units_round_trip() {
        for s in [
            "0",
            "0.0001",
            "0.021",
            "12.5",
            "-3.0002",
            "922337203685.4775",
        ] {
            let m: Money = s.parse().unwrap();
            assert_eq!(Money::from_minor(m.to_minor()), m, "{s}");
        }
        assert_eq!(Money::from_minor(210).to_string(), "0.021");
        assert_eq!(Money::from_minor(20_000).to_string(), "2.00");
    }

    #[test]
    fn exact_refuses_sub_minor_amounts() {
        assert!(matches!(
            Money::exact(dec!(0.00001)),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(
            Money::exact(dec!(1.10000)).is_ok(),
            "trailing zeros are not precision"
        );
        assert!(matches!(
            Money::exact(dec!(1e20)),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!("abc".parse::<Money>().is_err());
    }

    #[test]
    fn charges_round_toward_zero() {
        assert_eq!(Money::round_charge(dec!(0.00245)).to_minor(), 24);
        assert_eq!(Money::round_charge(dec!(0.00249999)).to_minor(), 24);
        assert_eq!(Money::round_charge(dec!(0.0021)).to_minor(), 21);
    }

    #[test]
    fn json_is_a_string_and_refuses_floats_beyond_scale() {
        let m: Money = serde_json::from_str("\"10.25\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"10.25\"");
        let n: Money = serde_json::from_str("10.5").unwrap();
        assert_eq!(n.to_minor(), 105_000);
        assert!(serde_json::from_str::<Money>("\"0.00001\"").is_err());
    }
}
