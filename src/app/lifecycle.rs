//! A built service's life: serving until SIGTERM or SIGINT, retuning on
//! SIGHUP, and the graceful stop.

use std::pin::pin;

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::Application;
use crate::accounts::AbuseLimits;
use crate::actors::{HasherPool, Queue};
use crate::auth::TokenKeys;
use crate::config::{ConfigError, Settings, threads_or_cores};
use crate::domain::KindLimits;

impl Application {
    /// Serves until SIGTERM or SIGINT, then stops gracefully: no new
    /// connections and no new tasks, while requests in flight and running
    /// tasks get `server.shutdown_timeout_secs` to finish; the leases of
    /// tasks still running then are handed back, to run again elsewhere.
    /// Then every long-running task is told to stop (the events writer
    /// appends what was published) and waited for. A second SIGTERM or
    /// SIGINT meanwhile stops at once.
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
        let admin = self.admin.map(super::AdminListener::spawn);
        let handle = self.server.handle();
        let mut server = pin!(self.server);
        let stopped = loop {
            tokio::select! {
                served = &mut server => break Some(served),
                signal = stop.next() => {
                    tracing::info!(signal, "stopping");
                    break None;
                }
                _ = hangup.recv() => {
                    let tunable = Tunable {
                        queue: &self.queue,
                        hashers: &self.hashers,
                        abuse_limits: &self.limits,
                        tokens: &self.tokens,
                    };
                    retune(&tunable, reload());
                }
            }
        };
        let served = match stopped {
            // Stopped through a handle: nothing more to wait for.
            Some(served) => {
                super::stop_admin(admin.as_ref()).await;
                served
            }
            None => {
                // The server future must be polled for the stop command to
                // be heard.
                let drain = async {
                    let ((), (), served, released) = tokio::join!(
                        handle.stop(true),
                        super::stop_admin(admin.as_ref()),
                        server,
                        self.queue.drain(self.shutdown_timeout)
                    );
                    match released {
                        Ok(0) => tracing::info!("every running task finished"),
                        Ok(released) => {
                            tracing::info!(released, "handed back the leases of unfinished tasks")
                        }
                        Err(err) => tracing::warn!(error = %err, "the worker pool did not drain"),
                    }
                    self.shutdown.stop();
                    if !self.shutdown.finished(self.shutdown_timeout).await {
                        tracing::warn!("some background work did not end in time");
                    }
                    served
                };
                tokio::select! {
                    served = drain => served,
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

/// What a reload retunes.
struct Tunable<'a> {
    queue: &'a Queue,
    hashers: &'a HasherPool,
    abuse_limits: &'a AbuseLimits,
    tokens: &'a TokenKeys,
}

/// Applies the pool sizes, per-user and per-kind limits, rate limits and
/// signing keys of reloaded settings.
fn retune(
    Tunable {
        queue,
        hashers,
        abuse_limits,
        tokens,
    }: &Tunable<'_>,
    reloaded: Result<Settings, ConfigError>,
) {
    // The key files are read again here, after the settings checked them:
    // one that changed between the two is refused the same way.
    let loaded = reloaded.and_then(|settings| {
        let ring = settings
            .key_ring()
            .map_err(|problem| ConfigError(vec![problem]))?;
        Ok((settings, ring))
    });
    let (settings, ring) = match loaded {
        Ok(loaded) => loaded,
        Err(problems) => {
            tracing::error!(%problems, "reload refused; pools, limits and keys stay as they were");
            return;
        }
    };
    tokens.reload(ring);
    let (algorithm, kid) = tokens.signing();
    let hasher_threads = threads_or_cores(settings.auth.hasher_threads);
    queue.retune(&settings.queue);
    super::warn_about_kind_limits(&settings);
    hashers.resize(hasher_threads);
    let limits = settings.rate_limit;
    abuse_limits.set_limits(&limits);
    tracing::info!(
        workers = settings.queue.workers,
        max_running_per_user = settings.queue.max_running_per_user,
        max_pending_per_user = settings.queue.max_pending_per_user,
        hasher_threads,
        signin_per_minute_per_ip = limits.signin_per_minute_per_ip,
        signin_per_minute_per_user = limits.signin_per_minute_per_user,
        signup_per_minute_per_ip = limits.signup_per_minute_per_ip,
        password_checks_per_minute_per_user = limits.password_checks_per_minute_per_user,
        kinds = %kind_limits(&settings.queue.kind_limits()),
        signing_key = %kid,
        ?algorithm,
        verification_keys = settings.auth.previous_key_files.len() + 1,
        "reloaded pool sizes, limits and signing keys; other settings apply at the next start"
    );
}

/// The limits per kind in words, for the log: `webhook max_running=0 ...`.
fn kind_limits(kinds: &KindLimits) -> String {
    let bound = |name: &str, value: Option<String>| {
        value
            .map(|value| format!(" {name}={value}"))
            .unwrap_or_default()
    };
    let described: Vec<String> = kinds
        .iter()
        .map(|(kind, limit)| {
            let running = bound("max_running", limit.max_running.map(|n| n.to_string()));
            let rate = bound(
                "max_per_second",
                limit.max_per_second.map(|n| n.to_string()),
            );
            format!("{kind}{running}{rate}")
        })
        .collect();
    described.join(", ")
}
