//! Builds the whole service from settings: stores, actors, token keys and
//! the HTTP server. Tests build it the same way, on port 0.

use std::net::TcpListener;
use std::sync::Arc;

use actix::{Supervisor, SyncArbiter};
use actix_web::{App, HttpServer, dev::Server, dev::ServerHandle, middleware::from_fn, web};
use anyhow::Context as _;

use crate::actors::{HashPassword, PasswordHasher, RegistryConfig, SessionManager, UserRegistry};
use crate::auth::TokenKeys;
use crate::clock::Clock;
use crate::config::{Settings, threads_or_cores};
use crate::domain::Password;
use crate::http::{self, AppState};
use crate::storage::{self, MemoryUserStore, PostgresUserStore, UserStore};

/// Verified for unknown users, so they cost the same time as real ones.
const DUMMY_PASSWORD: &str = "no-user-has-this-password";

/// A built service, listening but not yet serving until [`run`] is awaited
/// (or the server future is spawned).
///
/// [`run`]: Application::run
pub struct Application {
    port: u16,
    server: Server,
    sessions: SessionManager,
}

impl Application {
    /// Builds every part and binds the listener. Migrates the database first
    /// when one is configured. Must run inside an actix `System`.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let store: Arc<dyn UserStore> = match &settings.database {
            Some(database) => {
                let applied = storage::migrate(database)
                    .await
                    .context("migrating the database")?;
                tracing::info!(applied, "database schema is up to date");
                Arc::new(PostgresUserStore::new(database)?)
            }
            None => {
                tracing::warn!(
                    "users and sessions are kept IN MEMORY ONLY and are lost when Tollgate stops; \
                     configure [database] for durable users"
                );
                Arc::new(MemoryUserStore::new())
            }
        };
        if settings.uses_embedded_jwt_secret() {
            tracing::warn!(
                "tokens are signed with the public default secret; set TOLLGATE__AUTH__JWT_SECRET"
            );
        }
        if settings.auth.introspection_secret.is_none() {
            tracing::info!(
                "token introspection is disabled until auth.introspection_secret is set"
            );
        }

        let cost = settings.auth.bcrypt_cost;
        let hasher_threads = threads_or_cores(settings.auth.hasher_threads);
        let hasher = SyncArbiter::start(hasher_threads, move || PasswordHasher::new(cost));
        let dummy =
            Password::parse(DUMMY_PASSWORD, "password").expect("the dummy password is valid");
        let dummy_hash = hasher
            .send(HashPassword(dummy))
            .await?
            .context("hashing the dummy password")?;

        let sessions = SessionManager::start(
            &settings.session,
            settings.auth.token_max_lifetime(),
            clock.clone(),
        );
        let registry = {
            let sessions = sessions.clone();
            let config = RegistryConfig {
                dummy_hash,
                cost,
                hasher_timeout: settings.auth.hasher_timeout(),
                clock: clock.clone(),
            };
            Supervisor::start(move |_| UserRegistry::new(store, hasher, sessions, config))
        };

        let secret = settings.jwt_secret().context("reading auth.jwt_key_file")?;
        let state = web::Data::new(AppState {
            registry,
            sessions: sessions.clone(),
            tokens: TokenKeys::new(&secret, settings.auth.jwt_algorithm, &settings.auth.issuer),
            clock,
            introspection_secret: settings.auth.introspection_secret.clone(),
        });

        let listener = TcpListener::bind(settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let max_body = settings.server.max_body_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http::request_id))
                .app_data(state.clone())
                .configure(http::configure(max_body))
        })
        .workers(threads_or_cores(settings.server.http_workers))
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .listen(listener)?
        .run();
        tracing::info!(
            port,
            hasher_threads,
            shards = settings.session.shards,
            "tollgate is listening"
        );
        Ok(Self {
            port,
            server,
            sessions,
        })
    }

    /// The port the server listens on (useful when bound to port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The session manager, for inspection by tests and tools.
    pub fn sessions(&self) -> SessionManager {
        self.sessions.clone()
    }

    /// Serves until the server is stopped (SIGINT, SIGTERM or a handle),
    /// letting requests in flight finish.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}
