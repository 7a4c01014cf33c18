//! PostgreSQL for the tests: a schema per test, dropped afterwards, and a
//! TCP proxy that a test can cut to make the database unreachable.

use std::net::SocketAddr;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::on_a_fresh_runtime;

/// Where the tests find PostgreSQL; `make test` makes sure it answers.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

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
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let dropped =
            on_a_fresh_runtime(async move { admin_connect().await.batch_execute(&sql).await });
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

/// A TCP forwarder that a test can cut and restore, to make a server
/// unreachable without stopping it for other tests.
pub struct TcpProxy {
    pub address: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept_loop: AbortHandle,
}

impl TcpProxy {
    /// A proxy in front of the tests' PostgreSQL.
    pub async fn to_database() -> Self {
        Self::to(database_address()).await
    }

    /// A proxy in front of `target`.
    pub async fn to(target: SocketAddr) -> Self {
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
