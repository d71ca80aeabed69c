//! The per-conversation rate limit of `POST /v1/conversations/{id}/messages`: a token
//! bucket per conversation (`[api] messages_per_minute` sustained, `messages_burst` at
//! once). Kept in memory: with several replicas each one applies it on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before idle (full) ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    capacity: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` sustained (0: unlimited), up to `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            capacity: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when there is none, `wait` being
    /// when the next one is there.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if buckets.len() > PRUNE_ABOVE {
            let (rate, cap) = (self.per_second, self.capacity);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < cap
            });
        }
        let (tokens, at) = buckets
            .entry(key.to_string())
            .or_insert((self.capacity, now));
        let refilled = (*tokens
            + now.saturating_duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.capacity);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let l = RateLimiter::new(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
        }
        let wait = l.check("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // Other conversations are not affected.
        assert!(l.check("b", t0).is_ok());
        // One token per second comes back.
        assert!(l.check("a", t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.check("a", t0 + Duration::from_millis(1100)).is_err());
        assert!(RateLimiter::new(0, 1).check("a", t0).is_ok());
    }
}
