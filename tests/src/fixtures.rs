//! Small, real inputs for server tests: random-weight ONNX models exported by `hetvis-models`, PNG images,
//! and an index built by `hetvis-index build`.

use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, MobileNetV2Spec, ModelSpec, Stem};
use hetvis_models::manifest::{ModelManifest, Provenance, Role};
use hetvis_models::preprocess::Preprocessing;
use hetvis_models::weights::Weights;

use crate::run_ok;

pub const DIM: usize = 32;

/// A MobileNetV2 x0.25 (small stem, 24 px) with random weights and `dim`-d embeddings, exported with its
/// manifest to `dir/<name>.onnx`.
pub fn model(
    dir: &Path,
    name: &str,
    role: Role,
    compat_id: &str,
    seed: u64,
    dim: usize,
) -> PathBuf {
    let spec = ModelSpec::new(
        Backbone::Mobilenetv2(MobileNetV2Spec::new(0.25, Stem::Small)),
        24,
        dim,
    );
    let manifest = ModelManifest::for_spec(
        name,
        role,
        &spec,
        Preprocessing::fashion_mnist(24),
        compat_id,
        Provenance::default(),
    )
    .expect("manifest");
    let weights = Weights::random(&spec.lower().expect("lowered spec"), seed);
    let path = dir.join(format!("{name}.onnx"));
    hetvis_models::onnx::export::export_to_files(&path, &spec, &weights, &manifest)
        .expect("export");
    path
}

/// A 30x20 PNG whose content depends on `seed`, so every image embeds differently.
pub fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(30, 20, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) ^ (seed * 17 + x * y);
        image::Rgb([(v % 251) as u8, (seed * 9 % 256) as u8, ((x + y) * 6) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png encode");
    out.into_inner()
}

/// A labelled image folder `root/name/c<i mod 3>/<i>.png` for `i` in `range` (ids are those relative paths,
/// labels the class folders), each image with its own content.
pub fn image_folder(root: &Path, name: &str, range: std::ops::Range<u32>) -> PathBuf {
    let dir = root.join(name);
    for i in range {
        let path = dir.join(format!("c{}/{i:02}.png", i % 3));
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("image folder");
        std::fs::write(path, png(i)).expect("image file");
    }
    dir
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A gallery model, a compatible query model, an image folder (3 labelled folders of 8) and its index.
pub struct Gallery {
    pub root: PathBuf,
    pub gallery_model: PathBuf,
    pub query_model: PathBuf,
    pub images: PathBuf,
    pub index: PathBuf,
}

impl Gallery {
    pub fn build(root: &Path) -> Self {
        std::fs::create_dir_all(root).expect("fixture dir");
        let gallery_model = model(root, "gallery", Role::Gallery, "space-1", 1, DIM);
        let query_model = model(root, "query", Role::Query, "space-1", 2, DIM);
        let images = root.join("images");
        for i in 0..24u32 {
            let p = images.join(format!("c{}/{i:02}.png", i % 3));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("image dir");
            std::fs::write(&p, png(i)).expect("write image");
        }
        let index = root.join("idx");
        run_ok(
            "hetvis-index",
            &[
                "build",
                "--model",
                path_str(&gallery_model),
                "--source",
                path_str(&images),
                "--out",
                path_str(&index),
                "--labels-from-dirs",
                "--no-progress",
            ],
        );
        Self {
            root: root.to_owned(),
            gallery_model,
            query_model,
            images,
            index,
        }
    }

    /// The server arguments for this gallery (query and gallery model, image folder for thumbnails).
    pub fn args(&self) -> Vec<String> {
        vec![
            "--index".into(),
            path_str(&self.index).into(),
            "--query-model".into(),
            path_str(&self.query_model).into(),
            "--gallery-model".into(),
            path_str(&self.gallery_model).into(),
            "--gallery-root".into(),
            path_str(&self.images).into(),
        ]
    }

    /// A copy of the index directory at `dest` (for tests that add to it).
    pub fn copy_index(&self, dest: &Path) {
        std::fs::create_dir_all(dest).expect("index copy dir");
        for entry in std::fs::read_dir(&self.index).expect("index dir") {
            let entry = entry.expect("index entry");
            std::fs::copy(entry.path(), dest.join(entry.file_name())).expect("copy index file");
        }
    }
}
