//! Shared helpers for hetvis benchmarks.

pub mod stats;
