//! Settings that are more than numbers, parsed as they are read: a value
//! of one of these types has been checked, so nothing downstream checks it
//! again, and a bad one is reported with its key like any other. Lists come
//! as TOML lists, or comma-separated in an environment variable, and every
//! bad item of one is named at once.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, de::Error as _};
use tokio_postgres::config::SslMode as TokioSslMode;

/// Writes `Deserialize` for a type from its `FromStr`, whose error says
/// what the value must be.
macro_rules! deserialize_from_str {
    ($($type:ty),*) => {$(
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(D::Error::custom)
            }
        }
    )*};
}

deserialize_from_str!(
    HostPort,
    Host,
    Origin,
    LogLevel,
    HttpUrl,
    KeyPrefix,
    StreamName,
    RedisUrl,
    DatabaseUrl
);

/// A list from a file, or the comma-separated string an environment
/// variable holds, each item parsed; every bad item is named.
pub fn parsed_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err: std::fmt::Display>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    let items = match ListOrString::deserialize(deserializer)? {
        ListOrString::List(items) => items,
        ListOrString::String(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let (parsed, bad): (Vec<_>, Vec<_>) = items
        .iter()
        .map(|item| item.parse::<T>())
        .partition(Result::is_ok);
    if bad.is_empty() {
        Ok(parsed.into_iter().flatten().collect())
    } else {
        let problems: Vec<String> = bad
            .into_iter()
            .filter_map(Result::err)
            .map(|err| err.to_string())
            .collect();
        Err(D::Error::custom(problems.join("; ")))
    }
}

/// `host:port`, as `redis.cluster_nodes` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        raw.rsplit_once(':')
            .and_then(|(host, port)| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (!host.is_empty()).then_some(())?;
                Some(Self {
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                })
            })
            .ok_or_else(|| format!("{raw:?} is not host:port"))
    }
}

/// A DNS name or an IP address (an IPv6 one maybe in brackets), as the
/// webhook allowlist compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(String);

impl Host {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Host {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw.len() <= 253
            && raw.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        valid
            .then(|| Self(raw.to_owned()))
            .ok_or_else(|| format!("{raw:?} is not a host name or address"))
    }
}

/// A browser origin exactly as a browser writes it in `Origin`: `http` or
/// `https`, a host in lower case and a port unless it is the default; no
/// path, and never `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let exact = reqwest::Url::parse(raw).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https") && url.origin().ascii_serialization() == raw
        });
        exact.then(|| Self(raw.to_owned())).ok_or_else(|| {
            format!(
                "{raw:?} is not an origin (scheme://host[:port], no path; \"*\" is not allowed)"
            )
        })
    }
}

/// A block of addresses, `10.0.0.0/8` or `fd00::/8` (a bare address is a
/// block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(ipnet::IpNet);

impl Network {
    pub fn contains(&self, address: &IpAddr) -> bool {
        self.0.contains(address)
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        raw.parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(Self)
            .map_err(|_| {
                format!("{raw:?} is not an address or a CIDR block (10.0.0.0/8, fd00::/8)")
            })
    }
}

/// `telemetry.log_file`: a file name of UTF-8 in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    path: PathBuf,
    name: String,
}

impl LogFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the file goes in (`.` for a bare name).
    pub fn directory(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(".".as_ref())
    }

    /// The file's name; each day's file has the date appended.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<'de> Deserialize<'de> for LogFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(deserializer)?;
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| D::Error::custom("must end in a file name of UTF-8"))?
            .to_owned();
        Ok(Self { path, name })
    }
}

/// A `tracing` filter such as `info` or `tollgate=debug,info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(String);

impl LogLevel {
    pub fn filter(&self) -> tracing_subscriber::EnvFilter {
        // Checked when it was parsed.
        tracing_subscriber::EnvFilter::new(&self.0)
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        tracing_subscriber::EnvFilter::try_new(raw)
            .map(|_| Self(raw.to_owned()))
            .map_err(|_| format!("{raw:?} is not a valid filter"))
    }
}

/// An `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(reqwest::Url);

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        reqwest::Url::parse(raw)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .map(Self)
            .ok_or_else(|| format!("{raw:?} is not an http(s) URL"))
    }
}

/// What every Redis key starts with, inside the hash tag's braces: 1 to
/// 64 printable characters, no braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyPrefix {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        valid.then(|| Self(raw.to_owned())).ok_or_else(|| {
            format!("must be 1 to 64 printable characters without braces (got {raw:?})")
        })
    }
}

/// The events stream's name under the key prefix: 1 to 64 printable
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamName(String);

impl StreamName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamName {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_graphic());
        valid
            .then(|| Self(raw.to_owned()))
            .ok_or_else(|| format!("must be 1 to 64 printable characters (got {raw:?})"))
    }
}

/// Writes a URL setting that may carry a password: it never prints, a
/// bad one is not quoted, and `$valid` decides what parses.
macro_rules! secret_url {
    ($(#[$doc:meta])* $name:ident, $what:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(raw: &str) -> Result<Self, String> {
                let valid: fn(&str) -> bool = $valid;
                valid(raw)
                    .then(|| Self(raw.into()))
                    .ok_or_else(|| concat!("is not a valid ", $what).to_owned())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

secret_url!(
    /// A Redis URL: `redis://`, `rediss://` or `redis-cluster://`.
    RedisUrl,
    "Redis URL",
    |raw| fred::types::config::Config::from_url(raw).is_ok()
);

impl RedisUrl {
    /// Whether the scheme asks for TLS: `rediss` or `valkeys`, alone or
    /// with `-cluster` or `-sentinel`, as fred reads them.
    pub fn uses_tls(&self) -> bool {
        let scheme = self.expose().split("://").next().unwrap_or_default();
        matches!(scheme.split('-').next(), Some("rediss" | "valkeys"))
    }
}

secret_url!(
    /// A libpq-style PostgreSQL URL, `sslmode` included.
    DatabaseUrl,
    "PostgreSQL connection URL",
    |raw| postgres_config(raw).is_ok()
);

/// How a PostgreSQL connection uses TLS: libpq's `sslmode`, whose default
/// is `prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; the certificate
    /// is not checked.
    Prefer,
    /// TLS or nothing; the certificate is checked only against a
    /// `tls_ca_file`, as libpq does with a root certificate file.
    Require,
    /// TLS, with a certificate issued by a trusted CA, for any host name.
    VerifyCa,
    /// TLS, with a certificate issued by a trusted CA for the host.
    VerifyFull,
}

impl DatabaseUrl {
    /// The connection settings as tokio-postgres takes them, and the TLS
    /// mode asked for.
    pub fn connection(&self) -> (tokio_postgres::Config, SslMode) {
        postgres_config(self.expose()).expect("parsed when the setting was read")
    }
}

/// tokio-postgres knows `disable`, `prefer` and `require`; the two modes
/// that verify are `require` to it, the checking being the TLS client's.
fn postgres_config(raw: &str) -> Result<(tokio_postgres::Config, SslMode), &'static str> {
    const KEY: &str = "sslmode=";
    let start = raw.match_indices(KEY).map(|(at, _)| at).find(|&at| {
        at == 0 || matches!(raw.as_bytes()[at - 1], b'?' | b'&' | b' ' | b'\t' | b'\n')
    });
    let Some(start) = start else {
        let config: tokio_postgres::Config = raw.parse().map_err(|_| "cannot be read")?;
        // An escaped key tokio-postgres decodes may still name a mode.
        if config.get_ssl_mode() != TokioSslMode::Prefer {
            return Err("names sslmode in a way that cannot be checked");
        }
        return Ok((config, SslMode::Prefer));
    };
    let value_at = start + KEY.len();
    let value_end = raw[value_at..]
        .find(|c: char| c == '&' || c.is_whitespace())
        .map_or(raw.len(), |end| value_at + end);
    let (mode, spoken) = match &raw[value_at..value_end] {
        "verify-ca" => (SslMode::VerifyCa, "require"),
        "verify-full" => (SslMode::VerifyFull, "require"),
        "require" => (SslMode::Require, "require"),
        "disable" => (SslMode::Disable, "disable"),
        // Anything else is tokio-postgres's to accept or refuse.
        other => (SslMode::Prefer, other),
    };
    let rewritten = format!("{}{spoken}{}", &raw[..value_at], &raw[value_end..]);
    let config: tokio_postgres::Config = rewritten.parse().map_err(|_| "cannot be read")?;
    // tokio-postgres takes the last `sslmode` (and decodes escaped keys):
    // what it read must be what was meant, or a second `sslmode=disable`
    // would turn a verified connection into plaintext.
    let meant = match mode {
        SslMode::Disable => Some(TokioSslMode::Disable),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Some(TokioSslMode::Require),
        SslMode::Prefer => None,
    };
    if meant.is_some_and(|meant| meant != config.get_ssl_mode()) {
        return Err("names sslmode more than once");
    }
    Ok((config, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_need_a_host_and_a_numeric_port() {
        let node: HostPort = "10.0.0.1:7000".parse().unwrap();
        assert_eq!((node.host.as_str(), node.port), ("10.0.0.1", 7000));
        let v6: HostPort = "[::1]:7000".parse().unwrap();
        assert_eq!(v6.host, "::1");
        for bad in ["10.0.0.1", ":7000", "host:port", "host:70000"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_redis_url_asks_for_tls_by_its_scheme_as_fred_reads_it() {
        for (raw, tls) in [
            ("redis://cache:6379", false),
            ("redis-cluster://cache:6379", false),
            ("rediss://cache:6380", true),
            ("rediss-cluster://cache:6380", true),
            ("valkeys://cache:6380", true),
        ] {
            let url: RedisUrl = raw.parse().unwrap();
            let fred = fred::types::config::Config::from_url(raw).unwrap();
            assert_eq!((url.uses_tls(), fred.uses_tls()), (tls, tls), "{raw}");
        }
    }

    #[test]
    fn urls_with_passwords_are_not_printed() {
        let url: DatabaseUrl = "postgres://u:hunter2@db/tollgate".parse().unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        let url: RedisUrl = "redis://:hunter2@cache:6379".parse().unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        let refused = "postgres://u:hunter2@db:notaport/x"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(!refused.contains("hunter2"), "{refused}");
    }

    #[test]
    fn every_libpq_ssl_mode_is_read_from_either_form_of_url() {
        let cases = [
            ("postgres://db/x", SslMode::Prefer, TokioSslMode::Prefer),
            (
                "postgres://db/x?sslmode=disable",
                SslMode::Disable,
                TokioSslMode::Disable,
            ),
            (
                "postgres://db/x?sslmode=prefer",
                SslMode::Prefer,
                TokioSslMode::Prefer,
            ),
            (
                "postgres://db/x?sslmode=require",
                SslMode::Require,
                TokioSslMode::Require,
            ),
            (
                "postgres://db/x?application_name=a&sslmode=verify-ca&connect_timeout=3",
                SslMode::VerifyCa,
                TokioSslMode::Require,
            ),
            (
                "host=db sslmode=verify-full user=u",
                SslMode::VerifyFull,
                TokioSslMode::Require,
            ),
        ];
        for (raw, mode, spoken) in cases {
            let url: DatabaseUrl = raw.parse().unwrap();
            let (config, read) = url.connection();
            assert_eq!((read, config.get_ssl_mode()), (mode, spoken), "{raw}");
        }
        for bad in [
            "postgres://db/x?sslmode=verify",
            "host=db sslmode=allow-all",
        ] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_log_file_is_split_into_its_directory_and_name() {
        let file: LogFile =
            serde_json::from_value(serde_json::json!("/var/log/tollgate.log")).unwrap();
        assert_eq!(file.directory(), Path::new("/var/log"));
        assert_eq!(file.name(), "tollgate.log");
        let bare: LogFile = serde_json::from_value(serde_json::json!("tollgate.log")).unwrap();
        assert_eq!(bare.directory(), Path::new("."));
    }
}
