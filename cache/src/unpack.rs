//! Defensive layer unpacking.
//!
//! # Overview
//! A layer is an untrusted tar stream (plain, gzip or zstd; sniffed from its first bytes). It
//! is unpacked so that nothing can be written outside the destination directory:
//! 1. Entry paths are split into components; an absolute path or a `..` component is rejected.
//! 2. The parent of each entry is resolved component by component inside the root: a symlink
//!    met on the way is followed as if the root were `/` (so `/etc` in a link means
//!    `<root>/etc`), never outside it; missing directories are created.
//! 3. The final component is never followed: what is there is replaced.
//! 4. Hard links must name an existing non-directory inside the root (resolved the same way).
//! 5. Device nodes are created only when [`UnpackOptions::allow_devices`] is set; otherwise they
//!    are rejected.
//! 6. OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) are either applied (deleting from the tree
//!    below, for a flattened root file system) or turned into overlayfs whiteouts (0/0 character
//!    devices and the `trusted.overlay.opaque` xattr, for a snapshot used as an overlay lower).
//!
//! 7. The uncompressed size, the entry count and the compression ratio are bounded by
//!    [`UnpackOptions::limits`] while the stream is read (see [`UnpackLimits`]).
//!
//! Ownership is restored when running as root, modes and xattrs always (xattrs the kernel
//! refuses are logged and skipped), mtimes last (directories after their contents).

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;

use fs_err::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use filetime::FileTime;
use kiln_llb::Digest;
use nix::sys::stat::{Mode, SFlag};
use tar::EntryType;

use crate::error::Error;
use crate::hash::{HashReader, Hasher};
use crate::limits::{CountingReader, Exceeded, LayerLimit, LimitedReader, UnpackLimits};

pub(crate) use kiln_fsutil::overlay::{
    OPAQUE_MARKER, OPAQUE_XATTR as OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX,
};

/// What to do with OCI whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete the whited-out paths from the destination (which holds the layers below).
    #[default]
    Apply,
    /// Write overlayfs whiteouts (needs root), for a directory used as an overlay layer.
    Overlay,
}

/// How to unpack a layer.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// What to do with whiteouts.
    pub whiteouts: WhiteoutMode,
    /// Whether device nodes may be created (otherwise they are an error).
    pub allow_devices: bool,
    /// Whether to restore owners (default: when running as root).
    pub same_owner: bool,
    /// Size, entry count and compression ratio limits.
    pub limits: UnpackLimits,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            whiteouts: WhiteoutMode::Apply,
            allow_devices: false,
            same_owner: nix::unistd::geteuid().is_root(),
            limits: UnpackLimits::default(),
        }
    }
}

/// What unpacking a layer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// The digest of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: Digest,
    /// The size of the uncompressed tar stream.
    pub size: u64,
}

/// Compression of a layer stream, sniffed from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    Gzip,
    Zstd,
    Plain,
}

pub(crate) fn sniff(head: &[u8]) -> Sniffed {
    if head.starts_with(&[0x1f, 0x8b]) {
        Sniffed::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Sniffed::Zstd
    } else {
        Sniffed::Plain
    }
}

/// Returns a reader of the uncompressed stream of a (possibly compressed) layer.
pub fn decompress<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, Error> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let head = reader.fill_buf()?;
    Ok(match sniff(head) {
        Sniffed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Sniffed::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        Sniffed::Plain => Box::new(reader),
    })
}

/// Unpacks a layer (plain, gzip or zstd tar) into `dest`, which must exist. A layer past one
/// of [`UnpackOptions::limits`] stops with [`Error::LayerLimit`], leaving what was unpacked so
/// far for the caller to remove.
pub fn unpack_layer(
    reader: impl Read,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<Unpacked, Error> {
    let compressed = Rc::new(Cell::new(0));
    let exceeded = Rc::new(Cell::new(None));
    let plain = decompress(CountingReader {
        inner: reader,
        count: Rc::clone(&compressed),
    })?;
    let limited = LimitedReader {
        inner: plain,
        limits: options.limits,
        compressed,
        read: 0,
        exceeded: Rc::clone(&exceeded),
    };
    unpack_limited(limited, dest, options).map_err(|e| match exceeded.get() {
        Some(found) => limit_error(found),
        None => e,
    })
}

fn limit_error(found: Exceeded) -> Error {
    Error::LayerLimit {
        limit: found.limit,
        value: found.value,
        max: found.max,
        read: found.read,
    }
}

fn unpack_limited(
    plain: impl Read,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<Unpacked, Error> {
    let mut hashing = HashReader {
        inner: plain,
        hasher: Hasher::default(),
    };
    let mut unpacker = Unpacker {
        root: dest.to_owned(),
        options: *options,
        created: HashSet::new(),
        dir_times: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let mut entries = 0u64;
        for entry in archive.entries()? {
            let mut entry = entry?;
            entries += 1;
            if entries > options.limits.max_layer_entries {
                return Err(limit_error(Exceeded {
                    limit: LayerLimit::Entries,
                    value: entries,
                    max: options.limits.max_layer_entries,
                    read: entry.raw_header_position(),
                }));
            }
            unpacker.entry(&mut entry)?;
        }
    }
    // The diff ID covers the whole stream, including the end-of-archive blocks and padding.
    io::copy(&mut hashing, &mut io::sink())?;
    for (path, mtime) in unpacker.dir_times.iter().rev() {
        filetime::set_symlink_file_times(path, *mtime, *mtime).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("setting times of {}: {e}", path.display()),
            )
        })?;
    }
    let (diff_id, size) = hashing.hasher.finish();
    Ok(Unpacked { diff_id, size })
}

struct Unpacker {
    root: PathBuf,
    options: UnpackOptions,
    /// Paths this layer created, which an opaque marker in the same layer must keep.
    created: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, FileTime)>,
}

fn unsafe_entry(path: &Path, reason: &'static str) -> Error {
    Error::UnsafeEntry {
        path: path.display().to_string(),
        reason,
    }
}

/// Splits an archive path into plain components, rejecting absolute paths and `..`.
fn clean(path: &Path) -> Result<Vec<OsString>, Error> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => out.push(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(path, "`..` in path")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(path, "absolute path"));
            }
        }
    }
    Ok(out)
}

fn lstat(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match fs_err::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Resolves `components` as a directory inside `root` with the shared resolver
/// ([`kiln_fsutil::Root`]: links followed as if `root` were `/`, never outside it), creating
/// missing directories when `create` is set.
fn resolve_dir(
    root: &Path,
    components: &[OsString],
    create: bool,
    shown: &Path,
) -> Result<PathBuf, Error> {
    let path: PathBuf = components.iter().collect();
    let resolved = kiln_fsutil::Root::new(root)
        .resolve(&path, true)
        .map_err(|e| match e {
            kiln_fsutil::Error::TooManyLinks { .. } => {
                unsafe_entry(shown, "too many levels of symbolic links")
            }
            kiln_fsutil::Error::NotADirectory { .. } => {
                unsafe_entry(shown, "a parent is not a directory")
            }
            kiln_fsutil::Error::Io { source, .. } => Error::from(source),
        })?;
    match resolved.entry {
        Some(entry) if entry.metadata.is_dir() => Ok(entry.host),
        Some(_) => Err(unsafe_entry(shown, "a parent is not a directory")),
        None if create => {
            // Below the existing part there are only missing names under real directories:
            // creating them follows no link.
            let mut here = root.to_owned();
            for (depth, name) in resolved.relative().iter().enumerate() {
                here.push(name);
                if depth < resolved.existing {
                    continue;
                }
                if let Err(e) = fs_err::create_dir(&here) {
                    if !(e.kind() == io::ErrorKind::AlreadyExists
                        && lstat(&here)?.is_some_and(|m| m.is_dir()))
                    {
                        return Err(e.into());
                    }
                }
            }
            Ok(here)
        }
        None => Err(unsafe_entry(shown, "a parent does not exist")),
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match lstat(path)? {
        Some(m) if m.is_dir() => fs_err::remove_dir_all(path),
        Some(_) => fs_err::remove_file(path),
        None => Ok(()),
    }
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let shown = entry.path()?.into_owned();
        let mut components = clean(&shown)?;
        let Some(name) = components.pop() else {
            return Ok(()); // the root itself (`./`)
        };
        let name_bytes = name.as_bytes();
        let parent = resolve_dir(&self.root, &components, true, &shown)?;

        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return self.opaque(&parent);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(unsafe_entry(&shown, "malformed whiteout"));
            }
            let mtime =
                FileTime::from_unix_time(i64::try_from(entry.header().mtime()?).unwrap_or(0), 0);
            return self.whiteout(&parent.join(hidden), mtime);
        }

        let target = parent.join(&name);
        let existing = lstat(&target)?;
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs_err::remove_file(&target)?;
                    fs_err::create_dir(&target)?;
                }
                None => fs_err::create_dir(&target)?,
            }
        } else if existing.is_some() {
            remove_any(&target)?;
        }

        match kind {
            EntryType::Directory => {}
            EntryType::Regular | EntryType::Continuous => {
                let mut file = fs_err::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&target)?;
                io::copy(entry, &mut file)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| unsafe_entry(&shown, "symlink without a target"))?;
                fs_err::os::unix::fs::symlink(link.as_ref(), &target)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| unsafe_entry(&shown, "hard link without a target"))?
                    .into_owned();
                let mut link_components = clean(&link)?;
                let link_name = link_components
                    .pop()
                    .ok_or_else(|| unsafe_entry(&shown, "hard link to the root"))?;
                let source =
                    resolve_dir(&self.root, &link_components, false, &shown)?.join(link_name);
                match lstat(&source)? {
                    Some(m) if m.is_dir() => {
                        return Err(unsafe_entry(&shown, "hard link to a directory"));
                    }
                    Some(_) => fs_err::hard_link(&source, &target)?,
                    None => return Err(unsafe_entry(&shown, "hard link to a missing entry")),
                }
                self.created.insert(target);
                return Ok(()); // a hard link shares its target's metadata
            }
            EntryType::Char | EntryType::Block => {
                if !self.options.allow_devices {
                    return Err(unsafe_entry(&shown, "device nodes are not allowed"));
                }
                let major = entry.header().device_major()?.unwrap_or(0);
                let minor = entry.header().device_minor()?.unwrap_or(0);
                let flag = if kind == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &target,
                    flag,
                    Mode::from_bits_truncate(0o600),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| {
                    io::Error::other(format!("creating device {}: {e}", target.display()))
                })?;
            }
            EntryType::Fifo => {
                nix::unistd::mkfifo(&target, Mode::from_bits_truncate(0o600)).map_err(|e| {
                    io::Error::other(format!("creating fifo {}: {e}", target.display()))
                })?;
            }
            _ => return Err(unsafe_entry(&shown, "unsupported entry type")),
        }
        self.metadata(entry, &target, kind)?;
        self.created.insert(target);
        Ok(())
    }

    fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        kind: EntryType,
    ) -> Result<(), Error> {
        let header = entry.header();
        if self.options.same_owner {
            let uid = header.uid()?;
            let gid = header.gid()?;
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                target,
                Some(nix::unistd::Uid::from_raw(
                    u32::try_from(uid).unwrap_or(u32::MAX),
                )),
                Some(nix::unistd::Gid::from_raw(
                    u32::try_from(gid).unwrap_or(u32::MAX),
                )),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| {
                io::Error::other(format!("changing owner of {}: {e}", target.display()))
            })?;
        }
        if kind != EntryType::Symlink {
            let mode = header.mode()? & 0o7777;
            fs_err::set_permissions(target, std::fs::Permissions::from_mode(mode))?;
        }
        let mtime = FileTime::from_unix_time(i64::try_from(header.mtime()?).unwrap_or(0), 0);
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                // The name's bytes, whatever they are (Go's archive/tar writes them as given).
                if let Some(attr) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    let attr = OsStr::from_bytes(attr);
                    if let Err(e) = xattr::set(target, attr, ext.value_bytes()) {
                        tracing::warn!(path = %target.display(), attr = %Path::new(attr).display(), error = %e, "xattr not restored");
                    }
                }
            }
        }
        if kind == EntryType::Directory {
            self.dir_times.push((target.to_owned(), mtime));
        } else {
            filetime::set_symlink_file_times(target, mtime, mtime).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("setting times of {}: {e}", target.display()),
                )
            })?;
        }
        Ok(())
    }

    fn whiteout(&mut self, hidden: &Path, mtime: FileTime) -> Result<(), Error> {
        match self.options.whiteouts {
            WhiteoutMode::Apply => remove_any(hidden)?,
            WhiteoutMode::Overlay => {
                remove_any(hidden)?;
                nix::sys::stat::mknod(hidden, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| {
                    io::Error::other(format!("creating whiteout {}: {e}", hidden.display()))
                })?;
                filetime::set_symlink_file_times(hidden, mtime, mtime).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("setting times of {}: {e}", hidden.display()),
                    )
                })?;
                self.created.insert(hidden.to_owned());
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &Path) -> Result<(), Error> {
        match self.options.whiteouts {
            WhiteoutMode::Apply => self.purge(dir)?,
            WhiteoutMode::Overlay => {
                xattr::set(dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(|e| {
                    io::Error::new(e.kind(), format!("marking {} opaque: {e}", dir.display()))
                })?;
            }
        }
        Ok(())
    }

    /// Removes everything below `dir` that this layer did not create.
    fn purge(&self, dir: &Path) -> io::Result<()> {
        for child in fs_err::read_dir(dir)? {
            let path = child?.path();
            if !self.created.contains(&path) {
                remove_any(&path)?;
            } else if lstat(&path)?.is_some_and(|m| m.is_dir()) {
                self.purge(&path)?;
            }
        }
        Ok(())
    }
}
