//! What a local directory's files were in earlier builds: their checksums and stat (the
//! checksum cache, which lets a rebuild hash only the files that changed), the digest of a
//! selection of them (a local source's content key), and the last snapshot made of the
//! directory, from which a new snapshot links the files that did not change.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::checksum::KnownFiles;
use super::local::Selected;
use crate::history::FileChange;

/// File checksums of a local directory with the stat they were taken at, by relative path.
pub(super) type FileChecksums = HashMap<PathBuf, (StatKey, [u8; 32])>;

/// The checksums of the selected files that still have the stat they were hashed at: the
/// files of the snapshot made from `selected`, which a copy from it need not read again.
pub(super) fn known_files(selected: &[Selected], checksums: &FileChecksums) -> KnownFiles {
    let mut known = KnownFiles::default();
    for entry in selected.iter().filter(|e| e.meta.is_file()) {
        if let Some((stat, sha)) = checksums.get(&entry.path) {
            if *stat == StatKey::of(&entry.meta) {
                known.insert(entry.path.clone(), entry.meta.len(), *sha);
            }
        }
    }
    known
}

/// What identifies a file's content without reading it: if none of these changed, neither did
/// the content (the checksum cache's validity rule, as git's index uses).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct StatKey {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    /// `st_mode` (0: not known, in a cache written before modes were kept).
    mode: u32,
}

impl StatKey {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            mode: meta.mode(),
        }
    }
}

/// The first line of a checksum cache that keeps each file's mode (before the path); a
/// cache without it is read with modes unknown, and rewritten with them.
const CHECKSUMS_HEADER: &[u8] = b"kiln-checksums 2\n";

/// A file's size and the sha256 of its content.
type SizedDigest = (u64, [u8; 32]);

/// File checksums of one local directory from earlier builds, keyed by relative path. Kept in
/// the store as [`CHECKSUMS_HEADER`] and lines `size mtime ctime inode sha256 mode path` (the
/// mode in octal, the path as the directory's own bytes, which need not be UTF-8).
pub(super) struct ChecksumCache {
    file: PathBuf,
    pub(super) entries: FileChecksums,
    changed: bool,
    /// The first file found with content other than cached, or not cached at all: its
    /// path, its size and digest before (if cached) and now.
    first_changed: Option<(PathBuf, Option<SizedDigest>, SizedDigest)>,
    /// The first file found with the content cached but another mode: its path, its mode
    /// before and now.
    first_mode_changed: Option<(PathBuf, u32, u32)>,
    /// Whether it held anything when loaded (there is something to compare with).
    loaded_any: bool,
}

impl ChecksumCache {
    pub(super) fn load(store_root: &Path, dir: &Path) -> Self {
        let file = checksums_file(store_root, dir);
        let entries = fs_err::read(&file)
            .map(|bytes| decode_checksums(&bytes))
            .unwrap_or_default();
        Self {
            file,
            loaded_any: !entries.is_empty(),
            entries,
            changed: false,
            first_changed: None,
            first_mode_changed: None,
        }
    }

    /// The sha256 of a file's content, from the cache when its stat is unchanged.
    fn checksum(
        &mut self,
        rel: &Path,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> std::io::Result<[u8; 32]> {
        let key = StatKey::of(meta);
        let before = self.entries.get(rel).copied();
        if let Some((cached, digest)) = before {
            if cached == key {
                return Ok(digest);
            }
        }
        let mut hasher = Sha256::new();
        std::io::copy(&mut fs_err::File::open(path)?, &mut hasher)?;
        let digest: [u8; 32] = hasher.finalize().into();
        if before.is_none_or(|(_, old)| old != digest) && self.first_changed.is_none() {
            let before = before.map(|(cached, old)| (cached.size, old));
            self.first_changed = Some((rel.to_owned(), before, (key.size, digest)));
        }
        if let Some((cached, old)) = before {
            let mode_changed = cached.mode != 0 && cached.mode != key.mode;
            if old == digest && mode_changed && self.first_mode_changed.is_none() {
                self.first_mode_changed = Some((rel.to_owned(), cached.mode, key.mode));
            }
        }
        // Paths with line breaks are hashed every time rather than stored.
        if !rel.as_os_str().as_bytes().contains(&b'\n') {
            self.entries.insert(rel.to_owned(), (key, digest));
            self.changed = true;
        }
        Ok(digest)
    }

    /// The path of [`ChecksumCache::first_change_detail`].
    #[cfg(test)]
    fn first_change(&self, selected: &[Selected]) -> Option<String> {
        self.first_change_detail(selected).map(|(path, _)| path)
    }

    /// A file that changed since the cache was written, and how: the first whose content
    /// differs or that is new, else the first that is gone from `selected`, else the first
    /// whose mode changed. `None` for a first build.
    pub(super) fn first_change_detail(
        &self,
        selected: &[Selected],
    ) -> Option<(String, FileChange)> {
        let sha256 = |digest: &[u8; 32]| format!("sha256:{}", hex::encode(digest));
        if !self.loaded_any {
            return None;
        }
        if let Some((path, before, (size, digest))) = &self.first_changed {
            let change = match before {
                Some((old_size, old)) => FileChange::Modified {
                    old_size: *old_size,
                    new_size: *size,
                    old_sha256: sha256(old),
                    new_sha256: sha256(digest),
                },
                None => FileChange::Added {
                    size: *size,
                    sha256: sha256(digest),
                },
            };
            return Some((path.display().to_string(), change));
        }
        let now: std::collections::HashSet<&Path> =
            selected.iter().map(|s| s.path.as_path()).collect();
        let mut gone: Vec<&PathBuf> = self
            .entries
            .keys()
            .filter(|p| !now.contains(p.as_path()))
            .collect();
        gone.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        let Some(path) = gone.first() else {
            let (path, old_mode, new_mode) = self.first_mode_changed.as_ref()?;
            return Some((
                path.display().to_string(),
                FileChange::ModeChanged {
                    old_mode: *old_mode,
                    new_mode: *new_mode,
                },
            ));
        };
        let (key, digest) = self.entries.get(*path)?;
        Some((
            path.display().to_string(),
            FileChange::Removed {
                size: key.size,
                sha256: sha256(digest),
            },
        ))
    }

    /// Writes the cache back (atomically, through a temporary file in `scratch`, this
    /// process's scratch directory of the store, which garbage collection clears if the
    /// process is killed) if anything was added; keeps only `keep`'s paths.
    pub(super) fn save(&mut self, keep: &[Selected], scratch: &Path) -> std::io::Result<()> {
        let before = self.entries.len();
        let keep: std::collections::HashSet<&Path> =
            keep.iter().map(|s| s.path.as_path()).collect();
        self.entries.retain(|path, _| keep.contains(path.as_path()));
        if !self.changed && self.entries.len() == before {
            return Ok(());
        }
        let mut text = CHECKSUMS_HEADER.to_vec();
        encode_checksums(&self.entries, &mut text);
        write_atomically(&self.file, &text, scratch)
    }
}

/// Where the checksum cache of the local directory `dir` is kept.
fn checksums_file(store_root: &Path, dir: &Path) -> PathBuf {
    let name = hex::encode(Sha256::digest(dir.as_os_str().as_encoded_bytes()));
    store_root.join("local-checksums").join(name)
}

/// File checksums from their lines (see [`ChecksumCache`]), after the header if there is one
/// (without it, a cache of an older version: modes unknown); lines that do not parse are
/// left out.
fn decode_checksums(bytes: &[u8]) -> FileChecksums {
    let (with_modes, bytes) = match bytes.strip_prefix(CHECKSUMS_HEADER) {
        Some(rest) => (true, rest),
        None => (false, bytes),
    };
    let mut entries = HashMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let mut fields = line.splitn(if with_modes { 7 } else { 6 }, |&b| b == b' ');
        let mut next = || fields.next();
        let parsed = (|| {
            let mut number = || std::str::from_utf8(next()?).ok();
            let mut key = StatKey {
                size: number()?.parse().ok()?,
                mtime_ns: number()?.parse().ok()?,
                ctime_ns: number()?.parse().ok()?,
                inode: number()?.parse().ok()?,
                mode: 0,
            };
            let digest: [u8; 32] = hex::decode(next()?).ok()?.try_into().ok()?;
            if with_modes {
                let mode = std::str::from_utf8(next()?).ok()?;
                key.mode = u32::from_str_radix(mode, 8).ok()?;
            }
            let path = next().filter(|p| !p.is_empty())?;
            Some((PathBuf::from(OsStr::from_bytes(path)), (key, digest)))
        })();
        if let Some((path, entry)) = parsed {
            entries.insert(path, entry);
        }
    }
    entries
}

/// Appends the lines of `entries` (see [`ChecksumCache`]) to `text`.
fn encode_checksums<'a>(
    entries: impl IntoIterator<Item = (&'a PathBuf, &'a (StatKey, [u8; 32]))>,
    text: &mut Vec<u8>,
) {
    for (path, (key, digest)) in entries {
        text.extend_from_slice(
            format!(
                "{} {} {} {} {} {:o} ",
                key.size,
                key.mtime_ns,
                key.ctime_ns,
                key.inode,
                hex::encode(digest),
                key.mode
            )
            .as_bytes(),
        );
        text.extend_from_slice(path.as_os_str().as_bytes());
        text.push(b'\n');
    }
}

/// Writes `file` whole or not at all, through a temporary file in `scratch` (this process's
/// scratch directory of the store, which garbage collection clears if the process is killed).
fn write_atomically(file: &Path, text: &[u8], scratch: &Path) -> std::io::Result<()> {
    fs_err::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
    let temp = tempfile::NamedTempFile::new_in(scratch)?;
    fs_err::write(temp.path(), text)?;
    temp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// The last snapshot made of a local directory, with the stat and checksum each of its files
/// had when it was copied in: a file with the same stat now is linked from it into the next
/// snapshot ([`super::Reuse`]). Kept beside the directory's checksum cache, as a first line
/// `snapshot KEY` and the cache's lines.
pub(super) struct LastSnapshot {
    key: String,
    files: FileChecksums,
}

/// The first line of a [`LastSnapshot`] file, before the key.
const LAST_SNAPSHOT_PREFIX: &[u8] = b"snapshot ";

impl LastSnapshot {
    fn file(store_root: &Path, dir: &Path) -> PathBuf {
        let mut file = checksums_file(store_root, dir).into_os_string();
        file.push(".snapshot");
        PathBuf::from(file)
    }

    pub(super) fn load(store_root: &Path, dir: &Path) -> Option<Self> {
        let bytes = fs_err::read(Self::file(store_root, dir)).ok()?;
        let (first, rest) = bytes.split_at(bytes.iter().position(|&b| b == b'\n')?);
        let key = std::str::from_utf8(first.strip_prefix(LAST_SNAPSHOT_PREFIX)?).ok()?;
        Some(Self {
            key: key.to_owned(),
            files: decode_checksums(rest.get(1..)?),
        })
    }

    /// Records `key` as the last snapshot of `dir`, made of its `selected` files whose
    /// checksums are `checksums`.
    pub(super) fn save(
        store_root: &Path,
        dir: &Path,
        key: &str,
        selected: &[Selected],
        checksums: &FileChecksums,
        scratch: &Path,
    ) -> std::io::Result<()> {
        let mut text = LAST_SNAPSHOT_PREFIX.to_vec();
        text.extend_from_slice(key.as_bytes());
        text.push(b'\n');
        text.extend_from_slice(CHECKSUMS_HEADER);
        let files = selected
            .iter()
            .filter_map(|s| checksums.get_key_value(&s.path));
        encode_checksums(files, &mut text);
        write_atomically(&Self::file(store_root, dir), &text, scratch)
    }

    /// What the next snapshot can take from this one: the selected files whose stat and
    /// checksum (`checksums`, taken for this build's key) are those they had when this one
    /// was made. `None` when nothing is, or the snapshot is gone.
    pub(super) fn reuse(
        &self,
        store: &kiln_cache::Store,
        selected: &[Selected],
        checksums: &FileChecksums,
    ) -> Option<super::Reuse> {
        let files: std::collections::HashSet<PathBuf> = selected
            .iter()
            .filter(|s| s.meta.is_file())
            .filter(|s| {
                let now = checksums.get(&s.path);
                now.is_some_and(|now| self.files.get(&s.path) == Some(now))
            })
            .map(|s| s.path.clone())
            .collect();
        if files.is_empty() {
            return None;
        }
        let from = store.committed_dir(&self.key).ok()?;
        Some(super::Reuse { from, files })
    }
}

/// A digest of the selected paths of a directory: names, types, modes, link targets and file
/// contents (file checksums come from `cache` when the file's stat is unchanged).
pub(super) fn tree_digest(
    root: &Path,
    selected: &[Selected],
    cache: &mut ChecksumCache,
) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut hasher = Sha256::new();
    for entry in selected {
        let path = root.join(&entry.path);
        let meta = &entry.meta;
        hasher.update(entry.path.as_os_str().as_bytes());
        hasher.update([0]);
        hasher.update(meta.mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            hasher.update(fs_err::read_link(&path)?.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            hasher.update(cache.checksum(&entry.path, &path, meta)?);
        }
        hasher.update([0]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llbsolver::local::LocalFilter;

    fn select_all(dir: &Path) -> Vec<Selected> {
        LocalFilter::default().select(dir).unwrap()
    }

    #[test]
    fn tree_digest_reuses_checksums_of_unchanged_files_and_sees_changes() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        let file = context.path().join("a");
        fs_err::write(&file, "one").unwrap();
        fs_err::write(context.path().join("b"), "bee").unwrap();

        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        let first = tree_digest(context.path(), &selected, &mut cache).unwrap();
        cache.save(&selected, store.path()).unwrap();

        // A reloaded cache answers for files whose stat is unchanged: poison its entry for
        // `a` and the digest follows the poisoned value, proving the file was not read.
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(
            tree_digest(context.path(), &selected, &mut cache).unwrap(),
            first
        );
        cache.entries.get_mut(Path::new("a")).unwrap().1 = [7; 32];
        assert_ne!(
            tree_digest(context.path(), &selected, &mut cache).unwrap(),
            first
        );

        // Same size, new content: the stat changes (ctime, and mtime set apart), so it is hashed.
        let mut cache = ChecksumCache::load(store.path(), context.path());
        fs_err::write(&file, "two").unwrap();
        filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(1, 0)).unwrap();
        let second = tree_digest(context.path(), &select_all(context.path()), &mut cache).unwrap();
        assert_ne!(second, first);
        fs_err::write(&file, "one").unwrap();
        let third = tree_digest(context.path(), &select_all(context.path()), &mut cache).unwrap();
        assert_eq!(third, first);
    }

    #[test]
    fn the_first_changed_added_or_removed_file_is_named() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            fs_err::write(context.path().join(name), name).unwrap();
        }
        let change = |cache: &mut ChecksumCache| {
            let selected = select_all(context.path());
            tree_digest(context.path(), &selected, cache).unwrap();
            cache.first_change(&selected)
        };
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache), None, "nothing to compare with");
        cache
            .save(&select_all(context.path()), store.path())
            .unwrap();

        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache), None, "nothing changed");
        fs_err::write(context.path().join("b"), "bee").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        let sha256 = |text: &str| format!("sha256:{}", hex::encode(Sha256::digest(text)));
        assert_eq!(
            cache.first_change_detail(&selected),
            Some((
                "b".to_owned(),
                FileChange::Modified {
                    old_size: 1,
                    new_size: 3,
                    old_sha256: sha256("b"),
                    new_sha256: sha256("bee"),
                }
            ))
        );
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache).as_deref(), Some("b"));
        // Touched but equal content is no change.
        let mut cache = ChecksumCache::load(store.path(), context.path());
        fs_err::write(context.path().join("b"), "b").unwrap();
        filetime::set_file_mtime(
            context.path().join("b"),
            filetime::FileTime::from_unix_time(5, 0),
        )
        .unwrap();
        assert_eq!(change(&mut cache), None);
        cache
            .save(&select_all(context.path()), store.path())
            .unwrap();

        // Only the mode changes: it says so.
        use std::os::unix::fs::PermissionsExt as _;
        let c = context.path().join("c");
        fs_err::set_permissions(&c, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        let Some((path, FileChange::ModeChanged { old_mode, new_mode })) =
            cache.first_change_detail(&selected)
        else {
            panic!("{:?}", cache.first_change_detail(&selected));
        };
        assert_eq!(path, "c");
        assert_ne!(old_mode & 0o777, 0o700);
        assert_eq!(new_mode & 0o777, 0o700);
        cache
            .save(&select_all(context.path()), store.path())
            .unwrap();

        fs_err::remove_file(context.path().join("a")).unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache).as_deref(), Some("a"), "a is gone");
        fs_err::write(context.path().join("d"), "d").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache).as_deref(), Some("d"), "d is new");
    }

    #[test]
    fn a_cache_without_modes_is_read_and_rewritten_with_them() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join("a"), "a").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        cache.save(&selected, store.path()).unwrap();
        // As an older version wrote it: no header, no mode.
        let file = cache.file.clone();
        let text = fs_err::read(&file).unwrap();
        let line = text.strip_prefix(CHECKSUMS_HEADER).unwrap();
        let fields: Vec<&[u8]> = line.splitn(7, |&b| b == b' ').collect();
        let old = [&fields[..5], &fields[6..]].concat().join(&b' ');
        fs_err::write(&file, &old).unwrap();

        let mut cache = ChecksumCache::load(store.path(), context.path());
        let (_, (key, _)) = cache.entries.iter().next().unwrap();
        assert_eq!(key.mode, 0, "not known");
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        assert_eq!(
            cache.first_change_detail(&selected),
            None,
            "nothing changed"
        );
        cache.save(&selected, store.path()).unwrap();
        assert!(fs_err::read(&file).unwrap().starts_with(CHECKSUMS_HEADER));
        let cache = ChecksumCache::load(store.path(), context.path());
        let (_, (key, _)) = cache.entries.iter().next().unwrap();
        assert_ne!(key.mode, 0);
    }

    #[test]
    fn names_that_are_not_utf8_count_as_their_bytes() {
        use std::os::unix::ffi::OsStrExt as _;
        let name = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join(name(b"a\xff")), "same").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        assert_eq!(selected[0].path, name(b"a\xff"));
        let before = tree_digest(context.path(), &selected, &mut cache).unwrap();
        cache.save(&selected, store.path()).unwrap();

        // The cache file keeps the name's bytes: it loads back under the same name.
        let cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(cache.entries.keys().collect::<Vec<_>>(), [&name(b"a\xff")]);

        // `a\xfe` reads as `a\u{fffd}` too when converted lossily; its digest differs.
        fs_err::rename(
            context.path().join(name(b"a\xff")),
            context.path().join(name(b"a\xfe")),
        )
        .unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        let after = tree_digest(context.path(), &selected, &mut cache).unwrap();
        assert_ne!(after, before);
        assert_eq!(cache.first_change(&selected).as_deref(), Some("a\u{fffd}"));
    }

    #[test]
    fn unselected_files_do_not_change_the_digest() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join("wanted"), "w").unwrap();
        fs_err::write(context.path().join("other"), "1").unwrap();
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("local.followpaths".to_owned(), r#"["wanted"]"#.to_owned());
        let filter = LocalFilter::from_attrs(&attrs).unwrap();
        let digest = |cache: &mut ChecksumCache| {
            tree_digest(
                context.path(),
                &filter.select(context.path()).unwrap(),
                cache,
            )
            .unwrap()
        };
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let before = digest(&mut cache);
        fs_err::write(context.path().join("other"), "2").unwrap();
        assert_eq!(digest(&mut cache), before);
        fs_err::write(context.path().join("wanted"), "W").unwrap();
        assert_ne!(digest(&mut cache), before);
    }

    #[test]
    fn the_last_snapshot_is_read_back_and_a_damaged_record_is_none() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join("a"), "A").unwrap();
        fs_err::create_dir(context.path().join("d")).unwrap();
        fs_err::write(context.path().join("d/b"), "B").unwrap();
        let selected = select_all(context.path());
        let mut cache = ChecksumCache::load(store.path(), context.path());
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let key = "local-0123";
        let (root, dir) = (store.path(), context.path());
        // Only the selected files are kept.
        let kept = &selected[..1];
        LastSnapshot::save(root, dir, key, kept, &cache.entries, scratch.path()).unwrap();
        let last = LastSnapshot::load(root, dir).unwrap();
        assert_eq!(last.key, key);
        let mut paths: Vec<&PathBuf> = last.files.keys().collect();
        paths.sort();
        assert_eq!(paths, [Path::new("a")]);
        assert!(last.files[Path::new("a")] == cache.entries[Path::new("a")]);
        // A record cut short or of another format is no record.
        let file = LastSnapshot::file(root, dir);
        for damaged in [
            &b"snapshot local-0123"[..],
            b"local-0123\nkiln-checksums 2\n",
            b"",
        ] {
            fs_err::write(&file, damaged).unwrap();
            assert!(LastSnapshot::load(root, dir).is_none(), "{damaged:?}");
        }
    }
}
