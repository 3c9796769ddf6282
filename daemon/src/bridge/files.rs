//! The files of a solved result or of a container's mount, as a frontend reads them
//! (`ReadFile`, `ReadDir`, `StatFile` and their `...Container` forms): paths resolve inside
//! the layers as in a container (links never leave them), without mounting anything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use kiln_cache::Store;
use kiln_fsutil::{Root, overlay};
use kiln_solver::Ref;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use tonic::Status;

use crate::pb::fsutil::types::Stat;
use crate::pb::gateway::FileRange;

/// A frontend reads at most this much of a file in one call (the message limit is what
/// bounds it on the wire; this keeps the read itself from filling memory first).
pub(super) const MAX_READ: u64 = 16 << 20;

/// Go's `os.PathError` text, which frontends match on (`no such file or directory`).
fn not_found(op: &str, path: &str) -> Status {
    Status::not_found(format!("{op} {path}: no such file or directory"))
}

fn io_status(op: &str, path: &str, err: impl std::fmt::Display) -> Status {
    Status::unknown(format!("{op} {path}: {err}"))
}

/// The root of a solved result's files.
pub(super) fn root_of(store: &Store, result: &Ref) -> Result<Root, Status> {
    let lowers = result
        .lowers(store)
        .map_err(|e| Status::internal(crate::control::error_text("reading the result", &e)))?;
    Ok(Root::layered(lowers))
}

/// Resolves `path` in the result, following links inside it.
fn resolve(root: &Root, op: &str, path: &str) -> Result<kiln_fsutil::Entry, Status> {
    match root.resolve(path, true) {
        Ok(resolved) => resolved.entry.ok_or_else(|| not_found(op, path)),
        Err(kiln_fsutil::Error::NotADirectory { .. }) => {
            Err(Status::unknown(format!("{op} {path}: not a directory")))
        }
        Err(e) => Err(io_status(op, path, e)),
    }
}

/// `ReadFile`: a regular file's bytes, or the `range` of them.
pub(super) fn read_file(
    root: &Root,
    path: &str,
    range: Option<FileRange>,
) -> Result<Vec<u8>, Status> {
    let entry = resolve(root, "open", path)?;
    if !entry.metadata.is_file() {
        return Err(Status::invalid_argument(format!(
            "{path} is not a regular file"
        )));
    }
    let (offset, length) = match range {
        Some(FileRange { offset, length }) => (
            u64::try_from(offset).map_err(|_| Status::invalid_argument("negative offset"))?,
            u64::try_from(length).map_err(|_| Status::invalid_argument("negative length"))?,
        ),
        None => (0, entry.metadata.len()),
    };
    if length > MAX_READ {
        return Err(Status::resource_exhausted(format!(
            "{path}: reading {length} bytes at once is more than kiln's limit of {MAX_READ}; \
             read it in ranges"
        )));
    }
    // Not blocking: what is there now may be a pipe a process put in its place.
    let opened = open_beneath(
        root,
        &entry.host,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
        "open",
        path,
    )?;
    #[expect(
        clippy::disallowed_types,
        reason = "a descriptor opened beneath its root, named in errors by its container path"
    )]
    let mut file = fs_err::File::from_parts(std::fs::File::from(opened), path);
    let is_file = file
        .metadata()
        .map_err(|e| io_status("open", path, e))?
        .is_file();
    if !is_file {
        return Err(Status::invalid_argument(format!(
            "{path} is not a regular file"
        )));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_status("read", path, e))?;
    let mut data = Vec::new();
    file.take(length)
        .read_to_end(&mut data)
        .map_err(|e| io_status("read", path, e))?;
    Ok(data)
}

/// Opens `host`, an entry [`Root::resolve`] found in `root`, as it is now with `flags`: the
/// walk from its layer follows no link (`openat2` with `RESOLVE_BENEATH` and
/// `RESOLVE_NO_SYMLINKS`; a link as the last name is opened itself with `O_PATH`). A tree
/// that a running process changes meanwhile (a directory swapped for a link to the host)
/// cannot send the open out of its layer: it fails instead.
fn open_beneath(
    root: &Root,
    host: &Path,
    flags: OFlag,
    op: &str,
    path: &str,
) -> Result<OwnedFd, Status> {
    let (layer, relative) = root
        .layers()
        .iter()
        .filter_map(|layer| Some((layer, host.strip_prefix(layer).ok()?)))
        .max_by_key(|(layer, _)| layer.as_os_str().len())
        .ok_or_else(|| Status::internal(format!("{op} {path}: outside the root")))?;
    let dir = nix::fcntl::open(
        layer.as_path(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_status(op, path, e))?;
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    nix::fcntl::openat2(&dir, relative, how).map_err(|errno| match errno {
        Errno::ENOENT => not_found(op, path),
        Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR => {
            Status::aborted(format!("{op} {path}: the file changed while it was read"))
        }
        errno => io_status(op, path, errno),
    })
}

/// The path of an open directory `fd` (for what is in it, and as it is now).
fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// One file's `Stat` as fsutil sends it (Go's mode bits, nanosecond times); a link's target
/// is read from `link`, the link itself.
fn stat_of(
    name: &str,
    meta: &std::fs::Metadata,
    link: impl FnOnce() -> std::io::Result<std::path::PathBuf>,
) -> Result<Stat, Status> {
    let mut stat = crate::filesync::stat(name, meta);
    if meta.file_type().is_symlink() {
        stat.linkname = link()
            .map_err(|e| io_status("readlink", name, e))?
            .to_string_lossy()
            .into_owned();
    }
    use std::os::unix::fs::FileTypeExt as _;
    if meta.file_type().is_block_device() || meta.file_type().is_char_device() {
        let rdev = meta.rdev();
        stat.devmajor = i64::from(libc::major(rdev));
        stat.devminor = i64::from(libc::minor(rdev));
    }
    Ok(stat)
}

/// `StatFile`: the file at `path` (links followed inside the result).
pub(super) fn stat(root: &Root, path: &str) -> Result<Stat, Status> {
    let entry = resolve(root, "stat", path)?;
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned());
    // What is there now, reached without following a link.
    let opened = open_beneath(root, &entry.host, OFlag::O_PATH, "stat", path)?;
    #[expect(
        clippy::disallowed_types,
        reason = "fstat of a descriptor opened beneath its root"
    )]
    let meta = std::fs::File::from(opened.try_clone().map_err(|e| io_status("stat", path, e))?)
        .metadata()
        .map_err(|e| io_status("stat", path, e))?;
    stat_of(&name, &meta, || {
        nix::fcntl::readlinkat(&opened, "")
            .map(std::path::PathBuf::from)
            .map_err(std::io::Error::from)
    })
}

/// `ReadDir`: the entries of the directory at `path`, merged over the result's layers, by
/// name; with `include`, only the names matching it (Go's `filepath.Match`).
pub(super) fn read_dir(root: &Root, path: &str, include: &str) -> Result<Vec<Stat>, Status> {
    let entry = resolve(root, "open", path)?;
    if !entry.metadata.is_dir() {
        return Err(Status::unknown(format!(
            "readdirent {path}: not a directory"
        )));
    }
    // Topmost layer first: the first layer naming an entry decides it (a whiteout hides the
    // lower ones); `layers` already stops at an opaque directory.
    let mut merged: BTreeMap<OsString, Option<(std::path::PathBuf, std::fs::Metadata)>> =
        BTreeMap::new();
    // Each layer's directory is opened as it is now, and read through its descriptor (kept
    // open until its entries are told).
    let mut opened = Vec::with_capacity(entry.layers.len());
    for layer in &entry.layers {
        let dir = open_beneath(
            root,
            layer,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            "open",
            path,
        )?;
        let entries = fs_err::read_dir(fd_path(&dir)).map_err(|e| io_status("open", path, e))?;
        opened.push(dir);
        for child in entries {
            let child = child.map_err(|e| io_status("readdirent", path, e))?;
            let name = child.file_name();
            if name.as_bytes() == overlay::OPAQUE_MARKER.as_bytes() || merged.contains_key(&name) {
                continue;
            }
            let meta =
                fs_err::symlink_metadata(child.path()).map_err(|e| io_status("lstat", path, e))?;
            let shown = (!overlay::is_whiteout(&meta)).then(|| (child.path(), meta));
            merged.insert(name, shown);
        }
    }
    merged
        .into_iter()
        .filter_map(|(name, shown)| Some((name, shown?)))
        .filter(|(name, _)| {
            include.is_empty() || kiln_solver::filepath_match(include.as_bytes(), name.as_bytes())
        })
        .map(|(name, (host, meta))| {
            stat_of(&name.to_string_lossy(), &meta, || fs_err::read_link(&host))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with one committed two-layer result: a lower layer with files, an upper one
    /// that whites one out and adds a link out of the root.
    fn result() -> (tempfile::TempDir, Store, Ref) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lower = store.prepare_upper("lower-active", None).unwrap();
        fs_err::create_dir_all(lower.upper.join("etc")).unwrap();
        fs_err::write(lower.upper.join("etc/hostname"), "frontend\n").unwrap();
        fs_err::write(lower.upper.join("etc/gone"), "x").unwrap();
        fs_err::write(lower.upper.join("Dockerfile"), "FROM busybox\n").unwrap();
        store.commit("lower-active", "lower").unwrap();
        let upper = store.prepare_upper("upper-active", Some("lower")).unwrap();
        fs_err::create_dir_all(upper.upper.join("etc")).unwrap();
        nix::sys::stat::mknod(
            &upper.upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs_err::os::unix::fs::symlink("/etc/hostname", upper.upper.join("etc/name")).unwrap();
        fs_err::os::unix::fs::symlink("../../../../etc/passwd", upper.upper.join("escape"))
            .unwrap();
        store.commit("upper-active", "upper").unwrap();
        (dir, store, Ref::snapshot("upper"))
    }

    #[test]
    fn files_are_read_inside_the_result() {
        let (_dir, store, result) = result();
        let root = root_of(&store, &result).unwrap();
        assert_eq!(
            read_file(&root, "Dockerfile", None).unwrap(),
            b"FROM busybox\n"
        );
        // A link to an absolute path stays in the result.
        assert_eq!(read_file(&root, "/etc/name", None).unwrap(), b"frontend\n");
        assert_eq!(
            read_file(
                &root,
                "etc/hostname",
                Some(FileRange {
                    offset: 2,
                    length: 3
                })
            )
            .unwrap(),
            b"ont"
        );
        // A link climbing out of the root ends at the root's own /etc/passwd: absent here.
        let err = read_file(&root, "escape", None).unwrap_err();
        assert_eq!(err.message(), "open escape: no such file or directory");
        let err = read_file(&root, "etc/gone", None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        let err = read_file(&root, "etc", None).unwrap_err();
        assert_eq!(err.message(), "etc is not a regular file");
        let err = read_file(
            &root,
            "Dockerfile",
            Some(FileRange {
                offset: -1,
                length: 1,
            }),
        )
        .unwrap_err();
        assert_eq!(err.message(), "negative offset");
    }

    #[test]
    fn directories_merge_their_layers() {
        let (_dir, store, result) = result();
        let root = root_of(&store, &result).unwrap();
        let names =
            |entries: Vec<Stat>| -> Vec<String> { entries.into_iter().map(|s| s.path).collect() };
        assert_eq!(
            names(read_dir(&root, "/etc", "").unwrap()),
            ["hostname", "name"]
        );
        assert_eq!(names(read_dir(&root, "/", "D*").unwrap()), ["Dockerfile"]);
        let link = read_dir(&root, "etc", "name").unwrap();
        assert_eq!(link[0].linkname, "/etc/hostname");
        assert_eq!(link[0].mode & (1 << 27), 1 << 27, "Go's symlink bit");
        let stat = stat(&root, "etc/name").unwrap();
        assert_eq!((stat.path.as_str(), stat.size), ("name", 9));
        assert!(read_dir(&root, "Dockerfile", "").is_err());
    }

    /// A process swaps a directory that resolved inside its container for a link to the
    /// host between the resolution and the open: the open fails instead of following it.
    #[test]
    fn a_directory_swapped_for_a_link_after_resolution_is_not_followed() {
        let layer = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        fs_err::write(host.path().join("file"), "host secret").unwrap();
        fs_err::create_dir(layer.path().join("dir")).unwrap();
        fs_err::write(layer.path().join("dir/file"), "inside").unwrap();
        let root = Root::layered(vec![layer.path().to_owned()]);
        let entry = resolve(&root, "open", "/dir/file").unwrap();
        fs_err::rename(layer.path().join("dir"), layer.path().join("moved")).unwrap();
        fs_err::os::unix::fs::symlink(host.path(), layer.path().join("dir")).unwrap();
        // A plain open of the resolved host path now reads the host's file.
        assert_eq!(fs_err::read(&entry.host).unwrap(), b"host secret");
        for flags in [OFlag::O_RDONLY, OFlag::O_PATH] {
            let refused = open_beneath(&root, &entry.host, flags, "open", "/dir/file").unwrap_err();
            assert_eq!(
                refused.message(),
                "open /dir/file: the file changed while it was read"
            );
        }
        // What is there unchanged opens.
        let dir = resolve(&root, "open", "/moved").unwrap();
        open_beneath(
            &root,
            &dir.host,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            "open",
            "/moved",
        )
        .unwrap();
    }
}
