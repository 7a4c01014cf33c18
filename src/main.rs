use std::process::ExitCode;

use clap::Parser;
use tollgate::cli::Cli;

// Requests, tasks and sessions are many small allocations made and freed
// across threads, where mimalloc spends less than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    Cli::parse().run().await
}
