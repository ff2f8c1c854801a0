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
//! ([`Money::exact`], [`Money::parse_amount`]); nothing a person typed is ever rounded. The only computed amounts
//! are charges (a per-minute rate times an increment's length), and they are rounded in
//! exactly one place, [`Money::round_charge`]: **toward zero, to 1/10,000**. Rounding toward
//! zero means a charge never exceeds the exact price, so a plan at a regulatory cap can
//! never bill above the cap through rounding.

//!
//! # The one written form
//!
//! An amount is written one way, on the way in and on the way out: digits, then
//! optionally a point and 1 to [`SCALE`] decimals; no sign, no spaces, no leading zeros
//! (`0`, `0.5`, `12.50`, `0.0021`, `300`). [`Money::parse_amount`] is the only parser of
//! amounts people send (the API's JSON bodies through `Deserialize`, rate-plan CSV, the
//! CLI's `--amount`); anything else (`"  5.00"`, `"5.00\n"`, `"+0.5"`, `"05.00"`, `"5."`,
//! `".5"`, `"1e2"`, a fifth decimal) is refused, never repaired. In a rate-plan CSV file
//! the spaces and tabs around an unquoted field are the file's layout, not the amount's
//! (`local, audio, 0.05, 60`), as the CSV reader documents (`rating::csvrows`); what is
//! inside the field — or inside the quotes of a quoted one, `" 0.05"` — must be the
//! written form exactly. In JSON an amount is a
//! string: a JSON number is refused, because a reader may already have turned it into a
//! binary float (`9.999999999999999999` arrives as `10.0`) and the exact value is lost
//! before we see it. What [`Money`] prints (`Display`, `Serialize`) is in this form too,
//! with at least two decimals (`12.50`); `FromStr` reads it back, with a leading `-` for
//! the negative amounts that statements and system accounts show.

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

/// How an amount must be written, for error messages.
pub const AMOUNT_FORM: &str =
    "an amount is a decimal string: digits, optionally a point and 1 to 4 decimals, \
     no sign, spaces or leading zeros (\"12.50\", \"0.0021\", \"300\")";

/// Every message about an amount a client sent starts with this, so the API can tell an
/// amount refused while a JSON body was read (`invalid_amount`) from other bad JSON.
pub const INVALID_AMOUNT: &str = "invalid amount";

/// Most integer digits an amount can have: the minor-unit integer holds
/// 922,337,203,685,477.5807.
const MAX_INTEGER_DIGITS: usize = 15;

/// Why an amount was refused. Messages quote at most the first 24 characters of what was
/// sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{INVALID_AMOUNT}: {0} has more than {SCALE} decimal places")]
    TooPrecise(String),
    #[error("{INVALID_AMOUNT}: {0} is out of range")]
    OutOfRange(String),
    #[error("{INVALID_AMOUNT}: {0} is not in the one written form; {AMOUNT_FORM}")]
    NotCanonical(String),
    #[error("{INVALID_AMOUNT}: amounts are JSON strings, not JSON numbers; {AMOUNT_FORM}")]
    JsonNumber,
}

/// `s` quoted for an error message, cut after 24 characters.
fn quoted(s: &str) -> String {
    const SHOWN: usize = 24;
    match s.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{:?}...", &s[..at]),
        None => format!("{s:?}"),
    }
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

impl Money {
    /// THE parser of amounts people send: the one written form (see the module doc),
    /// exactly, or an error that says what the form is. Never negative.
    ///
    /// ```
    /// use sallyport::money::Money;
    /// assert_eq!(Money::parse_amount("12.50")?.to_minor(), 125_000);
    /// for lenient in ["  5.00", "5.00\n", "+0.5", "05.00", "5.", ".5", "-1", "1e2"] {
    ///     assert!(Money::parse_amount(lenient).is_err(), "{lenient:?}");
    /// }
    /// assert!(Money::parse_amount("0.00001").is_err(), "a fifth decimal is refused, not rounded");
    /// # Ok::<(), sallyport::money::MoneyError>(())
    /// ```
    pub fn parse_amount(s: &str) -> Result<Money, MoneyError> {
        let not_canonical = || MoneyError::NotCanonical(quoted(s));
        let (int, frac) = match s.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (s, None),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let int_ok = digits(int) && (int == "0" || !int.starts_with('0'));
        if !int_ok || !frac.is_none_or(digits) {
            return Err(not_canonical());
        }
        if frac.is_some_and(|f| f.len() > SCALE as usize) {
            return Err(MoneyError::TooPrecise(quoted(s)));
        }
        if int.len() > MAX_INTEGER_DIGITS {
            return Err(MoneyError::OutOfRange(quoted(s)));
        }
        // At most 15 digits, a point and 4 decimals: always a Decimal.
        let d = Decimal::from_str_exact(s).map_err(|_| not_canonical())?;
        Money::exact(d).map_err(|e| match e {
            MoneyError::OutOfRange(_) => MoneyError::OutOfRange(quoted(s)),
            other => other,
        })
    }
}

/// The written form of [`Money::parse_amount`], with a leading `-` for negative amounts
/// (what `Display` prints for a debit or a system account's balance).
impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Money, MoneyError> {
        match s.strip_prefix('-') {
            Some(rest) if !rest.starts_with(['-', '+']) => Ok(-Money::parse_amount(rest)?),
            _ => Money::parse_amount(s),
        }
    }
}

/// Serialized as a JSON string (`"12.50"`) so no JSON reader turns it into a float.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads a JSON string in the written form ([`Money::parse_amount`]); refuses a JSON
/// number ([`MoneyError::JsonNumber`]): by the time a number reaches us it may be an `f64`
/// already rounded (`9.999999999999999999` is `10.0`), so no number is ever taken.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        d.deserialize_any(MoneyVisitor)
    }
}

struct MoneyVisitor;

impl serde::de::Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount as a decimal string such as \"12.50\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
        Money::parse_amount(v).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Money, E> {
        Err(E::custom(MoneyError::JsonNumber))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Money, E> {
        Err(E::custom(MoneyError::JsonNumber))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Money, E> {
        Err(E::custom(MoneyError::JsonNumber))
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
    fn json_is_a_string_and_numbers_are_refused() {
        let m: Money = serde_json::from_str("\"10.25\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"10.25\"");
        assert!(serde_json::from_str::<Money>("\"0.00001\"").is_err());
        // The issue's numbers: each would have been rounded on the way in.
        for number in [
            "10.5",
            "10",
            "9.999999999999999999",
            "0.00009999999999999999",
            "1e2",
        ] {
            let e = serde_json::from_str::<Money>(number)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(INVALID_AMOUNT) && e.contains("not JSON numbers"),
                "{number}: {e}"
            );
        }
    }

    /// The lenient forms the gateway used to accept, each refused with a message that
    /// starts with [`INVALID_AMOUNT`] and says what the form is.
    #[test]
    fn only_the_written_form_is_accepted() {
        for lenient in [
            "  5.00", "5.00\n", "+0.5", "05.00", "5.", ".5", "", ".", "-5", "- 5", "5 ", "1e2",
            "1E2", "0x10", "1,000.00", "1_000", "00", "007", "5..0", "5.0.0", "NaN", "inf",
            "\u{0665}", "5\u{0}", "--5", "-+5",
        ] {
            let e = Money::parse_amount(lenient).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with(INVALID_AMOUNT), "{lenient:?}: {text}");
            assert!(
                matches!(e, MoneyError::NotCanonical(_)),
                "{lenient:?}: {e:?}"
            );
        }
        for too_fine in ["0.00001", "1.10000", "0.00009999999999999999"] {
            assert!(
                matches!(
                    Money::parse_amount(too_fine),
                    Err(MoneyError::TooPrecise(_))
                ),
                "{too_fine}: refused, never rounded"
            );
        }
        assert!(matches!(
            Money::parse_amount("9223372036854775807"),
            Err(MoneyError::OutOfRange(_))
        ));
        let huge = "9".repeat(10_000_000);
        let e = Money::parse_amount(&huge).unwrap_err().to_string();
        assert!(
            e.len() < 400,
            "the message quotes a bounded part: {} bytes",
            e.len()
        );
        for (ok, minor) in [
            ("0", 0),
            ("0.5", 5_000),
            ("12.50", 125_000),
            ("0.0021", 21),
            ("300", 3_000_000),
        ] {
            assert_eq!(Money::parse_amount(ok).unwrap().to_minor(), minor, "{ok}");
        }
        assert_eq!("-3.50".parse::<Money>().unwrap().to_minor(), -35_000);
        assert!("--3".parse::<Money>().is_err() && "-+3".parse::<Money>().is_err());
    }

    proptest::proptest! {
        /// Every amount in the written form reads back to exactly the amount it writes,
        /// and what `Display` prints is again in the written form.
        #[test]
        fn canonical_strings_roundtrip(int in 0u64..1_000_000_000_000, frac in proptest::option::of("[0-9]{1,4}")) {
            let s = match &frac { Some(f) => format!("{int}.{f}"), None => int.to_string() };
            let m = Money::parse_amount(&s).unwrap();
            let expect = Decimal::from_str_exact(&s).unwrap();
            proptest::prop_assert_eq!(m.decimal(), expect.normalize());
            let shown = m.to_string();
            proptest::prop_assert_eq!(Money::parse_amount(&shown).unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        }

        /// Decorating a canonical amount in any of the issue's lenient ways is refused.
        #[test]
        fn decorated_amounts_are_refused(int in 0u64..1_000_000, frac in "[0-9]{1,4}", how in 0usize..7) {
            let s = format!("{int}.{frac}");
            let bad = match how {
                0 => format!(" {s}"),
                1 => format!("{s}\n"),
                2 => format!("+{s}"),
                3 => format!("0{s}"),
                4 => format!("{int}."),
                5 => format!(".{frac}"),
                _ => format!("{s}0000"),
            };
            proptest::prop_assert!(Money::parse_amount(&bad).is_err(), "{:?}", bad);
        }
    }
}
