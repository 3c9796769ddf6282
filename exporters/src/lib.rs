//! kiln-exporters: turns a solved result into something other tools accept.
//!
//! - [`chain_layers`]: the layer blobs of a snapshot chain ([`snapshot_chain`]). Layers of
//!   pulled images are reused as they are; each build step's snapshot is compressed once with
//!   [`kiln_cache::write_layer`] and remembered, so every output (and the next export) shares
//!   the blob.
//! - [`build_image`]: the image config (diff IDs, history fixed up as BuildKit's exporter does,
//!   `created` from `SOURCE_DATE_EPOCH`) and manifest, as [`Image`], in OCI or docker media
//!   types, serialised with sorted keys so equal inputs give equal bytes.
//! - Outputs: [`write_oci_dir`] / [`write_oci_tar`] (OCI image layout), [`write_docker_tar`]
//!   (what `docker load` reads), and registry [`push`], which streams blobs from the store's
//!   files (HEAD check, cross-repository mount, monolithic upload with a chunked fallback).
//!   The local image store is kiln-cache's: [`Store::store_image`](kiln_cache::Store::store_image)
//!   (whose snapshots share the build's files through hard links instead of unpacking the
//!   layers again), `find_image`, `tag_image`, `stored_image` and `load` there.
//! - Cache exports (`--cache-to`): [`push_cache`] to a registry, [`write_cache_layout`] as an
//!   OCI layout, from a [`kiln_cache::CacheManifest`].
//! - `rewrite-timestamp` as BuildKit does it: the base image's layers (and, with
//!   [`base_histories`], its history times) are kept; only the build's layers are written
//!   with `SOURCE_DATE_EPOCH`.
//!
//! Data path: solver result (a snapshot key) ─[`snapshot_chain`]→ keys ─[`chain_layers`]→
//! layer blobs ─[`build_image`]→ [`Image`] ─→ OCI/docker archives, a registry or the image
//! store. This crate does not depend on the solver: it takes snapshot keys.
//!
//! ```
//! # fn main() -> Result<(), kiln_exporters::Error> {
//! let image = kiln_exporters::build_image(Vec::new(), None, &Default::default())?;
//! let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
//! assert_eq!(config["os"], "linux");
//! # Ok(())
//! # }
//! ```

mod archive;
mod cache;
mod error;
mod image;
mod layers;
mod output;
mod push;

pub use archive::{write_docker_tar, write_oci_dir, write_oci_tar};
pub use cache::{push_cache, write_cache_layout};
pub use error::Error;
pub use image::{
    ImageOptions, base_histories, build_image, build_image_from_json, finish_config,
    minimal_config, rfc3339,
};
pub use kiln_cache::{Image, Layer};
pub use layers::{ExistingLayers, chain_layers, snapshot_chain};
pub use oci_spec;
pub use output::OutputFile;
pub use push::push;
