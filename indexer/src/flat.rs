//! Exact (flat) inner-product search over L2-normalised vectors: the ground truth for HNSW recall checks and
//! the search path for tiny galleries.

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

    /// The `k` rows with the highest inner product, best first; ties broken by lower row.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .data
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(row, v)| Hit {
                row,
                score: v.iter().zip(query).map(|(a, b)| a * b).sum(),
            })
            .collect();
        let k = k.min(hits.len());
        let by_score = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row));
        if k < hits.len() {
            hits.select_nth_unstable_by(k, by_score);
            hits.truncate(k);
        }
        hits.sort_by(by_score);
        hits
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
    }
}
