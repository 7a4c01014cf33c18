//! Tries in this process's memory: each replica counts its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{AttemptStore, Counted, Take, WINDOW_MS};
use crate::storage::StoreError;

/// The tries each key made in the last window, oldest first.
pub struct MemoryAttempts {
    windows: Mutex<Windows>,
}

struct Windows {
    tries: HashMap<String, VecDeque<(i64, u64)>>,
    /// Lapsed keys are dropped when the map reaches this size, which then
    /// doubles what is left: pruning costs O(1) per try, amortised.
    prune_at: usize,
    next_id: u64,
}

impl Default for MemoryAttempts {
    fn default() -> Self {
        Self {
            windows: Mutex::new(Windows {
                tries: HashMap::new(),
                prune_at: 1024,
                next_id: 0,
            }),
        }
    }
}

impl Windows {
    fn take(&mut self, key: &str, limit: u32, now_ms: i64) -> Take {
        let limit = limit.max(1) as usize;
        let tries = self.tries.entry(key.to_owned()).or_default();
        while tries
            .front()
            .is_some_and(|(at, _)| *at <= now_ms - WINDOW_MS)
        {
            tries.pop_front();
        }
        if tries.len() >= limit {
            // The try that frees a place is the one `limit` tries back.
            let (freeing, _) = tries[tries.len() - limit];
            return Take::Wait(freeing + WINDOW_MS - now_ms);
        }
        self.next_id += 1;
        let id = self.next_id;
        tries.push_back((now_ms, id));
        if self.tries.len() >= self.prune_at {
            self.tries
                .retain(|_, tries| tries.back().is_some_and(|(at, _)| *at > now_ms - WINDOW_MS));
            self.prune_at = (self.tries.len() * 2).max(1024);
        }
        Take::Counted(Counted {
            key: key.to_owned(),
            id,
        })
    }

    fn give_back(&mut self, counted: &Counted) {
        if let Some(tries) = self.tries.get_mut(&counted.key)
            && let Some(i) = tries.iter().position(|(_, id)| *id == counted.id)
        {
            tries.remove(i);
        }
    }
}

impl MemoryAttempts {
    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        // Every change is one push, pop or removal: a panic elsewhere
        // cannot leave a window half changed.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.windows().tries.len()
    }
}

#[async_trait]
impl AttemptStore for MemoryAttempts {
    async fn take(&self, key: &str, limit: u32, now_ms: i64) -> Result<Take, StoreError> {
        Ok(self.windows().take(key, limit, now_ms))
    }

    async fn give_back(&self, counted: &Counted) -> Result<(), StoreError> {
        self.windows().give_back(counted);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(take: Take) -> Counted {
        match take {
            Take::Counted(counted) => counted,
            Take::Wait(ms) => panic!("refused for {ms} ms"),
        }
    }

    #[actix_web::test]
    async fn lapsed_keys_are_pruned_as_the_map_grows() {
        let store = MemoryAttempts::default();
        for n in 0..5_000 {
            counted(store.take(&format!("user-{n}"), 1, n * 100).await.unwrap());
        }
        // Only the last minute's keys (600 of them) are kept, give or take
        // what came since the last prune.
        assert!(store.keys() < 2_048);
    }
}
