//! `wal.log`: the write-ahead log of an index directory. Additions and removals since the last save are appended
//! here (and fsynced before they are acknowledged) instead of rewriting the directory, so a change of n items costs
//! O(n) bytes whatever the index's size. A save (a compaction) writes a fresh directory that holds everything,
//! without a log, through the atomic-directory protocol, so the log and the files it extends are replaced together.
//!
//! Layout: a 48-byte header (magic and version, the sha256 of the `manifest.json` the log extends, the dimension),
//! then frames `u32 length | u32 crc32 | payload`, little-endian. One frame is one change, applied all or nothing.
//! An append is one write then an fsync; a writer killed half-way leaves a torn last frame (short, or failing its
//! checksum), which readers ignore and the next writer cuts off: it was never acknowledged. A bad frame with
//! intact frames after it is not a torn append but damage, and the log is refused naming the file and offset.
//!
//! The log is not in the manifest's checksummed set (it grows after the manifest is written); each frame carries
//! its own checksum instead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use hetvis_models::failpoint;

use crate::error::IndexError;
use crate::record::Record;

pub const WAL_FILE: &str = "wal.log";
const MAGIC: &[u8; 8] = b"HVWAL\0\0\x01";
pub const HEADER_LEN: u64 = 48;
/// Frames longer than this are not ours (a torn length field, or damage).
const MAX_FRAME: u32 = 1 << 30;
const KIND_ADD: u8 = 1;
const KIND_REMOVE: u8 = 2;

/// Failpoints of an append (`HETVIS_FAILPOINTS=<stage>=abort`, test builds only).
pub mod stage {
    /// `error`: half of the frame is written, then the append fails (as on a full disk).
    pub const TORN_APPEND: &str = "wal-torn-append";
    /// Reached after that half frame is written: `abort` here leaves a torn tail, as a writer killed mid-write.
    pub const AFTER_TORN_WRITE: &str = "wal-after-torn-write";
    /// The whole frame is written but not fsynced.
    pub const BEFORE_SYNC: &str = "wal-before-sync";
    /// The frame is durable; the caller has not been told.
    pub const AFTER_SYNC: &str = "wal-after-sync";
}

/// One logged change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Records with their unit-length vectors, in the order they become rows.
    Add(Vec<(Record, Vec<f32>)>),
    /// Ids of live items.
    Remove(Vec<String>),
}

impl Change {
    /// Items it adds or removes.
    pub fn len(&self) -> usize {
        match self {
            Change::Add(items) => items.len(),
            Change::Remove(ids) => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn encode(&self, dim: usize) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::new();
        let too_many = || IndexError::InvalidParams("a change of over 4 billion items".into());
        match self {
            Change::Add(items) => {
                out.reserve(5 + items.len() * (dim * 4 + 64));
                out.push(KIND_ADD);
                put_u32(
                    &mut out,
                    u32::try_from(items.len()).map_err(|_| too_many())?,
                );
                for (record, vector) in items {
                    let json = serde_json::to_vec(record)
                        .map_err(|e| IndexError::InvalidParams(format!("record: {e}")))?;
                    put_u32(&mut out, u32::try_from(json.len()).map_err(|_| too_many())?);
                    out.extend_from_slice(&json);
                    assert_eq!(vector.len(), dim, "vector dimension");
                    for x in vector {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
            Change::Remove(ids) => {
                out.push(KIND_REMOVE);
                put_u32(&mut out, u32::try_from(ids.len()).map_err(|_| too_many())?);
                for id in ids {
                    put_u32(&mut out, u32::try_from(id.len()).map_err(|_| too_many())?);
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
        Ok(out)
    }

    fn decode(payload: &[u8], dim: usize) -> Result<Self, String> {
        let mut r = Reader(payload);
        let kind = r.bytes(1)?[0];
        let n = r.u32()? as usize;
        let change = match kind {
            KIND_ADD => {
                let mut items = Vec::with_capacity(n.min(payload.len() / (dim * 4).max(1)));
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    let record: Record =
                        serde_json::from_slice(r.bytes(len)?).map_err(|e| e.to_string())?;
                    let vector = r
                        .bytes(dim * 4)?
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    items.push((record, vector));
                }
                Change::Add(items)
            }
            KIND_REMOVE => {
                let mut ids = Vec::with_capacity(n.min(payload.len()));
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    let id = std::str::from_utf8(r.bytes(len)?).map_err(|e| e.to_string())?;
                    ids.push(id.to_owned());
                }
                Change::Remove(ids)
            }
            other => return Err(format!("unknown change kind {other}")),
        };
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the change", r.0.len()));
        }
        Ok(change)
    }
}

fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the change is cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Which stored files a log extends: the sha256 of their manifest, and the dimension of its vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub manifest_sha256: [u8; 32],
    pub dim: usize,
}

impl Base {
    fn header(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..40].copy_from_slice(&self.manifest_sha256);
        h[40..44].copy_from_slice(&(self.dim as u32).to_le_bytes());
        h
    }

    fn check_header(&self, path: &Path, header: &[u8]) -> Result<(), IndexError> {
        if &header[..8] != MAGIC {
            return Err(IndexError::corrupt(
                path,
                "not a hetvis write-ahead log (bad magic)",
            ));
        }
        if header[8..40] != self.manifest_sha256 {
            return Err(IndexError::corrupt(
                path,
                "the log extends another version of the index (its manifest checksum differs)",
            ));
        }
        let dim = u32::from_le_bytes([header[40], header[41], header[42], header[43]]) as usize;
        if dim != self.dim {
            return Err(IndexError::corrupt(
                path,
                format!("the log holds {dim}-d vectors, the index {}-d", self.dim),
            ));
        }
        Ok(())
    }
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Replay {
    pub changes: Vec<Change>,
    /// Bytes of the log up to the end of its last intact frame (0 when there is no log).
    pub valid_len: u64,
    /// Bytes of a torn last frame that follow `valid_len` (an append that was never acknowledged).
    pub torn_bytes: u64,
}

/// The size of the log and what it holds, as kept by an open index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes up to the end of the last intact frame: where the next append goes.
    pub bytes: u64,
    pub changes: u64,
    pub added: u64,
    pub removed: u64,
}

impl LogStats {
    pub fn record(&mut self, change: &Change, new_len: u64) {
        self.bytes = new_len;
        self.changes += 1;
        match change {
            Change::Add(items) => self.added += items.len() as u64,
            Change::Remove(ids) => self.removed += ids.len() as u64,
        }
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(WAL_FILE)
}

/// Reads the log of `dir`, if any. A torn tail is left out (and reported in the result); anything else that
/// is not a well-formed log of `base` is an error naming the file.
pub fn read(dir: &Path, base: &Base) -> Result<Replay, IndexError> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(IndexError::io(&path)(e)),
    };
    if (bytes.len() as u64) < HEADER_LEN {
        // The writer that created it died before its first frame was durable.
        return Ok(Replay {
            torn_bytes: bytes.len() as u64,
            ..Replay::default()
        });
    }
    base.check_header(&path, &bytes[..HEADER_LEN as usize])?;
    let mut changes = Vec::new();
    let mut at = HEADER_LEN as usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let frame = (rest.len() >= 8)
            .then(|| {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
                (len <= MAX_FRAME && rest.len() - 8 >= len as usize)
                    .then(|| (crc, &rest[8..8 + len as usize]))
            })
            .flatten();
        let intact = frame.filter(|(crc, payload)| crc32fast::hash(payload) == *crc);
        let Some((_, payload)) = intact else {
            let end = frame.map_or(bytes.len(), |(_, p)| at + 8 + p.len());
            if end < bytes.len() {
                return Err(IndexError::corrupt(
                    &path,
                    format!("the frame at byte {at} fails its checksum and intact data follows it"),
                ));
            }
            let torn = (bytes.len() - at) as u64;
            tracing::warn!(
                log = %path.display(),
                bytes = torn,
                "ignoring a torn last entry of the write-ahead log (an append that was never acknowledged)"
            );
            return Ok(Replay {
                changes,
                valid_len: at as u64,
                torn_bytes: torn,
            });
        };
        let change = Change::decode(payload, base.dim)
            .map_err(|e| IndexError::corrupt(&path, format!("the frame at byte {at}: {e}")))?;
        changes.push(change);
        at += 8 + payload.len();
    }
    Ok(Replay {
        changes,
        valid_len: bytes.len() as u64,
        torn_bytes: 0,
    })
}

/// Appends `change` to the log of `dir` (the writer's; creating the log when `valid_len` is 0) and fsyncs it.
/// Bytes past `valid_len` (a torn append of a killed writer) are cut off first. Returns the log's new length.
/// On an error the log is cut back to `valid_len`, so nothing of the change remains.
pub fn append(dir: &Path, base: &Base, valid_len: u64, change: &Change) -> Result<u64, IndexError> {
    let payload = change.encode(base.dim)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(|| {
            IndexError::InvalidParams(format!(
                "a change of {} bytes is over the log's frame limit of {MAX_FRAME}; split it",
                payload.len()
            ))
        })?;
    let mut frame = Vec::with_capacity(payload.len() + 8 + HEADER_LEN as usize);
    let path = path(dir);
    let io = |e| IndexError::io(&path)(e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let on_disk = file.metadata().map_err(io)?.len();
    let fresh = valid_len < HEADER_LEN;
    if fresh {
        if on_disk > HEADER_LEN {
            // Only a torn creation is shorter; a longer log holds changes this writer never read.
            return Err(IndexError::corrupt(
                &path,
                format!("{on_disk} bytes of changes this writer has not read; reopen the index"),
            ));
        }
        frame.extend_from_slice(&base.header());
    } else {
        if on_disk < valid_len {
            return Err(IndexError::corrupt(
                &path,
                format!("{on_disk} bytes, but {valid_len} were written and acknowledged"),
            ));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut header).map_err(io)?;
        base.check_header(&path, &header)?;
    }
    let start = if fresh { 0 } else { valid_len };
    if on_disk > start {
        tracing::warn!(log = %path.display(), bytes = on_disk - start, "cutting off a torn append of a killed writer");
    }
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    drop(payload);
    let written = write_frame(&mut file, start, &frame).and_then(|()| {
        if failpoint::fail(stage::BEFORE_SYNC) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        file.sync_data()
    });
    if let Err(e) = written {
        // Leave nothing of this change behind: a later append would otherwise follow garbage.
        let _ = file.set_len(start).and_then(|()| file.sync_data());
        return Err(io(e));
    }
    if fresh {
        hetvis_models::atomic::sync_dir(dir).map_err(IndexError::io(dir))?;
    }
    failpoint::fail(stage::AFTER_SYNC);
    Ok(start + frame.len() as u64)
}

fn write_frame(file: &mut File, start: u64, frame: &[u8]) -> std::io::Result<()> {
    file.set_len(start)?;
    file.seek(SeekFrom::Start(start))?;
    if failpoint::fail(stage::TORN_APPEND) {
        file.write_all(&frame[..frame.len() / 2])?;
        failpoint::fail(stage::AFTER_TORN_WRITE);
        return Err(std::io::Error::other("injected torn append"));
    }
    file.write_all(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Base {
        Base {
            manifest_sha256: [7; 32],
            dim: 3,
        }
    }

    fn add(ids: &[&str]) -> Change {
        Change::Add(
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    (
                        Record::new(*id).with_label("l"),
                        vec![1.0, i as f32 * 0.5, -0.25],
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn appended_changes_read_back_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let changes = [
            add(&["a", "b"]),
            Change::Remove(vec!["a".into()]),
            add(&["ü"]),
        ];
        let mut len = 0;
        for c in &changes {
            len = append(tmp.path(), &base(), len, c).unwrap();
        }
        let replay = read(tmp.path(), &base()).unwrap();
        assert_eq!(replay.changes, changes);
        assert_eq!(replay.valid_len, len);
        assert_eq!(replay.torn_bytes, 0);
        assert_eq!(std::fs::metadata(path(tmp.path())).unwrap().len(), len);
    }

    #[test]
    fn a_missing_log_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let replay = read(tmp.path(), &base()).unwrap();
        assert!(replay.changes.is_empty());
        assert_eq!(replay.valid_len, 0);
    }

    #[test]
    fn a_torn_tail_is_ignored_and_cut_off_by_the_next_append() {
        let tmp = tempfile::tempdir().unwrap();
        let first = append(tmp.path(), &base(), 0, &add(&["a"])).unwrap();
        let full = append(tmp.path(), &base(), first, &add(&["b", "c"])).unwrap();
        let log = path(tmp.path());
        for cut in [first + 3, first + 9, full - 1] {
            let bytes = std::fs::read(&log).unwrap();
            std::fs::write(&log, &bytes[..cut as usize]).unwrap();
            let replay = read(tmp.path(), &base()).unwrap();
            assert_eq!(replay.changes, vec![add(&["a"])], "cut at {cut}");
            assert_eq!(replay.valid_len, first);
            assert_eq!(replay.torn_bytes, cut - first);
            // Put the full frame back for the next cut.
            std::fs::write(&log, &bytes).unwrap();
        }
        // A torn frame of garbage at the end: the next append replaces it.
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.truncate(first as usize);
        bytes.extend_from_slice(&[0xff; 20]);
        std::fs::write(&log, &bytes).unwrap();
        let replay = read(tmp.path(), &base()).unwrap();
        assert_eq!((replay.valid_len, replay.torn_bytes), (first, 20));
        let end = append(tmp.path(), &base(), replay.valid_len, &add(&["d"])).unwrap();
        let replay = read(tmp.path(), &base()).unwrap();
        assert_eq!(replay.changes, vec![add(&["a"]), add(&["d"])]);
        assert_eq!(replay.valid_len, end);
    }

    #[test]
    fn damage_before_intact_frames_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let first = append(tmp.path(), &base(), 0, &add(&["a"])).unwrap();
        append(tmp.path(), &base(), first, &add(&["b"])).unwrap();
        let log = path(tmp.path());
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[HEADER_LEN as usize + 12] ^= 1;
        std::fs::write(&log, &bytes).unwrap();
        let err = read(tmp.path(), &base()).unwrap_err().to_string();
        assert!(
            err.contains(log.to_str().unwrap()) && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn a_log_of_another_base_or_dimension_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let len = append(tmp.path(), &base(), 0, &add(&["a"])).unwrap();
        let other = Base {
            manifest_sha256: [8; 32],
            dim: 3,
        };
        let err = read(tmp.path(), &other).unwrap_err().to_string();
        assert!(err.contains("another version"), "{err}");
        let err = append(tmp.path(), &other, len, &add(&["b"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("another version"), "{err}");
        let wider = Base { dim: 4, ..base() };
        let err = read(tmp.path(), &wider).unwrap_err().to_string();
        assert!(err.contains("3-d"), "{err}");
    }

    #[test]
    fn an_acknowledged_length_longer_than_the_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let len = append(tmp.path(), &base(), 0, &add(&["a"])).unwrap();
        let err = append(tmp.path(), &base(), len + 10, &add(&["b"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("acknowledged"), "{err}");
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_failed_append_leaves_nothing_behind() {
        use hetvis_models::failpoint::{scoped, Action};
        let tmp = tempfile::tempdir().unwrap();
        let len = append(tmp.path(), &base(), 0, &add(&["a"])).unwrap();
        for stage in [stage::TORN_APPEND, stage::BEFORE_SYNC] {
            let _g = scoped(stage, Action::Error);
            assert!(append(tmp.path(), &base(), len, &add(&["b"])).is_err());
            assert_eq!(std::fs::metadata(path(tmp.path())).unwrap().len(), len);
        }
        let replay = read(tmp.path(), &base()).unwrap();
        assert_eq!(replay.changes, vec![add(&["a"])]);
    }
}
