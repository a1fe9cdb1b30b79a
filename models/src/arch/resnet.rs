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
    /// Channel counts of the inner layers of every residual block, in block order: `[unit1, unit2]` for
    /// bottlenecks, `[unit1]` for basic blocks (their second layer feeds the residual sum, so it keeps the stage
    /// width). `None` = the widths the depth and `width` give. Structured pruning writes these
    /// (`crate::prune`): a pruned ResNet is a real, smaller network, not a mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner: Option<Vec<Vec<usize>>>,
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
            inner: None,
        }
    }

    /// Blocks in the whole network.
    pub fn block_count(&self) -> Result<usize, ArchError> {
        Ok(self.layout()?.0.iter().sum())
    }

    /// The unpruned inner channel counts of every block (what `inner: None` means).
    pub fn default_inner(&self) -> Result<Vec<Vec<usize>>, ArchError> {
        let (blocks, bottleneck) = self.layout()?;
        Ok(blocks
            .iter()
            .enumerate()
            .flat_map(|(stage, &n)| {
                let mid = self.ch(64 << stage);
                std::iter::repeat_n(
                    if bottleneck {
                        vec![mid, mid]
                    } else {
                        vec![mid]
                    },
                    n,
                )
            })
            .collect())
    }

    /// The inner channel counts in use, checked against the layout.
    pub fn inner_channels(&self) -> Result<Vec<Vec<usize>>, ArchError> {
        let Some(inner) = &self.inner else {
            return self.default_inner();
        };
        let (_, bottleneck) = self.layout()?;
        let per_block = if bottleneck { 2 } else { 1 };
        let blocks = self.block_count()?;
        if inner.len() != blocks {
            return Err(ArchError::Invalid(format!(
                "ResNet-{} has {blocks} blocks, inner channels are given for {}",
                self.depth,
                inner.len()
            )));
        }
        if let Some((i, b)) = inner
            .iter()
            .enumerate()
            .find(|(_, b)| b.len() != per_block || b.contains(&0))
        {
            return Err(ArchError::Invalid(format!(
                "ResNet block {i}: inner channels {b:?}, need {per_block} counts > 0"
            )));
        }
        Ok(inner.clone())
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
        let inner = self.inner_channels()?;
        let mut block_index = 0;
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
                let widths = &inner[block_index];
                block_index += 1;
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
                    let (m1, m2) = (widths[0], widths[1]);
                    let h = ConvBn::new(cin, m1, 1, 1, Act::Relu).push(
                        net,
                        x,
                        &format!("{name}.unit1"),
                    );
                    let h = ConvBn::new(m1, m2, 3, stride, Act::Relu).push(
                        net,
                        h,
                        &format!("{name}.unit2"),
                    );
                    ConvBn::new(m2, cout, 1, 1, Act::None).push(net, h, &format!("{name}.unit3"))
                } else {
                    let h = ConvBn::new(cin, widths[0], 3, stride, Act::Relu).push(
                        net,
                        x,
                        &format!("{name}.unit1"),
                    );
                    ConvBn::new(widths[0], cout, 3, 1, Act::None).push(
                        net,
                        h,
                        &format!("{name}.unit2"),
                    )
                };
                let sum = net.push(Op::Add, &[body, shortcut]);
                x = net.push(Op::Relu, &[sum]);
                cin = cout;
            }
        }
        Ok((x, cin))
    }
}
