//! `hetvis-model`: architectures, FLOPs, ONNX export and inspection, embedding, and set-up checks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hetvis_models::arch::{Backbone, ModelSpec, Stem};
use hetvis_models::data::fashion_mnist::{FashionMnist, Split, CLASS_NAMES, ROOT_ENV};
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::{ModelManifest, Provenance, Role, METADATA_KEY};
use hetvis_models::preprocess::{self, ImageLimits, Preprocessing};
use hetvis_models::runtime::{self, Device, SessionConfig};
use hetvis_models::weights::Weights;
use hetvis_models::{flops, onnx};

#[derive(Parser)]
#[command(
    name = "hetvis-model",
    version,
    about = "hetvis model tools: FLOPs, ONNX export, inspection, embedding"
)]
struct Cli {
    /// Path to libonnxruntime.so (default: the project venv made by `make setup`).
    #[arg(long, env = runtime::ORT_LIB_ENV, global = true)]
    ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Multiply-accumulates (batch 1) and parameters of an architecture.
    Flops {
        /// Built-in name (resnet50, resnet101, mobilenetv2, shufflenetv2, spos-ref, ...) or a spec JSON file.
        #[arg(long)]
        arch: String,
        /// Input side in pixels (ignored when the spec file fixes it).
        #[arg(long, default_value_t = 224)]
        input: usize,
        /// Count with an N-way classifier instead of the embedding head (how published figures are quoted).
        #[arg(long)]
        classes: Option<usize>,
        /// Embedding dimension of the head (without --classes).
        #[arg(long, default_value_t = 128)]
        dim: usize,
        /// Stem variant for built-in names.
        #[arg(long, value_enum)]
        stem: Option<Stem>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also list every layer.
        #[arg(long)]
        layers: bool,
    },
    /// Print the lowered layer graph (the one definition every consumer walks) as JSON.
    Lower {
        /// Built-in name or a spec JSON file.
        #[arg(long)]
        arch: String,
        #[arg(long, default_value_t = 224)]
        input: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, value_enum)]
        stem: Option<Stem>,
    },
    /// Export a spec plus trained weights (safetensors) to ONNX, with the manifest beside it and inside it.
    Export {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// A complete manifest JSON to embed; otherwise one is made from the flags below.
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Role::Query)]
        role: Role,
        /// Embedding space id (a query model takes its gallery model's). Default: derived from the weights.
        #[arg(long)]
        compat_id: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Print a model's manifest, inputs and outputs, and FLOPs.
    Inspect { model: PathBuf },
    /// Embed images with a model and print the embeddings as JSON.
    Embed {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum, default_value_t = Device::Cpu, env = "HETVIS_DEVICE")]
        device: Device,
        /// Intra-op threads (0 = ONNX Runtime's choice).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Load ONNX Runtime and report which library is in use.
    Runtime,
    /// Read Fashion-MNIST and print a summary of both splits.
    Data {
        /// Directory with the IDX files.
        #[arg(long, env = ROOT_ENV, default_value = hetvis_models::data::fashion_mnist::DEFAULT_ROOT)]
        root: PathBuf,
    },
}

fn read_spec(
    arch: &str,
    input: usize,
    dim: usize,
    stem: Option<Stem>,
) -> anyhow::Result<ModelSpec> {
    let spec = if Path::new(arch).is_file() {
        let text = std::fs::read_to_string(arch).with_context(|| format!("reading {arch}"))?;
        ModelSpec::from_json(&text, input, dim)
            .with_context(|| format!("parsing architecture spec {arch}"))?
    } else {
        ModelSpec::new(Backbone::builtin(arch)?, input, dim)
    };
    Ok(match stem {
        Some(s) => ModelSpec {
            backbone: spec.backbone.with_stem(s),
            ..spec
        },
        None => spec,
    })
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Flops {
            arch,
            input,
            classes,
            dim,
            stem,
            json,
            layers,
        } => {
            let spec = read_spec(&arch, input, dim, stem)?;
            let net = match classes {
                Some(n) => spec.lower_classifier(n)?,
                None => spec.lower()?,
            };
            let cost = flops::count(&net)?;
            if json {
                let mut v = serde_json::json!({
                    "arch": arch, "input": spec.input.size, "mmacs": cost.mmacs(), "params": cost.params,
                });
                if layers {
                    v["layers"] = serde_json::to_value(&cost.layers)?;
                }
                println!("{v}");
            } else {
                if layers {
                    for l in &cost.layers {
                        println!("{:<40} {:>12} MACs {:>10} params", l.name, l.macs, l.params);
                    }
                }
                let head = classes.map_or(format!("{dim}-d embedding head"), |n| {
                    format!("{n}-way classifier")
                });
                println!(
                    "{arch} at {0}x{0} with a {head}: {1:.1} MMACs, {2:.3} M params",
                    spec.input.size,
                    cost.mmacs(),
                    cost.params as f64 / 1e6
                );
            }
        }
        Command::Lower {
            arch,
            input,
            dim,
            stem,
        } => {
            let spec = read_spec(&arch, input, dim, stem)?;
            println!("{}", serde_json::to_string(&spec.lower()?)?);
        }
        Command::Export {
            spec,
            weights,
            out,
            manifest,
            role,
            compat_id,
            name,
        } => {
            let text = std::fs::read_to_string(&spec)
                .with_context(|| format!("reading {}", spec.display()))?;
            let spec: ModelSpec = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a full model spec (backbone, input, embedding_dim)",
                    spec.display()
                )
            })?;
            let w = Weights::load(&weights)?;
            let manifest = match manifest {
                Some(p) => {
                    let m = ModelManifest::load(&p)?;
                    if m.spec != spec {
                        bail!("{} describes a different spec", p.display());
                    }
                    m
                }
                None => {
                    let name = name.unwrap_or_else(|| {
                        out.file_stem()
                            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
                    });
                    let compat = compat_id.unwrap_or_else(|| {
                        hetvis_models::manifest::new_compat_id(
                            &name,
                            &std::fs::read(&weights).unwrap_or_default(),
                        )
                    });
                    let pre = Preprocessing::imagenet(spec.input.size);
                    ModelManifest::for_spec(
                        &name,
                        role,
                        &spec,
                        pre,
                        &compat,
                        Provenance::default(),
                    )?
                }
            };
            onnx::export::export_to_files(&out, &spec, &w, &manifest)?;
            println!(
                "wrote {} ({} model, {:.1} MMACs, compat_id {}) and {}",
                out.display(),
                manifest.role,
                manifest.mmacs,
                manifest.compat_id,
                ModelManifest::sidecar_path(&out).display()
            );
        }
        Command::Inspect { model } => {
            runtime::init(cli.ort_lib.as_deref())?;
            let e = Embedder::load(&model, &SessionConfig::default()).with_context(|| {
                format!(
                    "loading {} (needs a {METADATA_KEY} manifest)",
                    model.display()
                )
            })?;
            let m = e.manifest();
            let recount = flops::count(&m.spec.lower()?)?;
            println!("{}", m.to_json());
            println!(
                "input  {}: [batch, {}, {}, {}] f32",
                m.input_name, m.preprocessing.channels, m.preprocessing.size, m.preprocessing.size
            );
            println!(
                "output {}: [batch, {}] f32, L2-normalised",
                m.output_name, m.embedding_dim
            );
            println!(
                "FLOPs: {:.1} MMACs (recounted from the spec: {:.1}), {:.3} M params; provider {}",
                m.mmacs,
                recount.mmacs(),
                m.params as f64 / 1e6,
                e.provider()
            );
        }
        Command::Embed {
            model,
            device,
            threads,
            images,
        } => {
            runtime::init(cli.ort_lib.as_deref())?;
            let config = SessionConfig {
                device,
                intra_threads: threads,
                ..Default::default()
            };
            let mut e = Embedder::load(&model, &config)?;
            eprintln!("{} on {}", e.manifest().name, e.provider());
            let pre = e.manifest().preprocessing.clone();
            let mut results = Vec::new();
            let mut failed = 0;
            for path in &images {
                let outcome = std::fs::read(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| {
                        Ok(preprocess::preprocess_bytes(
                            &b,
                            &pre,
                            ImageLimits::default(),
                        )?)
                    })
                    .and_then(|x| Ok(e.embed(&x)?));
                match outcome {
                    Ok(v) => results.push(serde_json::json!({"path": path, "embedding": v})),
                    Err(err) => {
                        failed += 1;
                        results.push(serde_json::json!({"path": path, "error": err.to_string()}));
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&results)?);
            if failed == images.len() {
                bail!("no image could be embedded");
            }
        }
        Command::Runtime => {
            let path = runtime::init(cli.ort_lib.as_deref())?;
            println!("ONNX Runtime loaded from {}", path.display());
        }
        Command::Data { root } => {
            let fm = FashionMnist::new(root);
            for split in [Split::Train, Split::Test] {
                let set = fm.load(split).with_context(|| {
                    format!("reading Fashion-MNIST from {}", fm.root().display())
                })?;
                let mut counts = [0usize; 10];
                for &l in &set.labels {
                    counts[l as usize] += 1;
                }
                println!(
                    "{split:?}: {} images of {}x{}, {} classes",
                    set.len(),
                    set.rows,
                    set.cols,
                    set.num_classes()
                );
                for (name, n) in CLASS_NAMES.iter().zip(counts) {
                    println!("  {name:<12} {n}");
                }
            }
        }
    }
    Ok(())
}
