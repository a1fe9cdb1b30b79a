//! Evaluation of a gallery model and its query models on a test split, through ONNX Runtime: what is evaluated
//! is what ships. Protocol: every test image is a query against all other test images (leave-one-out);
//! paragon = M(g, g), homogeneous = M(q, q), heterogeneous = M(q, g).

use std::path::{Path, PathBuf};

use hetvis_models::atomic::write as write_atomic;
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::ModelManifest;
use hetvis_models::metrics::{
    evaluate as retrieval, Hubness, Labelled, MetricsConfig, RetrievalMetrics,
};
use hetvis_models::runtime::SessionConfig;
use serde::{Deserialize, Serialize};

use crate::data::Split3;
use crate::preset::RewardMetric;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub top1: f64,
    pub top5: f64,
    pub top10: f64,
    pub map_at_r: f64,
    #[serde(rename = "tar_at_far_1e-2")]
    pub tar_at_far_1e_2: f64,
    #[serde(rename = "tar_at_far_1e-3")]
    pub tar_at_far_1e_3: f64,
    /// How the search spreads its top-10 answers over the gallery (absent in reports made before it was
    /// measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hubness: Option<Hubness>,
}

/// How far a query model's heterogeneous search falls short of the paragon, metric by metric: paragon minus
/// heterogeneous, as fractions (0.049 = 4.9 points).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub top1: f64,
    pub top5: f64,
    pub top10: f64,
    pub map_at_r: f64,
    #[serde(rename = "tar_at_far_1e-2")]
    pub tar_at_far_1e_2: f64,
    #[serde(rename = "tar_at_far_1e-3")]
    pub tar_at_far_1e_3: f64,
}

impl Gap {
    pub fn between(paragon: &Metrics, heterogeneous: &Metrics) -> Self {
        Self {
            top1: paragon.top1 - heterogeneous.top1,
            top5: paragon.top5 - heterogeneous.top5,
            top10: paragon.top10 - heterogeneous.top10,
            map_at_r: paragon.map_at_r - heterogeneous.map_at_r,
            tar_at_far_1e_2: paragon.tar_at_far_1e_2 - heterogeneous.tar_at_far_1e_2,
            tar_at_far_1e_3: paragon.tar_at_far_1e_3 - heterogeneous.tar_at_far_1e_3,
        }
    }
}

impl From<&RetrievalMetrics> for Metrics {
    fn from(m: &RetrievalMetrics) -> Self {
        Self {
            top1: m.top(1),
            top5: m.top(5),
            top10: m.top(10),
            map_at_r: m.map_at_r,
            tar_at_far_1e_2: m.tar(1e-2),
            tar_at_far_1e_3: m.tar(1e-3),
            hubness: Some(m.hubness),
        }
    }
}

/// One metric of an evaluation, chosen like the search's reward metric.
pub fn metric_of(m: &Metrics, metric: RewardMetric) -> f64 {
    match metric {
        RewardMetric::Top1 => m.top1,
        RewardMetric::Top5 => m.top5,
        RewardMetric::Top10 => m.top10,
        RewardMetric::MapAtR => m.map_at_r,
        RewardMetric::TarAtFar1e3 => m.tar_at_far_1e_3,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Paragon {
    pub name: String,
    pub mmacs: f64,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResult {
    pub name: String,
    pub mmacs: f64,
    /// Gallery MMACs / query MMACs.
    pub mmacs_ratio: f64,
    pub mode: String,
    /// Whether the model claims the gallery's embedding space (same `compat_id`).
    pub compatible_id: bool,
    pub homogeneous: Metrics,
    pub heterogeneous: Metrics,
    /// Paragon minus heterogeneous on every metric.
    #[serde(default)]
    pub gap_to_paragon: Gap,
}

impl QueryResult {
    /// The compatibility rule: heterogeneous beats homogeneous top-1.
    pub fn compatibility_rule_holds(&self) -> bool {
        self.heterogeneous.top1 > self.homogeneous.top1
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub dataset: String,
    pub protocol: String,
    pub paragon: Paragon,
    pub query_models: Vec<QueryResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Embed(#[from] hetvis_models::embed::EmbedError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Embeds every image of a split with an ONNX model.
pub fn embed_split(
    model: &mut Embedder,
    split: &Split3,
    label: &str,
) -> Result<Vec<f32>, EvalError> {
    let n = split.len();
    let bar = crate::progress::bar(n as u64, "{prefix:>12} [{bar:25}] {pos}/{len} {per_sec}");
    bar.set_prefix(format!("embed {label}"));
    let mut out = Vec::with_capacity(n * model.dim());
    for start in (0..n).step_by(256) {
        let len = 256.min(n - start);
        out.extend(model.embed(&split.rows_f32(start, len))?);
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn load(dir: &Path, config: &SessionConfig) -> Result<Embedder, EvalError> {
    Ok(Embedder::load(&dir.join("model.onnx"), config)?)
}

/// What identifies an evaluated model file: its path, length and modification time. A retrained model is a new
/// file, so it is evaluated again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Stamp {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(dir: &Path) -> Result<Self, EvalError> {
        let path = dir.join("model.onnx");
        let meta = std::fs::metadata(&path).map_err(|e| EvalError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            path,
        })
    }
}

/// The gallery's test embeddings and the results of models already evaluated, so that a report after every
/// pipeline stage evaluates only what is new. Results hold for one test split and one gallery model: a
/// different gallery file clears them.
#[derive(Default)]
pub struct EvalCache {
    gallery: Option<(Stamp, ModelManifest, Vec<f32>, Metrics)>,
    queries: std::collections::HashMap<Stamp, QueryResult>,
    /// Models evaluated (not served from the cache) so far; for tests and logs.
    pub evaluated: usize,
}

/// Evaluates the gallery run and the query runs on `test`, writes `report.json` and `report.md` into `out`.
pub fn run(
    gallery: &Path,
    queries: &[PathBuf],
    dataset: &str,
    test: &Split3,
    out: &Path,
    config: &SessionConfig,
) -> Result<Report, EvalError> {
    run_cached(
        &mut EvalCache::default(),
        gallery,
        queries,
        dataset,
        test,
        out,
        config,
    )
}

/// As [`run`], reusing and filling `cache`. The caller keeps one cache per test split.
pub fn run_cached(
    cache: &mut EvalCache,
    gallery: &Path,
    queries: &[PathBuf],
    dataset: &str,
    test: &Split3,
    out: &Path,
    config: &SessionConfig,
) -> Result<Report, EvalError> {
    let labels = test.labels();
    let cfg = MetricsConfig {
        leave_one_out: true,
        ..Default::default()
    };
    let g_stamp = Stamp::of(gallery)?;
    let entry = match cache.gallery.take() {
        Some(hit) if hit.0 == g_stamp => hit,
        _ => {
            let mut g = load(gallery, config)?;
            let gm: ModelManifest = g.manifest().clone();
            let g_emb = embed_split(&mut g, test, &gm.name)?;
            let ge = Labelled::new(&g_emb, &labels, gm.embedding_dim);
            let metrics = (&retrieval(ge, ge, &cfg)).into();
            cache.evaluated += 1;
            cache.queries.clear();
            (g_stamp, gm, g_emb, metrics)
        }
    };
    let (_, gm, g_emb, paragon_metrics) = cache.gallery.insert(entry);
    let dim = gm.embedding_dim;
    let ge = Labelled::new(g_emb, &labels, dim);
    let paragon = Paragon {
        name: gm.name.clone(),
        mmacs: gm.mmacs,
        metrics: paragon_metrics.clone(),
    };
    let mut query_models = Vec::new();
    for dir in queries {
        let stamp = Stamp::of(dir)?;
        if let Some(hit) = cache.queries.get(&stamp) {
            query_models.push(hit.clone());
            continue;
        }
        let mut q = load(dir, config)?;
        let qm = q.manifest().clone();
        if qm.embedding_dim != dim {
            return Err(EvalError::File {
                path: dir.clone(),
                message: format!(
                    "embedding dim {} differs from the gallery's {dim}",
                    qm.embedding_dim
                ),
            });
        }
        let q_emb = embed_split(&mut q, test, &qm.name)?;
        let qe = Labelled::new(&q_emb, &labels, dim);
        let heterogeneous: Metrics = (&retrieval(qe, ge, &cfg)).into();
        let result = QueryResult {
            name: qm.name.clone(),
            mmacs: qm.mmacs,
            mmacs_ratio: gm.mmacs / qm.mmacs,
            mode: qm.provenance.mode.clone(),
            compatible_id: qm.compat_id == gm.compat_id,
            homogeneous: (&retrieval(qe, qe, &cfg)).into(),
            gap_to_paragon: Gap::between(&paragon.metrics, &heterogeneous),
            heterogeneous,
        };
        cache.evaluated += 1;
        cache.queries.insert(stamp, result.clone());
        query_models.push(result);
    }
    let report = Report {
        dataset: dataset.to_owned(),
        protocol: format!(
            "{} test images, each a query against all others (leave-one-out); cosine similarity; \
             embeddings from ONNX Runtime",
            test.len()
        ),
        paragon,
        query_models,
    };
    let werr = |path: &Path, e: &dyn std::fmt::Display| EvalError::File {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| werr(out, &e))?;
    write_atomic(&out.join("report.json"), json.as_bytes()).map_err(|e| werr(out, &e))?;
    write_atomic(&out.join("report.md"), markdown(&report).as_bytes())
        .map_err(|e| werr(out, &e))?;
    Ok(report)
}

/// A fraction as a percentage with one decimal, as every table shows it.
pub fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The paper-style table (supplementary Tables 1 and 3): model, MFLOPs, homogeneous and heterogeneous columns,
/// the paragon row first.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Compatibility report: {}\n\n{}\n\n",
        r.dataset, r.protocol
    );
    s += "Accuracies in %. Homogeneous: M(q, q). Heterogeneous: M(q, g), query model vs gallery model.\n\n";
    s += "| Model | Mode | MMACs | Gallery/query MMACs | Hom. top-1 | Hom. top-10 | Hom. mAP@R | Het. top-1 | Het. top-5 | Het. top-10 | Het. mAP@R | Het. TAR@1e-3 | Rule |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|\n";
    let p = &r.paragon.metrics;
    s += &format!(
        "| {} (paragon) | gallery | {:.1} | 1.0 | {} | {} | {} | {} | {} | {} | {} | {} | |\n",
        r.paragon.name,
        r.paragon.mmacs,
        pct(p.top1),
        pct(p.top10),
        pct(p.map_at_r),
        pct(p.top1),
        pct(p.top5),
        pct(p.top10),
        pct(p.map_at_r),
        pct(p.tar_at_far_1e_3)
    );
    for q in &r.query_models {
        let (h, x) = (&q.homogeneous, &q.heterogeneous);
        s += &format!(
            "| {} | {} | {:.1} | {:.1}x | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            q.name,
            q.mode,
            q.mmacs,
            q.mmacs_ratio,
            pct(h.top1),
            pct(h.top10),
            pct(h.map_at_r),
            pct(x.top1),
            pct(x.top5),
            pct(x.top10),
            pct(x.map_at_r),
            pct(x.tar_at_far_1e_3),
            if q.compatibility_rule_holds() {
                "yes"
            } else {
                "no"
            }
        );
    }
    s += "\nRule: the compatibility rule M(q, g) > M(q, q) on top-1.\n\n";
    s += &gap_table(r);
    s
}

/// Each query model's gap to the paragon (points) and the hubness of its heterogeneous search, beside the
/// paragon's own hubness: where an objective acts.
fn gap_table(r: &Report) -> String {
    let points = |v: f64| format!("{:.1}", 100.0 * v);
    let hub = |m: &Metrics| match m.hubness {
        Some(h) => format!("{:.2} | {}", h.skewness, h.max),
        None => "- | -".into(),
    };
    let mut s = format!(
        "Gap to the paragon in points (paragon minus heterogeneous), and hubness of each search: the skewness and \
         the maximum of N{k}, how often one gallery image is among the queries' top-{k}.\n\n",
        k = hetvis_models::metrics::HUBNESS_K
    );
    s += "| Model | Mode | Gap top-1 | Gap top-5 | Gap top-10 | Gap mAP@R | Gap TAR@1e-3 | Het. hub skew | Het. hub max | Hom. hub skew | Hom. hub max |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    s += &format!(
        "| {} (paragon) | gallery | | | | | | {} | |\n",
        r.paragon.name,
        hub(&r.paragon.metrics)
    );
    for q in &r.query_models {
        let g = q.gap_to_paragon;
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            q.name,
            q.mode,
            points(g.top1),
            points(g.top5),
            points(g.top10),
            points(g.map_at_r),
            points(g.tar_at_far_1e_3),
            hub(&q.heterogeneous),
            hub(&q.homogeneous),
        );
    }
    s
}
