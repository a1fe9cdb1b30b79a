//! The Single Path One-Shot (SPOS) search space used by CMP-NAS: ShuffleNetV2-based, 20 choice layers in stages
//! of [4, 4, 8, 4], four block choices and ten width choices per layer.

use serde::{Deserialize, Serialize};

use super::blocks::{make_divisible, Act, ConvBn};
use super::net::{Net, ValueId};
use super::shufflenetv2::ShuffleUnit;
use super::{ArchError, Stem};

pub const LAYERS: usize = 20;
pub const STAGE_REPEATS: [usize; 4] = [4, 4, 8, 4];
/// ShuffleNet unit with depthwise 3x3, 5x5, 7x7, and the Xception-style unit.
pub const BLOCK_CHOICES: usize = 4;
/// Width scales 0.2, 0.4, ..., 2.0 of a unit's default mid channels (`index + 1) / 5`).
pub const WIDTH_CHOICES: usize = 10;
/// The width index of scale 1.0.
pub const DEFAULT_WIDTH: u8 = 4;
/// The architecture the SPOS paper reports (block choices only, default widths): ~323 MMACs at 224 px.
pub const REFERENCE_BLOCKS: [u8; LAYERS] =
    [2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3];

const STEM_CHANNELS: usize = 16;
const STAGE_CHANNELS: [usize; 4] = [64, 160, 320, 640];
const LAST_CHANNELS: usize = 1024;

/// The search space: a channel multiplier for every width (the paper's 1.0 / 0.75 / 0.5 FLOPs tiers) and the stem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SposSpace {
    #[serde(default = "one")]
    pub multiplier: f64,
    #[serde(default)]
    pub stem: Stem,
    /// Whether the stem's 16 channels shrink with a multiplier below 1. By default they do not (beyond what
    /// the first stage needs, see [`SposSpace::stem_channels`]): SPOS's and ShuffleNetV2+'s published sizes all
    /// keep a 16-channel stem (ShuffleNetV2 keeps 24 at every width), and a scaled one (8 channels at 0.5, 4 at
    /// 0.25) starves every later layer to save a few thousand MACs. Specs written before this field existed
    /// scaled it, so a missing field reads as `true`.
    #[serde(default = "yes")]
    pub scaled_stem: bool,
    /// Channels of the last 1x1 conv, the features the embedding is a linear map of. `None` scales SPOS's
    /// 1024 with the multiplier (256 at x0.25, 104 at x0.1), as the paper's tiers do; a fixed width is the
    /// MobileNetV2 convention (1280 at every width below 1), which spends a compact model's MACs on the
    /// features a compatible embedding has to be mapped from rather than on the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_channels: Option<usize>,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl Default for SposSpace {
    fn default() -> Self {
        Self::new(1.0, Stem::Imagenet)
    }
}

/// Shape of one choice layer, fixed by the space; the choices only change what happens inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChoiceLayer {
    pub cin: usize,
    pub cout: usize,
    pub stride: usize,
    /// Mid channels at scale 1.0; the widest choice (2.0) has twice as many.
    pub base_mid: usize,
}

impl ChoiceLayer {
    /// Mid channels for width index `w` (scale `(w + 1) / 5`), exact in integers.
    pub fn mid(&self, w: u8) -> usize {
        (self.base_mid * (w as usize + 1) / 5).max(1)
    }

    pub fn max_mid(&self) -> usize {
        self.mid(WIDTH_CHOICES as u8 - 1)
    }
}

impl SposSpace {
    /// A space at `multiplier` with the default (unscaled) stem.
    pub fn new(multiplier: f64, stem: Stem) -> Self {
        Self {
            multiplier,
            stem,
            scaled_stem: false,
            last_channels: None,
        }
    }

    /// The same space with a last layer of `channels` (`None`: scaled with the multiplier).
    pub fn with_last_channels(self, channels: Option<usize>) -> Self {
        Self {
            last_channels: channels,
            ..self
        }
    }

    fn ch(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.multiplier, 4)
    }

    /// 16 x multiplier for legacy specs; otherwise 16, but at most half the first stage's channels, because the
    /// first unit's main branch makes the stage's channels minus the stem's (the other part is the projection
    /// branch): x0.25 (16-channel first stage) gets an 8-channel stem, as ShuffleNetV2 0.5x's 24 -> 48.
    pub fn stem_channels(&self) -> usize {
        let scaled = self.ch(STEM_CHANNELS);
        if self.scaled_stem {
            scaled
        } else {
            scaled.max(STEM_CHANNELS.min(self.ch(STAGE_CHANNELS[0]) / 2))
        }
    }

    pub fn last_channels(&self) -> usize {
        self.last_channels.unwrap_or_else(|| self.ch(LAST_CHANNELS))
    }

    pub fn stem_stride(&self) -> usize {
        match self.stem {
            Stem::Imagenet => 2,
            Stem::Small => 1,
        }
    }

    /// The 20 choice layers in order.
    pub fn layers(&self) -> Vec<ChoiceLayer> {
        let mut cin = self.stem_channels();
        let mut out = Vec::with_capacity(LAYERS);
        for (stage, &n) in STAGE_REPEATS.iter().enumerate() {
            let cout = self.ch(STAGE_CHANNELS[stage]);
            for i in 0..n {
                out.push(ChoiceLayer {
                    cin,
                    cout,
                    stride: if i == 0 { 2 } else { 1 },
                    base_mid: cout / 2,
                });
                cin = cout;
            }
        }
        out
    }

    pub fn validate(&self) -> Result<(), ArchError> {
        if !(self.multiplier > 0.0 && self.multiplier <= 4.0) {
            return Err(ArchError::Invalid(format!(
                "SPOS multiplier {} outside (0, 4]",
                self.multiplier
            )));
        }
        if self.last_channels == Some(0) {
            return Err(ArchError::Invalid("SPOS last layer of 0 channels".into()));
        }
        let first = self.ch(STAGE_CHANNELS[0]);
        if self.stem_channels() >= first {
            return Err(ArchError::Invalid(format!(
                "SPOS stem of {} channels leaves no room in the first stage's {first}",
                self.stem_channels()
            )));
        }
        Ok(())
    }
}

/// One concrete network of the space: a block and a width choice per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SposSpec {
    #[serde(default)]
    pub space: SposSpace,
    /// Block choice per layer, 0..4.
    pub blocks: Vec<u8>,
    /// Width choice per layer, 0..10 (4 = scale 1.0). Empty means all default.
    #[serde(default)]
    pub widths: Vec<u8>,
}

impl SposSpec {
    pub fn reference() -> Self {
        Self::reference_in(SposSpace::default())
    }

    /// The reference block choices at default widths, in a given space.
    pub fn reference_in(space: SposSpace) -> Self {
        Self {
            space,
            blocks: REFERENCE_BLOCKS.to_vec(),
            widths: vec![DEFAULT_WIDTH; LAYERS],
        }
    }

    pub fn width(&self, layer: usize) -> u8 {
        self.widths.get(layer).copied().unwrap_or(DEFAULT_WIDTH)
    }

    /// The same network with every width choice at the smallest index that gives its layer the same mid
    /// channels. In a narrow space two choices can round to one width (x0.1: the first stage's 4 mid channels
    /// at scale 0.2 and 0.4 are both 1), so two choice vectors can be one network; a search compares canonical
    /// forms so that it does not evaluate one network twice.
    pub fn canonical(&self) -> SposSpec {
        let widths = self
            .space
            .layers()
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mid = layer.mid(self.width(i));
                (0..WIDTH_CHOICES as u8)
                    .find(|&w| layer.mid(w) == mid)
                    .unwrap_or(self.width(i))
            })
            .collect();
        SposSpec {
            space: self.space.clone(),
            blocks: self.blocks.clone(),
            widths,
        }
    }

    pub fn validate(&self) -> Result<(), ArchError> {
        self.space.validate()?;
        if self.blocks.len() != LAYERS {
            return Err(ArchError::Invalid(format!(
                "SPOS needs {LAYERS} block choices, got {}",
                self.blocks.len()
            )));
        }
        if !self.widths.is_empty() && self.widths.len() != LAYERS {
            return Err(ArchError::Invalid(format!(
                "SPOS needs {LAYERS} width choices (or none), got {}",
                self.widths.len()
            )));
        }
        if let Some(b) = self.blocks.iter().find(|&&b| b as usize >= BLOCK_CHOICES) {
            return Err(ArchError::Invalid(format!(
                "SPOS block choice {b} outside 0..{BLOCK_CHOICES}"
            )));
        }
        if let Some(w) = self.widths.iter().find(|&&w| w as usize >= WIDTH_CHOICES) {
            return Err(ArchError::Invalid(format!(
                "SPOS width choice {w} outside 0..{WIDTH_CHOICES}"
            )));
        }
        Ok(())
    }

    /// Layer names are `features.{layer}.b{block}` (see [`unit_name`]); the super-network holds every block of
    /// every layer under the same names at the widest width, so a child inherits its weights by name and slices
    /// them to its widths.
    pub fn lower_features(
        &self,
        net: &mut Net,
        x: ValueId,
        in_ch: usize,
    ) -> Result<(ValueId, usize), ArchError> {
        self.lower_features_bn(net, x, in_ch, true)
    }

    /// As [`Self::lower_features`], with the choice layers' BN affine or not (the super-network's is not).
    pub fn lower_features_bn(
        &self,
        net: &mut Net,
        x: ValueId,
        in_ch: usize,
        affine: bool,
    ) -> Result<(ValueId, usize), ArchError> {
        self.validate()?;
        let space = &self.space;
        let mut x = space.stem(net, x, in_ch);
        for (i, layer) in space.layers().iter().enumerate() {
            let block = self.blocks[i];
            x = choice_unit(layer, block, self.width(i), affine).push_sharing(
                net,
                x,
                &unit_name(i, block),
                &proj_name(i),
            );
        }
        Ok(space.last(net, x))
    }
}

/// The name of layer `layer`'s stride-2 projection branch, shared by its four blocks (each uses the centre of its
/// kernel size): a block choice at a stride-2 layer then changes only half of the representation, as at stride 1,
/// which is what lets a weight-sharing super-network train its single-path children at small budgets.
pub fn proj_name(layer: usize) -> String {
    format!("features.{layer}.proj")
}

/// The name of layer `layer`'s unit for a block choice.
pub fn unit_name(layer: usize, block: u8) -> String {
    format!("features.{layer}.b{block}")
}

impl SposSpace {
    fn stem(&self, net: &mut Net, x: ValueId, in_ch: usize) -> ValueId {
        ConvBn::new(
            in_ch,
            self.stem_channels(),
            3,
            self.stem_stride(),
            Act::Relu,
        )
        .push(net, x, "stem")
    }

    fn last(&self, net: &mut Net, x: ValueId) -> (ValueId, usize) {
        let cin = self
            .layers()
            .last()
            .map_or(self.stem_channels(), |l| l.cout);
        let last = self.last_channels();
        (
            ConvBn::new(cin, last, 1, 1, Act::Relu).push(net, x, "last"),
            last,
        )
    }

    /// The super-network's warm-up form: every layer runs all four blocks at the widest width (non-affine BN)
    /// and averages their outputs. Its tensors are the whole super-network.
    pub fn lower_warmup_features(
        &self,
        net: &mut Net,
        x: ValueId,
        in_ch: usize,
    ) -> Result<(ValueId, usize), ArchError> {
        let all = MixedLayer {
            blocks: (0..BLOCK_CHOICES as u8).collect(),
            width: WIDTH_CHOICES as u8 - 1,
        };
        self.lower_mixture_features(net, x, in_ch, &vec![all; LAYERS])
    }

    /// A super-network path that averages several blocks per layer (non-affine BN): the warm-up form and the
    /// single-path children are its two ends, and the transition between them passes through the rest.
    pub fn lower_mixture_features(
        &self,
        net: &mut Net,
        x: ValueId,
        in_ch: usize,
        layers: &[MixedLayer],
    ) -> Result<(ValueId, usize), ArchError> {
        self.validate()?;
        if layers.len() != LAYERS {
            return Err(ArchError::Invalid(format!(
                "a SPOS mixture needs {LAYERS} layers, got {}",
                layers.len()
            )));
        }
        let mut x = self.stem(net, x, in_ch);
        for (i, (layer, mix)) in self.layers().iter().zip(layers).enumerate() {
            if mix.blocks.is_empty()
                || mix.width as usize >= WIDTH_CHOICES
                || mix.blocks.iter().any(|&b| b as usize >= BLOCK_CHOICES)
            {
                return Err(ArchError::Invalid(format!(
                    "SPOS mixture layer {i}: blocks {:?} at width {} outside the space",
                    mix.blocks, mix.width
                )));
            }
            // The bypass half is shared by the blocks (identity at stride 1, the layer's projection branch at
            // stride 2, run once with the largest kernel among them), so averaging the units averages only
            // their main branches.
            let widest = mix
                .blocks
                .iter()
                .copied()
                .max_by_key(|&b| choice_unit(layer, b, mix.width, false).kernel)
                .unwrap_or(0);
            let left =
                choice_unit(layer, widest, mix.width, false).push_left(net, x, &proj_name(i));
            let mains: Vec<ValueId> = mix
                .blocks
                .iter()
                .map(|&b| {
                    choice_unit(layer, b, mix.width, false).push_main(net, x, &unit_name(i, b))
                })
                .collect();
            let main = match mains.as_slice() {
                [one] => *one,
                _ => net.push(super::net::Op::Mean, &mains),
            };
            x = ShuffleUnit::join(net, left, main);
        }
        Ok(self.last(net, x))
    }
}

/// One layer of a super-network mixture: the blocks whose outputs are averaged, all at one width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixedLayer {
    pub blocks: Vec<u8>,
    pub width: u8,
}

/// The unit a choice layer becomes for a block and width choice.
pub fn choice_unit(layer: &ChoiceLayer, block: u8, width: u8, affine: bool) -> ShuffleUnit {
    ShuffleUnit {
        cin: layer.cin,
        cout: layer.cout,
        mid: layer.mid(width),
        kernel: [3, 5, 7, 3][block as usize],
        stride: layer.stride,
        xception: block == 3,
        affine,
        proj_out: layer.cin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_widths_merge_only_choices_that_give_a_layer_the_same_channels() {
        let spec = |space: &SposSpace, widths: Vec<u8>| SposSpec {
            space: space.clone(),
            blocks: REFERENCE_BLOCKS.to_vec(),
            widths,
        };
        // x0.1: the first stage's units have 4 mid channels at scale 1.0, so scales 0.2 and 0.4 both give 1
        // channel and 1.0 and 1.2 both give 4.
        let narrow = SposSpace::new(0.1, Stem::Small);
        let layer = narrow.layers()[3];
        assert_eq!(
            (layer.mid(0), layer.mid(1), layer.mid(4), layer.mid(5)),
            (1, 1, 4, 4)
        );
        let mut widths = vec![DEFAULT_WIDTH; LAYERS];
        widths[3] = 1;
        widths[2] = 5;
        let a = spec(&narrow, widths.clone());
        let c = a.canonical();
        assert_eq!((c.widths[3], c.widths[2]), (0, 4));
        assert_eq!(c.canonical(), c, "canonical is a fixed point");
        let macs = |s: &SposSpec| {
            let spec = crate::arch::ModelSpec::new(crate::arch::Backbone::Spos(s.clone()), 32, 16);
            crate::flops::count(&spec.lower().unwrap()).unwrap().macs
        };
        assert_eq!(macs(&a), macs(&c), "the same network");
        // A layer whose widths all differ keeps its choice, and so does every layer of the full space.
        widths[12] = 1;
        assert_eq!(spec(&narrow, widths.clone()).canonical().widths[12], 1);
        let full = SposSpace::default();
        for w in 0..WIDTH_CHOICES as u8 {
            let s = spec(&full, vec![w; LAYERS]);
            assert_eq!(
                s.canonical(),
                SposSpec {
                    widths: vec![w; LAYERS],
                    ..s.clone()
                }
            );
        }
    }

    #[test]
    fn the_stem_keeps_up_to_16_channels_below_multiplier_one_unless_a_legacy_spec_scales_it() {
        for (m, stem) in [(0.25, 8), (0.35, 12), (0.5, 16), (0.75, 16), (1.0, 16)] {
            let space = SposSpace::new(m, Stem::Imagenet);
            assert_eq!(space.stem_channels(), stem, "multiplier {m}");
            // The stages still scale, and the first unit's main branch keeps channels.
            let first = space.layers()[0].cout;
            assert_eq!(first, make_divisible(64.0 * m, 4));
            assert!(first > stem && space.validate().is_ok());
        }
        assert_eq!(SposSpace::new(2.0, Stem::Imagenet).stem_channels(), 32);
        // A spec written before `scaled_stem` existed keeps the architecture its weights were trained with.
        let legacy: SposSpace =
            serde_json::from_str(r#"{"multiplier": 0.5, "stem": "imagenet"}"#).unwrap();
        assert!(legacy.scaled_stem);
        assert_eq!(legacy.stem_channels(), 8);
        let now: SposSpace = serde_json::from_str(
            &serde_json::to_string(&SposSpace::new(0.5, Stem::Imagenet)).unwrap(),
        )
        .unwrap();
        assert_eq!(now.stem_channels(), 16);
    }

    #[test]
    fn the_last_layer_scales_with_the_multiplier_unless_the_space_fixes_it() {
        let scaled = SposSpace::new(0.25, Stem::Small);
        assert_eq!(scaled.last_channels(), 256);
        let fixed = scaled.clone().with_last_channels(Some(1024));
        assert_eq!(fixed.last_channels(), 1024);
        // The lowered network's last conv makes that many features, and the FLOPs counter sees their cost:
        // at 32 px the last layer sees 2 x 2 pixels of 160 channels, then the embedding maps them to 128.
        let mmacs = |space: SposSpace| {
            let spec = crate::arch::ModelSpec::new(
                crate::arch::Backbone::Spos(SposSpec::reference_in(space)),
                32,
                128,
            );
            crate::flops::count(&spec.lower().unwrap()).unwrap().mmacs()
        };
        let extra = (160.0 * 4.0 + 128.0) * (1024.0 - 256.0) / 1e6;
        assert!((mmacs(fixed.clone()) - mmacs(scaled.clone()) - extra).abs() < 1e-9);
        // A spec without the field (every spec written before it) keeps the scaled width, and a scaled
        // space writes no field, so existing specs and their hashes are unchanged.
        let json = serde_json::to_string(&scaled).unwrap();
        assert!(!json.contains("last_channels"), "{json}");
        let back: SposSpace = serde_json::from_str(&json).unwrap();
        assert_eq!(back, scaled);
        let back: SposSpace =
            serde_json::from_str(&serde_json::to_string(&fixed).unwrap()).unwrap();
        assert_eq!(back.last_channels(), 1024);
        assert!(SposSpace::new(0.25, Stem::Small)
            .with_last_channels(Some(0))
            .validate()
            .is_err());
    }
}
