//! The Redis connection every Redis-backed store shares: one fred pool,
//! the `{key_prefix}` hash tag every key starts with (so that on Redis
//! Cluster all of Tollgate's keys share a slot and one script may touch
//! any of them), scripts run by their SHA (loaded again after a restart),
//! TLS for `rediss://`, and fred's failures sorted into the two kinds of
//! [`StoreError`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fred::prelude::{
    ClientLike, Config, ConnectionConfig, Error as FredError, ErrorKind, PerformanceConfig, Pool,
    ReconnectPolicy, Server, ServerConfig, Value,
};
use fred::types::config::TlsConnector;
use fred::types::scripts::Script;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::StoreError;
use crate::config::RedisSettings;

/// Most items one sweeping script call handles (sessions swept, leases
/// reclaimed, tasks cancelled or purged): a script holds Redis while it
/// runs, so a backlog goes in slices.
pub const SLICE: usize = 1000;

/// Pause between attempts to reconnect a lost connection.
const RECONNECT_DELAY_MS: u32 = 250;

/// Times a command may be written before it fails. Every script is safe to
/// run twice, so one sent again after a dropped connection does no harm.
const RESEND_ATTEMPTS: u32 = 3;

/// What fred answers when it has no connection to send a command on.
const NO_CONNECTION: &str = "Failed to route command.";

/// Replies with which a Redis server says it cannot serve right now:
/// loading its data, a busy script, a failover under way.
const TRANSIENT_REPLIES: [&str; 6] = [
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "READONLY",
    "TRYAGAIN",
    "NOREPLICAS",
];

impl From<FredError> for StoreError {
    fn from(err: FredError) -> Self {
        let transient = match err.kind() {
            ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Cluster
            | ErrorKind::Routing
            | ErrorKind::Backpressure
            | ErrorKind::Auth => true,
            _ => {
                err.details() == NO_CONNECTION
                    || TRANSIENT_REPLIES
                        .iter()
                        .any(|reply| err.details().starts_with(reply))
            }
        };
        if transient {
            Self::Unavailable(err.into())
        } else {
            Self::Failed(err.into())
        }
    }
}

/// The shared pool, with the prefix of the keys it may touch.
pub struct Redis {
    pool: Pool,
    /// `key_prefix`, without braces.
    prefix: String,
    /// `{key_prefix}`: the hash tag every key outside a partition starts with.
    home: Keyspace,
}

/// A group of keys under one hash tag, so that on a Redis Cluster they
/// share a slot and one script may touch any of them.
#[derive(Debug, Clone)]
pub struct Keyspace {
    /// The hash tag, braces included, that each key starts with.
    tag: String,
    /// A key in the tag's slot, so that a cluster routes each script run
    /// in this keyspace to the node holding it.
    route_key: String,
}

/// Slots in a Redis Cluster.
const SLOTS: usize = 16_384;

impl Keyspace {
    fn new(tag: String) -> Self {
        Self {
            route_key: format!("{tag}:ring"),
            tag,
        }
    }

    /// The hash tag every key of this keyspace starts with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `count` keyspaces for `prefix`: with one, `{prefix}` itself, as
    /// before partitions existed; with more, `{prefix.<i>}` (or
    /// `{prefix.<i>.<n>}` for the first `n` that lands right), partition
    /// `i`'s slot inside the `i`th of `count` equal ranges of slots, so
    /// that a cluster whose masters hold equal ranges holds equal shares of
    /// them. (Never a range's first or last slot: a master's range may start
    /// or end one slot off the partitions' boundary.)
    pub fn partitions(prefix: &str, count: usize) -> Vec<Self> {
        if count <= 1 {
            return vec![Self::new(format!("{{{prefix}}}"))];
        }
        (0..count)
            .map(|i| {
                let range = i * SLOTS / count + 1..(i + 1) * SLOTS / count - 1;
                let lands = |tag: &String| {
                    range.contains(&usize::from(fred::util::redis_keyslot(tag.as_bytes())))
                };
                let first = format!("{{{prefix}.{i}}}");
                let tag = std::iter::once(first)
                    .chain((1..).map(|n| format!("{{{prefix}.{i}.{n}}}")))
                    .find(lands)
                    .expect("some suffix lands in every range");
                Self::new(tag)
            })
            .collect()
    }
}

impl Redis {
    /// Builds the pool and connects, waiting at most `timeout_secs` for it
    /// (on a cluster, for the map of its slots too). While Redis is down
    /// this still succeeds: the pool keeps reconnecting until it is back,
    /// and commands fail after `timeout_secs` meanwhile.
    pub async fn connect(settings: &RedisSettings) -> anyhow::Result<Self> {
        let mut config = match &settings.url {
            Some(url) => Config::from_url(url.expose()).context("parsing redis.url")?,
            None => Config::default(),
        };
        if !settings.cluster_nodes.is_empty() {
            config.server = ServerConfig::Clustered {
                hosts: settings
                    .cluster_nodes
                    .iter()
                    .map(|node| Server::new(node.host.as_str(), node.port))
                    .collect(),
                policy: Default::default(),
            };
        }
        if let Some(tls) = settings.tls()? {
            if let Some(server) = config.server.hosts().first() {
                check_handshake(tls.clone(), &server.host, server.port, settings.timeout())
                    .await
                    .context("redis.url")?;
            }
            config.tls = Some(TlsConnector::from(tls).into());
        }
        // Start even while Redis is down; reconnect until it is back.
        config.fail_fast = false;
        let performance = PerformanceConfig {
            default_command_timeout: settings.timeout(),
            ..PerformanceConfig::default()
        };
        let connection = ConnectionConfig {
            connection_timeout: settings.timeout(),
            internal_command_timeout: settings.timeout(),
            max_command_attempts: RESEND_ATTEMPTS,
            ..ConnectionConfig::default()
        };
        let reconnect = ReconnectPolicy::new_constant(0, RECONNECT_DELAY_MS);
        let pool = Pool::new(
            config,
            Some(performance),
            Some(connection),
            Some(reconnect),
            settings.pool_size,
        )?;
        drop(pool.connect_pool());
        let connected = tokio::time::timeout(settings.timeout(), pool.wait_for_connect()).await;
        if !matches!(connected, Ok(Ok(()))) {
            tracing::warn!("Redis does not answer yet; what needs it answers 503 until it does");
        }
        let prefix = settings.key_prefix.as_str().to_owned();
        Ok(Self {
            pool,
            home: Keyspace::new(format!("{{{prefix}}}")),
            prefix,
        })
    }

    /// The hash tag every key outside a partition starts with.
    pub fn prefix(&self) -> &str {
        &self.home.tag
    }

    /// `count` partitions of this prefix's keys (see [`Keyspace::partitions`]).
    pub fn partitions(&self, count: usize) -> Vec<Keyspace> {
        Keyspace::partitions(&self.prefix, count)
    }

    /// Runs a script with the prefix as its first argument, on the node
    /// that holds the prefix's slot.
    pub async fn run(&self, script: &Script, args: Vec<String>) -> Result<Value, StoreError> {
        self.run_in(&self.home, script, args).await
    }

    /// Runs a script with `space`'s tag as its first argument, on the node
    /// that holds its slot.
    pub async fn run_in(
        &self,
        space: &Keyspace,
        script: &Script,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        let args: Vec<String> = std::iter::once(space.tag.clone()).chain(args).collect();
        let client = self.pool.next_connected();
        Ok(script
            .evalsha_with_reload(client, space.route_key.as_str(), args)
            .await?)
    }

    /// Runs a script that handles at most [`SLICE`] items a call (its
    /// arguments say so), again and again until a call comes back short.
    /// Returns the items handled.
    pub async fn run_in_slices(
        &self,
        space: &Keyspace,
        script: &Script,
        args: impl Fn() -> Vec<String>,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let handled = count(self.run_in(space, script, args()).await?)?;
            total += handled;
            if handled < SLICE as u64 {
                return Ok(total);
            }
        }
    }

    /// A client of the pool, for plain commands.
    pub fn client(&self) -> &fred::clients::Client {
        self.pool.next_connected()
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.client().ping::<()>(None).await?)
    }
}

/// A script's answer that is a count.
pub fn count(answer: Value) -> Result<u64, StoreError> {
    answer
        .as_u64()
        .ok_or_else(|| StoreError::Failed(anyhow::anyhow!("expected a count, got {answer:?}")))
}

/// Builds a script from its file in a `lua/` folder beside the caller,
/// after the prelude of that folder.
#[macro_export]
macro_rules! lua_script {
    ($file:literal) => {
        fred::types::scripts::Script::from_lua(concat!(
            include_str!("lua/prelude.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// Shakes hands with `host:port` as the pool will, so that a certificate
/// the settings do not trust (or a server that does not speak TLS) stops
/// the start with the reason, rather than leaving the pool to retry
/// forever. A server that cannot be
/// reached is not an error here: the pool waits for it.
async fn check_handshake(
    config: ClientConfig,
    host: &str,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let Ok(Ok(stream)) =
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await
    else {
        return Ok(());
    };
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a host name or address"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err).with_context(|| format!("TLS with {host}:{port} failed")),
        Err(_) => anyhow::bail!("TLS with {host}:{port} got no answer within {timeout:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_over_equal_ranges_of_slots() {
        assert_eq!(Keyspace::partitions("tg", 1)[0].tag(), "{tg}");
        for count in [2, 7, 12, 256] {
            let spaces = Keyspace::partitions("tg", count);
            assert_eq!(spaces.len(), count);
            for (i, space) in spaces.iter().enumerate() {
                let slot = usize::from(fred::util::redis_keyslot(space.tag().as_bytes()));
                let range = i * SLOTS / count..(i + 1) * SLOTS / count;
                assert!(range.contains(&slot), "{} of {count}", space.tag());
                let route = fred::util::redis_keyslot(space.route_key.as_bytes());
                assert_eq!(usize::from(route), slot);
            }
        }
    }

    #[test]
    fn a_server_that_cannot_serve_yet_is_unavailable_not_failed() {
        let reply = |text: &'static str| StoreError::from(FredError::new(ErrorKind::Unknown, text));
        assert!(matches!(
            reply("LOADING Redis is loading the dataset in memory"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            reply("BUSY Redis is busy running a script"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(reply(NO_CONNECTION), StoreError::Unavailable(_)));
        assert!(matches!(
            reply("ERR Error running script"),
            StoreError::Failed(_)
        ));
        let timeout = FredError::new(ErrorKind::Timeout, "Request timed out.");
        assert!(matches!(
            StoreError::from(timeout),
            StoreError::Unavailable(_)
        ));
    }
}
