//! Snapshots: unpacked layers and the writable layers of running steps.
//!
//! A committed snapshot is a read-only directory under `snapshots/committed/<name>` holding one
//! layer in overlayfs form (whiteouts as 0/0 character devices, opaque directories marked with
//! `trusted.overlay.opaque`). An image layer is unpacked once, into the snapshot named by its
//! chain ID. An active snapshot (`snapshots/active/<name>/{upper,work}`) is prepared on a
//! committed parent for an exec step or `kiln run`; [`Mounts`] lists the overlay lowers, upper
//! and work directories, which the runner mounts inside its namespace. Committing an active
//! snapshot moves its upper into a new committed snapshot.
//!
//! An unpacked layer is built under a temporary name, synced and renamed into place before it
//! is recorded. A step's result is renamed into place unsynced and recorded with a lazy commit
//! that marks its data unsynced: the next durable commit of the metadata is preceded by one
//! `syncfs`, so the files are on disk before any durable record names them, and one sync
//! covers every snapshot committed in between. Directories whose records are removed are
//! deleted only once that removal is durable. A crash thus leaves at worst unrecorded
//! directories, which garbage collection removes (see the `meta` module for the argument).

use std::io;
use std::path::{Path, PathBuf};

use kiln_llb::Digest;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::lazy::RemoteLayer;
use crate::lease::{Held, Owner};
use crate::meta::{self, Commit};
use crate::store::{Store, now};
use crate::unpack::{UnpackOptions, Unpacked, WhiteoutMode, unpack_layer};
use crate::usage::Files;

/// Whether a snapshot is read-only or still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Read-only; usable as a parent.
    Committed,
    /// Writable (has an upper and a work directory).
    Active,
}

/// A snapshot's metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The key (a chain ID for image layers).
    pub key: String,
    /// The parent snapshot's key.
    pub parent: Option<String>,
    /// Committed or active.
    pub kind: SnapshotKind,
    /// The layer's diff ID, for snapshots unpacked from a layer.
    pub diff_id: Option<Digest>,
    /// The compressed blob it was unpacked from, when that is known: an export reuses it
    /// instead of compressing the snapshot again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Digest>,
    /// Bytes used by this snapshot's own directory.
    pub size: u64,
    /// When it was created (seconds since the Unix epoch).
    pub created: u64,
    /// When it was last used (seconds since the Unix epoch).
    pub last_used: u64,
    /// For an active snapshot, the process writing it: garbage collection keeps it while that
    /// process lives (or a lease holds it) and removes it once the process is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// For a lazy snapshot (recorded, not downloaded or unpacked yet: see
    /// [`crate::realize`]), where its blob is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteLayer>,
}

/// The directories of an overlay mount for an active snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounts {
    /// Read-only lower directories, topmost first (overlayfs `lowerdir=` order).
    pub lowers: Vec<PathBuf>,
    /// The writable upper directory.
    pub upper: PathBuf,
    /// The overlayfs work directory (same file system as `upper`). It exists after
    /// [`Store::prepare`]; after [`Store::prepare_upper`], only once [`Mounts::create_work`]
    /// made it.
    pub work: PathBuf,
}

impl Mounts {
    /// Creates the work directory if it is missing, before an overlay mount uses it.
    pub fn create_work(&self) -> Result<(), Error> {
        fs_err::create_dir_all(&self.work)?;
        Ok(())
    }
}

/// The chain ID of a layer on top of a parent chain (OCI image spec: `ChainID(L₀|…|Lₙ) =
/// sha256(ChainID(L₀|…|Lₙ₋₁) + " " + DiffID(Lₙ))`, and `ChainID(L₀) = DiffID(L₀)`).
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => *diff_id,
        Some(parent) => Digest::from_bytes(format!("{parent} {diff_id}").as_bytes()),
    }
}

fn dir_name(key: &str) -> Result<String, Error> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if !ok {
        return Err(Error::SnapshotNotFound {
            key: key.to_owned(),
        });
    }
    Ok(key.replace(':', "-"))
}

/// Bytes of the regular files and symlinks below `path` (not following links), each file
/// once ([`Files`], the store's one measure).
pub(crate) fn dir_size(path: &Path) -> io::Result<u64> {
    let mut files = Files::new();
    files.add(path)?;
    Ok(files.bytes())
}

impl Store {
    /// The directory of a committed snapshot.
    pub fn committed_dir(&self, key: &str) -> Result<PathBuf, Error> {
        Ok(self.root().join("snapshots/committed").join(dir_name(key)?))
    }

    fn active_dir(&self, key: &str) -> Result<PathBuf, Error> {
        Ok(self.root().join("snapshots/active").join(dir_name(key)?))
    }

    fn temp_snapshot_dir(&self) -> Result<tempfile::TempDir, Error> {
        let parent = self.root().join("snapshots");
        tempfile::Builder::new()
            .prefix(&format!("tmp-{}-", Owner::current().tag()))
            .tempdir_in(&parent)
            .map_err(|e| crate::store::creating_in("directory", &parent, e).into())
    }

    /// A snapshot's record.
    pub fn snapshot(&self, key: &str) -> Result<Option<SnapshotRecord>, Error> {
        self.meta.get(meta::SNAPSHOTS, key)
    }

    /// The record of the active snapshot `key`.
    fn active_snapshot(&self, key: &str) -> Result<SnapshotRecord, Error> {
        self.snapshot(key)?
            .filter(|r| r.kind == SnapshotKind::Active)
            .ok_or_else(|| Error::SnapshotNotFound {
                key: key.to_owned(),
            })
    }

    /// Every snapshot record.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>, Error> {
        self.records(meta::SNAPSHOTS)
    }

    /// Unpacks a layer blob as the committed snapshot named by its chain ID, on top of the
    /// `parent` chain, unless that snapshot exists already. The uncompressed stream must hash to
    /// `diff_id`. Returns the chain ID.
    pub fn unpack_snapshot(
        &self,
        parent: Option<&Digest>,
        layer: &Digest,
        diff_id: &Digest,
    ) -> Result<Digest, Error> {
        self.unpack_snapshot_made_at(parent, layer, diff_id, None)
    }

    /// [`Store::unpack_snapshot`], recording a new snapshot as made at `created` (seconds
    /// since the epoch) instead of now: a layer from a cache export keeps the time it was
    /// first made, which dates its image history entry.
    pub fn unpack_snapshot_made_at(
        &self,
        parent: Option<&Digest>,
        layer: &Digest,
        diff_id: &Digest,
        created: Option<u64>,
    ) -> Result<Digest, Error> {
        let chain = chain_id(parent, diff_id);
        let key = chain.to_string();
        let dir = self.committed_dir(&key)?;
        self.holder.hold(&[Held::Snapshot(key.clone())])?;
        // A lazy record is unpacked over.
        if self
            .snapshot(&key)?
            .is_some_and(|record| record.remote.is_none())
            && dir.is_dir()
        {
            return Ok(chain);
        }
        let temp = self.temp_snapshot_dir()?;
        let options = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            // Real images carry device nodes; the snapshot directories are private to root
            // and exports to the host never recreate them.
            allow_devices: true,
            limits: self.unpack_limits,
            ..UnpackOptions::default()
        };
        let Unpacked {
            diff_id: computed, ..
        } = unpack_layer(self.open_blob(layer)?, temp.path(), &options)?;
        if computed != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("diff ID of layer {layer}"),
                expected: *diff_id,
                computed,
            });
        }
        crate::meta::sync_fs(temp.path())?;
        let size = dir_size(temp.path())?;
        // Another writer (thread or process) may have renamed the same snapshot into place
        // first, or an interrupted one left it unrecorded. Either way it is complete (it was
        // synced before its rename) and has the same verified content, and it may already be
        // mounted: keep it, and drop ours.
        self.meta.keep(&dir);
        match fs_err::rename(temp.path(), &dir) {
            Ok(()) => {
                let _ = temp.keep();
            }
            Err(e)
                if dir.is_dir()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                    ) =>
            {
                tracing::debug!(snapshot = %key, "snapshot already unpacked by another writer");
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "renaming {} to {}: {e}",
                        temp.path().display(),
                        dir.display()
                    ),
                )
                .into());
            }
        }
        let record = SnapshotRecord {
            key: key.clone(),
            parent: parent.map(ToString::to_string),
            kind: SnapshotKind::Committed,
            diff_id: Some(*diff_id),
            blob: Some(*layer),
            size,
            created: created.unwrap_or_else(now),
            last_used: now(),
            owner: None,
            remote: None,
        };
        self.meta
            .write_with(Commit::Lazy, |tx| tx.put(meta::SNAPSHOTS, &key, &record))?;
        Ok(chain)
    }

    /// The committed directories of `key` and its ancestors, topmost first.
    pub fn lowers(&self, key: &str) -> Result<Vec<PathBuf>, Error> {
        let mut out = Vec::new();
        let mut next = Some(key.to_owned());
        while let Some(k) = next {
            let record = self
                .snapshot(&k)?
                .filter(|r| r.kind == SnapshotKind::Committed)
                .ok_or_else(|| Error::SnapshotNotFound { key: k.clone() })?;
            if record.remote.is_some() {
                return Err(Error::LazySnapshot { key: k });
            }
            out.push(self.committed_dir(&k)?);
            next = record.parent;
        }
        Ok(out)
    }

    /// The committed directories of `key` and its ancestors that are unpacked (not lazy),
    /// topmost first: what they use on disk.
    pub(crate) fn unpacked_dirs(&self, key: &str) -> Result<Vec<PathBuf>, Error> {
        let mut out = Vec::new();
        let mut next = Some(key.to_owned());
        while let Some(k) = next {
            let record = self
                .snapshot(&k)?
                .ok_or_else(|| Error::SnapshotNotFound { key: k.clone() })?;
            if record.remote.is_none() {
                out.push(self.committed_dir(&k)?);
            }
            next = record.parent;
        }
        Ok(out)
    }

    /// Prepares an active snapshot `key` on the committed `parent` (or empty).
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Mounts, Error> {
        self.prepare_with(key, parent, true)
    }

    /// Like [`Store::prepare`], without the overlay work directory: for writers that often
    /// write into the upper directory directly, with no overlay mount (file operations on an
    /// empty parent). [`Mounts::create_work`] makes it when an overlay is mounted after all.
    pub fn prepare_upper(&self, key: &str, parent: Option<&str>) -> Result<Mounts, Error> {
        self.prepare_with(key, parent, false)
    }

    fn prepare_with(&self, key: &str, parent: Option<&str>, work: bool) -> Result<Mounts, Error> {
        let lowers = match parent {
            Some(p) => self.lowers(p)?,
            None => Vec::new(),
        };
        let dir = self.active_dir(key)?;
        self.holder.hold(&[Held::Snapshot(key.to_owned())])?;
        if self.snapshot(key)?.is_some() {
            return Err(Error::SnapshotExists {
                key: key.to_owned(),
            });
        }
        self.meta.keep(&dir);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        fs_err::create_dir_all(dir.join("upper"))?;
        if work {
            fs_err::create_dir(dir.join("work"))?;
        }
        let record = SnapshotRecord {
            key: key.to_owned(),
            parent: parent.map(str::to_owned),
            kind: SnapshotKind::Active,
            diff_id: None,
            blob: None,
            size: 0,
            created: now(),
            last_used: now(),
            owner: Some(Owner::current()),
            remote: None,
        };
        // The new directories are synced by the flush that makes this record durable.
        self.meta.write_with(Commit::LazyUnsynced, |tx| {
            if tx.get::<SnapshotRecord>(meta::SNAPSHOTS, key)?.is_some() {
                return Err(Error::SnapshotExists {
                    key: key.to_owned(),
                });
            }
            tx.put(meta::SNAPSHOTS, key, &record)
        })?;
        Ok(Mounts {
            lowers,
            upper: dir.join("upper"),
            work: dir.join("work"),
        })
    }

    /// The mounts of an active snapshot.
    pub fn mounts(&self, key: &str) -> Result<Mounts, Error> {
        let record = self.active_snapshot(key)?;
        let lowers = match &record.parent {
            Some(p) => self.lowers(p)?,
            None => Vec::new(),
        };
        let dir = self.active_dir(key)?;
        Ok(Mounts {
            lowers,
            upper: dir.join("upper"),
            work: dir.join("work"),
        })
    }

    /// Commits the active snapshot `active` as the read-only snapshot `name`.
    pub fn commit(&self, active: &str, name: &str) -> Result<(), Error> {
        let record = self.active_snapshot(active)?;
        if self.snapshot(name)?.is_some() {
            return Err(Error::SnapshotExists {
                key: name.to_owned(),
            });
        }
        let active_dir = self.active_dir(active)?;
        let target = self.committed_dir(name)?;
        let upper = active_dir.join("upper");
        let size = dir_size(&upper)?;
        // Held before the directory appears under its name (see the `gc` module).
        self.holder.hold(&[Held::Snapshot(name.to_owned())])?;
        self.meta.keep(&target);
        if target.exists() {
            fs_err::remove_dir_all(&target)?;
        }
        fs_err::rename(&upper, &target)?;
        let committed = SnapshotRecord {
            key: name.to_owned(),
            parent: record.parent,
            kind: SnapshotKind::Committed,
            diff_id: None,
            blob: None,
            size,
            created: now(),
            last_used: now(),
            owner: None,
            remote: None,
        };
        // The upper's files are synced by the flush that makes this record durable, and the
        // active directory goes once the removal of its record is durable.
        self.meta.write_with(Commit::LazyUnsynced, |tx| {
            tx.put(meta::SNAPSHOTS, name, &committed)?;
            tx.remove(meta::SNAPSHOTS, active)?;
            Ok(())
        })?;
        self.meta.defer_removal(active_dir);
        Ok(())
    }

    /// Removes a snapshot (active or committed) that no other snapshot has as parent. Its
    /// directory is deleted at the next flush ([`Store::flush`]).
    pub fn remove_snapshot(&self, key: &str) -> Result<(), Error> {
        let record = self.snapshot(key)?.ok_or_else(|| Error::SnapshotNotFound {
            key: key.to_owned(),
        })?;
        let dir = match record.kind {
            SnapshotKind::Committed => self.committed_dir(key)?,
            SnapshotKind::Active => self.active_dir(key)?,
        };
        self.meta.write_with(Commit::Lazy, |tx| {
            tx.remove(meta::SNAPSHOTS, key)?;
            Ok(())
        })?;
        // Deleted once the removal is durable, so a crash never leaves the record without it.
        self.meta.defer_removal(dir);
        Ok(())
    }

    /// Writes the flattened root file system of an image's layers into `dest` (whiteouts
    /// applied), straight from the layer blobs.
    pub fn export_rootfs(&self, layers: &[Digest], dest: &Path) -> Result<(), Error> {
        fs_err::create_dir_all(dest)?;
        for layer in layers {
            let options = UnpackOptions {
                limits: self.unpack_limits,
                ..UnpackOptions::default()
            };
            unpack_layer(self.open_blob(layer)?, dest, &options)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_follows_the_oci_formula() {
        let a = Digest::from_bytes(b"a");
        let b = Digest::from_bytes(b"b");
        assert_eq!(chain_id(None, &a), a);
        let expected =
            Digest::from_bytes(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes());
        assert_eq!(chain_id(Some(&a), &b), expected);
    }
}
