//! Shared helpers for hetvis benchmarks.

pub mod gallery_model;
pub mod load;
pub mod process;
pub mod rss;
pub mod stats;
pub mod vectors;
