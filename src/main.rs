//! The `sallyport` binary: parses the command line, loads the config, and either serves
//! or runs one admin command. See `sallyport --help`.

use clap::Parser;
use sallyport::cli::{Cli, Command};
use sallyport::config::Config;
use std::io::IsTerminal;
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: the set-up path allocates and frees many small
/// buffers (SIP messages, rows) across the runtime's threads, where glibc's allocator took
/// about 6 % of a call's CPU in profiles. The library's tests keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Checking an evidence package needs no configuration, database or network: it runs
    // wherever the package was copied to.
    if let Some(Command::VerifyPackage { file }) = &cli.command {
        return ExitCode::from(sallyport::cli::verify_package(file));
    }
    init_tracing();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => sallyport::server::run(config).await,
        // No database: it only signals the running node.
        Command::Drain { wait } => sallyport::cluster::drain::request(&config, wait),
        other => sallyport::cli::run_admin(other, &config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sallyport::cli::error_report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard error, coloured only when it is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>): a log redirected to a file or a pipe (systemd,
/// `2> gateway.log`) holds plain text, not ANSI escapes.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SALLYPORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .init();
}
