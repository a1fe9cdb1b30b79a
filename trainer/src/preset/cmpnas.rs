//! The `cmpnas` section of a preset: how the super-network trains, how the search runs and scores, which
//! tiers and spaces.

use hetvis_models::arch::SposSpace;
use hetvis_models::metrics::RetrievalMetrics;
use serde::{Deserialize, Serialize};

use crate::search::SearchConfig;

/// The validation metric behind M(., .) during the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RewardMetric {
    Top1,
    Top5,
    Top10,
    MapAtR,
    #[serde(rename = "tar_at_far_1e-3")]
    #[value(name = "tar-at-far-1e-3")]
    TarAtFar1e3,
}

impl RewardMetric {
    pub fn of(self, m: &RetrievalMetrics) -> f64 {
        match self {
            RewardMetric::Top1 => m.top(1),
            RewardMetric::Top5 => m.top(5),
            RewardMetric::Top10 => m.top(10),
            RewardMetric::MapAtR => m.map_at_r,
            RewardMetric::TarAtFar1e3 => m.tar(1e-3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SupernetPreset {
    /// Epochs in total; the first `warmup_epochs` average all blocks at full width instead of sampling, the next
    /// `transition_epochs` drop blocks and widths gradually (see [`crate::supernet::transition`]), the rest
    /// sample one uniform child per batch.
    pub epochs: usize,
    pub warmup_epochs: usize,
    #[serde(default)]
    pub transition_epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Which children the sampling epochs train.
    #[serde(default)]
    pub sampling: ChildSampling,
}

/// Which children a super-network's sampling epochs train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildSampling {
    /// Every layer's block and width uniform, as in the paper. Its tiers put the budget near the middle of
    /// the children this draws (the 1.0 / 0.75 / 0.5 spaces around the reference architecture).
    #[default]
    Uniform,
    /// Uniform draws narrowed until they fit the tier's budget ([`crate::sampling::sample_under`]): the children the
    /// search will score. Where a budget sits at the narrow end of its space, uniform sampling trains
    /// children the search never looks at: in the cpu preset's spaces they average 1.4x the budget (2.55
    /// vs 1.76 MMACs at 23x, 0.71 vs 0.51 at 80x; 1 draw in about 4,000 fits at 23x), and the narrow
    /// children the search scores share their weights without ever training alone. Measured on the cpu
    /// preset this did not rank better (docs/research), so only the tiny preset uses it.
    UnderBudget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmpNasPreset {
    pub supernet: SupernetPreset,
    pub search: SearchConfig,
    /// Training batches for each candidate's BN recalibration.
    pub bn_batches: usize,
    /// Validation images used for rewards (0 = all).
    pub val_limit: usize,
    pub reward_metric: RewardMetric,
    /// R3 weights of M(q, q) and M(q, g).
    pub r3_weights: (f64, f64),
    /// FLOPs tiers of the pipeline, as gallery-MMACs / query-MMACs ratios.
    pub tiers: Vec<f64>,
    /// Search spaces fixed per tier, by the tier's label (`"23x"`); other tiers get the gallery's stem and
    /// [`crate::tier::multiplier_for`] the budget.
    #[serde(default)]
    pub spaces: std::collections::BTreeMap<String, TierSpace>,
    /// How the winner is picked from the search's best candidates.
    #[serde(default)]
    pub rescore: Rescore,
}

/// The best of a search's many noisy scores is biased upward (the winner's curse): among candidates whose
/// true rewards are close, the one with the luckiest validation subset and BN batches wins. So the `top`
/// best are scored again on the whole validation split with `bn_batches` BN batches, and the best of those
/// is the winner (`bn_batches` is at least the search's). `top` 0 or 1 keeps the search's best.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rescore {
    pub top: usize,
    pub bn_batches: usize,
}

/// A tier's SPOS space: stem, channel multiplier, and the last layer's width (`None`: scaled with the
/// multiplier, see [`SposSpace::last_channels`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierSpace {
    pub stem: hetvis_models::arch::Stem,
    pub multiplier: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_channels: Option<usize>,
}

impl TierSpace {
    pub fn space(&self) -> SposSpace {
        SposSpace::new(self.multiplier, self.stem).with_last_channels(self.last_channels)
    }
}
