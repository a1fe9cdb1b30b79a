//! Shared helpers for hetvis benchmarks.

pub mod gallery_model;
pub mod load;
pub mod rss;
pub mod stats;
