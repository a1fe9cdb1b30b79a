//! HNSW parameters, validated before they reach `hnsw_rs` (which calls `process::exit` for M > 256).

use serde::{Deserialize, Serialize};

use crate::error::IndexError;

/// `hnsw_rs` stores neighbour counts in a byte and exits the process above this.
pub const MAX_M: usize = 256;
/// Layers the graph may use (`hnsw_rs`'s own ceiling).
pub const MAX_LAYERS: usize = 16;
/// Largest candidate list, while inserting or searching: the same bound a request's `ef` gets by default, so a
/// hand-edited or hostile manifest cannot make every insert or search scan without end.
pub const MAX_EF: usize = 4096;
/// Below this many vectors [`crate::Index::search`] scans them all: exact, and as fast as the graph.
pub const EXACT_SEARCH_MAX_LEN: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours kept per node and layer (`max_nb_connection`).
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Default candidate list size while searching (raised to k when smaller).
    pub ef_search: usize,
}

impl Default for HnswParams {
    /// Recall@10 0.998 at ef 64 on the 60,000 Fashion-MNIST training images (the `index` benchmark), at about
    /// half the build time of ef_construction 200 (0.9987): the graph is rebuilt on every open.
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
        }
    }
}

impl HnswParams {
    pub fn validate(&self) -> Result<(), IndexError> {
        let bad = |msg: String| Err(IndexError::InvalidParams(msg));
        if !(2..=MAX_M).contains(&self.m) {
            // M = 1 makes hnsw_rs's level scale 1/ln(1) infinite.
            return bad(format!("M must be in 2..={MAX_M}, got {}", self.m));
        }
        if !(1..=MAX_EF).contains(&self.ef_construction) {
            return bad(format!(
                "ef_construction must be in 1..={MAX_EF}, got {}",
                self.ef_construction
            ));
        }
        if !(1..=MAX_EF).contains(&self.ef_search) {
            return bad(format!(
                "ef_search must be in 1..={MAX_EF}, got {}",
                self.ef_search
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m_outside_the_range_hnsw_rs_survives_is_refused() {
        assert!(HnswParams::default().validate().is_ok());
        for m in [0, 1, 257, 10_000] {
            let p = HnswParams {
                m,
                ..Default::default()
            };
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains("M must be in 2..=256"), "{err}");
        }
        let p = HnswParams {
            m: 256,
            ..Default::default()
        };
        assert!(p.validate().is_ok());
        for (ef_construction, ef_search) in [(0, 64), (MAX_EF + 1, 64), (100, 0), (100, MAX_EF + 1)]
        {
            let p = HnswParams {
                ef_construction,
                ef_search,
                ..Default::default()
            };
            assert!(p.validate().is_err(), "{p:?}");
        }
        let p = HnswParams {
            ef_construction: MAX_EF,
            ef_search: MAX_EF,
            ..Default::default()
        };
        assert!(p.validate().is_ok());
    }
}
