//! `hetvis-server`: heterogeneous visual search over HTTP.
//!
//! [`startup::load`] opens the index and the models (refusing incompatible ones) and starts the inference
//! workers ([`embed_pool`]); [`routes::router`] serves search, gallery uploads, info, health and metrics.

pub mod auth;
pub mod backend;
pub mod compaction;
pub mod config;
pub mod dataset_images;
pub mod embed_pool;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod operations;
pub mod page;
pub mod routes;
pub mod shutdown;
pub mod startup;
pub mod state;
#[cfg(test)]
mod test_state;
pub mod work;
