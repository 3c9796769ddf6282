//! Records of finished builds in the metadata database (`kiln history`, `kiln explain`).
//!
//! The store keeps each record as the bytes its writer made (the solver's build record, as
//! JSON), keyed by its creation time (nanoseconds, each later than the last record's even if
//! the clock went back) and id, so they list in the order they were saved. Saving one drops the
//! records beyond [`BuildHistoryLimits`] in the same transaction, as BuildKit's history
//! (`[history] maxAge`, `maxEntries`) bounds its own.

use crate::error::Error;
use crate::meta::{self, Commit};
use crate::store::{Store, now};

/// How many build records the store keeps, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildHistoryLimits {
    /// At most this many records; the oldest go first.
    pub max_entries: usize,
    /// Records older than this many seconds go.
    pub max_age_secs: u64,
}

impl Default for BuildHistoryLimits {
    /// BuildKit's defaults: 50 records, 48 hours.
    fn default() -> Self {
        Self {
            max_entries: 50,
            max_age_secs: 48 * 3600,
        }
    }
}

/// One stored build record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBuild {
    /// The build's id.
    pub id: String,
    /// When it was saved (seconds since the Unix epoch).
    pub created: u64,
    /// The record, as its writer made it.
    pub bytes: Vec<u8>,
}

const NANOS: u64 = 1_000_000_000;

/// The key of a record saved at `nanos` (since the Unix epoch).
fn build_key(nanos: u64, id: &str) -> String {
    format!("{nanos:020}-{id}")
}

/// The time (nanoseconds) and id of a record's key.
fn parse_key(key: &str) -> Option<(u64, &str)> {
    let (nanos, id) = key.split_once('-')?;
    Some((nanos.parse().ok()?, id))
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Store {
    /// Saves the record of build `id`, then drops the records beyond `limits`. An id is
    /// letters, digits, `_` and `-` (at most 64).
    pub fn put_build_record(
        &self,
        id: &str,
        bytes: &[u8],
        limits: BuildHistoryLimits,
    ) -> Result<(), Error> {
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidBuildId { id: id.to_owned() });
        }
        self.meta.write_with(Commit::Lazy, |tx| {
            let last = tx
                .keys_with_prefix(meta::BUILDS, "")?
                .last()
                .and_then(|k| parse_key(k))
                .map_or(0, |(at, _)| at);
            let nanos = now_nanos().max(last + 1);
            tx.put_raw(meta::BUILDS, &build_key(nanos, id), bytes)?;
            let keys = tx.keys_with_prefix(meta::BUILDS, "")?;
            let too_many = keys.len().saturating_sub(limits.max_entries);
            let now = now();
            for (n, key) in keys.iter().enumerate() {
                let old = parse_key(key)
                    .is_none_or(|(at, _)| now.saturating_sub(at / NANOS) > limits.max_age_secs);
                if n < too_many || old {
                    tx.remove(meta::BUILDS, key)?;
                }
            }
            Ok(())
        })
    }

    /// The stored build records, oldest first.
    pub fn build_records(&self) -> Result<Vec<StoredBuild>, Error> {
        self.meta.write_with(Commit::Lazy, |tx| {
            let mut out = Vec::new();
            for key in tx.keys_with_prefix(meta::BUILDS, "")? {
                let Some((nanos, id)) = parse_key(&key) else {
                    continue;
                };
                if let Some(bytes) = tx.get_raw(meta::BUILDS, &key)? {
                    out.push(StoredBuild {
                        id: id.to_owned(),
                        created: nanos / NANOS,
                        bytes,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Removes every build record (`kiln prune --history`); returns how many there were.
    pub fn remove_build_records(&self) -> Result<usize, Error> {
        self.meta
            .write_with(Commit::Lazy, |tx| tx.remove_prefix(meta::BUILDS, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of the kept build records, oldest first.
    fn ids(store: &Store) -> Vec<String> {
        let records = store.build_records().unwrap();
        records.into_iter().map(|b| b.id).collect()
    }

    #[test]
    fn build_records_are_listed_oldest_first_bounded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let limits = BuildHistoryLimits {
            max_entries: 2,
            max_age_secs: 3600,
        };
        for id in ["a1", "b2", "c3"] {
            store.put_build_record(id, id.as_bytes(), limits).unwrap();
        }
        let kept = store.build_records().unwrap();
        // In the order saved, whatever their ids: the first one went.
        assert_eq!(ids(&store), ["b2", "c3"]);
        store.put_build_record("a0", b"a0", limits).unwrap();
        assert_eq!(ids(&store), ["c3", "a0"]);
        assert_eq!(kept[1].bytes, b"c3");
        // A record older than the age limit goes when the next one is saved.
        store
            .meta
            .write_with(Commit::Lazy, |tx| {
                tx.put_raw(
                    meta::BUILDS,
                    &build_key((now() - 7200) * NANOS, "old"),
                    b"x",
                )
            })
            .unwrap();
        let roomy = BuildHistoryLimits {
            max_entries: 10,
            ..limits
        };
        store.put_build_record("d4", b"d4", roomy).unwrap();
        assert_eq!(ids(&store), ["c3", "a0", "d4"]);
        let err = store
            .put_build_record("../x", b"", limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("../x"), "{err}");
        assert_eq!(store.remove_build_records().unwrap(), 3);
        assert!(store.build_records().unwrap().is_empty());
    }
}
