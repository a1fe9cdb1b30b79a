//! `hetvis-trainer`: libtorch training through `tch`. The only crate of the workspace that links libtorch.

pub mod cmpnas;
pub mod data;
pub mod device;
pub mod distill;
pub mod eval;
pub mod head;
pub mod jobs;
pub mod pipeline;
pub mod plot;
pub mod preset;
pub mod progress;
pub mod search;
pub mod smoke;
pub mod study;
pub mod supernet;
pub mod tch_net;
pub mod throughput;
pub mod train;
