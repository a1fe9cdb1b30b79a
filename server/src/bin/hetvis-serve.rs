//! `hetvis-serve`: the search server.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hetvis-serve",
    version,
    about = "hetvis heterogeneous visual search server"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "HETVIS_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("binding {}", cli.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, hetvis_server::routes::router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
