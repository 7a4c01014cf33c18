//! `tollgate admin ...`: the admin API from a shell. Human tables by
//! default, the API's own JSON with `--json`; a refusal prints its problem
//! and exits non-zero.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

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
    /// Users: list, show, disable, enable, sign out.
    #[command(subcommand)]
    Users(UsersCommand),
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
}

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl AdminCommand {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let api = AdminApi::new(
            self.url.clone(),
            self.token_file.clone(),
            settings.admin.as_ref(),
        )?;
        let AdminSubject::Users(command) = &self.what;
        let (method, path) = match command {
            UsersCommand::List {
                query,
                limit,
                cursor,
            } => {
                let mut url = reqwest::Url::parse("http://admin/admin/api/v1/users")?;
                url.query_pairs_mut()
                    .append_pair("limit", &limit.to_string());
                if let Some(query) = query {
                    url.query_pairs_mut().append_pair("query", query);
                }
                if let Some(cursor) = cursor {
                    url.query_pairs_mut().append_pair("cursor", cursor);
                }
                let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
                (Method::GET, path)
            }
            UsersCommand::Show { id } => (Method::GET, format!("/admin/api/v1/users/{id}")),
            UsersCommand::Disable { id } => {
                (Method::POST, format!("/admin/api/v1/users/{id}/disable"))
            }
            UsersCommand::Enable { id } => {
                (Method::POST, format!("/admin/api/v1/users/{id}/enable"))
            }
            UsersCommand::Signout { id } => {
                (Method::DELETE, format!("/admin/api/v1/users/{id}/sessions"))
            }
        };
        let answer = api.call(method, &path).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(());
        }
        match command {
            UsersCommand::List { .. } => {
                print_users(answer["items"].as_array().map_or(&[], Vec::as_slice));
                if let Some(cursor) = answer["next_cursor"].as_str() {
                    println!("next cursor: {cursor}");
                }
            }
            UsersCommand::Show { .. } => {
                print_users(std::slice::from_ref(&answer["user"]));
                let queue = &answer["queue"];
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
                println!("tasks: {}", counts.join(", "));
            }
            UsersCommand::Disable { .. } => {
                print_users(std::slice::from_ref(&answer["user"]));
                println!("sessions ended: {}", answer["sessions_ended"]);
            }
            UsersCommand::Enable { .. } => print_users(std::slice::from_ref(&answer)),
            UsersCommand::Signout { .. } => {
                println!("sessions ended: {}", answer["sessions_ended"]);
            }
        }
        Ok(())
    }
}

/// Where the admin API is and the token it wants.
struct AdminApi {
    url: String,
    token: SecretString,
    client: reqwest::Client,
}

impl AdminApi {
    fn new(
        url: Option<String>,
        token_file: Option<PathBuf>,
        configured: Option<&AdminSettings>,
    ) -> anyhow::Result<Self> {
        let url = match (url, configured) {
            (Some(url), _) => url,
            (None, Some(admin)) => {
                let mut bind = admin.bind;
                if bind.ip().is_unspecified() {
                    bind.set_ip([127, 0, 0, 1].into());
                }
                format!("http://{bind}")
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

    /// Calls `path`; answers its JSON, or the problem it answered as the
    /// error.
    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url);
        let answer = self
            .client
            .request(method, &url)
            .bearer_auth(self.token.expose_secret())
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
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
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
