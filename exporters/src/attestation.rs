//! Attestations in BuildKit's layout: per platform's image, one more manifest in the image
//! index (platform `unknown/unknown`, annotations `vnd.docker.reference.digest` = the image's
//! manifest digest and `vnd.docker.reference.type` = `attestation-manifest`), whose layers are
//! in-toto statements (`application/vnd.in-toto+json`, annotation `in-toto.io/predicate-type`)
//! and whose config is an image config of platform `unknown/unknown`, as BuildKit's
//! `exporter/containerimage/attestations.go` writes them.
//!
//! # Overview
//! 1. The build says what it wants ([`Attestations`]): provenance (its predicate made from
//!    the request and each platform's LLB, [`crate::provenance_predicate`]) and an SBOM.
//! 2. After a platform's image is made, its statements are written: the subject is the
//!    image's manifest digest, named by each of the output's names as a `pkg:docker` URL.
//! 3. The statements are blobs of the store; the attestation manifest naming them joins the
//!    index ([`crate::ImageIndex`]) after the images.

use kiln_cache::{Digest, Image, Layer, MEDIA_TYPE_OCI_MANIFEST, Store, canonical_json};
use kiln_llb::Platform;
use serde_json::{Value, json};

use crate::error::Error;
use crate::provenance::{ProvenanceRequest, docker_purl};

/// The media type of an in-toto statement.
pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";

/// The in-toto statement type BuildKit writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";

/// The annotation naming a statement's predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// The annotation naming the image an attestation manifest describes.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// The annotation saying what an index entry is (`attestation-manifest`).
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// The attestations a build asks for (`--provenance`, `--sbom`).
#[derive(Debug, Clone, Default)]
pub struct Attestations {
    /// Provenance, with what the build says about its request.
    pub provenance: Option<ProvenanceRequest>,
    /// An SPDX SBOM of each image.
    pub sbom: bool,
}

impl Attestations {
    /// Whether any attestation is asked for.
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom
    }
}

/// One statement for an image: its predicate type and predicate.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub(crate) predicate_type: &'static str,
    pub(crate) predicate: Value,
}

/// The subjects of a platform's image: each name as a `pkg:docker` URL (`_` without a name,
/// as BuildKit), with the manifest digest.
fn subjects(names: &[String], platform: &Platform, image: &Image) -> Vec<Value> {
    let digest = json!({ "sha256": image.manifest_digest.hex() });
    if names.is_empty() {
        return vec![json!({ "name": "_", "digest": digest })];
    }
    names
        .iter()
        .map(|name| json!({ "name": docker_purl(name, Some(platform)), "digest": digest }))
        .collect()
}

/// Writes `statements` about `image` as blobs and the attestation manifest naming them;
/// answers the manifest (as an [`Image`] whose layers are the statements).
pub(crate) fn attestation_manifest(
    store: &Store,
    names: &[String],
    platform: &Platform,
    image: &Image,
    statements: &[Statement],
) -> Result<Image, Error> {
    let subjects = subjects(names, platform, image);
    let mut layers = Vec::with_capacity(statements.len());
    let mut descriptors = Vec::with_capacity(statements.len());
    for statement in statements {
        let bytes = canonical_json(
            &json!({
                "_type": STATEMENT_TYPE,
                "predicateType": statement.predicate_type,
                "subject": subjects,
                "predicate": statement.predicate,
            }),
            "in-toto statement",
        )?;
        let digest = Digest::from_bytes(&bytes);
        store.write_blob(&bytes, Some(&digest))?;
        store.record_blob(&digest, bytes.len() as u64, Some(MEDIA_TYPE_IN_TOTO))?;
        descriptors.push(json!({
            "mediaType": MEDIA_TYPE_IN_TOTO,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "annotations": { ANNOTATION_PREDICATE_TYPE: statement.predicate_type },
        }));
        layers.push(Layer {
            digest,
            size: bytes.len() as u64,
            diff_id: digest,
            media_type: MEDIA_TYPE_IN_TOTO.to_owned(),
            snapshot: None,
            source_date_epoch: None,
        });
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let config = canonical_json(
        &json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }),
        "attestation config",
    )?;
    let config_digest = Digest::from_bytes(&config);
    store.write_blob(&config, Some(&config_digest))?;
    let manifest = canonical_json(
        &json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": descriptors,
        }),
        "attestation manifest",
    )?;
    let manifest_digest = Digest::from_bytes(&manifest);
    store.write_blob(&manifest, Some(&manifest_digest))?;
    store.record_blob(
        &manifest_digest,
        manifest.len() as u64,
        Some(MEDIA_TYPE_OCI_MANIFEST),
    )?;
    Ok(Image {
        manifest,
        manifest_digest,
        manifest_media_type: MEDIA_TYPE_OCI_MANIFEST.to_owned(),
        config,
        config_digest,
        layers,
        created: None,
    })
}
