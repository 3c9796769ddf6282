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

mod filter;
mod pattern;
mod scoped;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use kiln_llb::pb;

use kiln_llb::ModeSet;
pub(crate) use pattern::{PathPattern, segments as path_segments};

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

type Result<T> = std::result::Result<T, FileError>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

pub use kiln_fsutil::Owner;

/// Resolves a `ChownOpt`; names are looked up in `/etc/passwd` and `/etc/group` of the root
/// that `root_of(input)` gives (an action input index).
pub fn resolve_owner(
    opt: Option<&pb::ChownOpt>,
    root_of: impl Fn(i64) -> Option<PathBuf>,
) -> Result<Option<Owner>> {
    let Some(opt) = opt else { return Ok(None) };
    let id = |user: Option<&pb::UserOpt>, group: bool| -> Result<Option<u32>> {
        let Some(user) = user.and_then(|u| u.user.as_ref()) else {
            return Ok(None);
        };
        match user {
            pb::user_opt::User::ById(id) => Ok(Some(*id)),
            pb::user_opt::User::ByName(named) => {
                let (file, kind) = if group {
                    ("group", "group")
                } else {
                    ("passwd", "user")
                };
                if let Ok(id) = named.name.parse::<u32>() {
                    return Ok(Some(id));
                }
                let root =
                    root_of(named.input).ok_or(FileError::MissingInput { input: named.input })?;
                lookup_id(&root, file, &named.name)
                    .map(Some)
                    .ok_or_else(|| FileError::UnknownOwner {
                        kind,
                        name: named.name.clone(),
                        file,
                    })
            }
        }
    };
    let uid = id(opt.user.as_ref(), false)?;
    let gid = id(opt.group.as_ref(), true)?;
    // A user without a group gets the user's primary group, as `chown user` does in BuildKit.
    let gid = match (uid, gid, opt.user.as_ref().and_then(|u| u.user.as_ref())) {
        (_, Some(gid), _) => gid,
        (Some(_), None, Some(pb::user_opt::User::ByName(named))) => root_of(named.input)
            .and_then(|root| primary_gid(&root, &named.name))
            .unwrap_or(0),
        (Some(uid), None, _) => uid,
        (None, None, _) => return Ok(None),
    };
    Ok(Some(Owner {
        uid: uid.unwrap_or(0),
        gid,
    }))
}

/// The third field of the line for `name` in `/etc/{file}` of `root`.
fn lookup_id(root: &Path, file: &str, name: &str) -> Option<u32> {
    passwd_fields(root, file, name).and_then(|f| f.get(2)?.parse().ok())
}

fn primary_gid(root: &Path, name: &str) -> Option<u32> {
    passwd_fields(root, "passwd", name).and_then(|f| f.get(3)?.parse().ok())
}

fn passwd_fields(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    let path = scoped::resolve(root, format!("/etc/{file}"), true).ok()?;
    let text = fs_err::read_to_string(path).ok()?;
    text.lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name))
}

/// A timestamp in Unix nanoseconds, `-1` (or any negative) for none.
fn timestamp(ns: i64) -> Option<FileTime> {
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
    let targets = if action.allow_wildcard && pattern::has_meta(shown.as_os_str().as_bytes()) {
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
fn expand(root: &Path, path: &Path) -> io::Result<Vec<PathBuf>> {
    let bytes = path.as_os_str().as_bytes();
    let end = bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let trimmed = &bytes[..end];
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/".as_slice(), &trimmed[1..]),
        Some(slash) => (&trimmed[..slash], &trimmed[slash + 1..]),
        None => (b"/".as_slice(), trimmed),
    };
    let dir = Path::new(OsStr::from_bytes(dir));
    let dirs = if pattern::has_meta(dir.as_os_str().as_bytes()) {
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
            .filter(|name| pattern::matches(base, name.as_bytes()))
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        out.extend(names.into_iter().map(|n| dir.join(n)));
    }
    Ok(out)
}

/// `copy` from `src_root` into `dest_root`.
pub fn copy(
    src_root: &Path,
    dest_root: &Path,
    action: &pb::FileActionCopy,
    owner: Option<Owner>,
) -> Result<()> {
    copy_with(
        src_root,
        dest_root,
        CopyPaths::of(action),
        action,
        owner,
        DeviceNodes::Create,
    )
}

/// The container paths a copy reads and writes: an action's own (UTF-8, as LLB strings are),
/// or paths a directory named (any bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyPaths<'a> {
    /// The source path, wildcards expanded when the action allows them.
    pub(crate) src: &'a Path,
    /// The destination path (a trailing `/` or `/.` names a directory).
    pub(crate) dest: &'a Path,
}

impl<'a> CopyPaths<'a> {
    /// The action's `src` and `dest`.
    pub(crate) fn of(action: &'a pb::FileActionCopy) -> Self {
        Self {
            src: Path::new(&action.src),
            dest: Path::new(&action.dest),
        }
    }
}

pub(crate) use kiln_fsutil::DeviceNodes;

/// [`copy`] of `paths` (which stand for the action's own `src` and `dest`), choosing what
/// happens to device nodes.
pub(crate) fn copy_with(
    src_root: &Path,
    dest_root: &Path,
    paths: CopyPaths<'_>,
    action: &pb::FileActionCopy,
    owner: Option<Owner>,
    devices: DeviceNodes,
) -> Result<()> {
    let src = paths.src;
    let mode_set = if action.mode_str.is_empty() {
        None
    } else {
        Some(
            ModeSet::parse(&action.mode_str).map_err(|_| FileError::InvalidMode {
                mode: action.mode_str.clone(),
            })?,
        )
    };
    // `COPY --parents` names paths that must exist even though include patterns select what
    // is copied (BuildKit checks them when it checksums the source).
    for required in &action.required_paths {
        let required = Path::new(required);
        let p = scoped::resolve(src_root, required, true).map_err(io_err("copy", required))?;
        if scoped::lstat(&p)
            .map_err(io_err("copy", required))?
            .is_none()
        {
            return Err(FileError::NotFound {
                path: required.to_owned(),
            });
        }
    }
    let sources = if action.allow_wildcard && pattern::has_meta(src.as_os_str().as_bytes()) {
        let found = expand(src_root, src).map_err(io_err("copy", src))?;
        if found.is_empty() && !action.allow_empty_wildcard {
            return Err(FileError::NotFound {
                path: src.to_owned(),
            });
        }
        found
            .into_iter()
            .map(|p| {
                if action.follow_symlink {
                    scoped::resolve(src_root, p.strip_prefix(src_root).unwrap_or(&p), true)
                } else {
                    Ok(p)
                }
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(io_err("copy", src))?
    } else {
        let p =
            scoped::resolve(src_root, src, action.follow_symlink).map_err(io_err("copy", src))?;
        if scoped::lstat(&p).map_err(io_err("copy", src))?.is_none() {
            return Err(FileError::NotFound {
                path: src.to_owned(),
            });
        }
        vec![p]
    };

    let dest_shown = paths.dest;
    let dest = scoped::resolve(dest_root, dest_shown, true).map_err(io_err("copy", dest_shown))?;
    let dest_bytes = dest_shown.as_os_str().as_bytes();
    let dest_is_dir_path = dest_bytes.ends_with(b"/") || dest_bytes.ends_with(b"/.");
    if action.create_dest_path {
        let ensure = if dest_is_dir_path {
            Some(dest.as_path())
        } else {
            dest.parent()
        };
        if let Some(ensure) = ensure {
            mkdir_all(dest_root, ensure, owner).map_err(io_err("copy", dest_shown))?;
        }
    }

    let filter = filter::Filter::new(&action.include_patterns, &action.exclude_patterns);
    let mut links = HashMap::new();
    for source in &sources {
        let meta = fs_err::symlink_metadata(source).map_err(io_err("copy", src))?;
        // Include and exclude patterns are relative to each copied directory.
        let selected = match &filter {
            Some(f) if meta.is_dir() => {
                Some(filter::select(source, f).map_err(io_err("copy", src))?)
            }
            _ => None,
        };
        if action.attempt_unpack_docker_compatibility
            && meta.is_file()
            && unpack_archive(source, dest_root, &dest, owner)
                .map_err(io_err("copy", dest_shown))?
        {
            continue;
        }
        let dest_meta = fs_err::metadata(&dest).ok();
        let into_dir = match &dest_meta {
            Some(d) if d.is_dir() => !(meta.is_dir() && action.dir_copy_contents),
            _ => false,
        };
        // The source's root has no name of its own: copying `/` into a directory copies its
        // contents there (Go's `filepath.Base("/")` joined to the destination).
        let target = if into_dir && source.as_path() != src_root {
            dest.join(source.file_name().unwrap_or_default())
        } else {
            dest.clone()
        };
        let fixed_mode =
            (action.mode >= 0 && mode_set.is_none()).then_some(action.mode as u32 & 0o7777);
        let mode = |own: u32, is_dir: bool| match (&mode_set, fixed_mode) {
            (Some(set), _) => set.apply(own, is_dir),
            (None, Some(mode)) => mode,
            (None, None) => own,
        };
        let copier = kiln_fsutil::TreeCopy {
            owner,
            mode: (mode_set.is_some() || fixed_mode.is_some())
                .then_some(&mode as kiln_fsutil::ModeFn<'_>),
            selected: selected.as_ref(),
            time: timestamp(action.timestamp),
            replace_dirs: action.always_replace_existing_dest_paths,
            devices,
        };
        if meta.is_dir() && action.dir_copy_contents {
            // The contents go into the target; the target directory itself is not copied: a
            // missing one is made as mkdir makes it, an existing one keeps its owner and mode.
            let err = io_err("copy", dest_shown);
            match scoped::lstat(&target).map_err(err)? {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs_err::remove_file(&target).map_err(io_err("copy", dest_shown))?;
                    mkdir_all(dest_root, &target, owner).map_err(io_err("copy", dest_shown))?;
                }
                None => mkdir_all(dest_root, &target, owner).map_err(io_err("copy", dest_shown))?,
            }
            copier
                .copy_contents(source, &target, &mut links)
                .map_err(io_err("copy", dest_shown))?;
            continue;
        }
        copier
            .copy_tree(source, &target, Path::new(""), &mut links)
            .map_err(io_err("copy", dest_shown))?;
    }
    Ok(())
}

/// Whether a 512-byte block is a tar header: its checksum field matches its bytes.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == want
}

/// `ADD`'s archive extraction: when `src` is a tar archive (plain, gzip or zstd), unpacks it
/// into the directory `dest` (made if missing) and answers `true`; answers `false` for any
/// other file, which is then copied as it is. With an owner, every unpacked entry gets it;
/// otherwise the archive's owners are kept.
fn unpack_archive(
    src: &Path,
    dest_root: &Path,
    dest: &Path,
    owner: Option<Owner>,
) -> io::Result<bool> {
    use std::io::Read as _;
    let file = fs_err::File::open(src)?;
    let Ok(mut reader) = kiln_cache::decompress(file) else {
        return Ok(false);
    };
    let mut head = vec![0u8; 512];
    if reader.read_exact(&mut head).is_err() || !is_tar_header(&head) {
        return Ok(false);
    }
    match scoped::lstat(dest)? {
        Some(m) if m.is_dir() => {}
        Some(_) => {
            return Err(io::Error::other(format!(
                "cannot unpack an archive into {}: not a directory",
                dest.display()
            )));
        }
        None => mkdir_all(dest_root, dest, owner)?,
    }
    let mut archive = tar::Archive::new(io::Cursor::new(head).chain(reader));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(owner.is_none());
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(true);
    // Members resolve inside `dest` as if it were `/` (BuildKit extracts in a chroot of the
    // destination): links already there or made by earlier members are followed within it.
    let root = kiln_fsutil::Root::new(dest);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            continue; // a path climbing out of the destination: skipped, as tar does
        }
        let Some(name) = path.file_name().map(ToOwned::to_owned) else {
            continue; // the archive's root
        };
        let parent = root.resolve(path.parent().unwrap_or(Path::new("")), true)?;
        let parent = match parent.entry {
            Some(e) if e.metadata.is_dir() => e.host,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{}: a parent is not a directory", path.display()),
                ));
            }
            None => {
                let dir = parent.host_in(dest);
                mkdir_all(dest, &dir, owner)?;
                dir
            }
        };
        let target = parent.join(&name);
        // What is there is replaced, never followed (a directory stays for a directory).
        let kind = entry.header().entry_type();
        match scoped::lstat(&target)? {
            Some(m) if m.is_dir() && kind.is_dir() => {}
            Some(m) if m.is_dir() => fs_err::remove_dir_all(&target)?,
            Some(_) => fs_err::remove_file(&target)?,
            None => {}
        }
        if kind.is_hard_link() {
            let link = entry.link_name()?.ok_or_else(|| {
                io::Error::other(format!("{}: hard link without a target", path.display()))
            })?;
            let source = root.resolve(&*link, false)?;
            match source.entry {
                Some(e) if !e.metadata.is_dir() => fs_err::hard_link(&e.host, &target)?,
                _ => {
                    return Err(io::Error::other(format!(
                        "{}: hard link to {} outside the archive's files",
                        path.display(),
                        link.display()
                    )));
                }
            }
        } else {
            entry.unpack(&target)?;
        }
        if let Some(o) = owner {
            std::os::unix::fs::lchown(&target, Some(o.uid), Some(o.gid))?;
        }
    }
    Ok(true)
}

/// Creates `dir` and its missing parents below `root` with mode 0755 and the owner.
fn mkdir_all(root: &Path, dir: &Path, owner: Option<Owner>) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d == root || scoped::lstat(d)?.is_some() {
            break;
        }
        missing.push(d.to_owned());
        p = d.parent();
    }
    for d in missing.iter().rev() {
        fs_err::create_dir(d)?;
        fs_err::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        if let Some(o) = owner {
            std::os::unix::fs::lchown(d, Some(o.uid), Some(o.gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, symlink as ln};

    use super::*;

    #[test]
    fn archive_members_stay_inside_the_destination() {
        let host = tempfile::tempdir().unwrap();
        fs_err::write(host.path().join("secret"), "host").unwrap();
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("a.tar");
        {
            let mut b = tar::Builder::new(fs_err::File::create(&archive).unwrap());
            let mut entry = |path: &str, kind: tar::EntryType, link: Option<&Path>, data: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_size(data.len() as u64);
                if let Some(link) = link {
                    h.set_link_name(link).unwrap();
                }
                b.append_data(&mut h, path, data).unwrap();
            };
            entry("up", tar::EntryType::Symlink, Some(Path::new("/")), b"");
            entry("hostdir", tar::EntryType::Symlink, Some(host.path()), b"");
            // Written through the member links: they lead to the destination's own `/`.
            entry("up/through", tar::EntryType::Regular, None, b"inside");
            let secret = host.path().join("secret");
            let secret = secret.strip_prefix("/").unwrap().to_str().unwrap();
            entry("hostdir/written", tar::EntryType::Regular, None, b"x");
            entry(
                "hard",
                tar::EntryType::Link,
                Some(Path::new(&format!("/{secret}"))),
                b"",
            );
            b.finish().unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        let err = unpack_archive(&archive, root.path(), &dest, None).unwrap_err();
        assert!(err.to_string().contains("hard link"), "{err}");
        assert_eq!(
            fs_err::read_to_string(dest.join("through")).unwrap(),
            "inside"
        );
        // `hostdir` led to a missing directory inside the destination, made there.
        let inside = dest.join(host.path().strip_prefix("/").unwrap());
        assert_eq!(fs_err::read_to_string(inside.join("written")).unwrap(), "x");
        assert!(!host.path().join("written").exists());
        assert!(!dest.join("hard").exists());
        assert_eq!(
            fs_err::read_to_string(host.path().join("secret")).unwrap(),
            "host"
        );
    }

    fn tree() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs_err::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn copy_action(src: &str, dest: &str) -> pb::FileActionCopy {
        pb::FileActionCopy {
            src: src.into(),
            dest: dest.into(),
            mode: -1,
            follow_symlink: true,
            dir_copy_contents: true,
            create_dest_path: true,
            allow_wildcard: true,
            allow_empty_wildcard: true,
            timestamp: -1,
            ..Default::default()
        }
    }

    #[test]
    fn mkdir_with_parents_sets_mode_owner_and_time_on_new_dirs_only() {
        let root = tree();
        fs_err::create_dir(root.path().join("a")).unwrap();
        fs_err::set_permissions(
            root.path().join("a"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let action = pb::FileActionMkDir {
            path: "/a/b/c".into(),
            mode: 0o751,
            make_parents: true,
            owner: None,
            timestamp: 1_000_000_000 * 86_400,
        };
        mkdir(root.path(), &action, Some(Owner { uid: 12, gid: 34 })).unwrap();
        let c = root.path().join("a/b/c");
        assert_eq!(mode(&c), 0o751);
        assert_eq!(mode(&root.path().join("a/b")), 0o751);
        assert_eq!(
            mode(&root.path().join("a")),
            0o700,
            "an existing parent is untouched"
        );
        let meta = fs_err::metadata(&c).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12, 34));
        assert_eq!(meta.mtime(), 86_400);
        assert_eq!(
            fs_err::metadata(root.path().join("a/b")).unwrap().mtime(),
            86_400
        );
        // Without parents, an existing directory is fine and a missing parent is an error.
        let again = pb::FileActionMkDir {
            make_parents: false,
            ..action.clone()
        };
        mkdir(root.path(), &again, None).unwrap();
        let orphan = pb::FileActionMkDir {
            path: "/x/y".into(),
            ..again
        };
        assert!(matches!(
            mkdir(root.path(), &orphan, None),
            Err(FileError::Io { .. })
        ));
    }

    #[test]
    fn mkfile_writes_data_and_mode() {
        let root = tree();
        let action = pb::FileActionMkFile {
            path: "/f".into(),
            mode: 0o640,
            data: b"hello\n".to_vec(),
            owner: None,
            timestamp: -1,
        };
        mkfile(root.path(), &action, None).unwrap();
        assert_eq!(fs_err::read(root.path().join("f")).unwrap(), b"hello\n");
        assert_eq!(mode(&root.path().join("f")), 0o640);
    }

    #[test]
    fn paths_through_links_stay_inside_the_root() {
        let outside = tree();
        let root = tree();
        ln(outside.path(), root.path().join("escape")).unwrap();
        ln("/../../..", root.path().join("up")).unwrap();
        let action = pb::FileActionMkFile {
            path: "/up/escape-file".into(),
            mode: 0o644,
            data: b"x".to_vec(),
            owner: None,
            timestamp: -1,
        };
        mkfile(root.path(), &action, None).unwrap();
        assert!(root.path().join("escape-file").is_file());
        // An absolute link to a host directory is resolved inside the root, not on the host.
        let action = pb::FileActionMkDir {
            path: "/escape/sub".into(),
            mode: 0o755,
            make_parents: true,
            owner: None,
            timestamp: -1,
        };
        mkdir(root.path(), &action, None).unwrap();
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn rm_removes_links_not_their_targets_and_reports_missing() {
        let root = tree();
        fs_err::create_dir(root.path().join("keep")).unwrap();
        fs_err::write(root.path().join("keep/file"), "k").unwrap();
        ln("/keep", root.path().join("link")).unwrap();
        for name in ["a.txt", "b.txt", "c.log"] {
            fs_err::write(root.path().join(name), name).unwrap();
        }
        let rm_action = |path: &str, wildcard: bool, allow_not_found: bool| pb::FileActionRm {
            path: path.into(),
            allow_not_found,
            allow_wildcard: wildcard,
        };
        rm(root.path(), &rm_action("/link", false, false)).unwrap();
        assert!(root.path().join("keep/file").is_file());
        assert!(scoped::lstat(&root.path().join("link")).unwrap().is_none());
        rm(root.path(), &rm_action("/*.txt", true, false)).unwrap();
        assert!(!root.path().join("a.txt").exists() && !root.path().join("b.txt").exists());
        assert!(root.path().join("c.log").exists());
        let err = rm(root.path(), &rm_action("/nope", false, false)).unwrap_err();
        assert_eq!(err.to_string(), "\"/nope\": not found");
        rm(root.path(), &rm_action("/nope", false, true)).unwrap();
        rm(root.path(), &rm_action("/keep", false, false)).unwrap();
        assert!(!root.path().join("keep").exists());
    }

    #[test]
    fn wildcards_copy_and_remove_names_that_are_not_utf8_as_their_bytes() {
        let name = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
        let src = tree();
        let s = src.path();
        fs_err::write(s.join(name(b"caf\xe9")), "e9").unwrap();
        fs_err::write(s.join(name(b"caf\xe8")), "e8").unwrap();
        fs_err::create_dir(s.join(name(b"d\xff"))).unwrap();
        fs_err::write(s.join(name(b"d\xff/in")), "in").unwrap();
        ln(name(b"d\xff"), s.join("link")).unwrap();
        let dest = tree();
        let d = dest.path();
        copy(s, d, &copy_action("/caf*", "/out/"), None).unwrap();
        assert_eq!(fs_err::read(d.join(name(b"out/caf\xe9"))).unwrap(), b"e9");
        assert_eq!(fs_err::read(d.join(name(b"out/caf\xe8"))).unwrap(), b"e8");
        // A link matched by a wildcard and followed leads to its target's bytes.
        copy(s, d, &copy_action("/lin?", "/through/"), None).unwrap();
        assert_eq!(fs_err::read(d.join("through/in")).unwrap(), b"in");
        let rm_action = pb::FileActionRm {
            path: "/out/caf?".into(),
            allow_not_found: false,
            allow_wildcard: true,
        };
        rm(d, &rm_action).unwrap();
        assert_eq!(fs_err::read_dir(d.join("out")).unwrap().count(), 0);
        assert_eq!(
            resolve_in_root(s, Path::new("link")).unwrap(),
            Some(name(b"d\xff"))
        );
    }

    #[test]
    fn copy_follows_docker_destination_rules() {
        let src = tree();
        let s = src.path();
        fs_err::create_dir_all(s.join("dir/sub")).unwrap();
        fs_err::write(s.join("dir/one"), "1").unwrap();
        fs_err::write(s.join("dir/sub/two"), "2").unwrap();
        fs_err::write(s.join("file"), "f").unwrap();
        fs_err::set_permissions(s.join("file"), std::fs::Permissions::from_mode(0o741)).unwrap();
        ln("file", s.join("link")).unwrap();
        let dest = tree();
        let d = dest.path();

        // A file into a path ending in `/`: created as a directory, the file inside it.
        copy(s, d, &copy_action("/file", "/out/"), None).unwrap();
        assert_eq!(fs_err::read_to_string(d.join("out/file")).unwrap(), "f");
        assert_eq!(mode(&d.join("out/file")), 0o741);
        // A file onto a new name.
        copy(s, d, &copy_action("/file", "/renamed"), None).unwrap();
        assert_eq!(fs_err::read_to_string(d.join("renamed")).unwrap(), "f");
        // A directory's contents (dirCopyContents), merged into an existing directory.
        copy(s, d, &copy_action("/dir", "/out"), None).unwrap();
        assert_eq!(fs_err::read_to_string(d.join("out/sub/two")).unwrap(), "2");
        assert_eq!(fs_err::read_to_string(d.join("out/one")).unwrap(), "1");
        // Without dirCopyContents, the directory itself goes into an existing directory.
        let whole = pb::FileActionCopy {
            dir_copy_contents: false,
            ..copy_action("/dir", "/out")
        };
        copy(s, d, &whole, None).unwrap();
        assert_eq!(
            fs_err::read_to_string(d.join("out/dir/sub/two")).unwrap(),
            "2"
        );
        // A followed link copies the target's content under the link's name.
        copy(s, d, &copy_action("/link", "/followed"), None).unwrap();
        assert!(
            fs_err::symlink_metadata(d.join("followed"))
                .unwrap()
                .is_file()
        );
        let kept = pb::FileActionCopy {
            follow_symlink: false,
            ..copy_action("/link", "/kept")
        };
        copy(s, d, &kept, None).unwrap();
        assert_eq!(
            fs_err::read_link(d.join("kept")).unwrap(),
            Path::new("file")
        );
    }

    #[test]
    fn copy_wildcards_owner_mode_and_time() {
        let src = tree();
        let s = src.path();
        for name in ["a.txt", "b.txt", "c.md"] {
            fs_err::write(s.join(name), name).unwrap();
        }
        let dest = tree();
        let d = dest.path();
        let action = pb::FileActionCopy {
            mode: 0o600,
            timestamp: 5_000_000_000,
            ..copy_action("/*.txt", "/t/")
        };
        copy(s, d, &action, Some(Owner { uid: 7, gid: 8 })).unwrap();
        let mut names: Vec<_> = fs_err::read_dir(d.join("t"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "b.txt"]);
        let meta = fs_err::metadata(d.join("t/a.txt")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777, meta.mtime()),
            (7, 8, 0o600, 5)
        );
        // No match: fine when empty wildcards are allowed, an error otherwise.
        copy(s, d, &copy_action("/*.none", "/t/"), None).unwrap();
        let strict = pb::FileActionCopy {
            allow_empty_wildcard: false,
            ..copy_action("/*.none", "/t/")
        };
        let err = copy(s, d, &strict, None).unwrap_err();
        assert_eq!(err.to_string(), "\"/*.none\": not found");
        let err = copy(s, d, &copy_action("/missing", "/t/"), None).unwrap_err();
        assert_eq!(err.to_string(), "\"/missing\": not found");
    }

    #[test]
    fn copy_symbolic_mode_applies_to_each_entry_own_mode() {
        let src = tree();
        let s = src.path();
        fs_err::create_dir(s.join("dir")).unwrap();
        fs_err::write(s.join("dir/plain"), "p").unwrap();
        fs_err::write(s.join("dir/tool"), "t").unwrap();
        let set = |p: &str, m: u32| {
            fs_err::set_permissions(s.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        set("dir/plain", 0o640);
        set("dir/tool", 0o750);
        set("dir", 0o700);
        let dest = tree();
        let d = dest.path();
        let action = pb::FileActionCopy {
            mode: 0,
            mode_str: "a+X,g-w,o+r".into(),
            ..copy_action("/dir", "/out")
        };
        copy(s, d, &action, None).unwrap();
        // X: execute only where some execute bit was set, and on directories.
        assert_eq!(mode(&d.join("out/plain")), 0o644);
        assert_eq!(mode(&d.join("out/tool")), 0o755);
        // The sources are untouched.
        assert_eq!(mode(&s.join("dir/tool")), 0o750);
        let bad = pb::FileActionCopy {
            mode_str: "u+q".into(),
            ..copy_action("/dir", "/bad")
        };
        let err = copy(s, d, &bad, None).unwrap_err();
        assert_eq!(err.to_string(), "invalid mode \"u+q\": invalid syntax");
        assert!(!d.join("bad").exists());
    }

    #[test]
    fn copy_of_the_root_into_a_directory_copies_its_contents() {
        let src = tree();
        let s = src.path();
        fs_err::write(s.join("top"), "t").unwrap();
        let dest = tree();
        let d = dest.path();
        let action = pb::FileActionCopy {
            dir_copy_contents: false,
            follow_symlink: false,
            allow_wildcard: false,
            ..copy_action("/", "/dst/")
        };
        copy(s, d, &action, None).unwrap();
        assert_eq!(fs_err::read_to_string(d.join("dst/top")).unwrap(), "t");
        let names: Vec<_> = fs_err::read_dir(d.join("dst"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["top"]);
    }

    #[test]
    fn copy_required_paths_must_exist() {
        let src = tree();
        let s = src.path();
        fs_err::create_dir_all(s.join("a/b/c")).unwrap();
        let dest = tree();
        let d = dest.path();
        let ok = pb::FileActionCopy {
            include_patterns: vec!["b/c".into()],
            required_paths: vec!["/a/b/c".into()],
            ..copy_action("/a", "/out/")
        };
        copy(s, d, &ok, None).unwrap();
        let missing = pb::FileActionCopy {
            required_paths: vec!["/a/b/nope".into()],
            ..copy_action("/a", "/other/")
        };
        let err = copy(s, d, &missing, None).unwrap_err();
        // BuildKit's wording: `"/a/b/nope": not found`.
        assert_eq!(err.to_string(), "\"/a/b/nope\": not found");
        assert!(!d.join("other").exists());
    }

    #[test]
    fn copy_keeps_hard_links_together() {
        let src = tree();
        let s = src.path();
        fs_err::create_dir(s.join("d")).unwrap();
        fs_err::write(s.join("d/a"), "same").unwrap();
        fs_err::hard_link(s.join("d/a"), s.join("d/b")).unwrap();
        let dest = tree();
        copy(s, dest.path(), &copy_action("/d", "/x"), None).unwrap();
        let a = fs_err::metadata(dest.path().join("x/a")).unwrap();
        let b = fs_err::metadata(dest.path().join("x/b")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.nlink(), 2);
    }

    #[test]
    fn owners_by_name_come_from_the_roots_passwd_and_group() {
        let root = tree();
        fs_err::create_dir(root.path().join("etc")).unwrap();
        fs_err::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs_err::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let by_name = |name: &str| pb::UserOpt {
            user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
                name: name.into(),
                input: 0,
            })),
        };
        let root_of = |i: i64| (i == 0).then(|| root.path().to_owned());
        let opt = pb::ChownOpt {
            user: Some(by_name("app")),
            group: None,
        };
        assert_eq!(
            resolve_owner(Some(&opt), root_of).unwrap(),
            Some(Owner {
                uid: 1000,
                gid: 1001
            })
        );
        let opt = pb::ChownOpt {
            user: Some(by_name("app")),
            group: Some(by_name("staff")),
        };
        assert_eq!(
            resolve_owner(Some(&opt), root_of).unwrap(),
            Some(Owner { uid: 1000, gid: 50 })
        );
        let opt = pb::ChownOpt {
            user: Some(by_name("ghost")),
            group: None,
        };
        let err = resolve_owner(Some(&opt), root_of).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user \"ghost\" in /etc/passwd"
        );
        let opt = pb::ChownOpt {
            user: Some(pb::UserOpt {
                user: Some(pb::user_opt::User::ById(33)),
            }),
            group: None,
        };
        assert_eq!(
            resolve_owner(Some(&opt), root_of).unwrap(),
            Some(Owner { uid: 33, gid: 33 })
        );
    }
}
