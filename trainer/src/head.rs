//! The normalised-softmax (CosFace) classifier used by every training mode.
//!
//! Retrieval compares L2-normalised embeddings by cosine similarity, so the classifier scores the cosine between
//! the normalised embedding and each normalised class weight, minus a margin for the true class, times a scale.
//! The same head, frozen, is BCT's "influence" classifier: a query embedding is pushed towards the direction of
//! the gallery model's class weights, which is exactly the space the gallery embeddings live in.

use tch::nn::{self, Init};
use tch::Tensor;

use crate::preset::ClassifierPreset;

pub struct CosineHead {
    pub weight: Tensor,
    pub config: ClassifierPreset,
}

impl CosineHead {
    /// A trainable head named `{path}.weight` of shape `[classes, dim]`.
    pub fn new(path: &nn::Path, classes: usize, dim: usize, config: ClassifierPreset) -> Self {
        let weight = path.var(
            "weight",
            &[classes as i64, dim as i64],
            Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
        );
        Self { weight, config }
    }

    /// Copies `other`'s class weights into this head when the shapes agree (same classes and dimension);
    /// returns whether it did.
    pub fn start_from(&self, other: &CosineHead) -> bool {
        if other.weight.size() != self.weight.size() {
            return false;
        }
        tch::no_grad(|| self.weight.shallow_clone().copy_(&other.weight));
        true
    }

    /// Logits for normalised embeddings `e` `[N, dim]`; with labels, the margin is taken off the true class.
    pub fn logits(&self, e: &Tensor, labels: Option<&Tensor>) -> Tensor {
        let w = &self.weight
            / self
                .weight
                .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                .clamp_min(1e-12);
        let cos = e.matmul(&w.tr());
        let cos = match labels {
            Some(y) => {
                let onehot = cos
                    .zeros_like()
                    .scatter_value(1, &y.unsqueeze(1), self.config.margin);
                cos - onehot
            }
            None => cos,
        };
        cos * self.config.scale
    }

    pub fn loss(&self, e: &Tensor, labels: &Tensor) -> Tensor {
        self.logits(e, Some(labels))
            .cross_entropy_for_logits(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn margin_lowers_only_the_true_class() {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = CosineHead::new(
            &(vs.root() / "h"),
            3,
            2,
            ClassifierPreset {
                scale: 10.0,
                margin: 0.5,
                init: crate::preset::HeadInit::Random,
            },
        );
        let e = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let y = Tensor::from_slice(&[1i64]);
        let plain = head.logits(&e, None);
        let with = head.logits(&e, Some(&y));
        let d = Vec::<f32>::try_from((plain - with).flatten(0, -1)).unwrap();
        // scale * margin on the true class only (up to f32 rounding of cos * scale).
        for (got, want) in d.iter().zip([0.0f32, 5.0, 0.0]) {
            assert!((got - want).abs() < 1e-5, "{d:?}");
        }
        // A perfectly aligned class weight gives logit = scale.
        tch::no_grad(|| {
            head.weight
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0]).view([3, 2]))
        });
        let l = head.logits(&e, None);
        assert!((l.double_value(&[0, 0]) - 10.0).abs() < 1e-5);
        assert!(
            head.loss(&e, &Tensor::from_slice(&[0i64]))
                .double_value(&[])
                < head.loss(&e, &y).double_value(&[])
        );
    }

    #[test]
    fn a_head_starts_from_another_only_with_the_same_shape() {
        let cls = ClassifierPreset {
            scale: 16.0,
            margin: 0.2,
            init: crate::preset::HeadInit::Gallery,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let gallery = CosineHead::new(&(vs.root() / "g"), 4, 8, cls);
        let query = CosineHead::new(&(vs.root() / "q"), 4, 8, cls);
        let other = CosineHead::new(&(vs.root() / "o"), 5, 8, cls);
        let other_before = other.weight.copy();
        assert!(!query.weight.allclose(&gallery.weight, 1e-6, 1e-6, false));
        assert!(query.start_from(&gallery));
        assert!(query.weight.equal(&gallery.weight));
        // Still its own trainable variable, not an alias of the gallery's.
        let _zeroed = tch::no_grad(|| query.weight.shallow_clone().fill_(0.0));
        assert!(gallery.weight.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
        // Other classes: refused, weights untouched.
        assert!(!other.start_from(&gallery));
        assert!(other.weight.equal(&other_before));
    }

    #[test]
    fn a_classifier_without_init_reads_as_random_and_writes_without_it() {
        let old: ClassifierPreset =
            serde_json::from_str(r#"{"scale": 16.0, "margin": 0.2}"#).unwrap();
        assert_eq!(old.init, crate::preset::HeadInit::Random);
        assert!(!serde_json::to_string(&old).unwrap().contains("init"));
        let g = ClassifierPreset {
            init: crate::preset::HeadInit::Gallery,
            ..old
        };
        let text = serde_json::to_string(&g).unwrap();
        assert!(text.contains(r#""init":"gallery""#), "{text}");
    }
}
