//! Recursive tree copies that keep what a layer keeps: modes, owners, times, symbolic and hard
//! links, xattrs and special files.
//!
//! One copier serves every place kiln copies a whole tree: LLB copy actions, cache mounts
//! seeded from a snapshot, and the local exporter writing a result to the host. What differs
//! between them is a [`TreeCopy`]'s settings: an owner or mode override, a time, a selection of
//! paths, and whether device nodes are made ([`DeviceNodes`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use filetime::FileTime;

/// An owner (user and group id) given to copied entries instead of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

/// What a copy does with character and block devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNodes {
    /// Recreate them (inside snapshots).
    Create,
    /// Leave them out with a warning (a copy to the host's file system must not make devices).
    Skip,
}

/// The permission bits a copied entry gets, from its own (`0o7777` bits) and whether it is a
/// directory.
pub type ModeFn<'a> = &'a (dyn Fn(u32, bool) -> u32 + Sync);

/// Hard links already copied: the source's `(device, inode)` to its first copy. Shared by
/// the copies of one action, so files linked across its sources stay linked.
pub type HardLinks = HashMap<(u64, u64), PathBuf>;

/// `lstat` that answers `None` for a missing path (or one below a non-directory).
pub fn lstat(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
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

/// The settings of a recursive copy; [`TreeCopy::default`] keeps everything as it is and
/// recreates device nodes.
#[derive(Clone, Copy)]
pub struct TreeCopy<'a> {
    /// An owner for every copied entry instead of its own.
    pub owner: Option<Owner>,
    /// The permission bits of every copied entry (not of symbolic links) instead of its own.
    pub mode: Option<ModeFn<'a>>,
    /// With include or exclude patterns: the paths (relative to the copied directory) to copy.
    pub selected: Option<&'a HashSet<PathBuf>>,
    /// The access and modification time of every copied entry instead of its own.
    pub time: Option<FileTime>,
    /// Whether a directory in the destination is replaced by a file of the same name (an
    /// error otherwise).
    pub replace_dirs: bool,
    /// What happens to device nodes.
    pub devices: DeviceNodes,
}

impl Default for TreeCopy<'_> {
    fn default() -> Self {
        Self {
            owner: None,
            mode: None,
            selected: None,
            time: None,
            replace_dirs: false,
            devices: DeviceNodes::Create,
        }
    }
}

impl std::fmt::Debug for TreeCopy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeCopy")
            .field("owner", &self.owner)
            .field("mode", &self.mode.map(|_| "fn"))
            .field("selected", &self.selected)
            .field("time", &self.time)
            .field("replace_dirs", &self.replace_dirs)
            .field("devices", &self.devices)
            .finish()
    }
}

impl TreeCopy<'_> {
    /// Copies the entries of the directory `src` (in name order) into the existing directory
    /// `dst`, which itself is left as it is.
    pub fn copy_contents(&self, src: &Path, dst: &Path, links: &mut HardLinks) -> io::Result<()> {
        for name in sorted_names(src)? {
            self.copy_tree(&src.join(&name), &dst.join(&name), Path::new(&name), links)?;
        }
        Ok(())
    }

    /// Copies `src` (not following it) to `dst`, merging into an existing directory; `rel` is
    /// `src`'s path below the copied directory (for the selection and warnings).
    pub fn copy_tree(
        &self,
        src: &Path,
        dst: &Path,
        rel: &Path,
        links: &mut HardLinks,
    ) -> io::Result<()> {
        if let Some(selected) = self.selected {
            if !rel.as_os_str().is_empty() && !selected.contains(rel) {
                return Ok(());
            }
        }
        let meta = fs_err::symlink_metadata(src)?;
        let existing = lstat(dst)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            match existing {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    fs_err::remove_file(dst)?;
                    fs_err::create_dir(dst)?;
                }
                None => fs_err::create_dir(dst)?,
            }
            for name in sorted_names(src)? {
                self.copy_tree(&src.join(&name), &dst.join(&name), &rel.join(&name), links)?;
            }
            return self.finish(src, dst, &meta);
        }
        if self.devices == DeviceNodes::Skip && (ft.is_char_device() || ft.is_block_device()) {
            tracing::warn!(path = %rel.display(), "device node not exported");
            return Ok(());
        }
        if let Some(e) = existing {
            if e.is_dir() {
                if !self.replace_dirs {
                    return Err(io::Error::other(format!(
                        "cannot replace directory {} with a file",
                        dst.display()
                    )));
                }
                fs_err::remove_dir_all(dst)?;
            } else {
                fs_err::remove_file(dst)?;
            }
        }
        if meta.nlink() > 1 && !ft.is_symlink() {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                return fs_err::hard_link(first, dst);
            }
            links.insert(key, dst.to_owned());
        }
        if ft.is_symlink() {
            let target = fs_err::read_link(src)?;
            fs_err::os::unix::fs::symlink(&target, dst)?;
        } else if ft.is_file() {
            fs_err::copy(src, dst)?;
        } else {
            // Devices, fifos and sockets: recreate the node.
            let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode());
            let perm = nix::sys::stat::Mode::from_bits_truncate(meta.mode());
            nix::sys::stat::mknod(dst, kind, perm, meta.rdev()).map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("making the node {}: {e}", dst.display()),
                )
            })?;
        }
        self.finish(src, dst, &meta)
    }

    /// Mode, owner, xattrs and times of a copied entry.
    fn finish(&self, src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
        let is_link = meta.file_type().is_symlink();
        let owner = self.owner.unwrap_or(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        });
        std::os::unix::fs::lchown(dst, Some(owner.uid), Some(owner.gid))?;
        if !is_link {
            let own = meta.mode() & 0o7777;
            let mode = match self.mode {
                Some(mode) => mode(own, meta.is_dir()),
                None => own,
            };
            fs_err::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
            if let Ok(names) = xattr::list(src) {
                for name in names {
                    if let Ok(Some(value)) = xattr::get(src, &name) {
                        xattr::set(dst, &name, &value)?;
                    }
                }
            }
        }
        let mtime = self
            .time
            .unwrap_or_else(|| FileTime::from_last_modification_time(meta));
        let atime = self
            .time
            .unwrap_or_else(|| FileTime::from_last_access_time(meta));
        filetime::set_symlink_file_times(dst, atime, mtime)
    }
}

/// The names in the directory `dir`, sorted.
fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = fs_err::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_keep_links_modes_and_times_and_devices_can_be_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs_err::create_dir_all(src.join("sub")).unwrap();
        fs_err::create_dir(&dst).unwrap();
        fs_err::write(src.join("sub/file"), "data").unwrap();
        fs_err::set_permissions(
            src.join("sub/file"),
            std::fs::Permissions::from_mode(0o4751),
        )
        .unwrap();
        fs_err::hard_link(src.join("sub/file"), src.join("linked")).unwrap();
        fs_err::os::unix::fs::symlink("sub/file", src.join("link")).unwrap();
        let when = FileTime::from_unix_time(1_000_000, 0);
        filetime::set_file_mtime(src.join("sub/file"), when).unwrap();
        TreeCopy::default()
            .copy_contents(&src, &dst, &mut HardLinks::new())
            .unwrap();
        let file = fs_err::metadata(dst.join("sub/file")).unwrap();
        assert_eq!(file.mode() & 0o7777, 0o4751);
        assert_eq!(FileTime::from_last_modification_time(&file), when);
        assert_eq!(file.nlink(), 2);
        assert_eq!(
            file.ino(),
            fs_err::metadata(dst.join("linked")).unwrap().ino()
        );
        assert_eq!(
            fs_err::read_link(dst.join("link")).unwrap(),
            Path::new("sub/file")
        );
        // A mode override applies to files and directories, never to links.
        let other = dir.path().join("other");
        fs_err::create_dir(&other).unwrap();
        let mode = |_: u32, is_dir: bool| if is_dir { 0o700 } else { 0o600 };
        TreeCopy {
            mode: Some(&mode),
            ..TreeCopy::default()
        }
        .copy_contents(&src, &other, &mut HardLinks::new())
        .unwrap();
        let mode_of = |p: &str| fs_err::metadata(other.join(p)).unwrap().mode() & 0o7777;
        assert_eq!((mode_of("sub"), mode_of("sub/file")), (0o700, 0o600));
        // A file never silently replaces a directory.
        fs_err::create_dir(dst.join("blocked")).unwrap();
        fs_err::write(src.join("blocked"), "x").unwrap();
        let err = TreeCopy::default()
            .copy_contents(&src, &dst, &mut HardLinks::new())
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot replace directory"),
            "{err}"
        );
    }
}
