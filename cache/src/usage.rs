//! The one measure of bytes on disk that `du`, `prune` and garbage collection share.
//!
//! A file counts once per inode, whatever its names: a stored image's snapshots hard-link a
//! build's files and a layer may hold several names of one file (busybox's applets). Regular
//! files and symbolic links count their length; directories and special files count nothing.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Files by `(device, inode)`: each file once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Files {
    /// Size, link count and the names of it seen, per file.
    files: HashMap<(u64, u64), FileUse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileUse {
    size: u64,
    links: u64,
    seen: u64,
}

impl Files {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the regular files and symbolic links under `path` (a file or a directory; a
    /// missing one has none).
    pub fn add(&mut self, path: &Path) -> io::Result<()> {
        let meta = match fs_err::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            let entries = match fs_err::read_dir(path) {
                Ok(entries) => entries,
                // Removed while being measured (a running process's temporary directory).
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                self.add(&entry?.path())?;
            }
        } else if meta.is_file() || meta.is_symlink() {
            let file = self
                .files
                .entry((meta.dev(), meta.ino()))
                .or_insert(FileUse {
                    size: meta.len(),
                    links: meta.nlink(),
                    seen: 0,
                });
            file.seen += 1;
        }
        Ok(())
    }

    /// Adds every file of `other`.
    pub fn extend(&mut self, other: &Self) {
        for (inode, file) in &other.files {
            self.files.entry(*inode).or_insert(*file);
        }
    }

    /// Bytes of the distinct files.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// How many distinct files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The files, as `((device, inode), size)`.
    pub fn iter(&self) -> impl Iterator<Item = ((u64, u64), u64)> + '_ {
        self.files.iter().map(|(inode, f)| (*inode, f.size))
    }

    /// Bytes of the files whose every name was added: what deleting those names frees.
    pub(crate) fn bytes_of_all_names(&self) -> u64 {
        self.files
            .values()
            .filter(|f| f.seen >= f.links)
            .map(|f| f.size)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_many_names_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("a"), vec![0; 3_000]).unwrap();
        fs_err::create_dir(dir.path().join("bin")).unwrap();
        for name in ["x", "y", "z"] {
            fs_err::hard_link(dir.path().join("a"), dir.path().join("bin").join(name)).unwrap();
        }
        fs_err::write(dir.path().join("b"), "12345").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("link")).unwrap();
        let mut found = Files::new();
        found.add(dir.path()).unwrap();
        assert_eq!(found.bytes(), 3_006);
        assert_eq!(found.len(), 3);
        found.add(&dir.path().join("missing")).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found.bytes_of_all_names(), 3_006);
        // Some names of `a` alone: deleting them frees nothing of it.
        let mut bin = Files::new();
        bin.add(&dir.path().join("bin")).unwrap();
        assert_eq!(bin.bytes(), 3_000);
        assert_eq!(bin.bytes_of_all_names(), 0);
    }
}
