//! MobileNetV2 (Sandler et al. 2018), torchvision layout.

use serde::{Deserialize, Serialize};

use super::blocks::{make_divisible, Act, ConvBn};
use super::net::{Net, Op, ValueId};
use super::{ArchError, Stem};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV2Spec {
    /// Width multiplier (1.0 = the published network).
    pub width: f64,
    /// `small` keeps the first conv at stride 1 for 28-64 px inputs.
    #[serde(default)]
    pub stem: Stem,
    /// Every channel count is rounded to a multiple of this (torchvision's `round_nearest`; 8 in the published
    /// network). With 8, no width goes below 8 channels a layer, so at 32 px MobileNetV2 cannot get under
    /// 0.62 MMACs; 4 lets it reach a smaller budget. Absent in JSON means 8, so existing specs read unchanged.
    #[serde(
        default = "published_rounding",
        skip_serializing_if = "is_published_rounding"
    )]
    pub round_to: usize,
}

/// torchvision's `round_nearest`.
pub const PUBLISHED_ROUNDING: usize = 8;

fn published_rounding() -> usize {
    PUBLISHED_ROUNDING
}

fn is_published_rounding(r: &usize) -> bool {
    *r == PUBLISHED_ROUNDING
}

/// (expansion t, output channels c, repeats n, first stride s) per stage.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

impl MobileNetV2Spec {
    /// The published layout at `width`, channels rounded to multiples of 8.
    pub fn new(width: f64, stem: Stem) -> Self {
        Self {
            width,
            stem,
            round_to: PUBLISHED_ROUNDING,
        }
    }

    /// The same network with channels rounded to multiples of `round_to`.
    pub fn rounded_to(self, round_to: usize) -> Self {
        Self { round_to, ..self }
    }

    pub fn lower_features(
        &self,
        net: &mut Net,
        x: ValueId,
        in_ch: usize,
    ) -> Result<(ValueId, usize), ArchError> {
        if !self.width.is_finite() || self.width <= 0.0 {
            return Err(ArchError::Invalid(format!(
                "MobileNetV2 width {} must be > 0",
                self.width
            )));
        }
        if self.round_to == 0 {
            return Err(ArchError::Invalid(
                "MobileNetV2 channel rounding must be at least 1".into(),
            ));
        }
        let round = self.round_to;
        let stem_ch = make_divisible(32.0 * self.width, round);
        let stem_stride = match self.stem {
            Stem::Imagenet => 2,
            Stem::Small => 1,
        };
        let mut x = ConvBn::new(in_ch, stem_ch, 3, stem_stride, Act::Relu6).push(net, x, "stem");
        let mut cin = stem_ch;
        let mut index = 0;
        for (t, c, n, s) in SETTINGS {
            let cout = make_divisible(c as f64 * self.width, round);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let name = format!("features.{index}");
                let hidden = cin * t;
                let mut h = x;
                if t != 1 {
                    h = ConvBn::new(cin, hidden, 1, 1, Act::Relu6).push(
                        net,
                        h,
                        &format!("{name}.expand"),
                    );
                }
                h = ConvBn::depthwise(hidden, 3, stride, Act::Relu6).push(
                    net,
                    h,
                    &format!("{name}.dw"),
                );
                h = ConvBn::new(hidden, cout, 1, 1, Act::None).push(
                    net,
                    h,
                    &format!("{name}.project"),
                );
                x = if stride == 1 && cin == cout {
                    net.push(Op::Add, &[h, x])
                } else {
                    h
                };
                cin = cout;
                index += 1;
            }
        }
        let last = make_divisible(1280.0 * self.width.max(1.0), round);
        let x = ConvBn::new(cin, last, 1, 1, Act::Relu6).push(net, x, "last");
        Ok((x, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Backbone, ModelSpec};

    fn spec(m: MobileNetV2Spec) -> ModelSpec {
        ModelSpec::new(Backbone::Mobilenetv2(m), 32, 128)
    }

    fn mmacs(m: MobileNetV2Spec) -> f64 {
        crate::flops::count(&spec(m).lower().unwrap())
            .unwrap()
            .mmacs()
    }

    #[test]
    fn published_rounding_is_absent_from_json_and_read_back_as_eight() {
        let published = MobileNetV2Spec::new(0.4, Stem::Imagenet);
        let text = serde_json::to_string(&published).unwrap();
        assert!(!text.contains("round_to"), "{text}");
        let old: MobileNetV2Spec =
            serde_json::from_str(r#"{"width": 0.4, "stem": "imagenet"}"#).unwrap();
        assert_eq!(old, published);
        let finer = published.clone().rounded_to(4);
        let text = serde_json::to_string(&finer).unwrap();
        assert_eq!(
            serde_json::from_str::<MobileNetV2Spec>(&text).unwrap(),
            finer
        );
    }

    #[test]
    fn finer_rounding_goes_below_the_eight_channel_floor() {
        let floor = MobileNetV2Spec::new(0.05, Stem::Imagenet);
        // The published rounding floors every layer at 8 channels: narrower widths stop saving MACs.
        assert!(
            (mmacs(floor.clone()) - mmacs(MobileNetV2Spec::new(0.1, Stem::Imagenet))).abs() < 0.1
        );
        let finer = floor.clone().rounded_to(4);
        assert!(mmacs(finer.clone()) < 0.6 * mmacs(floor));
        let net = spec(finer).lower().unwrap();
        let shapes = net.shapes().unwrap();
        assert!(
            shapes
                .iter()
                .any(|s| matches!(s, crate::arch::Shape::Chw(c, _, _) if *c % 8 != 0)),
            "some layer is narrower than a multiple of 8"
        );
        // Wide layers are unaffected where 8 already divides them: the published x1.0 is the same network.
        assert_eq!(
            mmacs(MobileNetV2Spec::new(1.0, Stem::Imagenet).rounded_to(4)),
            mmacs(MobileNetV2Spec::new(1.0, Stem::Imagenet))
        );
    }

    #[test]
    fn zero_rounding_is_an_error() {
        let bad = MobileNetV2Spec::new(0.5, Stem::Small).rounded_to(0);
        assert!(spec(bad).lower().is_err());
    }
}
