//! Reading and writing the files of an index directory (see [`crate::manifest`] for the layout). Writing goes
//! into a fresh directory that [`crate::atomic_dir`] then puts in place; reading checks sizes and checksums
//! before parsing anything, so a truncated or altered file is an error naming it, never a panic or garbage.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::checksum::sha256_hex;
use crate::error::IndexError;
use crate::flat::FlatIndex;
use crate::graph::{Graph, GRAPH_FILES};
use crate::manifest::{
    FileEntry, IndexManifest, DATA_FILES, FORMAT_VERSION, MANIFEST_FILE, METRIC,
    OLDEST_FORMAT_VERSION, RECORDS_FILE, REMOVED_FILE, VECTORS_FILE,
};
use crate::record::Record;

/// Stored vectors may drift this far from unit length (f32 rounding); more means the file is not ours.
const NORM_TOLERANCE: f32 = 1e-3;

/// An index directory's contents, checked against its manifest.
#[derive(Debug)]
pub struct StoredIndex {
    pub manifest: IndexManifest,
    pub records: Vec<Record>,
    pub vectors: FlatIndex,
    /// The directory the files were read from (the target, or where an interrupted save left it).
    pub dir: std::path::PathBuf,
    /// Rows of removed items: kept until a compaction, never returned by a search.
    pub removed: BTreeSet<usize>,
    /// sha256 of `manifest.json`: what a write-ahead log extending these files names in its header.
    pub manifest_sha256: [u8; 32],
}

impl StoredIndex {
    /// Whether the directory stores the HNSW graph (checked, like every listed file).
    pub fn has_stored_graph(&self) -> bool {
        GRAPH_FILES
            .iter()
            .all(|f| self.manifest.files.contains_key(*f))
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.inner.write_all(bytes)
    }
}

/// Writes one file of the index (atomically, fsynced) and returns its size and checksum for the manifest.
fn write_file(
    dir: &Path,
    name: &str,
    body: impl FnOnce(&mut HashingWriter<'_, std::io::BufWriter<std::fs::File>>) -> std::io::Result<()>,
) -> Result<FileEntry, IndexError> {
    let path = dir.join(name);
    hetvis_models::atomic::write_with(&path, |file| {
        let mut w = HashingWriter {
            inner: file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        body(&mut w)?;
        Ok(FileEntry {
            bytes: w.bytes,
            sha256: hex::encode(w.hasher.finalize()),
        })
    })
    .map_err(|e| IndexError::io(&path)(e.source))
}

/// Writes vectors, records, the graph when given (it must cover every vector), `extras` (name, bytes) and
/// finally the manifest into the empty directory `dir`. Returns the manifest's sha256.
pub fn write_into(
    dir: &Path,
    manifest: &IndexManifest,
    records: &[Record],
    vectors: &FlatIndex,
    removed: &BTreeSet<usize>,
    graph: Option<&Graph>,
    extras: &[(&str, &[u8])],
) -> Result<[u8; 32], IndexError> {
    let mut manifest = manifest.clone();
    manifest.format_version = FORMAT_VERSION;
    manifest.count = records.len();
    manifest.files.clear();
    if let Some(graph) = graph {
        if graph.len() != vectors.len() {
            return Err(IndexError::InvalidParams(format!(
                "the graph holds {} points for {} vectors",
                graph.len(),
                vectors.len()
            )));
        }
        graph.dump(dir)?;
        for name in GRAPH_FILES {
            let path = dir.join(name);
            // hnsw_rs writes without syncing; the manifest must never list a file that is not on disk.
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(IndexError::io(&path))?;
            let (sha256, bytes) = crate::checksum::sha256_file(&path)?;
            manifest
                .files
                .insert(name.into(), FileEntry { bytes, sha256 });
        }
    }
    let vector_entry = write_file(dir, VECTORS_FILE, |w| {
        for chunk in vectors.as_slice().chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.write(&bytes)?;
        }
        Ok(())
    })?;
    manifest.files.insert(VECTORS_FILE.into(), vector_entry);
    let record_entry = write_file(dir, RECORDS_FILE, |w| {
        for r in records {
            let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
            line.push(b'\n');
            w.write(&line)?;
        }
        Ok(())
    })?;
    manifest.files.insert(RECORDS_FILE.into(), record_entry);
    if !removed.is_empty() {
        let rows: Vec<usize> = removed.iter().copied().collect();
        let json = serde_json::to_vec(&rows).map_err(std::io::Error::other);
        let entry = write_file(dir, REMOVED_FILE, |w| w.write(&json?))?;
        manifest.files.insert(REMOVED_FILE.into(), entry);
    }
    for (name, bytes) in extras {
        let reserved = DATA_FILES.contains(name)
            || GRAPH_FILES.contains(name)
            || [MANIFEST_FILE, REMOVED_FILE, crate::wal::WAL_FILE].contains(name);
        if reserved || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(IndexError::InvalidParams(format!(
                "cannot store an extra file named {name:?}"
            )));
        }
        write_file(dir, name, |w| w.write(bytes))?;
    }
    // Last, so that a directory with a manifest always has complete data files.
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| IndexError::Io {
        path: dir.join(MANIFEST_FILE),
        source: std::io::Error::other(e),
    })?;
    write_file(dir, MANIFEST_FILE, |w| w.write(&json))?;
    Ok(Sha256::digest(&json).into())
}

/// Reads and checks the manifest only: no data file is opened.
pub fn read_manifest(dir: &Path) -> Result<IndexManifest, IndexError> {
    read_manifest_and_sha256(dir).map(|(m, _)| m)
}

/// [`read_manifest`], and the sha256 of the bytes it was parsed from.
fn read_manifest_and_sha256(dir: &Path) -> Result<(IndexManifest, [u8; 32]), IndexError> {
    let path = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IndexError::NotFound {
                path: dir.to_owned(),
            })
        }
        Err(e) => return Err(IndexError::io(&path)(e)),
    };
    let corrupt = |reason: String| IndexError::corrupt(&path, reason);
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
    // Version first, so a newer layout is reported as such rather than as a parse error.
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no format_version".into()))?;
    if !(u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version) {
        return Err(IndexError::UnsupportedFormat {
            path,
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    let m: IndexManifest = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    if m.metric != METRIC {
        return Err(corrupt(format!(
            "metric {:?}, expected {METRIC:?}",
            m.metric
        )));
    }
    if m.dim == 0 {
        return Err(corrupt("dim is 0".into()));
    }
    m.hnsw.validate().map_err(|e| corrupt(e.to_string()))?;
    let listed: Vec<&str> = m.files.keys().map(String::as_str).collect();
    let mut expected = DATA_FILES.to_vec();
    if version >= 2 && GRAPH_FILES.iter().any(|f| m.files.contains_key(*f)) {
        expected.extend(GRAPH_FILES);
    }
    if version >= 2 && m.files.contains_key(REMOVED_FILE) {
        expected.push(REMOVED_FILE);
    }
    expected.sort_unstable();
    if listed != expected {
        return Err(corrupt(format!(
            "lists files {listed:?}, expected {expected:?}"
        )));
    }
    let vector_bytes = m
        .count
        .checked_mul(m.dim)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| corrupt("count x dim overflows".into()))?;
    if m.files[VECTORS_FILE].bytes != vector_bytes as u64 {
        return Err(corrupt(format!(
            "{VECTORS_FILE} should hold {} x {} floats = {vector_bytes} bytes, manifest says {}",
            m.count, m.dim, m.files[VECTORS_FILE].bytes
        )));
    }
    Ok((m, Sha256::digest(text.as_bytes()).into()))
}

/// Checks a file's size and checksum against the manifest without keeping its bytes.
fn check_file(dir: &Path, name: &str, entry: &FileEntry) -> Result<(), IndexError> {
    let path = dir.join(name);
    let (sha256, bytes) = crate::checksum::sha256_file(&path)?;
    if bytes != entry.bytes || sha256 != entry.sha256 {
        return Err(IndexError::corrupt(
            &path,
            format!(
                "{bytes} bytes with sha256 {sha256}; the manifest says {} bytes with sha256 {}",
                entry.bytes, entry.sha256
            ),
        ));
    }
    Ok(())
}

/// Reads a data file whole and checks its size and checksum against the manifest.
fn read_checked(dir: &Path, name: &str, entry: &FileEntry) -> Result<Vec<u8>, IndexError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(IndexError::io(&path))?;
    if bytes.len() as u64 != entry.bytes {
        let how = if (bytes.len() as u64) < entry.bytes {
            "truncated"
        } else {
            "too long"
        };
        return Err(IndexError::corrupt(
            &path,
            format!(
                "{how}: {} bytes, the manifest says {}",
                bytes.len(),
                entry.bytes
            ),
        ));
    }
    let digest = sha256_hex(&bytes);
    if digest != entry.sha256 {
        return Err(IndexError::corrupt(
            &path,
            format!(
                "sha256 {digest} does not match the manifest's {}",
                entry.sha256
            ),
        ));
    }
    Ok(bytes)
}

fn parse_vectors(path: &Path, bytes: &[u8], dim: usize) -> Result<FlatIndex, IndexError> {
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let flat = FlatIndex::from_rows(dim, data)
        .ok_or_else(|| IndexError::corrupt(path, "length is not a whole number of vectors"))?;
    for row in 0..flat.len() {
        let norm = crate::vector::dot(flat.vector(row), flat.vector(row)).sqrt();
        if !norm.is_finite() || (norm - 1.0).abs() > NORM_TOLERANCE {
            return Err(IndexError::corrupt(
                path,
                format!("vector {row} has norm {norm}, stored vectors are unit length"),
            ));
        }
    }
    Ok(flat)
}

/// `removed.json`: the ascending rows of removed items, each below `count`.
fn parse_removed(path: &Path, bytes: &[u8], count: usize) -> Result<BTreeSet<usize>, IndexError> {
    let rows: Vec<usize> =
        serde_json::from_slice(bytes).map_err(|e| IndexError::corrupt(path, e.to_string()))?;
    if rows.windows(2).any(|w| w[0] >= w[1]) || rows.last().is_some_and(|&r| r >= count) {
        return Err(IndexError::corrupt(
            path,
            format!("rows must ascend and stay below the {count} stored"),
        ));
    }
    Ok(rows.into_iter().collect())
}

/// Records in row order. Ids are unique among the live rows (a removed id may have been added again).
fn parse_records(
    path: &Path,
    bytes: &[u8],
    count: usize,
    removed: &BTreeSet<usize>,
) -> Result<Vec<Record>, IndexError> {
    let text = std::str::from_utf8(bytes).map_err(|e| IndexError::corrupt(path, e.to_string()))?;
    let mut records = Vec::with_capacity(count);
    let mut seen = HashSet::with_capacity(count);
    for (i, line) in text.lines().enumerate() {
        let r: Record = serde_json::from_str(line)
            .map_err(|e| IndexError::corrupt(path, format!("line {}: {e}", i + 1)))?;
        if !removed.contains(&i) && !seen.insert(r.id.clone()) {
            return Err(IndexError::corrupt(
                path,
                format!("line {}: duplicate id {:?}", i + 1, r.id),
            ));
        }
        records.push(r);
    }
    if records.len() != count {
        return Err(IndexError::corrupt(
            path,
            format!("{} records, the manifest says {count}", records.len()),
        ));
    }
    Ok(records)
}

/// Reads an index directory, checking every file against the manifest. While a save interrupted between its
/// renames has left the target missing, reads the previous version where it lies; renames nothing.
pub fn read_verified(dir: &Path) -> Result<StoredIndex, IndexError> {
    // A writer may move the directory between our reads of its files (it renames, then deletes the old copy):
    // a file that vanished mid-read is read again from wherever the index is now.
    let mut attempts = 0;
    loop {
        let at = crate::atomic_dir::resolve_for_reading(dir);
        match read_dir_verified(dir, &at) {
            Err(IndexError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempts < 3 =>
            {
                attempts += 1;
            }
            other => return other,
        }
    }
}

fn read_dir_verified(target: &Path, dir: &Path) -> Result<StoredIndex, IndexError> {
    if !dir.is_dir() {
        return Err(IndexError::NotFound {
            path: target.to_owned(),
        });
    }
    let (manifest, manifest_sha256) = read_manifest_and_sha256(dir)?;
    let vectors_bytes = read_checked(dir, VECTORS_FILE, &manifest.files[VECTORS_FILE])?;
    let vectors = parse_vectors(&dir.join(VECTORS_FILE), &vectors_bytes, manifest.dim)?;
    drop(vectors_bytes);
    let removed = match manifest.files.get(REMOVED_FILE) {
        Some(entry) => {
            let bytes = read_checked(dir, REMOVED_FILE, entry)?;
            parse_removed(&dir.join(REMOVED_FILE), &bytes, manifest.count)?
        }
        None => BTreeSet::new(),
    };
    let record_bytes = read_checked(dir, RECORDS_FILE, &manifest.files[RECORDS_FILE])?;
    let records = parse_records(
        &dir.join(RECORDS_FILE),
        &record_bytes,
        manifest.count,
        &removed,
    )?;
    for name in GRAPH_FILES {
        if let Some(entry) = manifest.files.get(name) {
            check_file(dir, name, entry)?;
        }
    }
    Ok(StoredIndex {
        manifest,
        records,
        vectors,
        dir: dir.to_owned(),
        removed,
        manifest_sha256,
    })
}
