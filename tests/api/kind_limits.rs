//! Limits per task kind (`[queue.kinds.<kind>]`) on two replicas of the
//! binary sharing Redis: a kind's `max_running` holds over both, a SIGHUP
//! that sets it to 0 pauses the kind and raising it resumes it in order,
//! and `max_per_second` spaces the kind's starts over both. What ran when
//! is read back from the tasks themselves (`started_at`, `finished_at`),
//! so nothing here samples.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Server, TempDir, TestRedis, TestSchema, as_env, eventually, production_env};

const PATIENCE: Duration = Duration::from_secs(60);
/// Far more than a call takes to reach Redis, far less than a task runs.
const STAMP_SKEW: chrono::TimeDelta = chrono::TimeDelta::milliseconds(20);

/// Two replicas sharing a schema and a key prefix, reading `config` (and
/// re-reading it on SIGHUP), each printing to its own file.
struct Deployment {
    servers: Vec<Server>,
    outputs: Vec<PathBuf>,
    config: PathBuf,
    _dir: TempDir,
    _schema: TestSchema,
    _redis: TestRedis,
}

impl Deployment {
    async fn start(kinds: &str) -> Self {
        let (dir, schema, redis) = (
            TempDir::new("kinds"),
            TestSchema::create().await,
            TestRedis::new(),
        );
        let config = dir.join("tollgate.toml");
        write_kinds(&config, kinds);
        let mut env = production_env(&schema, &redis);
        env.push(("TOLLGATE__QUEUE__WORKERS", "4".to_owned()));
        env.push(("TOLLGATE__QUEUE__POLL_INTERVAL_MS", "20".to_owned()));
        let env = as_env(&env);
        let config_arg = config.display().to_string();
        let args = ["--config", config_arg.as_str(), "serve"];
        let (mut servers, mut outputs) = (Vec::new(), Vec::new());
        // One at a time: the first migrates the schema the others find ready.
        for replica in 0..2 {
            let output = dir.join(format!("replica-{replica}.log"));
            servers.push(Server::start_with_output(&args, &env, Some(&output)).await);
            outputs.push(output);
        }
        Self {
            servers,
            outputs,
            config,
            _dir: dir,
            _schema: schema,
            _redis: redis,
        }
    }

    /// Writes new limits and has every replica re-read them; returns once
    /// each says it has.
    async fn reload(&self, kinds: &str) {
        write_kinds(&self.config, kinds);
        for (server, output) in self.servers.iter().zip(&self.outputs) {
            server.reload(output).await;
        }
    }

    /// Signs up `count` users, each on the next replica; answers their
    /// tokens.
    async fn users(&self, count: usize) -> Vec<String> {
        let mut tokens = Vec::new();
        for n in 0..count {
            let server = &self.servers[n % 2];
            let name = format!("sender-{n}");
            server.sign_up(&name).await;
            tokens.push(server.sign_in(&name).await.0);
        }
        tokens
    }

    /// Enqueues `task` for the user of `token`, through replica `n % 2`;
    /// answers its id.
    async fn enqueue(&self, n: usize, token: &str, task: &Value) -> String {
        let request = self.servers[n % 2].request(Method::POST, "/api/v1/tasks", Some(token));
        let response = request.json(task).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let task: Value = response.json().await.unwrap();
        task["id"].as_str().unwrap().to_owned()
    }

    async fn task(&self, token: &str, id: &str) -> Value {
        self.servers[0]
            .get_json(&format!("/api/v1/tasks/{id}"), token)
            .await
    }

    /// Waits until each of `ids` (a list per token) has succeeded; answers
    /// them all.
    async fn succeeded(&self, tokens: &[String], ids: &[Vec<String>]) -> Vec<Value> {
        let all = || async {
            let mut tasks = Vec::new();
            for (token, ids) in tokens.iter().zip(ids) {
                for id in ids {
                    tasks.push(self.task(token, id).await);
                }
            }
            tasks
        };
        let done = eventually(PATIENCE, || async {
            all().await.iter().all(|task| task["status"] == "succeeded")
        })
        .await;
        let tasks = all().await;
        assert!(done, "{tasks:?}");
        tasks
    }
}

fn write_kinds(path: &Path, kinds: &str) {
    std::fs::write(path, format!("[queue]\nnewcomer_workers = 1\n\n{kinds}")).unwrap();
}

fn time(task: &Value, field: &str) -> DateTime<Utc> {
    let text = task[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} of {task}"));
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// The most of `tasks` that were running at one moment, by their
/// `started_at` and `finished_at`. Each replica reads its clock before its
/// call reaches Redis, so a start may be stamped a little before the end
/// that made room for it: ends count from [`STAMP_SKEW`] earlier.
fn most_at_once(tasks: &[Value]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = tasks
        .iter()
        .flat_map(|task| {
            let end = time(task, "finished_at") - STAMP_SKEW;
            [(time(task, "started_at"), 1), (end, -1)]
        })
        .collect();
    // An end and a start at the same instant: the end comes first.
    edges.sort();
    let (mut running, mut most) = (0, 0);
    for (_, step) in edges {
        running += step;
        most = most.max(running);
    }
    most as usize
}

fn sleep_for(ms: u64) -> Value {
    json!({ "kind": "sleep", "payload": { "ms": ms } })
}

#[actix_web::test]
async fn max_running_2_holds_over_two_replicas_and_sighup_pauses_and_resumes_the_kind() {
    let limited = "[queue.kinds.sleep]\nmax_running = 2\n";
    let deployment = Deployment::start(limited).await;
    let tokens = deployment.users(3).await;
    // The first replica starts two long sleeps (its own enqueues wake its
    // workers at once)...
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(deployment.enqueue(0, &tokens[0], &sleep_for(600)).await);
    }
    let both_running = eventually(PATIENCE, || async {
        let mut running = 0;
        for id in &first {
            running += usize::from(deployment.task(&tokens[0], id).await["status"] == "running");
        }
        running == 2
    })
    .await;
    assert!(both_running);

    // ...then every user queues sleeps and an echo through the second,
    // whose 4 idle workers would start them all if the limit were its own.
    let sent = join_all(tokens.iter().enumerate().map(|(user, token)| {
        let deployment = &deployment;
        async move {
            let mut sleeps = Vec::new();
            for _ in 0..4 {
                sleeps.push(deployment.enqueue(1, token, &sleep_for(100)).await);
            }
            let echo = json!({ "kind": "echo", "payload": { "user": user } });
            (sleeps, deployment.enqueue(1, token, &echo).await)
        }
    }))
    .await;
    let (mut sleeps, echoes): (Vec<Vec<String>>, Vec<String>) = sent.into_iter().unzip();
    sleeps[0].extend(first);
    let echoes: Vec<Vec<String>> = echoes.into_iter().map(|id| vec![id]).collect();

    let echoed = deployment.succeeded(&tokens, &echoes).await;
    let slept = deployment.succeeded(&tokens, &sleeps).await;

    eprintln!(
        "{} sleeps on two replicas with 4 workers each: at most {} at once",
        slept.len(),
        most_at_once(&slept)
    );
    assert_eq!(
        most_at_once(&slept),
        2,
        "never more than 2, and the limit bound"
    );
    let last_sleep = slept.iter().map(|t| time(t, "started_at")).max().unwrap();
    for echo in &echoed {
        assert!(
            time(echo, "finished_at") < last_sleep,
            "an echo behind the sleeps did not wait for them all: {echo}"
        );
    }

    // Paused by a reload: the sleeps wait, the echoes behind them run.
    deployment
        .reload("[queue.kinds.sleep]\nmax_running = 0\n")
        .await;
    let mut paused = Vec::new();
    for (user, token) in tokens.iter().enumerate() {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(deployment.enqueue(user + n, token, &sleep_for(10)).await);
        }
        paused.push(ids);
    }
    let after: Vec<Vec<String>> = join_all(tokens.iter().enumerate().map(|(user, token)| {
        let echo = json!({ "kind": "echo", "payload": { "after": user } });
        let deployment = &deployment;
        async move { vec![deployment.enqueue(user, token, &echo).await] }
    }))
    .await;
    deployment.succeeded(&tokens, &after).await;
    for (token, ids) in tokens.iter().zip(&paused) {
        for id in ids {
            let task = deployment.task(token, id).await;
            assert_eq!(task["status"], "queued", "{task}");
        }
    }
    let parked_seen = eventually(PATIENCE, || async {
        let scrape = deployment.servers[1].metrics().await;
        scrape.value("tollgate_queue_kind_parked", &[("kind", "sleep")]) == Some(9.0)
    })
    .await;
    assert!(parked_seen, "the figures show the 9 parked sleeps");

    // Raised again: they run, each user's in the order they were queued.
    deployment.reload(limited).await;
    let resumed = deployment.succeeded(&tokens, &paused).await;
    assert!(most_at_once(&resumed) <= 2);
    for user in resumed.chunks(3) {
        let starts: Vec<DateTime<Utc>> = user.iter().map(|t| time(t, "started_at")).collect();
        assert!(starts.is_sorted(), "in order: {starts:?}");
    }
}

#[actix_web::test]
async fn max_per_second_5_holds_over_two_replicas_for_10_seconds() {
    let deployment = Deployment::start("[queue.kinds.echo]\nmax_per_second = 5\n").await;
    let tokens = deployment.users(3).await;
    let mut ids = vec![Vec::new(); 3];
    for n in 0..60 {
        let user = n % 3;
        let echo = json!({ "kind": "echo", "payload": { "n": n } });
        ids[user].push(deployment.enqueue(n, &tokens[user], &echo).await);
    }

    let ran = deployment.succeeded(&tokens, &ids).await;

    let mut starts: Vec<DateTime<Utc>> = ran.iter().map(|t| time(t, "started_at")).collect();
    starts.sort();
    // The most starts in any window of `length` (each window opening at
    // a start, where the most can be).
    let most_in = |length: chrono::TimeDelta| {
        starts
            .iter()
            .map(|from| {
                let within = |at: &&DateTime<Utc>| **at >= *from && **at < *from + length;
                starts.iter().filter(within).count()
            })
            .max()
            .unwrap()
    };
    let (one, ten) = (
        most_in(chrono::TimeDelta::seconds(1)),
        most_in(chrono::TimeDelta::seconds(10)),
    );
    let span = *starts.last().unwrap() - starts[0];
    eprintln!(
        "60 starts over two replicas in {:.2} s: at most {one} in any second, {ten} in any 10 s",
        span.as_seconds_f64()
    );
    assert!(one <= 5, "{one} starts in one second");
    assert!(ten <= 51, "{ten} starts in 10 s");
    assert!(
        span >= chrono::TimeDelta::seconds(11),
        "60 starts at 5 a second take 11 s at least, not {span}"
    );
}
