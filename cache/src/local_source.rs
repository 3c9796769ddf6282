//! The directories a build daemon receives its clients' local sources into (`local-sync/`):
//! kept between builds, so that the next build from the same client receives only what
//! changed, listed by [`Store::du`] as BuildKit lists them (`source.local`, "local source for
//! context") and removed by [`Store::prune`] unless a build holds them.
//!
//! A build holds a directory by an exclusive `flock` on `NAME.lock` beside it, which every
//! process sees: the lock file is taken before the directory is made, and it holds the
//! source's name (for `du`) and its time is the directory's last use. A prune takes the same
//! lock without waiting, and only with it moves the directory away and removes the lock file;
//! a build that locked a lock file a prune removed meanwhile (it is no longer at its path)
//! takes the new one.

use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;
use crate::store::Store;

/// The directory under the store's root that holds the local sources.
pub(crate) const LOCAL_SYNC: &str = "local-sync";
/// The name prefix of a directory one build received into alone.
const PRIVATE_PREFIX: &str = "private-";
const LOCK_SUFFIX: &str = ".lock";

/// A local source's directory, held by one build until dropped: a shared one stays for the
/// next build, a private one is removed.
#[derive(Debug)]
pub struct LocalSourceDir {
    path: PathBuf,
    lock_path: PathBuf,
    private: bool,
    /// Released after the private directory is removed.
    lock: Option<Flock<OwnedFd>>,
}

impl LocalSourceDir {
    /// The directory to receive into.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalSourceDir {
    fn drop(&mut self) {
        if self.private {
            for removed in [
                fs_err::remove_dir_all(&self.path),
                fs_err::remove_file(&self.lock_path),
            ] {
                if let Err(error) = removed
                    && error.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(%error, "removing a private local source directory");
                }
            }
        }
        drop(self.lock.take());
    }
}

/// One local source directory, as [`Store::local_sources`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSource {
    /// Its name under `local-sync/`.
    pub id: String,
    /// The source's name the last build gave it (`context`, `dockerfile`, ...).
    pub source: String,
    /// Whether a running build holds it.
    pub in_use: bool,
    /// When a build last took it (seconds since the Unix epoch).
    pub last_used: u64,
    /// The directory.
    pub path: PathBuf,
}

/// Locks the lock file `path` (made if missing) without waiting: `None` when another holder
/// has it. A lock file removed while it was being locked is taken again at its path.
fn try_lock(path: &Path) -> Result<Option<Flock<OwnedFd>>, Error> {
    loop {
        let file = crate::meta::open_lock_file(path)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, source)) => {
                return Err(Error::Lock {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let held = nix::sys::stat::fstat(lock.as_fd()).map_err(|source| Error::Lock {
            path: path.to_owned(),
            source,
        })?;
        match fs_err::metadata(path) {
            Ok(meta) if meta.dev() == held.st_dev && meta.ino() == held.st_ino => {
                return Ok(Some(lock));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{LOCK_SUFFIX}"))
}

/// Whether `name` may name a shared local source directory.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with(PRIVATE_PREFIX)
        && !name.ends_with(LOCK_SUFFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
}

impl Store {
    fn local_sync_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.root().join(LOCAL_SYNC);
        fs_err::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Takes `local-sync/NAME` (made if missing) for one build, which receives the local
    /// source `source` into it; `None` when another build holds it.
    pub fn take_local_source(
        &self,
        name: &str,
        source: &str,
    ) -> Result<Option<LocalSourceDir>, Error> {
        if !valid_name(name) {
            return Err(Error::InvalidLocalSource {
                name: name.to_owned(),
            });
        }
        let dir = self.local_sync_dir()?;
        let lock_path = lock_path(&dir, name);
        let Some(lock) = try_lock(&lock_path)? else {
            return Ok(None);
        };
        self.hold_local_source(dir.join(name), lock_path, lock, source, false)
            .map(Some)
    }

    /// A directory of its own for one build that receives the local source `source`
    /// (`local-sync/private-*`), removed when dropped.
    pub fn private_local_source(&self, source: &str) -> Result<LocalSourceDir, Error> {
        let dir = self.local_sync_dir()?;
        loop {
            let name = format!("{PRIVATE_PREFIX}{:016x}", fastrand::u64(..));
            let lock_path = lock_path(&dir, &name);
            if lock_path.exists() {
                continue;
            }
            if let Some(lock) = try_lock(&lock_path)? {
                return self.hold_local_source(dir.join(name), lock_path, lock, source, true);
            }
        }
    }

    fn hold_local_source(
        &self,
        path: PathBuf,
        lock_path: PathBuf,
        lock: Flock<OwnedFd>,
        source: &str,
        private: bool,
    ) -> Result<LocalSourceDir, Error> {
        let held = LocalSourceDir {
            path,
            lock_path,
            private,
            lock: Some(lock),
        };
        // The source's name, for `du`; the write is the directory's last use.
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&held.lock_path)?;
        file.write_all(source.as_bytes())?;
        fs_err::create_dir_all(&held.path)?;
        Ok(held)
    }

    /// The local source directories, by name.
    pub fn local_sources(&self) -> Result<Vec<LocalSource>, Error> {
        let dir = self.root().join(LOCAL_SYNC);
        let entries = match fs_err::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut sources = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            if id.ends_with(LOCK_SUFFIX) || !entry.file_type()?.is_dir() {
                continue;
            }
            let lock_path = lock_path(&dir, &id);
            // Taken for a moment to see whether a build holds it.
            let in_use = try_lock(&lock_path)?.is_none();
            let source = fs_err::read_to_string(&lock_path).unwrap_or_default();
            let last_used = fs_err::metadata(&lock_path)
                .or_else(|_| fs_err::metadata(entry.path()))
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            sources.push(LocalSource {
                path: entry.path(),
                id,
                source,
                in_use,
                last_used,
            });
        }
        sources.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(sources)
    }

    /// Moves the local source directory `source` into the trash with `take`, unless a build
    /// holds it; its lock file goes too. Answers whether it was moved.
    pub(crate) fn take_away_local_source(
        &self,
        source: &LocalSource,
        take: &mut dyn FnMut(&Path) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let lock_path = lock_path(&self.root().join(LOCAL_SYNC), &source.id);
        let Some(lock) = try_lock(&lock_path)? else {
            return Ok(false);
        };
        let moved = take(&source.path)?;
        match fs_err::remove_file(&lock_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        drop(lock);
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PruneOptions;

    #[test]
    fn a_held_directory_is_not_taken_twice_and_a_private_one_goes_when_dropped() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let held = store.take_local_source("abc", "context").unwrap().unwrap();
        fs_err::write(held.path().join("file"), "12345").unwrap();
        // Another holder (here, in this process: flock is per open file) waits for nothing.
        assert!(store.take_local_source("abc", "context").unwrap().is_none());
        let private = store.private_local_source("context").unwrap();
        assert!(private.path().is_dir());
        let listed = store.local_sources().unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.iter().all(|s| s.in_use && s.source == "context"));
        let private_path = private.path().to_owned();
        drop(private);
        assert!(!private_path.exists());
        drop(held);
        let listed = store.local_sources().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].id, "abc");
        assert!(!listed[0].in_use);
        // Free again, with what the last build received.
        let again = store
            .take_local_source("abc", "dockerfile")
            .unwrap()
            .unwrap();
        assert_eq!(
            fs_err::read_to_string(again.path().join("file")).unwrap(),
            "12345"
        );
        for bad in ["", "../x", "private-1", "a.lock", ".hidden", "a/b"] {
            assert!(store.take_local_source(bad, "context").is_err(), "{bad}");
        }
    }

    #[test]
    fn du_lists_local_sources_and_prune_removes_those_no_build_holds() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let busy = store.take_local_source("busy", "context").unwrap().unwrap();
        fs_err::write(busy.path().join("a"), vec![1; 100]).unwrap();
        let idle = store
            .take_local_source("idle", "dockerfile")
            .unwrap()
            .unwrap();
        fs_err::write(idle.path().join("b"), vec![2; 300]).unwrap();
        drop(idle);
        let sources = |store: &Store| -> Vec<(String, bool, u64, String)> {
            let mut found: Vec<_> = store
                .du()
                .unwrap()
                .entries
                .into_iter()
                .filter(|e| e.kind == "source.local")
                .map(|e| (e.id.clone(), e.reclaimable(), e.size, e.description))
                .collect();
            found.sort();
            found
        };
        assert_eq!(
            sources(&store),
            [
                (
                    "busy".to_owned(),
                    false,
                    100,
                    "local source for context".to_owned()
                ),
                (
                    "idle".to_owned(),
                    true,
                    300,
                    "local source for dockerfile".to_owned()
                ),
            ]
        );
        // The lock files, which hold the sources' names, count in the total only.
        assert_eq!(
            store.du().unwrap().total,
            400 + "context".len() as u64 + "dockerfile".len() as u64
        );
        // Another kind, or an age the directory has not reached, keeps it.
        for filter in ["type=regular", "type=exec.cachemount", "until=1h"] {
            let mut options = PruneOptions::default();
            options.add_filter(filter).unwrap();
            let report = store.prune(&options).unwrap();
            assert!(report.gc.removed_local_sources.is_empty(), "{filter}");
        }
        assert_eq!(sources(&store).len(), 2);
        // A plain prune takes the free one, directory and lock file; the held one stays.
        let report = store.prune(&PruneOptions::default()).unwrap();
        assert_eq!(report.gc.removed_local_sources, ["idle"]);
        assert_eq!(report.gc.freed, 300);
        let sync = root.path().join(LOCAL_SYNC);
        assert!(!sync.join("idle").exists());
        assert!(!sync.join("idle.lock").exists());
        let report = store
            .prune(&PruneOptions {
                all: true,
                ..PruneOptions::default()
            })
            .unwrap();
        assert!(report.gc.removed_local_sources.is_empty());
        assert_eq!(fs_err::read(busy.path().join("a")).unwrap(), vec![1; 100]);
        drop(busy);
        let mut options = PruneOptions::default();
        options.add_filter("type=source.local").unwrap();
        let report = store.prune(&options).unwrap();
        assert_eq!(report.gc.removed_local_sources, ["busy"]);
        assert!(sources(&store).is_empty());
    }
}
