//! ONNX: protobuf messages, a small graph builder, and the exporter.

pub mod export;
pub mod graph;
pub mod proto;

pub use export::{export, ExportError};
pub use graph::{Dim, GraphBuilder};
