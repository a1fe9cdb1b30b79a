//! `hetvis-trainer`: libtorch training through `tch`. The only crate of the workspace that links libtorch.
//!
//! Modules depend one way (checked by `module_graph` below): `pipeline` and `study` orchestrate on top of
//! `context`, which builds run configurations for `train`, `cmpnas` (super-network + search), `eval`; `tier`
//! (MMACs, budgets, spaces), `sampling`, `preset`, `data` and `progress` are leaves that everything may use.

pub mod cmpnas;
pub mod compat;
pub mod context;
pub mod data;
pub mod device;
pub mod distill;
pub mod eval;
pub mod gallery_cache;
pub mod head;
pub mod jobs;
pub mod pipeline;
pub mod plot;
pub mod preset;
pub mod progress;
pub mod replicates;
pub mod sampling;
pub mod search;
pub mod smoke;
pub mod study;
pub mod supernet;
pub mod tch_net;
pub mod throughput;
pub mod tier;
pub mod train;

#[cfg(test)]
mod module_graph;
