//! Test harness: every test gets the real service on a random port, its own
//! PostgreSQL schema (dropped afterwards), and a clock it moves by hand.

use std::net::SocketAddr;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use chrono::{DateTime, Utc};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tollgate::actors::SessionManager;
use tollgate::app::Application;
use tollgate::clock::Clock;
use tollgate::config::{DatabaseSettings, Settings};

/// Where the tests find PostgreSQL; `make test` makes sure it answers.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// The signing secret of every test app, so tests can forge tokens with it.
pub const JWT_SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

/// A password every test user has unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery staple";

/// The real service, serving on a random port.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    pub sessions: SessionManager,
    handle: ServerHandle,
    /// Declared last: dropped after the server is told to stop.
    pub schema: TestSchema,
}

/// Starts the service on PostgreSQL with fast test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], letting the test adjust settings first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let schema = TestSchema::create().await;
    spawn_app_on(schema, schema_url_default, customize).await
}

/// Starts the service on `schema`, reaching PostgreSQL at the address that
/// `url` builds (the real server, or a proxy in front of it).
pub async fn spawn_app_on(
    schema: TestSchema,
    url: impl FnOnce(&TestSchema) -> String,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = Settings::embedded_default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.http_workers = 2;
    settings.auth.jwt_secret = Some(JWT_SECRET.into());
    settings.auth.bcrypt_cost = 4;
    settings.auth.hasher_threads = 2;
    settings.database = Some(DatabaseSettings {
        url: url(&schema).into(),
        pool_size: 4,
        timeout_secs: 3,
    });
    customize(&mut settings);
    settings.validate().expect("test settings are valid");

    // Whole milliseconds, as the service keeps them.
    let start = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let clock = Clock::manual(start);
    let app = Application::build(settings, clock.clone())
        .await
        .expect("the service builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (handle, sessions) = (app.handle(), app.sessions());
    actix_web::rt::spawn(app.run());

    TestApp {
        address,
        client: client(),
        clock,
        sessions,
        handle,
        schema,
    }
}

/// An HTTP client that talks to loopback directly, whatever proxy the
/// environment names.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn schema_url_default(schema: &TestSchema) -> String {
    schema.url()
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
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
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

/// The PostgreSQL the tests use, as a connection config.
fn database_config() -> tokio_postgres::Config {
    let url = std::env::var("TOLLGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    url.parse()
        .expect("TOLLGATE_TEST_DATABASE_URL is a PostgreSQL URL")
}

/// A schema of its own for one test, dropped with everything in it when the
/// value is dropped.
pub struct TestSchema {
    name: String,
}

impl TestSchema {
    pub async fn create() -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let client = admin_connect().await;
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Self { name }
    }

    /// A URL whose sessions work in this schema only.
    pub fn url(&self) -> String {
        self.url_via(database_address())
    }

    /// Like [`TestSchema::url`], through another address (a proxy).
    pub fn url_via(&self, address: SocketAddr) -> String {
        let config = database_config();
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let dbname = config.get_dbname().unwrap_or("postgres");
        format!(
            "postgres://{user}{password}@{address}/{dbname}?options=-csearch_path%3D{}",
            self.name
        )
    }

    /// A connection working in this schema, to look behind the service.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let client = admin_connect().await;
        let set_path = format!("SET search_path TO {}", self.name);
        client.batch_execute(&set_path).await.unwrap();
        client
    }

    /// Counts the rows of `table` in this schema.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        self.connect()
            .await
            .query_one(&sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be gone: a thread of
        // its own runs the clean-up to completion.
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async { admin_connect().await.batch_execute(&sql).await })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop test schema {}: {dropped:?}", self.name);
        }
    }
}

fn database_address() -> SocketAddr {
    let config = database_config();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    format!("{host}:{port}")
        .parse()
        .expect("the test database host is an IP address")
}

async fn admin_connect() -> tokio_postgres::Client {
    let config = database_config();
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is not reachable at {} ({err}). Run `make test`, which starts it, \
             or point TOLLGATE_TEST_DATABASE_URL at a server.",
                database_address()
            )
        });
    tokio::spawn(connection);
    client
}

/// A TCP forwarder in front of PostgreSQL that a test can cut and restore,
/// to make the database unreachable without stopping it for other tests.
pub struct TcpProxy {
    pub address: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept_loop: AbortHandle,
}

impl TcpProxy {
    pub async fn to_database() -> Self {
        let target = database_address();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept_loop = {
            let (open, connections) = (open.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropping `inbound` closes it at once
                    }
                    let forward = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(forward.abort_handle());
                }
            })
            .abort_handle()
        };
        Self {
            address,
            open,
            connections,
            accept_loop,
        }
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept_loop.abort();
    }
}
