//! Validation of a loaded settings tree. Values that are more than numbers
//! were parsed as they were read (`values`); what is left is ranges and the
//! rules between settings. Every problem is reported, so an operator fixes
//! a file in one pass.

use std::fmt::Display;
use std::ops::RangeInclusive;

use secrecy::ExposeSecret;

use super::{ConfigError, QueueBackend, SessionStoreKind, Settings};
use crate::domain::{LISTED_SESSIONS, MAX_ATTEMPTS};

/// Longest absolute token lifetime accepted: 30 days.
const MAX_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;
/// Longest that finished tasks and idempotency keys may be kept: 30 days.
const MAX_RETENTION_SECS: u64 = 30 * 24 * 3600;
/// Most partitions of the queue or the sessions: each is asked on its own
/// by every look across users.
const MAX_PARTITIONS: usize = 256;

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// Notes `problem` unless `ok`; the message is only built when needed.
    fn require(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    /// Notes the error of a setting that is checked by building from it.
    fn builds<T>(&mut self, built: anyhow::Result<T>) {
        if let Err(err) = built {
            self.0.push(format!("{err:#}"));
        }
    }

    /// Notes `key` unless its `value` lies within `allowed`.
    fn range<T: PartialOrd + Display>(&mut self, key: &str, value: T, allowed: RangeInclusive<T>) {
        let (low, high) = (allowed.start(), allowed.end());
        self.require(allowed.contains(&value), || {
            format!("{key} must be between {low} and {high} (got {value})")
        });
    }
}

impl Settings {
    /// Checks every value and reports all problems together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();

        let server = &self.server;
        problems.range(
            "server.max_body_bytes",
            server.max_body_bytes,
            1024..=64 * 1024 * 1024,
        );
        problems.range("server.http_workers", server.http_workers, 0..=1024);
        problems.range(
            "server.shutdown_timeout_secs",
            server.shutdown_timeout_secs,
            0..=3600,
        );
        problems.range(
            "server.client_request_timeout_ms",
            server.client_request_timeout_ms,
            100..=600_000,
        );

        let auth = &self.auth;
        let literal_secret = auth.jwt_key_file.is_none() && !auth.jwt_algorithm.is_asymmetric();
        match self.jwt_secret_literal() {
            _ if !literal_secret => {}
            None => problems.require(false, || {
                "auth.jwt_secret is not set: set TOLLGATE__AUTH__JWT_SECRET (32 bytes or more) \
                 or auth.jwt_key_file"
                    .into()
            }),
            Some(secret) => {
                problems.require(secret.len() >= 32, || {
                    format!(
                        "auth.jwt_secret must be at least 32 bytes (got {})",
                        secret.len()
                    )
                });
                problems.require(
                    !(self.is_durable() && self.uses_embedded_jwt_secret()),
                    || {
                        "auth.jwt_secret is the public default from config/default.toml; \
                     set TOLLGATE__AUTH__JWT_SECRET before using a durable store"
                            .into()
                    },
                );
            }
        }
        // The key files: readable, of the algorithm, kept private, and no
        // previous key the current one again.
        if let Err(problem) = self.key_ring() {
            problems.require(false, || problem);
        }
        problems.require(!auth.issuer.trim().is_empty(), || {
            "auth.issuer must not be empty".into()
        });
        problems.range("auth.bcrypt_cost", auth.bcrypt_cost, 4..=31);
        problems.range("auth.hasher_threads", auth.hasher_threads, 0..=256);
        problems.range(
            "auth.hasher_timeout_secs",
            auth.hasher_timeout_secs,
            1..=300,
        );
        let lifetime = auth.token_max_lifetime_secs;
        problems.require(
            (self.session.idle_ttl_secs..=MAX_TOKEN_LIFETIME_SECS).contains(&lifetime),
            || {
                format!(
                    "auth.token_max_lifetime_secs must be between session.idle_ttl_secs ({}) and \
                     {MAX_TOKEN_LIFETIME_SECS} (got {lifetime})",
                    self.session.idle_ttl_secs
                )
            },
        );
        if let Some(secret) = &auth.introspection_secret {
            problems.require(secret.expose_secret().len() >= 16, || {
                "auth.introspection_secret must be at least 16 bytes".into()
            });
        }

        let session = &self.session;
        problems.range("session.idle_ttl_secs", session.idle_ttl_secs, 1..=86_400);
        problems.range("session.shards", session.shards, 1..=256);
        problems.range("session.partitions", session.partitions, 1..=MAX_PARTITIONS);
        problems.range(
            "session.max_per_user",
            session.max_per_user,
            1..=LISTED_SESSIONS,
        );
        problems.range(
            "session.sweep_interval_secs",
            session.sweep_interval_secs,
            1..=3600,
        );

        let queue = &self.queue;
        problems.range("queue.workers", queue.workers, 1..=1024);
        problems.range("queue.partitions", queue.partitions, 1..=MAX_PARTITIONS);
        problems.range("queue.newcomer_workers", queue.newcomer_workers, 0..=1024);
        for (kind, limits) in &queue.kinds {
            let key = |name: &str| format!("queue.kinds.{kind}.{name}");
            if let Some(most) = limits.max_running {
                problems.range(&key("max_running"), most, 0..=1_000_000);
            }
            if let Some(rate) = limits.max_per_second {
                problems.range(&key("max_per_second"), rate, 1..=1000);
            }
        }
        problems.range(
            "queue.max_running_per_user",
            queue.max_running_per_user,
            0..=1024,
        );
        problems.range(
            "queue.max_pending_per_user",
            queue.max_pending_per_user,
            1..=10_000_000,
        );
        problems.range(
            "queue.max_retained_per_user",
            queue.max_retained_per_user,
            1..=10_000_000,
        );
        problems.range(
            "queue.max_pending_bytes_per_user",
            queue.max_pending_bytes_per_user,
            queue.max_payload_bytes as u64..=1 << 40,
        );
        problems.range(
            "queue.max_payload_bytes",
            queue.max_payload_bytes,
            2..=16 * 1024 * 1024,
        );
        problems.range(
            "queue.visibility_timeout_secs",
            queue.visibility_timeout_secs,
            1..=3600,
        );
        problems.range("queue.max_attempts", queue.max_attempts, 1..=MAX_ATTEMPTS);
        problems.range(
            "queue.backoff_base_ms",
            queue.backoff_base_ms,
            1..=3_600_000,
        );
        problems.range(
            "queue.backoff_max_ms",
            queue.backoff_max_ms,
            queue.backoff_base_ms..=86_400_000,
        );
        problems.range(
            "queue.result_ttl_secs",
            queue.result_ttl_secs,
            1..=MAX_RETENTION_SECS,
        );
        problems.range(
            "queue.idempotency_ttl_secs",
            queue.idempotency_ttl_secs,
            1..=MAX_RETENTION_SECS,
        );
        problems.range("queue.manager_idle_secs", queue.manager_idle_secs, 1..=3600);
        problems.range(
            "queue.poll_interval_ms",
            queue.poll_interval_ms,
            10..=60_000,
        );
        problems.range(
            "queue.webhook_timeout_secs",
            queue.webhook_timeout_secs,
            1..=300,
        );
        let needs_redis = [
            (
                queue.backend == QueueBackend::Redis,
                "queue.backend = \"redis\"",
            ),
            (
                self.session.store == SessionStoreKind::Redis,
                "session.store = \"redis\"",
            ),
            (self.events.is_some(), "[events]"),
        ];
        for (_, what) in needs_redis.iter().filter(|(needed, _)| *needed) {
            problems.require(self.redis.is_some(), || {
                format!("{what} needs a [redis] section with a url or cluster_nodes")
            });
        }
        // Partitions are key groups in Redis: the memory stores have none.
        let partitioned = [
            (
                "queue.partitions",
                queue.partitions,
                queue.backend == QueueBackend::Redis,
                "queue.backend",
            ),
            (
                "session.partitions",
                self.session.partitions,
                self.session.store == SessionStoreKind::Redis,
                "session.store",
            ),
        ];
        for (key, partitions, in_redis, store) in partitioned {
            problems.require(partitions == 1 || in_redis, || {
                format!("{key} above 1 needs {store} = \"redis\"")
            });
        }

        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), Some(_)) => {
                problems.builds(self.server.tls());
            }
            (None, None) => {}
            _ => problems.require(false, || {
                "server.tls_cert and server.tls_key go together: set both or neither".to_owned()
            }),
        }
        let limits = &self.rate_limit;
        for (key, value) in [
            (
                "rate_limit.signin_per_minute_per_ip",
                limits.signin_per_minute_per_ip,
            ),
            (
                "rate_limit.signin_per_minute_per_user",
                limits.signin_per_minute_per_user,
            ),
        ] {
            problems.range(key, value, 0..=100_000);
        }
        if let Some(events) = &self.events {
            problems.range("events.max_len", events.max_len, 100..=100_000_000);
        }

        if let Some(redis) = &self.redis {
            problems.require(
                redis.url.is_some() || !redis.cluster_nodes.is_empty(),
                || "[redis] needs a url or cluster_nodes".into(),
            );
            problems.range("redis.pool_size", redis.pool_size, 1..=256);
            problems.range("redis.timeout_secs", redis.timeout_secs, 1..=60);
            problems.builds(redis.tls());
        }

        if let Some(admin) = &self.admin {
            problems.builds(admin.token());
            problems.require(
                admin.bind.ip().is_loopback() || self.server.tls_cert.is_some(),
                || {
                    format!(
                        "admin.bind {} is off loopback and there is no server.tls_cert: the admin \
                         token would cross the network in plaintext; bind it to 127.0.0.1 (reach \
                         it through a tunnel) or set server.tls_cert and server.tls_key, which \
                         the admin listener then uses too",
                        admin.bind
                    )
                },
            );
            problems.require(
                admin.bind != self.server.bind || admin.bind.port() == 0,
                || "admin.bind must differ from server.bind".to_owned(),
            );
        }

        if let Some(database) = &self.database {
            problems.range("database.pool_size", database.pool_size, 1..=1000);
            problems.range("database.timeout_secs", database.timeout_secs, 1..=300);
            problems.builds(database.tls());
        }

        let telemetry = &self.telemetry;
        problems.range(
            "telemetry.otlp_interval_secs",
            telemetry.otlp_interval_secs,
            1..=3600,
        );
        if let Some(file) = &telemetry.log_file {
            let directory = file.directory();
            problems.require(directory.is_dir(), || {
                format!(
                    "telemetry.log_file: the directory {} does not exist",
                    directory.display()
                )
            });
        }

        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems.0))
        }
    }
}
