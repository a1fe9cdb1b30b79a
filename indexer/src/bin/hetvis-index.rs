//! `hetvis-index`: build and inspect gallery indexes.

use clap::Parser;

#[derive(Parser)]
#[command(name = "hetvis-index", version, about = "hetvis gallery indexer")]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
