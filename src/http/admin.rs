//! The admin API, served on a listener of its own (`admin.bind`) so that it
//! can be kept off the public network. Every request carries the admin
//! token as its bearer; every change is logged with the token's
//! fingerprint (never the token), what it did and to how many, and counted
//! in `tollgate_admin_actions_total`.

use std::sync::{Arc, OnceLock};

use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, http::header, web};
use chrono::{DateTime, Utc};
use futures_util::future::{Ready, ready};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::OpenApi as _;

use super::error::{ApiError, ErrorCode};
use super::extract::bearer_token;
use super::routes::{BodyLimits, json, method_name, not_found, routes};
use super::schema;
use super::views::SessionView;
use crate::accounts::{AccountError, UserRegistry};
use crate::actors::{HasherPool, Queue};
use crate::domain::{
    InvalidInput, Retried, Task, TaskCounts, TaskFilter, TaskId, TaskKind, TaskQuery, TaskStatus,
    User, UserCursor, UserId, UserQuery,
};
use crate::telemetry::{Metrics, MetricsExport};

/// What every admin handler can reach.
pub struct AdminState {
    pub registry: UserRegistry,
    pub queue: Queue,
    pub hashers: Arc<HasherPool>,
    pub metrics: Metrics,
    /// What `/metrics` renders, when the admin listener serves it.
    pub export: Option<Arc<MetricsExport>>,
    token: AdminToken,
}

impl AdminState {
    pub fn new(
        registry: UserRegistry,
        queue: Queue,
        hashers: Arc<HasherPool>,
        metrics: Metrics,
        export: Option<Arc<MetricsExport>>,
        token: &SecretString,
    ) -> Self {
        Self {
            registry,
            queue,
            hashers,
            metrics,
            export,
            token: AdminToken::new(token),
        }
    }

    /// Logs and counts a change an operator made.
    fn record(&self, operator: &Operator, action: &'static str, target: &str, changed: usize) {
        tracing::info!(
            operator = operator.fingerprint.as_str(),
            action,
            target,
            changed,
            "admin action"
        );
        self.metrics.admin_action(action, changed as u64);
    }
}

/// The admin token, kept as its digest: a comparison takes the same time
/// whatever was presented, and its fingerprint names it in logs.
struct AdminToken {
    digest: [u8; 32],
    fingerprint: String,
}

impl AdminToken {
    fn new(token: &SecretString) -> Self {
        let digest: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            digest,
            fingerprint: format!("sha256:{hex}"),
        }
    }
}

/// A caller who presented the admin token, named by its fingerprint.
pub struct Operator {
    fingerprint: String,
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AdminState>>() else {
            return ready(Err(ApiError::internal(anyhow::anyhow!("no AdminState"))));
        };
        let Some(presented) = bearer_token(req) else {
            return ready(Err(ApiError::missing_credentials()));
        };
        let matches: bool = Sha256::digest(presented.as_bytes())
            .ct_eq(&state.token.digest)
            .into();
        ready(if matches {
            Ok(Self {
                fingerprint: state.token.fingerprint.clone(),
            })
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidToken,
                "the bearer is not the admin token",
            ))
        })
    }
}

/// A user as operators see one.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminUserView {
    id: UserId,
    username: String,
    #[schema(required = true)]
    email: Option<String>,
    created_at: DateTime<Utc>,
    disabled: bool,
    /// When an operator disabled the user, if one did.
    #[schema(required = true)]
    disabled_at: Option<DateTime<Utc>>,
    /// Sessions the user holds now (lapsed ones not yet swept included).
    sessions: usize,
}

impl AdminUserView {
    fn new(user: User, sessions: usize) -> Self {
        Self {
            id: user.id,
            username: user.username,
            email: user.email,
            created_at: user.created_at,
            disabled: user.disabled_at.is_some(),
            disabled_at: user.disabled_at,
            sessions,
        }
    }
}

/// The most users one page holds.
const MAX_PAGE: usize = 100;
/// The longest search text.
const MAX_QUERY_CHARS: usize = 256;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Part of a username or e-mail address, in any case.
    #[param(max_length = 256, pattern = "^[^\\x00]*$")]
    query: Option<String>,
    /// Users per page, 1 to 100 (50 if absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The `next_cursor` of the page before.
    #[param(pattern = "^[0-9]{1,18}_[0-9a-f]{32}$")]
    cursor: Option<String>,
}

impl UsersQuery {
    fn parse(self) -> Result<UserQuery, ApiError> {
        let mut errors = Vec::new();
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            errors.push(InvalidInput::new("limit", "must be between 1 and 100"));
        }
        let contains = self.query.filter(|query| !query.is_empty());
        if contains
            .as_ref()
            .is_some_and(|query| query.chars().count() > MAX_QUERY_CHARS)
        {
            errors.push(InvalidInput::new("query", "must be at most 256 characters"));
        }
        // No name holds a NUL, and PostgreSQL text cannot.
        if contains.as_ref().is_some_and(|query| query.contains('\0')) {
            errors.push(InvalidInput::new("query", "must not hold a NUL character"));
        }
        let after = match self.cursor.as_deref().map(str::parse::<UserCursor>) {
            None => None,
            Some(Ok(cursor)) => Some(cursor),
            Some(Err(())) => {
                errors.push(InvalidInput::new(
                    "cursor",
                    "must be a next_cursor from an earlier page",
                ));
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors.into());
        }
        Ok(UserQuery {
            contains,
            after,
            limit,
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserPage {
    items: Vec<AdminUserView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Users, newest first, with whether each is disabled and how many
/// sessions they hold.
#[utoipa::path(get, path = "/admin/api/v1/users", tag = "users",
    security(("admin" = [])),
    params(UsersQuery),
    responses(
        (status = 200, body = UserPage, description = "A page of users"),
        (status = 422, description = "`invalid_input`: a parameter out of range"),
        (status = 503, description = "`storage_unavailable`"),
    ))]
pub async fn list_users(
    state: web::Data<AdminState>,
    _: Operator,
    query: web::Query<UsersQuery>,
) -> Result<web::Json<UserPage>, ApiError> {
    let query = query.into_inner().parse()?;
    let limit = query.limit;
    let users = state.registry.users(query).await?;
    let next_cursor = (users.len() == limit)
        .then(|| {
            users
                .last()
                .map(|(user, _)| UserCursor::of(user).to_string())
        })
        .flatten();
    let items = users
        .into_iter()
        .map(|(user, sessions)| AdminUserView::new(user, sessions))
        .collect();
    Ok(web::Json(UserPage { items, next_cursor }))
}

/// One user's tasks, counted by state, and whether they are paused.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueCountsView {
    paused: bool,
    queued: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    dead: u64,
    cancelled: u64,
}

impl QueueCountsView {
    fn new(counts: TaskCounts, paused: bool) -> Self {
        Self {
            paused,
            queued: counts.queued,
            running: counts.running,
            succeeded: counts.succeeded,
            failed: counts.failed,
            dead: counts.dead,
            cancelled: counts.cancelled,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserDetail {
    user: AdminUserView,
    /// The user's live sessions, newest first (at most 200).
    sessions: Vec<SessionView>,
    queue: QueueCountsView,
}

/// A user id from the path: anything else is a 404, as no user has it.
fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse()
        .map(UserId)
        .map_err(|_| ApiError::new(ErrorCode::NotFound, "no such user"))
}

/// The user, or 404.
fn found<T>(result: Result<T, AccountError>) -> Result<T, ApiError> {
    result.map_err(|err| match err {
        AccountError::UnknownUser => ApiError::new(ErrorCode::NotFound, "no such user"),
        err => err.into(),
    })
}

/// One user, their sessions and their tasks counted by state.
#[utoipa::path(get, path = "/admin/api/v1/users/{id}", tag = "users",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = UserDetail, description = "The user"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 503, description = "`storage_unavailable`, `queue_unavailable`"),
    ))]
pub async fn get_user(
    state: web::Data<AdminState>,
    _: Operator,
    id: web::Path<String>,
) -> Result<web::Json<UserDetail>, ApiError> {
    let id = user_id(&id)?;
    let user = found(state.registry.user(id).await)?;
    let sessions = state.registry.session_counts(&[id]).await?;
    let live = state.registry.sessions_of(id).await?;
    let counts = state.queue.counts(id).await?;
    let paused = state.queue.is_paused(id).await?;
    Ok(web::Json(UserDetail {
        user: AdminUserView::new(user, sessions.first().copied().unwrap_or(0)),
        sessions: live
            .iter()
            .map(|listed| SessionView::new(listed, None))
            .collect(),
        queue: QueueCountsView::new(counts, paused),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Disabled {
    user: AdminUserView,
    /// Sessions the disabling ended.
    sessions_ended: usize,
}

/// Disables a user: every session of theirs ends at once, and sign-in
/// answers 403 `account_disabled` until they are enabled. Disabling a
/// disabled user ends any session left and keeps the first time.
#[utoipa::path(post, path = "/admin/api/v1/users/{id}/disable", tag = "users",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = Disabled, description = "Disabled, sessions ended"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 503, description = "`storage_unavailable`: retry, which completes what was left"),
    ))]
pub async fn disable_user(
    state: web::Data<AdminState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<web::Json<Disabled>, ApiError> {
    let id = user_id(&id)?;
    let (user, ended) = found(state.registry.disable(id).await)?;
    state.record(&operator, "user.disable", &id.to_string(), 1);
    Ok(web::Json(Disabled {
        user: AdminUserView::new(user, 0),
        sessions_ended: ended,
    }))
}

/// Lets a disabled user sign in again.
#[utoipa::path(post, path = "/admin/api/v1/users/{id}/enable", tag = "users",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = AdminUserView, description = "Enabled"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 503, description = "`storage_unavailable`"),
    ))]
pub async fn enable_user(
    state: web::Data<AdminState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<web::Json<AdminUserView>, ApiError> {
    let id = user_id(&id)?;
    let user = found(state.registry.enable(id).await)?;
    state.record(&operator, "user.enable", &id.to_string(), 1);
    let sessions = state.registry.session_counts(&[id]).await?;
    Ok(web::Json(AdminUserView::new(
        user,
        sessions.first().copied().unwrap_or(0),
    )))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SignedOut {
    sessions_ended: usize,
}

/// Ends every session of a user, who may sign in again.
#[utoipa::path(delete, path = "/admin/api/v1/users/{id}/sessions", tag = "users",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = SignedOut, description = "How many sessions ended"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 503, description = "`storage_unavailable`"),
    ))]
pub async fn sign_out_user(
    state: web::Data<AdminState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<web::Json<SignedOut>, ApiError> {
    let id = user_id(&id)?;
    found(state.registry.user(id).await)?;
    let ended = state.registry.sign_out_everywhere(id).await?;
    state.record(&operator, "user.sign_out", &id.to_string(), ended);
    Ok(web::Json(SignedOut {
        sessions_ended: ended,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// Only tasks in this state.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Only this user's tasks.
    #[param(value_type = Option<uuid::Uuid>)]
    user: Option<String>,
    /// Only tasks of this kind.
    #[param(value_type = Option<TaskKind>)]
    kind: Option<String>,
    /// Tasks per page, 1 to 100; 50 if absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the page before.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
}

/// A user id named as a filter: one that is no id is a field at fault.
fn filter_user(raw: Option<&str>) -> Result<Option<UserId>, InvalidInput> {
    raw.map(|raw| {
        raw.parse()
            .map(UserId)
            .map_err(|_| InvalidInput::new("user", "must be a user id"))
    })
    .transpose()
}

fn filter_kind(raw: Option<&str>) -> Result<Option<TaskKind>, InvalidInput> {
    raw.map(TaskKind::parse).transpose()
}

impl TasksQuery {
    fn parse(self) -> Result<(TaskFilter, TaskQuery), ApiError> {
        let query = TaskQuery::parse(
            self.status.as_deref(),
            self.limit.as_deref(),
            self.cursor.as_deref(),
        );
        let user = filter_user(self.user.as_deref());
        let kind = filter_kind(self.kind.as_deref());
        match (query, user, kind) {
            (Ok(query), Ok(user), Ok(kind)) => Ok((
                TaskFilter {
                    user,
                    status: query.status,
                    kind,
                },
                query,
            )),
            (query, user, kind) => {
                let mut errors = query.err().unwrap_or_default();
                errors.extend(user.err());
                errors.extend(kind.err());
                Err(errors.into())
            }
        }
    }
}

/// A task as operators see one: with its user.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminTaskView {
    user_id: UserId,
    #[serde(flatten)]
    task: Task,
}

impl From<Task> for AdminTaskView {
    fn from(task: Task) -> Self {
        Self {
            user_id: task.user_id,
            task,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminTaskPage {
    items: Vec<AdminTaskView>,
    /// Pass as `cursor` for the next page; `null` once nothing is left. A
    /// page narrowed by state or kind looks at a bounded number of tasks,
    /// so it may be short, or empty, with a cursor to go on from.
    #[schema(required = true)]
    next_cursor: Option<TaskId>,
}

/// Tasks across users, newest first, narrowed by state, user and kind.
#[utoipa::path(get, path = "/admin/api/v1/tasks", tag = "tasks",
    security(("admin" = [])),
    params(TasksQuery),
    responses(
        (status = 200, body = AdminTaskPage, description = "A page of tasks"),
        (status = 422, description = "`invalid_input`: a parameter is not what it must be"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn list_tasks(
    state: web::Data<AdminState>,
    _: Operator,
    query: web::Query<TasksQuery>,
) -> Result<web::Json<AdminTaskPage>, ApiError> {
    let (filter, query) = query.into_inner().parse()?;
    let page = state.queue.scan(&filter, query.before, query.limit).await?;
    Ok(web::Json(AdminTaskPage {
        items: page.items.into_iter().map(AdminTaskView::from).collect(),
        next_cursor: page.next,
    }))
}

/// Queues a dead or cancelled task again under its id, its attempts reset.
#[utoipa::path(post, path = "/admin/api/v1/tasks/{id}/retry", tag = "tasks",
    security(("admin" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task's id")),
    responses(
        (status = 200, body = AdminTaskView, description = "Queued again"),
        (status = 404, description = "`not_found`: no such task"),
        (status = 409, description = "`task_not_retriable`: the task is neither dead nor cancelled"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn retry_task(
    state: web::Data<AdminState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<web::Json<AdminTaskView>, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such task");
    let id = TaskId::parse(&id).ok_or_else(not_found)?;
    match state.queue.retry(id).await? {
        Retried::Retried(task) => {
            state.record(&operator, "task.retry", &task.id.to_string(), 1);
            Ok(web::Json(task.into()))
        }
        Retried::NotRetriable(task) => Err(ApiError::new(
            ErrorCode::TaskNotRetriable,
            format!(
                "the task is {}: only dead and cancelled tasks are retried",
                task.status.as_str()
            ),
        )),
        Retried::NotFound => Err(not_found()),
    }
}

/// Which tasks a call in bulk means; what is left out matches every task.
/// With none of `status`, `user` and `kind`, `all` must say `true`: an
/// empty body never means every task by accident.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    status: Option<String>,
    user: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    all: bool,
}

/// At least one of `status`, `user` and `kind` (`null` counts as absent),
/// or `all: true`.
impl utoipa::PartialSchema for BulkBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, AllOfBuilder, AnyOfBuilder};
        use utoipa::openapi::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        let string = |pattern: Option<&str>, format: Option<KnownFormat>| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(pattern)
                .format(format.map(SchemaFormat::KnownFormat))
        };
        let status = || {
            string(
                Some("^(queued|running|succeeded|failed|dead|cancelled)$"),
                None,
            )
        };
        let user = || string(None, Some(KnownFormat::Uuid));
        let kind = || string(Some("^[a-z0-9_.-]{1,64}$"), None);
        let all = || ObjectBuilder::new().schema_type(Type::Boolean);
        let fields = ObjectBuilder::new()
            .property("status", schema::nullable(status().build()))
            .property("user", schema::nullable(user().build()))
            .property("kind", schema::nullable(kind().build()))
            .property(
                "all",
                all().description(Some("`true` to mean every task when no filter is given")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let given = |member: &str, value: ObjectBuilder| {
            ObjectBuilder::new()
                .property(member, value)
                .required(member)
        };
        let scope = AnyOfBuilder::new()
            .item(given("status", status()))
            .item(given("user", user()))
            .item(given("kind", kind()))
            .item(given("all", all().enum_values(Some([true]))));
        AllOfBuilder::new()
            .item(fields)
            .item(scope)
            .description(Some(
                "Which tasks: by status, user and kind (what is left out matches every task), \
                 or `all: true` for every task",
            ))
            .into()
    }
}

impl utoipa::ToSchema for BulkBody {}

impl BulkBody {
    fn parse(self) -> Result<TaskFilter, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(|raw| {
                TaskStatus::parse(raw).ok_or(InvalidInput::new(
                    "status",
                    "must be one of queued, running, succeeded, failed, dead, cancelled",
                ))
            })
            .transpose();
        let user = filter_user(self.user.as_deref());
        let kind = filter_kind(self.kind.as_deref());
        let unfiltered = self.status.is_none() && self.user.is_none() && self.kind.is_none();
        if unfiltered && !self.all {
            return Err(InvalidInput::new(
                "all",
                "must be true to mean every task; or name a status, user or kind",
            )
            .into());
        }
        match (status, user, kind) {
            (Ok(status), Ok(user), Ok(kind)) => Ok(TaskFilter { user, status, kind }),
            (status, user, kind) => Err([status.err(), user.err(), kind.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .into()),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkAnswer {
    /// Tasks the filter matched.
    matched: u64,
    /// Of those, the ones changed: retried (dead or cancelled ones) or
    /// cancelled (waiting ones).
    changed: u64,
}

/// Queues again every dead or cancelled task the filter matches.
#[utoipa::path(post, path = "/admin/api/v1/tasks/retry", tag = "tasks",
    security(("admin" = [])),
    request_body = BulkBody,
    responses(
        (status = 200, body = BulkAnswer, description = "How many matched and how many were retried"),
        (status = 503, description = "`queue_unavailable`: some may have been retried; sending it again retries the rest"),
    ))]
pub async fn retry_tasks(
    state: web::Data<AdminState>,
    operator: Operator,
    body: web::Json<BulkBody>,
) -> Result<web::Json<BulkAnswer>, ApiError> {
    in_bulk(&state, &operator, body.into_inner(), Change::Retry).await
}

/// Cancels every waiting task the filter matches.
#[utoipa::path(post, path = "/admin/api/v1/tasks/cancel", tag = "tasks",
    security(("admin" = [])),
    request_body = BulkBody,
    responses(
        (status = 200, body = BulkAnswer, description = "How many matched and how many were cancelled"),
        (status = 503, description = "`queue_unavailable`: some may have been cancelled; sending it again cancels the rest"),
    ))]
pub async fn cancel_tasks(
    state: web::Data<AdminState>,
    operator: Operator,
    body: web::Json<BulkBody>,
) -> Result<web::Json<BulkAnswer>, ApiError> {
    in_bulk(&state, &operator, body.into_inner(), Change::Cancel).await
}

/// What a call in bulk does to the tasks it matches.
enum Change {
    Retry,
    Cancel,
}

async fn in_bulk(
    state: &AdminState,
    operator: &Operator,
    body: BulkBody,
    change: Change,
) -> Result<web::Json<BulkAnswer>, ApiError> {
    let filter = body.parse()?;
    let (bulk, action) = match change {
        Change::Retry => (state.queue.retry_matching(&filter).await?, "task.retry"),
        Change::Cancel => (state.queue.cancel_matching(&filter).await?, "task.cancel"),
    };
    state.record(operator, action, &describe(&filter), bulk.changed as usize);
    Ok(web::Json(BulkAnswer {
        matched: bulk.matched,
        changed: bulk.changed,
    }))
}

/// A filter as the log names it.
fn describe(filter: &TaskFilter) -> String {
    let user = filter
        .user
        .map_or("any".to_owned(), |user| user.to_string());
    let status = filter.status.map_or("any", TaskStatus::as_str);
    let kind = filter.kind.as_ref().map_or("any", TaskKind::as_str);
    format!("user={user} status={status} kind={kind}")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueuePaused {
    /// Whether the user's queue is paused now.
    paused: bool,
    /// Whether this call changed that.
    changed: bool,
}

/// Keeps a user's tasks waiting, in their order, while others' run; they
/// may still enqueue and cancel.
#[utoipa::path(post, path = "/admin/api/v1/users/{id}/queue/pause", tag = "users",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = QueuePaused, description = "Paused"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn pause_queue(
    state: web::Data<AdminState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<web::Json<QueuePaused>, ApiError> {
    set_paused(&state, &operator, &id, true).await
}

/// Lets a paused user's tasks run again, in their order.
#[utoipa::path(post, path = "/admin/api/v1/users/{id}/queue/resume", tag = "users",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = QueuePaused, description = "Resumed"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn resume_queue(
    state: web::Data<AdminState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<web::Json<QueuePaused>, ApiError> {
    set_paused(&state, &operator, &id, false).await
}

/// Pauses or resumes the queue of the user `id` names.
async fn set_paused(
    state: &AdminState,
    operator: &Operator,
    id: &str,
    paused: bool,
) -> Result<web::Json<QueuePaused>, ApiError> {
    let id = user_id(id)?;
    found(state.registry.user(id).await)?;
    let (changed, action) = match paused {
        true => (state.queue.pause(id).await?, "queue.pause"),
        false => (state.queue.resume(id).await?, "queue.resume"),
    };
    state.record(operator, action, &id.to_string(), usize::from(changed));
    Ok(web::Json(QueuePaused { paused, changed }))
}

/// The users the queue view lists at most.
const BUSIEST: usize = 100;

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserLoadView {
    user_id: UserId,
    waiting: u64,
    running: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PoolView {
    /// How many the pool is asked for.
    target: usize,
    /// How many run now.
    live: usize,
    /// Of those, how many are at work, where the pool tells.
    #[schema(required = true)]
    busy: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Pools {
    /// The task workers (besides those kept for newcomers).
    workers: PoolView,
    /// The bcrypt threads.
    hashers: PoolView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KindView {
    kind: TaskKind,
    /// Tasks of the kind running, over every replica.
    running: u64,
    /// Ready tasks set aside until the kind has room under its limits.
    parked: u64,
    /// `[queue.kinds.<kind>] max_running`; 0 means paused.
    #[schema(required = true)]
    max_running: Option<u64>,
    /// `[queue.kinds.<kind>] max_per_second`.
    #[schema(required = true)]
    max_per_second: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueuesView {
    /// Tasks queued or failed (awaiting a retry), over all users.
    waiting: u64,
    /// Users with any such task.
    users_waiting: u64,
    /// When the ready task that has waited longest fell due (paused users'
    /// tasks are not counted); `null` if none is ready.
    #[schema(required = true)]
    oldest_due_at: Option<DateTime<Utc>>,
    /// Up to 100 users with the most tasks waiting, most first (found
    /// among at most 10,000 of the users with any).
    users: Vec<UserLoadView>,
    /// Each kind with limits (`[queue.kinds.<kind>]`), by name.
    kinds: Vec<KindView>,
    pools: Pools,
}

/// The queue over all users: what waits, who has the most waiting, and
/// the pools that work on it.
#[utoipa::path(get, path = "/admin/api/v1/queues", tag = "tasks",
    security(("admin" = [])),
    responses(
        (status = 200, body = QueuesView, description = "The queue and the pools"),
        (status = 503, description = "`queue_unavailable`"),
    ))]
pub async fn queues(
    state: web::Data<AdminState>,
    _: Operator,
) -> Result<web::Json<QueuesView>, ApiError> {
    let (busiest, stats) = state.queue.load(BUSIEST).await?;
    let workers = state
        .queue
        .status()
        .await
        .map_err(|err| ApiError::from(crate::actors::QueueError::from(err)))?;
    let (target, live) = state.hashers.sizes();
    let limits = state.queue.kind_limits();
    let kinds = stats
        .kinds
        .into_iter()
        .map(|load| {
            let limit = limits.get(&load.kind).copied().unwrap_or_default();
            KindView {
                kind: load.kind,
                running: load.running,
                parked: load.parked,
                max_running: limit.max_running,
                max_per_second: limit.max_per_second,
            }
        })
        .collect();
    Ok(web::Json(QueuesView {
        waiting: stats.waiting,
        users_waiting: stats.users_waiting,
        oldest_due_at: stats
            .oldest_due_ms
            .and_then(DateTime::from_timestamp_millis),
        users: busiest
            .into_iter()
            .map(|load| UserLoadView {
                user_id: load.user,
                waiting: load.waiting,
                running: load.running,
            })
            .collect(),
        kinds,
        pools: Pools {
            workers: PoolView {
                target: workers.workers,
                live: workers.live,
                busy: Some(workers.busy),
            },
            hashers: PoolView {
                target,
                live,
                busy: None,
            },
        },
    }))
}

/// What the console may load: its own script, styles and API, nothing
/// from anywhere else.
const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// One of the console's files, as it is compiled into the binary.
fn console_file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONSOLE_POLICY))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The console: users, queues, pools and dead tasks, in a page that asks
/// for the admin token once and keeps it in the tab.
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, description = "The console's page", content_type = "text/html", body = String)))]
pub async fn console() -> HttpResponse {
    console_file(
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    )
}

/// The console's script.
#[utoipa::path(get, path = "/console.js", tag = "console",
    responses((status = 200, description = "The console's script", content_type = "text/javascript", body = String)))]
pub async fn console_script() -> HttpResponse {
    console_file(
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    )
}

/// The console's styles.
#[utoipa::path(get, path = "/console.css", tag = "console",
    responses((status = 200, description = "The console's styles", content_type = "text/css", body = String)))]
pub async fn console_styles() -> HttpResponse {
    console_file(
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    )
}

/// This document.
#[utoipa::path(get, path = "/admin/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of the admin API", content_type = "application/json", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get().map_or("{}", String::as_str))
}

/// The service's metrics, when `admin.serve_metrics` is on.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        (status = 404, description = "`not_found`: admin.serve_metrics is off"),
    ))]
pub async fn metrics(state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    match &state.export {
        Some(export) => super::health::render_metrics(export),
        None => Err(ApiError::not_found()),
    }
}

routes! {
    "/admin/api/v1/users" => { get list_users },
    "/admin/api/v1/users/{id}/queue/pause" => { post pause_queue },
    "/admin/api/v1/users/{id}/queue/resume" => { post resume_queue },
    "/admin/api/v1/queues" => { get queues },
    "/admin/api/v1/tasks" => { get list_tasks },
    "/admin/api/v1/tasks/retry" => { post retry_tasks },
    "/admin/api/v1/tasks/cancel" => { post cancel_tasks },
    "/admin/api/v1/tasks/{id}/retry" => { post retry_task },
    "/admin/api/v1/users/{id}" => { get get_user },
    "/admin/api/v1/users/{id}/disable" => { post disable_user },
    "/admin/api/v1/users/{id}/enable" => { post enable_user },
    "/admin/api/v1/users/{id}/sessions" => { delete sign_out_user },
    "/" => { get console },
    "/console.js" => { get console_script },
    "/console.css" => { get console_styles },
    "/admin/openapi.json" => { get document },
    "/metrics" => { get metrics },
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "Operators' calls, on the admin listener only. Every request carries \
            `Authorization: Bearer <admin token>` (the contents of `admin.token_file`). Errors \
            are RFC 9457 problem details with a stable `code`, as on the public API.",
    ),
    components(schemas(super::error::Problem)),
    modifiers(&AdminScheme),
    tags(
        (name = "users", description = "Users, their sessions, whether they may sign in and whether their tasks run"),
        (name = "tasks", description = "Tasks across users: found, retried and cancelled"),
        (name = "console", description = "The operators' console, served from the binary"),
        (name = "meta", description = "This document and the metrics"),
    ),
)]
struct AdminDoc;

struct AdminScheme;

impl utoipa::Modify for AdminScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The contents of `admin.token_file`"))
                    .build(),
            ),
        );
    }
}

/// The admin document, rendered once.
static DOCUMENT: OnceLock<String> = OnceLock::new();

/// Registers the admin routes; every other path answers 404.
pub fn configure(limits: BodyLimits) -> impl FnOnce(&mut web::ServiceConfig) {
    DOCUMENT.get_or_init(|| super::openapi::render(AdminDoc::openapi(), Operations::openapi()));
    move |cfg| {
        cfg.app_data(json(limits.default))
            .app_data(web::PayloadConfig::new(limits.default))
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::new(ErrorCode::InvalidInput, err.to_string()).into()
            }));
        register(cfg, limits);
        cfg.default_service(web::to(not_found));
    }
}
