//! Domain events for other services, appended to a capped Redis stream
//! (`{key_prefix}:<events.stream>`) as the older systems emitted them to a
//! broker. Each entry has four fields: `id` (a UUID v7, for consumers to
//! drop a repeat), `type`, `at` (RFC 3339) and `data` (a JSON object):
//!
//! | type | data |
//! |---|---|
//! | `user.signed_up` | `{user_id, username}` |
//! | `user.signed_in` | `{user_id, session_id}` |
//! | `session.revoked` | `{user_id, session_id, sessions, reason}`: `session_id` is null when all of a user's sessions (but one, for a password change) ended; `reason` is `sign_out`, `sign_out_all`, `password_changed`, `account_deleted`, `operator` (disabled or signed out by an operator) or `session_limit` (one event per session a sign-in past `session.max_per_user` ended) |
//! | `task.finished` | `{task_id, user_id, kind, status, attempts}`: `status` is `succeeded`, `dead` or `cancelled` |
//!
//! Publishing never holds up a request: events go through a bounded channel
//! to one writer, which appends them in order, in batches. Delivery is best
//! effort: while Redis is down the writer retries and the channel fills; once
//! full, new events are dropped and counted. An event may also be written
//! twice if a connection drops after Redis appended it; its `id` tells.
//! At the stop signal the writer appends what was published before it and
//! ends; the service waits for it before it exits.

use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use fred::types::scripts::Script;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::EventSettings;
use crate::domain::{SessionId, TaskId, TaskStatus, UserId};
use crate::lua_script;
use crate::shutdown::Shutdown;
use crate::storage::{Redis, StoreError};
use crate::telemetry::Metrics;

/// Events waiting for the writer before new ones are dropped.
const BACKLOG: usize = 10_000;
/// Most events one append writes.
const BATCH: usize = 256;
/// Pause before retrying an append Redis did not take; doubles up to the
/// longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LONGEST: Duration = Duration::from_secs(5);

/// Something that happened, which other services may want to know.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "user.signed_up")]
    SignedUp { user_id: UserId, username: String },
    #[serde(rename = "user.signed_in")]
    SignedIn {
        user_id: UserId,
        session_id: SessionId,
    },
    #[serde(rename = "session.revoked")]
    SessionsRevoked {
        user_id: UserId,
        /// The one session ended, or none when they all were.
        session_id: Option<SessionId>,
        sessions: usize,
        reason: RevokeReason,
    },
    #[serde(rename = "task.finished")]
    TaskFinished {
        task_id: TaskId,
        user_id: UserId,
        kind: String,
        status: TaskStatus,
        attempts: u32,
    },
}

/// Why sessions ended before their time.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    SignOut,
    SignOutAll,
    PasswordChanged,
    AccountDeleted,
    /// An operator disabled the account or signed its user out.
    Operator,
    /// A sign-in past `session.max_per_user` ended this session.
    SessionLimit,
}

/// Where events are published. Cheap to clone; without `[events]` it
/// publishes nothing.
#[derive(Clone)]
pub struct Events {
    sender: Option<mpsc::Sender<Entry>>,
    clock: Clock,
    metrics: Metrics,
}

/// An event as the stream stores it.
struct Entry {
    id: String,
    kind: String,
    at: String,
    data: String,
}

impl Events {
    /// Publishes nothing.
    pub fn disabled(clock: Clock, metrics: Metrics) -> Self {
        Self {
            sender: None,
            clock,
            metrics,
        }
    }

    /// Starts the writer on the current runtime, as a task of `shutdown`'s:
    /// at the stop signal (or when the last handle is dropped) it writes
    /// what was published and ends.
    pub fn start(
        redis: Arc<Redis>,
        settings: &EventSettings,
        clock: Clock,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        let writer = Writer {
            redis,
            stream: settings.stream.as_str().to_owned(),
            max_len: settings.max_len,
            script: lua_script!("append.lua"),
            metrics: metrics.clone(),
        };
        shutdown.spawn(writer.run(receiver, shutdown.clone()));
        Self {
            sender: Some(sender),
            clock,
            metrics,
        }
    }

    /// Queues `event` for the stream, without waiting.
    pub fn publish(&self, event: Event) {
        let Some(sender) = &self.sender else {
            return;
        };
        let entry = match entry(&event, &self.clock) {
            Ok(entry) => entry,
            Err(err) => {
                tracing::error!(error = %err, "could not encode an event");
                return;
            }
        };
        if sender.try_send(entry).is_err() {
            self.metrics.events_dropped(1);
            tracing::warn!("the event backlog is full; an event was dropped");
        }
    }
}

/// Encodes an event for the stream.
fn entry(event: &Event, clock: &Clock) -> serde_json::Result<Entry> {
    let mut tagged = serde_json::to_value(event)?;
    let kind = tagged["type"].as_str().unwrap_or_default().to_owned();
    Ok(Entry {
        id: Uuid::now_v7().to_string(),
        kind,
        at: clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
        data: serde_json::to_string(&tagged["data"].take())?,
    })
}

/// Appends what is published, in order.
struct Writer {
    redis: Arc<Redis>,
    stream: String,
    max_len: u64,
    script: Script,
    metrics: Metrics,
}

impl Writer {
    async fn run(self, mut receiver: mpsc::Receiver<Entry>, shutdown: Shutdown) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = receiver.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    self.append(&batch).await;
                    batch.clear();
                }
                () = shutdown.stopping() => break,
            }
        }
        // Stopping: nothing more comes in; what came before still goes out.
        receiver.close();
        while receiver.recv_many(&mut batch, BATCH).await > 0 {
            self.append(&batch).await;
            batch.clear();
        }
    }

    /// Appends a batch, retrying until Redis takes it.
    async fn append(&self, batch: &[Entry]) {
        let mut args = vec![self.stream.clone(), self.max_len.to_string()];
        for entry in batch {
            let fields = [&entry.id, &entry.kind, &entry.at, &entry.data];
            args.extend(fields.map(String::clone));
        }
        let mut pause = RETRY_FIRST;
        loop {
            match self.redis.run(&self.script, args.clone()).await {
                Ok(_) => {
                    self.metrics.events_written(batch.len());
                    return;
                }
                Err(StoreError::Unavailable(err)) => {
                    tracing::warn!(error = %err, events = batch.len(), "could not append events; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_LONGEST);
                }
                Err(StoreError::Failed(err)) => {
                    tracing::error!(error = ?err, events = batch.len(), "Redis refused events; dropped");
                    self.metrics.events_dropped(batch.len());
                    return;
                }
            }
        }
    }
}
