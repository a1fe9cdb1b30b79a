//! Precomputed embeddings as a source: `npy:FILE.npy` (float32 `[N, dim]`) for galleries embedded elsewhere or
//! made by a benchmark, with an optional JSONL of records (`{"id", "label"?, "meta"?}`, one line per row, in row
//! order). No model runs; the gallery model still names the embedding space and dimension. A row that is not a
//! usable vector (NaN, infinite, zero) or repeats an id is reported and skipped, like an unreadable image.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use super::source::record_of;
use super::{Embedded, Failure, PipelineError};
use crate::record::Record;
use crate::{npy, vector};

/// The prefix that marks a vectors source.
pub const NPY_PREFIX: &str = "npy:";

#[derive(Debug, Clone, PartialEq)]
pub struct VectorsSource {
    pub npy: PathBuf,
    pub records: Option<PathBuf>,
}

#[derive(Deserialize)]
struct RecordLine {
    id: String,
    #[serde(default)]
    label: Option<serde_json::Value>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

impl VectorsSource {
    /// `npy:FILE.npy`, or `None` when `spec` is not a vectors source.
    pub fn parse(spec: &str, records: Option<&Path>) -> Option<Self> {
        spec.strip_prefix(NPY_PREFIX).map(|p| Self {
            npy: PathBuf::from(p),
            records: records.map(Path::to_owned),
        })
    }

    /// Reads the vectors and their records. `dim` is the gallery model's embedding dimension.
    pub fn load(&self, dim: usize) -> Result<Embedded, PipelineError> {
        let started = Instant::now();
        let spec = format!("{NPY_PREFIX}{}", self.npy.display());
        let m = npy::read(&self.npy)?;
        if m.cols != dim {
            return Err(PipelineError::Source {
                spec,
                reason: format!(
                    "holds {}-d vectors but the gallery model embeds into {dim} dimensions",
                    m.cols
                ),
            });
        }
        let mut failures = Vec::new();
        let records = self.records(m.rows, &mut failures)?;
        let mut seen = HashSet::with_capacity(m.rows);
        let mut items = Vec::with_capacity(m.rows);
        for (row, record) in records.into_iter().enumerate() {
            let Some(record) = record else { continue };
            let at = format!("{} row {row}", self.npy.display());
            if !seen.insert(record.id.clone()) {
                failures.push(Failure {
                    id: record.id,
                    source: at,
                    error: "duplicate id".into(),
                });
                continue;
            }
            match vector::normalised(m.row(row), dim) {
                Ok(_) => items.push((record, m.row(row).to_vec())),
                Err(problem) => failures.push(Failure {
                    id: record.id,
                    source: at,
                    error: format!("the vector {problem}"),
                }),
            }
        }
        Ok(Embedded {
            items,
            failures,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One record per row: from the records file, else `<file stem>/<row>`. A bad line skips its row.
    fn records(
        &self,
        rows: usize,
        failures: &mut Vec<Failure>,
    ) -> Result<Vec<Option<Record>>, PipelineError> {
        let Some(path) = &self.records else {
            let stem = self
                .npy
                .file_stem()
                .map_or("row".into(), |s| s.to_string_lossy().into_owned());
            return Ok((0..rows)
                .map(|i| Some(Record::new(format!("{stem}/{i}"))))
                .collect());
        };
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
            path: path.clone(),
            source,
        })?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() != rows {
            return Err(PipelineError::Source {
                spec: path.display().to_string(),
                reason: format!(
                    "has {} records for {rows} vectors in {} (one line per row, in row order)",
                    lines.len(),
                    self.npy.display()
                ),
            });
        }
        Ok(lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let parsed = serde_json::from_str::<RecordLine>(line)
                    .map_err(|e| e.to_string())
                    .and_then(|l| record_of(l.id, l.label, l.meta));
                match parsed {
                    Ok(record) => Some(record),
                    Err(e) => {
                        failures.push(Failure {
                            id: format!("row {i}"),
                            source: format!("{}:{}", path.display(), i + 1),
                            error: format!("bad record line: {e}"),
                        });
                        None
                    }
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, data: &[f32], rows: usize, cols: usize) -> PathBuf {
        let p = dir.join("vecs.npy");
        npy::write(&p, data, rows, cols).unwrap();
        p
    }

    #[test]
    fn rows_become_records_and_bad_rows_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0.5f32; 4 * 3];
        data[3] = f32::NAN; // row 1
        data[6..9].fill(0.0); // row 2
        let npy = write(dir.path(), &data, 4, 3);
        let src = VectorsSource::parse(&format!("npy:{}", npy.display()), None).unwrap();
        let run = src.load(3).unwrap();
        let ids: Vec<&str> = run.items.iter().map(|(r, _)| r.id.as_str()).collect();
        assert_eq!(ids, ["vecs/0", "vecs/3"]);
        assert_eq!(run.failures.len(), 2);
        assert!(run.failures[0].error.contains("NaN"), "{:?}", run.failures);
        assert!(run.failures[1].error.contains("zero"), "{:?}", run.failures);
        assert!(run.failures[1].source.ends_with("row 2"));
    }

    #[test]
    fn a_records_file_names_each_row_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let npy = write(dir.path(), &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2);
        let ids = dir.path().join("ids.jsonl");
        std::fs::write(
            &ids,
            "{\"id\": \"a\", \"label\": \"shoe\", \"meta\": {\"sku\": 7}}\nnot json\n{\"id\": \"a\"}\n",
        )
        .unwrap();
        let run = VectorsSource::parse(&format!("npy:{}", npy.display()), Some(&ids))
            .unwrap()
            .load(2)
            .unwrap();
        assert_eq!(run.items.len(), 1);
        let (r, v) = &run.items[0];
        assert_eq!((r.id.as_str(), r.label.as_deref()), ("a", Some("shoe")));
        assert_eq!(r.meta.as_ref().unwrap()["sku"], 7);
        assert_eq!(v, &[1.0, 0.0]);
        let errors: Vec<&str> = run.failures.iter().map(|f| f.error.as_str()).collect();
        assert!(
            errors[0].starts_with("bad record line") && errors[1] == "duplicate id",
            "{errors:?}"
        );
    }

    #[test]
    fn a_wrong_dimension_or_record_count_is_an_error_naming_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let npy = write(dir.path(), &[1.0; 6], 2, 3);
        let spec = format!("npy:{}", npy.display());
        let err = VectorsSource::parse(&spec, None)
            .unwrap()
            .load(4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3-d") && err.contains("4 dimensions"), "{err}");
        let ids = dir.path().join("ids.jsonl");
        std::fs::write(&ids, "{\"id\": \"only-one\"}\n").unwrap();
        let err = VectorsSource::parse(&spec, Some(&ids))
            .unwrap()
            .load(3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 records for 2 vectors"), "{err}");
        assert!(VectorsSource::parse("photos/", None).is_none());
    }
}
