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
//! A failure counts for `security.failure_window_secs` (1 h), and only until the subject's
//! next lock ends: a lock forgets the failures that caused it, so one wrong entry after a
//! lock expires does not relock at once. `lockout_after_failures` (6) failures of an inmate
//! or a handset, or `line_lockout_after_failures` (6) of a line, lock that subject for
//! `lockout_secs` (15 min); a lock that follows the previous one's end within the window
//! lasts twice as long as that one, up to `lockout_max_secs` (24 h). While the handset or
//! line is locked nothing is checked there; while the inmate is locked even the right PIN
//! is refused and the inmate is told the account is locked (IDs are not secret). Staff
//! clear locks (`POST …/unlock`; setting a PIN clears the inmate's), which also restarts the
//! count. An entry is counted before its PIN is compared (as pending), so calls racing on
//! many nodes cannot check more than the threshold between two locks.
//!
//! # The numbers (defaults)
//!
//! At most 6 guesses per lock, whatever the attacker rotates. One line (or handset, or
//! targeted inmate): 6 guesses, then locks of 15 min, 30 min, 1 h, 2 h, … 24 h — at most
//! **18 guesses in the first hour, 42 in the first day, then 6 a day** (the test
//! `an_attacker_on_one_line_gets_the_documented_guesses` walks it). Per call: 3.
//! Facility-wide, an attacker holding several lines multiplies the line figure by their
//! number (20 phones: at most 360 guesses in the first hour, 840 in the first day, then 120
//! a day), but each targeted inmate still gets at most the figures above, and spreading
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

/// The thresholds and times of `[security]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLockout {
    pub after_failures: u32,
    /// 0: lines are not counted.
    pub line_after_failures: u32,
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
            lock_for: secs(c.lockout_secs),
            lock_max: secs(c.lockout_max_secs),
            window: secs(c.failure_window_secs),
            alert_ids: c.guess_alert_ids,
            alert_window: secs(c.guess_alert_window_secs),
        }
    }

    /// The failures that lock `subject`, or `None` when it is not counted.
    pub fn threshold(&self, subject: Subject) -> Option<u32> {
        match subject {
            Subject::Inmate | Subject::Handset => Some(self.after_failures),
            Subject::Line => Some(self.line_after_failures).filter(|n| *n > 0),
        }
    }

    /// Failures of a subject count from here: the window, or the end of its last lock (or
    /// a staff clear), whichever is later.
    pub fn counting_from(&self, now: DateTime<Utc>, state: &LockState) -> DateTime<Utc> {
        let window_start = now - self.window;
        state
            .count_from
            .map_or(window_start, |t| t.max(window_start))
    }

    /// With `failures` counted (this entry included, still pending), the entry must be
    /// refused unchecked: the threshold was reached by others racing it.
    pub fn over_limit(&self, subject: Subject, failures: u64) -> bool {
        self.threshold(subject)
            .is_some_and(|n| failures > u64::from(n))
    }

    /// With `failures` counted after a failed entry, whether the subject locks now.
    pub fn reached(&self, subject: Subject, failures: u64) -> bool {
        self.threshold(subject)
            .is_some_and(|n| failures >= u64::from(n))
    }

    /// The lock a subject gets at `now`, after `previous`: twice the last one if this one
    /// follows its end within the window, else the first length again.
    pub fn lock(&self, now: DateTime<Utc>, previous: &LockState) -> Lock {
        let follows = previous
            .locked_until
            .is_some_and(|end| end + self.window >= now);
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
    fn locks_double_while_they_follow_each_other_and_reset_after_a_clean_window() {
        let p = policy();
        let first = p.lock(t0(), &LockState::default());
        assert_eq!(
            (first.until - t0(), first.level),
            (Duration::minutes(15), 1)
        );
        let state = |l: Lock| LockState {
            locked_until: Some(l.until),
            level: l.level,
            count_from: Some(l.until),
        };
        let second = p.lock(first.until + Duration::minutes(5), &state(first));
        assert_eq!(second.level, 2);
        assert_eq!(
            second.until - (first.until + Duration::minutes(5)),
            Duration::minutes(30)
        );
        let mut l = second;
        for _ in 0..10 {
            l = p.lock(l.until, &state(l));
        }
        assert_eq!(
            l.until - p.lock(l.until, &state(l)).until,
            -Duration::hours(24)
        );
        // An hour clean after a lock's end: back to 15 minutes.
        let fresh = p.lock(l.until + Duration::minutes(61), &state(l));
        assert_eq!(fresh.level, 1);
    }

    #[test]
    fn a_lock_forgets_its_failures_and_old_failures_decay() {
        let p = policy();
        let now = t0();
        assert_eq!(
            p.counting_from(now, &LockState::default()),
            now - Duration::hours(1)
        );
        let ended = LockState {
            locked_until: Some(now - Duration::minutes(1)),
            level: 1,
            count_from: Some(now - Duration::minutes(1)),
        };
        assert_eq!(p.counting_from(now, &ended), now - Duration::minutes(1));
        assert!(!ended.is_locked(now));
    }

    #[test]
    fn thresholds() {
        let mut p = policy();
        assert!(!p.reached(Subject::Inmate, 5) && p.reached(Subject::Inmate, 6));
        assert!(!p.over_limit(Subject::Handset, 6) && p.over_limit(Subject::Handset, 7));
        p.line_after_failures = 0;
        assert!(!p.reached(Subject::Line, 1000) && !p.over_limit(Subject::Line, 1000));
        assert!(!p.alerts(9) && p.alerts(10));
    }

    /// The figures of the module doc: an attacker on one line who guesses as fast as the
    /// phone allows (a wrong pair about every 10 s, 3 per call) and calls again the moment
    /// a lock ends.
    #[test]
    fn an_attacker_on_one_line_gets_the_documented_guesses() {
        let p = policy();
        let start = t0();
        let mut now = start;
        let mut state = LockState::default();
        let mut failures: Vec<DateTime<Utc>> = Vec::new();
        let mut guesses: Vec<DateTime<Utc>> = Vec::new();
        while now < start + Duration::days(3) {
            if state.is_locked(now) {
                now = state.locked_until.unwrap_or(now);
                continue;
            }
            let from = p.counting_from(now, &state);
            let counted = failures.iter().filter(|t| **t >= from).count() as u64 + 1;
            assert!(!p.over_limit(Subject::Line, counted));
            guesses.push(now);
            failures.push(now);
            if p.reached(Subject::Line, counted) {
                let l = p.lock(now, &state);
                state = LockState {
                    locked_until: Some(l.until),
                    level: l.level,
                    count_from: Some(l.until),
                };
            }
            now += Duration::seconds(10);
        }
        let within = |from: DateTime<Utc>, d: Duration| {
            guesses
                .iter()
                .filter(|t| **t >= from && **t < from + d)
                .count()
        };
        assert_eq!(within(start, Duration::hours(1)), 18);
        assert_eq!(within(start, Duration::days(1)), 42);
        assert_eq!(within(start + Duration::days(2), Duration::days(1)), 6);
    }
}
