//! The OIDC endpoints' in-memory helpers: one-time browser transactions (CSRF),
//! the password verifications in flight per account, and the event budget for
//! unauthenticated failures (the throttles are in [`super::throttle`]). None of
//! it is state of record: a restart forgets it all, and the log never holds it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crypto::{b64url, random_bytes};
use crate::oidc::request::AuthRequest;
use crate::oidc::throttle::address_key;

/// A browser transaction: an authorization request on its way through login and
/// consent (or a logout awaiting confirmation), with the CSRF token its forms
/// must carry. One-time: taken when done.
#[derive(Debug, Clone)]
pub struct Tx {
    pub csrf: String,
    /// SHA-256 of the browser binding cookie the transaction belongs to: its
    /// forms are accepted only from that browser (no login CSRF).
    browser: [u8; 32],
    /// The address the transaction counts against (IPv6 by /64).
    owner: String,
    pub request: Option<AuthRequest>,
    /// The session the user signed in with during this transaction.
    pub session_id: Option<String>,
    /// For logout confirmation: where to go after.
    pub logout: Option<LogoutTx>,
    created: Instant,
}

#[derive(Debug, Clone)]
pub struct LogoutTx {
    pub redirect: Option<String>,
}

const TX_TTL: Duration = Duration::from_secs(15 * 60);
/// Live transactions at most, over every address: memory stays bounded.
pub const TX_MAX: usize = 20_000;

/// The one-time browser transactions, in bounded memory. There is no cap per
/// address (behind an ingress every user shares one); when the table is full,
/// the oldest transactions of the addresses holding the most are evicted, so a
/// flood from one address (or /64) pushes out its own transactions first.
#[derive(Default)]
pub struct Transactions {
    map: Mutex<HashMap<String, Tx>>,
}

fn random_id() -> Option<String> {
    random_bytes::<24>().ok().map(|b| b64url(&b))
}

impl Transactions {
    /// Starts a transaction; returns its id (None only if no randomness).
    pub fn start(
        &self,
        ip: IpAddr,
        browser: &str,
        request: Option<AuthRequest>,
        logout: Option<LogoutTx>,
    ) -> Option<String> {
        self.start_at(ip, browser, request, logout, Instant::now(), TX_MAX)
    }

    fn start_at(
        &self,
        ip: IpAddr,
        browser: &str,
        request: Option<AuthRequest>,
        logout: Option<LogoutTx>,
        now: Instant,
        cap: usize,
    ) -> Option<String> {
        let id = random_id()?;
        let csrf = random_id()?;
        let mut map = self.map.lock().ok()?;
        if map.len() >= cap {
            evict(&mut map, now, cap);
        }
        map.insert(
            id.clone(),
            Tx {
                csrf,
                browser: crate::crypto::sha256(browser.as_bytes()),
                owner: address_key(ip),
                request,
                session_id: None,
                logout,
                created: now,
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

    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room in a full table: expired transactions go first; then, until a
/// twentieth of the table is free, the oldest transaction of whichever address
/// holds the most (max-min fairness: a flood evicts its own first, and an
/// address with a few live sign-ins keeps them).
fn evict(map: &mut HashMap<String, Tx>, now: Instant, cap: usize) {
    map.retain(|_, t| now.saturating_duration_since(t.created) < TX_TTL);
    let target = cap.saturating_sub(cap / 20 + 1);
    if map.len() <= target {
        return;
    }
    let mut by_owner: HashMap<&str, Vec<(Instant, &str)>> = HashMap::new();
    for (id, t) in map.iter() {
        by_owner
            .entry(t.owner.as_str())
            .or_default()
            .push((t.created, id.as_str()));
    }
    // Newest first, so the oldest pops from the end.
    let mut heap: std::collections::BinaryHeap<(usize, &str)> = std::collections::BinaryHeap::new();
    for (owner, list) in by_owner.iter_mut() {
        list.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        heap.push((list.len(), owner));
    }
    let mut doomed: Vec<String> = Vec::new();
    let mut len = map.len();
    while len > target {
        let Some((n, owner)) = heap.pop() else { break };
        let Some(list) = by_owner.get_mut(owner) else {
            break;
        };
        let Some((_, id)) = list.pop() else { continue };
        doomed.push(id.to_string());
        len -= 1;
        if n > 1 {
            heap.push((n - 1, owner));
        }
    }
    for id in doomed {
        map.remove(&id);
    }
}

/// Password verifications in flight per account, bounded so that
/// `login.max_failures` is the true number of guesses verified per lock window:
/// a burst of parallel guesses cannot all be checked against the state read
/// before the first of them was counted.
#[derive(Default)]
pub struct InFlight {
    map: Mutex<HashMap<String, usize>>,
}

/// One admitted verification; the count drops when it is dropped.
pub struct InFlightGuard<'a> {
    owner: &'a InFlight,
    key: String,
}

impl InFlight {
    /// Admits one more verification for `key` if fewer than `budget` are in flight.
    pub fn admit(&self, key: &str, budget: usize) -> Option<InFlightGuard<'_>> {
        let mut map = self.map.lock().ok()?;
        let n = map.entry(key.to_string()).or_insert(0);
        if *n >= budget {
            if *n == 0 {
                map.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(InFlightGuard {
            owner: self,
            key: key.to_string(),
        })
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.owner.map.lock()
            && let Some(n) = map.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
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
    }

    #[test]
    fn a_full_table_evicts_the_flooding_address_first() {
        let t = Transactions::default();
        let now = Instant::now();
        let office: IpAddr = [192, 0, 2, 1].into();
        let flood: IpAddr = [198, 51, 100, 7].into();
        let cap = 1000;
        // Behind one ingress address, 300 live sign-ins: no cap per address.
        let mine: Vec<String> = (0..300)
            .map(|_| t.start_at(office, "b", None, None, now, cap).unwrap())
            .collect();
        // Someone floods from another address far past the cap.
        for _ in 0..5000 {
            t.start_at(flood, "x", None, None, now, cap).unwrap();
        }
        assert!(t.len() <= cap);
        let kept = mine.iter().filter(|id| t.get(id).is_some()).count();
        assert_eq!(kept, 300, "the flood evicted only its own transactions");
        // Expired transactions go before any live one.
        let t = Transactions::default();
        let old = t.start_at(office, "b", None, None, now, 10).unwrap();
        let later = now + TX_TTL + Duration::from_secs(1);
        for _ in 0..10 {
            t.start_at(flood, "x", None, None, later, 10).unwrap();
        }
        assert!(t.get(&old).is_none());
    }

    #[test]
    fn in_flight_verifications_are_bounded_per_account() {
        let f = InFlight::default();
        let a = f.admit("alice", 2).unwrap();
        let b = f.admit("alice", 2).unwrap();
        assert!(f.admit("alice", 2).is_none(), "a third waits its turn");
        assert!(f.admit("bob", 2).is_some(), "per account");
        drop(a);
        assert!(f.admit("alice", 2).is_some());
        drop(b);
        assert!(f.admit("carol", 0).is_none(), "no budget, no check");
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
