//! The OIDC endpoints' in-memory helpers: one-time browser transactions (CSRF),
//! login throttling, the event budget for unauthenticated failures, and the
//! signing-key cache. None of it is state of record: a restart forgets it all,
//! and the log never holds it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crypto::{b64url, random_bytes};
use crate::oidc::request::AuthRequest;

/// A browser transaction: an authorization request on its way through login and
/// consent, with the CSRF token its forms must carry. One-time: taken when done.
#[derive(Debug, Clone)]
pub struct Tx {
    pub csrf: String,
    /// SHA-256 of the browser binding cookie the transaction belongs to: its
    /// forms are accepted only from that browser (no login CSRF).
    browser: [u8; 32],
    ip: IpAddr,
    pub request: Option<AuthRequest>,
    /// The session the user signed in with during this transaction.
    pub session_id: Option<String>,
    /// For logout confirmation: the session to end and where to go after.
    pub logout: Option<LogoutTx>,
    created: Instant,
}

#[derive(Debug, Clone)]
pub struct LogoutTx {
    pub redirect: Option<String>,
}

const TX_TTL: Duration = Duration::from_secs(15 * 60);
const TX_MAX: usize = 20_000;
const TX_PER_IP: usize = 200;

#[derive(Default)]
pub struct Transactions {
    map: Mutex<HashMap<String, Tx>>,
}

fn random_id() -> String {
    random_bytes::<24>().map(|b| b64url(&b)).unwrap_or_default()
}

impl Transactions {
    /// Starts a transaction; returns its id.
    pub fn start(
        &self,
        ip: IpAddr,
        browser: &str,
        request: Option<AuthRequest>,
        logout: Option<LogoutTx>,
    ) -> Option<String> {
        let id = random_id();
        let csrf = random_id();
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let mut map = self.map.lock().ok()?;
        // One address cannot crowd out everyone else's sign-ins.
        let mine = map
            .values()
            .filter(|t| t.ip == ip && t.created.elapsed() < TX_TTL)
            .count();
        if mine >= TX_PER_IP {
            return None;
        }
        if map.len() >= TX_MAX {
            map.retain(|_, t| t.created.elapsed() < TX_TTL);
            if map.len() >= TX_MAX {
                // Still full of live transactions: drop the oldest.
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, t)| t.created)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let browser = crate::crypto::sha256(browser.as_bytes());
        map.insert(
            id.clone(),
            Tx {
                csrf,
                browser,
                ip,
                request,
                session_id: None,
                logout,
                created: Instant::now(),
            },
        );
        Some(id)
    }

    /// The transaction, if it exists and is fresh.
    pub fn get(&self, id: &str) -> Option<Tx> {
        let map = self.map.lock().ok()?;
        map.get(id)
            .filter(|t| t.created.elapsed() < TX_TTL)
            .cloned()
    }

    /// The transaction if `csrf` is its token (constant time).
    pub fn check(&self, id: &str, csrf: &str, browser: &str) -> Option<Tx> {
        let b = crate::crypto::sha256(browser.as_bytes());
        self.get(id).filter(|t| {
            crate::crypto::ct_eq(t.csrf.as_bytes(), csrf.as_bytes())
                & crate::crypto::ct_eq(&t.browser, &b)
        })
    }

    /// Checks and ends the transaction in one step: of two concurrent
    /// submissions of one form, only one gets it.
    pub fn take_checked(&self, id: &str, csrf: &str, browser: &str) -> Option<Tx> {
        let b = crate::crypto::sha256(browser.as_bytes());
        let mut map = self.map.lock().ok()?;
        let ok = map.get(id).is_some_and(|t| {
            t.created.elapsed() < TX_TTL
                && crate::crypto::ct_eq(t.csrf.as_bytes(), csrf.as_bytes())
                    & crate::crypto::ct_eq(&t.browser, &b)
        });
        if ok { map.remove(id) } else { None }
    }

    pub fn set_session(&self, id: &str, session_id: &str) {
        if let Ok(mut map) = self.map.lock()
            && let Some(t) = map.get_mut(id)
        {
            t.session_id = Some(session_id.to_string());
        }
    }

    /// Ends the transaction: its forms cannot be replayed.
    pub fn take(&self, id: &str) -> Option<Tx> {
        self.map.lock().ok()?.remove(id)
    }
}

/// Growing delays after failed sign-ins, per key ((username, ip) and ip), in a
/// bounded map.
pub struct Throttle {
    map: Mutex<HashMap<String, (u32, Instant)>>,
    max_entries: usize,
    /// Failures allowed before delays start.
    free: u32,
}

impl Throttle {
    pub fn new(free: u32, max_entries: usize) -> Throttle {
        Throttle {
            map: Mutex::new(HashMap::new()),
            max_entries,
            free,
        }
    }

    fn delay(failures: u32, free: u32) -> Duration {
        if failures < free {
            return Duration::ZERO;
        }
        let exp = (failures - free).min(8);
        Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
    }

    /// How long the caller must still wait, if at all.
    pub fn wait(&self, key: &str) -> Option<Duration> {
        let map = self.map.lock().ok()?;
        let (failures, last) = map.get(key)?;
        let needed = Throttle::delay(*failures, self.free);
        let waited = last.elapsed();
        (waited < needed).then(|| needed - waited)
    }

    pub fn fail(&self, key: &str) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.max_entries && !map.contains_key(key) {
                // Forget entries whose delay has passed; if none, the stalest.
                map.retain(|_, (f, last)| last.elapsed() < Throttle::delay(*f, self.free));
                if map.len() >= self.max_entries
                    && let Some(k) = map
                        .iter()
                        .min_by_key(|(_, (_, l))| *l)
                        .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
            let e = map.entry(key.to_string()).or_insert((0, Instant::now()));
            e.0 = e.0.saturating_add(1);
            e.1 = Instant::now();
        }
    }

    /// Takes back one counted attempt (it succeeded).
    pub fn undo(&self, key: &str) {
        if let Ok(mut map) = self.map.lock()
            && let Some(e) = map.get_mut(key)
        {
            e.0 = e.0.saturating_sub(1);
            if e.0 == 0 {
                map.remove(key);
            }
        }
    }

    pub fn succeed(&self, key: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }
}

/// What to record of one more failure from an unauthenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Record it as an event.
    Event,
    /// The threshold was just passed: record one `security.throttled` for the
    /// window (with the count so far), then nothing more until the window ends.
    Throttled { count: u64, window_start: Instant },
    /// Count it in metrics only.
    MetricsOnly,
}

/// (ip, reason, client).
type BudgetKey = (IpAddr, String, String);

/// Per (ip, reason, client) and window, the first `threshold` failures become
/// events; beyond that one `security.throttled` folds the rest. Unauthenticated
/// callers cannot grow the log without bound.
pub struct EventBudget {
    map: Mutex<HashMap<BudgetKey, (Instant, u64)>>,
    threshold: u64,
    window: Duration,
}

impl EventBudget {
    pub fn new(threshold: u64, window: Duration) -> EventBudget {
        EventBudget {
            map: Mutex::new(HashMap::new()),
            threshold,
            window,
        }
    }

    pub fn spend(&self, ip: IpAddr, reason: &str, client: &str) -> Budget {
        let Ok(mut map) = self.map.lock() else {
            return Budget::MetricsOnly;
        };
        if map.len() > 50_000 {
            let window = self.window;
            map.retain(|_, (start, _)| start.elapsed() < window);
            if map.len() > 50_000 {
                // A flood from many addresses: memory stays bounded; the
                // counts start again (events stay bounded per window and key).
                map.clear();
            }
        }
        let entry = map
            .entry((ip, reason.to_string(), client.to_string()))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        match entry.1 {
            n if n <= self.threshold => Budget::Event,
            n if n == self.threshold + 1 => Budget::Throttled {
                count: n,
                window_start: entry.0,
            },
            _ => Budget::MetricsOnly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_one_time_and_bound_to_csrf_and_browser() {
        let t = Transactions::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let id = t.start(ip, "browser-a", None, None).unwrap();
        let csrf = t.get(&id).unwrap().csrf;
        assert!(t.check(&id, "forged", "browser-a").is_none());
        assert!(
            t.check(&id, &csrf, "browser-b").is_none(),
            "another browser cannot submit it"
        );
        assert!(t.check(&id, &csrf, "browser-a").is_some());
        assert!(t.take_checked(&id, &csrf, "browser-a").is_some());
        assert!(
            t.take_checked(&id, &csrf, "browser-a").is_none(),
            "taken transactions are gone"
        );
        for _ in 0..TX_PER_IP {
            assert!(t.start(ip, "b", None, None).is_some());
        }
        assert!(
            t.start(ip, "b", None, None).is_none(),
            "one address has a cap"
        );
        assert!(t.start([192, 0, 2, 2].into(), "b", None, None).is_some());
    }

    #[test]
    fn throttle_delays_grow_after_free_failures() {
        let th = Throttle::new(3, 10);
        for _ in 0..3 {
            assert!(th.wait("k").is_none());
            th.fail("k");
        }
        let w = th.wait("k").unwrap();
        assert!(w > Duration::from_millis(900) && w <= Duration::from_secs(1));
        th.fail("k");
        assert!(th.wait("k").unwrap() > Duration::from_millis(1900));
        th.succeed("k");
        assert!(th.wait("k").is_none());
    }

    #[test]
    fn event_budget_folds_floods_into_one_throttled_event() {
        let b = EventBudget::new(3, Duration::from_secs(60));
        let ip: IpAddr = [192, 0, 2, 1].into();
        let got: Vec<Budget> = (0..6)
            .map(|_| b.spend(ip, "invalid_request", "c1"))
            .collect();
        assert_eq!(got[..3], [Budget::Event, Budget::Event, Budget::Event]);
        assert!(matches!(got[3], Budget::Throttled { count: 4, .. }));
        assert_eq!(got[4..], [Budget::MetricsOnly, Budget::MetricsOnly]);
        assert_eq!(
            b.spend(ip, "invalid_request", "c2"),
            Budget::Event,
            "per client"
        );
    }
}
