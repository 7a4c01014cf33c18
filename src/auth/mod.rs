//! Credentials: bcrypt password hashes, signed access tokens, and the
//! count of failed sign-ins that rate-limits guessing. No I/O: hashing
//! blocks, so which thread runs it is the actors' concern, and the
//! failure count is in-process state behind a lock.

pub mod attempts;
pub mod password;
pub mod signing;
pub mod token;

pub use attempts::FailedSignIns;
pub use token::{Claims, TokenError, TokenKeys};
