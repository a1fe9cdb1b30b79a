//! A tch module built from a lowered [`Net`]: the same layers, in the same order, under the same weight names
//! that the FLOPs counter counts and the ONNX exporter reads. Nothing about an architecture is defined here.

use hetvis_models::arch::{Net, Op, ParamShape, BN_EPS};
use hetvis_models::weights::Weights;
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// PyTorch's default BN momentum: running = 0.9 * running + 0.1 * batch.
pub const BN_MOMENTUM: f64 = 0.1;

enum Layer {
    Conv {
        weight: Tensor,
        bias: Option<Tensor>,
        stride: i64,
        padding: i64,
        groups: i64,
    },
    BatchNorm {
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        mean: Tensor,
        var: Tensor,
    },
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// Parameter-free ops are evaluated from the `Net` node itself.
    Stateless,
}

pub struct TchNet {
    net: Net,
    layers: Vec<Layer>,
    bn_momentum: f64,
}

impl std::fmt::Debug for TchNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TchNet({} nodes)", self.net.nodes.len())
    }
}

impl TchNet {
    /// Creates the variables of `net` under `root` (torchvision-style init: Kaiming-normal fan-out convs,
    /// BN weight 1 / bias 0, zero linear bias).
    pub fn new(root: &nn::Path, net: &Net) -> Self {
        let layers = net
            .nodes
            .iter()
            .map(|node| match &node.op {
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
                    let p = sub(root, name);
                    let k = *kernel as i64;
                    let init = Init::Kaiming {
                        dist: nn::init::NormalOrUniform::Normal,
                        fan: nn::init::FanInOut::FanOut,
                        non_linearity: nn::init::NonLinearity::ReLU,
                    };
                    Layer::Conv {
                        weight: p.var("weight", &[*cout as i64, (cin / groups) as i64, k, k], init),
                        bias: bias.then(|| p.var("bias", &[*cout as i64], Init::Const(0.0))),
                        stride: *stride as i64,
                        padding: *padding as i64,
                        groups: *groups as i64,
                    }
                }
                Op::BatchNorm {
                    name,
                    channels,
                    affine,
                } => {
                    let p = sub(root, name);
                    let c = *channels as i64;
                    Layer::BatchNorm {
                        weight: affine.then(|| p.var("weight", &[c], Init::Const(1.0))),
                        bias: affine.then(|| p.var("bias", &[c], Init::Const(0.0))),
                        mean: p.zeros_no_train("running_mean", &[c]),
                        var: p.ones_no_train("running_var", &[c]),
                    }
                }
                Op::Linear {
                    name,
                    cin,
                    cout,
                    bias,
                } => {
                    let p = sub(root, name);
                    Layer::Linear {
                        weight: p.var(
                            "weight",
                            &[*cout as i64, *cin as i64],
                            nn::init::DEFAULT_KAIMING_UNIFORM,
                        ),
                        bias: bias.then(|| p.var("bias", &[*cout as i64], Init::Const(0.0))),
                    }
                }
                _ => Layer::Stateless,
            })
            .collect();
        Self {
            net: net.clone(),
            layers,
            bn_momentum: BN_MOMENTUM,
        }
    }

    /// Sets the BN momentum of training-mode passes. BN recalibration uses `1 / (t + 1)` at step `t` (a
    /// cumulative average, PyTorch's `momentum=None`); `1.0` sets the statistics to the current batch's.
    pub fn set_bn_momentum(&mut self, momentum: f64) {
        self.bn_momentum = momentum;
    }

    /// A network whose tensors come from `lookup` (called once per tensor, in `Op::params()` order): the
    /// super-network hands out slices of its widest tensors, so a child trains and evaluates in place.
    pub fn from_lookup(net: &Net, mut lookup: impl FnMut(&ParamShape) -> Tensor) -> Self {
        let layers = net
            .nodes
            .iter()
            .map(|node| {
                let mut params = node.op.params().into_iter();
                let mut next = || lookup(&params.next().expect("a tensor per parameter"));
                match &node.op {
                    Op::Conv {
                        stride,
                        padding,
                        groups,
                        bias,
                        ..
                    } => Layer::Conv {
                        weight: next(),
                        bias: bias.then(&mut next),
                        stride: *stride as i64,
                        padding: *padding as i64,
                        groups: *groups as i64,
                    },
                    Op::BatchNorm { affine, .. } => {
                        let (weight, bias) = if *affine {
                            (Some(next()), Some(next()))
                        } else {
                            (None, None)
                        };
                        Layer::BatchNorm {
                            weight,
                            bias,
                            mean: next(),
                            var: next(),
                        }
                    }
                    Op::Linear { bias, .. } => Layer::Linear {
                        weight: next(),
                        bias: bias.then(&mut next),
                    },
                    _ => Layer::Stateless,
                }
            })
            .collect();
        Self {
            net: net.clone(),
            layers,
            bn_momentum: BN_MOMENTUM,
        }
    }

    /// Resets every BN layer's running statistics to mean 0, variance 1.
    pub fn reset_bn_stats(&self) {
        tch::no_grad(|| {
            for l in &self.layers {
                if let Layer::BatchNorm { mean, var, .. } = l {
                    let _ = mean.shallow_clone().fill_(0.0);
                    let _ = var.shallow_clone().fill_(1.0);
                }
            }
        });
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Runs the network; returns every value (index = [`hetvis_models::arch::ValueId`]).
    fn run(&self, x: &Tensor, train: bool) -> Vec<Tensor> {
        let mut vals: Vec<Tensor> = vec![x.shallow_clone()];
        for (node, layer) in self.net.nodes.iter().zip(&self.layers) {
            let a = &vals[node.inputs[0]];
            let out = match (layer, &node.op) {
                (
                    Layer::Conv {
                        weight,
                        bias,
                        stride,
                        padding,
                        groups,
                    },
                    _,
                ) => a.conv2d(
                    weight,
                    bias.as_ref(),
                    [*stride; 2],
                    [*padding; 2],
                    [1, 1],
                    *groups,
                ),
                (
                    Layer::BatchNorm {
                        weight,
                        bias,
                        mean,
                        var,
                    },
                    _,
                ) => a.batch_norm(
                    weight.as_ref(),
                    bias.as_ref(),
                    Some(mean),
                    Some(var),
                    train,
                    self.bn_momentum,
                    BN_EPS,
                    false,
                ),
                (Layer::Linear { weight, bias }, _) => a.linear(weight, bias.as_ref()),
                (Layer::Stateless, op) => stateless(op, a, &node.inputs, &vals),
            };
            vals.push(out);
        }
        vals
    }

    /// The embedding before the final L2 normalisation (what classifier heads and losses read).
    pub fn embed_raw(&self, x: &Tensor, train: bool) -> Tensor {
        let vals = self.run(x, train);
        let last = &self.net.nodes[self.net.output - 1];
        match last.op {
            Op::L2Normalize => vals[last.inputs[0]].shallow_clone(),
            _ => vals[self.net.output].shallow_clone(),
        }
    }

    /// The network's output: what the exported ONNX model computes.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.run(x, train)[self.net.output].shallow_clone()
    }

    /// This network's tensors (weights and BN statistics) under their `models` names, ready for export. Read
    /// from the tensors the layers hold, so it works wherever the VarStore put them.
    pub fn weights(&self) -> Result<Weights, tch::TchError> {
        let mut w = Weights::default();
        for (node, layer) in self.net.nodes.iter().zip(&self.layers) {
            // Same order as `Op::params()`.
            let tensors: Vec<&Tensor> = match layer {
                Layer::Conv { weight, bias, .. } | Layer::Linear { weight, bias } => {
                    std::iter::once(weight).chain(bias.as_ref()).collect()
                }
                Layer::BatchNorm {
                    weight,
                    bias,
                    mean,
                    var,
                } => weight
                    .iter()
                    .chain(bias.as_ref())
                    .chain([mean, var])
                    .collect(),
                Layer::Stateless => Vec::new(),
            };
            for (p, t) in node.op.params().into_iter().zip(tensors) {
                let data = Vec::<f32>::try_from(
                    t.to_kind(Kind::Float)
                        .to_device(tch::Device::Cpu)
                        .flatten(0, -1),
                )?;
                w.insert(p.name, p.shape, data);
            }
        }
        Ok(w)
    }
}

/// The tch path of a dotted layer name (`"layer1.0.unit1.conv"` -> `root / "layer1" / "0" / ...`), so VarStore
/// names come out as the same dotted strings the exporter reads.
fn sub<'a>(root: &nn::Path<'a>, name: &str) -> nn::Path<'a> {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or(name);
    parts.fold(root.sub(first), |p, part| p.sub(part))
}

fn stateless(op: &Op, a: &Tensor, inputs: &[usize], vals: &[Tensor]) -> Tensor {
    match op {
        Op::Relu => a.relu(),
        Op::Relu6 => a.clamp(0.0, 6.0),
        Op::MaxPool {
            kernel,
            stride,
            padding,
        } => a.max_pool2d(
            [*kernel as i64; 2],
            [*stride as i64; 2],
            [*padding as i64; 2],
            [1, 1],
            false,
        ),
        Op::GlobalAvgPool => a.mean_dim([2i64, 3].as_slice(), false, Kind::Float),
        Op::Add => a + &vals[inputs[1]],
        Op::Mean => {
            let sum = inputs[1..]
                .iter()
                .fold(a.shallow_clone(), |acc, &v| acc + &vals[v]);
            sum / inputs.len() as f64
        }
        Op::SliceChannels { start, len } => a.narrow(1, *start as i64, *len as i64),
        Op::Concat => Tensor::cat(&inputs.iter().map(|&v| &vals[v]).collect::<Vec<_>>(), 1),
        Op::ChannelShuffle { groups } => {
            let (n, c, h, w) = a.size4().expect("shuffle input is NCHW");
            let g = *groups as i64;
            a.view([n, g, c / g, h, w])
                .transpose(1, 2)
                .contiguous()
                .view([n, c, h, w])
        }
        Op::L2Normalize => {
            let norm = a
                .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                .clamp_min(1e-12);
            a / norm
        }
        Op::Conv { .. } | Op::BatchNorm { .. } | Op::Linear { .. } => {
            unreachable!("layers with state")
        }
    }
}

/// Copies `weights` into the VarStore variables of the same names (for resuming and fine-tuning).
pub fn load_into(vs: &nn::VarStore, weights: &Weights) -> Result<usize, tch::TchError> {
    let vars = vs.variables();
    let mut copied = 0;
    tch::no_grad(|| -> Result<(), tch::TchError> {
        for (name, t) in &weights.0 {
            if let Some(v) = vars.get(name) {
                let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
                if v.size() != dims {
                    return Err(tch::TchError::Shape(format!(
                        "{name}: {:?} vs {:?}",
                        v.size(),
                        dims
                    )));
                }
                let src = Tensor::from_slice(&t.data)
                    .view(dims.as_slice())
                    .to_device(v.device());
                v.shallow_clone().copy_(&src);
                copied += 1;
            }
        }
        Ok(())
    })?;
    Ok(copied)
}
