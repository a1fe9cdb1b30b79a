//! Where gallery images come from: an image folder (recursive), a JSONL manifest, or Fashion-MNIST.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hetvis_models::data::fashion_mnist::{FashionMnist, Split, CLASS_NAMES};
use hetvis_models::data::LabelledImages;
use hetvis_models::preprocess::{self, ImageLimits, Preprocessing};
use serde::Deserialize;

use super::{Failure, PipelineError};
use crate::record::Record;

/// Settings that change how a source spec is read.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Label each image of a folder source with its parent folder's name.
    pub labels_from_dirs: bool,
    /// Where Fashion-MNIST lives (`fashion-mnist:` sources).
    pub fashion_mnist_root: PathBuf,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            labels_from_dirs: false,
            fashion_mnist_root: FashionMnist::from_env().root().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Every non-hidden file under `root`, sorted; id = path relative to `root` with `/` separators.
    Directory {
        root: PathBuf,
        labels_from_dirs: bool,
    },
    /// One `{"id", "path", "label"?, "meta"?}` object per line; relative paths resolve against the file's folder.
    Jsonl { path: PathBuf },
    /// Ids `train/<i>` or `test/<i>`; label = class name (e.g. `ankle boot`; its position in
    /// [`CLASS_NAMES`] is the class index). No meta: a JSON object per record would cost ~1 KB of memory each.
    FashionMnist { root: PathBuf, split: Split },
}

/// Where one item's pixels are.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    File(PathBuf),
    /// Index into the in-memory data set of a [`Source::FashionMnist`].
    Record(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub record: Record,
    pub origin: Origin,
}

/// The items of a source, in a deterministic order, plus what was refused while listing them.
#[derive(Debug)]
pub struct Catalog {
    pub entries: Vec<Entry>,
    /// Unparseable manifest lines, duplicate ids, unreadable directory entries.
    pub rejected: Vec<Failure>,
    images: Option<Arc<LabelledImages>>,
}

impl Source {
    /// `fashion-mnist:train`, `fashion-mnist:test`, a directory, or a JSONL file.
    pub fn parse(spec: &str, opts: &SourceOptions) -> Result<Self, PipelineError> {
        let err = |reason: &str| PipelineError::Source {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(split) = spec.strip_prefix("fashion-mnist:") {
            let split = match split {
                "train" => Split::Train,
                "test" => Split::Test,
                _ => return Err(err("the Fashion-MNIST split is `train` or `test`")),
            };
            return Ok(Source::FashionMnist {
                root: opts.fashion_mnist_root.clone(),
                split,
            });
        }
        let path = PathBuf::from(spec);
        if path.is_dir() {
            Ok(Source::Directory {
                root: path,
                labels_from_dirs: opts.labels_from_dirs,
            })
        } else if path.is_file() {
            if opts.labels_from_dirs {
                return Err(err("--labels-from-dirs applies to image folders only"));
            }
            Ok(Source::Jsonl { path })
        } else {
            Err(err(
                "no such directory or file (expected an image folder, a JSONL manifest or fashion-mnist:train|test)",
            ))
        }
    }

    /// Lists the items. Only a source that cannot be opened at all is an error.
    pub fn catalog(&self) -> Result<Catalog, PipelineError> {
        match self {
            Source::Directory {
                root,
                labels_from_dirs,
            } => Ok(list_directory(root, *labels_from_dirs)),
            Source::Jsonl { path } => list_jsonl(path),
            Source::FashionMnist { root, split } => list_fashion_mnist(root, *split),
        }
    }
}

impl Catalog {
    fn new(
        entries: Vec<Entry>,
        mut rejected: Vec<Failure>,
        images: Option<Arc<LabelledImages>>,
    ) -> Self {
        let mut first_seen: HashMap<String, String> = HashMap::new();
        let mut unique = Vec::with_capacity(entries.len());
        for e in entries {
            let here = describe(&e.origin);
            match first_seen.get(&e.record.id) {
                Some(first) => rejected.push(Failure {
                    id: e.record.id.clone(),
                    source: here,
                    error: format!("duplicate id (first used by {first})"),
                }),
                None => {
                    first_seen.insert(e.record.id.clone(), here);
                    unique.push(e);
                }
            }
        }
        Self {
            entries: unique,
            rejected,
            images,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps the first `n` entries (for quick runs and benchmarks).
    pub fn truncate(&mut self, n: usize) {
        self.entries.truncate(n);
    }

    /// Moves entries whose id `taken` reports as already used (e.g. in the index being extended) to `rejected`.
    pub fn reject_taken(&mut self, taken: impl Fn(&str) -> bool) {
        let (dups, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| taken(&e.record.id));
        self.entries = keep;
        self.rejected.extend(dups.into_iter().map(|e| Failure {
            source: describe(&e.origin),
            id: e.record.id,
            error: "id is already in the index".into(),
        }));
    }

    /// Reads, decodes and preprocesses one entry into the model's input floats.
    pub fn preprocess(
        &self,
        origin: &Origin,
        p: &Preprocessing,
        limits: ImageLimits,
    ) -> Result<Vec<f32>, String> {
        match origin {
            Origin::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
                preprocess::preprocess_bytes(&bytes, p, limits).map_err(|e| e.to_string())
            }
            Origin::Record(i) => {
                let set = self
                    .images
                    .as_ref()
                    .filter(|s| *i < s.len())
                    .ok_or_else(|| format!("no data set record {i}"))?;
                let mut out = Vec::with_capacity(p.numel());
                preprocess::preprocess_gray(
                    set.image(*i),
                    set.cols as u32,
                    set.rows as u32,
                    p,
                    &mut out,
                );
                Ok(out)
            }
        }
    }
}

/// Where an item came from, for reports.
pub fn describe(origin: &Origin) -> String {
    match origin {
        Origin::File(p) => p.display().to_string(),
        Origin::Record(i) => format!("data set record {i}"),
    }
}

fn list_directory(root: &Path, labels_from_dirs: bool) -> Catalog {
    let mut entries = Vec::new();
    let mut rejected = Vec::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        // Hidden files and folders (.DS_Store, .git, an index's temp dirs) are not gallery images.
        .filter_entry(|e| !e.file_name().to_string_lossy().starts_with('.'));
    for item in walk {
        let e = match item {
            Ok(e) => e,
            Err(err) => {
                let path = err
                    .path()
                    .map(Path::to_owned)
                    .unwrap_or_else(|| root.to_owned());
                rejected.push(Failure {
                    id: relative_id(root, &path),
                    source: path.display().to_string(),
                    error: format!("cannot list: {err}"),
                });
                continue;
            }
        };
        if !e.path().is_file() {
            continue;
        }
        let mut record = Record::new(relative_id(root, e.path()));
        if labels_from_dirs && e.depth() > 1 {
            if let Some(parent) = e.path().parent().and_then(Path::file_name) {
                record.label = Some(parent.to_string_lossy().into_owned());
            }
        }
        entries.push(Entry {
            record,
            origin: Origin::File(e.path().to_owned()),
        });
    }
    Catalog::new(entries, rejected, None)
}

fn relative_id(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Deserialize)]
struct ManifestLine {
    id: String,
    path: String,
    #[serde(default)]
    label: Option<serde_json::Value>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

/// A record from a JSON line's fields; the label may be a string or a number.
pub(super) fn record_of(
    id: String,
    label: Option<serde_json::Value>,
    meta: Option<serde_json::Value>,
) -> Result<Record, String> {
    let mut record = Record::new(id);
    record.label = label_text(label.unwrap_or_default())?;
    record.meta = meta;
    Ok(record)
}

fn label_text(v: serde_json::Value) -> Result<Option<String>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(format!("label must be a string or a number, not {other}")),
    }
}

fn list_jsonl(path: &Path) -> Result<Catalog, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut entries = Vec::new();
    let mut rejected = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let parsed = serde_json::from_str::<ManifestLine>(line)
            .map_err(|e| e.to_string())
            .and_then(|l| Ok((record_of(l.id, l.label, l.meta)?, l.path)));
        match parsed {
            Ok((record, file)) => entries.push(Entry {
                record,
                origin: Origin::File(base.join(file)),
            }),
            Err(e) => rejected.push(Failure {
                id: format!("line {}", i + 1),
                source: at,
                error: format!("bad manifest line: {e}"),
            }),
        }
    }
    Ok(Catalog::new(entries, rejected, None))
}

fn list_fashion_mnist(root: &Path, split: Split) -> Result<Catalog, PipelineError> {
    let set = FashionMnist::new(root).load(split)?;
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    let entries = set
        .labels
        .iter()
        .enumerate()
        .map(|(i, &class)| {
            let name = CLASS_NAMES
                .get(class as usize)
                .copied()
                .unwrap_or("unknown");
            Entry {
                record: Record::new(format!("{prefix}/{i}")).with_label(name),
                origin: Origin::Record(i),
            }
        })
        .collect();
    Ok(Catalog::new(entries, Vec::new(), Some(Arc::new(set))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(labels_from_dirs: bool) -> SourceOptions {
        SourceOptions {
            labels_from_dirs,
            ..Default::default()
        }
    }

    #[test]
    fn folders_are_listed_sorted_with_relative_ids_and_folder_labels() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "b/2.png",
            "b/1.png",
            "a/x/3.png",
            "top.png",
            ".hidden/4.png",
            "a/.DS_Store",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let spec = root.to_str().unwrap();
        let c = Source::parse(spec, &opts(true)).unwrap().catalog().unwrap();
        let ids: Vec<_> = c.entries.iter().map(|e| e.record.id.as_str()).collect();
        assert_eq!(ids, ["a/x/3.png", "b/1.png", "b/2.png", "top.png"]);
        let labels: Vec<_> = c
            .entries
            .iter()
            .map(|e| e.record.label.as_deref())
            .collect();
        assert_eq!(labels, [Some("x"), Some("b"), Some("b"), None]);
        let c = Source::parse(spec, &opts(false))
            .unwrap()
            .catalog()
            .unwrap();
        assert!(c.entries.iter().all(|e| e.record.label.is_none()));
    }

    #[test]
    fn jsonl_lines_resolve_relative_paths_and_bad_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("gallery.jsonl");
        std::fs::write(
            &m,
            concat!(
                "{\"id\":\"a\",\"path\":\"img/a.png\",\"label\":\"cat\",\"meta\":{\"sku\":1}}\n",
                "\n",
                "{\"id\":\"b\",\"path\":\"/abs/b.png\",\"label\":7}\n",
                "not json\n",
                "{\"id\":\"a\",\"path\":\"again.png\"}\n",
                "{\"path\":\"no-id.png\"}\n",
            ),
        )
        .unwrap();
        let c = Source::parse(m.to_str().unwrap(), &opts(false))
            .unwrap()
            .catalog()
            .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.entries[0].origin,
            Origin::File(dir.path().join("img/a.png"))
        );
        assert_eq!(c.entries[0].record.label.as_deref(), Some("cat"));
        assert_eq!(
            c.entries[0].record.meta,
            Some(serde_json::json!({"sku": 1}))
        );
        assert_eq!(c.entries[1].origin, Origin::File("/abs/b.png".into()));
        assert_eq!(c.entries[1].record.label.as_deref(), Some("7"));
        let why: Vec<_> = c
            .rejected
            .iter()
            .map(|f| (f.id.as_str(), f.error.as_str()))
            .collect();
        assert_eq!(why.len(), 3, "{why:?}");
        assert_eq!(why[0].0, "line 4");
        assert_eq!(why[1].0, "line 6");
        assert!(
            why[2].0 == "a" && why[2].1.starts_with("duplicate id"),
            "{why:?}"
        );
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let e = Source::parse("fashion-mnist:valid", &opts(false)).unwrap_err();
        assert!(e.to_string().contains("`train` or `test`"));
        let e = Source::parse("/nonexistent/gallery", &opts(false)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/gallery"));
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = Source::parse(f.path().to_str().unwrap(), &opts(true)).unwrap_err();
        assert!(e.to_string().contains("image folders only"));
    }

    #[test]
    fn taken_ids_move_to_the_rejected_list() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["1.png", "2.png"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let mut c = Source::parse(dir.path().to_str().unwrap(), &opts(false))
            .unwrap()
            .catalog()
            .unwrap();
        c.reject_taken(|id| id == "1.png");
        assert_eq!(c.len(), 1);
        assert_eq!(c.rejected[0].id, "1.png");
        assert!(c.rejected[0].error.contains("already in the index"));
    }
}
