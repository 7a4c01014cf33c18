//! bcrypt runs on the hasher pool only: a storm of sign-ins queues there
//! while every other route keeps answering, and a flood of sign-ups from
//! many addresses is held to each address's limit and waits behind the
//! sign-ins of users who have an account.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use futures_util::future::join_all;

use crate::helpers::{PASSWORD, eventually, spawn_app_with};

const STORM: usize = 24;

#[actix_web::test]
async fn a_signin_storm_queues_on_the_hasher_pool_without_stalling_other_routes() {
    // One hasher thread at cost 10: each sign-in holds it for tens of
    // milliseconds, so the storm takes a second or more to drain.
    let app = spawn_app_with(|s| {
        s.auth.bcrypt_cost = 10;
        s.auth.hasher_threads = 1;
        // Time enough for the whole storm even on a loaded machine: none of
        // it may be refused as impossible to finish in time.
        s.auth.hasher_timeout_secs = 120;
        // Sign-ins in flight count against the per-login limit until they
        // succeed; this storm is one login's 24 at once.
        s.rate_limit.signin_per_minute_per_user = 0;
    })
    .await;
    let user = app.new_user("bystander").await;

    let finished = Arc::new(AtomicUsize::new(0));
    let storm: Vec<_> = (0..STORM)
        .map(|_| {
            let request = app
                .post("/api/v1/auth/signin")
                .json(&json!({ "username": "bystander", "password": PASSWORD }));
            let finished = finished.clone();
            actix_web::rt::spawn(async move {
                let status = request.send().await.unwrap().status();
                finished.fetch_add(1, Ordering::SeqCst);
                status
            })
        })
        .collect();
    // The pool is working through the storm once the first sign-in is out.
    let started = eventually(Duration::from_secs(60), || async {
        finished.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(started);

    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let probe = std::time::Instant::now();
        let live = app.get("/health/live").send().await.unwrap();
        assert_eq!(live.status(), StatusCode::OK);
        assert_eq!(app.me(&user.token).await.status(), StatusCode::OK);
        slowest = slowest.max(probe.elapsed());
    }
    let finished_meanwhile = finished.load(Ordering::SeqCst);

    // Twenty requests went through while most of the storm still queued.
    assert!(
        finished_meanwhile <= STORM / 2,
        "{finished_meanwhile} of {STORM} sign-ins finished while 20 other requests were answered"
    );
    // A stall behind the hasher would last as long as the storm's rest;
    // answering takes milliseconds. The bound is loose for noisy machines.
    assert!(
        slowest < Duration::from_secs(1),
        "a probe pair took {slowest:?}"
    );
    for signin in storm {
        assert_eq!(signin.await.unwrap(), StatusCode::OK);
    }
}

#[actix_web::test]
async fn signins_that_wait_past_the_hasher_timeout_get_a_503() {
    // One hasher thread, cost 15 (seconds a hash) and a one-second bound.
    // The user's stored hash is cost 4, so checking it is instant, but the
    // first sign-in then queues a rehash at cost 15 that holds the thread.
    let app = spawn_app_with(|s| {
        s.auth.bcrypt_cost = 15;
        s.auth.hasher_threads = 1;
        s.auth.hasher_timeout_secs = 1;
    })
    .await;
    let user = app.new_user_with_hash_cost("patient", 4).await;

    let first = app.sign_in(&user, PASSWORD).await;
    let queued = app.sign_in(&user, PASSWORD).await;

    assert_eq!(first.status(), StatusCode::OK);
    crate::helpers::problem(
        queued,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
}

/// Timed: run one at a time, after the rest (see the Makefile), so that
/// other tests' load does not decide the outcome.
mod timing {
    use super::*;

    /// Flooding addresses, 127.0.0.2 to 127.0.0.21 (all of 127/8 is loopback).
    const FLOODERS: u8 = 20;
    const FLOOD: Duration = Duration::from_secs(20);

    /// The 95th percentile of `times`.
    fn p95(mut times: Vec<Duration>) -> Duration {
        times.sort();
        times[(times.len() * 95).div_ceil(100) - 1]
    }

    #[actix_web::test]
    async fn a_sign_up_flood_from_many_addresses_leaves_sign_ins_their_speed() {
        const COST: u32 = 10;
        let app = spawn_app_with(|s| {
            s.auth.bcrypt_cost = COST;
            s.rate_limit.signup_per_minute_per_ip = 10;
            // The regular user's sign-ins in flight count until they succeed;
            // a stall would otherwise show as 429s rather than as time.
            s.rate_limit.signin_per_minute_per_user = 0;
            s.rate_limit.signin_per_minute_per_ip = 0;
        })
        .await;
        let user = app.new_user("regular").await;
        let sign_in = || async {
            let started = std::time::Instant::now();
            let response = app.sign_in(&user.username, PASSWORD).await;
            assert_eq!(response.status(), StatusCode::OK);
            started.elapsed()
        };
        let mut quiet = Vec::new();
        for _ in 0..20 {
            quiet.push(sign_in().await);
        }

        // The hasher's capacity: its threads over the time of one hash.
        let hash_time = tokio::task::spawn_blocking(|| {
            let started = std::time::Instant::now();
            bcrypt::hash(PASSWORD, COST).unwrap();
            started.elapsed()
        })
        .await
        .unwrap();
        let capacity = 2.0 / hash_time.as_secs_f64();
        // Three times that, shared by the flooding addresses.
        let pause = Duration::from_secs_f64(f64::from(FLOODERS) / (3.0 * capacity));
        let flooders = (0..FLOODERS).map(|n| {
            let source = std::net::IpAddr::from([127, 0, 0, n + 2]);
            let client = reqwest::Client::builder()
                .no_proxy()
                .local_address(source)
                .build()
                .unwrap();
            let url = app.url("/api/v1/auth/signup");
            async move {
                let mut answers = Vec::new();
                let started = std::time::Instant::now();
                let mut sent = 0u32;
                while started.elapsed() < FLOOD {
                    let body =
                        json!({ "username": format!("flood-{n}-{sent}"), "password": PASSWORD });
                    answers.push(actix_web::rt::spawn(client.post(&url).json(&body).send()));
                    sent += 1;
                    tokio::time::sleep(pause).await;
                }
                let mut statuses = Vec::new();
                for answer in answers {
                    statuses.push(answer.await.unwrap().unwrap().status());
                }
                (source, statuses)
            }
        });
        // A sign-in every 100 ms whether or not the last has been answered,
        // so that a stall shows in every sign-in sent during it.
        let regular = async {
            let mut sign_ins = Vec::new();
            let started = std::time::Instant::now();
            let body = json!({ "username": user.username, "password": PASSWORD });
            while started.elapsed() < FLOOD {
                let request = app.post("/api/v1/auth/signin").json(&body);
                sign_ins.push(actix_web::rt::spawn(async move {
                    let sent = std::time::Instant::now();
                    let response = request.send().await.unwrap();
                    (response.status(), sent.elapsed())
                }));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut times = Vec::new();
            for sign_in in sign_ins {
                let (status, took) = sign_in.await.unwrap();
                assert_eq!(status, StatusCode::OK);
                times.push(took);
            }
            times
        };
        let (flooded, floods) = tokio::join!(regular, join_all(flooders));

        for (source, statuses) in floods {
            let count = |status| statuses.iter().filter(|s| **s == status).count();
            assert!(
                count(StatusCode::CREATED) <= 10,
                "{source} signed up {} users",
                count(StatusCode::CREATED)
            );
            assert!(
                count(StatusCode::TOO_MANY_REQUESTS) > 0,
                "{source} was never refused"
            );
            assert!(
                statuses
                    .iter()
                    .all(|s| !s.is_server_error() || *s == StatusCode::SERVICE_UNAVAILABLE),
                "{source}: {statuses:?}"
            );
        }
        let (quiet, flooded) = (p95(quiet), p95(flooded));
        eprintln!(
            "sign-in p95: quiet {quiet:?}, during the flood {flooded:?}; one hash {hash_time:?}"
        );
        // Ahead of every sign-up, a sign-in still waits for a hash already
        // under way to finish: at worst one more hash than when quiet
        // (half again for the scheduling of a loaded machine). Behind the
        // queued sign-ups, it would wait seconds.
        let bound = quiet + hash_time * 3 / 2;
        assert!(
            flooded <= bound,
            "sign-in p95 went from {quiet:?} to {flooded:?} during the flood (bound {bound:?})"
        );
    }

    #[actix_web::test]
    async fn sign_ins_that_could_not_finish_in_time_are_refused_at_once_with_retry_after() {
        // One hasher thread at cost 12 (a quarter second or more a check)
        // and one second to finish: of eight sign-ins at once, those with
        // more than a few ahead of them cannot make it.
        const TIMEOUT: Duration = Duration::from_secs(1);
        let app = spawn_app_with(|s| {
            s.auth.bcrypt_cost = 12;
            s.auth.hasher_threads = 1;
            s.auth.hasher_timeout_secs = TIMEOUT.as_secs();
            s.rate_limit.signin_per_minute_per_user = 0;
        })
        .await;
        let user = app.new_user("punctual").await;
        // The pool learns how long a check takes.
        assert_eq!(
            app.sign_in(&user.username, PASSWORD).await.status(),
            StatusCode::OK
        );

        let rush = (0..8).map(|_| async {
            let sent = std::time::Instant::now();
            let answer = app.sign_in(&user.username, PASSWORD).await;
            let retry_after = answer.headers().get("retry-after").cloned();
            (answer.status(), retry_after, sent.elapsed())
        });
        let answers = join_all(rush).await;

        // Refused at once, saying when to come back; a sign-in that merely
        // waited out its time would answer 503 only after the timeout, and
        // without `Retry-After`. (One admitted on a slow estimate may still
        // do that, so not every 503 is held to it.)
        let refused_at_once = answers.iter().any(|(status, retry_after, took)| {
            *status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some() && *took < TIMEOUT
        });
        assert!(refused_at_once, "{answers:?}");
        assert!(
            answers.iter().any(|(status, ..)| *status == StatusCode::OK),
            "{answers:?}"
        );
    }
}
