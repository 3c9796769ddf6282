//! Pulling images from a registry into the store.
//!
//! # Overview
//! 1. Parse the reference (Docker normalisation) and list the sources: the configured mirrors
//!    of its registry, in order, then the registry itself.
//! 2. From the first source that answers: fetch the manifest (or index, then the `linux/amd64`
//!    manifest), verifying each against the digest asked for or announced.
//! 3. Fetch the config and the layers (concurrently, skipping blobs already stored), each
//!    written through [`BlobWriter`](crate::BlobWriter), so only verified blobs are stored.
//! 4. Unpack each layer into its chain-ID snapshot, checking the diff IDs of the config.
//! 5. Record the blobs, then the image name.
//!
//! A failure at any step on a mirror moves on to the next source; the last error is returned.
//!
//! With `prefer_local`, an image already stored under the name is used when its tag still
//! points to it (a manifest `HEAD`, [`resolve_digest`]) or when no source answers (a
//! [`PullEvent::StoreFallback`] says so); a moved tag is pulled as above.
//! The whole pull holds a lease, so garbage collection never sees half-recorded content.

use std::io::Write as _;

use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use kiln_llb::Digest;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use serde::Deserialize;

use crate::client::{ClientSettings, LazyClient};
use crate::error::Error;
use crate::lazy::{LazyLayer, RemoteLayer};
use crate::registry::{Config, Credentials, DockerConfigFile, parse_reference};
use crate::store::{ImageRecord, Store, now};

const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

const LAYER_TYPES: [&str; 8] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// How many layers download at once.
const CONCURRENT_DOWNLOADS: usize = 4;

/// Options of [`pull`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registry configuration (mirrors, plain HTTP).
    pub config: Config,
    /// Where registry credentials come from (default: Docker's credentials file,
    /// [`DockerConfigFile::from_env`]).
    pub credentials: Arc<dyn Credentials>,
    /// The wanted platform's OS.
    pub os: String,
    /// The wanted platform's architecture, optionally with its variant (`arm64`, `arm/v7`);
    /// an index entry is chosen as containerd's matcher does (`arm64` = `arm64/v8`, `arm/v7`
    /// falls back to `arm/v6`, `arm/v5`).
    pub architecture: String,
    /// Use an image already in the store under the same name (built with `-t` or loaded)
    /// instead of asking the registry, as `docker build` does for `FROM`.
    pub prefer_local: bool,
    /// Fetch only the manifest and config: the layers are recorded as lazy snapshots (see
    /// [`crate::realize`]), downloaded when something reads them. A stored image whose
    /// layers are lazy serves such a pull as one whose blobs are here. A build's base images
    /// are pulled so.
    pub lazy: bool,
}

impl PullOptions {
    /// The wanted platform, normalized.
    pub fn platform(&self) -> kiln_llb::Platform {
        let (architecture, variant) = self
            .architecture
            .split_once('/')
            .unwrap_or((self.architecture.as_str(), ""));
        kiln_llb::Platform::new(&self.os, architecture, variant)
    }

    /// These options for `platform`.
    pub fn for_platform(&self, platform: &kiln_llb::Platform) -> Self {
        let architecture = if platform.variant.is_empty() {
            platform.architecture.clone()
        } else {
            format!("{}/{}", platform.architecture, platform.variant)
        };
        Self {
            os: platform.os.clone(),
            architecture,
            ..self.clone()
        }
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            config: Config::default(),
            credentials: Arc::new(DockerConfigFile::from_env()),
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            prefer_local: false,
            lazy: false,
        }
    }
}

/// Something that happened during a pull, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullEvent {
    /// Fetching from this source (a mirror or the registry itself).
    Source {
        /// The normalised reference.
        reference: String,
        /// The host being asked.
        host: String,
    },
    /// A layer is already in the store.
    LayerExists(Digest),
    /// A layer download started.
    LayerDownloading(Digest),
    /// A layer was downloaded and verified.
    LayerDownloaded(Digest),
    /// A layer was unpacked.
    LayerUnpacked(Digest),
    /// A stage of the pull ended: the download of the layers the store lacked, or the
    /// unpacking of those not unpacked yet.
    StageDone {
        /// Which stage.
        stage: PullStage,
        /// When it began.
        started: std::time::Instant,
        /// The bytes of the layers it downloaded or unpacked (compressed sizes).
        bytes: u64,
    },
    /// No source said what the tag points to now, so the image in the store was used.
    StoreFallback {
        /// The normalised reference.
        reference: String,
        /// Why the registry could not be asked.
        reason: String,
    },
}

/// A stage of a pull (see [`PullEvent::StageDone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStage {
    /// Downloading the layers the store lacks.
    Download,
    /// Unpacking layers into snapshots.
    Unpack,
}

/// Receives [`PullEvent`]s.
pub trait PullProgress: Send + Sync {
    /// Called for each event, from any thread.
    fn event(&self, event: PullEvent);
}

impl PullProgress for () {
    fn event(&self, _: PullEvent) {}
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The stored image.
    pub image: ImageRecord,
    /// The manifest digest the name pointed to before, if it was stored already.
    pub previous: Option<Digest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    media_type: Option<String>,
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    size: i64,
    platform: Option<kiln_llb::Platform>,
}

#[derive(Deserialize)]
struct ImageConfig {
    created: Option<String>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    /// `null` in configs Go wrote for images without layers.
    #[serde(default)]
    diff_ids: Option<Vec<Digest>>,
}

fn bad(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::BadManifest {
        what: what.into(),
        reason: reason.into(),
    }
}

fn parse_digest(text: &str, what: &str) -> Result<Digest, Error> {
    text.parse()
        .map_err(|_| bad(what, format!("unsupported digest `{text}`")))
}

/// One place to fetch from: a mirror or the origin registry.
#[derive(Clone)]
pub(crate) struct Source {
    /// Made on its first request.
    pub(crate) client: LazyClient,
    pub(crate) reference: Reference,
    pub(crate) host: String,
    pub(crate) auth: RegistryAuth,
    /// Where the credentials were looked for ([`Credentials::origin`]).
    pub(crate) origin: String,
}

impl Source {
    pub(crate) fn registry_error(
        &self,
        operation: impl Into<String>,
        source: oci_client::errors::OciDistributionError,
    ) -> Error {
        use oci_client::errors::{DigestError, OciDistributionError};
        // The client checks content against the digest the registry announces; report that
        // as the digest mismatch it is.
        if let OciDistributionError::DigestError(DigestError::VerificationError {
            expected,
            actual,
        }) = &source
        {
            if let (Ok(expected), Ok(computed)) = (expected.parse(), actual.parse()) {
                return Error::DigestMismatch {
                    what: format!("{} from {}", operation.into(), self.host),
                    expected,
                    computed,
                };
            }
        }
        // A registry that wants credentials (HTTP basic authentication, no token service)
        // answers 401 to the request itself: say whose access it refused.
        if let OciDistributionError::UnauthorizedError { .. } = &source {
            return Error::Authentication {
                registry: self.host.clone(),
                credentials: self.whose(),
                reason: format!("{}: not authorized", operation.into()),
            };
        }
        Error::Registry {
            registry: self.host.clone(),
            operation: operation.into(),
            source: Box::new(source),
        }
    }

    /// Whose access a registry refused, for messages.
    fn whose(&self) -> String {
        match &self.auth {
            RegistryAuth::Basic(user, _) => format!("the credentials of user `{user}`"),
            RegistryAuth::Bearer(_) => "the identity token".to_owned(),
            RegistryAuth::Anonymous => {
                format!(
                    "anonymous access (no credentials for it in {})",
                    self.origin
                )
            }
        }
    }

    /// Answers the registry's authentication challenge up front: with a bearer challenge,
    /// fetches a token from its realm (with the basic credentials, if any) that the client
    /// then sends on every request. oci-client does this lazily too, but drops the token
    /// service's refusal and goes on anonymously; asking first reports it.
    pub(crate) async fn authenticate(&self) -> Result<(), Error> {
        use oci_client::errors::OciDistributionError;
        match self
            .client
            .auth(&self.reference, &self.auth, RegistryOperation::Pull)
            .await
        {
            Ok(_) => Ok(()),
            Err(OciDistributionError::AuthenticationFailure(reason)) => {
                Err(Error::Authentication {
                    registry: self.host.clone(),
                    credentials: self.whose(),
                    reason: reason.trim().to_owned(),
                })
            }
            Err(e) => Err(self.registry_error("authenticating", e)),
        }
    }

    /// The digest the source announces for its reference (a manifest `HEAD`).
    pub(crate) async fn head_digest(&self) -> Result<Digest, Error> {
        let text = self
            .client
            .fetch_manifest_digest(&self.reference, &self.auth)
            .await
            .map_err(|e| self.registry_error(format!("resolving {}", self.reference.whole()), e))?;
        parse_digest(&text, "manifest digest")
    }

    pub(crate) async fn manifest(
        &self,
        reference: &Reference,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), Error> {
        let (bytes, announced) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &MANIFEST_TYPES)
            .await
            .map_err(|e| {
                self.registry_error(format!("fetching manifest {}", reference.whole()), e)
            })?;
        let computed = Digest::from_bytes(&bytes);
        let expected = match expected {
            Some(d) => Some(*d),
            None => announced.parse().ok(),
        };
        if let Some(expected) = expected {
            if expected != computed {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {}", reference.whole()),
                    expected,
                    computed,
                });
            }
        }
        Ok((bytes.to_vec(), computed))
    }

    pub(crate) async fn blob(
        &self,
        store: &Store,
        descriptor: &OciDescriptor,
        digest: &Digest,
    ) -> Result<u64, Error> {
        let expected = descriptor_size(descriptor, &format!("blob {digest}"))?;
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, descriptor)
            .await
            .map_err(|e| self.registry_error(format!("fetching blob {digest}"), e))?;
        let mut writer = store.writer()?;
        while let Some(chunk) = stream.try_next().await.map_err(|source| Error::Download {
            registry: self.host.clone(),
            digest: *digest,
            source,
        })? {
            // Stop a blob longer than its descriptor says as soon as it passes that size.
            if writer.written() + chunk.len() as u64 > expected {
                return Err(Error::SizeMismatch {
                    what: format!("blob {digest} from {}", self.host),
                    expected,
                    actual: writer.written() + chunk.len() as u64,
                });
            }
            writer.write_all(&chunk)?;
        }
        if writer.written() != expected {
            return Err(Error::SizeMismatch {
                what: format!("blob {digest} from {}", self.host),
                expected,
                actual: writer.written(),
            });
        }
        let (_, size) = writer.commit(Some(digest))?;
        store.record_blob(digest, size, Some(&descriptor.media_type))?;
        Ok(size)
    }
}

/// The size a descriptor announces, which must not be negative.
fn descriptor_size(descriptor: &OciDescriptor, what: &str) -> Result<u64, Error> {
    u64::try_from(descriptor.size).map_err(|_| {
        bad(
            what,
            format!("negative size {} in its descriptor", descriptor.size),
        )
    })
}

pub(crate) async fn sources(
    reference: &Reference,
    options: &PullOptions,
) -> Result<Vec<Source>, Error> {
    let registry = reference.registry().to_owned();
    let mut hosts: Vec<Option<String>> = options
        .config
        .mirrors(&registry)
        .iter()
        .map(|m| Some(m.trim_end_matches('/').to_owned()))
        .collect();
    hosts.push(None);
    let mut out = Vec::new();
    for mirror in hosts {
        let mut reference = reference.clone();
        if let Some(m) = &mirror {
            reference.set_mirror_registry(m.clone());
        }
        let host = reference.resolve_registry().to_owned();
        let plain = if options.config.is_plain_http(&host)
            || options.config.is_plain_http(&registry) && mirror.is_none()
        {
            vec![host.clone()]
        } else {
            Vec::new()
        };
        let insecure = options
            .config
            .registry
            .get(&host)
            .is_some_and(|r| r.insecure);
        let client = LazyClient::new(ClientSettings {
            plain_http: plain,
            insecure,
            monolithic_push: false,
        });
        let auth = options
            .credentials
            .get(mirror.as_deref().unwrap_or(&registry))
            .await?;
        out.push(Source {
            client,
            reference,
            host,
            auth,
            origin: options.credentials.origin().to_owned(),
        });
    }
    Ok(out)
}

/// Pulls `reference` into the store: blobs verified and stored, layers unpacked into
/// snapshots, the name recorded.
pub async fn pull(
    store: Arc<Store>,
    reference: &str,
    options: &PullOptions,
    progress: &dyn PullProgress,
) -> Result<Pulled, Error> {
    let reference = parse_reference(reference)?;
    let _lease = store.lease()?;
    if options.prefer_local
        && let Some(image) = local_image(&store, &reference, options)?
    {
        // A tag may have moved since the image was stored: a manifest `HEAD` (cheap) says
        // whether it still points there. When no source answers, the stored image is used.
        let current = match reference.digest() {
            Some(_) => Ok(None),
            None => current_digest(&reference, options).await.map(Some),
        };
        let stored = |digest: &Digest| *digest == image.manifest || Some(*digest) == image.index;
        let moved = match current {
            Ok(None) => false,
            Ok(Some(digest)) => {
                let moved = !stored(&digest);
                if moved {
                    tracing::debug!(image = %image.name, %digest, "the tag moved; pulling it");
                }
                moved
            }
            Err(e) => {
                let reason = match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                };
                tracing::warn!(
                    image = %image.name,
                    "could not check the tag against its registry ({reason}); using the image in the store"
                );
                progress.event(PullEvent::StoreFallback {
                    reference: reference.whole(),
                    reason,
                });
                false
            }
        };
        if !moved {
            return Ok(Pulled {
                previous: Some(image.manifest),
                image,
            });
        }
    }
    let mut last_error = None;
    let sources = sources(&reference, options).await?;
    let count = sources.len();
    for (i, source) in sources.into_iter().enumerate() {
        progress.event(PullEvent::Source {
            reference: reference.whole(),
            host: source.host.clone(),
        });
        match pull_from(&store, &reference, &source, options, progress).await {
            Ok(pulled) => return Ok(pulled),
            Err(e) => {
                if i + 1 < count {
                    tracing::warn!(host = %source.host, error = %e, "pull failed; trying the next source");
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.expect("the origin is always a source"))
}

/// The digest `reference` points to in its registry now, as BuildKit resolves a tag: from
/// the first source (the mirrors, then the registry) that answers a manifest `HEAD`; the
/// index's digest when the tag names an index. A reference with a digest is its own answer.
pub async fn resolve_digest(reference: &str, options: &PullOptions) -> Result<Digest, Error> {
    current_digest(&parse_reference(reference)?, options).await
}

async fn current_digest(reference: &Reference, options: &PullOptions) -> Result<Digest, Error> {
    if let Some(digest) = reference.digest() {
        return parse_digest(digest, "reference");
    }
    let mut last_error = None;
    for source in sources(reference, options).await? {
        match source.head_digest().await {
            Ok(digest) => return Ok(digest),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("the origin is always a source"))
}

/// The stored image `name` with its snapshots unpacked, if all its blobs are present.
/// A reference with a digest matches any stored image with that manifest.
fn local_image(
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Option<ImageRecord>, Error> {
    let found = match reference.digest() {
        None => store.image(&reference.whole())?,
        Some(digest) => {
            let digest = parse_digest(digest, "reference")?;
            store.images()?.into_iter().find(|i| i.manifest == digest)
        }
    };
    let Some(mut image) = found else {
        return Ok(None);
    };
    let recorded = || -> Result<bool, Error> {
        Ok(match image.chain_id {
            Some(chain) => store.snapshot(&chain.to_string())?.is_some(),
            None => true,
        })
    };
    if !store.has_blob(&image.config)
        || image.layers.iter().any(|l| !store.has_blob(l)) && !(options.lazy && recorded()?)
    {
        return Ok(None);
    }
    // The name may hold another platform's image of the same index: it serves only the
    // platforms that run it.
    let stored: kiln_llb::Platform = serde_json::from_slice(&store.read_blob(&image.config)?)
        .map_err(|e| bad(format!("config {}", image.config), e.to_string()))?;
    if !options.platform().runs(&stored) {
        tracing::debug!(image = %image.name, %stored, "the stored image is for another platform");
        return Ok(None);
    }
    image.chain_id = store.image_snapshot(&image)?;
    tracing::debug!(image = %image.name, "using the image in the store");
    Ok(Some(image))
}

async fn pull_from(
    store: &Arc<Store>,
    reference: &Reference,
    source: &Source,
    options: &PullOptions,
    progress: &dyn PullProgress,
) -> Result<Pulled, Error> {
    let wanted = match reference.digest() {
        Some(d) => Some(parse_digest(d, "reference")?),
        None => None,
    };
    source.authenticate().await?;
    let (mut bytes, mut manifest_digest) =
        source.manifest(&source.reference, wanted.as_ref()).await?;
    let mut manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("manifest {manifest_digest}"), e.to_string()))?;
    let mut index = None;
    if let Some(entries) = &manifest.manifests {
        let wanted = options.platform();
        let offered: Vec<_> = entries
            .iter()
            .map(|e| {
                // An entry without a platform serves none.
                e.platform
                    .clone()
                    .unwrap_or_else(|| kiln_llb::Platform::new("", "", ""))
            })
            .collect();
        let entry = wanted
            .best_match(&offered)
            .and_then(|i| entries.get(i))
            .ok_or_else(|| Error::NoMatchingPlatform {
                platform: wanted.to_string(),
                reference: reference.whole(),
            })?;
        let digest = parse_digest(&entry.digest, "index entry")?;
        store.put_blob(&bytes, &manifest_digest, manifest.media_type.as_deref())?;
        index = Some(manifest_digest);
        let by_digest = source.reference.clone_with_digest(entry.digest.clone());
        (bytes, manifest_digest) = source.manifest(&by_digest, Some(&digest)).await?;
        if u64::try_from(entry.size).ok() != Some(bytes.len() as u64) {
            return Err(Error::SizeMismatch {
                what: format!("manifest {manifest_digest} from {}", source.host),
                expected: u64::try_from(entry.size).unwrap_or(0),
                actual: bytes.len() as u64,
            });
        }
        manifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("manifest {manifest_digest}"), e.to_string()))?;
    }
    let what = format!("manifest {manifest_digest}");
    let config_descriptor = manifest
        .config
        .as_ref()
        .ok_or_else(|| bad(&what, "no config"))?;
    let config_digest = parse_digest(&config_descriptor.digest, &what)?;
    for layer in &manifest.layers {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(bad(
                &what,
                format!("unsupported layer media type {}", layer.media_type),
            ));
        }
    }

    if !store.has_blob(&config_digest) {
        source
            .blob(store, config_descriptor, &config_digest)
            .await?;
    }
    let config_bytes = store.read_blob(&config_digest)?;
    let config_size = descriptor_size(config_descriptor, &what)?;
    if config_bytes.len() as u64 != config_size {
        return Err(Error::SizeMismatch {
            what: format!("config {config_digest}"),
            expected: config_size,
            actual: config_bytes.len() as u64,
        });
    }
    let mut config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad(format!("config {config_digest}"), e.to_string()))?;
    let diff_ids = config.rootfs.diff_ids.take().unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(bad(
            &what,
            format!(
                "{} layers but {} diff IDs in the config",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }

    let layers: Vec<Digest> = manifest
        .layers
        .iter()
        .map(|l| parse_digest(&l.digest, &what))
        .collect::<Result<_, _>>()?;
    let (parent, size) = if options.lazy {
        let remote = |descriptor: &OciDescriptor| -> Result<RemoteLayer, Error> {
            Ok(RemoteLayer {
                reference: reference.whole(),
                media_type: descriptor.media_type.clone(),
                size: descriptor_size(descriptor, &format!("layer {}", descriptor.digest))?,
            })
        };
        let chain = manifest
            .layers
            .iter()
            .zip(&layers)
            .zip(&diff_ids)
            .map(|((descriptor, blob), diff_id)| {
                Ok(LazyLayer {
                    blob: *blob,
                    diff_id: *diff_id,
                    created: None,
                    remote: remote(descriptor)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        (store.put_lazy_chain(&chain)?, 0)
    } else {
        fetch_and_unpack(
            store,
            source,
            &manifest.layers,
            &layers,
            &diff_ids,
            progress,
        )
        .await?
    };
    store.put_blob(&bytes, &manifest_digest, manifest.media_type.as_deref())?;
    // The tag names the image this host runs; another platform's is recorded by its digest
    // (so `kiln run NAME` keeps running the host's after a `--platform` pull).
    let name = match reference.tag() {
        Some(_) if kiln_llb::Platform::host().runs(&options.platform()) => reference.whole(),
        _ => crate::digest_name(reference, &manifest_digest),
    };
    let previous = store.image(&name)?.map(|r| r.manifest);
    let image = ImageRecord {
        name,
        manifest: manifest_digest,
        manifest_media_type: manifest
            .media_type
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned()),
        index,
        config: config_digest,
        layers,
        diff_ids,
        chain_id: parent,
        size,
        created: config.created,
        last_used: now(),
        pending: None,
        config_id: false,
    };
    store.put_image(&image)?;
    Ok(Pulled { image, previous })
}

/// Downloads the layers the store lacks and unpacks the chain; returns its top chain ID and
/// the snapshots' size.
async fn fetch_and_unpack(
    store: &Arc<Store>,
    source: &Source,
    descriptors: &[OciDescriptor],
    layers: &[Digest],
    diff_ids: &[Digest],
    progress: &dyn PullProgress,
) -> Result<(Option<Digest>, u64), Error> {
    let started = std::time::Instant::now();
    let downloaded = std::sync::atomic::AtomicU64::new(0);
    let downloaded = &downloaded;
    futures::stream::iter(descriptors.iter().zip(layers))
        .map(|(descriptor, digest)| async move {
            if store.has_blob(digest) {
                let expected = descriptor_size(descriptor, &format!("layer {digest}"))?;
                let actual = fs_err::metadata(store.blob_path(digest))?.len();
                if actual != expected {
                    return Err(Error::SizeMismatch {
                        what: format!("layer {digest}"),
                        expected,
                        actual,
                    });
                }
                progress.event(PullEvent::LayerExists(*digest));
                return Ok(());
            }
            progress.event(PullEvent::LayerDownloading(*digest));
            source.blob(store, descriptor, digest).await?;
            progress.event(PullEvent::LayerDownloaded(*digest));
            let bytes = u64::try_from(descriptor.size).unwrap_or(0);
            downloaded.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, Error>(())
        })
        .buffer_unordered(CONCURRENT_DOWNLOADS)
        .try_collect::<Vec<()>>()
        .await?;
    let downloaded = downloaded.load(std::sync::atomic::Ordering::Relaxed);
    if downloaded > 0 {
        progress.event(PullEvent::StageDone {
            stage: PullStage::Download,
            started,
            bytes: downloaded,
        });
    }

    let started = std::time::Instant::now();
    let mut unpacked = 0;
    let mut parent = None;
    let mut size = 0;
    for ((layer, diff_id), descriptor) in layers.iter().zip(diff_ids).zip(descriptors) {
        let existed = store
            .snapshot(&crate::chain_id(parent.as_ref(), diff_id).to_string())?
            .is_some();
        let task_store = Arc::clone(store);
        let (layer_copy, diff_copy) = (*layer, *diff_id);
        let chain = tokio::task::spawn_blocking(move || {
            task_store.unpack_snapshot(parent.as_ref(), &layer_copy, &diff_copy)
        })
        .await??;
        size += store.snapshot(&chain.to_string())?.map_or(0, |s| s.size);
        if !existed {
            progress.event(PullEvent::LayerUnpacked(*layer));
            unpacked += u64::try_from(descriptor.size).unwrap_or(0);
        }
        parent = Some(chain);
    }
    if unpacked > 0 {
        progress.event(PullEvent::StageDone {
            stage: PullStage::Unpack,
            started,
            bytes: unpacked,
        });
    }

    Ok((parent, size))
}
