//! `search`: one image through a gallery or compatible query model, then the index.

use std::path::Path;

use anyhow::Context;
use hetvis_indexer::params::EXACT_SEARCH_MAX_LEN;
use hetvis_indexer::Index;
use hetvis_models::preprocess::{preprocess_bytes, ImageLimits};

use crate::{model, RuntimeArgs};

pub struct Query<'a> {
    pub model: &'a Path,
    pub image: &'a Path,
    pub k: usize,
    pub ef: Option<usize>,
    pub exact: bool,
    pub json: bool,
}

pub fn search(
    ort_lib: Option<&Path>,
    dir: &Path,
    q: &Query,
    rt: &RuntimeArgs,
) -> anyhow::Result<()> {
    // The graph is read (or, for an index that stores none, rebuilt) only when this search uses it: not for
    // --exact, nor for an index small enough to be scanned.
    let mut index = Index::open_without_graph(dir)?;
    if !q.exact && (q.ef.is_some() || index.len() > EXACT_SEARCH_MAX_LEN) {
        let (graph, how) = index.load_or_build_graph()?;
        tracing::info!(vectors = index.len(), "{how} the HNSW graph");
        index.install_graph(graph)?;
    }
    let mut model = model::load(ort_lib, q.model, rt)?;
    index
        .check_query_model(model.embedder.manifest())
        .with_context(|| format!("{} cannot query {}", q.model.display(), dir.display()))?;
    let embedding = embed_image(&mut model, q.image)?;
    let hits = match (q.exact, q.ef) {
        (true, _) => index.search_exact(&embedding, q.k)?,
        // An explicit ef asks for the graph even where the index is small enough to scan.
        (false, Some(ef)) => index.search_hnsw(&embedding, q.k, Some(ef))?,
        (false, None) => index.search(&embedding, q.k, None)?,
    };
    print_hits(&hits, q.json)
}

/// The query image's embedding.
pub fn embed_image(model: &mut model::LoadedModel, image: &Path) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let pre = model.embedder.manifest().preprocessing.clone();
    let input = preprocess_bytes(&bytes, &pre, ImageLimits::default())
        .with_context(|| format!("{}", image.display()))?;
    Ok(model.embedder.embed(&input)?)
}

pub fn print_hits(hits: &[hetvis_indexer::Hit], json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<_> = hits
            .iter()
            .map(|h| serde_json::json!({"id": h.id, "score": h.score, "label": h.label, "meta": h.meta}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (i, h) in hits.iter().enumerate() {
            let label = h
                .label
                .as_deref()
                .map_or(String::new(), |l| format!("  [{l}]"));
            println!("{:>3}. {:.4}  {}{label}", i + 1, h.score, h.id);
        }
    }
    Ok(())
}
