//! File actions' view of the shared root-scoped resolver ([`kiln_fsutil::Root`]): container
//! paths become host paths under a plain root directory, never outside it.

use std::io;
use std::path::{Path, PathBuf};

pub(crate) use kiln_fsutil::lstat;

/// Resolves the container path `path` to a host path under `root`, following symbolic links
/// as if `root` were `/` (see [`kiln_fsutil::Root::resolve`]). The last component is followed
/// only when `follow_last` is set. A missing path is where it would be created: below `root`,
/// through real directories only.
pub(crate) fn resolve(
    root: &Path,
    path: impl AsRef<Path>,
    follow_last: bool,
) -> io::Result<PathBuf> {
    let resolved = kiln_fsutil::Root::new(root).resolve(path, follow_last)?;
    Ok(match resolved.entry {
        Some(entry) => entry.host,
        None => resolved.host_in(root),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn links_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("a/b")).unwrap();
        symlink("/a", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("a/b/up")).unwrap();
        symlink("b", root.join("a/rel")).unwrap();
        symlink("loop", root.join("loop")).unwrap();

        assert_eq!(resolve(root, "/abs/b", true).unwrap(), root.join("a/b"));
        assert_eq!(
            resolve(root, "a/b/up/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(resolve(root, "/../../x", true).unwrap(), root.join("x"));
        assert_eq!(resolve(root, "/a/rel", true).unwrap(), root.join("a/b"));
        assert_eq!(resolve(root, "/a/rel", false).unwrap(), root.join("a/rel"));
        let err = resolve(root, "/loop", true).unwrap_err();
        assert!(err.to_string().contains("too many levels"), "{err}");
    }
}
