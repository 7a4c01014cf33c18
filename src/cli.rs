//! The command line: `tollgate [--config FILE] serve | check-config | migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
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
            Command::Serve => serve(settings).await,
            Command::CheckConfig => {
                check_config(&settings);
                Ok(())
            }
            Command::Migrate => migrate(settings).await,
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    telemetry::init(&settings.telemetry);
    Application::build(settings, Clock::system())
        .await?
        .run()
        .await?;
    Ok(())
}

fn check_config(settings: &Settings) {
    let users = if settings.database.is_some() {
        "postgres"
    } else {
        "memory"
    };
    println!("configuration is valid");
    println!("  listen          {}", settings.server.bind);
    println!("  users           {users}");
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
