//! `hetvis-train step-bench`: training-step throughput on random data.

use clap::Args;
use hetvis_trainer::throughput;

use crate::common::{query_spec, Ctx};

#[derive(Args)]
pub struct StepBenchArgs {
    /// `gallery`, a baseline name of the preset, or a spec JSON.
    #[arg(long)]
    arch: String,
    #[arg(long, default_value = "cpu")]
    preset: String,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// libtorch intra-op threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Print the lowered network as JSON instead of measuring (input of the PyTorch twin).
    #[arg(long)]
    emit_net: bool,
}

pub fn run(ctx: &Ctx, a: StepBenchArgs) -> anyhow::Result<()> {
    let p = ctx.preset(&a.preset)?;
    let spec = if a.arch == "gallery" {
        p.gallery_spec()
    } else {
        query_spec(&a.arch, &p)?
    };
    if a.emit_net {
        println!("{}", serde_json::to_string(&spec.lower()?)?);
        return Ok(());
    }
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    let classes = 10;
    let t = throughput::measure(&spec, a.batch, a.warmup, a.steps, classes, ctx.device)?;
    println!("{}", serde_json::to_string(&t)?);
    Ok(())
}
