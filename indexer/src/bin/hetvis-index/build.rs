//! `build` and `add`: embed a source with the gallery model (or read its precomputed vectors), then write the
//! index atomically (`build`) or append to its write-ahead log (`add`), with the run's `errors.jsonl` beside it.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use hetvis_indexer::compat::check_is_gallery;
use hetvis_indexer::manifest::MANIFEST_FILE;
use hetvis_indexer::pipeline::{
    embed_catalog, errors_jsonl, Catalog, Embedded, Failure, PipelineConfig, Source, SourceOptions,
    VectorsSource, ERRORS_FILE,
};
use hetvis_indexer::{GalleryModel, HnswParams, Index, WriterLock};
use hetvis_models::embed::Embedder;

use crate::{model, EmbedArgs};

fn catalog(args: &EmbedArgs) -> anyhow::Result<Catalog> {
    let opts = SourceOptions {
        labels_from_dirs: args.labels_from_dirs,
        fashion_mnist_root: args.fashion_mnist.clone(),
    };
    let source = Source::parse(&args.source, &opts)?;
    let mut catalog = source
        .catalog()
        .with_context(|| format!("listing {}", args.source))?;
    if let Some(n) = args.limit {
        catalog.truncate(n);
    }
    Ok(catalog)
}

/// The run's vectors: embedded from images, or read from an `npy:` source. `taken` reports ids already in
/// the index being extended. Fails only when not a single item could be had.
pub fn vectors(
    args: &EmbedArgs,
    embedder: &mut Embedder,
    taken: impl Fn(&str) -> bool,
) -> anyhow::Result<Embedded> {
    let Some(source) = VectorsSource::parse(&args.source, args.ids.as_deref()) else {
        if args.ids.is_some() {
            bail!(
                "--ids names the rows of an npy: source; {} is not one",
                args.source
            );
        }
        let mut catalog = catalog(args)?;
        catalog.reject_taken(taken);
        return embed(args, catalog, embedder);
    };
    let dim = embedder.manifest().embedding_dim;
    let mut run = source.load(dim)?;
    if let Some(n) = args.limit {
        run.items.truncate(n);
    }
    let (keep, present): (Vec<_>, Vec<_>) = std::mem::take(&mut run.items)
        .into_iter()
        .partition(|(r, _)| !taken(&r.id));
    run.items = keep;
    run.failures
        .extend(present.into_iter().map(|(r, _)| Failure {
            source: args.source.clone(),
            id: r.id,
            error: "id is already in the index".into(),
        }));
    tracing::info!(vectors = run.items.len(), skipped = run.failures.len(), source = %args.source, "read");
    if run.items.is_empty() {
        bail!(
            "no usable vector in {} ({} rows skipped)",
            args.source,
            run.failures.len()
        );
    }
    Ok(run)
}

/// Runs the pipeline; fails only when not a single item could be embedded.
fn embed(args: &EmbedArgs, catalog: Catalog, embedder: &mut Embedder) -> anyhow::Result<Embedded> {
    let config = PipelineConfig {
        batch: args.batch,
        progress: !args.no_progress,
        ..Default::default()
    };
    tracing::info!(items = catalog.len(), source = %args.source, batch = args.batch, "embedding");
    let out = embed_catalog(catalog, embedder, &config)?;
    if out.items.is_empty() {
        let first = out
            .failures
            .first()
            .map_or("the source is empty".to_owned(), |f| {
                format!("first: {}: {}", f.id, f.error)
            });
        bail!(
            "nothing could be embedded from {} ({} items skipped; {first})",
            args.source,
            out.failures.len()
        );
    }
    Ok(out)
}

fn summary(dir: &Path, index: &Index, run: &Embedded, added: usize) -> String {
    let skipped = match run.failures.len() {
        0 => "nothing skipped".to_owned(),
        n => format!("{n} skipped, see {}", dir.join(ERRORS_FILE).display()),
    };
    format!(
        "{} vectors in the index (+{added} embedded, {skipped}); embedding {:.1} s ({:.0} images/s)",
        index.live_len(),
        run.seconds,
        (added + run.failures.len()) as f64 / run.seconds.max(1e-9),
    )
}

pub fn build(
    ort_lib: Option<&Path>,
    args: &EmbedArgs,
    out: &Path,
    overwrite: bool,
    params: HnswParams,
) -> anyhow::Result<()> {
    params.validate()?;
    let lock = WriterLock::acquire(out)?;
    if out.join(MANIFEST_FILE).exists() && !overwrite {
        bail!(
            "{} already holds an index: pass --overwrite to replace it, or use `hetvis-index add`",
            out.display()
        );
    }
    let mut model = model::load(ort_lib, &args.model, &args.runtime)?;
    let manifest = model.embedder.manifest().clone();
    check_is_gallery(&manifest)?;
    let run = vectors(args, &mut model.embedder, |_| false)?;
    let gallery = GalleryModel::from_manifest(&manifest, &model.sha256);
    let mut index = Index::new(gallery, manifest.embedding_dim, params)?;
    let mut run = run;
    let added = run.items.len();
    let started = Instant::now();
    index.add(std::mem::take(&mut run.items))?;
    let graph_seconds = started.elapsed().as_secs_f64();
    let saved = index.save_with_extras(&lock, &[(ERRORS_FILE, &errors_jsonl(&run.failures))])?;
    crate::edit::warn_if_not_durable(out, saved.durability);
    println!(
        "built {}: {}, HNSW insert {graph_seconds:.1} s",
        out.display(),
        summary(out, &index, &run, added)
    );
    Ok(())
}

/// Appends the new vectors to the index's write-ahead log (one fsynced entry: all or nothing), then compacts
/// when the log has grown past the policy's threshold. The graph is not needed for that and not loaded.
pub fn add(ort_lib: Option<&Path>, args: &EmbedArgs, dir: &Path) -> anyhow::Result<()> {
    // Locked before reading, so no other writer's changes can be missed by this one.
    let lock = WriterLock::acquire(dir)?;
    let mut index = Index::open_without_graph(dir)?;
    let mut model = model::load(ort_lib, &args.model, &args.runtime)?;
    index.check_gallery_model(model.embedder.manifest(), &model.sha256)?;
    let mut run = vectors(args, &mut model.embedder, |id| index.contains_id(id))?;
    let added = run.items.len();
    let started = Instant::now();
    let bytes = index.add_logged(&lock, std::mem::take(&mut run.items))?;
    let log_seconds = started.elapsed().as_secs_f64();
    // The run's report, beside the index (outside its checksummed files).
    hetvis_models::atomic::write(&dir.join(ERRORS_FILE), &errors_jsonl(&run.failures))
        .with_context(|| format!("writing {}", dir.join(ERRORS_FILE).display()))?;
    println!(
        "extended {}: {}; logged {bytes} bytes in {:.3} s",
        dir.display(),
        summary(dir, &index, &run, added),
        log_seconds
    );
    crate::edit::compact_if_due(index, &lock)
}
