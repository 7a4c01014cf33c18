//! The `tollgate` binary (the release build `cargo bench` makes) as a child
//! process on a loopback port, and the stores behind it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::{KeysInterface, LuaInterface};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate::clock::Clock;
use tollgate::config::{RedisSettings, Settings};
use tollgate::storage::{QueuePolicy, QueueStore, Redis, redis_queue};

use crate::load::http_client;
use crate::wrk::Cores;

pub const PASSWORD: &str = "correct horse battery staple";
pub const JWT_SECRET: &str = "a-benchmark-signing-secret-of-enough-length";

/// A running `tollgate serve`, killed when dropped.
pub struct Service {
    child: Child,
    pub address: String,
    client: reqwest::Client,
}

impl Service {
    /// Starts the service on its embedded default: everything in memory.
    pub async fn in_memory(env: &[(&str, &str)]) -> Self {
        Self::start(env).await
    }

    /// Starts the service with the settings `env` gives, and nothing else.
    pub async fn configured(env: &[(&str, &str)]) -> Self {
        Self::start(env).await
    }

    /// Kills the process (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the service in the production configuration: users in
    /// PostgreSQL (`stores.schema_url`), sessions and tasks in Redis
    /// (`stores.prefix`).
    pub async fn production(stores: &Stores, env: &[(&str, &str)]) -> Self {
        let mut all = vec![
            ("TOLLGATE__DATABASE__URL", stores.schema_url.as_str()),
            ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET),
            ("TOLLGATE__QUEUE__BACKEND", "redis"),
            ("TOLLGATE__SESSION__STORE", "redis"),
            ("TOLLGATE__REDIS__URL", stores.redis_url.as_str()),
            ("TOLLGATE__REDIS__KEY_PREFIX", stores.prefix.as_str()),
        ];
        all.extend_from_slice(env);
        Self::start(&all).await
    }

    async fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        // On the cores the load generator leaves it, where it can be pinned.
        let mut command = match Cores::split().service {
            Some(cores) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", &cores, env!("CARGO_BIN_EXE_tollgate")]);
                taskset
            }
            None => Command::new(env!("CARGO_BIN_EXE_tollgate")),
        };
        let child = command
            .arg("serve")
            .env("TOLLGATE__SERVER__BIND", &bind)
            .env("TOLLGATE__TELEMETRY__LOG_LEVEL", "error")
            // Every user the bench makes signs up from loopback.
            .env("TOLLGATE__RATE_LIMIT__SIGNUP_PER_MINUTE_PER_IP", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the tollgate binary runs");
        let service = Self {
            child,
            address: format!("http://{bind}"),
            client: http_client(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !service.is_live().await {
            assert!(
                Instant::now() < deadline,
                "tollgate did not start on {bind}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        service
    }

    async fn is_live(&self) -> bool {
        let live = self.client.get(self.url("/health/live")).send().await;
        live.is_ok_and(|r| r.status() == StatusCode::OK)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Signs `name` up; answers the token.
    pub async fn sign_up(&self, name: &str) -> String {
        let credentials = json!({ "username": name, "password": PASSWORD });
        let response = self
            .client
            .post(self.url("/api/v1/auth/signup"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "signing {name} up");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Signs up `count` users named `{name}-{n}`, all at once; answers
    /// their tokens.
    pub async fn sign_up_many(&self, name: &str, count: usize) -> Vec<String> {
        let names: Vec<String> = (0..count).map(|n| format!("{name}-{n}")).collect();
        join_all(names.iter().map(|name| self.sign_up(name))).await
    }

    /// Signs `name` in again: a token for a new session.
    pub async fn sign_in(&self, name: &str) -> String {
        let credentials = json!({ "username": name, "password": PASSWORD });
        let response = self
            .client
            .post(self.url("/api/v1/auth/signin"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "signing {name} in");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Signs in the first `count` of [`sign_up_many`](Self::sign_up_many)'s
    /// `name` users; answers their tokens.
    pub async fn sign_in_many(&self, name: &str, count: usize) -> Vec<String> {
        let names: Vec<String> = (0..count).map(|n| format!("{name}-{n}")).collect();
        join_all(names.iter().map(|name| self.sign_in(name))).await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A schema of its own in PostgreSQL and a key prefix of its own in Redis,
/// both removed by [`Stores::remove`].
pub struct Stores {
    pub schema_url: String,
    pub redis_url: String,
    pub prefix: String,
    schema: String,
    database: tokio_postgres::Client,
    pub redis: Arc<Redis>,
}

impl Stores {
    /// Makes the schema and connects to Redis, from the URLs `make bench`
    /// exports (the same as the tests').
    pub async fn create(name: &str) -> Self {
        let database_url = std::env::var("TOLLGATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
        let redis_url = std::env::var("TOLLGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let schema = format!("bench_{name}_{}", std::process::id());
        let (database, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL answers (make bench starts it)");
        tokio::spawn(connection);
        database
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        let separator = if database_url.contains('?') { '&' } else { '?' };
        let schema_url = format!("{database_url}{separator}options=-csearch_path%3D{schema}");
        let prefix = schema.replace('_', "-");
        let settings = RedisSettings {
            url: Some(redis_url.parse().expect("a Redis URL")),
            cluster_nodes: Vec::new(),
            pool_size: 8,
            key_prefix: prefix.parse().expect("a key prefix"),
            timeout_secs: 10,
            tls_ca_file: None,
        };
        let redis = Redis::connect(&settings)
            .await
            .expect("Redis answers (make bench starts it)");
        Self {
            schema_url,
            redis_url,
            prefix,
            schema,
            database,
            redis: Arc::new(redis),
        }
    }

    /// The queue store on these keys in `partitions` partitions, bounded
    /// only by the pool: preloads may hold any number of tasks.
    pub async fn queue(&self, partitions: usize) -> Arc<dyn QueueStore> {
        let mut settings = Settings::embedded_default().queue;
        settings.max_pending_per_user = usize::MAX;
        let policy = QueuePolicy::new(&settings, Clock::system());
        redis_queue(self.redis.clone(), policy, partitions)
            .await
            .expect("the queue's partitions match")
    }

    /// Drops the schema and every key under the prefix.
    pub async fn remove(self) {
        let _ = self
            .database
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
        let unlink_all = "for _, key in ipairs(redis.call('KEYS', ARGV[1])) do \
                          redis.call('UNLINK', key) end";
        // `{prefix}:*` and every partition's `{prefix.<i>}:*`.
        let tag = self.redis.prefix();
        let pattern = format!("{}*", &tag[..tag.len() - 1]);
        let route = format!("{}:ring", self.redis.prefix());
        let _: Result<(), _> = self
            .redis
            .client()
            .eval(unlink_all, vec![route], vec![pattern])
            .await;
    }

    /// One Redis round trip: the baseline the queue figures are set against.
    /// Lua script calls Redis has run since it started (`EVALSHA` and
    /// `EVAL`), by `INFO commandstats`: the whole server's, so nothing else
    /// should use it meanwhile.
    pub fn script_calls(&self) -> u64 {
        let info = Command::new("redis-cli")
            .args(["-u", &self.redis_url, "INFO", "commandstats"])
            .output()
            .expect("redis-cli runs (`make bench` installs Redis)");
        String::from_utf8_lossy(&info.stdout)
            .lines()
            .filter(|line| {
                line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
            })
            .filter_map(|line| {
                let calls = line.split("calls=").nth(1)?;
                calls.split(',').next()?.parse::<u64>().ok()
            })
            .sum()
    }

    pub async fn round_trip(&self, key: &str) -> bool {
        let incremented: Result<i64, _> = self.redis.client().incr(key).await;
        incremented.is_ok()
    }
}

/// The resident set of `process` (a pid, or `self`), from
/// `/proc/<process>/statm`; 0 when it cannot be read.
pub fn resident_bytes(process: &str) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{process}/statm"));
    let pages: Option<u64> = statm
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok());
    pages.unwrap_or(0) * 4096
}
