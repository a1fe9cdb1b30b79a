//! `hetvis-train score`: rewards of given architectures under a trained super-network, scored as the search
//! scores its candidates.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use hetvis_models::arch::Backbone;
use hetvis_trainer::cmpnas::{self, Evaluator, Reward};
use hetvis_trainer::tier::mmacs;
use hetvis_trainer::train::{self, GalleryRun};

use crate::common::{query_spec, Ctx, DataArgs};

#[derive(Args)]
pub struct ScoreArgs {
    #[arg(long)]
    supernet: PathBuf,
    /// Spec JSON files (a model spec or an SPOS backbone, such as a search's best.json).
    #[arg(long, required = true)]
    arch: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Reward::R3)]
    reward: Reward,
    #[command(flatten)]
    data: DataArgs,
}

pub fn run(ctx: &Ctx, a: ScoreArgs) -> anyhow::Result<()> {
    let (sn, run) = cmpnas::load_supernet(&a.supernet, ctx.device)?;
    let done = train::epochs_done(&a.supernet);
    if done < run.preset.epochs {
        bail!(
            "{}: the super-network has trained {done} of {} epochs; finish it first (`hetvis-train supernet`)",
            a.supernet.display(),
            run.preset.epochs
        );
    }
    let (p, _) = ctx.gallery_preset(&run.gallery)?;
    let (ds, _) = ctx.dataset(&p, &a.data)?;
    let g = GalleryRun::load(&run.gallery, p.classifier, ctx.device)?;
    let evaluator = Evaluator::new(&ds, &g, &p.cmpnas, a.reward, run.preset.batch);
    for path in a.arch {
        let spec = query_spec(&path.to_string_lossy(), &p)?;
        let Backbone::Spos(arch) = &spec.backbone else {
            bail!("{}: not an SPOS architecture", path.display());
        };
        if arch.space != run.space {
            bail!(
                "{}: another SPOS space than the super-network's",
                path.display()
            );
        }
        let rewards = evaluator.evaluate(&sn, arch).map_err(anyhow::Error::msg)?;
        let line = serde_json::json!({
            "arch": path.display().to_string(),
            "mmacs": mmacs(&spec),
            "rewards": rewards,
        });
        println!("{line}");
    }
    Ok(())
}
