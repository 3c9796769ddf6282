//! kiln-exporters: turns a solved result into something other tools accept.
//!
//! The interface, in BuildKit's spirit: an [`Output`] (parsed from `--output`) is resolved with
//! the [`ExportContext`] every output of a build shares into an [`Exporter`], whose
//! [`Exporter::export`] takes the store, the result's snapshot key and the frontend's image
//! config and answers an [`ExportResponse`] (image digest, names, pushed digests). `kiln
//! build` only wires this; `kiln save` and `kiln push` deliver stored images through the
//! same [`deliver_image`].
//!
//! - [`chain_layers`]: the layer blobs of a snapshot chain ([`snapshot_chain`]). Layers of
//!   pulled images are reused as they are; each build step's snapshot is compressed once with
//!   [`kiln_cache::write_layer`] (missing layers several at once) and remembered by its diff
//!   ID, so every output (and the next export, or push) shares the blob.
//! - `-t` alone ([`ExportContext::pending_manifest`]): [`chain_diff_ids`] walks each new
//!   layer once for its diff ID, the image is stored with its manifest pending, and
//!   [`stored_image`] writes the blobs and makes the manifest when `kiln push` or `kiln save`
//!   first needs them.
//! - [`build_image`]: the image config (diff IDs, history fixed up as BuildKit's exporter does,
//!   `created` from `SOURCE_DATE_EPOCH`) and manifest, as [`Image`], in OCI or docker media
//!   types, serialised with sorted keys so equal inputs give equal bytes.
//! - Outputs: [`write_oci_dir`] / [`write_oci_tar`] (OCI image layout), [`write_docker_tar`]
//!   (what `docker load` reads), and registry [`push`], which streams blobs from the store's
//!   files (HEAD check, cross-repository mount, monolithic upload with a chunked fallback).
//!   The local image store is kiln-cache's: [`Store::store_image`](kiln_cache::Store::store_image)
//!   (whose snapshots share the build's files through hard links instead of unpacking the
//!   layers again), `find_image`, `tag_image`, `stored_image` and `load` there.
//! - The result's file system as it is: [`export_local`] (`type=local`, into a host directory,
//!   device nodes left out) and [`export_tar`] (`type=tar`), both reading the snapshot through
//!   the store's snapshot mount ([`Store::with_snapshot`](kiln_cache::Store::with_snapshot)).
//! - Requests: [`parse_output`] reads buildx's `--output` grammar into an [`Output`] (and
//!   [`outputs_from_args`] adds `-t`/`--push`), refusing bad options with an [`OutputError`].
//! - Attestations ([`Attestations`], `--provenance`): what a build asks for is read one way
//!   for `kiln build`'s flags and a daemon's `attest:` attributes ([`AttestationRequest`],
//!   [`Attest`], `attest.rs`); for OCI layouts and pushes, each
//!   platform's image gets an attestation manifest of in-toto statements in the image index
//!   (BuildKit's layout, `attestation.rs`); SLSA v1 provenance made from the request and the
//!   platform's LLB ([`provenance_predicate`]); an SPDX 2.3 SBOM of the packages kiln finds
//!   in the image's package databases (`sbom/`: dpkg, apk, Python, npm, cargo), those of the
//!   base image attributed to it.
//! - Cache exports (`--cache-to`): [`push_cache`] to a registry, [`write_cache_layout`] as an
//!   OCI layout, from a [`kiln_cache::CacheManifest`].
//! - `rewrite-timestamp` as BuildKit does it: the base image's layers (and, with
//!   [`base_histories`], its history times) are kept; only the build's layers are written
//!   with `SOURCE_DATE_EPOCH`.
//!
//! Data path: solver result (a snapshot key) ─[`snapshot_chain`]→ keys ─[`chain_layers`]→
//! layer blobs ─[`build_image`]→ [`Image`] ─→ OCI/docker archives, a registry or the image
//! store; or snapshot key ─[`Store::with_snapshot`](kiln_cache::Store::with_snapshot)→
//! merged tree ─[`export_local`] / [`export_tar`]→ a directory or a tar. This crate does not
//! depend on the solver: it takes snapshot keys, and the solver never exports. A new exporter
//! goes here: its request a variant of [`Output`] (grammar in `options.rs`), its work a module
//! beside `local` and `archive` taking the store and a snapshot key, called from
//! [`Exporter::export`] (`exporter.rs`).
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
mod attest;
mod attestation;
mod cache;
mod cachegraph;
mod error;
mod exporter;
mod image;
mod index;
mod layers;
mod local;
mod options;
mod output;
mod phases;
mod provenance;
mod push;
mod sbom;

pub use archive::{layout_index, write_docker_tar, write_oci_dir, write_oci_tar};
pub use attest::{Attest, AttestError, AttestationRequest};
pub use attestation::{
    ANNOTATION_PREDICATE_TYPE, ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE,
    Attestations, MEDIA_TYPE_IN_TOTO, STATEMENT_TYPE,
};
pub use cache::{push_cache, tagged_index, write_cache_layout};
pub use cachegraph::{CacheGraph, cache_graph, cache_snapshots, inline_cache_config};
pub use error::Error;
pub use exporter::{
    ExportContext, ExportResponse, Exporter, PlatformResult, deliver_image, deliver_index,
};
pub use image::{
    ImageOptions, base_histories, build_image, build_image_from_json, finish_config, image_config,
    minimal_config, rfc3339,
};
pub use index::{ImageIndex, MEDIA_TYPE_DOCKER_MANIFEST_LIST};
pub use kiln_cache::{Image, Layer};
pub use layers::{
    ExistingLayers, chain_diff_ids, chain_layers, chain_layers_counted, snapshot_chain,
    stored_image,
};
pub use local::{export_local, export_tar};
pub use oci_spec;
pub use options::{
    ImageFormat, ImageSettings, Output, OutputError, output_fields, outputs_from_args, parse_output,
};
pub use output::OutputFile;
pub use phases::{ExportPhase, PhaseLog};
pub use provenance::{
    BUILD_TYPE, PREDICATE_TYPE_SLSA_V1, ProvenanceMode, ProvenanceRequest, RequestFacts,
    docker_purl, provenance_predicate,
};
pub use push::{push, push_index};
pub use sbom::PREDICATE_TYPE_SPDX;
