//! `hetvis-train smoke`: a small CNN classifier on Fashion-MNIST. It proves libtorch trains on real data from
//! Rust end to end (data -> tensors -> SGD -> test accuracy) in well under a minute on 2 CPU cores.

use std::time::Instant;

use hetvis_models::data::fashion_mnist::{FashionMnist, Split, NUM_CLASSES};
use hetvis_models::data::LabelledImages;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, serde::Serialize)]
pub struct SmokeReport {
    pub epochs: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub final_train_loss: f64,
    pub test_accuracy: f64,
    pub train_images_per_s: f64,
    pub seconds: f64,
}

/// Images as `[N, 1, H, W]` floats in 0..1 and labels as int64.
pub fn to_tensors(set: &LabelledImages, device: Device) -> (Tensor, Tensor) {
    let x = Tensor::from_slice(&set.pixels)
        .view([set.len() as i64, 1, set.rows as i64, set.cols as i64])
        .to_kind(Kind::Float)
        / 255.0;
    let y = Tensor::from_slice(&set.labels).to_kind(Kind::Int64);
    (x.to_device(device), y.to_device(device))
}

fn net(p: &nn::Path) -> impl ModuleT {
    let conv = |p: nn::Path, i, o| {
        nn::seq_t()
            .add(nn::conv2d(
                &p / "conv",
                i,
                o,
                3,
                nn::ConvConfig {
                    padding: 1,
                    bias: false,
                    ..Default::default()
                },
            ))
            .add(nn::batch_norm2d(&p / "bn", o, Default::default()))
            .add_fn(|x| x.relu().max_pool2d_default(2))
    };
    nn::seq_t()
        .add(conv(p / "b1", 1, 32))
        .add(conv(p / "b2", 32, 64))
        .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
        .add(nn::linear(
            p / "fc",
            64,
            NUM_CLASSES as i64,
            Default::default(),
        ))
}

pub fn run(
    data: &FashionMnist,
    epochs: usize,
    batch: i64,
    device: Device,
) -> anyhow::Result<SmokeReport> {
    tch::manual_seed(0);
    let (train_x, train_y) = to_tensors(&data.load(Split::Train)?, device);
    let (test_x, test_y) = to_tensors(&data.load(Split::Test)?, device);
    let n = train_x.size()[0];
    let vs = nn::VarStore::new(device);
    let model = net(&vs.root());
    let mut opt = nn::Adam::default().build(&vs, 2e-3)?;
    let steps = (n + batch - 1) / batch;
    let bar = crate::progress::bar(
        (steps as usize * epochs) as u64,
        "{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
    );
    bar.set_prefix("smoke");
    let start = Instant::now();
    let mut last_loss = f64::NAN;
    for _ in 0..epochs {
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        for s in 0..steps {
            let idx = perm.narrow(0, s * batch, batch.min(n - s * batch));
            let loss = model
                .forward_t(&train_x.index_select(0, &idx), true)
                .cross_entropy_for_logits(&train_y.index_select(0, &idx));
            opt.backward_step(&loss);
            last_loss = loss.double_value(&[]);
            let rate = ((s + 1) * batch) as f64 / start.elapsed().as_secs_f64();
            bar.set_message(format!("loss {last_loss:.3}, {rate:.0} img/s"));
            bar.inc(1);
        }
    }
    bar.finish();
    let train_seconds = start.elapsed().as_secs_f64();
    let correct = tch::no_grad(|| {
        test_x
            .split(1000, 0)
            .iter()
            .zip(test_y.split(1000, 0))
            .map(|(x, y)| {
                model
                    .forward_t(x, false)
                    .argmax(-1, false)
                    .eq_tensor(&y)
                    .sum(Kind::Int64)
                    .int64_value(&[])
            })
            .sum::<i64>()
    });
    let test_images = test_y.size()[0] as usize;
    Ok(SmokeReport {
        epochs,
        train_images: n as usize,
        test_images,
        final_train_loss: last_loss,
        test_accuracy: correct as f64 / test_images as f64,
        train_images_per_s: (n as usize * epochs) as f64 / train_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })
}
