//! The CMP-NAS super-network over the SPOS space: one set of weights shared by every architecture.
//!
//! Storage is the warm-up network of `models` (every block of every layer at the widest width, non-affine BN in
//! the choice layers, shared stem / last conv / embedding head). A child architecture is lowered by `models` with
//! the same layer names and runs on slices of those tensors (the first `mid` channels of each choice layer), so
//! training a sampled child updates exactly its share of the weights. BN statistics are never shared: each child
//! gets fresh running statistics, recalibrated on training data before it is evaluated.

use std::collections::HashMap;

use hetvis_models::arch::spos::{MixedLayer, BLOCK_CHOICES, LAYERS, WIDTH_CHOICES};
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

    /// MMACs of a child as a standalone model (infinite when it does not lower).
    pub fn child_mmacs(&self, arch: &SposSpec) -> f64 {
        crate::tier::mmacs(&self.child_spec(arch))
    }

    /// The child's lowered network as it runs inside the super-network (non-affine BN in the choice layers).
    pub fn child_net(&self, arch: &SposSpec) -> Result<Net, ArchError> {
        self.child_spec(arch)
            .lower_with(|net, in_ch| arch.lower_features_bn(net, 0, in_ch, false))
    }

    /// A child running on slices of the shared weights, with fresh BN statistics of its own.
    pub fn child(&self, arch: &SposSpec) -> Result<TchNet, ArchError> {
        Ok(self.on_slices(&self.child_net(arch)?))
    }

    /// A mixture path (several blocks averaged per layer) on slices of the shared weights; see [`transition`].
    pub fn mixture(&self, layers: &[MixedLayer]) -> Result<TchNet, ArchError> {
        let net = Self::template(&self.space, self.input_size, self.embedding_dim)
            .lower_with(|net, in_ch| self.space.lower_mixture_features(net, 0, in_ch, layers))?;
        Ok(self.on_slices(&net))
    }

    /// A network whose layers use the super-network's tensors, narrowed to the layer's shape (the first
    /// channels), and fresh BN running statistics.
    fn on_slices(&self, net: &Net) -> TchNet {
        let device = self.vs.device();
        TchNet::from_lookup(net, |p| {
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
            // Channels: the first ones. Kernel taps (dims 2 and 3 of a conv weight): the centre, so a 3x3 use of
            // a shared 7x7 projection kernel reads its middle taps (Once-for-All's elastic kernel, untransformed).
            let full_dims = full.size();
            dims.iter()
                .enumerate()
                .fold(full.shallow_clone(), |t, (d, &len)| {
                    let start = if dims.len() == 4 && d >= 2 {
                        (full_dims[d] - len) / 2
                    } else {
                        0
                    };
                    t.narrow(d as i64, start, len)
                })
        })
    }
}

/// A path of the warm-up -> single-path transition at `progress` in [0, 1]. Each layer keeps one uniformly drawn
/// block plus each other block with probability `1 - progress`, averaged, at a width drawn uniformly from the
/// widest `1 + progress * 9` choices. At 0 this is the warm-up network, at 1 a uniformly sampled child.
///
/// Why: sampling straight after the warm-up collapses (train accuracy drops to chance and stays there at our
/// budgets: a single block was only ever trained as a quarter of an average). Dropping paths gradually, as in
/// Bender et al. 2018's path dropout and Once-for-All's progressive shrinking, hands the shared weights over.
pub fn transition(progress: f64, rng: &mut impl Rng) -> Vec<MixedLayer> {
    let keep = (1.0 - progress).clamp(0.0, 1.0);
    let widths = 1 + (progress.clamp(0.0, 1.0) * (WIDTH_CHOICES - 1) as f64).round() as usize;
    (0..LAYERS)
        .map(|_| {
            let first = rng.random_range(0..BLOCK_CHOICES as u8);
            let blocks = (0..BLOCK_CHOICES as u8)
                .filter(|&b| b == first || rng.random_bool(keep))
                .collect();
            MixedLayer {
                blocks,
                width: (WIDTH_CHOICES - 1 - rng.random_range(0..widths)) as u8,
            }
        })
        .collect()
}

/// Draws the children a super-network trains: uniformly, or narrowed under a budget
/// ([`crate::sampling::sample_under`], as the search draws its random candidates).
pub struct ChildSampler {
    under_mmacs: Option<f64>,
    /// A child under the budget to fall back on when many draws in a row do not fit.
    fallback: SposSpec,
    /// Draws that fell back: a budget this tight trains one child, slowly, and the log says so once.
    fallbacks: std::sync::atomic::AtomicUsize,
}

impl ChildSampler {
    /// Draws whose blocks cannot fit even at their narrowest are drawn again, at most this often.
    const ATTEMPTS: usize = 1000;

    /// A sampler for `sn`; under a budget, an error when not even the narrowest child fits it.
    pub fn new(sn: &SuperNet, under_mmacs: Option<f64>) -> Result<Self, ArchError> {
        let narrowest = |block: u8| SposSpec {
            space: sn.space.clone(),
            blocks: vec![block; LAYERS],
            widths: vec![0; LAYERS],
        };
        let mut fallback = narrowest(0);
        if let Some(max) = under_mmacs {
            // The cheapest narrowest child, over the blocks used uniformly.
            let (least, cost) = (0..BLOCK_CHOICES as u8)
                .map(|b| {
                    let child = narrowest(b);
                    let cost = sn.child_mmacs(&child);
                    (child, cost)
                })
                .fold((fallback, f64::INFINITY), |best, c| {
                    if c.1 < best.1 {
                        c
                    } else {
                        best
                    }
                });
            if cost > max {
                return Err(ArchError::Invalid(format!(
                    "no child of the super-network fits {max:.3} MMACs: the narrowest has {cost:.3}"
                )));
            }
            fallback = least;
        }
        Ok(Self {
            under_mmacs,
            fallback,
            fallbacks: Default::default(),
        })
    }

    pub fn draw(&self, sn: &SuperNet, rng: &mut impl Rng) -> SposSpec {
        let Some(max) = self.under_mmacs else {
            return crate::sampling::sample(&sn.space, rng);
        };
        let mut mmacs = |a: &SposSpec| sn.child_mmacs(a);
        (0..Self::ATTEMPTS)
            .find_map(|_| crate::sampling::sample_under(&sn.space, max, &mut mmacs, rng))
            .unwrap_or_else(|| {
                use std::sync::atomic::Ordering;
                if self.fallbacks.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        budget = max,
                        attempts = Self::ATTEMPTS,
                        "no random child fits the budget; training the narrowest child instead \
                         (a budget this close to the narrowest child leaves little to search)"
                    );
                }
                self.fallback.clone()
            })
    }

    /// How many draws fell back to the narrowest child.
    pub fn fallbacks(&self) -> usize {
        self.fallbacks.load(std::sync::atomic::Ordering::Relaxed)
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
    use crate::sampling::sample;
    use hetvis_models::arch::Stem;
    use rand::SeedableRng;

    fn supernet() -> SuperNet {
        let space = SposSpace::new(0.25, Stem::Small);
        let cls = ClassifierPreset {
            scale: 16.0,
            margin: 0.2,
            init: crate::preset::HeadInit::Random,
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
    fn transition_runs_from_the_warmup_network_to_uniform_children() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let full = WIDTH_CHOICES as u8 - 1;
        for layer in transition(0.0, &mut rng) {
            assert_eq!(layer.blocks, vec![0, 1, 2, 3]);
            assert_eq!(layer.width, full);
        }
        let (mut blocks, mut widths) = ([0usize; BLOCK_CHOICES], [0usize; WIDTH_CHOICES]);
        for _ in 0..200 {
            for layer in transition(1.0, &mut rng) {
                assert_eq!(layer.blocks.len(), 1);
                blocks[layer.blocks[0] as usize] += 1;
                widths[layer.width as usize] += 1;
            }
        }
        assert!(blocks.iter().all(|&n| n > 800), "{blocks:?}");
        assert!(widths.iter().all(|&n| n > 250), "{widths:?}");
        // Half-way: on average 1 + 3 * 0.5 blocks per layer, widths from the widest half of the choices.
        let mid: Vec<MixedLayer> = (0..50).flat_map(|_| transition(0.5, &mut rng)).collect();
        let mean = mid.iter().map(|l| l.blocks.len()).sum::<usize>() as f64 / mid.len() as f64;
        assert!((mean - 2.5).abs() < 0.2, "{mean}");
        assert!(mid.iter().all(|l| l.width >= 4));
        assert!(mid.iter().any(|l| l.width == 4));
    }

    #[test]
    fn a_single_block_mixture_is_the_child() {
        let sn = supernet();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let arch = sample(&sn.space, &mut rng);
        let layers: Vec<MixedLayer> = (0..LAYERS)
            .map(|i| MixedLayer {
                blocks: vec![arch.blocks[i]],
                width: arch.width(i),
            })
            .collect();
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let a = sn.child(&arch).unwrap().forward_t(&x, true);
        let b = sn.mixture(&layers).unwrap().forward_t(&x, true);
        assert_eq!(a.size(), b.size());
        assert!((a - b).abs().max().double_value(&[]) < 1e-6);
        // And all four blocks at full width is the warm-up network.
        let all: Vec<MixedLayer> = transition(0.0, &mut rng);
        let w = sn.warmup.forward_t(&x, true);
        let m = sn.mixture(&all).unwrap().forward_t(&x, true);
        assert!((w - m).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn stride_two_blocks_share_the_projection_by_kernel_centre() {
        let sn = supernet();
        let full = &sn.vs.variables()["net.features.0.proj.dw.conv.weight"];
        assert_eq!(full.size()[2..], [7, 7]);
        // A 3x3 block at layer 0 (stride 2) trains only the centre taps of the shared 7x7 projection kernel.
        let mut arch = SposSpec::reference_in(sn.space.clone());
        arch.blocks[0] = 0;
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        sn.child(&arch)
            .unwrap()
            .forward_t(&x, true)
            .sum(Kind::Float)
            .backward();
        let g = full
            .grad()
            .abs()
            .sum_dim_intlist([0i64, 1].as_slice(), false, Kind::Float);
        let centre = g
            .narrow(0, 2, 3)
            .narrow(1, 2, 3)
            .sum(Kind::Float)
            .double_value(&[]);
        assert!(centre > 0.0);
        let outside = g.copy();
        let _ = outside.narrow(0, 2, 3).narrow(1, 2, 3).fill_(0.0);
        assert_eq!(outside.max().double_value(&[]), 0.0);
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

    #[test]
    fn under_a_budget_the_sampler_draws_varied_children_that_fit_and_uniform_ones_otherwise() {
        let sn = supernet();
        let narrowest = SposSpec {
            space: sn.space.clone(),
            blocks: vec![0; LAYERS],
            widths: vec![0; LAYERS],
        };
        let budget = sn.child_mmacs(&narrowest) * 1.3;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let uniform = ChildSampler::new(&sn, None).unwrap();
        let costs: Vec<f64> = (0..50)
            .map(|_| sn.child_mmacs(&uniform.draw(&sn, &mut rng)))
            .collect();
        // Uniform children are not narrowed: none fits this budget, and their costs spread widely.
        assert!(costs.iter().all(|&m| m > budget), "{costs:?}");
        let (lo, hi) = costs
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &m| (l.min(m), h.max(m)));
        assert!(hi > 1.5 * lo, "{lo}..{hi}");
        let under = ChildSampler::new(&sn, Some(budget)).unwrap();
        let drawn: Vec<SposSpec> = (0..50).map(|_| under.draw(&sn, &mut rng)).collect();
        assert!(drawn.iter().all(|a| sn.child_mmacs(a) <= budget));
        let distinct: std::collections::HashSet<(Vec<u8>, Vec<u8>)> = drawn
            .iter()
            .map(|a| (a.blocks.clone(), a.widths.clone()))
            .collect();
        assert!(distinct.len() > 45, "{} distinct of 50", distinct.len());
        assert_eq!(under.fallbacks(), 0);
        // Every block choice still trains.
        for b in 0..BLOCK_CHOICES as u8 {
            assert!(drawn.iter().any(|a| a.blocks.contains(&b)), "block {b}");
        }
        // A budget only the narrowest children of the cheapest blocks meet: almost no draw fits, and after
        // the bounded attempts the sampler falls back to a child that fits rather than looping.
        let tight = ChildSampler::new(&sn, Some(sn.child_mmacs(&narrowest))).unwrap();
        let child = tight.draw(&sn, &mut rng);
        assert!(sn.child_mmacs(&child) <= sn.child_mmacs(&narrowest));
        assert!(tight.fallbacks() <= 1);
        // A budget no child meets is an error up front, not an endless draw.
        let err = ChildSampler::new(&sn, Some(sn.child_mmacs(&narrowest) * 0.5))
            .err()
            .expect("impossible budget");
        assert!(err.to_string().contains("no child"), "{err}");
    }
}
