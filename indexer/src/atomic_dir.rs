//! Replacing a whole index directory so that a crash at any point leaves a loadable index behind.
//!
//! A save writes everything into `<name>.tmp-<pid>` beside the target and fsyncs it. A first save then renames
//! it to the target. Replacing an existing index takes two renames: target -> `<name>.old-<pid>`, then temp ->
//! target, then the old copy is deleted. Between the two renames the target is briefly missing; [`recover`]
//! (run by every open) moves the old copy back, so an interrupted save always leaves the previous index. A
//! leftover `<name>.tmp-*` is an unfinished save: never read, safe to delete. One writer per index at a time.

use std::path::{Path, PathBuf};

use crate::error::IndexError;
use crate::manifest::MANIFEST_FILE;

/// Test hook: `HETVIS_INDEX_FAILPOINT=<stage>` aborts the process at that stage of a save, like a crash or
/// `kill -9` would. Stages: `after-temp-written`, `after-old-moved`.
pub const FAILPOINT_ENV: &str = "HETVIS_INDEX_FAILPOINT";

fn failpoint(stage: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == stage) {
        eprintln!("{FAILPOINT_ENV}={stage}: aborting mid-save");
        std::process::abort();
    }
}

/// Parent directory (`.` for a bare name) and file name of `target`.
fn split(target: &Path) -> Result<(PathBuf, String), IndexError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| IndexError::NotFound {
            path: target.to_owned(),
        })?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    hetvis_models::atomic::sync_dir(dir).map_err(IndexError::io(dir))
}

/// A directory that a save may replace: missing, empty, or an index (it has a manifest). Anything else is
/// refused so that `--out ~/photos` can never delete someone's photos.
fn check_replaceable(target: &Path) -> Result<(), IndexError> {
    if !target.exists() {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(IndexError::Io {
            path: target.to_owned(),
            source: std::io::Error::other(format!("refusing to replace it: {why}")),
        })
    };
    if !target.is_dir() {
        return refuse("it is not a directory");
    }
    let empty = std::fs::read_dir(target)
        .map_err(IndexError::io(target))?
        .next()
        .is_none();
    if empty || target.join(MANIFEST_FILE).is_file() {
        Ok(())
    } else {
        refuse("it exists and is not a hetvis index")
    }
}

/// Writes a new version of `target` through `fill`, which gets an empty directory to write into, and puts it in
/// place as described in the module documentation.
pub fn replace_dir(
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    check_replaceable(target)?;
    let (parent, name) = split(target)?;
    std::fs::create_dir_all(&parent).map_err(IndexError::io(&parent))?;
    let pid = std::process::id();
    let tmp = parent.join(format!("{name}.tmp-{pid}"));
    if tmp.exists() {
        // Only this process uses this name: a previous save of ours failed half-way.
        std::fs::remove_dir_all(&tmp).map_err(IndexError::io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(IndexError::io(&tmp))?;
    if let Err(e) = fill(&tmp).and_then(|()| sync_dir(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    failpoint("after-temp-written");

    let old = parent.join(format!("{name}.old-{pid}"));
    let had_old = target.exists();
    if had_old {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(IndexError::io(&old))?;
        }
        std::fs::rename(target, &old).map_err(IndexError::io(target))?;
        failpoint("after-old-moved");
    }
    if let Err(source) = std::fs::rename(&tmp, target) {
        if had_old {
            let _ = std::fs::rename(&old, target);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(IndexError::Io {
            path: target.to_owned(),
            source,
        });
    }
    sync_dir(&parent)?;
    if had_old {
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not delete the replaced index");
        }
    }
    Ok(())
}

/// Moves the newest `<name>.old-<pid>` back to `target` when `target` is missing: the state a crash between the
/// two renames of [`replace_dir`] leaves. Returns whether it recovered one.
pub fn recover(target: &Path) -> Result<bool, IndexError> {
    if target.exists() {
        return Ok(false);
    }
    let (parent, name) = split(target)?;
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(false);
    };
    let prefix = format!("{name}.old-");
    let newest = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix(&prefix)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
                && e.path().join(MANIFEST_FILE).is_file()
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max();
    let Some((_, old)) = newest else {
        return Ok(false);
    };
    std::fs::rename(&old, target).map_err(IndexError::io(&old))?;
    sync_dir(&parent)?;
    tracing::warn!(
        from = %old.display(),
        to = %target.display(),
        "recovered the previous index left by an interrupted save"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_index(dir: &Path, body: &str) -> Result<(), IndexError> {
        std::fs::write(dir.join(MANIFEST_FILE), body).map_err(IndexError::io(dir))
    }

    fn read(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap()
    }

    #[test]
    fn replaces_in_place_and_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        replace_dir(&target, |d| write_index(d, "v1")).unwrap();
        replace_dir(&target, |d| write_index(d, "v2")).unwrap();
        assert_eq!(read(&target), "v2");
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["idx"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_version() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        replace_dir(&target, |d| write_index(d, "v1")).unwrap();
        let err = replace_dir(&target, |d| {
            write_index(d, "half")?;
            Err(IndexError::InvalidParams("disk full".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(read(&target), "v1");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn recovers_the_old_copy_after_a_crash_between_the_renames() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        replace_dir(&target, |d| write_index(d, "v1")).unwrap();
        // What a crash after `target -> old` looks like: no target, the old copy, a finished temp dir.
        std::fs::rename(&target, root.path().join("idx.old-4242")).unwrap();
        let tmp = root.path().join("idx.tmp-4242");
        std::fs::create_dir(&tmp).unwrap();
        write_index(&tmp, "v2").unwrap();
        // Unrelated names are never taken for a backup.
        std::fs::create_dir(root.path().join("idx.old-x")).unwrap();
        assert!(recover(&target).unwrap());
        assert_eq!(read(&target), "v1");
        assert!(!recover(&target).unwrap());
        // The next save proceeds normally beside the stale temp dir.
        replace_dir(&target, |d| write_index(d, "v3")).unwrap();
        assert_eq!(read(&target), "v3");
    }

    #[test]
    fn refuses_to_replace_something_that_is_not_an_index() {
        let root = tempfile::tempdir().unwrap();
        let photos = root.path().join("photos");
        std::fs::create_dir(&photos).unwrap();
        std::fs::write(photos.join("cat.jpg"), b"meow").unwrap();
        let err = replace_dir(&photos, |d| write_index(d, "v1")).unwrap_err();
        assert!(err.to_string().contains("not a hetvis index"), "{err}");
        assert!(photos.join("cat.jpg").is_file());
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(replace_dir(&file, |d| write_index(d, "v1")).is_err());
        // An empty directory is fine (e.g. made by `mkdir` or a volume mount).
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        replace_dir(&empty, |d| write_index(d, "v1")).unwrap();
        assert_eq!(read(&empty), "v1");
    }
}
