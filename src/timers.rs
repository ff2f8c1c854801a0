//! Named timers: the one table shape every core keeps its deadlines in.
//!
//! After quinn's `connection/timer.rs`: a core names its timers with a fieldless enum,
//! implements [`TimerSlot`] for it, and keeps a [`TimerTable`] of one `Option<Instant>`
//! per name. No allocation, no clock: the core passes `now`.
//!
//! Who uses it: the charging core (`charging::Timer`), the call (`call::Timer`) and the
//! SIP transactions (`sip::transaction::Timer`). They share the table; how they fire what
//! is due stays each core's rule, and the table has one method per rule:
//!
//! - [`TimerTable::pop_due`] (charging): the earliest due timer, one at a time, the table
//!   read again after each, since what one timer does (a cut) disarms others.
//! - [`TimerTable::take_due`] (SIP transactions): every timer due at `now` at once,
//!   earliest first, all disarmed before the first is handled.
//! - [`TimerTable::take_if_due`] (the call): one named timer, in an order the core walks.
//!
//! Ties (timers due at the same instant) go in the order of [`TimerSlot::ALL`].

use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// A core's timer names.
pub(crate) trait TimerSlot: Copy + Eq + 'static {
    /// Every timer, in the order timers due at the same instant are handled.
    const ALL: &'static [Self];
    /// The timer's place in a table: distinct per timer and below `ALL.len()`
    /// ([`check_slots`] in each core's tests).
    fn slot(self) -> usize;
}

/// When each timer `T` fires, if armed. `N` is the number of timers (`T::ALL.len()`;
/// checked when the table is made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimerTable<T, const N: usize> {
    at: [Option<Instant>; N],
    names: PhantomData<T>,
}

impl<T: TimerSlot, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        let () = Self::ONE_SLOT_PER_TIMER;
        TimerTable {
            at: [None; N],
            names: PhantomData,
        }
    }
}

impl<T: TimerSlot, const N: usize> TimerTable<T, N> {
    /// Fails the build when `N` is not the number of timers.
    const ONE_SLOT_PER_TIMER: () = assert!(T::ALL.len() == N, "one slot per timer");

    /// Arms `timer` at `at`; `None` (a deadline too far to represent) disarms it.
    pub(crate) fn set(&mut self, timer: T, at: Option<Instant>) {
        self.at[timer.slot()] = at;
    }

    /// Arms `timer` `after` from `now` ("never" if that overflows).
    pub(crate) fn arm(&mut self, timer: T, now: Instant, after: Duration) {
        self.set(timer, now.checked_add(after));
    }

    pub(crate) fn get(&self, timer: T) -> Option<Instant> {
        self.at[timer.slot()]
    }

    pub(crate) fn stop(&mut self, timer: T) {
        self.at[timer.slot()] = None;
    }

    /// Disarms every timer.
    pub(crate) fn clear(&mut self) {
        self.at = [None; N];
    }

    /// The earliest armed deadline: when the core must next be called.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Every timer due at `now` with its deadline, in the order of [`TimerSlot::ALL`].
    fn due(&self, now: Instant) -> impl Iterator<Item = (Instant, T)> + '_ {
        T::ALL
            .iter()
            .filter_map(move |&t| self.get(t).filter(|&at| at <= now).map(|at| (at, t)))
    }

    /// The timer to handle next at `now`, left armed: the earliest due, ties in the order
    /// of [`TimerSlot::ALL`].
    pub(crate) fn first_due(&self, now: Instant) -> Option<T> {
        let mut best: Option<(Instant, T)> = None;
        for (at, t) in self.due(now) {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, t));
            }
        }
        best.map(|(_, t)| t)
    }

    /// [`first_due`](Self::first_due), disarmed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let t = self.first_due(now)?;
        self.stop(t);
        Some(t)
    }

    /// Disarms every timer due at `now` and returns them, earliest first (ties in the
    /// order of [`TimerSlot::ALL`]).
    pub(crate) fn take_due(&mut self, now: Instant) -> impl Iterator<Item = T> {
        let mut due = [None; N];
        for (slot, d) in due.iter_mut().zip(self.due(now)) {
            *slot = Some(d);
        }
        // Stable: ties keep the order of `ALL`.
        due.sort_by_key(|d| d.map(|(at, _)| at));
        for &(_, t) in due.iter().flatten() {
            self.stop(t);
        }
        due.into_iter().flatten().map(|(_, t)| t)
    }

    /// Disarms `timer` and says so if it is due at `now`.
    pub(crate) fn take_if_due(&mut self, timer: T, now: Instant) -> bool {
        let due = self.get(timer).is_some_and(|at| at <= now);
        if due {
            self.stop(timer);
        }
        due
    }
}

/// Asserts that `T`'s slots number its timers `0..T::ALL.len()`, each once.
#[cfg(test)]
pub(crate) fn check_slots<T: TimerSlot + std::fmt::Debug>() {
    let mut slots: Vec<usize> = T::ALL.iter().map(|t| t.slot()).collect();
    slots.sort_unstable();
    let expected: Vec<usize> = (0..T::ALL.len()).collect();
    assert_eq!(slots, expected, "slots of {:?}", T::ALL);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handled in the order C, A, B when due together.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
        C,
    }

    impl TimerSlot for T {
        const ALL: &'static [T] = &[T::C, T::A, T::B];
        fn slot(self) -> usize {
            self as usize
        }
    }

    type Table = TimerTable<T, 3>;

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn slots_are_checked() {
        check_slots::<T>();
    }

    #[test]
    fn set_get_stop_clear_earliest() {
        let t0 = crate::clock::epoch();
        let mut t = Table::default();
        assert_eq!(t.earliest(), None);
        t.arm(T::A, t0, Duration::from_secs(5));
        t.set(T::B, Some(secs(t0, 3)));
        assert_eq!((t.get(T::A), t.get(T::C)), (Some(secs(t0, 5)), None));
        assert_eq!(t.earliest(), Some(secs(t0, 3)));
        t.stop(T::B);
        assert_eq!(t.earliest(), Some(secs(t0, 5)));
        t.arm(T::C, t0, Duration::MAX);
        assert_eq!(t.get(T::C), None, "an overflowing deadline is never");
        t.clear();
        assert_eq!(t, Table::default());
    }

    #[test]
    fn pop_due_takes_the_earliest_then_the_first_in_order() {
        let t0 = crate::clock::epoch();
        let mut t = Table::default();
        t.set(T::A, Some(secs(t0, 2)));
        t.set(T::B, Some(secs(t0, 1)));
        t.set(T::C, Some(secs(t0, 2)));
        assert_eq!(t.first_due(t0), None);
        assert_eq!(t.pop_due(secs(t0, 9)), Some(T::B));
        assert_eq!(t.first_due(secs(t0, 9)), Some(T::C), "ties by ALL");
        assert_eq!(t.pop_due(secs(t0, 9)), Some(T::C));
        assert_eq!(t.pop_due(secs(t0, 9)), Some(T::A));
        assert_eq!(t.pop_due(secs(t0, 9)), None);
    }

    #[test]
    fn take_due_disarms_all_due_earliest_first() {
        let t0 = crate::clock::epoch();
        let mut t = Table::default();
        t.set(T::A, Some(secs(t0, 2)));
        t.set(T::B, Some(secs(t0, 1)));
        t.set(T::C, Some(secs(t0, 2)));
        let due: Vec<T> = t.take_due(secs(t0, 1)).collect();
        assert_eq!(due, [T::B]);
        t.set(T::B, Some(secs(t0, 3)));
        let due: Vec<T> = t.take_due(secs(t0, 2)).collect();
        assert_eq!(due, [T::C, T::A]);
        assert_eq!(t.earliest(), Some(secs(t0, 3)));
    }

    #[test]
    fn take_if_due_fires_one_timer() {
        let t0 = crate::clock::epoch();
        let mut t = Table::default();
        t.set(T::A, Some(secs(t0, 2)));
        assert!(!t.take_if_due(T::A, secs(t0, 1)));
        assert!(!t.take_if_due(T::B, secs(t0, 9)));
        assert!(t.take_if_due(T::A, secs(t0, 2)));
        assert_eq!(t.get(T::A), None);
    }
}
