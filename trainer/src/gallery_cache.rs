//! The gallery model's embeddings of the training images, computed once per gallery run and kept beside it, for
//! the compatibility terms that read them (`reg`, `con`, `supcon`, `rank`; see [`crate::compat`]). The gallery is
//! frozen while query models train, so its embedding of an image never changes: the cache saves a gallery forward
//! pass per training step, and the neighbour lists of ranking distillation are computed once.
//!
//! The cache names what it was computed from: the sha256 of the gallery's `weights.safetensors` and of the
//! training images and labels. A retrained gallery, or another training set (another preset's `train_limit`,
//! another validation split), never meets stale embeddings: the cache is refused and computed anew.

use std::path::{Path, PathBuf};

use hetvis_models::atomic::write as write_atomic;
use hetvis_models::weights::Weights;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::compat::{unit, GalleryBatch};
use crate::data::Dataset;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Write(#[from] hetvis_models::atomic::AtomicWriteError),
    #[error(transparent)]
    Weights(#[from] hetvis_models::weights::WeightsError),
}

/// The cache's files in the gallery run's directory.
pub const CACHE_FILE: &str = "train-embeddings.safetensors";
pub const KEY_FILE: &str = "train-embeddings.json";

/// What a cache was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// sha256 of the gallery's `weights.safetensors`.
    pub gallery_weights_sha256: String,
    /// sha256 of the training images and labels, as the trainer holds them.
    pub train_sha256: String,
    pub images: usize,
    pub dim: usize,
    /// Neighbours per image (0: none computed).
    pub neighbours: usize,
}

/// Why a cache on disk was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    Missing,
    /// It was computed from other gallery weights, other training images or with fewer neighbours.
    Mismatch {
        cached: Box<CacheKey>,
    },
    Unreadable(String),
}

pub struct GalleryEmbeddings {
    /// `[N, D]` unit rows: row `i` is training image `i` through the gallery model.
    pub embeddings: Tensor,
    /// `[N]` the training labels.
    pub labels: Tensor,
    /// `[N, K]` each image's `K` nearest gallery embeddings (by cosine; itself first), when asked for.
    pub neighbours: Option<Tensor>,
    pub key: CacheKey,
}

fn sha256_file(path: &Path) -> Result<String, CacheError> {
    let bytes = std::fs::read(path).map_err(|e| CacheError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// sha256 of the training images and labels, read a block of images at a time (no copy of the whole set).
fn train_sha256(data: &Dataset) -> Result<String, CacheError> {
    let mut h = Sha256::new();
    let n = data.train.len() as i64;
    let mut bytes = Vec::new();
    for start in (0..n).step_by(1024) {
        let block = data.train.x.narrow(0, start, 1024.min(n - start));
        let x = Vec::<f32>::try_from(block.to_device(Device::Cpu).flatten(0, -1))?;
        bytes.clear();
        bytes.extend(x.iter().flat_map(|v| v.to_le_bytes()));
        h.update(&bytes);
    }
    let y = Vec::<i64>::try_from(data.train.y.to_device(Device::Cpu))?;
    bytes.clear();
    bytes.extend(y.iter().flat_map(|v| v.to_le_bytes()));
    h.update(&bytes);
    Ok(hex::encode(h.finalize()))
}

/// The key a cache of `gallery_dir`'s embeddings of `data`'s training images must carry.
pub fn key_for(
    gallery_dir: &Path,
    data: &Dataset,
    dim: usize,
    neighbours: usize,
) -> Result<CacheKey, CacheError> {
    Ok(CacheKey {
        gallery_weights_sha256: sha256_file(&gallery_dir.join("weights.safetensors"))?,
        train_sha256: train_sha256(data)?,
        images: data.train.len(),
        dim,
        neighbours,
    })
}

fn paths(gallery_dir: &Path) -> (PathBuf, PathBuf) {
    (gallery_dir.join(CACHE_FILE), gallery_dir.join(KEY_FILE))
}

impl GalleryEmbeddings {
    /// The cached embeddings of the gallery run in `gallery_dir` (whose frozen network is `forward`, of
    /// embedding dimension `dim`) for `data`, or computed now and cached. `neighbours` > 0 also gives each image's
    /// nearest gallery embeddings (a cache with at least that many is reused).
    pub fn load_or_compute(
        gallery_dir: &Path,
        dim: usize,
        forward: impl Fn(&Tensor) -> Tensor,
        data: &Dataset,
        neighbours: usize,
        device: Device,
    ) -> Result<Self, CacheError> {
        let want = key_for(gallery_dir, data, dim, neighbours)?;
        match Self::load(gallery_dir, &want, device) {
            Ok(cached) => {
                tracing::info!(dir = %gallery_dir.display(), images = want.images, "gallery embeddings from the cache");
                return Ok(cached);
            }
            Err(Stale::Missing) => {}
            Err(why) => {
                tracing::warn!(dir = %gallery_dir.display(), ?why, "gallery embeddings cache is stale; computing anew")
            }
        }
        let fresh = Self::compute(forward, data, want, device);
        fresh.save(gallery_dir)?;
        Ok(fresh)
    }

    /// The cache in `gallery_dir`, if it was computed for `want` (the same gallery weights and training images,
    /// and at least as many neighbours).
    pub fn load(gallery_dir: &Path, want: &CacheKey, device: Device) -> Result<Self, Stale> {
        let (file, key_file) = paths(gallery_dir);
        let text = match std::fs::read_to_string(&key_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Stale::Missing),
            Err(e) => return Err(Stale::Unreadable(e.to_string())),
        };
        let cached: CacheKey =
            serde_json::from_str(&text).map_err(|e| Stale::Unreadable(e.to_string()))?;
        let fits = cached.gallery_weights_sha256 == want.gallery_weights_sha256
            && cached.train_sha256 == want.train_sha256
            && cached.images == want.images
            && cached.dim == want.dim
            && cached.neighbours >= want.neighbours;
        if !fits {
            return Err(Stale::Mismatch {
                cached: Box::new(cached),
            });
        }
        let w = Weights::load(&file).map_err(|e| Stale::Unreadable(e.to_string()))?;
        let tensor = |name: &str| -> Result<Tensor, Stale> {
            let t = w.get(name).map_err(|e| Stale::Unreadable(e.to_string()))?;
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            Ok(Tensor::from_slice(&t.data)
                .view(shape.as_slice())
                .to_device(device))
        };
        let embeddings = tensor("embeddings")?;
        if embeddings.size() != [cached.images as i64, cached.dim as i64] {
            return Err(Stale::Unreadable(format!(
                "embeddings of shape {:?}",
                embeddings.size()
            )));
        }
        let labels = tensor("labels")?.to_kind(Kind::Int64);
        let neighbours = match want.neighbours {
            0 => None,
            k => Some(
                tensor("neighbours")?
                    .narrow(1, 0, k as i64)
                    .to_kind(Kind::Int64),
            ),
        };
        Ok(Self {
            embeddings,
            labels,
            neighbours,
            key: cached,
        })
    }

    fn compute(
        forward: impl Fn(&Tensor) -> Tensor,
        data: &Dataset,
        key: CacheKey,
        device: Device,
    ) -> Self {
        let n = data.train.len();
        let bar = crate::progress::bar(n as u64, "{prefix:>12} [{bar:25}] {pos}/{len} {per_sec}");
        bar.set_prefix("gallery embeddings");
        let embeddings = tch::no_grad(|| {
            let mut parts = Vec::new();
            for start in (0..n).step_by(256) {
                let len = 256.min(n - start) as i64;
                let x = data.train.x.narrow(0, start as i64, len).to_device(device);
                parts.push(unit(&forward(&x)));
                bar.inc(len as u64);
            }
            Tensor::cat(&parts, 0)
        });
        bar.finish_and_clear();
        let neighbours = (key.neighbours > 0).then(|| nearest(&embeddings, key.neighbours));
        Self {
            embeddings,
            labels: data.train.y.to_device(device),
            neighbours,
            key,
        }
    }

    fn save(&self, gallery_dir: &Path) -> Result<(), CacheError> {
        let (file, key_file) = paths(gallery_dir);
        let mut w = Weights::default();
        let cpu = |t: &Tensor| -> Result<(Vec<usize>, Vec<f32>), CacheError> {
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let data =
                Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
            Ok((shape, data))
        };
        let (shape, data) = cpu(&self.embeddings)?;
        w.insert("embeddings", shape, data);
        // Row indices and labels are exact as f32 below 2^24 images.
        let (shape, data) = cpu(&self.labels)?;
        w.insert("labels", shape, data);
        if let Some(nb) = &self.neighbours {
            let (shape, data) = cpu(nb)?;
            w.insert("neighbours", shape, data);
        }
        // The data first, then the key that vouches for it: a crash between them leaves a key that does not
        // match (or none), never a key over other data.
        let _ = std::fs::remove_file(&key_file);
        write_atomic(&file, &w.to_bytes()?)?;
        let key = serde_json::to_string_pretty(&self.key).map_err(|e| CacheError::File {
            path: key_file.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&key_file, key.as_bytes())?;
        Ok(())
    }

    /// What one training step's compatibility terms read for the images at `rows` `[B]`: their gallery
    /// embeddings and labels, `negatives` more drawn at random from the whole set, and their neighbours'
    /// embeddings when computed.
    pub fn batch(&self, rows: &Tensor, negatives: usize) -> BatchTensors {
        let rows = rows.to_device(self.embeddings.device());
        let n = self.embeddings.size()[0];
        let extra_rows = Tensor::randint(
            n,
            [negatives.min(n as usize) as i64],
            (Kind::Int64, self.embeddings.device()),
        );
        let neighbours = self.neighbours.as_ref().map(|nb| {
            let ids = nb.index_select(0, &rows);
            let (b, k) = (ids.size()[0], ids.size()[1]);
            self.embeddings
                .index_select(0, &ids.flatten(0, -1))
                .view([b, k, -1])
        });
        BatchTensors {
            own: self.embeddings.index_select(0, &rows),
            labels: self.labels.index_select(0, &rows),
            extra: self.embeddings.index_select(0, &extra_rows),
            extra_labels: self.labels.index_select(0, &extra_rows),
            extra_rows,
            rows,
            neighbours,
        }
    }
}

/// The tensors a [`GalleryBatch`] borrows.
pub struct BatchTensors {
    own: Tensor,
    labels: Tensor,
    extra: Tensor,
    extra_labels: Tensor,
    extra_rows: Tensor,
    rows: Tensor,
    neighbours: Option<Tensor>,
}

impl BatchTensors {
    pub fn view(&self) -> GalleryBatch<'_> {
        GalleryBatch {
            own: &self.own,
            extra: &self.extra,
            extra_rows: &self.extra_rows,
            rows: &self.rows,
            labels: &self.labels,
            extra_labels: &self.extra_labels,
            neighbours: self.neighbours.as_ref(),
        }
    }
}

/// Each row's `k` nearest rows of `e` (unit rows) by cosine, itself included, best first `[N, k]`.
fn nearest(e: &Tensor, k: usize) -> Tensor {
    let n = e.size()[0];
    let k = (k as i64).min(n);
    tch::no_grad(|| {
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = 1024.min(n - start);
            let sims = e.narrow(0, start, len).matmul(&e.tr());
            parts.push(sims.topk(k, 1, true, true).1);
            start += len;
        }
        Tensor::cat(&parts, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Source;
    use crate::preset::DataSpec;
    use hetvis_models::data::fashion_mnist::FashionMnist;
    use hetvis_models::preprocess::Preprocessing;

    fn data(train: usize) -> Dataset {
        let spec = DataSpec::Synthetic {
            train,
            test: 8,
            classes: 3,
            image_size: 8,
        };
        Dataset::load(
            &Source::Preset(spec),
            &FashionMnist::from_env(),
            Preprocessing::fashion_mnist(8),
            0.1,
            Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn the_cache_is_refused_after_the_gallery_or_the_data_changes() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("weights.safetensors");
        std::fs::write(&weights, b"gallery weights, first training").unwrap();
        let ds = data(40);
        let key = key_for(dir.path(), &ds, 4, 2).unwrap();
        let n = ds.train.len() as i64;
        let embeddings = unit(&Tensor::randn([n, 4], (Kind::Float, Device::Cpu)));
        let cache = GalleryEmbeddings {
            neighbours: Some(nearest(&embeddings, 2)),
            embeddings,
            labels: ds.train.y.shallow_clone(),
            key: key.clone(),
        };
        cache.save(dir.path()).unwrap();

        // The same gallery and data: read back as written, fewer neighbours served from more.
        let back = GalleryEmbeddings::load(dir.path(), &key, Device::Cpu).unwrap();
        assert!(back.embeddings.allclose(&cache.embeddings, 0.0, 0.0, false));
        assert_eq!(back.neighbours.unwrap().size(), [n, 2]);
        let fewer = CacheKey {
            neighbours: 1,
            ..key.clone()
        };
        let back = GalleryEmbeddings::load(dir.path(), &fewer, Device::Cpu).unwrap();
        assert_eq!(back.neighbours.unwrap().size(), [n, 1]);
        // More neighbours than cached: computed anew.
        let more = CacheKey {
            neighbours: 3,
            ..key.clone()
        };
        assert!(matches!(
            GalleryEmbeddings::load(dir.path(), &more, Device::Cpu),
            Err(Stale::Mismatch { .. })
        ));

        // The gallery retrained (other weights): refused.
        std::fs::write(&weights, b"gallery weights, second training").unwrap();
        let retrained = key_for(dir.path(), &ds, 4, 2).unwrap();
        assert_ne!(retrained.gallery_weights_sha256, key.gallery_weights_sha256);
        assert!(matches!(
            GalleryEmbeddings::load(dir.path(), &retrained, Device::Cpu),
            Err(Stale::Mismatch { .. })
        ));

        // Other training images (another subset): refused.
        std::fs::write(&weights, b"gallery weights, first training").unwrap();
        let other = key_for(dir.path(), &data(60), 4, 2).unwrap();
        assert_ne!(other.train_sha256, key.train_sha256);
        assert!(matches!(
            GalleryEmbeddings::load(dir.path(), &other, Device::Cpu),
            Err(Stale::Mismatch { .. })
        ));

        // No cache at all.
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            GalleryEmbeddings::load(empty.path(), &key, Device::Cpu),
            Err(Stale::Missing)
        ));
    }

    #[test]
    fn nearest_puts_each_row_first_then_its_neighbours() {
        let e = unit(&Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0]).view([3, 2]));
        let nb = Vec::<i64>::try_from(nearest(&e, 2).flatten(0, -1)).unwrap();
        assert_eq!(nb, vec![0, 1, 1, 0, 2, 1]);
    }
}
