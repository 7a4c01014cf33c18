//! Redis for the tests: a key prefix per test, whose keys are deleted
//! afterwards, and private `redis-server` processes that a test may stop
//! and start without disturbing the others.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, HashesInterface, KeysInterface, LuaInterface};
use tollgate::clock::Clock;
use tollgate::config::{RedisSettings, Settings};
use tollgate::storage::{Keyspace, QueuePolicy, QueueStore, Redis, redis_queue};

use super::{eventually, on_a_fresh_runtime, spare_port};

/// Where the tests find Redis; `make test` makes sure it answers.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Redis the tests share.
pub fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// A key prefix of one test's own, whose keys are deleted when dropped:
/// those under the prefix's own hash tag and under those of its
/// partitions.
pub struct TestRedis {
    url: String,
    prefix: String,
    /// Partitions of the queue and sessions kept under the prefix.
    pub partitions: usize,
}

impl TestRedis {
    /// A prefix nobody else uses.
    pub fn new_prefix() -> String {
        format!("test-{}", uuid::Uuid::new_v4().simple())
    }

    /// Settings for the shared Redis under `prefix`.
    pub fn settings(prefix: &str) -> RedisSettings {
        RedisSettings {
            url: Some(redis_url().parse().unwrap()),
            cluster_nodes: Vec::new(),
            pool_size: 2,
            key_prefix: prefix.parse().unwrap(),
            timeout_secs: 2,
            tls_ca_file: None,
        }
    }

    /// A fresh prefix on the shared Redis.
    pub fn new() -> Self {
        Self::on(redis_url())
    }

    /// A fresh prefix on the Redis (or Redis Cluster) at `url`.
    pub fn on(url: String) -> Self {
        Self {
            url,
            prefix: Self::new_prefix(),
            partitions: 1,
        }
    }

    /// The same prefix, with the queue and sessions kept in `partitions`
    /// partitions.
    pub fn partitioned(mut self, partitions: usize) -> Self {
        self.partitions = partitions;
        self
    }

    /// The hash tags of the prefix's keys: its own and its partitions'.
    fn tags(&self) -> Vec<String> {
        let mut tags = vec![format!("{{{}}}", self.prefix)];
        if self.partitions > 1 {
            let spaces = Keyspace::partitions(&self.prefix, self.partitions);
            tags.extend(spaces.iter().map(|space| space.tag().to_owned()));
        }
        tags
    }

    /// Takes charge of the keys under the prefix `settings` name.
    pub fn adopt(settings: &Settings) -> Self {
        let redis = settings.redis.as_ref().expect("test settings name a Redis");
        let url = match (&redis.url, redis.cluster_nodes.first()) {
            (_, Some(node)) => format!("redis-cluster://{}:{}", node.host, node.port),
            (Some(url), None) => url.expose().to_owned(),
            (None, None) => unreachable!("valid settings name a url or cluster nodes"),
        };
        Self {
            url,
            prefix: redis.key_prefix.as_str().to_owned(),
            partitions: settings.queue.partitions.max(settings.session.partitions),
        }
    }

    /// The entries of the stream `{prefix}:<stream>`, read with
    /// `redis-cli XREAD` as a consumer would: each a list of field and
    /// value pairs, oldest first.
    pub fn xread(&self, stream: &str) -> Vec<Vec<(String, String)>> {
        let key = format!("{{{}}}:{stream}", self.prefix);
        let read = Command::new("redis-cli")
            .args([
                "-u", &self.url, "XREAD", "COUNT", "1000", "STREAMS", &key, "0",
            ])
            .output()
            .expect("redis-cli runs; `make test` installs it");
        assert!(read.status.success(), "{read:?}");
        // Not on a terminal, redis-cli prints one element a line: the
        // stream's name, then each entry's id and its fields and values.
        let text = String::from_utf8(read.stdout).unwrap();
        let mut lines = text.lines().skip(1).peekable();
        let mut entries = Vec::new();
        while lines.next().is_some() {
            let mut fields = Vec::new();
            while let Some(line) = lines.next_if(|line| !is_entry_id(line)) {
                fields.push((line.to_owned(), lines.next().unwrap_or_default().to_owned()));
            }
            entries.push(fields);
        }
        entries
    }

    /// The queue store on this prefix, in its partitions, with the
    /// embedded default's policy, reading time from `clock`.
    pub async fn queue_store(&self, clock: Clock) -> Arc<dyn QueueStore> {
        let policy = QueuePolicy::new(&Settings::embedded_default().queue, clock);
        redis_queue(self.connect().await, policy, self.partitions)
            .await
            .unwrap()
    }

    /// The URL of the Redis (or Redis Cluster) the prefix is on.
    pub fn redis_url(&self) -> &str {
        &self.url
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Connection settings for this prefix.
    pub fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            url: Some(self.url.parse().unwrap()),
            ..Self::settings(&self.prefix)
        }
    }

    /// A connection under this prefix, as the service makes it.
    pub async fn connect(&self) -> Arc<Redis> {
        let redis = Redis::connect(&self.redis_settings()).await.unwrap();
        Arc::new(redis)
    }

    /// The names of the keys under the prefix.
    pub async fn keys(&self) -> Vec<String> {
        self.keys_matching("*").await
    }

    /// The names of the keys under the prefix that end in what `pattern`
    /// matches.
    pub async fn keys_matching(&self, pattern: &str) -> Vec<String> {
        let script = "return redis.call('KEYS', ARGV[1])";
        let mut keys = Vec::new();
        for tag in self.tags() {
            let found: Vec<String> = eval_on_tag(&self.url, &tag, script, pattern)
                .await
                .expect("Redis answers");
            keys.extend(found);
        }
        keys
    }

    /// How long `key` has left to live, in milliseconds (negative: forever
    /// or gone).
    /// A field of the hash at `key`, if there is one.
    pub async fn hget(&self, key: &str, field: &str) -> Option<String> {
        let client = Builder::from_config(Config::from_url(&self.url).unwrap())
            .build()
            .unwrap();
        client.init().await.expect("Redis answers");
        let value = client.hget(key, field).await.expect("Redis answers");
        let _ = client.quit().await;
        value
    }

    pub async fn hdel(&self, key: &str, fields: &[&str]) {
        let client = Builder::from_config(Config::from_url(&self.url).unwrap())
            .build()
            .unwrap();
        client.init().await.expect("Redis answers");
        let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        let _: i64 = client.hdel(key, fields).await.expect("Redis answers");
        let _ = client.quit().await;
    }

    pub async fn del(&self, key: &str) {
        let client = Builder::from_config(Config::from_url(&self.url).unwrap())
            .build()
            .unwrap();
        client.init().await.expect("Redis answers");
        let _: i64 = client.del(key).await.expect("Redis answers");
        let _ = client.quit().await;
    }

    pub async fn ttl_ms(&self, key: &str) -> i64 {
        let client = Builder::from_config(Config::from_url(&self.url).unwrap())
            .build()
            .unwrap();
        client.init().await.expect("Redis answers");
        let ttl = client.pttl(key).await.expect("Redis answers");
        let _ = client.quit().await;
        ttl
    }
}

/// Whether `line` is a stream entry id, `<milliseconds>-<sequence>`.
fn is_entry_id(line: &str) -> bool {
    let number = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    line.split_once('-')
        .is_some_and(|(ms, seq)| number(ms) && number(seq))
}

/// Runs `script` with the pattern of `tag`'s keys ending in `pattern` as
/// its one argument, on the node that holds the tag's slot.
async fn eval_on_tag<R: fred::types::FromValue>(
    url: &str,
    tag: &str,
    script: &'static str,
    pattern: &str,
) -> Result<R, fred::error::Error> {
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    let answer = client
        .eval(script, format!("{tag}:ring"), format!("{tag}*{pattern}"))
        .await;
    client.quit().await?;
    answer
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // One atomic step: once no task key is left, no script can bring a
        // key back, so a worker still finishing cannot leave one behind.
        let (url, tags) = (self.url.clone(), self.tags());
        let deleted = on_a_fresh_runtime(async move {
            for tag in tags {
                eval_on_tag::<()>(
                    &url,
                    &tag,
                    "for _, key in ipairs(redis.call('KEYS', ARGV[1])) do \
                     redis.call('UNLINK', key) end",
                    "",
                )
                .await?;
            }
            Ok::<(), fred::error::Error>(())
        });
        if !matches!(deleted, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not delete the keys of {}: {deleted:?}", self.prefix);
        }
    }
}

/// A `redis-server` of one test's own on a spare port, keeping its data in
/// an append-only file that survives a stop and a start. Killed and removed
/// when dropped.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    server: Option<Child>,
    /// The port answering TLS with a certificate and key, beside the
    /// plaintext one, if the server was started with them.
    tls: Option<(u16, PathBuf, PathBuf)>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// A server that also answers TLS, presenting `ca`'s server
    /// certificate, on [`PrivateRedis::tls_url`].
    pub async fn start_with_tls(ca: &super::TestCa) -> Self {
        let (cert, key) = ca.server_files();
        Self::launch(Some((spare_port(), cert, key))).await
    }

    async fn launch(tls: Option<(u16, PathBuf, PathBuf)>) -> Self {
        let port = spare_port();
        let dir = std::env::temp_dir().join(format!("tollgate-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port,
            dir,
            server: None,
            tls,
        };
        redis.resume().await;
        redis
    }

    pub fn tls_url(&self) -> String {
        let (port, ..) = self.tls.as_ref().expect("started with TLS");
        format!("rediss://127.0.0.1:{port}")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Settings for this server under `prefix`, giving up on a command
    /// after a second so that an outage shows quickly.
    pub fn settings(&self, prefix: &str) -> RedisSettings {
        RedisSettings {
            url: Some(self.url().parse().unwrap()),
            timeout_secs: 1,
            ..TestRedis::settings(prefix)
        }
    }

    /// Stops the server (SIGTERM) and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let pid = server.id().to_string();
            let status = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(status.unwrap().success());
            server.wait().unwrap();
        }
    }

    /// Starts the server again on the same port and data, and waits until
    /// it answers.
    pub async fn resume(&mut self) {
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
            .args(self.tls.iter().flat_map(|(port, cert, key)| {
                let port = port.to_string();
                [
                    "--tls-port".as_ref(),
                    port.as_ref(),
                    "--tls-cert-file".as_ref(),
                    cert.as_os_str(),
                    "--tls-key-file".as_ref(),
                    key.as_os_str(),
                    "--tls-auth-clients".as_ref(),
                    "no".as_ref(),
                ]
                .map(std::ffi::OsStr::to_owned)
            }))
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs; `make test` installs it");
        self.server = Some(server);
        assert!(
            answers_soon(&self.url()).await,
            "the private redis-server on port {} did not start",
            self.port
        );
    }
}

/// Waits up to ten seconds for the Redis at `url` to answer a PING.
async fn answers_soon(url: &str) -> bool {
    eventually(Duration::from_secs(10), || answers(url)).await
}

/// Whether a Redis answers at `url` now.
async fn answers(url: &str) -> bool {
    let Ok(client) = Builder::from_config(Config::from_url(url).unwrap()).build() else {
        return false;
    };
    let answered = client.init().await.is_ok() && client.ping::<()>(None).await.is_ok();
    let _ = client.quit().await;
    answered
}

/// A Redis Cluster of the test's own: `masters` `redis-server` processes in
/// cluster mode on spare ports, the slots spread over them, no replicas.
/// Killed and removed when dropped.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    servers: Vec<Child>,
}

impl RedisCluster {
    /// Starts one node on spare ports. Another test may take a port
    /// between its choosing and the node's binding it: then the node
    /// exits, and it is started again on other ports.
    async fn start_node(&self) -> (std::process::Child, u16) {
        for _ in 0..5 {
            // The bus port is chosen too: the default, port + 10000, may
            // not exist above 55535.
            let (port, bus) = (spare_port(), spare_port());
            let mut server = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs; `make test` installs it");
            let url = format!("redis://127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(server.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                if answers(&url).await {
                    return (server, port);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = server.kill();
            let _ = server.wait();
        }
        panic!("no cluster node started in five tries");
    }

    pub async fn start(masters: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            ports: Vec::new(),
            dir,
            servers: Vec::new(),
        };
        for _ in 0..masters {
            let (server, port) = cluster.start_node().await;
            cluster.servers.push(server);
            cluster.ports.push(port);
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs; `make test` installs it");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let ready = eventually(Duration::from_secs(20), || async {
            cluster.ports.iter().all(|port| {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
            })
        })
        .await;
        assert!(ready, "the cluster did not reach cluster_state:ok");
        cluster
    }

    /// `host:port` of every node, as `redis.cluster_nodes` takes them.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// A URL that reaches the whole cluster through its first node.
    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.ports[0])
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(server) = self.server.as_mut() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
