//! A token bucket per add-on: how often a partner may call the Platform API.
//!
//! A partner holding a valid token could otherwise make the host write a
//! release and an audit entry per request, as fast as it can send them —
//! disk spent on the host's side for nothing but the partner's effort.
//! Heroku's Platform API meters each account the same way: a bucket of
//! `per_hour` requests, refilled continuously at `per_hour` an hour.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests an hour each add-on may make, refilled continuously; 0 turns the
/// limit off.
pub struct RateLimit {
    per_hour: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A limit of `per_hour` requests an hour per key (0: none).
    pub fn new(per_hour: u32) -> Self {
        RateLimit {
            per_hour,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Requests an hour each key may make (0: unlimited).
    pub fn per_hour(&self) -> u32 {
        self.per_hour
    }

    /// Takes one request from `key`'s bucket, or says how long until one is
    /// there. Keys are add-on ids from verified tokens, so the map holds at
    /// most one bucket per installed add-on.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_hour == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_hour);
        let per_second = capacity / 3600.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_gets_its_burst_then_one_request_per_refill() {
        let limit = RateLimit::new(3600); // one a second
        let t0 = Instant::now();
        for _ in 0..3600 {
            assert!(limit.take_at("kv", t0).is_ok());
        }
        let wait = limit.take_at("kv", t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        // Another add-on's bucket is its own.
        assert!(limit.take_at("flags", t0).is_ok());
        // A second later, one more.
        let t1 = t0 + Duration::from_secs(1);
        assert!(limit.take_at("kv", t1).is_ok());
        assert!(limit.take_at("kv", t1).is_err());
    }

    #[test]
    fn zero_is_no_limit() {
        let limit = RateLimit::new(0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert!(limit.take_at("kv", t0).is_ok());
        }
    }
}
