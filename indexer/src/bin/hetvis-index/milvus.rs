//! The commands on a gallery kept in a Milvus collection (`--milvus URI --collection NAME`): the same checks
//! and reports as on an index directory, through the [`VectorStore`] interface where the backends agree.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hetvis_indexer::compat::check_is_gallery;
use hetvis_indexer::milvus_store::INSERT_BATCH;
use hetvis_indexer::{GalleryModel, HnswParams, MilvusStore, MilvusTarget, VectorStore};
use hetvis_milvus::ConnectOptions;

use crate::search::{embed_image, print_hits, Query};
use crate::{build, model, EmbedArgs, RuntimeArgs};

/// A Milvus server holding the gallery instead of an index directory.
#[derive(Args, Clone, Debug)]
pub struct MilvusArgs {
    /// Milvus address (http://host:19530): the gallery is a collection there instead of an index directory.
    #[arg(long, env = "HETVIS_MILVUS", global = true)]
    pub milvus: Option<String>,
    /// The gallery's collection in Milvus.
    #[arg(long, env = "HETVIS_COLLECTION", global = true, requires = "milvus")]
    pub collection: Option<String>,
    /// `user:password` or an API key, when Milvus has authentication enabled.
    #[arg(
        long,
        env = "HETVIS_MILVUS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub milvus_token: Option<String>,
    /// The Milvus database (default: Milvus's `default`).
    #[arg(long, env = "HETVIS_MILVUS_DATABASE", global = true)]
    pub milvus_database: Option<String>,
    /// Limit of each call to Milvus, in milliseconds.
    #[arg(
        long,
        env = "HETVIS_MILVUS_TIMEOUT_MS",
        global = true,
        default_value_t = 30_000
    )]
    pub milvus_timeout_ms: u64,
}

impl MilvusArgs {
    /// The collection these arguments name, if any.
    pub fn target(&self) -> anyhow::Result<Option<MilvusTarget>> {
        let Some(uri) = &self.milvus else {
            return Ok(None);
        };
        let collection = self
            .collection
            .clone()
            .context("--milvus needs --collection NAME (or HETVIS_COLLECTION)")?;
        let mut connect = ConnectOptions::new(uri.clone());
        connect.token = self.milvus_token.clone();
        connect.database = self.milvus_database.clone();
        connect.timeout = Duration::from_millis(self.milvus_timeout_ms.max(1));
        Ok(Some(MilvusTarget {
            connect,
            collection,
        }))
    }
}

fn report(
    store: &MilvusStore,
    verb: &str,
    added: usize,
    run: &hetvis_indexer::pipeline::Embedded,
    insert_seconds: f64,
) -> anyhow::Result<()> {
    let skipped = match run.failures.len() {
        0 => "nothing skipped".to_owned(),
        n => format!(
            "{n} skipped: {}",
            run.failures
                .iter()
                .take(3)
                .map(|f| format!("{} ({})", f.id, f.error))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    println!(
        "{verb} {}: {} items (+{added}, {skipped}); embedding {:.1} s, Milvus insert {insert_seconds:.1} s ({:.0} rows/s)",
        store.location(),
        store.live_len()?,
        run.seconds,
        added as f64 / insert_seconds.max(1e-9),
    );
    Ok(())
}

/// Creates the collection and fills it.
pub fn build(
    ort_lib: Option<&Path>,
    args: &EmbedArgs,
    target: &MilvusTarget,
    params: HnswParams,
) -> anyhow::Result<()> {
    let mut model = model::load(ort_lib, &args.model, &args.runtime)?;
    let manifest = model.embedder.manifest().clone();
    check_is_gallery(&manifest)?;
    let mut run = build::vectors(args, &mut model.embedder, |_| false)?;
    let gallery = GalleryModel::from_manifest(&manifest, &model.sha256);
    let store = MilvusStore::create(target, gallery, manifest.embedding_dim, params)?;
    let started = Instant::now();
    let added = insert(&store, std::mem::take(&mut run.items))?;
    store.flush()?;
    report(
        &store,
        "built",
        added,
        &run,
        started.elapsed().as_secs_f64(),
    )
}

/// Inserts in batches with a progress line per batch on stderr.
fn insert(
    store: &MilvusStore,
    items: Vec<(hetvis_indexer::Record, Vec<f32>)>,
) -> anyhow::Result<usize> {
    let total = items.len();
    let mut added = 0;
    let mut items = items.into_iter().peekable();
    // Batches of 10 insert requests, so a failure reports how far it got.
    while items.peek().is_some() {
        let chunk: Vec<_> = items.by_ref().take(INSERT_BATCH * 10).collect();
        added += store.add(chunk).with_context(|| {
            format!("{added} of {total} rows were inserted before this failure")
        })?;
        tracing::info!(added, total, "inserted into Milvus");
    }
    Ok(added)
}

/// Adds to the collection with the very gallery model that built it; ids already there are skipped.
pub fn add(ort_lib: Option<&Path>, args: &EmbedArgs, target: &MilvusTarget) -> anyhow::Result<()> {
    let store = MilvusStore::open(target)?;
    let mut model = model::load(ort_lib, &args.model, &args.runtime)?;
    hetvis_indexer::compat::check_gallery_model(
        store.manifest(),
        model.embedder.manifest(),
        &model.sha256,
    )?;
    let mut run = build::vectors(args, &mut model.embedder, |_| false)?;
    // Ids already in the collection are skipped and reported, as for an index directory.
    let ids: Vec<String> = run.items.iter().map(|(r, _)| r.id.clone()).collect();
    let present: std::collections::HashSet<String> = store.present(&ids)?.into_iter().collect();
    let (keep, taken): (Vec<_>, Vec<_>) = std::mem::take(&mut run.items)
        .into_iter()
        .partition(|(r, _)| !present.contains(&r.id));
    run.items = keep;
    run.failures.extend(
        taken
            .into_iter()
            .map(|(r, _)| hetvis_indexer::pipeline::Failure {
                source: args.source.clone(),
                id: r.id,
                error: "id is already in the collection".into(),
            }),
    );
    let started = Instant::now();
    let added = insert(&store, std::mem::take(&mut run.items))?;
    store.flush()?;
    report(
        &store,
        "extended",
        added,
        &run,
        started.elapsed().as_secs_f64(),
    )
}

pub fn remove(target: &MilvusTarget, ids: &[String]) -> anyhow::Result<()> {
    let mut store = MilvusStore::open(target)?;
    let missing = VectorStore::remove(&mut store, ids)?;
    if !missing.is_empty() {
        eprintln!(
            "not in the collection (nothing to remove): {}",
            missing.join(", ")
        );
    }
    println!(
        "removed {} from {}: {} items searchable",
        ids.len() - missing.len(),
        store.location(),
        store.live_len()?
    );
    Ok(())
}

pub fn info(target: &MilvusTarget, json: bool) -> anyhow::Result<()> {
    let store = MilvusStore::open(target)?;
    let m = store.manifest();
    let items = store.live_len()?;
    if json {
        let v = serde_json::json!({
            "milvus": store.uri(), "collection": store.collection(), "manifest": m, "items": items,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("collection  {}", store.location());
    println!(
        "gallery     {} (compat_id {}, model sha256 {})",
        m.gallery.name, m.gallery.compat_id, m.gallery.sha256
    );
    println!("items       {items} x {}-d, metric {}", m.dim, m.metric);
    println!(
        "hnsw        M={} ef_construction={} ef_search={}",
        m.hnsw.m, m.hnsw.ef_construction, m.hnsw.ef_search
    );
    Ok(())
}

pub fn search(
    ort_lib: Option<&Path>,
    target: &MilvusTarget,
    q: &Query,
    rt: &RuntimeArgs,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !q.exact,
        "--exact scans an index directory; Milvus searches its HNSW index"
    );
    let store = MilvusStore::open(target)?;
    let mut model = model::load(ort_lib, q.model, rt)?;
    hetvis_indexer::compat::check_query_model(store.manifest(), model.embedder.manifest())
        .with_context(|| format!("{} cannot query {}", q.model.display(), store.location()))?;
    let embedding = embed_image(&mut model, q.image)?;
    let hits = VectorStore::search(&store, &embedding, q.k, q.ef)?;
    print_hits(&hits, q.json)
}
