//! Structured filter pruning of a ResNet: the query models of the weight-level compatibility study (CMP-NAS
//! supplementary Table 4). Filters of the first two layers of every residual block (`unit1`, `unit2` of a
//! bottleneck; `unit1` of a basic block) are removed, together with their BN entries and the input channels of
//! the layer that reads them. The result is a smaller [`ResNetSpec`] (its `inner` channel counts) with weights
//! that fit it: a real network with fewer MACs that lowers, counts and exports like any other, not a mask.
//!
//! Criteria:
//! - [`PruneCriterion::Magnitude`] (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017): the L1
//!   norm of each filter; the smallest go. Scores are computed on the unpruned network, layer by layer
//!   ("independent" pruning in Li et al.).
//! - [`PruneCriterion::Channel`]: the channel's expected contribution to the next layer's output, the quantity
//!   whose reconstruction error He et al. ("Channel Pruning for Accelerating Very Deep Neural Networks", ICCV
//!   2017) minimise. Their LASSO needs sampled feature maps; we use the data-free estimate that BN gives: after
//!   BN the channel is `relu(gamma * z + beta)` with `z ~ N(0, 1)`, so its expected activation is
//!   `beta * Phi(beta / |gamma|) + |gamma| * phi(beta / |gamma|)`, and its contribution is that times the L2
//!   norm of the next layer's weights on it. Unlike magnitude it sees a channel that BN switched off (small
//!   `gamma`, negative `beta`) however large its filter, and a filter the next layer ignores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::arch::{ArchError, Backbone, ModelSpec, ResNetSpec};
use crate::weights::{Tensor, Weights, WeightsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PruneCriterion {
    /// L1 norm of each filter (Li et al. 2017).
    Magnitude,
    /// Expected contribution to the next layer's output, estimated from BN (after He et al. 2017).
    Channel,
}

impl PruneCriterion {
    pub fn name(self) -> &'static str {
        match self {
            PruneCriterion::Magnitude => "magnitude",
            PruneCriterion::Channel => "channel",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("only ResNet backbones can be pruned, not {0}")]
    NotResnet(&'static str),
    #[error("prune amount {0} must be in [0, 1)")]
    Amount(f64),
    #[error(transparent)]
    Arch(#[from] ArchError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// A pruned network and which channels of the original it kept.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub spec: ModelSpec,
    pub weights: Weights,
    /// Per block, per pruned layer: the original indices of the kept filters, ascending.
    pub kept: Vec<Vec<Vec<usize>>>,
}

/// How many of `channels` filters survive pruning `amount` of them: at least one.
pub fn kept_count(channels: usize, amount: f64) -> usize {
    ((channels as f64 * (1.0 - amount)).round() as usize).clamp(1, channels)
}

/// Prunes `amount` (0.3 = 30%) of the filters of the first two layers of every residual block of `spec`
/// (a ResNet, pruned or not) with `weights`, by `criterion`.
pub fn prune_resnet(
    spec: &ModelSpec,
    weights: &Weights,
    criterion: PruneCriterion,
    amount: f64,
) -> Result<Pruned, PruneError> {
    let Backbone::Resnet(resnet) = &spec.backbone else {
        return Err(PruneError::NotResnet(spec.backbone.family()));
    };
    if !(0.0..1.0).contains(&amount) {
        return Err(PruneError::Amount(amount));
    }
    weights.check(&spec.lower()?)?;
    let (_, bottleneck) = resnet.layout()?;
    let inner = resnet.inner_channels()?;
    let mut out = weights.0.clone();
    let mut kept = Vec::with_capacity(inner.len());
    let mut new_inner = Vec::with_capacity(inner.len());
    for (name, widths) in block_names(resnet)?.iter().zip(&inner) {
        // The pruned layers of this block and the layer that reads each one.
        let units: &[(&str, &str)] = if bottleneck {
            &[("unit1", "unit2"), ("unit2", "unit3")]
        } else {
            &[("unit1", "unit2")]
        };
        let mut block_kept = Vec::new();
        for (&(unit, next), &width) in units.iter().zip(widths) {
            let layer = format!("{name}.{unit}");
            let reader = format!("{name}.{next}.conv.weight");
            let scores = scores(weights, &layer, &reader, criterion)?;
            let keep = top_k(&scores, kept_count(width, amount));
            // Rows of this layer's conv and BN, input channels of its reader (scores came from the original
            // tensors, so slicing in this order is independent of the other layer's choice).
            for suffix in [
                "conv.weight",
                "bn.weight",
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
            ] {
                let key = format!("{layer}.{suffix}");
                let t = select(get(&out, &key)?, 0, &keep);
                out.insert(key, t);
            }
            let t = select(get(&out, &reader)?, 1, &keep);
            out.insert(reader, t);
            block_kept.push(keep);
        }
        new_inner.push(block_kept.iter().map(Vec::len).collect());
        kept.push(block_kept);
    }
    let mut pruned_spec = spec.clone();
    pruned_spec.backbone = Backbone::Resnet(ResNetSpec {
        inner: Some(new_inner),
        ..resnet.clone()
    });
    let pruned = Weights(out);
    pruned.check(&pruned_spec.lower()?)?;
    Ok(Pruned {
        spec: pruned_spec,
        weights: pruned,
        kept,
    })
}

/// Layer-name prefixes of every block, in block order (`layer1.0`, ...), as the lowering names them.
fn block_names(spec: &ResNetSpec) -> Result<Vec<String>, ArchError> {
    let (blocks, _) = spec.layout()?;
    Ok(blocks
        .iter()
        .enumerate()
        .flat_map(|(stage, &n)| (0..n).map(move |b| format!("layer{}.{b}", stage + 1)))
        .collect())
}

fn get<'a>(w: &'a BTreeMap<String, Tensor>, name: &str) -> Result<&'a Tensor, WeightsError> {
    w.get(name)
        .ok_or_else(|| WeightsError::Missing(name.to_owned()))
}

/// One score per output filter of `layer` (higher = more important).
fn scores(
    w: &Weights,
    layer: &str,
    reader: &str,
    criterion: PruneCriterion,
) -> Result<Vec<f64>, WeightsError> {
    let conv = w.get(&format!("{layer}.conv.weight"))?;
    Ok(match criterion {
        PruneCriterion::Magnitude => slice_norms(conv, 0, 1),
        PruneCriterion::Channel => {
            let gamma = &w.get(&format!("{layer}.bn.weight"))?.data;
            let beta = &w.get(&format!("{layer}.bn.bias"))?.data;
            slice_norms(w.get(reader)?, 1, 2)
                .into_iter()
                .enumerate()
                .map(|(c, norm)| expected_relu(beta[c] as f64, gamma[c].abs() as f64) * norm)
                .collect()
        }
    })
}

/// The Lp norm (p = 1 or 2) of every slice of `t` along `axis`.
fn slice_norms(t: &Tensor, axis: usize, p: u8) -> Vec<f64> {
    let n = t.shape[axis];
    let inner: usize = t.shape[axis + 1..].iter().product();
    let mut acc = vec![0.0f64; n];
    for (i, v) in t.data.iter().enumerate() {
        let c = (i / inner) % n;
        let v = *v as f64;
        acc[c] += if p == 1 { v.abs() } else { v * v };
    }
    if p == 2 {
        acc.iter_mut().for_each(|a| *a = a.sqrt());
    }
    acc
}

/// `E[max(0, mu + sigma * z)]` for `z ~ N(0, 1)`.
fn expected_relu(mu: f64, sigma: f64) -> f64 {
    if sigma < 1e-12 {
        return mu.max(0.0);
    }
    let t = mu / sigma;
    let pdf = (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let cdf = 0.5 * (1.0 + erf(t / std::f64::consts::SQRT_2));
    mu * cdf + sigma * pdf
}

/// The error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): enough to rank channels.
fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    s * (1.0 - poly * (-x * x).exp())
}

/// Indices of the `k` highest scores (ties: the lower index wins), ascending.
fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// The slices `keep` of `t` along `axis` (row-major).
fn select(t: &Tensor, axis: usize, keep: &[usize]) -> Tensor {
    let outer: usize = t.shape[..axis].iter().product();
    let inner: usize = t.shape[axis + 1..].iter().product();
    let n = t.shape[axis];
    let mut data = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let start = (o * n + k) * inner;
            data.extend_from_slice(&t.data[start..start + inner]);
        }
    }
    let mut shape = t.shape.clone();
    shape[axis] = keep.len();
    Tensor { shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Stem;
    use crate::flops;

    fn resnet(depth: usize) -> ModelSpec {
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth,
                width: 0.25,
                stem: Stem::Small,
                inner: None,
            }),
            16,
            8,
        )
    }

    fn random(spec: &ModelSpec) -> Weights {
        Weights::random(&spec.lower().unwrap(), 7)
    }

    #[test]
    fn magnitude_keeps_the_highest_norm_filters() {
        let spec = resnet(50);
        let mut w = random(&spec);
        // layer1.0.unit1 has 16 filters; make filter c's L1 norm grow with a permuted rank.
        let key = "layer1.0.unit1.conv.weight";
        let t = w.0.get_mut(key).unwrap();
        let (filters, per) = (t.shape[0], t.data.len() / t.shape[0]);
        let rank = move |c: usize| (c * 7) % filters;
        for (i, v) in t.data.iter_mut().enumerate() {
            *v = (1 + rank(i / per)) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        let original = w.clone();
        let p = prune_resnet(&spec, &w, PruneCriterion::Magnitude, 0.5).unwrap();
        let keep = &p.kept[0][0];
        assert_eq!(keep.len(), 8);
        let mut want: Vec<usize> = (0..16).filter(|&c| rank(c) >= 8).collect();
        want.sort_unstable();
        assert_eq!(keep, &want);
        // The kept rows are the original filters, and the next layer reads exactly those channels.
        let orig = original.get(key).unwrap();
        let got = p.weights.get(key).unwrap();
        for (j, &c) in keep.iter().enumerate() {
            assert_eq!(
                &got.data[j * per..(j + 1) * per],
                &orig.data[c * per..(c + 1) * per]
            );
        }
        let next = p.weights.get("layer1.0.unit2.conv.weight").unwrap();
        assert_eq!(next.shape[1], 8);
        // Pruned unit2 filter 0, input channel 0 = original filter kept[0][1][0], input channel keep[0].
        let orig_next = original.get("layer1.0.unit2.conv.weight").unwrap();
        let start = (p.kept[0][1][0] * orig_next.shape[1] + keep[0]) * 9;
        assert_eq!(next.data[..9], orig_next.data[start..start + 9]);
    }

    #[test]
    fn channel_criterion_drops_what_bn_switched_off_and_the_next_layer_ignores() {
        let spec = resnet(18);
        let mut w = random(&spec);
        let set =
            |w: &mut Weights, key: &str, c: usize, v: f32| w.0.get_mut(key).unwrap().data[c] = v;
        // Channel 0: a huge filter that BN switches off (gamma ~ 0, beta < 0). Channel 1: a live channel the
        // next layer does not read. Magnitude keeps channel 0; the channel criterion drops both.
        w.0.get_mut("layer1.0.unit1.conv.weight")
            .unwrap()
            .data
            .iter_mut()
            .take(16 * 9)
            .for_each(|v| *v *= 100.0);
        set(&mut w, "layer1.0.unit1.bn.weight", 0, 1e-6);
        set(&mut w, "layer1.0.unit1.bn.bias", 0, -1.0);
        let next = w.0.get_mut("layer1.0.unit2.conv.weight").unwrap();
        let (cin, k2) = (next.shape[1], 9);
        for o in 0..next.shape[0] {
            for t in 0..k2 {
                next.data[(o * cin + 1) * k2 + t] = 0.0;
            }
        }
        let channel = prune_resnet(&spec, &w, PruneCriterion::Channel, 0.25).unwrap();
        assert!(!channel.kept[0][0].contains(&0) && !channel.kept[0][0].contains(&1));
        let magnitude = prune_resnet(&spec, &w, PruneCriterion::Magnitude, 0.25).unwrap();
        assert!(magnitude.kept[0][0].contains(&0));
    }

    #[test]
    fn pruned_flops_drop_by_the_kept_fractions() {
        let spec = resnet(50);
        let w = random(&spec);
        let cost = |s: &ModelSpec| flops::count(&s.lower().unwrap()).unwrap();
        let full = cost(&spec);
        let mut last = full.macs;
        for amount in [0.3, 0.5, 0.7, 0.9] {
            let p = prune_resnet(&spec, &w, PruneCriterion::Magnitude, amount).unwrap();
            let pruned = cost(&p.spec);
            assert!(pruned.macs < last, "{amount}: {} !< {last}", pruned.macs);
            last = pruned.macs;
            // Layer by layer: unit1 and unit3 scale by one kept fraction, unit2 by both; the rest is unchanged.
            let Backbone::Resnet(r) = &p.spec.backbone else {
                panic!()
            };
            let inner = r.inner.clone().unwrap();
            let defaults = r.default_inner().unwrap();
            let names = block_names(r).unwrap();
            for (a, b) in full.layers.iter().zip(&pruned.layers) {
                assert_eq!(a.name, b.name);
                let block = names
                    .iter()
                    .position(|n| a.name.starts_with(&format!("{n}.")));
                let f = |i: usize, blk: usize| inner[blk][i] as f64 / defaults[blk][i] as f64;
                let want = match block {
                    Some(i) if a.name.contains(".unit1.") => a.macs as f64 * f(0, i),
                    Some(i) if a.name.contains(".unit2.") => a.macs as f64 * f(0, i) * f(1, i),
                    Some(i) if a.name.contains(".unit3.") => a.macs as f64 * f(1, i),
                    _ => a.macs as f64,
                };
                assert!(
                    (b.macs as f64 - want).abs() < 0.5,
                    "{}: {} vs {want}",
                    a.name,
                    b.macs
                );
            }
        }
        // 90% of the inner filters gone: well under half the MACs remain.
        assert!((last as f64) < 0.5 * full.macs as f64);
    }

    #[test]
    fn zero_amount_is_the_identity_and_bad_input_is_refused() {
        let spec = resnet(18);
        let w = random(&spec);
        let p = prune_resnet(&spec, &w, PruneCriterion::Channel, 0.0).unwrap();
        assert_eq!(p.weights, w);
        assert_eq!(
            p.spec.lower().unwrap().params(),
            spec.lower().unwrap().params()
        );
        assert!(matches!(
            prune_resnet(&spec, &w, PruneCriterion::Channel, 1.0),
            Err(PruneError::Amount(_))
        ));
        let mnv2 = ModelSpec::new(Backbone::builtin("mobilenetv2").unwrap(), 32, 8);
        assert!(matches!(
            prune_resnet(&mnv2, &w, PruneCriterion::Magnitude, 0.5),
            Err(PruneError::NotResnet("mobilenetv2"))
        ));
        // Pruning a pruned network prunes it further.
        let once = prune_resnet(&spec, &w, PruneCriterion::Magnitude, 0.5).unwrap();
        let twice =
            prune_resnet(&once.spec, &once.weights, PruneCriterion::Magnitude, 0.5).unwrap();
        assert_eq!(twice.kept[0][0].len(), 4);
    }

    #[test]
    fn expected_relu_matches_its_limits() {
        assert!((expected_relu(0.0, 1.0) - 1.0 / (2.0 * std::f64::consts::PI).sqrt()).abs() < 1e-6);
        assert!((expected_relu(5.0, 0.1) - 5.0).abs() < 1e-6);
        assert!(expected_relu(-5.0, 0.1) < 1e-6);
        assert!((erf(1.0) - 0.842_700_79).abs() < 2e-7);
    }
}
