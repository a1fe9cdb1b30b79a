//! Weight-level compatibility study (CMP-NAS supplementary Table 4): query models made by pruning filters of
//! the first two layers of each residual block of the gallery ResNet ([`hetvis_models::prune`]), by magnitude
//! and by the channel criterion, at several amounts; each trained from scratch (`independent`), fine-tuned
//! from the pruned gallery weights (`finetune`), with BCT (`bct`, from scratch) and with knowledge distillation
//! of the gallery's logits (`kd`, from scratch). The table holds the heterogeneous accuracy of every cell.
//!
//! Layout of `OUT`: `{criterion}-{pct}/spec.json` + `init.safetensors` (the pruned network) and its `finetune`
//! run; the from-scratch modes (`independent`, `bct`, `kd`) see only the architecture, which every criterion
//! shares at a given amount (the same filter counts per layer), so they are trained once, in the first
//! criterion's directory, and their cells repeat across criteria. Then `eval/`, `pruning.json`, `pruning.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hetvis_models::flops;
use hetvis_models::prune::{prune_resnet, PruneCriterion};
use hetvis_models::runtime::SessionConfig;
use hetvis_models::weights::Weights;
use serde::{Deserialize, Serialize};

use super::{evaluate, result, to_json, write, StudyError};
use crate::context::Context;
use crate::eval::pct;
use crate::eval::Metrics;
use crate::train::{self, QueryMode};

/// What the study trains: the grid criteria x amounts x modes.
#[derive(Debug, Clone)]
pub struct PruningStudy {
    pub criteria: Vec<PruneCriterion>,
    pub amounts: Vec<f64>,
    pub modes: Vec<QueryMode>,
}

/// One trained cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub mode: String,
    pub homogeneous: Metrics,
    pub heterogeneous: Metrics,
}

/// One pruned network and its cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub criterion: String,
    pub amount: f64,
    pub mmacs: f64,
    pub params: u64,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruningTable {
    pub gallery: String,
    pub gallery_mmacs: f64,
    pub paragon: Metrics,
    pub protocol: String,
    pub rows: Vec<Row>,
}

fn dir_name(criterion: PruneCriterion, amount: f64) -> String {
    format!("{}-{:02.0}", criterion.name(), 100.0 * amount)
}

/// Prunes, trains and evaluates the grid into `out`; finished runs are skipped.
pub fn run(
    ctx: &Context,
    gallery: &Path,
    study: &PruningStudy,
    out: &Path,
    ort: &SessionConfig,
) -> Result<PruningTable, StudyError> {
    let manifest = crate::train::gallery_manifest(gallery)?;
    let weights = Weights::load(&gallery.join("weights.safetensors"))?;
    let mut runs: Vec<PathBuf> = Vec::new();
    let mut pruned_rows = Vec::new();
    // Modes that start from scratch see only the pruned architecture, and every criterion keeps the same
    // number of filters per layer: such a cell is trained once per architecture and shared by the criteria.
    let mut first_dir_of_arch: HashMap<String, String> = HashMap::new();
    for &criterion in &study.criteria {
        for &amount in &study.amounts {
            let dir = out.join(dir_name(criterion, amount));
            let pruned = prune_resnet(&manifest.spec, &weights, criterion, amount)?;
            std::fs::create_dir_all(&dir).map_err(|e| StudyError::File {
                path: dir.clone(),
                message: e.to_string(),
            })?;
            write(&dir.join("spec.json"), &to_json(&pruned.spec))?;
            let init = dir.join("init.safetensors");
            write_weights(&init, &pruned.weights)?;
            let cost = flops::count(&pruned.spec.lower().map_err(train::TrainError::from)?)
                .map_err(|e| StudyError::Invalid(e.to_string()))?;
            tracing::info!(
                criterion = criterion.name(),
                amount,
                mmacs = cost.mmacs(),
                "pruned gallery"
            );
            let arch_owner = first_dir_of_arch
                .entry(to_json(&pruned.spec))
                .or_insert_with(|| dir_name(criterion, amount))
                .clone();
            let mut names = Vec::new();
            for &mode in &study.modes {
                let inherits = mode == QueryMode::Finetune;
                let cell_owner = if inherits {
                    dir_name(criterion, amount)
                } else {
                    arch_owner.clone()
                };
                let run_dir = out.join(&cell_owner).join(mode.name());
                let name = format!("{cell_owner}-{}", mode.name());
                if !runs.contains(&run_dir) {
                    let mut config = ctx.query_config(&name, pruned.spec.clone(), mode, gallery);
                    if inherits {
                        config.init = Some(init.clone());
                    }
                    train::run(&run_dir, &config, ctx.data, ctx.device)?;
                    runs.push(run_dir);
                }
                names.push(name);
            }
            pruned_rows.push((criterion, amount, names, cost));
        }
    }
    let report = evaluate(ctx, gallery, &runs, out, ort)?;
    let mut rows = Vec::new();
    for (criterion, amount, names, cost) in pruned_rows {
        let mut cells = Vec::new();
        for (&mode, name) in study.modes.iter().zip(&names) {
            let q = result(&report, name)?;
            cells.push(Cell {
                mode: mode.name().to_owned(),
                homogeneous: q.homogeneous.clone(),
                heterogeneous: q.heterogeneous.clone(),
            });
        }
        rows.push(Row {
            criterion: criterion.name().to_owned(),
            amount,
            mmacs: cost.mmacs(),
            params: cost.params,
            cells,
        });
    }
    let table = PruningTable {
        gallery: manifest.name.clone(),
        gallery_mmacs: manifest.mmacs,
        paragon: report.paragon.metrics.clone(),
        protocol: report.protocol.clone(),
        rows,
    };
    write(&out.join("pruning.json"), &to_json(&table))?;
    write(&out.join("pruning.md"), &markdown(&table))?;
    Ok(table)
}

fn write_weights(path: &Path, w: &Weights) -> Result<(), StudyError> {
    hetvis_models::atomic::write(path, &w.to_bytes()?).map_err(|e| StudyError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The paper-style table: one row per pruned network, heterogeneous top-1 per training method.
pub fn markdown(t: &PruningTable) -> String {
    let modes: Vec<&str> = t
        .rows
        .first()
        .map(|r| r.cells.iter().map(|c| c.mode.as_str()).collect())
        .unwrap_or_default();
    let mut s = format!(
        "# Weight-level compatibility: pruned query models\n\n{}\n\nHeterogeneous top-1 in % (query model vs \
         gallery model {}); homogeneous top-1 in brackets. Paragon top-1: {}.\n\n",
        t.protocol,
        t.gallery,
        pct(t.paragon.top1)
    );
    s += "| Prune method | Amount | MMACs | Gallery/query |";
    for m in &modes {
        s += &format!(" {m} |");
    }
    s += "\n|---|---:|---:|---:|";
    s += &"---:|".repeat(modes.len());
    s += "\n";
    s += &format!(
        "| - (gallery) | 0% | {:.1} | 1.0x |{}\n",
        t.gallery_mmacs,
        " - |".repeat(modes.len())
    );
    for r in &t.rows {
        s += &format!(
            "| {} | {:.0}% | {:.1} | {:.1}x |",
            r.criterion,
            100.0 * r.amount,
            r.mmacs,
            t.gallery_mmacs / r.mmacs
        );
        for c in &r.cells {
            s += &format!(
                " {} ({}) |",
                pct(c.heterogeneous.top1),
                pct(c.homogeneous.top1)
            );
        }
        s += "\n";
    }
    s
}
