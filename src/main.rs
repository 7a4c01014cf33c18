use std::process::ExitCode;

use clap::Parser;
use tollgate::cli::Cli;

#[actix_web::main]
async fn main() -> ExitCode {
    Cli::parse().run().await
}
