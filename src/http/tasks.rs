//! `/api/v1/tasks` and `/api/v1/queue`: a user's own tasks and queue.
//! Another user's task does not exist as far as a caller can tell: 404.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::Authenticated;
use crate::domain::{
    Cancelled, Enqueued, Idempotency, IdempotencyKey, Task, TaskDraft, TaskId, TaskQuery,
    TaskStatus,
};
use crate::telemetry::TraceParent;

/// Marks an answer as the one an earlier request with the same
/// `Idempotency-Key` got.
const REPLAYED: &str = "idempotent-replayed";

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// A task kind this service has a handler for.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$", example = "echo")]
    pub kind: String,
    /// The kind's input, at most `queue.max_payload_bytes` of JSON.
    #[serde(default)]
    pub payload: Value,
    /// Attempts before the task is dead; `queue.max_attempts` if absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 25)]
    pub max_attempts: Option<u32>,
    /// Wait this long before the first attempt.
    #[serde(default)]
    #[schema(maximum = 604800000)]
    pub delay_ms: Option<u64>,
}

impl From<EnqueueBody> for TaskDraft {
    fn from(body: EnqueueBody) -> Self {
        Self {
            kind: body.kind,
            payload: body.payload,
            max_attempts: body.max_attempts,
            delay_ms: body.delay_ms,
        }
    }
}

/// Strings here, so that a bad value is a 422 naming the parameter rather
/// than a bare 400; the document gives the types they must parse as.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this state.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Tasks per page, 1 to 100; 50 if absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the page before.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
}

/// The `Idempotency-Key` header, as the OpenAPI document gives it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyHeader {
    /// Makes a resend safe: the same key and request within
    /// `queue.idempotency_ttl_secs` get the first answer again, marked
    /// `idempotent-replayed: true`. Printable ASCII; HTTP drops spaces at
    /// either end.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]([ -~]{0,253}[!-~])?$")]
    idempotency_key: Option<String>,
}

/// What an enqueue answers, through this route or the older `/enqueue`.
/// Never built: it only describes the answers to the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, clippy::large_enum_variant)]
pub enum EnqueueAnswers {
    #[response(status = 202, description = "Queued (or, with a replayed key, the first answer again)",
        headers(
            ("location" = String, description = "The task's URL"),
            ("idempotent-replayed" = String, description = "`true` when this is an earlier answer replayed"),
        ))]
    Queued(Task),
    #[response(
        status = 413,
        description = "`payload_too_large`: the payload is over `queue.max_payload_bytes`"
    )]
    TooLarge,
    #[response(
        status = 422,
        description = "`idempotency_key_reused`: the key came before with another request"
    )]
    KeyReused,
    #[response(
        status = 429,
        description = "`queue_full`: `queue.max_pending_per_user` of the caller's tasks are waiting, their payloads hold `queue.max_pending_bytes_per_user` bytes, or `queue.max_retained_per_user` finished tasks are kept and none can be forgotten yet"
    )]
    Full,
    #[response(
        status = 503,
        description = "`queue_unavailable`: the task store cannot be reached; resend with the same `Idempotency-Key`"
    )]
    Unavailable,
}

/// One page of the caller's tasks, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskPage {
    items: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    next_cursor: Option<TaskId>,
}

/// Queues a task for the caller.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks",
    security(("bearer" = [])),
    params(IdempotencyHeader),
    request_body = EnqueueBody,
    responses(EnqueueAnswers))]
pub async fn enqueue_task(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    body: web::Json<EnqueueBody>,
) -> Result<HttpResponse, ApiError> {
    enqueue(&state, &auth, &req, body.into_inner().into()).await
}

/// Enqueues the task `draft` describes for the caller: 202 with the task
/// and its location.
pub async fn enqueue(
    state: &AppState,
    auth: &Authenticated,
    req: &HttpRequest,
    draft: TaskDraft,
) -> Result<HttpResponse, ApiError> {
    // Bound to the draft as the client sent it: the same key with another
    // request is told apart from a retry.
    let idempotency = match req.headers().get("idempotency-key") {
        Some(key) => {
            let key = IdempotencyKey::parse(&String::from_utf8_lossy(key.as_bytes()))?;
            Some(Idempotency::new(key, &draft))
        }
        None => None,
    };
    let request = draft.parse(&state.intake.rules(), TraceParent::current().map(|t| t.0))?;
    let enqueued = state
        .queue
        .enqueue(auth.session.user_id, request, idempotency)
        .await?;
    let (task, replayed) = match enqueued {
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
        Enqueued::FullFinished { finished } => {
            return Err(ApiError::new(
                ErrorCode::QueueFull,
                format!(
                    "{finished} of your finished tasks are kept, the most allowed, and none \
                     could be forgotten yet; retry when more have finished"
                ),
            ));
        }
        Enqueued::FullBytes { bytes } => {
            return Err(ApiError::new(
                ErrorCode::QueueFull,
                format!(
                    "your waiting tasks hold {bytes} bytes of payload and this one would take \
                     them past the most allowed; retry when some have run"
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

/// One of the caller's tasks.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task's id")),
    responses(
        (status = 200, body = Task, description = "The task"),
        (status = 404, description = "`not_found`: no such task of the caller's (another user's task included)"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn get_task(
    state: web::Data<AppState>,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<web::Json<Task>, ApiError> {
    let id = TaskId::parse(&id).ok_or_else(ApiError::not_found)?;
    let task = state.queue.get(auth.session.user_id, id).await?;
    task.map(web::Json).ok_or_else(ApiError::not_found)
}

/// The caller's tasks, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = TaskPage, description = "A page of tasks"),
        (status = 422, description = "`invalid_input`: a parameter is not what it must be"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn list_tasks(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<web::Json<TaskPage>, ApiError> {
    let query = TaskQuery::parse(
        query.status.as_deref(),
        query.limit.as_deref(),
        query.cursor.as_deref(),
    )?;
    let page = state.queue.list(auth.session.user_id, query).await?;
    Ok(web::Json(TaskPage {
        items: page.items,
        next_cursor: page.next,
    }))
}

/// Cancels one of the caller's tasks while it waits.
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task's id")),
    responses(
        (status = 200, body = Task, description = "Cancelled (again, if it was already)"),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`task_not_cancellable`: it is running or finished"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn cancel_task(
    state: web::Data<AppState>,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<web::Json<Task>, ApiError> {
    let id = TaskId::parse(&id).ok_or_else(ApiError::not_found)?;
    match state.queue.cancel(auth.session.user_id, id).await? {
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
#[derive(Serialize, utoipa::ToSchema)]
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
    #[schema(required = true)]
    max_running: Option<u64>,
}

/// The caller's queue: tasks counted by state, and the limits.
#[utoipa::path(get, path = "/api/v1/queue", tag = "tasks",
    security(("bearer" = [])),
    responses(
        (status = 200, body = QueueView, description = "The counts"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn get_queue(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<QueueView>, ApiError> {
    let counts = state.queue.counts(auth.session.user_id).await?;
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
