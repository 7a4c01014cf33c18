//! Credentials: bcrypt password hashes and signed access tokens. No I/O:
//! hashing blocks, so which thread runs it is the actors' concern.

pub mod password;
pub mod signing;
pub mod token;

pub use token::{Claims, TokenError, TokenKeys};
