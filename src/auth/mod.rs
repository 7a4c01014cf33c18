//! Credentials: bcrypt password hashes and signed access tokens. Hashing
//! blocks, so which thread runs it is the actors' concern; the only I/O
//! here is reading key files (`keys.rs`), at start and on a reload.

pub mod keys;
pub mod password;
pub mod signing;
pub mod token;

pub use keys::{Jwk, Key};
pub use token::{Claims, KeyRing, TokenError, TokenKeys};
