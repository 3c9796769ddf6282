//! kiln-cache: everything kiln keeps on disk.
//!
//! - [`Store`]: the content store (sha256 blobs written atomically through [`BlobWriter`]) and
//!   the metadata database (redb: images, blobs, snapshots, cache records), under one root
//!   directory; [`Lease`]s keep garbage collection away from work in progress.
//! - Snapshots: layers unpacked once into directories keyed by chain ID ([`chain_id`]),
//!   active snapshots prepared on them with overlay [`Mounts`] for the runner, committed back.
//! - Snapshot mounts: [`Store::with_snapshot`] mounts a committed snapshot chain read-only as
//!   one merged tree for the length of a closure (leased, unmounted on return, error or panic,
//!   invisible outside a private mount namespace); [`with_views`] mounts any [`View`]s
//!   (writable ones for the solver's file and merge ops) the same way.
//! - Layers: [`write_layer`] turns a directory (an overlay upper or a whole tree) into a
//!   compressed OCI layer in one streaming pass; [`unpack_layer`] unpacks an untrusted layer
//!   without ever writing outside its destination.
//! - Pull: [`pull`] fetches images from registries (mirrors, plain HTTP, Docker credentials per
//!   [`Config`]), verifying every digest; every registry client is made by [`ClientSettings`],
//!   with the system's root certificates read once per process.
//! - Remote cache: [`cacheconfig`], BuildKit's cache export format, parsed and checked;
//!   [`ImportedCache`] reads one from a manifest, a local OCI layout or an image config;
//!   [`RemoteCache`] reads one from a registry lazily (blobs on demand);
//!   [`cache_manifest`] and [`inline_cache_value`] write one;
//!   [`CacheExportRequest`] / [`CacheImportRequest`] are `--cache-to` / `--cache-from` checked.
//! - Images: an [`Image`] (manifest, config, [`Layer`]s; [`assemble`] makes the manifest) is
//!   stored under a name with [`Store::store_image`], looked up with [`Store::find_image`]
//!   (names normalised by [`normalize_name`]), named again with [`Store::tag_image`], read
//!   back with [`Store::stored_image`]; [`Store::load`] imports OCI layouts and docker archives.
//! - Garbage collection: [`Store::gc`], [`Store::prune`], [`Store::check`], BuildKit's
//!   policies ([`GcConfig`], [`GcPolicy`]) with [`Store::apply_gc_policies`]; disk usage in one
//!   measure (each file once, [`Files`]): [`Store::du`], [`Store::disk_files`].
//!
//! The solver and exporters use only this API; the runner mounts the directories it returns.
//! Content is named by [`kiln_llb::Digest`], re-exported here as [`Digest`].
//!
//! Data path: registry ─[`pull`]→ blobs ─[`Store::unpack_snapshot`]→ committed snapshots
//! ─[`Store::prepare`]→ [`Mounts`] (runner) ─[`Store::commit`]→ committed snapshot
//! ─[`write_layer`]→ layer blob, or ─[`Store::with_snapshot`]→ merged tree (exporters).
//!
//! # Sharing a store between processes
//! Blobs need no lock: each is written to its own temporary file and renamed into place after
//! verification, and identical content may be renamed over itself. The metadata database is
//! held open by one process at a time (redb locks it; `meta.lock` queues the others), and the
//! holder hands it over as soon as another process waits for it, or after a second without
//! use. Blob, snapshot and cache records are committed lazily and made durable in batches,
//! each batch after a sync of the data it names, so a crash loses at most the newest records
//! and never leaves one naming missing data; images are committed durably at once (see
//! [`Store::flush`]). Garbage collection takes `gc.lock` exclusively, and every pull or build
//! holds it shared through a [`Lease`] while it writes content that no image or cache record
//! names yet.
//!
//! Where new code goes: anything the store keeps (blobs, snapshots, records, images, leases) is a
//! method of [`Store`] here, so the solver, exporters and CLI never touch the store's files; a
//! layer format change goes into `diff.rs` / `unpack.rs`; registry protocol into `pull.rs` and
//! `registry.rs`, how a registry client is made into `client.rs`; remote cache formats into
//! `cacheconfig.rs`, `cacheexport.rs`, `cacheimport.rs` and `cacheremote.rs`; collection rules into
//! `gc.rs` and `gcpolicy.rs`.
//!
//! ```
//! # fn main() -> Result<(), kiln_cache::Error> {
//! let root = tempfile::tempdir()?;
//! let store = kiln_cache::Store::open(root.path())?;
//! let digest = store.write_blob(b"hello", None)?;
//! assert_eq!(store.read_blob(&digest)?, b"hello");
//! # Ok(())
//! # }
//! ```

mod buildkeys;
mod builds;
pub mod cacheconfig;
mod cacheexport;
mod cacheimport;
mod cacheoptions;
mod cacheremote;
mod cachesource;
mod client;
mod container;
mod container_record;
mod diff;
mod error;
mod gc;
mod gcpolicy;
mod hash;
mod image;
mod lazy;
mod lease;
mod limits;
mod link;
mod load;
mod local_source;
mod meta;
mod mount;
mod pull;
mod registry;
mod snapshot;
mod store;
mod unpack;
mod usage;
mod volume;

pub use buildkeys::{BuildKeys, KeyEdge, KeyInput, KeyNode, output_record_digest};
pub use builds::{BuildHistoryLimits, StoredBuild};
pub use cacheexport::{CacheManifest, CacheManifestForm, cache_manifest, inline_cache_value};
pub use cacheimport::{ANNOTATION_REF_NAME, CacheBlob, ImportedCache, layout_blob_path};
pub use cacheoptions::{
    CacheDestination, CacheExportRequest, CacheImportRequest, CacheMode, CacheOptionsEntry,
    CacheOptionsError, DEFAULT_LOCAL_TAG, parse_bool,
};
pub use cacheremote::RemoteCache;
pub use cachesource::{CacheSource, ImportedLayer};
pub use client::ClientSettings;
pub use container_record::{
    ContainerConfig, ContainerRecord, ContainerRecords, ContainerState, Health, HealthConfig,
    HealthLog, HostConfig, KEEPER_DIED_EXIT_CODE, NetworkSettings, PortBinding, RestartPolicy,
    Status as ContainerStatus, ZERO_TIME, now_rfc3339,
};
pub use diff::{
    Compression, DiffSource, LayerDescriptor, LayerOptions, MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD, layer_diff_id, recompress_layer, write_layer,
};
pub use error::{Error, ValueError};
pub use gc::{CacheKind, GcReport, PruneOptions, PruneReport};
pub use gcpolicy::{DiskSpace, GcConfig, GcPolicy, parse_duration, parse_size};
pub use image::{
    Image, Layer, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, PendingLayer, assemble, canonical_json,
    normalize_name, oci_layer_type,
};
pub use kiln_llb::{Digest, DigestError};
pub use lazy::{
    LazyLayer, RemoteLayer, fetch_remote_blob, fetch_to_convert, realize, realize_with_progress,
};
pub use lease::{Lease, Owner};
pub use limits::{LayerLimit, UnpackLimits};
pub use local_source::{LocalSource, LocalSourceDir};
pub use mount::{View, with_views};
pub use oci_client;
pub use oci_spec;
pub use pull::{PullEvent, PullOptions, PullProgress, PullStage, Pulled, pull, resolve_digest};
pub use registry::{
    Config, Credentials, DockerConfigFile, RegistryConfig, digest_name, docker_config_path,
    is_docker_hub, is_open_registry, parse_reference,
};
pub use snapshot::{Mounts, SnapshotKind, SnapshotRecord, chain_id};
pub use store::{
    BlobRecord, BlobWriter, CacheMountDir, CacheRecord, ImageRecord, PendingManifest, Store,
};
pub use unpack::{UnpackOptions, Unpacked, WhiteoutMode, decompress, unpack_layer};
pub use usage::{DiskUsage, Files, UsageEntry};
pub use volume::{Volume, Volumes};
