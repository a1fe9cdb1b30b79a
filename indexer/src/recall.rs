//! Recall of the HNSW path against exact search, the check behind `hetvis-index verify` and the benchmark.
//!
//! A returned neighbour counts as correct when its score reaches the k-th exact score (minus rounding), so
//! exact duplicates in the gallery (Fashion-MNIST has some) cannot make a correct answer look wrong.

use rayon::prelude::*;

use crate::index::{Index, SearchMode};

/// Scores equal to within this are ties.
const TIE_TOLERANCE: f32 = 1e-6;

/// `n` rows spread evenly over `0..len` (all of them when `n >= len`).
pub fn sample_rows(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|i| i * len / n).collect()
}

/// The exact answer for each query: how many neighbours exist and the k-th best score.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    pub k: usize,
    kth_scores: Vec<f32>,
    expected: Vec<usize>,
}

pub fn ground_truth(index: &Index, queries: &[Vec<f32>], k: usize) -> GroundTruth {
    let answers: Vec<Vec<f32>> = queries
        .par_iter()
        .map(|q| {
            index
                .search_rows(q, k, None, SearchMode::Exact)
                .unwrap_or_default()
                .iter()
                .map(|h| h.score)
                .collect()
        })
        .collect();
    GroundTruth::from_exact_scores(&answers, k)
}

impl GroundTruth {
    /// From each query's exact top-`k` scores, best first (from any exact search: a flat scan of vectors read
    /// from another engine, for instance).
    pub fn from_exact_scores(answers: &[Vec<f32>], k: usize) -> Self {
        Self {
            k,
            expected: answers.iter().map(Vec::len).collect(),
            kth_scores: answers
                .iter()
                .map(|a| a.last().copied().unwrap_or(f32::INFINITY))
                .collect(),
        }
    }

    /// Recall of query `i` from the scores of what a search returned: a hit counts when it reaches the k-th exact
    /// score, less `tolerance` (ties; an engine that sums in another order rounds differently).
    pub fn recall_of(&self, i: usize, returned: &[f32], tolerance: f32) -> f64 {
        let expected = self.expected[i];
        if expected == 0 {
            return 1.0;
        }
        let good = returned
            .iter()
            .filter(|&&s| s >= self.kth_scores[i] - tolerance)
            .count();
        good.min(expected) as f64 / expected as f64
    }
}

/// Mean recall@k of HNSW search at `ef` over `queries` (in parallel).
pub fn recall_at_k(index: &Index, queries: &[Vec<f32>], truth: &GroundTruth, ef: usize) -> f64 {
    let per_query: Vec<f64> = queries
        .par_iter()
        .enumerate()
        .map(|(i, q)| {
            let scores: Vec<f32> = index
                .search_rows(q, truth.k, Some(ef), SearchMode::Hnsw)
                .unwrap_or_default()
                .iter()
                .map(|h| h.score)
                .collect();
            truth.recall_of(i, &scores, TIE_TOLERANCE)
        })
        .collect();
    per_query.iter().sum::<f64>() / per_query.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GalleryModel, HnswParams, Record};

    #[test]
    fn tied_duplicates_count_as_correct() {
        let gallery = GalleryModel {
            name: "g".into(),
            compat_id: "c".into(),
            sha256: String::new(),
        };
        let mut idx = Index::new(gallery, 2, HnswParams::default()).unwrap();
        // 30 copies of one direction, plus a spread of others. Exact search breaks the ties by row (dup0..dup9);
        // HNSW may return any 10 of the 30, which is just as correct.
        let mut items: Vec<(Record, Vec<f32>)> = (0..30)
            .map(|i| (Record::new(format!("dup{i}")), vec![1.0, 0.0]))
            .collect();
        items.extend((1..200).map(|i| {
            let t = i as f32 * 0.03;
            (Record::new(format!("p{i}")), vec![t.cos(), t.sin()])
        }));
        idx.add(items).unwrap();
        let queries = vec![vec![1.0, 0.0]; 5];
        let truth = ground_truth(&idx, &queries, 10);
        assert_eq!(recall_at_k(&idx, &queries, &truth, 229), 1.0);
        assert_eq!(sample_rows(10, 4), vec![0, 2, 5, 7]);
        assert_eq!(sample_rows(3, 10), vec![0, 1, 2]);
    }

    #[test]
    fn recall_from_scores_counts_hits_reaching_the_kth_exact_score() {
        let truth = GroundTruth::from_exact_scores(&[vec![0.9, 0.8, 0.7], vec![]], 3);
        assert_eq!(truth.recall_of(0, &[0.9, 0.8, 0.7], 0.0), 1.0);
        assert!((truth.recall_of(0, &[0.9, 0.8, 0.5], 0.0) - 2.0 / 3.0).abs() < 1e-12);
        // Within the tolerance counts (another engine's rounding), beyond it does not.
        assert_eq!(truth.recall_of(0, &[0.9, 0.8, 0.69999], 1e-4), 1.0);
        assert!(truth.recall_of(0, &[0.9, 0.8, 0.69], 1e-4) < 1.0);
        // A query with no exact neighbours is trivially answered.
        assert_eq!(truth.recall_of(1, &[], 0.0), 1.0);
    }
}
