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
    // Eight independent partial sums let the compiler use SIMD registers: one running sum must be added in
    // order and stays scalar. Exact and HNSW scores both come from this function, so they stay identical.
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let mut acc = [0f32; LANES];
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for n in [0, 1, 7, 8, 9, 31, 128, 131] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 104_729) % 17) as f32 / 17.0 - 0.5)
                .collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - plain).abs() < 1e-5, "n={n}");
        }
    }

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
