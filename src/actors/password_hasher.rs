//! The password hasher pool: bcrypt on dedicated threads (a `SyncArbiter`),
//! so a sign-in storm queues here instead of stalling HTTP workers. The
//! [`HasherPool`] handle resizes it while the service runs, and admits work
//! through a gate: at most one job per thread is handed to the threads,
//! the rest wait at the gate in order of [`Priority`], and a job that
//! could not start in time is refused at once instead of waiting.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, MailboxError, Message, SyncArbiter, SyncContext};
use tokio::sync::oneshot;

use crate::auth::password::{self, HashError};
use crate::domain::Password;
use crate::telemetry::Metrics;

/// The hasher threads, behind a handle that can swap them for a pool of
/// another size: requests go to the new threads at once, and the old ones
/// finish what they hold and exit. Cheap to share.
pub struct HasherPool {
    current: RwLock<Addr<PasswordHasher>>,
    gate: Mutex<Gate>,
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
            gate: Mutex::new(Gate::new(threads)),
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
        let mut gate = self.gate();
        gate.threads = threads;
        gate.hand_on();
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        // Every change is a few counters and queue moves under the lock.
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` on a hasher thread once the gate admits it: at once if a
    /// thread is free, else after the jobs of its priority and above that
    /// came first. Refused at once with [`HasherError::Overloaded`] if,
    /// at the pace jobs have been finishing, it could not be done within
    /// `timeout`; given up with [`HasherError::Busy`] if it is not done
    /// by then.
    pub async fn run<M>(
        &self,
        priority: Priority,
        job: M,
        timeout: Duration,
    ) -> Result<M::Result, HasherError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PasswordHasher: Handler<M>,
        <PasswordHasher as Actor>::Context: ToEnvelope<PasswordHasher, M>,
    {
        let started = Instant::now();
        let admitted = self.gate().admit(priority, timeout)?;
        if let Admission::Wait(mut turn) = admitted
            && tokio::time::timeout(timeout, &mut turn).await.is_err()
        {
            turn.close();
            if turn.try_recv().is_ok() {
                // Handed room just as time ran out: it goes on to the next.
                drop(Entry { pool: self });
            }
            return Err(HasherError::Busy(MailboxError::Timeout));
        }
        let entry = Entry { pool: self };
        let running = Instant::now();
        let left = timeout.saturating_sub(started.elapsed());
        let outcome = self.addr().send(job).timeout(left).await;
        entry.finished(running);
        outcome.map_err(HasherError::Busy)
    }

    /// `(asked for, running)`.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.target.load(Ordering::SeqCst),
            self.live.load(Ordering::SeqCst),
        )
    }
}

/// Whose work goes first when the hasher threads are all busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Someone with an account is waiting for it: a sign-in, a password
    /// change or check.
    SignIn = 0,
    /// Work for an account not yet made (a sign-up), or that nobody waits
    /// for (a rehash).
    SignUp = 1,
}

/// Why a job did not run.
#[derive(Debug, thiserror::Error)]
pub enum HasherError {
    /// It would not have started in time; tried again after about this
    /// many seconds it may.
    #[error("the hasher pool is overloaded; retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    /// It did not finish in time, or the pool is stopping.
    #[error("the hasher pool did not answer")]
    Busy(#[source] MailboxError),
}

/// A job's place at the gate: a thread's worth of room, or a turn to wait.
enum Admission {
    Now,
    Wait(oneshot::Receiver<()>),
}

/// The admission state: jobs handed to the threads, and those waiting.
struct Gate {
    threads: usize,
    /// Jobs admitted and not yet finished (or given up).
    running: usize,
    /// Waiting jobs, by priority, oldest first.
    waiting: [VecDeque<oneshot::Sender<()>>; 2],
    /// How long a job has been taking, smoothed; `None` until one finished.
    job_time: Option<Duration>,
}

impl Gate {
    fn new(threads: usize) -> Self {
        Self {
            threads,
            running: 0,
            waiting: [VecDeque::new(), VecDeque::new()],
            job_time: None,
        }
    }

    fn admit(&mut self, priority: Priority, timeout: Duration) -> Result<Admission, HasherError> {
        self.waiting
            .iter_mut()
            .for_each(|queue| queue.retain(|turn| !turn.is_closed()));
        if self.running < self.threads {
            self.running += 1;
            return Ok(Admission::Now);
        }
        // Those ahead: everyone waiting at this priority or above.
        let ahead: usize = self.waiting[..=priority as usize]
            .iter()
            .map(VecDeque::len)
            .sum();
        if let Some(job_time) = self.job_time {
            // It starts when the jobs ahead, a thread's share each, and the
            // ones running are done, and must finish before its time is up.
            let rounds = (ahead / self.threads.max(1) + 1) as u32;
            let start_in = job_time * rounds;
            if start_in + job_time > timeout {
                return Err(HasherError::Overloaded {
                    retry_after_secs: start_in.as_secs().max(1),
                });
            }
        }
        let (turn, wait) = oneshot::channel();
        self.waiting[priority as usize].push_back(turn);
        Ok(Admission::Wait(wait))
    }

    /// Hands free room to the waiting jobs, the highest priority first.
    fn hand_on(&mut self) {
        while self.running < self.threads {
            let next = self.waiting.iter_mut().find_map(|queue| {
                while let Some(turn) = queue.pop_front() {
                    if turn.send(()).is_ok() {
                        return Some(());
                    }
                }
                None
            });
            if next.is_none() {
                return;
            }
            self.running += 1;
        }
    }
}

/// A job's room at the gate, given back when dropped.
struct Entry<'p> {
    pool: &'p HasherPool,
}

impl Entry<'_> {
    /// Gives the room back, counting how long the job took.
    fn finished(self, started: Instant) {
        let mut gate = self.pool.gate();
        let took = started.elapsed();
        gate.job_time = Some(match gate.job_time {
            Some(smoothed) => (smoothed * 7 + took) / 8,
            None => took,
        });
        drop(gate);
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut gate = self.pool.gate();
        gate.running = gate.running.saturating_sub(1);
        gate.hand_on();
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

/// Check a password against a stored hash. A wrong password costs the
/// work of one verification at the configured cost even when the hash was
/// made at a lower one, so that the time of a failed sign-in does not tell
/// an account with an older hash from an unknown one (which is checked
/// against a dummy hash at the configured cost).
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
        let cost = self.cost;
        self.timed("verify", || {
            let verified = password::verify(&msg.password, &msg.hash)?;
            if !verified && let Some(stored) = password::cost_of(&msg.hash) {
                password::pad(&msg.password, stored, cost)?;
            }
            Ok(verified)
        })
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

    fn waiting(admission: Admission) -> oneshot::Receiver<()> {
        match admission {
            Admission::Wait(turn) => turn,
            Admission::Now => panic!("admitted at once"),
        }
    }

    #[test]
    fn sign_ins_waiting_go_before_sign_ups_that_came_first() {
        let mut gate = Gate::new(1);
        let timeout = Duration::from_secs(10);
        assert!(matches!(
            gate.admit(Priority::SignUp, timeout),
            Ok(Admission::Now)
        ));
        let mut sign_up = waiting(gate.admit(Priority::SignUp, timeout).unwrap());
        let mut sign_in = waiting(gate.admit(Priority::SignIn, timeout).unwrap());

        // The running job ends: its room goes to the sign-in.
        gate.running -= 1;
        gate.hand_on();
        assert!(sign_in.try_recv().is_ok());
        assert!(sign_up.try_recv().is_err());
        gate.running -= 1;
        gate.hand_on();
        assert!(sign_up.try_recv().is_ok());
        assert_eq!(gate.running, 1);
    }

    #[test]
    fn work_that_would_start_too_late_is_refused_at_once() {
        let mut gate = Gate::new(2);
        let timeout = Duration::from_secs(2);
        gate.job_time = Some(Duration::from_millis(500));
        for _ in 0..2 {
            assert!(matches!(
                gate.admit(Priority::SignUp, timeout),
                Ok(Admission::Now)
            ));
        }
        // Two threads at 500 ms a job: the 7th waiting would start at 2 s
        // and end after its time is up.
        let queued: Vec<_> = (0..6)
            .map(|_| waiting(gate.admit(Priority::SignUp, timeout).unwrap()))
            .collect();
        assert!(matches!(
            gate.admit(Priority::SignUp, timeout),
            Err(HasherError::Overloaded { .. })
        ));
        // A sign-in has only the sign-ins ahead of it.
        let _sign_in = waiting(gate.admit(Priority::SignIn, timeout).unwrap());
        // Those who gave up waiting leave the line.
        drop(queued);
        let _again = waiting(gate.admit(Priority::SignUp, timeout).unwrap());
    }
}
