//! A Redis and a PostgreSQL of the production soak's own, on spare loopback
//! ports with their data in a temporary directory, which it restarts while
//! the service runs. Stopped and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-soak-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits up to 30 s for `ready`.
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, ready: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        assert!(Instant::now() < deadline, "{what} did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `redis-server` with an append-only file fsynced at every write, so
/// that what it acknowledged survives a restart.
pub struct OwnRedis {
    port: u16,
    dir: PathBuf,
    server: Mutex<Option<Child>>,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let redis = Self {
            port: spare_port(),
            dir: temp_dir("redis"),
            server: Mutex::default(),
        };
        redis.resume().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What `redis-cli` prints for `args`, run off the async thread.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut cli = Command::new("redis-cli");
        cli.args(["-p", &self.port.to_string()]).args(args);
        let output = tokio::task::spawn_blocking(move || cli.output())
            .await
            .unwrap()
            .expect("redis-cli runs; `make test` installs it");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A field of `INFO`, such as `used_memory`.
    pub async fn info(&self, field: &str) -> f64 {
        let info = self.cli(&["INFO"]).await;
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// Keys held.
    pub async fn keys(&self) -> f64 {
        let keys = self.cli(&["DBSIZE"]).await;
        keys.trim().parse().unwrap_or(f64::NAN)
    }

    /// Kills the server outright (SIGKILL: what it acknowledged is in its
    /// append-only file, fsynced at every write), then starts it again on
    /// the same port and data.
    pub async fn crash_and_restart(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(mut server) = server {
            let reaped = tokio::task::spawn_blocking(move || {
                let _ = server.kill();
                server.wait()
            });
            let _ = reaped.await;
        }
        self.resume().await;
    }

    async fn resume(&self) {
        let server = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs; `make test` installs it");
        *self.server.lock().unwrap() = Some(server);
        let pong = || async { self.cli(&["PING"]).await.trim() == "PONG" };
        wait_until("redis-server", pong).await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(server) = self.server.get_mut().unwrap().as_mut() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster (`initdb`, `pg_ctl`), run as the `postgres`
/// account when this is root.
pub struct OwnPostgres {
    port: u16,
    dir: PathBuf,
    bindir: PathBuf,
}

impl OwnPostgres {
    pub async fn start() -> Self {
        let postgres = Self {
            port: spare_port(),
            dir: temp_dir("postgres"),
            bindir: postgres_bindir(),
        };
        if is_root() {
            let owned = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&postgres.dir)
                .status();
            assert!(owned.is_ok_and(|status| status.success()));
        }
        let data = postgres.data();
        postgres.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        let (log, options) = (
            postgres.log(),
            format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                postgres.port,
                postgres.dir.display()
            ),
        );
        postgres.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Connections from clients other than the one asking.
    pub async fn connections(&self) -> f64 {
        let sql = "SELECT count(*) FROM pg_stat_activity \
                   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";
        let mut psql = self.command("psql");
        psql.args(["-h", &self.dir.display().to_string()]).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-At",
            "-c",
            sql,
        ]);
        let output = tokio::task::spawn_blocking(move || psql.output()).await;
        let stdout = output.ok().and_then(Result::ok).map(|o| o.stdout);
        String::from_utf8_lossy(&stdout.unwrap_or_default())
            .trim()
            .parse()
            .unwrap_or(f64::NAN)
    }

    /// Restarts the server as an operator would (a fast shutdown: open
    /// connections are cut), and waits until it accepts connections; off
    /// the async thread, which the traffic goes on using meanwhile.
    pub async fn restart(&self) {
        let (data, log) = (self.data(), self.log());
        let mut restart = self.command("pg_ctl");
        restart.args(["-D", &data, "-l", &log, "-m", "fast", "-w", "restart"]);
        let output = tokio::task::spawn_blocking(move || restart.output())
            .await
            .unwrap()
            .unwrap();
        assert!(output.status.success(), "pg_ctl restart: {output:?}");
    }

    fn log(&self) -> String {
        format!("{}/server.log", self.dir.display())
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.display())
    }

    /// A PostgreSQL program, from `/` so that the `postgres` account need
    /// not enter the caller's directory.
    fn command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        let mut command = if is_root() {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
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
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let stop = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = self.command("pg_ctl").args(stop).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
    })
}

/// The directory holding `initdb` and `pg_ctl`: `pg_config`'s, or
/// Debian's newest `/usr/lib/postgresql/<version>/bin`.
fn postgres_bindir() -> PathBuf {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL's initdb is installed; `make test` installs it")
}
