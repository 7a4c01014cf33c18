//! The settings tree: loaded from the embedded default, an optional file and
//! `TOLLGATE__SECTION__KEY` variables, then validated as a whole so that an
//! operator sees every bad value at once. No globals: the tree is passed down.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    path::Path,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

mod tls;
mod validate;
mod values;

use anyhow::Context as _;
use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use values::{
    DatabaseUrl, Host, HostPort, HttpUrl, KeyPrefix, LogFile, LogLevel, Network, Origin, RedisUrl,
    SslMode, StreamName,
};

use crate::auth::{Key, KeyRing};
use crate::domain::{KindLimit, KindLimits, Limits, TaskKind};
use values::parsed_list;

/// `config/default.toml`, compiled in: the base layer of every configuration.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables that override file values.
const ENV_PREFIX: &str = "TOLLGATE";
/// Separates prefix, section and key: `TOLLGATE__SECTION__KEY`.
const ENV_SEPARATOR: &str = "__";

/// Everything Tollgate can be told at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub session: SessionSettings,
    pub queue: QueueSettings,
    /// PostgreSQL for users; absent means users are kept in memory.
    #[serde(default)]
    pub database: Option<DatabaseSettings>,
    /// Redis for queues, sessions and events; required by any of them.
    #[serde(default)]
    pub redis: Option<RedisSettings>,
    /// Domain events for other services; absent means none are written.
    #[serde(default)]
    pub events: Option<EventSettings>,
    pub telemetry: TelemetrySettings,
    pub rate_limit: RateLimitSettings,
    /// The operators' listener; absent means there is none.
    #[serde(default)]
    pub admin: Option<AdminSettings>,
}

/// The admin API and console, on a listener of their own so that it can be
/// kept off the public network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub bind: SocketAddr,
    /// A file holding the admin token (32 bytes or more), which every admin
    /// request carries as its bearer.
    pub token_file: PathBuf,
    /// Serve `/metrics` here too.
    #[serde(default)]
    pub serve_metrics: bool,
}

impl AdminSettings {
    /// The shortest admin token accepted.
    pub const MIN_TOKEN_BYTES: usize = 32;

    /// The token `token_file` holds, its line ending left off.
    pub fn token(&self) -> anyhow::Result<SecretString> {
        let contents = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("reading admin.token_file {}", self.token_file.display()))?;
        let token = contents.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(
            token.len() >= Self::MIN_TOKEN_BYTES,
            "admin.token_file must hold at least {} bytes (got {})",
            Self::MIN_TOKEN_BYTES,
            token.len()
        );
        Ok(token.into())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout_secs: u64,
    /// How long a client may take to send a request's head, and then its
    /// body; past it the answer is 408 and the connection is closed.
    pub client_request_timeout_ms: u64,
    /// Proxies (CIDRs) whose `X-Forwarded-For` names the client; from any
    /// other peer the header is ignored and the peer is the client.
    #[serde(default, deserialize_with = "parsed_list")]
    pub trusted_proxies: Vec<Network>,
    /// Browser origins (`https://app.example.com`) allowed to call the API
    /// cross-origin; none by default, which keeps browsers out.
    #[serde(default, deserialize_with = "parsed_list")]
    pub cors_origins: Vec<Origin>,
    /// PEM certificate chain and private key: with both, the server speaks
    /// HTTPS only; with neither, plain HTTP (behind a TLS-terminating proxy).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HMAC signing secret; ignored when `jwt_key_file` is set.
    #[serde(default)]
    pub jwt_secret: Option<SecretString>,
    /// The signing key: an HMAC secret, or for `EdDSA` and `ES256` a
    /// private key in PEM.
    #[serde(default)]
    pub jwt_key_file: Option<PathBuf>,
    /// Keys still accepted for verification, never used to sign: the way
    /// a key rotates without signing anyone out. Any algorithm.
    #[serde(default, deserialize_with = "parsed_list")]
    pub previous_key_files: Vec<PathBuf>,
    pub jwt_algorithm: JwtAlgorithm,
    pub issuer: String,
    pub token_max_lifetime_secs: u64,
    pub bcrypt_cost: u32,
    /// Hasher pool threads; 0 means one per core.
    pub hasher_threads: usize,
    /// Longest a request waits for the hasher pool, queueing included;
    /// past it the request gets 503 and its queued work is dropped.
    pub hasher_timeout_secs: u64,
    /// Service credential for introspection; `None` leaves it open.
    #[serde(default)]
    pub introspection_secret: Option<SecretString>,
}

/// The algorithms a token may be signed with. A token is verified by the
/// key its `kid` names, with that key's algorithm, never with what its
/// header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    HS256,
    #[value(name = "HS384")]
    HS384,
    #[value(name = "HS512")]
    HS512,
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDSA,
    /// ECDSA over P-256 with SHA-256.
    #[value(name = "ES256")]
    ES256,
}

impl JwtAlgorithm {
    /// Whether the key has a public half to publish.
    pub fn is_asymmetric(self) -> bool {
        matches!(self, Self::EdDSA | Self::ES256)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub idle_ttl_secs: u64,
    pub shards: usize,
    pub sweep_interval_secs: u64,
    pub store: SessionStoreKind,
    /// Most sessions one user holds; opening one more ends the one used
    /// longest ago.
    #[serde(default = "SessionSettings::default_max_per_user")]
    pub max_per_user: usize,
    /// Key groups the sessions in Redis are spread over by user, each
    /// under its own hash tag, so that a Redis Cluster spreads them over
    /// its masters.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStoreKind {
    /// In the session actors' memory: one node.
    Memory,
    /// In Redis, shared by every replica.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub backend: QueueBackend,
    /// Task workers serving every user's queue.
    pub workers: usize,
    /// More workers, kept for users with nothing running: a user who
    /// arrives while one heavy user keeps `workers` busy starts at once.
    pub newcomer_workers: usize,
    /// Most tasks one user may have running at once; 0 means no limit
    /// beyond `workers`.
    pub max_running_per_user: usize,
    /// Most tasks one user may have waiting (queued or awaiting a retry);
    /// beyond it enqueue answers 429.
    pub max_pending_per_user: usize,
    /// Most bytes of payload (as JSON) one user's waiting tasks may hold;
    /// beyond it enqueue answers 429.
    pub max_pending_bytes_per_user: u64,
    /// Most finished tasks kept for one user to read; the oldest are
    /// forgotten first.
    pub max_retained_per_user: u64,
    /// Largest task payload, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// How long a lease lasts without renewal; a running task's lease is
    /// renewed well within it, and one that lapses is run again.
    pub visibility_timeout_secs: u64,
    /// Attempts a task gets unless it asks for another number.
    pub max_attempts: u32,
    /// Delay before the first retry; each later one doubles it, with jitter.
    pub backoff_base_ms: u64,
    /// Longest delay between two attempts.
    pub backoff_max_ms: u64,
    /// How long finished tasks (succeeded, dead, cancelled) stay readable.
    pub result_ttl_secs: u64,
    /// How long an `Idempotency-Key` keeps returning its task.
    pub idempotency_ttl_secs: u64,
    /// A user's queue manager stops after this long without requests.
    pub manager_idle_secs: u64,
    /// How often idle workers look for work that no local enqueue announced:
    /// due delayed tasks, retries, and tasks enqueued by other replicas.
    pub poll_interval_ms: u64,
    /// Hosts the `webhook` task kind may call; empty refuses every URL.
    /// A TOML list, or comma-separated in an environment variable.
    #[serde(deserialize_with = "parsed_list")]
    pub webhook_allowed_hosts: Vec<Host>,
    /// Bound on one webhook call.
    pub webhook_timeout_secs: u64,
    /// The kind of the tasks `POST /enqueue` (the old systems' route) queues.
    pub default_kind: TaskKind,
    /// Limits per task kind (`[queue.kinds.<kind>]`), across every replica.
    #[serde(default)]
    pub kinds: BTreeMap<TaskKind, KindSettings>,
    /// Key groups the queue in Redis is spread over by user, each under its
    /// own hash tag, so that a Redis Cluster spreads them over its masters.
    /// Fixed for the life of the queue: a start with another count is
    /// refused.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
}

fn default_partitions() -> usize {
    1
}

/// `[queue.kinds.<kind>]`: the bounds on one kind of task.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindSettings {
    /// Most tasks of the kind running at once over every replica; 0
    /// pauses the kind.
    pub max_running: Option<u64>,
    /// Most tasks of the kind started a second over every replica.
    pub max_per_second: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    Memory,
    Redis,
}

impl QueueBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` or `redis-cluster://`; may carry a password,
    /// so it is never logged. With `cluster_nodes` it only gives the
    /// credentials and TLS.
    #[serde(default)]
    pub url: Option<RedisUrl>,
    /// `host:port` of some nodes of a Redis Cluster; the rest are found
    /// from them. A TOML list, or comma-separated in an environment
    /// variable.
    #[serde(default, deserialize_with = "parsed_list")]
    pub cluster_nodes: Vec<HostPort>,
    #[serde(default = "default_redis_pool_size")]
    pub pool_size: usize,
    /// Every key Tollgate writes starts with `{key_prefix}`; the braces make
    /// it a Redis Cluster hash tag, so each script's keys share one slot.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: KeyPrefix,
    /// Bound on any one command; past it the caller gets 503.
    #[serde(default = "default_redis_timeout_secs")]
    pub timeout_secs: u64,
    /// PEM certificates of the CA that issued the server's, for `rediss://`
    /// to a server whose CA the system does not trust.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

/// Tries allowed per minute before 429 `rate_limited`; 0 means no limit.
/// Shared by every replica when Redis is configured. Re-read on SIGHUP.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Failed sign-ins from one client address (an IPv6 /64), whatever
    /// the account.
    pub signin_per_minute_per_ip: u32,
    /// Failed sign-ins of one account (by username or e-mail alike), from
    /// anywhere.
    pub signin_per_minute_per_user: u32,
    /// Sign-ups from one client address, whatever their outcome.
    pub signup_per_minute_per_ip: u32,
    /// Wrong current passwords (password change, account deletion) from
    /// one signed-in user.
    pub password_checks_per_minute_per_user: u32,
}

/// Where domain events go: a Redis stream other services read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Name of the stream, under the key prefix: `{key_prefix}:<stream>`.
    #[serde(default = "default_event_stream")]
    pub stream: StreamName,
    /// About how many events the stream keeps; older ones are trimmed.
    #[serde(default = "default_event_max_len")]
    pub max_len: u64,
}

fn default_event_stream() -> StreamName {
    "events".parse().expect("a valid stream name")
}

fn default_event_max_len() -> u64 {
    100_000
}

fn default_redis_pool_size() -> usize {
    4
}

fn default_redis_key_prefix() -> KeyPrefix {
    "tollgate".parse().expect("a valid key prefix")
}

fn default_redis_timeout_secs() -> u64 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A libpq-style URL; may carry a password, so it is never logged.
    pub url: DatabaseUrl,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Bound on any one storage operation, connecting included.
    #[serde(default = "default_database_timeout_secs")]
    pub timeout_secs: u64,
    /// PEM certificates of the CA that issued the server's, for `sslmode`
    /// `require`, `verify-ca` or `verify-full` with a CA the system does
    /// not trust.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

fn default_pool_size() -> usize {
    16
}

fn default_database_timeout_secs() -> u64 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_level: LogLevel,
    /// Also log to this file, rotated daily (`tollgate.log.2026-11-23`).
    #[serde(default)]
    pub log_file: Option<LogFile>,
    /// An OpenTelemetry collector's OTLP/HTTP address (such as
    /// `http://collector:4318`); metrics and spans are pushed there.
    #[serde(default)]
    pub otlp_endpoint: Option<HttpUrl>,
    /// How often metrics are pushed to the collector.
    pub otlp_interval_secs: u64,
    pub service_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Why a configuration was refused: every problem found, one per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl Settings {
    /// Loads the embedded default, then `file` if given, then the process
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, None)
    }

    /// Like [`Settings::load`], reading variables from `env` instead of the
    /// process environment when it is given.
    pub fn load_from(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(embedded_source());
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .source(env);
        // No `try_parsing`: values stay strings until a field asks for a
        // number, so an all-digit secret is not turned into a float.
        let mut builder = builder.add_source(environment);
        let mut problems = Vec::new();
        let mut replaced = Vec::new();
        // Deserialization stops at the first bad value. To name them all,
        // each one found is noted and replaced by its embedded default (or
        // by nothing, where the default has none), and the whole is read
        // again.
        let settings = loop {
            let attempt = builder
                .build_cloned()
                .and_then(Config::try_deserialize::<Settings>);
            let err = match attempt {
                Ok(settings) if problems.is_empty() => break settings,
                Ok(with_defaults) => {
                    // The values that did parse may still be out of range.
                    if let Err(ConfigError(more)) = with_defaults.validate() {
                        problems.extend(more);
                    }
                    return Err(ConfigError(problems));
                }
                Err(err) => err,
            };
            let key = match &err {
                config::ConfigError::Type { key, .. } => key.clone(),
                config::ConfigError::At { error, key, .. } => {
                    problems.push(match key {
                        Some(key) => format!("{key}: {error}"),
                        None => error.to_string(),
                    });
                    key.clone()
                }
                _ => None,
            };
            if !matches!(err, config::ConfigError::At { .. }) {
                problems.push(err.to_string());
            }
            // A key replaced once and failing again cannot be helped.
            let Some(key) = key.filter(|key| !replaced.contains(key)) else {
                return Err(ConfigError(problems));
            };
            let fallback = embedded_value(&key).unwrap_or_default();
            match builder.clone().set_override(&key, fallback) {
                Ok(next) if problems.len() < 64 => builder = next,
                _ => return Err(ConfigError(problems)),
            }
            replaced.push(key);
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The embedded default alone, validated: the base tests start from.
    pub fn embedded_default() -> Self {
        Self::load_from(None, Some(HashMap::new()))
            .expect("the embedded default configuration is valid")
    }

    /// Whether anything is kept beyond the life of the process.
    pub fn is_durable(&self) -> bool {
        self.database.is_some()
            || self.queue.backend == QueueBackend::Redis
            || self.session.store == SessionStoreKind::Redis
    }

    /// Whether the signing secret is the public one from the embedded default.
    pub fn uses_embedded_jwt_secret(&self) -> bool {
        self.auth.jwt_key_file.is_none()
            && self
                .jwt_secret_literal()
                .is_some_and(|secret| secret == embedded_jwt_secret().expose_secret())
    }

    /// The signing key and the previous keys, read from their files, each
    /// checked: of the configured algorithm, private keys not readable by
    /// others, no previous key the current one again.
    pub fn key_ring(&self) -> Result<KeyRing, String> {
        let auth = &self.auth;
        let current = match &auth.jwt_key_file {
            Some(path) => {
                let problem = |problem: String| format!("auth.jwt_key_file {problem}");
                owner_only(path).map_err(problem)?;
                Key::read(auth.jwt_algorithm, path).map_err(problem)?
            }
            None if auth.jwt_algorithm.is_asymmetric() => {
                return Err(format!(
                    "auth.jwt_algorithm = \"{:?}\" needs auth.jwt_key_file, a private key in \
                     PEM (`tollgate keys generate --algorithm {:?} --out FILE` writes one)",
                    auth.jwt_algorithm, auth.jwt_algorithm
                ));
            }
            None => Key::hmac(
                auth.jwt_algorithm,
                &self.jwt_secret_literal().unwrap_or_default().into(),
            ),
        };
        let mut previous = Vec::new();
        for path in &auth.previous_key_files {
            let problem =
                |problem: String| format!("auth.previous_key_files: {} {problem}", path.display());
            owner_only(path).map_err(problem)?;
            let key = Key::read_any(path).map_err(problem)?;
            if key.kid == current.kid {
                return Err(problem(
                    "is the current signing key; list only keys it replaced".into(),
                ));
            }
            if key.kid == Key::hmac(JwtAlgorithm::HS256, &embedded_jwt_secret()).kid {
                return Err(problem(
                    "is the public default secret from config/default.toml: tokens it \
                     verifies anyone could have made"
                        .into(),
                ));
            }
            previous.push(key);
        }
        Ok(KeyRing::new(current, previous))
    }

    /// `auth.jwt_secret`, with an empty value counted as unset.
    fn jwt_secret_literal(&self) -> Option<&str> {
        let secret = self.auth.jwt_secret.as_ref()?.expose_secret();
        (!secret.is_empty()).then_some(secret)
    }
}

/// The public HMAC secret of the embedded default.
fn embedded_jwt_secret() -> SecretString {
    embedded_value("auth.jwt_secret")
        .and_then(|public| public.into_string().ok())
        .unwrap_or_default()
        .into()
}

/// Refuses a key file that anyone may read, beyond its owner and group (a
/// group, as Kubernetes' `fsGroup` gives a mounted Secret): whoever reads
/// a signing key can mint tokens.
fn owner_only(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|err| format!("cannot be read: {err}"))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        return Err(format!(
            "is readable by others (mode {:o}): `chmod 600` it",
            mode & 0o777
        ));
    }
    Ok(())
}

/// The embedded default's value for `key`, if it has one.
fn embedded_value(key: &str) -> Option<config::Value> {
    let defaults = Config::builder()
        .add_source(embedded_source())
        .build()
        .ok()?;
    defaults.get::<config::Value>(key).ok()
}

/// `config/default.toml` as a configuration source.
fn embedded_source() -> File<config::FileSourceString, FileFormat> {
    File::from_str(EMBEDDED_DEFAULT, FileFormat::Toml)
}

impl ServerSettings {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn client_request_timeout(&self) -> Duration {
        Duration::from_millis(self.client_request_timeout_ms)
    }

    /// The TLS settings for `server.tls_cert` and `server.tls_key`, if set:
    /// rustls with the ring provider, TLS 1.2 and 1.3, HTTP/1.1. Validation
    /// loads them too, so that `check-config` finds a bad file.
    pub fn tls(&self) -> anyhow::Result<Option<rustls::ServerConfig>> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading server.tls_cert {}", cert.display()))?;
        anyhow::ensure!(
            !chain.is_empty(),
            "server.tls_cert {} holds no certificate",
            cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading server.tls_key {}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("server.tls_cert and server.tls_key do not make a certificate and its key")?;
        Ok(Some(config))
    }
}

impl AuthSettings {
    pub fn token_max_lifetime(&self) -> Duration {
        Duration::from_secs(self.token_max_lifetime_secs)
    }

    pub fn hasher_timeout(&self) -> Duration {
        Duration::from_secs(self.hasher_timeout_secs)
    }
}

impl SessionSettings {
    fn default_max_per_user() -> usize {
        100
    }

    pub fn idle_ttl(&self) -> Duration {
        Duration::from_secs(self.idle_ttl_secs)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_interval_secs)
    }
}

impl QueueSettings {
    /// The per-user limits these settings set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_pending: self.max_pending_per_user as u64,
            max_pending_bytes: self.max_pending_bytes_per_user,
            max_finished: self.max_retained_per_user,
            max_running: self.max_running_per_user as u64,
        }
    }

    /// The limits of each kind that has any.
    pub fn kind_limits(&self) -> KindLimits {
        self.kinds
            .iter()
            .map(|(kind, set)| {
                let limit = KindLimit {
                    max_running: set.max_running,
                    max_per_second: set.max_per_second,
                };
                (kind.clone(), limit)
            })
            .filter(|(_, limit)| *limit != KindLimit::default())
            .collect()
    }

    /// Each limit per kind that the queue's partitions loosen, in words:
    /// every partition applies its share rounded up, so the deployment
    /// allows up to the partitions times that share.
    pub fn loosened_kind_limits(&self) -> Vec<String> {
        let partitions = self.partitions as u64;
        if partitions <= 1 || self.backend != QueueBackend::Redis {
            return Vec::new();
        }
        let mut loosened = Vec::new();
        for (kind, set) in &self.kinds {
            let limits = [
                ("max_running", set.max_running),
                ("max_per_second", set.max_per_second.map(u64::from)),
            ];
            for (name, limit) in limits {
                if let Some(limit) = limit.filter(|limit| limit % partitions != 0) {
                    loosened.push(format!(
                        "queue.kinds.{kind}.{name} = {limit} over {partitions} partitions \
                         allows up to {}",
                        limit.div_ceil(partitions) * partitions
                    ));
                }
            }
        }
        loosened
    }

    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(self.visibility_timeout_secs)
    }

    pub fn manager_idle(&self) -> Duration {
        Duration::from_secs(self.manager_idle_secs)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs(self.result_ttl_secs)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }

    pub fn webhook_timeout(&self) -> Duration {
        Duration::from_secs(self.webhook_timeout_secs)
    }
}

impl TelemetrySettings {
    pub fn otlp_interval(&self) -> Duration {
        Duration::from_secs(self.otlp_interval_secs)
    }
}

impl DatabaseSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

impl RedisSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// A pool size of 0 in the settings means one per available core.
pub fn threads_or_cores(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(None, Some(env))
    }

    #[test]
    fn embedded_default_keeps_everything_in_memory_with_a_30_second_idle_ttl() {
        let settings = Settings::embedded_default();
        assert!(settings.database.is_none());
        assert_eq!(settings.session.idle_ttl_secs, 30);
        assert_eq!(settings.auth.jwt_algorithm, JwtAlgorithm::HS256);
        assert!(settings.uses_embedded_jwt_secret());
    }

    #[test]
    fn environment_variables_override_file_values() {
        let settings = load_env(&[
            ("TOLLGATE__SESSION__IDLE_TTL_SECS", "5"),
            ("TOLLGATE__SERVER__BIND", "127.0.0.1:9999"),
        ])
        .unwrap();
        assert_eq!(settings.session.idle_ttl_secs, 5);
        assert_eq!(settings.server.bind.port(), 9999);
    }

    #[test]
    fn tls_needs_both_files_holding_a_certificate_and_its_key() {
        let alone = load_env(&[("TOLLGATE__SERVER__TLS_CERT", "/etc/hostname")]).unwrap_err();
        assert!(alone.to_string().contains("go together"), "{alone}");
        let missing = load_env(&[
            ("TOLLGATE__SERVER__TLS_CERT", "/no/such/cert.pem"),
            ("TOLLGATE__SERVER__TLS_KEY", "/no/such/key.pem"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("reading server.tls_cert /no/such/cert.pem"),
            "{missing}"
        );

        // Readable is not enough: the files must hold a certificate and key.
        let not_pem = load_env(&[
            ("TOLLGATE__SERVER__TLS_CERT", "/etc/hostname"),
            ("TOLLGATE__SERVER__TLS_KEY", "/etc/hostname"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            not_pem.contains("server.tls_cert /etc/hostname holds no certificate"),
            "{not_pem}"
        );
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        let settings = load_env(&[(
            "TOLLGATE__SERVER__CORS_ORIGINS",
            "https://app.example.com, http://127.0.0.1:3000",
        )])
        .unwrap();
        let origins: Vec<&str> = settings
            .server
            .cors_origins
            .iter()
            .map(Origin::as_str)
            .collect();
        assert_eq!(
            origins,
            ["https://app.example.com", "http://127.0.0.1:3000"]
        );

        let problems = load_env(&[(
            "TOLLGATE__SERVER__CORS_ORIGINS",
            "*,https://app.example.com/path,app.example.com,https://App.example.com,http://[",
        )])
        .unwrap_err()
        .to_string();
        for origin in [
            "\"*\"",
            "/path",
            "\"app.example.com\"",
            "\"https://App.example.com\"",
            "\"http://[\"",
        ] {
            assert!(problems.contains(origin), "{origin} in {problems}");
        }
    }

    #[test]
    fn lists_come_from_the_environment_comma_separated() {
        let settings = load_env(&[(
            "TOLLGATE__QUEUE__WEBHOOK_ALLOWED_HOSTS",
            "hooks.example.com,127.0.0.1",
        )])
        .unwrap();
        let hosts: Vec<&str> = settings
            .queue
            .webhook_allowed_hosts
            .iter()
            .map(Host::as_str)
            .collect();
        assert_eq!(hosts, ["hooks.example.com", "127.0.0.1"]);
    }

    #[test]
    fn a_log_file_must_be_a_file_in_a_directory_that_exists() {
        let err = load_env(&[(
            "TOLLGATE__TELEMETRY__LOG_FILE",
            "/no/such/directory/tollgate.log",
        )])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("the directory /no/such/directory does not exist"),
            "{err}"
        );
        let dir = std::env::temp_dir().join("tollgate.log");
        let settings =
            load_env(&[("TOLLGATE__TELEMETRY__LOG_FILE", dir.to_str().unwrap())]).unwrap();
        let file = settings.telemetry.log_file.unwrap();
        assert_eq!(file.path(), dir);
    }

    #[test]
    fn limits_per_kind_that_partitions_loosen_are_named() {
        let settings = load_env(&[
            ("TOLLGATE__QUEUE__BACKEND", "redis"),
            ("TOLLGATE__QUEUE__PARTITIONS", "12"),
            ("TOLLGATE__QUEUE__KINDS__WEBHOOK__MAX_RUNNING", "5"),
            ("TOLLGATE__QUEUE__KINDS__WEBHOOK__MAX_PER_SECOND", "24"),
            ("TOLLGATE__REDIS__URL", "redis://127.0.0.1:6379"),
            (
                "TOLLGATE__AUTH__JWT_SECRET",
                "an-operator-chosen-secret-of-32-bytes!",
            ),
        ])
        .unwrap();

        assert_eq!(
            settings.queue.loosened_kind_limits(),
            ["queue.kinds.webhook.max_running = 5 over 12 partitions allows up to 12"]
        );
    }

    #[test]
    fn partitions_are_bounded_and_need_the_stores_in_redis() {
        let err = load_env(&[
            ("TOLLGATE__QUEUE__PARTITIONS", "12"),
            ("TOLLGATE__SESSION__PARTITIONS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("queue.partitions above 1 needs queue.backend = \"redis\""),
            "{err}"
        );
        assert!(
            err.contains("session.partitions must be between 1 and 256"),
            "{err}"
        );
        let defaults = load_env(&[]).unwrap();
        assert_eq!(
            (defaults.queue.partitions, defaults.session.partitions),
            (1, 1)
        );
    }

    #[test]
    fn a_redis_queue_needs_a_redis_section_and_a_real_secret() {
        let err = load_env(&[("TOLLGATE__QUEUE__BACKEND", "redis")]).unwrap_err();
        assert!(err.to_string().contains("needs a [redis] section"), "{err}");
        assert!(err.to_string().contains("public default"), "{err}");

        let settings = load_env(&[
            ("TOLLGATE__QUEUE__BACKEND", "redis"),
            ("TOLLGATE__REDIS__URL", "redis://127.0.0.1:6379"),
            (
                "TOLLGATE__AUTH__JWT_SECRET",
                "an-operator-chosen-secret-of-32-bytes!",
            ),
        ])
        .unwrap();
        let redis = settings.redis.unwrap();
        assert_eq!(
            (redis.pool_size, redis.key_prefix.as_str()),
            (4, "tollgate")
        );
    }

    #[test]
    fn queue_values_are_checked() {
        let err = load_env(&[
            ("TOLLGATE__QUEUE__WORKERS", "0"),
            ("TOLLGATE__QUEUE__BACKOFF_BASE_MS", "5000"),
            ("TOLLGATE__QUEUE__BACKOFF_MAX_MS", "1000"),
            (
                "TOLLGATE__QUEUE__WEBHOOK_ALLOWED_HOSTS",
                "ok.example.com,bad host",
            ),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        assert!(
            text.contains("queue.workers must be between 1 and 1024 (got 0)"),
            "{text}"
        );
        assert!(
            text.contains("queue.backoff_max_ms must be between 5000"),
            "{text}"
        );
        assert!(text.contains("\"bad host\" is not a host"), "{text}");
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err = load_env(&[
            ("TOLLGATE__AUTH__BCRYPT_COST", "3"),
            ("TOLLGATE__SESSION__SHARDS", "0"),
            ("TOLLGATE__AUTH__JWT_SECRET", "short"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        assert!(
            text.contains("auth.bcrypt_cost must be between 4 and 31 (got 3)"),
            "{text}"
        );
        assert!(text.contains("session.shards"), "{text}");
        assert!(
            text.contains("auth.jwt_secret must be at least 32 bytes"),
            "{text}"
        );
    }

    #[test]
    fn bad_types_and_bad_ranges_are_reported_together() {
        let err = load_env(&[
            ("TOLLGATE__SESSION__SHARDS", "four"),
            ("TOLLGATE__AUTH__BCRYPT_COST", "twelve"),
            ("TOLLGATE__SESSION__IDLE_TTL_SECS", "0"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(
            err.to_string().contains("session.idle_ttl_secs must be"),
            "{err}"
        );
        assert!(err.to_string().contains("session.shards"), "{err}");
        assert!(err.to_string().contains("auth.bcrypt_cost"), "{err}");
    }

    #[test]
    fn an_all_digit_secret_is_kept_exactly() {
        let digits = "01234567890123456789012345678901234567";
        let settings = load_env(&[("TOLLGATE__AUTH__JWT_SECRET", digits)]).unwrap();
        let expected = Key::hmac(JwtAlgorithm::HS256, &digits.into()).kid;
        assert_eq!(settings.key_ring().unwrap().current.kid, expected);
    }

    #[test]
    fn a_short_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("tollgate-key-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key_file = path.to_str().unwrap();
        let err = load_env(&[("TOLLGATE__AUTH__JWT_KEY_FILE", key_file)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("auth.jwt_key_file must hold at least 32 bytes (got 5)"),
            "{err}"
        );

        std::fs::write(&path, "a-key-file-secret-of-at-least-32-bytes\n").unwrap();
        let settings = load_env(&[("TOLLGATE__AUTH__JWT_KEY_FILE", key_file)]).unwrap();
        // The file's contents, its line ending left off.
        let secret = "a-key-file-secret-of-at-least-32-bytes";
        let expected = Key::hmac(JwtAlgorithm::HS256, &secret.into()).kid;
        assert_eq!(settings.key_ring().unwrap().current.kid, expected);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_rather_than_ignored() {
        let err = load_env(&[("TOLLGATE__SESSION__IDLE_TTL", "5")]).unwrap_err();
        assert!(err.to_string().contains("idle_ttl"), "{err}");
    }

    #[test]
    fn durable_store_refuses_the_public_default_secret() {
        let err =
            load_env(&[("TOLLGATE__DATABASE__URL", "postgres://u@localhost/db")]).unwrap_err();
        assert!(err.to_string().contains("public default"), "{err}");

        let settings = load_env(&[
            ("TOLLGATE__DATABASE__URL", "postgres://u@localhost/db"),
            (
                "TOLLGATE__AUTH__JWT_SECRET",
                "an-operator-chosen-secret-of-32-bytes!",
            ),
        ])
        .unwrap();
        assert!(settings.is_durable());
    }

    #[test]
    fn production_file_demands_a_secret_from_the_environment() {
        let production = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml");
        let err = Settings::load_from(Some(&production), Some(HashMap::new())).unwrap_err();
        assert!(
            err.to_string().contains("TOLLGATE__AUTH__JWT_SECRET"),
            "{err}"
        );

        let env = HashMap::from([(
            "TOLLGATE__AUTH__JWT_SECRET".to_string(),
            "an-operator-chosen-secret-of-32-bytes!".to_string(),
        )]);
        let settings = Settings::load_from(Some(&production), Some(env)).unwrap();
        assert_eq!(settings.telemetry.log_format, LogFormat::Json);
        assert!(settings.database.is_some());
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let settings = load_env(&[(
            "TOLLGATE__AUTH__INTROSPECTION_SECRET",
            "introspect-me-please",
        )])
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("introspect-me-please"));
        assert!(!debug.contains("do-not-use-in-production"));
    }
}
