//! The service put together: [`Application::build`] wires stores, actors,
//! token keys and the HTTP server from settings; `lifecycle` runs it until
//! a signal and stops it gracefully. Tests build it the same way, on port 0.

mod lifecycle;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, dev::Server, dev::ServerHandle, middleware::from_fn, web};
use anyhow::Context as _;

pub use lifecycle::Signals;

use crate::accounts::{AbuseLimits, Accounts, AccountsConfig, UserRegistry};
use crate::actors::{HashPassword, HasherPool, Queue, SessionManager};
use crate::auth::TokenKeys;
use crate::clock::Clock;
use crate::config::{QueueBackend, SessionStoreKind, Settings, threads_or_cores};
use crate::domain::{KindLoad, Password};
use crate::events::Events;
use crate::http::{self, AdminState, AppState, BodyLimits, TaskIntake};
use crate::shutdown::Shutdown;
use crate::storage::{
    self, AttemptStore, MemoryAttempts, MemoryQueueStore, MemoryUserStore, PostgresUserStore,
    QueuePolicy, QueueStore, Redis, RedisAttempts, RedisSessions, UserStore,
};
use crate::tasks::TaskHandlers;
use crate::telemetry::{MetricsExport, Pool};

/// Room a task body needs beyond its payload: kind, attempts, delay.
const TASK_BODY_OVERHEAD: usize = 4096;

/// Verified for unknown users, so they cost the same time as real ones.
const DUMMY_PASSWORD: &str = "no-user-has-this-password";

/// A built service, listening but not yet serving until [`run`] is awaited
/// (or the server future is spawned).
///
/// [`run`]: Application::run
pub struct Application {
    port: u16,
    server: Server,
    /// The admin listener, serving on a task of its own, if configured.
    admin: Option<AdminListener>,
    sessions: SessionManager,
    queue: Queue,
    hashers: Arc<HasherPool>,
    limits: Arc<AbuseLimits>,
    tokens: Arc<TokenKeys>,
    export: Arc<MetricsExport>,
    /// The stop signal of every long-running task (the events writer).
    shutdown: Shutdown,
    shutdown_timeout: Duration,
}

impl Application {
    /// Builds every part, with the built-in task kinds, and binds the
    /// listener. Migrates the database first when one is configured. Must
    /// run inside an actix `System`.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let handlers = TaskHandlers::builtin(&settings.queue)?;
        Self::build_with_handlers(settings, clock, handlers).await
    }

    /// Like [`Application::build`], running the task kinds of `handlers`.
    pub async fn build_with_handlers(
        settings: Settings,
        clock: Clock,
        handlers: TaskHandlers,
    ) -> anyhow::Result<Self> {
        let export = Arc::new(MetricsExport::new(&settings.telemetry)?);
        let metrics = export.metrics();
        let shutdown = Shutdown::new();
        let users = user_store(&settings).await?;
        // One connection pool for every store that lives in Redis.
        let redis = match &settings.redis {
            Some(redis) => Some(Arc::new(Redis::connect(redis).await?)),
            None => None,
        };
        let policy = QueuePolicy::new(&settings.queue, clock.clone());
        let limits = policy.limits.clone();
        // The kinds with limits are in the very first scrape, at 0 until
        // the worker pool's first reading.
        metrics.kind_loads(&KindLoad::none_of(&limits.kinds()));
        let queue_store = queue_store(&settings, redis.as_ref(), policy).await?;
        warn_about_credentials(&settings);
        warn_about_kind_limits(&settings);

        let hasher_threads = threads_or_cores(settings.auth.hasher_threads);
        let hashers = Arc::new(HasherPool::start(
            hasher_threads,
            settings.auth.bcrypt_cost,
            metrics.clone(),
        ));
        let reported = Arc::downgrade(&hashers);
        metrics.observe_pool(Pool::Hashers, move || Some(reported.upgrade()?.sizes()));
        let dummy_hash = dummy_hash(&hashers).await?;

        let shared = shared_sessions(&settings, redis.as_ref())?;
        if let Some(shared) = &shared {
            shutdown.spawn(shared.clone().listen(shutdown.clone()));
        }
        let sessions = SessionManager::start(
            &settings.session,
            settings.auth.token_max_lifetime(),
            clock.clone(),
            metrics.clone(),
            shared,
        );
        let events = match (&settings.events, &redis) {
            (Some(events), Some(redis)) => Events::start(
                redis.clone(),
                events,
                clock.clone(),
                metrics.clone(),
                &shutdown,
            ),
            (Some(_), None) => anyhow::bail!("[events] needs [redis]"),
            (None, _) => Events::disabled(clock.clone(), metrics.clone()),
        };
        let default_kind = settings.queue.default_kind.clone();
        anyhow::ensure!(
            handlers.get(&default_kind).is_some(),
            "queue.default_kind {:?} has no handler",
            default_kind.as_str()
        );
        let handlers = Arc::new(handlers);
        let queue = Queue::start(
            queue_store,
            limits,
            handlers.clone(),
            &settings.queue,
            clock.clone(),
            metrics.clone(),
            events.clone(),
        );
        // Shared by every replica where Redis is, else this process's own.
        let attempts: Arc<dyn AttemptStore> = match &redis {
            Some(redis) => Arc::new(RedisAttempts::new(redis.clone())),
            None => Arc::new(MemoryAttempts::default()),
        };
        let abuse_limits = Arc::new(AbuseLimits::new(
            &settings.rate_limit,
            attempts,
            clock.clone(),
        ));
        let registry = UserRegistry::new(Accounts::new(
            users,
            hashers.clone(),
            sessions.clone(),
            queue.clone(),
            AccountsConfig {
                dummy_hash,
                cost: settings.auth.bcrypt_cost,
                hasher_timeout: settings.auth.hasher_timeout(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                events: events.clone(),
                limits: abuse_limits.clone(),
            },
        ));

        let ring = settings
            .key_ring()
            .map_err(|problem| anyhow::anyhow!(problem))?;
        let tokens = Arc::new(TokenKeys::new(ring, &settings.auth.issuer));
        metrics.known_routes(http::ROUTES);
        let state = AppState {
            registry,
            sessions: sessions.clone(),
            tokens: tokens.clone(),
            clock,
            introspection_secret: settings.auth.introspection_secret.clone(),
            queue: queue.clone(),
            intake: TaskIntake {
                handlers,
                max_payload_bytes: settings.queue.max_payload_bytes,
                default_max_attempts: settings.queue.max_attempts,
                default_kind,
            },
            metrics,
            events,
            export: export.clone(),
            limits: abuse_limits.clone(),
            trusted_proxies: settings.server.trusted_proxies.clone(),
        };
        let admin = match &settings.admin {
            Some(admin) => {
                let token = admin.token()?;
                let export = admin.serve_metrics.then(|| export.clone());
                let state = AdminState::new(
                    state.registry.clone(),
                    queue.clone(),
                    hashers.clone(),
                    state.metrics.clone(),
                    export,
                    &token,
                );
                Some(serve_admin(&settings, state)?)
            }
            None => None,
        };
        let (server, port) = serve(&settings, state)?;
        tracing::info!(
            port,
            hasher_threads,
            shards = settings.session.shards,
            workers = settings.queue.workers,
            queue = settings.queue.backend.as_str(),
            "tollgate is listening"
        );
        Ok(Self {
            port,
            server,
            admin,
            sessions,
            queue,
            hashers,
            limits: abuse_limits,
            tokens,
            export,
            shutdown,
            shutdown_timeout: settings.server.shutdown_timeout(),
        })
    }

    /// The port the server listens on (useful when bound to port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the admin listener listens on, if there is one.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|admin| admin.port)
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The session manager, for inspection by tests and tools.
    pub fn sessions(&self) -> SessionManager {
        self.sessions.clone()
    }

    /// The task side: queues, workers and their figures.
    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }

    /// Serves until the server is stopped through a [`handle`], then tells
    /// the long-running tasks to stop and waits for them.
    ///
    /// [`handle`]: Application::handle
    pub async fn run(self) -> std::io::Result<()> {
        let admin = self.admin.map(AdminListener::spawn);
        let served = self.server.await;
        stop_admin(admin.as_ref()).await;
        self.shutdown.stop();
        self.shutdown.finished(self.shutdown_timeout).await;
        served
    }
}

/// The user store: PostgreSQL, migrated first, or memory.
async fn user_store(settings: &Settings) -> anyhow::Result<Arc<dyn UserStore>> {
    Ok(match &settings.database {
        Some(database) => {
            let applied = storage::migrate(database)
                .await
                .context("migrating the database")?;
            tracing::info!(applied, "database schema is up to date");
            Arc::new(PostgresUserStore::new(database)?)
        }
        None => {
            tracing::warn!(
                "users are kept IN MEMORY ONLY and are lost when Tollgate stops; \
                 configure [database] for durable users"
            );
            Arc::new(MemoryUserStore::new())
        }
    })
}

/// The task store the settings name, applying `policy`.
async fn queue_store(
    settings: &Settings,
    redis: Option<&Arc<Redis>>,
    policy: QueuePolicy,
) -> anyhow::Result<Arc<dyn QueueStore>> {
    Ok(match (settings.queue.backend, redis) {
        (QueueBackend::Redis, Some(redis)) => {
            storage::redis_queue(redis.clone(), policy, settings.queue.partitions).await?
        }
        (QueueBackend::Redis, None) => anyhow::bail!("queue.backend = \"redis\" needs [redis]"),
        (QueueBackend::Memory, _) => {
            tracing::warn!(
                "tasks are kept IN MEMORY ONLY and are lost when Tollgate stops; \
                 set queue.backend = \"redis\" for durable queues"
            );
            Arc::new(MemoryQueueStore::new(policy))
        }
    })
}

/// Sessions in Redis, shared by every replica, if the settings say so.
fn shared_sessions(
    settings: &Settings,
    redis: Option<&Arc<Redis>>,
) -> anyhow::Result<Option<Arc<RedisSessions>>> {
    Ok(match (settings.session.store, redis) {
        (SessionStoreKind::Redis, Some(redis)) => Some(Arc::new(
            RedisSessions::new(
                redis.clone(),
                settings.session.idle_ttl(),
                settings.session.max_per_user,
                settings.session.shards,
            )
            .partitioned(settings.session.partitions),
        )),
        (SessionStoreKind::Redis, None) => anyhow::bail!("session.store = \"redis\" needs [redis]"),
        (SessionStoreKind::Memory, _) => None,
    })
}

/// Says so (at start and at each reload) when the queue's partitions
/// loosen a limit per kind.
pub(crate) fn warn_about_kind_limits(settings: &Settings) {
    for loosened in settings.queue.loosened_kind_limits() {
        tracing::warn!("{loosened}: each partition applies its share, rounded up");
    }
}

/// Says so at start when tokens are signed with the public secret, or
/// when introspection is off.
fn warn_about_credentials(settings: &Settings) {
    if settings.uses_embedded_jwt_secret() {
        tracing::warn!(
            "tokens are signed with the public default secret; set TOLLGATE__AUTH__JWT_SECRET"
        );
    }
    if settings.auth.introspection_secret.is_none() {
        tracing::info!("token introspection is disabled until auth.introspection_secret is set");
    }
}

/// A hash of a password nobody has, made on the hasher pool.
async fn dummy_hash(hashers: &HasherPool) -> anyhow::Result<String> {
    let dummy = Password::parse(DUMMY_PASSWORD, "password").expect("the dummy password is valid");
    hashers
        .addr()
        .send(HashPassword(dummy))
        .await?
        .context("hashing the dummy password")
}

/// Binds `$server` to `$bind`, with TLS if `$tls` holds a configuration;
/// answers it running and the port it got (`$bind` may ask for port 0).
/// A macro, as `HttpServer`'s type names crates this one does not use.
macro_rules! listen {
    ($server:expr, $bind:expr, $tls:expr) => {{
        let bind: std::net::SocketAddr = $bind;
        match $tls {
            Some(tls) => $server.bind_rustls_0_23(bind, tls),
            None => $server.bind(bind),
        }
        .map(|server| {
            let port = server
                .addrs()
                .first()
                .map_or(bind.port(), |addr| addr.port());
            (server.run(), port)
        })
    }};
}

/// The admin listener, bound but not yet serving.
struct AdminListener {
    port: u16,
    server: Server,
}

impl AdminListener {
    /// Serves on a task of the current actix system, beside the public
    /// listener; answers the handle that stops it.
    fn spawn(self) -> ServerHandle {
        let handle = self.server.handle();
        actix_web::rt::spawn(self.server);
        handle
    }
}

/// Stops the admin listener, if there is one, letting requests in flight
/// finish.
async fn stop_admin(admin: Option<&ServerHandle>) {
    if let Some(admin) = admin {
        admin.stop(true).await;
    }
}

/// Binds the admin listener: one worker, no CORS (browsers reach it only
/// from its own console), TLS when the public listener has it.
fn serve_admin(settings: &Settings, state: AdminState) -> anyhow::Result<AdminListener> {
    let state = web::Data::new(state);
    let limits = BodyLimits {
        default: settings.server.max_body_bytes,
        tasks: settings.server.max_body_bytes,
    };
    let request_timeout = settings.server.client_request_timeout();
    let bind = settings
        .admin
        .as_ref()
        .expect("serving the admin listener")
        .bind;
    let tls_config = settings.server.tls()?;
    let tls = tls_config.is_some();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(move |req, next| {
                http::body_deadline(request_timeout, req, next)
            }))
            .wrap(http::method_not_allowed())
            .wrap(http::security_headers(tls))
            .app_data(state.clone())
            .configure(http::configure_admin(limits))
    })
    .workers(1)
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .client_request_timeout(request_timeout)
    .disable_signals();
    // The token must not cross a network in the clear: with a certificate
    // the admin listener speaks TLS too (and off loopback it must).
    let (server, port) =
        listen!(server, bind, tls_config).with_context(|| format!("binding admin.bind {bind}"))?;
    tracing::info!(port, "the admin API is listening");
    Ok(AdminListener { port, server })
}

/// Connections waiting to be accepted, as the kernel allows (it caps this
/// at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listener and builds the HTTP server around `state`.
fn serve(settings: &Settings, state: AppState) -> anyhow::Result<(Server, u16)> {
    let state = web::Data::new(state);
    let body_limits = BodyLimits {
        default: settings.server.max_body_bytes,
        tasks: settings
            .server
            .max_body_bytes
            .max(settings.queue.max_payload_bytes + TASK_BODY_OVERHEAD),
    };
    let cors_origins: Vec<String> = settings
        .server
        .cors_origins
        .iter()
        .map(|origin| origin.as_str().to_owned())
        .collect();
    let request_timeout = settings.server.client_request_timeout();
    let tls_config = settings.server.tls()?;
    let tls = tls_config.is_some();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(move |req, next| {
                http::body_deadline(request_timeout, req, next)
            }))
            .wrap(http::method_not_allowed())
            .wrap(http::cors(&cors_origins))
            .wrap(http::security_headers(tls))
            .wrap(from_fn(http::observe))
            .app_data(state.clone())
            .configure(http::configure(body_limits))
    })
    .workers(threads_or_cores(settings.server.http_workers))
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .client_request_timeout(request_timeout)
    // Connections a burst opens wait in the kernel until accepted; past
    // the backlog their SYNs are dropped and retried a second later.
    .backlog(LISTEN_BACKLOG)
    // Stopping is `run_until_signal`'s job: it drains the workers too.
    .disable_signals();
    let bind = settings.server.bind;
    listen!(server, bind, tls_config).with_context(|| format!("binding {bind}"))
}
