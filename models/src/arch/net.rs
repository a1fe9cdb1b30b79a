//! The lowered form of every architecture: a DAG of primitive layers with named weights.
//!
//! Architecture specs ([`super::ArchSpec`]) lower into a [`Net`]; the FLOPs counter, the ONNX exporter and the
//! trainer's tch builder all walk this one graph, so the three cannot drift apart. Weight tensors are named
//! `"{layer}.weight"`, `"{layer}.bias"`, `"{layer}.running_mean"`, `"{layer}.running_var"` after the layer names
//! given here (see [`Op::params`]).

use serde::{Deserialize, Serialize};

/// Index of a value in a [`Net`]: 0 is the input image batch, `i + 1` the output of node `i`.
pub type ValueId = usize;

pub const INPUT: ValueId = 0;

/// A primitive layer. Convolutions and linear layers carry the weights; BN is folded into the preceding conv for
/// inference by the exporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Conv {
        name: String,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
    },
    /// Batch norm over channels of a 4-D (NCHW) or 2-D (NC) tensor. `affine: false` has no weight/bias.
    BatchNorm {
        name: String,
        channels: usize,
        affine: bool,
    },
    Relu,
    Relu6,
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// NCHW -> NC.
    GlobalAvgPool,
    Linear {
        name: String,
        cin: usize,
        cout: usize,
        bias: bool,
    },
    /// Elementwise sum of two inputs of the same shape.
    Add,
    /// Channels `[start, start + len)` of a NCHW tensor.
    SliceChannels {
        start: usize,
        len: usize,
    },
    /// Concatenation of the inputs along channels.
    Concat,
    /// ShuffleNet channel shuffle: view as (groups, C/groups), transpose, flatten.
    ChannelShuffle {
        groups: usize,
    },
    /// Row-wise L2 normalisation of an NC tensor (the embedding output).
    L2Normalize,
    /// Elementwise mean of inputs of one shape (the super-network's warm-up averages its blocks).
    Mean,
}

/// The learnable or stored tensors of a layer, with their shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamShape {
    pub name: String,
    pub shape: Vec<usize>,
    /// Running statistics are stored but not trained.
    pub trainable: bool,
}

impl Op {
    /// The layer name, for layers that own tensors.
    pub fn name(&self) -> Option<&str> {
        match self {
            Op::Conv { name, .. } | Op::BatchNorm { name, .. } | Op::Linear { name, .. } => {
                Some(name)
            }
            _ => None,
        }
    }

    /// Tensors this layer owns, in a fixed order, with the names shared by the trainer and the exporter.
    pub fn params(&self) -> Vec<ParamShape> {
        let p = |name: &str, suffix: &str, shape: Vec<usize>, trainable| ParamShape {
            name: format!("{name}.{suffix}"),
            shape,
            trainable,
        };
        match self {
            Op::Conv {
                name,
                cin,
                cout,
                kernel,
                groups,
                bias,
                ..
            } => {
                let mut v = vec![p(
                    name,
                    "weight",
                    vec![*cout, cin / groups, *kernel, *kernel],
                    true,
                )];
                if *bias {
                    v.push(p(name, "bias", vec![*cout], true));
                }
                v
            }
            Op::BatchNorm {
                name,
                channels,
                affine,
            } => {
                let mut v = Vec::new();
                if *affine {
                    v.push(p(name, "weight", vec![*channels], true));
                    v.push(p(name, "bias", vec![*channels], true));
                }
                v.push(p(name, "running_mean", vec![*channels], false));
                v.push(p(name, "running_var", vec![*channels], false));
                v
            }
            Op::Linear {
                name,
                cin,
                cout,
                bias,
            } => {
                let mut v = vec![p(name, "weight", vec![*cout, *cin], true)];
                if *bias {
                    v.push(p(name, "bias", vec![*cout], true));
                }
                v
            }
            _ => Vec::new(),
        }
    }
}

/// BN epsilon used everywhere (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
}

/// Shape of a value without the batch dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// Channels, height, width.
    Chw(usize, usize, usize),
    /// Features.
    Flat(usize),
}

impl Shape {
    pub fn channels(self) -> usize {
        match self {
            Shape::Chw(c, _, _) | Shape::Flat(c) => c,
        }
    }

    pub fn numel(self) -> usize {
        match self {
            Shape::Chw(c, h, w) => c * h * w,
            Shape::Flat(c) => c,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NetError {
    #[error("node {node} ({op}): {message}")]
    Shape {
        node: usize,
        op: String,
        message: String,
    },
    #[error("node {node} refers to value {value}, which is not defined before it")]
    Dangling { node: usize, value: ValueId },
    #[error("duplicate layer name {0}")]
    DuplicateName(String),
}

/// A lowered network: input shape, nodes in topological order, and the output value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Net {
    pub input: Shape,
    pub nodes: Vec<Node>,
    pub output: ValueId,
}

/// Output spatial size of a conv or pool.
pub fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding).saturating_sub(kernel) / stride + 1
}

impl Net {
    pub fn new(input: Shape) -> Self {
        Self {
            input,
            nodes: Vec::new(),
            output: INPUT,
        }
    }

    /// Appends a node and returns its value id; the last node added becomes the output.
    pub fn push(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
        });
        self.output = self.nodes.len();
        self.output
    }

    /// Every tensor the network owns, in node order.
    pub fn params(&self) -> Vec<ParamShape> {
        self.nodes.iter().flat_map(|n| n.op.params()).collect()
    }

    /// Number of stored scalars that are trained (running statistics excluded).
    pub fn num_trainable(&self) -> usize {
        self.params()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Infers the shape of every value, checking that each layer fits its inputs.
    pub fn shapes(&self) -> Result<Vec<Shape>, NetError> {
        let mut shapes = vec![self.input];
        let mut names = std::collections::HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if v >= shapes.len() {
                    return Err(NetError::Dangling { node: i, value: v });
                }
            }
            if let Some(name) = node.op.name() {
                if !names.insert(name.to_owned()) {
                    return Err(NetError::DuplicateName(name.to_owned()));
                }
            }
            let ins: Vec<Shape> = node.inputs.iter().map(|&v| shapes[v]).collect();
            let err = |message: String| NetError::Shape {
                node: i,
                op: format!("{:?}", node.op).chars().take(80).collect(),
                message,
            };
            let one = || -> Result<Shape, NetError> {
                match ins.as_slice() {
                    [s] => Ok(*s),
                    _ => Err(err(format!("expects one input, got {}", ins.len()))),
                }
            };
            let chw = |s: Shape| match s {
                Shape::Chw(c, h, w) => Ok((c, h, w)),
                Shape::Flat(_) => Err(err("expects an NCHW input".into())),
            };
            let out = match &node.op {
                Op::Conv {
                    cin,
                    cout,
                    kernel,
                    stride,
                    padding,
                    groups,
                    ..
                } => {
                    let (c, h, w) = chw(one()?)?;
                    if c != *cin || cin % groups != 0 || cout % groups != 0 || *stride == 0 {
                        return Err(err(format!(
                            "input has {c} channels, conv wants {cin} (groups {groups})"
                        )));
                    }
                    Shape::Chw(
                        *cout,
                        conv_out(h, *kernel, *stride, *padding),
                        conv_out(w, *kernel, *stride, *padding),
                    )
                }
                Op::BatchNorm { channels, .. } => {
                    let s = one()?;
                    if s.channels() != *channels {
                        return Err(err(format!(
                            "input has {} channels, BN wants {channels}",
                            s.channels()
                        )));
                    }
                    s
                }
                Op::Relu | Op::Relu6 => one()?,
                Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    let (c, h, w) = chw(one()?)?;
                    Shape::Chw(
                        c,
                        conv_out(h, *kernel, *stride, *padding),
                        conv_out(w, *kernel, *stride, *padding),
                    )
                }
                Op::GlobalAvgPool => Shape::Flat(chw(one()?)?.0),
                Op::Linear { cin, cout, .. } => match one()? {
                    Shape::Flat(c) if c == *cin => Shape::Flat(*cout),
                    s => return Err(err(format!("input {s:?}, linear wants Flat({cin})"))),
                },
                Op::Mean => match ins.split_first() {
                    Some((a, rest)) if rest.iter().all(|s| s == a) => *a,
                    _ => return Err(err(format!("expects inputs of one shape, got {ins:?}"))),
                },
                Op::Add => match ins.as_slice() {
                    [a, b] if a == b => *a,
                    _ => return Err(err(format!("expects two inputs of one shape, got {ins:?}"))),
                },
                Op::SliceChannels { start, len } => {
                    let (c, h, w) = chw(one()?)?;
                    if start + len > c || *len == 0 {
                        return Err(err(format!("slice {start}+{len} of {c} channels")));
                    }
                    Shape::Chw(*len, h, w)
                }
                Op::Concat => {
                    let mut total = 0;
                    let mut hw = None;
                    for s in &ins {
                        let (c, h, w) = chw(*s)?;
                        if hw.is_some_and(|x| x != (h, w)) {
                            return Err(err(format!("spatial sizes differ: {ins:?}")));
                        }
                        hw = Some((h, w));
                        total += c;
                    }
                    let (h, w) = hw.ok_or_else(|| err("no inputs".into()))?;
                    Shape::Chw(total, h, w)
                }
                Op::ChannelShuffle { groups } => {
                    let s = one()?;
                    if s.channels() % groups != 0 {
                        return Err(err(format!("{} channels in {groups} groups", s.channels())));
                    }
                    s
                }
                Op::L2Normalize => match one()? {
                    s @ Shape::Flat(_) => s,
                    s => return Err(err(format!("expects Flat, got {s:?}"))),
                },
            };
            shapes.push(out);
        }
        Ok(shapes)
    }
}
