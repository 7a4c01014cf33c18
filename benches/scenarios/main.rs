//! `make bench`: every performance figure of Tollgate, each set against a
//! baseline measured in the same run on the same machine, because the
//! machines are shared and noisy and only ratios travel.
//!
//! Runs through `cargo bench --bench scenarios` (release build). HTTP load
//! comes from `wrk`, pinned to a core of its own with the service on the
//! others where the machine allows; the baselines pay the same price.
//! `BENCH_QUICK=1` runs every scenario briefly, as a smoke run.
//! `BENCH_ONLY=4,5` runs only those scenarios; `make soak` (the argument
//! `soak`) runs the soak instead, see `soak.rs`, and `make soak-production`
//! (`soak-production`) the soak with faults, see `soak_production.rs`. Prints a table and writes
//! `target/bench/results.json`.

mod figures;
mod load;
mod queue;
mod servers;
mod service;
mod sessions;
mod soak;
mod soak_production;
mod web;
mod wrk;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use figures::Figure;

/// How long and how large each scenario is.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub quick: bool,
    /// How long each load run lasts.
    pub window: Duration,
    /// Tasks preloaded for the one-user drain.
    pub one_user_tasks: usize,
    /// Users and tasks each for the many-user drain.
    pub users: usize,
    pub tasks_each: usize,
    /// The flooding user's tasks in the noisy-neighbour scenario.
    pub flood: usize,
    /// Sessions held for the memory figure.
    pub sessions: usize,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Self {
                quick,
                window: Duration::from_secs(2),
                one_user_tasks: 4_000,
                users: 100,
                tasks_each: 100,
                flood: 20_000,
                sessions: 100_000,
            }
        } else {
            Self {
                quick,
                window: Duration::from_secs(10),
                one_user_tasks: 30_000,
                users: 100,
                tasks_each: 500,
                flood: 100_000,
                sessions: 1_000_000,
            }
        }
    }
}

/// One scenario's figures, not yet measured.
type Scenario = Pin<Box<dyn Future<Output = Vec<Figure>>>>;

#[actix_web::main]
async fn main() {
    // `cargo test --all-targets` builds and starts this too, without
    // `--bench`: benchmarks are not tests, so it only says where it runs.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("benchmarks run with `make bench` (cargo bench --bench scenarios)");
        return;
    }
    // `make soak-production`: `cargo bench --bench scenarios -- soak-production`.
    if std::env::args().any(|arg| arg == "soak-production") {
        let held = soak_production::run().await;
        std::process::exit(if held { 0 } else { 1 });
    }
    // `make soak`: `cargo bench --bench scenarios -- soak`.
    if std::env::args().any(|arg| arg == "soak") {
        // Exits once the service is stopped, with the verdict.
        let swept = soak::run().await;
        std::process::exit(if swept { 0 } else { 1 });
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    eprintln!(
        "tollgate benchmarks ({}): {} cores",
        if plan.quick { "quick" } else { "full" },
        tollgate::config::threads_or_cores(0)
    );
    // `BENCH_ONLY=2,6` runs just those scenarios (2 includes 3, 4 includes
    // 4b); each HTTP scenario runs on both configurations.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let chosen = |n: &str| only.is_empty() || only.split(',').any(|o| o.trim() == n);
    use web::Config::{Embedded, Production};
    // Each scenario starts only when awaited: the ones not chosen never run.
    let scenarios: [(&str, Scenario); 10] = [
        ("1", Box::pin(web::sign_ins(plan, Embedded))),
        ("1", Box::pin(web::sign_ins(plan, Production))),
        ("2", Box::pin(web::requests(plan, Embedded))),
        ("2", Box::pin(web::requests(plan, Production))),
        ("2", Box::pin(web::eddsa_over_hs256(plan))),
        ("4", Box::pin(queue::drain(plan))),
        ("5", Box::pin(queue::noisy_neighbour(plan))),
        (
            "6",
            Box::pin(web::reads_during_a_sign_in_storm(plan, Embedded)),
        ),
        (
            "6",
            Box::pin(web::reads_during_a_sign_in_storm(plan, Production)),
        ),
        ("7", Box::pin(sessions::memory_and_validation(plan))),
    ];
    let mut all: Vec<Figure> = Vec::new();
    for (id, scenario) in scenarios {
        if chosen(id) {
            all.extend(scenario.await);
        }
    }
    figures::report(&all, plan, started.elapsed());
}
