//! The password hasher pool: bcrypt on dedicated threads (a `SyncArbiter`),
//! so a sign-in storm queues here instead of stalling HTTP workers.

use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::{Actor, Handler, Message, SyncContext};

use crate::auth::password::{self, HashError};
use crate::domain::Password;

/// One hasher thread's actor. Stateless apart from the work factor.
pub struct PasswordHasher {
    cost: u32,
}

impl PasswordHasher {
    pub fn new(cost: u32) -> Self {
        Self { cost }
    }
}

impl Actor for PasswordHasher {
    type Context = SyncContext<Self>;
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
        guarded(|| password::hash(&msg.0, self.cost))
    }
}

impl Handler<VerifyPassword> for PasswordHasher {
    type Result = Result<bool, HashError>;

    fn handle(&mut self, msg: VerifyPassword, _: &mut SyncContext<Self>) -> Self::Result {
        guarded(|| password::verify(&msg.password, &msg.hash))
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
        let pool = actix::SyncArbiter::start(1, || PasswordHasher::new(4));
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
