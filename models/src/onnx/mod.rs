//! ONNX: protobuf messages and a small graph builder.

pub mod graph;
pub mod proto;

pub use graph::{Dim, GraphBuilder};
