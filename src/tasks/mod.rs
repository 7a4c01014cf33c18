//! What tasks do: the [`TaskHandler`] trait, one handler per kind, and the
//! built-in kinds `echo`, `sleep`, `sha256` and `webhook`. An embedding
//! crate adds its own kinds with [`TaskHandlers::with`].

mod builtin;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use builtin::{Echo, Sha256, Sleep};
pub use webhook::Webhook;

use crate::config::QueueSettings;
use crate::domain::{InvalidInput, Task, TaskKind, TaskKinds};

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// Worth trying again later (a timeout, a 5xx): retried with backoff
    /// while attempts remain.
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help (a 4xx, a payload the handler cannot use):
    /// the task is dead at once.
    #[error("{0}")]
    Reject(String),
}

/// One task kind's behaviour.
///
/// `run` may be called more than once for the same task: delivery is at
/// least once, so a handler with side effects should make them safe to
/// repeat (the task id is a natural idempotency key). A panic in `run`
/// counts as a failed attempt.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Checks a payload at enqueue, so that a task that could never run is
    /// refused with 422 instead of failing later.
    fn validate(&self, _payload: &Value) -> Result<(), InvalidInput> {
        Ok(())
    }

    /// Runs one attempt, returning the task's result.
    async fn run(&self, task: &Task) -> Result<Value, TaskError>;
}

/// The handlers by kind: what the workers run and what enqueue accepts.
#[derive(Clone, Default)]
pub struct TaskHandlers {
    kinds: BTreeMap<String, Arc<dyn TaskHandler>>,
}

impl TaskHandlers {
    /// No kinds at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in kinds, configured by `settings`.
    pub fn builtin(settings: &QueueSettings) -> anyhow::Result<Self> {
        Ok(Self::empty()
            .with("echo", Echo)
            .with("sleep", Sleep)
            .with("sha256", Sha256)
            .with("webhook", Webhook::new(settings)?))
    }

    /// Adds (or replaces) the handler of `kind`.
    ///
    /// # Panics
    /// If `kind` is not a valid kind name: a programming error.
    pub fn with(mut self, kind: &str, handler: impl TaskHandler) -> Self {
        let kind = TaskKind::parse(kind).expect("a handler's kind is a valid kind name");
        self.kinds
            .insert(kind.as_str().to_owned(), Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &TaskKind) -> Option<&Arc<dyn TaskHandler>> {
        self.kinds.get(kind.as_str())
    }

    /// The kinds there are handlers for, in order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}

/// What enqueue asks: a kind runs here if it has a handler, and its
/// payload suits it if the handler says so.
impl TaskKinds for TaskHandlers {
    fn check(&self, kind: &TaskKind, payload: &Value) -> Result<(), InvalidInput> {
        self.get(kind)
            .ok_or(InvalidInput::new(
                "kind",
                "is not a task kind this service runs",
            ))?
            .validate(payload)
    }
}

/// Reads a payload into `T`, or names the shape it should have had.
fn payload<'a, T: serde::Deserialize<'a>>(
    payload: &'a Value,
    shape: &'static str,
) -> Result<T, InvalidInput> {
    T::deserialize(payload).map_err(|_| InvalidInput::new("payload", shape))
}
