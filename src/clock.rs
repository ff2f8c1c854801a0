//! Time, injected.
//!
//! Cores (rating, charging, call, SIP transactions) never read the clock; they are handed
//! `now`. Drivers read it through a [`Clock`], so tests run a 61-minute call or a day of
//! deposits in virtual time with [`ManualClock`].
//!
//! A driver also sleeps on its clock ([`Clock::sleep_until`]) until a core's next
//! deadline: a tokio timer on the [`SystemClock`], an advance past the deadline on the
//! [`ManualClock`]. So a core's timers fire when its clock says so, never by real time in a
//! test and never late in production.

use chrono::{DateTime, Utc};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A wait on a [`Clock`] ([`Clock::sleep_until`]).
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where drivers read the time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Monotonic time for timers.
    fn now(&self) -> Instant;
    /// Wall-clock time for records (CDRs, ledger entries, calling hours).
    fn wall(&self) -> DateTime<Utc>;
    /// Completes once [`now`](Clock::now) has reached `at` (at once if it has). Must be
    /// polled inside a tokio runtime.
    fn sleep_until(&self, at: Instant) -> Sleep;
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
    fn sleep_until(&self, at: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)))
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(Instant, DateTime<Utc>)>,
    /// The monotonic reading, published on every advance: it wakes the sleepers.
    ticks: watch::Sender<Instant>,
}

impl ManualClock {
    pub fn new(wall: DateTime<Utc>) -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new((now, wall)),
            ticks: watch::Sender::new(now),
        }
    }

    /// Moves both readings forward by `by`, and ends the sleeps it reaches.
    pub fn advance(&self, by: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += by;
        s.1 += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        self.ticks.send_replace(s.0);
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
    /// Ends when [`ManualClock::advance`] reaches `at`, however much real time passes.
    fn sleep_until(&self, at: Instant) -> Sleep {
        let mut ticks = self.ticks.subscribe();
        Box::pin(async move {
            let dropped = ticks.wait_for(|now| *now >= at).await.is_err();
            if dropped {
                // The clock is gone: nothing will ever advance it.
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A starting instant for tests of cores in virtual time: the cores only ever add to it.
pub fn epoch() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};

    fn poll(sleep: &mut Sleep) -> Poll<()> {
        sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_is_advanced_to_it() {
        let clock = ManualClock::new(Utc::now());
        let at = clock.now() + Duration::from_secs(30);
        let mut sleep = clock.sleep_until(at);
        assert!(poll(&mut sleep).is_pending());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(poll(&mut sleep).is_pending(), "real time does not move it");
        clock.advance(Duration::from_secs(29));
        assert!(poll(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(1));
        assert!(poll(&mut sleep).is_ready());
        assert!(
            poll(&mut clock.sleep_until(at)).is_ready(),
            "a past deadline: at once"
        );
    }

    #[tokio::test]
    async fn a_manual_sleep_wakes_its_task() {
        let clock = std::sync::Arc::new(ManualClock::new(Utc::now()));
        let sleep = clock.sleep_until(clock.now() + Duration::from_secs(60));
        let woken = tokio::spawn(sleep);
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(60));
        let done = tokio::time::timeout(Duration::from_secs(5), woken).await;
        assert!(matches!(done, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn a_system_sleep_ends_in_real_time() {
        let clock = SystemClock;
        let at = clock.now() + Duration::from_millis(20);
        clock.sleep_until(at).await;
        assert!(Instant::now() >= at);
    }
}
