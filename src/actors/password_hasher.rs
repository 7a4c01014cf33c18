//! The password hasher pool: bcrypt on dedicated threads (a `SyncArbiter`),
//! so a sign-in storm queues here instead of stalling HTTP workers. The
//! [`HasherPool`] handle resizes it while the service runs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};

use crate::auth::password::{self, HashError};
use crate::domain::Password;
use crate::telemetry::Metrics;

/// The hasher threads, behind a handle that can swap them for a pool of
/// another size: requests go to the new threads at once, and the old ones
/// finish what they hold and exit. Cheap to share.
pub struct HasherPool {
    current: RwLock<Addr<PasswordHasher>>,
    /// Threads asked for.
    target: AtomicUsize,
    /// Threads running, old pools' included until they exit.
    live: Arc<AtomicUsize>,
    cost: u32,
    metrics: Metrics,
}

impl HasherPool {
    /// Starts `threads` hasher threads at bcrypt `cost`.
    pub fn start(threads: usize, cost: u32, metrics: Metrics) -> Self {
        let live = Arc::new(AtomicUsize::new(0));
        let current = Self::spawn(threads, cost, &metrics, &live);
        Self {
            current: RwLock::new(current),
            target: AtomicUsize::new(threads),
            live,
            cost,
            metrics,
        }
    }

    fn spawn(
        threads: usize,
        cost: u32,
        metrics: &Metrics,
        live: &Arc<AtomicUsize>,
    ) -> Addr<PasswordHasher> {
        let (metrics, live) = (metrics.clone(), live.clone());
        SyncArbiter::start(threads, move || {
            PasswordHasher::new(cost, metrics.clone(), live.clone())
        })
    }

    /// The threads to send work to now.
    pub fn addr(&self) -> Addr<PasswordHasher> {
        // Only ever swapped whole: a poisoned lock still holds a valid one.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the threads with `threads` new ones, if that is a change.
    pub fn resize(&self, threads: usize) {
        if self.target.swap(threads, Ordering::SeqCst) == threads {
            return;
        }
        let fresh = Self::spawn(threads, self.cost, &self.metrics, &self.live);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// `(asked for, running)`.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.target.load(Ordering::SeqCst),
            self.live.load(Ordering::SeqCst),
        )
    }
}

/// One hasher thread's actor. Stateless apart from the work factor.
pub struct PasswordHasher {
    cost: u32,
    metrics: Metrics,
    /// Hasher threads running now, over every pool this one belongs to.
    live: Arc<AtomicUsize>,
}

impl PasswordHasher {
    pub fn new(cost: u32, metrics: Metrics, live: Arc<AtomicUsize>) -> Self {
        Self {
            cost,
            metrics,
            live,
        }
    }

    /// Runs one bcrypt call, timed, with a panic turned into an error.
    fn timed<T>(
        &self,
        operation: &'static str,
        work: impl FnOnce() -> Result<T, HashError>,
    ) -> Result<T, HashError> {
        let started = Instant::now();
        let outcome = guarded(work);
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.password_hashed(operation, seconds);
        outcome
    }
}

impl Actor for PasswordHasher {
    type Context = SyncContext<Self>;

    fn started(&mut self, _: &mut SyncContext<Self>) {
        yield_to_request_threads();
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    fn stopped(&mut self, _: &mut SyncContext<Self>) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hash a password with a fresh salt at the configured cost.
#[derive(Message)]
#[rtype(result = "Result<String, HashError>")]
pub struct HashPassword(pub Password);

/// Check a password against a stored hash.
#[derive(Message)]
#[rtype(result = "Result<bool, HashError>")]
pub struct VerifyPassword {
    pub password: Password,
    pub hash: String,
}

impl Handler<HashPassword> for PasswordHasher {
    type Result = Result<String, HashError>;

    fn handle(&mut self, msg: HashPassword, _: &mut SyncContext<Self>) -> Self::Result {
        let cost = self.cost;
        self.timed("hash", || password::hash(&msg.0, cost))
    }
}

impl Handler<VerifyPassword> for PasswordHasher {
    type Result = Result<bool, HashError>;

    fn handle(&mut self, msg: VerifyPassword, _: &mut SyncContext<Self>) -> Self::Result {
        self.timed("verify", || password::verify(&msg.password, &msg.hash))
    }
}

/// The hasher threads' nice value, the lowest priority: during a sign-in
/// storm bcrypt would otherwise take the CPU from the threads serving every
/// other request, and their latency with it. The hashers still get every
/// core the rest leaves idle, so sign-ins run at full speed when nothing
/// else needs the CPU and slow down, queued here, when something does.
#[cfg(target_os = "linux")]
const HASHER_NICENESS: libc::c_int = 19;

/// Lowers the calling thread's scheduling priority (on Linux a nice value
/// belongs to a thread). Best effort: a refusal leaves it as it was.
fn yield_to_request_threads() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; `who = 0` is
    // the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, HASHER_NICENESS);
    }
}

/// Runs `work`, turning a panic into an error. A `SyncArbiter` does not
/// replace a thread whose actor panicked, so an uncaught panic would shrink
/// the pool for good; caught, it fails one request and the thread serves on.
fn guarded<T>(work: impl FnOnce() -> Result<T, HashError>) -> Result<T, HashError> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        tracing::error!("password hasher panicked; the request fails and the thread serves on");
        Err(HashError::Panicked)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_hashing_becomes_an_error() {
        let outcome: Result<(), HashError> = guarded(|| panic!("bcrypt blew up"));
        assert!(matches!(outcome, Err(HashError::Panicked)));
    }

    #[actix_web::test]
    async fn the_pool_keeps_serving_after_a_failed_request() {
        let pool = actix::SyncArbiter::start(1, || {
            PasswordHasher::new(4, Metrics::noop(), Arc::default())
        });
        let password = Password::parse("correct horse battery", "password").unwrap();

        let corrupt = VerifyPassword {
            password: password.clone(),
            hash: "corrupt".into(),
        };
        assert!(pool.send(corrupt).await.unwrap().is_err());

        let hash = pool
            .send(HashPassword(password.clone()))
            .await
            .unwrap()
            .unwrap();
        assert!(
            pool.send(VerifyPassword { password, hash })
                .await
                .unwrap()
                .unwrap()
        );
    }
}
