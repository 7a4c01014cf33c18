//! `tollgate admin users|tasks|queues ...`: the admin API from a shell. Human tables by
//! default, the API's own JSON with `--json`; a refusal prints its problem
//! and exits non-zero.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::config::{AdminSettings, Settings};

#[derive(Debug, Args)]
pub struct AdminCommand {
    /// The admin listener, such as `http://127.0.0.1:8081`; by default the
    /// configuration's `admin.bind`.
    #[arg(long, global = true)]
    url: Option<String>,
    /// A file holding the admin token; by default `TOLLGATE_ADMIN_TOKEN`,
    /// then the configuration's `admin.token_file`.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    what: AdminSubject,
}

#[derive(Debug, Subcommand)]
enum AdminSubject {
    /// Users: list, show, disable, enable, sign out, pause, resume.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Tasks across users: list, retry, cancel.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// The queue over all users: what waits, who has the most, the pools.
    Queues,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Users, newest first.
    List {
        /// Part of a username or e-mail address, in any case.
        #[arg(long)]
        query: Option<String>,
        /// Users per page, 1 to 100.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The `next cursor` a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One user, their sessions and tasks.
    Show { id: String },
    /// Disable a user: their sessions end and sign-in is refused.
    Disable { id: String },
    /// Let a disabled user sign in again.
    Enable { id: String },
    /// End every session of a user.
    Signout { id: String },
    /// Keep a user's tasks waiting, in their order.
    Pause { id: String },
    /// Let a paused user's tasks run again.
    Resume { id: String },
}

/// Which tasks: what is left out matches every task.
#[derive(Debug, Args)]
struct TaskFilterArgs {
    /// queued, running, succeeded, failed, dead or cancelled.
    #[arg(long)]
    status: Option<String>,
    /// A user's id.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    kind: Option<String>,
}

impl TaskFilterArgs {
    fn is_empty(&self) -> bool {
        self.status.is_none() && self.user.is_none() && self.kind.is_none()
    }

    fn body(&self, all: bool) -> Value {
        json!({ "status": self.status, "user": self.user, "kind": self.kind, "all": all })
    }
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// Tasks, newest first.
    List {
        #[command(flatten)]
        filter: TaskFilterArgs,
        /// Tasks per page, 1 to 100.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The `next cursor` a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Queue a dead or cancelled task again: the one named, or every one
    /// the filter matches.
    Retry {
        id: Option<String>,
        #[command(flatten)]
        filter: TaskFilterArgs,
        /// With no id and no filter: every dead and cancelled task.
        #[arg(long)]
        all: bool,
    },
    /// Cancel every waiting task the filter matches.
    Cancel {
        #[command(flatten)]
        filter: TaskFilterArgs,
        /// With no filter: every waiting task of every user.
        #[arg(long)]
        all: bool,
    },
}

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One call of the admin API, and how its answer is shown.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    show: fn(&Value),
}

impl Call {
    fn new(method: Method, path: String, show: fn(&Value)) -> Self {
        Self {
            method,
            path,
            body: None,
            show,
        }
    }

    fn with_body(self, body: Value) -> Self {
        Self {
            body: Some(body),
            ..self
        }
    }
}

/// `path` with the query pairs that have a value.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut url = reqwest::Url::parse("http://admin").expect("a valid base");
    url.set_path(path);
    for (key, value) in pairs {
        if let Some(value) = value {
            url.query_pairs_mut().append_pair(key, value);
        }
    }
    match url.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

/// A bulk call needs a filter, or `--all` to mean every task.
fn bulk_filter(filter: &TaskFilterArgs, all: bool) -> anyhow::Result<Value> {
    anyhow::ensure!(
        !filter.is_empty() || all,
        "name the tasks (--status, --user, --kind), or say --all"
    );
    Ok(filter.body(all))
}

/// `/admin/api/v1/<collection>/<id><rest>`, the id percent-encoded, so
/// that no id can name another route.
fn item_path(collection: &str, id: &str, rest: &str) -> String {
    let mut url = reqwest::Url::parse("http://admin/admin/api/v1").expect("a valid base");
    url.path_segments_mut()
        .expect("a base with a path")
        .push(collection)
        .push(id);
    format!("{}{rest}", url.path())
}

impl UsersCommand {
    fn call(&self) -> Call {
        let user = |id: &str, rest: &str| item_path("users", id, rest);
        match self {
            Self::List {
                query,
                limit,
                cursor,
            } => Call::new(
                Method::GET,
                with_query(
                    "/admin/api/v1/users",
                    &[
                        ("limit", Some(limit.to_string())),
                        ("query", query.clone()),
                        ("cursor", cursor.clone()),
                    ],
                ),
                show_user_page,
            ),
            Self::Show { id } => Call::new(Method::GET, user(id, ""), show_user_detail),
            Self::Disable { id } => Call::new(Method::POST, user(id, "/disable"), show_disabled),
            Self::Enable { id } => Call::new(Method::POST, user(id, "/enable"), |user| {
                print_users(std::slice::from_ref(user))
            }),
            Self::Signout { id } => Call::new(Method::DELETE, user(id, "/sessions"), |answer| {
                println!("sessions ended: {}", answer["sessions_ended"])
            }),
            Self::Pause { id } => Call::new(Method::POST, user(id, "/queue/pause"), show_paused),
            Self::Resume { id } => Call::new(Method::POST, user(id, "/queue/resume"), show_paused),
        }
    }
}

impl TasksCommand {
    fn call(&self) -> anyhow::Result<Call> {
        Ok(match self {
            Self::List {
                filter,
                limit,
                cursor,
            } => Call::new(
                Method::GET,
                with_query(
                    "/admin/api/v1/tasks",
                    &[
                        ("status", filter.status.clone()),
                        ("user", filter.user.clone()),
                        ("kind", filter.kind.clone()),
                        ("limit", Some(limit.to_string())),
                        ("cursor", cursor.clone()),
                    ],
                ),
                show_task_page,
            ),
            Self::Retry {
                id: Some(id),
                filter,
                all,
            } => {
                anyhow::ensure!(
                    filter.is_empty() && !all,
                    "retry one task by its id, or many by a filter, not both"
                );
                Call::new(Method::POST, item_path("tasks", id, "/retry"), |task| {
                    print_tasks(std::slice::from_ref(task))
                })
            }
            Self::Retry {
                id: None,
                filter,
                all,
            } => Call::new(
                Method::POST,
                "/admin/api/v1/tasks/retry".to_owned(),
                show_bulk,
            )
            .with_body(bulk_filter(filter, *all)?),
            Self::Cancel { filter, all } => Call::new(
                Method::POST,
                "/admin/api/v1/tasks/cancel".to_owned(),
                show_bulk,
            )
            .with_body(bulk_filter(filter, *all)?),
        })
    }
}

impl AdminCommand {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let call = match &self.what {
            AdminSubject::Users(command) => command.call(),
            AdminSubject::Tasks(command) => command.call()?,
            AdminSubject::Queues => {
                Call::new(Method::GET, "/admin/api/v1/queues".to_owned(), show_queues)
            }
        };
        let api = AdminApi::new(
            self.url.clone(),
            self.token_file.clone(),
            settings.admin.as_ref(),
            settings.server.tls_cert.is_some(),
        )?;
        let answer = api.call(&call).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            (call.show)(&answer);
        }
        Ok(())
    }
}

fn show_user_page(page: &Value) {
    print_users(page["items"].as_array().map_or(&[], Vec::as_slice));
    show_cursor(page);
}

fn show_cursor(page: &Value) {
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("next cursor: {cursor}");
    }
}

fn show_user_detail(detail: &Value) {
    print_users(std::slice::from_ref(&detail["user"]));
    let queue = &detail["queue"];
    let counts: Vec<String> = [
        "queued",
        "running",
        "succeeded",
        "failed",
        "dead",
        "cancelled",
    ]
    .iter()
    .map(|state| format!("{state} {}", queue[state]))
    .collect();
    let paused = if queue["paused"] == true {
        " (paused)"
    } else {
        ""
    };
    println!("tasks: {}{paused}", counts.join(", "));
    let sessions = detail["sessions"].as_array().map_or(&[][..], Vec::as_slice);
    let rows: Vec<[String; 5]> = sessions
        .iter()
        .map(|session| {
            ["id", "last_seen_at", "expires_at", "user_agent", "ip"]
                .map(|field| text(&session[field]))
        })
        .collect();
    print_table(
        ["SESSION", "LAST SEEN", "EXPIRES", "USER AGENT", "ADDRESS"],
        &rows,
    );
}

fn show_disabled(answer: &Value) {
    print_users(std::slice::from_ref(&answer["user"]));
    println!("sessions ended: {}", answer["sessions_ended"]);
}

fn show_paused(answer: &Value) {
    let state = if answer["paused"] == true {
        "paused"
    } else {
        "running"
    };
    let change = if answer["changed"] == true {
        ""
    } else {
        " already"
    };
    println!("queue{change} {state}");
}

fn show_task_page(page: &Value) {
    print_tasks(page["items"].as_array().map_or(&[], Vec::as_slice));
    show_cursor(page);
}

fn show_queues(queues: &Value) {
    println!(
        "waiting {} (users {}), longest due since {}",
        queues["waiting"],
        queues["users_waiting"],
        text(&queues["oldest_due_at"])
    );
    let pools = queues["pools"].as_object().into_iter().flatten();
    let rows: Vec<[String; 4]> = pools
        .map(|(name, pool)| {
            [
                name.clone(),
                text(&pool["target"]),
                text(&pool["live"]),
                text(&pool["busy"]),
            ]
        })
        .collect();
    print_table(["POOL", "TARGET", "LIVE", "BUSY"], &rows);
    let kinds = queues["kinds"].as_array().map_or(&[][..], Vec::as_slice);
    if !kinds.is_empty() {
        let rows: Vec<[String; 5]> = kinds
            .iter()
            .map(|kind| {
                ["kind", "running", "parked", "max_running", "max_per_second"]
                    .map(|field| text(&kind[field]))
            })
            .collect();
        let header = ["KIND", "RUNNING", "PARKED", "MAX RUNNING", "MAX/S"];
        print_table(header, &rows);
    }
    let users = queues["users"].as_array().map_or(&[][..], Vec::as_slice);
    let rows: Vec<[String; 3]> = users
        .iter()
        .map(|load| {
            [
                text(&load["user_id"]),
                text(&load["waiting"]),
                text(&load["running"]),
            ]
        })
        .collect();
    print_table(["USER", "WAITING", "RUNNING"], &rows);
}

fn show_bulk(answer: &Value) {
    println!(
        "matched {}, changed {}",
        answer["matched"], answer["changed"]
    );
}

/// Where the admin API is and the token it wants.
struct AdminApi {
    url: String,
    token: SecretString,
    client: reqwest::Client,
}

impl AdminApi {
    /// `tls`: whether the configuration serves TLS (the admin listener
    /// then does too).
    fn new(
        url: Option<String>,
        token_file: Option<PathBuf>,
        configured: Option<&AdminSettings>,
        tls: bool,
    ) -> anyhow::Result<Self> {
        let url = match (url, configured) {
            (Some(url), _) => url,
            (None, Some(admin)) => {
                let mut bind = admin.bind;
                if bind.ip().is_unspecified() {
                    bind.set_ip([127, 0, 0, 1].into());
                }
                let scheme = if tls { "https" } else { "http" };
                format!("{scheme}://{bind}")
            }
            (None, None) => anyhow::bail!("say where the admin API is: --url, or admin.bind"),
        };
        let from_file = |path: PathBuf| -> anyhow::Result<SecretString> {
            let contents = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            Ok(contents.trim_end_matches(['\r', '\n']).into())
        };
        let token = match (
            token_file,
            std::env::var("TOLLGATE_ADMIN_TOKEN"),
            configured,
        ) {
            (Some(path), _, _) => from_file(path)?,
            (None, Ok(token), _) => token.into(),
            (None, Err(_), Some(admin)) => admin.token()?,
            (None, Err(_), None) => anyhow::bail!(
                "no admin token: --token-file, TOLLGATE_ADMIN_TOKEN or admin.token_file"
            ),
        };
        let client = reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
            client,
        })
    }

    /// Makes `call`; answers its JSON, or the problem it answered as the
    /// error.
    async fn call(&self, call: &Call) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.url, call.path);
        let mut request = self
            .client
            .request(call.method.clone(), &url)
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let answer = request
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body["code"].as_str().unwrap_or("");
            let detail = body["detail"].as_str().unwrap_or("");
            anyhow::bail!("{} {code}: {detail}", status.as_u16());
        }
        Ok(body)
    }
}

/// Users as a table, one a line.
fn print_users(users: &[Value]) {
    let rows: Vec<[String; 6]> = users
        .iter()
        .map(|user| {
            [
                text(&user["id"]),
                text(&user["username"]),
                text(&user["email"]),
                text(&user["created_at"]),
                if user["disabled"] == true {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                text(&user["sessions"]),
            ]
        })
        .collect();
    print_table(
        ["ID", "USERNAME", "EMAIL", "CREATED", "DISABLED", "SESSIONS"],
        &rows,
    );
}

/// Tasks as a table, one a line.
fn print_tasks(tasks: &[Value]) {
    let rows: Vec<[String; 6]> = tasks
        .iter()
        .map(|task| {
            [
                text(&task["id"]),
                text(&task["user_id"]),
                text(&task["kind"]),
                text(&task["status"]),
                format!("{}/{}", task["attempts"], task["max_attempts"]),
                text(&task["created_at"]),
            ]
        })
        .collect();
    print_table(
        ["ID", "USER", "KIND", "STATUS", "ATTEMPTS", "CREATED"],
        &rows,
    );
}

/// A JSON value as a table cell: strings bare, nothing as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
