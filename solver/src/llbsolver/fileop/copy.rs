//! The copy action: wildcard sources, the target's choice, include/exclude filters, archives
//! unpacked, and the recursive copy that keeps modes, owners, times, links and xattrs.

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use kiln_llb::{ModeSet, pb};

use super::{FileError, Owner, Result, expand, filter, has_meta, io_err, scoped, timestamp};

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
    // Each source with the name it is copied under: the matched or given name, not the name
    // a followed symlink leads to (BuildKit's `filepath.Base(src)`).
    let sources: Vec<(PathBuf, PathBuf)> =
        if action.allow_wildcard && has_meta(src.as_os_str().as_bytes()) {
            let found = expand(src_root, src).map_err(io_err("copy", src))?;
            if found.is_empty() && !action.allow_empty_wildcard {
                return Err(FileError::NotFound {
                    path: src.to_owned(),
                });
            }
            found
                .into_iter()
                .map(|p| {
                    let followed = if action.follow_symlink {
                        scoped::resolve(src_root, p.strip_prefix(src_root).unwrap_or(&p), true)?
                    } else {
                        p.clone()
                    };
                    Ok((p, followed))
                })
                .collect::<io::Result<_>>()
                .map_err(io_err("copy", src))?
        } else {
            let p = scoped::resolve(src_root, src, action.follow_symlink)
                .map_err(io_err("copy", src))?;
            if scoped::lstat(&p).map_err(io_err("copy", src))?.is_none() {
                return Err(FileError::NotFound {
                    path: src.to_owned(),
                });
            }
            let named = if action.follow_symlink {
                scoped::resolve(src_root, src, false).map_err(io_err("copy", src))?
            } else {
                p.clone()
            };
            vec![(named, p)]
        };

    let fixed_mode =
        (action.mode >= 0 && mode_set.is_none()).then_some(action.mode as u32 & 0o7777);
    // Directories the copy creates get a numeric `--chmod` mode too, as in BuildKit (fsutil
    // since its fix for moby/buildkit#4945); a symbolic mode leaves them 0755.
    let dir_mode = fixed_mode.unwrap_or(0o755);
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
            mkdir_all(dest_root, ensure, dir_mode, owner).map_err(io_err("copy", dest_shown))?;
        }
    }

    let filter = filter::Filter::new(&action.include_patterns, &action.exclude_patterns);
    let mut links = HashMap::new();
    for (named, source) in &sources {
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
            dest.join(named.file_name().unwrap_or_default())
        } else {
            dest.clone()
        };
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
            link_from_layer: false,
        };
        if meta.is_dir() && action.dir_copy_contents {
            // The contents go into the target; the target directory itself is not copied: a
            // missing one is made as mkdir makes it, an existing one keeps its owner and mode.
            let err = io_err("copy", dest_shown);
            match scoped::lstat(&target).map_err(err)? {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs_err::remove_file(&target).map_err(io_err("copy", dest_shown))?;
                    mkdir_all(dest_root, &target, dir_mode, owner)
                        .map_err(io_err("copy", dest_shown))?;
                }
                None => mkdir_all(dest_root, &target, dir_mode, owner)
                    .map_err(io_err("copy", dest_shown))?,
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
pub(super) fn unpack_archive(
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
        None => mkdir_all(dest_root, dest, 0o755, owner)?,
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
                mkdir_all(dest, &dir, 0o755, owner)?;
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

/// Creates `dir` and its missing parents below `root` with `mode` and the owner.
fn mkdir_all(root: &Path, dir: &Path, mode: u32, owner: Option<Owner>) -> io::Result<()> {
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
        fs_err::set_permissions(d, std::fs::Permissions::from_mode(mode))?;
        if let Some(o) = owner {
            std::os::unix::fs::lchown(d, Some(o.uid), Some(o.gid))?;
        }
    }
    Ok(())
}

/// Whether `action` could link its files rather than copy them, judging by the action alone:
/// a directory's contents copied as they are (no wildcard, filter, mode or time), which is
/// what `COPY dir /dest` of a build context asks.
pub(crate) fn may_link(action: &pb::FileActionCopy) -> bool {
    action.dir_copy_contents
        && action.mode < 0
        && action.mode_str.is_empty()
        && timestamp(action.timestamp).is_none()
        && action.include_patterns.is_empty()
        && action.exclude_patterns.is_empty()
        && action.required_paths.is_empty()
        && !(action.allow_wildcard && has_meta(action.src.as_bytes()))
}

/// The first half of a copy that links ([`link_contents`]), in the destination's merged
/// view `dest_root`, with the source layer directory `layer` read in place. When the source
/// path is a directory and the destination does not exist yet, makes the destination as the
/// copy would (with its parents) and answers the source directory and the destination's
/// path relative to the root; otherwise answers `None` and changes nothing (the copy then
/// goes the usual way).
pub(crate) fn link_target(
    layer: &Path,
    dest_root: &Path,
    action: &pb::FileActionCopy,
    owner: Option<Owner>,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let src = Path::new(&action.src);
    let dest_shown = Path::new(&action.dest);
    let source = kiln_fsutil::Root::new(layer)
        .resolve(src, action.follow_symlink)
        .map_err(|e| io_err("copy", src)(e.into()))?;
    let Some(source) = source.entry.filter(|e| e.metadata.is_dir()) else {
        return Ok(None);
    };
    let dest = scoped::resolve(dest_root, dest_shown, true).map_err(io_err("copy", dest_shown))?;
    if scoped::lstat(&dest)
        .map_err(io_err("copy", dest_shown))?
        .is_some()
    {
        return Ok(None);
    }
    let Ok(rel) = dest.strip_prefix(dest_root).map(Path::to_owned) else {
        return Ok(None);
    };
    mkdir_all(dest_root, &dest, 0o755, owner).map_err(io_err("copy", dest_shown))?;
    Ok(Some((source.host, rel)))
}

/// The second half of a copy that links: the contents of the source layer's directory `src`
/// into the directory `rel` that [`link_target`] made, found in `upper`, the destination's
/// upper directory, now that no overlay is mounted on it. Files the copy leaves as they are
/// are hard links to the layer's (see [`kiln_fsutil::TreeCopy::link_from_layer`]).
pub(crate) fn link_contents(
    src: &Path,
    upper: &Path,
    rel: &Path,
    action: &pb::FileActionCopy,
    owner: Option<Owner>,
) -> Result<()> {
    let dest_shown = Path::new(&action.dest);
    let target = kiln_fsutil::Root::new(upper)
        .resolve(rel, false)
        .map_err(|e| io_err("copy", dest_shown)(e.into()))?;
    // The directory was just made through the overlay, so the upper holds it, at that path.
    let Some(target) = target
        .entry
        .filter(|e| e.metadata.is_dir() && target.path.strip_prefix("/") == Ok(rel))
    else {
        return Err(FileError::Io {
            action: "copy",
            path: dest_shown.to_owned(),
            source: io::Error::other("the new destination directory is not in the upper layer"),
        });
    };
    let copier = kiln_fsutil::TreeCopy {
        owner,
        replace_dirs: action.always_replace_existing_dest_paths,
        link_from_layer: true,
        ..kiln_fsutil::TreeCopy::default()
    };
    copier
        .copy_contents(src, &target.host, &mut HashMap::new())
        .map_err(io_err("copy", dest_shown))
}
