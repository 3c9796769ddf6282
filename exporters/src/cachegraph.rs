//! The cache config of a build (`--cache-to`): its cache keys as BuildKit's records, and the
//! layer blobs of the results it carries.
//!
//! # Overview
//! 1. Every output of every vertex of the [`BuildKeys`] that is read, is the result, or that the
//!    build has, becomes a record named [`output_record_digest`] of the vertex's key, inputs
//!    before the records that link to them, so the same build gives the same records in the
//!    same order.
//! 2. The results: `mode=min` those of the vertex of the build's result, `mode=max` those of
//!    every vertex the build has, each also under the vertex's other keys (by its inputs'
//!    content: an import that misses a changed definition still finds them, as the solver
//!    does locally). Each is the layer chain of its snapshot, written or found
//!    by [`chain_layers`] (a blob compressed for an earlier export or image is reused, never
//!    compressed again), its layers shared between chains that share a base.
//! 3. For an inline cache ([`inline_cache_config`]) only the result's records carry results,
//!    as indexes into the image's own layers: the image is the result's chain, layer for
//!    layer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_cache::cacheconfig::{
    CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult, LayerAnnotations,
};
use kiln_cache::{
    BuildKeys, CacheBlob, CacheMode, Digest, KeyEdge, LayerOptions, Store, output_record_digest,
};

use crate::error::Error;
use crate::image::rfc3339;
use crate::layers::{ExistingLayers, chain_layers, snapshot_chain};

/// A cache config and the descriptions of the blobs its layers name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheGraph {
    /// The records and layers.
    pub config: CacheConfig,
    /// Each blob's media type, size, diff ID and creation time.
    pub blobs: BTreeMap<Digest, CacheBlob>,
}

/// The records of `keys`, without results, and the index of each output's record.
fn records(keys: &BuildKeys) -> (Vec<CacheRecord>, HashMap<KeyEdge, usize>) {
    let mut wanted: BTreeSet<KeyEdge> = BTreeSet::new();
    wanted.extend(keys.targets());
    for (node, vertex) in keys.nodes.iter().enumerate() {
        for input in &vertex.inputs {
            wanted.insert(input.edge);
        }
        for output in 0..vertex.outputs.as_ref().map_or(0, Vec::len) {
            wanted.insert(KeyEdge { node, output });
        }
    }
    let mut index = HashMap::new();
    let mut records = Vec::new();
    // Nodes come inputs first, so every link points at a record already made.
    for edge in &wanted {
        let vertex = &keys.nodes[edge.node];
        let inputs = vertex
            .inputs
            .iter()
            .map(|input| {
                index
                    .get(&input.edge)
                    .map(|&link_index| {
                        vec![CacheInput {
                            selector: input.selector.clone().unwrap_or_default(),
                            link_index,
                        }]
                    })
                    .unwrap_or_default()
            })
            .collect();
        index.insert(*edge, records.len());
        records.push(CacheRecord {
            results: Vec::new(),
            chained_results: Vec::new(),
            digest: output_record_digest(&vertex.key, edge.output),
            inputs,
        });
    }
    (records, index)
}

/// The results a cache export carries: each one's output (node, output index), its
/// snapshot's creation time and its snapshot chain, and every snapshot of those chains once.
struct Carried {
    chains: Vec<(usize, usize, u64, Vec<String>)>,
    unique: Vec<String>,
}

/// The results of `keys` a cache export in `mode` carries.
fn carried(store: &Store, keys: &BuildKeys, mode: CacheMode) -> Result<Carried, Error> {
    // The chains of the results carried, then every snapshot of them written or found once
    // (one pass over the store's records, not one per result).
    let mut chains = Vec::new();
    let mut unique: Vec<String> = Vec::new();
    let mut known = std::collections::HashSet::new();
    for (node, vertex) in keys.nodes.iter().enumerate() {
        if mode == CacheMode::Min && !keys.targets().any(|t| t.node == node) {
            continue;
        }
        let Some(outputs) = &vertex.outputs else {
            continue;
        };
        for (output, snapshot) in outputs.iter().enumerate() {
            let Some(snapshot) = snapshot else {
                continue; // the empty file system: no layer to carry
            };
            let Some(record) = store.snapshot(snapshot)? else {
                continue;
            };
            let chain = snapshot_chain(store, snapshot)?;
            for key in &chain {
                if known.insert(key.clone()) {
                    unique.push(key.clone());
                }
            }
            chains.push((node, output, record.created, chain));
        }
    }
    Ok(Carried { chains, unique })
}

/// The snapshots whose layers a cache export of `keys` in `mode` carries, each once, bottom
/// first within each result's chain.
pub fn cache_snapshots(
    store: &Store,
    keys: &BuildKeys,
    mode: CacheMode,
) -> Result<Vec<String>, Error> {
    Ok(carried(store, keys, mode)?.unique)
}

/// The cache graph of a build for a `--cache-to` in `mode`, its new layers compressed with
/// `options`.
pub fn cache_graph(
    store: &Store,
    keys: &BuildKeys,
    mode: CacheMode,
    options: &LayerOptions,
    existing: ExistingLayers,
) -> Result<CacheGraph, Error> {
    let (mut records, index) = records(keys);
    let mut config = CacheConfig::default();
    let mut blobs = BTreeMap::new();
    // (blob, parent layer index) → layer index.
    let mut layer_index: HashMap<(Digest, i64), usize> = HashMap::new();
    let Carried { chains, unique } = carried(store, keys, mode)?;
    let written = chain_layers(store, &unique, options, existing)?;
    // Each layer dated by its own snapshot: an import dates the layer so, and the image
    // history of a build from the cache with it.
    let mut by_key: HashMap<&str, (&kiln_cache::Layer, Option<u64>)> = HashMap::new();
    for (key, layer) in unique.iter().zip(&written) {
        let made = store.snapshot(key)?.map(|r| r.created);
        by_key.insert(key.as_str(), (layer, made));
    }
    for (node, output, created, chain) in &chains {
        let (node, output) = (*node, *output);
        let created = rfc3339(i64::try_from(*created).unwrap_or(0));
        let vertex = &keys.nodes[node];
        let mut parent: i64 = -1;
        for key in chain {
            let Some(&(layer, made)) = by_key.get(key.as_str()) else {
                continue;
            };
            let made = made.map_or_else(
                || created.clone(),
                |t| rfc3339(i64::try_from(t).unwrap_or(0)),
            );
            let at = *layer_index
                .entry((layer.digest, parent))
                .or_insert_with(|| {
                    config.layers.push(CacheLayer {
                        blob: layer.digest,
                        parent,
                        annotations: Some(LayerAnnotations {
                            media_type: layer.media_type.clone(),
                            diff_id: Some(layer.diff_id),
                            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
                            created_at: Some(made.clone()),
                            additional: BTreeMap::new(),
                        }),
                    });
                    config.layers.len() - 1
                });
            blobs.entry(layer.digest).or_insert_with(|| CacheBlob {
                media_type: layer.media_type.clone(),
                size: layer.size,
                diff_id: Some(layer.diff_id),
                created_at: Some(made),
            });
            parent = i64::try_from(at).unwrap_or(-1);
        }
        let (Ok(top), Some(&record)) = (
            usize::try_from(parent),
            index.get(&KeyEdge { node, output }),
        ) else {
            continue;
        };
        let result = CacheResult {
            layer_index: top,
            created_at: Some(created),
        };
        records[record].results.push(result.clone());
        // The same result under the vertex's other keys, records of their own.
        for alternative in &vertex.alternatives {
            records.push(CacheRecord {
                results: vec![result.clone()],
                chained_results: Vec::new(),
                digest: output_record_digest(alternative, output),
                inputs: Vec::new(),
            });
        }
    }
    config.records = records;
    config.sort();
    Ok(CacheGraph { config, blobs })
}

/// The records of an inline cache (`--cache-to type=inline`) for an image whose layers are
/// the chain of the build's result: the whole key graph, and the result's record pointing at
/// the image's top layer.
pub fn inline_cache_config(store: &Store, keys: &BuildKeys) -> Result<CacheConfig, Error> {
    let (mut records, index) = records(keys);
    let target = &keys.nodes[keys.target.node];
    if let Some(Some(snapshot)) = target
        .outputs
        .as_ref()
        .and_then(|outputs| outputs.get(keys.target.output))
    {
        let layers = snapshot_chain(store, snapshot)?.len();
        let created = store
            .snapshot(snapshot)?
            .map(|record| rfc3339(i64::try_from(record.created).unwrap_or(0)));
        if let (Some(top), Some(&record)) = (layers.checked_sub(1), index.get(&keys.target)) {
            records[record].results.push(CacheResult {
                layer_index: top,
                created_at: created,
            });
        }
    }
    let mut config = CacheConfig {
        layers: Vec::new(),
        records,
    };
    config.sort();
    Ok(config)
}
