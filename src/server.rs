//! `sallyport serve`: connect, migrate, close what a previous run left open, seed the demo
//! on first start, and serve until Ctrl-C / SIGTERM.

use crate::api::{router, AppState};
use crate::config::Config;
use anyhow::Context;
use std::sync::Arc;

/// Runs the gateway until it is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = crate::cli::open(&config).await?;
    let closed =
        crate::sessions::close_orphans(store.db(), &config.node.id, store.clock().wall()).await?;
    if closed > 0 {
        tracing::warn!(
            closed,
            "closed sessions left open by a previous run (reason: system)"
        );
    }
    if config.demo.seed_on_first_start && store.facilities().await?.is_empty() {
        let info = crate::demo::seed(&store, &config)
            .await
            .context("seeding the demo")?;
        println!("{}", info.describe());
    }
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    // Tests start the binary on port 0 and read this line to find the API.
    println!("sallyport: HTTP API listening on http://{addr}");
    tracing::info!(%addr, node = %config.node.id, "serving");
    let app = router(AppState::new(store.clone(), Arc::new(config)));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    store.db().close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
