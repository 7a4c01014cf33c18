//! The load generator: a fixed number of workers, each sending one request
//! after another on its own keep-alive connection, for a fixed time, every
//! latency recorded in an HDR histogram.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hdrhistogram::Histogram;

const MINUTE_NS: u64 = 60_000_000_000;

/// What one load run did.
#[derive(Debug, Clone)]
pub struct Load {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed (an error or an unexpected status).
    pub failed: u64,
    pub elapsed: Duration,
    latencies: Histogram<u64>,
}

impl Load {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0.5, 0.99, ...) in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1e6
    }

    pub fn summary(&self) -> String {
        format!(
            "{:.0}/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, {} failed",
            self.rate(),
            self.latency_ms(0.5),
            self.latency_ms(0.95),
            self.latency_ms(0.99),
            self.failed
        )
    }
}

/// Runs `concurrency` workers for `duration`; worker `i` calls `call(i)`
/// again and again. A call answers whether it succeeded; its latency is
/// recorded either way.
pub async fn run<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Load
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let call = &call;
    let start = Instant::now();
    let deadline = start + duration;
    let workers = (0..concurrency).map(|worker| {
        async move {
            // Nanoseconds, up to a minute, three significant figures.
            let mut latencies = Histogram::<u64>::new_with_bounds(1, MINUTE_NS, 3).unwrap();
            let (mut ok, mut failed) = (0, 0);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let succeeded = call(worker).await;
                let nanos = sent.elapsed().as_nanos() as u64;
                latencies.saturating_record(nanos.max(1));
                if succeeded {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed, latencies)
        }
    });
    let results = join_all(workers).await;
    let elapsed = start.elapsed();
    let mut load = Load {
        ok: 0,
        failed: 0,
        elapsed,
        latencies: Histogram::new_with_bounds(1, MINUTE_NS, 3).unwrap(),
    };
    for (ok, failed, latencies) in results {
        load.ok += ok;
        load.failed += failed;
        load.latencies.add(latencies).unwrap();
    }
    load
}

/// A client with one keep-alive connection per worker in its pool.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap()
}

/// Sends `request`; whether it was answered with `expected`.
pub async fn answers(request: reqwest::RequestBuilder, expected: reqwest::StatusCode) -> bool {
    let sent = request.send().await;
    sent.is_ok_and(|response| response.status() == expected)
}
