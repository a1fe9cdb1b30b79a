//! Multiply-accumulates and parameters, counted on the lowered [`Net`] at batch 1.
//!
//! The SPOS convention: MACs of convolutions and linear layers only (BN, activations, pooling, adds are free);
//! "MFLOPs" in the CMP-NAS and SPOS papers mean these MMACs.

use serde::Serialize;

use crate::arch::{Net, NetError, Op, Shape};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerCost {
    pub name: String,
    pub macs: u64,
    pub params: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cost {
    pub macs: u64,
    /// Trainable parameters (BN running statistics excluded).
    pub params: u64,
    pub layers: Vec<LayerCost>,
}

impl Cost {
    pub fn mmacs(&self) -> f64 {
        self.macs as f64 / 1e6
    }
}

/// Counts the MACs of every conv and linear layer, and the parameters of every layer that has any.
pub fn count(net: &Net) -> Result<Cost, NetError> {
    let shapes = net.shapes()?;
    let mut layers = Vec::new();
    for (i, node) in net.nodes.iter().enumerate() {
        let out = shapes[i + 1];
        let macs = match (&node.op, out) {
            (
                Op::Conv {
                    cin,
                    kernel,
                    groups,
                    ..
                },
                Shape::Chw(cout, h, w),
            ) => (cout * (cin / groups) * kernel * kernel * h * w) as u64,
            (Op::Linear { cin, cout, .. }, _) => (cin * cout) as u64,
            _ => 0,
        };
        let params = node
            .op
            .params()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>() as u64)
            .sum();
        if let Some(name) = node.op.name() {
            layers.push(LayerCost {
                name: name.to_owned(),
                macs,
                params,
            });
        }
    }
    Ok(Cost {
        macs: layers.iter().map(|l| l.macs).sum(),
        params: layers.iter().map(|l| l.params).sum(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Backbone, ModelSpec};

    fn mmacs_224(name: &str) -> (f64, f64) {
        let spec = ModelSpec::new(Backbone::builtin(name).unwrap(), 224, 128);
        let cost = count(&spec.lower_classifier(1000).unwrap()).unwrap();
        (cost.mmacs(), cost.params as f64 / 1e6)
    }

    fn assert_within(name: &str, got: f64, published: f64, tolerance: f64) {
        let rel = (got - published).abs() / published;
        assert!(
            rel <= tolerance,
            "{name}: {got:.1} vs published {published} ({:.2}% off)",
            rel * 100.0
        );
    }

    /// Published figures at 224 px with a 1000-way classifier (MMACs), each within 2%.
    #[test]
    fn matches_published_flops() {
        for (name, published) in [
            ("resnet50", 4100.0),
            ("resnet101", 7800.0),
            ("mobilenetv2", 300.0),
            ("shufflenetv2", 146.0),
            ("spos-ref", 323.0),
        ] {
            assert_within(name, mmacs_224(name).0, published, 0.02);
        }
    }

    /// Published parameter counts (millions), within 2%.
    #[test]
    fn matches_published_params() {
        for (name, published) in [
            ("resnet50", 25.56),
            ("resnet101", 44.55),
            ("mobilenetv2", 3.50),
            ("shufflenetv2", 2.28),
        ] {
            assert_within(name, mmacs_224(name).1, published, 0.02);
        }
    }

    #[test]
    fn counts_a_hand_computed_net() {
        use crate::arch::net::{Net, Op, INPUT};
        let mut net = Net::new(Shape::Chw(3, 8, 8));
        let c = net.push(
            Op::Conv {
                name: "c".into(),
                cin: 3,
                cout: 4,
                kernel: 3,
                stride: 2,
                padding: 1,
                groups: 1,
                bias: true,
            },
            &[INPUT],
        );
        let p = net.push(Op::GlobalAvgPool, &[c]);
        net.push(
            Op::Linear {
                name: "fc".into(),
                cin: 4,
                cout: 5,
                bias: false,
            },
            &[p],
        );
        let cost = count(&net).unwrap();
        // conv: 4 out x 3 in x 9 taps x (4 x 4) positions; linear: 4 x 5.
        assert_eq!(cost.macs, 4 * 3 * 9 * 16 + 20);
        assert_eq!(cost.params, (4 * 3 * 9 + 4) + 20);
        assert_eq!(cost.layers.len(), 2);
    }

    #[test]
    fn smaller_spos_tiers_cost_less() {
        let mut spec = crate::arch::SposSpec::reference();
        let full = count(
            &ModelSpec::new(Backbone::Spos(spec.clone()), 224, 128)
                .lower()
                .unwrap(),
        )
        .unwrap();
        spec.space.multiplier = 0.5;
        let half = count(
            &ModelSpec::new(Backbone::Spos(spec), 224, 128)
                .lower()
                .unwrap(),
        )
        .unwrap();
        assert!(half.macs * 3 < full.macs, "{} vs {}", half.macs, full.macs);
    }
}
