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
    let spec = g.spec();
    let weights = Weights::random(&spec.lower()?, 11);
    let manifest = ModelManifest::for_spec(
        "bench-gallery",
        Role::Gallery,
        &spec,
        Preprocessing::fashion_mnist(g.input_px),
        "bench-space",
        Provenance::default(),
    )?;
    let path = dir.join("gallery.onnx");
    hetvis_models::onnx::export::export_to_files(&path, &spec, &weights, &manifest)?;
    Ok(path)
}
