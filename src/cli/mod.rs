//! The command line: `tollgate [--config FILE] serve | check-config |
//! migrate | admin ... | keys generate`.

mod admin;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{Application, Signals};
use crate::auth::keys;
use crate::clock::Clock;
use crate::config::{JwtAlgorithm, Settings};
use crate::{storage, telemetry};

#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    /// A TOML file layered over the embedded default (config/default.toml).
    #[arg(long, short, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Load and validate the configuration, print a summary, and exit.
    CheckConfig,
    /// Apply database migrations and exit.
    Migrate,
    /// Call a running service's admin API.
    Admin(admin::AdminCommand),
    /// Make signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new signing key to a file of its own (mode 0600): a private
    /// key in PKCS#8 PEM for EdDSA and ES256, a random secret for HMAC.
    Generate {
        #[arg(long, value_enum)]
        algorithm: JwtAlgorithm,
        /// The file to create; an existing one is left alone.
        #[arg(long)]
        out: PathBuf,
    },
}

impl Cli {
    pub async fn run(self) -> ExitCode {
        // Needs no settings: it makes the key a configuration names.
        if let Some(Command::Keys(KeysCommand::Generate { algorithm, out })) = &self.command {
            return match write_key(*algorithm, out) {
                Ok(kid) => {
                    println!(
                        "wrote a new {algorithm:?} key to {} (kid {kid})",
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        let settings = match Settings::load(self.config.as_deref()) {
            Ok(settings) => settings,
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        };
        let outcome = match self.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings, self.config).await,
            Command::CheckConfig => {
                check_config(&settings);
                Ok(())
            }
            Command::Migrate => migrate(settings).await,
            Command::Admin(command) => command.run(&settings).await,
            Command::Keys(_) => unreachable!("answered before the settings load"),
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Serves until stopped, reloading `config` (and the environment) on
/// SIGHUP as at start.
async fn serve(settings: Settings, config: Option<PathBuf>) -> anyhow::Result<()> {
    let logs = telemetry::init(&settings.telemetry)?;
    let signals = Signals::listen()?;
    let reload = move || Settings::load(config.as_deref());
    let served = match Application::build(settings, Clock::system()).await {
        Ok(app) => app.run_until_signal(signals, reload).await,
        Err(err) => Err(err),
    };
    logs.shutdown().await;
    served
}

fn check_config(settings: &Settings) {
    let users = if settings.database.is_some() {
        "postgres"
    } else {
        "memory"
    };
    println!("configuration is valid");
    println!("  listen          {}", settings.server.bind);
    match &settings.admin {
        Some(admin) => println!("  admin           {}", admin.bind),
        None => println!("  admin           none"),
    }
    println!("  users           {users}");
    println!(
        "  tasks           {}, {} workers",
        settings.queue.backend.as_str(),
        settings.queue.workers
    );
    println!(
        "  session idle    {} s, {} shards",
        settings.session.idle_ttl_secs, settings.session.shards
    );
    println!("  bcrypt cost     {}", settings.auth.bcrypt_cost);
    if let Ok(ring) = settings.key_ring() {
        println!(
            "  signing         {:?}, kid {}, {} previous key(s)",
            settings.auth.jwt_algorithm,
            ring.current.kid,
            ring.previous.len()
        );
    }
}

/// Writes a new key for `algorithm` to `out`, readable by its owner only;
/// answers its `kid`.
fn write_key(algorithm: JwtAlgorithm, out: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let text = keys::generate(algorithm);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    let key = keys::Key::read(algorithm, out).map_err(|problem| anyhow::anyhow!(problem))?;
    Ok(key.kid)
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let Some(database) = &settings.database else {
        anyhow::bail!("no [database] is configured: users are kept in memory, nothing to migrate");
    };
    let applied = storage::migrate(database).await?;
    println!("applied {applied} migration(s); the schema is up to date");
    Ok(())
}
