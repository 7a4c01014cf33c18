//! `/api/v1/tasks` and `/api/v1/queue`: a user's own tasks and queue.
//! Another user's task does not exist as far as a caller can tell: 404.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{AppState, Authenticated};
use crate::actors::{CancelTask, CountTasks, Enqueue, GetTask, ListTasks, TaskRequest};
use crate::domain::{
    IdempotencyKey, InvalidInput, MAX_ATTEMPTS, MAX_DELAY_MS, Task, TaskId, TaskKind, TaskStatus,
};
use crate::error::{ApiError, ErrorCode};
use crate::storage::{Cancelled, Enqueued};
use crate::telemetry::TraceParent;

/// Longest page of tasks a client may ask for, and the default.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 50;

/// Marks an answer as the one an earlier request with the same
/// `Idempotency-Key` got.
const REPLAYED: &str = "idempotent-replayed";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub struct TaskPage {
    items: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<TaskId>,
}

pub async fn enqueue_task(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    body: web::Json<EnqueueBody>,
) -> Result<HttpResponse, ApiError> {
    enqueue(&state, &auth, &req, body.into_inner()).await
}

/// Enqueues the task `body` describes for the caller: 202 with the task
/// and its location.
pub async fn enqueue(
    state: &AppState,
    auth: &Authenticated,
    req: &HttpRequest,
    body: EnqueueBody,
) -> Result<HttpResponse, ApiError> {
    // Only with a key, and before the body is taken apart: the digest
    // tells a retry (same key, same request) from a key reused for another
    // request.
    let idempotency = match req.headers().get("idempotency-key") {
        Some(key) => {
            let key = IdempotencyKey::parse(&String::from_utf8_lossy(key.as_bytes()))?;
            let serialized = serde_json::to_vec(&body)
                .map_err(|e| ApiError::with_cause(ErrorCode::Internal, "internal error", e))?;
            Some((key, format!("{:x}", Sha256::digest(serialized))))
        }
        None => None,
    };
    let request = task_request(state, body)?;
    let enqueue = Enqueue {
        user: auth.session.user_id,
        request,
        idempotency,
    };
    let (task, replayed) = match state.queue.router.send(enqueue).await?? {
        Enqueued::Created(task) => (task, false),
        Enqueued::Replayed(task) => (task, true),
        Enqueued::KeyReused => {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key came before with a different request",
            ));
        }
        Enqueued::Full { pending } => {
            return Err(ApiError::new(
                ErrorCode::QueueFull,
                format!(
                    "{pending} of your tasks are waiting, the most allowed; retry when some \
                     have run"
                ),
            ));
        }
    };
    let mut response = HttpResponse::Accepted();
    response.insert_header((header::LOCATION, format!("/api/v1/tasks/{}", task.id)));
    if replayed {
        response.insert_header((REPLAYED, "true"));
    }
    Ok(response.json(task))
}

/// Checks every field of an enqueue body, naming all that are wrong.
fn task_request(state: &AppState, body: EnqueueBody) -> Result<TaskRequest, ApiError> {
    let size = body.payload.to_string().len();
    let limit = state.max_payload_bytes;
    if size > limit {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the payload is {size} bytes of JSON; the limit is {limit}"),
        ));
    }
    let handler = TaskKind::parse(&body.kind).and_then(|kind| {
        let handler = state.handlers.get(&kind).cloned().ok_or(InvalidInput::new(
            "kind",
            "is not a task kind this service runs",
        ))?;
        Ok((kind, handler))
    });
    let payload = match &handler {
        Ok((_, handler)) => handler.validate(&body.payload),
        Err(_) => Ok(()),
    };
    let max_attempts = match body.max_attempts {
        Some(n) if !(1..=MAX_ATTEMPTS).contains(&n) => Err(InvalidInput::new(
            "max_attempts",
            "must be between 1 and 25",
        )),
        n => Ok(n),
    };
    let delay = match body.delay_ms.unwrap_or(0) {
        ms if ms > MAX_DELAY_MS => Err(InvalidInput::new(
            "delay_ms",
            "must be at most 604800000 (seven days)",
        )),
        ms => Ok(std::time::Duration::from_millis(ms)),
    };
    match (handler, payload, max_attempts, delay) {
        (Ok((kind, _)), Ok(()), Ok(max_attempts), Ok(delay)) => Ok(TaskRequest {
            kind,
            payload: body.payload,
            max_attempts,
            delay,
            trace: TraceParent::current(),
        }),
        (handler, payload, max_attempts, delay) => Err(ApiError::invalid_fields([
            handler.err(),
            payload.err(),
            max_attempts.err(),
            delay.err(),
        ])),
    }
}

pub async fn get_task(
    state: web::Data<AppState>,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<web::Json<Task>, ApiError> {
    let id = TaskId::parse(&id).ok_or_else(ApiError::not_found)?;
    let get = GetTask {
        user: auth.session.user_id,
        id,
    };
    let task = state.queue.router.send(get).await??;
    task.map(web::Json).ok_or_else(ApiError::not_found)
}

pub async fn list_tasks(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<web::Json<TaskPage>, ApiError> {
    let query = query.into_inner();
    let status = query
        .status
        .map(|s| {
            TaskStatus::parse(&s).ok_or(InvalidInput::new(
                "status",
                "must be one of queued, running, succeeded, failed, dead, cancelled",
            ))
        })
        .transpose();
    let limit = query
        .limit
        .map_or(Ok(DEFAULT_PAGE), |l| l.parse::<usize>().map_err(drop))
        .ok()
        .filter(|l| (1..=MAX_PAGE).contains(l))
        .ok_or(InvalidInput::new("limit", "must be between 1 and 100"));
    let before = query
        .cursor
        .map(|c| {
            TaskId::parse(&c).ok_or(InvalidInput::new(
                "cursor",
                "must be a next_cursor from an earlier page",
            ))
        })
        .transpose();
    let (status, limit, before) = match (status, limit, before) {
        (Ok(status), Ok(limit), Ok(before)) => (status, limit, before),
        (status, limit, before) => {
            return Err(ApiError::invalid_fields([
                status.err(),
                limit.err(),
                before.err(),
            ]));
        }
    };
    let list = ListTasks {
        user: auth.session.user_id,
        status,
        before,
        limit,
    };
    let page = state.queue.router.send(list).await??;
    Ok(web::Json(TaskPage {
        items: page.items,
        next_cursor: page.next,
    }))
}

pub async fn cancel_task(
    state: web::Data<AppState>,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<web::Json<Task>, ApiError> {
    let id = TaskId::parse(&id).ok_or_else(ApiError::not_found)?;
    let cancel = CancelTask {
        user: auth.session.user_id,
        id,
    };
    match state.queue.router.send(cancel).await?? {
        Cancelled::Cancelled(task) => Ok(web::Json(task)),
        Cancelled::NotWaiting(task) => Err(ApiError::new(
            ErrorCode::TaskNotCancellable,
            format!(
                "the task is {}; only queued or failed tasks can be cancelled",
                task.status.as_str()
            ),
        )),
        Cancelled::NotFound => Err(ApiError::not_found()),
    }
}

/// The caller's tasks counted by state, with the limits that apply.
#[derive(Serialize)]
pub struct QueueView {
    /// Waiting to run: queued, or failed with a retry scheduled.
    pending: u64,
    queued: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    dead: u64,
    cancelled: u64,
    /// Most tasks that may be pending at once.
    limit: u64,
    /// Most tasks that may run at once; `null` for no bound but the pool's.
    max_running: Option<u64>,
}

pub async fn get_queue(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<QueueView>, ApiError> {
    let counts = state
        .queue
        .router
        .send(CountTasks(auth.session.user_id))
        .await??;
    let limits = state.queue.limits();
    Ok(web::Json(QueueView {
        pending: counts.pending(),
        queued: counts.queued,
        running: counts.running,
        succeeded: counts.succeeded,
        failed: counts.failed,
        dead: counts.dead,
        cancelled: counts.cancelled,
        limit: limits.max_pending,
        max_running: (limits.max_running > 0).then_some(limits.max_running),
    }))
}
