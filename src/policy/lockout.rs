//! The defence against guessing ID + PIN pairs: who is counted, when a lock falls, how
//! long it lasts, and when a facility is alerted. Pure decisions on counts the store
//! gives ([`crate::call::checks::check_pin`] carries them out).
//!
//! # What is counted
//!
//! Every failed entry (a wrong pair, whether the ID names nobody or the PIN is wrong) counts
//! against three **subjects**: the inmate whose ID was keyed (when it names one), the
//! handset it was keyed on, and the **line** — the source address the call came from, so
//! that rotating the From user of a trusted-network handset (or calling as several
//! handsets from one place) gains nothing. Counts live in the database (the
//! `pin_attempts` log, indexed per subject), so every node of a cluster sees the same
//! ones. A right PIN resets nothing: knowing one's own PIN does not buy more guesses.
//!
//! # Decay and locks
//!
//! A failure counts for `security.failure_window_secs` (1 h) against the hourly
//! threshold and for a day against the daily one, and only until the subject's next lock
//! ends: a lock forgets the failures that caused it, so one wrong entry after a lock
//! expires does not relock at once. `lockout_after_failures` (6) failures of an inmate or
//! a handset within the window, `line_lockout_after_failures` (6) of a line, or
//! `daily_lockout_after_failures` (10) of any of them within a day (a guesser who paces
//! himself under the hourly threshold) lock that subject for `lockout_secs` (15 min); a
//! lock that begins within a day of the previous one's end lasts twice as long as that
//! one, up to `lockout_max_secs` (24 h), so a short clean spell does not reset the
//! doubling. While the handset or line is locked nothing is checked there; while the
//! inmate is locked even the right PIN is refused and the inmate is told the account is
//! locked (IDs are not secret). Staff clear locks (`POST …/unlock`; setting a PIN clears
//! the inmate's), which also restarts the count.
//!
//! # Racing entries
//!
//! An entry's PIN is compared first; the entry is then recorded, decided, and the
//! failures recorded before it are counted right after, exactly whatever races it
//! (SQLite assigns ids in commit order; on PostgreSQL the two run in one transaction
//! holding an advisory lock per subject). An entry with a
//! threshold's worth of failures before it is refused as locked, right PIN or not, and
//! the subject is locked if no lock runs yet. So calls racing on many nodes never check
//! more than the threshold between two locks, and right entries keyed at the same moment
//! (several handsets behind one address) never hold each other up or refuse each other.
//!
//! # Locking an inmate out on purpose
//!
//! IDs are not secret, so anyone who knows an inmate's calling ID can lock that inmate's
//! account with six wrong PINs. This is the price of counting per inmate (without it, an
//! attacker with many phones guesses one inmate's PIN without limit); it is bounded by the
//! same lock lengths, each such lock is audited with the handset and line that caused it,
//! and staff clear it with `POST /inmates/{id}/unlock`.
//!
//! # The numbers (defaults)
//!
//! At most 6 guesses per lock, whatever the attacker rotates. One line (or handset, or
//! targeted inmate), guessing as fast as the phone allows: 6 guesses, then locks of
//! 15 min, 30 min, 1 h, 2 h, … 24 h — **18 guesses in the first hour, 42 in the first
//! day, then 6 a day**. Pacing himself under the hourly threshold buys little: at any
//! pace at most 18 in the first hour, **60 in the first day, 16 on any day from the third,
//! and 10 a day once the locks reach 24 h** (by the sixth day) — where before the daily count a
//! guesser keying 5 an hour was never locked and got 120 a day for ever (the test
//! `an_attacker_on_one_line_gets_the_documented_guesses` walks paces from 10 s to 6 h).
//! Per call: 3. Facility-wide, an attacker holding several lines multiplies the line
//! figure by their number (20 phones: at most 360 guesses in the first hour, 1,200 in the
//! first day, then 200 a day once locks are long), but each targeted inmate still gets at most the figures above, and spreading
//! guesses over `guess_alert_ids` (10) distinct IDs within `guess_alert_window_secs`
//! (10 min) raises the alert (an audit entry and a metric; at most one per facility per
//! window) within the first dozen guesses. A random pair
//! succeeds with probability (inmates / 10^ID digits) / 10^PIN digits: 2×10⁻⁷ for 2,000
//! inmates, 6-digit IDs and 4-digit PINs (the PIN-alone lookup this replaced opened some
//! account with one random guess in five).

use chrono::{DateTime, Duration, Utc};

/// Who a failure counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The inmate whose calling ID was keyed.
    Inmate,
    /// The handset the call came from.
    Handset,
    /// The source address the call came from.
    Line,
}

impl Subject {
    pub const ALL: [Subject; 3] = [Subject::Inmate, Subject::Handset, Subject::Line];

    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Inmate => "inmate",
            Subject::Handset => "handset",
            Subject::Line => "line",
        }
    }
}

/// A subject's lock as stored: when it ends (or ended) and how many locks in a row led to
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    pub locked_until: Option<DateTime<Utc>>,
    pub level: u32,
    /// Failures before this time are not counted (a lock's end, or a staff clear).
    pub count_from: Option<DateTime<Utc>>,
}

impl LockState {
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

/// A lock to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub until: DateTime<Utc>,
    pub level: u32,
}

/// A subject's failures as the store counts them: wrong pairs (and entries an older
/// version left pending longer than [`STALE_PENDING`]) since the subject's count starts,
/// recorded before a given entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    /// Within the failure window.
    pub recent: u64,
    /// Within the last day.
    pub daily: u64,
}

impl Failures {
    /// These failures and one more.
    pub fn and_one(self) -> Failures {
        Failures {
            recent: self.recent + 1,
            daily: self.daily + 1,
        }
    }
}

/// Where a subject's failures count from, at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counting {
    pub recent_from: DateTime<Utc>,
    pub daily_from: DateTime<Utc>,
    /// Pending entries begun before this are counted as the failures they may have been.
    pub stale_before: DateTime<Utc>,
}

/// How long an entry an older version wrote as pending (before comparing its PIN) may stay
/// so before it counts as a failure: only a node that died mid-check leaves one. This
/// version writes each entry once, decided.
pub const STALE_PENDING: Duration = Duration::seconds(30);

/// The daily count's window, and how long a lock is remembered: a lock that begins within
/// a day of the previous one's end doubles it.
pub const DAY: Duration = Duration::hours(24);

/// The thresholds and times of `[security]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLockout {
    pub after_failures: u32,
    /// 0: lines are not counted.
    pub line_after_failures: u32,
    /// Failures within a day that lock any subject, whatever their pace. 0: off.
    pub daily_after_failures: u32,
    pub lock_for: Duration,
    pub lock_max: Duration,
    pub window: Duration,
    pub alert_ids: u32,
    pub alert_window: Duration,
}

fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1_000_000))
}

impl PinLockout {
    pub fn from_config(c: &crate::config::SecurityConfig) -> PinLockout {
        PinLockout {
            after_failures: c.lockout_after_failures,
            line_after_failures: c.line_lockout_after_failures,
            daily_after_failures: c.daily_lockout_after_failures,
            lock_for: secs(c.lockout_secs),
            lock_max: secs(c.lockout_max_secs),
            window: secs(c.failure_window_secs),
            alert_ids: c.guess_alert_ids,
            alert_window: secs(c.guess_alert_window_secs),
        }
    }

    /// The policy for entries at a visit station (a kiosk, `POST /visits/{id}/kiosk-join`).
    /// A station has no handset and no source address of its own: it plays both roles
    /// as one subject, counted as a line keyed by the station
    /// ([`crate::call::checks::station_line`]) with the handset's threshold, so it is
    /// counted and locked even where lines are not (`line_lockout_after_failures = 0`).
    pub fn at_station(&self) -> PinLockout {
        PinLockout {
            line_after_failures: self.after_failures,
            ..*self
        }
    }

    /// Whether `subject` is counted at all.
    pub fn counts(&self, subject: Subject) -> bool {
        subject != Subject::Line || self.line_after_failures > 0
    }

    /// The failures within the window that lock `subject`, or `None` when it is not
    /// counted.
    pub fn threshold(&self, subject: Subject) -> Option<u32> {
        match subject {
            Subject::Inmate | Subject::Handset => Some(self.after_failures),
            Subject::Line => Some(self.line_after_failures).filter(|n| *n > 0),
        }
    }

    /// The failures within a day that lock `subject`, or `None`.
    pub fn daily_threshold(&self, subject: Subject) -> Option<u32> {
        Some(self.daily_after_failures).filter(|n| *n > 0 && self.counts(subject))
    }

    /// Failures of a subject count from the start of their window or the end of its last
    /// lock (or a staff clear), whichever is later.
    pub fn counting(&self, now: DateTime<Utc>, state: &LockState) -> Counting {
        let after_lock = |from: DateTime<Utc>| state.count_from.map_or(from, |t| t.max(from));
        Counting {
            recent_from: after_lock(now - self.window),
            daily_from: after_lock(now - DAY),
            stale_before: now - STALE_PENDING,
        }
    }

    fn hits(&self, subject: Subject, recent: u64, daily: u64) -> bool {
        self.threshold(subject)
            .is_some_and(|n| recent >= u64::from(n))
            || self
                .daily_threshold(subject)
                .is_some_and(|n| daily >= u64::from(n))
    }

    /// Whether an entry must be refused (as locked), given the subject's failures recorded
    /// before it: a threshold was reached, by entries racing it or before a lock was set.
    pub fn over_limit(&self, subject: Subject, before: Failures) -> bool {
        self.hits(subject, before.recent, before.daily)
    }

    /// With `f` counted after a failed entry (it included), whether the subject locks now.
    pub fn reached(&self, subject: Subject, f: Failures) -> bool {
        self.hits(subject, f.recent, f.daily)
    }

    /// The lock a subject gets at `now`, after `previous`: twice the last one if this one
    /// begins within a day of its end, else the first length again. A short clean spell
    /// does not reset the doubling, so a guesser who paces himself gains nothing.
    pub fn lock(&self, now: DateTime<Utc>, previous: &LockState) -> Lock {
        let follows = previous.locked_until.is_some_and(|end| end + DAY >= now);
        let level = if follows {
            previous.level.saturating_add(1).max(2)
        } else {
            1
        };
        let mut length = self.lock_for;
        for _ in 1..level {
            if length >= self.lock_max {
                break;
            }
            length = length + length;
        }
        Lock {
            until: now + length.min(self.lock_max),
            level,
        }
    }

    /// Whether failures naming `distinct_ids` IDs within the alert window are a
    /// facility-wide guessing pattern.
    pub fn alerts(&self, distinct_ids: u64) -> bool {
        distinct_ids >= u64::from(self.alert_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> PinLockout {
        PinLockout::from_config(&crate::config::SecurityConfig::default())
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 18, 0, 0).unwrap()
    }

    #[test]
    fn a_station_is_counted_as_a_handset_even_where_lines_are_not() {
        let mut p = policy();
        p.line_after_failures = 0;
        assert!(!p.counts(Subject::Line));
        let at = p.at_station();
        assert!(at.counts(Subject::Line));
        assert_eq!(at.threshold(Subject::Line), Some(p.after_failures));
        assert_eq!(at.threshold(Subject::Inmate), p.threshold(Subject::Inmate));
        assert_eq!(
            at.daily_threshold(Subject::Line),
            Some(p.daily_after_failures)
        );
    }

    fn state(l: Lock) -> LockState {
        LockState {
            locked_until: Some(l.until),
            level: l.level,
            count_from: Some(l.until),
        }
    }

    #[test]
    fn locks_double_while_they_follow_each_other_and_reset_after_a_clean_day() {
        let p = policy();
        let first = p.lock(t0(), &LockState::default());
        assert_eq!(
            (first.until - t0(), first.level),
            (Duration::minutes(15), 1)
        );
        // Five clean hours do not reset the doubling: pacing buys nothing.
        let later = first.until + Duration::hours(5);
        let second = p.lock(later, &state(first));
        assert_eq!(second.level, 2);
        assert_eq!(second.until - later, Duration::minutes(30));
        let mut l = second;
        for _ in 0..10 {
            l = p.lock(l.until, &state(l));
        }
        assert_eq!(
            l.until - p.lock(l.until, &state(l)).until,
            -Duration::hours(24)
        );
        // A clean day after a lock's end: back to 15 minutes.
        let fresh = p.lock(
            l.until + Duration::hours(24) + Duration::minutes(1),
            &state(l),
        );
        assert_eq!(fresh.level, 1);
    }

    #[test]
    fn a_lock_forgets_its_failures_and_old_failures_decay() {
        let p = policy();
        let now = t0();
        let c = p.counting(now, &LockState::default());
        assert_eq!(c.recent_from, now - Duration::hours(1));
        assert_eq!(c.daily_from, now - Duration::hours(24));
        assert_eq!(c.stale_before, now - Duration::seconds(30));
        let ended = LockState {
            locked_until: Some(now - Duration::minutes(1)),
            level: 1,
            count_from: Some(now - Duration::minutes(1)),
        };
        let c = p.counting(now, &ended);
        assert_eq!(c.recent_from, now - Duration::minutes(1));
        assert_eq!(c.daily_from, now - Duration::minutes(1));
        assert!(!ended.is_locked(now));
    }

    #[test]
    fn thresholds() {
        let mut p = policy();
        let f = |recent, daily| Failures { recent, daily };
        assert!(!p.over_limit(Subject::Inmate, f(5, 5)));
        assert!(p.over_limit(Subject::Inmate, f(6, 6)));
        assert_eq!(f(5, 9).and_one(), f(6, 10));
        // The daily count catches a guesser who stays under the hourly one.
        assert!(p.over_limit(Subject::Line, f(2, 10)));
        assert!(!p.reached(Subject::Inmate, f(5, 9)));
        assert!(p.reached(Subject::Inmate, f(1, 10)));
        p.line_after_failures = 0;
        assert!(!p.over_limit(Subject::Line, f(1000, 1000)));
        assert!(!p.reached(Subject::Line, f(1000, 1000)));
        assert!(!p.alerts(9) && p.alerts(10));
    }

    /// One subject attacked by a guesser who keys a wrong pair every `pace` and calls
    /// again the moment a lock ends: the times of the guesses checked.
    fn guesses(p: &PinLockout, pace: Duration, days: i64) -> Vec<DateTime<Utc>> {
        let start = t0();
        let mut now = start;
        let mut lock = LockState::default();
        let mut failures: Vec<DateTime<Utc>> = Vec::new();
        let mut checked = Vec::new();
        while now < start + Duration::days(days) {
            if lock.is_locked(now) {
                now = lock.locked_until.unwrap_or(now);
                continue;
            }
            let c = p.counting(now, &lock);
            let count =
                |from: DateTime<Utc>| failures.iter().filter(|t| **t >= from).count() as u64;
            let before = Failures {
                recent: count(c.recent_from),
                daily: count(c.daily_from),
            };
            assert!(!p.over_limit(Subject::Line, before));
            checked.push(now);
            failures.push(now);
            if p.reached(Subject::Line, before.and_one()) {
                lock = state(p.lock(now, &lock));
            }
            now += pace;
        }
        checked
    }

    fn within(g: &[DateTime<Utc>], from: DateTime<Utc>, d: Duration) -> usize {
        g.iter().filter(|t| **t >= from && **t < from + d).count()
    }

    /// The figures of the module doc: as fast as the phone allows (a wrong pair about
    /// every 10 s, 3 per call), and at any slower pace.
    #[test]
    fn an_attacker_on_one_line_gets_the_documented_guesses() {
        let p = policy();
        let fast = guesses(&p, Duration::seconds(10), 4);
        assert_eq!(within(&fast, t0(), Duration::hours(1)), 18);
        assert_eq!(within(&fast, t0(), Duration::days(1)), 42);
        assert_eq!(
            within(&fast, t0() + Duration::days(2), Duration::days(1)),
            6
        );
        let mut worst = (18, 42, 6); // the fast guesser's
        for minutes in [
            1, 5, 10, 12, 15, 20, 30, 45, 60, 90, 120, 150, 180, 240, 360,
        ] {
            let g = guesses(&p, Duration::minutes(minutes), 10);
            let first_hour = within(&g, t0(), Duration::hours(1));
            let first_day = within(&g, t0(), Duration::days(1));
            let day = |d: i64| within(&g, t0() + Duration::days(d), Duration::days(1));
            let later = (2..10).map(day).max().unwrap_or(0);
            // Once the locks reach their 24 h cap (by the sixth day at any pace).
            let settled = (5..10).map(day).max().unwrap_or(0);
            assert!(settled <= 10, "{minutes} min: {settled} a day");
            worst = (
                worst.0.max(first_hour),
                worst.1.max(first_day),
                worst.2.max(later),
            );
        }
        assert_eq!(
            worst,
            (18, 60, 16),
            "(first hour, first day, any day from the third)"
        );
    }
}
