//! The vocabulary every layer speaks: values valid by construction (each
//! type's `parse` is the only way in, so code holding one never checks it
//! again), users, sessions and tasks, and the outcomes that travel back
//! from the stores to the caller. This module does no I/O and imports
//! nothing from the layers above it.

mod credentials;
mod queue;
mod session;
mod task;
mod user;

pub use credentials::{
    Credentials, Email, Login, Password, PasswordChange, Registration, Username,
};
pub use queue::{
    Backlog, Bulk, Cancelled, CancelledTask, Enqueued, Finished, Idempotency, IdempotencyKey,
    KindLimit, KindLimits, KindLoad, LeaseCall, Limits, MAX_ATTEMPTS, MAX_DELAY_MS, Page,
    QueueStats, Retried, Settled, TaskDraft, TaskFilter, TaskKinds, TaskQuery, TaskRefusal,
    TaskRequest, TaskRules, UserLoad, Wanted,
};
pub use session::{
    LISTED_SESSIONS, ListedSession, Origin, Session, SessionId, SessionTable, StoredSession,
    TouchOutcome,
};
pub use task::{
    Fence, Lease, LeasedTask, NewTask, Outcome, RetryPolicy, Task, TaskCounts, TaskId, TaskKind,
    TaskStatus,
};
pub use user::{NewUser, Profile, Taken, User, UserCursor, UserId, UserQuery};

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
