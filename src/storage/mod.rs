//! Where state lives: users in PostgreSQL or memory, tasks in Redis or
//! memory. Each kind of store is a small trait with two implementations of
//! the same behaviour, and one behavioural test suite runs against both.

mod queue;
mod redis;
mod sessions;
mod users;

pub use queue::{
    Cancelled, Enqueued, Finished, Idempotency, LeaseCall, Limits, MemoryQueueStore, Page,
    QueueError, QueueStats, QueueStore, RedisQueueStore,
};
pub use redis::{Redis, RedisFailure, cluster_node};
pub use sessions::RedisSessions;
pub use users::{MemoryUserStore, PostgresUserStore, StoreError, UserStore, migrate};
