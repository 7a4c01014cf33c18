//! Credentials: bcrypt password hashes and signed access tokens. Pure
//! computation; which thread runs it is the actors' concern.

pub mod attempts;
pub mod password;
pub mod token;

pub use attempts::FailedSignIns;
pub use token::{Claims, TokenError, TokenKeys};
