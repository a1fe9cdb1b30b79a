//! Named f32 tensors, read from and written to safetensors files (what the trainer saves, what the exporter reads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::arch::Net;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("tensor {name}: dtype {dtype}, only F32 is supported")]
    Dtype { name: String, dtype: String },
    #[error("weights are missing tensor {0}")]
    Missing(String),
    #[error("tensor {name} has shape {found:?}, the architecture needs {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("cannot serialise weights: {0}")]
    Serialize(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Tensors by name, in name order (so files are reproducible).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights(pub BTreeMap<String, Tensor>);

impl Weights {
    pub fn get(&self, name: &str) -> Result<&Tensor, WeightsError> {
        self.0
            .get(name)
            .ok_or_else(|| WeightsError::Missing(name.to_owned()))
    }

    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.0.insert(name.into(), Tensor { shape, data });
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, WeightsError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut out = Weights::default();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::Dtype {
                    name,
                    dtype: format!("{:?}", view.dtype()),
                });
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.insert(name, view.shape().to_vec(), data);
        }
        Ok(out)
    }

    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        let bytes: Vec<(String, Vec<u8>)> = self
            .0
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = self
            .0
            .values()
            .zip(&bytes)
            .map(|(t, (n, b))| {
                TensorView::new(Dtype::F32, t.shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| WeightsError::Serialize(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::serialize(views, None).map_err(|e| WeightsError::Serialize(e.to_string()))
    }

    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        std::fs::write(path, self.to_bytes()?).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks that every tensor the network needs is present with the right shape (extra tensors are allowed:
    /// a trainer checkpoint may hold classifier heads that do not ship).
    pub fn check(&self, net: &Net) -> Result<(), WeightsError> {
        for p in net.params() {
            let t = self.get(&p.name)?;
            if t.shape != p.shape {
                return Err(WeightsError::Shape {
                    name: p.name,
                    expected: p.shape,
                    found: t.shape.clone(),
                });
            }
        }
        Ok(())
    }

    /// Deterministic pseudo-random weights for a network (He-style scale, BN near identity): for tests and
    /// benchmarks that need a working model without training. Not a substitute for trained weights.
    pub fn random(net: &Net, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let mut w = Weights::default();
        for p in net.params() {
            let n: usize = p.shape.iter().product();
            let suffix = p.name.rsplit('.').next().unwrap_or("");
            let data = match suffix {
                "running_var" => (0..n).map(|_| 0.5 + rng.unit()).collect(),
                "running_mean" | "bias" => (0..n).map(|_| 0.2 * (rng.unit() - 0.5)).collect(),
                "weight" if p.shape.len() == 1 => (0..n).map(|_| 0.5 + rng.unit()).collect(),
                _ => {
                    let fan_in: usize = p.shape[1..].iter().product::<usize>().max(1);
                    let scale = (6.0 / fan_in as f32).sqrt();
                    (0..n).map(|_| scale * (2.0 * rng.unit() - 1.0)).collect()
                }
            };
            w.insert(p.name, p.shape, data);
        }
        w
    }
}

/// A tiny, dependency-free PRNG for reproducible test weights.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_safetensors() {
        let mut w = Weights::default();
        w.insert(
            "a.weight",
            vec![2, 3],
            (0..6).map(|v| v as f32 * 0.5).collect(),
        );
        w.insert("b.bias", vec![1], vec![-1.0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        w.save(&path).unwrap();
        assert_eq!(Weights::load(&path).unwrap(), w);
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(matches!(
            Weights::load(&path),
            Err(WeightsError::Format { .. })
        ));
    }
}
