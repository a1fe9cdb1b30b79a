//! What every subcommand shares: the resolved device, data and presets, and the helpers that turn command-line
//! arguments into the library's run configurations.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use hetvis_models::arch::ModelSpec;
use hetvis_models::data::fashion_mnist::FashionMnist;
use hetvis_models::preprocess::Preprocessing;
use hetvis_models::runtime::{Device as OrtDevice, SessionConfig};
use hetvis_trainer::context::Context;
use hetvis_trainer::data::{Dataset, Source};
use hetvis_trainer::preset::{self, DataSpec, Preset};
use hetvis_trainer::train;

#[derive(Args, Clone)]
pub struct DataArgs {
    /// `fashion-mnist`, `synthetic`, or an image folder with one sub-folder per class (default: the preset's).
    #[arg(long)]
    pub data: Option<String>,
    /// Training seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The compatibility objective, over the preset's `compat` (see `hetvis_trainer::compat`).
#[derive(Args, Clone, Default)]
pub struct CompatArgs {
    /// Terms of the compatibility objective joined with `+`: bct (BCT's influence loss), reg (cosine regression
    /// onto the gallery embedding), con / supcon (cross-model contrastive, instance / supervised), rank (ranking
    /// distillation over the gallery's neighbours). Default: the preset's `compat.objective` (`bct`).
    #[arg(long, env = "HETVIS_OBJECTIVE")]
    pub objective: Option<hetvis_trainer::compat::Objective>,
    /// Weight of the query model's own classification loss (0: the objective alone).
    #[arg(long)]
    pub cls_weight: Option<f64>,
    /// Weight of BCT's influence loss.
    #[arg(long)]
    pub bct_weight: Option<f64>,
    #[arg(long)]
    pub reg_weight: Option<f64>,
    /// Weight of con or supcon.
    #[arg(long)]
    pub con_weight: Option<f64>,
    #[arg(long)]
    pub rank_weight: Option<f64>,
    /// Temperature of the contrastive terms.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Gallery neighbours per image in ranking distillation.
    #[arg(long)]
    pub rank_k: Option<usize>,
}

impl CompatArgs {
    /// The preset with these options over its own.
    pub fn apply(&self, p: &mut Preset) {
        let c = &mut p.compat;
        if let Some(o) = &self.objective {
            c.objective = o.clone();
        }
        let set = |slot: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut c.cls_weight, self.cls_weight);
        set(&mut c.reg_weight, self.reg_weight);
        set(&mut c.con_weight, self.con_weight);
        set(&mut c.rank_weight, self.rank_weight);
        set(&mut c.temperature, self.temperature);
        set(&mut p.bct_weight, self.bct_weight);
        if let Some(k) = self.rank_k {
            p.compat.rank_k = k;
        }
    }
}

/// The global options, resolved once.
pub struct Ctx {
    pub device: tch::Device,
    pub fashion: FashionMnist,
    pub presets_text: Option<String>,
}

impl Ctx {
    pub fn preset(&self, name: &str) -> anyhow::Result<Preset> {
        Ok(preset::load(name, self.presets_text.as_deref())?)
    }

    /// The preset a gallery run was trained with, and its name.
    pub fn gallery_preset(&self, gallery: &Path) -> anyhow::Result<(Preset, String)> {
        let name = train::gallery_manifest(gallery)?.provenance.preset;
        Ok((self.preset(&name)?, name))
    }

    /// The data source and the label recorded in manifests.
    fn source(&self, p: &Preset, data: &DataArgs) -> (Source, String) {
        match data.data.as_deref() {
            None => {
                let label = match &p.data {
                    DataSpec::FashionMnist => "fashion-mnist".to_owned(),
                    DataSpec::Synthetic { .. } => "synthetic".to_owned(),
                };
                (Source::Preset(p.data.clone()), label)
            }
            Some("fashion-mnist") => (
                Source::Preset(DataSpec::FashionMnist),
                "fashion-mnist".into(),
            ),
            Some("synthetic") => match &p.data {
                s @ DataSpec::Synthetic { .. } => (Source::Preset(s.clone()), "synthetic".into()),
                DataSpec::FashionMnist => (
                    Source::Preset(DataSpec::Synthetic {
                        train: 2000,
                        test: 500,
                        classes: 10,
                        image_size: 28,
                    }),
                    "synthetic".into(),
                ),
            },
            Some(folder) => (Source::Folder(PathBuf::from(folder)), folder.to_owned()),
        }
    }

    pub fn dataset(&self, p: &Preset, data: &DataArgs) -> anyhow::Result<(Dataset, String)> {
        let (source, label) = self.source(p, data);
        let pre = match source {
            Source::Folder(_) => Preprocessing::imagenet(p.input_size),
            Source::Preset(_) => Preprocessing::fashion_mnist(p.input_size),
        };
        let ds = Dataset::load_limited(
            &source,
            &self.fashion,
            pre,
            p.val_fraction,
            p.train_limit,
            self.device,
        )
        .with_context(|| format!("loading data {label}"))?;
        tracing::info!(
            data = %label, train = ds.train.len(), val = ds.val.len(), test = ds.test.len(), "data ready"
        );
        Ok((ds, label))
    }

    /// ONNX Runtime on the device training runs on.
    pub fn ort_config(&self) -> SessionConfig {
        SessionConfig {
            device: if self.device.is_cuda() {
                OrtDevice::Cuda
            } else {
                OrtDevice::Cpu
            },
            ..Default::default()
        }
    }
}

/// The library's run context for a preset, its data and the command line's seed.
pub fn run_context<'a>(
    ctx: &Ctx,
    p: &'a Preset,
    preset: &'a str,
    ds: &'a Dataset,
    label: &'a str,
    data: &DataArgs,
) -> Context<'a> {
    Context {
        preset: p,
        preset_name: preset,
        data: ds,
        data_label: label,
        device: ctx.device,
        seed: data.seed.unwrap_or(p.seed),
        search_seed: None,
    }
}

/// A run's name: its directory's.
pub fn run_name(out: &Path) -> String {
    out.file_name()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned())
}

/// `--arch`: a baseline of the preset, or a spec JSON (a model spec or a backbone spec).
pub fn query_spec(arch: &str, p: &Preset) -> anyhow::Result<ModelSpec> {
    if let Some(b) = p.baselines.get(arch) {
        return Ok(p.spec(b.clone()));
    }
    let path = Path::new(arch);
    if !path.is_file() {
        bail!(
            "--arch {arch}: not a file and not one of this preset's baselines ({})",
            p.baselines.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {arch}"))?;
    let spec = ModelSpec::from_json(&text, p.input_size, p.embedding_dim)
        .with_context(|| format!("{arch} is neither a model spec nor a backbone spec"))?;
    if spec.input.size != p.input_size || spec.embedding_dim != p.embedding_dim {
        bail!(
            "{arch}: input {} px / dim {} differ from the preset's {} px / {}",
            spec.input.size,
            spec.embedding_dim,
            p.input_size,
            p.embedding_dim
        );
    }
    Ok(spec)
}

pub fn report_outcome(o: &train::Outcome) {
    let m = &o.manifest;
    if o.skipped {
        println!(
            "{}: already trained ({} model), skipped",
            o.dir.display(),
            m.role
        );
    } else {
        println!(
            "{}: trained {} model {} ({:.1} MMACs, compat_id {}){}",
            o.dir.display(),
            m.role,
            m.name,
            m.mmacs,
            m.compat_id,
            if o.resumed_from > 0 {
                format!(", resumed after epoch {}", o.resumed_from)
            } else {
                String::new()
            }
        );
    }
}
