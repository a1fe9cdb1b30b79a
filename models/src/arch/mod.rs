//! Architecture specs (JSON-serialisable) and their lowering to the one layer graph, [`Net`].

pub mod blocks;
pub mod mobilenetv2;
pub mod net;
pub mod resnet;
pub mod shufflenetv2;
pub mod spos;

use serde::{Deserialize, Serialize};

pub use mobilenetv2::MobileNetV2Spec;
pub use net::{Net, NetError, Op, ParamShape, Shape, ValueId, BN_EPS, INPUT};
pub use resnet::ResNetSpec;
pub use shufflenetv2::{ShuffleNetV2Spec, ShuffleWidth};
pub use spos::{SposSpace, SposSpec};

#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("invalid architecture: {0}")]
    Invalid(String),
    #[error("unknown architecture {name:?}; built-in: {}", BUILTIN_NAMES.join(", "))]
    Unknown { name: String },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot read architecture spec {path}: {message}")]
    Read { path: String, message: String },
}

/// First layers: ImageNet's (7x7/2 conv + max-pool for ResNet, stride-2 conv elsewhere) or a small-input stem
/// (3x3/1, no pooling) that keeps resolution for 28-64 px images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    #[default]
    Imagenet,
    Small,
}

/// The feature extractor of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Backbone {
    Resnet(ResNetSpec),
    Mobilenetv2(MobileNetV2Spec),
    Shufflenetv2(ShuffleNetV2Spec),
    Spos(SposSpec),
}

pub const BUILTIN_NAMES: [&str; 11] = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "mobilenetv2",
    "shufflenetv2",
    "shufflenetv2-0.5x",
    "shufflenetv2-1.5x",
    "shufflenetv2-2.0x",
    "spos-ref",
];

impl Backbone {
    /// The published networks by name, at ImageNet settings.
    pub fn builtin(name: &str) -> Result<Self, ArchError> {
        let shuffle = |width| {
            Backbone::Shufflenetv2(ShuffleNetV2Spec {
                width,
                stem: Stem::Imagenet,
            })
        };
        Ok(match name {
            "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152" => Backbone::Resnet(
                ResNetSpec::new(name["resnet".len()..].parse().expect("listed depth")),
            ),
            "mobilenetv2" => Backbone::Mobilenetv2(MobileNetV2Spec::new(1.0, Stem::Imagenet)),
            "shufflenetv2" | "shufflenetv2-1.0x" => shuffle(ShuffleWidth::X1_0),
            "shufflenetv2-0.5x" => shuffle(ShuffleWidth::X0_5),
            "shufflenetv2-1.5x" => shuffle(ShuffleWidth::X1_5),
            "shufflenetv2-2.0x" => shuffle(ShuffleWidth::X2_0),
            "spos-ref" => Backbone::Spos(SposSpec::reference()),
            other => {
                return Err(ArchError::Unknown {
                    name: other.to_owned(),
                })
            }
        })
    }

    pub fn family(&self) -> &'static str {
        match self {
            Backbone::Resnet(_) => "resnet",
            Backbone::Mobilenetv2(_) => "mobilenetv2",
            Backbone::Shufflenetv2(_) => "shufflenetv2",
            Backbone::Spos(_) => "spos",
        }
    }

    /// Sets the stem variant (all families have one).
    pub fn with_stem(mut self, stem: Stem) -> Self {
        match &mut self {
            Backbone::Resnet(s) => s.stem = stem,
            Backbone::Mobilenetv2(s) => s.stem = stem,
            Backbone::Shufflenetv2(s) => s.stem = stem,
            Backbone::Spos(s) => s.space.stem = stem,
        }
        self
    }

    fn lower_features(&self, net: &mut Net, in_ch: usize) -> Result<(ValueId, usize), ArchError> {
        match self {
            Backbone::Resnet(s) => s.lower_features(net, INPUT, in_ch),
            Backbone::Mobilenetv2(s) => s.lower_features(net, INPUT, in_ch),
            Backbone::Shufflenetv2(s) => s.lower_features(net, INPUT, in_ch),
            Backbone::Spos(s) => s.lower_features(net, INPUT, in_ch),
        }
    }
}

/// Image input of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Square side in pixels.
    pub size: usize,
    /// 3 for RGB (what preprocessing produces), 1 for grayscale.
    pub channels: usize,
}

/// A complete embedding network: backbone, input, and the embedding head
/// (global average pool -> linear -> optional BN -> L2 normalisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub backbone: Backbone,
    pub input: InputSpec,
    pub embedding_dim: usize,
    #[serde(default = "yes")]
    pub embedding_bn: bool,
}

fn yes() -> bool {
    true
}

/// Layer names of the embedding head.
pub const EMBED_FC: &str = "embed.fc";
pub const EMBED_BN: &str = "embed.bn";
pub const CLASSIFIER: &str = "classifier";

impl ModelSpec {
    pub fn new(backbone: Backbone, input_size: usize, embedding_dim: usize) -> Self {
        Self {
            backbone,
            input: InputSpec {
                size: input_size,
                channels: 3,
            },
            embedding_dim,
            embedding_bn: true,
        }
    }

    /// Reads a spec from JSON: a full `ModelSpec`, or just a `Backbone` (then `input` and `dim` fill the rest).
    pub fn from_json(
        text: &str,
        input_size: usize,
        embedding_dim: usize,
    ) -> Result<Self, serde_json::Error> {
        match serde_json::from_str::<ModelSpec>(text) {
            Ok(s) => Ok(s),
            Err(full) => serde_json::from_str::<Backbone>(text)
                .map(|b| Self::new(b, input_size, embedding_dim))
                .map_err(|_| full),
        }
    }

    fn input_shape(&self) -> Shape {
        Shape::Chw(self.input.channels, self.input.size, self.input.size)
    }

    fn check(&self, net: Net) -> Result<Net, ArchError> {
        if self.input.size == 0 || self.input.channels == 0 || self.embedding_dim == 0 {
            return Err(ArchError::Invalid(format!(
                "empty input or embedding: {:?}",
                self.input
            )));
        }
        let shapes = net.shapes()?;
        // Every feature map must keep at least one pixel; a too-small input collapses to 0 x 0.
        if let Some(Shape::Chw(_, 0, _) | Shape::Chw(_, _, 0)) =
            shapes.iter().find(|s| s.numel() == 0)
        {
            return Err(ArchError::Invalid(format!(
                "input {} px is too small for {}",
                self.input.size,
                self.backbone.family()
            )));
        }
        Ok(net)
    }

    /// The embedding network: features -> pool -> linear -> [BN] -> L2 normalise. The value before the final
    /// normalisation is the raw embedding the trainer's classifier heads read.
    pub fn lower(&self) -> Result<Net, ArchError> {
        self.lower_with(|net, in_ch| self.backbone.lower_features(net, in_ch))
    }

    /// The embedding network over features built by `features` (the super-network's warm-up form, or a child
    /// with non-affine BN) instead of the backbone's own.
    pub fn lower_with(
        &self,
        features: impl FnOnce(&mut Net, usize) -> Result<(ValueId, usize), ArchError>,
    ) -> Result<Net, ArchError> {
        let mut net = Net::new(self.input_shape());
        let (x, c) = features(&mut net, self.input.channels)?;
        let pooled = net.push(Op::GlobalAvgPool, &[x]);
        let mut e = net.push(
            Op::Linear {
                name: EMBED_FC.into(),
                cin: c,
                cout: self.embedding_dim,
                bias: !self.embedding_bn,
            },
            &[pooled],
        );
        if self.embedding_bn {
            e = net.push(
                Op::BatchNorm {
                    name: EMBED_BN.into(),
                    channels: self.embedding_dim,
                    affine: true,
                },
                &[e],
            );
        }
        net.push(Op::L2Normalize, &[e]);
        self.check(net)
    }

    /// The network with a plain `classes`-way classifier instead of the embedding head: the form in which the
    /// published FLOPs figures are quoted.
    pub fn lower_classifier(&self, classes: usize) -> Result<Net, ArchError> {
        let mut net = Net::new(self.input_shape());
        let (x, c) = self
            .backbone
            .lower_features(&mut net, self.input.channels)?;
        let pooled = net.push(Op::GlobalAvgPool, &[x]);
        net.push(
            Op::Linear {
                name: CLASSIFIER.into(),
                cin: c,
                cout: classes,
                bias: true,
            },
            &[pooled],
        );
        self.check(net)
    }
}
