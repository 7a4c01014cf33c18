//! Validation of a loaded settings tree: every value checked, every
//! problem reported, so an operator fixes a file in one pass.

use secrecy::ExposeSecret;

use super::{ConfigError, Settings};

impl Settings {
    /// Checks every value and reports all problems together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };

        let server = &self.server;
        check(
            (1024..=64 * 1024 * 1024).contains(&server.max_body_bytes),
            format!(
                "server.max_body_bytes must be between 1024 and 67108864 (got {})",
                server.max_body_bytes
            ),
        );
        check(
            server.http_workers <= 1024,
            format!(
                "server.http_workers must be at most 1024 (got {})",
                server.http_workers
            ),
        );
        check(
            server.shutdown_timeout_secs <= 3600,
            format!(
                "server.shutdown_timeout_secs must be at most 3600 (got {})",
                server.shutdown_timeout_secs
            ),
        );

        let auth = &self.auth;
        match (&auth.jwt_key_file, self.jwt_secret_literal()) {
            (Some(path), _) => match self.jwt_secret() {
                Ok(secret) => check(
                    secret.expose_secret().len() >= 32,
                    format!(
                        "auth.jwt_key_file must hold at least 32 bytes (got {})",
                        secret.expose_secret().len()
                    ),
                ),
                Err(err) => check(
                    false,
                    format!("auth.jwt_key_file: cannot read {}: {err}", path.display()),
                ),
            },
            (None, None) => check(
                false,
                "auth.jwt_secret is not set: set TOLLGATE__AUTH__JWT_SECRET (32 bytes or more) \
                 or auth.jwt_key_file"
                    .into(),
            ),
            (None, Some(secret)) => {
                check(
                    secret.len() >= 32,
                    format!(
                        "auth.jwt_secret must be at least 32 bytes (got {})",
                        secret.len()
                    ),
                );
                check(
                    !(self.is_durable() && self.uses_embedded_jwt_secret()),
                    "auth.jwt_secret is the public default from config/default.toml; \
                     set TOLLGATE__AUTH__JWT_SECRET before using a durable store"
                        .into(),
                );
            }
        }
        check(
            !auth.issuer.trim().is_empty(),
            "auth.issuer must not be empty".into(),
        );
        check(
            (4..=31).contains(&auth.bcrypt_cost),
            format!(
                "auth.bcrypt_cost must be between 4 and 31 (got {})",
                auth.bcrypt_cost
            ),
        );
        check(
            auth.hasher_threads <= 256,
            format!(
                "auth.hasher_threads must be at most 256 (got {})",
                auth.hasher_threads
            ),
        );
        check(
            (1..=300).contains(&auth.hasher_timeout_secs),
            format!(
                "auth.hasher_timeout_secs must be between 1 and 300 (got {})",
                auth.hasher_timeout_secs
            ),
        );
        check(
            auth.token_max_lifetime_secs >= self.session.idle_ttl_secs
                && auth.token_max_lifetime_secs <= 30 * 24 * 3600,
            format!(
                "auth.token_max_lifetime_secs must be between session.idle_ttl_secs ({}) and \
                 2592000 (got {})",
                self.session.idle_ttl_secs, auth.token_max_lifetime_secs
            ),
        );
        if let Some(secret) = &auth.introspection_secret {
            check(
                secret.expose_secret().len() >= 16,
                "auth.introspection_secret must be at least 16 bytes".into(),
            );
        }

        let session = &self.session;
        check(
            (1..=86_400).contains(&session.idle_ttl_secs),
            format!(
                "session.idle_ttl_secs must be between 1 and 86400 (got {})",
                session.idle_ttl_secs
            ),
        );
        check(
            (1..=256).contains(&session.shards),
            format!(
                "session.shards must be between 1 and 256 (got {})",
                session.shards
            ),
        );
        check(
            (1..=3600).contains(&session.sweep_interval_secs),
            format!(
                "session.sweep_interval_secs must be between 1 and 3600 (got {})",
                session.sweep_interval_secs
            ),
        );

        if let Some(database) = &self.database {
            check(
                database
                    .url
                    .expose_secret()
                    .parse::<tokio_postgres::Config>()
                    .is_ok(),
                "database.url is not a valid PostgreSQL connection URL".into(),
            );
            check(
                (1..=1000).contains(&database.pool_size),
                format!(
                    "database.pool_size must be between 1 and 1000 (got {})",
                    database.pool_size
                ),
            );
            check(
                (1..=300).contains(&database.timeout_secs),
                format!(
                    "database.timeout_secs must be between 1 and 300 (got {})",
                    database.timeout_secs
                ),
            );
        }

        let telemetry = &self.telemetry;
        check(
            tracing_subscriber::EnvFilter::try_new(&telemetry.log_level).is_ok(),
            format!(
                "telemetry.log_level is not a valid filter: {:?}",
                telemetry.log_level
            ),
        );

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }
}
