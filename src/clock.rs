//! Time, injected.
//!
//! Cores (rating, charging, call, SIP transactions) never read the clock; they are handed
//! `now`. Drivers read it through a [`Clock`], so tests run a 61-minute call or a day of
//! deposits in virtual time with [`ManualClock`].

use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where drivers read the time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time for timers.
    fn now(&self) -> Instant;
    /// Wall-clock time for records (CDRs, ledger entries, calling hours).
    fn wall(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(Instant, DateTime<Utc>)>,
}

impl ManualClock {
    pub fn new(wall: DateTime<Utc>) -> Self {
        Self {
            state: Mutex::new((Instant::now(), wall)),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += by;
        s.1 += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
    }

    pub fn set_wall(&self, wall: DateTime<Utc>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = wall;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn wall(&self) -> DateTime<Utc> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// A starting instant for tests of cores in virtual time: the cores only ever add to it.
pub fn epoch() -> Instant {
    Instant::now()
}
