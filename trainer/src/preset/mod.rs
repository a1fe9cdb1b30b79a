//! Training presets: data, not constants scattered through the code. `presets.json` is compiled in;
//! `--preset-file` reads another file of the same shape.

use std::collections::BTreeMap;

use hetvis_models::arch::{Backbone, ModelSpec};
use serde::{Deserialize, Serialize};

mod cmpnas;
pub use cmpnas::{ChildSampling, CmpNasPreset, Rescore, RewardMetric, SupernetPreset, TierSpace};

const BUILTIN: &str = include_str!("../../presets.json");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataSpec {
    /// Debian's Fashion-MNIST: train split minus a seeded validation split; the test split for final numbers.
    FashionMnist,
    /// The project's generator (`hetvis_models::data::synthetic`).
    Synthetic {
        train: usize,
        test: usize,
        classes: usize,
        image_size: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate of SGD (momentum 0.9, Nesterov) with a cosine decay over all steps.
    pub lr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryPreset {
    pub backbone: Backbone,
    pub train: Schedule,
}

/// Normalised-softmax (CosFace) classifier: logits `scale * (cos - margin * onehot)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassifierPreset {
    pub scale: f64,
    pub margin: f64,
    /// How a compatible query model's own classifier starts (BCT and L2 query runs, BCT super-networks).
    /// Absent in JSON means `random`, so existing run records read unchanged.
    #[serde(default, skip_serializing_if = "HeadInit::is_random")]
    pub init: HeadInit,
}

/// The starting weights of a query model's own classifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HeadInit {
    /// Small random weights, as BCT's reference code starts a new model's classifier.
    #[default]
    Random,
    /// A copy of the gallery's classifier when the classes are the same. A random start puts the query's own
    /// class directions almost orthogonal to the gallery's, so the embedding has to serve two unrelated
    /// 10-D geometries; from the gallery's, both losses pull towards the same one.
    Gallery,
}

impl HeadInit {
    fn is_random(&self) -> bool {
        *self == HeadInit::Random
    }
}

/// Knowledge distillation of the gallery's logits (`query --mode kd`): `weight * T^2 * KL` at temperature `T`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KdPreset {
    pub weight: f64,
    pub temperature: f64,
}

impl Default for KdPreset {
    /// Hinton et al.'s usual setting: T = 4, the soft term weighted like the hard one.
    fn default() -> Self {
        Self {
            weight: 1.0,
            temperature: 4.0,
        }
    }
}

/// Sizes of the compatibility studies (`hetvis-train study ...`): each trains many models, so each model gets a
/// smaller budget than the pipeline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyPreset {
    /// Seeded training subset of every study model (0 = the preset's `train_limit`).
    pub train_limit: usize,
    /// Schedule of every model a study trains.
    pub query: Schedule,
    /// Test images of the studies' evaluations (0 = the whole test split).
    pub test_limit: usize,
    /// Pruning study: fractions of the inner filters removed.
    pub prune_amounts: Vec<f64>,
    /// Random-architecture study: architectures are drawn with MMACs within this fraction of the budget.
    pub budget_window: f64,
    /// Reward study: best architectures of each search that are retrained and averaged.
    pub top: usize,
}

fn default_finetune_lr_scale() -> f64 {
    0.1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    #[serde(default)]
    pub about: String,
    pub data: DataSpec,
    pub input_size: usize,
    pub embedding_dim: usize,
    pub gallery: GalleryPreset,
    pub query: Schedule,
    /// Baseline query architectures by name (`mobilenetv2`, `shufflenetv2`), scaled for this preset.
    pub baselines: BTreeMap<String, Backbone>,
    pub classifier: ClassifierPreset,
    /// BCT influence-loss weight (lambda).
    pub bct_weight: f64,
    /// Weight of the squared distance to the gallery embedding in `l2` mode.
    pub l2_weight: f64,
    #[serde(default)]
    pub kd: KdPreset,
    /// The compatibility objective of compatible (`bct` mode) query models and of the CMP-NAS super-network:
    /// BCT's influence loss alone when absent.
    #[serde(default)]
    pub compat: crate::compat::CompatPreset,
    /// `finetune` mode trains at this fraction of the query learning rate (it starts from trained weights).
    #[serde(default = "default_finetune_lr_scale")]
    pub finetune_lr_scale: f64,
    pub augment: bool,
    pub val_fraction: f64,
    /// Train on a seeded subset of this many training images (0 = all): a compute budget, not a data choice.
    #[serde(default)]
    pub train_limit: usize,
    pub seed: u64,
    /// Super-network, search and pipeline tiers.
    pub cmpnas: CmpNasPreset,
    pub study: StudyPreset,
}

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("unknown preset {name:?}; available: {available}")]
    Unknown { name: String, available: String },
    #[error("invalid preset file: {0}")]
    Parse(String),
}

pub fn all(file: Option<&str>) -> Result<BTreeMap<String, Preset>, PresetError> {
    serde_json::from_str(file.unwrap_or(BUILTIN)).map_err(|e| PresetError::Parse(e.to_string()))
}

pub fn load(name: &str, file: Option<&str>) -> Result<Preset, PresetError> {
    let mut presets = all(file)?;
    let available = presets.keys().cloned().collect::<Vec<_>>().join(", ");
    presets.remove(name).ok_or(PresetError::Unknown {
        name: name.to_owned(),
        available,
    })
}

impl Preset {
    /// A model spec for a backbone at this preset's input size and embedding dimension.
    pub fn spec(&self, backbone: Backbone) -> ModelSpec {
        ModelSpec::new(backbone, self.input_size, self.embedding_dim)
    }

    pub fn gallery_spec(&self) -> ModelSpec {
        self.spec(self.gallery.backbone.clone())
    }

    /// This preset resized for a study: the study's training subset and schedule for every model it trains.
    pub fn for_study(&self) -> Preset {
        let mut p = self.clone();
        p.query = self.study.query;
        if self.study.train_limit > 0 {
            p.train_limit = self.study.train_limit;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_parse_and_lower() {
        let presets = all(None).unwrap();
        for name in ["tiny", "cpu", "full", "paper"] {
            let p = &presets[name];
            p.gallery_spec().lower().unwrap();
            for b in p.baselines.values() {
                p.spec(b.clone()).lower().unwrap();
            }
        }
        assert!(matches!(
            load("nope", None),
            Err(PresetError::Unknown { .. })
        ));
    }
}
