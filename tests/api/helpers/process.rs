//! The `tollgate` binary as a child process, as an operator runs it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use super::{JWT_SECRET, PASSWORD, Scrape, TestRedis, TestSchema, client, eventually, spare_port};

const BINARY: &str = env!("CARGO_BIN_EXE_tollgate");

/// The environment of a replica in the production shape: users in
/// `schema`, sessions and tasks in Redis under `redis`'s prefix. Callers
/// add their own settings, then borrow it with [`as_env`].
pub fn production_env(schema: &TestSchema, redis: &TestRedis) -> Vec<(&'static str, String)> {
    vec![
        ("TOLLGATE__DATABASE__URL", schema.url()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ("TOLLGATE__SESSION__STORE", "redis".to_owned()),
        ("TOLLGATE__QUEUE__BACKEND", "redis".to_owned()),
        ("TOLLGATE__REDIS__URL", redis.redis_url().to_owned()),
        ("TOLLGATE__REDIS__KEY_PREFIX", redis.prefix().to_owned()),
        ("TOLLGATE__QUEUE__PARTITIONS", redis.partitions.to_string()),
        (
            "TOLLGATE__SESSION__PARTITIONS",
            redis.partitions.to_string(),
        ),
    ]
}

/// Writes a new signing key for `algorithm` to `dir/name` with the command
/// an operator would use (`tollgate keys generate`).
pub fn new_key_file(
    dir: &super::TempDir,
    name: &str,
    algorithm: tollgate::config::JwtAlgorithm,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let (algorithm, out) = (format!("{algorithm:?}"), path.display().to_string());
    let args = ["keys", "generate", "--algorithm", &algorithm, "--out", &out];
    let (output, text) = output_of(&args, &[]);
    assert!(output.status.success(), "{text}");
    path
}

/// `env` as [`Server::start`] takes it.
pub fn as_env<'a>(env: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A `tollgate` command with a clean environment: only what the test sets.
fn tollgate(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

pub fn output_of(args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let output = tollgate(args, env).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// Runs `tollgate args`, which must refuse to start: exit with a failure
/// within 30 seconds. Returns what it printed.
pub async fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::from(tollgate(args, env));
    command.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("tollgate {args:?} started, or hung, instead of refusing"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "tollgate {args:?} succeeded: {text}"
    );
    text
}

/// A running server process, killed when dropped.
pub struct Server {
    child: Child,
    pub address: String,
}

impl Server {
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with_output(args, env, None).await
    }

    /// Like [`Server::start`], writing what the process prints (standard
    /// output and error) to `output` if given.
    pub async fn start_with_output(
        args: &[&str],
        env_given: &[(&str, &str)],
        output: Option<&Path>,
    ) -> Self {
        let port = spare_port();
        let bind = format!("127.0.0.1:{port}");
        // Tests sign their users up from one address within a minute; the
        // ones about that limit set it themselves.
        let mut env = vec![("TOLLGATE__RATE_LIMIT__SIGNUP_PER_MINUTE_PER_IP", "0")];
        env.extend_from_slice(env_given);
        env.push(("TOLLGATE__SERVER__BIND", &bind));
        env.push(("TOLLGATE__AUTH__BCRYPT_COST", "4"));
        let printed = || match output {
            Some(path) => Stdio::from(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        let child = tollgate(args, &env)
            .stdout(printed())
            .stderr(printed())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            address: format!("http://{bind}"),
        };
        let up = eventually(Duration::from_secs(30), || async {
            client()
                .get(format!("{}/health/live", server.address))
                .send()
                .await
                .is_ok()
        })
        .await;
        assert!(up, "tollgate did not start listening on {bind}");
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request to `path`, with `token` as its bearer if given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = client().request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path` as `token`'s user, which must answer 200; returns the body.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self
            .request(Method::GET, path, Some(token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// `GET /metrics`, which must answer.
    pub async fn metrics(&self) -> Scrape {
        let response = self
            .request(Method::GET, "/metrics", None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Scrape::parse(response.text().await.unwrap())
    }

    /// Signs `name` up with [`PASSWORD`].
    pub async fn sign_up(&self, name: &str) {
        self.sign_up_with(name, PASSWORD).await;
    }

    /// Signs `name` up with `password`.
    pub async fn sign_up_with(&self, name: &str, password: &str) {
        let credentials = json!({ "username": name, "password": password });
        let request = self.request(Method::POST, "/api/v1/auth/signup", None);
        let response = request.json(&credentials).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    /// Signs `name` in with [`PASSWORD`]; returns the token and the user's id.
    pub async fn sign_in(&self, name: &str) -> (String, String) {
        self.sign_in_with(name, PASSWORD).await
    }

    /// Signs `name` in with `password`; returns the token and the user's id.
    pub async fn sign_in_with(&self, name: &str, password: &str) -> (String, String) {
        let credentials = json!({ "username": name, "password": password });
        let request = self.request(Method::POST, "/api/v1/auth/signin", None);
        let response = request.json(&credentials).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let text = |v: &Value| v.as_str().unwrap().to_owned();
        (text(&body["access_token"]), text(&body["user"]["id"]))
    }

    /// Sends SIGTERM, as an orchestrator stopping the service would.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
        assert!(status.unwrap().success());
    }

    /// Sends SIGHUP and waits until `output`, where the process prints,
    /// logs one more reload than before.
    pub async fn reload(&self, output: &Path) {
        let reloads = || {
            let printed = std::fs::read_to_string(output).unwrap_or_default();
            printed.matches("reloaded pool sizes").count()
        };
        let before = reloads();
        self.signal("HUP");
        let reloaded = eventually(Duration::from_secs(30), || async { reloads() > before }).await;
        assert!(reloaded, "no reload logged in {}", output.display());
    }

    /// Kills the process outright (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to exit, for at most `limit`.
    pub async fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tollgate did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
