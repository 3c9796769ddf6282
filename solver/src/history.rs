//! What the scheduler remembers between builds about how each op was keyed, and why vertices
//! missed the cache.
//!
//! # Overview
//!
//! 1. Every vertex the scheduler resolves (from the cache or by running it) leaves a
//!    [`KeyRecord`] under its op's cache digest: its definition-based key, its content-based
//!    key if it has one, its own content digest (for sources such as local directories) and
//!    its inputs' keys.
//! 2. When a later build misses the cache for an op with the same digest, comparing the new
//!    keys with that record says why, as a [`MissReason`]: nothing was ever cached for the op,
//!    its content changed (and which file, when the op can tell), an input's key changed, or
//!    the same key's result was pruned. An op whose digest is new but whose [`Lineage`] (what
//!    stays of it when its variable parts change: for a process, its definition without its
//!    environment's values; for an image, its name without what it resolved to) was seen
//!    before is compared with that record, fact by fact: which environment variable (a
//!    Dockerfile's build arg) or which image digest changed ([`DefinitionChange`]). An op
//!    with neither is compared with the ops last keyed at its place (the same kind of op on
//!    the same inputs: a `RUN` whose command changed), part by part ([`Outline`]); of
//!    several there, the one it differs least from.
//! 3. The reasons of the latest builds are kept by vertex digest ([`History::misses`]), for
//!    `kiln explain`. The [`CacheStore`](crate::CacheStore) persists the whole [`History`]
//!    beside its cache records.
//! 4. Builds running at once each keep their own copy; saving merges a copy's new entries
//!    into the stored history ([`History::merge_into`]) under the store's lock, so no build's
//!    entries are lost.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cache_key::CacheKey;

/// How many op records and miss reasons a history keeps; the least recently used go first.
const MAX_ENTRIES: usize = 20_000;

/// How many place records a history keeps (each holds an op's parts, up to a few KiB).
const MAX_PLACES: usize = 2_000;

/// Why a vertex was run instead of taken from the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MissReason {
    /// The cache was not consulted (`--no-cache`, or the `ignore_cache` of the vertex or of
    /// one below it).
    Ignored,
    /// Nothing was ever cached for this op.
    NoRecord,
    /// The op's own content changed (for a local source: the selected files).
    ContentChanged {
        /// The content digest of the cached result.
        old: String,
        /// The content digest now.
        new: String,
        /// A file that changed, was added or was removed, when the op can tell.
        file: Option<String>,
        /// How that file changed, when the op can tell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<FileChange>,
    },
    /// An input's key changed.
    InputChanged {
        /// The index of the input.
        input: usize,
        /// The digest of the input's vertex (names are not kept: a command line may hold
        /// anything, and the history lives in the store).
        vertex: String,
        /// The input's key then.
        old: String,
        /// The input's key now.
        new: String,
    },
    /// The key is the one cached, but its result is gone (pruned).
    Pruned,
    /// The op's definition changed since an op of the same lineage was keyed.
    DefinitionChanged {
        /// What changed, fact by fact; empty when only a part with no fact changed.
        changes: Vec<DefinitionChange>,
    },
}

/// How one file of a source changed between two builds (sizes in bytes, `sha256:` digests of
/// the content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum FileChange {
    /// The file is new.
    Added {
        /// Its size.
        size: u64,
        /// Its content digest.
        sha256: String,
    },
    /// The file is gone.
    Removed {
        /// Its size then.
        size: u64,
        /// Its content digest then.
        sha256: String,
    },
    /// The file's mode changed, its content did not.
    ModeChanged {
        /// Its `st_mode` then.
        old_mode: u32,
        /// Its `st_mode` now.
        new_mode: u32,
    },
    /// The file's content changed.
    Modified {
        /// Its size then.
        old_size: u64,
        /// Its size now.
        new_size: u64,
        /// Its content digest then.
        old_sha256: String,
        /// Its content digest now.
        new_sha256: String,
    },
}

/// One thing an op's definition says that may change between builds while the op stays
/// "the same step" (see [`Lineage`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fact {
    /// An environment variable of a process, by a digest of its value (for LLB: the first 16
    /// hex digits of its sha256; values are not kept: they may be secrets, and the history
    /// lives in the store).
    Env {
        /// The variable's name.
        name: String,
        /// A digest of its value.
        value: String,
    },
    /// The image a source reads, and the digest it resolved to.
    Image {
        /// The reference as written.
        reference: String,
        /// The manifest (or index) digest it named.
        digest: String,
    },
}

/// What identifies an op across builds when its variable parts change, and those parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// A digest of the op without its facts.
    pub id: String,
    /// The op's facts.
    pub facts: Vec<Fact>,
}

/// How one fact of an op's definition changed (see [`MissReason::DefinitionChanged`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DefinitionChange {
    /// An environment variable was set, unset or given another value (a Dockerfile's build
    /// args reach its `RUN` steps this way).
    Env {
        /// The variable's name.
        name: String,
        /// A digest of the value before (`None`: it was not set).
        old: Option<String>,
        /// A digest of the value now (`None`: it is not set).
        new: Option<String>,
    },
    /// The image a reference names resolved to another digest.
    Image {
        /// The reference.
        reference: String,
        /// The digest before.
        old: String,
        /// The digest now.
        new: String,
    },
    /// A named part of the op (see [`kiln_llb::outline`]: its command, working directory, a
    /// mount, a file action) was added, removed or changed, compared with the op last keyed
    /// at the same place: the same kind of op on the same inputs.
    Field {
        /// The part's name (`command`, `mount /cache`, `action 1`).
        name: String,
        /// Its value before (`None`: it was not there).
        old: Option<String>,
        /// Its value now (`None`: it is gone).
        new: Option<String>,
    },
}

/// The changes from `old` facts to `new` ones.
pub(crate) fn diff_facts(old: &[Fact], new: &[Fact]) -> Vec<DefinitionChange> {
    use std::collections::BTreeMap;
    let env = |facts: &[Fact]| -> BTreeMap<String, String> {
        facts
            .iter()
            .filter_map(|f| match f {
                Fact::Env { name, value } => Some((name.clone(), value.clone())),
                Fact::Image { .. } => None,
            })
            .collect()
    };
    let images = |facts: &[Fact]| -> BTreeMap<String, String> {
        facts
            .iter()
            .filter_map(|f| match f {
                Fact::Image { reference, digest } => Some((reference.clone(), digest.clone())),
                Fact::Env { .. } => None,
            })
            .collect()
    };
    let (old_env, new_env) = (env(old), env(new));
    let mut names: BTreeSet<&String> = old_env.keys().collect();
    names.extend(new_env.keys());
    let mut changes: Vec<DefinitionChange> = names
        .into_iter()
        .filter(|name| old_env.get(*name) != new_env.get(*name))
        .map(|name| DefinitionChange::Env {
            name: name.clone(),
            old: old_env.get(name).cloned(),
            new: new_env.get(name).cloned(),
        })
        .collect();
    let old_images = images(old);
    for (reference, digest) in images(new) {
        if let Some(before) = old_images.get(&reference).filter(|b| **b != digest) {
            changes.push(DefinitionChange::Image {
                reference,
                old: before.clone(),
                new: digest,
            });
        }
    }
    changes
}

/// The changes from `old` fields to `new` ones, in the order of `new`, then those removed.
pub(crate) fn diff_fields(
    old: &[(String, String)],
    new: &[(String, String)],
) -> Vec<DefinitionChange> {
    let value = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut changes: Vec<DefinitionChange> = new
        .iter()
        .filter_map(|(name, now)| {
            let before = value(old, name);
            (before.as_ref() != Some(now)).then(|| DefinitionChange::Field {
                name: name.clone(),
                old: before,
                new: Some(now.clone()),
            })
        })
        .collect();
    changes.extend(
        old.iter()
            .filter(|(name, _)| value(new, name).is_none())
            .map(|(name, before)| DefinitionChange::Field {
                name: name.clone(),
                old: Some(before.clone()),
                new: None,
            }),
    );
    changes
}

/// An op as a user names its parts, and the kind of op it is (only ops of one kind are
/// compared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outline {
    /// The kind of op (`exec`, `file`).
    pub kind: &'static str,
    /// Its parts, by name (see [`kiln_llb::outline`]).
    pub fields: Vec<(String, String)>,
}

/// An op last keyed at a place of a graph (a kind of op on given inputs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlaceRecord {
    /// The op's cache digest.
    pub(crate) op: String,
    /// Its parts, by name.
    pub(crate) fields: Vec<(String, String)>,
    /// Its lineage's facts, if it has a lineage.
    pub(crate) facts: Vec<Fact>,
    /// The name of its vertex (a step's name; build records keep it too).
    pub(crate) name: String,
    /// When it was last used: the history's generation then.
    pub(crate) used: u64,
}

/// The last op of a lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LineageRecord {
    /// The op's cache digest.
    pub(crate) op: String,
    /// Its facts.
    pub(crate) facts: Vec<Fact>,
    /// When it was last used: the history's generation then.
    pub(crate) used: u64,
}

/// How an op was last keyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    /// The definition-based key.
    pub(crate) key: CacheKey,
    /// The content-based key its dependents build on, if it has one.
    pub(crate) alt: Option<CacheKey>,
    /// The key by its inputs' content-based keys, if it has one.
    #[serde(default)]
    pub(crate) inputs_alt: Option<CacheKey>,
    /// The op's own content digest (sources).
    pub(crate) content: Option<String>,
    /// Each input's key, as mixed into `key`.
    pub(crate) inputs: Vec<String>,
    /// When it was last used: the history's generation then.
    pub(crate) used: u64,
}

/// Why one vertex missed, in a given build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissRecord {
    /// Why it missed.
    pub reason: MissReason,
    /// The generation (build) it was recorded in.
    pub generation: u64,
}

/// Key records by op cache digest and miss reasons by vertex digest.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    generation: u64,
    ops: BTreeMap<String, KeyRecord>,
    misses: BTreeMap<String, MissRecord>,
    /// The last op of each lineage, by lineage id.
    #[serde(default)]
    lineages: BTreeMap<String, LineageRecord>,
    /// The ops keyed at each place, by place id and op digest (`PLACE OP`).
    #[serde(default)]
    places: BTreeMap<String, PlaceRecord>,
    /// Ops recorded since the last save.
    #[serde(skip)]
    changed_ops: BTreeSet<String>,
    /// Misses recorded since the last save.
    #[serde(skip)]
    changed_misses: BTreeSet<String>,
    /// Lineages recorded since the last save.
    #[serde(skip)]
    changed_lineages: BTreeSet<String>,
    /// Places recorded since the last save.
    #[serde(skip)]
    changed_places: BTreeSet<String>,
}

/// Two histories are equal when they record the same; what is not saved yet is not compared.
impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        (
            self.generation,
            &self.ops,
            &self.misses,
            &self.lineages,
            &self.places,
        ) == (
            other.generation,
            &other.ops,
            &other.misses,
            &other.lineages,
            &other.places,
        )
    }
}

impl Eq for History {}

impl History {
    /// The history as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a history always serializes")
    }

    /// A history from JSON; anything unreadable is an empty history (it is only a record).
    pub fn from_json(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// Starts the record of a new build.
    pub(crate) fn next_generation(&mut self) {
        self.generation += 1;
    }

    pub(crate) fn op(&self, digest: &str) -> Option<&KeyRecord> {
        self.ops.get(digest)
    }

    pub(crate) fn record_op(&mut self, digest: &str, mut record: KeyRecord) {
        record.used = self.generation;
        self.ops.insert(digest.to_owned(), record);
        self.changed_ops.insert(digest.to_owned());
    }

    pub(crate) fn lineage(&self, id: &str) -> Option<&LineageRecord> {
        self.lineages.get(id)
    }

    pub(crate) fn record_lineage(&mut self, lineage: &Lineage, op: &str) {
        self.changed_lineages.insert(lineage.id.clone());
        self.lineages.insert(
            lineage.id.clone(),
            LineageRecord {
                op: op.to_owned(),
                facts: lineage.facts.clone(),
                used: self.generation,
            },
        );
    }

    /// The ops last keyed at `place`, but `op`.
    pub(crate) fn place(&self, place: &str, op: &str) -> Vec<PlaceRecord> {
        let prefix = format!("{place} ");
        self.places
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, record)| record)
            .filter(|record| record.op != op)
            .cloned()
            .collect()
    }

    pub(crate) fn record_place(
        &mut self,
        place: &str,
        op: &str,
        outline: &Outline,
        name: &str,
        facts: &[Fact],
    ) {
        let key = format!("{place} {op}");
        self.changed_places.insert(key.clone());
        self.places.insert(
            key,
            PlaceRecord {
                op: op.to_owned(),
                fields: outline.fields.clone(),
                facts: facts.to_vec(),
                name: name.to_owned(),
                used: self.generation,
            },
        );
    }

    pub(crate) fn record_miss(&mut self, vertex: &str, reason: MissReason) {
        self.changed_misses.insert(vertex.to_owned());
        self.misses.insert(
            vertex.to_owned(),
            MissRecord {
                reason,
                generation: self.generation,
            },
        );
    }

    /// Why each vertex missed in the latest build that missed any, by vertex digest.
    pub fn misses(&self) -> BTreeMap<&str, &MissRecord> {
        let latest = self.misses.values().map(|m| m.generation).max();
        self.misses
            .iter()
            .filter(|(_, m)| Some(m.generation) == latest)
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }

    /// Why the vertex with this digest last missed.
    pub fn miss(&self, vertex: &str) -> Option<&MissRecord> {
        self.misses.get(vertex)
    }

    /// Makes this history `stored` (what was saved last, by any build) plus the entries
    /// recorded here since the last save. This build's generation becomes the newest, so its
    /// misses are the ones [`History::misses`] shows.
    pub fn merge_into(&mut self, mut stored: History) {
        let current = self.generation;
        let generation = current.max(stored.generation + 1);
        // Entries last used by this build take the generation it is saved as.
        fn merge<V: Clone>(
            changed: &BTreeSet<String>,
            mine: &BTreeMap<String, V>,
            stored: &mut BTreeMap<String, V>,
            (current, generation): (u64, u64),
            used: impl Fn(&mut V) -> &mut u64,
        ) {
            for key in changed {
                if let Some(entry) = mine.get(key) {
                    let mut entry = entry.clone();
                    if *used(&mut entry) == current {
                        *used(&mut entry) = generation;
                    }
                    stored.insert(key.clone(), entry);
                }
            }
        }
        let generations = (current, generation);
        merge(
            &self.changed_ops,
            &self.ops,
            &mut stored.ops,
            generations,
            |r| &mut r.used,
        );
        merge(
            &self.changed_misses,
            &self.misses,
            &mut stored.misses,
            generations,
            |m| &mut m.generation,
        );
        merge(
            &self.changed_lineages,
            &self.lineages,
            &mut stored.lineages,
            generations,
            |l| &mut l.used,
        );
        merge(
            &self.changed_places,
            &self.places,
            &mut stored.places,
            generations,
            |p| &mut p.used,
        );
        stored.generation = generation;
        stored.trim();
        self.generation = stored.generation;
        self.ops = stored.ops;
        self.misses = stored.misses;
        self.lineages = stored.lineages;
        self.places = stored.places;
    }

    /// Forgets which entries are new: they are saved.
    pub fn mark_saved(&mut self) {
        self.changed_ops.clear();
        self.changed_misses.clear();
        self.changed_lineages.clear();
        self.changed_places.clear();
    }

    /// Drops the least recently used entries beyond the limit.
    pub(crate) fn trim(&mut self) {
        fn trim_map<V>(map: &mut BTreeMap<String, V>, max: usize, used: impl Fn(&V) -> u64) {
            if map.len() <= max {
                return;
            }
            let mut ages: Vec<u64> = map.values().map(&used).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() - max];
            map.retain(|_, v| used(v) >= cutoff);
        }
        trim_map(&mut self.ops, MAX_ENTRIES, |r| r.used);
        trim_map(&mut self.misses, MAX_ENTRIES, |m| m.generation);
        trim_map(&mut self.lineages, MAX_ENTRIES, |l| l.used);
        trim_map(&mut self.places, MAX_PLACES, |p| p.used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_changes_name_the_variable_and_the_image() {
        let env = |name: &str, value: &str| Fact::Env {
            name: name.into(),
            value: value.into(),
        };
        let image = |digest: &str| Fact::Image {
            reference: "busybox".into(),
            digest: digest.into(),
        };
        let old = [env("A", "1"), env("B", "2"), image("sha256:1")];
        let new = [env("A", "1"), env("C", "3"), image("sha256:2")];
        assert_eq!(
            diff_facts(&old, &new),
            [
                DefinitionChange::Env {
                    name: "B".into(),
                    old: Some("2".into()),
                    new: None
                },
                DefinitionChange::Env {
                    name: "C".into(),
                    old: None,
                    new: Some("3".into())
                },
                DefinitionChange::Image {
                    reference: "busybox".into(),
                    old: "sha256:1".into(),
                    new: "sha256:2".into()
                },
            ]
        );
        assert!(diff_facts(&old, &old).is_empty());
    }

    #[test]
    fn history_round_trips_through_json_and_keeps_the_latest_misses() {
        let mut history = History::default();
        history.next_generation();
        history.record_miss("v1", MissReason::NoRecord);
        history.next_generation();
        let reason = MissReason::InputChanged {
            input: 1,
            vertex: "src".into(),
            old: "a".into(),
            new: "b".into(),
        };
        history.record_miss("v2", reason.clone());
        history.record_op(
            "op",
            KeyRecord {
                key: CacheKey::from_bytes([3; 32]),
                alt: None,
                inputs_alt: Some(CacheKey::from_bytes([4; 32])),
                content: Some("c".into()),
                inputs: vec!["i".into()],
                used: 0,
            },
        );
        let back = History::from_json(&history.to_json());
        assert_eq!(back, history);
        assert_eq!(back.op("op").unwrap().used, 2);
        let misses = back.misses();
        assert_eq!(misses.keys().copied().collect::<Vec<_>>(), ["v2"]);
        assert_eq!(misses["v2"].reason, reason);
        let json = String::from_utf8(history.to_json()).unwrap();
        assert!(json.contains(r#""kind":"input-changed""#), "{json}");
        assert!(
            json.contains(&format!("\"sha256:{}\"", "03".repeat(32))),
            "{json}"
        );
        assert_eq!(History::from_json(b"not json"), History::default());
    }

    fn key_record(byte: u8) -> KeyRecord {
        KeyRecord {
            key: CacheKey::from_bytes([byte; 32]),
            alt: None,
            inputs_alt: None,
            content: None,
            inputs: Vec::new(),
            used: 0,
        }
    }

    #[test]
    fn concurrent_builds_merge_without_losing_entries() {
        let mut stored = History::default();
        stored.next_generation();
        stored.record_op("old", key_record(1));
        stored.mark_saved();
        // Two builds start from the same saved history.
        let mut first = stored.clone();
        let mut second = stored.clone();
        first.next_generation();
        first.record_op("a", key_record(2));
        first.record_miss("va", MissReason::NoRecord);
        second.next_generation();
        second.record_op("b", key_record(3));
        second.record_miss("vb", MissReason::Ignored);
        second.record_op("old", key_record(4));
        // The first saves, then the second merges into what the first saved.
        first.merge_into(stored);
        first.mark_saved();
        let saved = History::from_json(&first.to_json());
        second.merge_into(saved);
        let all = History::from_json(&second.to_json());
        for op in ["old", "a", "b"] {
            assert!(all.op(op).is_some(), "{op} lost");
        }
        assert_eq!(all.op("old").unwrap().key, CacheKey::from_bytes([4; 32]));
        assert_eq!(all.miss("va").unwrap().reason, MissReason::NoRecord);
        assert_eq!(all.miss("vb").unwrap().reason, MissReason::Ignored);
        // The build that saved last is the latest.
        assert_eq!(all.misses().keys().copied().collect::<Vec<_>>(), ["vb"]);
        assert_eq!(all.op("b").unwrap().used, 3);
        assert_eq!(all.op("a").unwrap().used, 2);
    }
}
