//! The charging core's named timers: one `Option<Instant>` per [`Timer`], in the
//! crate's one timer-table shape (`crate::timers`).

use crate::timers::{self, TimerSlot};

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

impl TimerSlot for Timer {
    /// Order in which timers expiring at the same instant are handled: cuts first, so a
    /// call is never debited for an increment that starts at its maximum duration.
    const ALL: &'static [Timer] = &[
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
pub(super) type TimerTable = timers::TimerTable<Timer, 4>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_slot_per_timer() {
        timers::check_slots::<Timer>();
    }

    #[test]
    fn earliest_first_then_priority() {
        let t0 = crate::clock::epoch();
        let mut t = TimerTable::default();
        assert_eq!(t.earliest(), None);
        t.set(Timer::NextIncrement, Some(t0 + Duration::from_secs(60)));
        t.set(Timer::MaxDuration, Some(t0 + Duration::from_secs(60)));
        t.set(Timer::Warning, Some(t0 + Duration::from_secs(30)));
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(t.first_due(t0), None);
        assert_eq!(
            t.first_due(t0 + Duration::from_secs(90)),
            Some(Timer::Warning)
        );
        t.stop(Timer::Warning);
        assert_eq!(
            t.first_due(t0 + Duration::from_secs(90)),
            Some(Timer::MaxDuration)
        );
        t.clear();
        assert_eq!(t.earliest(), None);
    }
}
