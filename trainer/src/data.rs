//! Training data as tensors. Every image goes through `hetvis_models::preprocess` (the function the indexer and
//! server use) once, up front; augmentation then works on the preprocessed tensors.

use std::path::{Path, PathBuf};

use hetvis_models::data::fashion_mnist::{FashionMnist, Split};
use hetvis_models::data::{synthetic, LabelledImages};
use hetvis_models::preprocess::{self, ImageLimits, Preprocessing};
use tch::{Device, Kind, Tensor};

use crate::preset::DataSpec;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Read(#[from] hetvis_models::data::DataError),
    #[error("image folder {path}: {message}")]
    Folder { path: PathBuf, message: String },
}

/// Images `[N, C, S, S]` (preprocessed) and labels `[N]` (int64).
pub struct Split3 {
    pub x: Tensor,
    pub y: Tensor,
}

impl Split3 {
    pub fn len(&self) -> usize {
        self.y.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> Vec<u32> {
        Vec::<i64>::try_from(&self.y).map_or_else(
            |_| Vec::new(),
            |v| v.into_iter().map(|l| l as u32).collect(),
        )
    }

    /// The rows `[start, start + n)` as a contiguous f32 vector (for ONNX Runtime).
    pub fn rows_f32(&self, start: usize, n: usize) -> Vec<f32> {
        let t = self
            .x
            .narrow(0, start as i64, n as i64)
            .to_device(Device::Cpu)
            .contiguous();
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap_or_default()
    }

    fn to_device(&self, device: Device) -> Self {
        Self {
            x: self.x.to_device(device),
            y: self.y.to_device(device),
        }
    }
}

/// A data set ready for training: train / validation (held out from train, for search rewards) / test.
pub struct Dataset {
    pub name: String,
    pub classes: usize,
    pub preprocessing: Preprocessing,
    pub train: Split3,
    pub val: Split3,
    pub test: Split3,
}

/// Where training data comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Preset(DataSpec),
    /// One sub-folder per class.
    Folder(PathBuf),
}

fn gray_tensors(set: &LabelledImages, idx: &[usize], pre: &Preprocessing) -> Split3 {
    let mut buf = Vec::with_capacity(idx.len() * pre.numel());
    for &i in idx {
        preprocess::preprocess_gray(
            set.image(i),
            set.cols as u32,
            set.rows as u32,
            pre,
            &mut buf,
        );
    }
    let s = pre.size as i64;
    Split3 {
        x: Tensor::from_slice(&buf).view([idx.len() as i64, pre.channels as i64, s, s]),
        y: Tensor::from_slice(
            &idx.iter()
                .map(|&i| set.labels[i] as i64)
                .collect::<Vec<_>>(),
        ),
    }
}

/// A seeded permutation of `0..n` (xorshift; independent of libtorch's RNG so splits never change).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.swap(i, (state % (i as u64 + 1)) as usize);
    }
    v
}

/// Splits `n` indices into (train, val) with a fixed seed.
pub fn split_indices(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let perm = permutation(n, seed);
    let n_val = ((n as f64) * val_fraction).round() as usize;
    let (val, train) = perm.split_at(n_val);
    let (mut train, mut val) = (train.to_vec(), val.to_vec());
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// The validation split is fixed by this seed, whatever the training seed, as in the paper.
const SPLIT_SEED: u64 = 0x005E_ED0F_5917;

impl Dataset {
    pub fn load(
        source: &Source,
        fashion: &FashionMnist,
        pre: Preprocessing,
        val_fraction: f64,
        device: Device,
    ) -> Result<Self, DataError> {
        Self::load_limited(source, fashion, pre, val_fraction, 0, device)
    }

    /// As [`Self::load`], keeping a seeded subset of `train_limit` training images (0 = all). The validation
    /// and test splits are unchanged.
    pub fn load_limited(
        source: &Source,
        fashion: &FashionMnist,
        pre: Preprocessing,
        val_fraction: f64,
        train_limit: usize,
        device: Device,
    ) -> Result<Self, DataError> {
        let ds = match source {
            Source::Preset(DataSpec::FashionMnist) => {
                let train = fashion.load(Split::Train)?;
                let test = fashion.load(Split::Test)?;
                let (tr, va) = split_indices(train.len(), val_fraction, SPLIT_SEED);
                let all_test: Vec<usize> = (0..test.len()).collect();
                Dataset {
                    name: "fashion-mnist".into(),
                    classes: 10,
                    train: gray_tensors(&train, &tr, &pre),
                    val: gray_tensors(&train, &va, &pre),
                    test: gray_tensors(&test, &all_test, &pre),
                    preprocessing: pre,
                }
            }
            Source::Preset(DataSpec::Synthetic {
                train,
                test,
                classes,
                image_size,
            }) => {
                let tr_set = synthetic::generate(*train, *classes, *image_size, 1);
                let te_set = synthetic::generate(*test, *classes, *image_size, 2);
                let (tr, va) = split_indices(tr_set.len(), val_fraction, SPLIT_SEED);
                let all_test: Vec<usize> = (0..te_set.len()).collect();
                Dataset {
                    name: "synthetic".into(),
                    classes: *classes,
                    train: gray_tensors(&tr_set, &tr, &pre),
                    val: gray_tensors(&tr_set, &va, &pre),
                    test: gray_tensors(&te_set, &all_test, &pre),
                    preprocessing: pre,
                }
            }
            Source::Folder(root) => load_folder(root, pre, val_fraction)?,
        };
        let train = if train_limit > 0 && train_limit < ds.train.len() {
            let mut keep = permutation(ds.train.len(), SPLIT_SEED ^ 1);
            keep.truncate(train_limit);
            keep.sort_unstable();
            let idx = Tensor::from_slice(&keep.iter().map(|&i| i as i64).collect::<Vec<_>>());
            Split3 {
                x: ds.train.x.index_select(0, &idx),
                y: ds.train.y.index_select(0, &idx),
            }
        } else {
            ds.train
        };
        Ok(Dataset {
            train: train.to_device(device),
            val: ds.val.to_device(device),
            test: ds.test.to_device(device),
            ..ds
        })
    }
}

/// An image folder: one sub-folder per class. Unreadable images are skipped with a warning. Without a separate
/// test set, the held-out split serves as both validation and test.
fn load_folder(root: &Path, pre: Preprocessing, val_fraction: f64) -> Result<Dataset, DataError> {
    let err = |message: String| DataError::Folder {
        path: root.to_owned(),
        message,
    };
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| err(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.len() < 2 {
        return Err(err("needs at least two class sub-folders".into()));
    }
    let mut buf = Vec::new();
    let mut labels = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| err(e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let result = std::fs::read(&f).map_err(|e| e.to_string()).and_then(|b| {
                preprocess::preprocess_bytes(&b, &pre, ImageLimits::default())
                    .map_err(|e| e.to_string())
            });
            match result {
                Ok(v) => {
                    buf.extend(v);
                    labels.push(label as i64);
                }
                Err(e) => tracing::warn!(file = %f.display(), "skipped: {e}"),
            }
        }
    }
    if labels.is_empty() {
        return Err(err("no readable images".into()));
    }
    let s = pre.size as i64;
    let all = Split3 {
        x: Tensor::from_slice(&buf).view([labels.len() as i64, pre.channels as i64, s, s]),
        y: Tensor::from_slice(&labels),
    };
    let (tr, va) = split_indices(labels.len(), val_fraction.max(0.05), SPLIT_SEED);
    let pick = |idx: &[usize]| {
        let i = Tensor::from_slice(&idx.iter().map(|&v| v as i64).collect::<Vec<_>>());
        Split3 {
            x: all.x.index_select(0, &i),
            y: all.y.index_select(0, &i),
        }
    };
    let val = pick(&va);
    Ok(Dataset {
        name: root.display().to_string(),
        classes: classes.len(),
        train: pick(&tr),
        test: Split3 {
            x: val.x.shallow_clone(),
            y: val.y.shallow_clone(),
        },
        val,
        preprocessing: pre,
    })
}

/// Light augmentation on a preprocessed batch: random horizontal flip and a random shift of up to `pad` pixels
/// (zero padding in normalised space), per sample.
pub fn augment(x: &Tensor, pad: i64) -> Tensor {
    let (n, _, h, w) = x.size4().expect("NCHW batch");
    let flip = Tensor::rand([n], (Kind::Float, x.device())).lt(0.5);
    let flipped = x.flip([3]);
    let x = flipped.where_self(&flip.view([n, 1, 1, 1]), x);
    if pad == 0 {
        return x;
    }
    let padded = x.constant_pad_nd([pad, pad, pad, pad]);
    let offsets = Vec::<i64>::try_from(
        Tensor::randint(2 * pad + 1, [n, 2], (Kind::Int64, tch::Device::Cpu)).flatten(0, -1),
    )
    .unwrap_or_else(|_| vec![pad; 2 * n as usize]);
    let crops: Vec<Tensor> = (0..n as usize)
        .map(|i| {
            padded
                .get(i as i64)
                .narrow(1, offsets[2 * i], h)
                .narrow(2, offsets[2 * i + 1], w)
        })
        .collect();
    Tensor::stack(&crops, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (tr, va) = split_indices(1000, 0.1, 7);
        assert_eq!((tr.len(), va.len()), (900, 100));
        assert_eq!(split_indices(1000, 0.1, 7), (tr.clone(), va.clone()));
        let mut all: Vec<usize> = tr.iter().chain(&va).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_ne!(split_indices(1000, 0.1, 8).1, va);
    }

    #[test]
    fn augment_keeps_shape_and_content() {
        let x = Tensor::rand([8, 3, 12, 12], (Kind::Float, Device::Cpu));
        let y = augment(&x, 2);
        assert_eq!(y.size(), x.size());
        // Shifts by at most 2 px keep most of each image's mass (up to zero padding).
        let ratio = y.sum(Kind::Float).double_value(&[]) / x.sum(Kind::Float).double_value(&[]);
        assert!((0.6..=1.0001).contains(&ratio), "{ratio}");
    }

    #[test]
    fn synthetic_data_set_goes_through_the_shared_preprocessing() {
        let spec = DataSpec::Synthetic {
            train: 100,
            test: 20,
            classes: 4,
            image_size: 16,
        };
        let pre = Preprocessing::fashion_mnist(20);
        let ds = Dataset::load(
            &Source::Preset(spec),
            &FashionMnist::from_env(),
            pre.clone(),
            0.1,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            (ds.train.len(), ds.val.len(), ds.test.len(), ds.classes),
            (90, 10, 20, 4)
        );
        assert_eq!(ds.train.x.size(), vec![90, 3, 20, 20]);
        // Row 0 equals a direct call of the shared preprocessing function.
        let set = synthetic::generate(100, 4, 16, 1);
        let (tr, _) = split_indices(100, 0.1, SPLIT_SEED);
        let mut direct = Vec::new();
        preprocess::preprocess_gray(set.image(tr[0]), 16, 16, &pre, &mut direct);
        assert_eq!(ds.train.rows_f32(0, 1), direct);
    }
}
