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

/// A PostgreSQL server of a test's own (`initdb`, `pg_ctl`) on a spare
/// port, which the test may stop and start again while the service runs,
/// other tests keeping theirs. Stopped and removed when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bindir: std::path::PathBuf,
    /// Whether it answers TCP clients over TLS only.
    tls: bool,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let postgres = Self::init(false);
        postgres.resume();
        postgres
    }

    /// A server with `ssl = on` that presents `ca`'s server certificate
    /// and refuses TCP clients that do not use TLS.
    pub async fn start_with_tls(ca: &super::TestCa) -> Self {
        let postgres = Self::init(true);
        let data = std::path::PathBuf::from(postgres.data_dir());
        let (cert, key) = ca.server_files();
        std::fs::copy(cert, data.join("server.crt")).unwrap();
        std::fs::copy(key, data.join("server.key")).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        postgres.give_to_postgres();
        // PostgreSQL refuses a key that others may read.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        postgres.resume();
        postgres
    }

    /// A new cluster (`initdb`), not yet started.
    fn init(tls: bool) -> Self {
        let bindir = postgres_bindir();
        let dir = std::env::temp_dir().join(format!("tollgate-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let postgres = Self {
            port: super::spare_port(),
            dir,
            bindir,
            tls,
        };
        postgres.give_to_postgres();
        let data = postgres.data_dir();
        postgres.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// What `sql` answers, one row a line, asked over the server's local
    /// socket.
    pub fn query(&self, sql: &str) -> String {
        let output = self
            .command("psql")
            .args([
                "-h",
                &self.dir.display().to_string(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", "postgres", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql {sql}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    /// Stops the server (a fast shutdown) and waits until it has.
    pub fn stop(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server on the same port and data, and waits until it
    /// accepts connections.
    pub fn resume(&self) {
        let (data, log) = (
            self.data_dir(),
            format!("{}/server.log", self.dir.display()),
        );
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl={}",
            self.port,
            self.dir.display(),
            if self.tls { "on" } else { "off" },
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
    }

    fn data_dir(&self) -> String {
        format!("{}/data", self.dir.display())
    }

    /// A PostgreSQL program, to run as the `postgres` account when this is
    /// root (PostgreSQL refuses to run as root), from `/` so that account
    /// need not enter the caller's directory.
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bindir.join(program);
        let mut command = if is_root() {
            let mut runuser = std::process::Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            std::process::Command::new(program)
        };
        command.current_dir("/");
        command
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Gives the directory to the `postgres` account when this is root.
    fn give_to_postgres(&self) {
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&self.dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown {}", self.dir.display());
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let stop = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = self.command("pg_ctl").args(stop).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// The directory holding `initdb` and `pg_ctl`: on the PATH, or Debian's
/// newest `/usr/lib/postgresql/<version>/bin`. `make test` installs them.
fn postgres_bindir() -> std::path::PathBuf {
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|bin| {
        let version = bin.parent().and_then(|v| v.file_name()).unwrap_or_default();
        version.to_string_lossy().parse::<u32>().unwrap_or(0)
    });
    versions
        .pop()
        .expect("initdb and pg_ctl (make test installs PostgreSQL)")
}
