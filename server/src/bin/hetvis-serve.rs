//! `hetvis-serve`: the search server.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hetvis_server::config::ServerConfig;
use hetvis_server::state::SharedState;
use hetvis_server::{routes, shutdown, startup};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            // hnsw_rs reports every graph build at info level.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hnsw_rs=warn".into()),
        )
        .init();
    let config = ServerConfig::parse();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hetvis-serve: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: ServerConfig) -> anyhow::Result<()> {
    // Loading is blocking work, done before the async runtime starts.
    let state = startup::load(&config).context("cannot start")?;
    startup::build_graph_in_background(&state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(state, config.addr));
    // Detached blocking tasks (a request abandoned at its timeout) get a moment, not forever.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn serve(state: SharedState, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // A parseable line on stdout for scripts and tests that start the server on port 0.
    let mut out = std::io::stdout();
    writeln!(out, "listening on http://{local}")?;
    out.flush()?;
    tracing::info!(addr = %local, "listening");
    axum::serve(listener, routes::router(state.clone()))
        .with_graceful_shutdown(shutdown::signal())
        .await
        .context("serving")?;
    // A gallery addition answered 202 is still being saved: let it finish before exiting.
    drop(state.writer.lock().await);
    tracing::info!("stopped");
    Ok(())
}
