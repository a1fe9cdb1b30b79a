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
        let stem_ch = make_divisible(32.0 * self.width, 8);
        let stem_stride = match self.stem {
            Stem::Imagenet => 2,
            Stem::Small => 1,
        };
        let mut x = ConvBn::new(in_ch, stem_ch, 3, stem_stride, Act::Relu6).push(net, x, "stem");
        let mut cin = stem_ch;
        let mut index = 0;
        for (t, c, n, s) in SETTINGS {
            let cout = make_divisible(c as f64 * self.width, 8);
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
        let last = make_divisible(1280.0 * self.width.max(1.0), 8);
        let x = ConvBn::new(cin, last, 1, 1, Act::Relu6).push(net, x, "last");
        Ok((x, last))
    }
}
