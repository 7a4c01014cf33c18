//! Failed sign-ins per client address and per account, in a sliding
//! one-minute window. Only failures count (a try in flight counts until it
//! succeeds): a user who signs in rightly is never held back, while guessing — one account from many addresses, or
//! many accounts from one — runs out of tries and waits, without a bcrypt
//! check being spent on it. Kept per process: each replica counts its own.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

const WINDOW_MS: i64 = 60_000;

/// The failures each key had in the last minute, oldest first.
struct Window<K> {
    failures: HashMap<K, VecDeque<i64>>,
    /// Lapsed keys are dropped when the map reaches this size, which then
    /// doubles what is left: pruning costs O(1) per failure, amortised.
    prune_at: usize,
}

impl<K: Hash + Eq> Window<K> {
    fn new() -> Self {
        Self {
            failures: HashMap::new(),
            prune_at: 1024,
        }
    }

    /// Milliseconds until `key` may try again, if it has used up `limit`.
    fn wait_ms(&mut self, key: &K, limit: u32, now_ms: i64) -> Option<i64> {
        if limit == 0 {
            return None;
        }
        let times = self.failures.get_mut(key)?;
        while times.front().is_some_and(|t| *t <= now_ms - WINDOW_MS) {
            times.pop_front();
        }
        if times.len() < limit as usize {
            return None;
        }
        // The try that frees a place is the one `limit` failures back.
        let freeing = times[times.len() - limit as usize];
        Some(freeing + WINDOW_MS - now_ms)
    }

    /// Takes back one try recorded at `at_ms`, if it is still held.
    fn forgive(&mut self, key: &K, at_ms: i64) {
        if let Some(times) = self.failures.get_mut(key)
            && let Some(i) = times.iter().rposition(|t| *t == at_ms)
        {
            times.remove(i);
        }
    }

    fn record(&mut self, key: K, limit: u32, now_ms: i64) {
        if limit == 0 {
            return;
        }
        let times = self.failures.entry(key).or_default();
        times.push_back(now_ms);
        // Only the newest `limit` decide anything.
        while times.len() > limit as usize {
            times.pop_front();
        }
        if self.failures.len() >= self.prune_at {
            self.failures
                .retain(|_, times| times.back().is_some_and(|t| *t > now_ms - WINDOW_MS));
            self.prune_at = (self.failures.len() * 2).max(1024);
        }
    }
}

/// The limits and the two windows, shared by every HTTP worker.
pub struct FailedSignIns {
    per_address: AtomicU32,
    per_account: AtomicU32,
    by_address: Mutex<Window<IpAddr>>,
    by_account: Mutex<Window<String>>,
}

impl FailedSignIns {
    /// At most `per_address` failures a minute from one client address and
    /// `per_account` for one account; 0 means no limit.
    pub fn new(per_address: u32, per_account: u32) -> Self {
        Self {
            per_address: AtomicU32::new(per_address),
            per_account: AtomicU32::new(per_account),
            by_address: Mutex::new(Window::new()),
            by_account: Mutex::new(Window::new()),
        }
    }

    /// New limits, as a reload brings them; counts so far stay.
    pub fn set_limits(&self, per_address: u32, per_account: u32) {
        self.per_address.store(per_address, Ordering::Relaxed);
        self.per_account.store(per_account, Ordering::Relaxed);
    }

    /// Starts a sign-in: `Err(seconds)` to wait when the address or the
    /// account (a login in canonical form) has no tries left; otherwise the
    /// try is counted as failed until [`forgive`](Self::forgive) takes it
    /// back. Counted before the password is checked, so sign-ins sent all
    /// at once cannot all pass before the first failure is known.
    pub fn begin(&self, address: Option<IpAddr>, account: &str, now_ms: i64) -> Result<(), u64> {
        let (per_address, per_account) = self.limits();
        // Both windows held at once: the check and the count are one step.
        let mut by_address = lock(&self.by_address);
        let mut by_account = lock(&self.by_account);
        let account = account.to_owned();
        let wait_address = address.and_then(|ip| by_address.wait_ms(&ip, per_address, now_ms));
        let wait_account = by_account.wait_ms(&account, per_account, now_ms);
        if let Some(ms) = wait_address.max(wait_account) {
            // Whole seconds, rounded up, at least one.
            return Err(u64::try_from(ms.max(1)).unwrap_or(1).div_ceil(1000));
        }
        if let Some(ip) = address {
            by_address.record(ip, per_address, now_ms);
        }
        by_account.record(account, per_account, now_ms);
        Ok(())
    }

    /// Takes back the try [`begin`](Self::begin) counted at `at_ms`: it
    /// succeeded, or failed for a reason other than the credentials.
    pub fn forgive(&self, address: Option<IpAddr>, account: &str, at_ms: i64) {
        if let Some(ip) = address {
            lock(&self.by_address).forgive(&ip, at_ms);
        }
        lock(&self.by_account).forgive(&account.to_owned(), at_ms);
    }

    fn limits(&self) -> (u32, u32) {
        (
            self.per_address.load(Ordering::Relaxed),
            self.per_account.load(Ordering::Relaxed),
        )
    }
}

/// A panic elsewhere cannot leave a window half-changed: every change is
/// one push or pop.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    /// A try that failed on its credentials: begun and never forgiven.
    fn fail(limits: &FailedSignIns, address: Option<IpAddr>, account: &str, at: i64) {
        assert_eq!(limits.begin(address, account, at), Ok(()));
    }

    #[test]
    fn the_account_is_held_after_its_limit_until_the_oldest_failure_lapses() {
        let limits = FailedSignIns::new(0, 3);
        for t in [0, 10_000, 20_000] {
            fail(&limits, HOME, "ada", t);
        }
        assert_eq!(limits.begin(HOME, "ada", 20_000), Err(40));
        assert_eq!(
            limits.begin(HOME, "grace", 20_000),
            Ok(()),
            "others are free"
        );
        assert_eq!(limits.begin(HOME, "ada", 59_999), Err(1));
        assert_eq!(limits.begin(HOME, "ada", 60_000), Ok(()));
    }

    #[test]
    fn the_address_is_held_whatever_account_it_tries() {
        let limits = FailedSignIns::new(2, 0);
        fail(&limits, HOME, "a", 0);
        fail(&limits, HOME, "b", 0);
        assert_eq!(limits.begin(HOME, "c", 1_000), Err(59));
        let elsewhere = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(limits.begin(elsewhere, "c", 1_000), Ok(()));
    }

    #[test]
    fn tries_in_flight_count_until_forgiven() {
        let limits = FailedSignIns::new(0, 2);
        // Two sent at once take the whole allowance before either is known.
        assert_eq!(limits.begin(HOME, "ada", 0), Ok(()));
        assert_eq!(limits.begin(HOME, "ada", 0), Ok(()));
        assert_eq!(limits.begin(HOME, "ada", 0), Err(60));
        // Both succeed: the account is free again.
        limits.forgive(HOME, "ada", 0);
        limits.forgive(HOME, "ada", 0);
        assert_eq!(limits.begin(HOME, "ada", 1), Ok(()));
    }

    #[test]
    fn zero_means_no_limit_and_new_limits_apply_at_once() {
        let limits = FailedSignIns::new(0, 0);
        for t in 0..100 {
            fail(&limits, HOME, "ada", t);
        }
        limits.set_limits(0, 1);
        fail(&limits, HOME, "ada", 200);
        assert!(limits.begin(HOME, "ada", 300).is_err());
    }

    #[test]
    fn lapsed_keys_are_pruned_as_the_map_grows() {
        let limits = FailedSignIns::new(0, 1);
        for n in 0..5_000 {
            fail(&limits, HOME, &format!("user-{n}"), i64::from(n) * 100);
        }
        // Only the last minute's accounts (600 of them) are kept, give or
        // take what came since the last prune.
        assert!(lock(&limits.by_account).failures.len() < 2_048);
    }
}
