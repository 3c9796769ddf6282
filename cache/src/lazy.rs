//! Lazy snapshots: layers known by their descriptor and the registry repository that has
//! them, recorded without being downloaded or unpacked.
//!
//! # Overview
//! 1. A cache hit ([`CacheSource::record_lazy`](crate::CacheSource::record_lazy)) or a base
//!    image resolved for a build ([`PullOptions::lazy`](crate::PullOptions::lazy)) records its
//!    layer chain with [`Store::put_lazy_chain`]: committed snapshot records keyed by chain
//!    ID, each with its blob, diff ID and [`RemoteLayer`], and no directory. A chain ID that
//!    has a snapshot already keeps it.
//! 2. What needs only descriptors uses them as they are: a push sends the layer by a
//!    cross-repository mount from [`RemoteLayer::reference`]'s repository (same registry
//!    host only), or finds it there already; the image config names the diff IDs.
//! 3. An export that converts layers to another compression (`force-compression=true`)
//!    reads the blobs of the lazy layers in another compression: [`fetch_to_convert`]
//!    downloads them (verified against their digests and sizes) without unpacking them; a
//!    lazy layer already in the wanted compression stays lazy.
//! 4. Whatever reads a lazy snapshot's files calls [`realize`] first: each lazy layer of the
//!    chain is downloaded (verified against its digest and size, as any pull), unpacked
//!    (verified against its diff ID) and recorded as an ordinary snapshot. [`Store::lowers`]
//!    refuses a lazy snapshot, so nothing reads a missing directory by mistake.
//!
//! A lazy record trusts the cache's descriptor only as far as naming what to fetch: nothing
//! is unpacked, exported as files or uploaded from the store before its bytes are verified,
//! and a registry mounts only a blob it has under that digest.

use std::sync::Arc;

use kiln_llb::Digest;
use oci_client::manifest::OciDescriptor;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::lease::Held;
use crate::meta::{self, Commit};
use crate::pull::{PullEvent, PullOptions, PullProgress, PullStage, sources};
use crate::registry::parse_reference;
use crate::snapshot::{SnapshotKind, SnapshotRecord, chain_id};
use crate::store::{Store, now};

/// Where a lazy snapshot's blob is: a registry repository and the blob's descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLayer {
    /// A reference into the repository that has the blob (`host/repository[:tag]`).
    pub reference: String,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size in bytes.
    pub size: u64,
}

/// One layer of a chain to record lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LazyLayer {
    /// The compressed blob.
    pub blob: Digest,
    /// The digest of its uncompressed tar.
    pub diff_id: Digest,
    /// When it was made (seconds since the epoch), if known.
    pub created: Option<u64>,
    /// Where the blob is.
    pub remote: RemoteLayer,
}

impl Store {
    /// Records the chain `layers` (base first) as snapshots keyed by chain ID, without
    /// downloading anything: a chain ID with a snapshot already (unpacked or lazy) keeps it.
    /// Returns the chain ID of the top (`None` for no layer).
    pub fn put_lazy_chain(&self, layers: &[LazyLayer]) -> Result<Option<Digest>, Error> {
        let mut parent: Option<Digest> = None;
        for layer in layers {
            let chain = chain_id(parent.as_ref(), &layer.diff_id);
            let key = chain.to_string();
            self.holder.hold(&[Held::Snapshot(key.clone())])?;
            if self.snapshot(&key)?.is_none() {
                // The directory must not exist for a record that says it is not unpacked:
                // one left by an interrupted unpack is garbage, and is unpacked over.
                self.committed_dir(&key)?;
                let record = SnapshotRecord {
                    key: key.clone(),
                    parent: parent.map(|p| p.to_string()),
                    kind: SnapshotKind::Committed,
                    diff_id: Some(layer.diff_id),
                    blob: Some(layer.blob),
                    size: 0,
                    created: layer.created.unwrap_or_else(now),
                    last_used: now(),
                    owner: None,
                    remote: Some(layer.remote.clone()),
                };
                self.meta.write_with(Commit::Lazy, |tx| {
                    // Another writer may have recorded it meanwhile (unpacked, even).
                    if tx.get::<SnapshotRecord>(meta::SNAPSHOTS, &key)?.is_none() {
                        tx.put(meta::SNAPSHOTS, &key, &record)?;
                    }
                    Ok(())
                })?;
            }
            parent = Some(chain);
        }
        Ok(parent)
    }

    /// Whether the snapshot `key` or one below it is lazy (not downloaded and unpacked yet).
    pub fn is_lazy(&self, key: &str) -> Result<bool, Error> {
        Ok(!self.lazy_chain(key)?.is_empty())
    }

    /// The lazy records of the chain of `key`, base first.
    fn lazy_chain(&self, key: &str) -> Result<Vec<SnapshotRecord>, Error> {
        let mut lazy = Vec::new();
        let mut next = Some(key.to_owned());
        while let Some(k) = next {
            let record = self
                .snapshot(&k)?
                .ok_or_else(|| Error::SnapshotNotFound { key: k.clone() })?;
            next = record.parent.clone();
            if record.remote.is_some() {
                lazy.push(record);
            }
        }
        lazy.reverse();
        Ok(lazy)
    }

    /// Removes the lazy snapshot `key` and every lazy snapshot above it. Unpacked snapshots
    /// are kept; one above a removed snapshot is then a broken chain, which
    /// [`Store::chain_is_whole`] tells.
    pub fn forget_lazy(&self, key: &str) -> Result<(), Error> {
        let snapshots = self.snapshots()?;
        let mut gone = vec![key.to_owned()];
        let mut next = 0;
        while let Some(parent) = gone.get(next).cloned() {
            next += 1;
            gone.extend(
                snapshots
                    .iter()
                    .filter(|s| s.remote.is_some() && s.parent.as_deref() == Some(&parent))
                    .map(|s| s.key.clone()),
            );
        }
        self.meta.write_with(Commit::Lazy, |tx| {
            for key in &gone {
                if tx
                    .get::<SnapshotRecord>(meta::SNAPSHOTS, key)?
                    .is_some_and(|r| r.remote.is_some())
                {
                    tx.remove(meta::SNAPSHOTS, key)?;
                }
            }
            Ok(())
        })?;
        tracing::warn!(
            snapshot = key,
            removed = gone.len(),
            "forgot lazy snapshots whose layer is not what the cache said"
        );
        Ok(())
    }

    /// Whether the snapshot `key` and every snapshot below it are recorded.
    pub fn chain_is_whole(&self, key: &str) -> Result<bool, Error> {
        let mut next = Some(key.to_owned());
        while let Some(k) = next {
            match self.snapshot(&k)? {
                Some(record) => next = record.parent,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Where the blob `digest` of a lazy snapshot is, if a lazy snapshot names it.
    pub fn remote_blob(&self, digest: &Digest) -> Result<Option<RemoteLayer>, Error> {
        Ok(self
            .snapshots()?
            .into_iter()
            .filter(|r| r.blob.as_ref() == Some(digest))
            .find_map(|r| r.remote))
    }
}

/// Downloads and unpacks the lazy layers of the chain of the snapshot `key`, from the
/// registries their records name (with `pull`'s mirrors and credentials), so that its files
/// can be read. Nothing to do for a chain that has none.
pub async fn realize(store: &Arc<Store>, key: &str, pull: &PullOptions) -> Result<(), Error> {
    realize_with_progress(store, key, pull, &()).await
}

/// [`realize`], reporting the download and the unpacking of each lazy layer as a
/// [`PullEvent::StageDone`].
pub async fn realize_with_progress(
    store: &Arc<Store>,
    key: &str,
    pull: &PullOptions,
    progress: &dyn PullProgress,
) -> Result<(), Error> {
    let lazy = {
        let store = store.clone();
        let key = key.to_owned();
        blocking(move || store.lazy_chain(&key)).await?
    };
    for record in lazy {
        let (Some(blob), Some(diff_id), Some(remote)) =
            (record.blob, record.diff_id, &record.remote)
        else {
            continue;
        };
        let started = std::time::Instant::now();
        let had = store.has_blob(&blob);
        let fetched = fetch_remote_blob(store, &blob, remote, pull).await;
        if let Err(error) = fetched {
            return Err(forget_if_false(store, &record.key, error).await);
        }
        let bytes = remote.size;
        if !had {
            progress.event(PullEvent::StageDone {
                stage: PullStage::Download,
                started,
                bytes,
            });
        }
        let started = std::time::Instant::now();
        let parent: Option<Digest> = match &record.parent {
            Some(parent) => Some(parent.parse().map_err(|_| Error::SnapshotNotFound {
                key: parent.clone(),
            })?),
            None => None,
        };
        let unpacking = store.clone();
        let created = record.created;
        let unpacked = match blocking(move || {
            unpacking.unpack_snapshot_made_at(parent.as_ref(), &blob, &diff_id, Some(created))
        })
        .await
        {
            Ok(unpacked) => unpacked,
            Err(error) => return Err(forget_if_false(store, &record.key, error).await),
        };
        if unpacked.to_string() != record.key {
            // Records are keyed by chain ID; a record under another key is not ours to fill.
            return Err(Error::SnapshotNotFound { key: record.key });
        }
        progress.event(PullEvent::StageDone {
            stage: PullStage::Unpack,
            started,
            bytes,
        });
        tracing::debug!(snapshot = %record.key, %blob, "realized a lazy layer");
    }
    Ok(())
}

/// Downloads the blob of each lazy layer of the chains of `keys` whose media type is not
/// `media_type` (an OCI layer type), verified against its digest and size, and leaves it
/// packed: what an export that converts those layers to `media_type`
/// (`force-compression=true`) reads. The lazy layers already in `media_type` are left to be
/// pushed by mount, as any lazy layer.
pub async fn fetch_to_convert(
    store: &Arc<Store>,
    keys: &[String],
    media_type: &str,
    pull: &PullOptions,
) -> Result<(), Error> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let lazy = {
        let (store, keys) = (store.clone(), keys.to_vec());
        blocking(move || {
            let mut records: Vec<SnapshotRecord> = Vec::new();
            for key in &keys {
                for record in store.lazy_chain(key)? {
                    if !records.iter().any(|r| r.key == record.key) {
                        records.push(record);
                    }
                }
            }
            Ok(records)
        })
        .await?
    };
    // (The futures are made first: a closure in the stream's type would make the whole
    // future `Send` only for one lifetime, which the daemon's service cannot take.)
    let fetches: Vec<_> = lazy
        .iter()
        .filter(|r| {
            r.remote
                .as_ref()
                .is_some_and(|remote| crate::oci_layer_type(Some(&remote.media_type)) != media_type)
        })
        .map(|record| fetch_record_blob(store, record, pull))
        .collect();
    futures::stream::iter(fetches)
        .buffer_unordered(crate::pull::CONCURRENT_DOWNLOADS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Downloads the blob of the lazy snapshot `record` (see [`fetch_remote_blob`]); one whose
/// blob is not what its record says is forgotten.
async fn fetch_record_blob(
    store: &Arc<Store>,
    record: &SnapshotRecord,
    pull: &PullOptions,
) -> Result<(), Error> {
    let (Some(blob), Some(remote)) = (record.blob, &record.remote) else {
        return Ok(());
    };
    match fetch_remote_blob(store, &blob, remote, pull).await {
        Ok(()) => Ok(()),
        Err(error) => Err(forget_if_false(store, &record.key, error).await),
    }
}

/// `error`, after forgetting the lazy snapshot `key` and the lazy ones above it when the
/// error shows its record false (a layer that is not what its descriptor says): the cache
/// records that name them then miss, and the steps run again, instead of every later build
/// failing on the same lie.
async fn forget_if_false(store: &Arc<Store>, key: &str, error: Error) -> Error {
    if !matches!(
        error,
        Error::DigestMismatch { .. } | Error::SizeMismatch { .. }
    ) {
        return error;
    }
    let (store, key) = (store.clone(), key.to_owned());
    let forgotten = blocking(move || store.forget_lazy(&key)).await;
    if let Err(e) = forgotten {
        tracing::warn!(error = %e, "forgetting a false lazy snapshot");
    }
    error
}

/// Downloads the blob `digest` into the store from the repository `remote` names (verified
/// against the digest and size), unless the store has it.
pub async fn fetch_remote_blob(
    store: &Store,
    digest: &Digest,
    remote: &RemoteLayer,
    pull: &PullOptions,
) -> Result<(), Error> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let reference = parse_reference(&remote.reference)?;
    let descriptor = OciDescriptor {
        media_type: remote.media_type.clone(),
        digest: digest.to_string(),
        size: i64::try_from(remote.size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    };
    let mut last_error = None;
    for source in sources(&reference, pull).await? {
        match source.blob(store, &descriptor, digest).await {
            Ok(_) => {
                tracing::debug!(blob = %digest, from = %source.host, "downloaded a lazy blob");
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(blob = %digest, host = %source.host, error = %e, "lazy blob source failed");
                last_error = Some(e);
            }
        }
    }
    Err(last_error.expect("the origin is always a source"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> RemoteLayer {
        RemoteLayer {
            reference: "127.0.0.1:5000/team/cache:1".to_owned(),
            media_type: crate::MEDIA_TYPE_LAYER_GZIP.to_owned(),
            size: 10,
        }
    }

    #[test]
    fn a_lazy_chain_is_recorded_by_chain_id_and_refused_to_readers() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let layers: Vec<LazyLayer> = (0..2u8)
            .map(|i| LazyLayer {
                blob: Digest::from_bytes(&[i]),
                diff_id: Digest::from_bytes(&[i, i]),
                created: Some(7),
                remote: remote(),
            })
            .collect();
        let top = store.put_lazy_chain(&layers).unwrap().unwrap();
        let base = chain_id(None, &layers[0].diff_id);
        assert_eq!(top, chain_id(Some(&base), &layers[1].diff_id));
        let record = store.snapshot(&top.to_string()).unwrap().unwrap();
        assert_eq!(record.parent, Some(base.to_string()));
        assert_eq!(record.blob, Some(layers[1].blob));
        assert_eq!(record.created, 7);
        assert!(store.is_lazy(&top.to_string()).unwrap());
        assert_eq!(
            store.remote_blob(&layers[0].blob).unwrap(),
            Some(remote()),
            "the blob's source is known"
        );
        match store.lowers(&top.to_string()) {
            Err(Error::LazySnapshot { key }) => assert_eq!(key, top.to_string()),
            other => panic!("expected a lazy snapshot error, got {other:?}"),
        }
        // Recording it again changes nothing.
        assert_eq!(store.put_lazy_chain(&layers).unwrap(), Some(top));
    }

    #[test]
    fn a_false_lazy_layer_is_forgotten_with_the_lazy_layers_above_it() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let layer = |i: u8| LazyLayer {
            blob: Digest::from_bytes(&[i]),
            diff_id: Digest::from_bytes(&[i, i]),
            created: None,
            remote: remote(),
        };
        let top = store
            .put_lazy_chain(&[layer(0), layer(1), layer(2)])
            .unwrap()
            .unwrap();
        let other = store
            .put_lazy_chain(&[layer(0), layer(1), layer(3)])
            .unwrap()
            .unwrap();
        let base = chain_id(None, &layer(0).diff_id);
        let middle = chain_id(Some(&base), &layer(1).diff_id);
        assert!(store.chain_is_whole(&top.to_string()).unwrap());
        store.forget_lazy(&middle.to_string()).unwrap();
        for gone in [middle, top, other] {
            assert_eq!(store.snapshot(&gone.to_string()).unwrap(), None, "{gone}");
            assert!(!store.chain_is_whole(&gone.to_string()).unwrap());
        }
        assert!(store.chain_is_whole(&base.to_string()).unwrap());
    }

    #[test]
    fn an_unpacked_snapshot_is_never_replaced_by_a_lazy_record() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "f", &b"hi"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = Digest::from_bytes(&tar);
        let blob = store.write_blob(&tar, None).unwrap();
        let chain = store.unpack_snapshot(None, &blob, &diff_id).unwrap();
        let lazy = LazyLayer {
            blob,
            diff_id,
            created: None,
            remote: remote(),
        };
        assert_eq!(store.put_lazy_chain(&[lazy]).unwrap(), Some(chain));
        assert!(!store.is_lazy(&chain.to_string()).unwrap());
        assert_eq!(store.lowers(&chain.to_string()).unwrap().len(), 1);
    }
}
