//! Mount-point stubs: the empty files and directories the container's setup creates in the root
//! filesystem so that /proc, /etc/hosts, extra mounts and the like have somewhere to attach.
//!
//! # Overview
//!
//! Those stubs land in the writable layer (an overlay's upper directory) and would otherwise
//! end up in the step's layer, as BuildKit's `removeMountStubsRecursive` also prevents:
//!
//! 1. before the run, [`record`] resolves every mount point in the root filesystem as the
//!    container will see it ([`RootView`]) and notes the path components that do not exist yet,
//!    plus the times of the deepest directory that does;
//! 2. after the run (the container and its mounts gone), [`Stubs::remove`] deletes, deepest
//!    first, each noted path still present in the writable layer as an empty regular file or
//!    an empty directory — a file the process wrote at that path, or a directory it filled,
//!    stays, and so do their parents — and puts back the times of the directories it removed
//!    entries from.
//!
//! The writable layer is only walked through real directories, so a symbolic link the process
//! left there cannot turn the removal onto a host path.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use filetime::FileTime;

use crate::view::{Resolved, RootView};

/// The stubs a run may create, recorded before it.
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    /// The writable layer directory.
    writable: PathBuf,
    /// Paths relative to the root that did not exist before the run.
    missing: Vec<PathBuf>,
    /// Existing directories (relative to the root) that stubs would be created in, with their
    /// access and modification times before the run.
    parents: BTreeMap<PathBuf, (FileTime, FileTime)>,
}

/// Records which components of `mount_points` are missing in `view`, whose topmost layer
/// `writable` receives the stubs.
pub(crate) fn record(view: &RootView, writable: &Path, mount_points: &[PathBuf]) -> Stubs {
    let mut stubs = Stubs {
        writable: writable.to_owned(),
        ..Stubs::default()
    };
    for point in mount_points {
        let resolved = match view.resolve(point, true) {
            Ok(resolved) => resolved,
            Err(err) => {
                // The setup will fail on this path itself; nothing to clean up.
                tracing::debug!(path = %point.display(), error = %err, "mount point does not resolve");
                continue;
            }
        };
        if resolved.entry.is_some() {
            continue;
        }
        let parts: Vec<_> = resolved.path.components().skip(1).collect();
        // A `..` after the missing component can shorten the lexical path.
        let existing = resolved.existing.min(parts.len());
        for depth in existing + 1..=parts.len() {
            stubs.missing.push(parts[..depth].iter().collect());
        }
        let parent: PathBuf = parts[..existing].iter().collect();
        if let Ok(Resolved {
            entry: Some((_, meta)),
            ..
        }) = view.resolve(&Path::new("/").join(&parent), true)
        {
            stubs.parents.insert(
                parent,
                (
                    FileTime::from_last_access_time(&meta),
                    FileTime::from_last_modification_time(&meta),
                ),
            );
        }
    }
    stubs
        .missing
        .sort_by(|a, b| (b.components().count(), a).cmp(&(a.components().count(), b)));
    stubs.missing.dedup();
    stubs
}

impl Stubs {
    /// `rel` inside the writable layer, if every parent there is a real directory.
    fn host_path(&self, rel: &Path) -> io::Result<Option<PathBuf>> {
        let mut host = self.writable.clone();
        let parts: Vec<_> = rel.components().collect();
        for (index, part) in parts.iter().enumerate() {
            host.push(part);
            if index + 1 == parts.len() {
                break;
            }
            match fs_err::symlink_metadata(&host) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Ok(None),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err),
            }
        }
        Ok(Some(host))
    }

    /// Removes `rel` if it is an empty file or directory; returns whether it did.
    fn remove_one(&self, rel: &Path) -> io::Result<bool> {
        let Some(host) = self.host_path(rel)? else {
            return Ok(false);
        };
        let meta = match fs_err::symlink_metadata(&host) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        };
        if meta.is_file() && meta.len() == 0 {
            fs_err::remove_file(&host)?;
            Ok(true)
        } else if meta.is_dir() && fs_err::read_dir(&host)?.next().is_none() {
            fs_err::remove_dir(&host)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Removes the stubs left in the writable layer (see the module docs). Failures are logged:
    /// the run's result does not depend on them.
    pub(crate) fn remove(&self) {
        let mut touched = Vec::new();
        for rel in &self.missing {
            match self.remove_one(rel) {
                Ok(true) => touched.push(rel.parent().unwrap_or(Path::new("")).to_owned()),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(path = %rel.display(), error = %err, "cannot remove a mount stub");
                }
            }
        }
        for (parent, (atime, mtime)) in &self.parents {
            if !touched.contains(parent) {
                continue;
            }
            let host = match self.host_path(parent) {
                Ok(Some(host)) => host,
                _ => continue,
            };
            if fs_err::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                if let Err(err) = filetime::set_symlink_file_times(&host, *atime, *mtime) {
                    tracing::warn!(path = %host.display(), error = %err, "cannot restore directory times");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_empty_stubs_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        let lower = dir.path().join("lower");
        fs_err::create_dir_all(upper.join("run")).unwrap();
        fs_err::create_dir_all(lower.join("etc")).unwrap();
        fs_err::write(lower.join("etc/passwd"), "root").unwrap();
        let old = FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_times(lower.join("etc"), old, old).unwrap();
        let view = RootView::new(vec![upper.clone(), lower.clone()]);
        let points: Vec<PathBuf> = [
            "/etc/hosts",
            "/etc/passwd",
            "/proc",
            "/data/a/b",
            "/data/kept",
            "/run/x",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let stubs = record(&view, &upper, &points);
        assert_eq!(
            stubs.missing,
            [
                "data/a/b",
                "data/a",
                "data/kept",
                "etc/hosts",
                "run/x",
                "data",
                "proc"
            ]
            .map(PathBuf::from)
        );
        // What a run would leave: stubs, one written to, one directory filled, and a file the
        // process made itself (never recorded).
        fs_err::create_dir_all(upper.join("etc")).unwrap();
        fs_err::write(upper.join("etc/hosts"), "").unwrap();
        fs_err::write(upper.join("etc/own"), "").unwrap();
        fs_err::create_dir_all(upper.join("proc")).unwrap();
        fs_err::create_dir_all(upper.join("data/a/b")).unwrap();
        fs_err::write(upper.join("data/kept"), "written").unwrap();
        fs_err::write(upper.join("run/x"), "").unwrap();
        stubs.remove();
        assert!(!upper.join("etc/hosts").exists());
        assert!(upper.join("etc/own").exists());
        // The directory the stub was created in gets its times back.
        let meta = fs_err::metadata(upper.join("etc")).unwrap();
        assert_eq!(FileTime::from_last_modification_time(&meta), old);
        assert!(!upper.join("proc").exists());
        assert!(!upper.join("data/a").exists());
        assert_eq!(
            fs_err::read_to_string(upper.join("data/kept")).unwrap(),
            "written"
        );
        assert!(!upper.join("run/x").exists());
        assert!(upper.join("run").is_dir());
    }

    #[test]
    fn a_symlink_in_the_writable_layer_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        let host = dir.path().join("host");
        fs_err::create_dir_all(&upper).unwrap();
        fs_err::create_dir_all(&host).unwrap();
        let view = RootView::new(vec![upper.clone()]);
        let stubs = record(&view, &upper, &[PathBuf::from("/etc/hosts")]);
        // The process replaced /etc with a link to a host directory holding an empty file.
        fs_err::write(host.join("hosts"), "").unwrap();
        fs_err::os::unix::fs::symlink(&host, upper.join("etc")).unwrap();
        stubs.remove();
        assert!(host.join("hosts").exists());
    }
}
