//! Content checksums of the paths a copy reads, for content-based cache keys.
//!
//! A copy's result depends on its source only through the paths it copies, so its
//! content-based key uses a digest of exactly those trees (names, types, modes, owners, link
//! targets, device numbers and file contents; not times), and touching another file of the
//! same source does not change it. Where the selection cannot be read off the path alone, the
//! digest covers more than the copy reads, never less: a wildcard digests the tree at the
//! directory above its first wildcard, and a path through a symlink digests the whole source.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// A digest of the trees at `paths` (absolute paths inside `root`).
pub(super) fn paths_digest(root: &Path, paths: &[String]) -> io::Result<String> {
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
        match fs_err::symlink_metadata(&start) {
            Ok(_) => tree(&start, "", &mut hasher)?,
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

/// Hashes the entry at `path` (named `rel` below the selection) and everything below it,
/// in name order.
fn tree(path: &Path, rel: &str, hasher: &mut Sha256) -> io::Result<()> {
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
        io::copy(&mut fs_err::File::open(path)?, hasher)?;
    } else if kind.is_dir() {
        let mut names: Vec<_> = fs_err::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let child = format!("{rel}/{}", name.to_string_lossy());
            tree(&path.join(&name), &child, hasher)?;
        }
    }
    hasher.update([0xff]);
    Ok(())
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
            paths_digest(root, &paths).unwrap()
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
}
