//! The exporters' error type.

use std::path::PathBuf;

/// An error while assembling, writing or loading an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Cache(#[from] kiln_cache::Error),
    /// Reading or writing a file failed (the message names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An OCI document could not be built.
    #[error("invalid OCI {what}")]
    Spec {
        /// Which document.
        what: &'static str,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A JSON document could not be read or written.
    #[error("invalid JSON in {what}")]
    Json {
        /// Which document.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A path holds neither an OCI image layout nor a docker archive.
    #[error("{} is not an OCI image layout or docker archive (no index.json or manifest.json)", path.display())]
    UnknownArchive {
        /// The path.
        path: PathBuf,
    },
    /// An archive is malformed.
    #[error("bad image archive {}: {reason}", path.display())]
    BadArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry refused a push.
    #[error("pushing {what} to {reference}")]
    Push {
        /// What was being pushed.
        what: String,
        /// The target reference.
        reference: String,
        /// The cause.
        #[source]
        source: kiln_cache::oci_client::errors::OciDistributionError,
    },
    /// A media type (from a stored manifest, so from outside) cannot be sent as a header.
    #[error("media type {media_type:?} is not a valid Content-Type header")]
    InvalidMediaType {
        /// The media type.
        media_type: String,
    },
    /// No image by this name in the store.
    #[error("no such image: {name}")]
    ImageNotFound {
        /// The name.
        name: String,
    },
}

impl Error {
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn spec(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> Self {
        move |source| Self::Spec { what, source }
    }
}
