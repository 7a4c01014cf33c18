//! The HTTP scenarios on the embedded default (everything in memory):
//! sign-ins against raw bcrypt, authenticated reads against the liveness
//! probe, and reads during a sign-in storm against reads alone.

use std::time::{Duration, Instant};

use futures_util::future::join;
use reqwest::StatusCode;
use serde_json::json;
use tollgate::config::{Settings, threads_or_cores};

use crate::Plan;
use crate::figures::{Figure, Goal};
use crate::load::{self, http_client};
use crate::service::{PASSWORD, Service};

/// Concurrent sign-ins: enough to keep every hasher thread busy.
const SIGNING_IN: usize = 8;
/// Concurrent readers.
const READERS: usize = 32;
/// Sign-ins in flight count against the per-login limit until they
/// succeed; the load here is one login's eight at once.
const UNLIMITED_SIGN_INS: (&str, &str) = ("TOLLGATE__RATE_LIMIT__SIGNIN_PER_MINUTE_PER_USER", "0");

/// 1. Sign-ins per second at the configured bcrypt cost ↔ bcrypt checks
///    per second on every core, done by this process.
pub async fn sign_ins(plan: Plan) -> Vec<Figure> {
    let cost = Settings::embedded_default().auth.bcrypt_cost;
    let hashes = tokio::task::spawn_blocking(move || bcrypt_rate(cost, plan.window))
        .await
        .unwrap();
    let service = Service::in_memory(&[UNLIMITED_SIGN_INS]).await;
    service.sign_up("signer").await;
    let signing_in = sign_in_load(&service, "signer", SIGNING_IN, plan.window).await;
    vec![Figure::new(
        "1",
        "sign-ins at the configured bcrypt cost",
        (signing_in.rate(), "/s"),
        ("bcrypt checks on all cores", hashes),
        Goal::RatioAtLeast { target: 0.9 },
        format!("cost {cost}; {}", signing_in.summary()),
    )]
}

/// bcrypt checks per second on every core at `cost`.
fn bcrypt_rate(cost: u32, window: Duration) -> f64 {
    let hash = bcrypt::hash(PASSWORD, cost).unwrap();
    let start = Instant::now();
    let checks: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..threads_or_cores(0))
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

/// `GET /api/v1/auth/session` (verify the token, reinflate the session)
/// with `token`, from `concurrency` clients.
async fn session_reads(
    service: &Service,
    token: &str,
    concurrency: usize,
    window: Duration,
) -> load::Load {
    let (client, url) = (http_client(), service.url("/api/v1/auth/session"));
    load::run(concurrency, window, |_| {
        let request = client.get(&url).bearer_auth(token);
        load::answers(request, StatusCode::OK)
    })
    .await
}

/// 2. Authenticated reads per second ↔ `GET /health/live` per second.
pub async fn authenticated_reads(plan: Plan) -> Vec<Figure> {
    let service = Service::in_memory(&[UNLIMITED_SIGN_INS]).await;
    let token = service.sign_up("reader").await;
    let (client, live) = (http_client(), service.url("/health/live"));
    let probes = load::run(READERS, plan.window, |_| {
        let request = client.get(&live);
        load::answers(request, StatusCode::OK)
    })
    .await;
    let reads = session_reads(&service, &token, READERS, plan.window).await;
    vec![Figure::new(
        "2",
        "authenticated GET (verify + reinflate)",
        (reads.rate(), "/s"),
        ("GET /health/live", probes.rate()),
        Goal::RatioAtLeast { target: 0.7 },
        format!("reads {}; probes {}", reads.summary(), probes.summary()),
    )]
}

/// 6. The p99 of authenticated reads while others sign in as fast as they
///    can ↔ the same reads alone.
pub async fn reads_during_a_sign_in_storm(plan: Plan) -> Vec<Figure> {
    let service = Service::in_memory(&[UNLIMITED_SIGN_INS]).await;
    let token = service.sign_up("reader").await;
    service.sign_up("stormer").await;
    let calm = session_reads(&service, &token, READERS, plan.window).await;
    let (stormy, storm) = join(
        session_reads(&service, &token, READERS, plan.window),
        sign_in_load(&service, "stormer", SIGNING_IN, plan.window),
    )
    .await;
    vec![Figure::new(
        "6",
        "p99 of authenticated GET during a sign-in storm",
        (stormy.latency_ms(0.99), "ms"),
        ("p99 with no storm", calm.latency_ms(0.99)),
        Goal::RatioAtMost { target: 2.0 },
        format!(
            "calm {}; stormy {}; storm {}",
            calm.summary(),
            stormy.summary(),
            storm.summary()
        ),
    )]
}
