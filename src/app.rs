//! Builds the whole service from settings: stores, actors, token keys and
//! the HTTP server. Tests build it the same way, on port 0.

use std::net::TcpListener;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use actix::Supervisor;
use actix_web::{App, HttpServer, dev::Server, dev::ServerHandle, middleware::from_fn, web};
use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::actors::{
    HashPassword, HasherPool, Queue, RegistryConfig, SessionManager, UserRegistry,
};
use crate::auth::{FailedSignIns, TokenKeys};
use crate::clock::Clock;
use crate::config::{ConfigError, QueueBackend, SessionStoreKind, Settings, threads_or_cores};
use crate::domain::{Password, TaskKind};
use crate::events::Events;
use crate::http::{self, AppState, BodyLimits};
use crate::storage::{
    self, MemoryQueueStore, MemoryUserStore, PostgresUserStore, QueueStore, Redis, RedisQueueStore,
    RedisSessions, UserStore,
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
    sessions: SessionManager,
    queue: Queue,
    hashers: Arc<HasherPool>,
    sign_ins: Arc<FailedSignIns>,
    export: Arc<MetricsExport>,
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
                    "users are kept IN MEMORY ONLY and are lost when Tollgate stops; \
                     configure [database] for durable users"
                );
                Arc::new(MemoryUserStore::new())
            }
        };
        // One connection pool for every store that lives in Redis.
        let redis = match &settings.redis {
            Some(redis) => Some(Arc::new(Redis::connect(redis).await?)),
            None => None,
        };
        let queue_store: Arc<dyn QueueStore> = match (settings.queue.backend, &redis) {
            (QueueBackend::Redis, Some(redis)) => Arc::new(RedisQueueStore::new(redis.clone())),
            (QueueBackend::Redis, None) => anyhow::bail!("queue.backend = \"redis\" needs [redis]"),
            (QueueBackend::Memory, _) => {
                tracing::warn!(
                    "tasks are kept IN MEMORY ONLY and are lost when Tollgate stops; \
                     set queue.backend = \"redis\" for durable queues"
                );
                Arc::new(MemoryQueueStore::new())
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
        let hashers = Arc::new(HasherPool::start(hasher_threads, cost, metrics.clone()));
        let reported = Arc::downgrade(&hashers);
        metrics.observe_pool(Pool::Hashers, move || Some(reported.upgrade()?.sizes()));
        let dummy =
            Password::parse(DUMMY_PASSWORD, "password").expect("the dummy password is valid");
        let dummy_hash = hashers
            .addr()
            .send(HashPassword(dummy))
            .await?
            .context("hashing the dummy password")?;

        let shared_sessions = match (settings.session.store, &redis) {
            (SessionStoreKind::Redis, Some(redis)) => Some(Arc::new(RedisSessions::new(
                redis.clone(),
                settings.session.idle_ttl(),
            ))),
            (SessionStoreKind::Redis, None) => {
                anyhow::bail!("session.store = \"redis\" needs [redis]")
            }
            (SessionStoreKind::Memory, _) => None,
        };
        let sessions = SessionManager::start(
            &settings.session,
            settings.auth.token_max_lifetime(),
            clock.clone(),
            metrics.clone(),
            shared_sessions,
        );
        let events = match (&settings.events, &redis) {
            (Some(events), Some(redis)) => {
                Events::start(redis.clone(), events, clock.clone(), metrics.clone())
            }
            (Some(_), None) => anyhow::bail!("[events] needs [redis]"),
            (None, _) => Events::disabled(clock.clone(), metrics.clone()),
        };
        let default_kind = TaskKind::parse(&settings.queue.default_kind)?;
        anyhow::ensure!(
            handlers.get(&default_kind).is_some(),
            "queue.default_kind {:?} has no handler",
            default_kind.as_str()
        );
        let handlers = Arc::new(handlers);
        let queue = Queue::start(
            queue_store,
            handlers.clone(),
            &settings.queue,
            clock.clone(),
            metrics.clone(),
            events.clone(),
        );
        let registry = {
            let (hashers, sessions) = (hashers.clone(), sessions.clone());
            let queue = queue.router.clone();
            let config = RegistryConfig {
                dummy_hash,
                cost,
                hasher_timeout: settings.auth.hasher_timeout(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                events: events.clone(),
            };
            Supervisor::start(move |_| UserRegistry::new(store, hashers, sessions, queue, config))
        };

        let secret = settings.jwt_secret().context("reading auth.jwt_key_file")?;
        let limits = settings.rate_limit;
        let sign_ins = Arc::new(FailedSignIns::new(
            limits.signin_per_minute_per_ip,
            limits.signin_per_minute_per_user,
        ));
        let state = web::Data::new(AppState {
            registry,
            sessions: sessions.clone(),
            tokens: TokenKeys::new(&secret, settings.auth.jwt_algorithm, &settings.auth.issuer),
            clock,
            introspection_secret: settings.auth.introspection_secret.clone(),
            queue: queue.clone(),
            handlers,
            max_payload_bytes: settings.queue.max_payload_bytes,
            default_kind,
            metrics,
            events,
            export: export.clone(),
            sign_ins: sign_ins.clone(),
        });

        let listener = TcpListener::bind(settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let body_limits = BodyLimits {
            default: settings.server.max_body_bytes,
            tasks: settings
                .server
                .max_body_bytes
                .max(settings.queue.max_payload_bytes + TASK_BODY_OVERHEAD),
        };
        let cors_origins = settings.server.cors_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(http::method_not_allowed())
                .wrap(http::cors(&cors_origins))
                .wrap(http::security_headers())
                .wrap(from_fn(http::observe))
                .app_data(state.clone())
                .configure(http::configure(body_limits))
        })
        .workers(threads_or_cores(settings.server.http_workers))
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        // Stopping is `run_until_signal`'s job: it drains the workers too.
        .disable_signals();
        let server = match settings.server.tls()? {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        }
        .run();
        tracing::info!(
            port,
            hasher_threads,
            shards = settings.session.shards,
            workers = settings.queue.workers,
            queue = settings.queue.backend.as_str(),
            "tollgate is listening"
        );
        let app = Self {
            port,
            server,
            sessions,
            queue,
            hashers,
            sign_ins,
            export,
            shutdown_timeout: settings.server.shutdown_timeout(),
        };
        Ok(app)
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

    /// The task side: queues, workers and their figures.
    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }

    /// Serves until the server is stopped through a [`handle`].
    ///
    /// [`handle`]: Application::handle
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Serves until SIGTERM or SIGINT, then stops gracefully: no new
    /// connections and no new tasks, while requests in flight and running
    /// tasks get `server.shutdown_timeout_secs` to finish; the leases of
    /// tasks still running then are handed back, to run again elsewhere. A
    /// second SIGTERM or SIGINT meanwhile stops at once.
    ///
    /// On SIGHUP it calls `reload` for fresh settings and applies their
    /// pool sizes and per-user limits; settings that do not load are
    /// refused with a log line, and everything stays as it was.
    pub async fn run_until_signal(
        self,
        signals: Signals,
        reload: impl Fn() -> Result<Settings, ConfigError>,
    ) -> anyhow::Result<()> {
        let Signals {
            mut stop,
            mut hangup,
        } = signals;
        let handle = self.server.handle();
        let mut server = pin!(self.server);
        let stopped = loop {
            tokio::select! {
                served = &mut server => break Some(served),
                signal = stop.next() => {
                    tracing::info!(signal, "stopping");
                    break None;
                }
                _ = hangup.recv() => retune(&self.queue, &self.hashers, &self.sign_ins, reload()),
            }
        };
        let served = match stopped {
            // Stopped through a handle: nothing more to wait for.
            Some(served) => served,
            None => {
                // The server future must be polled for the stop command to
                // be heard.
                let drain = async {
                    tokio::join!(
                        handle.stop(true),
                        server,
                        self.queue.drain(self.shutdown_timeout)
                    )
                };
                tokio::select! {
                    ((), served, released) = drain => {
                        match released {
                            Ok(0) => tracing::info!("every running task finished"),
                            Ok(released) => {
                                tracing::info!(released, "handed back the leases of unfinished tasks")
                            }
                            Err(err) => tracing::warn!(error = %err, "the worker pool did not drain"),
                        }
                        served
                    }
                    signal = stop.next() => {
                        tracing::warn!(signal, "stopping now, without waiting");
                        Ok(())
                    }
                }
            }
        };
        self.export.shutdown().await;
        Ok(served?)
    }
}

/// The signals a running service answers to. Listened for from the start,
/// so that one arriving while the service is still being built (a SIGHUP
/// during migrations) is not fatal.
pub struct Signals {
    stop: StopSignals,
    hangup: Signal,
}

/// SIGTERM and SIGINT.
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Self> {
        Ok(Self {
            stop: StopSignals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            },
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

impl StopSignals {
    /// Waits for SIGTERM or SIGINT; answers which came.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Applies the pool sizes, per-user limits and rate limits of reloaded
/// settings.
fn retune(
    queue: &Queue,
    hashers: &HasherPool,
    sign_ins: &FailedSignIns,
    reloaded: Result<Settings, ConfigError>,
) {
    let settings = match reloaded {
        Ok(settings) => settings,
        Err(problems) => {
            tracing::error!(%problems, "reload refused; pools and limits stay as they were");
            return;
        }
    };
    let hasher_threads = threads_or_cores(settings.auth.hasher_threads);
    queue.retune(&settings.queue);
    hashers.resize(hasher_threads);
    let limits = settings.rate_limit;
    sign_ins.set_limits(
        limits.signin_per_minute_per_ip,
        limits.signin_per_minute_per_user,
    );
    tracing::info!(
        workers = settings.queue.workers,
        max_running_per_user = settings.queue.max_running_per_user,
        max_pending_per_user = settings.queue.max_pending_per_user,
        hasher_threads,
        signin_per_minute_per_ip = limits.signin_per_minute_per_ip,
        signin_per_minute_per_user = limits.signin_per_minute_per_user,
        "reloaded pool sizes and limits; other settings apply at the next start"
    );
}
