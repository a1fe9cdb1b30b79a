//! Loading a model file once: its sha256 (the index records which gallery model built it) and its session.

use std::path::Path;

use anyhow::Context;
use hetvis_indexer::checksum::sha256_hex;
use hetvis_models::embed::Embedder;
use hetvis_models::runtime::{self, SessionConfig};

use crate::RuntimeArgs;

pub struct LoadedModel {
    pub embedder: Embedder,
    pub sha256: String,
}

pub fn load(ort_lib: Option<&Path>, path: &Path, rt: &RuntimeArgs) -> anyhow::Result<LoadedModel> {
    runtime::init(ort_lib)?;
    let bytes = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
    let config = SessionConfig {
        device: rt.device,
        intra_threads: rt.threads,
        ..Default::default()
    };
    let embedder = Embedder::from_bytes(&bytes, path, &config)
        .with_context(|| format!("loading model {}", path.display()))?;
    tracing::info!(
        model = %path.display(),
        name = %embedder.manifest().name,
        compat_id = %embedder.manifest().compat_id,
        provider = %embedder.provider(),
        "model loaded"
    );
    Ok(LoadedModel {
        embedder,
        sha256: sha256_hex(&bytes),
    })
}
