//! Garbage collection, prune and the consistency check.
//!
//! # Overview
//! 1. List the names on disk: blobs, committed and active snapshot directories, cache
//!    mounts. Whatever appears later is not this collection's business.
//! 2. In one durable write transaction of the metadata database: drop the leases of dead
//!    processes; remove the cache records a prune selected (not those a live lease holds);
//!    mark the roots — named images (manifest, index, config, layers, top snapshot), cache
//!    records (their blobs and snapshots), what live leases hold, active snapshots whose
//!    process lives — and every ancestor of a marked snapshot; remove the unmarked blob and
//!    snapshot records.
//! 3. Right after that commit, before any other process can write metadata, move every
//!    listed name that is not marked into a trash directory. A writer adds what it is about
//!    to create or use to its lease first (see the `lease` module), in a transaction either
//!    before this one (so it is marked) or after the moves (so it finds the name gone and
//!    writes it afresh): it never meets a half-deleted file.
//! 4. Move the leftovers of dead processes (`ingest/`, `snapshots/tmp-*`, `tmp/`) into the
//!    trash too, after deleting the temporary files they made outside the store (beside an
//!    export's destination, listed in their `tmp/` directory), and the `.tmp*` files older
//!    versions left in the root and `local-checksums/`; measure what deleting the trash frees
//!    (files whose every name is in it, in the measure of [`Files`]), and delete it.
//! 5. A prune also moves into the trash the local source directories it selects that no
//!    build holds (each under its lock; see the `local_source` module).
//!
//! Removing metadata before data means a crash in between leaves only unreferenced files,
//! which the next collection removes. Collections take `gc.lock` exclusively, one at a time;
//! builds and pulls never wait for it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_llb::Digest;

use crate::error::Error;
use crate::hash::Hasher;
use crate::lease::{self, Held, LeaseRecord, Liveness, Owner};
use crate::meta::{self, Commit};
use crate::snapshot::{SnapshotKind, SnapshotRecord};
use crate::store::{BlobRecord, CacheRecord, ImageRecord, OUTSIDE_LIST, Store, outside_marker};
use crate::usage::Files;

mod prune;

pub use prune::{CacheKind, PruneOptions};
use prune::{Measure, prunes_local_source, select_records};

/// How long garbage collection waits for another collection to finish.
const GC_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub removed_blobs: Vec<Digest>,
    /// Snapshot directories deleted (by directory name).
    pub removed_snapshots: Vec<String>,
    /// Cache mount directories deleted (by directory name).
    pub removed_cache_mounts: Vec<String>,
    /// Local source directories deleted (by directory name).
    pub removed_local_sources: Vec<String>,
    /// Leftovers of interrupted writes deleted.
    pub removed_temporary: usize,
    /// Leases of processes that are gone, dropped.
    pub void_leases: usize,
    /// Bytes freed, in the measure of [`Files`] (each file once, whatever its names).
    pub freed: u64,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Cache records removed, least recently used first.
    pub removed_records: Vec<String>,
    /// The garbage collection that followed.
    pub gc: GcReport,
}

/// What live leases hold, and what is marked.
#[derive(Default)]
struct Marked {
    blobs: HashSet<Digest>,
    /// Snapshot keys.
    snapshots: HashSet<String>,
    records: HashSet<String>,
    cache_mounts: HashSet<String>,
}

/// Names found on disk at the start of a collection.
#[derive(Default)]
struct Listed {
    blobs: Vec<String>,
    committed: Vec<String>,
    active: Vec<String>,
    cache_mounts: Vec<String>,
}

/// What the metadata transaction decided.
#[derive(Default)]
struct Plan {
    removed_records: Vec<String>,
    keep_blobs: HashSet<String>,
    keep_committed: HashSet<String>,
    keep_active: HashSet<String>,
    keep_cache_mounts: HashSet<String>,
    remove_cache_mounts: bool,
    void_leases: usize,
}

fn names(dir: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        out.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// The directory name of a snapshot key.
fn snapshot_dir_name(key: &str) -> String {
    key.replace(':', "-")
}

/// The trash directory of one collection, made on first use.
struct Trash {
    dir: PathBuf,
    made: bool,
    next: usize,
}

impl Trash {
    fn new(store: &Store) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            dir: store.root().join("snapshots").join(format!(
                "{}{}-gc-{nanos:x}",
                meta::TRASH_PREFIX,
                Owner::current().tag()
            )),
            made: false,
            next: 0,
        }
    }

    /// Moves `path` into the trash; `false` if it was gone already.
    fn take(&mut self, path: &Path) -> Result<bool, Error> {
        if !self.made {
            fs_err::create_dir_all(&self.dir)?;
            self.made = true;
        }
        self.next += 1;
        match fs_err::rename(path, self.dir.join(self.next.to_string())) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the trash; returns the bytes that frees.
    fn empty(self) -> Result<u64, Error> {
        if !self.made {
            return Ok(0);
        }
        let mut files = Files::new();
        files.add(&self.dir)?;
        fs_err::remove_dir_all(&self.dir)?;
        Ok(files.bytes_of_all_names())
    }
}

impl Store {
    /// Removes everything no image, cache record, live lease or running step refers to.
    pub fn gc(&self) -> Result<GcReport, Error> {
        Ok(self.collect(None)?.gc)
    }

    /// Removes build cache records (and cache mounts) chosen by `options`, except what a
    /// running build holds, then collects garbage.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, Error> {
        self.collect(Some(options))
    }

    fn collect(&self, prune: Option<&PruneOptions>) -> Result<PruneReport, Error> {
        let _lock = self.gc_lock(GC_LOCK_TIMEOUT)?;
        let root = self.root().to_owned();
        let listed = Listed {
            blobs: names(&root.join("blobs/sha256"))?,
            committed: names(&root.join("snapshots/committed"))?,
            active: names(&root.join("snapshots/active"))?,
            cache_mounts: names(&root.join("cache-mounts"))?,
        };
        let measure = match prune {
            Some(options) if options.limits_space() => Measure::take(self)?,
            _ => Measure::default(),
        };
        let mut alive = Liveness::default();
        let mut trash = Trash::new(self);
        let mut report = GcReport::default();
        let (plan, moved) = self.meta.write_then(
            Commit::Durable,
            |tx| plan(tx, prune, &measure, &mut alive),
            |plan| {
                let moved = sweep(&root, &listed, &plan, &mut trash, &mut report);
                (plan, moved)
            },
        )?;
        moved?;
        report.void_leases = plan.void_leases;
        if let Some(options) = prune {
            for source in self.local_sources()? {
                if prunes_local_source(options, &source)
                    && self.take_away_local_source(&source, &mut |path| trash.take(path))?
                {
                    report.removed_local_sources.push(source.id);
                }
            }
        }

        // Leftovers of processes that are gone.
        for (dir, keep) in [
            (
                "snapshots",
                (|n: &str| !n.starts_with("tmp-")) as fn(&str) -> bool,
            ),
            ("ingest", |_: &str| false),
            ("tmp", |_: &str| false),
        ] {
            for name in names(&root.join(dir))? {
                if keep(&name) || alive.owned_by_live(&name) || trash.dir.ends_with(&name) {
                    continue;
                }
                if dir == "tmp" {
                    report.removed_temporary +=
                        remove_outside_temporaries(&root.join(dir).join(&name), &name);
                }
                let trashed = name.starts_with(meta::TRASH_PREFIX);
                if trash.take(&root.join(dir).join(&name))? && !trashed {
                    report.removed_temporary += 1;
                }
            }
        }
        // Files of atomic writes by older versions (`.tmpXXXXXX`, in the root from the cache
        // key history, in `local-checksums/` from its files): kiln makes no temporary file
        // there now, so any without a live owner is a leftover. They are outside the measured
        // directories, so they are deleted here rather than counted as freed.
        for dir in ["", "local-checksums"] {
            for name in names(&root.join(dir))? {
                if !name.starts_with(".tmp") || alive.owned_by_live(&name) {
                    continue;
                }
                let path = root.join(dir).join(&name);
                if fs_err::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                    match fs_err::remove_file(&path) {
                        Ok(()) => report.removed_temporary += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        report.freed = trash.empty()?;
        report.removed_blobs.sort();
        report.removed_snapshots.sort();
        report.removed_cache_mounts.sort();
        tracing::info!(
            records = plan.removed_records.len(),
            blobs = report.removed_blobs.len(),
            snapshots = report.removed_snapshots.len(),
            cache_mounts = report.removed_cache_mounts.len(),
            void_leases = report.void_leases,
            freed = report.freed,
            "garbage collected"
        );
        Ok(PruneReport {
            removed_records: plan.removed_records,
            gc: report,
        })
    }
}

/// Removes the temporary files the dead process whose scratch directory is `scratch` (named
/// by its owner tag) made outside the store ([`Store::temp_file_beside`]), in the directories
/// it listed there; returns how many. Only regular files whose names carry its tag go.
fn remove_outside_temporaries(scratch: &Path, tag: &str) -> usize {
    let Ok(list) = fs_err::read(scratch.join(OUTSIDE_LIST)) else {
        return 0;
    };
    let marker = outside_marker(tag);
    let dirs: BTreeSet<PathBuf> = list
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .collect();
    let mut removed = 0;
    for dir in dirs {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with('.') || !name.contains(&marker) {
                continue;
            }
            let path = entry.path();
            if !fs_err::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            match fs_err::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed a dead process's temporary file");
                    removed += 1;
                }
                Err(e) => tracing::warn!(error = %e, "removing a dead process's temporary file"),
            }
        }
    }
    removed
}

/// Step 2 of the overview, inside the collection's write transaction.
fn plan(
    tx: &meta::Tx<'_>,
    prune: Option<&PruneOptions>,
    measure: &Measure,
    alive: &mut Liveness,
) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    let mut held = Marked::default();
    for (id, lease) in tx.list::<LeaseRecord>(meta::LEASES)? {
        if alive.alive(&lease.owner) {
            for item in lease::held_by(tx, &id)? {
                match item {
                    Held::Blob(digest) => held.blobs.insert(digest),
                    Held::Snapshot(key) => held.snapshots.insert(key),
                    Held::Record(record) => held.records.insert(record),
                    Held::CacheMount(name) => held.cache_mounts.insert(name),
                };
            }
        } else {
            lease::remove_lease(tx, &id)?;
            plan.void_leases += 1;
        }
    }
    let mut records = tx.list::<CacheRecord>(meta::CACHE_RECORDS)?;
    if let Some(options) = prune {
        plan.removed_records = select_records(
            &records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            options,
            &held.records,
            measure,
        );
        let removed: HashSet<&String> = plan.removed_records.iter().collect();
        for id in &removed {
            tx.remove(meta::CACHE_RECORDS, id)?;
        }
        records.retain(|(id, _)| !removed.contains(id));
        plan.remove_cache_mounts = match options.kind {
            Some(CacheKind::CacheMount) => true,
            Some(CacheKind::Regular | CacheKind::LocalSource) => false,
            None => options.all,
        };
    }

    // Roots.
    let snapshots: HashMap<String, SnapshotRecord> = tx
        .list::<SnapshotRecord>(meta::SNAPSHOTS)?
        .into_iter()
        .collect();
    let mut marked = Marked {
        blobs: held.blobs,
        ..Marked::default()
    };
    let mut pending: Vec<String> = held.snapshots.into_iter().collect();
    for (_, image) in tx.list::<ImageRecord>(meta::IMAGES)? {
        marked.blobs.insert(image.manifest);
        marked.blobs.extend(image.index);
        marked.blobs.insert(image.config);
        marked.blobs.extend(image.layers.iter().copied());
        pending.extend(image.chain_id.map(|c| c.to_string()));
    }
    for (_, record) in &records {
        marked.blobs.extend(record.blobs.iter().copied());
        pending.extend(record.snapshots.iter().filter(|s| !s.is_empty()).cloned());
    }
    pending.extend(
        snapshots
            .values()
            .filter(|s| s.kind == SnapshotKind::Active && s.owner.is_some_and(|o| alive.alive(&o)))
            .map(|s| s.key.clone()),
    );
    while let Some(key) = pending.pop() {
        if marked.snapshots.insert(key.clone()) {
            if let Some(parent) = snapshots.get(&key).and_then(|s| s.parent.clone()) {
                pending.push(parent);
            }
        }
    }

    // Unmarked records go; the names of marked snapshots stay, whatever their state (a
    // leased key may not have a record yet).
    for (key, _) in tx.list::<BlobRecord>(meta::BLOBS)? {
        if !key.parse().is_ok_and(|d: Digest| marked.blobs.contains(&d)) {
            tx.remove(meta::BLOBS, &key)?;
        }
    }
    for (key, record) in &snapshots {
        if !marked.snapshots.contains(key) {
            tx.remove(meta::SNAPSHOTS, key)?;
        } else if record.kind == SnapshotKind::Active {
            plan.keep_active.insert(snapshot_dir_name(key));
        }
    }
    for key in &marked.snapshots {
        let name = snapshot_dir_name(key);
        match snapshots.get(key).map(|s| s.kind) {
            Some(SnapshotKind::Active) => {}
            Some(SnapshotKind::Committed) => {
                plan.keep_committed.insert(name);
            }
            // Held but not recorded yet: it may become either.
            None => {
                plan.keep_committed.insert(name.clone());
                plan.keep_active.insert(name);
            }
        }
    }
    plan.keep_blobs = marked.blobs.iter().map(Digest::hex).collect();
    plan.keep_cache_mounts = held.cache_mounts;
    Ok(plan)
}

/// Step 3 of the overview: moves the listed names that are not kept into the trash. Runs
/// right after the collection's commit, before any other writer.
fn sweep(
    root: &Path,
    listed: &Listed,
    plan: &Plan,
    trash: &mut Trash,
    report: &mut GcReport,
) -> Result<(), Error> {
    for name in &listed.blobs {
        if !plan.keep_blobs.contains(name) && trash.take(&root.join("blobs/sha256").join(name))? {
            if let Ok(digest) = Digest::from_hex(name) {
                report.removed_blobs.push(digest);
            }
        }
    }
    for (sub, names, keep) in [
        (
            "snapshots/committed",
            &listed.committed,
            &plan.keep_committed,
        ),
        ("snapshots/active", &listed.active, &plan.keep_active),
    ] {
        for name in names {
            // The process that removed its record may have deleted it already.
            if !keep.contains(name) && trash.take(&root.join(sub).join(name))? {
                report.removed_snapshots.push(name.clone());
            }
        }
    }
    if plan.remove_cache_mounts {
        let dir = root.join("cache-mounts");
        for name in &listed.cache_mounts {
            let base = name.strip_suffix(".lock").unwrap_or(name);
            if plan.keep_cache_mounts.contains(base) {
                continue;
            }
            if trash.take(&dir.join(name))? && !name.ends_with(".lock") {
                report.removed_cache_mounts.push(name.clone());
            }
        }
    }
    Ok(())
}

impl Store {
    /// The cache mount directories (names under `cache-mounts/`).
    pub fn cache_mounts(&self) -> Result<Vec<String>, Error> {
        let mut out: Vec<String> = names(&self.root().join("cache-mounts"))?
            .into_iter()
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        out.sort();
        Ok(out)
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
                // A lazy layer's blob is in its registry until something reads it.
                if !self.has_blob(d) && self.remote_blob(d)?.is_none() {
                    problems.push(format!("image {} refers to missing blob {d}", image.name));
                }
            }
            if let Some(chain) = image.chain_id {
                match self.lowers(&chain.to_string()) {
                    Ok(_) | Err(Error::LazySnapshot { .. }) => {}
                    Err(e) => problems.push(format!("image {} snapshot chain: {e}", image.name)),
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
            if !dir.is_dir() && snapshot.remote.is_none() {
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
