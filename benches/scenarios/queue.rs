//! The queue scenarios, on PostgreSQL and Redis: enqueue against raw Redis
//! round trips, the workers' own rate draining preloaded queues (and how
//! fairly and how soon every user is served), and a noisy neighbour.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate::domain::{NewTask, TaskId, TaskKind, TaskQuery, TaskRequest, TaskStatus, UserId};
use tollgate::storage::QueueStore;

use crate::Plan;
use crate::figures::{Figure, Goal};
use crate::load::{self, http_client};
use crate::service::{Service, Stores};

/// Workers draining the preloaded queues, and round trips in their
/// baseline.
const WORKERS: usize = 32;
/// Quiet users in the noisy-neighbour scenario, one task a second each.
const QUIET_USERS: usize = 50;
/// Sign-ups here are set-up, not the figure: the cheapest bcrypt cost.
const CHEAP_HASHES: (&str, &str) = ("TOLLGATE__AUTH__BCRYPT_COST", "4");
const PATIENCE: Duration = Duration::from_secs(600);

/// Raw Redis round trips per second from this process.
async fn round_trips(stores: &Stores, concurrency: usize, window: Duration) -> load::Load {
    let key = format!("{}:round-trips", stores.redis.prefix());
    load::run(concurrency, window, |_| stores.round_trip(&key)).await
}

/// Preloads `count` tasks of `kind` for `user` straight into the store,
/// as fast as Redis takes them.
async fn preload(store: &dyn QueueStore, user: UserId, count: usize, kind: &str, payload: Value) {
    let kind = TaskKind::parse(kind).unwrap();
    let enqueues = (0..count).map(|_| {
        let task = NewTask {
            id: TaskId::new(),
            user_id: user,
            created_at: Utc::now(),
            request: TaskRequest {
                kind: kind.clone(),
                payload: payload.clone(),
                max_attempts: 1,
                delay: Duration::ZERO,
                trace_parent: None,
            },
        };
        store.enqueue(task, None)
    });
    let mut enqueued = futures_util::stream::iter(enqueues).buffer_unordered(64);
    while let Some(result) = enqueued.next().await {
        result.expect("preloading a task");
    }
}

/// Every task of `user`'s, all pages.
async fn tasks_of(store: &dyn QueueStore, user: UserId) -> Vec<tollgate::domain::Task> {
    let (mut all, mut before) = (Vec::new(), None);
    loop {
        let query = TaskQuery {
            status: None,
            before,
            limit: 1000,
        };
        let page = store.list(user, query).await.unwrap();
        all.extend(page.items);
        match page.next {
            Some(next) => before = Some(next),
            None => return all,
        }
    }
}

/// Waits until every one of `users`' `each` tasks has succeeded.
async fn wait_until_all_succeeded(store: &dyn QueueStore, users: &[UserId], each: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "the workers did not finish");
        if store.stats().await.unwrap().waiting == 0 {
            let counts = join_all(users.iter().map(|u| store.counts(*u))).await;
            if counts.into_iter().all(|c| c.unwrap().succeeded == each) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When one task started and finished.
type Run = (DateTime<Utc>, DateTime<Utc>);

/// What the tasks' own records say of a drain.
struct Drained {
    tasks: usize,
    /// Lua script calls Redis ran during the drain, by `INFO commandstats`.
    script_calls: u64,
    /// From the first start to the last finish.
    span: Duration,
    /// Jain's fairness index of the tasks each user had finished by half
    /// time: 1 when all had the same, 1/n when one had all.
    fairness: f64,
    /// The longest any user waited, from the first start anywhere, for
    /// their own first task to start.
    worst_first_wait: Duration,
}

impl Drained {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.span.as_secs_f64()
    }
}

/// Preloads `each` no-op tasks for every one of `users` users, one user
/// after another (so a FIFO queue would serve them in that order), into a
/// queue in `partitions` partitions, then starts the service and lets its
/// workers drain them.
async fn drain_preloaded(users: usize, each: usize, partitions: usize) -> Drained {
    let stores = Stores::create("drain").await;
    let store = stores.queue(partitions).await;
    let ids: Vec<UserId> = (0..users).map(|_| UserId::new()).collect();
    for user in &ids {
        preload(&*store, *user, each, "echo", Value::Null).await;
    }
    let (workers, partitions) = (WORKERS.to_string(), partitions.to_string());
    let calls_before = stores.script_calls();
    let service = Service::production(
        &stores,
        &[
            CHEAP_HASHES,
            ("TOLLGATE__QUEUE__WORKERS", workers.as_str()),
            ("TOLLGATE__QUEUE__POLL_INTERVAL_MS", "10"),
            ("TOLLGATE__QUEUE__PARTITIONS", partitions.as_str()),
        ],
    )
    .await;
    wait_until_all_succeeded(&*store, &ids, each as u64).await;
    drop(service);
    let script_calls = stores.script_calls() - calls_before;
    let mut runs: HashMap<UserId, Vec<Run>> = HashMap::new();
    for user in &ids {
        for task in tasks_of(&*store, *user).await {
            assert_eq!(task.status, TaskStatus::Succeeded);
            let times = (task.started_at.unwrap(), task.finished_at.unwrap());
            runs.entry(*user).or_default().push(times);
        }
    }
    stores.remove().await;

    let all = || runs.values().flatten();
    let first_start = all().map(|(s, _)| *s).min().unwrap();
    let last_finish = all().map(|(_, f)| *f).max().unwrap();
    let half_time = first_start + (last_finish - first_start) / 2;
    let finished_by_half: Vec<f64> = runs
        .values()
        .map(|r| r.iter().filter(|(_, f)| *f <= half_time).count() as f64)
        .collect();
    let worst_first_wait = runs
        .values()
        .map(|r| r.iter().map(|(s, _)| *s).min().unwrap() - first_start)
        .max()
        .unwrap();
    Drained {
        tasks: users * each,
        script_calls,
        span: (last_finish - first_start).to_std().unwrap(),
        fairness: jain(&finished_by_half),
        worst_first_wait: worst_first_wait.to_std().unwrap(),
    }
}

/// Jain's fairness index: (Σx)² / (n·Σx²).
fn jain(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (shares.len() as f64 * squares)
}

/// Raw round trips per second measured just before and just after a
/// drain, averaged: on a shared machine a baseline taken minutes apart
/// can be off by half.
async fn round_trips_around(
    window: Duration,
    drain: impl Future<Output = Drained>,
) -> (Drained, f64) {
    let stores = Stores::create("round_trips").await;
    let before = round_trips(&stores, WORKERS, window).await.rate();
    let drained = drain.await;
    let after = round_trips(&stores, WORKERS, window).await.rate();
    stores.remove().await;
    (drained, (before + after) / 2.0)
}

/// 4. No-op tasks per second drained from preloaded queues, one user and
///    many, and many in 12 partitions on the same one Redis (what
///    partitions cost where there is one core to spread over) ↔ raw Redis
///    round trips at the workers' concurrency, measured around each drain;
///    Jain's index over the many; 4b. the worst wait for a user's first
///    task ↔ what a FIFO queue would have made the last user wait.
pub async fn drain(plan: Plan) -> Vec<Figure> {
    let (one, one_baseline) =
        round_trips_around(plan.window, drain_preloaded(1, plan.one_user_tasks, 1)).await;
    let (many, many_baseline) =
        round_trips_around(plan.window, drain_preloaded(plan.users, plan.tasks_each, 1)).await;
    let (parted, parted_baseline) = round_trips_around(
        plan.window,
        drain_preloaded(plan.users, plan.tasks_each, PARTITIONS),
    )
    .await;
    // A FIFO queue at the same rate reaches the last user's first task
    // only after everyone else's tasks.
    let fifo_wait = ((plan.users - 1) * plan.tasks_each) as f64 / many.rate();
    vec![
        drain_figure("no-op tasks drained, 1 user", &one, one_baseline),
        drain_figure("no-op tasks drained, 100 users", &many, many_baseline),
        drain_figure(
            "no-op tasks drained, 100 users, 12 partitions on one Redis",
            &parted,
            parted_baseline,
        ),
        calls_figure("Redis script calls per task, 1 user", &one),
        calls_figure("Redis script calls per task, 100 users", &many),
        calls_figure(
            "Redis script calls per task, 100 users, 12 partitions",
            &parted,
        ),
        fairness_figure("Jain's index over 100 users at half time", &many),
        fairness_figure(
            "Jain's index over 100 users at half time, 12 partitions",
            &parted,
        ),
        Figure::new(
            "4b",
            "worst wait for a user's first task",
            (many.worst_first_wait.as_secs_f64() * 1000.0, "ms"),
            ("a FIFO queue's", fifo_wait * 1000.0),
            Goal::ValueAtMost { target: 50.0 },
            format!("{} users × {} tasks", plan.users, plan.tasks_each),
        ),
    ]
}

/// Partitions of the partitioned drain and noisy-neighbour runs.
const PARTITIONS: usize = 12;

/// How evenly the users of a drain were served by half time.
fn fairness_figure(name: &'static str, drained: &Drained) -> Figure {
    Figure::new(
        "4",
        name,
        (drained.fairness, ""),
        ("perfectly fair", 1.0),
        Goal::ValueAtLeast { target: 0.95 },
        String::new(),
    )
}

/// A drain's rate ↔ what Redis does when asked nothing but round trips.
fn drain_figure(name: &'static str, drained: &Drained, round_trips: f64) -> Figure {
    Figure::new(
        "4",
        name,
        (drained.rate(), "/s"),
        ("raw Redis round trips", round_trips),
        Goal::RatioAtLeast { target: 0.15 },
        format!(
            "{} tasks in {:.2?}, {WORKERS} workers",
            drained.tasks, drained.span
        ),
    )
}

/// Lua script calls per task: each costs Redis its one core's time.
fn calls_figure(name: &'static str, drained: &Drained) -> Figure {
    Figure::new(
        "4",
        name,
        (drained.script_calls as f64 / drained.tasks as f64, ""),
        ("one call per task", 1.0),
        Goal::ValueAtMost { target: 1.0 },
        format!(
            "{} calls for {} tasks (INFO commandstats)",
            drained.script_calls, drained.tasks
        ),
    )
}

/// 5. Quiet users' p95 wait (enqueue to start) while one user floods the
///    queue ↔ the same with no flood: on the default settings (every
///    worker open to one user, two more kept for newcomers), with no
///    newcomers' workers but `max_running_per_user` keeping two of the
///    eight workers for everyone else, and on the defaults with the queue
///    in 12 partitions (the quiet users mostly in others than the
///    flooder's), where the goal is the wait itself: within 50 ms.
pub async fn noisy_neighbour(plan: Plan) -> Vec<Figure> {
    let defaults = Neighbours {
        max_running: 0,
        newcomer_workers: None,
        partitions: 1,
    };
    let capped = Neighbours {
        max_running: NEIGHBOUR_WORKERS - 2,
        newcomer_workers: Some(0),
        partitions: 1,
    };
    let partitioned = Neighbours {
        partitions: PARTITIONS,
        ..defaults
    };
    vec![
        neighbours(plan, "quiet users' p95 wait during a flood", defaults).await,
        neighbours(
            plan,
            "the same, max_running_per_user = workers − 2, no newcomers' workers",
            capped,
        )
        .await,
        neighbours(
            plan,
            "the same on the defaults, queue.partitions = 12",
            partitioned,
        )
        .await,
    ]
}

/// The settings a noisy-neighbour run varies (`None`: the default).
#[derive(Clone, Copy)]
struct Neighbours {
    max_running: usize,
    newcomer_workers: Option<usize>,
    partitions: usize,
}

/// The longest a quiet user's task may wait to start during a flood with
/// the queue in partitions.
const PARTITIONED_WAIT_MS: f64 = 50.0;

/// Workers in the noisy-neighbour scenario (the default).
const NEIGHBOUR_WORKERS: usize = 8;

async fn neighbours(plan: Plan, name: &'static str, settings: Neighbours) -> Figure {
    let stores = Stores::create("neighbours").await;
    let store = stores.queue(settings.partitions).await;
    let workers = NEIGHBOUR_WORKERS.to_string();
    let max_running = settings.max_running.to_string();
    let newcomers = settings.newcomer_workers.map(|n| n.to_string());
    let partitions = settings.partitions.to_string();
    let mut env = vec![
        CHEAP_HASHES,
        ("TOLLGATE__QUEUE__WORKERS", workers.as_str()),
        (
            "TOLLGATE__QUEUE__MAX_RUNNING_PER_USER",
            max_running.as_str(),
        ),
        ("TOLLGATE__QUEUE__PARTITIONS", partitions.as_str()),
    ];
    if let Some(newcomers) = &newcomers {
        env.push(("TOLLGATE__QUEUE__NEWCOMER_WORKERS", newcomers.as_str()));
    }
    let service = Service::production(&stores, &env).await;
    let newcomers = newcomers.unwrap_or_else(|| "the default number".into());
    let tokens = service.sign_up_many("quiet", QUIET_USERS).await;
    let window = plan.window.max(Duration::from_secs(5));

    let calm = quiet_waits(&service, &tokens, window).await;
    let flooder = UserId::new();
    preload(&*store, flooder, plan.flood, "sleep", json!({ "ms": 5 })).await;
    let flooded = quiet_waits(&service, &tokens, window).await;
    let left = store.counts(flooder).await.unwrap().queued;
    drop(service);
    stores.remove().await;
    let goal = match settings.partitions {
        1 => Goal::RatioAtMost { target: 1.5 },
        _ => Goal::ValueAtMost {
            target: PARTITIONED_WAIT_MS,
        },
    };
    Figure::new(
        "5",
        name,
        (p95(&flooded), "ms"),
        ("p95 with no flood", p95(&calm)),
        goal,
        format!(
            "{QUIET_USERS} quiet users, one task/s each for {window:?}; flood of {} \
             (5 ms each), {left} still waiting at the end; {workers} workers and \
             {newcomers} for newcomers, max_running_per_user {max_running}, \
             {partitions} partition(s)",
            plan.flood
        ),
    )
}

fn p95(waits: &[f64]) -> f64 {
    let mut sorted = waits.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)]
}

/// Each quiet user enqueues one echo task a second for `window`; answers
/// every task's wait from enqueue to start, in milliseconds.
async fn quiet_waits(service: &Service, tokens: &[String], window: Duration) -> Vec<f64> {
    let client = http_client();
    let ticks = window.as_secs();
    let users = tokens.iter().enumerate().map(|(n, token)| {
        let client = &client;
        async move {
            // Spread over the second, so they do not all come at once.
            tokio::time::sleep(Duration::from_millis(n as u64 * 1000 / QUIET_USERS as u64)).await;
            let mut ids = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for _ in 0..ticks {
                tick.tick().await;
                let enqueue = client.post(service.url("/api/v1/tasks")).bearer_auth(token);
                let task = json!({ "kind": "echo", "payload": "quiet" });
                let answer: Value = enqueue
                    .json(&task)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                ids.push(answer["id"].as_str().expect("enqueued").to_owned());
            }
            let mut waits = Vec::new();
            for id in ids {
                waits.push(wait_of(client, service, token, &id).await);
            }
            waits
        }
    });
    join_all(users).await.into_iter().flatten().collect()
}

/// How long the task waited to start, once it has finished, in ms.
async fn wait_of(client: &reqwest::Client, service: &Service, token: &str, id: &str) -> f64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let url = service.url(&format!("/api/v1/tasks/{id}"));
        let task: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if task["status"] == "succeeded" {
            let at =
                |field: &str| DateTime::parse_from_rfc3339(task[field].as_str().unwrap()).unwrap();
            return (at("started_at") - at("created_at"))
                .num_microseconds()
                .unwrap() as f64
                / 1000.0;
        }
        assert!(Instant::now() < deadline, "a quiet task never ran: {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
