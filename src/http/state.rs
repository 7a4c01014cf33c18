//! What every handler can reach: the handles on the actors and the
//! account rules, token keys, and the settings the edge itself applies.
//! Built once by the app and shared by every HTTP worker.

use std::sync::Arc;

use secrecy::SecretString;

use crate::accounts::{AbuseLimits, UserRegistry};
use crate::actors::{Queue, SessionManager};
use crate::auth::TokenKeys;
use crate::clock::Clock;
use crate::config::Network;
use crate::domain::{TaskKind, TaskRules};
use crate::events::Events;
use crate::tasks::TaskHandlers;
use crate::telemetry::{Metrics, MetricsExport};

pub struct AppState {
    pub registry: UserRegistry,
    pub sessions: SessionManager,
    pub tokens: Arc<TokenKeys>,
    pub clock: Clock,
    /// Credential for introspection; `None` disables it.
    pub introspection_secret: Option<SecretString>,
    pub queue: Queue,
    /// What a task must be to be accepted.
    pub intake: TaskIntake,
    pub metrics: Metrics,
    /// Where domain events go.
    pub events: Events,
    /// What `/metrics` renders.
    pub export: Arc<MetricsExport>,
    /// Tries counted by client address, account and user (the account
    /// rules count theirs themselves).
    pub limits: Arc<AbuseLimits>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Network>,
}

/// What enqueue checks a task against.
pub struct TaskIntake {
    /// The task kinds there are handlers for, and their payloads.
    pub handlers: Arc<TaskHandlers>,
    /// Largest task payload, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// Attempts for a task that does not ask for a number.
    pub default_max_attempts: u32,
    /// What `POST /enqueue` queues.
    pub default_kind: TaskKind,
}

impl TaskIntake {
    pub fn rules(&self) -> TaskRules<'_> {
        TaskRules {
            kinds: &*self.handlers,
            max_payload_bytes: self.max_payload_bytes,
            default_max_attempts: self.default_max_attempts,
        }
    }
}
