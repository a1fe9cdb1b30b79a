//! Parity: for every architecture family, the tch model and its ONNX export give the same embeddings
//! (max abs difference <= 1e-4) on a batch of real Fashion-MNIST images, in inference mode with non-trivial BN
//! statistics (so BN folding is exercised).
//!
//! The ResNet family is checked at depth 50 (the same bottleneck layers as the gallery's 101). A random-init
//! ResNet-101 of width 0.125-0.5 differs by 1-2e-4 here, with ONNX Runtime's graph optimisations on or off:
//! f32 rounding grows over its 100+ layers when BN statistics come from random features. The trained gallery
//! ResNet-101 gets its own parity check in the end-to-end training test.

use hetvis_models::arch::{
    Backbone, MobileNetV2Spec, ModelSpec, ResNetSpec, ShuffleNetV2Spec, ShuffleWidth, SposSpace,
    SposSpec, Stem,
};
use hetvis_models::data::fashion_mnist::{FashionMnist, Split};
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::{ModelManifest, Provenance, Role};
use hetvis_models::onnx::{export, graph::to_bytes};
use hetvis_models::preprocess::{preprocess_gray, Preprocessing};
use hetvis_models::runtime::SessionConfig;
use hetvis_trainer::tch_net::TchNet;
use tch::{nn, Device, Tensor};

fn specs(size: usize) -> Vec<ModelSpec> {
    let small = Stem::Small;
    vec![
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth: 50,
                width: 0.25,
                stem: Stem::Imagenet,
                inner: None,
            }),
            size,
            32,
        ),
        // A pruned ResNet-50: uneven inner channel counts, as `hetvis_models::prune` writes them.
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth: 50,
                width: 0.25,
                stem: Stem::Imagenet,
                inner: Some((0..16).map(|b| vec![2 + b % 5, 1 + (b * 3) % 9]).collect()),
            }),
            size,
            32,
        ),
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth: 18,
                width: 0.25,
                stem: small,
                inner: None,
            }),
            size,
            32,
        ),
        ModelSpec::new(
            Backbone::Mobilenetv2(MobileNetV2Spec::new(0.5, small)),
            size,
            32,
        ),
        ModelSpec::new(
            Backbone::Shufflenetv2(ShuffleNetV2Spec {
                width: ShuffleWidth::X0_5,
                stem: small,
            }),
            size,
            32,
        ),
        ModelSpec::new(
            Backbone::Spos(SposSpec {
                space: SposSpace::new(0.5, small),
                blocks: vec![3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 0, 3, 1, 2],
                widths: vec![0, 9, 4, 2, 7, 1, 3, 5, 6, 8, 0, 9, 4, 2, 7, 1, 3, 5, 6, 8],
            }),
            size,
            32,
        ),
    ]
}

#[test]
fn tch_and_onnx_runtime_agree_on_real_images() {
    hetvis_models::runtime::init(None).expect("ONNX Runtime (run `make setup`)");
    tch::manual_seed(3);
    let size = 32;
    let pre = Preprocessing::fashion_mnist(size);
    let test = FashionMnist::from_env()
        .load(Split::Test)
        .expect("Fashion-MNIST");
    // BN statistics come from 128 images (as from training, not from a handful: a batch of 8 leaves
    // zero-variance channels whose 1/sqrt(eps) scale amplifies float rounding); parity is checked on 8.
    let calib_n = 128;
    let mut calib = Vec::new();
    for i in 0..calib_n {
        preprocess_gray(test.image(i * 77), 28, 28, &pre, &mut calib);
    }
    let calib = Tensor::from_slice(&calib).view([calib_n as i64, 3, size as i64, size as i64]);
    let n = 8;
    let mut batch = Vec::new();
    for i in 0..n {
        preprocess_gray(test.image(i * 997 + 1), 28, 28, &pre, &mut batch);
    }
    let x = Tensor::from_slice(&batch).view([n as i64, 3, size as i64, size as i64]);

    for spec in specs(size) {
        let net = spec.lower().unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = TchNet::new(&vs.root(), &net);
        // Give BN the running statistics of real data, as after training: one training-mode pass with
        // momentum 1 sets them to this batch's statistics.
        model.set_bn_momentum(1.0);
        let _ = tch::no_grad(|| model.forward_t(&calib, true));
        let expected = tch::no_grad(|| model.forward_t(&x, false));
        let weights = model.weights().unwrap();
        let manifest = ModelManifest::for_spec(
            "parity",
            Role::Query,
            &spec,
            pre.clone(),
            "parity",
            Provenance::default(),
        )
        .unwrap();
        let bytes = to_bytes(&export(&spec, &weights, &manifest).unwrap());
        let mut e = Embedder::from_bytes(
            &bytes,
            std::path::Path::new("parity.onnx"),
            &SessionConfig::default(),
        )
        .unwrap();
        let got = e.embed(&batch).unwrap();
        let want = Vec::<f32>::try_from(expected.flatten(0, -1)).unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= 1e-4,
            "{}: max |tch - onnx| = {diff}",
            spec.backbone.family()
        );

        // The embeddings are not degenerate (distinct images give distinct unit vectors).
        assert!((got[0] - got[32]).abs() + (got[1] - got[33]).abs() > 1e-6);
    }
}

/// The trained gallery network (ResNet-101 depth) agrees with its ONNX export on real images.
#[test]
fn trained_gallery_resnet101_matches_its_onnx_export() {
    use hetvis_trainer::data::{Dataset, Source};
    use hetvis_trainer::preset;
    use hetvis_trainer::train::{self, Objective, RunConfig};

    hetvis_models::runtime::init(None).unwrap();
    let p = preset::load("tiny", None).unwrap();
    let pre = Preprocessing::fashion_mnist(p.input_size);
    let fm = FashionMnist::from_env();
    let ds = Dataset::load(
        &Source::Preset(p.data.clone()),
        &fm,
        pre.clone(),
        p.val_fraction,
        Device::Cpu,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = RunConfig {
        name: "g".into(),
        spec: p.gallery_spec(),
        objective: Objective::Gallery,
        schedule: preset::Schedule {
            epochs: 1,
            ..p.gallery.train
        },
        classifier: p.classifier,
        bct_weight: p.bct_weight,
        l2_weight: p.l2_weight,
        augment: true,
        seed: 1,
        data: "synthetic".into(),
        preset: "tiny".into(),
        init: None,
        kd: p.kd,
        compat: Default::default(),
    };
    train::run(dir.path(), &config, &ds, Device::Cpu).unwrap();

    let vs = nn::VarStore::new(Device::Cpu);
    let model = TchNet::new(&vs.root(), &config.spec.lower().unwrap());
    let w = hetvis_models::weights::Weights::load(&dir.path().join("weights.safetensors")).unwrap();
    hetvis_trainer::tch_net::load_into(&vs, &w).unwrap();
    let test = fm.load(Split::Test).unwrap();
    let mut batch = Vec::new();
    for i in 0..16 {
        preprocess_gray(test.image(i * 613), 28, 28, &pre, &mut batch);
    }
    let s = p.input_size as i64;
    let x = Tensor::from_slice(&batch).view([16, 3, s, s]);
    let want =
        Vec::<f32>::try_from(tch::no_grad(|| model.forward_t(&x, false)).flatten(0, -1)).unwrap();
    let mut e = Embedder::load(&dir.path().join("model.onnx"), &SessionConfig::default()).unwrap();
    let got = e.embed(&batch).unwrap();
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff <= 1e-4,
        "trained ResNet-101: max |tch - onnx| = {diff}"
    );
}
