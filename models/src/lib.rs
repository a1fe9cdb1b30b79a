//! `hetvis-models`: the contract shared by the trainer, the indexer and the server.
//!
//! Nothing here links libtorch or an HTTP stack; the trainer (tch), indexer and server all build on it.

pub mod arch;
pub mod atomic;
pub mod data;
pub mod embed;
pub mod failpoint;
pub mod flops;
pub mod jpeg;
pub mod manifest;
pub mod metrics;
pub mod onnx;
pub mod preprocess;
pub mod progress;
pub mod prune;
pub mod runtime;
pub mod weights;
