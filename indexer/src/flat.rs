//! Exact (flat) inner-product search over L2-normalised vectors: the ground truth for HNSW recall checks and
//! the search path for tiny galleries.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Vectors stored row-major, all of dimension `dim`.
#[derive(Debug, Clone, Default)]
pub struct FlatIndex {
    dim: usize,
    data: Vec<f32>,
}

/// One search hit: the row of the stored vector and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

impl FlatIndex {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
        }
    }

    /// Wraps row-major data; `None` when its length is not a multiple of `dim` (or `dim` is zero).
    pub fn from_rows(dim: usize, data: Vec<f32>) -> Option<Self> {
        (dim > 0 && data.len().is_multiple_of(dim)).then_some(Self { dim, data })
    }

    /// All vectors, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends one vector; panics only on a programming error (wrong dimension).
    pub fn push(&mut self, v: &[f32]) {
        assert_eq!(v.len(), self.dim, "vector dimension");
        self.data.extend_from_slice(v);
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    /// The `k` rows with the highest inner product, best first; ties broken by lower row. Keeps a heap of `k`
    /// hits while scanning, so the scan allocates O(k), not a score per stored vector.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        self.search_where(query, k, |_| true)
    }

    /// [`Self::search`] over the rows `keep` accepts.
    pub fn search_where(&self, query: &[f32], k: usize, keep: impl Fn(usize) -> bool) -> Vec<Hit> {
        let k = k.min(self.len());
        if k == 0 {
            return Vec::new();
        }
        // A max-heap under "worse first" order: its top is the worst of the best k so far.
        let mut best: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
        for (row, v) in self.data.chunks_exact(self.dim).enumerate() {
            if !keep(row) {
                continue;
            }
            let hit = Hit {
                row,
                score: crate::vector::dot(v, query),
            };
            if best.len() < k {
                best.push(Worst(hit));
            } else if best.peek().is_some_and(|w| by_rank(&hit, &w.0).is_lt()) {
                best.pop();
                best.push(Worst(hit));
            }
        }
        let mut hits: Vec<Hit> = best.into_iter().map(|w| w.0).collect();
        hits.sort_by(by_rank);
        hits
    }
}

/// Best first: higher score, then lower row.
fn by_rank(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.row.cmp(&b.row))
}

/// A hit ordered so that the worst ranks greatest, for a bounded max-heap of the best.
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        by_rank(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_k_most_similar_in_order() {
        let mut idx = FlatIndex::new(2);
        for v in [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]] {
            idx.push(&v);
        }
        let hits = idx.search(&[0.8, 0.6], 3);
        assert_eq!(
            hits.iter().map(|h| h.row).collect::<Vec<_>>(),
            vec![2, 0, 1]
        );
        assert!((hits[0].score - 0.96).abs() < 1e-6);
        assert_eq!(idx.search(&[1.0, 0.0], 10).len(), 4);
        assert!(idx.search(&[1.0, 0.0], 0).is_empty());
    }

    #[test]
    fn the_bounded_heap_agrees_with_a_full_sort_ties_included() {
        let mut idx = FlatIndex::new(3);
        let mut state = 7u64;
        for _ in 0..500 {
            let mut v = [0.0f32; 3];
            for x in &mut v {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Few distinct values, so many rows tie.
                *x = ((state >> 33) % 5) as f32 - 2.0;
            }
            idx.push(&v);
        }
        let q = [0.3, -0.5, 0.8];
        let mut all: Vec<Hit> = (0..idx.len())
            .map(|row| Hit {
                row,
                score: idx.vector(row).iter().zip(&q).map(|(a, b)| a * b).sum(),
            })
            .collect();
        all.sort_by(by_rank);
        for k in [1, 7, 50, 499, 500, 900] {
            assert_eq!(idx.search(&q, k), all[..k.min(500)].to_vec(), "k = {k}");
        }
    }
}
