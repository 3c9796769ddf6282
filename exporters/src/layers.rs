//! Layers of a snapshot chain, each compressed once and reused by later exports.
//!
//! # Overview
//! 1. Walk the chain from the top snapshot to its root ([`snapshot_chain`]).
//! 2. A snapshot of a stored image's layer (pulled, loaded or built and stored) is keyed by
//!    its chain ID, or has a diff ID: its blob is found through the store's image records (or,
//!    for a layer unpacked from an imported cache, the blob its snapshot record names) and
//!    reused as it is. These are the base image's layers, which BuildKit's exporter never
//!    rewrites either (not even for `rewrite-timestamp`).
//!    With [`ExistingLayers::Recompress`] (`force-compression=true`), such a blob in another
//!    compression than the export's is converted instead: the same tar stream (and diff ID)
//!    compressed again ([`kiln_cache::Store::recompress_layer`]), once per (blob, compression)
//!    and remembered in a cache record.
//! 3. A snapshot made by a build step is one step's diff in overlay form: it is written with
//!    [`kiln_cache::write_layer`] once per (snapshot, compression, epoch) and remembered in a
//!    cache record, so the next export reuses the blob.

use std::collections::HashMap;

use kiln_cache::{
    CacheRecord, Compression, DiffSource, Digest, Layer, LayerDescriptor, LayerOptions, Store,
    oci_layer_type,
};

use crate::error::Error;

/// Prefix of the cache records that remember exported layers.
const RECORD_PREFIX: &str = "kiln-exporters/layer/";

/// Prefix of the cache records that remember stored layers converted to another compression.
const CONVERTED_PREFIX: &str = "kiln-exporters/converted/";

/// What an export does with layers that are stored as blobs already (a base image's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingLayers {
    /// Use them as they are, whatever their compression (BuildKit's default).
    #[default]
    Reuse,
    /// Convert those in another compression than the export's (`force-compression=true`).
    Recompress,
}

/// The snapshot keys from the root of the chain up to `top`, bottom first.
pub fn snapshot_chain(store: &Store, top: &str) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    let mut next = Some(top.to_owned());
    while let Some(key) = next {
        let record = store
            .snapshot(&key)?
            .ok_or_else(|| kiln_cache::Error::SnapshotNotFound { key: key.clone() })?;
        keys.push(key);
        next = record.parent;
    }
    keys.reverse();
    Ok(keys)
}

fn compression_tag(compression: Compression) -> String {
    match compression {
        Compression::Uncompressed => "uncompressed".to_owned(),
        Compression::Gzip { level } => format!("gzip-{level}"),
        Compression::Zstd { level } => format!("zstd-{level}"),
    }
}

fn record_id(key: &str, options: &LayerOptions) -> String {
    let epoch = options
        .source_date_epoch
        .map_or_else(|| "-".to_owned(), |e| e.to_string());
    format!(
        "{RECORD_PREFIX}{key}/{}/{epoch}",
        compression_tag(options.compression)
    )
}

/// The layers of the snapshots `keys` (bottom first), writing the blobs that do not exist yet.
pub fn chain_layers(
    store: &Store,
    keys: &[String],
    options: &LayerOptions,
    existing: ExistingLayers,
) -> Result<Vec<Layer>, Error> {
    let blob_types: HashMap<Digest, Option<String>> = store
        .blob_records()?
        .into_iter()
        .map(|(d, r)| (d, r.media_type))
        .collect();
    let mut by_diff_id = HashMap::new();
    let mut by_chain = HashMap::new();
    for image in store.images()? {
        let mut parent = None;
        for (diff_id, blob) in image.diff_ids.iter().zip(&image.layers) {
            let chain = kiln_cache::chain_id(parent.as_ref(), diff_id);
            parent = Some(chain);
            if store.has_blob(blob) {
                by_diff_id.entry(*diff_id).or_insert(*blob);
                by_chain
                    .entry(chain.to_string())
                    .or_insert((*blob, *diff_id));
            }
        }
    }
    let records: HashMap<String, CacheRecord> = store
        .cache_records()?
        .into_iter()
        .filter(|r| r.id.starts_with(RECORD_PREFIX) || r.id.starts_with(CONVERTED_PREFIX))
        .map(|r| (r.id.clone(), r))
        .collect();

    let mut layers = Vec::with_capacity(keys.len());
    for key in keys {
        let snapshot = store
            .snapshot(key)?
            .ok_or_else(|| kiln_cache::Error::SnapshotNotFound { key: key.clone() })?;
        let stored = by_chain.get(key).copied().or_else(|| {
            let diff_id = snapshot.diff_id?;
            let blob = by_diff_id
                .get(&diff_id)
                .copied()
                .or(snapshot.blob.filter(|b| store.has_blob(b)))?;
            Some((blob, diff_id))
        });
        if let Some((blob, diff_id)) = stored {
            let media_type = oci_layer_type(blob_types.get(&blob).and_then(|t| t.as_deref()));
            if existing == ExistingLayers::Recompress
                && media_type != options.compression.media_type()
            {
                layers.push(converted(store, &records, key, &blob, options)?);
                continue;
            }
            let size = fs_err::metadata(store.blob_path(&blob))?.len();
            tracing::debug!(snapshot = %key, blob = %blob, "reusing the stored image's layer");
            layers.push(Layer {
                digest: blob,
                size,
                diff_id,
                media_type: media_type.to_owned(),
                snapshot: Some(key.clone()),
                source_date_epoch: None,
            });
            continue;
        }
        let id = record_id(key, options);
        if let Some(layer) = records
            .get(&id)
            .and_then(|r| remembered(store, r, key, options.source_date_epoch))
        {
            tracing::debug!(snapshot = %key, blob = %layer.digest, "reusing the exported layer");
            store.touch_cache_record(&id)?;
            layers.push(layer);
            continue;
        }
        let dir = store.committed_dir(key)?;
        let written = store.write_layer(&dir, DiffSource::OverlayUpper, options)?;
        tracing::debug!(snapshot = %key, blob = %written.digest, "wrote a layer");
        remember(store, id, &format!("layer of snapshot {key}"), &written)?;
        layers.push(Layer {
            digest: written.digest,
            size: written.size,
            diff_id: written.diff_id,
            media_type: written.media_type.to_owned(),
            snapshot: Some(key.clone()),
            source_date_epoch: options.source_date_epoch,
        });
    }
    Ok(layers)
}

/// The stored layer `blob` of the snapshot `key` in the compression `options` name: converted
/// once, then found through its cache record.
fn converted(
    store: &Store,
    records: &HashMap<String, CacheRecord>,
    key: &str,
    blob: &Digest,
    options: &LayerOptions,
) -> Result<Layer, Error> {
    let id = format!(
        "{CONVERTED_PREFIX}{blob}/{}",
        compression_tag(options.compression)
    );
    if let Some(layer) = records
        .get(&id)
        .and_then(|r| remembered(store, r, key, None))
    {
        tracing::debug!(snapshot = %key, blob = %layer.digest, "reusing the converted layer");
        store.touch_cache_record(&id)?;
        return Ok(layer);
    }
    let written = store.recompress_layer(blob, options)?;
    tracing::debug!(snapshot = %key, from = %blob, blob = %written.digest, "converted a layer");
    remember(store, id, &format!("layer {blob} converted"), &written)?;
    Ok(Layer {
        digest: written.digest,
        size: written.size,
        diff_id: written.diff_id,
        media_type: written.media_type.to_owned(),
        snapshot: Some(key.to_owned()),
        source_date_epoch: None,
    })
}

/// Records a written blob under `id`, described as `what`, with what [`remembered`] needs to
/// find it again.
fn remember(store: &Store, id: String, what: &str, written: &LayerDescriptor) -> Result<(), Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    store.put_cache_record(&CacheRecord {
        id,
        description: format!(
            "{what} diff_id={} media_type={}",
            written.diff_id, written.media_type
        ),
        blobs: vec![written.digest],
        snapshots: Vec::new(),
        size: written.size,
        created: now,
        last_used: now,
    })?;
    Ok(())
}

/// The layer a cache record remembers, if its blob is still there.
fn remembered(
    store: &Store,
    record: &CacheRecord,
    key: &str,
    source_date_epoch: Option<i64>,
) -> Option<Layer> {
    let digest = *record.blobs.first()?;
    if !store.has_blob(&digest) {
        return None;
    }
    let field = |name: &str| {
        record
            .description
            .split(' ')
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
    };
    let diff_id = field("diff_id")?.parse().ok()?;
    let media_type = field("media_type")?.to_owned();
    Some(Layer {
        digest,
        size: record.size,
        diff_id,
        media_type,
        snapshot: Some(key.to_owned()),
        source_date_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cache::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD};

    /// A store with one committed snapshot `step` holding `/hello`.
    fn store_with_step() -> (tempfile::TempDir, Store) {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mounts = store.prepare("active", None).unwrap();
        fs_err::write(mounts.upper.join("hello"), "hello\n").unwrap();
        store.commit("active", "step").unwrap();
        (root, store)
    }

    #[test]
    fn a_step_layer_is_compressed_once_per_compression() {
        let (_root, store) = store_with_step();
        let keys = snapshot_chain(&store, "step").unwrap();
        assert_eq!(keys, ["step"]);
        let gzip = LayerOptions {
            source_date_epoch: Some(0),
            ..LayerOptions::default()
        };
        let first = chain_layers(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].media_type, MEDIA_TYPE_LAYER_GZIP);
        assert!(store.has_blob(&first[0].digest));
        let uncompressed = LayerOptions {
            compression: Compression::Uncompressed,
            ..gzip
        };
        let plain = chain_layers(&store, &keys, &uncompressed, ExistingLayers::Reuse).unwrap();
        // The same tar either way: equal diff IDs; the uncompressed blob is the tar itself.
        assert_eq!(plain[0].diff_id, first[0].diff_id);
        assert_eq!(plain[0].digest, plain[0].diff_id);
        assert_eq!(plain[0].media_type, MEDIA_TYPE_LAYER_TAR);
        let bytes = store.read_blob(&plain[0].digest).unwrap();
        assert_eq!(Digest::from_bytes(&bytes), plain[0].diff_id);

        // Change the snapshot behind the exporter's back: a second export still returns the
        // recorded blob, which shows it was not written again.
        fs_err::write(store.committed_dir("step").unwrap().join("extra"), "x").unwrap();
        let again = chain_layers(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
        assert_eq!(again, first);
        // Another epoch is another layer.
        let other = chain_layers(
            &store,
            &keys,
            &LayerOptions {
                source_date_epoch: Some(1),
                ..gzip
            },
            ExistingLayers::Reuse,
        )
        .unwrap();
        assert_ne!(other[0].diff_id, first[0].diff_id);
    }

    #[test]
    fn forced_compression_converts_stored_layers_once() {
        let (_root, store) = store_with_step();
        let gzip = LayerOptions {
            source_date_epoch: Some(0),
            ..LayerOptions::default()
        };
        let keys = snapshot_chain(&store, "step").unwrap();
        let layers = chain_layers(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
        let image = crate::build_image(layers, None, &crate::ImageOptions::default()).unwrap();
        let record = store.store_image(&image, "base:latest").unwrap();
        // The stored image's snapshot, as a build on it names its base.
        let keys = vec![record.chain_id.unwrap().to_string()];
        let stored = &image.layers[0];

        let zstd = LayerOptions {
            compression: Compression::Zstd { level: 3 },
            ..gzip
        };
        // Reused as it is by default, whatever the export's compression.
        let reused = chain_layers(&store, &keys, &zstd, ExistingLayers::Reuse).unwrap();
        assert_eq!(reused[0].digest, stored.digest);
        assert_eq!(reused[0].media_type, MEDIA_TYPE_LAYER_GZIP);
        // Forced: the same tar stream in zstd.
        let forced = chain_layers(&store, &keys, &zstd, ExistingLayers::Recompress).unwrap();
        assert_eq!(forced[0].media_type, MEDIA_TYPE_LAYER_ZSTD);
        assert_eq!(forced[0].diff_id, stored.diff_id);
        assert_ne!(forced[0].digest, stored.digest);
        let blob = store.read_blob(&forced[0].digest).unwrap();
        assert_eq!(blob.len() as u64, forced[0].size);
        assert!(blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "a zstd frame");
        // Converted once: the next export finds the blob through its record.
        let converted = store
            .cache_records()
            .unwrap()
            .into_iter()
            .filter(|r| r.id.starts_with(CONVERTED_PREFIX))
            .count();
        assert_eq!(converted, 1);
        let again = chain_layers(&store, &keys, &zstd, ExistingLayers::Recompress).unwrap();
        assert_eq!(again, forced);
        // Uncompressed: the blob is the tar itself. Same compression: nothing to convert.
        let plain = LayerOptions {
            compression: Compression::Uncompressed,
            ..gzip
        };
        let plain = chain_layers(&store, &keys, &plain, ExistingLayers::Recompress).unwrap();
        assert_eq!(plain[0].digest, stored.diff_id);
        assert_eq!(plain[0].media_type, MEDIA_TYPE_LAYER_TAR);
        let same = chain_layers(&store, &keys, &gzip, ExistingLayers::Recompress).unwrap();
        assert_eq!(same[0].digest, stored.digest);
    }

    #[test]
    fn docker_layer_types_map_to_oci() {
        assert_eq!(
            oci_layer_type(Some("application/vnd.docker.image.rootfs.diff.tar.gzip")),
            MEDIA_TYPE_LAYER_GZIP
        );
        assert_eq!(
            oci_layer_type(Some("application/vnd.oci.image.layer.v1.tar+zstd")),
            MEDIA_TYPE_LAYER_ZSTD
        );
        assert_eq!(
            oci_layer_type(Some("application/vnd.oci.image.layer.v1.tar")),
            MEDIA_TYPE_LAYER_TAR
        );
    }
}
