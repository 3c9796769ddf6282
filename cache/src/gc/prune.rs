//! What a prune removes: its options (docker's filters, BuildKit's space limits), the
//! measure its limits go by, and its choice of cache records and local source directories.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::error::{Error, ValueError};
use crate::gcpolicy::{disk_stat, keep_limit, parse_duration};
use crate::local_source::LocalSource;
use crate::store::{CacheRecord, Store, now};

/// The kinds of build cache `kiln du` lists and `kiln prune --filter type=...` selects, with
/// BuildKit's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// Step results (`regular`).
    Regular,
    /// `RUN --mount=type=cache` directories (`exec.cachemount`).
    CacheMount,
    /// The directories a daemon receives its clients' local sources into (`source.local`).
    LocalSource,
}

impl CacheKind {
    /// BuildKit's name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::CacheMount => "exec.cachemount",
            Self::LocalSource => "source.local",
        }
    }

    /// The kind with BuildKit's name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "regular" => Some(Self::Regular),
            "exec.cachemount" => Some(Self::CacheMount),
            "source.local" => Some(Self::LocalSource),
            _ => None,
        }
    }
}

/// Which build cache [`Store::prune`] removes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneOptions {
    /// Remove every record (and, unless `kind` says otherwise, every cache mount).
    pub all: bool,
    /// Remove records not used for at least this long; with a space limit, only such records
    /// are removed, for the limit (as `docker buildx prune --filter until=.. --keep-storage ..`).
    pub older_than: Option<Duration>,
    /// Then remove least recently used records until the rest fit in this many bytes
    /// (`--keep-storage`; BuildKit's `reservedSpace` alone works the same).
    pub keep_bytes: Option<u64>,
    /// With a space limit, only records unused this long are removed for it.
    pub keep_duration: Option<Duration>,
    /// Space limits as BuildKit's (see the `gcpolicy` module): the records may always keep
    /// this many bytes...
    pub reserved_space: Option<u64>,
    /// ...may use at most this many...
    pub max_used_space: Option<u64>,
    /// ...and are pruned until the file system has this many bytes free.
    pub min_free_space: Option<u64>,
    /// Only this kind of cache (`--filter type=...`): `CacheMount` removes every cache mount
    /// no running build holds and no record; `Regular` leaves cache mounts alone.
    pub kind: Option<CacheKind>,
}

impl PruneOptions {
    /// Narrows the prune by one of docker's prune filters, as `kiln prune --filter` and the
    /// daemon's `Prune` take them: `until=DURATION` (or `unused-for=`) and
    /// `type=regular|exec.cachemount`; containerd's `KEY==VALUE` is read the same.
    pub fn add_filter(&mut self, filter: &str) -> Result<(), ValueError> {
        let Some((key, value)) = filter.split_once('=') else {
            return Err(ValueError::PruneFilter {
                filter: filter.to_owned(),
            });
        };
        let value = value.strip_prefix('=').unwrap_or(value);
        match key {
            "until" | "unused-for" => {
                let duration =
                    parse_duration(value).map_err(|source| ValueError::PruneFilterDuration {
                        filter: filter.to_owned(),
                        source: Box::new(source),
                    })?;
                self.older_than = Some(duration);
            }
            "type" => {
                let kind =
                    CacheKind::from_name(value).ok_or_else(|| ValueError::PruneFilterType {
                        filter: filter.to_owned(),
                    })?;
                self.kind = Some(kind);
            }
            _ => {
                return Err(ValueError::PruneFilterKey {
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Whether a space limit is set.
    pub(super) fn limits_space(&self) -> bool {
        self.keep_bytes.is_some()
            || self.reserved_space.is_some()
            || self.max_used_space.is_some()
            || self.min_free_space.is_some()
    }
}

/// What the space limits of a prune go by: the records' sizes in `kiln du`'s measure (each
/// file once; the solver records no size of its own) and the file system's free bytes.
#[derive(Default)]
pub(super) struct Measure {
    sizes: HashMap<String, u64>,
    free: u64,
}

impl Measure {
    pub(super) fn take(store: &Store) -> Result<Self, Error> {
        let sizes = store
            .du()?
            .entries
            .into_iter()
            .filter(|e| e.kind == "cache")
            .map(|e| (e.id, e.size))
            .collect();
        Ok(Self {
            sizes,
            free: disk_stat(store.root())?.1,
        })
    }
}

/// The cache records `options` selects, least recently used first (none that `held`).
/// `measure` gives the records' sizes and the file system's free bytes for the space limits.
pub(super) fn select_records(
    records: &[CacheRecord],
    options: &PruneOptions,
    held: &HashSet<String>,
    measure: &Measure,
) -> Vec<String> {
    if matches!(
        options.kind,
        Some(CacheKind::CacheMount | CacheKind::LocalSource)
    ) {
        return Vec::new();
    }
    let mut records: Vec<&CacheRecord> = records.iter().filter(|r| !held.contains(&r.id)).collect();
    records.sort_by(|a, b| (a.last_used, &a.id).cmp(&(b.last_used, &b.id)));
    let now = now();
    // With a space limit, an age is BuildKit's keepDuration: it restricts what the limit
    // removes rather than removing everything that old.
    let limited = options.limits_space();
    let keep_duration = if limited {
        options.keep_duration.or(options.older_than)
    } else {
        None
    };
    let mut remove: Vec<String> = Vec::new();
    let mut kept: Vec<&CacheRecord> = Vec::new();
    for record in records {
        let old = !limited
            && options
                .older_than
                .is_some_and(|d| now.saturating_sub(record.last_used) >= d.as_secs());
        if options.all || old {
            remove.push(record.id.clone());
        } else {
            kept.push(record);
        }
    }
    let size = |record: &CacheRecord| {
        measure
            .sizes
            .get(&record.id)
            .copied()
            .unwrap_or(record.size)
    };
    let mut total: u64 = kept.iter().map(|r| size(r)).sum();
    let reserved = match (options.keep_bytes, options.reserved_space) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let limit = keep_limit(
        total,
        measure.free,
        reserved,
        options.max_used_space,
        options.min_free_space,
    );
    if let Some(limit) = limit {
        for record in &kept {
            if total <= limit {
                break;
            }
            let unused_long =
                keep_duration.is_none_or(|d| now.saturating_sub(record.last_used) >= d.as_secs());
            if unused_long {
                total = total.saturating_sub(size(record));
                remove.push(record.id.clone());
            }
        }
    }
    remove
}

/// Whether the prune `options` removes the local source directory `source` (when no build
/// holds it): any prune does but one of another kind, one with an age only if the directory
/// was unused that long, and one with a space limit only with `all` or an age.
pub(super) fn prunes_local_source(options: &PruneOptions, source: &LocalSource) -> bool {
    if options.kind.is_some_and(|k| k != CacheKind::LocalSource) {
        return false;
    }
    let unused_for = |d: Duration| now().saturating_sub(source.last_used) >= d.as_secs();
    if options.all {
        true
    } else if options.limits_space() {
        options
            .keep_duration
            .or(options.older_than)
            .is_some_and(unused_for)
    } else {
        options.older_than.is_none_or(unused_for)
    }
}
