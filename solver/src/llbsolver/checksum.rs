//! Content checksums of the paths a copy reads, for content-based cache keys.
//!
//! A copy's result depends on its source only through the paths it copies, so its
//! content-based key uses a digest of exactly those trees (names, types, modes, owners, link
//! targets, device numbers and file contents; not times), and touching another file of the
//! same source does not change it. Where the selection cannot be read off the path alone, the
//! digest covers more than the copy reads, never less: a wildcard digests the tree at the
//! directory above its first wildcard, and a path through a symlink digests the whole source.
//!
//! A file counts by the sha256 of its content, so a result whose file checksums are already
//! known ([`KnownFiles`]: a local source's, hashed when the source was keyed) is digested
//! from its directory entries alone, without reading the files again.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use sha2::{Digest as _, Sha256};

/// The content checksums of the regular files of one layer directory, by path relative to
/// it (no leading `/`), each with the size it had when hashed.
#[derive(Debug, Default)]
pub(super) struct KnownFiles {
    files: HashMap<PathBuf, (u64, [u8; 32])>,
}

impl KnownFiles {
    /// Records the checksum of the file at `rel` with `size` bytes.
    pub(super) fn insert(&mut self, rel: PathBuf, size: u64, sha256: [u8; 32]) {
        self.files.insert(rel, (size, sha256));
    }

    /// The checksum of `rel` if it is known for a file of `size` bytes.
    fn get(&self, rel: &Path, size: u64) -> Option<[u8; 32]> {
        self.files
            .get(rel)
            .filter(|(known, _)| *known == size)
            .map(|(_, sha)| *sha)
    }
}

/// How many layers' checksums are remembered at once (the most recent ones).
const REMEMBERED_LAYERS: usize = 8;

/// Layer directories with their known file checksums, oldest first.
type Remembered = VecDeque<(PathBuf, Arc<KnownFiles>)>;

/// Known file checksums of committed layer directories of this process's builds.
static KNOWN: LazyLock<Mutex<Remembered>> = LazyLock::new(|| Mutex::new(VecDeque::new()));

/// Remembers the file checksums of the committed, read-only layer directory `layer`.
pub(super) fn remember(layer: PathBuf, files: KnownFiles) {
    let mut known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    known.retain(|(dir, _)| *dir != layer);
    if known.len() == REMEMBERED_LAYERS {
        known.pop_front();
    }
    known.push_back((layer, Arc::new(files)));
}

/// The file checksums remembered for the layer directory `layer`.
pub(super) fn known(layer: &Path) -> Option<Arc<KnownFiles>> {
    let known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    known
        .iter()
        .find(|(dir, _)| dir == layer)
        .map(|(_, files)| files.clone())
}

/// A digest of the trees at `paths` (absolute paths inside `root`). Files listed in `known`
/// (by path relative to `root`, with an unchanged size) are not read.
pub(super) fn paths_digest(
    root: &Path,
    paths: &[String],
    known: Option<&KnownFiles>,
) -> io::Result<String> {
    let mut hasher = Sha256::new();
    for path in paths {
        let rel = selection(root, path)?;
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        let start = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(&rel)
        };
        let walk = Walk {
            base: Path::new(&rel),
            known,
        };
        match fs_err::symlink_metadata(&start) {
            Ok(_) => walk.tree(&start, OsStr::new(""), &mut hasher)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => hasher.update(b"missing\0"),
            Err(e) => return Err(e),
        }
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The relative path whose tree covers what the copy of `path` reads ("" for the root).
fn selection(root: &Path, path: &str) -> io::Result<String> {
    let mut kept: Vec<&str> = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part.contains(['*', '?', '[', '\\']) {
            break;
        }
        if part == ".." {
            return Ok(String::new());
        }
        kept.push(part);
        match fs_err::symlink_metadata(root.join(kept.join("/"))) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(String::new()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(kept.join("/"))
}

/// A walk below one selection.
struct Walk<'a> {
    /// The selection's path relative to the root ("" for the root).
    base: &'a Path,
    known: Option<&'a KnownFiles>,
}

impl Walk<'_> {
    /// Hashes the entry at `path` (named `rel` below the selection: `/`-separated names with a
    /// leading `/`, "" for the selection itself) and everything below it, in name order.
    fn tree(&self, path: &Path, rel: &OsStr, hasher: &mut Sha256) -> io::Result<()> {
        let meta = fs_err::symlink_metadata(path)?;
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        for field in [
            u64::from(meta.mode()),
            u64::from(meta.uid()),
            u64::from(meta.gid()),
            meta.rdev(),
        ] {
            hasher.update(field.to_le_bytes());
        }
        let kind = meta.file_type();
        if kind.is_symlink() {
            hasher.update(fs_err::read_link(path)?.as_os_str().as_encoded_bytes());
        } else if kind.is_file() {
            hasher.update(meta.len().to_le_bytes());
            hasher.update(self.file_sha256(path, rel, meta.len())?);
        } else if kind.is_dir() {
            let mut names: Vec<OsString> = fs_err::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                let mut child = rel.to_owned();
                child.push("/");
                child.push(&name);
                self.tree(&path.join(&name), &child, hasher)?;
            }
        }
        hasher.update([0xff]);
        Ok(())
    }

    /// The sha256 of a file's content: known, or read.
    fn file_sha256(&self, path: &Path, rel: &OsStr, size: u64) -> io::Result<[u8; 32]> {
        if let Some(known) = self.known {
            // `rel` is "" or starts with `/`: what follows is relative to the selection.
            let below = OsStr::from_bytes(rel.as_bytes().strip_prefix(b"/").unwrap_or_default());
            let from_root = self.base.join(below);
            if let Some(sha) = known.get(&from_root, size) {
                return Ok(sha);
            }
        }
        let mut file_hasher = Sha256::new();
        io::copy(&mut fs_err::File::open(path)?, &mut file_hasher)?;
        Ok(file_hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_selected_paths_count() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("src/sub")).unwrap();
        fs_err::write(root.join("src/a"), "a").unwrap();
        fs_err::write(root.join("src/sub/b"), "b").unwrap();
        fs_err::write(root.join("other"), "1").unwrap();
        let digest = |paths: &[&str]| {
            let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
            paths_digest(root, &paths, None).unwrap()
        };
        let src = digest(&["/src"]);
        let all = digest(&["/"]);
        fs_err::write(root.join("other"), "2").unwrap();
        assert_eq!(digest(&["/src"]), src, "an unrelated file");
        assert_ne!(digest(&["/"]), all);
        fs_err::write(root.join("src/sub/b"), "B").unwrap();
        assert_ne!(digest(&["/src"]), src, "a file below the path");
        fs_err::write(root.join("src/sub/b"), "b").unwrap();
        assert_eq!(digest(&["/src"]), src, "times do not count");
        fs_err::set_permissions(
            root.join("src/a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(digest(&["/src"]), src, "modes count");

        // A wildcard covers its directory; a symlink on the way covers everything.
        assert_eq!(selection(root, "/src/*.txt").unwrap(), "src");
        std::os::unix::fs::symlink("src", root.join("link")).unwrap();
        assert_eq!(selection(root, "/link/a").unwrap(), "");
        assert_eq!(selection(root, "/missing/x").unwrap(), "missing");
        assert_ne!(digest(&["/missing"]), digest(&["/src"]));
    }

    #[test]
    fn names_that_are_not_utf8_are_digested_and_looked_up_as_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let name = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
        fs_err::create_dir(root.join(name(b"d\xff"))).unwrap();
        fs_err::write(root.join(name(b"d\xff/f\xfe")), "f").unwrap();
        let paths = ["/".to_owned()];
        let before = paths_digest(root, &paths, None).unwrap();
        let mut known = KnownFiles::default();
        known.insert(name(b"d\xff/f\xfe"), 1, [9; 32]);
        assert_ne!(
            paths_digest(root, &paths, Some(&known)).unwrap(),
            before,
            "the known checksum is found under the name's bytes"
        );
        fs_err::rename(
            root.join(name(b"d\xff/f\xfe")),
            root.join(name(b"d\xff/f\xfd")),
        )
        .unwrap();
        assert_ne!(paths_digest(root, &paths, None).unwrap(), before);
    }

    #[test]
    fn known_checksums_stand_in_for_reading_files_of_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("src")).unwrap();
        fs_err::write(root.join("src/a"), "a").unwrap();
        fs_err::write(root.join("top"), "top").unwrap();
        let paths = ["/".to_owned()];
        let read = paths_digest(root, &paths, None).unwrap();
        let sha = |text: &str| -> [u8; 32] { Sha256::digest(text.as_bytes()).into() };

        // The true checksums: the digest is the one of reading the files.
        let mut known = KnownFiles::default();
        known.insert("src/a".into(), 1, sha("a"));
        known.insert("top".into(), 3, sha("top"));
        assert_eq!(paths_digest(root, &paths, Some(&known)).unwrap(), read);
        let src = ["/src".to_owned()];
        assert_eq!(
            paths_digest(root, &src, Some(&known)).unwrap(),
            paths_digest(root, &src, None).unwrap(),
            "paths are looked up from the root, not from the selection"
        );

        // A known checksum is used without reading the file...
        let mut wrong = KnownFiles::default();
        wrong.insert("src/a".into(), 1, sha("b"));
        assert_ne!(paths_digest(root, &paths, Some(&wrong)).unwrap(), read);
        // ...unless the file's size differs from the size it was hashed at.
        let mut stale = KnownFiles::default();
        stale.insert("src/a".into(), 7, sha("b"));
        assert_eq!(paths_digest(root, &paths, Some(&stale)).unwrap(), read);

        remember(root.to_owned(), known);
        assert!(super::known(root).is_some_and(|k| k.get(Path::new("top"), 3) == Some(sha("top"))));
        assert!(super::known(&root.join("src")).is_none());
    }
}
