//! Every instrument Tollgate records, named as in OpenTelemetry's semantic
//! conventions (`http.server.request.duration`, `tollgate.tasks.finished`).
//! The Prometheus exporter renders them with dots as underscores and units
//! as suffixes (`http_server_request_duration_seconds`).
//!
//! Labels are bounded by design: route templates, outcomes, kinds, actor and
//! pool names. No label carries a user, a raw path or anything secret.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter, Gauge, Histogram, Meter, MeterProvider, ObservableGauge, UpDownCounter,
};

use crate::domain::{KindLoad, TaskStatus};

/// Buckets for request and hash latencies, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for task run times and waits, in seconds.
const TASK_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The supervised actors, as `tollgate.actors.restarts` names them.
const ACTORS: [&str; 4] = ["SessionShard", "QueueRouter", "WorkerPool", "TaskWorker"];

/// The instruments, cheap to clone and share between actors and threads.
#[derive(Clone)]
pub struct Metrics(Arc<Instruments>);

struct Instruments {
    http_duration: Histogram<f64>,
    http_active: UpDownCounter<i64>,
    signins: Counter<u64>,
    signups: Counter<u64>,
    admin_actions: Counter<u64>,
    hash_duration: Histogram<f64>,
    /// Read at each collection from `sessions_held`.
    _sessions_active: ObservableGauge<i64>,
    /// Sessions held: this process's count with sessions in memory; with
    /// sessions in Redis, the count there at the last sweep, moved by this
    /// replica's opens and ends since (an open between a sweep's count and
    /// its reading may be counted twice or not at all until the next).
    sessions_held: Arc<AtomicI64>,
    sessions_created: Counter<u64>,
    sessions_reinflated: Counter<u64>,
    sessions_expired: Counter<u64>,
    tasks_enqueued: Counter<u64>,
    tasks_finished: Counter<u64>,
    task_duration: Histogram<f64>,
    task_wait: Histogram<f64>,
    queue_pending: Gauge<u64>,
    users_with_pending: Gauge<u64>,
    oldest_wait: Gauge<f64>,
    kind_running: Gauge<u64>,
    kind_parked: Gauge<u64>,
    workers_busy: Gauge<u64>,
    actor_restarts: Counter<u64>,
    fencing_rejections: Counter<u64>,
    events: Counter<u64>,
    /// Read at each collection from `pools`.
    _pool_size: ObservableGauge<u64>,
    pools: Arc<Mutex<Vec<(Pool, SizeSource)>>>,
}

/// Reads a pool's `(target, actual)` size; `None` once the pool is gone.
type SizeSource = Box<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

/// Which pool a `tollgate.pool.size` figure is about.
#[derive(Debug, Clone, Copy)]
pub enum Pool {
    Workers,
    NewcomerWorkers,
    Hashers,
}

impl Pool {
    fn as_str(self) -> &'static str {
        match self {
            Self::Workers => "workers",
            Self::NewcomerWorkers => "newcomer_workers",
            Self::Hashers => "hashers",
        }
    }
}

impl Metrics {
    /// Creates every instrument on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let gauge = |name: &'static str, description: &'static str| {
            meter.u64_gauge(name).with_description(description).build()
        };
        let sessions_held = Arc::new(AtomicI64::new(0));
        let pools: Arc<Mutex<Vec<(Pool, SizeSource)>>> = Arc::default();
        let pool_size = {
            let pools = pools.clone();
            meter
                .u64_observable_gauge("tollgate.pool.size")
                .with_description("Pool sizes: what the configuration asks for and what runs")
                .with_callback(move |observer| {
                    let pools = pools.lock().unwrap_or_else(PoisonError::into_inner);
                    for (pool, source) in pools.iter() {
                        let Some((target, actual)) = source() else {
                            continue;
                        };
                        for (kind, size) in [("target", target), ("actual", actual)] {
                            let labels = [
                                KeyValue::new("pool", pool.as_str()),
                                KeyValue::new("kind", kind),
                            ];
                            observer.observe(size as u64, &labels);
                        }
                    }
                })
                .build()
        };
        Self(Arc::new(Instruments {
            http_duration: seconds(
                "http.server.request.duration",
                "Duration of HTTP server requests",
                &LATENCY_BUCKETS,
            ),
            http_active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_description("HTTP server requests in flight")
                .build(),
            signins: counter("tollgate.auth.signins", "Sign-in attempts by outcome"),
            signups: counter("tollgate.auth.signups", "Sign-up attempts by outcome"),
            admin_actions: counter(
                "tollgate.admin.actions",
                "Changes operators made through the admin API, by action",
            ),
            hash_duration: seconds(
                "tollgate.auth.password_hash.duration",
                "Time the hasher pool spends on one bcrypt call",
                &LATENCY_BUCKETS,
            ),
            _sessions_active: {
                let held = sessions_held.clone();
                meter
                    .i64_observable_gauge("tollgate.sessions.active")
                    .with_description("Sessions held, live or lapsed but not yet swept")
                    .with_callback(move |observer| {
                        observer.observe(held.load(Ordering::Relaxed), &[]);
                    })
                    .build()
            },
            sessions_held,
            sessions_created: counter("tollgate.sessions.created", "Sessions opened"),
            sessions_reinflated: counter(
                "tollgate.sessions.reinflated",
                "Uses that pushed a session's idle deadline back",
            ),
            sessions_expired: counter(
                "tollgate.sessions.expired",
                "Sessions that lapsed, found at use or by the sweep",
            ),
            tasks_enqueued: counter("tollgate.tasks.enqueued", "Tasks accepted, by kind"),
            tasks_finished: counter(
                "tollgate.tasks.finished",
                "Attempts recorded, by kind and the state they left the task in",
            ),
            task_duration: seconds(
                "tollgate.tasks.duration",
                "Time a handler took over one attempt",
                &TASK_BUCKETS,
            ),
            task_wait: seconds(
                "tollgate.tasks.wait",
                "Time from a task falling due to its attempt starting",
                &TASK_BUCKETS,
            ),
            queue_pending: gauge("tollgate.queue.pending", "Tasks waiting, over all users"),
            users_with_pending: gauge(
                "tollgate.queue.users_with_pending",
                "Users with at least one task waiting",
            ),
            oldest_wait: meter
                .f64_gauge("tollgate.queue.oldest_wait")
                .with_unit("s")
                .with_description("How long the longest-waiting due task has waited")
                .build(),
            kind_running: gauge(
                "tollgate.queue.kind.running",
                "Tasks running, over every replica, of each kind with limits",
            ),
            kind_parked: gauge(
                "tollgate.queue.kind.parked",
                "Ready tasks set aside until their kind has room under its limits",
            ),
            workers_busy: gauge("tollgate.workers.busy", "Task workers running an attempt"),
            actor_restarts: counter(
                "tollgate.actors.restarts",
                "Actors restarted by their supervisor",
            ),
            fencing_rejections: counter(
                "tollgate.tasks.fencing_rejections",
                "Writes refused because the lease they named had been taken back",
            ),
            events: counter(
                "tollgate.events.published",
                "Domain events appended to the stream, or dropped, by outcome",
            ),
            _pool_size: pool_size,
            pools,
        }))
        .start_at_zero()
    }

    /// Counters of things that should not happen start at 0 rather than
    /// absent, so that a dashboard or an alert sees zero, not no data; the
    /// gauges start at 0 too, so that the very first scrape has every one
    /// (the worker pool's first reading replaces them at once).
    fn start_at_zero(self) -> Self {
        self.queue_depth(0, 0, 0.0);
        self.workers_busy(0);
        for actor in ACTORS {
            self.0
                .actor_restarts
                .add(0, &[KeyValue::new("actor", actor)]);
        }
        for operation in ["finish", "renew"] {
            let operation = KeyValue::new("operation", operation);
            self.0.fencing_rejections.add(0, &[operation]);
        }
        self
    }

    /// Instruments that record nothing, for code run outside a service.
    pub fn noop() -> Self {
        Self::new(&opentelemetry::metrics::noop::NoopMeterProvider::new().meter("tollgate"))
    }

    fn route(method: &str, route: &str) -> [KeyValue; 2] {
        [
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("http.route", route.to_owned()),
        ]
    }

    /// Shows every route's requests in flight, 0 until one comes.
    pub fn known_routes(&self, routes: &[(&str, &str)]) {
        for (method, route) in routes {
            self.0.http_active.add(0, &Self::route(method, route));
        }
    }

    pub fn request_started(&self, method: &str, route: &str) {
        self.0.http_active.add(1, &Self::route(method, route));
    }

    pub fn request_finished(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = Self::route(method, route);
        self.0.http_active.add(-1, &labels);
        let [method, route] = labels;
        let status = KeyValue::new("http.response.status_code", i64::from(status));
        self.0
            .http_duration
            .record(seconds, &[method, route, status]);
    }

    pub fn signin(&self, outcome: &'static str) {
        self.0.signins.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// An operator's change, counted by what it was and how many things it
    /// changed.
    pub fn admin_action(&self, action: &'static str, changed: u64) {
        self.0
            .admin_actions
            .add(changed, &[KeyValue::new("action", action)]);
    }

    pub fn signup(&self, outcome: &'static str) {
        self.0.signups.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    pub fn password_hashed(&self, operation: &'static str, seconds: f64) {
        let operation = KeyValue::new("operation", operation);
        self.0.hash_duration.record(seconds, &[operation]);
    }

    pub fn session_opened(&self) {
        self.0.sessions_created.add(1, &[]);
        self.sessions_held_by(1);
    }

    pub fn session_reinflated(&self) {
        self.0.sessions_reinflated.add(1, &[]);
    }

    /// `count` sessions that lapsed left the table.
    pub fn sessions_expired(&self, count: usize) {
        self.0.sessions_expired.add(count as u64, &[]);
        self.sessions_ended(count);
    }

    /// `count` sessions left the table (revoked or lapsed).
    pub fn sessions_ended(&self, count: usize) {
        self.sessions_held_by(-(count as i64));
    }

    /// Sessions held in the shared store, counted there: every replica
    /// reports the same total, whatever replicas opened them or are gone.
    pub fn sessions_counted(&self, held: usize) {
        let held = i64::try_from(held).unwrap_or(i64::MAX);
        self.0.sessions_held.store(held, Ordering::Relaxed);
    }

    fn sessions_held_by(&self, change: i64) {
        self.0.sessions_held.fetch_add(change, Ordering::Relaxed);
    }

    pub fn task_enqueued(&self, kind: &str) {
        let kind = KeyValue::new("kind", kind.to_owned());
        self.0.tasks_enqueued.add(1, &[kind]);
    }

    /// An attempt of a task of `kind` was recorded, leaving it `status`.
    pub fn task_finished(&self, kind: &str, status: TaskStatus, seconds: f64) {
        let kind = KeyValue::new("kind", kind.to_owned());
        let outcome = KeyValue::new("outcome", status.as_str());
        self.0
            .task_duration
            .record(seconds, std::slice::from_ref(&kind));
        self.0.tasks_finished.add(1, &[kind, outcome]);
    }

    /// An attempt of a task of `kind` started `seconds` after it fell due.
    pub fn task_started(&self, kind: &str, waited_seconds: f64) {
        let kind = KeyValue::new("kind", kind.to_owned());
        self.0.task_wait.record(waited_seconds.max(0.0), &[kind]);
    }

    pub fn queue_depth(&self, pending: u64, users_with_pending: u64, oldest_wait_seconds: f64) {
        self.0.queue_pending.record(pending, &[]);
        self.0.users_with_pending.record(users_with_pending, &[]);
        self.0.oldest_wait.record(oldest_wait_seconds, &[]);
    }

    /// The figures of each kind with limits (the configured kinds only,
    /// so the label stays bounded).
    pub fn kind_loads(&self, loads: &[KindLoad]) {
        for load in loads {
            let kind = [KeyValue::new("kind", load.kind.as_str().to_owned())];
            self.0.kind_running.record(load.running, &kind);
            self.0.kind_parked.record(load.parked, &kind);
        }
    }

    pub fn workers_busy(&self, busy: usize) {
        self.0.workers_busy.record(busy as u64, &[]);
    }

    /// `count` events reached the stream.
    pub fn events_written(&self, count: usize) {
        let outcome = KeyValue::new("outcome", "written");
        self.0.events.add(count as u64, &[outcome]);
    }

    /// `count` events were given up on.
    pub fn events_dropped(&self, count: usize) {
        let outcome = KeyValue::new("outcome", "dropped");
        self.0.events.add(count as u64, &[outcome]);
    }

    pub fn actor_restarted(&self, actor: &'static str) {
        self.0
            .actor_restarts
            .add(1, &[KeyValue::new("actor", actor)]);
    }

    /// A write under a lease that had been taken back was refused.
    pub fn fencing_rejected(&self, operation: &'static str) {
        let operation = KeyValue::new("operation", operation);
        self.0.fencing_rejections.add(1, &[operation]);
    }

    /// Reports `pool`'s sizes, as `sizes` reads them at each collection,
    /// for as long as it answers.
    pub fn observe_pool(
        &self,
        pool: Pool,
        sizes: impl Fn() -> Option<(usize, usize)> + Send + Sync + 'static,
    ) {
        let mut pools = self.0.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.push((pool, Box::new(sizes)));
    }
}
