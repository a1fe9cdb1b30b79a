//! `search`: one image through a gallery or compatible query model, then the index.

use std::path::Path;

use anyhow::Context;
use hetvis_indexer::params::EXACT_SEARCH_MAX_LEN;
use hetvis_indexer::{GallerySearch, Hit, Index, IndexError, MilvusStore, SearchMode, VectorStore};
use hetvis_models::preprocess::{preprocess_bytes, ImageLimits};

use crate::place::Place;
use crate::{model, RuntimeArgs};

pub struct Query<'a> {
    pub model: &'a Path,
    pub image: &'a Path,
    pub k: usize,
    pub ef: Option<usize>,
    pub exact: bool,
    pub json: bool,
}

/// Searches an index directory (opened for reading, without the writer lock) or a Milvus collection, through
/// [`GallerySearch`].
pub fn search(
    ort_lib: Option<&Path>,
    place: &Place,
    q: &Query,
    rt: &RuntimeArgs,
) -> anyhow::Result<()> {
    let (gallery, location): (Box<dyn GallerySearch>, String) = match place {
        Place::Dir(dir) => (
            Box::new(open_for_search(dir, q)?),
            dir.display().to_string(),
        ),
        Place::Milvus(target) => {
            anyhow::ensure!(
                !q.exact,
                "--exact scans an index directory; Milvus searches its HNSW index"
            );
            let store = MilvusStore::open(target)?;
            let location = VectorStore::location(&store);
            (Box::new(store), location)
        }
    };
    let mut model = model::load(ort_lib, q.model, rt)?;
    gallery
        .check_query_model(model.embedder.manifest())
        .with_context(|| format!("{} cannot query {location}", q.model.display()))?;
    let embedding = embed_image(&mut model, q.image)?;
    let hits = gallery.search(&embedding, q.k, q.ef)?;
    print_hits(&hits, q.json)
}

/// An index directory searched the way the flags ask: a scan (--exact), the graph (an explicit ef, even on an
/// index small enough to scan), or the index's own choice.
struct DirSearch {
    index: Index,
    mode: SearchMode,
}

impl GallerySearch for DirSearch {
    fn manifest(&self) -> &hetvis_indexer::IndexManifest {
        self.index.manifest()
    }

    fn live_len(&self) -> Result<usize, IndexError> {
        Ok(self.index.live_len())
    }

    fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        GallerySearch::present(&self.index, ids)
    }

    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>, IndexError> {
        match self.mode {
            SearchMode::Exact => self.index.search_exact(query, k),
            SearchMode::Hnsw => self.index.search_hnsw(query, k, ef),
            SearchMode::Auto => self.index.search(query, k, ef),
        }
    }
}

/// An index directory for one search. The graph is read (or, for an index that stores none, rebuilt) only when
/// this search uses it: not for --exact, nor for an index small enough to be scanned without an explicit ef.
fn open_for_search(dir: &Path, q: &Query) -> anyhow::Result<DirSearch> {
    let mut index = Index::open_without_graph(dir)?;
    if !q.exact && (q.ef.is_some() || index.len() > EXACT_SEARCH_MAX_LEN) {
        let (graph, how) = index.load_or_build_graph()?;
        tracing::info!(vectors = index.len(), "{how} the HNSW graph");
        index.install_graph(graph)?;
    }
    let mode = match (q.exact, q.ef) {
        (true, _) => SearchMode::Exact,
        (false, Some(_)) => SearchMode::Hnsw,
        (false, None) => SearchMode::Auto,
    };
    Ok(DirSearch { index, mode })
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
