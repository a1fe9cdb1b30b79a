//! Typed device selection for training: `cpu`, `cuda`, or `auto` (CUDA when available).

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    #[default]
    Auto,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device cuda was requested but libtorch sees no CUDA device (CPU build? run `make setup GPU=1` on a GPU machine)")]
    NoCuda,
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<tch::Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            DeviceChoice::Cuda => Err(DeviceError::NoCuda),
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module, OptimizerConfig};
    use tch::{Kind, Tensor};

    #[test]
    fn cpu_resolves_and_auto_is_usable() {
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), tch::Device::Cpu);
        assert!(DeviceChoice::Auto.resolve().is_ok());
    }

    /// libtorch really runs from Rust: a small conv net takes SGD steps on a fixed batch and its loss falls.
    #[test]
    fn libtorch_forward_backward_step_on_cpu() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let net = nn::seq()
            .add(nn::conv2d(&root / "c1", 1, 8, 3, Default::default()))
            .add_fn(|x| x.relu().adaptive_avg_pool2d([1, 1]).flatten(1, -1))
            .add(nn::linear(&root / "fc", 8, 3, Default::default()));
        let x = Tensor::randn([16, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
        let y = Tensor::randint(3, [16], (Kind::Int64, tch::Device::Cpu));
        let mut opt = nn::Sgd {
            momentum: 0.9,
            ..Default::default()
        }
        .build(&vs, 0.1)
        .unwrap();
        let first = net
            .forward(&x)
            .cross_entropy_for_logits(&y)
            .double_value(&[]);
        let mut last = first;
        for _ in 0..30 {
            let loss = net.forward(&x).cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
            last = loss.double_value(&[]);
        }
        assert!(
            last.is_finite() && last < first * 0.8,
            "loss {first} -> {last}"
        );
        assert!(vs.trainable_variables().iter().all(|v| v.grad().defined()));
    }
}
