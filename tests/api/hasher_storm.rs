//! bcrypt runs on the hasher pool only: a storm of sign-ins queues there
//! while every other route keeps answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, eventually, spawn_app_with};

const STORM: usize = 24;

#[actix_web::test]
async fn a_signin_storm_queues_on_the_hasher_pool_without_stalling_other_routes() {
    // One hasher thread at cost 10: each sign-in holds it for tens of
    // milliseconds, so the storm takes a second or more to drain.
    let app = spawn_app_with(|s| {
        s.auth.bcrypt_cost = 10;
        s.auth.hasher_threads = 1;
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
