//! Image snapshots that share the build's files instead of unpacking the layer blobs again.
//!
//! A stored image is run and built `FROM` through the committed snapshots named by its layers'
//! chain IDs. When a build step's snapshot already holds a layer's content, the chain-ID
//! snapshot is made of hard links to that snapshot's files: the file data exists once, and
//! either snapshot can be removed (by `kiln rmi` plus garbage collection, or `kiln prune`)
//! without breaking the other.
//!
//! # Overview
//! 1. Prepare an active snapshot on the chain-ID snapshot of the layer below.
//! 2. Recreate the source snapshot's directories in its upper directory (owner, mode, extended
//!    attributes such as overlayfs' opaque marker, times) and hard-link everything else
//!    (files, symbolic links, whiteout devices).
//! 3. When the layer blob was written with `SOURCE_DATE_EPOCH`, its mtimes are clamped to the
//!    epoch, so the snapshot must be too (the image's rootfs is what its layers say): an
//!    entry whose mtime is later is copied instead of linked (a hard link shares the inode and
//!    so its time) and given the epoch; directories take the clamped time. Whiteouts are
//!    linked anyway: overlayfs hides them, times and all. Any other special file that needs a
//!    new time fails the link, and the caller unpacks the blob.
//! 4. Commit it under the chain ID. Any failure removes the active snapshot; the caller then
//!    unpacks the blob as before.
//!
//! Times are compared in whole seconds, the resolution of the layer's tar headers.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use kiln_llb::Digest;

use crate::error::Error;
use crate::store::Store;

/// Names an I/O error after the path it happened on.
fn at(path: &Path, what: &str) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.display().to_string();
    let what = what.to_owned();
    move |e| io::Error::new(e.kind(), format!("{what} {path}: {e}"))
}

/// The mtime the layer blob records for an entry with metadata `meta`, if it is not the
/// entry's own: the epoch, when the entry is later.
fn clamped(meta: &std::fs::Metadata, epoch: Option<i64>) -> Option<FileTime> {
    epoch
        .filter(|&epoch| meta.mtime() > epoch)
        .map(|epoch| FileTime::from_unix_time(epoch, 0))
}

/// Gives `dest` the owner, mode (not for symbolic links), extended attributes and times of
/// `src`, with the mtime clamped to `epoch`.
fn copy_metadata(src: &Path, dest: &Path, epoch: Option<i64>) -> Result<(), Error> {
    let meta = fs_err::symlink_metadata(src)?;
    // Owner before mode: changing the owner clears set-ID bits.
    std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))
        .map_err(at(dest, "changing the owner of"))?;
    if !meta.file_type().is_symlink() {
        fs_err::set_permissions(dest, meta.permissions())?;
    }
    let names = match xattr::list(src) {
        Ok(names) => names.collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Vec::new(),
        Err(e) => return Err(at(src, "listing the extended attributes of")(e).into()),
    };
    for name in names {
        if let Some(value) = xattr::get(src, &name).map_err(at(src, "reading an attribute of"))? {
            xattr::set(dest, &name, &value).map_err(at(dest, "setting an attribute of"))?;
        }
    }
    let (atime, mtime) = match clamped(&meta, epoch) {
        // As unpacking the blob sets them.
        Some(time) => (time, time),
        None => (
            FileTime::from_last_access_time(&meta),
            FileTime::from_last_modification_time(&meta),
        ),
    };
    filetime::set_symlink_file_times(dest, atime, mtime)
        .map_err(at(dest, "setting the times of"))?;
    Ok(())
}

/// Recreates the tree `src` in the existing directory `dest`: directories as new directories,
/// everything else as hard links, except entries whose mtime `epoch` clamps, which are copied
/// (`copies` maps the (device, inode) of a multiply linked source file to its copy, so the
/// copy keeps the hard links between its names).
fn link_tree(
    src: &Path,
    dest: &Path,
    epoch: Option<i64>,
    copies: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), Error> {
    for entry in fs_err::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let meta = fs_err::symlink_metadata(&from)?;
        let kind = meta.file_type();
        let whiteout = kiln_fsutil::overlay::is_whiteout(&meta);
        if kind.is_dir() {
            fs_err::create_dir(&to)?;
            link_tree(&from, &to, epoch, copies)?;
        } else if whiteout || clamped(&meta, epoch).is_none() {
            fs_err::hard_link(&from, &to)?;
        } else if let Some(first) = copies.get(&(meta.dev(), meta.ino())) {
            fs_err::hard_link(first, &to)?;
        } else if kind.is_file() {
            fs_err::copy(&from, &to)?;
            copy_metadata(&from, &to, epoch)?;
            if meta.nlink() > 1 {
                copies.insert((meta.dev(), meta.ino()), to);
            }
        } else if kind.is_symlink() {
            fs_err::os::unix::fs::symlink(fs_err::read_link(&from)?, &to)?;
            copy_metadata(&from, &to, epoch)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} is a special file later than SOURCE_DATE_EPOCH",
                    from.display()
                ),
            )
            .into());
        }
    }
    // Last, so creating the entries does not change the times.
    copy_metadata(src, dest, epoch)
}

/// Makes the committed snapshot `chain` (on `parent`) out of hard links to the committed
/// snapshot `source`, which holds the same layer, its mtimes clamped to `epoch` when the
/// layer blob was written with one.
pub(crate) fn link_snapshot(
    store: &Store,
    parent: Option<&Digest>,
    chain: &Digest,
    source: &str,
    epoch: Option<i64>,
) -> Result<(), Error> {
    let source_dir = store.committed_dir(source)?;
    if !source_dir.is_dir() {
        return Err(Error::SnapshotNotFound {
            key: source.to_owned(),
        });
    }
    let active = format!("image-link-{}", chain.hex());
    if store.snapshot(&active)?.is_some() {
        store.remove_snapshot(&active)?;
    }
    let parent = parent.map(ToString::to_string);
    let mounts = store.prepare(&active, parent.as_deref())?;
    let linked = link_tree(&source_dir, &mounts.upper, epoch, &mut HashMap::new())
        .and_then(|()| store.commit(&active, &chain.to_string()));
    if let Err(e) = linked {
        let _ = store.remove_snapshot(&active);
        return Err(e);
    }
    tracing::debug!(snapshot = %chain, source, "linked the image snapshot to the build's");
    Ok(())
}
