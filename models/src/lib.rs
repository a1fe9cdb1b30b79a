//! `hetvis-models`: the contract shared by the trainer, the indexer and the server.
//!
//! Nothing here links libtorch or an HTTP stack; the trainer (tch), indexer and server all build on it.

pub mod data;
pub mod onnx;
pub mod runtime;
