//! Resolving container paths inside a root directory on the host, never leaving it.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// How many symbolic links one resolution may follow (as Linux's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// `lstat` that answers `None` for a missing path.
pub(crate) fn lstat(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match fs_err::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Resolves the container path `path` to a host path under `root`, following symbolic links as
/// if `root` were `/` (an absolute link target restarts at `root`, `..` stops at `root`). The
/// last component is followed only when `follow_last` is set. Missing components are kept as
/// they are, so the result may not exist.
pub(crate) fn resolve(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, Path::new(path));
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut here = root.to_owned();
        here.extend(&resolved);
        here.push(&name);
        let is_last = pending.is_empty();
        match lstat(&here)? {
            Some(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "{path}: too many levels of symbolic links"
                    )));
                }
                let target = fs_err::read_link(&here)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                push_components(&mut pending, &target);
            }
            _ => resolved.push(name),
        }
    }
    let mut out = root.to_owned();
    out.extend(&resolved);
    Ok(out)
}

/// Pushes the components of `path` onto a stack (last component at the bottom), keeping `..`.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => stack.push(n.to_owned()),
            Component::ParentDir => stack.push("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
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
