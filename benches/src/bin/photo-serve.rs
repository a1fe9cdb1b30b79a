//! Serving benchmark at real photo sizes: JPEG phone photos (1 and 12 MP) against models of the paper's shape at
//! 224 px (a ResNet-101 gallery model; MobileNetV2 x1.0 and x0.5 query models, about 26x and 80x fewer MACs;
//! random weights, which cost what trained ones cost) and a gallery of clustered synthetic embeddings.
//!
//! Phases (`--phases`, all by default):
//! - `ort`: ONNX Runtime settings, in process: one image's forward pass per model at each intra-op thread count,
//!   graph optimisation level and memory-pattern setting;
//! - `limit`: the in-process limit: decode + preprocess + embed + search on one thread of control, no HTTP;
//! - `http`: hetvis-serve on loopback: hetero (each query model) and paragon p50/p99 and throughput per photo
//!   size and concurrency, with the server's own stage timings;
//! - `python`: the same cells against a careful Python service (benches/python/photo_service.py: PIL draft mode,
//!   onnxruntime, hnswlib) serving the same models and vectors;
//! - `workers`: hetvis-serve's worker count x intra-op threads x spinning, at 1 MP.
//!
//! make bench-photo   (writes runs/bench/photo-serve.json)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hetvis_benches::gallery_model::export_random;
use hetvis_benches::load::{self, Budget, Run};
use hetvis_benches::process::{self, Service};
use hetvis_benches::stats::{median, quantile};
use hetvis_benches::vectors::clustered;
use hetvis_indexer::checksum::sha256_file;
use hetvis_indexer::{GalleryModel, HnswParams, Index, Record};
use hetvis_models::arch::mobilenetv2::MobileNetV2Spec;
use hetvis_models::arch::resnet::ResNetSpec;
use hetvis_models::arch::{Backbone, ModelSpec, Stem};
use hetvis_models::data::synthetic::photo_jpeg;
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::{ModelManifest, Role};
use hetvis_models::preprocess::{preprocess_bytes, ImageLimits, Preprocessing};
use hetvis_models::runtime::{self, OptLevel, SessionConfig};
use hyper::body::Bytes;
use serde_json::{json, Value};

const INPUT_PX: usize = 224;
const COMPAT_ID: &str = "photo-bench";
const K: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Ort,
    Limit,
    Http,
    Python,
    Workers,
}

#[derive(Parser)]
#[command(
    about = "Serving benchmark at real photo sizes: hetvis-serve vs its in-process limit vs a Python service"
)]
struct Cli {
    /// Where the generated models, vectors and index are kept; reused when they match these options.
    #[arg(long, default_value = "runs/bench/photo")]
    work: PathBuf,
    /// Gallery vectors in the index.
    #[arg(long, default_value_t = 20_000)]
    gallery_size: usize,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ort,limit,http,python,workers"
    )]
    phases: Vec<Phase>,
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    concurrency: Vec<usize>,
    /// Request budget of each HTTP cell.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Time budget of each HTTP cell, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Requests per HTTP cell before measuring (not counted).
    #[arg(long, default_value_t = 4)]
    warmup: usize,
    /// Distinct photos of each size, cycled through.
    #[arg(long, default_value_t = 4)]
    photos: usize,
    /// Repetitions of each in-process measurement.
    #[arg(long, default_value_t = 40)]
    reps: usize,
    /// The hetvis-serve binary (default: beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Python of the comparison service's venv (made by `make bench-photo`).
    #[arg(long, env = "HETVIS_PHOTO_PYTHON")]
    python: Option<PathBuf>,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One of the generated models.
struct BenchModel {
    key: &'static str,
    path: PathBuf,
    manifest: ModelManifest,
}

struct Photos {
    name: &'static str,
    width: u32,
    height: u32,
    bodies: Arc<Vec<Bytes>>,
}

/// The gallery model first, then the query models.
fn specs() -> Vec<(&'static str, Role, Backbone)> {
    vec![
        (
            "gallery-resnet101",
            Role::Gallery,
            Backbone::Resnet(ResNetSpec::new(101)),
        ),
        (
            "query-mobilenetv2-x1.0",
            Role::Query,
            Backbone::Mobilenetv2(MobileNetV2Spec::new(1.0, Stem::Imagenet)),
        ),
        (
            "query-mobilenetv2-x0.5",
            Role::Query,
            Backbone::Mobilenetv2(MobileNetV2Spec::new(0.5, Stem::Imagenet)),
        ),
    ]
}

/// Exports the models into `work` unless they are already there.
fn models(cli: &Cli) -> anyhow::Result<Vec<BenchModel>> {
    let mut out = Vec::new();
    for (i, (key, role, backbone)) in specs().into_iter().enumerate() {
        let path = cli.work.join(format!("{key}.onnx"));
        let spec = ModelSpec::new(backbone, INPUT_PX, cli.dim);
        let manifest = match ModelManifest::load(&ModelManifest::sidecar_path(&path)) {
            Ok(m) if path.is_file() && m.spec == spec => m,
            _ => {
                eprintln!("exporting {key} ...");
                let p = Preprocessing::imagenet(INPUT_PX);
                export_random(&path, key, role, &spec, p, COMPAT_ID, 100 + i as u64)?
            }
        };
        out.push(BenchModel {
            key,
            path,
            manifest,
        });
    }
    Ok(out)
}

/// The gallery index of clustered synthetic vectors (and the same vectors as `.npy` + ids for the Python
/// service), built unless present with this size.
fn index(cli: &Cli, gallery: &BenchModel) -> anyhow::Result<(PathBuf, Option<Index>)> {
    let dir = cli.work.join("index");
    let npy = cli.work.join("vectors.npy");
    if let Ok(existing) = Index::open_without_graph(&dir) {
        let sha = sha256_file(&gallery.path)?.0;
        if existing.len() == cli.gallery_size
            && existing.dim() == cli.dim
            && existing.manifest().gallery.sha256 == sha
            && npy.is_file()
        {
            return Ok((dir, None));
        }
    }
    eprintln!("building an index of {} vectors ...", cli.gallery_size);
    let vectors = clustered(cli.gallery_size, cli.dim, 2000, 0.7, 7);
    let (sha, _) = sha256_file(&gallery.path)?;
    let mut idx = Index::new(
        GalleryModel::from_manifest(&gallery.manifest, &sha),
        cli.dim,
        HnswParams::default(),
    )?;
    let ids: Vec<String> = (0..cli.gallery_size)
        .map(|i| format!("photo/{i}"))
        .collect();
    let items = ids
        .iter()
        .zip(vectors.chunks(cli.dim))
        .map(|(id, v)| (Record::new(id.clone()), v.to_vec()))
        .collect();
    idx.add(items)?;
    if !idx.save_exclusive(&dir)?.is_durable() {
        eprintln!("warning: the index directory could not be fsynced");
    }
    hetvis_indexer::npy::write(&npy, &vectors, cli.gallery_size, cli.dim)
        .with_context(|| format!("writing {}", npy.display()))?;
    std::fs::write(cli.work.join("ids.json"), serde_json::to_vec(&ids)?)?;
    Ok((dir, Some(idx)))
}

fn photo_sets(cli: &Cli) -> Vec<Photos> {
    [("1MP", 1200, 900), ("12MP", 4000, 3000)]
        .into_iter()
        .map(|(name, width, height)| {
            let bodies = (0..cli.photos)
                .map(|s| Bytes::from(photo_jpeg(width, height, 10 + s as u32, 90)))
                .collect::<Vec<_>>();
            let mean = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len().max(1);
            eprintln!("{name}: {width} x {height} JPEG, {mean} bytes on average");
            Photos {
                name,
                width,
                height,
                bodies: Arc::new(bodies),
            }
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(samples: &[f64]) -> Value {
    json!({
        "p50_ms": median(samples),
        "p99_ms": quantile(samples, 0.99),
        "n": samples.len(),
    })
}

/// One image's forward pass at every combination of intra-op threads, optimisation level and memory pattern.
fn ort_phase(cli: &Cli, models: &[BenchModel], photos: &[Photos]) -> anyhow::Result<Vec<Value>> {
    let p = Preprocessing::imagenet(INPUT_PX);
    let input = preprocess_bytes(&photos[0].bodies[0], &p, ImageLimits::default())?;
    let mut out = Vec::new();
    for m in models {
        // The gallery model is ~25x slower; fewer repetitions keep the phase short.
        let reps = if m.manifest.role == Role::Gallery {
            (cli.reps / 4).max(5)
        } else {
            cli.reps
        };
        for threads in [1, 2] {
            for optimization in OptLevel::value_variants() {
                for memory_pattern in [true, false] {
                    let config = SessionConfig {
                        intra_threads: threads,
                        optimization: *optimization,
                        memory_pattern,
                        ..Default::default()
                    };
                    let t = Instant::now();
                    let mut e = Embedder::load(&m.path, &config)?;
                    let load_ms = ms(t.elapsed());
                    e.embed(&input)?;
                    let mut times = Vec::with_capacity(reps);
                    for _ in 0..reps {
                        let t = Instant::now();
                        e.embed(&input)?;
                        times.push(ms(t.elapsed()));
                    }
                    let cell = json!({
                        "model": m.key,
                        "intra_threads": threads,
                        "optimization": format!("{optimization:?}").to_lowercase(),
                        "memory_pattern": memory_pattern,
                        "session_load_ms": load_ms,
                        "embed": summary(&times),
                    });
                    eprintln!("{cell}");
                    out.push(cell);
                }
            }
        }
    }
    Ok(out)
}

/// The in-process limit: what `/search` does, without HTTP, one request at a time.
fn limit_phase(
    cli: &Cli,
    models: &[&BenchModel],
    photos: &[Photos],
    index: &Index,
) -> anyhow::Result<Vec<Value>> {
    let limits = ImageLimits {
        max_width: 4096,
        max_height: 4096,
        ..Default::default()
    };
    let mut out = Vec::new();
    for m in models {
        let mut e = Embedder::load(&m.path, &SessionConfig::default())?;
        let p = m.manifest.preprocessing.clone();
        for set in photos {
            let reps = if m.manifest.role == Role::Gallery {
                (cli.reps / 2).max(5)
            } else {
                cli.reps
            };
            let (mut decode, mut embed, mut search, mut total) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for r in 0..reps + 2 {
                let bytes = &set.bodies[r % set.bodies.len()];
                let t0 = Instant::now();
                let input = preprocess_bytes(bytes, &p, limits)?;
                let t1 = Instant::now();
                let v = e.embed(&input)?;
                let t2 = Instant::now();
                let hits = index.search(&v, K, None)?;
                let t3 = Instant::now();
                anyhow::ensure!(hits.len() == K, "{} hits", hits.len());
                if r >= 2 {
                    decode.push(ms(t1 - t0));
                    embed.push(ms(t2 - t1));
                    search.push(ms(t3 - t2));
                    total.push(ms(t3 - t0));
                }
            }
            let cell = json!({
                "model": m.key,
                "mode": mode_of(m),
                "photo": set.name,
                "stages_p50_ms": {
                    "decode": median(&decode), "embed": median(&embed), "search": median(&search),
                },
                "total": summary(&total),
            });
            eprintln!("{cell}");
            out.push(cell);
        }
    }
    Ok(out)
}

fn mode_of(m: &BenchModel) -> &'static str {
    if m.manifest.role == Role::Gallery {
        "paragon"
    } else {
        "query"
    }
}

/// Medians of the stage timings a service reports in its answers (`timings_ms`), and the mean batch.
fn reported(run: &Run) -> Value {
    let mut stages: [(&str, Vec<f64>); 4] = [
        ("decode", Vec::new()),
        ("embed", Vec::new()),
        ("search", Vec::new()),
        ("total", Vec::new()),
    ];
    let mut batch = Vec::new();
    for s in run.ok() {
        let Some(v) = s
            .response
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        else {
            continue;
        };
        for (name, xs) in stages.iter_mut() {
            if let Some(x) = v["timings_ms"][*name].as_f64() {
                xs.push(x);
            }
        }
        if let Some(b) = v["batch_images"].as_f64() {
            batch.push(b);
        }
    }
    let mut out = serde_json::Map::new();
    for (name, xs) in &stages {
        out.insert(name.to_string(), json!(median(xs)));
    }
    let mean_batch = (!batch.is_empty()).then(|| batch.iter().sum::<f64>() / batch.len() as f64);
    json!({"stages_p50_ms": out, "mean_batch_images": mean_batch})
}

/// Every (photo size, concurrency, mode) cell against one running service.
#[allow(clippy::too_many_arguments)]
fn http_cells(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    service: &str,
    addr: std::net::SocketAddr,
    query_model: &str,
    modes: &[&str],
    photos: &[Photos],
    concurrency: &[usize],
    extra: &Value,
) -> anyhow::Result<Vec<Value>> {
    let budget = Budget {
        requests: cli.requests,
        duration: Duration::from_secs_f64(cli.seconds),
    };
    let warm = Budget {
        requests: cli.warmup,
        duration: Duration::from_secs(60),
    };
    let mut out = Vec::new();
    for set in photos {
        for &c in concurrency {
            for mode in modes {
                let path = format!("/search?k={K}&mode={mode}");
                let ct = "image/jpeg";
                rt.block_on(load::run(addr, &path, ct, set.bodies.clone(), c, &warm))?;
                let run =
                    rt.block_on(load::run(addr, &path, ct, set.bodies.clone(), c, &budget))?;
                let errors = run.samples.len() - run.ok().count();
                if run.ok().count() == 0 {
                    bail!(
                        "{service}: no successful request at {} c={c} mode={mode}",
                        set.name
                    );
                }
                let cell = json!({
                    "service": service,
                    "model": if *mode == "paragon" { "gallery-resnet101" } else { query_model },
                    "mode": mode,
                    "photo": set.name,
                    "concurrency": c,
                    "requests_ok": run.ok().count(),
                    "errors": errors,
                    "seconds": run.elapsed.as_secs_f64(),
                    "throughput_rps": run.throughput(),
                    "p50_ms": run.latency_ms(0.5),
                    "p99_ms": run.latency_ms(0.99),
                    "reported": reported(&run),
                    "settings": extra,
                });
                eprintln!("{cell}");
                out.push(cell);
            }
        }
    }
    Ok(out)
}

fn start_hetvis(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    index: &Path,
    query: &BenchModel,
    gallery: &BenchModel,
    args: &[String],
) -> anyhow::Result<Service> {
    let bin = match &cli.server {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("hetvis-serve"),
    };
    let mut command = Command::new(&bin);
    command
        .arg("--index")
        .arg(index)
        .arg("--query-model")
        .arg(&query.path)
        .arg("--gallery-model")
        .arg(&gallery.path)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn");
    let service = process::start(command)?;
    let waited = process::wait_for_graph(rt, service.addr, Duration::from_secs(900))?;
    eprintln!(
        "hetvis-serve ({}, {args:?}) ready after {:.1} s",
        query.key,
        waited.as_secs_f64()
    );
    Ok(service)
}

fn start_python(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    query: &BenchModel,
    gallery: Option<&BenchModel>,
) -> anyhow::Result<Service> {
    let python = cli
        .python
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-photo/bin/python"));
    anyhow::ensure!(
        python.is_file(),
        "{} not found: `make bench-photo` makes the comparison service's venv",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/photo_service.py");
    let hnsw = HnswParams::default();
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg("--query-model")
        .arg(&query.path)
        .arg("--vectors")
        .arg(cli.work.join("vectors.npy"))
        .arg("--ids")
        .arg(cli.work.join("ids.json"))
        .args(["--m", &hnsw.m.to_string()])
        .args(["--ef-construction", &hnsw.ef_construction.to_string()])
        .args(["--ef", &hnsw.ef_search.to_string()]);
    if let Some(g) = gallery {
        command.arg("--gallery-model").arg(&g.path);
    }
    let service = process::start(command)?;
    let health = process::get_json(rt, service.addr, "/healthz")?;
    anyhow::ensure!(health["status"] == "ok", "python service: {health}");
    Ok(service)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let started = Instant::now();
    std::fs::create_dir_all(&cli.work)?;
    runtime::init(None)?;
    let models = models(&cli)?;
    let (gallery, queries) = (&models[0], &models[1..]);
    for m in &models {
        eprintln!(
            "{}: {:.1} MMACs, {:.2} M params ({:.1}x fewer MACs than the gallery model)",
            m.key,
            m.manifest.mmacs,
            m.manifest.params as f64 / 1e6,
            gallery.manifest.mmacs / m.manifest.mmacs
        );
    }
    let (index_dir, built) = index(&cli, gallery)?;
    let photos = photo_sets(&cli);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let has = |p: Phase| cli.phases.contains(&p);

    let ort = if has(Phase::Ort) {
        ort_phase(&cli, &models, &photos)?
    } else {
        Vec::new()
    };
    let limit = if has(Phase::Limit) {
        let idx = match built {
            Some(idx) => idx,
            None => Index::open(&index_dir)?,
        };
        let mut order: Vec<&BenchModel> = queries.iter().collect();
        order.push(gallery);
        limit_phase(&cli, &order, &photos, &idx)?
    } else {
        Vec::new()
    };

    let mut http = Vec::new();
    if has(Phase::Http) {
        for (i, q) in queries.iter().enumerate() {
            let server = start_hetvis(&cli, &rt, &index_dir, q, gallery, &[])?;
            // Paragon mode once, on the first server.
            let modes: &[&str] = if i == 0 {
                &["query", "paragon"]
            } else {
                &["query"]
            };
            http.extend(http_cells(
                &cli,
                &rt,
                "hetvis",
                server.addr,
                q.key,
                modes,
                &photos,
                &cli.concurrency,
                &json!({"workers": 1, "threads": 0}),
            )?);
        }
    }
    let mut python = Vec::new();
    if has(Phase::Python) {
        for (i, q) in queries.iter().enumerate() {
            let g = (i == 0).then_some(gallery);
            let service = start_python(&cli, &rt, q, g)?;
            let modes: &[&str] = if i == 0 {
                &["query", "paragon"]
            } else {
                &["query"]
            };
            python.extend(http_cells(
                &cli,
                &rt,
                "python",
                service.addr,
                q.key,
                modes,
                &photos,
                &cli.concurrency,
                &json!({}),
            )?);
        }
    }
    let mut workers = Vec::new();
    if has(Phase::Workers) {
        let one_mp = &photos[..1];
        for (w, t, spin) in [
            (1, 2, true),
            (1, 2, false),
            (2, 1, true),
            (2, 1, false),
            (2, 2, false),
        ] {
            let args = vec![
                format!("--workers={w}"),
                format!("--threads={t}"),
                format!("--ort-spinning={spin}"),
            ];
            let server = start_hetvis(&cli, &rt, &index_dir, &queries[0], gallery, &args)?;
            workers.extend(http_cells(
                &cli,
                &rt,
                "hetvis",
                server.addr,
                queries[0].key,
                &["query", "paragon"],
                one_mp,
                &cli.concurrency,
                &json!({"workers": w, "threads": t, "spinning": spin}),
            )?);
        }
    }

    let out = json!({
        "config": {
            "input_px": INPUT_PX, "dim": cli.dim, "gallery_size": cli.gallery_size, "k": K,
            "hnsw": HnswParams::default(), "requests": cli.requests, "seconds": cli.seconds,
            "warmup": cli.warmup, "photos": cli.photos, "reps": cli.reps,
            "concurrency": cli.concurrency,
        },
        "models": models.iter().map(|m| json!({
            "key": m.key, "mmacs": m.manifest.mmacs, "params": m.manifest.params,
            "mac_ratio_to_gallery": gallery.manifest.mmacs / m.manifest.mmacs,
        })).collect::<Vec<_>>(),
        "photos": photos.iter().map(|p| json!({
            "name": p.name, "width": p.width, "height": p.height,
            "bytes": p.bodies.iter().map(|b| b.len()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "ort": ort,
        "limit": limit,
        "http": http,
        "python": python,
        "workers": workers,
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    print_tables(&out);
    if let Some(path) = &cli.json {
        hetvis_benches::write_json(path, &out)?;
    }
    Ok(())
}

fn f(v: &Value, prec: usize) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// Markdown tables of the headline figures.
fn print_tables(out: &Value) {
    let empty = Vec::new();
    let list = |k: &str| out[k].as_array().unwrap_or(&empty).clone();
    let limit = list("limit");
    let python = list("python");
    let http = list("http");
    if !http.is_empty() {
        println!("\n| photo | model (mode) | conc | hetvis p50 | p99 | req/s | decode p50 | in-process p50 | ratio | Python p50 | req/s | hetvis/Python |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for cell in &http {
            let same = |c: &&Value| {
                c["photo"] == cell["photo"]
                    && c["model"] == cell["model"]
                    && c["mode"] == cell["mode"]
            };
            let lim = limit.iter().find(same);
            let py = python
                .iter()
                .find(|c| same(c) && c["concurrency"] == cell["concurrency"]);
            let ratio = |a: &Value, b: Option<&Value>| match (a.as_f64(), b.and_then(Value::as_f64))
            {
                (Some(a), Some(b)) => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let lim_p50 = lim.map(|l| &l["total"]["p50_ms"]);
            println!(
                "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell["photo"].as_str().unwrap_or("?"),
                cell["model"].as_str().unwrap_or("?"),
                cell["mode"].as_str().unwrap_or("?"),
                cell["concurrency"],
                f(&cell["p50_ms"], 1),
                f(&cell["p99_ms"], 1),
                f(&cell["throughput_rps"], 1),
                f(&cell["reported"]["stages_p50_ms"]["decode"], 1),
                lim_p50.map_or("-".into(), |v| f(v, 1)),
                if cell["concurrency"] == 1 {
                    ratio(&cell["p50_ms"], lim_p50)
                } else {
                    "-".into()
                },
                py.map_or("-".into(), |p| f(&p["p50_ms"], 1)),
                py.map_or("-".into(), |p| f(&p["throughput_rps"], 1)),
                ratio(&cell["p50_ms"], py.map(|p| &p["p50_ms"])),
            );
        }
    }
    let ort = list("ort");
    if !ort.is_empty() {
        println!("\n| model | threads | optimisation | memory pattern | embed p50 ms | p99 ms | session load ms |");
        println!("|---|---|---|---|---|---|---|");
        for c in &ort {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                c["model"].as_str().unwrap_or("?"),
                c["intra_threads"],
                c["optimization"].as_str().unwrap_or("?"),
                c["memory_pattern"],
                f(&c["embed"]["p50_ms"], 2),
                f(&c["embed"]["p99_ms"], 2),
                f(&c["session_load_ms"], 0),
            );
        }
    }
    let workers = list("workers");
    if !workers.is_empty() {
        println!("\n| workers | threads | spinning | mode | conc | p50 ms | p99 ms | req/s | mean batch |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for c in &workers {
            let s = &c["settings"];
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s["workers"],
                s["threads"],
                s["spinning"],
                c["mode"].as_str().unwrap_or("?"),
                c["concurrency"],
                f(&c["p50_ms"], 1),
                f(&c["p99_ms"], 1),
                f(&c["throughput_rps"], 1),
                f(&c["reported"]["mean_batch_images"], 2),
            );
        }
    }
}
