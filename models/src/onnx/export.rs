//! ONNX export of a [`ModelSpec`] plus its weights: the inference graph the indexer and server run.
//!
//! Walks the same lowered [`Net`] as the FLOPs counter and the trainer. Batch norm that directly follows a conv or
//! linear layer (and is that layer's only consumer) is folded into its weights; any other BN becomes a per-channel
//! multiply-add. The batch dimension is symbolic (`batch`); the image size is fixed by the spec.

use std::collections::HashMap;

use crate::arch::{ArchError, ModelSpec, Net, Op, Shape, BN_EPS, INPUT};
use crate::manifest::{ModelManifest, INPUT_NAME, METADATA_KEY, OUTPUT_NAME};
use crate::weights::{Weights, WeightsError};

use super::graph::{Attr, Dim, GraphBuilder};
use super::proto::ModelProto;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Arch(#[from] ArchError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("manifest does not match the spec: {0}")]
    Manifest(String),
}

/// Per-channel affine transform `y = x * scale + shift` equivalent to an inference-mode BN.
fn bn_affine(
    w: &Weights,
    name: &str,
    channels: usize,
    affine: bool,
) -> Result<(Vec<f32>, Vec<f32>), WeightsError> {
    let mean = &w.get(&format!("{name}.running_mean"))?.data;
    let var = &w.get(&format!("{name}.running_var"))?.data;
    let (gamma, beta) = if affine {
        (
            w.get(&format!("{name}.weight"))?.data.clone(),
            w.get(&format!("{name}.bias"))?.data.clone(),
        )
    } else {
        (vec![1.0; channels], vec![0.0; channels])
    };
    let scale: Vec<f32> = (0..channels)
        .map(|c| (gamma[c] as f64 / (var[c] as f64 + BN_EPS).sqrt()) as f32)
        .collect();
    let shift = (0..channels)
        .map(|c| beta[c] - mean[c] * scale[c])
        .collect();
    Ok((scale, shift))
}

/// A conv/linear layer's tensors after folding.
struct Folded {
    shape: Vec<usize>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

/// Weight (scaled per output row) and bias of a conv/linear layer with an optional BN folded in.
fn fold(
    w: &Weights,
    layer: &str,
    has_bias: bool,
    bn: Option<(&str, usize, bool)>,
) -> Result<Folded, WeightsError> {
    let weight = w.get(&format!("{layer}.weight"))?;
    let cout = weight.shape[0];
    let bias = if has_bias {
        Some(w.get(&format!("{layer}.bias"))?.data.clone())
    } else {
        None
    };
    let Some((bn_name, channels, affine)) = bn else {
        return Ok(Folded {
            shape: weight.shape.clone(),
            weight: weight.data.clone(),
            bias,
        });
    };
    let (scale, shift) = bn_affine(w, bn_name, channels, affine)?;
    let per_row = weight.data.len() / cout;
    let mut data = weight.data.clone();
    for (c, row) in data.chunks_exact_mut(per_row).enumerate() {
        row.iter_mut().for_each(|v| *v *= scale[c]);
    }
    let b = (0..cout)
        .map(|c| bias.as_ref().map_or(0.0, |b| b[c]) * scale[c] + shift[c])
        .collect();
    Ok(Folded {
        shape: weight.shape.clone(),
        weight: data,
        bias: Some(b),
    })
}

/// Finds BN nodes that can fold into the conv/linear feeding them: `conv node -> BN node`.
fn foldable(net: &Net) -> HashMap<usize, usize> {
    let mut consumers = vec![0usize; net.nodes.len() + 1];
    for n in &net.nodes {
        for &v in &n.inputs {
            consumers[v] += 1;
        }
    }
    let mut out = HashMap::new();
    for (i, n) in net.nodes.iter().enumerate() {
        if let (Op::BatchNorm { .. }, [src]) = (&n.op, n.inputs.as_slice()) {
            let src = *src;
            if src != INPUT
                && consumers[src] == 1
                && matches!(net.nodes[src - 1].op, Op::Conv { .. } | Op::Linear { .. })
            {
                out.insert(src - 1, i);
            }
        }
    }
    out
}

/// Builds the ONNX model. `manifest` is mirrored into `metadata_props` and must describe this spec.
pub fn export(
    spec: &ModelSpec,
    weights: &Weights,
    manifest: &ModelManifest,
) -> Result<ModelProto, ExportError> {
    if &manifest.spec != spec || manifest.embedding_dim != spec.embedding_dim {
        return Err(ExportError::Manifest(
            "spec or embedding_dim differs".into(),
        ));
    }
    let net = spec.lower()?;
    let shapes = net.shapes().map_err(ArchError::from)?;
    weights.check(&net)?;
    let folds = foldable(&net);
    let folded_bn: std::collections::HashSet<usize> = folds.values().copied().collect();

    let mut g = GraphBuilder::new(&manifest.name);
    let batch = Dim::Named("batch".into());
    let (c, s) = (spec.input.channels as i64, spec.input.size as i64);
    g.input(
        INPUT_NAME,
        &[batch.clone(), Dim::Fixed(c), Dim::Fixed(s), Dim::Fixed(s)],
    );

    // ONNX tensor name of each Net value.
    let mut names: Vec<String> = vec![INPUT_NAME.to_owned()];
    for (i, node) in net.nodes.iter().enumerate() {
        let x: Vec<&str> = node.inputs.iter().map(|&v| names[v].as_str()).collect();
        if folded_bn.contains(&i) {
            // The conv/linear before it already produced the normalised value.
            let src = names[node.inputs[0]].clone();
            names.push(src);
            continue;
        }
        let bn_of = |j: usize| {
            folds.get(&j).map(|&b| match &net.nodes[b].op {
                Op::BatchNorm {
                    name,
                    channels,
                    affine,
                } => (name.as_str(), *channels, *affine),
                _ => unreachable!("folds only map to BN nodes"),
            })
        };
        let out = match &node.op {
            Op::Conv {
                name,
                kernel,
                stride,
                padding,
                groups,
                bias,
                ..
            } => {
                let f = fold(weights, name, *bias, bn_of(i))?;
                let wn = g.init_f32(&format!("{name}.weight"), &f.shape, &f.weight);
                let mut ins = vec![x[0].to_owned(), wn];
                if let Some(b) = f.bias {
                    ins.push(g.init_f32(&format!("{name}.bias"), &[f.shape[0]], &b));
                }
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                let (k, st, p) = (*kernel as i64, *stride as i64, *padding as i64);
                g.node(
                    "Conv",
                    &ins,
                    name,
                    &[
                        ("kernel_shape", Attr::Ints(vec![k, k])),
                        ("strides", Attr::Ints(vec![st, st])),
                        ("pads", Attr::Ints(vec![p, p, p, p])),
                        ("group", Attr::Int(*groups as i64)),
                    ],
                )
            }
            Op::Linear {
                name, cout, bias, ..
            } => {
                let f = fold(weights, name, *bias, bn_of(i))?;
                let wn = g.init_f32(&format!("{name}.weight"), &f.shape, &f.weight);
                let b = f.bias.unwrap_or_else(|| vec![0.0; *cout]);
                let bn = g.init_f32(&format!("{name}.bias"), &[*cout], &b);
                g.node("Gemm", &[x[0], &wn, &bn], name, &[("transB", Attr::Int(1))])
            }
            Op::BatchNorm {
                name,
                channels,
                affine,
            } => {
                let (scale, shift) = bn_affine(weights, name, *channels, *affine)?;
                let dims: Vec<usize> = match shapes[node.inputs[0]] {
                    Shape::Chw(..) => vec![*channels, 1, 1],
                    Shape::Flat(_) => vec![*channels],
                };
                let sn = g.init_f32(&format!("{name}.scale"), &dims, &scale);
                let tn = g.init_f32(&format!("{name}.shift"), &dims, &shift);
                let m = g.node("Mul", &[x[0], &sn], name, &[]);
                g.node("Add", &[&m, &tn], name, &[])
            }
            Op::Relu => g.node("Relu", &x, "relu", &[]),
            Op::Relu6 => {
                let lo = g.init_f32(&format!("clip_min_{i}"), &[], &[0.0]);
                let hi = g.init_f32(&format!("clip_max_{i}"), &[], &[6.0]);
                g.node("Clip", &[x[0], &lo, &hi], "relu6", &[])
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let (k, st, p) = (*kernel as i64, *stride as i64, *padding as i64);
                g.node(
                    "MaxPool",
                    &x,
                    "maxpool",
                    &[
                        ("kernel_shape", Attr::Ints(vec![k, k])),
                        ("strides", Attr::Ints(vec![st, st])),
                        ("pads", Attr::Ints(vec![p, p, p, p])),
                    ],
                )
            }
            Op::GlobalAvgPool => {
                let p = g.node("GlobalAveragePool", &x, "gap", &[]);
                g.node("Flatten", &[&p], "flatten", &[("axis", Attr::Int(1))])
            }
            Op::Add => g.node("Add", &x, "add", &[]),
            Op::Mean => g.node("Mean", &x, "mean", &[]),
            Op::SliceChannels { start, len } => {
                let st = g.init_i64(&format!("slice_start_{i}"), &[*start as i64]);
                let en = g.init_i64(&format!("slice_end_{i}"), &[(start + len) as i64]);
                let ax = g.init_i64(&format!("slice_axes_{i}"), &[1]);
                g.node("Slice", &[x[0], &st, &en, &ax], "slice", &[])
            }
            Op::Concat => g.node("Concat", &x, "concat", &[("axis", Attr::Int(1))]),
            Op::ChannelShuffle { groups } => {
                let Shape::Chw(ch, h, w) = shapes[node.inputs[0]] else {
                    unreachable!("shape inference checked NCHW")
                };
                let gr = *groups as i64;
                let split = g.init_i64(
                    &format!("shuffle_split_{i}"),
                    &[0, gr, ch as i64 / gr, (h * w) as i64],
                );
                let back = g.init_i64(
                    &format!("shuffle_back_{i}"),
                    &[0, ch as i64, h as i64, w as i64],
                );
                let r = g.node("Reshape", &[x[0], &split], "shuffle", &[]);
                let t = g.node(
                    "Transpose",
                    &[&r],
                    "shuffle",
                    &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
                );
                g.node("Reshape", &[&t, &back], "shuffle", &[])
            }
            Op::L2Normalize => {
                // x / max(||x||, 1e-12), as torch.nn.functional.normalize: a zero vector stays zero, not NaN.
                let n = g.node(
                    "ReduceL2",
                    &x,
                    "l2",
                    &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))],
                );
                let eps = g.init_f32(&format!("l2_eps_{i}"), &[], &[1e-12]);
                let n = g.node("Max", &[&n, &eps], "l2", &[]);
                g.node("Div", &[x[0], &n], "l2", &[])
            }
        };
        names.push(out);
    }
    // Name the final value as the graph output.
    let last = names[net.output].clone();
    g.node_named("Identity", &[&last], OUTPUT_NAME, &[]);
    g.output(OUTPUT_NAME, &[batch, Dim::Fixed(spec.embedding_dim as i64)]);
    let metadata = vec![
        (METADATA_KEY.to_owned(), manifest.to_json()),
        ("hetvis.role".to_owned(), manifest.role.to_string()),
        ("hetvis.compat_id".to_owned(), manifest.compat_id.clone()),
    ];
    Ok(g.finish(&metadata))
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Write(#[from] crate::atomic::AtomicWriteError),
}

/// Exports and writes `model.onnx` plus its manifest beside it (`model.json`).
pub fn export_to_files(
    path: &std::path::Path,
    spec: &ModelSpec,
    weights: &Weights,
    manifest: &ModelManifest,
) -> Result<(), WriteError> {
    use prost::Message;
    let model = export(spec, weights, manifest)?;
    crate::atomic::write(path, &model.encode_to_vec())?;
    crate::atomic::write(
        &ModelManifest::sidecar_path(path),
        manifest.to_json().as_bytes(),
    )?;
    Ok(())
}
