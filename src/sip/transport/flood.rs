//! Flood control: sans-IO token buckets fed `now`, one global and
//! optionally one per source IP address.
//!
//! A request is asked of its source's bucket first, then of the global one,
//! so one source never spends more than its own rate of the global budget and
//! the rest stays for everyone else (`sip.per_source_requests_per_second`).
//! Which requests are asked at all is the endpoint's business: in-dialog
//! requests of live dialogs never are (see [`super::Endpoint`]).
//!
//! The per-source table is bounded ([`MAX_SOURCES`]): when full, buckets
//! that have refilled completely (idle sources) are evicted first, then an
//! arbitrary one, so a spoofed-source flood costs bounded memory and at
//! worst forgets a source's history.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Most sources tracked by the per-source buckets.
pub(super) const MAX_SOURCES: usize = 4096;

/// Rate and burst of the bucket that admits new requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodConfig {
    /// Tokens per second; 0 disables flood control.
    pub rate: u32,
    /// Bucket size: requests admitted at once after a quiet period.
    pub burst: u32,
    /// Tokens per second for each source IP; 0 disables.
    pub per_source: u32,
    /// Bucket size of each source (requests one source may send at once).
    pub per_source_burst: u32,
}

impl FloodConfig {
    /// `rate` per second with one second's worth of burst.
    pub fn per_second(rate: u32) -> FloodConfig {
        FloodConfig {
            rate,
            burst: rate,
            per_source: 0,
            per_source_burst: 0,
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
    }

    /// True when the bucket would be full at `now` (its source is idle).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whole seconds until a token is available (at least 1).
    pub fn retry_after_secs(&self) -> u32 {
        if self.rate <= 0.0 {
            return 1;
        }
        let wait = ((1.0 - self.tokens) / self.rate).ceil();
        // Bounded by 1/rate ≤ 1 s for rate ≥ 1, so the cast cannot truncate.
        (wait as u32).max(1)
    }
}

/// Admits or refuses new requests.
#[derive(Debug, Clone)]
pub struct FloodControl {
    bucket: Option<TokenBucket>,
    per_source: u32,
    per_source_burst: u32,
    sources: HashMap<IpAddr, TokenBucket>,
}

impl FloodControl {
    pub fn new(cfg: FloodConfig) -> FloodControl {
        let bucket = (cfg.rate > 0).then(|| TokenBucket::new(cfg.rate, cfg.burst));
        FloodControl {
            bucket,
            per_source: cfg.per_source,
            per_source_burst: cfg.per_source_burst.max(1),
            sources: HashMap::new(),
        }
    }

    /// `Ok(())` to admit a new request from `source`, `Err(retry_after_secs)`
    /// to refuse. The source's own bucket is asked first, so a noisy source
    /// does not spend the global tokens.
    pub fn admit(&mut self, now: Instant, source: IpAddr) -> Result<(), u32> {
        self.admit_source(now, source)?;
        let Some(b) = &mut self.bucket else {
            return Ok(());
        };
        if b.try_take(now) {
            Ok(())
        } else {
            Err(b.retry_after_secs())
        }
    }

    fn admit_source(&mut self, now: Instant, source: IpAddr) -> Result<(), u32> {
        if self.per_source == 0 {
            return Ok(());
        }
        if !self.sources.contains_key(&source) {
            self.make_room(now);
        }
        let (rate, burst) = (self.per_source, self.per_source_burst);
        let b = self
            .sources
            .entry(source)
            .or_insert_with(|| TokenBucket::new(rate, burst));
        if b.try_take(now) {
            Ok(())
        } else {
            Err(b.retry_after_secs())
        }
    }

    /// Keeps the per-source table under [`MAX_SOURCES`].
    fn make_room(&mut self, now: Instant) {
        if self.sources.len() < MAX_SOURCES {
            return;
        }
        self.sources.retain(|_, b| !b.is_full(now));
        if self.sources.len() >= MAX_SOURCES {
            let victim = self.sources.keys().next().copied();
            if let Some(v) = victim {
                self.sources.remove(&v);
            }
        }
    }

    /// Sources currently tracked.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }
}
