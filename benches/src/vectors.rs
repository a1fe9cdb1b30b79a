//! Synthetic gallery embeddings: unit vectors drawn from a Gaussian mixture around a few thousand random centres,
//! which is closer to real embeddings (classes and near-duplicates) than uniform noise on the sphere. Reproducible
//! from a seed.

/// splitmix64: small, fast and good enough for benchmark data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` unit vectors of `dim` floats, row-major. Each is a random centre (one of `centres`) plus isotropic noise
/// whose norm is about `spread` times the centre's.
pub fn clustered(n: usize, dim: usize, centres: usize, spread: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut means = vec![0f32; centres.max(1) * dim];
    for c in means.chunks_mut(dim) {
        c.iter_mut().for_each(|x| *x = rng.normal());
        normalise(c);
    }
    let sigma = spread / (dim as f32).sqrt();
    let mut out = vec![0f32; n * dim];
    for row in out.chunks_mut(dim) {
        let c = (rng.next_u64() % centres.max(1) as u64) as usize;
        let mean = &means[c * dim..(c + 1) * dim];
        for (x, m) in row.iter_mut().zip(mean) {
            *x = m + sigma * rng.normal();
        }
        normalise(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unit_reproducible_and_clustered() {
        let (n, dim) = (2000, 64);
        let v = clustered(n, dim, 10, 0.5, 3);
        assert_eq!(v.len(), n * dim);
        assert_eq!(v, clustered(n, dim, 10, 0.5, 3));
        assert_ne!(v, clustered(n, dim, 10, 0.5, 4));
        for row in v.chunks(dim) {
            let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        // With 10 centres and little noise, each row's nearest other row is far closer than a random pair.
        let dot = |a: usize, b: usize| -> f32 {
            v[a * dim..(a + 1) * dim]
                .iter()
                .zip(&v[b * dim..(b + 1) * dim])
                .map(|(x, y)| x * y)
                .sum()
        };
        let nearest: f32 = (1..n).map(|j| dot(0, j)).fold(f32::MIN, f32::max);
        let mean: f32 = (1..n).map(|j| dot(0, j)).sum::<f32>() / (n - 1) as f32;
        assert!(
            nearest > 0.6 && mean < 0.3,
            "nearest {nearest}, mean {mean}"
        );
    }
}
