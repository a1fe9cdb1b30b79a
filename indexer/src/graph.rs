//! The HNSW graph over the rows of a [`FlatIndex`]. Rows are the graph's data ids, so the graph needs nothing
//! else from the index, and it can always be rebuilt from the stored vectors.
//!
//! Distance: `DistL2` on unit vectors. It orders neighbours exactly as cosine does (|a-b|^2 = 2 - 2 cos) and has
//! no assertion that rounding can trip on (near-)duplicates, unlike `DistDot`. Reported scores are recomputed as
//! inner products by the caller, so they equal the exact path's.

use std::ops::Range;

use hnsw_rs::prelude::{DistL2, Hnsw};

use crate::error::IndexError;
use crate::flat::FlatIndex;
use crate::params::{HnswParams, MAX_LAYERS};

pub struct Graph {
    hnsw: Hnsw<'static, f32, DistL2>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("points", &self.hnsw.get_nb_point())
            .field("m", &self.hnsw.get_max_nb_connection())
            .field("ef_construction", &self.hnsw.get_ef_construction())
            .finish()
    }
}

impl Graph {
    /// An empty graph sized for about `capacity` points.
    pub fn new(params: &HnswParams, capacity: usize) -> Result<Self, IndexError> {
        params.validate()?;
        let hnsw = Hnsw::new(
            params.m,
            capacity.max(1),
            MAX_LAYERS,
            params.ef_construction,
            DistL2,
        );
        Ok(Self { hnsw })
    }

    /// A graph over every row of `vectors`, inserted in parallel.
    pub fn build(params: &HnswParams, vectors: &FlatIndex) -> Result<Self, IndexError> {
        let g = Self::new(params, vectors.len())?;
        g.insert(vectors, 0..vectors.len());
        Ok(g)
    }

    /// Inserts `rows` of `vectors` in parallel (rayon's global pool). The vectors must be unit length and finite.
    pub fn insert(&self, vectors: &FlatIndex, rows: Range<usize>) {
        let items: Vec<(&[f32], usize)> = rows.map(|r| (vectors.vector(r), r)).collect();
        self.hnsw.parallel_insert_slice(&items);
    }

    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of up to `k` approximate nearest neighbours, nearest first. `ef` is raised to `k` when smaller.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<usize> {
        if k == 0 {
            return Vec::new();
        }
        self.hnsw
            .search(query, k, ef.max(k))
            .into_iter()
            .map(|n| n.d_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        crate::vector::normalised(v, v.len()).unwrap()
    }

    #[test]
    fn identical_and_near_identical_vectors_do_not_panic() {
        // DistDot asserts on these; DistL2 must not.
        let mut flat = FlatIndex::new(4);
        let base = unit(&[0.3, -0.2, 0.9, 0.1]);
        for i in 0..300 {
            let mut v = base.clone();
            v[i % 4] += (i / 4) as f32 * 1e-7;
            flat.push(&unit(&v));
        }
        for _ in 0..50 {
            flat.push(&base);
        }
        let g = Graph::build(&HnswParams::default(), &flat).unwrap();
        assert_eq!(g.len(), 350);
        let hits = g.search(&base, 10, 32);
        assert_eq!(hits.len(), 10);
        for r in hits {
            assert!(crate::vector::dot(flat.vector(r), &base) > 0.999_999);
        }
    }

    #[test]
    fn finds_the_exact_neighbour_on_a_small_set() {
        let mut flat = FlatIndex::new(3);
        for i in 0..200 {
            let t = i as f32 * 0.05;
            flat.push(&unit(&[t.cos(), t.sin(), 0.2 * (3.0 * t).sin()]));
        }
        let g = Graph::build(&HnswParams::default(), &flat).unwrap();
        for row in [0, 57, 199] {
            assert_eq!(g.search(flat.vector(row), 1, 64), vec![row]);
        }
        assert!(g.search(flat.vector(0), 0, 16).is_empty());
    }
}
