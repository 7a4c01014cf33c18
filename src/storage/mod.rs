//! Where state lives: users in PostgreSQL or memory, sessions in Redis (or
//! in the session actors themselves), tasks in Redis or memory. Each store
//! is a trait (or, for sessions, one type) with implementations of the same
//! behaviour, and one behavioural test suite runs against each. Every store
//! fails the same two ways, [`StoreError`], and answers in `domain` types.

mod attempts;
mod queue;
mod redis;
mod sessions;
mod users;

pub use attempts::{AttemptStore, Counted, MemoryAttempts, RedisAttempts, Take, WINDOW_MS};
#[cfg(test)]
pub(crate) use queue::queue_store_settling_with;
pub use queue::{
    MemoryQueueStore, PartitionedQueue, QueuePolicy, QueueStore, RedisQueueStore, SharedLimits,
    redis_queue,
};
pub use redis::{Keyspace, Redis};
pub use sessions::{RedisSessions, SESSION_FLUSH_INTERVAL};
pub use users::{MemoryUserStore, PostgresUserStore, UserStore, migrate};

/// Why a store call did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Out of reach, not answering in time, or saying it cannot serve yet:
    /// worth a retry. Nothing was written, or (if only the answer was lost)
    /// the write is complete.
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The store answered with an error, or with something it should not
    /// have: a bug or corrupt data, not worth a retry.
    #[error("store failed")]
    Failed(#[source] anyhow::Error),
}

/// The same failure again, for each of several callers that shared one
/// call: the kind is kept, the cause as its words.
impl Clone for StoreError {
    fn clone(&self) -> Self {
        match self {
            Self::Unavailable(cause) => Self::Unavailable(anyhow::anyhow!("{cause:#}")),
            Self::Failed(cause) => Self::Failed(anyhow::anyhow!("{cause:#}")),
        }
    }
}

impl StoreError {
    /// Whether a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
