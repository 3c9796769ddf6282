//! Registry push: the layer and config blobs, then the manifest bytes as they are, so the
//! registry's digest is the digest kiln computed.
//!
//! # Overview
//! 1. A layer another stored image of the same registry holds, or that a lazy snapshot (a
//!    cache hit or base image not downloaded) names in a repository of the same registry, is
//!    mounted from that repository (cross-repository blob mount) when the registry allows it:
//!    nothing is downloaded or sent. Many layers are mounted or checked at once (and the
//!    config beside them), a few sent at once.
//! 2. Otherwise the blob is HEAD-checked; a blob the registry has is not sent again. A lazy
//!    layer that cannot be mounted is downloaded (verified) first.
//! 3. A blob the registry lacks is streamed from its file in the store in one monolithic upload
//!    (`POST` then `PUT` with a `Content-Length`); a registry that rejects that for any reason
//!    but the credentials gets the blob as chunked `PATCH` uploads, read again from the file. Blobs are never read into memory as a
//!    whole, so pushing a large layer needs about one read buffer per upload.
//! 4. The manifest last, under the media type it was built with.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, StreamExt as _, TryStreamExt as _};
use kiln_cache::oci_client::errors::OciDistributionError;
use kiln_cache::oci_client::secrets::RegistryAuth;
use kiln_cache::oci_client::{Client, Reference, RegistryOperation};
use kiln_cache::{ClientSettings, Config, Credentials, Digest, Image, Store};
use tokio::io::AsyncReadExt as _;

use crate::error::Error;

/// How many blobs one push mounts or checks at once (each a round trip with no body).
const CONCURRENT_CHECKS: usize = 16;

/// How many blobs one push uploads at once.
const CONCURRENT_UPLOADS: usize = 4;

/// Bytes read from a blob file per piece of the upload stream.
const READ_CHUNK: usize = 1 << 20;

/// One registry's client settings and credentials.
struct Target {
    reference: Reference,
    plain_http: Vec<String>,
    insecure: bool,
    auth: RegistryAuth,
    /// The registry settings and credentials, to download a lazy layer that cannot be
    /// mounted.
    config: Config,
    credentials: Arc<dyn Credentials>,
    /// Permits for the uploads running at once.
    uploads: tokio::sync::Semaphore,
}

impl Target {
    /// The push target `reference`, with the registry settings of `config` and the
    /// credentials `credentials` has for its host.
    async fn new(
        reference: &str,
        config: &Config,
        credentials: &Arc<dyn Credentials>,
    ) -> Result<Self, Error> {
        let reference = kiln_cache::parse_reference(reference)?;
        let host = reference.resolve_registry().to_owned();
        Ok(Self {
            plain_http: if config.is_plain_http(&host) {
                vec![host.clone()]
            } else {
                Vec::new()
            },
            insecure: config.registry.get(&host).is_some_and(|r| r.insecure),
            auth: credentials.get(&host).await?,
            reference,
            config: config.clone(),
            credentials: Arc::clone(credentials),
            uploads: tokio::sync::Semaphore::new(CONCURRENT_UPLOADS),
        })
    }

    /// Pull options with this push's registry settings and credentials.
    fn pull_options(&self) -> kiln_cache::PullOptions {
        kiln_cache::PullOptions {
            config: self.config.clone(),
            credentials: Arc::clone(&self.credentials),
            ..kiln_cache::PullOptions::default()
        }
    }

    /// A client, authenticated for pushing, that sends blob streams monolithically or in chunks.
    /// An anonymous client of a registry that asked this process for no token is given no
    /// credentials: it sends the same requests, without asking the registry again before each.
    async fn client(&self, monolithic: bool) -> Result<Client, Error> {
        let client = ClientSettings {
            plain_http: self.plain_http.clone(),
            insecure: self.insecure,
            monolithic_push: monolithic,
        }
        .client();
        if matches!(self.auth, RegistryAuth::Anonymous)
            && kiln_cache::is_open_registry(self.reference.resolve_registry())
        {
            return Ok(client);
        }
        client
            .auth(&self.reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(self.failed("credentials".to_owned()))?;
        Ok(client)
    }

    fn failed(&self, what: String) -> impl FnOnce(OciDistributionError) -> Error {
        let reference = self.reference.whole();
        move |source| Error::Push {
            what,
            reference,
            source,
        }
    }
}

/// The file at `path` as a stream of pieces of at most [`READ_CHUNK`] bytes.
fn file_stream(
    path: PathBuf,
) -> Result<impl Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static, Error>
{
    let (file, path) = fs_err::File::open(path)?.into_parts();
    let file = tokio::fs::File::from_std(file);
    Ok(futures::stream::try_unfold(
        (file, path),
        |(mut file, path)| async move {
            let mut buffer = bytes::BytesMut::with_capacity(READ_CHUNK);
            while buffer.len() < READ_CHUNK {
                let read = file.read_buf(&mut buffer).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
                })?;
                if read == 0 {
                    break;
                }
            }
            if buffer.is_empty() {
                return Ok(None);
            }
            Ok(Some((buffer.freeze(), (file, path))))
        },
    ))
}

/// Repositories of the same registry that hold `digest`, per the store's image records.
fn mount_sources(store: &Store, target: &Reference, digest: &Digest) -> Vec<Reference> {
    let Ok(images) = store.images() else {
        return Vec::new();
    };
    let mut sources: Vec<Reference> = Vec::new();
    for image in images {
        if !image.layers.contains(digest) {
            continue;
        }
        let Ok(source) = kiln_cache::parse_reference(&image.name) else {
            continue;
        };
        if source.resolve_registry() == target.resolve_registry()
            && source.repository() != target.repository()
            && !sources
                .iter()
                .any(|s| s.repository() == source.repository())
        {
            sources.push(source);
        }
    }
    sources
}

/// Whether a failed upload was refused for its credentials, which sending the blob another
/// way would not change. Any other refusal of a monolithic upload (`413 Request Entity Too
/// Large` from a proxy in front of the registry, `400`, `405`, an unexpected success status,
/// a connection closed during the body) gets the chunked upload.
fn refused_credentials(error: &OciDistributionError) -> bool {
    use kiln_cache::oci_client::errors::OciErrorCode;
    match error {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Denied | OciErrorCode::Unauthorized)),
        _ => false,
    }
}

/// Sends one blob from the store unless the registry has it already.
async fn push_blob(
    store: &Store,
    target: &Target,
    client: &Client,
    digest: &Digest,
    what: &str,
) -> Result<(), Error> {
    let reference = &target.reference;
    let name = digest.to_string();
    // A layer of a lazy snapshot (a cache hit or a base image not downloaded) is in the
    // repository its record names: mounted from there, or downloaded (verified) to be sent.
    let remote = match store.has_blob(digest) {
        true => None,
        false => store.remote_blob(digest)?,
    };
    let mut sources = mount_sources(store, reference, digest);
    if let Some(source) = remote
        .as_ref()
        .and_then(|r| kiln_cache::parse_reference(&r.reference).ok())
        .filter(|s| {
            s.resolve_registry() == reference.resolve_registry()
                && s.repository() != reference.repository()
                && !sources.iter().any(|o| o.repository() == s.repository())
        })
    {
        sources.push(source);
    }
    // A mount is asked for first: a registry that has the blob in the repository already
    // answers it as done, so the existence check is one round trip saved when it succeeds.
    for source in sources {
        match client.mount_blob(reference, &source, &name).await {
            Ok(()) => {
                tracing::debug!(blob = %digest, from = %source.repository(), "mounted");
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(blob = %digest, from = %source.repository(), error = %e, "mount refused");
            }
        }
    }
    let exists = client
        .blob_exists(reference, &name)
        .await
        .map_err(target.failed(format!("{what} {digest}")))?;
    if exists {
        tracing::debug!(blob = %digest, "the registry has the blob");
        return Ok(());
    }
    let _permit = target
        .uploads
        .acquire()
        .await
        .expect("the semaphore is never closed");
    if let Some(remote) = &remote {
        kiln_cache::fetch_remote_blob(store, digest, remote, &target.pull_options()).await?;
    }
    let path = store.blob_path(digest);
    let size = fs_err::metadata(&path)?.len();
    let sent = client
        .push_blob_stream(reference, file_stream(path.clone())?, &name, Some(size))
        .await;
    match sent {
        Ok(_) => {}
        Err(e) if !refused_credentials(&e) => {
            tracing::warn!(
                blob = %digest,
                error = %e,
                "the registry refused a monolithic upload; sending the blob in chunks"
            );
            target
                .client(false)
                .await?
                .push_blob_stream(reference, file_stream(path)?, &name, Some(size))
                .await
                .map_err(target.failed(format!("{what} {digest}")))?;
        }
        Err(e) => return Err(target.failed(format!("{what} {digest}"))(e)),
    }
    tracing::debug!(blob = %digest, size, "pushed");
    Ok(())
}

/// The `Content-Type` header of a manifest upload.
fn content_type(media_type: &str) -> Result<http::HeaderValue, Error> {
    http::HeaderValue::from_str(media_type).map_err(|_| Error::InvalidMediaType {
        media_type: media_type.to_owned(),
    })
}

/// Pushes `image` to `reference` (`host/repository:tag`), with the registry settings of
/// `config` (plain HTTP hosts, `insecure`) and the credentials `credentials` has, as a pull
/// uses them. Returns the manifest digest.
pub async fn push(
    store: &Store,
    image: &Image,
    reference: &str,
    config: &Config,
    credentials: &Arc<dyn Credentials>,
) -> Result<Digest, Error> {
    let layers: Vec<Digest> = image.layers.iter().map(|l| l.digest).collect();
    push_manifest(
        store,
        &Manifest {
            layers: &layers,
            config: &image.config,
            config_digest: &image.config_digest,
            manifest: &image.manifest,
            manifest_digest: &image.manifest_digest,
            media_type: &image.manifest_media_type,
        },
        reference,
        config,
        credentials,
    )
    .await
}

/// Pushes a multi-platform image to `reference` (`host/repository:tag`): each platform's
/// image by its manifest digest, then the index under the tag, so a reader of the tag never
/// sees an index naming a manifest the registry does not have. Returns the index digest.
pub async fn push_index(
    store: &Store,
    index: &crate::ImageIndex,
    reference: &str,
    config: &Config,
    credentials: &Arc<dyn Credentials>,
) -> Result<Digest, Error> {
    let parsed = kiln_cache::parse_reference(reference)?;
    let images = index.images.iter().map(|(_, i)| i);
    for image in images.chain(index.attestations.iter().map(|(_, a)| a)) {
        let by_digest = kiln_cache::digest_name(&parsed, &image.manifest_digest);
        push(store, image, &by_digest, config, credentials).await?;
    }
    let target = Target::new(reference, config, credentials).await?;
    let client = target.client(true).await?;
    client
        .push_manifest_raw(
            &target.reference,
            index.index.clone(),
            content_type(&index.media_type)?,
        )
        .await
        .map_err(target.failed(format!("index {}", index.digest)))?;
    tracing::info!(reference = %target.reference.whole(), index = %index.digest, "pushed");
    Ok(index.digest)
}

/// What [`push_manifest`] sends: layer blobs from the store, a config blob from memory, and
/// the manifest that names them.
pub(crate) struct Manifest<'a> {
    pub(crate) layers: &'a [Digest],
    pub(crate) config: &'a [u8],
    pub(crate) config_digest: &'a Digest,
    pub(crate) manifest: &'a [u8],
    pub(crate) manifest_digest: &'a Digest,
    pub(crate) media_type: &'a str,
}

/// Pushes the blobs, then the config, then the manifest: a reader never sees a manifest
/// naming a blob the registry does not have, and of two concurrent pushes to one tag the
/// last manifest wins whole.
pub(crate) async fn push_manifest(
    store: &Store,
    image: &Manifest<'_>,
    reference: &str,
    config: &Config,
    credentials: &Arc<dyn Credentials>,
) -> Result<Digest, Error> {
    let content_type = content_type(image.media_type)?;
    let target = Target::new(reference, config, credentials).await?;
    let client = target.client(true).await?;
    // Several layers at once, and the config beside them: each is mostly round trips to the
    // registry.
    // (The futures are made first: a closure in the stream's type would make the whole
    // future `Send` only for one lifetime, which the daemon's service cannot take.)
    let pushes: Vec<_> = image
        .layers
        .iter()
        .map(|layer| push_blob(store, &target, &client, layer, "layer"))
        .collect();
    let layers = futures::stream::iter(pushes)
        .buffer_unordered(CONCURRENT_CHECKS)
        .try_collect::<Vec<()>>();
    futures::future::try_join(layers, push_config(&target, &client, image)).await?;
    let reference = &target.reference;
    client
        .push_manifest_raw(reference, image.manifest.to_vec(), content_type)
        .await
        .map_err(target.failed(format!("manifest {}", image.manifest_digest)))?;
    tracing::info!(reference = %reference.whole(), manifest = %image.manifest_digest, "pushed");
    Ok(*image.manifest_digest)
}

/// Sends the config blob of `image` unless the registry has it already.
async fn push_config(target: &Target, client: &Client, image: &Manifest<'_>) -> Result<(), Error> {
    let reference = &target.reference;
    let config_name = image.config_digest.to_string();
    let config_exists = client
        .blob_exists(reference, &config_name)
        .await
        .map_err(target.failed(format!("config {}", image.config_digest)))?;
    if !config_exists {
        let sent = client
            .push_blob(reference, image.config.to_vec(), &config_name)
            .await;
        match sent {
            Ok(_) => {}
            Err(e) if !refused_credentials(&e) => {
                tracing::warn!(error = %e, "the registry refused a monolithic upload of the config; sending it in chunks");
                target
                    .client(false)
                    .await?
                    .push_blob(reference, image.config.to_vec(), &config_name)
                    .await
                    .map_err(target.failed(format!("config {}", image.config_digest)))?;
            }
            Err(e) => return Err(target.failed(format!("config {}", image.config_digest))(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;

    use super::*;

    #[test]
    fn a_media_type_that_is_no_header_is_an_error() {
        assert!(content_type("application/vnd.oci.image.manifest.v1+json").is_ok());
        for bad in ["a\nb", "type\r\nX-Injected: 1", "nul\0"] {
            match content_type(bad) {
                Err(Error::InvalidMediaType { media_type }) => assert_eq!(media_type, bad),
                other => panic!("{bad:?}: expected an invalid media type, got {other:?}"),
            }
        }
    }

    #[test]
    fn blobs_stream_from_their_file_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..READ_CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect();
        fs_err::write(&path, &data).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pieces: Vec<bytes::Bytes> = runtime
            .block_on(file_stream(path).unwrap().try_collect())
            .unwrap();
        let sizes: Vec<usize> = pieces.iter().map(bytes::Bytes::len).collect();
        assert_eq!(sizes, [READ_CHUNK, READ_CHUNK, READ_CHUNK / 2]);
        assert_eq!(pieces.concat(), data);
        assert!(file_stream(dir.path().join("missing")).is_err());
    }

    #[test]
    fn blobs_are_mounted_from_other_repositories_of_the_same_registry() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let layer = Digest::from_bytes(b"layer");
        let record = |name: &str, layers: Vec<Digest>| kiln_cache::ImageRecord {
            name: name.to_owned(),
            manifest: Digest::from_bytes(name.as_bytes()),
            manifest_media_type: kiln_cache::MEDIA_TYPE_OCI_MANIFEST.to_owned(),
            index: None,
            config: Digest::from_bytes(b"config"),
            diff_ids: layers.clone(),
            layers,
            chain_id: None,
            size: 0,
            created: None,
            last_used: 0,
            pending: None,
            config_id: false,
        };
        for image in [
            record("127.0.0.1:5000/team/base:1", vec![layer]),
            record("127.0.0.1:5000/team/base:2", vec![layer]),
            record("127.0.0.1:5000/team/app:1", vec![layer]),
            record(
                "127.0.0.1:5000/team/other:1",
                vec![Digest::from_bytes(b"other")],
            ),
            record("docker.io/library/busybox:latest", vec![layer]),
        ] {
            store.put_image(&image).unwrap();
        }
        let target = kiln_cache::parse_reference("127.0.0.1:5000/team/app:2").unwrap();
        let sources: Vec<String> = mount_sources(&store, &target, &layer)
            .iter()
            .map(|r| r.repository().to_owned())
            .collect();
        // Not the target's own repository, not another registry's, each repository once.
        assert_eq!(sources, ["team/base"]);
    }

    #[test]
    fn only_refused_credentials_stop_the_chunked_fallback() {
        let server = |code| OciDistributionError::ServerError {
            url: "http://127.0.0.1/v2/".to_owned(),
            code,
            message: String::new(),
        };
        for code in [400, 405, 413, 500] {
            assert!(!refused_credentials(&server(code)), "{code}");
        }
        for code in [401, 403] {
            assert!(refused_credentials(&server(code)), "{code}");
        }
        assert!(!refused_credentials(
            &OciDistributionError::SpecViolationError("201 expected".to_owned())
        ));
        assert!(refused_credentials(
            &OciDistributionError::AuthenticationFailure("no".to_owned())
        ));
    }
}
