//! The whole CMP-NAS job on one data set: gallery -> per FLOPs tier: BCT super-network -> search -> retrain the
//! winner -> baselines at the same tier (BCT and independent) -> evaluation, report and plot. Every stage lives
//! in its own directory and is skipped when finished, so re-running the command resumes. After the gallery the
//! jobs are independent of each other, so they can run side by side ([`run_parallel`]).

use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, ModelSpec};

use crate::cmpnas::{Reward, SupernetLoss};
use crate::context::Context;
use crate::data::Dataset;
use crate::preset::Preset;
use crate::tier::{baselines_for, space_for, Tier};
use crate::train::{self, QueryMode, TrainError};

/// Directories of the query models a pipeline trained, for evaluation.
pub struct PipelineRuns {
    pub gallery: PathBuf,
    pub queries: Vec<PathBuf>,
}

/// One unit of the pipeline's work once the gallery model is trained. Each lives in its own directory.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// A baseline architecture scaled to the tier, trained with BCT or independently.
    Baseline {
        tier: Tier,
        arch: String,
        spec: ModelSpec,
        mode: QueryMode,
    },
    /// The tier's BCT super-network, the search over it, and the winner retrained from scratch with BCT.
    Cmpnas { tier: Tier },
}

impl Job {
    fn tier(&self) -> Tier {
        match self {
            Job::Baseline { tier, .. } | Job::Cmpnas { tier } => *tier,
        }
    }

    /// The directory of the job's query model (the super-network and search sit beside the winner's).
    pub fn dir(&self, out: &Path) -> PathBuf {
        let tier = out.join(format!("tier-{}", self.tier().label()));
        match self {
            Job::Baseline { arch, mode, .. } => tier.join(format!("{arch}-{}", mode.name())),
            Job::Cmpnas { .. } => tier.join("cmpnas-bct"),
        }
    }

    /// The query model's name in reports.
    pub fn label(&self) -> String {
        let tier = self.tier().label();
        match self {
            Job::Baseline { arch, mode, .. } => format!("{arch}-{tier}-{}", mode.name()),
            Job::Cmpnas { .. } => format!("cmpnas-{tier}"),
        }
    }
}

/// The pipeline's jobs in report order: per tier, the baselines (BCT, then independent), then the winner.
pub fn plan(p: &Preset, gallery_mmacs: f64) -> Vec<Job> {
    let mut jobs = Vec::new();
    for &ratio in &p.cmpnas.tiers {
        let tier = Tier::Ratio(ratio);
        for (arch, spec) in baselines_for(tier.budget(gallery_mmacs), p) {
            for mode in [QueryMode::Bct, QueryMode::Independent] {
                jobs.push(Job::Baseline {
                    tier,
                    arch: arch.clone(),
                    spec: spec.clone(),
                    mode,
                });
            }
        }
        jobs.push(Job::Cmpnas { tier });
    }
    jobs
}

/// The order in which parallel workers take the plan's jobs: the long super-network chains first, so they do
/// not start last and leave a worker idle at the end.
pub fn schedule(plan: &[Job]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..plan.len()).collect();
    order.sort_by_key(|&i| !matches!(plan[i], Job::Cmpnas { .. }));
    order
}

/// Trains (or reuses) the gallery model in `out/gallery`; returns its directory and MMACs.
pub fn gallery(ctx: &Context, out: &Path) -> Result<(PathBuf, f64), TrainError> {
    let dir = out.join("gallery");
    let g = train::run(&dir, &ctx.gallery_config("gallery"), ctx.data, ctx.device)?;
    Ok((dir, g.manifest.mmacs))
}

/// Runs one job (skipping whatever of it is finished); returns the directory of its query model.
pub fn run_job(
    ctx: &Context,
    out: &Path,
    gallery: &Path,
    gallery_mmacs: f64,
    job: &Job,
) -> Result<PathBuf, TrainError> {
    let dir = job.dir(out);
    let name = job.label();
    match job {
        Job::Baseline { spec, mode, .. } => {
            train::run(
                &dir,
                &ctx.query_config(&name, spec.clone(), *mode, gallery),
                ctx.data,
                ctx.device,
            )?;
        }
        Job::Cmpnas { tier } => {
            let budget = tier.budget(gallery_mmacs);
            let tier_dir = dir.parent().unwrap_or(out);
            tracing::info!(tier = %tier.label(), budget_mmacs = budget, "search");
            let summary = ctx.search(
                gallery,
                *tier,
                budget,
                SupernetLoss::Bct,
                Reward::R3,
                &tier_dir.join("supernet"),
                &tier_dir.join("search"),
            )?;
            let space = space_for(ctx.preset, *tier, budget);
            let spec = ctx.preset.spec(Backbone::Spos(summary.best.spec(&space)));
            train::run(
                &dir,
                &ctx.query_config(&name, spec, QueryMode::Bct, gallery),
                ctx.data,
                ctx.device,
            )?;
        }
    }
    Ok(dir)
}

/// Runs the pipeline into `out`, one job after the other in report order. `on_stage` is called with the runs
/// finished so far after every query model, so a long run leaves an up-to-date report behind at each step.
pub fn run(
    ctx: &Context,
    out: &Path,
    mut on_stage: impl FnMut(&PipelineRuns),
) -> Result<PipelineRuns, TrainError> {
    let (gallery, gallery_mmacs) = gallery(ctx, out)?;
    let mut runs = PipelineRuns {
        gallery: gallery.clone(),
        queries: Vec::new(),
    };
    for job in plan(ctx.preset, gallery_mmacs) {
        runs.queries
            .push(run_job(ctx, out, &gallery, gallery_mmacs, &job)?);
        on_stage(&runs);
    }
    Ok(runs)
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Job(#[from] crate::jobs::JobError),
}

/// Like [`run`], but after the gallery model the jobs run side by side in child processes: `child(job)` is the
/// command that runs that job of [`plan`] (the binary re-invokes itself). `on_stage` sees the finished runs in
/// report order.
pub fn run_parallel(
    ctx: &Context,
    out: &Path,
    workers: crate::jobs::Workers,
    child: impl Fn(&Job) -> std::process::Command,
    mut on_stage: impl FnMut(&PipelineRuns),
) -> Result<PipelineRuns, PipelineError> {
    let (gallery, gallery_mmacs) = gallery(ctx, out)?;
    let jobs = plan(ctx.preset, gallery_mmacs);
    let runs_of = |finished: &[usize]| PipelineRuns {
        gallery: gallery.clone(),
        queries: finished.iter().map(|&i| jobs[i].dir(out)).collect(),
    };
    let order = schedule(&jobs);
    let children = order
        .iter()
        .map(|&i| crate::jobs::ChildJob {
            label: jobs[i].label(),
            command: child(&jobs[i]),
            log: crate::jobs::log_path(&jobs[i].dir(out)),
        })
        .collect();
    let mut finished = Vec::new();
    tracing::info!(
        jobs = jobs.len(),
        workers = workers.count,
        threads_each = workers.threads_each,
        "training the query models side by side; each job logs to its directory's job.log"
    );
    crate::jobs::run_children(children, workers, |k| {
        finished.push(order[k]);
        finished.sort_unstable();
        on_stage(&runs_of(&finished));
    })?;
    Ok(runs_of(&(0..jobs.len()).collect::<Vec<_>>()))
}

/// Evaluates the pipeline's models and writes `report.json`, `report.md` and `accuracy_vs_mmacs.svg`. `cache`
/// carries evaluations across the interim reports, so each one only evaluates the models that are new.
pub fn report(
    cache: &mut crate::eval::EvalCache,
    runs: &PipelineRuns,
    data: &Dataset,
    data_label: &str,
    out: &Path,
    ort: &hetvis_models::runtime::SessionConfig,
) -> Result<crate::eval::Report, crate::eval::EvalError> {
    let report = crate::eval::run_cached(
        cache,
        &runs.gallery,
        &runs.queries,
        data_label,
        &data.test,
        out,
        ort,
    )?;
    let points: Vec<crate::plot::Point> = report
        .query_models
        .iter()
        // The compatible models: those in the gallery's embedding space, trained with the objective (not `l2`).
        .filter(|q| q.compatible_id && q.mode != QueryMode::L2.name())
        .map(|q| crate::plot::Point {
            label: q.name.clone(),
            mmacs: q.mmacs,
            homogeneous: q.homogeneous.top1,
            heterogeneous: q.heterogeneous.top1,
        })
        .collect();
    let svg =
        crate::plot::accuracy_vs_mmacs(&points, report.paragon.metrics.top1, "top-1 accuracy");
    hetvis_models::atomic::write(&out.join("accuracy_vs_mmacs.svg"), svg.as_bytes()).map_err(
        |e| crate::eval::EvalError::File {
            path: out.to_owned(),
            message: e.to_string(),
        },
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_keeps_the_directory_layout_and_schedules_the_chains_first() {
        let p = crate::preset::load("cpu", None).unwrap();
        let jobs = plan(&p, 40.5);
        assert_eq!(
            jobs.len(),
            10,
            "per tier: two baselines in two modes, and the chain"
        );
        let out = Path::new("runs/fm");
        let dirs: Vec<PathBuf> = jobs.iter().map(|j| j.dir(out)).collect();
        assert_eq!(dirs[0], out.join("tier-23x/mobilenetv2-bct"));
        assert_eq!(dirs[1], out.join("tier-23x/mobilenetv2-independent"));
        assert_eq!(dirs[4], out.join("tier-23x/cmpnas-bct"));
        assert_eq!(dirs[9], out.join("tier-80x/cmpnas-bct"));
        assert_eq!(jobs[4].label(), "cmpnas-23x");
        assert_eq!(jobs[3].label(), "shufflenetv2-23x-independent");
        let labels: std::collections::HashSet<String> = jobs.iter().map(Job::label).collect();
        assert_eq!(labels.len(), jobs.len(), "children are started by label");
        let order = schedule(&jobs);
        assert_eq!(&order[..2], &[4, 9]);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
