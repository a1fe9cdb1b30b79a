//! `hetvis-train replicate-stats`: seed statistics of an evaluation report (`scripts/replicates.sh` writes one).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use hetvis_models::atomic;
use hetvis_trainer::eval::Report;
use hetvis_trainer::replicates;

#[derive(Args)]
pub struct ReplicateStatsArgs {
    /// An evaluation report (`report.json` of `hetvis-train eval`) holding several seeds of each model.
    #[arg(long)]
    report: PathBuf,
    /// Also write the statistics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The model group compared with every other one (Welch's test): group names drop the tier, the `-bct`
    /// suffix and `-seedN` (`mobilenetv2-80x-bct-seed3` -> `mobilenetv2`).
    #[arg(long, default_value = replicates::SEARCHED)]
    reference: String,
}

pub fn run(a: ReplicateStatsArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.report)
        .with_context(|| format!("reading {}", a.report.display()))?;
    let report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an evaluation report", a.report.display()))?;
    let stats = replicates::compute(&report, &a.reference);
    print!("{}", replicates::markdown(&stats));
    if let Some(path) = a.json {
        atomic::write(&path, serde_json::to_string_pretty(&stats)?.as_bytes())?;
    }
    Ok(())
}
