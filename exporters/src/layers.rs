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
//! 3. A snapshot made by a build step is one step's diff in overlay form. Two cache records
//!    remember what was made of it: its diff ID (per snapshot and epoch), and the blob of that
//!    diff ID (per compression). The blob is content-addressed through the diff ID, so the
//!    chain-ID snapshot of a stored image (hard links to the step's files) finds the blob the
//!    step's snapshot was compressed to, and the other way round.
//! 4. Missing blobs are written with [`kiln_cache::write_layer`], several layers at once
//!    ([`chain_layers`]). An image stored under a name needs no blob: [`chain_diff_ids`] walks
//!    each layer once for its diff ID only, and [`stored_image`] writes the blobs when a push,
//!    a save or an export first needs them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_cache::{
    CacheRecord, Compression, DiffSource, Digest, Image, ImageRecord, Layer, LayerDescriptor,
    LayerOptions, PendingLayer, Store, assemble, oci_layer_type,
};

use crate::error::Error;

/// Prefix of the cache records that remember a build snapshot's diff ID.
const DIFF_PREFIX: &str = "kiln-exporters/diff/";

/// Prefix of the cache records that remember the blob of a diff ID in one compression.
const BLOB_PREFIX: &str = "kiln-exporters/blob/";

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

fn diff_record_id(key: &str, source_date_epoch: Option<i64>) -> String {
    let epoch = source_date_epoch.map_or_else(|| "-".to_owned(), |e| e.to_string());
    format!("{DIFF_PREFIX}{key}/{epoch}")
}

fn blob_record_id(diff_id: &Digest, compression: Compression) -> String {
    format!("{BLOB_PREFIX}{diff_id}/{}", compression_tag(compression))
}

/// What the store knows of layers, read once per export.
struct Known {
    blob_types: HashMap<Digest, Option<String>>,
    by_diff_id: HashMap<Digest, Digest>,
    by_chain: HashMap<String, (Digest, Digest)>,
    records: HashMap<String, CacheRecord>,
}

impl Known {
    fn read(store: &Store) -> Result<Self, Error> {
        let blob_types: HashMap<Digest, Option<String>> = store
            .blob_records()?
            .into_iter()
            .map(|(d, r)| (d, r.media_type))
            .collect();
        let mut by_diff_id = HashMap::new();
        let mut by_chain = HashMap::new();
        // An image whose manifest is pending names only some blobs: its layers are found
        // through the records of their diff IDs instead.
        for image in store.images()?.into_iter().filter(|i| i.pending.is_none()) {
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
        let records = store
            .cache_records()?
            .into_iter()
            .filter(|r| {
                [DIFF_PREFIX, BLOB_PREFIX, CONVERTED_PREFIX]
                    .iter()
                    .any(|p| r.id.starts_with(p))
            })
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(Self {
            blob_types,
            by_diff_id,
            by_chain,
            records,
        })
    }

    /// The diff ID remembered for the build snapshot `key` at `epoch`.
    fn diff_id(
        &self,
        store: &Store,
        key: &str,
        epoch: Option<i64>,
    ) -> Result<Option<Digest>, Error> {
        let id = diff_record_id(key, epoch);
        let Some(diff_id) = self
            .records
            .get(&id)
            .and_then(|r| field(r, "diff_id")?.parse().ok())
        else {
            return Ok(None);
        };
        store.touch_cache_record(&id)?;
        Ok(Some(diff_id))
    }

    /// The blob remembered for `diff_id` in `options`' compression, if it is still there.
    fn blob(
        &self,
        store: &Store,
        diff_id: &Digest,
        key: &str,
        options: &LayerOptions,
    ) -> Result<Option<Layer>, Error> {
        let id = blob_record_id(diff_id, options.compression);
        let Some(layer) = self
            .records
            .get(&id)
            .and_then(|r| remembered(store, r, key, options.source_date_epoch))
        else {
            return Ok(None);
        };
        tracing::debug!(snapshot = %key, blob = %layer.digest, "reusing the written layer");
        store.touch_cache_record(&id)?;
        Ok(Some(layer))
    }
}

/// One layer of a chain, as far as the store knows it without writing.
enum Found {
    /// Its blob.
    Blob(Layer),
    /// A build step's snapshot without a blob in this compression; its diff ID if known.
    Snapshot { diff_id: Option<Digest> },
}

/// What the store has for the snapshot `key`, whose diff ID may be known already.
fn find(
    store: &Store,
    known: &Known,
    key: &str,
    diff_id: Option<Digest>,
    options: &LayerOptions,
    existing: ExistingLayers,
) -> Result<Found, Error> {
    let snapshot = store
        .snapshot(key)?
        .ok_or_else(|| kiln_cache::Error::SnapshotNotFound {
            key: key.to_owned(),
        })?;
    let stored = known.by_chain.get(key).copied().or_else(|| {
        let diff_id = snapshot.diff_id?;
        let blob = known
            .by_diff_id
            .get(&diff_id)
            .copied()
            .or(snapshot.blob.filter(|b| store.has_blob(b)))?;
        Some((blob, diff_id))
    });
    if stored.is_none()
        && let (Some(remote), Some(blob), Some(diff_id)) =
            (&snapshot.remote, snapshot.blob, snapshot.diff_id)
    {
        // A lazy snapshot: its blob as the cache or the base image's manifest describes it,
        // pushed by mount or downloaded when its bytes are needed.
        let media_type = oci_layer_type(Some(&remote.media_type));
        if existing == ExistingLayers::Recompress && media_type != options.compression.media_type()
        {
            return Err(kiln_cache::Error::LazySnapshot {
                key: key.to_owned(),
            }
            .into());
        }
        return Ok(Found::Blob(Layer {
            digest: blob,
            size: remote.size,
            diff_id,
            media_type: media_type.to_owned(),
            snapshot: Some(key.to_owned()),
            source_date_epoch: None,
        }));
    }
    if let Some((blob, diff_id)) = stored {
        let media_type = oci_layer_type(known.blob_types.get(&blob).and_then(|t| t.as_deref()));
        if existing == ExistingLayers::Recompress && media_type != options.compression.media_type()
        {
            return Ok(Found::Blob(converted(
                store, known, key, &blob, &diff_id, options,
            )?));
        }
        let size = fs_err::metadata(store.blob_path(&blob))?.len();
        tracing::debug!(snapshot = %key, blob = %blob, "reusing the stored image's layer");
        return Ok(Found::Blob(Layer {
            digest: blob,
            size,
            diff_id,
            media_type: media_type.to_owned(),
            snapshot: Some(key.to_owned()),
            source_date_epoch: None,
        }));
    }
    let diff_id = match diff_id {
        Some(d) => Some(d),
        None => known.diff_id(store, key, options.source_date_epoch)?,
    };
    if let Some(diff_id) = diff_id
        && let Some(layer) = known.blob(store, &diff_id, key, options)?
    {
        return Ok(Found::Blob(layer));
    }
    Ok(Found::Snapshot { diff_id })
}

/// Runs `job` on every item, on as many threads as there are cores (each layer's compressor
/// has threads of its own; running several layers at once keeps the cores busy through each
/// one's walk of its files). Answers in the order of `items`.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    job: impl Fn(&T) -> Result<R, Error> + Sync,
) -> Result<Vec<R>, Error> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(job).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R, Error>>>> =
        Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = job(item);
                    let failed = result.is_err();
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                    if failed {
                        // The others stop at their next item.
                        next.store(items.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut answered = Vec::with_capacity(items.len());
    // Items are taken in order, so one skipped after a failure comes after the failed one,
    // whose error is answered first.
    for result in results.into_iter().flatten() {
        answered.push(result?);
    }
    Ok(answered)
}

/// Writes the blob of the build snapshot `key` and remembers it (and its diff ID). With
/// `expected`, the diff ID the snapshot must give.
fn write(
    store: &Store,
    key: &str,
    expected: Option<Digest>,
    options: &LayerOptions,
) -> Result<Layer, Error> {
    let dir = store.committed_dir(key)?;
    let written = store.write_layer(&dir, DiffSource::OverlayUpper, options)?;
    tracing::debug!(snapshot = %key, blob = %written.digest, "wrote a layer");
    if let Some(expected) = expected
        && expected != written.diff_id
    {
        return Err(Error::ChangedSnapshot {
            snapshot: key.to_owned(),
            expected,
            found: written.diff_id,
        });
    }
    remember_diff_id(store, key, options.source_date_epoch, &written.diff_id)?;
    remember(
        store,
        blob_record_id(&written.diff_id, options.compression),
        &format!("layer of snapshot {key}"),
        &written,
    )?;
    Ok(written_layer(&written, key, options.source_date_epoch))
}

/// The layers of the snapshots `keys` (bottom first), writing the blobs that do not exist yet
/// (several at once).
pub fn chain_layers(
    store: &Store,
    keys: &[String],
    options: &LayerOptions,
    existing: ExistingLayers,
) -> Result<Vec<Layer>, Error> {
    chain_layers_counted(store, keys, options, existing).map(|(layers, _)| layers)
}

/// As [`chain_layers`], with the bytes of the blobs it wrote (0: every blob existed).
pub fn chain_layers_counted(
    store: &Store,
    keys: &[String],
    options: &LayerOptions,
    existing: ExistingLayers,
) -> Result<(Vec<Layer>, u64), Error> {
    let found = find_chain(store, keys, options, existing)?;
    complete(store, keys, found, options)
}

/// What the store has for each of the snapshots `keys`: a blob, or only the snapshot.
fn find_chain(
    store: &Store,
    keys: &[String],
    options: &LayerOptions,
    existing: ExistingLayers,
) -> Result<Vec<Found>, Error> {
    let known = Known::read(store)?;
    keys.iter()
        .map(|key| find(store, &known, key, None, options, existing))
        .collect()
}

/// `found` with the missing blobs written, and the bytes written.
fn complete(
    store: &Store,
    keys: &[String],
    found: Vec<Found>,
    options: &LayerOptions,
) -> Result<(Vec<Layer>, u64), Error> {
    let missing: Vec<(usize, Option<Digest>)> = found
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match f {
            Found::Snapshot { diff_id } => Some((i, *diff_id)),
            Found::Blob(_) => None,
        })
        .collect();
    let written = in_parallel(&missing, |(i, diff_id)| {
        write(store, &keys[*i], *diff_id, options)
    })?;
    let bytes = written.iter().map(|l| l.size).sum();
    let mut written = written.into_iter();
    let layers = found
        .into_iter()
        .filter_map(|f| match f {
            Found::Blob(layer) => Some(layer),
            Found::Snapshot { .. } => written.next(),
        })
        .collect();
    Ok((layers, bytes))
}

/// The layers of the snapshots `keys` (bottom first) for an image stored with its manifest
/// pending: the blobs that exist, and for each other layer its diff ID, remembered or
/// computed in one walk of its snapshot that writes nothing.
pub fn chain_diff_ids(
    store: &Store,
    keys: &[String],
    options: &LayerOptions,
    existing: ExistingLayers,
) -> Result<Vec<PendingLayer>, Error> {
    let found = find_chain(store, keys, options, existing)?;
    let unknown: Vec<usize> = found
        .iter()
        .enumerate()
        .filter_map(|(i, f)| matches!(f, Found::Snapshot { diff_id: None }).then_some(i))
        .collect();
    let mut computed = in_parallel(&unknown, |&i| {
        let key = &keys[i];
        let dir = store.committed_dir(key)?;
        let (diff_id, _) =
            kiln_cache::layer_diff_id(&dir, DiffSource::OverlayUpper, options.source_date_epoch)?;
        tracing::debug!(snapshot = %key, %diff_id, "computed a layer's diff ID");
        remember_diff_id(store, key, options.source_date_epoch, &diff_id)?;
        Ok(diff_id)
    })?
    .into_iter();
    let mut layers = Vec::with_capacity(keys.len());
    for (key, found) in keys.iter().zip(found) {
        let (diff_id, blob, source_date_epoch) = match found {
            Found::Blob(layer) => (layer.diff_id, Some(layer.digest), layer.source_date_epoch),
            Found::Snapshot { diff_id: Some(d) } => (d, None, options.source_date_epoch),
            Found::Snapshot { diff_id: None } => (
                computed
                    .next()
                    .ok_or_else(|| kiln_cache::Error::SnapshotNotFound { key: key.clone() })?,
                None,
                options.source_date_epoch,
            ),
        };
        layers.push(PendingLayer {
            diff_id,
            blob,
            snapshot: Some(key.clone()),
            source_date_epoch,
        });
    }
    Ok(layers)
}

/// The stored image `record` as an [`Image`] (to push, save or export it). An image stored
/// with its manifest pending gets its missing blobs written now (several at once) from the
/// snapshots of its chain, the manifest made and recorded: the blobs and manifest are those
/// an export at build time would have made.
pub fn stored_image(store: &Store, record: &ImageRecord) -> Result<Image, Error> {
    let Some(pending) = &record.pending else {
        return Ok(store.stored_image(record)?);
    };
    let keys = match &record.chain_id {
        Some(top) => snapshot_chain(store, &top.to_string())?,
        None => Vec::new(),
    };
    if keys.len() != record.diff_ids.len() || pending.blobs.len() != keys.len() {
        return Err(Error::PendingLayers {
            name: record.name.clone(),
            snapshots: keys.len(),
            layers: record.diff_ids.len(),
        });
    }
    let options = LayerOptions {
        compression: pending.compression,
        source_date_epoch: pending.source_date_epoch,
        threads: 0,
    };
    let known = Known::read(store)?;
    let mut found = Vec::with_capacity(keys.len());
    for ((key, diff_id), blob) in keys.iter().zip(&record.diff_ids).zip(&pending.blobs) {
        match blob.filter(|b| store.has_blob(b)) {
            Some(blob) => found.push(Found::Blob(Layer {
                digest: blob,
                size: fs_err::metadata(store.blob_path(&blob))?.len(),
                diff_id: *diff_id,
                media_type: oci_layer_type(known.blob_types.get(&blob).and_then(|t| t.as_deref()))
                    .to_owned(),
                snapshot: Some(key.clone()),
                source_date_epoch: None,
            })),
            None => found.push(match known.blob(store, diff_id, key, &options)? {
                Some(layer) => Found::Blob(layer),
                None => Found::Snapshot {
                    diff_id: Some(*diff_id),
                },
            }),
        }
    }
    let (layers, _) = complete(store, &keys, found, &options)?;
    let config = store.read_blob(&record.config)?;
    let image = assemble(&config, layers, pending.oci_mediatypes)?;
    store.complete_image(record, &image)?;
    tracing::info!(image = %record.name, manifest = %image.manifest_digest, "made the pending manifest");
    Ok(image)
}

/// The stored layer `blob` (diff ID `diff_id`) of the snapshot `key` in the compression
/// `options` name: converted once, then found through its cache record. A blob that is not
/// `diff_id` fails the export; when a lazy snapshot (a cache hit) said it was, that snapshot
/// is forgotten, as a read of it would.
fn converted(
    store: &Store,
    known: &Known,
    key: &str,
    blob: &Digest,
    diff_id: &Digest,
    options: &LayerOptions,
) -> Result<Layer, Error> {
    let id = format!(
        "{CONVERTED_PREFIX}{blob}/{}",
        compression_tag(options.compression)
    );
    if let Some(layer) = known
        .records
        .get(&id)
        .and_then(|r| remembered(store, r, key, None))
    {
        tracing::debug!(snapshot = %key, blob = %layer.digest, "reusing the converted layer");
        store.touch_cache_record(&id)?;
        return Ok(layer);
    }
    let written = match store.recompress_layer(blob, diff_id, options) {
        Ok(written) => written,
        Err(error @ kiln_cache::Error::DigestMismatch { .. }) => {
            if store.snapshot(key)?.is_some_and(|r| r.remote.is_some()) {
                store.forget_lazy(key)?;
            }
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    };
    tracing::debug!(snapshot = %key, from = %blob, blob = %written.digest, "converted a layer");
    remember(store, id, &format!("layer {blob} converted"), &written)?;
    Ok(written_layer(&written, key, None))
}

/// The layer `written` from snapshot `key`, its mtimes clamped to `source_date_epoch`.
fn written_layer(written: &LayerDescriptor, key: &str, source_date_epoch: Option<i64>) -> Layer {
    Layer {
        digest: written.digest,
        size: written.size,
        diff_id: written.diff_id,
        media_type: written.media_type.to_owned(),
        snapshot: Some(key.to_owned()),
        source_date_epoch,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Records a written blob under `id`, described as `what`, with what [`remembered`] needs to
/// find it again.
fn remember(store: &Store, id: String, what: &str, written: &LayerDescriptor) -> Result<(), Error> {
    let now = now();
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

/// Records the diff ID of the build snapshot `key` at `epoch`.
fn remember_diff_id(
    store: &Store,
    key: &str,
    epoch: Option<i64>,
    diff_id: &Digest,
) -> Result<(), Error> {
    let now = now();
    store.put_cache_record(&CacheRecord {
        id: diff_record_id(key, epoch),
        description: format!("diff ID of snapshot {key} diff_id={diff_id}"),
        blobs: Vec::new(),
        snapshots: Vec::new(),
        size: 0,
        created: now,
        last_used: now,
    })?;
    Ok(())
}

/// The value of `name=` in a record's description.
fn field<'a>(record: &'a CacheRecord, name: &str) -> Option<&'a str> {
    record
        .description
        .split(' ')
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
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
    let diff_id = field(record, "diff_id")?.parse().ok()?;
    let media_type = field(record, "media_type")?.to_owned();
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
mod tests;
