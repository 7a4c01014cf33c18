//! Validation of a loaded settings tree: every value checked, every
//! problem reported, so an operator fixes a file in one pass.

use std::fmt::Display;
use std::ops::RangeInclusive;

use secrecy::ExposeSecret;

use super::{ConfigError, Settings};

/// Longest absolute token lifetime accepted: 30 days.
const MAX_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;

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

        let auth = &self.auth;
        match (&auth.jwt_key_file, self.jwt_secret_literal()) {
            (Some(path), _) => match self.jwt_secret() {
                Ok(secret) => {
                    let len = secret.expose_secret().len();
                    problems.require(len >= 32, || {
                        format!("auth.jwt_key_file must hold at least 32 bytes (got {len})")
                    });
                }
                Err(err) => problems.require(false, || {
                    format!("auth.jwt_key_file: cannot read {}: {err}", path.display())
                }),
            },
            (None, None) => problems.require(false, || {
                "auth.jwt_secret is not set: set TOLLGATE__AUTH__JWT_SECRET (32 bytes or more) \
                 or auth.jwt_key_file"
                    .into()
            }),
            (None, Some(secret)) => {
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
        problems.range(
            "session.sweep_interval_secs",
            session.sweep_interval_secs,
            1..=3600,
        );

        if let Some(database) = &self.database {
            let url = database.url.expose_secret();
            problems.require(url.parse::<tokio_postgres::Config>().is_ok(), || {
                "database.url is not a valid PostgreSQL connection URL".into()
            });
            problems.range("database.pool_size", database.pool_size, 1..=1000);
            problems.range("database.timeout_secs", database.timeout_secs, 1..=300);
        }

        let log_level = &self.telemetry.log_level;
        problems.require(
            tracing_subscriber::EnvFilter::try_new(log_level).is_ok(),
            || format!("telemetry.log_level is not a valid filter: {log_level:?}"),
        );

        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems.0))
        }
    }
}
