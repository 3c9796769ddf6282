//! kiln-cache: everything kiln keeps on disk.
//!
//! It will own the content store (sha256 blobs written atomically), metadata in an embedded
//! transactional database, layer snapshots (unpacked once, stacked with overlayfs), layer diff
//! and unpack, cache records, garbage collection and prune, and the registry client used to pull
//! base images and import/export cache. The solver and exporters use only its API.
