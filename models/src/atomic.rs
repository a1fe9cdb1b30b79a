//! Writing a file so that a reader or a crash never sees it half-written: the bytes go to a temporary file in
//! the same directory, which is flushed to disk (fsync), renamed over the target, and then the directory itself
//! is flushed so the rename survives a power cut. The one implementation the trainer, the indexer and the
//! server use.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct AtomicWriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The directory a file lives in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temporary name beside `path`: hidden, and unique to this process and call.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The extension stays last: writers such as tch's `save` pick the file format by it.
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    parent_of(path).join(format!(
        ".{stem}.tmp-{}-{}{ext}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically (see the module documentation), creating the directory if needed.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    write_with(path, |w| w.write_all(bytes))
}

/// Like [`write`], with the content streamed by `fill` through a buffered writer; returns what `fill` returns.
pub fn write_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> Result<T, AtomicWriteError> {
    write_via(path, |tmp| {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
        let out = fill(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(out)
    })
    .map_err(|source| AtomicWriteError {
        path: path.to_owned(),
        source,
    })
}

/// Like [`write`], for writers that take a path (a library's `save(path)`): `save` writes the temporary path it
/// is given; the file is then fsynced (whether or not `save` did), renamed over `path`, and the directory
/// fsynced. On any error the temporary file is removed and `path` is untouched.
pub fn write_via<T, E>(path: &Path, save: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E>
where
    E: From<std::io::Error>,
{
    let dir = parent_of(path);
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let result = save(&tmp).and_then(|out| {
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)?;
        Ok(out)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.json");
        write(&path, b"first, longer content").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let n = write_with(&path, |w| w.write_all(b"streamed").map(|()| 8)).unwrap();
        assert_eq!(
            (n, std::fs::read(&path).unwrap()),
            (8, b"streamed".to_vec())
        );
        assert!(leftovers(path.parent().unwrap()).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |w| {
            w.write_all(b"half")?;
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("w.bin") && err.to_string().contains("disk full"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        // A path-taking writer that fails half-way.
        let r: Result<(), std::io::Error> = write_via(&path, |tmp| {
            std::fs::write(tmp, b"partial")?;
            Err(std::io::Error::other("crashed"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_path_taking_writer_is_committed_by_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let seen: Result<PathBuf, std::io::Error> = write_via(&path, |tmp| {
            std::fs::write(tmp, b"weights")?;
            Ok(tmp.to_owned())
        });
        let tmp = seen.unwrap();
        assert_ne!(tmp, path);
        assert_eq!(
            tmp.extension(),
            path.extension(),
            "writers pick formats by extension"
        );
        assert_eq!(
            tmp.parent(),
            path.parent(),
            "renames stay inside one directory"
        );
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"weights");
    }
}
