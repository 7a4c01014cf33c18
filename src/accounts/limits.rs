//! The abuse limits: how many tries a client address, an account or a
//! user may make in any minute before being told to wait (429 with
//! `Retry-After`). Sign-ins count per address and per account (a username
//! and an e-mail address of one user are one account), sign-ups per
//! address, password checks of a signed-in user per user. IPv6 addresses
//! count per /64, the block one subscriber is usually given. With Redis
//! configured the counts are kept there, so every replica shares them.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::clock::Clock;
use crate::config::RateLimitSettings;
use crate::storage::{AttemptStore, Counted, StoreError, Take};

/// A try that was counted, to hand back to [`AbuseLimits::give_back`] if
/// it should not count after all.
#[derive(Debug, PartialEq, Eq)]
pub struct CountedTry(Counted);

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Failed sign-ins from one client address.
    SignInPerAddress,
    /// Failed sign-ins of one account, from anywhere.
    SignInPerAccount,
    /// Sign-ups from one client address, whatever their outcome.
    SignUpPerAddress,
    /// Wrong current passwords given by one signed-in user.
    PasswordChecksPerUser,
}

impl Limit {
    const ALL: [Limit; 4] = [
        Self::SignInPerAddress,
        Self::SignInPerAccount,
        Self::SignUpPerAddress,
        Self::PasswordChecksPerUser,
    ];

    /// The key's namespace in the store.
    fn name(self) -> &'static str {
        match self {
            Self::SignInPerAddress => "signin-address",
            Self::SignInPerAccount => "signin-account",
            Self::SignUpPerAddress => "signup-address",
            Self::PasswordChecksPerUser => "password-user",
        }
    }

    /// What the client is told it did too often.
    pub fn what(self) -> &'static str {
        match self {
            Self::SignInPerAddress | Self::SignInPerAccount => "failed sign-ins",
            Self::SignUpPerAddress => "sign-ups from this address",
            Self::PasswordChecksPerUser => "wrong passwords",
        }
    }

    fn configured(self, settings: &RateLimitSettings) -> u32 {
        match self {
            Self::SignInPerAddress => settings.signin_per_minute_per_ip,
            Self::SignInPerAccount => settings.signin_per_minute_per_user,
            Self::SignUpPerAddress => settings.signup_per_minute_per_ip,
            Self::PasswordChecksPerUser => settings.password_checks_per_minute_per_user,
        }
    }
}

/// Why a try was not counted.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("too many {}: wait {retry_after_secs} s", limit.what())]
    TooMany { limit: Limit, retry_after_secs: u64 },
    /// The counts could not be read: refused, since an attacker who can
    /// make the store unreachable should not get unlimited tries.
    #[error("the abuse limits' store did not answer")]
    Unavailable(#[source] StoreError),
}

/// The configured limits (changed by a reload) and where tries are counted.
pub struct AbuseLimits {
    per_minute: [AtomicU32; 4],
    store: Arc<dyn AttemptStore>,
    clock: Clock,
}

impl AbuseLimits {
    pub fn new(settings: &RateLimitSettings, store: Arc<dyn AttemptStore>, clock: Clock) -> Self {
        Self {
            per_minute: Limit::ALL.map(|limit| AtomicU32::new(limit.configured(settings))),
            store,
            clock,
        }
    }

    /// New limits, as a reload brings them; counts so far stay.
    pub fn set_limits(&self, settings: &RateLimitSettings) {
        for (slot, limit) in self.per_minute.iter().zip(Limit::ALL) {
            slot.store(limit.configured(settings), Ordering::Relaxed);
        }
    }

    fn per_minute(&self, limit: Limit) -> u32 {
        self.per_minute[limit as usize].load(Ordering::Relaxed)
    }

    /// Counts a try of `limit` for `key`, or refuses it if the key has no
    /// tries left. `None` when the limit is off (0). Counted before the
    /// work it guards, so tries sent all at once cannot all pass before
    /// the first failure is known; [`give_back`](Self::give_back) takes a
    /// try back that should not count (it succeeded).
    pub async fn take(&self, limit: Limit, key: &str) -> Result<Option<CountedTry>, LimitError> {
        let per_minute = self.per_minute(limit);
        if per_minute == 0 {
            return Ok(None);
        }
        let key = format!("{}:{key}", limit.name());
        let now_ms = self.clock.now_millis();
        match self.store.take(&key, per_minute, now_ms).await {
            Ok(Take::Counted(counted)) => Ok(Some(CountedTry(counted))),
            Ok(Take::Wait(ms)) => Err(LimitError::TooMany {
                limit,
                // Whole seconds, rounded up, at least one.
                retry_after_secs: u64::try_from(ms.max(1)).unwrap_or(1).div_ceil(1000),
            }),
            Err(err) => Err(LimitError::Unavailable(err)),
        }
    }

    /// Takes back a try that should not count. A failure only costs the
    /// caller one try of its allowance, so it is logged, not returned.
    pub async fn give_back(&self, counted: Option<CountedTry>) {
        if let Some(CountedTry(counted)) = counted
            && let Err(err) = self.store.give_back(&counted).await
        {
            tracing::warn!(error = %err, "a try could not be taken back");
        }
    }
}

/// The key a client address is counted under: an IPv4 address (also one
/// mapped into IPv6) as itself, an IPv6 address as its /64.
pub fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & !(u128::MAX >> 64);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryAttempts;

    fn limits(settings: RateLimitSettings) -> (AbuseLimits, Clock) {
        let clock = Clock::manual(chrono::Utc::now());
        let store = Arc::new(MemoryAttempts::default());
        (AbuseLimits::new(&settings, store, clock.clone()), clock)
    }

    fn settings(per_account: u32) -> RateLimitSettings {
        RateLimitSettings {
            signin_per_minute_per_ip: 0,
            signin_per_minute_per_user: per_account,
            signup_per_minute_per_ip: 0,
            password_checks_per_minute_per_user: 0,
        }
    }

    fn wait(outcome: Result<Option<CountedTry>, LimitError>) -> u64 {
        match outcome {
            Err(LimitError::TooMany {
                retry_after_secs, ..
            }) => retry_after_secs,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[actix_web::test]
    async fn a_key_is_held_after_its_limit_until_the_oldest_try_lapses() {
        let (limits, clock) = limits(settings(3));
        let account = Limit::SignInPerAccount;
        for _ in 0..3 {
            assert!(limits.take(account, "ada").await.unwrap().is_some());
            clock.advance(std::time::Duration::from_secs(10));
        }
        // Tries at 0, 10 and 20 s; now 30 s: the first lapses at 60 s.
        assert_eq!(wait(limits.take(account, "ada").await), 30);
        assert!(
            limits.take(account, "grace").await.is_ok(),
            "others are free"
        );
        clock.advance(std::time::Duration::from_millis(29_999));
        assert_eq!(wait(limits.take(account, "ada").await), 1);
        clock.advance(std::time::Duration::from_millis(1));
        assert!(limits.take(account, "ada").await.is_ok());
    }

    #[actix_web::test]
    async fn a_try_given_back_frees_its_place_and_zero_means_no_limit() {
        let (limits, _) = limits(settings(1));
        let account = Limit::SignInPerAccount;
        let counted = limits.take(account, "ada").await.unwrap();
        wait(limits.take(account, "ada").await);
        limits.give_back(counted).await;
        assert!(limits.take(account, "ada").await.is_ok());

        limits.set_limits(&settings(0));
        for _ in 0..100 {
            assert_eq!(limits.take(account, "ada").await.unwrap(), None);
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
}
