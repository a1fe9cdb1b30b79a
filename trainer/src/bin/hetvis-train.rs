//! `hetvis-train`: gallery and query model training, evaluation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hetvis_models::arch::{Backbone, ModelSpec};
use hetvis_models::data::fashion_mnist::{FashionMnist, DEFAULT_ROOT, ROOT_ENV};
use hetvis_models::manifest::ModelManifest;
use hetvis_models::preprocess::Preprocessing;
use hetvis_models::prune::PruneCriterion;
use hetvis_models::runtime::{self, Device as OrtDevice, SessionConfig};
use hetvis_trainer::cmpnas::{Reward, RewardMetric, SupernetLoss};
use hetvis_trainer::data::{Dataset, Source};
use hetvis_trainer::device::DeviceChoice;
use hetvis_trainer::pipeline::{self, Context as PipelineCtx, Tier};
use hetvis_trainer::preset::{self, DataSpec, Preset};
use hetvis_trainer::study;
use hetvis_trainer::train::{self, QueryMode};

#[derive(Parser)]
#[command(
    name = "hetvis-train",
    version,
    about = "hetvis training: gallery and query models, evaluation"
)]
struct Cli {
    /// Where to train: cpu, cuda, or auto (CUDA when available).
    #[arg(long, env = "HETVIS_DEVICE", value_enum, default_value_t = DeviceChoice::Auto, global = true)]
    device: DeviceChoice,
    /// Fashion-MNIST directory (IDX files).
    #[arg(long, env = ROOT_ENV, default_value = DEFAULT_ROOT, global = true)]
    fashion_mnist: PathBuf,
    /// Path to libonnxruntime.so for evaluation and export checks (default: the project venv).
    #[arg(long, env = runtime::ORT_LIB_ENV, global = true)]
    ort_lib: Option<PathBuf>,
    /// A presets file of the same shape as trainer/presets.json (default: the built-in presets).
    #[arg(long, env = "HETVIS_PRESETS", global = true)]
    preset_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DataArgs {
    /// `fashion-mnist`, `synthetic`, or an image folder with one sub-folder per class (default: the preset's).
    #[arg(long)]
    data: Option<String>,
    /// Training seed.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Train the gallery model (ResNet-101 depth; the preset sets width, input size, epochs).
    Gallery {
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a compact query model against a finished gallery run.
    Query {
        #[arg(long)]
        gallery: PathBuf,
        /// `mobilenetv2`, `shufflenetv2` (the preset's scaled baselines) or a spec JSON (backbone or full spec).
        #[arg(long)]
        arch: String,
        #[arg(long, value_enum, default_value_t = QueryMode::Bct)]
        mode: QueryMode,
        /// Start from these network weights (safetensors named like the architecture's layers, e.g. a pruned
        /// gallery's init.safetensors). `finetune` without it starts from the gallery's own weights.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Default: the gallery run's preset.
        #[arg(long)]
        preset: Option<String>,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Evaluate a gallery run and query runs on the test split through ONNX Runtime; writes report.json/.md.
    Eval {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long, num_args = 1..)]
        query: Vec<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train (or resume) a BCT or vanilla super-network over the SPOS space for a FLOPs tier.
    Supernet {
        #[arg(long)]
        gallery: PathBuf,
        /// `23x` (times fewer MMACs than the gallery model) or an MMACs budget.
        #[arg(long)]
        tier: Tier,
        #[arg(long, value_enum, default_value_t = SupernetLoss::Bct)]
        loss: SupernetLoss,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Compatibility-aware evolutionary search (trains the tier's super-network first unless it is finished).
    /// Writes best.json, search_log.jsonl, summary.json and reward.svg.
    Search {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        tier: Tier,
        #[arg(long, value_enum, default_value_t = Reward::R3)]
        reward: Reward,
        #[arg(long, value_enum, default_value_t = SupernetLoss::Bct)]
        loss: SupernetLoss,
        /// Super-network directory (default: OUT/supernet); share one across searches of the same tier.
        #[arg(long)]
        supernet: Option<PathBuf>,
        /// Seed of the search alone (default: --seed, which also seeds the super-network), to search one
        /// trained super-network again with another seed.
        #[arg(long)]
        search_seed: Option<u64>,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Score architectures of a trained super-network the way the search does (inherited weights, BN
    /// recalibrated, rewards on the validation split), e.g. to compare them with their retrained accuracy.
    /// Prints one JSON line per architecture.
    Score {
        #[arg(long)]
        supernet: PathBuf,
        /// Spec JSON files (a model spec or an SPOS backbone, such as a search's best.json).
        #[arg(long, required = true)]
        arch: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Reward::R3)]
        reward: Reward,
        #[command(flatten)]
        data: DataArgs,
    },
    /// The whole job: gallery -> super-network -> search at each tier -> retrain winners -> baselines -> report.
    Pipeline {
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
        /// Query-model jobs that train side by side after the gallery, each a child process with its share of
        /// the cores (0 = one per core up to 4 on CPU, 1 on CUDA; 1 = one after the other in this process).
        #[arg(long, env = "HETVIS_WORKERS", default_value_t = 0)]
        workers: usize,
        /// Run only the job of the plan with this label, e.g. `cmpnas-23x` (how the pipeline starts its
        /// child processes).
        #[arg(long, hide = true)]
        job: Option<String>,
    },
    /// The paper's compatibility studies, sized by the preset's `study` section; re-running skips finished
    /// models.
    Study {
        #[command(subcommand)]
        study: StudyCommand,
    },
    /// Measure training-step throughput (images/s, median of timed steps) on random data; prints JSON.
    StepBench {
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
    },
    /// Train a small CNN classifier on Fashion-MNIST and report test accuracy: a libtorch sanity check.
    Smoke {
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        #[arg(long, default_value_t = 128)]
        batch: i64,
        /// Directory for smoke.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StudyCommand {
    /// Weight-level compatibility (supplementary Table 4): the gallery ResNet pruned by each criterion and
    /// amount, trained with each mode; writes pruning.md and pruning.json.
    Pruning {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long, value_enum, value_delimiter = ',',
              default_values_t = [PruneCriterion::Magnitude, PruneCriterion::Channel])]
        criteria: Vec<PruneCriterion>,
        /// Fractions of the inner filters removed (default: the preset's, 0.3,0.5,0.7,0.9).
        #[arg(long, value_delimiter = ',')]
        amounts: Option<Vec<f64>>,
        #[arg(long, value_enum, value_delimiter = ',',
              default_values_t = [QueryMode::Independent, QueryMode::Finetune, QueryMode::Bct, QueryMode::Kd])]
        modes: Vec<QueryMode>,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Architecture-level compatibility (the Q1/Q2 figures): N random architectures near a budget, BCT and
    /// vanilla; writes random_archs.md/.json, three plots and the Kendall taus.
    RandomArchs {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long, default_value_t = 20)]
        n: usize,
        #[arg(long)]
        tier: Tier,
        /// The accuracy plotted and rank-correlated.
        #[arg(long, value_enum, default_value_t = RewardMetric::Top1)]
        metric: RewardMetric,
        /// A finished super-network of the tier (same space and gallery): also score every architecture with it
        /// and report how its ranking agrees with the retrained accuracies (Kendall's tau).
        #[arg(long)]
        supernet: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Reward ablation (supplementary Figure 1): R1/R2/R3 searches over BCT and vanilla super-networks, the
    /// best architectures of each retrained with BCT and averaged; writes rewards.md/.json/.svg.
    Rewards {
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        tier: Tier,
        /// Architectures retrained per search (default: the preset's study.top).
        #[arg(long)]
        top: Option<usize>,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
    },
}

struct Ctx {
    device: tch::Device,
    fashion: FashionMnist,
    presets_text: Option<String>,
}

impl Ctx {
    fn preset(&self, name: &str) -> anyhow::Result<Preset> {
        Ok(preset::load(name, self.presets_text.as_deref())?)
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

    fn dataset(&self, p: &Preset, data: &DataArgs) -> anyhow::Result<(Dataset, String)> {
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
}

fn run_name(out: &Path) -> String {
    out.file_name()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned())
}

fn query_spec(arch: &str, p: &Preset) -> anyhow::Result<ModelSpec> {
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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let device = cli.device.resolve()?;
    let presets_text = match &cli.preset_file {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let ctx = Ctx {
        device,
        fashion: FashionMnist::new(&cli.fashion_mnist),
        presets_text,
    };
    runtime::init(cli.ort_lib.as_deref())?;
    match cli.command {
        Command::Gallery { preset, data, out } => {
            let p = ctx.preset(&preset)?;
            let (ds, label) = ctx.dataset(&p, &data)?;
            let pctx = pipeline_ctx(&p, &preset, &ds, &label, device, &data);
            let config = pctx.gallery_config(&run_name(&out));
            report_outcome(&train::run(&out, &config, &ds, device)?);
        }
        Command::Query {
            gallery,
            arch,
            mode,
            init,
            preset,
            data,
            out,
        } => {
            let (p, preset) = match preset {
                Some(name) => (ctx.preset(&name)?, name),
                None => gallery_preset(&ctx, &gallery)?,
            };
            let (ds, label) = ctx.dataset(&p, &data)?;
            let pctx = pipeline_ctx(&p, &preset, &ds, &label, device, &data);
            let mut config =
                pctx.query_config(&run_name(&out), query_spec(&arch, &p)?, mode, &gallery);
            config.init = init;
            report_outcome(&train::run(&out, &config, &ds, device)?);
        }
        Command::Eval {
            gallery,
            query,
            data,
            out,
        } => {
            let (p, _) = gallery_preset(&ctx, &gallery)?;
            let (ds, label) = ctx.dataset(&p, &data)?;
            let report = hetvis_trainer::eval::run(
                &gallery,
                &query,
                &label,
                &ds.test,
                &out,
                &ort_config(device),
            )?;
            print!("{}", hetvis_trainer::eval::markdown(&report));
            println!(
                "wrote {} and {}",
                out.join("report.json").display(),
                out.join("report.md").display()
            );
        }
        Command::Supernet {
            gallery,
            tier,
            loss,
            data,
            out,
        } => {
            let (p, preset) = gallery_preset(&ctx, &gallery)?;
            let (ds, label) = ctx.dataset(&p, &data)?;
            let pctx = pipeline_ctx(&p, &preset, &ds, &label, device, &data);
            let budget = tier.budget(gallery_mmacs(&gallery)?);
            let run = pctx.supernet_run(&gallery, tier, budget, loss);
            hetvis_trainer::cmpnas::train_supernet(&out, &run, &ds, device, p.augment)?;
            println!(
                "{}: super-network for {budget:.2} MMACs (SPOS multiplier {}) trained with {loss:?} loss",
                out.display(),
                run.space.multiplier
            );
        }
        Command::Search {
            gallery,
            tier,
            reward,
            loss,
            supernet,
            search_seed,
            data,
            out,
        } => {
            let (p, preset) = gallery_preset(&ctx, &gallery)?;
            let (ds, label) = ctx.dataset(&p, &data)?;
            let pctx = PipelineCtx {
                search_seed,
                ..pipeline_ctx(&p, &preset, &ds, &label, device, &data)
            };
            let budget = tier.budget(gallery_mmacs(&gallery)?);
            let sn_dir = supernet.unwrap_or_else(|| out.join("supernet"));
            let s = pctx.search(&gallery, tier, budget, loss, reward, &sn_dir, &out)?;
            let scored_on = if s.finalists.is_empty() {
                "as logged"
            } else {
                "re-scored on the whole validation split"
            };
            println!(
                "best of {} candidates under {budget:.2} MMACs: {:.2} MMACs, reward {:.4} (hom {:.4}, het {:.4}; {scored_on}); wrote {}",
                s.evaluated,
                s.best.mmacs,
                s.best.rewards.reward,
                s.best.rewards.homogeneous,
                s.best.rewards.heterogeneous,
                out.join("best.json").display()
            );
        }
        Command::Score {
            supernet,
            arch,
            reward,
            data,
        } => {
            let (sn, run) = hetvis_trainer::cmpnas::load_supernet(&supernet, device)?;
            let done = train::epochs_done(&supernet);
            if done < run.preset.epochs {
                bail!(
                    "{}: the super-network has trained {done} of {} epochs; finish it first (`hetvis-train supernet`)",
                    supernet.display(),
                    run.preset.epochs
                );
            }
            let (p, _) = gallery_preset(&ctx, &run.gallery)?;
            let (ds, _) = ctx.dataset(&p, &data)?;
            let g = train::GalleryRun::load(&run.gallery, p.classifier, device)?;
            let evaluator = hetvis_trainer::cmpnas::Evaluator::new(
                &ds,
                &g,
                &p.cmpnas,
                reward,
                run.preset.batch,
            );
            for path in arch {
                let spec = query_spec(&path.to_string_lossy(), &p)?;
                let Backbone::Spos(a) = &spec.backbone else {
                    bail!("{}: not an SPOS architecture", path.display());
                };
                if a.space != run.space {
                    bail!(
                        "{}: another SPOS space than the super-network's",
                        path.display()
                    );
                }
                let rewards = evaluator.evaluate(&sn, a).map_err(anyhow::Error::msg)?;
                let line = serde_json::json!({
                    "arch": path.display().to_string(),
                    "mmacs": pipeline::mmacs(&spec),
                    "rewards": rewards,
                });
                println!("{line}");
            }
        }
        Command::Pipeline {
            preset,
            data,
            out,
            workers,
            job,
        } => {
            let p = ctx.preset(&preset)?;
            let (ds, label) = ctx.dataset(&p, &data)?;
            let pctx = pipeline_ctx(&p, &preset, &ds, &label, device, &data);
            if let Some(label) = job {
                let (gallery, gallery_mmacs) = pipeline::gallery(&pctx, &out)?;
                let jobs = pipeline::plan(&p, gallery_mmacs);
                let job = jobs.iter().find(|j| j.label() == label).with_context(|| {
                    let labels: Vec<String> = jobs.iter().map(|j| j.label()).collect();
                    format!("no job {label:?} in this plan ({})", labels.join(", "))
                })?;
                let dir = pipeline::run_job(&pctx, &out, &gallery, gallery_mmacs, job)?;
                println!("{}: {} finished", dir.display(), job.label());
                return Ok(());
            }
            let report_dir = out.join("report");
            let ort = ort_config(device);
            let mut cache = hetvis_trainer::eval::EvalCache::default();
            // An interim report after every model; a failure here must not stop training.
            let mut interim = |so_far: &pipeline::PipelineRuns| {
                if let Err(e) = pipeline::report(&mut cache, so_far, &ds, &label, &report_dir, &ort)
                {
                    tracing::warn!("interim report: {e}");
                }
            };
            let workers = hetvis_trainer::jobs::Workers::new(workers, device.is_cuda());
            let started = std::time::Instant::now();
            let runs = if workers.count > 1 {
                // The children run this very binary: on Linux /proc/self/exe stays valid even when a rebuild
                // has replaced the file since the pipeline started.
                let proc_exe = Path::new("/proc/self/exe");
                let exe = if proc_exe.exists() {
                    proc_exe.to_owned()
                } else {
                    std::env::current_exe().context("locating hetvis-train")?
                };
                let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
                let child = |job: &pipeline::Job| {
                    let mut c = std::process::Command::new(&exe);
                    c.args(&argv).arg("--job").arg(job.label());
                    c
                };
                pipeline::run_parallel(&pctx, &out, workers, child, &mut interim)?
            } else {
                pipeline::run(&pctx, &out, &mut interim)?
            };
            tracing::info!(
                seconds = started.elapsed().as_secs(),
                workers = workers.count,
                "pipeline trained everything"
            );
            let report = hetvis_trainer::pipeline::report(
                &mut cache,
                &runs,
                &ds,
                &label,
                &report_dir,
                &ort,
            )?;
            print!("{}", hetvis_trainer::eval::markdown(&report));
            println!(
                "report: {} ({} model evaluations in this run, the rest reused)",
                report_dir.join("report.md").display(),
                cache.evaluated
            );
        }
        Command::Study { study } => run_study(&ctx, study)?,
        Command::StepBench {
            arch,
            preset,
            batch,
            warmup,
            steps,
            threads,
            emit_net,
        } => {
            let p = ctx.preset(&preset)?;
            let spec = if arch == "gallery" {
                p.gallery_spec()
            } else {
                query_spec(&arch, &p)?
            };
            if emit_net {
                println!("{}", serde_json::to_string(&spec.lower()?)?);
                return Ok(());
            }
            if threads > 0 {
                tch::set_num_threads(threads);
            }
            let classes = 10;
            let t =
                hetvis_trainer::throughput::measure(&spec, batch, warmup, steps, classes, device)?;
            println!("{}", serde_json::to_string(&t)?);
        }
        Command::Smoke { epochs, batch, out } => {
            let report = hetvis_trainer::smoke::run(&ctx.fashion, epochs, batch, device)?;
            println!(
                "trained a 2-layer CNN on {} Fashion-MNIST images for {} epoch(s) on {device:?}: {:.0} images/s, \
                 test accuracy {:.2}% on {} images ({:.1} s)",
                report.train_images,
                report.epochs,
                report.train_images_per_s,
                100.0 * report.test_accuracy,
                report.test_images,
                report.seconds
            );
            if let Some(out) = out {
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let path = out.join("smoke.json");
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

fn run_study(ctx: &Ctx, study: StudyCommand) -> anyhow::Result<()> {
    let (gallery, data) = match &study {
        StudyCommand::Pruning { gallery, data, .. }
        | StudyCommand::RandomArchs { gallery, data, .. }
        | StudyCommand::Rewards { gallery, data, .. } => (gallery.clone(), data.clone()),
    };
    let (p, preset) = gallery_preset(ctx, &gallery)?;
    let p = p.for_study();
    let (ds, label) = ctx.dataset(&p, &data)?;
    let pctx = pipeline_ctx(&p, &preset, &ds, &label, ctx.device, &data);
    let ort = ort_config(ctx.device);
    match study {
        StudyCommand::Pruning {
            criteria,
            amounts,
            modes,
            out,
            ..
        } => {
            let grid = study::pruning::PruningStudy {
                criteria,
                amounts: amounts.unwrap_or_else(|| p.study.prune_amounts.clone()),
                modes,
            };
            let table = study::pruning::run(&pctx, &gallery, &grid, &out, &ort)?;
            print!("{}", study::pruning::markdown(&table));
            println!("wrote {}", out.join("pruning.md").display());
        }
        StudyCommand::RandomArchs {
            n,
            tier,
            metric,
            supernet,
            out,
            ..
        } => {
            let s = study::random_archs::RandomArchsStudy {
                n,
                tier,
                metric,
                seed: pctx.seed,
                supernet,
            };
            let r = study::random_archs::run(&pctx, &gallery, &s, &out, &ort)?;
            print!("{}", study::random_archs::markdown(&r));
            println!("wrote {}", out.join("random_archs.md").display());
        }
        StudyCommand::Rewards { tier, top, out, .. } => {
            let s = study::rewards::RewardsStudy {
                tier,
                top: top.unwrap_or(p.study.top),
                losses: vec![SupernetLoss::Bct, SupernetLoss::Vanilla],
                rewards: vec![Reward::R1, Reward::R2, Reward::R3],
            };
            let r = study::rewards::run(&pctx, &gallery, &s, &out, &ort)?;
            print!("{}", study::rewards::markdown(&r));
            println!("wrote {}", out.join("rewards.md").display());
        }
    }
    Ok(())
}

fn ort_config(device: tch::Device) -> SessionConfig {
    SessionConfig {
        device: if matches!(device, tch::Device::Cuda(_)) {
            OrtDevice::Cuda
        } else {
            OrtDevice::Cpu
        },
        ..Default::default()
    }
}

fn gallery_manifest(gallery: &Path) -> anyhow::Result<ModelManifest> {
    ModelManifest::load(&gallery.join("model.json"))
        .with_context(|| format!("{} is not a finished gallery run", gallery.display()))
}

fn gallery_mmacs(gallery: &Path) -> anyhow::Result<f64> {
    Ok(gallery_manifest(gallery)?.mmacs)
}

/// The preset a gallery run was trained with.
fn gallery_preset(ctx: &Ctx, gallery: &Path) -> anyhow::Result<(Preset, String)> {
    let name = gallery_manifest(gallery)?.provenance.preset;
    Ok((ctx.preset(&name)?, name))
}

fn pipeline_ctx<'a>(
    p: &'a Preset,
    preset: &'a str,
    ds: &'a Dataset,
    label: &'a str,
    device: tch::Device,
    data: &DataArgs,
) -> PipelineCtx<'a> {
    PipelineCtx {
        preset: p,
        preset_name: preset,
        data: ds,
        data_label: label,
        device,
        seed: data.seed.unwrap_or(p.seed),
        search_seed: None,
    }
}

fn report_outcome(o: &train::Outcome) {
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
