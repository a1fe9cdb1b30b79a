//! The HNSW graph over the rows of a [`FlatIndex`]. Rows are the graph's data ids, so the graph needs nothing
//! else from the index, and it can always be rebuilt from the stored vectors.
//!
//! Distance: `DistL2` on unit vectors. It orders neighbours exactly as cosine does (|a-b|^2 = 2 - 2 cos) and has
//! no assertion that rounding can trip on (near-)duplicates, unlike `DistDot`. Reported scores are recomputed as
//! inner products by the caller, so they equal the exact path's.
//!
//! Stored graphs: [`Graph::dump`] writes `hnsw_rs`'s two files into a fresh directory (the index's atomic-write
//! protocol provides one, so `hnsw_rs`'s in-place truncation never touches a live file), and [`Graph::load`]
//! reads them back. A reloaded `hnsw_rs` graph borrows its loader; both live in one [`self_cell`], so a loaded
//! graph is as free to move and share as a built one.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use hnsw_rs::api::AnnT;
use hnsw_rs::filter::FilterT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{DistL2, Hnsw};

use crate::error::IndexError;
use crate::flat::FlatIndex;
use crate::params::{HnswParams, MAX_LAYERS};

/// Base name of the stored graph's files: `graph.hnsw.graph` (the links) and `graph.hnsw.data` (the points).
pub const GRAPH_BASENAME: &str = "graph";
pub const GRAPH_FILES: [&str; 2] = ["graph.hnsw.graph", "graph.hnsw.data"];

type HnswL2<'a> = Hnsw<'a, f32, DistL2>;

self_cell::self_cell!(
    /// A graph and, when it was loaded from files, the loader it borrows from.
    struct Cell {
        owner: Option<HnswIo>,
        #[not_covariant]
        dependent: HnswL2,
    }
);

pub struct Graph {
    cell: Cell,
}

/// `hnsw_rs`'s search filter: a row is a candidate unless it was removed.
struct Live<'a>(&'a BTreeSet<usize>);

impl FilterT for Live<'_> {
    fn hnsw_filter(&self, id: &usize) -> bool {
        !self.0.contains(id)
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cell.with_dependent(|_, h| {
            f.debug_struct("Graph")
                .field("points", &h.get_nb_point())
                .field("m", &h.get_max_nb_connection())
                .field("ef_construction", &h.get_ef_construction())
                .finish()
        })
    }
}

impl Graph {
    /// An empty graph sized for about `capacity` points.
    pub fn new(params: &HnswParams, capacity: usize) -> Result<Self, IndexError> {
        params.validate()?;
        let (m, ef) = (params.m, params.ef_construction);
        let cell = Cell::new(None, |_| {
            Hnsw::new(m, capacity.max(1), MAX_LAYERS, ef, DistL2)
        });
        Ok(Self { cell })
    }

    /// A graph over every row of `vectors`, inserted in parallel.
    pub fn build(params: &HnswParams, vectors: &FlatIndex) -> Result<Self, IndexError> {
        let g = Self::new(params, vectors.len())?;
        g.insert(vectors, 0..vectors.len());
        Ok(g)
    }

    /// [`Graph::load`], refusing a graph that does not hold exactly `rows` points.
    pub fn load_covering(dir: &Path, rows: usize) -> Result<Self, IndexError> {
        let graph = Self::load(dir)?;
        if graph.len() != rows {
            return Err(IndexError::corrupt(
                dir.join(GRAPH_FILES[0]),
                format!(
                    "the graph holds {} points for {rows} stored vectors",
                    graph.len()
                ),
            ));
        }
        Ok(graph)
    }

    /// Reads a graph written by [`Graph::dump`] into `dir`. The caller has checked the files' checksums;
    /// `hnsw_rs` asserts on malformed files, so a panic while reading is caught and reported as corruption.
    pub fn load(dir: &Path) -> Result<Self, IndexError> {
        let corrupt = |why: String| IndexError::corrupt(dir.join(GRAPH_FILES[0]), why);
        let loaded = std::panic::catch_unwind(|| {
            Cell::try_new(Some(HnswIo::new(dir, GRAPH_BASENAME)), |io| {
                // Built with `Some`, so the loader is there.
                let io = io.as_ref().ok_or_else(|| anyhow::anyhow!("no loader"))?;
                io.load_hnsw_with_dist::<f32, DistL2>(DistL2)
            })
        });
        match loaded {
            Ok(Ok(cell)) => Ok(Self { cell }),
            Ok(Err(e)) => Err(corrupt(format!("cannot read the stored graph: {e:#}"))),
            Err(panic) => Err(corrupt(format!(
                "cannot read the stored graph: {}",
                crate::panic_message(panic.as_ref())
            ))),
        }
    }

    /// Writes the graph's files ([`GRAPH_FILES`]) into `dir`, a fresh directory being filled for an index.
    pub fn dump(&self, dir: &Path) -> Result<(), IndexError> {
        let written = self
            .cell
            .with_dependent(|_, h| h.file_dump(dir, GRAPH_BASENAME))
            .map_err(|e| IndexError::io(dir)(std::io::Error::other(format!("{e:#}"))))?;
        // A graph that was itself loaded dumps under a randomised name; give the files their fixed names.
        if written != GRAPH_BASENAME {
            for ext in ["hnsw.graph", "hnsw.data"] {
                let from = dir.join(format!("{written}.{ext}"));
                let to = dir.join(format!("{GRAPH_BASENAME}.{ext}"));
                std::fs::rename(&from, &to).map_err(IndexError::io(&from))?;
            }
        }
        Ok(())
    }

    /// Inserts `rows` of `vectors` in parallel (rayon's global pool). The vectors must be unit length and finite.
    pub fn insert(&self, vectors: &FlatIndex, rows: Range<usize>) {
        let items: Vec<(&[f32], usize)> = rows.map(|r| (vectors.vector(r), r)).collect();
        self.cell
            .with_dependent(|_, h| h.parallel_insert_slice(&items));
    }

    pub fn len(&self) -> usize {
        self.cell.with_dependent(|_, h| h.get_nb_point())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of up to `k` approximate nearest neighbours, nearest first. `ef` is raised to `k` when smaller.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<usize> {
        self.search_excluding(query, k, ef, &BTreeSet::new())
    }

    /// [`Self::search`] that never returns the rows in `removed` (removed items stay in the graph, as
    /// waypoints, until the index is compacted).
    pub fn search_excluding(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        removed: &BTreeSet<usize>,
    ) -> Vec<usize> {
        if k == 0 {
            return Vec::new();
        }
        let filter = Live(removed);
        self.cell.with_dependent(|_, h| {
            let found = if removed.is_empty() {
                h.search(query, k, ef.max(k))
            } else {
                h.search_filter(query, k, ef.max(k), Some(&filter))
            };
            found.into_iter().map(|n| n.d_id).collect()
        })
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

    #[test]
    fn a_dumped_graph_loads_and_answers_as_before_and_grows() {
        let mut flat = FlatIndex::new(8);
        for i in 0..3000 {
            let t = i as f32 * 0.013;
            let v: Vec<f32> = (0..8)
                .map(|d| (t * (d + 1) as f32).sin() + 0.1 * d as f32)
                .collect();
            flat.push(&unit(&v));
        }
        let built = Graph::build(&HnswParams::default(), &flat.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        built.dump(dir.path()).unwrap();
        for f in GRAPH_FILES {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let loaded = Graph::load(dir.path()).unwrap();
        assert_eq!(loaded.len(), 3000);
        for row in (0..3000).step_by(97) {
            assert_eq!(
                loaded.search(flat.vector(row), 10, 64),
                built.search(flat.vector(row), 10, 64)
            );
        }
        // A loaded graph takes inserts, and dumps again under the fixed names.
        // A point on the data's own curve: a far outlier may be unreachable in any HNSW graph, loaded or not.
        let t = 1499.5 * 0.013;
        let v: Vec<f32> = (0..8)
            .map(|d| (t * (d + 1) as f32).sin() + 0.1 * d as f32)
            .collect();
        flat.push(&unit(&v));
        loaded.insert(&flat, 3000..3001);
        assert_eq!(loaded.search(flat.vector(3000), 1, 64), vec![3000]);
        let again = tempfile::tempdir().unwrap();
        loaded.dump(again.path()).unwrap();
        assert_eq!(Graph::load(again.path()).unwrap().len(), 3001);
    }

    #[test]
    fn damaged_graph_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let err = Graph::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("stored graph"), "{err}");
        std::fs::write(dir.path().join(GRAPH_FILES[0]), b"not a graph at all").unwrap();
        std::fs::write(dir.path().join(GRAPH_FILES[1]), b"nor data").unwrap();
        let err = Graph::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("stored graph"), "{err}");
    }
}
