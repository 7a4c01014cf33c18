//! `make soak-production`: the configuration operators deploy (users in
//! PostgreSQL, sessions and tasks in Redis, two replicas of the release
//! binary) under `make soak`'s mixed traffic plus floods of tasks from a few
//! users, for `SOAK_SECS` (300; at most 540). At set times Redis is
//! killed with SIGKILL and started again on its append-only file, then
//! PostgreSQL is restarted, then one replica is killed with SIGKILL and
//! started again. Every five seconds it samples
//! each replica's resident memory and live sessions, Redis's memory and
//! keys, the replicas' PostgreSQL connections and the answers by status.
//! Then it waits for idle sessions to lapse and finished tasks to expire,
//! and checks what must hold (see [`verdicts`]); it fails if any does not.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::load::http_client;
use crate::servers::{OwnPostgres, OwnRedis};
use crate::service::{JWT_SECRET, PASSWORD, Service};
use crate::soak::{metric, soak_secs};

/// Clients of the mixed traffic, and the accounts they share.
const CLIENTS: usize = 16;
const ACCOUNTS: usize = 50;
/// Users who each queue a burst of tasks every few seconds.
const FLOODERS: usize = 3;
const BURST: usize = 40;
const BURST_EVERY: Duration = Duration::from_secs(3);
/// Each replica's workers, and those kept for newcomers.
const WORKERS: usize = 8;
const NEWCOMER_WORKERS: usize = 2;
/// How often everything is sampled.
const EVERY: Duration = Duration::from_secs(5);
/// Finished tasks are kept this long (not a day), so that the soak can see
/// Redis give their memory back.
const RESULT_TTL_SECS: u64 = 60;
/// How long after a sign-out the other replica is asked: ten times what
/// a revocation takes to reach it (`scale_out.rs` shows within 10 ms).
const REVOCATION_REACHES: Duration = Duration::from_millis(100);
/// Longest a fault may keep the service from answering once the part is
/// back.
const RECOVERY: Duration = Duration::from_secs(5);

/// The two replicas, as a load balancer sees them: a request a replica
/// cannot take (no connection) goes to the other.
struct Replicas {
    services: Mutex<Vec<Service>>,
    env: Vec<(String, String)>,
}

impl Replicas {
    async fn start(env: Vec<(String, String)>) -> Self {
        let mut services = Vec::new();
        for _ in 0..2 {
            services.push(Service::configured(&as_env(&env)).await);
        }
        Self {
            services: Mutex::new(services),
            env,
        }
    }

    fn url(&self, replica: usize, path: &str) -> String {
        self.services.lock().unwrap()[replica].url(path)
    }

    /// Kills replica `replica` (SIGKILL) and starts another in its place.
    async fn kill_and_restart(&self, replica: usize) {
        self.services.lock().unwrap()[replica].kill();
        let fresh = Service::configured(&as_env(&self.env)).await;
        self.services.lock().unwrap()[replica] = fresh;
    }
}

fn as_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// What the traffic saw, for the checks at the end.
#[derive(Default)]
struct Ledger {
    /// Answers by second of the run and status (0: no answer at all).
    answers: Mutex<BTreeMap<(u64, u16), u64>>,
    /// Tasks answered 202: owner, id, second of the run.
    acknowledged: Mutex<Vec<(String, String, u64)>>,
    /// Users answered 201.
    signed_up: Mutex<Vec<String>>,
    /// Tokens whose sign-out was answered 204, with the second of the run.
    revoked: Mutex<Vec<(String, u64)>>,
    /// Of those, how many were tried again (on the other replica at once,
    /// and on either a few seconds later), and those accepted.
    revoked_tried: Mutex<u64>,
    revived: Mutex<Vec<String>>,
    /// What each acknowledged task ended as, as its owner read it: status
    /// and attempts, by id.
    ended: Mutex<HashMap<String, (String, u64)>>,
}

/// The answers of one window of the run, by class.
#[derive(Default, Clone, Copy)]
struct Classes {
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    unanswered: u64,
}

impl Ledger {
    fn answered(&self, at: Duration, status: u16) {
        *self
            .answers
            .lock()
            .unwrap()
            .entry((at.as_secs(), status))
            .or_default() += 1;
    }

    /// The answers of the seconds `from..to`, by class, those whose
    /// second falls in one of `excused` left out.
    fn classes(&self, from: u64, to: u64, excused: &[(u64, u64)]) -> Classes {
        let mut classes = Classes::default();
        let answers = self.answers.lock().unwrap();
        for (&(second, status), &count) in answers.range((from, 0)..(to, 0)) {
            if excused.iter().any(|&(a, b)| (a..=b).contains(&second)) {
                continue;
            }
            match status {
                0 => classes.unanswered += count,
                200..=399 => classes.ok += count,
                400..=499 => classes.client_errors += count,
                _ => classes.server_errors += count,
            }
        }
        classes
    }
}

/// The client side of the soak: requests through the replicas, answers
/// recorded in the ledger as the traffic's (unless `recorded` is off: the
/// soak's own checks, see [`Traffic::checks`]).
#[derive(Clone)]
struct Traffic<'a> {
    replicas: &'a Replicas,
    ledger: &'a Ledger,
    started: Instant,
    client: reqwest::Client,
    recorded: bool,
}

impl Traffic<'_> {
    /// The same, for the soak's own checks: their answers are not counted.
    fn checks(&self) -> Self {
        Self {
            recorded: false,
            ..self.clone()
        }
    }

    /// Sends a request to `replica`, or to the other if it cannot be
    /// reached; answers the status (0 if neither answered) and body.
    async fn send(
        &self,
        replica: usize,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        for replica in [replica % 2, (replica + 1) % 2] {
            let mut request = self
                .client
                .request(method.clone(), self.replicas.url(replica, path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            if let Ok(response) = request.send().await {
                let status = response.status().as_u16();
                self.answered(status);
                return (status, response.json().await.unwrap_or_default());
            }
        }
        self.answered(0);
        (0, Value::Null)
    }

    fn answered(&self, status: u16) {
        if self.recorded {
            self.ledger.answered(self.started.elapsed(), status);
        }
    }

    async fn sign_in(&self, replica: usize, name: &str) -> Option<String> {
        let credentials = json!({ "username": name, "password": PASSWORD });
        let path = "/api/v1/auth/signin";
        let (status, grant) = self
            .send(replica, Method::POST, path, None, Some(&credentials), None)
            .await;
        let token = grant["access_token"].as_str().map(str::to_owned);
        token.filter(|_| status == 200)
    }

    /// `make soak`'s visit: sign in, five reads, a task queued and read
    /// back, and a sign-out one visit in three; one visit in ten also
    /// signs a new user up.
    async fn visit(&self, name: &str, round: usize) {
        let replica = round % 2;
        if round.is_multiple_of(10) {
            let newcomer = format!("newcomer-{round}");
            let credentials = json!({ "username": newcomer, "password": PASSWORD });
            let path = "/api/v1/auth/signup";
            let (status, _) = self
                .send(replica, Method::POST, path, None, Some(&credentials), None)
                .await;
            if status == 201 {
                self.ledger.signed_up.lock().unwrap().push(newcomer);
            }
        }
        let Some(signed_in) = self.sign_in(replica, name).await else {
            return;
        };
        let token = Some(signed_in.as_str());
        for _ in 0..5 {
            self.send(replica, Method::GET, "/api/v1/users/me", token, None, None)
                .await;
        }
        let task = json!({ "kind": "echo", "payload": { "round": round } });
        let (status, task) = self
            .send(
                replica,
                Method::POST,
                "/api/v1/tasks",
                token,
                Some(&task),
                None,
            )
            .await;
        if let (202, Some(id)) = (status, task["id"].as_str()) {
            self.acknowledged(name, id);
            let path = format!("/api/v1/tasks/{id}");
            self.send(replica, Method::GET, &path, token, None, None)
                .await;
        }
        if round.is_multiple_of(3) {
            let path = "/api/v1/auth/signout";
            let (status, _) = self
                .send(replica, Method::POST, path, token, None, None)
                .await;
            if status == 204 {
                // Refused by the other replica too, once the revocation
                // reached it (published through Redis: within about 10 ms).
                tokio::time::sleep(REVOCATION_REACHES).await;
                self.still_revoked(replica + 1, &signed_in).await;
                let at = self.started.elapsed().as_secs();
                self.ledger.revoked.lock().unwrap().push((signed_in, at));
            }
        }
    }

    /// Reads, every few seconds, each acknowledged task not yet seen to
    /// end, as its owner (with a session of the checker's own), until
    /// every one has ended or a minute past `until`. Finished tasks are
    /// kept only a minute, so they are read while they last.
    async fn check_tasks(&self, until: Duration) {
        let checks = self.checks();
        let mut tokens: HashMap<String, String> = HashMap::new();
        // Signed-out tokens are tried again a few seconds on, while a
        // session that was not ended would still be live.
        let mut retried = 0;
        loop {
            tokio::time::sleep(EVERY).await;
            let now = self.started.elapsed();
            let due: Vec<String> = {
                let revoked = self.ledger.revoked.lock().unwrap();
                let due = revoked[retried..]
                    .iter()
                    .take_while(|(_, at)| at + 5 <= now.as_secs());
                due.map(|(token, _)| token.clone()).collect()
            };
            retried += due.len();
            for (n, token) in due.iter().enumerate() {
                self.still_revoked(n, token).await;
            }
            let pending: Vec<(String, String, u64)> = {
                let ended = self.ledger.ended.lock().unwrap();
                let acknowledged = self.ledger.acknowledged.lock().unwrap();
                acknowledged
                    .iter()
                    .filter(|(_, id, at)| !ended.contains_key(id) && at + 2 <= now.as_secs())
                    .cloned()
                    .collect()
            };
            if pending.is_empty() && now >= until {
                return;
            }
            if now >= until + Duration::from_secs(60) {
                eprintln!(
                    "  {} tasks had not ended a minute after the traffic",
                    pending.len()
                );
                return;
            }
            for (owner, id, _) in pending {
                let path = format!("/api/v1/tasks/{id}");
                if !tokens.contains_key(&owner) {
                    let Some(token) = checks.sign_in(0, &owner).await else {
                        continue;
                    };
                    tokens.insert(owner.clone(), token);
                }
                let token = tokens.get(&owner).map(String::as_str);
                let (status, task) = checks.send(0, Method::GET, &path, token, None, None).await;
                let ended = match (status, task["status"].as_str()) {
                    (401, _) => {
                        tokens.remove(&owner);
                        None
                    }
                    // Gone before it was seen to end: lost.
                    (404, _) => Some(("not found".to_owned(), 0)),
                    (200, Some(end @ ("succeeded" | "dead" | "cancelled"))) => {
                        Some((end.to_owned(), task["attempts"].as_u64().unwrap_or(0)))
                    }
                    _ => None,
                };
                if let Some(ended) = ended {
                    self.ledger.ended.lock().unwrap().insert(id, ended);
                }
            }
        }
    }

    /// A task through each replica, waited for, and a pause: Redis then
    /// holds the scripts the traffic runs (and the sweeps and purges run
    /// on a timer), as it will at the end.
    async fn warm_up(&self, name: &str) {
        let checks = self.checks();
        for replica in 0..2 {
            let token = checks.sign_in(replica, name).await;
            let (token, path) = (token.as_deref(), "/api/v1/tasks");
            let task = json!({ "kind": "echo", "payload": {} });
            let (_, task) = checks
                .send(replica, Method::POST, path, token, Some(&task), None)
                .await;
            let path = format!("/api/v1/tasks/{}", task["id"].as_str().unwrap_or_default());
            for _ in 0..100 {
                let (_, task) = checks
                    .send(replica, Method::GET, &path, token, None, None)
                    .await;
                if task["status"] == "succeeded" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// Tries a signed-out token on `replica`; notes it if it is accepted.
    async fn still_revoked(&self, replica: usize, token: &str) {
        let checks = self.checks();
        let path = "/api/v1/users/me";
        let (status, _) = checks
            .send(replica, Method::GET, path, Some(token), None, None)
            .await;
        *self.ledger.revoked_tried.lock().unwrap() += 1;
        if status != 401 {
            self.ledger.revived.lock().unwrap().push(token.to_owned());
        }
    }

    fn acknowledged(&self, owner: &str, id: &str) {
        let at = self.started.elapsed().as_secs();
        let task = (owner.to_owned(), id.to_owned(), at);
        self.ledger.acknowledged.lock().unwrap().push(task);
    }

    /// One flooder: a burst of 20 ms `sleep` tasks every few seconds, each
    /// sent again with its key until a replica takes it (or the run ends).
    async fn flood(&self, flooder: usize, until: Duration) {
        let name = format!("flooder-{flooder}");
        let mut token = None;
        let mut sent = 0;
        while self.started.elapsed() < until {
            let mut burst = 0;
            while burst < BURST && self.started.elapsed() < until {
                if token.is_none() {
                    token = self.sign_in(flooder, &name).await;
                }
                let key = format!("flood-{flooder}-{sent}");
                let task = json!({ "kind": "sleep", "payload": { "ms": 20 } });
                let (status, answer) = self
                    .send(
                        flooder + sent,
                        Method::POST,
                        "/api/v1/tasks",
                        token.as_deref(),
                        Some(&task),
                        Some(&key),
                    )
                    .await;
                match (status, answer["id"].as_str()) {
                    (202, Some(id)) => {
                        self.acknowledged(&name, id);
                        (sent, burst) = (sent + 1, burst + 1);
                    }
                    (401, _) => token = None,
                    // Sent again with the same key once the fault passes.
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tokio::time::sleep(BURST_EVERY).await;
        }
    }
}

/// One sample of every part.
struct Sample {
    at: Duration,
    rss_mib: [f64; 2],
    sessions: f64,
    redis_mib: f64,
    redis_keys: f64,
    pg_connections: f64,
    answers: Classes,
}

/// One fault: when it began, when the part was back, and when both
/// replicas answered ready again.
struct Fault {
    what: &'static str,
    began: Duration,
    back: Duration,
    recovered: Duration,
    /// Re-runs it may cause at most: the workers of the replicas it hit.
    workers_hit: usize,
}

impl Fault {
    /// The seconds its answers are excused in: from its start until a
    /// second past its recovery.
    fn window(&self) -> (u64, u64) {
        (self.began.as_secs(), self.recovered.as_secs() + 1)
    }
}

/// Answers whether every check held.
pub async fn run() -> bool {
    let seconds = soak_secs();
    let redis = OwnRedis::start().await;
    let postgres = OwnPostgres::start().await;
    let env: Vec<(String, String)> = [
        ("TOLLGATE__DATABASE__URL", postgres.url()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ("TOLLGATE__AUTH__BCRYPT_COST", "4".to_owned()),
        ("TOLLGATE__SESSION__STORE", "redis".to_owned()),
        ("TOLLGATE__QUEUE__BACKEND", "redis".to_owned()),
        ("TOLLGATE__QUEUE__WORKERS", WORKERS.to_string()),
        (
            "TOLLGATE__QUEUE__NEWCOMER_WORKERS",
            NEWCOMER_WORKERS.to_string(),
        ),
        (
            "TOLLGATE__QUEUE__RESULT_TTL_SECS",
            RESULT_TTL_SECS.to_string(),
        ),
        (
            "TOLLGATE__QUEUE__IDEMPOTENCY_TTL_SECS",
            RESULT_TTL_SECS.to_string(),
        ),
        ("TOLLGATE__REDIS__URL", redis.url()),
        ("TOLLGATE__REDIS__KEY_PREFIX", "soak".to_owned()),
        ("TOLLGATE__REDIS__TIMEOUT_SECS", "1".to_owned()),
        ("TOLLGATE__DATABASE__TIMEOUT_SECS", "2".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let replicas = Replicas::start(env).await;
    let ledger = Ledger::default();
    let started = Instant::now();
    let traffic = Traffic {
        replicas: &replicas,
        ledger: &ledger,
        started,
        client: http_client(),
        recorded: true,
    };
    let names: Vec<String> = (0..ACCOUNTS).map(|n| format!("soaker-{n}")).collect();
    let flooders: Vec<String> = (0..FLOODERS).map(|n| format!("flooder-{n}")).collect();
    for name in names.iter().chain(&flooders) {
        let credentials = json!({ "username": name, "password": PASSWORD });
        let path = "/api/v1/auth/signup";
        let (status, _) = traffic
            .send(0, Method::POST, path, None, Some(&credentials), None)
            .await;
        assert_eq!(status, 201, "signing {name} up");
    }
    let until = Duration::from_secs(seconds);
    traffic.warm_up(&flooders[0]).await;
    // Redis and the replicas with the accounts made and the scripts
    // loaded, before any traffic.
    let before = sample(&replicas, &redis, &postgres, &ledger, started, &[]).await;
    eprintln!(
        "soak-production: 2 replicas on PostgreSQL and Redis, {CLIENTS} clients and \
         {FLOODERS} flooders for {seconds} s; Redis killed and started again at {:.0} s, \
         PostgreSQL restarted at {:.0} s, a replica killed at {:.0} s",
        seconds as f64 * 0.15,
        seconds as f64 * 0.2,
        seconds as f64 * 0.25
    );

    let clients = join_all((0..CLIENTS).map(|client| {
        let (traffic, names) = (&traffic, &names);
        async move {
            let mut round = client;
            while started.elapsed() < until {
                traffic.visit(&names[round % names.len()], round).await;
                round += CLIENTS;
            }
        }
    }));
    let floods = join_all((0..FLOODERS).map(|flooder| traffic.flood(flooder, until)));
    let faults = inflict_faults(&replicas, &redis, &postgres, started, seconds);
    let sampling = async {
        let mut samples = vec![before];
        while started.elapsed() < until {
            tokio::time::sleep(EVERY).await;
            samples.push(sample(&replicas, &redis, &postgres, &ledger, started, &samples).await);
        }
        samples
    };
    let checking = traffic.check_tasks(until);
    let ((_, _, faults, mut samples), ()) = futures_util::future::join(
        futures_util::future::join4(clients, floods, faults, sampling),
        checking,
    )
    .await;
    let traffic_samples = samples.iter().take_while(|s| s.at <= until + EVERY).count();

    // Quiet: idle sessions lapse (30 s after their last use) and finished
    // tasks expire (a minute after they ended).
    let expired = until + Duration::from_secs(RESULT_TTL_SECS + 15);
    let give_up = until + Duration::from_secs(RESULT_TTL_SECS + 120);
    loop {
        tokio::time::sleep(EVERY).await;
        samples.push(sample(&replicas, &redis, &postgres, &ledger, started, &samples).await);
        let swept = samples.last().is_some_and(|s| s.sessions == 0.0);
        let now = started.elapsed();
        if (swept && now >= expired) || now >= give_up {
            break;
        }
    }
    let verdicts = verdicts(&traffic, &samples, traffic_samples, &faults, seconds).await;
    report(&samples, &faults, &verdicts, &ledger);
    let answered = ledger.classes(0, seconds, &[]);
    let total = answered.ok + answered.client_errors + answered.server_errors + answered.unanswered;
    println!(
        "\n{total} answers while the traffic ran ({:.0}/s); {} tasks acknowledged",
        total as f64 / seconds as f64,
        ledger.acknowledged.lock().unwrap().len()
    );
    verdicts.iter().all(|verdict| verdict.held)
}

/// Kills Redis at 15 % of the run and starts it again, restarts
/// PostgreSQL at 20 %, and kills replica 1 at a quarter and starts another
/// (early, so that it is past its own warm-up in the last third, whose
/// memory is checked); answers how each went.
async fn inflict_faults(
    replicas: &Replicas,
    redis: &OwnRedis,
    postgres: &OwnPostgres,
    started: Instant,
    seconds: u64,
) -> Vec<Fault> {
    let at = |share: f64| Duration::from_secs_f64(seconds as f64 * share);
    let mut faults = Vec::new();
    for (share, what) in [
        (0.15, "Redis killed (SIGKILL) and started again"),
        (0.2, "PostgreSQL restarted"),
        (0.25, "replica 1 killed (SIGKILL) and started again"),
    ] {
        tokio::time::sleep(at(share).saturating_sub(started.elapsed())).await;
        let began = started.elapsed();
        let workers_hit = match what {
            "Redis killed (SIGKILL) and started again" => {
                redis.crash_and_restart().await;
                2
            }
            // Tasks live in Redis: no worker's run depends on PostgreSQL.
            "PostgreSQL restarted" => {
                postgres.restart().await;
                0
            }
            _ => {
                replicas.kill_and_restart(1).await;
                1
            }
        } * (WORKERS + NEWCOMER_WORKERS);
        let back = started.elapsed();
        let recovered = ready_again(replicas, started).await;
        eprintln!(
            "  {what} at {:.1} s: back after {:.2} s, the service ready {:.2} s later",
            began.as_secs_f64(),
            (back - began).as_secs_f64(),
            (recovered - back).as_secs_f64()
        );
        faults.push(Fault {
            what,
            began,
            back,
            recovered,
            workers_hit,
        });
    }
    faults
}

/// When both replicas answer `/health/ready` with 200 again.
async fn ready_again(replicas: &Replicas, started: Instant) -> Duration {
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = 0;
        for replica in 0..2 {
            let url = replicas.url(replica, "/health/ready");
            let answer = client.get(url).send().await;
            ready += usize::from(answer.is_ok_and(|a| a.status() == StatusCode::OK));
        }
        if ready == 2 || Instant::now() > deadline {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Samples every part; the answers counted are those since the last of
/// `earlier`.
async fn sample(
    replicas: &Replicas,
    redis: &OwnRedis,
    postgres: &OwnPostgres,
    ledger: &Ledger,
    started: Instant,
    earlier: &[Sample],
) -> Sample {
    let client = http_client();
    let mut rss_mib = [f64::NAN; 2];
    let mut sessions = f64::NAN;
    for (replica, rss) in rss_mib.iter_mut().enumerate() {
        let url = replicas.url(replica, "/metrics");
        let Ok(scrape) = client.get(url).send().await else {
            continue;
        };
        let scrape = scrape.text().await.unwrap_or_default();
        *rss = metric(&scrape, "process_resident_memory_bytes") / (1024.0 * 1024.0);
        // Sessions are counted in Redis: every replica reports them all.
        sessions = metric(&scrape, "tollgate_sessions_active");
    }
    let at = started.elapsed();
    let from = earlier.last().map_or(0, |s| s.at.as_secs());
    let sample = Sample {
        at,
        rss_mib,
        sessions,
        redis_mib: redis.info("used_memory").await / (1024.0 * 1024.0),
        redis_keys: redis.keys().await,
        pg_connections: postgres.connections().await,
        answers: ledger.classes(from, at.as_secs(), &[]),
    };
    eprintln!(
        "  {:>5.0} s  resident {:>6.1} {:>6.1} MiB  sessions {:>6.0}  Redis {:>6.1} MiB \
         {:>7.0} keys  PostgreSQL {:>3.0} connections  answers {} ok, {} 4xx, {} 5xx, {} none",
        sample.at.as_secs_f64(),
        sample.rss_mib[0],
        sample.rss_mib[1],
        sample.sessions,
        sample.redis_mib,
        sample.redis_keys,
        sample.pg_connections,
        sample.answers.ok,
        sample.answers.client_errors,
        sample.answers.server_errors,
        sample.answers.unanswered,
    );
    sample
}

/// One check at the end, and whether it held.
struct Verdict {
    check: &'static str,
    held: bool,
    detail: String,
}

/// Checks, in turn: every acknowledged task finished once as its owner
/// sees it (re-runs at most the workers each fault hit); every sign-up
/// answered 201 signs in; every revoked session stays revoked; idle
/// sessions swept to zero; Redis's memory back within 10 % of its level
/// after warm-up; each replica's memory flat over the last third of the
/// traffic; no 5xx (or unanswered request) outside the faults; the service
/// ready again within [`RECOVERY`] of each part's return.
async fn verdicts(
    traffic: &Traffic<'_>,
    samples: &[Sample],
    traffic_samples: usize,
    faults: &[Fault],
    seconds: u64,
) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let mut verdict = |check, held, detail| {
        verdicts.push(Verdict {
            check,
            held,
            detail,
        })
    };

    // Tasks, as each owner saw them end.
    let acknowledged = traffic.ledger.acknowledged.lock().unwrap().clone();
    let ended = traffic.ledger.ended.lock().unwrap().clone();
    let (mut succeeded, mut reruns, mut wrong) = (0, 0, Vec::new());
    for (_, id, _) in &acknowledged {
        match ended.get(id) {
            Some((status, attempts)) if status == "succeeded" => {
                succeeded += 1;
                reruns += attempts.saturating_sub(1);
            }
            other => wrong.push(format!("{id}: {other:?}")),
        }
    }
    let rerun_bound: usize = faults.iter().map(|fault| fault.workers_hit).sum();
    verdict(
        "every acknowledged task succeeded once, as its owner sees it",
        wrong.is_empty() && reruns as usize <= rerun_bound,
        format!(
            "{succeeded} of {} succeeded; {reruns} re-runs (at most {rerun_bound}: the \
             workers of the replicas each fault hit){}",
            acknowledged.len(),
            if wrong.is_empty() {
                String::new()
            } else {
                format!("; not succeeded: {:?}", &wrong[..wrong.len().min(5)])
            }
        ),
    );

    // Users answered 201 are there.
    let signed_up = traffic.ledger.signed_up.lock().unwrap().clone();
    let mut missing = Vec::new();
    for name in &signed_up {
        if traffic.checks().sign_in(1, name).await.is_none() {
            missing.push(name.clone());
        }
    }
    verdict(
        "no sign-up answered 201 is missing",
        missing.is_empty(),
        format!(
            "{} signed up, {} missing {missing:?}",
            signed_up.len(),
            missing.len()
        ),
    );

    // Signed-out sessions, tried on the other replica at once and again
    // a few seconds on, while one not ended would still be live.
    let revoked = traffic.ledger.revoked.lock().unwrap().len();
    let tried = *traffic.ledger.revoked_tried.lock().unwrap();
    let revived = traffic.ledger.revived.lock().unwrap().len();
    verdict(
        "every revoked session stays revoked",
        revived == 0 && tried as usize >= revoked,
        format!("{revoked} signed out, {tried} tries, {revived} accepted"),
    );

    let last = samples.last().expect("sampled");
    verdict(
        "idle sessions swept to zero",
        last.sessions == 0.0,
        format!("{} sessions at the end", last.sessions),
    );

    // Redis with the accounts made, before the traffic, against Redis
    // once the sessions lapsed and the finished tasks expired.
    let before = &samples[0];
    verdict(
        "Redis's memory back within 10 % of its level before the traffic, no more keys",
        last.redis_mib <= before.redis_mib * 1.10 && last.redis_keys <= before.redis_keys,
        format!(
            "{:.2} MiB and {} keys before, {:.2} MiB and {} keys at the end; {:.2} MiB at its \
             highest",
            before.redis_mib,
            before.redis_keys,
            last.redis_mib,
            last.redis_keys,
            samples.iter().map(|s| s.redis_mib).fold(0.0, f64::max)
        ),
    );

    // Each replica's memory over the last third of the traffic.
    let last_third: Vec<&Sample> = samples[..traffic_samples]
        .iter()
        .filter(|s| s.at.as_secs_f64() >= seconds as f64 * 2.0 / 3.0)
        .collect();
    for replica in 0..2 {
        let points: Vec<(f64, f64)> = last_third
            .iter()
            .map(|s| (s.at.as_secs_f64() / 60.0, s.rss_mib[replica]))
            .filter(|(_, rss)| rss.is_finite())
            .collect();
        let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len().max(1) as f64;
        let per_minute = slope(&points) / mean * 100.0;
        // Fewer than three readings make no slope worth the name.
        let per_minute = if points.len() < 3 {
            f64::NAN
        } else {
            per_minute
        };
        verdict(
            if replica == 0 {
                "replica 0's memory flat over the last third (under 1 % a minute)"
            } else {
                "replica 1's memory flat over the last third (under 1 % a minute)"
            },
            per_minute < 1.0,
            format!("{per_minute:+.2} % a minute around {mean:.1} MiB"),
        );
    }

    let windows: Vec<(u64, u64)> = faults.iter().map(Fault::window).collect();
    let outside = traffic.ledger.classes(0, u64::MAX, &windows);
    let inside = traffic.ledger.classes(0, u64::MAX, &[]);
    verdict(
        "no 5xx and no unanswered request outside the faults",
        outside.server_errors == 0 && outside.unanswered == 0,
        format!(
            "outside: {} ok, {} 5xx, {} unanswered; in all: {} 5xx, {} unanswered",
            outside.ok,
            outside.server_errors,
            outside.unanswered,
            inside.server_errors,
            inside.unanswered
        ),
    );

    for fault in faults {
        let recovery = fault.recovered - fault.back;
        verdict(
            "the service ready again within 5 s of the part's return",
            recovery <= RECOVERY,
            format!("{}: {:.2} s", fault.what, recovery.as_secs_f64()),
        );
    }
    verdicts
}

/// Least-squares slope of `points` (y per x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let covariance: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    covariance / variance
}

fn report(samples: &[Sample], faults: &[Fault], verdicts: &[Verdict], ledger: &Ledger) {
    println!(
        "\n| s | replica 0 MiB | replica 1 MiB | sessions | Redis MiB | Redis keys | PostgreSQL connections | ok | 4xx | 5xx | unanswered |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in samples {
        println!(
            "| {:.0} | {:.1} | {:.1} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} |",
            s.at.as_secs_f64(),
            s.rss_mib[0],
            s.rss_mib[1],
            s.sessions,
            s.redis_mib,
            s.redis_keys,
            s.pg_connections,
            s.answers.ok,
            s.answers.client_errors,
            s.answers.server_errors,
            s.answers.unanswered
        );
    }
    println!(
        "\n| fault | at | part back after | service ready after that | answers in its window: ok, 5xx, unanswered |"
    );
    println!("|---|---|---|---|---|");
    for fault in faults {
        let (from, to) = fault.window();
        let answers = ledger.classes(from, to + 1, &[]);
        println!(
            "| {} | {:.1} s | {:.2} s | {:.2} s | {}, {}, {} |",
            fault.what,
            fault.began.as_secs_f64(),
            (fault.back - fault.began).as_secs_f64(),
            (fault.recovered - fault.back).as_secs_f64(),
            answers.ok,
            answers.server_errors,
            answers.unanswered
        );
    }
    println!("\n| check | held | figures |");
    println!("|---|---|---|");
    for verdict in verdicts {
        let held = if verdict.held { "yes" } else { "NO" };
        println!("| {} | {held} | {} |", verdict.check, verdict.detail);
    }
}
