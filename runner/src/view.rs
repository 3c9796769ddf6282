//! The root filesystem as the container will see it, read on the host from its layers.
//!
//! Before the container exists the runner needs to look at its root filesystem: to read
//! /etc/passwd and /etc/group, and to learn which mount points are missing (so that the stubs
//! the setup creates for them can be removed afterwards). [`RootView`] is the runner's handle
//! on the workspace's one root-scoped resolver, [`kiln_fsutil::Root`] over the layer
//! directories: overlayfs semantics (whiteouts, opaque directories), symbolic links resolved
//! inside the root filesystem, never on the host.

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

use kiln_fsutil::Root;

/// A root filesystem seen through its layer directories, topmost (the writable one) first.
#[derive(Debug, Clone)]
pub(crate) struct RootView {
    root: Root,
}

/// The outcome of [`RootView::resolve`].
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The absolute container path with every followed symbolic link resolved.
    pub(crate) path: PathBuf,
    /// Where the entry is on the host and its metadata (not following a final symlink), if it
    /// exists.
    pub(crate) entry: Option<(PathBuf, Metadata)>,
    /// How many leading components of `path` exist (all of them when `entry` is set).
    pub(crate) existing: usize,
}

impl RootView {
    /// A view of `layers`, topmost first (a plain directory root is one layer).
    pub(crate) fn new(layers: Vec<PathBuf>) -> Self {
        Self {
            root: Root::layered(layers),
        }
    }

    /// A view of `layers` (topmost first) that nothing changes while it is used, such as a
    /// container's root before the container starts: each entry and marker is read from the
    /// host once, so resolving several paths over a deep stack of layers stays cheap.
    pub(crate) fn unchanging(layers: Vec<PathBuf>) -> Self {
        Self {
            root: Root::layered(layers).remembering(),
        }
    }

    /// Resolves the container path `path` (absolute or relative to `/`). A symbolic link as
    /// the last component is followed when `follow_last` is set.
    pub(crate) fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<Resolved> {
        let resolved = self.root.resolve(path, follow_last)?;
        Ok(Resolved {
            path: resolved.path,
            entry: resolved.entry.map(|e| (e.host, e.metadata)),
            existing: resolved.existing,
        })
    }

    /// Reads the regular file at container path `path` (symbolic links resolved inside the
    /// root filesystem); `None` if it does not exist or is not a regular file.
    pub(crate) fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.root.read_file(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_layers_never_on_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let (top, bottom) = (dir.path().join("top"), dir.path().join("bottom"));
        fs_err::create_dir_all(bottom.join("etc")).unwrap();
        fs_err::create_dir_all(&top).unwrap();
        fs_err::write(bottom.join("etc/passwd"), "inside").unwrap();
        fs_err::write(host.path().join("passwd"), "host").unwrap();
        fs_err::os::unix::fs::symlink(host.path().join("passwd"), top.join("escape")).unwrap();
        fs_err::os::unix::fs::symlink("../../etc", top.join("up")).unwrap();
        fs_err::os::unix::fs::symlink("loop", top.join("loop")).unwrap();
        let view = RootView::new(vec![top.clone(), bottom.clone()]);
        assert_eq!(view.read(Path::new("/escape")).unwrap(), None);
        assert_eq!(
            view.read(Path::new("/up/passwd")).unwrap().as_deref(),
            Some(b"inside".as_slice())
        );
        let resolved = view.resolve(Path::new("/up/passwd"), true).unwrap();
        assert_eq!(resolved.path, Path::new("/etc/passwd"));
        assert_eq!(resolved.entry.unwrap().0, bottom.join("etc/passwd"));
        let missing = view.resolve(Path::new("/etc/x/y"), true).unwrap();
        assert_eq!((missing.existing, missing.entry.is_none()), (1, true));
        assert!(view.resolve(Path::new("/loop"), true).is_err());
        assert_eq!(view.read(Path::new("/loop")).unwrap(), None);
    }
}
