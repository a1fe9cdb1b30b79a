//! The commands on a gallery kept in a Milvus collection (`--milvus URI --collection NAME`) that differ from
//! those on an index directory: creating it, describing it, verifying its index. `add`, `remove` and `search`
//! work on both through the [`VectorStore`] interface.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hetvis_indexer::compat::check_is_gallery;
use hetvis_indexer::flat::FlatIndex;
use hetvis_indexer::recall::{sample_rows, GroundTruth};
use hetvis_indexer::{GalleryModel, HnswParams, MilvusStore, MilvusTarget, VectorStore};
use hetvis_milvus::ConnectOptions;

use crate::inspect::{report_recall, Measured, Report, VerifyOptions};
use crate::{build, model, EmbedArgs};

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

/// Creates the collection and fills it (batched inserts with retries, then a flush).
pub fn build(
    ort_lib: Option<&Path>,
    args: &EmbedArgs,
    target: &MilvusTarget,
    params: HnswParams,
) -> anyhow::Result<()> {
    let mut model = model::load(ort_lib, &args.model, &args.runtime)?;
    let manifest = model.embedder.manifest().clone();
    check_is_gallery(&manifest)?;
    let mut run = build::vectors(args, &mut model.embedder, None)?;
    let gallery = GalleryModel::from_manifest(&manifest, &model.sha256);
    let mut store = MilvusStore::create(target, gallery, manifest.embedding_dim, params)?;
    let started = Instant::now();
    let added = VectorStore::add(&mut store, std::mem::take(&mut run.items))?;
    store.settle()?;
    let insert_seconds = started.elapsed().as_secs_f64();
    println!(
        "built {}: {}; Milvus insert {insert_seconds:.1} s ({:.0} rows/s)",
        store.location(),
        build::summary(store.live_len()?, &run, added, None),
        added as f64 / insert_seconds.max(1e-9),
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

/// Rows read per query while scanning a collection.
const SCAN_PAGE: usize = 10_000;

/// Scores within this of the k-th exact score count as found: Milvus sums inner products in another order.
const SCORE_TOLERANCE: f32 = 1e-5;

/// Recall@k of the collection's HNSW index against exact search, with stored vectors as queries: the
/// collection is read whole (in id order, a page at a time) and scanned exactly here, so this is for
/// collections that fit in this machine's memory.
pub fn verify(target: &MilvusTarget, opts: &VerifyOptions) -> anyhow::Result<()> {
    let store = MilvusStore::open(target)?;
    let expected = store.live_len()?;
    let started = Instant::now();
    let bar = hetvis_models::progress::bar(
        expected as u64,
        "reading the collection [{bar:40}] {pos}/{len} rows ({eta})",
        true,
    );
    let rows = store.scan_vectors(SCAN_PAGE, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    anyhow::ensure!(!rows.is_empty(), "{} is empty", store.location());
    anyhow::ensure!(
        rows.len() == expected,
        "{}: read {} rows, but it counts {expected}",
        store.location(),
        rows.len()
    );
    let read_seconds = started.elapsed().as_secs_f64();
    let mut flat = FlatIndex::new(store.dim());
    for (_, v) in &rows {
        flat.push(v);
    }
    let queries: Vec<&[f32]> = sample_rows(rows.len(), opts.queries)
        .into_iter()
        .map(|r| rows[r].1.as_slice())
        .collect();
    let exact: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| flat.search(q, opts.k).iter().map(|h| h.score).collect())
        .collect();
    let truth = GroundTruth::from_exact_scores(&exact, opts.k);
    let efs = if opts.ef.is_empty() {
        vec![store.manifest().hnsw.ef_search]
    } else {
        opts.ef.clone()
    };
    let mut measured = Vec::new();
    for &ef in &efs {
        let t = Instant::now();
        let mut recall = 0.0;
        for (i, q) in queries.iter().enumerate() {
            let hits = store.search(q, opts.k, Some(ef), false)?;
            let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
            recall += truth.recall_of(i, &scores, SCORE_TOLERANCE);
        }
        measured.push(Measured {
            ef,
            recall: recall / queries.len() as f64,
            ms_per_query: t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64,
        });
    }
    let report = Report {
        location: store.location(),
        vectors: rows.len(),
        queries: queries.len(),
        open: format!("read in {read_seconds:.1} s and scanned here for the exact answers"),
        extra: serde_json::json!({
            "milvus": store.uri(), "collection": store.collection(), "read_seconds": read_seconds,
        }),
        exact_ms: None,
    };
    report_recall(&report, opts, &measured)
}
