//! The charging core's named timers: one `Option<Instant>` per [`Timer`].

use std::time::Instant;

/// A named deadline of one charging session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// End of the current paid increment: debit the next one (the ledger's refusal cuts).
    NextIncrement,
    /// When the next warning is due (`warning_lead` before the cut it announces).
    Warning,
    /// `start + max_duration`.
    MaxDuration,
    /// Deadline for the ledger to confirm the debit in flight.
    DebitTimeout,
}

impl Timer {
    const COUNT: usize = 4;

    /// Order in which timers expiring at the same instant are handled: cuts first, so a
    /// call is never debited for an increment that starts at its maximum duration.
    const PRIORITY: [Timer; Timer::COUNT] = [
        Timer::MaxDuration,
        Timer::DebitTimeout,
        Timer::Warning,
        Timer::NextIncrement,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// When each [`Timer`] fires, if armed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// Arms `timer` at `at`; `None` (a deadline too far to represent) disarms it.
    pub(super) fn set(&mut self, timer: Timer, at: Option<Instant>) {
        self.at[timer.slot()] = at;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.slot()]
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.at[timer.slot()] = None;
    }

    pub(super) fn clear(&mut self) {
        self.at = [None; Timer::COUNT];
    }

    /// The earliest armed deadline.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The timer to handle next at `now`: the earliest expired one, ties by priority.
    pub(super) fn first_expired(&self, now: Instant) -> Option<Timer> {
        let mut best: Option<(Instant, Timer)> = None;
        for timer in Timer::PRIORITY {
            let Some(at) = self.get(timer).filter(|&at| at <= now) else {
                continue;
            };
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, timer));
            }
        }
        best.map(|(_, timer)| timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_then_priority() {
        let t0 = crate::clock::epoch();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::NextIncrement, Some(t0 + Duration::from_secs(60)));
        t.set(Timer::MaxDuration, Some(t0 + Duration::from_secs(60)));
        t.set(Timer::Warning, Some(t0 + Duration::from_secs(30)));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(t.first_expired(t0), None);
        assert_eq!(
            t.first_expired(t0 + Duration::from_secs(90)),
            Some(Timer::Warning)
        );
        t.stop(Timer::Warning);
        assert_eq!(
            t.first_expired(t0 + Duration::from_secs(90)),
            Some(Timer::MaxDuration)
        );
        t.clear();
        assert_eq!(t.next_timeout(), None);
    }
}
