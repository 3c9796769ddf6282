//! The metadata database: images, blobs, snapshots and cache records in redb.
//!
//! Every record is a JSON value (or raw bytes) under a string key in one of a few tables.
//!
//! # Overview
//! Opening a redb database and closing it again costs several `fsync`s (the open marks the file
//! as in use, the close writes the allocator state), and so does every durable commit. A solver
//! vertex makes about four metadata calls, so paying that on each one made metadata the largest
//! cost of a cheap vertex. Instead:
//!
//! 1. **One holder at a time, kept open while busy.** A process opens the database on its first
//!    call and keeps it open. redb locks the file exclusively while it is open, so only one
//!    process (one [`Meta`]) holds it at a time; `meta.lock` (an exclusive `flock`, taken before
//!    the database is opened and released after it is closed) is what other processes wait on.
//! 2. **Handing over to waiting processes.** A process that finds `meta.lock` taken holds a
//!    shared `flock` on `meta.waiting` while it waits. The holder probes `meta.waiting` after
//!    every call and from a background thread every [`POLL`]; when someone waits it flushes,
//!    closes the database and, on its own next call, first lets the waiters in (it waits until
//!    `meta.waiting` is free) before queueing again. A holder also lets go after [`RELEASE_IDLE`]
//!    without calls. Waiting gives up after [`BUSY_TIMEOUT`] with [`Error::DatabaseBusy`].
//!    Within a process a mutex serialises calls.
//! 3. **Lazy commits for records whose loss is harmless.** Cache records, snapshot records,
//!    blob records and last-used times are committed with redb's `Durability::None`: visible at
//!    once in this process, written to disk by the next durable commit. A flush (a durable
//!    commit) happens after [`FLUSH_IDLE`] without calls, at least every [`FLUSH_MAX_AGE`]
//!    while there are lazy commits, before the database is handed over or closed, and on
//!    every durable write. Images and garbage collection commit durably at once.
//! 4. **Data before metadata, in batches.** A lazy write may name directories whose contents
//!    are not yet synced (a committed snapshot's files). Those writes mark the data as unsynced,
//!    and the next durable commit is preceded by one `syncfs` of the store's file system. So
//!    the sync of snapshot directories happens once per flush, not once per snapshot.
//! 5. **Deletion after durable removal.** A directory whose record a lazy write removed (an
//!    active snapshot after its commit, a removed snapshot) is deleted only after the next
//!    durable commit ([`Meta::defer_removal`]); a directory that gets a record again before that
//!    is kept ([`Meta::keep`]).
//!
//! # Crash safety
//! redb commits in order, and a crash keeps exactly the state of the last durable commit; the
//! lazy commits after it are lost. That state only names data that was on disk before that
//! commit: blobs are synced and renamed into place before any record names them; snapshot
//! directories are either synced before their rename (unpacked layers) or covered by the
//! `syncfs` that precedes every durable commit (step results); and directories whose records
//! were removed are deleted only after the removal is durable. So a crash loses at most the
//! newest records (a rebuild runs those steps again, a pull fetches nothing twice because the
//! blobs are still there) and never leaves metadata naming a missing blob or snapshot. The data
//! those lost records named is unreferenced and garbage collection removes it. A process that
//! ends normally flushes when its store is dropped.

use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use redb::{ReadableTable as _, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// One table of JSON records.
#[derive(Clone, Copy)]
pub(crate) struct Table(TableDefinition<'static, &'static str, &'static [u8]>);

pub(crate) const IMAGES: Table = Table(TableDefinition::new("images"));
pub(crate) const BLOBS: Table = Table(TableDefinition::new("blobs"));
pub(crate) const SNAPSHOTS: Table = Table(TableDefinition::new("snapshots"));
pub(crate) const CACHE_RECORDS: Table = Table(TableDefinition::new("cache_records"));
pub(crate) const LEASES: Table = Table(TableDefinition::new("leases"));
/// What each lease holds: one empty record per held thing, keyed `LEASE\nITEM` (see the
/// `lease` module), so holding one more thing is one insert however much the lease holds.
pub(crate) const LEASE_ITEMS: Table = Table(TableDefinition::new("lease_items"));
/// Documents other crates keep in the store (the solver's cache key history), as raw bytes.
pub(crate) const DOCUMENTS: Table = Table(TableDefinition::new("documents"));
/// Records of finished builds (`kiln history`), as raw bytes another crate writes, keyed
/// `CREATED-ID` (the creation time in zero-padded seconds), so they list oldest first.
pub(crate) const BUILDS: Table = Table(TableDefinition::new("builds"));

const ALL_TABLES: [Table; 8] = [
    IMAGES,
    BLOBS,
    SNAPSHOTS,
    CACHE_RECORDS,
    LEASES,
    LEASE_ITEMS,
    DOCUMENTS,
    BUILDS,
];

/// How long to wait for another process to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the background thread looks for waiting processes and idleness.
const POLL: Duration = Duration::from_millis(10);
/// Lazy commits are flushed after this long without calls.
const FLUSH_IDLE: Duration = Duration::from_millis(100);
/// Lazy commits are flushed at least this often, however busy the process is.
const FLUSH_MAX_AGE: Duration = Duration::from_secs(1);
/// The database is closed after this long without calls, even if nobody waits for it.
const RELEASE_IDLE: Duration = Duration::from_secs(1);
/// How long a holder that handed over waits for the waiters to get in before it queues again.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);

/// redb's page cache (its default is 1 GiB, which a large build fills with pages it never
/// reads again).
const CACHE_SIZE: usize = 32 << 20;

/// The name prefix of directories in `snapshots/` that wait to be deleted.
pub(crate) const TRASH_PREFIX: &str = "tmp-trash-";

/// How a write transaction is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// On disk when the call returns (after syncing data marked unsynced by earlier writes).
    Durable,
    /// Visible at once, on disk with the next flush; the records name only synced data.
    Lazy,
    /// Like [`Commit::Lazy`], but the records name data not yet synced to disk: the next
    /// flush syncs the store's file system before its durable commit.
    LazyUnsynced,
}

/// The metadata database of one store, shared by the calls of this process.
#[derive(Debug)]
pub(crate) struct Meta {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The database file.
    path: PathBuf,
    /// The store root (for `syncfs` and the lock files).
    root: PathBuf,
    state: Mutex<State>,
    /// Wakes the background thread when the database is opened.
    wake: mpsc::Sender<()>,
}

#[derive(Debug)]
struct State {
    held: Option<Held>,
    /// The last holding ended by handing over: let the waiters in before queueing again.
    handed_over: bool,
    last_call: Instant,
    /// When the oldest lazy commit not yet flushed was made.
    dirty_since: Option<Instant>,
    /// Lazy commits name data that is not synced yet.
    unsynced_data: bool,
    /// Directories to delete after the next durable commit.
    deferred: HashSet<PathBuf>,
    /// Deferred directories renamed out of the way after the durable commit, to be deleted
    /// without holding the lock (deleting can be slow).
    trash: Vec<PathBuf>,
    /// `meta.waiting`, probed for waiters while the database is held.
    probe: Option<OwnedFd>,
}

/// An open database and the `meta.lock` taken for it (dropped in this order).
struct Held {
    db: redb::Database,
    _lock: Flock<OwnedFd>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}

/// A write transaction handed to [`Meta::write`] closures.
pub(crate) struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
    path: &'a Path,
}

/// Opens the lock file `path`, made if missing, for `flock`.
pub(crate) fn open_lock_file(path: &Path) -> Result<OwnedFd, Error> {
    Ok(fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?
        .into_file()
        .into())
}

fn lock_error(path: &Path, errno: Errno) -> Error {
    io::Error::other(format!("locking {}: {errno}", path.display())).into()
}

/// Flushes the whole file system that holds `root` (`syncfs`).
pub(crate) fn sync_fs(root: &Path) -> Result<(), Error> {
    let dir = fs_err::File::open(root)?;
    nix::unistd::syncfs(&dir)
        .map_err(|e| io::Error::other(format!("syncing {}: {e}", root.display())))?;
    Ok(())
}

impl Meta {
    /// Opens (creating if needed) the database at `root/meta.redb`.
    pub(crate) fn open(root: &Path) -> Result<Self, Error> {
        let (wake, woken) = mpsc::channel();
        let shared = Arc::new(Shared {
            path: root.join("meta.redb"),
            root: root.to_owned(),
            state: Mutex::new(State {
                held: None,
                handed_over: false,
                last_call: Instant::now(),
                dirty_since: None,
                unsynced_data: false,
                deferred: HashSet::new(),
                trash: Vec::new(),
                probe: Some(open_lock_file(&root.join("meta.waiting"))?),
            }),
            wake,
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("kiln-meta".to_owned())
            .spawn(move || background(&weak, &woken))?;
        let meta = Self { shared };
        // Create the file and every table so readers never meet a missing table.
        meta.write_with(Commit::Lazy, |_| Ok(()))?;
        Ok(meta)
    }

    /// Runs `f` in one write transaction and commits it durably if `f` succeeds.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        self.write_with(Commit::Durable, f)
    }

    /// Runs `f` in one write transaction and commits it as `commit` says if `f` succeeds.
    pub(crate) fn write_with<T>(
        &self,
        commit: Commit,
        f: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.write_then(commit, f, |out| out)
    }

    /// Like [`Meta::write_with`], then runs `then` on the result after the commit, before any
    /// other process can get the database: what it does is ordered after the commit and
    /// before every later write of any process (garbage collection moves unreferenced files
    /// away there, so that no writer can meet a half-removed one).
    pub(crate) fn write_then<T, U>(
        &self,
        commit: Commit,
        f: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
        then: impl FnOnce(T) -> U,
    ) -> Result<U, Error> {
        let shared = &*self.shared;
        shared.call(|state| {
            let db = &state.held.as_ref().expect("held during a call").db;
            let mut txn = db.begin_write().map_err(|e| Error::db(&shared.path, e))?;
            for table in ALL_TABLES {
                txn.open_table(table.0)
                    .map_err(|e| Error::db(&shared.path, e))?;
            }
            let out = f(&Tx {
                txn: &txn,
                path: &shared.path,
            })?;
            match commit {
                Commit::Durable => {
                    if state.unsynced_data {
                        sync_fs(&shared.root)?;
                    }
                    txn.set_quick_repair(true);
                }
                Commit::Lazy | Commit::LazyUnsynced => txn.set_durability(redb::Durability::None),
            }
            txn.commit().map_err(|e| Error::db(&shared.path, e))?;
            match commit {
                Commit::Durable => {
                    state.unsynced_data = false;
                    state.dirty_since = None;
                    shared.remove_deferred(state);
                }
                Commit::Lazy => {
                    state.dirty_since.get_or_insert_with(Instant::now);
                }
                Commit::LazyUnsynced => {
                    state.dirty_since.get_or_insert_with(Instant::now);
                    state.unsynced_data = true;
                }
            }
            Ok(then(out))
        })
    }

    /// Makes every lazy commit so far durable (syncing unsynced data first) and deletes the
    /// directories whose removal that made durable.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        let mut state = self.shared.lock();
        let flushed = self.shared.flush(&mut state);
        let trash = std::mem::take(&mut state.trash);
        drop(state);
        empty_trash(trash);
        flushed
    }

    /// Deletes the directory `path` after the next durable commit (its record was removed by
    /// a lazy commit that a crash could undo).
    pub(crate) fn defer_removal(&self, path: PathBuf) {
        self.shared.lock().deferred.insert(path);
    }

    /// Cancels a deferred deletion of `path`: a record names it again.
    pub(crate) fn keep(&self, path: &Path) {
        self.shared.lock().deferred.remove(path);
    }

    /// Reads one record.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, Error> {
        self.read(table, |t, path| {
            let Some(value) = t.get(key).map_err(|e| Error::db(path, e))? else {
                return Ok(None);
            };
            decode(key, value.value()).map(Some)
        })
    }

    /// Lists every record of a table, in key order.
    pub(crate) fn list<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, Error> {
        self.read(table, |t, path| {
            let mut out = Vec::new();
            for item in t.iter().map_err(|e| Error::db(path, e))? {
                let (k, v) = item.map_err(|e| Error::db(path, e))?;
                out.push((k.value().to_owned(), decode(k.value(), v.value())?));
            }
            Ok(out)
        })
    }

    /// Runs `read` on `table` in a read transaction, with the database's path for its errors.
    fn read<R>(
        &self,
        table: Table,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>, &Path) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let shared = &*self.shared;
        shared.call(|state| {
            let db = &state.held.as_ref().expect("held during a call").db;
            let txn = db.begin_read().map_err(|e| Error::db(&shared.path, e))?;
            let t = txn
                .open_table(table.0)
                .map_err(|e| Error::db(&shared.path, e))?;
            read(&t, &shared.path)
        })
    }
}

impl Drop for Meta {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Err(e) = self.shared.release(&mut state) {
            tracing::warn!(path = %self.shared.path.display(), error = %e, "closing the metadata database");
        }
        empty_trash(std::mem::take(&mut state.trash));
    }
}

/// Deletes directories moved to the trash (garbage collection removes what is left of them
/// after a crash: they are `snapshots/tmp-*`).
fn empty_trash(trash: Vec<PathBuf>) {
    for path in trash {
        if let Err(e) = fs_err::remove_dir_all(&path) {
            tracing::warn!(error = %e, "removing a snapshot directory");
        }
    }
}

/// The background thread: hands the database over to waiting processes, flushes and closes
/// it when idle. Sleeps while the database is closed; ends with the [`Meta`].
fn background(shared: &Weak<Shared>, woken: &mpsc::Receiver<()>) {
    let mut held = true;
    loop {
        let message = if held {
            woken.recv_timeout(POLL)
        } else {
            woken.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        if message == Err(RecvTimeoutError::Disconnected) {
            return;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let trash;
        (held, trash) = shared.tick();
        empty_trash(trash);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one call with the database held, then hands it over if another process waits.
    fn call<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
        let mut state = self.lock();
        if state.held.is_none() {
            self.acquire(&mut state)?;
        }
        let out = f(&mut state);
        state.last_call = Instant::now();
        if self.has_waiters(&mut state) {
            state.handed_over = true;
            let released = self.release(&mut state);
            if out.is_ok() {
                released?;
            }
        }
        out
    }

    /// One look of the background thread; returns whether the database is still held, and
    /// the directories to delete.
    fn tick(&self) -> (bool, Vec<PathBuf>) {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return (true, Vec::new()), // a call is running
        };
        let trash = std::mem::take(&mut state.trash);
        if state.held.is_none() {
            return (false, trash);
        }
        let idle = state.last_call.elapsed();
        let result = if self.has_waiters(&mut state) {
            state.handed_over = true;
            self.release(&mut state)
        } else if idle >= RELEASE_IDLE {
            self.release(&mut state)
        } else if state
            .dirty_since
            .is_some_and(|since| idle >= FLUSH_IDLE || since.elapsed() >= FLUSH_MAX_AGE)
        {
            self.flush(&mut state)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "flushing the metadata database");
        }
        (state.held.is_some(), trash)
    }

    /// Opens the database: waits for `meta.lock` (as a waiter, after letting the waiters of a
    /// handover in first), then for redb's own lock.
    fn acquire(&self, state: &mut State) -> Result<(), Error> {
        let start = Instant::now();
        if std::mem::take(&mut state.handed_over) {
            self.let_waiters_in(state);
        }
        let lock_path = self.root.join("meta.lock");
        let mut fd = open_lock_file(&lock_path)?;
        let mut waiting: Option<Flock<OwnedFd>> = None;
        let mut pause = Duration::from_millis(1);
        let lock = loop {
            match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((back, Errno::EWOULDBLOCK)) => fd = back,
                Err((_, errno)) => return Err(lock_error(&lock_path, errno)),
            }
            if waiting.is_none() {
                let path = self.root.join("meta.waiting");
                match Flock::lock(open_lock_file(&path)?, FlockArg::LockSharedNonblock) {
                    Ok(lock) => waiting = Some(lock),
                    // A holder is checking that its waiters got in; register on the next round.
                    Err((_, Errno::EWOULDBLOCK)) => {}
                    Err((_, errno)) => return Err(lock_error(&path, errno)),
                }
            }
            if start.elapsed() > BUSY_TIMEOUT {
                return Err(Error::DatabaseBusy {
                    path: self.path.clone(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL);
        };
        drop(waiting);
        // Every kiln process takes meta.lock first, so redb's lock is normally free here; a
        // process that closes the database just before releasing meta.lock is the exception.
        let mut pause = Duration::from_millis(1);
        let db = loop {
            match redb::Database::builder()
                .set_cache_size(CACHE_SIZE)
                .create(&self.path)
            {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    if start.elapsed() > BUSY_TIMEOUT {
                        return Err(Error::DatabaseBusy {
                            path: self.path.clone(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(POLL);
                }
                Err(e) => return Err(Error::db(&self.path, e)),
            }
        };
        tracing::trace!(path = %self.path.display(), "metadata database opened");
        state.held = Some(Held { db, _lock: lock });
        // The background thread may be gone only if the process is ending.
        let _ = self.wake.send(());
        Ok(())
    }

    /// After handing over: waits (a bounded time) until the processes that were waiting have
    /// taken the database, so this process does not take it straight back.
    fn let_waiters_in(&self, state: &mut State) {
        let start = Instant::now();
        while start.elapsed() < HANDOVER_TIMEOUT && self.has_waiters(state) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether another process waits for the database (holds `meta.waiting` shared).
    fn has_waiters(&self, state: &mut State) -> bool {
        let Some(fd) = state.probe.take() else {
            return false;
        };
        let (fd, waiters) = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => match lock.unlock() {
                Ok(fd) => (Some(fd), false),
                // Closing the file drops the lock; waiters are then served when idle.
                Err((lock, _)) => {
                    drop(lock);
                    (None, false)
                }
            },
            Err((fd, Errno::EWOULDBLOCK)) => (Some(fd), true),
            Err((fd, _)) => (Some(fd), false),
        };
        state.probe = fd;
        waiters
    }

    /// Syncs unsynced data, commits durably, then deletes the deferred directories.
    fn flush(&self, state: &mut State) -> Result<(), Error> {
        if state.dirty_since.is_some() {
            let db = &state
                .held
                .as_ref()
                .expect("lazy commits need the database")
                .db;
            if state.unsynced_data {
                sync_fs(&self.root)?;
            }
            let mut txn = db.begin_write().map_err(|e| Error::db(&self.path, e))?;
            txn.set_quick_repair(true);
            txn.commit().map_err(|e| Error::db(&self.path, e))?;
            state.unsynced_data = false;
            state.dirty_since = None;
            tracing::trace!(path = %self.path.display(), "metadata flushed");
        }
        self.remove_deferred(state);
        Ok(())
    }

    /// Moves the deferred directories (their removal is durable now) to the trash: renamed to
    /// `snapshots/tmp-*` at once, so a record made for the same name later cannot lose its new
    /// directory, and deleted later without the lock.
    fn remove_deferred(&self, state: &mut State) {
        for path in std::mem::take(&mut state.deferred) {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let trash = self.root.join("snapshots").join(format!(
                "{TRASH_PREFIX}{}-{nanos:x}-{}",
                crate::lease::Owner::current().tag(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match fs_err::rename(&path, &trash) {
                Ok(()) => state.trash.push(trash),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "removing a snapshot directory"),
            }
        }
    }

    /// Flushes and closes the database, then releases `meta.lock`.
    fn release(&self, state: &mut State) -> Result<(), Error> {
        if state.held.is_none() {
            return Ok(());
        }
        let flushed = self.flush(state);
        if flushed.is_err() {
            // Closing commits durably; data that could not be synced must not be named.
            tracing::warn!(path = %self.path.display(), "closing the metadata database after a failed flush");
        }
        state.held = None;
        tracing::trace!(path = %self.path.display(), "metadata database released");
        flushed
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Record {
        key: key.to_owned(),
        source,
    })
}

impl Tx<'_> {
    fn err(&self, e: impl Into<redb::Error>) -> Error {
        Error::db(self.path, e)
    }

    pub(crate) fn put<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Record {
            key: key.to_owned(),
            source,
        })?;
        let mut t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        t.insert(key, bytes.as_slice()).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let Some(value) = t.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|source| Error::Record {
                key: key.to_owned(),
                source,
            })
    }

    /// Reads a raw document (see [`DOCUMENTS`]).
    pub(crate) fn get_raw(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let value = t.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Writes a raw document (see [`DOCUMENTS`]).
    pub(crate) fn put_raw(&self, table: Table, key: &str, value: &[u8]) -> Result<(), Error> {
        let mut t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        t.insert(key, value).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn remove(&self, table: Table, key: &str) -> Result<bool, Error> {
        let mut t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let existed = t.remove(key).map_err(|e| self.err(e))?.is_some();
        Ok(existed)
    }

    /// The keys of `table` that start with `prefix`, in order.
    pub(crate) fn keys_with_prefix(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<String>, Error> {
        let t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(|e| self.err(e))? {
            let (k, _) = item.map_err(|e| self.err(e))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(key.to_owned());
        }
        Ok(out)
    }

    /// Removes the records of `table` whose keys start with `prefix`.
    pub(crate) fn remove_prefix(&self, table: Table, prefix: &str) -> Result<usize, Error> {
        let keys = self.keys_with_prefix(table, prefix)?;
        let mut t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        for key in &keys {
            t.remove(key.as_str()).map_err(|e| self.err(e))?;
        }
        Ok(keys.len())
    }

    pub(crate) fn list<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, Error> {
        let t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = k.value().to_owned();
            let value = serde_json::from_slice(v.value()).map_err(|source| Error::Record {
                key: key.clone(),
                source,
            })?;
            out.push((key, value));
        }
        Ok(out)
    }
}
