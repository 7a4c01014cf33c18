//! Tasks as the queue stores them and workers run them. Pure data: the
//! queue stores move tasks between states, workers run them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{InvalidInput, TaskRequest, UserId};

/// A task's identifier: UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses an id as clients send it in paths and cursors.
    pub fn parse(raw: &str) -> Option<Self> {
        Uuid::try_parse(raw).ok().map(Self)
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of a task kind: 1 to 64 characters of `a-z 0-9 _ . -`.
/// Whether a handler exists for it is the worker side's question.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
#[serde(try_from = "String", into = "String")]
pub struct TaskKind(String);

impl TryFrom<String> for TaskKind {
    type Error = InvalidInput;

    fn try_from(raw: String) -> Result<Self, InvalidInput> {
        Self::parse(&raw)
    }
}

impl From<TaskKind> for String {
    fn from(kind: TaskKind) -> Self {
        kind.0
    }
}

impl TaskKind {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b);
        if (1..=64).contains(&raw.len()) && raw.bytes().all(allowed) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "kind",
                "must be 1 to 64 characters of a-z, 0-9, '_', '.' and '-'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a task is in its life. `Succeeded`, `Dead` and `Cancelled` are
/// final; `Failed` means the last attempt failed and another is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl TaskStatus {
    /// Whether an operator may queue a task in this state again.
    pub fn is_retriable(self) -> bool {
        matches!(self, Self::Dead | Self::Cancelled)
    }

    pub const ALL: [TaskStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// No attempt follows a final state.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }

    /// Waiting for an attempt: counted against `max_pending_per_user` and
    /// the only states a task can be cancelled in.
    pub const fn is_waiting(self) -> bool {
        matches!(self, Self::Queued | Self::Failed)
    }
}

/// A task as stored and as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Task {
    pub id: TaskId,
    #[serde(skip)]
    pub user_id: UserId,
    pub kind: TaskKind,
    pub payload: Value,
    pub status: TaskStatus,
    /// Attempts started so far, the running one included.
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the last attempt failed, for `failed` and `dead` tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the next attempt may start.
    pub run_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// When a finished task is forgotten (`queue.result_ttl_secs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the request that enqueued it, so that its
    /// attempts join that trace.
    #[serde(skip)]
    pub trace_parent: Option<String>,
}

impl Task {
    /// Not yet forgotten: a finished task is kept until `expires_at`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_at
            .is_none_or(|expires| expires.timestamp_millis() > now_ms)
    }
}

/// A task about to be enqueued: a checked request, with its identity and
/// time decided by the caller, so that every store records the same values.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub request: TaskRequest,
}

impl NewTask {
    /// When the first attempt may start: the request's delay after it came.
    pub fn run_at(&self) -> DateTime<Utc> {
        let delay =
            chrono::TimeDelta::from_std(self.request.delay).unwrap_or(chrono::TimeDelta::MAX);
        self.created_at
            .checked_add_signed(delay)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The task as stored before any attempt.
    pub fn into_task(self) -> Task {
        let run_at = self.run_at();
        let TaskRequest {
            kind,
            payload,
            max_attempts,
            trace_parent,
            ..
        } = self.request;
        Task {
            id: self.id,
            user_id: self.user_id,
            kind,
            payload,
            status: TaskStatus::Queued,
            attempts: 0,
            max_attempts,
            result: None,
            error: None,
            created_at: self.created_at,
            run_at,
            started_at: None,
            finished_at: None,
            expires_at: None,
            trace_parent,
        }
    }
}

/// The fencing token of a lease: it grows with every lease of any task in
/// the task's partition (all of them, unpartitioned), so a later lease of
/// a task always holds a larger one than any before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub u64);

/// A running task's lease: its id, its user (whose partition holds it)
/// and the fencing token that proves the lease current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub task: TaskId,
    pub user: UserId,
    pub fence: Fence,
}

/// A task handed to a worker, with the lease it holds.
#[derive(Debug, Clone)]
pub struct LeasedTask {
    pub task: Task,
    pub fence: Fence,
}

impl LeasedTask {
    pub fn lease(&self) -> Lease {
        Lease {
            task: self.task.id,
            user: self.task.user_id,
            fence: self.fence,
        }
    }
}

/// How an attempt ended, as a worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    /// Failed; retried at `retry_at` unless the attempts are used up.
    Failed {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// Failed for good, whatever attempts are left (a client error, say).
    Rejected {
        error: String,
    },
}

/// When a failed attempt is tried again: exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base_ms: u64,
    /// Longest delay between two attempts.
    pub max_ms: u64,
}

impl RetryPolicy {
    /// The delay after attempt number `attempt` (1 for the first) failed:
    /// `base × 2^(attempt-1)`, capped at `max`, of which the upper half is
    /// scaled by `jitter` in `[0, 1]`. The spread keeps retries of tasks
    /// that failed together from all coming back at once; the lower half
    /// keeps each delay near its nominal size.
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let doubling = 1u64
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u64::MAX);
        let nominal = self.base_ms.saturating_mul(doubling).min(self.max_ms);
        let half = nominal / 2;
        half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64 + nominal % 2
    }
}

/// One user's tasks, counted by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl TaskCounts {
    /// Tasks waiting for an attempt: what `max_pending_per_user` bounds.
    pub fn pending(&self) -> u64 {
        self.queued + self.failed
    }

    pub fn add(&mut self, status: TaskStatus, n: u64) {
        let slot = match status {
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Succeeded => &mut self.succeeded,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Dead => &mut self.dead,
            TaskStatus::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_short_lower_case_names() {
        for ok in ["echo", "sha256", "send.mail-v2_x"] {
            assert!(TaskKind::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Echo", "a b", &"k".repeat(65), "ech\0o", "é"] {
            assert!(TaskKind::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statuses_round_trip_and_know_which_are_final() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(TaskStatus::parse("done"), None);
        let finals: Vec<_> = TaskStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                TaskStatus::Succeeded,
                TaskStatus::Dead,
                TaskStatus::Cancelled
            ]
        );
    }

    #[test]
    fn task_ids_sort_by_creation() {
        let ids: Vec<TaskId> = (0..100).map(|_| TaskId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn retry_delays_double_up_to_the_cap_and_jitter_stays_within_the_upper_half() {
        let policy = RetryPolicy {
            base_ms: 1000,
            max_ms: 10_000,
        };
        let full: Vec<u64> = (1..=6).map(|n| policy.delay_ms(n, 1.0)).collect();
        assert_eq!(full, [1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(policy.delay_ms(1, 0.0), 500);
        assert_eq!(policy.delay_ms(3, 0.5), 3000);
        assert_eq!(policy.delay_ms(200, 1.0), 10_000, "no overflow");
    }
}
