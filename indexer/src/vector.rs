//! Vector hygiene before anything reaches the HNSW graph: `hnsw_rs` panics on NaN distances, and a zero vector
//! has no direction to compare, so both are refused up front and everything stored is unit length.

/// Why a vector cannot be indexed or searched with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VectorProblem {
    #[error("has {got} components, expected {expected}")]
    WrongDimension { got: usize, expected: usize },
    #[error("contains NaN or infinity")]
    NonFinite,
    #[error("is zero (it has no direction)")]
    Zero,
}

/// The vector scaled to unit L2 norm, or why it cannot be.
pub fn normalised(v: &[f32], dim: usize) -> Result<Vec<f32>, VectorProblem> {
    if v.len() != dim {
        return Err(VectorProblem::WrongDimension {
            got: v.len(),
            expected: dim,
        });
    }
    if !v.iter().all(|x| x.is_finite()) {
        return Err(VectorProblem::NonFinite);
    }
    // f64 so that neither large components overflow nor tiny ones underflow to a false zero.
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(VectorProblem::Zero);
    }
    Ok(v.iter().map(|&x| (x as f64 / norm) as f32).collect())
}

/// Inner product; equals cosine similarity for unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses_bad_vectors() {
        let v = normalised(&[3.0, 4.0], 2).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        assert_eq!(normalised(&[0.0, 0.0], 2), Err(VectorProblem::Zero));
        assert_eq!(
            normalised(&[f32::NAN, 1.0], 2),
            Err(VectorProblem::NonFinite)
        );
        assert_eq!(
            normalised(&[1.0, f32::INFINITY], 2),
            Err(VectorProblem::NonFinite)
        );
        assert_eq!(
            normalised(&[1.0], 2),
            Err(VectorProblem::WrongDimension {
                got: 1,
                expected: 2
            })
        );
        // Tiny but non-zero vectors still have a direction.
        let tiny = normalised(&[1e-30, 0.0], 2).unwrap();
        assert_eq!(tiny, vec![1.0, 0.0]);
    }
}
