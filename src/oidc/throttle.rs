//! Throttles for unauthenticated callers: decaying failure scores with growing
//! waits, per key, in bounded memory.
//!
//! A key's score is the number of recent failures, each one fading with a
//! half-life, so an address that made a few typos an hour ago starts clean
//! again and nothing needs a restart to forget. Past a policy's free failures
//! every further attempt waits twice as long as the one before (capped); the
//! wait runs from the latest failure. Nothing here is state of record: a
//! restart forgets it, and the log never holds it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How hard one kind of key is throttled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Failures (as a decayed score) allowed before waits start.
    pub free: f64,
    /// The first wait; each further failure doubles it.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How fast a failure is forgotten.
    pub half_life: Duration,
}

impl Policy {
    /// An account, or an (account, address) pair: few free attempts, long waits.
    pub const HARD: Policy = Policy {
        free: 3.0,
        base: Duration::from_secs(1),
        max: Duration::from_secs(300),
        half_life: Duration::from_secs(15 * 60),
    };
    /// A bare address, which an office behind NAT shares: many free attempts,
    /// short waits, so one person's typos never hold back a colleague.
    pub const LOOSE: Policy = Policy {
        free: 30.0,
        base: Duration::from_secs(1),
        max: Duration::from_secs(30),
        half_life: Duration::from_secs(10 * 60),
    };

    fn wait(&self, score: f64, since_last: Duration) -> Option<Duration> {
        if score < self.free {
            return None;
        }
        let steps = (score - self.free).floor().min(20.0) as u32;
        let needed = self
            .base
            .saturating_mul(1u32 << steps.min(16))
            .min(self.max);
        needed.checked_sub(since_last).filter(|w| !w.is_zero())
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The score right after the latest failure.
    score: f64,
    last: Instant,
}

impl Entry {
    fn decayed(&self, now: Instant, half_life: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.score * 0.5f64.powf(elapsed / half_life.as_secs_f64().max(1e-3))
    }
}

/// Decaying failure scores for one policy.
pub struct Throttle {
    policy: Policy,
    map: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
}

impl Throttle {
    pub fn new(policy: Policy, max_entries: usize) -> Throttle {
        Throttle {
            policy,
            map: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    /// How long the caller must still wait, if at all.
    pub fn wait(&self, key: &str) -> Option<Duration> {
        self.wait_at(key, Instant::now())
    }

    pub fn wait_at(&self, key: &str, now: Instant) -> Option<Duration> {
        let map = self.map.lock().ok()?;
        let e = map.get(key)?;
        // The wait is set by the score the latest failure left; fading lowers
        // the score the next failure starts from.
        self.policy
            .wait(e.score, now.saturating_duration_since(e.last))
    }

    /// Counts one failure (or one attempt not yet known to succeed).
    pub fn fail(&self, key: &str) {
        self.fail_at(key, Instant::now());
    }

    pub fn fail_at(&self, key: &str, now: Instant) {
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        if map.len() >= self.max_entries && !map.contains_key(key) {
            // Forget what has faded; if everything is still fresh, the weakest.
            let half_life = self.policy.half_life;
            map.retain(|_, e| e.decayed(now, half_life) >= 0.5);
            if map.len() >= self.max_entries
                && let Some(k) = map
                    .iter()
                    .min_by(|a, b| {
                        a.1.decayed(now, half_life)
                            .total_cmp(&b.1.decayed(now, half_life))
                    })
                    .map(|(k, _)| k.clone())
            {
                map.remove(&k);
            }
        }
        let half_life = self.policy.half_life;
        let e = map.entry(key.to_string()).or_insert(Entry {
            score: 0.0,
            last: now,
        });
        e.score = e.decayed(now, half_life) + 1.0;
        e.last = now;
    }

    /// Takes back one counted attempt (it succeeded).
    pub fn undo(&self, key: &str) {
        if let Ok(mut map) = self.map.lock()
            && let Some(e) = map.get_mut(key)
        {
            e.score -= 1.0;
            if e.score < 0.5 {
                map.remove(key);
            }
        }
    }

    /// Forgets the key (a successful sign-in clears its own account's count).
    pub fn forgive(&self, key: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The address as throttles see it: IPv4 as is, IPv6 by its /64 (one
/// customer's whole network, which hands its hosts addresses at will).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A wait as people read it: whole seconds, rounded up, in correct English.
pub fn wait_text(wait: Duration) -> String {
    let secs = wait_seconds(wait);
    match secs {
        1 => "1 second".to_string(),
        s if s < 120 => format!("{s} seconds"),
        s => {
            let m = s.div_ceil(60);
            format!("{m} minutes")
        }
    }
}

/// The `Retry-After` value of a wait: whole seconds, rounded up, at least 1.
pub fn wait_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_failures_and_double() {
        let th = Throttle::new(Policy::HARD, 10);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(th.wait_at("k", t0).is_none(), "attempt {i} is free");
            th.fail_at("k", t0);
        }
        let w = th.wait_at("k", t0).unwrap();
        assert_eq!(w, Duration::from_secs(1));
        th.fail_at("k", t0);
        assert_eq!(th.wait_at("k", t0).unwrap(), Duration::from_secs(2));
        // The wait runs from the latest failure.
        assert_eq!(
            th.wait_at("k", t0 + Duration::from_millis(1500)).unwrap(),
            Duration::from_millis(500)
        );
        assert!(th.wait_at("k", t0 + Duration::from_secs(2)).is_none());
        th.forgive("k");
        assert!(th.wait_at("k", t0).is_none());
    }

    #[test]
    fn failures_fade_so_an_address_starts_clean_again() {
        let th = Throttle::new(Policy::HARD, 10);
        let t0 = Instant::now();
        for _ in 0..6 {
            th.fail_at("k", t0);
        }
        assert!(th.wait_at("k", t0).is_some());
        // An hour later (four half-lives) the score is below one failure.
        let later = t0 + Duration::from_secs(3600);
        assert!(th.wait_at("k", later).is_none());
        th.fail_at("k", later);
        assert!(th.wait_at("k", later).is_none(), "one fresh typo is free");
    }

    #[test]
    fn the_loose_policy_lets_an_office_make_typos() {
        let th = Throttle::new(Policy::LOOSE, 10);
        let t0 = Instant::now();
        for _ in 0..29 {
            th.fail_at("office", t0);
        }
        assert!(th.wait_at("office", t0).is_none());
        th.fail_at("office", t0);
        assert!(th.wait_at("office", t0).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let th = Throttle::new(Policy::HARD, 100);
        let t0 = Instant::now();
        for i in 0..1000 {
            th.fail_at(&format!("k{i}"), t0);
        }
        assert!(th.len() <= 100);
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(address_key("192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1"
        );
    }

    #[test]
    fn waits_read_right() {
        assert_eq!(wait_text(Duration::from_millis(300)), "1 second");
        assert_eq!(wait_text(Duration::from_millis(1001)), "2 seconds");
        assert_eq!(wait_text(Duration::from_secs(127)), "3 minutes");
        assert_eq!(wait_seconds(Duration::from_millis(1400)), 2);
        assert_eq!(wait_seconds(Duration::ZERO), 1);
    }
}
