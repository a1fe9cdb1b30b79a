//! `hetvis-trainer`: libtorch training through `tch`. The only crate of the workspace that links libtorch.

pub mod device;
pub mod smoke;
pub mod tch_net;
