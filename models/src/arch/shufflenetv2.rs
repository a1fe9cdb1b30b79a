//! ShuffleNetV2 (Ma et al. 2018), torchvision layout, and the ShuffleNetV2 unit that the SPOS space reuses.

use serde::{Deserialize, Serialize};

use super::blocks::{Act, ConvBn};
use super::net::{Net, Op, ValueId};
use super::{ArchError, Stem};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ShuffleWidth {
    #[serde(rename = "0.5x")]
    X0_5,
    #[serde(rename = "1.0x")]
    X1_0,
    #[serde(rename = "1.5x")]
    X1_5,
    #[serde(rename = "2.0x")]
    X2_0,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShuffleNetV2Spec {
    pub width: ShuffleWidth,
    #[serde(default)]
    pub stem: Stem,
}

const REPEATS: [usize; 3] = [4, 8, 4];

impl ShuffleWidth {
    /// Stem, three stages, last conv.
    fn channels(self) -> [usize; 5] {
        match self {
            ShuffleWidth::X0_5 => [24, 48, 96, 192, 1024],
            ShuffleWidth::X1_0 => [24, 116, 232, 464, 1024],
            ShuffleWidth::X1_5 => [24, 176, 352, 704, 1024],
            ShuffleWidth::X2_0 => [24, 244, 488, 976, 2048],
        }
    }
}

/// The main branch of a ShuffleNet unit: 1x1 -> depthwise kxk (stride) -> 1x1, BN after each, ReLU after the 1x1s.
/// With `xception`, the branch is three (depthwise 3x3 -> 1x1) pairs instead (the SPOS "choice 3" block).
pub struct Branch {
    pub cin: usize,
    pub mid: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub xception: bool,
    pub affine: bool,
}

impl Branch {
    pub fn push(&self, net: &mut Net, x: ValueId, name: &str) -> ValueId {
        let a = self.affine;
        if self.xception {
            let h = ConvBn::depthwise(self.cin, 3, self.stride, Act::None)
                .affine(a)
                .push(net, x, &format!("{name}.dw1"));
            let h = ConvBn::new(self.cin, self.mid, 1, 1, Act::Relu)
                .affine(a)
                .push(net, h, &format!("{name}.pw1"));
            let h = ConvBn::depthwise(self.mid, 3, 1, Act::None).affine(a).push(
                net,
                h,
                &format!("{name}.dw2"),
            );
            let h = ConvBn::new(self.mid, self.mid, 1, 1, Act::Relu)
                .affine(a)
                .push(net, h, &format!("{name}.pw2"));
            let h = ConvBn::depthwise(self.mid, 3, 1, Act::None).affine(a).push(
                net,
                h,
                &format!("{name}.dw3"),
            );
            ConvBn::new(self.mid, self.cout, 1, 1, Act::Relu)
                .affine(a)
                .push(net, h, &format!("{name}.pw3"))
        } else {
            let h = ConvBn::new(self.cin, self.mid, 1, 1, Act::Relu)
                .affine(a)
                .push(net, x, &format!("{name}.pw1"));
            let h = ConvBn::depthwise(self.mid, self.kernel, self.stride, Act::None)
                .affine(a)
                .push(net, h, &format!("{name}.dw"));
            ConvBn::new(self.mid, self.cout, 1, 1, Act::Relu)
                .affine(a)
                .push(net, h, &format!("{name}.pw2"))
        }
    }
}

/// One ShuffleNetV2 unit with `cin` input and `cout` output channels.
///
/// Stride 1 (needs even `cin == cout`): split channels in halves, pass the first through, run the main branch on the
/// second. Stride 2: a projection branch (depthwise kxk stride 2 -> 1x1 to `proj_out` channels) beside the main
/// branch on the whole input. Outputs are concatenated and shuffled in two groups; the main branch makes up the
/// remaining `cout - passthrough` channels.
#[derive(Debug, Clone, Copy)]
pub struct ShuffleUnit {
    pub cin: usize,
    pub cout: usize,
    pub mid: usize,
    pub kernel: usize,
    pub stride: usize,
    pub xception: bool,
    pub affine: bool,
    /// Channels of the stride-2 projection branch: `cout / 2` in ShuffleNetV2, `cin` in SPOS.
    pub proj_out: usize,
}

impl ShuffleUnit {
    pub fn push(&self, net: &mut Net, x: ValueId, name: &str) -> ValueId {
        self.push_sharing(net, x, name, &format!("{name}.proj"))
    }

    /// The unit with its stride-2 projection branch named `proj` (SPOS shares one per layer across blocks).
    pub fn push_sharing(&self, net: &mut Net, x: ValueId, name: &str, proj: &str) -> ValueId {
        let left = self.push_left(net, x, proj);
        let main = self.push_main(net, x, name);
        Self::join(net, left, main)
    }

    /// The half that bypasses the main branch: the first half of the channels at stride 1, the projection branch
    /// (named `proj`) at stride 2.
    pub fn push_left(&self, net: &mut Net, x: ValueId, proj: &str) -> ValueId {
        if self.stride == 1 {
            net.push(
                Op::SliceChannels {
                    start: 0,
                    len: self.cin / 2,
                },
                &[x],
            )
        } else {
            let h = ConvBn::depthwise(self.cin, self.kernel, self.stride, Act::None)
                .affine(self.affine)
                .push(net, x, &format!("{proj}.dw"));
            ConvBn::new(self.cin, self.proj_out, 1, 1, Act::Relu)
                .affine(self.affine)
                .push(net, h, &format!("{proj}.pw"))
        }
    }

    /// The main branch (on the second half of the channels at stride 1, on all of them at stride 2).
    pub fn push_main(&self, net: &mut Net, x: ValueId, name: &str) -> ValueId {
        let (main_in, main_cin, left_ch) = if self.stride == 1 {
            let half = self.cin / 2;
            let right = net.push(
                Op::SliceChannels {
                    start: half,
                    len: self.cin - half,
                },
                &[x],
            );
            (right, self.cin - half, half)
        } else {
            (x, self.cin, self.proj_out)
        };
        let branch = Branch {
            cin: main_cin,
            mid: self.mid,
            cout: self.cout - left_ch,
            kernel: self.kernel,
            stride: self.stride,
            xception: self.xception,
            affine: self.affine,
        };
        branch.push(net, main_in, &format!("{name}.main"))
    }

    /// Concatenates the two halves and shuffles the channels.
    pub fn join(net: &mut Net, left: ValueId, main: ValueId) -> ValueId {
        let cat = net.push(Op::Concat, &[left, main]);
        net.push(Op::ChannelShuffle { groups: 2 }, &[cat])
    }
}

impl ShuffleNetV2Spec {
    pub fn lower_features(
        &self,
        net: &mut Net,
        x: ValueId,
        in_ch: usize,
    ) -> Result<(ValueId, usize), ArchError> {
        let ch = self.width.channels();
        let mut x = match self.stem {
            Stem::Imagenet => {
                let s = ConvBn::new(in_ch, ch[0], 3, 2, Act::Relu).push(net, x, "stem");
                net.push(
                    Op::MaxPool {
                        kernel: 3,
                        stride: 2,
                        padding: 1,
                    },
                    &[s],
                )
            }
            Stem::Small => ConvBn::new(in_ch, ch[0], 3, 1, Act::Relu).push(net, x, "stem"),
        };
        let mut cin = ch[0];
        for (stage, &n) in REPEATS.iter().enumerate() {
            let cout = ch[stage + 1];
            for i in 0..n {
                let stride = if i == 0 { 2 } else { 1 };
                let name = format!("stage{}.{i}", stage + 2);
                // torchvision: both branches are half the unit's output wide.
                let unit = ShuffleUnit {
                    cin,
                    cout,
                    mid: cout / 2,
                    kernel: 3,
                    stride,
                    xception: false,
                    affine: true,
                    proj_out: cout / 2,
                };
                x = unit.push(net, x, &name);
                cin = cout;
            }
        }
        let x = ConvBn::new(cin, ch[4], 1, 1, Act::Relu).push(net, x, "last");
        Ok((x, ch[4]))
    }
}
