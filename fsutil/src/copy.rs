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

use crate::overlay::is_overlay_xattr;

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
    /// The source is a committed layer directory, read in place and never written again:
    /// regular files that keep their owner, mode and times are hard-linked rather than copied
    /// (the destination must be on the same file system), and whiteouts (0/0 character
    /// devices) are left out, as an overlay mount of the layer hides them.
    pub link_from_layer: bool,
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
            link_from_layer: false,
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
            .field("link_from_layer", &self.link_from_layer)
            .finish()
    }
}

impl TreeCopy<'_> {
    /// Copies the entries of the directory `src` (in name order) into the existing directory
    /// `dst`, which itself is left as it is.
    pub fn copy_contents(&self, src: &Path, dst: &Path, links: &mut HardLinks) -> io::Result<()> {
        for name in sorted_names(src)? {
            let rel = Path::new(&name);
            self.copy_entry(&src.join(&name), &dst.join(&name), rel, links, false)?;
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
        self.copy_entry(src, dst, rel, links, false)
    }

    /// [`TreeCopy::copy_tree`]; `fresh` when `dst`'s parent was made by this copy, so nothing
    /// is there yet to merge with or replace.
    fn copy_entry(
        &self,
        src: &Path,
        dst: &Path,
        rel: &Path,
        links: &mut HardLinks,
        fresh: bool,
    ) -> io::Result<()> {
        if let Some(selected) = self.selected {
            if !rel.as_os_str().is_empty() && !selected.contains(rel) {
                return Ok(());
            }
        }
        let meta = fs_err::symlink_metadata(src)?;
        let existing = if fresh { None } else { lstat(dst)? };
        let ft = meta.file_type();
        if ft.is_dir() {
            let made = match existing {
                Some(e) if e.is_dir() => false,
                Some(_) => {
                    fs_err::remove_file(dst)?;
                    fs_err::create_dir(dst)?;
                    true
                }
                None => {
                    fs_err::create_dir(dst)?;
                    true
                }
            };
            for name in sorted_names(src)? {
                let (src, dst) = (src.join(&name), dst.join(&name));
                self.copy_entry(&src, &dst, &rel.join(&name), links, made)?;
            }
            return self.finish(src, dst, &meta);
        }
        if self.link_from_layer && crate::overlay::is_whiteout(&meta) {
            return Ok(());
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
            if self.links_unchanged(src, &meta)? {
                match fs_err::hard_link(src, dst) {
                    // A file linked as often as the file system allows is copied.
                    Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {}
                    linked => return linked,
                }
            }
            return self.copy_file(src, dst, &meta);
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

    /// Whether the regular file `src` (with `meta`) may be hard-linked: a layer's file that
    /// this copy leaves as it is, without overlayfs' own attributes (which a mount of the
    /// layer hides, and which must not follow the file into another layer).
    fn links_unchanged(&self, src: &Path, meta: &std::fs::Metadata) -> io::Result<bool> {
        if !self.link_from_layer || self.time.is_some() {
            return Ok(false);
        }
        if self
            .owner
            .is_some_and(|o| (o.uid, o.gid) != (meta.uid(), meta.gid()))
        {
            return Ok(false);
        }
        let own = meta.mode() & 0o7777;
        if self.mode.is_some_and(|mode| mode(own, false) != own) {
            return Ok(false);
        }
        // Not knowing the attributes, copy (which leaves out the overlay ones).
        Ok(xattr::list(src).is_ok_and(|mut names| !names.any(|n| is_overlay_xattr(&n))))
    }

    /// Copies a regular file with its owner, mode, xattrs and times, working on the two open
    /// files rather than on paths (neither is followed if it is a symbolic link).
    fn copy_file(&self, src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
        use fs_err::os::unix::fs::OpenOptionsExt as _;
        use xattr::FileExt as _;
        let mut from = fs_err::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)?;
        let mut to = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dst)?;
        // On the std files, so the copy is done in the kernel (copy_file_range).
        io::copy(from.file_mut(), to.file_mut())?;
        let owner = self.owner_of(meta);
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", dst.display()));
        std::os::unix::fs::fchown(to.file(), Some(owner.uid), Some(owner.gid)).map_err(named)?;
        let mode = self.mode_of(meta);
        to.file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(named)?;
        if let Ok(names) = from.file().list_xattr() {
            for name in names.filter(|n| !is_overlay_xattr(n)) {
                if let Ok(Some(value)) = from.file().get_xattr(&name) {
                    to.file().set_xattr(&name, &value).map_err(named)?;
                }
            }
        }
        let (atime, mtime) = self.times_of(meta);
        filetime::set_file_handle_times(to.file(), Some(atime), Some(mtime)).map_err(named)
    }

    /// Mode, owner, xattrs and times of a copied entry.
    fn finish(&self, src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
        let is_link = meta.file_type().is_symlink();
        let owner = self.owner_of(meta);
        std::os::unix::fs::lchown(dst, Some(owner.uid), Some(owner.gid))?;
        if !is_link {
            let mode = self.mode_of(meta);
            fs_err::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
            if let Ok(names) = xattr::list(src) {
                for name in names.filter(|n| !is_overlay_xattr(n)) {
                    if let Ok(Some(value)) = xattr::get(src, &name) {
                        xattr::set(dst, &name, &value)?;
                    }
                }
            }
        }
        let (atime, mtime) = self.times_of(meta);
        filetime::set_symlink_file_times(dst, atime, mtime)
    }

    /// The owner a copy of the entry of `meta` gets: the one set, else the source's.
    fn owner_of(&self, meta: &std::fs::Metadata) -> Owner {
        self.owner.unwrap_or(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    /// The permission bits a copy of the entry of `meta` gets: the source's, changed as set.
    fn mode_of(&self, meta: &std::fs::Metadata) -> u32 {
        let own = meta.mode() & 0o7777;
        match self.mode {
            Some(mode) => mode(own, meta.is_dir()),
            None => own,
        }
    }

    /// The access and modification times a copy of the entry of `meta` gets: the time set,
    /// else the source's.
    fn times_of(&self, meta: &std::fs::Metadata) -> (FileTime, FileTime) {
        let atime = self
            .time
            .unwrap_or_else(|| FileTime::from_last_access_time(meta));
        let mtime = self
            .time
            .unwrap_or_else(|| FileTime::from_last_modification_time(meta));
        (atime, mtime)
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
    fn a_layer_links_the_files_it_keeps_and_leaves_out_what_overlayfs_hides() {
        if !kiln_testdata::is_root() {
            kiln_testdata::skip("whiteouts and trusted.* attributes need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        let dst = dir.path().join("dst");
        fs_err::create_dir_all(layer.join("opaque")).unwrap();
        fs_err::create_dir(&dst).unwrap();
        fs_err::write(layer.join("kept"), "kept").unwrap();
        fs_err::write(layer.join("marked"), "marked").unwrap();
        fs_err::write(layer.join("opaque/inside"), "in").unwrap();
        xattr::set(layer.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
        xattr::set(layer.join("marked"), "trusted.overlay.origin", b"x").unwrap();
        xattr::set(layer.join("marked"), "user.note", b"n").unwrap();
        nix::sys::stat::mknod(
            &layer.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        TreeCopy {
            link_from_layer: true,
            ..TreeCopy::default()
        }
        .copy_contents(&layer, &dst, &mut HardLinks::new())
        .unwrap();
        let ino = |p: &Path| fs_err::symlink_metadata(p).unwrap().ino();
        // Kept as it is: the layer's own file.
        assert_eq!(ino(&dst.join("kept")), ino(&layer.join("kept")));
        assert_eq!(
            ino(&dst.join("opaque/inside")),
            ino(&layer.join("opaque/inside"))
        );
        // overlayfs' own attributes never follow: a file holding one is copied without it,
        // a directory is made without it, and a whiteout is left out.
        assert_ne!(ino(&dst.join("marked")), ino(&layer.join("marked")));
        assert_eq!(
            fs_err::read_to_string(dst.join("marked")).unwrap(),
            "marked"
        );
        assert_eq!(
            xattr::get(dst.join("marked"), "user.note").unwrap(),
            Some(b"n".to_vec())
        );
        assert_eq!(
            xattr::get(dst.join("marked"), "trusted.overlay.origin").unwrap(),
            None
        );
        assert_eq!(
            xattr::get(dst.join("opaque"), "trusted.overlay.opaque").unwrap(),
            None
        );
        assert!(lstat(&dst.join("gone")).unwrap().is_none());

        // An owner the files do not have: copies, with that owner.
        let other = dir.path().join("other");
        fs_err::create_dir(&other).unwrap();
        TreeCopy {
            link_from_layer: true,
            owner: Some(Owner { uid: 7, gid: 8 }),
            ..TreeCopy::default()
        }
        .copy_contents(&layer, &other, &mut HardLinks::new())
        .unwrap();
        let kept = fs_err::symlink_metadata(other.join("kept")).unwrap();
        assert_ne!(kept.ino(), ino(&layer.join("kept")));
        assert_eq!((kept.uid(), kept.gid()), (7, 8));
    }

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
