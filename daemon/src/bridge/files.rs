//! The files of a solved result or of a container's mount, as a frontend reads them
//! (`ReadFile`, `ReadDir`, `StatFile` and their `...Container` forms): paths resolve inside
//! the layers as in a container (links never leave them), without mounting anything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use fs_err::os::unix::fs::OpenOptionsExt as _;
use kiln_cache::Store;
use kiln_fsutil::{Root, overlay};
use kiln_solver::Ref;
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
    let mut file = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&entry.host)
        .map_err(|e| io_status("open", path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_status("read", path, e))?;
    let mut data = Vec::new();
    file.take(length)
        .read_to_end(&mut data)
        .map_err(|e| io_status("read", path, e))?;
    Ok(data)
}

/// One file's `Stat` as fsutil sends it (Go's mode bits, nanosecond times).
fn stat_of(name: &str, host: &Path, meta: &std::fs::Metadata) -> Result<Stat, Status> {
    let mut stat = crate::filesync::stat(name, meta);
    if meta.file_type().is_symlink() {
        stat.linkname = fs_err::read_link(host)
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
    stat_of(&name, &entry.host, &entry.metadata)
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
    for layer in &entry.layers {
        let entries = fs_err::read_dir(layer).map_err(|e| io_status("open", path, e))?;
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
        .map(|(name, (host, meta))| stat_of(&name.to_string_lossy(), &host, &meta))
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
}
