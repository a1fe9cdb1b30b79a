//! NumPy `.npy` files of float32 rows: how galleries embedded elsewhere (or made by a benchmark) reach the index.
//! Only what such a file needs is read: little-endian `float32`, C order, two dimensions (format versions 1-3).

use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a .npy file ({reason})")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: {what} is not supported; save float32 rows in C order, e.g. np.save(path, np.ascontiguousarray(x, dtype='<f4'))")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: the header promises {expected} bytes of data, the file holds {got}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
}

/// `rows x cols` float32 values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// Reads a 2-D float32 `.npy` file.
pub fn read(path: &Path) -> Result<Matrix, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).map_err(|e| e.at(path))
}

/// Writes `data` as a `rows x cols` float32 `.npy` file (format version 1.0).
pub fn write(path: &Path, data: &[f32], rows: usize, cols: usize) -> std::io::Result<()> {
    assert_eq!(data.len(), rows * cols, "data is not rows x cols");
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64 bytes.
    let used = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - used % 64) % 64));
    header.push('\n');
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(MAGIC)?;
    out.write_all(&[1, 0])?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for x in data {
        out.write_all(&x.to_le_bytes())?;
    }
    out.flush()
}

/// Errors of [`parse`], before the path is known.
#[derive(Debug)]
enum ParseError {
    Malformed(String),
    Unsupported(String),
    Truncated { expected: u64, got: u64 },
}

impl ParseError {
    fn at(self, path: &Path) -> NpyError {
        let path = path.to_owned();
        match self {
            ParseError::Malformed(reason) => NpyError::Malformed { path, reason },
            ParseError::Unsupported(what) => NpyError::Unsupported { path, what },
            ParseError::Truncated { expected, got } => NpyError::Truncated {
                path,
                expected,
                got,
            },
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Matrix, ParseError> {
    let bad = |r: &str| ParseError::Malformed(r.to_owned());
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("no \\x93NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(ParseError::Unsupported(format!("format version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad("the header is cut short"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("the header is not text"))?;
    let descr = quoted_value(header, "descr").ok_or_else(|| bad("no 'descr' in the header"))?;
    if descr != "<f4" && !(descr == "=f4" && cfg!(target_endian = "little")) {
        return Err(ParseError::Unsupported(format!("dtype {descr:?}")));
    }
    match raw_value(header, "fortran_order") {
        Some(v) if v.starts_with("False") => {}
        Some(v) if v.starts_with("True") => {
            return Err(ParseError::Unsupported("Fortran order".into()))
        }
        _ => return Err(bad("no 'fortran_order' in the header")),
    }
    let shape = raw_value(header, "shape").ok_or_else(|| bad("no 'shape' in the header"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("'shape' is not a tuple"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad("'shape' holds a non-integer"))
        })
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(ParseError::Unsupported(format!(
            "a {}-dimensional array (one row per vector: [N, dim])",
            dims.len()
        )));
    };
    let data = &bytes[start + header_len..];
    let expected = (rows as u64)
        .checked_mul(cols as u64)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| bad("'shape' overflows"))?;
    if data.len() as u64 != expected {
        return Err(ParseError::Truncated {
            expected,
            got: data.len() as u64,
        });
    }
    let data = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Matrix { rows, cols, data })
}

/// The text after `'key':` in a header dict, trimmed.
fn raw_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

/// A quoted string value of a header dict.
fn quoted_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let v = raw_value(header, key)?;
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    v[1..].split(q).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(descr: &str, fortran: &str, shape: &str) -> Vec<u8> {
        let h = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n");
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out
    }

    #[test]
    fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        write(&path, &data, 3, 4).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - 48) % 16, 0, "data starts 64-byte aligned");
        let m = read(&path).unwrap();
        assert_eq!((m.rows, m.cols), (3, 4));
        assert_eq!(m.data, data);
        assert_eq!(m.row(2), &data[8..12]);
    }

    #[test]
    fn numpy_headers_in_every_spelling_parse() {
        for (d, s) in [("<f4", "(2, 3)"), ("=f4", "(2,3)"), ("<f4", "(2, 3,)")] {
            let mut b = header(d, "False", s);
            b.extend(vec![0u8; 24]);
            let m = parse(&b).unwrap_or_else(|_| panic!("{d} {s}"));
            assert_eq!((m.rows, m.cols), (2, 3));
        }
        // Version 2 has a four-byte header length.
        let mut b = header("<f4", "False", "(1, 1)");
        b[6] = 2;
        let len = u16::from_le_bytes([b[8], b[9]]) as u32;
        b.splice(8..10, len.to_le_bytes());
        b.extend([0u8; 4]);
        assert_eq!(parse(&b).unwrap().data, vec![0.0]);
    }

    #[test]
    fn other_arrays_are_refused_with_the_reason() {
        let cases = [
            (header("<f8", "False", "(2, 3)"), "dtype"),
            (header(">f4", "False", "(2, 3)"), "dtype"),
            (header("<f4", "True", "(2, 3)"), "Fortran"),
            (header("<f4", "False", "(6,)"), "1-dimensional"),
            (header("<f4", "False", "(1, 2, 3)"), "3-dimensional"),
        ];
        for (mut b, needle) in cases {
            b.extend(vec![0u8; 48]);
            let err = parse(&b).err().unwrap().at(Path::new("x.npy")).to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let mut b = header("<f4", "False", "(2, 3)");
        b.extend(vec![0u8; 20]);
        let err = parse(&b).err().unwrap().at(Path::new("x.npy")).to_string();
        assert!(
            err.contains("24 bytes") && err.contains("holds 20"),
            "{err}"
        );
        assert!(matches!(
            parse(b"PK\x03\x04 not npy").err().unwrap(),
            ParseError::Malformed(_)
        ));
        assert!(matches!(
            parse(&header("<f4", "False", "(2, 3)")[..20])
                .err()
                .unwrap(),
            ParseError::Malformed(_)
        ));
    }
}
