//! The paper's compatibility studies, one command each (`hetvis-train study ...`), sized by the preset's
//! `study` section:
//! - [`pruning`]: weight-level compatibility (supplementary Table 4): query models pruned from the gallery
//!   model, trained from scratch, fine-tuned, with BCT and with knowledge distillation;
//! - [`random_archs`]: architecture-level compatibility (the article's Q1/Q2 figures): random architectures
//!   near one budget, trained with BCT and without;
//! - [`rewards`]: the reward ablation (supplementary Figure 1): R1/R2/R3 searches over BCT and vanilla
//!   super-networks, best architectures retrained and averaged.
//!
//! Every trained model is a run directory like the pipeline's, so a re-run skips finished models; the
//! evaluation runs on the shipped ONNX models through [`crate::eval`].

pub use crate::eval::metric_of;

pub mod pruning;
pub mod random_archs;
pub mod rewards;

use std::path::{Path, PathBuf};

use hetvis_models::runtime::SessionConfig;

use crate::context::Context;
use crate::data::Split3;
use crate::eval::{EvalError, QueryResult, Report};
use crate::train::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Prune(#[from] hetvis_models::prune::PruneError),
    #[error(transparent)]
    Weights(#[from] hetvis_models::weights::WeightsError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// The first `limit` test images (0 = all): the studies evaluate many models, and the 10k x 10k
/// leave-one-out evaluation of each is a large share of their time on a small machine.
pub fn test_subset(split: &Split3, limit: usize) -> Split3 {
    let n = if limit == 0 {
        split.len()
    } else {
        limit.min(split.len())
    } as i64;
    Split3 {
        x: split.x.narrow(0, 0, n),
        y: split.y.narrow(0, 0, n),
    }
}

/// Evaluates a study's runs against the gallery on the preset's study test subset, into `out/eval`.
pub fn evaluate(
    ctx: &Context,
    gallery: &Path,
    runs: &[PathBuf],
    out: &Path,
    ort: &SessionConfig,
) -> Result<Report, StudyError> {
    let test = test_subset(&ctx.data.test, ctx.preset.study.test_limit);
    Ok(crate::eval::run(
        gallery,
        runs,
        ctx.data_label,
        &test,
        &out.join("eval"),
        ort,
    )?)
}

/// The evaluated query model of a report by run name.
pub fn result<'a>(report: &'a Report, name: &str) -> Result<&'a QueryResult, StudyError> {
    report
        .query_models
        .iter()
        .find(|q| q.name == name)
        .ok_or_else(|| StudyError::Invalid(format!("{name} is missing from the evaluation")))
}

/// Kendall's rank correlation tau-b (ties in either ranking counted out, as scipy's default); NaN when
/// either ranking is constant or there are fewer than two pairs.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "paired samples");
    let (mut concordant, mut discordant, mut ties_x, mut ties_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let dx = x[i] - x[j];
            let dy = y[i] - y[j];
            match (dx == 0.0, dy == 0.0) {
                (true, true) => {}
                (true, false) => ties_x += 1,
                (false, true) => ties_y += 1,
                (false, false) if (dx > 0.0) == (dy > 0.0) => concordant += 1,
                (false, false) => discordant += 1,
            }
        }
    }
    let n1 = (concordant + discordant + ties_x) as f64;
    let n2 = (concordant + discordant + ties_y) as f64;
    (concordant - discordant) as f64 / (n1 * n2).sqrt()
}

/// Writes a study output atomically.
pub fn write(path: &Path, text: &str) -> Result<(), StudyError> {
    hetvis_models::atomic::write(path, text.as_bytes()).map_err(|e| StudyError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The serde name of an enum value (`bct`, `r3`, `map_at_r`), for directory names and tables.
pub fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_tau_of_known_rankings() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((kendall_tau(&x, &[2.0, 4.0, 6.0, 8.0, 10.0]) - 1.0).abs() < 1e-12);
        assert!((kendall_tau(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // One swapped pair of 10: (9 - 1) / 10.
        assert!((kendall_tau(&x, &[1.0, 2.0, 3.0, 5.0, 4.0]) - 0.8).abs() < 1e-12);
        // scipy.stats.kendalltau([1, 2, 3, 4], [1, 1, 2, 3]) = 0.912870929...
        let t = kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 2.0, 3.0]);
        assert!((t - 0.912_870_929).abs() < 1e-8, "{t}");
        assert!(kendall_tau(&x, &[1.0; 5]).is_nan());
    }
}
