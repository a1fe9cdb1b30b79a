//! ResNet (He et al. 2016), torchvision layout (stride on the 3x3 conv of bottlenecks, "v1.5").

use serde::{Deserialize, Serialize};

use super::blocks::{make_divisible, Act, ConvBn};
use super::net::{Net, Op, ValueId};
use super::{ArchError, Stem};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetSpec {
    /// 18, 34, 50, 101 or 152.
    pub depth: usize,
    /// Multiplies every channel count (1.0 = the published networks).
    #[serde(default = "one")]
    pub width: f64,
    #[serde(default)]
    pub stem: Stem,
}

fn one() -> f64 {
    1.0
}

impl ResNetSpec {
    pub fn new(depth: usize) -> Self {
        Self {
            depth,
            width: 1.0,
            stem: Stem::Imagenet,
        }
    }

    /// Blocks per stage and whether the blocks are bottlenecks.
    pub fn layout(&self) -> Result<([usize; 4], bool), ArchError> {
        Ok(match self.depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            50 => ([3, 4, 6, 3], true),
            101 => ([3, 4, 23, 3], true),
            152 => ([3, 8, 36, 3], true),
            d => {
                return Err(ArchError::Invalid(format!(
                    "ResNet depth {d}: use 18, 34, 50, 101 or 152"
                )))
            }
        })
    }

    fn ch(&self, base: usize) -> usize {
        make_divisible(base as f64 * self.width, 8)
    }

    /// Lowers the feature extractor; returns the final feature map and its channel count.
    pub fn lower_features(
        &self,
        net: &mut Net,
        x: ValueId,
        in_ch: usize,
    ) -> Result<(ValueId, usize), ArchError> {
        if !self.width.is_finite() || self.width <= 0.0 {
            return Err(ArchError::Invalid(format!(
                "ResNet width {} must be > 0",
                self.width
            )));
        }
        let (blocks, bottleneck) = self.layout()?;
        let stem_ch = self.ch(64);
        let mut x = match self.stem {
            Stem::Imagenet => {
                let s = ConvBn::new(in_ch, stem_ch, 7, 2, Act::Relu).push(net, x, "stem");
                net.push(
                    Op::MaxPool {
                        kernel: 3,
                        stride: 2,
                        padding: 1,
                    },
                    &[s],
                )
            }
            Stem::Small => ConvBn::new(in_ch, stem_ch, 3, 1, Act::Relu).push(net, x, "stem"),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let mut cin = stem_ch;
        for (stage, &n) in blocks.iter().enumerate() {
            let mid = self.ch(64 << stage);
            let cout = mid * expansion;
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let name = format!("layer{}.{b}", stage + 1);
                let shortcut = if stride != 1 || cin != cout {
                    ConvBn::new(cin, cout, 1, stride, Act::None).push(
                        net,
                        x,
                        &format!("{name}.downsample"),
                    )
                } else {
                    x
                };
                let body = if bottleneck {
                    let h = ConvBn::new(cin, mid, 1, 1, Act::Relu).push(
                        net,
                        x,
                        &format!("{name}.unit1"),
                    );
                    let h = ConvBn::new(mid, mid, 3, stride, Act::Relu).push(
                        net,
                        h,
                        &format!("{name}.unit2"),
                    );
                    ConvBn::new(mid, cout, 1, 1, Act::None).push(net, h, &format!("{name}.unit3"))
                } else {
                    let h = ConvBn::new(cin, mid, 3, stride, Act::Relu).push(
                        net,
                        x,
                        &format!("{name}.unit1"),
                    );
                    ConvBn::new(mid, cout, 3, 1, Act::None).push(net, h, &format!("{name}.unit2"))
                };
                let sum = net.push(Op::Add, &[body, shortcut]);
                x = net.push(Op::Relu, &[sum]);
                cin = cout;
            }
        }
        Ok((x, cin))
    }
}
