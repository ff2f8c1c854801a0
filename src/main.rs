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
    no_transparent_huge_pages();
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

/// Turns transparent huge pages off for this process. mimalloc asks for them on its
/// arenas (`MADV_HUGEPAGE`), and as the gateway's memory grows and is handed back, each
/// first touch of a freed region made the kernel zero a whole 2 MiB page: 6-10 % of the
/// gateway's CPU at 300 set-ups a second, against about 2 % for the same memory in 4 KiB
/// pages. The flag is the process's (every thread, mappings made before it too); a kernel
/// without it leaves things as they were.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and touches no memory
    // of ours; its result is only an error code, ignored (huge pages are an optimisation).
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
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
