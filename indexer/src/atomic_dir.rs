//! Replacing a whole index directory so that a crash at any point leaves a loadable index behind.
//!
//! Writers hold the index's [`WriterLock`] (an advisory lock on `<name>.lock` beside it): one writer at a time,
//! and a second gets [`IndexError::Locked`]. A save writes everything into `<name>.tmp-<pid>` beside the target
//! and fsyncs it. A first save renames it to the target. Replacing an existing index takes two renames: target
//! -> `<name>.old-<pid>`, then temp -> target, then the old copy is deleted.
//!
//! A crash leaves at most: a `<name>.tmp-*` (an unfinished save, never read), or, between the two renames, no
//! target but a complete `<name>.old-*` (the last acknowledged version), or, after them, a stale `<name>.old-*`
//! beside the new target. Readers never rename anything: they read the target, or while it is missing the newest
//! old copy in place ([`resolve_for_reading`]). The next writer, on taking the lock, moves a missing target's old
//! copy back and deletes every leftover ([`WriterLock::acquire`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use hetvis_models::failpoint;

use crate::error::IndexError;
use crate::manifest::MANIFEST_FILE;

/// Failpoints of a save (`HETVIS_FAILPOINTS=<stage>=abort`, test builds only).
pub mod stage {
    /// The new version is complete in `<name>.tmp-<pid>`; the target is untouched.
    pub const AFTER_TEMP_WRITTEN: &str = "after-temp-written";
    /// The target has been moved to `<name>.old-<pid>`; the new version is not in place yet.
    pub const AFTER_OLD_MOVED: &str = "after-old-moved";
    /// The new version is in place; the old copy is not deleted yet.
    pub const AFTER_NEW_IN_PLACE: &str = "after-new-in-place";
    /// `error` here makes the final directory fsync fail.
    pub const SYNC_AFTER_RENAME: &str = "sync-after-rename";
}

/// Whether a save that put the new version in place also made it durable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Durability {
    Durable,
    /// The new version is in place and readable, but the directory fsync after the rename failed: a power loss
    /// could still bring back the previous version. The save is committed; callers report this, not a failure.
    NotDurable(String),
}

impl Durability {
    pub fn is_durable(&self) -> bool {
        matches!(self, Durability::Durable)
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

/// Siblings of `target` named `<name>.<kind>-<digits>`, with their modification times.
fn leftovers(target: &Path, kind: &str) -> Vec<(std::time::SystemTime, PathBuf)> {
    let Ok((parent, name)) = split(target) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Vec::new();
    };
    let prefix = format!("{name}.{kind}-");
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix(&prefix)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect()
}

/// The newest complete old copy an interrupted save left, if any.
fn newest_old_copy(target: &Path) -> Option<PathBuf> {
    leftovers(target, "old")
        .into_iter()
        .filter(|(_, p)| p.join(MANIFEST_FILE).is_file())
        .max()
        .map(|(_, p)| p)
}

/// The directory a reader should load: `target`, or while it is missing because a save was interrupted between
/// its two renames, the previous version where that save left it. Renames nothing.
pub fn resolve_for_reading(target: &Path) -> PathBuf {
    if target.exists() {
        return target.to_owned();
    }
    match newest_old_copy(target) {
        Some(old) => {
            tracing::warn!(
                index = %target.display(),
                reading = %old.display(),
                "the index is missing after an interrupted save; reading the previous version where it was \
                 left (the next writer moves it back)"
            );
            old
        }
        None => target.to_owned(),
    }
}

/// The exclusive right to change one index directory, held until dropped (or the process dies: the lock is
/// the kernel's, so a killed writer never leaves it held).
#[derive(Debug)]
pub struct WriterLock {
    target: PathBuf,
    _file: File,
}

impl WriterLock {
    /// Takes the lock of `target` (creating its parent folder), then repairs what a killed writer left: moves a
    /// missing target's old copy back and deletes every `<name>.tmp-*` and `<name>.old-*`.
    pub fn acquire(target: &Path) -> Result<Self, IndexError> {
        let (parent, name) = split(target)?;
        std::fs::create_dir_all(&parent).map_err(IndexError::io(&parent))?;
        let path = parent.join(format!("{name}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(IndexError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(IndexError::Locked {
                    path: target.to_owned(),
                    holder: holder.trim().to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(IndexError::io(&path)(e)),
        }
        // Who holds it, for the message a second writer gets.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "process {}", std::process::id());
        let lock = Self {
            target: target.to_owned(),
            _file: file,
        };
        lock.clean_leftovers()?;
        Ok(lock)
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    fn clean_leftovers(&self) -> Result<(), IndexError> {
        let target = &self.target;
        if !target.exists() {
            if let Some(old) = newest_old_copy(target) {
                std::fs::rename(&old, target).map_err(IndexError::io(&old))?;
                let (parent, _) = split(target)?;
                sync_dir(&parent)?;
                tracing::warn!(
                    from = %old.display(),
                    to = %target.display(),
                    "moved back the previous index left by an interrupted save"
                );
            }
        }
        for kind in ["tmp", "old"] {
            for (_, path) in leftovers(target, kind) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "deleted a leftover of an interrupted save")
                    }
                    Err(e) => return Err(IndexError::io(&path)(e)),
                }
            }
        }
        Ok(())
    }
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

/// Writes a new version of the locked directory through `fill`, which gets an empty directory to write into,
/// and puts it in place as described in the module documentation.
pub fn replace_dir(
    lock: &WriterLock,
    fill: impl FnOnce(&Path) -> Result<(), IndexError>,
) -> Result<Durability, IndexError> {
    let target = lock.target();
    check_replaceable(target)?;
    let (parent, name) = split(target)?;
    let pid = std::process::id();
    let tmp = parent.join(format!("{name}.tmp-{pid}"));
    if tmp.exists() {
        // Only the lock holder writes here: a previous save of this process failed half-way.
        std::fs::remove_dir_all(&tmp).map_err(IndexError::io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(IndexError::io(&tmp))?;
    if let Err(e) = fill(&tmp).and_then(|()| sync_dir(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    failpoint::fail(stage::AFTER_TEMP_WRITTEN);

    let old = parent.join(format!("{name}.old-{pid}"));
    let had_old = target.exists();
    if had_old {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(IndexError::io(&old))?;
        }
        std::fs::rename(target, &old).map_err(IndexError::io(target))?;
        failpoint::fail(stage::AFTER_OLD_MOVED);
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
    // From here on the new version is what every reader sees: the save is committed whatever follows.
    let synced = if failpoint::fail(stage::SYNC_AFTER_RENAME) {
        Err(IndexError::io(&parent)(std::io::Error::other(
            "injected fsync failure",
        )))
    } else {
        sync_dir(&parent)
    };
    let durability = match synced {
        Ok(()) => Durability::Durable,
        Err(e) => {
            tracing::error!(
                index = %target.display(),
                error = %e,
                "the new index is in place but its directory could not be synced: a power loss may bring back \
                 the previous version"
            );
            Durability::NotDurable(e.to_string())
        }
    };
    failpoint::fail(stage::AFTER_NEW_IN_PLACE);
    if had_old {
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not delete the replaced index; the next writer will");
        }
    }
    Ok(durability)
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

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    fn save(target: &Path, body: &str) -> Durability {
        let lock = WriterLock::acquire(target).unwrap();
        replace_dir(&lock, |d| write_index(d, body)).unwrap()
    }

    #[test]
    fn replaces_in_place_and_leaves_only_the_lock_file_behind() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        assert_eq!(save(&target, "v1"), Durability::Durable);
        assert_eq!(save(&target, "v2"), Durability::Durable);
        assert_eq!(read(&target), "v2");
        assert_eq!(names(root.path()), vec!["idx", "idx.lock"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_version() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        let _ = save(&target, "v1");
        let lock = WriterLock::acquire(&target).unwrap();
        let err = replace_dir(&lock, |d| {
            write_index(d, "half")?;
            Err(IndexError::InvalidParams("disk full".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(read(&target), "v1");
        assert_eq!(names(root.path()), vec!["idx", "idx.lock"]);
    }

    #[test]
    fn a_second_writer_is_refused_naming_the_first() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        let first = WriterLock::acquire(&target).unwrap();
        let err = WriterLock::acquire(&target).unwrap_err();
        assert!(matches!(err, IndexError::Locked { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(first);
        WriterLock::acquire(&target).unwrap();
    }

    /// What a crash between the two renames leaves: no target, the old copy, a finished temp dir.
    fn crash_between_renames(root: &Path, target: &Path) {
        let _ = save(target, "v1");
        std::fs::rename(target, root.join("idx.old-4242")).unwrap();
        let tmp = root.join("idx.tmp-4242");
        std::fs::create_dir(&tmp).unwrap();
        write_index(&tmp, "v2").unwrap();
        // Unrelated names are never taken for a leftover.
        std::fs::create_dir(root.join("idx.old-x")).unwrap();
    }

    #[test]
    fn readers_read_the_old_copy_in_place_and_rename_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        crash_between_renames(root.path(), &target);
        let before = names(root.path());
        let dir = resolve_for_reading(&target);
        assert_eq!(read(&dir), "v1");
        assert_eq!(names(root.path()), before);
    }

    #[test]
    fn the_next_writer_moves_the_old_copy_back_and_deletes_every_leftover() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        crash_between_renames(root.path(), &target);
        let lock = WriterLock::acquire(&target).unwrap();
        assert_eq!(read(&target), "v1");
        assert_eq!(names(root.path()), vec!["idx", "idx.lock", "idx.old-x"]);
        drop(lock);
        // A crash after the second rename: the new target and a stale old copy of another process.
        let stale = root.path().join("idx.old-777");
        std::fs::create_dir(&stale).unwrap();
        write_index(&stale, "v0").unwrap();
        std::fs::create_dir(root.path().join("idx.tmp-778")).unwrap();
        let _lock = WriterLock::acquire(&target).unwrap();
        assert_eq!(read(&target), "v1");
        assert_eq!(names(root.path()), vec!["idx", "idx.lock", "idx.old-x"]);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_failed_fsync_after_the_rename_is_committed_but_not_durable() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("idx");
        let _ = save(&target, "v1");
        let _fp = failpoint::scoped(stage::SYNC_AFTER_RENAME, failpoint::Action::Error);
        match save(&target, "v2") {
            Durability::NotDurable(why) => assert!(why.contains("injected"), "{why}"),
            Durability::Durable => panic!("the injected fsync failure was not reported"),
        }
        assert_eq!(read(&target), "v2");
        assert_eq!(names(root.path()), vec!["idx", "idx.lock"]);
    }

    #[test]
    fn refuses_to_replace_something_that_is_not_an_index() {
        let root = tempfile::tempdir().unwrap();
        let photos = root.path().join("photos");
        std::fs::create_dir(&photos).unwrap();
        std::fs::write(photos.join("cat.jpg"), b"meow").unwrap();
        let lock = WriterLock::acquire(&photos).unwrap();
        let err = replace_dir(&lock, |d| write_index(d, "v1")).unwrap_err();
        assert!(err.to_string().contains("not a hetvis index"), "{err}");
        assert!(photos.join("cat.jpg").is_file());
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let lock = WriterLock::acquire(&file).unwrap();
        assert!(replace_dir(&lock, |d| write_index(d, "v1")).is_err());
        // An empty directory is fine (e.g. made by `mkdir` or a volume mount).
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let _ = save(&empty, "v1");
        assert_eq!(read(&empty), "v1");
    }
}
