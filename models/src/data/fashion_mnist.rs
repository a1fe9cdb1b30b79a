//! Fashion-MNIST (Zalando, MIT) as installed by Debian's `dataset-fashion-mnist`.

use std::path::{Path, PathBuf};

use super::idx::{read_pair, DataError, LabelledImages};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const DEFAULT_ROOT: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable that overrides [`DEFAULT_ROOT`].
pub const ROOT_ENV: &str = "HETVIS_FASHION_MNIST";
pub const NUM_CLASSES: usize = 10;
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn file_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    pub fn expected_len(self) -> usize {
        match self {
            Split::Train => 60_000,
            Split::Test => 10_000,
        }
    }
}

/// A Fashion-MNIST installation: a directory with the four IDX files (gzip or plain).
#[derive(Debug, Clone)]
pub struct FashionMnist {
    root: PathBuf,
}

impl FashionMnist {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$HETVIS_FASHION_MNIST` when set, else Debian's location.
    pub fn from_env() -> Self {
        Self::new(
            std::env::var_os(ROOT_ENV).map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from),
        )
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of one of the files, preferring the `.gz` name Debian ships.
    fn file(&self, split: Split, kind: &str) -> PathBuf {
        let base = format!("{}-{kind}", split.file_prefix());
        let gz = self.root.join(format!("{base}.gz"));
        if gz.exists() {
            gz
        } else {
            self.root.join(base)
        }
    }

    pub fn load(&self, split: Split) -> Result<LabelledImages, DataError> {
        let images = self.file(split, "images-idx3-ubyte");
        let labels = self.file(split, "labels-idx1-ubyte");
        let set = read_pair(&images, &labels, NUM_CLASSES)?;
        if (set.rows, set.cols) != (28, 28) {
            return Err(DataError::Invalid {
                path: images,
                message: format!(
                    "Fashion-MNIST images are 28x28, found {}x{}",
                    set.rows, set.cols
                ),
            });
        }
        Ok(set)
    }
}
