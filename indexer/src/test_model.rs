//! Tiny random-weight models for the unit tests (exported through `hetvis-models`, run by ONNX Runtime).

use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, MobileNetV2Spec, ModelSpec, Stem};
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::{ModelManifest, Provenance, Role};
use hetvis_models::preprocess::Preprocessing;
use hetvis_models::runtime::{self, SessionConfig};
use hetvis_models::weights::Weights;

pub const DIM: usize = 32;

/// Writes a MobileNetV2 x0.25 (small stem, 24 px, 32-d) model to `dir/<name>.onnx`.
pub fn write(dir: &Path, name: &str, role: Role, compat_id: &str, seed: u64) -> PathBuf {
    let spec = ModelSpec::new(
        Backbone::Mobilenetv2(MobileNetV2Spec::new(0.25, Stem::Small)),
        24,
        DIM,
    );
    let manifest = ModelManifest::for_spec(
        name,
        role,
        &spec,
        Preprocessing::fashion_mnist(24),
        compat_id,
        Provenance::default(),
    )
    .unwrap();
    let weights = Weights::random(&spec.lower().unwrap(), seed);
    let path = dir.join(format!("{name}.onnx"));
    hetvis_models::onnx::export::export_to_files(&path, &spec, &weights, &manifest).unwrap();
    path
}

pub fn load(path: &Path) -> Embedder {
    runtime::init(None).expect("ONNX Runtime (run `make setup`)");
    Embedder::load(path, &SessionConfig::default()).unwrap()
}
