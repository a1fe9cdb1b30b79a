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
}
