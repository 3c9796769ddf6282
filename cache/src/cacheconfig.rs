//! BuildKit's cache export format, `application/vnd.buildkit.cacheconfig.v0`.
//!
//! A cache export is a graph of cache keys (records) and the layer blobs of their results:
//!
//! - `layers`: each a blob and the index of its parent layer (`-1`, or no `parent` key, for a
//!   base layer: BuildKit writes the parent with `omitempty`, so a missing key means 0 and a
//!   base layer carries an explicit -1);
//! - `records`: each a cache key digest, its `inputs` (for each input of the operation, the
//!   alternative records it may come from: `link` indexes into `records`, `selector` narrows
//!   the input to a path), and its results, as the index of the topmost layer of a chain
//!   (`layers`) or, for results that are not one chain, the indexes of several (`chains`).
//!
//! The same records travel three ways: as the config blob of an OCI image manifest whose layers
//! are the blobs (`image-manifest=true`, the default), as the last entry of an OCI index listing
//! the blobs (`image-manifest=false`), and inline, base64 JSON of the bare `records` array under
//! [`INLINE_CACHE_KEY`] in an image config, where result layer indexes count into the image's
//! own layers.
//!
//! [`CacheConfig::parse`] takes untrusted bytes and checks every index and that the links and
//! parents form no cycle, so code walking a parsed graph needs no bounds checks of its own.
//! [`CacheConfig::to_json`] writes the fields in BuildKit's order with its omissions, so a
//! graph parsed from BuildKit's bytes serialises back to the same bytes, and the same graph
//! always to the same bytes. Importing and exporting (registry, local layout, inline) are built
//! on these types; a new transport belongs beside them, the format stays here.

use serde::{Deserialize, Serialize};

use kiln_llb::Digest;

/// The media type of the config blob of a cache export.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.buildkit.cacheconfig.v0";
/// The image config key holding an inline cache (base64 JSON of a `records` array).
pub const INLINE_CACHE_KEY: &str = "moby.buildkit.cache.v0";
/// The layer descriptor annotation naming the uncompressed digest (diff ID) of a cache blob.
pub const ANNOTATION_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// The layer descriptor annotation carrying the creation time of a cache blob.
pub const ANNOTATION_CREATED_AT: &str = "buildkit/createdat";

/// A cache graph: layer chains and the cache key records whose results they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// The blobs, each with the index of its parent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<CacheLayer>,
    /// The cache keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<CacheRecord>,
}

/// One blob of a layer chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// The (compressed) blob.
    pub blob: Digest,
    /// The index of the layer below this one in [`CacheConfig::layers`], -1 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parent: i64,
    /// What newer BuildKit versions record about the blob (otherwise in the descriptor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

/// Descriptor facts about a layer blob, carried in the config by newer BuildKit versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerAnnotations {
    /// The blob's media type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// The digest of the uncompressed tar.
    #[serde(default, rename = "diffID", skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The blob's size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Other annotations of the descriptor.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub additional: std::collections::BTreeMap<String, String>,
}

/// One cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Results that are one layer chain: its topmost layer.
    #[serde(rename = "layers", default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CacheResult>,
    /// Results made of several chains (merged inputs).
    #[serde(rename = "chains", default, skip_serializing_if = "Vec::is_empty")]
    pub chained_results: Vec<ChainedResult>,
    /// The cache key.
    pub digest: Digest,
    /// For each input of the operation, the records it may come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Vec<CacheInput>>,
}

/// A result that is one layer chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheResult {
    /// The index of the chain's topmost layer.
    #[serde(rename = "layer")]
    pub layer_index: usize,
    /// RFC 3339 creation time (BuildKit always writes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// A result made of several layer chains, applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainedResult {
    /// The indexes of each chain's topmost layer.
    #[serde(rename = "layers")]
    pub layer_indexes: Vec<usize>,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// One alternative for an input of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInput {
    /// Narrows the input to part of its result (a path's content checksum), if set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// The index of the input's record in [`CacheConfig::records`].
    #[serde(rename = "link")]
    pub link_index: usize,
}

/// Why a cache config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheConfigError {
    /// Not JSON of the expected shape.
    #[error("malformed cache config: {0}")]
    Malformed(String),
    /// A layer's parent is out of range or itself.
    #[error("cache layer {layer} names parent {parent}, but there are {count} layers")]
    BadParent {
        /// The layer's index.
        layer: usize,
        /// The parent it names.
        parent: i64,
        /// How many layers there are.
        count: usize,
    },
    /// Layer parents loop.
    #[error("cache layer {layer} is its own ancestor")]
    LayerCycle {
        /// A layer on the loop.
        layer: usize,
    },
    /// A result names a layer that does not exist.
    #[error("cache record {record} names layer {layer}, but there are {count} layers")]
    BadResult {
        /// The record's index.
        record: usize,
        /// The layer it names.
        layer: usize,
        /// How many layers there are.
        count: usize,
    },
    /// An input links to a record that does not exist.
    #[error("cache record {record} links to record {link}, but there are {count} records")]
    BadLink {
        /// The record's index.
        record: usize,
        /// The link.
        link: usize,
        /// How many records there are.
        count: usize,
    },
    /// Input links loop.
    #[error("cache record {record} is its own input")]
    RecordCycle {
        /// A record on the loop.
        record: usize,
    },
}

impl CacheConfig {
    /// Parses and checks a config blob (untrusted bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, CacheConfigError> {
        let config: Self = serde_json::from_slice(bytes)
            .map_err(|e| CacheConfigError::Malformed(e.to_string()))?;
        config.check(None)?;
        Ok(config)
    }

    /// Parses the decoded inline form: a bare `records` array whose result layer indexes count
    /// into the `image_layers` layers of the image carrying it.
    pub fn parse_inline(bytes: &[u8], image_layers: usize) -> Result<Self, CacheConfigError> {
        let records: Vec<CacheRecord> = serde_json::from_slice(bytes)
            .map_err(|e| CacheConfigError::Malformed(e.to_string()))?;
        let config = Self {
            layers: Vec::new(),
            records,
        };
        config.check(Some(image_layers))?;
        Ok(config)
    }

    /// The JSON bytes BuildKit writes for this graph (compact, its field order and omissions).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("plain data serialises: {e}"))
    }

    /// The JSON of the bare `records` array, as an inline cache carries it.
    pub fn inline_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.records)
            .unwrap_or_else(|e| unreachable!("plain data serialises: {e}"))
    }

    /// Orders layers by blob digest and records by digest, as BuildKit's exporter does,
    /// renumbering every index that points at them (ties keep their order).
    pub fn sort(&mut self) {
        let mut layer_order: Vec<usize> = (0..self.layers.len()).collect();
        layer_order.sort_by_key(|&i| self.layers[i].blob);
        let mut new_layer = vec![0; self.layers.len()];
        for (new, &old) in layer_order.iter().enumerate() {
            new_layer[old] = new;
        }
        let renumber = |index: usize| new_layer.get(index).copied().unwrap_or(index);
        let mut layers: Vec<CacheLayer> = layer_order
            .iter()
            .map(|&old| self.layers[old].clone())
            .collect();
        for layer in &mut layers {
            if let Ok(parent) = usize::try_from(layer.parent) {
                layer.parent = i64::try_from(renumber(parent)).unwrap_or(-1);
            }
        }
        self.layers = layers;
        let mut record_order: Vec<usize> = (0..self.records.len()).collect();
        record_order.sort_by_key(|&i| self.records[i].digest);
        let mut new_record = vec![0; self.records.len()];
        for (new, &old) in record_order.iter().enumerate() {
            new_record[old] = new;
        }
        let mut records: Vec<CacheRecord> = record_order
            .iter()
            .map(|&old| self.records[old].clone())
            .collect();
        for record in &mut records {
            for result in &mut record.results {
                result.layer_index = renumber(result.layer_index);
            }
            for chained in &mut record.chained_results {
                for layer in &mut chained.layer_indexes {
                    *layer = renumber(*layer);
                }
            }
            for input in record.inputs.iter_mut().flatten() {
                input.link_index = new_record.get(input.link_index).copied().unwrap_or(0);
            }
        }
        self.records = records;
    }

    /// The chain ending at layer `top`, base first. `top` must be in range (as it is for every
    /// index in a parsed config).
    pub fn chain(&self, top: usize) -> Vec<&CacheLayer> {
        let mut chain = Vec::new();
        let mut at = Some(top);
        while let Some(index) = at {
            let layer = &self.layers[index];
            chain.push(layer);
            at = usize::try_from(layer.parent).ok();
        }
        chain.reverse();
        chain
    }

    /// Checks indexes and acyclicity. With `image_layers`, results index an image's layers
    /// (the inline form) instead of [`CacheConfig::layers`].
    fn check(&self, image_layers: Option<usize>) -> Result<(), CacheConfigError> {
        let count = self.layers.len();
        for (index, layer) in self.layers.iter().enumerate() {
            let in_range = usize::try_from(layer.parent).is_ok_and(|p| p < count && p != index);
            if layer.parent != -1 && !in_range {
                return Err(CacheConfigError::BadParent {
                    layer: index,
                    parent: layer.parent,
                    count,
                });
            }
        }
        let parents: Vec<Vec<usize>> = self
            .layers
            .iter()
            .map(|l| usize::try_from(l.parent).into_iter().collect())
            .collect();
        if let Some(layer) = first_cycle(&parents) {
            return Err(CacheConfigError::LayerCycle { layer });
        }
        let layers = image_layers.unwrap_or(count);
        let records = self.records.len();
        for (index, record) in self.records.iter().enumerate() {
            let named = record.results.iter().map(|r| r.layer_index).chain(
                record
                    .chained_results
                    .iter()
                    .flat_map(|c| c.layer_indexes.iter().copied()),
            );
            for layer in named {
                if layer >= layers {
                    return Err(CacheConfigError::BadResult {
                        record: index,
                        layer,
                        count: layers,
                    });
                }
            }
            for input in record.inputs.iter().flatten() {
                if input.link_index >= records {
                    return Err(CacheConfigError::BadLink {
                        record: index,
                        link: input.link_index,
                        count: records,
                    });
                }
            }
        }
        let links: Vec<Vec<usize>> = self
            .records
            .iter()
            .map(|r| r.inputs.iter().flatten().map(|i| i.link_index).collect())
            .collect();
        match first_cycle(&links) {
            Some(record) => Err(CacheConfigError::RecordCycle { record }),
            None => Ok(()),
        }
    }
}

/// A node on a cycle of the graph whose edges from node `n` are `edges[n]`, if any.
fn first_cycle(edges: &[Vec<usize>]) -> Option<usize> {
    kiln_llb::order_graph(edges).err()
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(value: &i64) -> bool {
    *value == 0
}
