//! Many replicas on one PostgreSQL and one Redis, and Tollgate on a Redis
//! Cluster: three real `tollgate` processes on loopback ports, and a
//! three-master cluster of `redis-server`s the test starts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::{join, join_all};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::config::{RedisSettings, SessionStoreKind};
use tollgate::domain::{NewTask, TaskFilter, TaskId, TaskKind, TaskRequest, UserId};

use crate::helpers::{
    JWT_SECRET, PrivateRedis, RedisCluster, Server, TcpProxy, TestRedis, TestSchema, as_env,
    eventually, millis, production_env, spawn_app_with,
};
use crate::{queue_store, session_store};

const PATIENCE: Duration = Duration::from_secs(120);
const WORKERS: usize = 4;
/// The workers kept for newcomers, on top of `WORKERS`.
const NEWCOMER_WORKERS: usize = 1;

/// Three replicas sharing `schema` and `redis`'s prefix, sessions and
/// tasks in Redis.
async fn replicas(schema: &TestSchema, redis: &TestRedis) -> Vec<Server> {
    let (workers, newcomers) = (WORKERS.to_string(), NEWCOMER_WORKERS.to_string());
    let mut env = production_env(schema, redis);
    env.extend([
        ("TOLLGATE__QUEUE__WORKERS", workers),
        ("TOLLGATE__QUEUE__NEWCOMER_WORKERS", newcomers),
        ("TOLLGATE__QUEUE__VISIBILITY_TIMEOUT_SECS", "2".to_owned()),
        ("TOLLGATE__QUEUE__POLL_INTERVAL_MS", "50".to_owned()),
    ]);
    let env = as_env(&env);
    // One at a time: the first migrates the schema the others find ready.
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start(&["serve"], &env).await);
    }
    servers
}

async fn session_on(server: &Server, token: &str) -> reqwest::Response {
    let request = server.request(Method::GET, "/api/v1/auth/session", Some(token));
    request.send().await.unwrap()
}

#[actix_web::test]
async fn a_token_from_one_replica_is_reinflated_on_another_and_revoked_on_a_third() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let servers = replicas(&schema, &redis).await;
    let [one, two, three] = &servers[..] else {
        unreachable!()
    };
    one.sign_up("roamer").await;
    let (token, _) = one.sign_in("roamer").await;
    let opened: Value = session_on(one, &token).await.json().await.unwrap();
    // The first replica served that use from its own copy; it writes it
    // to Redis within a tenth of a second.
    let key = format!(
        "{{{}}}:session:{}",
        redis.prefix(),
        opened["id"].as_str().unwrap()
    );
    let written = eventually(PATIENCE, || async {
        redis.hget(&key, "refreshes").await.as_deref() == Some("1")
    })
    .await;
    assert!(written, "the first replica's use reached Redis");
    let before_second_use = chrono::Utc::now().timestamp_millis();

    let used = session_on(two, &token).await;

    assert_eq!(used.status(), StatusCode::OK);
    let used: Value = used.json().await.unwrap();
    assert_eq!(used["id"], opened["id"]);
    assert_eq!(used["refresh_count"], 2, "one use on each of two replicas");
    // Reinflated by the second replica: 30 s from its use, not the first's.
    assert_eq!(
        millis(&used, "expires_at"),
        millis(&used, "last_seen_at") + 30_000
    );
    assert!(millis(&used, "last_seen_at") >= before_second_use);
    assert!(millis(&used, "last_seen_at") >= millis(&opened, "last_seen_at"));

    let signed_out = three.request(Method::POST, "/api/v1/auth/signout", Some(&token));
    assert_eq!(
        signed_out.send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    for server in [one, two, three] {
        let refused = session_on(server, &token).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_token");
    }
}

/// Waits until `replicas` replicas listen for revocations on the Redis at
/// `url` under `prefix`: from then on each serves uses from its own copies.
async fn listening(url: &str, prefix: &str, replicas: u64) {
    let channel = format!("{{{prefix}}}:sessions-revoked");
    let all = eventually(PATIENCE, || async {
        let numsub = std::process::Command::new("redis-cli")
            .args(["-u", url, "PUBSUB", "NUMSUB", &channel])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&numsub.stdout);
        text.lines()
            .nth(1)
            .and_then(|n| n.trim().parse::<u64>().ok())
            == Some(replicas)
    })
    .await;
    assert!(all, "{replicas} replicas subscribed to {channel}");
}

#[actix_web::test]
async fn a_token_signed_out_on_one_replica_is_refused_by_another_within_10_ms() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let servers = replicas(&schema, &redis).await;
    let [one, two, _] = &servers[..] else {
        unreachable!()
    };
    listening(&crate::helpers::redis_url(), redis.prefix(), 3).await;
    one.sign_up("quick-exit").await;
    let (token, _) = one.sign_in("quick-exit").await;
    // The second replica now serves the token from its own copy.
    for _ in 0..3 {
        assert_eq!(session_on(two, &token).await.status(), StatusCode::OK);
    }

    let signed_out = one.request(Method::POST, "/api/v1/auth/signout", Some(&token));
    assert_eq!(
        signed_out.send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_millis(10)).await;

    assert_eq!(
        session_on(two, &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn after_redis_restarts_no_replica_accepts_a_session_revoked_while_it_was_cut_off() {
    let redis = PrivateRedis::start().await;
    let schema = TestSchema::create().await;
    let proxy = TcpProxy::to(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let prefix = TestRedis::new_prefix();
    let replica = |redis_url: String| {
        let env = [
            ("TOLLGATE__DATABASE__URL", schema.url()),
            ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
            ("TOLLGATE__SESSION__STORE", "redis".to_owned()),
            ("TOLLGATE__REDIS__URL", redis_url),
            ("TOLLGATE__REDIS__KEY_PREFIX", prefix.clone()),
            ("TOLLGATE__REDIS__TIMEOUT_SECS", "1".to_owned()),
        ];
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Server::start(&["serve"], &env).await
        }
    };
    let direct = replica(redis.url()).await;
    let behind_proxy = replica(format!("redis://{}", proxy.address)).await;
    listening(&redis.url(), &prefix, 2).await;
    direct.sign_up("cut-off").await;
    let (token, _) = direct.sign_in("cut-off").await;
    assert_eq!(
        session_on(&behind_proxy, &token).await.status(),
        StatusCode::OK
    );
    let mut redis = redis;

    // Redis restarts (its data kept); the second replica stays cut off
    // while the first signs the token out.
    redis.stop();
    redis.resume().await;
    proxy.cut();
    let signed_out = eventually(PATIENCE, || async {
        let request = direct.request(Method::POST, "/api/v1/auth/signout", Some(&token));
        request.send().await.unwrap().status() == StatusCode::NO_CONTENT
    })
    .await;
    assert!(signed_out, "the first replica signs out once Redis is back");
    assert_ne!(
        session_on(&behind_proxy, &token).await.status(),
        StatusCode::OK,
        "refused while cut off"
    );
    proxy.restore();
    // Both listen again: the second serves from its copies once more.
    listening(&redis.url(), &prefix, 2).await;

    // Never accepted again: refused while reconnecting (503), then as the
    // revoked token it is (401).
    let (mut answers, deadline) = (Vec::new(), std::time::Instant::now() + PATIENCE);
    while answers.last() != Some(&StatusCode::UNAUTHORIZED) {
        assert!(std::time::Instant::now() < deadline, "{answers:?}");
        answers.push(session_on(&behind_proxy, &token).await.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!answers.contains(&StatusCode::OK), "{answers:?}");
}

#[actix_web::test]
async fn three_replicas_finish_5000_tasks_of_50_users_through_one_being_killed() {
    finish_5000_tasks_through_a_kill(&TestRedis::new()).await;
}

#[actix_web::test]
async fn three_replicas_on_a_cluster_in_12_partitions_lose_nothing_through_a_kill() {
    let cluster = RedisCluster::start(3).await;
    finish_5000_tasks_through_a_kill(&TestRedis::on(cluster.url()).partitioned(12)).await;
}

/// Three replicas on `redis` take 5000 tasks of 50 users, one of them
/// SIGKILLed while it runs some: every task succeeds once as its user
/// sees it, re-run at most as many times as the killed replica had
/// workers.
async fn finish_5000_tasks_through_a_kill(redis: &TestRedis) {
    const USERS: usize = 50;
    const TASKS_EACH: usize = 100;
    const VICTIM: usize = 1;
    let schema = TestSchema::create().await;
    let servers = replicas(&schema, redis).await;
    let (mut tokens, mut users) = (Vec::new(), Vec::new());
    for user in 0..USERS {
        let server = &servers[user % 3];
        let name = format!("worker-bee-{user}");
        server.sign_up(&name).await;
        let (token, id) = server.sign_in(&name).await;
        tokens.push(token);
        users.push(UserId(id.parse().unwrap()));
    }
    let task = json!({ "kind": "sleep", "payload": { "ms": 10 }, "max_attempts": 5 });
    let (enqueued, killed) = (AtomicUsize::new(0), AtomicBool::new(false));
    let started = std::time::Instant::now();

    // Clients spread their tasks over the replicas, as a load balancer
    // would, and send each to the next replica when one stops answering,
    // with the same Idempotency-Key.
    let clients = join_all(tokens.iter().enumerate().map(|(user, token)| {
        let (servers, task, enqueued, killed) = (&servers, &task, &enqueued, &killed);
        async move {
            let mut ids = Vec::new();
            for n in 0..TASKS_EACH {
                let key = format!("bee-{user}-task-{n}");
                let mut replica = (user + n) % 3;
                let response = loop {
                    if replica == VICTIM && killed.load(Ordering::SeqCst) {
                        replica = (replica + 1) % 3;
                    }
                    let request = servers[replica]
                        .request(Method::POST, "/api/v1/tasks", Some(token))
                        .header("Idempotency-Key", &key);
                    match request.json(task).send().await {
                        Ok(response) => break response,
                        Err(err) if replica == VICTIM => {
                            assert!(killed.load(Ordering::SeqCst), "{err}");
                            replica = (replica + 1) % 3;
                        }
                        Err(err) => panic!("replica {replica} failed: {err}"),
                    }
                };
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                let task: Value = response.json().await.unwrap();
                ids.push(task["id"].as_str().unwrap().to_owned());
                enqueued.fetch_add(1, Ordering::SeqCst);
            }
            ids
        }
    }));
    // Kill the second replica mid-stream: with a fifth of the tasks in and
    // while it is running some.
    let victim = async {
        let ripe = eventually(PATIENCE, || async {
            enqueued.load(Ordering::SeqCst) >= USERS * TASKS_EACH / 5
                && busy(&servers[VICTIM]).await > 0.0
        })
        .await;
        // Flagged first, so a client refused from here on knows why.
        killed.store(true, Ordering::SeqCst);
        servers[VICTIM].signal("KILL");
        ripe
    };
    let (enqueued_ids, killed_while_busy) = join(clients, victim).await;
    assert!(killed_while_busy, "the second replica never ran a task");
    let ids: HashSet<String> = enqueued_ids.into_iter().flatten().collect();
    assert_eq!(
        ids.len(),
        USERS * TASKS_EACH,
        "one task per key, however sent"
    );

    let store = redis.queue_store(tollgate::clock::Clock::system()).await;
    let all_succeeded = || async {
        for user in &users {
            if store.counts(*user).await.unwrap().succeeded != TASKS_EACH as u64 {
                return false;
            }
        }
        true
    };
    // Counting every user's tasks is the dearer question: asked only once
    // nothing waits.
    let drained = eventually(PATIENCE, || async {
        store.stats().await.unwrap().waiting == 0 && all_succeeded().await
    })
    .await;
    assert!(drained, "{:?}", store.stats().await.unwrap());
    let mut reruns = 0;
    for (user, token) in tokens.iter().enumerate() {
        let server = &servers[if user % 2 == 0 { 0 } else { 2 }];
        let counts = server.get_json("/api/v1/queue", token).await;
        assert_eq!(counts["succeeded"], TASKS_EACH, "user {user}: {counts}");
        let listed = server
            .get_json(&format!("/api/v1/tasks?limit={TASKS_EACH}"), token)
            .await;
        for task in listed["items"].as_array().unwrap() {
            assert!(ids.contains(task["id"].as_str().unwrap()));
            reruns += task["attempts"].as_u64().unwrap() - 1;
        }
    }
    let held = WORKERS + NEWCOMER_WORKERS;
    assert!(
        reruns <= held as u64,
        "{reruns} re-runs; the killed replica held at most {held} tasks"
    );
    eprintln!(
        "{} tasks of {USERS} users enqueued and finished in {:.1?} by 3 replicas \
         (one killed mid-run) on {} in {} partitions; {reruns} re-runs",
        ids.len(),
        started.elapsed(),
        redis.redis_url(),
        redis.partitions
    );
}

/// Workers running a task on `server`.
async fn busy(server: &Server) -> f64 {
    let scrape = server.metrics().await;
    scrape.value("tollgate_workers_busy", &[]).unwrap_or(0.0)
}

#[actix_web::test]
async fn the_queue_and_session_suites_pass_on_a_three_master_redis_cluster() {
    let cluster = RedisCluster::start(3).await;
    let url = cluster.url();

    for partitions in [1, 7] {
        let on_cluster = || TestRedis::on(url.clone()).partitioned(partitions);
        let queue_checks =
            queue_store::every_check(|| queue_store::redis_store_at(on_cluster())).await;
        let session_checks =
            session_store::every_check(|| session_store::redis_sessions_at(on_cluster())).await;

        assert_eq!(queue_checks, queue_store::CHECKS, "{partitions} partitions");
        assert_eq!(
            session_checks,
            session_store::CHECKS,
            "{partitions} partitions"
        );
    }
    queue_store::partitioned::every_check_on(async || {
        queue_store::redis_store_at(TestRedis::on(url.clone()).partitioned(7)).await
    })
    .await;
}

#[actix_web::test]
async fn the_service_runs_on_a_cluster_named_by_its_nodes() {
    let cluster = RedisCluster::start(3).await;
    let nodes = cluster.nodes();
    let app = spawn_app_with(|s| {
        s.session.store = SessionStoreKind::Redis;
        s.redis = Some(RedisSettings {
            url: None,
            cluster_nodes: nodes.iter().map(|node| node.parse().unwrap()).collect(),
            ..TestRedis::settings(&TestRedis::new_prefix())
        });
    })
    .await;
    let user = app.new_user("clustered").await;

    let task = app
        .enqueued(
            &user.token,
            &json!({ "kind": "echo", "payload": { "n": 7 } }),
        )
        .await;
    let finished = app
        .finished_task(&user.token, task["id"].as_str().unwrap(), PATIENCE)
        .await;

    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["result"], json!({ "n": 7 }));
    let before: Value = app.session(&user.token).await.json().await.unwrap();
    let after: Value = app.session(&user.token).await.json().await.unwrap();
    let uses = |s: &Value| s["refresh_count"].as_u64().unwrap();
    assert_eq!(uses(&after), uses(&before) + 1, "{before} {after}");
    let ready: Value = app
        .get("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["sessions"]["store"], "redis");
    assert_eq!(ready["checks"]["tasks"]["status"], "up");
}

/// Script calls each node of `cluster` has served since its figures were
/// last reset (`EVALSHA`, and `EVAL` for a script loaded again).
fn script_calls(cluster: &RedisCluster) -> Vec<u64> {
    cluster
        .ports
        .iter()
        .map(|port| {
            let info = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "INFO", "commandstats"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&info.stdout)
                .lines()
                .filter(|line| {
                    line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
                })
                .filter_map(|line| {
                    let calls = line.split("calls=").nth(1)?.split(',').next()?;
                    calls.parse::<u64>().ok()
                })
                .sum()
        })
        .collect()
}

/// Jain's fairness index of `shares`: 1 when all are equal, 1/n when one
/// has everything.
fn jain(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|share| share * share).sum();
    sum * sum / (shares.len() as f64 * squares)
}

#[actix_web::test]
async fn a_queue_in_12_partitions_spreads_over_three_masters_and_stays_fair() {
    const USERS: usize = 300;
    const TASKS_EACH: usize = 100;
    let cluster = RedisCluster::start(3).await;
    let (schema, redis) = (
        TestSchema::create().await,
        TestRedis::on(cluster.url()).partitioned(12),
    );
    let store = redis.queue_store(tollgate::clock::Clock::system()).await;
    let users: Vec<UserId> = (0..USERS).map(|_| UserId::new()).collect();
    for user in &users {
        let tasks = (0..TASKS_EACH)
            .map(|n| {
                let request = TaskRequest {
                    kind: TaskKind::parse("echo").unwrap(),
                    payload: json!({ "n": n }),
                    max_attempts: 3,
                    delay: Duration::ZERO,
                    trace_parent: None,
                };
                let new = NewTask {
                    id: TaskId::new(),
                    user_id: *user,
                    created_at: chrono::Utc::now(),
                    request,
                };
                (new, None)
            })
            .collect();
        store.enqueue_many(tasks).await.unwrap();
    }
    for port in &cluster.ports {
        let reset = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "CONFIG", "RESETSTAT"])
            .output()
            .unwrap();
        assert!(reset.status.success());
    }

    // Two replicas drain it; the script calls are counted from here.
    let started = std::time::Instant::now();
    let mut env = production_env(&schema, &redis);
    env.push(("TOLLGATE__QUEUE__WORKERS", "8".to_owned()));
    let env = as_env(&env);
    let _servers = [
        Server::start(&["serve"], &env).await,
        Server::start(&["serve"], &env).await,
    ];
    // Asked twice a second, so that asking adds few calls of its own.
    while store.stats().await.unwrap().waiting > 0 {
        assert!(started.elapsed() < PATIENCE, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let calls = script_calls(&cluster);
    let mut finished_at: Vec<Vec<i64>> = Vec::new();
    for user in &users {
        let filter = TaskFilter {
            user: Some(*user),
            ..TaskFilter::default()
        };
        let done = eventually(PATIENCE, || async {
            let page = store.scan(&filter, None, TASKS_EACH).await.unwrap();
            page.items.iter().all(|task| task.finished_at.is_some())
        })
        .await;
        assert!(done, "user {user}'s tasks all finished");
        let page = store.scan(&filter, None, TASKS_EACH).await.unwrap();
        assert_eq!(page.items.len(), TASKS_EACH);
        finished_at.push(
            page.items
                .iter()
                .map(|task| task.finished_at.unwrap().timestamp_millis())
                .collect(),
        );
    }
    let took = started.elapsed();

    let total: u64 = calls.iter().sum();
    let busiest = *calls.iter().max().unwrap() as f64 / total as f64;
    let mut every: Vec<i64> = finished_at.iter().flatten().copied().collect();
    every.sort_unstable();
    let half_time = every[every.len() / 2 - 1];
    let by_half: Vec<f64> = finished_at
        .iter()
        .map(|times| times.iter().filter(|&&at| at <= half_time).count() as f64)
        .collect();
    let fairness = jain(&by_half);
    eprintln!(
        "{} tasks of {USERS} users drained in {took:.1?} by 2 replicas on 3 masters in 12 \
         partitions: script calls per master {calls:?} (busiest {:.1} %, {:.2} calls a task); \
         Jain's index at half time {fairness:.4} (fewest {}, most {} of {TASKS_EACH})",
        USERS * TASKS_EACH,
        busiest * 100.0,
        total as f64 / (USERS * TASKS_EACH) as f64,
        by_half.iter().copied().fold(f64::INFINITY, f64::min),
        by_half.iter().copied().fold(0.0, f64::max),
    );
    assert!(busiest <= 0.45, "{calls:?}");
    assert!(fairness >= 0.95, "{by_half:?}");
}

#[actix_web::test]
async fn a_replica_reports_the_sessions_in_redis_whichever_replica_opened_them() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let mut env = production_env(&schema, &redis);
    env.push(("TOLLGATE__SESSION__IDLE_TTL_SECS", "10".to_owned()));
    let env = as_env(&env);
    let mut opener = Server::start(&["serve"], &env).await;
    opener.sign_up("opener").await;
    for _ in 0..3 {
        opener.sign_in("opener").await;
    }
    // Four sessions: the sign-up's and three sign-ins'.
    opener.kill();
    let survivor = Server::start(&["serve"], &env).await;
    let active = || async {
        let scrape = survivor.metrics().await;
        scrape.value("tollgate_sessions_active", &[])
    };

    let counted = eventually(PATIENCE, || async { active().await == Some(4.0) }).await;
    assert!(counted, "{:?}", active().await);
    // They lapse and the survivor sweeps them: none left, not minus four.
    let swept = eventually(PATIENCE, || async { active().await == Some(0.0) }).await;
    assert!(swept, "{:?}", active().await);
}
