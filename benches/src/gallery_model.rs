//! A random-weight gallery model for benchmarks: a reduced-width ResNet with the small stem, exported through
//! `hetvis-models` exactly as a trained gallery model would be. Its embeddings are not meaningful for retrieval
//! quality, but it costs what a gallery model of that shape costs.

use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, ModelSpec, ResNetSpec, Stem};
use hetvis_models::manifest::{ModelManifest, Provenance, Role};
use hetvis_models::preprocess::Preprocessing;
use hetvis_models::weights::Weights;

#[derive(Debug, Clone, Copy)]
pub struct GallerySpec {
    pub depth: usize,
    pub width: f64,
    pub input_px: usize,
    pub dim: usize,
}

impl GallerySpec {
    pub fn spec(&self) -> ModelSpec {
        let resnet = ResNetSpec {
            depth: self.depth,
            width: self.width,
            stem: Stem::Small,
            inner: None,
        };
        ModelSpec::new(Backbone::Resnet(resnet), self.input_px, self.dim)
    }

    pub fn describe(&self) -> String {
        format!(
            "ResNet-{} x{} small stem, {} px, {}-d",
            self.depth, self.width, self.input_px, self.dim
        )
    }
}

/// Exports the model to `dir/gallery.onnx` (with its manifest) and returns the path.
pub fn export(dir: &Path, g: &GallerySpec) -> anyhow::Result<PathBuf> {
    let path = dir.join("gallery.onnx");
    let p = Preprocessing::fashion_mnist(g.input_px);
    export_random(
        &path,
        "bench-gallery",
        Role::Gallery,
        &g.spec(),
        p,
        "bench-space",
        11,
    )?;
    Ok(path)
}

/// Exports any spec with random weights (from `seed`) to `path`, with its manifest beside it, exactly as a
/// trained model would be exported. Models given the same `compat_id` are accepted together by the indexer and
/// the server, which is all a timing benchmark needs.
pub fn export_random(
    path: &Path,
    name: &str,
    role: Role,
    spec: &ModelSpec,
    preprocessing: Preprocessing,
    compat_id: &str,
    seed: u64,
) -> anyhow::Result<ModelManifest> {
    let weights = Weights::random(&spec.lower()?, seed);
    let manifest = ModelManifest::for_spec(
        name,
        role,
        spec,
        preprocessing,
        compat_id,
        Provenance::default(),
    )?;
    hetvis_models::onnx::export::export_to_files(path, spec, &weights, &manifest)?;
    Ok(manifest)
}
