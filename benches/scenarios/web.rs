//! The HTTP scenarios, each run on the embedded default (everything in
//! memory) and on the production configuration (users in PostgreSQL,
//! sessions and tasks in Redis), driven by `wrk` from outside the process:
//! sign-ins against raw bcrypt on the service's cores; authenticated reads
//! and enqueues against the liveness probe; reads during a sign-in storm
//! against reads alone.

use std::time::{Duration, Instant};

use futures_util::future::join;
use reqwest::StatusCode;
use serde_json::json;
use tollgate::config::Settings;

use crate::Plan;
use crate::figures::{Figure, Goal};
use crate::load::{self, http_client};
use crate::service::{PASSWORD, Service, Stores};
use crate::wrk::{self, Cores, Request, WrkRun};

/// Concurrent sign-ins: enough to keep every hasher thread busy.
const SIGNING_IN: usize = 8;
/// `wrk`'s connections.
const CONNECTIONS: usize = 64;
/// Users the many-user enqueue acts for.
const ENQUEUING_USERS: usize = 100;
/// Sign-ins in flight count against the sign-in limits until they
/// succeed; the load here is one login's eight at once, and a hundred
/// users signing in from one address. Enqueue floods must not meet the
/// pending limit.
const BENCH_LIMITS: [(&str, &str); 3] = [
    ("TOLLGATE__RATE_LIMIT__SIGNIN_PER_MINUTE_PER_USER", "0"),
    ("TOLLGATE__RATE_LIMIT__SIGNIN_PER_MINUTE_PER_IP", "0"),
    ("TOLLGATE__QUEUE__MAX_PENDING_PER_USER", "10000000"),
];

/// Where the service keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    Embedded,
    Production,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Production => "production",
        }
    }

    /// The service in this configuration, and its stores to remove after.
    async fn start(self, env: &[(&str, &str)]) -> (Service, Option<Stores>) {
        match self {
            Self::Embedded => (Service::in_memory(env).await, None),
            Self::Production => {
                let stores = Stores::create("web").await;
                (Service::production(&stores, env).await, Some(stores))
            }
        }
    }
}

/// Names a figure `"{what} ({config})"`, leaked: figures are few and live
/// as long as the run.
fn named(what: &str, config: Config) -> &'static str {
    Box::leak(format!("{what} ({})", config.name()).into_boxed_str())
}

/// Runs `wrk` off the async thread. A request refused or failed stops the
/// bench: a figure counts only answers that did the work.
async fn wrk(service: &Service, path: &str, request: Request, window: Duration) -> WrkRun {
    let url = service.url(path);
    let run = tokio::task::spawn_blocking(move || wrk::run(&url, &request, CONNECTIONS, window))
        .await
        .unwrap();
    assert_eq!(run.failed, 0, "{path}: {}", run.summary());
    run
}

/// 1. Sign-ins per second at the configured bcrypt cost ↔ bcrypt checks
///    per second on the service's cores, done by this process.
pub async fn sign_ins(plan: Plan, config: Config) -> Vec<Figure> {
    let cost = Settings::embedded_default().auth.bcrypt_cost;
    let threads = Cores::split().for_service();
    let hashes = tokio::task::spawn_blocking(move || bcrypt_rate(cost, threads, plan.window))
        .await
        .unwrap();
    let (service, stores) = config.start(&BENCH_LIMITS).await;
    service.sign_up("signer").await;
    let signing_in = sign_in_load(&service, "signer", SIGNING_IN, plan.window).await;
    drop(service);
    remove(stores).await;
    vec![Figure::new(
        "1",
        named("sign-ins at the configured bcrypt cost", config),
        (signing_in.rate(), "/s"),
        ("bcrypt checks on the service's cores", hashes),
        Goal::RatioAtLeast { target: 0.9 },
        format!("cost {cost}, {threads} cores; {}", signing_in.summary()),
    )]
}

/// bcrypt checks per second on `threads` threads at `cost`.
fn bcrypt_rate(cost: u32, threads: usize, window: Duration) -> f64 {
    let hash = bcrypt::hash(PASSWORD, cost).unwrap();
    let start = Instant::now();
    let checks: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut checks = 0;
                    while start.elapsed() < window {
                        assert!(bcrypt::verify(PASSWORD, &hash).unwrap());
                        checks += 1;
                    }
                    checks
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    checks as f64 / start.elapsed().as_secs_f64()
}

/// Sign-ins by `concurrency` clients; bcrypt, not the client, bounds them.
async fn sign_in_load(
    service: &Service,
    name: &str,
    concurrency: usize,
    window: Duration,
) -> load::Load {
    let (client, url) = (http_client(), service.url("/api/v1/auth/signin"));
    let credentials = json!({ "username": name, "password": PASSWORD });
    load::run(concurrency, window, |_| {
        let request = client.post(&url).json(&credentials);
        load::answers(request, StatusCode::OK)
    })
    .await
}

/// 2. Authenticated reads (`/api/v1/auth/session`, `/api/v1/users/me`) and
/// 3. enqueues (one user; 100 users) per second ↔ `GET /health/live` per
///    second, on one service.
pub async fn requests(plan: Plan, config: Config) -> Vec<Figure> {
    // A hundred sign-ups are set-up here, not the figure.
    let cheap_hashes = ("TOLLGATE__AUTH__BCRYPT_COST", "4");
    let (service, stores) = config
        .start(&[BENCH_LIMITS.as_slice(), &[cheap_hashes]].concat())
        .await;
    service.sign_up_many("reader", 1).await;
    service.sign_up_many("enqueuer", ENQUEUING_USERS).await;
    let probe = || wrk(&service, "/health/live", Request::get(), plan.window);
    let task = json!({ "kind": "echo", "payload": { "n": 1 } });
    // (scenario, figure, path, method and body, users acting, goal)
    let runs = [
        (
            "2",
            "GET /api/v1/auth/session (verify + reinflate)",
            "/api/v1/auth/session",
            Request::get(),
            ("reader", 1),
            if config == Config::Embedded { 0.7 } else { 0.6 },
        ),
        (
            "2",
            "GET /api/v1/users/me",
            "/api/v1/users/me",
            Request::get(),
            ("reader", 1),
            0.5,
        ),
        (
            "3",
            "enqueue, one user",
            "/api/v1/tasks",
            Request::post_json(&task),
            ("enqueuer", 1),
            0.3,
        ),
        (
            "3",
            "enqueue, 100 users",
            "/api/v1/tasks",
            Request::post_json(&task),
            ("enqueuer", ENQUEUING_USERS),
            0.3,
        ),
    ];
    // Each route's baseline is the mean of the probes run just before and
    // just after it: on a shared machine the rate drifts within minutes.
    let mut figures = Vec::new();
    let mut before = probe().await;
    for (scenario, what, path, request, (name, users), target) in runs {
        // Fresh sessions: those of the sign-ups lapsed while others ran.
        let tokens = service.sign_in_many(name, users).await;
        let run = wrk(&service, path, request.with_tokens(&tokens), plan.window).await;
        let after = probe().await;
        let live = (before.requests_per_sec + after.requests_per_sec) / 2.0;
        figures.push(Figure::new(
            scenario,
            named(what, config),
            (run.requests_per_sec, "/s"),
            ("GET /health/live", live),
            Goal::RatioAtLeast { target },
            format!(
                "{CONNECTIONS} connections; {}; probes {} then {}",
                run.summary(),
                before.summary(),
                after.summary()
            ),
        ));
        before = after;
    }
    drop(service);
    remove(stores).await;
    figures
}

/// 2. Authenticated reads with tokens signed by EdDSA ↔ the same reads
///    with HS256 tokens, both on the production configuration, the HS256
///    run before and after the EdDSA one.
pub async fn eddsa_over_hs256(plan: Plan) -> Vec<Figure> {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let key = dir.join("eddsa.pem");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let pem = tollgate::auth::keys::generate(tollgate::config::JwtAlgorithm::EdDSA);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .expect("the key file opens");
        file.write_all(pem.as_bytes()).expect("the key is written");
    }
    let key_path = key.display().to_string();
    let eddsa = [
        ("TOLLGATE__AUTH__JWT_ALGORITHM", "EdDSA"),
        ("TOLLGATE__AUTH__JWT_KEY_FILE", key_path.as_str()),
    ];
    let before = session_reads(plan, &[]).await;
    let signed = session_reads(plan, &eddsa).await;
    let after = session_reads(plan, &[]).await;
    let _ = std::fs::remove_dir_all(&dir);
    vec![Figure::new(
        "2",
        "GET /api/v1/auth/session with EdDSA tokens (production)",
        (signed.requests_per_sec, "/s"),
        (
            "the same with HS256 tokens",
            (before.requests_per_sec + after.requests_per_sec) / 2.0,
        ),
        Goal::RatioAtLeast { target: 0.9 },
        format!(
            "{CONNECTIONS} connections; {}; HS256 {} then {}",
            signed.summary(),
            before.summary(),
            after.summary()
        ),
    )]
}

/// `GET /api/v1/auth/session` with one user's token on a production
/// service signing as `signing` says.
async fn session_reads(plan: Plan, signing: &[(&str, &str)]) -> WrkRun {
    let cheap_hashes = ("TOLLGATE__AUTH__BCRYPT_COST", "4");
    let env = [BENCH_LIMITS.as_slice(), &[cheap_hashes], signing].concat();
    let (service, stores) = Config::Production.start(&env).await;
    service.sign_up_many("reader", 1).await;
    let tokens = service.sign_in_many("reader", 1).await;
    let path = "/api/v1/auth/session";
    let run = wrk(
        &service,
        path,
        Request::get().with_tokens(&tokens),
        plan.window,
    )
    .await;
    drop(service);
    remove(stores).await;
    run
}

/// 6. The p99 of authenticated reads while others sign in as fast as they
///    can ↔ the same reads alone.
pub async fn reads_during_a_sign_in_storm(plan: Plan, config: Config) -> Vec<Figure> {
    let (service, stores) = config.start(&BENCH_LIMITS).await;
    let reader = vec![service.sign_up("reader").await];
    service.sign_up("stormer").await;
    let reads = || Request::get().with_tokens(&reader);
    let calm = wrk(&service, "/api/v1/auth/session", reads(), plan.window).await;
    let (stormy, storm) = join(
        wrk(&service, "/api/v1/auth/session", reads(), plan.window),
        sign_in_load(&service, "stormer", SIGNING_IN, plan.window),
    )
    .await;
    drop(service);
    remove(stores).await;
    vec![Figure::new(
        "6",
        named("p99 of authenticated GET during a sign-in storm", config),
        (stormy.p99_ms, "ms"),
        ("p99 with no storm", calm.p99_ms),
        Goal::RatioAtMost { target: 2.0 },
        format!(
            "calm {}; stormy {}; storm {}",
            calm.summary(),
            stormy.summary(),
            storm.summary()
        ),
    )]
}

async fn remove(stores: Option<Stores>) {
    if let Some(stores) = stores {
        stores.remove().await;
    }
}
