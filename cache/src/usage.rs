//! The one measure of bytes on disk that `du`, `prune` and garbage collection share.
//!
//! A file counts once per inode, whatever its names: a stored image's snapshots hard-link a
//! build's files and a layer may hold several names of one file (busybox's applets). Regular
//! files and symbolic links count their length; directories and special files count nothing.
//!
//! [`Store::disk_files`] is every file of the store's data; [`Store::du`] attributes them to
//! what keeps them (images, build cache records, cache mounts, local source directories), and [`GcReport::freed`] is
//! what a collection took away from the former, in the same measure.
//!
//! [`GcReport::freed`]: crate::GcReport::freed

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::error::Error;
use crate::gc::CacheKind;
use crate::store::Store;

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
        match fs_err::symlink_metadata(path) {
            Ok(meta) => self.add_entry(path, &meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds `path`, whose `lstat` is `meta`. A directory's entries are stat'ed relative to it
    /// (no walk of the whole path for each file of a large tree).
    fn add_entry(&mut self, path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
        if meta.is_dir() {
            let entries = match fs_err::read_dir(path) {
                Ok(entries) => entries,
                // Removed while being measured (a running process's temporary directory).
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                match entry.metadata() {
                    Ok(meta) => self.add_entry(&entry.path(), &meta)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
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

/// One entry of [`Store::du`]: an image, a build cache record, a cache mount or a local
/// source's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageEntry {
    /// `image`, `cache`, `exec.cachemount` or `source.local`.
    pub kind: &'static str,
    /// The image name, cache record ID, cache mount directory or local source directory.
    pub id: String,
    /// Bytes of the distinct files it uses (files shared with other entries counted in each).
    pub size: u64,
    /// When it was last used (seconds since the Unix epoch).
    pub last_used: u64,
    /// Held by a running build (a local source's directory): `kiln prune` leaves it.
    pub in_use: bool,
    /// What it is, in words, where the store says (`local source for context`).
    pub description: String,
}

impl UsageEntry {
    /// Whether `kiln prune` can remove it (build cache records, cache mounts and local
    /// sources no build holds can, images cannot).
    pub fn reclaimable(&self) -> bool {
        self.kind != "image" && !self.in_use
    }
}

/// What uses space in the store, in the measure of [`Files`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Images, build cache records and cache mounts, largest first (then by ID).
    pub entries: Vec<UsageEntry>,
    /// Bytes of the files more than one entry uses.
    pub shared: u64,
    /// Bytes of the files only reclaimable entries use: what removing them all frees.
    pub reclaimable: u64,
    /// Bytes of every file of the store's data ([`Store::disk_files`]).
    pub total: u64,
}

impl DiskUsage {
    /// Bytes of the files at most one entry uses (or none: leftovers a collection removes).
    pub fn private(&self) -> u64 {
        self.total - self.shared
    }

    /// The usage of entries with their files, in a store whose distinct files have `total`
    /// bytes.
    fn of(measured: Vec<(UsageEntry, Files)>, total: u64) -> Self {
        // Per file: its size, how many entries use it, and whether one of them is kept.
        let mut users: HashMap<(u64, u64), (u64, usize, bool)> = HashMap::new();
        for (entry, files) in &measured {
            for (inode, size) in files.iter() {
                let user = users.entry(inode).or_insert((size, 0, false));
                user.1 += 1;
                user.2 |= !entry.reclaimable();
            }
        }
        let sum = |keep: &dyn Fn(usize, bool) -> bool| -> u64 {
            users
                .values()
                .filter(|(_, count, kept)| keep(*count, *kept))
                .map(|(size, ..)| size)
                .sum()
        };
        let shared = sum(&|count, _| count > 1);
        let reclaimable = sum(&|_, kept| !kept);
        let mut entries: Vec<UsageEntry> = measured
            .into_iter()
            .map(|(mut entry, files)| {
                entry.size = files.bytes();
                entry
            })
            .collect();
        entries.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
        Self {
            entries,
            shared: shared.min(total),
            reclaimable: reclaimable.min(total),
            total,
        }
    }
}

impl Store {
    /// The directories whose files [`Store::disk_files`] counts.
    pub const MEASURED_DIRS: [&'static str; 6] = [
        "blobs",
        "ingest",
        "snapshots",
        "tmp",
        "cache-mounts",
        crate::local_source::LOCAL_SYNC,
    ];

    /// Every file the store's data uses, each once: the measure `kiln du` totals and
    /// [`GcReport::freed`](crate::GcReport::freed) subtracts from (collection frees nothing
    /// outside these).
    pub fn disk_files(&self) -> Result<Files, Error> {
        let mut files = Files::new();
        for dir in Self::MEASURED_DIRS {
            files.add(&self.root().join(dir))?;
        }
        Ok(files)
    }

    /// The files of the snapshot `key` and of the snapshots below it (none for a lazy one,
    /// which is not downloaded).
    pub fn snapshot_files(&self, key: &str) -> Result<Files, Error> {
        let mut files = Files::new();
        for dir in self.unpacked_dirs(key)? {
            files.add(&dir)?;
        }
        Ok(files)
    }

    /// What uses space in the store (`kiln du`): each image (its blobs and snapshots), build
    /// cache record (its blobs and snapshots), cache mount and local source directory with
    /// the bytes of the distinct files it uses, and the totals.
    pub fn du(&self) -> Result<DiskUsage, Error> {
        let blob =
            |files: &mut Files, digest: &kiln_llb::Digest| files.add(&self.blob_path(digest));
        let mut measured: Vec<(UsageEntry, Files)> = Vec::new();
        for image in self.images()? {
            let mut files = Files::new();
            for digest in [image.manifest, image.config]
                .iter()
                .chain(image.index.iter())
                .chain(image.layers.iter())
            {
                blob(&mut files, digest)?;
            }
            if let Some(chain) = image.chain_id {
                files.extend(&self.snapshot_files(&chain.to_string())?);
            }
            measured.push((
                UsageEntry {
                    kind: "image",
                    id: image.name,
                    last_used: image.last_used,
                    ..UsageEntry::default()
                },
                files,
            ));
        }
        for record in self.cache_records()? {
            let mut files = Files::new();
            for digest in &record.blobs {
                blob(&mut files, digest)?;
            }
            for key in &record.snapshots {
                files.extend(&self.snapshot_files(key)?);
            }
            measured.push((
                UsageEntry {
                    kind: "cache",
                    id: record.id,
                    last_used: record.last_used,
                    ..UsageEntry::default()
                },
                files,
            ));
        }
        for name in self.cache_mounts()? {
            let dir = self.root().join("cache-mounts").join(&name);
            let mut files = Files::new();
            files.add(&dir)?;
            let last_used = fs_err::metadata(&dir)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            measured.push((
                UsageEntry {
                    kind: CacheKind::CacheMount.as_str(),
                    id: name,
                    last_used,
                    ..UsageEntry::default()
                },
                files,
            ));
        }
        for source in self.local_sources()? {
            let mut files = Files::new();
            files.add(&source.path)?;
            measured.push((
                UsageEntry {
                    kind: CacheKind::LocalSource.as_str(),
                    id: source.id,
                    last_used: source.last_used,
                    in_use: source.in_use,
                    description: format!("local source for {}", source.source),
                    ..UsageEntry::default()
                },
                files,
            ));
        }
        Ok(DiskUsage::of(measured, self.disk_files()?.bytes()))
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

    #[test]
    fn shared_files_count_once_and_are_summed_as_shared() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, size: usize| {
            let path = dir.path().join(name);
            fs_err::write(&path, vec![0; size]).unwrap();
            path
        };
        let (one, two, three) = (file("1", 1_000), file("2", 200), file("3", 500));
        let shared = dir.path().join("1-linked");
        fs_err::hard_link(&one, &shared).unwrap();
        let files = |paths: &[&Path]| {
            let mut files = Files::new();
            for path in paths {
                files.add(path).unwrap();
            }
            files
        };
        let entry = |kind: &'static str, id: &str| UsageEntry {
            kind,
            id: id.to_owned(),
            last_used: 1,
            ..UsageEntry::default()
        };
        // The image and a cache record share file 1 (a hard link); the record also has 2.
        let measured = vec![
            (entry("image", "i"), files(&[&one, &three])),
            (entry("cache", "c"), files(&[&shared, &two])),
        ];
        let usage = DiskUsage::of(measured, 1_700);
        assert_eq!(usage.entries[0].size, 1_500);
        assert_eq!(usage.entries[1].size, 1_200);
        assert_eq!(usage.shared, 1_000);
        assert_eq!(usage.private(), 700);
        // Pruning the record frees only what nothing else uses.
        assert_eq!(usage.reclaimable, 200);
        let alone = DiskUsage::of(vec![(entry("cache", "c"), files(&[&two]))], 200);
        assert_eq!(
            (alone.shared, alone.reclaimable, alone.total),
            (0, 200, 200)
        );
    }
}
