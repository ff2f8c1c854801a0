//! A facility's visiting rules, and the checks a visit request must pass.
//!
//! The rules, as staff set them (`PUT /facilities/{fid}/visiting-rules`):
//!
//! - **windows**: per weekday, times of day in the facility's time zone when visits may
//!   take place (`{"day": "sat", "start": "09:00", "end": "12:00"}`); a visit lies wholly
//!   inside one window, its start and its end read on the facility's clock (so a visit
//!   across a daylight-saving change is judged by the times a visitor sees). Windows do
//!   not run past midnight nor overlap on a day;
//! - **slot lengths**: the lengths a visit may have, in minutes (`[30, 60]`);
//! - **start step**: visits start every `start_step_minutes` from a window's start (a
//!   window from 09:00 with a step of 30 takes starts at 09:00, 09:30, ...);
//! - **minimum notice**: a visit is booked at least `min_notice_minutes` before it starts;
//! - **how far ahead**: a visit starts at most `max_days_ahead` calendar days after today,
//!   both days read in the facility's time zone;
//! - **visits per week**: at most `visits_per_week` booked visits per inmate in a
//!   facility-local week, Monday to Sunday (0: no limit). Pending, approved and no-show
//!   visits count; denied and cancelled ones do not;
//! - **approval**: `auto` (a visitor's request is approved at once) or `staff` (it waits
//!   for staff). A visit staff book is approved at once either way.
//!
//! Every time in the rules is a multiple of five minutes, the grain the database counts
//! occupancy in ([`CELL_SECS`]).
//!
//! [`check`] applies them to a request, in a fixed order, over facts read beforehand: the
//! first rule that fails is the refusal. What must hold under concurrent requests (the
//! inmate free, a station place, the weekly limit) is claimed in the database after it
//! passes, in the [`Placement`] it returns.

use super::{Refusal, Slot};
use crate::policy::hours::time_of_day;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The grain of occupancy, in seconds: the database claims an inmate's time and a
/// station's places per five-minute cell of Unix time.
pub const CELL_SECS: i64 = 300;
/// Every time and length in the rules is a multiple of this many minutes.
pub const GRAIN_MINUTES: u32 = (CELL_SECS / 60) as u32;
/// The longest visit a facility may allow, in minutes.
pub const MAX_SLOT_MINUTES: u32 = 480;
/// The most slot lengths one facility may offer.
pub const MAX_SLOT_LENGTHS: usize = 8;
/// The most windows one facility may have in a week.
pub const MAX_WINDOWS: usize = 70;
/// The longest notice a facility may ask for: 30 days, in minutes.
pub const MAX_NOTICE_MINUTES: u32 = 30 * 24 * 60;
/// The furthest ahead a facility may let visits be booked, in days.
pub const MAX_DAYS_AHEAD: u32 = 366;
/// The highest weekly limit a facility may set.
pub const MAX_VISITS_PER_WEEK: u32 = 100;

/// A day of the week, as the rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn index(self) -> usize {
        self as usize
    }

    fn of(w: Weekday) -> Day {
        match w {
            Weekday::Mon => Day::Mon,
            Weekday::Tue => Day::Tue,
            Weekday::Wed => Day::Wed,
            Weekday::Thu => Day::Thu,
            Weekday::Fri => Day::Fri,
            Weekday::Sat => Day::Sat,
            Weekday::Sun => Day::Sun,
        }
    }
}

/// One visiting window: a weekday and local times of day, `HH:MM`, start before end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub day: Day,
    pub start: String,
    pub end: String,
}

/// Who approves a visitor's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Approved as soon as it is booked.
    Auto,
    /// Pending until staff approve or deny it.
    Staff,
}

impl Approval {
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Auto => "auto",
            Approval::Staff => "staff",
        }
    }

    pub fn parse(s: &str) -> Option<Approval> {
        match s {
            "auto" => Some(Approval::Auto),
            "staff" => Some(Approval::Staff),
            _ => None,
        }
    }
}

/// A facility's visiting rules, as staff write them and the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitingRules {
    #[serde(default = "default_approval")]
    pub approval: Approval,
    pub windows: Vec<Window>,
    pub slot_lengths_minutes: Vec<u32>,
    #[serde(default = "default_start_step")]
    pub start_step_minutes: u32,
    #[serde(default = "default_notice")]
    pub min_notice_minutes: u32,
    #[serde(default = "default_days_ahead")]
    pub max_days_ahead: u32,
    /// 0: no limit.
    #[serde(default)]
    pub visits_per_week: u32,
}

fn default_approval() -> Approval {
    Approval::Staff
}
fn default_start_step() -> u32 {
    30
}
fn default_notice() -> u32 {
    24 * 60
}
fn default_days_ahead() -> u32 {
    14
}

/// A field of the rules that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RulesError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> RulesError {
    RulesError {
        field,
        message: message.into(),
    }
}

/// The rules checked and ready to apply: windows as minutes of the day, per weekday.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub rules: VisitingRules,
    /// Per weekday (Monday first), the windows as `[start, end)` minutes of the day, in
    /// order.
    days: [Vec<(u32, u32)>; 7],
}

/// A time of day `HH:MM` on the five-minute grain, as minutes of the day.
fn grain_minutes(field: &'static str, s: &str) -> Result<u32, RulesError> {
    let t = time_of_day(s).map_err(|e| refuse(field, e.to_string()))?;
    let m = t.hour() * 60 + t.minute();
    if m % GRAIN_MINUTES != 0 {
        return Err(refuse(
            field,
            format!("{s} is not on a {GRAIN_MINUTES}-minute mark"),
        ));
    }
    Ok(m)
}

fn on_grain(
    field: &'static str,
    v: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<(), RulesError> {
    if !range.contains(&v) || v % GRAIN_MINUTES != 0 {
        return Err(refuse(
            field,
            format!(
                "{v} is not a multiple of {GRAIN_MINUTES} from {} to {}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(())
}

impl VisitingRules {
    /// Checks every field; the rules ready to apply, or the first field that is wrong.
    pub fn schedule(&self) -> Result<Schedule, RulesError> {
        if self.windows.len() > MAX_WINDOWS {
            return Err(refuse("windows", format!("at most {MAX_WINDOWS}")));
        }
        let mut days: [Vec<(u32, u32)>; 7] = Default::default();
        for w in &self.windows {
            let start = grain_minutes("windows.start", &w.start)?;
            let end = grain_minutes("windows.end", &w.end)?;
            if start >= end {
                return Err(refuse(
                    "windows",
                    format!(
                        "{} to {}: a window starts before it ends, within one day",
                        w.start, w.end
                    ),
                ));
            }
            days[w.day.index()].push((start, end));
        }
        for day in &mut days {
            day.sort_unstable();
            if day.windows(2).any(|p| p[1].0 < p[0].1) {
                return Err(refuse("windows", "two windows of one day overlap"));
            }
        }
        let lengths = &self.slot_lengths_minutes;
        if lengths.is_empty() || lengths.len() > MAX_SLOT_LENGTHS {
            return Err(refuse(
                "slot_lengths_minutes",
                format!("1 to {MAX_SLOT_LENGTHS} lengths"),
            ));
        }
        for (i, &l) in lengths.iter().enumerate() {
            on_grain("slot_lengths_minutes", l, GRAIN_MINUTES..=MAX_SLOT_MINUTES)?;
            if lengths[..i].contains(&l) {
                return Err(refuse(
                    "slot_lengths_minutes",
                    format!("{l} is given twice"),
                ));
            }
        }
        on_grain(
            "start_step_minutes",
            self.start_step_minutes,
            GRAIN_MINUTES..=MAX_SLOT_MINUTES,
        )?;
        on_grain(
            "min_notice_minutes",
            self.min_notice_minutes,
            0..=MAX_NOTICE_MINUTES,
        )?;
        if !(1..=MAX_DAYS_AHEAD).contains(&self.max_days_ahead) {
            return Err(refuse("max_days_ahead", format!("1 to {MAX_DAYS_AHEAD}")));
        }
        if self.visits_per_week > MAX_VISITS_PER_WEEK {
            return Err(refuse(
                "visits_per_week",
                format!("0 (no limit) to {MAX_VISITS_PER_WEEK}"),
            ));
        }
        Ok(Schedule {
            rules: self.clone(),
            days,
        })
    }
}

impl Schedule {
    /// A day's windows as text, for a refusal: `09:00-12:00, 13:00-16:00` or `none`.
    fn describe(&self, day: Day) -> String {
        let windows = &self.days[day.index()];
        if windows.is_empty() {
            return "none".into();
        }
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        windows
            .iter()
            .map(|&(s, e)| format!("{}-{}", hm(s), hm(e)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A visit as requested: when it starts and how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub starts_at: DateTime<Utc>,
    pub length_minutes: i64,
}

/// What the checks need, read before they run.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    /// The facility's time zone.
    pub zone: Tz,
    /// The facility's rules; `None` when it has none.
    pub schedule: Option<&'a Schedule>,
    pub inmate_active: bool,
    pub contact_approved: bool,
    pub contact_video_allowed: bool,
}

/// Where a request that passed the rules falls: what the database must claim for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub slot: Slot,
    /// The facility-local week it counts against: its Monday, `YYYY-MM-DD`.
    pub week: String,
    /// The five-minute cells of Unix time it occupies (`[first, last)`).
    pub cells: std::ops::Range<i64>,
    /// The week's limit (0: none).
    pub weekly_limit: u32,
}

/// The checks of a request, in order; the first that fails is the refusal: the inmate is
/// active; the contact approved, then allowed video; the facility has rules; the length
/// is one of its slot lengths; the notice is long enough; the start is not too far ahead;
/// the visit lies within one window, starting on its step.
pub fn check(f: &Facts<'_>, r: &Request) -> Result<Placement, Refusal> {
    if !f.inmate_active {
        return Err(Refusal::InmateInactive);
    }
    if !f.contact_approved {
        return Err(Refusal::ContactNotApproved);
    }
    if !f.contact_video_allowed {
        return Err(Refusal::VideoNotAllowed);
    }
    let s = f.schedule.ok_or(Refusal::NoVisitingRules)?;
    let rules = &s.rules;
    let allowed = &rules.slot_lengths_minutes;
    if !allowed.iter().any(|&l| i64::from(l) == r.length_minutes) {
        return Err(Refusal::SlotLengthInvalid {
            asked: r.length_minutes,
            allowed: allowed.clone(),
        });
    }
    // Checked arithmetic throughout: a start at the ends of time is refused, never a
    // panic.
    let notice = Duration::minutes(i64::from(rules.min_notice_minutes));
    let earliest = f.now.checked_add_signed(notice);
    if earliest.is_none_or(|e| r.starts_at < e) {
        return Err(Refusal::NoticeTooShort {
            min_notice_minutes: rules.min_notice_minutes,
        });
    }
    let too_far = Refusal::TooFarAhead {
        max_days_ahead: rules.max_days_ahead,
    };
    // Past the horizon by more than any zone's offset: refused before it is read on a
    // local clock, where a time at the end of the calendar has no date.
    let beyond = f
        .now
        .checked_add_signed(Duration::days(i64::from(rules.max_days_ahead) + 2));
    if beyond.is_none_or(|b| r.starts_at > b) {
        return Err(too_far);
    }
    let today = f.now.with_timezone(&f.zone).date_naive();
    let local_start = r.starts_at.with_timezone(&f.zone);
    let day = local_start.date_naive();
    let last_day = today.checked_add_signed(Duration::days(i64::from(rules.max_days_ahead)));
    if last_day.is_some_and(|last| day > last) {
        return Err(too_far);
    }
    let ends_at = r
        .starts_at
        .checked_add_signed(Duration::minutes(r.length_minutes))
        .ok_or(too_far)?;
    let local_end = ends_at.with_timezone(&f.zone);
    let start_min = local_start.hour() * 60 + local_start.minute();
    let end_min = local_end.hour() * 60 + local_end.minute();
    let weekday = Day::of(local_start.weekday());
    let same_day = local_end.date_naive() == day;
    let window = s.days[weekday.index()]
        .iter()
        .find(|&&(ws, we)| same_day && ws <= start_min && end_min <= we && start_min < end_min)
        .ok_or_else(|| Refusal::OutsideVisitingHours {
            zone: f.zone.name().to_string(),
            windows: format!("{weekday:?} {}", s.describe(weekday)).to_lowercase(),
        })?;
    let whole_minute = local_start.second() == 0 && local_start.nanosecond() == 0;
    if !whole_minute || (start_min - window.0) % rules.start_step_minutes != 0 {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        return Err(Refusal::SlotStartInvalid {
            step: rules.start_step_minutes,
            window: format!("{}-{}", hm(window.0), hm(window.1)),
        });
    }
    let slot = Slot {
        starts_at: r.starts_at,
        ends_at,
    };
    Ok(Placement {
        week: week_of(f.zone, r.starts_at).format("%Y-%m-%d").to_string(),
        cells: cells(&slot),
        slot,
        weekly_limit: rules.visits_per_week,
    })
}

/// The Monday of the facility-local week `t` falls in.
pub fn week_of(zone: Tz, t: DateTime<Utc>) -> NaiveDate {
    let day = t.with_timezone(&zone).date_naive();
    let back = Duration::days(i64::from(day.weekday().num_days_from_monday()));
    // The first week of the calendar has no Monday before it: it starts on its first day.
    day.checked_sub_signed(back).unwrap_or(day)
}

/// The five-minute cells of Unix time a slot touches: `[floor(start), ceil(end))`.
pub fn cells(slot: &Slot) -> std::ops::Range<i64> {
    let start = slot.starts_at.timestamp().div_euclid(CELL_SECS);
    let end = (slot.ends_at.timestamp() + CELL_SECS - 1).div_euclid(CELL_SECS);
    start..end
}

/// The facility-local day of `now` as a UTC range `[midnight, next midnight)`: a station's
/// "today". A midnight that does not exist on the local clock (a zone that changes its
/// clocks at midnight) is taken at the first instant of the day that does.
pub fn local_day(zone: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = now.with_timezone(&zone).date_naive();
    let start_of = |d: NaiveDate| -> Option<DateTime<Utc>> {
        (0..=24 * 60)
            .step_by(GRAIN_MINUTES as usize)
            .find_map(|m| {
                d.and_hms_opt(0, 0, 0)
                    .and_then(|t| t.checked_add_signed(Duration::minutes(m)))
                    .and_then(|t| t.and_local_timezone(zone).earliest())
            })
            .map(|t| t.with_timezone(&Utc))
    };
    let from = start_of(day).unwrap_or(now);
    let to = day
        .succ_opt()
        .and_then(start_of)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (from, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rules() -> VisitingRules {
        VisitingRules {
            approval: Approval::Staff,
            windows: vec![
                Window {
                    day: Day::Tue,
                    start: "09:00".into(),
                    end: "12:00".into(),
                },
                Window {
                    day: Day::Tue,
                    start: "13:00".into(),
                    end: "16:00".into(),
                },
                Window {
                    day: Day::Sun,
                    start: "01:00".into(),
                    end: "04:00".into(),
                },
            ],
            slot_lengths_minutes: vec![30, 60],
            start_step_minutes: 30,
            min_notice_minutes: 60,
            max_days_ahead: 14,
            visits_per_week: 2,
        }
    }

    fn chicago() -> Tz {
        "America/Chicago".parse().unwrap()
    }

    /// Monday 2026-03-02 12:00 in Chicago (CST, UTC-6).
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap()
    }

    /// Local Chicago time on 2026-03-`d` (CST until the 8th, CDT from then).
    fn local(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        chicago()
            .with_ymd_and_hms(2026, 3, d, h, m, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn facts(s: &Schedule) -> Facts<'_> {
        Facts {
            now: now(),
            zone: chicago(),
            schedule: Some(s),
            inmate_active: true,
            contact_approved: true,
            contact_video_allowed: true,
        }
    }

    fn ask(s: &Schedule, starts_at: DateTime<Utc>, len: i64) -> Result<Placement, Refusal> {
        check(
            &facts(s),
            &Request {
                starts_at,
                length_minutes: len,
            },
        )
    }

    fn code(r: Result<Placement, Refusal>) -> &'static str {
        r.map_or_else(|e| e.code(), |_| "ok")
    }

    #[test]
    fn a_visit_inside_a_window_is_placed_in_its_week_and_cells() {
        let s = rules().schedule().unwrap();
        let p = ask(&s, local(3, 9, 30), 60).unwrap();
        assert_eq!(
            p.slot.starts_at,
            Utc.with_ymd_and_hms(2026, 3, 3, 15, 30, 0).unwrap()
        );
        assert_eq!(
            p.slot.ends_at,
            Utc.with_ymd_and_hms(2026, 3, 3, 16, 30, 0).unwrap()
        );
        assert_eq!(p.week, "2026-03-02");
        assert_eq!(p.cells.end - p.cells.start, 12, "an hour is twelve cells");
        assert_eq!(p.cells.start * CELL_SECS, p.slot.starts_at.timestamp());
        assert_eq!(p.weekly_limit, 2);
        // The last slot of a window ends at its end.
        assert_eq!(code(ask(&s, local(3, 11, 0), 60)), "ok");
        assert_eq!(code(ask(&s, local(3, 15, 30), 30)), "ok");
    }

    #[test]
    fn windows_are_read_in_the_facility_time_zone() {
        let s = rules().schedule().unwrap();
        // 09:00 UTC on Tuesday is 03:00 in Chicago: outside; 15:00 UTC is 09:00: inside.
        let utc9 = Utc.with_ymd_and_hms(2026, 3, 3, 9, 0, 0).unwrap();
        assert_eq!(code(ask(&s, utc9, 30)), "outside_visiting_hours");
        let utc15 = Utc.with_ymd_and_hms(2026, 3, 3, 15, 0, 0).unwrap();
        assert_eq!(code(ask(&s, utc15, 30)), "ok");
        // After the change to daylight time (Sunday the 8th), 09:00 local is 14:00 UTC.
        let cdt = Utc.with_ymd_and_hms(2026, 3, 10, 14, 0, 0).unwrap();
        assert_eq!(code(ask(&s, cdt, 30)), "ok");
        assert_eq!(code(ask(&s, cdt + Duration::hours(1), 30)), "ok");
        assert_eq!(
            code(ask(&s, cdt - Duration::hours(1), 30)),
            "outside_visiting_hours"
        );
        let e = ask(&s, utc9, 30).unwrap_err();
        assert!(e.to_string().contains("America/Chicago"), "{e}");
        assert!(
            e.to_string().contains("tue 09:00-12:00, 13:00-16:00"),
            "{e}"
        );
    }

    #[test]
    fn a_visit_lies_wholly_inside_one_window() {
        let s = rules().schedule().unwrap();
        // Runs past the end of the morning window, across the lunch break.
        assert_eq!(
            code(ask(&s, local(3, 11, 30), 60)),
            "outside_visiting_hours"
        );
        // Starts before the window opens.
        assert_eq!(code(ask(&s, local(3, 8, 30), 60)), "outside_visiting_hours");
        // A day without windows.
        assert_eq!(code(ask(&s, local(4, 9, 0), 30)), "outside_visiting_hours");
    }

    #[test]
    fn the_clock_change_inside_a_window_is_judged_on_the_local_clock() {
        let s = rules().schedule().unwrap();
        // Sunday 2026-03-08, 02:00 CST jumps to 03:00 CDT. A window 01:00-04:00 on the
        // local clock: 01:30 for 60 minutes ends at 03:30 local (an hour of wall time
        // skipped), inside; 03:30 for 60 ends at 04:30, outside.
        assert_eq!(code(ask(&s, local(8, 1, 30), 60)), "ok");
        assert_eq!(code(ask(&s, local(8, 3, 30), 60)), "outside_visiting_hours");
    }

    #[test]
    fn starts_follow_the_step_from_the_window_start_on_whole_minutes() {
        let s = rules().schedule().unwrap();
        assert_eq!(code(ask(&s, local(3, 9, 15), 30)), "slot_start_invalid");
        assert_eq!(code(ask(&s, local(3, 13, 30), 30)), "ok");
        let with_seconds = local(3, 9, 0) + Duration::seconds(20);
        assert_eq!(code(ask(&s, with_seconds, 30)), "slot_start_invalid");
    }

    #[test]
    fn the_length_must_be_one_of_the_slot_lengths() {
        let s = rules().schedule().unwrap();
        for len in [0, -30, 45, 90, i64::MAX] {
            assert_eq!(
                code(ask(&s, local(3, 9, 0), len)),
                "slot_length_invalid",
                "{len}"
            );
        }
        let e = ask(&s, local(3, 9, 0), 45).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a visit lasts one of [30, 60] minutes, not 45"
        );
    }

    #[test]
    fn notice_and_horizon() {
        let mut r = rules();
        r.min_notice_minutes = 24 * 60;
        let s = r.schedule().unwrap();
        // Now is Monday noon; 24 h notice. Tuesday 09:00 is 21 h away.
        let mut f = facts(&s);
        f.now = local(2, 12, 0);
        let r = |t| Request {
            starts_at: t,
            length_minutes: 30,
        };
        assert_eq!(code(check(&f, &r(local(3, 9, 0)))), "notice_too_short");
        assert_eq!(code(check(&f, &r(local(3, 13, 0)))), "ok", "25 h away");
        // In the past: not enough notice either.
        assert_eq!(code(check(&f, &r(local(1, 9, 0)))), "notice_too_short");
        // 14 calendar days ahead: Tuesday the 17th is 15 days from Monday the 2nd.
        assert_eq!(code(check(&f, &r(local(17, 9, 0)))), "too_far_ahead");
        f.now = local(3, 0, 0) - Duration::minutes(1);
        assert_eq!(
            code(check(&f, &r(local(17, 9, 0)))),
            "too_far_ahead",
            "still Monday"
        );
        f.now = local(3, 0, 0);
        assert_eq!(
            code(check(&f, &r(local(17, 15, 30)))),
            "ok",
            "the 14th day, all of it"
        );
    }

    #[test]
    fn the_ends_of_time_are_refused_not_panicked_on() {
        let s = rules().schedule().unwrap();
        assert_eq!(code(ask(&s, DateTime::<Utc>::MAX_UTC, 60)), "too_far_ahead");
        let mut tokyo = facts(&s);
        tokyo.zone = "Asia/Tokyo".parse().unwrap();
        let r = Request {
            starts_at: DateTime::<Utc>::MAX_UTC,
            length_minutes: 30,
        };
        assert_eq!(
            code(check(&tokyo, &r)),
            "too_far_ahead",
            "no local date at all"
        );
        assert_eq!(
            code(ask(&s, DateTime::<Utc>::MIN_UTC, 60)),
            "notice_too_short"
        );
        let mut f = facts(&s);
        f.now = DateTime::<Utc>::MAX_UTC - Duration::days(1);
        let r = Request {
            starts_at: DateTime::<Utc>::MAX_UTC - Duration::minutes(30),
            length_minutes: 60,
        };
        assert_eq!(
            code(check(&f, &r)),
            "too_far_ahead",
            "it would end after time ends"
        );
        let (from, to) = local_day(chicago(), DateTime::<Utc>::MAX_UTC);
        assert!(from <= to);
    }

    #[test]
    fn the_first_failing_check_is_the_refusal() {
        let s = rules().schedule().unwrap();
        let bad = Request {
            starts_at: now() - Duration::days(1),
            length_minutes: 45,
        };
        let mut f = Facts {
            inmate_active: false,
            contact_approved: false,
            contact_video_allowed: false,
            schedule: None,
            ..facts(&s)
        };
        let mut order = Vec::new();
        loop {
            match check(&f, &bad) {
                Ok(_) => break,
                Err(e) => order.push(e.code()),
            }
            match order.last().copied() {
                Some("inmate_inactive") => f.inmate_active = true,
                Some("contact_not_approved") => f.contact_approved = true,
                Some("video_not_allowed") => f.contact_video_allowed = true,
                Some("no_visiting_rules") => f.schedule = Some(&s),
                _ => break,
            }
        }
        assert_eq!(
            order,
            [
                "inmate_inactive",
                "contact_not_approved",
                "video_not_allowed",
                "no_visiting_rules",
                "slot_length_invalid"
            ]
        );
        let r = Request {
            starts_at: now() - Duration::days(1),
            length_minutes: 30,
        };
        assert_eq!(code(check(&f, &r)), "notice_too_short", "before the window");
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let field = |r: VisitingRules| r.schedule().map(|_| "ok").unwrap_or_else(|e| e.field);
        assert_eq!(field(rules()), "ok");
        let mut r = rules();
        r.windows[0].start = "09:03".into();
        assert_eq!(field(r), "windows.start");
        let mut r = rules();
        r.windows[0].end = "8 pm".into();
        assert_eq!(field(r), "windows.end");
        let mut r = rules();
        r.windows[0].end = "09:00".into();
        assert_eq!(field(r), "windows", "empty window");
        let mut r = rules();
        r.windows[1].start = "11:30".into();
        assert_eq!(field(r), "windows", "overlap");
        let mut r = rules();
        r.windows[1].start = "12:00".into();
        assert_eq!(field(r), "ok", "touching windows");
        for lengths in [
            vec![],
            vec![25, 30, 35, 40, 45, 50, 55, 60, 65],
            vec![7],
            vec![0],
            vec![485],
            vec![30, 30],
        ] {
            let mut r = rules();
            r.slot_lengths_minutes = lengths;
            assert_eq!(field(r), "slot_lengths_minutes");
        }
        let mut r = rules();
        r.start_step_minutes = 0;
        assert_eq!(field(r), "start_step_minutes");
        let mut r = rules();
        r.min_notice_minutes = MAX_NOTICE_MINUTES + 5;
        assert_eq!(field(r), "min_notice_minutes");
        let mut r = rules();
        r.min_notice_minutes = 0;
        assert_eq!(field(r), "ok", "no notice");
        let mut r = rules();
        r.max_days_ahead = 0;
        assert_eq!(field(r), "max_days_ahead");
        let mut r = rules();
        r.visits_per_week = MAX_VISITS_PER_WEEK + 1;
        assert_eq!(field(r), "visits_per_week");
    }

    #[test]
    fn rules_read_from_json_with_defaults() {
        let r: VisitingRules = serde_json::from_str(
            r#"{"windows":[{"day":"sat","start":"09:00","end":"12:00"}],"slot_lengths_minutes":[30]}"#,
        )
        .unwrap();
        assert_eq!(r.approval, Approval::Staff);
        assert_eq!(
            (
                r.start_step_minutes,
                r.min_notice_minutes,
                r.max_days_ahead,
                r.visits_per_week
            ),
            (30, 1440, 14, 0)
        );
        assert!(serde_json::from_str::<VisitingRules>(
            r#"{"windows":[],"slot_lengths_minutes":[30],"colour":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<VisitingRules>(r#"{"windows":[{"day":"funday","start":"09:00","end":"12:00"}],"slot_lengths_minutes":[30]}"#).is_err());
    }

    #[test]
    fn weeks_run_monday_to_sunday_on_the_local_calendar() {
        let z = chicago();
        // Sunday 2026-03-08 23:30 in Chicago is Monday 04:30 UTC: still the week of the 2nd.
        let sunday_night = local(8, 23, 30);
        assert_eq!(sunday_night.weekday(), Weekday::Mon, "in UTC");
        assert_eq!(week_of(z, sunday_night).to_string(), "2026-03-02");
        assert_eq!(week_of(z, local(9, 0, 0)).to_string(), "2026-03-09");
    }

    #[test]
    fn cells_cover_the_slot() {
        let t = Utc.with_ymd_and_hms(2026, 3, 3, 15, 0, 0).unwrap();
        let slot = |from: DateTime<Utc>, mins| Slot {
            starts_at: from,
            ends_at: from + Duration::minutes(mins),
        };
        assert_eq!(cells(&slot(t, 30)).count(), 6);
        // Two back-to-back visits share no cell; overlapping ones do.
        let a = cells(&slot(t, 30));
        let b = cells(&slot(t + Duration::minutes(30), 30));
        assert_eq!(a.end, b.start);
        let c = cells(&slot(t + Duration::minutes(25), 30));
        assert!(c.start < a.end);
        // Off the grain (never produced by the rules), the cover is conservative.
        let odd = cells(&slot(t + Duration::seconds(1), 30));
        assert_eq!((odd.start, odd.end), (a.start, a.end + 1));
    }

    #[test]
    fn a_local_day_in_utc() {
        let (from, to) = local_day(chicago(), now());
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap());
        assert_eq!(to, Utc.with_ymd_and_hms(2026, 3, 3, 6, 0, 0).unwrap());
        // The day the clocks change is 23 hours long.
        let (from, to) = local_day(chicago(), local(8, 12, 0));
        assert_eq!(to - from, Duration::hours(23));
    }
}
