//! Every architecture family exports to ONNX, runs in ONNX Runtime, and matches a straightforward reference
//! computation of the same network written here with plain loops (BN not folded), to 1e-4.

use hetvis_models::arch::{
    Backbone, MobileNetV2Spec, ModelSpec, Net, Op, ResNetSpec, Shape, ShuffleNetV2Spec,
    ShuffleWidth, SposSpace, SposSpec, Stem, BN_EPS,
};
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::{
    ModelManifest, Provenance, Role, FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME,
};
use hetvis_models::onnx::{export, graph::to_bytes};
use hetvis_models::preprocess::Preprocessing;
use hetvis_models::prune::{prune_resnet, PruneCriterion};
use hetvis_models::runtime::SessionConfig;
use hetvis_models::weights::Weights;

/// A value of the reference evaluation: one image's tensor and its shape.
#[derive(Clone)]
struct Val {
    shape: Shape,
    data: Vec<f32>,
}

fn reference_forward(net: &Net, w: &Weights, image: &[f32]) -> Vec<f32> {
    let mut vals = vec![Val {
        shape: net.input,
        data: image.to_vec(),
    }];
    let shapes = net.shapes().unwrap();
    for (i, node) in net.nodes.iter().enumerate() {
        let x = &vals[node.inputs[0]];
        let out_shape = shapes[i + 1];
        let data = match &node.op {
            Op::Conv {
                name,
                cin,
                cout,
                kernel,
                stride,
                padding,
                groups,
                bias,
            } => {
                let (Shape::Chw(_, h, wd), Shape::Chw(_, oh, ow)) = (x.shape, out_shape) else {
                    panic!()
                };
                let wt = &w.get(&format!("{name}.weight")).unwrap().data;
                let b = bias.then(|| w.get(&format!("{name}.bias")).unwrap().data.clone());
                let (cpg, opg) = (cin / groups, cout / groups);
                let mut out = vec![0f32; cout * oh * ow];
                for o in 0..*cout {
                    let gi = o / opg;
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
                            for ci in 0..cpg {
                                let c = gi * cpg + ci;
                                for ky in 0..*kernel {
                                    for kx in 0..*kernel {
                                        let iy = (y * stride + ky) as isize - *padding as isize;
                                        let ix = (xx * stride + kx) as isize - *padding as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize
                                        {
                                            continue;
                                        }
                                        let v = x.data[c * h * wd + iy as usize * wd + ix as usize];
                                        acc += v * wt[((o * cpg + ci) * kernel + ky) * kernel + kx];
                                    }
                                }
                            }
                            out[o * oh * ow + y * ow + xx] = acc;
                        }
                    }
                }
                out
            }
            Op::BatchNorm {
                name,
                channels,
                affine,
            } => {
                let get = |s: &str| w.get(&format!("{name}.{s}")).unwrap().data.clone();
                let (mean, var) = (get("running_mean"), get("running_var"));
                let (g, b) = if *affine {
                    (get("weight"), get("bias"))
                } else {
                    (vec![1.0; *channels], vec![0.0; *channels])
                };
                let per = x.data.len() / channels;
                x.data
                    .iter()
                    .enumerate()
                    .map(|(k, v)| {
                        let c = k / per;
                        (v - mean[c]) / (var[c] + BN_EPS as f32).sqrt() * g[c] + b[c]
                    })
                    .collect()
            }
            Op::Relu => x.data.iter().map(|v| v.max(0.0)).collect(),
            Op::Relu6 => x.data.iter().map(|v| v.clamp(0.0, 6.0)).collect(),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let (Shape::Chw(c, h, wd), Shape::Chw(_, oh, ow)) = (x.shape, out_shape) else {
                    panic!()
                };
                let mut out = vec![f32::NEG_INFINITY; c * oh * ow];
                for ch in 0..c {
                    for y in 0..oh {
                        for xx in 0..ow {
                            for ky in 0..*kernel {
                                for kx in 0..*kernel {
                                    let iy = (y * stride + ky) as isize - *padding as isize;
                                    let ix = (xx * stride + kx) as isize - *padding as isize;
                                    if iy >= 0 && ix >= 0 && iy < h as isize && ix < wd as isize {
                                        let o = &mut out[ch * oh * ow + y * ow + xx];
                                        *o = o.max(
                                            x.data[ch * h * wd + iy as usize * wd + ix as usize],
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                out
            }
            Op::GlobalAvgPool => {
                let Shape::Chw(c, h, wd) = x.shape else {
                    panic!()
                };
                (0..c)
                    .map(|ch| {
                        x.data[ch * h * wd..(ch + 1) * h * wd].iter().sum::<f32>() / (h * wd) as f32
                    })
                    .collect()
            }
            Op::Linear {
                name,
                cin,
                cout,
                bias,
            } => {
                let wt = &w.get(&format!("{name}.weight")).unwrap().data;
                let b = bias.then(|| w.get(&format!("{name}.bias")).unwrap().data.clone());
                (0..*cout)
                    .map(|o| {
                        (0..*cin).map(|k| wt[o * cin + k] * x.data[k]).sum::<f32>()
                            + b.as_ref().map_or(0.0, |b| b[o])
                    })
                    .collect()
            }
            Op::Add => {
                let y = &vals[node.inputs[1]];
                x.data.iter().zip(&y.data).map(|(a, b)| a + b).collect()
            }
            Op::SliceChannels { start, len } => {
                let Shape::Chw(_, h, wd) = x.shape else {
                    panic!()
                };
                x.data[start * h * wd..(start + len) * h * wd].to_vec()
            }
            Op::Concat => node
                .inputs
                .iter()
                .flat_map(|&v| vals[v].data.clone())
                .collect(),
            Op::Mean => (0..x.data.len())
                .map(|k| {
                    node.inputs.iter().map(|&v| vals[v].data[k]).sum::<f32>()
                        / node.inputs.len() as f32
                })
                .collect(),
            Op::ChannelShuffle { groups } => {
                let Shape::Chw(c, h, wd) = x.shape else {
                    panic!()
                };
                let per = c / groups;
                let mut out = vec![0f32; x.data.len()];
                // Output channel i * groups + g comes from input channel g * per + i.
                for g in 0..*groups {
                    for i in 0..per {
                        let (src, dst) = (g * per + i, i * groups + g);
                        out[dst * h * wd..(dst + 1) * h * wd]
                            .copy_from_slice(&x.data[src * h * wd..(src + 1) * h * wd]);
                    }
                }
                out
            }
            Op::L2Normalize => {
                let n = x.data.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                x.data.iter().map(|v| v / n).collect()
            }
        };
        assert_eq!(data.len(), out_shape.numel(), "node {i} {:?}", node.op);
        vals.push(Val {
            shape: out_shape,
            data,
        });
    }
    vals[net.output].data.clone()
}

fn manifest(spec: &ModelSpec, role: Role) -> ModelManifest {
    let net = spec.lower().unwrap();
    let cost = hetvis_models::flops::count(&net).unwrap();
    ModelManifest {
        format_version: FORMAT_VERSION,
        name: format!("test-{}", spec.backbone.family()),
        role,
        spec: spec.clone(),
        mmacs: cost.mmacs(),
        params: cost.params,
        embedding_dim: spec.embedding_dim,
        preprocessing: Preprocessing {
            size: spec.input.size,
            channels: spec.input.channels,
            mean: vec![0.5; spec.input.channels],
            std: vec![0.25; spec.input.channels],
        },
        compat_id: "test-space".into(),
        input_name: INPUT_NAME.into(),
        output_name: OUTPUT_NAME.into(),
        provenance: Provenance::default(),
        evaluation: Default::default(),
    }
}

fn small_specs() -> Vec<ModelSpec> {
    let mut spos = SposSpec {
        space: SposSpace::new(0.25, Stem::Small),
        blocks: vec![0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 0, 1, 2, 3, 3, 2, 1, 0],
        widths: (0..20).map(|i| (i % 10) as u8).collect(),
    };
    spos.widths[19] = 9;
    vec![
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth: 18,
                width: 0.125,
                stem: Stem::Imagenet,
                inner: None,
            }),
            32,
            16,
        ),
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth: 50,
                width: 0.125,
                stem: Stem::Small,
                inner: None,
            }),
            16,
            16,
        ),
        // A pruned ResNet: uneven inner channel counts per block.
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth: 50,
                width: 0.125,
                stem: Stem::Small,
                inner: Some((0..16).map(|b| vec![1 + b % 5, 1 + (b * 3) % 7]).collect()),
            }),
            16,
            16,
        ),
        ModelSpec::new(
            Backbone::Mobilenetv2(MobileNetV2Spec::new(0.25, Stem::Small)),
            16,
            16,
        ),
        ModelSpec::new(
            Backbone::Shufflenetv2(ShuffleNetV2Spec {
                width: ShuffleWidth::X0_5,
                stem: Stem::Small,
            }),
            16,
            16,
        ),
        ModelSpec::new(Backbone::Spos(spos), 16, 16),
    ]
}

fn pseudo_images(n: usize, len: usize) -> Vec<f32> {
    (0..n * len)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

#[test]
fn every_family_exports_runs_and_matches_the_reference() {
    hetvis_models::runtime::init(None).expect("ONNX Runtime (run `make setup`)");
    for (s, spec) in small_specs().into_iter().enumerate() {
        let net = spec.lower().unwrap();
        let weights = Weights::random(&net, 42 + s as u64);
        let m = manifest(&spec, Role::Query);
        let bytes = to_bytes(&export(&spec, &weights, &m).unwrap());
        let mut e = Embedder::from_bytes(
            &bytes,
            std::path::Path::new("mem.onnx"),
            &SessionConfig::default(),
        )
        .unwrap();
        assert_eq!(e.manifest(), &m);
        let n = 3;
        let images = pseudo_images(n, e.input_len());
        let out = e.embed(&images).unwrap();
        assert_eq!(out.len(), n * spec.embedding_dim);
        for (i, row) in out.chunks_exact(spec.embedding_dim).enumerate() {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-4,
                "{} row {i}: norm {norm}",
                spec.backbone.family()
            );
            let want = reference_forward(
                &net,
                &weights,
                &images[i * e.input_len()..(i + 1) * e.input_len()],
            );
            let diff = row
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                diff <= 1e-4,
                "{:?}: max |onnx - reference| = {diff}",
                spec.backbone
            );
        }
    }
}

#[test]
fn embedder_refuses_wrong_role_and_bad_batches() {
    hetvis_models::runtime::init(None).unwrap();
    let spec = small_specs().remove(0);
    let weights = Weights::random(&spec.lower().unwrap(), 1);
    let bytes = to_bytes(&export(&spec, &weights, &manifest(&spec, Role::Gallery)).unwrap());
    let mut e = Embedder::from_bytes(
        &bytes,
        std::path::Path::new("g.onnx"),
        &SessionConfig::default(),
    )
    .unwrap();
    assert!(e.expect_role(Role::Gallery).is_ok());
    let err = e.expect_role(Role::Query).unwrap_err().to_string();
    assert!(err.contains("gallery model"), "{err}");
    assert!(e.embed(&[0.0; 5]).is_err());
    assert!(e.embed(&[]).is_err());
}

#[test]
fn export_refuses_weights_that_do_not_fit() {
    let spec = small_specs().remove(0);
    let net = spec.lower().unwrap();
    let mut weights = Weights::random(&net, 1);
    let first = net.params()[0].name.clone();
    weights.0.get_mut(&first).unwrap().shape[0] += 1;
    assert!(export(&spec, &weights, &manifest(&spec, Role::Query)).is_err());
    weights.0.remove(&first);
    let err = export(&spec, &weights, &manifest(&spec, Role::Query)).unwrap_err();
    assert!(err.to_string().contains(&first), "{err}");
}

/// Pruning removes real channels: when the pruned filters are dead (zero weights, BN scale and shift 0), the
/// smaller exported network computes exactly what the original computes.
#[test]
fn pruning_dead_filters_exports_a_smaller_network_with_the_same_output() {
    hetvis_models::runtime::init(None).unwrap();
    let spec = small_specs().remove(1);
    let net = spec.lower().unwrap();
    let mut weights = Weights::random(&net, 5);
    // Kill every other filter of each block's first two layers.
    let names: Vec<String> = net
        .params()
        .into_iter()
        .map(|p| p.name)
        .filter(|n| (n.contains(".unit1.") || n.contains(".unit2.")) && n.starts_with("layer"))
        .collect();
    for name in &names {
        let t = weights.0.get_mut(name).unwrap();
        let per = t.data.len() / t.shape[0];
        let is_conv = name.ends_with("conv.weight");
        let is_affine = name.ends_with("bn.weight") || name.ends_with("bn.bias");
        for (i, v) in t.data.iter_mut().enumerate() {
            if (i / per) % 2 == 1 && (is_conv || is_affine) {
                *v = 0.0;
            }
        }
    }
    let embed = |spec: &ModelSpec, w: &Weights| {
        let bytes = to_bytes(&export(spec, w, &manifest(spec, Role::Query)).unwrap());
        let mut e = Embedder::from_bytes(
            &bytes,
            std::path::Path::new("m.onnx"),
            &SessionConfig::default(),
        )
        .unwrap();
        let images = pseudo_images(2, e.input_len());
        e.embed(&images).unwrap()
    };
    let full = embed(&spec, &weights);
    for criterion in [PruneCriterion::Magnitude, PruneCriterion::Channel] {
        let p = prune_resnet(&spec, &weights, criterion, 0.5).unwrap();
        for block in &p.kept {
            for layer in block {
                assert!(
                    layer.iter().all(|c| c % 2 == 0),
                    "{criterion:?} kept a dead filter: {layer:?}"
                );
            }
        }
        let mmacs = |s: &ModelSpec| {
            hetvis_models::flops::count(&s.lower().unwrap())
                .unwrap()
                .mmacs()
        };
        assert!(mmacs(&p.spec) < 0.75 * mmacs(&spec));
        let pruned = embed(&p.spec, &p.weights);
        let diff = full
            .iter()
            .zip(&pruned)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{criterion:?}: max |full - pruned| = {diff}");
    }
}
