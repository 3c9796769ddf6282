//! The root filesystem as the container will see it, read on the host from its layers.
//!
//! # Overview
//!
//! Before the container exists the runner needs to look at its root filesystem: to read
//! /etc/passwd and /etc/group, and to learn which mount points are missing (so that the stubs
//! the setup creates for them can be removed afterwards). [`RootView::resolve`] walks a
//! container path over the layer directories the way overlayfs and the kernel's path walk
//! would:
//!
//! 1. each component is looked up in the layers that make up the current directory, top down;
//!    the first layer holding it wins, and a whiteout (a 0/0 character device, or an OCI
//!    `.wh.NAME` beside it) hides it and everything below;
//! 2. a directory merges with the directories of the same path in lower layers, down to the
//!    first lower layer where the path is not a directory or is whited out, or to an opaque
//!    directory (`trusted.overlay.opaque=y`, `user.overlay.opaque=y` or an OCI `.wh..wh..opq`);
//! 3. a symbolic link is resolved inside the root filesystem: an absolute target starts again
//!    at the container's `/`, `..` stops at it, and at most 40 links are followed.
//!
//! Only real directories of the layers are ever traversed on the host, so no symbolic link in
//! an image can send a lookup to a host file.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The kernel's limit on symbolic links followed in one lookup.
const MAX_SYMLINKS: usize = 40;

/// Extended attributes that mark an overlayfs directory opaque.
const OPAQUE_XATTRS: &[&str] = &["trusted.overlay.opaque", "user.overlay.opaque"];

/// The OCI whiteout prefix and opaque marker.
const OCI_WHITEOUT_PREFIX: &str = ".wh.";
const OCI_OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A root filesystem seen through its layer directories, topmost (the writable one) first.
#[derive(Debug, Clone)]
pub(crate) struct RootView {
    layers: Vec<PathBuf>,
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

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> io::Result<bool> {
    for name in OPAQUE_XATTRS {
        match xattr::get(dir, name) {
            Ok(Some(value)) if value == b"y" => return Ok(true),
            Ok(_) => {}
            // Filesystems without xattr support, or `trusted.*` read without privilege.
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ENOTSUP | libc::EPERM | libc::EACCES)
                ) => {}
            Err(err) => return Err(err),
        }
    }
    exists(&dir.join(OCI_OPAQUE_MARKER))
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs_err::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

fn oci_whiteout(parent: &Path, name: &OsStr) -> PathBuf {
    let mut marker = OsString::from(OCI_WHITEOUT_PREFIX);
    marker.push(name);
    parent.join(marker)
}

/// An entry of one layer.
enum Entry {
    Missing,
    WhitedOut,
    Present(Metadata),
}

fn lookup(parent: &Path, name: &OsStr) -> io::Result<Entry> {
    if name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX.as_bytes()) {
        // Markers are not part of the container's view.
        return Ok(Entry::Missing);
    }
    if exists(&oci_whiteout(parent, name))? {
        return Ok(Entry::WhitedOut);
    }
    match fs_err::symlink_metadata(parent.join(name)) {
        Ok(meta) if is_whiteout(&meta) => Ok(Entry::WhitedOut),
        Ok(meta) => Ok(Entry::Present(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
        Err(err) => Err(err),
    }
}

/// `path` made absolute under `/` with `.` and `..` applied lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl RootView {
    /// A view of `layers`, topmost first (a plain directory root is one layer).
    pub(crate) fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// The layers, top down, whose directory `rel` makes up the merged directory, given that
    /// layer `top` holds it as a directory and `below` are the layers of its parent.
    fn merged(&self, top: usize, below: &[usize], rel: &Path) -> io::Result<Vec<usize>> {
        let mut out = vec![top];
        if is_opaque(&self.layers[top].join(rel))? {
            return Ok(out);
        }
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => (parent, name),
            _ => return Ok(out),
        };
        for &layer in below.iter().filter(|l| **l > top) {
            match lookup(&self.layers[layer].join(parent), name)? {
                Entry::Missing => {}
                Entry::Present(meta) if meta.is_dir() => {
                    out.push(layer);
                    if is_opaque(&self.layers[layer].join(rel))? {
                        break;
                    }
                }
                // A whiteout or a non-directory hides this layer's and every lower entry.
                Entry::WhitedOut | Entry::Present(_) => break,
            }
        }
        Ok(out)
    }

    /// Resolves the container path `path` (absolute or relative to `/`). A symbolic link as
    /// the last component is followed when `follow_last` is set. A non-directory met before
    /// the last component is `ENOTDIR`, too many links `ELOOP`.
    pub(crate) fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<Resolved> {
        let mut pending: VecDeque<OsString> = normalise(path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part.to_owned()),
                _ => None,
            })
            .collect();
        let mut current = PathBuf::new();
        // The layers making up each directory from the root down to `current`.
        let mut stack: Vec<Vec<usize>> = vec![(0..self.layers.len()).collect()];
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                if current.pop() {
                    stack.pop();
                }
                continue;
            }
            let rel = current.join(&name);
            let active = stack.last().expect("the root's layers");
            let mut hit = None;
            for &layer in active {
                match lookup(&self.layers[layer].join(&current), &name)? {
                    Entry::Missing => {}
                    Entry::WhitedOut => break,
                    Entry::Present(meta) => {
                        hit = Some((layer, meta));
                        break;
                    }
                }
            }
            let Some((layer, meta)) = hit else {
                let existing = current.components().count();
                let mut rest = Path::new("/").join(&rel);
                rest.extend(pending);
                return Ok(Resolved {
                    path: normalise(&rest),
                    entry: None,
                    existing,
                });
            };
            let last = pending.is_empty();
            if meta.file_type().is_symlink() && (!last || follow_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs_err::read_link(self.layers[layer].join(&rel))?;
                if target.is_absolute() {
                    current = PathBuf::new();
                    stack.truncate(1);
                }
                for component in target.components().rev() {
                    match component {
                        Component::Normal(part) => pending.push_front(part.to_owned()),
                        Component::ParentDir => pending.push_front(OsString::from("..")),
                        _ => {}
                    }
                }
                continue;
            }
            if last {
                let existing = rel.components().count();
                return Ok(Resolved {
                    path: Path::new("/").join(&rel),
                    entry: Some((self.layers[layer].join(&rel), meta)),
                    existing,
                });
            }
            if !meta.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            let merged = self.merged(layer, active, &rel)?;
            stack.push(merged);
            current = rel;
        }
        // The path named a directory reached through `..` or the root itself.
        let top = stack.last().expect("the root's layers")[0];
        let host = self.layers[top].join(&current);
        let meta = fs_err::symlink_metadata(&host)?;
        Ok(Resolved {
            existing: current.components().count(),
            path: Path::new("/").join(&current),
            entry: Some((host, meta)),
        })
    }

    /// Reads the regular file at container path `path` (symbolic links resolved inside the
    /// root filesystem); `None` if it does not exist or is not a regular file.
    pub(crate) fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let resolved = match self.resolve(path, true) {
            Ok(resolved) => resolved,
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let Some((host, meta)) = resolved.entry else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        use fs_err::os::unix::fs::OpenOptionsExt;
        use std::io::Read;
        let mut file = fs_err::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&host)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    }

    fn symlink(target: &str, link: &Path) {
        fs_err::create_dir_all(link.parent().unwrap()).unwrap();
        fs_err::os::unix::fs::symlink(target, link).unwrap();
    }

    fn read(view: &RootView, path: &str) -> Option<String> {
        view.read(Path::new(path))
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    }

    struct Stack {
        _dir: tempfile::TempDir,
        top: PathBuf,
        middle: PathBuf,
        bottom: PathBuf,
    }

    fn stack() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let [top, middle, bottom] = ["top", "middle", "bottom"].map(|n| dir.path().join(n));
        for layer in [&top, &middle, &bottom] {
            fs_err::create_dir_all(layer).unwrap();
        }
        Stack {
            _dir: dir,
            top,
            middle,
            bottom,
        }
    }

    impl Stack {
        fn view(&self) -> RootView {
            RootView::new(vec![
                self.top.clone(),
                self.middle.clone(),
                self.bottom.clone(),
            ])
        }
    }

    #[test]
    fn topmost_layer_wins_and_directories_merge() {
        let s = stack();
        write(&s.bottom.join("etc/a"), "bottom a");
        write(&s.bottom.join("etc/b"), "bottom b");
        write(&s.middle.join("etc/b"), "middle b");
        write(&s.top.join("etc/c"), "top c");
        let view = s.view();
        assert_eq!(read(&view, "/etc/a").as_deref(), Some("bottom a"));
        assert_eq!(read(&view, "/etc/b").as_deref(), Some("middle b"));
        assert_eq!(read(&view, "/etc/c").as_deref(), Some("top c"));
        assert_eq!(read(&view, "/etc/d"), None);
        let missing = view.resolve(Path::new("/etc/x/y"), true).unwrap();
        assert_eq!(missing.path, Path::new("/etc/x/y"));
        assert_eq!(missing.existing, 1);
        assert!(missing.entry.is_none());
    }

    #[test]
    fn oci_whiteouts_and_opaque_markers_hide_lower_entries() {
        let s = stack();
        write(&s.bottom.join("etc/passwd"), "bottom");
        write(&s.bottom.join("etc/group"), "bottom group");
        write(&s.bottom.join("opt/kept"), "kept");
        write(&s.top.join("etc/.wh.passwd"), "");
        write(&s.middle.join("opt/.wh..wh..opq"), "");
        write(&s.middle.join("opt/new"), "new");
        let view = s.view();
        assert_eq!(read(&view, "/etc/passwd"), None);
        assert_eq!(read(&view, "/etc/group").as_deref(), Some("bottom group"));
        assert_eq!(read(&view, "/opt/kept"), None);
        assert_eq!(read(&view, "/opt/new").as_deref(), Some("new"));
        // The markers themselves are invisible.
        assert_eq!(read(&view, "/etc/.wh.passwd"), None);
    }

    #[test]
    fn a_lower_non_directory_stops_the_merge() {
        let s = stack();
        write(&s.bottom.join("data/old"), "old");
        write(&s.middle.join("data"), "a file");
        write(&s.top.join("data/new"), "new");
        let view = s.view();
        assert_eq!(read(&view, "/data/new").as_deref(), Some("new"));
        assert_eq!(read(&view, "/data/old"), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let s = stack();
        let host = tempfile::tempdir().unwrap();
        let host_file = host.path().join("secret");
        write(&host_file, "host secret");
        write(&s.bottom.join("real/file"), "inside");
        symlink("/real", &s.middle.join("abs"));
        symlink("../../../../real/file", &s.middle.join("dir/rel"));
        symlink(host_file.to_str().unwrap(), &s.top.join("escape"));
        symlink("loop", &s.top.join("loop"));
        let view = s.view();
        assert_eq!(read(&view, "/abs/file").as_deref(), Some("inside"));
        assert_eq!(read(&view, "/dir/rel").as_deref(), Some("inside"));
        assert_eq!(read(&view, "/escape"), None);
        let resolved = view.resolve(Path::new("/escape"), true).unwrap();
        assert_eq!(resolved.path, host_file);
        assert!(resolved.entry.is_none());
        assert_eq!(read(&view, "/loop"), None);
        let err = view.resolve(Path::new("/loop"), true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        // Not following the last link gives the link itself.
        let link = view.resolve(Path::new("/abs"), false).unwrap();
        assert!(link.entry.unwrap().1.file_type().is_symlink());
    }
}
