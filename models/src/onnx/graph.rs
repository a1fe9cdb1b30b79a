//! A small builder for ONNX graphs: named initializers, nodes with attributes, typed inputs and outputs.

use prost::Message;

use super::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// ONNX IR version written (IR 8 goes with opset 17..18).
pub const IR_VERSION: i64 = 8;
/// Default-domain opset written: 17 is the first with `LayerNormalization`; all ops used here exist in it.
pub const OPSET: i64 = 17;

/// A tensor dimension in a graph input or output: fixed or symbolic (e.g. the dynamic batch).
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

/// An attribute value for [`GraphBuilder::node`].
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Str(String),
}

#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            graph: GraphProto {
                name: name.to_owned(),
                ..Default::default()
            },
            counter: 0,
        }
    }

    pub fn input(&mut self, name: &str, dims: &[Dim]) {
        self.graph.input.push(value_info(name, dims));
    }

    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.graph.output.push(value_info(name, dims));
    }

    /// Adds an f32 initializer and returns its name.
    pub fn init_f32(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(
            dims.iter().product::<usize>(),
            values.len(),
            "initializer {name}"
        );
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.to_owned(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_owned()
    }

    /// Adds an i64 initializer (shapes, axes) and returns its name.
    pub fn init_i64(&mut self, name: &str, values: &[i64]) -> String {
        self.graph.initializer.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::INT64,
            name: name.to_owned(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_owned()
    }

    /// Adds a node with one output named after `hint`; returns the output name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        hint: &str,
        attrs: &[(&str, Attr)],
    ) -> String {
        self.counter += 1;
        let out = format!("{hint}_{}", self.counter);
        self.node_named(op, inputs, &out, attrs);
        out
    }

    /// Adds a node whose single output has exactly the given name (graph outputs).
    pub fn node_named(&mut self, op: &str, inputs: &[&str], output: &str, attrs: &[(&str, Attr)]) {
        let attribute = attrs
            .iter()
            .map(|(name, a)| {
                let mut p = AttributeProto {
                    name: (*name).to_owned(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(v) => (p.i, p.r#type) = (*v, attribute_type::INT),
                    Attr::Ints(v) => (p.ints, p.r#type) = (v.clone(), attribute_type::INTS),
                    Attr::Float(v) => (p.f, p.r#type) = (*v, attribute_type::FLOAT),
                    Attr::Floats(v) => (p.floats, p.r#type) = (v.clone(), attribute_type::FLOATS),
                    Attr::Str(v) => {
                        (p.s, p.r#type) = (v.clone().into_bytes(), attribute_type::STRING)
                    }
                }
                p
            })
            .collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: format!("{op}_{}", self.graph.node.len()),
            op_type: op.to_owned(),
            attribute,
            ..Default::default()
        });
    }

    /// Wraps the graph in a model with the given metadata properties.
    pub fn finish(self, metadata: &[(String, String)]) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "hetvis".to_owned(),
            producer_version: env!("CARGO_PKG_VERSION").to_owned(),
            graph: Some(self.graph),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Serialises a model to protobuf bytes.
pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
