//! Server load benchmark: throughput and p50/p99 latency of `POST /search` at several concurrencies, for the
//! heterogeneous setting (the compact query model embeds the query) and the paragon setting (`mode=paragon`:
//! the gallery model embeds it), side by side in one run against the same server and index.
//!
//! Queries are Fashion-MNIST test images encoded as PNG; the index is the train split. The server is started
//! here (`--index`, `--query-model`, `--gallery-model`; the `hetvis-serve` beside this binary) or reached at
//! `--url` (loopback only). Every cell is bounded by `--requests` and `--seconds`.
//!
//! make bench-serve   (see the Makefile for the paths it uses)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use hetvis_benches::load::{self, Budget, Run};
use hetvis_benches::process::{self, Service};
use hetvis_models::data::fashion_mnist::{FashionMnist, Split, CLASS_NAMES};
use hetvis_models::data::synthetic;
use hyper::body::Bytes;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    about = "Load benchmark of hetvis-serve: query model vs paragon (gallery model) at concurrency 1/8/32"
)]
struct Cli {
    /// A running server (loopback only); otherwise one is started with the options below.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, required_unless_present = "url")]
    index: Option<PathBuf>,
    #[arg(long, required_unless_present = "url")]
    query_model: Option<PathBuf>,
    #[arg(long, required_unless_present = "url")]
    gallery_model: Option<PathBuf>,
    /// The server binary (default: hetvis-serve beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Extra server arguments, e.g. `--server-arg=--workers=2`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "query,paragon")]
    modes: Vec<String>,
    /// Request budget of each (mode, concurrency) cell.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Time budget of each cell, in seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Requests per cell before measuring (not counted).
    #[arg(long, default_value_t = 16)]
    warmup: usize,
    /// Distinct query images, cycled through.
    #[arg(long, default_value_t = 1000)]
    images: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Use the project's synthetic images instead of Fashion-MNIST (smoke tests with tiny models).
    #[arg(long)]
    synthetic: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Query images as PNG bodies, with their class names.
fn query_images(cli: &Cli) -> anyhow::Result<(Vec<Bytes>, Vec<String>)> {
    let (set, names): (_, Vec<String>) = if cli.synthetic {
        let set = synthetic::generate(cli.images, 10, 28, 7);
        (set, (0..10).map(|c| format!("class {c}")).collect())
    } else {
        let fm = FashionMnist::from_env();
        let set = fm
            .load(Split::Test)
            .with_context(|| format!("Fashion-MNIST test split under {}", fm.root().display()))?;
        (set, CLASS_NAMES.iter().map(|s| s.to_string()).collect())
    };
    let n = cli.images.min(set.len());
    let mut bodies = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let img =
            image::GrayImage::from_raw(set.cols as u32, set.rows as u32, set.image(i).to_vec())
                .context("image size")?;
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)?;
        bodies.push(Bytes::from(png.into_inner()));
        labels.push(names[set.labels[i] as usize].clone());
    }
    Ok((bodies, labels))
}

fn start_server(cli: &Cli) -> anyhow::Result<Service> {
    let bin = match &cli.server {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("hetvis-serve"),
    };
    let (Some(index), Some(query), Some(gallery)) =
        (&cli.index, &cli.query_model, &cli.gallery_model)
    else {
        bail!("--index, --query-model and --gallery-model are needed to start a server");
    };
    let mut command = Command::new(&bin);
    command
        .arg("--index")
        .arg(index)
        .arg("--query-model")
        .arg(query)
        .arg("--gallery-model")
        .arg(gallery)
        .args(["--addr", "127.0.0.1:0"])
        .args(&cli.server_args)
        .env("RUST_LOG", "warn");
    process::start(command)
}

fn loopback(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("--url {url}: expected http://127.0.0.1:PORT"))?;
    anyhow::ensure!(addr.ip().is_loopback(), "--url must be a loopback address");
    Ok(addr)
}

/// Mean images per forward pass and the share of queries whose top result has the query's class.
fn response_stats(run: &Run, labels: &[String]) -> (Option<f64>, Option<f64>) {
    let (mut batch, mut top1, mut n) = (0.0, 0usize, 0usize);
    for s in run.ok() {
        let Some(v) = s
            .response
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        else {
            continue;
        };
        n += 1;
        batch += v["batch_images"].as_f64().unwrap_or(0.0);
        top1 += usize::from(v["results"][0]["label"].as_str() == Some(labels[s.body].as_str()));
    }
    if n == 0 {
        return (None, None);
    }
    (Some(batch / n as f64), Some(top1 as f64 / n as f64))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (bodies, labels) = query_images(&cli)?;
    let bodies = Arc::new(bodies);
    let (_server, addr) = match &cli.url {
        Some(url) => (None, loopback(url)?),
        None => {
            let s = start_server(&cli)?;
            let a = s.addr;
            (Some(s), a)
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Measure the HNSW index, not the exact search the server answers with while its graph is still building.
    let waited = process::wait_for_graph(&rt, addr, Duration::from_secs(600))?;
    eprintln!("HNSW graph ready after {:.1} s", waited.as_secs_f64());
    let info = process::get_json(&rt, addr, "/v1/info")?;
    eprintln!(
        "server {addr}: index {} vectors, query {} ({} MMACs), gallery {} ({} MMACs), {}",
        info["index"]["size"],
        info["models"]["query"]["name"],
        info["models"]["query"]["mmacs"],
        info["models"]["gallery"]["name"],
        info["models"]["gallery"]["mmacs"],
        info["provider"],
    );
    let budget = Budget {
        requests: cli.requests,
        duration: Duration::from_secs_f64(cli.seconds),
    };
    let mut cells = Vec::new();
    for &c in &cli.concurrency {
        for mode in &cli.modes {
            let path = format!("/search?k={}&mode={mode}", cli.k);
            let warm = Budget {
                requests: cli.warmup,
                duration: Duration::from_secs(30),
            };
            rt.block_on(load::run(
                addr,
                &path,
                "image/png",
                bodies.clone(),
                c,
                &warm,
            ))?;
            let run = rt.block_on(load::run(
                addr,
                &path,
                "image/png",
                bodies.clone(),
                c,
                &budget,
            ))?;
            let (batch, top1) = response_stats(&run, &labels);
            let cell = json!({
                "mode": mode,
                "concurrency": c,
                "requests_ok": run.ok().count(),
                "rejected_429": run.count_status(429),
                "errors": run.samples.len() - run.ok().count() - run.count_status(429),
                "seconds": run.elapsed.as_secs_f64(),
                "throughput_rps": run.throughput(),
                "p50_ms": run.latency_ms(0.5),
                "p99_ms": run.latency_ms(0.99),
                "mean_batch_images": batch,
                "top1_label_match": top1,
            });
            eprintln!("{cell}");
            cells.push(cell);
        }
    }
    print_table(&cli, &info, &cells);
    if let Some(path) = &cli.json {
        let out = json!({
            "server": info,
            "budget": {"requests": cli.requests, "seconds": cli.seconds, "warmup": cli.warmup},
            "queries": {"images": bodies.len(), "source": if cli.synthetic { "synthetic" } else { "fashion-mnist:test" }, "k": cli.k},
            "results": cells,
        });
        hetvis_benches::write_json(path, &out)?;
    }
    Ok(())
}

fn print_table(cli: &Cli, info: &Value, cells: &[Value]) {
    let model = |mode: &str| {
        let m = if mode == "paragon" {
            &info["models"]["gallery"]
        } else {
            &info["models"]["query"]
        };
        format!(
            "{} ({:.1} MMACs)",
            m["name"].as_str().unwrap_or("?"),
            m["mmacs"].as_f64().unwrap_or(f64::NAN)
        )
    };
    let f = |v: &Value, prec: usize| v.as_f64().map_or("-".into(), |x| format!("{x:.prec$}"));
    print!("{:>5}", "conc");
    for mode in &cli.modes {
        print!(" | {:^50}", format!("{mode}: {}", model(mode)));
    }
    println!();
    print!("{:>5}", "");
    for _ in &cli.modes {
        print!(
            " | {:>8} {:>8} {:>8} {:>7} {:>7} {:>6}",
            "req/s", "p50 ms", "p99 ms", "batch", "top1", "429s"
        );
    }
    println!();
    for &c in &cli.concurrency {
        print!("{c:>5}");
        for mode in &cli.modes {
            let Some(cell) = cells
                .iter()
                .find(|x| x["mode"] == *mode && x["concurrency"] == c)
            else {
                continue;
            };
            print!(
                " | {:>8} {:>8} {:>8} {:>7} {:>7} {:>6}",
                f(&cell["throughput_rps"], 1),
                f(&cell["p50_ms"], 2),
                f(&cell["p99_ms"], 2),
                f(&cell["mean_batch_images"], 2),
                f(&cell["top1_label_match"], 3),
                cell["rejected_429"].as_u64().unwrap_or(0),
            );
        }
        println!();
    }
}
