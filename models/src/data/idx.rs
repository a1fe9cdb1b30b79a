//! Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or plain.
//!
//! Every failure names the file: a truncated download or a swapped file must be a clear error, not a panic.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// IDX magic for unsigned-byte data with 3 dimensions (images) and 1 dimension (labels).
const MAGIC_IMAGES_U8: u32 = 0x0000_0803;
const MAGIC_LABELS_U8: u32 = 0x0000_0801;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: bad IDX magic number {found:#010x}, expected {expected:#010x} (wrong or corrupt file)")]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error("{path}: truncated or oversized IDX file: header promises {expected} bytes of data, found {found}")]
    SizeMismatch {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{path}: IDX header too short ({found} bytes)")]
    ShortHeader { path: PathBuf, found: usize },
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    #[error("{path}: label {label} at index {index} is outside 0..{classes}")]
    BadLabel {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Grayscale images with one class label each, stored row-major, `rows * cols` bytes per image.
#[derive(Debug, Clone)]
pub struct LabelledImages {
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl LabelledImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i` (`rows * cols` bytes).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Number of distinct classes, taken as `max label + 1`.
    pub fn num_classes(&self) -> usize {
        self.labels
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
    }
}

/// Reads a whole file, transparently gunzipping when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parses an IDX buffer with the given magic; returns the dimensions and the payload.
fn parse(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    ndim: usize,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let header = 4 + 4 * ndim;
    let short = || DataError::ShortHeader {
        path: path.to_owned(),
        found: bytes.len(),
    };
    // The magic is checked first: a swapped or foreign file is better reported as such than as "short".
    if bytes.len() < 4 {
        return Err(short());
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_owned(),
            expected: magic,
            found,
        });
    }
    if bytes.len() < header {
        return Err(short());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::Invalid {
            path: path.to_owned(),
            message: format!("dimensions {dims:?} overflow"),
        })?;
    let payload = &bytes[header..];
    if payload.len() != expected {
        return Err(DataError::SizeMismatch {
            path: path.to_owned(),
            expected,
            found: payload.len(),
        });
    }
    Ok((dims, payload.to_vec()))
}

/// Reads an IDX image file and its label file, checking that they agree and labels are `< classes`.
pub fn read_pair(
    images: &Path,
    labels: &Path,
    classes: usize,
) -> Result<LabelledImages, DataError> {
    let (idims, pixels) = parse(images, &read_maybe_gz(images)?, MAGIC_IMAGES_U8, 3)?;
    let (ldims, label_bytes) = parse(labels, &read_maybe_gz(labels)?, MAGIC_LABELS_U8, 1)?;
    if idims[0] != ldims[0] {
        return Err(DataError::CountMismatch {
            images: images.to_owned(),
            labels: labels.to_owned(),
            n_images: idims[0],
            n_labels: ldims[0],
        });
    }
    if let Some((index, &label)) = label_bytes
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(DataError::BadLabel {
            path: labels.to_owned(),
            index,
            label,
            classes,
        });
    }
    Ok(LabelledImages {
        rows: idims[1],
        cols: idims[2],
        pixels,
        labels: label_bytes,
    })
}

/// Encodes images and labels as IDX buffers (uncompressed): used by tests and by the synthetic generator.
pub fn encode(set: &LabelledImages) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::with_capacity(16 + set.pixels.len());
    images.extend_from_slice(&MAGIC_IMAGES_U8.to_be_bytes());
    for d in [set.len(), set.rows, set.cols] {
        images.extend_from_slice(&(d as u32).to_be_bytes());
    }
    images.extend_from_slice(&set.pixels);
    let mut labels = Vec::with_capacity(8 + set.len());
    labels.extend_from_slice(&MAGIC_LABELS_U8.to_be_bytes());
    labels.extend_from_slice(&(set.len() as u32).to_be_bytes());
    labels.extend_from_slice(&set.labels);
    (images, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> LabelledImages {
        LabelledImages {
            rows: 2,
            cols: 3,
            pixels: (0..12).collect(),
            labels: vec![1, 9],
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> PathBuf {
        let path = dir.join(name);
        if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            std::fs::write(&path, e.finish().unwrap()).unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        path
    }

    #[test]
    fn round_trips_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lab) = encode(&sample());
        for gz in [false, true] {
            let i = write(dir.path(), "i", &img, gz);
            let l = write(dir.path(), "l", &lab, gz);
            let set = read_pair(&i, &l, 10).unwrap();
            assert_eq!((set.rows, set.cols, set.len()), (2, 3, 2));
            assert_eq!(set.image(1), &[6, 7, 8, 9, 10, 11]);
            assert_eq!(set.labels, vec![1, 9]);
        }
    }

    #[test]
    fn rejects_truncated_payload_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lab) = encode(&sample());
        let i = write(dir.path(), "images.idx", &img[..img.len() - 1], false);
        let l = write(dir.path(), "labels.idx", &lab, false);
        let err = read_pair(&i, &l, 10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::SizeMismatch {
                    expected: 12,
                    found: 11,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("images.idx"));
    }

    #[test]
    fn rejects_swapped_files_by_magic() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lab) = encode(&sample());
        let i = write(dir.path(), "i", &img, false);
        let l = write(dir.path(), "l", &lab, false);
        let err = read_pair(&l, &i, 10).unwrap_err();
        assert!(
            matches!(err, DataError::BadMagic { found: 0x801, .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_truncated_gzip_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lab) = encode(&sample());
        let full = write(dir.path(), "full.gz", &img, true);
        let gz = std::fs::read(&full).unwrap();
        let i = write(dir.path(), "cut.gz", &gz[..gz.len() / 2], false);
        let l = write(dir.path(), "l", &lab, false);
        let err = read_pair(&i, &l, 10).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(err.to_string().contains("cut.gz"));
    }

    #[test]
    fn rejects_out_of_range_labels_and_count_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lab) = encode(&sample());
        let i = write(dir.path(), "i", &img, false);
        let l = write(dir.path(), "l", &lab, false);
        assert!(matches!(
            read_pair(&i, &l, 5),
            Err(DataError::BadLabel {
                index: 1,
                label: 9,
                ..
            })
        ));
        let mut one = sample();
        one.labels.truncate(1);
        let (_, lab1) = encode(&one);
        let l1 = write(dir.path(), "l1", &lab1, false);
        assert!(matches!(
            read_pair(&i, &l1, 10),
            Err(DataError::CountMismatch { .. })
        ));
        let empty = write(dir.path(), "empty", &[], false);
        assert!(matches!(
            read_pair(&empty, &l, 10),
            Err(DataError::ShortHeader { .. })
        ));
    }
}
