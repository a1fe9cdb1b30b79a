//! Retrieval metrics on plain f32 matrices (rows are L2-normalised embeddings, similarity = inner product), so
//! the trainer, the indexer, benchmarks and anyone else share one implementation.
//!
//! - top-k accuracy: share of queries with at least one same-label gallery item among the k nearest;
//! - mAP@R (Musgrave et al. 2020): for a query with R same-label gallery items, the mean over the first R results
//!   of precision@i at each relevant position i, divided by R;
//! - TAR@FAR, 1:1 verification over all (query, gallery) pairs: the threshold where the share of impostor pairs
//!   above it equals FAR, and the share of genuine pairs above that threshold. Scores are binned over [-1, 1] in
//!   2^20 bins (resolution 2e-6), exact up to ties inside one bin.
//!
//! Leave-one-out: when queries and gallery are the same images (possibly embedded by different models), query `i`
//! never sees gallery item `i`, neither in rankings nor as a pair.
//!
//! Similarities are computed in blocks of queries against the whole gallery (a matrix product per block), blocks
//! in parallel with rayon: 10,000 x 10,000 at dim 128 takes about a second on two cores.

use std::collections::BTreeMap;

use ndarray::{linalg::general_mat_mul, Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Embeddings: `n` rows of `dim` floats and one label each.
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    pub vectors: &'a [f32],
    pub labels: &'a [u32],
    pub dim: usize,
}

impl<'a> Labelled<'a> {
    pub fn new(vectors: &'a [f32], labels: &'a [u32], dim: usize) -> Self {
        assert_eq!(vectors.len(), labels.len() * dim, "vectors vs labels x dim");
        Self {
            vectors,
            labels,
            dim,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn view(&self) -> ArrayView2<'a, f32> {
        ArrayView2::from_shape((self.len(), self.dim), self.vectors).expect("shape checked in new")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetrievalMetrics {
    /// k -> top-k accuracy (fraction).
    pub top_k: BTreeMap<usize, f64>,
    pub map_at_r: f64,
    /// FAR -> TAR (fractions).
    pub tar_at_far: Vec<(f64, f64)>,
    pub queries: usize,
    pub gallery: usize,
    pub hubness: Hubness,
}

/// Items returned in each query's top-k for hubness ([`Hubness`]).
pub const HUBNESS_K: usize = 10;

/// How evenly a search spreads its answers over the gallery: `N_k(x)` counts the queries whose top-k holds
/// gallery item `x` (k = [`HUBNESS_K`]). A hub is an item in far more top-k lists than the mean `k * queries /
/// gallery`; a query model that lands its queries on a few hubs has a right-skewed `N_k`
/// (Radovanović et al., JMLR 2010).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Hubness {
    pub k: usize,
    /// Skewness of `N_k` over the gallery (0 for a symmetric spread; large and positive with hubs).
    pub skewness: f64,
    /// The largest `N_k`: the queries answered by the biggest hub.
    pub max: u32,
    /// The share of gallery items in no query's top-k.
    pub never_returned: f64,
}

impl Hubness {
    /// From the occurrence counts `N_k` of every gallery item.
    pub fn from_counts(k: usize, counts: &[u32]) -> Self {
        let n = counts.len().max(1) as f64;
        let mean = counts.iter().map(|&c| c as f64).sum::<f64>() / n;
        let moment = |p: i32| {
            counts
                .iter()
                .map(|&c| (c as f64 - mean).powi(p))
                .sum::<f64>()
                / n
        };
        let sd = moment(2).sqrt();
        Self {
            k,
            skewness: if sd > 0.0 {
                moment(3) / sd.powi(3)
            } else {
                0.0
            },
            max: counts.iter().copied().max().unwrap_or(0),
            never_returned: counts.iter().filter(|&&c| c == 0).count() as f64 / n,
        }
    }
}

impl RetrievalMetrics {
    pub fn top(&self, k: usize) -> f64 {
        self.top_k.get(&k).copied().unwrap_or(f64::NAN)
    }

    pub fn tar(&self, far: f64) -> f64 {
        self.tar_at_far
            .iter()
            .find(|(f, _)| (f - far).abs() < far * 1e-9)
            .map_or(f64::NAN, |(_, t)| *t)
    }
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub ks: Vec<usize>,
    pub fars: Vec<f64>,
    pub leave_one_out: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            ks: vec![1, 5, 10],
            fars: vec![1e-2, 1e-3],
            leave_one_out: false,
        }
    }
}

const BINS: usize = 1 << 20;
const BLOCK: usize = 256;

fn bin(score: f32) -> usize {
    let x = ((score.clamp(-1.0, 1.0) + 1.0) * 0.5 * (BINS - 1) as f32).round();
    x as usize
}

/// Per-block partial results, summed across blocks.
struct Partial {
    hits: Vec<u64>,
    ap_sum: f64,
    genuine: Vec<u32>,
    impostor: Vec<u32>,
    /// `N_k` of each gallery item (hubness).
    occurrences: Vec<u32>,
}

impl Partial {
    fn new(ks: usize, with_pairs: bool, gallery: usize) -> Self {
        let n = if with_pairs { BINS } else { 0 };
        Self {
            hits: vec![0; ks],
            ap_sum: 0.0,
            genuine: vec![0; n],
            impostor: vec![0; n],
            occurrences: vec![0; gallery],
        }
    }

    fn merge(mut self, other: Self) -> Self {
        self.hits
            .iter_mut()
            .zip(&other.hits)
            .for_each(|(a, b)| *a += b);
        self.ap_sum += other.ap_sum;
        self.genuine
            .iter_mut()
            .zip(&other.genuine)
            .for_each(|(a, b)| *a += b);
        self.impostor
            .iter_mut()
            .zip(&other.impostor)
            .for_each(|(a, b)| *a += b);
        self.occurrences
            .iter_mut()
            .zip(&other.occurrences)
            .for_each(|(a, b)| *a += b);
        self
    }
}

/// Computes the metrics of `queries` searched against `gallery`.
pub fn evaluate(queries: Labelled, gallery: Labelled, config: &MetricsConfig) -> RetrievalMetrics {
    assert_eq!(queries.dim, gallery.dim, "embedding dims differ");
    if config.leave_one_out {
        assert_eq!(
            queries.len(),
            gallery.len(),
            "leave-one-out needs the same images on both sides"
        );
    }
    let mut per_label: BTreeMap<u32, usize> = BTreeMap::new();
    for &l in gallery.labels {
        *per_label.entry(l).or_default() += 1;
    }
    let ks = &config.ks;
    let kmax = ks.iter().copied().max().unwrap_or(0);
    let with_pairs = !config.fars.is_empty();
    let g = gallery.view();
    let q = queries.view();
    let n_blocks = queries.len().div_ceil(BLOCK);
    let total = (0..n_blocks)
        .into_par_iter()
        .fold(
            || Partial::new(ks.len(), with_pairs, gallery.len()),
            |mut acc, b| {
                let rows = b * BLOCK..((b + 1) * BLOCK).min(queries.len());
                let qb = q.slice(ndarray::s![rows.clone(), ..]);
                let mut sims = Array2::<f32>::zeros((rows.len(), gallery.len()));
                general_mat_mul(1.0, &qb, &g.t(), 0.0, &mut sims);
                let mut order: Vec<u32> = Vec::with_capacity(gallery.len());
                for (r, qi) in rows.enumerate() {
                    let row = sims.row(r);
                    let row = row.as_slice().expect("standard layout");
                    let label = queries.labels[qi];
                    let skip = config.leave_one_out.then_some(qi);
                    let relevant =
                        per_label.get(&label).copied().unwrap_or(0) - usize::from(skip.is_some());
                    // Rank only as far as needed: max(k, R) best items.
                    let depth = kmax
                        .max(HUBNESS_K)
                        .max(relevant)
                        .min(gallery.len() - usize::from(skip.is_some()));
                    order.clear();
                    order.extend((0..gallery.len() as u32).filter(|&j| Some(j as usize) != skip));
                    let by_score = |a: &u32, b: &u32| {
                        row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b))
                    };
                    if depth < order.len() && depth > 0 {
                        order.select_nth_unstable_by(depth - 1, by_score);
                    }
                    order.truncate(depth);
                    order.sort_unstable_by(by_score);
                    for &j in order.iter().take(HUBNESS_K) {
                        acc.occurrences[j as usize] += 1;
                    }
                    let is_rel = |j: &u32| gallery.labels[*j as usize] == label;
                    for (slot, &k) in ks.iter().enumerate() {
                        if order.iter().take(k).any(is_rel) {
                            acc.hits[slot] += 1;
                        }
                    }
                    if relevant > 0 {
                        let mut found = 0usize;
                        let mut sum = 0.0f64;
                        for (i, j) in order.iter().take(relevant).enumerate() {
                            if is_rel(j) {
                                found += 1;
                                sum += found as f64 / (i + 1) as f64;
                            }
                        }
                        acc.ap_sum += sum / relevant as f64;
                    }
                    if with_pairs {
                        for (j, &s) in row.iter().enumerate() {
                            if Some(j) == skip {
                                continue;
                            }
                            if gallery.labels[j] == label {
                                acc.genuine[bin(s)] += 1;
                            } else {
                                acc.impostor[bin(s)] += 1;
                            }
                        }
                    }
                }
                acc
            },
        )
        .reduce(
            || Partial::new(ks.len(), with_pairs, gallery.len()),
            Partial::merge,
        );

    let nq = queries.len().max(1) as f64;
    let tar_at_far = config
        .fars
        .iter()
        .map(|&far| (far, tar_at(&total.genuine, &total.impostor, far)))
        .collect();
    RetrievalMetrics {
        top_k: ks
            .iter()
            .zip(&total.hits)
            .map(|(&k, &h)| (k, h as f64 / nq))
            .collect(),
        map_at_r: total.ap_sum / nq,
        tar_at_far,
        queries: queries.len(),
        gallery: gallery.len(),
        hubness: Hubness::from_counts(HUBNESS_K, &total.occurrences),
    }
}

/// TAR at the lowest threshold whose false-accept rate does not exceed `far`.
fn tar_at(genuine: &[u32], impostor: &[u32], far: f64) -> f64 {
    let n_imp: u64 = impostor.iter().map(|&c| c as u64).sum();
    let n_gen: u64 = genuine.iter().map(|&c| c as u64).sum();
    if n_gen == 0 {
        return f64::NAN;
    }
    let allowed = (far * n_imp as f64).floor() as u64;
    let (mut false_accepts, mut true_accepts) = (0u64, 0u64);
    for b in (0..impostor.len()).rev() {
        if false_accepts + impostor[b] as u64 > allowed {
            break;
        }
        false_accepts += impostor[b] as u64;
        true_accepts += genuine[b] as u64;
    }
    true_accepts as f64 / n_gen as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalise(v: &mut [f32], dim: usize) {
        for row in v.chunks_exact_mut(dim) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
    }

    /// Four gallery points on the unit circle and two queries, ranked by hand.
    #[test]
    fn hand_computed_case() {
        // Gallery on the unit circle at angles 0, 30, 60, 90 degrees; labels 0, 1, 0, 1.
        let ang = [0.0f32, 30.0, 60.0, 90.0];
        let gallery: Vec<f32> = ang
            .iter()
            .flat_map(|a| [a.to_radians().cos(), a.to_radians().sin()])
            .collect();
        let g_labels = [0u32, 1, 0, 1];
        // One query at 5 degrees, label 0: ranking g0 (0), g1 (1), g2 (0), g3 (1).
        // One query at 85 degrees, label 0: ranking g3 (1), g2 (0), g1 (1), g0 (0).
        let queries: Vec<f32> = [5.0f32, 85.0]
            .iter()
            .flat_map(|a| [a.to_radians().cos(), a.to_radians().sin()])
            .collect();
        let q_labels = [0u32, 0];
        let m = evaluate(
            Labelled::new(&queries, &q_labels, 2),
            Labelled::new(&gallery, &g_labels, 2),
            &MetricsConfig {
                ks: vec![1, 2],
                fars: vec![],
                leave_one_out: false,
            },
        );
        assert_eq!(m.top(1), 0.5);
        assert_eq!(m.top(2), 1.0);
        // R = 2. q0: relevant at ranks 1 and 3 -> only rank 1 within R: (1/1) / 2 = 0.5.
        // q1: relevant at ranks 2 and 4 -> rank 2 within R: (1/2) / 2 = 0.25.
        assert!((m.map_at_r - 0.375).abs() < 1e-12, "{}", m.map_at_r);
    }

    #[test]
    fn leave_one_out_never_retrieves_the_query_itself() {
        // Identical vectors on both sides: without leave-one-out every query finds itself first.
        let mut v = vec![1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0];
        normalise(&mut v, 2);
        let labels = [0u32, 1, 1];
        let e = Labelled::new(&v, &labels, 2);
        let cfg = |loo| MetricsConfig {
            ks: vec![1],
            fars: vec![],
            leave_one_out: loo,
        };
        assert_eq!(evaluate(e, e, &cfg(false)).top(1), 1.0);
        // With leave-one-out: q0 (label 0) has no other label-0 item -> miss; q1 nearest other is q0 (label 0)
        // -> miss; q2 nearest other is q1 (label 1) -> hit.
        let m = evaluate(e, e, &cfg(true));
        assert!((m.top(1) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn tar_at_far_on_hand_made_pairs() {
        // 1-D "embeddings" of +1/-1 give scores +1/-1 only; use 2-D to get graded scores.
        // Queries: one, label 0, at angle 0. Gallery: 10 impostors at 90 deg (score 0) except one at 10 deg,
        // and 4 genuine at 20, 30, 40, 100 deg.
        let q = [1.0f32, 0.0];
        let mut g = Vec::new();
        let mut labels = Vec::new();
        for a in [
            10.0f32, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0,
        ] {
            g.extend([a.to_radians().cos(), a.to_radians().sin()]);
            labels.push(1u32);
        }
        for a in [20.0f32, 30.0, 40.0, 100.0] {
            g.extend([a.to_radians().cos(), a.to_radians().sin()]);
            labels.push(0);
        }
        let m = evaluate(
            Labelled::new(&q, &[0], 2),
            Labelled::new(&g, &labels, 2),
            &MetricsConfig {
                ks: vec![1],
                fars: vec![0.05, 0.1],
                leave_one_out: false,
            },
        );
        // FAR 0.05 of 10 impostors allows 0 false accepts: threshold above cos(10 deg): no genuine pair passes.
        assert_eq!(m.tar(0.05), 0.0);
        // FAR 0.1 allows the impostor at 10 deg: genuine pairs at 20, 30, 40 deg also pass; 100 deg does not.
        assert_eq!(m.tar(0.1), 0.75);
        assert_eq!(m.top(1), 0.0);
    }

    #[test]
    fn hubness_by_hand() {
        // N_k = [4, 0, 0, 0]: mean 1, deviations 3, -1, -1, -1; m2 = 3, m3 = (27 - 3) / 4 = 6.
        let h = Hubness::from_counts(10, &[4, 0, 0, 0]);
        assert!((h.skewness - 6.0 / 3f64.powf(1.5)).abs() < 1e-12, "{h:?}");
        assert_eq!((h.max, h.never_returned), (4, 0.75));
        // An even spread has no hubs.
        let even = Hubness::from_counts(10, &[2, 2, 2]);
        assert_eq!(
            (even.skewness, even.max, even.never_returned),
            (0.0, 2, 0.0)
        );
    }

    #[test]
    fn every_top_10_is_counted() {
        // 12 gallery points every 30 degrees; 5 queries between 1 and 9 degrees. Each query's top-10 leaves out
        // the two points farthest from it, at 180 and 210 degrees, and holds the other ten.
        let gallery: Vec<f32> = (0..12)
            .flat_map(|i| {
                let a = (i as f32 * 30.0).to_radians();
                [a.cos(), a.sin()]
            })
            .collect();
        let queries: Vec<f32> = (0..5)
            .flat_map(|i| {
                let a = (i as f32 * 2.0 + 1.0).to_radians();
                [a.cos(), a.sin()]
            })
            .collect();
        let m = evaluate(
            Labelled::new(&queries, &[0; 5], 2),
            Labelled::new(&gallery, &[0; 12], 2),
            &MetricsConfig::default(),
        );
        assert_eq!(m.hubness.max, 5);
        assert!(
            (m.hubness.never_returned - 2.0 / 12.0).abs() < 1e-12,
            "{:?}",
            m.hubness
        );
        // Ten items at 5 and two at 0: skewed to the left.
        assert!(m.hubness.skewness < 0.0, "{:?}", m.hubness);
    }
}
