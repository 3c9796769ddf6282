//! Resolving a container path inside a root made of layer directories.
//!
//! # Overview
//!
//! A [`Root`] is what a build sees as `/`: one plain directory (a build context, a file
//! operation's tree) or a stack of overlayfs layer directories, topmost first (a snapshot, an
//! image). [`Root::resolve`] walks a container path over it the way the kernel's
//! `openat2(RESOLVE_IN_ROOT)` walks a mounted overlay of those layers:
//!
//! 1. The path is split on `/`; `.` stays in place, `..` goes up one resolved directory and
//!    stops at the root.
//! 2. Each name is looked up in the layers that make up the current directory, top down; the
//!    first layer holding it wins. In a layered root a whiteout (a 0/0 character device, or an
//!    OCI `.wh.NAME` beside it) hides the name and every lower layer's entry, and the OCI
//!    markers themselves are invisible.
//! 3. A directory merges with the directories of the same path in lower layers, down to the
//!    first lower layer where the path is missing-but-hidden, not a directory, or to an opaque
//!    directory (see [`crate::overlay::is_opaque`]). The merged list is what
//!    [`Entry::layers`] returns, so a directory of a layered root can be mounted as an overlay
//!    of exactly those directories.
//! 4. A symbolic link (the last component only when asked) is replaced by its target: an
//!    absolute target starts again at the root, `..` in it stops at the root, and after 40
//!    links the walk fails with [`Error::TooManyLinks`].
//! 5. A missing name ends the existing part: the result has no entry, and its path is where
//!    the entry would be created. The walk goes on below it (a later `..` may climb back to
//!    existing directories and links), but a loop or a file met after a missing name is
//!    just "missing" too, as the kernel stops at the first missing directory with `ENOENT`.
//!    The resolved names are only ever real directories or missing names, so creating the
//!    result's path below the root's top layer never follows a link.
//!
//! Only real directories of the layers are ever used as parents on the host, so no link in a
//! tree can send a lookup to a host file. Resolution is a snapshot in time: a tree that
//! someone changes concurrently must be reopened with `O_NOFOLLOW` (or `openat2` with
//! `RESOLVE_IN_ROOT`) by whoever acts on the result.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt as _;

use crate::error::Error;
use crate::overlay;

/// The kernel's limit on symbolic links followed in one lookup (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// A root file system on the host: one plain directory, or overlayfs layers topmost first.
#[derive(Debug, Clone)]
pub struct Root {
    layers: Vec<PathBuf>,
    overlay: bool,
    /// With [`Root::remembering`], the host answers already asked for, shared by clones.
    memo: Option<std::sync::Arc<std::sync::Mutex<Memo>>>,
}

/// The host's answers a [`Root`] over layers that do not change keeps: each layer directory's
/// lookups and opaque markers, and the root's layers. A deep stack of layers asks the same
/// questions for every path (`/etc/passwd`, `/etc/group` and the mount points each look up
/// `etc` or their first name in every layer), so without it the cost of resolving a few paths
/// grows with the number of layers several times over.
#[derive(Debug, Default)]
struct Memo {
    /// The names in small layer directories (`None`: too many to keep, or unreadable), so
    /// that a name missing from most layers costs one listing per layer, not a `lstat` of the
    /// name and of its whiteout in each.
    listings: std::collections::HashMap<PathBuf, Option<std::collections::HashSet<OsString>>>,
    lookups: std::collections::HashMap<PathBuf, Lookup>,
    opaque: std::collections::HashMap<PathBuf, bool>,
    root_layers: Option<Vec<usize>>,
}

/// Where a resolved path is on the host.
#[derive(Debug)]
pub struct Entry {
    /// The entry in the topmost layer that holds it.
    pub host: PathBuf,
    /// Its `lstat` (a final symbolic link that was not followed is the link itself).
    pub metadata: Metadata,
    /// For a directory, the layer directories that merge into it, topmost first; for anything
    /// else, `host` alone.
    pub layers: Vec<PathBuf>,
}

/// The outcome of [`Root::resolve`].
#[derive(Debug)]
pub struct Resolved {
    /// The absolute container path, every followed link replaced by its target.
    pub path: PathBuf,
    /// The entry on the host; `None` when the path does not exist.
    pub entry: Option<Entry>,
    /// How many leading components of `path` exist (all of them when `entry` is set).
    pub existing: usize,
}

impl Resolved {
    /// `path` without its leading `/` (empty for the root itself).
    pub fn relative(&self) -> &Path {
        self.path.strip_prefix("/").unwrap_or(&self.path)
    }

    /// `path` placed below the host directory `dir`: where to create it in a writable layer.
    pub fn host_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.relative())
    }
}

/// One layer's answer for a name.
#[derive(Debug, Clone)]
enum Lookup {
    Missing,
    WhitedOut,
    Present(Metadata),
}

/// Splits a path (or a link target) into its names, `.` and `..` included; a trailing `/`
/// becomes a trailing `.` so that the name before it must be a directory (as in the kernel).
fn split(path: &OsStr) -> Vec<OsString> {
    let bytes = path.as_bytes();
    let mut out: Vec<OsString> = bytes
        .split(|b| *b == b'/')
        .filter(|part| !part.is_empty())
        .map(|part| OsStr::from_bytes(part).to_owned())
        .collect();
    if bytes.ends_with(b"/") && !out.is_empty() {
        out.push(OsString::from("."));
    }
    out
}

fn join(base: &Path, names: &[OsString]) -> PathBuf {
    let mut out = base.to_owned();
    out.extend(names);
    out
}

impl Root {
    /// A plain directory: no overlay markers are interpreted (a file named `.wh.x` is a file).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            layers: vec![dir.into()],
            overlay: false,
            memo: None,
        }
    }

    /// Overlay layer directories, topmost first (one layer is a snapshot of its own).
    pub fn layered(layers: Vec<PathBuf>) -> Self {
        Self {
            layers,
            overlay: true,
            memo: None,
        }
    }

    /// This root, remembering what it learns of the host: each directory entry, opaque marker
    /// and the root's layers are read once, however many paths are resolved. Only for layers
    /// that nothing changes while this root (or a clone) is used, such as committed snapshots
    /// and a container's root before it starts.
    #[must_use]
    pub fn remembering(mut self) -> Self {
        self.memo = Some(std::sync::Arc::default());
        self
    }

    /// The memo's answer for `key`, or `ask`'s, kept.
    fn remembered<K, V: Clone>(
        &self,
        table: impl Fn(&mut Memo) -> &mut std::collections::HashMap<K, V>,
        key: K,
        ask: impl FnOnce(&K) -> io::Result<V>,
    ) -> io::Result<V>
    where
        K: std::hash::Hash + Eq,
    {
        let Some(memo) = &self.memo else {
            return ask(&key);
        };
        if let Some(value) = table(&mut memo.lock().unwrap_or_else(|e| e.into_inner())).get(&key) {
            return Ok(value.clone());
        }
        let value = ask(&key)?;
        table(&mut memo.lock().unwrap_or_else(|e| e.into_inner())).insert(key, value.clone());
        Ok(value)
    }

    /// The layer directories, topmost first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    fn lookup(&self, parent: &Path, name: &OsStr) -> io::Result<Lookup> {
        if self.memo.is_none() {
            return self.ask_lookup(parent, name);
        }
        let listing = self.remembered(
            |m| &mut m.listings,
            parent.to_owned(),
            |dir| Ok(small_listing(dir)),
        )?;
        if let Some(names) = listing {
            if self.overlay && names.contains(overlay::oci_whiteout_name(name).as_os_str()) {
                return self.ask_lookup(parent, name);
            }
            if !names.contains(name) {
                return Ok(Lookup::Missing);
            }
        }
        self.remembered(
            |m| &mut m.lookups,
            parent.join(name),
            |_| self.ask_lookup(parent, name),
        )
    }

    fn ask_lookup(&self, parent: &Path, name: &OsStr) -> io::Result<Lookup> {
        if self.overlay {
            if overlay::is_oci_marker(name) {
                return Ok(Lookup::Missing);
            }
            if lstat(&parent.join(overlay::oci_whiteout_name(name)))?.is_some() {
                return Ok(Lookup::WhitedOut);
            }
        }
        Ok(match lstat(&parent.join(name))? {
            None => Lookup::Missing,
            Some(meta) if self.overlay && overlay::is_whiteout(&meta) => Lookup::WhitedOut,
            Some(meta) => Lookup::Present(meta),
        })
    }

    fn opaque(&self, dir: &Path) -> io::Result<bool> {
        if self.overlay {
            self.remembered(
                |m| &mut m.opaque,
                dir.to_owned(),
                |dir| overlay::is_opaque(dir),
            )
        } else {
            Ok(false)
        }
    }

    /// The layers making up the root directory: top down to the first opaque one.
    fn root_layers(&self) -> io::Result<Vec<usize>> {
        if let Some(memo) = &self.memo {
            let known = memo
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .root_layers
                .clone();
            if let Some(known) = known {
                return Ok(known);
            }
        }
        let mut out = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            out.push(index);
            if self.opaque(layer)? {
                break;
            }
        }
        if let Some(memo) = &self.memo {
            memo.lock().unwrap_or_else(|e| e.into_inner()).root_layers = Some(out.clone());
        }
        Ok(out)
    }

    /// The layers, top down, whose directory `names` makes up the merged directory, given that
    /// layer `top` holds it as a directory and `parent` are the layers of its parent.
    fn merged(&self, top: usize, parent: &[usize], names: &[OsString]) -> io::Result<Vec<usize>> {
        let mut out = vec![top];
        let Some((name, parent_names)) = names.split_last() else {
            return Ok(out);
        };
        if self.opaque(&join(&self.layers[top], names))? {
            return Ok(out);
        }
        for &layer in parent.iter().filter(|l| **l > top) {
            match self.lookup(&join(&self.layers[layer], parent_names), name)? {
                Lookup::Missing => {}
                Lookup::Present(meta) if meta.is_dir() => {
                    out.push(layer);
                    if self.opaque(&join(&self.layers[layer], names))? {
                        break;
                    }
                }
                // A whiteout or a non-directory hides this layer's entry and every lower one.
                Lookup::WhitedOut | Lookup::Present(_) => break,
            }
        }
        Ok(out)
    }

    /// Resolves the container path `path` (absolute, or relative to `/`) inside the root. A
    /// symbolic link as the last component is followed only when `follow_last` is set.
    pub fn resolve(&self, path: impl AsRef<Path>, follow_last: bool) -> Result<Resolved, Error> {
        let given = path.as_ref();
        let io_err = |source| Error::Io {
            path: given.to_owned(),
            source,
        };
        let mut pending = split(given.as_os_str());
        pending.reverse();
        // The resolved names, and for each directory from the root down the layers making it up
        // (empty below a missing name).
        let mut names: Vec<OsString> = Vec::new();
        let mut dirs: Vec<Vec<usize>> = vec![self.root_layers().map_err(io_err)?];
        let mut through_missing = false;
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == "." {
                continue;
            }
            if name == ".." {
                if names.pop().is_some() {
                    dirs.pop();
                }
                continue;
            }
            let last = pending.is_empty();
            let active = dirs.last().map(Vec::as_slice).unwrap_or_default();
            let mut hit = None;
            for &layer in active {
                match self
                    .lookup(&join(&self.layers[layer], &names), &name)
                    .map_err(io_err)?
                {
                    Lookup::Missing => {}
                    Lookup::WhitedOut => break,
                    Lookup::Present(meta) => {
                        hit = Some((layer, meta));
                        break;
                    }
                }
            }
            let Some((layer, meta)) = hit else {
                if let Some(resolved) = past_missing(&mut names, &mut dirs, name, last) {
                    return Ok(resolved);
                }
                through_missing = true;
                continue;
            };
            let mut host = join(&self.layers[layer], &names);
            host.push(&name);
            if meta.file_type().is_symlink() && (!last || follow_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    // Below a missing directory the kernel stops first, with ENOENT.
                    if through_missing {
                        return Ok(missing(names, &dirs));
                    }
                    return Err(Error::TooManyLinks {
                        path: given.to_owned(),
                    });
                }
                let target = fs_err::read_link(&host).map_err(io_err)?;
                if target.as_os_str().is_empty() {
                    // An empty link leads nowhere (the kernel's ENOENT).
                    if let Some(resolved) = past_missing(&mut names, &mut dirs, name, last) {
                        return Ok(resolved);
                    }
                    through_missing = true;
                    continue;
                }
                if target.as_os_str().as_bytes().starts_with(b"/") {
                    names.clear();
                    dirs.truncate(1);
                }
                let mut parts = split(target.as_os_str());
                parts.reverse();
                pending.extend(parts);
                continue;
            }
            if !last && !meta.is_dir() {
                names.push(name);
                if through_missing {
                    return Ok(missing(names, &dirs));
                }
                return Err(Error::NotADirectory {
                    path: given.to_owned(),
                    component: join(Path::new("/"), &names),
                });
            }
            let merged = if meta.is_dir() {
                names.push(name.clone());
                let merged = self.merged(layer, active, &names).map_err(io_err)?;
                names.pop();
                merged
            } else {
                Vec::new()
            };
            names.push(name);
            if last {
                if through_missing {
                    return Ok(missing(names, &dirs));
                }
                let layers = if meta.is_dir() {
                    merged
                        .iter()
                        .map(|&l| join(&self.layers[l], &names))
                        .collect()
                } else {
                    vec![host.clone()]
                };
                return Ok(Resolved {
                    existing: names.len(),
                    path: join(Path::new("/"), &names),
                    entry: Some(Entry {
                        host,
                        metadata: meta,
                        layers,
                    }),
                });
            }
            dirs.push(merged);
        }
        // The path ended on a directory: the root, or one reached through `.` or `..`.
        let current = dirs.last().map(Vec::as_slice).unwrap_or_default();
        if through_missing || current.is_empty() {
            return Ok(missing(names, &dirs));
        }
        let layers: Vec<PathBuf> = current
            .iter()
            .map(|&l| join(&self.layers[l], &names))
            .collect();
        let host = layers[0].clone();
        let metadata = fs_err::symlink_metadata(&host).map_err(io_err)?;
        Ok(Resolved {
            existing: names.len(),
            path: join(Path::new("/"), &names),
            entry: Some(Entry {
                host,
                metadata,
                layers,
            }),
        })
    }

    /// Reads the regular file at container path `path` (links followed inside the root);
    /// `None` when it does not exist, is not a regular file, or cannot be reached (a loop, a
    /// file on the way).
    pub fn read_file(&self, path: impl AsRef<Path>) -> Result<Option<Vec<u8>>, Error> {
        let path = path.as_ref();
        let Some(mut file) = self.open_file(path)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Some(bytes))
    }

    /// Opens the regular file at container path `path` for reading (links followed inside the
    /// root, the file itself opened with `O_NOFOLLOW`); `None` as for [`Root::read_file`].
    pub fn open_file(&self, path: impl AsRef<Path>) -> Result<Option<fs_err::File>, Error> {
        let path = path.as_ref();
        let resolved = match self.resolve(path, true) {
            Ok(resolved) => resolved,
            Err(Error::TooManyLinks { .. } | Error::NotADirectory { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let Some(entry) = resolved.entry.filter(|e| e.metadata.is_file()) else {
            return Ok(None);
        };
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = fs_err::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&entry.host)
            .map_err(io_err)?;
        Ok(Some(file))
    }
}

/// Steps past `name`, which does not exist: the resolved path when it is the `last` name,
/// else `None`, what follows it being below a missing directory.
fn past_missing(
    names: &mut Vec<OsString>,
    dirs: &mut Vec<Vec<usize>>,
    name: OsString,
    last: bool,
) -> Option<Resolved> {
    names.push(name);
    if last {
        return Some(missing(std::mem::take(names), dirs));
    }
    dirs.push(Vec::new());
    None
}

/// The result for a path whose last name (or a directory on the way) does not exist.
fn missing(names: Vec<OsString>, dirs: &[Vec<usize>]) -> Resolved {
    let existing = dirs
        .iter()
        .skip(1)
        .take_while(|layers| !layers.is_empty())
        .count();
    Resolved {
        path: join(Path::new("/"), &names),
        entry: None,
        existing,
    }
}

/// The names in directory `dir` when it has at most [`SMALL_LISTING`] entries and can be
/// read; `None` otherwise.
fn small_listing(dir: &Path) -> Option<std::collections::HashSet<OsString>> {
    let mut names = std::collections::HashSet::new();
    for entry in fs_err::read_dir(dir).ok()? {
        if names.len() == SMALL_LISTING {
            return None;
        }
        names.insert(entry.ok()?.file_name());
    }
    Some(names)
}

/// The most entries of a layer directory a remembering [`Root`] lists instead of looking up
/// names one by one: build steps' layers hold a few new entries per directory.
const SMALL_LISTING: usize = 64;

/// `lstat` that answers `None` for a missing path.
pub(crate) fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs_err::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests;
