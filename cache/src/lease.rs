//! Leases: what running processes hold, so garbage collection leaves it alone.
//!
//! # Overview
//! BuildKit and containerd keep work in progress away from garbage collection with leases:
//! records that name the content a client is using, which collection treats as roots, and
//! which expire. Here:
//!
//! 1. **A lease belongs to a process.** [`Store::lease`] writes a lease record carrying its
//!    [`Owner`]: the process ID and the process's start time (from `/proc/PID/stat`), so a
//!    reused process ID does not revive a dead lease. A lease whose owner is gone (ended, or
//!    killed with `SIGKILL`) is void: the next collection deletes it and everything only it
//!    held.
//! 2. **Everything used under a lease is held.** While a [`Lease`] of a store lives, the store
//!    adds to its record every snapshot it prepares, commits, unpacks or finds, every blob it
//!    commits, every cache record and image it reads and every cache mount it hands out. A
//!    thing is added *before* it is created or looked up, so a collection either sees the
//!    reference or runs entirely before the thing exists (see the `gc` module).
//! 3. **Temporary files carry their owner.** Blobs in `ingest/`, directories in
//!    `snapshots/tmp-*` and `tmp/`, and files beside export destinations outside the store
//!    (`.NAME.tmp-<tag>-*`, their directories listed in the owner's `tmp/` directory) are
//!    named with the owner's tag ([`Owner::tag`]); collection removes them once that process
//!    is gone, and never while it lives. Everything else a process writes in the store goes
//!    through these (its scratch directory for atomic writes of other files).
//! 4. **Active snapshots record their owner**, so the writable layer of a step survives
//!    collection while its process lives, even without a lease, and goes once it is dead.
//!
//! Leases are records in the metadata database, so adding to one is ordered with a
//! collection's mark by the database's own lock; they are committed lazily (a crash loses a
//! lease with its process, which voids it anyway). Each held thing is a record of its own
//! (`LEASE\nITEM`), not an entry in one set per lease: a build holds thousands of things, and
//! rewriting the whole set on every addition made a 2,000-vertex build quadratic.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use kiln_llb::Digest;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::meta::{self, Commit, Meta, Tx};
use crate::store::now;

/// A process, identified so that a reused process ID is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The process ID.
    pub pid: u32,
    /// When the process started, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Self {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Self::of(pid).unwrap_or(Self { pid, start: 0 })
        })
    }

    /// The process with this ID now, if there is one that can still do anything (a zombie
    /// cannot).
    fn of(pid: u32) -> Option<Self> {
        let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last `)`.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        if matches!(fields.first(), Some(&("Z" | "X" | "x"))) {
            return None;
        }
        // Field 3 (the state) is `fields[0]`, so field 22 is `fields[19]`.
        let start = fields.get(19)?.parse().ok()?;
        Some(Self { pid, start })
    }

    /// Whether this process is still running.
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid) == Some(*self)
    }

    /// The owner's tag in file names: `p<pid>s<start>`.
    pub fn tag(&self) -> String {
        format!("p{}s{}", self.pid, self.start)
    }

    /// The owner named by the first `-`-separated part of `name` that is a tag.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        name.split('-').find_map(|part| {
            let (pid, start) = part.strip_prefix('p')?.split_once('s')?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(pid) || !digits(start) {
                return None;
            }
            Some(Self {
                pid: pid.parse().ok()?,
                start: start.parse().ok()?,
            })
        })
    }
}

/// Remembers which owners were found alive, so one collection reads `/proc` once per owner.
#[derive(Debug, Default)]
pub(crate) struct Liveness(std::collections::HashMap<Owner, bool>);

impl Liveness {
    pub(crate) fn alive(&mut self, owner: &Owner) -> bool {
        *self.0.entry(*owner).or_insert_with(|| owner.is_alive())
    }

    /// Whether a temporary name belongs to a live process (names without an owner do not).
    pub(crate) fn owned_by_live(&mut self, name: &str) -> bool {
        Owner::from_name(name).is_some_and(|owner| self.alive(&owner))
    }
}

/// A lease's record: its owner. What it holds are records of their own in
/// [`meta::LEASE_ITEMS`] (see [`Held::key`]), so that holding one more thing costs one insert
/// rather than rewriting a set that grows with the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub(crate) owner: Owner,
    pub(crate) created: u64,
}

impl LeaseRecord {
    fn new() -> Self {
        Self {
            owner: Owner::current(),
            created: now(),
        }
    }
}

/// One thing a lease holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Held {
    /// A snapshot key (and so its ancestors).
    Snapshot(String),
    /// A blob.
    Blob(Digest),
    /// A build cache record (and so its blobs and snapshots).
    Record(String),
    /// A cache mount directory (its name under `cache-mounts/`).
    CacheMount(String),
}

impl Held {
    /// The key of the record saying that lease `id` holds this: the lease's key (which holds
    /// no newline), a newline, a letter for the kind and the thing's name.
    fn key(&self, id: &str) -> String {
        match self {
            Held::Snapshot(key) => format!("{id}\ns{key}"),
            Held::Blob(digest) => format!("{id}\nb{digest}"),
            Held::Record(record) => format!("{id}\nr{record}"),
            Held::CacheMount(name) => format!("{id}\nm{name}"),
        }
    }

    /// The thing a key made by [`Held::key`] names, after its `LEASE\n` prefix.
    fn parse(item: &str) -> Option<Self> {
        let mut chars = item.chars();
        let kind = chars.next()?;
        let name = chars.as_str().to_owned();
        Some(match kind {
            's' => Held::Snapshot(name),
            'b' => Held::Blob(name.parse().ok()?),
            'r' => Held::Record(name),
            'm' => Held::CacheMount(name),
            _ => return None,
        })
    }
}

/// What lease `id` holds.
pub(crate) fn held_by(tx: &Tx<'_>, id: &str) -> Result<Vec<Held>, Error> {
    let prefix = format!("{id}\n");
    let keys = tx.keys_with_prefix(meta::LEASE_ITEMS, &prefix)?;
    Ok(keys
        .iter()
        .filter_map(|key| {
            let held = Held::parse(&key[prefix.len()..]);
            if held.is_none() {
                tracing::warn!(key = %key.escape_debug(), "ignoring an unreadable lease item");
            }
            held
        })
        .collect())
}

/// Removes lease `id` and what it holds.
pub(crate) fn remove_lease(tx: &Tx<'_>, id: &str) -> Result<(), Error> {
    tx.remove(meta::LEASES, id)?;
    tx.remove_prefix(meta::LEASE_ITEMS, &format!("{id}\n"))?;
    Ok(())
}

/// The lease state of one [`Store`](crate::Store): at most one lease record at a time,
/// shared by every [`Lease`] guard of the store.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    state: Mutex<LeaseState>,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// The lease record's key, while any guard lives.
    id: Option<String>,
    guards: usize,
    /// What the record holds already.
    held: HashSet<Held>,
}

/// Adds things to the store's lease; cheap to clone (blob writers carry one).
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub(crate) meta: Arc<Meta>,
    pub(crate) leases: Arc<Leases>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Holder {
    /// Whether a lease is alive.
    pub(crate) fn is_leased(&self) -> bool {
        self.leases.lock().id.is_some()
    }

    /// Takes a lease (or joins the store's live one).
    pub(crate) fn lease(&self) -> Result<Lease, Error> {
        let mut state = self.leases.lock();
        if state.id.is_none() {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let owner = Owner::current();
            let id = format!("{}-{}", owner.tag(), NEXT.fetch_add(1, Ordering::Relaxed));
            self.meta.write_with(Commit::Lazy, |tx| {
                tx.put(meta::LEASES, &id, &LeaseRecord::new())
            })?;
            tracing::debug!(lease = %id, "lease taken");
            state.id = Some(id);
            state.held.clear();
        }
        state.guards += 1;
        Ok(Lease {
            holder: self.clone(),
        })
    }

    /// The lease's key and the things of `items` it does not hold yet; `None` without a
    /// lease or when it holds them all.
    pub(crate) fn missing(&self, items: &[Held]) -> Option<(String, Vec<Held>)> {
        let state = self.leases.lock();
        let id = state.id.clone()?;
        let missing: Vec<Held> = items
            .iter()
            .filter(|h| !state.held.contains(h))
            .cloned()
            .collect();
        (!missing.is_empty()).then_some((id, missing))
    }

    /// Adds `items` to the lease record `id` inside a write transaction.
    pub(crate) fn add_in(tx: &Tx<'_>, id: &str, items: &[Held]) -> Result<(), Error> {
        // A lease record removed by a collection (it thought the owner dead) is written again.
        if tx.get_raw(meta::LEASES, id)?.is_none() {
            tx.put(meta::LEASES, id, &LeaseRecord::new())?;
        }
        for item in items {
            tx.put_raw(meta::LEASE_ITEMS, &item.key(id), &[])?;
        }
        Ok(())
    }

    /// Remembers that the lease `id` holds `items` (after the transaction that added them).
    pub(crate) fn added(&self, id: &str, items: Vec<Held>) {
        let mut state = self.leases.lock();
        if state.id.as_deref() == Some(id) {
            state.held.extend(items);
        }
    }

    /// Adds `items` to the store's lease, if it has one, before they are created or used.
    pub(crate) fn hold(&self, items: &[Held]) -> Result<(), Error> {
        let Some((id, missing)) = self.missing(items) else {
            return Ok(());
        };
        self.meta
            .write_with(Commit::Lazy, |tx| Self::add_in(tx, &id, &missing))?;
        self.added(&id, missing);
        Ok(())
    }
}

/// Keeps what the store uses away from garbage collection while it lives (see
/// [`Store::lease`](crate::Store::lease)); void once its process is gone.
#[derive(Debug)]
pub struct Lease {
    holder: Holder,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.holder.leases.lock();
        state.guards = state.guards.saturating_sub(1);
        if state.guards > 0 {
            return;
        }
        let Some(id) = state.id.take() else {
            return;
        };
        state.held.clear();
        drop(state);
        let removed = self
            .holder
            .meta
            .write_with(Commit::Lazy, |tx| remove_lease(tx, &id));
        match removed {
            Ok(_) => tracing::debug!(lease = %id, "lease released"),
            // Void anyway once this process ends.
            Err(e) => tracing::warn!(lease = %id, error = %e, "releasing a lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_tagged() {
        let me = Owner::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start > 0);
        assert!(me.is_alive());
        assert_eq!(
            Owner::from_name(&format!("blob-{}-x1y2z3", me.tag())),
            Some(me)
        );
        // Another start time is another process that had the same ID.
        assert!(
            !Owner {
                start: me.start + 1,
                ..me
            }
            .is_alive()
        );
        assert_eq!(Owner::from_name("tmp-leftover"), None);
        assert_eq!(Owner::from_name("tmp-ps12"), None);
    }

    #[test]
    fn held_items_round_trip_through_their_keys() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        for held in [
            Held::Snapshot("sha256:x/y z".into()),
            Held::Blob(digest),
            Held::Record("rec\nord".into()),
            Held::CacheMount(String::new()),
        ] {
            let key = held.key("p1s2-3");
            let rest = key.strip_prefix("p1s2-3\n").expect("keyed by the lease");
            assert_eq!(Held::parse(rest), Some(held));
        }
        assert_eq!(Held::parse("x-unknown"), None);
        assert_eq!(Held::parse("bsha256:short"), None);
        assert_eq!(Held::parse(""), None);
    }

    #[test]
    fn a_killed_process_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let owner = Owner::of(child.id()).expect("a running child has a stat file");
        assert!(owner.is_alive());
        child.kill().unwrap();
        // Killed but not yet reaped, it is a zombie: dead already.
        let start = std::time::Instant::now();
        while owner.is_alive() {
            assert!(start.elapsed().as_secs() < 10, "still alive after SIGKILL");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(!owner.is_alive());
    }
}
