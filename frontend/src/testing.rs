//! Test doubles of the traits this crate owns, for this crate's tests and for any crate that
//! converts Dockerfiles in its tests: [`FakeResolver`] for [`ImageMetaResolver`]. Compiled for
//! this crate's own tests and under the `testing` feature (its integration tests enable it
//! through a dev-dependency on the crate itself). A fake of another trait owned here goes here.

use std::collections::{BTreeMap, BTreeSet};

use kiln_llb::{normalize_image_ref, pb};

use crate::{ImageMetaResolver, ResolvedImage};

/// An [`ImageMetaResolver`] serving made-up images from memory, without a registry.
///
/// A reference gets the image registered for it with [`FakeResolver::image`], else the
/// [`FakeResolver::fallback`] image unless [`FakeResolver::unknown`] names it; any other
/// reference fails with `manifest unknown`, as a registry answers. References are compared
/// normalised, as `FROM` normalises them (`busybox` is `docker.io/library/busybox:latest`).
///
/// ```
/// use kiln_frontend::testing::FakeResolver;
/// use kiln_frontend::{ConvertOptions, convert};
///
/// let digest = format!("sha256:{}", "0".repeat(64));
/// let resolver = FakeResolver::default()
///     .fallback(&digest, r#"{"config":{"Env":["PATH=/bin"]}}"#)
///     .unknown("missing");
///
/// let converted = convert(b"FROM busybox\n", &ConvertOptions::default(), &resolver)?;
/// assert_eq!(converted.config.config.env, ["PATH=/bin"]);
/// let error = convert(b"FROM missing\n", &ConvertOptions::default(), &resolver).unwrap_err();
/// assert!(error.to_string().ends_with("missing: manifest unknown"));
/// # Ok::<(), kiln_frontend::ConvertError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeResolver {
    images: BTreeMap<String, ResolvedImage>,
    unknown: BTreeSet<String>,
    fallback: Option<ResolvedImage>,
}

impl FakeResolver {
    /// Serves the image configuration `config` with the manifest digest `digest` (empty to leave
    /// the reference unpinned) for `reference`.
    pub fn image(mut self, reference: &str, digest: &str, config: impl Into<Vec<u8>>) -> Self {
        self.images
            .insert(normalize_image_ref(reference), resolved(digest, config));
        self
    }

    /// Serves `config` with `digest` for every reference without an image of its own.
    pub fn fallback(mut self, digest: &str, config: impl Into<Vec<u8>>) -> Self {
        self.fallback = Some(resolved(digest, config));
        self
    }

    /// Makes `reference` fail to resolve even with a fallback image.
    pub fn unknown(mut self, reference: &str) -> Self {
        self.unknown.insert(normalize_image_ref(reference));
        self
    }
}

fn resolved(digest: &str, config: impl Into<Vec<u8>>) -> ResolvedImage {
    ResolvedImage {
        digest: digest.to_owned(),
        config: config.into(),
    }
}

impl ImageMetaResolver for FakeResolver {
    fn resolve(
        &self,
        reference: &str,
        _platform: &pb::Platform,
    ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(image) = self.images.get(reference) {
            return Ok(image.clone());
        }
        match &self.fallback {
            Some(image) if !self.unknown.contains(reference) => Ok(image.clone()),
            _ => Err("manifest unknown".into()),
        }
    }
}
