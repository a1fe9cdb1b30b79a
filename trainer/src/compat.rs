//! The compatibility objective of query training and of the CMP-NAS super-network: composable terms that tie a
//! query embedding to the gallery model's embedding space, beside the query model's own classification loss.
//!
//! - `bct`: BCT's influence loss (Shen et al., CVPR 2020): the query embedding classified by the gallery's frozen
//!   classifier. On 10 classes it only asks for the right one of 10 directions.
//! - `reg`: regression onto the gallery embedding of the same image, as `1 - cos` (asymmetric metric learning,
//!   Budnik & Avrithis, CVPR 2021).
//! - `con`: cross-model contrastive (InfoNCE): the positive of a query embedding is the gallery embedding of the
//!   same image; the negatives are the gallery embeddings of the other images of the batch and of a fresh random
//!   draw from the cached training-set embeddings (a queue that needs no momentum encoder, since the gallery is
//!   frozen).
//! - `supcon`: the supervised form: every gallery embedding of the same label is a positive.
//! - `rank`: ranking (contextual-similarity) distillation: over each image's gallery top-k, the softmax of the
//!   query-to-gallery similarities matches that of the gallery-to-gallery similarities (KL), so the query model
//!   ranks the neighbourhood as the gallery model does (CSD, CVPR 2022; RAML, WACV 2023).
//!
//! Every term but `bct` reads the gallery's embeddings of the training images, computed once per gallery run
//! ([`crate::gallery_cache`]); `rank` also reads their neighbour lists.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// One term of the compatibility objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Term {
    Bct,
    Reg,
    Con,
    Supcon,
    Rank,
}

impl Term {
    pub const ALL: [Term; 5] = [Term::Bct, Term::Reg, Term::Con, Term::Supcon, Term::Rank];

    pub fn name(self) -> &'static str {
        match self {
            Term::Bct => "bct",
            Term::Reg => "reg",
            Term::Con => "con",
            Term::Supcon => "supcon",
            Term::Rank => "rank",
        }
    }
}

/// A set of terms, written `bct+reg` (order does not matter; `bct` alone is BCT as published).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Objective(BTreeSet<Term>);

impl Objective {
    pub fn bct() -> Self {
        Self(BTreeSet::from([Term::Bct]))
    }

    pub fn has(&self, t: Term) -> bool {
        self.0.contains(&t)
    }

    pub fn terms(&self) -> impl Iterator<Item = Term> + '_ {
        self.0.iter().copied()
    }

    /// Whether a term needs the gallery's training-set embeddings.
    pub fn needs_gallery_embeddings(&self) -> bool {
        self.0.iter().any(|&t| t != Term::Bct)
    }

    pub fn is_bct(&self) -> bool {
        *self == Self::bct()
    }
}

impl Default for Objective {
    fn default() -> Self {
        Self::bct()
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|t| t.name()).collect();
        f.write_str(&names.join("+"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ObjectiveError {
    #[error("unknown objective term {0:?}; terms: bct, reg, con, supcon, rank, joined with + (e.g. bct+reg)")]
    UnknownTerm(String),
    #[error("an objective needs at least one term (e.g. bct, reg, bct+reg)")]
    Empty,
    #[error("con and supcon are two forms of one term; choose one")]
    BothContrastive,
}

impl FromStr for Objective {
    type Err = ObjectiveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut terms = BTreeSet::new();
        for part in s.split('+').map(str::trim).filter(|p| !p.is_empty()) {
            let term = Term::ALL
                .into_iter()
                .find(|t| t.name() == part)
                .ok_or_else(|| ObjectiveError::UnknownTerm(part.to_owned()))?;
            terms.insert(term);
        }
        if terms.is_empty() {
            return Err(ObjectiveError::Empty);
        }
        if terms.contains(&Term::Con) && terms.contains(&Term::Supcon) {
            return Err(ObjectiveError::BothContrastive);
        }
        Ok(Self(terms))
    }
}

impl Serialize for Objective {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Objective {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The objective and the settings of its terms (preset `compat`; `bct`'s weight is the preset's `bct_weight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompatPreset {
    pub objective: Objective,
    /// Weight of the query model's own classification loss (0 drops it: the objective's terms alone).
    pub cls_weight: f64,
    pub reg_weight: f64,
    pub con_weight: f64,
    pub rank_weight: f64,
    /// Temperature of the contrastive softmax.
    pub temperature: f64,
    /// Gallery embeddings drawn at random from the cache as extra negatives of every contrastive step.
    pub negatives: usize,
    /// Gallery neighbours per image in ranking distillation (the image itself included, its first).
    pub rank_k: usize,
    /// Temperature of both similarity softmaxes of ranking distillation.
    pub rank_temperature: f64,
}

impl Default for CompatPreset {
    fn default() -> Self {
        Self {
            objective: Objective::bct(),
            cls_weight: 1.0,
            reg_weight: 1.0,
            con_weight: 1.0,
            rank_weight: 1.0,
            temperature: 0.05,
            negatives: 4096,
            rank_k: 32,
            rank_temperature: 0.05,
        }
    }
}

impl CompatPreset {
    /// Whether this is plain BCT with the default settings (run records then omit it, so runs recorded before
    /// the objective existed are still the same runs).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The name a run's provenance and the reports give its mode: `bct` for BCT alone, else the objective.
    pub fn mode_name(&self) -> String {
        self.objective.to_string()
    }
}

/// What one step's compatibility terms see besides the query embeddings.
pub struct GalleryBatch<'a> {
    /// The gallery's embeddings of this batch's images `[B, D]` (unit rows).
    pub own: &'a Tensor,
    /// Further gallery embeddings as negatives `[M, D]` (unit rows; may be empty), with the dataset rows they
    /// come from `[M]`, so that a draw of a query's own image is not counted against it.
    pub extra: &'a Tensor,
    pub extra_rows: &'a Tensor,
    /// This batch's dataset rows `[B]`.
    pub rows: &'a Tensor,
    /// Labels of this batch `[B]` and of `extra` `[M]`.
    pub labels: &'a Tensor,
    pub extra_labels: &'a Tensor,
    /// Each image's gallery neighbours' embeddings `[B, K, D]`, for `rank`.
    pub neighbours: Option<&'a Tensor>,
}

/// `e`'s rows scaled to unit length.
pub fn unit(e: &Tensor) -> Tensor {
    e / e
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12)
}

/// `reg`: mean of `1 - cos(q_i, g_i)`.
pub fn regression(query: &Tensor, gallery: &Tensor) -> Tensor {
    let cos = (unit(query) * unit(gallery)).sum_dim_intlist(1, false, Kind::Float);
    (cos.ones_like() - cos).mean(Kind::Float)
}

/// The query-to-candidate logits of the contrastive terms: candidates are the batch's own gallery embeddings,
/// then `extra`; an extra that is a query's own image is masked out (it is that query's positive already).
fn contrastive_logits(query: &Tensor, g: &GalleryBatch, temperature: f64) -> Tensor {
    let q = unit(query);
    let own = q.matmul(&g.own.tr());
    if g.extra.size()[0] == 0 {
        return own / temperature;
    }
    let extra = q.matmul(&g.extra.tr());
    let same = g.rows.unsqueeze(1).eq_tensor(&g.extra_rows.unsqueeze(0));
    let extra = extra.masked_fill(&same, f64::NEG_INFINITY);
    Tensor::cat(&[own, extra], 1) / temperature
}

/// `con`: InfoNCE with the gallery embedding of the same image as the positive.
pub fn contrastive(query: &Tensor, g: &GalleryBatch, temperature: f64) -> Tensor {
    let logits = contrastive_logits(query, g, temperature);
    let b = logits.size()[0];
    let target = Tensor::arange(b, (Kind::Int64, logits.device()));
    logits.cross_entropy_for_logits(&target)
}

/// `supcon`: every candidate with the query's label is a positive; the loss of a query is the mean negative
/// log-probability of its positives (Khosla et al.'s L_out, across models).
pub fn supervised_contrastive(query: &Tensor, g: &GalleryBatch, temperature: f64) -> Tensor {
    let logits = contrastive_logits(query, g, temperature);
    let log_prob = &logits - logits.logsumexp([1i64].as_slice(), true);
    let candidates = Tensor::cat(&[g.labels, g.extra_labels], 0);
    let positive = g
        .labels
        .unsqueeze(1)
        .eq_tensor(&candidates.unsqueeze(0))
        // A masked (own-image) extra has log-probability -inf: not a positive.
        .logical_and(&log_prob.isfinite())
        .to_kind(Kind::Float);
    // -inf * 0 would be NaN: zero the masked entries first.
    let log_prob = log_prob.where_self(&log_prob.isfinite(), &log_prob.zeros_like());
    let per_query = -(log_prob * &positive).sum_dim_intlist(1, false, Kind::Float)
        / positive
            .sum_dim_intlist(1, false, Kind::Float)
            .clamp_min(1.0);
    per_query.mean(Kind::Float)
}

/// `rank`: `KL(p_g || p_q)` where `p_g` and `p_q` are the softmaxes (at `temperature`) of the gallery and query
/// embeddings' similarities to the image's gallery neighbours `[B, K, D]`.
pub fn ranking(query: &Tensor, gallery: &Tensor, neighbours: &Tensor, temperature: f64) -> Tensor {
    let sims = |e: &Tensor| neighbours.matmul(&unit(e).unsqueeze(2)).squeeze_dim(2) / temperature;
    let teacher = sims(gallery).log_softmax(1, Kind::Float);
    let student = sims(query).log_softmax(1, Kind::Float);
    (teacher.exp() * (&teacher - student))
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float)
}

/// The weighted sum of the objective's terms other than `bct` (which the caller adds through the gallery's
/// classifier, as before).
pub fn embedding_terms(cfg: &CompatPreset, query: &Tensor, g: &GalleryBatch) -> Option<Tensor> {
    let mut total: Option<Tensor> = None;
    let mut add = |t: Tensor| {
        total = Some(match total.take() {
            Some(sum) => sum + t,
            None => t,
        })
    };
    for term in cfg.objective.terms() {
        match term {
            Term::Bct => {}
            Term::Reg => add(regression(query, g.own) * cfg.reg_weight),
            Term::Con => add(contrastive(query, g, cfg.temperature) * cfg.con_weight),
            Term::Supcon => add(supervised_contrastive(query, g, cfg.temperature) * cfg.con_weight),
            Term::Rank => {
                let neighbours = g
                    .neighbours
                    .expect("rank needs the gallery's neighbour lists");
                add(ranking(query, g.own, neighbours, cfg.rank_temperature) * cfg.rank_weight)
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(rows: &[&[f32]]) -> Tensor {
        let d = rows[0].len() as i64;
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, d])
    }

    fn v(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    fn empty() -> (Tensor, Tensor, Tensor) {
        (
            Tensor::zeros([0, 2], (Kind::Float, Device::Cpu)),
            Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
            Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        )
    }

    #[test]
    fn objectives_parse_print_and_refuse_nonsense() {
        let o: Objective = "reg+bct".parse().unwrap();
        assert_eq!(o.to_string(), "bct+reg");
        assert!(o.has(Term::Reg) && o.needs_gallery_embeddings());
        assert!(!Objective::bct().needs_gallery_embeddings());
        assert_eq!(
            "bct+foo".parse::<Objective>(),
            Err(ObjectiveError::UnknownTerm("foo".into()))
        );
        assert_eq!("".parse::<Objective>(), Err(ObjectiveError::Empty));
        assert_eq!(
            "con+supcon".parse::<Objective>(),
            Err(ObjectiveError::BothContrastive)
        );
        let json = serde_json::to_string(&CompatPreset::default()).unwrap();
        assert!(json.contains(r#""objective":"bct""#), "{json}");
        let p: CompatPreset = serde_json::from_str(r#"{"objective": "bct+rank"}"#).unwrap();
        assert_eq!(p.objective.to_string(), "bct+rank");
        assert_eq!(p.rank_k, CompatPreset::default().rank_k);
    }

    #[test]
    fn regression_by_hand() {
        // cos 0 (orthogonal) and cos 1 (same direction, other length): mean of 1 and 0.
        let q = t(&[&[1.0, 0.0], &[0.0, 2.0]]);
        let g = t(&[&[0.0, 1.0], &[0.0, 1.0]]);
        assert!((v(&regression(&q, &g)) - 0.5).abs() < 1e-6);
        assert!(v(&regression(&g, &g)).abs() < 1e-6);
    }

    #[test]
    fn contrastive_by_hand() {
        // Two queries, gallery e1 and e2; temperature 1. Query 1 = e1: logits [1, 0], loss ln(1 + e^-1).
        // Query 2 = e1 too (its positive is e2): logits [1, 0], loss ln(1 + e^1).
        let q = t(&[&[1.0, 0.0], &[1.0, 0.0]]);
        let own = t(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let (extra, extra_rows, extra_labels) = empty();
        let rows = Tensor::from_slice(&[10i64, 11]);
        let labels = Tensor::from_slice(&[0i64, 1]);
        let g = GalleryBatch {
            own: &own,
            extra: &extra,
            extra_rows: &extra_rows,
            rows: &rows,
            labels: &labels,
            extra_labels: &extra_labels,
            neighbours: None,
        };
        let want = ((1.0 + (-1f64).exp()).ln() + (1.0 + 1f64.exp()).ln()) / 2.0;
        assert!((v(&contrastive(&q, &g, 1.0)) - want).abs() < 1e-5);

        // An extra negative equal to query 1's own image (row 10) is masked; one of row 12 counts.
        let extra = t(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let extra_rows = Tensor::from_slice(&[10i64, 12]);
        let extra_labels = Tensor::from_slice(&[0i64, 1]);
        let g = GalleryBatch {
            extra: &extra,
            extra_rows: &extra_rows,
            extra_labels: &extra_labels,
            ..g
        };
        // Query 1: logits [1, 0, -inf, 0]: ln(1 + 2e^-1). Query 2: [1, 0, 1, 0], positive 0: ln(2e + 2) - 0.
        let want = ((1.0 + 2.0 * (-1f64).exp()).ln() + (2.0 * 1f64.exp() + 2.0).ln()) / 2.0;
        assert!((v(&contrastive(&q, &g, 1.0)) - want).abs() < 1e-5);

        // Supervised: query 1 (label 0) has positives own[0] (logit 1) and nothing else (the masked extra is
        // not one): ln(1 + 2e^-1). Query 2 (label 1): positives own[1] (0) and extra[1] (0):
        // log-probabilities 0 - ln(2e + 2) each.
        let want = ((1.0 + 2.0 * (-1f64).exp()).ln() + (2.0 * 1f64.exp() + 2.0).ln()) / 2.0;
        assert!((v(&supervised_contrastive(&q, &g, 1.0)) - want).abs() < 1e-5);
    }

    #[test]
    fn ranking_is_zero_when_query_equals_gallery_and_by_hand() {
        let g = t(&[&[1.0, 0.0]]);
        let neighbours = t(&[&[1.0, 0.0], &[0.0, 1.0]]).unsqueeze(0);
        assert!(v(&ranking(&g, &g, &neighbours, 0.5)).abs() < 1e-7);
        // Teacher sims [1, 0], student (q = e2) [0, 1], temperature 1: p = softmax([1, 0]), KL(p || reverse(p)).
        let q = t(&[&[0.0, 1.0]]);
        let p1 = 1f64.exp() / (1f64.exp() + 1.0);
        let p0 = 1.0 - p1;
        let want = p1 * (p1 / p0).ln() + p0 * (p0 / p1).ln();
        assert!((v(&ranking(&q, &g, &neighbours, 1.0)) - want).abs() < 1e-5);
    }

    #[test]
    fn each_term_moves_the_query_towards_its_gallery_embedding() {
        // One query far from its gallery embedding among others; a few gradient steps on each term must raise
        // the cosine to its own gallery embedding.
        let own = t(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0], &[0.0, 0.0, 1.0]]);
        let rows = Tensor::from_slice(&[0i64, 1, 2]);
        let labels = Tensor::from_slice(&[0i64, 1, 2]);
        let (extra, extra_rows, extra_labels) = (
            Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)),
            Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
            Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        );
        let neighbours = Tensor::stack(&[&own, &own, &own], 0);
        let g = GalleryBatch {
            own: &own,
            extra: &extra,
            extra_rows: &extra_rows,
            rows: &rows,
            labels: &labels,
            extra_labels: &extra_labels,
            neighbours: Some(&neighbours),
        };
        for objective in ["reg", "con", "supcon", "rank"] {
            let cfg = CompatPreset {
                objective: objective.parse().unwrap(),
                temperature: 0.5,
                rank_temperature: 0.5,
                ..Default::default()
            };
            let start = t(&[&[0.2, 0.9, 0.3], &[0.8, 0.1, 0.5], &[0.6, 0.7, 0.1]]);
            let mut q = start.copy().set_requires_grad(true);
            let cos_to_own = |q: &Tensor| {
                v(&(unit(q) * &own)
                    .sum_dim_intlist(1, false, Kind::Float)
                    .mean(Kind::Float))
            };
            let before = cos_to_own(&q);
            for _ in 0..20 {
                let loss = embedding_terms(&cfg, &q, &g).unwrap();
                let grad = Tensor::run_backward(&[loss], &[&q], false, false);
                tch::no_grad(|| {
                    let _ = q.f_sub_(&(&grad[0] * 0.5)).unwrap();
                });
            }
            let after = cos_to_own(&q);
            assert!(after > before + 0.1, "{objective}: {before} -> {after}");
        }
    }
}
