//! Registry push: the layer and config blobs, then the manifest bytes as they are, so the
//! registry's digest is the digest kiln computed.

use std::path::Path;

use kiln_cache::oci_client::client::{ClientConfig, ClientProtocol};
use kiln_cache::oci_client::{Client, RegistryOperation};
use kiln_cache::{Config, Digest, Store};

use crate::error::Error;
use crate::image::Image;

/// Pushes `image` to `reference` (`host/repository:tag`), with the registry settings of
/// `config` (plain HTTP hosts, `insecure`) and the credentials in `docker_config`, as a pull
/// uses them. Returns the manifest digest.
pub async fn push(
    store: &Store,
    image: &Image,
    reference: &str,
    config: &Config,
    docker_config: Option<&Path>,
) -> Result<Digest, Error> {
    let target = kiln_cache::parse_reference(reference)?;
    let host = target.resolve_registry().to_owned();
    let plain = if config.is_plain_http(&host) {
        vec![host.clone()]
    } else {
        Vec::new()
    };
    let insecure = config.registry.get(&host).is_some_and(|r| r.insecure);
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        accept_invalid_certificates: insecure,
        ..ClientConfig::default()
    });
    let auth = kiln_cache::credentials(docker_config, &host)?;
    let failed = |what: String| {
        let reference = target.whole();
        move |source| Error::Push {
            what,
            reference,
            source,
        }
    };
    client
        .auth(&target, &auth, RegistryOperation::Push)
        .await
        .map_err(failed("credentials".to_owned()))?;
    for layer in &image.layers {
        let data = store.read_blob(&layer.digest)?;
        client
            .push_blob(&target, data, &layer.digest.to_string())
            .await
            .map_err(failed(format!("layer {}", layer.digest)))?;
        tracing::debug!(layer = %layer.digest, "pushed");
    }
    client
        .push_blob(
            &target,
            image.config.clone(),
            &image.config_digest.to_string(),
        )
        .await
        .map_err(failed(format!("config {}", image.config_digest)))?;
    let content_type = http::HeaderValue::from_str(&image.manifest_media_type)
        .expect("media types are header-safe ASCII");
    client
        .push_manifest_raw(&target, image.manifest.clone(), content_type)
        .await
        .map_err(failed(format!("manifest {}", image.manifest_digest)))?;
    tracing::info!(reference = %target.whole(), manifest = %image.manifest_digest, "pushed");
    Ok(image.manifest_digest)
}
