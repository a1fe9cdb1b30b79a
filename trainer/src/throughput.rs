//! Training-step throughput of a network, measured on the same step the trainer takes (forward, cosine-head
//! loss, backward, SGD), on random data. The PyTorch-eager twin is `benches/pytorch/train_step.py`.

use std::time::Instant;

use hetvis_models::arch::ModelSpec;
use serde::Serialize;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::head::CosineHead;
use crate::preset::ClassifierPreset;
use crate::tch_net::TchNet;

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub batch: usize,
    pub threads: i32,
    /// Images per second of each timed step.
    pub images_per_s: Vec<f64>,
    pub median_images_per_s: f64,
}

pub fn measure(
    spec: &ModelSpec,
    batch: usize,
    warmup: usize,
    steps: usize,
    classes: usize,
    device: Device,
) -> Result<Throughput, tch::TchError> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = TchNet::new(
        &(vs.root() / "net"),
        &spec
            .lower()
            .map_err(|e| tch::TchError::Shape(e.to_string()))?,
    );
    let head = CosineHead::new(
        &(vs.root() / "head"),
        classes,
        spec.embedding_dim,
        ClassifierPreset {
            scale: 16.0,
            margin: 0.2,
            init: crate::preset::HeadInit::Random,
        },
    );
    let mut opt = nn::Sgd {
        momentum: 0.9,
        nesterov: true,
        wd: 5e-4,
        ..Default::default()
    }
    .build(&vs, 0.05)?;
    let s = spec.input.size as i64;
    let x = Tensor::randn(
        [batch as i64, spec.input.channels as i64, s, s],
        (Kind::Float, device),
    );
    let y = Tensor::randint(classes as i64, [batch as i64], (Kind::Int64, device));
    let mut rates = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let start = Instant::now();
        let loss = head.loss(&net.forward_t(&x, true), &y);
        opt.backward_step(&loss);
        // Read the loss: forces the step to finish (matters on CUDA) and matches the trainer's loop.
        let _ = loss.double_value(&[]);
        if i >= warmup {
            rates.push(batch as f64 / start.elapsed().as_secs_f64());
        }
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Throughput {
        batch,
        threads: tch::get_num_threads(),
        median_images_per_s: sorted[sorted.len() / 2],
        images_per_s: rates,
    })
}
