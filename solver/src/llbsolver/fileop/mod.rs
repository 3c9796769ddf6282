//! LLB file actions (mkdir, mkfile, rm, symlink, copy) applied in-process to directory trees.
//!
//! # Overview
//!
//! A `FileOp` is a chain of actions over snapshots. This module performs one action on host
//! directories that stand for container root filesystems: every container path is resolved
//! inside its root with the shared resolver (`kiln_fsutil::Root`, through `scoped`), so a
//! symbolic link in the tree can never make an action touch anything outside it. Semantics follow BuildKit's file op (`solver/llbsolver/file`)
//! and its copier:
//!
//! 1. `mkdir`: with `makeParents`, missing parents are created too and get the same mode, owner
//!    and time; without it an existing path is left alone.
//! 2. `mkfile`: writes the data, sets mode, owner and time.
//! 3. `rm`: removes a path (not following a final link), optionally by wildcard, optionally
//!    allowing it to be missing.
//! 4. `symlink`: creates `newpath` pointing at `oldpath`.
//! 5. `copy`: expands wildcards in the source, picks the target (into a directory when the
//!    destination ends in `/` or is one; a directory's contents with `dirCopyContents`),
//!    creates the destination's parents with `createDestPath`, and copies recursively,
//!    keeping modes, owners, times, links, hard links and xattrs unless overridden: `mode`
//!    sets the permissions, `modeStr` (`u+x,g-w`) changes each entry's own (see `modestr`).
//!    `required_paths` must exist in the source; include and exclude patterns narrow what is
//!    copied from a directory (see `filter`).

mod copy;
mod filter;
mod owner;
mod scoped;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use kiln_llb::pb;

pub use self::copy::copy;
pub(crate) use self::copy::{
    CopyPaths, DeviceNodes, copy_with, link_contents, link_target, may_link,
};
pub use self::owner::{Owner, resolve_owner};
pub use kiln_llb::filepath_match;
pub(crate) use kiln_llb::{PathPattern, has_meta, path_segments};

/// Where the path `path` below `root` leads when it is a symbolic link (followed inside
/// `root`), relative to `root`; `None` when it is not a link or leads nowhere inside.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> io::Result<Option<PathBuf>> {
    let plain = scoped::resolve(root, path, false)?;
    if !scoped::lstat(&plain)?.is_some_and(|m| m.file_type().is_symlink()) {
        return Ok(None);
    }
    let followed = scoped::resolve(root, path, true)?;
    Ok(followed
        .strip_prefix(root)
        .ok()
        .filter(|rel| !rel.as_os_str().is_empty())
        .map(Path::to_owned))
}

/// Why a file action failed. Paths are container paths, as the user wrote them (or as a
/// directory named them: any bytes).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A source path does not exist.
    #[error("{path:?}: not found")]
    NotFound {
        /// The container path.
        path: PathBuf,
    },
    /// A user or group name is not in the root's /etc/passwd or /etc/group.
    #[error("unable to find {kind} {name:?} in /etc/{file}")]
    UnknownOwner {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
        /// `passwd` or `group`.
        file: &'static str,
    },
    /// A copy's symbolic mode (`modeStr`) does not parse.
    #[error("invalid mode {mode:?}: invalid syntax")]
    InvalidMode {
        /// The mode string.
        mode: String,
    },
    /// A file action names an input it does not have.
    #[error("file action refers to input {input}, which does not exist")]
    MissingInput {
        /// The input index.
        input: i64,
    },
    /// An I/O error on a container path.
    #[error("{action} {}", path.display())]
    Io {
        /// The action.
        action: &'static str,
        /// The container path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

pub(super) type Result<T> = std::result::Result<T, FileError>;

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A timestamp in Unix nanoseconds, `-1` (or any negative) for none.
pub(super) fn timestamp(ns: i64) -> Option<FileTime> {
    (ns >= 0).then(|| {
        FileTime::from_unix_time(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    })
}

fn apply_meta(
    path: &Path,
    shown: &Path,
    owner: Option<Owner>,
    time: Option<FileTime>,
) -> Result<()> {
    if let Some(o) = owner {
        std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid))
            .map_err(io_err("chown", shown))?;
    }
    if let Some(t) = time {
        filetime::set_symlink_file_times(path, t, t).map_err(io_err("chtimes", shown))?;
    }
    Ok(())
}

fn set_mode(path: &Path, shown: &Path, mode: u32) -> Result<()> {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", shown))
}

/// `mkdir` in `root`.
pub fn mkdir(root: &Path, action: &pb::FileActionMkDir, owner: Option<Owner>) -> Result<()> {
    mkdir_path(
        root,
        Path::new(&action.path),
        (action.mode as u32) & 0o7777,
        action.make_parents,
        owner,
        timestamp(action.timestamp),
    )
}

/// [`mkdir`] of the container path `shown` (any bytes, where an action's path is UTF-8).
pub(crate) fn mkdir_path(
    root: &Path,
    shown: &Path,
    mode: u32,
    make_parents: bool,
    owner: Option<Owner>,
    time: Option<FileTime>,
) -> Result<()> {
    let path = scoped::resolve(root, shown, true).map_err(io_err("mkdir", shown))?;
    if make_parents {
        // Create from the top down, so each new directory gets mode, owner and time.
        let mut created = Vec::new();
        let mut missing = Some(path.as_path());
        while let Some(p) = missing {
            if p == root || scoped::lstat(p).map_err(io_err("mkdir", shown))?.is_some() {
                break;
            }
            created.push(p.to_owned());
            missing = p.parent();
        }
        for dir in created.iter().rev() {
            fs_err::create_dir(dir).map_err(io_err("mkdir", shown))?;
            set_mode(dir, shown, mode)?;
            apply_meta(dir, shown, owner, time)?;
        }
        // Parents' times change as entries are added: set the new ones again, top down.
        if time.is_some() {
            for dir in created.iter().rev() {
                apply_meta(dir, shown, None, time)?;
            }
        }
        return Ok(());
    }
    match fs_err::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err("mkdir", shown)(e)),
    }
    set_mode(&path, shown, mode)?;
    apply_meta(&path, shown, owner, time)
}

/// `mkfile` in `root`.
pub fn mkfile(root: &Path, action: &pb::FileActionMkFile, owner: Option<Owner>) -> Result<()> {
    let shown = Path::new(&action.path);
    let path = scoped::resolve(root, shown, true).map_err(io_err("mkfile", shown))?;
    fs_err::write(&path, &action.data).map_err(io_err("mkfile", shown))?;
    set_mode(&path, shown, (action.mode as u32) & 0o7777)?;
    apply_meta(&path, shown, owner, timestamp(action.timestamp))
}

/// `symlink` in `root`.
pub fn symlink(root: &Path, action: &pb::FileActionSymlink, owner: Option<Owner>) -> Result<()> {
    let shown = Path::new(&action.newpath);
    let path = scoped::resolve(root, shown, false).map_err(io_err("symlink", shown))?;
    std::os::unix::fs::symlink(&action.oldpath, &path).map_err(io_err("symlink", shown))?;
    apply_meta(&path, shown, owner, timestamp(action.timestamp))
}

/// `rm` in `root`.
pub fn rm(root: &Path, action: &pb::FileActionRm) -> Result<()> {
    let shown = Path::new(&action.path);
    let targets = if action.allow_wildcard && has_meta(shown.as_os_str().as_bytes()) {
        expand(root, shown).map_err(io_err("rm", shown))?
    } else {
        vec![scoped::resolve(root, shown, false).map_err(io_err("rm", shown))?]
    };
    if targets.is_empty() && !action.allow_not_found {
        return Err(FileError::NotFound {
            path: shown.to_owned(),
        });
    }
    for target in targets {
        match scoped::lstat(&target).map_err(io_err("rm", shown))? {
            None if action.allow_not_found => {}
            None => {
                return Err(FileError::NotFound {
                    path: shown.to_owned(),
                });
            }
            Some(m) if m.is_dir() => {
                fs_err::remove_dir_all(&target).map_err(io_err("rm", shown))?
            }
            Some(_) => fs_err::remove_file(&target).map_err(io_err("rm", shown))?,
        }
    }
    Ok(())
}

/// Expands a wildcard container path in `root`: the directory part is resolved, the last part
/// is matched against its entries. Results are sorted by name bytes, as Go's `filepath.Glob`
/// returns them.
pub(super) fn expand(root: &Path, path: &Path) -> io::Result<Vec<PathBuf>> {
    let bytes = path.as_os_str().as_bytes();
    let end = bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let trimmed = &bytes[..end];
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/".as_slice(), &trimmed[1..]),
        Some(slash) => (&trimmed[..slash], &trimmed[slash + 1..]),
        None => (b"/".as_slice(), trimmed),
    };
    let dir = Path::new(OsStr::from_bytes(dir));
    let dirs = if has_meta(dir.as_os_str().as_bytes()) {
        expand(root, dir)?
    } else {
        vec![scoped::resolve(root, dir, true)?]
    };
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|name| filepath_match(base, name.as_bytes()))
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        out.extend(names.into_iter().map(|n| dir.join(n)));
    }
    Ok(out)
}
