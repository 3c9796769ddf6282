//! Garbage collection, prune, disk usage and the consistency check.
//!
//! # Overview
//! 1. Roots: named images (manifest, index, config, layers, top snapshot), build cache records
//!    (their blobs and snapshots) and active snapshots (running steps).
//! 2. Mark: every root and, for snapshots, every ancestor.
//! 3. Sweep, under the exclusive `gc.lock`: first the metadata records that are not marked (one
//!    transaction), then the files — blobs, snapshot directories, leftovers of interrupted
//!    writes in `ingest/` and `snapshots/tmp-*`. Removing metadata before data means a crash in
//!    between leaves only unreferenced files, which the next collection removes.
//!
//! Leases ([`Store::lease`]) hold `gc.lock` shared, so a collection waits for running pulls and
//! builds (or gives up with [`Error::StoreBusy`]), and never removes what they have written but
//! not yet recorded.

use std::collections::HashSet;
use std::io::{self, Read as _};
use std::time::Duration;

use crate::digest::{Digest, Hasher};
use crate::error::Error;
use crate::meta;
use crate::snapshot::{SnapshotKind, dir_size};
use crate::store::{BlobRecord, CacheRecord, Store, now};

/// How long garbage collection waits for leases to be released.
const GC_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub removed_blobs: Vec<Digest>,
    /// Snapshot directories deleted (by directory name).
    pub removed_snapshots: Vec<String>,
    /// Leftovers of interrupted writes deleted.
    pub removed_temporary: usize,
    /// Bytes freed.
    pub freed: u64,
}

/// Which build cache records [`Store::prune`] removes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneOptions {
    /// Remove every record.
    pub all: bool,
    /// Remove records not used for at least this long.
    pub older_than: Option<Duration>,
    /// Then remove least recently used records until the rest fit in this many bytes.
    pub keep_bytes: Option<u64>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Cache records removed, least recently used first.
    pub removed_records: Vec<String>,
    /// The garbage collection that followed.
    pub gc: GcReport,
}

/// One line of [`Store::du`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    /// `image` or `cache`.
    pub kind: &'static str,
    /// The image name or cache record ID.
    pub id: String,
    /// Bytes of blobs and snapshots it refers to (shared content counted in each).
    pub size: u64,
    /// When it was last used (seconds since the Unix epoch).
    pub last_used: u64,
}

/// Disk usage of the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Images and cache records, largest first.
    pub entries: Vec<UsageEntry>,
    /// Bytes in `blobs/`.
    pub blobs: u64,
    /// Bytes in `snapshots/`.
    pub snapshots: u64,
}

impl DiskUsage {
    /// Bytes used in all.
    pub fn total(&self) -> u64 {
        self.blobs + self.snapshots
    }
}

#[derive(Default)]
struct Marked {
    blobs: HashSet<Digest>,
    snapshots: HashSet<String>,
}

impl Store {
    fn mark(&self) -> Result<Marked, Error> {
        let mut marked = Marked::default();
        let snapshots: std::collections::HashMap<String, _> = self
            .snapshots()?
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect();
        let mut pending: Vec<String> = Vec::new();
        for image in self.images()? {
            marked.blobs.insert(image.manifest);
            marked.blobs.extend(image.index);
            marked.blobs.insert(image.config);
            marked.blobs.extend(image.layers.iter().copied());
            pending.extend(image.chain_id.map(|c| c.to_string()));
        }
        for record in self.cache_records()? {
            marked.blobs.extend(record.blobs.iter().copied());
            pending.extend(record.snapshots.iter().cloned());
        }
        pending.extend(
            snapshots
                .values()
                .filter(|s| s.kind == SnapshotKind::Active)
                .map(|s| s.key.clone()),
        );
        while let Some(key) = pending.pop() {
            if marked.snapshots.insert(key.clone()) {
                if let Some(parent) = snapshots.get(&key).and_then(|s| s.parent.clone()) {
                    pending.push(parent);
                }
            }
        }
        Ok(marked)
    }

    /// Removes everything no image, cache record or active snapshot refers to.
    pub fn gc(&self) -> Result<GcReport, Error> {
        let _lock = self.gc_lock(GC_LOCK_TIMEOUT)?;
        self.gc_locked()
    }

    fn gc_locked(&self) -> Result<GcReport, Error> {
        let marked = self.mark()?;
        let mut report = GcReport::default();
        let mut keep_dirs: HashSet<String> = HashSet::new();
        let mut keep_active: HashSet<String> = HashSet::new();
        self.meta.write(|tx| {
            for (key, _) in tx.list::<BlobRecord>(meta::BLOBS)? {
                if !key.parse().is_ok_and(|d: Digest| marked.blobs.contains(&d)) {
                    tx.remove(meta::BLOBS, &key)?;
                }
            }
            for (key, record) in tx.list::<crate::SnapshotRecord>(meta::SNAPSHOTS)? {
                if !marked.snapshots.contains(&key) {
                    tx.remove(meta::SNAPSHOTS, &key)?;
                    continue;
                }
                let dir = key.replace(':', "-");
                match record.kind {
                    SnapshotKind::Committed => keep_dirs.insert(dir),
                    SnapshotKind::Active => keep_active.insert(dir),
                };
            }
            Ok(())
        })?;

        for entry in fs_err::read_dir(self.root().join("blobs/sha256"))? {
            let entry = entry?;
            let name = entry.file_name();
            let keep = name
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
                .is_some_and(|d| marked.blobs.contains(&d));
            if !keep {
                report.freed += entry.metadata()?.len();
                fs_err::remove_file(entry.path())?;
                if let Some(d) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) {
                    report.removed_blobs.push(d);
                }
            }
        }
        for (sub, keep) in [
            ("snapshots/committed", &keep_dirs),
            ("snapshots/active", &keep_active),
        ] {
            for entry in fs_err::read_dir(self.root().join(sub))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    // The process that removed its record may be deleting it too.
                    let size = dir_size(&entry.path());
                    if gone(fs_err::remove_dir_all(entry.path()))? {
                        continue;
                    }
                    report.freed += size.unwrap_or(0);
                    report.removed_snapshots.push(name);
                }
            }
        }
        for entry in fs_err::read_dir(self.root().join("snapshots"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp-") && !gone(fs_err::remove_dir_all(entry.path()))? {
                // Trash is what a removal left to delete in the background, not an
                // interrupted write.
                if !name.starts_with(crate::meta::TRASH_PREFIX) {
                    report.removed_temporary += 1;
                }
            }
        }
        for entry in fs_err::read_dir(self.root().join("ingest"))? {
            fs_err::remove_file(entry?.path())?;
            report.removed_temporary += 1;
        }
        report.removed_blobs.sort();
        report.removed_snapshots.sort();
        tracing::info!(
            blobs = report.removed_blobs.len(),
            snapshots = report.removed_snapshots.len(),
            freed = report.freed,
            "garbage collected"
        );
        Ok(report)
    }

    /// Removes build cache records chosen by `options`, then collects garbage.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, Error> {
        let _lock = self.gc_lock(GC_LOCK_TIMEOUT)?;
        let mut records = self.cache_records()?;
        records.sort_by(|a, b| (a.last_used, &a.id).cmp(&(b.last_used, &b.id)));
        let now = now();
        let mut remove: Vec<String> = Vec::new();
        let mut kept: Vec<CacheRecord> = Vec::new();
        for record in records {
            let old = options
                .older_than
                .is_some_and(|d| now.saturating_sub(record.last_used) >= d.as_secs());
            if options.all || old {
                remove.push(record.id);
            } else {
                kept.push(record);
            }
        }
        if let Some(limit) = options.keep_bytes {
            let mut total: u64 = kept.iter().map(|r| r.size).sum();
            for record in &kept {
                if total <= limit {
                    break;
                }
                total -= record.size;
                remove.push(record.id.clone());
            }
        }
        self.meta.write(|tx| {
            for id in &remove {
                tx.remove(meta::CACHE_RECORDS, id)?;
            }
            Ok(())
        })?;
        let gc = self.gc_locked()?;
        Ok(PruneReport {
            removed_records: remove,
            gc,
        })
    }

    /// What uses space in the store.
    pub fn du(&self) -> Result<DiskUsage, Error> {
        let blob_size = |d: &Digest| fs_err::metadata(self.blob_path(d)).map_or(0, |m| m.len());
        let snapshot_size = |k: &str| -> u64 {
            self.lowers(k)
                .map(|dirs| dirs.iter().map(|d| dir_size(d).unwrap_or(0)).sum())
                .unwrap_or(0)
        };
        let mut usage = DiskUsage::default();
        for image in self.images()? {
            let mut size: u64 = [image.manifest, image.config]
                .iter()
                .chain(image.index.iter())
                .chain(image.layers.iter())
                .map(blob_size)
                .sum();
            size += image.chain_id.map_or(0, |c| snapshot_size(&c.to_string()));
            usage.entries.push(UsageEntry {
                kind: "image",
                id: image.name,
                size,
                last_used: image.last_used,
            });
        }
        for record in self.cache_records()? {
            let size = record.blobs.iter().map(blob_size).sum::<u64>()
                + record
                    .snapshots
                    .iter()
                    .map(|s| snapshot_size(s))
                    .sum::<u64>();
            usage.entries.push(UsageEntry {
                kind: "cache",
                id: record.id,
                size,
                last_used: record.last_used,
            });
        }
        usage
            .entries
            .sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
        usage.blobs = dir_size(&self.root().join("blobs"))?;
        usage.snapshots = dir_size(&self.root().join("snapshots"))?;
        Ok(usage)
    }

    /// Checks that every recorded blob exists with the right content and size, that every
    /// blob file hashes to its name, and that every recorded snapshot and image is complete.
    /// Returns the problems found (empty when consistent).
    pub fn check(&self) -> Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        for entry in fs_err::read_dir(self.root().join("blobs/sha256"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut hasher = Hasher::default();
            let mut file = fs_err::File::open(entry.path())?;
            let mut buf = vec![0; 1 << 16];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let (digest, _) = hasher.finish();
            if digest.hex() != name {
                problems.push(format!("blob file {name} has content {digest}"));
            }
        }
        for (digest, record) in self.blob_records()? {
            match fs_err::metadata(self.blob_path(&digest)) {
                Ok(m) if m.len() == record.size => {}
                Ok(m) => problems.push(format!(
                    "blob {digest} has {} bytes, recorded {}",
                    m.len(),
                    record.size
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    problems.push(format!("blob {digest} is recorded but missing"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        for image in self.images()? {
            for d in [image.manifest, image.config].iter().chain(&image.layers) {
                if !self.has_blob(d) {
                    problems.push(format!("image {} refers to missing blob {d}", image.name));
                }
            }
            if let Some(chain) = image.chain_id {
                if let Err(e) = self.lowers(&chain.to_string()) {
                    problems.push(format!("image {} snapshot chain: {e}", image.name));
                }
            }
        }
        for record in self.cache_records()? {
            for d in &record.blobs {
                if !self.has_blob(d) {
                    problems.push(format!(
                        "cache record {} refers to missing blob {d}",
                        record.id
                    ));
                }
            }
            for key in &record.snapshots {
                if self.snapshot(key)?.is_none() {
                    problems.push(format!(
                        "cache record {} refers to missing snapshot {key}",
                        record.id
                    ));
                }
            }
        }
        for snapshot in self.snapshots()? {
            let dir = match snapshot.kind {
                SnapshotKind::Committed => self.committed_dir(&snapshot.key)?,
                SnapshotKind::Active => self
                    .root()
                    .join("snapshots/active")
                    .join(snapshot.key.replace(':', "-")),
            };
            if !dir.is_dir() {
                problems.push(format!(
                    "snapshot {} is recorded but its directory is missing",
                    snapshot.key
                ));
            }
            if let Some(parent) = &snapshot.parent {
                if self.snapshot(parent)?.is_none() {
                    problems.push(format!(
                        "snapshot {} has missing parent {parent}",
                        snapshot.key
                    ));
                }
            }
        }
        Ok(problems)
    }
}

/// Whether a removal found nothing to remove (another process removed it first).
fn gone(result: io::Result<()>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e.into()),
    }
}
