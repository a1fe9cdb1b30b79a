//! `build` and `add`: embed a source with the gallery model (or read its precomputed vectors), then write the
//! index atomically (`build`, see `milvus.rs` for a collection) or add to the gallery through its
//! [`VectorStore`] (`add`: an index directory's write-ahead log, or a Milvus collection), with the run's skipped
//! items reported.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use hetvis_indexer::compat::check_is_gallery;
use hetvis_indexer::manifest::MANIFEST_FILE;
use hetvis_indexer::pipeline::{
    embed_catalog, errors_jsonl, Catalog, Embedded, Failure, PipelineConfig, Source, SourceOptions,
    VectorsSource, ERRORS_FILE,
};
use hetvis_indexer::{GalleryModel, GallerySearch, HnswParams, Index, WriterLock};
use hetvis_models::embed::Embedder;

use crate::place::Place;
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

/// Which of `ids` the gallery being extended holds already (none for a new one).
fn taken(gallery: Option<&dyn GallerySearch>, ids: Vec<String>) -> anyhow::Result<HashSet<String>> {
    Ok(match gallery {
        Some(g) => g.present(&ids)?.into_iter().collect(),
        None => HashSet::new(),
    })
}

/// The run's vectors: embedded from images, or read from an `npy:` source. Items whose ids `gallery` (the one
/// being extended) holds already are skipped and reported, images among them not embedded. Fails only when
/// not a single item could be had.
pub fn vectors(
    args: &EmbedArgs,
    embedder: &mut Embedder,
    gallery: Option<&dyn GallerySearch>,
) -> anyhow::Result<Embedded> {
    let Some(source) = VectorsSource::parse(&args.source, args.ids.as_deref()) else {
        if args.ids.is_some() {
            bail!(
                "--ids names the rows of an npy: source; {} is not one",
                args.source
            );
        }
        let mut catalog = catalog(args)?;
        let ids = catalog
            .entries
            .iter()
            .map(|e| e.record.id.clone())
            .collect();
        let taken = taken(gallery, ids)?;
        catalog.reject_taken(|id| taken.contains(id));
        if catalog.entries.is_empty() && !taken.is_empty() && catalog.rejected.len() == taken.len()
        {
            // Everything is in already (a retried add): nothing to do, not a failure.
            return Ok(Embedded {
                items: Vec::new(),
                failures: catalog.rejected,
                seconds: 0.0,
            });
        }
        return embed(args, catalog, embedder);
    };
    let dim = embedder.manifest().embedding_dim;
    let mut run = source.load(dim)?;
    if let Some(n) = args.limit {
        run.items.truncate(n);
    }
    let taken = taken(
        gallery,
        run.items.iter().map(|(r, _)| r.id.clone()).collect(),
    )?;
    let (keep, present): (Vec<_>, Vec<_>) = std::mem::take(&mut run.items)
        .into_iter()
        .partition(|(r, _)| !taken.contains(&r.id));
    run.items = keep;
    run.failures
        .extend(present.into_iter().map(|(r, _)| Failure {
            source: args.source.clone(),
            id: r.id,
            error: "id is already in the index".into(),
        }));
    tracing::info!(vectors = run.items.len(), skipped = run.failures.len(), source = %args.source, "read");
    // Everything in already (a retried add) is nothing to do, not a failure.
    if run.items.is_empty() && (taken.is_empty() || run.failures.len() > taken.len()) {
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

/// The run's report: items now searchable, what was added and skipped, the embedding rate.
pub fn summary(items: usize, run: &Embedded, added: usize, errors_file: Option<&Path>) -> String {
    let skipped = match (run.failures.len(), errors_file) {
        (0, _) => "nothing skipped".to_owned(),
        (n, Some(file)) => format!("{n} skipped, see {}", file.display()),
        (n, None) => format!(
            "{n} skipped: {}{}",
            run.failures
                .iter()
                .take(3)
                .map(|f| format!("{} ({})", f.id, f.error))
                .collect::<Vec<_>>()
                .join("; "),
            if n > 3 { "; ..." } else { "" }
        ),
    };
    format!(
        "{items} items searchable (+{added}, {skipped}); embedding {:.1} s ({:.0} images/s)",
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
    let run = vectors(args, &mut model.embedder, None)?;
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
        summary(index.live_len(), &run, added, Some(&out.join(ERRORS_FILE)))
    );
    Ok(())
}

/// Adds to a gallery with the very gallery model file that built it: one fsynced write-ahead log entry (all or
/// nothing) for an index directory, then a compaction when its log has grown past the policy's threshold (the
/// graph is neither needed nor loaded); batched inserts and a flush for a Milvus collection.
pub fn add(ort_lib: Option<&Path>, args: &EmbedArgs, place: &Place) -> anyhow::Result<()> {
    let mut store = place.open_for_changes()?;
    let mut model = model::load(ort_lib, &args.model, &args.runtime)?;
    store.check_gallery_model(model.embedder.manifest(), &model.sha256)?;
    let mut run = vectors(
        args,
        &mut model.embedder,
        Some(&*store as &dyn GallerySearch),
    )?;
    let started = Instant::now();
    let added = match run.items.len() {
        0 => 0,
        _ => store.add(std::mem::take(&mut run.items))?,
    };
    let store_seconds = started.elapsed().as_secs_f64();
    let errors_file = place.errors_file();
    if let Some(file) = &errors_file {
        // The run's report, beside the index (outside its checksummed files).
        hetvis_models::atomic::write(file, &errors_jsonl(&run.failures))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    store.settle()?;
    println!(
        "extended {}: {}; stored in {store_seconds:.3} s ({:.0} items/s)",
        store.location(),
        summary(store.live_len()?, &run, added, errors_file.as_deref()),
        added as f64 / store_seconds.max(1e-9),
    );
    Ok(())
}
