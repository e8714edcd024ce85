//! The layout of a backup destination and atomic file writes.
//!
//! ```text
//! DEST/snapshots/{max_at:020}-{seq:020}.snap      sealed SQLite database
//! DEST/journal/{first:020}-{last:020}-{last_at:020}.seg   sealed JSON lines
//! ```
//!
//! `seq` is the journal position a snapshot contains; `max_at` the commit time
//! (Unix ms) of its newest change. Names sort in time order.

use std::io::Write;
use std::path::{Path, PathBuf};

/// One snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// File name (also its id for `verify`).
    pub name: String,
    /// Commit time of the newest change inside (Unix ms).
    pub max_at: i64,
    /// Journal position inside.
    pub seq: i64,
    /// Size in bytes (sealed).
    pub bytes: u64,
}

/// One journal segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// File name.
    pub name: String,
    /// First journal position.
    pub first: i64,
    /// Last journal position.
    pub last: i64,
    /// Commit time of the last entry (Unix ms).
    pub last_at: i64,
}

pub fn snapshot_name(max_at: i64, seq: i64) -> String {
    format!("{max_at:020}-{seq:020}.snap")
}

pub fn segment_name(first: i64, last: i64, last_at: i64) -> String {
    format!("{first:020}-{last:020}-{last_at:020}.seg")
}

fn numbers(name: &str, ext: &str) -> Option<Vec<i64>> {
    name.strip_suffix(ext)?
        .split('-')
        .map(|n| n.parse().ok())
        .collect()
}

fn names(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if let Some(n) = e.file_name().to_str()
                    && !n.starts_with('.')
                {
                    out.push((n.to_string(), e.metadata()?.len()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Snapshots in a destination, oldest first.
pub fn snapshots(dest: &Path) -> std::io::Result<Vec<SnapshotFile>> {
    Ok(names(&dest.join("snapshots"))?
        .into_iter()
        .filter_map(|(name, bytes)| match numbers(&name, ".snap")?.as_slice() {
            [max_at, seq] => Some(SnapshotFile {
                max_at: *max_at,
                seq: *seq,
                bytes,
                name,
            }),
            _ => None,
        })
        .collect())
}

/// Journal segments in a destination, by first position.
pub fn segments(dest: &Path) -> std::io::Result<Vec<SegmentFile>> {
    let mut v: Vec<SegmentFile> = names(&dest.join("journal"))?
        .into_iter()
        .filter_map(|(name, _)| match numbers(&name, ".seg")?.as_slice() {
            [first, last, last_at] => Some(SegmentFile {
                first: *first,
                last: *last,
                last_at: *last_at,
                name,
            }),
            _ => None,
        })
        .collect();
    v.sort_by_key(|s| (s.first, s.last));
    Ok(v)
}

pub fn snapshot_path(dest: &Path, name: &str) -> PathBuf {
    dest.join("snapshots").join(name)
}

pub fn segment_path(dest: &Path, name: &str) -> PathBuf {
    dest.join("journal").join(name)
}

/// Write `data` to `path` atomically and durably: temp file, fsync, rename,
/// fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
