//! E.164 numbers: normalization of what people and handsets dial, without allocating.
//!
//! [`E164`] keeps its digits inline (`[u8; 16]` + length), so it is `Copy`, and
//! [`normalize_e164`] never touches the heap: the whole rating hot path
//! (normalize → deck lookup → tariff) is allocation-free.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Most digits an E.164 number may have (ITU-T E.164 §6).
pub const MAX_DIGITS: usize = 15;
/// Fewest digits we accept for a full number (country code included). Shorter strings are
/// service codes or typos, never a rateable destination.
pub const MIN_DIGITS: usize = 7;
/// Room for the digits as dialed: an international prefix (`011`) plus a full number, and
/// a little slack so an over-long input is reported as [`NumberError::TooLong`].
const DIALED_CAP: usize = 24;

/// Why a dialed string is not an E.164 number. Carries no digits of the number itself, so
/// it can be logged (numbers are personal data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("the number is empty")]
    Empty,
    #[error("character {ch:?} at position {position} is not allowed in a phone number")]
    InvalidCharacter { ch: char, position: usize },
    #[error("'+' may only appear at the start of a number")]
    MisplacedPlus,
    #[error("the number has {digits} digits; at least {MIN_DIGITS} are needed")]
    TooShort { digits: usize },
    #[error("the number has {digits} digits or more; E.164 allows at most {MAX_DIGITS}")]
    TooLong { digits: usize },
    #[error("a country code cannot start with 0")]
    CountryCodeZero,
    #[error("a North American (+1) number has 11 digits, this one has {digits}")]
    NanpLength { digits: usize },
    #[error("a national number in the +1 plan has 10 digits, this one has {digits}")]
    NationalLength { digits: usize },
    #[error("the default country code must be 1 to 3 digits not starting with 0")]
    BadDefaultCountryCode,
    #[error("expected the canonical form: '+' followed by digits")]
    NotCanonical,
}

/// A normalized E.164 number: `+` then 7 to 15 digits, the first not `0`.
///
/// Stored inline (no heap), `Copy`. Serialized as its `+` form, e.g. `"+15551234567"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164 {
    /// `buf[0] == b'+'`, `buf[1..len]` are ASCII digits.
    buf: [u8; MAX_DIGITS + 1],
    len: u8,
}

impl E164 {
    /// The number with its `+`: `"+15551234567"`.
    #[inline]
    pub fn as_str(&self) -> &str {
        ascii(&self.buf[..usize::from(self.len)])
    }

    /// The digits without `+`: `"15551234567"` (what the rate deck is keyed on).
    #[inline]
    pub fn digits(&self) -> &str {
        ascii(&self.buf[1..usize::from(self.len)])
    }

    /// Builds from digits already stripped of prefixes and separators, applying the final
    /// E.164 checks (length, country code, NANP length).
    fn from_digits(digits: &[u8]) -> Result<E164, NumberError> {
        let n = digits.len();
        if n > MAX_DIGITS {
            return Err(NumberError::TooLong { digits: n });
        }
        if n < MIN_DIGITS {
            return Err(NumberError::TooShort { digits: n });
        }
        if digits[0] == b'0' {
            return Err(NumberError::CountryCodeZero);
        }
        if digits[0] == b'1' && n != 11 {
            return Err(NumberError::NanpLength { digits: n });
        }
        let mut buf = [0u8; MAX_DIGITS + 1];
        buf[0] = b'+';
        for (dst, &src) in buf[1..].iter_mut().zip(digits) {
            *dst = src;
        }
        Ok(E164 {
            buf,
            len: (n + 1) as u8,
        })
    }
}

/// `bytes` as `&str`. Only ASCII digits and `+` are ever stored, so the check is a fast
/// formality and the empty fallback unreachable; it keeps the code free of `unsafe`.
#[inline]
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.as_str())
    }
}

/// Strict parse of the canonical form only (`+` and digits), as stored and serialized.
/// Use [`normalize_e164`] for what people dial.
impl FromStr for E164 {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<E164, NumberError> {
        let rest = s.strip_prefix('+').ok_or(NumberError::NotCanonical)?;
        let mut d = DigitBuf::new();
        for (i, c) in rest.char_indices() {
            if !c.is_ascii_digit() {
                return Err(NumberError::InvalidCharacter {
                    ch: c,
                    position: i + 1,
                });
            }
            d.push(c as u8)?;
        }
        E164::from_digits(d.as_slice())
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<E164, D::Error> {
        let s = <&str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A fixed buffer of dialed digits.
struct DigitBuf {
    buf: [u8; DIALED_CAP],
    len: usize,
}

impl DigitBuf {
    fn new() -> Self {
        DigitBuf {
            buf: [0; DIALED_CAP],
            len: 0,
        }
    }

    fn push(&mut self, digit: u8) -> Result<(), NumberError> {
        let slot = self
            .buf
            .get_mut(self.len)
            .ok_or(NumberError::TooLong { digits: DIALED_CAP })?;
        *slot = digit;
        self.len += 1;
        Ok(())
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Turns a dialed number into E.164.
///
/// Accepted, in this order:
/// 1. Optional URI wrapping: `<…>`, `tel:` (parameters after `;` dropped) and
///    `sip:`/`sips:` (the user part before `@`, parameters after `;` dropped).
/// 2. Visual separators are ignored: spaces, tabs, `-`, `.`, `(`, `)`. Anything else but
///    digits and a leading `+` is [`NumberError::InvalidCharacter`].
/// 3. `+` → the digits are already international.
/// 4. `00` → international prefix (most of the world); `011` → international prefix when
///    `default_country_code` is `1` (NANP). In other plans `011…` is a national number.
/// 5. Otherwise the number is national to `default_country_code`:
///    - `1` (NANP): 10 digits get `1` prepended; 11 digits starting with `1` are taken
///      as already carrying the country code (`15551234567` = `+15551234567`); other
///      lengths are [`NumberError::NationalLength`] (7-digit local dialing is refused:
///      the area code is unknown here).
///    - any other country code: one national trunk prefix `0` is dropped
///      (`020 7946 0000` in `44` → `+442079460000`), then the country code is prepended.
/// 6. The result must have 7–15 digits, must not start with `0`, and a `+1` number must
///    have exactly 11 digits.
pub fn normalize_e164(input: &str, default_country_code: &str) -> Result<E164, NumberError> {
    let cc = check_country_code(default_country_code)?;
    let (plus, dialed) = collect_digits(strip_uri(input.trim()))?;
    let d = dialed.as_slice();
    if plus {
        return E164::from_digits(d);
    }
    if let Some(intl) = strip_international_prefix(d, cc) {
        return E164::from_digits(intl);
    }
    national_to_e164(d, cc)
}

fn check_country_code(cc: &str) -> Result<&[u8], NumberError> {
    let b = cc.as_bytes();
    let ok = (1..=3).contains(&b.len()) && b[0] != b'0' && b.iter().all(u8::is_ascii_digit);
    if ok {
        Ok(b)
    } else {
        Err(NumberError::BadDefaultCountryCode)
    }
}

/// `<sip:+1555…@host;user=phone>` → `+1555…`; `tel:+1-555…;ext=1` → `+1-555…`.
fn strip_uri(s: &str) -> &str {
    let s = s
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s);
    let (scheme_len, is_sip) = match scheme_of(s) {
        Some(found) => found,
        None => return s,
    };
    let mut rest = &s[scheme_len..];
    if is_sip {
        rest = rest.split('@').next().unwrap_or(rest);
    }
    rest.split(';').next().unwrap_or(rest)
}

/// Length of a recognised scheme prefix and whether it is SIP (has a host part).
fn scheme_of(s: &str) -> Option<(usize, bool)> {
    let lower_starts = |p: &str| {
        s.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    };
    if lower_starts("tel:") {
        Some((4, false))
    } else if lower_starts("sip:") {
        Some((4, true))
    } else if lower_starts("sips:") {
        Some((5, true))
    } else {
        None
    }
}

/// Digits of `s`, ignoring separators; whether it started with `+`.
fn collect_digits(s: &str) -> Result<(bool, DigitBuf), NumberError> {
    let mut digits = DigitBuf::new();
    let mut plus = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'0'..=b'9' => digits.push(b)?,
            b'+' if i == 0 => plus = true,
            b'+' => return Err(NumberError::MisplacedPlus),
            b' ' | b'\t' | b'-' | b'.' | b'(' | b')' => {}
            // Every byte before `i` was ASCII, so `i` is a char boundary.
            _ => return Err(invalid_at(s, i)),
        }
    }
    if digits.len == 0 {
        return Err(NumberError::Empty);
    }
    Ok((plus, digits))
}

fn invalid_at(s: &str, position: usize) -> NumberError {
    let ch = s
        .get(position..)
        .and_then(|r| r.chars().next())
        .unwrap_or('?');
    NumberError::InvalidCharacter { ch, position }
}

fn strip_international_prefix<'a>(d: &'a [u8], cc: &[u8]) -> Option<&'a [u8]> {
    if cc == b"1" {
        if let Some(rest) = d.strip_prefix(b"011") {
            return Some(rest);
        }
    }
    d.strip_prefix(b"00")
}

fn national_to_e164(d: &[u8], cc: &[u8]) -> Result<E164, NumberError> {
    if cc == b"1" {
        return match d.len() {
            10 => join(b"1", d),
            11 if d[0] == b'1' => E164::from_digits(d),
            n => Err(NumberError::NationalLength { digits: n }),
        };
    }
    let national = d.strip_prefix(b"0").unwrap_or(d);
    join(cc, national)
}

fn join(cc: &[u8], national: &[u8]) -> Result<E164, NumberError> {
    let total = cc.len() + national.len();
    if total > MAX_DIGITS {
        return Err(NumberError::TooLong { digits: total });
    }
    let mut d = [0u8; MAX_DIGITS];
    d[..cc.len()].copy_from_slice(cc);
    d[cc.len()..total].copy_from_slice(national);
    E164::from_digits(&d[..total])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String, NumberError> {
        normalize_e164(s, "1").map(|e| e.as_str().to_owned())
    }

    #[test]
    fn accepts_common_nanp_forms() {
        for s in [
            "+15551234567",
            "15551234567",
            "5551234567",
            "(555) 123-4567",
            "555.123.4567",
            "+1 555 123 4567",
            "1-555-123-4567",
            "tel:+1-555-123-4567;ext=99",
            "sip:+15551234567@trunk.example;user=phone",
            "<sips:5551234567@10.0.0.1:5061>",
            "  SIP:15551234567@x  ",
        ] {
            assert_eq!(n(s).as_deref(), Ok("+15551234567"), "{s}");
        }
    }

    #[test]
    fn international_prefixes() {
        assert_eq!(n("011 44 20 7946 0000").as_deref(), Ok("+442079460000"));
        assert_eq!(n("0044 20 7946 0000").as_deref(), Ok("+442079460000"));
        let uk = |s| normalize_e164(s, "44").map(|e| e.as_str().to_owned());
        assert_eq!(uk("020 7946 0000").as_deref(), Ok("+442079460000"));
        assert_eq!(uk("00 1 555 123 4567").as_deref(), Ok("+15551234567"));
        assert_eq!(uk("0113 496 0000").as_deref(), Ok("+441134960000"));
    }

    #[test]
    fn digits_and_display() {
        let e = normalize_e164("+33 1 23 45 67 89", "1").unwrap();
        assert_eq!(e.digits(), "33123456789");
        assert_eq!(e.to_string(), "+33123456789");
        assert_eq!(format!("{e:?}"), "E164(+33123456789)");
    }

    #[test]
    fn rejects_garbage() {
        use NumberError::*;
        assert_eq!(n(""), Err(Empty));
        assert_eq!(n("   "), Err(Empty));
        assert_eq!(n("sip:@host"), Err(Empty));
        assert_eq!(
            n("555-CALL-NOW"),
            Err(InvalidCharacter {
                ch: 'C',
                position: 4
            })
        );
        assert_eq!(
            n("*67 5551234567"),
            Err(InvalidCharacter {
                ch: '*',
                position: 0
            })
        );
        assert_eq!(n("1+5551234567"), Err(MisplacedPlus));
        assert_eq!(n("+44123"), Err(TooShort { digits: 5 }));
        assert_eq!(n("+4412345678901234"), Err(TooLong { digits: 16 }));
        assert_eq!(n(&"9".repeat(40)), Err(TooLong { digits: 24 }));
        assert_eq!(n("+0441234567"), Err(CountryCodeZero));
        assert_eq!(n("+1555123456"), Err(NanpLength { digits: 10 }));
        assert_eq!(n("1234567"), Err(NationalLength { digits: 7 }));
        assert_eq!(n("25551234567"), Err(NationalLength { digits: 11 }));
        assert_eq!(
            normalize_e164("5551234567", "01"),
            Err(BadDefaultCountryCode)
        );
        assert_eq!(normalize_e164("5551234567", ""), Err(BadDefaultCountryCode));
        assert_eq!(
            normalize_e164("5551234567", "1a"),
            Err(BadDefaultCountryCode)
        );
        assert!(
            n("５５５１２３４５６７").is_err(),
            "non-ASCII digits refused"
        );
    }

    #[test]
    fn serde_and_from_str_are_strict() {
        let e: E164 = serde_json::from_str("\"+15551234567\"").unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"+15551234567\"");
        assert!(serde_json::from_str::<E164>("\"5551234567\"").is_err());
        assert!("+1 555 123 4567".parse::<E164>().is_err());
        assert_eq!(
            "15551234567".parse::<E164>(),
            Err(NumberError::NotCanonical)
        );
        assert_eq!(
            "+442079460000".parse::<E164>().unwrap().digits(),
            "442079460000"
        );
    }
}
