//! The places a pull fetches from (a registry's configured mirrors, in order, then the
//! registry itself), each with its client and credentials, and what one fetches: a manifest
//! or a blob, verified against its digest and size.

use std::io::Write as _;

use futures::TryStreamExt as _;
use kiln_llb::Digest;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use super::{PullOptions, bad, parse_digest};
use crate::client::{ClientSettings, LazyClient};
use crate::error::Error;
use crate::store::Store;

const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

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
            Ok(None) if matches!(self.auth, RegistryAuth::Anonymous) => {
                crate::registry::note_open_registry(&self.host);
                Ok(())
            }
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
pub(super) fn descriptor_size(descriptor: &OciDescriptor, what: &str) -> Result<u64, Error> {
    u64::try_from(descriptor.size).map_err(|_| {
        bad(
            what,
            format!("negative size {} in its descriptor", descriptor.size),
        )
    })
}

/// The sources of `reference`: its registry's mirrors, in order, then the registry itself.
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
