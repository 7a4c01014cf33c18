//! What a client asks of the queue and what the queue answers: a task
//! request parsed from the client's fields, its idempotency key, and the
//! outcomes of enqueue, cancel, lease and finish that travel back to the
//! caller. Pure data, like the rest of `domain`.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{InvalidInput, Task, TaskId, TaskKind, TaskStatus, UserId};

/// Most attempts a task may ask for.
pub const MAX_ATTEMPTS: u32 = 25;

/// Longest a task may ask to wait before its first attempt: seven days.
pub const MAX_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

/// A task as a client describes it, before anything is checked: the
/// fields of `POST /api/v1/tasks` (and of `/enqueue`, which fills in the
/// kind). Serialized as it came, it is what an `Idempotency-Key` is bound to.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDraft {
    pub kind: String,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// Which task kinds exist and what each takes as payload: the task
/// handlers' answer, asked at enqueue so that a task that could never run
/// is refused at once.
pub trait TaskKinds {
    /// Whether `kind` runs here and `payload` suits it.
    fn check(&self, kind: &TaskKind, payload: &Value) -> Result<(), InvalidInput>;
}

/// What a draft is checked against.
pub struct TaskRules<'a> {
    pub kinds: &'a dyn TaskKinds,
    /// Largest payload, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// Attempts for a task that does not ask for a number.
    pub default_max_attempts: u32,
}

/// Why a draft was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRefusal {
    /// The payload is larger than the limit, in bytes of JSON.
    TooLarge { size: usize, limit: usize },
    /// Some fields break the rules; each is named.
    Invalid(Vec<InvalidInput>),
}

/// A task a user may enqueue: every field checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    pub kind: TaskKind,
    pub payload: Value,
    pub max_attempts: u32,
    /// How long after it is accepted the first attempt may start.
    pub delay: Duration,
    /// The W3C `traceparent` of the request, for the attempts to join.
    pub trace_parent: Option<String>,
}

impl TaskDraft {
    /// Checks every field, naming all that are wrong at once.
    pub fn parse(
        self,
        rules: &TaskRules<'_>,
        trace_parent: Option<String>,
    ) -> Result<TaskRequest, TaskRefusal> {
        let size = self.payload.to_string().len();
        if size > rules.max_payload_bytes {
            return Err(TaskRefusal::TooLarge {
                size,
                limit: rules.max_payload_bytes,
            });
        }
        let kind = TaskKind::parse(&self.kind);
        // The payload is judged by its kind's handler, so only once the
        // kind is known.
        let payload = match &kind {
            Ok(kind) => rules.kinds.check(kind, &self.payload),
            Err(_) => Ok(()),
        };
        let max_attempts = match self.max_attempts {
            Some(n) if !(1..=MAX_ATTEMPTS).contains(&n) => Err(InvalidInput::new(
                "max_attempts",
                "must be between 1 and 25",
            )),
            n => Ok(n.unwrap_or(rules.default_max_attempts)),
        };
        let delay = match self.delay_ms.unwrap_or(0) {
            ms if ms > MAX_DELAY_MS => Err(InvalidInput::new(
                "delay_ms",
                "must be at most 604800000 (seven days)",
            )),
            ms => Ok(Duration::from_millis(ms)),
        };
        match (kind, payload, max_attempts, delay) {
            (Ok(kind), Ok(()), Ok(max_attempts), Ok(delay)) => Ok(TaskRequest {
                kind,
                payload: self.payload,
                max_attempts,
                delay,
                trace_parent,
            }),
            (kind, payload, max_attempts, delay) => Err(TaskRefusal::Invalid(
                [kind.err(), payload.err(), max_attempts.err(), delay.err()]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
        }
    }

    /// A digest of the draft as the client sent it, so that a key reused
    /// for another request is told apart from a retry of the same one.
    fn fingerprint(&self) -> String {
        // Serializing a tree of JSON values cannot fail.
        let serialized = serde_json::to_vec(self).unwrap_or_default();
        format!("{:x}", Sha256::digest(serialized))
    }
}

/// A client's `Idempotency-Key`: 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "Idempotency-Key",
                "must be 1 to 255 printable ASCII characters",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `Idempotency-Key` bound to the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    /// A digest of the request: the same key with another request is
    /// refused, not replayed.
    pub fingerprint: String,
}

impl Idempotency {
    /// `key` as sent with `draft`.
    pub fn new(key: IdempotencyKey, draft: &TaskDraft) -> Self {
        Self {
            key,
            fingerprint: draft.fingerprint(),
        }
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    Created(Task),
    /// The idempotency key (or the task id) was seen before: the task it
    /// created then, unchanged.
    Replayed(Task),
    /// The idempotency key came before with a different request.
    KeyReused,
    /// The user already has this many tasks waiting.
    Full {
        pending: u64,
    },
    /// The user's waiting tasks already hold this many bytes of payload,
    /// and this one would take them past the limit.
    FullBytes {
        bytes: u64,
    },
    /// The user keeps this many finished tasks, more than the bound, and
    /// none of their oldest tasks could be forgotten (they all wait or run).
    FullFinished {
        finished: u64,
    },
}

/// Which tasks an operator means; what is left out matches every task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub user: Option<UserId>,
    pub status: Option<TaskStatus>,
    pub kind: Option<TaskKind>,
}

impl TaskFilter {
    /// Whether a task of `user`'s, of `kind` and in `status`, is meant.
    pub fn matches(&self, user: UserId, kind: &TaskKind, status: TaskStatus) -> bool {
        self.user.is_none_or(|wanted| wanted == user)
            && self.status.is_none_or(|wanted| wanted == status)
            && self.kind.as_ref().is_none_or(|wanted| wanted == kind)
    }
}

/// What a call on every task a filter matches did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bulk {
    /// Tasks the filter matched.
    pub matched: u64,
    /// Of those, the ones the call changed (the rest could not be).
    pub changed: u64,
}

/// A task a call in bulk cancelled, as its event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledTask {
    pub id: TaskId,
    pub user: UserId,
    pub kind: TaskKind,
    pub attempts: u32,
}

/// What retrying a task found.
#[derive(Debug, Clone, PartialEq)]
pub enum Retried {
    /// Queued again under its id, attempts reset.
    Retried(Task),
    /// Neither dead nor cancelled: returned as it stands.
    NotRetriable(Task),
    NotFound,
}

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    Cancelled(Task),
    /// The task is running, succeeded or dead; it is returned as it stands.
    NotWaiting(Task),
    NotFound,
}

/// What recording an attempt's outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Recorded; the task is now in this state.
    Recorded(TaskStatus),
    /// The lease is no longer the task's current one: refused, not applied.
    Stale,
}

/// What one settling call did: each outcome recorded (or refused), in
/// order, and the tasks leased, as [`Wanted`] asked.
#[derive(Debug, Default)]
pub struct Settled {
    pub finished: Vec<Finished>,
    pub leased: Vec<super::LeasedTask>,
    pub newcomers: Vec<super::LeasedTask>,
    /// What was left to lease after the call.
    pub left: Backlog,
}

/// What a queue (or a partition of one) has left to lease: the users
/// with ready tasks and room to run them, those of them waiting as
/// newcomers (an upper bound: some may have started since), the kinds with
/// tasks parked by their limits, and when the soonest task not yet due (a
/// delayed one, or a retry) falls due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub users: u64,
    pub newcomers: u64,
    pub parked_kinds: u64,
    pub next_due_ms: Option<i64>,
}

/// How many tasks a lease call asks for: `any` round robin between users,
/// and `newcomers` more, each the first ready task of a user with nothing
/// running, in the order such users joined the queue. The second are for
/// workers kept for newcomers, so that a user who just arrived starts at
/// once however busy one heavy user keeps the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub any: usize,
    pub newcomers: usize,
}

impl Wanted {
    pub fn any(any: usize) -> Self {
        Self { any, newcomers: 0 }
    }

    pub fn is_none(&self) -> bool {
        self.any == 0 && self.newcomers == 0
    }
}

/// Names one lease call, so that the call sent again answers the leases it
/// made instead of leasing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseCall(pub Uuid);

impl LeaseCall {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for LeaseCall {
    fn default() -> Self {
        Self::new()
    }
}

/// Which of a user's tasks to list: newest first, older than `before`,
/// only those in `status` if given, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub before: Option<TaskId>,
    pub limit: usize,
}

impl TaskQuery {
    /// Longest page a client may ask for.
    pub const MAX_LIMIT: usize = 100;
    /// The page a client gets without asking for a length.
    pub const DEFAULT_LIMIT: usize = 50;

    /// The query a client's parameters ask for, as they came (`cursor` is
    /// the `next_cursor` of the page before); every one at fault is named.
    pub fn parse(
        status: Option<&str>,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Self, Vec<InvalidInput>> {
        let status = status
            .map(|s| {
                TaskStatus::parse(s).ok_or(InvalidInput::new(
                    "status",
                    "must be one of queued, running, succeeded, failed, dead, cancelled",
                ))
            })
            .transpose();
        let limit = limit
            .map_or(Ok(Self::DEFAULT_LIMIT), |l| {
                l.parse::<usize>().map_err(drop)
            })
            .ok()
            .filter(|l| (1..=Self::MAX_LIMIT).contains(l))
            .ok_or(InvalidInput::new("limit", "must be between 1 and 100"));
        let before = cursor
            .map(|c| {
                TaskId::parse(c).ok_or(InvalidInput::new(
                    "cursor",
                    "must be a next_cursor from an earlier page",
                ))
            })
            .transpose();
        match (status, limit, before) {
            (Ok(status), Ok(limit), Ok(before)) => Ok(Self {
                status,
                before,
                limit,
            }),
            (status, limit, before) => Err([status.err(), limit.err(), before.err()]
                .into_iter()
                .flatten()
                .collect()),
        }
    }
}

/// One page of a user's tasks, newest first.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Task>,
    /// Pass as `before` for the next page; `None` on the last.
    pub next: Option<TaskId>,
}

/// How much is waiting, over all users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Tasks queued or failed (awaiting a retry).
    pub waiting: u64,
    /// Users with at least one such task.
    pub users_waiting: u64,
    /// The `run_at` of the ready task that has been due longest.
    pub oldest_due_ms: Option<i64>,
    /// Each kind with limits, in the order of its name.
    pub kinds: Vec<KindLoad>,
}

/// How far one kind with limits is using them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindLoad {
    pub kind: TaskKind,
    pub running: u64,
    /// Ready tasks set aside until the kind has room under its limits.
    pub parked: u64,
}

impl KindLoad {
    /// Nothing running or parked for each of `kinds`.
    pub fn none_of(kinds: &KindLimits) -> Vec<Self> {
        kinds
            .keys()
            .map(|kind| Self {
                kind: kind.clone(),
                running: 0,
                parked: 0,
            })
            .collect()
    }
}

/// The bounds on one kind of task, held across every replica. A task of a
/// kind with no room is set aside ("parked") with its place in its user's
/// queue, and the tasks behind it run meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindLimit {
    /// Most tasks of the kind running at once; `Some(0)` pauses the kind.
    pub max_running: Option<u64>,
    /// Most starts in any one second (a sliding window, not a clock
    /// second, so that no burst at a second's edge doubles it).
    pub max_per_second: Option<u32>,
}

/// The limits of every kind that has any.
pub type KindLimits = std::collections::BTreeMap<TaskKind, KindLimit>;

/// One user's share of the queue, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLoad {
    pub user: UserId,
    /// Tasks queued or failed (awaiting a retry).
    pub waiting: u64,
    pub running: u64,
}

/// The per-user bounds in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most waiting tasks per user.
    pub max_pending: u64,
    /// Most bytes of payload (as JSON) in one user's waiting tasks.
    pub max_pending_bytes: u64,
    /// Most finished tasks kept for one user: at each enqueue the oldest
    /// are forgotten until fewer are kept.
    pub max_finished: u64,
    /// Most running tasks per user; 0 means no bound.
    pub max_running: u64,
}

impl Limits {
    /// Whether a user with `running` tasks may start another.
    pub fn may_run(&self, running: u64) -> bool {
        self.max_running == 0 || running < self.max_running
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every kind is known; a payload of `"bad"` is refused.
    struct AnyKind;

    impl TaskKinds for AnyKind {
        fn check(&self, _: &TaskKind, payload: &Value) -> Result<(), InvalidInput> {
            match payload {
                Value::String(s) if s == "bad" => Err(InvalidInput::new("payload", "is bad")),
                _ => Ok(()),
            }
        }
    }

    fn rules() -> TaskRules<'static> {
        TaskRules {
            kinds: &AnyKind,
            max_payload_bytes: 64,
            default_max_attempts: 3,
        }
    }

    fn draft(kind: &str, payload: Value) -> TaskDraft {
        TaskDraft {
            kind: kind.into(),
            payload,
            max_attempts: None,
            delay_ms: None,
        }
    }

    #[test]
    fn a_draft_within_the_rules_becomes_a_request_with_the_defaults_filled_in() {
        let request = draft("echo", json!({"a": 1}))
            .parse(&rules(), None)
            .unwrap();
        assert_eq!(request.kind.as_str(), "echo");
        assert_eq!((request.max_attempts, request.delay), (3, Duration::ZERO));
    }

    #[test]
    fn every_field_at_fault_is_named_at_once() {
        let bad = TaskDraft {
            kind: "Not A Kind".into(),
            payload: json!("bad"),
            max_attempts: Some(26),
            delay_ms: Some(MAX_DELAY_MS + 1),
        };
        let Err(TaskRefusal::Invalid(fields)) = bad.parse(&rules(), None) else {
            panic!("refused for its fields")
        };
        let named: Vec<&str> = fields.iter().map(|f| f.field).collect();
        assert_eq!(named, ["kind", "max_attempts", "delay_ms"]);

        let Err(TaskRefusal::Invalid(fields)) = draft("echo", json!("bad")).parse(&rules(), None)
        else {
            panic!("refused for its payload")
        };
        assert_eq!(fields[0].field, "payload");
    }

    #[test]
    fn a_payload_over_the_limit_is_too_large_whatever_else_is_wrong() {
        let big = draft("Bad Kind", json!("x".repeat(100)));
        assert_eq!(
            big.parse(&rules(), None),
            Err(TaskRefusal::TooLarge {
                size: 102,
                limit: 64
            })
        );
    }

    #[test]
    fn the_same_draft_has_the_same_fingerprint_and_any_change_another() {
        let key = IdempotencyKey::parse("order-42").unwrap();
        let one = Idempotency::new(key.clone(), &draft("echo", json!({"a": 1})));
        let same = Idempotency::new(key.clone(), &draft("echo", json!({"a": 1})));
        let other = Idempotency::new(key, &draft("echo", json!({"a": 2})));
        assert_eq!(one, same);
        assert_ne!(one.fingerprint, other.fingerprint);
    }

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert!(IdempotencyKey::parse("order-42 retry").is_ok());
        for bad in ["", "tab\there", &"k".repeat(256), "naïve"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
