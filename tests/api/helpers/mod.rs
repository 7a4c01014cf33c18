//! Test harness: every test gets the real service on a random port, its own
//! PostgreSQL schema and Redis key prefix (both removed afterwards), and a
//! clock it moves by hand.

mod browser;
mod postgres;
mod process;
mod redis;
mod scrape;
mod tls;

use std::time::Duration;

use actix_web::dev::ServerHandle;
use chrono::{DateTime, Utc};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tollgate::actors::{Queue, SessionManager};
use tollgate::app::Application;
use tollgate::clock::Clock;
use tollgate::config::{DatabaseSettings, QueueBackend, Settings};
use tollgate::tasks::TaskHandlers;

pub use browser::Browser;
pub use postgres::{PrivatePostgres, TcpProxy, TestSchema};
pub use process::{Server, as_env, new_key_file, output_of, production_env, refused_start};
pub use scrape::Scrape;
pub use tls::TestCa;

/// Runs each `check(store)` against stores of type `$store`, one module
/// of tests per maker, each store made afresh by its maker (an async fn
/// returning the store and a guard that cleans up), and defines
/// `every_check(make)`, which runs them all in turn against stores another
/// maker builds (such as one on a Redis Cluster a test started).
macro_rules! for_each_store {
    (@module $name:ident => $make:ident, [$($check:ident),*]) => {
        mod $name {
            $(#[actix_web::test]
            async fn $check() {
                let (store, _guard) = super::$make().await;
                super::$check(store).await;
            })*
        }
    };
    ($store:ty: $($name:ident => $make:ident),+ ; $($check:ident),* $(,)?) => {
        for_each_store!(@modules [$($name => $make),+], [$($check),*]);
        for_each_store!(@every $store, [$($check),*]);
    };
    (@modules [$($name:ident => $make:ident),+], $checks:tt) => {
        $(for_each_store!(@module $name => $make, $checks);)+
    };
    (@every $store:ty, [$($check:ident),*]) => {

        /// How many checks the suite has.
        #[allow(dead_code)]
        pub const CHECKS: usize = [$(stringify!($check)),*].len();

        /// Runs every check of this suite, each on a store `make` builds;
        /// returns how many ran.
        #[allow(dead_code)]
        pub async fn every_check<G, F: std::future::Future<Output = ($store, G)>>(
            make: impl Fn() -> F,
        ) -> usize {
            let mut ran = 0;
            $({
                let (store, _guard) = make().await;
                $check(store).await;
                ran += 1;
            })*
            ran
        }
    };
}
pub use redis::{PrivateRedis, RedisCluster, TestRedis, redis_url};

/// The signing secret of every test app, so tests can forge tokens with it.
pub const JWT_SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

/// The admin token of apps started with [`admin_settings`].
pub const ADMIN_TOKEN: &str = "integration-test-admin-token-of-32-bytes-or-more";

/// An admin listener on a spare port, its token ([`ADMIN_TOKEN`]) in a
/// file under `dir`.
pub fn admin_settings(dir: &TempDir) -> tollgate::config::AdminSettings {
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    tollgate::config::AdminSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        token_file,
        serve_metrics: false,
    }
}

/// How long a test waits for something the service does in the background.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A password every test user has unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery staple";

/// The real service, serving on a random port.
pub struct TestApp {
    pub address: String,
    /// The admin listener's, if the settings name one.
    pub admin_address: Option<String>,
    pub client: reqwest::Client,
    pub clock: Clock,
    pub sessions: SessionManager,
    pub queue: Queue,
    handle: ServerHandle,
    /// Declared after the handle: dropped after the server is told to stop.
    pub schema: TestSchema,
    /// The test's key prefix; its `Drop` deletes the keys.
    pub redis: TestRedis,
}

/// Starts the service on PostgreSQL and Redis with fast test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], letting the test adjust settings first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let schema = TestSchema::create().await;
    spawn_app_on(schema, TestSchema::url, customize).await
}

/// Starts the service on `schema`, reaching PostgreSQL at the address that
/// `url` builds (the real server, or a proxy in front of it).
pub async fn spawn_app_on(
    schema: TestSchema,
    url: impl FnOnce(&TestSchema) -> String,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let settings = test_settings(url(&schema), customize);
    start(settings, schema, TaskHandlers::builtin).await
}

/// Like [`spawn_app_with`], running the task kinds `handlers` makes.
pub async fn spawn_app_with_handlers(
    handlers: impl FnOnce(&tollgate::config::QueueSettings) -> anyhow::Result<TaskHandlers>,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let schema = TestSchema::create().await;
    let settings = test_settings(schema.url(), customize);
    start(settings, schema, handlers).await
}

/// The settings every test app starts from: the embedded default with
/// users in `database_url`, tasks in Redis under a prefix of the test's
/// own, cheap bcrypt and quick polling. `customize` has the last word.
fn test_settings(database_url: String, customize: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = Settings::embedded_default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.http_workers = 2;
    settings.auth.jwt_secret = Some(JWT_SECRET.into());
    settings.auth.bcrypt_cost = 4;
    settings.auth.hasher_threads = 2;
    settings.database = Some(DatabaseSettings {
        url: database_url.parse().unwrap(),
        pool_size: 4,
        timeout_secs: 3,
        tls_ca_file: None,
    });
    settings.queue.backend = QueueBackend::Redis;
    settings.queue.workers = 4;
    settings.queue.poll_interval_ms = 20;
    settings.redis = Some(TestRedis::settings(&TestRedis::new_prefix()));
    // Tests sign their users up from one address within a minute of the
    // manual clock; the ones about that limit set it themselves.
    settings.rate_limit.signup_per_minute_per_ip = 0;
    customize(&mut settings);
    settings.validate().expect("test settings are valid");
    settings
}

async fn start(
    settings: Settings,
    schema: TestSchema,
    handlers: impl FnOnce(&tollgate::config::QueueSettings) -> anyhow::Result<TaskHandlers>,
) -> TestApp {
    let redis = TestRedis::adopt(&settings);
    let handlers = handlers(&settings.queue).expect("the task handlers build");
    // Whole milliseconds, as the service keeps them.
    let start = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let clock = Clock::manual(start);
    let app = Application::build_with_handlers(settings, clock.clone(), handlers)
        .await
        .expect("the service builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = app
        .admin_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let (handle, sessions, queue) = (app.handle(), app.sessions(), app.queue());
    // On a thread of its own, so that the stop sent when the test drops
    // the app is still carried out after the test's own runtime has ended:
    // the HTTP workers stop, and with them what they hold (the user
    // store's connections among it).
    std::thread::spawn(move || actix_web::rt::System::new().block_on(app.run()));

    TestApp {
        address,
        admin_address,
        client: client(),
        clock,
        sessions,
        queue,
        handle,
        schema,
        redis,
    }
}

/// An HTTP client that talks to loopback directly, whatever proxy the
/// environment names.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Sends the stop command now; the returned future need not be awaited.
        drop(self.handle.stop(false));
    }
}

/// A signed-up user with a live token.
pub struct TestUser {
    pub username: String,
    pub password: String,
    pub token: String,
    pub id: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    /// POSTs `body` as JSON to `path`.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post(path).json(body).send().await.unwrap()
    }

    /// `POST /api/v1/auth/introspect` for `token`, presenting `credential`
    /// as the bearer if given.
    pub async fn introspect(&self, credential: Option<&str>, token: &str) -> Response {
        let mut request = self
            .post("/api/v1/auth/introspect")
            .json(&json!({ "token": token }));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        request.send().await.unwrap()
    }

    pub async fn sign_up(&self, username: &str, password: &str) -> Response {
        self.post("/api/v1/auth/signup")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn sign_in(&self, username: &str, password: &str) -> Response {
        self.post("/api/v1/auth/signin")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Signs up a new user with [`PASSWORD`].
    pub async fn new_user(&self, username: &str) -> TestUser {
        let response = self.sign_up(username, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        TestUser {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            id: body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Stores a user with [`PASSWORD`] hashed at `cost` straight into the
    /// database, bypassing the hasher pool. Returns the username.
    pub async fn new_user_with_hash_cost(&self, username: &str, cost: u32) -> String {
        let password = tollgate::domain::Password::parse(PASSWORD, "password").unwrap();
        let hash = tollgate::auth::password::hash(&password, cost).unwrap();
        let sql = "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, now())";
        let db = self.schema.connect().await;
        db.execute(sql, &[&uuid::Uuid::now_v7(), &username, &hash])
            .await
            .unwrap();
        username.to_owned()
    }

    /// Signs `user` in again, returning the new session's token.
    pub async fn new_token(&self, user: &TestUser) -> String {
        let response = self.sign_in(&user.username, &user.password).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `GET /api/v1/auth/session` with `token`.
    pub async fn session(&self, token: &str) -> Response {
        self.get("/api/v1/auth/session")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/v1/tasks` with `body`, as `token`'s user.
    pub async fn enqueue(&self, token: &str, body: &Value) -> Response {
        self.post("/api/v1/tasks")
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Enqueues a task that must be accepted; returns it.
    pub async fn enqueued(&self, token: &str, body: &Value) -> Value {
        let response = self.enqueue(token, body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.unwrap()
    }

    /// `GET /api/v1/tasks/{id}`.
    pub async fn task(&self, token: &str, id: &str) -> Response {
        self.get(&format!("/api/v1/tasks/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/v1/tasks/{id}`, which must answer 200; returns the task.
    pub async fn read_task(&self, token: &str, id: &str) -> Value {
        let response = self.task(token, id).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Waits (for at most `limit`) until task `id` is in a final state, and
    /// returns it.
    pub async fn finished_task(&self, token: &str, id: &str, limit: Duration) -> Value {
        self.task_where(token, id, limit, |task| {
            ["succeeded", "dead", "cancelled"].contains(&task["status"].as_str().unwrap())
        })
        .await
    }

    /// Waits (for at most `limit`) until task `id` satisfies `condition`,
    /// and returns it.
    pub async fn task_where(
        &self,
        token: &str,
        id: &str,
        limit: Duration,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let task = self.read_task(token, id).await;
            if condition(&task) {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} did not get there in {limit:?}: {task}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /api/v1/tasks{query}`, which must answer 200; returns the page.
    pub async fn tasks(&self, token: &str, query: &str) -> Value {
        let response = self.list_tasks(token, query).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// `GET /api/v1/tasks{query}`.
    pub async fn list_tasks(&self, token: &str, query: &str) -> Response {
        self.get(&format!("/api/v1/tasks{query}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /api/v1/tasks/{id}`.
    pub async fn cancel(&self, token: &str, id: &str) -> Response {
        self.client
            .delete(self.url(&format!("/api/v1/tasks/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `GET /metrics`, which must answer.
    pub async fn metrics(&self) -> Scrape {
        let response = self.get("/metrics").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Scrape::parse(response.text().await.unwrap())
    }

    /// `GET /api/v1/queue`, which must answer.
    pub async fn queue_counts(&self, token: &str) -> Value {
        let response = self
            .get("/api/v1/queue")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// A request to the admin listener's `path`, carrying the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let address = self.admin_address.as_ref().expect("an admin listener");
        self.client
            .request(method, format!("{address}{path}"))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// `GET` an admin path, which must answer 200; returns the body.
    pub async fn admin_json(&self, path: &str) -> Value {
        let response = self.admin(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn me(&self, token: &str) -> Response {
        self.get("/api/v1/users/me")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// The claims inside a token, read without checking anything.
pub fn claims_of(token: &str) -> Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Reads a problem-details response, checking its form, and returns it.
pub async fn problem(response: Response, status: StatusCode, code: &str) -> Value {
    let answered = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    assert_eq!(answered, status, "{text}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

/// A timestamp field of a JSON object, in milliseconds since the epoch.
pub fn millis(object: &Value, field: &str) -> i64 {
    DateTime::parse_from_rfc3339(object[field].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// The fields an `invalid_input` problem names, in order.
pub fn fields_at_fault(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect()
}

/// Checks that a response refuses its bearer token as RFC 6750 says.
pub async fn refused_as_invalid_token(response: Response) {
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    problem(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

/// Waits until `condition` holds, checking every 20 ms, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port nothing listens on (bound, then released), for a
/// server a test starts.
pub fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts an HTTP server of the test's own, the app that `configure`
/// builds, on a random loopback port; answers its address.
pub fn serve_on_loopback(
    configure: impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static,
) -> String {
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    address
}

/// Runs `work` to completion on a runtime of its own, in a thread of its
/// own: for clean-up in `Drop`, which cannot await and may run after the
/// test's runtime is gone.
fn on_a_fresh_runtime<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> std::thread::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
}

/// A directory of its own under the system's temporary one, removed with
/// everything in it when dropped, whether the test passed or not.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("tollgate-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
