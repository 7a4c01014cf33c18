//! Tries in Redis, shared by every replica: one script checks and counts.

use std::sync::Arc;

use async_trait::async_trait;
use fred::prelude::SortedSetsInterface;
use fred::types::scripts::Script;

use super::{AttemptStore, Counted, Take, WINDOW_MS};
use crate::storage::StoreError;
use crate::storage::redis::Redis;

pub struct RedisAttempts {
    redis: Arc<Redis>,
    take: Script,
}

impl RedisAttempts {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            take: Script::from_lua(include_str!("lua/take.lua")),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:tries:{key}", self.redis.prefix())
    }
}

#[async_trait]
impl AttemptStore for RedisAttempts {
    async fn take(&self, key: &str, limit: u32, now_ms: i64) -> Result<Take, StoreError> {
        let id: u64 = rand::random();
        let args = vec![
            key.to_owned(),
            limit.max(1).to_string(),
            now_ms.to_string(),
            WINDOW_MS.to_string(),
            id.to_string(),
        ];
        let answer = self.redis.run(&self.take, args).await?;
        match answer.as_i64() {
            Some(-1) => Ok(Take::Counted(Counted {
                key: key.to_owned(),
                id,
            })),
            Some(wait_ms) => Ok(Take::Wait(wait_ms)),
            None => Err(StoreError::Failed(anyhow::anyhow!(
                "expected a wait, got {answer:?}"
            ))),
        }
    }

    async fn give_back(&self, counted: &Counted) -> Result<(), StoreError> {
        let key = self.key(&counted.key);
        let _: i64 = self
            .redis
            .client()
            .zrem(key, counted.id.to_string())
            .await?;
        Ok(())
    }
}
