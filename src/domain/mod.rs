//! Values that are valid by construction: each type's `parse` is the only way
//! in, so code holding one never checks it again. This module does no I/O.

mod credentials;
mod session;
mod task;
mod user;

pub use credentials::{Email, Login, Password, Username};
pub use session::{Session, SessionId, SessionTable, StoredSession, TouchOutcome};
pub use task::{
    Fence, IdempotencyKey, LeasedTask, MAX_ATTEMPTS, MAX_DELAY_MS, NewTask, Outcome, RetryPolicy,
    Task, TaskCounts, TaskId, TaskKind, TaskStatus,
};
pub use user::{NewUser, User, UserId};

/// Why a value was refused, naming the field so a client can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    /// The request field at fault, as the client spelled it.
    pub field: &'static str,
    /// What the field must be, in words a client can show.
    pub message: &'static str,
}

impl InvalidInput {
    pub(crate) const fn new(field: &'static str, message: &'static str) -> Self {
        Self { field, message }
    }
}
