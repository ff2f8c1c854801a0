//! Calling hours in the facility's time zone.

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("'{}' is not an IANA time zone", crate::text::quote(.0))]
    BadZone(String),
    #[error("'{}' is not a time of day HH:MM", crate::text::quote(.0))]
    BadTime(String),
}

/// Parses an IANA zone name.
pub fn zone(name: &str) -> Result<Tz, HoursError> {
    name.parse::<Tz>()
        .map_err(|_| HoursError::BadZone(name.to_string()))
}

/// Parses `HH:MM`.
pub fn time_of_day(s: &str) -> Result<NaiveTime, HoursError> {
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| HoursError::BadTime(s.to_string()))
}

/// Calling hours of one facility: a daily window in local time. A window whose end is
/// before its start runs past midnight (22:00–06:00); equal ends mean all day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingHours {
    pub zone: Tz,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl CallingHours {
    pub fn parse(zone_name: &str, start: &str, end: &str) -> Result<CallingHours, HoursError> {
        Ok(CallingHours {
            zone: zone(zone_name)?,
            start: time_of_day(start)?,
            end: time_of_day(end)?,
        })
    }

    /// True when `now` falls inside the window, in the facility's local time.
    pub fn allows(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.zone).time();
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => local >= self.start && local < self.end,
            std::cmp::Ordering::Greater => local >= self.start || local < self.end,
        }
    }
}

/// The facility-local calendar date of `now`, as `YYYY-MM-DD`.
pub fn local_day(zone: Tz, now: DateTime<Utc>) -> String {
    now.with_timezone(&zone).format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn window_in_local_time() {
        let h = CallingHours::parse("America/Chicago", "07:00", "22:00").unwrap();
        // 12:30 UTC in January is 06:30 in Chicago: closed; 13:30 UTC is 07:30: open.
        assert!(!h.allows(Utc.with_ymd_and_hms(2026, 1, 10, 12, 30, 0).unwrap()));
        assert!(h.allows(Utc.with_ymd_and_hms(2026, 1, 10, 13, 30, 0).unwrap()));
        // 03:59 UTC is 21:59 the day before: open; 04:00 UTC is 22:00: closed.
        assert!(h.allows(Utc.with_ymd_and_hms(2026, 1, 11, 3, 59, 0).unwrap()));
        assert!(!h.allows(Utc.with_ymd_and_hms(2026, 1, 11, 4, 0, 0).unwrap()));
    }

    #[test]
    fn overnight_and_all_day() {
        let h = CallingHours::parse("UTC", "22:00", "06:00").unwrap();
        assert!(h.allows(Utc.with_ymd_and_hms(2026, 1, 10, 23, 0, 0).unwrap()));
        assert!(!h.allows(Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap()));
        let all = CallingHours::parse("UTC", "00:00", "00:00").unwrap();
        assert!(all.allows(Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap()));
        assert!(CallingHours::parse("Mars/Base", "00:00", "00:00").is_err());
        assert!(CallingHours::parse("UTC", "25:00", "00:00").is_err());
    }

    #[test]
    fn local_day_crosses_midnight_by_zone() {
        let t = Utc.with_ymd_and_hms(2026, 1, 11, 3, 0, 0).unwrap();
        assert_eq!(local_day(zone("America/Chicago").unwrap(), t), "2026-01-10");
        assert_eq!(local_day(zone("UTC").unwrap(), t), "2026-01-11");
    }
}
