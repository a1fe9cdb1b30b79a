//! Building blocks shared by the architecture lowerings.

use super::net::{Net, Op, ValueId};

/// Activation after a conv + BN unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
}

/// A convolution without bias followed by batch norm (affine unless stated) and an activation. The layers are
/// named `"{name}.conv"` and `"{name}.bn"`.
#[derive(Debug, Clone, Copy)]
pub struct ConvBn {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub act: Act,
    pub affine: bool,
}

impl ConvBn {
    pub fn new(cin: usize, cout: usize, kernel: usize, stride: usize, act: Act) -> Self {
        Self {
            cin,
            cout,
            kernel,
            stride,
            groups: 1,
            act,
            affine: true,
        }
    }

    /// Depthwise: one group per channel.
    pub fn depthwise(channels: usize, kernel: usize, stride: usize, act: Act) -> Self {
        Self {
            groups: channels,
            ..Self::new(channels, channels, kernel, stride, act)
        }
    }

    pub fn affine(self, affine: bool) -> Self {
        Self { affine, ..self }
    }

    pub fn push(self, net: &mut Net, x: ValueId, name: &str) -> ValueId {
        let conv = net.push(
            Op::Conv {
                name: format!("{name}.conv"),
                cin: self.cin,
                cout: self.cout,
                kernel: self.kernel,
                stride: self.stride,
                padding: self.kernel / 2,
                groups: self.groups,
                bias: false,
            },
            &[x],
        );
        let bn = net.push(
            Op::BatchNorm {
                name: format!("{name}.bn"),
                channels: self.cout,
                affine: self.affine,
            },
            &[conv],
        );
        match self.act {
            Act::None => bn,
            Act::Relu => net.push(Op::Relu, &[bn]),
            Act::Relu6 => net.push(Op::Relu6, &[bn]),
        }
    }
}

/// Rounds `value` to the nearest multiple of `divisor`, never below `divisor` nor more than 10% below `value`
/// (the MobileNet rule, used for every width multiplier here).
pub fn make_divisible(value: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut v = ((value + d / 2.0) / d).floor().max(1.0) * d;
    if v < 0.9 * value {
        v += d;
    }
    v as usize
}
