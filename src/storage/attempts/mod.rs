//! Tries counted per key in a sliding one-minute window, for the abuse
//! limits (sign-ins, sign-ups, password checks): in this process's memory,
//! or in Redis, where every replica counts into the same window.
//!
//! Keys, for prefix `p`: `{p}:tries:<key>`, a sorted set of the tries in
//! the window (a random id each, scored by when it was made), expiring one
//! window after the newest.

mod memory;
mod redis;

use async_trait::async_trait;

pub use self::memory::MemoryAttempts;
pub use self::redis::RedisAttempts;
use super::StoreError;

/// How far back a try counts.
pub const WINDOW_MS: i64 = 60_000;

/// One try, counted; handed back to take it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub key: String,
    /// Tells this try from others of the same key made at the same time.
    pub id: u64,
}

/// Whether a try was counted, or how long until the key has one again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    Counted(Counted),
    /// Milliseconds until the oldest try that fills the limit lapses.
    Wait(i64),
}

#[async_trait]
pub trait AttemptStore: Send + Sync {
    /// Counts a try for `key` at `now_ms`, unless it already has `limit`
    /// (at least 1) in the window ending then. The check and the count are
    /// one step, so tries sent at once cannot all slip past the limit.
    async fn take(&self, key: &str, limit: u32, now_ms: i64) -> Result<Take, StoreError>;

    /// Takes back a try [`take`](Self::take) counted, if it still counts.
    async fn give_back(&self, counted: &Counted) -> Result<(), StoreError>;
}
