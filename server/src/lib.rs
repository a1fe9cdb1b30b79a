//! `hetvis-server`: heterogeneous visual search over HTTP.

pub mod routes;
