//! The CMP-NAS super-network over the SPOS space: one set of weights shared by every architecture.
//!
//! Storage is the warm-up network of `models` (every block of every layer at the widest width, non-affine BN in
//! the choice layers, shared stem / last conv / embedding head). A child architecture is lowered by `models` with
//! the same layer names and runs on slices of those tensors (the first `mid` channels of each choice layer), so
//! training a sampled child updates exactly its share of the weights. BN statistics are never shared: each child
//! gets fresh running statistics, recalibrated on training data before it is evaluated.

use std::collections::HashMap;

use hetvis_models::arch::spos::{BLOCK_CHOICES, LAYERS, WIDTH_CHOICES};
use hetvis_models::arch::{ArchError, Backbone, ModelSpec, Net, SposSpace, SposSpec};
use rand::Rng;
use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::data::Split3;
use crate::head::CosineHead;
use crate::preset::ClassifierPreset;
use crate::tch_net::TchNet;

pub struct SuperNet {
    pub space: SposSpace,
    pub input_size: usize,
    pub embedding_dim: usize,
    pub vs: nn::VarStore,
    /// The warm-up form (all blocks averaged at full width); its variables are the super-network's weights.
    pub warmup: TchNet,
    pub head: CosineHead,
    tensors: HashMap<String, Tensor>,
}

impl SuperNet {
    pub fn new(
        space: SposSpace,
        input_size: usize,
        embedding_dim: usize,
        classes: usize,
        classifier: ClassifierPreset,
        device: Device,
    ) -> Result<Self, ArchError> {
        let vs = nn::VarStore::new(device);
        let template = Self::template(&space, input_size, embedding_dim);
        let warm_net =
            template.lower_with(|net, in_ch| space.lower_warmup_features(net, 0, in_ch))?;
        let warmup = TchNet::new(&(vs.root() / "net"), &warm_net);
        let head = CosineHead::new(&(vs.root() / "head"), classes, embedding_dim, classifier);
        let tensors = vs
            .variables()
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("net.").map(|n| (n.to_owned(), v)))
            .collect();
        Ok(Self {
            space,
            input_size,
            embedding_dim,
            vs,
            warmup,
            head,
            tensors,
        })
    }

    fn template(space: &SposSpace, input_size: usize, embedding_dim: usize) -> ModelSpec {
        ModelSpec::new(
            Backbone::Spos(SposSpec::reference_in(space.clone())),
            input_size,
            embedding_dim,
        )
    }

    /// The standalone model spec of a child (what gets retrained and exported).
    pub fn child_spec(&self, arch: &SposSpec) -> ModelSpec {
        ModelSpec::new(
            Backbone::Spos(arch.clone()),
            self.input_size,
            self.embedding_dim,
        )
    }

    /// The child's lowered network as it runs inside the super-network (non-affine BN in the choice layers).
    pub fn child_net(&self, arch: &SposSpec) -> Result<Net, ArchError> {
        self.child_spec(arch)
            .lower_with(|net, in_ch| arch.lower_features_bn(net, 0, in_ch, false))
    }

    /// A child running on slices of the shared weights, with fresh BN statistics of its own.
    pub fn child(&self, arch: &SposSpec) -> Result<TchNet, ArchError> {
        let net = self.child_net(arch)?;
        let device = self.vs.device();
        Ok(TchNet::from_lookup(&net, |p| {
            let dims: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
            if p.name.ends_with(".running_mean") {
                return Tensor::zeros(dims.as_slice(), (Kind::Float, device));
            }
            if p.name.ends_with(".running_var") {
                return Tensor::ones(dims.as_slice(), (Kind::Float, device));
            }
            let full = self
                .tensors
                .get(&p.name)
                .unwrap_or_else(|| panic!("super-network lacks {}", p.name));
            dims.iter()
                .enumerate()
                .fold(full.shallow_clone(), |t, (d, &len)| {
                    t.narrow(d as i64, 0, len)
                })
        }))
    }
}

/// A uniformly sampled architecture: block and width of every layer drawn independently and uniformly.
pub fn sample(space: &SposSpace, rng: &mut impl Rng) -> SposSpec {
    SposSpec {
        space: space.clone(),
        blocks: (0..LAYERS)
            .map(|_| rng.random_range(0..BLOCK_CHOICES as u8))
            .collect(),
        widths: (0..LAYERS)
            .map(|_| rng.random_range(0..WIDTH_CHOICES as u8))
            .collect(),
    }
}

/// BN recalibration: resets a child's running statistics and re-estimates them as a cumulative average over
/// `batches` training batches (PyTorch's `momentum=None`), in training mode without gradients.
pub fn recalibrate_bn(child: &mut TchNet, train: &Split3, batches: usize, batch: usize) {
    child.reset_bn_stats();
    let n = train.len();
    tch::no_grad(|| {
        for b in 0..batches {
            let start = (b * batch) % n.max(1);
            let len = batch.min(n - start);
            child.set_bn_momentum(1.0 / (b + 1) as f64);
            let _ = child.forward_t(&train.x.narrow(0, start as i64, len as i64), true);
        }
    });
    child.set_bn_momentum(crate::tch_net::BN_MOMENTUM);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hetvis_models::arch::Stem;
    use rand::SeedableRng;

    fn supernet() -> SuperNet {
        let space = SposSpace {
            multiplier: 0.25,
            stem: Stem::Small,
        };
        let cls = ClassifierPreset {
            scale: 16.0,
            margin: 0.2,
        };
        SuperNet::new(space, 16, 8, 4, cls, Device::Cpu).unwrap()
    }

    #[test]
    fn children_run_on_slices_of_the_shared_weights() {
        let sn = supernet();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let arch = sample(&sn.space, &mut rng);
        let child = sn.child(&arch).unwrap();
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let e = child.forward_t(&x, true);
        assert_eq!(e.size(), vec![4, 8]);
        // A gradient step through the child lands in the super-network's tensor, only in the child's slice.
        e.sum(Kind::Float).backward();
        let name = format!(
            "{}.main.pw1.conv.weight",
            hetvis_models::arch::spos::unit_name(0, arch.blocks[0])
        );
        let full = sn.vs.variables()[&format!("net.{name}")].grad();
        let mid = sn.space.layers()[0].mid(arch.width(0)) as i64;
        assert!(
            full.narrow(0, 0, mid)
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
        if mid < full.size()[0] {
            let rest = full.narrow(0, mid, full.size()[0] - mid);
            assert_eq!(rest.abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
        // The standalone spec of the child has the same FLOPs as the lowered child network.
        let standalone =
            hetvis_models::flops::count(&sn.child_spec(&arch).lower().unwrap()).unwrap();
        let inside = hetvis_models::flops::count(&sn.child_net(&arch).unwrap()).unwrap();
        assert_eq!(standalone.macs, inside.macs);
    }

    #[test]
    fn bn_recalibration_changes_running_stats() {
        let sn = supernet();
        let arch = SposSpec::reference_in(sn.space.clone());
        let mut child = sn.child(&arch).unwrap();
        let before = child.weights().unwrap();
        let data = Split3 {
            x: Tensor::randn([32, 3, 16, 16], (Kind::Float, Device::Cpu)) * 3.0 + 1.0,
            y: Tensor::zeros([32], (Kind::Int64, Device::Cpu)),
        };
        recalibrate_bn(&mut child, &data, 4, 8);
        let after = child.weights().unwrap();
        let stem_mean = "stem.bn.running_mean";
        assert!(before
            .get(stem_mean)
            .unwrap()
            .data
            .iter()
            .all(|&v| v == 0.0));
        let m = &after.get(stem_mean).unwrap().data;
        assert!(m.iter().any(|&v| v.abs() > 1e-3), "{m:?}");
        // Cumulative averaging: the result equals the statistics of all 32 images' stem activations, so a second
        // recalibration over the same batches gives the same numbers (no dependence on the previous state).
        recalibrate_bn(&mut child, &data, 4, 8);
        assert_eq!(&child.weights().unwrap().get(stem_mean).unwrap().data, m);
        // And the shared weights did not move.
        let w = "stem.conv.weight";
        assert_eq!(before.get(w).unwrap(), after.get(w).unwrap());
    }
}
