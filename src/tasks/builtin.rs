//! The built-in kinds that need nothing outside the process: `echo`,
//! `sleep` and `sha256`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use super::{TaskError, TaskHandler, payload};
use crate::domain::{InvalidInput, Task};

/// `echo`: the result is the payload.
pub struct Echo;

#[async_trait]
impl TaskHandler for Echo {
    async fn run(&self, task: &Task) -> Result<Value, TaskError> {
        Ok(task.payload.clone())
    }
}

/// `sleep` `{ms}`: waits, holding a worker, for at most a minute.
pub struct Sleep;

impl Sleep {
    pub const MAX_MS: u64 = 60_000;
    const SHAPE: &str = "sleep takes {\"ms\": 0 to 60000}";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    ms: u64,
}

impl Sleep {
    fn parse(value: &Value) -> Result<Duration, InvalidInput> {
        let SleepPayload { ms } = payload(value, Self::SHAPE)?;
        if ms > Self::MAX_MS {
            return Err(InvalidInput::new("payload", Self::SHAPE));
        }
        Ok(Duration::from_millis(ms))
    }
}

#[async_trait]
impl TaskHandler for Sleep {
    fn validate(&self, payload: &Value) -> Result<(), InvalidInput> {
        Self::parse(payload).map(drop)
    }

    async fn run(&self, task: &Task) -> Result<Value, TaskError> {
        let duration = Self::parse(&task.payload).map_err(|e| TaskError::Reject(e.to_string()))?;
        tokio::time::sleep(duration).await;
        Ok(json!({ "slept_ms": duration.as_millis() as u64 }))
    }
}

/// `sha256` `{data, rounds}`: hashes `data`, then the digest `rounds - 1`
/// more times. CPU work, so it runs on a blocking thread, not a worker's.
pub struct Sha256;

impl Sha256 {
    pub const MAX_ROUNDS: u32 = 1_000_000;
    const SHAPE: &str = "sha256 takes {\"data\": a string, \"rounds\": 1 to 1000000 (default 1)}";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sha256Payload {
    data: String,
    #[serde(default = "one")]
    rounds: u32,
}

fn one() -> u32 {
    1
}

impl Sha256 {
    fn parse(value: &Value) -> Result<Sha256Payload, InvalidInput> {
        let parsed: Sha256Payload = payload(value, Self::SHAPE)?;
        if !(1..=Self::MAX_ROUNDS).contains(&parsed.rounds) {
            return Err(InvalidInput::new("payload", Self::SHAPE));
        }
        Ok(parsed)
    }

    /// The digest after `rounds` rounds, in lower-case hex.
    pub fn digest(data: &[u8], rounds: u32) -> String {
        let mut digest = sha2::Sha256::digest(data);
        for _ in 1..rounds {
            digest = sha2::Sha256::digest(digest);
        }
        format!("{digest:x}")
    }
}

#[async_trait]
impl TaskHandler for Sha256 {
    fn validate(&self, payload: &Value) -> Result<(), InvalidInput> {
        Self::parse(payload).map(drop)
    }

    async fn run(&self, task: &Task) -> Result<Value, TaskError> {
        let Sha256Payload { data, rounds } =
            Self::parse(&task.payload).map_err(|e| TaskError::Reject(e.to_string()))?;
        let digest = tokio::task::spawn_blocking(move || Self::digest(data.as_bytes(), rounds))
            .await
            .map_err(|e| TaskError::Retry(format!("the hashing thread failed: {e}")))?;
        Ok(json!({ "digest": digest, "rounds": rounds }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_one_round_is_the_plain_digest() {
        assert_eq!(
            Sha256::digest(b"abc", 1),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Sha256::digest(b"abc", 2),
            Sha256::digest(&hex_bytes(&Sha256::digest(b"abc", 1)), 1)
        );
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn payloads_are_checked_against_each_kinds_shape() {
        assert!(Sleep.validate(&json!({ "ms": 60_000 })).is_ok());
        assert!(Sleep.validate(&json!({ "ms": 60_001 })).is_err());
        assert!(Sleep.validate(&json!({ "ms": -1 })).is_err());
        assert!(Sleep.validate(&json!({ "seconds": 1 })).is_err());
        assert!(Sha256.validate(&json!({ "data": "x" })).is_ok());
        assert!(
            Sha256
                .validate(&json!({ "data": "x", "rounds": 0 }))
                .is_err()
        );
        assert!(Sha256.validate(&json!({ "data": 7 })).is_err());
        assert!(Echo.validate(&json!(null)).is_ok());
    }
}
