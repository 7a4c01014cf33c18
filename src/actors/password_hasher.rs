//! The password hasher pool: bcrypt on dedicated threads (a `SyncArbiter`),
//! so a sign-in storm queues here instead of stalling HTTP workers.

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
        password::hash(&msg.0, self.cost)
    }
}

impl Handler<VerifyPassword> for PasswordHasher {
    type Result = Result<bool, HashError>;

    fn handle(&mut self, msg: VerifyPassword, _: &mut SyncContext<Self>) -> Self::Result {
        password::verify(&msg.password, &msg.hash)
    }
}
