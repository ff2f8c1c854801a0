//! Flood control: a sans-IO token bucket fed `now`.

use std::time::Instant;

/// Rate and burst of the bucket that admits new requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodConfig {
    /// Tokens per second; 0 disables flood control.
    pub rate: u32,
    /// Bucket size: requests admitted at once after a quiet period.
    pub burst: u32,
}

impl FloodConfig {
    /// `rate` per second with one second's worth of burst.
    pub fn per_second(rate: u32) -> FloodConfig {
        FloodConfig { rate, burst: rate }
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
}

impl FloodControl {
    pub fn new(cfg: FloodConfig) -> FloodControl {
        let bucket = (cfg.rate > 0).then(|| TokenBucket::new(cfg.rate, cfg.burst));
        FloodControl { bucket }
    }

    /// `Ok(())` to admit, `Err(retry_after_secs)` to refuse.
    pub fn admit(&mut self, now: Instant) -> Result<(), u32> {
        match &mut self.bucket {
            None => Ok(()),
            Some(b) if b.try_take(now) => Ok(()),
            Some(b) => Err(b.retry_after_secs()),
        }
    }
}
