//! `hetvis-train pipeline`: the whole job, gallery to report; with `--job`, one job of its plan (how the
//! pipeline starts its child processes).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use hetvis_trainer::eval::{self, EvalCache};
use hetvis_trainer::jobs::Workers;
use hetvis_trainer::pipeline::{self, Job, PipelineRuns};

use crate::common::{run_context, CompatArgs, Ctx, DataArgs};

#[derive(Args)]
pub struct PipelineArgs {
    #[arg(long, default_value = "cpu")]
    preset: String,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compat: CompatArgs,
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
}

pub fn run(ctx: &Ctx, a: PipelineArgs) -> anyhow::Result<()> {
    let mut p = ctx.preset(&a.preset)?;
    a.compat.apply(&mut p);
    let (ds, label) = ctx.dataset(&p, &a.data)?;
    let rc = run_context(ctx, &p, &a.preset, &ds, &label, &a.data);
    let out = &a.out;
    if let Some(label) = a.job {
        let (gallery, gallery_mmacs) = pipeline::gallery(&rc, out)?;
        let jobs = pipeline::plan(&p, gallery_mmacs);
        let job = jobs.iter().find(|j| j.label() == label).with_context(|| {
            let labels: Vec<String> = jobs.iter().map(|j| j.label()).collect();
            format!("no job {label:?} in this plan ({})", labels.join(", "))
        })?;
        let dir = pipeline::run_job(&rc, out, &gallery, gallery_mmacs, job)?;
        println!("{}: {} finished", dir.display(), job.label());
        return Ok(());
    }
    let report_dir = out.join("report");
    let ort = ctx.ort_config();
    let mut cache = EvalCache::default();
    // An interim report after every model; a failure here must not stop training.
    let mut interim = |so_far: &PipelineRuns| {
        if let Err(e) = pipeline::report(&mut cache, so_far, &ds, &label, &report_dir, &ort) {
            tracing::warn!("interim report: {e}");
        }
    };
    let workers = Workers::new(a.workers, ctx.device.is_cuda());
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
        let child = |job: &Job| {
            let mut c = std::process::Command::new(&exe);
            c.args(&argv).arg("--job").arg(job.label());
            c
        };
        pipeline::run_parallel(&rc, out, workers, child, &mut interim)?
    } else {
        pipeline::run(&rc, out, &mut interim)?
    };
    tracing::info!(
        seconds = started.elapsed().as_secs(),
        workers = workers.count,
        "pipeline trained everything"
    );
    let report = pipeline::report(&mut cache, &runs, &ds, &label, &report_dir, &ort)?;
    print!("{}", eval::markdown(&report));
    println!(
        "report: {} ({} model evaluations in this run, the rest reused)",
        report_dir.join("report.md").display(),
        cache.evaluated
    );
    Ok(())
}
