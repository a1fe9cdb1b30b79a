//! The embedding pipeline: the calling thread decodes and preprocesses one batch at a time in parallel (rayon)
//! and hands it through a bounded channel to a dedicated inference thread, which owns the ONNX Runtime session
//! (`Session::run` takes `&mut self`). The channel's bound keeps memory flat and lets preprocessing run a few
//! batches ahead of inference, overlapping the two.

use std::sync::mpsc;
use std::time::Instant;

use hetvis_models::embed::{EmbedError, Embedder};
use hetvis_models::preprocess::{ImageLimits, Preprocessing};
use indicatif::ProgressBar;
use rayon::prelude::*;

use super::source::{describe, Catalog, Entry};
use super::{progress, Failure, PipelineError};
use crate::record::Record;
use crate::vector;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Images per ONNX Runtime call.
    pub batch: usize,
    /// Preprocessed batches that may wait for inference.
    pub queue_batches: usize,
    /// Draw a progress bar (on stderr, only when it is a terminal).
    pub progress: bool,
    pub limits: ImageLimits,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            queue_batches: 4,
            progress: true,
            limits: ImageLimits::default(),
        }
    }
}

/// What a run produced: embeddings (model output, unit length) in catalog order, and the skipped items.
#[derive(Debug, Default)]
pub struct Embedded {
    pub items: Vec<(Record, Vec<f32>)>,
    pub failures: Vec<Failure>,
    pub seconds: f64,
}

impl Embedded {
    /// Items attempted (embedded or failed) per second of wall time.
    pub fn images_per_second(&self) -> f64 {
        (self.items.len() + self.failures.len()) as f64 / self.seconds.max(1e-9)
    }
}

/// One item after preprocessing, on its way to inference.
struct Prepared {
    record: Record,
    source: String,
    input: Result<Vec<f32>, String>,
}

/// Embeds every entry of `catalog`. Fails only when inference itself fails (a broken model or runtime), never
/// because of an individual file: those are returned in [`Embedded::failures`], after the catalog's own
/// rejections.
pub fn embed_catalog(
    catalog: Catalog,
    embedder: &mut Embedder,
    config: &PipelineConfig,
) -> Result<Embedded, PipelineError> {
    let started = Instant::now();
    let batch = config.batch.max(1);
    let pre = embedder.manifest().preprocessing.clone();
    let bar = progress::bar(catalog.len(), config.progress);
    let Catalog {
        entries, rejected, ..
    } = &catalog;
    let (tx, rx) = mpsc::sync_channel::<Vec<Prepared>>(config.queue_batches.max(1));
    let outcome = std::thread::scope(|scope| {
        let bar_ref = &bar;
        let inference = scope.spawn(move || infer(embedder, rx, bar_ref));
        for chunk in entries.chunks(batch) {
            let prepared = prepare(&catalog, chunk, &pre, config.limits);
            if tx.send(prepared).is_err() {
                // The inference thread stopped; its error is returned below.
                break;
            }
        }
        drop(tx);
        match inference.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    bar.finish_and_clear();
    let (items, inference_failures) = outcome?;
    let mut failures = rejected.clone();
    failures.extend(inference_failures);
    Ok(Embedded {
        items,
        failures,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn prepare(
    catalog: &Catalog,
    chunk: &[Entry],
    pre: &Preprocessing,
    limits: ImageLimits,
) -> Vec<Prepared> {
    chunk
        .par_iter()
        .map(|e| Prepared {
            record: e.record.clone(),
            source: describe(&e.origin),
            input: catalog.preprocess(&e.origin, pre, limits),
        })
        .collect()
}

type Outcome = (Vec<(Record, Vec<f32>)>, Vec<Failure>);

fn infer(
    embedder: &mut Embedder,
    batches: mpsc::Receiver<Vec<Prepared>>,
    bar: &ProgressBar,
) -> Result<Outcome, EmbedError> {
    let dim = embedder.dim();
    let mut items = Vec::new();
    let mut failures = Vec::new();
    let mut inputs = Vec::new();
    for batch in batches {
        let n = batch.len();
        inputs.clear();
        let mut ok = Vec::with_capacity(n);
        for p in batch {
            match p.input {
                Ok(x) => {
                    inputs.extend_from_slice(&x);
                    ok.push((p.record, p.source));
                }
                Err(error) => failures.push(Failure {
                    id: p.record.id,
                    source: p.source,
                    error,
                }),
            }
        }
        if !ok.is_empty() {
            let out = embedder.embed(&inputs)?;
            for ((record, source), v) in ok.into_iter().zip(out.chunks_exact(dim)) {
                match vector::normalised(v, dim) {
                    Ok(_) => items.push((record, v.to_vec())),
                    Err(problem) => failures.push(Failure {
                        id: record.id,
                        source,
                        error: format!("the model's embedding {problem}"),
                    }),
                }
            }
        }
        bar.inc(n as u64);
    }
    Ok((items, failures))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hetvis_models::manifest::Role;

    use super::*;
    use crate::pipeline::{Source, SourceOptions};
    use crate::test_model;

    fn write_png(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(30, 20, |x, y| {
            image::Rgb([shade, (x * 8) as u8, (y * 12) as u8])
        })
        .save(path)
        .unwrap();
    }

    #[test]
    fn embeds_a_folder_skipping_bad_files_and_matches_direct_inference() {
        let dir = tempfile::tempdir().unwrap();
        let model = test_model::write(dir.path(), "g", Role::Gallery, "space-1", 3);
        let mut embedder = test_model::load(&model);
        let images = dir.path().join("images");
        for i in 0..70u8 {
            write_png(&images.join(format!("c{}/{i:03}.png", i % 3)), i * 3);
        }
        std::fs::write(images.join("c0/broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
        std::fs::write(images.join("notes.txt"), b"not an image").unwrap();
        let opts = SourceOptions {
            labels_from_dirs: true,
            ..Default::default()
        };
        let catalog = Source::parse(images.to_str().unwrap(), &opts)
            .unwrap()
            .catalog()
            .unwrap();
        assert_eq!(catalog.len(), 72);
        let config = PipelineConfig {
            batch: 16,
            progress: false,
            ..Default::default()
        };
        let out = embed_catalog(catalog, &mut embedder, &config).unwrap();
        assert_eq!(out.items.len(), 70);
        let failed: Vec<&str> = out.failures.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(failed, ["c0/broken.png", "notes.txt"]);
        assert!(
            out.failures[1].error.contains("not an image"),
            "{:?}",
            out.failures
        );
        // Catalog order, labels from folders, and the same vectors as embedding one image at a time.
        assert_eq!(out.items[0].0.id, "c0/000.png");
        assert_eq!(out.items[0].0.label.as_deref(), Some("c0"));
        let (record, v) = &out.items[40];
        let bytes = std::fs::read(images.join(&record.id)).unwrap();
        let pre = embedder.manifest().preprocessing.clone();
        let x = hetvis_models::preprocess::preprocess_bytes(&bytes, &pre, ImageLimits::default())
            .unwrap();
        let direct = embedder.embed(&x).unwrap();
        for (a, b) in v.iter().zip(&direct) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn fashion_mnist_items_carry_class_names() {
        let dir = tempfile::tempdir().unwrap();
        let model = test_model::write(dir.path(), "g", Role::Gallery, "space-1", 3);
        let mut embedder = test_model::load(&model);
        let mut catalog = Source::parse("fashion-mnist:test", &SourceOptions::default())
            .unwrap()
            .catalog()
            .unwrap();
        assert_eq!(catalog.len(), 10_000);
        catalog.truncate(40);
        let config = PipelineConfig {
            progress: false,
            ..Default::default()
        };
        let out = embed_catalog(catalog, &mut embedder, &config).unwrap();
        assert_eq!(out.items.len(), 40);
        assert!(out.failures.is_empty());
        let (r, v) = &out.items[0];
        assert_eq!(r.id, "test/0");
        // The first Fashion-MNIST test image is an ankle boot (class 9).
        assert_eq!(r.label.as_deref(), Some("ankle boot"));
        assert_eq!(r.meta, None);
        assert_eq!(v.len(), test_model::DIM);
    }
}
