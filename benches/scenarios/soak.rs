//! `make soak`: mixed traffic against the release binary on its embedded
//! default for a bounded time, sampling the service's resident memory and
//! live sessions as it goes; then quiet until every idle session has
//! lapsed, which the sweep must bring back to zero. Fails if it does not.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::load::http_client;
use crate::service::{PASSWORD, Service};

/// Clients sending traffic at once.
const CLIENTS: usize = 16;
/// Accounts they share: each sign-in opens another session on one.
const ACCOUNTS: usize = 50;
/// How often memory and sessions are sampled.
const EVERY: Duration = Duration::from_secs(5);

/// One sample of the service.
struct Sample {
    at: Duration,
    rss_mib: f64,
    sessions: f64,
}

/// The first sample of `name` in a Prometheus scrape (`name{labels}
/// value`, whatever the labels); NaN if there is none.
pub fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// How long the traffic of a soak lasts: `SOAK_SECS`, 300 by default, at
/// most 540.
pub fn soak_secs() -> u64 {
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
        .clamp(10, 540)
}

/// Answers whether the idle sessions were swept back to zero.
pub async fn run() -> bool {
    let seconds = soak_secs();
    // Finished tasks are kept a minute, not a day: what is measured is
    // whether memory settles while everything is kept as configured.
    let service = Service::in_memory(&[
        ("TOLLGATE__AUTH__BCRYPT_COST", "4"),
        ("TOLLGATE__QUEUE__RESULT_TTL_SECS", "60"),
        ("TOLLGATE__QUEUE__IDEMPOTENCY_TTL_SECS", "60"),
    ])
    .await;
    service.sign_up_many("soaker", ACCOUNTS).await;
    let names: Vec<String> = (0..ACCOUNTS).map(|n| format!("soaker-{n}")).collect();
    eprintln!("soak: {CLIENTS} clients for {seconds} s, then quiet until sessions lapse");

    let started = Instant::now();
    let mut samples = vec![sample(&service, started).await];
    let traffic = join_all((0..CLIENTS).map(|client| {
        let (service, names) = (&service, &names);
        async move {
            let mut requests = 0u64;
            let mut round = client;
            while started.elapsed() < Duration::from_secs(seconds) {
                requests += one_visit(service, &names[round % names.len()], round).await;
                round += CLIENTS;
            }
            requests
        }
    }));
    let sampling = async {
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(seconds) {
            tokio::time::sleep(EVERY).await;
            samples.push(sample(&service, started).await);
        }
        samples
    };
    let (requests, during) = futures_util::future::join(traffic, sampling).await;
    samples.extend(during);
    let requests: u64 = requests.into_iter().sum();

    // Idle sessions lapse 30 s after their last use; the sweep runs every
    // second. Allow a minute.
    let quiet = Instant::now();
    let mut last = sample(&service, started).await;
    while last.sessions > 0.0 && quiet.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(EVERY).await;
        last = sample(&service, started).await;
    }
    samples.push(last);
    report(&samples, requests, seconds)
}

/// A client's visit: sign in, use the session a few times, enqueue a task
/// and read it back, and sign out one visit in three (the rest stay idle
/// for the sweep). Answers the requests made.
async fn one_visit(service: &Service, name: &str, round: usize) -> u64 {
    let client = http_client();
    let credentials = json!({ "username": name, "password": PASSWORD });
    let signin = client
        .post(service.url("/api/v1/auth/signin"))
        .json(&credentials)
        .send()
        .await;
    let Ok(signin) = signin else { return 1 };
    if signin.status() != StatusCode::OK {
        return 1;
    }
    let grant: Value = signin.json().await.unwrap_or_default();
    let token = grant["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut requests = 1;
    for _ in 0..5 {
        let me = client
            .get(service.url("/api/v1/users/me"))
            .bearer_auth(&token)
            .send()
            .await;
        requests += 1;
        if me.is_err() {
            return requests;
        }
    }
    let task = json!({ "kind": "echo", "payload": { "round": round } });
    let enqueued = client
        .post(service.url("/api/v1/tasks"))
        .bearer_auth(&token)
        .json(&task)
        .send()
        .await;
    requests += 1;
    if let Ok(enqueued) = enqueued {
        let task: Value = enqueued.json().await.unwrap_or_default();
        if let Some(id) = task["id"].as_str() {
            let url = service.url(&format!("/api/v1/tasks/{id}"));
            let _ = client.get(url).bearer_auth(&token).send().await;
            requests += 1;
        }
    }
    if round.is_multiple_of(3) {
        let url = service.url("/api/v1/auth/signout");
        let _ = client.post(url).bearer_auth(&token).send().await;
        requests += 1;
    }
    requests
}

async fn sample(service: &Service, started: Instant) -> Sample {
    let scrape = http_client()
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = Sample {
        at: started.elapsed(),
        rss_mib: metric(&scrape, "process_resident_memory_bytes") / (1024.0 * 1024.0),
        sessions: metric(&scrape, "tollgate_sessions_active"),
    };
    eprintln!(
        "  {:>5.0} s  resident {:>7.1} MiB  sessions {:>7.0}",
        sample.at.as_secs_f64(),
        sample.rss_mib,
        sample.sessions
    );
    sample
}

fn report(samples: &[Sample], requests: u64, seconds: u64) -> bool {
    let first = &samples[0];
    let last = samples.last().unwrap();
    let peak = samples
        .iter()
        .max_by(|a, b| a.rss_mib.total_cmp(&b.rss_mib))
        .unwrap();
    // Plateau: the highest reading of the traffic's second half against
    // the highest of its first.
    let traffic: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at <= Duration::from_secs(seconds + 1))
        .collect();
    let half = traffic.len() / 2;
    let high = |part: &[&Sample]| part.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    println!(
        "\nsoak: {requests} requests in {seconds} s ({:.0}/s)",
        requests as f64 / seconds as f64
    );
    println!(
        "resident memory: start {:.1} MiB, peak {:.1} MiB (at {:.0} s), end {:.1} MiB",
        first.rss_mib,
        peak.rss_mib,
        peak.at.as_secs_f64(),
        last.rss_mib
    );
    println!(
        "highest in the traffic's first half {:.1} MiB, second half {:.1} MiB",
        high(&traffic[..half]),
        high(&traffic[half..])
    );
    println!("sessions active at the end: {}", last.sessions);
    if last.sessions != 0.0 {
        eprintln!("soak: idle sessions were not swept back to zero");
    }
    last.sessions == 0.0
}
