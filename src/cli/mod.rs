//! The command line: `tollgate [--config FILE] serve | check-config |
//! migrate | admin ...`.

mod admin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{Application, Signals};
use crate::clock::Clock;
use crate::config::Settings;
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
}

impl Cli {
    pub async fn run(self) -> ExitCode {
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
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let Some(database) = &settings.database else {
        anyhow::bail!("no [database] is configured: users are kept in memory, nothing to migrate");
    };
    let applied = storage::migrate(database).await?;
    println!("applied {applied} migration(s); the schema is up to date");
    Ok(())
}
